//! `fuse-linear-relu`: snapshots of the IR before and after the pass and of
//! the fusion report, on small hand-built graphs (fusable, rejected, without
//! bias, training graphs with dropout masks and the backward twins) and on
//! AlexNet with and without its dropout layers; every fused graph is
//! verified and, on the reference interpreter, computes the same outputs as
//! the unfused one. The last test runs all three fusion passes on AlexNet.

use alexc_interp::Mode;
use alexc_ir::{DropoutMaskAttrs, Graph, LinearAttrs, LinearBackwardAttrs, Op, Shape, ValueId};
use alexc_passes::fuse_conv_relu::FuseConvRelu;
use alexc_passes::fuse_linear_relu::FuseLinearRelu;
use alexc_passes::fuse_lrn_pool::FuseLrnPool;
use alexc_passes::{Pass, PassContext};

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
    let (fused, ctx) = run_passes(graph, vec![Box::new(FuseLinearRelu)]);
    insta::assert_snapshot!(name, snapshot_text("fuse-linear-relu", graph, &fused, &ctx));
    assert_same_outputs(graph, &fused, mode);
    (fused, ctx)
}

// ------------------------------------------------------------------ builders

fn linear_attrs(out: usize, bias: bool) -> LinearAttrs {
    LinearAttrs {
        out_features: out,
        bias,
    }
}

/// A linear layer with its weight (and bias) parameters.
fn linear(g: &mut Graph, name: &str, x: ValueId, attrs: &LinearAttrs) -> ValueId {
    let features = g.value_type(x).expect("x").shape.dims()[1];
    let mut operands = vec![
        x,
        param(
            g,
            &format!("{name}.weight"),
            &[attrs.out_features, features],
        ),
    ];
    if attrs.bias {
        operands.push(param(g, &format!("{name}.bias"), &[attrs.out_features]));
    }
    node(g, name, Op::Linear(attrs.clone()), &operands)
}

/// Deletes every dropout layer, as eliminate-dropout does for inference.
fn remove_dropout(g: &mut Graph) {
    for id in g.nodes_where(|op| matches!(op, Op::Dropout(_))) {
        let x = g.operands(id)[0];
        g.replace_uses(ValueId::from(id), x).expect("reroute");
        g.remove(id).expect("remove");
    }
    alexc_ir::verify(g).expect("verifies without dropout");
}

fn alexnet() -> Graph {
    alexc_frontend::load(&model_path("alexnet.ron"), 1)
        .expect("alexnet loads")
        .graph
}

fn fused_names(ctx: &PassContext) -> Vec<&str> {
    ctx.fusion.groups.iter().map(|g| g.fused.as_str()).collect()
}

// ------------------------------------------------------------------ inference graphs

/// x → fc1 → relu1 → fc2, with fc1 as given.
fn two_layers(name: &str, fc1: &LinearAttrs) -> (Graph, [ValueId; 3]) {
    let mut g = Graph::new(name, 4);
    let x = input(&mut g, "x", &[4, 16]);
    let a = linear(&mut g, "fc1", x, fc1);
    let r = relu(&mut g, "relu1", a);
    let y = linear(&mut g, "fc2", r, &linear_attrs(10, true));
    (g, [a, r, y])
}

#[test]
fn fuses_linear_and_relu() {
    let (mut g, [_, _, y]) = two_layers("linear-relu", &linear_attrs(32, true));
    out(&mut g, &[y]);
    let (fused, ctx) = fuse("linear_relu", &g, Mode::Eval);
    assert_eq!(fused_names(&ctx), ["fc1+relu1"]);
    assert!(ctx.fusion.rejected.is_empty());
    let id = fused.find("fc1+relu1").expect("fused");
    assert!(matches!(&fused[id].op, Op::LinearRelu(a) if !a.dropout));
}

#[test]
fn rejects_a_second_consumer() {
    let (mut g, [a, _, y]) = two_layers("second-consumer", &linear_attrs(32, true));
    let probe = node(&mut g, "probe", Op::Relu, &[a]);
    out(&mut g, &[y, probe]);
    let (_, ctx) = fuse("second_consumer", &g, Mode::Eval);
    assert!(ctx.fusion.groups.is_empty());
    // Both ReLUs are candidates, each rejected because of the other.
    let reasons: Vec<&str> = ctx
        .fusion
        .rejected
        .iter()
        .map(|r| r.reason.as_str())
        .collect();
    assert_eq!(
        reasons,
        [
            "fc1 has a second consumer (probe)",
            "fc1 has a second consumer (relu1)"
        ]
    );
}

#[test]
fn rejects_an_intermediate_graph_output() {
    let (mut g, [a, _, y]) = two_layers("intermediate-output", &linear_attrs(32, true));
    out(&mut g, &[y, a]);
    let (_, ctx) = fuse("intermediate_output", &g, Mode::Eval);
    assert!(ctx.fusion.groups.is_empty());
    assert_eq!(ctx.fusion.rejected[0].reason, "fc1 is a graph output");
}

#[test]
fn fuses_a_linear_without_bias() {
    let (mut g, [_, r, y]) = two_layers("no-bias", &linear_attrs(32, false));
    // The ReLU's result may be a graph output: the fused node takes it over.
    out(&mut g, &[y, r]);
    let (fused, ctx) = fuse("no_bias", &g, Mode::Eval);
    assert_eq!(fused_names(&ctx), ["fc1+relu1"]);
    let id = fused.find("fc1+relu1").expect("fused");
    assert_eq!(fused.operands(id).len(), 2);
    assert_eq!(fused.outputs()[1], ValueId::from(id));
}

/// AlexNet after eliminate-dropout: fc6 + relu6 and fc7 + relu7 fuse.
#[test]
fn alexnet_without_dropout() {
    let mut g = alexnet();
    remove_dropout(&mut g);
    let (_, ctx) = fuse("alexnet_without_dropout", &g, Mode::Eval);
    assert_eq!(fused_names(&ctx), ["fc6+relu6", "fc7+relu7"]);
    assert!(ctx.fusion.rejected.is_empty());
}

/// AlexNet with its dropout layers still in place (`drop7` between relu6
/// and fc7). A dropout *op* is not absorbed (its meaning depends on the
/// mode); fc6 + relu6 still fuse, drop7 reads the fused output, and the
/// report says why drop7 stayed.
#[test]
fn alexnet_with_dropout() {
    let g = alexnet();
    let (fused, ctx) = fuse("alexnet_with_dropout", &g, Mode::Eval);
    assert_eq!(fused_names(&ctx), ["fc6+relu6", "fc7+relu7"]);
    assert_eq!(ctx.fusion.rejected.len(), 1);
    assert_eq!(ctx.fusion.rejected[0].nodes, ["fc6", "relu6", "drop7"]);
    let drop7 = fused.find("drop7").expect("drop7 stays");
    assert_eq!(
        fused.operands(drop7)[0],
        ValueId::from(fused.find("fc6+relu6").expect("fused"))
    );
}

/// The three fusion passes on AlexNet without dropout: 5 conv + ReLU,
/// 2 LRN + max-pool and 2 linear + ReLU groups.
#[test]
fn alexnet_all_three_passes() {
    let mut g = alexnet();
    remove_dropout(&mut g);
    let passes: Vec<Box<dyn Pass>> = vec![
        Box::new(FuseConvRelu),
        Box::new(FuseLrnPool),
        Box::new(FuseLinearRelu),
    ];
    let (fused, ctx) = run_passes(&g, passes);
    let count = |pass: &str| ctx.fusion.groups_of(pass).count();
    assert_eq!(count("fuse-conv-relu"), 5);
    assert_eq!(count("fuse-lrn-pool"), 2);
    assert_eq!(count("fuse-linear-relu"), 2);
    assert!(ctx.fusion.rejected.is_empty());
    insta::assert_snapshot!(
        "alexnet_all_three",
        format!(
            "{}\n--- fusion report ---\n{}",
            alexc_ir::print::to_text(&fused),
            ctx.fusion.to_text()
        )
    );
    assert_same_outputs(&g, &fused, Mode::Eval);
}

// ------------------------------------------------------------------ training graphs

/// How to break the training graph so that the dropout cannot be absorbed.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Plain,
    /// relu1's result is also a graph output.
    ReluOutput,
    /// The dropout's backward multiply is also a graph output.
    DropoutGradOutput,
}

/// A training graph shaped like autodiff's output: fc1 → relu1 → drop1 (a
/// multiply by the mask `drop1.mask`) → fc2 → relu2 → fc3 → loss, and the
/// backward of all of it.
fn training_graph(variant: Variant) -> Graph {
    let mut g = Graph::new("linear-training", 4);
    let x = input(&mut g, "x", &[4, 8]);
    let y = labels(&mut g, 4);
    let (l1, l2, l3) = (
        linear_attrs(16, true),
        linear_attrs(12, false),
        linear_attrs(3, true),
    );
    let a1 = linear(&mut g, "fc1", x, &l1);
    let r1 = relu(&mut g, "relu1", a1);
    let mask_op = Op::DropoutMask(DropoutMaskAttrs {
        p: 0.5,
        shape: Shape::new(vec![4, 16]),
        key: "drop1".into(),
    });
    let mask = node(&mut g, "drop1.mask", mask_op, &[]);
    let d1 = node(&mut g, "drop1", Op::Mul, &[r1, mask]);
    let a2 = linear(&mut g, "fc2", d1, &l2);
    let r2 = relu(&mut g, "relu2", a2);
    let logits = linear(&mut g, "fc3", r2, &l3);
    let loss = node(&mut g, "loss", Op::SoftmaxCrossEntropy, &[logits, y]);

    let backward = |linear: &LinearAttrs, input_grad: bool| {
        Op::LinearBackward(LinearBackwardAttrs {
            linear: linear.clone(),
            input_grad,
            relu: false,
            dropout: false,
        })
    };
    let w = |g: &Graph, v: ValueId| g.operands(v.node)[1];
    let dlogits = node(
        &mut g,
        "loss.backward",
        Op::SoftmaxCrossEntropyBackward,
        &[logits, y],
    );
    let w3 = w(&g, logits);
    let fc3b = g
        .add("fc3.backward", backward(&l3, true), &[r2, w3, dlogits])
        .expect("fc3.backward");
    let da2 = node(
        &mut g,
        "relu2.backward",
        Op::ReluBackward,
        &[r2, ValueId::new(fc3b, 0)],
    );
    let w2 = w(&g, a2);
    let fc2b = g
        .add("fc2.backward", backward(&l2, true), &[d1, w2, da2])
        .expect("fc2.backward");
    let dr1 = node(
        &mut g,
        "drop1.backward",
        Op::Mul,
        &[ValueId::new(fc2b, 0), mask],
    );
    let da1 = node(&mut g, "relu1.backward", Op::ReluBackward, &[r1, dr1]);
    let w1 = w(&g, a1);
    let fc1b = g
        .add("fc1.backward", backward(&l1, false), &[x, w1, da1])
        .expect("fc1.backward");

    let mut outputs = vec![
        loss,
        logits,
        ValueId::new(fc1b, 0),
        ValueId::new(fc1b, 1),
        ValueId::new(fc2b, 1),
        ValueId::new(fc3b, 1),
        ValueId::new(fc3b, 2),
    ];
    match variant {
        Variant::Plain => {}
        Variant::ReluOutput => outputs.push(r1),
        Variant::DropoutGradOutput => outputs.push(dr1),
    }
    out(&mut g, &outputs);
    g
}

/// relu1 → drop1 is absorbed with its backward; fc2 + relu2 fuse without
/// dropout; fc3 has no ReLU and is not a candidate.
#[test]
fn fuses_dropout_and_the_backward_twins() {
    let g = training_graph(Variant::Plain);
    let (fused, ctx) = fuse("training", &g, Mode::Train { seed: 5 });
    let groups: Vec<(Vec<&str>, &str)> = ctx
        .fusion
        .groups
        .iter()
        .map(|g| {
            (
                g.nodes.iter().map(String::as_str).collect(),
                g.fused.as_str(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            (vec!["fc1", "relu1", "drop1"], "fc1+relu1+drop1"),
            (
                vec!["drop1.backward", "relu1.backward", "fc1.backward"],
                "fc1+relu1+drop1.backward"
            ),
            (vec!["fc2", "relu2"], "fc2+relu2"),
            (vec!["relu2.backward", "fc2.backward"], "fc2+relu2.backward"),
        ]
    );
    assert!(ctx.fusion.rejected.is_empty());
    assert!(fused
        .nodes_where(|op| matches!(op, Op::Mul | Op::Relu | Op::ReluBackward))
        .is_empty());
    let bwd = fused
        .find("fc1+relu1+drop1.backward")
        .expect("fused backward");
    assert!(
        matches!(&fused[bwd].op, Op::LinearBackward(a) if a.relu && a.dropout && !a.input_grad)
    );
}

#[test]
fn keeps_dropout_when_relu_is_a_graph_output() {
    let g = training_graph(Variant::ReluOutput);
    let (fused, ctx) = fuse("training_relu_output", &g, Mode::Train { seed: 5 });
    assert_eq!(
        fused_names(&ctx),
        [
            "fc1+relu1",
            "fc1+relu1.backward",
            "fc2+relu2",
            "fc2+relu2.backward"
        ]
    );
    assert_eq!(ctx.fusion.rejected.len(), 1);
    assert_eq!(ctx.fusion.rejected[0].nodes, ["fc1", "relu1", "drop1"]);
    assert_eq!(ctx.fusion.rejected[0].reason, "relu1 is a graph output");
    assert!(fused.find("drop1").is_some() && fused.find("drop1.backward").is_some());
}

#[test]
fn keeps_dropout_when_its_gradient_is_read_elsewhere() {
    let g = training_graph(Variant::DropoutGradOutput);
    let (_, ctx) = fuse("training_dropout_grad_output", &g, Mode::Train { seed: 5 });
    assert_eq!(
        fused_names(&ctx),
        [
            "fc1+relu1",
            "fc1+relu1.backward",
            "fc2+relu2",
            "fc2+relu2.backward"
        ]
    );
    assert_eq!(ctx.fusion.rejected.len(), 1);
    assert_eq!(
        ctx.fusion.rejected[0].reason,
        "drop1.backward is a graph output"
    );
}
