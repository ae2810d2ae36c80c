//! The one GEMM loop nest every op of this module instantiates:
//! `C[m, j] = epilogue(init[m, j] + Σ_k A(m, k) · B(k, j))`, repeated over
//! independent batch indices, with GotoBLAS-style blocking.
//!
//! ```text
//! for t in 0..batch·⌈N/NC⌉        parallel: (batch indices, jb)
//!   for kb in 0..⌈K/KC⌉            k-block; B panel packed per (jb, kb)
//!     for jp: pack Bp[jp, 0..kc, 0..NR] ← B(kb·KC + k, jb·NC + jp·NR + jj)
//!     for mb in 0..⌈M/MC⌉
//!       for jp in 0..⌈min(NC, N − jb·NC)/NR⌉
//!         for mt in 0..⌈min(MC, M − mb·MC)/MR⌉
//!           acc[MR, NR] ← kb = 0 ? init : C            (registers)
//!           for k in 0..kc: acc[mr, :] += A(m, k) · Bp[jp, k, :]
//!           C ← kb = last ? epilogue(acc) : acc
//! ```
//!
//! Remainders cost nothing in the hot loop: the micro-kernel always
//! computes a full `MR × NR` tile (rows past `M` read a clamped, valid row
//! of A; columns past `N` were packed as zeros), and only the loads and
//! stores of C distinguish full tiles (vector code) from edge tiles
//! (guarded scalar code). All indices into `acc` are constants after
//! unrolling, so LLVM's SROA keeps the tile in registers.
//!
//! Indices that only need to be *valid* (not exact) are clamped with
//! `min(·, extent − 1)` — A's rows and the k index, the packing of edge
//! panels — so the verifier proves them by interval arithmetic alone;
//! stores are exact and guarded by `if`.

use alexc_kernel::{Cmp, Cond, DType, Expr, Idx, KernelBuilder, LoopKind, Schedule, Stmt, VarId};

/// Register and cache tile sizes (elements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiles {
    /// Rows of the register tile.
    pub mr: usize,
    /// Columns of the register tile: a multiple of `vw`.
    pub nr: usize,
    /// Rows of A per cache block (a multiple of `mr`).
    pub mc: usize,
    /// Depth of a packed panel (the k-block).
    pub kc: usize,
    /// Columns per packed B block and per parallel work item (a multiple of `nr`).
    pub nc: usize,
    /// f32 lanes per vector.
    pub vw: usize,
}

impl Tiles {
    /// The defaults for a target with `vector_width` f32 lanes: two vectors
    /// of columns, and as many rows as the vector register file holds
    /// (16 registers → 6 × 2 accumulators + 2 B vectors + 1 broadcast;
    /// 32 registers → 12 × 2 + 3).
    pub fn for_width(vector_width: u32) -> Tiles {
        let vw = vector_width.max(1) as usize;
        let mr = if vw >= 16 { 12 } else { 6 };
        let nr = 2 * vw;
        Tiles {
            mr,
            nr,
            mc: 12 * mr,
            kc: 256,
            nc: 8 * nr,
            vw,
        }
    }

    pub fn schedule_tiles(&self) -> Vec<(String, usize)> {
        [
            ("mr", self.mr),
            ("nr", self.nr),
            ("mc", self.mc),
            ("kc", self.kc),
            ("nc", self.nc),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect()
    }
}

/// A closure giving a value from the batch indices and two GEMM indices.
pub type Access2<'a> = &'a dyn Fn(&[Idx], Idx, Idx) -> Expr;

/// Where `C(m, j)` lives: its buffer and index.
pub type Place<'a> = &'a dyn Fn(&[Idx], Idx, Idx) -> (alexc_kernel::BufId, Vec<Idx>);

/// The epilogue: the accumulator's value at `(m, j)` to the stored value.
pub type Epilogue<'a> = &'a dyn Fn(&[Idx], Idx, Idx, Expr) -> Expr;

/// One GEMM: sizes, operand access and the epilogue, as closures over the
/// batch indices (decoded from the parallel loop) and the GEMM indices.
pub struct GemmSpec<'a> {
    /// Independent outer dimensions, outermost first (`n`, `g`).
    pub batch: Vec<(&'static str, usize)>,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Names of the m, n and k axes in the op's terms (for the schedule).
    pub axes: [&'static str; 3],
    /// `A(m, k)`; called with valid (clamped) indices.
    pub a: Access2<'a>,
    /// `B(k, j)`; called with a valid k and a valid j.
    pub b: Access2<'a>,
    /// Where `C(m, j)` lives: the buffer and its index (its last index
    /// dimension must be exactly `j`'s, so a column past `N` is outside).
    pub c: Place<'a>,
    /// The accumulator's start value (bias or zero); valid indices.
    pub init: Access2<'a>,
    /// Applied to the finished accumulator before its final store.
    pub epilogue: Epilogue<'a>,
}

fn ceil_div(a: usize, b: usize) -> usize {
    a.div_ceil(b.max(1))
}

fn c(v: usize) -> Idx {
    Idx::Const(v as i64)
}

fn le(a: Idx, b: Idx) -> Cond {
    Cond::Idx { op: Cmp::Le, a, b }
}

fn lt(a: Idx, b: Idx) -> Cond {
    Cond::Idx { op: Cmp::Lt, a, b }
}

fn and(a: Cond, b: Cond) -> Cond {
    Cond::And(Box::new(a), Box::new(b))
}

fn for_(var: VarId, extent: Idx, kind: LoopKind, body: Vec<Stmt>) -> Stmt {
    Stmt::For {
        var,
        extent,
        kind,
        body,
    }
}

/// Builds the GEMM's loop nest into `kb` and returns the body and schedule.
pub fn build(
    kb: &mut KernelBuilder,
    spec: &GemmSpec<'_>,
    t: &Tiles,
    parallel: bool,
) -> (Vec<Stmt>, Schedule) {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let vw = t.vw;
    let nv = t.nr / vw;
    let vloop = LoopKind::Vectorized { width: vw as u32 };
    let acc = kb.local("acc", DType::F32, &[t.mr, t.nr]);
    let bp = kb.local("b_packed", DType::F32, &[t.nc / t.nr, t.kc, t.nr]);

    let nb = ceil_div(n, t.nc).max(1);
    let batch_total: usize = spec.batch.iter().map(|(_, e)| *e).product();
    let tv = kb.var("t", DType::I64);
    let flat = Idx::var(tv).div(nb as i64);
    let mut bidx = Vec::new();
    let mut stride = batch_total;
    for (_, e) in &spec.batch {
        let e = (*e).max(1);
        stride /= e;
        bidx.push(flat.clone().div(stride.max(1) as i64).rem(e as i64));
    }
    let jb = Idx::var(tv).rem(nb as i64);
    let bidx = &bidx[..];

    let kbv = kb.var("kb", DType::I64);
    let nkb = ceil_div(k, t.kc).max(1);
    let k0 = Idx::var(kbv).mul(t.kc as i64);
    let kc_ext = c(t.kc).min(c(k).sub(k0.clone()));
    // Valid k index for the k-th element of the block (clamped: `k < kc`
    // already implies it, the `min` lets intervals prove it).
    let kglob = |kk: VarId| k0.clone().add(Idx::var(kk)).min(c(k.saturating_sub(1)));
    let panels = c(t.nc)
        .min(c(n).sub(jb.clone().mul(t.nc as i64)))
        .add(c(t.nr - 1))
        .div(t.nr as i64);

    // Packing of the B block.
    let jp_pack = kb.var("jp", DType::I64);
    let pk = kb.var("pk", DType::I64);
    let pjv = kb.var("pjv", DType::I64);
    let pjj = kb.var("pjj", DType::I64);
    let pj = kb.var("pj", DType::I64);
    let pj0 = jb
        .clone()
        .mul(t.nc as i64)
        .add(Idx::var(jp_pack).mul(t.nr as i64));
    let lane = |jv: VarId, jj: VarId| Idx::var(jv).mul(vw as i64).add(Idx::var(jj));
    let pack_full = for_(
        pk,
        kc_ext.clone(),
        LoopKind::Serial,
        vec![for_(
            pjv,
            c(nv),
            LoopKind::Unrolled,
            vec![for_(
                pjj,
                c(vw),
                vloop,
                vec![Stmt::Store {
                    buf: bp,
                    index: vec![Idx::var(jp_pack), Idx::var(pk), lane(pjv, pjj)],
                    value: (spec.b)(bidx, kglob(pk), pj0.clone().add(lane(pjv, pjj))),
                }],
            )],
        )],
    );
    let pack_edge = for_(
        pk,
        kc_ext.clone(),
        LoopKind::Serial,
        vec![for_(
            pj,
            c(t.nr),
            LoopKind::Serial,
            vec![Stmt::Store {
                buf: bp,
                index: vec![Idx::var(jp_pack), Idx::var(pk), Idx::var(pj)],
                value: Expr::select(
                    lt(pj0.clone().add(Idx::var(pj)), c(n)),
                    (spec.b)(
                        bidx,
                        kglob(pk),
                        pj0.clone().add(Idx::var(pj)).min(c(n.saturating_sub(1))),
                    ),
                    Expr::F32(0.0),
                ),
            }],
        )],
    );
    let pack = for_(
        jp_pack,
        panels.clone(),
        LoopKind::Serial,
        vec![Stmt::If {
            cond: le(pj0.clone().add(c(t.nr)), c(n)),
            then: vec![pack_full],
            otherwise: vec![pack_edge],
        }],
    );

    // The micro-tile.
    let mb = kb.var("mb", DType::I64);
    let jp = kb.var("jp", DType::I64);
    let mt = kb.var("mt", DType::I64);
    let kk = kb.var("k", DType::I64);
    let mr = kb.var("mr", DType::I64);
    let jv = kb.var("jv", DType::I64);
    let jj = kb.var("jj", DType::I64);
    let m0 = Idx::var(mb)
        .mul(t.mc as i64)
        .add(Idx::var(mt).mul(t.mr as i64));
    let j0 = jb
        .clone()
        .mul(t.nc as i64)
        .add(Idx::var(jp).mul(t.nr as i64));
    let row = m0.clone().add(Idx::var(mr));
    let row_clamped = row.clone().min(c(m.saturating_sub(1)));
    let col = j0.clone().add(lane(jv, jj));
    let col_clamped = col.clone().min(c(n.saturating_sub(1)));
    let acc_at = vec![Idx::var(mr), lane(jv, jj)];
    let full = and(
        le(m0.clone().add(c(t.mr)), c(m)),
        le(j0.clone().add(c(t.nr)), c(n)),
    );
    let first = Cond::Idx {
        op: Cmp::Eq,
        a: Idx::var(kbv),
        b: c(0),
    };
    let last = Cond::Idx {
        op: Cmp::Eq,
        a: Idx::var(kbv),
        b: c(nkb - 1),
    };

    // `for mr { for jv { for jj (vector) { body } } }` over the whole tile.
    let tile = |body: Vec<Stmt>| {
        for_(
            mr,
            c(t.mr),
            LoopKind::Unrolled,
            vec![for_(
                jv,
                c(nv),
                LoopKind::Unrolled,
                vec![for_(jj, c(vw), vloop, body)],
            )],
        )
    };
    let set_acc = |value: Expr| Stmt::Store {
        buf: acc,
        index: acc_at.clone(),
        value,
    };
    let acc_val = Expr::load(acc, acc_at.clone());

    let (cbuf, cidx_full) = (spec.c)(bidx, row.clone(), col.clone());
    let (_, cidx_edge) = (spec.c)(bidx, row_clamped.clone(), col.clone());
    let init = Stmt::If {
        cond: first,
        then: vec![tile(vec![set_acc((spec.init)(
            bidx,
            row_clamped.clone(),
            col_clamped.clone(),
        ))])],
        otherwise: vec![Stmt::If {
            cond: full.clone(),
            then: vec![tile(vec![set_acc(Expr::load(cbuf, cidx_full.clone()))])],
            otherwise: vec![tile(vec![set_acc(Expr::LoadOr {
                buf: cbuf,
                index: cidx_edge,
                default: 0.0,
            })])],
        }],
    };
    let update = for_(
        kk,
        kc_ext.clone(),
        LoopKind::Serial,
        vec![tile(vec![set_acc(Expr::fma(
            (spec.a)(bidx, row_clamped.clone(), kglob(kk)),
            Expr::load(bp, vec![Idx::var(jp), Idx::var(kk), lane(jv, jj)]),
            acc_val.clone(),
        ))])],
    );
    let store_full = |value: Expr| {
        tile(vec![Stmt::Store {
            buf: cbuf,
            index: cidx_full.clone(),
            value,
        }])
    };
    // Edge tiles: scalar, every element guarded; `jv`/`jj` both unrolled so
    // that `acc` keeps constant indices.
    let ej = kb.var("ej", DType::I64);
    let ecol = j0.clone().add(Idx::var(ej));
    let eacc = Expr::load(acc, vec![Idx::var(mr), Idx::var(ej)]);
    let (_, cidx_guarded) = (spec.c)(bidx, row.clone(), ecol.clone());
    let store_edge = |value: Expr| {
        for_(
            mr,
            c(t.mr),
            LoopKind::Unrolled,
            vec![for_(
                ej,
                c(t.nr),
                LoopKind::Unrolled,
                vec![Stmt::If {
                    cond: and(lt(row.clone(), c(m)), lt(ecol.clone(), c(n))),
                    then: vec![Stmt::Store {
                        buf: cbuf,
                        index: cidx_guarded.clone(),
                        value,
                    }],
                    otherwise: vec![],
                }],
            )],
        )
    };
    let store = Stmt::If {
        cond: full,
        then: vec![Stmt::If {
            cond: last.clone(),
            then: vec![store_full((spec.epilogue)(
                bidx,
                row.clone(),
                col.clone(),
                acc_val.clone(),
            ))],
            otherwise: vec![store_full(acc_val.clone())],
        }],
        otherwise: vec![Stmt::If {
            cond: last,
            then: vec![store_edge((spec.epilogue)(
                bidx,
                row.clone(),
                ecol.clone(),
                eacc.clone(),
            ))],
            otherwise: vec![store_edge(eacc)],
        }],
    };

    let m_tiles = c(t.mc)
        .min(c(m).sub(Idx::var(mb).mul(t.mc as i64)))
        .add(c(t.mr - 1))
        .div(t.mr as i64);
    let compute = for_(
        mb,
        c(ceil_div(m, t.mc)),
        LoopKind::Serial,
        vec![for_(
            jp,
            panels,
            LoopKind::Serial,
            vec![for_(
                mt,
                m_tiles,
                LoopKind::Serial,
                vec![init, update, store],
            )],
        )],
    );
    let body = vec![for_(
        tv,
        c(batch_total * nb),
        if parallel {
            LoopKind::Parallel
        } else {
            LoopKind::Serial
        },
        vec![for_(kbv, c(nkb), LoopKind::Serial, vec![pack, compute])],
    )];

    let [am, an, ak] = spec.axes;
    let mut par: Vec<String> = spec.batch.iter().map(|(n, _)| n.to_string()).collect();
    par.push(format!("{an}/nc"));
    let par = par.join("*");
    let loop_order = vec![
        par.clone(),
        format!("{ak}/kc"),
        format!("{am}/mc"),
        format!("{an}/nr"),
        format!("{am}/mr"),
        ak.to_string(),
        "mr".to_string(),
        "nr".to_string(),
    ];
    let schedule = Schedule {
        tiles: t.schedule_tiles(),
        vector_width: vw as u32,
        loop_order,
        parallel_axis: parallel.then_some(par),
    };
    (body, schedule)
}
