//! The Cranelift backend: [`alexc_kernel::Kernel`] → Cranelift IR → machine
//! code, JIT-compiled in process. No system dependency, and compile times
//! an order of magnitude below LLVM's, for code within a small factor of
//! LLVM's speed.
//!
//! Rendering is separate from compiling and loading (the tinygrad rule in
//! STYLE.md): [`emit_kernel`] is a pure translation of one kernel into
//! Cranelift functions and [`clif_text`] renders them (`--emit clif`);
//! only [`JitModule`] compiles and loads code. [`CraneliftBackend`] is the
//! runtime's view of it.
//!
//! # Calling convention
//!
//! As the LLVM backend's: every kernel `k` becomes a function
//! `fn(args: *const *mut u8)` in the host's C calling convention, where
//! `args[i]` is the base pointer of the kernel's `i`-th parameter buffer
//! (its `Param` buffers in declaration order); the entry loads the pointers
//! once.
//!
//! # Loops
//!
//! - `Serial`: a guarded, bottom-tested loop; the induction variable is the
//!   loop block's parameter. Loops whose bounds are constants with one
//!   iteration are emitted without a loop.
//! - `Unrolled`: unrolled by the emitter (up to 64 iterations, and unless
//!   the body contains a `Parallel` loop), with the loop variable a constant
//!   in each copy; Cranelift does not unroll.
//! - `Vectorized`: widened into explicit `f32x4` code with a scalar
//!   remainder when [`alexc_kernel::vector::widenable`] accepts the body
//!   (the LLVM backend's rule, so both widen the same loops), else a scalar
//!   loop; Cranelift has no auto-vectorizer. See `emit/lanes.rs`.
//! - `Parallel`: the body is outlined into `fn(ctx, begin, end)`
//!   (`alexc_threads::BodyFn`), which reads the buffer pointers and the
//!   values of the variables in scope from `ctx`, an array of 8-byte slots
//!   on the caller's stack, and the loop becomes a call of
//!   `alexc_parallel_for(body, ctx, n)` on the runtime's thread pool
//!   ([`alexc_threads`], shared with the LLVM backend). Locals used inside
//!   the body belong to the outlined function, so each thread has its own.
//!
//! # Other lowering
//!
//! Index arithmetic is i64 and folded during translation (constants, and
//! constant offsets that end up in address displacements); addresses add
//! the loop-invariant dimensions first, so Cranelift hoists them; floor division
//! and remainder by a constant use `udiv`/`urem` when the dividend is
//! provably non-negative, else `sdiv`/`srem` plus a sign fix-up (Cranelift
//! turns division by a constant into multiplication). `LoadOr` loads at a
//! clamped index and selects, without branches. `Select` is `select` (or
//! `bitselect` across lanes). `Max`/`Min` have IEEE `maxNum`/`minNum`
//! semantics (`maxss`/`maxps` plus a NaN fix-up). `Fma` is a fused `fma`
//! on hosts with FMA, else `fmul` + `fadd` (the IR allows either). `exp`,
//! `log` and `pow` call Rust's `std` functions (per lane in vector code).
//! Scalar variables are Cranelift variables (SSA); locals are 64-byte
//! aligned stack slots, except small f32 locals addressed only at constant
//! indices — register tiles after unrolling — which become `f32x4`
//! variables (see [`emit_kernel`]). f32 → i64 casts saturate, as Rust's
//! `as`.

mod backend;
mod emit;
mod error;
mod jit;
mod math;

pub use backend::CraneliftBackend;
/// Re-exported for [`EmitOptions::call_conv`].
pub use cranelift_codegen::isa::CallConv;
pub use emit::{
    clif_text, emit_kernel, render_clif, EmitOptions, Extern, LANES, NS_EXTERN, NS_LOCAL,
};
pub use error::CraneliftError;
pub use jit::{host_emit_options, ArgError, BufferArg, JitModule};
