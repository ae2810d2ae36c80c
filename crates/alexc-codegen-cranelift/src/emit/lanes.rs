//! `Vectorized` loops as explicit `f32x4` code ("widening").
//!
//! A `Vectorized { width }` loop whose body passes
//! [`alexc_kernel::vector::widenable`] — the same analysis the LLVM backend
//! uses, so both backends widen the same loops — runs in *chunks* of
//! [`LANES`] iterations whose body is emitted once, every value being either
//! the same in every lane ([`LVal::U`], a scalar) or one value per lane:
//! an `f32x4` for f32 ([`LVal::F`]), four i64 scalars for i64
//! ([`LVal::I`]; Cranelift's `i64x2` would need two registers per value and
//! buys nothing for the index arithmetic that i64 lanes carry). The
//! iterations left over (`extent % 4`) run as scalar code. Four lanes,
//! whatever the IR's `width` (8 or 16 for AVX2 and AVX-512 hosts), is
//! allowed: iterations of a vectorized loop may run in lockstep in any
//! grouping, since none reads what another writes.
//!
//! An access whose linear index moves by one element per lane is one vector
//! load or store; one that does not move is a scalar load (used as a
//! uniform value); any other is a scalar access per lane (gather, or scatter
//! in lane order). `LoadOr` clamps each lane's index and selects the
//! default, without branches. Conditions that differ between lanes are
//! `i32x4` masks (float comparisons) or four `i8`s (index comparisons),
//! converted into each other as needed; `Select` on f32 is a `bitselect`.
//!
//! When the extent is a small constant the chunks are emitted straight-line
//! with constant lane indices, which keeps promoted locals (register tiles)
//! addressable; see [`super::emit_kernel`].

use alexc_kernel::vector::{depends_on, expr_uniform, widenable};

use super::*;

/// The chunk being emitted: the loop variable's value in lane 0.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lanes {
    var: VarId,
    base: IVal,
}

/// The Cranelift variables of a scalar variable declared in a widened body.
#[derive(Clone, Copy, Debug)]
pub(super) enum LaneVar {
    F(Variable),
    I([Variable; LANES]),
}

/// A value in a widened body.
#[derive(Clone, Copy, Debug)]
enum LVal {
    /// The same in every lane.
    U(Val),
    /// An `f32x4`.
    F(Value),
    /// One i64 per lane.
    I([IVal; LANES]),
}

impl LVal {
    fn dtype(self) -> DType {
        match self {
            LVal::U(v) => v.dtype(),
            LVal::F(_) => DType::F32,
            LVal::I(_) => DType::I64,
        }
    }
}

/// An index in a widened body.
#[derive(Clone, Copy, Debug)]
enum LIdx {
    /// `base + stride · lane`.
    Affine(IVal, i64),
    /// One index per lane.
    Lanes([IVal; LANES]),
}

/// An access in a widened body (see [`FnEmitter::lane_access`]).
#[derive(Clone, Debug)]
struct LaneAccess {
    /// The index in each dimension.
    dims: Vec<LIdx>,
    shape: Vec<usize>,
    /// How far the linear index moves per lane, if every index is affine.
    stride: Option<i64>,
    /// Lane 0's place, if every index is affine.
    place: Option<Place>,
}

/// A condition in a widened body.
#[derive(Clone, Copy, Debug)]
enum LCond {
    U(CVal),
    Lanes([CVal; LANES]),
    /// An `i32x4` of all-ones or all-zeros lanes.
    Mask(Value),
}

impl FnEmitter<'_, '_> {
    fn chunk(&self) -> R<Lanes> {
        self.lanes
            .ok_or_else(|| self.malformed("internal: not in a widened loop"))
    }

    /// `for var in 0..end` of kind `Vectorized { width }`.
    pub(super) fn emit_vectorized(
        &mut self,
        var: VarId,
        end: IVal,
        width: u32,
        body: &[Stmt],
    ) -> R<()> {
        if width <= 1 || self.lanes.is_some() {
            return self.serial_loop(var, IVal::K(0), end, body);
        }
        if let Err(why) = widenable(self.sh.kernel, var, body) {
            tracing::debug!(kernel = %self.sh.kernel.name, ?why, "vectorized loop runs scalar");
            return self.serial_loop(var, IVal::K(0), end, body);
        }
        let w = LANES as i64;
        match end {
            IVal::K(e) => {
                let e = e.max(0);
                let full = e - e % w;
                if full / w <= MAX_STRAIGHT_CHUNKS {
                    for base in (0..full).step_by(LANES) {
                        self.emit_chunk(var, IVal::K(base), body)?;
                    }
                } else {
                    self.counted_loop(IVal::K(0), IVal::K(full), w, None, &mut |s, base| {
                        s.emit_chunk(var, base, body)
                    })?;
                }
                for i in full..e {
                    self.emit_iteration(var, IVal::K(i), body)?;
                }
                Ok(())
            }
            IVal::V(..) => {
                let x = self.iv(end);
                let zero = self.iconst(0);
                let nonneg = self.b.ins().smax(x, zero);
                let full = IVal::V(self.b.ins().band_imm_s(nonneg, !(w - 1)), 0);
                self.counted_loop(IVal::K(0), full, w, None, &mut |s, base| {
                    s.emit_chunk(var, base, body)
                })?;
                self.serial_loop(var, full, end, body)
            }
        }
    }

    fn emit_chunk(&mut self, var: VarId, base: IVal, body: &[Stmt]) -> R<()> {
        self.lanes = Some(Lanes { var, base });
        let r = self.emit_block(body);
        self.lanes = None;
        r
    }

    // ----- statements ------------------------------------------------------

    pub(super) fn emit_lane_stmt(&mut self, stmt: &Stmt) -> R<()> {
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
                if matches!(stmt, Stmt::Assign { .. }) && !self.lane_declared.contains(var) {
                    return Err(self.malformed(format!(
                        "internal: widened loop assigns {var}, declared outside it"
                    )));
                }
                let value = self.lane_expr(value)?;
                let dtype = self.var_dtype(*var)?;
                if value.dtype() != dtype {
                    return Err(self.mismatch(dtype, value.dtype(), &format!("{var}")));
                }
                self.lane_declared.insert(*var);
                match self.lane_var(*var, dtype) {
                    LaneVar::F(x) => {
                        let v = self.vector_of(value)?;
                        self.b.def_var(x, v);
                    }
                    LaneVar::I(xs) => {
                        let lanes = self.ilanes_of(value)?;
                        for (x, l) in xs.into_iter().zip(lanes) {
                            let v = self.iv(l);
                            self.b.def_var(x, v);
                        }
                    }
                }
                Ok(())
            }
            _ => Err(self.malformed("internal: control flow reached emit_lane_stmt")),
        }
    }

    fn lane_var(&mut self, var: VarId, dtype: DType) -> LaneVar {
        if let Some(v) = self.lane_vars.get(&var) {
            return *v;
        }
        let v = match dtype {
            DType::F32 => LaneVar::F(self.b.declare_var(types::F32X4)),
            DType::I64 => LaneVar::I(std::array::from_fn(|_| self.b.declare_var(types::I64))),
        };
        self.lane_vars.insert(var, v);
        v
    }

    // ----- lane helpers ----------------------------------------------------

    fn vector_of(&mut self, v: LVal) -> R<Value> {
        match v {
            LVal::F(x) => Ok(x),
            LVal::U(Val::F(x)) => Ok(self.b.ins().splat(types::F32X4, x)),
            _ => Err(self.mismatch(DType::F32, DType::I64, "vector operand")),
        }
    }

    fn ilanes_of(&mut self, v: LVal) -> R<[IVal; LANES]> {
        match v {
            LVal::I(l) => Ok(l),
            LVal::U(Val::I(x)) => Ok([x; LANES]),
            _ => Err(self.mismatch(DType::I64, DType::F32, "index lanes")),
        }
    }

    /// Lane `l` of a value, as a scalar.
    fn lane_scalar(&mut self, v: LVal, l: usize) -> Val {
        match v {
            LVal::U(x) => x,
            LVal::F(x) => Val::F(self.b.ins().extractlane(x, l as u8)),
            LVal::I(ls) => Val::I(ls[l]),
        }
    }

    /// A vector of type `ty` from one scalar per lane.
    pub(super) fn assemble_ty(&mut self, ty: ir::Type, lanes: &[Value]) -> Value {
        let mut v = self.b.ins().scalar_to_vector(ty, lanes[0]);
        for (l, &x) in lanes.iter().enumerate().skip(1) {
            v = self.b.ins().insertlane(v, x, l as u8);
        }
        v
    }

    // ----- indices ---------------------------------------------------------

    fn idx_lanes(&mut self, i: LIdx) -> [IVal; LANES] {
        match i {
            LIdx::Lanes(l) => l,
            LIdx::Affine(base, stride) => {
                let mut out = [base; LANES];
                for (l, o) in out.iter_mut().enumerate() {
                    *o = self.iadd(base, IVal::K(stride.wrapping_mul(l as i64)));
                }
                out
            }
        }
    }

    fn per_lane_idx(&mut self, a: LIdx, b: LIdx, f: fn(&mut Self, IVal, IVal) -> IVal) -> LIdx {
        let (x, y) = (self.idx_lanes(a), self.idx_lanes(b));
        let mut out = x;
        for l in 0..LANES {
            out[l] = f(self, x[l], y[l]);
        }
        LIdx::Lanes(out)
    }

    fn lane_idx(&mut self, idx: &Idx) -> R<LIdx> {
        let chunk = self.chunk()?;
        if !depends_on(idx, chunk.var) {
            return Ok(LIdx::Affine(self.idx(idx)?, 0));
        }
        Ok(match idx {
            Idx::Const(c) => LIdx::Affine(IVal::K(*c), 0),
            Idx::Var(_) => LIdx::Affine(chunk.base, 1),
            Idx::Add(a, b) | Idx::Sub(a, b) => {
                let add = matches!(idx, Idx::Add(..));
                let (a, b) = (self.lane_idx(a)?, self.lane_idx(b)?);
                match (a, b) {
                    (LIdx::Affine(x, s), LIdx::Affine(y, t)) => {
                        if add {
                            LIdx::Affine(self.iadd(x, y), s.wrapping_add(t))
                        } else {
                            LIdx::Affine(self.isub(x, y), s.wrapping_sub(t))
                        }
                    }
                    _ if add => self.per_lane_idx(a, b, Self::iadd),
                    _ => self.per_lane_idx(a, b, Self::isub),
                }
            }
            Idx::Mul(a, k) => match self.lane_idx(a)? {
                LIdx::Affine(x, s) => LIdx::Affine(self.imul_k(x, *k), s.wrapping_mul(*k)),
                LIdx::Lanes(mut l) => {
                    for x in &mut l {
                        *x = self.imul_k(*x, *k);
                    }
                    LIdx::Lanes(l)
                }
            },
            Idx::Div(a, k) | Idx::Rem(a, k) => {
                if *k <= 0 {
                    return Err(self.malformed(format!("division of an index by non-positive {k}")));
                }
                let div = matches!(idx, Idx::Div(..));
                let nonneg = a.non_negative();
                let v = self.lane_idx(a)?;
                if let LIdx::Affine(x, s) = v {
                    if s >= 0 && s.saturating_mul(LANES as i64 - 1) < *k {
                        return Ok(self.divrem_near(x, s, *k, div, nonneg));
                    }
                }
                let mut l = self.idx_lanes(v);
                for x in &mut l {
                    *x = self.floor_divrem(*x, *k, div, nonneg);
                }
                LIdx::Lanes(l)
            }
            Idx::Min(a, b) => {
                let (a, b) = (self.lane_idx(a)?, self.lane_idx(b)?);
                self.per_lane_idx(a, b, |e, x, y| e.iminmax(x, y, true))
            }
            Idx::Max(a, b) => {
                let (a, b) = (self.lane_idx(a)?, self.lane_idx(b)?);
                self.per_lane_idx(a, b, |e, x, y| e.iminmax(x, y, false))
            }
        })
    }

    /// The lane indices of `buf[index]`: per dimension, and how the linear
    /// index moves between lanes.
    fn lane_access(&mut self, buf: BufId, index: &[Idx]) -> R<LaneAccess> {
        let shape = self.decl(buf)?.shape.clone();
        if shape.len() != index.len() {
            return Err(self.malformed(format!(
                "{buf} has rank {} but is indexed with {} indices",
                shape.len(),
                index.len()
            )));
        }
        let mut dims = Vec::with_capacity(index.len());
        for idx in index {
            dims.push(self.lane_idx(idx)?);
        }
        let mut stride = Some(0i64);
        let mut bases = Some(Vec::with_capacity(index.len()));
        for ((d, idx), &dim) in dims.iter().zip(index).zip(&shape) {
            match d {
                LIdx::Affine(x, t) => {
                    stride = stride.map(|s| s.wrapping_mul(dim as i64).wrapping_add(*t));
                    if let Some(b) = &mut bases {
                        b.push((*x, self.variant(idx)));
                    }
                }
                LIdx::Lanes(_) => {
                    stride = None;
                    bases = None;
                }
            }
        }
        Ok(LaneAccess {
            dims,
            shape,
            stride,
            place: bases.map(Place::Dims),
        })
    }

    /// `(x + s·l) / k` or `% k` for each lane `l`, where every `s·l < k`:
    /// one division of the uniform `x` (which the quotient and remainder
    /// share), then per lane a compare and a carry instead of a division
    /// (packing loops divide `column + lane` by a kernel's width).
    fn divrem_near(&mut self, x: IVal, s: i64, k: i64, div: bool, nonneg: bool) -> LIdx {
        let q0 = self.floor_divrem(x, k, true, nonneg);
        let r0 = self.floor_divrem(x, k, false, nonneg);
        let mut out = [IVal::K(0); LANES];
        for (l, o) in out.iter_mut().enumerate() {
            let t = self.iadd(r0, IVal::K(s * l as i64));
            *o = match self.icmp(Cmp::Ge, t, IVal::K(k)) {
                CVal::K(false) => {
                    if div {
                        q0
                    } else {
                        t
                    }
                }
                CVal::K(true) => {
                    if div {
                        self.iadd(q0, IVal::K(1))
                    } else {
                        self.isub(t, IVal::K(k))
                    }
                }
                CVal::V(c) => {
                    if div {
                        let carry = self.b.ins().uextend(types::I64, c);
                        self.iadd(q0, IVal::V(carry, 0))
                    } else {
                        let (tv, wrapped) = (self.iv(t), self.isub(t, IVal::K(k)));
                        let wv = self.iv(wrapped);
                        IVal::V(self.b.ins().select(c, wv, tv), 0)
                    }
                }
            };
        }
        LIdx::Lanes(out)
    }

    /// The row-major linear index of an access, lane by lane.
    fn lane_lin(&mut self, a: &LaneAccess) -> LIdx {
        let mut lin = LIdx::Affine(IVal::K(0), 0);
        for (&v, &dim) in a.dims.iter().zip(&a.shape) {
            let d = dim as i64;
            lin = match (lin, v) {
                (LIdx::Affine(x, s), LIdx::Affine(y, t)) => {
                    let scaled = self.imul_k(x, d);
                    LIdx::Affine(self.iadd(scaled, y), s.wrapping_mul(d).wrapping_add(t))
                }
                _ => {
                    let (x, y) = (self.idx_lanes(lin), self.idx_lanes(v));
                    let mut out = x;
                    for l in 0..LANES {
                        let scaled = self.imul_k(x[l], d);
                        out[l] = self.iadd(scaled, y[l]);
                    }
                    LIdx::Lanes(out)
                }
            };
        }
        lin
    }

    // ----- memory ----------------------------------------------------------

    fn lane_load(&mut self, buf: BufId, index: &[Idx]) -> R<LVal> {
        let dtype = self.buf_dtype(buf)?;
        let access = self.lane_access(buf, index)?;
        if self.is_promoted(buf) {
            let lin = self.lane_lin(&access);
            return self.promoted_lane_load(buf, lin);
        }
        match (access.stride, dtype, &access.place) {
            (Some(0), _, Some(place)) => Ok(LVal::U(self.load_elem(buf, place)?)),
            (Some(1), DType::F32, Some(place)) => self.vector_load(buf, place),
            _ => {
                let lin = self.lane_lin(&access);
                let ls = self.idx_lanes(lin);
                let mut vals = Vec::with_capacity(LANES);
                for l in ls {
                    vals.push(self.load_elem(buf, &Place::Lin(l))?);
                }
                self.gathered(&vals, dtype)
            }
        }
    }

    /// A lane value from one scalar per lane.
    fn gathered(&mut self, vals: &[Val], dtype: DType) -> R<LVal> {
        match dtype {
            DType::F32 => {
                let mut xs = Vec::with_capacity(LANES);
                for v in vals {
                    match v {
                        Val::F(x) => xs.push(*x),
                        Val::I(_) => return Err(self.mismatch(DType::F32, DType::I64, "gather")),
                    }
                }
                Ok(LVal::F(self.assemble(&xs)))
            }
            DType::I64 => {
                let mut out = [IVal::K(0); LANES];
                for (o, v) in out.iter_mut().zip(vals) {
                    match v {
                        Val::I(x) => *o = *x,
                        Val::F(_) => return Err(self.mismatch(DType::I64, DType::F32, "gather")),
                    }
                }
                Ok(LVal::I(out))
            }
        }
    }

    fn promoted_lane_load(&mut self, buf: BufId, lin: LIdx) -> R<LVal> {
        let w = LANES as i64;
        match lin {
            LIdx::Affine(IVal::K(e), 0) => Ok(LVal::U(Val::F(self.promoted_get(buf, e)?))),
            LIdx::Affine(IVal::K(e), 1) if e.rem_euclid(w) == 0 => {
                let g = self.group(buf, e.div_euclid(w))?;
                Ok(LVal::F(self.b.use_var(g)))
            }
            _ => {
                let ls = self.idx_lanes(lin);
                let mut xs = Vec::with_capacity(LANES);
                for l in ls {
                    let IVal::K(e) = l else {
                        return Err(Fail::Demote(buf));
                    };
                    xs.push(self.promoted_get(buf, e)?);
                }
                Ok(LVal::F(self.assemble(&xs)))
            }
        }
    }

    fn lane_store(&mut self, buf: BufId, index: &[Idx], value: LVal) -> R<()> {
        let dtype = self.buf_dtype(buf)?;
        let access = self.lane_access(buf, index)?;
        let w = LANES as i64;
        if self.is_promoted(buf) {
            let lin = self.lane_lin(&access);
            if let LIdx::Affine(IVal::K(e), 1) = lin {
                if e.rem_euclid(w) == 0 {
                    let g = self.group(buf, e.div_euclid(w))?;
                    let v = self.vector_of(value)?;
                    self.b.def_var(g, v);
                    return Ok(());
                }
            }
            let ls = self.idx_lanes(lin);
            for (l, e) in ls.into_iter().enumerate() {
                let IVal::K(e) = e else {
                    return Err(Fail::Demote(buf));
                };
                let x = self.lane_scalar(value, l);
                let x = self.val(x);
                self.promoted_set(buf, e, x)?;
            }
            return Ok(());
        }
        match (access.stride, dtype, &access.place) {
            (Some(1), DType::F32, Some(place)) => {
                let v = self.vector_of(value)?;
                let (p, off) = self.address(buf, place)?;
                let flags = self.flags(buf, true);
                self.b.ins().store(flags, v, p, off);
                Ok(())
            }
            _ => {
                let lin = self.lane_lin(&access);
                // One store per lane, in lane order: where two lanes address
                // one element, the later lane's value stays, as in the
                // sequential loop.
                let ls = self.idx_lanes(lin);
                for (l, e) in ls.into_iter().enumerate() {
                    let x = self.lane_scalar(value, l);
                    self.store_elem(buf, &Place::Lin(e), x)?;
                }
                Ok(())
            }
        }
    }

    fn lane_load_or(&mut self, buf: BufId, index: &[Idx], default: f32) -> R<LVal> {
        let lane = self.chunk()?.var;
        if index.iter().all(|i| !depends_on(i, lane)) {
            let parts = self.indices(buf, index)?;
            return Ok(LVal::U(Val::F(self.load_or_parts(buf, &parts, default)?)));
        }
        let rank = self.decl(buf)?.shape.len();
        if rank != index.len() {
            return Err(self.malformed(format!(
                "{buf} has rank {rank} but is indexed with {} indices",
                index.len()
            )));
        }
        let mut dims = Vec::with_capacity(index.len());
        for idx in index {
            dims.push(self.lane_idx(idx)?);
        }
        // Contiguous lanes (the last index moves by one, the others stay):
        // one vector load when all four lanes are inside, else per lane.
        let contiguous = matches!(dims.last(), Some(LIdx::Affine(_, 1)))
            && dims[..dims.len() - 1]
                .iter()
                .all(|d| matches!(d, LIdx::Affine(_, 0)));
        if contiguous && !self.is_promoted(buf) {
            let shape = self.decl(buf)?.shape.clone();
            let mut inside = CVal::K(true);
            let mut place_dims = Vec::with_capacity(dims.len());
            for (d, (&dim, part)) in shape.iter().zip(&dims).enumerate() {
                let LIdx::Affine(x, _) = *part else {
                    return Err(self.malformed("internal: contiguous load-or"));
                };
                // Uniform dimensions: `x < dim`; the last: `x + 3 < dim`.
                let room = if d + 1 == shape.len() {
                    dim as i64 - (LANES as i64 - 1)
                } else {
                    dim as i64
                };
                let ok = match x {
                    _ if room <= 0 => CVal::K(false),
                    IVal::K(c) => CVal::K((0..room).contains(&c)),
                    _ => {
                        let xv = self.iv(x);
                        let r = self.iconst(room);
                        CVal::V(self.b.ins().icmp(IntCC::UnsignedLessThan, xv, r))
                    }
                };
                inside = self.and(inside, ok);
                place_dims.push((x, self.variant(&index[d])));
            }
            let place = Place::Dims(place_dims);
            match inside {
                CVal::K(true) => return self.vector_load(buf, &place),
                CVal::K(false) => {}
                CVal::V(c) => {
                    let fast = self.b.create_block();
                    let slow = self.b.create_block();
                    let join = self.b.create_block();
                    let merged = self.b.append_block_param(join, types::F32X4);
                    self.b.ins().brif(c, fast, &[], slow, &[]);
                    self.b.seal_block(fast);
                    self.b.seal_block(slow);
                    self.b.switch_to_block(fast);
                    let LVal::F(v) = self.vector_load(buf, &place)? else {
                        return Err(self.malformed("internal: vector load"));
                    };
                    self.b.ins().jump(join, &[BlockArg::Value(v)]);
                    self.b.switch_to_block(slow);
                    let v = self.per_lane_load_or(buf, &dims, default)?;
                    self.b.ins().jump(join, &[BlockArg::Value(v)]);
                    self.b.seal_block(join);
                    self.b.switch_to_block(join);
                    return Ok(LVal::F(merged));
                }
            }
        }
        let v = self.per_lane_load_or(buf, &dims, default)?;
        Ok(LVal::F(v))
    }

    fn per_lane_load_or(&mut self, buf: BufId, dims: &[LIdx], default: f32) -> R<Value> {
        let lanes: Vec<[IVal; LANES]> = dims.iter().map(|d| self.idx_lanes(*d)).collect();
        let mut xs = Vec::with_capacity(LANES);
        for l in 0..LANES {
            let parts: Vec<IVal> = lanes.iter().map(|d| d[l]).collect();
            xs.push(self.load_or_parts(buf, &parts, default)?);
        }
        Ok(self.assemble(&xs))
    }

    /// Four consecutive f32 elements from `place` on.
    fn vector_load(&mut self, buf: BufId, place: &Place) -> R<LVal> {
        if self.buf_dtype(buf)? != DType::F32 {
            return Err(self.mismatch(DType::F32, DType::I64, "vector load"));
        }
        let (p, off) = self.address(buf, place)?;
        let flags = self.flags(buf, true);
        Ok(LVal::F(self.b.ins().load(types::F32X4, flags, p, off)))
    }

    // ----- expressions -----------------------------------------------------

    fn lane_expr(&mut self, e: &Expr) -> R<LVal> {
        let chunk = self.chunk()?;
        if expr_uniform(e, chunk.var) {
            return Ok(LVal::U(self.expr(e)?));
        }
        Ok(match e {
            Expr::F32(c) => LVal::U(Val::F(self.f32const(*c))),
            Expr::Load { buf, index } => self.lane_load(*buf, index)?,
            Expr::LoadOr {
                buf,
                index,
                default,
            } => self.lane_load_or(*buf, index, *default)?,
            Expr::Var(v) => {
                if self.lane_declared.contains(v) {
                    let dtype = self.var_dtype(*v)?;
                    match self.lane_var(*v, dtype) {
                        LaneVar::F(x) => LVal::F(self.b.use_var(x)),
                        LaneVar::I(xs) => LVal::I(xs.map(|x| IVal::V(self.b.use_var(x), 0))),
                    }
                } else if *v == chunk.var {
                    LVal::I(self.idx_lanes(LIdx::Affine(chunk.base, 1)))
                } else {
                    LVal::U(self.expr(e)?)
                }
            }
            Expr::Index(idx) => match self.lane_idx(idx)? {
                LIdx::Affine(b, 0) => LVal::U(Val::I(b)),
                other => LVal::I(self.idx_lanes(other)),
            },
            Expr::Cast { to, value } => {
                let v = self.lane_expr(value)?;
                match (v, to) {
                    (LVal::U(x), _) => LVal::U(self.cast(x, *to)),
                    (LVal::F(_), DType::F32) | (LVal::I(_), DType::I64) => v,
                    (LVal::F(_), DType::I64) => {
                        let mut out = [IVal::K(0); LANES];
                        for (l, o) in out.iter_mut().enumerate() {
                            let x = self.lane_scalar(v, l);
                            if let Val::I(i) = self.cast(x, DType::I64) {
                                *o = i;
                            }
                        }
                        LVal::I(out)
                    }
                    (LVal::I(ls), DType::F32) => {
                        let mut xs = Vec::with_capacity(LANES);
                        for l in ls {
                            match self.cast(Val::I(l), DType::F32) {
                                Val::F(x) => xs.push(x),
                                Val::I(_) => return Err(self.malformed("internal: cast to f32")),
                            }
                        }
                        LVal::F(self.assemble(&xs))
                    }
                }
            }
            Expr::Binary { op, a, b } => {
                let b_plain = is_plain_constant(b);
                let (a, b) = (self.lane_expr(a)?, self.lane_expr(b)?);
                if a.dtype() != b.dtype() {
                    return Err(self.mismatch(a.dtype(), b.dtype(), &format!("{op:?} operands")));
                }
                match (a, b, a.dtype()) {
                    (LVal::U(x), LVal::U(y), _) => LVal::U(self.binary(*op, x, y, b_plain)?),
                    (_, _, DType::F32) => {
                        let (x, y) = (self.vector_of(a)?, self.vector_of(b)?);
                        LVal::F(self.fbinary(*op, x, y, b_plain)?)
                    }
                    (_, _, DType::I64) => {
                        let (x, y) = (self.ilanes_of(a)?, self.ilanes_of(b)?);
                        let mut out = x;
                        for l in 0..LANES {
                            match self.binary(*op, Val::I(x[l]), Val::I(y[l]), false)? {
                                Val::I(v) => out[l] = v,
                                Val::F(_) => return Err(self.malformed("internal: i64 binary")),
                            }
                        }
                        LVal::I(out)
                    }
                }
            }
            Expr::Unary { op, a } => match self.lane_expr(a)? {
                LVal::U(x) => LVal::U(self.unary(*op, x)?),
                LVal::F(x) => LVal::F(self.funary(*op, x)?),
                LVal::I(mut ls) => {
                    for x in &mut ls {
                        match self.unary(*op, Val::I(*x))? {
                            Val::I(v) => *x = v,
                            Val::F(_) => return Err(self.malformed("internal: i64 unary")),
                        }
                    }
                    LVal::I(ls)
                }
            },
            Expr::Fma { a, b, c } => {
                let (a, b, c) = (self.lane_expr(a)?, self.lane_expr(b)?, self.lane_expr(c)?);
                for v in [a, b, c] {
                    if v.dtype() != DType::F32 {
                        return Err(self.mismatch(DType::F32, v.dtype(), "fma"));
                    }
                }
                if let (LVal::U(Val::F(x)), LVal::U(Val::F(y)), LVal::U(Val::F(z))) = (a, b, c) {
                    LVal::U(Val::F(self.fma(x, y, z)))
                } else {
                    let (x, y, z) = (self.vector_of(a)?, self.vector_of(b)?, self.vector_of(c)?);
                    LVal::F(self.fma(x, y, z))
                }
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
                match (c, t, o, t.dtype()) {
                    (LCond::U(CVal::K(true)), ..) => t,
                    (LCond::U(CVal::K(false)), ..) => o,
                    (LCond::U(CVal::V(c)), LVal::U(x), LVal::U(y), _) => {
                        let (x, y) = (self.val(x), self.val(y));
                        let v = self.b.ins().select(c, x, y);
                        LVal::U(match t.dtype() {
                            DType::F32 => Val::F(v),
                            DType::I64 => Val::I(IVal::V(v, 0)),
                        })
                    }
                    (_, _, _, DType::F32) => {
                        let m = self.cond_mask(c);
                        let m = self.b.ins().bitcast(types::F32X4, MemFlagsData::new(), m);
                        let (x, y) = (self.vector_of(t)?, self.vector_of(o)?);
                        LVal::F(self.b.ins().bitselect(m, x, y))
                    }
                    (_, _, _, DType::I64) => {
                        let cs = self.cond_lanes(c);
                        let (x, y) = (self.ilanes_of(t)?, self.ilanes_of(o)?);
                        let mut out = x;
                        for l in 0..LANES {
                            out[l] = match cs[l] {
                                CVal::K(true) => x[l],
                                CVal::K(false) => y[l],
                                CVal::V(c) => {
                                    let (a, b) = (self.iv(x[l]), self.iv(y[l]));
                                    IVal::V(self.b.ins().select(c, a, b), 0)
                                }
                            };
                        }
                        LVal::I(out)
                    }
                }
            }
        })
    }

    // ----- conditions ------------------------------------------------------

    /// An `i32x4` mask of a lane condition.
    fn cond_mask(&mut self, c: LCond) -> Value {
        let lane_mask = |e: &mut Self, c: CVal| -> Value {
            match c {
                CVal::K(k) => e.b.ins().iconst(types::I32, if k { -1 } else { 0 }),
                CVal::V(v) => e.b.ins().bmask(types::I32, v),
            }
        };
        match c {
            LCond::Mask(m) => m,
            LCond::U(c) => {
                let x = lane_mask(self, c);
                self.b.ins().splat(types::I32X4, x)
            }
            LCond::Lanes(cs) => {
                let xs: Vec<Value> = cs.into_iter().map(|c| lane_mask(self, c)).collect();
                self.assemble_ty(types::I32X4, &xs)
            }
        }
    }

    /// One `i8` (or constant) per lane of a lane condition.
    fn cond_lanes(&mut self, c: LCond) -> [CVal; LANES] {
        match c {
            LCond::U(c) => [c; LANES],
            LCond::Lanes(cs) => cs,
            LCond::Mask(m) => std::array::from_fn(|l| {
                let x = self.b.ins().extractlane(m, l as u8);
                CVal::V(self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0))
            }),
        }
    }

    fn lane_cond(&mut self, c: &Cond) -> R<LCond> {
        Ok(match c {
            Cond::Idx { op, a, b } => match (self.lane_idx(a)?, self.lane_idx(b)?) {
                (LIdx::Affine(x, 0), LIdx::Affine(y, 0)) => LCond::U(self.icmp(*op, x, y)),
                (x, y) => {
                    let (x, y) = (self.idx_lanes(x), self.idx_lanes(y));
                    LCond::Lanes(std::array::from_fn(|l| self.icmp(*op, x[l], y[l])))
                }
            },
            Cond::Expr { op, a, b } => {
                let (a, b) = (self.lane_expr(a)?, self.lane_expr(b)?);
                if a.dtype() != b.dtype() {
                    return Err(self.mismatch(a.dtype(), b.dtype(), "comparison operands"));
                }
                match (a, b, a.dtype()) {
                    (LVal::U(x), LVal::U(y), _) => LCond::U(self.compare(*op, x, y)?),
                    (_, _, DType::F32) => {
                        let (x, y) = (self.vector_of(a)?, self.vector_of(b)?);
                        LCond::Mask(self.b.ins().fcmp(float_cc(*op), x, y))
                    }
                    (_, _, DType::I64) => {
                        let (x, y) = (self.ilanes_of(a)?, self.ilanes_of(b)?);
                        LCond::Lanes(std::array::from_fn(|l| self.icmp(*op, x[l], y[l])))
                    }
                }
            }
            Cond::And(a, b) | Cond::Or(a, b) => {
                let and = matches!(c, Cond::And(..));
                let (a, b) = (self.lane_cond(a)?, self.lane_cond(b)?);
                match (a, b) {
                    (LCond::U(x), LCond::U(y)) => {
                        LCond::U(if and { self.and(x, y) } else { self.or(x, y) })
                    }
                    (LCond::Mask(_), _) | (_, LCond::Mask(_)) => {
                        let (x, y) = (self.cond_mask(a), self.cond_mask(b));
                        LCond::Mask(if and {
                            self.b.ins().band(x, y)
                        } else {
                            self.b.ins().bor(x, y)
                        })
                    }
                    _ => {
                        let (x, y) = (self.cond_lanes(a), self.cond_lanes(b));
                        LCond::Lanes(std::array::from_fn(|l| {
                            if and {
                                self.and(x[l], y[l])
                            } else {
                                self.or(x[l], y[l])
                            }
                        }))
                    }
                }
            }
            Cond::Not(a) => match self.lane_cond(a)? {
                LCond::U(x) => LCond::U(self.not(x)),
                LCond::Lanes(xs) => LCond::Lanes(xs.map(|x| self.not(x))),
                LCond::Mask(m) => LCond::Mask(self.b.ins().bnot(m)),
            },
        })
    }
}
