//! Host tensors and the file formats they travel in.
//!
//! [`Tensor`] is a plain row-major array — the exchange type between files,
//! the reference interpreter and the runtime's host side. [`Weights`] is a
//! PyTorch-style state dict of f32 tensors. The formats:
//!
//! - `.npy` ([`read_npy`], [`write_npy`]) for test inputs, labels and
//!   reference outputs written by Python scripts;
//! - safetensors ([`load_weights`], [`save_weights`]) for weights and
//!   checkpoints; saving is atomic (temporary file, then rename).
//!
//! [`check_weights`] compares a state dict with what a model expects and
//! reports every difference in one error; [`init_parameters`] creates a
//! model's initial weights from the `Init` of each parameter node,
//! deterministically from a seed ([`rng`]).
//!
//! Nothing here panics on file contents: every malformed input is an error
//! that names the file and, where there is one, the tensor.

mod atomic;
mod init;
mod npy;
pub mod rng;
mod tensor;
mod weights;

pub use atomic::{write_atomic, write_atomic_with, AtomicWriteError, WriteStage};
pub use init::{expected_parameters, init_parameters, InitError};
pub use npy::{read_npy, write_npy, NpyError, NpyTensor};
pub use tensor::{element_count, Tensor, TensorError};
pub use weights::{
    check_weights, load_weights, save_weights, weights_to_bytes, SafetensorsFile, ShapeDifference,
    Weights, WeightsError, WeightsMismatch,
};
