//! The Brier score's decomposition into reliability, resolution and
//! uncertainty (Murphy 1973), per class and summed.

use serde::{Deserialize, Serialize};

use crate::error::{CalibError, Result};
use crate::logits::Predictions;

/// How forecasts are grouped for [`brier_decomposition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrierBinning {
    /// `B` equal-width bins `[b/B, (b+1)/B)` of each class's probability
    /// (1.0 in the last), as [`classwise_ece`](crate::classwise_ece).
    EqualWidth(usize),
    /// One group per distinct probability value (Murphy's own grouping,
    /// exact for forecasts that take few values, e.g. after binning).
    Distinct,
}

impl Default for BrierBinning {
    /// Ten equal-width bins.
    fn default() -> Self {
        BrierBinning::EqualWidth(10)
    }
}

/// The multi-class Brier score ([`brier`](crate::brier), summed over
/// classes) split as `brier = reliability − resolution + uncertainty +
/// within_bin_variance − within_bin_covariance`.
///
/// Each term is the sum over classes of the one-vs-rest term of class `c`,
/// with forecasts `f_i = p_ic`, outcomes `o_i = [y_i = c]`, bins `b` of
/// `n_b` samples, bin means `f̄_b`, `ō_b` and overall frequency `ō`:
/// reliability `Σ_b n_b/n (f̄_b − ō_b)²`, resolution `Σ_b n_b/n (ō_b − ō)²`,
/// uncertainty `ō(1 − ō)`. Murphy's three terms add up to the Brier score
/// only when every forecast in a bin is the same; Stephenson, Coelho &
/// Jolliffe (2008)'s two extra terms — the within-bin variance of the
/// forecasts `(1/n) Σ_i (f_i − f̄_b)²` and twice their within-bin covariance
/// with the outcomes `(2/n) Σ_i (f_i − f̄_b)(o_i − ō_b)` — make the identity
/// exact for any binning (both are 0 with [`BrierBinning::Distinct`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BrierDecomposition {
    /// Reliability (calibration term; lower is better).
    pub reliability: f64,
    /// Resolution (how far bin frequencies are from the base rate; higher is better).
    pub resolution: f64,
    /// Uncertainty of the outcomes, `Σ_c ō_c (1 − ō_c)`.
    pub uncertainty: f64,
    /// Within-bin variance of the forecasts.
    pub within_bin_variance: f64,
    /// Twice the within-bin covariance of forecasts and outcomes.
    pub within_bin_covariance: f64,
    /// The Brier score itself (computed directly).
    pub brier: f64,
}

impl BrierDecomposition {
    /// Murphy's three-term reconstruction `reliability − resolution + uncertainty`.
    pub fn murphy(&self) -> f64 {
        self.reliability - self.resolution + self.uncertainty
    }

    /// The exact five-term reconstruction (equal to `brier` up to rounding).
    pub fn reconstructed(&self) -> f64 {
        self.murphy() + self.within_bin_variance - self.within_bin_covariance
    }
}

/// Decomposes the multi-class Brier score of `p` (see [`BrierDecomposition`]).
///
/// # Errors
/// [`CalibError::ZeroBins`] for `EqualWidth(0)`.
pub fn brier_decomposition(p: &Predictions, binning: BrierBinning) -> Result<BrierDecomposition> {
    if binning == BrierBinning::EqualWidth(0) {
        return Err(CalibError::ZeroBins);
    }
    let (n, k) = (p.len(), p.num_classes());
    let nf = n as f64;
    let mut out = BrierDecomposition {
        reliability: 0.0,
        resolution: 0.0,
        uncertainty: 0.0,
        within_bin_variance: 0.0,
        within_bin_covariance: 0.0,
        brier: crate::metrics::brier(p),
    };
    let mut f = vec![0.0; n];
    let mut o = vec![0.0; n];
    let mut group = vec![0usize; n];
    for c in 0..k {
        for i in 0..n {
            f[i] = p.probs(i)[c];
            o[i] = if p.labels()[i] == c { 1.0 } else { 0.0 };
        }
        let obar = o.iter().sum::<f64>() / nf;
        out.uncertainty += obar * (1.0 - obar);
        let groups = match binning {
            BrierBinning::EqualWidth(bins) => {
                for (g, &x) in group.iter_mut().zip(&f) {
                    // numpy.digitize on the upper edges b/B, right=False; 1.0 in the last bin.
                    *g = (1..=bins)
                        .take_while(|&b| b as f64 / bins as f64 <= x)
                        .count()
                        .min(bins - 1);
                }
                bins
            }
            BrierBinning::Distinct => {
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&a, &b| f[a].total_cmp(&f[b]));
                let mut g = 0;
                for (j, &i) in order.iter().enumerate() {
                    if j > 0 && f[i] != f[order[j - 1]] {
                        g += 1;
                    }
                    group[i] = g;
                }
                g + 1
            }
        };
        let (mut count, mut sum_f, mut sum_o) =
            (vec![0usize; groups], vec![0.0; groups], vec![0.0; groups]);
        for i in 0..n {
            count[group[i]] += 1;
            sum_f[group[i]] += f[i];
            sum_o[group[i]] += o[i];
        }
        let mut fbar = vec![0.0; groups];
        let mut obin = vec![0.0; groups];
        if binning == BrierBinning::Distinct {
            // The group's forecast itself, not a rounded mean of copies of it.
            for i in 0..n {
                fbar[group[i]] = f[i];
            }
        }
        for b in 0..groups {
            if count[b] == 0 {
                continue;
            }
            let m = count[b] as f64;
            obin[b] = sum_o[b] / m;
            if binning != BrierBinning::Distinct {
                fbar[b] = sum_f[b] / m;
            }
            out.reliability += m / nf * (fbar[b] - obin[b]).powi(2);
            out.resolution += m / nf * (obin[b] - obar).powi(2);
        }
        if binning == BrierBinning::Distinct {
            // Every forecast in a group equals its mean: both extra terms are 0.
            continue;
        }
        for i in 0..n {
            let df = f[i] - fbar[group[i]];
            out.within_bin_variance += df * df / nf;
            out.within_bin_covariance += 2.0 * df * (o[i] - obin[group[i]]) / nf;
        }
    }
    Ok(out)
}
