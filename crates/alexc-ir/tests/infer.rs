//! Shape inference through the public API: every op on small cases with the
//! expected result types written out, and every error a model file can
//! trigger, including the fields (`attr`, `operand`) that the front end uses
//! to point at the offending value.

use alexc_ir::{
    infer, AlphaConvention, AvgPool2dAttrs, ConcatAttrs, Conv2dAttrs, DType, DropoutAttrs, Init,
    InputAttrs, LinearAttrs, LrnAttrs, Op, OpPattern, Operand, ParameterAttrs, Pool2dAttrs, Shape,
    ShapeError, SoftmaxAttrs, SplitAttrs, TensorType, MAX_ELEMENTS, MAX_RANK,
};

fn f32t(dims: &[usize]) -> TensorType {
    TensorType::f32(dims.to_vec())
}

fn i64t(dims: &[usize]) -> TensorType {
    TensorType::new(DType::I64, dims.to_vec())
}

/// Runs inference on `(producer name, type)` operands.
fn run(
    node: &str,
    op: &Op,
    operands: &[(&str, &TensorType)],
) -> Result<Vec<TensorType>, ShapeError> {
    let operands: Vec<Operand<'_>> = operands
        .iter()
        .map(|&(name, ty)| Operand { name, ty })
        .collect();
    infer(node, op, &operands)
}

/// Inference that must succeed with exactly one result.
fn one(node: &str, op: &Op, operands: &[(&str, &TensorType)]) -> TensorType {
    let mut results = run(node, op, operands)
        .unwrap_or_else(|e| panic!("{node}: unexpected error: {}", e.message));
    assert_eq!(results.len(), 1, "{node}: expected one result");
    results.remove(0)
}

/// Inference that must fail.
fn fails(node: &str, op: &Op, operands: &[(&str, &TensorType)]) -> ShapeError {
    match run(node, op, operands) {
        Ok(types) => panic!("{node}: expected an error, got {types:?}"),
        Err(e) => e,
    }
}

fn conv(out: usize, kernel: [usize; 2]) -> Conv2dAttrs {
    Conv2dAttrs {
        out_channels: out,
        kernel,
        stride: [1, 1],
        padding: [0, 0],
        dilation: [1, 1],
        groups: 1,
        bias: false,
    }
}

fn max_pool(kernel: usize, stride: usize, padding: usize) -> Op {
    Op::MaxPool2d(Pool2dAttrs {
        kernel: [kernel; 2],
        stride: [stride; 2],
        padding: [padding; 2],
    })
}

fn lrn() -> LrnAttrs {
    LrnAttrs {
        size: 5,
        alpha: 1e-4,
        beta: 0.75,
        k: 2.0,
        alpha_convention: AlphaConvention::DividedBySize,
    }
}

// ---------------------------------------------------------------- sources

#[test]
fn input_and_parameter_have_their_declared_type() {
    let op = Op::Input(InputAttrs {
        dtype: DType::F32,
        shape: Shape::new(vec![2, 3, 224, 224]),
    });
    assert_eq!(one("image", &op, &[]), f32t(&[2, 3, 224, 224]));

    let op = Op::Input(InputAttrs {
        dtype: DType::I64,
        shape: Shape::new(vec![2]),
    });
    assert_eq!(one("labels", &op, &[]), i64t(&[2]));

    let op = Op::Parameter(ParameterAttrs {
        dtype: DType::F32,
        shape: Shape::new(vec![96, 3, 11, 11]),
        init: Init::Normal {
            mean: 0.0,
            std: 0.01,
        },
    });
    assert_eq!(one("conv1.weight", &op, &[]), f32t(&[96, 3, 11, 11]));

    // A scalar is a legal shape (the loss is one).
    let op = Op::Input(InputAttrs {
        dtype: DType::F32,
        shape: Shape::scalar(),
    });
    assert_eq!(one("s", &op, &[]), f32t(&[]));
}

// ---------------------------------------------------------------- conv2d

#[test]
fn conv2d_alexnet_conv1_stride_and_padding() {
    let x = f32t(&[1, 3, 224, 224]);
    let w = f32t(&[96, 3, 11, 11]);
    let b = f32t(&[96]);
    let op = Op::Conv2d(Conv2dAttrs {
        stride: [4, 4],
        padding: [2, 2],
        bias: true,
        ..conv(96, [11, 11])
    });
    // floor((224 + 2·2 - 11) / 4) + 1 = 55
    assert_eq!(
        one(
            "conv1",
            &op,
            &[("image", &x), ("conv1.weight", &w), ("conv1.bias", &b)]
        ),
        f32t(&[1, 96, 55, 55])
    );
}

#[test]
fn conv2d_asymmetric_kernel_stride_and_padding() {
    let x = f32t(&[2, 4, 10, 12]);
    let w = f32t(&[6, 4, 3, 5]);
    let op = Op::Conv2d(Conv2dAttrs {
        stride: [2, 3],
        padding: [1, 2],
        ..conv(6, [3, 5])
    });
    // H: floor((10 + 2 - 3) / 2) + 1 = 5; W: floor((12 + 4 - 5) / 3) + 1 = 4.
    assert_eq!(
        one("c", &op, &[("x", &x), ("c.weight", &w)]),
        f32t(&[2, 6, 5, 4])
    );
}

#[test]
fn conv2d_dilation() {
    // Extent d·(k-1)+1: 2·2+1 = 5 along H, 3·2+1 = 7 along W.
    let x = f32t(&[1, 1, 9, 9]);
    let w = f32t(&[2, 1, 3, 3]);
    let op = Op::Conv2d(Conv2dAttrs {
        dilation: [2, 3],
        ..conv(2, [3, 3])
    });
    assert_eq!(
        one("c", &op, &[("x", &x), ("c.weight", &w)]),
        f32t(&[1, 2, 5, 3])
    );

    // With padding 1 and stride 2: floor((7 + 2 - 5) / 2) + 1 = 3.
    let x = f32t(&[1, 1, 7, 7]);
    let op = Op::Conv2d(Conv2dAttrs {
        dilation: [2, 2],
        padding: [1, 1],
        stride: [2, 2],
        ..conv(2, [3, 3])
    });
    assert_eq!(
        one("c", &op, &[("x", &x), ("c.weight", &w)]),
        f32t(&[1, 2, 3, 3])
    );
}

#[test]
fn conv2d_groups() {
    // AlexNet's two-tower conv2: 96 input channels, 48 per group.
    let x = f32t(&[1, 96, 27, 27]);
    let w = f32t(&[256, 48, 5, 5]);
    let b = f32t(&[256]);
    let op = Op::Conv2d(Conv2dAttrs {
        padding: [2, 2],
        groups: 2,
        bias: true,
        ..conv(256, [5, 5])
    });
    assert_eq!(
        one(
            "conv2",
            &op,
            &[("pool1", &x), ("conv2.weight", &w), ("conv2.bias", &b)]
        ),
        f32t(&[1, 256, 27, 27])
    );

    // Depthwise: one input channel per group.
    let x = f32t(&[1, 8, 5, 5]);
    let w = f32t(&[8, 1, 3, 3]);
    let op = Op::Conv2d(Conv2dAttrs {
        groups: 8,
        ..conv(8, [3, 3])
    });
    assert_eq!(
        one("dw", &op, &[("x", &x), ("dw.weight", &w)]),
        f32t(&[1, 8, 3, 3])
    );
}

#[test]
fn conv2d_channel_mismatch_names_both_nodes() {
    // conv2 was declared with 96 input channels, but pool1 has 256.
    let x = f32t(&[1, 256, 13, 13]);
    let w = f32t(&[256, 96, 5, 5]);
    let b = f32t(&[256]);
    let op = Op::Conv2d(Conv2dAttrs {
        padding: [2, 2],
        bias: true,
        ..conv(256, [5, 5])
    });
    let e = fails(
        "conv2",
        &op,
        &[("pool1", &x), ("conv2.weight", &w), ("conv2.bias", &b)],
    );
    assert_eq!(
        e.message,
        "conv2 expects 96 input channels, but pool1 produces 256×13×13"
    );
    assert_eq!(e.operand, Some(0));
    assert_eq!(e.attr, Some("in_channels"));
    assert_eq!(
        e.hint.as_deref(),
        Some("set in_channels to 256, or feed conv2 from a layer with 96 channels")
    );
}

#[test]
fn conv2d_grouped_channel_mismatch_counts_all_groups() {
    // Weight [8, 2, …] with groups 2 needs 4 input channels.
    let x = f32t(&[1, 6, 5, 5]);
    let w = f32t(&[8, 2, 3, 3]);
    let op = Op::Conv2d(Conv2dAttrs {
        groups: 2,
        ..conv(8, [3, 3])
    });
    let e = fails("c", &op, &[("x", &x), ("c.weight", &w)]);
    assert_eq!(
        e.message,
        "c expects 4 input channels, but x produces 6×5×5"
    );
    assert_eq!(e.attr, Some("in_channels"));
}

#[test]
fn conv2d_kernel_larger_than_padded_input() {
    let x = f32t(&[1, 3, 4, 4]);
    let w = f32t(&[8, 3, 7, 7]);
    let op = Op::Conv2d(Conv2dAttrs {
        padding: [1, 1],
        ..conv(8, [7, 7])
    });
    let e = fails("conv", &op, &[("pool", &x), ("conv.weight", &w)]);
    assert_eq!(
        e.message,
        "conv: kernel 7×7 is larger than its padded input: pool produces 4×4, padded by 1×1 to 6×6"
    );
    assert_eq!(e.attr, Some("kernel"));
    assert_eq!(e.operand, Some(0));
    assert!(e.hint.is_some());

    // Exactly fitting is fine: 6 = 4 + 2·1 gives one output position.
    let w = f32t(&[8, 3, 6, 6]);
    let op = Op::Conv2d(Conv2dAttrs {
        padding: [1, 1],
        ..conv(8, [6, 6])
    });
    assert_eq!(
        one("conv", &op, &[("pool", &x), ("conv.weight", &w)]),
        f32t(&[1, 8, 1, 1])
    );
}

#[test]
fn conv2d_dilated_kernel_larger_than_input_reports_the_extent() {
    let x = f32t(&[1, 1, 4, 4]);
    let w = f32t(&[1, 1, 3, 3]);
    let op = Op::Conv2d(Conv2dAttrs {
        dilation: [2, 2],
        ..conv(1, [3, 3])
    });
    let e = fails("c", &op, &[("x", &x), ("c.weight", &w)]);
    assert!(
        e.message
            .starts_with("c: dilated kernel 3×3 (extent 5) is larger"),
        "{}",
        e.message
    );
    assert_eq!(e.attr, Some("kernel"));
}

#[test]
fn conv2d_zero_stride_and_dilation() {
    let x = f32t(&[1, 1, 8, 8]);
    let w = f32t(&[1, 1, 3, 3]);
    let op = Op::Conv2d(Conv2dAttrs {
        stride: [1, 0],
        ..conv(1, [3, 3])
    });
    let e = fails("c", &op, &[("x", &x), ("c.weight", &w)]);
    assert_eq!(e.message, "c: stride 1×0 has a zero size");
    assert_eq!(e.attr, Some("stride"));
    assert_eq!(
        e.hint.as_deref(),
        Some("every stride size must be at least 1")
    );

    let op = Op::Conv2d(Conv2dAttrs {
        dilation: [0, 1],
        ..conv(1, [3, 3])
    });
    let e = fails("c", &op, &[("x", &x), ("c.weight", &w)]);
    assert_eq!(e.message, "c: dilation 0×1 has a zero size");
    assert_eq!(e.attr, Some("dilation"));
}

#[test]
fn conv2d_window_attributes_have_a_limit() {
    let x = f32t(&[1, 1, 8, 8]);
    let w = f32t(&[1, 1, 3, 3]);
    let op = Op::Conv2d(Conv2dAttrs {
        stride: [1 << 21, 1],
        ..conv(1, [3, 3])
    });
    let e = fails("c", &op, &[("x", &x), ("c.weight", &w)]);
    assert_eq!(e.attr, Some("stride"));
    assert!(e.message.contains("larger than the limit"), "{}", e.message);

    let op = Op::Conv2d(Conv2dAttrs {
        padding: [usize::MAX, 0],
        ..conv(1, [3, 3])
    });
    let e = fails("c", &op, &[("x", &x), ("c.weight", &w)]);
    assert_eq!(e.attr, Some("padding"));
}

#[test]
fn conv2d_groups_must_divide() {
    // Input channels fit (2 groups × 2), but 3 outputs do not split in 2.
    let x = f32t(&[1, 4, 8, 8]);
    let w = f32t(&[3, 2, 3, 3]);
    let op = Op::Conv2d(Conv2dAttrs {
        groups: 2,
        ..conv(3, [3, 3])
    });
    let e = fails("c", &op, &[("x", &x), ("c.weight", &w)]);
    assert_eq!(e.message, "c: out_channels 3 is not divisible by groups 2");
    assert_eq!(e.attr, Some("groups"));

    let op = Op::Conv2d(Conv2dAttrs {
        groups: 0,
        ..conv(3, [3, 3])
    });
    let e = fails("c", &op, &[("x", &x), ("c.weight", &w)]);
    assert_eq!(e.message, "c: groups must be at least 1");
    assert_eq!(e.attr, Some("groups"));

    let op = Op::Conv2d(conv(0, [3, 3]));
    let e = fails("c", &op, &[("x", &x), ("c.weight", &w)]);
    assert_eq!(e.attr, Some("out_channels"));
}

#[test]
fn conv2d_weight_and_bias_shapes_are_checked() {
    let x = f32t(&[1, 3, 8, 8]);
    // Weight for a 5×5 kernel, attributes say 3×3.
    let w = f32t(&[4, 3, 5, 5]);
    let e = fails(
        "c",
        &Op::Conv2d(conv(4, [3, 3])),
        &[("x", &x), ("c.weight", &w)],
    );
    assert_eq!(e.operand, Some(1));
    assert_eq!(
        e.message,
        "c: weight c.weight is f32[4, 3, 5, 5], but out_channels=4 and kernel=3×3 need [4, _, 3, 3]"
    );

    let w = f32t(&[4, 3, 3, 3]);
    let b = f32t(&[5]);
    let op = Op::Conv2d(Conv2dAttrs {
        bias: true,
        ..conv(4, [3, 3])
    });
    let e = fails("c", &op, &[("x", &x), ("c.weight", &w), ("c.bias", &b)]);
    assert_eq!(e.operand, Some(2));
    assert_eq!(e.message, "c: bias c.bias is f32[5], but it must be [4]");
}

#[test]
fn conv2d_after_flatten_is_rejected() {
    let x = f32t(&[1, 64]);
    let w = f32t(&[4, 64, 1, 1]);
    let e = fails(
        "c",
        &Op::Conv2d(conv(4, [1, 1])),
        &[("flat", &x), ("c.weight", &w)],
    );
    assert_eq!(
        e.message,
        "c expects an image batch [N, C, H, W], but flat produces f32[1, 64]"
    );
    assert_eq!(e.operand, Some(0));
}

// ---------------------------------------------------------------- pooling

#[test]
fn max_pool_overlapping_and_padded() {
    // AlexNet's overlapping 3×3 stride-2 pooling: floor((55 - 3) / 2) + 1 = 27.
    let x = f32t(&[1, 96, 55, 55]);
    assert_eq!(
        one("pool1", &max_pool(3, 2, 0), &[("relu1", &x)]),
        f32t(&[1, 96, 27, 27])
    );

    // Padding 1: floor((8 + 2 - 3) / 2) + 1 = 4.
    let x = f32t(&[2, 2, 8, 8]);
    assert_eq!(
        one("p", &max_pool(3, 2, 1), &[("x", &x)]),
        f32t(&[2, 2, 4, 4])
    );

    // Asymmetric window.
    let op = Op::MaxPool2d(Pool2dAttrs {
        kernel: [3, 1],
        stride: [1, 2],
        padding: [1, 0],
    });
    // H: floor((4 + 2 - 3) / 1) + 1 = 4; W: floor((5 - 1) / 2) + 1 = 3.
    assert_eq!(
        one("p", &op, &[("x", &f32t(&[1, 1, 4, 5]))]),
        f32t(&[1, 1, 4, 3])
    );
}

#[test]
fn avg_pool_with_and_without_padding() {
    let avg = |kernel: usize, stride: usize, padding: usize, include: bool| {
        Op::AvgPool2d(AvgPool2dAttrs {
            kernel: [kernel; 2],
            stride: [stride; 2],
            padding: [padding; 2],
            count_include_pad: include,
        })
    };
    let x = f32t(&[1, 3, 7, 7]);
    // floor((7 - 2) / 2) + 1 = 3: the last row and column are dropped.
    assert_eq!(
        one("p", &avg(2, 2, 0, true), &[("x", &x)]),
        f32t(&[1, 3, 3, 3])
    );
    // floor((7 + 2 - 2) / 2) + 1 = 4; count_include_pad does not change the shape.
    assert_eq!(
        one("p", &avg(2, 2, 1, true), &[("x", &x)]),
        f32t(&[1, 3, 4, 4])
    );
    assert_eq!(
        one("p", &avg(2, 2, 1, false), &[("x", &x)]),
        f32t(&[1, 3, 4, 4])
    );
}

#[test]
fn pool_padding_is_at_most_half_the_kernel() {
    let x = f32t(&[1, 1, 8, 8]);
    // kernel 3: padding 1 is the most allowed.
    assert!(run("p", &max_pool(3, 1, 1), &[("x", &x)]).is_ok());
    let e = fails("p", &max_pool(3, 1, 2), &[("x", &x)]);
    assert_eq!(e.message, "p: padding 2×2 is more than half of kernel 3×3");
    assert_eq!(e.attr, Some("padding"));
    // kernel 2: padding 1 (= 2/2) is allowed.
    assert!(run("p", &max_pool(2, 2, 1), &[("x", &x)]).is_ok());
}

#[test]
fn pool_zero_sizes_and_too_large_kernels() {
    let x = f32t(&[1, 1, 2, 2]);
    let e = fails("p", &max_pool(0, 1, 0), &[("x", &x)]);
    assert_eq!(e.message, "p: kernel 0×0 has a zero size");
    assert_eq!(e.attr, Some("kernel"));

    let e = fails("p", &max_pool(2, 0, 0), &[("x", &x)]);
    assert_eq!(e.attr, Some("stride"));

    let e = fails("pool5", &max_pool(3, 2, 0), &[("conv5", &x)]);
    assert_eq!(
        e.message,
        "pool5: kernel 3×3 is larger than its padded input: conv5 produces 2×2, padded by 0×0 to 2×2"
    );
    assert_eq!(e.attr, Some("kernel"));
    assert_eq!(e.operand, Some(0));
}

#[test]
fn pool_needs_an_image_batch() {
    let e = fails("p", &max_pool(2, 2, 0), &[("flat", &f32t(&[1, 16]))]);
    assert_eq!(e.operand, Some(0));
    assert!(
        e.message.starts_with("p expects an image batch"),
        "{}",
        e.message
    );
}

// ---------------------------------------------------------------- elementwise and normalization

#[test]
fn relu_dropout_lrn_keep_the_type() {
    let x = f32t(&[2, 96, 55, 55]);
    assert_eq!(one("relu1", &Op::Relu, &[("conv1", &x)]), x);
    assert_eq!(one("norm1", &Op::Lrn(lrn()), &[("relu1", &x)]), x);
    let drop = |p: f64| Op::Dropout(DropoutAttrs { p });
    let h = f32t(&[2, 4096]);
    assert_eq!(one("drop6", &drop(0.5), &[("fc6", &h)]), h);
    assert_eq!(one("drop6", &drop(0.0), &[("fc6", &h)]), h);
    // LRN across channels only needs [N, C, …].
    assert_eq!(one("n", &Op::Lrn(lrn()), &[("x", &h)]), h);
}

#[test]
fn dropout_probability_is_in_zero_to_one() {
    let h = f32t(&[2, 4096]);
    for p in [1.0, 1.5, -0.1, f64::NAN] {
        let e = fails("drop", &Op::Dropout(DropoutAttrs { p }), &[("fc", &h)]);
        assert_eq!(e.attr, Some("p"), "p = {p}");
        assert!(e.message.contains("outside [0, 1)"), "{}", e.message);
    }
}

#[test]
fn lrn_attributes_are_checked() {
    let x = f32t(&[1, 8, 4, 4]);
    let e = fails(
        "norm",
        &Op::Lrn(LrnAttrs { size: 0, ..lrn() }),
        &[("x", &x)],
    );
    assert_eq!(e.attr, Some("size"));
    let e = fails(
        "norm",
        &Op::Lrn(LrnAttrs {
            alpha: f64::NAN,
            ..lrn()
        }),
        &[("x", &x)],
    );
    assert_eq!(e.attr, Some("alpha"));
    let e = fails(
        "norm",
        &Op::Lrn(LrnAttrs {
            beta: f64::INFINITY,
            ..lrn()
        }),
        &[("x", &x)],
    );
    assert_eq!(e.attr, Some("beta"));
    let e = fails(
        "norm",
        &Op::Lrn(LrnAttrs {
            k: f64::NEG_INFINITY,
            ..lrn()
        }),
        &[("x", &x)],
    );
    assert_eq!(e.attr, Some("k"));
    let e = fails("norm", &Op::Lrn(lrn()), &[("v", &f32t(&[8]))]);
    assert_eq!(e.operand, Some(0));
}

#[test]
fn lrn_window_and_effective_alpha() {
    let a = lrn();
    // size 5: two channels on each side, clipped at the edges.
    assert_eq!(a.window(0, 10), (0, 2));
    assert_eq!(a.window(1, 10), (0, 3));
    assert_eq!(a.window(5, 10), (3, 7));
    assert_eq!(a.window(9, 10), (7, 9));
    // Even size: one more channel below than above.
    let even = LrnAttrs { size: 4, ..lrn() };
    assert_eq!(even.window(5, 10), (3, 6));
    // size 1: the channel itself.
    assert_eq!(LrnAttrs { size: 1, ..lrn() }.window(3, 10), (3, 3));

    assert!((a.effective_alpha() - 2e-5).abs() < 1e-18);
    let absolute = LrnAttrs {
        alpha_convention: AlphaConvention::Absolute,
        ..lrn()
    };
    assert_eq!(absolute.effective_alpha(), 1e-4);
}

// ---------------------------------------------------------------- flatten, linear, softmax

#[test]
fn flatten_keeps_the_batch() {
    assert_eq!(
        one(
            "flatten",
            &Op::Flatten,
            &[("pool5", &f32t(&[2, 256, 6, 6]))]
        ),
        f32t(&[2, 9216])
    );
    assert_eq!(
        one("f", &Op::Flatten, &[("x", &f32t(&[3, 5]))]),
        f32t(&[3, 5])
    );
    let e = fails("f", &Op::Flatten, &[("x", &f32t(&[5]))]);
    assert_eq!(e.operand, Some(0));
}

#[test]
fn linear_with_and_without_bias() {
    let x = f32t(&[2, 9216]);
    let w = f32t(&[4096, 9216]);
    let b = f32t(&[4096]);
    let op = Op::Linear(LinearAttrs {
        out_features: 4096,
        bias: true,
    });
    assert_eq!(
        one(
            "fc6",
            &op,
            &[("drop6", &x), ("fc6.weight", &w), ("fc6.bias", &b)]
        ),
        f32t(&[2, 4096])
    );
    let op = Op::Linear(LinearAttrs {
        out_features: 10,
        bias: false,
    });
    assert_eq!(
        one(
            "fc",
            &op,
            &[("h", &f32t(&[2, 4096])), ("fc.weight", &f32t(&[10, 4096]))]
        ),
        f32t(&[2, 10])
    );
}

#[test]
fn linear_without_flatten_hints_at_flatten() {
    let x = f32t(&[1, 256, 6, 6]);
    let w = f32t(&[4096, 9216]);
    let op = Op::Linear(LinearAttrs {
        out_features: 4096,
        bias: false,
    });
    let e = fails("fc6", &op, &[("pool5", &x), ("fc6.weight", &w)]);
    assert_eq!(
        e.message,
        "fc6 expects a matrix [N, features], but pool5 produces f32[1, 256, 6, 6]"
    );
    assert_eq!(e.operand, Some(0));
    assert_eq!(
        e.hint.as_deref(),
        Some("insert a flatten layer before fc6: it would give 9216 features")
    );
}

#[test]
fn linear_feature_weight_and_bias_mismatches() {
    let x = f32t(&[1, 1000]);
    let w = f32t(&[4096, 4096]);
    let op = Op::Linear(LinearAttrs {
        out_features: 4096,
        bias: false,
    });
    let e = fails("fc7", &op, &[("relu6", &x), ("fc7.weight", &w)]);
    assert_eq!(
        e.message,
        "fc7 expects 4096 input features, but relu6 produces 1000"
    );
    assert_eq!(e.operand, Some(0));
    assert_eq!(e.attr, Some("in_features"));
    assert_eq!(e.hint.as_deref(), Some("set in_features to 1000"));

    // Weight with the wrong number of rows.
    let e = fails(
        "fc",
        &Op::Linear(LinearAttrs {
            out_features: 10,
            bias: false,
        }),
        &[("x", &x), ("fc.weight", &f32t(&[11, 1000]))],
    );
    assert_eq!(e.operand, Some(1));

    let e = fails(
        "fc",
        &Op::Linear(LinearAttrs {
            out_features: 10,
            bias: true,
        }),
        &[
            ("x", &x),
            ("fc.weight", &f32t(&[10, 1000])),
            ("fc.bias", &f32t(&[1, 10])),
        ],
    );
    assert_eq!(e.operand, Some(2));
}

#[test]
fn softmax_along_an_axis() {
    let x = f32t(&[2, 10]);
    assert_eq!(
        one(
            "prob",
            &Op::Softmax(SoftmaxAttrs { axis: 1 }),
            &[("fc8", &x)]
        ),
        x
    );
    assert_eq!(
        one(
            "prob",
            &Op::Softmax(SoftmaxAttrs { axis: 0 }),
            &[("fc8", &x)]
        ),
        x
    );
    let e = fails(
        "prob",
        &Op::Softmax(SoftmaxAttrs { axis: 2 }),
        &[("fc8", &x)],
    );
    assert_eq!(
        e.message,
        "prob: softmax axis 2 is out of range for fc8, which has rank 2"
    );
    assert_eq!(e.attr, Some("axis"));
}

// ---------------------------------------------------------------- concat, split, add

#[test]
fn concat_sums_the_axis() {
    let a = f32t(&[1, 48, 5, 5]);
    let b = f32t(&[1, 80, 5, 5]);
    let op = Op::Concat(ConcatAttrs { axis: 1 });
    assert_eq!(
        one("cat", &op, &[("a", &a), ("b", &b)]),
        f32t(&[1, 128, 5, 5])
    );
    // Three operands, and one operand alone.
    assert_eq!(
        one("cat", &op, &[("a", &a), ("b", &b), ("a", &a)]),
        f32t(&[1, 176, 5, 5])
    );
    assert_eq!(one("cat", &op, &[("a", &a)]), a);
    // Along the batch axis.
    let op = Op::Concat(ConcatAttrs { axis: 0 });
    assert_eq!(
        one("cat", &op, &[("a", &f32t(&[2, 3])), ("b", &f32t(&[4, 3]))]),
        f32t(&[6, 3])
    );
}

#[test]
fn concat_errors() {
    let op = Op::Concat(ConcatAttrs { axis: 1 });
    let e = fails(
        "norm1",
        &op,
        &[
            ("norm1a", &f32t(&[1, 4, 5, 5])),
            ("norm1b", &f32t(&[1, 4, 6, 6])),
        ],
    );
    assert_eq!(
        e.message,
        "norm1 concatenates along axis 1, but norm1a produces 4×5×5 and norm1b produces 4×6×6: the other dimensions must match"
    );
    assert_eq!(e.operand, Some(1));

    // Different ranks.
    let e = fails(
        "c",
        &op,
        &[("a", &f32t(&[1, 4, 5, 5])), ("b", &f32t(&[1, 4]))],
    );
    assert_eq!(e.operand, Some(1));

    let e = fails(
        "c",
        &Op::Concat(ConcatAttrs { axis: 2 }),
        &[("a", &f32t(&[1, 4]))],
    );
    assert_eq!(e.attr, Some("axis"));

    let e = fails("c", &op, &[]);
    assert_eq!(e.message, "c: concat needs at least one operand");

    // A non-float operand in any position.
    let e = fails(
        "c",
        &op,
        &[("a", &f32t(&[1, 4])), ("labels", &i64t(&[1, 4]))],
    );
    assert_eq!(e.operand, Some(1));
}

#[test]
fn split_has_one_result_per_piece() {
    let x = f32t(&[1, 96, 55, 55]);
    let op = Op::Split(SplitAttrs {
        axis: 1,
        sizes: vec![48, 48],
    });
    assert_eq!(
        run("towers1", &op, &[("relu1", &x)]).expect("split"),
        vec![f32t(&[1, 48, 55, 55]), f32t(&[1, 48, 55, 55])]
    );
    let op = Op::Split(SplitAttrs {
        axis: 1,
        sizes: vec![3, 3, 4],
    });
    assert_eq!(
        run("s", &op, &[("x", &f32t(&[2, 10]))]).expect("split"),
        vec![f32t(&[2, 3]), f32t(&[2, 3]), f32t(&[2, 4])]
    );
    // One piece is the identity.
    let op = Op::Split(SplitAttrs {
        axis: 0,
        sizes: vec![2],
    });
    assert_eq!(
        run("s", &op, &[("x", &f32t(&[2, 10]))]).expect("split"),
        vec![f32t(&[2, 10])]
    );
}

#[test]
fn split_errors() {
    let x = f32t(&[1, 96, 55, 55]);
    let split = |axis: usize, sizes: Vec<usize>| Op::Split(SplitAttrs { axis, sizes });
    let e = fails("towers1", &split(1, vec![40, 40]), &[("relu1", &x)]);
    assert_eq!(
        e.message,
        "towers1 splits 80 along axis 1, but relu1 produces 96×55×55 (96 along that axis)"
    );
    assert_eq!(e.attr, Some("sizes"));
    assert_eq!(e.operand, Some(0));
    assert_eq!(e.hint.as_deref(), Some("the sizes must add up to 96"));

    let e = fails("s", &split(1, vec![]), &[("x", &x)]);
    assert_eq!(e.attr, Some("sizes"));
    let e = fails("s", &split(1, vec![96, 0]), &[("x", &x)]);
    assert_eq!(e.attr, Some("sizes"));
    let e = fails("s", &split(4, vec![96]), &[("x", &x)]);
    assert_eq!(e.attr, Some("axis"));
    // A sum that overflows is reported, not wrapped.
    let e = fails("s", &split(1, vec![usize::MAX, 97]), &[("x", &x)]);
    assert!(e.message.contains("splits more than 2^64"), "{}", e.message);
}

#[test]
fn add_needs_equal_types() {
    let x = f32t(&[2, 4, 3, 3]);
    assert_eq!(one("sum", &Op::Add, &[("a", &x), ("b", &x)]), x);
    // The same value twice: add(%3, %3).
    assert_eq!(one("sum", &Op::Add, &[("a", &x), ("a", &x)]), x);

    let e = fails("sum", &Op::Add, &[("a", &x), ("b", &f32t(&[2, 4, 3, 4]))]);
    assert_eq!(
        e.message,
        "sum adds a (f32[2, 4, 3, 3]) to b (f32[2, 4, 3, 4]): the shapes must be equal"
    );
    assert_eq!(e.operand, Some(1));
}

// ---------------------------------------------------------------- the loss

#[test]
fn softmax_cross_entropy_with_i64_labels_is_a_scalar() {
    let logits = f32t(&[4, 10]);
    let labels = i64t(&[4]);
    assert_eq!(
        one(
            "loss",
            &Op::SoftmaxCrossEntropy,
            &[("fc8", &logits), ("labels", &labels)]
        ),
        TensorType::new(DType::F32, Shape::scalar())
    );
}

#[test]
fn softmax_cross_entropy_errors() {
    let op = Op::SoftmaxCrossEntropy;
    let logits = f32t(&[4, 10]);

    let e = fails("loss", &op, &[("fc8", &logits), ("labels", &f32t(&[4]))]);
    assert_eq!(e.operand, Some(1));
    assert_eq!(
        e.message,
        "loss expects i64 labels of shape [N], but labels is f32[4]"
    );
    let e = fails("loss", &op, &[("fc8", &logits), ("labels", &i64t(&[4, 1]))]);
    assert_eq!(e.operand, Some(1));
    let e = fails("loss", &op, &[("fc8", &logits), ("labels", &i64t(&[3]))]);
    assert_eq!(e.message, "loss: fc8 has batch 4 but labels has batch 3");
    assert_eq!(e.operand, Some(1));
    let e = fails(
        "loss",
        &op,
        &[("pool5", &f32t(&[4, 10, 1, 1])), ("labels", &i64t(&[4]))],
    );
    assert_eq!(e.operand, Some(0));
    assert_eq!(
        e.hint.as_deref(),
        Some("insert a flatten layer before the loss")
    );
    // Logits must be float.
    let e = fails(
        "loss",
        &op,
        &[("labels", &i64t(&[4, 10])), ("labels", &i64t(&[4]))],
    );
    assert_eq!(e.operand, Some(0));
}

// ---------------------------------------------------------------- arity and dtype

#[test]
fn wrong_arity() {
    let x = f32t(&[1, 4]);
    let e = fails("relu1", &Op::Relu, &[("a", &x), ("b", &x)]);
    assert_eq!(e.message, "relu1: relu takes 1 operand, but 2 were given");
    assert_eq!(e.hint.as_deref(), Some("give relu exactly 1 input"));

    let e = fails("sum", &Op::Add, &[("a", &x)]);
    assert_eq!(e.message, "sum: add takes 2 operands, but 1 was given");
    assert_eq!(e.hint.as_deref(), Some("give add exactly 2 inputs"));

    // A biased convolution takes its bias as a third operand.
    let op = Op::Conv2d(Conv2dAttrs {
        bias: true,
        ..conv(4, [1, 1])
    });
    let e = fails(
        "c",
        &op,
        &[
            ("x", &f32t(&[1, 1, 2, 2])),
            ("c.weight", &f32t(&[4, 1, 1, 1])),
        ],
    );
    assert_eq!(e.message, "c: conv2d takes 3 operands, but 2 were given");

    let op = Op::Input(InputAttrs {
        dtype: DType::F32,
        shape: Shape::new(vec![1]),
    });
    let e = fails("image", &op, &[("x", &x)]);
    assert_eq!(e.message, "image: input takes 0 operands, but 1 was given");

    let e = fails("f", &Op::Flatten, &[]);
    assert_eq!(e.message, "f: flatten takes 1 operand, but 0 were given");
}

#[test]
fn non_float_operands_are_rejected() {
    let labels = i64t(&[4]);
    let e = fails("relu1", &Op::Relu, &[("labels", &labels)]);
    assert_eq!(
        e.message,
        "relu1 expects a floating-point operand, but labels is i64[4]"
    );
    assert_eq!(e.operand, Some(0));
    assert_eq!(
        e.hint.as_deref(),
        Some("integer tensors (labels) can only feed the loss")
    );

    let e = fails("sum", &Op::Add, &[("x", &f32t(&[4])), ("labels", &labels)]);
    assert_eq!(e.operand, Some(1));

    let img = i64t(&[1, 1, 4, 4]);
    let e = fails(
        "c",
        &Op::Conv2d(conv(1, [1, 1])),
        &[("img", &img), ("w", &f32t(&[1, 1, 1, 1]))],
    );
    assert_eq!(e.operand, Some(0));
    let e = fails(
        "c",
        &Op::Conv2d(conv(1, [1, 1])),
        &[("x", &f32t(&[1, 1, 4, 4])), ("w", &i64t(&[1, 1, 1, 1]))],
    );
    assert_eq!(e.operand, Some(1));
    for op in [
        Op::Flatten,
        Op::Lrn(lrn()),
        max_pool(1, 1, 0),
        Op::Softmax(SoftmaxAttrs { axis: 0 }),
        Op::Dropout(DropoutAttrs { p: 0.5 }),
        Op::Split(SplitAttrs {
            axis: 0,
            sizes: vec![1],
        }),
    ] {
        let e = fails("n", &op, &[("img", &img)]);
        assert_eq!(e.operand, Some(0), "{}", op.name());
    }
}

// ---------------------------------------------------------------- size limits

fn input(shape: Vec<usize>) -> Op {
    Op::Input(InputAttrs {
        dtype: DType::F32,
        shape: Shape::new(shape),
    })
}

#[test]
fn element_count_limit_is_inclusive() {
    // 2^31 - 1: every element count and offset fits a signed 32-bit integer.
    assert_eq!(MAX_ELEMENTS, i32::MAX as u64);
    let max = MAX_ELEMENTS as usize;
    // Exactly the limit is allowed, one more is not.
    assert!(run("x", &input(vec![max]), &[]).is_ok());
    let e = fails("x", &input(vec![max + 1]), &[]);
    assert_eq!(
        e.message,
        format!(
            "x would produce an illegal tensor: [{}] has {} elements, more than the limit of {MAX_ELEMENTS} per tensor",
            max + 1,
            max + 1
        )
    );
    assert_eq!(
        e.hint.as_deref(),
        Some("reduce the batch size or the layer sizes")
    );
    assert_eq!(e.attr, None);
    assert_eq!(e.operand, None);
}

#[test]
fn results_over_the_limit_are_rejected() {
    // 2^30 input elements, four output channels: 2^32 output elements.
    let x = f32t(&[1, 1, 1 << 15, 1 << 15]);
    let w = f32t(&[4, 1, 1, 1]);
    let e = fails(
        "conv1",
        &Op::Conv2d(conv(4, [1, 1])),
        &[("image", &x), ("conv1.weight", &w)],
    );
    assert_eq!(
        e.message,
        format!(
            "conv1 would produce an illegal tensor: [1, 4, 32768, 32768] has 4294967296 elements, more than the limit of {MAX_ELEMENTS} per tensor"
        )
    );

    // Concatenating pieces that are each legal but together one too many.
    let half = MAX_ELEMENTS as usize / 2;
    let e = fails(
        "cat",
        &Op::Concat(ConcatAttrs { axis: 0 }),
        &[
            ("a", &f32t(&[half])),
            ("b", &f32t(&[MAX_ELEMENTS as usize - half])),
            ("c", &f32t(&[1])),
        ],
    );
    assert!(e.message.contains("more than the limit"), "{}", e.message);
    // Batch doubling the input past the limit: [2, 2^30] is 2^31 elements.
    assert!(run("x", &input(vec![2, 1 << 30]), &[]).is_err());
}

#[test]
fn element_count_overflow_is_reported() {
    let e = fails("x", &input(vec![1 << 32, 1 << 32, 1 << 32]), &[]);
    assert_eq!(
        e.message,
        "x would produce an illegal tensor: the element count of [4294967296, 4294967296, 4294967296] overflows 64 bits"
    );
    let op = Op::Parameter(ParameterAttrs {
        dtype: DType::F32,
        shape: Shape::new(vec![usize::MAX, 2]),
        init: Init::Constant { value: 0.0 },
    });
    let e = fails("w", &op, &[]);
    assert!(e.message.contains("overflows 64 bits"), "{}", e.message);
}

#[test]
fn zero_dimensions_and_rank_are_limited() {
    let e = fails("x", &input(vec![1, 0, 3]), &[]);
    assert_eq!(
        e.message,
        "x would produce an illegal tensor: dimension 1 of [1, 0, 3] is zero"
    );
    assert!(run("x", &input(vec![1; MAX_RANK]), &[]).is_ok());
    let e = fails("x", &input(vec![1; MAX_RANK + 1]), &[]);
    assert!(
        e.message.contains("rank 9 exceeds the limit of 8"),
        "{}",
        e.message
    );
}

#[test]
fn shape_helpers() {
    let s = Shape::new(vec![1, 256, 13, 13]);
    assert_eq!(s.to_string(), "[1, 256, 13, 13]");
    assert_eq!(s.sample(), "256×13×13");
    assert_eq!(Shape::new(vec![7]).sample(), "7");
    assert_eq!(Shape::scalar().sample(), "scalar");
    assert_eq!(s.checked_elements(), Some(43264));
    assert_eq!(s.elements(), 43264);
    assert_eq!(f32t(&[1, 96, 55, 55]).to_string(), "f32[1, 96, 55, 55]");
    assert_eq!(i64t(&[4]).size_bytes(), 32);
    assert_eq!(f32t(&[]).to_string(), "f32[]");
}

// ---------------------------------------------------------------- op metadata

#[test]
fn op_arity_results_and_patterns() {
    let split = Op::Split(SplitAttrs {
        axis: 1,
        sizes: vec![1, 2, 3],
    });
    assert_eq!(split.num_results(), 3);
    assert_eq!(split.arity(), Some(1));
    assert_eq!(Op::Concat(ConcatAttrs { axis: 1 }).arity(), None);
    assert_eq!(Op::Conv2d(conv(1, [1, 1])).arity(), Some(2));
    assert_eq!(
        Op::Linear(LinearAttrs {
            out_features: 1,
            bias: true
        })
        .arity(),
        Some(3)
    );
    assert_eq!(Op::SoftmaxCrossEntropy.arity(), Some(2));
    assert_eq!(Op::Relu.pattern(), OpPattern::ElemWise);
    assert_eq!(Op::Flatten.pattern(), OpPattern::Injective);
    assert_eq!(Op::Lrn(lrn()).pattern(), OpPattern::Reduction);
    assert_eq!(max_pool(3, 2, 0).pattern(), OpPattern::OutEWiseFusable);
    assert_eq!(input(vec![1]).pattern(), OpPattern::Opaque);
    assert!(input(vec![1]).is_source());
    assert!(!Op::Relu.is_source());
    assert_eq!(max_pool(3, 2, 0).name(), "max-pool2d");
    assert_eq!(
        max_pool(3, 2, 0).attr_string(),
        "kernel=3x3, stride=2x2, padding=0x0"
    );
}
