//! `mem-plan`: static memory planning. Gives every intermediate value a
//! byte offset in one arena, so that a compiled plan allocates once and
//! values whose lifetimes do not overlap share memory.
//!
//! This is an analysis: the graph is unchanged, and the [`MemoryPlan`] goes to
//! [`PassContext::plan`](crate::PassContext) (and `alexc compile --emit plan`
//! prints it). It runs in four stages:
//!
//! 1. **Order and liveness.** Nodes execute in [`Graph::topo_order`]; a
//!    node's position in it is its *step*. A value is live from its
//!    producer's step to the step of its last consumer, inclusive; graph
//!    outputs stay live to the last step, and a value nobody reads (an unused
//!    split result) is live only at its producer's step, which still needs
//!    room to write it. An operand that dies at step `s` and a result born at
//!    `s` are both live at `s`, so they get disjoint bytes unless stage 2
//!    merges them.
//! 2. **Storage classes and aliasing.** Results of sources (`input`,
//!    `parameter`, `momentum`, `dropout-mask`) are *external*: the runtime
//!    binds them, and they are listed with their sizes (parameters and
//!    momentum as persistent state) but take no arena space. Every other
//!    result is an arena buffer, except where it aliases an operand:
//!    - results named by [`Op::in_place`] (the optimizer's `sgd-update`)
//!      *must* be written over their operand's buffer, external or not; the
//!      planner checks that nothing reads the old value at a later step,
//!      which would otherwise see the new one;
//!    - an [`OpPattern::ElemWise`] op *may* write its result over an operand
//!      (the first one, in operand order, that qualifies): element `i` of
//!      the result depends only on element `i` of each operand, so a kernel
//!      that loads before it stores never reads a byte it has overwritten.
//!      The operand qualifies when it lives in the arena, has the result's
//!      byte size, dies at this node, is not a graph output, and no earlier
//!      alias of the same buffer is still live (so "dies" holds for the
//!      whole buffer, not only for this one name of it).
//!
//!    An aliasing result and the value it overwrites become one *buffer*
//!    whose live range is the union of theirs.
//! 3. **Peak.** `peak_bytes` is the largest sum of the sizes of the arena
//!    buffers live at one step: a lower bound for any arena under this order.
//! 4. **Packing.** Buffers are placed in order of decreasing size (ties:
//!    earlier first), each at the lowest [`ALIGNMENT`]-aligned offset that
//!    does not overlap an already placed buffer with an overlapping live
//!    range ("greedy by size", as in TFLite's arena planner). Big buffers go
//!    first because they constrain the layout most; small ones fill the
//!    gaps. `arena_bytes` is the largest `offset + size`.
//!
//! Preconditions: the graph verifies (every type inferred, acyclic); sizes
//! are those of [`TensorType::size_bytes`]. A cycle, a broken edge, an
//! in-place write whose old value is still read later, or an arena too large
//! for 64 bits is a [`PassError::Unsupported`], never a panic.
//!
//! Not done (yet): zero-copy views for `flatten`/`reshape`, and reordering
//! nodes to lower the peak; both would change only this file.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use alexc_ir::{Graph, NodeId, Op, OpPattern, TensorType, ValueId};
use serde::{Deserialize, Serialize};

use crate::{Pass, PassContext, PassError};

/// Every arena offset is a multiple of this many bytes (a cache line, and
/// enough for any vector load the backends emit).
pub const ALIGNMENT: u64 = 64;

const NAME: &str = "mem-plan";

/// The `mem-plan` pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemPlan;

impl Pass for MemPlan {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<bool, PassError> {
        ctx.plan = Some(plan(graph)?);
        Ok(false)
    }
}

/// Where a buffer lives in time: the steps (positions in
/// [`MemoryPlan::order`]) of its producer and of its last reader, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveRange {
    pub first: usize,
    pub last: usize,
}

impl LiveRange {
    /// Whether the two ranges share a step.
    pub fn overlaps(&self, other: &LiveRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Why a result shares its operand's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReuseKind {
    /// The op requires it ([`Op::in_place`]: optimizer updates).
    InPlace,
    /// The planner chose it: an elementwise op overwrites a dead operand.
    Elementwise,
}

/// The value whose memory a result is written over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reuse {
    /// The operand's value id (`%7`), itself possibly an alias.
    pub value: String,
    pub kind: ReuseKind,
}

/// One result of a non-source node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Buffer {
    /// The value id as the text IR prints it: `%7`, `%7.1`.
    pub value: String,
    /// The producing node's name.
    pub producer: String,
    /// Which result of the producer.
    pub output: u16,
    pub ty: TensorType,
    pub size: u64,
    /// Byte offset in the arena; `None` when the result is written over an
    /// external buffer (see `reuses`).
    pub offset: Option<u64>,
    /// This value's own lifetime (an aliased buffer lives for the union of
    /// its values' lifetimes).
    pub live: LiveRange,
    /// The operand this result overwrites, if any.
    pub reuses: Option<Reuse>,
}

/// What kind of runtime-bound source an external buffer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExternalKind {
    Input,
    Parameter,
    Momentum,
    DropoutMask,
}

impl ExternalKind {
    /// Whether the buffer is state kept across runs (weights, momentum)
    /// rather than supplied anew on every run.
    pub fn is_persistent(self) -> bool {
        matches!(self, ExternalKind::Parameter | ExternalKind::Momentum)
    }
}

/// A result of a source node: bound by the runtime, not in the arena.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExternalBuffer {
    pub value: String,
    /// The source node's name (`conv1.weight`).
    pub node: String,
    pub kind: ExternalKind,
    /// Kept across runs (parameters, momentum).
    pub persistent: bool,
    pub ty: TensorType,
    pub size: u64,
}

/// The memory plan of one graph at one batch size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryPlan {
    /// The graph's name and batch size.
    pub model: String,
    pub batch: usize,
    /// Node names in execution order; a step is an index into this list.
    pub order: Vec<String>,
    /// Every result of every non-source node, in production order.
    pub buffers: Vec<Buffer>,
    /// Every result of every source node, in order.
    pub external: Vec<ExternalBuffer>,
    /// The alignment of every offset.
    pub alignment: u64,
    /// The arena's size: the largest `offset + size`.
    pub arena_bytes: u64,
    /// The most bytes of arena buffers live at one step (≤ `arena_bytes`).
    pub peak_bytes: u64,
    /// The first step at which `peak_bytes` are live (0 for an empty arena).
    pub peak_step: usize,
}

impl MemoryPlan {
    /// The buffer of a non-source result.
    pub fn buffer(&self, value: ValueId) -> Option<&Buffer> {
        let name = value.to_string();
        self.buffers.iter().find(|b| b.value == name)
    }

    /// The external buffer of a source result.
    pub fn external(&self, value: ValueId) -> Option<&ExternalBuffer> {
        let name = value.to_string();
        self.external.iter().find(|b| b.value == name)
    }

    /// Results that overwrite an operand, by kind.
    pub fn reuses(&self, kind: ReuseKind) -> usize {
        self.buffers
            .iter()
            .filter(|b| b.reuses.as_ref().is_some_and(|r| r.kind == kind))
            .count()
    }

    /// Results that overwrite an operand, of either kind.
    pub fn in_place_reuses(&self) -> usize {
        self.buffers.iter().filter(|b| b.reuses.is_some()).count()
    }

    /// Distinct allocations in the arena (results that own their bytes).
    pub fn arena_buffers(&self) -> usize {
        self.buffers
            .iter()
            .filter(|b| b.reuses.is_none() && b.offset.is_some())
            .count()
    }

    /// A short human-readable report (`alexc compile` prints it).
    pub fn summary(&self) -> String {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let persistent: u64 = self
            .external
            .iter()
            .filter(|e| e.persistent)
            .map(|e| e.size)
            .sum();
        let per_run: u64 = self
            .external
            .iter()
            .filter(|e| !e.persistent)
            .map(|e| e.size)
            .sum();
        let peak_node = self.order.get(self.peak_step).map_or("-", String::as_str);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "memory plan: {} (batch {}), {} steps",
            self.model,
            self.batch,
            self.order.len()
        );
        let _ = writeln!(
            out,
            "arena:    {:.2} MiB ({} bytes, {}-byte aligned offsets)",
            mib(self.arena_bytes),
            self.arena_bytes,
            self.alignment
        );
        let _ = writeln!(
            out,
            "peak:     {:.2} MiB ({} bytes) at step {} ({})",
            mib(self.peak_bytes),
            self.peak_bytes,
            self.peak_step,
            peak_node
        );
        let _ = writeln!(
            out,
            "buffers:  {} results in {} arena buffers; {} in-place reuses ({} elementwise, {} required in place)",
            self.buffers.len(),
            self.arena_buffers(),
            self.in_place_reuses(),
            self.reuses(ReuseKind::Elementwise),
            self.reuses(ReuseKind::InPlace)
        );
        let _ = writeln!(
            out,
            "external: {} buffers: {:.2} MiB persistent (parameters, momentum), {:.2} MiB per run (inputs, masks)",
            self.external.len(),
            mib(persistent),
            mib(per_run)
        );
        out
    }
}

fn unsupported(message: String) -> PassError {
    PassError::Unsupported {
        pass: NAME,
        message,
    }
}

/// One buffer of stage 2: a value and everything written over it.
#[derive(Debug)]
struct Group {
    external: bool,
    size: u64,
    /// The union of the members' live ranges.
    live: LiveRange,
    /// A member is a graph output, so the bytes must survive the run.
    pinned: bool,
    offset: u64,
}

fn align_up(x: u64) -> Option<u64> {
    x.checked_next_multiple_of(ALIGNMENT)
}

/// Plans `graph`'s memory (the pass, without a [`PassContext`]).
pub fn plan(graph: &Graph) -> Result<MemoryPlan, PassError> {
    // Stage 1: order and liveness.
    let order = graph.topo_order().map_err(|stuck| {
        let names: Vec<String> = stuck.iter().map(|id| id.to_string()).collect();
        unsupported(format!(
            "the graph has a cycle through {}",
            names.join(", ")
        ))
    })?;
    let node = |id: NodeId| {
        graph
            .get(id)
            .ok_or_else(|| unsupported(format!("node {id} does not exist")))
    };
    let last_step = order.len().saturating_sub(1);
    let mut last_use: HashMap<ValueId, usize> = HashMap::new();
    for (step, &id) in order.iter().enumerate() {
        for output in 0..node(id)?.outputs.len() {
            let output = u16::try_from(output)
                .map_err(|_| unsupported(format!("{id} has too many results")))?;
            last_use.insert(ValueId::new(id, output), step);
        }
    }
    let mut operands_of: Vec<Vec<ValueId>> = Vec::with_capacity(order.len());
    for (step, &id) in order.iter().enumerate() {
        let operands = graph.operands(id);
        for v in &operands {
            let last = last_use.get_mut(v).ok_or_else(|| {
                unsupported(format!(
                    "{} reads {v}, which does not exist",
                    node(id).map_or("?", |n| &n.name)
                ))
            })?;
            *last = (*last).max(step);
        }
        operands_of.push(operands);
    }
    let outputs: HashSet<ValueId> = graph.outputs().iter().copied().collect();
    for v in &outputs {
        let last = last_use
            .get_mut(v)
            .ok_or_else(|| unsupported(format!("graph output {v} does not exist")))?;
        *last = last_step;
    }

    // Stage 2: storage classes and aliasing, in execution order.
    let mut groups: Vec<Group> = Vec::new();
    let mut group_of: HashMap<ValueId, usize> = HashMap::new();
    let mut buffers: Vec<(Buffer, usize)> = Vec::new();
    let mut external: Vec<ExternalBuffer> = Vec::new();
    for (step, (&id, operands)) in order.iter().zip(&operands_of).enumerate() {
        let n = node(id)?;
        // Buffers claimed by a result of this node: two results must not be
        // written over one buffer.
        let mut claimed: Vec<usize> = Vec::new();
        for (output, ty) in n.outputs.iter().enumerate() {
            let output = u16::try_from(output)
                .map_err(|_| unsupported(format!("{} has too many results", n.name)))?;
            let value = ValueId::new(id, output);
            let size = ty.size_bytes() as u64;
            let live = LiveRange {
                first: step,
                last: last_use.get(&value).copied().unwrap_or(step),
            };
            let pinned = outputs.contains(&value);

            if n.op.is_source() {
                let kind = match &n.op {
                    Op::Input(_) => ExternalKind::Input,
                    Op::Parameter(_) => ExternalKind::Parameter,
                    Op::Momentum(_) => ExternalKind::Momentum,
                    Op::DropoutMask(_) => ExternalKind::DropoutMask,
                    other => {
                        return Err(unsupported(format!(
                            "{}: no storage class for source op `{}`",
                            n.name,
                            other.name()
                        )))
                    }
                };
                group_of.insert(value, groups.len());
                groups.push(Group {
                    external: true,
                    size,
                    live,
                    pinned,
                    offset: 0,
                });
                external.push(ExternalBuffer {
                    value: value.to_string(),
                    node: n.name.clone(),
                    kind,
                    persistent: kind.is_persistent(),
                    ty: ty.clone(),
                    size,
                });
                continue;
            }

            let required =
                n.op.in_place()
                    .iter()
                    .find(|&&(result, _)| result == usize::from(output));
            let reuse = if let Some(&(_, slot)) = required {
                let old = *operands.get(slot).ok_or_else(|| {
                    unsupported(format!(
                        "{} writes result {output} over operand {slot}, which it does not have",
                        n.name
                    ))
                })?;
                let g = group_of.get(&old).copied().ok_or_else(|| {
                    unsupported(format!("{} reads {old} before it exists", n.name))
                })?;
                if groups[g].live.last > step {
                    let reader = order
                        .get(groups[g].live.last)
                        .and_then(|&r| graph.get(r))
                        .map_or("?", |r| r.name.as_str());
                    return Err(unsupported(format!(
                        "{} overwrites {old} in place, but {reader} reads it later",
                        n.name
                    )));
                }
                if groups[g].size != size || claimed.contains(&g) {
                    return Err(unsupported(format!(
                        "{} cannot write result {output} ({ty}) over {old} in place",
                        n.name
                    )));
                }
                Some((g, old, ReuseKind::InPlace))
            } else if n.op.pattern() == OpPattern::ElemWise && n.outputs.len() == 1 {
                operands.iter().find_map(|&old| {
                    let g = *group_of.get(&old)?;
                    let grp = &groups[g];
                    let legal = !grp.external
                        && !grp.pinned
                        && grp.size == size
                        && grp.live.last == step
                        && !claimed.contains(&g);
                    legal.then_some((g, old, ReuseKind::Elementwise))
                })
            } else {
                None
            };

            let (g, reuses) = match reuse {
                Some((g, old, kind)) => {
                    let grp = &mut groups[g];
                    grp.live.last = grp.live.last.max(live.last);
                    grp.pinned |= pinned;
                    claimed.push(g);
                    (
                        g,
                        Some(Reuse {
                            value: old.to_string(),
                            kind,
                        }),
                    )
                }
                None => {
                    groups.push(Group {
                        external: false,
                        size,
                        live,
                        pinned,
                        offset: 0,
                    });
                    (groups.len() - 1, None)
                }
            };
            group_of.insert(value, g);
            buffers.push((
                Buffer {
                    value: value.to_string(),
                    producer: n.name.clone(),
                    output,
                    ty: ty.clone(),
                    size,
                    offset: None,
                    live,
                    reuses,
                },
                g,
            ));
        }
    }

    // Stage 3: peak, from the change in live bytes at each step.
    let overflow = || unsupported("the arena would exceed 2^64 bytes".to_string());
    let mut delta = vec![0i128; order.len() + 1];
    for grp in groups.iter().filter(|g| !g.external) {
        delta[grp.live.first] += i128::from(grp.size);
        delta[grp.live.last + 1] -= i128::from(grp.size);
    }
    let (mut live_bytes, mut peak_bytes, mut peak_step) = (0i128, 0i128, 0usize);
    for (step, d) in delta.iter().enumerate().take(order.len()) {
        live_bytes += d;
        if live_bytes > peak_bytes {
            (peak_bytes, peak_step) = (live_bytes, step);
        }
    }
    let peak_bytes = u64::try_from(peak_bytes).map_err(|_| overflow())?;

    // Stage 4: packing, greedy by size.
    let mut by_size: Vec<usize> = (0..groups.len()).filter(|&g| !groups[g].external).collect();
    by_size.sort_by_key(|&g| (std::cmp::Reverse(groups[g].size), groups[g].live.first, g));
    let mut placed: Vec<usize> = Vec::with_capacity(by_size.len());
    let mut arena_bytes = 0u64;
    for g in by_size {
        let mut taken: Vec<(u64, u64)> = placed
            .iter()
            .filter(|&&p| groups[p].live.overlaps(&groups[g].live))
            .map(|&p| (groups[p].offset, groups[p].offset + groups[p].size))
            .collect();
        taken.sort_unstable();
        let size = groups[g].size;
        let mut offset = 0u64;
        for (start, end) in taken {
            if offset.checked_add(size).ok_or_else(overflow)? <= start {
                break;
            }
            offset = offset.max(align_up(end).ok_or_else(overflow)?);
        }
        let end = offset.checked_add(size).ok_or_else(overflow)?;
        arena_bytes = arena_bytes.max(end);
        groups[g].offset = offset;
        placed.push(g);
    }

    let buffers = buffers
        .into_iter()
        .map(|(mut b, g)| {
            b.offset = (!groups[g].external).then_some(groups[g].offset);
            b
        })
        .collect();
    let order = order
        .iter()
        .map(|&id| node(id).map(|n| n.name.clone()))
        .collect::<Result<_, _>>()?;
    Ok(MemoryPlan {
        model: graph.name.clone(),
        batch: graph.batch,
        order,
        buffers,
        external,
        alignment: ALIGNMENT,
        arena_bytes,
        peak_bytes,
        peak_step,
    })
}
