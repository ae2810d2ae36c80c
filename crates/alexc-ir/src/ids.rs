//! Entity handles. Each is a `u32` newtype whose `Display` is exactly its
//! spelling in the text IR, so dumps, error messages and snapshots agree.

use std::fmt;

use petgraph::stable_graph::NodeIndex;
use serde::{Deserialize, Serialize};

/// A node of the graph, printed `%7`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The petgraph index of this node.
    pub fn index(self) -> NodeIndex<u32> {
        NodeIndex::new(self.0 as usize)
    }
}

impl From<NodeIndex<u32>> for NodeId {
    fn from(ix: NodeIndex<u32>) -> Self {
        NodeId(ix.index() as u32)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// One result of a node: `%7` for the first (usually only) result, `%7.1`
/// for the second result of a multi-result op such as split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ValueId {
    pub node: NodeId,
    pub output: u16,
}

impl ValueId {
    pub fn new(node: NodeId, output: u16) -> Self {
        ValueId { node, output }
    }
}

impl From<NodeId> for ValueId {
    fn from(node: NodeId) -> Self {
        ValueId { node, output: 0 }
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.output == 0 {
            write!(f, "{}", self.node)
        } else {
            write!(f, "{}.{}", self.node, self.output)
        }
    }
}
