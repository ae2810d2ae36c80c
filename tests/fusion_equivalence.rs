//! Fused and unfused graphs compute the same thing: the reference
//! interpreter runs AlexNet's inference graph through the default pipeline
//! with and without fusion, on the same random weights and input, and the
//! logits agree to 1e-5 relative to the largest |logit|. (The fused ops
//! compose the same reference ops in the same order, so the results are
//! normally bit-identical; the tolerance only allows for a different
//! summation order should a fused op ever be computed differently.)

use std::collections::HashMap;

use alexc_e2e::repo_path;
use alexc_interp::{Mode, Value};
use alexc_passes::{default_pipeline, PipelineOptions};
use alexc_tensor::Tensor;

fn logits(model: &str, no_fuse: bool) -> (Tensor<f32>, usize) {
    let mut model = alexc_frontend::load(&repo_path(model), 1).expect("model");
    let options = PipelineOptions {
        no_fuse,
        verify_each: true,
        ..PipelineOptions::default()
    };
    let ctx = default_pipeline(options)
        .run(&mut model.graph)
        .expect("pipeline");
    let weights = alexc_tensor::init_parameters(&model.graph, 11, model.base_dir()).expect("init");
    let input = model
        .graph
        .nodes_where(|op| matches!(op, alexc_ir::Op::Input(_)))[0];
    let shape = model.graph[input].outputs[0].shape.dims().to_vec();
    let n: usize = shape.iter().product();
    // A deterministic pseudo-random image with pixel-scale values.
    let data: Vec<f32> = (0..n)
        .map(|i| (((i * 7919) % 1000) as f32 / 1000.0 - 0.5) * 4.0)
        .collect();
    let mut feeds = HashMap::new();
    feeds.insert(
        model.graph[input].name.clone(),
        Value::Float(Tensor::new(shape, data).expect("tensor")),
    );
    let out = alexc_interp::run(&model.graph, &weights, &feeds, Mode::Eval).expect("runs");
    (
        out.into_iter()
            .next()
            .and_then(Value::into_float)
            .expect("logits"),
        ctx.fusion.groups.len(),
    )
}

fn check(model: &str, expected_groups: usize) {
    let (fused, groups) = logits(model, false);
    let (unfused, none) = logits(model, true);
    assert_eq!(groups, expected_groups, "{model}: fused groups");
    assert_eq!(none, 0, "{model}: --no-fuse fused something");
    let scale = unfused.data().iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0);
    let worst = fused
        .data()
        .iter()
        .zip(unfused.data())
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-5,
        "{model}: fused and unfused differ by {worst:e}"
    );
}

#[test]
fn alexnet_fused_equals_unfused() {
    check("models/alexnet.ron", 9);
}

#[test]
fn alexnet_small_fused_equals_unfused() {
    check("models/alexnet-small.ron", 9);
}
