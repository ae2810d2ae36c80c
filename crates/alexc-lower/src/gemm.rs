//! Lowering of convolution and linear layers, forward and backward, with
//! their fused epilogues (bias, ReLU, dropout mask) — all as one blocked,
//! register-tiled GEMM ([`micro`]).
//!
//! # Why im2col + packed GEMM, not direct convolution
//!
//! Every kernel here is the loop nest of [`micro::build`]: a parallel loop
//! over independent work items, a k-block loop, packing of a `KC × NC`
//! block of B into a thread-local panel, and a `MR × NR` register tile
//! (`Local` accumulator, `Fma` in a `Vectorized` loop over NR, k outside)
//! whose epilogue runs on the tile before its final store. Convolution
//! becomes that GEMM per (image, group): `Y[oc, p] = W[oc, (c,kh,kw)] ·
//! col[(c,kh,kw), p]`, with **im2col fused into the packing** of B — the
//! column matrix is never materialized, the packing loop reads the NCHW
//! input with `LoadOr` (zero padding, dilation, stride are index
//! arithmetic), and its cost is amortized over all `OC / groups` rows.
//!
//! Direct convolution on a blocked layout (NCHW16c) would need layout
//! changes around every LRN/pool/concat kernel, which all assume NCHW, and
//! wastes lanes where channel counts are small. AlexNet's shapes favour
//! im2col: conv1 (11×11, stride 4, 3 channels) is a GEMM of M=96, K=363,
//! N=55·55=3025 — a direct kernel would vectorize over 3 input channels or
//! over strided output columns; conv2 (5×5, 96→256 in 2 groups) is two GEMMs
//! of M=128, K=1200, N=729; the 3×3 layers on 13×13 are M=384/256,
//! K=2304/3456, N=169 — small N, large K, ideal for KC blocking. All are
//! compute bound at these sizes, and a GEMM micro-kernel is the one piece
//! of code that LLVM can turn into near-peak FMA throughput.
//!
//! Linear layers are the GEMM `yᵀ[o, n] = W[o, :] · xᵀ[:, n]`: M = out
//! features (rows of W, broadcast from the row-major weight without
//! packing), N = batch (the small input is packed transposed, cheaply). At
//! batch 1 (FC 9216→4096) the kernel streams each weight once with one
//! broadcast load per FMA — memory bound, as a GEMV must be — and at batch
//! 32 each weight is reused across two NR=16 column panels from L2.
//!
//! Backward: `dw` is the GEMM `dz[oc, (n,p)] · colᵀ[(n,p), (c,kh,kw)]`
//! (im2col packed transposed); `dx` is a transposed convolution written as
//! a GEMM `Wᵀ[c, (oc,kh,kw)] · dzcol[(oc,kh,kw), (h,w)]` whose packing
//! reads `dz` at `(h + pad − kh·d) / s` when divisible (so every `dx`
//! element is written by one tile: no scatter, no atomics, parallel-safe);
//! `db` is a vectorized sum. The ReLU-backward of the fused twins (`y > 0`,
//! and the dropout mask for linear) is applied where `dy` is loaded.
//!
//! Buffers are declared with the row-major shapes the GEMM sees (conv
//! weights `[OC, C/G·kh·kw]`, outputs `[N, OC, OH·OW]`): same memory as the
//! graph's shapes, but vector loops stay contiguous without div/mod.
//! Outputs are `ReadWrite` because a k-block after the first adds to them.

mod micro;

use alexc_ir::{Conv2dAttrs, Op};
use alexc_kernel::{
    Access, BufId, Cmp, Cond, DType, Expr, Idx, KernelBuilder, LoopKind, Schedule, Stmt,
};

use crate::{Arg, LowerError, LoweredKernel, NodeCtx};
use micro::{GemmSpec, Tiles};

/// Lowers one node of this module's ops.
pub fn lower(ctx: &NodeCtx<'_>) -> Result<Vec<LoweredKernel>, LowerError> {
    match &ctx.node().op {
        Op::Conv2d(a) => conv_forward(ctx, a, false),
        Op::ConvRelu(a) => conv_forward(ctx, a, true),
        Op::Linear(a) => linear_forward(ctx, a.bias, false, false),
        Op::LinearRelu(a) => linear_forward(ctx, a.linear.bias, true, a.dropout),
        Op::Conv2dBackward(a) => conv_backward(ctx, &a.conv, a.input_grad, false),
        Op::ConvReluBackward(a) => conv_backward(ctx, &a.conv, a.input_grad, true),
        Op::LinearBackward(a) => {
            linear_backward(ctx, a.linear.bias, a.input_grad, a.relu, a.dropout)
        }
        other => Err(ctx.invalid(format!("`{}` is not a gemm op", other.name()))),
    }
}

fn c(v: usize) -> Idx {
    Idx::Const(v as i64)
}

/// `relu(v)` with NaN propagated, as the reference (`maxNum` would drop it).
fn relu(v: Expr) -> Expr {
    let cond = Cond::Not(Box::new(Cond::Expr {
        op: Cmp::Le,
        a: v.clone(),
        b: Expr::F32(0.0),
    }));
    Expr::select(cond, v, Expr::F32(0.0))
}

/// `dy` where `y > 0`, else 0 (the ReLU's gradient read from its output).
fn relu_grad(y: Expr, dy: Expr) -> Expr {
    Expr::select(
        Cond::Expr {
            op: Cmp::Gt,
            a: y,
            b: Expr::F32(0.0),
        },
        dy,
        Expr::F32(0.0),
    )
}

fn kernel(
    kb: KernelBuilder,
    (body, schedule): (Vec<Stmt>, Schedule),
    args: Vec<Arg>,
) -> LoweredKernel {
    LoweredKernel {
        kernel: kb.finish(body, schedule),
        args,
    }
}

/// The sizes of a convolution, checked against the node's operands.
#[derive(Clone, Copy, Debug)]
struct ConvDims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oc: usize,
    cg: usize,
    ocg: usize,
    g: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    sh: i64,
    sw: i64,
    ph: i64,
    pw: i64,
    dh: i64,
    dw: i64,
}

impl ConvDims {
    fn new(ctx: &NodeCtx<'_>, a: &Conv2dAttrs) -> Result<ConvDims, LowerError> {
        let xs = ctx.operand_shape(0)?;
        let ws = ctx.operand_shape(1)?;
        let (&[n, c, h, w], &[oc, cg, kh, kw]) = (&xs[..], &ws[..]) else {
            return Err(ctx.invalid(format!("input {xs:?} and weight {ws:?} must have rank 4")));
        };
        let g = a.groups;
        if g == 0 || oc % g != 0 || c != cg * g || oc != a.out_channels || [kh, kw] != a.kernel {
            return Err(ctx.invalid("weight does not fit input and attributes"));
        }
        if a.stride.contains(&0) || a.dilation.contains(&0) {
            return Err(ctx.invalid("stride and dilation must be positive"));
        }
        let out = |len: usize, k: usize, s: usize, p: usize, d: usize| {
            let ext = d * (k.max(1) - 1) + 1;
            (len + 2 * p).checked_sub(ext).map(|v| v / s + 1)
        };
        let (Some(oh), Some(ow)) = (
            out(h, kh, a.stride[0], a.padding[0], a.dilation[0]),
            out(w, kw, a.stride[1], a.padding[1], a.dilation[1]),
        ) else {
            return Err(ctx.invalid("the kernel does not fit the padded input"));
        };
        let i = |v: usize| v as i64;
        Ok(ConvDims {
            n,
            c,
            h,
            w,
            oc,
            cg,
            ocg: oc / g,
            g,
            kh,
            kw,
            oh,
            ow,
            sh: i(a.stride[0]),
            sw: i(a.stride[1]),
            ph: i(a.padding[0]),
            pw: i(a.padding[1]),
            dh: i(a.dilation[0]),
            dw: i(a.dilation[1]),
        })
    }

    /// `C/G · kh · kw`: the GEMM depth of the forward pass.
    fn kdepth(&self) -> usize {
        self.cg * self.kh * self.kw
    }

    fn taps(&self) -> usize {
        self.kh * self.kw
    }

    /// `x[n, g·C/G + ci, oh·s + r·d − pad, ow·s + q·d − pad]` for the im2col
    /// row `kk = (ci, r, q)` and column `p = (oh, ow)`, zero in the padding.
    fn im2col(&self, x: BufId, n: Idx, g: Idx, kk: Idx, p: Idx) -> Expr {
        let ci = kk.clone().div(self.taps() as i64);
        let r = kk.clone().div(self.kw as i64).rem(self.kh as i64);
        let q = kk.rem(self.kw as i64);
        let ih = p
            .clone()
            .div(self.ow as i64)
            .mul(self.sh)
            .add(r.mul(self.dh))
            .sub(c(self.ph as usize));
        let iw = p
            .rem(self.ow as i64)
            .mul(self.sw)
            .add(q.mul(self.dw))
            .sub(c(self.pw as usize));
        Expr::LoadOr {
            buf: x,
            index: vec![n, g.mul(self.cg as i64).add(ci), ih, iw],
            default: 0.0,
        }
    }
}

fn conv_forward(
    ctx: &NodeCtx<'_>,
    a: &Conv2dAttrs,
    fuse_relu: bool,
) -> Result<Vec<LoweredKernel>, LowerError> {
    let d = ConvDims::new(ctx, a)?;
    let tiles = Tiles::for_width(ctx.options.vector_width);
    let p = d.oh * d.ow;
    let mut kb = KernelBuilder::new(format!("{}_fwd", ctx.node().name));
    let x = kb.param("x", DType::F32, &[d.n, d.c, d.h, d.w], Access::Read);
    let w = kb.param("w", DType::F32, &[d.oc, d.kdepth()], Access::Read);
    let mut args = vec![Arg::Operand(0), Arg::Operand(1)];
    let bias = a
        .bias
        .then(|| kb.param("bias", DType::F32, &[d.oc], Access::Read));
    if a.bias {
        args.push(Arg::Operand(2));
    }
    let y = kb.param("y", DType::F32, &[d.n, d.oc, p], Access::ReadWrite);
    args.push(Arg::Result(0));
    let ocg = d.ocg as i64;
    let spec = GemmSpec {
        batch: vec![("n", d.n), ("g", d.g)],
        m: d.ocg,
        n: p,
        k: d.kdepth(),
        axes: ["oc", "ohw", "ckk"],
        a: &|b, m, k| Expr::load(w, vec![b[1].clone().mul(ocg).add(m), k]),
        b: &|b, k, j| d.im2col(x, b[0].clone(), b[1].clone(), k, j),
        c: &|b, m, j| (y, vec![b[0].clone(), b[1].clone().mul(ocg).add(m), j]),
        init: &|b, m, _| match bias {
            Some(bias) => Expr::load(bias, vec![b[1].clone().mul(ocg).add(m)]),
            None => Expr::F32(0.0),
        },
        epilogue: &|_, _, _, v| if fuse_relu { relu(v) } else { v },
    };
    let built = micro::build(&mut kb, &spec, &tiles, ctx.options.parallel);
    Ok(vec![kernel(kb, built, args)])
}

fn conv_backward(
    ctx: &NodeCtx<'_>,
    a: &Conv2dAttrs,
    input_grad: bool,
    fused: bool,
) -> Result<Vec<LoweredKernel>, LowerError> {
    let d = ConvDims::new(ctx, a)?;
    let tiles = Tiles::for_width(ctx.options.vector_width);
    let name = &ctx.node().name;
    let p = d.oh * d.ow;
    let ocg = d.ocg as i64;
    let (y_op, dy_op) = if fused { (Some(2), 3) } else { (None, 2) };
    let out_shape = [d.n, d.oc, p];
    if ctx.operand_shape(dy_op)?.iter().product::<usize>() != d.n * d.oc * p {
        return Err(ctx.invalid("the output gradient does not match the output shape"));
    }
    // Declares dy (and y) and returns the loader of the ReLU-masked `dz`.
    let grads = |kb: &mut KernelBuilder, args: &mut Vec<Arg>| {
        let y = y_op.map(|i| {
            args.push(Arg::Operand(i));
            kb.param("y", DType::F32, &out_shape, Access::Read)
        });
        args.push(Arg::Operand(dy_op));
        let dy = kb.param("dy", DType::F32, &out_shape, Access::Read);
        (y, dy)
    };
    let dz = |y: Option<BufId>, dy: BufId, index: Vec<Idx>, or: bool| {
        let load = |buf| {
            if or {
                Expr::LoadOr {
                    buf,
                    index: index.clone(),
                    default: 0.0,
                }
            } else {
                Expr::load(buf, index.clone())
            }
        };
        match y {
            Some(y) => relu_grad(load(y), load(dy)),
            None => load(dy),
        }
    };
    let mut kernels = Vec::new();
    let mut result = 0;

    if input_grad {
        // dx[n, g·C/G + ci, (u, v)] = Σ_{(o, r, q)} w[g·O/G + o, ci, r·kw + q] ·
        //   dz[n, g·O/G + o, (u + ph − r·dh)/sh, (v + pw − q·dw)/sw] (divisible only).
        let mut kb = KernelBuilder::new(format!("{name}_dx"));
        let mut args = vec![Arg::Operand(1)];
        let w = kb.param("w", DType::F32, &[d.oc, d.cg, d.taps()], Access::Read);
        let (y, dy) = grads(&mut kb, &mut args);
        let dx = kb.param("dx", DType::F32, &[d.n, d.c, d.h * d.w], Access::ReadWrite);
        args.push(Arg::Result(result));
        result += 1;
        let taps = d.taps() as i64;
        let cg = d.cg as i64;
        let b_load = |b: &[Idx], k: Idx, j: Idx| {
            let o = k.clone().div(taps);
            let r = k.clone().div(d.kw as i64).rem(d.kh as i64);
            let q = k.rem(d.kw as i64);
            let ti = j
                .clone()
                .div(d.w as i64)
                .add(c(d.ph as usize))
                .sub(r.mul(d.dh));
            let tj = j.rem(d.w as i64).add(c(d.pw as usize)).sub(q.mul(d.dw));
            let index = [
                b[0].clone(),
                b[1].clone().mul(ocg).add(o),
                ti.clone().div(d.sh),
                tj.clone().div(d.sw),
            ];
            let v = dz4(y, dy, index, &d);
            let mut cond: Option<Cond> = None;
            for (t, s) in [(ti, d.sh), (tj, d.sw)] {
                if s > 1 {
                    let c1 = Cond::Idx {
                        op: Cmp::Eq,
                        a: t.rem(s),
                        b: c(0),
                    };
                    cond = Some(match cond {
                        Some(prev) => Cond::And(Box::new(prev), Box::new(c1)),
                        None => c1,
                    });
                }
            }
            match cond {
                Some(cond) => Expr::select(cond, v, Expr::F32(0.0)),
                None => v,
            }
        };
        let spec = GemmSpec {
            batch: vec![("n", d.n), ("g", d.g)],
            m: d.cg,
            n: d.h * d.w,
            k: d.ocg * d.taps(),
            axes: ["c", "hw", "okk"],
            a: &|b, m, k| {
                Expr::load(
                    w,
                    vec![
                        b[1].clone().mul(ocg).add(k.clone().div(taps)),
                        m,
                        k.rem(taps),
                    ],
                )
            },
            b: &b_load,
            c: &|b, m, j| (dx, vec![b[0].clone(), b[1].clone().mul(cg).add(m), j]),
            init: &|_, _, _| Expr::F32(0.0),
            epilogue: &|_, _, _, v| v,
        };
        let built = micro::build(&mut kb, &spec, &tiles, ctx.options.parallel);
        kernels.push(kernel(kb, built, args));
    }

    // dw[g·O/G + o, (ci, r, q)] = Σ_{(n, p)} dz[n, g·O/G + o, p] · col[n][(ci, r, q), p].
    {
        let mut kb = KernelBuilder::new(format!("{name}_dw"));
        let mut args = vec![Arg::Operand(0)];
        let x = kb.param("x", DType::F32, &[d.n, d.c, d.h, d.w], Access::Read);
        let (y, dy) = grads(&mut kb, &mut args);
        let dwb = kb.param("dw", DType::F32, &[d.oc, d.kdepth()], Access::ReadWrite);
        args.push(Arg::Result(result));
        result += 1;
        let pp = p as i64;
        let spec = GemmSpec {
            batch: vec![("g", d.g)],
            m: d.ocg,
            n: d.kdepth(),
            k: d.n * p,
            axes: ["oc", "ckk", "nohw"],
            a: &|b, m, r| {
                dz(
                    y,
                    dy,
                    vec![r.clone().div(pp), b[0].clone().mul(ocg).add(m), r.rem(pp)],
                    false,
                )
            },
            b: &|b, r, j| d.im2col(x, r.clone().div(pp), b[0].clone(), j, r.rem(pp)),
            c: &|b, m, j| (dwb, vec![b[0].clone().mul(ocg).add(m), j]),
            init: &|_, _, _| Expr::F32(0.0),
            epilogue: &|_, _, _, v| v,
        };
        let built = micro::build(&mut kb, &spec, &tiles, ctx.options.parallel);
        kernels.push(kernel(kb, built, args));
    }

    if a.bias {
        let mut kb = KernelBuilder::new(format!("{name}_db"));
        let mut args = Vec::new();
        let (y, dy) = grads(&mut kb, &mut args);
        let db = kb.param("db", DType::F32, &[d.oc], Access::Write);
        args.push(Arg::Result(result));
        let built = bias_grad(
            &mut kb,
            db,
            &|n, o, pi| dz(y, dy, vec![n, o, pi], false),
            [d.n, d.oc, p],
            ctx,
        );
        kernels.push(kernel(kb, built, args));
    }
    Ok(kernels)
}

/// `dz` at `[n, oc, i, j]` of the `[N, OC, OH·OW]` gradient buffers, zero
/// where `i` or `j` is outside the output (a transposed convolution reads
/// there). Each coordinate is range-checked on its own so that a column
/// past the row's end does not wrap into the next row.
fn dz4(y: Option<BufId>, dy: BufId, [n, o, i, j]: [Idx; 4], d: &ConvDims) -> Expr {
    let range = |v: Idx, len: usize| {
        Cond::And(
            Box::new(Cond::Idx {
                op: Cmp::Ge,
                a: v.clone(),
                b: c(0),
            }),
            Box::new(Cond::Idx {
                op: Cmp::Lt,
                a: v,
                b: c(len),
            }),
        )
    };
    let in_range = Cond::And(
        Box::new(range(i.clone(), d.oh)),
        Box::new(range(j.clone(), d.ow)),
    );
    let flat = i.mul(d.ow as i64).add(j);
    let load = |buf| Expr::LoadOr {
        buf,
        index: vec![n.clone(), o.clone(), flat.clone()],
        default: 0.0,
    };
    let v = match y {
        Some(y) => relu_grad(load(y), load(dy)),
        None => load(dy),
    };
    Expr::select(in_range, v, Expr::F32(0.0))
}

/// `db[o] = Σ_{n, p} dz(n, o, p)` over `[N, O, P]`: one output channel per
/// parallel iteration, `vw` partial sums in a local vector, then a serial
/// horizontal sum.
fn bias_grad(
    kb: &mut KernelBuilder,
    db: BufId,
    dz: &dyn Fn(Idx, Idx, Idx) -> Expr,
    [n, oc, p]: [usize; 3],
    ctx: &NodeCtx<'_>,
) -> (Vec<Stmt>, Schedule) {
    let vw = ctx.options.vector_width.max(1) as usize;
    let acc = kb.local("acc", DType::F32, &[vw]);
    let (o, l0, nv, pb, l1, l2, l3) = (
        kb.var("o", DType::I64),
        kb.var("l", DType::I64),
        kb.var("n", DType::I64),
        kb.var("pb", DType::I64),
        kb.var("l", DType::I64),
        kb.var("l", DType::I64),
        kb.var("l", DType::I64),
    );
    let sum = kb.var("sum", DType::F32);
    let vloop = LoopKind::Vectorized { width: vw as u32 };
    let add = |lane: Idx, pos: Idx| Stmt::Store {
        buf: acc,
        index: vec![lane.clone()],
        value: Expr::binary(
            alexc_kernel::BinOp::Add,
            Expr::load(acc, vec![lane]),
            dz(Idx::var(nv), Idx::var(o), pos),
        ),
    };
    let full = p / vw;
    let body = vec![Stmt::For {
        var: o,
        extent: c(oc),
        kind: if ctx.options.parallel {
            LoopKind::Parallel
        } else {
            LoopKind::Serial
        },
        body: vec![
            Stmt::For {
                var: l0,
                extent: c(vw),
                kind: vloop,
                body: vec![Stmt::Store {
                    buf: acc,
                    index: vec![Idx::var(l0)],
                    value: Expr::F32(0.0),
                }],
            },
            Stmt::For {
                var: nv,
                extent: c(n),
                kind: LoopKind::Serial,
                body: vec![
                    Stmt::For {
                        var: pb,
                        extent: c(full),
                        kind: LoopKind::Serial,
                        body: vec![Stmt::For {
                            var: l1,
                            extent: c(vw),
                            kind: vloop,
                            body: vec![add(
                                Idx::var(l1),
                                Idx::var(pb).mul(vw as i64).add(Idx::var(l1)),
                            )],
                        }],
                    },
                    Stmt::For {
                        var: l2,
                        extent: c(p % vw),
                        kind: LoopKind::Serial,
                        body: vec![add(Idx::var(l2), c(full * vw).add(Idx::var(l2)))],
                    },
                ],
            },
            Stmt::Let {
                var: sum,
                value: Expr::F32(0.0),
            },
            Stmt::For {
                var: l3,
                extent: c(vw),
                kind: LoopKind::Serial,
                body: vec![Stmt::Assign {
                    var: sum,
                    value: Expr::binary(
                        alexc_kernel::BinOp::Add,
                        Expr::Var(sum),
                        Expr::load(acc, vec![Idx::var(l3)]),
                    ),
                }],
            },
            Stmt::Store {
                buf: db,
                index: vec![Idx::var(o)],
                value: Expr::Var(sum),
            },
        ],
    }];
    let schedule = Schedule {
        tiles: vec![("p".to_string(), vw)],
        vector_width: vw as u32,
        loop_order: vec!["oc".into(), "n".into(), "p".into()],
        parallel_axis: ctx.options.parallel.then(|| "oc".to_string()),
    };
    (body, schedule)
}

/// `[N, in]` and `[out, in]` of a linear layer, checked.
fn linear_dims(ctx: &NodeCtx<'_>) -> Result<(usize, usize, usize), LowerError> {
    let xs = ctx.operand_shape(0)?;
    let ws = ctx.operand_shape(1)?;
    match (&xs[..], &ws[..]) {
        (&[n, fin], &[fout, win]) if win == fin => Ok((n, fin, fout)),
        _ => Err(ctx.invalid(format!(
            "input {xs:?} and weight {ws:?} do not form a linear layer"
        ))),
    }
}

/// `y[n, o] = epilogue(b[o] + Σ_i x[n, i] · w[o, i])`, computed as
/// `yᵀ = W · xᵀ` (M = out, N = batch) so the weight needs no packing.
fn linear_forward(
    ctx: &NodeCtx<'_>,
    bias: bool,
    fuse_relu: bool,
    dropout: bool,
) -> Result<Vec<LoweredKernel>, LowerError> {
    let (n, fin, fout) = linear_dims(ctx)?;
    let tiles = Tiles::for_width(ctx.options.vector_width);
    let mut kb = KernelBuilder::new(format!("{}_fwd", ctx.node().name));
    let x = kb.param("x", DType::F32, &[n, fin], Access::Read);
    let w = kb.param("w", DType::F32, &[fout, fin], Access::Read);
    let mut args = vec![Arg::Operand(0), Arg::Operand(1)];
    let mut next = 2;
    let bias = bias.then(|| {
        args.push(Arg::Operand(next));
        next += 1;
        kb.param("bias", DType::F32, &[fout], Access::Read)
    });
    let mask = dropout.then(|| {
        args.push(Arg::Operand(next));
        kb.param("mask", DType::F32, &[n, fout], Access::Read)
    });
    let y = kb.param("y", DType::F32, &[n, fout], Access::ReadWrite);
    args.push(Arg::Result(0));
    let spec = GemmSpec {
        batch: vec![],
        m: fout,
        n,
        k: fin,
        axes: ["out", "n", "in"],
        a: &|_, m, k| Expr::load(w, vec![m, k]),
        b: &|_, k, j| Expr::load(x, vec![j, k]),
        c: &|_, m, j| (y, vec![j, m]),
        init: &|_, m, _| match bias {
            Some(b) => Expr::load(b, vec![m]),
            None => Expr::F32(0.0),
        },
        epilogue: &|_, m, j, v| {
            let v = if fuse_relu { relu(v) } else { v };
            match mask {
                Some(mask) => {
                    Expr::binary(alexc_kernel::BinOp::Mul, v, Expr::load(mask, vec![j, m]))
                }
                None => v,
            }
        },
    };
    let built = micro::build(&mut kb, &spec, &tiles, ctx.options.parallel);
    Ok(vec![kernel(kb, built, args)])
}

/// Gradients of a linear layer with `dz = [y > 0] · (dy · mask)` applied
/// where `dy` is read: `dx = dz · W` (M = batch, N = in, K = out),
/// `dw = dzᵀ · x` (M = out, N = in, K = batch), `db = Σ_n dz`.
fn linear_backward(
    ctx: &NodeCtx<'_>,
    bias: bool,
    input_grad: bool,
    relu_fused: bool,
    dropout: bool,
) -> Result<Vec<LoweredKernel>, LowerError> {
    let (n, fin, fout) = linear_dims(ctx)?;
    if dropout && !relu_fused {
        return Err(ctx.invalid("dropout is folded in only together with relu"));
    }
    let tiles = Tiles::for_width(ctx.options.vector_width);
    let name = &ctx.node().name;
    let y_op = relu_fused.then_some(2);
    let mask_op = dropout.then_some(3);
    let dy_op = 2 + relu_fused as usize + dropout as usize;
    if ctx.operand_shape(dy_op)? != [n, fout] {
        return Err(ctx.invalid("the output gradient does not match the output shape"));
    }
    let grads = |kb: &mut KernelBuilder, args: &mut Vec<Arg>| {
        let mut decl = |op: Option<usize>, pname: &str| {
            op.map(|i| {
                args.push(Arg::Operand(i));
                kb.param(pname, DType::F32, &[n, fout], Access::Read)
            })
        };
        let y = decl(y_op, "y");
        let mask = decl(mask_op, "mask");
        let dy = decl(Some(dy_op), "dy");
        (y, mask, dy)
    };
    let dz = |(y, mask, dy): (Option<BufId>, Option<BufId>, Option<BufId>), row: Idx, o: Idx| {
        let at = vec![row, o];
        let mut v = match dy {
            Some(dy) => Expr::load(dy, at.clone()),
            None => Expr::F32(0.0),
        };
        if let Some(mask) = mask {
            v = Expr::binary(alexc_kernel::BinOp::Mul, v, Expr::load(mask, at.clone()));
        }
        if let Some(y) = y {
            v = relu_grad(Expr::load(y, at), v);
        }
        v
    };
    let mut kernels = Vec::new();
    let mut result = 0;
    if input_grad {
        let mut kb = KernelBuilder::new(format!("{name}_dx"));
        let mut args = vec![Arg::Operand(1)];
        let w = kb.param("w", DType::F32, &[fout, fin], Access::Read);
        let g = grads(&mut kb, &mut args);
        let dx = kb.param("dx", DType::F32, &[n, fin], Access::ReadWrite);
        args.push(Arg::Result(result));
        result += 1;
        let spec = GemmSpec {
            batch: vec![],
            m: n,
            n: fin,
            k: fout,
            axes: ["n", "in", "out"],
            a: &|_, m, k| dz(g, m, k),
            b: &|_, k, j| Expr::load(w, vec![k, j]),
            c: &|_, m, j| (dx, vec![m, j]),
            init: &|_, _, _| Expr::F32(0.0),
            epilogue: &|_, _, _, v| v,
        };
        let built = micro::build(&mut kb, &spec, &tiles, ctx.options.parallel);
        kernels.push(kernel(kb, built, args));
    }
    {
        let mut kb = KernelBuilder::new(format!("{name}_dw"));
        let mut args = vec![Arg::Operand(0)];
        let x = kb.param("x", DType::F32, &[n, fin], Access::Read);
        let g = grads(&mut kb, &mut args);
        let dw = kb.param("dw", DType::F32, &[fout, fin], Access::ReadWrite);
        args.push(Arg::Result(result));
        result += 1;
        let spec = GemmSpec {
            batch: vec![],
            m: fout,
            n: fin,
            k: n,
            axes: ["out", "in", "n"],
            a: &|_, m, k| dz(g, k, m),
            b: &|_, k, j| Expr::load(x, vec![k, j]),
            c: &|_, m, j| (dw, vec![m, j]),
            init: &|_, _, _| Expr::F32(0.0),
            epilogue: &|_, _, _, v| v,
        };
        let built = micro::build(&mut kb, &spec, &tiles, ctx.options.parallel);
        kernels.push(kernel(kb, built, args));
    }
    if bias {
        let mut kb = KernelBuilder::new(format!("{name}_db"));
        let mut args = Vec::new();
        let g = grads(&mut kb, &mut args);
        let db = kb.param("db", DType::F32, &[fout], Access::Write);
        args.push(Arg::Result(result));
        let built = bias_grad(&mut kb, db, &|row, o, _| dz(g, row, o), [n, fout, 1], ctx);
        kernels.push(kernel(kb, built, args));
    }
    Ok(kernels)
}
