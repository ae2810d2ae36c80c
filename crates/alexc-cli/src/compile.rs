//! `alexc compile`: the front half of the compiler as it stands — parse,
//! verify, infer shapes — and the views of the result: a summary table, the
//! text IR, DOT and a JSON summary whose shape later stages extend.

use std::fmt::Write as _;
use std::path::Path;

use alexc_ir::{node_stats, Graph, NodeId, Op};
use anyhow::Context;
use serde::Serialize;

use crate::{CliError, CompileArgs, Emit};

/// One row of the summary: a layer (or input) of the graph.
#[derive(Debug, Serialize)]
pub struct NodeSummary {
    pub name: String,
    pub op: String,
    /// Full output shape, batch first (the first result for multi-result ops).
    pub shape: Vec<usize>,
    pub params: u64,
    pub macs: u64,
}

/// The machine-readable summary (`--emit summary-json`).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub model: String,
    pub batch: usize,
    pub params: u64,
    pub macs: u64,
    pub nodes: Vec<NodeSummary>,
}

/// Layers in printing order: everything except parameters, topologically.
fn layer_order(graph: &Graph) -> Vec<NodeId> {
    let order = graph
        .topo_order()
        .unwrap_or_else(|_| graph.node_ids().collect());
    order
        .into_iter()
        .filter(|&id| !matches!(graph[id].op, Op::Parameter(_)))
        .collect()
}

pub fn summarize(graph: &Graph) -> Summary {
    let nodes: Vec<NodeSummary> = layer_order(graph)
        .into_iter()
        .map(|id| {
            let node = &graph[id];
            let stats = node_stats(graph, id);
            NodeSummary {
                name: node.name.clone(),
                op: node.op.name().to_string(),
                shape: node
                    .outputs
                    .first()
                    .map(|t| t.shape.dims().to_vec())
                    .unwrap_or_default(),
                params: stats.params,
                macs: stats.macs,
            }
        })
        .collect();
    // Each parameter counts once, however many nodes read it.
    let params = graph
        .node_ids()
        .filter(|&id| matches!(graph[id].op, Op::Parameter(_)))
        .filter_map(|id| graph[id].outputs.first())
        .map(|t| t.shape.elements() as u64)
        .sum();
    Summary {
        model: graph.name.clone(),
        batch: graph.batch,
        params,
        macs: nodes.iter().map(|n| n.macs).sum(),
        nodes,
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The per-sample shape, `96×55×55`.
fn sample_shape(shape: &[usize]) -> String {
    match shape {
        [] => "scalar".into(),
        [_] => "1".into(),
        [_, rest @ ..] => rest
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("×"),
    }
}

/// The human-readable table.
pub fn summary_table(summary: &Summary, graph: &Graph, description: &str) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "layer".into(),
        "op".into(),
        "output (per sample)".into(),
        "params".into(),
        "MACs".into(),
    ]];
    for n in &summary.nodes {
        rows.push([
            n.name.clone(),
            n.op.clone(),
            sample_shape(&n.shape),
            if n.params == 0 {
                String::new()
            } else {
                thousands(n.params)
            },
            if n.macs == 0 {
                String::new()
            } else {
                thousands(n.macs)
            },
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let _ = write!(out, "model {} (batch {})", summary.model, summary.batch);
    if description.is_empty() {
        out.push('\n');
    } else {
        let _ = writeln!(out, ": {description}");
    }
    let total_width = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    for (i, row) in rows.iter().enumerate() {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        );
        let _ = writeln!(out, "{}", line.trim_end());
        if i == 0 {
            let _ = writeln!(out, "{}", "─".repeat(total_width));
        }
    }
    let _ = writeln!(out, "{}", "─".repeat(total_width));
    let _ = writeln!(
        out,
        "total: {} parameters ({:.1} MiB as f32), {} MACs per batch ({:.2} GMAC per sample)",
        thousands(summary.params),
        summary.params as f64 * 4.0 / (1024.0 * 1024.0),
        thousands(summary.macs),
        summary.macs as f64 / 1e9 / summary.batch.max(1) as f64
    );
    let outputs: Vec<String> = graph
        .outputs()
        .iter()
        .filter_map(|v| {
            Some(format!(
                "{} {}",
                graph.get(v.node)?.name,
                graph.value_type(*v)?
            ))
        })
        .collect();
    let _ = writeln!(out, "outputs: {}", outputs.join(", "));
    out
}

pub fn compile(args: &CompileArgs) -> Result<(), CliError> {
    let model = alexc_frontend::load(&args.model, args.batch as usize)?;
    let graph = &model.graph;
    tracing::info!(nodes = graph.len(), "model verified");
    let text = match args.emit {
        Emit::Summary => summary_table(&summarize(graph), graph, &model.spec.description),
        Emit::Graph => alexc_ir::print::to_text(graph),
        Emit::Dot => alexc_ir::dot::to_dot(graph),
        Emit::SummaryJson => {
            let mut json = serde_json::to_string_pretty(&summarize(graph))
                .context("serializing the summary")?;
            json.push('\n');
            json
        }
    };
    write_output(args.output.as_deref(), &text)?;
    Ok(())
}

/// Writes to a file (via a temporary file and a rename, so an interrupted
/// write never leaves a truncated file) or to standard output.
pub fn write_output(path: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match path {
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`alexc compile … | head`) is not an error.
            match stdout.write_all(text.as_bytes()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.context("writing to standard output"),
            }
        }
        Some(path) => {
            let tmp = path.with_extension("tmp-alexc");
            std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, path)
                .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
        }
    }
}
