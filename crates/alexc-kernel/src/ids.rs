//! Handles of the kernel IR. Their `Display` is their spelling in the text
//! form: buffers `b3`, scalar and loop variables `v7`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A buffer of a kernel: a parameter (`0..params.len()`) or a local.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BufId(pub u32);

impl fmt::Display for BufId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}", self.0)
    }
}

/// A variable: a loop index (i64) or a scalar variable (f32 or i64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VarId(pub u32);

impl fmt::Display for VarId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}
