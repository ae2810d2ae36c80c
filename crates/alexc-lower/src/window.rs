//! Lowering of the window ops: LRN, max- and average-pooling, the fused
//! LRN + max-pool, and their gradients.
//!
//! **Loop structure.** Every kernel runs one independent output element per
//! innermost iteration, with the window loops *inside* it:
//!
//! ```text
//! for p in 0..N·C (parallel)          // one (sample, channel) plane; n = p / C, c = p % C
//!   for i in 0..OH                    // output rows
//!     for j in 0..OW (vector blocks + scalar remainder)
//!       for ki, kj (unrolled)         // the window
//!         …                           // padded reads are LoadOr (−∞ for max, 0 for sums)
//!       y[n, c, i, j] = …
//! ```
//!
//! The plane loop is the parallel one: N·C is large for every layer even at
//! batch 1, and planes never share an output element. The innermost loop
//! walks contiguous output columns, so it is the vectorized one (with a
//! stride `s > 1` its window reads are strided gathers). The window loops
//! are `Unrolled` — their extents are small constants — so the vectorized
//! loop's body is straight-line code; when a window is too large to unroll
//! (more than [`MAX_UNROLL`] iterations in all) its loops stay serial and
//! the column loop is not vectorized. Padded reads use `LoadOr`, so no
//! access needs an `if`: every other index is provable from loop extents.
//!
//! **Numerics.** Each element accumulates in the reference's order; reads of
//! padding add `+0` (sums) or `−∞` (max), which changes nothing, so results
//! under the evaluator are bit-identical to `alexc_interp::ops`. The max is
//! `v > m || v ≠ v` (NaN propagates, PyTorch's rule), never IEEE `max`.
//!
//! **LRN.** `y = x / (k + α'·Σ_window x²)^β` over the channel window
//! `[c − size/2, c + (size−1)/2]`, read with `LoadOr(…, 0)` so the window
//! clips at the edges for free. The fused LRN + max-pool computes every LRN
//! value a pool window reads on the fly and never stores the LRN output:
//! each output costs `kh·kw·(size + 1)` loads and `kh·kw` powers, i.e. the
//! LRN work is repeated about `kh·kw / (sy·sx)` times (2.25× for AlexNet's
//! 3×3/2 pools) in exchange for one pass over memory instead of three. A
//! sliding channel sum (`S(c+1) = S(c) + x²(c + …) − x²(c − …)`) would make
//! each LRN value O(1) instead of O(size), but it sums in a different order
//! than the reference (and the subtraction cancels), and its dependence
//! along the channel axis would forbid making the plane loop parallel; at
//! `size = 5` the window sum is not the cost (the power is), so it is not
//! done.
//!
//! **Gradients as gathers.** The backward ops are written as gathers: each
//! input-gradient element visits the output positions whose windows contain
//! it (at most `⌈kh/sy⌉·⌈kw/sx⌉`, enumerated in increasing row-major order,
//! which is the reference's accumulation order), so the parallel plane loop
//! never has two iterations writing one element and no zero-init pass is
//! needed. For max-pool each such window's argmax is recomputed (first
//! maximum in row-major window order; padding never wins; NaN wins, as
//! PyTorch): `⌈kh/sy⌉·⌈kw/sx⌉·kh·kw` loads per element (36 for 3×3/2),
//! the price of a gather without stored indices. The LRN gradient
//! recomputes `D_c` for each of the `size` channels whose window contains
//! the element (O(size²) loads, `size + 1` powers per element), since a
//! node's kernels cannot pass a temporary to each other. The fused
//! LRN + max-pool gradient processes one input row `(n, y)` per parallel
//! iteration: it gathers the pool gradient of that row for every channel into
//! a local `[C, W]` buffer (LRN values recomputed on the fly), then applies
//! the LRN gradient across channels from that buffer.

use alexc_ir::{AvgPool2dAttrs, LrnAttrs, Op, Pool2dAttrs};
use alexc_kernel::{
    Access, BinOp, BufId, Cmp, Cond, DType, Expr, Idx, KernelBuilder, LoopKind, Schedule, Stmt,
    VarId,
};

use crate::elementwise::{
    c, kernel_name, minus, numel, operand_f32, outer_kind, plus, result_f32, strip, vector_width,
};
use crate::{Arg, LowerError, LoweredKernel, NodeCtx};

/// The most iterations (all nested window loops together) that are
/// unrolled inside a vectorized loop.
const MAX_UNROLL: usize = 256;

/// Lowers one node of this module's ops.
pub fn lower(ctx: &NodeCtx<'_>) -> Result<Vec<LoweredKernel>, LowerError> {
    let kernel = match &ctx.node().op {
        Op::Lrn(a) => lrn(ctx, a)?,
        Op::LrnBackward(a) => lrn_backward(ctx, a)?,
        Op::MaxPool2d(a) => pool(ctx, &Pool::max(a), None)?,
        Op::AvgPool2d(a) => pool(ctx, &Pool::avg(a), None)?,
        Op::LrnMaxPool(a) => pool(ctx, &Pool::max(&a.pool), Some(Lrn::new(ctx, &a.lrn)?))?,
        Op::MaxPool2dBackward(a) => pool_backward(ctx, &Pool::max(a))?,
        Op::AvgPool2dBackward(a) => pool_backward(ctx, &Pool::avg(a))?,
        Op::LrnMaxPoolBackward(a) => lrn_max_pool_backward(ctx, &Pool::max(&a.pool), &a.lrn)?,
        op => return Err(ctx.invalid(format!("{} is not a window op", op.name()))),
    };
    Ok(vec![kernel])
}

// ------------------------------------------------------------------------
// Small constructors.

fn ld(buf: BufId, index: Vec<Idx>) -> Expr {
    Expr::load(buf, index)
}
fn ld_or(buf: BufId, index: Vec<Idx>, default: f32) -> Expr {
    Expr::LoadOr {
        buf,
        index,
        default,
    }
}
fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
    Expr::binary(op, a, b)
}
fn var(v: VarId) -> Expr {
    Expr::Var(v)
}
fn v(v: VarId) -> Idx {
    Idx::Var(v)
}
fn let_(var: VarId, value: Expr) -> Stmt {
    Stmt::Let { var, value }
}
fn set(var: VarId, value: Expr) -> Stmt {
    Stmt::Assign { var, value }
}
fn icmp(op: Cmp, a: Idx, b: Idx) -> Cond {
    Cond::Idx { op, a, b }
}
fn and(a: Cond, b: Cond) -> Cond {
    Cond::And(Box::new(a), Box::new(b))
}
fn or(a: Cond, b: Cond) -> Cond {
    Cond::Or(Box::new(a), Box::new(b))
}
/// `0 ≤ i < len`.
fn in_range(i: Idx, len: usize) -> Cond {
    and(icmp(Cmp::Ge, i.clone(), c(0)), icmp(Cmp::Lt, i, c(len)))
}
/// The max-pool update condition: `v > m` or `v` is NaN.
fn beats(val: Expr, max: Expr) -> Cond {
    or(
        Cond::Expr {
            op: Cmp::Gt,
            a: val.clone(),
            b: max,
        },
        Cond::Expr {
            op: Cmp::Ne,
            a: val.clone(),
            b: val,
        },
    )
}

/// A window loop: unrolled when `unroll`, else serial.
fn small_loop(var: VarId, extent: usize, unroll: bool, body: Vec<Stmt>) -> Stmt {
    Stmt::For {
        var,
        extent: c(extent),
        kind: if unroll {
            LoopKind::Unrolled
        } else {
            LoopKind::Serial
        },
        body,
    }
}

/// `[n, c, h, w]` of a rank-4 f32 operand.
fn dims4(ctx: &NodeCtx<'_>, shape: &[usize]) -> Result<[usize; 4], LowerError> {
    numel(ctx, shape)?;
    match *shape {
        [n, ch, h, w] => Ok([n, ch, h, w]),
        _ => Err(ctx.invalid(format!("expected an [N, C, H, W] tensor, not {shape:?}"))),
    }
}

/// The plane loop `for p in 0..N·C` and `(n, c)` of its plane.
fn plane(b: &mut KernelBuilder, channels: usize) -> (VarId, Idx, Idx) {
    let p = b.var("p", DType::I64);
    (p, v(p).div(channels as i64), v(p).rem(channels as i64))
}

// ------------------------------------------------------------------------
// LRN.

/// LRN's constants, rounded to f32 exactly as the reference rounds them.
#[derive(Clone, Debug)]
struct Lrn {
    size: usize,
    alpha: f32,
    beta: f32,
    k: f32,
    /// `2α'β`, computed in f64 and rounded once, as the reference does.
    two_alpha_beta: f32,
}

impl Lrn {
    fn new(ctx: &NodeCtx<'_>, a: &LrnAttrs) -> Result<Lrn, LowerError> {
        if a.size == 0 || ![a.alpha, a.beta, a.k].iter().all(|x| x.is_finite()) {
            return Err(ctx.invalid("LRN needs size ≥ 1 and finite alpha, beta, k"));
        }
        Ok(Lrn {
            size: a.size,
            alpha: a.effective_alpha() as f32,
            beta: a.beta as f32,
            k: a.k as f32,
            two_alpha_beta: (2.0 * a.effective_alpha() * a.beta) as f32,
        })
    }

    /// Statements declaring `d = k + α'·Σ_{j ∈ window(ch)} x[at(j)]²`, the
    /// channel window read with `LoadOr` (zero outside), summed in
    /// increasing `j` from zero as the reference does.
    fn denominator(
        &self,
        b: &mut KernelBuilder,
        x: BufId,
        ch: Idx,
        at: &dyn Fn(Idx) -> Vec<Idx>,
        unroll: bool,
    ) -> (Vec<Stmt>, VarId) {
        let sum = b.var("sum", DType::F32);
        let t = b.var("t", DType::I64);
        let a = b.var("a", DType::F32);
        let d = b.var("d", DType::F32);
        let j = minus(ch, self.size / 2).add(v(t));
        let stmts = vec![
            let_(sum, Expr::F32(0.0)),
            small_loop(
                t,
                self.size,
                unroll,
                vec![
                    let_(a, ld_or(x, at(j), 0.0)),
                    set(
                        sum,
                        bin(BinOp::Add, var(sum), bin(BinOp::Mul, var(a), var(a))),
                    ),
                ],
            ),
            let_(
                d,
                bin(
                    BinOp::Add,
                    Expr::F32(self.k),
                    bin(BinOp::Mul, Expr::F32(self.alpha), var(sum)),
                ),
            ),
        ];
        (stmts, d)
    }

    /// Statements declaring the LRN output at channel `ch`:
    /// `x[at(ch)] / d^β`. `center` is the load of `x[at(ch)]` (a `Load`
    /// where it is provably in bounds, else a `LoadOr`).
    fn value(
        &self,
        b: &mut KernelBuilder,
        x: BufId,
        ch: Idx,
        at: &dyn Fn(Idx) -> Vec<Idx>,
        center: Expr,
        unroll: bool,
    ) -> (Vec<Stmt>, Expr) {
        let (stmts, d) = self.denominator(b, x, ch, at, unroll);
        let y = bin(
            BinOp::Div,
            center,
            bin(BinOp::Pow, var(d), Expr::F32(self.beta)),
        );
        (stmts, y)
    }
}

/// The `[N, C, inner]` view of an LRN operand.
fn lrn_dims(ctx: &NodeCtx<'_>, shape: &[usize]) -> Result<[usize; 3], LowerError> {
    numel(ctx, shape)?;
    if shape.len() < 2 {
        return Err(ctx.invalid(format!("LRN needs an [N, C, …] tensor, not {shape:?}")));
    }
    Ok([shape[0], shape[1], shape[2..].iter().product()])
}

/// The schedule of the LRN kernels.
fn lrn_schedule(ctx: &NodeCtx<'_>, width: u32) -> Schedule {
    Schedule {
        tiles: Vec::new(),
        vector_width: width,
        loop_order: vec!["p".into(), "s".into(), "window".into()],
        parallel_axis: ctx.options.parallel.then(|| "p".into()),
    }
}

fn lrn(ctx: &NodeCtx<'_>, attrs: &LrnAttrs) -> Result<LoweredKernel, LowerError> {
    let l = Lrn::new(ctx, attrs)?;
    let dims = lrn_dims(ctx, &operand_f32(ctx, 0)?)?;
    if result_f32(ctx, 0)? != operand_f32(ctx, 0)? {
        return Err(ctx.invalid("the result's shape differs from the input's"));
    }
    let [n, channels, inner] = dims;
    let unroll = l.size <= MAX_UNROLL;
    let width = vector_width(ctx, unroll);
    let mut b = KernelBuilder::new(kernel_name(ctx, "lrn"));
    let x = b.param("x", DType::F32, &dims, Access::Read);
    let y = b.param("y", DType::F32, &dims, Access::Write);
    let (p, bn, ch) = plane(&mut b, channels);
    let inner_loop = strip(&mut b, "s", inner, width, false, &mut |b, s| {
        let at = |j: Idx| vec![bn.clone(), j, s.clone()];
        let (mut stmts, value) = l.value(b, x, ch.clone(), &at, ld(x, at(ch.clone())), unroll);
        stmts.push(Stmt::Store {
            buf: y,
            index: at(ch.clone()),
            value,
        });
        stmts
    });
    let body = nonempty_loop(p, n * channels, outer_kind(ctx), inner_loop);
    Ok(LoweredKernel {
        kernel: b.finish(body, lrn_schedule(ctx, width)),
        args: vec![Arg::Operand(0), Arg::Result(0)],
    })
}

/// `for var in 0..extent { body }`, or nothing when the loop is empty.
fn nonempty_loop(var: VarId, extent: usize, kind: LoopKind, body: Vec<Stmt>) -> Vec<Stmt> {
    if extent == 0 || body.is_empty() {
        Vec::new()
    } else {
        vec![Stmt::For {
            var,
            extent: c(extent),
            kind,
            body,
        }]
    }
}

/// The LRN gradient at one element `(·, m, ·)`, given how to read the
/// upstream gradient `g(c)` of channel `c` (zero outside `0..C`):
///
/// `dx_m = g_m / D_m^β − 2α'β · x_m · Σ_{c ∋ m} g_c · x_c · D_c^{−β−1}`,
///
/// the sum over the channels `c` whose window contains `m`,
/// `c ∈ [m − (size−1)/2, m + size/2]`, in increasing `c`, each `D_c`
/// recomputed. Returns the statements and the value of `dx_m`.
#[allow(clippy::too_many_arguments)]
fn lrn_gradient(
    b: &mut KernelBuilder,
    l: &Lrn,
    x: BufId,
    channels: usize,
    m: Idx,
    at: &dyn Fn(Idx) -> Vec<Idx>,
    grad: &dyn Fn(Idx) -> Expr,
    unroll: bool,
) -> (Vec<Stmt>, Expr) {
    let cross = b.var("cross", DType::F32);
    let r = b.var("r", DType::I64);
    let ch = minus(m.clone(), l.size.saturating_sub(1) / 2).add(v(r));
    let (mut reader, d_c) = l.denominator(b, x, ch.clone(), at, unroll);
    // Outside 0..C there is no reader; select keeps a NaN from pow(0, …)
    // (k = 0) out of the sum.
    reader.push(set(
        cross,
        bin(
            BinOp::Add,
            var(cross),
            Expr::select(
                in_range(ch.clone(), channels),
                bin(
                    BinOp::Mul,
                    bin(BinOp::Mul, grad(ch.clone()), ld_or(x, at(ch), 0.0)),
                    bin(BinOp::Pow, var(d_c), Expr::F32(-l.beta - 1.0)),
                ),
                Expr::F32(0.0),
            ),
        ),
    ));
    let mut stmts = vec![
        let_(cross, Expr::F32(0.0)),
        small_loop(r, l.size, unroll, reader),
    ];
    let (own, d_m) = l.denominator(b, x, m.clone(), at, unroll);
    stmts.extend(own);
    let value = bin(
        BinOp::Sub,
        bin(
            BinOp::Div,
            grad(m.clone()),
            bin(BinOp::Pow, var(d_m), Expr::F32(l.beta)),
        ),
        bin(
            BinOp::Mul,
            bin(BinOp::Mul, Expr::F32(l.two_alpha_beta), ld(x, at(m))),
            var(cross),
        ),
    );
    (stmts, value)
}

fn lrn_backward(ctx: &NodeCtx<'_>, attrs: &LrnAttrs) -> Result<LoweredKernel, LowerError> {
    let l = Lrn::new(ctx, attrs)?;
    let shape = operand_f32(ctx, 0)?;
    let dims = lrn_dims(ctx, &shape)?;
    if operand_f32(ctx, 1)? != shape || result_f32(ctx, 0)? != shape {
        return Err(ctx.invalid("x, dy and dx must have one shape"));
    }
    let [n, channels, inner] = dims;
    let unroll = l.size.saturating_mul(l.size) <= MAX_UNROLL;
    let width = vector_width(ctx, unroll);
    let mut b = KernelBuilder::new(kernel_name(ctx, "lrn_backward"));
    let x = b.param("x", DType::F32, &dims, Access::Read);
    let dy = b.param("dy", DType::F32, &dims, Access::Read);
    let dx = b.param("dx", DType::F32, &dims, Access::Write);
    let (p, bn, m) = plane(&mut b, channels);
    let inner_loop = strip(&mut b, "s", inner, width, false, &mut |b, s| {
        let at = |j: Idx| vec![bn.clone(), j, s.clone()];
        let grad = |j: Idx| ld_or(dy, at(j), 0.0);
        let (mut stmts, value) = lrn_gradient(b, &l, x, channels, m.clone(), &at, &grad, unroll);
        stmts.push(Stmt::Store {
            buf: dx,
            index: at(m.clone()),
            value,
        });
        stmts
    });
    let body = nonempty_loop(p, n * channels, outer_kind(ctx), inner_loop);
    Ok(LoweredKernel {
        kernel: b.finish(body, lrn_schedule(ctx, width)),
        args: vec![Arg::Operand(0), Arg::Operand(1), Arg::Result(0)],
    })
}

// ------------------------------------------------------------------------
// Pooling.

/// A pooling window and what it computes.
#[derive(Clone, Debug)]
struct Pool {
    /// `None` for max-pooling; `Some(count_include_pad)` for averaging.
    avg: Option<bool>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
}

impl Pool {
    fn max(a: &Pool2dAttrs) -> Pool {
        Pool {
            avg: None,
            kernel: a.kernel,
            stride: a.stride,
            padding: a.padding,
        }
    }

    fn avg(a: &AvgPool2dAttrs) -> Pool {
        Pool {
            avg: Some(a.count_include_pad),
            kernel: a.kernel,
            stride: a.stride,
            padding: a.padding,
        }
    }

    /// Checks the window against input `[h, w]` and returns `[oh, ow]`.
    fn output(&self, ctx: &NodeCtx<'_>, [h, w]: [usize; 2]) -> Result<[usize; 2], LowerError> {
        let mut out = [0; 2];
        for (d, len) in [h, w].into_iter().enumerate() {
            let (k, s, p) = (self.kernel[d], self.stride[d], self.padding[d]);
            if k == 0 || s == 0 || p > k / 2 || k > len + 2 * p {
                return Err(ctx.invalid(format!(
                    "window kernel {:?}, stride {:?}, padding {:?} does not fit {h}x{w}",
                    self.kernel, self.stride, self.padding
                )));
            }
            out[d] = (len + 2 * p - k) / s + 1;
        }
        Ok(out)
    }

    fn padded(&self) -> bool {
        self.padding != [0, 0]
    }

    /// The divisor of output `(i, j)` of an average pool, as an f32
    /// expression: `kh·kw`, or the in-bounds rows times the in-bounds
    /// columns of the window, from index math (clamped to ≥ 1 so that the
    /// candidate windows a gather discards never divide by zero).
    fn divisor(&self, i: Idx, j: Idx, [h, w]: [usize; 2], include_pad: bool) -> Expr {
        let [kh, kw] = self.kernel;
        if include_pad {
            return Expr::F32((kh * kw) as f32);
        }
        let count = |o: Idx, d: usize, len: usize| {
            // min(o·s − p + k, len) − max(o·s − p, 0)
            let start = minus(o.mul(self.stride[d] as i64), self.padding[d]);
            let n = start
                .clone()
                .add(c(self.kernel[d]))
                .min(c(len))
                .sub(start.max(c(0)))
                .max(c(1));
            Expr::Cast {
                to: DType::F32,
                value: Box::new(Expr::Index(n)),
            }
        };
        bin(BinOp::Mul, count(i, 0, h), count(j, 1, w))
    }
}

/// The schedule of the pooling kernels.
fn pool_schedule(ctx: &NodeCtx<'_>, width: u32, rows: &str, cols: &str) -> Schedule {
    Schedule {
        tiles: Vec::new(),
        vector_width: width,
        loop_order: vec!["p".into(), rows.into(), cols.into(), "window".into()],
        parallel_axis: ctx.options.parallel.then(|| "p".into()),
    }
}

/// Max- or average-pooling, or with `lrn` the fused LRN + max-pool.
fn pool(ctx: &NodeCtx<'_>, pool: &Pool, lrn: Option<Lrn>) -> Result<LoweredKernel, LowerError> {
    let xd = dims4(ctx, &operand_f32(ctx, 0)?)?;
    let [n, channels, h, w] = xd;
    let [oh, ow] = pool.output(ctx, [h, w])?;
    let yd = [n, channels, oh, ow];
    if result_f32(ctx, 0)? != yd {
        return Err(ctx.invalid(format!("the result should be {yd:?}")));
    }
    let [kh, kw] = pool.kernel;
    let [sy, sx] = pool.stride;
    let [py, px] = pool.padding;
    let per_tap = lrn.as_ref().map_or(1, |l| l.size + 1);
    let unroll = kh.saturating_mul(kw).saturating_mul(per_tap) <= MAX_UNROLL;
    let width = vector_width(ctx, unroll);
    let what = match (&lrn, pool.avg) {
        (Some(_), _) => "lrn_max_pool",
        (None, None) => "max_pool",
        (None, Some(_)) => "avg_pool",
    };
    let mut b = KernelBuilder::new(kernel_name(ctx, what));
    let x = b.param("x", DType::F32, &xd, Access::Read);
    let y = b.param("y", DType::F32, &yd, Access::Write);
    let (p, bn, ch) = plane(&mut b, channels);
    let i = b.var("i", DType::I64);
    let row = strip(&mut b, "j", ow, width, false, &mut |b, j| {
        let acc = b.var(if pool.avg.is_some() { "sum" } else { "max" }, DType::F32);
        let ki = b.var("ki", DType::I64);
        let kj = b.var("kj", DType::I64);
        let wy = minus(v(i).mul(sy as i64).add(v(ki)), py);
        let wx = minus(j.clone().mul(sx as i64).add(v(kj)), px);
        let at = |cc: Idx| vec![bn.clone(), cc, wy.clone(), wx.clone()];
        let padded = pool.padded();
        let mut tap = Vec::new();
        let update = match (&lrn, pool.avg) {
            (None, Some(_)) => {
                let val = if padded {
                    ld_or(x, at(ch.clone()), 0.0)
                } else {
                    ld(x, at(ch.clone()))
                };
                bin(BinOp::Add, var(acc), val)
            }
            (l, _) => {
                let mut val = match l {
                    None if padded => ld_or(x, at(ch.clone()), f32::NEG_INFINITY),
                    None => ld(x, at(ch.clone())),
                    Some(l) => {
                        let center = if padded {
                            ld_or(x, at(ch.clone()), 0.0)
                        } else {
                            ld(x, at(ch.clone()))
                        };
                        let (stmts, val) = l.value(b, x, ch.clone(), &at, center, unroll);
                        tap.extend(stmts);
                        val
                    }
                };
                if l.is_some() && padded {
                    // Padding is −∞ for the pool, not the LRN of a zero.
                    val = Expr::select(
                        and(in_range(wy.clone(), h), in_range(wx.clone(), w)),
                        val,
                        Expr::F32(f32::NEG_INFINITY),
                    );
                }
                let vv = b.var("v", DType::F32);
                tap.push(let_(vv, val));
                Expr::select(beats(var(vv), var(acc)), var(vv), var(acc))
            }
        };
        tap.push(set(acc, update));
        let init = if pool.avg.is_some() {
            0.0
        } else {
            f32::NEG_INFINITY
        };
        let result = match pool.avg {
            Some(include_pad) => bin(
                BinOp::Div,
                var(acc),
                pool.divisor(v(i), j.clone(), [h, w], include_pad),
            ),
            None => var(acc),
        };
        vec![
            let_(acc, Expr::F32(init)),
            small_loop(ki, kh, unroll, vec![small_loop(kj, kw, unroll, tap)]),
            Stmt::Store {
                buf: y,
                index: vec![bn.clone(), ch.clone(), v(i), j],
                value: result,
            },
        ]
    });
    let rows = nonempty_loop(i, oh, LoopKind::Serial, row);
    let body = nonempty_loop(p, n * channels, outer_kind(ctx), rows);
    Ok(LoweredKernel {
        kernel: b.finish(body, pool_schedule(ctx, width, "oh", "ow")),
        args: vec![Arg::Operand(0), Arg::Result(0)],
    })
}

/// Statements and value of the tap at `(wy, wx)`.
type TapValue<'a> = dyn FnMut(&mut KernelBuilder, Idx, Idx) -> (Vec<Stmt>, Expr) + 'a;

/// Statements and value output `(i, j)` sends to tap number `tap`.
type Contribution<'a> = dyn FnMut(&mut KernelBuilder, Idx, Idx, Idx) -> (Vec<Stmt>, Expr) + 'a;

/// The argmax of the max-pool window whose top-left corner is
/// `(wy0, wx0)` (padding included), as the row-major tap number
/// `ki·kw + kj` in an i64 variable: the first in-bounds tap starts as the
/// candidate, and a later tap replaces it when strictly greater or NaN
/// (PyTorch's rule, as the reference). `value` gives the statements and
/// value of the tap at `(wy, wx)`; it may read out of bounds only through
/// `LoadOr`.
#[allow(clippy::too_many_arguments)]
fn argmax(
    b: &mut KernelBuilder,
    pool: &Pool,
    wy0: Idx,
    wx0: Idx,
    [h, w]: [usize; 2],
    unroll: bool,
    value: &mut TapValue<'_>,
) -> (Vec<Stmt>, VarId) {
    let [kh, kw] = pool.kernel;
    let best = b.var("best", DType::I64);
    let max = b.var("max", DType::F32);
    let ki = b.var("ki", DType::I64);
    let kj = b.var("kj", DType::I64);
    let (wy, wx) = (wy0.add(v(ki)), wx0.add(v(kj)));
    let (mut tap, val) = value(b, wy.clone(), wx.clone());
    let vv = b.var("v", DType::F32);
    let take = b.var("take", DType::I64);
    tap.push(let_(vv, val));
    // `take` as an i64 0/1 flag, so the condition is evaluated once.
    tap.push(let_(
        take,
        Expr::select(
            and(
                and(in_range(wy, h), in_range(wx, w)),
                or(
                    Cond::Expr {
                        op: Cmp::Lt,
                        a: var(best),
                        b: Expr::Index(c(0)),
                    },
                    beats(var(vv), var(max)),
                ),
            ),
            Expr::Index(c(1)),
            Expr::Index(c(0)),
        ),
    ));
    let taken = || Cond::Expr {
        op: Cmp::Eq,
        a: var(take),
        b: Expr::Index(c(1)),
    };
    tap.push(set(
        best,
        Expr::select(
            taken(),
            Expr::Index(v(ki).mul(kw as i64).add(v(kj))),
            var(best),
        ),
    ));
    tap.push(set(max, Expr::select(taken(), var(vv), var(max))));
    let stmts = vec![
        let_(best, Expr::Index(Idx::Const(-1))),
        let_(max, Expr::F32(f32::NEG_INFINITY)),
        small_loop(ki, kh, unroll, vec![small_loop(kj, kw, unroll, tap)]),
    ];
    (stmts, best)
}

/// The gradient gather at input element `(iy, ix)` of one plane: the sum,
/// in row-major output order, of the contributions of the output positions
/// `(i, j)` whose windows contain it. `contribution(b, i, j, tap)` gives
/// the statements and the value that output sends to this element, where
/// `tap = ki·kw + kj` is the element's tap number in that window; it is
/// only used when `(i, j)` is a real output containing the element.
/// Returns the statements and the accumulator.
fn gather(
    b: &mut KernelBuilder,
    pool: &Pool,
    iy: Idx,
    ix: Idx,
    [oh, ow]: [usize; 2],
    unroll: bool,
    contribution: &mut Contribution<'_>,
) -> (Vec<Stmt>, VarId) {
    let [kh, kw] = pool.kernel;
    let [sy, sx] = pool.stride;
    let [py, px] = pool.padding;
    // At most ⌈k/s⌉ outputs per axis contain a given input position; the
    // last of them is ⌊(x + pad)/s⌋.
    let (na, nb) = (kh.div_ceil(sy), kw.div_ceil(sx));
    let acc = b.var("acc", DType::F32);
    let a = b.var("a", DType::I64);
    let bb = b.var("b", DType::I64);
    let i = minus(plus(iy.clone(), py).div(sy as i64), na - 1).add(v(a));
    let j = minus(plus(ix.clone(), px).div(sx as i64), nb - 1).add(v(bb));
    // The element's tap in window (i, j): (iy + py − i·sy, ix + px − j·sx).
    let ki = plus(iy, py).sub(i.clone().mul(sy as i64));
    let kj = plus(ix, px).sub(j.clone().mul(sx as i64));
    let valid = and(
        and(in_range(i.clone(), oh), in_range(j.clone(), ow)),
        and(
            icmp(Cmp::Lt, ki.clone(), c(kh)),
            icmp(Cmp::Lt, kj.clone(), c(kw)),
        ),
    );
    let tap_no = ki.mul(kw as i64).add(kj);
    let (mut body, value) = contribution(b, i, j, tap_no);
    body.push(set(
        acc,
        bin(
            BinOp::Add,
            var(acc),
            Expr::select(valid, value, Expr::F32(0.0)),
        ),
    ));
    let stmts = vec![
        let_(acc, Expr::F32(0.0)),
        small_loop(a, na, unroll, vec![small_loop(bb, nb, unroll, body)]),
    ];
    (stmts, acc)
}

/// `[oh, ow]` of the gradient `dy` (operand 1) of a pool on `x`
/// (operand 0), with the shapes checked.
fn pool_backward_dims(
    ctx: &NodeCtx<'_>,
    pool: &Pool,
) -> Result<([usize; 4], [usize; 4]), LowerError> {
    let xd = dims4(ctx, &operand_f32(ctx, 0)?)?;
    let [n, channels, h, w] = xd;
    let [oh, ow] = pool.output(ctx, [h, w])?;
    let yd = [n, channels, oh, ow];
    if operand_f32(ctx, 1)? != yd || result_f32(ctx, 0)? != xd {
        return Err(ctx.invalid(format!("dy should be {yd:?} and dx {xd:?}")));
    }
    Ok((xd, yd))
}

/// The window loops a gather runs per element, all together: the
/// candidate outputs times (for max-pool) the argmax window.
fn gather_trips(pool: &Pool, per_tap: usize) -> usize {
    let [kh, kw] = pool.kernel;
    let [sy, sx] = pool.stride;
    let windows = kh.div_ceil(sy).saturating_mul(kw.div_ceil(sx));
    match pool.avg {
        Some(_) => windows,
        None => windows.saturating_mul(kh * kw).saturating_mul(per_tap),
    }
}

/// Max- or average-pool gradient, as a gather (see the module header).
fn pool_backward(ctx: &NodeCtx<'_>, pool: &Pool) -> Result<LoweredKernel, LowerError> {
    let (xd, yd) = pool_backward_dims(ctx, pool)?;
    let [n, channels, h, w] = xd;
    let [_, _, oh, ow] = yd;
    let unroll = gather_trips(pool, 1) <= MAX_UNROLL;
    let width = vector_width(ctx, unroll);
    let what = if pool.avg.is_some() {
        "avg_pool_backward"
    } else {
        "max_pool_backward"
    };
    let mut b = KernelBuilder::new(kernel_name(ctx, what));
    let x = b.param("x", DType::F32, &xd, Access::Read);
    let dy = b.param("dy", DType::F32, &yd, Access::Read);
    let dx = b.param("dx", DType::F32, &xd, Access::Write);
    let (p, bn, ch) = plane(&mut b, channels);
    let iy = b.var("iy", DType::I64);
    let row = strip(&mut b, "ix", w, width, false, &mut |b, ix| {
        let (mut stmts, acc) = gather(
            b,
            pool,
            v(iy),
            ix.clone(),
            [oh, ow],
            unroll,
            &mut |b, i, j, tap| {
                let g = ld_or(dy, vec![bn.clone(), ch.clone(), i.clone(), j.clone()], 0.0);
                let [sy, sx] = pool.stride;
                let [py, px] = pool.padding;
                match pool.avg {
                    Some(include_pad) => (
                        Vec::new(),
                        bin(BinOp::Div, g, pool.divisor(i, j, [h, w], include_pad)),
                    ),
                    None => {
                        let wy0 = minus(i.mul(sy as i64), py);
                        let wx0 = minus(j.mul(sx as i64), px);
                        let (stmts, best) =
                            argmax(b, pool, wy0, wx0, [h, w], unroll, &mut |_, wy, wx| {
                                (
                                    Vec::new(),
                                    ld_or(
                                        x,
                                        vec![bn.clone(), ch.clone(), wy, wx],
                                        f32::NEG_INFINITY,
                                    ),
                                )
                            });
                        let mine = Cond::Expr {
                            op: Cmp::Eq,
                            a: var(best),
                            b: Expr::Index(tap),
                        };
                        (stmts, Expr::select(mine, g, Expr::F32(0.0)))
                    }
                }
            },
        );
        stmts.push(Stmt::Store {
            buf: dx,
            index: vec![bn.clone(), ch.clone(), v(iy), ix],
            value: var(acc),
        });
        stmts
    });
    let rows = nonempty_loop(iy, h, LoopKind::Serial, row);
    let body = nonempty_loop(p, n * channels, outer_kind(ctx), rows);
    Ok(LoweredKernel {
        kernel: b.finish(body, pool_schedule(ctx, width, "h", "w")),
        args: vec![Arg::Operand(0), Arg::Operand(1), Arg::Result(0)],
    })
}

/// Gradient of the fused LRN + max-pool: per input row `(n, iy)` (the
/// parallel loop), first the max-pool gradient of that row for every
/// channel into a local `[C, W]` (argmax over LRN values recomputed on the
/// fly), then the LRN gradient across channels from it.
fn lrn_max_pool_backward(
    ctx: &NodeCtx<'_>,
    pool: &Pool,
    attrs: &LrnAttrs,
) -> Result<LoweredKernel, LowerError> {
    let l = Lrn::new(ctx, attrs)?;
    let (xd, yd) = pool_backward_dims(ctx, pool)?;
    let [n, channels, h, w] = xd;
    let [_, _, oh, ow] = yd;
    let unroll_pool = gather_trips(pool, l.size + 1) <= MAX_UNROLL;
    let unroll_lrn = l.size.saturating_mul(l.size) <= MAX_UNROLL;
    let width_pool = vector_width(ctx, unroll_pool);
    let width_lrn = vector_width(ctx, unroll_lrn);
    let mut b = KernelBuilder::new(kernel_name(ctx, "lrn_max_pool_backward"));
    let x = b.param("x", DType::F32, &xd, Access::Read);
    let dy = b.param("dy", DType::F32, &yd, Access::Read);
    let dx = b.param("dx", DType::F32, &xd, Access::Write);
    let dpool = b.local("dpool", DType::F32, &[channels, w]);
    let r = b.var("r", DType::I64);
    let (bn, iy) = (v(r).div(h as i64), v(r).rem(h as i64));
    let [sy, sx] = pool.stride;
    let [py, px] = pool.padding;

    // Phase 1: dpool[ch, ix] = max-pool gradient at (bn, ch, iy, ix).
    let ch = b.var("c", DType::I64);
    let pool_row = strip(&mut b, "ix", w, width_pool, false, &mut |b, ix| {
        let (mut stmts, acc) = gather(
            b,
            pool,
            iy.clone(),
            ix.clone(),
            [oh, ow],
            unroll_pool,
            &mut |b, i, j, tap| {
                let g = ld_or(dy, vec![bn.clone(), v(ch), i.clone(), j.clone()], 0.0);
                let wy0 = minus(i.mul(sy as i64), py);
                let wx0 = minus(j.mul(sx as i64), px);
                let (stmts, best) =
                    argmax(b, pool, wy0, wx0, [h, w], unroll_pool, &mut |b, wy, wx| {
                        let at = |cc: Idx| vec![bn.clone(), cc, wy.clone(), wx.clone()];
                        l.value(b, x, v(ch), &at, ld_or(x, at(v(ch)), 0.0), unroll_pool)
                    });
                let mine = Cond::Expr {
                    op: Cmp::Eq,
                    a: var(best),
                    b: Expr::Index(tap),
                };
                (stmts, Expr::select(mine, g, Expr::F32(0.0)))
            },
        );
        stmts.push(Stmt::Store {
            buf: dpool,
            index: vec![v(ch), ix],
            value: var(acc),
        });
        stmts
    });

    // Phase 2: dx[bn, m, iy, ix] from dpool[·, ix].
    let m = b.var("m", DType::I64);
    let lrn_row = strip(&mut b, "ix", w, width_lrn, false, &mut |b, ix| {
        let at = |cc: Idx| vec![bn.clone(), cc, iy.clone(), ix.clone()];
        let grad = |cc: Idx| ld_or(dpool, vec![cc, ix.clone()], 0.0);
        let (mut stmts, value) = lrn_gradient(b, &l, x, channels, v(m), &at, &grad, unroll_lrn);
        stmts.push(Stmt::Store {
            buf: dx,
            index: at(v(m)),
            value,
        });
        stmts
    });

    let mut per_row = nonempty_loop(ch, channels, LoopKind::Serial, pool_row);
    per_row.extend(nonempty_loop(m, channels, LoopKind::Serial, lrn_row));
    let body = nonempty_loop(r, n * h, outer_kind(ctx), per_row);
    let schedule = Schedule {
        tiles: Vec::new(),
        vector_width: width_pool.max(width_lrn),
        loop_order: vec!["n·h".into(), "c".into(), "w".into(), "window".into()],
        parallel_axis: ctx.options.parallel.then(|| "n·h".into()),
    };
    Ok(LoweredKernel {
        kernel: b.finish(body, schedule),
        args: vec![Arg::Operand(0), Arg::Operand(1), Arg::Result(0)],
    })
}
