//! Every fused op, forward and backward, equals the composition of the
//! unfused ops it replaces — as functions in `ops` and as graph nodes run by
//! the executor — in f32 and in f64.
//!
//! Tolerance: none. The fused reference ops are defined as, and computed as,
//! the unfused composition, so the results are equal (`==`). The one place
//! where the computation differs is the linear backward with ReLU and
//! dropout, which reads the ReLU mask from the fused output
//! `y = relu(z) · mask` instead of from `relu(z)`; the two differ only where
//! the dropout mask is zero, where the fused op yields `0` and the unfused
//! chain `dy · 0 = ±0`. `==` does not distinguish `+0` from `−0`, and that is
//! the only difference the comparison tolerates.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::{BTreeMap, HashMap};

use alexc_interp::{ops, run_all, Mode, Real, Value};
use alexc_ir::{
    AlphaConvention, Conv2dAttrs, Conv2dBackwardAttrs, DType, DropoutAttrs, DropoutMaskAttrs,
    Graph, Init, InputAttrs, LinearAttrs, LinearBackwardAttrs, LinearReluAttrs, LrnAttrs,
    LrnMaxPoolAttrs, NodeId, Op, ParameterAttrs, Pool2dAttrs, Shape, ValueId,
};
use alexc_tensor::{init_parameters, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random<T: Real>(shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor<T> {
    Tensor::from_flat_fn(shape.to_vec(), |_| T::of(rng.random_range(-1.0..1.0))).unwrap()
}

/// Grouped, strided, padded: the fused conv must handle everything the
/// unfused one does.
fn conv_attrs() -> Conv2dAttrs {
    Conv2dAttrs {
        out_channels: 6,
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1, 1],
        dilation: [1, 1],
        groups: 2,
        bias: true,
    }
}

fn lrn_pool_attrs(size: usize) -> LrnMaxPoolAttrs {
    LrnMaxPoolAttrs {
        lrn: LrnAttrs {
            size,
            alpha: 1.0,
            beta: 0.75,
            k: 2.0,
            alpha_convention: AlphaConvention::DividedBySize,
        },
        pool: Pool2dAttrs {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
        },
    }
}

fn linear_attrs() -> LinearAttrs {
    LinearAttrs {
        out_features: 5,
        bias: true,
    }
}

// ---------------------------------------------------------------- ops

fn conv_relu_equals_composition<T: Real>() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let a = conv_attrs();
    let x = random::<T>(&[2, 4, 7, 6], &mut rng);
    let w = random::<T>(&[6, 2, 3, 3], &mut rng);
    let b = random::<T>(&[6], &mut rng);
    let y = ops::conv_relu(&x, &w, Some(&b), &a).unwrap();
    assert_eq!(y, ops::relu(&ops::conv2d(&x, &w, Some(&b), &a).unwrap()));

    let dy = random::<T>(y.shape(), &mut rng);
    for input_grad in [true, false] {
        let back = Conv2dBackwardAttrs {
            conv: a.clone(),
            input_grad,
        };
        let fused = ops::conv_relu_backward(&x, &w, &y, &dy, &back).unwrap();
        let unfused =
            ops::conv2d_backward(&x, &w, &ops::relu_backward(&y, &dy).unwrap(), &back).unwrap();
        assert_eq!(fused, unfused);
        assert_eq!(fused.dx.is_some(), input_grad);
    }
}

#[test]
fn conv_relu_forward_and_backward() {
    conv_relu_equals_composition::<f32>();
    conv_relu_equals_composition::<f64>();
}

fn lrn_max_pool_equals_composition<T: Real>() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for size in [3, 4, 5] {
        let a = lrn_pool_attrs(size);
        let x = random::<T>(&[2, 5, 7, 6], &mut rng);
        let y = ops::lrn_max_pool(&x, &a).unwrap();
        let lrn = ops::lrn(&x, &a.lrn).unwrap();
        assert_eq!(y, ops::max_pool2d(&lrn, &a.pool).unwrap());

        let dy = random::<T>(y.shape(), &mut rng);
        let fused = ops::lrn_max_pool_backward(&x, &dy, &a).unwrap();
        let dpool = ops::max_pool2d_backward(&lrn, &dy, &a.pool).unwrap();
        assert_eq!(fused, ops::lrn_backward(&x, &dpool, &a.lrn).unwrap());
    }
}

#[test]
fn lrn_max_pool_forward_and_backward() {
    lrn_max_pool_equals_composition::<f32>();
    lrn_max_pool_equals_composition::<f64>();
}

fn linear_relu_equals_composition<T: Real>() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let a = linear_attrs();
    let x = random::<T>(&[4, 7], &mut rng);
    let w = random::<T>(&[5, 7], &mut rng);
    let b = random::<T>(&[5], &mut rng);
    let mask = ops::dropout_mask::<T>(&[4, 5], &DropoutAttrs { p: 0.5 }, &mut rng).unwrap();
    assert!(mask.data().contains(&T::zero()) && mask.data().contains(&T::of(2.0)));
    let dy = random::<T>(&[4, 5], &mut rng);

    // Forward, without and with dropout.
    let relu = ops::relu(&ops::linear(&x, &w, Some(&b), &a).unwrap());
    let plain = LinearReluAttrs {
        linear: a.clone(),
        dropout: false,
    };
    let y = ops::linear_relu(&x, &w, Some(&b), None, &plain).unwrap();
    assert_eq!(y, relu);
    let with_dropout = LinearReluAttrs {
        linear: a.clone(),
        dropout: true,
    };
    let y_drop = ops::linear_relu(&x, &w, Some(&b), Some(&mask), &with_dropout).unwrap();
    assert_eq!(y_drop, ops::mul(&relu, &mask).unwrap());
    assert!(ops::linear_relu(&x, &w, Some(&b), None, &with_dropout).is_err());

    // Backward: relu only, then relu + dropout; with and without dx.
    for input_grad in [true, false] {
        let back = |relu: bool, dropout: bool| LinearBackwardAttrs {
            linear: a.clone(),
            input_grad,
            relu,
            dropout,
        };
        let unfused = |dz: &Tensor<T>| {
            ops::linear_backward(&x, &w, None, None, dz, &back(false, false)).unwrap()
        };

        let fused = ops::linear_backward(&x, &w, Some(&y), None, &dy, &back(true, false)).unwrap();
        assert_eq!(fused, unfused(&ops::relu_backward(&relu, &dy).unwrap()));

        let fused =
            ops::linear_backward(&x, &w, Some(&y_drop), Some(&mask), &dy, &back(true, true))
                .unwrap();
        // Unfused: the mul's gradient, then the ReLU's from its own output.
        let d_relu = ops::mul(&dy, &mask).unwrap();
        assert_eq!(fused, unfused(&ops::relu_backward(&relu, &d_relu).unwrap()));
        assert_eq!(fused.dx.is_some(), input_grad);
        assert!(fused.db.is_some());

        // Operands must match the flags.
        assert!(ops::linear_backward(&x, &w, None, Some(&mask), &dy, &back(true, true)).is_err());
        assert!(ops::linear_backward(&x, &w, Some(&y), None, &dy, &back(false, false)).is_err());
    }
}

#[test]
fn linear_relu_with_and_without_dropout_forward_and_backward() {
    linear_relu_equals_composition::<f32>();
    linear_relu_equals_composition::<f64>();
}

// ---------------------------------------------------------------- graphs

fn input(g: &mut Graph, name: &str, shape: &[usize]) -> NodeId {
    let op = Op::Input(InputAttrs {
        dtype: DType::F32,
        shape: Shape::new(shape),
    });
    g.add(name, op, &[]).unwrap()
}

fn param(g: &mut Graph, name: &str, shape: &[usize]) -> NodeId {
    let op = Op::Parameter(ParameterAttrs {
        dtype: DType::F32,
        shape: Shape::new(shape),
        init: Init::Normal {
            mean: 0.0,
            std: 0.5,
        },
    });
    g.add(name, op, &[]).unwrap()
}

/// One graph holding each fused node next to its unfused chain, all reading
/// the same inputs; returns the graph and the (fused, unfused) node pairs
/// whose results must agree.
fn paired_graph() -> (Graph, Vec<(NodeId, NodeId)>) {
    let mut g = Graph::new("fused-vs-unfused", 2);
    let x = input(&mut g, "x", &[2, 4, 7, 6]);
    let w = param(&mut g, "conv.weight", &[6, 2, 3, 3]);
    let b = param(&mut g, "conv.bias", &[6]);
    let dconv = input(&mut g, "dconv", &[2, 6, 4, 3]);
    let dpool = input(&mut g, "dpool", &[2, 4, 4, 3]);
    let f = input(&mut g, "f", &[2, 7]);
    let fw = param(&mut g, "fc.weight", &[5, 7]);
    let fb = param(&mut g, "fc.bias", &[5]);
    let dfc = input(&mut g, "dfc", &[2, 5]);
    let mask_op = Op::DropoutMask(DropoutMaskAttrs {
        p: 0.5,
        shape: Shape::new([2, 5]),
        key: "drop".into(),
    });
    let mask = g.add("drop.mask", mask_op, &[]).unwrap();
    let mut add = |name: &str, op: Op, operands: &[NodeId]| {
        let operands: Vec<ValueId> = operands.iter().map(|&n| n.into()).collect();
        g.add(name, op, &operands).unwrap()
    };

    // Forward.
    let conv_relu = add("conv+relu", Op::ConvRelu(conv_attrs()), &[x, w, b]);
    let conv = add("conv", Op::Conv2d(conv_attrs()), &[x, w, b]);
    let relu = add("relu", Op::Relu, &[conv]);

    let lp = lrn_pool_attrs(4);
    let lrn_pool = add("lrn+pool", Op::LrnMaxPool(lp.clone()), &[x]);
    let lrn = add("lrn", Op::Lrn(lp.lrn.clone()), &[x]);
    let pool = add("pool", Op::MaxPool2d(lp.pool.clone()), &[lrn]);

    let lr_attrs = LinearReluAttrs {
        linear: linear_attrs(),
        dropout: true,
    };
    let fc_fused = add("fc+relu+drop", Op::LinearRelu(lr_attrs), &[f, fw, fb, mask]);
    let fc = add("fc", Op::Linear(linear_attrs()), &[f, fw, fb]);
    let fc_relu = add("fc.relu", Op::Relu, &[fc]);
    let fc_drop = add("fc.drop", Op::Mul, &[fc_relu, mask]);

    // Backward.
    let cb = Conv2dBackwardAttrs {
        conv: conv_attrs(),
        input_grad: true,
    };
    let conv_bwd_fused = add(
        "conv+relu.backward",
        Op::ConvReluBackward(cb.clone()),
        &[x, w, conv_relu, dconv],
    );
    let relu_bwd = add("relu.backward", Op::ReluBackward, &[relu, dconv]);
    let conv_bwd = add("conv.backward", Op::Conv2dBackward(cb), &[x, w, relu_bwd]);

    let lb = |relu, dropout| LinearBackwardAttrs {
        linear: linear_attrs(),
        input_grad: true,
        relu,
        dropout,
    };
    let fc_bwd_fused = add(
        "fc+relu+drop.backward",
        Op::LinearBackward(lb(true, true)),
        &[f, fw, fc_fused, mask, dfc],
    );
    let drop_bwd = add("fc.drop.backward", Op::Mul, &[dfc, mask]);
    let fc_relu_bwd = add("fc.relu.backward", Op::ReluBackward, &[fc_relu, drop_bwd]);
    let fc_bwd = add(
        "fc.backward",
        Op::LinearBackward(lb(false, false)),
        &[f, fw, fc_relu_bwd],
    );

    let lp_bwd_fused = add(
        "lrn+pool.backward",
        Op::LrnMaxPoolBackward(lp.clone()),
        &[x, dpool],
    );
    let pool_bwd = add(
        "pool.backward",
        Op::MaxPool2dBackward(lp.pool),
        &[lrn, dpool],
    );
    let lrn_bwd = add("lrn.backward", Op::LrnBackward(lp.lrn), &[x, pool_bwd]);

    g.set_outputs(vec![conv_relu.into()]).unwrap();
    let pairs = vec![
        (conv_relu, relu),
        (lrn_pool, pool),
        (fc_fused, fc_drop),
        (conv_bwd_fused, conv_bwd),
        (fc_bwd_fused, fc_bwd),
        (lp_bwd_fused, lrn_bwd),
    ];
    (g, pairs)
}

fn graph_pairs_agree<T: Real>() {
    let (g, pairs) = paired_graph();
    let weights: BTreeMap<String, Tensor<T>> = init_parameters(&g, 5, std::path::Path::new("."))
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.map(|&x| T::of(f64::from(x)))))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let inputs: HashMap<String, Value<T>> = [
        ("x", vec![2, 4, 7, 6]),
        ("dconv", vec![2, 6, 4, 3]),
        ("dpool", vec![2, 4, 4, 3]),
        ("f", vec![2, 7]),
        ("dfc", vec![2, 5]),
    ]
    .into_iter()
    .map(|(name, shape)| {
        (
            name.to_string(),
            Value::Float(random::<T>(&shape, &mut rng)),
        )
    })
    .collect();
    // Training mode: the mask node draws dropout layer `drop`'s mask.
    let values = run_all(&g, &weights, &inputs, Mode::Train { seed: 9 }).unwrap();
    for (fused, unfused) in pairs {
        let results = g[fused].outputs.len();
        assert_eq!(results, g[unfused].outputs.len());
        for i in 0..results as u16 {
            assert_eq!(
                values[&ValueId::new(fused, i)],
                values[&ValueId::new(unfused, i)],
                "{} result {i} vs {}",
                g[fused].name,
                g[unfused].name
            );
        }
    }
    // The mask really dropped something, so the dropout paths were tested.
    let mask = &values[&g.find("drop.mask").unwrap().into()];
    assert!(mask.as_float().unwrap().data().contains(&T::zero()));
}

#[test]
fn fused_nodes_equal_their_unfused_chains_in_the_executor() {
    graph_pairs_agree::<f32>();
    graph_pairs_agree::<f64>();
}
