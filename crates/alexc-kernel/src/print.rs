//! The text form of kernel IR: what `alexc compile --emit kernel` prints,
//! what snapshot tests pin and what verifier errors quote.
//!
//! ```text
//! kernel relu (b0 x: f32[4, 8] read, b1 y: f32[4, 8] write)
//!   schedule: vector 8, parallel n
//!   parallel for v0 n in 0..4 {
//!     vectorized(8) for v1 c in 0..8 {
//!       b1[v0, v1] = max(b0[v0, v1], 0.0)
//!     }
//!   }
//! ```
//!
//! Handles print as their `Display` (`b3`, `v7`); where a buffer or
//! variable is declared (the header, `local`, `for`, `let`) its name from
//! the declaration follows. Operators print infix with the usual
//! precedence and only the parentheses the tree needs (a right operand of
//! equal precedence keeps its parentheses, so the text shows the tree's
//! shape exactly); everything else is a call: `min`, `max`, `pow`, `exp`,
//! `fma(a, b, c)`, `select(cond, a, b)`, `load_or(b0[…], 0.0)`, and casts
//! `f32(e)`, `i64(e)`. Float literals always have a `.` or an exponent
//! (`0.0`, `1e-5`), so they never read as integers. The output is stable:
//! it depends only on the kernel.

use std::fmt::Write as _;

use crate::kernel::{
    Access, BinOp, BufferKind, Cmp, Cond, Expr, Idx, Kernel, LoopKind, Schedule, Stmt, UnOp,
};
use crate::{BufId, VarId};

/// The whole kernel in its text form, ending with a newline.
pub fn to_text(kernel: &Kernel) -> String {
    let mut out = String::new();
    let params: Vec<String> = kernel
        .params()
        .map(|(id, b)| {
            let access = match b.kind {
                BufferKind::Param(Access::Read) => "read",
                BufferKind::Param(Access::Write) => "write",
                BufferKind::Param(Access::ReadWrite) => "read-write",
                BufferKind::Local => "local",
            };
            format!("{id} {}: {}{} {access}", b.name, b.dtype, shape(&b.shape))
        })
        .collect();
    let _ = writeln!(out, "kernel {} ({})", kernel.name, params.join(", "));
    if let Some(s) = schedule(&kernel.schedule) {
        let _ = writeln!(out, "  schedule: {s}");
    }
    for (i, b) in kernel.buffers.iter().enumerate() {
        if b.kind == BufferKind::Local {
            let _ = writeln!(
                out,
                "  local {} {}: {}{}",
                BufId(i as u32),
                b.name,
                b.dtype,
                shape(&b.shape)
            );
        }
    }
    let printer = Printer { kernel };
    for stmt in &kernel.body {
        printer.stmt(&mut out, stmt, 1);
    }
    out
}

fn shape(dims: &[usize]) -> String {
    let dims: Vec<String> = dims.iter().map(usize::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// The schedule line's text, or `None` for an empty schedule.
fn schedule(s: &Schedule) -> Option<String> {
    let mut parts = Vec::new();
    if !s.tiles.is_empty() {
        let tiles: Vec<String> = s
            .tiles
            .iter()
            .map(|(axis, t)| format!("{axis}={t}"))
            .collect();
        parts.push(format!("tiles {}", tiles.join(" ")));
    }
    if s.vector_width > 1 {
        parts.push(format!("vector {}", s.vector_width));
    }
    if !s.loop_order.is_empty() {
        parts.push(format!("order {}", s.loop_order.join(" ")));
    }
    if let Some(axis) = &s.parallel_axis {
        parts.push(format!("parallel {axis}"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// An index expression, e.g. `v0 * 4 + v1 - 2`.
pub fn idx_to_string(idx: &Idx) -> String {
    let mut out = String::new();
    write_idx(&mut out, idx, 0);
    out
}

/// A scalar expression, e.g. `fma(b0[v0, v3], b1[v3, v1], v4)`.
pub fn expr_to_string(expr: &Expr) -> String {
    let mut out = String::new();
    write_expr(&mut out, expr, 0);
    out
}

/// A condition, e.g. `0 <= v2 - 1 && v2 - 1 < 55`.
pub fn cond_to_string(cond: &Cond) -> String {
    let mut out = String::new();
    write_cond(&mut out, cond, 0);
    out
}

/// A buffer access as it prints in a load or store: `b3[v0, v1 + 1]`.
pub fn access_to_string(buf: BufId, index: &[Idx]) -> String {
    let mut out = String::new();
    write_access(&mut out, buf, index);
    out
}

/// Statement printing needs the declarations for names.
struct Printer<'k> {
    kernel: &'k Kernel,
}

impl Printer<'_> {
    /// `v2 ow`: a variable where it is declared.
    fn decl(&self, var: VarId) -> String {
        match self.kernel.var(var) {
            Some(d) if !d.name.is_empty() => format!("{var} {}", d.name),
            _ => var.to_string(),
        }
    }

    fn stmt(&self, out: &mut String, stmt: &Stmt, depth: usize) {
        let pad = "  ".repeat(depth);
        match stmt {
            Stmt::For {
                var,
                extent,
                kind,
                body,
            } => {
                let kind = match kind {
                    LoopKind::Serial => String::new(),
                    LoopKind::Parallel => "parallel ".to_owned(),
                    LoopKind::Vectorized { width } => format!("vectorized({width}) "),
                    LoopKind::Unrolled => "unrolled ".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "{pad}{kind}for {} in 0..{} {{",
                    self.decl(*var),
                    idx_to_string(extent)
                );
                self.block(out, body, depth);
                let _ = writeln!(out, "{pad}}}");
            }
            Stmt::Store { buf, index, value } => {
                let _ = writeln!(
                    out,
                    "{pad}{} = {}",
                    access_to_string(*buf, index),
                    expr_to_string(value)
                );
            }
            Stmt::Let { var, value } => {
                let ty = self
                    .kernel
                    .var(*var)
                    .map(|d| format!(": {}", d.dtype))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{pad}let {}{ty} = {}",
                    self.decl(*var),
                    expr_to_string(value)
                );
            }
            Stmt::Assign { var, value } => {
                let _ = writeln!(out, "{pad}{var} = {}", expr_to_string(value));
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                let _ = writeln!(out, "{pad}if {} {{", cond_to_string(cond));
                self.block(out, then, depth);
                if !otherwise.is_empty() {
                    let _ = writeln!(out, "{pad}}} else {{");
                    self.block(out, otherwise, depth);
                }
                let _ = writeln!(out, "{pad}}}");
            }
        }
    }

    fn block(&self, out: &mut String, stmts: &[Stmt], depth: usize) {
        for s in stmts {
            self.stmt(out, s, depth + 1);
        }
    }
}

// Precedence levels: a child printed at a position that requires level `p`
// gets parentheses if its own level is lower.
const SUM: u8 = 1;
const PRODUCT: u8 = 2;
const PREFIX: u8 = 3;
const ATOM: u8 = 4;

fn idx_level(idx: &Idx) -> u8 {
    match idx {
        Idx::Add(..) | Idx::Sub(..) => SUM,
        Idx::Mul(..) | Idx::Div(..) | Idx::Rem(..) => PRODUCT,
        // A negative literal prints with its sign; in `a - -1` or `-1 * 4`
        // that is still unambiguous.
        Idx::Const(_) | Idx::Var(_) | Idx::Min(..) | Idx::Max(..) => ATOM,
    }
}

fn write_idx(out: &mut String, idx: &Idx, need: u8) {
    let level = idx_level(idx);
    if level < need {
        out.push('(');
    }
    match idx {
        Idx::Const(k) => {
            let _ = write!(out, "{k}");
        }
        Idx::Var(v) => {
            let _ = write!(out, "{v}");
        }
        Idx::Add(a, b) | Idx::Sub(a, b) => {
            write_idx(out, a, SUM);
            out.push_str(if matches!(idx, Idx::Add(..)) {
                " + "
            } else {
                " - "
            });
            write_idx(out, b, SUM + 1);
        }
        Idx::Mul(a, k) | Idx::Div(a, k) | Idx::Rem(a, k) => {
            write_idx(out, a, PRODUCT);
            let op = match idx {
                Idx::Mul(..) => "*",
                Idx::Div(..) => "/",
                _ => "%",
            };
            let _ = write!(out, " {op} {k}");
        }
        Idx::Min(a, b) | Idx::Max(a, b) => {
            out.push_str(if matches!(idx, Idx::Min(..)) {
                "min("
            } else {
                "max("
            });
            write_idx(out, a, 0);
            out.push_str(", ");
            write_idx(out, b, 0);
            out.push(')');
        }
    }
    if level < need {
        out.push(')');
    }
}

fn expr_level(expr: &Expr) -> u8 {
    match expr {
        Expr::Binary {
            op: BinOp::Add | BinOp::Sub,
            ..
        } => SUM,
        Expr::Binary {
            op: BinOp::Mul | BinOp::Div,
            ..
        } => PRODUCT,
        Expr::Unary { op: UnOp::Neg, .. } => PREFIX,
        Expr::Index(i) => idx_level(i),
        // Negative literals print as `-1.0`: like a negation.
        Expr::F32(x) if x.is_sign_negative() => PREFIX,
        _ => ATOM,
    }
}

fn write_f32(out: &mut String, x: f32) {
    // `Debug` keeps a `.0` on integral values and round-trips exactly.
    let _ = write!(out, "{x:?}");
}

fn write_access(out: &mut String, buf: BufId, index: &[Idx]) {
    let _ = write!(out, "{buf}[");
    for (i, ix) in index.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_idx(out, ix, 0);
    }
    out.push(']');
}

fn write_call(out: &mut String, name: &str, args: &[&Expr]) {
    out.push_str(name);
    out.push('(');
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_expr(out, a, 0);
    }
    out.push(')');
}

fn write_expr(out: &mut String, expr: &Expr, need: u8) {
    let level = expr_level(expr);
    if level < need {
        out.push('(');
    }
    match expr {
        Expr::F32(x) => write_f32(out, *x),
        Expr::Load { buf, index } => write_access(out, *buf, index),
        Expr::LoadOr {
            buf,
            index,
            default,
        } => {
            out.push_str("load_or(");
            write_access(out, *buf, index);
            out.push_str(", ");
            write_f32(out, *default);
            out.push(')');
        }
        Expr::Var(v) => {
            let _ = write!(out, "{v}");
        }
        Expr::Index(i) => write_idx(out, i, level),
        Expr::Cast { to, value } => write_call(out, &to.to_string(), &[value]),
        Expr::Binary { op, a, b } => match op {
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => {
                let (sym, level) = match op {
                    BinOp::Add => ("+", SUM),
                    BinOp::Sub => ("-", SUM),
                    BinOp::Mul => ("*", PRODUCT),
                    _ => ("/", PRODUCT),
                };
                write_expr(out, a, level);
                let _ = write!(out, " {sym} ");
                write_expr(out, b, level + 1);
            }
            BinOp::Max => write_call(out, "max", &[a, b]),
            BinOp::Min => write_call(out, "min", &[a, b]),
            BinOp::Pow => write_call(out, "pow", &[a, b]),
        },
        Expr::Unary { op, a } => match op {
            UnOp::Neg => {
                out.push('-');
                // `--x` would read as a decrement; `-(-x)` does not.
                write_expr(out, a, ATOM);
            }
            UnOp::Exp => write_call(out, "exp", &[a]),
            UnOp::Log => write_call(out, "log", &[a]),
            UnOp::Sqrt => write_call(out, "sqrt", &[a]),
            UnOp::Rsqrt => write_call(out, "rsqrt", &[a]),
            UnOp::Abs => write_call(out, "abs", &[a]),
        },
        Expr::Fma { a, b, c } => write_call(out, "fma", &[a, b, c]),
        Expr::Select {
            cond,
            then,
            otherwise,
        } => {
            out.push_str("select(");
            write_cond(out, cond, 0);
            out.push_str(", ");
            write_expr(out, then, 0);
            out.push_str(", ");
            write_expr(out, otherwise, 0);
            out.push(')');
        }
    }
    if level < need {
        out.push(')');
    }
}

// Condition levels: `||` below `&&` below `!` below comparisons, whose
// operands are printed at the lowest level (a comparison binds loosest of
// all but is never nested inside arithmetic).
const OR: u8 = 1;
const AND: u8 = 2;
const NOT: u8 = 3;
const COMPARISON: u8 = 4;

fn cmp_str(op: Cmp) -> &'static str {
    match op {
        Cmp::Lt => "<",
        Cmp::Le => "<=",
        Cmp::Eq => "==",
        Cmp::Ne => "!=",
        Cmp::Gt => ">",
        Cmp::Ge => ">=",
    }
}

fn write_cond(out: &mut String, cond: &Cond, need: u8) {
    let level = match cond {
        Cond::Or(..) => OR,
        Cond::And(..) => AND,
        Cond::Not(_) => NOT,
        Cond::Idx { .. } | Cond::Expr { .. } => COMPARISON,
    };
    // A comparison under `!` needs parentheses: `!(a < b)`.
    let parens = level < need || (need == NOT + 1 && level == COMPARISON);
    if parens {
        out.push('(');
    }
    match cond {
        Cond::Idx { op, a, b } => {
            write_idx(out, a, 0);
            let _ = write!(out, " {} ", cmp_str(*op));
            write_idx(out, b, 0);
        }
        Cond::Expr { op, a, b } => {
            write_expr(out, a, 0);
            let _ = write!(out, " {} ", cmp_str(*op));
            write_expr(out, b, 0);
        }
        Cond::And(a, b) => {
            write_cond(out, a, AND);
            out.push_str(" && ");
            write_cond(out, b, AND + 1);
        }
        Cond::Or(a, b) => {
            write_cond(out, a, OR);
            out.push_str(" || ");
            write_cond(out, b, OR + 1);
        }
        Cond::Not(a) => {
            out.push('!');
            write_cond(out, a, NOT + 1);
        }
    }
    if parens {
        out.push(')');
    }
}
