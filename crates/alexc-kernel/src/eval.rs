//! The reference evaluator of kernel IR: the oracle every backend is
//! compared against.
//!
//! [`eval`] runs a kernel on host buffers exactly as the kernel IR's
//! semantics state, in the plainest way: a tree walk over the statements
//! with one environment of variables. Every loop runs serially
//! in order (a `Parallel`, `Vectorized` or `Unrolled` loop computes the same
//! as a serial one for a valid kernel), so a result that differs from a
//! backend's points at the backend — or at a kernel that breaks a rule the
//! serial order hides.
//!
//! It checks more than a backend can, and reports every violation as an
//! [`EvalError`] instead of computing garbage:
//!
//! - the parameters bound (count, dtype, length) against the declarations;
//! - every load and store in bounds, dimension by dimension (`LoadOr`
//!   yields its default outside);
//! - types: loads of i64 buffers are i64, float arithmetic takes f32,
//!   comparisons and `select` take operands of one type, stored values have
//!   the buffer's dtype, variables hold their declared dtype;
//! - scoping: loop variables exist only inside their loop and only `Idx`
//!   reads them; scalar variables exist from their `let` to the end of its
//!   block, are never redeclared while live, and only `Expr::Var` reads them;
//! - access: no store to a `Read` parameter, no load from a `Write` one;
//! - index arithmetic in exact 64-bit integers (overflow is an error), with
//!   `Div`/`Rem` by positive constants only, rounding toward −∞;
//! - locals start uninitialized, and a load of an element not yet stored is
//!   an error. Each iteration of a `Parallel` loop starts with all locals
//!   uninitialized again, since on a backend each thread has its own copy:
//!   a kernel that passes values between iterations through a local fails
//!   here rather than on a multicore run;
//! - f32 → i64 casts of NaN or out-of-range values (no backend defines them).
//!
//! `And`/`Or` conditions evaluate both operands (no short-circuit), like
//! `select`: a guard cannot protect a load in the same condition, so a
//! backend may evaluate conditions either way.

use std::fmt;

use crate::ids::{BufId, VarId};
use crate::kernel::{
    Access, BinOp, BufferKind, Cmp, Cond, DType, Expr, Idx, Kernel, LoopKind, Stmt, UnOp,
};

/// The most elements a local buffer may have before the evaluator refuses
/// to allocate it (locals are register tiles and packed panels; 2^31 − 1 is
/// the IR's largest tensor).
const MAX_LOCAL_ELEMENTS: usize = (1 << 31) - 1;

/// A buffer on the host: what a kernel parameter is bound to.
#[derive(Clone, Debug, PartialEq)]
pub enum HostBuffer {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl HostBuffer {
    /// A zero-filled buffer.
    pub fn zeros(dtype: DType, len: usize) -> HostBuffer {
        match dtype {
            DType::F32 => HostBuffer::F32(vec![0.0; len]),
            DType::I64 => HostBuffer::I64(vec![0; len]),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            HostBuffer::F32(_) => DType::F32,
            HostBuffer::I64(_) => DType::I64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            HostBuffer::F32(v) => v.len(),
            HostBuffer::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            HostBuffer::F32(v) => Some(v),
            HostBuffer::I64(_) => None,
        }
    }

    pub fn as_i64(&self) -> Option<&[i64]> {
        match self {
            HostBuffer::I64(v) => Some(v),
            HostBuffer::F32(_) => None,
        }
    }

    pub fn into_f32(self) -> Option<Vec<f32>> {
        match self {
            HostBuffer::F32(v) => Some(v),
            HostBuffer::I64(_) => None,
        }
    }

    pub fn into_i64(self) -> Option<Vec<i64>> {
        match self {
            HostBuffer::I64(v) => Some(v),
            HostBuffer::F32(_) => None,
        }
    }

    fn get(&self, offset: usize) -> Option<Scalar> {
        match self {
            HostBuffer::F32(v) => v.get(offset).map(|&x| Scalar::F32(x)),
            HostBuffer::I64(v) => v.get(offset).map(|&x| Scalar::I64(x)),
        }
    }

    /// Writes `value` at `offset`; false if the offset or the type is wrong.
    fn set(&mut self, offset: usize, value: Scalar) -> bool {
        match (self, value) {
            (HostBuffer::F32(v), Scalar::F32(x)) => v.get_mut(offset).map(|e| *e = x).is_some(),
            (HostBuffer::I64(v), Scalar::I64(x)) => v.get_mut(offset).map(|e| *e = x).is_some(),
            _ => false,
        }
    }
}

impl From<Vec<f32>> for HostBuffer {
    fn from(v: Vec<f32>) -> Self {
        HostBuffer::F32(v)
    }
}

impl From<Vec<i64>> for HostBuffer {
    fn from(v: Vec<i64>) -> Self {
        HostBuffer::I64(v)
    }
}

/// Why a kernel could not be evaluated. Every variant is a bug in the
/// kernel (or in the binding of its parameters), never in the data, except
/// `Cast`, which reports a value no backend converts consistently.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("kernel takes {expected} parameters, {found} were bound")]
    ParamCount { expected: usize, found: usize },
    #[error("parameter {buf} `{name}` is {expected}, bound to a {found} buffer")]
    ParamDType {
        buf: BufId,
        name: String,
        expected: DType,
        found: DType,
    },
    #[error("parameter {buf} `{name}` has {expected} elements, bound to a buffer of {found}")]
    ParamLength {
        buf: BufId,
        name: String,
        expected: usize,
        found: usize,
    },
    #[error("local {buf} `{name}` is too large to allocate ({shape:?})")]
    LocalTooLarge {
        buf: BufId,
        name: String,
        shape: Vec<usize>,
    },
    #[error("buffer {0} is not declared")]
    UnknownBuffer(BufId),
    #[error("variable {0} is not declared")]
    UnknownVar(VarId),
    #[error("variable {0} is used outside its scope")]
    Unbound(VarId),
    #[error("variable {0} is declared again while in scope")]
    Redeclared(VarId),
    #[error("variable {var}: {message}")]
    VarKind { var: VarId, message: &'static str },
    #[error("{buf} has rank {rank}, indexed with {found} indices")]
    Rank {
        buf: BufId,
        rank: usize,
        found: usize,
    },
    #[error("{access} {buf}{index:?} is outside its shape {shape:?}")]
    OutOfBounds {
        access: &'static str,
        buf: BufId,
        index: Vec<i64>,
        shape: Vec<usize>,
    },
    #[error("read of {buf}{index:?}, an element of a local never written")]
    Uninitialized { buf: BufId, index: Vec<i64> },
    #[error("{buf} is a write-only parameter; it cannot be loaded")]
    LoadWriteOnly { buf: BufId },
    #[error("{buf} is a read-only parameter; it cannot be stored to")]
    StoreReadOnly { buf: BufId },
    #[error("type error: {0}")]
    Type(String),
    #[error("index arithmetic overflows 64 bits")]
    Overflow,
    #[error("division or remainder by {0}; the divisor must be a positive constant")]
    Divisor(i64),
    #[error("cast of {0} to i64 is out of range")]
    Cast(f32),
}

/// A scalar value of either type.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scalar {
    F32(f32),
    I64(i64),
}

impl Scalar {
    fn dtype(self) -> DType {
        match self {
            Scalar::F32(_) => DType::F32,
            Scalar::I64(_) => DType::I64,
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::F32(x) => write!(f, "{x:?}: f32"),
            Scalar::I64(x) => write!(f, "{x}: i64"),
        }
    }
}

/// What a variable holds while it is in scope.
#[derive(Clone, Copy, Debug)]
enum Binding {
    Loop(i64),
    Scalar(Scalar),
}

/// A buffer during evaluation.
enum Slot<'p> {
    Param {
        data: &'p mut HostBuffer,
        access: Access,
    },
    /// A local: its data and which elements were stored since the start of
    /// the kernel (or of the current parallel iteration).
    Local {
        data: HostBuffer,
        written: Vec<bool>,
    },
}

/// Runs `kernel` on its parameters, which `params` holds in calling
/// convention order ([`Kernel::params`]). Parameters are checked against
/// their declarations before anything runs; `Write` and `ReadWrite`
/// parameters hold the results afterwards. On error the parameters may be
/// partly written.
pub fn eval(kernel: &Kernel, params: &mut [HostBuffer]) -> Result<(), EvalError> {
    let expected = kernel.params().count();
    if params.len() != expected {
        return Err(EvalError::ParamCount {
            expected,
            found: params.len(),
        });
    }
    let mut bound = params.iter_mut();
    let mut slots = Vec::with_capacity(kernel.buffers.len());
    for (i, decl) in kernel.buffers.iter().enumerate() {
        let buf = BufId(i as u32);
        let elements = decl.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        match decl.kind {
            BufferKind::Param(access) => {
                let Some(data) = bound.next() else {
                    return Err(EvalError::ParamCount { expected, found: i });
                };
                if data.dtype() != decl.dtype {
                    return Err(EvalError::ParamDType {
                        buf,
                        name: decl.name.clone(),
                        expected: decl.dtype,
                        found: data.dtype(),
                    });
                }
                if elements != Some(data.len()) {
                    return Err(EvalError::ParamLength {
                        buf,
                        name: decl.name.clone(),
                        expected: elements.unwrap_or(usize::MAX),
                        found: data.len(),
                    });
                }
                slots.push(Slot::Param { data, access });
            }
            BufferKind::Local => {
                let len = elements
                    .filter(|&n| n <= MAX_LOCAL_ELEMENTS)
                    .ok_or_else(|| EvalError::LocalTooLarge {
                        buf,
                        name: decl.name.clone(),
                        shape: decl.shape.clone(),
                    })?;
                slots.push(Slot::Local {
                    data: HostBuffer::zeros(decl.dtype, len),
                    written: vec![false; len],
                });
            }
        }
    }
    let mut machine = Machine {
        kernel,
        slots,
        vars: vec![None; kernel.vars.len()],
    };
    machine.block(&kernel.body)
}

/// The evaluator's state: the buffers and the variables in scope.
struct Machine<'k, 'p> {
    kernel: &'k Kernel,
    slots: Vec<Slot<'p>>,
    /// `vars[i]` is the value of `VarId(i)` while it is in scope.
    vars: Vec<Option<Binding>>,
}

impl<'p> Machine<'_, 'p> {
    /// Runs a block; the scalar variables it declares go out of scope at
    /// its end.
    fn block(&mut self, stmts: &[Stmt]) -> Result<(), EvalError> {
        let mut declared = Vec::new();
        for stmt in stmts {
            self.stmt(stmt, &mut declared)?;
        }
        for var in declared {
            self.vars[var.0 as usize] = None;
        }
        Ok(())
    }

    fn stmt(&mut self, stmt: &Stmt, declared: &mut Vec<VarId>) -> Result<(), EvalError> {
        match stmt {
            Stmt::For {
                var,
                extent,
                kind,
                body,
            } => {
                if self.var_dtype(*var)? != DType::I64 {
                    return Err(EvalError::VarKind {
                        var: *var,
                        message: "a loop variable must be declared i64",
                    });
                }
                if self.vars[var.0 as usize].is_some() {
                    return Err(EvalError::Redeclared(*var));
                }
                let extent = self.idx(extent)?;
                for i in 0..extent {
                    if *kind == LoopKind::Parallel {
                        self.forget_locals();
                    }
                    self.vars[var.0 as usize] = Some(Binding::Loop(i));
                    self.block(body)?;
                }
                self.vars[var.0 as usize] = None;
                Ok(())
            }
            Stmt::Store { buf, index, value } => {
                let offset = self.offset(*buf, index, "store to")?;
                let value = self.expr(value)?;
                let slot = self.slot_mut(*buf)?;
                let (data, written) = match slot {
                    Slot::Param {
                        access: Access::Read,
                        ..
                    } => return Err(EvalError::StoreReadOnly { buf: *buf }),
                    Slot::Param { data, .. } => (&mut **data, None),
                    Slot::Local { data, written } => (data, Some(written)),
                };
                let dtype = data.dtype();
                if !data.set(offset, value) {
                    return Err(EvalError::Type(format!(
                        "store of {value} to {buf}, a buffer of {dtype}"
                    )));
                }
                if let Some(w) = written.and_then(|w| w.get_mut(offset)) {
                    *w = true;
                }
                Ok(())
            }
            Stmt::Let { var, value } => {
                let dtype = self.var_dtype(*var)?;
                if self.vars[var.0 as usize].is_some() {
                    return Err(EvalError::Redeclared(*var));
                }
                let value = self.expr(value)?;
                check_var_type(*var, dtype, value)?;
                self.vars[var.0 as usize] = Some(Binding::Scalar(value));
                declared.push(*var);
                Ok(())
            }
            Stmt::Assign { var, value } => {
                let dtype = self.var_dtype(*var)?;
                match self.vars[var.0 as usize] {
                    None => return Err(EvalError::Unbound(*var)),
                    Some(Binding::Loop(_)) => {
                        return Err(EvalError::VarKind {
                            var: *var,
                            message: "a loop variable cannot be assigned",
                        })
                    }
                    Some(Binding::Scalar(_)) => {}
                }
                let value = self.expr(value)?;
                check_var_type(*var, dtype, value)?;
                self.vars[var.0 as usize] = Some(Binding::Scalar(value));
                Ok(())
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                if self.cond(cond)? {
                    self.block(then)
                } else {
                    self.block(otherwise)
                }
            }
        }
    }

    /// Marks every element of every local unwritten (a new thread's copy).
    fn forget_locals(&mut self) {
        for slot in &mut self.slots {
            if let Slot::Local { written, .. } = slot {
                written.fill(false);
            }
        }
    }

    fn var_dtype(&self, var: VarId) -> Result<DType, EvalError> {
        self.kernel
            .var(var)
            .map(|d| d.dtype)
            .ok_or(EvalError::UnknownVar(var))
    }

    fn slot(&self, buf: BufId) -> Result<&Slot<'p>, EvalError> {
        self.slots
            .get(buf.0 as usize)
            .ok_or(EvalError::UnknownBuffer(buf))
    }

    fn slot_mut(&mut self, buf: BufId) -> Result<&mut Slot<'p>, EvalError> {
        self.slots
            .get_mut(buf.0 as usize)
            .ok_or(EvalError::UnknownBuffer(buf))
    }

    fn shape(&self, buf: BufId) -> Result<&[usize], EvalError> {
        self.kernel
            .buffer(buf)
            .map(|d| d.shape.as_slice())
            .ok_or(EvalError::UnknownBuffer(buf))
    }

    /// The row-major offset of `buf[index]`, or `None` when an index lies
    /// outside its dimension.
    fn locate(&self, buf: BufId, index: &[Idx]) -> Result<Option<usize>, EvalError> {
        let shape = self.shape(buf)?;
        if shape.len() != index.len() {
            return Err(EvalError::Rank {
                buf,
                rank: shape.len(),
                found: index.len(),
            });
        }
        let mut offset = 0usize;
        let mut inside = true;
        for (i, &d) in index.iter().zip(shape) {
            match usize::try_from(self.idx(i)?) {
                Ok(i) if i < d => offset = offset * d + i,
                _ => inside = false,
            }
        }
        Ok(inside.then_some(offset))
    }

    /// The values of an index tuple, for error messages.
    fn index_values(&self, index: &[Idx]) -> Vec<i64> {
        index
            .iter()
            .map(|i| self.idx(i).unwrap_or(i64::MIN))
            .collect()
    }

    /// The offset of an access that must be in bounds.
    fn offset(&self, buf: BufId, index: &[Idx], access: &'static str) -> Result<usize, EvalError> {
        self.locate(buf, index)?
            .ok_or_else(|| EvalError::OutOfBounds {
                access,
                buf,
                index: self.index_values(index),
                shape: self.shape(buf).map(<[usize]>::to_vec).unwrap_or_default(),
            })
    }

    /// Loads `buf[index]`, found at an in-bounds `offset`.
    fn load_at(&self, buf: BufId, offset: usize, index: &[Idx]) -> Result<Scalar, EvalError> {
        let data = match self.slot(buf)? {
            Slot::Param {
                access: Access::Write,
                ..
            } => return Err(EvalError::LoadWriteOnly { buf }),
            Slot::Param { data, .. } => &**data,
            Slot::Local { data, written } => {
                if !written.get(offset).copied().unwrap_or(false) {
                    return Err(EvalError::Uninitialized {
                        buf,
                        index: self.index_values(index),
                    });
                }
                data
            }
        };
        // The offset is inside the declared shape, whose element count is
        // the buffer's length (checked when parameters were bound).
        data.get(offset).ok_or_else(|| EvalError::OutOfBounds {
            access: "load from",
            buf,
            index: self.index_values(index),
            shape: self.shape(buf).map(<[usize]>::to_vec).unwrap_or_default(),
        })
    }

    fn idx(&self, idx: &Idx) -> Result<i64, EvalError> {
        Ok(match idx {
            Idx::Const(k) => *k,
            Idx::Var(v) => {
                self.var_dtype(*v)?;
                match self.vars[v.0 as usize] {
                    Some(Binding::Loop(i)) => i,
                    Some(Binding::Scalar(_)) => {
                        return Err(EvalError::VarKind {
                            var: *v,
                            message: "a scalar variable cannot be an index",
                        })
                    }
                    None => return Err(EvalError::Unbound(*v)),
                }
            }
            Idx::Add(a, b) => self
                .idx(a)?
                .checked_add(self.idx(b)?)
                .ok_or(EvalError::Overflow)?,
            Idx::Sub(a, b) => self
                .idx(a)?
                .checked_sub(self.idx(b)?)
                .ok_or(EvalError::Overflow)?,
            Idx::Mul(a, k) => self.idx(a)?.checked_mul(*k).ok_or(EvalError::Overflow)?,
            Idx::Div(a, k) => {
                if *k <= 0 {
                    return Err(EvalError::Divisor(*k));
                }
                self.idx(a)?.div_euclid(*k)
            }
            Idx::Rem(a, k) => {
                if *k <= 0 {
                    return Err(EvalError::Divisor(*k));
                }
                self.idx(a)?.rem_euclid(*k)
            }
            Idx::Min(a, b) => self.idx(a)?.min(self.idx(b)?),
            Idx::Max(a, b) => self.idx(a)?.max(self.idx(b)?),
        })
    }

    fn expr(&self, expr: &Expr) -> Result<Scalar, EvalError> {
        Ok(match expr {
            Expr::F32(x) => Scalar::F32(*x),
            Expr::Load { buf, index } => {
                let offset = self.offset(*buf, index, "load from")?;
                self.load_at(*buf, offset, index)?
            }
            Expr::LoadOr {
                buf,
                index,
                default,
            } => {
                let dtype = self
                    .kernel
                    .buffer(*buf)
                    .ok_or(EvalError::UnknownBuffer(*buf))?
                    .dtype;
                if dtype != DType::F32 {
                    return Err(EvalError::Type(format!(
                        "load_or of {buf}, a buffer of {dtype}; it needs f32"
                    )));
                }
                if let Some(offset) = self.locate(*buf, index)? {
                    self.load_at(*buf, offset, index)?
                } else {
                    // Access rules hold for the buffer even when the index
                    // is outside it.
                    if let Slot::Param {
                        access: Access::Write,
                        ..
                    } = self.slot(*buf)?
                    {
                        return Err(EvalError::LoadWriteOnly { buf: *buf });
                    }
                    Scalar::F32(*default)
                }
            }
            Expr::Var(v) => {
                self.var_dtype(*v)?;
                match self.vars[v.0 as usize] {
                    Some(Binding::Scalar(s)) => s,
                    Some(Binding::Loop(_)) => {
                        return Err(EvalError::VarKind {
                            var: *v,
                            message: "a loop variable is read as a value through Expr::Index",
                        })
                    }
                    None => return Err(EvalError::Unbound(*v)),
                }
            }
            Expr::Index(i) => Scalar::I64(self.idx(i)?),
            Expr::Cast { to, value } => match (self.expr(value)?, to) {
                (Scalar::F32(x), DType::F32) => Scalar::F32(x),
                (Scalar::I64(x), DType::I64) => Scalar::I64(x),
                (Scalar::I64(x), DType::F32) => Scalar::F32(x as f32),
                (Scalar::F32(x), DType::I64) => {
                    let t = x.trunc();
                    // i64::MIN is exactly representable; 2^63 is the first
                    // value above the range.
                    if !(t >= i64::MIN as f32 && t < 9_223_372_036_854_775_808.0f32) {
                        return Err(EvalError::Cast(x));
                    }
                    Scalar::I64(t as i64)
                }
            },
            Expr::Binary { op, a, b } => {
                let (a, b) = (self.f32(a, "binary")?, self.f32(b, "binary")?);
                Scalar::F32(match op {
                    BinOp::Add => a + b,
                    BinOp::Sub => a - b,
                    BinOp::Mul => a * b,
                    BinOp::Div => a / b,
                    BinOp::Max => a.max(b),
                    BinOp::Min => a.min(b),
                    BinOp::Pow => a.powf(b),
                })
            }
            Expr::Unary { op, a } => {
                let a = self.f32(a, "unary")?;
                Scalar::F32(match op {
                    UnOp::Neg => -a,
                    UnOp::Exp => a.exp(),
                    UnOp::Log => a.ln(),
                    UnOp::Sqrt => a.sqrt(),
                    UnOp::Rsqrt => 1.0 / a.sqrt(),
                    UnOp::Abs => a.abs(),
                })
            }
            Expr::Fma { a, b, c } => {
                let (a, b, c) = (
                    self.f32(a, "fma")?,
                    self.f32(b, "fma")?,
                    self.f32(c, "fma")?,
                );
                Scalar::F32(a.mul_add(b, c))
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                let c = self.cond(cond)?;
                let (t, o) = (self.expr(then)?, self.expr(otherwise)?);
                if t.dtype() != o.dtype() {
                    return Err(EvalError::Type(format!("select between {t} and {o}")));
                }
                if c {
                    t
                } else {
                    o
                }
            }
        })
    }

    /// Evaluates an operand of float arithmetic.
    fn f32(&self, expr: &Expr, what: &str) -> Result<f32, EvalError> {
        match self.expr(expr)? {
            Scalar::F32(x) => Ok(x),
            other => Err(EvalError::Type(format!(
                "{what} arithmetic on {other}; it takes f32"
            ))),
        }
    }

    fn cond(&self, cond: &Cond) -> Result<bool, EvalError> {
        Ok(match cond {
            Cond::Idx { op, a, b } => compare(*op, self.idx(a)?, self.idx(b)?),
            Cond::Expr { op, a, b } => match (self.expr(a)?, self.expr(b)?) {
                (Scalar::F32(a), Scalar::F32(b)) => compare(*op, a, b),
                (Scalar::I64(a), Scalar::I64(b)) => compare(*op, a, b),
                (a, b) => return Err(EvalError::Type(format!("comparison of {a} with {b}"))),
            },
            // Both sides always: see the module docs.
            Cond::And(a, b) => {
                let (a, b) = (self.cond(a)?, self.cond(b)?);
                a && b
            }
            Cond::Or(a, b) => {
                let (a, b) = (self.cond(a)?, self.cond(b)?);
                a || b
            }
            Cond::Not(a) => !self.cond(a)?,
        })
    }
}

/// A stored value must have its variable's declared type.
fn check_var_type(var: VarId, dtype: DType, value: Scalar) -> Result<(), EvalError> {
    if value.dtype() == dtype {
        Ok(())
    } else {
        Err(EvalError::Type(format!(
            "{var} is declared {dtype}, given {value}"
        )))
    }
}

/// Compares two values; for f32 this is IEEE comparison (every comparison
/// with NaN is false except `Ne`).
fn compare<T: PartialOrd>(op: Cmp, a: T, b: T) -> bool {
    match op {
        Cmp::Lt => a < b,
        Cmp::Le => a <= b,
        Cmp::Eq => a == b,
        Cmp::Ne => a != b,
        Cmp::Gt => a > b,
        Cmp::Ge => a >= b,
    }
}
