//! The pass manager: rollback, verification, disabling, dumps, timings.

mod common;

use alexc_ir::{print, Graph, Op};
use alexc_passes::{
    default_pipeline, Pass, PassContext, PassError, PassManager, PipelineMode, PipelineOptions,
    PrintAfter,
};
use common::small_net;

/// Edits the graph, then fails.
struct FailsHalfway;

impl Pass for FailsHalfway {
    fn name(&self) -> &'static str {
        "fails-halfway"
    }
    fn run(&self, graph: &mut Graph, _ctx: &mut PassContext) -> Result<bool, PassError> {
        let relu = graph.find("relu1").expect("relu1");
        graph.add("extra", Op::Relu, &[relu.into()]).expect("add");
        Err(PassError::Unsupported {
            pass: "fails-halfway",
            message: "on purpose".into(),
        })
    }
}

/// Leaves a cycle behind.
struct BreaksTheGraph;

impl Pass for BreaksTheGraph {
    fn name(&self) -> &'static str {
        "breaks-the-graph"
    }
    fn run(&self, graph: &mut Graph, _ctx: &mut PassContext) -> Result<bool, PassError> {
        let relu = graph.find("relu1").expect("relu1");
        let conv = graph.find("conv1").expect("conv1");
        graph.add_raw_edge(relu.into(), conv, 3);
        Ok(true)
    }
}

fn options() -> PipelineOptions {
    PipelineOptions {
        verify_each: true,
        ..PipelineOptions::default()
    }
}

#[test]
fn a_failing_pass_leaves_the_graph_as_it_was() {
    let mut g = small_net();
    let before = print::to_text(&g);
    let err = PassManager::new(vec![Box::new(FailsHalfway)], options())
        .run(&mut g)
        .expect_err("fails");
    assert!(err.to_string().contains("on purpose"));
    assert_eq!(print::to_text(&g), before);
}

#[test]
fn the_verifier_runs_after_every_pass() {
    let mut g = small_net();
    let before = print::to_text(&g);
    let err = PassManager::new(vec![Box::new(BreaksTheGraph)], options())
        .run(&mut g)
        .expect_err("caught");
    assert!(
        matches!(
            err,
            PassError::Verify {
                pass: "breaks-the-graph",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(print::to_text(&g), before);
}

#[test]
fn disabled_passes_do_not_run() {
    let mut g = small_net();
    let mut opts = options();
    opts.disabled.insert("fails-halfway".into());
    let ctx = PassManager::new(vec![Box::new(FailsHalfway)], opts)
        .run(&mut g)
        .expect("skipped");
    assert_eq!(ctx.timings.len(), 1);
    assert!(!ctx.timings[0].ran);
}

#[test]
fn unknown_pass_names_are_errors() {
    let mut g = small_net();
    let mut opts = options();
    opts.disabled.insert("fuse-everything".into());
    let err = default_pipeline(opts)
        .run(&mut g)
        .expect_err("unknown name");
    let text = err.to_string();
    assert!(
        text.contains("fuse-everything") && text.contains("autodiff"),
        "{text}"
    );
}

#[test]
fn the_default_pipeline_names_every_pass_once() {
    let names = default_pipeline(options()).names();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    insta::assert_snapshot!(names.join("\n"));
}

#[test]
fn print_after_and_timings() {
    let mut g = small_net();
    let opts = PipelineOptions {
        mode: PipelineMode::Training,
        print_after: PrintAfter::Passes(["autodiff".to_string()].into_iter().collect()),
        ..options()
    };
    let ctx = default_pipeline(opts).run(&mut g).expect("pipeline");
    assert_eq!(ctx.dumps.len(), 1);
    assert_eq!(ctx.dumps[0].0, "autodiff");
    assert!(ctx.dumps[0].1.contains("softmax-cross-entropy-backward"));
    let ran: Vec<&str> = ctx
        .timings
        .iter()
        .filter(|t| t.ran)
        .map(|t| t.pass)
        .collect();
    assert!(
        ran.contains(&"autodiff") && ran.contains(&"optimizer"),
        "{ran:?}"
    );
}
