//! Graphviz export: `alexc compile MODEL --emit dot | dot -Tsvg > net.svg`.
//!
//! Layers are boxes labelled with name, op, key attributes and result type;
//! parameters are small grey ellipses; inputs are green. Edges carry the
//! shape of the value they transport.

use std::fmt::Write;

use crate::graph::Graph;
use crate::op::Op;

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Renders the graph in DOT.
pub fn to_dot(graph: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&graph.name));
    let _ = writeln!(out, "  rankdir=TB;");
    let _ = writeln!(out, "  node [fontname=\"Helvetica\", fontsize=10];");
    let order = graph
        .topo_order()
        .unwrap_or_else(|_| graph.node_ids().collect());
    for id in &order {
        let node = &graph[*id];
        let types: Vec<String> = node.outputs.iter().map(|t| t.to_string()).collect();
        let (shape, style) = match node.op {
            Op::Parameter(_) => ("ellipse", "filled,dashed\", fillcolor=\"#eeeeee"),
            Op::Input(_) => ("box", "filled,rounded\", fillcolor=\"#d5f5d5"),
            _ => ("box", "rounded"),
        };
        let attrs = node.op.attr_string();
        let mut label = format!("{}\\n{}", escape(&node.name), node.op.name());
        if !attrs.is_empty() && !matches!(node.op, Op::Parameter(_)) {
            label.push_str(&format!("\\n{}", escape(&attrs)));
        }
        label.push_str(&format!("\\n{}", types.join(", ")));
        let _ = writeln!(
            out,
            "  n{} [shape={shape}, style=\"{style}\", label=\"{label}\"];",
            id.0
        );
    }
    for id in &order {
        for (slot, v) in graph.operands(*id).iter().enumerate() {
            let ty = graph
                .value_type(*v)
                .map(|t| t.shape.to_string())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  n{} -> n{} [label=\"{ty}\", tooltip=\"operand {slot}\", fontsize=8];",
                v.node.0, id.0
            );
        }
    }
    out.push_str("}\n");
    out
}
