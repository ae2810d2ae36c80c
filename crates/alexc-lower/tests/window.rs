//! LRN, pooling, the fused LRN + max-pool and their gradients against the
//! reference interpreter, at odd sizes, with and without padding, with
//! strides smaller than, equal to and larger than the kernel, widths that
//! are not multiples of the vector width, LRN gradients over one and
//! several spatial tiles, and planes large enough that the kernels keep
//! their scratch in a workspace instead of locals.
//!
//! Max-pooling (forward and backward) is compared **exactly**: it selects
//! values and sums the selected gradients in the reference's order. Inputs
//! are quantized to multiples of 1/8 so that windows contain ties and the
//! first-maximum rule is exercised. Everything involving LRN and average
//! pooling (sums and a division) uses the common tolerance (`REL` = 1e-6
//! relative, `ABS` = 1e-7): the kernels sum in the reference's order, but
//! LRN computes `D^β` with square roots for β ∈ {0.75, 0.5} and multiplies
//! by `1/D^β` (a few ulp from the reference's `x / powf(D, β)`), and a
//! backend may contract into FMAs.

#![allow(
    clippy::unwrap_used,
    clippy::type_complexity,
    clippy::too_many_arguments
)]

mod common;

use alexc_interp::ops;
use alexc_ir::{
    AlphaConvention, AvgPool2dAttrs, Graph, LrnAttrs, LrnMaxPoolAttrs, Op, Pool2dAttrs,
};
use alexc_kernel::eval::HostBuffer;
use common::*;

/// (input shape, kernel, stride, padding)
const POOLS: &[([usize; 4], [usize; 2], [usize; 2], [usize; 2])] = &[
    ([2, 3, 13, 13], [3, 3], [2, 2], [0, 0]),
    ([1, 2, 9, 11], [3, 3], [2, 2], [1, 1]),
    ([2, 2, 7, 19], [2, 3], [1, 2], [1, 1]),
    ([1, 3, 8, 8], [2, 2], [3, 3], [0, 1]),
    ([1, 1, 5, 5], [5, 5], [1, 1], [2, 2]),
    ([3, 2, 4, 9], [1, 1], [1, 1], [0, 0]),
];

fn lrn_attrs(size: usize, convention: AlphaConvention) -> LrnAttrs {
    LrnAttrs {
        size,
        alpha: 1e-2,
        beta: 0.75,
        k: 2.0,
        alpha_convention: convention,
    }
}

const LRN_CASES: &[(&[usize], usize)] = &[
    (&[2, 7, 5, 5], 5),
    // 575 positions: the gradient's two spatial tiles, the second partial.
    (&[2, 4, 23, 25], 5),
    (&[1, 3, 4, 9], 5),
    (&[2, 6, 3, 3], 4),
    (&[1, 9, 11], 3),
    (&[3, 4], 1),
    (&[1, 2, 17, 1], 7),
];

/// Runs the one-operand op `op` on `xs` (and the two-operand gradient
/// `bw` on `xs`, `dys`) against references.
fn check_pair(
    shape: &[usize],
    op: Op,
    bw: Op,
    xs: &[f32],
    dys: &[f32],
    want: &[f32],
    want_dx: &[f32],
    exact: bool,
) {
    let mut g = Graph::new("t", shape[0]);
    let x = input(&mut g, "x", shape);
    let id = g.add("fwd", op.clone(), &[x]).unwrap();
    let out_shape = g.get(id).unwrap().outputs[0].shape.dims().to_vec();
    let dy = input(&mut g, "dy", &out_shape);
    let bid = g.add("bwd", bw.clone(), &[x, dy]).unwrap();
    let cmp = if exact { assert_exact } else { assert_close };
    for o in option_sets() {
        let got = run(&g, id, &[HostBuffer::F32(xs.to_vec())], &o);
        cmp(
            f32s(&got[0]),
            want,
            &format!("{} {shape:?} {o:?}", op.name()),
        );
        let got = run(
            &g,
            bid,
            &[HostBuffer::F32(xs.to_vec()), HostBuffer::F32(dys.to_vec())],
            &o,
        );
        cmp(
            f32s(&got[0]),
            want_dx,
            &format!("{} {shape:?} {o:?}", bw.name()),
        );
    }
}

#[test]
fn max_pool_and_its_gradient_match_the_reference_exactly() {
    for (s, &(shape, kernel, stride, padding)) in POOLS.iter().enumerate() {
        let attrs = Pool2dAttrs {
            kernel,
            stride,
            padding,
        };
        let xs = data(shape.iter().product(), s as u64, true);
        let x = tensor(&shape, &xs);
        let want = ops::max_pool2d(&x, &attrs).unwrap();
        let dys = data(want.len(), 50 + s as u64, false);
        let want_dx = ops::max_pool2d_backward(&x, &tensor(want.shape(), &dys), &attrs).unwrap();
        check_pair(
            &shape,
            Op::MaxPool2d(attrs.clone()),
            Op::MaxPool2dBackward(attrs),
            &xs,
            &dys,
            want.data(),
            want_dx.data(),
            true,
        );
    }
}

#[test]
fn max_pool_handles_nan_and_infinite_windows_like_the_reference() {
    let shape = [1, 1, 5, 6];
    let attrs = Pool2dAttrs {
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1, 1],
    };
    let mut xs = data(30, 3, true);
    xs[7] = f32::NAN;
    xs[0] = f32::NEG_INFINITY;
    xs[1] = f32::NEG_INFINITY;
    xs[6] = f32::NEG_INFINITY;
    xs[20] = f32::INFINITY;
    let x = tensor(&shape, &xs);
    let want = ops::max_pool2d(&x, &attrs).unwrap();
    let dys = data(want.len(), 9, false);
    let want_dx = ops::max_pool2d_backward(&x, &tensor(want.shape(), &dys), &attrs).unwrap();
    check_pair(
        &shape,
        Op::MaxPool2d(attrs.clone()),
        Op::MaxPool2dBackward(attrs),
        &xs,
        &dys,
        want.data(),
        want_dx.data(),
        true,
    );
}

#[test]
fn avg_pool_and_its_gradient_match_the_reference() {
    for count_include_pad in [true, false] {
        for (s, &(shape, kernel, stride, padding)) in POOLS.iter().enumerate() {
            let attrs = AvgPool2dAttrs {
                kernel,
                stride,
                padding,
                count_include_pad,
            };
            let xs = data(shape.iter().product(), s as u64, false);
            let x = tensor(&shape, &xs);
            let want = ops::avg_pool2d(&x, &attrs).unwrap();
            let dys = data(want.len(), 60 + s as u64, false);
            let want_dx =
                ops::avg_pool2d_backward(&x, &tensor(want.shape(), &dys), &attrs).unwrap();
            check_pair(
                &shape,
                Op::AvgPool2d(attrs.clone()),
                Op::AvgPool2dBackward(attrs),
                &xs,
                &dys,
                want.data(),
                want_dx.data(),
                false,
            );
        }
    }
}

#[test]
fn lrn_and_its_gradient_match_the_reference() {
    for convention in [AlphaConvention::DividedBySize, AlphaConvention::Absolute] {
        for (s, &(shape, size)) in LRN_CASES.iter().enumerate() {
            let attrs = lrn_attrs(size, convention);
            let xs: Vec<f32> = data(shape.iter().product(), s as u64, false)
                .iter()
                .map(|v| v * 4.0)
                .collect();
            let x = tensor(shape, &xs);
            let want = ops::lrn(&x, &attrs).unwrap();
            let dys = data(want.len(), 70 + s as u64, false);
            let want_dx = ops::lrn_backward(&x, &tensor(shape, &dys), &attrs).unwrap();
            check_pair(
                shape,
                Op::Lrn(attrs.clone()),
                Op::LrnBackward(attrs),
                &xs,
                &dys,
                want.data(),
                want_dx.data(),
                false,
            );
        }
    }
}

#[test]
fn fused_lrn_max_pool_and_its_gradient_match_the_unfused_reference() {
    for (s, &(shape, kernel, stride, padding)) in POOLS.iter().enumerate() {
        for size in [5, 2] {
            let attrs = LrnMaxPoolAttrs {
                lrn: lrn_attrs(size, AlphaConvention::DividedBySize),
                pool: Pool2dAttrs {
                    kernel,
                    stride,
                    padding,
                },
            };
            let xs = data(shape.iter().product(), s as u64, true);
            let x = tensor(&shape, &xs);
            let want = ops::lrn_max_pool(&x, &attrs).unwrap();
            let dys = data(want.len(), 80 + s as u64, false);
            let want_dx =
                ops::lrn_max_pool_backward(&x, &tensor(want.shape(), &dys), &attrs).unwrap();
            check_pair(
                &shape,
                Op::LrnMaxPool(attrs.clone()),
                Op::LrnMaxPoolBackward(attrs),
                &xs,
                &dys,
                want.data(),
                want_dx.data(),
                false,
            );
        }
    }
}

#[test]
fn lrn_powers_other_than_three_quarters_match_the_reference() {
    let shape = [2, 6, 3, 7];
    for beta in [0.5, 1.0, 0.6] {
        let attrs = LrnAttrs {
            beta,
            ..lrn_attrs(3, AlphaConvention::DividedBySize)
        };
        let xs: Vec<f32> = data(shape.iter().product(), 7, false)
            .iter()
            .map(|v| v * 4.0)
            .collect();
        let x = tensor(&shape, &xs);
        let want = ops::lrn(&x, &attrs).unwrap();
        let dys = data(want.len(), 77, false);
        let want_dx = ops::lrn_backward(&x, &tensor(&shape, &dys), &attrs).unwrap();
        check_pair(
            &shape,
            Op::Lrn(attrs.clone()),
            Op::LrnBackward(attrs),
            &xs,
            &dys,
            want.data(),
            want_dx.data(),
            false,
        );
    }
}

/// Whether the lowered kernels of node `id` bind a workspace.
fn uses_workspace(g: &Graph, id: alexc_ir::NodeId) -> bool {
    alexc_lower::lower_node(g, id, &Default::default())
        .unwrap()
        .iter()
        .any(|k| {
            k.args
                .iter()
                .any(|a| matches!(a, alexc_lower::Arg::Workspace { .. }))
        })
}

/// Planes whose scratch exceeds the kernels' local budget (1 MiB) get it
/// as workspace slices, one per parallel iteration; the results stay the
/// reference's. One option set only: the evaluator is slow at this size.
#[test]
fn large_planes_keep_scratch_in_a_workspace() {
    let options = alexc_lower::LowerOptions {
        vector_width: 8,
        parallel: true,
    };
    let pool = Pool2dAttrs {
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1, 1],
    };
    let cases: [(&[usize], Option<LrnAttrs>); 2] = [
        (&[1, 2, 560, 470], None),
        (
            &[1, 3, 150, 148],
            Some(lrn_attrs(5, AlphaConvention::DividedBySize)),
        ),
    ];
    for (shape, lrn) in cases {
        let (fwd, bwd) = match &lrn {
            None => (
                Op::MaxPool2d(pool.clone()),
                Op::MaxPool2dBackward(pool.clone()),
            ),
            Some(l) => {
                let attrs = LrnMaxPoolAttrs {
                    lrn: l.clone(),
                    pool: pool.clone(),
                };
                (Op::LrnMaxPool(attrs.clone()), Op::LrnMaxPoolBackward(attrs))
            }
        };
        let xs = data(shape.iter().product(), 11, true);
        let x = tensor(shape, &xs);
        let want = match &lrn {
            None => ops::max_pool2d(&x, &pool).unwrap(),
            Some(l) => ops::lrn_max_pool(
                &x,
                &LrnMaxPoolAttrs {
                    lrn: l.clone(),
                    pool: pool.clone(),
                },
            )
            .unwrap(),
        };
        let dys = data(want.len(), 12, false);
        let dy_t = tensor(want.shape(), &dys);
        let want_dx = match &lrn {
            None => ops::max_pool2d_backward(&x, &dy_t, &pool).unwrap(),
            Some(l) => ops::lrn_max_pool_backward(
                &x,
                &dy_t,
                &LrnMaxPoolAttrs {
                    lrn: l.clone(),
                    pool: pool.clone(),
                },
            )
            .unwrap(),
        };
        let mut g = Graph::new("t", shape[0]);
        let xv = input(&mut g, "x", shape);
        let id = g.add("fwd", fwd, &[xv]).unwrap();
        let dy = input(&mut g, "dy", want.shape());
        let bid = g.add("bwd", bwd, &[xv, dy]).unwrap();
        // The backward always needs a workspace here; the forward only
        // without LRN (its plane is the larger one).
        assert!(uses_workspace(&g, bid), "{shape:?}");
        assert_eq!(uses_workspace(&g, id), lrn.is_none(), "{shape:?}");
        let cmp = if lrn.is_some() {
            assert_close
        } else {
            assert_exact
        };
        let got = run(&g, id, &[HostBuffer::F32(xs.clone())], &options);
        cmp(f32s(&got[0]), want.data(), &format!("forward {shape:?}"));
        let got = run(
            &g,
            bid,
            &[HostBuffer::F32(xs.clone()), HostBuffer::F32(dys)],
            &options,
        );
        cmp(
            f32s(&got[0]),
            want_dx.data(),
            &format!("backward {shape:?}"),
        );
    }
}

/// The printed kernels of one node, lowered with the default options.
fn printed(g: &Graph, id: alexc_ir::NodeId) -> String {
    alexc_lower::lower_node(g, id, &Default::default())
        .unwrap()
        .iter()
        .map(|k| {
            format!(
                "{}\nargs: {:?}\n",
                alexc_kernel::print::to_text(&k.kernel),
                k.args
            )
        })
        .collect()
}

/// AlexNet's first normalization + pooling shape, shrunk: LRN size 5,
/// 3×3 windows, stride 2, a width that leaves a vector remainder.
#[test]
fn lrn_max_pool_kernel_ir() {
    let mut g = Graph::new("t", 2);
    let x = input(&mut g, "x", &[2, 8, 27, 27]);
    let attrs = LrnMaxPoolAttrs {
        lrn: LrnAttrs {
            size: 5,
            alpha: 1e-4,
            beta: 0.75,
            k: 2.0,
            alpha_convention: AlphaConvention::DividedBySize,
        },
        pool: Pool2dAttrs {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [0, 0],
        },
    };
    let id = g.add("norm1", Op::LrnMaxPool(attrs), &[x]).unwrap();
    insta::assert_snapshot!(printed(&g, id));
}

#[test]
fn max_pool_backward_kernel_ir() {
    let mut g = Graph::new("t", 2);
    let x = input(&mut g, "x", &[2, 4, 13, 13]);
    let dy = input(&mut g, "dy", &[2, 4, 6, 6]);
    let attrs = Pool2dAttrs {
        kernel: [3, 3],
        stride: [2, 2],
        padding: [0, 0],
    };
    let id = g
        .add("pool1_bw", Op::MaxPool2dBackward(attrs), &[x, dy])
        .unwrap();
    insta::assert_snapshot!(printed(&g, id));
}

/// The fused gradient: per sample, the channel walk with its two rings.
#[test]
fn lrn_max_pool_backward_kernel_ir() {
    let mut g = Graph::new("t", 2);
    let x = input(&mut g, "x", &[2, 8, 13, 13]);
    let dy = input(&mut g, "dy", &[2, 8, 6, 6]);
    let attrs = LrnMaxPoolAttrs {
        lrn: LrnAttrs {
            size: 5,
            alpha: 1e-4,
            beta: 0.75,
            k: 2.0,
            alpha_convention: AlphaConvention::DividedBySize,
        },
        pool: Pool2dAttrs {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [0, 0],
        },
    };
    let id = g
        .add("norm1_bw", Op::LrnMaxPoolBackward(attrs), &[x, dy])
        .unwrap();
    insta::assert_snapshot!(printed(&g, id));
}
