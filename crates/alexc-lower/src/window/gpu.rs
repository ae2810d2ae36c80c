//! The window ops shaped for a GPU ([`crate::LowerOptions::gpu`]): one
//! thread per output element, no thread-private buffers.
//!
//! The CPU nests of `window.rs` give each parallel iteration a whole plane
//! (or a whole sample, for the fused gradient) and stage it in
//! thread-private buffers of up to 12 KiB: on a GPU that is a few thousand
//! threads (128 at batch 128 for the fused gradient), each bound by local
//! memory. Here every kernel is one or more *flat* launches — a top-level
//! `Parallel` loop over every element of a tensor, whose index is split
//! into `(n, c, y, x)` — and every value a thread needs is recomputed from
//! global memory, or read from a workspace an earlier launch wrote:
//!
//! - **LRN**: per output, the channel window's sum of squares read from the
//!   input (`size` loads; neighbours' loads hit in cache), then `x·u`.
//! - **max-pool** (and the fused LRN + max-pool): per pooled output, the
//!   window's max, with the LRN of each tap computed on the fly (`kh·kw·size`
//!   loads; the LRN values are never stored).
//! - **max-pool gradient**: a gather, per input element: each pooled output
//!   whose window holds it (at most `⌈kh/sy⌉·⌈kw/sx⌉`, in increasing
//!   row-major order, the reference's accumulation order) recomputes its
//!   window's argmax and passes its `dy` on when the argmax is this
//!   element's tap. No atomics, no zeroing, deterministic.
//! - **LRN gradient**: two launches. The first stores, per element of
//!   channel `c`, its own term `g·u` and what it sends to its window,
//!   `T = g·y/D`, in two workspaces; the second sums each element's `T`
//!   over the channels whose window contains it and finishes
//!   `dx = g·u − 2α'β·x·ΣT`.
//! - **fused LRN + max-pool gradient**: three launches: the LRN values
//!   (with `u` and `D`) into workspaces; the max-pool gather over those
//!   values, which turns them into the two terms; then the LRN gradient's
//!   last launch.
//!
//! Every value is computed by the formulas of the CPU kernels (the same
//! `Lrn::norm`, the same argmax rule: first in-bounds tap, replaced by a
//! later one that is greater or NaN; the same sums in the same order), so
//! the results are the CPU kernels' bit for bit. Window taps that may fall
//! outside a tensor (padding, and the candidate windows of a gather) read
//! through `load_or` under the guard that selects them, which needs no
//! bounds proof; an element's own index is proven in bounds.

use alexc_ir::{LrnAttrs, Op};
use alexc_kernel::{Access, BinOp, BufId, Cond, DType, Expr, Idx, KernelBuilder, Schedule, Stmt};

use super::{
    and, beats, bin, dims4, feq, in_range, index_f32, ld, ld_or, let_, lrn_dims,
    pool_backward_dims, set, small_loop, store, times, v, var, when, Lrn, Pool, MAX_UNROLL,
};
use crate::elementwise::{c, kernel_name, minus, operand_f32, outer_kind, plus, result_f32};
use crate::{Arg, LowerError, LoweredKernel, NodeCtx};

/// Lowers the ops this module has a GPU form of; `None` for the others
/// (the average poolings, whose CPU nests are already one element per
/// iteration).
pub(super) fn lower(ctx: &NodeCtx<'_>) -> Result<Option<LoweredKernel>, LowerError> {
    Ok(Some(match &ctx.node().op {
        Op::Lrn(a) => lrn(ctx, a)?,
        Op::LrnBackward(a) => lrn_backward(ctx, a)?,
        Op::MaxPool2d(a) => max_pool(ctx, &Pool::max(a), None)?,
        Op::LrnMaxPool(a) => max_pool(ctx, &Pool::max(&a.pool), Some(Lrn::new(ctx, &a.lrn)?))?,
        Op::MaxPool2dBackward(a) => max_pool_backward(ctx, &Pool::max(a), None)?,
        Op::LrnMaxPoolBackward(a) => {
            max_pool_backward(ctx, &Pool::max(&a.pool), Some(Lrn::new(ctx, &a.lrn)?))?
        }
        _ => return Ok(None),
    }))
}

/// The indices of element `e` of a row-major tensor of shape `dims`.
fn unflatten(e: Idx, dims: &[usize]) -> Vec<Idx> {
    (0..dims.len())
        .map(|d| {
            let inner: usize = dims[d + 1..].iter().product();
            let i = if inner == 1 {
                e.clone()
            } else {
                e.clone().div(inner as i64)
            };
            if d == 0 {
                i
            } else {
                i.rem(dims[d] as i64)
            }
        })
        .collect()
}

/// `for e in 0..Π dims` (parallel), `body` getting the element's indices:
/// one launch, one thread per element.
fn per_element(
    ctx: &NodeCtx<'_>,
    b: &mut KernelBuilder,
    dims: &[usize],
    body: &mut dyn FnMut(&mut KernelBuilder, Vec<Idx>) -> Vec<Stmt>,
) -> Vec<Stmt> {
    let e = b.var("e", DType::I64);
    let stmts = body(b, unflatten(v(e), dims));
    let count: usize = dims.iter().product();
    if count == 0 || stmts.is_empty() {
        return Vec::new();
    }
    vec![Stmt::For {
        var: e,
        extent: c(count),
        kind: outer_kind(ctx),
        body: stmts,
    }]
}

/// The schedule of a kernel of flat launches over elements.
fn schedule(ctx: &NodeCtx<'_>, axis: &str) -> Schedule {
    Schedule {
        tiles: Vec::new(),
        vector_width: 1,
        loop_order: vec![axis.to_string(), "window".to_string()],
        parallel_axis: ctx.options.parallel.then(|| axis.to_string()),
    }
}

/// A workspace of `shape` f32 elements, declared as a parameter.
fn workspace(b: &mut KernelBuilder, args: &mut Vec<Arg>, name: &str, shape: &[usize]) -> BufId {
    args.push(Arg::Workspace {
        elements: shape.iter().product(),
    });
    b.param(name, DType::F32, shape, Access::ReadWrite)
}

/// `[n, c, y, x]` with the channel replaced.
fn with_channel(at: &[Idx], ch: Idx) -> Vec<Idx> {
    let mut index = at.to_vec();
    index[1] = ch;
    index
}

// ------------------------------------------------------------------------
// LRN.

/// LRN: one thread per element.
fn lrn(ctx: &NodeCtx<'_>, attrs: &LrnAttrs) -> Result<LoweredKernel, LowerError> {
    let l = Lrn::new(ctx, attrs)?;
    let dims = lrn_dims(ctx, &operand_f32(ctx, 0)?)?;
    if result_f32(ctx, 0)? != operand_f32(ctx, 0)? {
        return Err(ctx.invalid("the result's shape differs from the input's"));
    }
    let channels = dims[1];
    let mut b = KernelBuilder::new(kernel_name(ctx, "lrn"));
    let x = b.param("x", DType::F32, &dims, Access::Read);
    let y = b.param("y", DType::F32, &dims, Access::Write);
    let body = per_element(ctx, &mut b, &dims, &mut |b, at| {
        let (mut stmts, _, u) = l.norm(b, x, channels, &at[1], &|j| with_channel(&at, j));
        stmts.push(store(
            y,
            at.clone(),
            bin(BinOp::Mul, ld(x, at.clone()), var(u)),
        ));
        stmts
    });
    Ok(LoweredKernel {
        kernel: b.finish(body, schedule(ctx, "n·c·s")),
        args: vec![Arg::Operand(0), Arg::Result(0)],
    })
}

/// The two terms of an LRN gradient, one `[N, C, …]` workspace each: `own`
/// (`g·u`) and `sent` (`T = g·y/D`).
struct Terms {
    own: BufId,
    sent: BufId,
}

impl Terms {
    /// The statements storing, at `at`, the terms of upstream gradient `g`,
    /// LRN value `y`, `D` and `u` (as `Lrn::store_terms`).
    fn store(&self, at: &[Idx], g: Expr, y: Expr, d: Expr, u: Expr) -> Vec<Stmt> {
        vec![
            store(self.own, at.to_vec(), bin(BinOp::Mul, g.clone(), u)),
            store(
                self.sent,
                at.to_vec(),
                bin(BinOp::Div, bin(BinOp::Mul, g, y), d),
            ),
        ]
    }

    /// The last launch of an LRN gradient: per element `m`,
    /// `dx_m = own_m − 2α'β · x_m · Σ_{c ∋ m} T_c` over the channels whose
    /// window contains `m`, in increasing order (as `Lrn::finish`).
    fn finish(
        &self,
        ctx: &NodeCtx<'_>,
        b: &mut KernelBuilder,
        l: &Lrn,
        dims: &[usize],
        [x, dx]: [BufId; 2],
    ) -> Vec<Stmt> {
        let channels = dims[1];
        per_element(ctx, b, dims, &mut |b, at| {
            let cross = b.var("cross", DType::F32);
            let t = b.var("t", DType::I64);
            let ch = minus(at[1].clone(), l.size.saturating_sub(1) / 2).add(v(t));
            let value = bin(
                BinOp::Sub,
                ld(self.own, at.clone()),
                bin(
                    BinOp::Mul,
                    bin(BinOp::Mul, Expr::F32(l.two_alpha_beta), ld(x, at.clone())),
                    var(cross),
                ),
            );
            vec![
                let_(cross, Expr::F32(0.0)),
                small_loop(
                    t,
                    l.size,
                    l.size <= MAX_UNROLL,
                    vec![when(
                        in_range(ch.clone(), channels),
                        vec![set(
                            cross,
                            bin(BinOp::Add, var(cross), ld(self.sent, with_channel(&at, ch))),
                        )],
                    )],
                ),
                store(dx, at.clone(), value),
            ]
        })
    }
}

/// LRN gradient: the terms of every element, then every `dx`.
fn lrn_backward(ctx: &NodeCtx<'_>, attrs: &LrnAttrs) -> Result<LoweredKernel, LowerError> {
    let l = Lrn::new(ctx, attrs)?;
    let shape = operand_f32(ctx, 0)?;
    let dims = lrn_dims(ctx, &shape)?;
    if operand_f32(ctx, 1)? != shape || result_f32(ctx, 0)? != shape {
        return Err(ctx.invalid("x, dy and dx must have one shape"));
    }
    let channels = dims[1];
    let mut b = KernelBuilder::new(kernel_name(ctx, "lrn_backward"));
    let mut args = vec![Arg::Operand(0), Arg::Operand(1), Arg::Result(0)];
    let x = b.param("x", DType::F32, &dims, Access::Read);
    let dy = b.param("dy", DType::F32, &dims, Access::Read);
    let dx = b.param("dx", DType::F32, &dims, Access::Write);
    let terms = Terms {
        own: workspace(&mut b, &mut args, "own", &dims),
        sent: workspace(&mut b, &mut args, "sent", &dims),
    };
    let mut body = per_element(ctx, &mut b, &dims, &mut |b, at| {
        let (mut stmts, d, u) = l.norm(b, x, channels, &at[1], &|j| with_channel(&at, j));
        let y = bin(BinOp::Mul, ld(x, at.clone()), var(u));
        stmts.extend(terms.store(&at, ld(dy, at.clone()), y, var(d), var(u)));
        stmts
    });
    body.extend(terms.finish(ctx, &mut b, &l, &dims, [x, dx]));
    Ok(LoweredKernel {
        kernel: b.finish(body, schedule(ctx, "n·c·s")),
        args,
    })
}

// ------------------------------------------------------------------------
// Max-pooling.

/// The input position `(wy, wx)` of tap `(ki, kj)` of output `(i, j)`, and
/// whether it lies inside the `h × w` plane (`None` without padding, where
/// every tap does).
fn tap_position(
    pool: &Pool,
    [h, w]: [usize; 2],
    [i, j]: [&Idx; 2],
    [ki, kj]: [Idx; 2],
) -> (Idx, Idx, Option<Cond>) {
    let [sy, sx] = pool.stride;
    let [py, px] = pool.padding;
    let wy = minus(times(i.clone(), sy).add(ki), py);
    let wx = minus(times(j.clone(), sx).add(kj), px);
    let inside = pool
        .padded()
        .then(|| and(in_range(wy.clone(), h), in_range(wx.clone(), w)));
    (wy, wx, inside)
}

/// Max-pooling, or with `lrn` the fused LRN + max-pool: one thread per
/// pooled output, the LRN of every tap computed on the fly.
fn max_pool(ctx: &NodeCtx<'_>, pool: &Pool, lrn: Option<Lrn>) -> Result<LoweredKernel, LowerError> {
    let xd = dims4(ctx, &operand_f32(ctx, 0)?)?;
    let [n, channels, h, w] = xd;
    let [oh, ow] = pool.output(ctx, [h, w])?;
    let yd = [n, channels, oh, ow];
    if result_f32(ctx, 0)? != yd {
        return Err(ctx.invalid(format!("the result should be {yd:?}")));
    }
    let [kh, kw] = pool.kernel;
    let unroll = kh.saturating_mul(kw) <= MAX_UNROLL;
    let what = if lrn.is_some() {
        "lrn_max_pool"
    } else {
        "max_pool"
    };
    let mut b = KernelBuilder::new(kernel_name(ctx, what));
    let x = b.param("x", DType::F32, &xd, Access::Read);
    let y = b.param("y", DType::F32, &yd, Access::Write);
    let padded = pool.padded();
    let body = per_element(ctx, &mut b, &yd, &mut |b, at| {
        let (max, ki, kj, val) = (
            b.var("max", DType::F32),
            b.var("ki", DType::I64),
            b.var("kj", DType::I64),
            b.var("v", DType::F32),
        );
        let (wy, wx, inside) = tap_position(pool, [h, w], [&at[2], &at[3]], [v(ki), v(kj)]);
        // Without padding every tap is provably inside the plane; with it,
        // the guard selects the inside taps and `load_or` needs no proof.
        let load = |cc: Idx| {
            let index = vec![at[0].clone(), cc, wy.clone(), wx.clone()];
            if padded {
                ld_or(x, index, 0.0)
            } else {
                ld(x, index)
            }
        };
        let mut tap = match &lrn {
            Some(l) => {
                let (mut stmts, _, u) = l.norm_of(b, channels, &at[1], &load);
                stmts.push(let_(val, bin(BinOp::Mul, load(at[1].clone()), var(u))));
                stmts
            }
            None => vec![let_(val, load(at[1].clone()))],
        };
        tap.push(set(
            max,
            Expr::select(beats(var(val), var(max)), var(val), var(max)),
        ));
        // Padding cells are −∞ on the CPU and never beat the max: skipping
        // them is the same.
        let tap = match inside {
            Some(cond) => vec![when(cond, tap)],
            None => tap,
        };
        vec![
            let_(max, Expr::F32(f32::NEG_INFINITY)),
            small_loop(ki, kh, unroll, vec![small_loop(kj, kw, unroll, tap)]),
            store(y, at.clone(), var(max)),
        ]
    });
    Ok(LoweredKernel {
        kernel: b.finish(body, schedule(ctx, "n·c·oh·ow")),
        args: vec![Arg::Operand(0), Arg::Result(0)],
    })
}

/// The argmax of the window of output `(i, j)` of plane `(bn, ch)` of
/// `vals` (`[N, C, h, w]`), as the row-major tap number `ki·kw + kj` in an
/// f32 variable, by the CPU's rule (`super::argmax`): the first in-bounds
/// tap starts as the candidate, and a later tap replaces it when strictly
/// greater or NaN. `(i, j)` must be a window of the pool (the gather's
/// guard).
fn argmax(
    b: &mut KernelBuilder,
    pool: &Pool,
    vals: BufId,
    [h, w]: [usize; 2],
    [bn, ch, i, j]: [&Idx; 4],
) -> (Vec<Stmt>, Expr) {
    let [kh, kw] = pool.kernel;
    let unroll = kh.saturating_mul(kw) <= MAX_UNROLL;
    let best = b.var("best", DType::F32);
    let max = b.var("max", DType::F32);
    let ki = b.var("ki", DType::I64);
    let kj = b.var("kj", DType::I64);
    let val = b.var("v", DType::F32);
    // Without padding, the gather's guard on `(i, j)` proves every tap
    // inside the plane; with it, the tap guard is part of `take`, which a
    // `select` evaluates, so the loads go through `load_or`.
    let at = |wy: Idx, wx: Idx| {
        let index = vec![bn.clone(), ch.clone(), wy, wx];
        if pool.padded() {
            ld_or(vals, index, f32::NEG_INFINITY)
        } else {
            ld(vals, index)
        }
    };
    let (wy, wx, inside) = tap_position(pool, [h, w], [i, j], [v(ki), v(kj)]);
    let mut take = beats(var(val), var(max));
    if let Some(inside) = inside {
        let first = Cond::Expr {
            op: alexc_kernel::Cmp::Lt,
            a: var(best),
            b: Expr::F32(0.0),
        };
        take = and(inside, super::or(first, take));
    }
    let tap = vec![
        let_(val, at(wy, wx)),
        set(
            best,
            Expr::select(
                take.clone(),
                index_f32(times(v(ki), kw).add(v(kj))),
                var(best),
            ),
        ),
        set(max, Expr::select(take, var(val), var(max))),
    ];
    let (best0, max0) = if pool.padded() {
        (Expr::F32(-1.0), Expr::F32(f32::NEG_INFINITY))
    } else {
        let [sy, sx] = pool.stride;
        (
            Expr::F32(0.0),
            at(times(i.clone(), sy), times(j.clone(), sx)),
        )
    };
    let stmts = vec![
        let_(best, best0),
        let_(max, max0),
        small_loop(ki, kh, unroll, vec![small_loop(kj, kw, unroll, tap)]),
    ];
    (stmts, var(best))
}

/// The max-pool gradient of input element `at` (`[n, c, y, x]`) of the
/// pool over `vals` with upstream gradient `dy`: the statements and the
/// accumulator holding it. A gather over the candidate windows in
/// increasing row-major order, each window's argmax recomputed.
fn gather(
    b: &mut KernelBuilder,
    pool: &Pool,
    [vals, dy]: [BufId; 2],
    [h, w, oh, ow]: [usize; 4],
    at: &[Idx],
) -> (Vec<Stmt>, Expr) {
    let [kh, kw] = pool.kernel;
    let [sy, sx] = pool.stride;
    let [py, px] = pool.padding;
    let (na, nb) = (kh.div_ceil(sy), kw.div_ceil(sx));
    let unroll = na.saturating_mul(nb) <= MAX_UNROLL;
    let acc = b.var("acc", DType::F32);
    let a = b.var("a", DType::I64);
    let bb = b.var("b", DType::I64);
    let (yy, xx) = (&at[2], &at[3]);
    // The last window containing position y is ⌊(y + pad)/s⌋.
    let i = minus(super::div(plus(yy.clone(), py), sy), na - 1).add(v(a));
    let j = minus(super::div(plus(xx.clone(), px), sx), nb - 1).add(v(bb));
    // The element's tap in window (i, j).
    let ki = plus(yy.clone(), py).sub(times(i.clone(), sy));
    let kj = plus(xx.clone(), px).sub(times(j.clone(), sx));
    let valid = and(
        and(in_range(i.clone(), oh), in_range(j.clone(), ow)),
        and(
            super::icmp(alexc_kernel::Cmp::Lt, ki.clone(), c(kh)),
            super::icmp(alexc_kernel::Cmp::Lt, kj.clone(), c(kw)),
        ),
    );
    let (mut window, best) = argmax(b, pool, vals, [h, w], [&at[0], &at[1], &i, &j]);
    let g = ld(dy, vec![at[0].clone(), at[1].clone(), i, j]);
    window.push(when(
        feq(best, index_f32(times(ki, kw).add(kj))),
        vec![set(acc, bin(BinOp::Add, var(acc), g))],
    ));
    let stmts = vec![
        let_(acc, Expr::F32(0.0)),
        small_loop(
            a,
            na,
            unroll,
            vec![small_loop(bb, nb, unroll, vec![when(valid, window)])],
        ),
    ];
    (stmts, var(acc))
}

/// Gradient of max-pooling (one gather launch), or with `lrn` of the fused
/// LRN + max-pool (three launches, see the module header).
fn max_pool_backward(
    ctx: &NodeCtx<'_>,
    pool: &Pool,
    lrn: Option<Lrn>,
) -> Result<LoweredKernel, LowerError> {
    let (xd, yd) = pool_backward_dims(ctx, pool)?;
    let [_, channels, h, w] = xd;
    let [_, _, oh, ow] = yd;
    let sizes = [h, w, oh, ow];
    let what = if lrn.is_some() {
        "lrn_max_pool_backward"
    } else {
        "max_pool_backward"
    };
    let mut b = KernelBuilder::new(kernel_name(ctx, what));
    let mut args = vec![Arg::Operand(0), Arg::Operand(1), Arg::Result(0)];
    let x = b.param("x", DType::F32, &xd, Access::Read);
    let dy = b.param("dy", DType::F32, &yd, Access::Read);
    let dx = b.param("dx", DType::F32, &xd, Access::Write);
    let body = match lrn {
        None => per_element(ctx, &mut b, &xd, &mut |b, at| {
            let (mut stmts, g) = gather(b, pool, [x, dy], sizes, &at);
            stmts.push(store(dx, at, g));
            stmts
        }),
        Some(l) => {
            let vals = workspace(&mut b, &mut args, "lrn", &xd);
            let terms = Terms {
                own: workspace(&mut b, &mut args, "own", &xd),
                sent: workspace(&mut b, &mut args, "sent", &xd),
            };
            // 1: the LRN values (what the forward pooled), with `u` and
            // `D` kept in `own` and `sent` until the gather replaces them.
            let mut body = per_element(ctx, &mut b, &xd, &mut |b, at| {
                let (mut stmts, d, u) = l.norm(b, x, channels, &at[1], &|j| with_channel(&at, j));
                stmts.extend([
                    store(vals, at.clone(), bin(BinOp::Mul, ld(x, at.clone()), var(u))),
                    store(terms.own, at.clone(), var(u)),
                    store(terms.sent, at.clone(), var(d)),
                ]);
                stmts
            });
            // 2: each element's pooling gradient g, and its terms. Every
            // thread reads `own` and `sent` at its own element only, so
            // replacing them in place is safe.
            body.extend(per_element(ctx, &mut b, &xd, &mut |b, at| {
                let (mut stmts, g) = gather(b, pool, [vals, dy], sizes, &at);
                let (u, d) = (b.var("u", DType::F32), b.var("d", DType::F32));
                stmts.extend([
                    let_(u, ld(terms.own, at.clone())),
                    let_(d, ld(terms.sent, at.clone())),
                ]);
                let y = ld(vals, at.clone());
                stmts.extend(terms.store(&at, g, y, var(d), var(u)));
                stmts
            }));
            // 3: dx.
            body.extend(terms.finish(ctx, &mut b, &l, &xd, [x, dx]));
            body
        }
    };
    Ok(LoweredKernel {
        kernel: b.finish(body, schedule(ctx, "n·c·h·w")),
        args,
    })
}
