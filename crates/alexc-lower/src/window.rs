//! Lowering of the window ops: LRN, max- and average-pooling, the fused
//! LRN + max-pool, and their gradients.
//!
//! **Loop structure.** Every kernel's parallel loop runs over independent
//! units of work: the `N·C` (sample, channel) planes for the poolings and
//! the LRN forward (`N·C` is large for every layer even at batch 1), the
//! samples for the fused gradient and (sample, spatial tile) pairs for the
//! LRN gradient, whose channels are walked in order (below). Inside, the
//! innermost loop walks contiguous elements — a row's columns, or a whole
//! LRN plane — and is `Vectorized`, written so that the LLVM backend
//! *widens* it (see `alexc_kernel::vector::widenable`): window loops
//! inside it are `Unrolled` (serial beyond [`MAX_UNROLL`] iterations) with
//! constant extents, its `if`s test only lane-independent indices, and its
//! accesses are unit-stride wherever the layout allows, because any other
//! access costs a gather or scatter (one element per lane). Loops whose
//! iterations only store (no read-modify-write) use [`cover`]: the last
//! vector block is shifted back to end at the row's end, overlapping the
//! block before it, instead of leaving a scalar remainder (a 55-wide row is
//! four 16-lane blocks, not three and seven scalar iterations).
//!
//! **LRN.** `y = x·u` with `u = D^{−β}`, `D = k + α'·Σ_{j ∈ window(c)} x_j²`
//! over the channel window `[c − size/2, c + (size−1)/2]`, summed in
//! increasing `j` from zero as the reference does. The window is clipped
//! to `0..C` by an `if` on the (lane-independent) channel index, so every
//! load is a plain unit-stride vector load. A sliding channel sum would make
//! `D` O(1) instead of O(size) per element, but it sums in another order
//! than the reference (and its subtraction cancels); at `size = 5` the sum
//! is not the cost: the power is.
//!
//! **The power.** `powf` is a scalar libm call per element (LLVM scalarizes
//! a vector `llvm.pow`), and it was most of LRN's time. For AlexNet's
//! `β = 0.75` the kernels compute `D^0.75 = r·√r` with `r = √D` — two
//! vector square roots (correctly rounded) and a product, within 2 ulp of
//! the true power — and `u = 1/D^0.75`; `β = 0.5` uses `√D`, `β = 1` `D`
//! itself, other `β` keep `pow`. Each LRN value `x·u` is then within about
//! 3 ulp (relative error < 4·10⁻⁷) of the reference's `x / powf(D, β)`,
//! inside the suite's 10⁻⁶ tolerance for computed values; the square-root
//! forms agree with `pow` for every `D ≥ 0`, `+∞` and NaN. Three divider
//! operations (two roots, one reciprocal) per element remain LRN's floor;
//! forward and backward compute `u` identically, so the backward's argmax
//! sees exactly the forward's LRN values.
//!
//! **Max-pooling through a staged plane.** A 3×3/2 window's taps are
//! stride-2 column reads — a gather per tap — and in the fused LRN +
//! max-pool each input's LRN value is needed by up to `⌈kh/sy⌉·⌈kw/sx⌉`
//! windows (2.25× on average for 3×3/2), so computing it per tap repeats
//! the LRN work, powers included. Instead each plane's pooled values (the
//! input, or its LRN) are computed once, along rows, and *staged* into a
//! thread-private buffer ([`Staged`]) that is padded (padding cells hold
//! −∞, so no tap needs a bounds test) and whose columns are split by their
//! phase modulo the column stride: padded column `X` lives at
//! `[X mod sx, X div sx]`. Tap `(ki, kj)` of outputs `j, j+1, …` is then
//! the unit-stride run `[i·sy + ki, kj mod sx, j + kj div sx …]`: one
//! vector load per tap. Staging costs one scattered store per input, in
//! the same loop as the LRN arithmetic (whose divider work it overlaps;
//! separate loops measured ~7% slower despite having no row-end overlap);
//! the windows then read vector loads from a buffer that stays in L1/L2 (a
//! 55×55 plane is 12 KiB). The fused op thus computes every LRN value
//! once, never writes the LRN output to memory, and is cheaper than LRN
//! and pooling as two kernels. The max is `v > m || v ≠ v` (NaN propagates,
//! PyTorch's rule), never IEEE `max`; max-pool results are bit-identical
//! to the reference's.
//!
//! **Max-pool gradients.** Per plane, after staging: (B) for each output,
//! vectorized along its row, the window's argmax (first maximum in
//! row-major window order; padding never wins; NaN wins, as PyTorch) is
//! stored as a tap number in a `best` grid beside a copy of `dy` in
//! `grad`, both bordered by `⌈k/s⌉ − 1` rows and columns of "no window"
//! (`best = −1`, `grad = 0`); (C) each input gathers the `grad` of its
//! candidate windows (at most `⌈kh/sy⌉·⌈kw/sx⌉`) whose `best` is its tap
//! number, in increasing row-major output order — the reference's
//! accumulation order, so the result is exact. C walks each input row by
//! column phase `r = x mod sx`, so that candidate window `j` is
//! `x div sx + const` and its loads are unit-stride; it stores the row in
//! phase layout and a last pass reads it back in natural order (one
//! gathered load per element) so that what reaches memory is contiguous
//! (scattered stores cost about twice a gather here). A gather never has
//! two iterations write one element, so no atomics and no zeroing of `dx`
//! are needed, and each window's argmax is computed once.
//!
//! **LRN gradients.** With `T_c = g_c·x_c·D_c^{−β−1}` (computed as
//! `g·y/D`, a few ulp from the reference's `pow(D, −β−1)`),
//! `dx_m = g_m·u_m − 2α'β·x_m·Σ_{c ∋ m} T_c` over the channels `c` whose
//! window contains `m`, in increasing `c` as the reference. One thread
//! walks the channels of its unit of work in order ([`Lrn::channel_walk`]):
//! it computes `g·u` and `T` of channel `c` into rings of the last `size`
//! channels in thread-private memory and finishes `dx` of channel
//! `c − size/2`, whose window's `T` all exist by then. Each element's `D`
//! and `u` are computed once and `T` never goes through memory (a first
//! version stored `T` in an `N·C·H·W` workspace and summed it in a second
//! parallel loop: 40% of the time). The plain LRN gradient's unit is a
//! (sample, tile of [`LRN_TILE`] positions) pair, so its rings stay in L1;
//! the fused LRN + max-pool gradient's unit is a sample, whose `g` is the
//! max-pool gradient of each plane's LRN output, computed per plane as
//! above from the staged LRN values.
//!
//! **Scratch.** Per-iteration buffers are kernel-IR locals (they live on
//! the executing thread's stack) unless a kernel's would exceed
//! [`LOCAL_BUDGET`]; then each is an [`Arg::Workspace`] with one slice per
//! iteration of the parallel loop ([`Scratch`]). AlexNet's largest, the
//! fused gradient of `norm1` + `pool1` (55×55 planes), needs 0.16 MiB.
//!
//! **On a GPU** ([`crate::LowerOptions::gpu`]) a plane per thread is a few
//! thousand threads bound by local memory, so LRN, max-pooling, the fused
//! op and their gradients have their own form (`window/gpu.rs`): one
//! thread per element, values recomputed instead of staged, the gradients
//! as gathers over workspaces written by earlier launches. The average
//! poolings keep the nests below at one lane (already one element per
//! innermost iteration).

use alexc_ir::{AvgPool2dAttrs, LrnAttrs, Op, Pool2dAttrs};
use alexc_kernel::{
    Access, BinOp, BufId, Cmp, Cond, DType, Expr, Idx, KernelBuilder, LoopKind, Schedule, Stmt,
    UnOp, VarId,
};

use crate::elementwise::{
    c, kernel_name, minus, numel, operand_f32, outer_kind, plus, result_f32, vector_width,
};
use crate::{Arg, LowerError, LoweredKernel, NodeCtx};

mod gpu;

/// The most iterations (all nested window loops together) that are
/// unrolled inside a vectorized loop.
const MAX_UNROLL: usize = 256;

/// Bytes of thread-private scratch one kernel may keep in locals, which
/// live on the executing thread's stack (the runtime's workers have
/// 32 MiB, but a parallel loop's first chunk runs on the calling thread).
const LOCAL_BUDGET: usize = 1 << 20;

/// Positions per tile of the plain LRN gradient: its two rings of `size`
/// tiles then fit in L1 (20 KiB for `size = 5`).
const LRN_TILE: usize = 512;

/// Lowers one node of this module's ops.
pub fn lower(ctx: &NodeCtx<'_>) -> Result<Vec<LoweredKernel>, LowerError> {
    if ctx.options.is_gpu() {
        if let Some(kernel) = gpu::lower(ctx)? {
            return Ok(vec![kernel]);
        }
        // The average poolings are already one element per innermost
        // iteration: their CPU nest at one lane.
        let scalar = NodeCtx {
            options: &crate::GPU_SCALAR,
            ..*ctx
        };
        return lower(&scalar);
    }
    let kernel = match &ctx.node().op {
        Op::Lrn(a) => lrn(ctx, a)?,
        Op::LrnBackward(a) => lrn_backward(ctx, a)?,
        Op::MaxPool2d(a) => max_pool(ctx, &Pool::max(a), None)?,
        Op::LrnMaxPool(a) => max_pool(ctx, &Pool::max(&a.pool), Some(Lrn::new(ctx, &a.lrn)?))?,
        Op::AvgPool2d(a) => avg_pool(ctx, &Pool::avg(a))?,
        Op::MaxPool2dBackward(a) => max_pool_backward(ctx, &Pool::max(a), None)?,
        Op::LrnMaxPoolBackward(a) => {
            max_pool_backward(ctx, &Pool::max(&a.pool), Some(Lrn::new(ctx, &a.lrn)?))?
        }
        Op::AvgPool2dBackward(a) => avg_pool_backward(ctx, &Pool::avg(a))?,
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
fn sqrt(a: Expr) -> Expr {
    Expr::unary(UnOp::Sqrt, a)
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
fn store(buf: BufId, index: Vec<Idx>, value: Expr) -> Stmt {
    Stmt::Store { buf, index, value }
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
fn feq(a: Expr, b: Expr) -> Cond {
    Cond::Expr { op: Cmp::Eq, a, b }
}
/// `0 ≤ i < len`.
fn in_range(i: Idx, len: usize) -> Cond {
    and(icmp(Cmp::Ge, i.clone(), c(0)), icmp(Cmp::Lt, i, c(len)))
}
/// `if cond { then }`.
fn when(cond: Cond, then: Vec<Stmt>) -> Stmt {
    Stmt::If {
        cond,
        then,
        otherwise: Vec::new(),
    }
}
/// `i · k`, without a `· 1`.
fn times(i: Idx, k: usize) -> Idx {
    if k == 1 {
        i
    } else {
        i.mul(k as i64)
    }
}
/// `⌊i / k⌋`, without a `/ 1`.
fn div(i: Idx, k: usize) -> Idx {
    if k == 1 {
        i
    } else {
        i.div(k as i64)
    }
}
/// `i mod k`, without a `% 1`.
fn rem(i: Idx, k: usize) -> Idx {
    if k == 1 {
        c(0)
    } else {
        i.rem(k as i64)
    }
}
/// An index as an f32 value (tap numbers are small, so exact).
fn index_f32(i: Idx) -> Expr {
    Expr::Cast {
        to: DType::F32,
        value: Box::new(Expr::Index(i)),
    }
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

/// `for e in 0..len` for a loop whose iterations only *store* values
/// computed from memory the loop does not write: `width`-lane vector
/// blocks, the last one shifted back to end at `len` when `width` does not
/// divide it. The overlapped elements are computed and stored twice, with
/// the same values, which is cheaper than a scalar remainder loop. A loop
/// shorter than `width` (or `width == 1`) stays scalar. `body` gets the
/// element index.
fn cover(
    b: &mut KernelBuilder,
    name: &str,
    len: usize,
    width: u32,
    body: &mut dyn FnMut(&mut KernelBuilder, Idx) -> Vec<Stmt>,
) -> Vec<Stmt> {
    let w = width.max(1) as usize;
    if len == 0 {
        return Vec::new();
    }
    if w == 1 || len < w {
        let e = b.var(name, DType::I64);
        let inner = body(b, v(e));
        return nonempty_loop(e, len, LoopKind::Serial, inner);
    }
    let eo = b.var(format!("{name}o"), DType::I64);
    let ei = b.var(format!("{name}i"), DType::I64);
    let start = if len % w == 0 {
        v(eo).mul(w as i64)
    } else {
        v(eo).mul(w as i64).min(c(len - w))
    };
    let inner = body(b, start.add(v(ei)));
    vec![Stmt::For {
        var: eo,
        extent: c(len.div_ceil(w)),
        kind: LoopKind::Serial,
        body: vec![Stmt::For {
            var: ei,
            extent: c(w),
            kind: LoopKind::Vectorized { width },
            body: inner,
        }],
    }]
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

/// The schedule of a kernel whose parallel loop runs over `axis`.
fn schedule(ctx: &NodeCtx<'_>, width: u32, axis: &str, order: &[&str]) -> Schedule {
    Schedule {
        tiles: Vec::new(),
        vector_width: width,
        loop_order: order.iter().map(|s| s.to_string()).collect(),
        parallel_axis: ctx.options.parallel.then(|| axis.to_string()),
    }
}

// ------------------------------------------------------------------------
// Scratch buffers.

/// A thread-private f32 buffer of one iteration of a kernel's parallel
/// loop: a kernel-IR local, or that iteration's slice of a workspace (its
/// first dimension is the parallel loop's; iterations never share a slice).
#[derive(Clone, Debug)]
struct Scratch {
    buf: BufId,
    /// The parallel iteration's index into a workspace's first dimension.
    slice: Option<Idx>,
}

impl Scratch {
    fn at(&self, mut index: Vec<Idx>) -> Vec<Idx> {
        if let Some(s) = &self.slice {
            index.insert(0, s.clone());
        }
        index
    }
    fn load(&self, index: Vec<Idx>) -> Expr {
        ld(self.buf, self.at(index))
    }
    fn store(&self, index: Vec<Idx>, value: Expr) -> Stmt {
        store(self.buf, self.at(index), value)
    }
}

/// Declares a kernel's scratch buffers (after its other parameters): locals
/// when together they fit [`LOCAL_BUDGET`], else workspace parameters of
/// `slices` slices indexed by `slice`, the parallel loop's variable.
/// Returns the buffers and the workspace arguments to append.
fn scratch(
    b: &mut KernelBuilder,
    slices: usize,
    slice: &Idx,
    buffers: &[(&str, &[usize])],
) -> (Vec<Scratch>, Vec<Arg>) {
    let elements: usize = buffers
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    if elements.saturating_mul(4) <= LOCAL_BUDGET {
        let locals = buffers
            .iter()
            .map(|&(name, shape)| Scratch {
                buf: b.local(name, DType::F32, shape),
                slice: None,
            })
            .collect();
        return (locals, Vec::new());
    }
    let mut args = Vec::new();
    let slices_of = buffers
        .iter()
        .map(|&(name, shape)| {
            let mut full = vec![slices];
            full.extend_from_slice(shape);
            args.push(Arg::Workspace {
                elements: full.iter().product(),
            });
            Scratch {
                buf: b.param(name, DType::F32, &full, Access::ReadWrite),
                slice: Some(slice.clone()),
            }
        })
        .collect();
    (slices_of, args)
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

/// The two rings of an LRN gradient's channel walk: slot `c mod size`
/// holds channel `c`'s own terms `g·u` and what it sends, `T`.
#[derive(Clone, Debug)]
struct Rings {
    own: Scratch,
    sent: Scratch,
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

    /// Statements declaring `d = k + α'·Σ_{j ∈ window(ch)} x[at(j)]²` and
    /// `u = d^{−β}` (the LRN value is `x·u`). The window is clipped to
    /// `0..channels` by `if`s on the channel index (lane-independent, so
    /// the loads stay plain vector loads); the sum runs in increasing `j`
    /// from zero, as the reference.
    fn norm(
        &self,
        b: &mut KernelBuilder,
        x: BufId,
        channels: usize,
        ch: &Idx,
        at: &dyn Fn(Idx) -> Vec<Idx>,
    ) -> (Vec<Stmt>, VarId, VarId) {
        self.norm_of(b, channels, ch, &|j| ld(x, at(j)))
    }

    /// [`Lrn::norm`] with `load(j)` the input of channel `j`.
    fn norm_of(
        &self,
        b: &mut KernelBuilder,
        channels: usize,
        ch: &Idx,
        load: &dyn Fn(Idx) -> Expr,
    ) -> (Vec<Stmt>, VarId, VarId) {
        let sum = b.var("sum", DType::F32);
        let t = b.var("t", DType::I64);
        let a = b.var("a", DType::F32);
        let d = b.var("d", DType::F32);
        let u = b.var("u", DType::F32);
        let j = minus(ch.clone(), self.size / 2).add(v(t));
        let square = bin(BinOp::Add, var(sum), bin(BinOp::Mul, var(a), var(a)));
        let mut stmts = vec![
            let_(sum, Expr::F32(0.0)),
            small_loop(
                t,
                self.size,
                self.size <= MAX_UNROLL,
                vec![when(
                    in_range(j.clone(), channels),
                    vec![let_(a, load(j)), set(sum, square)],
                )],
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
        let (pre, scale) = self.inverse_power(b, d);
        stmts.extend(pre);
        stmts.push(let_(u, scale));
        (stmts, d, u)
    }

    /// `d^{−β} = 1 / d^β`, with the statements it needs first; `d^β` is
    /// `r·√r` with `r = √d` for β = 0.75, `√d` for β = 0.5, `d` for β = 1,
    /// else `pow` (see the module header).
    fn inverse_power(&self, b: &mut KernelBuilder, d: VarId) -> (Vec<Stmt>, Expr) {
        let (pre, power) = if self.beta == 0.75 {
            let r = b.var("r", DType::F32);
            (
                vec![let_(r, sqrt(var(d)))],
                bin(BinOp::Mul, var(r), sqrt(var(r))),
            )
        } else if self.beta == 0.5 {
            (Vec::new(), sqrt(var(d)))
        } else if self.beta == 1.0 {
            (Vec::new(), var(d))
        } else {
            (Vec::new(), bin(BinOp::Pow, var(d), Expr::F32(self.beta)))
        };
        (pre, bin(BinOp::Div, Expr::F32(1.0), power))
    }

    /// Stores into ring slot `c mod size` (at `pos`) the two gradient terms
    /// of one element of channel `c` from its upstream gradient `g`, LRN
    /// value `y = x·u`, `d` and `u = d^{−β}`: the own term `g·u` and what it
    /// sends to its window's channels, `T = g·y/d` (`= g·x·d^{−β−1}`).
    #[allow(clippy::too_many_arguments)]
    fn store_terms(
        &self,
        rings: &Rings,
        ch: &Idx,
        pos: Idx,
        g: Expr,
        y: Expr,
        d: Expr,
        u: Expr,
    ) -> Vec<Stmt> {
        let slot = vec![ch.clone().rem(self.size as i64), pos];
        vec![
            rings.own.store(slot.clone(), bin(BinOp::Mul, g.clone(), u)),
            rings
                .sent
                .store(slot, bin(BinOp::Div, bin(BinOp::Mul, g, y), d)),
        ]
    }

    /// `dx_m = own_m − 2α'β · x_m · Σ_{c ∋ m} T_c` at position `pos` of
    /// channel `m`, `xm` being `x_m`: the sum over the channels whose window
    /// contains `m`, `[m − (size−1)/2, m + size/2]` clipped to `0..C`, in
    /// increasing order (the reference's), read from the rings.
    fn finish(
        &self,
        b: &mut KernelBuilder,
        rings: &Rings,
        channels: usize,
        m: &Idx,
        pos: &Idx,
        xm: Expr,
    ) -> (Vec<Stmt>, Expr) {
        let cross = b.var("cross", DType::F32);
        let t = b.var("t", DType::I64);
        let size = self.size;
        let ch = minus(m.clone(), size.saturating_sub(1) / 2).add(v(t));
        let slot = |cc: Idx| vec![cc.rem(size as i64), pos.clone()];
        let stmts = vec![
            let_(cross, Expr::F32(0.0)),
            small_loop(
                t,
                size,
                size <= MAX_UNROLL,
                vec![when(
                    in_range(ch.clone(), channels),
                    vec![set(
                        cross,
                        bin(BinOp::Add, var(cross), rings.sent.load(slot(ch))),
                    )],
                )],
            ),
        ];
        let value = bin(
            BinOp::Sub,
            rings.own.load(slot(m.clone())),
            bin(
                BinOp::Mul,
                bin(BinOp::Mul, Expr::F32(self.two_alpha_beta), xm),
                var(cross),
            ),
        );
        (stmts, value)
    }

    /// The channel walk of both LRN gradients, for one unit of work:
    /// `for step in 0..C + size/2`, `terms(b, c)` with `c = step` (while
    /// `c < C`) stores channel `c`'s terms into ring slot `c mod size`;
    /// then, once `step ≥ size/2`, `done(b, m)` finishes `dx` of channel
    /// `m = step − size/2`: the `T` of its window (channels up to
    /// `m + size/2 = c`) all exist, and the oldest it reads,
    /// `m − (size−1)/2 = step − (size−1)`, is still in the ring.
    fn channel_walk(
        &self,
        b: &mut KernelBuilder,
        channels: usize,
        terms: &mut dyn FnMut(&mut KernelBuilder, Idx) -> Vec<Stmt>,
        done: &mut dyn FnMut(&mut KernelBuilder, Idx) -> Vec<Stmt>,
    ) -> Vec<Stmt> {
        let lag = self.size / 2;
        let step = b.var("step", DType::I64);
        let first = terms(b, v(step));
        let then = done(b, minus(v(step), lag));
        let mut body = Vec::new();
        if !first.is_empty() {
            body.push(when(icmp(Cmp::Lt, v(step), c(channels)), first));
        }
        if !then.is_empty() {
            body.push(when(icmp(Cmp::Ge, v(step), c(lag)), then));
        }
        nonempty_loop(step, channels + lag, LoopKind::Serial, body)
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

fn lrn(ctx: &NodeCtx<'_>, attrs: &LrnAttrs) -> Result<LoweredKernel, LowerError> {
    let l = Lrn::new(ctx, attrs)?;
    let dims = lrn_dims(ctx, &operand_f32(ctx, 0)?)?;
    if result_f32(ctx, 0)? != operand_f32(ctx, 0)? {
        return Err(ctx.invalid("the result's shape differs from the input's"));
    }
    let [n, channels, inner] = dims;
    let width = vector_width(ctx, true);
    let mut b = KernelBuilder::new(kernel_name(ctx, "lrn"));
    let x = b.param("x", DType::F32, &dims, Access::Read);
    let y = b.param("y", DType::F32, &dims, Access::Write);
    let (p, bn, ch) = plane(&mut b, channels);
    let inner_loop = cover(&mut b, "s", inner, width, &mut |b, s| {
        let at = |j: Idx| vec![bn.clone(), j, s.clone()];
        let (mut stmts, _, u) = l.norm(b, x, channels, &ch, &at);
        stmts.push(store(
            y,
            at(ch.clone()),
            bin(BinOp::Mul, ld(x, at(ch.clone())), var(u)),
        ));
        stmts
    });
    let body = nonempty_loop(p, n * channels, outer_kind(ctx), inner_loop);
    Ok(LoweredKernel {
        kernel: b.finish(body, schedule(ctx, width, "p", &["p", "s", "window"])),
        args: vec![Arg::Operand(0), Arg::Result(0)],
    })
}

/// LRN gradient (see the module header): per (sample, spatial tile), the
/// channels in order, the terms of each in two rings of tiles.
fn lrn_backward(ctx: &NodeCtx<'_>, attrs: &LrnAttrs) -> Result<LoweredKernel, LowerError> {
    let l = Lrn::new(ctx, attrs)?;
    let shape = operand_f32(ctx, 0)?;
    let dims = lrn_dims(ctx, &shape)?;
    if operand_f32(ctx, 1)? != shape || result_f32(ctx, 0)? != shape {
        return Err(ctx.invalid("x, dy and dx must have one shape"));
    }
    let [n, channels, inner] = dims;
    let width = vector_width(ctx, true);
    let tile = inner.clamp(1, LRN_TILE);
    let tiles = inner.div_ceil(tile);
    let mut b = KernelBuilder::new(kernel_name(ctx, "lrn_backward"));
    let x = b.param("x", DType::F32, &dims, Access::Read);
    let dy = b.param("dy", DType::F32, &dims, Access::Read);
    let dx = b.param("dx", DType::F32, &dims, Access::Write);
    let q = b.var("q", DType::I64);
    let ring = [l.size, tile];
    let (bufs, workspaces) = scratch(&mut b, n * tiles, &v(q), &[("own", &ring), ("sent", &ring)]);
    let rings = match bufs.as_slice() {
        [own, sent] => Rings {
            own: own.clone(),
            sent: sent.clone(),
        },
        _ => return Err(ctx.invalid("internal: expected two rings")),
    };
    // Tile q covers positions s0 + e, e < min(tile, inner − s0).
    let (bn, s0) = (div(v(q), tiles), times(rem(v(q), tiles), tile));
    let positions =
        |b: &mut KernelBuilder, body: &mut dyn FnMut(&mut KernelBuilder, Idx) -> Vec<Stmt>| {
            if tiles == 1 {
                return cover(b, "e", inner, width, body);
            }
            let e = b.var("e", DType::I64);
            let inner_body = body(b, v(e));
            let kind = if width > 1 {
                LoopKind::Vectorized { width }
            } else {
                LoopKind::Serial
            };
            vec![Stmt::For {
                var: e,
                extent: c(tile).min(c(inner).sub(s0.clone())),
                kind,
                body: inner_body,
            }]
        };
    let walk = l.channel_walk(
        &mut b,
        channels,
        &mut |b, ch| {
            positions(b, &mut |b, e| {
                let at = |j: Idx| vec![bn.clone(), j, s0.clone().add(e.clone())];
                let (mut stmts, d, u) = l.norm(b, x, channels, &ch, &at);
                let y = bin(BinOp::Mul, ld(x, at(ch.clone())), var(u));
                let g = ld(dy, at(ch.clone()));
                stmts.extend(l.store_terms(&rings, &ch, e, g, y, var(d), var(u)));
                stmts
            })
        },
        &mut |b, m| {
            positions(b, &mut |b, e| {
                let at = vec![bn.clone(), m.clone(), s0.clone().add(e.clone())];
                let (mut stmts, value) = l.finish(b, &rings, channels, &m, &e, ld(x, at.clone()));
                stmts.push(store(dx, at, value));
                stmts
            })
        },
    );
    let body = nonempty_loop(q, n * tiles, outer_kind(ctx), walk);
    let mut sched = schedule(ctx, width, "n·s", &["n·s", "c", "s", "window"]);
    sched.tiles = vec![("s".into(), tile)];
    let mut args = vec![Arg::Operand(0), Arg::Operand(1), Arg::Result(0)];
    args.extend(workspaces);
    Ok(LoweredKernel {
        kernel: b.finish(body, sched),
        args,
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

/// The staging layout of one plane for max-pooling (see the module
/// header): `[rows, sx, cols]`, where padded row `Y = y + py` and padded
/// column `X = x + px` live at `[Y, X mod sx, X div sx]`, so that a window
/// tap across consecutive outputs is a unit-stride run.
#[derive(Clone, Copy, Debug)]
struct Staged {
    h: usize,
    w: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    /// `h + 2·py`.
    rows: usize,
    /// `⌈(w + 2·px) / sx⌉`.
    cols: usize,
}

/// The statements and value of plane element `s` (`y·w + x`) to stage.
type Source<'a> = dyn FnMut(&mut KernelBuilder, Idx) -> (Vec<Stmt>, Expr) + 'a;

impl Staged {
    fn new(pool: &Pool, [h, w]: [usize; 2]) -> Staged {
        let [py, px] = pool.padding;
        Staged {
            h,
            w,
            kernel: pool.kernel,
            stride: pool.stride,
            padding: pool.padding,
            rows: h + 2 * py,
            cols: (w + 2 * px).div_ceil(pool.stride[1]),
        }
    }

    fn shape(&self) -> [usize; 3] {
        [self.rows, self.stride[1], self.cols]
    }

    /// The cell of padded row `yp` and padded column `xp`.
    fn cell(&self, yp: Idx, xp: Idx) -> Vec<Idx> {
        let sx = self.stride[1];
        vec![yp, rem(xp.clone(), sx), div(xp, sx)]
    }

    /// The cell of tap `(ki, kj)` of output `(i, j)`: unit-stride in `j`.
    fn tap(&self, i: Idx, j: Idx, ki: VarId, kj: VarId) -> Vec<Idx> {
        let sx = self.stride[1];
        vec![
            times(i, self.stride[0]).add(v(ki)),
            rem(v(kj), sx),
            j.add(div(v(kj), sx)),
        ]
    }

    /// Phase A: along every row (vectorized), `source` gives the value of
    /// each input, stored at its cell of `vals`; then −∞ in the padding
    /// cells.
    fn stage(
        &self,
        b: &mut KernelBuilder,
        vals: &Scratch,
        width: u32,
        source: &mut Source<'_>,
    ) -> Vec<Stmt> {
        let [py, px] = self.padding;
        let ninf = || Expr::F32(f32::NEG_INFINITY);
        let y = b.var("y", DType::I64);
        let mut row = Vec::new();
        if px > 0 {
            let e = b.var("e", DType::I64);
            let yp = plus(v(y), py);
            row.push(Stmt::For {
                var: e,
                extent: c(px),
                kind: LoopKind::Serial,
                body: vec![
                    vals.store(self.cell(yp.clone(), v(e)), ninf()),
                    vals.store(self.cell(yp, plus(v(e), self.w + px)), ninf()),
                ],
            });
        }
        row.extend(cover(b, "x", self.w, width, &mut |b, x| {
            let cell = self.cell(plus(v(y), py), plus(x.clone(), px));
            let (mut stmts, value) = source(b, times(v(y), self.w).add(x));
            stmts.push(vals.store(cell, value));
            stmts
        }));
        let mut out = nonempty_loop(y, self.h, LoopKind::Serial, row);
        if py > 0 {
            let (e, ph, q) = (
                b.var("e", DType::I64),
                b.var("ph", DType::I64),
                b.var("q", DType::I64),
            );
            let pad = vec![
                vals.store(vec![v(e), v(ph), v(q)], ninf()),
                vals.store(vec![plus(v(e), self.h + py), v(ph), v(q)], ninf()),
            ];
            let cols = nonempty_loop(q, self.cols, LoopKind::Serial, pad);
            let phases = nonempty_loop(ph, self.stride[1], LoopKind::Serial, cols);
            out.extend(nonempty_loop(e, py, LoopKind::Serial, phases));
        }
        out
    }
}

/// Max-pooling, or with `lrn` the fused LRN + max-pool: per plane, the
/// pooled values (x, or its LRN computed along rows) staged, then every
/// output row's windows read from the staging buffer.
fn max_pool(ctx: &NodeCtx<'_>, pool: &Pool, lrn: Option<Lrn>) -> Result<LoweredKernel, LowerError> {
    let [n, channels, h, w] = dims4(ctx, &operand_f32(ctx, 0)?)?;
    let [oh, ow] = pool.output(ctx, [h, w])?;
    if result_f32(ctx, 0)? != [n, channels, oh, ow] {
        return Err(ctx.invalid(format!("the result should be {:?}", [n, channels, oh, ow])));
    }
    let [kh, kw] = pool.kernel;
    let unroll = kh.saturating_mul(kw) <= MAX_UNROLL;
    let width = vector_width(ctx, true);
    let what = if lrn.is_some() {
        "lrn_max_pool"
    } else {
        "max_pool"
    };
    let mut b = KernelBuilder::new(kernel_name(ctx, what));
    let x = b.param("x", DType::F32, &[n, channels, h * w], Access::Read);
    let y = b.param("y", DType::F32, &[n, channels, oh * ow], Access::Write);
    let st = Staged::new(pool, [h, w]);
    let (p, bn, ch) = plane(&mut b, channels);
    let (bufs, workspaces) = scratch(&mut b, n * channels, &v(p), &[("vals", &st.shape())]);
    let Some(vals) = bufs.first() else {
        return Err(ctx.invalid("internal: no staging buffer"));
    };
    let at = |s: Idx| vec![bn.clone(), ch.clone(), s];

    let mut per_plane = st.stage(&mut b, vals, width, &mut |b, s| match &lrn {
        Some(l) => {
            let around = |cc: Idx| vec![bn.clone(), cc, s.clone()];
            let (stmts, _, u) = l.norm(b, x, channels, &ch, &around);
            (stmts, bin(BinOp::Mul, ld(x, at(s.clone())), var(u)))
        }
        None => (Vec::new(), ld(x, at(s))),
    });

    let i = b.var("i", DType::I64);
    let row = cover(&mut b, "j", ow, width, &mut |b, j| {
        let (max, ki, kj, val) = (
            b.var("max", DType::F32),
            b.var("ki", DType::I64),
            b.var("kj", DType::I64),
            b.var("v", DType::F32),
        );
        let tap = vec![
            let_(val, vals.load(st.tap(v(i), j.clone(), ki, kj))),
            set(
                max,
                Expr::select(beats(var(val), var(max)), var(val), var(max)),
            ),
        ];
        vec![
            let_(max, Expr::F32(f32::NEG_INFINITY)),
            small_loop(ki, kh, unroll, vec![small_loop(kj, kw, unroll, tap)]),
            store(y, at(times(v(i), ow).add(j)), var(max)),
        ]
    });
    per_plane.extend(nonempty_loop(i, oh, LoopKind::Serial, row));
    let body = nonempty_loop(p, n * channels, outer_kind(ctx), per_plane);
    let mut args = vec![Arg::Operand(0), Arg::Result(0)];
    args.extend(workspaces);
    Ok(LoweredKernel {
        kernel: b.finish(
            body,
            schedule(ctx, width, "p", &["p", "oh", "ow", "window"]),
        ),
        args,
    })
}

/// The argmax of the window of output `(i, j)` over the staged values, as
/// the row-major tap number `ki·kw + kj` in an f32 variable: the first
/// in-bounds tap starts as the candidate, and a later tap replaces it when
/// strictly greater or NaN (PyTorch's rule, as the reference). Without
/// padding the first tap is always in bounds, so it is the initial
/// candidate and the loop tests only `beats`.
fn argmax(
    b: &mut KernelBuilder,
    st: &Staged,
    vals: &Scratch,
    i: Idx,
    j: Idx,
    unroll: bool,
) -> (Vec<Stmt>, VarId) {
    let [kh, kw] = st.kernel;
    let [sy, sx] = st.stride;
    let [py, px] = st.padding;
    let best = b.var("best", DType::F32);
    let max = b.var("max", DType::F32);
    let ki = b.var("ki", DType::I64);
    let kj = b.var("kj", DType::I64);
    let val = b.var("v", DType::F32);
    let padded = py > 0 || px > 0;
    let mut take = beats(var(val), var(max));
    if padded {
        // Padding (−∞ in the staging buffer) never becomes the candidate;
        // the first in-bounds tap does.
        let wy = minus(times(i.clone(), sy).add(v(ki)), py);
        let wx = minus(times(j.clone(), sx).add(v(kj)), px);
        let first = Cond::Expr {
            op: Cmp::Lt,
            a: var(best),
            b: Expr::F32(0.0),
        };
        take = and(and(in_range(wy, st.h), in_range(wx, st.w)), or(first, take));
    }
    let tap = vec![
        let_(val, vals.load(st.tap(i.clone(), j.clone(), ki, kj))),
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
    let (best0, max0) = if padded {
        (Expr::F32(-1.0), Expr::F32(f32::NEG_INFINITY))
    } else {
        // Tap (0, 0).
        (Expr::F32(0.0), vals.load(vec![times(i, sy), c(0), j]))
    };
    let stmts = vec![
        let_(best, best0),
        let_(max, max0),
        small_loop(ki, kh, unroll, vec![small_loop(kj, kw, unroll, tap)]),
    ];
    (stmts, best)
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

/// The per-plane buffers of a max-pool gradient.
#[derive(Clone, Debug)]
struct PlaneScratch {
    /// The staged pooled values (x, or its LRN), see [`Staged`].
    vals: Scratch,
    /// Each window's argmax tap, at `[i + ⌈kh/sy⌉ − 1, j + ⌈kw/sx⌉ − 1]`;
    /// −1 on the border ("no window").
    best: Scratch,
    /// Each window's `dy`, beside `best`; 0 on the border.
    grad: Scratch,
    /// One input row's gradients in column-phase layout `[sx, ⌈w/sx⌉]`.
    row: Scratch,
    /// With LRN, `u` and `D` of the plane's inputs in natural layout
    /// `[h·w]` (the LRN value itself is in `vals`).
    lrn: Option<(Scratch, Scratch)>,
}

/// One plane of a max-pool gradient (see the module header), for plane
/// `(bn, ch)` of `x` (`[N, C, h·w]`) and `dy` (`[N, C, oh·ow]`): staging
/// (A; with `lrn`, the LRN computed along rows, keeping `u` and `D`), every
/// window's argmax (B), then per input row the gather in column-phase
/// order into `scratch.row` (C) and, in natural order (vectorized),
/// `sink(b, s, g)` with the gradient `g` of plane element `s` (and, with
/// `lrn`, its LRN value `y`, `D` and `u`).
#[allow(clippy::too_many_arguments)]
fn pool_backward_plane(
    b: &mut KernelBuilder,
    st: &Staged,
    scratch: &PlaneScratch,
    lrn: Option<(&Lrn, usize)>,
    [x, dy]: [BufId; 2],
    [oh, ow]: [usize; 2],
    [bn, ch]: [&Idx; 2],
    width: u32,
    sink: &mut dyn FnMut(&mut KernelBuilder, Idx, Expr) -> Vec<Stmt>,
) -> Vec<Stmt> {
    let (h, w) = (st.h, st.w);
    let [kh, kw] = st.kernel;
    let [sy, sx] = st.stride;
    let [py, px] = st.padding;
    // Candidate windows per input along each axis.
    let (na, nb) = (kh.div_ceil(sy), kw.div_ceil(sx));
    let unroll = kh.saturating_mul(kw) <= MAX_UNROLL;
    let unroll_gather = na.saturating_mul(nb) <= MAX_UNROLL;
    let PlaneScratch {
        vals,
        best,
        grad,
        row,
        lrn: norms,
    } = scratch;
    let at = |s: Idx| vec![bn.clone(), ch.clone(), s];

    // A: the pooled values, staged.
    let mut out = st.stage(b, vals, width, &mut |b, s| match (lrn, norms) {
        (Some((l, channels)), Some((u_buf, d_buf))) => {
            let around = |cc: Idx| vec![bn.clone(), cc, s.clone()];
            let (mut stmts, d, u) = l.norm(b, x, channels, ch, &around);
            stmts.push(u_buf.store(vec![s.clone()], var(u)));
            stmts.push(d_buf.store(vec![s.clone()], var(d)));
            (stmts, bin(BinOp::Mul, ld(x, at(s)), var(u)))
        }
        _ => (Vec::new(), ld(x, at(s))),
    });

    // B: "no window" everywhere, then each window's argmax and gradient.
    let grows = (h + py).saturating_sub(1) / sy + na;
    let gcols = (w + px).saturating_sub(1) / sx + nb;
    let gr = b.var("gr", DType::I64);
    let clear = cover(b, "gc", gcols, width, &mut |_, gc| {
        vec![
            best.store(vec![v(gr), gc.clone()], Expr::F32(-1.0)),
            grad.store(vec![v(gr), gc], Expr::F32(0.0)),
        ]
    });
    out.extend(nonempty_loop(gr, grows, LoopKind::Serial, clear));
    let i = b.var("i", DType::I64);
    let windows = cover(b, "j", ow, width, &mut |b, j| {
        let (mut stmts, choice) = argmax(b, st, vals, v(i), j.clone(), unroll);
        let cell = vec![plus(v(i), na - 1), plus(j.clone(), nb - 1)];
        stmts.push(best.store(cell.clone(), var(choice)));
        stmts.push(grad.store(cell, ld(dy, at(times(v(i), ow).add(j)))));
        stmts
    });
    out.extend(nonempty_loop(i, oh, LoopKind::Serial, windows));

    // C: per input row y, by column phase r (x = xx·sx + r), the gather.
    let yy = b.var("y", DType::I64);
    let mut per_row = Vec::new();
    for r in 0..sx.min(w) {
        per_row.extend(cover(
            b,
            &format!("xx{r}"),
            (w - r).div_ceil(sx),
            width,
            &mut |b, xx| {
                let acc = b.var("acc", DType::F32);
                let a = b.var("a", DType::I64);
                // Window row i = ⌊(y + py)/sy⌋ − (na − 1) + a (increasing),
                // at grid row ⌊(y + py)/sy⌋ + a; the input is its tap row
                // ki = (y + py) mod sy + (na − 1 − a)·sy. A window that does
                // not contain the input has ki ≥ kh, a tap number no argmax
                // takes, so it adds zero without a test.
                let grow = div(plus(v(yy), py), sy).add(v(a));
                let ki = rem(plus(v(yy), py), sy).add(times(c(na - 1).sub(v(a)), sy));
                let mut taps = Vec::new();
                // Window columns in increasing order: j = ⌊(x + px)/sx⌋ − bb,
                // where the input is tap column kj = (r + px) mod sx + bb·sx.
                for bb in (0..nb).rev() {
                    let kj = (r + px) % sx + bb * sx;
                    if kj >= kw {
                        continue;
                    }
                    let cell = vec![grow.clone(), plus(xx.clone(), (r + px) / sx + nb - 1 - bb)];
                    let tap_no = index_f32(times(ki.clone(), kw).add(c(kj)));
                    let sent = Expr::select(
                        feq(best.load(cell.clone()), tap_no),
                        grad.load(cell),
                        Expr::F32(0.0),
                    );
                    taps.push(set(acc, bin(BinOp::Add, var(acc), sent)));
                }
                vec![
                    let_(acc, Expr::F32(0.0)),
                    small_loop(a, na, unroll_gather, taps),
                    row.store(vec![c(r), xx], var(acc)),
                ]
            },
        ));
    }
    // The row in natural order: one gathered load per element, so that
    // what the sink stores is contiguous.
    per_row.extend(cover(b, "x", w, width, &mut |b, xc| {
        let g = b.var("g", DType::F32);
        let mut stmts = vec![let_(
            g,
            row.load(vec![rem(xc.clone(), sx), div(xc.clone(), sx)]),
        )];
        stmts.extend(sink(b, times(v(yy), w).add(xc), var(g)));
        stmts
    }));
    out.extend(nonempty_loop(yy, h, LoopKind::Serial, per_row));
    out
}

/// Gradient of max-pooling, or with `lrn` of the fused LRN + max-pool
/// (see the module header). Without LRN: per plane (parallel), its
/// gradient stored into `dx`. With LRN: per sample (parallel), the channels
/// in order ([`Lrn::channel_walk`]): each plane's max-pool gradient `g`
/// of its LRN output gives the plane's terms in the rings, and each
/// channel's `dx` is finished `size/2` channels later.
fn max_pool_backward(
    ctx: &NodeCtx<'_>,
    pool: &Pool,
    lrn: Option<Lrn>,
) -> Result<LoweredKernel, LowerError> {
    let (xd, yd) = pool_backward_dims(ctx, pool)?;
    let [n, channels, h, w] = xd;
    let [_, _, oh, ow] = yd;
    let [kh, kw] = pool.kernel;
    let [sy, sx] = pool.stride;
    let [py, px] = pool.padding;
    let width = vector_width(ctx, true);
    let what = if lrn.is_some() {
        "lrn_max_pool_backward"
    } else {
        "max_pool_backward"
    };
    let mut b = KernelBuilder::new(kernel_name(ctx, what));
    let plane_dims = [n, channels, h * w];
    let x = b.param("x", DType::F32, &plane_dims, Access::Read);
    let dy = b.param("dy", DType::F32, &[n, channels, oh * ow], Access::Read);
    let dx = b.param("dx", DType::F32, &plane_dims, Access::Write);
    let st = Staged::new(pool, [h, w]);
    let grid = [
        (h + py).saturating_sub(1) / sy + kh.div_ceil(sy),
        (w + px).saturating_sub(1) / sx + kw.div_ceil(sx),
    ];
    let row = [sx, w.div_ceil(sx)];
    let staged = st.shape();
    let mut buffers: Vec<(&str, &[usize])> = vec![
        ("vals", &staged[..]),
        ("best", &grid),
        ("grad", &grid),
        ("row", &row),
    ];
    let ring = lrn.as_ref().map_or([0, 0], |l| [l.size, h * w]);
    let plane_len = [h * w];
    if lrn.is_some() {
        buffers.extend([
            ("scale", &plane_len[..]),
            ("den", &plane_len),
            ("own", &ring),
            ("sent", &ring),
        ]);
    }
    // The parallel loop: planes, or with LRN samples.
    let (units, unit) = match lrn {
        None => (n * channels, b.var("p", DType::I64)),
        Some(_) => (n, b.var("n", DType::I64)),
    };
    let (bufs, workspaces) = scratch(&mut b, units, &v(unit), &buffers);
    let (planes, rings) = match (bufs.as_slice(), &lrn) {
        ([vals, best, grad, row], None) => (
            PlaneScratch {
                vals: vals.clone(),
                best: best.clone(),
                grad: grad.clone(),
                row: row.clone(),
                lrn: None,
            },
            None,
        ),
        ([vals, best, grad, row, u, d, own, sent], Some(_)) => (
            PlaneScratch {
                vals: vals.clone(),
                best: best.clone(),
                grad: grad.clone(),
                row: row.clone(),
                lrn: Some((u.clone(), d.clone())),
            },
            Some(Rings {
                own: own.clone(),
                sent: sent.clone(),
            }),
        ),
        _ => return Err(ctx.invalid("internal: unexpected scratch buffers")),
    };
    let (body, sched) = match (&lrn, rings) {
        (Some(l), Some(rings)) => {
            let bn = v(unit);
            let walk = l.channel_walk(
                &mut b,
                channels,
                &mut |b, ch| {
                    pool_backward_plane(
                        b,
                        &st,
                        &planes,
                        Some((l, channels)),
                        [x, dy],
                        [oh, ow],
                        [&bn, &ch],
                        width,
                        &mut |b, s, g| {
                            let Some((u_buf, d_buf)) = &planes.lrn else {
                                return Vec::new();
                            };
                            // y = x·u, exactly the staged value (whose cell
                            // is not contiguous in s).
                            let u = b.var("u", DType::F32);
                            let here = || vec![s.clone()];
                            let mut stmts = vec![let_(u, u_buf.load(here()))];
                            let y = bin(
                                BinOp::Mul,
                                ld(x, vec![bn.clone(), ch.clone(), s.clone()]),
                                var(u),
                            );
                            stmts.extend(l.store_terms(
                                &rings,
                                &ch,
                                s.clone(),
                                g,
                                y,
                                d_buf.load(here()),
                                var(u),
                            ));
                            stmts
                        },
                    )
                },
                &mut |b, m| {
                    cover(b, "s", h * w, width, &mut |b, s| {
                        let at = vec![bn.clone(), m.clone(), s.clone()];
                        let (mut stmts, value) =
                            l.finish(b, &rings, channels, &m, &s, ld(x, at.clone()));
                        stmts.push(store(dx, at, value));
                        stmts
                    })
                },
            );
            (
                nonempty_loop(unit, n, outer_kind(ctx), walk),
                schedule(ctx, width, "n", &["n", "c", "h", "w", "window"]),
            )
        }
        _ => {
            let (bn, ch) = (v(unit).div(channels as i64), v(unit).rem(channels as i64));
            let per_plane = pool_backward_plane(
                &mut b,
                &st,
                &planes,
                None,
                [x, dy],
                [oh, ow],
                [&bn, &ch],
                width,
                &mut |_, s, g| vec![store(dx, vec![bn.clone(), ch.clone(), s], g)],
            );
            (
                nonempty_loop(unit, n * channels, outer_kind(ctx), per_plane),
                schedule(ctx, width, "p", &["p", "h", "w", "window"]),
            )
        }
    };
    let mut args = vec![Arg::Operand(0), Arg::Operand(1), Arg::Result(0)];
    args.extend(workspaces);
    Ok(LoweredKernel {
        kernel: b.finish(body, sched),
        args,
    })
}

// ------------------------------------------------------------------------
// Average pooling: one output (or input-gradient) element per innermost
// iteration, the window read in place (padding through `load_or`).

/// Average pooling.
fn avg_pool(ctx: &NodeCtx<'_>, pool: &Pool) -> Result<LoweredKernel, LowerError> {
    let xd = dims4(ctx, &operand_f32(ctx, 0)?)?;
    let [n, channels, h, w] = xd;
    let [oh, ow] = pool.output(ctx, [h, w])?;
    let yd = [n, channels, oh, ow];
    if result_f32(ctx, 0)? != yd {
        return Err(ctx.invalid(format!("the result should be {yd:?}")));
    }
    let include_pad = pool.avg.unwrap_or(true);
    let [kh, kw] = pool.kernel;
    let [sy, sx] = pool.stride;
    let [py, px] = pool.padding;
    let unroll = kh.saturating_mul(kw) <= MAX_UNROLL;
    let width = vector_width(ctx, true);
    let mut b = KernelBuilder::new(kernel_name(ctx, "avg_pool"));
    let x = b.param("x", DType::F32, &xd, Access::Read);
    let y = b.param("y", DType::F32, &yd, Access::Write);
    let (p, bn, ch) = plane(&mut b, channels);
    let i = b.var("i", DType::I64);
    let row = cover(&mut b, "j", ow, width, &mut |b, j| {
        let acc = b.var("sum", DType::F32);
        let ki = b.var("ki", DType::I64);
        let kj = b.var("kj", DType::I64);
        let wy = minus(times(v(i), sy).add(v(ki)), py);
        let wx = minus(times(j.clone(), sx).add(v(kj)), px);
        let index = vec![bn.clone(), ch.clone(), wy, wx];
        let val = if pool.padded() {
            ld_or(x, index, 0.0)
        } else {
            ld(x, index)
        };
        vec![
            let_(acc, Expr::F32(0.0)),
            small_loop(
                ki,
                kh,
                unroll,
                vec![small_loop(
                    kj,
                    kw,
                    unroll,
                    vec![set(acc, bin(BinOp::Add, var(acc), val))],
                )],
            ),
            store(
                y,
                vec![bn.clone(), ch.clone(), v(i), j.clone()],
                bin(
                    BinOp::Div,
                    var(acc),
                    pool.divisor(v(i), j, [h, w], include_pad),
                ),
            ),
        ]
    });
    let rows = nonempty_loop(i, oh, LoopKind::Serial, row);
    let body = nonempty_loop(p, n * channels, outer_kind(ctx), rows);
    Ok(LoweredKernel {
        kernel: b.finish(
            body,
            schedule(ctx, width, "p", &["p", "oh", "ow", "window"]),
        ),
        args: vec![Arg::Operand(0), Arg::Result(0)],
    })
}

/// Average-pool gradient, as a gather: each input-gradient element visits
/// the output positions whose windows contain it (at most
/// `⌈kh/sy⌉·⌈kw/sx⌉`, in increasing row-major order, the reference's
/// accumulation order) and adds their gradient over their divisor.
fn avg_pool_backward(ctx: &NodeCtx<'_>, pool: &Pool) -> Result<LoweredKernel, LowerError> {
    let (xd, yd) = pool_backward_dims(ctx, pool)?;
    let [n, channels, h, w] = xd;
    let [_, _, oh, ow] = yd;
    let include_pad = pool.avg.unwrap_or(true);
    let [kh, kw] = pool.kernel;
    let [sy, sx] = pool.stride;
    let [py, px] = pool.padding;
    let (na, nb) = (kh.div_ceil(sy), kw.div_ceil(sx));
    let unroll = na.saturating_mul(nb) <= MAX_UNROLL;
    let width = vector_width(ctx, true);
    let mut b = KernelBuilder::new(kernel_name(ctx, "avg_pool_backward"));
    let _x = b.param("x", DType::F32, &xd, Access::Read);
    let dy = b.param("dy", DType::F32, &yd, Access::Read);
    let dx = b.param("dx", DType::F32, &xd, Access::Write);
    let (p, bn, ch) = plane(&mut b, channels);
    let iy = b.var("iy", DType::I64);
    let row = cover(&mut b, "ix", w, width, &mut |b, ix| {
        let acc = b.var("acc", DType::F32);
        let a = b.var("a", DType::I64);
        let bb = b.var("b", DType::I64);
        // The last output containing position x is ⌊(x + pad)/s⌋.
        let i = minus(div(plus(v(iy), py), sy), na - 1).add(v(a));
        let j = minus(div(plus(ix.clone(), px), sx), nb - 1).add(v(bb));
        // The element's tap in window (i, j).
        let ki = plus(v(iy), py).sub(times(i.clone(), sy));
        let kj = plus(ix.clone(), px).sub(times(j.clone(), sx));
        let valid = and(
            and(in_range(i.clone(), oh), in_range(j.clone(), ow)),
            and(icmp(Cmp::Lt, ki, c(kh)), icmp(Cmp::Lt, kj, c(kw))),
        );
        let g = ld_or(dy, vec![bn.clone(), ch.clone(), i.clone(), j.clone()], 0.0);
        let share = bin(BinOp::Div, g, pool.divisor(i, j, [h, w], include_pad));
        vec![
            let_(acc, Expr::F32(0.0)),
            small_loop(
                a,
                na,
                unroll,
                vec![small_loop(
                    bb,
                    nb,
                    unroll,
                    vec![set(
                        acc,
                        bin(
                            BinOp::Add,
                            var(acc),
                            Expr::select(valid, share, Expr::F32(0.0)),
                        ),
                    )],
                )],
            ),
            store(dx, vec![bn.clone(), ch.clone(), v(iy), ix], var(acc)),
        ]
    });
    let rows = nonempty_loop(iy, h, LoopKind::Serial, row);
    let body = nonempty_loop(p, n * channels, outer_kind(ctx), rows);
    Ok(LoweredKernel {
        kernel: b.finish(body, schedule(ctx, width, "p", &["p", "h", "w", "window"])),
        args: vec![Arg::Operand(0), Arg::Operand(1), Arg::Result(0)],
    })
}
