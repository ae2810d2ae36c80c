//! Algebraic properties of the ops on random shapes, attributes and data.
//!
//! Each property relates an op to a simpler computation — a naive formula, a
//! different op, or itself — so that a mistake would have to be made twice,
//! in the same way, to go unnoticed. Tensor contents come from a seeded RNG
//! rather than from proptest vectors, so that shrinking works on the shapes
//! and attributes, which is where the interesting failures are.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use alexc_interp::ops;
use alexc_ir::{
    AlphaConvention, AvgPool2dAttrs, ConcatAttrs, Conv2dAttrs, LinearAttrs, LrnAttrs, Pool2dAttrs,
    SoftmaxAttrs, SplitAttrs,
};
use alexc_tensor::Tensor;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(shape: &[usize], seed: u64) -> Tensor<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Tensor::from_flat_fn(shape.to_vec(), |_| rng.random_range(-1.0..1.0)).unwrap()
}

fn max_abs_diff(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.data()
        .iter()
        .zip(b.data())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Convolution straight from its definition, with signed indices and an
/// explicit bounds test for the zero padding.
fn naive_conv(
    x: &Tensor<f64>,
    w: &Tensor<f64>,
    b: Option<&Tensor<f64>>,
    a: &Conv2dAttrs,
) -> Tensor<f64> {
    let [n, h, wd] = [x.shape()[0], x.shape()[2], x.shape()[3]];
    let [oc, cg, kh, kw] = [w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]];
    let oh = (h + 2 * a.padding[0] - a.dilation[0] * (kh - 1) - 1) / a.stride[0] + 1;
    let ow = (wd + 2 * a.padding[1] - a.dilation[1] * (kw - 1) - 1) / a.stride[1] + 1;
    let per_group = oc / a.groups;
    Tensor::from_fn(vec![n, oc, oh, ow], |i| {
        let (bn, o, y, xx) = (i[0], i[1], i[2] as isize, i[3] as isize);
        let g = o / per_group;
        let mut acc = b.map_or(0.0, |b| b.data()[o]);
        for ci in 0..cg {
            for p in 0..kh {
                for q in 0..kw {
                    let iy = y * a.stride[0] as isize + (p * a.dilation[0]) as isize
                        - a.padding[0] as isize;
                    let ix = xx * a.stride[1] as isize + (q * a.dilation[1]) as isize
                        - a.padding[1] as isize;
                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                        continue;
                    }
                    let xv = x.get(&[bn, g * cg + ci, iy as usize, ix as usize]).unwrap();
                    acc += xv * w.get(&[o, ci, p, q]).unwrap();
                }
            }
        }
        acc
    })
    .unwrap()
}

/// A random legal convolution: (x shape, w shape, attrs).
fn conv_case() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Conv2dAttrs)> {
    (
        (1usize..3, 1usize..4, 1usize..4, 1usize..4), // batch, groups, in/group, out/group
        (1usize..4, 1usize..4, 1usize..4, 1usize..4), // kh, kw, stride y, stride x
        (0usize..3, 0usize..3, 1usize..3, 1usize..3), // pad y, pad x, dilation y, dilation x
        (0usize..6, 0usize..6, any::<bool>()),        // extra rows/cols beyond the minimum, bias
    )
        .prop_map(
            |((n, g, cg, og), (kh, kw, sy, sx), (py, px, dy, dx), (ey, ex, bias))| {
                // The smallest input the dilated kernel fits into, plus some.
                let h = (dy * (kh - 1) + 1).saturating_sub(2 * py).max(1) + ey;
                let w = (dx * (kw - 1) + 1).saturating_sub(2 * px).max(1) + ex;
                let attrs = Conv2dAttrs {
                    out_channels: g * og,
                    kernel: [kh, kw],
                    stride: [sy, sx],
                    padding: [py, px],
                    dilation: [dy, dx],
                    groups: g,
                    bias,
                };
                (vec![n, g * cg, h, w], vec![g * og, cg, kh, kw], attrs)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn conv_matches_naive_formula((xs, ws, attrs) in conv_case(), seed in any::<u64>()) {
        let x = random(&xs, seed);
        let w = random(&ws, seed ^ 1);
        let b = attrs.bias.then(|| random(&[attrs.out_channels], seed ^ 2));
        let got = ops::conv2d(&x, &w, b.as_ref(), &attrs).unwrap();
        let want = naive_conv(&x, &w, b.as_ref(), &attrs);
        prop_assert!(max_abs_diff(&got, &want) < 1e-12);
    }

    #[test]
    fn grouped_conv_is_separate_convs_concatenated((xs, ws, attrs) in conv_case(), seed in any::<u64>()) {
        let x = random(&xs, seed);
        let w = random(&ws, seed ^ 1);
        let b = attrs.bias.then(|| random(&[attrs.out_channels], seed ^ 2));
        let g = attrs.groups;
        let whole = ops::conv2d(&x, &w, b.as_ref(), &attrs).unwrap();

        let xs_g = ops::split(&x, &SplitAttrs { axis: 1, sizes: vec![xs[1] / g; g] }).unwrap();
        let ws_g = ops::split(&w, &SplitAttrs { axis: 0, sizes: vec![ws[0] / g; g] }).unwrap();
        let bs_g = b.as_ref().map(|b| ops::split(b, &SplitAttrs { axis: 0, sizes: vec![ws[0] / g; g] }).unwrap());
        let one = Conv2dAttrs { groups: 1, out_channels: ws[0] / g, ..attrs.clone() };
        let parts: Vec<Tensor<f64>> = (0..g)
            .map(|i| ops::conv2d(&xs_g[i], &ws_g[i], bs_g.as_ref().map(|bs| &bs[i]), &one).unwrap())
            .collect();
        let refs: Vec<&Tensor<f64>> = parts.iter().collect();
        let joined = ops::concat(&refs, &ConcatAttrs { axis: 1 }).unwrap();
        prop_assert!(max_abs_diff(&whole, &joined) < 1e-12);
    }

    #[test]
    fn conv_1x1_is_linear_over_pixels(
        n in 1usize..3, c in 1usize..5, o in 1usize..5, h in 1usize..5, w in 1usize..5,
        seed in any::<u64>(),
    ) {
        let x = random(&[n, c, h, w], seed);
        let wt = random(&[o, c, 1, 1], seed ^ 1);
        let b = random(&[o], seed ^ 2);
        let attrs = Conv2dAttrs {
            out_channels: o, kernel: [1, 1], stride: [1, 1], padding: [0, 0],
            dilation: [1, 1], groups: 1, bias: true,
        };
        let conv = ops::conv2d(&x, &wt, Some(&b), &attrs).unwrap();
        // NCHW → (N·H·W) × C, one row per pixel.
        let pixels = Tensor::from_fn(vec![n * h * w, c], |i| {
            let (bn, rest) = (i[0] / (h * w), i[0] % (h * w));
            *x.get(&[bn, i[1], rest / w, rest % w]).unwrap()
        }).unwrap();
        let wm = wt.clone().reshape(vec![o, c]).unwrap();
        let lin = ops::linear(&pixels, &wm, Some(&b), &LinearAttrs { out_features: o, bias: true }).unwrap();
        for bn in 0..n {
            for oc in 0..o {
                for p in 0..h * w {
                    let a = conv.get(&[bn, oc, p / w, p % w]).unwrap();
                    let l = lin.get(&[bn * h * w + p, oc]).unwrap();
                    prop_assert!((a - l).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn conv_f32_agrees_with_f64((xs, ws, attrs) in conv_case(), seed in any::<u64>()) {
        let x = random(&xs, seed);
        let w = random(&ws, seed ^ 1);
        let want = ops::conv2d(&x, &w, None, &Conv2dAttrs { bias: false, ..attrs.clone() }).unwrap();
        let got = ops::conv2d(&x.cast::<f32>(), &w.cast::<f32>(), None, &Conv2dAttrs { bias: false, ..attrs }).unwrap();
        prop_assert!(max_abs_diff(&got.cast(), &want) < 1e-5);
    }

    #[test]
    fn lrn_matches_the_documented_formula(
        n in 1usize..3, c in 1usize..9, s in 1usize..4, size in 1usize..8,
        alpha in 0.0f64..2.0, beta in 0.1f64..1.5, k in 0.5f64..3.0,
        paper in any::<bool>(), seed in any::<u64>(),
    ) {
        let x = random(&[n, c, s], seed);
        let convention = if paper { AlphaConvention::Absolute } else { AlphaConvention::DividedBySize };
        let attrs = LrnAttrs { size, alpha, beta, k, alpha_convention: convention };
        let got = ops::lrn(&x, &attrs).unwrap();
        let a = if paper { alpha } else { alpha / size as f64 };
        let want = Tensor::from_fn(vec![n, c, s], |i| {
            let (lo, hi) = (i[1] as isize - (size / 2) as isize, i[1] + (size - 1) / 2);
            let sum: f64 = (lo..=hi as isize)
                .filter(|&j| j >= 0 && (j as usize) < c)
                .map(|j| x.get(&[i[0], j as usize, i[2]]).unwrap().powi(2))
                .sum();
            x.get(i).unwrap() / (k + a * sum).powf(beta)
        }).unwrap();
        prop_assert!(max_abs_diff(&got, &want) < 1e-12);
    }

    #[test]
    fn pools_agree_without_padding_and_max_bounds_mean(
        n in 1usize..3, c in 1usize..3, h in 1usize..8, w in 1usize..8,
        k in 1usize..4, s in 1usize..3, seed in any::<u64>(),
    ) {
        prop_assume!(k <= h && k <= w);
        let x = random(&[n, c, h, w], seed);
        let avg = |include| ops::avg_pool2d(&x, &AvgPool2dAttrs {
            kernel: [k, k], stride: [s, s], padding: [0, 0], count_include_pad: include,
        }).unwrap();
        let max = ops::max_pool2d(&x, &Pool2dAttrs { kernel: [k, k], stride: [s, s], padding: [0, 0] }).unwrap();
        let (a, b) = (avg(true), avg(false));
        prop_assert!(max_abs_diff(&a, &b) < 1e-12);
        prop_assert!(max.data().iter().zip(a.data()).all(|(m, v)| m + 1e-12 >= *v));
    }

    #[test]
    fn split_then_concat_is_identity(
        shape in prop::collection::vec(1usize..5, 1..5), axis_pick in any::<usize>(),
        cuts in prop::collection::vec(any::<bool>(), 4), seed in any::<u64>(),
    ) {
        let axis = axis_pick % shape.len();
        let x = random(&shape, seed);
        // Cut the axis after every position whose flag is set.
        let mut sizes = vec![1usize];
        for i in 1..shape[axis] {
            if cuts[i % cuts.len()] { sizes.push(1) } else if let Some(last) = sizes.last_mut() { *last += 1 }
        }
        let parts = ops::split(&x, &SplitAttrs { axis, sizes: sizes.clone() }).unwrap();
        prop_assert_eq!(parts.len(), sizes.len());
        let refs: Vec<&Tensor<f64>> = parts.iter().collect();
        prop_assert_eq!(ops::concat(&refs, &ConcatAttrs { axis }).unwrap(), x);
    }

    #[test]
    fn softmax_sums_to_one(
        shape in prop::collection::vec(1usize..5, 1..4), axis_pick in any::<usize>(),
        scale in 0.1f64..1000.0, seed in any::<u64>(),
    ) {
        let axis = axis_pick % shape.len();
        let x = random(&shape, seed).map(|v| v * scale);
        let y = ops::softmax(&x, &SoftmaxAttrs { axis }).unwrap();
        prop_assert!(y.data().iter().all(|&v| (0.0..=1.0).contains(&v)));
        let summed = Tensor::from_fn(
            shape.iter().enumerate().map(|(d, &s)| if d == axis { 1 } else { s }).collect::<Vec<_>>(),
            |i| {
                let mut j = i.to_vec();
                (0..shape[axis]).map(|k| { j[axis] = k; *y.get(&j).unwrap() }).sum::<f64>()
            },
        ).unwrap();
        prop_assert!(summed.data().iter().all(|s| (s - 1.0).abs() < 1e-12));
    }

    #[test]
    fn relu_is_idempotent_and_non_negative(len in 1usize..64, seed in any::<u64>()) {
        let x = random(&[len], seed);
        let y = ops::relu(&x);
        prop_assert!(y.data().iter().all(|&v| v >= 0.0));
        prop_assert_eq!(ops::relu(&y), y.clone());
        let expected = x.map(|&a| if a > 0.0 { a } else { 0.0 });
        prop_assert_eq!(y, expected);
    }

    #[test]
    fn loss_is_mean_negative_log_softmax_at_label(
        n in 1usize..5, c in 1usize..8, scale in 0.1f64..50.0, seed in any::<u64>(),
    ) {
        let logits = random(&[n, c], seed).map(|v| v * scale);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 3);
        let labels = Tensor::from_flat_fn(vec![n], |_| rng.random_range(0..c as i64)).unwrap();
        let loss = ops::softmax_cross_entropy(&logits, &labels).unwrap().data()[0];
        let p = ops::softmax(&logits, &SoftmaxAttrs { axis: 1 }).unwrap();
        let want = (0..n)
            .map(|i| -p.get(&[i, labels.data()[i] as usize]).unwrap().ln())
            .sum::<f64>() / n as f64;
        prop_assert!((loss - want).abs() < 1e-9 * want.abs().max(1.0), "{} vs {}", loss, want);
    }
}
