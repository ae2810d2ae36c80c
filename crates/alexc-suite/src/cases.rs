//! The cases: every op and fused op that lowering supports, forward and
//! backward, each at several shapes.
//!
//! Shapes are chosen for what they exercise in a lowering, not for realism:
//! odd spatial sizes; channel, feature and element counts that are not
//! multiples of 4, 8 or 16 (vector remainders) nor of the GEMM tiles, next
//! to a few that are; strides smaller than, equal to and larger than the
//! window; padding, dilation and groups 1–3; batch 1 and > 1; K larger than
//! the GEMM's k-block.
//!
//! Every fused op also carries its unfused equivalent (the chain of plain
//! ops the fusion passes replace), which the runner compiles and runs on
//! the same backend and compares with the fused results. Elementwise ops
//! additionally run with their result written over an operand, as the
//! memory plan lays them out in real models.
//!
//! Operand data is deterministic (seeded from the case name) and drawn per
//! operand kind ([`Fill`]): coarse values for ops that select (so windows
//! hold ties and exact zeros), special values (NaN, ±0, ±∞) for copies and
//! masks, scaled logits for softmax, 0/2 dropout masks, labels in range.

use alexc_ir::{
    AlphaConvention, AvgPool2dAttrs, ConcatAttrs, Conv2dAttrs, Conv2dBackwardAttrs, DType, Graph,
    Init, InputAttrs, LinearAttrs, LinearBackwardAttrs, LinearReluAttrs, LrnAttrs, LrnMaxPoolAttrs,
    MomentumAttrs, Op, ParameterAttrs, Pool2dAttrs, ReshapeAttrs, SgdAttrs, SgdConvention, Shape,
    SoftmaxAttrs, SplitAttrs, TensorType, ValueId,
};
use alexc_kernel::HostBuffer;

use crate::compare::Tolerance;

/// How an operand's deterministic data is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fill {
    /// Uniform in `[-scale, scale)`.
    Uniform(f32),
    /// Multiples of 1/8 in `[-2, 2]`: windows hold ties and exact zeros,
    /// so max-pooling's first-maximum rule and ReLU's `> 0` are exercised.
    Coarse,
    /// `Coarse`, with these `(index, value)` overrides (NaN, ±0, ±∞).
    Specials(&'static [(usize, f32)]),
    /// A dropout mask with p = 0.5: each element 0 or 2.
    Mask,
    /// i64 class labels in `0..classes`.
    Labels(usize),
    /// Every element this value (a learning rate).
    Constant(f32),
}

/// NaN, signed zeros and infinities at the start of an elementwise operand.
const SPECIALS: &[(usize, f32)] = &[
    (0, f32::NAN),
    (1, -0.0),
    (2, 0.0),
    (3, f32::INFINITY),
    (4, f32::NEG_INFINITY),
];

/// For a `[1, 1, 5, 6]` max-pool input, 3×3 windows, stride 2, padding 1:
/// an all −∞ window (output 0, 0), a window with NaN (0, 1), one with +∞.
const POOL_SPECIALS: &[(usize, f32)] = &[
    (0, f32::NEG_INFINITY),
    (1, f32::NEG_INFINITY),
    (6, f32::NEG_INFINITY),
    (7, f32::NEG_INFINITY),
    (9, f32::NAN),
    (20, f32::INFINITY),
];

impl Fill {
    fn dtype(self) -> DType {
        match self {
            Fill::Labels(_) => DType::I64,
            _ => DType::F32,
        }
    }

    /// `len` values drawn with `seed`.
    pub fn data(self, len: usize, seed: u64) -> HostBuffer {
        let mut rng = Rng::new(seed);
        match self {
            Fill::Uniform(scale) => {
                HostBuffer::F32((0..len).map(|_| rng.symmetric() * scale).collect())
            }
            Fill::Coarse => HostBuffer::F32((0..len).map(|_| rng.coarse()).collect()),
            Fill::Specials(specials) => {
                let mut v: Vec<f32> = (0..len).map(|_| rng.coarse()).collect();
                for &(i, x) in specials {
                    if let Some(e) = v.get_mut(i) {
                        *e = x;
                    }
                }
                HostBuffer::F32(v)
            }
            Fill::Mask => HostBuffer::F32(
                (0..len)
                    .map(|_| if rng.unit() < 0.5 { 0.0 } else { 2.0 })
                    .collect(),
            ),
            Fill::Labels(classes) => HostBuffer::I64(
                (0..len)
                    .map(|_| ((rng.unit() * classes as f32) as i64).min(classes as i64 - 1))
                    .collect(),
            ),
            Fill::Constant(c) => HostBuffer::F32(vec![c; len]),
        }
    }
}

/// xorshift64: plenty for test data, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in `[0, 1)`, 24 bits.
    fn unit(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[-1, 1)`.
    fn symmetric(&mut self) -> f32 {
        self.unit() * 2.0 - 1.0
    }

    /// A multiple of 1/8 in `[-2, 2]`.
    fn coarse(&mut self) -> f32 {
        (self.symmetric() * 16.0).round() / 8.0
    }
}

/// One test case: a small graph (one op, or a fused op) over named inputs
/// with their data.
#[derive(Clone, Debug)]
pub struct Case {
    /// Unique: the op, its operand shapes and attributes, and the variant.
    pub name: String,
    /// Input nodes, then the op under test; its outputs are the results
    /// that are compared.
    pub graph: Graph,
    /// The value of every input of `graph` (and of `unfused`), by name.
    pub inputs: Vec<(String, HostBuffer)>,
    /// One per output of `graph`.
    pub tolerances: Vec<Tolerance>,
    /// Write result 0 of the (elementwise) op over operand `i`, as the
    /// memory plan does when the operand dies at the op.
    pub alias: Option<usize>,
    /// For a fused op: the same computation as a chain of unfused ops, over
    /// the same inputs, with the same outputs in the same order.
    pub unfused: Option<Graph>,
}

/// The tolerance of every result of `op` (see the crate documentation).
pub fn tolerance(op: &Op) -> Tolerance {
    match op {
        Op::Relu
        | Op::Dropout(_)
        | Op::Reshape(_)
        | Op::Flatten
        | Op::Concat(_)
        | Op::Split(_)
        | Op::Add
        | Op::Mul
        | Op::ReluBackward
        | Op::MaxPool2d(_)
        | Op::MaxPool2dBackward(_) => Tolerance::EXACT,
        Op::SgdUpdate(_) => Tolerance::ELEMENTWISE,
        Op::Softmax(_)
        | Op::SoftmaxCrossEntropy
        | Op::SoftmaxCrossEntropyBackward
        | Op::Lrn(_)
        | Op::LrnMaxPool(_)
        | Op::AvgPool2d(_)
        | Op::AvgPool2dBackward(_) => Tolerance::FUNCTION,
        Op::Conv2d(_)
        | Op::ConvRelu(_)
        | Op::Linear(_)
        | Op::LinearRelu(_)
        | Op::Conv2dBackward(_)
        | Op::ConvReluBackward(_)
        | Op::LinearBackward(_)
        | Op::LrnBackward(_)
        | Op::LrnMaxPoolBackward(_)
        | Op::SoftmaxBackward(_) => Tolerance::SUMS,
        // Sources are bound, never computed.
        Op::Input(_) | Op::Parameter(_) | Op::DropoutMask(_) | Op::Momentum(_) => Tolerance::EXACT,
    }
}

/// What kind of graph source an operand is.
#[derive(Clone, Copy, Debug)]
enum Source {
    Input,
    Parameter,
    /// The momentum buffer of this parameter.
    Momentum(&'static str),
}

/// One operand of a case: its source node's name, kind, shape and data.
#[derive(Clone, Debug)]
struct Operand {
    name: &'static str,
    source: Source,
    shape: Vec<usize>,
    fill: Fill,
}

impl Operand {
    /// The source node's op.
    fn op(&self) -> Op {
        let shape = Shape::new(self.shape.clone());
        match self.source {
            Source::Input => Op::Input(InputAttrs {
                dtype: self.fill.dtype(),
                shape,
            }),
            Source::Parameter => Op::Parameter(ParameterAttrs {
                dtype: DType::F32,
                shape,
                init: Init::Constant { value: 0.0 },
            }),
            Source::Momentum(of) => Op::Momentum(MomentumAttrs {
                dtype: DType::F32,
                shape,
                of: of.to_owned(),
            }),
        }
    }
}

/// A graph input.
fn arg(name: &'static str, shape: &[usize], fill: Fill) -> Operand {
    Operand {
        name,
        source: Source::Input,
        shape: shape.to_vec(),
        fill,
    }
}

/// Builds a case graph: inputs first, then nodes. The graphs are fixed by
/// this file, so a rejected node is a bug in the suite itself.
struct Builder {
    graph: Graph,
}

impl Builder {
    /// A graph with these sources `(name, op)`; returns their values.
    fn new(sources: &[(String, Op)]) -> (Builder, Vec<ValueId>) {
        let mut b = Builder {
            graph: Graph::new("suite", 1),
        };
        let ids: Vec<ValueId> = sources
            .iter()
            .map(|(name, op)| b.node(name, op.clone(), &[])[0])
            .collect();
        // The batch is the leading dimension of the first operand.
        b.graph.batch = ids
            .first()
            .and_then(|&v| b.graph.value_type(v))
            .and_then(|t| t.shape.dims().first().copied())
            .unwrap_or(1);
        (b, ids)
    }

    /// Adds a node; returns its results.
    fn node(&mut self, name: &str, op: Op, operands: &[ValueId]) -> Vec<ValueId> {
        let id = self
            .graph
            .add(name, op, operands)
            .unwrap_or_else(|e| panic!("suite case `{name}` is malformed: {e}"));
        (0..self.graph[id].outputs.len())
            .map(|r| ValueId::new(id, r as u16))
            .collect()
    }

    fn finish(mut self, outputs: Vec<ValueId>) -> Graph {
        self.graph
            .set_outputs(outputs)
            .unwrap_or_else(|e| panic!("suite case outputs: {e}"));
        self.graph
    }
}

/// FNV-1a: the seed of a case's data, from its name.
fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn dims(shape: &[usize]) -> String {
    if shape.is_empty() {
        "scalar".into()
    } else {
        shape
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("x")
    }
}

/// The case applying `op` to `operands`.
fn op_case(op: Op, operands: &[Operand]) -> Case {
    let shapes: Vec<String> = operands
        .iter()
        .map(|o| format!("{}={}", o.name, dims(&o.shape)))
        .collect();
    let attrs = op.attr_string();
    let name = format!(
        "{} [{}]{}{}",
        op.name(),
        shapes.join(" "),
        if attrs.is_empty() { "" } else { " " },
        attrs
    );
    let seed = seed_of(&name);
    let inputs = operands
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let len = o.shape.iter().product();
            (o.name.to_owned(), o.fill.data(len, seed ^ (i as u64 + 1)))
        })
        .collect();
    let tol = tolerance(&op);
    let specs: Vec<_> = operands
        .iter()
        .map(|o| (o.name.to_owned(), o.op()))
        .collect();
    let (mut b, ids) = Builder::new(&specs);
    let results = b.node("op", op, &ids);
    Case {
        name,
        tolerances: vec![tol; results.len()],
        graph: b.finish(results),
        inputs,
        alias: None,
        unfused: None,
    }
}

impl Case {
    /// This elementwise case with its result written over operand `i`.
    fn over(mut self, i: usize) -> Case {
        let operand = self.inputs.get(i).map_or("?", |(n, _)| n.as_str());
        self.name = format!("{} (in place over {operand})", self.name);
        self.alias = Some(i);
        self
    }

    /// This fused case, with the unfused chain `chain` builds over the same
    /// inputs (in operand order) as its twin.
    fn unfused(mut self, chain: impl FnOnce(&mut Builder, &[ValueId]) -> Vec<ValueId>) -> Case {
        let (mut b, ids) = Builder::new(&input_specs(&self.graph, &self.inputs));
        let outputs = chain(&mut b, &ids);
        self.unfused = Some(b.finish(outputs));
        self
    }
}

/// The name and source op of each of `inputs` in `graph`.
fn input_specs(graph: &Graph, inputs: &[(String, HostBuffer)]) -> Vec<(String, Op)> {
    inputs
        .iter()
        .filter_map(|(name, _)| Some((name.clone(), graph[graph.find(name)?].op.clone())))
        .collect()
}

/// Every case of the suite.
pub fn cases() -> Vec<Case> {
    let mut all = Vec::new();
    all.extend(elementwise());
    all.extend(sgd());
    all.extend(data_movement());
    all.extend(softmax_and_loss());
    all.extend(pooling());
    all.extend(lrn());
    all.extend(conv());
    all.extend(linear());
    all
}

const ELEMENTWISE_SHAPES: &[&[usize]] = &[
    &[1, 1],
    &[3, 5],
    &[2, 3, 5, 7],
    &[4, 16],
    &[1, 67],
    &[2, 8, 3, 3],
];

/// ReLU, dropout (the identity at inference), reshape, flatten, add, mul
/// and the ReLU gradient; the elementwise ones also in place.
fn elementwise() -> Vec<Case> {
    let mut out = Vec::new();
    for &shape in ELEMENTWISE_SHAPES {
        let rest: usize = shape[1..].iter().product();
        let special = Fill::Specials(SPECIALS);
        let x = || vec![arg("x", shape, special)];
        let ab = || {
            vec![
                arg("a", shape, special),
                arg("b", shape, Fill::Uniform(2.0)),
            ]
        };
        let reshape = ReshapeAttrs {
            shape: Shape::new(vec![rest, shape[0]]),
        };
        let dropout = alexc_ir::DropoutAttrs { p: 0.5 };
        out.push(op_case(Op::Relu, &x()));
        out.push(op_case(Op::Dropout(dropout.clone()), &x()));
        out.push(op_case(Op::Reshape(reshape), &x()));
        out.push(op_case(Op::Flatten, &x()));
        out.push(op_case(Op::Add, &ab()));
        out.push(op_case(Op::Mul, &ab()));
        out.push(op_case(Op::ReluBackward, &ab()));
        if shape == [2, 3, 5, 7] || shape == [1, 67] {
            out.push(op_case(Op::Relu, &x()).over(0));
            out.push(op_case(Op::Dropout(dropout), &x()).over(0));
            out.push(op_case(Op::Add, &ab()).over(0));
            out.push(op_case(Op::Add, &ab()).over(1));
            out.push(op_case(Op::Mul, &ab()).over(1));
            out.push(op_case(Op::ReluBackward, &ab()).over(0));
            out.push(op_case(Op::ReluBackward, &ab()).over(1));
        }
    }
    out
}

/// The optimizer step in both conventions, in place over `w` and `v`.
fn sgd() -> Vec<Case> {
    let mut out = Vec::new();
    for convention in [SgdConvention::Paper, SgdConvention::Pytorch] {
        for shape in [&[7usize][..], &[16], &[3, 11, 2], &[96, 3, 3, 3]] {
            let attrs = SgdAttrs {
                momentum: 0.9,
                weight_decay: 5e-4,
                convention,
            };
            out.push(op_case(
                Op::SgdUpdate(attrs),
                &[
                    Operand {
                        source: Source::Parameter,
                        ..arg("w", shape, Fill::Uniform(2.0))
                    },
                    Operand {
                        source: Source::Momentum("w"),
                        ..arg("v", shape, Fill::Uniform(2.0))
                    },
                    arg("g", shape, Fill::Uniform(2.0)),
                    arg("lr", &[], Fill::Constant(0.01)),
                ],
            ));
        }
    }
    out
}

/// Concat and split along every axis.
fn data_movement() -> Vec<Case> {
    const INPUTS: &[&str] = &["x0", "x1", "x2"];
    let concats: &[(&[&[usize]], usize)] = &[
        (&[&[2, 3, 5, 5], &[2, 4, 5, 5]], 1),
        (&[&[1, 1, 3, 3], &[1, 2, 3, 3], &[1, 5, 3, 3]], 1),
        (&[&[3, 7], &[2, 7]], 0),
        (&[&[2, 3, 4], &[2, 3, 9]], 2),
        (&[&[4, 17]], 1),
    ];
    let splits: &[(&[usize], usize, &[usize])] = &[
        (&[2, 7, 5, 5], 1, &[3, 4]),
        (&[1, 96, 3, 3], 1, &[48, 48]),
        (&[5, 3], 0, &[1, 2, 2]),
        (&[2, 3, 13], 2, &[13]),
        (&[3, 10], 1, &[1, 9]),
    ];
    let mut out = Vec::new();
    for &(shapes, axis) in concats {
        let operands: Vec<Operand> = shapes
            .iter()
            .zip(INPUTS)
            .map(|(s, n)| arg(n, s, Fill::Uniform(2.0)))
            .collect();
        out.push(op_case(Op::Concat(ConcatAttrs { axis }), &operands));
    }
    for &(shape, axis, sizes) in splits {
        let attrs = SplitAttrs {
            axis,
            sizes: sizes.to_vec(),
        };
        out.push(op_case(
            Op::Split(attrs),
            &[arg("x", shape, Fill::Uniform(2.0))],
        ));
    }
    out
}

/// Softmax along every axis, the loss, and their gradients. Logits are
/// large (up to ±120) so that the max subtraction matters.
fn softmax_and_loss() -> Vec<Case> {
    let softmax: &[(&[usize], usize)] = &[
        (&[4, 10], 1),
        (&[1, 1000], 1),
        (&[3, 17], 1),
        (&[2, 3, 5], 1),
        (&[2, 3, 5], 0),
        (&[2, 3, 7], 2),
        (&[5], 0),
    ];
    let mut out = Vec::new();
    for &(shape, axis) in softmax {
        let attrs = SoftmaxAttrs { axis };
        out.push(op_case(
            Op::Softmax(attrs.clone()),
            &[arg("x", shape, Fill::Uniform(120.0))],
        ));
        out.push(op_case(
            Op::SoftmaxBackward(attrs),
            &[
                arg("y", shape, Fill::Uniform(1.0)),
                arg("dy", shape, Fill::Uniform(2.0)),
            ],
        ));
    }
    for [n, classes] in [[4usize, 10], [1, 1], [3, 1000], [7, 13]] {
        let operands = [
            arg("x", &[n, classes], Fill::Uniform(80.0)),
            arg("labels", &[n], Fill::Labels(classes)),
        ];
        out.push(op_case(Op::SoftmaxCrossEntropy, &operands));
        out.push(op_case(Op::SoftmaxCrossEntropyBackward, &operands));
    }
    out
}

/// A pooling geometry: the input `[N, C, H, W]` and the window.
#[derive(Clone, Copy, Debug)]
struct Window {
    input: [usize; 4],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
}

impl Window {
    fn pool(&self) -> Pool2dAttrs {
        Pool2dAttrs {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
        }
    }
}

/// Odd sizes, with and without padding, strides below, at and above the
/// window, a window as large as the padded input, a 1×1 window.
const WINDOWS: &[Window] = &[
    Window {
        input: [2, 3, 13, 13],
        kernel: [3, 3],
        stride: [2, 2],
        padding: [0, 0],
    },
    Window {
        input: [1, 2, 9, 11],
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1, 1],
    },
    Window {
        input: [2, 2, 7, 19],
        kernel: [2, 3],
        stride: [1, 2],
        padding: [1, 1],
    },
    Window {
        input: [1, 3, 8, 8],
        kernel: [2, 2],
        stride: [3, 3],
        padding: [0, 1],
    },
    Window {
        input: [1, 1, 5, 5],
        kernel: [5, 5],
        stride: [1, 1],
        padding: [2, 2],
    },
    Window {
        input: [3, 2, 4, 9],
        kernel: [1, 1],
        stride: [1, 1],
        padding: [0, 0],
    },
    // AlexNet's pool1 and pool2 planes (fewer channels): rows wider than a
    // vector, planes larger than a tile.
    Window {
        input: [1, 6, 55, 55],
        kernel: [3, 3],
        stride: [2, 2],
        padding: [0, 0],
    },
    Window {
        input: [2, 5, 27, 27],
        kernel: [3, 3],
        stride: [2, 2],
        padding: [0, 0],
    },
];

/// A window op's case and its gradient's: `x` (and `dy`, shaped like the
/// forward result).
fn window_pair(forward: Op, backward: Op, shape: &[usize], fill: Fill) -> [Case; 2] {
    let y = out_shape(&forward, &[shape]);
    [
        op_case(forward, &[arg("x", shape, fill)]),
        op_case(
            backward,
            &[arg("x", shape, fill), arg("dy", &y, Fill::Uniform(2.0))],
        ),
    ]
}

/// The shape of `op`'s first result on operands of `shapes`.
fn out_shape(op: &Op, shapes: &[&[usize]]) -> Vec<usize> {
    let types: Vec<TensorType> = shapes
        .iter()
        .map(|s| TensorType::new(DType::F32, Shape::new(s.to_vec())))
        .collect();
    let operands: Vec<alexc_ir::Operand<'_>> = types
        .iter()
        .map(|ty| alexc_ir::Operand { name: "x", ty })
        .collect();
    let results = alexc_ir::infer("op", op, &operands)
        .unwrap_or_else(|e| panic!("suite case is malformed: {e}"));
    results
        .first()
        .map(|t| t.shape.dims().to_vec())
        .unwrap_or_default()
}

/// Max and average pooling (both divisor rules) and their gradients.
fn pooling() -> Vec<Case> {
    let mut out = Vec::new();
    for w in WINDOWS {
        out.extend(window_pair(
            Op::MaxPool2d(w.pool()),
            Op::MaxPool2dBackward(w.pool()),
            &w.input,
            Fill::Coarse,
        ));
        for count_include_pad in [true, false] {
            let avg = AvgPool2dAttrs {
                kernel: w.kernel,
                stride: w.stride,
                padding: w.padding,
                count_include_pad,
            };
            out.extend(window_pair(
                Op::AvgPool2d(avg.clone()),
                Op::AvgPool2dBackward(avg),
                &w.input,
                Fill::Uniform(2.0),
            ));
        }
    }
    let pool = Pool2dAttrs {
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1, 1],
    };
    out.extend(window_pair(
        Op::MaxPool2d(pool.clone()),
        Op::MaxPool2dBackward(pool),
        &[1, 1, 5, 6],
        Fill::Specials(POOL_SPECIALS),
    ));
    out
}

fn lrn_attrs(size: usize, alpha_convention: AlphaConvention) -> LrnAttrs {
    LrnAttrs {
        size,
        alpha: 1e-2,
        beta: 0.75,
        k: 2.0,
        alpha_convention,
    }
}

/// LRN (both α conventions, windows wider than the channel count, even
/// sizes, rank 2–4) and the fused LRN + max-pool with its unfused twin.
fn lrn() -> Vec<Case> {
    let plain: &[(&[usize], usize)] = &[
        (&[2, 7, 5, 5], 5),
        (&[1, 3, 4, 9], 5),
        (&[2, 6, 3, 3], 4),
        (&[1, 9, 11], 3),
        (&[3, 4], 1),
        (&[1, 2, 17, 1], 7),
        // AlexNet's norm1 and norm2 planes (fewer channels).
        (&[1, 12, 55, 55], 5),
        (&[2, 9, 27, 27], 5),
    ];
    let mut out = Vec::new();
    for convention in [AlphaConvention::DividedBySize, AlphaConvention::Absolute] {
        for &(shape, size) in plain {
            let attrs = lrn_attrs(size, convention);
            out.extend(window_pair(
                Op::Lrn(attrs.clone()),
                Op::LrnBackward(attrs),
                shape,
                Fill::Uniform(8.0),
            ));
        }
    }
    for w in WINDOWS {
        for size in [5, 2] {
            let attrs = LrnMaxPoolAttrs {
                lrn: lrn_attrs(size, AlphaConvention::DividedBySize),
                pool: w.pool(),
            };
            let [fwd, bwd] = window_pair(
                Op::LrnMaxPool(attrs.clone()),
                Op::LrnMaxPoolBackward(attrs.clone()),
                &w.input,
                Fill::Coarse,
            );
            let a = attrs.clone();
            out.push(fwd.unfused(move |b, v| {
                let n = b.node("lrn", Op::Lrn(a.lrn), &[v[0]]);
                b.node("pool", Op::MaxPool2d(a.pool), &n)
            }));
            out.push(bwd.unfused(move |b, v| {
                let n = b.node("lrn", Op::Lrn(attrs.lrn.clone()), &[v[0]]);
                let dn = b.node("pool_bw", Op::MaxPool2dBackward(attrs.pool), &[n[0], v[1]]);
                b.node("lrn_bw", Op::LrnBackward(attrs.lrn), &[v[0], dn[0]])
            }));
        }
    }
    out
}

/// A convolution layer: its input `[N, C, H, W]` and attributes (square
/// strides, padding and dilation).
#[derive(Clone, Copy, Debug)]
struct Conv {
    input: [usize; 4],
    out: usize,
    kernel: [usize; 2],
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
    bias: bool,
}

impl Conv {
    fn attrs(&self) -> Conv2dAttrs {
        Conv2dAttrs {
            out_channels: self.out,
            kernel: self.kernel,
            stride: [self.stride; 2],
            padding: [self.padding; 2],
            dilation: [self.dilation; 2],
            groups: self.groups,
            bias: self.bias,
        }
    }
}

/// Remainders in every tile size, strides 1–4, padding, dilation 2,
/// groups 1/2/3, batch 1–3, AlexNet's conv1 geometry at 23×23 (K = 363,
/// larger than the k-block), a 1×1 grouped layer, and one layer whose sizes
/// are all multiples of 16.
const CONVS: &[Conv] = &[
    Conv {
        input: [1, 3, 6, 7],
        out: 4,
        kernel: [3, 3],
        stride: 1,
        padding: 1,
        dilation: 1,
        groups: 1,
        bias: true,
    },
    Conv {
        input: [3, 4, 7, 8],
        out: 6,
        kernel: [3, 3],
        stride: 2,
        padding: 1,
        dilation: 2,
        groups: 2,
        bias: false,
    },
    Conv {
        input: [2, 6, 6, 5],
        out: 9,
        kernel: [2, 3],
        stride: 1,
        padding: 1,
        dilation: 1,
        groups: 3,
        bias: true,
    },
    Conv {
        input: [1, 3, 23, 23],
        out: 4,
        kernel: [11, 11],
        stride: 4,
        padding: 2,
        dilation: 1,
        groups: 1,
        bias: true,
    },
    Conv {
        input: [1, 4, 13, 13],
        out: 14,
        kernel: [3, 3],
        stride: 1,
        padding: 1,
        dilation: 1,
        groups: 2,
        bias: true,
    },
    Conv {
        input: [2, 3, 9, 9],
        out: 5,
        kernel: [5, 5],
        stride: 3,
        padding: 2,
        dilation: 1,
        groups: 1,
        bias: true,
    },
    Conv {
        input: [2, 6, 5, 5],
        out: 3,
        kernel: [1, 1],
        stride: 1,
        padding: 0,
        dilation: 1,
        groups: 3,
        bias: false,
    },
    // AlexNet's conv2 geometry at full spatial size (fewer channels): the
    // weight gradient reduces over 729 positions, deeper than a k-block.
    Conv {
        input: [1, 8, 27, 27],
        out: 16,
        kernel: [5, 5],
        stride: 1,
        padding: 2,
        dilation: 1,
        groups: 1,
        bias: true,
    },
    Conv {
        input: [1, 16, 8, 8],
        out: 32,
        kernel: [3, 3],
        stride: 1,
        padding: 1,
        dilation: 1,
        groups: 1,
        bias: true,
    },
];

/// Convolution and its fused ReLU twin, forward and backward, with and
/// without the input gradient.
fn conv() -> Vec<Case> {
    let mut out = Vec::new();
    for conv in CONVS {
        let (xs, a) = (conv.input, conv.attrs());
        let ws = [a.out_channels, xs[1] / a.groups, a.kernel[0], a.kernel[1]];
        let x = arg("x", &xs, Fill::Uniform(1.0));
        let w = arg("w", &ws, Fill::Uniform(1.0));
        let mut operands = vec![x.clone(), w.clone()];
        if a.bias {
            operands.push(arg("b", &[a.out_channels], Fill::Uniform(1.0)));
        }
        out.push(op_case(Op::Conv2d(a.clone()), &operands));
        let plain = a.clone();
        out.push(
            op_case(Op::ConvRelu(a.clone()), &operands).unfused(move |b, v| {
                let y = b.node("conv", Op::Conv2d(plain), v);
                b.node("relu", Op::Relu, &y)
            }),
        );
        let no_bias = Conv2dAttrs {
            bias: false,
            ..a.clone()
        };
        let ys = out_shape(&Op::Conv2d(no_bias), &[&xs, &ws]);
        let dy = arg("dy", &ys, Fill::Uniform(1.0));
        for input_grad in [true, false] {
            let attrs = Conv2dBackwardAttrs {
                conv: a.clone(),
                input_grad,
            };
            out.push(op_case(
                Op::Conv2dBackward(attrs.clone()),
                &[x.clone(), w.clone(), dy.clone()],
            ));
            let fused = op_case(
                Op::ConvReluBackward(attrs.clone()),
                &[
                    x.clone(),
                    w.clone(),
                    arg("y", &ys, Fill::Coarse),
                    dy.clone(),
                ],
            );
            out.push(fused.unfused(move |b, v| {
                let dz = b.node("relu_bw", Op::ReluBackward, &[v[2], v[3]]);
                b.node("conv_bw", Op::Conv2dBackward(attrs), &[v[0], v[1], dz[0]])
            }));
        }
    }
    out
}

/// `(batch, in, out)`: batch 1–4, K = 300 (larger than the k-block),
/// remainders everywhere, and one case of multiples of 16.
const LINEAR_CASES: &[(usize, usize, usize)] = &[(1, 37, 19), (3, 300, 13), (3, 5, 7), (4, 64, 32)];

/// Linear layers: plain, with ReLU, with ReLU and the dropout mask (fused,
/// with unfused twins), with and without bias; and their gradients.
fn linear() -> Vec<Case> {
    let mut out = Vec::new();
    for &(n, fin, fout) in LINEAR_CASES {
        let x = arg("x", &[n, fin], Fill::Uniform(1.0));
        let w = arg("w", &[fout, fin], Fill::Uniform(1.0));
        let m = arg("m", &[n, fout], Fill::Mask);
        for bias in [true, false] {
            let lin = LinearAttrs {
                out_features: fout,
                bias,
            };
            let mut operands = vec![x.clone(), w.clone()];
            if bias {
                operands.push(arg("b", &[fout], Fill::Uniform(1.0)));
            }
            out.push(op_case(Op::Linear(lin.clone()), &operands));
            for dropout in [false, true] {
                let attrs = LinearReluAttrs {
                    linear: lin.clone(),
                    dropout,
                };
                let mut operands = operands.clone();
                if dropout {
                    operands.push(m.clone());
                }
                let plain = lin.clone();
                out.push(
                    op_case(Op::LinearRelu(attrs), &operands).unfused(move |b, v| {
                        let k = 2 + usize::from(bias);
                        let z = b.node("linear", Op::Linear(plain), &v[..k]);
                        let r = b.node("relu", Op::Relu, &z);
                        if dropout {
                            b.node("dropout", Op::Mul, &[r[0], v[k]])
                        } else {
                            r
                        }
                    }),
                );
            }
        }
        for (bias, input_grad, relu, dropout) in [
            (true, true, false, false),
            (false, false, false, false),
            (true, true, true, false),
            (true, false, true, true),
            (false, true, true, true),
        ] {
            let lin = LinearAttrs {
                out_features: fout,
                bias,
            };
            let attrs = LinearBackwardAttrs {
                linear: lin.clone(),
                input_grad,
                relu,
                dropout,
            };
            let mut operands = vec![x.clone(), w.clone()];
            if relu {
                operands.push(arg("y", &[n, fout], Fill::Coarse));
            }
            if dropout {
                operands.push(m.clone());
            }
            operands.push(arg("dy", &[n, fout], Fill::Uniform(1.0)));
            let case = op_case(Op::LinearBackward(attrs), &operands);
            if !relu {
                out.push(case);
                continue;
            }
            let plain = LinearBackwardAttrs {
                linear: lin,
                input_grad,
                relu: false,
                dropout: false,
            };
            out.push(case.unfused(move |b, v| {
                let dy = v[v.len() - 1];
                let d = if dropout {
                    b.node("dropout_bw", Op::Mul, &[dy, v[3]])[0]
                } else {
                    dy
                };
                let dz = b.node("relu_bw", Op::ReluBackward, &[v[2], d]);
                b.node("linear_bw", Op::LinearBackward(plain), &[v[0], v[1], dz[0]])
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_inputs_match_the_graphs() {
        let all = cases();
        let mut names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate case names");
        for c in &all {
            assert_eq!(c.tolerances.len(), c.graph.outputs().len(), "{}", c.name);
            for (name, data) in &c.inputs {
                let id = c.graph.find(name).expect("input node");
                let ty = &c.graph[id].outputs[0];
                assert_eq!(ty.shape.elements(), data.len(), "{}: {name}", c.name);
            }
            if let Some(u) = &c.unfused {
                assert_eq!(u.outputs().len(), c.graph.outputs().len(), "{}", c.name);
            }
        }
    }
}
