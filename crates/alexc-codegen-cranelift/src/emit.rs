//! Kernel IR → Cranelift IR: a pure translation of one [`Kernel`] into
//! Cranelift [`Function`]s (see the crate docs for the calling convention
//! and how each construct is lowered), and the CLIF text renderer.
//!
//! One [`FnEmitter`] exists per Cranelift function being built: the
//! kernel's entry function and every outlined `Parallel` body. Outlining a
//! parallel loop builds the body function completely, with an emitter of its
//! own, in the middle of its caller, then goes on with the caller.
//!
//! The emitter folds index arithmetic as it goes ([`IVal`]: a constant, or a
//! value plus a constant offset). That is what makes `Unrolled` loops (which
//! the emitter unrolls itself) produce constant indices, which in turn lets
//! small local buffers — register tiles — live in SSA variables instead of
//! stack memory (*promotion*, see [`emit_kernel`]); Cranelift has no SROA.
//!
//! Two choices shape the code of hot loops for Cranelift's optimizer,
//! which schedules pure instructions next to their uses and hoists
//! loop-invariant ones (LICM), but keeps loads where they are:
//!
//! - Addresses are the base plus one scaled term per dimension, the terms
//!   that do not vary in the innermost loop first ([`FnEmitter::address`]),
//!   so the invariant partial sum (a row pointer) is hoisted.
//! - Uniform loads from read-only parameters inside widened loops are
//!   *movable* ([`FnEmitter::movable_load`]): Cranelift places them next to
//!   their uses instead of at the top of the loop body. In a GEMM
//!   micro-kernel whose accumulators are promoted, all `fma`s are scheduled
//!   at the loop's back edge; with the broadcast `A` elements loaded there
//!   too, they no longer all stay live at once (which spilled accumulators:
//!   48 → 65 GFLOP/s on AlexNet's convolutions).

use std::collections::{BTreeMap, BTreeSet};

use alexc_kernel::vector::depends_on;
use alexc_kernel::{
    BinOp, BufId, BufferKind, Cmp, Cond, DType, Expr, Idx, Kernel, LoopKind, Stmt, UnOp, VarId,
};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    self, types, AbiParam, BlockArg, ExtFuncData, ExternalName, FuncRef, Function, InstBuilder,
    MemFlagsData, Signature, StackSlotData, StackSlotKind, UserExternalName, UserFuncName, Value,
};
use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use target_lexicon::PointerWidth;

use crate::CraneliftError;

mod lanes;

/// f32 lanes of a widened loop chunk: `f32x4` is Cranelift's widest vector
/// type on x86-64 (and aarch64).
pub const LANES: usize = 4;

/// `Unrolled` loops with at most this many iterations are unrolled by the
/// emitter (longer ones, and those containing a `Parallel` loop, run as
/// serial loops).
const MAX_UNROLL: i64 = 64;

/// A widened loop of constant extent with at most this many chunks is
/// emitted as straight-line chunks (constant lane indices, so the locals
/// they address can be promoted); longer ones loop over chunks.
const MAX_STRAIGHT_CHUNKS: i64 = 4;

/// Largest local (in f32 elements) considered for promotion to variables.
const MAX_PROMOTED: usize = 256;

/// Namespace of a kernel's own functions in [`UserExternalName`]s: index 0
/// is the entry function, index `i` the `i`-th outlined parallel body.
pub const NS_LOCAL: u32 = 0;
/// Namespace of the external functions ([`Extern`]), by [`Extern::index`].
pub const NS_EXTERN: u32 = 1;

/// The functions outside generated code that it calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extern {
    /// `alexc_threads::alexc_parallel_for(body, ctx, n)`.
    ParallelFor,
    /// `f32::exp`.
    Exp,
    /// `f32::ln`.
    Log,
    /// `f32::powf`.
    Pow,
}

impl Extern {
    pub const ALL: [Extern; 4] = [Extern::ParallelFor, Extern::Exp, Extern::Log, Extern::Pow];

    /// The symbol the JIT maps to the Rust function.
    pub fn symbol(self) -> &'static str {
        match self {
            Extern::ParallelFor => "alexc_parallel_for",
            Extern::Exp => "alexc_expf",
            Extern::Log => "alexc_logf",
            Extern::Pow => "alexc_powf",
        }
    }

    pub fn index(self) -> u32 {
        self as u32
    }

    pub fn signature(self, call_conv: CallConv) -> Signature {
        let mut sig = Signature::new(call_conv);
        let (params, returns): (&[ir::Type], &[ir::Type]) = match self {
            Extern::ParallelFor => (&[types::I64, types::I64, types::I64], &[]),
            Extern::Exp | Extern::Log => (&[types::F32], &[types::F32]),
            Extern::Pow => (&[types::F32, types::F32], &[types::F32]),
        };
        sig.params.extend(params.iter().map(|&t| AbiParam::new(t)));
        sig.returns
            .extend(returns.iter().map(|&t| AbiParam::new(t)));
        sig
    }
}

/// Target facts the translation depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmitOptions {
    /// The calling convention of the entry functions and outlined bodies,
    /// which Rust calls as `extern "C"` (the host's default convention).
    pub call_conv: CallConv,
    /// Emit `Fma` as a fused `fma` (the host has FMA instructions);
    /// otherwise as `fmul` + `fadd`, which the kernel IR allows equally.
    pub fma: bool,
}

impl EmitOptions {
    /// The signature of a kernel's entry function, `fn(args: *const *mut u8)`.
    pub fn entry_signature(&self) -> Signature {
        let mut sig = Signature::new(self.call_conv);
        sig.params.push(AbiParam::new(types::I64));
        sig
    }

    /// The signature of an outlined parallel body, `fn(ctx, begin, end)`
    /// (`alexc_threads::BodyFn`).
    pub fn body_signature(&self) -> Signature {
        let mut sig = Signature::new(self.call_conv);
        sig.params.extend([AbiParam::new(types::I64); 3]);
        sig
    }

    fn frontend_config(&self) -> TargetFrontendConfig {
        TargetFrontendConfig {
            default_call_conv: self.call_conv,
            pointer_width: PointerWidth::U64,
            page_size_align_log2: 12,
        }
    }
}

/// Translates `kernel` into Cranelift functions: element 0 is the entry
/// function `fn(args)`, element `i` the `i`-th outlined parallel body
/// `fn(ctx, begin, end)`; calls between them and to [`Extern`]s name their
/// callee as `NS_LOCAL:i` or `NS_EXTERN:index`.
///
/// Small f32 locals are first assumed promotable (kept in `f32x4` SSA
/// variables); an access with an index that is not constant demotes the
/// local to a stack slot and the kernel is translated again (translation is
/// cheap next to compilation, and most kernels have no or one local).
pub fn emit_kernel(
    kernel: &Kernel,
    options: &EmitOptions,
) -> Result<Vec<Function>, CraneliftError> {
    let mut promote: BTreeSet<BufId> = kernel
        .buffers
        .iter()
        .enumerate()
        .filter(|(_, b)| {
            b.kind == BufferKind::Local && b.dtype == DType::F32 && b.elements() <= MAX_PROMOTED
        })
        .map(|(i, _)| BufId(i as u32))
        .collect();
    loop {
        match emit_with(kernel, options, &promote) {
            Ok(functions) => return Ok(functions),
            Err(Fail::Demote(buf)) if promote.remove(&buf) => {
                tracing::trace!(kernel = %kernel.name, %buf, "local kept in memory");
            }
            Err(Fail::Demote(buf)) => {
                return Err(CraneliftError::Malformed {
                    kernel: kernel.name.clone(),
                    message: format!("internal: demoted {buf} twice"),
                })
            }
            Err(Fail::Error(e)) => return Err(e),
        }
    }
}

fn emit_with(
    kernel: &Kernel,
    options: &EmitOptions,
    promote: &BTreeSet<BufId>,
) -> Result<Vec<Function>, Fail> {
    let stored = alexc_kernel::stored_buffers(&kernel.body);
    let mut sh = Shared {
        kernel,
        options: *options,
        promote,
        stored,
        functions: vec![None],
    };
    let name = kernel.name.clone();
    build_function(&mut sh, 0, options.entry_signature(), name, |e| {
        let entry = e.b.create_block();
        e.b.append_block_params_for_function_params(entry);
        e.b.switch_to_block(entry);
        e.b.seal_block(entry);
        let args = e.b.block_params(entry)[0];
        let params: Vec<BufId> = kernel.params().map(|(id, _)| id).collect();
        for (i, buf) in params.into_iter().enumerate() {
            let p =
                e.b.ins()
                    .load(types::I64, MemFlagsData::trusted(), args, (8 * i) as i32);
            e.params.insert(buf, p);
        }
        e.emit_block(&kernel.body)?;
        e.b.ins().return_(&[]);
        Ok(())
    })?;
    sh.functions
        .into_iter()
        .map(|f| f.ok_or_else(|| Fail::malformed(kernel, "internal: a function was not built")))
        .collect()
}

/// Renders the Cranelift IR of `kernels` as `compile --emit clif` prints
/// it: every kernel's functions as translated, before Cranelift's own
/// optimizations, with the host's calling convention.
pub fn clif_text(kernels: &[Kernel]) -> Result<String, CraneliftError> {
    render_clif(kernels, &crate::jit::host_emit_options()?)
}

/// [`clif_text`] for explicit target options (machine-independent output,
/// for snapshots).
pub fn render_clif(kernels: &[Kernel], options: &EmitOptions) -> Result<String, CraneliftError> {
    let mut out = String::new();
    out.push_str("; external functions:");
    for x in Extern::ALL {
        out.push_str(&format!(" u{NS_EXTERN}:{} = {}", x.index(), x.symbol()));
    }
    out.push_str(&format!(
        "\n; u{NS_LOCAL}:i = the kernel's function i (0: entry, i > 0: parallel body)\n"
    ));
    for kernel in kernels {
        for f in emit_kernel(kernel, options)? {
            out.push('\n');
            out.push_str(&f.display().to_string());
        }
    }
    Ok(out)
}

/// Why a translation attempt stopped.
#[derive(Debug)]
enum Fail {
    /// A promoted local was addressed with a non-constant index.
    Demote(BufId),
    Error(CraneliftError),
}

impl From<CraneliftError> for Fail {
    fn from(e: CraneliftError) -> Self {
        Fail::Error(e)
    }
}

impl Fail {
    fn malformed(kernel: &Kernel, message: impl Into<String>) -> Fail {
        Fail::Error(CraneliftError::Malformed {
            kernel: kernel.name.clone(),
            message: message.into(),
        })
    }
}

type R<T> = Result<T, Fail>;

/// Translation state shared by all functions of one kernel.
struct Shared<'k> {
    kernel: &'k Kernel,
    options: EmitOptions,
    /// Locals kept in SSA variables.
    promote: &'k BTreeSet<BufId>,
    /// Buffers the kernel stores to (loads from the others are `readonly`).
    stored: BTreeSet<BufId>,
    /// The kernel's functions by local index, filled as they are finished.
    functions: Vec<Option<Function>>,
}

/// Builds function `index` of the kernel with `emit`, which must leave
/// every block filled.
fn build_function(
    sh: &mut Shared<'_>,
    index: usize,
    sig: Signature,
    name: String,
    emit: impl FnOnce(&mut FnEmitter<'_, '_>) -> R<()>,
) -> R<()> {
    let config = sh.options.frontend_config();
    let mut func = Function::with_name_signature(UserFuncName::testcase(name), sig);
    let mut fctx = FunctionBuilderContext::new();
    let b = FunctionBuilder::new(&mut func, &mut fctx);
    let mut e = FnEmitter {
        sh: &mut *sh,
        b,
        params: BTreeMap::new(),
        locals: BTreeMap::new(),
        vars: BTreeMap::new(),
        scope: BTreeMap::new(),
        lanes: None,
        lane_vars: BTreeMap::new(),
        lane_declared: BTreeSet::new(),
        refs: BTreeMap::new(),
        innermost: None,
    };
    emit(&mut e)?;
    e.b.seal_all_blocks();
    e.b.finalize(config);
    match sh.functions.get_mut(index) {
        Some(slot) => *slot = Some(func),
        None => return Err(Fail::malformed(sh.kernel, "internal: bad function index")),
    }
    Ok(())
}

/// An i64 index value, folded where possible: a constant, or a Cranelift
/// value plus a constant offset (so constant parts of an address end up in
/// the load's displacement).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IVal {
    K(i64),
    V(Value, i64),
}

/// A scalar value.
#[derive(Clone, Copy, Debug)]
enum Val {
    F(Value),
    I(IVal),
}

impl Val {
    fn dtype(self) -> DType {
        match self {
            Val::F(_) => DType::F32,
            Val::I(_) => DType::I64,
        }
    }
}

/// A condition: known at translation time, or an `i8` that is 0 or 1.
#[derive(Clone, Copy, Debug)]
enum CVal {
    K(bool),
    V(Value),
}

/// Where an element of a buffer is.
#[derive(Clone, Debug)]
enum Place {
    /// Its row-major linear index.
    Lin(IVal),
    /// Its index in each dimension, with whether that index varies in the
    /// innermost loop (see [`FnEmitter::address`]).
    Dims(Vec<(IVal, bool)>),
}

impl Place {
    /// The linear index, if it is a constant.
    fn const_lin(&self, shape: &[usize]) -> Option<i64> {
        match self {
            Place::Lin(IVal::K(k)) => Some(*k),
            Place::Lin(_) => None,
            Place::Dims(dims) => {
                dims.iter()
                    .zip(shape)
                    .try_fold(0i64, |lin, (d, &dim)| match d.0 {
                        IVal::K(k) => Some(lin.wrapping_mul(dim as i64).wrapping_add(k)),
                        IVal::V(..) => None,
                    })
            }
        }
    }
}

/// What a variable id means at a program point.
#[derive(Clone, Copy, Debug)]
enum Binding {
    /// A loop variable.
    Loop(IVal),
    /// A scalar variable.
    Scalar(Variable, DType),
}

/// A local buffer's storage in the current function.
#[derive(Clone, Debug)]
enum Local {
    Slot(ir::StackSlot),
    /// Element `e` is lane `e % 4` of variable `e / 4`.
    Promoted(Vec<Variable>),
}

/// One value captured by an outlined parallel body.
#[derive(Clone, Copy, Debug)]
enum Capture {
    Buffer(BufId),
    Loop(VarId),
    Scalar(VarId, DType),
}

/// Per-function state.
struct FnEmitter<'a, 'k> {
    sh: &'a mut Shared<'k>,
    b: FunctionBuilder<'a>,
    /// Parameter buffers' base pointers (loaded in the entry block).
    params: BTreeMap<BufId, Value>,
    /// Local buffers, created on first use in this function.
    locals: BTreeMap<BufId, Local>,
    /// One Cranelift variable per scalar variable id (scalar code).
    vars: BTreeMap<VarId, Variable>,
    /// Variables in scope.
    scope: BTreeMap<VarId, Binding>,
    /// The widened loop chunk being emitted, if any.
    lanes: Option<lanes::Lanes>,
    /// Vector variables of scalar variables declared in widened bodies.
    lane_vars: BTreeMap<VarId, lanes::LaneVar>,
    /// Variables declared in the widened body so far (in scope).
    lane_declared: BTreeSet<VarId>,
    /// Functions imported into this one, by (namespace, index).
    refs: BTreeMap<(u32, u32), FuncRef>,
    /// The innermost loop emitted as a Cranelift loop (`None` outside
    /// loops, and in loops over widened chunks).
    innermost: Option<LoopInfo>,
}

/// What the emitter knows about a loop it is emitting.
#[derive(Clone, Debug)]
struct LoopInfo {
    var: VarId,
    /// The buffers the loop body stores to.
    stored: BTreeSet<BufId>,
}

impl FnEmitter<'_, '_> {
    fn kernel(&self) -> &Kernel {
        self.sh.kernel
    }

    // ----- errors --------------------------------------------------------

    fn malformed(&self, message: impl Into<String>) -> Fail {
        Fail::malformed(self.sh.kernel, message)
    }

    fn mismatch(&self, expected: DType, found: DType, context: &str) -> Fail {
        Fail::Error(CraneliftError::TypeMismatch {
            kernel: self.sh.kernel.name.clone(),
            expected,
            found,
            context: context.to_string(),
        })
    }

    fn unknown_var(&self, var: VarId) -> Fail {
        Fail::Error(CraneliftError::UnknownVar {
            kernel: self.sh.kernel.name.clone(),
            var,
        })
    }

    fn decl(&self, buf: BufId) -> R<&alexc_kernel::BufferDecl> {
        self.sh.kernel.buffer(buf).ok_or_else(|| {
            Fail::Error(CraneliftError::UnknownBuffer {
                kernel: self.sh.kernel.name.clone(),
                buf,
            })
        })
    }

    fn buf_dtype(&self, buf: BufId) -> R<DType> {
        Ok(self.decl(buf)?.dtype)
    }

    fn var_dtype(&self, var: VarId) -> R<DType> {
        self.kernel()
            .var(var)
            .map(|d| d.dtype)
            .ok_or_else(|| self.unknown_var(var))
    }

    // ----- small helpers -------------------------------------------------

    fn iconst(&mut self, k: i64) -> Value {
        self.b.ins().iconst(types::I64, k)
    }

    /// Materializes an index value.
    fn iv(&mut self, x: IVal) -> Value {
        match x {
            IVal::K(k) => self.iconst(k),
            IVal::V(v, 0) => v,
            IVal::V(v, k) => self.b.ins().iadd_imm_s(v, k),
        }
    }

    fn f32const(&mut self, x: f32) -> Value {
        self.b.ins().f32const(x)
    }

    /// Imports function `(namespace, index)` with `sig` into this function.
    fn func_ref(&mut self, namespace: u32, index: u32, sig: Signature) -> FuncRef {
        if let Some(r) = self.refs.get(&(namespace, index)) {
            return *r;
        }
        let signature = self.b.import_signature(sig);
        let name = self
            .b
            .func
            .declare_imported_user_function(UserExternalName::new(namespace, index));
        let r = self.b.import_function(ExtFuncData {
            name: ExternalName::user(name),
            signature,
            // Generated code and the Rust functions may be far apart.
            colocated: false,
            patchable: false,
        });
        self.refs.insert((namespace, index), r);
        r
    }

    fn call_extern(&mut self, x: Extern, args: &[Value]) -> R<Value> {
        let call = self.call_void(x, args);
        self.b
            .inst_results(call)
            .first()
            .copied()
            .ok_or_else(|| self.malformed(format!("internal: {} returned nothing", x.symbol())))
    }

    fn call_void(&mut self, x: Extern, args: &[Value]) -> ir::Inst {
        let sig = x.signature(self.sh.options.call_conv);
        let r = self.func_ref(NS_EXTERN, x.index(), sig);
        self.b.ins().call(r, args)
    }

    // ----- index arithmetic ---------------------------------------------

    fn iadd(&mut self, a: IVal, b: IVal) -> IVal {
        match (a, b) {
            (IVal::K(x), IVal::K(y)) => IVal::K(x.wrapping_add(y)),
            (IVal::V(v, k), IVal::K(c)) | (IVal::K(c), IVal::V(v, k)) => {
                IVal::V(v, k.wrapping_add(c))
            }
            (IVal::V(v, k), IVal::V(w, j)) => IVal::V(self.b.ins().iadd(v, w), k.wrapping_add(j)),
        }
    }

    fn isub(&mut self, a: IVal, b: IVal) -> IVal {
        match (a, b) {
            (IVal::K(x), IVal::K(y)) => IVal::K(x.wrapping_sub(y)),
            (IVal::V(v, k), IVal::K(c)) => IVal::V(v, k.wrapping_sub(c)),
            (IVal::K(c), IVal::V(v, k)) => IVal::V(self.b.ins().ineg(v), c.wrapping_sub(k)),
            (IVal::V(v, k), IVal::V(w, j)) => IVal::V(self.b.ins().isub(v, w), k.wrapping_sub(j)),
        }
    }

    fn imul_k(&mut self, a: IVal, c: i64) -> IVal {
        match a {
            IVal::K(x) => IVal::K(x.wrapping_mul(c)),
            _ if c == 0 => IVal::K(0),
            IVal::V(v, k) if c == 1 => IVal::V(v, k),
            IVal::V(v, k) => IVal::V(self.b.ins().imul_imm_s(v, c), k.wrapping_mul(c)),
        }
    }

    fn imul(&mut self, a: IVal, b: IVal) -> IVal {
        match (a, b) {
            (x, IVal::K(c)) | (IVal::K(c), x) => self.imul_k(x, c),
            (x, y) => {
                let (x, y) = (self.iv(x), self.iv(y));
                IVal::V(self.b.ins().imul(x, y), 0)
            }
        }
    }

    /// Floor division or remainder by a positive constant; `nonneg` when the
    /// dividend is known to be `>= 0` (cheaper unsigned forms).
    fn floor_divrem(&mut self, a: IVal, k: i64, div: bool, nonneg: bool) -> IVal {
        if let IVal::K(x) = a {
            return IVal::K(if div {
                x.div_euclid(k)
            } else {
                x.rem_euclid(k)
            });
        }
        if k == 1 {
            return if div { a } else { IVal::K(0) };
        }
        let v = self.iv(a);
        let kv = self.iconst(k);
        if nonneg {
            let r = if div {
                self.b.ins().udiv(v, kv)
            } else {
                self.b.ins().urem(v, kv)
            };
            return IVal::V(r, 0);
        }
        // Floor from truncation: the truncated remainder is negative
        // exactly when the floor differs.
        let q = self.b.ins().sdiv(v, kv);
        let r = self.b.ins().srem(v, kv);
        let neg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, r, 0);
        if div {
            let fix = self.b.ins().uextend(types::I64, neg);
            IVal::V(self.b.ins().isub(q, fix), 0)
        } else {
            let fixed = self.b.ins().iadd(r, kv);
            IVal::V(self.b.ins().select(neg, fixed, r), 0)
        }
    }

    fn iminmax(&mut self, a: IVal, b: IVal, min: bool) -> IVal {
        if let (IVal::K(x), IVal::K(y)) = (a, b) {
            return IVal::K(if min { x.min(y) } else { x.max(y) });
        }
        let (x, y) = (self.iv(a), self.iv(b));
        IVal::V(
            if min {
                self.b.ins().smin(x, y)
            } else {
                self.b.ins().smax(x, y)
            },
            0,
        )
    }

    fn idx(&mut self, idx: &Idx) -> R<IVal> {
        Ok(match idx {
            Idx::Const(c) => IVal::K(*c),
            Idx::Var(v) => match self.scope.get(v) {
                Some(Binding::Loop(x)) => *x,
                _ => return Err(self.unknown_var(*v)),
            },
            Idx::Add(a, b) => {
                let (a, b) = (self.idx(a)?, self.idx(b)?);
                self.iadd(a, b)
            }
            Idx::Sub(a, b) => {
                let (a, b) = (self.idx(a)?, self.idx(b)?);
                self.isub(a, b)
            }
            Idx::Mul(a, k) => {
                let a = self.idx(a)?;
                self.imul_k(a, *k)
            }
            Idx::Div(a, k) | Idx::Rem(a, k) => {
                if *k <= 0 {
                    return Err(self.malformed(format!("division of an index by non-positive {k}")));
                }
                let nonneg = a.non_negative();
                let v = self.idx(a)?;
                self.floor_divrem(v, *k, matches!(idx, Idx::Div(..)), nonneg)
            }
            Idx::Min(a, b) | Idx::Max(a, b) => {
                let (a, b) = (self.idx(a)?, self.idx(b)?);
                self.iminmax(a, b, matches!(idx, Idx::Min(..)))
            }
        })
    }

    fn icmp(&mut self, op: Cmp, a: IVal, b: IVal) -> CVal {
        if let (IVal::K(x), IVal::K(y)) = (a, b) {
            return CVal::K(match op {
                Cmp::Lt => x < y,
                Cmp::Le => x <= y,
                Cmp::Eq => x == y,
                Cmp::Ne => x != y,
                Cmp::Gt => x > y,
                Cmp::Ge => x >= y,
            });
        }
        let (x, y) = (self.iv(a), self.iv(b));
        CVal::V(self.b.ins().icmp(int_cc(op), x, y))
    }

    // ----- statements ----------------------------------------------------

    fn emit_block(&mut self, stmts: &[Stmt]) -> R<()> {
        let saved = self.scope.clone();
        let declared = self.lane_declared.clone();
        for stmt in stmts {
            self.emit_stmt(stmt)?;
        }
        self.scope = saved;
        self.lane_declared = declared;
        Ok(())
    }

    fn emit_stmt(&mut self, stmt: &Stmt) -> R<()> {
        if self.lanes.is_some()
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
                let end = self.idx(extent)?;
                match kind {
                    LoopKind::Parallel if self.lanes.is_none() => {
                        self.emit_parallel(*var, end, body)
                    }
                    LoopKind::Vectorized { width } => self.emit_vectorized(*var, end, *width, body),
                    LoopKind::Unrolled => match end {
                        IVal::K(n) if n <= MAX_UNROLL && !has_parallel(body) => {
                            for i in 0..n {
                                self.emit_iteration(*var, IVal::K(i), body)?;
                            }
                            Ok(())
                        }
                        _ => self.serial_loop(*var, IVal::K(0), end, body),
                    },
                    _ => self.serial_loop(*var, IVal::K(0), end, body),
                }
            }
            Stmt::Store { buf, index, value } => {
                let value = self.expr(value)?;
                let dtype = self.buf_dtype(*buf)?;
                if value.dtype() != dtype {
                    return Err(self.mismatch(dtype, value.dtype(), &format!("store to {buf}")));
                }
                let place = self.place(*buf, index)?;
                self.store_elem(*buf, &place, value)
            }
            Stmt::Let { var, value } => {
                let value = self.expr(value)?;
                let dtype = self.var_dtype(*var)?;
                if value.dtype() != dtype {
                    return Err(self.mismatch(dtype, value.dtype(), &format!("let {var}")));
                }
                let v = self.scalar_var(*var, dtype);
                let x = self.val(value);
                self.b.def_var(v, x);
                self.scope.insert(*var, Binding::Scalar(v, dtype));
                Ok(())
            }
            Stmt::Assign { var, value } => {
                let value = self.expr(value)?;
                let Some(Binding::Scalar(v, dtype)) = self.scope.get(var).copied() else {
                    return Err(self.unknown_var(*var));
                };
                if value.dtype() != dtype {
                    return Err(self.mismatch(
                        dtype,
                        value.dtype(),
                        &format!("assignment to {var}"),
                    ));
                }
                let x = self.val(value);
                self.b.def_var(v, x);
                Ok(())
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => match self.cond(cond)? {
                CVal::K(true) => self.emit_block(then),
                CVal::K(false) => self.emit_block(otherwise),
                CVal::V(c) => {
                    let then_bb = self.b.create_block();
                    let join = self.b.create_block();
                    let else_bb = if otherwise.is_empty() {
                        join
                    } else {
                        self.b.create_block()
                    };
                    self.b.ins().brif(c, then_bb, &[], else_bb, &[]);
                    self.b.seal_block(then_bb);
                    self.b.switch_to_block(then_bb);
                    self.emit_block(then)?;
                    self.b.ins().jump(join, &[]);
                    if else_bb != join {
                        self.b.seal_block(else_bb);
                        self.b.switch_to_block(else_bb);
                        self.emit_block(otherwise)?;
                        self.b.ins().jump(join, &[]);
                    }
                    self.b.seal_block(join);
                    self.b.switch_to_block(join);
                    Ok(())
                }
            },
        }
    }

    fn scalar_var(&mut self, var: VarId, dtype: DType) -> Variable {
        if let Some(v) = self.vars.get(&var) {
            return *v;
        }
        let v = self.b.declare_var(scalar_type(dtype));
        self.vars.insert(var, v);
        v
    }

    fn val(&mut self, v: Val) -> Value {
        match v {
            Val::F(x) => x,
            Val::I(i) => self.iv(i),
        }
    }

    /// One iteration of a loop body with the loop variable bound to `i`.
    fn emit_iteration(&mut self, var: VarId, i: IVal, body: &[Stmt]) -> R<()> {
        self.scope.insert(var, Binding::Loop(i));
        let r = self.emit_block(body);
        self.scope.remove(&var);
        r
    }

    fn serial_loop(&mut self, var: VarId, start: IVal, end: IVal, body: &[Stmt]) -> R<()> {
        let stored = alexc_kernel::stored_buffers(body);
        let info = LoopInfo { var, stored };
        self.counted_loop(start, end, 1, Some(info), &mut |e, i| {
            e.emit_iteration(var, i, body)
        })
    }

    /// `for i = start; i < end; i += step { emit_body(i) }`, as a guarded
    /// bottom-tested loop whose induction variable is the body block's
    /// parameter; a loop known to run once is emitted without a loop.
    /// `info` describes the kernel's loop, if the induction variable is
    /// a loop variable.
    fn counted_loop(
        &mut self,
        start: IVal,
        end: IVal,
        step: i64,
        info: Option<LoopInfo>,
        emit_body: &mut dyn FnMut(&mut Self, IVal) -> R<()>,
    ) -> R<()> {
        if let (IVal::K(s), IVal::K(e)) = (start, end) {
            if s >= e {
                return Ok(());
            }
            if e - s <= step {
                return emit_body(self, IVal::K(s));
            }
        }
        let guard = self.icmp(Cmp::Lt, start, end);
        if let CVal::K(false) = guard {
            return Ok(());
        }
        let s = self.iv(start);
        let e = self.iv(end);
        let body_bb = self.b.create_block();
        let i = self.b.append_block_param(body_bb, types::I64);
        let exit = self.b.create_block();
        match guard {
            CVal::V(c) => {
                self.b
                    .ins()
                    .brif(c, body_bb, &[BlockArg::Value(s)], exit, &[]);
            }
            CVal::K(_) => {
                self.b.ins().jump(body_bb, &[BlockArg::Value(s)]);
            }
        }
        self.b.switch_to_block(body_bb);
        let outer = std::mem::replace(&mut self.innermost, info);
        let r = emit_body(self, IVal::V(i, 0));
        self.innermost = outer;
        r?;
        let next = self.b.ins().iadd_imm_s(i, step);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, next, e);
        self.b
            .ins()
            .brif(more, body_bb, &[BlockArg::Value(next)], exit, &[]);
        self.b.seal_block(body_bb);
        self.b.seal_block(exit);
        self.b.switch_to_block(exit);
        Ok(())
    }

    /// Outlines a `Parallel` loop (see the crate docs): the body becomes
    /// function `fn(ctx, begin, end)`, the captures go into an array of
    /// 8-byte slots on this function's stack, and the loop becomes a call
    /// `alexc_parallel_for(body, ctx, n)`.
    fn emit_parallel(&mut self, var: VarId, n: IVal, body: &[Stmt]) -> R<()> {
        // Captures: every parameter pointer, then every variable in scope
        // whose value is not a translation-time constant.
        let mut captures = Vec::new();
        let mut values = Vec::new();
        for (&buf, &p) in &self.params {
            captures.push(Capture::Buffer(buf));
            values.push(p);
        }
        let mut constants = Vec::new();
        let scope: Vec<(VarId, Binding)> = self.scope.iter().map(|(k, v)| (*k, *v)).collect();
        for (v, binding) in scope {
            match binding {
                Binding::Loop(IVal::K(k)) => constants.push((v, k)),
                Binding::Loop(x) => {
                    captures.push(Capture::Loop(v));
                    values.push(self.iv(x));
                }
                Binding::Scalar(var, dtype) => {
                    captures.push(Capture::Scalar(v, dtype));
                    values.push(self.b.use_var(var));
                }
            }
        }

        let index = self.sh.functions.len();
        self.sh.functions.push(None);
        let name = format!("{}.par{}", self.sh.kernel.name, index - 1);
        let sig = self.sh.options.body_signature();
        build_function(self.sh, index, sig.clone(), name, |e| {
            let entry = e.b.create_block();
            e.b.append_block_params_for_function_params(entry);
            e.b.switch_to_block(entry);
            e.b.seal_block(entry);
            let (ctx, begin, end) = match e.b.block_params(entry) {
                &[ctx, begin, end] => (ctx, begin, end),
                _ => return Err(e.malformed("internal: outlined body signature")),
            };
            let flags = MemFlagsData::trusted();
            for (i, capture) in captures.iter().enumerate() {
                let off = (8 * i) as i32;
                match *capture {
                    Capture::Buffer(buf) => {
                        let p = e.b.ins().load(types::I64, flags, ctx, off);
                        e.params.insert(buf, p);
                    }
                    Capture::Loop(v) => {
                        let x = e.b.ins().load(types::I64, flags, ctx, off);
                        e.scope.insert(v, Binding::Loop(IVal::V(x, 0)));
                    }
                    Capture::Scalar(v, dtype) => {
                        let x = e.b.ins().load(scalar_type(dtype), flags, ctx, off);
                        let var = e.scalar_var(v, dtype);
                        e.b.def_var(var, x);
                        e.scope.insert(v, Binding::Scalar(var, dtype));
                    }
                }
            }
            for (v, k) in constants {
                e.scope.insert(v, Binding::Loop(IVal::K(k)));
            }
            e.serial_loop(var, IVal::V(begin, 0), IVal::V(end, 0), body)?;
            e.b.ins().return_(&[]);
            Ok(())
        })?;

        let slot = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (8 * values.len().max(1)) as u32,
            3,
        ));
        for (i, v) in values.into_iter().enumerate() {
            self.b
                .ins()
                .stack_store(types::I64, v, slot, (8 * i) as i32);
        }
        let body_ref = self.func_ref(NS_LOCAL, index as u32, sig);
        let body_ptr = self.b.ins().func_addr(types::I64, body_ref);
        let ctx = self.b.ins().stack_addr(types::I64, slot, 0);
        let n = self.iv(n);
        self.call_void(Extern::ParallelFor, &[body_ptr, ctx, n]);
        Ok(())
    }

    // ----- memory ----------------------------------------------------------

    /// The index in each dimension of `buf[index]`.
    fn indices(&mut self, buf: BufId, index: &[Idx]) -> R<Vec<IVal>> {
        Ok(match self.place(buf, index)? {
            Place::Dims(dims) => dims.into_iter().map(|(p, _)| p).collect(),
            Place::Lin(_) => return Err(self.malformed("internal: place without dimensions")),
        })
    }

    /// Whether `idx` varies in the innermost loop.
    fn variant(&self, idx: &Idx) -> bool {
        self.innermost
            .as_ref()
            .is_some_and(|l| depends_on(idx, l.var))
    }

    /// The place of `buf[index]`.
    fn place(&mut self, buf: BufId, index: &[Idx]) -> R<Place> {
        let rank = self.decl(buf)?.shape.len();
        if rank != index.len() {
            return Err(self.malformed(format!(
                "{buf} has rank {rank} but is indexed with {} indices",
                index.len()
            )));
        }
        let mut dims = Vec::with_capacity(index.len());
        for idx in index {
            dims.push((self.idx(idx)?, self.variant(idx)));
        }
        Ok(Place::Dims(dims))
    }

    fn local(&mut self, buf: BufId) -> R<Local> {
        if let Some(l) = self.locals.get(&buf) {
            return Ok(l.clone());
        }
        let decl = self.decl(buf)?;
        let elements = decl.elements();
        let dtype = decl.dtype;
        let local = if self.sh.promote.contains(&buf) {
            let groups = elements.div_ceil(LANES);
            Local::Promoted(
                (0..groups)
                    .map(|_| self.b.declare_var(types::F32X4))
                    .collect(),
            )
        } else {
            let bytes = (elements as u64).saturating_mul(dtype_size(dtype) as u64);
            let bytes = u32::try_from(bytes)
                .map_err(|_| self.malformed(format!("local {buf} is too large")))?;
            Local::Slot(self.b.create_sized_stack_slot(StackSlotData::new(
                StackSlotKind::ExplicitSlot,
                bytes.max(1),
                6,
            )))
        };
        self.locals.insert(buf, local.clone());
        Ok(local)
    }

    fn is_promoted(&self, buf: BufId) -> bool {
        self.sh.promote.contains(&buf)
    }

    /// The variable holding element group `e / 4` of promoted `buf`.
    fn group(&mut self, buf: BufId, group: i64) -> R<Variable> {
        let Local::Promoted(vars) = self.local(buf)? else {
            return Err(self.malformed("internal: not a promoted local"));
        };
        usize::try_from(group)
            .ok()
            .and_then(|g| vars.get(g).copied())
            .ok_or_else(|| self.malformed(format!("{buf}: element group {group} out of bounds")))
    }

    fn promoted_get(&mut self, buf: BufId, e: i64) -> R<Value> {
        let g = self.group(buf, e.div_euclid(LANES as i64))?;
        let v = self.b.use_var(g);
        Ok(self
            .b
            .ins()
            .extractlane(v, e.rem_euclid(LANES as i64) as u8))
    }

    fn promoted_set(&mut self, buf: BufId, e: i64, x: Value) -> R<()> {
        let g = self.group(buf, e.div_euclid(LANES as i64))?;
        let v = self.b.use_var(g);
        let v = self
            .b
            .ins()
            .insertlane(v, x, e.rem_euclid(LANES as i64) as u8);
        self.b.def_var(g, v);
        Ok(())
    }

    /// Base pointer of a buffer in the current function.
    fn base(&mut self, buf: BufId) -> R<Value> {
        match self.decl(buf)?.kind {
            BufferKind::Param(_) => self
                .params
                .get(&buf)
                .copied()
                .ok_or_else(|| self.malformed(format!("internal: parameter {buf} not bound"))),
            BufferKind::Local => match self.local(buf)? {
                Local::Slot(slot) => Ok(self.b.ins().stack_addr(types::I64, slot, 0)),
                Local::Promoted(_) => Err(self.malformed("internal: address of a promoted local")),
            },
        }
    }

    /// Address of an element of `buf`: a pointer and a displacement.
    ///
    /// With per-dimension indices, the address is the base plus one scaled
    /// term per dimension, the terms that do not vary in the innermost loop
    /// first: Cranelift hoists that partial sum out of the loop (a row
    /// pointer), and the access inside is `[row + k·4]`. Constant parts go
    /// into the displacement.
    fn address(&mut self, buf: BufId, place: &Place) -> R<(Value, i32)> {
        let decl = self.decl(buf)?;
        let size = dtype_size(decl.dtype);
        let shape = decl.shape.clone();
        let base = self.base(buf)?;
        let mut terms: Vec<(Value, i64, bool)> = Vec::new();
        let mut offset = 0i64;
        match place {
            Place::Dims(dims) => {
                let mut stride = size;
                let mut strides = vec![0i64; shape.len()];
                for (d, &dim) in shape.iter().enumerate().rev() {
                    strides[d] = stride;
                    stride = stride.wrapping_mul(dim as i64);
                }
                for (&(part, variant), &st) in dims.iter().zip(&strides) {
                    match part {
                        IVal::K(k) => offset = offset.wrapping_add(k.wrapping_mul(st)),
                        IVal::V(v, k) => {
                            offset = offset.wrapping_add(k.wrapping_mul(st));
                            terms.push((v, st, variant));
                        }
                    }
                }
                // Stable: invariant terms first, in dimension order.
                terms.sort_by_key(|t| t.2);
            }
            Place::Lin(IVal::K(k)) => offset = k.wrapping_mul(size),
            Place::Lin(IVal::V(v, k)) => {
                offset = k.wrapping_mul(size);
                terms.push((*v, size, true));
            }
        }
        let mut p = base;
        for (v, st, _) in terms {
            let scaled = if st > 0 && (st as u64).is_power_of_two() {
                if st == 1 {
                    v
                } else {
                    self.b.ins().ishl_imm_s(v, i64::from(st.trailing_zeros()))
                }
            } else {
                self.b.ins().imul_imm_s(v, st)
            };
            p = self.b.ins().iadd(p, scaled);
        }
        match i32::try_from(offset).ok() {
            Some(off) => Ok((p, off)),
            None => {
                let o = self.iconst(offset);
                Ok((self.b.ins().iadd(p, o), 0))
            }
        }
    }

    /// Flags of an access to `buf`: in bounds (notrap), naturally aligned
    /// for scalars, and `readonly` for buffers the kernel never stores to.
    fn flags(&self, buf: BufId, vector: bool) -> MemFlagsData {
        let mut f = MemFlagsData::new().with_notrap();
        if !vector {
            f = f.with_aligned();
        }
        if !self.sh.stored.contains(&buf) {
            f = f.with_readonly();
        }
        f
    }

    fn load_elem(&mut self, buf: BufId, place: &Place) -> R<Val> {
        let dtype = self.buf_dtype(buf)?;
        if self.is_promoted(buf) {
            let shape = &self.decl(buf)?.shape;
            let Some(e) = place.const_lin(shape) else {
                return Err(Fail::Demote(buf));
            };
            return Ok(Val::F(self.promoted_get(buf, e)?));
        }
        let (p, off) = self.address(buf, place)?;
        let flags = self.flags(buf, false);
        let v = self.b.ins().load(scalar_type(dtype), flags, p, off);
        Ok(match dtype {
            DType::F32 => Val::F(v),
            DType::I64 => Val::I(IVal::V(v, 0)),
        })
    }

    /// Whether a load of `buf[index]` may be marked movable (`readonly`,
    /// `can_move`; see [`FnEmitter::movable_load`]). Cranelift then places
    /// it anywhere between where it was and its first use, or, if its
    /// address is invariant in a loop, before that loop. That is sound for
    /// a parameter the kernel never stores to; and for one that the
    /// innermost loop's body never stores to, if the address varies in
    /// that loop (the load then stays inside one iteration of a body with
    /// no store to the buffer).
    fn movable(&self, buf: BufId, index: &[Idx]) -> R<bool> {
        if !matches!(self.decl(buf)?.kind, BufferKind::Param(_)) {
            return Ok(false);
        }
        if !self.sh.stored.contains(&buf) {
            return Ok(true);
        }
        Ok(match &self.innermost {
            Some(l) => !l.stored.contains(&buf) && index.iter().any(|i| self.variant(i)),
            None => false,
        })
    }

    /// A scalar load that Cranelift may schedule (and hoist) freely. Its
    /// indices are clamped into the buffer unless its address varies in
    /// the innermost loop (which it can then not leave), so wherever
    /// Cranelift places it, it reads inside the buffer, and where the
    /// kernel executes it the clamp changes nothing. Used for the uniform
    /// operands of widened loop bodies (a GEMM's broadcast `A` elements):
    /// placed next to their uses, they do not all stay live across the
    /// body.
    fn movable_load(&mut self, buf: BufId, index: &[Idx]) -> R<Val> {
        let mut place = self.place(buf, index)?;
        if !index.iter().any(|i| self.variant(i)) {
            let shape = self.decl(buf)?.shape.clone();
            if let Place::Dims(dims) = &mut place {
                for ((p, _), &dim) in dims.iter_mut().zip(&shape) {
                    if !matches!(p, IVal::K(_)) {
                        let hi = self.iminmax(*p, IVal::K(dim as i64 - 1), true);
                        *p = self.iminmax(hi, IVal::K(0), false);
                    }
                }
            }
        }
        let dtype = self.buf_dtype(buf)?;
        let (p, off) = self.address(buf, &place)?;
        let flags = self.flags(buf, false).with_readonly().with_can_move();
        let v = self.b.ins().load(scalar_type(dtype), flags, p, off);
        Ok(match dtype {
            DType::F32 => Val::F(v),
            DType::I64 => Val::I(IVal::V(v, 0)),
        })
    }

    fn store_elem(&mut self, buf: BufId, place: &Place, value: Val) -> R<()> {
        let x = self.val(value);
        if self.is_promoted(buf) {
            let shape = &self.decl(buf)?.shape;
            let Some(e) = place.const_lin(shape) else {
                return Err(Fail::Demote(buf));
            };
            return self.promoted_set(buf, e, x);
        }
        let (p, off) = self.address(buf, place)?;
        let flags = self.flags(buf, false);
        self.b.ins().store(flags, x, p, off);
        Ok(())
    }

    /// `buf[parts]` if every index is inside its dimension, else `default`:
    /// branch-free, loading at a clamped (valid) index and selecting.
    fn load_or_parts(&mut self, buf: BufId, parts: &[IVal], default: f32) -> R<Value> {
        let decl = self.decl(buf)?;
        if decl.dtype != DType::F32 {
            return Err(self.mismatch(DType::F32, decl.dtype, "load-or"));
        }
        let shape = decl.shape.clone();
        if shape.iter().product::<usize>() == 0 {
            return Ok(self.f32const(default));
        }
        let mut inside = CVal::K(true);
        let mut lin = IVal::K(0);
        let mut clamped_lin = IVal::K(0);
        for (&v, &dim) in parts.iter().zip(&shape) {
            let ok = match v {
                IVal::K(k) => CVal::K((0..dim as i64).contains(&k)),
                _ => {
                    let x = self.iv(v);
                    let d = self.iconst(dim as i64);
                    CVal::V(self.b.ins().icmp(IntCC::UnsignedLessThan, x, d))
                }
            };
            inside = self.and(inside, ok);
            let scaled = self.imul_k(lin, dim as i64);
            lin = self.iadd(scaled, v);
            let clamped = match ok {
                CVal::K(_) => v,
                CVal::V(c) => {
                    let x = self.iv(v);
                    let zero = self.iconst(0);
                    IVal::V(self.b.ins().select(c, x, zero), 0)
                }
            };
            let scaled = self.imul_k(clamped_lin, dim as i64);
            clamped_lin = self.iadd(scaled, clamped);
        }
        match inside {
            CVal::K(false) => Ok(self.f32const(default)),
            CVal::K(true) => match self.load_elem(buf, &Place::Lin(lin))? {
                Val::F(v) => Ok(v),
                Val::I(_) => Err(self.mismatch(DType::F32, DType::I64, "load-or")),
            },
            CVal::V(c) => {
                let Val::F(loaded) = self.load_elem(buf, &Place::Lin(clamped_lin))? else {
                    return Err(self.mismatch(DType::F32, DType::I64, "load-or"));
                };
                let d = self.f32const(default);
                Ok(self.b.ins().select(c, loaded, d))
            }
        }
    }

    // ----- expressions -----------------------------------------------------

    fn float(&mut self, e: &Expr, context: &str) -> R<Value> {
        match self.expr(e)? {
            Val::F(v) => Ok(v),
            Val::I(_) => Err(self.mismatch(DType::F32, DType::I64, context)),
        }
    }

    fn expr(&mut self, e: &Expr) -> R<Val> {
        Ok(match e {
            Expr::F32(c) => Val::F(self.f32const(*c)),
            Expr::Load { buf, index } => {
                if self.lanes.is_some() && self.movable(*buf, index)? {
                    self.movable_load(*buf, index)?
                } else {
                    let place = self.place(*buf, index)?;
                    self.load_elem(*buf, &place)?
                }
            }
            Expr::LoadOr {
                buf,
                index,
                default,
            } => {
                let parts = self.indices(*buf, index)?;
                Val::F(self.load_or_parts(*buf, &parts, *default)?)
            }
            Expr::Var(v) => match self.scope.get(v).copied() {
                Some(Binding::Scalar(var, DType::F32)) => Val::F(self.b.use_var(var)),
                Some(Binding::Scalar(var, DType::I64)) => Val::I(IVal::V(self.b.use_var(var), 0)),
                Some(Binding::Loop(x)) => Val::I(x),
                None => return Err(self.unknown_var(*v)),
            },
            Expr::Index(idx) => Val::I(self.idx(idx)?),
            Expr::Cast { to, value } => {
                let v = self.expr(value)?;
                self.cast(v, *to)
            }
            Expr::Binary { op, a, b } => {
                let b_plain = is_plain_constant(b);
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                self.binary(*op, a, b, b_plain)?
            }
            Expr::Unary { op, a } => {
                let a = self.expr(a)?;
                self.unary(*op, a)?
            }
            Expr::Fma { a, b, c } => {
                let a = self.float(a, "fma")?;
                let b = self.float(b, "fma")?;
                let c = self.float(c, "fma")?;
                Val::F(self.fma(a, b, c))
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                let c = self.cond(cond)?;
                let (t, o) = (self.expr(then)?, self.expr(otherwise)?);
                if t.dtype() != o.dtype() {
                    return Err(self.mismatch(t.dtype(), o.dtype(), "select"));
                }
                match c {
                    CVal::K(true) => t,
                    CVal::K(false) => o,
                    CVal::V(c) => {
                        let (tv, ov) = (self.val(t), self.val(o));
                        let v = self.b.ins().select(c, tv, ov);
                        match t {
                            Val::F(_) => Val::F(v),
                            Val::I(_) => Val::I(IVal::V(v, 0)),
                        }
                    }
                }
            }
        })
    }

    fn cast(&mut self, v: Val, to: DType) -> Val {
        match (v, to) {
            (Val::F(_), DType::F32) | (Val::I(_), DType::I64) => v,
            (Val::I(IVal::K(k)), DType::F32) => Val::F(self.f32const(k as f32)),
            (Val::I(i), DType::F32) => {
                let x = self.iv(i);
                Val::F(self.b.ins().fcvt_from_sint(types::F32, x))
            }
            // Saturating, as Rust's `as` (NaN becomes 0).
            (Val::F(x), DType::I64) => {
                Val::I(IVal::V(self.b.ins().fcvt_to_sint_sat(types::I64, x), 0))
            }
        }
    }

    fn fma(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.sh.options.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let p = self.b.ins().fmul(a, b);
            self.b.ins().fadd(p, c)
        }
    }

    /// `maxNum`/`minNum` (a NaN operand yields the other operand), scalar
    /// or `f32x4`: `b < a ? a : b` is one `maxss`/`maxps` (`a < b ? a : b`
    /// one `minss`/`minps`), which yields `b` when either is NaN; a NaN `b`
    /// is then replaced by `a`, unless `b` is a constant that is not NaN.
    fn min_max(&mut self, a: Value, b: Value, max: bool, b_plain: bool) -> Value {
        let vector = self.b.func.dfg.value_type(a).is_vector();
        let pick = |e: &mut Self, c: Value, x: Value, y: Value| -> Value {
            if vector {
                let m = e.b.ins().bitcast(types::F32X4, MemFlagsData::new(), c);
                e.b.ins().bitselect(m, x, y)
            } else {
                e.b.ins().select(c, x, y)
            }
        };
        let c = if max {
            self.b.ins().fcmp(FloatCC::LessThan, b, a)
        } else {
            self.b.ins().fcmp(FloatCC::LessThan, a, b)
        };
        let r = pick(self, c, a, b);
        if b_plain {
            return r;
        }
        let nan = self.b.ins().fcmp(FloatCC::Unordered, b, b);
        pick(self, nan, a, r)
    }

    fn binary(&mut self, op: BinOp, a: Val, b: Val, b_plain: bool) -> R<Val> {
        Ok(match (a, b) {
            (Val::F(x), Val::F(y)) => Val::F(self.fbinary(op, x, y, b_plain)?),
            (Val::I(x), Val::I(y)) => Val::I(match op {
                BinOp::Add => self.iadd(x, y),
                BinOp::Sub => self.isub(x, y),
                BinOp::Mul => self.imul(x, y),
                BinOp::Max => self.iminmax(x, y, false),
                BinOp::Min => self.iminmax(x, y, true),
                BinOp::Div | BinOp::Pow => {
                    return Err(self.malformed(format!("{op:?} is not defined on i64 values")))
                }
            }),
            _ => return Err(self.mismatch(a.dtype(), b.dtype(), &format!("{op:?} operands"))),
        })
    }

    /// A float binary operation on two scalars or two `f32x4`s.
    fn fbinary(&mut self, op: BinOp, x: Value, y: Value, b_plain: bool) -> R<Value> {
        Ok(match op {
            BinOp::Add => self.b.ins().fadd(x, y),
            BinOp::Sub => self.b.ins().fsub(x, y),
            BinOp::Mul => self.b.ins().fmul(x, y),
            BinOp::Div => self.b.ins().fdiv(x, y),
            BinOp::Max => self.min_max(x, y, true, b_plain),
            BinOp::Min => self.min_max(x, y, false, b_plain),
            BinOp::Pow => self.per_lane(Extern::Pow, &[x, y])?,
        })
    }

    /// A call of a scalar math function on scalars, or on each lane of
    /// `f32x4`s.
    fn per_lane(&mut self, f: Extern, args: &[Value]) -> R<Value> {
        let Some(&first) = args.first() else {
            return Err(self.malformed("internal: math call without arguments"));
        };
        if !self.b.func.dfg.value_type(first).is_vector() {
            return self.call_extern(f, args);
        }
        let mut out = Vec::with_capacity(LANES);
        for l in 0..LANES as u8 {
            let lane: Vec<Value> = args
                .iter()
                .map(|&a| self.b.ins().extractlane(a, l))
                .collect();
            out.push(self.call_extern(f, &lane)?);
        }
        Ok(self.assemble(&out))
    }

    /// An `f32x4` from four f32 scalars.
    fn assemble(&mut self, lanes: &[Value]) -> Value {
        self.assemble_ty(types::F32X4, lanes)
    }

    fn unary(&mut self, op: UnOp, a: Val) -> R<Val> {
        Ok(match a {
            Val::F(x) => Val::F(self.funary(op, x)?),
            Val::I(i) => Val::I(match (op, i) {
                (UnOp::Neg, IVal::K(k)) => IVal::K(k.wrapping_neg()),
                (UnOp::Abs, IVal::K(k)) => IVal::K(k.wrapping_abs()),
                (UnOp::Neg, _) => {
                    let x = self.iv(i);
                    IVal::V(self.b.ins().ineg(x), 0)
                }
                (UnOp::Abs, _) => {
                    let x = self.iv(i);
                    IVal::V(self.b.ins().iabs(x), 0)
                }
                _ => return Err(self.mismatch(DType::F32, DType::I64, &format!("{op:?} operand"))),
            }),
        })
    }

    /// A float unary operation on a scalar or an `f32x4`.
    fn funary(&mut self, op: UnOp, x: Value) -> R<Value> {
        Ok(match op {
            UnOp::Neg => self.b.ins().fneg(x),
            UnOp::Exp => self.per_lane(Extern::Exp, &[x])?,
            UnOp::Log => self.per_lane(Extern::Log, &[x])?,
            UnOp::Sqrt => self.b.ins().sqrt(x),
            UnOp::Abs => self.b.ins().fabs(x),
            UnOp::Rsqrt => {
                let s = self.b.ins().sqrt(x);
                let one = self.f32const(1.0);
                let one = if self.b.func.dfg.value_type(x).is_vector() {
                    self.b.ins().splat(types::F32X4, one)
                } else {
                    one
                };
                self.b.ins().fdiv(one, s)
            }
        })
    }

    fn and(&mut self, a: CVal, b: CVal) -> CVal {
        match (a, b) {
            (CVal::K(false), _) | (_, CVal::K(false)) => CVal::K(false),
            (CVal::K(true), x) | (x, CVal::K(true)) => x,
            (CVal::V(x), CVal::V(y)) => CVal::V(self.b.ins().band(x, y)),
        }
    }

    fn or(&mut self, a: CVal, b: CVal) -> CVal {
        match (a, b) {
            (CVal::K(true), _) | (_, CVal::K(true)) => CVal::K(true),
            (CVal::K(false), x) | (x, CVal::K(false)) => x,
            (CVal::V(x), CVal::V(y)) => CVal::V(self.b.ins().bor(x, y)),
        }
    }

    fn not(&mut self, a: CVal) -> CVal {
        match a {
            CVal::K(k) => CVal::K(!k),
            // Booleans are 0 or 1: flip the low bit only.
            CVal::V(x) => CVal::V(self.b.ins().bxor_imm_s(x, 1)),
        }
    }

    fn compare(&mut self, op: Cmp, a: Val, b: Val) -> R<CVal> {
        Ok(match (a, b) {
            (Val::F(x), Val::F(y)) => CVal::V(self.b.ins().fcmp(float_cc(op), x, y)),
            (Val::I(x), Val::I(y)) => self.icmp(op, x, y),
            _ => return Err(self.mismatch(a.dtype(), b.dtype(), "comparison operands")),
        })
    }

    fn cond(&mut self, c: &Cond) -> R<CVal> {
        Ok(match c {
            Cond::Idx { op, a, b } => {
                let (a, b) = (self.idx(a)?, self.idx(b)?);
                self.icmp(*op, a, b)
            }
            Cond::Expr { op, a, b } => {
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                self.compare(*op, a, b)?
            }
            Cond::And(a, b) => {
                let (a, b) = (self.cond(a)?, self.cond(b)?);
                self.and(a, b)
            }
            Cond::Or(a, b) => {
                let (a, b) = (self.cond(a)?, self.cond(b)?);
                self.or(a, b)
            }
            Cond::Not(a) => {
                let a = self.cond(a)?;
                self.not(a)
            }
        })
    }
}

fn scalar_type(dtype: DType) -> ir::Type {
    match dtype {
        DType::F32 => types::F32,
        DType::I64 => types::I64,
    }
}

fn dtype_size(dtype: DType) -> i64 {
    match dtype {
        DType::F32 => 4,
        DType::I64 => 8,
    }
}

fn int_cc(op: Cmp) -> IntCC {
    match op {
        Cmp::Lt => IntCC::SignedLessThan,
        Cmp::Le => IntCC::SignedLessThanOrEqual,
        Cmp::Eq => IntCC::Equal,
        Cmp::Ne => IntCC::NotEqual,
        Cmp::Gt => IntCC::SignedGreaterThan,
        Cmp::Ge => IntCC::SignedGreaterThanOrEqual,
    }
}

/// Ordered comparisons, except `Ne`, which is true on NaN (as Rust's `!=`).
fn float_cc(op: Cmp) -> FloatCC {
    match op {
        Cmp::Lt => FloatCC::LessThan,
        Cmp::Le => FloatCC::LessThanOrEqual,
        Cmp::Eq => FloatCC::Equal,
        Cmp::Ne => FloatCC::NotEqual,
        Cmp::Gt => FloatCC::GreaterThan,
        Cmp::Ge => FloatCC::GreaterThanOrEqual,
    }
}

/// A float constant that is not NaN (`max(x, 0)` needs no NaN fix-up).
fn is_plain_constant(e: &Expr) -> bool {
    matches!(e, Expr::F32(c) if !c.is_nan())
}

fn has_parallel(stmts: &[Stmt]) -> bool {
    stmts.iter().any(|s| match s {
        Stmt::For { kind, body, .. } => *kind == LoopKind::Parallel || has_parallel(body),
        Stmt::If {
            then, otherwise, ..
        } => has_parallel(then) || has_parallel(otherwise),
        Stmt::Store { .. } | Stmt::Let { .. } | Stmt::Assign { .. } => false,
    })
}
