//! The graph executor: runs a whole graph on host tensors, node by node.
//!
//! [`run`] and [`run_all`] work in three steps:
//!
//! 1. **Verify** the graph with `alexc_ir::verify`, so that every later lookup
//!    (operand counts, result types) rests on checked invariants.
//! 2. **Check the bindings**: every input and every weight against the
//!    graph's declared name, dtype and shape. All problems are collected into
//!    one [`InterpError::Bindings`] — a wrong input shape, a missing weight and
//!    a misspelled name are reported together, before anything is computed.
//! 3. **Evaluate** nodes in `graph.topo_order()`, each with its function from
//!    [`crate::ops`], and check each result against the type shape inference
//!    assigned to the node. A disagreement there is a bug in the interpreter
//!    or in the IR's inference and is reported as such rather than letting a
//!    wrong shape flow on.
//!
//! Inputs and weights are borrowed, not copied, while the graph runs. [`run`]
//! drops each intermediate value after its last use, so peak memory is close
//! to that of the live activations; [`run_all`] keeps every value, for
//! layer-by-layer comparison against a backend.
//!
//! Dropout is the only thing whose behaviour depends on [`Mode`]. In
//! training, the mask of a dropout node is drawn from the stream
//! `alexc_tensor::rng::named_rng(seed, node name)` — see [`node_dropout_mask`]
//! — so it depends only on the seed and the node's name, and autodiff or a
//! compiled backend can regenerate exactly the same mask.
//!
//! Training graphs have two more kinds of source. A `DropoutMask` node is
//! bound from the inputs by its own name if the caller gives it; otherwise,
//! in training, it draws the mask the dropout node named by its `key` would
//! draw — so a graph in which autodiff replaced dropout layer `drop6` by
//! `mul(x, drop6.mask)` computes exactly what the forward graph computed.
//! In evaluation an unbound mask is a binding error. A `Momentum` node is
//! optimizer state and is bound from the weights, like a parameter.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use alexc_ir::{
    verify, DType, DropoutAttrs, Graph, MomentumAttrs, NodeId, Op, ParameterAttrs, Shape,
    TensorType, ValueId, VerifyError,
};
use alexc_tensor::{check_weights, expected_parameters, rng::named_rng, Tensor, WeightsMismatch};

use crate::ops::{self, OpError};
use crate::real::Real;

/// A runtime value: a float tensor (computed in `T`, typed `f32` in the
/// graph) or an integer tensor (labels, typed `i64`).
#[derive(Clone, Debug, PartialEq)]
pub enum Value<T> {
    Float(Tensor<T>),
    Int(Tensor<i64>),
}

impl<T> Value<T> {
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::Float(t) => t.shape(),
            Value::Int(t) => t.shape(),
        }
    }

    /// The graph dtype this value has: `f32` for any float tensor.
    pub fn dtype(&self) -> DType {
        match self {
            Value::Float(_) => DType::F32,
            Value::Int(_) => DType::I64,
        }
    }

    /// The graph type this value has.
    pub fn ty(&self) -> TensorType {
        TensorType::new(self.dtype(), Shape::new(self.shape()))
    }

    pub fn as_float(&self) -> Option<&Tensor<T>> {
        match self {
            Value::Float(t) => Some(t),
            Value::Int(_) => None,
        }
    }

    pub fn as_int(&self) -> Option<&Tensor<i64>> {
        match self {
            Value::Int(t) => Some(t),
            Value::Float(_) => None,
        }
    }

    pub fn into_float(self) -> Option<Tensor<T>> {
        match self {
            Value::Float(t) => Some(t),
            Value::Int(_) => None,
        }
    }
}

/// Whether dropout is active.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Inference: dropout is the identity.
    Eval,
    /// Training: every dropout node draws a mask from its own stream,
    /// determined by `seed` and the node's name.
    Train { seed: u64 },
}

/// One problem with the tensors bound to a graph.
#[derive(Clone, Debug, PartialEq)]
pub enum BindingProblem {
    MissingInput {
        name: String,
        expected: TensorType,
    },
    /// A `DropoutMask` node without a bound mask, in evaluation (in
    /// training the mask is drawn instead).
    MissingDropoutMask {
        name: String,
        expected: TensorType,
    },
    UnexpectedInput {
        name: String,
        /// Whether the name is a parameter or momentum buffer, which are
        /// bound with the weights.
        is_parameter: bool,
    },
    InputType {
        name: String,
        expected: TensorType,
        found: TensorType,
    },
    ParameterDType {
        name: String,
        dtype: DType,
    },
    Weights(WeightsMismatch),
}

impl fmt::Display for BindingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindingProblem::MissingInput { name, expected } => {
                write!(f, "input `{name}` is missing (expected {expected})")
            }
            BindingProblem::MissingDropoutMask { name, expected } => write!(
                f,
                "dropout mask `{name}` is missing (expected {expected}); bind it as an input, or run in training mode to draw it"
            ),
            BindingProblem::UnexpectedInput {
                name,
                is_parameter: false,
            } => {
                write!(f, "input `{name}` is not an input of the graph")
            }
            BindingProblem::UnexpectedInput {
                name,
                is_parameter: true,
            } => write!(
                f,
                "input `{name}` is a parameter of the graph; pass it with the weights instead"
            ),
            BindingProblem::InputType {
                name,
                expected,
                found,
            } => {
                write!(f, "input `{name}`: expected {expected}, found {found}")
            }
            BindingProblem::ParameterDType { name, dtype } => write!(
                f,
                "parameter `{name}` has dtype {dtype}; the interpreter binds only f32 parameters and momentum buffers"
            ),
            // Multi-line already; indent it under the list.
            BindingProblem::Weights(m) => write!(f, "{}", m.to_string().replace('\n', "\n  ")),
        }
    }
}

/// Every problem with the inputs and weights given to [`run`].
#[derive(Clone, Debug, PartialEq)]
pub struct BindingErrors(pub Vec<BindingProblem>);

impl fmt::Display for BindingErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the inputs and weights do not match the graph:")?;
        for p in &self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// Why a graph could not be run.
#[derive(Debug, thiserror::Error)]
pub enum InterpError {
    #[error("the graph is invalid:{}", .0.iter().map(|e| format!("\n  {e}")).collect::<String>())]
    InvalidGraph(Vec<VerifyError>),
    #[error("{0}")]
    Bindings(BindingErrors),
    #[error("node `{node}`: {source}")]
    Op { node: String, source: OpError },
    #[error(
        "node `{node}` computed {found}, but the graph says {expected}: the interpreter and shape inference disagree"
    )]
    ResultType {
        node: String,
        expected: String,
        found: String,
    },
    #[error("node `{node}`: {message}")]
    Internal { node: String, message: String },
    /// An `SgdUpdate` node whose results cannot be written back to state.
    #[error("optimizer update `{node}`: {message}")]
    Update { node: String, message: String },
}

/// The dropout mask that [`run`] uses for the dropout node `node_name` in
/// `Mode::Train { seed }`.
pub fn node_dropout_mask<T: Real>(
    node_name: &str,
    seed: u64,
    shape: &[usize],
    attrs: &DropoutAttrs,
) -> Result<Tensor<T>, OpError> {
    ops::dropout_mask(shape, attrs, &mut named_rng(seed, node_name))
}

/// Runs `graph` and returns its outputs, in the order of `graph.outputs()`.
/// `weights` holds every parameter by name, `inputs` every input node's
/// value by name.
pub fn run<T: Real>(
    graph: &Graph,
    weights: &BTreeMap<String, Tensor<T>>,
    inputs: &HashMap<String, Value<T>>,
    mode: Mode,
) -> Result<Vec<Value<T>>, InterpError> {
    let values = execute(graph, weights, inputs, mode, Keep::OutputsAnd(&[]))?;
    outputs_of(graph, &values)
}

/// Copies of the graph outputs, in order, from the values of a run.
pub(crate) fn outputs_of<T: Clone>(
    graph: &Graph,
    values: &HashMap<ValueId, Held<'_, T>>,
) -> Result<Vec<Value<T>>, InterpError> {
    graph
        .outputs()
        .iter()
        .map(|v| {
            values
                .get(v)
                .map(|h| h.to_owned_value())
                .ok_or_else(|| InterpError::Internal {
                    node: name_of(graph, v.node),
                    message: format!("graph output {v} was not computed"),
                })
        })
        .collect()
}

/// Runs `graph` and returns the value of every result of every node, inputs
/// and parameters included.
pub fn run_all<T: Real>(
    graph: &Graph,
    weights: &BTreeMap<String, Tensor<T>>,
    inputs: &HashMap<String, Value<T>>,
    mode: Mode,
) -> Result<HashMap<ValueId, Value<T>>, InterpError> {
    let values = execute(graph, weights, inputs, mode, Keep::All)?;
    Ok(values
        .into_iter()
        .map(|(k, h)| (k, h.into_owned_value()))
        .collect())
}

/// A value during execution: borrowed from the caller or computed.
pub(crate) enum Held<'a, T> {
    Weight(&'a Tensor<T>),
    Input(&'a Value<T>),
    Computed(Value<T>),
}

/// A borrowed view of a held value.
enum ValueRef<'v, T> {
    Float(&'v Tensor<T>),
    Int(&'v Tensor<i64>),
}

impl<T: Clone> Held<'_, T> {
    fn view(&self) -> ValueRef<'_, T> {
        match self {
            Held::Weight(t) => ValueRef::Float(t),
            Held::Input(Value::Float(t)) | Held::Computed(Value::Float(t)) => ValueRef::Float(t),
            Held::Input(Value::Int(t)) | Held::Computed(Value::Int(t)) => ValueRef::Int(t),
        }
    }

    pub(crate) fn to_owned_value(&self) -> Value<T> {
        match self.view() {
            ValueRef::Float(t) => Value::Float(t.clone()),
            ValueRef::Int(t) => Value::Int(t.clone()),
        }
    }

    pub(crate) fn into_owned_value(self) -> Value<T> {
        match self {
            Held::Computed(v) => v,
            other => other.to_owned_value(),
        }
    }
}

pub(crate) fn name_of(graph: &Graph, id: NodeId) -> String {
    graph
        .get(id)
        .map_or_else(|| id.to_string(), |n| n.name.clone())
}

/// Checks every input and weight against the graph; all problems at once.
/// Inputs and dropout masks are bound from `inputs`, parameters and
/// momentum buffers from `weights`.
fn check_bindings<T>(
    graph: &Graph,
    weights: &BTreeMap<String, Tensor<T>>,
    inputs: &HashMap<String, Value<T>>,
    mode: Mode,
) -> Result<(), InterpError> {
    let mut problems = Vec::new();
    let mut input_names = HashSet::new();
    for id in graph.node_ids() {
        let node = &graph[id];
        match &node.op {
            Op::Input(a) => {
                input_names.insert(node.name.as_str());
                let expected = TensorType::new(a.dtype, a.shape.clone());
                match inputs.get(&node.name) {
                    None => problems.push(BindingProblem::MissingInput {
                        name: node.name.clone(),
                        expected,
                    }),
                    Some(v) if v.ty() != expected => problems.push(BindingProblem::InputType {
                        name: node.name.clone(),
                        expected,
                        found: v.ty(),
                    }),
                    Some(_) => {}
                }
            }
            Op::DropoutMask(a) => {
                input_names.insert(node.name.as_str());
                let expected = TensorType::new(DType::F32, a.shape.clone());
                match inputs.get(&node.name) {
                    None if mode == Mode::Eval => {
                        problems.push(BindingProblem::MissingDropoutMask {
                            name: node.name.clone(),
                            expected,
                        })
                    }
                    Some(v) if v.ty() != expected => problems.push(BindingProblem::InputType {
                        name: node.name.clone(),
                        expected,
                        found: v.ty(),
                    }),
                    _ => {}
                }
            }
            Op::Parameter(ParameterAttrs { dtype, .. })
            | Op::Momentum(MomentumAttrs { dtype, .. })
                if *dtype != DType::F32 =>
            {
                problems.push(BindingProblem::ParameterDType {
                    name: node.name.clone(),
                    dtype: *dtype,
                })
            }
            _ => {}
        }
    }
    let mut extra: Vec<&String> = inputs
        .keys()
        .filter(|k| !input_names.contains(k.as_str()))
        .collect();
    extra.sort();
    for name in extra {
        let is_parameter = graph
            .find(name)
            .is_some_and(|id| matches!(graph[id].op, Op::Parameter(_) | Op::Momentum(_)));
        problems.push(BindingProblem::UnexpectedInput {
            name: name.clone(),
            is_parameter,
        });
    }
    if let Err(m) = check_weights(&expected_parameters(graph), weights) {
        problems.push(BindingProblem::Weights(m));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(InterpError::Bindings(BindingErrors(problems)))
    }
}

/// Which values [`execute`] keeps until the end.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Keep<'k> {
    /// Every value.
    All,
    /// The graph outputs and these values; everything else is dropped
    /// after its last use.
    OutputsAnd(&'k [ValueId]),
}

/// Verifies, checks bindings and evaluates every node, keeping the values
/// `keep` asks for.
pub(crate) fn execute<'a, T: Real>(
    graph: &Graph,
    weights: &'a BTreeMap<String, Tensor<T>>,
    inputs: &'a HashMap<String, Value<T>>,
    mode: Mode,
    keep: Keep<'_>,
) -> Result<HashMap<ValueId, Held<'a, T>>, InterpError> {
    verify(graph).map_err(InterpError::InvalidGraph)?;
    let order = graph
        .topo_order()
        .map_err(|cycle| InterpError::InvalidGraph(vec![VerifyError::Cycle(cycle)]))?;
    check_bindings(graph, weights, inputs, mode)?;

    // Remaining uses of each value; kept values are pinned by one extra use.
    let mut uses: HashMap<ValueId, usize> = HashMap::new();
    for &id in &order {
        for v in graph.operands(id) {
            *uses.entry(v).or_default() += 1;
        }
    }
    let keep_all = matches!(keep, Keep::All);
    let pinned = match keep {
        Keep::All => &[],
        Keep::OutputsAnd(extra) => extra,
    };
    for &v in graph.outputs().iter().chain(pinned) {
        *uses.entry(v).or_default() += 1;
    }

    let mut values: HashMap<ValueId, Held<'a, T>> = HashMap::new();
    for id in order {
        let node = &graph[id];
        let operands = graph.operands(id);
        let results = eval(graph, id, &operands, &values, weights, inputs, mode)?;
        if results.len() != node.outputs.len() {
            return Err(InterpError::Internal {
                node: node.name.clone(),
                message: format!(
                    "produced {} results, expected {}",
                    results.len(),
                    node.outputs.len()
                ),
            });
        }
        for (i, (held, expected)) in results.into_iter().zip(&node.outputs).enumerate() {
            let found = match held.view() {
                ValueRef::Float(t) => TensorType::new(DType::F32, Shape::new(t.shape())),
                ValueRef::Int(t) => TensorType::new(DType::I64, Shape::new(t.shape())),
            };
            if &found != expected {
                return Err(InterpError::ResultType {
                    node: node.name.clone(),
                    expected: expected.to_string(),
                    found: found.to_string(),
                });
            }
            values.insert(ValueId::new(id, i as u16), held);
        }
        if !keep_all {
            for v in operands {
                if let Some(n) = uses.get_mut(&v) {
                    *n -= 1;
                    if *n == 0 {
                        values.remove(&v);
                    }
                }
            }
        }
    }
    Ok(values)
}

/// The operands of one node, looked up in the values computed so far.
struct Operands<'v, 'a, T> {
    node: &'v str,
    ids: &'v [ValueId],
    values: &'v HashMap<ValueId, Held<'a, T>>,
}

impl<'v, T: Clone> Operands<'v, '_, T> {
    fn internal(&self, message: String) -> InterpError {
        InterpError::Internal {
            node: self.node.to_string(),
            message,
        }
    }

    fn value(&self, i: usize) -> Result<ValueRef<'v, T>, InterpError> {
        let v = self
            .ids
            .get(i)
            .ok_or_else(|| self.internal(format!("operand {i} is missing")))?;
        let values = self.values;
        values
            .get(v)
            .map(Held::view)
            .ok_or_else(|| self.internal(format!("operand {i} ({v}) has no value")))
    }

    fn float(&self, i: usize) -> Result<&'v Tensor<T>, InterpError> {
        match self.value(i)? {
            ValueRef::Float(t) => Ok(t),
            ValueRef::Int(_) => Err(self.internal(format!("operand {i} is an integer tensor"))),
        }
    }

    fn int(&self, i: usize) -> Result<&'v Tensor<i64>, InterpError> {
        match self.value(i)? {
            ValueRef::Int(t) => Ok(t),
            ValueRef::Float(_) => Err(self.internal(format!("operand {i} is a float tensor"))),
        }
    }

    /// Operand 2 when the op has a bias.
    fn bias(&self, has: bool) -> Result<Option<&'v Tensor<T>>, InterpError> {
        if has {
            self.float(2).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Evaluates one node from its operands' values.
fn eval<'a, T: Real>(
    graph: &Graph,
    id: NodeId,
    ids: &[ValueId],
    values: &HashMap<ValueId, Held<'a, T>>,
    weights: &'a BTreeMap<String, Tensor<T>>,
    inputs: &'a HashMap<String, Value<T>>,
    mode: Mode,
) -> Result<Vec<Held<'a, T>>, InterpError> {
    let node = &graph[id];
    let x = Operands {
        node: &node.name,
        ids,
        values,
    };
    let op_err = |source: OpError| InterpError::Op {
        node: node.name.clone(),
        source,
    };
    let computed = |t: Tensor<T>| vec![Held::Computed(Value::Float(t))];

    Ok(match &node.op {
        Op::Input(_) => {
            let v = inputs
                .get(&node.name)
                .ok_or_else(|| x.internal("input is not bound".into()))?;
            vec![Held::Input(v)]
        }
        Op::Parameter(_) => {
            let t = weights
                .get(&node.name)
                .ok_or_else(|| x.internal("parameter is not bound".into()))?;
            vec![Held::Weight(t)]
        }
        Op::Conv2d(a) => {
            computed(ops::conv2d(x.float(0)?, x.float(1)?, x.bias(a.bias)?, a).map_err(op_err)?)
        }
        Op::Relu => computed(ops::relu(x.float(0)?)),
        Op::Lrn(a) => computed(ops::lrn(x.float(0)?, a).map_err(op_err)?),
        Op::MaxPool2d(a) => computed(ops::max_pool2d(x.float(0)?, a).map_err(op_err)?),
        Op::AvgPool2d(a) => computed(ops::avg_pool2d(x.float(0)?, a).map_err(op_err)?),
        Op::Flatten => computed(ops::flatten(x.float(0)?).map_err(op_err)?),
        Op::Linear(a) => {
            computed(ops::linear(x.float(0)?, x.float(1)?, x.bias(a.bias)?, a).map_err(op_err)?)
        }
        Op::Dropout(a) => {
            let input = x.float(0)?;
            let out = match mode {
                Mode::Eval => ops::dropout(input, None),
                Mode::Train { seed } => node_dropout_mask(&node.name, seed, input.shape(), a)
                    .and_then(|mask| ops::dropout(input, Some(&mask))),
            };
            computed(out.map_err(op_err)?)
        }
        Op::Softmax(a) => computed(ops::softmax(x.float(0)?, a).map_err(op_err)?),
        Op::Concat(a) => {
            let xs = (0..ids.len())
                .map(|i| x.float(i))
                .collect::<Result<Vec<_>, _>>()?;
            computed(ops::concat(&xs, a).map_err(op_err)?)
        }
        Op::Split(a) => ops::split(x.float(0)?, a)
            .map_err(op_err)?
            .into_iter()
            .map(|t| Held::Computed(Value::Float(t)))
            .collect(),
        Op::Add => computed(ops::add(x.float(0)?, x.float(1)?).map_err(op_err)?),
        Op::SoftmaxCrossEntropy => {
            computed(ops::softmax_cross_entropy(x.float(0)?, x.int(1)?).map_err(op_err)?)
        }

        Op::DropoutMask(a) => match (inputs.get(&node.name), mode) {
            (Some(v), _) => vec![Held::Input(v)],
            // The forward dropout layer `key`'s own mask.
            (None, Mode::Train { seed }) => computed(
                node_dropout_mask(&a.key, seed, a.shape.dims(), &DropoutAttrs { p: a.p })
                    .map_err(op_err)?,
            ),
            (None, Mode::Eval) => return Err(x.internal("dropout mask is not bound".into())),
        },
        Op::Momentum(_) => {
            let t = weights
                .get(&node.name)
                .ok_or_else(|| x.internal("momentum buffer is not bound".into()))?;
            vec![Held::Weight(t)]
        }
        Op::Mul => computed(ops::mul(x.float(0)?, x.float(1)?).map_err(op_err)?),
        Op::Reshape(a) => computed(ops::reshape(x.float(0)?, a).map_err(op_err)?),

        Op::ConvRelu(a) => {
            computed(ops::conv_relu(x.float(0)?, x.float(1)?, x.bias(a.bias)?, a).map_err(op_err)?)
        }
        Op::LrnMaxPool(a) => computed(ops::lrn_max_pool(x.float(0)?, a).map_err(op_err)?),
        Op::LinearRelu(a) => {
            let mask = if a.dropout {
                Some(x.float(2 + usize::from(a.linear.bias))?)
            } else {
                None
            };
            let bias = x.bias(a.linear.bias)?;
            computed(ops::linear_relu(x.float(0)?, x.float(1)?, bias, mask, a).map_err(op_err)?)
        }

        Op::ReluBackward => computed(ops::relu_backward(x.float(0)?, x.float(1)?).map_err(op_err)?),
        Op::Conv2dBackward(a) => layer_grads(
            ops::conv2d_backward(x.float(0)?, x.float(1)?, x.float(2)?, a).map_err(op_err)?,
        ),
        Op::ConvReluBackward(a) => layer_grads(
            ops::conv_relu_backward(x.float(0)?, x.float(1)?, x.float(2)?, x.float(3)?, a)
                .map_err(op_err)?,
        ),
        Op::LinearBackward(a) => {
            // Operands: x, w, [y if relu], [mask if dropout], dy.
            let y = if a.relu { Some(x.float(2)?) } else { None };
            let at_mask = 2 + usize::from(a.relu);
            let mask = if a.dropout {
                Some(x.float(at_mask)?)
            } else {
                None
            };
            let dy = x.float(at_mask + usize::from(a.dropout))?;
            layer_grads(
                ops::linear_backward(x.float(0)?, x.float(1)?, y, mask, dy, a).map_err(op_err)?,
            )
        }
        Op::LrnBackward(a) => {
            computed(ops::lrn_backward(x.float(0)?, x.float(1)?, a).map_err(op_err)?)
        }
        Op::MaxPool2dBackward(a) => {
            computed(ops::max_pool2d_backward(x.float(0)?, x.float(1)?, a).map_err(op_err)?)
        }
        Op::AvgPool2dBackward(a) => {
            computed(ops::avg_pool2d_backward(x.float(0)?, x.float(1)?, a).map_err(op_err)?)
        }
        Op::LrnMaxPoolBackward(a) => {
            computed(ops::lrn_max_pool_backward(x.float(0)?, x.float(1)?, a).map_err(op_err)?)
        }
        Op::SoftmaxBackward(a) => {
            computed(ops::softmax_backward(x.float(0)?, x.float(1)?, a).map_err(op_err)?)
        }
        Op::SoftmaxCrossEntropyBackward => {
            computed(ops::softmax_cross_entropy_backward(x.float(0)?, x.int(1)?).map_err(op_err)?)
        }
        Op::SgdUpdate(a) => {
            let step = ops::sgd_update(x.float(0)?, x.float(1)?, x.float(2)?, x.float(3)?, a)
                .map_err(op_err)?;
            vec![
                Held::Computed(Value::Float(step.w)),
                Held::Computed(Value::Float(step.v)),
            ]
        }
    })
}

/// The results of a conv or linear backward, in the op's order.
fn layer_grads<'a, T>(grads: ops::LayerGrads<T>) -> Vec<Held<'a, T>> {
    grads
        .into_results()
        .into_iter()
        .map(|t| Held::Computed(Value::Float(t)))
        .collect()
}
