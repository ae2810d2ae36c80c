//! Matrix–vector products: linear layers at small batch,
//! `C[o, j] = epilogue(init[o, j] + Σ_k W[o, k] · X[j, k])` for a handful
//! of columns `j` (the batch).
//!
//! At batch 1 the GEMM's register tile would use one of its `NR` columns:
//! the weight is streamed once either way, but the tile's broadcast-FMA
//! pattern caps it far below memory bandwidth. Here the vector lanes run
//! along `k` instead, where both `W`'s rows and `X` are contiguous:
//!
//! ```text
//! for ob in 0..⌈O/R⌉                      parallel: R output rows per item
//!   acc[R, J, VW] ← 0                      (R·J vector registers)
//!   for kv in 0..K/VW:                     W's R rows streamed side by side
//!     acc[r, j, :] += W[o_r, kv·VW + :] · X[j, kv·VW + :]
//!   one padded step for K % VW (`load_or`)
//!   C[o_r, j] = epilogue(init + Σ_lane acc[r, j, lane])
//! ```
//!
//! The partial sums are per lane in a `Local` tile indexed by the lane (the
//! widened loop keeps them in vector registers; a scalar accumulator
//! carried across a vectorized loop would not widen), and the `R` rows give
//! `R·J` independent FMA chains and `R` concurrent streams for the
//! prefetchers. Each row is summed in lane order, once, at the end.

use alexc_kernel::{BinOp, BufId, DType, Expr, Idx, KernelBuilder, LoopKind, Schedule, Stmt};

use super::micro::{c, for_, lt, Access2, Epilogue, Place};

/// One matrix–vector product.
pub struct GemvSpec<'a> {
    /// Output rows `O` (rows of `w`).
    pub rows: usize,
    /// Columns `J` of C (rows of `x`): the batch.
    pub cols: usize,
    /// The common dimension `K`.
    pub k: usize,
    /// `W`, `[rows, k]`.
    pub w: BufId,
    /// `X`, `[cols, k]`.
    pub x: BufId,
    /// Where `C(o, j)` lives (called with no batch indices).
    pub c: Place<'a>,
    /// The start value (bias); valid indices.
    pub init: Access2<'a>,
    pub epilogue: Epilogue<'a>,
}

/// Rows per item: enough independent streams and FMA chains, no more than
/// half the vector registers as accumulators (16 of AVX-512's 32, 8 of
/// AVX2's 16), leaving room for the loaded operands.
pub fn rows_per_item(cols: usize, vector_width: usize) -> usize {
    let acc_vectors = if vector_width >= 16 { 16 } else { 8 };
    // Up to 8 rows (streams): 4 to 8 measured the same on fc6 (28 GB/s on
    // one core, 39 on two), 16 and 2 a quarter slower.
    (acc_vectors / cols.max(1)).clamp(1, 8)
}

/// Builds the product's loop nest into `kb`.
pub fn build(
    kb: &mut KernelBuilder,
    spec: &GemvSpec<'_>,
    vector_width: u32,
    parallel: bool,
) -> (Vec<Stmt>, Schedule) {
    let vw = vector_width.max(1) as usize;
    let (rows, cols, k) = (spec.rows, spec.cols, spec.k);
    let rr = rows_per_item(cols, vw);
    let acc = kb.local("acc", DType::F32, &[rr, cols, vw]);
    let (ob, r, j, l, kv, l2) = (
        kb.var("ob", DType::I64),
        kb.var("r", DType::I64),
        kb.var("j", DType::I64),
        kb.var("l", DType::I64),
        kb.var("kv", DType::I64),
        kb.var("l", DType::I64),
    );
    let sum = kb.var("sum", DType::F32);
    let row = Idx::var(ob).mul(rr as i64).add(Idx::var(r));
    let row_clamped = row.clone().min(c(rows.saturating_sub(1)));
    let acc_at = vec![Idx::var(r), Idx::var(j), Idx::var(l)];
    // `for r { for j { for l (vector) { acc[r, j, l] = value } } }`.
    let lanes = |value: Expr| {
        for_(
            r,
            c(rr),
            LoopKind::Unrolled,
            vec![for_(
                j,
                c(cols),
                LoopKind::Unrolled,
                vec![for_(
                    l,
                    c(vw),
                    LoopKind::Vectorized { width: vw as u32 },
                    vec![Stmt::Store {
                        buf: acc,
                        index: acc_at.clone(),
                        value,
                    }],
                )],
            )],
        )
    };
    let step = |w: Expr, x: Expr| lanes(Expr::fma(w, x, Expr::load(acc, acc_at.clone())));

    let full = k / vw;
    let kidx = Idx::var(kv).mul(vw as i64).add(Idx::var(l));
    let mut body = vec![
        lanes(Expr::F32(0.0)),
        for_(
            kv,
            c(full),
            LoopKind::Serial,
            vec![step(
                Expr::load(spec.w, vec![row_clamped.clone(), kidx.clone()]),
                Expr::load(spec.x, vec![Idx::var(j), kidx]),
            )],
        ),
    ];
    if k % vw != 0 {
        // The last partial vector: lanes past K read zeros.
        let kidx = c(full * vw).add(Idx::var(l));
        let load_or = |buf, index| Expr::LoadOr {
            buf,
            index,
            default: 0.0,
        };
        body.push(step(
            load_or(spec.w, vec![row_clamped.clone(), kidx.clone()]),
            load_or(spec.x, vec![Idx::var(j), kidx]),
        ));
    }
    let (cbuf, cidx) = (spec.c)(&[], row.clone(), Idx::var(j));
    body.push(for_(
        r,
        c(rr),
        LoopKind::Unrolled,
        vec![for_(
            j,
            c(cols),
            LoopKind::Unrolled,
            vec![Stmt::If {
                cond: lt(row.clone(), c(rows)),
                then: vec![
                    Stmt::Let {
                        var: sum,
                        value: (spec.init)(&[], row_clamped.clone(), Idx::var(j)),
                    },
                    for_(
                        l2,
                        c(vw),
                        LoopKind::Unrolled,
                        vec![Stmt::Assign {
                            var: sum,
                            value: Expr::binary(
                                BinOp::Add,
                                Expr::Var(sum),
                                Expr::load(acc, vec![Idx::var(r), Idx::var(j), Idx::var(l2)]),
                            ),
                        }],
                    ),
                    Stmt::Store {
                        buf: cbuf,
                        index: cidx,
                        value: (spec.epilogue)(&[], row, Idx::var(j), Expr::Var(sum)),
                    },
                ],
                otherwise: vec![],
            }],
        )],
    ));

    let kind = if parallel {
        LoopKind::Parallel
    } else {
        LoopKind::Serial
    };
    let schedule = Schedule {
        tiles: vec![("rows".to_string(), rr), ("k".to_string(), vw)],
        vector_width: vw as u32,
        loop_order: ["out/rows", "in/vw", "rows", "n", "in"]
            .into_iter()
            .map(String::from)
            .collect(),
        parallel_axis: parallel.then(|| "out/rows".to_string()),
    };
    (
        vec![for_(ob, c(rows.div_ceil(rr).max(1)), kind, body)],
        schedule,
    )
}
