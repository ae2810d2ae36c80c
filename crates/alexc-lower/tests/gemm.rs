//! Convolution and linear layers, forward and backward, fused and unfused:
//! each node is lowered, its kernels run in the kernel IR evaluator
//! (`exec::eval_node`) and the results compared with the reference
//! interpreter (`alexc_interp::ops`).
//!
//! Tolerance: the lowered kernels sum in a different order than the
//! reference (k-blocks of 256, vector-lane partial sums for `db`, FMA
//! contraction), so results differ by rounding only. With inputs in
//! [-1, 1] and sums of at most a few hundred terms, the error is bounded by
//! about `K · ε · max|term|`; we allow `1e-5 · max(1, max |reference|)`
//! per element, which is far below any indexing mistake (those are O(1)).

use alexc_interp::ops;
use alexc_ir::{
    Conv2dAttrs, Conv2dBackwardAttrs, DType, Graph, InputAttrs, LinearAttrs, LinearBackwardAttrs,
    LinearReluAttrs, NodeId, Op, Shape,
};
use alexc_kernel::HostBuffer;
use alexc_lower::exec::eval_node;
use alexc_lower::{lower_node, LowerOptions};
use alexc_tensor::Tensor;

const TOL: f32 = 1e-5;

/// Deterministic values in [-1, 1].
fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::new(shape.to_vec(), data(shape.iter().product(), seed)).expect("tensor")
}

/// A dropout mask with p = 0.5: values 0 or 2.
fn mask(shape: &[usize], seed: u64) -> Tensor<f32> {
    let t = tensor(shape, seed);
    t.map(|&v| if v < 0.0 { 0.0 } else { 2.0 })
}

/// A graph of one node applying `op` to inputs of the given tensors' shapes.
fn graph(op: Op, operands: &[&Tensor<f32>]) -> (Graph, NodeId) {
    let mut g = Graph::new("t", 1);
    let ids: Vec<_> = operands
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let attrs = InputAttrs {
                dtype: DType::F32,
                shape: Shape::new(t.shape().to_vec()),
            };
            g.add(format!("in{i}"), Op::Input(attrs), &[])
                .expect("input")
                .into()
        })
        .collect();
    let id = g.add("layer", op, &ids).expect("node");
    (g, id)
}

/// Lowers and runs `op`, checks every kernel, compares with `expected`.
fn check(op: Op, operands: &[&Tensor<f32>], expected: &[Tensor<f32>], options: &LowerOptions) {
    let (g, id) = graph(op, operands);
    let kernels = lower_node(&g, id, options).expect("lowering");
    assert!(!kernels.is_empty());
    for k in &kernels {
        assert_eq!(
            k.kernel.params().count(),
            k.args.len(),
            "kernel {}",
            k.kernel.name
        );
        if let Err(errors) = alexc_kernel::verify::verify(&k.kernel) {
            panic!(
                "kernel `{}` does not verify:\n{}\n{}",
                k.kernel.name,
                errors
                    .iter()
                    .map(|e| format!("  {e}\n"))
                    .collect::<String>(),
                alexc_kernel::print::to_text(&k.kernel)
            );
        }
    }
    let bufs: Vec<HostBuffer> = operands
        .iter()
        .map(|t| HostBuffer::F32(t.data().to_vec()))
        .collect();
    let results = eval_node(&g, id, &bufs, options).expect("evaluation");
    assert_eq!(results.len(), expected.len());
    for (i, (got, want)) in results.iter().zip(expected).enumerate() {
        let got = got.as_f32().expect("f32 result");
        let want = want.data();
        assert_eq!(got.len(), want.len(), "result {i}");
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (j, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= TOL * scale,
                "result {i}[{j}]: got {a}, want {b} (scale {scale})"
            );
        }
    }
}

fn conv_attrs(
    oc: usize,
    k: [usize; 2],
    s: usize,
    p: usize,
    d: usize,
    groups: usize,
    bias: bool,
) -> Conv2dAttrs {
    Conv2dAttrs {
        out_channels: oc,
        kernel: k,
        stride: [s, s],
        padding: [p, p],
        dilation: [d, d],
        groups,
        bias,
    }
}

/// Input shape and attributes: 1×1 tiles, remainders in every tile size,
/// stride, dilation, groups 1/2/3, batch 1 to 7, conv1 (11×11 stride 4 on
/// 3 channels, K = 363 > KC) and a 3×3 layer on 13×13 at reduced
/// channels. Between them and the option sets they take every work split
/// of `micro::plan` (see `plans_cover_every_work_split`): per-item packing
/// (serial), narrower column blocks (34×34 outputs), shared packing with M
/// split (batch 1), split-K with uneven chunks (7 images over 4 chunks).
fn conv_cases() -> Vec<([usize; 4], Conv2dAttrs)> {
    vec![
        ([1, 3, 6, 7], conv_attrs(4, [3, 3], 1, 1, 1, 1, true)),
        ([3, 4, 7, 8], conv_attrs(6, [3, 3], 2, 1, 2, 2, false)),
        ([7, 6, 6, 5], conv_attrs(9, [2, 3], 1, 1, 1, 3, true)),
        ([1, 3, 23, 23], conv_attrs(4, [11, 11], 4, 2, 1, 1, true)),
        ([1, 4, 13, 13], conv_attrs(14, [3, 3], 1, 1, 1, 2, true)),
        ([1, 2, 34, 34], conv_attrs(5, [3, 3], 1, 1, 1, 1, true)),
    ]
}

/// Vector widths 16 (the AVX-512 tiles: MR = 12 or 8, NR = 32), 8 and 4,
/// scalar code, with and without threads.
fn options() -> Vec<LowerOptions> {
    [(16, true), (8, true), (4, false), (1, true)]
        .into_iter()
        .map(|(vector_width, parallel)| LowerOptions {
            vector_width,
            parallel,
        })
        .collect()
}

#[test]
fn conv_forward_matches_reference() {
    for (i, (xs, a)) in conv_cases().into_iter().enumerate() {
        let x = tensor(&xs, 10 + i as u64);
        let w = tensor(
            &[a.out_channels, xs[1] / a.groups, a.kernel[0], a.kernel[1]],
            20 + i as u64,
        );
        let b = tensor(&[a.out_channels], 30 + i as u64);
        let mut operands = vec![&x, &w];
        if a.bias {
            operands.push(&b);
        }
        let bias = a.bias.then_some(&b);
        let plain = ops::conv2d(&x, &w, bias, &a).expect("reference");
        let fused = ops::conv_relu(&x, &w, bias, &a).expect("reference");
        for opts in &options() {
            check(
                Op::Conv2d(a.clone()),
                &operands,
                std::slice::from_ref(&plain),
                opts,
            );
            check(
                Op::ConvRelu(a.clone()),
                &operands,
                std::slice::from_ref(&fused),
                opts,
            );
        }
    }
}

#[test]
fn conv_backward_matches_reference() {
    for (i, (xs, a)) in conv_cases().into_iter().enumerate() {
        let x = tensor(&xs, 40 + i as u64);
        let w = tensor(
            &[a.out_channels, xs[1] / a.groups, a.kernel[0], a.kernel[1]],
            50 + i as u64,
        );
        let b = tensor(&[a.out_channels], 60 + i as u64);
        let y = ops::conv_relu(&x, &w, a.bias.then_some(&b), &a).expect("forward");
        let dy = tensor(y.shape(), 70 + i as u64);
        for (input_grad, opts) in [true, false]
            .into_iter()
            .flat_map(|g| options().into_iter().map(move |o| (g, o)))
        {
            let opts = &opts;
            let attrs = Conv2dBackwardAttrs {
                conv: a.clone(),
                input_grad,
            };
            let plain = ops::conv2d_backward(&x, &w, &dy, &attrs)
                .expect("reference")
                .into_results();
            check(
                Op::Conv2dBackward(attrs.clone()),
                &[&x, &w, &dy],
                &plain,
                opts,
            );
            let fused = ops::conv_relu_backward(&x, &w, &y, &dy, &attrs)
                .expect("reference")
                .into_results();
            check(
                Op::ConvReluBackward(attrs),
                &[&x, &w, &y, &dy],
                &fused,
                opts,
            );
        }
    }
}

/// `(batch, in, out)`: matrix–vector products at batch 1, 3 and 8 (the
/// largest), GEMMs from batch 9 (with M split over shared packing) and at
/// batch 32 (MR = 8 for `dx`); K = 300 > KC, K not a multiple of the
/// vector width, remainders everywhere.
const LINEAR_CASES: [(usize, usize, usize); 6] = [
    (1, 37, 19),
    (3, 300, 13),
    (3, 5, 7),
    (8, 21, 30),
    (9, 40, 70),
    (32, 19, 24),
];

#[test]
fn linear_forward_matches_reference() {
    for (i, &(n, fin, fout)) in LINEAR_CASES.iter().enumerate() {
        let x = tensor(&[n, fin], 80 + i as u64);
        let w = tensor(&[fout, fin], 90 + i as u64);
        let b = tensor(&[fout], 100 + i as u64);
        let m = mask(&[n, fout], 110 + i as u64);
        for (bias, opts) in [true, false]
            .into_iter()
            .flat_map(|b| options().into_iter().map(move |o| (b, o)))
        {
            let opts = &opts;
            let lin = LinearAttrs {
                out_features: fout,
                bias,
            };
            let bt = bias.then_some(&b);
            let mut operands = vec![&x, &w];
            if bias {
                operands.push(&b);
            }
            let want = ops::linear(&x, &w, bt, &lin).expect("reference");
            check(Op::Linear(lin.clone()), &operands, &[want], opts);
            let relu = LinearReluAttrs {
                linear: lin.clone(),
                dropout: false,
            };
            let want = ops::linear_relu(&x, &w, bt, None, &relu).expect("reference");
            check(Op::LinearRelu(relu), &operands, &[want], opts);
            let drop = LinearReluAttrs {
                linear: lin,
                dropout: true,
            };
            let want = ops::linear_relu(&x, &w, bt, Some(&m), &drop).expect("reference");
            operands.push(&m);
            check(Op::LinearRelu(drop), &operands, &[want], opts);
        }
    }
}

#[test]
fn linear_backward_matches_reference() {
    for (i, &(n, fin, fout)) in LINEAR_CASES.iter().enumerate() {
        let x = tensor(&[n, fin], 120 + i as u64);
        let w = tensor(&[fout, fin], 130 + i as u64);
        let b = tensor(&[fout], 140 + i as u64);
        let m = mask(&[n, fout], 150 + i as u64);
        let dy = tensor(&[n, fout], 160 + i as u64);
        for ((bias, input_grad, relu, dropout), opts) in [
            (true, true, false, false),
            (false, false, false, false),
            (true, true, true, false),
            (true, false, true, true),
        ]
        .into_iter()
        .flat_map(|f| options().into_iter().map(move |o| (f, o)))
        {
            let opts = &opts;
            let lin = LinearAttrs {
                out_features: fout,
                bias,
            };
            let y = ops::linear_relu(
                &x,
                &w,
                bias.then_some(&b),
                None,
                &LinearReluAttrs {
                    linear: lin.clone(),
                    dropout: false,
                },
            )
            .expect("forward");
            let attrs = LinearBackwardAttrs {
                linear: lin,
                input_grad,
                relu,
                dropout,
            };
            let (yo, mo) = (relu.then_some(&y), dropout.then_some(&m));
            let want = ops::linear_backward(&x, &w, yo, mo, &dy, &attrs)
                .expect("reference")
                .into_results();
            let mut operands = vec![&x, &w];
            operands.extend(yo);
            operands.extend(mo);
            operands.push(&dy);
            check(Op::LinearBackward(attrs), &operands, &want, opts);
        }
    }
}

/// The kernels of one op on inputs of `shapes`, lowered with `options`.
fn lowered(op: Op, shapes: &[&[usize]], options: &LowerOptions) -> Vec<alexc_kernel::Kernel> {
    let tensors: Vec<Tensor<f32>> = shapes.iter().map(|s| tensor(s, 1)).collect();
    let refs: Vec<&Tensor<f32>> = tensors.iter().collect();
    let (g, id) = graph(op, &refs);
    lower_node(&g, id, options)
        .expect("lowering")
        .into_iter()
        .map(|k| k.kernel)
        .collect()
}

/// The schedule's tile size `name` of the kernel whose name ends in `suffix`.
fn tile(kernels: &[alexc_kernel::Kernel], suffix: &str, name: &str) -> Option<usize> {
    let k = kernels
        .iter()
        .find(|k| k.name.ends_with(suffix))
        .expect("kernel");
    k.schedule
        .tiles
        .iter()
        .find(|(n, _)| n == name)
        .map(|&(_, v)| v)
}

/// The shapes of the correctness tests above do take each work split of
/// `micro::plan` (and the matrix–vector product), so that all of them are
/// checked against the reference.
#[test]
fn plans_cover_every_work_split() {
    let par = |vector_width| LowerOptions {
        vector_width,
        parallel: true,
    };
    let (cases, lin) = (conv_cases(), LINEAR_CASES);
    let conv = |i: usize, backward: bool, o: &LowerOptions| {
        let (xs, a) = &cases[i];
        let ws = [a.out_channels, xs[1] / a.groups, a.kernel[0], a.kernel[1]];
        let bias = [a.out_channels];
        let mut shapes: Vec<&[usize]> = vec![xs, &ws];
        if a.bias {
            shapes.push(&bias);
        }
        let k = lowered(Op::Conv2d(a.clone()), &shapes, o);
        if !backward {
            return k;
        }
        let b = tensor(&bias, 3);
        let y = ops::conv2d(&tensor(xs, 1), &tensor(&ws, 2), a.bias.then_some(&b), a)
            .expect("reference");
        let attrs = Conv2dBackwardAttrs {
            conv: a.clone(),
            input_grad: true,
        };
        lowered(Op::Conv2dBackward(attrs), &[xs, &ws, y.shape()], o)
    };
    // Batch 1: B packed once for items that split M (here M is a tile).
    let k = conv(4, false, &par(16));
    assert_eq!(tile(&k, "_fwd", "shared_b"), Some(1));
    // Many columns: per-item packing with narrower blocks, no M split.
    let k = conv(5, false, &par(8));
    assert_eq!(tile(&k, "_fwd", "nc"), Some(4 * 16));
    assert_eq!(tile(&k, "_fwd", "mi"), None);
    // A weight gradient of 7 images: split-K, 4 chunks (2, 2, 2, 1).
    let k = conv(2, true, &par(8));
    assert_eq!(tile(&k, "_dw", "split"), Some(4));
    // Without threads: one item, plain per-item packing.
    let serial = LowerOptions {
        vector_width: 16,
        parallel: false,
    };
    let k = conv(4, false, &serial);
    assert_eq!(tile(&k, "_fwd", "shared_b"), None);
    assert_eq!(tile(&k, "_fwd", "mi"), None);
    // Linear layers: a matrix–vector product up to batch 8, then a GEMM.
    let linear = |(n, fin, fout): (usize, usize, usize), o: &LowerOptions| {
        let attrs = LinearAttrs {
            out_features: fout,
            bias: true,
        };
        lowered(Op::Linear(attrs), &[&[n, fin], &[fout, fin], &[fout]], o)
    };
    assert!(tile(&linear(lin[3], &par(16)), "_fwd", "rows").is_some());
    let k = linear(lin[4], &par(16));
    assert_eq!(tile(&k, "_fwd", "rows"), None);
    assert_eq!(tile(&k, "_fwd", "shared_b"), Some(1));
    assert_eq!(tile(&k, "_fwd", "mi"), Some(12));
    // `dx` of batch 32 takes 8-row tiles (32 = 4 · 8, not 3 · 12 − 4).
    let (n, fin, fout) = lin[5];
    let attrs = LinearBackwardAttrs {
        linear: LinearAttrs {
            out_features: fout,
            bias: false,
        },
        input_grad: true,
        relu: false,
        dropout: false,
    };
    let k = lowered(
        Op::LinearBackward(attrs),
        &[&[n, fin], &[fout, fin], &[n, fout]],
        &par(16),
    );
    assert_eq!(tile(&k, "_dx", "mr"), Some(8));
}

/// The kernel IR of every kernel of node `op`, as text.
fn printed(op: Op, shapes: &[&[usize]], options: &LowerOptions) -> String {
    lowered(op, shapes, options)
        .iter()
        .map(alexc_kernel::print::to_text)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A matrix–vector product: 2 columns, 4 rows per item, a K remainder.
#[test]
fn linear_gemv_kernel_ir() {
    let attrs = LinearReluAttrs {
        linear: LinearAttrs {
            out_features: 10,
            bias: true,
        },
        dropout: true,
    };
    let options = LowerOptions {
        vector_width: 8,
        parallel: true,
    };
    insta::assert_snapshot!(printed(
        Op::LinearRelu(attrs),
        &[&[2, 21], &[10, 21], &[10], &[2, 10]],
        &options
    ));
}

/// A fused convolution backward of 3 images: `dz` staged, `dx` through a
/// zero-bordered `dz`, `dw` split over the images.
#[test]
fn conv_relu_backward_kernel_ir() {
    let attrs = Conv2dBackwardAttrs {
        conv: conv_attrs(6, [3, 3], 1, 1, 1, 1, true),
        input_grad: true,
    };
    let options = LowerOptions {
        vector_width: 8,
        parallel: true,
    };
    insta::assert_snapshot!(printed(
        Op::ConvReluBackward(attrs),
        &[&[3, 4, 5, 5], &[6, 4, 3, 3], &[3, 6, 5, 5], &[3, 6, 5, 5]],
        &options
    ));
}
