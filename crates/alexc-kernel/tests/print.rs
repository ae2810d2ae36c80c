//! The text form, pinned by snapshots of representative kernels, and the
//! parenthesization rules on small expressions.

mod common;

use alexc_kernel::print::{cond_to_string, expr_to_string, idx_to_string};
use alexc_kernel::{to_text, verify, BinOp, Cmp, Cond, DType, Expr, Idx, UnOp, VarId};
use common::*;

#[test]
fn tiled_matmul_text() {
    insta::assert_snapshot!(to_text(&tiled_matmul(13, 10, 3, 4, 8, 8)));
}

#[test]
fn padded_max_pool_text() {
    insta::assert_snapshot!(to_text(&padded_max_pool([1, 2, 7, 7], 3, 2, 1)));
}

#[test]
fn guarded_conv_text() {
    insta::assert_snapshot!(to_text(&guarded_conv(2, 5, 3, 3, 1, 0)));
}

#[test]
fn verifier_errors_quote_the_text_form() {
    let errors = verify(&guarded_conv(2, 5, 3, 3, 1, 1)).expect_err("one past the edge");
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    insta::assert_snapshot!(text.join("\n"));
}

#[test]
fn parentheses_follow_the_tree() {
    let (a, b) = (Idx::Var(VarId(0)), Idx::Var(VarId(1)));
    assert_eq!(
        idx_to_string(&a.clone().add(b.clone()).mul(4)),
        "(v0 + v1) * 4"
    );
    assert_eq!(
        idx_to_string(&a.clone().mul(4).add(b.clone())),
        "v0 * 4 + v1"
    );
    assert_eq!(
        idx_to_string(&a.clone().sub(b.clone().add(1))),
        "v0 - (v1 + 1)"
    );
    assert_eq!(
        idx_to_string(&a.clone().sub(b.clone()).sub(1)),
        "v0 - v1 - 1"
    );
    assert_eq!(
        idx_to_string(&a.clone().mul(2).div(3).rem(5)),
        "v0 * 2 / 3 % 5"
    );
    assert_eq!(
        idx_to_string(&a.clone().add(-3).min(Idx::Const(7).sub(b))),
        "min(v0 + -3, 7 - v1)"
    );

    let x = Expr::Var(VarId(2));
    let y = Expr::Var(VarId(3));
    let sum = Expr::binary(BinOp::Add, x.clone(), y.clone());
    assert_eq!(
        expr_to_string(&Expr::binary(BinOp::Mul, sum.clone(), y.clone())),
        "(v2 + v3) * v3"
    );
    assert_eq!(
        expr_to_string(&Expr::binary(BinOp::Sub, x.clone(), sum.clone())),
        "v2 - (v2 + v3)"
    );
    assert_eq!(expr_to_string(&Expr::unary(UnOp::Neg, sum)), "-(v2 + v3)");
    assert_eq!(
        expr_to_string(&Expr::unary(UnOp::Neg, Expr::F32(-1.0))),
        "-(-1.0)"
    );
    assert_eq!(
        expr_to_string(&Expr::binary(BinOp::Pow, x.clone(), Expr::F32(0.75))),
        "pow(v2, 0.75)"
    );
    assert_eq!(
        expr_to_string(&Expr::unary(UnOp::Rsqrt, Expr::F32(1e-5))),
        "rsqrt(1e-5)"
    );
    assert_eq!(
        expr_to_string(&Expr::Cast {
            to: DType::F32,
            value: Box::new(Expr::Index(Idx::Var(VarId(0)).add(1)))
        }),
        "f32(v0 + 1)"
    );

    let lt = Cond::Idx {
        op: Cmp::Lt,
        a: Idx::Var(VarId(0)),
        b: Idx::Const(4),
    };
    let ge = Cond::Idx {
        op: Cmp::Ge,
        a: Idx::Var(VarId(0)),
        b: Idx::Const(0),
    };
    let or = Cond::Or(Box::new(lt.clone()), Box::new(ge.clone()));
    assert_eq!(
        cond_to_string(&Cond::And(Box::new(or.clone()), Box::new(ge))),
        "(v0 < 4 || v0 >= 0) && v0 >= 0"
    );
    assert_eq!(
        cond_to_string(&Cond::Not(Box::new(lt.clone()))),
        "!(v0 < 4)"
    );
    assert_eq!(
        cond_to_string(&Cond::Or(Box::new(lt), Box::new(Cond::Not(Box::new(or))))),
        "v0 < 4 || !(v0 < 4 || v0 >= 0)"
    );
    let relu = Expr::select(
        Cond::Expr {
            op: Cmp::Gt,
            a: x.clone(),
            b: Expr::F32(0.0),
        },
        x,
        Expr::F32(0.0),
    );
    assert_eq!(expr_to_string(&relu), "select(v2 > 0.0, v2, 0.0)");
    let _ = y;
}
