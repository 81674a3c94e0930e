//! The L2 calibration error of Kumar, Liang & Ma (2019), debiased, exactly
//! as uncertainty-calibration's `get_calibration_error(probs, labels, p=2)`.

use serde::{Deserialize, Serialize};

use crate::error::{CalibError, Result};
use crate::logits::Predictions;
use crate::recal::equal_mass_edges;

/// Which probabilities are checked for calibration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CeMode {
    /// Every class's probability against `[label = class]`: the squared
    /// errors averaged over classes, then the square root (the package's
    /// `mode='marginal'`, its default).
    #[default]
    Marginal,
    /// The top-label confidence against correctness (`mode='top-label'`).
    TopLabel,
}

/// How the probabilities are binned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CeBinning {
    /// The package's rule (`is_discrete`): [`CeBinning::Distinct`] when
    /// every column checked has fewer distinct values than a quarter of the
    /// samples (the output of a binning method), else
    /// [`CeBinning::EqualMass`].
    #[default]
    Auto,
    /// `bins` equal-mass bins (`lower_bound_scaling_ce`, `get_equal_bins`):
    /// for a continuous (scaling) model this is a lower bound of its error.
    EqualMass,
    /// One bin per distinct value (`get_binning_ce`, `get_discrete_bins`).
    Distinct,
}

/// Settings of [`l2_calibration_error`]; the defaults are
/// `get_calibration_error`'s (`p=2, debias=True, mode='marginal'`, 15
/// equal-mass bins for a continuous model).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct L2CeConfig {
    /// Marginal (default) or top-label.
    pub mode: CeMode,
    /// Subtract each bin's sampling variance of the label mean (`debias=True`).
    pub debias: bool,
    /// Number of equal-mass bins (≥ 1), when those are used.
    pub bins: usize,
    /// The binning rule.
    pub binning: CeBinning,
}

impl Default for L2CeConfig {
    fn default() -> Self {
        L2CeConfig {
            mode: CeMode::Marginal,
            debias: true,
            bins: 15,
            binning: CeBinning::Auto,
        }
    }
}

/// Kumar et al.'s L2 calibration error of `p`, as uncertainty-calibration
/// 0.1.4's `get_calibration_error(probs, labels, p=2, debias, mode)`.
///
/// Within each bin of `m ≥ 2` samples with mean probability `f̄` and label
/// mean `ȳ`, the squared error is `(f̄ − ȳ)²`, less `ȳ(1 − ȳ)/(m − 1)` when
/// debiased (bins of fewer than 2 samples contribute 0 then); bins are
/// weighted by `m/n` and the debiased sum is clipped at 0 before the square
/// root. A value goes to the first bin whose upper edge is `≥` it. With
/// `debias = false` it is the plug-in binned RMS calibration error.
///
/// # Errors
/// [`CalibError::ZeroBins`] if `config.bins == 0`.
pub fn l2_calibration_error(p: &Predictions, config: &L2CeConfig) -> Result<f64> {
    if config.bins == 0 {
        return Err(CalibError::ZeroBins);
    }
    let n = p.len();
    match config.mode {
        CeMode::TopLabel => {
            let correct: Vec<bool> = (0..n).map(|i| p.is_correct(i)).collect();
            Ok(ce_1d(
                p.confidences(),
                &correct,
                config,
                discrete(&[p.confidences()], config),
            ))
        }
        CeMode::Marginal => {
            let k = p.num_classes();
            let columns: Vec<Vec<f64>> = (0..k)
                .map(|c| (0..n).map(|i| p.probs(i)[c]).collect())
                .collect();
            let refs: Vec<&[f64]> = columns.iter().map(Vec::as_slice).collect();
            let distinct = discrete(&refs, config);
            let total: f64 = columns
                .iter()
                .enumerate()
                .map(|(c, col)| {
                    let y: Vec<bool> = p.labels().iter().map(|&l| l == c).collect();
                    ce_1d(col, &y, config, distinct).powi(2)
                })
                .sum();
            Ok((total / k as f64).sqrt())
        }
    }
}

/// Kumar et al.'s L2 calibration error of scores `f ∈ [0, 1]` against binary
/// outcomes `y` (the package's one-dimensional path; `config.mode` is not
/// used). Given top-label confidences and correctness it equals
/// [`CeMode::TopLabel`].
///
/// # Errors
/// [`CalibError::Empty`], [`CalibError::LengthMismatch`],
/// [`CalibError::InvalidProbability`] for a score outside `[0, 1]`,
/// [`CalibError::ZeroBins`].
pub fn l2_calibration_error_scores(f: &[f64], y: &[bool], config: &L2CeConfig) -> Result<f64> {
    crate::smooth::check_scores(f, y)?;
    if config.bins == 0 {
        return Err(CalibError::ZeroBins);
    }
    Ok(ce_1d(f, y, config, discrete(&[f], config)))
}

/// Whether to bin by distinct values.
fn discrete(columns: &[&[f64]], config: &L2CeConfig) -> bool {
    match config.binning {
        CeBinning::Distinct => true,
        CeBinning::EqualMass => false,
        // enough_duplicates: fewer distinct values than n / 4, in every column.
        CeBinning::Auto => columns
            .iter()
            .all(|c| (distinct_edges(c).len() as f64) < c.len() as f64 / 4.0),
    }
}

/// `get_discrete_bins`: midpoints between consecutive distinct values, then 1.0.
fn distinct_edges(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.dedup();
    let mut edges: Vec<f64> = v.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
    edges.push(1.0);
    edges
}

/// One column's (top-label or one class's) L2 error.
fn ce_1d(f: &[f64], y: &[bool], config: &L2CeConfig, distinct: bool) -> f64 {
    let edges = if distinct {
        distinct_edges(f)
    } else {
        equal_mass_edges(f, config.bins)
    };
    let nb = edges.len();
    let (mut count, mut sum_f, mut sum_y) = (vec![0usize; nb], vec![0.0; nb], vec![0.0; nb]);
    for (&fi, &yi) in f.iter().zip(y) {
        // numpy.searchsorted(edges, f) (side='left'); f ≤ 1 = the last edge.
        let b = edges.partition_point(|&e| e < fi).min(nb - 1);
        count[b] += 1;
        sum_f[b] += fi;
        sum_y[b] += if yi { 1.0 } else { 0.0 };
    }
    let n = f.len() as f64;
    let mut total = 0.0;
    for b in 0..nb {
        let m = count[b];
        if m == 0 || (config.debias && m < 2) {
            continue;
        }
        let mf = m as f64;
        let (fbar, ybar) = (sum_f[b] / mf, sum_y[b] / mf);
        let mut err = (fbar - ybar).powi(2);
        if config.debias {
            err -= ybar * (1.0 - ybar) / (mf - 1.0);
        }
        total += mf / n * err;
    }
    total.max(0.0).sqrt()
}
