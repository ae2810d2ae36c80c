//! What a backend needs to emit a `Vectorized` loop as explicit vector code
//! ("widening": the body runs once per `width` iterations, each scalar
//! value becoming a vector of lanes) instead of hoping its own
//! auto-vectorizer recognizes the loop.
//!
//! [`widenable`] decides whether a loop body can be widened with lane-uniform
//! control flow, and [`lane_stride`] classifies each index by how it moves
//! from one lane to the next: a constant stride (0: the same element for
//! every lane, a broadcast; 1: consecutive elements, one vector load or
//! store; other: a strided gather or scatter), or `None` for indices that
//! are not affine in the lane (`/`, `%`, `min`, `max` of the lane variable:
//! computed per lane). Every backend that widens (LLVM, Cranelift) uses
//! these same rules, so they agree on which loops they widen.

use crate::kernel::{Cond, Expr, Idx, Kernel, LoopKind, Stmt};
use crate::VarId;

/// Whether `idx` mentions loop variable `var`.
pub fn depends_on(idx: &Idx, var: VarId) -> bool {
    match idx {
        Idx::Const(_) => false,
        Idx::Var(v) => *v == var,
        Idx::Add(a, b) | Idx::Sub(a, b) | Idx::Min(a, b) | Idx::Max(a, b) => {
            depends_on(a, var) || depends_on(b, var)
        }
        Idx::Mul(a, _) | Idx::Div(a, _) | Idx::Rem(a, _) => depends_on(a, var),
    }
}

/// `Some(s)` when `idx = s·var + (terms without var)`; `None` when `var`
/// occurs under `/`, `%`, `min` or `max`.
pub fn lane_stride(idx: &Idx, var: VarId) -> Option<i64> {
    if !depends_on(idx, var) {
        return Some(0);
    }
    match idx {
        Idx::Const(_) => Some(0),
        Idx::Var(v) => Some(i64::from(*v == var)),
        Idx::Add(a, b) => lane_stride(a, var)?.checked_add(lane_stride(b, var)?),
        Idx::Sub(a, b) => lane_stride(a, var)?.checked_sub(lane_stride(b, var)?),
        Idx::Mul(a, k) => lane_stride(a, var)?.checked_mul(*k),
        Idx::Div(..) | Idx::Rem(..) | Idx::Min(..) | Idx::Max(..) => None,
    }
}

/// The lane stride of the row-major linear index of `index` into a buffer
/// of `shape` (see [`lane_stride`]).
pub fn linear_lane_stride(shape: &[usize], index: &[Idx], var: VarId) -> Option<i64> {
    let mut stride = 0i64;
    for (d, idx) in index.iter().enumerate() {
        let inner: usize = shape.get(d + 1..).map_or(1, |s| s.iter().product());
        stride = stride.checked_add(lane_stride(idx, var)?.checked_mul(inner as i64)?)?;
    }
    Some(stride)
}

/// Why a `Vectorized` loop cannot be widened (the backend then emits it as
/// a scalar loop with vectorization hints).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotWidenable {
    /// A `Parallel` or `Vectorized` loop inside the body.
    NestedLoop,
    /// An inner loop's extent depends on the lane.
    LaneVaryingExtent,
    /// An `if` whose condition differs between lanes.
    LaneVaryingBranch,
    /// An assignment to a variable declared outside the loop (a reduction
    /// carried across iterations).
    CarriedVariable,
    /// A store that every lane makes to the same element.
    UniformStore,
}

/// Whether the body of `for var … { body }` (a `Vectorized` loop) can be
/// widened: control flow is the same in every lane (inner loops are
/// serial or unrolled with lane-independent extents, `if` conditions are
/// lane-independent index comparisons), variables assigned in the body are
/// declared in it, and no store makes every lane write one element.
pub fn widenable(kernel: &Kernel, var: VarId, body: &[Stmt]) -> Result<(), NotWidenable> {
    let mut declared = Vec::new();
    check(kernel, var, body, &mut declared)
}

fn check(
    kernel: &Kernel,
    lane: VarId,
    body: &[Stmt],
    declared: &mut Vec<VarId>,
) -> Result<(), NotWidenable> {
    for stmt in body {
        match stmt {
            Stmt::For {
                extent, kind, body, ..
            } => {
                if matches!(kind, LoopKind::Parallel | LoopKind::Vectorized { .. }) {
                    return Err(NotWidenable::NestedLoop);
                }
                if depends_on(extent, lane) {
                    return Err(NotWidenable::LaneVaryingExtent);
                }
                check(kernel, lane, body, declared)?;
            }
            Stmt::Store { buf, index, .. } => {
                let shape = kernel.buffer(*buf).map(|b| b.shape.as_slice());
                if shape.and_then(|s| linear_lane_stride(s, index, lane)) == Some(0) {
                    return Err(NotWidenable::UniformStore);
                }
            }
            Stmt::Let { var, .. } => declared.push(*var),
            Stmt::Assign { var, .. } => {
                if !declared.contains(var) {
                    return Err(NotWidenable::CarriedVariable);
                }
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                if !uniform_cond(cond, lane) {
                    return Err(NotWidenable::LaneVaryingBranch);
                }
                check(kernel, lane, then, declared)?;
                check(kernel, lane, otherwise, declared)?;
            }
        }
    }
    Ok(())
}

/// A condition that compares only lane-independent indices.
fn uniform_cond(cond: &Cond, lane: VarId) -> bool {
    match cond {
        Cond::Idx { a, b, .. } => !depends_on(a, lane) && !depends_on(b, lane),
        Cond::Expr { .. } => false,
        Cond::And(a, b) | Cond::Or(a, b) => uniform_cond(a, lane) && uniform_cond(b, lane),
        Cond::Not(a) => uniform_cond(a, lane),
    }
}

/// Whether an expression mentions the lane (directly, through an index, or
/// through any variable, which may hold a lane-varying value).
pub fn expr_uniform(e: &Expr, lane: VarId) -> bool {
    match e {
        Expr::F32(_) => true,
        Expr::Load { index, .. } | Expr::LoadOr { index, .. } => {
            index.iter().all(|i| !depends_on(i, lane))
        }
        Expr::Var(_) => false,
        Expr::Index(i) => !depends_on(i, lane),
        Expr::Cast { value, .. } => expr_uniform(value, lane),
        Expr::Binary { a, b, .. } => expr_uniform(a, lane) && expr_uniform(b, lane),
        Expr::Unary { a, .. } => expr_uniform(a, lane),
        Expr::Fma { a, b, c } => {
            expr_uniform(a, lane) && expr_uniform(b, lane) && expr_uniform(c, lane)
        }
        Expr::Select {
            cond,
            then,
            otherwise,
        } => uniform_cond(cond, lane) && expr_uniform(then, lane) && expr_uniform(otherwise, lane),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{DType, KernelBuilder};

    #[test]
    fn strides_of_affine_and_non_affine_indices() {
        let (i, j) = (VarId(0), VarId(1));
        let vi = || Idx::var(i);
        assert_eq!(lane_stride(&vi(), i), Some(1));
        assert_eq!(lane_stride(&Idx::var(j), i), Some(0));
        assert_eq!(lane_stride(&vi().mul(3).add(Idx::var(j)), i), Some(3));
        assert_eq!(lane_stride(&Idx::var(j).sub(vi()), i), Some(-1));
        assert_eq!(lane_stride(&vi().div(2), i), None);
        assert_eq!(lane_stride(&Idx::var(j).div(2), i), Some(0));
        assert_eq!(
            linear_lane_stride(&[4, 8], &[vi(), Idx::Const(0)], i),
            Some(8)
        );
        assert_eq!(
            linear_lane_stride(&[4, 8], &[Idx::var(j), vi()], i),
            Some(1)
        );
    }

    #[test]
    fn carried_variables_and_uniform_stores_are_not_widened() {
        let mut kb = KernelBuilder::new("k");
        let b = kb.param("b", DType::F32, &[8], crate::Access::ReadWrite);
        let i = kb.var("i", DType::I64);
        let s = kb.var("s", DType::F32);
        let k = kb.finish(Vec::new(), crate::Schedule::default());
        let store = |index| Stmt::Store {
            buf: b,
            index: vec![index],
            value: Expr::F32(1.0),
        };
        assert_eq!(widenable(&k, i, &[store(Idx::var(i))]), Ok(()));
        assert_eq!(
            widenable(&k, i, &[store(Idx::Const(0))]),
            Err(NotWidenable::UniformStore)
        );
        let assign = Stmt::Assign {
            var: s,
            value: Expr::F32(0.0),
        };
        assert_eq!(
            widenable(&k, i, std::slice::from_ref(&assign)),
            Err(NotWidenable::CarriedVariable)
        );
        let local = [
            Stmt::Let {
                var: s,
                value: Expr::F32(0.0),
            },
            assign,
        ];
        assert_eq!(widenable(&k, i, &local), Ok(()));
    }
}
