//! The Rust functions generated code calls: the thread pool's entry point
//! and the f32 math functions Cranelift has no instructions for (`exp`,
//! `log`, `pow`), implemented by Rust's `std` exactly as the kernel IR
//! evaluator and the LLVM JIT's math functions compute them.

use crate::emit::Extern;

extern "C" fn expf(x: f32) -> f32 {
    x.exp()
}

extern "C" fn logf(x: f32) -> f32 {
    x.ln()
}

extern "C" fn powf(x: f32, y: f32) -> f32 {
    x.powf(y)
}

extern "C" fn fmaf(x: f32, y: f32, z: f32) -> f32 {
    x.mul_add(y, z)
}

/// `fmaf`, the libcall Cranelift emits for `fma` without FMA instructions.
pub(crate) fn fmaf_address() -> *const u8 {
    fmaf as extern "C" fn(f32, f32, f32) -> f32 as *const u8
}

/// The address the JIT maps `x`'s symbol to.
pub(crate) fn address(x: Extern) -> *const u8 {
    type Unary = extern "C" fn(f32) -> f32;
    type Binary = extern "C" fn(f32, f32) -> f32;
    match x {
        Extern::ParallelFor => {
            alexc_threads::alexc_parallel_for as alexc_threads::PforFn as *const u8
        }
        Extern::Exp => expf as Unary as *const u8,
        Extern::Log => logf as Unary as *const u8,
        Extern::Pow => powf as Binary as *const u8,
    }
}
