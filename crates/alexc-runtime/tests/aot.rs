//! The runtime on AOT artifacts: alexnet-small's kernels written with
//! `write_aot`, loaded by a second runtime through `AotBackend`, infer
//! exactly (bit for bit) what the JIT runtime infers; a directory written
//! for other kernels is refused when the runtime is built.

use std::path::Path;

use alexc_runtime::{write_aot, AotBackend, LlvmBackend, Options, Runtime, RuntimeError};
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

#[test]
fn aot_runtime_infers_exactly_what_the_jit_runtime_infers() {
    let m = model(2);
    let options = Options::default();
    let mut jit = Runtime::new(&m, &options, &LlvmBackend).expect("JIT runtime");
    jit.init_state(5, m.base_dir()).expect("init");

    let dir = tempfile::tempdir().expect("temp dir");
    let written = write_aot(jit.kernels(), dir.path()).expect("writes AOT artifacts");
    assert_eq!(written.manifest.kernels.len(), jit.kernels().len());
    assert!(written.library.is_file() && written.object.is_file());

    let backend = AotBackend {
        dir: dir.path().to_path_buf(),
    };
    let mut aot = Runtime::new(&m, &options, &backend).expect("AOT runtime");
    aot.init_state(5, m.base_dir()).expect("init");

    let want = jit.infer(&images(2)).expect("JIT infers");
    let got = aot.infer(&images(2)).expect("AOT infers");
    assert_eq!(got.shape(), want.shape());
    let bits = |t: &Tensor<f32>| t.data().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want), "AOT logits differ from the JIT's");
}

#[test]
fn aot_backend_refuses_artifacts_of_other_kernels() {
    let m = model(2);
    let fused = Runtime::new(&m, &Options::default(), &LlvmBackend).expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    write_aot(fused.kernels(), dir.path()).expect("writes AOT artifacts");

    // The unfused model lowers to other kernels.
    let unfused = Options {
        no_fuse: true,
        ..Options::default()
    };
    let backend = AotBackend {
        dir: dir.path().to_path_buf(),
    };
    match Runtime::new(&m, &unfused, &backend) {
        Err(RuntimeError::Compile(message)) => {
            assert!(message.contains("do not match"), "{message}")
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("stale AOT artifacts were accepted"),
    }
}
