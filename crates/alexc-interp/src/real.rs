//! The float types the interpreter computes in.
//!
//! Every op is generic over [`Real`] so the same code runs in f32 — the
//! precision compiled backends are compared against — and in f64, which
//! finite-difference gradient checks need (in f32 the difference quotient
//! loses most of its digits to cancellation).
//!
//! `num_traits::Float` supplies the arithmetic; this trait only adds exact,
//! infallible conversions from and to f64, which the attribute structs use
//! for constants (`alpha`, `p`, …). `NumCast::from` returns an `Option`, and
//! an interpreter that `unwrap`s on every constant would hide real errors
//! among impossible ones.

use std::fmt::Debug;

/// A float type the interpreter can compute in: `f32` or `f64`.
pub trait Real: num_traits::Float + Send + Sync + Debug + Default + 'static {
    /// `x` rounded to this type.
    fn of(x: f64) -> Self;
    /// This value as f64 (exact for both implementations).
    fn as_f64(self) -> f64;
}

impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn as_f64(self) -> f64 {
        self
    }
}
