//! `optimizer`: one momentum buffer and one in-place SGD update per
//! parameter, the learning rate as a run-time input.

mod common;

use alexc_ir::{print, verify, Op, SgdConvention};
use alexc_passes::autodiff::Autodiff;
use alexc_passes::optimizer::Optimizer;
use alexc_passes::{Pass, TrainingOptions};
use common::{alexnet, small_net, training_ctx};

#[test]
fn small_net_updates() {
    let mut g = small_net();
    let mut ctx = training_ctx();
    Autodiff.run(&mut g, &mut ctx).expect("autodiff");
    let before = print::to_text(&g);
    assert!(Optimizer.run(&mut g, &mut ctx).expect("optimizer"));
    verify(&g).expect("verifies");
    // Gradients leave the outputs: [loss, logits].
    assert_eq!(g.outputs().len(), 2);
    let lr = g.find("lr").expect("lr input");
    assert!(g[lr].outputs[0].shape.dims().is_empty());
    for p in [
        "conv1.weight",
        "conv1.bias",
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
    ] {
        let sgd = g.find(&format!("{p}.sgd")).expect("update");
        let ops = g.operands(sgd);
        assert_eq!(g[ops[0].node].name, p);
        assert_eq!(g[ops[1].node].name, format!("{p}.momentum"));
        assert_eq!(ops[3].node, lr);
        match &g[sgd].op {
            Op::SgdUpdate(a) => {
                assert_eq!(a.convention, SgdConvention::Paper);
                assert_eq!((a.momentum, a.weight_decay), (0.9, 5e-4));
            }
            other => panic!("{p}.sgd is {other:?}"),
        }
    }
    insta::assert_snapshot!("small-before", before);
    insta::assert_snapshot!("small-after", print::to_text(&g));
}

#[test]
fn takes_the_convention_from_the_options() {
    let mut g = small_net();
    let mut ctx = training_ctx();
    ctx.training = TrainingOptions {
        momentum: 0.5,
        weight_decay: 0.0,
        convention: SgdConvention::Pytorch,
    };
    Autodiff.run(&mut g, &mut ctx).expect("autodiff");
    Optimizer.run(&mut g, &mut ctx).expect("optimizer");
    let sgd = g.find("fc2.weight.sgd").expect("update");
    assert!(
        matches!(&g[sgd].op, Op::SgdUpdate(a) if a.convention == SgdConvention::Pytorch && a.momentum == 0.5)
    );
}

#[test]
fn alexnet_has_sixteen_updates() {
    let mut g = alexnet(1);
    let mut ctx = training_ctx();
    Autodiff.run(&mut g, &mut ctx).expect("autodiff");
    Optimizer.run(&mut g, &mut ctx).expect("optimizer");
    verify(&g).expect("verifies");
    assert_eq!(g.nodes_where(|op| matches!(op, Op::SgdUpdate(_))).len(), 16);
    assert_eq!(g.nodes_where(|op| matches!(op, Op::Momentum(_))).len(), 16);
}

#[test]
fn without_autodiff_it_fails_cleanly() {
    let mut g = small_net();
    let err = Optimizer
        .run(&mut g, &mut training_ctx())
        .expect_err("needs gradients");
    assert!(err.to_string().contains("autodiff"), "{err}");
}
