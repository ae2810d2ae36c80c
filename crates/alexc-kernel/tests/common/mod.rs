//! Representative kernels, written the way the lowering writes them, for
//! the verifier, printer and evaluator tests.

#![allow(dead_code)]

use alexc_kernel::{
    Access, BufId, Cmp, Cond, DType, Expr, Idx, Kernel, KernelBuilder, LoopKind, Schedule, Stmt,
    VarId,
};

pub fn v(var: VarId) -> Idx {
    Idx::Var(var)
}

pub fn for_(var: VarId, extent: impl Into<Idx>, kind: LoopKind, body: Vec<Stmt>) -> Stmt {
    Stmt::For {
        var,
        extent: extent.into(),
        kind,
        body,
    }
}

pub fn serial(var: VarId, extent: impl Into<Idx>, body: Vec<Stmt>) -> Stmt {
    for_(var, extent, LoopKind::Serial, body)
}

pub fn store(buf: BufId, index: Vec<Idx>, value: Expr) -> Stmt {
    Stmt::Store { buf, index, value }
}

pub fn cmp(a: Idx, op: Cmp, b: impl Into<Idx>) -> Cond {
    Cond::Idx { op, a, b: b.into() }
}

pub fn and(a: Cond, b: Cond) -> Cond {
    Cond::And(Box::new(a), Box::new(b))
}

/// `c[m, n] = a[m, k] · b[k, n]`, tiled `tm × tn` with remainder tiles,
/// accumulated in a local tile, the inner loop vectorized.
pub fn tiled_matmul(m: usize, n: usize, k: usize, tm: usize, tn: usize, width: u32) -> Kernel {
    let mut kb = KernelBuilder::new("matmul");
    let a = kb.param("a", DType::F32, &[m, k], Access::Read);
    let b = kb.param("b", DType::F32, &[k, n], Access::Read);
    let c = kb.param("c", DType::F32, &[m, n], Access::Write);
    let acc = kb.local("acc", DType::F32, &[tm, tn]);
    let i0 = kb.var("m0", DType::I64);
    let j0 = kb.var("n0", DType::I64);
    let p = kb.var("k", DType::I64);
    let i = kb.var("m1", DType::I64);
    let j = kb.var("n1", DType::I64);
    let av = kb.var("a", DType::F32);
    let (tm_, tn_) = (tm as i64, tn as i64);
    let rows = Idx::Const(tm_).min(Idx::Const(m as i64).sub(v(i0).mul(tm_)));
    let cols = Idx::Const(tn_).min(Idx::Const(n as i64).sub(v(j0).mul(tn_)));
    let row = v(i0).mul(tm_).add(i);
    let col = v(j0).mul(tn_).add(j);
    let vec = LoopKind::Vectorized { width };
    let tile = vec![v(i), v(j)];
    let zero = serial(
        i,
        rows.clone(),
        vec![for_(
            j,
            cols.clone(),
            vec,
            vec![store(acc, tile.clone(), Expr::F32(0.0))],
        )],
    );
    let update = serial(
        p,
        k as i64,
        vec![serial(
            i,
            rows.clone(),
            vec![
                Stmt::Let {
                    var: av,
                    value: Expr::load(a, vec![row.clone(), v(p)]),
                },
                for_(
                    j,
                    cols.clone(),
                    vec,
                    vec![store(
                        acc,
                        tile.clone(),
                        Expr::fma(
                            Expr::Var(av),
                            Expr::load(b, vec![v(p), col.clone()]),
                            Expr::load(acc, tile.clone()),
                        ),
                    )],
                ),
            ],
        )],
    );
    let write = serial(
        i,
        rows,
        vec![for_(
            j,
            cols,
            vec,
            vec![store(c, vec![row, col], Expr::load(acc, tile))],
        )],
    );
    let ceil = |x: usize, t: usize| x.div_ceil(t) as i64;
    let body = vec![for_(
        i0,
        ceil(m, tm),
        LoopKind::Parallel,
        vec![serial(j0, ceil(n, tn), vec![zero, update, write])],
    )];
    kb.finish(
        body,
        Schedule {
            tiles: vec![("m".into(), tm), ("n".into(), tn)],
            vector_width: width,
            loop_order: vec!["m".into(), "n".into(), "k".into()],
            parallel_axis: Some("m".into()),
        },
    )
}

/// Max-pool `[n, c, h, w]` with a square window, stride and zero padding
/// read through `load_or` (padding never wins: its default is −∞).
pub fn padded_max_pool(shape: [usize; 4], window: usize, stride: usize, pad: usize) -> Kernel {
    let [n, c, h, w] = shape;
    let (oh, ow) = (
        (h + 2 * pad - window) / stride + 1,
        (w + 2 * pad - window) / stride + 1,
    );
    let mut kb = KernelBuilder::new("max_pool");
    let x = kb.param("x", DType::F32, &[n, c, h, w], Access::Read);
    let y = kb.param("y", DType::F32, &[n, c, oh, ow], Access::Write);
    let vn = kb.var("n", DType::I64);
    let vc = kb.var("c", DType::I64);
    let voh = kb.var("oh", DType::I64);
    let vow = kb.var("ow", DType::I64);
    let vkh = kb.var("kh", DType::I64);
    let vkw = kb.var("kw", DType::I64);
    let best = kb.var("max", DType::F32);
    let (s, p) = (stride as i64, pad as i64);
    let ih = v(voh).mul(s).add(vkh).sub(p);
    let iw = v(vow).mul(s).add(vkw).sub(p);
    let window_value = Expr::LoadOr {
        buf: x,
        index: vec![v(vn), v(vc), ih, iw],
        default: f32::NEG_INFINITY,
    };
    let body = vec![for_(
        vn,
        n as i64,
        LoopKind::Parallel,
        vec![serial(
            vc,
            c as i64,
            vec![serial(
                voh,
                oh as i64,
                vec![for_(
                    vow,
                    ow as i64,
                    LoopKind::Vectorized { width: 4 },
                    vec![
                        Stmt::Let {
                            var: best,
                            value: Expr::F32(f32::NEG_INFINITY),
                        },
                        for_(
                            vkh,
                            window as i64,
                            LoopKind::Unrolled,
                            vec![serial(
                                vkw,
                                window as i64,
                                vec![Stmt::Assign {
                                    var: best,
                                    value: Expr::binary(
                                        alexc_kernel::BinOp::Max,
                                        Expr::Var(best),
                                        window_value,
                                    ),
                                }],
                            )],
                        ),
                        store(y, vec![v(vn), v(vc), v(voh), v(vow)], Expr::Var(best)),
                    ],
                )],
            )],
        )],
    )];
    kb.finish(
        body,
        Schedule {
            vector_width: 4,
            parallel_axis: Some("n".into()),
            ..Schedule::default()
        },
    )
}

/// A single-image convolution with zero padding as an `if` guard around a
/// plain load (the form the verifier narrows ranges with). `bump` adds to
/// the guards' upper limits, so `bump = 1` makes a kernel that reads one
/// past the edge.
pub fn guarded_conv(
    ic: usize,
    hw: usize,
    oc: usize,
    kernel: usize,
    pad: usize,
    bump: i64,
) -> Kernel {
    let out = hw + 2 * pad - kernel + 1;
    let mut kb = KernelBuilder::new("conv");
    let x = kb.param("x", DType::F32, &[1, ic, hw, hw], Access::Read);
    let w = kb.param("w", DType::F32, &[oc, ic, kernel, kernel], Access::Read);
    let y = kb.param("y", DType::F32, &[1, oc, out, out], Access::Write);
    let [voc, voh, vow, vic, vkh, vkw] =
        ["oc", "oh", "ow", "ic", "kh", "kw"].map(|name| kb.var(name, DType::I64));
    let acc = kb.var("acc", DType::F32);
    let ih = v(voh).add(vkh).sub(pad as i64);
    let iw = v(vow).add(vkw).sub(pad as i64);
    let limit = hw as i64 + bump;
    let guard = and(
        and(
            cmp(Idx::Const(0), Cmp::Le, ih.clone()),
            cmp(ih.clone(), Cmp::Lt, limit),
        ),
        and(
            cmp(Idx::Const(0), Cmp::Le, iw.clone()),
            cmp(iw.clone(), Cmp::Lt, limit),
        ),
    );
    let mac = Stmt::Assign {
        var: acc,
        value: Expr::fma(
            Expr::load(x, vec![Idx::Const(0), v(vic), ih, iw]),
            Expr::load(w, vec![v(voc), v(vic), v(vkh), v(vkw)]),
            Expr::Var(acc),
        ),
    };
    let taps = serial(
        vic,
        ic as i64,
        vec![serial(
            vkh,
            kernel as i64,
            vec![serial(
                vkw,
                kernel as i64,
                vec![Stmt::If {
                    cond: guard,
                    then: vec![mac],
                    otherwise: vec![],
                }],
            )],
        )],
    );
    let body = vec![for_(
        voc,
        oc as i64,
        LoopKind::Parallel,
        vec![serial(
            voh,
            out as i64,
            vec![serial(
                vow,
                out as i64,
                vec![
                    Stmt::Let {
                        var: acc,
                        value: Expr::F32(0.0),
                    },
                    taps,
                    store(
                        y,
                        vec![Idx::Const(0), v(voc), v(voh), v(vow)],
                        Expr::Var(acc),
                    ),
                ],
            )],
        )],
    )];
    kb.finish(body, Schedule::default())
}
