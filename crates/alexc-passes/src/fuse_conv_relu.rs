//! `fuse-conv-relu`: a convolution and the ReLU that reads it become one
//! `conv2d+relu` node, and in training graphs their backward twins become one
//! `conv2d+relu-backward` node.
//!
//! ```text
//! c  = conv2d(x, w, [b])        y  = conv2d+relu(x, w, [b])
//! y  = relu(c)               ⇒
//! dc = relu-backward(y, dy)     [dx], dw, [db] = conv2d+relu-backward(x, w, y, dy)
//! [dx], dw, [db] = conv2d-backward(x, w, dc)
//! ```
//!
//! Algorithm: for every `conv2d` node, in topological order, look at each
//! `relu` that reads it (a *candidate pair*). The pair fuses when the pattern
//! table makes the ReLU an epilogue of the convolution, and the convolution's
//! result `c` is not a graph output and has the ReLU as its only consumer
//! (else `c` must be stored anyway). The ReLU's result may have any
//! consumers: they read the fused node instead.
//!
//! The backward twin is matched by structure, not by name: a
//! `relu-backward` reading `y` as its first operand whose result `dc` has a
//! single consumer, a `conv2d-backward` of the same convolution (same
//! attributes, same `x` and `w`) reading `dc` as its gradient. It becomes a
//! `conv2d+relu-backward` with the `conv2d-backward`'s attributes, and each
//! result of the old `conv2d-backward` is rerouted to the same result of the
//! new node. When a training graph's twin does not match, the forward pair
//! still fuses (the `relu-backward` then reads the fused output) and the
//! twin is reported as rejected.
//!
//! Every candidate is recorded in the [`crate::FusionReport`]: fused groups
//! (`conv1 + relu1 → conv1+relu1`, and for the twin
//! `relu1.backward + conv1.backward → conv1+relu1.backward`) and rejections
//! with their reasons.
//!
//! Preconditions: a verified graph. Works on inference and training graphs
//! alike; it does not depend on the pipeline mode.

use alexc_ir::{Conv2dAttrs, Conv2dBackwardAttrs, Graph, NodeId, Op, ValueId};

use crate::fusion::{
    backward_name, check_table, drive, first_twin, fused_name, name, only_read_by, operand,
    relu_backwards, sole_use, uses, FusionGroup, FusionKind, FusionRejection, NewNode, Patch,
    PatchValue, Proposal, TwinMatch,
};
use crate::{Pass, PassContext, PassError};

const NAME: &str = "fuse-conv-relu";

/// Fuses conv2d + ReLU (and their backward twins); see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct FuseConvRelu;

impl Pass for FuseConvRelu {
    fn name(&self) -> &'static str {
        NAME
    }

    fn is_fusion(&self) -> bool {
        true
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<bool, PassError> {
        drive(NAME, graph, ctx, |op| matches!(op, Op::Conv2d(_)), propose)
    }
}

/// The matcher: what to do with the convolution `conv`.
fn propose(graph: &Graph, conv: NodeId) -> Proposal {
    let mut proposal = Proposal::default();
    let Op::Conv2d(attrs) = &graph[conv].op else {
        return proposal;
    };
    let c = ValueId::from(conv);
    let relus = uses(graph, c)
        .into_iter()
        .filter(|&(user, _)| matches!(graph[user].op, Op::Relu));
    for (relu, _) in relus {
        // A second ReLU reading `c` is a second consumer, so at most one
        // candidate passes these checks.
        let legal = check_table(graph, conv, relu, FusionKind::Epilogue)
            .and_then(|()| only_read_by(graph, c, relu));
        match legal {
            Ok(()) => {
                let (patch, twin_rejection) = rewrite(graph, conv, attrs, relu);
                proposal.patch = Some(patch);
                proposal.rejected.extend(twin_rejection);
            }
            Err(reason) => proposal.rejected.push(FusionRejection {
                pass: NAME,
                nodes: vec![name(graph, conv), name(graph, relu)],
                reason,
            }),
        }
    }
    proposal
}

/// The backward twin of the pair: the `relu-backward` and `conv2d-backward`
/// nodes, with the output gradient `dy` the `relu-backward` reads.
struct Twin {
    relu_backward: NodeId,
    conv_backward: NodeId,
    attrs: Conv2dBackwardAttrs,
    dy: ValueId,
}

/// Builds the rewrite of a legal pair, with its twin when there is one, and
/// the rejection of a twin that does not match.
fn rewrite(
    graph: &Graph,
    conv: NodeId,
    attrs: &Conv2dAttrs,
    relu: NodeId,
) -> (Patch, Option<FusionRejection>) {
    let conv_name = name(graph, conv);
    let relu_name = name(graph, relu);
    let fused = fused_name(graph, &[&conv_name, &relu_name]);
    let conv_operands = graph.operands(conv);

    let mut patch = Patch {
        nodes: vec![NewNode {
            name: fused.clone(),
            op: Op::ConvRelu(attrs.clone()),
            operands: conv_operands.iter().map(|&v| v.into()).collect(),
            replaces: relu,
        }],
        remove: vec![relu, conv],
        groups: vec![FusionGroup {
            pass: NAME,
            nodes: vec![conv_name, relu_name],
            fused: fused.clone(),
        }],
    };

    let (twin, rejection) = first_twin(NAME, relu_backwards(graph, ValueId::from(relu)), |rb| {
        match_twin(graph, conv, rb)
    });
    if let Some(t) = twin {
        let bwd = backward_name(graph, &fused);
        let mut operands: Vec<PatchValue> =
            conv_operands.iter().take(2).map(|&v| v.into()).collect();
        operands.push(PatchValue::New { node: 0, output: 0 });
        operands.push(t.dy.into());
        patch.nodes.push(NewNode {
            name: bwd.clone(),
            op: Op::ConvReluBackward(t.attrs),
            operands,
            replaces: t.conv_backward,
        });
        patch
            .remove
            .splice(0..0, [t.conv_backward, t.relu_backward]);
        patch.groups.push(FusionGroup {
            pass: NAME,
            nodes: vec![name(graph, t.relu_backward), name(graph, t.conv_backward)],
            fused: bwd,
        });
    }
    (patch, rejection)
}

/// Matches `relu-backward → conv2d-backward` of `conv` from `rb`.
fn match_twin(graph: &Graph, conv: NodeId, rb: NodeId) -> TwinMatch<Twin> {
    let rb_name = name(graph, rb);
    let (cb, slot) = sole_use(graph, ValueId::from(rb)).map_err(|r| (vec![rb_name.clone()], r))?;
    let nodes = vec![rb_name.clone(), name(graph, cb)];
    let Op::Conv2dBackward(attrs) = &graph[cb].op else {
        return Err((
            nodes,
            format!(
                "{rb_name} feeds {} (a {}), not a conv2d-backward",
                name(graph, cb),
                graph[cb].op.name()
            ),
        ));
    };
    let same_conv = matches!(&graph[conv].op, Op::Conv2d(a) if *a == attrs.conv)
        && graph.operands(cb).get(..2) == graph.operands(conv).get(..2);
    if slot != 2 || !same_conv {
        return Err((
            nodes,
            format!(
                "{} is not the backward of {} reading {rb_name} as its gradient",
                name(graph, cb),
                name(graph, conv)
            ),
        ));
    }
    let dy = operand(graph, rb, 1)
        .ok_or_else(|| (nodes.clone(), format!("{rb_name} has no gradient operand")))?;
    Ok(Twin {
        relu_backward: rb,
        conv_backward: cb,
        attrs: attrs.clone(),
        dy,
    })
}
