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
//! Every function validates its operands and attributes itself and returns an
//! [`OpError`] instead of panicking, since they are public and may be called
//! with tensors that never went through shape inference.

use alexc_ir::{
    AvgPool2dAttrs, ConcatAttrs, Conv2dAttrs, DropoutAttrs, LinearAttrs, LrnAttrs, Pool2dAttrs,
    SoftmaxAttrs, SplitAttrs,
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
    let [n, c, h, wd] = dims4(x, OP, "input")?;
    let [oc, cg, kh, kw] = dims4(w, OP, "weight")?;
    let groups = attrs.groups;
    if groups == 0 || oc % groups != 0 || cg.checked_mul(groups) != Some(c) {
        return invalid(
            OP,
            format!(
                "groups={groups} does not fit input channels {c}, weight {:?}",
                w.shape()
            ),
        );
    }
    if oc != attrs.out_channels || [kh, kw] != attrs.kernel {
        return invalid(
            OP,
            format!(
                "weight {:?} does not match out_channels={} kernel={:?}",
                w.shape(),
                attrs.out_channels,
                attrs.kernel
            ),
        );
    }
    match (attrs.bias, bias) {
        (true, Some(b)) if b.shape() == [oc] => {}
        (true, Some(b)) => {
            return invalid(
                OP,
                format!("bias has shape {:?}, expected [{oc}]", b.shape()),
            )
        }
        (true, None) => return invalid(OP, "attrs.bias is set but no bias was given"),
        (false, Some(_)) => return invalid(OP, "a bias was given but attrs.bias is not set"),
        (false, None) => {}
    }
    let [sy, sx] = attrs.stride;
    let [py, px] = attrs.padding;
    let [dy, dx] = attrs.dilation;
    let oh = window_output(OP, h, kh, sy, py, dy)?;
    let ow = window_output(OP, wd, kw, sx, px, dx)?;

    let mut out = Tensor::zeros(vec![n, oc, oh, ow])?;
    let (xd, wdata) = (x.data(), w.data());
    let oc_per_group = oc / groups;
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
    const OP: &str = "lrn";
    if x.rank() < 2 {
        return invalid(
            OP,
            format!("input must be [N, C, …], but has shape {:?}", x.shape()),
        );
    }
    if attrs.size == 0 {
        return invalid(OP, "size must be at least 1");
    }
    if ![attrs.alpha, attrs.beta, attrs.k]
        .iter()
        .all(|v| v.is_finite())
    {
        return invalid(OP, "alpha, beta and k must be finite");
    }
    let channels = x.shape()[1];
    let inner: usize = x.shape()[2..].iter().product();
    let alpha = T::of(attrs.effective_alpha());
    let (beta, k) = (T::of(attrs.beta), T::of(attrs.k));
    let xd = x.data();
    let mut out = Tensor::zeros(x.shape().to_vec())?;
    if inner == 0 {
        return Ok(out);
    }
    out.data_mut()
        .par_chunks_mut(inner)
        .enumerate()
        .for_each(|(plane, y)| {
            let (b, ch) = (plane / channels, plane % channels);
            let (lo, hi) = attrs.window(ch, channels);
            let batch = &xd[b * channels * inner..][..channels * inner];
            for (s, yv) in y.iter_mut().enumerate() {
                let mut sum = T::zero();
                for j in lo..=hi {
                    let a = batch[j * inner + s];
                    sum = sum + a * a;
                }
                *yv = batch[ch * inner + s] / (k + alpha * sum).powf(beta);
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
    match (attrs.bias, bias) {
        (true, Some(b)) if b.shape() == [fout] => {}
        (true, Some(b)) => {
            return invalid(
                OP,
                format!("bias has shape {:?}, expected [{fout}]", b.shape()),
            )
        }
        (true, None) => return invalid(OP, "attrs.bias is set but no bias was given"),
        (false, Some(_)) => return invalid(OP, "a bias was given but attrs.bias is not set"),
        (false, None) => {}
    }
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
    const OP: &str = "softmax-cross-entropy";
    let &[n, classes] = logits.shape() else {
        return invalid(
            OP,
            format!("logits must be [N, C], but have shape {:?}", logits.shape()),
        );
    };
    if labels.shape() != [n] {
        return invalid(
            OP,
            format!("labels have shape {:?}, expected [{n}]", labels.shape()),
        );
    }
    if n == 0 || classes == 0 {
        return invalid(OP, "the batch and the number of classes must be non-empty");
    }
    let mut total = T::zero();
    for (sample, &label) in labels.data().iter().enumerate() {
        let class = usize::try_from(label).ok().filter(|&c| c < classes).ok_or(
            OpError::LabelOutOfRange {
                sample,
                label,
                classes,
            },
        )?;
        let row = &logits.data()[sample * classes..][..classes];
        let max = row.iter().copied().fold(T::neg_infinity(), T::max);
        let sum_exp = row.iter().fold(T::zero(), |acc, &v| acc + (v - max).exp());
        total = total + (max + sum_exp.ln() - row[class]);
    }
    Ok(Tensor::scalar(total / T::of(n as f64)))
}
