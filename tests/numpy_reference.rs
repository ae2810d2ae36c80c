//! The interpreter against an independent implementation of the reference
//! model: `scripts/reference_numpy.py` computed the logits of a reduced-width
//! AlexNet (tests/fixtures/alexnet-tiny) in float64 numpy, with PyTorch's
//! semantics for every layer (including LRN's α/n). The model file here goes
//! through the whole front end, so this checks the format, the lowering and
//! the interpreter together.
//!
//! Tolerance: 1e-4 relative to the largest |logit|. The interpreter computes
//! in f32 (24-bit mantissa, ~6e-8 relative per rounding); sums of a few
//! thousand terms per output accumulate errors of order 1e-6 to 1e-5, so 1e-4
//! passes with margin while any semantic difference (an LRN convention, a
//! padding or pooling off by one) moves logits by far more.

use std::collections::HashMap;

use alexc_e2e::repo_path;
use alexc_interp::{Mode, Value};
use alexc_tensor::{check_weights, expected_parameters, load_weights, read_npy};

#[test]
fn interpreter_matches_numpy_reference_on_tiny_alexnet() {
    let dir = repo_path("tests/fixtures/alexnet-tiny");
    let input = read_npy(dir.join("input.npy")).expect("input.npy").to_f32();
    let expected = read_npy(dir.join("logits.npy"))
        .expect("logits.npy")
        .to_f32();
    let batch = input.shape()[0];
    let model = alexc_frontend::load(&dir.join("model.ron"), batch).expect("model.ron");
    let weights = load_weights(dir.join("weights.safetensors")).expect("weights");
    check_weights(&expected_parameters(&model.graph), &weights).expect("weights fit the model");

    let mut feeds = HashMap::new();
    feeds.insert("image".to_string(), Value::Float(input));
    let outputs = alexc_interp::run(&model.graph, &weights, &feeds, Mode::Eval).expect("runs");
    let logits = outputs
        .into_iter()
        .next()
        .and_then(Value::into_float)
        .expect("float logits");

    assert_eq!(logits.shape(), expected.shape());
    let scale = expected.data().iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 1e-3, "degenerate fixture: logits are all ~0");
    let worst = logits
        .data()
        .iter()
        .zip(expected.data())
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-4,
        "max relative difference {worst:e} exceeds 1e-4"
    );
}
