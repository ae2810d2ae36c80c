//! The alexc kernel IR: one small loop-nest language that every graph op is
//! lowered to once, and that every backend (LLVM, Cranelift, CUDA)
//! translates. No backend implements an op by hand.
//!
//! A [`Kernel`] is a function over buffers: the parameters are buffers with
//! static shapes (the plan binds them to arena offsets, weights and inputs),
//! the locals are small scratch buffers (register tiles, packed panels). Its
//! body is a tree of [`Stmt`]s — loops, stores, `if`, scalar variables —
//! over two kinds of expressions:
//!
//! - [`Idx`]: 64-bit integer index arithmetic on loop variables and
//!   constants (affine terms, division and remainder by positive constants,
//!   min/max), from which the verifier proves every access in bounds;
//! - [`Expr`]: scalar values — f32 arithmetic (add, mul, fma, max, exp,
//!   pow, rsqrt, …), loads, scalar variables, `select`.
//!
//! Vector code comes from loop annotations, as in TVM's TIR: a loop of kind
//! [`LoopKind::Vectorized`] runs its body across `width` lanes at once, so a
//! scalar expression inside it is a vector expression, and a store of it a
//! vector store; backends emit vector instructions for it. Likewise
//! [`LoopKind::Parallel`] loops are split across the runtime's threads and
//! [`LoopKind::Unrolled`] loops are unrolled.
//!
//! A [`Schedule`] — tile sizes, vector width, loop order, parallel axis — is
//! data attached to each kernel: the lowering that produced the loops read
//! it, and a tuner can change it and lower again.
//!
//! Around the IR: [`mod@print`] renders the stable text form
//! ([`to_text`], used by snapshots and `--emit kernel`); [`fn@verify`]
//! checks every rule a backend relies on, including a proof that every load
//! and store is in bounds; [`fn@eval`] is the reference evaluator on
//! [`HostBuffer`]s, the oracle every backend is compared against.

pub mod abi;
pub mod eval;
mod ids;
mod kernel;
pub mod print;
pub mod vector;
pub mod verify;

pub use eval::{eval, EvalError, HostBuffer};
pub use ids::{BufId, VarId};
pub use kernel::stored_buffers;
pub use kernel::{
    Access, BinOp, BufferDecl, BufferKind, Cmp, Cond, DType, Expr, Idx, Kernel, KernelBuilder,
    LoopKind, Schedule, Stmt, UnOp, VarDecl,
};
pub use print::to_text;
pub use verify::{verify, VerifyError};
