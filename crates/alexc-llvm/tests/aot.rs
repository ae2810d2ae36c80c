//! AOT artifacts: kernels written as `kernels.o` + `libkernels.so` +
//! `manifest.json`, loaded back with `AotLibrary`, give bit-for-bit the
//! JIT's results (same IR, same O3, same libm); a directory that does not
//! match the kernels asked for is refused before any code runs.

mod common;

use std::path::Path;
use std::process::Command;

use alexc_kernel::{
    Access, BinOp, DType, Expr, HostBuffer, Kernel, KernelBuilder, LoopKind, Schedule, Stmt, UnOp,
};
use alexc_llvm::{
    write_aot, AotLibrary, AotManifest, ArgError, BufferArg, JitModule, LlvmError, Target,
};
use common::{data, for_, k, v};

/// `y[i] = exp(x[i]) + log(x[i]·x[i] + 1)` in 8-lane vectorized tiles
/// inside a parallel loop: libm calls from vectorized code on the pool.
fn exp_log(name: &str, n: usize, op: UnOp) -> Kernel {
    let mut kb = KernelBuilder::new(name);
    let x = kb.param("x", DType::F32, &[n], Access::Read);
    let y = kb.param("y", DType::F32, &[n], Access::Write);
    let io = kb.var("io", DType::I64);
    let ii = kb.var("ii", DType::I64);
    let i = || v(io).mul(8).add(v(ii));
    let xi = || Expr::load(x, vec![i()]);
    let body = vec![for_(
        io,
        k(n.div_ceil(8) as i64),
        LoopKind::Parallel,
        vec![for_(
            ii,
            k(8).min(k(n as i64).sub(v(io).mul(8))),
            LoopKind::Vectorized { width: 8 },
            vec![Stmt::Store {
                buf: y,
                index: vec![i()],
                value: Expr::binary(
                    BinOp::Add,
                    Expr::unary(op, xi()),
                    Expr::unary(UnOp::Log, Expr::fma(xi(), xi(), Expr::F32(1.0))),
                ),
            }],
        )],
    )];
    kb.finish(body, Schedule::default())
}

fn kernels() -> Vec<Kernel> {
    vec![
        common::matmul(37, 45, 29, 4, 16, 16, true),
        common::elementwise(1003),
        exp_log("exp_log", 1001, UnOp::Exp),
    ]
}

fn inputs(kernel: &Kernel) -> Vec<HostBuffer> {
    kernel
        .params()
        .enumerate()
        .map(|(i, (_, d))| match d.dtype {
            DType::F32 => HostBuffer::F32(
                data(d.elements(), i as u64 + 1)
                    .into_iter()
                    .map(|x| x * 4.0)
                    .collect(),
            ),
            DType::I64 => HostBuffer::I64(vec![0; d.elements()]),
        })
        .collect()
}

fn args(buffers: &mut [HostBuffer]) -> Vec<BufferArg<'_>> {
    buffers
        .iter_mut()
        .map(|b| match b {
            HostBuffer::F32(v) => BufferArg::F32(v),
            HostBuffer::I64(v) => BufferArg::I64(v),
        })
        .collect()
}

fn host() -> Target {
    Target::host().expect("host target")
}

fn written(kernels: &[Kernel]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write_aot(kernels, &host(), dir.path()).expect("writes AOT artifacts");
    dir
}

fn stale(dir: &Path, kernels: &[Kernel], target: &Target) -> String {
    match AotLibrary::open(dir, kernels, target) {
        Err(e @ LlvmError::StaleArtifacts { .. }) => e.to_string(),
        Err(e) => panic!("expected StaleArtifacts, got {e}"),
        Ok(_) => panic!("a mismatching library was opened"),
    }
}

#[test]
fn aot_results_equal_the_jit_bit_for_bit() {
    let kernels = kernels();
    let dir = written(&kernels);
    for file in ["kernels.o", "libkernels.so", "manifest.json"] {
        assert!(dir.path().join(file).is_file(), "{file} missing");
    }
    let aot = AotLibrary::open(dir.path(), &kernels, &host()).expect("opens");
    assert_eq!(
        aot.kernel_names().collect::<Vec<_>>(),
        ["matmul", "fma_relu", "exp_log"]
    );
    let jit = JitModule::new(&kernels, &host()).expect("jit");
    for kernel in &kernels {
        let mut want = inputs(kernel);
        jit.call(&kernel.name, &mut args(&mut want))
            .expect("jit call");
        let mut got = inputs(kernel);
        aot.call(&kernel.name, &mut args(&mut got))
            .expect("aot call");
        for (p, (w, g)) in want.iter().zip(&got).enumerate() {
            match (w, g) {
                (HostBuffer::F32(w), HostBuffer::F32(g)) => {
                    let w: Vec<u32> = w.iter().map(|x| x.to_bits()).collect();
                    let g: Vec<u32> = g.iter().map(|x| x.to_bits()).collect();
                    assert!(w == g, "kernel `{}`, param {p}: AOT differs", kernel.name);
                }
                (w, g) => assert_eq!(w, g, "kernel `{}`, param {p}", kernel.name),
            }
        }
    }
    // The same checks as the JIT's calls.
    let mut wrong = vec![HostBuffer::F32(vec![0.0; 3])];
    assert!(matches!(
        aot.call("exp_log", &mut args(&mut wrong)),
        Err(LlvmError::BadCall(ArgError::Count { .. }))
    ));
    assert!(matches!(
        aot.call("nope", &mut []),
        Err(LlvmError::UnknownKernel(_))
    ));
}

#[test]
fn manifest_describes_the_kernels_and_target() {
    let kernels = kernels();
    let dir = written(&kernels);
    let manifest = AotManifest::read(dir.path()).expect("reads");
    assert_eq!(
        manifest,
        AotManifest::new(&kernels, &host()).expect("manifest")
    );
    assert_eq!(manifest.format, alexc_llvm::aot::AOT_FORMAT);
    assert_eq!(manifest.target.cpu, host().cpu);
    let exp = &manifest.kernels[2];
    assert_eq!(exp.name, "exp_log");
    assert_eq!(exp.hash.len(), 32);
    assert_eq!(
        exp.params
            .iter()
            .map(|p| (p.name.as_str(), p.dtype, p.elements))
            .collect::<Vec<_>>(),
        [("x", DType::F32, 1001), ("y", DType::F32, 1001)]
    );
    let aot = AotLibrary::open(dir.path(), &kernels, &host()).expect("opens");
    assert_eq!(aot.fingerprint(), manifest.fingerprint);
}

/// The library defines its interface and the kernels, and neither defines
/// nor imports `alexc_parallel_for`: the host's is never found by name.
#[test]
fn library_does_not_import_the_parallel_for_by_name() {
    let kernels = kernels();
    let dir = written(&kernels);
    let Ok(out) = Command::new("nm")
        .arg("-D")
        .arg(dir.path().join("libkernels.so"))
        .output()
    else {
        eprintln!("skipped: no `nm`");
        return;
    };
    let symbols = String::from_utf8_lossy(&out.stdout);
    let defined = |name: &str| {
        symbols.lines().any(|l| {
            let mut f = l.split_whitespace().rev();
            f.next() == Some(name) && f.next().is_some_and(|t| t != "U")
        })
    };
    for name in [
        "alexc_init",
        "alexc_fingerprint",
        "matmul",
        "fma_relu",
        "exp_log",
    ] {
        assert!(defined(name), "`{name}` not exported:\n{symbols}");
    }
    assert!(
        !symbols.contains("alexc_parallel_for"),
        "the library references alexc_parallel_for by name:\n{symbols}"
    );
}

#[test]
fn a_library_for_other_kernels_is_refused() {
    let kernels = kernels();
    let dir = written(&kernels);
    let target = host();

    // A kernel missing from the library.
    let mut more = kernels.clone();
    more.push(exp_log("another", 16, UnOp::Exp));
    let e = stale(dir.path(), &more, &target);
    assert!(e.contains("kernel `another` is missing"), "{e}");

    // A kernel the caller no longer has.
    let e = stale(dir.path(), &kernels[..2], &target);
    assert!(e.contains("has kernel `exp_log`"), "{e}");

    // Same name, other signature.
    let mut resized = kernels.clone();
    resized[1] = common::elementwise(1004);
    let e = stale(dir.path(), &resized, &target);
    assert!(e.contains("kernel `fma_relu` takes"), "{e}");

    // Same name and signature, other body.
    let mut changed = kernels.clone();
    changed[2] = exp_log("exp_log", 1001, UnOp::Sqrt);
    let e = stale(dir.path(), &changed, &target);
    assert!(e.contains("kernel `exp_log` changed"), "{e}");

    // Another CPU, other features.
    let other_cpu = Target {
        cpu: "generic".to_string(),
        ..target.clone()
    };
    let e = stale(dir.path(), &kernels, &other_cpu);
    assert!(e.contains("wanted `generic`"), "{e}");
    let other_features = Target {
        features: format!("{},-avx512f", target.features),
        ..target.clone()
    };
    let e = stale(dir.path(), &kernels, &other_features);
    assert!(e.contains("CPU features"), "{e}");

    // The order of the kernels does not matter.
    let mut reversed = kernels.clone();
    reversed.reverse();
    AotLibrary::open(dir.path(), &reversed, &target).expect("any order");
}

#[test]
fn a_library_that_does_not_belong_to_its_manifest_is_refused() {
    let kernels = kernels();
    let dir = written(&kernels);
    // Another build's library under this manifest: caught by the
    // fingerprint compiled into the library.
    let other = written(&[exp_log("exp_log", 1001, UnOp::Sqrt)]);
    std::fs::copy(
        other.path().join("libkernels.so"),
        dir.path().join("libkernels.so"),
    )
    .expect("copy");
    let e = stale(dir.path(), &kernels, &host());
    assert!(e.contains("fingerprint"), "{e}");
}

#[test]
fn missing_or_broken_manifests_are_errors() {
    let kernels = kernels();
    let empty = tempfile::tempdir().expect("temp dir");
    assert!(matches!(
        AotLibrary::open(empty.path(), &kernels, &host()),
        Err(LlvmError::Io { .. })
    ));

    let dir = written(&kernels);
    let path = dir.path().join("manifest.json");
    std::fs::write(&path, "{ not json").expect("write");
    assert!(matches!(
        AotLibrary::open(dir.path(), &kernels, &host()),
        Err(LlvmError::BadManifest { .. })
    ));

    // A manifest from another format version is refused as such.
    let mut manifest = AotManifest::new(&kernels, &host()).expect("manifest");
    manifest.format += 1;
    std::fs::write(&path, serde_json::to_string(&manifest).expect("json")).expect("write");
    let e = stale(dir.path(), &kernels, &host());
    assert!(e.contains("format"), "{e}");

    // An edited fingerprint.
    manifest.format -= 1;
    manifest.fingerprint = "0".repeat(32);
    std::fs::write(&path, serde_json::to_string(&manifest).expect("json")).expect("write");
    let e = stale(dir.path(), &kernels, &host());
    assert!(e.contains("fingerprint"), "{e}");
}
