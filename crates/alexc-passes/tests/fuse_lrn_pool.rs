//! `fuse-lrn-pool`: snapshots of the IR before and after the pass and of the
//! fusion report, on small hand-built graphs (fusable, rejected because of a
//! second consumer, a graph output or an avg-pool, training graphs with the
//! backward twins) and on AlexNet; every fused graph is verified and, on the
//! reference interpreter, computes the same outputs as the unfused one.

use alexc_interp::Mode;
use alexc_ir::{
    AlphaConvention, AvgPool2dAttrs, Graph, LinearAttrs, LinearBackwardAttrs, LrnAttrs, Op,
    Pool2dAttrs, ReshapeAttrs, Shape, ValueId,
};
use alexc_passes::fuse_lrn_pool::FuseLrnPool;
use alexc_passes::PassContext;

// ------------------------------------------------------------------ harness

mod common;

use common::fusion::{
    assert_same_outputs, input, labels, model_path, node, out, param, relu, run_passes,
    snapshot_text,
};

/// Runs the pass on `graph`, snapshots it as `name`, checks the fused graph
/// against the original on the interpreter in `mode`, and returns the
/// fused graph and the context.
fn fuse(name: &str, graph: &Graph, mode: Mode) -> (Graph, PassContext) {
    let (fused, ctx) = run_passes(graph, vec![Box::new(FuseLrnPool)]);
    insta::assert_snapshot!(name, snapshot_text("fuse-lrn-pool", graph, &fused, &ctx));
    assert_same_outputs(graph, &fused, mode);
    (fused, ctx)
}

// ------------------------------------------------------------------ builders

fn lrn_attrs() -> LrnAttrs {
    LrnAttrs {
        size: 5,
        alpha: 1e-2,
        beta: 0.75,
        k: 2.0,
        alpha_convention: AlphaConvention::DividedBySize,
    }
}

fn pool_attrs() -> Pool2dAttrs {
    Pool2dAttrs {
        kernel: [3, 3],
        stride: [2, 2],
        padding: [0, 0],
    }
}

fn lrn(g: &mut Graph, name: &str, x: ValueId) -> ValueId {
    node(g, name, Op::Lrn(lrn_attrs()), &[x])
}

fn max_pool(g: &mut Graph, name: &str, x: ValueId) -> ValueId {
    node(g, name, Op::MaxPool2d(pool_attrs()), &[x])
}

// ------------------------------------------------------------------ inference graphs

#[test]
fn fuses_lrn_and_max_pool() {
    let mut g = Graph::new("lrn-pool", 2);
    let x = input(&mut g, "image", &[2, 6, 9, 9]);
    let r = relu(&mut g, "relu1", x);
    let l = lrn(&mut g, "norm1", r);
    let p = max_pool(&mut g, "pool1", l);
    let l2 = lrn(&mut g, "norm2", p);
    let p2 = max_pool(&mut g, "pool2", l2);
    // pool1 is also an output: the fused node takes it over.
    out(&mut g, &[p2, p]);
    let (fused, ctx) = fuse("two_pairs", &g, Mode::Eval);
    let names: Vec<&str> = ctx.fusion.groups.iter().map(|g| g.fused.as_str()).collect();
    assert_eq!(names, ["norm1+pool1", "norm2+pool2"]);
    assert!(ctx.fusion.rejected.is_empty());
    assert_eq!(
        fused
            .nodes_where(|op| matches!(op, Op::Lrn(_) | Op::MaxPool2d(_)))
            .len(),
        0
    );
}

#[test]
fn rejects_a_second_consumer() {
    let mut g = Graph::new("second-consumer", 2);
    let x = input(&mut g, "image", &[2, 6, 9, 9]);
    let l = lrn(&mut g, "norm1", x);
    let p = max_pool(&mut g, "pool1", l);
    let r = relu(&mut g, "relu9", l);
    out(&mut g, &[p, r]);
    let (_, ctx) = fuse("second_consumer", &g, Mode::Eval);
    assert!(ctx.fusion.groups.is_empty());
    assert_eq!(
        ctx.fusion.rejected[0].reason,
        "norm1 has a second consumer (relu9)"
    );
    assert!(!ctx.timings[0].changed);
}

#[test]
fn rejects_an_intermediate_graph_output() {
    let mut g = Graph::new("intermediate-output", 2);
    let x = input(&mut g, "image", &[2, 6, 9, 9]);
    let l = lrn(&mut g, "norm1", x);
    let p = max_pool(&mut g, "pool1", l);
    out(&mut g, &[p, l]);
    let (_, ctx) = fuse("intermediate_output", &g, Mode::Eval);
    assert!(ctx.fusion.groups.is_empty());
    assert_eq!(ctx.fusion.rejected[0].reason, "norm1 is a graph output");
}

#[test]
fn rejects_an_avg_pool() {
    let mut g = Graph::new("avg-pool", 2);
    let x = input(&mut g, "image", &[2, 6, 9, 9]);
    let l = lrn(&mut g, "norm1", x);
    let avg = Op::AvgPool2d(AvgPool2dAttrs {
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1, 1],
        count_include_pad: true,
    });
    let p = node(&mut g, "pool1", avg, &[l]);
    out(&mut g, &[p]);
    let (_, ctx) = fuse("avg_pool", &g, Mode::Eval);
    assert!(ctx.fusion.groups.is_empty());
    assert_eq!(
        ctx.fusion.rejected[0].reason,
        "pool1 is an avg-pool: only LRN + max-pool has a fused op"
    );
}

#[test]
fn fuses_a_padded_pool() {
    let mut g = Graph::new("padded-pool", 1);
    let x = input(&mut g, "image", &[1, 3, 7, 5]);
    let l = lrn(&mut g, "norm1", x);
    let pool = Op::MaxPool2d(Pool2dAttrs {
        kernel: [3, 2],
        stride: [1, 2],
        padding: [1, 1],
    });
    let p = node(&mut g, "pool1", pool, &[l]);
    out(&mut g, &[p]);
    let (_, ctx) = fuse("padded_pool", &g, Mode::Eval);
    assert_eq!(ctx.fusion.groups.len(), 1);
}

#[test]
fn alexnet() {
    let model = alexc_frontend::load(&model_path("alexnet.ron"), 1).expect("alexnet loads");
    let (_, ctx) = fuse("alexnet", &model.graph, Mode::Eval);
    let fused: Vec<&str> = ctx.fusion.groups.iter().map(|g| g.fused.as_str()).collect();
    assert_eq!(fused, ["norm1+pool1", "norm2+pool2"]);
    assert!(ctx.fusion.rejected.is_empty());
}

// ------------------------------------------------------------------ training graphs

/// A training graph shaped like autodiff's output: ReLU, LRN, max-pool, a
/// classifier and the loss, and the backward of all of it. With
/// `grad_output`, the pool's input gradient (`pool1.backward`) is also a
/// graph output, so the twin cannot fuse — and then neither can the pair,
/// because `pool1.backward` needs the stored LRN output.
fn training_graph(grad_output: bool) -> Graph {
    let mut g = Graph::new("lrn-training", 2);
    let x = input(&mut g, "image", &[2, 6, 7, 7]);
    let y = labels(&mut g, 2);
    let r = relu(&mut g, "relu1", x);
    let l = lrn(&mut g, "norm1", r);
    let p = max_pool(&mut g, "pool1", l);
    let flat = node(&mut g, "flatten", Op::Flatten, &[p]);
    let fc_attrs = LinearAttrs {
        out_features: 3,
        bias: true,
    };
    let fw = param(&mut g, "fc.weight", &[3, 54]);
    let fb = param(&mut g, "fc.bias", &[3]);
    let logits = node(&mut g, "fc", Op::Linear(fc_attrs.clone()), &[flat, fw, fb]);
    let loss = node(&mut g, "loss", Op::SoftmaxCrossEntropy, &[logits, y]);

    let dlogits = node(
        &mut g,
        "loss.backward",
        Op::SoftmaxCrossEntropyBackward,
        &[logits, y],
    );
    let fc_bwd = LinearBackwardAttrs {
        linear: fc_attrs,
        input_grad: true,
        relu: false,
        dropout: false,
    };
    let fcb = g
        .add(
            "fc.backward",
            Op::LinearBackward(fc_bwd),
            &[flat, fw, dlogits],
        )
        .expect("fc.backward");
    let reshape = Op::Reshape(ReshapeAttrs {
        shape: Shape::new(vec![2, 6, 3, 3]),
    });
    let dp = node(&mut g, "flatten.backward", reshape, &[ValueId::new(fcb, 0)]);
    let dl = node(
        &mut g,
        "pool1.backward",
        Op::MaxPool2dBackward(pool_attrs()),
        &[l, dp],
    );
    let dr = node(
        &mut g,
        "norm1.backward",
        Op::LrnBackward(lrn_attrs()),
        &[r, dl],
    );
    let dx = node(&mut g, "relu1.backward", Op::ReluBackward, &[r, dr]);

    let mut outputs = vec![loss, logits, dx, ValueId::new(fcb, 1), ValueId::new(fcb, 2)];
    if grad_output {
        outputs.push(dl);
    }
    out(&mut g, &outputs);
    g
}

#[test]
fn fuses_the_backward_twins() {
    let g = training_graph(false);
    let (fused, ctx) = fuse("training", &g, Mode::Train { seed: 3 });
    let groups: Vec<(Vec<&str>, &str)> = ctx
        .fusion
        .groups
        .iter()
        .map(|g| {
            (
                g.nodes.iter().map(String::as_str).collect(),
                g.fused.as_str(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            (vec!["norm1", "pool1"], "norm1+pool1"),
            (
                vec!["pool1.backward", "norm1.backward"],
                "norm1+pool1.backward"
            ),
        ]
    );
    assert!(ctx.fusion.rejected.is_empty());
    assert!(fused
        .nodes_where(|op| matches!(
            op,
            Op::Lrn(_) | Op::LrnBackward(_) | Op::MaxPool2dBackward(_)
        ))
        .is_empty());
}

#[test]
fn rejects_a_pair_whose_twin_cannot_fuse() {
    let g = training_graph(true);
    let (_, ctx) = fuse("training_twin_rejected", &g, Mode::Train { seed: 3 });
    assert!(ctx.fusion.groups.is_empty());
    assert_eq!(
        ctx.fusion.rejected[0].reason,
        "norm1 is also read by pool1.backward, the pool's backward, whose twin cannot fuse: \
         pool1.backward is a graph output"
    );
}
