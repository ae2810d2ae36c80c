//! Every backward op against finite differences of its forward op, in f64.
//!
//! Method. For a forward op `f` and a random tensor `r` of the output's
//! shape, the scalar objective is `L(x) = Σ r ⊙ f(x)`, so `∂L/∂y = r` and
//! every output element contributes to the gradient with its own weight (a
//! gradient that mixes up two output elements cannot pass). The backward op
//! is called with `dy = r` and compared with the central difference
//! `(L(x + ε·e_i) − L(x − ε·e_i)) / 2ε` for every element `i` of every
//! differentiated operand, with `ε = 1e-6`.
//!
//! Tolerance: `max_i |analytic_i − numeric_i| ≤ 1e-6 · max(1, max_i |numeric_i|)`.
//! The central difference has truncation error `ε²/6 · |∂³L| ≈ 1e-13` for
//! these smooth functions of O(1) inputs, and rounding error about
//! `u · Σ|r ⊙ f| / ε` with `u = 1.1e-16` and `Σ|r ⊙ f|` at most a few hundred
//! here, i.e. below 1e-8 (measured: at most 3e-9, in the conv cases), two
//! orders of magnitude under the bound. A wrong gradient term is wrong by
//! O(0.01) or more, far above it (where that is not obvious, as for LRN's
//! cross-channel term, the test asserts it).
//!
//! Kinks are kept away from the evaluation points: ReLU inputs satisfy
//! `|x| ≥ 0.05`, and max-pool inputs are distinct values on a grid of
//! spacing 0.01 in random order, so no `±ε` step changes a window's argmax.
//! Ties are tested separately, by hand.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use alexc_interp::{ops, OpError};
use alexc_ir::{
    AlphaConvention, AvgPool2dAttrs, Conv2dAttrs, Conv2dBackwardAttrs, LinearAttrs,
    LinearBackwardAttrs, LrnAttrs, Pool2dAttrs, ReshapeAttrs, Shape, SoftmaxAttrs,
};
use alexc_tensor::Tensor;
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The finite-difference step.
const EPS: f64 = 1e-6;
/// The tolerance, relative to the gradient's scale (see the module docs).
const TOL: f64 = 1e-6;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform samples in [-1, 1).
fn random(shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor<f64> {
    Tensor::from_flat_fn(shape.to_vec(), |_| rng.random_range(-1.0..1.0)).unwrap()
}

/// Uniform samples with `0.05 ≤ |x| < 1`: away from ReLU's kink.
fn away_from_zero(shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor<f64> {
    Tensor::from_flat_fn(shape.to_vec(), |_| {
        let m = rng.random_range(0.05..1.0);
        if rng.random::<bool>() {
            m
        } else {
            -m
        }
    })
    .unwrap()
}

/// Distinct values `(k − len/2) · 0.01` in random order: no ties, and no two
/// values within 2ε of each other.
fn distinct(shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor<f64> {
    let n: usize = shape.iter().product();
    let mut values: Vec<f64> = (0..n).map(|k| (k as f64 - n as f64 / 2.0) * 0.01).collect();
    values.shuffle(rng);
    Tensor::new(shape.to_vec(), values).unwrap()
}

/// `Σ r ⊙ y`.
fn weighted_sum(r: &Tensor<f64>, y: &Tensor<f64>) -> f64 {
    assert_eq!(r.shape(), y.shape());
    r.data().iter().zip(y.data()).map(|(a, b)| a * b).sum()
}

/// Central differences of `loss` at `x`, one element at a time.
fn numeric_grad(x: &Tensor<f64>, loss: impl Fn(&Tensor<f64>) -> f64) -> Tensor<f64> {
    let mut probe = x.clone();
    let mut grad = Tensor::zeros(x.shape().to_vec()).unwrap();
    for i in 0..x.len() {
        let x0 = x.data()[i];
        probe.data_mut()[i] = x0 + EPS;
        let up = loss(&probe);
        probe.data_mut()[i] = x0 - EPS;
        let down = loss(&probe);
        probe.data_mut()[i] = x0;
        grad.data_mut()[i] = (up - down) / (2.0 * EPS);
    }
    grad
}

fn max_abs(t: &Tensor<f64>) -> f64 {
    t.data().iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn max_abs_diff(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.data()
        .iter()
        .zip(b.data())
        .fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

#[track_caller]
fn assert_grad(what: &str, analytic: &Tensor<f64>, numeric: &Tensor<f64>) {
    assert_eq!(analytic.shape(), numeric.shape(), "{what}: shape");
    let scale = max_abs(numeric).max(1.0);
    let err = max_abs_diff(analytic, numeric);
    assert!(
        err <= TOL * scale,
        "{what}: max error {err:e} exceeds {TOL:e} × {scale}"
    );
}

// ---------------------------------------------------------------- conv2d

fn conv_attrs(
    out: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
    bias: bool,
) -> Conv2dAttrs {
    Conv2dAttrs {
        out_channels: out,
        kernel,
        stride,
        padding,
        dilation,
        groups,
        bias,
    }
}

/// Checks dx, dw and db of one convolution; `seed` picks the data.
fn check_conv(x_shape: &[usize], attrs: &Conv2dAttrs, seed: u64) {
    let mut rng = rng(seed);
    let cg = x_shape[1] / attrs.groups;
    let w_shape = [attrs.out_channels, cg, attrs.kernel[0], attrs.kernel[1]];
    let x = random(x_shape, &mut rng);
    let w = random(&w_shape, &mut rng);
    let b = attrs.bias.then(|| random(&[attrs.out_channels], &mut rng));
    let y = ops::conv2d(&x, &w, b.as_ref(), attrs).unwrap();
    let r = random(y.shape(), &mut rng);
    let back = Conv2dBackwardAttrs {
        conv: attrs.clone(),
        input_grad: true,
    };
    let grads = ops::conv2d_backward(&x, &w, &r, &back).unwrap();
    let case = format!("conv {x_shape:?} {attrs:?}");

    let num_dx = numeric_grad(&x, |x| {
        weighted_sum(&r, &ops::conv2d(x, &w, b.as_ref(), attrs).unwrap())
    });
    assert_grad(&format!("{case}: dx"), grads.dx.as_ref().unwrap(), &num_dx);
    let num_dw = numeric_grad(&w, |w| {
        weighted_sum(&r, &ops::conv2d(&x, w, b.as_ref(), attrs).unwrap())
    });
    assert_grad(&format!("{case}: dw"), &grads.dw, &num_dw);
    match &b {
        Some(b) => {
            let num_db = numeric_grad(b, |b| {
                weighted_sum(&r, &ops::conv2d(&x, &w, Some(b), attrs).unwrap())
            });
            assert_grad(&format!("{case}: db"), grads.db.as_ref().unwrap(), &num_db);
        }
        None => assert!(grads.db.is_none(), "{case}: db without a bias"),
    }

    // Without input_grad: the same dw and db, no dx; results in op order.
    let no_dx = Conv2dBackwardAttrs {
        conv: attrs.clone(),
        input_grad: false,
    };
    let partial = ops::conv2d_backward(&x, &w, &r, &no_dx).unwrap();
    assert!(partial.dx.is_none());
    assert_eq!(partial.dw, grads.dw);
    assert_eq!(partial.db, grads.db);
    let results = partial.into_results();
    assert_eq!(results.len(), 1 + usize::from(attrs.bias));
    assert_eq!(results[0], grads.dw);
}

#[test]
fn conv2d_gradients_plain() {
    check_conv(
        &[2, 3, 5, 6],
        &conv_attrs(4, [3, 3], [1, 1], [0, 0], [1, 1], 1, true),
        1,
    );
}

#[test]
fn conv2d_gradients_stride_and_padding() {
    // Odd sizes with stride 2 leave the last row/column unread by some taps.
    check_conv(
        &[2, 3, 7, 6],
        &conv_attrs(2, [3, 2], [2, 3], [1, 2], [1, 1], 1, true),
        2,
    );
    // AlexNet's conv1 shape, scaled down: 5×5 kernel, stride 4, padding 2.
    check_conv(
        &[1, 3, 11, 13],
        &conv_attrs(3, [5, 5], [4, 4], [2, 2], [1, 1], 1, false),
        3,
    );
}

#[test]
fn conv2d_gradients_dilation_and_groups() {
    check_conv(
        &[2, 4, 7, 7],
        &conv_attrs(6, [3, 3], [1, 2], [2, 1], [2, 3], 2, true),
        4,
    );
    check_conv(
        &[1, 6, 5, 4],
        &conv_attrs(3, [2, 3], [2, 1], [1, 1], [1, 1], 3, false),
        5,
    );
}

/// A random legal convolution: (x shape, attrs), as in `ops_properties`.
fn conv_case() -> impl Strategy<Value = (Vec<usize>, Conv2dAttrs)> {
    (
        (1usize..3, 1usize..4, 1usize..3, 1usize..3), // batch, groups, in/group, out/group
        (1usize..4, 1usize..4, 1usize..4, 1usize..4), // kh, kw, stride y, stride x
        (0usize..3, 0usize..3, 1usize..3, 1usize..3), // pad y, pad x, dilation y, dilation x
        (0usize..4, 0usize..4, any::<bool>()),        // extra rows/cols, bias
    )
        .prop_map(
            |((n, g, cg, og), (kh, kw, sy, sx), (py, px, dy, dx), (ey, ex, bias))| {
                let h = (dy * (kh - 1) + 1).saturating_sub(2 * py).max(1) + ey;
                let w = (dx * (kw - 1) + 1).saturating_sub(2 * px).max(1) + ex;
                let attrs = conv_attrs(g * og, [kh, kw], [sy, sx], [py, px], [dy, dx], g, bias);
                (vec![n, g * cg, h, w], attrs)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn conv2d_gradients_random_shapes((x_shape, attrs) in conv_case(), seed in any::<u64>()) {
        check_conv(&x_shape, &attrs, seed);
    }
}

// ---------------------------------------------------------------- linear

fn check_linear(n: usize, fin: usize, fout: usize, bias: bool, seed: u64) {
    let mut rng = rng(seed);
    let attrs = LinearAttrs {
        out_features: fout,
        bias,
    };
    let x = random(&[n, fin], &mut rng);
    let w = random(&[fout, fin], &mut rng);
    let b = bias.then(|| random(&[fout], &mut rng));
    let r = random(&[n, fout], &mut rng);
    let back = LinearBackwardAttrs {
        linear: attrs.clone(),
        input_grad: true,
        relu: false,
        dropout: false,
    };
    let grads = ops::linear_backward(&x, &w, None, None, &r, &back).unwrap();
    let f = |x: &Tensor<f64>, w: &Tensor<f64>, b: Option<&Tensor<f64>>| {
        weighted_sum(&r, &ops::linear(x, w, b, &attrs).unwrap())
    };
    let num_dx = numeric_grad(&x, |x| f(x, &w, b.as_ref()));
    assert_grad("linear dx", grads.dx.as_ref().unwrap(), &num_dx);
    let num_dw = numeric_grad(&w, |w| f(&x, w, b.as_ref()));
    assert_grad("linear dw", &grads.dw, &num_dw);
    if let Some(b) = &b {
        let num_db = numeric_grad(b, |b| f(&x, &w, Some(b)));
        assert_grad("linear db", grads.db.as_ref().unwrap(), &num_db);
    } else {
        assert!(grads.db.is_none());
    }
    let no_dx = LinearBackwardAttrs {
        input_grad: false,
        ..back
    };
    let partial = ops::linear_backward(&x, &w, None, None, &r, &no_dx).unwrap();
    assert!(partial.dx.is_none());
    assert_eq!(partial.dw, grads.dw);
}

#[test]
fn linear_gradients() {
    check_linear(3, 5, 4, true, 10);
    check_linear(1, 7, 3, false, 11);
    check_linear(4, 1, 6, true, 12);
}

#[test]
fn fused_linear_backward_gradients_through_relu_and_dropout() {
    // L = Σ r ⊙ (mask ⊙ relu(x Wᵀ + b)) with the fused backward; the linear
    // output is kept away from ReLU's kink by choosing b.
    let mut rng = rng(13);
    let (n, fin, fout) = (3, 4, 5);
    let attrs = LinearAttrs {
        out_features: fout,
        bias: true,
    };
    let x = random(&[n, fin], &mut rng);
    let w = random(&[fout, fin], &mut rng);
    let z0 = ops::linear(
        &x,
        &w,
        None,
        &LinearAttrs {
            bias: false,
            ..attrs.clone()
        },
    )
    .unwrap();
    // A bias per output that keeps every z = z0 + b at least 0.05 from zero.
    let b = Tensor::from_flat_fn(vec![fout], |o| {
        let col: Vec<f64> = (0..n).map(|i| z0.data()[i * fout + o]).collect();
        (0..200)
            .map(|k| -1.0 + 0.01 * k as f64)
            .find(|bv| col.iter().all(|z| (z + bv).abs() >= 0.05))
            .unwrap()
    })
    .unwrap();
    let mask = Tensor::from_flat_fn(vec![n, fout], |i| if i % 3 == 1 { 0.0 } else { 2.0 }).unwrap();
    let r = random(&[n, fout], &mut rng);
    let forward = |x: &Tensor<f64>, w: &Tensor<f64>, b: &Tensor<f64>| {
        let relu = ops::relu(&ops::linear(x, w, Some(b), &attrs).unwrap());
        weighted_sum(&r, &ops::mul(&relu, &mask).unwrap())
    };
    let y = ops::mul(
        &ops::relu(&ops::linear(&x, &w, Some(&b), &attrs).unwrap()),
        &mask,
    )
    .unwrap();
    let back = LinearBackwardAttrs {
        linear: attrs.clone(),
        input_grad: true,
        relu: true,
        dropout: true,
    };
    let grads = ops::linear_backward(&x, &w, Some(&y), Some(&mask), &r, &back).unwrap();
    assert_grad(
        "linear+relu+dropout dx",
        grads.dx.as_ref().unwrap(),
        &numeric_grad(&x, |x| forward(x, &w, &b)),
    );
    assert_grad(
        "linear+relu+dropout dw",
        &grads.dw,
        &numeric_grad(&w, |w| forward(&x, w, &b)),
    );
    assert_grad(
        "linear+relu+dropout db",
        grads.db.as_ref().unwrap(),
        &numeric_grad(&b, |b| forward(&x, &w, b)),
    );
}

// ---------------------------------------------------------------- relu

#[test]
fn relu_gradient() {
    let mut rng = rng(20);
    let x = away_from_zero(&[2, 3, 4, 5], &mut rng);
    let r = random(x.shape(), &mut rng);
    let y = ops::relu(&x);
    let analytic = ops::relu_backward(&y, &r).unwrap();
    let numeric = numeric_grad(&x, |x| weighted_sum(&r, &ops::relu(x)));
    assert_grad("relu", &analytic, &numeric);
    // Both signs occur, so both branches were checked.
    assert!(x.data().iter().any(|&v| v > 0.0) && x.data().iter().any(|&v| v < 0.0));
}

// ---------------------------------------------------------------- LRN

fn lrn_attrs(size: usize, convention: AlphaConvention) -> LrnAttrs {
    LrnAttrs {
        size,
        // Large α so that the cross-channel term of the gradient is large
        // (with AlexNet's α = 1e-4 it would hide below the tolerance).
        alpha: match convention {
            AlphaConvention::DividedBySize => 1.5,
            AlphaConvention::Absolute => 0.4,
        },
        beta: 0.75,
        k: 1.5,
        alpha_convention: convention,
    }
}

#[test]
fn lrn_gradients_both_conventions_and_window_sizes() {
    for convention in [AlphaConvention::DividedBySize, AlphaConvention::Absolute] {
        // Size 8 is wider than the 6 channels: every window is clipped.
        for size in [1, 2, 3, 4, 5, 8] {
            let attrs = lrn_attrs(size, convention);
            let mut rng = rng(30 + size as u64);
            let x = random(&[2, 6, 3, 2], &mut rng);
            let r = random(x.shape(), &mut rng);
            let analytic = ops::lrn_backward(&x, &r, &attrs).unwrap();
            let numeric = numeric_grad(&x, |x| weighted_sum(&r, &ops::lrn(x, &attrs).unwrap()));
            let case = format!("lrn size {size} {convention}");
            assert_grad(&case, &analytic, &numeric);

            // The test is sensitive to the cross-channel terms: dropping them
            // (keeping only dy · D^-β) is off by far more than the tolerance.
            let diagonal = diagonal_only_lrn_grad(&x, &r, &attrs);
            assert!(
                max_abs_diff(&diagonal, &numeric) > 1e3 * TOL,
                "{case}: the cross-channel term is too small to be tested"
            );
        }
    }
}

/// `dy · D^-β`: LRN's gradient without its cross-channel terms (wrong).
fn diagonal_only_lrn_grad(x: &Tensor<f64>, dy: &Tensor<f64>, a: &LrnAttrs) -> Tensor<f64> {
    let y = ops::lrn(x, a).unwrap();
    // y = x · D^-β, so D^-β = y / x (x is never exactly zero here).
    Tensor::from_flat_fn(x.shape().to_vec(), |i| {
        dy.data()[i] * y.data()[i] / x.data()[i]
    })
    .unwrap()
}

// ---------------------------------------------------------------- pooling

fn pool(kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]) -> Pool2dAttrs {
    Pool2dAttrs {
        kernel,
        stride,
        padding,
    }
}

#[test]
fn max_pool_gradients_without_ties() {
    for (i, (shape, attrs)) in [
        // AlexNet's overlapping 3×3 / stride 2 pooling on an odd size.
        (vec![2, 2, 7, 7], pool([3, 3], [2, 2], [0, 0])),
        (vec![1, 3, 5, 6], pool([3, 3], [2, 2], [1, 1])),
        (vec![2, 1, 6, 5], pool([2, 3], [1, 2], [1, 1])),
        (vec![1, 2, 4, 4], pool([2, 2], [2, 2], [0, 0])),
    ]
    .into_iter()
    .enumerate()
    {
        let mut rng = rng(40 + i as u64);
        let x = distinct(&shape, &mut rng);
        let y = ops::max_pool2d(&x, &attrs).unwrap();
        let r = random(y.shape(), &mut rng);
        let analytic = ops::max_pool2d_backward(&x, &r, &attrs).unwrap();
        let numeric = numeric_grad(&x, |x| {
            weighted_sum(&r, &ops::max_pool2d(x, &attrs).unwrap())
        });
        assert_grad(
            &format!("max-pool {shape:?} {attrs:?}"),
            &analytic,
            &numeric,
        );
    }
}

#[test]
fn max_pool_ties_go_to_the_first_maximum() {
    let t = |shape: &[usize], data: &[f64]| Tensor::new(shape.to_vec(), data.to_vec()).unwrap();
    // One 2×2 window holding 3 at (0, 1) and (1, 0): row-major order picks
    // (0, 1).
    let x = t(&[1, 1, 2, 2], &[1.0, 3.0, 3.0, 2.0]);
    let dx = ops::max_pool2d_backward(&x, &t(&[1, 1, 1, 1], &[5.0]), &pool([2, 2], [1, 1], [0, 0]))
        .unwrap();
    assert_eq!(dx.data(), &[0.0, 5.0, 0.0, 0.0]);

    // A constant row, overlapping windows of width 2 / stride 1: each window
    // takes its left element, so the last element gets nothing.
    let x = t(&[1, 1, 1, 4], &[7.0; 4]);
    let dy = t(&[1, 1, 1, 3], &[1.0, 10.0, 100.0]);
    let dx = ops::max_pool2d_backward(&x, &dy, &pool([1, 2], [1, 1], [0, 0])).unwrap();
    assert_eq!(dx.data(), &[1.0, 10.0, 100.0, 0.0]);

    // -inf padding never wins, even against negative values: with padding 1
    // every window's maximum is an in-bounds element.
    let x = t(&[1, 1, 2, 2], &[-3.0, -1.0, -2.0, -4.0]);
    let ones = Tensor::full(vec![1, 1, 3, 3], 1.0).unwrap();
    let dx = ops::max_pool2d_backward(&x, &ones, &pool([2, 2], [1, 1], [1, 1])).unwrap();
    // Windows (row-major): {-3}, {-3,-1}, {-1}, {-3,-2}, all four, {-1,-4},
    // {-2}, {-2,-4}, {-4}; the maxima are -3, -1, -1, -2, -1, -1, -2, -2, -4.
    assert_eq!(dx.data(), &[1.0, 4.0, 3.0, 1.0]);

    // NaNs win, and the last one takes the gradient, as in PyTorch.
    let nan = f64::NAN;
    let x = t(&[1, 1, 2, 2], &[1.0, nan, 2.0, nan]);
    let dx = ops::max_pool2d_backward(&x, &t(&[1, 1, 1, 1], &[5.0]), &pool([2, 2], [1, 1], [0, 0]))
        .unwrap();
    assert_eq!(dx.data(), &[0.0, 0.0, 0.0, 5.0]);

    // A window of -inf values sends its gradient to its first in-bounds
    // element, not into the padding (and not nowhere).
    let inf = f64::NEG_INFINITY;
    // Windows: {pad, x0}, {x0, x1}, {x1, pad}.
    let x = t(&[1, 1, 1, 2], &[inf, inf]);
    let dx = ops::max_pool2d_backward(
        &x,
        &t(&[1, 1, 1, 3], &[1.0, 2.0, 4.0]),
        &pool([1, 2], [1, 1], [0, 1]),
    )
    .unwrap();
    assert_eq!(dx.data(), &[3.0, 4.0]);
}

#[test]
fn avg_pool_gradients_both_divisor_modes() {
    for count_include_pad in [true, false] {
        for (i, (shape, kernel, stride, padding)) in [
            (vec![2, 2, 7, 6], [3, 3], [2, 2], [1, 1]),
            (vec![1, 3, 5, 5], [2, 3], [1, 2], [1, 0]),
            (vec![1, 1, 4, 4], [2, 2], [2, 2], [0, 0]),
        ]
        .into_iter()
        .enumerate()
        {
            let attrs = AvgPool2dAttrs {
                kernel,
                stride,
                padding,
                count_include_pad,
            };
            let mut rng = rng(50 + i as u64);
            let x = random(&shape, &mut rng);
            let y = ops::avg_pool2d(&x, &attrs).unwrap();
            let r = random(y.shape(), &mut rng);
            let analytic = ops::avg_pool2d_backward(&x, &r, &attrs).unwrap();
            let numeric = numeric_grad(&x, |x| {
                weighted_sum(&r, &ops::avg_pool2d(x, &attrs).unwrap())
            });
            assert_grad(
                &format!("avg-pool {shape:?} {attrs:?}"),
                &analytic,
                &numeric,
            );
        }
    }
}

// ---------------------------------------------------------------- softmax and the loss

#[test]
fn softmax_gradients_along_every_axis() {
    let mut rng = rng(60);
    let x = random(&[3, 4, 2], &mut rng);
    for axis in 0..3 {
        let attrs = SoftmaxAttrs { axis };
        let r = random(x.shape(), &mut rng);
        let y = ops::softmax(&x, &attrs).unwrap();
        let analytic = ops::softmax_backward(&y, &r, &attrs).unwrap();
        let numeric = numeric_grad(&x, |x| weighted_sum(&r, &ops::softmax(x, &attrs).unwrap()));
        assert_grad(&format!("softmax axis {axis}"), &analytic, &numeric);
    }
}

#[test]
fn softmax_cross_entropy_gradient() {
    let mut rng = rng(70);
    let logits = random(&[4, 5], &mut rng).map(|v| 3.0 * v);
    let labels = Tensor::new(vec![4], vec![0i64, 4, 2, 2]).unwrap();
    let analytic = ops::softmax_cross_entropy_backward(&logits, &labels).unwrap();
    let numeric = numeric_grad(&logits, |l| {
        ops::softmax_cross_entropy(l, &labels).unwrap().data()[0]
    });
    assert_grad("softmax-cross-entropy", &analytic, &numeric);
    // Each row sums to zero: (Σ softmax − 1) / N.
    for row in analytic.data().chunks(5) {
        assert!(row.iter().sum::<f64>().abs() < 1e-15);
    }

    for bad in [-1i64, 5] {
        let labels = Tensor::new(vec![4], vec![0, bad, 1, 1]).unwrap();
        assert_eq!(
            ops::softmax_cross_entropy_backward(&logits, &labels).unwrap_err(),
            OpError::LabelOutOfRange {
                sample: 1,
                label: bad,
                classes: 5
            }
        );
    }
}

// ---------------------------------------------------------------- reshape

#[test]
fn the_gradient_of_flatten_and_reshape_is_the_inverse_reshape() {
    let mut rng = rng(80);
    let x = random(&[2, 3, 2, 2], &mut rng);
    let r = random(&[2, 12], &mut rng);
    let numeric = numeric_grad(&x, |x| weighted_sum(&r, &ops::flatten(x).unwrap()));
    let back = ReshapeAttrs {
        shape: Shape::new(x.shape()),
    };
    assert_grad("flatten", &ops::reshape(&r, &back).unwrap(), &numeric);

    let to = ReshapeAttrs {
        shape: Shape::new([4, 6]),
    };
    let r = random(&[4, 6], &mut rng);
    let numeric = numeric_grad(&x, |x| weighted_sum(&r, &ops::reshape(x, &to).unwrap()));
    assert_grad("reshape", &ops::reshape(&r, &back).unwrap(), &numeric);
    let bad = ReshapeAttrs {
        shape: Shape::new([5, 5]),
    };
    assert!(ops::reshape(&x, &bad).is_err());
}
