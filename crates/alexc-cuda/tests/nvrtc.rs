//! Every kernel of `models/alexnet.ron` at batch 128 — inference and
//! training, fused and unfused — compiles with NVRTC for sm_90 (the whole
//! plan as one translation unit), and `ptxas -v` reports no register spills
//! in the convolution and GEMM kernels and no local memory at all in the
//! window kernels (LRN, max-pooling); the block-tiled GEMMs read their
//! shared-memory tiles only with 128-bit loads. Needs no GPU: NVRTC and ptxas come
//! from NVIDIA's wheels (`source scripts/setup.sh`). Without them the tests
//! print why and pass (skip), unless `ALEXC_REQUIRE_NVRTC=1`.

mod common;

use alexc_cuda::{compile_plan, nvrtc_available, ptxas, ptxas_report, Arch, Mapping};

/// The PTX of entry `name` (up to the next entry).
fn ptx_function<'p>(ptx: &'p str, name: &str) -> &'p str {
    let start = ptx
        .find(&format!(".entry {name}("))
        .unwrap_or_else(|| panic!("no PTX entry {name}"));
    let rest = &ptx[start + 1..];
    let end = rest.find(".entry ").unwrap_or(rest.len());
    &rest[..end]
}

/// Whether NVRTC (and ptxas) are here; prints why not.
fn tools() -> bool {
    let required = std::env::var_os("ALEXC_REQUIRE_NVRTC").is_some_and(|v| v == "1");
    let (nvrtc, ptxas) = (nvrtc_available(), ptxas::ptxas_available());
    if !(nvrtc && ptxas) {
        let msg = format!(
            "SKIPPED: NVRTC {} / ptxas {}; run `source scripts/setup.sh` (installs the nvidia-cuda-nvrtc-cu12 and nvidia-cuda-nvcc-cu12 wheels)",
            if nvrtc { "found" } else { "missing" },
            if ptxas { "found" } else { "missing" },
        );
        assert!(!required, "{msg}");
        eprintln!("{msg}");
    }
    nvrtc && ptxas
}

/// The window kernels (LRN, max-pooling and their fusion, forward and
/// backward), which on a GPU keep no thread-private buffers.
fn is_window(kernel: &str) -> bool {
    ["lrn", "max_pool"].iter().any(|op| kernel.contains(op))
}

/// The GEMM kernels: convolutions and linear layers, forward and backward
/// (not the bias-gradient sums).
fn is_gemm(kernel: &str) -> bool {
    let gemm_op = kernel.starts_with("conv") || kernel.starts_with("fc");
    gemm_op && (kernel.ends_with("_fwd") || kernel.ends_with("_dx") || kernel.ends_with("_dw"))
}

fn check(train: bool, no_fuse: bool) {
    if !tools() {
        return;
    }
    let kernels = common::plan(train, no_fuse);
    let start = std::time::Instant::now();
    let module = compile_plan(&kernels, Arch::SM_90).unwrap_or_else(|e| panic!("{e}"));
    let nvrtc = start.elapsed();
    let start = std::time::Instant::now();
    let report = ptxas_report(&module.ptx, Arch::SM_90).unwrap_or_else(|e| panic!("{e}"));
    let ptxas = start.elapsed();
    let launches: usize = module.kernels.iter().map(|k| k.launches.len()).sum();
    println!(
        "alexnet batch {} (train {train}, no_fuse {no_fuse}): {} kernels, {launches} launches; NVRTC {nvrtc:.1?}, ptxas {ptxas:.1?}",
        common::BATCH,
        kernels.len(),
    );
    assert_eq!(report.len(), launches, "one ptxas report per launch");
    let mut spills = Vec::new();
    let mut local = Vec::new();
    let mut scalar = Vec::new();
    for (kernel, rendered) in kernels.iter().zip(&module.kernels) {
        for launch in &rendered.launches {
            let Some(r) = report.iter().find(|r| r.name == launch.entry) else {
                panic!("ptxas reported nothing for {}", launch.entry);
            };
            if is_window(&kernel.name) {
                println!(
                    "  {:<44} {:>3} registers, {:>4} B stack, spills {}/{} B",
                    r.name, r.registers, r.stack_bytes, r.spill_stores, r.spill_loads
                );
                if r.stack_bytes > 0 || r.spill_stores > 0 || r.spill_loads > 0 {
                    local.push(r.name.clone());
                }
            }
            if is_gemm(&kernel.name) {
                println!(
                    "  {:<44} {:>3} registers, {:>5} B shared, {:>4} B stack, spills {}/{} B",
                    r.name,
                    r.registers,
                    r.shared_bytes,
                    r.stack_bytes,
                    r.spill_stores,
                    r.spill_loads
                );
                if r.spill_stores > 0 || r.spill_loads > 0 {
                    spills.push(r.name.clone());
                }
                if matches!(launch.mapping, Mapping::Blocks { .. }) {
                    let body = ptx_function(&module.ptx, &launch.entry);
                    if body.contains("ld.shared.f32") || !body.contains("ld.shared.v4.f32") {
                        scalar.push(launch.entry.clone());
                    }
                }
            }
        }
    }
    assert!(spills.is_empty(), "register spills in {spills:?}");
    assert!(
        scalar.is_empty(),
        "GEMM launches reading shared memory without 128-bit loads: {scalar:?}"
    );
    assert!(local.is_empty(), "local memory in window kernels {local:?}");
    // What `alexc compile --backend cuda --emit cuda,ptx -o DIR` writes.
    let dir = std::env::temp_dir().join(format!(
        "alexc-cuda-module-{}-{train}-{no_fuse}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let files = module.write(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files.len(), 3);
    assert!(files
        .iter()
        .all(|f| f.metadata().is_ok_and(|m| m.len() > 0)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inference_fused_compiles_without_spills() {
    check(false, false);
}

#[test]
fn inference_unfused_compiles_without_spills() {
    check(false, true);
}

#[test]
fn training_fused_compiles_without_spills() {
    check(true, false);
}

#[test]
fn training_unfused_compiles_without_spills() {
    check(true, true);
}
