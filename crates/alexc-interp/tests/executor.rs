//! The graph executor on a small graph that uses every op: results equal the
//! ops composed by hand, in f32 and f64; dropout masks are reproducible; bad
//! bindings are reported all at once.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::{BTreeMap, HashMap};

use alexc_interp::{
    node_dropout_mask, ops, run, run_all, BindingProblem, InterpError, Mode, Real, Value,
};
use alexc_ir::{
    AlphaConvention, AvgPool2dAttrs, ConcatAttrs, Conv2dAttrs, DType, DropoutAttrs, Graph, Init,
    InputAttrs, LinearAttrs, LrnAttrs, Op, ParameterAttrs, Pool2dAttrs, Shape, SoftmaxAttrs,
    SplitAttrs, ValueId,
};
use alexc_tensor::{init_parameters, Tensor};

const BATCH: usize = 2;

fn conv_attrs() -> Conv2dAttrs {
    Conv2dAttrs {
        out_channels: 4,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
        dilation: [1, 1],
        groups: 1,
        bias: true,
    }
}
fn lrn_attrs() -> LrnAttrs {
    LrnAttrs {
        size: 3,
        alpha: 0.5,
        beta: 0.75,
        k: 1.0,
        alpha_convention: AlphaConvention::DividedBySize,
    }
}
fn pool_attrs() -> Pool2dAttrs {
    Pool2dAttrs {
        kernel: [2, 2],
        stride: [2, 2],
        padding: [0, 0],
    }
}
fn split_attrs() -> SplitAttrs {
    SplitAttrs {
        axis: 1,
        sizes: vec![1, 3],
    }
}
fn avg_attrs() -> AvgPool2dAttrs {
    AvgPool2dAttrs {
        kernel: [2, 2],
        stride: [2, 2],
        padding: [1, 1],
        count_include_pad: false,
    }
}
fn fc_attrs() -> LinearAttrs {
    LinearAttrs {
        out_features: 5,
        bias: true,
    }
}
fn drop_attrs() -> DropoutAttrs {
    DropoutAttrs { p: 0.5 }
}

fn param(shape: &[usize]) -> Op {
    Op::Parameter(ParameterAttrs {
        dtype: DType::F32,
        shape: Shape::new(shape),
        init: Init::Normal {
            mean: 0.0,
            std: 0.5,
        },
    })
}

/// image → conv → relu → lrn → max-pool → split [1, 3] → concat (swapped)
/// → add (with the pool output) → avg-pool → flatten → fc → dropout →
/// softmax; loss = cross-entropy(dropout output, labels).
/// Outputs: [probabilities, loss].
fn small_graph() -> Graph {
    let mut g = Graph::new("small", BATCH);
    let image = Op::Input(InputAttrs {
        dtype: DType::F32,
        shape: Shape::new([BATCH, 3, 8, 8]),
    });
    let x = g.add("image", image, &[]).unwrap();
    let labels = Op::Input(InputAttrs {
        dtype: DType::I64,
        shape: Shape::new([BATCH]),
    });
    let labels = g.add("labels", labels, &[]).unwrap();
    let w = g.add("conv.weight", param(&[4, 3, 3, 3]), &[]).unwrap();
    let b = g.add("conv.bias", param(&[4]), &[]).unwrap();
    let conv = g
        .add(
            "conv",
            Op::Conv2d(conv_attrs()),
            &[x.into(), w.into(), b.into()],
        )
        .unwrap();
    let relu = g.add("relu", Op::Relu, &[conv.into()]).unwrap();
    let lrn = g.add("lrn", Op::Lrn(lrn_attrs()), &[relu.into()]).unwrap();
    let pool = g
        .add("pool", Op::MaxPool2d(pool_attrs()), &[lrn.into()])
        .unwrap();
    let split = g
        .add("split", Op::Split(split_attrs()), &[pool.into()])
        .unwrap();
    let swapped = g
        .add(
            "swap",
            Op::Concat(ConcatAttrs { axis: 1 }),
            &[ValueId::new(split, 1), ValueId::new(split, 0)],
        )
        .unwrap();
    let sum = g
        .add("sum", Op::Add, &[swapped.into(), pool.into()])
        .unwrap();
    let avg = g
        .add("avg", Op::AvgPool2d(avg_attrs()), &[sum.into()])
        .unwrap();
    let flat = g.add("flat", Op::Flatten, &[avg.into()]).unwrap();
    let fw = g.add("fc.weight", param(&[5, 4 * 3 * 3]), &[]).unwrap();
    let fb = g.add("fc.bias", param(&[5]), &[]).unwrap();
    let fc = g
        .add(
            "fc",
            Op::Linear(fc_attrs()),
            &[flat.into(), fw.into(), fb.into()],
        )
        .unwrap();
    let drop = g
        .add("drop", Op::Dropout(drop_attrs()), &[fc.into()])
        .unwrap();
    let probs = g
        .add(
            "probs",
            Op::Softmax(SoftmaxAttrs { axis: 1 }),
            &[drop.into()],
        )
        .unwrap();
    let loss = g
        .add(
            "loss",
            Op::SoftmaxCrossEntropy,
            &[drop.into(), labels.into()],
        )
        .unwrap();
    g.set_outputs(vec![probs.into(), loss.into()]).unwrap();
    g
}

fn weights<T: Real>(g: &Graph) -> BTreeMap<String, Tensor<T>> {
    init_parameters(g, 7, std::path::Path::new("."))
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.map(|&x| T::of(x as f64))))
        .collect()
}

fn inputs<T: Real>() -> HashMap<String, Value<T>> {
    let image = Tensor::from_flat_fn(vec![BATCH, 3, 8, 8], |i| {
        T::of(((i * 37) % 17) as f64 / 8.0 - 1.0)
    })
    .unwrap();
    let labels = Tensor::new(vec![BATCH], vec![3i64, 0]).unwrap();
    HashMap::from([
        ("image".to_string(), Value::Float(image)),
        ("labels".to_string(), Value::Int(labels)),
    ])
}

/// The same network, composed from the ops by hand. `mask` is the dropout
/// mask, `None` in evaluation.
fn by_hand<T: Real>(
    w: &BTreeMap<String, Tensor<T>>,
    inputs: &HashMap<String, Value<T>>,
    mask: Option<&Tensor<T>>,
) -> (Tensor<T>, Tensor<T>) {
    let x = inputs["image"].as_float().unwrap();
    let labels = inputs["labels"].as_int().unwrap();
    let y = ops::conv2d(x, &w["conv.weight"], Some(&w["conv.bias"]), &conv_attrs()).unwrap();
    let y = ops::lrn(&ops::relu(&y), &lrn_attrs()).unwrap();
    let pool = ops::max_pool2d(&y, &pool_attrs()).unwrap();
    let parts = ops::split(&pool, &split_attrs()).unwrap();
    let swapped = ops::concat(&[&parts[1], &parts[0]], &ConcatAttrs { axis: 1 }).unwrap();
    let y = ops::add(&swapped, &pool).unwrap();
    let y = ops::flatten(&ops::avg_pool2d(&y, &avg_attrs()).unwrap()).unwrap();
    let y = ops::linear(&y, &w["fc.weight"], Some(&w["fc.bias"]), &fc_attrs()).unwrap();
    let y = ops::dropout(&y, mask).unwrap();
    let probs = ops::softmax(&y, &SoftmaxAttrs { axis: 1 }).unwrap();
    let loss = ops::softmax_cross_entropy(&y, labels).unwrap();
    (probs, loss)
}

fn float<T: Clone>(v: &Value<T>) -> Tensor<T> {
    v.as_float().expect("a float output").clone()
}

#[test]
fn runs_in_f32_and_f64_and_matches_the_ops_composed_by_hand() {
    let g = small_graph();
    let w64 = weights::<f64>(&g);
    let in64 = inputs::<f64>();
    let out64 = run(&g, &w64, &in64, Mode::Eval).unwrap();
    let (probs, loss) = by_hand(&w64, &in64, None);
    assert_eq!(float(&out64[0]), probs);
    assert_eq!(float(&out64[1]), loss);
    assert_eq!(out64[1].ty().to_string(), "f32[]");

    let w32 = weights::<f32>(&g);
    let in32 = inputs::<f32>();
    let out32 = run(&g, &w32, &in32, Mode::Eval).unwrap();
    let (probs32, loss32) = by_hand(&w32, &in32, None);
    assert_eq!(float(&out32[0]), probs32);
    assert_eq!(float(&out32[1]), loss32);

    // f32 and f64 agree to f32 precision.
    for (a, b) in float(&out32[0]).data().iter().zip(probs.data()) {
        assert!((f64::from(*a) - b).abs() < 1e-5, "{a} vs {b}");
    }
    let (l32, l64) = (f64::from(float(&out32[1]).data()[0]), loss.data()[0]);
    assert!(
        (l32 - l64).abs() < 1e-5 * l64.abs().max(1.0),
        "{l32} vs {l64}"
    );
}

#[test]
fn training_mode_uses_reproducible_per_node_masks() {
    let g = small_graph();
    let (w, x) = (weights::<f64>(&g), inputs::<f64>());
    let train = |seed| run(&g, &w, &x, Mode::Train { seed }).unwrap();
    let a = train(1);
    assert_eq!(a, train(1));
    assert_ne!(a, train(2));
    assert_ne!(a, run(&g, &w, &x, Mode::Eval).unwrap());

    let mask = node_dropout_mask::<f64>("drop", 1, &[BATCH, 5], &drop_attrs()).unwrap();
    let (probs, loss) = by_hand(&w, &x, Some(&mask));
    assert_eq!(float(&a[0]), probs);
    assert_eq!(float(&a[1]), loss);
    // The mask depends on the seed and the name only, not on T.
    let mask32 = node_dropout_mask::<f32>("drop", 1, &[BATCH, 5], &drop_attrs()).unwrap();
    assert_eq!(mask32.map(|&m| f64::from(m)), mask);
}

#[test]
fn run_all_returns_every_value() {
    let g = small_graph();
    let all = run_all(&g, &weights::<f32>(&g), &inputs::<f32>(), Mode::Eval).unwrap();
    // One value per result: split has two.
    assert_eq!(all.len(), g.len() + 1);
    for id in g.node_ids() {
        for (i, ty) in g[id].outputs.iter().enumerate() {
            let v = &all[&ValueId::new(id, i as u16)];
            assert_eq!(&v.ty(), ty, "{}", g[id].name);
        }
    }
    let split = g.find("split").unwrap();
    assert_eq!(all[&ValueId::new(split, 1)].shape(), &[BATCH, 3, 4, 4]);
    let out = run(&g, &weights::<f32>(&g), &inputs::<f32>(), Mode::Eval).unwrap();
    assert_eq!(all[&g.outputs()[0]], out[0]);
}

#[test]
fn every_binding_problem_is_reported_at_once() {
    let g = small_graph();
    let mut w = weights::<f32>(&g);
    w.remove("fc.bias");
    w.insert(
        "conv.weight".into(),
        Tensor::zeros(vec![4, 3, 5, 5]).unwrap(),
    );
    w.insert("fc.weights".into(), Tensor::zeros(vec![5, 36]).unwrap());
    let mut x = inputs::<f32>();
    x.remove("labels");
    x.insert(
        "image".into(),
        Value::Float(Tensor::zeros(vec![BATCH, 3, 8, 9]).unwrap()),
    );
    x.insert(
        "conv.bias".into(),
        Value::Float(Tensor::zeros(vec![4]).unwrap()),
    );
    x.insert("extra".into(), Value::Int(Tensor::zeros(vec![1]).unwrap()));

    let err = run(&g, &w, &x, Mode::Eval).unwrap_err();
    let InterpError::Bindings(problems) = &err else {
        panic!("{err}")
    };
    assert_eq!(problems.0.len(), 5, "{err}");
    assert!(problems.0.contains(&BindingProblem::MissingInput {
        name: "labels".into(),
        expected: alexc_ir::TensorType::new(DType::I64, Shape::new([BATCH])),
    }));
    let text = err.to_string();
    for needle in [
        "the inputs and weights do not match the graph:",
        "input `labels` is missing (expected i64[2])",
        "input `image`: expected f32[2, 3, 8, 8], found f32[2, 3, 8, 9]",
        "input `conv.bias` is a parameter of the graph; pass it with the weights instead",
        "input `extra` is not an input of the graph",
        "conv.weight: expected [4, 3, 3, 3], found [4, 3, 5, 5]",
        "fc.bias: missing (expected [5])",
        "fc.weights: unexpected",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }

    // An integer tensor bound to a float input is a type error, not a panic.
    let mut x = inputs::<f32>();
    x.insert(
        "image".into(),
        Value::Int(Tensor::zeros(vec![BATCH, 3, 8, 8]).unwrap()),
    );
    let err = run(&g, &weights::<f32>(&g), &x, Mode::Eval).unwrap_err();
    assert!(
        err.to_string()
            .contains("expected f32[2, 3, 8, 8], found i64[2, 3, 8, 8]"),
        "{err}"
    );
}

#[test]
fn runtime_errors_name_the_node() {
    let g = small_graph();
    let mut x = inputs::<f32>();
    x.insert(
        "labels".into(),
        Value::Int(Tensor::new(vec![BATCH], vec![0i64, 5]).unwrap()),
    );
    let err = run(&g, &weights::<f32>(&g), &x, Mode::Eval).unwrap_err();
    assert!(
        matches!(&err, InterpError::Op { node, .. } if node == "loss"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("label 5 of sample 1 is out of range for 5 classes"),
        "{err}"
    );
}

#[test]
fn invalid_graphs_are_refused() {
    let mut g = small_graph();
    let relu = g.find("relu").unwrap();
    let pool = g.find("pool").unwrap();
    // A cycle: relu now also reads pool.
    g.add_raw_edge(pool.into(), relu, 1);
    let err = run(&g, &weights::<f32>(&g), &inputs::<f32>(), Mode::Eval).unwrap_err();
    assert!(matches!(err, InterpError::InvalidGraph(_)), "{err}");
}
