//! The kernel IR's types.
//!
//! Semantics, precisely (backends and the evaluator implement exactly this):
//!
//! - Buffers are row-major arrays with static shapes; `b[i, j, …]` addresses
//!   element `((i·d1 + j)·d2 + …)`. `BufId(i)` is `buffers[i]`; the kernel's
//!   parameters are its `Param` buffers in that order (its calling
//!   convention). Locals are private to the executing thread (a parallel
//!   loop gives each thread its own) and start uninitialized.
//! - `for v in 0..extent` runs the body with `v = 0, 1, …, extent − 1`; the
//!   extent is evaluated once, before the first iteration, and may depend on
//!   enclosing loop variables (remainder tiles: `min(T, N − i)`).
//!   A `Parallel` loop's iterations may run in any order on any threads, so
//!   they must not write the same element or communicate; a `Vectorized`
//!   loop's iterations may run in lockstep, so an iteration must not read an
//!   element another iteration of the same loop writes.
//! - `let v = e` declares a scalar variable in the rest of the enclosing
//!   block; `v = e` assigns it. Variables are f32 or i64.
//! - Index arithmetic ([`Idx`]) is exact 64-bit integer arithmetic; `Div`
//!   and `Rem` take a positive constant and round toward −∞ (so `Rem` is in
//!   `0..k`).
//! - Float arithmetic is IEEE f32, except that backends may contract `a·b + c`
//!   into an FMA and reassociate sums inside a `Vectorized` loop's reductions
//!   (the stated tolerance of the reference suite covers this).
//! - `Select` evaluates both sides; only `LoadOr` may address outside its
//!   buffer (it then yields its default), so padding reads use `LoadOr`.
//! - Every other load and store must be provably in bounds; the verifier
//!   proves it from loop extents and enclosing `if` conditions.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{BufId, VarId};

/// Element and variable types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    I64,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::I64 => "i64",
        })
    }
}

/// How a kernel uses a parameter buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

/// Whether a buffer is passed in or private scratch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BufferKind {
    /// A parameter of the kernel, bound by the caller.
    Param(Access),
    /// Scratch memory private to the executing thread (register tiles,
    /// packed panels); uninitialized on entry.
    Local,
}

/// A buffer: a kernel parameter or a local scratch buffer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferDecl {
    /// For printing and for binding parameters to the plan's values.
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub kind: BufferKind,
}

impl BufferDecl {
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A scalar or loop variable's declaration (for printing and type checks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VarDecl {
    pub name: String,
    pub dtype: DType,
}

/// How a loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoopKind {
    Serial,
    /// Iterations split across the runtime's threads.
    Parallel,
    /// Iterations run `width` at a time in vector lanes.
    Vectorized {
        width: u32,
    },
    /// Fully unrolled (the extent must be a small constant).
    Unrolled,
}

/// Integer index arithmetic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Idx {
    Const(i64),
    /// A loop variable (scalar variables cannot index: indices stay provable).
    Var(VarId),
    Add(Box<Idx>, Box<Idx>),
    Sub(Box<Idx>, Box<Idx>),
    /// Multiplication by a constant keeps indices affine.
    Mul(Box<Idx>, i64),
    /// Floor division by a positive constant.
    Div(Box<Idx>, i64),
    /// Remainder of floor division by a positive constant, in `0..k`.
    Rem(Box<Idx>, i64),
    Min(Box<Idx>, Box<Idx>),
    Max(Box<Idx>, Box<Idx>),
}

/// Float binary operators (`Max`/`Min` return the other operand if one is NaN
/// only as IEEE `maxNum`/`minNum` do; kernels that must propagate NaN
/// compare explicitly).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    /// `a` to the power `b`.
    Pow,
}

/// Float unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    /// `1 / sqrt(a)`.
    Rsqrt,
    Abs,
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cmp {
    Lt,
    Le,
    Eq,
    Ne,
    Gt,
    Ge,
}

/// A scalar value (f32, or i64 for labels and index values).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    F32(f32),
    /// An element of a buffer; must be in bounds.
    Load {
        buf: BufId,
        index: Vec<Idx>,
    },
    /// An element of a buffer, or `default` when `index` is outside it.
    LoadOr {
        buf: BufId,
        index: Vec<Idx>,
        default: f32,
    },
    /// A scalar variable.
    Var(VarId),
    /// An index value as an i64 scalar.
    Index(Idx),
    /// Conversion between f32 and i64 (f32 → i64 truncates toward zero).
    Cast {
        to: DType,
        value: Box<Expr>,
    },
    Binary {
        op: BinOp,
        a: Box<Expr>,
        b: Box<Expr>,
    },
    Unary {
        op: UnOp,
        a: Box<Expr>,
    },
    /// `a · b + c`.
    Fma {
        a: Box<Expr>,
        b: Box<Expr>,
        c: Box<Expr>,
    },
    /// `then` if `cond`, else `otherwise`; both are evaluated.
    Select {
        cond: Box<Cond>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
}

/// A boolean condition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Cond {
    /// A comparison of indices; inside `if`, the verifier narrows variable
    /// ranges with it (bounds guards).
    Idx {
        op: Cmp,
        a: Idx,
        b: Idx,
    },
    /// A comparison of two scalars of the same type (ReLU masks, argmax,
    /// `label == class`).
    Expr {
        op: Cmp,
        a: Expr,
        b: Expr,
    },
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
}

/// A statement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Stmt {
    For {
        var: VarId,
        extent: Idx,
        kind: LoopKind,
        body: Vec<Stmt>,
    },
    Store {
        buf: BufId,
        index: Vec<Idx>,
        value: Expr,
    },
    /// Declares a scalar variable for the rest of the enclosing block.
    Let { var: VarId, value: Expr },
    /// Assigns a declared scalar variable.
    Assign { var: VarId, value: Expr },
    If {
        cond: Cond,
        then: Vec<Stmt>,
        otherwise: Vec<Stmt>,
    },
}

/// Scheduling decisions, as data: what the lowering used, and what a tuner
/// may change. Axis names are the op's (`n`, `oc`, `oh`, `ow`, `ic`, `k`, …).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Schedule {
    /// Tile size per axis.
    pub tiles: Vec<(String, usize)>,
    /// Vector lanes of the innermost vectorized loop (1 = scalar).
    pub vector_width: u32,
    /// Loop order, outermost first.
    pub loop_order: Vec<String>,
    /// The axis split across threads, if any.
    pub parallel_axis: Option<String>,
}

/// A kernel: a function over its parameter buffers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kernel {
    pub name: String,
    /// `BufId(i)` is `buffers[i]`: parameters and locals.
    pub buffers: Vec<BufferDecl>,
    /// `VarId(i)` is `vars[i]`: loop variables (i64) and scalar variables.
    pub vars: Vec<VarDecl>,
    pub body: Vec<Stmt>,
    pub schedule: Schedule,
}

impl Kernel {
    /// The declaration of a buffer, parameter or local.
    pub fn buffer(&self, id: BufId) -> Option<&BufferDecl> {
        self.buffers.get(id.0 as usize)
    }

    /// The parameters, in calling-convention order, with their ids.
    pub fn params(&self) -> impl Iterator<Item = (BufId, &BufferDecl)> + '_ {
        self.buffers
            .iter()
            .enumerate()
            .filter(|(_, b)| matches!(b.kind, BufferKind::Param(_)))
            .map(|(i, b)| (BufId(i as u32), b))
    }

    pub fn var(&self, id: VarId) -> Option<&VarDecl> {
        self.vars.get(id.0 as usize)
    }
}

/// Builds a kernel: hands out buffer and variable ids.
#[derive(Debug)]
pub struct KernelBuilder {
    name: String,
    buffers: Vec<BufferDecl>,
    vars: Vec<VarDecl>,
}

impl KernelBuilder {
    pub fn new(name: impl Into<String>) -> Self {
        KernelBuilder {
            name: name.into(),
            buffers: Vec::new(),
            vars: Vec::new(),
        }
    }

    /// Declares the next parameter.
    pub fn param(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        shape: &[usize],
        access: Access,
    ) -> BufId {
        self.buffer(name.into(), dtype, shape, BufferKind::Param(access))
    }

    /// Declares a local scratch buffer.
    pub fn local(&mut self, name: impl Into<String>, dtype: DType, shape: &[usize]) -> BufId {
        self.buffer(name.into(), dtype, shape, BufferKind::Local)
    }

    fn buffer(&mut self, name: String, dtype: DType, shape: &[usize], kind: BufferKind) -> BufId {
        self.buffers.push(BufferDecl {
            name,
            dtype,
            shape: shape.to_vec(),
            kind,
        });
        BufId(self.buffers.len() as u32 - 1)
    }

    /// Declares a variable (loop index: i64; scalar: f32 or i64).
    pub fn var(&mut self, name: impl Into<String>, dtype: DType) -> VarId {
        self.vars.push(VarDecl {
            name: name.into(),
            dtype,
        });
        VarId(self.vars.len() as u32 - 1)
    }

    pub fn finish(self, body: Vec<Stmt>, schedule: Schedule) -> Kernel {
        Kernel {
            name: self.name,
            buffers: self.buffers,
            vars: self.vars,
            body,
            schedule,
        }
    }
}

// Convenience constructors, so lowering code reads like the math.

// Builder methods named after the operations they build; `Idx` is a syntax
// tree, not a number, so the `std::ops` traits would mislead.
#[allow(clippy::should_implement_trait)]
impl Idx {
    /// Whether the index is `>= 0` for every value of its loop variables
    /// (which count up from 0, or from a non-negative `begin` in an
    /// outlined parallel body): backends then use unsigned division.
    pub fn non_negative(&self) -> bool {
        match self {
            Idx::Const(c) => *c >= 0,
            Idx::Var(_) => true,
            Idx::Add(a, b) | Idx::Min(a, b) => a.non_negative() && b.non_negative(),
            Idx::Max(a, b) => a.non_negative() || b.non_negative(),
            Idx::Sub(..) => false,
            Idx::Mul(a, k) => *k >= 0 && a.non_negative(),
            Idx::Div(a, _) => a.non_negative(),
            Idx::Rem(..) => true,
        }
    }

    pub fn var(v: VarId) -> Idx {
        Idx::Var(v)
    }
    pub fn add(self, other: impl Into<Idx>) -> Idx {
        Idx::Add(Box::new(self), Box::new(other.into()))
    }
    pub fn sub(self, other: impl Into<Idx>) -> Idx {
        Idx::Sub(Box::new(self), Box::new(other.into()))
    }
    pub fn mul(self, k: i64) -> Idx {
        Idx::Mul(Box::new(self), k)
    }
    pub fn div(self, k: i64) -> Idx {
        Idx::Div(Box::new(self), k)
    }
    pub fn rem(self, k: i64) -> Idx {
        Idx::Rem(Box::new(self), k)
    }
    pub fn min(self, other: impl Into<Idx>) -> Idx {
        Idx::Min(Box::new(self), Box::new(other.into()))
    }
    pub fn max(self, other: impl Into<Idx>) -> Idx {
        Idx::Max(Box::new(self), Box::new(other.into()))
    }
}

impl From<i64> for Idx {
    fn from(k: i64) -> Idx {
        Idx::Const(k)
    }
}

impl From<VarId> for Idx {
    fn from(v: VarId) -> Idx {
        Idx::Var(v)
    }
}

impl Expr {
    pub fn load(buf: BufId, index: Vec<Idx>) -> Expr {
        Expr::Load { buf, index }
    }
    pub fn binary(op: BinOp, a: Expr, b: Expr) -> Expr {
        Expr::Binary {
            op,
            a: Box::new(a),
            b: Box::new(b),
        }
    }
    pub fn unary(op: UnOp, a: Expr) -> Expr {
        Expr::Unary { op, a: Box::new(a) }
    }
    pub fn fma(a: Expr, b: Expr, c: Expr) -> Expr {
        Expr::Fma {
            a: Box::new(a),
            b: Box::new(b),
            c: Box::new(c),
        }
    }
    pub fn select(cond: Cond, then: Expr, otherwise: Expr) -> Expr {
        Expr::Select {
            cond: Box::new(cond),
            then: Box::new(then),
            otherwise: Box::new(otherwise),
        }
    }
}

impl Kernel {
    /// Merges parameter `drop` into parameter `keep`: every access to `drop`
    /// goes to `keep`, which becomes `ReadWrite`, and `drop` disappears from
    /// the parameters (later buffer ids shift down by one). The runtime uses
    /// it when the memory plan writes a result over an operand (an
    /// elementwise op in place): the kernel then has one buffer where it had
    /// two aliased ones, so backends may keep treating distinct parameters
    /// as non-overlapping. Both must be parameters of one dtype and shape.
    pub fn merge_params(&self, keep: BufId, drop: BufId) -> Result<Kernel, String> {
        let (Some(k), Some(d)) = (self.buffer(keep), self.buffer(drop)) else {
            return Err(format!("{}: no buffer {keep} or {drop}", self.name));
        };
        let both_params =
            matches!(k.kind, BufferKind::Param(_)) && matches!(d.kind, BufferKind::Param(_));
        if keep == drop || !both_params || k.dtype != d.dtype || k.shape != d.shape {
            return Err(format!(
                "{}: cannot merge {drop} ({} {:?}) into {keep} ({} {:?})",
                self.name, d.dtype, d.shape, k.dtype, k.shape
            ));
        }
        let renumber = |b: BufId| -> BufId {
            let b = if b == drop { keep } else { b };
            if b.0 > drop.0 {
                BufId(b.0 - 1)
            } else {
                b
            }
        };
        let mut out = self.clone();
        out.buffers[keep.0 as usize].kind = BufferKind::Param(Access::ReadWrite);
        out.buffers.remove(drop.0 as usize);
        out.body = self.body.iter().map(|s| map_stmt(s, &renumber)).collect();
        Ok(out)
    }
}

fn map_stmt(s: &Stmt, f: &dyn Fn(BufId) -> BufId) -> Stmt {
    match s {
        Stmt::For {
            var,
            extent,
            kind,
            body,
        } => Stmt::For {
            var: *var,
            extent: extent.clone(),
            kind: *kind,
            body: body.iter().map(|s| map_stmt(s, f)).collect(),
        },
        Stmt::Store { buf, index, value } => Stmt::Store {
            buf: f(*buf),
            index: index.clone(),
            value: map_expr(value, f),
        },
        Stmt::Let { var, value } => Stmt::Let {
            var: *var,
            value: map_expr(value, f),
        },
        Stmt::Assign { var, value } => Stmt::Assign {
            var: *var,
            value: map_expr(value, f),
        },
        Stmt::If {
            cond,
            then,
            otherwise,
        } => Stmt::If {
            cond: map_cond(cond, f),
            then: then.iter().map(|s| map_stmt(s, f)).collect(),
            otherwise: otherwise.iter().map(|s| map_stmt(s, f)).collect(),
        },
    }
}

fn map_expr(e: &Expr, f: &dyn Fn(BufId) -> BufId) -> Expr {
    let b = |e: &Expr| Box::new(map_expr(e, f));
    match e {
        Expr::F32(_) | Expr::Var(_) | Expr::Index(_) => e.clone(),
        Expr::Load { buf, index } => Expr::Load {
            buf: f(*buf),
            index: index.clone(),
        },
        Expr::LoadOr {
            buf,
            index,
            default,
        } => Expr::LoadOr {
            buf: f(*buf),
            index: index.clone(),
            default: *default,
        },
        Expr::Cast { to, value } => Expr::Cast {
            to: *to,
            value: b(value),
        },
        Expr::Binary { op, a, b: rhs } => Expr::Binary {
            op: *op,
            a: b(a),
            b: b(rhs),
        },
        Expr::Unary { op, a } => Expr::Unary { op: *op, a: b(a) },
        Expr::Fma { a, b: m, c } => Expr::Fma {
            a: b(a),
            b: b(m),
            c: b(c),
        },
        Expr::Select {
            cond,
            then,
            otherwise,
        } => Expr::Select {
            cond: Box::new(map_cond(cond, f)),
            then: b(then),
            otherwise: b(otherwise),
        },
    }
}

fn map_cond(c: &Cond, f: &dyn Fn(BufId) -> BufId) -> Cond {
    match c {
        Cond::Idx { .. } => c.clone(),
        Cond::Expr { op, a, b } => Cond::Expr {
            op: *op,
            a: map_expr(a, f),
            b: map_expr(b, f),
        },
        Cond::And(a, b) => Cond::And(Box::new(map_cond(a, f)), Box::new(map_cond(b, f))),
        Cond::Or(a, b) => Cond::Or(Box::new(map_cond(a, f)), Box::new(map_cond(b, f))),
        Cond::Not(a) => Cond::Not(Box::new(map_cond(a, f))),
    }
}

/// The buffers `stmts` store to (backends mark the others read-only).
pub fn stored_buffers(stmts: &[Stmt]) -> std::collections::BTreeSet<BufId> {
    fn walk(stmts: &[Stmt], out: &mut std::collections::BTreeSet<BufId>) {
        for stmt in stmts {
            match stmt {
                Stmt::For { body, .. } => walk(body, out),
                Stmt::Store { buf, .. } => {
                    out.insert(*buf);
                }
                Stmt::If {
                    then, otherwise, ..
                } => {
                    walk(then, out);
                    walk(otherwise, out);
                }
                Stmt::Let { .. } | Stmt::Assign { .. } => {}
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(stmts, &mut out);
    out
}
