//! The optimizer and the training step: `SgdUpdate` in both conventions
//! against numbers computed by hand, `train_step` / `apply_updates` on a
//! small training graph built by hand, and the training-graph sources
//! (dropout masks, momentum buffers) in the executor.
//!
//! Tolerance: the hand-computed numbers are decimal fractions, exact in
//! neither f32 nor f64; in f64 a few roundings leave errors near 1e-16, so
//! they are compared to 1e-12. Results the interpreter computes with the same
//! ops in the same order are compared with `==`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use alexc_interp::{
    apply_updates, node_dropout_mask, ops, run, run_all, train_step, BindingProblem, InterpError,
    Mode, Real, Value,
};
use alexc_ir::{
    DType, DropoutAttrs, DropoutMaskAttrs, Graph, Init, InputAttrs, LinearAttrs,
    LinearBackwardAttrs, MomentumAttrs, NodeId, Op, ParameterAttrs, SgdAttrs, SgdConvention, Shape,
    TensorType, ValueId,
};
use alexc_tensor::{init_parameters, Tensor};

fn t(shape: &[usize], data: &[f64]) -> Tensor<f64> {
    Tensor::new(shape.to_vec(), data.to_vec()).unwrap()
}

#[track_caller]
fn assert_close(got: &Tensor<f64>, want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.data().iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-12, "element {i}: got {g}, want {w}");
    }
}

fn sgd(convention: SgdConvention) -> SgdAttrs {
    SgdAttrs {
        momentum: 0.9,
        weight_decay: 0.01,
        convention,
    }
}

// ---------------------------------------------------------------- sgd-update

#[test]
fn sgd_update_paper_convention_by_hand() {
    // μ = 0.9, λ = 0.01, ε = 0.1; v = μv − λεw − εg, w = w + v:
    //   v0 = 0.9·0.5  − 0.001·1    − 0.1·0.1    = 0.45  − 0.001 − 0.01 = 0.439
    //   v1 = 0.9·0.25 − 0.001·(−2) − 0.1·(−0.3) = 0.225 + 0.002 + 0.03 = 0.257
    //   w0 = 1 + 0.439 = 1.439;  w1 = −2 + 0.257 = −1.743
    let (w, v, g) = (
        t(&[2], &[1.0, -2.0]),
        t(&[2], &[0.5, 0.25]),
        t(&[2], &[0.1, -0.3]),
    );
    let step =
        ops::sgd_update(&w, &v, &g, &Tensor::scalar(0.1), &sgd(SgdConvention::Paper)).unwrap();
    assert_close(&step.v, &[0.439, 0.257]);
    assert_close(&step.w, &[1.439, -1.743]);
}

#[test]
fn sgd_update_pytorch_convention_by_hand() {
    // v = μv + g + λw, w = w − εv:
    //   v0 = 0.45  + 0.1    + 0.01   = 0.56;   w0 = 1  − 0.1·0.56    = 0.944
    //   v1 = 0.225 − 0.3    − 0.02   = −0.095; w1 = −2 − 0.1·(−0.095) = −1.9905
    let (w, v, g) = (
        t(&[2], &[1.0, -2.0]),
        t(&[2], &[0.5, 0.25]),
        t(&[2], &[0.1, -0.3]),
    );
    let step = ops::sgd_update(
        &w,
        &v,
        &g,
        &Tensor::scalar(0.1),
        &sgd(SgdConvention::Pytorch),
    )
    .unwrap();
    assert_close(&step.v, &[0.56, -0.095]);
    assert_close(&step.w, &[0.944, -1.9905]);
}

#[test]
fn the_conventions_coincide_from_zero_momentum_at_a_constant_rate() {
    let grads = [
        t(&[3], &[0.3, -0.1, 2.0]),
        t(&[3], &[-0.5, 0.4, 1.0]),
        t(&[3], &[0.2, 0.2, -0.7]),
    ];
    let lr = Tensor::scalar(0.05);
    let start = t(&[3], &[1.0, -1.0, 0.5]);
    let run = |convention, rates: &[f64]| {
        let (mut w, mut v) = (start.clone(), t(&[3], &[0.0; 3]));
        for (g, &rate) in grads.iter().zip(rates) {
            let step = ops::sgd_update(&w, &v, g, &Tensor::scalar(rate), &sgd(convention)).unwrap();
            (w, v) = (step.w, step.v);
        }
        (w, v)
    };
    let constant = [0.05; 3];
    let (w_paper, v_paper) = run(SgdConvention::Paper, &constant);
    let (w_torch, v_torch) = run(SgdConvention::Pytorch, &constant);
    // Same parameters; the paper's momentum is −ε times PyTorch's.
    assert_close(&w_paper, w_torch.data());
    let scaled = v_torch.map(|v| -lr.data()[0] * v);
    assert_close(&v_paper, scaled.data());
    assert_ne!(w_paper, start);

    // Once the rate changes they part.
    let schedule = [0.05, 0.01, 0.01];
    let (w_paper, _) = run(SgdConvention::Paper, &schedule);
    let (w_torch, _) = run(SgdConvention::Pytorch, &schedule);
    let gap = w_paper
        .data()
        .iter()
        .zip(w_torch.data())
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(gap > 1e-3, "gap {gap}");
}

#[test]
fn sgd_update_rejects_bad_operands() {
    let w = t(&[2], &[1.0, 2.0]);
    let attrs = sgd(SgdConvention::Paper);
    let lr = Tensor::scalar(0.1);
    assert!(ops::sgd_update(&w, &t(&[3], &[0.0; 3]), &w, &lr, &attrs).is_err());
    assert!(ops::sgd_update(&w, &w, &t(&[1, 2], &[0.0; 2]), &lr, &attrs).is_err());
    let err = ops::sgd_update(&w, &w, &w, &t(&[1], &[0.1]), &attrs).unwrap_err();
    assert!(err.to_string().contains("must be a scalar"), "{err}");
}

// ---------------------------------------------------------------- train_step

const N: usize = 2;
const FEATURES: usize = 3;
const CLASSES: usize = 4;

fn input(g: &mut Graph, name: &str, dtype: DType, shape: &[usize]) -> NodeId {
    let op = Op::Input(InputAttrs {
        dtype,
        shape: Shape::new(shape),
    });
    g.add(name, op, &[]).unwrap()
}

/// x → fc → softmax-cross-entropy, its backward and one SGD update per
/// parameter, following the training-graph conventions: parameters
/// `fc.weight`, `fc.bias`, momentum buffers `{param}.momentum`, updates
/// `{param}.sgd` with operands (param, momentum, grad, lr); outputs
/// [loss, logits].
fn training_graph(convention: SgdConvention) -> Graph {
    let mut g = Graph::new("tiny-train", N);
    let x = input(&mut g, "x", DType::F32, &[N, FEATURES]);
    let labels = input(&mut g, "labels", DType::I64, &[N]);
    let lr = input(&mut g, "lr", DType::F32, &[]);
    let mut state = Vec::new();
    for (name, shape) in [
        ("fc.weight", vec![CLASSES, FEATURES]),
        ("fc.bias", vec![CLASSES]),
    ] {
        let p = Op::Parameter(ParameterAttrs {
            dtype: DType::F32,
            shape: Shape::new(shape.clone()),
            init: Init::Normal {
                mean: 0.0,
                std: 0.5,
            },
        });
        let p = g.add(name, p, &[]).unwrap();
        let m = Op::Momentum(MomentumAttrs {
            dtype: DType::F32,
            shape: Shape::new(shape),
            of: name.into(),
        });
        let m = g.add(format!("{name}.momentum"), m, &[]).unwrap();
        state.push((name, p, m));
    }
    let (w, b) = (state[0].1, state[1].1);
    let linear = LinearAttrs {
        out_features: CLASSES,
        bias: true,
    };
    let fc = g
        .add(
            "fc",
            Op::Linear(linear.clone()),
            &[x.into(), w.into(), b.into()],
        )
        .unwrap();
    let loss = g
        .add("loss", Op::SoftmaxCrossEntropy, &[fc.into(), labels.into()])
        .unwrap();
    let dfc = g
        .add(
            "loss.backward",
            Op::SoftmaxCrossEntropyBackward,
            &[fc.into(), labels.into()],
        )
        .unwrap();
    let back = LinearBackwardAttrs {
        linear,
        input_grad: false,
        relu: false,
        dropout: false,
    };
    let grads = g
        .add(
            "fc.backward",
            Op::LinearBackward(back),
            &[x.into(), w.into(), dfc.into()],
        )
        .unwrap();
    // Results of fc.backward without dx: [dw, db].
    for (i, (name, p, m)) in state.into_iter().enumerate() {
        g.add(
            format!("{name}.sgd"),
            Op::SgdUpdate(sgd(convention)),
            &[p.into(), m.into(), ValueId::new(grads, i as u16), lr.into()],
        )
        .unwrap();
    }
    g.set_outputs(vec![loss.into(), fc.into()]).unwrap();
    g
}

fn state<T: Real>(g: &Graph) -> BTreeMap<String, Tensor<T>> {
    init_parameters(g, 11, Path::new("."))
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.map(|&x| T::of(f64::from(x)))))
        .collect()
}

fn inputs<T: Real>(labels: [i64; N]) -> HashMap<String, Value<T>> {
    let x = Tensor::new(
        vec![N, FEATURES],
        [0.5, -1.0, 2.0, 1.5, 0.25, -0.5].map(T::of).to_vec(),
    )
    .unwrap();
    HashMap::from([
        ("x".to_string(), Value::Float(x)),
        (
            "labels".to_string(),
            Value::Int(Tensor::new(vec![N], labels.to_vec()).unwrap()),
        ),
        ("lr".to_string(), Value::Float(Tensor::scalar(T::of(0.5)))),
    ])
}

/// The step computed with the ops by hand: (loss, logits, new state).
fn step_by_hand<T: Real>(
    state: &BTreeMap<String, Tensor<T>>,
    inputs: &HashMap<String, Value<T>>,
    convention: SgdConvention,
) -> (Tensor<T>, Tensor<T>, BTreeMap<String, Tensor<T>>) {
    let x = inputs["x"].as_float().unwrap();
    let labels = inputs["labels"].as_int().unwrap();
    let lr = inputs["lr"].as_float().unwrap();
    let linear = LinearAttrs {
        out_features: CLASSES,
        bias: true,
    };
    let logits = ops::linear(x, &state["fc.weight"], Some(&state["fc.bias"]), &linear).unwrap();
    let loss = ops::softmax_cross_entropy(&logits, labels).unwrap();
    let dlogits = ops::softmax_cross_entropy_backward(&logits, labels).unwrap();
    let back = LinearBackwardAttrs {
        linear,
        input_grad: false,
        relu: false,
        dropout: false,
    };
    let grads = ops::linear_backward(x, &state["fc.weight"], None, None, &dlogits, &back).unwrap();
    let mut new = state.clone();
    for (name, g) in [("fc.weight", grads.dw), ("fc.bias", grads.db.unwrap())] {
        let momentum = format!("{name}.momentum");
        let step =
            ops::sgd_update(&state[name], &state[&momentum], &g, lr, &sgd(convention)).unwrap();
        new.insert(name.to_string(), step.w);
        new.insert(momentum, step.v);
    }
    (loss, logits, new)
}

fn train_step_updates_the_state<T: Real>(convention: SgdConvention) {
    let g = training_graph(convention);
    let mut state = state::<T>(&g);
    // init_parameters creates the momentum buffers, at zero.
    assert_eq!(state.len(), 4);
    assert!(state["fc.weight.momentum"]
        .data()
        .iter()
        .all(|&v| v == T::zero()));
    let x = inputs::<T>([3, 1]);

    let mut losses = Vec::new();
    for _ in 0..3 {
        let before = state.clone();
        let (loss, logits, after) = step_by_hand(&before, &x, convention);
        let out = train_step(&g, &mut state, &x, Mode::Train { seed: 1 }).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], Value::Float(loss.clone()));
        assert_eq!(out[1], Value::Float(logits));
        assert_eq!(state, after);
        assert_ne!(state["fc.weight"], before["fc.weight"]);
        assert_ne!(state["fc.bias.momentum"], before["fc.bias.momentum"]);
        losses.push(loss.data()[0].as_f64());
    }
    // Gradient descent on a convex loss with a small step: it goes down.
    assert!(losses.windows(2).all(|w| w[1] < w[0]), "{losses:?}");
}

#[test]
fn train_step_runs_the_graph_and_updates_the_state_in_place() {
    for convention in [SgdConvention::Paper, SgdConvention::Pytorch] {
        train_step_updates_the_state::<f64>(convention);
        train_step_updates_the_state::<f32>(convention);
    }
}

#[test]
fn apply_updates_after_run_all_equals_train_step() {
    let g = training_graph(SgdConvention::Paper);
    let x = inputs::<f64>([0, 2]);
    let mut a = state::<f64>(&g);
    let mut b = a.clone();
    let out = train_step(&g, &mut a, &x, Mode::Eval).unwrap();
    let values = run_all(&g, &b, &x, Mode::Eval).unwrap();
    apply_updates(&g, &values, &mut b).unwrap();
    assert_eq!(a, b);
    assert_eq!(out, run(&g, &state::<f64>(&g), &x, Mode::Eval).unwrap());

    // Missing results or state entries are errors, and nothing is written.
    let mut c = state::<f64>(&g);
    let mut partial = values.clone();
    let sgd = g.find("fc.bias.sgd").unwrap();
    partial.remove(&ValueId::new(sgd, 1));
    let err = apply_updates(&g, &partial, &mut c).unwrap_err();
    assert!(matches!(err, InterpError::Update { .. }), "{err}");
    assert_eq!(c, state::<f64>(&g));
    c.remove("fc.bias.momentum");
    let err = apply_updates(&g, &values, &mut c).unwrap_err();
    assert!(
        err.to_string().contains("no entry `fc.bias.momentum`"),
        "{err}"
    );
}

#[test]
fn a_failed_step_leaves_the_state_unchanged() {
    let g = training_graph(SgdConvention::Pytorch);
    let mut s = state::<f64>(&g);
    let before = s.clone();
    let err = train_step(&g, &mut s, &inputs([0, 7]), Mode::Eval).unwrap_err();
    assert!(
        matches!(&err, InterpError::Op { node, .. } if node == "loss"),
        "{err}"
    );
    assert_eq!(s, before);

    // A missing momentum buffer is a binding error, named.
    s.remove("fc.weight.momentum");
    let err = train_step(&g, &mut s, &inputs([0, 1]), Mode::Eval).unwrap_err();
    assert!(matches!(err, InterpError::Bindings(_)), "{err}");
    assert!(err.to_string().contains("fc.weight.momentum"), "{err}");
}

#[test]
fn updates_must_write_a_parameter_and_its_own_momentum() {
    let attrs = sgd(SgdConvention::Paper);
    let build = |wrong_owner: bool, computed_param: bool| {
        let mut g = Graph::new("bad", 1);
        let lr = input(&mut g, "lr", DType::F32, &[]);
        let grad = input(&mut g, "grad", DType::F32, &[2]);
        let p = Op::Parameter(ParameterAttrs {
            dtype: DType::F32,
            shape: Shape::new([2]),
            init: Init::Constant { value: 1.0 },
        });
        let p = g.add("w", p, &[]).unwrap();
        let m = Op::Momentum(MomentumAttrs {
            dtype: DType::F32,
            shape: Shape::new([2]),
            of: if wrong_owner { "other" } else { "w" }.into(),
        });
        let m = g.add("w.momentum", m, &[]).unwrap();
        let target = if computed_param {
            g.add("w.relu", Op::Relu, &[p.into()]).unwrap()
        } else {
            p
        };
        let sgd = g
            .add(
                "w.sgd",
                Op::SgdUpdate(attrs.clone()),
                &[target.into(), m.into(), grad.into(), lr.into()],
            )
            .unwrap();
        g.set_outputs(vec![ValueId::new(sgd, 0)]).unwrap();
        g
    };
    let x: HashMap<String, Value<f64>> = HashMap::from([
        ("lr".to_string(), Value::Float(Tensor::scalar(0.1))),
        ("grad".to_string(), Value::Float(t(&[2], &[1.0, 1.0]))),
    ]);
    for (wrong_owner, computed_param, needle) in [
        (true, false, "`w.momentum` belongs to `other`, not to `w`"),
        (
            false,
            true,
            "operand 0 must be a parameter, but `w.relu` is a relu node",
        ),
    ] {
        let g = build(wrong_owner, computed_param);
        let mut s = state::<f64>(&g);
        let err = train_step(&g, &mut s, &x, Mode::Eval).unwrap_err();
        assert!(matches!(err, InterpError::Update { .. }), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    // The well-formed graph steps: w = 1 + (0 − 0.01·0.1·1 − 0.1·1) = 0.899.
    let g = build(false, false);
    let mut s = state::<f64>(&g);
    let out = train_step(&g, &mut s, &x, Mode::Eval).unwrap();
    assert_close(&s["w"], &[0.899, 0.899]);
    assert_eq!(out[0], Value::Float(s["w"].clone()));
}

// ---------------------------------------------------------------- training-graph sources

/// x → dropout `drop6`, and x ⊙ `drop6.mask` (key `drop6`): what autodiff
/// turns a dropout layer into.
fn mask_graph() -> Graph {
    let mut g = Graph::new("masks", 2);
    let x = input(&mut g, "x", DType::F32, &[2, 8]);
    let drop = g
        .add("drop6", Op::Dropout(DropoutAttrs { p: 0.5 }), &[x.into()])
        .unwrap();
    let mask = Op::DropoutMask(DropoutMaskAttrs {
        p: 0.5,
        shape: Shape::new([2, 8]),
        key: "drop6".into(),
    });
    let mask = g.add("drop6.mask", mask, &[]).unwrap();
    let mul = g
        .add("drop6.mul", Op::Mul, &[x.into(), mask.into()])
        .unwrap();
    g.set_outputs(vec![drop.into(), mul.into(), mask.into()])
        .unwrap();
    g
}

fn x_input() -> HashMap<String, Value<f64>> {
    let x = Tensor::from_flat_fn(vec![2, 8], |i| i as f64 + 1.0).unwrap();
    HashMap::from([("x".to_string(), Value::Float(x))])
}

#[test]
fn dropout_mask_nodes_draw_the_forward_layers_mask() {
    let g = mask_graph();
    let none = BTreeMap::new();
    for seed in [0, 1, 2] {
        let out = run(&g, &none, &x_input(), Mode::Train { seed }).unwrap();
        assert_eq!(out[0], out[1], "seed {seed}");
        let want =
            node_dropout_mask::<f64>("drop6", seed, &[2, 8], &DropoutAttrs { p: 0.5 }).unwrap();
        assert_eq!(out[2], Value::Float(want));
    }
}

#[test]
fn a_bound_dropout_mask_is_used_as_given() {
    let g = mask_graph();
    let none = BTreeMap::new();
    let mut x = x_input();
    let ones = Tensor::full(vec![2, 8], 1.0).unwrap();
    x.insert("drop6.mask".into(), Value::Float(ones));
    for mode in [Mode::Eval, Mode::Train { seed: 3 }] {
        let out = run(&g, &none, &x, mode).unwrap();
        assert_eq!(out[1], x["x"]);
    }

    // Wrongly shaped: a type problem, like any input.
    x.insert(
        "drop6.mask".into(),
        Value::Float(Tensor::full(vec![2, 7], 1.0).unwrap()),
    );
    let err = run(&g, &none, &x, Mode::Train { seed: 3 }).unwrap_err();
    let InterpError::Bindings(problems) = &err else {
        panic!("{err}")
    };
    assert!(problems.0.contains(&BindingProblem::InputType {
        name: "drop6.mask".into(),
        expected: TensorType::new(DType::F32, Shape::new([2, 8])),
        found: TensorType::new(DType::F32, Shape::new([2, 7])),
    }));
}

#[test]
fn an_unbound_dropout_mask_in_evaluation_is_a_binding_error() {
    let g = mask_graph();
    let err = run(&g, &BTreeMap::new(), &x_input(), Mode::Eval).unwrap_err();
    let InterpError::Bindings(problems) = &err else {
        panic!("{err}")
    };
    assert_eq!(
        problems.0,
        vec![BindingProblem::MissingDropoutMask {
            name: "drop6.mask".into(),
            expected: TensorType::new(DType::F32, Shape::new([2, 8])),
        }]
    );
    assert!(
        err.to_string()
            .contains("dropout mask `drop6.mask` is missing (expected f32[2, 8])"),
        "{err}"
    );
}

#[test]
fn momentum_buffers_are_bound_with_the_weights() {
    let g = training_graph(SgdConvention::Paper);
    let s = state::<f64>(&g);
    // Passed as an input instead: reported as belonging with the weights.
    let mut x = inputs::<f64>([0, 1]);
    x.insert(
        "fc.bias.momentum".into(),
        Value::Float(s["fc.bias.momentum"].clone()),
    );
    let mut without = s.clone();
    without.remove("fc.bias.momentum");
    let err = run(&g, &without, &x, Mode::Eval).unwrap_err();
    let InterpError::Bindings(problems) = &err else {
        panic!("{err}")
    };
    assert!(problems.0.contains(&BindingProblem::UnexpectedInput {
        name: "fc.bias.momentum".into(),
        is_parameter: true,
    }));
    assert!(
        err.to_string().contains("fc.bias.momentum: missing"),
        "{err}"
    );
}
