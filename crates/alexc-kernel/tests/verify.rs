//! The verifier: it accepts the kernels lowering writes (remainder tiles,
//! guarded padding, `load_or` windows) and rejects each kind of mistake with
//! an error that points at it.

mod common;

use alexc_kernel::{
    eval, verify, Access, BinOp, Cmp, Cond, DType, Expr, HostBuffer, Idx, Kernel, KernelBuilder,
    LoopKind, Schedule, Stmt, VarId, VerifyError,
};
use common::*;

fn errors(kernel: &Kernel) -> Vec<VerifyError> {
    verify(kernel).expect_err("the verifier rejects the kernel")
}

/// `y[i] = x[index(i)]` for `i in 0..extent`, over `x: f32[len]`.
fn gather(len: usize, extent: impl Into<Idx>, index: impl Fn(Idx) -> Idx) -> Kernel {
    let mut k = KernelBuilder::new("gather");
    let x = k.param("x", DType::F32, &[len], Access::Read);
    let y = k.param("y", DType::F32, &[64], Access::Write);
    let i = k.var("i", DType::I64);
    let body = vec![serial(
        i,
        extent,
        vec![store(y, vec![v(i)], Expr::load(x, vec![index(v(i))]))],
    )];
    k.finish(body, Schedule::default())
}

#[test]
fn accepts_representative_kernels() {
    for (m, n, kk) in [(16, 16, 4), (13, 10, 3), (3, 5, 1)] {
        verify(&tiled_matmul(m, n, kk, 4, 8, 8)).expect("tiled matmul verifies");
    }
    verify(&padded_max_pool([1, 2, 7, 7], 3, 2, 1)).expect("max-pool verifies");
    verify(&guarded_conv(2, 5, 3, 3, 1, 0)).expect("guarded conv verifies");
}

#[test]
fn the_representative_kernels_compute_what_they_say() {
    // 3×2 · 2×3 through 2×2 tiles: remainder tiles in both dimensions.
    let k = tiled_matmul(3, 3, 2, 2, 2, 2);
    let a = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = vec![1.0, 0.0, 2.0, 0.0, 1.0, 3.0];
    let mut params = vec![
        HostBuffer::F32(a),
        HostBuffer::F32(b),
        HostBuffer::F32(vec![0.0; 9]),
    ];
    eval(&k, &mut params).expect("runs");
    assert_eq!(
        params[2],
        HostBuffer::F32(vec![1.0, 2.0, 8.0, 3.0, 4.0, 18.0, 5.0, 6.0, 28.0])
    );

    // 3×3 max-pool, stride 2, padding 1, over a 1×1×4×4 ramp.
    let k = padded_max_pool([1, 1, 4, 4], 3, 2, 1);
    let x: Vec<f32> = (0..16).map(|i| i as f32).collect();
    let mut params = vec![HostBuffer::F32(x), HostBuffer::F32(vec![0.0; 4])];
    eval(&k, &mut params).expect("runs");
    assert_eq!(params[1], HostBuffer::F32(vec![5.0, 7.0, 13.0, 15.0]));

    // A 3×3 box filter with padding 1 over ones counts the taps inside.
    let k = guarded_conv(1, 3, 1, 3, 1, 0);
    let mut params = vec![
        HostBuffer::F32(vec![1.0; 9]),
        HostBuffer::F32(vec![1.0; 9]),
        HostBuffer::F32(vec![0.0; 9]),
    ];
    eval(&k, &mut params).expect("runs");
    assert_eq!(
        params[2],
        HostBuffer::F32(vec![4.0, 6.0, 4.0, 6.0, 9.0, 6.0, 4.0, 6.0, 4.0])
    );
}

#[test]
fn rejects_out_of_bounds_by_one_with_the_interval() {
    verify(&gather(8, 8, |i| i)).expect("in bounds");
    let e = errors(&gather(8, 9, |i| i));
    assert_eq!(e.len(), 1, "{e:?}");
    match &e[0] {
        VerifyError::OutOfBounds {
            dim: 0,
            lo: Some(0),
            hi: Some(8),
            size: 8,
            index,
            ..
        } => assert_eq!(index, "v0"),
        other => panic!("unexpected {other:?}"),
    }
    let message = e[0].to_string();
    assert!(
        message.contains("b0[v0]") && message.contains("[0, 8]") && message.contains("0..8"),
        "{message}"
    );

    let e = errors(&gather(8, 8, |i| i.sub(1)));
    assert!(
        matches!(
            e[..],
            [VerifyError::OutOfBounds {
                lo: Some(-1),
                hi: Some(6),
                ..
            }]
        ),
        "{e:?}"
    );
}

#[test]
fn div_rem_min_max_are_bounded() {
    verify(&gather(4, 16, |i| i.div(4))).expect("i / 4 in 0..4");
    verify(&gather(3, 64, |i| i.rem(3))).expect("i % 3 in 0..3");
    verify(&gather(5, 64, |i| i.min(4))).expect("min(i, 4) ≤ 4");
    verify(&gather(5, 10, |i| Idx::Const(4).sub(i.min(4)))).expect("4 − min(i, 4) ≥ 0");
    verify(&gather(5, 10, |i| i.sub(3).max(0).min(4))).expect("clamp");
    assert!(verify(&gather(4, 17, |i| i.div(4))).is_err());
    assert!(verify(&gather(2, 64, |i| i.rem(3))).is_err());
    assert!(verify(&gather(5, 64, |i| i.max(4))).is_err());
}

#[test]
fn remainder_tiles_need_the_remainder_bound() {
    // for t in 0..3 { for j in 0..min(4, 10 − 4t) { x[4t + j] } }: proved
    // only through the `10 − 4t` arm of the extent.
    let tiled = |n: i64| {
        let mut k = KernelBuilder::new("tiles");
        let x = k.param("x", DType::F32, &[10], Access::Read);
        let y = k.param("y", DType::F32, &[10], Access::Write);
        let t = k.var("t", DType::I64);
        let j = k.var("j", DType::I64);
        let at = v(t).mul(4).add(j);
        let inner = for_(
            j,
            Idx::Const(4).min(Idx::Const(n).sub(v(t).mul(4))),
            LoopKind::Vectorized { width: 4 },
            vec![store(y, vec![at.clone()], Expr::load(x, vec![at]))],
        );
        k.finish(vec![serial(t, 3, vec![inner])], Schedule::default())
    };
    verify(&tiled(10)).expect("exact remainder");
    let e = errors(&tiled(11));
    // Both the load and the store reach element 10.
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e.iter()
            .all(|e| matches!(e, VerifyError::OutOfBounds { hi: Some(10), .. })),
        "{e:?}"
    );
}

#[test]
fn guards_narrow_padding_accesses() {
    verify(&guarded_conv(2, 5, 3, 3, 1, 0)).expect("guarded");
    // A guard one too lax: `ih < H + 1`.
    let e = errors(&guarded_conv(2, 5, 3, 3, 1, 1));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e.iter().all(|e| matches!(
            e,
            VerifyError::OutOfBounds {
                lo: Some(0),
                hi: Some(5),
                size: 5,
                ..
            }
        )),
        "{e:?}"
    );

    // The same access unguarded, and guarded only in the `else` branch.
    let pad = |guarded: bool, negate: bool| {
        let mut k = KernelBuilder::new("pad");
        let x = k.param("x", DType::F32, &[4], Access::Read);
        let y = k.param("y", DType::F32, &[6], Access::Write);
        let i = k.var("i", DType::I64);
        let at = v(i).sub(1);
        let read = store(y, vec![v(i)], Expr::load(x, vec![at.clone()]));
        let zero = store(y, vec![v(i)], Expr::F32(0.0));
        let inside = and(cmp(at.clone(), Cmp::Ge, 0), cmp(at, Cmp::Lt, 4));
        let stmt = match (guarded, negate) {
            (false, _) => read,
            (true, false) => Stmt::If {
                cond: inside,
                then: vec![read],
                otherwise: vec![zero],
            },
            (true, true) => Stmt::If {
                cond: Cond::Not(Box::new(inside)),
                then: vec![zero],
                otherwise: vec![read],
            },
        };
        k.finish(vec![serial(i, 6, vec![stmt])], Schedule::default())
    };
    verify(&pad(true, false)).expect("guarded in then");
    verify(&pad(true, true)).expect("guarded in else, through !(a && b)");
    let e = errors(&pad(false, false));
    assert!(
        matches!(
            e[..],
            [VerifyError::OutOfBounds {
                lo: Some(-1),
                hi: Some(4),
                ..
            }]
        ),
        "{e:?}"
    );
}

#[test]
fn select_conditions_do_not_narrow() {
    // select evaluates both sides, so its condition protects nothing.
    let mut k = KernelBuilder::new("select");
    let x = k.param("x", DType::F32, &[4], Access::Read);
    let y = k.param("y", DType::F32, &[5], Access::Write);
    let i = k.var("i", DType::I64);
    let value = Expr::select(
        cmp(v(i), Cmp::Lt, 4),
        Expr::load(x, vec![v(i)]),
        Expr::F32(0.0),
    );
    let k = k.finish(
        vec![serial(i, 5, vec![store(y, vec![v(i)], value)])],
        Schedule::default(),
    );
    assert!(matches!(
        errors(&k)[..],
        [VerifyError::OutOfBounds { hi: Some(4), .. }]
    ));
}

#[test]
fn load_or_is_exempt_from_bounds() {
    let mut k = KernelBuilder::new("load_or");
    let x = k.param("x", DType::F32, &[4], Access::Read);
    let y = k.param("y", DType::F32, &[8], Access::Write);
    let i = k.var("i", DType::I64);
    let value = Expr::LoadOr {
        buf: x,
        index: vec![v(i).sub(2)],
        default: 0.0,
    };
    let k = k.finish(
        vec![serial(i, 8, vec![store(y, vec![v(i)], value)])],
        Schedule::default(),
    );
    verify(&k).expect("load_or may read outside");
}

#[test]
fn rejects_access_mode_violations() {
    let mut k = KernelBuilder::new("modes");
    let x = k.param("x", DType::F32, &[1], Access::Read);
    let y = k.param("y", DType::F32, &[1], Access::Write);
    let zero = vec![Idx::Const(0)];
    let body = vec![store(x, zero.clone(), Expr::load(y, zero))];
    let e = errors(&k.finish(body, Schedule::default()));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e.iter().any(|e| matches!(e, VerifyError::Access { buf, message, .. } if *buf == x && message.contains("read-only"))));
    assert!(e.iter().any(|e| matches!(e, VerifyError::Access { buf, message, .. } if *buf == y && message.contains("write-only"))));
}

#[test]
fn rejects_undeclared_and_out_of_scope_variables() {
    let ghost = VarId(42);
    let e = errors(&gather(8, 8, |_| Idx::Var(ghost)));
    assert!(
        matches!(e[..], [VerifyError::UnknownVar { var, .. }] if var == ghost),
        "{e:?}"
    );

    // A loop variable after its loop; a scalar assigned before its let.
    let mut k = KernelBuilder::new("scope");
    let y = k.param("y", DType::F32, &[4], Access::Write);
    let i = k.var("i", DType::I64);
    let s = k.var("s", DType::F32);
    let body = vec![
        serial(i, 4, vec![]),
        store(y, vec![v(i)], Expr::F32(0.0)),
        Stmt::Assign {
            var: s,
            value: Expr::F32(1.0),
        },
        serial(
            i,
            4,
            vec![Stmt::Let {
                var: s,
                value: Expr::F32(0.0),
            }],
        ),
        // Out of scope again: the let was inside the loop body.
        store(y, vec![Idx::Const(0)], Expr::Var(s)),
    ];
    let e = errors(&k.finish(body, Schedule::default()));
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(matches!(e[0], VerifyError::OutOfScope { var, .. } if var == i));
    assert!(matches!(e[1], VerifyError::OutOfScope { var, .. } if var == s));
    assert!(matches!(e[2], VerifyError::OutOfScope { var, .. } if var == s));
}

#[test]
fn rejects_redeclaration_and_scalars_as_indices() {
    let mut k = KernelBuilder::new("redeclare");
    let y = k.param("y", DType::F32, &[4], Access::Write);
    let i = k.var("i", DType::I64);
    let n = k.var("n", DType::I64);
    let body = vec![
        Stmt::Let {
            var: n,
            value: Expr::Index(Idx::Const(1)),
        },
        serial(
            i,
            4,
            vec![
                serial(i, 4, vec![]),
                store(y, vec![Idx::Var(n)], Expr::F32(0.0)),
            ],
        ),
    ];
    let e = errors(&k.finish(body, Schedule::default()));
    assert!(
        e.iter()
            .any(|e| matches!(e, VerifyError::Redeclared { var, .. } if *var == i)),
        "{e:?}"
    );
    assert!(e.iter().any(|e| matches!(e, VerifyError::Type { message, .. } if message.contains("scalar variable"))), "{e:?}");
}

#[test]
fn rejects_type_errors() {
    let mut k = KernelBuilder::new("types");
    let x = k.param("x", DType::F32, &[4], Access::Read);
    let labels = k.param("labels", DType::I64, &[4], Access::Read);
    let y = k.param("y", DType::F32, &[4], Access::Write);
    let i = k.var("i", DType::I64);
    let f = k.var("f", DType::F32);
    let xi = Expr::load(x, vec![v(i)]);
    let li = Expr::load(labels, vec![v(i)]);
    let body = vec![serial(
        i,
        4,
        vec![
            // f32 + i64
            store(
                y,
                vec![v(i)],
                Expr::binary(BinOp::Add, xi.clone(), li.clone()),
            ),
            // an i64 value stored into f32
            store(y, vec![v(i)], li.clone()),
            // an f32 comparison with an i64
            Stmt::If {
                cond: Cond::Expr {
                    op: Cmp::Eq,
                    a: xi.clone(),
                    b: li.clone(),
                },
                then: vec![],
                otherwise: vec![],
            },
            // an i64 let into an f32 variable
            Stmt::Let {
                var: f,
                value: Expr::Index(v(i)),
            },
            // fine: a cast
            store(
                y,
                vec![v(i)],
                Expr::Cast {
                    to: DType::F32,
                    value: Box::new(li),
                },
            ),
        ],
    )];
    let e = errors(&k.finish(body, Schedule::default()));
    assert_eq!(e.len(), 4, "{e:?}");
    assert!(
        e.iter().all(|e| matches!(e, VerifyError::Type { .. })),
        "{e:?}"
    );
}

#[test]
fn rejects_bad_divisors_ranks_loops_and_buffers() {
    let e = errors(&gather(8, 8, |i| i.div(0)));
    assert!(
        e.iter()
            .any(|e| matches!(e, VerifyError::Divisor { k: 0, .. })),
        "{e:?}"
    );
    let e = errors(&gather(8, 8, |i| i.rem(-4)));
    assert!(
        e.iter()
            .any(|e| matches!(e, VerifyError::Divisor { k: -4, .. })),
        "{e:?}"
    );

    let mut k = KernelBuilder::new("misc");
    let y = k.param("y", DType::F32, &[4, 4], Access::Write);
    let i = k.var("i", DType::I64);
    let f = k.var("f", DType::F32);
    let body = vec![
        store(y, vec![Idx::Const(0)], Expr::F32(0.0)),
        for_(i, 4, LoopKind::Vectorized { width: 0 }, vec![]),
        for_(i, Idx::Const(4).min(8), LoopKind::Unrolled, vec![]),
        serial(f, 4, vec![]),
        store(alexc_kernel::BufId(9), vec![], Expr::F32(0.0)),
    ];
    let e = errors(&k.finish(body, Schedule::default()));
    assert!(
        matches!(
            e[0],
            VerifyError::Rank {
                rank: 2,
                found: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        matches!(&e[1], VerifyError::Loop { message, .. } if message.contains("width")),
        "{e:?}"
    );
    assert!(
        matches!(&e[2], VerifyError::Loop { message, .. } if message.contains("unrolled")),
        "{e:?}"
    );
    assert!(
        matches!(&e[3], VerifyError::Loop { message, .. } if message.contains("f32")),
        "{e:?}"
    );
    assert!(matches!(e[4], VerifyError::UnknownBuffer { .. }), "{e:?}");
    assert_eq!(e.len(), 5, "{e:?}");
}
