//! Hand-built kernels shared by the JIT tests and the matmul example, and
//! the differential harness: run a kernel on `alexc_kernel::eval` and on the
//! JIT with the same inputs.

#![allow(dead_code)]

use alexc_kernel::{
    Access, BinOp, Cmp, Cond, DType, Expr, HostBuffer, Idx, Kernel, KernelBuilder, LoopKind,
    Schedule, Stmt, VarId,
};
use alexc_llvm::{BufferArg, JitModule, Target};

pub fn v(var: VarId) -> Idx {
    Idx::Var(var)
}

pub fn k(c: i64) -> Idx {
    Idx::Const(c)
}

pub fn for_(var: VarId, extent: Idx, kind: LoopKind, body: Vec<Stmt>) -> Stmt {
    Stmt::For {
        var,
        extent,
        kind,
        body,
    }
}

/// Deterministic pseudo-random data in [-1, 1).
pub fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `C[m,n] = A[m,k] · B[k,n]` with a `tr × tc` register tile in a local
/// accumulator, rows unrolled (when `tr` divides `m`), columns vectorized,
/// remainder tiles via `min` extents, and the row-tile loop optionally
/// parallel.
pub fn matmul(
    m: usize,
    n: usize,
    kd: usize,
    tr: usize,
    tc: usize,
    width: u32,
    parallel: bool,
) -> Kernel {
    let mut kb = KernelBuilder::new("matmul");
    let a = kb.param("a", DType::F32, &[m, kd], Access::Read);
    let b = kb.param("b", DType::F32, &[kd, n], Access::Read);
    let c = kb.param("c", DType::F32, &[m, n], Access::Write);
    let acc = kb.local("acc", DType::F32, &[tr, tc]);
    let i0 = kb.var("i0", DType::I64);
    let j0 = kb.var("j0", DType::I64);
    let kk = kb.var("k", DType::I64);
    let (tr_i, tc_i) = (tr as i64, tc as i64);
    let r1 = kb.var("r", DType::I64);
    let c1 = kb.var("c", DType::I64);
    let r2 = kb.var("r", DType::I64);
    let c2 = kb.var("c", DType::I64);
    let r3 = kb.var("r", DType::I64);
    let c3 = kb.var("c", DType::I64);
    let rows = |r: VarId, body: Vec<Stmt>| {
        if m % tr == 0 {
            for_(r, k(tr_i), LoopKind::Unrolled, body)
        } else {
            for_(
                r,
                k(tr_i).min(k(m as i64).sub(v(i0).mul(tr_i))),
                LoopKind::Serial,
                body,
            )
        }
    };
    let cols = |cc: VarId, body: Vec<Stmt>| {
        let extent = if n % tc == 0 {
            k(tc_i)
        } else {
            k(tc_i).min(k(n as i64).sub(v(j0).mul(tc_i)))
        };
        for_(cc, extent, LoopKind::Vectorized { width }, body)
    };
    let init = rows(
        r1,
        vec![cols(
            c1,
            vec![Stmt::Store {
                buf: acc,
                index: vec![v(r1), v(c1)],
                value: Expr::F32(0.0),
            }],
        )],
    );
    let update = for_(
        kk,
        k(kd as i64),
        LoopKind::Serial,
        vec![rows(
            r2,
            vec![cols(
                c2,
                vec![Stmt::Store {
                    buf: acc,
                    index: vec![v(r2), v(c2)],
                    value: Expr::fma(
                        Expr::load(a, vec![v(i0).mul(tr_i).add(v(r2)), v(kk)]),
                        Expr::load(b, vec![v(kk), v(j0).mul(tc_i).add(v(c2))]),
                        Expr::load(acc, vec![v(r2), v(c2)]),
                    ),
                }],
            )],
        )],
    );
    let store = rows(
        r3,
        vec![cols(
            c3,
            vec![Stmt::Store {
                buf: c,
                index: vec![v(i0).mul(tr_i).add(v(r3)), v(j0).mul(tc_i).add(v(c3))],
                value: Expr::load(acc, vec![v(r3), v(c3)]),
            }],
        )],
    );
    let body = vec![for_(
        i0,
        k(m.div_ceil(tr) as i64),
        if parallel {
            LoopKind::Parallel
        } else {
            LoopKind::Serial
        },
        vec![for_(
            j0,
            k(n.div_ceil(tc) as i64),
            LoopKind::Serial,
            vec![init, update, store],
        )],
    )];
    kb.finish(body, Schedule::default())
}

/// Runs `kernel` on the reference evaluator and on the JIT; returns both
/// sets of parameter buffers after the run.
pub fn run_both(kernel: &Kernel, inputs: Vec<HostBuffer>) -> (Vec<HostBuffer>, Vec<HostBuffer>) {
    let mut reference = inputs.clone();
    alexc_kernel::eval(kernel, &mut reference).expect("reference evaluation");
    let target = Target::host().expect("host target");
    let jit = JitModule::new(std::slice::from_ref(kernel), &target).expect("jit");
    let mut native = inputs;
    call(&jit, &kernel.name, &mut native).expect("call");
    (reference, native)
}

pub fn call(
    jit: &JitModule,
    name: &str,
    buffers: &mut [HostBuffer],
) -> Result<(), alexc_llvm::LlvmError> {
    let mut args: Vec<BufferArg<'_>> = buffers
        .iter_mut()
        .map(|b| match b {
            HostBuffer::F32(v) => BufferArg::F32(v),
            HostBuffer::I64(v) => BufferArg::I64(v),
        })
        .collect();
    jit.call(name, &mut args)
}

/// Asserts equality within `rel` relative tolerance (0 = exact).
pub fn assert_close(reference: &[HostBuffer], native: &[HostBuffer], rel: f32) {
    assert_eq!(reference.len(), native.len());
    for (p, (r, n)) in reference.iter().zip(native).enumerate() {
        match (r, n) {
            (HostBuffer::F32(r), HostBuffer::F32(n)) => {
                assert_eq!(r.len(), n.len());
                for (i, (x, y)) in r.iter().zip(n).enumerate() {
                    let ok = if rel == 0.0 {
                        x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
                    } else {
                        (x - y).abs() <= rel * x.abs().max(y.abs()).max(1.0) || x == y
                    };
                    assert!(ok, "param {p} element {i}: reference {x}, jit {y}");
                }
            }
            (HostBuffer::I64(r), HostBuffer::I64(n)) => assert_eq!(r, n, "param {p}"),
            _ => panic!("param {p}: dtype differs"),
        }
    }
}

/// `max(a[i]·b[i] + c[i], 0)` over `n` elements in 16-lane tiles plus a
/// remainder tile.
pub fn elementwise(n: usize) -> Kernel {
    let mut kb = KernelBuilder::new("fma_relu");
    let a = kb.param("a", DType::F32, &[n], Access::Read);
    let b = kb.param("b", DType::F32, &[n], Access::Read);
    let c = kb.param("c", DType::F32, &[n], Access::Read);
    let out = kb.param("out", DType::F32, &[n], Access::Write);
    let io = kb.var("io", DType::I64);
    let ii = kb.var("ii", DType::I64);
    let i = || v(io).mul(16).add(v(ii));
    let body = vec![for_(
        io,
        k(n.div_ceil(16) as i64),
        LoopKind::Serial,
        vec![for_(
            ii,
            k(16).min(k(n as i64).sub(v(io).mul(16))),
            LoopKind::Vectorized { width: 16 },
            vec![Stmt::Store {
                buf: out,
                index: vec![i()],
                value: Expr::binary(
                    BinOp::Max,
                    Expr::fma(
                        Expr::load(a, vec![i()]),
                        Expr::load(b, vec![i()]),
                        Expr::load(c, vec![i()]),
                    ),
                    Expr::F32(0.0),
                ),
            }],
        )],
    )];
    kb.finish(body, Schedule::default())
}

/// `cond` helper: `a == b` on expressions.
pub fn eq(a: Expr, b: Expr) -> Cond {
    Cond::Expr { op: Cmp::Eq, a, b }
}
