//! The alexc runtime: executes a compiled model for inference and training.
//!
//! [`Runtime::new`] takes a parsed model, runs the pass pipeline (inference
//! or training, fused or not), lowers every node to kernel IR, resolves
//! where each kernel parameter lives — the arena of intermediates laid out
//! by the memory plan, a workspace for kernels' scratch, or an external
//! buffer (images, labels, the learning rate, dropout masks, parameters,
//! momentum) — checks every such binding against the kernel's declaration,
//! and compiles the kernels with a [`Backend`]. Memory is allocated once.
//!
//! Then [`Runtime::infer`] and [`Runtime::train_step`] check what the
//! caller passes (shape, labels in range, a finite learning rate) before any
//! kernel runs, and the state (parameters and momentum) can be loaded,
//! initialized and saved (safetensors, written atomically).

mod backend;
#[cfg(feature = "llvm")]
mod llvm;

use std::collections::BTreeMap;
use std::path::Path;

use alexc_ir::{DType as IrDType, DropoutAttrs, Graph, Op, ValueId};
use alexc_kernel::{DType, Kernel};
use alexc_lower::{lower_node, Arg, LowerOptions};
use alexc_passes::mem_plan::MemoryPlan;
use alexc_passes::{default_pipeline, PipelineMode, PipelineOptions, TrainingOptions};
use alexc_tensor::{Tensor, Weights};

pub use backend::{
    read_host, Backend, Binding, EvalBackend, Executable, ExternalStore, HostView, Memory, Region,
    StageData,
};
#[cfg(feature = "llvm")]
pub use llvm::{write_aot, AotArtifacts, AotBackend, LlvmBackend};

/// Everything that can go wrong, as the caller sees it.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("compiling the model: {0}")]
    Compile(String),
    #[error("`{name}`: expected shape {expected:?}, got {found:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("label {label} of sample {sample} is outside 0..{classes}")]
    Label {
        sample: usize,
        label: i64,
        classes: usize,
    },
    #[error("the learning rate {0} is not finite")]
    LearningRate(f32),
    #[error("{0}")]
    Weights(String),
    #[error("`{0}` needs a training runtime (Options::train)")]
    NotTraining(&'static str),
    #[error(
        "no batch is staged for this training step (call `stage_batch` before `launch_train_step`)"
    )]
    NoBatch,
    #[error("kernel `{kernel}`: {message}")]
    Kernel { kernel: String, message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Dropout masks for a training step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropout {
    /// Masks drawn from this seed, as the reference interpreter draws them.
    Seed(u64),
    /// No dropout: every mask is all ones (for overfitting one batch, and
    /// for cross-checks against frameworks without shared random streams).
    Off,
}

/// How to compile a model (the batch size is the model's, bound when it
/// was loaded).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Options {
    /// Build the training graph (forward, loss, backward, SGD updates).
    pub train: bool,
    pub no_fuse: bool,
    /// Lowering choices; `None`: what the backend prefers
    /// ([`Backend::lower_options`], e.g. the host's vector width).
    pub lower: Option<LowerOptions>,
    /// Passes of the pipeline to skip (by name, as `--disable-pass`).
    pub disabled_passes: std::collections::BTreeSet<String>,
}

/// One kernel launch.
#[derive(Clone, Debug)]
struct Step {
    kernel: usize,
    bindings: Vec<Binding>,
    /// The graph node this kernel implements (one node may lower to several
    /// kernels).
    node: String,
}

/// Where the time of executions went, per kernel launch, accumulated since
/// profiling was switched on (see [`Runtime::set_profiling`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// How many executions (`infer` or `train_step` calls) were timed.
    pub runs: u64,
    /// One entry per kernel launch, in execution order.
    pub launches: Vec<LaunchProfile>,
}

/// One kernel launch's accumulated time and its static costs.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchProfile {
    /// The graph node (after fusion) the kernel belongs to.
    pub node: String,
    /// The node's operation (`conv_relu`, `lrn_max_pool_backward`, …).
    pub op: String,
    pub kernel: String,
    /// Total time over all timed runs.
    pub seconds: f64,
    /// Floating-point operations of one run of this launch, counting a
    /// multiply-accumulate as two; only convolutions and linear layers (and
    /// their backward passes) are counted, the kernels a GFLOP/s figure means
    /// something for. A backward node's count is split between its `_dx`
    /// and `_dw` GEMMs; any other node's goes to its first kernel.
    pub flops: u64,
    /// Bytes of the kernel's parameters (each buffer counted once, read or
    /// written): the compulsory memory traffic of one run.
    pub bytes: u64,
}

/// A compiled model with its memory.
pub struct Runtime {
    graph: Graph,
    plan: MemoryPlan,
    train: bool,
    kernels: Vec<Kernel>,
    steps: Vec<Step>,
    exec: Box<dyn Executable>,
    arena: Vec<f32>,
    workspace: Vec<f32>,
    external: Vec<ExternalStore>,
    /// External node name → slot in `external`.
    slots: BTreeMap<String, usize>,
    outputs: Vec<(Binding, Vec<usize>)>,
    /// Per-step accumulated time while profiling; `None` when off.
    timings: Option<Vec<std::time::Duration>>,
    timed_runs: u64,
    /// The next batch ([`Runtime::stage_batch`]), per external slot: the
    /// host copy that becomes the slot's value when a step starts, and
    /// whether it holds a batch not yet used. The buffers swap with the
    /// external ones, so staging allocates only once.
    staged: Vec<Staged>,
    /// A step launched whose loss has not been read ([`Runtime::wait_loss`]).
    pending_loss: bool,
}

/// One staged external buffer (see `Runtime::staged`).
#[derive(Debug)]
struct Staged {
    slot: usize,
    data: ExternalStore,
    ready: bool,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("model", &self.graph.name)
            .field("train", &self.train)
            .field("kernels", &self.kernels.len())
            .field("arena_bytes", &self.plan.arena_bytes)
            .finish()
    }
}

fn kernel_dtype(d: IrDType) -> DType {
    match d {
        IrDType::F32 => DType::F32,
        IrDType::I64 => DType::I64,
    }
}

fn compile_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Compile(e.to_string())
}

impl Runtime {
    /// Compiles `model` (at the batch size it was loaded with) with `backend`.
    pub fn new(
        model: &alexc_frontend::Model,
        options: &Options,
        backend: &dyn Backend,
    ) -> Result<Runtime, RuntimeError> {
        let mut graph = model.graph.clone();
        let model = &model.spec;
        let pipeline = PipelineOptions {
            mode: if options.train {
                PipelineMode::Training
            } else {
                PipelineMode::Inference
            },
            training: TrainingOptions {
                momentum: model.training.momentum,
                weight_decay: model.training.weight_decay,
                convention: match model.training.convention {
                    alexc_frontend::format::SgdConventionSpec::Paper => {
                        alexc_ir::SgdConvention::Paper
                    }
                    alexc_frontend::format::SgdConventionSpec::Pytorch => {
                        alexc_ir::SgdConvention::Pytorch
                    }
                },
            },
            no_fuse: options.no_fuse,
            disabled: options.disabled_passes.clone(),
            verify_each: true,
            ..PipelineOptions::default()
        };
        let ctx = default_pipeline(pipeline)
            .run(&mut graph)
            .map_err(compile_err)?;
        let plan = ctx
            .plan
            .ok_or_else(|| compile_err("the pipeline made no memory plan"))?;

        // External buffers: every source node, zero-filled.
        let mut external = Vec::new();
        let mut slots = BTreeMap::new();
        for id in graph.node_ids() {
            let node = &graph[id];
            if node.op.is_source() {
                let ty = &node.outputs[0];
                let n = ty.shape.elements();
                slots.insert(node.name.clone(), external.len());
                external.push(match ty.dtype {
                    IrDType::F32 => ExternalStore::F32(vec![0.0; n]),
                    IrDType::I64 => ExternalStore::I64(vec![0; n]),
                });
            }
        }
        let mut rt = Runtime {
            graph,
            plan,
            train: options.train,
            kernels: Vec::new(),
            steps: Vec::new(),
            exec: Box::new(NoKernels),
            arena: Vec::new(),
            workspace: Vec::new(),
            external,
            slots,
            outputs: Vec::new(),
            timings: None,
            timed_runs: 0,
            staged: Vec::new(),
            pending_loss: false,
        };
        if rt.plan.arena_bytes % 4 != 0 {
            return Err(compile_err("the arena size is not a multiple of 4 bytes"));
        }
        rt.arena = vec![0.0; (rt.plan.arena_bytes / 4) as usize];
        let mut workspace = 0usize;
        let lower = options
            .lower
            .clone()
            .unwrap_or_else(|| backend.lower_options());
        for name in rt.plan.order.clone() {
            let id = rt
                .graph
                .find(&name)
                .ok_or_else(|| compile_err(format!("planned node `{name}` is missing")))?;
            let operands = rt.graph.operands(id);
            for lowered in lower_node(&rt.graph, id, &lower).map_err(compile_err)? {
                let mut bindings = Vec::with_capacity(lowered.args.len());
                let mut ws_offset = 0usize;
                for arg in &lowered.args {
                    let b = match *arg {
                        Arg::Operand(i) => {
                            let v = *operands
                                .get(i)
                                .ok_or_else(|| compile_err(format!("{name}: no operand {i}")))?;
                            rt.value_binding(v)?
                        }
                        Arg::Result(i) => rt.value_binding(ValueId::new(id, i as u16))?,
                        Arg::Workspace { elements } => {
                            let b = Binding {
                                region: Region::Workspace,
                                offset: ws_offset,
                                len: elements,
                                dtype: DType::F32,
                            };
                            ws_offset += elements;
                            b
                        }
                    };
                    bindings.push(b);
                }
                workspace = workspace.max(ws_offset);
                let kernel = merge_aliases(lowered.kernel, &mut bindings)?;
                // Generated code does no bounds checks: it relies on the
                // verifier's proof that every access is in bounds.
                alexc_kernel::verify(&kernel).map_err(|errors| {
                    let first = errors.first().map(ToString::to_string).unwrap_or_default();
                    compile_err(format!(
                        "kernel `{}` fails verification ({} errors; first: {first})",
                        kernel.name,
                        errors.len()
                    ))
                })?;
                rt.check_bindings(&kernel, &bindings)?;
                rt.steps.push(Step {
                    kernel: rt.kernels.len(),
                    bindings,
                    node: name.clone(),
                });
                rt.kernels.push(kernel);
            }
        }
        rt.workspace = vec![0.0; workspace];
        // Recheck the workspace bindings now that its size is known.
        for step in &rt.steps {
            rt.check_bindings(&rt.kernels[step.kernel], &step.bindings)?;
        }
        let outputs = rt.graph.outputs().to_vec();
        for v in outputs {
            let shape = rt
                .graph
                .value_type(v)
                .map(|t| t.shape.dims().to_vec())
                .unwrap_or_default();
            let b = rt.value_binding(v)?;
            rt.outputs.push((b, shape));
        }
        rt.exec = backend.compile(&rt.kernels)?;
        tracing::info!(
            kernels = rt.kernels.len(),
            arena = rt.plan.arena_bytes,
            workspace,
            "model compiled"
        );
        Ok(rt)
    }

    /// Where value `v` lives.
    fn value_binding(&self, v: ValueId) -> Result<Binding, RuntimeError> {
        let node = self
            .graph
            .get(v.node)
            .ok_or_else(|| compile_err(format!("no node {}", v.node)))?;
        let ty = node
            .outputs
            .get(v.output as usize)
            .ok_or_else(|| compile_err(format!("no value {v}")))?;
        let (len, dtype) = (ty.shape.elements(), kernel_dtype(ty.dtype));
        if let Some(&slot) = self.slots.get(&node.name) {
            return Ok(Binding {
                region: Region::External(slot),
                offset: 0,
                len,
                dtype,
            });
        }
        let buf = self
            .plan
            .buffer(v)
            .ok_or_else(|| compile_err(format!("{v} ({}) has no buffer", node.name)))?;
        let offset = buf
            .offset
            .ok_or_else(|| compile_err(format!("{v} ({}) is written in place", node.name)))?;
        if offset % 4 != 0 || dtype != DType::F32 {
            return Err(compile_err(format!(
                "{v} ({}): arena buffers are f32 at 4-byte offsets",
                node.name
            )));
        }
        Ok(Binding {
            region: Region::Arena,
            offset: (offset / 4) as usize,
            len,
            dtype,
        })
    }

    /// Every binding has the kernel parameter's dtype and length and lies
    /// inside its region: what generated code relies on.
    fn check_bindings(&self, kernel: &Kernel, bindings: &[Binding]) -> Result<(), RuntimeError> {
        let params: Vec<_> = kernel.params().collect();
        if params.len() != bindings.len() {
            return Err(compile_err(format!(
                "kernel `{}` has {} parameters but {} bindings",
                kernel.name,
                params.len(),
                bindings.len()
            )));
        }
        for ((_, decl), b) in params.iter().zip(bindings) {
            let region_len = match b.region {
                Region::Arena => self.arena.len(),
                Region::Workspace => usize::MAX, // checked again once sized
                Region::External(i) => self.external.get(i).map_or(0, ExternalStore::len),
            };
            let region_len = if b.region == Region::Workspace && !self.workspace.is_empty() {
                self.workspace.len()
            } else {
                region_len
            };
            if decl.dtype != b.dtype
                || decl.elements() != b.len
                || b.offset
                    .checked_add(b.len)
                    .is_none_or(|end| end > region_len)
            {
                return Err(compile_err(format!(
                    "kernel `{}`: parameter `{}` ({} {:?}) cannot bind {b:?}",
                    kernel.name, decl.name, decl.dtype, decl.shape
                )));
            }
        }
        Ok(())
    }

    /// The compiled graph (after the pipeline).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The memory plan.
    pub fn plan(&self) -> &MemoryPlan {
        &self.plan
    }

    /// The kernels, in launch order of their first use.
    pub fn kernels(&self) -> &[Kernel] {
        &self.kernels
    }

    fn set_f32(&mut self, name: &str, data: &[f32], shape: &[usize]) -> Result<(), RuntimeError> {
        let id = self
            .graph
            .find(name)
            .ok_or_else(|| RuntimeError::Internal(format!("no input `{name}`")))?;
        let want = self.graph[id].outputs[0].shape.dims().to_vec();
        if want != shape {
            return Err(RuntimeError::Shape {
                name: name.to_string(),
                expected: want,
                found: shape.to_vec(),
            });
        }
        let slot = self.slots.get(name).copied();
        match slot.and_then(|s| self.external.get_mut(s)) {
            Some(ExternalStore::F32(v)) if v.len() == data.len() => {
                v.copy_from_slice(data);
                self.uploaded(slot.unwrap_or_default())
            }
            _ => Err(RuntimeError::Internal(format!(
                "`{name}` is not an f32 external buffer of {} elements",
                data.len()
            ))),
        }
    }

    /// The shape `[N, C, H, W]` of the image input `infer` and `train_step`
    /// take.
    pub fn image_shape(&self) -> Result<Vec<usize>, RuntimeError> {
        let name = self.image_input()?;
        let id = self
            .graph
            .find(&name)
            .ok_or_else(|| RuntimeError::Internal(format!("no input `{name}`")))?;
        Ok(self.graph[id].outputs[0].shape.dims().to_vec())
    }

    /// The number of classes (the logits' second dimension).
    pub fn classes(&self) -> usize {
        let logits = usize::from(self.train);
        self.outputs
            .get(logits)
            .and_then(|(_, s)| s.get(1).copied())
            .unwrap_or(0)
    }

    /// The name of the image input (the first f32 input).
    fn image_input(&self) -> Result<String, RuntimeError> {
        self.graph
            .node_ids()
            .find(|&id| matches!(&self.graph[id].op, Op::Input(a) if a.dtype == IrDType::F32 && self.graph[id].name != "lr"))
            .map(|id| self.graph[id].name.clone())
            .ok_or_else(|| RuntimeError::Internal("the model has no image input".into()))
    }

    fn execute(&mut self) -> Result<(), RuntimeError> {
        let mut memory = Memory {
            arena: &mut self.arena,
            workspace: &mut self.workspace,
            external: &mut self.external,
        };
        match &mut self.timings {
            None => {
                for step in &self.steps {
                    self.exec.run(step.kernel, &mut memory, &step.bindings)?;
                }
            }
            Some(timings) => {
                for (step, total) in self.steps.iter().zip(timings.iter_mut()) {
                    let start = std::time::Instant::now();
                    self.exec.run(step.kernel, &mut memory, &step.bindings)?;
                    self.exec.synchronize()?;
                    *total += start.elapsed();
                }
                self.timed_runs += 1;
            }
        }
        Ok(())
    }

    /// Switches per-kernel timing on (clearing what was measured) or off.
    /// The cost is two clock reads per kernel launch, and on a GPU a
    /// synchronization after each (so launches no longer overlap the
    /// host's work: time whole steps with profiling off).
    pub fn set_profiling(&mut self, on: bool) {
        self.timings = on.then(|| vec![std::time::Duration::ZERO; self.steps.len()]);
        self.timed_runs = 0;
    }

    /// What profiling measured so far (empty launches when it is off).
    pub fn profile(&self) -> Profile {
        let Some(timings) = &self.timings else {
            return Profile::default();
        };
        // A backward node's multiply-accumulates are split evenly between
        // its input- and weight-gradient GEMMs (each costs one forward
        // pass); any other node's go to its first kernel.
        let is_gemm = |name: &str| name.ends_with("_dx") || name.ends_with("_dw");
        let mut gemms: BTreeMap<&str, u64> = BTreeMap::new();
        for step in &self.steps {
            if is_gemm(&self.kernels[step.kernel].name) {
                *gemms.entry(step.node.as_str()).or_default() += 1;
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        let launches = self
            .steps
            .iter()
            .zip(timings)
            .map(|(step, time)| {
                let id = self.graph.find(&step.node);
                let total = id.map_or(0, |id| 2 * alexc_ir::node_stats(&self.graph, id).macs);
                let kernel = &self.kernels[step.kernel].name;
                let flops = match gemms.get(step.node.as_str()) {
                    Some(&n) if is_gemm(kernel) => total / n.max(1),
                    Some(_) => 0,
                    None if seen.insert(step.node.clone()) => total,
                    None => 0,
                };
                LaunchProfile {
                    node: step.node.clone(),
                    op: id.map_or_else(String::new, |id| self.graph[id].op.name().to_string()),
                    kernel: self.kernels[step.kernel].name.clone(),
                    seconds: time.as_secs_f64(),
                    flops,
                    bytes: step
                        .bindings
                        .iter()
                        .map(|b| b.len as u64 * dtype_bytes(b.dtype))
                        .sum(),
                }
            })
            .collect();
        Profile {
            runs: self.timed_runs,
            launches,
        }
    }

    /// Peak bytes of intermediates (the memory plan's arena) plus the
    /// kernels' workspace: the memory a run needs besides inputs and state.
    pub fn working_bytes(&self) -> u64 {
        self.plan.arena_bytes + self.workspace.len() as u64 * 4
    }

    /// Bytes of external buffers: inputs, parameters, momentum, masks.
    pub fn external_bytes(&self) -> u64 {
        self.external
            .iter()
            .map(|e| e.len() as u64 * dtype_bytes(e.dtype()))
            .sum()
    }

    fn host(&self) -> HostView<'_> {
        HostView {
            arena: &self.arena,
            workspace: &self.workspace,
            external: &self.external,
        }
    }

    /// Tells the backend that external buffer `slot` changed on the host.
    fn uploaded(&mut self, slot: usize) -> Result<(), RuntimeError> {
        let host = HostView {
            arena: &self.arena,
            workspace: &self.workspace,
            external: &self.external,
        };
        self.exec.upload(&host, slot)
    }

    fn output(&self, i: usize) -> Result<Tensor<f32>, RuntimeError> {
        let (b, shape) = self
            .outputs
            .get(i)
            .ok_or_else(|| RuntimeError::Internal(format!("no output {i}")))?;
        let data = self.exec.read(&self.host(), b)?;
        Tensor::new(shape.clone(), data).map_err(|e| RuntimeError::Internal(e.to_string()))
    }

    /// Runs inference on `images` `[N, C, H, W]` (N = the compiled batch);
    /// returns the logits.
    pub fn infer(&mut self, images: &Tensor<f32>) -> Result<Tensor<f32>, RuntimeError> {
        let input = self.image_input()?;
        self.set_f32(&input, images.data(), images.shape())?;
        self.execute()?;
        let logits = if self.train { 1 } else { 0 };
        self.output(logits)
    }

    /// One training step: forward, loss, backward, SGD update of the state
    /// in place. Dropout masks are drawn from `seed` (the same streams as the
    /// reference interpreter's `Mode::Train { seed }`). Returns the loss.
    pub fn train_step(
        &mut self,
        images: &Tensor<f32>,
        labels: &Tensor<i64>,
        lr: f32,
        seed: u64,
    ) -> Result<f32, RuntimeError> {
        self.train_step_with(images, labels, lr, Dropout::Seed(seed))
    }

    /// [`Runtime::train_step`] with a choice of dropout masks.
    pub fn train_step_with(
        &mut self,
        images: &Tensor<f32>,
        labels: &Tensor<i64>,
        lr: f32,
        dropout: Dropout,
    ) -> Result<f32, RuntimeError> {
        if !self.train {
            return Err(RuntimeError::NotTraining("train_step"));
        }
        if !lr.is_finite() {
            return Err(RuntimeError::LearningRate(lr));
        }
        self.stage_batch(images, labels)?;
        self.launch_train_step(lr, dropout)?;
        self.wait_loss()
    }

    /// Hands the runtime the batch of the next training step, checked
    /// (shape, labels in range) and copied now, so that a backend with
    /// memory of its own can move it there while the current step still
    /// runs: on a GPU, through pinned memory on a copy stream that overlaps
    /// the kernels. The next [`Runtime::launch_train_step`] uses it.
    ///
    /// The pipelined training loop is: `stage_batch(first)`, then per step
    /// `launch_train_step`, `stage_batch(next)`, `wait_loss` —
    /// [`Runtime::train_step`] is the three calls in a row, without overlap.
    /// Staging again before a launch replaces the staged batch.
    pub fn stage_batch(
        &mut self,
        images: &Tensor<f32>,
        labels: &Tensor<i64>,
    ) -> Result<(), RuntimeError> {
        if !self.train {
            return Err(RuntimeError::NotTraining("stage_batch"));
        }
        let input = self.image_input()?;
        let want = self.image_shape()?;
        if images.shape() != want.as_slice() {
            return Err(RuntimeError::Shape {
                name: input,
                expected: want,
                found: images.shape().to_vec(),
            });
        }
        let classes = self.classes();
        let labels_slot = self.slot("labels")?;
        let n = self.external.get(labels_slot).map_or(0, ExternalStore::len);
        if labels.shape() != [n] {
            return Err(RuntimeError::Shape {
                name: "labels".into(),
                expected: vec![n],
                found: labels.shape().to_vec(),
            });
        }
        if let Some((sample, &label)) = labels
            .data()
            .iter()
            .enumerate()
            .find(|(_, &l)| l < 0 || l as usize >= classes)
        {
            return Err(RuntimeError::Label {
                sample,
                label,
                classes,
            });
        }
        let images_slot = self.slot(&input)?;
        self.stage(images_slot, StageData::F32(images.data()))?;
        self.stage(labels_slot, StageData::I64(labels.data()))
    }

    /// Copies `data` into the staging buffer of external `slot` and offers
    /// it to the backend.
    fn stage(&mut self, slot: usize, data: StageData<'_>) -> Result<(), RuntimeError> {
        let i = match self.staged.iter().position(|s| s.slot == slot) {
            Some(i) => i,
            None => {
                let current = self
                    .external
                    .get(slot)
                    .ok_or_else(|| RuntimeError::Internal(format!("no external buffer {slot}")))?;
                self.staged.push(Staged {
                    slot,
                    data: current.clone(),
                    ready: false,
                });
                self.staged.len() - 1
            }
        };
        let staged = &mut self.staged[i];
        match (&mut staged.data, data) {
            (ExternalStore::F32(v), StageData::F32(d)) if v.len() == d.len() => {
                v.copy_from_slice(d)
            }
            (ExternalStore::I64(v), StageData::I64(d)) if v.len() == d.len() => {
                v.copy_from_slice(d)
            }
            _ => {
                return Err(RuntimeError::Internal(format!(
                    "external buffer {slot} does not match its staged data"
                )))
            }
        }
        staged.ready = true;
        self.exec.stage(slot, &staged.data)?;
        Ok(())
    }

    /// The staged buffers become the external ones (host and backend).
    /// Returns whether anything was staged.
    fn commit_staged(&mut self) -> Result<bool, RuntimeError> {
        let mut any = false;
        for i in 0..self.staged.len() {
            if !self.staged[i].ready {
                continue;
            }
            let slot = self.staged[i].slot;
            let external = self
                .external
                .get_mut(slot)
                .ok_or_else(|| RuntimeError::Internal(format!("no external buffer {slot}")))?;
            std::mem::swap(external, &mut self.staged[i].data);
            self.staged[i].ready = false;
            let host = HostView {
                arena: &self.arena,
                workspace: &self.workspace,
                external: &self.external,
            };
            self.exec.commit_staged(&host, slot)?;
            any = true;
        }
        Ok(any)
    }

    /// Starts a training step on the staged batch ([`Runtime::stage_batch`]):
    /// forward, loss, backward, SGD update, with learning rate `lr` and
    /// `dropout`'s masks. On a GPU it returns once the kernels are queued;
    /// [`Runtime::wait_loss`] waits for the loss.
    pub fn launch_train_step(&mut self, lr: f32, dropout: Dropout) -> Result<(), RuntimeError> {
        if !self.train {
            return Err(RuntimeError::NotTraining("launch_train_step"));
        }
        if !lr.is_finite() {
            return Err(RuntimeError::LearningRate(lr));
        }
        if !self.commit_staged()? {
            return Err(RuntimeError::NoBatch);
        }
        self.set_f32("lr", &[lr], &[])?;
        for id in self
            .graph
            .nodes_where(|op| matches!(op, Op::DropoutMask(_)))
        {
            let Op::DropoutMask(a) = &self.graph[id].op else {
                continue;
            };
            let mask = match dropout {
                Dropout::Seed(seed) => alexc_interp::node_dropout_mask::<f32>(
                    &a.key,
                    seed,
                    a.shape.dims(),
                    &DropoutAttrs { p: a.p },
                ),
                Dropout::Off => Tensor::full(a.shape.dims().to_vec(), 1.0).map_err(Into::into),
            }
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
            let (name, shape) = (self.graph[id].name.clone(), a.shape.dims().to_vec());
            self.set_f32(&name, mask.data(), &shape)?;
        }
        self.execute()?;
        self.pending_loss = true;
        Ok(())
    }

    /// The loss of the step [`Runtime::launch_train_step`] started, once
    /// it is computed.
    pub fn wait_loss(&mut self) -> Result<f32, RuntimeError> {
        if !self.pending_loss {
            return Err(RuntimeError::Internal(
                "wait_loss without a launched training step".into(),
            ));
        }
        self.pending_loss = false;
        let loss = self.output(0)?;
        loss.data()
            .first()
            .copied()
            .ok_or_else(|| RuntimeError::Internal("empty loss".into()))
    }

    /// The external slot of source node `name`.
    fn slot(&self, name: &str) -> Result<usize, RuntimeError> {
        self.slots
            .get(name)
            .copied()
            .ok_or_else(|| RuntimeError::Internal(format!("no external buffer `{name}`")))
    }

    /// The state's names and shapes: parameters, and for training runtimes
    /// the momentum buffers.
    pub fn state_shapes(&self) -> Vec<(String, alexc_ir::Shape)> {
        alexc_tensor::expected_parameters(&self.graph)
    }

    /// Loads parameters (and, when present, momentum buffers) after checking
    /// every name and shape; one error lists every difference. Momentum
    /// buffers a training runtime needs but `weights` lacks start at zero.
    pub fn load_state(&mut self, weights: &Weights) -> Result<(), RuntimeError> {
        let expected = self.state_shapes();
        let optional: Vec<&str> = self
            .graph
            .node_ids()
            .filter(|&id| {
                matches!(self.graph[id].op, Op::Momentum(_))
                    && !weights.contains_key(&self.graph[id].name)
            })
            .map(|id| self.graph[id].name.as_str())
            .collect();
        let required: Vec<_> = expected
            .into_iter()
            .filter(|(n, _)| !optional.contains(&n.as_str()))
            .collect();
        alexc_tensor::check_weights(&required, weights)
            .map_err(|m| RuntimeError::Weights(m.to_string()))?;
        let mut changed = Vec::new();
        for (name, t) in weights {
            let slot = self.slots.get(name).copied();
            if let Some(ExternalStore::F32(v)) = slot.and_then(|s| self.external.get_mut(s)) {
                v.copy_from_slice(t.data());
                changed.extend(slot);
            }
        }
        for name in optional {
            let slot = self.slots.get(name).copied();
            if let Some(ExternalStore::F32(v)) = slot.and_then(|s| self.external.get_mut(s)) {
                v.fill(0.0);
                changed.extend(slot);
            }
        }
        for slot in changed {
            self.uploaded(slot)?;
        }
        Ok(())
    }

    /// Initializes the state from the model's initializers.
    pub fn init_state(&mut self, seed: u64, base_dir: &Path) -> Result<(), RuntimeError> {
        let weights = alexc_tensor::init_parameters(&self.graph, seed, base_dir)
            .map_err(|e| RuntimeError::Weights(e.to_string()))?;
        self.load_state(&weights)
    }

    /// A copy of the state (parameters and momentum).
    pub fn state(&self) -> Weights {
        let mut out = Weights::new();
        for (name, shape) in self.state_shapes() {
            let Some(&slot) = self.slots.get(&name) else {
                continue;
            };
            let binding = Binding {
                region: Region::External(slot),
                offset: 0,
                len: shape.elements(),
                dtype: DType::F32,
            };
            let data = self.exec.read(&self.host(), &binding);
            if let Ok(t) = data.and_then(|d| {
                Tensor::new(shape.dims().to_vec(), d)
                    .map_err(|e| RuntimeError::Internal(e.to_string()))
            }) {
                out.insert(name, t);
            }
        }
        out
    }

    /// Saves the state as safetensors, atomically (temporary file + rename).
    pub fn save_state(&self, path: &Path) -> Result<(), RuntimeError> {
        alexc_tensor::save_weights(path, &self.state())
            .map_err(|e| RuntimeError::Weights(e.to_string()))
    }
}

/// Removes aliasing between a kernel's parameters. Where the memory plan
/// writes a result over an operand (an elementwise op in place), the two
/// parameters are bound to the same elements; they are merged into one
/// read-write parameter, so no backend ever sees two parameters that
/// overlap while one is written (LLVM's `noalias` stays true). Any other
/// overlap with a write is a planning bug and an error.
pub fn merge_aliases(
    mut kernel: Kernel,
    bindings: &mut Vec<Binding>,
) -> Result<Kernel, RuntimeError> {
    use alexc_kernel::{Access, BufferKind};
    loop {
        let params: Vec<(alexc_kernel::BufId, bool)> = kernel
            .params()
            .map(|(id, d)| {
                (
                    id,
                    matches!(d.kind, BufferKind::Param(Access::Write | Access::ReadWrite)),
                )
            })
            .collect();
        let overlap = |a: &Binding, b: &Binding| {
            a.region == b.region && a.offset < b.offset + b.len && b.offset < a.offset + a.len
        };
        let mut found = None;
        'search: for i in 0..bindings.len() {
            for j in i + 1..bindings.len() {
                if overlap(&bindings[i], &bindings[j]) && (params[i].1 || params[j].1) {
                    found = Some((i, j));
                    break 'search;
                }
            }
        }
        let Some((i, j)) = found else {
            return Ok(kernel);
        };
        if bindings[i] != bindings[j] {
            return Err(compile_err(format!(
                "kernel `{}`: parameters {i} and {j} overlap partially ({:?} and {:?})",
                kernel.name, bindings[i], bindings[j]
            )));
        }
        kernel = kernel
            .merge_params(params[i].0, params[j].0)
            .map_err(compile_err)?;
        bindings.remove(j);
    }
}

/// Stands in for the backend's executable while `Runtime::new` checks the
/// bindings; replaced before `new` returns.
struct NoKernels;

impl Executable for NoKernels {
    fn run(
        &self,
        index: usize,
        _memory: &mut Memory<'_>,
        _bindings: &[Binding],
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Internal(format!(
            "kernel {index} called before compilation"
        )))
    }
}

fn dtype_bytes(d: DType) -> u64 {
    match d {
        DType::F32 => 4,
        DType::I64 => 8,
    }
}
