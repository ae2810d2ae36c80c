//! Quick throughput check (not a test): JIT-compiles the register-blocked
//! matmul kernel of the tests at 512×512×512 for a few tile shapes and
//! prints GFLOP/s, single-threaded and with all cores.
//!
//! `cargo run --release -p alexc-llvm --example matmul_gflops`
//! (`ALEXC_ASM=1` prints the 8×32 kernel's assembly instead)

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use alexc_llvm::{BufferArg, JitModule, Target};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (m, n, k) = (512usize, 512usize, 512usize);
    let target = Target::host()?;
    let a = common::data(m * k, 1);
    let b = common::data(k * n, 2);
    let mut c = vec![0f32; m * n];
    if std::env::var_os("ALEXC_ASM").is_some() {
        // `ALEXC_ASM=1`: print the 8×32 kernel's assembly instead.
        println!(
            "{}",
            alexc_llvm::asm_text(&[common::matmul(m, n, k, 8, 32, 16, true)], &target)?
        );
        return Ok(());
    }
    for (tr, tc) in [(4, 32), (4, 64), (6, 32), (8, 32), (6, 64)] {
        let kernel = common::matmul(m, n, k, tr, tc, 16, true);
        let jit = JitModule::new(std::slice::from_ref(&kernel), &target)?;
        for threads in [1, 0] {
            alexc_llvm::set_threads(threads);
            let (mut a, mut b) = (a.clone(), b.clone());
            let mut run = || {
                jit.call(
                    "matmul",
                    &mut [
                        BufferArg::F32(&mut a),
                        BufferArg::F32(&mut b),
                        BufferArg::F32(&mut c),
                    ],
                )
            };
            run()?;
            let reps = 20;
            let start = Instant::now();
            for _ in 0..reps {
                run()?;
            }
            let secs = start.elapsed().as_secs_f64() / f64::from(reps);
            let gflops = 2.0 * (m * n * k) as f64 / secs / 1e9;
            println!(
                "tile {tr}x{tc}, threads {}: {:.2} ms, {gflops:.1} GFLOP/s",
                alexc_llvm::threads(),
                secs * 1e3
            );
        }
    }
    Ok(())
}
