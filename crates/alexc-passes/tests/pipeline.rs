//! The default pipeline on AlexNet, end to end: the final IR, the fusion
//! report and the memory-plan summary, for inference and training, fused
//! and unfused, pinned by snapshots.

mod common;

use alexc_ir::print;
use alexc_passes::{default_pipeline, PassContext, PipelineMode, PipelineOptions};
use common::alexnet;

fn compile(batch: usize, mode: PipelineMode, no_fuse: bool) -> (alexc_ir::Graph, PassContext) {
    let mut g = alexnet(batch);
    let options = PipelineOptions {
        mode,
        no_fuse,
        verify_each: true,
        ..PipelineOptions::default()
    };
    let ctx = default_pipeline(options).run(&mut g).expect("pipeline");
    (g, ctx)
}

#[test]
fn alexnet_inference() {
    let (g, ctx) = compile(1, PipelineMode::Inference, false);
    assert_eq!(ctx.fusion.groups.len(), 9);
    let plan = ctx.plan.as_ref().expect("plan");
    insta::assert_snapshot!("inference-ir", print::to_text(&g));
    insta::assert_snapshot!("inference-fusion", ctx.fusion.to_text());
    insta::assert_snapshot!("inference-plan", plan.summary());
}

#[test]
fn alexnet_training_fused_uses_less_memory_than_unfused() {
    let (g, ctx) = compile(32, PipelineMode::Training, false);
    let (_, unfused) = compile(32, PipelineMode::Training, true);
    // 5 conv+ReLU, 2 LRN+pool, 2 linear+ReLU, each with its backward twin.
    assert_eq!(ctx.fusion.groups.len(), 18);
    assert!(unfused.fusion.groups.is_empty());
    let (fused, unfused) = (
        ctx.plan.as_ref().expect("plan"),
        unfused.plan.as_ref().expect("plan"),
    );
    assert!(
        fused.arena_bytes < unfused.arena_bytes,
        "{} vs {}",
        fused.arena_bytes,
        unfused.arena_bytes
    );
    assert!(fused.peak_bytes < unfused.peak_bytes);
    insta::assert_snapshot!("training-ir", print::to_text(&g));
    insta::assert_snapshot!("training-fusion", ctx.fusion.to_text());
    insta::assert_snapshot!(
        "training-plan",
        format!(
            "fused:\n{}\nunfused:\n{}",
            fused.summary(),
            unfused.summary()
        )
    );
}
