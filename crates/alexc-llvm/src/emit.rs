//! Kernel IR → LLVM IR: a pure translation into an inkwell [`Module`]
//! (see the crate docs for the calling convention and the lowering of each
//! construct), plus the `default<O3>` pipeline and text renderers.
//!
//! One [`FnEmitter`] state exists per LLVM function being built (the
//! kernel's body function and every outlined parallel body); outlining a
//! `Parallel` loop swaps in a fresh state, emits the body function
//! completely, and swaps the caller's state back.

// Two inkwell/llvm-sys calls are `unsafe`: in-bounds GEPs (sound because the
// kernel IR's verifier proves every `Load`/`Store` index in bounds, and
// `LoadOr` only addresses after a bounds check) and the C API calls that
// build self-referential loop-ID metadata.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashSet};

use alexc_kernel::{
    BinOp, BufId, BufferKind, Cmp, Cond, DType, Expr, Idx, Kernel, LoopKind, Stmt, UnOp, VarId,
};
use inkwell::attributes::{Attribute, AttributeLoc};
use inkwell::basic_block::BasicBlock;
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::{Linkage, Module};
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::FileType;
use inkwell::types::{BasicMetadataTypeEnum, BasicTypeEnum};
use inkwell::values::{
    BasicMetadataValueEnum, BasicValue, BasicValueEnum, FloatValue, FunctionValue,
    InstructionValue, IntValue, MetadataValue, PointerValue,
};
use inkwell::{FloatPredicate, IntPredicate};

use crate::{LlvmError, Target};

mod widen;

/// Name of the Rust-provided parallel-for entry point (see [`crate::parallel`]).
pub(crate) const PARALLEL_FOR: &str = "alexc_parallel_for";

/// Builds one LLVM module holding every kernel (unoptimized). Function `k`
/// for kernel `k` follows the calling convention of the crate docs.
pub fn emit_module<'ctx>(
    context: &'ctx Context,
    kernels: &[Kernel],
    target: &Target,
) -> Result<Module<'ctx>, LlvmError> {
    let module = context.create_module("alexc");
    let machine = target.machine()?;
    module.set_triple(&machine.get_triple());
    module.set_data_layout(&machine.get_target_data().get_data_layout());

    let mut seen = HashSet::new();
    for kernel in kernels {
        if !seen.insert(kernel.name.as_str()) {
            return Err(LlvmError::DuplicateKernel(kernel.name.clone()));
        }
        ModuleEmitter::new(context, &module, kernel, target).emit_kernel()?;
    }
    module.verify().map_err(LlvmError::llvm)?;
    Ok(module)
}

/// Runs `default<O3>` with the target's analyses (so the vectorizer sees the
/// real vector width and costs).
pub fn optimize(module: &Module<'_>, target: &Target) -> Result<(), LlvmError> {
    let machine = target.machine()?;
    module
        .run_passes("default<O3>", &machine, PassBuilderOptions::create())
        .map_err(LlvmError::llvm)
}

/// The LLVM IR text of `kernels`, before (`optimized = false`) or after O3.
pub fn llvm_ir_text(
    kernels: &[Kernel],
    target: &Target,
    optimized: bool,
) -> Result<String, LlvmError> {
    let context = Context::create();
    let module = emit_module(&context, kernels, target)?;
    if optimized {
        optimize(&module, target)?;
    }
    Ok(module.print_to_string().to_string())
}

/// The optimized native assembly of `kernels` for `target`.
pub fn asm_text(kernels: &[Kernel], target: &Target) -> Result<String, LlvmError> {
    let context = Context::create();
    let module = emit_module(&context, kernels, target)?;
    optimize(&module, target)?;
    let machine = target.machine()?;
    let buffer = machine
        .write_to_memory_buffer(&module, FileType::Assembly)
        .map_err(LlvmError::llvm)?;
    Ok(String::from_utf8_lossy(buffer.as_slice()).into_owned())
}

/// A scalar value: the kernel IR has two scalar types.
#[derive(Clone, Copy, Debug)]
enum Val<'ctx> {
    F(FloatValue<'ctx>),
    I(IntValue<'ctx>),
}

impl<'ctx> Val<'ctx> {
    fn dtype(self) -> DType {
        match self {
            Val::F(_) => DType::F32,
            Val::I(_) => DType::I64,
        }
    }
    fn basic(self) -> BasicValueEnum<'ctx> {
        match self {
            Val::F(v) => v.into(),
            Val::I(v) => v.into(),
        }
    }
}

/// What a variable id means at a program point.
#[derive(Clone, Copy, Debug)]
enum Binding<'ctx> {
    /// A loop variable: an SSA value (the header phi), always `>= 0`.
    Loop(IntValue<'ctx>),
    /// A scalar variable: its stack slot.
    Scalar(PointerValue<'ctx>, DType),
}

/// Per-LLVM-function state.
struct FnEmitter<'ctx> {
    func: FunctionValue<'ctx>,
    builder: Builder<'ctx>,
    /// The entry block holds only allocas; it branches to the code at the end.
    entry: BasicBlock<'ctx>,
    /// Parameter buffers' base pointers.
    params: BTreeMap<BufId, PointerValue<'ctx>>,
    /// Local buffers, allocated on first use in this function.
    locals: BTreeMap<BufId, PointerValue<'ctx>>,
    /// One stack slot per scalar variable id.
    slots: BTreeMap<VarId, PointerValue<'ctx>>,
    /// Variables in scope.
    scope: BTreeMap<VarId, Binding<'ctx>>,
    /// How many `Vectorized` loops enclose the current point.
    vector_depth: usize,
    /// The lanes of the widened `Vectorized` loop being emitted, if any.
    lanes: Option<widen::Lanes<'ctx>>,
    /// Vector stack slots of the variables declared in widened loops.
    lane_slots: BTreeMap<VarId, (PointerValue<'ctx>, DType)>,
}

struct ModuleEmitter<'a, 'ctx> {
    cx: &'ctx Context,
    module: &'a Module<'ctx>,
    kernel: &'a Kernel,
    target: &'a Target,
    /// Buffers the kernel stores to (the others are `readonly`).
    stored: BTreeSet<BufId>,
    outlined: usize,
    f: Option<FnEmitter<'ctx>>,
}

impl<'a, 'ctx> ModuleEmitter<'a, 'ctx> {
    fn new(
        cx: &'ctx Context,
        module: &'a Module<'ctx>,
        kernel: &'a Kernel,
        target: &'a Target,
    ) -> Self {
        let stored = alexc_kernel::stored_buffers(&kernel.body);
        ModuleEmitter {
            cx,
            module,
            kernel,
            target,
            stored,
            outlined: 0,
            f: None,
        }
    }

    // ----- errors -------------------------------------------------------

    fn malformed(&self, message: impl Into<String>) -> LlvmError {
        LlvmError::Malformed {
            kernel: self.kernel.name.clone(),
            message: message.into(),
        }
    }

    fn mismatch(&self, expected: DType, found: DType, context: &str) -> LlvmError {
        LlvmError::TypeMismatch {
            kernel: self.kernel.name.clone(),
            expected,
            found,
            context: context.to_string(),
        }
    }

    fn f(&self) -> Result<&FnEmitter<'ctx>, LlvmError> {
        self.f
            .as_ref()
            .ok_or_else(|| self.malformed("internal: no function being emitted"))
    }

    fn fm(&mut self) -> Result<&mut FnEmitter<'ctx>, LlvmError> {
        let kernel = self.kernel.name.clone();
        self.f.as_mut().ok_or(LlvmError::Malformed {
            kernel,
            message: "internal: no function being emitted".into(),
        })
    }

    fn b(&self) -> Result<&Builder<'ctx>, LlvmError> {
        Ok(&self.f()?.builder)
    }

    // ----- types and attributes ----------------------------------------

    fn elem_type(&self, dtype: DType) -> BasicTypeEnum<'ctx> {
        match dtype {
            DType::F32 => self.cx.f32_type().into(),
            DType::I64 => self.cx.i64_type().into(),
        }
    }

    fn enum_attr(&self, name: &str, value: u64) -> Attribute {
        self.cx
            .create_enum_attribute(Attribute::get_named_enum_kind_id(name), value)
    }

    /// `target-cpu`, `target-features` and `nounwind` on every function.
    fn add_fn_attrs(&self, func: FunctionValue<'ctx>) {
        func.add_attribute(
            AttributeLoc::Function,
            self.cx
                .create_string_attribute("target-cpu", &self.target.cpu),
        );
        func.add_attribute(
            AttributeLoc::Function,
            self.cx
                .create_string_attribute("target-features", &self.target.features),
        );
        func.add_attribute(AttributeLoc::Function, self.enum_attr("nounwind", 0));
    }

    /// `noalias nocapture align dereferenceable [readonly]` on buffer param `index`.
    fn add_buffer_attrs(
        &self,
        func: FunctionValue<'ctx>,
        index: u32,
        buf: BufId,
    ) -> Result<(), LlvmError> {
        let decl = self.kernel.buffer(buf).ok_or(LlvmError::UnknownBuffer {
            kernel: self.kernel.name.clone(),
            buf,
        })?;
        let loc = AttributeLoc::Param(index);
        func.add_attribute(loc, self.enum_attr("noalias", 0));
        func.add_attribute(loc, self.enum_attr("nocapture", 0));
        func.add_attribute(loc, self.enum_attr("align", dtype_size(decl.dtype)));
        let bytes = (decl.elements() as u64).saturating_mul(dtype_size(decl.dtype));
        if bytes > 0 {
            func.add_attribute(loc, self.enum_attr("dereferenceable", bytes));
        }
        let read_only = !self.stored.contains(&buf);
        if read_only {
            func.add_attribute(loc, self.enum_attr("readonly", 0));
        }
        Ok(())
    }

    // ----- functions -----------------------------------------------------

    /// Starts a function: entry block for allocas, first code block.
    fn begin_fn(&self, func: FunctionValue<'ctx>) -> FnEmitter<'ctx> {
        let entry = self.cx.append_basic_block(func, "entry");
        let code = self.cx.append_basic_block(func, "start");
        let builder = self.cx.create_builder();
        builder.position_at_end(code);
        FnEmitter {
            func,
            builder,
            entry,
            params: BTreeMap::new(),
            locals: BTreeMap::new(),
            slots: BTreeMap::new(),
            scope: BTreeMap::new(),
            vector_depth: 0,
            lanes: None,
            lane_slots: BTreeMap::new(),
        }
    }

    /// Closes the function: `ret void`, and the entry block's branch.
    fn end_fn(&self, f: &FnEmitter<'ctx>) -> Result<(), LlvmError> {
        f.builder.build_return(None)?;
        let start = f
            .entry
            .get_next_basic_block()
            .ok_or_else(|| self.malformed("internal: function without a code block"))?;
        f.builder.position_at_end(f.entry);
        f.builder.build_unconditional_branch(start)?;
        Ok(())
    }

    fn emit_kernel(&mut self) -> Result<(), LlvmError> {
        let params: Vec<BufId> = self.kernel.params().map(|(id, _)| id).collect();
        let ptr = self.cx.ptr_type(inkwell::AddressSpace::default());
        let void = self.cx.void_type();

        // The body: one noalias pointer per parameter buffer.
        let body_ty = void.fn_type(&vec![BasicMetadataTypeEnum::from(ptr); params.len()], false);
        let body = self.module.add_function(
            &format!("{}.body", self.kernel.name),
            body_ty,
            Some(Linkage::Internal),
        );
        self.add_fn_attrs(body);
        body.add_attribute(AttributeLoc::Function, self.enum_attr("alwaysinline", 0));
        let mut f = self.begin_fn(body);
        for (i, &buf) in params.iter().enumerate() {
            self.add_buffer_attrs(body, i as u32, buf)?;
            let p = body
                .get_nth_param(i as u32)
                .ok_or_else(|| self.malformed("internal: missing parameter"))?
                .into_pointer_value();
            p.set_name(&self.buffer_name(buf));
            f.params.insert(buf, p);
        }
        self.f = Some(f);
        self.emit_block(&self.kernel.body)?;
        let f = self
            .f
            .take()
            .ok_or_else(|| self.malformed("internal: lost function state"))?;
        self.end_fn(&f)?;

        // The wrapper: `void k(ptr args)`, args[i] = buffer i.
        let wrapper_ty = void.fn_type(&[ptr.into()], false);
        let wrapper = self
            .module
            .add_function(&self.kernel.name, wrapper_ty, None);
        self.add_fn_attrs(wrapper);
        wrapper.add_attribute(AttributeLoc::Param(0), self.enum_attr("nocapture", 0));
        wrapper.add_attribute(AttributeLoc::Param(0), self.enum_attr("readonly", 0));
        let args = wrapper
            .get_nth_param(0)
            .ok_or_else(|| self.malformed("internal: missing parameter"))?
            .into_pointer_value();
        args.set_name("args");
        let builder = self.cx.create_builder();
        builder.position_at_end(self.cx.append_basic_block(wrapper, "entry"));
        let pointers = self.load_slots(&builder, args, &vec![ptr.into(); params.len()])?;
        let call_args: Vec<BasicMetadataValueEnum<'ctx>> =
            pointers.into_iter().map(Into::into).collect();
        builder.build_call(body, &call_args, "")?;
        builder.build_return(None)?;
        Ok(())
    }

    /// Loads `types.len()` values from consecutive 8-byte slots at `base`.
    fn load_slots(
        &self,
        builder: &Builder<'ctx>,
        base: PointerValue<'ctx>,
        types: &[BasicTypeEnum<'ctx>],
    ) -> Result<Vec<BasicValueEnum<'ctx>>, LlvmError> {
        let i64t = self.cx.i64_type();
        let mut out = Vec::with_capacity(types.len());
        for (i, &ty) in types.iter().enumerate() {
            // SAFETY: the slot array has `types.len()` 8-byte slots.
            let slot = unsafe {
                builder.build_in_bounds_gep(
                    i64t,
                    base,
                    &[i64t.const_int(i as u64, false)],
                    "slot",
                )?
            };
            let value = builder.build_load(ty, slot, "")?;
            set_align(value.as_instruction_value(), 8)?;
            out.push(value);
        }
        Ok(out)
    }

    fn buffer_name(&self, buf: BufId) -> String {
        match self.kernel.buffer(buf) {
            Some(decl) if !decl.name.is_empty() => decl.name.clone(),
            _ => buf.to_string(),
        }
    }

    fn var_name(&self, var: VarId) -> String {
        match self.kernel.var(var) {
            Some(decl) if !decl.name.is_empty() => decl.name.clone(),
            _ => var.to_string(),
        }
    }

    // ----- statements ----------------------------------------------------

    fn emit_block(&mut self, stmts: &[Stmt]) -> Result<(), LlvmError> {
        let saved = self.f()?.scope.clone();
        for stmt in stmts {
            self.emit_stmt(stmt)?;
        }
        self.fm()?.scope = saved;
        Ok(())
    }

    fn emit_stmt(&mut self, stmt: &Stmt) -> Result<(), LlvmError> {
        if self.f()?.lanes.is_some()
            && matches!(
                stmt,
                Stmt::Store { .. } | Stmt::Let { .. } | Stmt::Assign { .. }
            )
        {
            return self.emit_lane_stmt(stmt);
        }
        match stmt {
            Stmt::For {
                var,
                extent,
                kind,
                body,
            } => {
                let end = self.emit_idx(extent)?;
                match kind {
                    LoopKind::Parallel => self.emit_parallel(*var, end, body),
                    LoopKind::Vectorized { width } => {
                        self.emit_vectorized(*var, extent, end, *width, body)
                    }
                    _ => {
                        let zero = self.cx.i64_type().const_zero();
                        self.emit_loop(*var, zero, end, *kind, body)
                    }
                }
            }
            Stmt::Store { buf, index, value } => {
                let value = self.emit_expr(value)?;
                let (ptr, dtype) = self.address(*buf, index)?;
                if value.dtype() != dtype {
                    return Err(self.mismatch(dtype, value.dtype(), &format!("store to {buf}")));
                }
                let store = self.b()?.build_store(ptr, value.basic())?;
                set_align(Some(store), dtype_size(dtype) as u32)?;
                self.tag_access(store)?;
                Ok(())
            }
            Stmt::Let { var, value } => {
                let value = self.emit_expr(value)?;
                let dtype = self.var_dtype(*var)?;
                if value.dtype() != dtype {
                    return Err(self.mismatch(dtype, value.dtype(), &format!("let {var}")));
                }
                let slot = self.slot(*var, dtype)?;
                self.b()?.build_store(slot, value.basic())?;
                self.fm()?.scope.insert(*var, Binding::Scalar(slot, dtype));
                Ok(())
            }
            Stmt::Assign { var, value } => {
                let value = self.emit_expr(value)?;
                let Some(Binding::Scalar(slot, dtype)) = self.f()?.scope.get(var).copied() else {
                    return Err(LlvmError::UnknownVar {
                        kernel: self.kernel.name.clone(),
                        var: *var,
                    });
                };
                if value.dtype() != dtype {
                    return Err(self.mismatch(
                        dtype,
                        value.dtype(),
                        &format!("assignment to {var}"),
                    ));
                }
                self.b()?.build_store(slot, value.basic())?;
                Ok(())
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                let c = self.emit_cond(cond)?;
                let func = self.f()?.func;
                let then_bb = self.cx.append_basic_block(func, "if.then");
                let else_bb = self.cx.append_basic_block(func, "if.else");
                let join = self.cx.append_basic_block(func, "if.end");
                self.b()?.build_conditional_branch(c, then_bb, else_bb)?;
                self.b()?.position_at_end(then_bb);
                self.emit_block(then)?;
                self.b()?.build_unconditional_branch(join)?;
                self.b()?.position_at_end(else_bb);
                self.emit_block(otherwise)?;
                self.b()?.build_unconditional_branch(join)?;
                self.b()?.position_at_end(join);
                Ok(())
            }
        }
    }

    /// `for var in start..end { body }` as header/body/latch blocks.
    fn emit_loop(
        &mut self,
        var: VarId,
        start: IntValue<'ctx>,
        end: IntValue<'ctx>,
        kind: LoopKind,
        body: &[Stmt],
    ) -> Result<(), LlvmError> {
        let name = self.var_name(var);
        let vectorized = matches!(kind, LoopKind::Vectorized { .. });
        self.emit_loop_with(&name, start, end, kind, &mut |this, i| {
            {
                let f = this.fm()?;
                f.scope.insert(var, Binding::Loop(i));
                if vectorized {
                    f.vector_depth += 1;
                }
            }
            this.emit_block(body)?;
            let f = this.fm()?;
            f.scope.remove(&var);
            if vectorized {
                f.vector_depth -= 1;
            }
            Ok(())
        })
    }

    /// A counted loop `start..end` whose body `emit_body` emits for the
    /// induction value it is given; `kind` only chooses the loop metadata.
    fn emit_loop_with(
        &mut self,
        name: &str,
        start: IntValue<'ctx>,
        end: IntValue<'ctx>,
        kind: LoopKind,
        emit_body: &mut dyn FnMut(&mut Self, IntValue<'ctx>) -> Result<(), LlvmError>,
    ) -> Result<(), LlvmError> {
        let func = self.f()?.func;
        let i64t = self.cx.i64_type();
        let pre = self
            .b()?
            .get_insert_block()
            .ok_or_else(|| self.malformed("internal: builder not positioned"))?;
        let header = self.cx.append_basic_block(func, &format!("{name}.head"));
        let body_bb = self.cx.append_basic_block(func, &format!("{name}.body"));
        let exit = self.cx.append_basic_block(func, &format!("{name}.exit"));
        self.b()?.build_unconditional_branch(header)?;

        self.b()?.position_at_end(header);
        let phi = self.b()?.build_phi(i64t, name)?;
        phi.add_incoming(&[(&start, pre)]);
        let i = phi.as_basic_value().into_int_value();
        let more =
            self.b()?
                .build_int_compare(IntPredicate::SLT, i, end, &format!("{name}.more"))?;
        self.b()?.build_conditional_branch(more, body_bb, exit)?;

        self.b()?.position_at_end(body_bb);
        emit_body(self, i)?;
        let latch = self
            .b()?
            .get_insert_block()
            .ok_or_else(|| self.malformed("internal: builder not positioned"))?;
        let next =
            self.b()?
                .build_int_nsw_add(i, i64t.const_int(1, false), &format!("{name}.next"))?;
        let back = self.b()?.build_unconditional_branch(header)?;
        phi.add_incoming(&[(&next, latch)]);
        if let Some(md) = self.loop_metadata(kind) {
            back.set_metadata(md, self.cx.get_kind_id("llvm.loop"))
                .map_err(LlvmError::llvm)?;
        }
        self.b()?.position_at_end(exit);
        Ok(())
    }

    /// Outlines a `Parallel` loop: see the crate docs.
    fn emit_parallel(
        &mut self,
        var: VarId,
        n: IntValue<'ctx>,
        body: &[Stmt],
    ) -> Result<(), LlvmError> {
        let ptr = self.cx.ptr_type(inkwell::AddressSpace::default());
        let i64t = self.cx.i64_type();
        let void = self.cx.void_type();

        // Captures: every parameter pointer, then every variable in scope.
        let f = self.f()?;
        let buffers: Vec<(BufId, PointerValue<'ctx>)> =
            f.params.iter().map(|(k, v)| (*k, *v)).collect();
        let vars: Vec<(VarId, Binding<'ctx>)> = f.scope.iter().map(|(k, v)| (*k, *v)).collect();
        let mut values: Vec<BasicValueEnum<'ctx>> =
            buffers.iter().map(|(_, p)| (*p).into()).collect();
        for (_, binding) in &vars {
            values.push(match *binding {
                Binding::Loop(v) => v.into(),
                Binding::Scalar(slot, dtype) => {
                    self.b()?.build_load(self.elem_type(dtype), slot, "")?
                }
            });
        }
        let types: Vec<BasicTypeEnum<'ctx>> = values.iter().map(|v| v.get_type()).collect();

        // The outlined body `k.parN.body(ptr noalias…, vars…, begin, end)`.
        let index = self.outlined;
        self.outlined += 1;
        let mut impl_params: Vec<BasicMetadataTypeEnum<'ctx>> =
            types.iter().map(|&t| t.into()).collect();
        impl_params.push(i64t.into());
        impl_params.push(i64t.into());
        let impl_fn = self.module.add_function(
            &format!("{}.par{index}.body", self.kernel.name),
            void.fn_type(&impl_params, false),
            Some(Linkage::Internal),
        );
        self.add_fn_attrs(impl_fn);
        impl_fn.add_attribute(AttributeLoc::Function, self.enum_attr("alwaysinline", 0));
        let mut inner = self.begin_fn(impl_fn);
        let nth = |i: usize| {
            impl_fn
                .get_nth_param(i as u32)
                .ok_or_else(|| self.malformed("internal: missing parameter"))
        };
        for (i, (buf, _)) in buffers.iter().enumerate() {
            self.add_buffer_attrs(impl_fn, i as u32, *buf)?;
            let p = nth(i)?.into_pointer_value();
            p.set_name(&self.buffer_name(*buf));
            inner.params.insert(*buf, p);
        }
        let mut captured_scalars = Vec::new();
        for (j, (v, binding)) in vars.iter().enumerate() {
            let value = nth(buffers.len() + j)?;
            value.set_name(&self.var_name(*v));
            match *binding {
                Binding::Loop(_) => {
                    inner
                        .scope
                        .insert(*v, Binding::Loop(value.into_int_value()));
                }
                Binding::Scalar(_, dtype) => captured_scalars.push((*v, dtype, value)),
            }
        }
        let begin = nth(values.len())?.into_int_value();
        let end = nth(values.len() + 1)?.into_int_value();
        begin.set_name("begin");
        end.set_name("end");

        let outer = self.f.replace(inner);
        let result = (|| {
            for (v, dtype, value) in captured_scalars {
                let slot = self.slot(v, dtype)?;
                self.b()?.build_store(slot, value)?;
                self.fm()?.scope.insert(v, Binding::Scalar(slot, dtype));
            }
            self.emit_loop(var, begin, end, LoopKind::Serial, body)?;
            let f = self
                .f
                .take()
                .ok_or_else(|| self.malformed("internal: lost function state"))?;
            self.end_fn(&f)
        })();
        self.f = outer;
        result?;

        // The trampoline `k.parN(ptr ctx, i64 begin, i64 end)` unpacks ctx.
        let tramp = self.module.add_function(
            &format!("{}.par{index}", self.kernel.name),
            void.fn_type(&[ptr.into(), i64t.into(), i64t.into()], false),
            Some(Linkage::Internal),
        );
        self.add_fn_attrs(tramp);
        let builder = self.cx.create_builder();
        builder.position_at_end(self.cx.append_basic_block(tramp, "entry"));
        let ctx = tramp
            .get_nth_param(0)
            .ok_or_else(|| self.malformed("internal: missing parameter"))?;
        ctx.set_name("ctx");
        let mut args: Vec<BasicMetadataValueEnum<'ctx>> = self
            .load_slots(&builder, ctx.into_pointer_value(), &types)?
            .into_iter()
            .map(Into::into)
            .collect();
        for i in 1..3 {
            args.push(
                tramp
                    .get_nth_param(i)
                    .ok_or_else(|| self.malformed("internal: missing parameter"))?
                    .into(),
            );
        }
        builder.build_call(impl_fn, &args, "")?;
        builder.build_return(None)?;

        // The call site: fill ctx, call alexc_parallel_for(tramp, ctx, n).
        let ctx_ty = i64t.array_type(values.len().max(1) as u32);
        let ctx = self.alloca(ctx_ty.into(), "ctx", 8)?;
        for (i, value) in values.iter().enumerate() {
            // SAFETY: `ctx` has `values.len()` 8-byte slots.
            let slot = unsafe {
                self.b()?
                    .build_in_bounds_gep(i64t, ctx, &[i64t.const_int(i as u64, false)], "")?
            };
            let store = self.b()?.build_store(slot, *value)?;
            set_align(Some(store), 8)?;
        }
        let pfor = self.parallel_for_decl();
        let fn_ptr = tramp.as_global_value().as_pointer_value();
        self.b()?
            .build_call(pfor, &[fn_ptr.into(), ctx.into(), n.into()], "")?;
        Ok(())
    }

    fn parallel_for_decl(&self) -> FunctionValue<'ctx> {
        if let Some(f) = self.module.get_function(PARALLEL_FOR) {
            return f;
        }
        let ptr = self.cx.ptr_type(inkwell::AddressSpace::default());
        let ty = self
            .cx
            .void_type()
            .fn_type(&[ptr.into(), ptr.into(), self.cx.i64_type().into()], false);
        let f = self.module.add_function(PARALLEL_FOR, ty, None);
        f.add_attribute(AttributeLoc::Function, self.enum_attr("nounwind", 0));
        f
    }

    /// Loop-ID metadata for a loop of `kind` (none for serial loops).
    fn loop_metadata(&self, kind: LoopKind) -> Option<MetadataValue<'ctx>> {
        let props: Vec<BasicMetadataValueEnum<'ctx>> = match kind {
            LoopKind::Serial | LoopKind::Parallel => return None,
            LoopKind::Unrolled => vec![self.md_prop("llvm.loop.unroll.full", None).into()],
            // Loops the emitter could not widen (see `widen`): no forced
            // vectorization — LLVM warns on stderr when a forced loop fails
            // to vectorize — only the IR's promise that iterations do not
            // depend on each other, so its cost model may still vectorize.
            LoopKind::Vectorized { .. } => vec![self
                .cx
                .metadata_node(&[
                    self.cx
                        .metadata_string("llvm.loop.parallel_accesses")
                        .into(),
                    self.access_group().into(),
                ])
                .into()],
        };
        Some(self_referential_node(self.cx, &props))
    }

    fn md_prop(&self, name: &str, value: Option<IntValue<'ctx>>) -> MetadataValue<'ctx> {
        let mut ops: Vec<BasicMetadataValueEnum<'ctx>> = vec![self.cx.metadata_string(name).into()];
        if let Some(v) = value {
            ops.push(v.into());
        }
        self.cx.metadata_node(&ops)
    }

    /// The access group of buffer accesses inside vectorized loops. One group
    /// serves every loop: an access is tagged iff some vectorized loop
    /// encloses it, and each loop that lists the group only contains accesses
    /// that the IR makes independent across that loop's iterations.
    fn access_group(&self) -> MetadataValue<'ctx> {
        self.cx.metadata_node(&[])
    }

    fn tag_access(&self, inst: InstructionValue<'ctx>) -> Result<(), LlvmError> {
        if self.f()?.vector_depth > 0 {
            inst.set_metadata(
                self.access_group(),
                self.cx.get_kind_id("llvm.access.group"),
            )
            .map_err(LlvmError::llvm)?;
        }
        Ok(())
    }

    // ----- storage -------------------------------------------------------

    /// An alloca in the current function's entry block.
    fn alloca(
        &self,
        ty: BasicTypeEnum<'ctx>,
        name: &str,
        align: u32,
    ) -> Result<PointerValue<'ctx>, LlvmError> {
        let f = self.f()?;
        let builder = self.cx.create_builder();
        match f.entry.get_first_instruction() {
            Some(first) => builder.position_before(&first),
            None => builder.position_at_end(f.entry),
        }
        let slot = builder.build_alloca(ty, name)?;
        set_align(slot.as_instruction_value(), align)?;
        Ok(slot)
    }

    fn slot(&mut self, var: VarId, dtype: DType) -> Result<PointerValue<'ctx>, LlvmError> {
        if let Some(slot) = self.f()?.slots.get(&var) {
            return Ok(*slot);
        }
        let slot = self.alloca(
            self.elem_type(dtype),
            &self.var_name(var),
            dtype_size(dtype) as u32,
        )?;
        self.fm()?.slots.insert(var, slot);
        Ok(slot)
    }

    fn var_dtype(&self, var: VarId) -> Result<DType, LlvmError> {
        self.kernel
            .var(var)
            .map(|d| d.dtype)
            .ok_or(LlvmError::UnknownVar {
                kernel: self.kernel.name.clone(),
                var,
            })
    }

    /// Base pointer of a buffer in the current function.
    fn base(&mut self, buf: BufId) -> Result<PointerValue<'ctx>, LlvmError> {
        let decl = self.kernel.buffer(buf).ok_or(LlvmError::UnknownBuffer {
            kernel: self.kernel.name.clone(),
            buf,
        })?;
        match decl.kind {
            BufferKind::Param(_) => self
                .f()?
                .params
                .get(&buf)
                .copied()
                .ok_or_else(|| self.malformed(format!("internal: parameter {buf} not bound"))),
            BufferKind::Local => {
                if let Some(p) = self.f()?.locals.get(&buf) {
                    return Ok(*p);
                }
                let n = u32::try_from(decl.elements())
                    .map_err(|_| self.malformed(format!("local {buf} is too large")))?;
                let ty = match self.elem_type(decl.dtype) {
                    BasicTypeEnum::FloatType(t) => t.array_type(n).into(),
                    BasicTypeEnum::IntType(t) => t.array_type(n).into(),
                    _ => return Err(self.malformed("internal: unexpected element type")),
                };
                let p = self.alloca(ty, &self.buffer_name(buf), 64)?;
                self.fm()?.locals.insert(buf, p);
                Ok(p)
            }
        }
    }

    /// Row-major linear index `((i0·d1 + i1)·d2 + …)`.
    fn linear_index(
        &mut self,
        buf: BufId,
        index: &[Idx],
    ) -> Result<(IntValue<'ctx>, Vec<IntValue<'ctx>>), LlvmError> {
        let decl = self.kernel.buffer(buf).ok_or(LlvmError::UnknownBuffer {
            kernel: self.kernel.name.clone(),
            buf,
        })?;
        if decl.shape.len() != index.len() {
            return Err(self.malformed(format!(
                "{buf} has rank {} but is indexed with {} indices",
                decl.shape.len(),
                index.len()
            )));
        }
        let shape = decl.shape.clone();
        let i64t = self.cx.i64_type();
        let mut parts = Vec::with_capacity(index.len());
        let mut lin = i64t.const_zero();
        for (d, (idx, &dim)) in index.iter().zip(&shape).enumerate() {
            let v = self.emit_idx(idx)?;
            parts.push(v);
            lin = if d == 0 {
                v
            } else {
                let scaled =
                    self.b()?
                        .build_int_nsw_mul(lin, i64t.const_int(dim as u64, false), "")?;
                self.b()?.build_int_nsw_add(scaled, v, "")?
            };
        }
        Ok((lin, parts))
    }

    /// Address of `buf[index]` and the buffer's dtype.
    fn address(
        &mut self,
        buf: BufId,
        index: &[Idx],
    ) -> Result<(PointerValue<'ctx>, DType), LlvmError> {
        let (lin, _) = self.linear_index(buf, index)?;
        self.gep(buf, lin)
    }

    fn gep(
        &mut self,
        buf: BufId,
        lin: IntValue<'ctx>,
    ) -> Result<(PointerValue<'ctx>, DType), LlvmError> {
        let base = self.base(buf)?;
        let dtype = self
            .kernel
            .buffer(buf)
            .map(|d| d.dtype)
            .ok_or(LlvmError::UnknownBuffer {
                kernel: self.kernel.name.clone(),
                buf,
            })?;
        let ty = self.elem_type(dtype);
        // SAFETY: the index is in bounds (verified kernel IR, or a `LoadOr`
        // whose bounds check guards this code).
        let p = unsafe { self.b()?.build_in_bounds_gep(ty, base, &[lin], "")? };
        Ok((p, dtype))
    }

    fn load(&mut self, ptr: PointerValue<'ctx>, dtype: DType) -> Result<Val<'ctx>, LlvmError> {
        let v = self.b()?.build_load(self.elem_type(dtype), ptr, "")?;
        if let Some(inst) = v.as_instruction_value() {
            inst.set_alignment(dtype_size(dtype) as u32)
                .map_err(LlvmError::llvm)?;
            self.tag_access(inst)?;
        }
        Ok(match dtype {
            DType::F32 => Val::F(v.into_float_value()),
            DType::I64 => Val::I(v.into_int_value()),
        })
    }

    // ----- index arithmetic ---------------------------------------------

    fn emit_idx(&mut self, idx: &Idx) -> Result<IntValue<'ctx>, LlvmError> {
        let i64t = self.cx.i64_type();
        let k = |c: i64| i64t.const_int(c as u64, true);
        Ok(match idx {
            Idx::Const(c) => k(*c),
            Idx::Var(v) => match self.f()?.scope.get(v) {
                Some(Binding::Loop(value)) => *value,
                _ => {
                    return Err(LlvmError::UnknownVar {
                        kernel: self.kernel.name.clone(),
                        var: *v,
                    })
                }
            },
            Idx::Add(a, b) => {
                let (a, b) = (self.emit_idx(a)?, self.emit_idx(b)?);
                self.b()?.build_int_nsw_add(a, b, "")?
            }
            Idx::Sub(a, b) => {
                let (a, b) = (self.emit_idx(a)?, self.emit_idx(b)?);
                self.b()?.build_int_nsw_sub(a, b, "")?
            }
            Idx::Mul(a, c) => {
                let a = self.emit_idx(a)?;
                self.b()?.build_int_nsw_mul(a, k(*c), "")?
            }
            Idx::Div(a, c) | Idx::Rem(a, c) => {
                if *c <= 0 {
                    return Err(self.malformed(format!("division of an index by non-positive {c}")));
                }
                let is_div = matches!(idx, Idx::Div(..));
                let nonneg = a.non_negative();
                let a = self.emit_idx(a)?;
                let b = self.b()?;
                if nonneg {
                    // Cheap forms: `udiv`/`urem` (shifts and masks for powers of two).
                    if is_div {
                        b.build_int_unsigned_div(a, k(*c), "")?
                    } else {
                        b.build_int_unsigned_rem(a, k(*c), "")?
                    }
                } else {
                    // Floor semantics from truncating ones: the truncated
                    // remainder is negative exactly when the floor differs.
                    let q = b.build_int_signed_div(a, k(*c), "")?;
                    let r = b.build_int_signed_rem(a, k(*c), "")?;
                    let neg = b.build_int_compare(IntPredicate::SLT, r, k(0), "")?;
                    if is_div {
                        let fix = b.build_int_z_extend(neg, i64t, "")?;
                        b.build_int_sub(q, fix, "floordiv")?
                    } else {
                        let fixed = b.build_int_add(r, k(*c), "")?;
                        b.build_select(neg, fixed, r, "floormod")?.into_int_value()
                    }
                }
            }
            Idx::Min(a, b) | Idx::Max(a, b) => {
                let pred = if matches!(idx, Idx::Min(..)) {
                    IntPredicate::SLT
                } else {
                    IntPredicate::SGT
                };
                let (a, b) = (self.emit_idx(a)?, self.emit_idx(b)?);
                let builder = self.b()?;
                let c = builder.build_int_compare(pred, a, b, "")?;
                builder.build_select(c, a, b, "")?.into_int_value()
            }
        })
    }

    // ----- expressions ----------------------------------------------------

    fn intrinsic(
        &self,
        name: &str,
        types: &[BasicTypeEnum<'ctx>],
    ) -> Result<FunctionValue<'ctx>, LlvmError> {
        Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, types))
            .ok_or_else(|| LlvmError::Llvm(format!("intrinsic {name} not found")))
    }

    /// Fast-math flags of a float operation: `contract` everywhere (FMA
    /// formation), and `reassoc` inside `Vectorized` loops, whose reductions
    /// the kernel IR lets backends reassociate (so the vectorizer may keep
    /// per-lane partial sums).
    fn fp_flags(&self, inst: Option<InstructionValue<'ctx>>) -> Result<(), LlvmError> {
        use inkwell::values::FastMathFlags;
        let Some(inst) = inst else { return Ok(()) };
        let flags = if self.f()?.vector_depth > 0 {
            FastMathFlags::AllowContract | FastMathFlags::AllowReassoc
        } else {
            FastMathFlags::AllowContract
        };
        inst.set_fast_math_flags(flags).map_err(LlvmError::llvm)
    }

    fn call_intrinsic(&self, name: &str, args: &[Val<'ctx>]) -> Result<Val<'ctx>, LlvmError> {
        let ty = args
            .first()
            .map(|a| a.basic().get_type())
            .unwrap_or(self.cx.f32_type().into());
        let f = self.intrinsic(name, &[ty])?;
        let args: Vec<BasicMetadataValueEnum<'ctx>> =
            args.iter().map(|a| a.basic().into()).collect();
        let v = self
            .b()?
            .build_call(f, &args, "")?
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| LlvmError::Llvm(format!("intrinsic {name} returned void")))?;
        if name == "llvm.fmuladd" {
            self.fp_flags(v.as_instruction_value())?;
        }
        Ok(match v {
            BasicValueEnum::FloatValue(v) => Val::F(v),
            BasicValueEnum::IntValue(v) => Val::I(v),
            _ => {
                return Err(LlvmError::Llvm(format!(
                    "intrinsic {name}: unexpected result type"
                )))
            }
        })
    }

    fn float(&mut self, e: &Expr, context: &str) -> Result<FloatValue<'ctx>, LlvmError> {
        match self.emit_expr(e)? {
            Val::F(v) => Ok(v),
            Val::I(_) => Err(self.mismatch(DType::F32, DType::I64, context)),
        }
    }

    fn emit_expr(&mut self, e: &Expr) -> Result<Val<'ctx>, LlvmError> {
        let f32t = self.cx.f32_type();
        match e {
            Expr::F32(c) => Ok(Val::F(f32t.const_float(f64::from(*c)))),
            Expr::Load { buf, index } => {
                let (ptr, dtype) = self.address(*buf, index)?;
                self.load(ptr, dtype)
            }
            Expr::LoadOr {
                buf,
                index,
                default,
            } => self.emit_load_or(*buf, index, *default),
            Expr::Var(v) => match self.f()?.scope.get(v).copied() {
                Some(Binding::Scalar(slot, dtype)) => {
                    let v = self.b()?.build_load(self.elem_type(dtype), slot, "")?;
                    Ok(match dtype {
                        DType::F32 => Val::F(v.into_float_value()),
                        DType::I64 => Val::I(v.into_int_value()),
                    })
                }
                Some(Binding::Loop(v)) => Ok(Val::I(v)),
                None => Err(LlvmError::UnknownVar {
                    kernel: self.kernel.name.clone(),
                    var: *v,
                }),
            },
            Expr::Index(idx) => Ok(Val::I(self.emit_idx(idx)?)),
            Expr::Cast { to, value } => {
                let v = self.emit_expr(value)?;
                Ok(match (v, to) {
                    (Val::F(_), DType::F32) | (Val::I(_), DType::I64) => v,
                    (Val::I(i), DType::F32) => {
                        Val::F(self.b()?.build_signed_int_to_float(i, f32t, "")?)
                    }
                    (Val::F(x), DType::I64) => {
                        // Saturating, as Rust's `as` (plain fptosi is poison out of range).
                        let i64t = self.cx.i64_type();
                        let f = self.intrinsic("llvm.fptosi.sat", &[i64t.into(), f32t.into()])?;
                        let r = self
                            .b()?
                            .build_call(f, &[x.into()], "")?
                            .try_as_basic_value()
                            .basic()
                            .ok_or_else(|| self.malformed("internal: fptosi.sat returned void"))?;
                        Val::I(r.into_int_value())
                    }
                })
            }
            Expr::Binary { op, a, b } => {
                let (a, b) = (self.emit_expr(a)?, self.emit_expr(b)?);
                self.emit_binary(*op, a, b)
            }
            Expr::Unary { op, a } => {
                let a = self.emit_expr(a)?;
                self.emit_unary(*op, a)
            }
            Expr::Fma { a, b, c } => {
                let a = self.float(a, "fma")?;
                let b = self.float(b, "fma")?;
                let c = self.float(c, "fma")?;
                self.call_intrinsic("llvm.fmuladd", &[Val::F(a), Val::F(b), Val::F(c)])
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                let c = self.emit_cond(cond)?;
                let (t, o) = (self.emit_expr(then)?, self.emit_expr(otherwise)?);
                if t.dtype() != o.dtype() {
                    return Err(self.mismatch(t.dtype(), o.dtype(), "select"));
                }
                let v = self.b()?.build_select(c, t.basic(), o.basic(), "")?;
                Ok(match t {
                    Val::F(_) => Val::F(v.into_float_value()),
                    Val::I(_) => Val::I(v.into_int_value()),
                })
            }
        }
    }

    /// `buf[index]` if every index is in `0..dim`, else `default`: a branch
    /// around the load, joined by a phi (the vectorizer if-converts it into
    /// a masked load).
    fn emit_load_or(
        &mut self,
        buf: BufId,
        index: &[Idx],
        default: f32,
    ) -> Result<Val<'ctx>, LlvmError> {
        let decl = self.kernel.buffer(buf).ok_or(LlvmError::UnknownBuffer {
            kernel: self.kernel.name.clone(),
            buf,
        })?;
        if decl.dtype != DType::F32 {
            return Err(self.mismatch(DType::F32, decl.dtype, "load-or"));
        }
        let shape = decl.shape.clone();
        let f32t = self.cx.f32_type();
        let default = f32t.const_float(f64::from(default));
        let (lin, parts) = self.linear_index(buf, index)?;
        if shape.iter().product::<usize>() == 0 {
            return Ok(Val::F(default));
        }
        let i64t = self.cx.i64_type();
        let mut inside = self.cx.bool_type().const_int(1, false);
        for (v, &dim) in parts.iter().zip(&shape) {
            // `0 <= v < dim` as one unsigned compare.
            let ok = self.b()?.build_int_compare(
                IntPredicate::ULT,
                *v,
                i64t.const_int(dim as u64, false),
                "",
            )?;
            inside = self.b()?.build_and(inside, ok, "inside")?;
        }
        let func = self.f()?.func;
        let pre = self
            .b()?
            .get_insert_block()
            .ok_or_else(|| self.malformed("internal: builder not positioned"))?;
        let load_bb = self.cx.append_basic_block(func, "loador.load");
        let join = self.cx.append_basic_block(func, "loador.end");
        self.b()?.build_conditional_branch(inside, load_bb, join)?;
        self.b()?.position_at_end(load_bb);
        let (ptr, dtype) = self.gep(buf, lin)?;
        let loaded = self.load(ptr, dtype)?;
        let load_end = self
            .b()?
            .get_insert_block()
            .ok_or_else(|| self.malformed("internal: builder not positioned"))?;
        self.b()?.build_unconditional_branch(join)?;
        self.b()?.position_at_end(join);
        let phi = self.b()?.build_phi(f32t, "loador")?;
        phi.add_incoming(&[(&loaded.basic(), load_end), (&default, pre)]);
        Ok(Val::F(phi.as_basic_value().into_float_value()))
    }

    fn emit_binary(
        &mut self,
        op: BinOp,
        a: Val<'ctx>,
        b: Val<'ctx>,
    ) -> Result<Val<'ctx>, LlvmError> {
        match (a, b) {
            (Val::F(x), Val::F(y)) => {
                let builder = self.b()?;
                let v = match op {
                    BinOp::Add => builder.build_float_add(x, y, "")?,
                    BinOp::Sub => builder.build_float_sub(x, y, "")?,
                    BinOp::Mul => builder.build_float_mul(x, y, "")?,
                    BinOp::Div => builder.build_float_div(x, y, "")?,
                    BinOp::Max => return self.call_intrinsic("llvm.maxnum", &[a, b]),
                    BinOp::Min => return self.call_intrinsic("llvm.minnum", &[a, b]),
                    BinOp::Pow => return self.call_intrinsic("llvm.pow", &[a, b]),
                };
                self.fp_flags(v.as_instruction_value())?;
                Ok(Val::F(v))
            }
            (Val::I(x), Val::I(y)) => {
                let builder = self.b()?;
                Ok(Val::I(match op {
                    BinOp::Add => builder.build_int_add(x, y, "")?,
                    BinOp::Sub => builder.build_int_sub(x, y, "")?,
                    BinOp::Mul => builder.build_int_mul(x, y, "")?,
                    BinOp::Max => return self.call_intrinsic("llvm.smax", &[a, b]),
                    BinOp::Min => return self.call_intrinsic("llvm.smin", &[a, b]),
                    BinOp::Div | BinOp::Pow => {
                        return Err(self.malformed(format!("{op:?} is not defined on i64 values")))
                    }
                }))
            }
            _ => Err(self.mismatch(a.dtype(), b.dtype(), &format!("{op:?} operands"))),
        }
    }

    fn emit_unary(&mut self, op: UnOp, a: Val<'ctx>) -> Result<Val<'ctx>, LlvmError> {
        match a {
            Val::F(x) => match op {
                UnOp::Neg => {
                    let v = self.b()?.build_float_neg(x, "")?;
                    self.fp_flags(v.as_instruction_value())?;
                    Ok(Val::F(v))
                }
                UnOp::Exp => self.call_intrinsic("llvm.exp", &[a]),
                UnOp::Log => self.call_intrinsic("llvm.log", &[a]),
                UnOp::Sqrt => self.call_intrinsic("llvm.sqrt", &[a]),
                UnOp::Abs => self.call_intrinsic("llvm.fabs", &[a]),
                UnOp::Rsqrt => {
                    let Val::F(s) = self.call_intrinsic("llvm.sqrt", &[a])? else {
                        return Err(self.malformed("internal: sqrt of f32 is not f32"));
                    };
                    let one = self.cx.f32_type().const_float(1.0);
                    let v = self.b()?.build_float_div(one, s, "")?;
                    self.fp_flags(v.as_instruction_value())?;
                    Ok(Val::F(v))
                }
            },
            Val::I(x) => match op {
                UnOp::Neg => Ok(Val::I(self.b()?.build_int_neg(x, "")?)),
                UnOp::Abs => {
                    let f = self.intrinsic("llvm.abs", &[x.get_type().into()])?;
                    let poison = self.cx.bool_type().const_zero();
                    let r = self
                        .b()?
                        .build_call(f, &[x.into(), poison.into()], "")?
                        .try_as_basic_value()
                        .basic()
                        .ok_or_else(|| self.malformed("internal: abs returned void"))?;
                    Ok(Val::I(r.into_int_value()))
                }
                _ => Err(self.mismatch(DType::F32, DType::I64, &format!("{op:?} operand"))),
            },
        }
    }

    fn emit_cond(&mut self, c: &Cond) -> Result<IntValue<'ctx>, LlvmError> {
        Ok(match c {
            Cond::Idx { op, a, b } => {
                let (a, b) = (self.emit_idx(a)?, self.emit_idx(b)?);
                self.b()?.build_int_compare(int_pred(*op), a, b, "")?
            }
            Cond::Expr { op, a, b } => {
                let (a, b) = (self.emit_expr(a)?, self.emit_expr(b)?);
                match (a, b) {
                    (Val::F(x), Val::F(y)) => {
                        self.b()?.build_float_compare(float_pred(*op), x, y, "")?
                    }
                    (Val::I(x), Val::I(y)) => {
                        self.b()?.build_int_compare(int_pred(*op), x, y, "")?
                    }
                    _ => return Err(self.mismatch(a.dtype(), b.dtype(), "comparison operands")),
                }
            }
            Cond::And(a, b) => {
                let (a, b) = (self.emit_cond(a)?, self.emit_cond(b)?);
                self.b()?.build_and(a, b, "")?
            }
            Cond::Or(a, b) => {
                let (a, b) = (self.emit_cond(a)?, self.emit_cond(b)?);
                self.b()?.build_or(a, b, "")?
            }
            Cond::Not(a) => {
                let a = self.emit_cond(a)?;
                self.b()?.build_not(a, "")?
            }
        })
    }
}

/// Builds `!N = distinct !{!N, props…}` (a loop ID must reference itself;
/// LLVM makes a uniqued node distinct when it becomes self-referential).
fn self_referential_node<'ctx>(
    cx: &'ctx Context,
    props: &[BasicMetadataValueEnum<'ctx>],
) -> MetadataValue<'ctx> {
    use inkwell::llvm_sys::core::{LLVMMDNodeInContext2, LLVMMetadataAsValue, LLVMValueAsMetadata};
    use inkwell::llvm_sys::debuginfo::{LLVMMetadataReplaceAllUsesWith, LLVMTemporaryMDNode};
    use inkwell::values::AsValueRef;

    let raw_cx = cx.raw();
    // SAFETY: plain LLVM C API calls on a live context; the temporary node is
    // consumed (and freed) by `LLVMMetadataReplaceAllUsesWith`.
    unsafe {
        let temp = LLVMTemporaryMDNode(raw_cx, std::ptr::null_mut(), 0);
        let mut ops = vec![temp];
        ops.extend(props.iter().map(|p| LLVMValueAsMetadata(p.as_value_ref())));
        let node = LLVMMDNodeInContext2(raw_cx, ops.as_mut_ptr(), ops.len());
        LLVMMetadataReplaceAllUsesWith(temp, node);
        MetadataValue::new(LLVMMetadataAsValue(raw_cx, node))
    }
}

fn set_align(inst: Option<InstructionValue<'_>>, align: u32) -> Result<(), LlvmError> {
    if let Some(inst) = inst {
        inst.set_alignment(align).map_err(LlvmError::llvm)?;
    }
    Ok(())
}

fn dtype_size(dtype: DType) -> u64 {
    match dtype {
        DType::F32 => 4,
        DType::I64 => 8,
    }
}

fn int_pred(op: Cmp) -> IntPredicate {
    match op {
        Cmp::Lt => IntPredicate::SLT,
        Cmp::Le => IntPredicate::SLE,
        Cmp::Eq => IntPredicate::EQ,
        Cmp::Ne => IntPredicate::NE,
        Cmp::Gt => IntPredicate::SGT,
        Cmp::Ge => IntPredicate::SGE,
    }
}

/// Ordered predicates, except `Ne` which is true on NaN (as Rust's `!=`).
fn float_pred(op: Cmp) -> FloatPredicate {
    match op {
        Cmp::Lt => FloatPredicate::OLT,
        Cmp::Le => FloatPredicate::OLE,
        Cmp::Eq => FloatPredicate::OEQ,
        Cmp::Ne => FloatPredicate::UNE,
        Cmp::Gt => FloatPredicate::OGT,
        Cmp::Ge => FloatPredicate::OGE,
    }
}
