//! `eliminate-dropout`: dropout layers vanish from inference graphs and stay
//! in training graphs.

mod common;

use alexc_ir::{print, verify, Op};
use alexc_passes::eliminate_dropout::EliminateDropout;
use alexc_passes::{Pass, PassContext, PipelineMode};
use common::{alexnet, small_net, training_ctx};

fn inference_ctx() -> PassContext {
    PassContext {
        mode: Some(PipelineMode::Inference),
        ..PassContext::default()
    }
}

#[test]
fn removes_every_dropout_in_inference() {
    let mut g = alexnet(1);
    let before = print::to_text(&g);
    assert!(EliminateDropout
        .run(&mut g, &mut inference_ctx())
        .expect("runs"));
    verify(&g).expect("verifies");
    assert!(g.nodes_where(|op| matches!(op, Op::Dropout(_))).is_empty());
    // fc6 now reads the flatten output directly, fc7 reads relu6.
    let fc6 = g.find("fc6").expect("fc6");
    assert_eq!(g[g.operands(fc6)[0].node].name, "flatten");
    let fc7 = g.find("fc7").expect("fc7");
    assert_eq!(g[g.operands(fc7)[0].node].name, "relu6");
    insta::assert_snapshot!("alexnet-before", before);
    insta::assert_snapshot!("alexnet-after", print::to_text(&g));
}

#[test]
fn keeps_dropout_in_training() {
    let mut g = small_net();
    let before = print::to_text(&g);
    assert!(!EliminateDropout
        .run(&mut g, &mut training_ctx())
        .expect("runs"));
    assert_eq!(before, print::to_text(&g));
}

#[test]
fn a_dropout_that_is_the_output_is_replaced_by_its_input() {
    let mut g = small_net();
    let drop = g.find("drop").expect("drop");
    g.set_outputs(vec![drop.into()]).expect("outputs");
    EliminateDropout
        .run(&mut g, &mut inference_ctx())
        .expect("runs");
    verify(&g).expect("verifies");
    assert_eq!(g[g.outputs()[0].node].name, "flatten");
}
