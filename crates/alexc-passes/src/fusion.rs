//! What the fusion passes share: the legality table derived from op pattern
//! classes, the report of their decisions (`--explain-fusion`), and the
//! machinery that turns a match into a safe rewrite.
//!
//! Legality is a property of the ops' [`OpPattern`]s, not a list of special
//! cases: a producer may absorb its consumer into its epilogue when the
//! producer is `OutEWiseFusable` and the consumer `ElemWise`; a `Reduction`
//! producer over a window may be recomputed inside an `OutEWiseFusable`
//! consumer's loop (its values never stored). Every fusion additionally
//! requires that the intermediate value has exactly one consumer and is not a
//! graph output — otherwise it must be materialized anyway. The one exception
//! is a training graph, where the backward twin of the pair may read the
//! intermediate too, provided the twin is fused in the same rewrite.
//!
//! The passes follow one scheme (see `drive`): a *matcher* looks at one
//! anchor node (the producer: a conv, an LRN, a linear layer) without
//! changing anything and returns a `Proposal` — a `Patch` and/or the
//! candidates it declined, with reasons. Only the driver applies patches.
//! A patch adds its fused nodes through [`Graph::add`] (so shape inference
//! checks them), reroutes every result of each replaced node to the
//! corresponding result of its fused node with [`Graph::replace_uses`], and
//! removes the dead nodes with [`Graph::remove`], which refuses to remove a
//! node that is still used. Any failure is returned as an error and the pass
//! manager restores the graph.

use alexc_ir::{Graph, GraphError, NodeId, Op, OpPattern, ValueId};
use serde::Serialize;

use crate::{PassContext, PassError};

/// How a producer and consumer fuse, if they can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FusionKind {
    /// The consumer becomes the producer's epilogue (bias, ReLU, mask applied
    /// in registers before the store).
    Epilogue,
    /// The producer is recomputed inside the consumer's loop nest.
    Prologue,
}

/// The legality table.
pub fn fusion_kind(producer: OpPattern, consumer: OpPattern) -> Option<FusionKind> {
    use OpPattern::*;
    match (producer, consumer) {
        (OutEWiseFusable, ElemWise) => Some(FusionKind::Epilogue),
        (Reduction, OutEWiseFusable) => Some(FusionKind::Prologue),
        _ => None,
    }
}

/// One group of nodes fused into one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FusionGroup {
    pub pass: &'static str,
    /// Names of the nodes that were fused, producer first.
    pub nodes: Vec<String>,
    /// The name of the fused node.
    pub fused: String,
}

/// A candidate a fusion pass looked at and declined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FusionRejection {
    pub pass: &'static str,
    pub nodes: Vec<String>,
    /// Why, in words: "relu1 has a second consumer".
    pub reason: String,
}

/// Every decision of every fusion pass of one pipeline run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FusionReport {
    pub groups: Vec<FusionGroup>,
    pub rejected: Vec<FusionRejection>,
}

impl FusionReport {
    /// The text `alexc compile --explain-fusion` prints.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for g in &self.groups {
            out.push_str(&format!(
                "fused     {:<18} {} → {}\n",
                g.pass,
                g.nodes.join(" + "),
                g.fused
            ));
        }
        for r in &self.rejected {
            out.push_str(&format!(
                "rejected  {:<18} {}: {}\n",
                r.pass,
                r.nodes.join(" + "),
                r.reason
            ));
        }
        out.push_str(&format!(
            "{} fused group(s), {} rejected candidate(s)\n",
            self.groups.len(),
            self.rejected.len()
        ));
        out
    }

    /// The groups a pass fused, in the order it fused them.
    pub fn groups_of<'a>(&'a self, pass: &'a str) -> impl Iterator<Item = &'a FusionGroup> + 'a {
        self.groups.iter().filter(move |g| g.pass == pass)
    }
}

// ------------------------------------------------------------------ patches

/// A value read by a node that a [`Patch`] adds: one that exists already, or
/// a result of an earlier node of the same patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchValue {
    Existing(ValueId),
    /// Result `output` of the patch's node number `node`.
    New {
        node: usize,
        output: u16,
    },
}

impl From<ValueId> for PatchValue {
    fn from(v: ValueId) -> Self {
        PatchValue::Existing(v)
    }
}

/// A fused node to add, and the node whose results it takes over: every use
/// of result `i` of `replaces` (graph outputs included) becomes a use of
/// result `i` of the new node.
#[derive(Clone, Debug)]
pub(crate) struct NewNode {
    pub name: String,
    pub op: Op,
    pub operands: Vec<PatchValue>,
    pub replaces: NodeId,
}

/// A proposed rewrite. Nothing happens until [`Patch::apply`].
#[derive(Clone, Debug)]
pub(crate) struct Patch {
    /// Added in order; a node may read the results of earlier ones.
    pub nodes: Vec<NewNode>,
    /// Removed in order, so consumers must come before their producers.
    pub remove: Vec<NodeId>,
    /// What the report records once the patch is applied.
    pub groups: Vec<FusionGroup>,
}

impl Patch {
    /// Applies the patch. On error the graph may be half-rewritten; the pass
    /// manager restores it.
    pub fn apply(self, graph: &mut Graph) -> Result<Vec<FusionGroup>, GraphError> {
        let mut added: Vec<NodeId> = Vec::with_capacity(self.nodes.len());
        for node in self.nodes {
            let operands = node
                .operands
                .iter()
                .map(|&v| match v {
                    PatchValue::Existing(v) => Ok(v),
                    // Matchers only refer to earlier nodes of their patch;
                    // anything else is a bug, reported rather than a panic.
                    PatchValue::New { node, output } => added
                        .get(node)
                        .map(|&id| ValueId::new(id, output))
                        .ok_or(GraphError::UnknownNode(NodeId(u32::MAX))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let old = graph
                .get(node.replaces)
                .ok_or(GraphError::UnknownNode(node.replaces))?
                .outputs
                .len();
            let id = graph.add(node.name, node.op, &operands)?;
            let new = graph[id].outputs.len();
            if old != new {
                return Err(GraphError::Shape(alexc_ir::ShapeError {
                    message: format!(
                        "fused node `{}` has {new} result(s) but replaces {} with {old}",
                        graph[id].name, node.replaces
                    ),
                    hint: None,
                    operand: None,
                    attr: None,
                }));
            }
            for i in 0..old {
                // `old` came from a node's result list, which `Graph::add`
                // bounds far below u16::MAX.
                let i = i as u16;
                graph.replace_uses(ValueId::new(node.replaces, i), ValueId::new(id, i))?;
            }
            added.push(id);
        }
        for id in self.remove {
            graph.remove(id)?;
        }
        Ok(self.groups)
    }
}

/// What a matcher found at one anchor node: at most one rewrite, and the
/// candidates it declined.
#[derive(Debug, Default)]
pub(crate) struct Proposal {
    pub patch: Option<Patch>,
    pub rejected: Vec<FusionRejection>,
}

/// Runs a fusion pass: calls `propose` on every node whose op satisfies
/// `anchor`, in the topological order of the graph as it was when the pass
/// started, and applies each patch right away, so every match looks at the
/// current graph. Anchors are named up front and looked up again by name
/// because a patch may recycle the ids of the nodes it removes; a patch only
/// removes nodes of its own group, so no anchor still to visit disappears.
/// The decisions reach `ctx.fusion` only if the whole pass succeeds.
pub(crate) fn drive(
    pass: &'static str,
    graph: &mut Graph,
    ctx: &mut PassContext,
    anchor: fn(&Op) -> bool,
    propose: fn(&Graph, NodeId) -> Proposal,
) -> Result<bool, PassError> {
    let order = graph.topo_order().map_err(|cycle| PassError::Unsupported {
        pass,
        message: format!(
            "the graph has a cycle through {}",
            cycle
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })?;
    let anchors: Vec<String> = order
        .into_iter()
        .filter(|&id| anchor(&graph[id].op))
        .map(|id| graph[id].name.clone())
        .collect();
    let mut report = FusionReport::default();
    for name in anchors {
        let Some(id) = graph.find(&name) else {
            continue;
        };
        let proposal = propose(graph, id);
        report.rejected.extend(proposal.rejected);
        if let Some(patch) = proposal.patch {
            let groups = patch
                .apply(graph)
                .map_err(|source| PassError::Graph { pass, source })?;
            report.groups.extend(groups);
        }
    }
    let changed = !report.groups.is_empty();
    ctx.fusion.groups.extend(report.groups);
    ctx.fusion.rejected.extend(report.rejected);
    Ok(changed)
}

// ------------------------------------------------------------------ queries

/// The uses of one value, as `(consumer, operand slot)`.
pub(crate) fn uses(graph: &Graph, v: ValueId) -> Vec<(NodeId, u16)> {
    graph
        .users(v.node)
        .into_iter()
        .filter(|&(_, _, value)| value == v)
        .map(|(user, slot, _)| (user, slot))
        .collect()
}

/// Whether `v` is one of the graph's outputs.
pub(crate) fn is_graph_output(graph: &Graph, v: ValueId) -> bool {
    graph.outputs().contains(&v)
}

/// The operand in `slot` of `node`, if it has one.
pub(crate) fn operand(graph: &Graph, node: NodeId, slot: usize) -> Option<ValueId> {
    graph.operands(node).get(slot).copied()
}

/// The name of a node, or its id for a node that does not exist.
pub(crate) fn name(graph: &Graph, id: NodeId) -> String {
    graph
        .get(id)
        .map_or_else(|| id.to_string(), |n| n.name.clone())
}

/// `a, b and c`.
fn list(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The distinct names of `nodes`, in order, as `a, b and c`.
pub(crate) fn name_list(graph: &Graph, nodes: impl IntoIterator<Item = NodeId>) -> String {
    let mut names: Vec<String> = Vec::new();
    for id in nodes {
        let n = name(graph, id);
        if !names.contains(&n) {
            names.push(n);
        }
    }
    list(&names)
}

/// `Ok` when `v` is not a graph output and `consumer` is its only reader
/// (reading it once); otherwise the reason in words, naming the node that
/// produces `v`: "conv1 has a second consumer (pool9)".
pub(crate) fn only_read_by(graph: &Graph, v: ValueId, consumer: NodeId) -> Result<(), String> {
    let producer = name(graph, v.node);
    if is_graph_output(graph, v) {
        return Err(format!("{producer} is a graph output"));
    }
    let users = uses(graph, v);
    match users.as_slice() {
        &[(only, _)] if only == consumer => Ok(()),
        [] => Err(format!("{producer} has no consumer")),
        &[(other, _)] => Err(format!(
            "{producer} is read by {}, not by {}",
            name(graph, other),
            name(graph, consumer)
        )),
        _ => {
            let others: Vec<NodeId> = users
                .iter()
                .map(|&(u, _)| u)
                .filter(|&u| u != consumer)
                .collect();
            // A consumer that reads `v` twice is its own second consumer.
            let second = if others.is_empty() {
                name_list(graph, [consumer])
            } else {
                name_list(graph, others)
            };
            Err(format!("{producer} has a second consumer ({second})"))
        }
    }
}

/// The single consumer of `v` and the slot it reads `v` in, or why there is
/// not exactly one (`v` is a graph output, has no consumer, or several).
pub(crate) fn sole_use(graph: &Graph, v: ValueId) -> Result<(NodeId, u16), String> {
    let producer = name(graph, v.node);
    if is_graph_output(graph, v) {
        return Err(format!("{producer} is a graph output"));
    }
    match uses(graph, v).as_slice() {
        &[only] => Ok(only),
        [] => Err(format!("{producer} has no consumer")),
        many => Err(format!(
            "{producer} has more than one consumer ({})",
            name_list(graph, many.iter().map(|&(u, _)| u))
        )),
    }
}

/// The `relu-backward` nodes that read the ReLU result `r` as their `y`
/// operand: the candidates for the ReLU's backward twin.
pub(crate) fn relu_backwards(graph: &Graph, r: ValueId) -> Vec<NodeId> {
    uses(graph, r)
        .into_iter()
        .filter(|&(user, slot)| slot == 0 && matches!(graph[user].op, Op::ReluBackward))
        .map(|(user, _)| user)
        .collect()
}

/// A twin matcher's verdict on one candidate: the match, or the nodes it
/// looked at and why they do not match.
pub(crate) type TwinMatch<T> = Result<T, (Vec<String>, String)>;

/// Tries `matcher` on each candidate in turn and returns the first match;
/// when none matches, the rejection of the first candidate (if any), so the
/// report says why a training graph's backward stayed unfused.
pub(crate) fn first_twin<T>(
    pass: &'static str,
    candidates: impl IntoIterator<Item = NodeId>,
    mut matcher: impl FnMut(NodeId) -> TwinMatch<T>,
) -> (Option<T>, Option<FusionRejection>) {
    let mut first_rejection = None;
    for candidate in candidates {
        match matcher(candidate) {
            Ok(twin) => return (Some(twin), None),
            Err((nodes, reason)) => {
                first_rejection.get_or_insert(FusionRejection {
                    pass,
                    nodes,
                    reason,
                });
            }
        }
    }
    (None, first_rejection)
}

/// Checks the pattern table for `producer` feeding `consumer`: `Ok` when the
/// table allows exactly `want`, else the reason in words.
pub(crate) fn check_table(
    graph: &Graph,
    producer: NodeId,
    consumer: NodeId,
    want: FusionKind,
) -> Result<(), String> {
    let (p, c) = match (graph.get(producer), graph.get(consumer)) {
        (Some(p), Some(c)) => (p, c),
        _ => return Err("a node of the pair no longer exists".to_string()),
    };
    let (pp, cp) = (p.op.pattern(), c.op.pattern());
    match fusion_kind(pp, cp) {
        Some(kind) if kind == want => Ok(()),
        _ => Err(format!(
            "the pattern table does not fuse {} ({pp}) into {} ({cp}) as {want:?}",
            p.name, c.name
        )),
    }
}

/// Names that join `parts` with '+' (`conv1+relu1`), made unique in `graph`
/// with a `#2`, `#3`, … suffix in the unlikely case a model already uses it.
pub(crate) fn fused_name(graph: &Graph, parts: &[&str]) -> String {
    fresh_name(graph, parts.join("+"))
}

/// `base`, or `base#k` for the smallest `k ≥ 2` not taken in `graph`.
pub(crate) fn fresh_name(graph: &Graph, base: String) -> String {
    if graph.find(&base).is_none() {
        return base;
    }
    (2usize..)
        .map(|k| format!("{base}#{k}"))
        .find(|n| graph.find(n).is_none())
        .unwrap_or(base)
}

/// The name of the fused backward twin of the fused forward node `fused`,
/// following autodiff's `{forward node}.backward` convention.
pub(crate) fn backward_name(graph: &Graph, fused: &str) -> String {
    fresh_name(graph, format!("{fused}.backward"))
}
