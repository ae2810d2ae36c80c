//! Tests of the `mem-plan` pass: hand-built graphs with known offsets,
//! liveness and reuses; a property test that random graphs get sound plans
//! (checked against liveness recomputed here, not the plan's own); and the
//! AlexNet summaries as snapshots.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use alexc_ir::{
    ConcatAttrs, Conv2dAttrs, DType, DropoutAttrs, Graph, Init, InputAttrs, MomentumAttrs, NodeId,
    Op, OpPattern, ParameterAttrs, Pool2dAttrs, SgdAttrs, SgdConvention, Shape, SplitAttrs,
    ValueId,
};
use alexc_passes::mem_plan::{
    plan, Buffer, ExternalKind, LiveRange, MemPlan, MemoryPlan, ReuseKind, ALIGNMENT,
};
use alexc_passes::{Pass, PassContext, PassError, PassManager, PipelineOptions};
use proptest::prelude::*;

// ---------------------------------------------------------------- builders

fn input(g: &mut Graph, name: &str, dims: &[usize]) -> ValueId {
    let op = Op::Input(InputAttrs {
        dtype: DType::F32,
        shape: Shape::new(dims.to_vec()),
    });
    g.add(name, op, &[]).expect("input").into()
}

fn param(g: &mut Graph, name: &str, dims: &[usize]) -> ValueId {
    let op = Op::Parameter(ParameterAttrs {
        dtype: DType::F32,
        shape: Shape::new(dims.to_vec()),
        init: Init::Constant { value: 0.0 },
    });
    g.add(name, op, &[]).expect("parameter").into()
}

fn momentum(g: &mut Graph, name: &str, of: &str, dims: &[usize]) -> ValueId {
    let op = Op::Momentum(MomentumAttrs {
        dtype: DType::F32,
        shape: Shape::new(dims.to_vec()),
        of: of.into(),
    });
    g.add(name, op, &[]).expect("momentum").into()
}

fn node(g: &mut Graph, name: &str, op: Op, operands: &[ValueId]) -> ValueId {
    g.add(name, op, operands).expect(name).into()
}

/// A bias-free convolution with a new weight; `kernel` 1 or 3 keeps H×W.
fn conv(g: &mut Graph, name: &str, x: ValueId, out: usize, kernel: usize) -> ValueId {
    let c = g.value_type(x).expect("conv operand").shape.dims()[1];
    let w = param(g, &format!("{name}.weight"), &[out, c, kernel, kernel]);
    let op = Op::Conv2d(Conv2dAttrs {
        out_channels: out,
        kernel: [kernel; 2],
        stride: [1; 2],
        padding: [(kernel - 1) / 2; 2],
        dilation: [1; 2],
        groups: 1,
        bias: false,
    });
    node(g, name, op, &[x, w])
}

fn max_pool(kernel: usize, stride: usize) -> Op {
    Op::MaxPool2d(Pool2dAttrs {
        kernel: [kernel; 2],
        stride: [stride; 2],
        padding: [0; 2],
    })
}

fn sgd() -> Op {
    Op::SgdUpdate(SgdAttrs {
        momentum: 0.9,
        weight_decay: 5e-4,
        convention: SgdConvention::Paper,
    })
}

fn run(g: &Graph) -> MemoryPlan {
    plan(g).expect("mem-plan")
}

fn buf(p: &MemoryPlan, v: ValueId) -> &Buffer {
    p.buffer(v).unwrap_or_else(|| panic!("no buffer for {v}"))
}

fn range(first: usize, last: usize) -> LiveRange {
    LiveRange { first, last }
}

fn reused(p: &MemoryPlan, v: ValueId) -> Option<(String, ReuseKind)> {
    buf(p, v).reuses.as_ref().map(|r| (r.value.clone(), r.kind))
}

// ---------------------------------------------------------- hand-built graphs

/// x → conv → relu → pool → relu (output): each relu overwrites its operand,
/// and the pool's buffer cannot share bytes with the conv's (both live at
/// the pool's step).
#[test]
fn chain_reuses_elementwise_and_packs() {
    let mut g = Graph::new("chain", 1);
    let x = input(&mut g, "x", &[1, 4, 8, 8]); // step 0
    let c = conv(&mut g, "conv", x, 8, 3); // weight step 1, conv step 2: 2048 bytes
    let r = node(&mut g, "relu", Op::Relu, &[c]); // step 3
    let p = node(&mut g, "pool", max_pool(2, 2), &[r]); // step 4: 512 bytes
    let r2 = node(&mut g, "relu2", Op::Relu, &[p]); // step 5
    g.set_outputs(vec![r2]).expect("outputs");

    let plan = run(&g);
    assert_eq!(
        plan.order,
        ["x", "conv.weight", "conv", "relu", "pool", "relu2"]
    );
    assert_eq!(plan.buffers.len(), 4);
    assert_eq!(buf(&plan, c).live, range(2, 3));
    assert_eq!(buf(&plan, r).live, range(3, 4));
    assert_eq!(buf(&plan, p).live, range(4, 5));
    // A graph output lives to the last step.
    assert_eq!(buf(&plan, r2).live, range(5, 5));

    assert_eq!(
        reused(&plan, r),
        Some(("%2".to_string(), ReuseKind::Elementwise))
    );
    assert_eq!(
        reused(&plan, r2),
        Some(("%4".to_string(), ReuseKind::Elementwise))
    );
    assert_eq!(reused(&plan, c), None);
    assert_eq!(reused(&plan, p), None);

    // Largest first: conv/relu at 0, pool/relu2 after it.
    assert_eq!(buf(&plan, c).offset, Some(0));
    assert_eq!(buf(&plan, r).offset, Some(0));
    assert_eq!(buf(&plan, p).offset, Some(2048));
    assert_eq!(buf(&plan, r2).offset, Some(2048));
    assert_eq!(plan.arena_bytes, 2048 + 512);
    assert_eq!(plan.peak_bytes, 2048 + 512);
    assert_eq!(plan.peak_step, 4);
    assert_eq!(plan.arena_buffers(), 2);
    assert_eq!(plan.in_place_reuses(), 2);

    // Sources are external, parameters persistent.
    assert_eq!(plan.external.len(), 2);
    let xe = plan.external(x).expect("x");
    assert_eq!(
        (xe.kind, xe.persistent, xe.size),
        (ExternalKind::Input, false, 1024)
    );
    let we = plan.external(ValueId::from(NodeId(1))).expect("weight");
    assert_eq!(
        (we.kind, we.persistent, we.size),
        (ExternalKind::Parameter, true, 8 * 4 * 9 * 4)
    );
    assert_eq!(we.node, "conv.weight");
}

/// A value read again later is not overwritten; once both operands of the
/// add die there, the add takes the first one's buffer.
#[test]
fn operand_read_later_is_not_overwritten() {
    let mut g = Graph::new("branch", 1);
    let x = input(&mut g, "x", &[1, 2, 4, 4]); // 0
    let c = conv(&mut g, "conv", x, 4, 1); // 1, 2
    let a = node(&mut g, "a", Op::Relu, &[c]); // 3
    let b = node(&mut g, "b", Op::Relu, &[a]); // 4: a is read again at 5
    let s = node(&mut g, "s", Op::Add, &[a, b]); // 5
    g.set_outputs(vec![s]).expect("outputs");

    let plan = run(&g);
    assert_eq!(
        reused(&plan, a),
        Some(("%2".to_string(), ReuseKind::Elementwise))
    );
    assert_eq!(reused(&plan, b), None);
    assert_eq!(
        reused(&plan, s),
        Some(("%3".to_string(), ReuseKind::Elementwise))
    );
    let (oa, ob) = (buf(&plan, a).offset, buf(&plan, b).offset);
    assert_ne!(oa, ob);
    assert_eq!(buf(&plan, s).offset, oa);
    // 256 bytes each: both live at steps 4 and 5.
    assert_eq!(plan.peak_bytes, 512);
    assert_eq!(plan.arena_bytes, 512);
}

/// An elementwise op takes the first operand that qualifies, not only the
/// first operand: here operand 0 is external.
#[test]
fn elementwise_takes_a_later_operand_when_the_first_is_external() {
    let mut g = Graph::new("second", 1);
    let x = input(&mut g, "x", &[1, 2, 4, 4]); // 0
    let r = node(&mut g, "r", Op::Relu, &[x]); // 1: x is external, no reuse
    let m = node(&mut g, "m", Op::Mul, &[x, r]); // 2: takes r
    g.set_outputs(vec![m]).expect("outputs");

    let plan = run(&g);
    assert_eq!(reused(&plan, r), None);
    assert_eq!(
        reused(&plan, m),
        Some(("%1".to_string(), ReuseKind::Elementwise))
    );
    assert_eq!(plan.arena_bytes, 128);
}

/// Graph outputs are never overwritten, and buffers of different sizes are
/// never merged.
#[test]
fn outputs_and_size_changes_block_reuse() {
    let mut g = Graph::new("outputs", 1);
    let x = input(&mut g, "x", &[1, 2, 4, 4]); // 0
    let c = conv(&mut g, "conv", x, 4, 1); // 1, 2
    let r = node(&mut g, "relu", Op::Relu, &[c]); // 3: c is an output
    let d = node(&mut g, "drop", Op::Dropout(DropoutAttrs { p: 0.5 }), &[r]); // 4: takes r
    g.set_outputs(vec![c, d]).expect("outputs");

    let plan = run(&g);
    assert_eq!(buf(&plan, c).live, range(2, 4));
    assert_eq!(reused(&plan, r), None);
    assert_eq!(
        reused(&plan, d),
        Some(("%3".to_string(), ReuseKind::Elementwise))
    );
    assert_ne!(buf(&plan, c).offset, buf(&plan, r).offset);
    assert_eq!(plan.arena_bytes, 2 * 256);

    // An output read last by the last node dies there too, and still stays.
    let mut g = Graph::new("last", 1);
    let x = input(&mut g, "x", &[1, 2, 4, 4]); // 0
    let c = conv(&mut g, "conv", x, 4, 1); // 1, 2
    let r = node(&mut g, "relu", Op::Relu, &[c]); // 3, the last step
    g.set_outputs(vec![c, r]).expect("outputs");
    let plan = run(&g);
    assert_eq!(buf(&plan, c).live, range(2, 3));
    assert_eq!(reused(&plan, r), None);
    assert_eq!(plan.arena_bytes, 2 * 256);

    // Flatten is not elementwise: no reuse, even at the same size.
    let mut g = Graph::new("flatten", 1);
    let x = input(&mut g, "x", &[1, 2, 4, 4]); // 0
    let r = node(&mut g, "relu", Op::Relu, &[x]); // 1
    let f = node(&mut g, "flat", Op::Flatten, &[r]); // 2
    g.set_outputs(vec![f]).expect("outputs");
    let plan = run(&g);
    assert_eq!(buf(&plan, f).size, buf(&plan, r).size);
    assert_eq!(reused(&plan, f), None);
    assert_eq!(plan.arena_bytes, 2 * 128);
}

/// An unused split result still gets bytes at its producer's step, apart
/// from the used result and from the split's operand.
#[test]
fn unused_split_result_still_gets_space() {
    let mut g = Graph::new("split", 1);
    let x = input(&mut g, "x", &[1, 2, 4, 4]); // 0
    let c = conv(&mut g, "conv", x, 8, 1); // 1, 2: 512 bytes
    let split = Op::Split(SplitAttrs {
        axis: 1,
        sizes: vec![4, 4],
    });
    let sid = g.add("split", split, &[c]).expect("split"); // 3
    let (s0, s1) = (ValueId::new(sid, 0), ValueId::new(sid, 1));
    let r = node(&mut g, "relu", Op::Relu, &[s0]); // 4
    g.set_outputs(vec![r]).expect("outputs");

    let plan = run(&g);
    let b1 = buf(&plan, s1);
    assert_eq!(b1.value, "%3.1");
    assert_eq!((b1.producer.as_str(), b1.output), ("split", 1));
    assert_eq!(b1.live, range(3, 3));
    assert_eq!(buf(&plan, s0).live, range(3, 4));
    assert_eq!(
        reused(&plan, r),
        Some(("%3".to_string(), ReuseKind::Elementwise))
    );
    // conv (512) and both halves (256 each) are live at step 3.
    let mut spans: Vec<(u64, u64)> = [c, s0, s1]
        .iter()
        .map(|&v| {
            let b = buf(&plan, v);
            let o = b.offset.expect("arena");
            (o, o + b.size)
        })
        .collect();
    spans.sort_unstable();
    assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "{spans:?}");
    assert_eq!(plan.peak_bytes, 1024);
    assert_eq!(plan.peak_step, 3);
    assert_eq!(plan.arena_bytes, 1024);
}

/// The optimizer's update is written over the parameter and momentum: no
/// arena space, and the plan says which external buffer it overwrites.
#[test]
fn sgd_update_aliases_external_state() {
    let mut g = Graph::new("sgd", 1);
    let x = input(&mut g, "x", &[1, 2, 4, 4]); // 0
    let w = param(&mut g, "w", &[3, 2, 1, 1]); // 1
    let v = momentum(&mut g, "w.momentum", "w", &[3, 2, 1, 1]); // 2
    let lr = input(&mut g, "lr", &[]); // 3
    let conv = Op::Conv2d(Conv2dAttrs {
        out_channels: 3,
        kernel: [1; 2],
        stride: [1; 2],
        padding: [0; 2],
        dilation: [1; 2],
        groups: 1,
        bias: false,
    });
    let y = node(&mut g, "conv", conv, &[x, w]); // 4
    let grad = node(&mut g, "grad", Op::Relu, &[w]); // 5
    let uid = g.add("update", sgd(), &[w, v, grad, lr]).expect("update"); // 6
    g.set_outputs(vec![y]).expect("outputs");

    let plan = run(&g);
    let (w1, v1) = (ValueId::new(uid, 0), ValueId::new(uid, 1));
    assert_eq!(
        reused(&plan, w1),
        Some(("%1".to_string(), ReuseKind::InPlace))
    );
    assert_eq!(
        reused(&plan, v1),
        Some(("%2".to_string(), ReuseKind::InPlace))
    );
    assert_eq!(buf(&plan, w1).offset, None);
    assert_eq!(buf(&plan, v1).offset, None);
    assert_eq!(plan.reuses(ReuseKind::InPlace), 2);
    assert_eq!(plan.reuses(ReuseKind::Elementwise), 0);
    // Arena: the conv output (192 bytes, live to the end) and the gradient
    // (24 bytes), both live at the update.
    assert_eq!(plan.arena_buffers(), 2);
    assert_eq!(buf(&plan, y).offset, Some(0));
    assert_eq!(buf(&plan, grad).offset, Some(192));
    assert_eq!(plan.peak_bytes, 192 + 24);
    assert_eq!(plan.arena_bytes, 192 + 24);
    let kinds: Vec<(ExternalKind, bool)> = plan
        .external
        .iter()
        .map(|e| (e.kind, e.persistent))
        .collect();
    assert_eq!(
        kinds,
        [
            (ExternalKind::Input, false),
            (ExternalKind::Parameter, true),
            (ExternalKind::Momentum, true),
            (ExternalKind::Input, false),
        ]
    );
}

/// A node that reads a parameter after its in-place update would see the
/// new value: the planner refuses rather than emit a wrong plan.
#[test]
fn read_after_in_place_update_is_an_error() {
    let mut g = Graph::new("hazard", 1);
    let x = input(&mut g, "x", &[1, 2, 4, 4]); // 0
    let w = param(&mut g, "w", &[3, 2, 1, 1]); // 1
    let v = momentum(&mut g, "w.momentum", "w", &[3, 2, 1, 1]); // 2
    let lr = input(&mut g, "lr", &[]); // 3
    let grad = node(&mut g, "grad", Op::Relu, &[w]); // 4
    g.add("update", sgd(), &[w, v, grad, lr]).expect("update"); // 5
    let conv = Op::Conv2d(Conv2dAttrs {
        out_channels: 3,
        kernel: [1; 2],
        stride: [1; 2],
        padding: [0; 2],
        dilation: [1; 2],
        groups: 1,
        bias: false,
    });
    let y = node(&mut g, "late-conv", conv, &[x, w]); // 6: after the update
    g.set_outputs(vec![y]).expect("outputs");

    let err = plan(&g).expect_err("hazard");
    assert!(
        matches!(
            err,
            PassError::Unsupported {
                pass: "mem-plan",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("late-conv reads it later"),
        "{err}"
    );

    let mut ctx = PassContext::default();
    assert!(MemPlan.run(&mut g, &mut ctx).is_err());
    assert!(ctx.plan.is_none());
}

/// The pass is an analysis: the graph is unchanged, the plan is in the
/// context, also when run by the manager.
#[test]
fn pass_stores_the_plan_and_leaves_the_graph() {
    let mut g = Graph::new("chain", 2);
    let x = input(&mut g, "x", &[2, 3, 6, 6]);
    let c = conv(&mut g, "conv", x, 4, 3);
    let r = node(&mut g, "relu", Op::Relu, &[c]);
    g.set_outputs(vec![r]).expect("outputs");
    let before = alexc_ir::print::to_text(&g);

    assert_eq!(MemPlan.name(), "mem-plan");
    let mut ctx = PassContext::default();
    assert!(!MemPlan.run(&mut g, &mut ctx).expect("run"));
    assert_eq!(alexc_ir::print::to_text(&g), before);
    let direct = ctx.plan.expect("plan");
    assert_eq!(direct, run(&g));
    assert_eq!((direct.model.as_str(), direct.batch), ("chain", 2));

    let manager = PassManager::new(vec![Box::new(MemPlan)], PipelineOptions::default());
    let ctx = manager.run(&mut g).expect("pipeline");
    assert_eq!(ctx.plan.as_ref(), Some(&direct));
    assert_eq!(alexc_ir::print::to_text(&g), before);
}

/// `alexc compile --emit plan` writes the plan; it reads back unchanged.
#[test]
fn plan_round_trips_through_json() {
    let mut g = Graph::new("json", 1);
    let x = input(&mut g, "x", &[1, 2, 4, 4]);
    let c = conv(&mut g, "conv", x, 4, 3);
    let r = node(&mut g, "relu", Op::Relu, &[c]);
    g.set_outputs(vec![r]).expect("outputs");
    let plan = run(&g);
    let text = serde_json::to_string_pretty(&plan).expect("serialize");
    assert!(
        text.contains(
            "\"reuses\": {\n        \"value\": \"%2\",\n        \"kind\": \"elementwise\""
        ),
        "{text}"
    );
    let back: MemoryPlan = serde_json::from_str(&text).expect("deserialize");
    assert_eq!(back, plan);
}

/// Nothing to plan: only sources.
#[test]
fn graph_of_sources_has_an_empty_arena() {
    let mut g = Graph::new("empty", 1);
    let x = input(&mut g, "x", &[1, 3]);
    g.set_outputs(vec![x]).expect("outputs");
    let plan = run(&g);
    assert!(plan.buffers.is_empty());
    assert_eq!(
        (plan.arena_bytes, plan.peak_bytes, plan.peak_step),
        (0, 0, 0)
    );
    assert_eq!(plan.external.len(), 1);
}

// ------------------------------------------------------------------ AlexNet

fn alexnet(batch: usize) -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/alexnet.ron");
    alexc_frontend::load(&path, batch)
        .expect("alexnet.ron")
        .graph
}

#[test]
fn alexnet_summaries() {
    for batch in [1, 32] {
        let mut g = alexnet(batch);
        let mut ctx = PassContext::default();
        assert!(!MemPlan.run(&mut g, &mut ctx).expect("mem-plan"));
        let plan = ctx.plan.expect("plan");
        check_plan(&g, &plan).expect("sound plan");
        insta::assert_snapshot!(format!("alexnet-batch{batch}-summary"), plan.summary());
    }
}

// --------------------------------------------------------- the plan checker

/// Checks `plan` against liveness recomputed from `graph`: every non-source
/// result has a buffer with the right live range; every reuse is legal; two
/// buffers (an alias and the value it overwrites count as one) that are live
/// at one step never share bytes; offsets are aligned; the arena holds every
/// buffer; and `peak_bytes` is the peak of live bytes.
fn check_plan(graph: &Graph, plan: &MemoryPlan) -> Result<(), String> {
    let order = graph.topo_order().map_err(|_| "cycle".to_string())?;
    let names: Vec<&str> = order.iter().map(|&id| graph[id].name.as_str()).collect();
    if plan.order != names {
        return Err(format!("order {:?} != {names:?}", plan.order));
    }
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let end = order.len().saturating_sub(1);
    let outputs: HashSet<ValueId> = graph.outputs().iter().copied().collect();

    // Independent liveness of every value.
    let mut live: HashMap<ValueId, LiveRange> = HashMap::new();
    for &id in &order {
        for k in 0..graph[id].outputs.len() {
            let v = ValueId::new(id, k as u16);
            let p = pos[&id];
            let mut last = if outputs.contains(&v) { end } else { p };
            for (user, _, used) in graph.users(id) {
                if used == v {
                    last = last.max(pos[&user]);
                }
            }
            live.insert(v, LiveRange { first: p, last });
        }
    }

    let mut by_name: HashMap<String, ValueId> = HashMap::new();
    let mut arena: Vec<ValueId> = Vec::new();
    for &id in &order {
        let n = &graph[id];
        for (k, ty) in n.outputs.iter().enumerate() {
            let v = ValueId::new(id, k as u16);
            by_name.insert(v.to_string(), v);
            let size = ty.size_bytes() as u64;
            if n.op.is_source() {
                let e = plan
                    .external(v)
                    .ok_or(format!("no external buffer for {v}"))?;
                if e.size != size || plan.buffer(v).is_some() {
                    return Err(format!("external {v} is wrong"));
                }
                continue;
            }
            let b = plan.buffer(v).ok_or(format!("no buffer for {v}"))?;
            if b.size != size || b.producer != n.name || b.live != live[&v] {
                return Err(format!("buffer {v}: {b:?}, live {:?}", live[&v]));
            }
            if let Some(o) = b.offset {
                if o % ALIGNMENT != 0 || o + b.size > plan.arena_bytes {
                    return Err(format!(
                        "{v} at {o} (+{}) in an arena of {}",
                        b.size, plan.arena_bytes
                    ));
                }
                arena.push(v);
            }
        }
    }
    if plan.buffers.len() + plan.external.len() != live.len() {
        return Err("extra buffers".to_string());
    }

    // Reuses: legal, and each value overwritten at most once.
    let mut root: HashMap<ValueId, ValueId> = HashMap::new();
    let mut overwritten: HashSet<ValueId> = HashSet::new();
    for &id in &order {
        for k in 0..graph[id].outputs.len() {
            let v = ValueId::new(id, k as u16);
            let Some(b) = plan.buffer(v) else { continue };
            let Some(r) = &b.reuses else {
                root.insert(v, v);
                continue;
            };
            let old = by_name
                .get(&r.value)
                .copied()
                .ok_or(format!("{v} reuses unknown {}", r.value))?;
            if !overwritten.insert(old) {
                return Err(format!("{old} is overwritten twice"));
            }
            let op = &graph[id].op;
            let slot = graph.operands(id).iter().position(|&o| o == old);
            let Some(slot) = slot else {
                return Err(format!("{v} reuses {old}, not an operand"));
            };
            match r.kind {
                ReuseKind::InPlace if !op.in_place().contains(&(k, slot)) => {
                    return Err(format!("{v}: no in-place contract"))
                }
                ReuseKind::Elementwise if op.pattern() != OpPattern::ElemWise => {
                    return Err(format!("{v}: {} is not elementwise", op.name()))
                }
                ReuseKind::Elementwise
                    if outputs.contains(&old) || live[&old].last != live[&v].first =>
                {
                    return Err(format!("{v} overwrites {old}, which is still live"))
                }
                _ => {}
            }
            if graph.value_type(old).map(|t| t.size_bytes() as u64) != Some(b.size) {
                return Err(format!("{v} overwrites {old} of another size"));
            }
            match plan.buffer(old) {
                Some(ob) if ob.offset != b.offset => {
                    return Err(format!("{v} and {old} differ in offset"))
                }
                None if b.offset.is_some() => return Err(format!("{v} overwrites external {old}")),
                _ => {}
            }
            root.insert(v, root.get(&old).copied().unwrap_or(old));
        }
    }

    // No two live buffers of different roots share bytes.
    for (i, &a) in arena.iter().enumerate() {
        for &b in &arena[i + 1..] {
            if root[&a] == root[&b] || !live[&a].overlaps(&live[&b]) {
                continue;
            }
            let (ba, bb) = (buf(plan, a), buf(plan, b));
            let (oa, ob) = (ba.offset.unwrap_or(0), bb.offset.unwrap_or(0));
            if oa < ob + bb.size && ob < oa + ba.size {
                return Err(format!(
                    "{a} [{oa}, +{}) and {b} [{ob}, +{}) overlap",
                    ba.size, bb.size
                ));
            }
        }
    }

    // Peak: at each step, the bytes of the roots whose union range covers it.
    let mut spans: HashMap<ValueId, (u64, usize, usize)> = HashMap::new();
    for &v in &arena {
        let e = spans
            .entry(root[&v])
            .or_insert((buf(plan, v).size, live[&v].first, live[&v].last));
        e.1 = e.1.min(live[&v].first);
        e.2 = e.2.max(live[&v].last);
    }
    let peak = (0..order.len())
        .map(|s| {
            spans
                .values()
                .filter(|&&(_, f, l)| f <= s && s <= l)
                .map(|&(z, _, _)| z)
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0);
    if peak != plan.peak_bytes {
        return Err(format!("peak {} != {peak}", plan.peak_bytes));
    }
    if plan.arena_bytes < plan.peak_bytes {
        return Err(format!(
            "arena {} < peak {}",
            plan.arena_bytes, plan.peak_bytes
        ));
    }
    Ok(())
}

// ------------------------------------------------------------ random graphs

/// One step of a random graph: what to add, and which existing values to use.
#[derive(Clone, Debug)]
struct Step {
    kind: u8,
    a: usize,
    b: usize,
    param: usize,
}

fn step() -> impl Strategy<Value = Step> {
    (0u8..8, any::<usize>(), any::<usize>(), 0usize..64).prop_map(|(kind, a, b, param)| Step {
        kind,
        a,
        b,
        param,
    })
}

/// Builds a DAG from `steps`: each step applies relu, add, mul, concat,
/// split, conv, max-pool or an optimizer update to values picked from all
/// earlier results, so values get several readers and the graph branches.
fn random_graph(
    batch: usize,
    channels: usize,
    size: usize,
    steps: &[Step],
    extra_output: usize,
) -> Graph {
    let mut g = Graph::new("random", batch);
    let x = input(&mut g, "x", &[batch, channels, size, size]);
    let mut pool = vec![x];
    let mut lr = None;
    for (i, s) in steps.iter().enumerate() {
        let name = format!("n{i}");
        let v = pool[s.a % pool.len()];
        let ty = g.value_type(v).expect("type").clone();
        let dims = ty.shape.dims().to_vec();
        let same: Vec<ValueId> = pool
            .iter()
            .copied()
            .filter(|&w| g.value_type(w) == Some(&ty))
            .collect();
        let w = same[s.b % same.len()];
        match s.kind {
            0 => pool.push(node(&mut g, &name, Op::Relu, &[v])),
            1 => pool.push(node(&mut g, &name, Op::Add, &[v, w])),
            2 => pool.push(node(&mut g, &name, Op::Mul, &[v, w])),
            3 => {
                let fits: Vec<ValueId> = pool
                    .iter()
                    .copied()
                    .filter(|&u| {
                        let d = g.value_type(u).expect("type").shape.dims();
                        d[0] == dims[0] && d[2..] == dims[2..]
                    })
                    .collect();
                let u = fits[s.b % fits.len()];
                pool.push(node(
                    &mut g,
                    &name,
                    Op::Concat(ConcatAttrs { axis: 1 }),
                    &[v, u],
                ));
            }
            4 if dims[1] >= 2 => {
                let k = 1 + s.param % (dims[1] - 1);
                let op = Op::Split(SplitAttrs {
                    axis: 1,
                    sizes: vec![k, dims[1] - k],
                });
                let id = g.add(name, op, &[v]).expect("split");
                pool.push(ValueId::new(id, 0));
                pool.push(ValueId::new(id, 1));
            }
            5 => pool.push(conv(
                &mut g,
                &name,
                v,
                1 + s.param % 4,
                if s.param % 2 == 0 { 1 } else { 3 },
            )),
            6 => {
                let op = if dims[2] >= 2 {
                    max_pool(2, 2)
                } else {
                    max_pool(1, 1)
                };
                pool.push(node(&mut g, &name, op, &[v]));
            }
            7 => {
                // A fresh parameter and its update: nothing else reads it.
                let shape = [1 + s.param % 3, dims[1], 1, 1];
                let p = param(&mut g, &format!("{name}.w"), &shape);
                let m = momentum(&mut g, &format!("{name}.m"), &format!("{name}.w"), &shape);
                let lr = *lr.get_or_insert_with(|| input(&mut g, "lr", &[]));
                let grad = node(&mut g, &format!("{name}.grad"), Op::Relu, &[p]);
                let id = g.add(name, sgd(), &[p, m, grad, lr]).expect("sgd-update");
                pool.push(ValueId::new(id, 0));
            }
            _ => pool.push(node(
                &mut g,
                &name,
                Op::Dropout(DropoutAttrs { p: 0.5 }),
                &[v],
            )),
        }
    }
    let last = pool[pool.len() - 1];
    let extra = pool[extra_output % pool.len()];
    g.set_outputs(vec![last, extra]).expect("outputs");
    g
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_get_sound_plans(
        batch in 1usize..=2,
        channels in 1usize..=4,
        size in 1usize..=6,
        steps in prop::collection::vec(step(), 0..24),
        extra_output in any::<usize>(),
    ) {
        let g = random_graph(batch, channels, size, &steps, extra_output);
        prop_assert!(alexc_ir::verify(&g).is_ok());
        let plan = plan(&g).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Err(why) = check_plan(&g, &plan) {
            return Err(TestCaseError::fail(format!("{why}\n{}", alexc_ir::print::to_text(&g))));
        }
    }
}
