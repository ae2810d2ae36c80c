//! The alexc model format: a network declared in a RON file becomes a
//! verified, shape-checked [`alexc_ir::Graph`].
//!
//! ```text
//! Model(
//!     name: "tiny",
//!     inputs: [Input(name: "image", shape: ["N", 1, 28, 28])],
//!     layers: [
//!         Conv2d(name: "conv1", in_channels: 1, out_channels: 8, kernel: 3, padding: 1),
//!         Relu(name: "relu1"),
//!         Flatten(name: "flat"),
//!         Linear(name: "fc", in_features: 6272, out_features: 10),
//!     ],
//! )
//! ```
//!
//! The format is specified in `docs/model-format.md`. Parsing is two steps:
//! the `ron` crate deserializes the file into [`format::ModelSpec`] (syntax,
//! unknown layer kinds and fields are reported here, at ron's position), then
//! [`lower`](crate::lower) checks names, orders the layers, creates
//! parameters and builds the graph, reporting semantic errors at the exact
//! value in the file. Every error is a [`ModelError`]: a miette diagnostic
//! with file, line, column, a labelled snippet and a hint.

mod error;
pub mod format;
mod lower;
pub mod spans;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alexc_ir::Graph;
use ron::extensions::Extensions;

pub use error::{ErrorKind, Label, ModelError};
pub use format::ModelSpec;

/// A model file, parsed and lowered.
#[derive(Debug, Clone)]
pub struct Model {
    /// The graph at the requested batch size.
    pub graph: Graph,
    /// What the file says (input preprocessing, class names, …).
    pub spec: ModelSpec,
    /// The file's path; `Init::File` paths are relative to its folder.
    pub path: PathBuf,
    /// The file's text.
    pub source: Arc<String>,
}

impl Model {
    /// The folder relative to which the model's file references resolve.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Reads and lowers the model file at `path` with the batch dimension bound
/// to `batch`.
pub fn load(path: &Path, batch: usize) -> Result<Model, Box<ModelError>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ModelError::new(
            ErrorKind::Io,
            format!("cannot read {file}: {e}"),
            &file,
            None,
        )
        .hint("check the path; model files live in models/")
    })?;
    let mut model = parse(&text, &file, batch)?;
    model.path = path.to_path_buf();
    Ok(model)
}

/// Lowers model text; `file` names it in diagnostics.
pub fn parse(text: &str, file: &str, batch: usize) -> Result<Model, Box<ModelError>> {
    let source = Arc::new(text.to_string());
    let options = ron::Options::default()
        .with_default_extension(Extensions::IMPLICIT_SOME | Extensions::UNWRAP_VARIANT_NEWTYPES);
    let spec: ModelSpec = options
        .from_str(text)
        .map_err(|e| syntax_error(&e, file, &source))?;
    let lowerer = lower::Lowerer {
        src: &source,
        file,
        tree: spans::parse(text),
        spec: &spec,
        batch,
    };
    let graph = lowerer.lower()?;
    Ok(Model {
        graph,
        spec,
        path: PathBuf::from(file),
        source,
    })
}

/// Translates ron's error into a diagnostic, with a hint for the common
/// cases (unknown layer kinds and fields get "did you mean").
fn syntax_error(e: &ron::error::SpannedError, file: &str, source: &Arc<String>) -> Box<ModelError> {
    use ron::error::Error as E;
    let text = source.as_str();
    let at = error::offset_of(text, e.position.line, e.position.col);
    // The token the parser stopped at, or just before.
    let word_span = |word: &str| -> std::ops::Range<usize> {
        let window_start = at.saturating_sub(word.len() + 64);
        let start = text
            .get(window_start..at.min(text.len()))
            .and_then(|w| w.rfind(word))
            .map(|i| window_start + i);
        match start {
            Some(s) => s..s + word.len(),
            None => at..at,
        }
    };
    let suggest = |found: &str, expected: &[&str]| -> String {
        let best = expected
            .iter()
            .map(|k| (strsim::levenshtein(found, k), *k))
            .filter(|&(d, k)| d <= 2.max(k.len() / 3))
            .min();
        match best {
            Some((_, k)) => format!(
                "did you mean `{k}`? expected one of: {}",
                expected.join(", ")
            ),
            None => format!("expected one of: {}", expected.join(", ")),
        }
    };
    // The token that ends where the parser stopped (a string or a word).
    let value_span = || -> std::ops::Range<usize> {
        let bytes = text.as_bytes();
        let end = at.min(text.len());
        if end > 0 && bytes[end - 1] == b'"' {
            let start = text[..end - 1].rfind('"').unwrap_or(end - 1);
            return start..end;
        }
        let start = text[..end]
            .rfind(|c: char| !(c.is_alphanumeric() || "_.+-".contains(c)))
            .map_or(0, |i| i + 1);
        if start < end {
            start..end
        } else {
            end.saturating_sub(1)..end
        }
    };
    const FORMAT_HINT: &str = "docs/model-format.md gives the type of every field";
    let new = |kind, message: String| ModelError::new(kind, message, file, Some(source.clone()));
    match &e.code {
        E::NoSuchEnumVariant {
            expected,
            found,
            outer,
        } => {
            let (kind, what) = match outer.as_deref() {
                Some("LayerSpec") => (ErrorKind::UnknownLayerKind, "layer kind"),
                Some("InitSpec") => (ErrorKind::UnknownVariant, "initializer"),
                _ => (ErrorKind::UnknownVariant, "variant"),
            };
            new(kind, format!("unknown {what} `{found}`"))
                .at(
                    Some(word_span(found)),
                    format!(
                        "not {} {what}",
                        if what.starts_with('i') { "an" } else { "a" }
                    ),
                )
                .hint(suggest(found, expected))
        }
        E::NoSuchStructField {
            expected,
            found,
            outer,
        } => {
            let outer = outer.as_deref().map(display_outer).unwrap_or_default();
            let mut hint = suggest(found, expected);
            if found.starts_with(|c: char| c.is_ascii_uppercase()) {
                hint = format!("is a `)` missing before it? {hint}");
            }
            new(
                ErrorKind::UnknownField,
                format!("unknown field `{found}`{outer}"),
            )
            .at(Some(word_span(found)), "unknown field")
            .hint(hint)
        }
        E::MissingStructField { field, outer } => {
            let outer_name = outer.as_deref().map(display_outer).unwrap_or_default();
            new(
                ErrorKind::MissingField,
                format!("missing field `{field}`{outer_name}"),
            )
            .at(Some(at.saturating_sub(1)..at), "this ends without it")
            .hint(format!(
                "add `{field}: …`; docs/model-format.md lists every field"
            ))
        }
        E::DuplicateStructField { field, outer } => {
            let outer = outer.as_deref().map(display_outer).unwrap_or_default();
            new(
                ErrorKind::Syntax,
                format!("field `{field}` is given twice{outer}"),
            )
            .at(Some(word_span(field)), "again here")
            .hint("remove one of them")
        }
        E::InvalidValueForType { expected, found } => new(
            ErrorKind::InvalidValue,
            format!("expected {expected}, found {found}"),
        )
        .at(Some(value_span()), "wrong type")
        .hint(FORMAT_HINT),
        E::Message(m) => new(ErrorKind::InvalidValue, m.clone())
            .at(Some(value_span()), "here")
            .hint(FORMAT_HINT),
        E::ExpectedNamedStructLike(name)
        | E::ExpectedDifferentStructName { expected: name, .. } => {
            new(ErrorKind::Syntax, format!("expected `{name}(…)` here"))
                .at(Some(at..(at + 1).min(text.len())), "here")
                .hint(format!(
                    "a model file holds one `Model(…)` value; {FORMAT_HINT}"
                ))
        }
        E::ExceededRecursionLimit => {
            new(ErrorKind::Syntax, "the file nests too deeply".to_string())
                .at(Some(at..at), "here")
                .hint("model files nest a few levels deep; check for runaway brackets")
        }
        other => new(ErrorKind::Syntax, format!("invalid RON: {other}"))
            .at(Some(at..(at + 1).min(text.len())), "here")
            .hint("check brackets, commas and quotes around this point"),
    }
}

/// `Conv2dSpec` → ` in a Conv2d layer`.
fn display_outer(outer: &str) -> String {
    let name = outer.strip_suffix("Spec").unwrap_or(outer);
    match name {
        "Model" | "Input" | "InitDefaults" => format!(" in {name}"),
        "Plain" => " in this layer".to_string(),
        "Axis" => " in a Concat layer".to_string(),
        "MaxPool" => " in a MaxPool2d layer".to_string(),
        "AvgPool" => " in an AvgPool2d layer".to_string(),
        _ => format!(" in a {name} layer"),
    }
}
