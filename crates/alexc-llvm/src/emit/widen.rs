//! `Vectorized` loops as explicit vector code.
//!
//! A `Vectorized { width }` loop whose body passes
//! [`alexc_kernel::vector::widenable`] is emitted as a loop over chunks of
//! `width` iterations whose body is emitted once, each value being either
//! the same in every lane ([`LVal::U`], a scalar) or a vector of lanes
//! ([`LVal::V`]); the iterations left over (`extent % width`) run as a
//! scalar loop. An access whose linear index moves by one element per lane
//! is one vector load or store, one that does not move is a scalar load
//! broadcast, any other a gather or scatter (`LoadOr`'s padding reads clamp
//! their index and select the default, so they never branch).
//! Variables declared in the body live in vector stack slots, promoted to
//! registers by `mem2reg`.
//!
//! This makes the vector code a property of the kernel IR, not of LLVM's
//! loop vectorizer, whose decisions on the GEMM micro-kernel depended on
//! the epilogue's shape (a 4–7× slowdown for a plain copy epilogue).
//! Loops that cannot be widened keep the scalar form with vectorization
//! hints.

use alexc_kernel::vector::{depends_on, expr_uniform, widenable};
use inkwell::types::VectorType;
use inkwell::values::VectorValue;

use super::*;

/// The lanes of the widened loop being emitted.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lanes<'ctx> {
    var: VarId,
    /// The loop variable's value in lane 0.
    base: IntValue<'ctx>,
    width: u32,
}

/// A value in a widened body.
#[derive(Clone, Copy, Debug)]
enum LVal<'ctx> {
    /// The same in every lane.
    U(Val<'ctx>),
    /// One element per lane.
    V(VectorValue<'ctx>, DType),
}

impl LVal<'_> {
    fn dtype(self) -> DType {
        match self {
            LVal::U(v) => v.dtype(),
            LVal::V(_, d) => d,
        }
    }
}

/// An index in a widened body.
#[derive(Clone, Copy, Debug)]
enum LIdx<'ctx> {
    /// `base + stride · lane`.
    Affine(IntValue<'ctx>, i64),
    /// One index per lane.
    Lanes(VectorValue<'ctx>),
}

/// A condition in a widened body.
#[derive(Clone, Copy, Debug)]
enum LCond<'ctx> {
    U(IntValue<'ctx>),
    V(VectorValue<'ctx>),
}

impl<'ctx> ModuleEmitter<'_, 'ctx> {
    fn lanes(&self) -> Result<Lanes<'ctx>, LlvmError> {
        self.f()?
            .lanes
            .ok_or_else(|| self.malformed("internal: not in a widened loop"))
    }

    /// A `Vectorized` loop `for var in 0..end` (see the module docs).
    pub(super) fn emit_vectorized(
        &mut self,
        var: VarId,
        extent: &Idx,
        end: IntValue<'ctx>,
        width: u32,
        body: &[Stmt],
    ) -> Result<(), LlvmError> {
        let i64t = self.cx.i64_type();
        let zero = i64t.const_zero();
        let kind = LoopKind::Vectorized { width };
        if width <= 1 || self.f()?.lanes.is_some() {
            return self.emit_loop(var, zero, end, kind, body);
        }
        if let Err(why) = widenable(self.kernel, var, body) {
            tracing::debug!(kernel = %self.kernel.name, ?why, "vectorized loop left to LLVM");
            return self.emit_loop(var, zero, end, kind, body);
        }
        let w = i64t.const_int(u64::from(width), false);
        let b = self.b()?;
        let nonneg = {
            let c = b.build_int_compare(IntPredicate::SGT, end, zero, "")?;
            b.build_select(c, end, zero, "")?.into_int_value()
        };
        let chunks = b.build_int_unsigned_div(nonneg, w, "chunks")?;
        let full = b.build_int_nuw_mul(chunks, w, "full")?;
        let name = format!("{}.vec", self.var_name(var));
        self.emit_loop_with(&name, zero, chunks, LoopKind::Serial, &mut |this, c| {
            let base = this.b()?.build_int_nuw_mul(c, w, "lane0")?;
            this.fm()?.lanes = Some(Lanes { var, base, width });
            let result = this.emit_block(body);
            this.fm()?.lanes = None;
            result
        })?;
        let exact = matches!(extent, Idx::Const(e) if e % i64::from(width) == 0);
        if !exact {
            self.emit_loop(var, full, end, LoopKind::Serial, body)?;
        }
        Ok(())
    }

    // ----- statements ------------------------------------------------------

    pub(super) fn emit_lane_stmt(&mut self, stmt: &Stmt) -> Result<(), LlvmError> {
        match stmt {
            Stmt::Store { buf, index, value } => {
                let value = self.lane_expr(value)?;
                let dtype = self.buf_dtype(*buf)?;
                if value.dtype() != dtype {
                    return Err(self.mismatch(dtype, value.dtype(), &format!("store to {buf}")));
                }
                self.lane_store(*buf, index, value)
            }
            Stmt::Let { var, value } | Stmt::Assign { var, value } => {
                let value = self.lane_expr(value)?;
                let dtype = self.var_dtype(*var)?;
                if value.dtype() != dtype {
                    return Err(self.mismatch(dtype, value.dtype(), &format!("{var}")));
                }
                let slot = self.lane_slot(*var, dtype)?;
                let v = self.to_vector(value)?;
                self.b()?.build_store(slot, v)?;
                Ok(())
            }
            _ => Err(self.malformed("internal: control flow reached emit_lane_stmt")),
        }
    }

    fn buf_dtype(&self, buf: BufId) -> Result<DType, LlvmError> {
        self.kernel
            .buffer(buf)
            .map(|d| d.dtype)
            .ok_or(LlvmError::UnknownBuffer {
                kernel: self.kernel.name.clone(),
                buf,
            })
    }

    fn lane_slot(&mut self, var: VarId, dtype: DType) -> Result<PointerValue<'ctx>, LlvmError> {
        if let Some((slot, _)) = self.f()?.lane_slots.get(&var) {
            return Ok(*slot);
        }
        let ty = self.vec_type(dtype)?;
        let slot = self.alloca(ty.into(), &self.var_name(var), 64)?;
        self.fm()?.lane_slots.insert(var, (slot, dtype));
        Ok(slot)
    }

    fn lane_store(
        &mut self,
        buf: BufId,
        index: &[Idx],
        value: LVal<'ctx>,
    ) -> Result<(), LlvmError> {
        let dtype = self.buf_dtype(buf)?;
        match self.lane_linear(buf, index)? {
            LIdx::Affine(lin, 1) => {
                let v = self.to_vector(value)?;
                let (ptr, _) = self.gep(buf, lin)?;
                let store = self.b()?.build_store(ptr, v)?;
                set_align(Some(store), dtype_size(dtype) as u32)?;
            }
            lin => {
                let idx = self.idx_vector(lin)?;
                let v = self.to_vector(value)?;
                self.scatter(buf, idx, v, dtype)?;
            }
        }
        Ok(())
    }

    // ----- types and lane helpers -----------------------------------------

    fn vec_type(&self, dtype: DType) -> Result<VectorType<'ctx>, LlvmError> {
        let w = self.lanes()?.width;
        Ok(match dtype {
            DType::F32 => self.cx.f32_type().vec_type(w),
            DType::I64 => self.cx.i64_type().vec_type(w),
        })
    }

    fn splat(&self, v: BasicValueEnum<'ctx>) -> Result<VectorValue<'ctx>, LlvmError> {
        let w = self.lanes()?.width;
        let ty = match v {
            BasicValueEnum::FloatValue(f) => f.get_type().vec_type(w),
            BasicValueEnum::IntValue(i) => i.get_type().vec_type(w),
            _ => return Err(self.malformed("internal: splat of a non-scalar")),
        };
        let b = self.b()?;
        let zero = self.cx.i32_type().const_zero();
        let one = b.build_insert_element(ty.get_poison(), v, zero, "")?;
        let mask = self.cx.i32_type().vec_type(w).const_zero();
        Ok(b.build_shuffle_vector(one, ty.get_poison(), mask, "splat")?)
    }

    fn to_vector(&self, v: LVal<'ctx>) -> Result<VectorValue<'ctx>, LlvmError> {
        match v {
            LVal::V(v, _) => Ok(v),
            LVal::U(v) => self.splat(v.basic()),
        }
    }

    /// `<0, s, 2s, …>` as i64.
    fn iota(&self, stride: i64) -> Result<VectorValue<'ctx>, LlvmError> {
        let w = self.lanes()?.width;
        let i64t = self.cx.i64_type();
        let lanes: Vec<IntValue<'ctx>> = (0..i64::from(w))
            .map(|l| i64t.const_int((l * stride) as u64, true))
            .collect();
        Ok(VectorType::const_vector(&lanes))
    }

    fn idx_vector(&self, idx: LIdx<'ctx>) -> Result<VectorValue<'ctx>, LlvmError> {
        match idx {
            LIdx::Lanes(v) => Ok(v),
            LIdx::Affine(base, stride) => {
                let base = self.splat(base.into())?;
                if stride == 0 {
                    return Ok(base);
                }
                Ok(self.b()?.build_int_add(base, self.iota(stride)?, "")?)
            }
        }
    }

    fn const_vec_i64(&self, k: i64) -> Result<VectorValue<'ctx>, LlvmError> {
        self.iota(0)
            .and_then(|_| self.splat(self.cx.i64_type().const_int(k as u64, true).into()))
    }

    // ----- indices ---------------------------------------------------------

    fn lane_idx(&mut self, idx: &Idx) -> Result<LIdx<'ctx>, LlvmError> {
        let lanes = self.lanes()?;
        if !depends_on(idx, lanes.var) {
            return Ok(LIdx::Affine(self.emit_idx(idx)?, 0));
        }
        Ok(match idx {
            Idx::Const(_) => unreachable_lane(self)?,
            Idx::Var(_) => LIdx::Affine(lanes.base, 1),
            Idx::Add(a, b) | Idx::Sub(a, b) => {
                let add = matches!(idx, Idx::Add(..));
                let (a, b) = (self.lane_idx(a)?, self.lane_idx(b)?);
                match (a, b) {
                    (LIdx::Affine(x, s), LIdx::Affine(y, t)) => {
                        let bld = self.b()?;
                        if add {
                            LIdx::Affine(bld.build_int_nsw_add(x, y, "")?, s + t)
                        } else {
                            LIdx::Affine(bld.build_int_nsw_sub(x, y, "")?, s - t)
                        }
                    }
                    _ => {
                        let (x, y) = (self.idx_vector(a)?, self.idx_vector(b)?);
                        let bld = self.b()?;
                        LIdx::Lanes(if add {
                            bld.build_int_nsw_add(x, y, "")?
                        } else {
                            bld.build_int_nsw_sub(x, y, "")?
                        })
                    }
                }
            }
            Idx::Mul(a, k) => match self.lane_idx(a)? {
                LIdx::Affine(x, s) => {
                    let kk = self.cx.i64_type().const_int(*k as u64, true);
                    LIdx::Affine(self.b()?.build_int_nsw_mul(x, kk, "")?, s * k)
                }
                LIdx::Lanes(v) => {
                    let kk = self.const_vec_i64(*k)?;
                    LIdx::Lanes(self.b()?.build_int_nsw_mul(v, kk, "")?)
                }
            },
            Idx::Div(a, k) | Idx::Rem(a, k) => {
                if *k <= 0 {
                    return Err(self.malformed(format!("division of an index by non-positive {k}")));
                }
                let is_div = matches!(idx, Idx::Div(..));
                let nonneg = a.non_negative();
                let v = self.lane_idx(a)?;
                let v = self.idx_vector(v)?;
                let kk = self.const_vec_i64(*k)?;
                let zero = self.const_vec_i64(0)?;
                let b = self.b()?;
                LIdx::Lanes(if nonneg {
                    if is_div {
                        b.build_int_unsigned_div(v, kk, "")?
                    } else {
                        b.build_int_unsigned_rem(v, kk, "")?
                    }
                } else {
                    let q = b.build_int_signed_div(v, kk, "")?;
                    let r = b.build_int_signed_rem(v, kk, "")?;
                    let neg = b.build_int_compare(IntPredicate::SLT, r, zero, "")?;
                    if is_div {
                        let fix = b.build_int_z_extend(neg, v.get_type(), "")?;
                        b.build_int_sub(q, fix, "floordiv")?
                    } else {
                        let fixed = b.build_int_add(r, kk, "")?;
                        b.build_select(neg, fixed, r, "floormod")?
                            .into_vector_value()
                    }
                })
            }
            Idx::Min(a, b) | Idx::Max(a, b) => {
                let pred = if matches!(idx, Idx::Min(..)) {
                    IntPredicate::SLT
                } else {
                    IntPredicate::SGT
                };
                let (a, b) = (self.lane_idx(a)?, self.lane_idx(b)?);
                let (x, y) = (self.idx_vector(a)?, self.idx_vector(b)?);
                let bld = self.b()?;
                let c = bld.build_int_compare(pred, x, y, "")?;
                LIdx::Lanes(bld.build_select(c, x, y, "")?.into_vector_value())
            }
        })
    }

    /// The row-major linear index of `buf[index]`, lane by lane.
    fn lane_linear(&mut self, buf: BufId, index: &[Idx]) -> Result<LIdx<'ctx>, LlvmError> {
        let shape =
            self.kernel
                .buffer(buf)
                .map(|d| d.shape.clone())
                .ok_or(LlvmError::UnknownBuffer {
                    kernel: self.kernel.name.clone(),
                    buf,
                })?;
        if shape.len() != index.len() {
            return Err(self.malformed(format!(
                "{buf} has rank {} but is indexed with {} indices",
                shape.len(),
                index.len()
            )));
        }
        let mut lin: Option<LIdx<'ctx>> = None;
        for (idx, &dim) in index.iter().zip(&shape) {
            let v = self.lane_idx(idx)?;
            lin = Some(match lin {
                None => v,
                Some(acc) => {
                    let d = dim as i64;
                    match (acc, v) {
                        (LIdx::Affine(x, s), LIdx::Affine(y, t)) => {
                            let b = self.b()?;
                            let scaled = b.build_int_nsw_mul(
                                x,
                                self.cx.i64_type().const_int(d as u64, true),
                                "",
                            )?;
                            LIdx::Affine(b.build_int_nsw_add(scaled, y, "")?, s * d + t)
                        }
                        _ => {
                            let (x, y) = (self.idx_vector(acc)?, self.idx_vector(v)?);
                            let dd = self.const_vec_i64(d)?;
                            let b = self.b()?;
                            let scaled = b.build_int_nsw_mul(x, dd, "")?;
                            LIdx::Lanes(b.build_int_nsw_add(scaled, y, "")?)
                        }
                    }
                }
            });
        }
        Ok(lin.unwrap_or(LIdx::Affine(self.cx.i64_type().const_zero(), 0)))
    }

    // ----- expressions -----------------------------------------------------

    fn lane_expr(&mut self, e: &Expr) -> Result<LVal<'ctx>, LlvmError> {
        let lanes = self.lanes()?;
        if expr_uniform(e, lanes.var) {
            return Ok(LVal::U(self.emit_expr(e)?));
        }
        match e {
            Expr::F32(c) => Ok(LVal::U(Val::F(
                self.cx.f32_type().const_float(f64::from(*c)),
            ))),
            Expr::Load { buf, index } => self.lane_load(*buf, index),
            Expr::LoadOr {
                buf,
                index,
                default,
            } => self.lane_load_or(*buf, index, *default),
            Expr::Var(v) => {
                if let Some((slot, dtype)) = self.f()?.lane_slots.get(v).copied() {
                    let ty = self.vec_type(dtype)?;
                    let loaded = self.b()?.build_load(ty, slot, "")?;
                    return Ok(LVal::V(loaded.into_vector_value(), dtype));
                }
                if *v == lanes.var {
                    let lanes_v = self.idx_vector(LIdx::Affine(lanes.base, 1))?;
                    return Ok(LVal::V(lanes_v, DType::I64));
                }
                Ok(LVal::U(self.emit_expr(e)?))
            }
            Expr::Index(idx) => match self.lane_idx(idx)? {
                LIdx::Affine(b, 0) => Ok(LVal::U(Val::I(b))),
                other => Ok(LVal::V(self.idx_vector(other)?, DType::I64)),
            },
            Expr::Cast { to, value } => {
                let v = self.lane_expr(value)?;
                let LVal::V(x, from) = v else {
                    // A uniform operand of a lane-varying cast cannot occur
                    // (uniformity is structural), but casting it is exact.
                    return Err(self.malformed("internal: uniform cast in a lane expression"));
                };
                Ok(match (from, to) {
                    (DType::F32, DType::F32) | (DType::I64, DType::I64) => v,
                    (DType::I64, DType::F32) => {
                        let ty = self.vec_type(DType::F32)?;
                        LVal::V(self.b()?.build_signed_int_to_float(x, ty, "")?, DType::F32)
                    }
                    (DType::F32, DType::I64) => {
                        let (it, ft) = (self.vec_type(DType::I64)?, self.vec_type(DType::F32)?);
                        let f = self.intrinsic("llvm.fptosi.sat", &[it.into(), ft.into()])?;
                        let r = self.vcall(f, &[x.into()])?;
                        LVal::V(r, DType::I64)
                    }
                })
            }
            Expr::Binary { op, a, b } => {
                let (a, b) = (self.lane_expr(a)?, self.lane_expr(b)?);
                if let (LVal::U(x), LVal::U(y)) = (a, b) {
                    return Ok(LVal::U(self.emit_binary(*op, x, y)?));
                }
                self.lane_binary(*op, a, b)
            }
            Expr::Unary { op, a } => match self.lane_expr(a)? {
                LVal::U(x) => Ok(LVal::U(self.emit_unary(*op, x)?)),
                LVal::V(x, dtype) => self.lane_unary(*op, x, dtype),
            },
            Expr::Fma { a, b, c } => {
                let (a, b, c) = (self.lane_expr(a)?, self.lane_expr(b)?, self.lane_expr(c)?);
                for v in [a, b, c] {
                    if v.dtype() != DType::F32 {
                        return Err(self.mismatch(DType::F32, v.dtype(), "fma"));
                    }
                }
                let (a, b, c) = (self.to_vector(a)?, self.to_vector(b)?, self.to_vector(c)?);
                let f = self.intrinsic("llvm.fmuladd", &[a.get_type().into()])?;
                let r = self.vcall(f, &[a.into(), b.into(), c.into()])?;
                self.fp_flags(BasicValueEnum::from(r).as_instruction_value())?;
                Ok(LVal::V(r, DType::F32))
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                let c = self.lane_cond(cond)?;
                let (t, o) = (self.lane_expr(then)?, self.lane_expr(otherwise)?);
                if t.dtype() != o.dtype() {
                    return Err(self.mismatch(t.dtype(), o.dtype(), "select"));
                }
                let dtype = t.dtype();
                let (t, o) = (self.to_vector(t)?, self.to_vector(o)?);
                let c = match c {
                    LCond::V(c) => c,
                    LCond::U(c) => self.splat(c.into())?,
                };
                let v = self.b()?.build_select(c, t, o, "")?;
                Ok(LVal::V(v.into_vector_value(), dtype))
            }
        }
    }

    fn vcall(
        &self,
        f: FunctionValue<'ctx>,
        args: &[BasicMetadataValueEnum<'ctx>],
    ) -> Result<VectorValue<'ctx>, LlvmError> {
        let v = self
            .b()?
            .build_call(f, args, "")?
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| self.malformed("internal: vector intrinsic returned void"))?;
        Ok(v.into_vector_value())
    }

    fn lane_binary(
        &mut self,
        op: BinOp,
        a: LVal<'ctx>,
        b: LVal<'ctx>,
    ) -> Result<LVal<'ctx>, LlvmError> {
        if a.dtype() != b.dtype() {
            return Err(self.mismatch(a.dtype(), b.dtype(), &format!("{op:?} operands")));
        }
        let dtype = a.dtype();
        let (x, y) = (self.to_vector(a)?, self.to_vector(b)?);
        let intrinsic = |this: &Self, name: &str| -> Result<VectorValue<'ctx>, LlvmError> {
            let f = this.intrinsic(name, &[x.get_type().into()])?;
            this.vcall(f, &[x.into(), y.into()])
        };
        let v = match dtype {
            DType::F32 => {
                let bld = self.b()?;
                let v = match op {
                    BinOp::Add => bld.build_float_add(x, y, "")?,
                    BinOp::Sub => bld.build_float_sub(x, y, "")?,
                    BinOp::Mul => bld.build_float_mul(x, y, "")?,
                    BinOp::Div => bld.build_float_div(x, y, "")?,
                    BinOp::Max => intrinsic(self, "llvm.maxnum")?,
                    BinOp::Min => intrinsic(self, "llvm.minnum")?,
                    BinOp::Pow => intrinsic(self, "llvm.pow")?,
                };
                self.fp_flags(BasicValueEnum::from(v).as_instruction_value())?;
                v
            }
            DType::I64 => {
                let bld = self.b()?;
                match op {
                    BinOp::Add => bld.build_int_add(x, y, "")?,
                    BinOp::Sub => bld.build_int_sub(x, y, "")?,
                    BinOp::Mul => bld.build_int_mul(x, y, "")?,
                    BinOp::Max => intrinsic(self, "llvm.smax")?,
                    BinOp::Min => intrinsic(self, "llvm.smin")?,
                    BinOp::Div | BinOp::Pow => {
                        return Err(self.malformed(format!("{op:?} is not defined on i64 values")))
                    }
                }
            }
        };
        Ok(LVal::V(v, dtype))
    }

    fn lane_unary(
        &mut self,
        op: UnOp,
        x: VectorValue<'ctx>,
        dtype: DType,
    ) -> Result<LVal<'ctx>, LlvmError> {
        let call = |this: &Self, name: &str| -> Result<VectorValue<'ctx>, LlvmError> {
            let f = this.intrinsic(name, &[x.get_type().into()])?;
            this.vcall(f, &[x.into()])
        };
        let v = match (dtype, op) {
            (DType::F32, UnOp::Neg) => {
                let v = self.b()?.build_float_neg(x, "")?;
                self.fp_flags(BasicValueEnum::from(v).as_instruction_value())?;
                v
            }
            (DType::F32, UnOp::Exp) => call(self, "llvm.exp")?,
            (DType::F32, UnOp::Log) => call(self, "llvm.log")?,
            (DType::F32, UnOp::Sqrt) => call(self, "llvm.sqrt")?,
            (DType::F32, UnOp::Abs) => call(self, "llvm.fabs")?,
            (DType::F32, UnOp::Rsqrt) => {
                let s = call(self, "llvm.sqrt")?;
                let one = self.splat(self.cx.f32_type().const_float(1.0).into())?;
                let v = self.b()?.build_float_div(one, s, "")?;
                self.fp_flags(BasicValueEnum::from(v).as_instruction_value())?;
                v
            }
            (DType::I64, UnOp::Neg) => self.b()?.build_int_neg(x, "")?,
            (DType::I64, UnOp::Abs) => {
                let f = self.intrinsic("llvm.abs", &[x.get_type().into()])?;
                let poison = self.cx.bool_type().const_zero();
                self.vcall(f, &[x.into(), poison.into()])?
            }
            (DType::I64, _) => {
                return Err(self.mismatch(DType::F32, DType::I64, &format!("{op:?} operand")))
            }
        };
        Ok(LVal::V(v, dtype))
    }

    fn lane_cond(&mut self, c: &Cond) -> Result<LCond<'ctx>, LlvmError> {
        Ok(match c {
            Cond::Idx { op, a, b } => match (self.lane_idx(a)?, self.lane_idx(b)?) {
                (LIdx::Affine(x, 0), LIdx::Affine(y, 0)) => {
                    LCond::U(self.b()?.build_int_compare(int_pred(*op), x, y, "")?)
                }
                (x, y) => {
                    let (x, y) = (self.idx_vector(x)?, self.idx_vector(y)?);
                    LCond::V(self.b()?.build_int_compare(int_pred(*op), x, y, "")?)
                }
            },
            Cond::Expr { op, a, b } => {
                let (a, b) = (self.lane_expr(a)?, self.lane_expr(b)?);
                if a.dtype() != b.dtype() {
                    return Err(self.mismatch(a.dtype(), b.dtype(), "comparison operands"));
                }
                if let (LVal::U(x), LVal::U(y)) = (a, b) {
                    let bld = self.b()?;
                    return Ok(LCond::U(match (x, y) {
                        (Val::F(x), Val::F(y)) => {
                            bld.build_float_compare(float_pred(*op), x, y, "")?
                        }
                        (Val::I(x), Val::I(y)) => bld.build_int_compare(int_pred(*op), x, y, "")?,
                        _ => return Err(self.mismatch(a.dtype(), b.dtype(), "comparison")),
                    }));
                }
                let dtype = a.dtype();
                let (x, y) = (self.to_vector(a)?, self.to_vector(b)?);
                let bld = self.b()?;
                LCond::V(match dtype {
                    DType::F32 => bld.build_float_compare(float_pred(*op), x, y, "")?,
                    DType::I64 => bld.build_int_compare(int_pred(*op), x, y, "")?,
                })
            }
            Cond::And(a, b) | Cond::Or(a, b) => {
                let and = matches!(c, Cond::And(..));
                let (a, b) = (self.lane_cond(a)?, self.lane_cond(b)?);
                if let (LCond::U(x), LCond::U(y)) = (a, b) {
                    let bld = self.b()?;
                    return Ok(LCond::U(if and {
                        bld.build_and(x, y, "")?
                    } else {
                        bld.build_or(x, y, "")?
                    }));
                }
                let (x, y) = (self.cond_vector(a)?, self.cond_vector(b)?);
                let bld = self.b()?;
                LCond::V(if and {
                    bld.build_and(x, y, "")?
                } else {
                    bld.build_or(x, y, "")?
                })
            }
            Cond::Not(a) => match self.lane_cond(a)? {
                LCond::U(x) => LCond::U(self.b()?.build_not(x, "")?),
                LCond::V(x) => LCond::V(self.b()?.build_not(x, "")?),
            },
        })
    }

    fn cond_vector(&self, c: LCond<'ctx>) -> Result<VectorValue<'ctx>, LlvmError> {
        match c {
            LCond::V(v) => Ok(v),
            LCond::U(u) => self.splat(u.into()),
        }
    }

    // ----- memory ----------------------------------------------------------

    fn lane_load(&mut self, buf: BufId, index: &[Idx]) -> Result<LVal<'ctx>, LlvmError> {
        let dtype = self.buf_dtype(buf)?;
        match self.lane_linear(buf, index)? {
            LIdx::Affine(lin, 0) => {
                let (ptr, dtype) = self.gep(buf, lin)?;
                Ok(LVal::U(self.load(ptr, dtype)?))
            }
            LIdx::Affine(lin, 1) => {
                let (ptr, _) = self.gep(buf, lin)?;
                let ty = self.vec_type(dtype)?;
                let v = self.b()?.build_load(ty, ptr, "")?;
                set_align(v.as_instruction_value(), dtype_size(dtype) as u32)?;
                Ok(LVal::V(v.into_vector_value(), dtype))
            }
            lin => {
                let idx = self.idx_vector(lin)?;
                Ok(LVal::V(self.gather(buf, idx, dtype)?, dtype))
            }
        }
    }

    /// `&buf[idx[lane]]` for every lane: a vector of pointers (one `getelementptr`
    /// with a vector index).
    fn lane_pointers(
        &mut self,
        buf: BufId,
        idx: VectorValue<'ctx>,
        dtype: DType,
    ) -> Result<VectorValue<'ctx>, LlvmError> {
        use inkwell::llvm_sys::core::LLVMBuildInBoundsGEP2;
        use inkwell::types::AsTypeRef;
        use inkwell::values::AsValueRef;
        let base = self.base(buf)?;
        let elem = self.elem_type(dtype);
        let builder = self.b()?;
        let mut indices = [idx.as_value_ref()];
        // SAFETY: a plain LLVM C API call on live values of this function's
        // context (inkwell's `build_gep` takes scalar indices only); the
        // result is a `<W x ptr>` value. `inbounds` holds: every lane's index
        // is in bounds (verified kernel IR, or clamped by `LoadOr`).
        let raw = unsafe {
            LLVMBuildInBoundsGEP2(
                builder.as_mut_ptr(),
                elem.as_type_ref(),
                base.as_value_ref(),
                indices.as_mut_ptr(),
                1,
                c"lanes".as_ptr(),
            )
        };
        // SAFETY: `raw` is the vector-of-pointers value just built.
        Ok(unsafe { VectorValue::new(raw) })
    }

    fn all_lanes(&self) -> Result<VectorValue<'ctx>, LlvmError> {
        let w = self.lanes()?.width;
        let one = self.cx.bool_type().const_int(1, false);
        Ok(VectorType::const_vector(&vec![one; w as usize]))
    }

    /// `buf[idx[lane]]` for every lane (every index in bounds): one
    /// `llvm.masked.gather` with all lanes on, which the code generator
    /// turns into a gather instruction or scalar loads, whichever the
    /// target prefers. (One IR instruction instead of `width` loads keeps
    /// the optimizer's work proportional to the kernel, not to its lanes.)
    fn gather(
        &mut self,
        buf: BufId,
        idx: VectorValue<'ctx>,
        dtype: DType,
    ) -> Result<VectorValue<'ctx>, LlvmError> {
        let ptrs = self.lane_pointers(buf, idx, dtype)?;
        let ty = self.vec_type(dtype)?;
        let f = self.intrinsic("llvm.masked.gather", &[ty.into(), ptrs.get_type().into()])?;
        let align = self.cx.i32_type().const_int(dtype_size(dtype), false);
        let mask = self.all_lanes()?;
        self.vcall(
            f,
            &[
                ptrs.into(),
                align.into(),
                mask.into(),
                ty.get_poison().into(),
            ],
        )
    }

    /// `buf[idx[lane]] = value[lane]` for every lane, in lane order (where
    /// two lanes address one element, the later lane's value is stored, as
    /// in the sequential loop).
    fn scatter(
        &mut self,
        buf: BufId,
        idx: VectorValue<'ctx>,
        value: VectorValue<'ctx>,
        dtype: DType,
    ) -> Result<(), LlvmError> {
        let ptrs = self.lane_pointers(buf, idx, dtype)?;
        let ty = self.vec_type(dtype)?;
        let f = self.intrinsic("llvm.masked.scatter", &[ty.into(), ptrs.get_type().into()])?;
        let align = self.cx.i32_type().const_int(dtype_size(dtype), false);
        let mask = self.all_lanes()?;
        self.b()?.build_call(
            f,
            &[value.into(), ptrs.into(), align.into(), mask.into()],
            "",
        )?;
        Ok(())
    }

    /// `LoadOr` across lanes: each dimension's index is checked against its
    /// extent and clamped into it, the (always in-bounds) element loaded,
    /// and the default selected where the index was outside.
    fn lane_load_or(
        &mut self,
        buf: BufId,
        index: &[Idx],
        default: f32,
    ) -> Result<LVal<'ctx>, LlvmError> {
        let lane = self.lanes()?.var;
        let decl = self.kernel.buffer(buf).ok_or(LlvmError::UnknownBuffer {
            kernel: self.kernel.name.clone(),
            buf,
        })?;
        if decl.dtype != DType::F32 {
            return Err(self.mismatch(DType::F32, decl.dtype, "load-or"));
        }
        let shape = decl.shape.clone();
        if shape.len() != index.len() {
            return Err(self.malformed(format!(
                "{buf} has rank {} but is indexed with {} indices",
                shape.len(),
                index.len()
            )));
        }
        if index.iter().all(|i| !depends_on(i, lane)) {
            return Ok(LVal::U(self.emit_load_or(buf, index, default)?));
        }
        let f32t = self.cx.f32_type();
        let fallback = self.splat(f32t.const_float(f64::from(default)).into())?;
        if shape.iter().product::<usize>() == 0 {
            return Ok(LVal::V(fallback, DType::F32));
        }
        let zero = self.const_vec_i64(0)?;
        let mut inside: Option<VectorValue<'ctx>> = None;
        let mut lin: Option<VectorValue<'ctx>> = None;
        for (idx, &dim) in index.iter().zip(&shape) {
            let v = self.lane_idx(idx)?;
            let v = self.idx_vector(v)?;
            let d = self.const_vec_i64(dim as i64)?;
            let b = self.b()?;
            // `0 <= v < dim` as one unsigned compare.
            let ok = b.build_int_compare(IntPredicate::ULT, v, d, "")?;
            let clamped = b.build_select(ok, v, zero, "")?.into_vector_value();
            inside = Some(match inside {
                None => ok,
                Some(acc) => b.build_and(acc, ok, "inside")?,
            });
            lin = Some(match lin {
                None => clamped,
                Some(acc) => {
                    let scaled = b.build_int_nsw_mul(acc, d, "")?;
                    b.build_int_nsw_add(scaled, clamped, "")?
                }
            });
        }
        let (Some(inside), Some(lin)) = (inside, lin) else {
            return Err(self.malformed("internal: load-or of a rank-0 buffer"));
        };
        let loaded = self.gather(buf, lin, DType::F32)?;
        let v = self.b()?.build_select(inside, loaded, fallback, "loador")?;
        Ok(LVal::V(v.into_vector_value(), DType::F32))
    }
}

fn unreachable_lane<T>(e: &ModuleEmitter<'_, '_>) -> Result<T, LlvmError> {
    Err(e.malformed("internal: a constant index depends on the lane"))
}
