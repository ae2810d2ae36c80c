//! `dce`: dead-code elimination.
//!
//! Removes every computing node none of whose results is used — by another
//! node or as a graph output — unless the op has side effects (the
//! optimizer's in-place updates). Sources (inputs, parameters, momentum
//! buffers, dropout masks) are the graph's signature and are always kept.
//! Iterates to a fixed point, visiting nodes in reverse topological order so
//! one sweep usually suffices.
//!
//! Preconditions: an acyclic graph.

use alexc_ir::Graph;

use crate::{Pass, PassContext, PassError};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, graph: &mut Graph, _ctx: &mut PassContext) -> Result<bool, PassError> {
        let mut changed = false;
        loop {
            let order = graph.topo_order().map_err(|cycle| PassError::Unsupported {
                pass: self.name(),
                message: format!("the graph has a cycle through {} nodes", cycle.len()),
            })?;
            let mut removed = false;
            for &id in order.iter().rev() {
                let op = &graph[id].op;
                if op.is_source() || op.has_side_effects() {
                    continue;
                }
                let is_output = graph.outputs().iter().any(|v| v.node == id);
                if !is_output && graph.users(id).is_empty() {
                    graph.remove(id).map_err(|source| PassError::Graph {
                        pass: self.name(),
                        source,
                    })?;
                    removed = true;
                }
            }
            if !removed {
                return Ok(changed);
            }
            changed = true;
        }
    }
}
