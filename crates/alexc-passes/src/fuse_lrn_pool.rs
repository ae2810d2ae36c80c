//! `fuse-lrn-pool`: a local response normalization and the max-pool that
//! reads it become one `lrn+max-pool2d` node, whose pooling windows compute
//! the LRN values they read on the fly instead of storing them; in training
//! graphs the backward twins become one `lrn+max-pool2d-backward` node.
//!
//! ```text
//! l  = lrn(x)                     p  = lrn+max-pool2d(x)
//! p  = max-pool2d(l)           ⇒
//! dl = max-pool2d-backward(l, dp) dx = lrn+max-pool2d-backward(x, dp)
//! dx = lrn-backward(x, dl)
//! ```
//!
//! Algorithm: for every `lrn` node, in topological order, look at each pool
//! (`max-pool2d` or `avg-pool2d`) that reads it (a *candidate pair*). The
//! pair fuses when the pattern table makes the LRN a prologue of the pool,
//! a fused op exists for it (there is one for max-pooling only), and the
//! LRN's result `l` is not a graph output and has no consumer besides the
//! pool — except, in a training graph, the pool's backward twin: a
//! `max-pool2d-backward` with the pool's attributes reading `l`, whose
//! result `dl` has a single consumer, an `lrn-backward` with the LRN's
//! attributes reading the same `x`. The twin then fuses in the same rewrite,
//! which is what makes `l` dead; if a `max-pool2d-backward` reads `l` but
//! its chain does not match, `l` must be stored and the pair is rejected.
//!
//! The fused nodes take over the results of the pool (forward) and of the
//! `lrn-backward` (backward). Every candidate is recorded in the
//! [`crate::FusionReport`]: `norm1 + pool1 → norm1+pool1`, the twin as
//! `pool1.backward + norm1.backward → norm1+pool1.backward`, and
//! rejections with their reasons.
//!
//! Preconditions: a verified graph. Works on inference and training graphs
//! alike; it does not depend on the pipeline mode.

use alexc_ir::{Graph, LrnAttrs, LrnMaxPoolAttrs, NodeId, Op, Pool2dAttrs, ValueId};

use crate::fusion::{
    backward_name, check_table, drive, fused_name, is_graph_output, name, name_list, operand,
    sole_use, uses, FusionGroup, FusionKind, FusionRejection, NewNode, Patch, PatchValue, Proposal,
};
use crate::{Pass, PassContext, PassError};

const NAME: &str = "fuse-lrn-pool";

/// Fuses LRN + max-pool (and their backward twins); see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct FuseLrnPool;

impl Pass for FuseLrnPool {
    fn name(&self) -> &'static str {
        NAME
    }

    fn is_fusion(&self) -> bool {
        true
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<bool, PassError> {
        drive(NAME, graph, ctx, |op| matches!(op, Op::Lrn(_)), propose)
    }
}

/// The matcher: what to do with the LRN `lrn`.
fn propose(graph: &Graph, lrn: NodeId) -> Proposal {
    let mut proposal = Proposal::default();
    let Op::Lrn(lrn_attrs) = &graph[lrn].op else {
        return proposal;
    };
    let l = ValueId::from(lrn);
    let users = uses(graph, l);
    let pools = users
        .iter()
        .filter(|&&(user, _)| matches!(graph[user].op, Op::MaxPool2d(_) | Op::AvgPool2d(_)));
    for &(pool, _) in pools {
        match check_pair(graph, lrn, lrn_attrs, pool, &users) {
            Ok((pool_attrs, twin)) if proposal.patch.is_none() => {
                proposal.patch = Some(rewrite(graph, lrn, lrn_attrs, pool, pool_attrs, twin));
            }
            // A second pool reading `l` is a second consumer, which
            // `check_pair` rejects; this arm only keeps one patch per anchor.
            Ok(_) => {}
            Err(reason) => proposal.rejected.push(FusionRejection {
                pass: NAME,
                nodes: vec![name(graph, lrn), name(graph, pool)],
                reason,
            }),
        }
    }
    proposal
}

/// The backward twin: `dl = max-pool2d-backward(l, dp)`,
/// `dx = lrn-backward(x, dl)`.
struct Twin {
    pool_backward: NodeId,
    lrn_backward: NodeId,
    dp: ValueId,
}

/// Checks one candidate pair; returns the pool's attributes and the twin
/// (when `l` is read by one), or why the pair cannot fuse.
fn check_pair<'g>(
    graph: &'g Graph,
    lrn: NodeId,
    lrn_attrs: &LrnAttrs,
    pool: NodeId,
    users: &[(NodeId, u16)],
) -> Result<(&'g Pool2dAttrs, Option<Twin>), String> {
    let lrn_name = name(graph, lrn);
    let pool_name = name(graph, pool);
    check_table(graph, lrn, pool, FusionKind::Prologue)?;
    let pool_attrs = match &graph[pool].op {
        Op::MaxPool2d(a) => a,
        Op::AvgPool2d(_) => {
            return Err(format!(
                "{pool_name} is an avg-pool: only LRN + max-pool has a fused op"
            ))
        }
        other => return Err(format!("{pool_name} is a {}, not a max-pool", other.name())),
    };
    if is_graph_output(graph, ValueId::from(lrn)) {
        return Err(format!("{lrn_name} is a graph output"));
    }
    let others: Vec<NodeId> = users
        .iter()
        .filter(|&&(user, _)| user != pool)
        .map(|&(user, _)| user)
        .collect();
    match others.as_slice() {
        [] => Ok((pool_attrs, None)),
        &[pb]
            if matches!(&graph[pb].op, Op::MaxPool2dBackward(a) if a == pool_attrs)
                && users.contains(&(pb, 0)) =>
        {
            let twin = match_twin(graph, lrn, lrn_attrs, pb).map_err(|why| {
                format!(
                    "{lrn_name} is also read by {}, the pool's backward, whose twin \
                     cannot fuse: {why}",
                    name(graph, pb)
                )
            })?;
            Ok((pool_attrs, Some(twin)))
        }
        _ => Err(format!(
            "{lrn_name} has a second consumer ({})",
            name_list(graph, others)
        )),
    }
}

/// Matches `max-pool2d-backward → lrn-backward` from `pb`.
fn match_twin(
    graph: &Graph,
    lrn: NodeId,
    lrn_attrs: &LrnAttrs,
    pb: NodeId,
) -> Result<Twin, String> {
    let (nb, slot) = sole_use(graph, ValueId::from(pb))?;
    let is_lrn_backward = matches!(&graph[nb].op, Op::LrnBackward(a) if a == lrn_attrs);
    let x = operand(graph, lrn, 0);
    if !is_lrn_backward || slot != 1 || x.is_none() || operand(graph, nb, 0) != x {
        return Err(format!(
            "{} is not the lrn-backward of {}",
            name(graph, nb),
            name(graph, lrn)
        ));
    }
    let dp = operand(graph, pb, 1)
        .ok_or_else(|| format!("{} has no gradient operand", name(graph, pb)))?;
    Ok(Twin {
        pool_backward: pb,
        lrn_backward: nb,
        dp,
    })
}

/// Builds the rewrite of a legal pair and its twin.
fn rewrite(
    graph: &Graph,
    lrn: NodeId,
    lrn_attrs: &LrnAttrs,
    pool: NodeId,
    pool_attrs: &Pool2dAttrs,
    twin: Option<Twin>,
) -> Patch {
    let lrn_name = name(graph, lrn);
    let pool_name = name(graph, pool);
    let fused = fused_name(graph, &[&lrn_name, &pool_name]);
    let attrs = LrnMaxPoolAttrs {
        lrn: lrn_attrs.clone(),
        pool: pool_attrs.clone(),
    };
    let x: Vec<PatchValue> = graph.operands(lrn).into_iter().map(Into::into).collect();
    let mut patch = Patch {
        nodes: vec![NewNode {
            name: fused.clone(),
            op: Op::LrnMaxPool(attrs.clone()),
            operands: x.clone(),
            replaces: pool,
        }],
        remove: vec![pool, lrn],
        groups: vec![FusionGroup {
            pass: NAME,
            nodes: vec![lrn_name, pool_name],
            fused: fused.clone(),
        }],
    };
    if let Some(t) = twin {
        let bwd = backward_name(graph, &fused);
        let mut operands = x;
        operands.push(t.dp.into());
        patch.nodes.push(NewNode {
            name: bwd.clone(),
            op: Op::LrnMaxPoolBackward(attrs),
            operands,
            replaces: t.lrn_backward,
        });
        patch.remove.splice(0..0, [t.lrn_backward, t.pool_backward]);
        patch.groups.push(FusionGroup {
            pass: NAME,
            nodes: vec![name(graph, t.pool_backward), name(graph, t.lrn_backward)],
            fused: bwd,
        });
    }
    patch
}
