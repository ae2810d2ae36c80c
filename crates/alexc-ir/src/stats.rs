//! Per-node parameter and multiply-accumulate counts, for summaries.

use crate::graph::Graph;
use crate::ids::NodeId;
use crate::op::Op;

/// What one node costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Elements of the parameters this node reads directly.
    pub params: u64,
    /// Multiply-accumulates of one execution at the graph's batch size
    /// (convolutions and linear layers; other ops count 0).
    pub macs: u64,
}

/// Parameter and MAC counts of node `id`.
pub fn node_stats(graph: &Graph, id: NodeId) -> NodeStats {
    let Some(node) = graph.get(id) else {
        return NodeStats::default();
    };
    let operands = graph.operands(id);
    let params = operands
        .iter()
        .filter(|v| matches!(graph[v.node].op, Op::Parameter(_)))
        .filter_map(|v| graph.value_type(*v))
        .map(|t| t.shape.elements() as u64)
        .sum();
    let out = node
        .outputs
        .first()
        .map(|t| t.shape.elements() as u64)
        .unwrap_or(0);
    let weight_elems = |i: usize| -> Vec<u64> {
        operands
            .get(i)
            .and_then(|v| graph.value_type(*v))
            .map(|t| t.shape.dims().iter().map(|&d| d as u64).collect())
            .unwrap_or_default()
    };
    let macs = match &node.op {
        // Each output element reads in_channels/groups × kh × kw weights.
        Op::Conv2d(_) => out * weight_elems(1).iter().skip(1).product::<u64>(),
        // Each output element is a dot product over in_features.
        Op::Linear(_) => out * weight_elems(1).get(1).copied().unwrap_or(0),
        _ => 0,
    };
    NodeStats { params, macs }
}
