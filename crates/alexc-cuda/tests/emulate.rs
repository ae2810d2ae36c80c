//! The CUDA emulator's own semantics, on hand-written CUDA C: barriers
//! order a block's threads, `__shared__` memory is one per block, races
//! inside a barrier phase and divergent barriers are caught, and grid-stride
//! loops cover every iteration however the blocks are spread over threads.
#![allow(unsafe_code)]

use alexc_cuda::render::{CudaKernel, Launch, Param};
use alexc_cuda::{CudaEmulator, Mapping};
use alexc_kernel::{Access, DType};

fn emulator() -> Option<CudaEmulator> {
    alexc_cuda::emulate::emulator_or_skip()
}

fn param(name: &str, elements: usize, access: Access) -> Param {
    Param {
        name: name.into(),
        dtype: DType::F32,
        elements,
        access,
    }
}

/// A kernel of one launch `{name}_l0` with parameters `x` (read) and `y`
/// (written).
fn kernel(name: &str, body: &str, mapping: Mapping, n: usize) -> CudaKernel {
    CudaKernel {
        name: name.into(),
        source: format!(
            "extern \"C\" __global__ void __launch_bounds__(256) {name}_l0(const float* __restrict__ x, float* __restrict__ y) {{\n{body}\n}}\n"
        ),
        launches: vec![Launch {
            entry: format!("{name}_l0"),
            mapping,
            shared_bytes: 0,
        }],
        params: vec![param("x", n, Access::Read), param("y", n, Access::Write)],
    }
}

fn run(e: &CudaEmulator, k: &CudaKernel, x: &mut [f32], y: &mut [f32]) -> Result<(), String> {
    let module = e.load(std::slice::from_ref(k)).map_err(|e| e.to_string())?;
    let pointers = [x.as_mut_ptr().cast::<u8>(), y.as_mut_ptr().cast::<u8>()];
    // SAFETY: both buffers have the elements the parameters declare.
    unsafe { module.launch(0, &pointers) }.map_err(|e| e.to_string())
}

const BLOCKS: u64 = 7;

#[test]
fn a_tree_reduction_through_shared_memory_sums_each_block() {
    let Some(e) = emulator() else { return };
    // Each block sums its 256 inputs by halving through shared memory, a
    // barrier between steps; thread 0 writes the sum.
    let body = r"
  __shared__ float s[256];
  for (int b = blockIdx.x; b < 7; b += gridDim.x) {
    s[threadIdx.x] = x[b * 256 + threadIdx.x];
    __syncthreads();
    for (int half = 128; half > 0; half /= 2) {
      if (threadIdx.x < half) s[threadIdx.x] += s[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) y[b] = s[0];
    __syncthreads();
  }";
    let k = kernel(
        "tree",
        body,
        Mapping::Blocks {
            blocks: BLOCKS,
            threads: 256,
        },
        256 * BLOCKS as usize,
    );
    let mut x: Vec<f32> = (0..256 * BLOCKS as usize)
        .map(|i| (i % 251) as f32)
        .collect();
    let mut y = vec![f32::NAN; 256 * BLOCKS as usize];
    run(&e, &k, &mut x, &mut y).expect("runs");
    for b in 0..BLOCKS as usize {
        let want: f32 = x[b * 256..(b + 1) * 256].iter().sum();
        assert_eq!(y[b], want, "block {b}");
    }
}

#[test]
fn a_race_inside_a_barrier_phase_changes_the_result() {
    let Some(e) = emulator() else { return };
    // Every thread reads its neighbour's shared slot without a barrier in
    // between: on a GPU the value depends on scheduling. The emulator's
    // alternating thread order makes it wrong on some blocks.
    let body = r"
  __shared__ float s[256];
  for (int b = blockIdx.x; b < 7; b += gridDim.x) {
    s[threadIdx.x] = x[b * 256 + threadIdx.x];
    y[b * 256 + threadIdx.x] = s[(threadIdx.x + 1) % 256];
    __syncthreads();
  }";
    let n = 256 * BLOCKS as usize;
    let k = kernel(
        "racy",
        body,
        Mapping::Blocks {
            blocks: BLOCKS,
            threads: 256,
        },
        n,
    );
    let mut x: Vec<f32> = (0..n).map(|i| i as f32 + 1.0).collect();
    let mut y = vec![f32::NAN; n];
    run(&e, &k, &mut x, &mut y).expect("runs");
    let input = x.clone();
    let want = |i: usize| input[(i / 256) * 256 + (i % 256 + 1) % 256];
    let wrong = (0..n).filter(|&i| y[i] != want(i)).count();
    assert!(wrong > 0, "the race went unnoticed");
    // With the barrier it is correct on every block.
    let fixed = body.replace("    y[b * 256", "    __syncthreads();\n    y[b * 256");
    let k = kernel(
        "fixed",
        &fixed,
        Mapping::Blocks {
            blocks: BLOCKS,
            threads: 256,
        },
        n,
    );
    run(&e, &k, &mut x, &mut y).expect("runs");
    assert!((0..n).all(|i| y[i] == want(i)));
}

#[test]
fn a_barrier_that_some_threads_skip_is_an_error() {
    let Some(e) = emulator() else { return };
    let body = r"
  if (threadIdx.x < 10) return;
  __syncthreads();
  y[threadIdx.x] = x[threadIdx.x];";
    let k = kernel(
        "divergent",
        body,
        Mapping::Blocks {
            blocks: 1,
            threads: 256,
        },
        256,
    );
    let (mut x, mut y) = (vec![1.0; 256], vec![0.0; 256]);
    let err = run(&e, &k, &mut x, &mut y).expect_err("divergent barrier");
    assert!(err.contains("not every thread"), "{err}");
}

#[test]
fn flat_launches_cover_every_iteration_once() {
    let Some(e) = emulator() else { return };
    // 1000 iterations over ⌈1000/256⌉ blocks, grid-stride.
    let body = r"
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < 1000; i += gridDim.x * blockDim.x) {
    y[i] = x[i] * 2.0f + 1.0f;
  }";
    let k = kernel("flat", body, Mapping::Flat { iterations: 1000 }, 1000);
    let mut x: Vec<f32> = (0..1000).map(|i| i as f32).collect();
    let mut y = vec![f32::NAN; 1000];
    run(&e, &k, &mut x, &mut y).expect("runs");
    assert!(y.iter().zip(&x).all(|(y, x)| *y == x * 2.0 + 1.0));
}

#[test]
fn a_compile_error_carries_the_compiler_log() {
    let Some(e) = emulator() else { return };
    let k = kernel("bad", "  y[0] = undeclared;", Mapping::Single, 1);
    let (mut x, mut y) = (vec![0.0], vec![0.0]);
    let err = run(&e, &k, &mut x, &mut y).expect_err("does not compile");
    assert!(err.contains("undeclared"), "{err}");
}
