//! `node_stats`: parameter and multiply-accumulate counts, checked against
//! arithmetic done by hand in the comments.

use alexc_ir::{
    node_stats, Conv2dAttrs, DType, Graph, Init, InputAttrs, LinearAttrs, NodeId, NodeStats, Op,
    ParameterAttrs, Pool2dAttrs, Shape, ValueId,
};

fn add(g: &mut Graph, name: &str, op: Op, operands: &[ValueId]) -> NodeId {
    g.add(name, op, operands)
        .unwrap_or_else(|e| panic!("adding {name}: {e}"))
}

fn input(g: &mut Graph, name: &str, dims: &[usize]) -> ValueId {
    let op = Op::Input(InputAttrs {
        dtype: DType::F32,
        shape: Shape::new(dims.to_vec()),
    });
    add(g, name, op, &[]).into()
}

fn param(g: &mut Graph, name: &str, dims: &[usize]) -> ValueId {
    let op = Op::Parameter(ParameterAttrs {
        dtype: DType::F32,
        shape: Shape::new(dims.to_vec()),
        init: Init::Constant { value: 0.0 },
    });
    add(g, name, op, &[]).into()
}

/// Adds a convolution with its weight (and bias) parameters.
#[allow(clippy::too_many_arguments)]
fn conv(
    g: &mut Graph,
    name: &str,
    x: ValueId,
    in_channels: usize,
    out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    groups: usize,
    bias: bool,
) -> NodeId {
    let w = param(
        g,
        &format!("{name}.weight"),
        &[out, in_channels / groups, kernel, kernel],
    );
    let mut operands = vec![x, w];
    if bias {
        operands.push(param(g, &format!("{name}.bias"), &[out]));
    }
    let op = Op::Conv2d(Conv2dAttrs {
        out_channels: out,
        kernel: [kernel; 2],
        stride: [stride; 2],
        padding: [padding; 2],
        dilation: [1, 1],
        groups,
        bias,
    });
    add(g, name, op, &operands)
}

fn linear(g: &mut Graph, name: &str, x: ValueId, inp: usize, out: usize, bias: bool) -> NodeId {
    let w = param(g, &format!("{name}.weight"), &[out, inp]);
    let mut operands = vec![x, w];
    if bias {
        operands.push(param(g, &format!("{name}.bias"), &[out]));
    }
    let op = Op::Linear(LinearAttrs {
        out_features: out,
        bias,
    });
    add(g, name, op, &operands)
}

fn stats(params: u64, macs: u64) -> NodeStats {
    NodeStats { params, macs }
}

#[test]
fn conv_alexnet_conv1() {
    let mut g = Graph::new("conv1", 1);
    let x = input(&mut g, "image", &[1, 3, 224, 224]);
    let c = conv(&mut g, "conv1", x, 3, 96, 11, 4, 2, 1, true);
    // params: 96·3·11·11 = 34,848 weights + 96 biases = 34,944.
    // output 96·55·55 = 290,400 elements, each 3·11·11 = 363 MACs:
    // 290,400 · 363 = 105,415,200.
    assert_eq!(node_stats(&g, c), stats(34_944, 105_415_200));
}

#[test]
fn grouped_conv_counts_only_its_group() {
    let mut g = Graph::new("conv2", 1);
    let x = input(&mut g, "pool1", &[1, 96, 27, 27]);
    let c = conv(&mut g, "conv2", x, 96, 256, 5, 1, 2, 2, true);
    // Weight [256, 48, 5, 5]: 256·48·25 = 307,200, + 256 biases = 307,456.
    // Output 256·27·27 = 186,624 elements, each 48·5·5 = 1,200 MACs:
    // 223,948,800 (half of the ungrouped 447,897,600).
    assert_eq!(node_stats(&g, c), stats(307_456, 223_948_800));

    // Depthwise, no bias, batch 2: weight [4, 1, 3, 3] = 36 params; output
    // 2·4·5·5 = 200 elements, 9 MACs each = 1,800.
    let mut g = Graph::new("dw", 2);
    let x = input(&mut g, "x", &[2, 4, 5, 5]);
    let c = conv(&mut g, "dw", x, 4, 4, 3, 1, 1, 4, false);
    assert_eq!(node_stats(&g, c), stats(36, 1_800));
}

#[test]
fn macs_scale_with_the_batch_but_params_do_not() {
    let mut g = Graph::new("conv1", 8);
    let x = input(&mut g, "image", &[8, 3, 224, 224]);
    let c = conv(&mut g, "conv1", x, 3, 96, 11, 4, 2, 1, true);
    assert_eq!(node_stats(&g, c), stats(34_944, 8 * 105_415_200));
}

#[test]
fn linear_with_and_without_bias() {
    let mut g = Graph::new("fc", 1);
    let x = input(&mut g, "flatten", &[1, 9216]);
    let fc6 = linear(&mut g, "fc6", x, 9216, 4096, true);
    // 4096·9216 = 37,748,736 weights + 4,096 biases = 37,752,832;
    // MACs: 4096 outputs · 9216 inputs = 37,748,736.
    assert_eq!(node_stats(&g, fc6), stats(37_752_832, 37_748_736));

    let mut g = Graph::new("fc", 4);
    let x = input(&mut g, "h", &[4, 4096]);
    let fc8 = linear(&mut g, "fc8", x, 4096, 1000, false);
    // 1000·4096 = 4,096,000 weights; MACs: 4 samples · 4,096,000.
    assert_eq!(node_stats(&g, fc8), stats(4_096_000, 16_384_000));
}

#[test]
fn other_nodes_cost_nothing() {
    let mut g = Graph::new("misc", 1);
    let x = input(&mut g, "x", &[1, 3, 8, 8]);
    let r = add(&mut g, "relu", Op::Relu, &[x]);
    let p = add(
        &mut g,
        "pool",
        Op::MaxPool2d(Pool2dAttrs {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
        }),
        &[r.into()],
    );
    let w = param(&mut g, "w", &[5, 5]);
    assert_eq!(node_stats(&g, r), NodeStats::default());
    assert_eq!(node_stats(&g, p), NodeStats::default());
    // A parameter node reads no parameters; its elements are counted at the
    // node that uses it.
    assert_eq!(node_stats(&g, w.node), NodeStats::default());
    assert_eq!(node_stats(&g, x.node), NodeStats::default());
    // Unknown nodes count nothing.
    assert_eq!(node_stats(&g, NodeId(999)), NodeStats::default());
}

#[test]
fn alexnet_totals() {
    // The single-tower AlexNet of models/alexnet.ron, built by hand.
    let mut g = Graph::new("alexnet", 1);
    let x = input(&mut g, "image", &[1, 3, 224, 224]);
    let pool = |g: &mut Graph, name: &str, x: NodeId| -> ValueId {
        let op = Op::MaxPool2d(Pool2dAttrs {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [0, 0],
        });
        add(g, name, op, &[x.into()]).into()
    };
    let c1 = conv(&mut g, "conv1", x, 3, 96, 11, 4, 2, 1, true);
    let p1 = pool(&mut g, "pool1", c1);
    let c2 = conv(&mut g, "conv2", p1, 96, 256, 5, 1, 2, 1, true);
    let p2 = pool(&mut g, "pool2", c2);
    let c3 = conv(&mut g, "conv3", p2, 256, 384, 3, 1, 1, 1, true);
    let c4 = conv(&mut g, "conv4", c3.into(), 384, 384, 3, 1, 1, 1, true);
    let c5 = conv(&mut g, "conv5", c4.into(), 384, 256, 3, 1, 1, 1, true);
    let p5 = pool(&mut g, "pool5", c5);
    let flat = add(&mut g, "flatten", Op::Flatten, &[p5]);
    let f6 = linear(&mut g, "fc6", flat.into(), 9216, 4096, true);
    let f7 = linear(&mut g, "fc7", f6.into(), 4096, 4096, true);
    let f8 = linear(&mut g, "fc8", f7.into(), 4096, 1000, true);

    // Per layer (params, MACs):
    //   conv1: 34,944        105,415,200  (96·55·55 · 3·11·11)
    //   conv2: 614,656       447,897,600  (256·27·27 · 96·5·5)
    //   conv3: 885,120       149,520,384  (384·13·13 · 256·3·3)
    //   conv4: 1,327,488     224,280,576  (384·13·13 · 384·3·3)
    //   conv5: 884,992       149,520,384  (256·13·13 · 384·3·3)
    //   fc6:   37,752,832    37,748,736
    //   fc7:   16,781,312    16,777,216
    //   fc8:   4,097,000     4,096,000
    let expected = [
        (c1, 34_944, 105_415_200),
        (c2, 614_656, 447_897_600),
        (c3, 885_120, 149_520_384),
        (c4, 1_327_488, 224_280_576),
        (c5, 884_992, 149_520_384),
        (f6, 37_752_832, 37_748_736),
        (f7, 16_781_312, 16_777_216),
        (f8, 4_097_000, 4_096_000),
    ];
    for (id, params, macs) in expected {
        assert_eq!(node_stats(&g, id), stats(params, macs), "{}", g[id].name);
    }
    let total = g
        .node_ids()
        .map(|id| node_stats(&g, id))
        .fold(NodeStats::default(), |a, s| {
            stats(a.params + s.params, a.macs + s.macs)
        });
    // 62,378,344 parameters, as the reference PyTorch model; 1,135,256,096 MACs.
    assert_eq!(total, stats(62_378_344, 1_135_256_096));
}
