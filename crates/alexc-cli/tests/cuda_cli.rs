//! `--backend cuda` from the command line. Compiling needs only NVRTC
//! (`scripts/setup.sh` installs it from NVIDIA's PyPI wheel), not a GPU;
//! running needs a driver, and without one every command says so.

mod common;

use common::{alexc, stderr, temp_dir};

/// `--emit cuda` renders without NVRTC: a pure function of the kernel IR.
#[test]
fn emit_cuda_prints_one_translation_unit() {
    let out = alexc(&[
        "compile",
        "models/alexnet-small.ron",
        "--backend",
        "cuda",
        "--emit",
        "cuda",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let source = String::from_utf8_lossy(&out.stdout);
    assert!(source.contains("__global__"), "no kernels in:\n{source}");
    // The convolutions are shared-memory tiled GEMMs with barriers.
    assert!(source.contains("__shared__"));
    assert!(source.contains("__syncthreads()"));
}

#[test]
fn cuda_levels_need_the_cuda_backend() {
    let out = alexc(&[
        "compile",
        "models/alexnet-small.ron",
        "--backend",
        "none",
        "--emit",
        "ptx",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("need --backend cuda"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bad_arch_is_a_clear_error() {
    let out = alexc(&[
        "compile",
        "models/alexnet-small.ron",
        "--backend",
        "cuda",
        "--arch",
        "sm_x",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a GPU architecture"),
        "{}",
        stderr(&out)
    );
}

/// The whole AlexNet training plan compiled to PTX into a directory, as a
/// user without a GPU does it.
#[test]
fn compile_alexnet_training_to_ptx_in_a_directory() {
    if !alexc_cuda::nvrtc_available() {
        eprintln!("SKIPPED: NVRTC not found (source scripts/setup.sh installs it)");
        return;
    }
    let dir = temp_dir("alexnet");
    let dir_s = dir.to_str().expect("utf-8 temp dir");
    let out = alexc(&[
        "compile",
        "models/alexnet.ron",
        "--train",
        "--batch",
        "128",
        "--backend",
        "cuda",
        "--arch",
        "sm_80",
        "-o",
        dir_s,
        "--emit",
        "cuda,ptx",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("with NVRTC for sm_80"),
        "{}",
        stderr(&out)
    );
    for file in [
        "kernels.cu",
        "kernels.ptx",
        "launches.json",
        "plan.json",
        "summary.txt",
    ] {
        let len = std::fs::metadata(dir.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .len();
        assert!(len > 0, "{file} is empty");
    }
    let ptx = std::fs::read_to_string(dir.join("kernels.ptx")).expect("ptx");
    assert!(ptx.contains(".target sm_80"), "PTX for the wrong target");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without an NVIDIA driver, running says so instead of panicking.
#[test]
fn running_without_a_driver_is_a_clear_error() {
    if std::path::Path::new("/dev/nvidia0").exists() {
        eprintln!("SKIPPED: this machine has a GPU");
        return;
    }
    let dir = temp_dir("nodriver");
    let input = dir.join("x.npy");
    let images =
        alexc_tensor::Tensor::full(vec![1, 1, 28, 28], 0.0f32).expect("a 1×1×28×28 tensor");
    alexc_tensor::write_npy(&input, &images).expect("writing the batch");
    let out = alexc(&[
        "run",
        "models/alexnet-small.ron",
        "--backend",
        "cuda",
        "--input",
        input.to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("no CUDA driver"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--backend cuda-emu` runs the CUDA kernels on the CPU: the logits match
/// the reference interpreter's.
#[test]
fn the_emulated_gpu_runs_the_model_like_the_interpreter() {
    if alexc_cuda::emulate::emulator_or_skip().is_none() {
        return;
    }
    let dir = temp_dir("emu");
    let input = dir.join("x.npy");
    let images =
        alexc_tensor::Tensor::from_flat_fn(vec![2, 1, 28, 28], |i| ((i * 31 % 255) as f32) / 255.0)
            .expect("a 2×1×28×28 tensor");
    alexc_tensor::write_npy(&input, &images).expect("writing the batch");
    let mut logits = Vec::new();
    for backend in ["interp", "cuda-emu"] {
        let out_path = dir.join(format!("{backend}.npy"));
        let out = alexc(&[
            "run",
            "models/alexnet-small.ron",
            "--backend",
            backend,
            "--input",
            input.to_str().expect("utf-8"),
            "--save-logits",
            out_path.to_str().expect("utf-8"),
        ]);
        assert!(out.status.success(), "{backend}: {}", stderr(&out));
        match alexc_tensor::read_npy(&out_path).expect("logits") {
            alexc_tensor::NpyTensor::F32(t) => logits.push(t),
            other => panic!("{backend}: logits of {}", other.dtype_name()),
        }
    }
    assert_eq!(logits[0].shape(), logits[1].shape());
    let scale = logits[0]
        .data()
        .iter()
        .fold(1e-30f32, |m, v| m.max(v.abs()));
    for (a, b) in logits[0].data().iter().zip(logits[1].data()) {
        assert!((a - b).abs() <= 1e-4 * scale, "{a} vs {b}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
