//! Differential tests: hand-built kernels JIT-compiled by the LLVM backend
//! and compared with the reference evaluator (`alexc_kernel::eval`), plus
//! the generated-code checks (IR snapshot, vector FMA in the asm) and the
//! argument checks of `JitModule::call`.

mod common;

use alexc_kernel::{
    Access, BinOp, Cmp, Cond, DType, Expr, HostBuffer, Idx, KernelBuilder, LoopKind, Schedule,
    Stmt, UnOp,
};
use alexc_llvm::{asm_text, llvm_ir_text, ArgError, BufferArg, JitModule, LlvmError, Target};
use common::{assert_close, data, eq, for_, k, run_both, v};

#[test]
fn elementwise_vectorized_with_remainder() {
    for n in [1usize, 15, 16, 1003] {
        let kernel = common::elementwise(n);
        let inputs = vec![
            HostBuffer::F32(data(n, 1)),
            HostBuffer::F32(data(n, 2)),
            HostBuffer::F32(data(n, 3)),
            HostBuffer::F32(vec![f32::NAN; n]),
        ];
        let (reference, native) = run_both(&kernel, inputs);
        // Fma is fused in both: exact.
        assert_close(&reference, &native, 0.0);
    }
}

#[test]
fn tiled_matmul_with_local_accumulator() {
    // Exact tiles (unrolled rows) and remainder tiles (min extents), serial
    // and parallel.
    for (m, n, kd, parallel) in [(36, 48, 29, false), (37, 45, 29, true), (8, 64, 3, true)] {
        let kernel = common::matmul(m, n, kd, 4, 16, 16, parallel);
        let inputs = vec![
            HostBuffer::F32(data(m * kd, 4)),
            HostBuffer::F32(data(kd * n, 5)),
            HostBuffer::F32(vec![0.0; m * n]),
        ];
        let (reference, native) = run_both(&kernel, inputs);
        assert_close(&reference, &native, 1e-6);
    }
}

#[test]
fn padded_max_pool_with_load_or() {
    // 3×3 window, stride 2, padding 1: out[c, oh, ow] over in[c, 7, 7].
    let (ch, h, w, oh_n, ow_n) = (3usize, 7usize, 7usize, 4usize, 4usize);
    let mut kb = KernelBuilder::new("max_pool");
    let input = kb.param("x", DType::F32, &[ch, h, w], Access::Read);
    let out = kb.param("y", DType::F32, &[ch, oh_n, ow_n], Access::Write);
    let c = kb.var("c", DType::I64);
    let oh = kb.var("oh", DType::I64);
    let ow = kb.var("ow", DType::I64);
    let kh = kb.var("kh", DType::I64);
    let kw = kb.var("kw", DType::I64);
    let m = kb.var("m", DType::F32);
    let window = Expr::LoadOr {
        buf: input,
        index: vec![
            v(c),
            v(oh).mul(2).add(v(kh)).sub(1),
            v(ow).mul(2).add(v(kw)).sub(1),
        ],
        default: f32::NEG_INFINITY,
    };
    let body = vec![for_(
        c,
        k(ch as i64),
        LoopKind::Parallel,
        vec![for_(
            oh,
            k(oh_n as i64),
            LoopKind::Serial,
            vec![for_(
                ow,
                k(ow_n as i64),
                LoopKind::Vectorized { width: 4 },
                vec![
                    Stmt::Let {
                        var: m,
                        value: Expr::F32(f32::NEG_INFINITY),
                    },
                    for_(
                        kh,
                        k(3),
                        LoopKind::Unrolled,
                        vec![for_(
                            kw,
                            k(3),
                            LoopKind::Unrolled,
                            vec![Stmt::Assign {
                                var: m,
                                value: Expr::binary(BinOp::Max, Expr::Var(m), window),
                            }],
                        )],
                    ),
                    Stmt::Store {
                        buf: out,
                        index: vec![v(c), v(oh), v(ow)],
                        value: Expr::Var(m),
                    },
                ],
            )],
        )],
    )];
    let kernel = kb.finish(body, Schedule::default());
    let inputs = vec![
        HostBuffer::F32(data(ch * h * w, 6)),
        HostBuffer::F32(vec![0.0; ch * oh_n * ow_n]),
    ];
    let (reference, native) = run_both(&kernel, inputs);
    assert_close(&reference, &native, 0.0);
}

#[test]
fn floor_div_rem_of_negative_indices() {
    let n = 40usize;
    let mut kb = KernelBuilder::new("floor_div_rem");
    let out = kb.param("out", DType::I64, &[n, 6], Access::Write);
    let i = kb.var("i", DType::I64);
    let shifted = || v(i).sub(20);
    let values = [
        shifted().div(3),
        shifted().rem(3),
        shifted().div(8),
        shifted().rem(8),
        v(i).div(3).add(v(i).rem(5)), // provably non-negative: cheap forms
        shifted().mul(-7).div(4).min(v(i).max(k(3))),
    ];
    let body = vec![for_(
        i,
        k(n as i64),
        LoopKind::Serial,
        values
            .iter()
            .enumerate()
            .map(|(j, e)| Stmt::Store {
                buf: out,
                index: vec![v(i), k(j as i64)],
                value: Expr::Index(e.clone()),
            })
            .collect(),
    )];
    let kernel = kb.finish(body, Schedule::default());
    let (reference, native) = run_both(&kernel, vec![HostBuffer::I64(vec![0; n * 6])]);
    assert_close(&reference, &native, 0.0);
    // Spot-check the semantics themselves: (-20) div 3 = -7, (-20) rem 3 = 1.
    let HostBuffer::I64(out) = &native[0] else {
        panic!("dtype")
    };
    assert_eq!((out[0], out[1]), (-7, 1));
}

#[test]
fn parallel_loops_capture_variables_and_nest() {
    alexc_llvm::set_threads(4);
    let (rows, cols) = (37usize, 19usize);
    let mut kb = KernelBuilder::new("par");
    let x = kb.param("x", DType::F32, &[rows, cols], Access::Read);
    let y = kb.param("y", DType::F32, &[rows, cols], Access::Write);
    let scratch = kb.local("t", DType::F32, &[1]);
    let s = kb.var("s", DType::F32);
    let i = kb.var("i", DType::I64);
    let j = kb.var("j", DType::I64);
    let body = vec![
        Stmt::Let {
            var: s,
            value: Expr::load(x, vec![k(0), k(0)]),
        },
        for_(
            i,
            k(rows as i64),
            LoopKind::Parallel,
            vec![for_(
                j,
                k(cols as i64),
                LoopKind::Parallel,
                vec![
                    Stmt::Store {
                        buf: scratch,
                        index: vec![k(0)],
                        value: Expr::binary(
                            BinOp::Add,
                            Expr::binary(BinOp::Mul, Expr::load(x, vec![v(i), v(j)]), Expr::Var(s)),
                            Expr::Cast {
                                to: DType::F32,
                                value: Box::new(Expr::Index(v(i))),
                            },
                        ),
                    },
                    Stmt::Store {
                        buf: y,
                        index: vec![v(i), v(j)],
                        value: Expr::binary(
                            BinOp::Add,
                            Expr::load(scratch, vec![k(0)]),
                            Expr::F32(1.0),
                        ),
                    },
                ],
            )],
        ),
    ];
    let kernel = kb.finish(body, Schedule::default());
    let inputs = vec![
        HostBuffer::F32(data(rows * cols, 7)),
        HostBuffer::F32(vec![0.0; rows * cols]),
    ];
    let (reference, native) = run_both(&kernel, inputs);
    // `x·s + i` may be contracted into an FMA.
    assert_close(&reference, &native, 1e-6);
}

#[test]
fn i64_label_compare_via_cond_and_cast() {
    let (n, classes) = (9usize, 5usize);
    let mut kb = KernelBuilder::new("labels");
    let labels = kb.param("labels", DType::I64, &[n], Access::Read);
    let pred = kb.param("pred", DType::F32, &[n], Access::Read);
    let onehot = kb.param("onehot", DType::F32, &[n, classes], Access::Write);
    let correct = kb.param("correct", DType::F32, &[n], Access::Write);
    let b = kb.var("n", DType::I64);
    let c = kb.var("c", DType::I64);
    let label = || Expr::load(labels, vec![v(b)]);
    let body = vec![for_(
        b,
        k(n as i64),
        LoopKind::Serial,
        vec![
            for_(
                c,
                k(classes as i64),
                LoopKind::Vectorized { width: 4 },
                vec![Stmt::Store {
                    buf: onehot,
                    index: vec![v(b), v(c)],
                    value: Expr::select(
                        eq(label(), Expr::Index(v(c))),
                        Expr::F32(1.0),
                        Expr::F32(0.0),
                    ),
                }],
            ),
            Stmt::Store {
                buf: correct,
                index: vec![v(b)],
                value: Expr::select(
                    Cond::And(
                        Box::new(eq(
                            Expr::Cast {
                                to: DType::I64,
                                value: Box::new(Expr::load(pred, vec![v(b)])),
                            },
                            label(),
                        )),
                        Box::new(Cond::Not(Box::new(Cond::Idx {
                            op: Cmp::Ge,
                            a: v(b),
                            b: k(7),
                        }))),
                    ),
                    Expr::F32(1.0),
                    Expr::F32(0.0),
                ),
            },
        ],
    )];
    let kernel = kb.finish(body, Schedule::default());
    let inputs = vec![
        HostBuffer::I64(vec![0, 1, 2, 3, 4, 4, 3, 2, 1]),
        HostBuffer::F32(vec![0.2, 1.9, -2.5, 3.0, 4.7, 1.0, 3.99, 2.0, 1.5]),
        HostBuffer::F32(vec![0.0; n * classes]),
        HostBuffer::F32(vec![0.0; n]),
    ];
    let (reference, native) = run_both(&kernel, inputs);
    assert_close(&reference, &native, 0.0);
}

#[test]
fn math_intrinsics() {
    let n = 100usize;
    let mut kb = KernelBuilder::new("math");
    let x = kb.param("x", DType::F32, &[n], Access::Read);
    let y = kb.param("y", DType::F32, &[n, 7], Access::Write);
    let i = kb.var("i", DType::I64);
    let xi = || Expr::load(x, vec![v(i)]);
    let pos = || Expr::binary(BinOp::Add, Expr::unary(UnOp::Abs, xi()), Expr::F32(0.5));
    let values = [
        Expr::unary(UnOp::Exp, xi()),
        Expr::unary(UnOp::Log, pos()),
        Expr::unary(UnOp::Sqrt, pos()),
        Expr::unary(UnOp::Rsqrt, pos()),
        Expr::binary(BinOp::Pow, pos(), Expr::F32(0.75)),
        Expr::binary(BinOp::Div, Expr::unary(UnOp::Neg, xi()), Expr::F32(3.0)),
        Expr::binary(
            BinOp::Sub,
            Expr::binary(BinOp::Min, xi(), Expr::F32(0.1)),
            xi(),
        ),
    ];
    let body = vec![for_(
        i,
        k(n as i64),
        LoopKind::Vectorized { width: 8 },
        values
            .iter()
            .enumerate()
            .map(|(j, e)| Stmt::Store {
                buf: y,
                index: vec![v(i), k(j as i64)],
                value: e.clone(),
            })
            .collect(),
    )];
    let kernel = kb.finish(body, Schedule::default());
    let inputs = vec![
        HostBuffer::F32(data(n, 8)),
        HostBuffer::F32(vec![0.0; n * 7]),
    ];
    let (reference, native) = run_both(&kernel, inputs);
    // Intrinsics may be constant-folded or computed by a different libm path.
    assert_close(&reference, &native, 1e-6);
}

/// The canonical small kernel for the IR snapshot.
fn saxpy() -> alexc_kernel::Kernel {
    let mut kb = KernelBuilder::new("saxpy");
    let x = kb.param("x", DType::F32, &[8], Access::Read);
    let y = kb.param("y", DType::F32, &[8], Access::ReadWrite);
    let i = kb.var("i", DType::I64);
    let body = vec![for_(
        i,
        k(8),
        LoopKind::Vectorized { width: 4 },
        vec![Stmt::Store {
            buf: y,
            index: vec![v(i)],
            value: Expr::fma(
                Expr::F32(2.0),
                Expr::load(x, vec![v(i)]),
                Expr::load(y, vec![v(i)]),
            ),
        }],
    )];
    kb.finish(body, Schedule::default())
}

/// Drops what depends on the machine: target attributes, triple, layout.
fn machine_independent(ir: &str) -> String {
    let mut out = String::new();
    for line in ir.lines() {
        if line.starts_with("target datalayout") || line.starts_with("target triple") {
            continue;
        }
        let mut line = line.to_string();
        for key in ["\"target-cpu\"=\"", "\"target-features\"=\""] {
            while let Some(start) = line.find(key) {
                let value_start = start + key.len();
                let end = line[value_start..]
                    .find('"')
                    .map_or(line.len(), |e| value_start + e + 1);
                let trim_end = if line[end..].starts_with(' ') {
                    end + 1
                } else {
                    end
                };
                line.replace_range(start..trim_end, "");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[test]
fn llvm_ir_snapshot_before_optimization() {
    let target = Target::host().expect("host target");
    let ir = llvm_ir_text(&[saxpy()], &target, false).expect("emit");
    insta::assert_snapshot!("saxpy_unoptimized", machine_independent(&ir));
}

#[test]
fn vectorized_fma_loop_uses_vector_fma() {
    let target = Target::host().expect("host target");
    if !target.features.contains("+fma") {
        eprintln!("host has no FMA; skipping");
        return;
    }
    let n = 1024usize;
    let mut kb = KernelBuilder::new("vfma");
    let a = kb.param("a", DType::F32, &[n], Access::Read);
    let b = kb.param("b", DType::F32, &[n], Access::Read);
    let c = kb.param("c", DType::F32, &[n], Access::Write);
    let i = kb.var("i", DType::I64);
    let body = vec![for_(
        i,
        k(n as i64),
        LoopKind::Vectorized { width: 16 },
        vec![Stmt::Store {
            buf: c,
            index: vec![v(i)],
            value: Expr::fma(
                Expr::load(a, vec![v(i)]),
                Expr::load(b, vec![v(i)]),
                Expr::F32(1.5),
            ),
        }],
    )];
    let kernel = kb.finish(body, Schedule::default());
    let asm = asm_text(&[kernel], &target).expect("asm");
    let vector_fma = asm.lines().any(|l| {
        l.contains("vfmadd")
            && (l.contains("%zmm") || l.contains("%ymm") || l.contains("%xmm"))
            && l.contains("ps")
    });
    assert!(vector_fma, "no packed vfmadd in:\n{asm}");
}

#[test]
fn bad_arguments_are_errors() {
    let kernel = common::elementwise(10);
    let target = Target::host().expect("host target");
    let jit = JitModule::new(&[kernel], &target).expect("jit");
    let (mut a, mut b, mut c, mut out) = (
        vec![0f32; 10],
        vec![0f32; 10],
        vec![0f32; 9],
        vec![0f32; 10],
    );
    let err = jit
        .call(
            "fma_relu",
            &mut [
                BufferArg::F32(&mut a),
                BufferArg::F32(&mut b),
                BufferArg::F32(&mut c),
                BufferArg::F32(&mut out),
            ],
        )
        .expect_err("short buffer");
    assert!(
        matches!(
            err,
            LlvmError::BadCall(ArgError::Mismatch {
                index: 2,
                expected_len: 10,
                got_len: 9,
                ..
            })
        ),
        "{err}"
    );

    let mut ints = vec![0i64; 10];
    let mut c = vec![0f32; 10];
    let err = jit
        .call(
            "fma_relu",
            &mut [
                BufferArg::F32(&mut a),
                BufferArg::I64(&mut ints),
                BufferArg::F32(&mut c),
                BufferArg::F32(&mut out),
            ],
        )
        .expect_err("wrong dtype");
    assert!(
        matches!(err, LlvmError::BadCall(ArgError::Mismatch { index: 1, .. })),
        "{err}"
    );

    let err = jit
        .call("fma_relu", &mut [BufferArg::F32(&mut a)])
        .expect_err("too few");
    assert!(
        matches!(
            err,
            LlvmError::BadCall(ArgError::Count {
                expected: 4,
                got: 1,
                ..
            })
        ),
        "{err}"
    );

    let err = jit.call("nope", &mut []).expect_err("unknown kernel");
    assert!(matches!(err, LlvmError::UnknownKernel(_)), "{err}");
}

#[test]
fn malformed_kernels_are_errors() {
    let target = Target::host().expect("host target");
    // Storing an i64 index into an f32 buffer.
    let mut kb = KernelBuilder::new("bad");
    let y = kb.param("y", DType::F32, &[4], Access::Write);
    let i = kb.var("i", DType::I64);
    let body = vec![for_(
        i,
        k(4),
        LoopKind::Serial,
        vec![Stmt::Store {
            buf: y,
            index: vec![v(i)],
            value: Expr::Index(v(i)),
        }],
    )];
    let err =
        JitModule::new(&[kb.finish(body, Schedule::default())], &target).expect_err("type error");
    assert!(matches!(err, LlvmError::TypeMismatch { .. }), "{err}");

    // An index with the wrong rank, and an unbound variable.
    let mut kb = KernelBuilder::new("bad2");
    let y = kb.param("y", DType::F32, &[4], Access::Write);
    let i = kb.var("i", DType::I64);
    let body = vec![Stmt::Store {
        buf: y,
        index: vec![v(i), k(0)],
        value: Expr::F32(0.0),
    }];
    assert!(JitModule::new(&[kb.finish(body, Schedule::default())], &target).is_err());
    let mut kb = KernelBuilder::new("bad3");
    let y = kb.param("y", DType::F32, &[4], Access::Write);
    let i = kb.var("i", DType::I64);
    let body = vec![Stmt::Store {
        buf: y,
        index: vec![Idx::Var(i)],
        value: Expr::F32(0.0),
    }];
    assert!(matches!(
        JitModule::new(&[kb.finish(body, Schedule::default())], &target),
        Err(LlvmError::UnknownVar { .. })
    ));
    // Duplicate kernel names.
    let e = common::elementwise(4);
    assert!(matches!(
        JitModule::new(&[e.clone(), e], &target),
        Err(LlvmError::DuplicateKernel(_))
    ));
}
