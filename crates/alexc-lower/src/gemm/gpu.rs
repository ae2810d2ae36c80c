//! The GEMM of [`GemmSpec`] shaped for a GPU ([`crate::LowerOptions::gpu`]):
//! one thread block per `BM × BN` tile of C, the tile's A and B slices
//! staged through block-shared locals `BK` deep, and a `TM × TN` register
//! micro-tile per thread.
//!
//! # How the loops say "block" and "thread"
//!
//! The kernel IR has no GPU vocabulary, and needs none:
//!
//! - the outer `Parallel` loop runs over tiles: one iteration per thread
//!   block (its locals are the block's, as the IR's semantics give each
//!   parallel iteration its own locals);
//! - inside it, `Vectorized { width: THREADS }` loops are the block's
//!   threads. Their semantics — iterations may run in lockstep, so no
//!   iteration reads what another writes — is exactly what a block of
//!   threads between two barriers guarantees. The CUDA renderer maps them to
//!   `threadIdx.x` with a `__syncthreads()` after each, and the schedule
//!   records the width as the tile `threads`;
//! - a local whose first index is always the thread loop's variable (the
//!   accumulator `acc[t, i, j]`) is private to each thread: registers. Any
//!   other local of the block (`a_tile`, `b_tile`) is `__shared__`.
//!
//! On a CPU (and in the kernel IR evaluator, which is how the reference
//! suite proves these kernels right without a GPU) the same loops simply
//! run in order.
//!
//! # The loop nest
//!
//! ```text
//! parallel for blk in 0..batch·split·tiles_m·tiles_n        // blockIdx.x
//!   threads t: acc[t, i, j] = 0
//!   for r in 0..reduce/split                                  // images of a dw
//!     for kb in 0..⌈k / BK⌉
//!       threads t: a_tile[kk, mm] = A(m0 + mm, kb·BK + kk)   // 0 outside
//!       threads t: b_tile[kk, jj] = B(kb·BK + kk, n0 + jj)
//!       threads t: acc[t, i, j] += a_tile[kk, ty·TM + i] · b_tile[kk, tx·TN + j]
//!   threads t: C[m, j] = epilogue(init + acc[t, i, j])        // inside C only
//! ```
//!
//! Loads outside A or B are clamped and selected away (`select(in, A(min(m,
//! M − 1), …), 0)`), as the CPU packing does, so every access is provable
//! without guards on div/mod terms; stores are guarded by `m < M && j < N`
//! with the micro-tile's own loop variable innermost, which the verifier's
//! guard narrowing proves.
//!
//! # Reductions over a batch (split-K, deterministic)
//!
//! A weight gradient sums over the images as well as over `k` (`reduce`).
//! Its C is small (conv1's `dw`: 12 tiles), so the images are split into
//! `split` chunks, each block accumulating one chunk into a partial sum in a
//! workspace `[batch, split, M, N]`; a second top-level loop (a second
//! launch, ordered after the first by the stream) adds the partials in a
//! fixed order. No atomics: results are the same on every run.

use alexc_kernel::{
    Access, BinOp, BufId, Cond, DType, Expr, Idx, KernelBuilder, LoopKind, Schedule, Stmt,
};

use super::micro::{and, c, div, for_, lt, rem, Built, GemmSpec};
use crate::Arg;

/// Rows of C per block tile.
pub const BM: usize = 64;
/// Columns of C per block tile.
pub const BN: usize = 64;
/// Depth of one staged slice of A and B.
pub const BK: usize = 16;
/// Rows of the per-thread register micro-tile.
pub const TM: usize = 4;
/// Columns of the per-thread register micro-tile.
pub const TN: usize = 4;
/// Elements of padding per staged row of `a_tile`/`b_tile`: a multiple of
/// 4, so rows stay 16-byte aligned for vector reads, that moves the next
/// row 4 banks along (the stores then conflict at most two ways).
pub const PAD: usize = 4;
/// Threads per block: one per micro-tile of the block tile.
pub const THREADS: usize = (BM / TM) * (BN / TN);
/// Split a batch reduction until there are about this many blocks (a few
/// per streaming multiprocessor on current GPUs).
const TARGET_BLOCKS: usize = 1024;
/// The largest partial-sum workspace a split may need (elements).
const MAX_PARTIAL: usize = 1 << 26;

/// Tiles of C along one dimension.
fn tiles(len: usize, tile: usize) -> usize {
    len.div_ceil(tile).max(1)
}

/// How many chunks to split the batch reduction into: the smallest divisor
/// of `reduce` that gives [`TARGET_BLOCKS`] blocks, within [`MAX_PARTIAL`].
fn splits(spec: &GemmSpec<'_>) -> usize {
    let reduce: usize = spec
        .reduce
        .iter()
        .map(|(_, e)| *e)
        .product::<usize>()
        .max(1);
    let batch: usize = spec.batch.iter().map(|(_, e)| *e).product::<usize>().max(1);
    let blocks = batch * tiles(spec.m, BM) * tiles(spec.n, BN);
    let fits = |s: usize| batch * s * spec.m * spec.n <= MAX_PARTIAL;
    let mut best = 1;
    for s in 1..=reduce {
        if reduce % s != 0 || !fits(s) {
            continue;
        }
        best = s;
        if blocks * s >= TARGET_BLOCKS {
            break;
        }
    }
    best
}

/// The indices of `dims` from a flat row-major index.
fn unflatten(flat: &Idx, dims: &[(&'static str, usize)]) -> Vec<Idx> {
    let mut stride: usize = dims.iter().map(|(_, e)| (*e).max(1)).product();
    dims.iter()
        .map(|(_, e)| {
            let e = (*e).max(1);
            stride /= e;
            rem(div(flat.clone(), stride), e)
        })
        .collect()
}

/// Builds `spec` as a block-tiled GPU GEMM (see the module docs).
pub fn build(kb: &mut KernelBuilder, spec: &GemmSpec<'_>) -> Built {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let (tm_count, tn_count) = (tiles(m, BM), tiles(n, BN));
    let bt: usize = spec.batch.iter().map(|(_, e)| *e).product::<usize>().max(1);
    let rt: usize = spec
        .reduce
        .iter()
        .map(|(_, e)| *e)
        .product::<usize>()
        .max(1);
    let split = splits(spec);
    let chunk = rt / split;

    let mut workspaces = Vec::new();
    let partial = (split > 1).then(|| {
        workspaces.push(Arg::Workspace {
            elements: bt * split * m * n,
        });
        kb.param("partial", DType::F32, &[bt, split, m, n], Access::ReadWrite)
    });
    // Each staged row is padded by `PAD` elements: the staging stores walk
    // `kk` fastest, so unpadded they would all hit one shared-memory bank;
    // a pad of 4 (not 1) keeps every row 16-byte aligned, so the
    // multiply-accumulate's `TM` (`TN`) consecutive reads of a row become
    // one 128-bit load (`ld.shared.v4.f32`) instead of four.
    let a_tile = kb.local("a_tile", DType::F32, &[BK, BM + PAD]);
    let b_tile = kb.local("b_tile", DType::F32, &[BK, BN + PAD]);
    let acc = kb.local("acc", DType::F32, &[THREADS, TM, TN]);

    let blk = kb.var("blk", DType::I64);
    let b = Idx::var(blk);
    let tn_i = rem(b.clone(), tn_count);
    let tm_i = rem(div(b.clone(), tn_count), tm_count);
    let s_i = rem(div(b.clone(), tn_count * tm_count), split);
    let b_flat = rem(div(b, tn_count * tm_count * split), bt);
    let bidx = unflatten(&b_flat, &spec.batch);
    let m0 = tm_i.mul(BM as i64);
    let n0 = tn_i.mul(BN as i64);
    let threads = LoopKind::Vectorized {
        width: THREADS as u32,
    };
    let ty = |t: VarIdx| div(Idx::var(t), BN / TN).mul(TM as i64);
    let tx = |t: VarIdx| rem(Idx::var(t), BN / TN).mul(TN as i64);

    // acc = 0.
    let zero = {
        let (t, i, j) = (
            kb.var("t", DType::I64),
            kb.var("i", DType::I64),
            kb.var("j", DType::I64),
        );
        let store = Stmt::Store {
            buf: acc,
            index: vec![Idx::var(t), Idx::var(i), Idx::var(j)],
            value: Expr::F32(0.0),
        };
        for_(
            t,
            c(THREADS),
            threads,
            vec![for_(
                i,
                c(TM),
                LoopKind::Unrolled,
                vec![for_(j, c(TN), LoopKind::Unrolled, vec![store])],
            )],
        )
    };

    // One staged slice: reduction index r (within the chunk), k-block kv.
    let r = kb.var("r", DType::I64);
    let kv = kb.var("kb", DType::I64);
    let r_flat = s_i.clone().mul(chunk as i64).add(Idx::var(r));
    let mut full_idx = bidx.clone();
    full_idx.extend(unflatten(&r_flat, &spec.reduce));
    let k0 = Idx::var(kv).mul(BK as i64);

    // a_tile[kk, mm] = A(m0 + mm, k0 + kk), kk fastest across threads.
    let stage = |kb: &mut KernelBuilder, tile: BufId, rows: usize, kk_fast: bool, is_a: bool| {
        let (t, q) = (kb.var("t", DType::I64), kb.var("q", DType::I64));
        let e = Idx::var(q).mul(THREADS as i64).add(Idx::var(t));
        let (kk, other) = if kk_fast {
            (rem(e.clone(), BK), div(e, BK))
        } else {
            (div(e.clone(), rows), rem(e, rows))
        };
        let kg = k0.clone().add(kk.clone());
        let (base, len) = if is_a {
            (m0.clone(), m)
        } else {
            (n0.clone(), n)
        };
        let og = base.add(other.clone());
        let inside = and(lt(og.clone(), c(len)), lt(kg.clone(), c(k)));
        let og_c = og.min(c(len.saturating_sub(1)));
        let kg_c = kg.min(c(k.saturating_sub(1)));
        let value = if is_a {
            (spec.a)(&full_idx, og_c, kg_c)
        } else {
            (spec.b)(&full_idx, kg_c, og_c)
        };
        let store = Stmt::Store {
            buf: tile,
            index: vec![kk, other],
            value: Expr::select(inside, value, Expr::F32(0.0)),
        };
        for_(
            t,
            c(THREADS),
            threads,
            vec![for_(
                q,
                c(BK * rows / THREADS),
                LoopKind::Unrolled,
                vec![store],
            )],
        )
    };
    let load_a = stage(kb, a_tile, BM, true, true);
    let load_b = stage(kb, b_tile, BN, !spec.b_rows, false);

    // acc[t, i, j] += a_tile[kk, ty + i] · b_tile[kk, tx + j].
    let mac = {
        let (t, kk, i, j) = (
            kb.var("t", DType::I64),
            kb.var("kk", DType::I64),
            kb.var("i", DType::I64),
            kb.var("j", DType::I64),
        );
        let at = vec![Idx::var(t), Idx::var(i), Idx::var(j)];
        let store = Stmt::Store {
            buf: acc,
            index: at.clone(),
            value: Expr::fma(
                Expr::load(a_tile, vec![Idx::var(kk), ty(t).add(Idx::var(i))]),
                Expr::load(b_tile, vec![Idx::var(kk), tx(t).add(Idx::var(j))]),
                Expr::load(acc, at),
            ),
        };
        for_(
            t,
            c(THREADS),
            threads,
            vec![for_(
                kk,
                c(BK),
                LoopKind::Unrolled,
                vec![for_(
                    i,
                    c(TM),
                    LoopKind::Unrolled,
                    vec![for_(j, c(TN), LoopKind::Unrolled, vec![store])],
                )],
            )],
        )
    };
    let k_loop = for_(
        kv,
        c(k.div_ceil(BK)),
        LoopKind::Serial,
        vec![load_a, load_b, mac],
    );
    let r_loop = for_(r, c(chunk), LoopKind::Serial, vec![k_loop]);

    // The epilogue: C (or the partial sum) inside the matrix only.
    let store = {
        let (t, i, j) = (
            kb.var("t", DType::I64),
            kb.var("i", DType::I64),
            kb.var("j", DType::I64),
        );
        let row = m0.clone().add(ty(t)).add(Idx::var(i));
        let col = n0.clone().add(tx(t)).add(Idx::var(j));
        let sum = Expr::load(acc, vec![Idx::var(t), Idx::var(i), Idx::var(j)]);
        let (buf, index, value) = match partial {
            Some(p) => (
                p,
                vec![b_flat.clone(), s_i.clone(), row.clone(), col.clone()],
                sum,
            ),
            None => {
                let (buf, index) = (spec.c)(&bidx, row.clone(), col.clone());
                let init = (spec.init)(&bidx, row.clone(), col.clone());
                let value = (spec.epilogue)(
                    &bidx,
                    row.clone(),
                    col.clone(),
                    Expr::binary(BinOp::Add, init, sum),
                );
                (buf, index, value)
            }
        };
        let guarded = Stmt::If {
            cond: and(lt(row, c(m)), lt(col, c(n))),
            then: vec![Stmt::Store { buf, index, value }],
            otherwise: Vec::new(),
        };
        for_(
            t,
            c(THREADS),
            threads,
            vec![for_(
                i,
                c(TM),
                LoopKind::Unrolled,
                vec![for_(j, c(TN), LoopKind::Unrolled, vec![guarded])],
            )],
        )
    };

    let mut body = vec![for_(
        blk,
        c(bt * split * tm_count * tn_count),
        LoopKind::Parallel,
        vec![zero, r_loop, store],
    )];
    if let Some(p) = partial {
        body.push(reduce_partials(kb, spec, p, split));
    }
    let [am, an, ak] = spec.axes;
    let mut loop_order = vec!["blocks".to_string(), "threads".to_string()];
    loop_order.extend(spec.reduce.iter().map(|(r, _)| r.to_string()));
    loop_order.extend([format!("{ak}/bk"), ak.to_string(), am.into(), an.into()]);
    let mut tile_list: Vec<(String, usize)> = [
        ("bm", BM),
        ("bn", BN),
        ("bk", BK),
        ("tm", TM),
        ("tn", TN),
        ("threads", THREADS),
    ]
    .into_iter()
    .map(|(name, v)| (name.to_string(), v))
    .collect();
    if split > 1 {
        tile_list.push(("split".to_string(), split));
    }
    Built {
        body,
        schedule: Schedule {
            tiles: tile_list,
            vector_width: 1,
            loop_order,
            parallel_axis: Some("blocks".to_string()),
        },
        workspaces,
    }
}

type VarIdx = alexc_kernel::VarId;

/// `C = epilogue(init + Σ_s partial[s])` in a fixed order, one element of C
/// per iteration (a launch of its own on a GPU, after the partial sums).
fn reduce_partials(
    kb: &mut KernelBuilder,
    spec: &GemmSpec<'_>,
    partial: BufId,
    split: usize,
) -> Stmt {
    let (m, n) = (spec.m, spec.n);
    let bt: usize = spec.batch.iter().map(|(_, e)| *e).product::<usize>().max(1);
    let (u, s) = (kb.var("u", DType::I64), kb.var("s", DType::I64));
    let sum = kb.var("sum", DType::F32);
    let uu = Idx::var(u);
    let col = rem(uu.clone(), n);
    let row = rem(div(uu.clone(), n), m);
    let b_flat = rem(div(uu, n * m), bt);
    let bidx = unflatten(&b_flat, &spec.batch);
    let (buf, index) = (spec.c)(&bidx, row.clone(), col.clone());
    let add = Stmt::Assign {
        var: sum,
        value: Expr::binary(
            BinOp::Add,
            Expr::Var(sum),
            Expr::load(
                partial,
                vec![b_flat.clone(), Idx::var(s), row.clone(), col.clone()],
            ),
        ),
    };
    let value = (spec.epilogue)(&bidx, row.clone(), col.clone(), Expr::Var(sum));
    for_(
        u,
        c(bt * m * n),
        LoopKind::Parallel,
        vec![
            Stmt::Let {
                var: sum,
                value: (spec.init)(&bidx, row, col),
            },
            for_(s, c(split), LoopKind::Serial, vec![add]),
            Stmt::Store { buf, index, value },
        ],
    )
}

/// `ws[i…] = value(i…)` for every element of `shape`, one parallel iteration
/// (one GPU thread) per element.
pub fn stage_flat(
    kb: &mut KernelBuilder,
    ws: BufId,
    shape: &[usize],
    value: &dyn Fn(&[Idx]) -> Expr,
) -> Stmt {
    let u = kb.var("u", DType::I64);
    let dims: Vec<(&'static str, usize)> = shape.iter().map(|&e| ("", e)).collect();
    let index = unflatten(&Idx::var(u), &dims);
    for_(
        u,
        c(shape.iter().product()),
        LoopKind::Parallel,
        vec![Stmt::Store {
            buf: ws,
            value: value(&index),
            index,
        }],
    )
}

/// The padded copy of `stage_padded` one element per parallel iteration:
/// `ws[i, j, y, x] = value([i, j, y − t, x − l])` inside, 0 in the border.
/// The source index is clamped into the source and the border selected
/// away, so every load is provably in bounds without guards.
pub fn stage_padded_flat(
    kb: &mut KernelBuilder,
    ws: BufId,
    [a, b, h, w]: [usize; 4],
    [t, bo, l, r]: [usize; 4],
    value: &dyn Fn(Vec<Idx>) -> Expr,
) -> Stmt {
    let (hp, wp) = (t + h + bo, l + w + r);
    let u = kb.var("u", DType::I64);
    let dims = [("", a), ("", b), ("", hp), ("", wp)];
    let index = unflatten(&Idx::var(u), &dims);
    let (y, x) = (index[2].clone(), index[3].clone());
    let inside = and(
        and(
            Cond::Idx {
                op: alexc_kernel::Cmp::Le,
                a: c(t),
                b: y.clone(),
            },
            lt(y.clone(), c(t + h)),
        ),
        and(
            Cond::Idx {
                op: alexc_kernel::Cmp::Le,
                a: c(l),
                b: x.clone(),
            },
            lt(x.clone(), c(l + w)),
        ),
    );
    let clamp =
        |v: Idx, lo: usize, len: usize| v.sub(c(lo)).max(c(0)).min(c(len.saturating_sub(1)));
    let src = vec![
        index[0].clone(),
        index[1].clone(),
        clamp(y, t, h),
        clamp(x, l, w),
    ];
    for_(
        u,
        c(a * b * hp * wp),
        LoopKind::Parallel,
        vec![Stmt::Store {
            buf: ws,
            index,
            value: Expr::select(inside, value(src), Expr::F32(0.0)),
        }],
    )
}

/// `db[o] = Σ_{n, p} dz(n, o, p)` over `[N, O, P]` on a GPU: one block per
/// output channel. Each thread sums a strided slice (`e = t, t + THREADS,
/// …` over the flattened `(n, p)`: neighbouring threads read neighbouring
/// elements) into a shared `part[t]`, then one thread (a thread loop of
/// extent 1) adds the parts in order: deterministic, no atomics.
pub fn bias_grad(
    kb: &mut KernelBuilder,
    db: BufId,
    dz: &dyn Fn(Idx, Idx, Idx) -> Expr,
    [n, oc, p]: [usize; 3],
) -> (Vec<Stmt>, Schedule) {
    let total = (n * p).max(1);
    let part = kb.local("part", DType::F32, &[THREADS]);
    let (o, t, i, t1, q) = (
        kb.var("o", DType::I64),
        kb.var("t", DType::I64),
        kb.var("i", DType::I64),
        kb.var("t", DType::I64),
        kb.var("q", DType::I64),
    );
    let (sum, all) = (kb.var("sum", DType::F32), kb.var("sum", DType::F32));
    let threads = LoopKind::Vectorized {
        width: THREADS as u32,
    };
    let e = Idx::var(i).mul(THREADS as i64).add(Idx::var(t));
    let ec = e.clone().min(c(total - 1));
    let term = Expr::select(
        lt(e, c(total)),
        dz(div(ec.clone(), p), Idx::var(o), rem(ec, p)),
        Expr::F32(0.0),
    );
    let partial = for_(
        t,
        c(THREADS),
        threads,
        vec![
            Stmt::Let {
                var: sum,
                value: Expr::F32(0.0),
            },
            for_(
                i,
                c(total.div_ceil(THREADS)),
                LoopKind::Serial,
                vec![Stmt::Assign {
                    var: sum,
                    value: Expr::binary(BinOp::Add, Expr::Var(sum), term),
                }],
            ),
            Stmt::Store {
                buf: part,
                index: vec![Idx::var(t)],
                value: Expr::Var(sum),
            },
        ],
    );
    let combine = for_(
        t1,
        c(1),
        threads,
        vec![
            Stmt::Let {
                var: all,
                value: Expr::F32(0.0),
            },
            for_(
                q,
                c(THREADS),
                LoopKind::Serial,
                vec![Stmt::Assign {
                    var: all,
                    value: Expr::binary(
                        BinOp::Add,
                        Expr::Var(all),
                        Expr::load(part, vec![Idx::var(q)]),
                    ),
                }],
            ),
            Stmt::Store {
                buf: db,
                index: vec![Idx::var(o)],
                value: Expr::Var(all),
            },
        ],
    );
    let body = vec![for_(o, c(oc), LoopKind::Parallel, vec![partial, combine])];
    let schedule = Schedule {
        tiles: vec![("threads".to_string(), THREADS)],
        vector_width: 1,
        loop_order: vec!["oc".into(), "threads".into(), "n*p".into()],
        parallel_axis: Some("oc".to_string()),
    };
    (body, schedule)
}
