//! The LLVM backend: [`alexc_kernel::Kernel`] → LLVM IR (through inkwell) →
//! `default<O3>` → native code, JIT-compiled in-process or written ahead of
//! time as an object file and shared library ([`aot`]).
//!
//! Rendering is separate from compiling and loading (the tinygrad rule in
//! STYLE.md): [`emit_module`] is a pure translation of kernels into an LLVM
//! module, [`llvm_ir_text`] and [`asm_text`] render it (for `--emit` and
//! snapshot tests), and only [`JitModule`] and [`write_aot`] /
//! [`AotLibrary`] compile and load code.
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
//! `contract` is set on every `fadd`, `fsub`, `fmul`, `fdiv` and `fneg`, and
//! `Fma` becomes `llvm.fmuladd` (fuse when profitable). The kernel IR allows
//! `a·b + c` to be contracted, and sums inside a `Vectorized` loop to be
//! reassociated, and nothing else: so no `nnan`/`ninf`/`nsz`/`afn`, results
//! stay IEEE apart from FMA rounding, and `reassoc` appears only on the
//! float operations of a `Vectorized` loop that could not be widened (below),
//! where it lets LLVM's vectorizer keep per-lane partial sums of a
//! reduction. Serial loops keep their sequential order.
//!
//! # Loops
//!
//! - `Serial`: a plain counted loop (phi in the header, backedge in a latch).
//! - `Unrolled`: the same loop with `llvm.loop.unroll.full` metadata.
//! - `Vectorized { width }`: explicit vector code (`emit/widen.rs`) whenever
//!   [`alexc_kernel::vector::widenable`] accepts the body — lane-uniform
//!   control flow, no variable carried across iterations: a loop over
//!   chunks of `width` iterations whose body is emitted once over
//!   `<width x T>` values (unit-stride accesses become vector loads and
//!   stores, lane-invariant ones scalar loads, others gathers and scatters;
//!   `LoadOr` clamps and selects), then a scalar loop for the remainder.
//!   We used to rely on LLVM's loop vectorizer with `vectorize.enable` hints
//!   instead; whether it vectorized the GEMM micro-kernel well depended on
//!   the epilogue's shape (a plain store: 4–7× slower than with ReLU), so
//!   the vector code is now a property of the kernel IR. A loop that cannot
//!   be widened stays scalar with `llvm.loop.parallel_accesses` (every
//!   buffer access in it carries the access group: sound because the IR
//!   forbids an iteration to read what another iteration of the loop
//!   writes), and LLVM's cost model decides.
//! - `Parallel`: the loop body is outlined into `k.parN(ptr ctx, i64 begin,
//!   i64 end)`, which receives the buffer pointers and the values of every
//!   variable in scope through `ctx` (an array of 8-byte slots on the
//!   caller's stack), and the kernel calls the Rust-provided
//!   `alexc_parallel_for(body, ctx, n)` ([`parallel`]), which splits `0..n`
//!   across [`threads`] threads of a persistent pool. Locals used inside the
//!   body are allocated in the outlined function, so each worker has its
//!   own. (The JIT maps the symbol to the Rust function; an AOT library
//!   calls it through a pointer the loader installs, see [`aot`].)
//!
//! # Other lowering
//!
//! Index arithmetic is i64 with floor division/remainder (`sdiv`/`srem` plus a
//! sign fix-up, or `udiv`/`urem` when the operand is provably non-negative);
//! addresses are row-major `((i0·d1 + i1)·d2 + …)` in-bounds GEPs; scalar
//! `LoadOr` branches around the load;
//! `Select` is `select`; scalar variables are allocas (mem2reg makes them
//! SSA); locals are 64-byte-aligned allocas in the function's entry block;
//! f32 → i64 casts use `llvm.fptosi.sat` (Rust's saturating `as`).

pub mod aot;
mod emit;
mod error;
mod jit;
/// The thread pool behind `Parallel` loops (the `alexc-threads` crate, shared
/// with the other CPU backends).
pub use alexc_threads as parallel;
mod target;

pub use aot::{write_aot, AotArtifacts, AotKernel, AotLibrary, AotManifest, AotParam, AotTarget};
pub use emit::{asm_text, emit_module, llvm_ir_text, optimize};
pub use error::LlvmError;
pub use jit::{ArgError, BufferArg, JitModule};
pub use parallel::{set_threads, threads};
pub use target::Target;

/// Re-exported so callers can create the [`inkwell::context::Context`] that
/// [`emit_module`] builds into.
pub use inkwell;
