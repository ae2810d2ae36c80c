//! Launch dimensions: how a rendered launch's grid and block derive from
//! the kernel. Shapes are static, so they are fixed when the kernel is
//! rendered; this module is the arithmetic, kept pure so it is tested on
//! any host.
//!
//! Every generated function loops grid-stride over its iterations, so any
//! grid is correct; the grid is chosen to cover the iterations once, capped
//! at what the hardware allows in `gridDim.x`.

use serde::{Deserialize, Serialize};

use crate::render::FLAT_BLOCK;

/// The largest `gridDim.x` (2³¹ − 1 on every architecture since sm_30).
pub const MAX_GRID_X: u64 = (1 << 31) - 1;

/// How a launch maps iterations to threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mapping {
    /// One thread per iteration of the top-level parallel loop.
    Flat { iterations: u64 },
    /// One block of `threads` per iteration (a GEMM tile).
    Blocks { blocks: u64, threads: u32 },
    /// Serial statements: one thread.
    Single,
}

/// Grid and block dimensions (x only; y and z are 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dims {
    pub grid: u32,
    pub block: u32,
}

impl Mapping {
    /// The grid and block to launch with; `None` when there is nothing to
    /// run (zero iterations).
    pub fn dims(&self) -> Option<Dims> {
        let (grid, block) = match *self {
            Mapping::Flat { iterations } => {
                (iterations.div_ceil(u64::from(FLAT_BLOCK)), FLAT_BLOCK)
            }
            Mapping::Blocks { blocks, threads } => (blocks, threads),
            Mapping::Single => (1, 1),
        };
        if grid == 0 || block == 0 {
            return None;
        }
        Some(Dims {
            grid: grid.min(MAX_GRID_X) as u32,
            block,
        })
    }

    /// Threads that do work (for reports).
    pub fn threads(&self) -> u64 {
        match *self {
            Mapping::Flat { iterations } => iterations,
            Mapping::Blocks { blocks, threads } => blocks * u64::from(threads),
            Mapping::Single => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_launches_cover_every_iteration_once() {
        let d = Mapping::Flat { iterations: 1000 }.dims();
        assert_eq!(
            d,
            Some(Dims {
                grid: 4,
                block: 256
            })
        );
        let d = Mapping::Flat { iterations: 1024 }.dims();
        assert_eq!(
            d,
            Some(Dims {
                grid: 4,
                block: 256
            })
        );
        let d = Mapping::Flat { iterations: 1 }.dims();
        assert_eq!(
            d,
            Some(Dims {
                grid: 1,
                block: 256
            })
        );
        assert_eq!(Mapping::Flat { iterations: 0 }.dims(), None);
    }

    #[test]
    fn huge_grids_are_capped_and_rely_on_the_grid_stride_loop() {
        let d = Mapping::Flat {
            iterations: u64::from(FLAT_BLOCK) * (MAX_GRID_X + 10),
        }
        .dims();
        assert_eq!(
            d,
            Some(Dims {
                grid: MAX_GRID_X as u32,
                block: 256
            })
        );
    }

    #[test]
    fn block_launches_have_one_block_per_tile() {
        let d = Mapping::Blocks {
            blocks: 12288,
            threads: 256,
        }
        .dims();
        assert_eq!(
            d,
            Some(Dims {
                grid: 12288,
                block: 256
            })
        );
        assert_eq!(Mapping::Single.dims(), Some(Dims { grid: 1, block: 1 }));
    }
}
