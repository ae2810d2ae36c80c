//! `autodiff`: turns a forward graph into a training graph — forward, loss
//! and backward — by reverse-mode differentiation.
//!
//! Algorithm:
//! 1. **Dropout becomes explicit.** Each `dropout` layer `D` is replaced by
//!    `mul(x, D.mask)` (still named `D`), where `D.mask` is a `dropout-mask`
//!    source the runtime fills every step (key `D`). Backends then need no
//!    random number generator, and every backend sees the same masks.
//! 2. **Loss.** A `labels` input (i64 `[N]`) and a `loss` node
//!    (softmax cross-entropy, mean over the batch) are added on the graph's
//!    single output, the logits `[N, classes]`. The graph outputs become
//!    `[loss, logits, ∂loss/∂p for every parameter p]`; the `optimizer` pass
//!    consumes the gradients and drops them from the outputs.
//! 3. **Which values need gradients:** those that depend on a parameter.
//!    Inputs and masks do not, so e.g. conv1's backward computes no `dx`.
//! 4. **Reverse sweep.** Nodes are visited in reverse topological order.
//!    The gradient of a value is the sum (`add` nodes `V.grad-sum…`) of the
//!    contributions of its consumers; each node's backward node is named
//!    `NODE.backward` and computes the contributions to its operands:
//!    conv2d/linear → `conv2d-backward`/`linear-backward` (`[dx], dw, [db]`);
//!    relu → `relu-backward(y, dy)`; lrn → `lrn-backward(x, dy)`; max- and
//!    avg-pool → their backward ops `(x, dy)`; flatten and reshape → a
//!    reshape; mul → `mul(dy, other)`; add → `dy` to both; concat → split;
//!    split → concat; softmax → `softmax-backward(y, dy)`; the loss →
//!    `softmax-cross-entropy-backward(logits, labels)`.
//!
//! Preconditions: a verified inference graph with exactly one output, the
//! logits `[N, classes]`; no loss, fused or backward op yet (autodiff runs
//! before fusion); every result of a split that needs a gradient is used.

use std::collections::{BTreeMap, HashMap, HashSet};

use alexc_ir::{
    ConcatAttrs, Conv2dBackwardAttrs, DType, DropoutMaskAttrs, Graph, InputAttrs,
    LinearBackwardAttrs, NodeId, Op, ReshapeAttrs, Shape, SplitAttrs, ValueId,
};

use crate::{Pass, PassContext, PassError};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Autodiff;

struct Builder<'g> {
    graph: &'g mut Graph,
    /// Gradient contributions per value, in the order they were added.
    contributions: HashMap<ValueId, Vec<ValueId>>,
}

impl Builder<'_> {
    fn add(&mut self, name: String, op: Op, operands: &[ValueId]) -> Result<NodeId, PassError> {
        self.graph
            .add(name, op, operands)
            .map_err(|source| PassError::Graph {
                pass: "autodiff",
                source,
            })
    }

    fn contribute(&mut self, value: ValueId, grad: ValueId) {
        self.contributions.entry(value).or_default().push(grad);
    }

    /// The total gradient of `value`: its one contribution, or their sum.
    fn gradient(&mut self, value: ValueId) -> Result<Option<ValueId>, PassError> {
        let Some(parts) = self.contributions.remove(&value) else {
            return Ok(None);
        };
        let mut parts = parts.into_iter();
        let Some(mut sum) = parts.next() else {
            return Ok(None);
        };
        let base = format!("{}.grad-sum", self.graph[value.node].name);
        for (k, part) in parts.enumerate() {
            let name = if value.output == 0 {
                format!("{base}{k}")
            } else {
                format!("{base}{}.{k}", value.output)
            };
            sum = self.add(name, Op::Add, &[sum, part])?.into();
        }
        Ok(Some(sum))
    }
}

fn unsupported(message: impl Into<String>) -> PassError {
    PassError::Unsupported {
        pass: "autodiff",
        message: message.into(),
    }
}

impl Pass for Autodiff {
    fn name(&self) -> &'static str {
        "autodiff"
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<bool, PassError> {
        if !ctx.is_training() {
            return Ok(false);
        }
        let graph_err = |source| PassError::Graph {
            pass: "autodiff",
            source,
        };
        let [logits] = graph.outputs() else {
            return Err(unsupported(format!(
                "the forward graph must have exactly one output (the logits), but it has {}",
                graph.outputs().len()
            )));
        };
        let logits = *logits;
        let Some(logits_ty) = graph.value_type(logits).cloned() else {
            return Err(unsupported("the graph output does not exist"));
        };
        let [batch, _classes] = logits_ty.shape.dims()[..] else {
            return Err(unsupported(format!(
                "the output must be logits [N, classes], but it is {logits_ty}"
            )));
        };
        if let Some(id) = graph.node_ids().find(|&id| {
            let op = &graph[id].op;
            !(op.is_source() || forward_op(op))
        }) {
            return Err(unsupported(format!(
                "`{}` ({}) is not a forward op: autodiff runs once, before fusion",
                graph[id].name,
                graph[id].op.name()
            )));
        }

        // 1. Dropout layers become mul(x, mask).
        for id in graph.nodes_where(|op| matches!(op, Op::Dropout(_))) {
            let Op::Dropout(attrs) = graph[id].op.clone() else {
                continue;
            };
            let name = graph[id].name.clone();
            let Some(&x) = graph.operands(id).first() else {
                continue;
            };
            let shape = graph[id].outputs[0].shape.clone();
            let mask = graph
                .add(
                    format!("{name}.mask"),
                    Op::DropoutMask(DropoutMaskAttrs {
                        p: attrs.p,
                        shape,
                        key: name.clone(),
                    }),
                    &[],
                )
                .map_err(graph_err)?;
            let mul = graph
                .add(format!("{name}.mul"), Op::Mul, &[x, mask.into()])
                .map_err(graph_err)?;
            graph
                .replace_uses(id.into(), mul.into())
                .map_err(graph_err)?;
            graph.remove(id).map_err(graph_err)?;
            graph.rename(mul, name).map_err(graph_err)?;
        }

        // 2. The loss.
        let labels = graph
            .add(
                "labels",
                Op::Input(InputAttrs {
                    dtype: DType::I64,
                    shape: Shape::new(vec![batch]),
                }),
                &[],
            )
            .map_err(graph_err)?;
        let loss = graph
            .add("loss", Op::SoftmaxCrossEntropy, &[logits, labels.into()])
            .map_err(graph_err)?;

        // 3. Which values depend on a parameter.
        let order = graph
            .topo_order()
            .map_err(|_| unsupported("the graph has a cycle"))?;
        let mut needs_grad: HashSet<NodeId> = HashSet::new();
        for &id in &order {
            let op = &graph[id].op;
            let depends = matches!(op, Op::Parameter(_))
                || (!op.is_source()
                    && graph
                        .operands(id)
                        .iter()
                        .any(|v| needs_grad.contains(&v.node)));
            if depends {
                needs_grad.insert(id);
            }
        }

        // 4. The reverse sweep.
        let mut b = Builder {
            graph,
            contributions: HashMap::new(),
        };
        let dlogits = b.add(
            "loss.backward".into(),
            Op::SoftmaxCrossEntropyBackward,
            &[logits, labels.into()],
        )?;
        b.contribute(logits, dlogits.into());
        let mut param_grads: BTreeMap<NodeId, ValueId> = BTreeMap::new();
        for &id in order.iter().rev() {
            if id == loss || id == labels || !needs_grad.contains(&id) {
                continue;
            }
            let node = b.graph[id].clone();
            let results: Vec<ValueId> = (0..node.outputs.len())
                .map(|k| ValueId::new(id, k as u16))
                .collect();
            let mut dys = Vec::with_capacity(results.len());
            for &r in &results {
                dys.push(b.gradient(r)?);
            }
            if let Op::Parameter(_) = node.op {
                if let Some(Some(g)) = dys.first() {
                    param_grads.insert(id, *g);
                }
                continue;
            }
            // A node whose results reach the loss through no path needs nothing.
            if dys.iter().all(Option::is_none) {
                continue;
            }
            let operands = b.graph.operands(id);
            let wants = |v: &ValueId| needs_grad.contains(&v.node);
            let name = format!("{}.backward", node.name);
            let dy = || -> Result<ValueId, PassError> {
                dys.first()
                    .copied()
                    .flatten()
                    .ok_or_else(|| unsupported(format!("`{}` has no gradient", node.name)))
            };
            match &node.op {
                Op::Conv2d(attrs) => {
                    let attrs = Conv2dBackwardAttrs {
                        conv: attrs.clone(),
                        input_grad: wants(&operands[0]),
                    };
                    let bw = b.add(
                        name,
                        Op::Conv2dBackward(attrs.clone()),
                        &[operands[0], operands[1], dy()?],
                    )?;
                    contribute_param_grads(&mut b, bw, attrs.input_grad, &operands);
                }
                Op::Linear(attrs) => {
                    let attrs = LinearBackwardAttrs {
                        linear: attrs.clone(),
                        input_grad: wants(&operands[0]),
                        relu: false,
                        dropout: false,
                    };
                    let bw = b.add(
                        name,
                        Op::LinearBackward(attrs.clone()),
                        &[operands[0], operands[1], dy()?],
                    )?;
                    contribute_param_grads(&mut b, bw, attrs.input_grad, &operands);
                }
                Op::Relu => {
                    let dx = b.add(name, Op::ReluBackward, &[results[0], dy()?])?;
                    b.contribute(operands[0], dx.into());
                }
                Op::Lrn(attrs) => {
                    let dx = b.add(name, Op::LrnBackward(attrs.clone()), &[operands[0], dy()?])?;
                    b.contribute(operands[0], dx.into());
                }
                Op::MaxPool2d(attrs) => {
                    let dx = b.add(
                        name,
                        Op::MaxPool2dBackward(attrs.clone()),
                        &[operands[0], dy()?],
                    )?;
                    b.contribute(operands[0], dx.into());
                }
                Op::AvgPool2d(attrs) => {
                    let dx = b.add(
                        name,
                        Op::AvgPool2dBackward(attrs.clone()),
                        &[operands[0], dy()?],
                    )?;
                    b.contribute(operands[0], dx.into());
                }
                Op::Flatten | Op::Reshape(_) => {
                    let shape = b
                        .graph
                        .value_type(operands[0])
                        .map(|t| t.shape.clone())
                        .unwrap_or_default();
                    let dx = b.add(name, Op::Reshape(ReshapeAttrs { shape }), &[dy()?])?;
                    b.contribute(operands[0], dx.into());
                }
                Op::Softmax(attrs) => {
                    let dx = b.add(
                        name,
                        Op::SoftmaxBackward(attrs.clone()),
                        &[results[0], dy()?],
                    )?;
                    b.contribute(operands[0], dx.into());
                }
                Op::Add => {
                    let dy = dy()?;
                    for v in operands.iter().filter(|v| wants(v)) {
                        b.contribute(*v, dy);
                    }
                }
                Op::Mul => {
                    let dy = dy()?;
                    for (k, v) in operands.iter().enumerate() {
                        if wants(v) {
                            let other = operands[1 - k];
                            let n = if k == 0 {
                                name.clone()
                            } else {
                                format!("{name}{k}")
                            };
                            let dx = b.add(n, Op::Mul, &[dy, other])?;
                            b.contribute(*v, dx.into());
                        }
                    }
                }
                Op::Concat(attrs) => {
                    let sizes: Vec<usize> = operands
                        .iter()
                        .filter_map(|v| b.graph.value_type(*v).map(|t| t.shape.dims()[attrs.axis]))
                        .collect();
                    let bw = b.add(
                        name,
                        Op::Split(SplitAttrs {
                            axis: attrs.axis,
                            sizes,
                        }),
                        &[dy()?],
                    )?;
                    for (k, v) in operands.iter().enumerate() {
                        if wants(v) {
                            b.contribute(*v, ValueId::new(bw, k as u16));
                        }
                    }
                }
                Op::Split(attrs) => {
                    let mut pieces = Vec::with_capacity(dys.len());
                    for (k, d) in dys.iter().enumerate() {
                        pieces.push(d.ok_or_else(|| {
                            unsupported(format!(
                                "result {k} of split `{}` does not reach the loss",
                                node.name
                            ))
                        })?);
                    }
                    let dx = b.add(name, Op::Concat(ConcatAttrs { axis: attrs.axis }), &pieces)?;
                    b.contribute(operands[0], dx.into());
                }
                other => {
                    return Err(unsupported(format!(
                        "no derivative for `{}` ({})",
                        node.name,
                        other.name()
                    )));
                }
            }
        }

        // Outputs: loss, logits, then each parameter's gradient in graph order.
        let mut outputs = vec![ValueId::from(loss), logits];
        ctx.gradients.clear();
        for (param, grad) in param_grads {
            ctx.gradients.push((b.graph[param].name.clone(), grad));
            outputs.push(grad);
        }
        b.graph.set_outputs(outputs).map_err(graph_err)?;
        Ok(true)
    }
}

/// Routes `[dx?, dw, db?]` of a conv/linear backward node to its operands.
fn contribute_param_grads(b: &mut Builder<'_>, bw: NodeId, input_grad: bool, operands: &[ValueId]) {
    let mut k = 0u16;
    if input_grad {
        b.contribute(operands[0], ValueId::new(bw, k));
        k += 1;
    }
    b.contribute(operands[1], ValueId::new(bw, k));
    if let Some(&bias) = operands.get(2) {
        b.contribute(bias, ValueId::new(bw, k + 1));
    }
}

/// Ops autodiff differentiates (forward ops of an unfused graph).
fn forward_op(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv2d(_)
            | Op::Relu
            | Op::Lrn(_)
            | Op::MaxPool2d(_)
            | Op::AvgPool2d(_)
            | Op::Flatten
            | Op::Linear(_)
            | Op::Dropout(_)
            | Op::Softmax(_)
            | Op::Concat(_)
            | Op::Split(_)
            | Op::Add
            | Op::Mul
            | Op::Reshape(_)
    )
}
