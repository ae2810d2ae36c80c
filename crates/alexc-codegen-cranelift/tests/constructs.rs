//! Differential tests of the constructs that are easy to get wrong: each
//! hand-built kernel is verified, JIT-compiled by the Cranelift backend and
//! compared with the reference evaluator (`alexc_kernel::eval`), bit for
//! bit unless a test says otherwise.

use alexc_codegen_cranelift::{clif_text, ArgError, BufferArg, CraneliftError, JitModule};
use alexc_kernel::{
    eval, Access, BinOp, BufId, Cmp, Cond, DType, Expr, HostBuffer, Idx, Kernel, KernelBuilder,
    LoopKind, Schedule, Stmt, UnOp, VarId,
};

fn v(var: VarId) -> Idx {
    Idx::Var(var)
}

fn k(c: i64) -> Idx {
    Idx::Const(c)
}

fn for_(var: VarId, extent: Idx, kind: LoopKind, body: Vec<Stmt>) -> Stmt {
    Stmt::For {
        var,
        extent,
        kind,
        body,
    }
}

fn store(buf: BufId, index: Vec<Idx>, value: Expr) -> Stmt {
    Stmt::Store { buf, index, value }
}

fn vec8() -> LoopKind {
    LoopKind::Vectorized { width: 8 }
}

/// Deterministic values in about `[-2, 2]`, none of them zero.
fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let x = ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0;
            if x == 0.0 {
                0.25
            } else {
                x
            }
        })
        .collect()
}

/// Runs `kernel` on copies of `inputs` with the evaluator and with the JIT;
/// returns (reference, native).
fn run_both(kernel: &Kernel, inputs: Vec<HostBuffer>) -> (Vec<HostBuffer>, Vec<HostBuffer>) {
    if let Err(errors) = alexc_kernel::verify(kernel) {
        panic!("{}: invalid test kernel: {errors:?}", kernel.name);
    }
    let mut reference = inputs.clone();
    eval(kernel, &mut reference).expect("evaluator");
    let jit = JitModule::new(std::slice::from_ref(kernel)).expect("compiles");
    let mut native = inputs;
    call(&jit, &mut native).expect("runs");
    (reference, native)
}

fn call(jit: &JitModule, buffers: &mut [HostBuffer]) -> Result<(), CraneliftError> {
    let mut args: Vec<BufferArg<'_>> = buffers
        .iter_mut()
        .map(|b| match b {
            HostBuffer::F32(v) => BufferArg::F32(v),
            HostBuffer::I64(v) => BufferArg::I64(v),
        })
        .collect();
    jit.call(0, &mut args)
}

/// Every element within `rel · max(1, |want|)`; NaN matches NaN.
fn assert_close(reference: &[HostBuffer], native: &[HostBuffer], rel: f32) {
    for (b, (want, got)) in reference.iter().zip(native).enumerate() {
        match (want, got) {
            (HostBuffer::F32(w), HostBuffer::F32(g)) => {
                for (i, (w, g)) in w.iter().zip(g).enumerate() {
                    let ok = (w.is_nan() && g.is_nan())
                        || if rel == 0.0 {
                            w.to_bits() == g.to_bits()
                        } else {
                            (w - g).abs() <= rel * w.abs().max(1.0)
                        };
                    assert!(ok, "buffer {b}, element {i}: got {g}, want {w}");
                }
            }
            (HostBuffer::I64(w), HostBuffer::I64(g)) => assert_eq!(w, g, "buffer {b}"),
            _ => panic!("buffer {b}: dtypes differ"),
        }
    }
}

#[test]
fn floor_div_rem_of_negative_indices() {
    // (i − 7) / 3, (i − 7) % 3 and (5 − 2i) / 4 over i in 0..n, computed
    // in a serial loop (dynamic values), a widened loop (per lane) and an
    // unrolled loop (folded at translation time).
    for n in [1usize, 5, 23] {
        let mut kb = KernelBuilder::new("divrem");
        let outs: Vec<BufId> = (0..9)
            .map(|j| kb.param(format!("o{j}"), DType::I64, &[n], Access::Write))
            .collect();
        let (i, j, u) = (
            kb.var("i", DType::I64),
            kb.var("j", DType::I64),
            kb.var("u", DType::I64),
        );
        let exprs = |x: VarId| {
            [
                v(x).sub(7).div(3),
                v(x).sub(7).rem(3),
                k(5).sub(v(x).mul(2)).div(4),
            ]
        };
        let nest = |x: VarId, kind: LoopKind, first: usize| {
            for_(
                x,
                k(n as i64),
                kind,
                exprs(x)
                    .into_iter()
                    .enumerate()
                    .map(|(e, idx)| store(outs[first + e], vec![v(x)], Expr::Index(idx)))
                    .collect(),
            )
        };
        let kernel = kb.finish(
            vec![
                nest(i, LoopKind::Serial, 0),
                nest(j, vec8(), 3),
                nest(u, LoopKind::Unrolled, 6),
            ],
            Schedule::default(),
        );
        let inputs = vec![HostBuffer::I64(vec![i64::MIN; n]); 9];
        let (reference, native) = run_both(&kernel, inputs);
        assert_close(&reference, &native, 0.0);
    }
}

#[test]
fn load_or_at_every_edge() {
    // out[i, j] = x[i − 1, j − 2] (0.5 outside) + x[i − 1, 9 − j] (−1
    // outside) over a frame two wider than x on every side, in a widened
    // loop (10 = two chunks + 2) and in a scalar loop; plus a read that is
    // outside at translation time.
    let (h, w) = (5usize, 6usize);
    let (oh, ow) = (h + 2, w + 4);
    let mut kb = KernelBuilder::new("load_or");
    let x = kb.param("x", DType::F32, &[h, w], Access::Read);
    let y = kb.param("y", DType::F32, &[oh, ow], Access::Write);
    let z = kb.param("z", DType::F32, &[oh, ow], Access::Write);
    let (i, j, i2, j2) = (
        kb.var("i", DType::I64),
        kb.var("j", DType::I64),
        kb.var("i2", DType::I64),
        kb.var("j2", DType::I64),
    );
    let value = |i: VarId, j: VarId| {
        Expr::binary(
            BinOp::Add,
            Expr::LoadOr {
                buf: x,
                index: vec![v(i).sub(1), v(j).sub(2)],
                default: 0.5,
            },
            Expr::binary(
                BinOp::Add,
                Expr::LoadOr {
                    buf: x,
                    index: vec![v(i).sub(1), k(9).sub(v(j))],
                    default: -1.0,
                },
                Expr::LoadOr {
                    buf: x,
                    index: vec![k(-1), k(0)],
                    default: 0.25,
                },
            ),
        )
    };
    let kernel = kb.finish(
        vec![
            for_(
                i,
                k(oh as i64),
                LoopKind::Serial,
                vec![for_(
                    j,
                    k(ow as i64),
                    vec8(),
                    vec![store(y, vec![v(i), v(j)], value(i, j))],
                )],
            ),
            for_(
                i2,
                k(oh as i64),
                LoopKind::Serial,
                vec![for_(
                    j2,
                    k(ow as i64),
                    LoopKind::Serial,
                    vec![store(z, vec![v(i2), v(j2)], value(i2, j2))],
                )],
            ),
        ],
        Schedule::default(),
    );
    let inputs = vec![
        HostBuffer::F32(data(h * w, 1)),
        HostBuffer::F32(vec![f32::NAN; oh * ow]),
        HostBuffer::F32(vec![f32::NAN; oh * ow]),
    ];
    let (reference, native) = run_both(&kernel, inputs);
    assert_close(&reference, &native, 0.0);
}

#[test]
fn parallel_loops_capture_variables_and_nest() {
    // s = 2·x[0] outside; parallel rows capture it and their row index;
    // a nested parallel loop over columns uses a local scratch buffer
    // indexed dynamically (kept in memory, one per thread) and a reduction
    // carried in a scalar variable.
    let (rows, cols, depth) = (9usize, 13usize, 7usize);
    let mut kb = KernelBuilder::new("par");
    let x = kb.param("x", DType::F32, &[rows, depth], Access::Read);
    let y = kb.param("y", DType::F32, &[rows, cols], Access::Write);
    let tmp = kb.local("tmp", DType::F32, &[4]);
    let (r, c, d, u) = (
        kb.var("r", DType::I64),
        kb.var("c", DType::I64),
        kb.var("d", DType::I64),
        kb.var("u", DType::I64),
    );
    let (s, t, acc) = (
        kb.var("s", DType::F32),
        kb.var("t", DType::F32),
        kb.var("acc", DType::F32),
    );
    let row_f = Expr::Cast {
        to: DType::F32,
        value: Box::new(Expr::Index(v(r))),
    };
    let body = vec![
        Stmt::Let {
            var: s,
            value: Expr::binary(BinOp::Mul, Expr::load(x, vec![k(0), k(0)]), Expr::F32(2.0)),
        },
        for_(
            r,
            k(rows as i64),
            LoopKind::Parallel,
            vec![
                Stmt::Let {
                    var: t,
                    value: Expr::binary(BinOp::Add, Expr::Var(s), row_f),
                },
                for_(
                    c,
                    k(cols as i64),
                    LoopKind::Parallel,
                    vec![
                        for_(
                            u,
                            k(4),
                            LoopKind::Serial,
                            vec![store(
                                tmp,
                                vec![v(u)],
                                Expr::binary(
                                    BinOp::Mul,
                                    Expr::Var(t),
                                    Expr::Cast {
                                        to: DType::F32,
                                        value: Box::new(Expr::Index(v(u).add(v(c)))),
                                    },
                                ),
                            )],
                        ),
                        Stmt::Let {
                            var: acc,
                            value: Expr::load(tmp, vec![v(c).rem(4)]),
                        },
                        for_(
                            d,
                            k(depth as i64),
                            LoopKind::Serial,
                            vec![Stmt::Assign {
                                var: acc,
                                value: Expr::fma(
                                    Expr::load(x, vec![v(r), v(d)]),
                                    Expr::Var(t),
                                    Expr::Var(acc),
                                ),
                            }],
                        ),
                        store(y, vec![v(r), v(c)], Expr::Var(acc)),
                    ],
                ),
            ],
        ),
    ];
    let kernel = kb.finish(body, Schedule::default());
    let inputs = vec![
        HostBuffer::F32(data(rows * depth, 2)),
        HostBuffer::F32(vec![f32::NAN; rows * cols]),
    ];
    let (reference, native) = run_both(&kernel, inputs);
    // `fma` is fused on hosts with FMA (as `mul_add` in the evaluator),
    // `fmul` + `fadd` elsewhere.
    assert_close(&reference, &native, 1e-5);
}

#[test]
fn widened_loops_with_remainders() {
    // For each extent: elementwise math with lane-varying selects, NaN
    // operands of max/min, an i64 lane value cast to f32, a stride-2
    // gather and scatter; and a loop whose extent is only known at run
    // time (min(n, 2 + 5·o)).
    for n in [1usize, 3, 4, 5, 8, 13, 33] {
        let mut kb = KernelBuilder::new("widened");
        let x = kb.param("x", DType::F32, &[n], Access::Read);
        let w = kb.param("w", DType::F32, &[n], Access::Read);
        let g = kb.param("g", DType::F32, &[2 * n], Access::Read);
        let y = kb.param("y", DType::F32, &[n], Access::Write);
        let m = kb.param("m", DType::F32, &[n], Access::Write);
        let sc = kb.param("sc", DType::F32, &[2 * n], Access::ReadWrite);
        let dyn_out = kb.param("d", DType::F32, &[3, n], Access::Write);
        let (i, o, e) = (
            kb.var("i", DType::I64),
            kb.var("o", DType::I64),
            kb.var("e", DType::I64),
        );
        let t = kb.var("t", DType::F32);
        let xi = || Expr::load(x, vec![v(i)]);
        let positive = Cond::Expr {
            op: Cmp::Gt,
            a: xi(),
            b: Expr::F32(0.0),
        };
        let math = Expr::select(
            positive,
            Expr::unary(UnOp::Exp, xi()),
            Expr::unary(
                UnOp::Log,
                Expr::binary(BinOp::Add, Expr::unary(UnOp::Abs, xi()), Expr::F32(1.0)),
            ),
        );
        let body = vec![
            for_(
                i,
                k(n as i64),
                vec8(),
                vec![
                    Stmt::Let {
                        var: t,
                        value: math,
                    },
                    Stmt::Assign {
                        var: t,
                        value: Expr::binary(
                            BinOp::Add,
                            Expr::Var(t),
                            Expr::binary(BinOp::Pow, Expr::unary(UnOp::Abs, xi()), Expr::F32(1.5)),
                        ),
                    },
                    store(
                        y,
                        vec![v(i)],
                        Expr::binary(
                            BinOp::Add,
                            Expr::Var(t),
                            Expr::Cast {
                                to: DType::F32,
                                value: Box::new(Expr::Index(v(i).mul(3).sub(4))),
                            },
                        ),
                    ),
                    store(
                        m,
                        vec![v(i)],
                        Expr::binary(
                            BinOp::Sub,
                            Expr::binary(BinOp::Max, xi(), Expr::load(w, vec![v(i)])),
                            Expr::binary(BinOp::Min, Expr::load(w, vec![v(i)]), xi()),
                        ),
                    ),
                    store(
                        sc,
                        vec![v(i).mul(2).add(1)],
                        Expr::unary(
                            UnOp::Rsqrt,
                            Expr::unary(UnOp::Abs, Expr::load(g, vec![v(i).mul(2)])),
                        ),
                    ),
                ],
            ),
            for_(
                o,
                k(3),
                LoopKind::Serial,
                vec![for_(
                    e,
                    k(n as i64).min(v(o).mul(5).add(2)),
                    vec8(),
                    vec![store(
                        dyn_out,
                        vec![v(o), v(e)],
                        Expr::fma(
                            Expr::load(x, vec![v(e)]),
                            Expr::Cast {
                                to: DType::F32,
                                value: Box::new(Expr::Index(v(o))),
                            },
                            Expr::unary(
                                UnOp::Sqrt,
                                Expr::unary(UnOp::Abs, Expr::load(w, vec![v(e)])),
                            ),
                        ),
                    )],
                )],
            ),
        ];
        let kernel = kb.finish(body, Schedule::default());
        let mut wv = data(n, 4);
        for (j, val) in wv.iter_mut().enumerate() {
            if j % 3 == 1 {
                *val = f32::NAN;
            }
        }
        let inputs = vec![
            HostBuffer::F32(data(n, 3)),
            HostBuffer::F32(wv),
            HostBuffer::F32(data(2 * n, 5)),
            HostBuffer::F32(vec![f32::NAN; n]),
            HostBuffer::F32(vec![f32::NAN; n]),
            HostBuffer::F32(vec![7.0; 2 * n]),
            HostBuffer::F32(vec![-3.0; 3 * n]),
        ];
        let (reference, native) = run_both(&kernel, inputs);
        assert_close(&reference, &native, 0.0);
    }
}

#[test]
fn uniform_operands_of_widened_loops() {
    // y[r, c] = x[r, c] · s[r] + t[r, 0] over widened columns: 37 columns
    // loop over chunks, and a second nest whose column extent min(C, 9·r)
    // is zero for r = 0 (the uniform loads are invariant in the chunk
    // loop, which Cranelift may hoist them out of).
    let (rows, cols) = (3usize, 37usize);
    let mut kb = KernelBuilder::new("uniform");
    let x = kb.param("x", DType::F32, &[rows, cols], Access::Read);
    let sc = kb.param("s", DType::F32, &[rows], Access::Read);
    let t = kb.param("t", DType::F32, &[rows, 2], Access::Read);
    let y = kb.param("y", DType::F32, &[rows, cols], Access::Write);
    let z = kb.param("z", DType::F32, &[rows, cols], Access::Write);
    let (r, c, r2, c2) = (
        kb.var("r", DType::I64),
        kb.var("c", DType::I64),
        kb.var("r2", DType::I64),
        kb.var("c2", DType::I64),
    );
    let value = |r: VarId, c: VarId| {
        Expr::fma(
            Expr::load(x, vec![v(r), v(c)]),
            Expr::load(sc, vec![v(r)]),
            Expr::load(t, vec![v(r), k(0)]),
        )
    };
    let kernel = kb.finish(
        vec![
            for_(
                r,
                k(rows as i64),
                LoopKind::Serial,
                vec![for_(
                    c,
                    k(cols as i64),
                    vec8(),
                    vec![store(y, vec![v(r), v(c)], value(r, c))],
                )],
            ),
            for_(
                r2,
                k(rows as i64),
                LoopKind::Serial,
                vec![for_(
                    c2,
                    k(cols as i64).min(v(r2).mul(9)),
                    vec8(),
                    vec![store(z, vec![v(r2), v(c2)], value(r2, c2))],
                )],
            ),
        ],
        Schedule::default(),
    );
    let inputs = vec![
        HostBuffer::F32(data(rows * cols, 8)),
        HostBuffer::F32(data(rows, 9)),
        HostBuffer::F32(data(rows * 2, 10)),
        HostBuffer::F32(vec![f32::NAN; rows * cols]),
        HostBuffer::F32(vec![f32::NAN; rows * cols]),
    ];
    let (reference, native) = run_both(&kernel, inputs);
    assert_close(&reference, &native, 1e-6);
}

/// `c[m, n] = Σ_k a[m, k] · b[k, n]` with a 2 × 8 register tile `acc`
/// (rows unrolled, columns widened) over full and edge tiles.
fn tiled_matmul(m: usize, n: usize, kd: usize) -> Kernel {
    let mut kb = KernelBuilder::new("tile");
    let a = kb.param("a", DType::F32, &[m, kd], Access::Read);
    let b = kb.param("b", DType::F32, &[kd, n], Access::Read);
    let c = kb.param("c", DType::F32, &[m, n], Access::Write);
    let acc = kb.local("acc", DType::F32, &[2, 8]);
    let (mt, nt, r, j, kk, r2, j2) = (
        kb.var("mt", DType::I64),
        kb.var("nt", DType::I64),
        kb.var("r", DType::I64),
        kb.var("j", DType::I64),
        kb.var("k", DType::I64),
        kb.var("r2", DType::I64),
        kb.var("j2", DType::I64),
    );
    let row = |r: VarId| v(mt).mul(2).add(v(r));
    let col = |j: VarId| v(nt).mul(8).add(v(j));
    let tile = |body: Vec<Stmt>| {
        for_(
            r,
            k(2),
            LoopKind::Unrolled,
            vec![for_(j, k(8), vec8(), body)],
        )
    };
    let clamp = |i: Idx, len: usize| i.min(k(len as i64 - 1));
    let body = vec![for_(
        mt,
        k(m.div_ceil(2) as i64),
        LoopKind::Parallel,
        vec![for_(
            nt,
            k(n.div_ceil(8) as i64),
            LoopKind::Serial,
            vec![
                tile(vec![store(acc, vec![v(r), v(j)], Expr::F32(0.0))]),
                for_(
                    kk,
                    k(kd as i64),
                    LoopKind::Serial,
                    vec![tile(vec![store(
                        acc,
                        vec![v(r), v(j)],
                        Expr::fma(
                            Expr::load(a, vec![clamp(row(r), m), v(kk)]),
                            Expr::LoadOr {
                                buf: b,
                                index: vec![v(kk), col(j)],
                                default: 0.0,
                            },
                            Expr::load(acc, vec![v(r), v(j)]),
                        ),
                    )])],
                ),
                for_(
                    r2,
                    k(2),
                    LoopKind::Unrolled,
                    vec![for_(
                        j2,
                        k(8),
                        LoopKind::Unrolled,
                        vec![Stmt::If {
                            cond: Cond::And(
                                Box::new(Cond::Idx {
                                    op: Cmp::Lt,
                                    a: row(r2),
                                    b: k(m as i64),
                                }),
                                Box::new(Cond::Idx {
                                    op: Cmp::Lt,
                                    a: col(j2),
                                    b: k(n as i64),
                                }),
                            ),
                            then: vec![store(
                                c,
                                vec![row(r2), col(j2)],
                                Expr::load(acc, vec![v(r2), v(j2)]),
                            )],
                            otherwise: vec![],
                        }],
                    )],
                ),
            ],
        )],
    )];
    kb.finish(body, Schedule::default())
}

#[test]
fn register_tile_is_promoted() {
    for (m, n, kd) in [(2, 8, 1), (5, 19, 7), (8, 32, 33)] {
        let kernel = tiled_matmul(m, n, kd);
        let inputs = vec![
            HostBuffer::F32(data(m * kd, 6)),
            HostBuffer::F32(data(kd * n, 7)),
            HostBuffer::F32(vec![f32::NAN; m * n]),
        ];
        let (reference, native) = run_both(&kernel, inputs);
        assert_close(&reference, &native, 1e-5);
    }
    // The tile lives in `f32x4` variables: no stack slot, vector FMAs.
    let text = clif_text(&[tiled_matmul(5, 19, 7)]).expect("translates");
    assert!(!text.contains("explicit_slot 64"), "{text}");
    assert!(text.contains("load.f32x4"), "{text}");
}

#[test]
fn clif_text_shows_the_outlined_body_and_calls() {
    let text = clif_text(&[tiled_matmul(5, 19, 7)]).expect("translates");
    // The entry function and one outlined parallel body.
    assert!(text.contains("function %tile(i64)"), "{text}");
    assert!(
        text.contains("function %tile.par0(i64, i64, i64)"),
        "{text}"
    );
    // `alexc_parallel_for` is external function 0.
    assert!(text.contains("u1:0"), "{text}");
    assert!(text.contains("func_addr.i64"), "{text}");
}

#[test]
fn bad_arguments_are_errors() {
    let kernel = tiled_matmul(2, 8, 1);
    let jit = JitModule::new(std::slice::from_ref(&kernel)).expect("compiles");
    let mut short = vec![HostBuffer::F32(vec![0.0; 2])];
    assert!(matches!(
        call(&jit, &mut short),
        Err(CraneliftError::BadCall(ArgError::Count {
            expected: 3,
            got: 1,
            ..
        }))
    ));
    let mut wrong = vec![
        HostBuffer::F32(vec![0.0; 2]),
        HostBuffer::F32(vec![0.0; 8]),
        HostBuffer::F32(vec![0.0; 15]),
    ];
    assert!(matches!(
        call(&jit, &mut wrong),
        Err(CraneliftError::BadCall(ArgError::Mismatch {
            index: 2,
            expected_len: 16,
            got_len: 15,
            ..
        }))
    ));
    let mut labels = vec![
        HostBuffer::F32(vec![0.0; 2]),
        HostBuffer::I64(vec![0; 8]),
        HostBuffer::F32(vec![0.0; 16]),
    ];
    assert!(matches!(
        call(&jit, &mut labels),
        Err(CraneliftError::BadCall(ArgError::Mismatch { index: 1, .. }))
    ));
    assert!(matches!(
        jit.call(1, &mut []),
        Err(CraneliftError::UnknownKernel(1))
    ));
}

#[test]
fn malformed_kernels_are_errors() {
    let mut kb = KernelBuilder::new("bad");
    let y = kb.param("y", DType::F32, &[4], Access::Write);
    let i = kb.var("i", DType::I64);
    let unbound = kb.var("nope", DType::I64);
    let kernel = kb.finish(
        vec![for_(
            i,
            k(4),
            LoopKind::Serial,
            vec![store(y, vec![v(unbound)], Expr::F32(1.0))],
        )],
        Schedule::default(),
    );
    assert!(matches!(
        JitModule::new(&[kernel]),
        Err(CraneliftError::UnknownVar { .. })
    ));
}
