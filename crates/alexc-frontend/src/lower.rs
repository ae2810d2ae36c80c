//! Lowering a parsed model file to graph IR, with diagnostics.
//!
//! The algorithm:
//! 1. check every input and layer name (characters, uniqueness);
//! 2. resolve each layer's operands: its `inputs`, or else the previous
//!    layer in file order (the first layer reads the first input);
//! 3. order the layers topologically (file order among ready layers), so a
//!    layer may name one defined later, and report any cycle;
//! 4. for each layer, check its sizes, create its parameters (PyTorch names
//!    and layouts), and add its node to the graph, which runs shape inference;
//! 5. set the outputs and run the verifier.
//!
//! Every error carries the span of the value at fault, found through the span
//! tree of [`crate::spans`].

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::sync::Arc;

use alexc_ir::{
    AlphaConvention, AvgPool2dAttrs, ConcatAttrs, Conv2dAttrs, DType, DropoutAttrs, Graph,
    GraphError, Init, InputAttrs, LinearAttrs, LrnAttrs, Op, ParameterAttrs, Pool2dAttrs, Shape,
    SoftmaxAttrs, SplitAttrs, ValueId,
};

use crate::error::{ErrorKind, ModelError};
use crate::format::{AlphaConventionSpec, Dim, InitSpec, LayerSpec, ModelSpec, Pair};
use crate::spans::SpanNode;

type Result<T> = std::result::Result<T, Box<ModelError>>;

/// Where a name is defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Def {
    Input(usize),
    Layer(usize),
}

/// A resolved operand reference: the defining layer or input, and which of
/// its results (`split1.1`).
#[derive(Clone, Copy, Debug)]
struct Ref {
    def: Def,
    output: Option<u16>,
    /// Index into the layer's `inputs` list, or `None` for the implicit
    /// "previous layer" operand.
    item: Option<usize>,
}

pub(crate) struct Lowerer<'a> {
    pub src: &'a Arc<String>,
    pub file: &'a str,
    pub tree: Option<SpanNode>,
    pub spec: &'a ModelSpec,
    pub batch: usize,
}

impl Lowerer<'_> {
    fn error(&self, kind: ErrorKind, message: impl Into<String>) -> Box<ModelError> {
        ModelError::new(kind, message, self.file, Some(self.src.clone()))
    }

    fn layer_node(&self, i: usize) -> Option<&SpanNode> {
        self.tree.as_ref()?.field("layers")?.items().get(i)
    }

    fn input_node(&self, i: usize) -> Option<&SpanNode> {
        self.tree.as_ref()?.field("inputs")?.items().get(i)
    }

    fn def_node(&self, def: Def) -> Option<&SpanNode> {
        match def {
            Def::Input(i) => self.input_node(i),
            Def::Layer(i) => self.layer_node(i),
        }
    }

    fn field_span(&self, def: Def, key: &str) -> Option<Range<usize>> {
        Some(self.def_node(def)?.field(key)?.span.clone())
    }

    /// The best short anchor for a layer or input: its name value.
    fn anchor(&self, def: Def) -> Option<Range<usize>> {
        let node = self.def_node(def)?;
        node.field("name")
            .map(|n| n.span.clone())
            .or_else(|| node.name_span())
            .or_else(|| Some(node.span.clone()))
    }

    fn name_of(&self, def: Def) -> &str {
        match def {
            Def::Input(i) => &self.spec.inputs[i].name,
            Def::Layer(i) => self.spec.layers[i].common().0,
        }
    }

    fn inputs_item_span(&self, layer: usize, item: usize) -> Option<Range<usize>> {
        Some(
            self.layer_node(layer)?
                .field("inputs")?
                .items()
                .get(item)?
                .span
                .clone(),
        )
    }

    pub fn lower(&self) -> Result<Graph> {
        if self.batch == 0 || self.batch as u64 > alexc_ir::MAX_ELEMENTS {
            return Err(self
                .error(
                    ErrorKind::InvalidSize,
                    format!("batch size {} is out of range", self.batch),
                )
                .hint("the batch size must be at least 1"));
        }
        if self.spec.inputs.is_empty() {
            return Err(self
                .error(ErrorKind::MissingField, "the model has no inputs")
                .at(self.tree.as_ref().and_then(|t| t.field("inputs")).map(|n| n.span.clone()), "empty")
                .hint("declare an input, e.g. inputs: [Input(name: \"image\", shape: [\"N\", 3, 224, 224])]"));
        }
        if self.spec.layers.is_empty() {
            return Err(self
                .error(ErrorKind::MissingField, "the model has no layers")
                .at(
                    self.tree
                        .as_ref()
                        .and_then(|t| t.field("layers"))
                        .map(|n| n.span.clone()),
                    "empty",
                )
                .hint("add at least one layer"));
        }
        self.check_training()?;
        let defs = self.check_names()?;
        let refs = self.resolve(&defs)?;
        let order = self.order(&refs)?;

        let mut graph = Graph::new(self.spec.name.clone(), self.batch);
        let mut values: HashMap<Def, Vec<ValueId>> = HashMap::new();
        for i in 0..self.spec.inputs.len() {
            let id = self.add_input(&mut graph, i)?;
            values.insert(Def::Input(i), vec![id.into()]);
        }
        for &i in &order {
            let mut operands = Vec::new();
            for r in &refs[i] {
                operands.push(self.operand_value(i, r, &values)?);
            }
            let results = self.add_layer(&mut graph, i, &refs[i], &operands)?;
            values.insert(Def::Layer(i), results);
        }

        let outputs = self.outputs(&defs, &values)?;
        graph
            .set_outputs(outputs)
            .map_err(|e| self.error(ErrorKind::UnknownName, e.to_string()))?;
        if let Err(errors) = alexc_ir::verify(&graph) {
            let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            return Err(self.error(
                ErrorKind::Shape,
                format!(
                    "internal error: the lowered graph fails verification: {}",
                    list.join("; ")
                ),
            ));
        }
        Ok(graph)
    }

    /// Checks the `training` section's values.
    fn check_training(&self) -> Result<()> {
        let t = &self.spec.training;
        let field = |key: &str| {
            self.tree
                .as_ref()
                .and_then(|n| n.field("training"))
                .and_then(|n| n.field(key))
                .map(|n| n.span.clone())
        };
        if !(0.0..1.0).contains(&t.momentum) {
            return Err(self
                .error(
                    ErrorKind::InvalidValue,
                    format!("training momentum {} is outside [0, 1)", t.momentum),
                )
                .at(field("momentum"), "here")
                .hint("the paper uses momentum 0.9"));
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return Err(self
                .error(
                    ErrorKind::InvalidValue,
                    format!(
                        "training weight_decay {} must be finite and non-negative",
                        t.weight_decay
                    ),
                )
                .at(field("weight_decay"), "here")
                .hint("the paper uses weight decay 5e-4"));
        }
        Ok(())
    }

    /// Checks names and builds the name table.
    fn check_names(&self) -> Result<HashMap<&str, Def>> {
        let mut defs: HashMap<&str, Def> = HashMap::new();
        let all = (0..self.spec.inputs.len())
            .map(Def::Input)
            .chain((0..self.spec.layers.len()).map(Def::Layer));
        for def in all {
            let name = self.name_of(def);
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(self
                    .error(ErrorKind::InvalidName, format!("invalid name {name:?}"))
                    .at(self.anchor(def), "this name")
                    .hint("names start with a letter or '_' and contain letters, digits, '_' and '-'; \
                           '.' is reserved (`conv1.weight` names a parameter, `split1.0` a result of a split)"));
            }
            if let Some(&first) = defs.get(name) {
                return Err(self
                    .error(
                        ErrorKind::DuplicateName,
                        format!("the name `{name}` is defined twice"),
                    )
                    .at(self.anchor(def), "defined again here")
                    .also(self.anchor(first), "first defined here")
                    .hint("every input and layer needs a unique name"));
            }
            defs.insert(name, def);
        }
        Ok(defs)
    }

    /// Parses `name` or `name.k` and finds the definition.
    fn lookup(&self, defs: &HashMap<&str, Def>, text: &str) -> Option<(Def, Option<u16>)> {
        if let Some(&def) = defs.get(text) {
            return Some((def, None));
        }
        let (base, index) = text.rsplit_once('.')?;
        // Plain decimal, no sign, no leading zeros: `split1.0`, `split1.12`.
        let canonical =
            index.bytes().all(|b| b.is_ascii_digit()) && (index == "0" || !index.starts_with('0'));
        if !canonical {
            return None;
        }
        let index: u16 = index.parse().ok()?;
        defs.get(base).map(|&def| (def, Some(index)))
    }

    fn unknown_name(&self, defs: &HashMap<&str, Def>, text: &str, what: String) -> Box<ModelError> {
        let base = text.split('.').next().unwrap_or(text);
        let best = defs
            .keys()
            .map(|k| (strsim::levenshtein(base, k), *k))
            .filter(|&(d, k)| d <= 2.max(k.len() / 3))
            .min();
        let hint = match best {
            Some((_, k)) => format!("did you mean `{k}`?"),
            None => "name an input or a layer defined in this file".to_string(),
        };
        self.error(
            ErrorKind::UnknownName,
            format!("unknown layer or input `{text}` {what}"),
        )
        .hint(hint)
    }

    /// The operand references of every layer.
    fn resolve(&self, defs: &HashMap<&str, Def>) -> Result<Vec<Vec<Ref>>> {
        let mut all = Vec::with_capacity(self.spec.layers.len());
        for (i, layer) in self.spec.layers.iter().enumerate() {
            let (name, inputs) = layer.common();
            let mut refs = Vec::new();
            if inputs.is_empty() {
                let def = if i == 0 {
                    Def::Input(0)
                } else {
                    Def::Layer(i - 1)
                };
                refs.push(Ref {
                    def,
                    output: None,
                    item: None,
                });
            }
            for (j, text) in inputs.iter().enumerate() {
                let Some((def, output)) = self.lookup(defs, text) else {
                    return Err(self
                        .unknown_name(defs, text, format!("in the inputs of `{name}`"))
                        .at(self.inputs_item_span(i, j), "not defined"));
                };
                refs.push(Ref {
                    def,
                    output,
                    item: Some(j),
                });
            }
            all.push(refs);
        }
        Ok(all)
    }

    /// A topological order of the layers; file order among ready layers.
    fn order(&self, refs: &[Vec<Ref>]) -> Result<Vec<usize>> {
        let n = self.spec.layers.len();
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut pending: Vec<usize> = vec![0; n];
        for (i, rs) in refs.iter().enumerate() {
            for r in rs {
                if let Def::Layer(j) = r.def {
                    users[j].push(i);
                    pending[i] += 1;
                }
            }
        }
        let mut ready: BTreeSet<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &u in &users[i] {
                pending[u] -= 1;
                if pending[u] == 0 {
                    ready.insert(u);
                }
            }
        }
        if order.len() == n {
            return Ok(order);
        }
        // Walk operand edges from a stuck layer until a layer repeats.
        let stuck = (0..n).find(|&i| pending[i] > 0).unwrap_or(0);
        let mut path = vec![stuck];
        let mut cur = stuck;
        loop {
            let next = refs[cur].iter().find_map(|r| match r.def {
                Def::Layer(j) if pending[j] > 0 => Some(j),
                _ => None,
            });
            let Some(next) = next else { break };
            if let Some(pos) = path.iter().position(|&p| p == next) {
                path.drain(..pos);
                break;
            }
            path.push(next);
            cur = next;
        }
        path.reverse(); // producer → consumer
        let mut names: Vec<&str> = path
            .iter()
            .map(|&i| self.spec.layers[i].common().0)
            .collect();
        names.push(names[0]);
        let first = path[0];
        let mut err = self
            .error(ErrorKind::Cycle, format!("the layers {} form a cycle", names.join(" → ")))
            .at(self.edge_span(first, &refs[first], &path), "reads its own output through this input")
            .hint("a model is a DAG: remove one of these inputs, or give the layer the input it should read");
        for &i in &path[1..] {
            err = err.also(
                self.edge_span(i, &refs[i], &path),
                format!("`{}` reads from here", self.spec.layers[i].common().0),
            );
        }
        Err(err)
    }

    /// The span of the operand of `layer` that lies on `cycle`.
    fn edge_span(&self, layer: usize, refs: &[Ref], cycle: &[usize]) -> Option<Range<usize>> {
        let r = refs
            .iter()
            .find(|r| matches!(r.def, Def::Layer(j) if cycle.contains(&j)))?;
        match r.item {
            Some(item) => self.inputs_item_span(layer, item),
            None => self.anchor(Def::Layer(layer)),
        }
    }

    fn operand_value(
        &self,
        layer: usize,
        r: &Ref,
        values: &HashMap<Def, Vec<ValueId>>,
    ) -> Result<ValueId> {
        let results = values.get(&r.def).map(Vec::as_slice).unwrap_or(&[]);
        let producer = self.name_of(r.def);
        let span = match r.item {
            Some(item) => self.inputs_item_span(layer, item),
            None => self.anchor(Def::Layer(layer)),
        };
        match (r.output, results) {
            (None, [one]) => Ok(*one),
            (None, many) => Err(self
                .error(
                    ErrorKind::UnknownName,
                    format!("`{producer}` has {} results; name one of them", many.len()),
                )
                .at(span, "ambiguous")
                .hint(format!(
                    "write `{producer}.0` for the first result, `{producer}.1` for the second, …"
                ))),
            (Some(k), rs) if (k as usize) < rs.len() => Ok(rs[k as usize]),
            (Some(k), rs) => Err(self
                .error(
                    ErrorKind::UnknownName,
                    format!(
                        "`{producer}` has {} result(s), so `{producer}.{k}` does not exist",
                        rs.len()
                    ),
                )
                .at(span, "no such result")
                .hint("results are numbered from 0")),
        }
    }

    fn add_input(&self, graph: &mut Graph, i: usize) -> Result<alexc_ir::NodeId> {
        let input = &self.spec.inputs[i];
        let def = Def::Input(i);
        let shape_span = self.field_span(def, "shape");
        let mut dims = Vec::with_capacity(input.shape.len());
        for (axis, dim) in input.shape.iter().enumerate() {
            match *dim {
                Dim::Batch if axis == 0 => dims.push(self.batch),
                Dim::Batch => {
                    return Err(self
                        .error(
                            ErrorKind::InvalidSize,
                            format!(
                                "input `{}`: \"N\" may only be the first dimension",
                                input.name
                            ),
                        )
                        .at(shape_span, "here")
                        .hint("the batch is the outermost dimension: [\"N\", C, H, W]"))
                }
                Dim::Fixed(d) if d <= 0 => {
                    return Err(self
                        .error(
                            ErrorKind::InvalidSize,
                            format!("input `{}`: dimension {axis} is {d}", input.name),
                        )
                        .at(
                            self.item_span(shape_span.as_ref(), def, "shape", axis),
                            "must be positive",
                        )
                        .hint("every dimension must be at least 1"))
                }
                Dim::Fixed(d) => dims.push(usize::try_from(d).unwrap_or(usize::MAX)),
            }
        }
        let shape = Shape::new(dims);
        if let Err(why) = shape.check() {
            return Err(self
                .error(
                    ErrorKind::TooLarge,
                    format!("input `{}` is too large: {why}", input.name),
                )
                .at(shape_span, format!("at batch {}", self.batch))
                .hint("use smaller dimensions or a smaller --batch"));
        }
        let channels = shape.dims().get(1).copied().unwrap_or(0);
        for (key, values) in [("mean", &input.mean), ("std", &input.std)] {
            if !values.is_empty() && values.len() != channels {
                return Err(self
                    .error(
                        ErrorKind::InvalidSize,
                        format!(
                            "input `{}` has {channels} channels, but its {key} has {} values",
                            input.name,
                            values.len()
                        ),
                    )
                    .at(self.field_span(def, key), "one value per channel")
                    .hint(format!("give {channels} values, or none")));
            }
        }
        if input.mean.iter().any(|m| !m.is_finite()) {
            return Err(self
                .error(
                    ErrorKind::InvalidValue,
                    format!("input `{}`: mean values must be finite", input.name),
                )
                .at(self.field_span(def, "mean"), "here")
                .hint("means are per-channel averages of pixels scaled to [0, 1]"));
        }
        if input.std.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
            return Err(self
                .error(
                    ErrorKind::InvalidSize,
                    format!("input `{}`: std values must be positive", input.name),
                )
                .at(self.field_span(def, "std"), "here"));
        }
        let op = Op::Input(InputAttrs {
            dtype: DType::F32,
            shape,
        });
        graph
            .add(input.name.clone(), op, &[])
            .map_err(|e| self.graph_error(def, e, &[]))
    }

    fn item_span(
        &self,
        fallback: Option<&Range<usize>>,
        def: Def,
        key: &str,
        item: usize,
    ) -> Option<Range<usize>> {
        self.def_node(def)
            .and_then(|n| n.field(key))
            .and_then(|n| n.items().get(item))
            .map(|n| n.span.clone())
            .or_else(|| fallback.cloned())
    }

    /// A size attribute that must be at least `min` (1 for sizes, 0 for padding).
    fn size(&self, layer: usize, key: &str, value: i64, min: i64) -> Result<usize> {
        if value < min {
            let what = if min == 0 {
                "must not be negative"
            } else {
                "must be positive"
            };
            let name = self.spec.layers[layer].common().0;
            return Err(self
                .error(
                    ErrorKind::InvalidSize,
                    format!("`{name}`: {key} is {value}, but it {what}"),
                )
                .at(self.field_span(Def::Layer(layer), key), what)
                .hint(format!("set {key} to a value of at least {min}")));
        }
        usize::try_from(value).map_err(|_| {
            self.error(ErrorKind::TooLarge, format!("{key} {value} is too large"))
                .at(self.field_span(Def::Layer(layer), key), "here")
        })
    }

    fn pair(&self, layer: usize, key: &str, p: Pair, min: i64) -> Result<[usize; 2]> {
        Ok([
            self.size(layer, key, p.0[0], min)?,
            self.size(layer, key, p.0[1], min)?,
        ])
    }

    fn init(
        &self,
        layer: usize,
        key: &str,
        spec: Option<&InitSpec>,
        default: &InitSpec,
    ) -> Result<Init> {
        let spec = spec.unwrap_or(default);
        let bad = |what: &str| {
            let span = self.field_span(Def::Layer(layer), key).or_else(|| {
                self.tree
                    .as_ref()
                    .and_then(|t| t.field("init"))
                    .map(|n| n.span.clone())
            });
            Err(self
                .error(
                    ErrorKind::InvalidValue,
                    format!("`{}`: {key} {what}", self.spec.layers[layer].common().0),
                )
                .at(span, "here")
                .hint("e.g. Normal(mean: 0.0, std: 0.01) or Constant(0.0)"))
        };
        Ok(match spec {
            InitSpec::Normal { mean, std } => {
                if !mean.is_finite() || !std.is_finite() || *std < 0.0 {
                    return bad("needs a finite mean and a finite, non-negative std");
                }
                Init::Normal {
                    mean: *mean,
                    std: *std,
                }
            }
            InitSpec::Constant(value) => {
                if !value.is_finite() {
                    return bad("must be finite");
                }
                Init::Constant { value: *value }
            }
            InitSpec::File { path, tensor } => Init::File {
                path: path.clone(),
                tensor: tensor.clone(),
            },
        })
    }

    /// Adds a parameter node `{layer}.{suffix}`.
    fn param(
        &self,
        graph: &mut Graph,
        layer: usize,
        suffix: &str,
        dims: Vec<usize>,
        init: Init,
    ) -> Result<ValueId> {
        let name = format!("{}.{suffix}", self.spec.layers[layer].common().0);
        let op = Op::Parameter(ParameterAttrs {
            dtype: DType::F32,
            shape: Shape::new(dims),
            init,
        });
        graph
            .add(name, op, &[])
            .map(ValueId::from)
            .map_err(|e| self.graph_error(Def::Layer(layer), e, &[]))
    }

    /// Adds layer `i` (and its parameters); returns its results.
    fn add_layer(
        &self,
        graph: &mut Graph,
        i: usize,
        refs: &[Ref],
        operands: &[ValueId],
    ) -> Result<Vec<ValueId>> {
        let layer = &self.spec.layers[i];
        let defaults = &self.spec.init;
        let (name, _) = layer.common();
        let mut operands = operands.to_vec();
        let op = match layer {
            LayerSpec::Conv2d(s) => {
                let in_channels = self.size(i, "in_channels", s.in_channels, 1)?;
                let out_channels = self.size(i, "out_channels", s.out_channels, 1)?;
                let kernel = self.pair(i, "kernel", s.kernel, 1)?;
                let groups = self.size(i, "groups", s.groups, 1)?;
                if in_channels % groups != 0 || out_channels % groups != 0 {
                    return Err(self
                        .error(ErrorKind::InvalidSize, format!(
                            "`{name}`: groups {groups} must divide in_channels {in_channels} and out_channels {out_channels}"
                        ))
                        .at(self.field_span(Def::Layer(i), "groups"), "does not divide the channels")
                        .hint("each group convolves in_channels/groups inputs into out_channels/groups outputs"));
                }
                let weight_init =
                    self.init(i, "weight_init", s.weight_init.as_ref(), &defaults.weight)?;
                let w = self.param(
                    graph,
                    i,
                    "weight",
                    vec![out_channels, in_channels / groups, kernel[0], kernel[1]],
                    weight_init,
                )?;
                operands.push(w);
                // Checked even when unused, so a bad value never hides.
                let bias_init = self.init(i, "bias_init", s.bias_init.as_ref(), &defaults.bias)?;
                if s.bias {
                    operands.push(self.param(graph, i, "bias", vec![out_channels], bias_init)?);
                }
                Op::Conv2d(Conv2dAttrs {
                    out_channels,
                    kernel,
                    stride: self.pair(i, "stride", s.stride, 1)?,
                    padding: self.pair(i, "padding", s.padding, 0)?,
                    dilation: self.pair(i, "dilation", s.dilation, 1)?,
                    groups,
                    bias: s.bias,
                })
            }
            LayerSpec::Linear(s) => {
                let in_features = self.size(i, "in_features", s.in_features, 1)?;
                let out_features = self.size(i, "out_features", s.out_features, 1)?;
                let weight_init =
                    self.init(i, "weight_init", s.weight_init.as_ref(), &defaults.weight)?;
                operands.push(self.param(
                    graph,
                    i,
                    "weight",
                    vec![out_features, in_features],
                    weight_init,
                )?);
                // Checked even when unused, so a bad value never hides.
                let bias_init = self.init(i, "bias_init", s.bias_init.as_ref(), &defaults.bias)?;
                if s.bias {
                    operands.push(self.param(graph, i, "bias", vec![out_features], bias_init)?);
                }
                Op::Linear(LinearAttrs {
                    out_features,
                    bias: s.bias,
                })
            }
            LayerSpec::Relu(_) => Op::Relu,
            LayerSpec::Flatten(_) => Op::Flatten,
            LayerSpec::Add(_) => Op::Add,
            LayerSpec::Lrn(s) => Op::Lrn(LrnAttrs {
                size: self.size(i, "size", s.size, 1)?,
                alpha: s.alpha,
                beta: s.beta,
                k: s.k,
                alpha_convention: match s.alpha_convention {
                    AlphaConventionSpec::DividedBySize => AlphaConvention::DividedBySize,
                    AlphaConventionSpec::Absolute => AlphaConvention::Absolute,
                },
            }),
            LayerSpec::MaxPool2d(s) => {
                let kernel = self.pair(i, "kernel", s.kernel, 1)?;
                Op::MaxPool2d(Pool2dAttrs {
                    kernel,
                    stride: match s.stride {
                        Some(p) => self.pair(i, "stride", p, 1)?,
                        None => kernel,
                    },
                    padding: self.pair(i, "padding", s.padding, 0)?,
                })
            }
            LayerSpec::AvgPool2d(s) => {
                let kernel = self.pair(i, "kernel", s.kernel, 1)?;
                Op::AvgPool2d(AvgPool2dAttrs {
                    kernel,
                    stride: match s.stride {
                        Some(p) => self.pair(i, "stride", p, 1)?,
                        None => kernel,
                    },
                    padding: self.pair(i, "padding", s.padding, 0)?,
                    count_include_pad: s.count_include_pad,
                })
            }
            LayerSpec::Dropout(s) => Op::Dropout(DropoutAttrs { p: s.p }),
            LayerSpec::Softmax(s) => Op::Softmax(SoftmaxAttrs {
                axis: self.size(i, "axis", s.axis, 0)?,
            }),
            LayerSpec::Concat(s) => Op::Concat(ConcatAttrs {
                axis: self.size(i, "axis", s.axis, 0)?,
            }),
            LayerSpec::Split(s) => {
                let mut sizes = Vec::with_capacity(s.sizes.len());
                for &size in &s.sizes {
                    sizes.push(self.size(i, "sizes", size, 1)?);
                }
                Op::Split(SplitAttrs {
                    axis: self.size(i, "axis", s.axis, 0)?,
                    sizes,
                })
            }
        };
        let results = op.num_results();
        let id = graph
            .add(name, op, &operands)
            .map_err(|e| self.graph_error(Def::Layer(i), e, refs))?;
        Ok((0..results).map(|k| ValueId::new(id, k as u16)).collect())
    }

    /// Turns a graph-building error into a diagnostic pointing at the
    /// attribute or operand at fault.
    fn graph_error(&self, def: Def, e: GraphError, refs: &[Ref]) -> Box<ModelError> {
        let GraphError::Shape(e) = e else {
            return self
                .error(ErrorKind::Shape, e.to_string())
                .at(self.anchor(def), "here");
        };
        let kind = if e.message.contains("illegal tensor") || e.message.contains("limit") {
            ErrorKind::TooLarge
        } else {
            ErrorKind::Shape
        };
        let mut err = self.error(kind, e.message.clone());
        // Prefer the attribute, then the operand, then the layer itself.
        let attr_span = e.attr.and_then(|a| self.field_span(def, a));
        let operand = e.operand.and_then(|k| refs.get(k));
        if let Some(span) = attr_span {
            err = err.at(Some(span), "declared here");
            if let (Some(r), Def::Layer(layer)) = (operand, def) {
                err = match r.item {
                    Some(item) => err.also(
                        self.inputs_item_span(layer, item),
                        format!("`{}` comes from here", self.name_of(r.def)),
                    ),
                    None => err.also(
                        self.anchor(def),
                        format!("reads `{}`, the previous layer", self.name_of(r.def)),
                    ),
                };
            }
        } else if let (Some(r), Def::Layer(layer)) = (operand, def) {
            err = match r.item {
                Some(item) => err.at(self.inputs_item_span(layer, item), "this operand"),
                None => err.at(
                    self.anchor(def),
                    format!("reads `{}`, the previous layer", self.name_of(r.def)),
                ),
            };
        } else {
            err = err.at(self.anchor(def), "in this layer");
        }
        match e.hint {
            Some(h) => err.hint(h),
            None => err,
        }
    }

    fn outputs(
        &self,
        defs: &HashMap<&str, Def>,
        values: &HashMap<Def, Vec<ValueId>>,
    ) -> Result<Vec<ValueId>> {
        let last = Def::Layer(self.spec.layers.len() - 1);
        if self.spec.outputs.is_empty() {
            return Ok(values.get(&last).cloned().unwrap_or_default());
        }
        let mut outs = Vec::new();
        for (j, text) in self.spec.outputs.iter().enumerate() {
            let span = self
                .tree
                .as_ref()
                .and_then(|t| t.field("outputs"))
                .and_then(|n| n.items().get(j))
                .map(|n| n.span.clone());
            let Some((def, output)) = self.lookup(defs, text) else {
                return Err(self
                    .unknown_name(defs, text, "in the model outputs".to_string())
                    .at(span, "not defined"));
            };
            let results = values.get(&def).cloned().unwrap_or_default();
            match output {
                None => outs.extend(results),
                Some(k) => match results.get(k as usize) {
                    Some(v) => outs.push(*v),
                    None => {
                        return Err(self
                            .error(ErrorKind::UnknownName, format!("`{text}` does not exist"))
                            .at(span, "no such result"))
                    }
                },
            }
        }
        Ok(outs)
    }
}
