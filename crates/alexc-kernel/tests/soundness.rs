//! Property tests of the bounds proof against the evaluator: whenever the
//! verifier accepts a kernel, running it never leaves a buffer (soundness);
//! and for a single affine access in one loop, the verifier accepts exactly
//! the in-bounds cases (the proof is precise where it should be).

mod common;

use alexc_kernel::{
    eval, verify, Access, Cmp, Cond, DType, EvalError, Expr, HostBuffer, Idx, Kernel,
    KernelBuilder, LoopKind, Schedule, Stmt, VarId,
};
use common::*;
use proptest::prelude::*;

const MAX_DEPTH: u32 = 3;

/// An index expression over loop variables `v0..v{vars}` (occasionally
/// one out of scope, which the verifier must reject).
fn idx(vars: u32) -> impl Strategy<Value = Idx> + Clone {
    let leaf = prop_oneof![
        2 => (-3i64..8).prop_map(Idx::Const),
        5 => (0..vars).prop_map(|v| Idx::Var(VarId(v))),
        1 => Just(Idx::Var(VarId(MAX_DEPTH - 1))),
    ];
    leaf.prop_recursive(3, 16, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| a.add(b)),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| a.sub(b)),
            (inner.clone(), -2i64..4).prop_map(|(a, k)| a.mul(k)),
            (inner.clone(), 1i64..4).prop_map(|(a, k)| a.div(k)),
            (inner.clone(), 1i64..4).prop_map(|(a, k)| a.rem(k)),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| a.min(b)),
            (inner.clone(), inner).prop_map(|(a, b)| a.max(b)),
        ]
    })
}

fn cmp_op() -> impl Strategy<Value = Cmp> + Clone {
    prop_oneof![
        Just(Cmp::Lt),
        Just(Cmp::Le),
        Just(Cmp::Eq),
        Just(Cmp::Ne),
        Just(Cmp::Gt),
        Just(Cmp::Ge)
    ]
}

/// A guard: up to two index comparisons (mostly against constants, as
/// bounds guards are), possibly negated by being the `else` branch.
fn guard(vars: u32) -> impl Strategy<Value = Option<(Cond, bool)>> {
    let rhs = prop_oneof![2 => (-2i64..12).prop_map(Idx::Const), 1 => idx(vars)];
    let comparison = (idx(vars), cmp_op(), rhs).prop_map(|(a, op, b)| Cond::Idx { op, a, b });
    let cond = prop_oneof![
        comparison.clone(),
        (comparison.clone(), comparison.clone())
            .prop_map(|(a, b)| Cond::And(Box::new(a), Box::new(b))),
        (comparison.clone(), comparison).prop_map(|(a, b)| Cond::Or(Box::new(a), Box::new(b))),
    ];
    proptest::option::of((cond, any::<bool>()))
}

/// A loop extent: a constant, or a remainder tile `min(T, N − k·outer)`.
fn extent(outer: u32) -> BoxedStrategy<Idx> {
    let constant = (0i64..7).prop_map(Idx::Const);
    if outer == 0 {
        return constant.boxed();
    }
    prop_oneof![
        constant,
        (1i64..5, 0i64..12, 1i64..5, 0..outer).prop_map(
            |(t, n, k, v)| Idx::Const(t).min(Idx::Const(n).sub(Idx::Var(VarId(v)).mul(k)))
        ),
    ]
    .boxed()
}

/// A loop nest, an access inside it, a guard and a buffer size.
type Case = (Vec<Idx>, Idx, Option<(Cond, bool)>, usize);

fn case() -> impl Strategy<Value = Case> {
    (1..=MAX_DEPTH).prop_flat_map(|depth| {
        let extents: Vec<BoxedStrategy<Idx>> = (0..depth).map(extent).collect();
        (extents, idx(depth), guard(depth), 1usize..24)
    })
}

/// `for v0 … { for v1 … { [if guard] y[0] = x[index] } }` (the access in
/// the `then` or the `else` branch), over `x: f32[size]`.
fn kernel(
    extents: &[Idx],
    index: Idx,
    guard: Option<(Cond, bool)>,
    size: usize,
    store: bool,
) -> Kernel {
    let mut k = KernelBuilder::new("prop");
    let x = k.param("x", DType::F32, &[size], Access::ReadWrite);
    let y = k.param("y", DType::F32, &[1], Access::Write);
    let vars: Vec<VarId> = (0..MAX_DEPTH)
        .map(|i| k.var(format!("i{i}"), DType::I64))
        .collect();
    let access = if store {
        Stmt::Store {
            buf: x,
            index: vec![index],
            value: Expr::F32(1.0),
        }
    } else {
        Stmt::Store {
            buf: y,
            index: vec![Idx::Const(0)],
            value: Expr::load(x, vec![index]),
        }
    };
    let mut body = match guard {
        None => vec![access],
        Some((cond, true)) => vec![Stmt::If {
            cond,
            then: vec![access],
            otherwise: vec![],
        }],
        Some((cond, false)) => vec![Stmt::If {
            cond,
            then: vec![],
            otherwise: vec![access],
        }],
    };
    for (depth, extent) in extents.iter().enumerate().rev() {
        body = vec![for_(vars[depth], extent.clone(), LoopKind::Serial, body)];
    }
    k.finish(body, Schedule::default())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20000, ..ProptestConfig::default() })]

    #[test]
    fn accepted_accesses_stay_in_bounds((extents, index, guard, size) in case(), store in any::<bool>()) {
        let k = kernel(&extents, index, guard, size, store);
        if verify(&k).is_ok() {
            let mut params = vec![HostBuffer::F32(vec![0.0; size]), HostBuffer::F32(vec![0.0])];
            let result = eval(&k, &mut params);
            prop_assert!(
                !matches!(result, Err(EvalError::OutOfBounds { .. })),
                "accepted but out of bounds:\n{}{result:?}",
                alexc_kernel::to_text(&k)
            );
            prop_assert_eq!(result, Ok(()), "accepted but failed:\n{}", alexc_kernel::to_text(&k));
        }
    }

    #[test]
    fn one_affine_access_is_accepted_exactly_when_in_bounds(
        extent in 1i64..10,
        scale in -3i64..4,
        offset in -10i64..10,
        size in 1usize..20,
    ) {
        let index = Idx::Var(VarId(0)).mul(scale).add(offset);
        let k = kernel(&[Idx::Const(extent)], index, None, size, false);
        let values = (0..extent).map(|i| i * scale + offset);
        let in_bounds = values.clone().min().is_some_and(|lo| lo >= 0)
            && values.max().is_some_and(|hi| hi < size as i64);
        prop_assert_eq!(verify(&k).is_ok(), in_bounds, "{}", alexc_kernel::to_text(&k));
    }
}

/// The fraction of random kernels the verifier accepts, so that the
/// soundness property is known to exercise accepted kernels at all.
#[test]
fn the_generator_produces_accepted_kernels() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = case();
    let mut accepted = 0;
    for _ in 0..1000 {
        let (extents, index, guard, size) =
            strategy.new_tree(&mut runner).expect("value").current();
        accepted += usize::from(verify(&kernel(&extents, index, guard, size, false)).is_ok());
    }
    assert!(
        accepted >= 250,
        "only {accepted} of 1000 random kernels verify"
    );
}
