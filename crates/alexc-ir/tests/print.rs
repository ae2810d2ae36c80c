//! The text printer and the DOT export, pinned by insta snapshots of a small
//! hand-built graph with a multi-result split (`%5.1`) and a concat; and a
//! property test: random sequential networks with valid sizes always verify,
//! get the shapes the textbook formulas give, and print one line per node.

use alexc_ir::{
    dot, print, verify, AlphaConvention, AvgPool2dAttrs, ConcatAttrs, Conv2dAttrs, DType,
    DropoutAttrs, Graph, Init, InputAttrs, LinearAttrs, LrnAttrs, NodeId, Op, ParameterAttrs,
    Pool2dAttrs, Shape, SoftmaxAttrs, SplitAttrs, ValueId,
};
use proptest::prelude::*;

fn add(g: &mut Graph, name: &str, op: Op, operands: &[ValueId]) -> NodeId {
    g.add(name, op, operands)
        .unwrap_or_else(|e| panic!("adding {name}: {e}"))
}

fn param(dims: &[usize], init: Init) -> Op {
    Op::Parameter(ParameterAttrs {
        dtype: DType::F32,
        shape: Shape::new(dims.to_vec()),
        init,
    })
}

fn normal() -> Init {
    Init::Normal {
        mean: 0.0,
        std: 0.01,
    }
}

/// A two-tower network in miniature: conv → relu → split into two towers
/// (LRN on each) → concat → residual add → pool → flatten → dropout →
/// linear → softmax, with a loss on labels.
fn towers() -> Graph {
    let mut g = Graph::new("towers", 2);
    let v = ValueId::from;
    let image = add(
        &mut g,
        "image",
        Op::Input(InputAttrs {
            dtype: DType::F32,
            shape: Shape::new(vec![2, 3, 8, 8]),
        }),
        &[],
    );
    let w = add(&mut g, "conv1.weight", param(&[4, 3, 3, 3], normal()), &[]);
    let b = add(
        &mut g,
        "conv1.bias",
        param(&[4], Init::Constant { value: 1.0 }),
        &[],
    );
    let conv = add(
        &mut g,
        "conv1",
        Op::Conv2d(Conv2dAttrs {
            out_channels: 4,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            groups: 1,
            bias: true,
        }),
        &[v(image), v(w), v(b)],
    );
    let relu = add(&mut g, "relu1", Op::Relu, &[v(conv)]);
    let split = add(
        &mut g,
        "towers1",
        Op::Split(SplitAttrs {
            axis: 1,
            sizes: vec![2, 2],
        }),
        &[v(relu)],
    );
    let lrn = |alpha_convention| {
        Op::Lrn(LrnAttrs {
            size: 5,
            alpha: 1e-4,
            beta: 0.75,
            k: 2.0,
            alpha_convention,
        })
    };
    let na = add(
        &mut g,
        "norm1a",
        lrn(AlphaConvention::DividedBySize),
        &[ValueId::new(split, 0)],
    );
    let nb = add(
        &mut g,
        "norm1b",
        lrn(AlphaConvention::Absolute),
        &[ValueId::new(split, 1)],
    );
    let cat = add(
        &mut g,
        "norm1",
        Op::Concat(ConcatAttrs { axis: 1 }),
        &[v(na), v(nb)],
    );
    let sum = add(&mut g, "residual", Op::Add, &[v(cat), v(relu)]);
    let pool = add(
        &mut g,
        "pool1",
        Op::MaxPool2d(Pool2dAttrs {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
        }),
        &[v(sum)],
    );
    let avg = add(
        &mut g,
        "pool2",
        Op::AvgPool2d(AvgPool2dAttrs {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            count_include_pad: true,
        }),
        &[v(pool)],
    );
    let flat = add(&mut g, "flatten", Op::Flatten, &[v(avg)]);
    let drop = add(
        &mut g,
        "drop",
        Op::Dropout(DropoutAttrs { p: 0.5 }),
        &[v(flat)],
    );
    let fw = add(
        &mut g,
        "fc.weight",
        param(
            &[10, 16],
            Init::File {
                path: "weights.safetensors".to_string(),
                tensor: Some("classifier.weight".to_string()),
            },
        ),
        &[],
    );
    let fc = add(
        &mut g,
        "fc",
        Op::Linear(LinearAttrs {
            out_features: 10,
            bias: false,
        }),
        &[v(drop), v(fw)],
    );
    let prob = add(
        &mut g,
        "prob",
        Op::Softmax(SoftmaxAttrs { axis: 1 }),
        &[v(fc)],
    );
    let labels = add(
        &mut g,
        "labels",
        Op::Input(InputAttrs {
            dtype: DType::I64,
            shape: Shape::new(vec![2]),
        }),
        &[],
    );
    let loss = add(&mut g, "loss", Op::SoftmaxCrossEntropy, &[v(fc), v(labels)]);
    g.set_outputs(vec![v(prob), v(loss), ValueId::new(split, 1)])
        .expect("outputs exist");
    verify(&g).expect("the example verifies");
    g
}

#[test]
fn text_form() {
    let g = towers();
    let text = print::to_text(&g);
    // The second result of the split is spelled `%5.1`.
    assert!(text.contains("(%5.1)"), "{text}");
    insta::assert_snapshot!("towers_text", text);
}

#[test]
fn dot_form() {
    insta::assert_snapshot!("towers_dot", dot::to_dot(&towers()));
}

#[test]
fn printing_is_deterministic() {
    assert_eq!(print::to_text(&towers()), print::to_text(&towers()));
    assert_eq!(dot::to_dot(&towers()), dot::to_dot(&towers()));
}

#[test]
fn names_are_quoted_and_escaped() {
    let mut g = Graph::new("quote\"d", 1);
    add(
        &mut g,
        "a \"b\" \\c",
        Op::Input(InputAttrs {
            dtype: DType::F32,
            shape: Shape::new(vec![1]),
        }),
        &[],
    );
    let text = print::to_text(&g);
    assert!(
        text.contains(r#"%0 = input "a \"b\" \\c" : f32[1]"#),
        "{text}"
    );
    let dot = dot::to_dot(&g);
    assert!(dot.starts_with("digraph \"quote\\\"d\" {"), "{dot}");
    assert!(
        dot.contains(r#"label="a \"b\" \\c\ninput\nf32[1]""#),
        "{dot}"
    );
}

#[test]
fn empty_graph_prints_an_empty_return() {
    let text = print::to_text(&Graph::new("empty", 1));
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    assert_eq!(lines, ["graph empty (batch 1) {", "  return", "}"]);
}

// ---------------------------------------------------------------- random sequential networks

/// One layer of a random chain. Sizes are raw draws; `build` adapts them so
/// that every layer is valid for the shape it receives.
#[derive(Clone, Debug)]
enum Layer {
    Relu,
    Conv {
        out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
        grouped: bool,
    },
    MaxPool {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    AvgPool {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    Flatten,
    Linear {
        out: usize,
        bias: bool,
    },
}

fn layer() -> impl Strategy<Value = Layer> {
    prop_oneof![
        Just(Layer::Relu),
        (
            1usize..=8,
            1usize..=5,
            1usize..=3,
            0usize..=2,
            1usize..=2,
            any::<bool>()
        )
            .prop_map(
                |(out, kernel, stride, padding, dilation, grouped)| Layer::Conv {
                    out,
                    kernel,
                    stride,
                    padding,
                    dilation,
                    grouped
                }
            ),
        (1usize..=3, 1usize..=3, 0usize..=1).prop_map(|(kernel, stride, padding)| {
            Layer::MaxPool {
                kernel,
                stride,
                padding,
            }
        }),
        (1usize..=3, 1usize..=3, 0usize..=1).prop_map(|(kernel, stride, padding)| {
            Layer::AvgPool {
                kernel,
                stride,
                padding,
            }
        }),
        Just(Layer::Flatten),
        (1usize..=16, any::<bool>()).prop_map(|(out, bias)| Layer::Linear { out, bias }),
    ]
}

/// The output size of a window, computed independently of alexc-ir.
fn window(input: usize, kernel: usize, stride: usize, padding: usize, dilation: usize) -> usize {
    (input + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1
}

/// Builds the chain, keeping for each node the shape the formulas predict.
fn build(batch: usize, channels: usize, size: usize, layers: &[Layer]) -> (Graph, Vec<Vec<usize>>) {
    let mut g = Graph::new("random", batch);
    let mut expected = Vec::new();
    let mut shape = vec![batch, channels, size, size];
    let x = add(
        &mut g,
        "x",
        Op::Input(InputAttrs {
            dtype: DType::F32,
            shape: Shape::new(shape.clone()),
        }),
        &[],
    );
    expected.push(shape.clone());
    let mut cur = ValueId::from(x);
    for (i, layer) in layers.iter().enumerate() {
        let image = shape.len() == 4;
        let (op, operands, next) = match *layer {
            Layer::Conv {
                out,
                kernel,
                stride,
                padding,
                dilation,
                grouped,
            } if image && dilation * (kernel - 1) < shape[2] + 2 * padding => {
                // The dilated extent d·(k-1)+1 fits in the padded input.
                let c = shape[1];
                let groups = if grouped && c % 2 == 0 && out % 2 == 0 {
                    2
                } else {
                    1
                };
                let w = add(
                    &mut g,
                    &format!("l{i}.weight"),
                    param(&[out, c / groups, kernel, kernel], normal()),
                    &[],
                );
                expected.push(vec![out, c / groups, kernel, kernel]);
                let o = window(shape[2], kernel, stride, padding, dilation);
                (
                    Op::Conv2d(Conv2dAttrs {
                        out_channels: out,
                        kernel: [kernel; 2],
                        stride: [stride; 2],
                        padding: [padding; 2],
                        dilation: [dilation; 2],
                        groups,
                        bias: false,
                    }),
                    vec![cur, w.into()],
                    vec![shape[0], out, o, o],
                )
            }
            Layer::MaxPool {
                kernel,
                stride,
                padding,
            } if image && padding <= kernel / 2 && kernel <= shape[2] + 2 * padding => {
                let o = window(shape[2], kernel, stride, padding, 1);
                (
                    Op::MaxPool2d(Pool2dAttrs {
                        kernel: [kernel; 2],
                        stride: [stride; 2],
                        padding: [padding; 2],
                    }),
                    vec![cur],
                    vec![shape[0], shape[1], o, o],
                )
            }
            Layer::AvgPool {
                kernel,
                stride,
                padding,
            } if image && padding <= kernel / 2 && kernel <= shape[2] + 2 * padding => {
                let o = window(shape[2], kernel, stride, padding, 1);
                (
                    Op::AvgPool2d(AvgPool2dAttrs {
                        kernel: [kernel; 2],
                        stride: [stride; 2],
                        padding: [padding; 2],
                        count_include_pad: padding == 0,
                    }),
                    vec![cur],
                    vec![shape[0], shape[1], o, o],
                )
            }
            // A linear layer on an image gets its flatten first (as a
            // separate node), so the chain stays valid.
            Layer::Flatten | Layer::Linear { .. } if image => {
                let features = shape[1..].iter().product();
                (Op::Flatten, vec![cur], vec![shape[0], features])
            }
            Layer::Linear { out, bias } => {
                let w = add(
                    &mut g,
                    &format!("l{i}.weight"),
                    param(&[out, shape[1]], normal()),
                    &[],
                );
                expected.push(vec![out, shape[1]]);
                let mut operands = vec![cur, w.into()];
                if bias {
                    let b = add(
                        &mut g,
                        &format!("l{i}.bias"),
                        param(&[out], Init::Constant { value: 0.0 }),
                        &[],
                    );
                    expected.push(vec![out]);
                    operands.push(b.into());
                }
                (
                    Op::Linear(LinearAttrs {
                        out_features: out,
                        bias,
                    }),
                    operands,
                    vec![shape[0], out],
                )
            }
            // Anything that does not fit (a window larger than the input, a
            // flatten of a matrix) becomes a ReLU.
            _ => (Op::Relu, vec![cur], shape.clone()),
        };
        let id = add(&mut g, &format!("l{i}"), op, &operands);
        expected.push(next.clone());
        shape = next;
        cur = id.into();
    }
    g.set_outputs(vec![cur]).expect("the last value exists");
    (g, expected)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_chains_verify_and_print_one_line_per_node(
        batch in 1usize..=3,
        channels in 1usize..=4,
        size in 1usize..=24,
        layers in prop::collection::vec(layer(), 0..12),
    ) {
        let (g, expected) = build(batch, channels, size, &layers);
        prop_assert!(verify(&g).is_ok(), "{:?}", verify(&g));

        // Node ids follow insertion order, so `expected` lines up with them.
        prop_assert_eq!(g.len(), expected.len());
        for (id, dims) in g.node_ids().zip(&expected) {
            prop_assert_eq!(g[id].outputs[0].shape.dims(), dims.as_slice(), "{}", g[id].name);
        }

        let text = print::to_text(&g);
        let lines: Vec<&str> = text.lines().collect();
        prop_assert_eq!(lines.len(), g.len() + 3);
        prop_assert_eq!(lines[0], format!("graph random (batch {batch}) {{"));
        prop_assert_eq!(lines[lines.len() - 1], "}");
        let last = g.outputs()[0];
        prop_assert_eq!(lines[lines.len() - 2], format!("  return {last}"));
        // Built in order, printed in order: line k is node %k.
        for (k, (id, line)) in g.node_ids().zip(&lines[1..=g.len()]).enumerate() {
            prop_assert_eq!(id, NodeId(k as u32));
            let prefix = format!("  {id} = {} {:?}", g[id].op.name(), g[id].name);
            prop_assert!(line.starts_with(&prefix), "{line}");
            let suffix = format!(" : {}", g[id].outputs[0]);
            prop_assert!(line.ends_with(&suffix), "{line}");
        }

        // DOT: one node statement per node, one edge per operand.
        let dot = dot::to_dot(&g);
        let node_lines = dot.lines().filter(|l| l.contains(" [shape=")).count();
        let edge_lines = dot.lines().filter(|l| l.contains(" -> ")).count();
        let operands: usize = g.node_ids().map(|id| g.operands(id).len()).sum();
        prop_assert_eq!(node_lines, g.len());
        prop_assert_eq!(edge_lines, operands);
    }
}
