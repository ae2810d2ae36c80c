//! `fuse-linear-relu`: snapshots of the IR before and after the pass and of
//! the fusion report, on small hand-built graphs (fusable, rejected, without
//! bias, training graphs with dropout masks and the backward twins) and on
//! AlexNet with and without its dropout layers; every fused graph is
//! verified and, on the reference interpreter, computes the same outputs as
//! the unfused one. The last test runs all three fusion passes on AlexNet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use alexc_interp::{Mode, Value};
use alexc_ir::{
    DType, DropoutMaskAttrs, Graph, Init, InputAttrs, LinearAttrs, LinearBackwardAttrs, Op,
    ParameterAttrs, Shape, ValueId,
};
use alexc_passes::fuse_conv_relu::FuseConvRelu;
use alexc_passes::fuse_linear_relu::FuseLinearRelu;
use alexc_passes::fuse_lrn_pool::FuseLrnPool;
use alexc_passes::{Pass, PassContext, PassManager, PipelineOptions};
use alexc_tensor::Tensor;

// ------------------------------------------------------------------ harness

/// Runs `passes` through the pass manager with the verifier on, then
/// verifies once more; returns the rewritten graph and the context.
fn run_passes(graph: &Graph, passes: Vec<Box<dyn Pass>>) -> (Graph, PassContext) {
    let mut fused = graph.clone();
    let options = PipelineOptions {
        verify_each: true,
        ..PipelineOptions::default()
    };
    let ctx = PassManager::new(passes, options)
        .run(&mut fused)
        .expect("the pass runs");
    alexc_ir::verify(&fused).expect("the fused graph verifies");
    (fused, ctx)
}

/// Before, after, and the report, as one snapshot.
fn snapshot_text(before: &Graph, after: &Graph, ctx: &PassContext) -> String {
    format!(
        "--- before ---\n{}\n--- after fuse-linear-relu ---\n{}\n--- fusion report ---\n{}",
        alexc_ir::print::to_text(before),
        alexc_ir::print::to_text(after),
        ctx.fusion.to_text()
    )
}

/// Runs the pass on `graph`, snapshots it as `name`, checks the fused graph
/// against the original on the interpreter in `mode`, and returns the
/// fused graph and the context.
fn fuse(name: &str, graph: &Graph, mode: Mode) -> (Graph, PassContext) {
    let (fused, ctx) = run_passes(graph, vec![Box::new(FuseLinearRelu)]);
    insta::assert_snapshot!(name, snapshot_text(graph, &fused, &ctx));
    assert_same_outputs(graph, &fused, mode);
    (fused, ctx)
}

/// A small deterministic generator (SplitMix64) for test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Random values for every input: floats in [-1, 1), labels in {0, 1}.
fn random_inputs(graph: &Graph) -> HashMap<String, Value<f32>> {
    let mut rng = Rng(42);
    let mut inputs = HashMap::new();
    for id in graph.nodes_where(|op| matches!(op, Op::Input(_))) {
        let Op::Input(a) = &graph[id].op else {
            continue;
        };
        let dims = a.shape.dims().to_vec();
        let value = match a.dtype {
            DType::I64 => {
                Value::Int(Tensor::from_flat_fn(dims, |i| (i % 2) as i64).expect("labels"))
            }
            _ => Value::Float(Tensor::from_flat_fn(dims, |_| rng.uniform()).expect("input")),
        };
        inputs.insert(graph[id].name.clone(), value);
    }
    inputs
}

/// Runs both graphs on the same random weights and inputs and checks that
/// every output agrees to 1e-5 relative to the output's largest magnitude.
fn assert_same_outputs(unfused: &Graph, fused: &Graph, mode: Mode) {
    let weights = alexc_tensor::init_parameters(unfused, 7, Path::new(".")).expect("weights");
    let inputs = random_inputs(unfused);
    let want = alexc_interp::run(unfused, &weights, &inputs, mode).expect("unfused runs");
    let got = alexc_interp::run(fused, &weights, &inputs, mode).expect("fused runs");
    assert_eq!(want.len(), got.len());
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        let (w, g) = (w.as_float().expect("float"), g.as_float().expect("float"));
        assert_eq!(w.shape(), g.shape(), "output {i}");
        let scale = w
            .data()
            .iter()
            .fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
        let worst = w
            .data()
            .iter()
            .zip(g.data())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-5 * scale,
            "output {i}: fused and unfused differ by {worst:e} (scale {scale:e})"
        );
    }
}

fn model_path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(file)
}

// ------------------------------------------------------------------ builders

fn input(g: &mut Graph, name: &str, dims: &[usize]) -> ValueId {
    let op = Op::Input(InputAttrs {
        dtype: DType::F32,
        shape: Shape::new(dims.to_vec()),
    });
    g.add(name, op, &[]).expect("input").into()
}

fn labels(g: &mut Graph, n: usize) -> ValueId {
    let op = Op::Input(InputAttrs {
        dtype: DType::I64,
        shape: Shape::new(vec![n]),
    });
    g.add("labels", op, &[]).expect("labels").into()
}

fn param(g: &mut Graph, name: &str, dims: &[usize]) -> ValueId {
    let op = Op::Parameter(ParameterAttrs {
        dtype: DType::F32,
        shape: Shape::new(dims.to_vec()),
        init: Init::Normal {
            mean: 0.0,
            std: 0.3,
        },
    });
    g.add(name, op, &[]).expect("parameter").into()
}

fn node(g: &mut Graph, name: &str, op: Op, operands: &[ValueId]) -> ValueId {
    g.add(name, op, operands).expect("node").into()
}

fn relu(g: &mut Graph, name: &str, x: ValueId) -> ValueId {
    node(g, name, Op::Relu, &[x])
}

fn out(g: &mut Graph, values: &[ValueId]) {
    g.set_outputs(values.to_vec()).expect("outputs");
}

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
