//! One training step: run a training graph, then write every optimizer
//! update back into the state.
//!
//! A training graph (built by the `autodiff` and `optimizer` passes) keeps
//! its state — parameters and momentum buffers — in source nodes bound from
//! one map, and updates it with `SgdUpdate` nodes whose two results the IR
//! writes in place over operand 0 (the parameter) and operand 1 (its
//! momentum). The interpreter never writes in place: every node computes
//! fresh tensors, and [`apply_updates`] stores the update results under the
//! names of the operands' nodes once the whole graph has run. So every node
//! reads the state from before the step (what a backend's in-place schedule
//! must also guarantee), and a step that fails leaves the state untouched.
//!
//! Before anything is written, the updates are checked: operand 0 of each
//! `SgdUpdate` must be a parameter, operand 1 a momentum buffer of that
//! parameter, and no state entry may be written twice.

use std::collections::{BTreeMap, HashMap, HashSet};

use alexc_ir::{Graph, NodeId, Op, ValueId};
use alexc_tensor::Tensor;

use crate::exec::{execute, outputs_of, InterpError, Keep, Mode, Value};
use crate::real::Real;

/// One state entry an `SgdUpdate` node writes.
struct StateUpdate {
    /// The `SgdUpdate` node.
    node: NodeId,
    /// Its result that holds the new value.
    value: ValueId,
    /// The name of the state entry (the operand's node).
    target: String,
}

/// Every state write of `graph`, in node order: for each `SgdUpdate`, result
/// 0 to its parameter and result 1 to its momentum buffer.
fn state_updates(graph: &Graph) -> Result<Vec<StateUpdate>, InterpError> {
    let mut updates = Vec::new();
    let mut written = HashSet::new();
    for id in graph.node_ids() {
        let node = &graph[id];
        if !matches!(node.op, Op::SgdUpdate(_)) {
            continue;
        }
        let error = |message: String| InterpError::Update {
            node: node.name.clone(),
            message,
        };
        let operands = graph.operands(id);
        let source = |slot: usize| {
            operands
                .get(slot)
                .and_then(|v| graph.get(v.node))
                .ok_or_else(|| error(format!("operand {slot} is missing")))
        };
        let (param, momentum) = (source(0)?, source(1)?);
        if !matches!(param.op, Op::Parameter(_)) {
            return Err(error(format!(
                "operand 0 must be a parameter, but `{}` is a {} node",
                param.name,
                param.op.name()
            )));
        }
        match &momentum.op {
            Op::Momentum(m) if m.of == param.name => {}
            Op::Momentum(m) => {
                return Err(error(format!(
                    "momentum buffer `{}` belongs to `{}`, not to `{}`",
                    momentum.name, m.of, param.name
                )))
            }
            other => {
                return Err(error(format!(
                    "operand 1 must be a momentum buffer, but `{}` is a {} node",
                    momentum.name,
                    other.name()
                )))
            }
        }
        for (result, target) in [&param.name, &momentum.name].into_iter().enumerate() {
            if !written.insert(target.clone()) {
                return Err(error(format!(
                    "`{target}` is updated by more than one node"
                )));
            }
            updates.push(StateUpdate {
                node: id,
                value: ValueId::new(id, result as u16),
                target: target.clone(),
            });
        }
    }
    Ok(updates)
}

fn update_error(graph: &Graph, u: &StateUpdate, message: String) -> InterpError {
    InterpError::Update {
        node: crate::exec::name_of(graph, u.node),
        message,
    }
}

/// Writes the results of every `SgdUpdate` node of `graph`, taken from the
/// values of a [`crate::run_all`], into `state`: result 0 under the name of
/// the node of operand 0 (the parameter), result 1 under that of operand 1
/// (its momentum buffer). Every entry written must already be in `state`.
/// Nothing is written unless every update can be.
pub fn apply_updates<T: Clone>(
    graph: &Graph,
    values: &HashMap<ValueId, Value<T>>,
    state: &mut BTreeMap<String, Tensor<T>>,
) -> Result<(), InterpError> {
    let updates = state_updates(graph)?;
    let mut new = Vec::with_capacity(updates.len());
    for u in &updates {
        let t = values
            .get(&u.value)
            .and_then(Value::as_float)
            .ok_or_else(|| update_error(graph, u, format!("{} has no float value", u.value)))?;
        if !state.contains_key(&u.target) {
            return Err(update_error(
                graph,
                u,
                format!("the state has no entry `{}`", u.target),
            ));
        }
        new.push((u.target.clone(), t.clone()));
    }
    state.extend(new);
    Ok(())
}

/// One training step: runs `graph` (as [`crate::run_all`] would) with
/// `state` as its weights — every parameter and momentum buffer — applies
/// its optimizer updates to `state` ([`apply_updates`]) and returns the
/// graph outputs (for a training graph: the loss, then the logits). Values
/// are dropped after their last use, as in [`crate::run`]. On error `state`
/// is unchanged.
pub fn train_step<T: Real>(
    graph: &Graph,
    state: &mut BTreeMap<String, Tensor<T>>,
    inputs: &HashMap<String, Value<T>>,
    mode: Mode,
) -> Result<Vec<Value<T>>, InterpError> {
    let updates = state_updates(graph)?;
    let pinned: Vec<ValueId> = updates.iter().map(|u| u.value).collect();
    let (outputs, new) = {
        let mut values = execute(graph, state, inputs, mode, Keep::OutputsAnd(&pinned))?;
        let outputs = outputs_of(graph, &values)?;
        let mut new = Vec::with_capacity(updates.len());
        for u in &updates {
            let t = values
                .remove(&u.value)
                .and_then(|held| held.into_owned_value().into_float())
                .ok_or_else(|| update_error(graph, u, format!("{} has no float value", u.value)))?;
            new.push((u.target.clone(), t));
        }
        (outputs, new)
    };
    // Every target is a parameter or momentum node, so the binding check
    // has already found it in `state`.
    state.extend(new);
    Ok(outputs)
}
