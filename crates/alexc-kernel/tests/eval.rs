//! The reference evaluator: each documented rule of the kernel IR's
//! semantics on a kernel small enough to check by hand, and each violation
//! reported as an error rather than a panic.

use alexc_kernel::{
    eval, Access, BinOp, BufId, Cmp, Cond, DType, EvalError, Expr, HostBuffer, Idx, Kernel,
    KernelBuilder, LoopKind, Schedule, Stmt, UnOp, VarId,
};

fn for_(var: VarId, extent: impl Into<Idx>, body: Vec<Stmt>) -> Stmt {
    Stmt::For {
        var,
        extent: extent.into(),
        kind: LoopKind::Serial,
        body,
    }
}

fn store(buf: BufId, index: Vec<Idx>, value: Expr) -> Stmt {
    Stmt::Store { buf, index, value }
}

fn idx(v: VarId) -> Idx {
    Idx::Var(v)
}

/// `y[i] = f(i)` for `i in 0..n` over an i64 output, with `f` an index
/// expression of `i`.
fn index_kernel(n: usize, f: impl Fn(Idx) -> Idx) -> Kernel {
    let mut k = KernelBuilder::new("index");
    let y = k.param("y", DType::I64, &[n], Access::Write);
    let i = k.var("i", DType::I64);
    let body = vec![for_(
        i,
        n as i64,
        vec![store(y, vec![idx(i)], Expr::Index(f(idx(i))))],
    )];
    k.finish(body, Schedule::default())
}

fn run_i64(kernel: &Kernel, n: usize) -> Vec<i64> {
    let mut params = vec![HostBuffer::I64(vec![0; n])];
    eval(kernel, &mut params).expect("kernel runs");
    params.remove(0).into_i64().expect("i64 output")
}

/// `y[i] = value(x[i])` over f32 buffers of length `n`.
fn map_kernel(n: usize, value: impl Fn(Expr) -> Expr) -> Kernel {
    let mut k = KernelBuilder::new("map");
    let x = k.param("x", DType::F32, &[n], Access::Read);
    let y = k.param("y", DType::F32, &[n], Access::Write);
    let i = k.var("i", DType::I64);
    let body = vec![for_(
        i,
        n as i64,
        vec![store(y, vec![idx(i)], value(Expr::load(x, vec![idx(i)])))],
    )];
    k.finish(body, Schedule::default())
}

fn run_map(kernel: &Kernel, x: &[f32]) -> Vec<f32> {
    let mut params = vec![
        HostBuffer::F32(x.to_vec()),
        HostBuffer::F32(vec![0.0; x.len()]),
    ];
    eval(kernel, &mut params).expect("kernel runs");
    params.remove(1).into_f32().expect("f32 output")
}

#[test]
fn div_and_rem_round_toward_negative_infinity() {
    // i − 7 for i in 0..14 covers negatives, zero and positives.
    let div = index_kernel(14, |i| i.sub(7).div(3));
    let rem = index_kernel(14, |i| i.sub(7).rem(3));
    let expected_div: Vec<i64> = (-7..7i64).map(|x| x.div_euclid(3)).collect();
    let expected_rem: Vec<i64> = (-7..7i64).map(|x| x.rem_euclid(3)).collect();
    assert_eq!(run_i64(&div, 14), expected_div);
    assert_eq!(run_i64(&rem, 14), expected_rem);
    assert_eq!(&expected_div[..3], &[-3, -2, -2]);
    assert_eq!(&expected_rem[..3], &[2, 0, 1]);
}

#[test]
fn min_max_mul_index_arithmetic() {
    let k = index_kernel(6, |i| i.clone().mul(3).sub(5).max(0).min(i.add(2)));
    let expected: Vec<i64> = (0..6i64).map(|i| (3 * i - 5).max(0).min(i + 2)).collect();
    assert_eq!(run_i64(&k, 6), expected);
}

#[test]
fn division_by_a_non_positive_constant_is_an_error() {
    let k = index_kernel(2, |i| i.div(0));
    let mut params = vec![HostBuffer::I64(vec![0; 2])];
    assert_eq!(eval(&k, &mut params), Err(EvalError::Divisor(0)));
    let k = index_kernel(2, |i| i.rem(-2));
    assert_eq!(eval(&k, &mut params), Err(EvalError::Divisor(-2)));
}

#[test]
fn index_overflow_is_an_error() {
    let k = index_kernel(2, |i| i.add(i64::MAX));
    let mut params = vec![HostBuffer::I64(vec![0; 2])];
    assert_eq!(eval(&k, &mut params), Err(EvalError::Overflow));
}

#[test]
fn load_or_yields_its_default_outside_the_buffer() {
    // y[i] = x[i − 1] or −1, for i in 0..5 over x of length 3: a 1-D
    // "padded" read on both sides.
    let mut k = KernelBuilder::new("pad");
    let x = k.param("x", DType::F32, &[3], Access::Read);
    let y = k.param("y", DType::F32, &[5], Access::Write);
    let i = k.var("i", DType::I64);
    let body = vec![for_(
        i,
        5,
        vec![store(
            y,
            vec![idx(i)],
            Expr::LoadOr {
                buf: x,
                index: vec![idx(i).sub(1)],
                default: -1.0,
            },
        )],
    )];
    let k = k.finish(body, Schedule::default());
    let mut params = vec![
        HostBuffer::F32(vec![10.0, 20.0, 30.0]),
        HostBuffer::F32(vec![0.0; 5]),
    ];
    eval(&k, &mut params).expect("runs");
    assert_eq!(
        params[1],
        HostBuffer::F32(vec![-1.0, 10.0, 20.0, 30.0, -1.0])
    );
}

#[test]
fn load_or_is_outside_per_dimension_not_per_offset() {
    // x[0, 3] of a [2, 3] buffer has offset 3 — inside the storage — but
    // is outside the shape, so it yields the default.
    let mut k = KernelBuilder::new("pad2d");
    let x = k.param("x", DType::F32, &[2, 3], Access::Read);
    let y = k.param("y", DType::F32, &[1], Access::Write);
    let load = Expr::LoadOr {
        buf: x,
        index: vec![Idx::Const(0), Idx::Const(3)],
        default: 7.0,
    };
    let k = k.finish(
        vec![store(y, vec![Idx::Const(0)], load)],
        Schedule::default(),
    );
    let mut params = vec![HostBuffer::F32(vec![1.0; 6]), HostBuffer::F32(vec![0.0])];
    eval(&k, &mut params).expect("runs");
    assert_eq!(params[1], HostBuffer::F32(vec![7.0]));
}

#[test]
fn select_picks_a_side_and_evaluates_both() {
    // ReLU as a select.
    let relu = map_kernel(4, |x| {
        Expr::select(
            Cond::Expr {
                op: Cmp::Gt,
                a: x.clone(),
                b: Expr::F32(0.0),
            },
            x,
            Expr::F32(0.0),
        )
    });
    assert_eq!(
        run_map(&relu, &[-1.0, 2.0, 0.0, 3.5]),
        vec![0.0, 2.0, 0.0, 3.5]
    );

    // The unselected side is still evaluated, so its out-of-bounds load is
    // an error even though the condition excludes it.
    let mut k = KernelBuilder::new("guarded");
    let x = k.param("x", DType::F32, &[2], Access::Read);
    let y = k.param("y", DType::F32, &[3], Access::Write);
    let i = k.var("i", DType::I64);
    let guard = Cond::Idx {
        op: Cmp::Lt,
        a: idx(i),
        b: Idx::Const(2),
    };
    let value = Expr::select(guard, Expr::load(x, vec![idx(i)]), Expr::F32(0.0));
    let k = k.finish(
        vec![for_(i, 3, vec![store(y, vec![idx(i)], value)])],
        Schedule::default(),
    );
    let mut params = vec![
        HostBuffer::F32(vec![1.0, 2.0]),
        HostBuffer::F32(vec![0.0; 3]),
    ];
    assert!(matches!(
        eval(&k, &mut params),
        Err(EvalError::OutOfBounds { .. })
    ));
}

#[test]
fn casts_truncate_toward_zero() {
    let mut k = KernelBuilder::new("cast");
    let x = k.param("x", DType::F32, &[5], Access::Read);
    let y = k.param("y", DType::I64, &[5], Access::Write);
    let z = k.param("z", DType::F32, &[5], Access::Write);
    let i = k.var("i", DType::I64);
    let as_int = Expr::Cast {
        to: DType::I64,
        value: Box::new(Expr::load(x, vec![idx(i)])),
    };
    let back = Expr::Cast {
        to: DType::F32,
        value: Box::new(Expr::Index(idx(i).mul(-1))),
    };
    let body = vec![for_(
        i,
        5,
        vec![store(y, vec![idx(i)], as_int), store(z, vec![idx(i)], back)],
    )];
    let k = k.finish(body, Schedule::default());
    let mut params = vec![
        HostBuffer::F32(vec![-2.7, -0.5, 0.0, 0.9, 3.99]),
        HostBuffer::I64(vec![0; 5]),
        HostBuffer::F32(vec![0.0; 5]),
    ];
    eval(&k, &mut params).expect("runs");
    assert_eq!(params[1], HostBuffer::I64(vec![-2, 0, 0, 0, 3]));
    assert_eq!(
        params[2],
        HostBuffer::F32(vec![0.0, -1.0, -2.0, -3.0, -4.0])
    );

    // NaN has no integer value.
    params[0] = HostBuffer::F32(vec![f32::NAN; 5]);
    assert!(matches!(eval(&k, &mut params), Err(EvalError::Cast(_))));
}

#[test]
fn fma_rounds_once() {
    // (1 + 2^-12)^2 − 1 = 2^-11 + 2^-24: rounding the product to f32 first
    // loses the 2^-24 that fma keeps.
    let a = 1.0f32 + 2f32.powi(-12);
    let fma = map_kernel(1, |x| Expr::fma(x.clone(), x, Expr::F32(-1.0)));
    let separate = map_kernel(1, |x| {
        Expr::binary(
            BinOp::Sub,
            Expr::binary(BinOp::Mul, x.clone(), x),
            Expr::F32(1.0),
        )
    });
    assert_eq!(run_map(&fma, &[a]), vec![a.mul_add(a, -1.0)]);
    assert_eq!(run_map(&separate, &[a]), vec![a * a - 1.0]);
    assert_ne!(a.mul_add(a, -1.0), a * a - 1.0);
}

#[test]
fn unary_and_binary_math_is_f32() {
    let x = [0.25f32, 1.0, 4.0, 9.0];
    type Reference = Box<dyn Fn(f32) -> f32>;
    let cases: Vec<(Kernel, Reference)> = vec![
        (
            map_kernel(4, |x| Expr::unary(UnOp::Rsqrt, x)),
            Box::new(|x: f32| 1.0 / x.sqrt()),
        ),
        (
            map_kernel(4, |x| Expr::unary(UnOp::Sqrt, x)),
            Box::new(f32::sqrt),
        ),
        (
            map_kernel(4, |x| Expr::unary(UnOp::Exp, x)),
            Box::new(f32::exp),
        ),
        (
            map_kernel(4, |x| Expr::unary(UnOp::Log, x)),
            Box::new(f32::ln),
        ),
        (
            map_kernel(4, |x| Expr::unary(UnOp::Neg, x)),
            Box::new(|x: f32| -x),
        ),
        (
            map_kernel(4, |x| Expr::unary(UnOp::Abs, Expr::unary(UnOp::Neg, x))),
            Box::new(f32::abs),
        ),
        (
            map_kernel(4, |x| Expr::binary(BinOp::Pow, x, Expr::F32(0.75))),
            Box::new(|x: f32| x.powf(0.75)),
        ),
        (
            map_kernel(4, |x| Expr::binary(BinOp::Div, Expr::F32(1.0), x)),
            Box::new(|x: f32| 1.0 / x),
        ),
        (
            map_kernel(4, |x| Expr::binary(BinOp::Max, x, Expr::F32(2.0))),
            Box::new(|x: f32| x.max(2.0)),
        ),
        (
            map_kernel(4, |x| Expr::binary(BinOp::Min, x, Expr::F32(2.0))),
            Box::new(|x: f32| x.min(2.0)),
        ),
    ];
    for (kernel, f) in cases {
        let expected: Vec<f32> = x.iter().map(|&v| f(v)).collect();
        assert_eq!(run_map(&kernel, &x), expected);
    }
}

/// A tiled copy with remainder tiles: `for t in 0..ceil(n/T) { for j in
/// 0..min(T, n − t·T) { y[t·T + j] = x[t·T + j] · 2 } }`.
#[test]
fn remainder_tiles_cover_every_element_once() {
    for (n, tile) in [(10usize, 4i64), (8, 4), (3, 8), (1, 1)] {
        let mut k = KernelBuilder::new("tiled");
        let x = k.param("x", DType::F32, &[n], Access::Read);
        let y = k.param("y", DType::F32, &[n], Access::ReadWrite);
        let t = k.var("t", DType::I64);
        let j = k.var("j", DType::I64);
        let at = idx(t).mul(tile).add(j);
        let extent = Idx::Const(tile).min(Idx::Const(n as i64).sub(idx(t).mul(tile)));
        // y += 2·x, so an element visited twice would show.
        let value = Expr::fma(
            Expr::load(x, vec![at.clone()]),
            Expr::F32(2.0),
            Expr::load(y, vec![at.clone()]),
        );
        let inner = Stmt::For {
            var: j,
            extent,
            kind: LoopKind::Vectorized { width: 4 },
            body: vec![store(y, vec![at], value)],
        };
        let tiles = (n as i64 + tile - 1) / tile;
        let body = vec![Stmt::For {
            var: t,
            extent: Idx::Const(tiles),
            kind: LoopKind::Parallel,
            body: vec![inner],
        }];
        let k = k.finish(body, Schedule::default());
        let xs: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut params = vec![HostBuffer::F32(xs.clone()), HostBuffer::F32(vec![1.0; n])];
        eval(&k, &mut params).expect("runs");
        let expected: Vec<f32> = xs.iter().map(|x| 2.0 * x + 1.0).collect();
        assert_eq!(
            params[1],
            HostBuffer::F32(expected),
            "n = {n}, tile = {tile}"
        );
    }
}

/// A dot product per row, accumulated in a scalar variable, and an argmax
/// with an i64 variable updated under a float comparison.
#[test]
fn scalar_variables_accumulate_and_go_out_of_scope() {
    let mut k = KernelBuilder::new("rows");
    let x = k.param("x", DType::F32, &[2, 3], Access::Read);
    let sum = k.param("sum", DType::F32, &[2], Access::Write);
    let arg = k.param("argmax", DType::I64, &[2], Access::Write);
    let (r, c) = (k.var("r", DType::I64), k.var("c", DType::I64));
    let (acc, best, best_at) = (
        k.var("acc", DType::F32),
        k.var("best", DType::F32),
        k.var("at", DType::I64),
    );
    let xv = Expr::load(x, vec![idx(r), idx(c)]);
    let body = vec![for_(
        r,
        2,
        vec![
            Stmt::Let {
                var: acc,
                value: Expr::F32(0.0),
            },
            Stmt::Let {
                var: best,
                value: Expr::F32(f32::NEG_INFINITY),
            },
            Stmt::Let {
                var: best_at,
                value: Expr::Index(Idx::Const(-1)),
            },
            for_(
                c,
                3,
                vec![
                    Stmt::Assign {
                        var: acc,
                        value: Expr::binary(BinOp::Add, Expr::Var(acc), xv.clone()),
                    },
                    Stmt::If {
                        cond: Cond::Expr {
                            op: Cmp::Gt,
                            a: xv.clone(),
                            b: Expr::Var(best),
                        },
                        then: vec![
                            Stmt::Assign {
                                var: best,
                                value: xv,
                            },
                            Stmt::Assign {
                                var: best_at,
                                value: Expr::Index(idx(c)),
                            },
                        ],
                        otherwise: vec![],
                    },
                ],
            ),
            store(sum, vec![idx(r)], Expr::Var(acc)),
            store(arg, vec![idx(r)], Expr::Var(best_at)),
        ],
    )];
    let k = k.finish(body, Schedule::default());
    let mut params = vec![
        HostBuffer::F32(vec![1.0, 5.0, 2.0, -1.0, -3.0, -0.5]),
        HostBuffer::F32(vec![0.0; 2]),
        HostBuffer::I64(vec![0; 2]),
    ];
    eval(&k, &mut params).expect("runs");
    assert_eq!(params[1], HostBuffer::F32(vec![8.0, -4.5]));
    assert_eq!(params[2], HostBuffer::I64(vec![1, 2]));
}

#[test]
fn a_local_tile_accumulates_a_matmul() {
    // c[2×2] = a[2×3] · b[3×2] through a local accumulator tile.
    let mut k = KernelBuilder::new("matmul");
    let a = k.param("a", DType::F32, &[2, 3], Access::Read);
    let b = k.param("b", DType::F32, &[3, 2], Access::Read);
    let c = k.param("c", DType::F32, &[2, 2], Access::Write);
    let acc = k.local("acc", DType::F32, &[2, 2]);
    let (i, j, p) = (
        k.var("i", DType::I64),
        k.var("j", DType::I64),
        k.var("k", DType::I64),
    );
    let ij = vec![idx(i), idx(j)];
    let body = vec![
        for_(
            i,
            2,
            vec![for_(j, 2, vec![store(acc, ij.clone(), Expr::F32(0.0))])],
        ),
        for_(
            p,
            3,
            vec![for_(
                i,
                2,
                vec![for_(
                    j,
                    2,
                    vec![store(
                        acc,
                        ij.clone(),
                        Expr::fma(
                            Expr::load(a, vec![idx(i), idx(p)]),
                            Expr::load(b, vec![idx(p), idx(j)]),
                            Expr::load(acc, ij.clone()),
                        ),
                    )],
                )],
            )],
        ),
        for_(
            i,
            2,
            vec![for_(
                j,
                2,
                vec![store(c, ij.clone(), Expr::load(acc, ij.clone()))],
            )],
        ),
    ];
    let k = k.finish(body, Schedule::default());
    let mut params = vec![
        HostBuffer::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        HostBuffer::F32(vec![7.0, 8.0, 9.0, 10.0, 11.0, 12.0]),
        HostBuffer::F32(vec![0.0; 4]),
    ];
    eval(&k, &mut params).expect("runs");
    assert_eq!(params[2], HostBuffer::F32(vec![58.0, 64.0, 139.0, 154.0]));
}

#[test]
fn parameters_are_checked_before_running() {
    let k = map_kernel(3, |x| x);
    let mut too_few = vec![HostBuffer::F32(vec![0.0; 3])];
    assert_eq!(
        eval(&k, &mut too_few),
        Err(EvalError::ParamCount {
            expected: 2,
            found: 1
        })
    );
    let mut wrong_len = vec![HostBuffer::F32(vec![0.0; 3]), HostBuffer::F32(vec![0.0; 4])];
    assert!(matches!(
        eval(&k, &mut wrong_len),
        Err(EvalError::ParamLength {
            expected: 3,
            found: 4,
            ..
        })
    ));
    let mut wrong_type = vec![HostBuffer::I64(vec![0; 3]), HostBuffer::F32(vec![0.0; 3])];
    assert!(matches!(
        eval(&k, &mut wrong_type),
        Err(EvalError::ParamDType {
            expected: DType::F32,
            found: DType::I64,
            ..
        })
    ));
}

#[test]
fn out_of_bounds_by_one_is_an_error() {
    let mut k = KernelBuilder::new("off_by_one");
    let x = k.param("x", DType::F32, &[4], Access::Read);
    let y = k.param("y", DType::F32, &[4], Access::Write);
    let i = k.var("i", DType::I64);
    let body = vec![for_(
        i,
        4,
        vec![store(y, vec![idx(i)], Expr::load(x, vec![idx(i).add(1)]))],
    )];
    let k = k.finish(body, Schedule::default());
    let mut params = vec![HostBuffer::F32(vec![0.0; 4]), HostBuffer::F32(vec![0.0; 4])];
    assert_eq!(
        eval(&k, &mut params),
        Err(EvalError::OutOfBounds {
            access: "load from",
            buf: x,
            index: vec![4],
            shape: vec![4]
        })
    );
}

#[test]
fn access_modes_are_enforced() {
    let mut k = KernelBuilder::new("bad_access");
    let x = k.param("x", DType::F32, &[1], Access::Read);
    let k1 = k.finish(
        vec![store(x, vec![Idx::Const(0)], Expr::F32(1.0))],
        Schedule::default(),
    );
    let mut params = vec![HostBuffer::F32(vec![0.0])];
    assert_eq!(
        eval(&k1, &mut params),
        Err(EvalError::StoreReadOnly { buf: x })
    );

    let mut k = KernelBuilder::new("read_write_only");
    let y = k.param("y", DType::F32, &[1], Access::Write);
    let k2 = k.finish(
        vec![store(
            y,
            vec![Idx::Const(0)],
            Expr::load(y, vec![Idx::Const(0)]),
        )],
        Schedule::default(),
    );
    assert_eq!(
        eval(&k2, &mut params),
        Err(EvalError::LoadWriteOnly { buf: y })
    );
}

#[test]
fn type_errors_are_errors() {
    // f32 arithmetic on an i64 value.
    let k = map_kernel(1, |x| {
        Expr::binary(BinOp::Add, x, Expr::Index(Idx::Const(1)))
    });
    let mut params = vec![HostBuffer::F32(vec![0.0]), HostBuffer::F32(vec![0.0])];
    assert!(matches!(eval(&k, &mut params), Err(EvalError::Type(_))));
    // Storing an i64 into an f32 buffer.
    let k = map_kernel(1, |_| Expr::Index(Idx::Const(1)));
    assert!(matches!(eval(&k, &mut params), Err(EvalError::Type(_))));
    // Comparing f32 with i64.
    let k = map_kernel(1, |x| {
        Expr::select(
            Cond::Expr {
                op: Cmp::Lt,
                a: x.clone(),
                b: Expr::Index(Idx::Const(0)),
            },
            x.clone(),
            x,
        )
    });
    assert!(matches!(eval(&k, &mut params), Err(EvalError::Type(_))));
}

#[test]
fn variables_must_be_declared_and_in_scope() {
    // An undeclared variable.
    let ghost = VarId(99);
    let k = map_kernel(1, |_| Expr::Var(ghost));
    let mut params = vec![HostBuffer::F32(vec![0.0]), HostBuffer::F32(vec![0.0])];
    assert_eq!(eval(&k, &mut params), Err(EvalError::UnknownVar(ghost)));

    // A loop variable used after its loop.
    let mut k = KernelBuilder::new("escape");
    let y = k.param("y", DType::F32, &[2], Access::Write);
    let i = k.var("i", DType::I64);
    let body = vec![for_(i, 2, vec![]), store(y, vec![idx(i)], Expr::F32(0.0))];
    let k = k.finish(body, Schedule::default());
    let mut params = vec![HostBuffer::F32(vec![0.0; 2])];
    assert_eq!(eval(&k, &mut params), Err(EvalError::Unbound(i)));

    // A scalar variable assigned before its `let`.
    let mut k = KernelBuilder::new("early");
    let s = k.var("s", DType::F32);
    let body = vec![
        Stmt::Assign {
            var: s,
            value: Expr::F32(1.0),
        },
        Stmt::Let {
            var: s,
            value: Expr::F32(0.0),
        },
    ];
    let k = k.finish(body, Schedule::default());
    assert_eq!(eval(&k, &mut []), Err(EvalError::Unbound(s)));
}

#[test]
fn reading_an_unwritten_local_is_an_error() {
    let mut k = KernelBuilder::new("uninit");
    let y = k.param("y", DType::F32, &[2], Access::Write);
    let t = k.local("t", DType::F32, &[2]);
    let i = k.var("i", DType::I64);
    let body = vec![
        store(t, vec![Idx::Const(0)], Expr::F32(1.0)),
        for_(
            i,
            2,
            vec![store(y, vec![idx(i)], Expr::load(t, vec![idx(i)]))],
        ),
    ];
    let k = k.finish(body, Schedule::default());
    let mut params = vec![HostBuffer::F32(vec![0.0; 2])];
    assert_eq!(
        eval(&k, &mut params),
        Err(EvalError::Uninitialized {
            buf: t,
            index: vec![1]
        })
    );
}

#[test]
fn parallel_iterations_do_not_share_locals() {
    // Iteration 0 writes the local, iteration 1 reads it: on a backend the
    // two run on different threads with different copies.
    let mut k = KernelBuilder::new("leak");
    let y = k.param("y", DType::F32, &[2], Access::Write);
    let t = k.local("t", DType::F32, &[1]);
    let i = k.var("i", DType::I64);
    let first = Cond::Idx {
        op: Cmp::Eq,
        a: idx(i),
        b: Idx::Const(0),
    };
    let body = vec![Stmt::For {
        var: i,
        extent: Idx::Const(2),
        kind: LoopKind::Parallel,
        body: vec![
            Stmt::If {
                cond: first,
                then: vec![store(t, vec![Idx::Const(0)], Expr::F32(1.0))],
                otherwise: vec![],
            },
            store(y, vec![idx(i)], Expr::load(t, vec![Idx::Const(0)])),
        ],
    }];
    let k = k.finish(body, Schedule::default());
    let mut params = vec![HostBuffer::F32(vec![0.0; 2])];
    assert_eq!(
        eval(&k, &mut params),
        Err(EvalError::Uninitialized {
            buf: t,
            index: vec![0]
        })
    );
}
