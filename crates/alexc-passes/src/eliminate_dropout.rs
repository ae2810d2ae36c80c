//! `eliminate-dropout`: removes dropout layers from inference graphs.
//!
//! In evaluation dropout is the identity (alexc uses inverted dropout: the
//! survivors are scaled by `1/(1-p)` during training, so nothing is rescaled
//! at test time), so each `dropout` node's uses are rerouted to its operand
//! and the node is deleted. This exposes `linear → relu → linear` chains to
//! fusion. Training graphs keep their dropout layers (autodiff turns them
//! into explicit masks), so the pass does nothing there.
//!
//! Preconditions: none beyond a verified graph.

use alexc_ir::{Graph, Op};

use crate::{Pass, PassContext, PassError};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct EliminateDropout;

impl Pass for EliminateDropout {
    fn name(&self) -> &'static str {
        "eliminate-dropout"
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<bool, PassError> {
        if ctx.is_training() {
            return Ok(false);
        }
        let graph_err = |source| PassError::Graph {
            pass: self.name(),
            source,
        };
        let dropouts = graph.nodes_where(|op| matches!(op, Op::Dropout(_)));
        for &id in &dropouts {
            let Some(&input) = graph.operands(id).first() else {
                continue;
            };
            graph.replace_uses(id.into(), input).map_err(graph_err)?;
            graph.remove(id).map_err(graph_err)?;
        }
        Ok(!dropouts.is_empty())
    }
}
