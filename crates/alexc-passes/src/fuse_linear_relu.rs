//! `fuse-linear-relu`: a fully connected layer and the ReLU that reads it —
//! and, in training graphs, the dropout mask multiply right after the ReLU —
//! become one `linear+relu` (`linear+relu+dropout`) node; their backward
//! twins become one `linear+relu(+dropout)-backward` node.
//!
//! ```text
//! a  = linear(x, w, [b])          d = linear+relu+dropout(x, w, [b], mask)
//! r  = relu(a)
//! d  = mul(r, mask)            ⇒
//! dr = mul(dd, mask)              [dx], dw, [db] =
//! da = relu-backward(r, dr)           linear+relu+dropout-backward(x, w, d, mask, dd)
//! [dx], dw, [db] = linear-backward(x, w, da)
//! ```
//!
//! Without the mask multiply the same holds with `linear+relu(x, w, [b])`
//! and `linear+relu-backward(x, w, r', dr)`, `r'` the fused output.
//!
//! Algorithm: for every `linear` node, in topological order, look at each
//! `relu` that reads it (a *candidate pair*). The pair fuses when the pattern
//! table makes the ReLU an epilogue of the linear layer and the layer's
//! result `a` is not a graph output and has the ReLU as its only consumer.
//! The backward twin is matched by structure: a `relu-backward` reading `r`
//! as its first operand whose result has a single consumer, a
//! `linear-backward` (not yet fused) of the same layer (same attributes, `x`
//! and `w`) reading it as its gradient.
//!
//! Dropout. The pass absorbs a dropout only in the form autodiff gives it in
//! training graphs: `mul(r, mask)` (either operand order) where `mask` is a
//! `dropout-mask` source. It does so when `r` is then dead: `r` is not a
//! graph output and is read only by that multiply and by the ReLU's backward
//! twin, and that twin's gradient `dr` is `mul(dd, mask)` with the same
//! mask, read only by the `relu-backward`. The fused backward then tests
//! `d > 0` instead of `r > 0`, which agrees wherever the mask is non-zero
//! (elsewhere the gradient is zero either way). When the dropout cannot be
//! absorbed, linear + ReLU still fuse and the multiply reads the fused
//! output; the report says why. A `dropout` *op* after the ReLU is never
//! absorbed: its meaning depends on the mode (identity in inference, where
//! `eliminate-dropout` removes it before fusion; a mask multiply in
//! training, after autodiff), so it stays a separate node and the report
//! names it.
//!
//! Every candidate is recorded in the [`crate::FusionReport`]:
//! `fc6 + relu6 + drop7 → fc6+relu6+drop7`, the twin as
//! `drop7.backward + relu6.backward + fc6.backward → fc6+relu6+drop7.backward`,
//! and rejections with their reasons.
//!
//! Preconditions: a verified graph. Works on inference and training graphs
//! alike; it does not depend on the pipeline mode.

use alexc_ir::{Graph, LinearAttrs, LinearBackwardAttrs, LinearReluAttrs, NodeId, Op, ValueId};

use crate::fusion::{
    backward_name, check_table, drive, first_twin, fused_name, is_graph_output, name, name_list,
    only_read_by, operand, relu_backwards, sole_use, uses, FusionGroup, FusionKind,
    FusionRejection, NewNode, Patch, PatchValue, Proposal, TwinMatch,
};
use crate::{Pass, PassContext, PassError};

const NAME: &str = "fuse-linear-relu";

/// Fuses linear + ReLU (+ dropout mask) and their backward twins; see the
/// module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct FuseLinearRelu;

impl Pass for FuseLinearRelu {
    fn name(&self) -> &'static str {
        NAME
    }

    fn is_fusion(&self) -> bool {
        true
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<bool, PassError> {
        drive(NAME, graph, ctx, |op| matches!(op, Op::Linear(_)), propose)
    }
}

/// The matcher: what to do with the linear layer `linear`.
fn propose(graph: &Graph, linear: NodeId) -> Proposal {
    let mut proposal = Proposal::default();
    let Op::Linear(attrs) = &graph[linear].op else {
        return proposal;
    };
    let a = ValueId::from(linear);
    let relus = uses(graph, a)
        .into_iter()
        .filter(|&(user, _)| matches!(graph[user].op, Op::Relu));
    for (relu, _) in relus {
        // A second ReLU reading `a` is a second consumer, so at most one
        // candidate passes these checks.
        let legal = check_table(graph, linear, relu, FusionKind::Epilogue)
            .and_then(|()| only_read_by(graph, a, relu));
        match legal {
            Ok(()) => {
                let (patch, rejected) = rewrite(graph, linear, attrs, relu);
                proposal.patch = Some(patch);
                proposal.rejected.extend(rejected);
            }
            Err(reason) => proposal.rejected.push(FusionRejection {
                pass: NAME,
                nodes: vec![name(graph, linear), name(graph, relu)],
                reason,
            }),
        }
    }
    proposal
}

/// The backward twin of linear + ReLU: `da = relu-backward(r, dr)`,
/// `[dx], dw, [db] = linear-backward(x, w, da)`.
struct Twin {
    relu_backward: NodeId,
    linear_backward: NodeId,
    attrs: LinearBackwardAttrs,
    /// The gradient of `r` that the `relu-backward` reads.
    dr: ValueId,
}

/// A dropout to absorb: `d = mul(r, mask)`, and in training graphs its
/// backward `dr = mul(dd, mask)`.
struct Dropout {
    mul: NodeId,
    mask: ValueId,
    /// The backward multiply and the gradient `dd` of `d` it reads.
    backward: Option<(NodeId, ValueId)>,
}

/// Builds the rewrite of a legal pair, absorbing a dropout and the twin
/// where they match, and the rejections of those that do not.
fn rewrite(
    graph: &Graph,
    linear: NodeId,
    attrs: &LinearAttrs,
    relu: NodeId,
) -> (Patch, Vec<FusionRejection>) {
    let mut rejected = Vec::new();
    let linear_name = name(graph, linear);
    let relu_name = name(graph, relu);
    let r = ValueId::from(relu);
    let r_users = uses(graph, r);

    // The twin: the first relu-backward of `r` whose chain matches.
    let (twin, twin_rejection) = first_twin(NAME, relu_backwards(graph, r), |rb| {
        match_twin(graph, linear, attrs, rb)
    });
    rejected.extend(twin_rejection);

    // The dropout: a mask multiply reading `r`, absorbed if `r` is then dead.
    let mut dropout = None;
    for &(user, slot) in &r_users {
        let triple = || vec![linear_name.clone(), relu_name.clone(), name(graph, user)];
        match &graph[user].op {
            Op::Mul => {
                let Some(mask) = mask_operand(graph, user, slot) else {
                    continue;
                };
                match match_dropout(graph, relu, user, mask, twin.as_ref()) {
                    Ok(d) if dropout.is_none() => dropout = Some(d),
                    Ok(_) => {}
                    Err(reason) => rejected.push(FusionRejection {
                        pass: NAME,
                        nodes: triple(),
                        reason,
                    }),
                }
            }
            Op::Dropout(_) => rejected.push(FusionRejection {
                pass: NAME,
                nodes: triple(),
                reason: format!(
                    "{} is a dropout layer, not a multiply by a dropout mask: inference \
                     graphs remove it (eliminate-dropout), training graphs lower it to one \
                     (autodiff)",
                    name(graph, user)
                ),
            }),
            _ => {}
        }
    }

    // The forward node.
    let operands = graph.operands(linear);
    let mut forward_operands: Vec<PatchValue> = operands.iter().map(|&v| v.into()).collect();
    let mut forward_nodes = vec![linear_name.clone(), relu_name.clone()];
    let mut parts = vec![linear_name.as_str(), relu_name.as_str()];
    let drop_name = dropout.as_ref().map(|d| name(graph, d.mul));
    if let (Some(d), Some(n)) = (&dropout, &drop_name) {
        forward_operands.push(d.mask.into());
        forward_nodes.push(n.clone());
        parts.push(n);
    }
    let fused = fused_name(graph, &parts);
    let mut patch = Patch {
        nodes: vec![NewNode {
            name: fused.clone(),
            op: Op::LinearRelu(LinearReluAttrs {
                linear: attrs.clone(),
                dropout: dropout.is_some(),
            }),
            operands: forward_operands,
            replaces: dropout.as_ref().map_or(relu, |d| d.mul),
        }],
        remove: dropout
            .as_ref()
            .map(|d| d.mul)
            .into_iter()
            .chain([relu, linear])
            .collect(),
        groups: vec![FusionGroup {
            pass: NAME,
            nodes: forward_nodes,
            fused: fused.clone(),
        }],
    };

    // The backward node.
    if let Some(t) = twin {
        let bwd = backward_name(graph, &fused);
        let mut bwd_operands: Vec<PatchValue> =
            operands.iter().take(2).map(|&v| v.into()).collect();
        bwd_operands.push(PatchValue::New { node: 0, output: 0 });
        let mut dead = vec![t.linear_backward, t.relu_backward];
        let mut nodes = vec![name(graph, t.relu_backward), name(graph, t.linear_backward)];
        match dropout
            .as_ref()
            .and_then(|d| d.backward.map(|b| (d.mask, b)))
        {
            Some((mask, (mul, dd))) => {
                bwd_operands.push(mask.into());
                bwd_operands.push(dd.into());
                dead.push(mul);
                nodes.insert(0, name(graph, mul));
            }
            None => bwd_operands.push(t.dr.into()),
        }
        patch.nodes.push(NewNode {
            name: bwd.clone(),
            op: Op::LinearBackward(LinearBackwardAttrs {
                relu: true,
                dropout: dropout.is_some(),
                ..t.attrs
            }),
            operands: bwd_operands,
            replaces: t.linear_backward,
        });
        patch.remove.splice(0..0, dead);
        patch.groups.push(FusionGroup {
            pass: NAME,
            nodes,
            fused: bwd,
        });
    }
    (patch, rejected)
}

/// Matches `relu-backward → linear-backward` of `linear` from `rb`.
fn match_twin(graph: &Graph, linear: NodeId, attrs: &LinearAttrs, rb: NodeId) -> TwinMatch<Twin> {
    let rb_name = name(graph, rb);
    let (lb, slot) = sole_use(graph, ValueId::from(rb)).map_err(|r| (vec![rb_name.clone()], r))?;
    let nodes = vec![rb_name.clone(), name(graph, lb)];
    let Op::LinearBackward(lb_attrs) = &graph[lb].op else {
        return Err((
            nodes,
            format!(
                "{rb_name} feeds {} (a {}), not a linear-backward",
                name(graph, lb),
                graph[lb].op.name()
            ),
        ));
    };
    let same_layer = lb_attrs.linear == *attrs
        && !lb_attrs.relu
        && !lb_attrs.dropout
        && graph.operands(lb).get(..2) == graph.operands(linear).get(..2);
    if slot != 2 || !same_layer {
        return Err((
            nodes,
            format!(
                "{} is not the unfused backward of {} reading {rb_name} as its gradient",
                name(graph, lb),
                name(graph, linear)
            ),
        ));
    }
    let dr = operand(graph, rb, 1)
        .ok_or_else(|| (nodes.clone(), format!("{rb_name} has no gradient operand")))?;
    Ok(Twin {
        relu_backward: rb,
        linear_backward: lb,
        attrs: lb_attrs.clone(),
        dr,
    })
}

/// If `mul` reads a value in `slot` and a dropout mask in its other slot,
/// the mask.
fn mask_operand(graph: &Graph, mul: NodeId, slot: u16) -> Option<ValueId> {
    let operands = graph.operands(mul);
    let other = match (operands.as_slice(), slot) {
        (&[_, m], 0) | (&[m, _], 1) => m,
        _ => return None,
    };
    matches!(graph.get(other.node)?.op, Op::DropoutMask(_)).then_some(other)
}

/// Checks that the dropout `mul(r, mask)` can be absorbed: `r` must become
/// dead, so its only readers may be `mul` and the twin's `relu-backward`,
/// and the twin's gradient must be the dropout's backward `mul(dd, mask)`.
fn match_dropout(
    graph: &Graph,
    relu: NodeId,
    mul: NodeId,
    mask: ValueId,
    twin: Option<&Twin>,
) -> Result<Dropout, String> {
    let relu_name = name(graph, relu);
    let r = ValueId::from(relu);
    if is_graph_output(graph, r) {
        return Err(format!("{relu_name} is a graph output"));
    }
    let others: Vec<NodeId> = uses(graph, r)
        .into_iter()
        .map(|(u, _)| u)
        .filter(|&u| u != mul && Some(u) != twin.map(|t| t.relu_backward))
        .collect();
    if !others.is_empty() {
        return Err(format!(
            "{relu_name} has a second consumer ({})",
            name_list(graph, others)
        ));
    }
    let Some(t) = twin else {
        return Ok(Dropout {
            mul,
            mask,
            backward: None,
        });
    };
    let bm = t.dr.node;
    let bm_operands = graph.operands(bm);
    let dd = match (&graph[bm].op, bm_operands.as_slice()) {
        (Op::Mul, &[dd, m]) | (Op::Mul, &[m, dd]) if m == mask && dd != mask => dd,
        _ => {
            return Err(format!(
                "the gradient {} reads is not a multiply by {}'s mask",
                name(graph, t.relu_backward),
                name(graph, mul)
            ))
        }
    };
    // The twin matched, so `relu_backward` reads `dr` as its gradient; it
    // must be the only reader, or the multiply has to stay.
    sole_use(graph, t.dr)?;
    Ok(Dropout {
        mul,
        mask,
        backward: Some((bm, dd)),
    })
}
