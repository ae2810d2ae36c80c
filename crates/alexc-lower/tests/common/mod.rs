//! Shared harness of the lowering tests: build a one-op graph, lower it,
//! check every kernel, run it through `exec::eval_node` and compare with
//! the reference interpreter.
//!
//! Tolerances (one per kind of computation, used by every test file):
//!
//! - data movement, max, ReLU masks: **exact** — the kernels copy or select
//!   values, so any difference is a bug;
//! - sums, products, `exp`, `log`, `pow`: the kernels accumulate in the
//!   reference's order, so under the evaluator they are bit-identical too;
//!   the comparison still allows a relative error of `REL` (a few ulps,
//!   `1e-6`) plus `ABS` for values near zero, because the kernel IR lets
//!   backends contract `a·b + c` into an FMA and use their own `exp`/`pow`,
//!   each within about an ulp per operation, and these same helpers will be
//!   reused when backends run the suite.
#![allow(dead_code, clippy::unwrap_used)]

use alexc_ir::{DType, Graph, NodeId, Op, Shape, ValueId};
use alexc_kernel::eval::HostBuffer;
use alexc_lower::{exec::eval_node, lower_node, LowerOptions};
use alexc_tensor::Tensor;

/// Relative tolerance for computed (not copied) values.
pub const REL: f32 = 1e-6;
/// Absolute tolerance for computed values near zero.
pub const ABS: f32 = 1e-7;

/// The option sets every op is lowered with: vectors of 8 and 16 lanes,
/// threads on and off, and scalar code.
pub fn option_sets() -> Vec<LowerOptions> {
    vec![
        LowerOptions {
            vector_width: 8,
            parallel: true,
        },
        LowerOptions {
            vector_width: 16,
            parallel: false,
        },
        LowerOptions {
            vector_width: 1,
            parallel: true,
        },
        LowerOptions {
            vector_width: 4,
            parallel: true,
        },
    ]
}

/// An f32 graph input.
pub fn input(g: &mut Graph, name: &str, shape: &[usize]) -> ValueId {
    let id = g
        .add(
            name,
            Op::Input(alexc_ir::InputAttrs {
                dtype: DType::F32,
                shape: Shape::new(shape.to_vec()),
            }),
            &[],
        )
        .unwrap();
    ValueId::new(id, 0)
}

/// An i64 graph input.
pub fn input_i64(g: &mut Graph, name: &str, shape: &[usize]) -> ValueId {
    let id = g
        .add(
            name,
            Op::Input(alexc_ir::InputAttrs {
                dtype: DType::I64,
                shape: Shape::new(shape.to_vec()),
            }),
            &[],
        )
        .unwrap();
    ValueId::new(id, 0)
}

/// Deterministic pseudo-random values in `[-2, 2)`, quantized to multiples
/// of 1/8 when `coarse` (so that windows hold ties: the max-pool tie rule
/// gets exercised).
pub fn data(len: usize, seed: u64, coarse: bool) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            let v = u * 4.0 - 2.0;
            if coarse {
                (v * 8.0).round() / 8.0
            } else {
                v
            }
        })
        .collect()
}

pub fn tensor(shape: &[usize], data: &[f32]) -> Tensor<f32> {
    Tensor::new(shape.to_vec(), data.to_vec()).unwrap()
}

/// Lowers node `id` with `options`, checks each kernel, runs the node and
/// returns its results.
pub fn run(
    g: &Graph,
    id: NodeId,
    operands: &[HostBuffer],
    options: &LowerOptions,
) -> Vec<HostBuffer> {
    let kernels = lower_node(g, id, options).unwrap();
    assert!(!kernels.is_empty());
    for k in &kernels {
        check_kernel(&k.kernel, options);
    }
    eval_node(g, id, operands, options).unwrap()
}

/// Checks one kernel: the verifier accepts it, and its loop annotations
/// follow the options.
pub fn check_kernel(kernel: &alexc_kernel::Kernel, options: &LowerOptions) {
    if let Err(errors) = alexc_kernel::verify::verify(kernel) {
        panic!(
            "kernel `{}` does not verify:\n{}\n{}",
            kernel.name,
            errors
                .iter()
                .map(|e| format!("  {e}\n"))
                .collect::<String>(),
            alexc_kernel::print::to_text(kernel)
        );
    }
    let mut kinds = Vec::new();
    collect_kinds(&kernel.body, &mut kinds);
    for kind in kinds {
        match kind {
            alexc_kernel::LoopKind::Parallel => assert!(
                options.parallel,
                "{}: parallel loop without threads",
                kernel.name
            ),
            alexc_kernel::LoopKind::Vectorized { width } => {
                assert_eq!(width, options.vector_width, "{}", kernel.name)
            }
            _ => {}
        }
    }
}

fn collect_kinds(body: &[alexc_kernel::Stmt], out: &mut Vec<alexc_kernel::LoopKind>) {
    for s in body {
        match s {
            alexc_kernel::Stmt::For { kind, body, .. } => {
                out.push(*kind);
                collect_kinds(body, out);
            }
            alexc_kernel::Stmt::If {
                then, otherwise, ..
            } => {
                collect_kinds(then, out);
                collect_kinds(otherwise, out);
            }
            _ => {}
        }
    }
}

pub fn f32s(b: &HostBuffer) -> &[f32] {
    b.as_f32().expect("an f32 buffer")
}

/// Bit-for-bit equality (NaN equal to NaN).
pub fn assert_exact(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{what}: element {i}: got {g:?}, want {w:?}"
        );
    }
}

/// `|got − want| ≤ ABS + REL·|want|` elementwise (NaN equal to NaN).
pub fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= ABS + REL * w.abs();
        assert!(ok, "{what}: element {i}: got {g:?}, want {w:?}");
    }
}
