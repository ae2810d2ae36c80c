//! The graph container and its builder API.
//!
//! Nodes are added in any order whose operands already exist, so a graph
//! built through [`Graph::add`] is acyclic and fully typed by construction.
//! Passes rewire uses with [`Graph::replace_uses`] and remove dead nodes with
//! [`Graph::remove`]; the verifier re-checks every invariant afterwards.

use std::collections::{BTreeSet, HashMap};
use std::ops::Index;

use petgraph::stable_graph::StableDiGraph;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, ValueId};
use crate::infer::{infer, Operand, ShapeError};
use crate::op::Op;
use crate::types::TensorType;

/// A node: a named application of an op, with the types of its results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Unique within the graph; layer names (`conv1`) and parameter names
    /// (`conv1.weight`) come from the model file.
    pub name: String,
    pub op: Op,
    /// One type per result, as computed by shape inference.
    pub outputs: Vec<TensorType>,
}

/// An edge from producer to consumer: result `output` of the producer is
/// operand number `operand` of the consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    pub output: u16,
    pub operand: u16,
}

/// Errors from building or editing a graph.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    #[error("a node named `{0}` already exists")]
    DuplicateName(String),
    #[error("node names must not be empty")]
    EmptyName,
    #[error("value {0} does not exist")]
    UnknownValue(ValueId),
    #[error("node {0} does not exist")]
    UnknownNode(NodeId),
    #[error("{node}: too many operands ({count})")]
    TooManyOperands { node: String, count: usize },
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("node {0} still has users")]
    HasUsers(NodeId),
}

/// A network: typed nodes in a DAG, a bound batch size and ordered outputs.
///
/// Serializes as its name, batch, petgraph graph and outputs; deserializing
/// rebuilds the name index (and the verifier should run on the result, as
/// on any graph from outside).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "GraphData")]
pub struct Graph {
    /// The model's name.
    pub name: String,
    /// The batch size the symbolic batch dimension was bound to.
    pub batch: usize,
    dag: StableDiGraph<Node, Edge, u32>,
    outputs: Vec<ValueId>,
    #[serde(skip)]
    by_name: HashMap<String, NodeId>,
}

/// The serialized form of a [`Graph`]: everything but the name index.
#[derive(Deserialize)]
struct GraphData {
    name: String,
    batch: usize,
    dag: StableDiGraph<Node, Edge, u32>,
    outputs: Vec<ValueId>,
}

impl From<GraphData> for Graph {
    fn from(d: GraphData) -> Self {
        let mut graph = Graph {
            name: d.name,
            batch: d.batch,
            dag: d.dag,
            outputs: d.outputs,
            by_name: HashMap::new(),
        };
        graph.reindex();
        graph
    }
}

impl Graph {
    pub fn new(name: impl Into<String>, batch: usize) -> Self {
        Graph {
            name: name.into(),
            batch,
            dag: StableDiGraph::default(),
            outputs: Vec::new(),
            by_name: HashMap::new(),
        }
    }

    /// Adds a node applying `op` to `operands`, inferring its result types.
    /// On error the graph is unchanged.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        op: Op,
        operands: &[ValueId],
    ) -> Result<NodeId, GraphError> {
        let name = name.into();
        if name.is_empty() {
            return Err(GraphError::EmptyName);
        }
        if self.by_name.contains_key(&name) {
            return Err(GraphError::DuplicateName(name));
        }
        if operands.len() > u16::MAX as usize {
            return Err(GraphError::TooManyOperands {
                node: name,
                count: operands.len(),
            });
        }
        let mut infos = Vec::with_capacity(operands.len());
        for &v in operands {
            let ty = self.value_type(v).ok_or(GraphError::UnknownValue(v))?;
            infos.push(Operand {
                name: &self.dag[v.node.index()].name,
                ty,
            });
        }
        let outputs = infer(&name, &op, &infos)?;
        let id = NodeId::from(self.dag.add_node(Node {
            name: name.clone(),
            op,
            outputs,
        }));
        for (i, v) in operands.iter().enumerate() {
            self.dag.add_edge(
                v.node.index(),
                id.index(),
                Edge {
                    output: v.output,
                    operand: i as u16,
                },
            );
        }
        self.by_name.insert(name, id);
        Ok(id)
    }

    /// The node with this id, if it exists.
    pub fn get(&self, id: NodeId) -> Option<&Node> {
        self.dag.node_weight(id.index())
    }

    /// The node named `name`, if any.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }

    /// The type of a value, if it exists.
    pub fn value_type(&self, v: ValueId) -> Option<&TensorType> {
        self.get(v.node)?.outputs.get(v.output as usize)
    }

    /// All node ids in increasing order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.dag.node_indices().map(NodeId::from)
    }

    pub fn len(&self) -> usize {
        self.dag.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.dag.node_count() == 0
    }

    /// The operands of a node, in operand order. Empty for unknown nodes.
    pub fn operands(&self, id: NodeId) -> Vec<ValueId> {
        let mut edges: Vec<_> = self
            .dag
            .edges_directed(id.index(), Direction::Incoming)
            .map(|e| {
                (
                    e.weight().operand,
                    ValueId::new(e.source().into(), e.weight().output),
                )
            })
            .collect();
        edges.sort_by_key(|&(slot, _)| slot);
        edges.into_iter().map(|(_, v)| v).collect()
    }

    /// Raw incoming edges of a node as `(operand slot, value)`, unsorted and
    /// unchecked; for the verifier.
    pub(crate) fn incoming(&self, id: NodeId) -> Vec<(u16, ValueId)> {
        self.dag
            .edges_directed(id.index(), Direction::Incoming)
            .map(|e| {
                (
                    e.weight().operand,
                    ValueId::new(e.source().into(), e.weight().output),
                )
            })
            .collect()
    }

    /// Every use of any result of `id`, as `(consumer, operand slot, value)`,
    /// sorted by consumer.
    pub fn users(&self, id: NodeId) -> Vec<(NodeId, u16, ValueId)> {
        let mut uses: Vec<_> = self
            .dag
            .edges_directed(id.index(), Direction::Outgoing)
            .map(|e| {
                (
                    NodeId::from(e.target()),
                    e.weight().operand,
                    ValueId::new(id, e.weight().output),
                )
            })
            .collect();
        uses.sort();
        uses
    }

    /// Graph outputs (logits, loss), in order.
    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    pub fn set_outputs(&mut self, outputs: Vec<ValueId>) -> Result<(), GraphError> {
        if let Some(&v) = outputs.iter().find(|&&v| self.value_type(v).is_none()) {
            return Err(GraphError::UnknownValue(v));
        }
        self.outputs = outputs;
        Ok(())
    }

    /// Nodes whose op satisfies `pred`, in id order.
    pub fn nodes_where(&self, pred: impl Fn(&Op) -> bool) -> Vec<NodeId> {
        self.node_ids().filter(|&id| pred(&self[id].op)).collect()
    }

    /// Makes every use of `old` (including graph outputs) use `new` instead,
    /// except the uses by `new`'s own node: so the common rewrite "add a node
    /// after `x`, then reroute `x`'s users to it" keeps the new node reading
    /// `x`. The types must be equal; the caller verifies acyclicity
    /// afterwards (the verifier runs after every pass).
    pub fn replace_uses(&mut self, old: ValueId, new: ValueId) -> Result<(), GraphError> {
        match (self.value_type(old), self.value_type(new)) {
            (None, _) => return Err(GraphError::UnknownValue(old)),
            (_, None) => return Err(GraphError::UnknownValue(new)),
            (Some(a), Some(b)) if a != b => {
                return Err(GraphError::Shape(ShapeError {
                    message: format!("cannot replace {old} ({a}) with {new} ({b}): types differ"),
                    hint: None,
                    operand: None,
                    attr: None,
                }))
            }
            _ => {}
        }
        let uses: Vec<_> = self
            .dag
            .edges_directed(old.node.index(), Direction::Outgoing)
            .filter(|e| e.weight().output == old.output && e.target() != new.node.index())
            .map(|e| (e.id(), e.target(), e.weight().operand))
            .collect();
        for (edge, target, operand) in uses {
            self.dag.remove_edge(edge);
            self.dag.add_edge(
                new.node.index(),
                target,
                Edge {
                    output: new.output,
                    operand,
                },
            );
        }
        for out in &mut self.outputs {
            if *out == old {
                *out = new;
            }
        }
        Ok(())
    }

    /// Renames a node. The new name must be unused (and non-empty).
    pub fn rename(&mut self, id: NodeId, name: impl Into<String>) -> Result<(), GraphError> {
        let name = name.into();
        if name.is_empty() {
            return Err(GraphError::EmptyName);
        }
        if self.by_name.contains_key(&name) {
            return Err(GraphError::DuplicateName(name));
        }
        let node = self
            .dag
            .node_weight_mut(id.index())
            .ok_or(GraphError::UnknownNode(id))?;
        let old = std::mem::replace(&mut node.name, name.clone());
        self.by_name.remove(&old);
        self.by_name.insert(name, id);
        Ok(())
    }

    /// Removes a node that has no users and is not a graph output. Its id
    /// may be reused by a later [`Graph::add`], so a pass must not keep ids
    /// of removed nodes.
    pub fn remove(&mut self, id: NodeId) -> Result<Node, GraphError> {
        self.get(id).ok_or(GraphError::UnknownNode(id))?;
        if !self.users(id).is_empty() || self.outputs.iter().any(|v| v.node == id) {
            return Err(GraphError::HasUsers(id));
        }
        let node = self
            .dag
            .remove_node(id.index())
            .ok_or(GraphError::UnknownNode(id))?;
        self.by_name.remove(&node.name);
        Ok(node)
    }

    /// A topological order, deterministic: among ready nodes the smallest id
    /// comes first, so a graph built in order prints in that order. Returns
    /// the nodes on a cycle if there is one.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, Vec<NodeId>> {
        let mut indegree: HashMap<NodeId, usize> = self
            .node_ids()
            .map(|id| {
                (
                    id,
                    self.dag
                        .edges_directed(id.index(), Direction::Incoming)
                        .count(),
                )
            })
            .collect();
        let mut ready: BTreeSet<NodeId> = indegree
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&id, _)| id)
            .collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(id) = ready.pop_first() {
            order.push(id);
            for e in self.dag.edges_directed(id.index(), Direction::Outgoing) {
                let t = NodeId::from(e.target());
                if let Some(d) = indegree.get_mut(&t) {
                    *d -= 1;
                    if *d == 0 {
                        ready.insert(t);
                    }
                }
            }
        }
        if order.len() == self.len() {
            Ok(order)
        } else {
            let mut stuck: Vec<_> = indegree
                .into_iter()
                .filter(|&(_, d)| d > 0)
                .map(|(id, _)| id)
                .collect();
            stuck.sort();
            Err(stuck)
        }
    }

    /// Read-only access to the underlying petgraph graph.
    pub fn dag(&self) -> &StableDiGraph<Node, Edge, u32> {
        &self.dag
    }

    /// Rebuilds the name index from the nodes (deserialization does this
    /// already).
    pub fn reindex(&mut self) {
        self.by_name = self
            .node_ids()
            .map(|id| (self[id].name.clone(), id))
            .collect();
    }

    /// Adds an edge without any checks. Only for tests of the verifier,
    /// which must be able to build broken graphs.
    #[doc(hidden)]
    pub fn add_raw_edge(&mut self, from: ValueId, to: NodeId, operand: u16) {
        self.dag.add_edge(
            from.node.index(),
            to.index(),
            Edge {
                output: from.output,
                operand,
            },
        );
    }
}

impl Index<NodeId> for Graph {
    type Output = Node;

    /// Panics if the node does not exist; use [`Graph::get`] for ids that
    /// did not come from this graph.
    fn index(&self, id: NodeId) -> &Node {
        &self.dag[id.index()]
    }
}
