//! Shape and type inference: the result types of one op from its operands.
//!
//! [`infer`] is the single source of truth for what an op accepts. The graph
//! builder calls it for every new node, the verifier calls it again to check
//! the stored types, and the model-format front end maps its errors back to
//! the offending line of the model file. Errors name both sides — the node
//! and the producer of the offending operand — because the operands carry the
//! producers' names.

use crate::op::{Conv2dAttrs, Op};
use crate::types::{DType, Shape, TensorType};

/// One operand as seen by inference: the producing node's name and the type.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    pub name: &'a str,
    pub ty: &'a TensorType,
}

/// Why an op cannot be applied to its operands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ShapeError {
    /// A full sentence naming the node and, where one is at fault, the operand.
    pub message: String,
    /// What to change.
    pub hint: Option<String>,
    /// The operand at fault, if one is.
    pub operand: Option<usize>,
    /// The attribute at fault, if one is (`kernel`, `in_channels`, …).
    pub attr: Option<&'static str>,
}

impl ShapeError {
    fn new(message: impl Into<String>) -> Self {
        ShapeError {
            message: message.into(),
            hint: None,
            operand: None,
            attr: None,
        }
    }
    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    fn operand(mut self, i: usize) -> Self {
        self.operand = Some(i);
        self
    }
    fn attr(mut self, attr: &'static str) -> Self {
        self.attr = Some(attr);
        self
    }
}

type Result<T> = std::result::Result<T, ShapeError>;

/// Infers the result types of `op`, applied by the node `node` to `operands`.
pub fn infer(node: &str, op: &Op, operands: &[Operand<'_>]) -> Result<Vec<TensorType>> {
    check_arity(node, op, operands.len())?;
    let results = match op {
        Op::Input(a) => vec![TensorType::new(a.dtype, a.shape.clone())],
        Op::Parameter(a) => vec![TensorType::new(a.dtype, a.shape.clone())],
        Op::Conv2d(a) => vec![conv2d(node, a, operands)?],
        Op::Relu | Op::Dropout(_) => {
            float(node, operands, 0)?;
            if let Op::Dropout(d) = op {
                if !(0.0..1.0).contains(&d.p) {
                    return Err(ShapeError::new(format!(
                        "{node}: dropout probability {} is outside [0, 1)",
                        d.p
                    ))
                    .attr("p")
                    .hint("p is the probability of dropping a unit: the paper uses 0.5"));
                }
            }
            vec![operands[0].ty.clone()]
        }
        Op::Lrn(a) => {
            let x = float(node, operands, 0)?;
            rank_at_least(node, operands, 0, 2, "an [N, C, …] tensor")?;
            if a.size == 0 {
                return Err(
                    ShapeError::new(format!("{node}: LRN size must be at least 1"))
                        .attr("size")
                        .hint("the paper uses size 5"),
                );
            }
            for (attr, v) in [("alpha", a.alpha), ("beta", a.beta), ("k", a.k)] {
                if !v.is_finite() {
                    return Err(ShapeError::new(format!("{node}: LRN {attr} is not finite"))
                        .attr(attr)
                        .hint("the paper uses alpha 1e-4, beta 0.75, k 2"));
                }
            }
            vec![x.clone()]
        }
        Op::MaxPool2d(a) => vec![pool2d(node, operands, a.kernel, a.stride, a.padding)?],
        Op::AvgPool2d(a) => vec![pool2d(node, operands, a.kernel, a.stride, a.padding)?],
        Op::Flatten => {
            let x = float(node, operands, 0)?;
            rank_at_least(node, operands, 0, 2, "a batched tensor")?;
            let d = x.shape.dims();
            vec![TensorType::new(
                x.dtype,
                vec![d[0], d[1..].iter().product()],
            )]
        }
        Op::Linear(a) => vec![linear(node, a.out_features, a.bias, operands)?],
        Op::Softmax(a) => {
            let x = float(node, operands, 0)?;
            if a.axis >= x.shape.rank() {
                return Err(ShapeError::new(format!(
                    "{node}: softmax axis {} is out of range for {}, which has rank {}",
                    a.axis,
                    operands[0].name,
                    x.shape.rank()
                ))
                .attr("axis")
                .hint("axis 1 is the class (or channel) axis"));
            }
            vec![x.clone()]
        }
        Op::Concat(a) => vec![concat(node, a.axis, operands)?],
        Op::Split(a) => split(node, a.axis, &a.sizes, operands)?,
        Op::Add => {
            let x = float(node, operands, 0)?;
            let y = float(node, operands, 1)?;
            if x != y {
                return Err(ShapeError::new(format!(
                    "{node} adds {} ({}) to {} ({}): the shapes must be equal",
                    operands[0].name, x, operands[1].name, y
                ))
                .operand(1)
                .hint("both operands of add must have the same shape; check the layers that produce them"));
            }
            vec![x.clone()]
        }
        Op::SoftmaxCrossEntropy => {
            let logits = float(node, operands, 0)?;
            let labels = operands[1];
            if logits.shape.rank() != 2 {
                return Err(ShapeError::new(format!(
                    "{node} expects logits of shape [N, classes], but {} produces {}",
                    operands[0].name, logits
                ))
                .operand(0)
                .hint("insert a flatten layer before the loss"));
            }
            if labels.ty.dtype != DType::I64 || labels.ty.shape.rank() != 1 {
                return Err(ShapeError::new(format!(
                    "{node} expects i64 labels of shape [N], but {} is {}",
                    labels.name, labels.ty
                ))
                .operand(1)
                .hint("labels are class indices, one per sample"));
            }
            if labels.ty.shape.dims()[0] != logits.shape.dims()[0] {
                return Err(ShapeError::new(format!(
                    "{node}: {} has batch {} but {} has batch {}",
                    operands[0].name,
                    logits.shape.dims()[0],
                    labels.name,
                    labels.ty.shape.dims()[0]
                ))
                .operand(1)
                .hint("logits and labels must have the same batch size"));
            }
            vec![TensorType::new(DType::F32, Shape::scalar())]
        }
        Op::DropoutMask(a) => {
            if !(0.0..1.0).contains(&a.p) {
                return Err(ShapeError::new(format!(
                    "{node}: dropout probability {} is outside [0, 1)",
                    a.p
                ))
                .attr("p")
                .hint("p is the probability of dropping a unit: the paper uses 0.5"));
            }
            vec![TensorType::new(DType::F32, a.shape.clone())]
        }
        Op::Momentum(a) => vec![TensorType::new(a.dtype, a.shape.clone())],
        Op::Mul | Op::ReluBackward => vec![same_types(node, op, operands)?],
        Op::Reshape(a) => {
            let x = float(node, operands, 0)?;
            if a.shape.checked_elements() != Some(x.shape.elements() as u64) {
                return Err(ShapeError::new(format!(
                    "{node}: cannot reshape {} ({}) to {}",
                    operands[0].name, x, a.shape
                ))
                .operand(0)
                .hint("a reshape keeps the element count"));
            }
            vec![TensorType::new(x.dtype, a.shape.clone())]
        }
        Op::ConvRelu(a) => vec![conv2d(node, a, operands)?],
        Op::LrnMaxPool(a) => {
            infer(node, &Op::Lrn(a.lrn.clone()), operands)?;
            vec![pool2d(
                node,
                operands,
                a.pool.kernel,
                a.pool.stride,
                a.pool.padding,
            )?]
        }
        Op::LinearRelu(a) => {
            let n = 2 + a.linear.bias as usize;
            let y = linear(node, a.linear.out_features, a.linear.bias, &operands[..n])?;
            if a.dropout {
                expect_type(node, operands, n, &y, "the dropout mask")?;
            }
            vec![y]
        }
        Op::Conv2dBackward(a) | Op::ConvReluBackward(a) => {
            let fwd = &operands[..2];
            let y = conv2d(
                node,
                &Conv2dAttrs {
                    bias: false,
                    ..a.conv.clone()
                },
                fwd,
            )?;
            let relu = matches!(op, Op::ConvReluBackward(_));
            if relu {
                expect_type(node, operands, 2, &y, "the fused forward output")?;
            }
            expect_type(node, operands, 2 + relu as usize, &y, "the output gradient")?;
            grads(
                a.input_grad,
                operands[0].ty,
                operands[1].ty,
                a.conv.bias.then_some(a.conv.out_channels),
            )
        }
        Op::LinearBackward(a) => {
            let y = linear(node, a.linear.out_features, false, &operands[..2])?;
            if a.dropout && !a.relu {
                return Err(ShapeError::new(format!(
                    "{node}: a linear backward folds dropout only together with ReLU"
                ))
                .hint("set relu as well, or apply the mask with a mul node"));
            }
            let mut k = 2;
            for (present, what) in [
                (a.relu, "the fused forward output"),
                (a.dropout, "the dropout mask"),
            ] {
                if present {
                    expect_type(node, operands, k, &y, what)?;
                    k += 1;
                }
            }
            expect_type(node, operands, k, &y, "the output gradient")?;
            grads(
                a.input_grad,
                operands[0].ty,
                operands[1].ty,
                a.linear.bias.then_some(a.linear.out_features),
            )
        }
        Op::LrnBackward(a) => {
            let x = infer(node, &Op::Lrn(a.clone()), &operands[..1])?;
            expect_type(node, operands, 1, &x[0], "the output gradient")?;
            vec![operands[0].ty.clone()]
        }
        Op::MaxPool2dBackward(a) => {
            let y = pool2d(node, &operands[..1], a.kernel, a.stride, a.padding)?;
            expect_type(node, operands, 1, &y, "the output gradient")?;
            vec![operands[0].ty.clone()]
        }
        Op::AvgPool2dBackward(a) => {
            let y = pool2d(node, &operands[..1], a.kernel, a.stride, a.padding)?;
            expect_type(node, operands, 1, &y, "the output gradient")?;
            vec![operands[0].ty.clone()]
        }
        Op::LrnMaxPoolBackward(a) => {
            let y = infer(node, &Op::LrnMaxPool(a.clone()), &operands[..1])?;
            expect_type(node, operands, 1, &y[0], "the output gradient")?;
            vec![operands[0].ty.clone()]
        }
        Op::SoftmaxBackward(a) => {
            let y = infer(node, &Op::Softmax(a.clone()), &operands[..1])?;
            expect_type(node, operands, 1, &y[0], "the output gradient")?;
            vec![operands[0].ty.clone()]
        }
        Op::SoftmaxCrossEntropyBackward => {
            infer(node, &Op::SoftmaxCrossEntropy, operands)?;
            vec![operands[0].ty.clone()]
        }
        Op::SgdUpdate(a) => {
            if !(a.momentum.is_finite() && a.weight_decay.is_finite()) {
                return Err(ShapeError::new(format!(
                    "{node}: momentum {} and weight decay {} must be finite",
                    a.momentum, a.weight_decay
                ))
                .hint("the paper uses momentum 0.9 and weight decay 5e-4"));
            }
            let w = float(node, operands, 0)?;
            expect_type(node, operands, 1, w, "the momentum buffer")?;
            expect_type(node, operands, 2, w, "the gradient")?;
            expect_type(
                node,
                operands,
                3,
                &TensorType::new(DType::F32, Shape::scalar()),
                "the learning rate",
            )?;
            vec![w.clone(), w.clone()]
        }
    };
    for ty in &results {
        ty.shape.check().map_err(|why| {
            ShapeError::new(format!("{node} would produce an illegal tensor: {why}"))
                .hint("reduce the batch size or the layer sizes")
        })?;
    }
    Ok(results)
}

/// Two operands of one float type; the result has that type.
fn same_types(node: &str, op: &Op, operands: &[Operand<'_>]) -> Result<TensorType> {
    let x = float(node, operands, 0)?;
    let y = float(node, operands, 1)?;
    if x != y {
        return Err(ShapeError::new(format!(
            "{node}: {} needs operands of one type, but {} is {} and {} is {}",
            op.name(),
            operands[0].name,
            x,
            operands[1].name,
            y
        ))
        .operand(1)
        .hint("both operands must have the same shape"));
    }
    Ok(x.clone())
}

/// Operand `i` must have type `want`.
fn expect_type(
    node: &str,
    operands: &[Operand<'_>],
    i: usize,
    want: &TensorType,
    what: &str,
) -> Result<()> {
    let o = operands[i];
    if o.ty != want {
        return Err(ShapeError::new(format!(
            "{node}: {what} must be {want}, but {} is {}",
            o.name, o.ty
        ))
        .operand(i)
        .hint("operand types of backward and fused ops follow the forward op's types"));
    }
    Ok(())
}

/// The results of a conv or linear backward: `[dx?, dw, db?]`.
fn grads(input_grad: bool, x: &TensorType, w: &TensorType, bias: Option<usize>) -> Vec<TensorType> {
    let mut out = Vec::with_capacity(3);
    if input_grad {
        out.push(x.clone());
    }
    out.push(w.clone());
    if let Some(n) = bias {
        out.push(TensorType::new(w.dtype, vec![n]));
    }
    out
}

fn check_arity(node: &str, op: &Op, n: usize) -> Result<()> {
    match op.arity() {
        Some(k) if k != n => Err(ShapeError::new(format!(
            "{node}: {} takes {k} operand{}, but {n} {} given",
            op.name(),
            if k == 1 { "" } else { "s" },
            if n == 1 { "was" } else { "were" }
        ))
        .hint(format!(
            "give {} exactly {k} input{}",
            op.name(),
            if k == 1 { "" } else { "s" }
        ))),
        None if n == 0 => Err(ShapeError::new(format!(
            "{node}: {} needs at least one operand",
            op.name()
        ))
        .hint("list its operands in `inputs`")),
        _ => Ok(()),
    }
}

/// Operand `i`, which must be a float tensor.
fn float<'a>(node: &str, operands: &[Operand<'a>], i: usize) -> Result<&'a TensorType> {
    let o = operands[i];
    if !o.ty.dtype.is_float() {
        return Err(ShapeError::new(format!(
            "{node} expects a floating-point operand, but {} is {}",
            o.name, o.ty
        ))
        .operand(i)
        .hint("integer tensors (labels) can only feed the loss"));
    }
    Ok(o.ty)
}

fn rank_at_least(
    node: &str,
    operands: &[Operand<'_>],
    i: usize,
    r: usize,
    what: &str,
) -> Result<()> {
    let o = operands[i];
    if o.ty.shape.rank() < r {
        return Err(ShapeError::new(format!(
            "{node} expects {what}, but {} produces {}",
            o.name, o.ty
        ))
        .operand(i)
        .hint("check the layer that feeds it"));
    }
    Ok(())
}

fn hw_str(v: [usize; 2]) -> String {
    format!("{}×{}", v[0], v[1])
}

/// The largest kernel, stride, padding, dilation or group count accepted;
/// keeps every size computation far from overflow.
const MAX_WINDOW: usize = 1 << 20;

/// Checks window attributes and computes the output spatial size of a
/// convolution or pooling window: `floor((x + 2p - d(k-1) - 1) / s) + 1`.
fn window_output(
    node: &str,
    input: &Operand<'_>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
) -> Result<[usize; 2]> {
    for (attr, v) in [
        ("kernel", kernel),
        ("stride", stride),
        ("dilation", dilation),
        ("padding", padding),
    ] {
        if v.iter().any(|&s| s > MAX_WINDOW) {
            return Err(ShapeError::new(format!(
                "{node}: {attr} {} is larger than the limit of {MAX_WINDOW}",
                hw_str(v)
            ))
            .attr(attr)
            .hint(format!("use a {attr} below {MAX_WINDOW}")));
        }
        if attr != "padding" && v.contains(&0) {
            return Err(
                ShapeError::new(format!("{node}: {attr} {} has a zero size", hw_str(v)))
                    .attr(attr)
                    .hint(format!("every {attr} size must be at least 1")),
            );
        }
    }
    let d = input.ty.shape.dims();
    let (h, w) = (d[2], d[3]);
    let mut out = [0; 2];
    for axis in 0..2 {
        let extent = dilation[axis] * (kernel[axis] - 1) + 1;
        let padded = [h, w][axis] + 2 * padding[axis];
        if extent > padded {
            let what = if dilation == [1, 1] {
                format!("kernel {}", hw_str(kernel))
            } else {
                format!("dilated kernel {} (extent {extent})", hw_str(kernel))
            };
            return Err(ShapeError::new(format!(
                "{node}: {what} is larger than its padded input: {} produces {}×{}, padded by {} to {}×{}",
                input.name,
                h,
                w,
                hw_str(padding),
                h + 2 * padding[0],
                w + 2 * padding[1]
            ))
            .attr("kernel")
            .operand(0)
            .hint("use a smaller kernel or more padding, or remove a downsampling layer before it"));
        }
        out[axis] = (padded - extent) / stride[axis] + 1;
    }
    Ok(out)
}

fn conv2d(node: &str, a: &Conv2dAttrs, operands: &[Operand<'_>]) -> Result<TensorType> {
    let x = float(node, operands, 0)?;
    let w = float(node, operands, 1)?;
    if x.shape.rank() != 4 {
        return Err(ShapeError::new(format!(
            "{node} expects an image batch [N, C, H, W], but {} produces {}",
            operands[0].name, x
        ))
        .operand(0)
        .hint("convolutions read 4-D image batches; move this layer before the flatten"));
    }
    if a.groups == 0 || a.out_channels == 0 {
        let attr = if a.groups == 0 {
            "groups"
        } else {
            "out_channels"
        };
        return Err(
            ShapeError::new(format!("{node}: {attr} must be at least 1"))
                .attr(attr)
                .hint(format!("set {attr} to a positive value")),
        );
    }
    if a.groups > MAX_WINDOW {
        return Err(ShapeError::new(format!(
            "{node}: groups {} is larger than the limit of {MAX_WINDOW}",
            a.groups
        ))
        .attr("groups")
        .hint("groups must divide the channel counts"));
    }
    let c = x.shape.dims()[1];
    let wd = w.shape.dims();
    if wd.len() != 4 || wd[0] != a.out_channels || wd[2..] != a.kernel {
        return Err(ShapeError::new(format!(
            "{node}: weight {} is {}, but out_channels={} and kernel={} need [{}, _, {}, {}]",
            operands[1].name,
            w,
            a.out_channels,
            hw_str(a.kernel),
            a.out_channels,
            a.kernel[0],
            a.kernel[1]
        ))
        .operand(1)
        .hint("the weight layout is [out_channels, in_channels / groups, kh, kw]"));
    }
    let expected_c = wd[1] * a.groups;
    if c != expected_c {
        return Err(ShapeError::new(format!(
            "{node} expects {expected_c} input channels, but {} produces {}",
            operands[0].name,
            x.shape.sample()
        ))
        .operand(0)
        .attr("in_channels")
        .hint(if c % a.groups == 0 {
            format!("set in_channels to {c}, or feed {node} from a layer with {expected_c} channels")
        } else {
            format!(
                "feed {node} from a layer with {expected_c} channels ({c} is not divisible by groups {})",
                a.groups
            )
        }));
    }
    if a.out_channels % a.groups != 0 {
        return Err(ShapeError::new(format!(
            "{node}: out_channels {} is not divisible by groups {}",
            a.out_channels, a.groups
        ))
        .attr("groups")
        .hint("choose groups that divide both channel counts"));
    }
    if a.bias {
        let b = float(node, operands, 2)?;
        if b.shape.dims() != [a.out_channels] {
            return Err(ShapeError::new(format!(
                "{node}: bias {} is {}, but it must be [{}]",
                operands[2].name, b, a.out_channels
            ))
            .operand(2)
            .hint("a bias has one value per output channel"));
        }
    }
    let [oh, ow] = window_output(
        node,
        &operands[0],
        a.kernel,
        a.stride,
        a.padding,
        a.dilation,
    )?;
    Ok(TensorType::new(
        x.dtype,
        vec![x.shape.dims()[0], a.out_channels, oh, ow],
    ))
}

fn pool2d(
    node: &str,
    operands: &[Operand<'_>],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Result<TensorType> {
    let x = float(node, operands, 0)?;
    if x.shape.rank() != 4 {
        return Err(ShapeError::new(format!(
            "{node} expects an image batch [N, C, H, W], but {} produces {}",
            operands[0].name, x
        ))
        .operand(0)
        .hint("pooling reads 4-D image batches; move this layer before the flatten"));
    }
    // As in PyTorch: a window must always overlap the unpadded input.
    if (0..2).any(|i| kernel[i] > 0 && padding[i] > kernel[i] / 2) {
        return Err(ShapeError::new(format!(
            "{node}: padding {} is more than half of kernel {}",
            hw_str(padding),
            hw_str(kernel)
        ))
        .attr("padding")
        .hint("padding may be at most half the kernel size"));
    }
    let [oh, ow] = window_output(node, &operands[0], kernel, stride, padding, [1, 1])?;
    let d = x.shape.dims();
    Ok(TensorType::new(x.dtype, vec![d[0], d[1], oh, ow]))
}

fn linear(node: &str, out: usize, bias: bool, operands: &[Operand<'_>]) -> Result<TensorType> {
    let x = float(node, operands, 0)?;
    let w = float(node, operands, 1)?;
    if x.shape.rank() != 2 {
        return Err(ShapeError::new(format!(
            "{node} expects a matrix [N, features], but {} produces {}",
            operands[0].name, x
        ))
        .operand(0)
        .hint(format!(
            "insert a flatten layer before {node}: it would give {} features",
            x.shape.dims().iter().skip(1).product::<usize>()
        )));
    }
    let wd = w.shape.dims();
    if wd.len() != 2 || wd[0] != out {
        return Err(ShapeError::new(format!(
            "{node}: weight {} is {}, but out_features={out} needs [{out}, _]",
            operands[1].name, w
        ))
        .operand(1)
        .hint("the weight layout is [out_features, in_features]"));
    }
    let features = x.shape.dims()[1];
    if features != wd[1] {
        return Err(ShapeError::new(format!(
            "{node} expects {} input features, but {} produces {}",
            wd[1], operands[0].name, features
        ))
        .operand(0)
        .attr("in_features")
        .hint(format!("set in_features to {features}")));
    }
    if bias {
        let b = float(node, operands, 2)?;
        if b.shape.dims() != [out] {
            return Err(ShapeError::new(format!(
                "{node}: bias {} is {}, but it must be [{out}]",
                operands[2].name, b
            ))
            .operand(2)
            .hint("a bias has one value per output feature"));
        }
    }
    Ok(TensorType::new(x.dtype, vec![x.shape.dims()[0], out]))
}

fn concat(node: &str, axis: usize, operands: &[Operand<'_>]) -> Result<TensorType> {
    let first = float(node, operands, 0)?;
    if axis >= first.shape.rank() {
        return Err(ShapeError::new(format!(
            "{node}: concat axis {axis} is out of range for {}, which has rank {}",
            operands[0].name,
            first.shape.rank()
        ))
        .attr("axis")
        .hint("axis 1 is the channel axis"));
    }
    let mut dims = first.shape.dims().to_vec();
    dims[axis] = 0;
    for (i, o) in operands.iter().enumerate() {
        let t = float(node, operands, i)?;
        let same_rank = t.shape.rank() == first.shape.rank();
        let agrees = same_rank
            && t.shape
                .dims()
                .iter()
                .zip(first.shape.dims())
                .enumerate()
                .all(|(ax, (a, b))| ax == axis || a == b);
        if !agrees || t.dtype != first.dtype {
            return Err(ShapeError::new(format!(
                "{node} concatenates along axis {axis}, but {} produces {} and {} produces {}: the other dimensions must match",
                operands[0].name,
                first.shape.sample(),
                o.name,
                t.shape.sample()
            ))
            .operand(i)
            .hint("concatenated tensors may differ only along the concat axis"));
        }
        dims[axis] += t.shape.dims()[axis];
    }
    Ok(TensorType::new(first.dtype, dims))
}

fn split(
    node: &str,
    axis: usize,
    sizes: &[usize],
    operands: &[Operand<'_>],
) -> Result<Vec<TensorType>> {
    let x = float(node, operands, 0)?;
    if axis >= x.shape.rank() {
        return Err(ShapeError::new(format!(
            "{node}: split axis {axis} is out of range for {}, which has rank {}",
            operands[0].name,
            x.shape.rank()
        ))
        .attr("axis")
        .hint("axis 1 is the channel axis"));
    }
    if sizes.is_empty() || sizes.contains(&0) {
        return Err(ShapeError::new(format!(
            "{node}: split sizes must be non-empty and positive"
        ))
        .attr("sizes")
        .hint("give one positive size per piece, e.g. sizes: [48, 48]"));
    }
    let total = sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s));
    let have = x.shape.dims()[axis];
    if total != Some(have) {
        let total = total.map_or_else(|| "more than 2^64".to_string(), |t| t.to_string());
        return Err(ShapeError::new(format!(
            "{node} splits {total} along axis {axis}, but {} produces {} ({have} along that axis)",
            operands[0].name,
            x.shape.sample()
        ))
        .attr("sizes")
        .operand(0)
        .hint(format!("the sizes must add up to {have}")));
    }
    Ok(sizes
        .iter()
        .map(|&s| {
            let mut d = x.shape.dims().to_vec();
            d[axis] = s;
            TensorType::new(x.dtype, d)
        })
        .collect())
}
