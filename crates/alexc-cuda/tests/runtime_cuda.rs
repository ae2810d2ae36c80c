//! Training through the runtime with the state resident on the device:
//! alexnet-small at batch 4, four steps over two alternating batches, run
//! one `train_step` after another and pipelined (the next batch staged
//! through pinned memory and the copy stream while a step runs). The two
//! loops must agree bit for bit (same kernels, no atomics: the GPU code is
//! deterministic) and both with the reference interpreter (1e-4 of each
//! tensor's largest magnitude, as the CPU runtime's tests).
//!
//! On the GPU (`CudaBackend`, resident memory: what `alexc train --backend
//! cuda` runs) this needs an NVIDIA GPU: without one it prints why and
//! passes, unless `ALEXC_REQUIRE_GPU=1` (`scripts/gpu-check.sh`). The same
//! check runs on the CUDA emulator everywhere, which tests this test and
//! the runtime's staging protocol, though not the device's copy stream.

use std::collections::HashMap;

use alexc_cuda::backend::gpu_available;
use alexc_cuda::CudaBackend;
use alexc_interp::{Mode, Value};
use alexc_runtime::{Backend, Dropout, Options, Runtime};
use alexc_tensor::Tensor;

const BATCH: usize = 4;

fn model() -> alexc_frontend::Model {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/alexnet-small.ron");
    alexc_frontend::load(&path, BATCH).expect("alexnet-small loads")
}

fn batches() -> [(Tensor<f32>, Tensor<i64>); 2] {
    let images = |k: usize| {
        Tensor::from_flat_fn(vec![BATCH, 1, 28, 28], |i| {
            (((i * 7919 + k * 131) % 1000) as f32 / 1000.0 - 0.5) * 3.0
        })
        .expect("images")
    };
    [
        (
            images(0),
            Tensor::new(vec![BATCH], vec![3i64, 7, 0, 9]).expect("labels"),
        ),
        (
            images(1),
            Tensor::new(vec![BATCH], vec![1i64, 2, 5, 5]).expect("labels"),
        ),
    ]
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

const STEPS: u64 = 4;

fn pipelined_and_sequential_steps_agree(backend: &dyn Backend) {
    let m = model();
    let options = Options {
        train: true,
        ..Options::default()
    };
    let data = batches();
    let mut sequential = Runtime::new(&m, &options, backend).expect("compiles");
    sequential.init_state(3, m.base_dir()).expect("init");
    let mut state = sequential.state();
    let mut pipelined = Runtime::new(&m, &options, backend).expect("compiles");
    pipelined.load_state(&state).expect("same state");

    let mut graph = m.graph.clone();
    let pipeline = alexc_passes::PipelineOptions {
        mode: alexc_passes::PipelineMode::Training,
        ..Default::default()
    };
    alexc_passes::default_pipeline(pipeline)
        .run(&mut graph)
        .expect("pipeline");

    let mut want = Vec::new();
    for step in 0..STEPS {
        let (x, y) = &data[step as usize % 2];
        let loss = sequential
            .train_step_with(x, y, 0.01, Dropout::Seed(step))
            .expect("step");
        let mut inputs = HashMap::new();
        inputs.insert("image".to_string(), Value::Float(x.clone()));
        inputs.insert("labels".to_string(), Value::Int(y.clone()));
        inputs.insert("lr".to_string(), Value::Float(Tensor::scalar(0.01f32)));
        let out = alexc_interp::train_step(&graph, &mut state, &inputs, Mode::Train { seed: step })
            .expect("interp step");
        let reference = out[0].as_float().expect("loss").data()[0];
        close(&format!("loss of step {step}"), &[loss], &[reference]);
        want.push(loss);
    }
    for (name, t) in sequential.state() {
        close(
            &format!("{name} after {STEPS} steps"),
            t.data(),
            state[&name].data(),
        );
    }

    let mut got = Vec::new();
    pipelined
        .stage_batch(&data[0].0, &data[0].1)
        .expect("stage");
    for step in 0..STEPS {
        pipelined
            .launch_train_step(0.01, Dropout::Seed(step))
            .expect("launch");
        if step + 1 < STEPS {
            let (x, y) = &data[(step + 1) as usize % 2];
            pipelined.stage_batch(x, y).expect("stage");
        }
        got.push(pipelined.wait_loss().expect("loss"));
    }
    assert_eq!(got, want, "{}: pipelined losses", backend.name());
    for (name, t) in sequential.state() {
        assert_eq!(
            pipelined.state()[&name].data(),
            t.data(),
            "{}: {name}",
            backend.name()
        );
    }
}

#[test]
fn pipelined_training_on_the_gpu_matches_sequential_steps_and_the_interpreter() {
    let required = std::env::var_os("ALEXC_REQUIRE_GPU").is_some_and(|v| v == "1");
    if !(alexc_cuda::nvrtc_available() && gpu_available()) {
        let msg = "SKIPPED: no NVIDIA GPU with NVRTC here (resident-memory training needs one)";
        assert!(!required, "{msg}");
        eprintln!("{msg}");
        return;
    }
    pipelined_and_sequential_steps_agree(&CudaBackend::new(0));
}

#[test]
fn pipelined_training_on_the_emulated_gpu_matches_sequential_steps_and_the_interpreter() {
    let Some(emulator) = alexc_cuda::emulate::emulator_or_skip() else {
        return;
    };
    pipelined_and_sequential_steps_agree(&emulator);
}
