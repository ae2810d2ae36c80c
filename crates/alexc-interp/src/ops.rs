//! Reference implementations of every graph IR op.
//!
//! One public function per op, taking host tensors and the op's attribute
//! struct from `alexc_ir`. These are the definitions every compiled backend
//! is tested against, so they are written to be read: direct loop nests over
//! row-major NCHW buffers, one output element (or one output plane) at a
//! time, with the semantics spelled out next to the code. Where an op has a
//! PyTorch counterpart the semantics are PyTorch's exactly (padding values,
//! window clipping, divisors), because weights and reference outputs come
//! from PyTorch.
//!
//! Two concessions to speed, neither of which changes any result:
//! convolution iterates kernel taps outside and output columns inside, so the
//! innermost loop walks contiguous memory; and the heavy ops run their
//! independent (batch, channel) planes or output elements in parallel with
//! rayon. Each output element is still accumulated sequentially in a fixed
//! order, so results are deterministic run to run.
//!
//! Training graphs add three kinds of op, each next to its kind here:
//! backward ops (the gradient of one forward op, derived in its doc comment,
//! operands and results in the IR's order), fused ops (defined and computed
//! as the composition of the unfused ops, so that the reference for a fused
//! kernel is the unfused computation) and the optimizer step
//! ([`sgd_update`]). Backward ops that scatter into their input gradient
//! (convolution's `dx`, pooling) still give every element one fixed
//! accumulation order, so they too are deterministic.
//!
//! Every function validates its operands and attributes itself and returns an
//! [`OpError`] instead of panicking, since they are public and may be called
//! with tensors that never went through shape inference.

use alexc_ir::{
    AvgPool2dAttrs, ConcatAttrs, Conv2dAttrs, Conv2dBackwardAttrs, DropoutAttrs, LinearAttrs,
    LinearBackwardAttrs, LinearReluAttrs, LrnAttrs, LrnMaxPoolAttrs, Pool2dAttrs, ReshapeAttrs,
    SgdAttrs, SgdConvention, SoftmaxAttrs, SplitAttrs,
};
use alexc_tensor::{Tensor, TensorError};
use rand::Rng;
use rayon::prelude::*;

use crate::real::Real;

/// Why an op cannot be applied to its operands.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpError {
    /// Operands or attributes that the op does not accept.
    #[error("{op}: {message}")]
    Invalid { op: &'static str, message: String },
    #[error(
        "softmax-cross-entropy: label {label} of sample {sample} is out of range for {classes} classes"
    )]
    LabelOutOfRange {
        sample: usize,
        label: i64,
        classes: usize,
    },
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

type Result<T> = std::result::Result<T, OpError>;

fn invalid<T>(op: &'static str, message: impl Into<String>) -> Result<T> {
    Err(OpError::Invalid {
        op,
        message: message.into(),
    })
}

/// The dimensions of a rank-4 tensor.
fn dims4<T>(t: &Tensor<T>, op: &'static str, what: &str) -> Result<[usize; 4]> {
    match *t.shape() {
        [a, b, c, d] => Ok([a, b, c, d]),
        _ => invalid(
            op,
            format!("{what} must have rank 4, but has shape {:?}", t.shape()),
        ),
    }
}

/// Output size of a sliding window along one axis:
/// `floor((input + 2·pad − extent) / stride) + 1`, with
/// `extent = dilation·(kernel − 1) + 1`.
fn window_output(
    op: &'static str,
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
) -> Result<usize> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return invalid(op, "kernel, stride and dilation must be at least 1");
    }
    let extent = dilation
        .checked_mul(kernel - 1)
        .and_then(|e| e.checked_add(1))
        .ok_or(OpError::Invalid {
            op,
            message: "kernel extent overflows".into(),
        })?;
    let padded = pad
        .checked_mul(2)
        .and_then(|p| p.checked_add(input))
        .ok_or(OpError::Invalid {
            op,
            message: "padding overflows".into(),
        })?;
    if extent > padded {
        return invalid(
            op,
            format!("window extent {extent} exceeds the padded input size {padded}"),
        );
    }
    Ok((padded - extent) / stride + 1)
}

/// The output positions `o` in `0..out_len` whose input position
/// `o·stride + offset − pad` lies in `0..in_len`, as a half-open range.
/// Positions outside it read padding.
fn valid_outputs(
    out_len: usize,
    stride: usize,
    offset: usize,
    pad: usize,
    in_len: usize,
) -> (usize, usize) {
    // o·stride ≥ pad − offset
    let lo = if pad > offset {
        (pad - offset).div_ceil(stride)
    } else {
        0
    };
    // o·stride ≤ in_len − 1 + pad − offset
    let limit = in_len + pad;
    if limit <= offset {
        return (0, 0);
    }
    let hi = ((limit - 1 - offset) / stride + 1).min(out_len);
    (lo.min(hi), hi)
}

/// The checked dimensions of a convolution: input `[n, c, h, w]`, weight
/// `[oc, cg, kh, kw]` with `cg = c / groups`, output `[n, oc, oh, ow]`.
#[derive(Clone, Copy, Debug)]
struct ConvShape {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oc: usize,
    cg: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
}

/// Checks a convolution's input and weight against its attributes (the
/// bias is checked separately, by [`check_bias`]).
fn conv_shape<T>(
    op: &'static str,
    x: &Tensor<T>,
    w: &Tensor<T>,
    attrs: &Conv2dAttrs,
) -> Result<ConvShape> {
    let [n, c, h, wd] = dims4(x, op, "input")?;
    let [oc, cg, kh, kw] = dims4(w, op, "weight")?;
    let groups = attrs.groups;
    if groups == 0 || oc % groups != 0 || cg.checked_mul(groups) != Some(c) {
        return invalid(
            op,
            format!(
                "groups={groups} does not fit input channels {c}, weight {:?}",
                w.shape()
            ),
        );
    }
    if oc != attrs.out_channels || [kh, kw] != attrs.kernel {
        return invalid(
            op,
            format!(
                "weight {:?} does not match out_channels={} kernel={:?}",
                w.shape(),
                attrs.out_channels,
                attrs.kernel
            ),
        );
    }
    let oh = window_output(
        op,
        h,
        kh,
        attrs.stride[0],
        attrs.padding[0],
        attrs.dilation[0],
    )?;
    let ow = window_output(
        op,
        wd,
        kw,
        attrs.stride[1],
        attrs.padding[1],
        attrs.dilation[1],
    )?;
    Ok(ConvShape {
        n,
        c,
        h,
        w: wd,
        oc,
        cg,
        kh,
        kw,
        oh,
        ow,
    })
}

/// A bias must be given, with shape `[features]`, exactly when `has_bias`.
fn check_bias<T>(
    op: &'static str,
    has_bias: bool,
    bias: Option<&Tensor<T>>,
    features: usize,
) -> Result<()> {
    match (has_bias, bias) {
        (true, Some(b)) if b.shape() == [features] => Ok(()),
        (true, Some(b)) => invalid(
            op,
            format!("bias has shape {:?}, expected [{features}]", b.shape()),
        ),
        (true, None) => invalid(op, "attrs.bias is set but no bias was given"),
        (false, Some(_)) => invalid(op, "a bias was given but attrs.bias is not set"),
        (false, None) => Ok(()),
    }
}

/// `t` must have exactly `shape`; `what` names it in the error.
fn expect_shape<T>(op: &'static str, what: &str, t: &Tensor<T>, shape: &[usize]) -> Result<()> {
    if t.shape() == shape {
        Ok(())
    } else {
        invalid(
            op,
            format!("{what} has shape {:?}, expected {shape:?}", t.shape()),
        )
    }
}

/// 2-D convolution (cross-correlation), PyTorch's `F.conv2d`:
///
/// `y[n, o, i, j] = b[o] + Σ_{c, p, q} x[n, g·C/G + c, i·s + p·d − pad, j·s + q·d − pad] · w[o, c, p, q]`
///
/// where `g = o / (O/G)` is the group of output channel `o`, `c` runs over
/// the `C/G` input channels of that group, and reads outside the input are
/// zero. `x` is `[N, C, H, W]`, `w` is `[O, C/G, kh, kw]`, `bias` is `[O]`
/// and must be given exactly when `attrs.bias` is set.
pub fn conv2d<T: Real>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    attrs: &Conv2dAttrs,
) -> Result<Tensor<T>> {
    const OP: &str = "conv2d";
    let ConvShape {
        n,
        c,
        h,
        w: wd,
        oc,
        cg,
        kh,
        kw,
        oh,
        ow,
    } = conv_shape(OP, x, w, attrs)?;
    check_bias(OP, attrs.bias, bias, oc)?;
    let [sy, sx] = attrs.stride;
    let [py, px] = attrs.padding;
    let [dy, dx] = attrs.dilation;

    let mut out = Tensor::zeros(vec![n, oc, oh, ow])?;
    let (xd, wdata) = (x.data(), w.data());
    let oc_per_group = oc / attrs.groups;
    out.data_mut()
        .par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(plane, y)| {
            let (b, o) = (plane / oc, plane % oc);
            let g = o / oc_per_group;
            y.fill(bias.map_or(T::zero(), |bt| bt.data()[o]));
            for ci in 0..cg {
                let x_plane = &xd[(b * c + g * cg + ci) * h * wd..][..h * wd];
                let w_kernel = &wdata[(o * cg + ci) * kh * kw..][..kh * kw];
                for p in 0..kh {
                    let (i0, i1) = valid_outputs(oh, sy, p * dy, py, h);
                    for q in 0..kw {
                        let wv = w_kernel[p * kw + q];
                        let (j0, j1) = valid_outputs(ow, sx, q * dx, px, wd);
                        if j0 >= j1 {
                            continue;
                        }
                        for i in i0..i1 {
                            let x_row = &x_plane[(i * sy + p * dy - py) * wd..][..wd];
                            let first = j0 * sx + q * dx - px;
                            let y_row = &mut y[i * ow + j0..i * ow + j1];
                            // Innermost: contiguous output columns.
                            for (yv, &xv) in y_row.iter_mut().zip(x_row[first..].iter().step_by(sx))
                            {
                                *yv = *yv + wv * xv;
                            }
                        }
                    }
                }
            }
        });
    Ok(out)
}

/// `max(x, 0)` elementwise; NaN stays NaN, as in PyTorch.
pub fn relu<T: Real>(x: &Tensor<T>) -> Tensor<T> {
    x.map(|&v| {
        if v.is_nan() || v > T::zero() {
            v
        } else {
            T::zero()
        }
    })
}

/// Local response normalization across channels, PyTorch's
/// `nn.LocalResponseNorm` (see [`LrnAttrs`] for the window and the α
/// convention):
///
/// `y[n, c, …] = x[n, c, …] / (k + α' · Σ_{j = lo(c)}^{hi(c)} x[n, j, …]²)^β`
///
/// `x` is `[N, C, …]`; any trailing dimensions are treated alike.
pub fn lrn<T: Real>(x: &Tensor<T>, attrs: &LrnAttrs) -> Result<Tensor<T>> {
    let d = lrn_denominators("lrn", x, attrs)?;
    let beta = T::of(attrs.beta);
    let data = x
        .data()
        .iter()
        .zip(d.data())
        .map(|(&a, &den)| a / den.powf(beta))
        .collect();
    Ok(Tensor::new(x.shape().to_vec(), data)?)
}

/// Checks LRN's input and attributes and returns `(channels, inner)`, the
/// channel count and the product of the trailing dimensions.
fn lrn_dims<T>(op: &'static str, x: &Tensor<T>, attrs: &LrnAttrs) -> Result<(usize, usize)> {
    if x.rank() < 2 {
        return invalid(
            op,
            format!("input must be [N, C, …], but has shape {:?}", x.shape()),
        );
    }
    if attrs.size == 0 {
        return invalid(op, "size must be at least 1");
    }
    if ![attrs.alpha, attrs.beta, attrs.k]
        .iter()
        .all(|v| v.is_finite())
    {
        return invalid(op, "alpha, beta and k must be finite");
    }
    Ok((x.shape()[1], x.shape()[2..].iter().product()))
}

/// LRN's denominator base `D[n, c, …] = k + α' · Σ_{j = lo(c)}^{hi(c)} x[n, j, …]²`
/// for every element (before the power `β`), the sum taken in increasing
/// `j`. The forward and backward ops share it, so they agree bit for bit.
fn lrn_denominators<T: Real>(
    op: &'static str,
    x: &Tensor<T>,
    attrs: &LrnAttrs,
) -> Result<Tensor<T>> {
    let (channels, inner) = lrn_dims(op, x, attrs)?;
    let alpha = T::of(attrs.effective_alpha());
    let k = T::of(attrs.k);
    let xd = x.data();
    let mut out = Tensor::zeros(x.shape().to_vec())?;
    if inner == 0 {
        return Ok(out);
    }
    out.data_mut()
        .par_chunks_mut(inner)
        .enumerate()
        .for_each(|(plane, d)| {
            let (b, ch) = (plane / channels, plane % channels);
            let (lo, hi) = attrs.window(ch, channels);
            let batch = &xd[b * channels * inner..][..channels * inner];
            for (s, dv) in d.iter_mut().enumerate() {
                let mut sum = T::zero();
                for j in lo..=hi {
                    let a = batch[j * inner + s];
                    sum = sum + a * a;
                }
                *dv = k + alpha * sum;
            }
        });
    Ok(out)
}

/// Checks the shared window attributes of both poolings and returns
/// `[n, c, h, w, oh, ow]`.
fn pool_dims<T>(
    op: &'static str,
    x: &Tensor<T>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Result<[usize; 6]> {
    let [n, c, h, w] = dims4(x, op, "input")?;
    // As PyTorch: every window overlaps the input, so no output is all padding.
    if (0..2).any(|i| padding[i] > kernel[i] / 2) {
        return invalid(
            op,
            format!("padding {padding:?} is more than half of kernel {kernel:?}"),
        );
    }
    let oh = window_output(op, h, kernel[0], stride[0], padding[0], 1)?;
    let ow = window_output(op, w, kernel[1], stride[1], padding[1], 1)?;
    Ok([n, c, h, w, oh, ow])
}

/// Max pooling, PyTorch's `F.max_pool2d` (floor mode): padding is `-inf`, so
/// a window's maximum is taken over its in-bounds elements only. A NaN in a
/// window makes the output NaN, as in PyTorch.
pub fn max_pool2d<T: Real>(x: &Tensor<T>, attrs: &Pool2dAttrs) -> Result<Tensor<T>> {
    let [n, c, h, w, oh, ow] =
        pool_dims("max-pool2d", x, attrs.kernel, attrs.stride, attrs.padding)?;
    let ([kh, kw], [sy, sx], [py, px]) = (attrs.kernel, attrs.stride, attrs.padding);
    let xd = x.data();
    let mut out = Tensor::zeros(vec![n, c, oh, ow])?;
    out.data_mut()
        .par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(plane, y)| {
            let xp = &xd[plane * h * w..][..h * w];
            for i in 0..oh {
                for j in 0..ow {
                    let mut m = T::neg_infinity();
                    for p in 0..kh {
                        let Some(iy) = (i * sy + p).checked_sub(py).filter(|&iy| iy < h) else {
                            continue;
                        };
                        for q in 0..kw {
                            let Some(ix) = (j * sx + q).checked_sub(px).filter(|&ix| ix < w) else {
                                continue;
                            };
                            let v = xp[iy * w + ix];
                            if v > m || v.is_nan() {
                                m = v;
                            }
                            if m.is_nan() {
                                break;
                            }
                        }
                    }
                    y[i * ow + j] = m;
                }
            }
        });
    Ok(out)
}

/// Average pooling, PyTorch's `F.avg_pool2d` (floor mode): the sum of the
/// window's in-bounds elements divided by `kh·kw` when `count_include_pad`
/// (padding counts as zeros), else by the number of in-bounds elements.
pub fn avg_pool2d<T: Real>(x: &Tensor<T>, attrs: &AvgPool2dAttrs) -> Result<Tensor<T>> {
    let [n, c, h, w, oh, ow] =
        pool_dims("avg-pool2d", x, attrs.kernel, attrs.stride, attrs.padding)?;
    let ([kh, kw], [sy, sx], [py, px]) = (attrs.kernel, attrs.stride, attrs.padding);
    let xd = x.data();
    let mut out = Tensor::zeros(vec![n, c, oh, ow])?;
    out.data_mut()
        .par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(plane, y)| {
            let xp = &xd[plane * h * w..][..h * w];
            for i in 0..oh {
                for j in 0..ow {
                    let mut sum = T::zero();
                    let mut count = 0usize;
                    for p in 0..kh {
                        let Some(iy) = (i * sy + p).checked_sub(py).filter(|&iy| iy < h) else {
                            continue;
                        };
                        for q in 0..kw {
                            let Some(ix) = (j * sx + q).checked_sub(px).filter(|&ix| ix < w) else {
                                continue;
                            };
                            sum = sum + xp[iy * w + ix];
                            count += 1;
                        }
                    }
                    let divisor = if attrs.count_include_pad {
                        kh * kw
                    } else {
                        count
                    };
                    y[i * ow + j] = sum / T::of(divisor as f64);
                }
            }
        });
    Ok(out)
}

/// `[N, d1, d2, …] → [N, d1·d2·…]`; the data is unchanged (row-major).
pub fn flatten<T: Clone>(x: &Tensor<T>) -> Result<Tensor<T>> {
    if x.rank() < 2 {
        return invalid(
            "flatten",
            format!("input must have rank ≥ 2, but has shape {:?}", x.shape()),
        );
    }
    let n = x.shape()[0];
    let rest = x.shape()[1..].iter().product();
    Ok(x.clone().reshape(vec![n, rest])?)
}

/// Fully connected layer, PyTorch's `F.linear`:
/// `y[n, o] = b[o] + Σ_i x[n, i] · w[o, i]`. `x` is `[N, in]`, `w` is
/// `[out, in]`, `bias` is `[out]` and given exactly when `attrs.bias` is set.
pub fn linear<T: Real>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    attrs: &LinearAttrs,
) -> Result<Tensor<T>> {
    const OP: &str = "linear";
    let (&[n, fin], &[fout, win]) = (x.shape(), w.shape()) else {
        return invalid(
            OP,
            format!(
                "input {:?} and weight {:?} must both be matrices",
                x.shape(),
                w.shape()
            ),
        );
    };
    if win != fin || fout != attrs.out_features {
        return invalid(
            OP,
            format!(
                "weight {:?} does not fit input {:?} and out_features={}",
                w.shape(),
                x.shape(),
                attrs.out_features
            ),
        );
    }
    check_bias(OP, attrs.bias, bias, fout)?;
    let (xd, wdata) = (x.data(), w.data());
    let mut out = Tensor::zeros(vec![n, fout])?;
    out.data_mut()
        .par_iter_mut()
        .enumerate()
        .for_each(|(k, y)| {
            let (row, o) = (k / fout, k % fout);
            let xr = &xd[row * fin..][..fin];
            let wr = &wdata[o * fin..][..fin];
            let dot = xr
                .iter()
                .zip(wr)
                .fold(T::zero(), |acc, (&a, &b)| acc + a * b);
            *y = bias.map_or(T::zero(), |b| b.data()[o]) + dot;
        });
    Ok(out)
}

fn check_dropout_p(p: f64) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        invalid("dropout", format!("probability {p} is outside [0, 1)"))
    }
}

/// A training-time dropout mask for a tensor of `shape`: each element is 0
/// with probability `p` and `1 / (1 − p)` otherwise ("inverted" dropout, as
/// PyTorch), so that `y = x · mask` and the backward pass is `dx = dy · mask`.
/// Uniform samples are drawn in f64, one per element in row-major order,
/// so a given RNG state yields the same mask for f32 and f64.
pub fn dropout_mask<T: Real>(
    shape: &[usize],
    attrs: &DropoutAttrs,
    rng: &mut impl Rng,
) -> Result<Tensor<T>> {
    check_dropout_p(attrs.p)?;
    let keep = T::of(1.0 / (1.0 - attrs.p));
    Ok(Tensor::from_flat_fn(shape.to_vec(), |_| {
        if rng.random::<f64>() < attrs.p {
            T::zero()
        } else {
            keep
        }
    })?)
}

/// Dropout with a given mask: `x · mask` elementwise, or the identity when
/// `mask` is `None` (evaluation).
pub fn dropout<T: Real>(x: &Tensor<T>, mask: Option<&Tensor<T>>) -> Result<Tensor<T>> {
    let Some(mask) = mask else {
        return Ok(x.clone());
    };
    if mask.shape() != x.shape() {
        return invalid(
            "dropout",
            format!(
                "mask {:?} does not match input {:?}",
                mask.shape(),
                x.shape()
            ),
        );
    }
    let data = x
        .data()
        .iter()
        .zip(mask.data())
        .map(|(&a, &m)| a * m)
        .collect();
    Ok(Tensor::new(x.shape().to_vec(), data)?)
}

/// Training-time dropout: draws a mask from `rng` ([`dropout_mask`]) and
/// returns the output together with the mask, for the backward pass.
pub fn dropout_train<T: Real>(
    x: &Tensor<T>,
    attrs: &DropoutAttrs,
    rng: &mut impl Rng,
) -> Result<(Tensor<T>, Tensor<T>)> {
    let mask = dropout_mask(x.shape(), attrs, rng)?;
    Ok((dropout(x, Some(&mask))?, mask))
}

/// Splits a shape around `axis` into (product before, length, product after).
fn around_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// Softmax along `axis`: `y = exp(x − max) / Σ exp(x − max)`, the maximum
/// taken along the axis so that no exponent overflows.
pub fn softmax<T: Real>(x: &Tensor<T>, attrs: &SoftmaxAttrs) -> Result<Tensor<T>> {
    let axis = attrs.axis;
    if axis >= x.rank() {
        return invalid(
            "softmax",
            format!("axis {axis} is out of range for shape {:?}", x.shape()),
        );
    }
    let (outer, len, inner) = around_axis(x.shape(), axis);
    let xd = x.data();
    let mut out = Tensor::zeros(x.shape().to_vec())?;
    let yd = out.data_mut();
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * len + k) * inner + i;
            let max = (0..len).map(|k| xd[at(k)]).fold(T::neg_infinity(), T::max);
            let mut sum = T::zero();
            for k in 0..len {
                let e = (xd[at(k)] - max).exp();
                yd[at(k)] = e;
                sum = sum + e;
            }
            for k in 0..len {
                yd[at(k)] = yd[at(k)] / sum;
            }
        }
    }
    Ok(out)
}

/// Concatenation along `axis`; all other dimensions must agree.
pub fn concat<T: Clone>(xs: &[&Tensor<T>], attrs: &ConcatAttrs) -> Result<Tensor<T>> {
    const OP: &str = "concat";
    let axis = attrs.axis;
    let Some(first) = xs.first() else {
        return invalid(OP, "needs at least one operand");
    };
    if axis >= first.rank() {
        return invalid(
            OP,
            format!("axis {axis} is out of range for shape {:?}", first.shape()),
        );
    }
    let mut shape = first.shape().to_vec();
    shape[axis] = 0;
    for x in xs {
        let agrees = x.rank() == first.rank()
            && (0..x.rank()).all(|d| d == axis || x.shape()[d] == first.shape()[d]);
        if !agrees {
            return invalid(
                OP,
                format!(
                    "shapes {:?} and {:?} differ outside axis {axis}",
                    first.shape(),
                    x.shape()
                ),
            );
        }
        shape[axis] += x.shape()[axis];
    }
    let (outer, _, inner) = around_axis(first.shape(), axis);
    let mut data = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for x in xs {
            // Each operand contributes one contiguous block per outer index.
            let block = x.shape()[axis] * inner;
            data.extend_from_slice(&x.data()[o * block..(o + 1) * block]);
        }
    }
    Ok(Tensor::new(shape, data)?)
}

/// Splits along `axis` into consecutive pieces of `attrs.sizes`, which must
/// add up to the dimension.
pub fn split<T: Clone>(x: &Tensor<T>, attrs: &SplitAttrs) -> Result<Vec<Tensor<T>>> {
    const OP: &str = "split";
    let axis = attrs.axis;
    if axis >= x.rank() {
        return invalid(
            OP,
            format!("axis {axis} is out of range for shape {:?}", x.shape()),
        );
    }
    let total = attrs
        .sizes
        .iter()
        .try_fold(0usize, |a, &s| a.checked_add(s));
    if attrs.sizes.is_empty() || total != Some(x.shape()[axis]) {
        return invalid(
            OP,
            format!(
                "sizes {:?} do not add up to {} along axis {axis}",
                attrs.sizes,
                x.shape()[axis]
            ),
        );
    }
    let (outer, len, inner) = around_axis(x.shape(), axis);
    let mut pieces = Vec::with_capacity(attrs.sizes.len());
    let mut start = 0;
    for &size in &attrs.sizes {
        let mut shape = x.shape().to_vec();
        shape[axis] = size;
        let mut data = Vec::with_capacity(outer * size * inner);
        for o in 0..outer {
            let from = (o * len + start) * inner;
            data.extend_from_slice(&x.data()[from..from + size * inner]);
        }
        pieces.push(Tensor::new(shape, data)?);
        start += size;
    }
    Ok(pieces)
}

/// Elementwise sum of two tensors of the same shape.
pub fn add<T: Real>(a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
    if a.shape() != b.shape() {
        return invalid(
            "add",
            format!("shapes {:?} and {:?} differ", a.shape(), b.shape()),
        );
    }
    let data = a
        .data()
        .iter()
        .zip(b.data())
        .map(|(&x, &y)| x + y)
        .collect();
    Ok(Tensor::new(a.shape().to_vec(), data)?)
}

/// Mean over the batch of `−log softmax(logits[n])[labels[n]]`, as PyTorch's
/// `F.cross_entropy` with the default mean reduction. Computed as
/// `max + log Σ exp(x − max) − x[label]` so that large logits do not
/// overflow. `logits` is `[N, C]`, `labels` is `[N]` with each label in
/// `0..C`; the result is a scalar (shape `[]`).
pub fn softmax_cross_entropy<T: Real>(
    logits: &Tensor<T>,
    labels: &Tensor<i64>,
) -> Result<Tensor<T>> {
    let (classes, targets) = cross_entropy_targets("softmax-cross-entropy", logits, labels)?;
    let mut total = T::zero();
    for (sample, &class) in targets.iter().enumerate() {
        let row = &logits.data()[sample * classes..][..classes];
        let max = row.iter().copied().fold(T::neg_infinity(), T::max);
        let sum_exp = row.iter().fold(T::zero(), |acc, &v| acc + (v - max).exp());
        total = total + (max + sum_exp.ln() - row[class]);
    }
    Ok(Tensor::scalar(total / T::of(targets.len() as f64)))
}

/// Checks the operands of the loss and its gradient: logits `[N, C]` with
/// `N, C ≥ 1`, labels `[N]` each in `0..C`. Returns `C` and the labels as
/// indices.
fn cross_entropy_targets<T>(
    op: &'static str,
    logits: &Tensor<T>,
    labels: &Tensor<i64>,
) -> Result<(usize, Vec<usize>)> {
    let &[n, classes] = logits.shape() else {
        return invalid(
            op,
            format!("logits must be [N, C], but have shape {:?}", logits.shape()),
        );
    };
    if labels.shape() != [n] {
        return invalid(
            op,
            format!("labels have shape {:?}, expected [{n}]", labels.shape()),
        );
    }
    if n == 0 || classes == 0 {
        return invalid(op, "the batch and the number of classes must be non-empty");
    }
    let targets = labels
        .data()
        .iter()
        .enumerate()
        .map(|(sample, &label)| {
            usize::try_from(label)
                .ok()
                .filter(|&c| c < classes)
                .ok_or(OpError::LabelOutOfRange {
                    sample,
                    label,
                    classes,
                })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((classes, targets))
}

// ------------------------------------------------------------------------
// Elementwise and shape helpers of training graphs.

/// `f(a, b)` elementwise over two tensors of the same shape.
fn zip_with<T: Real>(
    op: &'static str,
    a: &Tensor<T>,
    b: &Tensor<T>,
    f: impl Fn(T, T) -> T,
) -> Result<Tensor<T>> {
    if a.shape() != b.shape() {
        return invalid(
            op,
            format!("shapes {:?} and {:?} differ", a.shape(), b.shape()),
        );
    }
    let data = a
        .data()
        .iter()
        .zip(b.data())
        .map(|(&x, &y)| f(x, y))
        .collect();
    Ok(Tensor::new(a.shape().to_vec(), data)?)
}

/// Elementwise product of two tensors of the same shape.
pub fn mul<T: Real>(a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
    zip_with("mul", a, b, |x, y| x * y)
}

/// The same elements (row-major) under `attrs.shape`, which must have the
/// same element count.
pub fn reshape<T: Clone>(x: &Tensor<T>, attrs: &ReshapeAttrs) -> Result<Tensor<T>> {
    let shape = attrs.shape.dims();
    if shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) != Some(x.len()) {
        return invalid(
            "reshape",
            format!("cannot reshape {:?} to {shape:?}", x.shape()),
        );
    }
    Ok(x.clone().reshape(shape.to_vec())?)
}

// ------------------------------------------------------------------------
// Fused forward ops. Each is defined as the composition of the unfused ops,
// and computed that way: the reference for a fused kernel is the unfused
// computation, bit for bit.

/// [`conv2d`] then [`relu`].
pub fn conv_relu<T: Real>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    attrs: &Conv2dAttrs,
) -> Result<Tensor<T>> {
    Ok(relu(&conv2d(x, w, bias, attrs)?))
}

/// [`lrn`] then [`max_pool2d`].
pub fn lrn_max_pool<T: Real>(x: &Tensor<T>, attrs: &LrnMaxPoolAttrs) -> Result<Tensor<T>> {
    max_pool2d(&lrn(x, &attrs.lrn)?, &attrs.pool)
}

/// [`linear`], [`relu`], then (with `attrs.dropout`) [`mul`] by the dropout
/// `mask` `[N, out]`, which must be given exactly when `attrs.dropout` is set.
pub fn linear_relu<T: Real>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    mask: Option<&Tensor<T>>,
    attrs: &LinearReluAttrs,
) -> Result<Tensor<T>> {
    let y = relu(&linear(x, w, bias, &attrs.linear)?);
    match (attrs.dropout, mask) {
        (true, Some(m)) => mul(&y, m),
        (false, None) => Ok(y),
        (true, None) => invalid("linear+relu", "attrs.dropout is set but no mask was given"),
        (false, Some(_)) => invalid(
            "linear+relu",
            "a mask was given but attrs.dropout is not set",
        ),
    }
}

// ------------------------------------------------------------------------
// Backward ops: the gradient of a scalar loss with respect to each operand
// of a forward op, given the gradient `dy` with respect to its output.

/// The gradients of a convolution or linear layer, named; the op's results
/// are [`LayerGrads::into_results`].
#[derive(Clone, Debug, PartialEq)]
pub struct LayerGrads<T> {
    /// Gradient with respect to the input; `None` unless `input_grad`.
    pub dx: Option<Tensor<T>>,
    /// Gradient with respect to the weight.
    pub dw: Tensor<T>,
    /// Gradient with respect to the bias; `None` without a bias.
    pub db: Option<Tensor<T>>,
}

impl<T> LayerGrads<T> {
    /// The results in the op's order: `dx` (if computed), `dw`, `db` (if any).
    pub fn into_results(self) -> Vec<Tensor<T>> {
        self.dx
            .into_iter()
            .chain(std::iter::once(self.dw))
            .chain(self.db)
            .collect()
    }
}

/// Gradient of ReLU from its output: `dx = dy · [y > 0]` (zero where `y` is
/// zero or NaN).
pub fn relu_backward<T: Real>(y: &Tensor<T>, dy: &Tensor<T>) -> Result<Tensor<T>> {
    zip_with("relu-backward", y, dy, |yv, g| {
        if yv > T::zero() {
            g
        } else {
            T::zero()
        }
    })
}

/// Gradients of [`conv2d`] at input `x` and weight `w`, given the output
/// gradient `dy` `[N, O, oh, ow]`. With the notation of [`conv2d`]:
///
/// - `db[o] = Σ_{n, i, j} dy[n, o, i, j]`
/// - `dw[o, c, p, q] = Σ_{n, i, j} dy[n, o, i, j] · x[n, g·C/G + c, i·s + p·d − pad, j·s + q·d − pad]`
/// - `dx[n, g·C/G + c, u, v] = Σ dy[n, o, i, j] · w[o, c, p, q]` over the
///   output channels `o` of group `g` and the taps with
///   `i·s + p·d − pad = u`, `j·s + q·d − pad = v`
///
/// (terms reading padding are absent). `dx` is computed only with
/// `attrs.input_grad`, `db` only with `attrs.conv.bias`. Each `dw` element
/// sums over `(n, i, j)` in row-major order; each `dx` plane accumulates over
/// `(o, p, q, i, j)` in that order.
pub fn conv2d_backward<T: Real>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    dy: &Tensor<T>,
    attrs: &Conv2dBackwardAttrs,
) -> Result<LayerGrads<T>> {
    const OP: &str = "conv2d-backward";
    let a = &attrs.conv;
    let ConvShape {
        n,
        c,
        h,
        w: wd,
        oc,
        cg,
        kh,
        kw,
        oh,
        ow,
    } = conv_shape(OP, x, w, a)?;
    expect_shape(OP, "the output gradient", dy, &[n, oc, oh, ow])?;
    let [sy, sx] = a.stride;
    let [py, px] = a.padding;
    let [dly, dlx] = a.dilation;
    let oc_per_group = oc / a.groups;
    let (xd, wdata, gd) = (x.data(), w.data(), dy.data());

    // dw: one kernel plane (o, ci) per task.
    let mut dw = Tensor::zeros(w.shape().to_vec())?;
    if kh * kw > 0 {
        dw.data_mut()
            .par_chunks_mut(kh * kw)
            .enumerate()
            .for_each(|(k, dw_kernel)| {
                let (o, ci) = (k / cg, k % cg);
                let g = o / oc_per_group;
                for p in 0..kh {
                    let (i0, i1) = valid_outputs(oh, sy, p * dly, py, h);
                    for q in 0..kw {
                        let (j0, j1) = valid_outputs(ow, sx, q * dlx, px, wd);
                        let mut acc = T::zero();
                        if j0 < j1 {
                            for b in 0..n {
                                let x_plane = &xd[(b * c + g * cg + ci) * h * wd..][..h * wd];
                                let g_plane = &gd[(b * oc + o) * oh * ow..][..oh * ow];
                                for i in i0..i1 {
                                    let x_row = &x_plane[(i * sy + p * dly - py) * wd..][..wd];
                                    let first = j0 * sx + q * dlx - px;
                                    let g_row = &g_plane[i * ow + j0..i * ow + j1];
                                    for (&gv, &xv) in
                                        g_row.iter().zip(x_row[first..].iter().step_by(sx))
                                    {
                                        acc = acc + gv * xv;
                                    }
                                }
                            }
                        }
                        dw_kernel[p * kw + q] = acc;
                    }
                }
            });
    }

    // dx: one input plane (n, channel) per task, scattering from the output
    // positions whose windows read it.
    let dx = if attrs.input_grad {
        let mut dx = Tensor::zeros(x.shape().to_vec())?;
        if h * wd > 0 {
            dx.data_mut()
                .par_chunks_mut(h * wd)
                .enumerate()
                .for_each(|(plane, dx_plane)| {
                    let (b, ch) = (plane / c, plane % c);
                    let (g, ci) = (ch / cg, ch % cg);
                    for o in g * oc_per_group..(g + 1) * oc_per_group {
                        let g_plane = &gd[(b * oc + o) * oh * ow..][..oh * ow];
                        let w_kernel = &wdata[(o * cg + ci) * kh * kw..][..kh * kw];
                        for p in 0..kh {
                            let (i0, i1) = valid_outputs(oh, sy, p * dly, py, h);
                            for q in 0..kw {
                                let wv = w_kernel[p * kw + q];
                                let (j0, j1) = valid_outputs(ow, sx, q * dlx, px, wd);
                                if j0 >= j1 {
                                    continue;
                                }
                                for i in i0..i1 {
                                    let row = (i * sy + p * dly - py) * wd;
                                    let first = j0 * sx + q * dlx - px;
                                    let dx_row = &mut dx_plane[row..row + wd];
                                    let g_row = &g_plane[i * ow + j0..i * ow + j1];
                                    for (dxv, &gv) in
                                        dx_row[first..].iter_mut().step_by(sx).zip(g_row)
                                    {
                                        *dxv = *dxv + wv * gv;
                                    }
                                }
                            }
                        }
                    }
                });
        }
        Some(dx)
    } else {
        None
    };

    let db = if a.bias {
        Some(Tensor::from_flat_fn(vec![oc], |o| {
            (0..n).fold(T::zero(), |acc, b| {
                gd[(b * oc + o) * oh * ow..][..oh * ow]
                    .iter()
                    .fold(acc, |acc, &g| acc + g)
            })
        })?)
    } else {
        None
    };
    Ok(LayerGrads { dx, dw, db })
}

/// Gradients of [`conv_relu`]: [`relu_backward`] with the fused output `y`,
/// then [`conv2d_backward`].
pub fn conv_relu_backward<T: Real>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    y: &Tensor<T>,
    dy: &Tensor<T>,
    attrs: &Conv2dBackwardAttrs,
) -> Result<LayerGrads<T>> {
    conv2d_backward(x, w, &relu_backward(y, dy)?, attrs)
}

/// Gradients of [`linear`] (and, with `attrs.relu` / `attrs.dropout`, of
/// [`linear_relu`]); the operands are those of the op: `x`, `w`, the fused
/// output `y` (given exactly with `relu`), the dropout `mask` (given exactly
/// with `dropout`, which needs `relu`), and `dy`.
///
/// The gradient `dz` at the linear output is `dy`, or with the fused
/// epilogue `dz = [y > 0] · (dy · mask)` (the ReLU's mask read from the
/// fused output: where the dropout mask is zero `dy · mask` is zero anyway).
/// Then `dx = dz · W` (`[N, in]`, if `input_grad`), `dw = dzᵀ · x`
/// (`[out, in]`) and `db = Σ_n dz` (if the layer has a bias); every element
/// accumulates in increasing order of the summed index.
pub fn linear_backward<T: Real>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    y: Option<&Tensor<T>>,
    mask: Option<&Tensor<T>>,
    dy: &Tensor<T>,
    attrs: &LinearBackwardAttrs,
) -> Result<LayerGrads<T>> {
    const OP: &str = "linear-backward";
    let (&[n, fin], &[fout, win]) = (x.shape(), w.shape()) else {
        return invalid(
            OP,
            format!(
                "input {:?} and weight {:?} must both be matrices",
                x.shape(),
                w.shape()
            ),
        );
    };
    if win != fin || fout != attrs.linear.out_features {
        return invalid(
            OP,
            format!(
                "weight {:?} does not fit input {:?} and out_features={}",
                w.shape(),
                x.shape(),
                attrs.linear.out_features
            ),
        );
    }
    if attrs.dropout && !attrs.relu {
        return invalid(OP, "dropout is folded in only together with relu");
    }
    if y.is_some() != attrs.relu || mask.is_some() != attrs.dropout {
        return invalid(
            OP,
            "the fused output must be given exactly with relu, the mask exactly with dropout",
        );
    }
    let out_shape = [n, fout];
    expect_shape(OP, "the output gradient", dy, &out_shape)?;
    let mut dz = dy.clone();
    if let Some(mask) = mask {
        expect_shape(OP, "the dropout mask", mask, &out_shape)?;
        dz = mul(&dz, mask)?;
    }
    if let Some(y) = y {
        expect_shape(OP, "the fused output", y, &out_shape)?;
        dz = relu_backward(y, &dz)?;
    }
    let (xd, wdata, gd) = (x.data(), w.data(), dz.data());

    let dx = if attrs.input_grad {
        let mut dx = Tensor::zeros(vec![n, fin])?;
        if fin > 0 {
            dx.data_mut()
                .par_chunks_mut(fin)
                .enumerate()
                .for_each(|(row, dx_row)| {
                    for o in 0..fout {
                        let g = gd[row * fout + o];
                        for (d, &wv) in dx_row.iter_mut().zip(&wdata[o * fin..][..fin]) {
                            *d = *d + g * wv;
                        }
                    }
                });
        }
        Some(dx)
    } else {
        None
    };
    let mut dw = Tensor::zeros(vec![fout, fin])?;
    if fin > 0 {
        dw.data_mut()
            .par_chunks_mut(fin)
            .enumerate()
            .for_each(|(o, dw_row)| {
                for row in 0..n {
                    let g = gd[row * fout + o];
                    for (d, &xv) in dw_row.iter_mut().zip(&xd[row * fin..][..fin]) {
                        *d = *d + g * xv;
                    }
                }
            });
    }
    let db = if attrs.linear.bias {
        Some(Tensor::from_flat_fn(vec![fout], |o| {
            (0..n).fold(T::zero(), |acc, row| acc + gd[row * fout + o])
        })?)
    } else {
        None
    };
    Ok(LayerGrads { dx, dw, db })
}

/// The channels `c` whose LRN window contains channel `m`, as an inclusive
/// range: the inverse of [`LrnAttrs::window`]. `lo(c) ≤ m` iff
/// `c ≤ m + size/2`, and `m ≤ hi(c)` iff `c ≥ m − (size−1)/2` (the clip at
/// `C − 1` never excludes `m < C`).
fn lrn_readers(attrs: &LrnAttrs, m: usize, channels: usize) -> (usize, usize) {
    let lo = m.saturating_sub(attrs.size.saturating_sub(1) / 2);
    let hi = m
        .saturating_add(attrs.size / 2)
        .min(channels.saturating_sub(1));
    (lo, hi)
}

/// Gradient of [`lrn`] at input `x`. With `D_c = k + α' Σ_{j ∈ W(c)} x_j²`
/// (see [`LrnAttrs`]) and `y_c = x_c · D_c^{−β}`,
///
/// `∂y_c/∂x_m = [c = m] · D_c^{−β} − 2α'β · x_c · x_m · D_c^{−β−1} · [m ∈ W(c)]`,
///
/// so, summing over the channels `c` whose window contains `m`,
///
/// `dx_m = dy_m · D_m^{−β} − 2α'β · x_m · Σ_{c : m ∈ W(c)} dy_c · x_c · D_c^{−β−1}`
///
/// at every batch index and spatial position. The cross-channel sum runs in
/// increasing `c`.
pub fn lrn_backward<T: Real>(x: &Tensor<T>, dy: &Tensor<T>, attrs: &LrnAttrs) -> Result<Tensor<T>> {
    const OP: &str = "lrn-backward";
    let d = lrn_denominators(OP, x, attrs)?;
    expect_shape(OP, "the output gradient", dy, x.shape())?;
    let (channels, inner) = lrn_dims(OP, x, attrs)?;
    let beta = T::of(attrs.beta);
    let two_alpha_beta = T::of(2.0 * attrs.effective_alpha() * attrs.beta);
    let (xd, gd, dd) = (x.data(), dy.data(), d.data());
    // What each output sends back through its own denominator:
    // dy_c · x_c · D_c^(−β−1).
    let through: Vec<T> = xd
        .iter()
        .zip(gd)
        .zip(dd)
        .map(|((&xv, &g), &den)| g * xv * den.powf(-beta - T::one()))
        .collect();
    let mut dx = Tensor::zeros(x.shape().to_vec())?;
    if inner == 0 {
        return Ok(dx);
    }
    dx.data_mut()
        .par_chunks_mut(inner)
        .enumerate()
        .for_each(|(plane, dx_plane)| {
            let (b, m) = (plane / channels, plane % channels);
            let (lo, hi) = lrn_readers(attrs, m, channels);
            let batch = b * channels * inner;
            for (s, dxv) in dx_plane.iter_mut().enumerate() {
                let at = batch + m * inner + s;
                let mut cross = T::zero();
                for c in lo..=hi {
                    cross = cross + through[batch + c * inner + s];
                }
                *dxv = gd[at] / dd[at].powf(beta) - two_alpha_beta * xd[at] * cross;
            }
        });
    Ok(dx)
}

/// The plane offset of the element that max-pooling output `(i, j)` takes:
/// the first maximum in row-major window order, as PyTorch. The candidate
/// starts at the window's first in-bounds element, so `-inf` padding never
/// wins (a window of `-inf` values sends its gradient to its first element);
/// a later element replaces it if it is strictly greater or NaN. That is
/// PyTorch's rule (`val > max || isnan(val)`), so with NaNs in a window (the
/// forward output is then NaN) the gradient goes to the last NaN.
fn max_pool_argmax<T: Real>(
    plane: &[T],
    [h, w]: [usize; 2],
    [i, j]: [usize; 2],
    attrs: &Pool2dAttrs,
) -> Option<usize> {
    let ([kh, kw], [sy, sx], [py, px]) = (attrs.kernel, attrs.stride, attrs.padding);
    let mut best: Option<(usize, T)> = None;
    for p in 0..kh {
        let Some(iy) = (i * sy + p).checked_sub(py).filter(|&iy| iy < h) else {
            continue;
        };
        for q in 0..kw {
            let Some(ix) = (j * sx + q).checked_sub(px).filter(|&ix| ix < w) else {
                continue;
            };
            let at = iy * w + ix;
            let v = plane[at];
            best = match best {
                None => Some((at, v)),
                Some((_, m)) if v > m || v.is_nan() => Some((at, v)),
                keep => keep,
            };
        }
    }
    best.map(|(at, _)| at)
}

/// Gradient of [`max_pool2d`] at input `x`: each output gradient goes to
/// the element its window selected (see `max_pool_argmax`: ties go to the
/// first maximum in row-major window order); elements selected by several
/// overlapping windows receive the sum, accumulated in row-major output order.
pub fn max_pool2d_backward<T: Real>(
    x: &Tensor<T>,
    dy: &Tensor<T>,
    attrs: &Pool2dAttrs,
) -> Result<Tensor<T>> {
    const OP: &str = "max-pool2d-backward";
    let [n, c, h, w, oh, ow] = pool_dims(OP, x, attrs.kernel, attrs.stride, attrs.padding)?;
    expect_shape(OP, "the output gradient", dy, &[n, c, oh, ow])?;
    let (xd, gd) = (x.data(), dy.data());
    let mut dx = Tensor::zeros(x.shape().to_vec())?;
    if h * w == 0 {
        return Ok(dx);
    }
    dx.data_mut()
        .par_chunks_mut(h * w)
        .enumerate()
        .for_each(|(plane, dx_plane)| {
            let xp = &xd[plane * h * w..][..h * w];
            let gp = &gd[plane * oh * ow..][..oh * ow];
            for i in 0..oh {
                for j in 0..ow {
                    if let Some(at) = max_pool_argmax(xp, [h, w], [i, j], attrs) {
                        dx_plane[at] = dx_plane[at] + gp[i * ow + j];
                    }
                }
            }
        });
    Ok(dx)
}

/// Gradient of [`avg_pool2d`] at input `x` (only its shape matters): each
/// output gradient, divided by its window's divisor (`kh·kw` with
/// `count_include_pad`, else the number of in-bounds elements), is added to
/// every in-bounds element of the window, in row-major output order.
pub fn avg_pool2d_backward<T: Real>(
    x: &Tensor<T>,
    dy: &Tensor<T>,
    attrs: &AvgPool2dAttrs,
) -> Result<Tensor<T>> {
    const OP: &str = "avg-pool2d-backward";
    let [n, c, h, w, oh, ow] = pool_dims(OP, x, attrs.kernel, attrs.stride, attrs.padding)?;
    expect_shape(OP, "the output gradient", dy, &[n, c, oh, ow])?;
    let ([kh, kw], [sy, sx], [py, px]) = (attrs.kernel, attrs.stride, attrs.padding);
    let gd = dy.data();
    let mut dx = Tensor::zeros(x.shape().to_vec())?;
    if h * w == 0 {
        return Ok(dx);
    }
    // The in-bounds input positions of one window, along one axis.
    let rows =
        |i: usize| (0..kh).filter_map(move |p| (i * sy + p).checked_sub(py).filter(|&r| r < h));
    let cols =
        |j: usize| (0..kw).filter_map(move |q| (j * sx + q).checked_sub(px).filter(|&c| c < w));
    dx.data_mut()
        .par_chunks_mut(h * w)
        .enumerate()
        .for_each(|(plane, dx_plane)| {
            let gp = &gd[plane * oh * ow..][..oh * ow];
            for i in 0..oh {
                for j in 0..ow {
                    let divisor = if attrs.count_include_pad {
                        kh * kw
                    } else {
                        rows(i).count() * cols(j).count()
                    };
                    let share = gp[i * ow + j] / T::of(divisor as f64);
                    for iy in rows(i) {
                        for ix in cols(j) {
                            dx_plane[iy * w + ix] = dx_plane[iy * w + ix] + share;
                        }
                    }
                }
            }
        });
    Ok(dx)
}

/// Gradient of [`lrn_max_pool`]: the LRN output is recomputed, then
/// [`max_pool2d_backward`] on it and [`lrn_backward`] at `x`.
pub fn lrn_max_pool_backward<T: Real>(
    x: &Tensor<T>,
    dy: &Tensor<T>,
    attrs: &LrnMaxPoolAttrs,
) -> Result<Tensor<T>> {
    let y = lrn(x, &attrs.lrn)?;
    let dpool = max_pool2d_backward(&y, dy, &attrs.pool)?;
    lrn_backward(x, &dpool, &attrs.lrn)
}

/// Gradient of [`softmax`] from its output `y`: along the axis,
/// `dx_k = y_k · (dy_k − Σ_j y_j · dy_j)`.
pub fn softmax_backward<T: Real>(
    y: &Tensor<T>,
    dy: &Tensor<T>,
    attrs: &SoftmaxAttrs,
) -> Result<Tensor<T>> {
    const OP: &str = "softmax-backward";
    let axis = attrs.axis;
    if axis >= y.rank() {
        return invalid(
            OP,
            format!("axis {axis} is out of range for shape {:?}", y.shape()),
        );
    }
    expect_shape(OP, "the output gradient", dy, y.shape())?;
    let (outer, len, inner) = around_axis(y.shape(), axis);
    let (yd, gd) = (y.data(), dy.data());
    let mut dx = Tensor::zeros(y.shape().to_vec())?;
    let out = dx.data_mut();
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * len + k) * inner + i;
            let dot = (0..len).fold(T::zero(), |acc, k| acc + yd[at(k)] * gd[at(k)]);
            for k in 0..len {
                out[at(k)] = yd[at(k)] * (gd[at(k)] - dot);
            }
        }
    }
    Ok(dx)
}

/// Gradient of [`softmax_cross_entropy`] with respect to the logits:
/// `(softmax(logits) − onehot(labels)) / N`, the softmax computed by
/// [`softmax`] along axis 1. A label outside `0..C` is an error, as in the
/// forward op.
pub fn softmax_cross_entropy_backward<T: Real>(
    logits: &Tensor<T>,
    labels: &Tensor<i64>,
) -> Result<Tensor<T>> {
    let (classes, targets) =
        cross_entropy_targets("softmax-cross-entropy-backward", logits, labels)?;
    let mut dx = softmax(logits, &SoftmaxAttrs { axis: 1 })?;
    let n = T::of(targets.len() as f64);
    for (row, &class) in dx.data_mut().chunks_mut(classes).zip(&targets) {
        for (k, v) in row.iter_mut().enumerate() {
            let p = if k == class { *v - T::one() } else { *v };
            *v = p / n;
        }
    }
    Ok(dx)
}

// ------------------------------------------------------------------------
// The optimizer.

/// The result of one [`sgd_update`]: the new parameter and momentum.
#[derive(Clone, Debug, PartialEq)]
pub struct SgdStep<T> {
    pub w: Tensor<T>,
    pub v: Tensor<T>,
}

/// One SGD-with-momentum step for parameter `w` with momentum `v`, gradient
/// `g` and learning rate `lr` (a scalar, shape `[]`), with `μ` =
/// `attrs.momentum`, `λ` = `attrs.weight_decay`, `ε` = `lr`, per
/// [`SgdConvention`]:
///
/// - `Paper`: `v' = μ·v − (λ·ε)·w − ε·g`, then `w' = w + v'`;
/// - `Pytorch`: `v' = μ·v + g + λ·w`, then `w' = w − ε·v'`.
///
/// Each expression is evaluated left to right exactly as written (μ and λ
/// rounded to `T` first), which backends must match to within rounding.
/// From zero momentum and with a constant learning rate the two conventions
/// give the same parameters (`v_paper = −ε·v_pytorch` at every step); they
/// differ once the rate changes or from a momentum not related that way.
pub fn sgd_update<T: Real>(
    w: &Tensor<T>,
    v: &Tensor<T>,
    g: &Tensor<T>,
    lr: &Tensor<T>,
    attrs: &SgdAttrs,
) -> Result<SgdStep<T>> {
    const OP: &str = "sgd-update";
    expect_shape(OP, "the momentum", v, w.shape())?;
    expect_shape(OP, "the gradient", g, w.shape())?;
    let eps = match (lr.shape(), lr.data()) {
        ([], &[eps]) => eps,
        _ => {
            return invalid(
                OP,
                format!(
                    "the learning rate must be a scalar, but has shape {:?}",
                    lr.shape()
                ),
            )
        }
    };
    if !(attrs.momentum.is_finite() && attrs.weight_decay.is_finite()) {
        return invalid(OP, "momentum and weight decay must be finite");
    }
    let (mu, lambda) = (T::of(attrs.momentum), T::of(attrs.weight_decay));
    let (new_w, new_v): (Vec<T>, Vec<T>) = w
        .data()
        .iter()
        .zip(v.data())
        .zip(g.data())
        .map(|((&wv, &vv), &gv)| match attrs.convention {
            SgdConvention::Paper => {
                let v1 = mu * vv - lambda * eps * wv - eps * gv;
                (wv + v1, v1)
            }
            SgdConvention::Pytorch => {
                let v1 = mu * vv + gv + lambda * wv;
                (wv - eps * v1, v1)
            }
        })
        .unzip();
    Ok(SgdStep {
        w: Tensor::new(w.shape().to_vec(), new_w)?,
        v: Tensor::new(w.shape().to_vec(), new_v)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alexc_ir::AlphaConvention;

    /// `lrn_readers` is the exact inverse of `LrnAttrs::window`.
    #[test]
    fn lrn_readers_inverts_the_window() {
        for size in 1..8 {
            let attrs = LrnAttrs {
                size,
                alpha: 1.0,
                beta: 1.0,
                k: 1.0,
                alpha_convention: AlphaConvention::Absolute,
            };
            for channels in 1..11 {
                for m in 0..channels {
                    let readers: Vec<usize> = (0..channels)
                        .filter(|&c| {
                            let (lo, hi) = attrs.window(c, channels);
                            (lo..=hi).contains(&m)
                        })
                        .collect();
                    let (lo, hi) = lrn_readers(&attrs, m, channels);
                    assert_eq!(
                        readers,
                        (lo..=hi).collect::<Vec<_>>(),
                        "size {size}, C {channels}, m {m}"
                    );
                }
            }
        }
    }
}
