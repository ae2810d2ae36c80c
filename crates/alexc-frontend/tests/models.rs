//! Every model in `models/` parses, verifies, and prints as pinned by its
//! snapshot; the AlexNet files have the parameter counts of the paper and
//! the reference code.

use std::path::Path;

use alexc_ir::{node_stats, print, verify, Op};

fn models_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

fn total_params(graph: &alexc_ir::Graph) -> u64 {
    graph
        .node_ids()
        .map(|id| node_stats(graph, id).params)
        .sum()
}

#[test]
fn every_model_prints_as_pinned() {
    insta::glob!(models_dir(), "*.ron", |path| {
        let model =
            alexc_frontend::load(path, 1).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        verify(&model.graph).expect("lowered graphs verify");
        insta::assert_snapshot!(print::to_text(&model.graph));
    });
}

#[test]
fn alexnet_has_the_reference_shapes_and_parameter_count() {
    let model = alexc_frontend::load(&models_dir().join("alexnet.ron"), 1).expect("alexnet loads");
    let g = &model.graph;
    assert_eq!(total_params(g), 62_378_344);
    let shape = |name: &str| -> Vec<usize> {
        let id = g.find(name).unwrap_or_else(|| panic!("no node {name}"));
        g[id].outputs[0].shape.dims()[1..].to_vec()
    };
    let expected: &[(&str, &[usize])] = &[
        ("conv1", &[96, 55, 55]),
        ("pool1", &[96, 27, 27]),
        ("conv2", &[256, 27, 27]),
        ("pool2", &[256, 13, 13]),
        ("conv3", &[384, 13, 13]),
        ("conv4", &[384, 13, 13]),
        ("conv5", &[256, 13, 13]),
        ("pool5", &[256, 6, 6]),
        ("fc6", &[4096]),
        ("fc7", &[4096]),
        ("fc8", &[1000]),
    ];
    for (name, dims) in expected {
        assert_eq!(shape(name), *dims, "{name}");
    }
    let Op::Parameter(w) = &g[g.find("conv1.weight").expect("conv1.weight")].op else {
        panic!("conv1.weight is not a parameter");
    };
    assert_eq!(w.shape.dims(), [96, 3, 11, 11]);
    assert_eq!(
        g[g.find("fc6.weight").expect("fc6.weight")].outputs[0]
            .shape
            .dims(),
        [4096, 9216]
    );
}

#[test]
fn alexnet_2gpu_has_the_papers_parameter_count() {
    let model = alexc_frontend::load(&models_dir().join("alexnet-2gpu.ron"), 1).expect("loads");
    assert_eq!(total_params(&model.graph), 60_965_224);
}

#[test]
fn batch_is_bound_at_load_time() {
    let model = alexc_frontend::load(&models_dir().join("alexnet.ron"), 32).expect("loads");
    let g = &model.graph;
    assert_eq!(g.batch, 32);
    let out = g.value_type(g.outputs()[0]).expect("output type");
    assert_eq!(out.shape.dims(), [32, 1000]);
}

#[test]
fn paper_initializers_are_per_layer() {
    let model = alexc_frontend::load(&models_dir().join("alexnet.ron"), 1).expect("loads");
    let g = &model.graph;
    let init = |name: &str| match &g[g.find(name).expect(name)].op {
        Op::Parameter(p) => p.init.clone(),
        _ => panic!("{name} is not a parameter"),
    };
    use alexc_ir::Init;
    for layer in [
        "conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8",
    ] {
        assert_eq!(
            init(&format!("{layer}.weight")),
            Init::Normal {
                mean: 0.0,
                std: 0.01
            }
        );
        let bias = if ["conv1", "conv3"].contains(&layer) {
            0.0
        } else {
            1.0
        };
        assert_eq!(
            init(&format!("{layer}.bias")),
            Init::Constant { value: bias },
            "{layer}"
        );
    }
}

mod robustness {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Deleting, duplicating or replacing any stretch of a real model
        /// file gives an error or a model, never a panic.
        #[test]
        fn mutated_models_never_panic(start in 0usize..4000, len in 0usize..40, mode in 0u8..3, byte in 0u8..128) {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/alexnet-2gpu.ron");
            let text = std::fs::read_to_string(path).expect("model file");
            let bytes = text.as_bytes();
            let start = start.min(bytes.len());
            let end = (start + len).min(bytes.len());
            let mut mutated = bytes[..start].to_vec();
            match mode {
                0 => {}
                1 => mutated.extend_from_slice(&bytes[start..end]),
                _ => mutated.push(byte),
            }
            mutated.extend_from_slice(if mode == 1 { &bytes[start..] } else { &bytes[end..] });
            let text = String::from_utf8_lossy(&mutated);
            let _ = alexc_frontend::parse(&text, "mutated.ron", 1);
        }
    }
}
