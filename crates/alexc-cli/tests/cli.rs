//! End-to-end tests of the `alexc` binary: what a user types, what they see.

mod common;

use std::path::Path;

use common::{alexc, root, stderr, stdout, temp_dir};

#[test]
fn compile_alexnet_prints_the_papers_shapes_and_parameter_count() {
    let out = alexc(&["compile", "models/alexnet.ron"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    // The default pipeline fuses conv+ReLU, LRN+pool and linear+ReLU.
    let shapes: Vec<&str> = [
        "conv1+relu1",
        "norm1+pool1",
        "conv2+relu2",
        "norm2+pool2",
        "conv3+relu3",
        "conv4+relu4",
        "conv5+relu5",
        "pool5",
        "fc6+relu6",
        "fc7+relu7",
        "fc8",
    ]
    .iter()
    .map(|layer| {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(layer))
            .unwrap_or_else(|| panic!("no row for {layer} in\n{text}"));
        line.split_whitespace().nth(2).expect("shape column")
    })
    .collect();
    assert_eq!(
        shapes.join(" → "),
        "96×55×55 → 96×27×27 → 256×27×27 → 256×13×13 → 384×13×13 → 384×13×13 → 256×13×13 → 256×6×6 → 4096 → 4096 → 1000"
    );
    assert!(text.contains("total: 62,378,344 parameters"), "{text}");
    insta::assert_snapshot!("compile-alexnet-summary", text);
}

#[test]
fn compile_alexnet_2gpu_counts_the_papers_parameters() {
    let out = alexc(&["compile", "models/alexnet-2gpu.ron"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("total: 60,965,224 parameters"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn summary_json_has_the_documented_fields() {
    let out = alexc(&[
        "compile",
        "models/alexnet.ron",
        "--batch",
        "8",
        "--emit",
        "summary-json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(json["model"], "alexnet");
    assert_eq!(json["batch"], 8);
    assert_eq!(json["params"], 62_378_344);
    let nodes = json["nodes"].as_array().expect("nodes");
    let fc8 = nodes.iter().find(|n| n["name"] == "fc8").expect("fc8");
    assert_eq!(fc8["op"], "linear");
    assert_eq!(fc8["shape"], serde_json::json!([8, 1000]));
    assert_eq!(fc8["params"], 4_097_000);
    assert_eq!(fc8["macs"], 8 * 4_096_000);
    let macs: u64 = nodes
        .iter()
        .map(|n| n["macs"].as_u64().expect("macs"))
        .sum();
    assert_eq!(json["macs"], macs);
}

#[test]
fn emit_graph_and_dot_to_files() {
    let dir = temp_dir("emit");
    let ir = dir.join("alexnet.ir");
    let dot = dir.join("alexnet.dot");
    let out = alexc(&[
        "compile",
        "models/alexnet.ron",
        "--emit",
        "graph",
        "-o",
        ir.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&ir).expect("IR written");
    assert!(text.starts_with("graph alexnet (batch 1) {"));
    assert!(text
        .contains(r#"conv2d+relu "conv1+relu1" {out=96, kernel=11x11, stride=4x4, padding=2x2"#));
    let out = alexc(&[
        "compile",
        "models/alexnet-2gpu.ron",
        "--emit",
        "dot",
        "-o",
        dot.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&dot).expect("DOT written");
    assert!(text.starts_with("digraph \"alexnet-2gpu\" {"));
    assert!(text.contains("->"));
}

#[test]
fn bad_model_shows_file_line_column_and_hint() {
    let out = alexc(&[
        "compile",
        "crates/alexc-frontend/tests/bad-models/channel-mismatch.ron",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("conv2 expects 96 input channels, but pool1 produces 256×13×13"),
        "{err}"
    );
    assert!(err.contains("channel-mismatch.ron:9:44"), "{err}");
    assert!(err.contains("set in_channels to 256"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn batch_zero_is_rejected_by_the_cli() {
    let out = alexc(&["compile", "models/alexnet.ron", "--batch", "0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--batch"), "{}", stderr(&out));
}

/// Writes a PNG the test owns: a diagonal gradient.
fn write_png(path: &Path, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 7) as u8, ((x + y) * 3) as u8])
    });
    img.save(path).expect("write png");
}

#[test]
fn run_classifies_an_image_and_a_folder() {
    let dir = temp_dir("run");
    write_png(&dir.join("a.png"), 40, 30);
    write_png(&dir.join("b.png"), 20, 50);
    std::fs::write(dir.join("notes.txt"), "not an image").expect("write");
    let out = alexc(&[
        "run",
        "models/alexnet-small.ron",
        "--input",
        dir.join("a.png").to_str().expect("utf-8"),
        "--top",
        "3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .count(),
        3,
        "{text}"
    );
    // Class names from the model file are shown.
    assert!([
        "T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
        "Ankle"
    ]
    .iter()
    .any(|n| text.contains(n)));

    let logits = dir.join("logits.npy");
    let out = alexc(&[
        "run",
        "models/alexnet-small.ron",
        "--input",
        dir.to_str().expect("utf-8"),
        "--save-logits",
        logits.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let saved = alexc_tensor::read_npy(&logits)
        .expect("logits saved")
        .to_f32();
    assert_eq!(saved.shape(), [2, 10]);
}

#[test]
fn run_is_deterministic_for_a_seed_and_feeds_npy_batches() {
    let dir = temp_dir("npy");
    let data: Vec<f32> = (0..3 * 28 * 28)
        .map(|i| ((i * 37) % 101) as f32 / 101.0)
        .collect();
    let input = dir.join("x.npy");
    alexc_tensor::write_npy(
        &input,
        &alexc_tensor::Tensor::new(vec![3, 1, 28, 28], data).expect("tensor"),
    )
    .expect("npy");
    let run = |seed: &str, out: &Path| {
        let o = alexc(&[
            "run",
            "models/alexnet-small.ron",
            "--input",
            input.to_str().expect("utf-8"),
            "--seed",
            seed,
            "--save-logits",
            out.to_str().expect("utf-8"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        alexc_tensor::read_npy(out).expect("logits").to_f32()
    };
    let a = run("7", &dir.join("a.npy"));
    let b = run("7", &dir.join("b.npy"));
    let c = run("8", &dir.join("c.npy"));
    assert_eq!(a.shape(), [3, 10]);
    assert_eq!(a.data(), b.data());
    assert_ne!(a.data(), c.data());
}

#[test]
fn wrong_input_shape_is_a_clear_error() {
    let dir = temp_dir("badshape");
    let input = dir.join("x.npy");
    alexc_tensor::write_npy(
        &input,
        &alexc_tensor::Tensor::new(vec![2, 3, 28, 28], vec![0.0; 2 * 3 * 28 * 28]).expect("t"),
    )
    .expect("npy");
    let out = alexc(&[
        "run",
        "models/alexnet-small.ron",
        "--input",
        input.to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("has shape [2, 3, 28, 28], but the model takes [N, 1, 28, 28]"),
        "{err}"
    );
}

#[test]
fn weights_mismatch_lists_every_difference() {
    let dir = temp_dir("weights");
    // Start from the model's own initial weights, then break three of them.
    let model = alexc_frontend::load(&root().join("models/alexnet-small.ron"), 1).expect("model");
    let mut weights =
        alexc_tensor::init_parameters(&model.graph, 0, model.base_dir()).expect("init");
    weights.remove("fc8.bias");
    weights.insert(
        "fc9.weight".into(),
        alexc_tensor::Tensor::new(vec![2], vec![0.0, 1.0]).expect("t"),
    );
    weights.insert(
        "conv1.weight".into(),
        alexc_tensor::Tensor::new(vec![32, 1, 3, 3], vec![0.0; 288]).expect("t"),
    );
    let path = dir.join("w.safetensors");
    alexc_tensor::save_weights(&path, &weights).expect("save");
    let img = dir.join("a.png");
    write_png(&img, 28, 28);
    let out = alexc(&[
        "run",
        "models/alexnet-small.ron",
        "--input",
        img.to_str().expect("utf-8"),
        "--weights",
        path.to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    for needle in [
        "fc8.bias",
        "fc9.weight",
        "conv1.weight: expected [32, 1, 5, 5], found [32, 1, 3, 3]",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn saved_weights_round_trip_through_run() {
    let dir = temp_dir("roundtrip");
    let model = alexc_frontend::load(&root().join("models/alexnet-small.ron"), 1).expect("model");
    let weights = alexc_tensor::init_parameters(&model.graph, 3, model.base_dir()).expect("init");
    let path = dir.join("w.safetensors");
    alexc_tensor::save_weights(&path, &weights).expect("save");
    let input = dir.join("x.npy");
    alexc_tensor::write_npy(
        &input,
        &alexc_tensor::Tensor::new(vec![1, 1, 28, 28], vec![0.5; 784]).expect("t"),
    )
    .expect("npy");
    let run = |extra: &[&str], out: &str| {
        let out = dir.join(out);
        let mut args = vec![
            "run",
            "models/alexnet-small.ron",
            "--input",
            input.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--save-logits", out.to_str().expect("utf-8")]);
        let o = alexc(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        alexc_tensor::read_npy(&out).expect("logits").to_f32()
    };
    let from_file = run(&["--weights", path.to_str().expect("utf-8")], "a.npy");
    let from_seed = run(&["--seed", "3"], "b.npy");
    assert_eq!(from_file.data(), from_seed.data());
}

#[test]
fn missing_input_is_an_error_not_a_panic() {
    let out = alexc(&[
        "run",
        "models/alexnet-small.ron",
        "--input",
        "no/such/file.png",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("no/such/file.png"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn explain_fusion_names_every_group_and_no_fuse_fuses_none() {
    let out = alexc(&["compile", "models/alexnet.ron", "--explain-fusion"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let count = |pass: &str| {
        text.lines()
            .filter(|l| l.starts_with("fused") && l.contains(pass))
            .count()
    };
    assert_eq!(
        (
            count("fuse-conv-relu"),
            count("fuse-lrn-pool"),
            count("fuse-linear-relu")
        ),
        (5, 2, 2),
        "{text}"
    );
    assert!(text.contains("conv1 + relu1 → conv1+relu1"), "{text}");
    let out = alexc(&[
        "compile",
        "models/alexnet.ron",
        "--no-fuse",
        "--explain-fusion",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("0 fused group(s)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn summary_json_reports_fusions_and_memory() {
    let out = alexc(&[
        "compile",
        "models/alexnet.ron",
        "--train",
        "--batch",
        "32",
        "--emit",
        "summary-json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(json["train"], true);
    let fusions = json["fusions"].as_array().expect("fusions");
    assert_eq!(fusions.len(), 18);
    assert_eq!(fusions[0]["pass"], "fuse-conv-relu");
    assert_eq!(fusions[0]["nodes"], serde_json::json!(["conv1", "relu1"]));
    let arena = json["arena_bytes"].as_u64().expect("arena");
    let peak = json["peak_bytes"].as_u64().expect("peak");
    let unfused = json["unfused"]["arena_bytes"]
        .as_u64()
        .expect("unfused arena");
    assert!(
        peak <= arena && arena < unfused,
        "fused {arena} (peak {peak}) vs unfused {unfused}"
    );
}

#[test]
fn pass_flags_disable_print_and_time() {
    let out = alexc(&[
        "compile",
        "models/alexnet-small.ron",
        "--disable-pass",
        "fuse-lrn-pool",
        "--print-after",
        "fuse-conv-relu",
        "--timings",
        "--explain-fusion",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(!text.contains("fuse-lrn-pool      norm1"), "{text}");
    assert!(
        err.contains("// ----- IR after fuse-conv-relu -----"),
        "{err}"
    );
    assert!(err.contains("conv2d+relu"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("fuse-lrn-pool") && l.ends_with("disabled")),
        "{err}"
    );
    let out = alexc(&[
        "compile",
        "models/alexnet-small.ron",
        "--disable-pass",
        "no-such-pass",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown pass `no-such-pass`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn emit_plan_writes_the_memory_plan() {
    let out = alexc(&[
        "compile",
        "models/alexnet-small.ron",
        "--train",
        "--emit",
        "plan",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert!(plan["arena_bytes"].as_u64().expect("arena") > 0);
    let buffers = plan["buffers"].as_array().expect("buffers");
    assert!(buffers
        .iter()
        .all(|b| b["offset"].as_u64().is_none_or(|o| o % 64 == 0)));
}

#[test]
fn llvm_backend_matches_the_interpreter() {
    let dir = temp_dir("llvm");
    let input = dir.join("x.npy");
    let data: Vec<f32> = (0..2 * 28 * 28)
        .map(|i| ((i * 31) % 97) as f32 / 97.0 - 0.5)
        .collect();
    alexc_tensor::write_npy(
        &input,
        &alexc_tensor::Tensor::new(vec![2, 1, 28, 28], data).expect("t"),
    )
    .expect("npy");
    let run = |backend: &str| {
        let out = dir.join(format!("{backend}.npy"));
        let o = alexc(&[
            "run",
            "models/alexnet-small.ron",
            "--input",
            input.to_str().expect("utf-8"),
            "--backend",
            backend,
            "--save-logits",
            out.to_str().expect("utf-8"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        alexc_tensor::read_npy(&out).expect("logits").to_f32()
    };
    let (interp, llvm) = (run("interp"), run("llvm"));
    assert_eq!(interp.shape(), llvm.shape());
    // Different summation order (tiled GEMM, FMA contraction): 1e-4 of the scale.
    let scale = interp
        .data()
        .iter()
        .fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
    let worst = interp
        .data()
        .iter()
        .zip(llvm.data())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-4 * scale,
        "llvm differs from interp by {worst:e} (scale {scale:e})"
    );
}

#[test]
fn step_overfits_a_batch_identically_on_llvm_and_the_interpreter() {
    let dir = temp_dir("step");
    let fixture = root().join("tests/fixtures/alexnet-small-step");
    let (x, y) = (fixture.join("input.npy"), fixture.join("labels.npy"));
    let losses = |backend: &str| -> Vec<f32> {
        let saved = dir.join(format!("{backend}.safetensors"));
        let o = alexc(&[
            "step",
            "models/alexnet-small.ron",
            "--input",
            x.to_str().expect("utf-8"),
            "--labels",
            y.to_str().expect("utf-8"),
            "--steps",
            "4",
            "--lr",
            "0.01",
            "--no-dropout",
            "--backend",
            backend,
            "--save-weights",
            saved.to_str().expect("utf-8"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(alexc_tensor::load_weights(&saved)
            .expect("saved")
            .contains_key("fc8.weight.momentum"));
        stdout(&o)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
            .collect()
    };
    let (llvm, interp) = (losses("llvm"), losses("interp"));
    assert_eq!(llvm.len(), 4);
    assert!(llvm[3] < llvm[0], "the loss does not fall: {llvm:?}");
    for (a, b) in llvm.iter().zip(&interp) {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs(),
            "llvm {llvm:?} vs interp {interp:?}"
        );
    }
}

#[test]
fn emit_kernel_ir_llvm_ir_and_asm() {
    let out = alexc(&["compile", "models/alexnet-small.ron", "--emit", "kernel"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("kernel ") && text.contains("vectorized("),
        "{text}"
    );
    let out = alexc(&["compile", "models/alexnet-small.ron", "--emit", "llvm-ir"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ir = stdout(&out);
    assert!(
        ir.contains("define ") && ir.contains("target-cpu"),
        "{}",
        &ir[..ir.len().min(2000)]
    );
    let out = alexc(&["compile", "models/alexnet-small.ron", "--emit", "asm"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ret"), "no assembly");
}

#[test]
fn compile_to_a_directory_and_run_the_library() {
    let dir = temp_dir("aot");
    let plan = dir.join("plan");
    let plan_arg = plan.to_str().expect("utf-8");
    let out = alexc(&[
        "compile",
        "models/alexnet-small.ron",
        "--batch",
        "2",
        "--emit",
        "kernel,llvm-ir",
        "-o",
        plan_arg,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for file in [
        "kernels.o",
        "libkernels.so",
        "manifest.json",
        "plan.json",
        "summary.txt",
        "kernels.kir",
        "kernels.ll",
    ] {
        assert!(plan.join(file).is_file(), "{file} missing");
    }
    assert!(stderr(&out).contains("compiled"), "{}", stderr(&out));

    // Two images, run from the library and compiled just in time: the same
    // logits.
    let input = dir.join("x.npy");
    let data: Vec<f32> = (0..2 * 28 * 28).map(|i| (i % 17) as f32 / 17.0).collect();
    let images = alexc_tensor::Tensor::new(vec![2, 1, 28, 28], data).expect("a batch");
    alexc_tensor::write_npy(&input, &images).expect("input written");
    let logits = |extra: &[&str]| {
        let path = dir.join(format!("logits{}.npy", extra.len()));
        let mut args = vec![
            "run",
            "models/alexnet-small.ron",
            "--input",
            input.to_str().expect("utf-8"),
            "--save-logits",
            path.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        let out = alexc(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        std::fs::read(&path).expect("logits written")
    };
    assert_eq!(logits(&["--aot", plan_arg]), logits(&[]));

    // A library for another batch size is refused, with the reason.
    let out = alexc(&[
        "run",
        "models/alexnet-small.ron",
        "--input",
        "tests/fixtures/alexnet-small-step/input.npy",
        "--aot",
        plan_arg,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("do not match"), "{}", stderr(&out));
}

#[test]
fn several_levels_need_a_directory() {
    let out = alexc(&[
        "compile",
        "models/alexnet-small.ron",
        "--emit",
        "graph,kernel",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("-o DIR"), "{}", stderr(&out));
}

#[test]
fn bench_compares_fused_and_unfused_plans() {
    let dir = temp_dir("bench");
    let json = dir.join("bench.json");
    let out = alexc(&[
        "bench",
        "models/alexnet-small.ron",
        "--train",
        "--batch",
        "4",
        "--iters",
        "2",
        "--warmup",
        "1",
        "--threads",
        "2",
        "--backends",
        "llvm,cranelift",
        "--json",
        json.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "fused plan",
        "unfused plan",
        "conv2+relu2.backward",
        "fused (llvm) / unfused (llvm): time",
        "unfused plan, cranelift",
        "compile s",
        "outputs agree",
    ] {
        assert!(text.contains(needle), "no `{needle}` in\n{text}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parses");
    assert_eq!(report["plans"].as_array().map(Vec::len), Some(4));
    assert!(report["max_rel_diff"].as_f64().expect("a number") <= 1e-4);
}
