//! Graphs shared by the pass tests.
#![allow(dead_code)]

pub mod fusion;

use std::path::Path;

use alexc_ir::{
    AlphaConvention, Conv2dAttrs, DType, DropoutAttrs, Graph, Init, InputAttrs, LinearAttrs,
    LrnAttrs, Op, ParameterAttrs, Pool2dAttrs, Shape,
};
use alexc_passes::{PassContext, PipelineMode};

pub fn training_ctx() -> PassContext {
    PassContext {
        mode: Some(PipelineMode::Training),
        ..PassContext::default()
    }
}

pub fn alexnet(batch: usize) -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/alexnet.ron");
    alexc_frontend::load(&path, batch)
        .expect("alexnet.ron")
        .graph
}

pub fn model(name: &str, batch: usize) -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(name);
    alexc_frontend::load(&path, batch).expect("model").graph
}

fn param(g: &mut Graph, name: &str, dims: &[usize]) -> alexc_ir::ValueId {
    g.add(
        name,
        Op::Parameter(ParameterAttrs {
            dtype: DType::F32,
            shape: Shape::new(dims.to_vec()),
            init: Init::Normal {
                mean: 0.0,
                std: 0.1,
            },
        }),
        &[],
    )
    .expect("param")
    .into()
}

/// image [2,3,9,9] → conv(4, k3, s2, p1) → relu → lrn → max-pool 3/2 →
/// flatten → dropout → linear(3) → relu → linear(5): every op kind of
/// AlexNet, small enough to differentiate numerically.
pub fn small_net() -> Graph {
    let mut g = Graph::new("small", 2);
    let x = g
        .add(
            "image",
            Op::Input(InputAttrs {
                dtype: DType::F32,
                shape: Shape::new(vec![2, 3, 9, 9]),
            }),
            &[],
        )
        .expect("input");
    let w = param(&mut g, "conv1.weight", &[4, 3, 3, 3]);
    let b = param(&mut g, "conv1.bias", &[4]);
    let conv = g
        .add(
            "conv1",
            Op::Conv2d(Conv2dAttrs {
                out_channels: 4,
                kernel: [3, 3],
                stride: [2, 2],
                padding: [1, 1],
                dilation: [1, 1],
                groups: 1,
                bias: true,
            }),
            &[x.into(), w, b],
        )
        .expect("conv");
    let relu = g.add("relu1", Op::Relu, &[conv.into()]).expect("relu");
    let lrn = g
        .add(
            "norm1",
            Op::Lrn(LrnAttrs {
                size: 3,
                alpha: 0.1,
                beta: 0.75,
                k: 2.0,
                alpha_convention: AlphaConvention::DividedBySize,
            }),
            &[relu.into()],
        )
        .expect("lrn");
    let pool = g
        .add(
            "pool1",
            Op::MaxPool2d(Pool2dAttrs {
                kernel: [3, 3],
                stride: [2, 2],
                padding: [0, 0],
            }),
            &[lrn.into()],
        )
        .expect("pool");
    let flat = g
        .add("flatten", Op::Flatten, &[pool.into()])
        .expect("flatten");
    let drop = g
        .add("drop", Op::Dropout(DropoutAttrs { p: 0.5 }), &[flat.into()])
        .expect("dropout");
    let w2 = param(&mut g, "fc1.weight", &[3, 16]);
    let b2 = param(&mut g, "fc1.bias", &[3]);
    let fc1 = g
        .add(
            "fc1",
            Op::Linear(LinearAttrs {
                out_features: 3,
                bias: true,
            }),
            &[drop.into(), w2, b2],
        )
        .expect("fc1");
    let relu2 = g.add("relu2", Op::Relu, &[fc1.into()]).expect("relu2");
    let w3 = param(&mut g, "fc2.weight", &[5, 3]);
    let b3 = param(&mut g, "fc2.bias", &[5]);
    let fc2 = g
        .add(
            "fc2",
            Op::Linear(LinearAttrs {
                out_features: 5,
                bias: true,
            }),
            &[relu2.into(), w3, b3],
        )
        .expect("fc2");
    g.set_outputs(vec![fc2.into()]).expect("outputs");
    g
}
