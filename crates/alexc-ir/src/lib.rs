//! The alexc graph IR.
//!
//! A network is a directed acyclic graph of [`Node`]s stored in a
//! [`petgraph::stable_graph::StableDiGraph`], so node ids stay valid while
//! passes insert and remove nodes. Every node carries one [`Op`] — a closed,
//! serde-derived enum whose variants hold named attribute structs — and the
//! [`TensorType`]s of its results, which shape inference ([`infer`]) computes
//! from the op and its operands. Edges carry which result of the producer feeds
//! which operand slot of the consumer, so multi-result ops (split) and repeated
//! operands (`add(%3, %3)`) are represented exactly.
//!
//! Shapes are static: the model format's symbolic batch dimension is bound
//! before a graph is built. The dtype is part of every type so that
//! reduced-precision types can follow without changing the graph.
//!
//! The [`verify`] function re-checks every invariant (arity, operand order,
//! types, acyclicity, unique names) and can run after any transformation; the
//! [`print`] module renders the stable text form used by snapshot tests and
//! `alexc compile --emit graph`, and [`dot`] renders Graphviz.

pub mod dot;
mod graph;
mod ids;
mod infer;
mod op;
pub mod print;
mod stats;
mod types;
mod verify;

pub use graph::{Edge, Graph, GraphError, Node};
pub use ids::{NodeId, ValueId};
pub use infer::{infer, Operand, ShapeError};
pub use op::{
    AlphaConvention, AvgPool2dAttrs, ConcatAttrs, Conv2dAttrs, Conv2dBackwardAttrs, DropoutAttrs,
    DropoutMaskAttrs, Init, InputAttrs, LinearAttrs, LinearBackwardAttrs, LinearReluAttrs,
    LrnAttrs, LrnMaxPoolAttrs, MomentumAttrs, Op, OpPattern, ParameterAttrs, Pool2dAttrs,
    ReshapeAttrs, SgdAttrs, SgdConvention, SoftmaxAttrs, SplitAttrs,
};
pub use stats::{node_stats, NodeStats};
pub use types::{DType, Shape, TensorType, MAX_ELEMENTS, MAX_RANK};
pub use verify::{verify, VerifyError};
