//! The reference interpreter: the oracle every alexc backend is tested
//! against.
//!
//! [`ops`] holds one plain, obviously correct function per graph IR op, with
//! PyTorch's semantics; [`run`] and [`run_all`] execute a whole graph on host
//! tensors, checking every bound input and weight first. Everything is
//! generic over [`Real`], so a graph runs in f32 (the precision backends are
//! compared in) or f64 (for finite-difference gradient checks).
//!
//! Training graphs run the same way: the backward and fused ops sit in
//! [`ops`] next to their forward ops, and [`train_step`] runs a training
//! graph and writes its optimizer updates back into the state
//! ([`apply_updates`]).
//!
//! Speed is a secondary goal, but a reference that takes minutes per image is
//! not used: convolution walks contiguous memory in its innermost loop and
//! independent output planes run in parallel (rayon), which brings full
//! AlexNet at batch 1 to about a second in an optimized build. Nothing here
//! trades clarity for more than that.

mod exec;
pub mod ops;
mod real;
mod train;

pub use exec::{
    node_dropout_mask, run, run_all, BindingErrors, BindingProblem, InterpError, Mode, Value,
};
pub use ops::{LayerGrads, OpError, SgdStep};
pub use real::Real;
pub use train::{apply_updates, train_step};
