//! `dce`: unused computations go, sources and side effects stay.

mod common;

use alexc_ir::{print, verify, Op};
use alexc_passes::dce::Dce;
use alexc_passes::Pass;
use common::{small_net, training_ctx};

#[test]
fn removes_nodes_that_do_not_reach_an_output() {
    let mut g = small_net();
    // Make relu2's branch dead by reading fc1 directly as the output.
    let fc1 = g.find("fc1").expect("fc1");
    g.set_outputs(vec![fc1.into()]).expect("outputs");
    let before = print::to_text(&g);
    assert!(Dce.run(&mut g, &mut training_ctx()).expect("runs"));
    verify(&g).expect("verifies");
    assert!(g.find("relu2").is_none() && g.find("fc2").is_none());
    // Parameters are the graph's signature and stay, even when unused.
    assert!(g.find("fc2.weight").is_some());
    insta::assert_snapshot!("before", before);
    insta::assert_snapshot!("after", print::to_text(&g));
}

#[test]
fn nothing_to_do_reports_no_change() {
    let mut g = small_net();
    assert!(!Dce.run(&mut g, &mut training_ctx()).expect("runs"));
}

#[test]
fn keeps_side_effects() {
    // The optimizer's updates have no users but must run.
    let mut g = small_net();
    let mut ctx = training_ctx();
    alexc_passes::autodiff::Autodiff
        .run(&mut g, &mut ctx)
        .expect("autodiff");
    alexc_passes::optimizer::Optimizer
        .run(&mut g, &mut ctx)
        .expect("optimizer");
    let updates = g.nodes_where(|op| matches!(op, Op::SgdUpdate(_))).len();
    assert_eq!(updates, 6);
    Dce.run(&mut g, &mut ctx).expect("dce");
    verify(&g).expect("verifies");
    assert_eq!(
        g.nodes_where(|op| matches!(op, Op::SgdUpdate(_))).len(),
        updates
    );
    assert!(g.find("fc1.backward").is_some());
}
