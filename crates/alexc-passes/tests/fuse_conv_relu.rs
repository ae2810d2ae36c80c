//! `fuse-conv-relu`: snapshots of the IR before and after the pass and of the
//! fusion report, on small hand-built graphs (fusable, rejected, without
//! bias, training graphs with the backward twins) and on AlexNet; every
//! fused graph is verified and, on the reference interpreter, computes the
//! same outputs as the unfused one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use alexc_interp::{Mode, Value};
use alexc_ir::{
    Conv2dAttrs, Conv2dBackwardAttrs, DType, Graph, Init, InputAttrs, LinearAttrs,
    LinearBackwardAttrs, Op, ParameterAttrs, Pool2dAttrs, ReshapeAttrs, Shape, ValueId,
};
use alexc_passes::fuse_conv_relu::FuseConvRelu;
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
        "--- before ---\n{}\n--- after fuse-conv-relu ---\n{}\n--- fusion report ---\n{}",
        alexc_ir::print::to_text(before),
        alexc_ir::print::to_text(after),
        ctx.fusion.to_text()
    )
}

/// Runs the pass on `graph`, snapshots it as `name`, checks the fused graph
/// against the original on the interpreter in `mode`, and returns the
/// fused graph and the context.
fn fuse(name: &str, graph: &Graph, mode: Mode) -> (Graph, PassContext) {
    let (fused, ctx) = run_passes(graph, vec![Box::new(FuseConvRelu)]);
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

fn relu(g: &mut Graph, name: &str, x: ValueId) -> ValueId {
    node(g, name, Op::Relu, &[x])
}

fn out(g: &mut Graph, values: &[ValueId]) {
    g.set_outputs(values.to_vec()).expect("outputs");
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
