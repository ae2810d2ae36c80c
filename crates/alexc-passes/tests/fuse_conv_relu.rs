//! `fuse-conv-relu`: snapshots of the IR before and after the pass and of the
//! fusion report, on small hand-built graphs (fusable, rejected, without
//! bias, training graphs with the backward twins) and on AlexNet; every
//! fused graph is verified and, on the reference interpreter, computes the
//! same outputs as the unfused one.

use alexc_interp::Mode;
use alexc_ir::{
    Conv2dAttrs, Conv2dBackwardAttrs, Graph, LinearAttrs, LinearBackwardAttrs, Op, Pool2dAttrs,
    ReshapeAttrs, Shape, ValueId,
};
use alexc_passes::fuse_conv_relu::FuseConvRelu;
use alexc_passes::PassContext;

// ------------------------------------------------------------------ harness

mod common;

use common::fusion::{
    assert_same_outputs, input, labels, model_path, node, out, param, relu, run_passes,
    snapshot_text,
};

/// Runs the pass on `graph`, snapshots it as `name`, checks the fused graph
/// against the original on the interpreter in `mode`, and returns the
/// fused graph and the context.
fn fuse(name: &str, graph: &Graph, mode: Mode) -> (Graph, PassContext) {
    let (fused, ctx) = run_passes(graph, vec![Box::new(FuseConvRelu)]);
    insta::assert_snapshot!(name, snapshot_text("fuse-conv-relu", graph, &fused, &ctx));
    assert_same_outputs(graph, &fused, mode);
    (fused, ctx)
}

// ------------------------------------------------------------------ builders

fn conv_attrs(out: usize, k: usize, pad: usize, bias: bool) -> Conv2dAttrs {
    Conv2dAttrs {
        out_channels: out,
        kernel: [k, k],
        stride: [1, 1],
        padding: [pad, pad],
        dilation: [1, 1],
        groups: 1,
        bias,
    }
}

/// A convolution with its weight (and bias) parameters.
fn conv(g: &mut Graph, name: &str, x: ValueId, attrs: &Conv2dAttrs) -> ValueId {
    let c = g.value_type(x).expect("x").shape.dims()[1];
    let [kh, kw] = attrs.kernel;
    let mut operands = vec![
        x,
        param(
            g,
            &format!("{name}.weight"),
            &[attrs.out_channels, c, kh, kw],
        ),
    ];
    if attrs.bias {
        operands.push(param(g, &format!("{name}.bias"), &[attrs.out_channels]));
    }
    node(g, name, Op::Conv2d(attrs.clone()), &operands)
}

// ------------------------------------------------------------------ inference graphs

#[test]
fn fuses_two_layers() {
    let mut g = Graph::new("two-layers", 2);
    let x = input(&mut g, "image", &[2, 3, 8, 8]);
    let c1 = conv(&mut g, "conv1", x, &conv_attrs(4, 3, 1, true));
    let r1 = relu(&mut g, "relu1", c1);
    let c2 = conv(&mut g, "conv2", r1, &conv_attrs(6, 3, 0, true));
    let r2 = relu(&mut g, "relu2", c2);
    // relu1 is also an output: the fused node takes it over.
    out(&mut g, &[r2, r1]);
    let (fused, ctx) = fuse("two_layers", &g, Mode::Eval);
    assert_eq!(ctx.fusion.groups.len(), 2);
    assert!(ctx.fusion.rejected.is_empty());
    assert_eq!(
        fused.nodes_where(|op| matches!(op, Op::ConvRelu(_))).len(),
        2
    );
    assert!(fused.find("conv1+relu1").is_some() && fused.find("relu1").is_none());
    // A second run finds nothing left to fuse.
    let (again, ctx) = run_passes(&fused, vec![Box::new(FuseConvRelu)]);
    assert!(!ctx.timings[0].changed && ctx.fusion.groups.is_empty());
    assert_eq!(
        alexc_ir::print::to_text(&again),
        alexc_ir::print::to_text(&fused)
    );
}

#[test]
fn rejects_a_second_consumer() {
    let mut g = Graph::new("second-consumer", 2);
    let x = input(&mut g, "image", &[2, 3, 8, 8]);
    let c1 = conv(&mut g, "conv1", x, &conv_attrs(4, 3, 1, true));
    let r1 = relu(&mut g, "relu1", c1);
    let pool = Op::MaxPool2d(Pool2dAttrs {
        kernel: [2, 2],
        stride: [2, 2],
        padding: [0, 0],
    });
    let p = node(&mut g, "pool9", pool, &[c1]);
    out(&mut g, &[r1, p]);
    let (fused, ctx) = fuse("second_consumer", &g, Mode::Eval);
    assert!(ctx.fusion.groups.is_empty());
    assert_eq!(
        ctx.fusion.rejected[0].reason,
        "conv1 has a second consumer (pool9)"
    );
    assert_eq!(
        alexc_ir::print::to_text(&fused),
        alexc_ir::print::to_text(&g)
    );
    assert!(!ctx.timings[0].changed);
}

#[test]
fn rejects_an_intermediate_graph_output() {
    let mut g = Graph::new("intermediate-output", 2);
    let x = input(&mut g, "image", &[2, 3, 8, 8]);
    let c1 = conv(&mut g, "conv1", x, &conv_attrs(4, 3, 1, true));
    let r1 = relu(&mut g, "relu1", c1);
    out(&mut g, &[r1, c1]);
    let (_, ctx) = fuse("intermediate_output", &g, Mode::Eval);
    assert!(ctx.fusion.groups.is_empty());
    assert_eq!(ctx.fusion.rejected[0].reason, "conv1 is a graph output");
}

#[test]
fn fuses_a_conv_without_bias() {
    let mut g = Graph::new("no-bias", 2);
    let x = input(&mut g, "image", &[2, 3, 8, 8]);
    let mut attrs = conv_attrs(4, 3, 1, false);
    attrs.stride = [2, 2];
    let c1 = conv(&mut g, "conv1", x, &attrs);
    let r1 = relu(&mut g, "relu1", c1);
    out(&mut g, &[r1]);
    let (fused, ctx) = fuse("no_bias", &g, Mode::Eval);
    assert_eq!(ctx.fusion.groups.len(), 1);
    let id = fused.find("conv1+relu1").expect("fused node");
    assert_eq!(fused.operands(id).len(), 2);
}

#[test]
fn alexnet() {
    let model = alexc_frontend::load(&model_path("alexnet.ron"), 1).expect("alexnet loads");
    let (_, ctx) = fuse("alexnet", &model.graph, Mode::Eval);
    let fused: Vec<&str> = ctx.fusion.groups.iter().map(|g| g.fused.as_str()).collect();
    assert_eq!(
        fused,
        [
            "conv1+relu1",
            "conv2+relu2",
            "conv3+relu3",
            "conv4+relu4",
            "conv5+relu5"
        ]
    );
    assert!(ctx.fusion.rejected.is_empty());
}

// ------------------------------------------------------------------ training graphs

/// A training graph shaped like autodiff's output: two conv + ReLU layers,
/// a classifier and the loss, and the backward of all of it. With
/// `grad_output`, relu2's gradient (`relu2.backward`) is also a graph
/// output, so its twin cannot fuse.
fn training_graph(grad_output: bool) -> Graph {
    let mut g = Graph::new("conv-training", 2);
    let x = input(&mut g, "image", &[2, 3, 6, 6]);
    let y = labels(&mut g, 2);
    let a1 = conv_attrs(4, 3, 1, true);
    let c1 = conv(&mut g, "conv1", x, &a1);
    let r1 = relu(&mut g, "relu1", c1);
    let a2 = conv_attrs(4, 3, 1, false);
    let c2 = conv(&mut g, "conv2", r1, &a2);
    let r2 = relu(&mut g, "relu2", c2);
    let flat = node(&mut g, "flatten", Op::Flatten, &[r2]);
    let fc_attrs = LinearAttrs {
        out_features: 3,
        bias: true,
    };
    let fw = param(&mut g, "fc.weight", &[3, 144]);
    let fb = param(&mut g, "fc.bias", &[3]);
    let logits = node(&mut g, "fc", Op::Linear(fc_attrs.clone()), &[flat, fw, fb]);
    let loss = node(&mut g, "loss", Op::SoftmaxCrossEntropy, &[logits, y]);

    let dlogits = node(
        &mut g,
        "loss.backward",
        Op::SoftmaxCrossEntropyBackward,
        &[logits, y],
    );
    let fc_bwd = LinearBackwardAttrs {
        linear: fc_attrs,
        input_grad: true,
        relu: false,
        dropout: false,
    };
    let fcb = g
        .add(
            "fc.backward",
            Op::LinearBackward(fc_bwd),
            &[flat, fw, dlogits],
        )
        .expect("fc.backward");
    let reshape = Op::Reshape(ReshapeAttrs {
        shape: Shape::new(vec![2, 4, 6, 6]),
    });
    let dr2 = node(&mut g, "flatten.backward", reshape, &[ValueId::new(fcb, 0)]);
    let dc2 = node(&mut g, "relu2.backward", Op::ReluBackward, &[r2, dr2]);
    let w2 = g.operands(c2.node)[1];
    let cb2_attrs = Conv2dBackwardAttrs {
        conv: a2,
        input_grad: true,
    };
    let cb2 = g
        .add(
            "conv2.backward",
            Op::Conv2dBackward(cb2_attrs),
            &[r1, w2, dc2],
        )
        .expect("conv2.backward");
    let dc1 = node(
        &mut g,
        "relu1.backward",
        Op::ReluBackward,
        &[r1, ValueId::new(cb2, 0)],
    );
    let w1 = g.operands(c1.node)[1];
    let cb1_attrs = Conv2dBackwardAttrs {
        conv: a1,
        input_grad: false,
    };
    let cb1 = g
        .add(
            "conv1.backward",
            Op::Conv2dBackward(cb1_attrs),
            &[x, w1, dc1],
        )
        .expect("conv1.backward");

    let mut outputs = vec![
        loss,
        logits,
        ValueId::new(cb1, 0),
        ValueId::new(cb1, 1),
        ValueId::new(cb2, 1),
        ValueId::new(fcb, 1),
        ValueId::new(fcb, 2),
    ];
    if grad_output {
        outputs.push(dc2);
    }
    out(&mut g, &outputs);
    g
}

#[test]
fn fuses_the_backward_twins() {
    let g = training_graph(false);
    let (fused, ctx) = fuse("training", &g, Mode::Train { seed: 3 });
    let groups: Vec<(&[String], &str)> = ctx
        .fusion
        .groups
        .iter()
        .map(|g| (g.nodes.as_slice(), g.fused.as_str()))
        .collect();
    assert_eq!(
        groups,
        [
            (
                &["conv1".to_string(), "relu1".to_string()][..],
                "conv1+relu1"
            ),
            (
                &["relu1.backward".to_string(), "conv1.backward".to_string()][..],
                "conv1+relu1.backward"
            ),
            (
                &["conv2".to_string(), "relu2".to_string()][..],
                "conv2+relu2"
            ),
            (
                &["relu2.backward".to_string(), "conv2.backward".to_string()][..],
                "conv2+relu2.backward"
            ),
        ]
    );
    assert!(ctx.fusion.rejected.is_empty());
    assert!(fused
        .nodes_where(|op| matches!(op, Op::ReluBackward | Op::Relu | Op::Conv2dBackward(_)))
        .is_empty());
}

#[test]
fn keeps_a_twin_whose_gradient_is_read_elsewhere() {
    let g = training_graph(true);
    let (fused, ctx) = fuse("training_twin_rejected", &g, Mode::Train { seed: 3 });
    let fused_names: Vec<&str> = ctx.fusion.groups.iter().map(|g| g.fused.as_str()).collect();
    assert_eq!(
        fused_names,
        ["conv1+relu1", "conv1+relu1.backward", "conv2+relu2"]
    );
    assert_eq!(ctx.fusion.rejected.len(), 1);
    assert_eq!(
        ctx.fusion.rejected[0].reason,
        "relu2.backward is a graph output"
    );
    // The unfused twin now reads the fused forward output.
    let rb = fused.find("relu2.backward").expect("kept");
    let fwd = fused.find("conv2+relu2").expect("fused");
    assert_eq!(fused.operands(rb)[0], ValueId::from(fwd));
}
