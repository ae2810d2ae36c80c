//! `autodiff`: the training graph of small cases and of AlexNet, pinned by
//! snapshots, and its gradients checked against finite differences of the
//! reference interpreter.

mod common;

use alexc_ir::{print, verify, Op};
use alexc_passes::autodiff::Autodiff;
use alexc_passes::{Pass, PassContext, PipelineMode};
use common::{alexnet, small_net, training_ctx};

#[test]
fn small_net_training_graph() {
    let mut g = small_net();
    let before = print::to_text(&g);
    let mut ctx = training_ctx();
    let changed = Autodiff.run(&mut g, &mut ctx).expect("autodiff");
    assert!(changed);
    verify(&g).expect("verifies");
    insta::assert_snapshot!("small-before", before);
    insta::assert_snapshot!("small-after", print::to_text(&g));
}

#[test]
fn alexnet_training_graph() {
    let mut g = alexnet(2);
    let mut ctx = training_ctx();
    Autodiff.run(&mut g, &mut ctx).expect("autodiff");
    verify(&g).expect("verifies");
    // One gradient per parameter, conv1 computes no input gradient.
    assert_eq!(ctx.gradients.len(), 16);
    let conv1 = g.find("conv1.backward").expect("conv1.backward");
    match &g[conv1].op {
        Op::Conv2dBackward(a) => assert!(!a.input_grad),
        other => panic!("conv1.backward is {other:?}"),
    }
    // Dropout became explicit masks.
    assert!(g.find("drop6.mask").is_some() && g.find("drop7.mask").is_some());
    assert!(matches!(g[g.find("drop6").expect("drop6")].op, Op::Mul));
    insta::assert_snapshot!("alexnet-after", print::to_text(&g));
}

#[test]
fn inference_mode_is_a_no_op() {
    let mut g = small_net();
    let before = print::to_text(&g);
    let mut ctx = PassContext {
        mode: Some(PipelineMode::Inference),
        ..PassContext::default()
    };
    assert!(!Autodiff.run(&mut g, &mut ctx).expect("runs"));
    assert_eq!(before, print::to_text(&g));
}

#[test]
fn refuses_graphs_with_two_outputs() {
    let mut g = small_net();
    let outs = vec![g.outputs()[0], g.outputs()[0]];
    g.set_outputs(outs).expect("outputs");
    let err = Autodiff
        .run(&mut g, &mut training_ctx())
        .expect_err("two outputs");
    assert!(err.to_string().contains("exactly one output"), "{err}");
}

/// The whole training graph of `small_net` (every op kind of AlexNet: conv
/// with stride and padding, ReLU, LRN, overlapping max-pool, flatten,
/// dropout, linear) differentiates correctly: every parameter gradient the
/// graph computes equals central finite differences of its loss, in f64.
///
/// Tolerance: |analytic − numeric| ≤ 1e-6 + 1e-4·|numeric|. Central
/// differences with h = 1e-6 in f64 have truncation error O(h²·f''') ≈ 1e-12
/// and rounding error O(ε·|L|/h) ≈ 1e-10; 1e-4 relative is far above both
/// while a wrong derivative (a missing term, a transposed index) is off by
/// O(1). Inputs avoid the ReLU kink and max-pool ties by construction
/// (random continuous values; a kink within h of a sample has probability
/// ~1e-5 and would show as a single large outlier).
#[test]
fn gradients_match_finite_differences() {
    use std::collections::{BTreeMap, HashMap};

    use alexc_interp::{Mode, Value};
    use alexc_tensor::Tensor;

    let mut g = small_net();
    let mut ctx = training_ctx();
    Autodiff.run(&mut g, &mut ctx).expect("autodiff");

    // Deterministic pseudo-random numbers (an LCG keeps the test free of RNG crates).
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    };
    let mut weights: BTreeMap<String, Tensor<f64>> = BTreeMap::new();
    for id in g.nodes_where(|op| matches!(op, Op::Parameter(_))) {
        let shape = g[id].outputs[0].shape.dims().to_vec();
        let n: usize = shape.iter().product();
        let data = (0..n).map(|_| next() * 0.5).collect();
        weights.insert(
            g[id].name.clone(),
            Tensor::new(shape, data).expect("tensor"),
        );
    }
    let image: Vec<f64> = (0..2 * 3 * 9 * 9).map(|_| next() * 2.0).collect();
    let mask: Vec<f64> = (0..2 * 16)
        .map(|i| if (i * 7) % 3 == 0 { 0.0 } else { 2.0 })
        .collect();
    let mut inputs: HashMap<String, Value<f64>> = HashMap::new();
    inputs.insert(
        "image".into(),
        Value::Float(Tensor::new(vec![2, 3, 9, 9], image).expect("t")),
    );
    inputs.insert(
        "drop.mask".into(),
        Value::Float(Tensor::new(vec![2, 16], mask).expect("t")),
    );
    inputs.insert(
        "labels".into(),
        Value::Int(Tensor::new(vec![2], vec![1i64, 4]).expect("t")),
    );

    let loss_of = |w: &BTreeMap<String, Tensor<f64>>| -> f64 {
        let out = alexc_interp::run(&g, w, &inputs, Mode::Eval).expect("runs");
        out[0].as_float().expect("loss").data()[0]
    };
    let outputs = alexc_interp::run(&g, &weights, &inputs, Mode::Eval).expect("runs");
    let h = 1e-6;
    let mut checked = 0;
    for (k, (param, _)) in ctx.gradients.iter().enumerate() {
        let grad = outputs[2 + k].as_float().expect("gradient").clone();
        let n = grad.len();
        // Every element of small tensors, a spread of elements of larger ones.
        let picks: Vec<usize> = if n <= 40 {
            (0..n).collect()
        } else {
            (0..40).map(|i| (i * 7919) % n).collect()
        };
        for i in picks {
            let mut plus = weights.clone();
            plus.get_mut(param).expect("param").data_mut()[i] += h;
            let mut minus = weights.clone();
            minus.get_mut(param).expect("param").data_mut()[i] -= h;
            let numeric = (loss_of(&plus) - loss_of(&minus)) / (2.0 * h);
            let analytic = grad.data()[i];
            assert!(
                (analytic - numeric).abs() <= 1e-6 + 1e-4 * numeric.abs(),
                "{param}[{i}]: autodiff {analytic:e}, finite differences {numeric:e}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 100, "only {checked} gradient entries checked");
}
