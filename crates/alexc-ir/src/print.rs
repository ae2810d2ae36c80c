//! The text form of the IR: one line per node, in topological order.
//!
//! ```text
//! graph alexnet (batch 1) {
//!   %0 = input "image" : f32[1, 3, 224, 224]
//!   %1 = parameter "conv1.weight" {init=normal(0, 0.01)} : f32[96, 3, 11, 11]
//!   %3 = conv2d "conv1" {out=96, kernel=11x11, …} (%0, %1, %2) : f32[1, 96, 55, 55]
//!   …
//!   return %22
//! }
//! ```
//!
//! Each line is: id, op, the node's name, attributes, operands, result
//! type(s). The format is stable; snapshot tests and `--emit graph` use it.

use std::fmt::Write;

use crate::graph::Graph;

/// Renders the graph. Nodes print in the deterministic topological order of
/// [`Graph::topo_order`]; a cyclic graph (which the verifier rejects) prints
/// in id order with a comment saying so.
pub fn to_text(graph: &Graph) -> String {
    let mut out = String::new();
    let (order, cyclic) = match graph.topo_order() {
        Ok(order) => (order, false),
        Err(_) => (graph.node_ids().collect(), true),
    };
    let _ = writeln!(out, "graph {} (batch {}) {{", graph.name, graph.batch);
    if cyclic {
        let _ = writeln!(out, "  // cyclic: printed in id order");
    }
    for id in order {
        let node = &graph[id];
        let _ = write!(out, "  {id} = {} {:?}", node.op.name(), node.name);
        let attrs = node.op.attr_string();
        if !attrs.is_empty() {
            let _ = write!(out, " {{{attrs}}}");
        }
        let operands = graph.operands(id);
        if !operands.is_empty() {
            let list: Vec<String> = operands.iter().map(|v| v.to_string()).collect();
            let _ = write!(out, " ({})", list.join(", "));
        }
        let types: Vec<String> = node.outputs.iter().map(|t| t.to_string()).collect();
        if types.len() == 1 {
            let _ = writeln!(out, " : {}", types[0]);
        } else {
            let _ = writeln!(out, " : ({})", types.join(", "));
        }
    }
    let outs: Vec<String> = graph.outputs().iter().map(|v| v.to_string()).collect();
    if outs.is_empty() {
        let _ = writeln!(out, "  return");
    } else {
        let _ = writeln!(out, "  return {}", outs.join(", "));
    }
    out.push_str("}\n");
    out
}
