//! The harness the fusion-pass tests share: run a pass through the manager
//! with the verifier on, render before/after/report snapshots, and check a
//! fused graph against the unfused one on the reference interpreter.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use alexc_interp::{Mode, Value};
use alexc_ir::{DType, Graph, Init, InputAttrs, Op, ParameterAttrs, Shape, ValueId};
use alexc_passes::{Pass, PassContext, PassManager, PipelineOptions};
use alexc_tensor::Tensor;

/// Runs `passes` through the pass manager with the verifier on, then
/// verifies once more; returns the rewritten graph and the context.
pub fn run_passes(graph: &Graph, passes: Vec<Box<dyn Pass>>) -> (Graph, PassContext) {
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
pub fn snapshot_text(pass: &str, before: &Graph, after: &Graph, ctx: &PassContext) -> String {
    format!(
        "--- before ---\n{}\n--- after {pass} ---\n{}\n--- fusion report ---\n{}",
        alexc_ir::print::to_text(before),
        alexc_ir::print::to_text(after),
        ctx.fusion.to_text()
    )
}

/// A small deterministic generator (SplitMix64) for test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Random values for every input: floats in [-1, 1), labels in {0, 1}.
pub fn random_inputs(graph: &Graph) -> HashMap<String, Value<f32>> {
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
pub fn assert_same_outputs(unfused: &Graph, fused: &Graph, mode: Mode) {
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

pub fn model_path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(file)
}

// Builders.

pub fn input(g: &mut Graph, name: &str, dims: &[usize]) -> ValueId {
    let op = Op::Input(InputAttrs {
        dtype: DType::F32,
        shape: Shape::new(dims.to_vec()),
    });
    g.add(name, op, &[]).expect("input").into()
}

pub fn labels(g: &mut Graph, n: usize) -> ValueId {
    let op = Op::Input(InputAttrs {
        dtype: DType::I64,
        shape: Shape::new(vec![n]),
    });
    g.add("labels", op, &[]).expect("labels").into()
}

pub fn param(g: &mut Graph, name: &str, dims: &[usize]) -> ValueId {
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

pub fn node(g: &mut Graph, name: &str, op: Op, operands: &[ValueId]) -> ValueId {
    g.add(name, op, operands).expect("node").into()
}

pub fn relu(g: &mut Graph, name: &str, x: ValueId) -> ValueId {
    node(g, name, Op::Relu, &[x])
}

pub fn out(g: &mut Graph, values: &[ValueId]) {
    g.set_outputs(values.to_vec()).expect("outputs");
}
