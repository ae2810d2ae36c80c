//! Running a case's graph on a backend, the way the runtime runs a plan.
//!
//! [`layout`] lowers every non-source node of the graph, in topological
//! order, with [`lower_node`], and gives every value a place in memory:
//!
//! - graph inputs are external buffers (`Region::External`), as the
//!   runtime binds inputs, parameters and momentum — except an input that
//!   an elementwise result is written over, which lives in the arena like
//!   the intermediate it stands for;
//! - results live in the arena, except where they alias an operand: the
//!   results an op updates in place (`Op::in_place`, the SGD step) share
//!   their operand's buffer, and so does the result of an elementwise op
//!   when the case asks for it or, in a chain, when its first operand is an
//!   intermediate that dies there (the memory plan's rule);
//! - each kernel's workspaces lie in the workspace region, from offset 0
//!   for every launch, as the runtime lays them out.
//!
//! Every buffer is surrounded by guard elements. Parameters a launch binds
//! to the same buffer, one of them written, are merged into one read-write
//! parameter by the runtime's own `merge_aliases`, so that a backend never
//! sees two overlapping parameters.
//!
//! [`execute`] fills all memory with a sentinel NaN, copies the inputs in,
//! refills the workspace before each launch and runs the kernels in order.
//! Afterwards every guard must still hold the sentinel (no out-of-bounds
//! write), every result element must have been written, and every input
//! the graph does not update in place must be unchanged.

use std::collections::HashMap;

use alexc_ir::{Graph, NodeId, OpPattern, ValueId};
use alexc_kernel::{DType, HostBuffer, Kernel};
use alexc_lower::{lower_node, Arg, LowerOptions};
use alexc_runtime::{Binding, Executable, ExternalStore, Memory, Region};

use crate::SuiteError;

/// Guard elements around every buffer; buffers also start at multiples of
/// it (64 bytes of f32), as the memory plan aligns them.
const GUARD: usize = 16;
/// What memory holds before anything is written: a quiet NaN with a
/// payload no computation produces from the suite's inputs.
const SENTINEL: f32 = f32::from_bits(0x7FC5_A5A5);
const SENTINEL_I64: i64 = -0x5A5A_5A5A_5A5A_5A5B;

fn is_sentinel(v: f32) -> bool {
    v.to_bits() == SENTINEL.to_bits()
}

/// One kernel launch.
#[derive(Clone, Debug)]
struct Launch {
    /// Index into [`Layout::kernels`].
    kernel: usize,
    /// The node the kernel belongs to.
    node: String,
    bindings: Vec<Binding>,
}

/// An input of the graph and where it lives.
#[derive(Clone, Debug)]
struct Placed {
    name: String,
    binding: Binding,
    /// Whether a result is written over it (then it may change).
    overwritten: bool,
}

/// A graph lowered with one option set and laid out in memory.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// The kernels, renamed with the caller's prefix.
    pub kernels: Vec<Kernel>,
    launches: Vec<Launch>,
    arena: usize,
    /// Where values live in the arena (the rest is guard).
    arena_values: Vec<(usize, usize)>,
    workspace: usize,
    /// dtype and length (guards included) of each external buffer.
    externals: Vec<(DType, usize)>,
    inputs: Vec<Placed>,
    outputs: Vec<Binding>,
    /// Verifier errors, one entry per kernel that does not verify.
    pub unverified: Vec<String>,
}

fn layout_error(graph: &Graph, id: NodeId, message: impl Into<String>) -> SuiteError {
    SuiteError::Layout {
        node: graph
            .get(id)
            .map_or_else(|| id.to_string(), |n| n.name.clone()),
        message: message.into(),
    }
}

/// Which value's buffer each aliasing result shares, and the values that
/// elementwise results are written over (these must live in the arena).
/// `forced`: the only computing node writes result 0 over operand `i`;
/// otherwise elementwise nodes reuse their first operand that is an
/// intermediate dying there.
fn aliases(
    graph: &Graph,
    order: &[NodeId],
    forced: Option<usize>,
) -> Result<(HashMap<ValueId, ValueId>, Vec<ValueId>), SuiteError> {
    let mut uses: HashMap<ValueId, usize> = HashMap::new();
    for &id in order {
        for v in graph.operands(id) {
            *uses.entry(v).or_default() += 1;
        }
    }
    for &v in graph.outputs() {
        *uses.entry(v).or_default() += 1;
    }
    let mut home: HashMap<ValueId, ValueId> = HashMap::new();
    let mut in_arena = Vec::new();
    let root = |home: &HashMap<ValueId, ValueId>, v: ValueId| home.get(&v).copied().unwrap_or(v);
    for &id in order {
        let node = &graph[id];
        if node.op.is_source() {
            continue;
        }
        let operands = graph.operands(id);
        for &(r, o) in node.op.in_place() {
            let v = *operands
                .get(o)
                .ok_or_else(|| layout_error(graph, id, format!("no operand {o}")))?;
            home.insert(ValueId::new(id, r as u16), root(&home, v));
        }
        if node.op.pattern() != OpPattern::ElemWise || node.outputs.len() != 1 {
            continue;
        }
        let over =
            match forced {
                Some(i) => Some(*operands.get(i).ok_or_else(|| {
                    layout_error(graph, id, format!("no operand {i} to write over"))
                })?),
                None => operands.iter().copied().find(|&v| {
                    !graph[v.node].op.is_source()
                        && uses.get(&v) == Some(&1)
                        && graph.value_type(v) == Some(&node.outputs[0])
                }),
            };
        if let Some(v) = over {
            let r = root(&home, v);
            home.insert(ValueId::new(id, 0), r);
            in_arena.push(r);
        }
    }
    Ok((home, in_arena))
}

/// Lowers `graph` with `options` and lays it out (see the module docs).
/// Kernel names get `prefix`, so that several layouts can share one
/// compiled module.
pub(crate) fn layout(
    graph: &Graph,
    forced_alias: Option<usize>,
    options: &LowerOptions,
    prefix: &str,
) -> Result<Layout, SuiteError> {
    let order = graph.topo_order().map_err(|cycle| SuiteError::Layout {
        node: cycle.first().map(ToString::to_string).unwrap_or_default(),
        message: "the graph has a cycle".into(),
    })?;
    let (home, in_arena) = aliases(graph, &order, forced_alias)?;

    let mut out = Layout {
        kernels: Vec::new(),
        launches: Vec::new(),
        arena: 0,
        arena_values: Vec::new(),
        workspace: 0,
        externals: Vec::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        unverified: Vec::new(),
    };
    let mut slots: HashMap<ValueId, Binding> = HashMap::new();
    for &id in &order {
        let node = &graph[id];
        for (r, ty) in node.outputs.iter().enumerate() {
            let v = ValueId::new(id, r as u16);
            if let Some(root) = home.get(&v) {
                let b = *slots
                    .get(root)
                    .ok_or_else(|| layout_error(graph, id, format!("{root} has no buffer yet")))?;
                slots.insert(v, b);
                continue;
            }
            let len = ty.shape.elements();
            let dtype = match ty.dtype {
                alexc_ir::DType::F32 => DType::F32,
                alexc_ir::DType::I64 => DType::I64,
            };
            let binding = if node.op.is_source() && !(in_arena.contains(&v) && dtype == DType::F32)
            {
                out.externals.push((dtype, len + 2 * GUARD));
                Binding {
                    region: Region::External(out.externals.len() - 1),
                    offset: GUARD,
                    len,
                    dtype,
                }
            } else if dtype == DType::F32 {
                let offset = (out.arena + GUARD).next_multiple_of(GUARD);
                out.arena = offset + len;
                out.arena_values.push((offset, len));
                Binding {
                    region: Region::Arena,
                    offset,
                    len,
                    dtype,
                }
            } else {
                return Err(layout_error(
                    graph,
                    id,
                    "an i64 result cannot live in the arena",
                ));
            };
            slots.insert(v, binding);
            if node.op.is_source() {
                out.inputs.push(Placed {
                    name: node.name.clone(),
                    binding,
                    overwritten: home.values().any(|&r| r == v),
                });
            }
        }
    }
    out.arena += GUARD;

    for &id in &order {
        let node = &graph[id];
        if node.op.is_source() {
            continue;
        }
        let operands = graph.operands(id);
        let lowered = lower_node(graph, id, options).map_err(|source| SuiteError::Lower {
            node: node.name.clone(),
            source,
        })?;
        for lk in lowered {
            let mut kernel = lk.kernel;
            // Reported, but still run: the evaluator checks every access,
            // and the guards catch native code that strays.
            if let Err(errors) = alexc_kernel::verify(&kernel) {
                out.unverified.push(format!(
                    "kernel `{}` of node `{}` does not verify:{}",
                    kernel.name,
                    node.name,
                    errors
                        .iter()
                        .map(|e| format!("\n    {e}"))
                        .collect::<String>()
                ));
            }
            let mut workspace = 0;
            let mut bindings = Vec::with_capacity(lk.args.len());
            for arg in &lk.args {
                let value = match *arg {
                    Arg::Operand(i) => operands.get(i).copied(),
                    Arg::Result(r) => Some(ValueId::new(id, r as u16)),
                    Arg::Workspace { elements } => {
                        let offset = (workspace + GUARD).next_multiple_of(GUARD);
                        workspace = offset + elements;
                        bindings.push(Binding {
                            region: Region::Workspace,
                            offset,
                            len: elements,
                            dtype: DType::F32,
                        });
                        continue;
                    }
                };
                let b = value.and_then(|v| slots.get(&v)).ok_or_else(|| {
                    layout_error(
                        graph,
                        id,
                        format!(
                            "kernel `{}` binds {arg:?}, which has no buffer",
                            kernel.name
                        ),
                    )
                })?;
                bindings.push(*b);
            }
            out.workspace = out.workspace.max(workspace + GUARD);
            kernel = alexc_runtime::merge_aliases(kernel, &mut bindings)
                .map_err(|e| layout_error(graph, id, e.to_string()))?;
            check_bindings(&kernel, &bindings)
                .map_err(|message| layout_error(graph, id, message))?;
            kernel.name = format!("{prefix}{}", kernel.name);
            out.launches.push(Launch {
                kernel: out.kernels.len(),
                node: node.name.clone(),
                bindings,
            });
            out.kernels.push(kernel);
        }
    }
    out.outputs = graph
        .outputs()
        .iter()
        .map(|v| {
            slots
                .get(v)
                .copied()
                .ok_or_else(|| layout_error(graph, v.node, format!("output {v} has no buffer")))
        })
        .collect::<Result<_, _>>()?;
    Ok(out)
}

/// Every binding has its parameter's dtype and length: what generated code
/// relies on (the runtime's check before the first call).
fn check_bindings(kernel: &Kernel, bindings: &[Binding]) -> Result<(), String> {
    for ((_, decl), b) in kernel.params().zip(bindings) {
        if decl.dtype != b.dtype || decl.elements() != b.len {
            return Err(format!(
                "kernel `{}`: parameter `{}` ({} {:?}) is bound to {} elements of {}",
                kernel.name, decl.name, decl.dtype, decl.shape, b.len, b.dtype
            ));
        }
    }
    Ok(())
}

/// The results of one run, and what went wrong besides their values.
#[derive(Clone, Debug)]
pub(crate) struct Executed {
    pub outputs: Vec<Vec<f32>>,
    pub problems: Vec<String>,
}

fn external_sentinel(dtype: DType, len: usize) -> ExternalStore {
    match dtype {
        DType::F32 => ExternalStore::F32(vec![SENTINEL; len]),
        DType::I64 => ExternalStore::I64(vec![SENTINEL_I64; len]),
    }
}

/// Runs `layout` on `exec`, whose kernel `index[i]` is `layout.kernels[i]`,
/// with the case's `inputs`.
pub(crate) fn execute(
    layout: &Layout,
    exec: &dyn Executable,
    index: &[usize],
    inputs: &[(String, HostBuffer)],
) -> Result<Executed, SuiteError> {
    let mut arena = vec![SENTINEL; layout.arena];
    let mut workspace = vec![SENTINEL; layout.workspace];
    let mut external: Vec<ExternalStore> = layout
        .externals
        .iter()
        .map(|&(dtype, len)| external_sentinel(dtype, len))
        .collect();
    for input in &layout.inputs {
        let data = inputs
            .iter()
            .find(|(n, _)| *n == input.name)
            .map(|(_, d)| d)
            .ok_or_else(|| SuiteError::Input(format!("no data for input `{}`", input.name)))?;
        let b = &input.binding;
        let range = b.offset..b.offset + b.len;
        let ok = match (b.region, data) {
            (Region::Arena, HostBuffer::F32(d)) => {
                arena.get_mut(range).map(|s| s.copy_from_slice(d))
            }
            (Region::External(i), HostBuffer::F32(d)) => match external.get_mut(i) {
                Some(ExternalStore::F32(v)) => v.get_mut(range).map(|s| s.copy_from_slice(d)),
                _ => None,
            },
            (Region::External(i), HostBuffer::I64(d)) => match external.get_mut(i) {
                Some(ExternalStore::I64(v)) => v.get_mut(range).map(|s| s.copy_from_slice(d)),
                _ => None,
            },
            _ => None,
        };
        if ok.is_none() || data.len() != b.len {
            return Err(SuiteError::Input(format!(
                "input `{}`: {} {} elements do not fit {b:?}",
                input.name,
                data.len(),
                data.dtype()
            )));
        }
    }

    let mut problems = Vec::new();
    for launch in &layout.launches {
        workspace.fill(SENTINEL);
        let kernel = &layout.kernels[launch.kernel];
        let mut memory = Memory {
            arena: &mut arena,
            workspace: &mut workspace,
            external: &mut external,
        };
        let compiled = index.get(launch.kernel).copied().ok_or_else(|| {
            SuiteError::Input(format!("kernel `{}` was not compiled", kernel.name))
        })?;
        exec.run(compiled, &mut memory, &launch.bindings)
            .map_err(|source| SuiteError::Run {
                kernel: kernel.name.clone(),
                source,
            })?;
        let scratch: Vec<(usize, usize)> = launch
            .bindings
            .iter()
            .filter(|b| b.region == Region::Workspace)
            .map(|b| (b.offset, b.len))
            .collect();
        if let Some(i) = first_guard_hit(&workspace, &scratch) {
            problems.push(format!(
                "`{}` (node `{}`) wrote workspace element {i}, outside its workspaces",
                kernel.name, launch.node
            ));
        }
    }

    if let Some(i) = first_guard_hit(&arena, &layout.arena_values) {
        problems.push(format!("arena element {i}, a guard, was written"));
    }
    for (slot, store) in external.iter().enumerate() {
        let hit = match store {
            ExternalStore::F32(v) => first_guard_hit(v, &[(GUARD, v.len() - 2 * GUARD)]),
            ExternalStore::I64(v) => v
                .iter()
                .enumerate()
                .position(|(i, &x)| (i < GUARD || i >= v.len() - GUARD) && x != SENTINEL_I64),
        };
        if let Some(i) = hit {
            problems.push(format!(
                "external buffer {slot}: guard element {i} was written"
            ));
        }
    }
    let memory = Memory {
        arena: &mut arena,
        workspace: &mut workspace,
        external: &mut external,
    };
    for input in layout.inputs.iter().filter(|p| !p.overwritten) {
        let now = read(&memory, &input.binding);
        let before = inputs
            .iter()
            .find(|(n, _)| *n == input.name)
            .map(|(_, d)| d);
        let same = match (now, before) {
            (Some(HostBuffer::F32(a)), Some(HostBuffer::F32(b))) => {
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            (Some(a), Some(b)) => a == *b,
            _ => false,
        };
        if !same {
            problems.push(format!("input `{}` was modified", input.name));
        }
    }
    let mut outputs = Vec::with_capacity(layout.outputs.len());
    for (k, b) in layout.outputs.iter().enumerate() {
        let Some(HostBuffer::F32(v)) = read(&memory, b) else {
            return Err(SuiteError::Input(format!(
                "output {k} is not an f32 buffer"
            )));
        };
        let unwritten = v.iter().filter(|x| is_sentinel(**x)).count();
        if unwritten > 0 {
            let first = v.iter().position(|x| is_sentinel(*x)).unwrap_or(0);
            problems.push(format!(
                "result {k}: {unwritten} elements never written (the first is {first})"
            ));
        }
        outputs.push(v);
    }
    Ok(Executed { outputs, problems })
}

/// The first element of `v` outside `values` (offset, len) that no longer
/// holds the sentinel.
fn first_guard_hit(v: &[f32], values: &[(usize, usize)]) -> Option<usize> {
    let mut inside = vec![false; v.len()];
    for &(offset, len) in values {
        for flag in inside.iter_mut().skip(offset).take(len) {
            *flag = true;
        }
    }
    v.iter()
        .zip(&inside)
        .position(|(x, &inside)| !inside && !is_sentinel(*x))
}

/// A copy of the elements `b` binds.
fn read(memory: &Memory<'_>, b: &Binding) -> Option<HostBuffer> {
    let range = b.offset..b.offset + b.len;
    match b.region {
        Region::Arena => memory.arena.get(range).map(|s| HostBuffer::F32(s.to_vec())),
        Region::Workspace => memory
            .workspace
            .get(range)
            .map(|s| HostBuffer::F32(s.to_vec())),
        Region::External(i) => match memory.external.get(i)? {
            ExternalStore::F32(v) => v.get(range).map(|s| HostBuffer::F32(s.to_vec())),
            ExternalStore::I64(v) => v.get(range).map(|s| HostBuffer::I64(s.to_vec())),
        },
    }
}
