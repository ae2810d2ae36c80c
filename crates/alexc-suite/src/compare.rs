//! Comparing a backend's results with the reference: the tolerance classes
//! (their values and the reasons for them are in the crate documentation)
//! and the per-result statistics a failure report prints.

use std::fmt;

/// How closely a result must match the reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tolerance {
    /// Bit-identical; NaN matches any NaN.
    Exact,
    /// `|got − want| ≤ abs + rel·|want|`, element by element: for values
    /// computed by a fixed, short sequence of operations.
    Close { rel: f32, abs: f32 },
    /// `|got − want| ≤ rel·max(1, maxⱼ |wantⱼ|)`: for sums of many terms
    /// whose order may differ, where the rounding error scales with the
    /// terms, not with the (possibly cancelled) element.
    Scaled { rel: f32 },
}

impl Tolerance {
    /// Copies, selections (max, masks) and single roundings (add, mul).
    pub const EXACT: Tolerance = Tolerance::Exact;
    /// Elementwise arithmetic where only FMA contraction may differ (the
    /// SGD step): a few ulps of operands in `[-2, 2]`.
    pub const ELEMENTWISE: Tolerance = Tolerance::Close {
        rel: 1e-6,
        abs: 1e-6,
    };
    /// Short reductions through `exp`, `log`, `pow` and a division (softmax,
    /// the loss, LRN, average pooling): reassociated vector sums over up to
    /// a thousand terms, FMA contraction, and the libm call per element.
    pub const FUNCTION: Tolerance = Tolerance::Close {
        rel: 4e-6,
        abs: 1e-7,
    };
    /// Long sums of products (convolution, linear layers, every gradient
    /// that sums over a window, a batch or an axis): blocked, tiled and
    /// reassociated accumulation.
    pub const SUMS: Tolerance = Tolerance::Scaled { rel: 1e-5 };

    /// Short name for reports.
    pub fn class(&self) -> &'static str {
        match self {
            Tolerance::Exact => "exact",
            Tolerance::Close { .. } => "close",
            Tolerance::Scaled { .. } => "scaled",
        }
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tolerance::Exact => write!(f, "exact"),
            Tolerance::Close { rel, abs } => write!(f, "≤ {abs:e} + {rel:e}·|want|"),
            Tolerance::Scaled { rel } => write!(f, "≤ {rel:e}·max(1, max|want|)"),
        }
    }
}

/// The element that is furthest outside (or closest to) its tolerance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Worst {
    pub index: usize,
    pub got: f32,
    pub want: f32,
}

/// One result compared with its expected values.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// What was compared (`result 1`, `unfused result 0 vs fused`).
    pub what: String,
    pub tolerance: Tolerance,
    /// Largest `|got − want|` over elements that are not both NaN.
    pub max_abs: f32,
    /// Largest `|got − want| / |want|` over elements with `want ≠ 0`.
    pub max_rel: f32,
    /// Largest error divided by the error allowed (≤ 1 passes; infinite
    /// for a NaN mismatch or any difference under `Exact`).
    pub margin: f32,
    /// The element with the largest `margin`.
    pub worst: Option<Worst>,
    /// Elements outside the tolerance.
    pub mismatches: usize,
    /// Set when the lengths differ (then nothing else is meaningful).
    pub length: Option<(usize, usize)>,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.mismatches == 0 && self.length.is_none()
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((got, want)) = self.length {
            return write!(f, "{}: {got} elements, expected {want}", self.what);
        }
        write!(
            f,
            "{}: {} of tolerance ({}) — {} mismatches, max abs {:e}, max rel {:e}",
            self.what, self.margin, self.tolerance, self.mismatches, self.max_abs, self.max_rel
        )?;
        if let Some(w) = self.worst {
            write!(
                f,
                "; worst at element {}: got {:?}, want {:?}",
                w.index, w.got, w.want
            )?;
        }
        Ok(())
    }
}

/// Compares `got` with `want` under `tolerance`.
pub fn compare(
    what: impl Into<String>,
    got: &[f32],
    want: &[f32],
    tolerance: Tolerance,
) -> Comparison {
    let mut c = Comparison {
        what: what.into(),
        tolerance,
        max_abs: 0.0,
        max_rel: 0.0,
        margin: 0.0,
        worst: None,
        mismatches: 0,
        length: None,
    };
    if got.len() != want.len() {
        c.length = Some((got.len(), want.len()));
        return c;
    }
    let scale = want
        .iter()
        .filter(|w| w.is_finite())
        .fold(1.0f32, |m, w| m.max(w.abs()));
    for (index, (&g, &w)) in got.iter().zip(want).enumerate() {
        let margin = if g.is_nan() && w.is_nan() {
            0.0
        } else if g.is_nan() || w.is_nan() || g.is_infinite() || w.is_infinite() {
            if g == w {
                0.0
            } else {
                f32::INFINITY
            }
        } else {
            let err = (g - w).abs();
            c.max_abs = c.max_abs.max(err);
            if w != 0.0 {
                c.max_rel = c.max_rel.max(err / w.abs());
            }
            let allowed = match tolerance {
                Tolerance::Exact => 0.0,
                Tolerance::Close { rel, abs } => abs + rel * w.abs(),
                Tolerance::Scaled { rel } => rel * scale,
            };
            if g.to_bits() == w.to_bits() {
                0.0
            } else if tolerance == Tolerance::Exact {
                // Any difference, -0.0 against 0.0 included.
                f32::INFINITY
            } else if allowed > 0.0 {
                err / allowed
            } else if err == 0.0 {
                0.0
            } else {
                f32::INFINITY
            }
        };
        if margin > 1.0 {
            c.mismatches += 1;
        }
        if c.worst.is_none() || margin > c.margin {
            c.margin = c.margin.max(margin);
            c.worst = Some(Worst {
                index,
                got: g,
                want: w,
            });
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_tells_signed_zeros_apart_and_matches_nans() {
        assert!(compare("t", &[f32::NAN, 1.0], &[f32::NAN, 1.0], Tolerance::Exact).passed());
        let c = compare("t", &[0.0], &[-0.0], Tolerance::Exact);
        assert_eq!(c.mismatches, 1);
    }

    #[test]
    fn close_and_scaled_bounds() {
        let t = Tolerance::Close {
            rel: 1e-3,
            abs: 0.0,
        };
        assert!(compare("t", &[1000.5], &[1000.0], t).passed());
        assert!(!compare("t", &[1.01], &[1.0], t).passed());
        // Scaled: a small element may be off by rel·max|want|.
        let s = Tolerance::Scaled { rel: 1e-3 };
        assert!(compare("t", &[0.05, 100.0], &[0.0, 100.0], s).passed());
        assert!(!compare("t", &[0.2, 100.0], &[0.0, 100.0], s).passed());
        let c = compare("t", &[1.0, f32::NAN], &[1.0, 2.0], s);
        assert_eq!((c.mismatches, c.worst.map(|w| w.index)), (1, Some(1)));
    }
}
