//! The runtime end to end, on the kernel IR evaluator and (with the `llvm`
//! feature) on LLVM, against
//! the reference interpreter: alexnet-small inference, and three training
//! steps (fused and unfused). Bad input is an error before any kernel runs.
//!
//! Tolerance: 1e-4 relative to a tensor's largest |value|. Lowered kernels
//! sum in other orders than the interpreter (tiled GEMM, blocked
//! reductions); f32 rounding then differs by ~1e-6 of the scale per layer,
//! and three SGD steps compound it a little.

use std::collections::HashMap;
use std::path::Path;

use alexc_interp::{Mode, Value};
#[cfg(feature = "llvm")]
use alexc_runtime::LlvmBackend;
use alexc_runtime::{Backend, EvalBackend, Options, Runtime, RuntimeError};
use alexc_tensor::Tensor;

fn model(batch: usize) -> alexc_frontend::Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/alexnet-small.ron");
    alexc_frontend::load(&path, batch).expect("model")
}

fn images(batch: usize) -> Tensor<f32> {
    Tensor::from_flat_fn(vec![batch, 1, 28, 28], |i| {
        (((i * 7919) % 1000) as f32 / 1000.0 - 0.5) * 3.0
    })
    .expect("images")
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-4 * scale,
        "{what}: differs by {worst:e} (scale {scale:e})"
    );
}

fn options(train: bool, no_fuse: bool) -> Options {
    Options {
        train,
        no_fuse,
        // The backend's choice: 8 lanes on the evaluator, the host's width
        // (16 with AVX-512) on LLVM.
        lower: None,
        ..Options::default()
    }
}

fn inference_matches_the_interpreter(backend: &dyn Backend) {
    let m = model(2);
    for no_fuse in [false, true] {
        let mut rt = Runtime::new(&m, &options(false, no_fuse), backend).expect("compiles");
        rt.init_state(5, m.base_dir()).expect("init");
        let logits = rt.infer(&images(2)).expect("infers");
        let weights = alexc_tensor::init_parameters(&m.graph, 5, m.base_dir()).expect("weights");
        let mut inputs = HashMap::new();
        inputs.insert("image".to_string(), Value::Float(images(2)));
        let want = alexc_interp::run(&m.graph, &weights, &inputs, Mode::Eval).expect("interp");
        let want = want[0].as_float().expect("logits");
        assert_eq!(logits.shape(), want.shape());
        close(
            &format!("logits (no_fuse {no_fuse})"),
            logits.data(),
            want.data(),
        );
    }
}

fn three_training_steps_match_the_interpreter(backend: &dyn Backend, variants: &[bool]) {
    let m = model(2);
    let labels = Tensor::new(vec![2], vec![3i64, 7]).expect("labels");
    for &no_fuse in variants {
        let mut rt = Runtime::new(&m, &options(true, no_fuse), backend).expect("compiles");
        rt.init_state(9, m.base_dir()).expect("init");
        // The interpreter runs the unfused training graph from the same state.
        let mut graph = m.graph.clone();
        let pipeline = alexc_passes::PipelineOptions {
            mode: alexc_passes::PipelineMode::Training,
            no_fuse: true,
            ..Default::default()
        };
        alexc_passes::default_pipeline(pipeline)
            .run(&mut graph)
            .expect("pipeline");
        let mut state = rt.state();
        for step in 0..3u64 {
            let loss = rt
                .train_step(&images(2), &labels, 0.01, step)
                .expect("step");
            let mut inputs = HashMap::new();
            inputs.insert("image".to_string(), Value::Float(images(2)));
            inputs.insert("labels".to_string(), Value::Int(labels.clone()));
            inputs.insert("lr".to_string(), Value::Float(Tensor::scalar(0.01f32)));
            let out =
                alexc_interp::train_step(&graph, &mut state, &inputs, Mode::Train { seed: step })
                    .expect("interp step");
            let want = out[0].as_float().expect("loss").data()[0];
            close(
                &format!("loss of step {step} (no_fuse {no_fuse})"),
                &[loss],
                &[want],
            );
        }
        for (name, t) in rt.state() {
            close(
                &format!("{name} after 3 steps (no_fuse {no_fuse})"),
                t.data(),
                state[&name].data(),
            );
        }
    }
}

#[test]
fn eval_inference() {
    inference_matches_the_interpreter(&EvalBackend);
}

#[test]
fn eval_training() {
    // The evaluator is slow; the fused plan exercises every fused kernel and
    // the lowering tests cover the unfused kernels op by op.
    three_training_steps_match_the_interpreter(&EvalBackend, &[false]);
}

#[cfg(feature = "llvm")]
#[test]
fn llvm_inference() {
    inference_matches_the_interpreter(&LlvmBackend);
}

#[cfg(feature = "llvm")]
#[test]
fn llvm_training() {
    three_training_steps_match_the_interpreter(&LlvmBackend, &[false, true]);
}

/// The backend for checks of the runtime's own (backend-independent) input
/// validation: LLVM where this build has it, else the evaluator.
#[cfg(feature = "llvm")]
const CHECKED: &dyn Backend = &LlvmBackend;
#[cfg(not(feature = "llvm"))]
const CHECKED: &dyn Backend = &EvalBackend;

#[test]
fn bad_input_is_an_error() {
    let m = model(2);
    let mut rt = Runtime::new(&m, &options(true, false), CHECKED).expect("compiles");
    rt.init_state(1, m.base_dir()).expect("init");
    let labels = Tensor::new(vec![2], vec![0i64, 1]).expect("labels");
    let wrong = Tensor::from_flat_fn(vec![2, 1, 27, 28], |_| 0.0f32).expect("t");
    assert!(matches!(
        rt.train_step(&wrong, &labels, 0.01, 0),
        Err(RuntimeError::Shape { .. })
    ));
    let bad_labels = Tensor::new(vec![2], vec![0i64, 10]).expect("labels");
    assert!(matches!(
        rt.train_step(&images(2), &bad_labels, 0.01, 0),
        Err(RuntimeError::Label { label: 10, .. })
    ));
    assert!(matches!(
        rt.train_step(&images(2), &labels, f32::NAN, 0),
        Err(RuntimeError::LearningRate(_))
    ));
    let mut weights = rt.state();
    weights.remove("fc8.bias");
    let err = rt.load_state(&weights).expect_err("missing weight");
    assert!(err.to_string().contains("fc8.bias"), "{err}");
}

/// Two different batches of alexnet-small at batch 2.
fn batches() -> [(Tensor<f32>, Tensor<i64>); 2] {
    let second = Tensor::from_flat_fn(vec![2, 1, 28, 28], |i| ((i % 37) as f32 - 18.0) / 9.0)
        .expect("images");
    [
        (
            images(2),
            Tensor::new(vec![2], vec![3i64, 7]).expect("labels"),
        ),
        (second, Tensor::new(vec![2], vec![0i64, 9]).expect("labels")),
    ]
}

#[test]
fn pipelined_steps_compute_what_sequential_steps_compute() {
    let m = model(2);
    let [(x0, y0), (x1, y1)] = batches();
    let dropout = alexc_runtime::Dropout::Seed(5);
    let mut sequential = Runtime::new(&m, &options(true, false), CHECKED).expect("compiles");
    sequential.init_state(2, m.base_dir()).expect("init");
    let mut pipelined = Runtime::new(&m, &options(true, false), CHECKED).expect("compiles");
    pipelined.init_state(2, m.base_dir()).expect("init");

    let want = [
        sequential
            .train_step_with(&x0, &y0, 0.01, dropout)
            .expect("step"),
        sequential
            .train_step_with(&x1, &y1, 0.01, dropout)
            .expect("step"),
    ];
    // The trainer's order: the next batch is staged while a step runs,
    // before its loss is read.
    pipelined.stage_batch(&x0, &y0).expect("stage");
    pipelined.launch_train_step(0.01, dropout).expect("launch");
    pipelined.stage_batch(&x1, &y1).expect("stage");
    let first = pipelined.wait_loss().expect("loss");
    pipelined.launch_train_step(0.01, dropout).expect("launch");
    let second = pipelined.wait_loss().expect("loss");
    assert_eq!([first, second], want);
    for (name, t) in sequential.state() {
        assert_eq!(pipelined.state()[&name].data(), t.data(), "{name}");
    }
}

#[test]
fn a_step_needs_a_staged_batch_and_a_loss_a_launched_step() {
    let m = model(2);
    let mut rt = Runtime::new(&m, &options(true, false), CHECKED).expect("compiles");
    rt.init_state(1, m.base_dir()).expect("init");
    let dropout = alexc_runtime::Dropout::Off;
    assert!(matches!(
        rt.launch_train_step(0.01, dropout),
        Err(RuntimeError::NoBatch)
    ));
    assert!(rt.wait_loss().is_err());
    let [(x0, y0), _] = batches();
    rt.stage_batch(&x0, &y0).expect("stage");
    rt.launch_train_step(0.01, dropout).expect("launch");
    rt.wait_loss().expect("loss");
    // The staged batch was used up by the step.
    assert!(matches!(
        rt.launch_train_step(0.01, dropout),
        Err(RuntimeError::NoBatch)
    ));
    // A refused batch stages nothing.
    let bad = Tensor::new(vec![2], vec![0i64, 10]).expect("labels");
    assert!(matches!(
        rt.stage_batch(&x0, &bad),
        Err(RuntimeError::Label { label: 10, .. })
    ));
    assert!(matches!(
        rt.launch_train_step(0.01, dropout),
        Err(RuntimeError::NoBatch)
    ));
}
