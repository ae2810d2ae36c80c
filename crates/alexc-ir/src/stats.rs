//! Per-node parameter and multiply-accumulate counts, for summaries.

use crate::graph::Graph;
use crate::ids::NodeId;
use crate::op::Op;

/// What one node costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Elements of the parameters this node applies (conv and linear layers
    /// and their fused forms; 0 for backward and update nodes).
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
    // Parameters belong to the layer that applies them (conv, linear and
    // their fused forms), not to the backward and update nodes that also
    // read them.
    let owns_params = matches!(
        node.op,
        Op::Conv2d(_) | Op::ConvRelu(_) | Op::Linear(_) | Op::LinearRelu(_)
    );
    let params = operands
        .iter()
        .filter(|_| owns_params)
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
    // The output gradient has the forward output's shape: the last operand.
    let dy = operands
        .last()
        .and_then(|v| graph.value_type(*v))
        .map(|t| t.shape.elements() as u64)
        .unwrap_or(0);
    let macs = match &node.op {
        // Each output element reads in_channels/groups × kh × kw weights.
        Op::Conv2d(_) | Op::ConvRelu(_) => out * weight_elems(1).iter().skip(1).product::<u64>(),
        // Each output element is a dot product over in_features.
        Op::Linear(_) | Op::LinearRelu(_) => out * weight_elems(1).get(1).copied().unwrap_or(0),
        // The weight gradient costs as much as the forward pass, and so does
        // the input gradient when it is computed.
        Op::Conv2dBackward(a) | Op::ConvReluBackward(a) => {
            dy * weight_elems(1).iter().skip(1).product::<u64>() * (1 + a.input_grad as u64)
        }
        Op::LinearBackward(a) => {
            dy * weight_elems(1).get(1).copied().unwrap_or(0) * (1 + a.input_grad as u64)
        }
        _ => 0,
    };
    NodeStats { params, macs }
}
