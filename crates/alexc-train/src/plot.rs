//! PNG plots of a training run: `loss.png` and `error.png`.
//!
//! - `loss.png`: the training loss of every logged step (thin and light,
//!   because single-batch losses are noisy), a centred moving average over
//!   about 4% of the steps on top of it, and the per-epoch mean training loss
//!   and validation loss as marked points at the global step where each
//!   epoch ended. The y axis stops at the 99th percentile of the raw losses
//!   (or the highest smoothed or epoch value, if higher), so the huge first
//!   losses of a run do not flatten the rest of the curve.
//! - `error.png`: top-1 and top-5 validation error in percent per epoch
//!   (1-based, as a progress bar counts), from 0 up, so the scale is honest.
//!
//! A plot with nothing to show (no steps and no epochs; no validation) is
//! not written. Non-finite values (a diverged run) are left out of the plot.
//!
//! plotters draws text with `ab_glyph`, which only knows fonts registered
//! from bytes; the machine may have no system fonts at all, so the crate
//! embeds DejaVu Sans (`assets/`, licence next to it) and registers it once.
//! plotters renders into an RGB buffer and the `image` crate encodes it, so
//! plotters' own encoder (an older `image`) is not compiled in.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::RgbImage;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::filters::write_png_atomic;
use crate::metrics::History;
use crate::TrainError;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 600;
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
/// The families plotters asks for by default or by name.
const FAMILIES: [&str; 3] = ["sans-serif", "serif", "monospace"];

type DrawResult = Result<(), Box<dyn Error>>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
/// Draws one plot of a history.
type DrawFn = fn(&Area<'_>, &History) -> DrawResult;

const RAW: RGBColor = RGBColor(160, 190, 230);
const SMOOTH: RGBColor = RGBColor(31, 90, 180);
const TRAIN: RGBColor = RGBColor(230, 120, 20);
const VAL: RGBColor = RGBColor(30, 150, 60);
const TOP1: RGBColor = RGBColor(200, 40, 40);
const TOP5: RGBColor = RGBColor(40, 90, 200);

/// Writes `loss.png` and `error.png` (whichever has data) into `dir`,
/// creating it; returns the paths written.
pub fn write_plots(history: &History, dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    register_fonts()?;
    std::fs::create_dir_all(dir).map_err(|source| TrainError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    let plots: [(&str, DrawFn, bool); 2] = [
        ("loss.png", draw_loss, has_loss(history)),
        ("error.png", draw_error, has_error(history)),
    ];
    for (name, draw, has_data) in plots {
        if !has_data {
            tracing::debug!(plot = name, "nothing to plot yet");
            continue;
        }
        let img = render(|area| draw(area, history)).map_err(|e| TrainError::Plot {
            what: name.to_string(),
            message: e.to_string(),
        })?;
        let path = dir.join(name);
        write_png_atomic(&img, &path)?;
        written.push(path);
    }
    tracing::debug!(?written, "wrote plots");
    Ok(written)
}

/// Registers the embedded font under every family name, once per process.
fn register_fonts() -> Result<(), TrainError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        FAMILIES
            .iter()
            .all(|family| register_font(family, FontStyle::Normal, FONT).is_ok())
    });
    if ok {
        Ok(())
    } else {
        Err(TrainError::Plot {
            what: "fonts".into(),
            message: "the embedded DejaVu Sans font could not be parsed".into(),
        })
    }
}

/// Draws into a white `WIDTH×HEIGHT` RGB image.
fn render(draw: impl FnOnce(&Area<'_>) -> DrawResult) -> Result<RgbImage, Box<dyn Error>> {
    let mut buffer = vec![255u8; WIDTH as usize * HEIGHT as usize * 3];
    {
        let area = BitMapBackend::with_buffer(&mut buffer, (WIDTH, HEIGHT)).into_drawing_area();
        area.fill(&WHITE)?;
        draw(&area)?;
        area.present()?;
    }
    RgbImage::from_raw(WIDTH, HEIGHT, buffer).ok_or_else(|| "plot buffer of the wrong size".into())
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn has_loss(h: &History) -> bool {
    h.steps.iter().any(|s| s.loss.is_finite())
        || h.epochs
            .iter()
            .any(|e| e.train_loss.is_finite() || e.val_loss.is_some_and(f64::is_finite))
}

fn has_error(h: &History) -> bool {
    h.epochs.iter().any(|e| {
        e.top1_error.is_some_and(f64::is_finite) || e.top5_error.is_some_and(f64::is_finite)
    })
}

/// Centred moving average with a window of `2·half + 1` points, shrinking
/// at the ends so the curve spans every step without lagging behind.
pub fn moving_average(values: &[f64], half: usize) -> Vec<f64> {
    let mut prefix = Vec::with_capacity(values.len() + 1);
    prefix.push(0.0);
    for v in values {
        prefix.push(prefix.last().copied().unwrap_or(0.0) + v);
    }
    (0..values.len())
        .map(|i| {
            let (lo, hi) = (i.saturating_sub(half), (i + half + 1).min(values.len()));
            (prefix[hi] - prefix[lo]) / (hi - lo) as f64
        })
        .collect()
}

/// `lo..hi` padded by 5% on each side (never below 0 if `lo ≥ 0`), and
/// widened when it is a single value.
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let span = if hi > lo {
        hi - lo
    } else {
        lo.abs().max(1.0) * 0.2
    };
    let bottom = lo - 0.05 * span;
    let bottom = if lo >= 0.0 { bottom.max(0.0) } else { bottom };
    bottom..hi + 0.05 * span
}

fn draw_loss(area: &Area<'_>, h: &History) -> DrawResult {
    let raw: Vec<(f64, f64)> = h
        .steps
        .iter()
        .filter_map(|s| Some((s.step as f64, finite(f64::from(s.loss))?)))
        .collect();
    let ys: Vec<f64> = raw.iter().map(|p| p.1).collect();
    let smooth: Vec<(f64, f64)> = raw
        .iter()
        .map(|p| p.0)
        .zip(moving_average(&ys, raw.len() / 50))
        .collect();
    let train: Vec<(f64, f64)> = h
        .epochs
        .iter()
        .filter_map(|e| Some((e.step as f64, finite(e.train_loss)?)))
        .collect();
    let val: Vec<(f64, f64)> = h
        .epochs
        .iter()
        .filter_map(|e| Some((e.step as f64, finite(e.val_loss?)?)))
        .collect();

    let all = || raw.iter().chain(&train).chain(&val);
    let x_max = all().map(|p| p.0).fold(1.0, f64::max);
    let y_min = all().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mut sorted = ys.clone();
    sorted.sort_by(f64::total_cmp);
    let p99 = sorted
        .get((sorted.len() * 99 / 100).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NEG_INFINITY);
    let y_max = smooth
        .iter()
        .chain(&train)
        .chain(&val)
        .map(|p| p.1)
        .fold(p99, f64::max);

    let mut chart = ChartBuilder::on(area)
        .caption("Training loss", ("sans-serif", 26))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(70)
        // 3% room on the right so the last epoch's marker is not cut in half.
        .build_cartesian_2d(0.0..x_max * 1.03, padded(y_min, y_max))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("cross-entropy loss")
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;

    if !raw.is_empty() {
        chart
            .draw_series(LineSeries::new(raw.iter().copied(), RAW.stroke_width(1)))?
            .label("loss per step")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], RAW.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(
                smooth.iter().copied(),
                SMOOTH.stroke_width(2),
            ))?
            .label(format!(
                "moving average ({} steps)",
                2 * (raw.len() / 50) + 1
            ))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], SMOOTH.stroke_width(2)));
    }
    draw_marked_lines(
        &mut chart,
        [
            (&train, TRAIN, "epoch mean, training"),
            (&val, VAL, "validation"),
        ],
    )?;
    draw_legend(&mut chart)?;
    Ok(())
}

fn draw_error(area: &Area<'_>, h: &History) -> DrawResult {
    let series = |pick: fn(&crate::metrics::EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        h.epochs
            .iter()
            .filter_map(|e| Some(((e.epoch + 1) as f64, 100.0 * finite(pick(e)?)?)))
            .collect()
    };
    let top1 = series(|e| e.top1_error);
    let top5 = series(|e| e.top5_error);
    let all = || top1.iter().chain(&top5);
    let x_max = all().map(|p| p.0).fold(1.0, f64::max);
    let y_max = all().map(|p| p.1).fold(0.0, f64::max);
    let y_top = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };

    let mut chart = ChartBuilder::on(area)
        .caption("Validation error", ("sans-serif", 26))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5..x_max + 0.5, 0.0..y_top)?;
    // Integer epochs only: a tick at 1.5 would name no epoch.
    let epochs = x_max as usize;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("error (%)")
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .x_labels(epochs.clamp(1, 10))
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-6 && *x >= 1.0 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.1}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    draw_marked_lines(
        &mut chart,
        [(&top1, TOP1, "top-1 error"), (&top5, TOP5, "top-5 error")],
    )?;
    draw_legend(&mut chart)?;
    Ok(())
}

/// A chart of `f64` against `f64` on the bitmap backend.
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One per-epoch series: its points, colour and legend label.
type Marked<'s> = (&'s Vec<(f64, f64)>, RGBColor, &'s str);

/// Per-epoch series: a line with a marker at each point, and a legend
/// entry showing both; empty series are left out.
fn draw_marked_lines<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, series: [Marked<'_>; 2]) -> DrawResult {
    for (points, color, label) in series {
        if points.is_empty() {
            continue;
        }
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(2),
        ))?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 5, color.filled())))?
            .label(label)
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (24, 0)], color.stroke_width(2))
                    + Circle::new((12, 0), 5, color.filled())
            });
    }
    Ok(())
}

/// The legend box, top right, over a translucent background.
fn draw_legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> DrawResult {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_average_is_centred_and_shrinks_at_the_ends() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(moving_average(&v, 0), v.to_vec());
        assert_eq!(moving_average(&v, 1), vec![1.5, 2.0, 3.0, 4.0, 4.5]);
        assert!(moving_average(&[], 3).is_empty());
    }

    #[test]
    fn padding_keeps_non_negative_ranges_non_negative() {
        let r = padded(0.1, 2.0);
        assert!(r.start >= 0.0 && r.start < 0.1 && r.end > 2.0);
        let r = padded(3.0, 3.0);
        assert!(r.start < 3.0 && r.end > 3.0);
    }
}
