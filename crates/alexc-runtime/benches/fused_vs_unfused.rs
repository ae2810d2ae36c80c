//! Fused against unfused plans, as criterion measures them: AlexNet
//! inference at batch 1 and alexnet-small training steps at batch 16, each
//! compiled with LLVM both ways from the same model, state and batch.
//!
//! `cargo bench -p alexc-runtime --bench fused_vs_unfused`; compare the two
//! plans of a group (criterion reports them side by side). `alexc bench`
//! gives the per-kernel breakdown of the same comparison.

use std::path::Path;

use alexc_runtime::{Dropout, LlvmBackend, Options, Runtime};
use alexc_tensor::Tensor;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn model(file: &str, batch: usize) -> alexc_frontend::Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(file);
    alexc_frontend::load(&path, batch).expect("the model loads")
}

fn runtime(m: &alexc_frontend::Model, train: bool, no_fuse: bool) -> Runtime {
    let options = Options {
        train,
        no_fuse,
        ..Options::default()
    };
    let mut rt = Runtime::new(m, &options, &LlvmBackend).expect("the model compiles");
    rt.init_state(0, m.base_dir()).expect("initializers");
    rt
}

fn batch(shape: Vec<usize>) -> Tensor<f32> {
    Tensor::from_flat_fn(shape, |i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).expect("a batch")
}

fn plans() -> [(&'static str, bool); 2] {
    [("fused", false), ("unfused", true)]
}

fn inference(c: &mut Criterion) {
    let m = model("alexnet.ron", 1);
    let mut group = c.benchmark_group("alexnet inference batch 1");
    group.sample_size(20);
    for (name, no_fuse) in plans() {
        let mut rt = runtime(&m, false, no_fuse);
        let images = batch(rt.image_shape().expect("input shape"));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| rt.infer(&images).expect("inference"))
        });
    }
    group.finish();
}

fn training(c: &mut Criterion) {
    let m = model("alexnet-small.ron", 16);
    let mut group = c.benchmark_group("alexnet-small training step batch 16");
    group.sample_size(20);
    for (name, no_fuse) in plans() {
        let mut rt = runtime(&m, true, no_fuse);
        let images = batch(rt.image_shape().expect("input shape"));
        let classes = rt.classes() as i64;
        let labels = Tensor::from_flat_fn(vec![16], |i| i as i64 % classes).expect("labels");
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                rt.train_step_with(&images, &labels, 0.01, Dropout::Seed(1))
                    .expect("a step")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, inference, training);
criterion_main!(benches);
