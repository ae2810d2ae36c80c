//! The rendered Cranelift IR of a small kernel, pinned by a snapshot
//! (`INSTA_UPDATE=always cargo test -p alexc-codegen-cranelift --test clif`
//! re-blesses it): a parallel loop outlined into its own function, a
//! widened loop as two `f32x4` chunks plus a scalar remainder, `max`
//! against a constant without the NaN fix-up.

use alexc_codegen_cranelift::{render_clif, CallConv, EmitOptions};
use alexc_kernel::{Access, BinOp, DType, Expr, Idx, KernelBuilder, LoopKind, Schedule, Stmt};

#[test]
fn clif_snapshot_of_a_parallel_widened_kernel() {
    let mut kb = KernelBuilder::new("saxpy_relu");
    let x = kb.param("x", DType::F32, &[2, 10], Access::Read);
    let y = kb.param("y", DType::F32, &[2, 10], Access::ReadWrite);
    let (r, i) = (kb.var("r", DType::I64), kb.var("i", DType::I64));
    let at = || vec![Idx::Var(r), Idx::Var(i)];
    let body = vec![Stmt::For {
        var: r,
        extent: Idx::Const(2),
        kind: LoopKind::Parallel,
        body: vec![Stmt::For {
            var: i,
            extent: Idx::Const(10),
            kind: LoopKind::Vectorized { width: 8 },
            body: vec![Stmt::Store {
                buf: y,
                index: at(),
                value: Expr::binary(
                    BinOp::Max,
                    Expr::fma(Expr::F32(2.0), Expr::load(x, at()), Expr::load(y, at())),
                    Expr::F32(0.0),
                ),
            }],
        }],
    }];
    let kernel = kb.finish(body, Schedule::default());
    let options = EmitOptions {
        call_conv: CallConv::SystemV,
        fma: true,
    };
    let text = render_clif(&[kernel], &options).expect("translates");
    insta::assert_snapshot!("saxpy_relu", text);
}
