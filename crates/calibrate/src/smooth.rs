//! Smooth ECE (Błasiok & Nakkiran 2023), exactly as the `relplot` package
//! computes `smECE`.

use serde::{Deserialize, Serialize};

use crate::error::{CalibError, Result};
use crate::logits::Predictions;

/// A smooth ECE and the kernel bandwidth it was computed at.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SmoothEce {
    /// The smooth ECE, in `[0, 1]`.
    pub value: f64,
    /// The Gaussian kernel's bandwidth σ.
    pub bandwidth: f64,
}

/// Smooth ECE of the top-label confidences against correctness, with
/// relplot's automatic bandwidth (see [`smooth_ece_scores`]).
///
/// # Errors
/// None in practice (predictions are valid input); the `Result` mirrors
/// [`smooth_ece_scores`].
pub fn smooth_ece(p: &Predictions) -> Result<SmoothEce> {
    let correct: Vec<bool> = (0..p.len()).map(|i| p.is_correct(i)).collect();
    smooth_ece_scores(p.confidences(), &correct)
}

/// Smooth ECE of scores `f ∈ [0, 1]` against binary outcomes `y`, with the
/// bandwidth chosen as relplot 1.0.3's `smECE(f, y)` does (`eps = 0.001`).
///
/// The smooth ECE at bandwidth σ is `Σ_t |r̂(t)| d̂(t) / Σ_t d̂(t)` over an
/// evaluation grid `t`, where `r̂` is the kernel-smoothed residual
/// `f − y` and `d̂` the kernel density of `f` (plus `1e-4`), both
/// Gaussian-smoothed with reflection at 0 and 1 (see [`smooth_ece_at`]).
/// The bandwidth is Błasiok & Nakkiran's fixed point `σ = smECE_σ`, found
/// as relplot does: `σ = 1` if `1 ≤ smECE_1`, else ten bisection steps on
/// `(0, 1]` of the predicate `σ < 0.001 or σ < smECE_σ`, returning the
/// upper end of the final bracket.
///
/// # Errors
/// [`CalibError::Empty`], [`CalibError::LengthMismatch`], and
/// [`CalibError::InvalidProbability`] for a score outside `[0, 1]`.
pub fn smooth_ece_scores(f: &[f64], y: &[bool]) -> Result<SmoothEce> {
    check_scores(f, y)?;
    let residual = residuals(f, y);
    const EPS: f64 = 0.001;
    let at = |sigma: f64| smooth_ece_sigma(f, &residual, sigma);
    let accept = |sigma: f64| sigma < EPS || sigma < at(sigma);
    let bandwidth = if accept(1.0) {
        1.0
    } else {
        let (mut start, mut end) = (1.0f64, 0.0f64);
        for _ in 0..10 {
            let mid = (start + end) / 2.0;
            if accept(mid) {
                end = mid;
            } else {
                start = mid;
            }
        }
        start
    };
    Ok(SmoothEce {
        value: at(bandwidth),
        bandwidth,
    })
}

/// Smooth ECE at a fixed bandwidth `sigma` (relplot's `smECE_sigma`).
///
/// As relplot 1.0.3's `ReflectedGaussianKernel`: `f` is spread onto a grid
/// of `E = max(2000, round(20/σ)) // 2 + 1` points on `[0, 1]` by linear
/// interpolation, convolved with the Gaussian density of σ sampled on that
/// grid (not normalised to the grid: relplot's convention) after reflecting
/// the grid at both ends, and read at `max(200, round(10/σ))` evaluation
/// points by linear interpolation.
///
/// # Errors
/// As [`smooth_ece_scores`], plus [`CalibError::InvalidSetting`] unless
/// `sigma` is finite and positive.
pub fn smooth_ece_at(f: &[f64], y: &[bool], sigma: f64) -> Result<f64> {
    check_scores(f, y)?;
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(CalibError::InvalidSetting {
            name: "sigma",
            value: sigma,
            expected: "a finite bandwidth > 0",
        });
    }
    Ok(smooth_ece_sigma(f, &residuals(f, y), sigma))
}

/// Scores in `[0, 1]`, one outcome each, at least one: the input check of
/// the score-based estimators (here and in `debiased`).
pub(crate) fn check_scores(f: &[f64], y: &[bool]) -> Result<()> {
    if f.is_empty() {
        return Err(CalibError::Empty);
    }
    if f.len() != y.len() {
        return Err(CalibError::LengthMismatch {
            what: "outcomes (one per score)",
            expected: f.len(),
            found: y.len(),
        });
    }
    if let Some(i) = f.iter().position(|v| !(0.0..=1.0).contains(v)) {
        return Err(CalibError::InvalidProbability {
            row: i,
            column: 0,
            value: f[i],
        });
    }
    Ok(())
}

fn residuals(f: &[f64], y: &[bool]) -> Vec<f64> {
    f.iter()
        .zip(y)
        .map(|(&f, &y)| f - if y { 1.0 } else { 0.0 })
        .collect()
}

/// `numpy.linspace(0, 1, n)[i]`.
fn linspace(i: usize, n: usize) -> f64 {
    if i + 1 == n {
        1.0
    } else {
        i as f64 * (1.0 / (n - 1) as f64)
    }
}

/// Python's `round` (ties to even) of a positive float, as `usize`.
fn py_round(x: f64) -> usize {
    x.round_ties_even() as usize
}

fn smooth_ece_sigma(f: &[f64], residual: &[f64], sigma: f64) -> f64 {
    let ev_points = py_round(10.0 / sigma).max(200);
    let grid = py_round(20.0 / sigma).max(2000) / 2 + 1;
    let kernel: Vec<f64> = (0..grid)
        .map(|i| {
            let t = linspace(i, grid) - 0.5;
            (-t * t / (2.0 * sigma * sigma)).exp() / ((2.0 * std::f64::consts::PI).sqrt() * sigma)
        })
        .collect();
    let ones = vec![1.0; f.len()];
    let on_grid_r = round_to_grid(f, residual, grid);
    let on_grid_1 = round_to_grid(f, &ones, grid);
    // The evaluation points and the two grid points each one interpolates.
    let bucket = 1.0 / (grid - 1) as f64;
    let points: Vec<(usize, f64)> = (0..ev_points)
        .map(|j| {
            let t = linspace(j, ev_points);
            let ind = ((t * (grid - 1) as f64) as usize).min(grid - 2);
            (ind, (t - ind as f64 * bucket) / bucket)
        })
        .collect();
    let mut needed = vec![false; grid];
    for &(ind, _) in &points {
        needed[ind] = true;
        needed[ind + 1] = true;
    }
    let smooth_r = reflected_convolution(&on_grid_r, &kernel, &needed);
    let smooth_1 = reflected_convolution(&on_grid_1, &kernel, &needed);
    let (mut num, mut den) = (0.0, 0.0);
    for &(ind, frac) in &points {
        let r = smooth_r[ind] * (1.0 - frac) + smooth_r[ind + 1] * frac;
        let d = smooth_1[ind] * (1.0 - frac) + smooth_1[ind + 1] * frac + 1e-4;
        num += (r / d).abs() * d;
        den += d;
    }
    num / den
}

/// relplot's `smooth_round_to_grid`: each value split between the two grid
/// points around its score, in proportion to closeness (two `numpy.add.at`
/// passes, in that order).
fn round_to_grid(f: &[f64], values: &[f64], grid: usize) -> Vec<f64> {
    let mut out = vec![0.0; grid];
    let scale = (grid - 1) as f64;
    let place = |x: f64| {
        let b = ((x * scale) as usize).min(grid - 2);
        (b, x * scale - b as f64)
    };
    for (&x, &v) in f.iter().zip(values) {
        let (b, frac) = place(x);
        out[b] += (1.0 - frac) * v;
    }
    for (&x, &v) in f.iter().zip(values) {
        let (b, frac) = place(x);
        out[b + 1] += frac * v;
    }
    out
}

/// `numpy.convolve(ext, kernel, 'valid')[E//2 : E//2 + E]` with `ext` the
/// grid reflected at both ends, computed only where `needed`.
fn reflected_convolution(values: &[f64], kernel: &[f64], needed: &[bool]) -> Vec<f64> {
    let e = values.len();
    // [values reversed without its last, values, values reversed without its first]
    let ext: Vec<f64> = values[1..]
        .iter()
        .rev()
        .chain(values)
        .chain(values[..e - 1].iter().rev())
        .copied()
        .collect();
    let mut out = vec![0.0; e];
    for (s, o) in out.iter_mut().enumerate() {
        if needed[s] {
            let n = s + e / 2;
            *o = ext[n..n + e]
                .iter()
                .zip(kernel.iter().rev())
                .map(|(a, b)| a * b)
                .sum();
        }
    }
    out
}
