//! `optimizer`: appends the SGD update of every parameter to a training
//! graph.
//!
//! For each parameter `p` with gradient `g` (found by `autodiff`), the pass
//! adds a momentum buffer `p.momentum` (persistent state, zero at the start
//! of training) and an `sgd-update` node `p.sgd(p, p.momentum, g, lr)` that
//! writes the new parameter and momentum in place. The learning rate is one
//! scalar graph input, `lr`, so schedules change it without recompiling.
//! Momentum, weight decay and the formula — the paper's
//! `v ← μv − λεw − ε∇, w ← w + v` or PyTorch's `v ← μv + ∇ + λw, w ← w − εv`
//! — come from the model file's `training` section (the paper's by default).
//! The gradients leave the graph outputs, which become `[loss, logits]`;
//! the update nodes have side effects, so dead-code elimination keeps them.
//!
//! Preconditions: `autodiff` ran (its gradients are in the pass context).

use alexc_ir::{DType, Graph, InputAttrs, MomentumAttrs, Op, SgdAttrs, Shape, ValueId};

use crate::{Pass, PassContext, PassError};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Optimizer;

impl Pass for Optimizer {
    fn name(&self) -> &'static str {
        "optimizer"
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<bool, PassError> {
        if !ctx.is_training() {
            return Ok(false);
        }
        if ctx.gradients.is_empty() {
            return Err(PassError::Unsupported {
                pass: self.name(),
                message: "no parameter gradients: the optimizer needs the autodiff pass".into(),
            });
        }
        let graph_err = |source| PassError::Graph {
            pass: "optimizer",
            source,
        };
        let lr = graph
            .add(
                "lr",
                Op::Input(InputAttrs {
                    dtype: DType::F32,
                    shape: Shape::scalar(),
                }),
                &[],
            )
            .map_err(graph_err)?;
        let attrs = SgdAttrs {
            momentum: ctx.training.momentum,
            weight_decay: ctx.training.weight_decay,
            convention: ctx.training.convention,
        };
        for (name, grad) in &ctx.gradients {
            let param = graph.find(name).ok_or_else(|| PassError::Unsupported {
                pass: "optimizer",
                message: format!("parameter `{name}` no longer exists"),
            })?;
            let ty = graph[param].outputs[0].clone();
            let momentum = graph
                .add(
                    format!("{name}.momentum"),
                    Op::Momentum(MomentumAttrs {
                        dtype: ty.dtype,
                        shape: ty.shape.clone(),
                        of: name.clone(),
                    }),
                    &[],
                )
                .map_err(graph_err)?;
            graph
                .add(
                    format!("{name}.sgd"),
                    Op::SgdUpdate(attrs.clone()),
                    &[param.into(), momentum.into(), *grad, lr.into()],
                )
                .map_err(graph_err)?;
        }
        let grads: Vec<ValueId> = ctx.gradients.iter().map(|(_, g)| *g).collect();
        let outputs: Vec<ValueId> = graph
            .outputs()
            .iter()
            .copied()
            .filter(|v| !grads.contains(v))
            .collect();
        graph.set_outputs(outputs).map_err(graph_err)?;
        Ok(true)
    }
}
