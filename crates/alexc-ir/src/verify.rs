//! The verifier: re-checks every invariant of a graph. Runs after parsing
//! and, in tests and debug builds, after every pass.
//!
//! Checked: names are non-empty and unique; each node's operand slots are
//! exactly `0..n` and its arity fits the op; every edge reads an existing
//! result of its producer; the stored result types equal what shape inference
//! computes from the operands; the graph is acyclic; the outputs exist.

use std::collections::HashSet;

use crate::graph::Graph;
use crate::ids::NodeId;
use crate::infer::{infer, Operand};
use crate::op::Op;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("{node}: name `{name}` is used by more than one node")]
    DuplicateName { node: NodeId, name: String },
    #[error("{node}: empty name")]
    EmptyName { node: NodeId },
    #[error("{node} ({name}): operand slots are {slots:?}, expected 0..{count}")]
    OperandSlots {
        node: NodeId,
        name: String,
        slots: Vec<u16>,
        count: usize,
    },
    #[error("{node} ({name}): reads result {output} of {producer}, which has {results} result(s)")]
    NoSuchResult {
        node: NodeId,
        name: String,
        producer: NodeId,
        output: u16,
        results: usize,
    },
    #[error("{node} ({name}): {message}")]
    Inference {
        node: NodeId,
        name: String,
        message: String,
    },
    #[error("{node} ({name}): stored types {stored} differ from inferred {inferred}")]
    TypeMismatch {
        node: NodeId,
        name: String,
        stored: String,
        inferred: String,
    },
    #[error("the graph has a cycle through {}", .0.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", "))]
    Cycle(Vec<NodeId>),
    #[error("graph output {0} does not exist")]
    MissingOutput(String),
    #[error("{node} ({name}): {message}")]
    InPlace {
        node: NodeId,
        name: String,
        message: String,
    },
}

/// Checks every invariant; returns all violations found (empty = valid).
pub fn verify(graph: &Graph) -> Result<(), Vec<VerifyError>> {
    let mut errors = Vec::new();
    let mut names = HashSet::new();
    for id in graph.node_ids() {
        let node = &graph[id];
        if node.name.is_empty() {
            errors.push(VerifyError::EmptyName { node: id });
        } else if !names.insert(node.name.as_str()) {
            errors.push(VerifyError::DuplicateName {
                node: id,
                name: node.name.clone(),
            });
        }

        let mut incoming = graph.incoming(id);
        incoming.sort_by_key(|&(slot, _)| slot);
        let slots: Vec<u16> = incoming.iter().map(|&(s, _)| s).collect();
        if slots.iter().enumerate().any(|(i, &s)| s as usize != i) {
            errors.push(VerifyError::OperandSlots {
                node: id,
                name: node.name.clone(),
                slots,
                count: incoming.len(),
            });
            continue;
        }
        let mut operands = Vec::with_capacity(incoming.len());
        let mut dangling = false;
        for &(_, v) in &incoming {
            let producer = &graph[v.node];
            match producer.outputs.get(v.output as usize) {
                Some(ty) => operands.push(Operand {
                    name: &producer.name,
                    ty,
                }),
                None => {
                    dangling = true;
                    errors.push(VerifyError::NoSuchResult {
                        node: id,
                        name: node.name.clone(),
                        producer: v.node,
                        output: v.output,
                        results: producer.outputs.len(),
                    });
                }
            }
        }
        if dangling {
            continue;
        }
        match infer(&node.name, &node.op, &operands) {
            Ok(inferred) if inferred != node.outputs => errors.push(VerifyError::TypeMismatch {
                node: id,
                name: node.name.clone(),
                stored: types_str(&node.outputs),
                inferred: types_str(&inferred),
            }),
            Ok(_) => {}
            Err(e) => errors.push(VerifyError::Inference {
                node: id,
                name: node.name.clone(),
                message: e.message,
            }),
        }
    }
    check_in_place(graph, &mut errors);
    if let Err(cycle) = graph.topo_order() {
        errors.push(VerifyError::Cycle(cycle));
    }
    for v in graph.outputs() {
        if graph.value_type(*v).is_none() {
            errors.push(VerifyError::MissingOutput(v.to_string()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// In-place updates write persistent state: an SGD update must read a
/// parameter and that parameter's momentum buffer directly.
fn check_in_place(graph: &Graph, errors: &mut Vec<VerifyError>) {
    for id in graph.nodes_where(|op| matches!(op, Op::SgdUpdate(_))) {
        let operands = graph.operands(id);
        let (Some(w), Some(v)) = (operands.first(), operands.get(1)) else {
            continue; // arity errors are reported above
        };
        let (param, momentum) = (&graph[w.node], &graph[v.node]);
        let message = match (&param.op, &momentum.op) {
            (Op::Parameter(_), Op::Momentum(m)) if m.of == param.name => continue,
            (Op::Parameter(_), Op::Momentum(m)) => format!(
                "updates parameter `{}` with `{}`, the momentum of `{}`",
                param.name, momentum.name, m.of
            ),
            _ => format!(
                "operands 0 and 1 must be a parameter and its momentum buffer, not `{}` ({}) and `{}` ({})",
                param.name,
                param.op.name(),
                momentum.name,
                momentum.op.name()
            ),
        };
        errors.push(VerifyError::InPlace {
            node: id,
            name: graph[id].name.clone(),
            message,
        });
    }
}

fn types_str(types: &[crate::TensorType]) -> String {
    types
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
