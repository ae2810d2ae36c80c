//! Model-file diagnostics: one error type that knows its file, its position
//! and a hint, rendered by miette with the offending snippet.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};

/// What went wrong, coarsely; each kind has a stable diagnostic code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The file could not be read.
    Io,
    /// Not valid RON.
    Syntax,
    /// A layer kind that does not exist (`Conv3d(…)`).
    UnknownLayerKind,
    /// A variant that does not exist (an unknown initializer).
    UnknownVariant,
    /// A field that the struct or layer kind does not have.
    UnknownField,
    /// A required field is absent.
    MissingField,
    /// A field has a value of the wrong type.
    InvalidValue,
    /// A reference to a layer or input that does not exist.
    UnknownName,
    /// Two layers or inputs with the same name.
    DuplicateName,
    /// A name with characters the format reserves.
    InvalidName,
    /// Layers whose inputs form a cycle.
    Cycle,
    /// A zero, negative or otherwise impossible size or attribute.
    InvalidSize,
    /// Shapes that do not fit together.
    Shape,
    /// A tensor whose element count overflows or exceeds the limit.
    TooLarge,
}

impl ErrorKind {
    /// The diagnostic code, e.g. `alexc::model::shape`.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Io => "alexc::model::io",
            ErrorKind::Syntax => "alexc::model::syntax",
            ErrorKind::UnknownLayerKind => "alexc::model::unknown-layer-kind",
            ErrorKind::UnknownVariant => "alexc::model::unknown-variant",
            ErrorKind::UnknownField => "alexc::model::unknown-field",
            ErrorKind::MissingField => "alexc::model::missing-field",
            ErrorKind::InvalidValue => "alexc::model::invalid-value",
            ErrorKind::UnknownName => "alexc::model::unknown-name",
            ErrorKind::DuplicateName => "alexc::model::duplicate-name",
            ErrorKind::InvalidName => "alexc::model::invalid-name",
            ErrorKind::Cycle => "alexc::model::cycle",
            ErrorKind::InvalidSize => "alexc::model::invalid-size",
            ErrorKind::Shape => "alexc::model::shape",
            ErrorKind::TooLarge => "alexc::model::too-large",
        }
    }
}

/// A labelled byte range of the model file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub span: Range<usize>,
    pub text: String,
}

/// An error in a model file, with everything needed to show it well.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ModelError {
    pub kind: ErrorKind,
    /// One sentence saying what is wrong.
    pub message: String,
    /// The file as the user named it.
    pub file: String,
    /// 1-based line and column of the primary label, if there is one.
    pub location: Option<(usize, usize)>,
    /// The primary label: what is wrong, right here.
    pub label: Option<Label>,
    /// Further labels ("first defined here").
    pub related: Vec<Label>,
    /// What to do about it.
    pub hint: Option<String>,
    code_src: Option<NamedSource<Arc<String>>>,
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl ModelError {
    /// An error in `file` whose text is `source` (None if unreadable).
    pub(crate) fn new(
        kind: ErrorKind,
        message: impl Into<String>,
        file: &str,
        source: Option<Arc<String>>,
    ) -> Box<Self> {
        Box::new(ModelError {
            kind,
            message: message.into(),
            file: file.to_string(),
            location: None,
            label: None,
            related: Vec::new(),
            hint: None,
            code_src: source.map(|s| NamedSource::new(file, s)),
        })
    }

    /// Sets the primary label; ignored when `span` is `None` or out of range.
    pub(crate) fn at(
        mut self: Box<Self>,
        span: Option<Range<usize>>,
        text: impl Into<String>,
    ) -> Box<Self> {
        if let (Some(span), Some(src)) = (span, &self.code_src) {
            let src = src.inner();
            if span.start <= span.end
                && span.end <= src.len()
                && src.is_char_boundary(span.start)
                && src.is_char_boundary(span.end)
            {
                self.location = Some(line_col(src, span.start));
                self.label = Some(Label {
                    span,
                    text: text.into(),
                });
            }
        }
        self
    }

    /// Adds a secondary label.
    pub(crate) fn also(
        mut self: Box<Self>,
        span: Option<Range<usize>>,
        text: impl Into<String>,
    ) -> Box<Self> {
        if let (Some(span), Some(src)) = (span, &self.code_src) {
            if span.start <= span.end && span.end <= src.inner().len() {
                self.related.push(Label {
                    span,
                    text: text.into(),
                });
            }
        }
        self
    }

    pub(crate) fn hint(mut self: Box<Self>, hint: impl Into<String>) -> Box<Self> {
        self.hint = Some(hint.into());
        self
    }

    /// `file:line:col`, or just the file when there is no position.
    pub fn position(&self) -> String {
        match self.location {
            Some((line, col)) => format!("{}:{line}:{col}", self.file),
            None => self.file.clone(),
        }
    }
}

impl Diagnostic for ModelError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.kind.code()))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.hint
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.code_src.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let primary = self
            .label
            .iter()
            .map(|l| LabeledSpan::new_primary_with_span(Some(l.text.clone()), l.span.clone()));
        let related = self
            .related
            .iter()
            .map(|l| LabeledSpan::new_with_span(Some(l.text.clone()), l.span.clone()));
        let all: Vec<_> = primary.chain(related).collect();
        if all.is_empty() {
            None
        } else {
            Some(Box::new(all.into_iter()))
        }
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
pub(crate) fn line_col(src: &str, at: usize) -> (usize, usize) {
    let before = &src[..at.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// Byte offset of a 1-based line and character column, clamped to the text.
pub(crate) fn offset_of(src: &str, line: usize, col: usize) -> usize {
    let mut offset = 0;
    for (i, l) in src.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let within: usize = l
                .chars()
                .take(col.saturating_sub(1))
                .map(char::len_utf8)
                .sum();
            return offset + within;
        }
        offset += l.len();
    }
    src.len()
}
