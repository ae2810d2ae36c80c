//! Each op against small cases whose expected values are computed by hand
//! (the arithmetic is written out next to each number; every number was also
//! confirmed against PyTorch 2.x in float64 when the test was written).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use alexc_interp::ops;
use alexc_interp::OpError;
use alexc_ir::{
    AlphaConvention, AvgPool2dAttrs, ConcatAttrs, Conv2dAttrs, DropoutAttrs, LinearAttrs, LrnAttrs,
    Pool2dAttrs, SoftmaxAttrs, SplitAttrs,
};
use alexc_tensor::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn t(shape: &[usize], data: &[f64]) -> Tensor<f64> {
    Tensor::new(shape.to_vec(), data.to_vec()).unwrap()
}

fn range(shape: &[usize], start: f64) -> Tensor<f64> {
    Tensor::from_flat_fn(shape.to_vec(), |i| start + i as f64).unwrap()
}

#[track_caller]
fn assert_close(got: &Tensor<f64>, shape: &[usize], want: &[f64]) {
    assert_eq!(got.shape(), shape, "shape");
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.data().iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-12 * w.abs().max(1.0),
            "element {i}: got {g}, want {w}"
        );
    }
}

fn conv_attrs(out: usize, kernel: usize, stride: usize, padding: usize) -> Conv2dAttrs {
    Conv2dAttrs {
        out_channels: out,
        kernel: [kernel; 2],
        stride: [stride; 2],
        padding: [padding; 2],
        dilation: [1, 1],
        groups: 1,
        bias: false,
    }
}

fn lrn_attrs(size: usize, alpha: f64, beta: f64, k: f64) -> LrnAttrs {
    LrnAttrs {
        size,
        alpha,
        beta,
        k,
        alpha_convention: AlphaConvention::DividedBySize,
    }
}

// ---------------------------------------------------------------- conv2d

#[test]
fn conv2d_stride_2_padding_1() {
    // x = 1..16 as 4×4, w = [[1, 2], [3, 4]], bias 0.5, stride 2, padding 1:
    // output 3×3; window (i, j) covers rows 2i-1..2i, cols 2j-1..2j.
    let x = range(&[1, 1, 4, 4], 1.0);
    let w = t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let b = t(&[1], &[0.5]);
    let attrs = Conv2dAttrs {
        bias: true,
        ..conv_attrs(1, 2, 2, 1)
    };
    let y = ops::conv2d(&x, &w, Some(&b), &attrs).unwrap();
    #[rustfmt::skip]
    let want = [
        4.0 * 1.0 + 0.5,                        // only w11·x00
        3.0 * 2.0 + 4.0 * 3.0 + 0.5,            // w10·x01 + w11·x02
        3.0 * 4.0 + 0.5,                        // w10·x03
        2.0 * 5.0 + 4.0 * 9.0 + 0.5,            // w01·x10 + w11·x20
        6.0 + 2.0 * 7.0 + 3.0 * 10.0 + 4.0 * 11.0 + 0.5,
        8.0 + 3.0 * 12.0 + 0.5,                 // w00·x13 + w10·x23
        2.0 * 13.0 + 0.5,                       // w01·x30
        14.0 + 2.0 * 15.0 + 0.5,                // w00·x31 + w01·x32
        16.0 + 0.5,                             // w00·x33
    ];
    assert_close(&y, &[1, 1, 3, 3], &want);
    assert_eq!(want, [4.5, 18.5, 12.5, 46.5, 94.5, 44.5, 26.5, 44.5, 16.5]);
}

#[test]
fn conv2d_dilation_reads_spread_taps() {
    // 3×3 input 1..9, 2×2 kernel with dilation 2 touches the four corners.
    let x = range(&[1, 1, 3, 3], 1.0);
    let w = t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let attrs = Conv2dAttrs {
        dilation: [2, 2],
        ..conv_attrs(1, 2, 1, 0)
    };
    let y = ops::conv2d(&x, &w, None, &attrs).unwrap();
    assert_close(
        &y,
        &[1, 1, 1, 1],
        &[1.0 * 1.0 + 2.0 * 3.0 + 3.0 * 7.0 + 4.0 * 9.0],
    );
}

#[test]
fn conv2d_groups_do_not_mix_channels() {
    // Two channels [2, 3], two groups, 1×1 kernels [10, 100]:
    // channel 0 only sees input 0, channel 1 only input 1.
    let x = t(&[1, 2, 1, 1], &[2.0, 3.0]);
    let w = t(&[2, 1, 1, 1], &[10.0, 100.0]);
    let attrs = Conv2dAttrs {
        groups: 2,
        ..conv_attrs(2, 1, 1, 0)
    };
    let y = ops::conv2d(&x, &w, None, &attrs).unwrap();
    assert_close(&y, &[1, 2, 1, 1], &[20.0, 300.0]);
    // With one group, out 0 = 10·2 + 20·3 and out 1 = 30·2 + 40·3.
    let w = t(&[2, 2, 1, 1], &[10.0, 20.0, 30.0, 40.0]);
    let y = ops::conv2d(&x, &w, None, &conv_attrs(2, 1, 1, 0)).unwrap();
    assert_close(&y, &[1, 2, 1, 1], &[80.0, 180.0]);
}

#[test]
fn conv2d_batches_are_independent_and_rectangular_attrs_work() {
    // Batch of 2, non-square kernel 1×2, stride (1, 2), padding (0, 1).
    // Row r of sample n: values v = 100n + 3r + c, c = 0..3, padded to
    // [0, v0, v1, v2, 0]; windows start at padded columns 0 and 2.
    let x = Tensor::from_fn(vec![2, 1, 2, 3], |i| (100 * i[0] + 3 * i[2] + i[3]) as f64).unwrap();
    let w = t(&[1, 1, 1, 2], &[1.0, 10.0]);
    let attrs = Conv2dAttrs {
        out_channels: 1,
        kernel: [1, 2],
        stride: [1, 2],
        padding: [0, 1],
        dilation: [1, 1],
        groups: 1,
        bias: false,
    };
    let y = ops::conv2d(&x, &w, None, &attrs).unwrap();
    // window 0: 1·0 + 10·v0; window 1: 1·v1 + 10·v2
    let row = |v0: f64| [10.0 * v0, (v0 + 1.0) + 10.0 * (v0 + 2.0)];
    let want: Vec<f64> = [0.0, 3.0, 100.0, 103.0].into_iter().flat_map(row).collect();
    assert_close(&y, &[2, 1, 2, 2], &want);
}

#[test]
fn conv2d_rejects_bad_operands() {
    let x = range(&[1, 2, 4, 4], 0.0);
    let w = range(&[3, 2, 3, 3], 0.0);
    let ok = conv_attrs(3, 3, 1, 0);
    assert!(ops::conv2d(&x, &w, None, &ok).is_ok());
    let bad = |r: Result<Tensor<f64>, OpError>| matches!(r, Err(OpError::Invalid { .. }));
    assert!(bad(ops::conv2d(&range(&[2, 4, 4], 0.0), &w, None, &ok)));
    assert!(bad(ops::conv2d(&range(&[1, 3, 4, 4], 0.0), &w, None, &ok)));
    assert!(bad(ops::conv2d(&x, &w, None, &conv_attrs(4, 3, 1, 0))));
    assert!(bad(ops::conv2d(&x, &w, None, &conv_attrs(3, 5, 1, 0))));
    assert!(bad(ops::conv2d(
        &x,
        &w,
        None,
        &Conv2dAttrs {
            groups: 2,
            ..ok.clone()
        }
    )));
    assert!(bad(ops::conv2d(
        &x,
        &w,
        None,
        &Conv2dAttrs {
            bias: true,
            ..ok.clone()
        }
    )));
    assert!(bad(ops::conv2d(&x, &w, Some(&range(&[3], 0.0)), &ok)));
    let with_bias = Conv2dAttrs {
        bias: true,
        ..ok.clone()
    };
    assert!(bad(ops::conv2d(
        &x,
        &w,
        Some(&range(&[2], 0.0)),
        &with_bias
    )));
    assert!(bad(ops::conv2d(
        &x,
        &w,
        None,
        &Conv2dAttrs {
            stride: [0, 1],
            ..ok.clone()
        }
    )));
    // Kernel larger than the padded input.
    let big = range(&[3, 2, 7, 7], 0.0);
    assert!(bad(ops::conv2d(&x, &big, None, &conv_attrs(3, 7, 1, 1))));
    assert!(ops::conv2d(&x, &big, None, &conv_attrs(3, 7, 1, 2)).is_ok());
}

// ---------------------------------------------------------------- relu

#[test]
fn relu_cases() {
    let x = t(&[5], &[-2.0, -0.0, 0.0, 0.5, 3.0]);
    assert_close(&ops::relu(&x), &[5], &[0.0, 0.0, 0.0, 0.5, 3.0]);
    assert!(ops::relu(&t(&[1], &[f64::NAN])).data()[0].is_nan());
}

// ---------------------------------------------------------------- lrn

#[test]
fn lrn_size_3_on_five_channels() {
    // x = [1, 2, 3, 4, 5] across channels; size 3, α = 0.3 (÷ size → 0.1),
    // β = 0.5, k = 1. Window of c is [c-1, c+1] clipped.
    let x = t(&[1, 5, 1, 1], &[1.0, 2.0, 3.0, 4.0, 5.0]);
    let y = ops::lrn(&x, &lrn_attrs(3, 0.3, 0.5, 1.0)).unwrap();
    let want = [
        1.0 / (1.0 + 0.1 * (1.0 + 4.0f64)).sqrt(),         // [0, 1]
        2.0 / (1.0 + 0.1 * (1.0 + 4.0 + 9.0f64)).sqrt(),   // [0, 2]
        3.0 / (1.0 + 0.1 * (4.0 + 9.0 + 16.0f64)).sqrt(),  // [1, 3]
        4.0 / (1.0 + 0.1 * (9.0 + 16.0 + 25.0f64)).sqrt(), // [2, 4]
        5.0 / (1.0 + 0.1 * (16.0 + 25.0f64)).sqrt(),       // [3, 4]
    ];
    assert_close(&y, &[1, 5, 1, 1], &want);
    // The same numbers, as printed by torch.nn.LocalResponseNorm(3, 0.3, 0.5, 1.0).
    let torch = [
        0.8164965809277261,
        1.2909944487358056,
        1.5191090506255,
        1.6329931618554523,
        2.214037213850238,
    ];
    assert_close(&y, &[1, 5, 1, 1], &torch);
}

#[test]
fn lrn_even_size_window_is_asymmetric() {
    // size 4: window [c-2, c+1]; α = 0.4 → 0.1, β = 0.75, k = 2.
    let x = t(&[1, 5, 1, 1], &[1.0, 2.0, 3.0, 4.0, 5.0]);
    let y = ops::lrn(&x, &lrn_attrs(4, 0.4, 0.75, 2.0)).unwrap();
    let f = |a: f64, sum: f64| a / (2.0 + 0.1 * sum).powf(0.75);
    let want = [
        f(1.0, 1.0 + 4.0),               // [0, 1]
        f(2.0, 1.0 + 4.0 + 9.0),         // [0, 2]
        f(3.0, 1.0 + 4.0 + 9.0 + 16.0),  // [0, 3]
        f(4.0, 4.0 + 9.0 + 16.0 + 25.0), // [1, 4]
        f(5.0, 9.0 + 16.0 + 25.0),       // [2, 4]
    ];
    assert_close(&y, &[1, 5, 1, 1], &want);
    let torch = [
        0.5029733718731741,
        0.7987682757159081,
        0.8972092687327323,
        0.8915304921761186,
        1.1618404012127042,
    ];
    assert_close(&y, &[1, 5, 1, 1], &torch);
}

#[test]
fn lrn_alexnet_parameters_and_conventions() {
    // AlexNet's LRN(5, 1e-4, 0.75, k=2) on activations of a realistic scale.
    let x = t(&[1, 5, 1, 1], &[100.0, 200.0, 300.0, 400.0, 500.0]);
    let y = ops::lrn(&x, &lrn_attrs(5, 1e-4, 0.75, 2.0)).unwrap();
    let f = |a: f64, sum: f64| a / (2.0 + 2e-5 * sum).powf(0.75);
    let want = [
        f(100.0, 1e4 + 4e4 + 9e4),
        f(200.0, 1e4 + 4e4 + 9e4 + 16e4),
        f(300.0, 1e4 + 4e4 + 9e4 + 16e4 + 25e4),
        f(400.0, 4e4 + 9e4 + 16e4 + 25e4),
        f(500.0, 9e4 + 16e4 + 25e4),
    ];
    assert_close(&y, &[1, 5, 1, 1], &want);
    let torch = [
        30.83678352051188,
        42.04482076268573,
        43.81912897190635,
        59.108850562698485,
        77.55040492517497,
    ];
    assert_close(&y, &[1, 5, 1, 1], &torch);

    // The paper's convention multiplies the sum by α itself.
    let abs = LrnAttrs {
        alpha_convention: AlphaConvention::Absolute,
        ..lrn_attrs(5, 1e-4, 0.75, 2.0)
    };
    let y = ops::lrn(&x, &abs).unwrap();
    assert!((y.data()[0] - 100.0 / (2.0 + 1e-4 * 14e4f64).powf(0.75)).abs() < 1e-12);
}

#[test]
fn lrn_normalizes_each_pixel_and_sample_separately() {
    // [2, 2, 1, 2]: the window runs over channels only.
    let x = range(&[2, 2, 1, 2], 1.0);
    let y = ops::lrn(&x, &lrn_attrs(2, 2.0, 1.0, 1.0)).unwrap();
    // size 2: window [c-1, c]; α' = 1. Sample 0 pixel 0: channels (1, 3).
    let want = [
        1.0 / (1.0 + 1.0),        // c0 p0: [1]
        2.0 / (1.0 + 4.0),        // c0 p1: [2]
        3.0 / (1.0 + 1.0 + 9.0),  // c1 p0: [1, 3]
        4.0 / (1.0 + 4.0 + 16.0), // c1 p1: [2, 4]
        5.0 / (1.0 + 25.0),
        6.0 / (1.0 + 36.0),
        7.0 / (1.0 + 25.0 + 49.0),
        8.0 / (1.0 + 36.0 + 64.0),
    ];
    assert_close(&y, &[2, 2, 1, 2], &want);
    assert!(ops::lrn(&x, &lrn_attrs(0, 1.0, 1.0, 1.0)).is_err());
    assert!(ops::lrn(&t(&[3], &[1.0, 2.0, 3.0]), &lrn_attrs(3, 1.0, 1.0, 1.0)).is_err());
}

// ---------------------------------------------------------------- pooling

#[test]
fn max_pool_padding_is_minus_infinity() {
    // All-negative input: zero padding would win every edge window.
    let x = range(&[1, 1, 3, 3], 1.0).map(|v| -v);
    let attrs = Pool2dAttrs {
        kernel: [2, 2],
        stride: [2, 2],
        padding: [1, 1],
    };
    let y = ops::max_pool2d(&x, &attrs).unwrap();
    // windows: {x00} {x01, x02} {x10, x20} {x11, x12, x21, x22}
    assert_close(&y, &[1, 1, 2, 2], &[-1.0, -2.0, -4.0, -5.0]);
}

#[test]
fn max_pool_overlapping_windows() {
    // AlexNet's 3×3 stride 2 pooling on a 5×5 plane: 2×2 output.
    let x = Tensor::from_fn(vec![1, 1, 5, 5], |i| ((i[2] * 7 + i[3] * 3) % 11) as f64).unwrap();
    // rows of x: [0 3 6 9 1] [7 10 2 5 8] [3 6 9 1 4] [10 2 5 8 0] [6 9 1 4 7]
    let y = ops::max_pool2d(
        &x,
        &Pool2dAttrs {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [0, 0],
        },
    )
    .unwrap();
    assert_close(&y, &[1, 1, 2, 2], &[10.0, 9.0, 10.0, 9.0]);
    // NaN propagates.
    let mut xn = x.clone();
    xn.data_mut()[0] = f64::NAN;
    let y = ops::max_pool2d(
        &xn,
        &Pool2dAttrs {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [0, 0],
        },
    )
    .unwrap();
    assert!(y.data()[0].is_nan() && !y.data()[1].is_nan());
}

#[test]
fn avg_pool_both_padding_conventions() {
    // 3×3 input 1..9, kernel 2, stride 2, padding 1; window sums:
    // {1} = 1, {2, 3} = 5, {4, 7} = 11, {5, 6, 8, 9} = 28.
    let x = range(&[1, 1, 3, 3], 1.0);
    let attrs = |count_include_pad| AvgPool2dAttrs {
        kernel: [2, 2],
        stride: [2, 2],
        padding: [1, 1],
        count_include_pad,
    };
    let y = ops::avg_pool2d(&x, &attrs(true)).unwrap();
    assert_close(
        &y,
        &[1, 1, 2, 2],
        &[1.0 / 4.0, 5.0 / 4.0, 11.0 / 4.0, 28.0 / 4.0],
    );
    let y = ops::avg_pool2d(&x, &attrs(false)).unwrap();
    assert_close(
        &y,
        &[1, 1, 2, 2],
        &[1.0 / 1.0, 5.0 / 2.0, 11.0 / 2.0, 28.0 / 4.0],
    );
}

#[test]
fn pools_reject_bad_attrs() {
    let x = range(&[1, 1, 4, 4], 0.0);
    let over = Pool2dAttrs {
        kernel: [2, 2],
        stride: [1, 1],
        padding: [2, 2],
    };
    assert!(ops::max_pool2d(&x, &over).is_err());
    let zero = Pool2dAttrs {
        kernel: [2, 2],
        stride: [0, 1],
        padding: [0, 0],
    };
    assert!(ops::max_pool2d(&x, &zero).is_err());
    let big = AvgPool2dAttrs {
        kernel: [5, 5],
        stride: [1, 1],
        padding: [0, 0],
        count_include_pad: true,
    };
    assert!(ops::avg_pool2d(&x, &big).is_err());
    let flat = Pool2dAttrs {
        kernel: [1, 1],
        stride: [1, 1],
        padding: [0, 0],
    };
    assert!(ops::max_pool2d(&range(&[4, 4], 0.0), &flat).is_err());
}

// ---------------------------------------------------------------- flatten, linear

#[test]
fn flatten_keeps_row_major_order() {
    let x = range(&[2, 2, 1, 3], 0.0);
    let y = ops::flatten(&x).unwrap();
    assert_eq!(y.shape(), &[2, 6]);
    assert_eq!(y.data(), x.data());
    assert!(ops::flatten(&range(&[3], 0.0)).is_err());
}

#[test]
fn linear_is_x_w_transpose_plus_b() {
    // x = [[1, 2], [3, 4]], W = [[1, 0], [0, 1], [1, 1]], b = [0.5, 0, -1]
    let x = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let w = t(&[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    let b = t(&[3], &[0.5, 0.0, -1.0]);
    let y = ops::linear(
        &x,
        &w,
        Some(&b),
        &LinearAttrs {
            out_features: 3,
            bias: true,
        },
    )
    .unwrap();
    assert_close(&y, &[2, 3], &[1.5, 2.0, 2.0, 3.5, 4.0, 6.0]);
    let y = ops::linear(
        &x,
        &w,
        None,
        &LinearAttrs {
            out_features: 3,
            bias: false,
        },
    )
    .unwrap();
    assert_close(&y, &[2, 3], &[1.0, 2.0, 3.0, 3.0, 4.0, 7.0]);
    assert!(ops::linear(
        &x,
        &w,
        None,
        &LinearAttrs {
            out_features: 2,
            bias: false
        }
    )
    .is_err());
    let w3 = range(&[2, 3], 0.0);
    assert!(ops::linear(
        &x,
        &w3,
        None,
        &LinearAttrs {
            out_features: 2,
            bias: false
        }
    )
    .is_err());
}

// ---------------------------------------------------------------- dropout

#[test]
fn dropout_eval_is_identity_and_train_is_inverted() {
    let x = range(&[4, 250], 1.0);
    assert_eq!(ops::dropout(&x, None).unwrap(), x);

    let attrs = DropoutAttrs { p: 0.25 };
    let (y, mask) = ops::dropout_train(&x, &attrs, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
    let keep = 1.0 / 0.75;
    let mut dropped = 0;
    for ((&xv, &yv), &m) in x.data().iter().zip(y.data()).zip(mask.data()) {
        assert!(m == 0.0 || m == keep, "mask value {m}");
        assert_eq!(yv, xv * m);
        dropped += usize::from(m == 0.0);
    }
    // 1000 Bernoulli(0.25) draws: 250 ± 14 (one standard deviation).
    assert!((180..=320).contains(&dropped), "dropped {dropped}");

    // The same RNG state gives the same mask; in f32 too.
    let again: Tensor<f64> =
        ops::dropout_mask(x.shape(), &attrs, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
    assert_eq!(again, mask);
    let in_f32: Tensor<f32> =
        ops::dropout_mask(x.shape(), &attrs, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
    assert!(in_f32
        .data()
        .iter()
        .zip(mask.data())
        .all(|(&a, &b)| (a == 0.0) == (b == 0.0)));

    // p = 0 keeps everything unscaled; p outside [0, 1) is an error.
    let (y, _) = ops::dropout_train(
        &x,
        &DropoutAttrs { p: 0.0 },
        &mut ChaCha8Rng::seed_from_u64(1),
    )
    .unwrap();
    assert_eq!(y, x);
    assert!(ops::dropout_train(
        &x,
        &DropoutAttrs { p: 1.0 },
        &mut ChaCha8Rng::seed_from_u64(1)
    )
    .is_err());
    assert!(ops::dropout(&x, Some(&range(&[2], 0.0))).is_err());
}

// ---------------------------------------------------------------- softmax

#[test]
fn softmax_cases() {
    let e = [1.0f64.exp(), 2.0f64.exp(), 3.0f64.exp()];
    let s: f64 = e.iter().sum();
    let want = [e[0] / s, e[1] / s, e[2] / s];
    let y = ops::softmax(&t(&[1, 3], &[1.0, 2.0, 3.0]), &SoftmaxAttrs { axis: 1 }).unwrap();
    assert_close(&y, &[1, 3], &want);
    assert_close(
        &y,
        &[1, 3],
        &[0.09003057317038045, 0.2447284710547976, 0.6652409557748218],
    );
    // Shifting by 1000 would overflow exp without the max subtraction.
    let y = ops::softmax(
        &t(&[1, 3], &[1001.0, 1002.0, 1003.0]),
        &SoftmaxAttrs { axis: 1 },
    )
    .unwrap();
    assert_close(&y, &[1, 3], &want);
    // Along axis 0 of a 2×2: columns are normalized.
    let y = ops::softmax(
        &t(&[2, 2], &[0.0, 1.0, 0.0, 3.0]),
        &SoftmaxAttrs { axis: 0 },
    )
    .unwrap();
    let (a, b) = (1.0 / (1.0 + 1.0), 1.0 / (1.0 + 2.0f64.exp()));
    assert_close(&y, &[2, 2], &[a, b, a, 1.0 - b]);
    assert!(ops::softmax(&y, &SoftmaxAttrs { axis: 2 }).is_err());
}

// ---------------------------------------------------------------- concat, split, add

#[test]
fn concat_and_split_along_inner_and_outer_axes() {
    let a = range(&[2, 2], 0.0); // [[0, 1], [2, 3]]
    let b = range(&[2, 1], 10.0); // [[10], [11]]
    let y = ops::concat(&[&a, &b], &ConcatAttrs { axis: 1 }).unwrap();
    assert_close(&y, &[2, 3], &[0.0, 1.0, 10.0, 2.0, 3.0, 11.0]);
    let y0 = ops::concat(&[&a, &a], &ConcatAttrs { axis: 0 }).unwrap();
    assert_close(&y0, &[4, 2], &[0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0]);
    assert!(ops::concat(&[&a, &b], &ConcatAttrs { axis: 0 }).is_err());
    assert!(ops::concat::<f64>(&[], &ConcatAttrs { axis: 0 }).is_err());

    let parts = ops::split(
        &y,
        &SplitAttrs {
            axis: 1,
            sizes: vec![1, 2],
        },
    )
    .unwrap();
    assert_close(&parts[0], &[2, 1], &[0.0, 2.0]);
    assert_close(&parts[1], &[2, 2], &[1.0, 10.0, 3.0, 11.0]);
    assert!(ops::split(
        &y,
        &SplitAttrs {
            axis: 1,
            sizes: vec![1, 1]
        }
    )
    .is_err());
    assert!(ops::split(
        &y,
        &SplitAttrs {
            axis: 2,
            sizes: vec![1]
        }
    )
    .is_err());
}

#[test]
fn add_cases() {
    let y = ops::add(&t(&[2], &[1.0, 2.0]), &t(&[2], &[0.5, -4.0])).unwrap();
    assert_close(&y, &[2], &[1.5, -2.0]);
    assert!(ops::add(&t(&[2], &[1.0, 2.0]), &t(&[1, 2], &[0.5, -4.0])).is_err());
}

// ---------------------------------------------------------------- loss

#[test]
fn softmax_cross_entropy_cases() {
    // Row 0: −log softmax([1, 2, 3])[2] = log(e¹ + e² + e³) − 3.
    // Row 1: uniform over 3 classes: log 3.
    let logits = t(&[2, 3], &[1.0, 2.0, 3.0, 1.0, 1.0, 1.0]);
    let labels = Tensor::new(vec![2], vec![2i64, 0]).unwrap();
    let loss = ops::softmax_cross_entropy(&logits, &labels).unwrap();
    let row0 = (1.0f64.exp() + 2.0f64.exp() + 3.0f64.exp()).ln() - 3.0;
    let want = (row0 + 3.0f64.ln()) / 2.0;
    assert_close(&loss, &[], &[want]);
    assert_close(&loss, &[], &[0.7531091265562451]);

    // Large logits stay finite.
    let big = logits.map(|v| v * 1000.0);
    let loss = ops::softmax_cross_entropy(&big, &labels).unwrap();
    assert!(loss.data()[0].is_finite());

    // Labels out of range are errors naming the sample.
    for bad in [3i64, -1] {
        let labels = Tensor::new(vec![2], vec![0i64, bad]).unwrap();
        assert_eq!(
            ops::softmax_cross_entropy(&logits, &labels),
            Err(OpError::LabelOutOfRange {
                sample: 1,
                label: bad,
                classes: 3
            })
        );
    }
    let short = Tensor::new(vec![1], vec![0i64]).unwrap();
    assert!(ops::softmax_cross_entropy(&logits, &short).is_err());
}
