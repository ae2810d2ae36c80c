//! Lowering of the axis reductions: softmax, the cross-entropy loss and
//! their gradients.
//!
//! A tensor reduced along `axis` is viewed as `[outer, len, inner]`
//! (products of the dimensions before and after the axis); parameters are
//! declared with that 3-D shape. Each `(o, i)` line along the axis is
//! independent, and each is reduced serially in increasing `k`, exactly in
//! the reference's order, so sums agree with the interpreter up to the
//! rounding of `exp`/`log` (and FMA contraction) only:
//!
//! ```text
//! for o in 0..outer (parallel)
//!   for i in 0..inner
//!     m = max_k x[o, k, i]                       (pass 1)
//!     s = Σ_k (y[o, k, i] = exp(x[o, k, i] − m))  (pass 2, y written)
//!     y[o, k, i] /= s                             (pass 3, vectorized over k when inner = 1)
//! ```
//!
//! The normalizing pass touches independent elements, so when the axis is
//! the innermost dimension (`inner = 1`, the `[N, classes]` case) it is a
//! contiguous vectorized loop; the two reducing passes stay serial so that
//! their order is the reference's. With `inner > 1` the passes stride by
//! `inner` and stay scalar: only the `[N, C]` layout matters for the
//! networks we compile, and keeping one reduction order for all layouts
//! keeps the results identical.
//!
//! The loss is a single scalar, a mean over the batch accumulated in sample
//! order: one serial kernel. The label of a sample is compared with the
//! class index (`Expr::Index(k) == labels[n]`) to pick out the target logit;
//! a label outside `0..C` matches nothing and makes the loss NaN (the
//! runtime rejects such labels before running; the NaN is a second line).

use alexc_ir::{DType as IrDType, Op};
use alexc_kernel::{
    Access, BinOp, BufId, Cmp, Cond, DType, Expr, Idx, KernelBuilder, LoopKind, Schedule, Stmt,
    UnOp, VarId,
};

use crate::elementwise::{
    c, kernel_name, numel, operand_dtype, operand_f32, outer_kind, strip, vector_width,
};
use crate::{Arg, LowerError, LoweredKernel, NodeCtx};

/// Lowers one node of this module's ops.
pub fn lower(ctx: &NodeCtx<'_>) -> Result<Vec<LoweredKernel>, LowerError> {
    match &ctx.node().op {
        Op::Softmax(a) => {
            let dims = around(ctx, &operand_f32(ctx, 0)?, a.axis)?;
            Ok(vec![softmax(ctx, dims)?])
        }
        Op::SoftmaxBackward(a) => {
            let dims = around(ctx, &operand_f32(ctx, 0)?, a.axis)?;
            if operand_f32(ctx, 1)? != operand_f32(ctx, 0)? {
                return Err(ctx.invalid("y and dy differ in shape"));
            }
            Ok(vec![softmax_backward(ctx, dims)?])
        }
        Op::SoftmaxCrossEntropy => {
            let (n, classes) = loss_dims(ctx)?;
            Ok(vec![cross_entropy(ctx, n, classes)?])
        }
        Op::SoftmaxCrossEntropyBackward => {
            let (n, classes) = loss_dims(ctx)?;
            Ok(vec![cross_entropy_backward(ctx, n, classes)?])
        }
        op => Err(ctx.invalid(format!("{} is not a reduction", op.name()))),
    }
}

/// `[outer, len, inner]` around `axis`.
fn around(ctx: &NodeCtx<'_>, shape: &[usize], axis: usize) -> Result<[usize; 3], LowerError> {
    if axis >= shape.len() {
        return Err(ctx.invalid(format!("axis {axis} is out of range for {shape:?}")));
    }
    numel(ctx, shape)?;
    Ok([
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    ])
}

/// Logits `[N, C]` (f32) and labels `[N]` (i64), both non-empty.
fn loss_dims(ctx: &NodeCtx<'_>) -> Result<(usize, usize), LowerError> {
    let logits = operand_f32(ctx, 0)?;
    let &[n, classes] = logits.as_slice() else {
        return Err(ctx.invalid(format!("logits must be [N, C], not {logits:?}")));
    };
    if operand_dtype(ctx, 1)? != IrDType::I64 || ctx.operand_shape(1)? != [n] {
        return Err(ctx.invalid(format!("labels must be i64 [{n}]")));
    }
    if n == 0 || classes == 0 {
        return Err(ctx.invalid("the batch and the number of classes must be non-empty"));
    }
    numel(ctx, &logits)?;
    Ok((n, classes))
}

/// Small constructors, so the kernels below read like the math.
fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
    Expr::binary(op, a, b)
}
fn var(v: VarId) -> Expr {
    Expr::Var(v)
}
fn set(v: VarId, value: Expr) -> Stmt {
    Stmt::Assign { var: v, value }
}
fn let_(v: VarId, value: Expr) -> Stmt {
    Stmt::Let { var: v, value }
}
fn for_(v: VarId, extent: usize, kind: LoopKind, body: Vec<Stmt>) -> Stmt {
    Stmt::For {
        var: v,
        extent: c(extent),
        kind,
        body,
    }
}

/// The schedule of the line-reducing kernels.
fn line_schedule(ctx: &NodeCtx<'_>, width: u32) -> Schedule {
    Schedule {
        tiles: Vec::new(),
        vector_width: width,
        loop_order: vec!["o".into(), "i".into(), "k".into()],
        parallel_axis: ctx.options.parallel.then(|| "o".into()),
    }
}

/// The body of one line: gets the index of element `k` of the line.
type LineBody<'a> = dyn FnMut(&mut KernelBuilder, &dyn Fn(Idx) -> Vec<Idx>) -> Vec<Stmt> + 'a;

/// Emits `for o (parallel) { for i { line(o, i) } }`, where `line` gets the
/// index of element `k` of the line as a function.
fn per_line(
    ctx: &NodeCtx<'_>,
    b: &mut KernelBuilder,
    [outer, _, inner]: [usize; 3],
    line: &mut LineBody<'_>,
) -> Vec<Stmt> {
    if outer == 0 || inner == 0 {
        return Vec::new();
    }
    let o = b.var("o", DType::I64);
    let i = b.var("i", DType::I64);
    let at = move |k: Idx| vec![Idx::Var(o), k, Idx::Var(i)];
    let body = line(b, &at);
    vec![for_(
        o,
        outer,
        outer_kind(ctx),
        vec![for_(i, inner, LoopKind::Serial, body)],
    )]
}

/// `for k in 0..len` over independent elements of a line: vectorized when
/// the line is contiguous (`inner == 1`).
fn line_map(
    ctx: &NodeCtx<'_>,
    b: &mut KernelBuilder,
    len: usize,
    inner: usize,
    body: &mut dyn FnMut(&mut KernelBuilder, Idx) -> Vec<Stmt>,
) -> Vec<Stmt> {
    strip(b, "k", len, vector_width(ctx, inner == 1), false, body)
}

/// `m = max_k x[at(k)]` (IEEE maxNum from −∞, as the reference's fold)
/// then `s = Σ_k exp(x[at(k)] − m)`, each serial in increasing `k`; with
/// `store` each exponential is also written there.
fn max_and_exp_sum(
    b: &mut KernelBuilder,
    x: BufId,
    len: usize,
    at: &dyn Fn(Idx) -> Vec<Idx>,
    store: Option<BufId>,
) -> (Vec<Stmt>, VarId, VarId) {
    let m = b.var("max", DType::F32);
    let s = b.var("sum", DType::F32);
    let k1 = b.var("k", DType::I64);
    let k2 = b.var("k", DType::I64);
    let e = b.var("e", DType::F32);
    let mut exp_body = vec![
        let_(
            e,
            Expr::unary(
                UnOp::Exp,
                bin(BinOp::Sub, Expr::load(x, at(Idx::Var(k2))), var(m)),
            ),
        ),
        set(s, bin(BinOp::Add, var(s), var(e))),
    ];
    if let Some(y) = store {
        exp_body.insert(
            1,
            Stmt::Store {
                buf: y,
                index: at(Idx::Var(k2)),
                value: var(e),
            },
        );
    }
    let stmts = vec![
        let_(m, Expr::F32(f32::NEG_INFINITY)),
        for_(
            k1,
            len,
            LoopKind::Serial,
            vec![set(
                m,
                bin(BinOp::Max, var(m), Expr::load(x, at(Idx::Var(k1)))),
            )],
        ),
        let_(s, Expr::F32(0.0)),
        for_(k2, len, LoopKind::Serial, exp_body),
    ];
    (stmts, m, s)
}

/// `y = exp(x − max) / Σ exp(x − max)` along the axis.
fn softmax(ctx: &NodeCtx<'_>, dims: [usize; 3]) -> Result<LoweredKernel, LowerError> {
    let [_, len, inner] = dims;
    let mut b = KernelBuilder::new(kernel_name(ctx, "softmax"));
    let x = b.param("x", DType::F32, &dims, Access::Read);
    // Read back by the normalizing pass.
    let y = b.param("y", DType::F32, &dims, Access::ReadWrite);
    let body = per_line(ctx, &mut b, dims, &mut |b, at| {
        let (mut stmts, _, s) = max_and_exp_sum(b, x, len, at, Some(y));
        stmts.extend(line_map(ctx, b, len, inner, &mut |_, k| {
            vec![Stmt::Store {
                buf: y,
                index: at(k.clone()),
                value: bin(BinOp::Div, Expr::load(y, at(k)), var(s)),
            }]
        }));
        stmts
    });
    let schedule = line_schedule(ctx, vector_width(ctx, inner == 1));
    Ok(LoweredKernel {
        kernel: b.finish(body, schedule),
        args: vec![Arg::Operand(0), Arg::Result(0)],
    })
}

/// `dx_k = y_k · (dy_k − Σ_j y_j · dy_j)` along the axis.
fn softmax_backward(ctx: &NodeCtx<'_>, dims: [usize; 3]) -> Result<LoweredKernel, LowerError> {
    let [_, len, inner] = dims;
    let mut b = KernelBuilder::new(kernel_name(ctx, "softmax_backward"));
    let y = b.param("y", DType::F32, &dims, Access::Read);
    let dy = b.param("dy", DType::F32, &dims, Access::Read);
    let dx = b.param("dx", DType::F32, &dims, Access::Write);
    let body = per_line(ctx, &mut b, dims, &mut |b, at| {
        let dot = b.var("dot", DType::F32);
        let k = b.var("k", DType::I64);
        let mut stmts = vec![
            let_(dot, Expr::F32(0.0)),
            for_(
                k,
                len,
                LoopKind::Serial,
                vec![set(
                    dot,
                    bin(
                        BinOp::Add,
                        var(dot),
                        bin(
                            BinOp::Mul,
                            Expr::load(y, at(Idx::Var(k))),
                            Expr::load(dy, at(Idx::Var(k))),
                        ),
                    ),
                )],
            ),
        ];
        stmts.extend(line_map(ctx, b, len, inner, &mut |_, k| {
            vec![Stmt::Store {
                buf: dx,
                index: at(k.clone()),
                value: bin(
                    BinOp::Mul,
                    Expr::load(y, at(k.clone())),
                    bin(BinOp::Sub, Expr::load(dy, at(k)), var(dot)),
                ),
            }]
        }));
        stmts
    });
    let schedule = line_schedule(ctx, vector_width(ctx, inner == 1));
    Ok(LoweredKernel {
        kernel: b.finish(body, schedule),
        args: vec![Arg::Operand(0), Arg::Operand(1), Arg::Result(0)],
    })
}

/// The condition `k == labels[n]`.
fn is_label(labels: BufId, n: Idx, k: Idx) -> Cond {
    Cond::Expr {
        op: Cmp::Eq,
        a: Expr::Index(k),
        b: Expr::load(labels, vec![n]),
    }
}

/// `loss = (Σ_n (max_n + log Σ_k exp(x[n, k] − max_n) − x[n, label_n])) / N`,
/// accumulated in sample order into one scalar: a serial kernel.
fn cross_entropy(ctx: &NodeCtx<'_>, n: usize, classes: usize) -> Result<LoweredKernel, LowerError> {
    let mut b = KernelBuilder::new(kernel_name(ctx, "cross_entropy"));
    let x = b.param("logits", DType::F32, &[n, classes], Access::Read);
    let labels = b.param("labels", DType::I64, &[n], Access::Read);
    let loss = b.param("loss", DType::F32, &[], Access::Write);
    let total = b.var("total", DType::F32);
    let row = b.var("n", DType::I64);
    let at = move |k: Idx| vec![Idx::Var(row), k];
    let (mut line, m, s) = max_and_exp_sum(&mut b, x, classes, &at, None);
    // The target logit; NaN unless some class matches the label.
    let target = b.var("target", DType::F32);
    let k = b.var("k", DType::I64);
    line.push(let_(target, Expr::F32(f32::NAN)));
    line.push(for_(
        k,
        classes,
        LoopKind::Serial,
        vec![set(
            target,
            Expr::select(
                is_label(labels, Idx::Var(row), Idx::Var(k)),
                Expr::load(x, at(Idx::Var(k))),
                var(target),
            ),
        )],
    ));
    line.push(set(
        total,
        bin(
            BinOp::Add,
            var(total),
            bin(
                BinOp::Sub,
                bin(BinOp::Add, var(m), Expr::unary(UnOp::Log, var(s))),
                var(target),
            ),
        ),
    ));
    let body = vec![
        let_(total, Expr::F32(0.0)),
        for_(row, n, LoopKind::Serial, line),
        Stmt::Store {
            buf: loss,
            index: Vec::new(),
            value: bin(BinOp::Div, var(total), Expr::F32(n as f32)),
        },
    ];
    let schedule = Schedule {
        tiles: Vec::new(),
        vector_width: 1,
        loop_order: vec!["n".into(), "k".into()],
        parallel_axis: None,
    };
    Ok(LoweredKernel {
        kernel: b.finish(body, schedule),
        args: vec![Arg::Operand(0), Arg::Operand(1), Arg::Result(0)],
    })
}

/// `dx[n, k] = (softmax(x[n])[k] − [k = label_n]) / N`, the softmax
/// computed exactly as [`softmax`] does (exponentials stored, then divided).
fn cross_entropy_backward(
    ctx: &NodeCtx<'_>,
    n: usize,
    classes: usize,
) -> Result<LoweredKernel, LowerError> {
    let mut b = KernelBuilder::new(kernel_name(ctx, "cross_entropy_backward"));
    let x = b.param("logits", DType::F32, &[n, classes], Access::Read);
    let labels = b.param("labels", DType::I64, &[n], Access::Read);
    let dx = b.param("dx", DType::F32, &[n, classes], Access::ReadWrite);
    let row = b.var("n", DType::I64);
    let at = move |k: Idx| vec![Idx::Var(row), k];
    let (mut line, _, s) = max_and_exp_sum(&mut b, x, classes, &at, Some(dx));
    line.extend(strip(
        &mut b,
        "k",
        classes,
        vector_width(ctx, true),
        false,
        &mut |b, k| {
            let p = b.var("p", DType::F32);
            vec![
                let_(p, bin(BinOp::Div, Expr::load(dx, at(k.clone())), var(s))),
                Stmt::Store {
                    buf: dx,
                    index: at(k.clone()),
                    value: bin(
                        BinOp::Div,
                        Expr::select(
                            is_label(labels, Idx::Var(row), k),
                            bin(BinOp::Sub, var(p), Expr::F32(1.0)),
                            var(p),
                        ),
                        Expr::F32(n as f32),
                    ),
                },
            ]
        },
    ));
    let body = vec![for_(row, n, outer_kind(ctx), line)];
    let schedule = Schedule {
        tiles: Vec::new(),
        vector_width: vector_width(ctx, true),
        loop_order: vec!["n".into(), "k".into()],
        parallel_axis: ctx.options.parallel.then(|| "n".into()),
    };
    Ok(LoweredKernel {
        kernel: b.finish(body, schedule),
        args: vec![Arg::Operand(0), Arg::Operand(1), Arg::Result(0)],
    })
}
