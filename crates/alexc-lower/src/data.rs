//! Lowering of the data-movement ops: concat and split.
//!
//! Both are views around the axis: a tensor of shape `[d0, …, dk, …]` split
//! at axis `k` is a matrix `[outer, len·inner]` (`outer` the product of the
//! dimensions before the axis, `inner` of those after), and each piece is
//! one contiguous column block of that matrix. Parameters are declared with
//! those 2-D shapes (row-major views of the bound buffers), and each piece
//! is copied with
//!
//! ```text
//! for o in 0..outer (parallel)
//!   for e in 0..len_i·inner (vector blocks + remainder)
//!     whole[o, offset_i + e] = piece_i[o, e]      (concat; split reversed)
//! ```
//!
//! one kernel per node, one such nest per piece. Copies are exact.
//! When `outer` is 1 (concatenating along the first axis) the block loop
//! of the copy is the parallel one instead.

use alexc_ir::Op;
use alexc_kernel::{Access, DType, Expr, Idx, KernelBuilder, Schedule, Stmt};

use crate::elementwise::{
    c, kernel_name, numel, operand_f32, outer_kind, result_f32, strip, vector_width,
};
use crate::{Arg, LowerError, LoweredKernel, NodeCtx};

/// Lowers one node of this module's ops.
pub fn lower(ctx: &NodeCtx<'_>) -> Result<Vec<LoweredKernel>, LowerError> {
    match &ctx.node().op {
        Op::Concat(a) => {
            let count = ctx.graph.operands(ctx.id).len();
            let pieces = (0..count)
                .map(|i| operand_f32(ctx, i))
                .collect::<Result<Vec<_>, _>>()?;
            let whole = result_f32(ctx, 0)?;
            copy_pieces(ctx, a.axis, &whole, &pieces, true)
        }
        Op::Split(a) => {
            let whole = operand_f32(ctx, 0)?;
            let pieces = (0..a.sizes.len())
                .map(|i| result_f32(ctx, i))
                .collect::<Result<Vec<_>, _>>()?;
            copy_pieces(ctx, a.axis, &whole, &pieces, false)
        }
        op => Err(ctx.invalid(format!("{} is not a data-movement op", op.name()))),
    }
}

/// Copies between the whole tensor and its pieces along `axis`: into the
/// whole for concat (`gather`), out of it for split.
fn copy_pieces(
    ctx: &NodeCtx<'_>,
    axis: usize,
    whole: &[usize],
    pieces: &[Vec<usize>],
    gather: bool,
) -> Result<Vec<LoweredKernel>, LowerError> {
    if axis >= whole.len() {
        return Err(ctx.invalid(format!("axis {axis} is out of range for {whole:?}")));
    }
    numel(ctx, whole)?;
    let outer: usize = whole[..axis].iter().product();
    let inner: usize = whole[axis + 1..].iter().product();
    let mut total = 0usize;
    for p in pieces {
        let agrees = p.len() == whole.len() && (0..p.len()).all(|d| d == axis || p[d] == whole[d]);
        if !agrees {
            return Err(ctx.invalid(format!(
                "piece {p:?} does not fit {whole:?} along axis {axis}"
            )));
        }
        total += p[axis];
    }
    if total != whole[axis] || pieces.is_empty() {
        return Err(ctx.invalid(format!(
            "the pieces do not add up to {whole:?} along axis {axis}"
        )));
    }
    let row = whole[axis] * inner;

    let mut b = KernelBuilder::new(kernel_name(ctx, if gather { "concat" } else { "split" }));
    // Parameters in argument order: the operand(s) first, then the result(s).
    let whole_param = |b: &mut KernelBuilder| {
        if gather {
            b.param("out", DType::F32, &[outer, row], Access::Write)
        } else {
            b.param("x", DType::F32, &[outer, row], Access::Read)
        }
    };
    let mut args = Vec::new();
    let whole_first = (!gather).then(|| whole_param(&mut b));
    let mut bufs = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        let access = if gather { Access::Read } else { Access::Write };
        bufs.push(b.param(
            format!("piece{i}"),
            DType::F32,
            &[outer, p[axis] * inner],
            access,
        ));
    }
    let whole_buf = match whole_first {
        Some(buf) => buf,
        None => whole_param(&mut b),
    };
    if gather {
        args.extend((0..pieces.len()).map(Arg::Operand));
        args.push(Arg::Result(0));
    } else {
        args.push(Arg::Operand(0));
        args.extend((0..pieces.len()).map(Arg::Result));
    }

    let width = vector_width(ctx, true);
    let mut body = Vec::new();
    let mut offset = 0usize;
    for (p, &buf) in pieces.iter().zip(&bufs) {
        let len = p[axis] * inner;
        let at = offset;
        let copy = |_: &mut KernelBuilder, o: Idx, e: Idx| {
            let (whole_at, piece_at) = (vec![o.clone(), c(at).add(e.clone())], vec![o, e]);
            if gather {
                vec![Stmt::Store {
                    buf: whole_buf,
                    index: whole_at,
                    value: Expr::load(buf, piece_at),
                }]
            } else {
                vec![Stmt::Store {
                    buf,
                    index: piece_at,
                    value: Expr::load(whole_buf, whole_at),
                }]
            }
        };
        if outer == 1 {
            body.extend(strip(
                &mut b,
                "e",
                len,
                width,
                ctx.options.parallel,
                &mut |b, e| copy(b, c(0), e),
            ));
        } else if outer > 0 && len > 0 {
            let o = b.var("o", DType::I64);
            let inner_loop = strip(&mut b, "e", len, width, false, &mut |b, e| {
                copy(b, Idx::Var(o), e)
            });
            body.push(Stmt::For {
                var: o,
                extent: c(outer),
                kind: outer_kind(ctx),
                body: inner_loop,
            });
        }
        offset += len;
    }
    let axis_name = if outer == 1 { "e" } else { "o" };
    let schedule = Schedule {
        tiles: if width > 1 {
            vec![("e".into(), width as usize)]
        } else {
            Vec::new()
        },
        vector_width: width,
        loop_order: if outer == 1 {
            vec!["e".into()]
        } else {
            vec!["o".into(), "e".into()]
        },
        parallel_axis: ctx.options.parallel.then(|| axis_name.into()),
    };
    let kernel = b.finish(body, schedule);
    Ok(vec![LoweredKernel { kernel, args }])
}
