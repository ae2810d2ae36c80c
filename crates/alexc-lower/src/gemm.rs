//! Lowering of convolution and linear layers, forward and backward, with
//! their fused epilogues (bias, ReLU, dropout mask): blocked, register-tiled
//! GEMMs (`gemm/micro.rs`), and matrix–vector products for linear layers at
//! small batch (`gemm/gemv.rs`).
//!
//! # Why im2col + packed GEMM, not direct convolution
//!
//! Every kernel here but the GEMV is the loop nest of `micro::build`:
//! parallel work items, a k-block loop, packing of a `KC × NC` block of B
//! into a panel, and an `MR × NR` register tile (`Local` accumulator, `Fma`
//! in a `Vectorized` loop over NR, k outside) whose epilogue runs on the
//! tile before its final store. Convolution becomes that GEMM per (image,
//! group): `Y[oc, p] = W[oc, (c,kh,kw)] · col[(c,kh,kw), p]`, with **im2col
//! fused into the packing** of B — the column matrix is never
//! materialized; the packing loop gathers from the input (stride and
//! dilation are index arithmetic), and its cost is amortized over all
//! `OC / groups` rows.
//!
//! Direct convolution on a blocked layout (NCHW16c) would need layout
//! changes around every LRN/pool/concat kernel, which all assume NCHW, and
//! wastes lanes where channel counts are small. AlexNet's shapes favour
//! im2col: conv1 (11×11, stride 4, 3 channels) is a GEMM of M=96, K=363,
//! N=55·55=3025; conv2 (5×5, 96→256) is M=256, K=2400, N=729; the 3×3
//! layers on 13×13 are M=384/256, K=2304/3456, N=169 — small N, large K.
//! All are compute bound, and a GEMM micro-kernel is the one piece of code
//! that LLVM turns into near-peak FMA throughput. At batch 1 they have few
//! column blocks, so `micro::plan` splits them over M as well (B packed
//! once, shared), so that every thread has work.
//!
//! # Linear layers
//!
//! `yᵀ[o, n] = W[o, :] · xᵀ[:, n]`: M = out features (rows of W, read in
//! place), N = batch (the small input, packed transposed). Up to a batch of
//! [`GEMV_MAX_BATCH`] the layer is a matrix–vector product, memory bound on
//! W (151 MB for fc6), and `gemv` streams W once with the lanes along
//! `k`, where a GEMM tile would leave most of its `NR` lanes idle.
//!
//! # Backward
//!
//! - `dw` of a convolution is the GEMM `dz[oc, (n,p)] · colᵀ[(n,p),
//!   (c,kh,kw)]` with the images as the GEMM's *reduction batch*: k-blocks
//!   stay within one image, so A is `dz[n, oc, p]` read row by row and B is
//!   im2col packed transposed, without `/ (OH·OW)` anywhere. M × N is small
//!   and K (batch × pixels) huge, so the plan splits K over the images
//!   (partial sums in a workspace, then a reduction) instead of re-reading
//!   all of A per column block.
//! - `dx` is a transposed convolution written as the GEMM `Wᵀ[c, (oc,kh,kw)]
//!   · dzcol[(oc,kh,kw), (h,w)]`, whose packing reads `dz` at
//!   `(h + pad − kh·d) / s` when divisible (so every `dx` element is
//!   written by one tile: no scatter, no atomics, parallel-safe).
//! - For linear layers `dx = dz · W` (M = batch) and `dw = dzᵀ · x` (K =
//!   batch); `db` is a vectorized sum.
//!
//! # Staging
//!
//! Each kernel first prepares, with parallel elementwise loops into
//! workspaces, the operands that the GEMM would otherwise compute per use:
//!
//! - the micro-kernel's A is read in its innermost loop, so it must be a
//!   plain load contiguous in k. The fused twins' `dz = [y > 0] · dy ·
//!   mask` and the weight seen as `Wᵀ[c, (oc, kh, kw)]` are staged;
//! - the input with its zero padding as data (`x_padded`), and for `dx` the
//!   gradient with the border its transposed convolution reads
//!   (`dz_padded`): the packing gathers then need no range checks — every
//!   index is in bounds, a plain load instead of a `load_or` with a check
//!   per dimension (1.5–5 % on every convolution, forward and backward).
//!
//! A staging pass reads its source once; the packing reads each element
//! `kh·kw` times or more, and the hot loop once per row of the tile.
//!
//! Buffers are declared with the row-major shapes the GEMM sees (conv
//! weights `[OC, C/G·kh·kw]`, outputs `[N, OC, OH·OW]`): same memory as the
//! graph's shapes, but vector loops stay contiguous without div/mod.
//! Outputs are `ReadWrite` because a k-block after the first adds to them.

mod gemv;
mod gpu;
mod micro;

/// The GPU GEMM's tile sizes (see `gemm/gpu.rs`): the CUDA backend's
/// launch math and tests read them.
pub use gpu::{BK as GPU_BK, BM as GPU_BM, BN as GPU_BN, THREADS as GPU_THREADS};

use alexc_ir::{Conv2dAttrs, Op};
use alexc_kernel::{
    Access, BinOp, BufId, Cmp, Cond, DType, Expr, Idx, KernelBuilder, LoopKind, Schedule, Stmt,
};

use crate::{Arg, LowerError, LoweredKernel, NodeCtx};
use gemv::GemvSpec;
use micro::{for_, GemmSpec};

/// Linear layers up to this batch run as matrix–vector products (`gemv`):
/// below it a GEMM tile of `NR = 32` columns would use a quarter of its
/// lanes or less.
pub const GEMV_MAX_BATCH: usize = 8;

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

fn kernel(kb: KernelBuilder, body: Vec<Stmt>, schedule: Schedule, args: Vec<Arg>) -> LoweredKernel {
    LoweredKernel {
        kernel: kb.finish(micro::fold(body), schedule),
        args,
    }
}

/// Plans and builds `spec` into `kb`; returns the GEMM's statements after
/// `prologue` (staging loops) and appends its workspaces to `args`.
fn gemm(
    kb: &mut KernelBuilder,
    spec: &GemmSpec<'_>,
    prologue: Vec<Stmt>,
    args: &mut Vec<Arg>,
    ctx: &NodeCtx<'_>,
) -> (Vec<Stmt>, Schedule) {
    if ctx.options.is_gpu() {
        let built = gpu::build(kb, spec);
        args.extend(built.workspaces);
        let mut body = prologue;
        body.extend(built.body);
        return (body, built.schedule);
    }
    let plan = micro::plan(spec, ctx.options.vector_width, ctx.options.parallel);
    let built = micro::build(kb, spec, &plan, ctx.options.parallel);
    args.extend(built.workspaces);
    let mut body = prologue;
    body.extend(built.body);
    (body, built.schedule)
}

/// Declares a workspace `name` of `shape` and returns it with the loop that
/// fills it: `ws[i…, j] = value(i…, j)`, parallel over all but the last
/// dimension, vectorized along the last.
fn stage(
    kb: &mut KernelBuilder,
    args: &mut Vec<Arg>,
    name: &str,
    shape: &[usize],
    value: &dyn Fn(&[Idx]) -> Expr,
    ctx: &NodeCtx<'_>,
) -> (BufId, Stmt) {
    let ws = kb.param(name, DType::F32, shape, Access::ReadWrite);
    args.push(Arg::Workspace {
        elements: shape.iter().product(),
    });
    if ctx.options.is_gpu() {
        return (ws, gpu::stage_flat(kb, ws, shape, value));
    }
    let (outer, last) = shape.split_at(shape.len().saturating_sub(1));
    let rows: usize = outer.iter().product();
    let u = kb.var("u", DType::I64);
    let l = kb.var("l", DType::I64);
    let mut index: Vec<Idx> = Vec::new();
    let mut stride = rows;
    for &e in outer {
        stride /= e.max(1);
        index.push(micro::rem(micro::div(Idx::var(u), stride.max(1)), e));
    }
    index.push(Idx::var(l));
    let store = Stmt::Store {
        buf: ws,
        index: index.clone(),
        value: value(&index),
    };
    let width = ctx.options.vector_width.max(1);
    let inner = for_(
        l,
        c(last.first().copied().unwrap_or(1)),
        LoopKind::Vectorized { width },
        vec![store],
    );
    let kind = if ctx.options.parallel {
        LoopKind::Parallel
    } else {
        LoopKind::Serial
    };
    (ws, for_(u, c(rows), kind, vec![inner]))
}

/// Declares a workspace `[a, b, t + h + bo, l + w + r]` (pads `[t, bo, l,
/// r]`) and returns it with the loop that fills it: `value([i, j, y, x])`
/// at `[i, j, t + y, l + x]` for `y < h`, `x < w`, zero around. Parallel
/// over `(i, j)`; rows are copied with vector loops.
fn stage_padded(
    kb: &mut KernelBuilder,
    args: &mut Vec<Arg>,
    name: &str,
    [a, b, h, w]: [usize; 4],
    [t, bo, l, r]: [usize; 4],
    value: &dyn Fn(Vec<Idx>) -> Expr,
    ctx: &NodeCtx<'_>,
) -> (BufId, Stmt) {
    let (hp, wp) = (t + h + bo, l + w + r);
    let ws = kb.param(name, DType::F32, &[a, b, hp, wp], Access::ReadWrite);
    args.push(Arg::Workspace {
        elements: a * b * hp * wp,
    });
    if ctx.options.is_gpu() {
        let fill = gpu::stage_padded_flat(kb, ws, [a, b, h, w], [t, bo, l, r], value);
        return (ws, fill);
    }
    let width = ctx.options.vector_width.max(1);
    let vloop = LoopKind::Vectorized { width };
    let (u, y) = (kb.var("u", DType::I64), kb.var("y", DType::I64));
    let i0 = micro::rem(micro::div(Idx::var(u), b), a);
    let i1 = micro::rem(Idx::var(u), b);
    let at = |col: Idx| vec![i0.clone(), i1.clone(), Idx::var(y), col];
    let mut zeros = |from: usize, len: usize| {
        let x = kb.var("x", DType::I64);
        (len > 0).then(|| {
            for_(
                x,
                c(len),
                vloop,
                vec![Stmt::Store {
                    buf: ws,
                    index: at(c(from).add(Idx::var(x))),
                    value: Expr::F32(0.0),
                }],
            )
        })
    };
    let left = zeros(0, l);
    let right = zeros(l + w, r);
    let blank = zeros(0, wp);
    let x = kb.var("x", DType::I64);
    let copy = for_(
        x,
        c(w),
        vloop,
        vec![Stmt::Store {
            buf: ws,
            index: at(c(l).add(Idx::var(x))),
            value: value(vec![
                i0.clone(),
                i1.clone(),
                Idx::var(y).sub(c(t)),
                Idx::var(x),
            ]),
        }],
    );
    let row = Stmt::If {
        cond: micro::and(
            micro::le(c(t), Idx::var(y)),
            micro::lt(Idx::var(y), c(t + h)),
        ),
        then: left.into_iter().chain([copy]).chain(right).collect(),
        otherwise: blank.into_iter().collect(),
    };
    let kind = if ctx.options.parallel {
        LoopKind::Parallel
    } else {
        LoopKind::Serial
    };
    (
        ws,
        for_(
            u,
            c(a * b),
            kind,
            vec![for_(y, c(hp), LoopKind::Serial, vec![row])],
        ),
    )
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

    /// `xp[n, g·C/G + ci, oh·s + r·d, ow·s + q·d]` for the im2col row
    /// `kk = (ci, r, q)` and column `p = (oh, ow)`, where `xp` is the input
    /// with its padding made explicit ([`ConvDims::padded_input`]): always
    /// in bounds, so a plain load (a gather across lanes, without the
    /// per-dimension range checks of `load_or`).
    fn im2col(&self, xp: BufId, n: Idx, g: Idx, kk: Idx, p: Idx) -> Expr {
        let ci = kk.clone().div(self.taps() as i64);
        let r = kk.clone().div(self.kw as i64).rem(self.kh as i64);
        let q = kk.rem(self.kw as i64);
        let ih = p
            .clone()
            .div(self.ow as i64)
            .mul(self.sh)
            .add(r.mul(self.dh));
        let iw = p.rem(self.ow as i64).mul(self.sw).add(q.mul(self.dw));
        Expr::load(xp, vec![n, g.mul(self.cg as i64).add(ci), ih, iw])
    }

    /// The zero border `[top, bottom, left, right]` around `dz` that the
    /// transposed convolution of `dx` reads: output row `(u + ph − r·dh) /
    /// sh` (floor) ranges over `⌊(ph − (kh−1)·dh) / sh⌋ ..= ⌊(H − 1 + ph) /
    /// sh⌋`, of which only `0..OH` is `dz`; likewise for columns.
    fn transposed_pads(&self) -> [usize; 4] {
        let span = |len: usize, k: usize, s: i64, p: i64, d: i64, out: usize| {
            let lo = (p - (k as i64 - 1) * d).div_euclid(s);
            let hi = (len as i64 - 1 + p).div_euclid(s);
            (
                (-lo).max(0) as usize,
                (hi - (out as i64 - 1)).max(0) as usize,
            )
        };
        let (t, b) = span(self.h, self.kh, self.sh, self.ph, self.dh, self.oh);
        let (l, r) = span(self.w, self.kw, self.sw, self.pw, self.dw, self.ow);
        [t, b, l, r]
    }

    /// The input with its zero padding as data: `x` itself when there is
    /// none, else a workspace `[N, C, H + 2·ph, W + 2·pw]` and the loop that
    /// fills it (one pass over `x`, against `C/G · kh · kw` reads per
    /// element in the packing).
    fn padded_input(
        &self,
        kb: &mut KernelBuilder,
        args: &mut Vec<Arg>,
        x: BufId,
        ctx: &NodeCtx<'_>,
    ) -> (BufId, Vec<Stmt>) {
        let (ph, pw) = (self.ph as usize, self.pw as usize);
        if ph == 0 && pw == 0 {
            return (x, Vec::new());
        }
        let (xp, fill) = stage_padded(
            kb,
            args,
            "x_padded",
            [self.n, self.c, self.h, self.w],
            [ph, ph, pw, pw],
            &|i| Expr::load(x, i),
            ctx,
        );
        (xp, vec![fill])
    }
}

fn conv_forward(
    ctx: &NodeCtx<'_>,
    a: &Conv2dAttrs,
    fuse_relu: bool,
) -> Result<Vec<LoweredKernel>, LowerError> {
    let d = ConvDims::new(ctx, a)?;
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
    let (xp, prologue) = d.padded_input(&mut kb, &mut args, x, ctx);
    let ocg = d.ocg as i64;
    let spec = GemmSpec {
        batch: vec![("n", d.n), ("g", d.g)],
        reduce: vec![],
        m: d.ocg,
        n: p,
        k: d.kdepth(),
        axes: ["oc", "ohw", "ckk"],
        a: &|b, m, k| Expr::load(w, vec![b[1].clone().mul(ocg).add(m), k]),
        b: &|b, k, j| d.im2col(xp, b[0].clone(), b[1].clone(), k, j),
        b_rows: false,
        c: &|b, m, j| (y, vec![b[0].clone(), b[1].clone().mul(ocg).add(m), j]),
        init: &|b, m, _| match bias {
            Some(bias) => Expr::load(bias, vec![b[1].clone().mul(ocg).add(m)]),
            None => Expr::F32(0.0),
        },
        epilogue: &|_, _, _, v| if fuse_relu { relu(v) } else { v },
    };
    let (body, schedule) = gemm(&mut kb, &spec, prologue, &mut args, ctx);
    Ok(vec![kernel(kb, body, schedule, args)])
}

/// The output gradient of a convolution as its kernels declare it: `dy`,
/// and `y` where a ReLU was fused (its gradient is masked by `y > 0`).
#[derive(Clone, Copy)]
struct ConvGrad {
    y: Option<BufId>,
    dy: BufId,
}

impl ConvGrad {
    /// Declares `y` (fused only) and `dy`, binding operands `y_op`, `dy_op`.
    fn declare(
        kb: &mut KernelBuilder,
        args: &mut Vec<Arg>,
        y_op: Option<usize>,
        dy_op: usize,
        shape: &[usize],
    ) -> ConvGrad {
        let y = y_op.map(|i| {
            args.push(Arg::Operand(i));
            kb.param("y", DType::F32, shape, Access::Read)
        });
        args.push(Arg::Operand(dy_op));
        let dy = kb.param("dy", DType::F32, shape, Access::Read);
        ConvGrad { y, dy }
    }

    /// `dz` at `index`: `dy`, masked by `y > 0` where a ReLU was fused.
    fn at(&self, index: Vec<Idx>) -> Expr {
        let dy = Expr::load(self.dy, index.clone());
        match self.y {
            Some(y) => relu_grad(Expr::load(y, index), dy),
            None => dy,
        }
    }

    /// The buffer holding `dz`: `dy` itself, or (fused) a workspace staged
    /// by the returned loop.
    fn staged(
        &self,
        kb: &mut KernelBuilder,
        args: &mut Vec<Arg>,
        shape: &[usize],
        ctx: &NodeCtx<'_>,
    ) -> (BufId, Vec<Stmt>) {
        if self.y.is_none() {
            return (self.dy, Vec::new());
        }
        let (ws, fill) = stage(kb, args, "dz", shape, &|i| self.at(i.to_vec()), ctx);
        (ws, vec![fill])
    }
}

fn conv_backward(
    ctx: &NodeCtx<'_>,
    a: &Conv2dAttrs,
    input_grad: bool,
    fused: bool,
) -> Result<Vec<LoweredKernel>, LowerError> {
    let d = ConvDims::new(ctx, a)?;
    let name = &ctx.node().name;
    let p = d.oh * d.ow;
    let ocg = d.ocg as i64;
    let (y_op, dy_op) = if fused { (Some(2), 3) } else { (None, 2) };
    let out_shape = [d.n, d.oc, p];
    if ctx.operand_shape(dy_op)?.iter().product::<usize>() != d.n * d.oc * p {
        return Err(ctx.invalid("the output gradient does not match the output shape"));
    }
    let mut kernels = Vec::new();
    let mut result = 0;

    if input_grad {
        // dx[n, g·C/G + ci, (u, v)] = Σ_{(o, r, q)} w[g·O/G + o, ci, r·kw + q] ·
        //   dz[n, g·O/G + o, (u + ph − r·dh)/sh, (v + pw − q·dw)/sw] (divisible only).
        let mut kb = KernelBuilder::new(format!("{name}_dx"));
        let mut args = vec![Arg::Operand(1)];
        let w = kb.param("w", DType::F32, &[d.oc, d.cg, d.taps()], Access::Read);
        let grad = ConvGrad::declare(&mut kb, &mut args, y_op, dy_op, &out_shape);
        let dx = kb.param("dx", DType::F32, &[d.n, d.c, d.h * d.w], Access::ReadWrite);
        args.push(Arg::Result(result));
        result += 1;
        // dz with the border the transposed convolution reads as data.
        let [pt, pb, pl, pr] = d.transposed_pads();
        let (dz, fill) = stage_padded(
            &mut kb,
            &mut args,
            "dz_padded",
            [d.n, d.oc, d.oh, d.ow],
            [pt, pb, pl, pr],
            &|i| {
                grad.at(vec![
                    i[0].clone(),
                    i[1].clone(),
                    i[2].clone().mul(d.ow as i64).add(i[3].clone()),
                ])
            },
            ctx,
        );
        let mut prologue = vec![fill];
        let taps = d.taps() as i64;
        let cg = d.cg as i64;
        // Wᵀ as A: wt[g, ci, (o, r, q)] = w[g·O/G + o, ci, (r, q)], contiguous in k.
        let (wt, fill) = stage(
            &mut kb,
            &mut args,
            "wt",
            &[d.g, d.cg, d.ocg * d.taps()],
            &|i| {
                let (g, ci, k) = (i[0].clone(), i[1].clone(), i[2].clone());
                let o = g.mul(ocg).add(k.clone().div(taps));
                Expr::load(w, vec![o, ci, k.rem(taps)])
            },
            ctx,
        );
        prologue.push(fill);
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
            let index = vec![
                b[0].clone(),
                b[1].clone().mul(ocg).add(o),
                micro::div(ti.clone(), d.sh as usize).add(c(pt)),
                micro::div(tj.clone(), d.sw as usize).add(c(pl)),
            ];
            let v = Expr::load(dz, index);
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
            reduce: vec![],
            m: d.cg,
            n: d.h * d.w,
            k: d.ocg * d.taps(),
            axes: ["c", "hw", "okk"],
            a: &|b, m, k| Expr::load(wt, vec![b[1].clone(), m, k]),
            b: &b_load,
            b_rows: false,
            c: &|b, m, j| (dx, vec![b[0].clone(), b[1].clone().mul(cg).add(m), j]),
            init: &|_, _, _| Expr::F32(0.0),
            epilogue: &|_, _, _, v| v,
        };
        let (body, schedule) = gemm(&mut kb, &spec, prologue, &mut args, ctx);
        kernels.push(kernel(kb, body, schedule, args));
    }

    // dw[g·O/G + o, (ci, r, q)] = Σ_n Σ_p dz[n, g·O/G + o, p] · col[n][(ci, r, q), p]:
    // the images are the reduction batch, p the depth.
    {
        let mut kb = KernelBuilder::new(format!("{name}_dw"));
        let mut args = vec![Arg::Operand(0)];
        let x = kb.param("x", DType::F32, &[d.n, d.c, d.h, d.w], Access::Read);
        let grad = ConvGrad::declare(&mut kb, &mut args, y_op, dy_op, &out_shape);
        let dwb = kb.param("dw", DType::F32, &[d.oc, d.kdepth()], Access::ReadWrite);
        args.push(Arg::Result(result));
        result += 1;
        let (dz, mut prologue) = grad.staged(&mut kb, &mut args, &out_shape, ctx);
        let (xp, fill) = d.padded_input(&mut kb, &mut args, x, ctx);
        prologue.extend(fill);
        let spec = GemmSpec {
            batch: vec![("g", d.g)],
            reduce: vec![("n", d.n)],
            m: d.ocg,
            n: d.kdepth(),
            k: p,
            axes: ["oc", "ckk", "ohw"],
            a: &|b, m, k| Expr::load(dz, vec![b[1].clone(), b[0].clone().mul(ocg).add(m), k]),
            b: &|b, k, j| d.im2col(xp, b[1].clone(), b[0].clone(), j, k),
            b_rows: false,
            c: &|b, m, j| (dwb, vec![b[0].clone().mul(ocg).add(m), j]),
            init: &|_, _, _| Expr::F32(0.0),
            epilogue: &|_, _, _, v| v,
        };
        let (body, schedule) = gemm(&mut kb, &spec, prologue, &mut args, ctx);
        kernels.push(kernel(kb, body, schedule, args));
    }

    if a.bias {
        let mut kb = KernelBuilder::new(format!("{name}_db"));
        let mut args = Vec::new();
        let grad = ConvGrad::declare(&mut kb, &mut args, y_op, dy_op, &out_shape);
        let db = kb.param("db", DType::F32, &[d.oc], Access::Write);
        args.push(Arg::Result(result));
        let (body, schedule) = bias_grad(
            &mut kb,
            db,
            &|n, o, pi| grad.at(vec![n, o, pi]),
            [d.n, d.oc, p],
            ctx,
        );
        kernels.push(kernel(kb, body, schedule, args));
    }
    Ok(kernels)
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
    if ctx.options.is_gpu() {
        return gpu::bias_grad(kb, db, dz, [n, oc, p]);
    }
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
/// `yᵀ = W · xᵀ` (M = out, N = batch) so the weight needs no packing; a
/// matrix–vector product up to [`GEMV_MAX_BATCH`].
fn linear_forward(
    ctx: &NodeCtx<'_>,
    bias: bool,
    fuse_relu: bool,
    dropout: bool,
) -> Result<Vec<LoweredKernel>, LowerError> {
    let (n, fin, fout) = linear_dims(ctx)?;
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
    let place = |_: &[Idx], m: Idx, j: Idx| (y, vec![j, m]);
    let init = |_: &[Idx], m: Idx, _: Idx| match bias {
        Some(b) => Expr::load(b, vec![m]),
        None => Expr::F32(0.0),
    };
    let epilogue = |_: &[Idx], m: Idx, j: Idx, v: Expr| {
        let v = if fuse_relu { relu(v) } else { v };
        match mask {
            Some(mask) => Expr::binary(BinOp::Mul, v, Expr::load(mask, vec![j, m])),
            None => v,
        }
    };
    // A GPU runs every batch as a tiled GEMM (a block per tile of W).
    let (body, schedule) = if n <= GEMV_MAX_BATCH && !ctx.options.is_gpu() {
        let spec = GemvSpec {
            rows: fout,
            cols: n,
            k: fin,
            w,
            x,
            c: &place,
            init: &init,
            epilogue: &epilogue,
        };
        gemv::build(
            &mut kb,
            &spec,
            ctx.options.vector_width,
            ctx.options.parallel,
        )
    } else {
        let spec = GemmSpec {
            batch: vec![],
            reduce: vec![],
            m: fout,
            n,
            k: fin,
            axes: ["out", "n", "in"],
            a: &|_, m, k| Expr::load(w, vec![m, k]),
            b: &|_, k, j| Expr::load(x, vec![j, k]),
            b_rows: false,
            c: &place,
            init: &init,
            epilogue: &epilogue,
        };
        gemm(&mut kb, &spec, Vec::new(), &mut args, ctx)
    };
    Ok(vec![kernel(kb, body, schedule, args)])
}

/// Gradients of a linear layer with `dz = [y > 0] · (dy · mask)` (staged
/// into a workspace when masked): `dx = dz · W` (M = batch, N = in, K =
/// out), `dw = dzᵀ · x` (M = out, N = in, K = batch), `db = Σ_n dz`.
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
            v = Expr::binary(BinOp::Mul, v, Expr::load(mask, at.clone()));
        }
        if let Some(y) = y {
            v = relu_grad(Expr::load(y, at), v);
        }
        v
    };
    // The buffer `dz` is read from: `dy`, or a workspace staged by the loop.
    let staged = |kb: &mut KernelBuilder,
                  args: &mut Vec<Arg>,
                  g: (Option<BufId>, Option<BufId>, Option<BufId>)|
     -> (BufId, Vec<Stmt>) {
        match g {
            (None, None, Some(dy)) => (dy, Vec::new()),
            _ => {
                let value = |i: &[Idx]| dz(g, i[0].clone(), i[1].clone());
                let (ws, fill) = stage(kb, args, "dz", &[n, fout], &value, ctx);
                (ws, vec![fill])
            }
        }
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
        let (dzb, prologue) = staged(&mut kb, &mut args, g);
        let spec = GemmSpec {
            batch: vec![],
            reduce: vec![],
            m: n,
            n: fin,
            k: fout,
            axes: ["n", "in", "out"],
            a: &|_, m, k| Expr::load(dzb, vec![m, k]),
            b: &|_, k, j| Expr::load(w, vec![k, j]),
            b_rows: true,
            c: &|_, m, j| (dx, vec![m, j]),
            init: &|_, _, _| Expr::F32(0.0),
            epilogue: &|_, _, _, v| v,
        };
        let (body, schedule) = gemm(&mut kb, &spec, prologue, &mut args, ctx);
        kernels.push(kernel(kb, body, schedule, args));
    }
    {
        let mut kb = KernelBuilder::new(format!("{name}_dw"));
        let mut args = vec![Arg::Operand(0)];
        let x = kb.param("x", DType::F32, &[n, fin], Access::Read);
        let g = grads(&mut kb, &mut args);
        let dw = kb.param("dw", DType::F32, &[fout, fin], Access::ReadWrite);
        args.push(Arg::Result(result));
        result += 1;
        let (dzb, prologue) = staged(&mut kb, &mut args, g);
        let spec = GemmSpec {
            batch: vec![],
            reduce: vec![],
            m: fout,
            n: fin,
            k: n,
            axes: ["out", "in", "n"],
            a: &|_, m, k| Expr::load(dzb, vec![k, m]),
            b: &|_, k, j| Expr::load(x, vec![k, j]),
            b_rows: true,
            c: &|_, m, j| (dw, vec![m, j]),
            init: &|_, _, _| Expr::F32(0.0),
            epilogue: &|_, _, _, v| v,
        };
        let (body, schedule) = gemm(&mut kb, &spec, prologue, &mut args, ctx);
        kernels.push(kernel(kb, body, schedule, args));
    }
    if bias {
        let mut kb = KernelBuilder::new(format!("{name}_db"));
        let mut args = Vec::new();
        let g = grads(&mut kb, &mut args);
        let db = kb.param("db", DType::F32, &[fout], Access::Write);
        args.push(Arg::Result(result));
        let (body, schedule) =
            bias_grad(&mut kb, db, &|row, o, _| dz(g, row, o), [n, fout, 1], ctx);
        kernels.push(kernel(kb, body, schedule, args));
    }
    Ok(kernels)
}
