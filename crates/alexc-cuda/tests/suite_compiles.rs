//! Every kernel of the reference suite — each case and its unfused twin,
//! lowered with the GPU options — renders to CUDA C and compiles with
//! NVRTC. With `suite_gpu_lowering.rs` (the GPU lowering is right) this
//! leaves only execution to a GPU. Skips with a message without NVRTC.
//!
//! `ALEXC_CUDA_ALL_SETS=1` also renders and compiles the kernels of every
//! CPU option set of the suite (their flat thread mapping; about two
//! minutes of NVRTC per set on one core, so not by default).

use alexc_kernel::Kernel;
use alexc_lower::{lower_node, LowerOptions};

/// The distinct kernels (up to their names) of every case under `options`.
fn kernels(options: &LowerOptions) -> Vec<Kernel> {
    let mut out: Vec<Kernel> = Vec::new();
    for (i, case) in alexc_suite::cases().iter().enumerate() {
        for graph in std::iter::once(&case.graph).chain(case.unfused.as_ref()) {
            for id in graph.node_ids() {
                let lowered =
                    lower_node(graph, id, options).unwrap_or_else(|e| panic!("{}: {e}", case.name));
                for l in lowered {
                    let k = l.kernel;
                    let same =
                        |o: &Kernel| o.buffers == k.buffers && o.vars == k.vars && o.body == k.body;
                    if !out.iter().any(same) {
                        out.push(Kernel {
                            name: format!("c{i}_{}", k.name),
                            ..k
                        });
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_suite_kernel_renders_and_compiles() {
    let mut sets = vec![LowerOptions::gpu()];
    if std::env::var_os("ALEXC_CUDA_ALL_SETS").is_some_and(|v| v == "1") {
        sets.extend(alexc_suite::option_sets());
    }
    let nvrtc = alexc_cuda::nvrtc_available();
    if !nvrtc {
        let msg =
            "SKIPPED compiling (rendering only): NVRTC is missing; run `source scripts/setup.sh`";
        assert!(
            std::env::var_os("ALEXC_REQUIRE_NVRTC").is_none_or(|v| v != "1"),
            "{msg}"
        );
        eprintln!("{msg}");
    }
    for options in &sets {
        let kernels = kernels(options);
        let (_, rendered) = alexc_cuda::render_plan(&kernels)
            .unwrap_or_else(|e| panic!("{}: {e}", alexc_suite::describe(options)));
        assert_eq!(rendered.len(), kernels.len());
        if nvrtc {
            let start = std::time::Instant::now();
            // Two translation units compiled side by side (NVRTC uses one
            // core per program).
            let half = rendered.len() / 2;
            let unit = |part: &[alexc_cuda::CudaKernel]| {
                let mut tu = alexc_cuda::PRELUDE.to_string();
                part.iter().for_each(|k| tu.push_str(&k.source));
                alexc_cuda::compile_ptx(&tu, alexc_cuda::Arch::SM_90)
            };
            let results = std::thread::scope(|s| {
                let a = s.spawn(|| unit(&rendered[..half]));
                let b = unit(&rendered[half..]);
                [a.join().expect("the NVRTC thread"), b]
            });
            for r in results {
                r.unwrap_or_else(|e| panic!("{}: {e}", alexc_suite::describe(options)));
            }
            println!(
                "{:<28} {} kernels compiled in {:.1?}",
                if options.is_gpu() {
                    "gpu".to_string()
                } else {
                    alexc_suite::describe(options)
                },
                kernels.len(),
                start.elapsed()
            );
        }
    }
}
