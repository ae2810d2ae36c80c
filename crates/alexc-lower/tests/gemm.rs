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
/// stride, dilation, groups 1/2/3, batch 1 and 3, conv1 (11×11 stride 4 on
/// 3 channels, K = 363 > KC) and a 3×3 layer on 13×13 at reduced channels.
fn conv_cases() -> Vec<([usize; 4], Conv2dAttrs)> {
    vec![
        ([1, 3, 6, 7], conv_attrs(4, [3, 3], 1, 1, 1, 1, true)),
        ([3, 4, 7, 8], conv_attrs(6, [3, 3], 2, 1, 2, 2, false)),
        ([2, 6, 6, 5], conv_attrs(9, [2, 3], 1, 1, 1, 3, true)),
        ([1, 3, 23, 23], conv_attrs(4, [11, 11], 4, 2, 1, 1, true)),
        ([1, 4, 13, 13], conv_attrs(14, [3, 3], 1, 1, 1, 2, true)),
    ]
}

fn options() -> Vec<LowerOptions> {
    vec![
        LowerOptions::default(),
        LowerOptions {
            vector_width: 4,
            parallel: false,
        },
    ]
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
        let opts = &options()[i % 2];
        check(Op::Conv2d(a.clone()), &operands, &[plain], opts);
        check(Op::ConvRelu(a.clone()), &operands, &[fused], opts);
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
        let opts = &options()[(i + 1) % 2];
        for input_grad in [true, false] {
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

/// `(batch, in, out)`: batch 1 and 3, K = 300 > KC, remainders everywhere.
const LINEAR_CASES: [(usize, usize, usize); 3] = [(1, 37, 19), (3, 300, 13), (3, 5, 7)];

#[test]
fn linear_forward_matches_reference() {
    for (i, &(n, fin, fout)) in LINEAR_CASES.iter().enumerate() {
        let x = tensor(&[n, fin], 80 + i as u64);
        let w = tensor(&[fout, fin], 90 + i as u64);
        let b = tensor(&[fout], 100 + i as u64);
        let m = mask(&[n, fout], 110 + i as u64);
        let opts = &options()[i % 2];
        for bias in [true, false] {
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
        let opts = &options()[(i + 1) % 2];
        for (bias, input_grad, relu, dropout) in [
            (true, true, false, false),
            (false, false, false, false),
            (true, true, true, false),
            (true, false, true, true),
        ] {
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
