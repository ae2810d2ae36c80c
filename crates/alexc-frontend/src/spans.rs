//! Source spans of the values in a RON file.
//!
//! serde does not carry source positions, so after the `ron` crate has
//! deserialized a model file we parse the same text a second time into a
//! light tree that records only *where* things are: each struct with its
//! fields' key and value spans, each list with its items' spans. Semantic
//! errors (an unknown layer name, a shape mismatch) then point at the exact
//! value in the file.
//!
//! The tree is built only for text `ron` already accepted, so this parser can
//! be small; still, it never panics, and on anything it does not understand
//! it returns `None`, in which case diagnostics fall back to having no label.

use std::ops::Range;

/// A value and where it is.
#[derive(Debug, Clone)]
pub struct SpanNode {
    /// Byte range of the whole value.
    pub span: Range<usize>,
    pub kind: SpanKind,
}

#[derive(Debug, Clone)]
pub enum SpanKind {
    /// `Name(key: value, …)`, `(key: value, …)`, or `Name(v, …)` (a tuple
    /// struct or newtype variant; the values are in `items`).
    Struct {
        name: Option<(String, Range<usize>)>,
        fields: Vec<SpanField>,
        items: Vec<SpanNode>,
    },
    /// `[a, b, …]`.
    List(Vec<SpanNode>),
    /// Anything else: a number, string, bool, unit variant, map.
    Atom,
}

#[derive(Debug, Clone)]
pub struct SpanField {
    pub key: String,
    pub key_span: Range<usize>,
    pub value: SpanNode,
}

impl SpanNode {
    /// The value of field `key` of a struct.
    pub fn field(&self, key: &str) -> Option<&SpanNode> {
        self.field_entry(key).map(|f| &f.value)
    }

    pub fn field_entry(&self, key: &str) -> Option<&SpanField> {
        match &self.kind {
            SpanKind::Struct { fields, items, .. } => {
                fields.iter().find(|f| f.key == key).or_else(|| {
                    // A newtype variant wrapping a struct, written with double parens.
                    items.first().and_then(|inner| inner.field_entry(key))
                })
            }
            _ => None,
        }
    }

    /// Items of a list (or of a tuple).
    pub fn items(&self) -> &[SpanNode] {
        match &self.kind {
            SpanKind::List(items) => items,
            SpanKind::Struct { items, .. } => items,
            SpanKind::Atom => &[],
        }
    }

    /// The struct or variant name and its span (`Conv2d` in `Conv2d(…)`).
    pub fn name_span(&self) -> Option<Range<usize>> {
        match &self.kind {
            SpanKind::Struct {
                name: Some((_, span)),
                ..
            } => Some(span.clone()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// Identifier or any other bare word (numbers, `true`, `inf`).
    Word(String),
    /// A string or char literal.
    Str,
    Punct(char),
}

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    /// The unread input (empty once past the end).
    fn rest(&self) -> &[u8] {
        self.src.get(self.pos..).unwrap_or(&[])
    }

    fn skip_trivia(&mut self) -> Option<()> {
        loop {
            while self.pos < self.src.len() && self.src[self.pos].is_ascii_whitespace() {
                self.pos += 1;
            }
            if self.rest().starts_with(b"//") {
                while self.pos < self.src.len() && self.src[self.pos] != b'\n' {
                    self.pos += 1;
                }
            } else if self.rest().starts_with(b"/*") {
                // Block comments nest in RON.
                let mut depth = 0usize;
                loop {
                    if self.rest().starts_with(b"/*") {
                        depth += 1;
                        self.pos += 2;
                    } else if self.rest().starts_with(b"*/") {
                        depth -= 1;
                        self.pos += 2;
                        if depth == 0 {
                            break;
                        }
                    } else if self.pos >= self.src.len() {
                        return None;
                    } else {
                        self.pos += 1;
                    }
                }
            } else if self.rest().starts_with(b"#!") {
                // `#![enable(...)]` attributes: skip to the closing bracket.
                while self.pos < self.src.len() && self.src[self.pos] != b']' {
                    self.pos += 1;
                }
                self.pos += 1;
            } else {
                return Some(());
            }
        }
    }

    /// The next token and its byte range.
    fn next(&mut self) -> Option<(Tok, Range<usize>)> {
        self.skip_trivia()?;
        let start = self.pos;
        let c = *self.src.get(self.pos)?;
        let is_word = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-');
        if c == b'"' || c == b'\'' {
            self.pos += 1;
            while self.pos < self.src.len() && self.src[self.pos] != c {
                if self.src[self.pos] == b'\\' {
                    self.pos += 1;
                }
                self.pos += 1;
            }
            self.pos += 1;
            return Some((Tok::Str, start..self.pos.min(self.src.len())));
        }
        if (c == b'r' || c == b'b') && matches!(self.src.get(self.pos + 1), Some(b'#' | b'"')) {
            // Raw string r#"…"# (or a byte string): find the matching closer.
            let mut p = self.pos + 1;
            if self.src.get(p) == Some(&b'r') {
                p += 1;
            }
            let hashes = self.src[p..].iter().take_while(|&&b| b == b'#').count();
            p += hashes + 1;
            let closer: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while p < self.src.len() && !self.src[p..].starts_with(&closer) {
                p += 1;
            }
            self.pos = (p + closer.len()).min(self.src.len());
            return Some((Tok::Str, start..self.pos));
        }
        if is_word(c) {
            while self.pos < self.src.len() && is_word(self.src[self.pos]) {
                self.pos += 1;
            }
            let word = String::from_utf8_lossy(&self.src[start..self.pos]).into_owned();
            return Some((Tok::Word(word), start..self.pos));
        }
        self.pos += 1;
        Some((Tok::Punct(c as char), start..self.pos))
    }

    fn peek(&mut self) -> Option<(Tok, Range<usize>)> {
        let save = self.pos;
        let t = self.next();
        self.pos = save;
        t
    }
}

const MAX_DEPTH: usize = 128;

/// Parses `src` into a span tree, or `None` if it is not RON this parser
/// understands.
pub fn parse(src: &str) -> Option<SpanNode> {
    let mut lx = Lexer {
        src: src.as_bytes(),
        pos: 0,
    };
    value(&mut lx, 0)
}

fn value(lx: &mut Lexer<'_>, depth: usize) -> Option<SpanNode> {
    if depth > MAX_DEPTH {
        return None;
    }
    let (tok, span) = lx.next()?;
    match tok {
        Tok::Word(w) => {
            if matches!(lx.peek(), Some((Tok::Punct('('), _))) {
                lx.next()?;
                let mut node = parens(lx, span.start, depth)?;
                if let SpanKind::Struct { name, .. } = &mut node.kind {
                    *name = Some((w, span));
                }
                Some(node)
            } else {
                Some(SpanNode {
                    span,
                    kind: SpanKind::Atom,
                })
            }
        }
        Tok::Str => Some(SpanNode {
            span,
            kind: SpanKind::Atom,
        }),
        Tok::Punct('(') => parens(lx, span.start, depth),
        Tok::Punct('[') => {
            let mut items = Vec::new();
            loop {
                if let Some((Tok::Punct(']'), end)) = lx.peek() {
                    lx.next()?;
                    return Some(SpanNode {
                        span: span.start..end.end,
                        kind: SpanKind::List(items),
                    });
                }
                items.push(value(lx, depth + 1)?);
                match lx.next()? {
                    (Tok::Punct(','), _) => {}
                    (Tok::Punct(']'), end) => {
                        return Some(SpanNode {
                            span: span.start..end.end,
                            kind: SpanKind::List(items),
                        })
                    }
                    _ => return None,
                }
            }
        }
        Tok::Punct('{') => {
            // Maps are not used by the model format; skip balanced braces.
            let mut level = 1;
            while level > 0 {
                match lx.next()? {
                    (Tok::Punct('{'), _) => level += 1,
                    (Tok::Punct('}'), end) => {
                        level -= 1;
                        if level == 0 {
                            return Some(SpanNode {
                                span: span.start..end.end,
                                kind: SpanKind::Atom,
                            });
                        }
                    }
                    _ => {}
                }
            }
            None
        }
        Tok::Punct(_) => None,
    }
}

/// After an opening parenthesis: either `key: value, …` or `value, …`.
fn parens(lx: &mut Lexer<'_>, start: usize, depth: usize) -> Option<SpanNode> {
    let mut fields = Vec::new();
    let mut items = Vec::new();
    loop {
        if let Some((Tok::Punct(')'), end)) = lx.peek() {
            lx.next()?;
            return Some(SpanNode {
                span: start..end.end,
                kind: SpanKind::Struct {
                    name: None,
                    fields,
                    items,
                },
            });
        }
        // `key:` — a word followed by a colon.
        let save = lx.pos;
        let mut is_field = false;
        if let Some((Tok::Word(key), key_span)) = lx.next() {
            if let Some((Tok::Punct(':'), _)) = lx.next() {
                let value = value(lx, depth + 1)?;
                fields.push(SpanField {
                    key,
                    key_span,
                    value,
                });
                is_field = true;
            }
        }
        if !is_field {
            lx.pos = save;
            items.push(value(lx, depth + 1)?);
        }
        match lx.next()? {
            (Tok::Punct(','), _) => {}
            (Tok::Punct(')'), end) => {
                return Some(SpanNode {
                    span: start..end.end,
                    kind: SpanKind::Struct {
                        name: None,
                        fields,
                        items,
                    },
                })
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fields_and_items() {
        let src = r##"// comment
Model(name: "m", layers: [Conv2d(name: "c", kernel: (3, 3)), Relu(name: "r")], x: r#"a)"#)"##;
        let tree = parse(src).expect("parses");
        let layers = tree.field("layers").expect("layers");
        assert_eq!(layers.items().len(), 2);
        let kernel = layers.items()[0].field("kernel").expect("kernel");
        assert_eq!(&src[kernel.span.clone()], "(3, 3)");
        let name = layers.items()[1].field("name").expect("name");
        assert_eq!(&src[name.span.clone()], "\"r\"");
        assert_eq!(
            &src[layers.items()[1].name_span().expect("name span")],
            "Relu"
        );
    }

    #[test]
    fn garbage_is_none_not_panic() {
        for src in [
            "",
            "(",
            "Model(a: ",
            "[1, 2",
            "/* unterminated",
            "r#\"x",
            "\"abc",
            "#![",
        ] {
            let _ = parse(src);
        }
    }
}
