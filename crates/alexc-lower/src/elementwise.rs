//! Lowering of the elementwise ops: ReLU, mul, add, the copies (flatten,
//! reshape, evaluation-time dropout), ReLU-backward and the SGD update.
//!
//! Every one of them treats its tensors as flat arrays: elementwise ops do
//! not care about dimensions, so each parameter is declared with the flat
//! shape `[numel]` (a row-major view of the same bytes the plan binds). That
//! gives one loop nest for every rank:
//!
//! ```text
//! for eo in 0..numel / W  (parallel)      // vector blocks
//!   for ei in 0..W        (vectorized W)  //   contiguous lanes
//!     out[eo·W + ei] = f(in[eo·W + ei], …)
//! for er in 0..numel % W  (serial)        // scalar remainder
//!   out[(numel / W)·W + er] = f(…)
//! ```
//!
//! Splitting off the remainder (instead of a `min(W, numel − eo·W)` extent)
//! keeps every index provable by interval arithmetic alone: `eo·W + ei ≤
//! (numel/W)·W − 1`. The block loop is the parallel one; the runtime chunks
//! its iterations across threads.
//!
//! The SGD update writes its results over its operands (`Op::in_place`):
//! `w` and `v` are `ReadWrite` parameters bound to operands 0 and 1, and the
//! kernel has no result parameters. The learning rate is a rank-0 parameter
//! read (a broadcast) inside the loop, so a schedule change needs no
//! recompilation.
//!
//! This module also holds the small helpers the other lowering modules share
//! (operand type checks, the strip-mined vector loop above).

use alexc_ir::{DType as IrDType, Op, SgdConvention};
use alexc_kernel::{
    Access, BinOp, Cmp, Cond, DType, Expr, Idx, KernelBuilder, LoopKind, Schedule, Stmt,
};

use crate::{Arg, LowerError, LoweredKernel, NodeCtx};

/// Lowers one node of this module's ops.
pub fn lower(ctx: &NodeCtx<'_>) -> Result<Vec<LoweredKernel>, LowerError> {
    match &ctx.node().op {
        Op::Relu => unary(ctx, "relu", |x| {
            // `x ≤ 0 ? 0 : x` keeps NaN (the comparison is false), as the
            // reference does; `max(x, 0)` would be IEEE maxNum and drop it.
            Expr::select(
                Cond::Expr {
                    op: Cmp::Le,
                    a: x.clone(),
                    b: Expr::F32(0.0),
                },
                Expr::F32(0.0),
                x,
            )
        }),
        Op::Flatten | Op::Reshape(_) | Op::Dropout(_) => unary(ctx, "copy", |x| x),
        Op::Add => binary(ctx, "add", |a, b| Expr::binary(BinOp::Add, a, b)),
        Op::Mul => binary(ctx, "mul", |a, b| Expr::binary(BinOp::Mul, a, b)),
        // dx = dy · [y > 0]: zero where y is zero or NaN.
        Op::ReluBackward => binary(ctx, "relu_backward", |y, dy| {
            Expr::select(
                Cond::Expr {
                    op: Cmp::Gt,
                    a: y,
                    b: Expr::F32(0.0),
                },
                dy,
                Expr::F32(0.0),
            )
        }),
        Op::SgdUpdate(a) => sgd(ctx, a.momentum, a.weight_decay, a.convention),
        op => Err(ctx.invalid(format!("{} is not an elementwise op", op.name()))),
    }
}

/// One input, one output of the same element count.
fn unary(
    ctx: &NodeCtx<'_>,
    name: &str,
    f: impl Fn(Expr) -> Expr,
) -> Result<Vec<LoweredKernel>, LowerError> {
    let n = numel(ctx, &operand_f32(ctx, 0)?)?;
    if numel(ctx, &result_f32(ctx, 0)?)? != n {
        return Err(ctx.invalid("the result and the operand differ in size"));
    }
    let mut b = KernelBuilder::new(kernel_name(ctx, name));
    let x = b.param("x", DType::F32, &[n], Access::Read);
    let y = b.param("y", DType::F32, &[n], Access::Write);
    let (body, schedule) = flat_map(ctx, &mut b, n, &mut |_, e| {
        vec![Stmt::Store {
            buf: y,
            index: vec![e.clone()],
            value: f(Expr::load(x, vec![e])),
        }]
    });
    Ok(vec![LoweredKernel {
        kernel: b.finish(body, schedule),
        args: vec![Arg::Operand(0), Arg::Result(0)],
    }])
}

/// Two inputs and one output, all of one element count.
fn binary(
    ctx: &NodeCtx<'_>,
    name: &str,
    f: impl Fn(Expr, Expr) -> Expr,
) -> Result<Vec<LoweredKernel>, LowerError> {
    let n = numel(ctx, &operand_f32(ctx, 0)?)?;
    if numel(ctx, &operand_f32(ctx, 1)?)? != n || numel(ctx, &result_f32(ctx, 0)?)? != n {
        return Err(ctx.invalid("operands and result differ in size"));
    }
    let mut b = KernelBuilder::new(kernel_name(ctx, name));
    let a_buf = b.param("a", DType::F32, &[n], Access::Read);
    let b_buf = b.param("b", DType::F32, &[n], Access::Read);
    let out = b.param("out", DType::F32, &[n], Access::Write);
    let (body, schedule) = flat_map(ctx, &mut b, n, &mut |_, e| {
        vec![Stmt::Store {
            buf: out,
            index: vec![e.clone()],
            value: f(
                Expr::load(a_buf, vec![e.clone()]),
                Expr::load(b_buf, vec![e]),
            ),
        }]
    });
    Ok(vec![LoweredKernel {
        kernel: b.finish(body, schedule),
        args: vec![Arg::Operand(0), Arg::Operand(1), Arg::Result(0)],
    }])
}

/// The SGD step, in place. Each formula is evaluated left to right as the
/// reference writes it, with μ and λ rounded to f32 first:
///
/// - paper: `v' = μ·v − (λ·ε)·w − ε·g`, `w' = w + v'`;
/// - PyTorch: `v' = μ·v + g + λ·w`, `w' = w − ε·v'`.
fn sgd(
    ctx: &NodeCtx<'_>,
    momentum: f64,
    weight_decay: f64,
    convention: SgdConvention,
) -> Result<Vec<LoweredKernel>, LowerError> {
    if !(momentum.is_finite() && weight_decay.is_finite()) {
        return Err(ctx.invalid("momentum and weight decay must be finite"));
    }
    let n = numel(ctx, &operand_f32(ctx, 0)?)?;
    if numel(ctx, &operand_f32(ctx, 1)?)? != n || numel(ctx, &operand_f32(ctx, 2)?)? != n {
        return Err(ctx.invalid("w, v and g differ in size"));
    }
    if !operand_f32(ctx, 3)?.is_empty() {
        return Err(ctx.invalid("the learning rate must be a scalar"));
    }
    let (mu, lambda) = (momentum as f32, weight_decay as f32);
    let mut b = KernelBuilder::new(kernel_name(ctx, "sgd"));
    let w = b.param("w", DType::F32, &[n], Access::ReadWrite);
    let v = b.param("v", DType::F32, &[n], Access::ReadWrite);
    let g = b.param("g", DType::F32, &[n], Access::Read);
    let lr = b.param("lr", DType::F32, &[], Access::Read);
    let (body, schedule) = flat_map(ctx, &mut b, n, &mut |b, e| {
        let v1 = b.var("v_new", DType::F32);
        let at = || vec![e.clone()];
        let eps = || Expr::load(lr, vec![]);
        let mul = |a: Expr, c: Expr| Expr::binary(BinOp::Mul, a, c);
        let (new_v, new_w) = match convention {
            SgdConvention::Paper => (
                Expr::binary(
                    BinOp::Sub,
                    Expr::binary(
                        BinOp::Sub,
                        mul(Expr::F32(mu), Expr::load(v, at())),
                        mul(mul(Expr::F32(lambda), eps()), Expr::load(w, at())),
                    ),
                    mul(eps(), Expr::load(g, at())),
                ),
                Expr::binary(BinOp::Add, Expr::load(w, at()), Expr::Var(v1)),
            ),
            SgdConvention::Pytorch => (
                Expr::binary(
                    BinOp::Add,
                    Expr::binary(
                        BinOp::Add,
                        mul(Expr::F32(mu), Expr::load(v, at())),
                        Expr::load(g, at()),
                    ),
                    mul(Expr::F32(lambda), Expr::load(w, at())),
                ),
                Expr::binary(BinOp::Sub, Expr::load(w, at()), mul(eps(), Expr::Var(v1))),
            ),
        };
        vec![
            Stmt::Let {
                var: v1,
                value: new_v,
            },
            Stmt::Store {
                buf: w,
                index: at(),
                value: new_w,
            },
            Stmt::Store {
                buf: v,
                index: at(),
                value: Expr::Var(v1),
            },
        ]
    });
    Ok(vec![LoweredKernel {
        kernel: b.finish(body, schedule),
        args: vec![
            Arg::Operand(0),
            Arg::Operand(1),
            Arg::Operand(2),
            Arg::Operand(3),
        ],
    }])
}

/// The whole flat range `0..n` as vector blocks plus a remainder (see the
/// module header), with the schedule that describes it.
fn flat_map(
    ctx: &NodeCtx<'_>,
    b: &mut KernelBuilder,
    n: usize,
    body: &mut dyn FnMut(&mut KernelBuilder, Idx) -> Vec<Stmt>,
) -> (Vec<Stmt>, Schedule) {
    let width = vector_width(ctx, true);
    let stmts = strip(b, "e", n, width, ctx.options.parallel, body);
    let schedule = Schedule {
        tiles: if width > 1 {
            vec![("e".into(), width as usize)]
        } else {
            Vec::new()
        },
        vector_width: width,
        loop_order: vec!["e".into()],
        parallel_axis: ctx.options.parallel.then(|| "e".into()),
    };
    (stmts, schedule)
}

// ------------------------------------------------------------------------
// Helpers shared by the lowering modules.

/// The kernel name: the node's name and what the kernel does.
pub(crate) fn kernel_name(ctx: &NodeCtx<'_>, what: &str) -> String {
    format!("{}.{what}", ctx.node().name)
}

/// The element type of operand `i`.
pub(crate) fn operand_dtype(ctx: &NodeCtx<'_>, i: usize) -> Result<IrDType, LowerError> {
    ctx.graph
        .operands(ctx.id)
        .get(i)
        .and_then(|v| ctx.graph.value_type(*v))
        .map(|t| t.dtype)
        .ok_or_else(|| ctx.invalid(format!("operand {i} is missing")))
}

/// The shape of operand `i`, which must be f32.
pub(crate) fn operand_f32(ctx: &NodeCtx<'_>, i: usize) -> Result<Vec<usize>, LowerError> {
    match operand_dtype(ctx, i)? {
        IrDType::F32 => ctx.operand_shape(i),
        other => Err(ctx.invalid(format!("operand {i} is {other}, expected f32"))),
    }
}

/// The shape of result `i`, which must be f32.
pub(crate) fn result_f32(ctx: &NodeCtx<'_>, i: usize) -> Result<Vec<usize>, LowerError> {
    match ctx.node().outputs.get(i).map(|t| t.dtype) {
        Some(IrDType::F32) => ctx.result_shape(i),
        Some(other) => Err(ctx.invalid(format!("result {i} is {other}, expected f32"))),
        None => Err(ctx.invalid(format!("result {i} is missing"))),
    }
}

/// The element count of `shape`, checked to fit the kernel IR's i64 index
/// arithmetic with room to spare (any index the lowerings form is a small
/// multiple of an element count).
pub(crate) fn numel(ctx: &NodeCtx<'_>, shape: &[usize]) -> Result<usize, LowerError> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= (i64::MAX as usize) / 16)
        .ok_or_else(|| ctx.invalid(format!("shape {shape:?} is too large to index")))
}

/// An index constant. Callers have bounded every size with [`numel`], so
/// the conversion is exact.
pub(crate) fn c(v: usize) -> Idx {
    Idx::Const(v as i64)
}

/// The vector width to use for a contiguous innermost loop: the target's,
/// or 1 (scalar) when `legal` is false or the target has no vectors.
pub(crate) fn vector_width(ctx: &NodeCtx<'_>, legal: bool) -> u32 {
    if legal {
        ctx.options.vector_width.max(1)
    } else {
        1
    }
}

/// The kind of the outermost independent loop.
pub(crate) fn outer_kind(ctx: &NodeCtx<'_>) -> LoopKind {
    if ctx.options.parallel {
        LoopKind::Parallel
    } else {
        LoopKind::Serial
    }
}

/// `for e in 0..len`, strip-mined into `width`-lane vector blocks (the
/// block loop `Parallel` when `parallel`) and a serial remainder; `body`
/// gets the element index. With `width == 1` it is one plain loop. Emits
/// nothing for `len == 0`.
pub(crate) fn strip(
    b: &mut KernelBuilder,
    name: &str,
    len: usize,
    width: u32,
    parallel: bool,
    body: &mut dyn FnMut(&mut KernelBuilder, Idx) -> Vec<Stmt>,
) -> Vec<Stmt> {
    let outer = if parallel {
        LoopKind::Parallel
    } else {
        LoopKind::Serial
    };
    let w = width.max(1) as usize;
    if len == 0 {
        return Vec::new();
    }
    if w == 1 {
        let e = b.var(name, DType::I64);
        let inner = body(b, Idx::Var(e));
        return vec![Stmt::For {
            var: e,
            extent: c(len),
            kind: outer,
            body: inner,
        }];
    }
    let (blocks, rem) = (len / w, len % w);
    let mut out = Vec::new();
    if blocks > 0 {
        let eo = b.var(format!("{name}o"), DType::I64);
        let ei = b.var(format!("{name}i"), DType::I64);
        let inner = body(b, Idx::Var(eo).mul(w as i64).add(Idx::Var(ei)));
        out.push(Stmt::For {
            var: eo,
            extent: c(blocks),
            kind: outer,
            body: vec![Stmt::For {
                var: ei,
                extent: c(w),
                kind: LoopKind::Vectorized { width },
                body: inner,
            }],
        });
    }
    if rem > 0 {
        let er = b.var(format!("{name}r"), DType::I64);
        let inner = body(b, plus(Idx::Var(er), blocks * w));
        out.push(Stmt::For {
            var: er,
            extent: c(rem),
            kind: LoopKind::Serial,
            body: inner,
        });
    }
    out
}

/// `i + k`, without a `+ 0` (printed kernels stay readable).
pub(crate) fn plus(i: Idx, k: usize) -> Idx {
    if k == 0 {
        i
    } else {
        i.add(c(k))
    }
}

/// `i − k`, without a `− 0`.
pub(crate) fn minus(i: Idx, k: usize) -> Idx {
    if k == 0 {
        i
    } else {
        i.sub(c(k))
    }
}
