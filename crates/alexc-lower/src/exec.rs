//! Running lowered kernels on the host: a node, or a whole graph, through
//! [`lower_node`] and the kernel IR's reference evaluator
//! ([`alexc_kernel::eval()`]). This is what lowering is tested
//! with — its results are compared against the graph interpreter
//! (`alexc-interp`) — and what every backend's results are compared
//! against, kernel by kernel.
//!
//! [`eval_node`] binds buffers as the runtime's plan does:
//!
//! 1. the operands are checked against the node's operand types, and
//!    copied (in-place kernels write them);
//! 2. one zero-filled buffer per result of the node, except results of
//!    in-place ops (`Op::in_place`), which live in the operand they alias;
//! 3. for each lowered kernel, in order, each parameter is bound per its
//!    [`Arg`]: an operand, a result, or a fresh workspace. A workspace is
//!    allocated for one kernel launch and filled with NaN, because its
//!    contents are undefined on entry: a kernel that reads scratch it never
//!    wrote produces NaN here rather than plausible numbers;
//! 4. the kernel runs in the evaluator, and its buffers go back to the
//!    node's operands and results for the next kernel.
//!
//! Bindings a plan could not honour are errors ([`ExecError::Binding`]):
//! a kernel that writes an operand the op does not update in place, binds a
//! result of an in-place op, or binds one buffer twice with a write.
//!
//! [`eval_graph`] runs every node in topological order. Like the
//! interpreter, it reads the state (parameters and momentum buffers) from
//! before the step everywhere, and writes the optimizer updates back into
//! the state only once every node has run, so a failed step leaves the
//! state unchanged.

use std::collections::{BTreeMap, HashMap};

use alexc_ir::{Graph, NodeId, Op, TensorType, ValueId};
use alexc_kernel::{Access, BufferKind, DType, EvalError, HostBuffer};

use crate::{lower_node, Arg, LowerError, LowerOptions, LoweredKernel};

/// Why a node or graph could not be run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Lower(#[from] LowerError),
    #[error("node {0} does not exist")]
    UnknownNode(NodeId),
    #[error("the graph is invalid:{}", .0.iter().map(|e| format!("\n  {e}")).collect::<String>())]
    InvalidGraph(Vec<alexc_ir::VerifyError>),
    /// A value given for the node (an operand, an input, a state entry)
    /// does not match the graph.
    #[error("`{node}`: {message}")]
    Value { node: String, message: String },
    /// A kernel's parameters cannot be bound as its args say.
    #[error("`{node}`, kernel `{kernel}`: {message}")]
    Binding {
        node: String,
        kernel: String,
        message: String,
    },
    #[error("`{node}`, kernel `{kernel}`: {source}")]
    Eval {
        node: String,
        kernel: String,
        source: EvalError,
    },
}

/// The kernel IR element type of a graph IR type.
fn dtype(t: &TensorType) -> DType {
    match t.dtype {
        alexc_ir::DType::F32 => DType::F32,
        alexc_ir::DType::I64 => DType::I64,
    }
}

/// Checks a host buffer against a graph IR type.
fn check_value(
    buffer: &HostBuffer,
    ty: &TensorType,
    node: &str,
    what: &str,
) -> Result<(), ExecError> {
    if buffer.dtype() != dtype(ty) || buffer.len() != ty.shape.elements() {
        return Err(ExecError::Value {
            node: node.to_owned(),
            message: format!(
                "{what} must be {ty} ({} elements), but is {} with {} elements",
                ty.shape.elements(),
                buffer.dtype(),
                buffer.len()
            ),
        });
    }
    Ok(())
}

/// Where a kernel parameter's buffer lives between kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Home {
    Operand(usize),
    Result(usize),
}

/// Lowers node `id` and runs its kernels on `operands` (in operand order),
/// returning its results in result order. Source nodes have no kernels and
/// cannot be run this way.
pub fn eval_node(
    graph: &Graph,
    id: NodeId,
    operands: &[HostBuffer],
    options: &LowerOptions,
) -> Result<Vec<HostBuffer>, ExecError> {
    let node = graph.get(id).ok_or(ExecError::UnknownNode(id))?;
    if node.op.is_source() {
        return Err(ExecError::Value {
            node: node.name.clone(),
            message: format!("a {} node is bound, not run", node.op.name()),
        });
    }
    let kernels = lower_node(graph, id, options)?;
    eval_lowered(graph, id, &kernels, operands)
}

/// Runs `kernels` — a lowering of node `id`, from [`lower_node`] or from
/// anywhere else (a tuner, a test) — on `operands`, as [`eval_node`] does.
pub fn eval_lowered(
    graph: &Graph,
    id: NodeId,
    kernels: &[LoweredKernel],
    operands: &[HostBuffer],
) -> Result<Vec<HostBuffer>, ExecError> {
    let node = graph.get(id).ok_or(ExecError::UnknownNode(id))?;
    let value_error = |message: String| ExecError::Value {
        node: node.name.clone(),
        message,
    };
    let operand_types = graph
        .operands(id)
        .iter()
        .map(|v| {
            graph
                .value_type(*v)
                .ok_or_else(|| value_error(format!("operand {v} does not exist")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if operands.len() != operand_types.len() {
        return Err(value_error(format!(
            "takes {} operands, {} were given",
            operand_types.len(),
            operands.len()
        )));
    }
    for (i, (buffer, ty)) in operands.iter().zip(&operand_types).enumerate() {
        check_value(buffer, ty, &node.name, &format!("operand {i}"))?;
    }

    let in_place = node.op.in_place();
    let mut operands = operands.to_vec();
    // `None` for results that live in an operand.
    let mut results: Vec<Option<HostBuffer>> = node
        .outputs
        .iter()
        .enumerate()
        .map(|(r, ty)| {
            (!in_place.iter().any(|&(res, _)| res == r))
                .then(|| HostBuffer::zeros(dtype(ty), ty.shape.elements()))
        })
        .collect();

    for lowered in kernels {
        let kernel = &lowered.kernel;
        let binding_error = |message: String| ExecError::Binding {
            node: node.name.clone(),
            kernel: kernel.name.clone(),
            message,
        };
        let params: Vec<_> = kernel.params().collect();
        if params.len() != lowered.args.len() {
            return Err(binding_error(format!(
                "the kernel has {} parameters but {} args",
                params.len(),
                lowered.args.len()
            )));
        }

        // Move each bound buffer out of its home (or clone it, for a
        // second read-only use), remembering where it goes back.
        let mut bound = Vec::with_capacity(params.len());
        let mut homes: Vec<(Option<Home>, bool)> = Vec::with_capacity(params.len());
        for (&(buf, decl), arg) in params.iter().zip(&lowered.args) {
            let writes = !matches!(decl.kind, BufferKind::Param(Access::Read));
            let home = match *arg {
                Arg::Workspace { elements } => {
                    bound.push(HostBuffer::F32(vec![f32::NAN; elements]));
                    homes.push((None, writes));
                    continue;
                }
                Arg::Operand(i) => {
                    if i >= operands.len() {
                        return Err(binding_error(format!("{buf} is bound to operand {i}, which does not exist")));
                    }
                    if writes && !in_place.iter().any(|&(_, op)| op == i) {
                        return Err(binding_error(format!(
                            "{buf} writes operand {i}, which the op does not update in place"
                        )));
                    }
                    Home::Operand(i)
                }
                Arg::Result(r) => match results.get(r) {
                    None => {
                        return Err(binding_error(format!("{buf} is bound to result {r}, which does not exist")))
                    }
                    Some(None) => {
                        return Err(binding_error(format!(
                            "{buf} is bound to result {r}, which is written in place through its operand"
                        )))
                    }
                    Some(Some(_)) => Home::Result(r),
                },
            };
            let earlier = homes.iter().position(|&(h, _)| h == Some(home));
            let buffer = match earlier {
                Some(j) => {
                    if writes || homes[j].1 {
                        return Err(binding_error(format!(
                            "{buf} and another parameter are bound to the same buffer, and one writes it"
                        )));
                    }
                    bound[j].clone()
                }
                None => match home {
                    Home::Operand(i) => {
                        std::mem::replace(&mut operands[i], HostBuffer::F32(Vec::new()))
                    }
                    Home::Result(r) => results[r].take().unwrap_or(HostBuffer::F32(Vec::new())),
                },
            };
            bound.push(buffer);
            // A clone is not moved back.
            homes.push((if earlier.is_some() { None } else { Some(home) }, writes));
        }

        let outcome = alexc_kernel::eval(kernel, &mut bound);
        for (buffer, (home, _)) in bound.into_iter().zip(homes) {
            match home {
                Some(Home::Operand(i)) => operands[i] = buffer,
                Some(Home::Result(r)) => results[r] = Some(buffer),
                None => {}
            }
        }
        outcome.map_err(|source| ExecError::Eval {
            node: node.name.clone(),
            kernel: kernel.name.clone(),
            source,
        })?;
    }

    // In-place results are the final values of their operands.
    results
        .into_iter()
        .enumerate()
        .map(|(r, buffer)| match buffer {
            Some(b) => Ok(b),
            None => in_place
                .iter()
                .find(|&&(res, _)| res == r)
                .and_then(|&(_, i)| operands.get(i).cloned())
                .ok_or_else(|| {
                    value_error(format!("result {r} aliases an operand that does not exist"))
                }),
        })
        .collect()
}

/// Runs every node of `graph` through [`eval_node`] and returns the graph
/// outputs in order. Inputs and dropout masks are bound from `inputs` by
/// node name; parameters and momentum buffers from `state`. Afterwards,
/// result 0 of each `SgdUpdate` is stored in `state` under the name of its
/// operand 0's node, result 1 under that of its operand 1's node; `state` is
/// unchanged if anything fails.
pub fn eval_graph(
    graph: &Graph,
    inputs: &HashMap<String, HostBuffer>,
    state: &mut BTreeMap<String, HostBuffer>,
    options: &LowerOptions,
) -> Result<Vec<HostBuffer>, ExecError> {
    run_graph(graph, inputs, state, |id| lower_node(graph, id, options))
}

/// [`eval_graph`] with the lowering of each node supplied by `lower`.
fn run_graph(
    graph: &Graph,
    inputs: &HashMap<String, HostBuffer>,
    state: &mut BTreeMap<String, HostBuffer>,
    lower: impl Fn(NodeId) -> Result<Vec<LoweredKernel>, LowerError>,
) -> Result<Vec<HostBuffer>, ExecError> {
    alexc_ir::verify(graph).map_err(ExecError::InvalidGraph)?;
    let order = graph
        .topo_order()
        .map_err(|cycle| ExecError::InvalidGraph(vec![alexc_ir::VerifyError::Cycle(cycle)]))?;
    let mut values: HashMap<ValueId, HostBuffer> = HashMap::new();
    let mut updates: Vec<(String, HostBuffer)> = Vec::new();
    for id in order {
        let node = graph.get(id).ok_or(ExecError::UnknownNode(id))?;
        let value_error = |message: String| ExecError::Value {
            node: node.name.clone(),
            message,
        };
        if node.op.is_source() {
            let (bound, what) = match node.op {
                Op::Parameter(_) | Op::Momentum(_) => (state.get(&node.name), "state"),
                _ => (inputs.get(&node.name), "inputs"),
            };
            let buffer = bound.ok_or_else(|| value_error(format!("missing from the {what}")))?;
            let ty = node
                .outputs
                .first()
                .ok_or_else(|| value_error("a source without a result".to_owned()))?;
            check_value(buffer, ty, &node.name, "the bound value")?;
            values.insert(ValueId::new(id, 0), buffer.clone());
            continue;
        }
        let operand_ids = graph.operands(id);
        let operands = operand_ids
            .iter()
            .map(|v| {
                values
                    .get(v)
                    .cloned()
                    .ok_or_else(|| value_error(format!("operand {v} was not computed")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let results = eval_lowered(graph, id, &lower(id)?, &operands)?;
        if matches!(node.op, Op::SgdUpdate(_)) {
            for (r, i) in [(0, 0), (1, 1)] {
                let target = operand_ids
                    .get(i)
                    .and_then(|v| graph.get(v.node))
                    .ok_or_else(|| value_error(format!("operand {i} does not exist")))?;
                let result = results
                    .get(r)
                    .ok_or_else(|| value_error(format!("result {r} is missing")))?;
                if !state.contains_key(&target.name) {
                    return Err(value_error(format!(
                        "updates `{}`, which is not in the state",
                        target.name
                    )));
                }
                if updates.iter().any(|(name, _)| *name == target.name) {
                    return Err(value_error(format!(
                        "`{}` is updated by more than one node",
                        target.name
                    )));
                }
                updates.push((target.name.clone(), result.clone()));
            }
        }
        for (r, buffer) in results.into_iter().enumerate() {
            values.insert(ValueId::new(id, r as u16), buffer);
        }
    }
    let outputs = graph
        .outputs()
        .iter()
        .map(|v| {
            values.get(v).cloned().ok_or_else(|| ExecError::Value {
                node: graph
                    .get(v.node)
                    .map_or_else(|| v.node.to_string(), |n| n.name.clone()),
                message: format!("graph output {v} was not computed"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    state.extend(updates);
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    //! Binding rules on hand-written kernels, so they hold whatever the
    //! lowering modules produce.

    use alexc_ir::{DType as IrDType, InputAttrs, MomentumAttrs, ParameterAttrs, Shape};
    use alexc_ir::{Init, SgdAttrs, SgdConvention};
    use alexc_kernel::{BinOp, Expr, Idx, KernelBuilder, LoopKind, Schedule, Stmt};

    use super::*;

    fn input(graph: &mut Graph, name: &str, shape: &[usize]) -> NodeId {
        let attrs = InputAttrs {
            dtype: IrDType::F32,
            shape: Shape::new(shape.to_vec()),
        };
        graph.add(name, Op::Input(attrs), &[]).expect("input")
    }

    /// `for i in 0..n { b[i] = value(i) }`.
    fn map(n: usize, buf: alexc_kernel::BufId, i: alexc_kernel::VarId, value: Expr) -> Stmt {
        Stmt::For {
            var: i,
            extent: Idx::Const(n as i64),
            kind: LoopKind::Serial,
            body: vec![Stmt::Store {
                buf,
                index: vec![Idx::Var(i)],
                value,
            }],
        }
    }

    /// A hand lowering of `relu` over `n` elements.
    fn relu_kernel(n: usize) -> LoweredKernel {
        let mut k = KernelBuilder::new("relu");
        let x = k.param("x", DType::F32, &[n], Access::Read);
        let y = k.param("y", DType::F32, &[n], Access::Write);
        let i = k.var("i", DType::I64);
        let value = Expr::binary(BinOp::Max, Expr::load(x, vec![Idx::Var(i)]), Expr::F32(0.0));
        let kernel = k.finish(vec![map(n, y, i, value)], Schedule::default());
        LoweredKernel {
            kernel,
            args: vec![Arg::Operand(0), Arg::Result(0)],
        }
    }

    fn relu_graph() -> (Graph, NodeId) {
        let mut g = Graph::new("relu", 1);
        let x = input(&mut g, "x", &[1, 4]);
        let r = g.add("r", Op::Relu, &[x.into()]).expect("relu");
        g.set_outputs(vec![r.into()]).expect("outputs");
        (g, r)
    }

    #[test]
    fn runs_a_kernel_on_operands_and_results() {
        let (g, r) = relu_graph();
        let x = HostBuffer::F32(vec![-1.0, 2.0, -3.0, 4.0]);
        let out = eval_lowered(&g, r, &[relu_kernel(4)], &[x]).expect("runs");
        assert_eq!(out, vec![HostBuffer::F32(vec![0.0, 2.0, 0.0, 4.0])]);
    }

    #[test]
    fn later_kernels_see_earlier_results_and_workspaces_start_as_nan() {
        let (g, r) = relu_graph();
        // Kernel 2 doubles the result of kernel 1 in place, then adds a
        // workspace element it never wrote.
        let mut k = KernelBuilder::new("double");
        let y = k.param("y", DType::F32, &[4], Access::ReadWrite);
        let w = k.param("scratch", DType::F32, &[4], Access::ReadWrite);
        let i = k.var("i", DType::I64);
        let load = Expr::load(y, vec![Idx::Var(i)]);
        let double = k.finish(
            vec![map(4, y, i, Expr::binary(BinOp::Add, load.clone(), load))],
            Schedule::default(),
        );
        let double = LoweredKernel {
            kernel: double,
            args: vec![Arg::Result(0), Arg::Workspace { elements: 4 }],
        };
        let x = HostBuffer::F32(vec![-1.0, 2.0, -3.0, 4.0]);
        let out = eval_lowered(
            &g,
            r,
            &[relu_kernel(4), double.clone()],
            std::slice::from_ref(&x),
        )
        .expect("runs");
        assert_eq!(out, vec![HostBuffer::F32(vec![0.0, 4.0, 0.0, 8.0])]);

        let mut poisoned = double;
        if let Stmt::For { body, .. } = &mut poisoned.kernel.body[0] {
            body[0] = Stmt::Store {
                buf: y,
                index: vec![Idx::Var(i)],
                value: Expr::binary(
                    BinOp::Add,
                    Expr::load(y, vec![Idx::Var(i)]),
                    Expr::load(w, vec![Idx::Var(i)]),
                ),
            };
        }
        let out = eval_lowered(&g, r, &[relu_kernel(4), poisoned], &[x]).expect("runs");
        assert!(out[0]
            .as_f32()
            .is_some_and(|v| v.iter().all(|x| x.is_nan())));
    }

    #[test]
    fn operands_are_checked_against_the_graph() {
        let (g, r) = relu_graph();
        let short = HostBuffer::F32(vec![0.0; 3]);
        assert!(matches!(
            eval_lowered(&g, r, &[relu_kernel(4)], &[short]),
            Err(ExecError::Value { .. })
        ));
        let ints = HostBuffer::I64(vec![0; 4]);
        assert!(matches!(
            eval_lowered(&g, r, &[relu_kernel(4)], &[ints]),
            Err(ExecError::Value { .. })
        ));
        assert!(matches!(
            eval_lowered(&g, r, &[relu_kernel(4)], &[]),
            Err(ExecError::Value { .. })
        ));
    }

    #[test]
    fn bindings_a_plan_cannot_honour_are_errors() {
        let (g, r) = relu_graph();
        let x = HostBuffer::F32(vec![0.0; 4]);
        // Writing an operand of an op that is not in place.
        let mut writes_operand = relu_kernel(4);
        writes_operand.args = vec![Arg::Result(0), Arg::Operand(0)];
        writes_operand.kernel.buffers[0].kind = BufferKind::Param(Access::ReadWrite);
        let e = eval_lowered(&g, r, &[writes_operand], std::slice::from_ref(&x));
        assert!(matches!(e, Err(ExecError::Binding { .. })), "{e:?}");
        // Too few args.
        let mut short = relu_kernel(4);
        short.args.pop();
        let e = eval_lowered(&g, r, &[short], std::slice::from_ref(&x));
        assert!(matches!(e, Err(ExecError::Binding { .. })), "{e:?}");
        // A result that does not exist.
        let mut missing = relu_kernel(4);
        missing.args[1] = Arg::Result(1);
        let e = eval_lowered(&g, r, &[missing], std::slice::from_ref(&x));
        assert!(matches!(e, Err(ExecError::Binding { .. })), "{e:?}");
        // One buffer bound twice, once written.
        let mut twice = relu_kernel(4);
        twice.args = vec![Arg::Result(0), Arg::Result(0)];
        let e = eval_lowered(&g, r, &[twice], std::slice::from_ref(&x));
        assert!(matches!(e, Err(ExecError::Binding { .. })), "{e:?}");
        // Evaluation errors name the node and kernel.
        let mut wrong_shape = relu_kernel(4);
        wrong_shape.kernel.buffers[0].shape = vec![5];
        let e = eval_lowered(&g, r, &[wrong_shape], &[x]);
        assert!(
            matches!(&e, Err(ExecError::Eval { node, kernel, .. }) if node == "r" && kernel == "relu"),
            "{e:?}"
        );
    }

    /// A training graph with one SGD update: `w ← w − lr·g` (momentum
    /// unused, `v ← g`), and an output reading `w`.
    fn sgd_graph() -> (Graph, NodeId) {
        let mut g = Graph::new("sgd", 1);
        let f32_of = |shape: &[usize]| (IrDType::F32, Shape::new(shape.to_vec()));
        let (dtype, shape) = f32_of(&[2]);
        let init = Init::Constant { value: 0.0 };
        let w = g
            .add(
                "w",
                Op::Parameter(ParameterAttrs {
                    dtype,
                    shape: shape.clone(),
                    init,
                }),
                &[],
            )
            .expect("w");
        let v = g
            .add(
                "w.momentum",
                Op::Momentum(MomentumAttrs {
                    dtype,
                    shape,
                    of: "w".into(),
                }),
                &[],
            )
            .expect("momentum");
        let grad = input(&mut g, "g", &[2]);
        let lr = input(&mut g, "lr", &[]);
        let attrs = SgdAttrs {
            momentum: 0.0,
            weight_decay: 0.0,
            convention: SgdConvention::Pytorch,
        };
        let step = g
            .add(
                "step",
                Op::SgdUpdate(attrs),
                &[w.into(), v.into(), grad.into(), lr.into()],
            )
            .expect("sgd");
        let out = g.add("out", Op::Relu, &[w.into()]).expect("relu");
        g.set_outputs(vec![out.into()]).expect("outputs");
        (g, step)
    }

    fn sgd_kernel() -> LoweredKernel {
        let mut k = KernelBuilder::new("sgd");
        let w = k.param("w", DType::F32, &[2], Access::ReadWrite);
        let v = k.param("v", DType::F32, &[2], Access::ReadWrite);
        let grad = k.param("g", DType::F32, &[2], Access::Read);
        let lr = k.param("lr", DType::F32, &[], Access::Read);
        let i = k.var("i", DType::I64);
        let gi = Expr::load(grad, vec![Idx::Var(i)]);
        let step = Expr::binary(BinOp::Mul, Expr::load(lr, vec![]), gi.clone());
        let body = vec![Stmt::For {
            var: i,
            extent: Idx::Const(2),
            kind: LoopKind::Serial,
            body: vec![
                Stmt::Store {
                    buf: v,
                    index: vec![Idx::Var(i)],
                    value: gi,
                },
                Stmt::Store {
                    buf: w,
                    index: vec![Idx::Var(i)],
                    value: Expr::binary(BinOp::Sub, Expr::load(w, vec![Idx::Var(i)]), step),
                },
            ],
        }];
        let kernel = k.finish(body, Schedule::default());
        LoweredKernel {
            kernel,
            args: vec![
                Arg::Operand(0),
                Arg::Operand(1),
                Arg::Operand(2),
                Arg::Operand(3),
            ],
        }
    }

    #[test]
    fn in_place_results_are_the_updated_operands() {
        let (g, step) = sgd_graph();
        let operands = [
            HostBuffer::F32(vec![1.0, 2.0]),
            HostBuffer::F32(vec![0.0, 0.0]),
            HostBuffer::F32(vec![10.0, 20.0]),
            HostBuffer::F32(vec![0.1]),
        ];
        let out = eval_lowered(&g, step, &[sgd_kernel()], &operands).expect("runs");
        assert_eq!(
            out,
            vec![
                HostBuffer::F32(vec![0.0, 0.0]),
                HostBuffer::F32(vec![10.0, 20.0])
            ]
        );
        // The caller's operands are untouched.
        assert_eq!(operands[0], HostBuffer::F32(vec![1.0, 2.0]));

        // Binding a result of an in-place op is an error.
        let mut bad = sgd_kernel();
        bad.args[0] = Arg::Result(0);
        assert!(matches!(
            eval_lowered(&g, step, &[bad], &operands),
            Err(ExecError::Binding { .. })
        ));
    }

    #[test]
    fn a_graph_step_reads_old_state_and_writes_new_state_at_the_end() {
        let (g, _) = sgd_graph();
        let lower = |id: NodeId| -> Result<Vec<LoweredKernel>, LowerError> {
            Ok(match g[id].op {
                Op::SgdUpdate(_) => vec![sgd_kernel()],
                Op::Relu => vec![relu_kernel(2)],
                _ => Vec::new(),
            })
        };
        let inputs: HashMap<String, HostBuffer> = [
            ("g".to_owned(), HostBuffer::F32(vec![10.0, 20.0])),
            ("lr".to_owned(), HostBuffer::F32(vec![0.1])),
        ]
        .into();
        let mut state: BTreeMap<String, HostBuffer> = [
            ("w".to_owned(), HostBuffer::F32(vec![1.0, -2.0])),
            ("w.momentum".to_owned(), HostBuffer::F32(vec![0.0, 0.0])),
        ]
        .into();
        let out = run_graph(&g, &inputs, &mut state, lower).expect("runs");
        // `out` reads w from before the step.
        assert_eq!(out, vec![HostBuffer::F32(vec![1.0, 0.0])]);
        assert_eq!(state["w"], HostBuffer::F32(vec![0.0, -4.0]));
        assert_eq!(state["w.momentum"], HostBuffer::F32(vec![10.0, 20.0]));

        // A missing input fails the step and leaves the state as it was.
        let before = state.clone();
        let partial: HashMap<String, HostBuffer> =
            [("g".to_owned(), HostBuffer::F32(vec![1.0, 1.0]))].into();
        let e = run_graph(&g, &partial, &mut state, lower);
        assert!(
            matches!(&e, Err(ExecError::Value { node, .. }) if node == "lr"),
            "{e:?}"
        );
        assert_eq!(state, before);
    }
}
