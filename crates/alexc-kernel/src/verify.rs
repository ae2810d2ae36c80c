//! The kernel IR verifier: every rule a backend relies on, checked before
//! code is generated. Generated code does no bounds checks, so the bounds
//! proof here is what keeps a compiled kernel inside its buffers.
//!
//! One walk over the body checks, with the scopes of the walk:
//!
//! - **declarations**: every `BufId` and `VarId` is declared; loop
//!   variables are declared i64;
//! - **scoping**: a loop variable exists only inside its loop and is read
//!   only by `Idx`; a scalar variable exists from its `let` to the end of
//!   the enclosing block, is read only by `Expr::Var`, and is assigned only
//!   while in scope; no variable is declared again while in scope;
//! - **types**: loads have their buffer's dtype, float arithmetic takes
//!   f32, comparisons and `select` take one type, stored and assigned
//!   values have the declared dtype, `load_or` reads f32 buffers;
//! - **index arithmetic**: `Div` and `Rem` by positive constants;
//! - **access**: no store to a `Read` parameter, no load from a `Write` one;
//! - **loops**: vector widths are at least 1, unrolled loops have constant
//!   extents of at most [`MAX_UNROLL`];
//! - **bounds**: every `Load` and `Store` index lies in `0..dim` in every
//!   dimension (`LoadOr` is exempt).
//!
//! # The bounds proof
//!
//! Index expressions are put in affine form: a constant plus integer
//! multiples of loop variables and of *opaque* terms (`min`, `max`, `/`,
//! `%` subexpressions, compared structurally, so `max(0, c − 2)` cancels
//! against itself). Each loop variable `v` carries lower and upper bounds,
//! themselves affine in variables of *enclosing* loops: `v ≥ 0` and
//! `v ≤ e − 1` from `for v in 0..e` (when `e = min(a, b, …)`, each of
//! `a − 1`, `b − 1`, … is an upper bound), and more from the conditions of
//! enclosing `if`s.
//!
//! The upper bound of an affine form eliminates variables innermost first,
//! Fourier–Motzkin style: a variable with a positive coefficient is
//! replaced by each of its upper bounds in turn (a negative one by its lower
//! bounds), and the smallest result over those choices is kept. This is
//! what proves remainder tiles: in `t·T + j` with `j ≤ min(T, N − t·T) − 1`,
//! the choice `N − t·T − 1` cancels `t` and gives `N − 1`. Opaque terms
//! come last: `min(a, b)` under a positive coefficient may be replaced by
//! either argument (likewise `max` under a negative one); otherwise the term
//! is bounded by an interval computed from its arguments' bounds (`⌊lo/k⌋`,
//! `⌊hi/k⌋` for `/ k`; `0..k` for `% k` unless the argument stays within
//! one period). Lower bounds are the negated upper bounds of the negation.
//!
//! Conditions of `if`s add bounds: the `then` branch assumes every
//! comparison of a conjunction of `Cond::Idx` comparisons (through `!`,
//! and `!(a || b)`), the `else` branch the negation of a single comparison
//! or of a disjunction. A comparison `a op b` becomes `g ≥ 0` for an affine
//! `g`; it bounds the innermost loop variable of `g` when that variable has
//! coefficient ±1, occurs nowhere else in `g`, and every other variable of
//! `g` belongs to an enclosing loop — so padding guards like
//! `0 <= oh·s + kh − p && oh·s + kh − p < H` bound `kh`. Conditions inside
//! `select` add nothing, since both sides of a `select` are evaluated.
//!
//! Every step over-approximates, so the proof is sound: if it accepts an
//! access, the access is in bounds for every execution. It is
//! incomplete — it may reject a correct kernel (say, one whose proof needs
//! a bound on a non-innermost variable of a guard) — and reports the
//! interval it computed, so that the kernel can be written with the bound
//! stated where the verifier sees it. Each query has a step budget; a
//! query that runs out counts as unbounded.

use std::fmt;

use crate::ids::{BufId, VarId};
use crate::kernel::{Access, BufferKind, Cmp, Cond, DType, Expr, Idx, Kernel, LoopKind, Stmt};
use crate::print::{access_to_string, cond_to_string, expr_to_string, idx_to_string};

/// The largest extent of an `Unrolled` loop.
pub const MAX_UNROLL: i64 = 256;

/// Steps one bound query may take before it gives up (and the access is
/// reported as unbounded).
const BUDGET: usize = 20_000;

/// The deepest recursion one bound query may reach (keeps the stack small
/// whatever the kernel).
const MAX_NESTING: usize = 256;

/// One broken rule. `at` quotes the statement or access, in the text form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("{at}: buffer {buf} is not declared")]
    UnknownBuffer { buf: BufId, at: String },
    #[error("{at}: variable {var} is not declared")]
    UnknownVar { var: VarId, at: String },
    #[error("{at}: {var} is used outside its scope")]
    OutOfScope { var: VarId, at: String },
    #[error("{at}: {var} is declared again while in scope")]
    Redeclared { var: VarId, at: String },
    #[error("{at}: {message}")]
    Type { at: String, message: String },
    #[error("{at}: division or remainder by {k}; the divisor must be a positive constant")]
    Divisor { k: i64, at: String },
    #[error("{at}: {message}")]
    Access {
        buf: BufId,
        at: String,
        message: String,
    },
    #[error("{at}: {buf} has rank {rank}, indexed with {found} indices")]
    Rank {
        buf: BufId,
        at: String,
        rank: usize,
        found: usize,
    },
    #[error("{at}: {message}")]
    Loop {
        var: VarId,
        at: String,
        message: String,
    },
    /// An access the bounds proof cannot show to be inside dimension `dim`
    /// (of size `size`): the index lies in `[lo, hi]` (`None`: unbounded).
    #[error("{at}: index {dim} ({index}) lies in {}, outside 0..{size}", Interval(*.lo, *.hi))]
    OutOfBounds {
        buf: BufId,
        at: String,
        dim: usize,
        index: String,
        lo: Option<i64>,
        hi: Option<i64>,
        size: usize,
    },
}

/// An interval for messages: `[0, 55]`, `[-inf, 3]`.
struct Interval(Option<i64>, Option<i64>);

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(lo) => write!(f, "[{lo}, ")?,
            None => write!(f, "[-inf, ")?,
        }
        match self.1 {
            Some(hi) => write!(f, "{hi}]"),
            None => write!(f, "+inf]"),
        }
    }
}

/// Checks every rule; all violations at once.
pub fn verify(kernel: &Kernel) -> Result<(), Vec<VerifyError>> {
    let mut v = Verifier {
        kernel,
        loops: vec![None; kernel.vars.len()],
        scalars: vec![false; kernel.vars.len()],
        depth: 0,
        errors: Vec::new(),
    };
    v.block(&kernel.body);
    if v.errors.is_empty() {
        Ok(())
    } else {
        Err(v.errors)
    }
}

// ---------------------------------------------------------------------------
// Affine forms

/// A non-constant part of an affine form.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Term {
    Var(VarId),
    /// A `min`, `max`, `/` or `%` subexpression, kept whole.
    Opaque(Idx),
}

/// `constant + Σ coefficient · term`, with no zero coefficients and no
/// term twice. i128 leaves room for the products of i64 constants; any
/// overflow beyond it makes the form unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Affine {
    constant: i128,
    terms: Vec<(Term, i128)>,
}

impl Affine {
    fn constant(k: i128) -> Affine {
        Affine {
            constant: k,
            terms: Vec::new(),
        }
    }

    fn term(t: Term) -> Affine {
        Affine {
            constant: 0,
            terms: vec![(t, 1)],
        }
    }

    /// `self + k · other`.
    fn add_scaled(&self, other: &Affine, k: i128) -> Option<Affine> {
        let mut out = self.clone();
        out.constant = out.constant.checked_add(other.constant.checked_mul(k)?)?;
        for (t, c) in &other.terms {
            let c = c.checked_mul(k)?;
            match out.terms.iter().position(|(u, _)| u == t) {
                Some(i) => out.terms[i].1 = out.terms[i].1.checked_add(c)?,
                None => out.terms.push((t.clone(), c)),
            }
        }
        out.terms.retain(|(_, c)| *c != 0);
        Some(out)
    }

    fn scale(&self, k: i128) -> Option<Affine> {
        Affine::constant(0).add_scaled(self, k)
    }

    /// The form with term `t` (coefficient `c`) replaced by `by`.
    fn substitute(&self, t: &Term, c: i128, by: &Affine) -> Option<Affine> {
        self.add_scaled(&Affine::term(t.clone()), -c)?
            .add_scaled(by, c)
    }
}

/// The affine form of an index expression, or `None` on overflow.
fn linearize(idx: &Idx) -> Option<Affine> {
    Some(match idx {
        Idx::Const(k) => Affine::constant(i128::from(*k)),
        Idx::Var(v) => Affine::term(Term::Var(*v)),
        Idx::Add(a, b) => linearize(a)?.add_scaled(&linearize(b)?, 1)?,
        Idx::Sub(a, b) => linearize(a)?.add_scaled(&linearize(b)?, -1)?,
        Idx::Mul(a, k) => linearize(a)?.scale(i128::from(*k))?,
        Idx::Div(..) | Idx::Rem(..) | Idx::Min(..) | Idx::Max(..) => {
            Affine::term(Term::Opaque(idx.clone()))
        }
    })
}

/// The arguments of nested `min`s: `min(a, min(b, c))` → `[a, b, c]`.
fn min_arms(idx: &Idx) -> Vec<&Idx> {
    match idx {
        Idx::Min(a, b) => {
            let mut arms = min_arms(a);
            arms.extend(min_arms(b));
            arms
        }
        other => vec![other],
    }
}

/// Every loop variable an index expression reads.
fn vars_of(idx: &Idx, out: &mut Vec<VarId>) {
    match idx {
        Idx::Const(_) => {}
        Idx::Var(v) => out.push(*v),
        Idx::Add(a, b) | Idx::Sub(a, b) | Idx::Min(a, b) | Idx::Max(a, b) => {
            vars_of(a, out);
            vars_of(b, out);
        }
        Idx::Mul(a, _) | Idx::Div(a, _) | Idx::Rem(a, _) => vars_of(a, out),
    }
}

/// What the proof knows about a loop variable in scope.
#[derive(Clone, Debug)]
struct LoopVar {
    /// Nesting depth of its loop (outermost 1).
    depth: usize,
    /// `v ≥ l` for each `l`; every variable in `l` is of an enclosing loop.
    lower: Vec<Affine>,
    /// `v ≤ u` for each `u`.
    upper: Vec<Affine>,
}

/// One bound query over the loop variables in scope.
struct Bounds<'a> {
    loops: &'a [Option<LoopVar>],
    /// Steps left.
    budget: usize,
    /// Current recursion depth (each level eliminates a variable or an
    /// opaque term, so real kernels stay far below the limit).
    nesting: usize,
}

impl Bounds<'_> {
    fn new(loops: &[Option<LoopVar>]) -> Bounds<'_> {
        Bounds {
            loops,
            budget: BUDGET,
            nesting: 0,
        }
    }

    fn loop_var(&self, v: VarId) -> Option<&LoopVar> {
        self.loops.get(v.0 as usize)?.as_ref()
    }

    /// An upper bound of `f` over every execution, or `None` if none is
    /// found.
    fn upper(&mut self, f: &Affine) -> Option<i128> {
        self.budget = self.budget.checked_sub(1)?;
        if self.nesting >= MAX_NESTING {
            return None;
        }
        self.nesting += 1;
        let bound = self.upper_step(f);
        self.nesting -= 1;
        bound
    }

    fn upper_step(&mut self, f: &Affine) -> Option<i128> {
        // The innermost variable first: its bounds only mention outer ones.
        let innermost = f
            .terms
            .iter()
            .filter_map(|(t, c)| match t {
                Term::Var(v) => Some((*v, *c)),
                Term::Opaque(_) => None,
            })
            .map(|(v, c)| self.loop_var(v).map(|l| (v, c, l.depth)))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max_by_key(|&(_, _, depth)| depth);
        if let Some((v, c, _)) = innermost {
            let lv = self.loop_var(v)?;
            let choices = if c > 0 {
                lv.upper.clone()
            } else {
                lv.lower.clone()
            };
            let mut best = None;
            for by in &choices {
                if let Some(u) = f
                    .substitute(&Term::Var(v), c, by)
                    .and_then(|g| self.upper(&g))
                {
                    best = Some(best.map_or(u, |b: i128| b.min(u)));
                }
            }
            return best;
        }
        let Some((t, c)) = f.terms.first().cloned() else {
            return Some(f.constant);
        };
        let Term::Opaque(idx) = &t else { return None };
        match idx {
            Idx::Min(a, b) | Idx::Max(a, b) if matches!(idx, Idx::Min(..)) == (c > 0) => {
                // min(a, b) ≤ a and ≤ b (max(a, b) ≥ a and ≥ b): either
                // argument bounds the term in the direction needed.
                let mut best = None;
                for arm in [a, b] {
                    let bound = linearize(arm)
                        .and_then(|by| f.substitute(&t, c, &by))
                        .and_then(|g| self.upper(&g));
                    if let Some(u) = bound {
                        best = Some(best.map_or(u, |b: i128| b.min(u)));
                    }
                }
                best
            }
            _ => {
                let (lo, hi) = self.opaque(idx);
                let k = if c > 0 { hi? } else { lo? };
                let rest = f.substitute(&t, c, &Affine::constant(k))?;
                self.upper(&rest)
            }
        }
    }

    fn lower(&mut self, f: &Affine) -> Option<i128> {
        self.upper(&f.scale(-1)?)?.checked_neg()
    }

    fn idx_lower(&mut self, idx: &Idx) -> Option<i128> {
        self.lower(&linearize(idx)?)
    }

    fn idx_upper(&mut self, idx: &Idx) -> Option<i128> {
        self.upper(&linearize(idx)?)
    }

    /// Bounds of an opaque subexpression from bounds of its arguments.
    fn opaque(&mut self, idx: &Idx) -> (Option<i128>, Option<i128>) {
        match idx {
            Idx::Min(a, b) => {
                let lo = self
                    .idx_lower(a)
                    .zip(self.idx_lower(b))
                    .map(|(x, y)| x.min(y));
                let hi = match (self.idx_upper(a), self.idx_upper(b)) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
                (lo, hi)
            }
            Idx::Max(a, b) => {
                let lo = match (self.idx_lower(a), self.idx_lower(b)) {
                    (Some(x), Some(y)) => Some(x.max(y)),
                    (x, y) => x.or(y),
                };
                let hi = self
                    .idx_upper(a)
                    .zip(self.idx_upper(b))
                    .map(|(x, y)| x.max(y));
                (lo, hi)
            }
            Idx::Div(a, k) if *k > 0 => {
                let k = i128::from(*k);
                (
                    self.idx_lower(a).map(|x| x.div_euclid(k)),
                    self.idx_upper(a).map(|x| x.div_euclid(k)),
                )
            }
            Idx::Rem(a, k) if *k > 0 => {
                let k = i128::from(*k);
                match (self.idx_lower(a), self.idx_upper(a)) {
                    (Some(lo), Some(hi)) if lo.div_euclid(k) == hi.div_euclid(k) => {
                        (Some(lo.rem_euclid(k)), Some(hi.rem_euclid(k)))
                    }
                    _ => (Some(0), Some(k - 1)),
                }
            }
            // Non-positive divisors are reported elsewhere; affine forms
            // never reach here.
            _ => (None, None),
        }
    }
}

// ---------------------------------------------------------------------------
// The walk

struct Verifier<'k> {
    kernel: &'k Kernel,
    /// `loops[i]`: what is known of `VarId(i)` while its loop is open.
    loops: Vec<Option<LoopVar>>,
    /// `scalars[i]`: whether `VarId(i)` is a scalar variable in scope.
    scalars: Vec<bool>,
    depth: usize,
    errors: Vec<VerifyError>,
}

impl Verifier<'_> {
    fn error(&mut self, e: VerifyError) {
        self.errors.push(e);
    }

    fn block(&mut self, stmts: &[Stmt]) {
        let mut declared = Vec::new();
        for stmt in stmts {
            self.stmt(stmt, &mut declared);
        }
        for v in declared {
            if let Some(s) = self.scalars.get_mut(v.0 as usize) {
                *s = false;
            }
        }
    }

    /// Whether `var` is in scope as anything.
    fn in_scope(&self, var: VarId) -> bool {
        let i = var.0 as usize;
        self.loops.get(i).is_some_and(Option::is_some)
            || self.scalars.get(i).copied().unwrap_or(false)
    }

    /// The declared dtype of `var`, reporting it if undeclared.
    fn declared(&mut self, var: VarId, at: &str) -> Option<DType> {
        let dtype = self.kernel.var(var).map(|d| d.dtype);
        if dtype.is_none() {
            self.error(VerifyError::UnknownVar {
                var,
                at: at.to_owned(),
            });
        }
        dtype
    }

    fn stmt(&mut self, stmt: &Stmt, declared: &mut Vec<VarId>) {
        match stmt {
            Stmt::For {
                var,
                extent,
                kind,
                body,
            } => self.for_loop(*var, extent, *kind, body),
            Stmt::Store { buf, index, value } => {
                let at = format!("store {}", access_to_string(*buf, index));
                let ty = self.expr(value, &at);
                let Some(decl) = self.kernel.buffer(*buf) else {
                    self.error(VerifyError::UnknownBuffer { buf: *buf, at });
                    return;
                };
                if decl.kind == BufferKind::Param(Access::Read) {
                    self.error(VerifyError::Access {
                        buf: *buf,
                        at: at.clone(),
                        message: format!("{buf} `{}` is a read-only parameter", decl.name),
                    });
                }
                if let Some(ty) = ty.filter(|&t| t != decl.dtype) {
                    self.error(VerifyError::Type {
                        at: at.clone(),
                        message: format!("stores a {ty} value into a {} buffer", decl.dtype),
                    });
                }
                self.access(*buf, index, true, &at);
            }
            Stmt::Let { var, value } => {
                let at = format!("let {var} = {}", expr_to_string(value));
                let ty = self.expr(value, &at);
                let Some(dtype) = self.declared(*var, &at) else {
                    return;
                };
                if self.in_scope(*var) {
                    self.error(VerifyError::Redeclared {
                        var: *var,
                        at: at.clone(),
                    });
                }
                self.check_assigned(*var, dtype, ty, &at);
                self.scalars[var.0 as usize] = true;
                declared.push(*var);
            }
            Stmt::Assign { var, value } => {
                let at = format!("{var} = {}", expr_to_string(value));
                let ty = self.expr(value, &at);
                let Some(dtype) = self.declared(*var, &at) else {
                    return;
                };
                if !self.scalars[var.0 as usize] {
                    self.error(VerifyError::OutOfScope {
                        var: *var,
                        at: at.clone(),
                    });
                }
                self.check_assigned(*var, dtype, ty, &at);
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                let at = format!("if {}", cond_to_string(cond));
                self.cond(cond, &at);
                for (branch, positive) in [(then, true), (otherwise, false)] {
                    let mut facts = Vec::new();
                    guard_facts(cond, positive, &mut facts);
                    let saved = self.assume(&facts);
                    self.block(branch);
                    self.restore(saved);
                }
            }
        }
    }

    fn check_assigned(&mut self, var: VarId, dtype: DType, ty: Option<DType>, at: &str) {
        if let Some(ty) = ty.filter(|&t| t != dtype) {
            self.error(VerifyError::Type {
                at: at.to_owned(),
                message: format!("{var} is {dtype}, given a {ty} value"),
            });
        }
    }

    fn for_loop(&mut self, var: VarId, extent: &Idx, kind: LoopKind, body: &[Stmt]) {
        let at = format!("for {var} in 0..{}", idx_to_string(extent));
        let extent_ok = self.idx(extent, &at);
        let Some(dtype) = self.declared(var, &at) else {
            return;
        };
        if dtype != DType::I64 {
            self.error(VerifyError::Loop {
                var,
                at: at.clone(),
                message: format!("loop variable {var} is {dtype}"),
            });
        }
        if self.in_scope(var) {
            self.error(VerifyError::Redeclared {
                var,
                at: at.clone(),
            });
            return;
        }
        match kind {
            LoopKind::Vectorized { width: 0 } => self.error(VerifyError::Loop {
                var,
                at: at.clone(),
                message: "vector width 0".to_owned(),
            }),
            LoopKind::Unrolled if !matches!(extent, Idx::Const(k) if *k <= MAX_UNROLL) => self
                .error(VerifyError::Loop {
                    var,
                    at: at.clone(),
                    message: format!(
                        "an unrolled loop needs a constant extent of at most {MAX_UNROLL}"
                    ),
                }),
            _ => {}
        }
        // v ≥ 0 and v ≤ a − 1 for each argument a of a top-level `min`.
        let upper = if extent_ok {
            min_arms(extent)
                .into_iter()
                .filter_map(|arm| linearize(arm)?.add_scaled(&Affine::constant(1), -1))
                .collect()
        } else {
            Vec::new()
        };
        self.depth += 1;
        self.loops[var.0 as usize] = Some(LoopVar {
            depth: self.depth,
            lower: vec![Affine::constant(0)],
            upper,
        });
        self.block(body);
        self.loops[var.0 as usize] = None;
        self.depth -= 1;
    }

    /// Adds guard facts (`g ≥ 0`) as bounds of loop variables; returns what
    /// to restore afterwards: the bound lists' previous lengths.
    fn assume(&mut self, facts: &[Affine]) -> Vec<(usize, usize, usize)> {
        let mut saved = Vec::new();
        for g in facts {
            let Some((v, c, rest)) = self.bounded_var(g) else {
                continue;
            };
            let Some(lv) = self.loops[v.0 as usize].as_mut() else {
                continue;
            };
            saved.push((v.0 as usize, lv.lower.len(), lv.upper.len()));
            if c > 0 {
                // v + rest ≥ 0  ⇒  v ≥ −rest
                if let Some(l) = rest.scale(-1) {
                    lv.lower.push(l);
                }
            } else {
                // −v + rest ≥ 0  ⇒  v ≤ rest
                lv.upper.push(rest);
            }
        }
        saved
    }

    fn restore(&mut self, saved: Vec<(usize, usize, usize)>) {
        for (i, lower, upper) in saved.into_iter().rev() {
            if let Some(lv) = self.loops[i].as_mut() {
                lv.lower.truncate(lower);
                lv.upper.truncate(upper);
            }
        }
    }

    /// The loop variable a fact `g ≥ 0` bounds: the innermost variable of
    /// `g`, if it has coefficient ±1, occurs in no opaque term of `g`, and
    /// every other variable of `g` is of an enclosing loop. Returns it, its
    /// coefficient and the rest of `g`.
    fn bounded_var(&self, g: &Affine) -> Option<(VarId, i128, Affine)> {
        let mut all = Vec::new();
        for (t, _) in &g.terms {
            match t {
                Term::Var(v) => all.push(*v),
                Term::Opaque(idx) => vars_of(idx, &mut all),
            }
        }
        let depth = |v: &VarId| {
            self.loops
                .get(v.0 as usize)
                .and_then(|l| l.as_ref())
                .map(|l| l.depth)
        };
        let deepest = all
            .iter()
            .map(depth)
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()?;
        let inner: Vec<VarId> = all
            .iter()
            .copied()
            .filter(|v| depth(v) == Some(deepest))
            .collect();
        let v = *inner.first()?;
        let (c, opaque_use) = (
            g.terms
                .iter()
                .find(|(t, _)| *t == Term::Var(v))
                .map(|(_, c)| *c)?,
            inner.len() > 1,
        );
        if opaque_use || (c != 1 && c != -1) {
            return None;
        }
        let rest = g.substitute(&Term::Var(v), c, &Affine::constant(0))?;
        Some((v, c, rest))
    }

    /// Checks a load or store: buffer, access mode, rank, and bounds
    /// (`in_bounds`: false for `load_or`).
    fn access(&mut self, buf: BufId, index: &[Idx], in_bounds: bool, at: &str) {
        let mut ok = true;
        for ix in index {
            ok &= self.idx(ix, at);
        }
        let Some(decl) = self.kernel.buffer(buf) else {
            self.error(VerifyError::UnknownBuffer {
                buf,
                at: at.to_owned(),
            });
            return;
        };
        if decl.shape.len() != index.len() {
            self.error(VerifyError::Rank {
                buf,
                at: at.to_owned(),
                rank: decl.shape.len(),
                found: index.len(),
            });
            return;
        }
        if !ok || !in_bounds {
            return;
        }
        for (dim, (ix, &size)) in index.iter().zip(&decl.shape).enumerate() {
            // Each bound gets its own step budget.
            let lo = Bounds::new(&self.loops).idx_lower(ix);
            let hi = Bounds::new(&self.loops).idx_upper(ix);
            let inside = lo.is_some_and(|lo| lo >= 0) && hi.is_some_and(|hi| hi < size as i128);
            if !inside {
                self.error(VerifyError::OutOfBounds {
                    buf,
                    at: at.to_owned(),
                    dim,
                    index: idx_to_string(ix),
                    lo: lo.and_then(|x| i64::try_from(x).ok()),
                    hi: hi.and_then(|x| i64::try_from(x).ok()),
                    size,
                });
            }
        }
    }

    /// Checks an index expression; false if it reads an unusable variable
    /// (the error is reported), so no bounds are computed from it.
    fn idx(&mut self, idx: &Idx, at: &str) -> bool {
        match idx {
            Idx::Const(_) => true,
            Idx::Var(v) => {
                if self.declared(*v, at).is_none() {
                    return false;
                }
                if self.loops[v.0 as usize].is_some() {
                    return true;
                }
                if self.scalars[v.0 as usize] {
                    self.error(VerifyError::Type {
                        at: at.to_owned(),
                        message: format!("{v} is a scalar variable; only loop variables index"),
                    });
                } else {
                    self.error(VerifyError::OutOfScope {
                        var: *v,
                        at: at.to_owned(),
                    });
                }
                false
            }
            Idx::Add(a, b) | Idx::Sub(a, b) | Idx::Min(a, b) | Idx::Max(a, b) => {
                let a = self.idx(a, at);
                self.idx(b, at) && a
            }
            Idx::Mul(a, _) => self.idx(a, at),
            Idx::Div(a, k) | Idx::Rem(a, k) => {
                let ok = self.idx(a, at);
                if *k <= 0 {
                    self.error(VerifyError::Divisor {
                        k: *k,
                        at: at.to_owned(),
                    });
                    return false;
                }
                ok
            }
        }
    }

    /// The type of an expression, checking it; `None` where a type error
    /// was reported (so one mistake is not reported again by every user).
    fn expr(&mut self, expr: &Expr, at: &str) -> Option<DType> {
        match expr {
            Expr::F32(_) => Some(DType::F32),
            Expr::Load { buf, index } => {
                let access_at = format!("{at}: load {}", access_to_string(*buf, index));
                self.load(*buf, index, true, &access_at)
            }
            Expr::LoadOr { buf, index, .. } => {
                let access_at = format!("{at}: load_or {}", access_to_string(*buf, index));
                let ty = self.load(*buf, index, false, &access_at)?;
                if ty != DType::F32 {
                    self.error(VerifyError::Type {
                        at: access_at,
                        message: format!("load_or of a {ty} buffer; its default is f32"),
                    });
                    return None;
                }
                Some(ty)
            }
            Expr::Var(v) => {
                let dtype = self.declared(*v, at)?;
                if self.scalars[v.0 as usize] {
                    return Some(dtype);
                }
                if self.loops[v.0 as usize].is_some() {
                    self.error(VerifyError::Type {
                        at: at.to_owned(),
                        message: format!("{v} is a loop variable; read it as an index value"),
                    });
                } else {
                    self.error(VerifyError::OutOfScope {
                        var: *v,
                        at: at.to_owned(),
                    });
                }
                None
            }
            Expr::Index(i) => self.idx(i, at).then_some(DType::I64),
            Expr::Cast { to, value } => {
                self.expr(value, at)?;
                Some(*to)
            }
            Expr::Binary { a, b, .. } => {
                let (a, b) = (self.expr(a, at), self.expr(b, at));
                self.float_operands(&[a, b], at)
            }
            Expr::Unary { a, .. } => {
                let a = self.expr(a, at);
                self.float_operands(&[a], at)
            }
            Expr::Fma { a, b, c } => {
                let (a, b, c) = (self.expr(a, at), self.expr(b, at), self.expr(c, at));
                self.float_operands(&[a, b, c], at)
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                self.cond(cond, at);
                let (t, o) = (self.expr(then, at)?, self.expr(otherwise, at)?);
                if t != o {
                    self.error(VerifyError::Type {
                        at: at.to_owned(),
                        message: format!("select between {t} and {o}: {}", expr_to_string(expr)),
                    });
                    return None;
                }
                Some(t)
            }
        }
    }

    /// Checks a load (access mode, then [`Self::access`]); its type.
    fn load(&mut self, buf: BufId, index: &[Idx], in_bounds: bool, at: &str) -> Option<DType> {
        let decl = self
            .kernel
            .buffer(buf)
            .map(|d| (d.kind, d.dtype, d.name.clone()));
        if let Some((BufferKind::Param(Access::Write), _, name)) = &decl {
            self.error(VerifyError::Access {
                buf,
                at: at.to_owned(),
                message: format!("{buf} `{name}` is a write-only parameter"),
            });
        }
        self.access(buf, index, in_bounds, at);
        decl.map(|(_, dtype, _)| dtype)
    }

    fn float_operands(&mut self, operands: &[Option<DType>], at: &str) -> Option<DType> {
        let operands: Vec<DType> = operands.iter().copied().collect::<Option<_>>()?;
        if let Some(t) = operands.iter().find(|&&t| t != DType::F32) {
            self.error(VerifyError::Type {
                at: at.to_owned(),
                message: format!("float arithmetic on a {t} value"),
            });
            return None;
        }
        Some(DType::F32)
    }

    fn cond(&mut self, cond: &Cond, at: &str) {
        match cond {
            Cond::Idx { a, b, .. } => {
                self.idx(a, at);
                self.idx(b, at);
            }
            Cond::Expr { a, b, .. } => {
                if let (Some(x), Some(y)) = (self.expr(a, at), self.expr(b, at)) {
                    if x != y {
                        self.error(VerifyError::Type {
                            at: at.to_owned(),
                            message: format!(
                                "comparison of {x} with {y}: {}",
                                cond_to_string(cond)
                            ),
                        });
                    }
                }
            }
            Cond::And(a, b) | Cond::Or(a, b) => {
                self.cond(a, at);
                self.cond(b, at);
            }
            Cond::Not(a) => self.cond(a, at),
        }
    }
}

/// The facts `g ≥ 0` that hold where `cond` is `positive` (true or false),
/// from its index comparisons. Facts it cannot express are left out, which
/// only weakens the proof.
fn guard_facts(cond: &Cond, positive: bool, out: &mut Vec<Affine>) {
    match cond {
        Cond::Idx { op, a, b } => {
            let op = if positive { *op } else { negate(*op) };
            let (Some(a), Some(b)) = (linearize(a), linearize(b)) else {
                return;
            };
            // d = a − b, and the fact as d ≥ k forms.
            let Some(d) = a.add_scaled(&b, -1) else {
                return;
            };
            let mut push = |g: Option<Affine>| out.extend(g);
            let one = Affine::constant(1);
            match op {
                Cmp::Lt => push(d.scale(-1).and_then(|g| g.add_scaled(&one, -1))), // b − a − 1 ≥ 0
                Cmp::Le => push(d.scale(-1)),                                      // b − a ≥ 0
                Cmp::Gt => push(d.add_scaled(&one, -1)),                           // a − b − 1 ≥ 0
                Cmp::Ge => push(Some(d)),                                          // a − b ≥ 0
                Cmp::Eq => {
                    push(d.scale(-1));
                    push(Some(d));
                }
                Cmp::Ne => {}
            }
        }
        Cond::And(a, b) if positive => {
            guard_facts(a, true, out);
            guard_facts(b, true, out);
        }
        Cond::Or(a, b) if !positive => {
            guard_facts(a, false, out);
            guard_facts(b, false, out);
        }
        Cond::Not(a) => guard_facts(a, !positive, out),
        _ => {}
    }
}

fn negate(op: Cmp) -> Cmp {
    match op {
        Cmp::Lt => Cmp::Ge,
        Cmp::Le => Cmp::Gt,
        Cmp::Eq => Cmp::Ne,
        Cmp::Ne => Cmp::Eq,
        Cmp::Gt => Cmp::Le,
        Cmp::Ge => Cmp::Lt,
    }
}
