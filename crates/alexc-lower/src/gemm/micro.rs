//! The one GEMM loop nest every op of this module instantiates:
//! `C[m, j] = epilogue(init[m, j] + Σ_{r, k} A(r, m, k) · B(r, k, j))`,
//! repeated over independent batch indices, with GotoBLAS-style blocking.
//! `r` runs over the spec's *reduction batch* (the images of a weight
//! gradient): K is `reduce × k`, and k-blocks never straddle two `r`, so
//! that `A` and `B` stay affine in `k` (no `/ (OH·OW)` in the hot loop).
//!
//! ```text
//! for t in 0..items                     parallel: (split, batch, m-item, n-item)
//!   for r in the item's reduction range  (all of it unless split-K)
//!     for kb in 0..⌈K/KC⌉                 k-block
//!       pack Bp[jp, 0..kc, 0..NR] ← B(r, kb·KC + k, j)   (per-item packing)
//!       for mb, jp, mt:                   MC rows × NR columns × MR rows
//!         acc[MR, NR] ← first ? init : C                 (registers)
//!         for k in 0..kc: acc[mr, :] += A(r, m, k) · Bp[jp, k, :]
//!         C ← last ? epilogue(acc) : acc
//! ```
//!
//! # The register tile
//!
//! The micro-kernel always computes a full `MR × NR` tile: rows past `M`
//! read a clamped, valid row of A, columns past `N` were packed as zeros,
//! and only the loads and stores of C distinguish full tiles (vector code)
//! from edge tiles (guarded scalar code). All indices into `acc` are
//! constants after unrolling, so SROA keeps the tile in registers (12 × 2
//! zmm accumulators at 16 lanes). A is *not* packed: the ops hand over an
//! `A(m, k)` that is a plain load, contiguous in `k` (weights, or a
//! gradient staged by the op, see `gemm.rs`), and the 12 row streams are
//! broadcast straight from cache. `MR` is 12 (or 8 when 12 pads M by more
//! than a tenth: the 32-row GEMMs of linear-layer gradients at batch 32).
//!
//! # Packing and blocking
//!
//! B is packed panel by panel (`NR` columns, k inside), which keeps the
//! column-dependent index arithmetic of a gather (im2col's `p / OW`) out of
//! the k loop; B read in place from row-major memory (a weight, an input)
//! is packed row by row instead, which streams each row once
//! ([`GemmSpec::b_rows`]). `KC` is as deep as a `KC × NC` block of
//! [`B_BLOCK`] floats allows (256 at `NC` = 256 columns, up to
//! [`KC_CAP`] for one panel), then balanced over K: deep blocks are what
//! make a linear layer at batch 32 fast, where A (the weight) streams from
//! memory once in `KC`-float runs per row.
//!
//! # Work items (how the parallel loop is split)
//!
//! The runtime splits a parallel loop into one contiguous chunk per
//! thread, so a GEMM needs several items per thread to balance (at batch 1,
//! conv3's one N-block of 169 columns left one of two threads idle).
//! [`plan`] picks, in this order of preference:
//!
//! 1. **Per-item packing, N split** (the default): items are
//!    `batch × ⌈N/NC⌉`, each packs its own `KC × NC` block of B, so no
//!    packing is duplicated. `NC` is up to 8 panels and is lowered to 4
//!    panels if that yields [`TARGET_ITEMS`].
//! 2. **Split-K** (GEMMs with a reduction batch, i.e. weight gradients: M×N
//!    is small, K = images × pixels is huge): the reduction batch is cut
//!    into chunks, each item writes its partial `C` into a workspace
//!    `[split, batch, M, N]` (parallel iterations never write one element),
//!    and a second parallel loop sums the partials and applies
//!    `init`/`epilogue`. This beats shrinking `NC`, which would make every
//!    item re-read the whole of A (`M × images × pixels`).
//! 3. **Shared packing, M split**: a prologue (itself a parallel loop)
//!    packs all of B once into a workspace `[batch, panels, K, NR]`, and
//!    the items split M (as far as its tiles go) and then N without
//!    repacking B. This serves the batch-1 convolutions (one image, few
//!    columns) and linear layers at moderate batch (N = batch is one panel,
//!    M = out features).
//!
//! Without threads (`parallel: false`) the target is one item, which keeps
//! the plain per-item nest.
//!
//! # Bounds, for the verifier
//!
//! Indices that only need to be *valid* (not exact) are clamped with
//! `min(·, extent − 1)` — A's rows, the columns of edge panels of B — and
//! stores of edge tiles are guarded by `if`. Full tiles address
//! `min(row0, M − MR) + mr` and `min(j0, N − NR) + lane`: equal to the
//! plain index under the full-tile condition, provably in bounds by
//! interval arithmetic alone, and still affine (one vector access) in the
//! lane. The k index `kb·KC + k` needs no clamp: `k < min(KC, K − kb·KC)`
//! bounds it, and a clamp there kept LLVM from proving the hot loop
//! simple (it spilled accumulators: 63 instead of 85 GFLOP/s). The ops
//! build indices generically over item and batch indices that are often
//! constant; [`fold`] folds them before the kernel is finished.

use alexc_kernel::{
    Access, BinOp, BufId, Cmp, Cond, DType, Expr, Idx, KernelBuilder, LoopKind, Schedule, Stmt,
    VarId,
};

use crate::Arg;

/// Work items a parallel GEMM aims for: eight per thread on this 2-core
/// host, still two per thread at 8 threads, so contiguous static chunks
/// stay balanced within a few percent.
pub const TARGET_ITEMS: usize = 16;

/// Most and fewest NR-panels per per-item B block. 8 panels (256 columns at
/// 16 lanes, 256 KiB at KC = 256) fit L2 next to the A block; below 4, each
/// A block loaded into cache would serve too few columns.
const NCP_MAX: usize = 8;
const NCP_MIN: usize = 4;

/// Floats of B one item works on per k-block (`KC × NC`): 256 KiB, half
/// of L2 on the machines we tune for, next to the A block.
const B_BLOCK: usize = 64 << 10;

/// Least and most depth of a k-block. Deep blocks matter where A is
/// streamed from memory once (linear layers at batch 32: W's rows are
/// read `KC` floats at a time, and 256 floats per row left the prefetchers
/// behind, 49 vs 92 GFLOP/s on one core); shallow ones keep a wide B block
/// within [`B_BLOCK`].
const KC_MIN: usize = 256;
const KC_CAP: usize = 2048;

/// Largest shared B workspace (floats): 64 MiB.
const SHARED_MAX: usize = 16 << 20;

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
    /// Columns per B block and per work item (a multiple of `nr`).
    pub nc: usize,
    /// f32 lanes per vector.
    pub vw: usize,
}

/// Where the work items get their packed B from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    /// Each item packs the blocks of B it uses into a thread-local panel.
    PerItem,
    /// A prologue packs all of B into a workspace every item reads.
    Shared,
}

/// How one GEMM is blocked and split into parallel work items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub tiles: Tiles,
    pub packing: Packing,
    /// Rows of C per item: a multiple of `mr`, at least `M` unless M is split.
    pub m_item: usize,
    /// Chunks the reduction batch is split into (1: no split-K).
    pub k_split: usize,
}

/// A closure giving a value from the batch indices and two GEMM indices.
pub type Access2<'a> = &'a dyn Fn(&[Idx], Idx, Idx) -> Expr;

/// Where `C(m, j)` lives: its buffer and index.
pub type Place<'a> = &'a dyn Fn(&[Idx], Idx, Idx) -> (BufId, Vec<Idx>);

/// The epilogue: the accumulator's value at `(m, j)` to the stored value.
pub type Epilogue<'a> = &'a dyn Fn(&[Idx], Idx, Idx, Expr) -> Expr;

/// One GEMM: sizes, operand access and the epilogue, as closures over the
/// batch indices (decoded from the parallel loop) and the GEMM indices.
pub struct GemmSpec<'a> {
    /// Independent outer dimensions, outermost first (`n`, `g`).
    pub batch: Vec<(&'static str, usize)>,
    /// Outer reduction dimensions (the images of a weight gradient): the
    /// GEMM sums over them as well as over `k`.
    pub reduce: Vec<(&'static str, usize)>,
    pub m: usize,
    pub n: usize,
    /// The depth per reduction index.
    pub k: usize,
    /// Names of the m, n and k axes in the op's terms (for the schedule).
    pub axes: [&'static str; 3],
    /// `A(m, k)` from the batch then reduction indices; called with valid
    /// (clamped) indices in the innermost loop, so it must be a plain load
    /// that is contiguous (or at least cheap) in `k`.
    pub a: Access2<'a>,
    /// `B(k, j)` from the batch then reduction indices; valid indices. Any
    /// expression: it is evaluated once per element, when packing.
    pub b: Access2<'a>,
    /// Whether B's rows are contiguous in memory (a weight, an input read
    /// in place): packing then goes row by row, streaming each row once.
    /// Otherwise (im2col gathers) it goes panel by panel, which keeps the
    /// column-dependent index arithmetic out of the k loop.
    pub b_rows: bool,
    /// Where `C(m, j)` lives: the buffer and its index (its last index
    /// dimension must be exactly `j`'s, so a column past `N` is outside).
    pub c: Place<'a>,
    /// The accumulator's start value (bias or zero); valid indices.
    pub init: Access2<'a>,
    /// Applied to the finished sum before its final store.
    pub epilogue: Epilogue<'a>,
}

impl GemmSpec<'_> {
    fn batch_total(&self) -> usize {
        self.batch.iter().map(|(_, e)| *e).product()
    }

    fn reduce_total(&self) -> usize {
        self.reduce.iter().map(|(_, e)| *e).product()
    }
}

/// The loop nest of one GEMM, and the workspaces it needs (declared as the
/// kernel's last parameters, in this order).
pub struct Built {
    pub body: Vec<Stmt>,
    pub schedule: Schedule,
    pub workspaces: Vec<Arg>,
}

fn ceil_div(a: usize, b: usize) -> usize {
    a.div_ceil(b.max(1))
}

fn round_up(a: usize, b: usize) -> usize {
    ceil_div(a, b) * b.max(1)
}

pub(crate) fn c(v: usize) -> Idx {
    Idx::Const(v as i64)
}

pub(crate) fn le(a: Idx, b: Idx) -> Cond {
    Cond::Idx { op: Cmp::Le, a, b }
}

pub(crate) fn lt(a: Idx, b: Idx) -> Cond {
    Cond::Idx { op: Cmp::Lt, a, b }
}

fn eq(a: Idx, b: Idx) -> Cond {
    Cond::Idx { op: Cmp::Eq, a, b }
}

pub(crate) fn and(a: Cond, b: Cond) -> Cond {
    Cond::And(Box::new(a), Box::new(b))
}

pub(crate) fn for_(var: VarId, extent: Idx, kind: LoopKind, body: Vec<Stmt>) -> Stmt {
    Stmt::For {
        var,
        extent,
        kind,
        body,
    }
}

/// `x / d`, spelled without the division when `d` is 1.
pub(crate) fn div(x: Idx, d: usize) -> Idx {
    if d == 1 {
        x
    } else {
        x.div(d as i64)
    }
}

/// `x % e` (in `0..e`), spelled as 0 when `e` is 1.
pub(crate) fn rem(x: Idx, e: usize) -> Idx {
    if e <= 1 {
        c(0)
    } else {
        x.rem(e as i64)
    }
}

/// The indices of `dims` (outermost first) from their row-major flat
/// index, each reduced into its extent.
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

fn parallel_kind(parallel: bool) -> LoopKind {
    if parallel {
        LoopKind::Parallel
    } else {
        LoopKind::Serial
    }
}

/// Chooses tiles and the work split of `spec` (see the module docs).
pub fn plan(spec: &GemmSpec<'_>, vector_width: u32, parallel: bool) -> Plan {
    let vw = vector_width.max(1) as usize;
    let nr = 2 * vw;
    // 16 vector registers hold 6 × 2 accumulators + 2 B vectors + 1
    // broadcast; 32 registers (AVX-512) hold 12 × 2 + 3.
    // Two thirds of that when the full height would pad M by more than
    // a tenth (M = 32, a batch, is 36 rows of 12 but 32 of 8).
    let mr_max = if vw >= 16 { 12 } else { 6 };
    let mr_small = mr_max * 2 / 3;
    let mr = if 10 * round_up(spec.m, mr_max) > 11 * round_up(spec.m, mr_small) {
        mr_small
    } else {
        mr_max
    };
    let m_whole = round_up(spec.m.max(1), mr);
    let tiles = |ncp: usize, m_item: usize| {
        // As deep as the B block allows, then balanced: K = 363 is two
        // blocks of 182, not 256 + 107.
        let kc_max = (B_BLOCK / (ncp * nr)).clamp(KC_MIN, KC_CAP);
        Tiles {
            mr,
            nr,
            mc: (12 * mr).min(m_item),
            kc: ceil_div(spec.k, ceil_div(spec.k, kc_max).max(1)).max(1),
            nc: ncp * nr,
            vw,
        }
    };
    let panels = ceil_div(spec.n, nr).max(1);
    // The fewest panels per item that keeps the same number of items.
    let balanced = |ncp: usize| ceil_div(panels, ceil_div(panels, ncp));
    let n_items = |ncp: usize| ceil_div(panels, ncp);
    let bt = spec.batch_total().max(1);
    let rt = spec.reduce_total().max(1);
    let target = if parallel { TARGET_ITEMS } else { 1 };
    let per_item = |ncp: usize, k_split: usize| Plan {
        tiles: tiles(balanced(ncp), m_whole),
        packing: Packing::PerItem,
        m_item: m_whole,
        k_split,
    };

    let base = bt * n_items(NCP_MAX);
    if base >= target {
        return per_item(NCP_MAX, 1);
    }
    if rt > 1 {
        return per_item(NCP_MAX, rt.min(ceil_div(target, base)));
    }
    if let Some(ncp) = (NCP_MIN..NCP_MAX)
        .rev()
        .find(|&p| bt * n_items(p) >= target)
    {
        return per_item(ncp, 1);
    }
    let ncp = balanced(NCP_MAX);
    let shared = bt * n_items(ncp) * ncp * nr * spec.k;
    if shared > SHARED_MAX {
        return per_item(NCP_MIN, 1);
    }
    // Split M as far as its tiles allow, then N (down to one panel).
    let m_items = ceil_div(target, bt * n_items(ncp)).min(ceil_div(spec.m, mr).max(1));
    let m_item = round_up(ceil_div(spec.m, m_items), mr).max(mr);
    let mi_n = ceil_div(spec.m, m_item).max(1);
    let ncp = (1..=ncp)
        .rev()
        .find(|&p| bt * mi_n * n_items(p) >= target)
        .map_or(1, balanced);
    Plan {
        tiles: tiles(ncp, m_item),
        packing: Packing::Shared,
        m_item,
        k_split: 1,
    }
}

/// Where the micro-kernel reads packed B.
#[derive(Clone, Copy)]
enum BSource {
    /// The item's own panel `[NC/NR, KC, NR]`.
    Local(BufId),
    /// The shared workspace `[batch, panels, K, NR]`.
    Shared(BufId),
}

impl BSource {
    fn local(self) -> Option<BufId> {
        match self {
            BSource::Local(b) => Some(b),
            BSource::Shared(_) => None,
        }
    }
}

/// Packs `panels` NR-column panels of B starting at column `j_block`:
/// `dst(jp, k, lane) ← B(k, j_block + jp·NR + lane)` for `k` in `0..kext`,
/// zeros in the columns past `N`.
struct PanelPack<'s, 'a> {
    spec: &'s GemmSpec<'a>,
    tiles: Tiles,
    /// Batch then reduction indices.
    idx: &'s [Idx],
    /// The first panel's first column.
    j_block: Idx,
    /// How many panels.
    panels: Idx,
    /// Rows of the panels (the k-block's depth).
    kext: Idx,
    /// The (valid) k index of B for the panels' row `k`.
    kglob: &'s dyn Fn(Idx) -> Idx,
    /// Where element `(jp, k, lane)` goes.
    dst: &'s dyn Fn(Idx, Idx, Idx) -> (BufId, Vec<Idx>),
}

impl PanelPack<'_, '_> {
    fn build(&self, kb: &mut KernelBuilder) -> Stmt {
        let t = self.tiles;
        let n = self.spec.n;
        let (jp, pk, pjv, pjj) = (
            kb.var("jp", DType::I64),
            kb.var("pk", DType::I64),
            kb.var("pjv", DType::I64),
            kb.var("pjj", DType::I64),
        );
        let lane = Idx::var(pjv).mul(t.vw as i64).add(Idx::var(pjj));
        let j0 = self.j_block.clone().add(Idx::var(jp).mul(t.nr as i64));
        let k = (self.kglob)(Idx::var(pk));
        let (buf, index) = (self.dst)(Idx::var(jp), Idx::var(pk), lane.clone());
        // One row of one panel: `NR` lanes.
        let row = |first_col: Idx, value: &dyn Fn(Idx) -> Expr| {
            for_(
                pjv,
                c(t.nr / t.vw),
                LoopKind::Unrolled,
                vec![for_(
                    pjj,
                    c(t.vw),
                    LoopKind::Vectorized { width: t.vw as u32 },
                    vec![Stmt::Store {
                        buf,
                        index: index.clone(),
                        value: value(first_col.clone().add(lane.clone())),
                    }],
                )],
            )
        };
        let edge = row(j0.clone(), &|j| {
            Expr::select(
                lt(j.clone(), c(n)),
                (self.spec.b)(self.idx, k.clone(), j.min(c(n.saturating_sub(1)))),
                Expr::F32(0.0),
            )
        });
        let row = if n < t.nr {
            edge
        } else {
            // `min(j0, N − NR)` is `j0` in a full panel; the verifier sees
            // it bounded and the lane stays affine (one vector load if B is).
            let full = row(j0.clone().min(c(n - t.nr)), &|j| {
                (self.spec.b)(self.idx, k.clone(), j)
            });
            Stmt::If {
                cond: le(j0.clone().add(c(t.nr)), c(n)),
                then: vec![full],
                otherwise: vec![edge],
            }
        };
        let (outer, outer_ext, inner, inner_ext) = if self.spec.b_rows {
            (pk, self.kext.clone(), jp, self.panels.clone())
        } else {
            (jp, self.panels.clone(), pk, self.kext.clone())
        };
        for_(
            outer,
            outer_ext,
            LoopKind::Serial,
            vec![for_(inner, inner_ext, LoopKind::Serial, vec![row])],
        )
    }
}

/// Builds the GEMM's loop nest into `kb`: declares its locals and
/// workspaces, returns the body, the schedule and the workspace bindings.
pub fn build(kb: &mut KernelBuilder, spec: &GemmSpec<'_>, plan: &Plan, parallel: bool) -> Built {
    let Plan {
        tiles: t,
        packing,
        m_item,
        k_split,
    } = *plan;
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let (vw, mr_n, nr, kc, mc) = (t.vw, t.mr, t.nr, t.kc, t.mc);
    let nv = nr / vw;
    let vloop = LoopKind::Vectorized { width: vw as u32 };
    let ncp = t.nc / nr;
    let panels = ceil_div(n, nr).max(1);
    let nj = ceil_div(panels, ncp).max(1);
    let mi_n = ceil_div(m, m_item).max(1);
    let bt = spec.batch_total().max(1);
    let rt = spec.reduce_total().max(1);
    let rpc = ceil_div(rt, k_split.clamp(1, rt));
    let splits = ceil_div(rt, rpc);
    let nkb = ceil_div(k, kc).max(1);
    let mut workspaces = Vec::new();

    let acc = kb.local("acc", DType::F32, &[mr_n, nr]);
    let b_src = match packing {
        Packing::PerItem => BSource::Local(kb.local("b_packed", DType::F32, &[ncp, kc, nr])),
        Packing::Shared => {
            let dims = [bt, nj * ncp, k.max(1), nr];
            workspaces.push(Arg::Workspace {
                elements: dims.iter().product(),
            });
            BSource::Shared(kb.param("b_shared", DType::F32, &dims, Access::ReadWrite))
        }
    };
    let partial = (splits > 1).then(|| {
        let dims = [splits, bt, m, n];
        workspaces.push(Arg::Workspace {
            elements: dims.iter().product(),
        });
        kb.param("partial", DType::F32, &dims, Access::ReadWrite)
    });

    // The work item: (split, batch, m-item, n-item), n-item fastest.
    let tv = kb.var("t", DType::I64);
    let item = Idx::var(tv);
    let ji = rem(item.clone(), nj);
    let mi = rem(div(item.clone(), nj), mi_n);
    let bflat = rem(div(item.clone(), nj * mi_n), bt);
    let split = rem(div(item.clone(), nj * mi_n * bt), splits);
    let bidx = unflatten(&bflat, &spec.batch);
    let bidx = &bidx[..];

    // The item's share of the reduction batch.
    let rv = kb.var("r", DType::I64);
    let r_count = if splits > 1 {
        c(rpc).min(c(rt).sub(split.clone().mul(rpc as i64)))
    } else {
        c(rt)
    };
    let r_flat = if splits > 1 {
        split.clone().mul(rpc as i64).add(Idx::var(rv))
    } else {
        Idx::var(rv)
    };
    let mut idx = bidx.to_vec();
    idx.extend(unflatten(&r_flat, &spec.reduce));
    let idx = &idx[..];

    let kbv = kb.var("kb", DType::I64);
    let k0 = Idx::var(kbv).mul(kc as i64);
    let kc_ext = c(kc).min(c(k).sub(k0.clone()));
    // `kk < min(KC, K − k0)`, so `k0 + kk < K`: the verifier sees it, and
    // the hot loop needs no clamp.
    let kglob = |kk: Idx| k0.clone().add(kk);

    let col_item = ji.clone().mul(t.nc as i64);
    let panels_item = c(t.nc)
        .min(c(n).sub(col_item.clone()))
        .add(c(nr - 1))
        .div(nr as i64);
    let row_item = mi.clone().mul(m_item as i64);
    let rows_item = c(m_item).min(c(m).sub(row_item.clone()));

    // Packing of the item's B block (per-item packing only).
    let pack = b_src.local().map(|bp| {
        let dst = |jp: Idx, kk: Idx, lane: Idx| (bp, vec![jp, kk, lane]);
        PanelPack {
            spec,
            tiles: t,
            idx,
            j_block: col_item.clone(),
            panels: panels_item.clone(),
            kext: kc_ext.clone(),
            kglob: &kglob,
            dst: &dst,
        }
        .build(kb)
    });

    // The micro-tile.
    let mb = kb.var("mb", DType::I64);
    let jp = kb.var("jp", DType::I64);
    let mt = kb.var("mt", DType::I64);
    let kk = kb.var("k", DType::I64);
    let mr = kb.var("mr", DType::I64);
    let jv = kb.var("jv", DType::I64);
    let jj = kb.var("jj", DType::I64);
    let ej = kb.var("ej", DType::I64);
    let lane = Idx::var(jv).mul(vw as i64).add(Idx::var(jj));
    let row0 = row_item
        .clone()
        .add(Idx::var(mb).mul(mc as i64))
        .add(Idx::var(mt).mul(mr_n as i64));
    let j0 = col_item.clone().add(Idx::var(jp).mul(nr as i64));
    let row = row0.clone().add(Idx::var(mr));
    let row_clamped = row.clone().min(c(m.saturating_sub(1)));
    let col = j0.clone().add(lane.clone());
    let col_clamped = col.clone().min(c(n.saturating_sub(1)));
    // Full tiles: the same elements, spelled so that bounds are evident.
    let has_full = m >= mr_n && n >= nr;
    let row_full = row0
        .clone()
        .min(c(m.saturating_sub(mr_n)))
        .add(Idx::var(mr));
    let col_full = j0.clone().min(c(n.saturating_sub(nr))).add(lane.clone());
    let full = and(
        le(row0.clone().add(c(mr_n)), c(m)),
        le(j0.clone().add(c(nr)), c(n)),
    );
    // The first and last k-block of the item's sum.
    let has_r = !spec.reduce.is_empty();
    let mut first = eq(Idx::var(kbv), c(0));
    let mut last = eq(Idx::var(kbv), c(nkb - 1));
    if has_r {
        first = and(eq(Idx::var(rv), c(0)), first);
        last = and(eq(Idx::var(rv), r_count.clone().sub(c(1))), last);
    }

    // `for mr { for jv { for jj (vector) { body } } }` over the whole tile.
    let tile = |body: Vec<Stmt>| {
        for_(
            mr,
            c(mr_n),
            LoopKind::Unrolled,
            vec![for_(
                jv,
                c(nv),
                LoopKind::Unrolled,
                vec![for_(jj, c(vw), vloop, body)],
            )],
        )
    };
    let acc_at = vec![Idx::var(mr), lane.clone()];
    let set_acc = |value: Expr| Stmt::Store {
        buf: acc,
        index: acc_at.clone(),
        value,
    };
    let acc_val = Expr::load(acc, acc_at.clone());

    // Where the tile's sums go: C, or this split's partial sums.
    let place = |r: Idx, j: Idx| match partial {
        Some(p) => (p, vec![split.clone(), bflat.clone(), r, j]),
        None => (spec.c)(bidx, r, j),
    };
    let (cbuf, cidx_full) = place(row_full.clone(), col_full.clone());
    let (_, cidx_edge) = place(row_clamped.clone(), col.clone());
    let init_value = match partial {
        Some(_) => Expr::F32(0.0),
        None => (spec.init)(bidx, row_clamped.clone(), col_clamped.clone()),
    };
    let reload_edge = tile(vec![set_acc(Expr::LoadOr {
        buf: cbuf,
        index: cidx_edge,
        default: 0.0,
    })]);
    let reload = if has_full {
        Stmt::If {
            cond: full.clone(),
            then: vec![tile(vec![set_acc(Expr::load(cbuf, cidx_full.clone()))])],
            otherwise: vec![reload_edge],
        }
    } else {
        reload_edge
    };
    let init = Stmt::If {
        cond: first,
        then: vec![tile(vec![set_acc(init_value)])],
        otherwise: vec![reload],
    };

    let b_val = match b_src {
        BSource::Local(bp) => Expr::load(bp, vec![Idx::var(jp), Idx::var(kk), lane.clone()]),
        BSource::Shared(ws) => Expr::load(
            ws,
            vec![
                bflat.clone(),
                ji.clone().mul(ncp as i64).add(Idx::var(jp)),
                k0.clone().add(Idx::var(kk)),
                lane.clone(),
            ],
        ),
    };
    let update = for_(
        kk,
        kc_ext.clone(),
        LoopKind::Serial,
        vec![tile(vec![set_acc(Expr::fma(
            (spec.a)(idx, row_clamped.clone(), kglob(Idx::var(kk))),
            b_val,
            acc_val.clone(),
        ))])],
    );

    // Partial sums take no epilogue: the reduction applies it.
    let epilogue = |r: Idx, j: Idx, v: Expr| match partial {
        Some(_) => v,
        None => (spec.epilogue)(bidx, r, j, v),
    };
    let store_full = |value: Expr| {
        tile(vec![Stmt::Store {
            buf: cbuf,
            index: cidx_full.clone(),
            value,
        }])
    };
    // Edge tiles: scalar, every element guarded; `mr`/`ej` both unrolled so
    // that `acc` keeps constant indices.
    let ecol = j0.clone().add(Idx::var(ej));
    let eacc = Expr::load(acc, vec![Idx::var(mr), Idx::var(ej)]);
    let (_, cidx_guarded) = place(row.clone(), ecol.clone());
    let store_edge = |value: Expr| {
        for_(
            mr,
            c(mr_n),
            LoopKind::Unrolled,
            vec![for_(
                ej,
                c(nr),
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
    let finish = |store: &dyn Fn(Expr) -> Stmt, r: Idx, j: Idx, v: Expr| {
        if partial.is_some() {
            store(v)
        } else {
            Stmt::If {
                cond: last.clone(),
                then: vec![store(epilogue(r, j, v.clone()))],
                otherwise: vec![store(v)],
            }
        }
    };
    let edge = finish(&store_edge, row.clone(), ecol.clone(), eacc);
    let store = if has_full {
        Stmt::If {
            cond: full,
            then: vec![finish(
                &store_full,
                row_full.clone(),
                col_full.clone(),
                acc_val.clone(),
            )],
            otherwise: vec![edge],
        }
    } else {
        edge
    };

    let m_tiles = c(mc)
        .min(rows_item.clone().sub(Idx::var(mb).mul(mc as i64)))
        .add(c(mr_n - 1))
        .div(mr_n as i64);
    let compute = for_(
        mb,
        rows_item.add(c(mc - 1)).div(mc as i64),
        LoopKind::Serial,
        vec![for_(
            jp,
            panels_item,
            LoopKind::Serial,
            vec![for_(
                mt,
                m_tiles,
                LoopKind::Serial,
                vec![init, update, store],
            )],
        )],
    );
    let mut k_body: Vec<Stmt> = pack.into_iter().collect();
    k_body.push(compute);
    let mut item_body = vec![for_(kbv, c(nkb), LoopKind::Serial, k_body)];
    if has_r {
        item_body = vec![for_(rv, r_count, LoopKind::Serial, item_body)];
    }

    let items = splits * bt * mi_n * nj;
    let mut body = Vec::new();
    if let BSource::Shared(ws) = b_src {
        body.push(shared_prologue(kb, spec, &t, ws, parallel));
    }
    body.push(for_(tv, c(items), parallel_kind(parallel), item_body));
    if let Some(p) = partial {
        body.push(reduce_partials(kb, spec, &t, p, splits, parallel));
    }

    let schedule = schedule(spec, plan, splits, mi_n, parallel);
    Built {
        body,
        schedule,
        workspaces,
    }
}

/// Packs all of B into the shared workspace `ws[b, panel, k, lane]`, one
/// panel's `KC_MIN` rows per parallel iteration (enough iterations for the
/// threads even where the GEMM's own blocks are few and deep).
fn shared_prologue(
    kb: &mut KernelBuilder,
    spec: &GemmSpec<'_>,
    t: &Tiles,
    ws: BufId,
    parallel: bool,
) -> Stmt {
    let (n, k) = (spec.n, spec.k);
    let panels = ceil_div(n, t.nr).max(1);
    let depth = KC_MIN;
    let chunks = ceil_div(k, depth).max(1);
    let bt = spec.batch_total().max(1);
    let u = kb.var("u", DType::I64);
    let uu = Idx::var(u);
    let chunk = rem(uu.clone(), chunks);
    let panel = rem(div(uu.clone(), chunks), panels);
    let bflat = rem(div(uu, chunks * panels), bt);
    // Shared packing is planned only without a reduction batch to split
    // (at most one reduction index, 0).
    let mut idx = unflatten(&bflat, &spec.batch);
    idx.extend(spec.reduce.iter().map(|_| c(0)));
    let k0 = chunk.mul(depth as i64);
    let kg = |kk: Idx| k0.clone().add(kk);
    let dst = |_: Idx, kk: Idx, lane: Idx| {
        (
            ws,
            vec![bflat.clone(), panel.clone(), k0.clone().add(kk), lane],
        )
    };
    let pack = PanelPack {
        spec,
        tiles: *t,
        idx: &idx,
        j_block: panel.clone().mul(t.nr as i64),
        panels: c(1),
        kext: c(depth).min(c(k).sub(k0.clone())),
        kglob: &kg,
        dst: &dst,
    }
    .build(kb);
    for_(
        u,
        c(bt * panels * chunks),
        parallel_kind(parallel),
        vec![pack],
    )
}

/// `C = epilogue(init + Σ_s partial[s])`, one row of C per iteration.
fn reduce_partials(
    kb: &mut KernelBuilder,
    spec: &GemmSpec<'_>,
    t: &Tiles,
    partial: BufId,
    splits: usize,
    parallel: bool,
) -> Stmt {
    let (m, n) = (spec.m, spec.n);
    let bt = spec.batch_total().max(1);
    let u = kb.var("u", DType::I64);
    let j = kb.var("j", DType::I64);
    let uu = Idx::var(u);
    let row = rem(uu.clone(), m);
    let bflat = rem(div(uu, m), bt);
    let bidx = unflatten(&bflat, &spec.batch);
    let col = Idx::var(j);
    let mut sum = (spec.init)(&bidx, row.clone(), col.clone());
    for s in 0..splits {
        let part = Expr::load(partial, vec![c(s), bflat.clone(), row.clone(), col.clone()]);
        sum = Expr::binary(BinOp::Add, sum, part);
    }
    let (buf, index) = (spec.c)(&bidx, row.clone(), col.clone());
    let value = (spec.epilogue)(&bidx, row, col, sum);
    for_(
        u,
        c(bt * m),
        parallel_kind(parallel),
        vec![for_(
            j,
            c(n),
            LoopKind::Vectorized { width: t.vw as u32 },
            vec![Stmt::Store { buf, index, value }],
        )],
    )
}

fn schedule(
    spec: &GemmSpec<'_>,
    plan: &Plan,
    splits: usize,
    mi_n: usize,
    parallel: bool,
) -> Schedule {
    let t = plan.tiles;
    let [am, an, ak] = spec.axes;
    let reduce: Vec<&str> = spec.reduce.iter().map(|(n, _)| *n).collect();
    let mut par: Vec<String> = Vec::new();
    if splits > 1 {
        par.push(format!("{}/split", reduce.join("*")));
    }
    par.extend(spec.batch.iter().map(|(n, _)| n.to_string()));
    if mi_n > 1 {
        par.push(format!("{am}/mi"));
    }
    par.push(format!("{an}/nc"));
    let par = par.join("*");
    let mut loop_order = vec![par.clone()];
    loop_order.extend(reduce.iter().map(|r| r.to_string()));
    loop_order.extend([
        format!("{ak}/kc"),
        format!("{am}/mc"),
        format!("{an}/nr"),
        format!("{am}/mr"),
        ak.to_string(),
        "mr".to_string(),
        "nr".to_string(),
    ]);
    let mut tiles: Vec<(String, usize)> = [
        ("mr", t.mr),
        ("nr", t.nr),
        ("mc", t.mc),
        ("kc", t.kc),
        ("nc", t.nc),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect();
    if mi_n > 1 {
        tiles.push(("mi".to_string(), plan.m_item));
    }
    if splits > 1 {
        tiles.push(("split".to_string(), splits));
    }
    if plan.packing == Packing::Shared {
        tiles.push(("shared_b".to_string(), 1));
    }
    Schedule {
        tiles,
        vector_width: t.vw as u32,
        loop_order,
        parallel_axis: parallel.then_some(par),
    }
}

/// Folds constant index arithmetic in `body` (`0 · 256`, `x / 1`, `x % 1`,
/// `min(169, 192)`), exactly: the loop nests are built generically over
/// batch and item indices that are often constant, and the kernels should
/// print (and verify) as what they compute.
pub fn fold(body: Vec<Stmt>) -> Vec<Stmt> {
    body.into_iter().map(fold_stmt).collect()
}

fn fold_stmt(s: Stmt) -> Stmt {
    match s {
        Stmt::For {
            var,
            extent,
            kind,
            body,
        } => Stmt::For {
            var,
            extent: fold_idx(extent),
            kind,
            body: fold(body),
        },
        Stmt::Store { buf, index, value } => Stmt::Store {
            buf,
            index: index.into_iter().map(fold_idx).collect(),
            value: fold_expr(value),
        },
        Stmt::Let { var, value } => Stmt::Let {
            var,
            value: fold_expr(value),
        },
        Stmt::Assign { var, value } => Stmt::Assign {
            var,
            value: fold_expr(value),
        },
        Stmt::If {
            cond,
            then,
            otherwise,
        } => Stmt::If {
            cond: fold_cond(cond),
            then: fold(then),
            otherwise: fold(otherwise),
        },
    }
}

fn fold_expr(e: Expr) -> Expr {
    let b = |e: Box<Expr>| Box::new(fold_expr(*e));
    match e {
        Expr::F32(_) | Expr::Var(_) => e,
        Expr::Load { buf, index } => Expr::Load {
            buf,
            index: index.into_iter().map(fold_idx).collect(),
        },
        Expr::LoadOr {
            buf,
            index,
            default,
        } => Expr::LoadOr {
            buf,
            index: index.into_iter().map(fold_idx).collect(),
            default,
        },
        Expr::Index(i) => Expr::Index(fold_idx(i)),
        Expr::Cast { to, value } => Expr::Cast {
            to,
            value: b(value),
        },
        Expr::Binary { op, a, b: rhs } => Expr::Binary {
            op,
            a: b(a),
            b: b(rhs),
        },
        Expr::Unary { op, a } => Expr::Unary { op, a: b(a) },
        Expr::Fma { a, b: m, c } => Expr::Fma {
            a: b(a),
            b: b(m),
            c: b(c),
        },
        Expr::Select {
            cond,
            then,
            otherwise,
        } => Expr::Select {
            cond: Box::new(fold_cond(*cond)),
            then: b(then),
            otherwise: b(otherwise),
        },
    }
}

fn fold_cond(c: Cond) -> Cond {
    let b = |c: Box<Cond>| Box::new(fold_cond(*c));
    match c {
        Cond::Idx { op, a, b: rhs } => Cond::Idx {
            op,
            a: fold_idx(a),
            b: fold_idx(rhs),
        },
        Cond::Expr { op, a, b: rhs } => Cond::Expr {
            op,
            a: fold_expr(a),
            b: fold_expr(rhs),
        },
        Cond::And(x, y) => Cond::And(b(x), b(y)),
        Cond::Or(x, y) => Cond::Or(b(x), b(y)),
        Cond::Not(x) => Cond::Not(b(x)),
    }
}

fn fold_idx(i: Idx) -> Idx {
    use Idx::{Add, Const, Div, Max, Min, Mul, Rem, Sub};
    match i {
        Const(_) | Idx::Var(_) => i,
        Add(a, b) => match (fold_idx(*a), fold_idx(*b)) {
            (Const(x), Const(y)) => Const(x + y),
            (Const(0), y) => y,
            (x, Const(0)) => x,
            (x, y) => x.add(y),
        },
        Sub(a, b) => match (fold_idx(*a), fold_idx(*b)) {
            (Const(x), Const(y)) => Const(x - y),
            (x, Const(0)) => x,
            (x, y) => x.sub(y),
        },
        Mul(a, k) => match (fold_idx(*a), k) {
            (Const(x), k) => Const(x * k),
            (_, 0) => Const(0),
            (x, 1) => x,
            (x, k) => x.mul(k),
        },
        Div(a, k) => match (fold_idx(*a), k) {
            (Const(x), k) if k > 0 => Const(x.div_euclid(k)),
            (x, 1) => x,
            (x, k) => x.div(k),
        },
        Rem(a, k) => match (fold_idx(*a), k) {
            (Const(x), k) if k > 0 => Const(x.rem_euclid(k)),
            (_, 1) => Const(0),
            // `(x % k2) % k = x % k` when `k` divides `k2`.
            (Rem(x, k2), k) if k > 0 && k2 % k == 0 => x.rem(k),
            (x, k) => x.rem(k),
        },
        Min(a, b) => match (fold_idx(*a), fold_idx(*b)) {
            (Const(x), Const(y)) => Const(x.min(y)),
            (x, y) => x.min(y),
        },
        Max(a, b) => match (fold_idx(*a), fold_idx(*b)) {
            (Const(x), Const(y)) => Const(x.max(y)),
            (x, y) => x.max(y),
        },
    }
}
