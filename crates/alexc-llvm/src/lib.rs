//! The LLVM backend: [`alexc_kernel::Kernel`] → LLVM IR (through inkwell) →
//! `default<O3>` → native code, JIT-compiled in-process.
//!
//! Rendering is separate from compiling and loading (the tinygrad rule in
//! STYLE.md): [`emit_module`] is a pure translation of kernels into an LLVM
//! module, [`llvm_ir_text`] and [`asm_text`] render it (for `--emit` and
//! snapshot tests), and only [`JitModule`] compiles and loads code.
//!
//! # Calling convention
//!
//! Every kernel `k` becomes an external function
//! `void k(ptr args)`, i.e. `extern "C" fn(args: *const *mut u8)`: `args[i]`
//! is the base pointer of the kernel's `i`-th parameter buffer (its `Param`
//! buffers in declaration order). The wrapper loads the pointers and calls an
//! internal, always-inlined `k.body(ptr noalias b0, ptr noalias b1, …)`; the
//! per-buffer parameters carry `noalias nocapture align(elem)
//! dereferenceable(bytes)` (and `readonly` when the kernel never stores to
//! the buffer), and inlining turns `noalias` into scoped alias metadata, so
//! the optimizer keeps the no-aliasing facts while callers see one uniform
//! signature. Those attributes are promises: [`JitModule::call`] checks every
//! buffer's dtype and length against the kernel's declarations before it
//! calls, and Rust's `&mut` borrows make the buffers disjoint.
//!
//! # Floating point
//!
//! Exactly one fast-math flag is set: `contract`, on every `fadd`, `fsub`,
//! `fmul`, `fdiv` and `fneg`, and `Fma` becomes `llvm.fmuladd.f32` (fuse when
//! profitable). The kernel IR allows `a·b + c` to be contracted and nothing
//! else, so no `nnan`/`ninf`/`nsz`/`afn`: results stay IEEE apart from FMA
//! rounding. Reductions inside `Vectorized` loops may be reassociated (the
//! IR allows it there only); we get that without a flag, because a loop that
//! carries an explicit `llvm.loop.vectorize.enable` + `width` hint allows
//! the loop vectorizer to reorder its floating-point reduction, while serial
//! loops keep their sequential order.
//!
//! # Loops
//!
//! - `Serial`: a plain counted loop (phi in the header, backedge in a latch).
//! - `Unrolled`: the same loop with `llvm.loop.unroll.full` metadata.
//! - `Vectorized { width }`: the scalar loop with `llvm.loop.vectorize.enable`,
//!   `llvm.loop.vectorize.width = width` and `llvm.loop.parallel_accesses`;
//!   every buffer access inside a vectorized loop carries the access group,
//!   which is sound because the kernel IR forbids an iteration to read what
//!   another iteration of the same loop writes. We chose loop metadata over
//!   emitting explicit vector code: LLVM's vectorizer already handles
//!   remainders (scalar epilogue), strided and masked accesses, reductions,
//!   and picks the instructions for the host (AVX-512, AVX2, NEON), which an
//!   explicit emitter would have to re-implement per construct.
//! - `Parallel`: the loop body is outlined into `k.parN(ptr ctx, i64 begin,
//!   i64 end)`, which receives the buffer pointers and the values of every
//!   variable in scope through `ctx` (an array of 8-byte slots on the
//!   caller's stack), and the kernel calls the Rust-provided
//!   `alexc_parallel_for(body, ctx, n)` ([`parallel`]), which splits `0..n`
//!   across [`threads`] scoped workers. Locals used inside the body are
//!   allocated in the outlined function, so each worker has its own.
//!
//! # Other lowering
//!
//! Index arithmetic is i64 with floor division/remainder (`sdiv`/`srem` plus a
//! sign fix-up, or `udiv`/`urem` when the operand is provably non-negative);
//! addresses are row-major `((i0·d1 + i1)·d2 + …)` in-bounds GEPs; `LoadOr`
//! branches around the load (the vectorizer turns that into a masked load);
//! `Select` is `select`; scalar variables are allocas (mem2reg makes them
//! SSA); locals are 64-byte-aligned allocas in the function's entry block;
//! f32 → i64 casts use `llvm.fptosi.sat` (Rust's saturating `as`).

mod emit;
mod error;
mod jit;
pub mod parallel;
mod target;

pub use emit::{asm_text, emit_module, llvm_ir_text, optimize};
pub use error::LlvmError;
pub use jit::{BufferArg, JitModule};
pub use parallel::{set_threads, threads};
pub use target::Target;

/// Re-exported so callers can create the [`inkwell::context::Context`] that
/// [`emit_module`] builds into.
pub use inkwell;
