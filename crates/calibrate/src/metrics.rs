//! Accuracy, proper scores (Brier, NLL) and binned calibration errors.

use serde::{Deserialize, Serialize};

use crate::error::{CalibError, Result};
use crate::logits::Predictions;

/// Fraction of samples whose argmax equals the label.
pub fn accuracy(p: &Predictions) -> f64 {
    let correct = (0..p.len()).filter(|&i| p.is_correct(i)).count();
    correct as f64 / p.len() as f64
}

/// Multi-class Brier score: `mean_i Σ_k (p_ik − [k = y_i])²`, in `[0, 2]`.
pub fn brier(p: &Predictions) -> f64 {
    let total: f64 = (0..p.len())
        .map(|i| {
            let y = p.labels()[i];
            p.probs(i)
                .iter()
                .enumerate()
                .map(|(k, &q)| {
                    let d = q - if k == y { 1.0 } else { 0.0 };
                    d * d
                })
                .sum::<f64>()
        })
        .sum();
    total / p.len() as f64
}

/// Negative log-likelihood: mean cross-entropy `mean_i −log p_i[y_i]` (nats).
pub fn nll(p: &Predictions) -> f64 {
    p.sample_nll().iter().sum::<f64>() / p.len() as f64
}

/// Upper edges of `bins` equal-width bins on `[0, 1]`: `(b + 1) / bins`,
/// the last one exactly `1.0`.
fn upper_edges(bins: usize) -> Vec<f64> {
    (1..=bins).map(|b| b as f64 / bins as f64).collect()
}

/// `numpy.digitize(x, uppers)` with `right=False`: the number of upper edges
/// `≤ x`. For `x ∈ [0, 1)` this is the bin whose half-open interval
/// `[lower, upper)` holds `x`; `x = 1.0` gives `uppers.len()` — past the last bin.
fn digitize(x: f64, uppers: &[f64]) -> usize {
    uppers.partition_point(|&u| u <= x)
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Lower edge (inclusive).
    pub lower: f64,
    /// Upper edge (exclusive; see [`ReliabilityDiagram`] for confidence 1.0).
    pub upper: f64,
    /// Number of samples whose top-label confidence falls in the bin.
    pub count: usize,
    /// Mean top-label confidence of those samples; `None` when empty.
    pub mean_confidence: Option<f64>,
    /// Fraction of those samples classified correctly; `None` when empty.
    pub accuracy: Option<f64>,
}

/// Equal-width reliability diagram of top-label confidence, binned exactly as
/// the original notebook's ECE.
///
/// Bin `b` holds confidences in `[b/B, (b+1)/B)` — `numpy.digitize` on the
/// upper edges with `right=False`. A confidence of exactly `1.0` (a saturated
/// softmax) lands past the last bin, so it is in **no** bin, but it still
/// counts in `n`, the ECE's denominator; [`ReliabilityDiagram::saturated`]
/// counts such samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityDiagram {
    /// The bins, lowest confidence first.
    pub bins: Vec<ReliabilityBin>,
    /// Total number of samples (the ECE denominator), including saturated ones.
    pub n: usize,
    /// Samples with confidence exactly 1.0, which fall in no bin.
    pub saturated: usize,
}

/// The norm under which binned calibration gaps are combined, see
/// [`calibration_error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    /// `Σ_b (n_b/n) |acc_b − conf_b|`: the ECE.
    #[default]
    L1,
    /// `√(Σ_b (n_b/n) (acc_b − conf_b)²)`: the RMS calibration error.
    L2,
    /// `max_b |acc_b − conf_b|` over non-empty bins: the maximum calibration error.
    Linf,
}

impl ReliabilityDiagram {
    /// The binned calibration error under `norm`: [`Norm::L1`] is
    /// [`ece`](Self::ece), [`Norm::Linf`] is [`mce`](Self::mce), and
    /// [`Norm::L2`] the RMS error with the same weights `n_b / n` (`n`
    /// counting saturated samples, as the ECE does).
    pub fn calibration_error(&self, norm: Norm) -> f64 {
        match norm {
            Norm::L1 => self.ece(),
            Norm::Linf => self.mce(),
            Norm::L2 => (self
                .bins
                .iter()
                .filter_map(|b| {
                    let gap = b.accuracy? - b.mean_confidence?;
                    Some(b.count as f64 / self.n as f64 * gap * gap)
                })
                .sum::<f64>()
                + 0.0)
                .sqrt(),
        }
    }

    /// Expected calibration error: `Σ_b (count_b / n) · |accuracy_b − confidence_b|`.
    pub fn ece(&self) -> f64 {
        self.bins
            .iter()
            .filter_map(|b| {
                Some(b.count as f64 / self.n as f64 * (b.accuracy? - b.mean_confidence?).abs())
            })
            // An empty sum is -0.0 in Rust; + 0.0 makes it print as 0.
            .sum::<f64>()
            + 0.0
    }

    /// Maximum calibration error: the largest `|accuracy_b − confidence_b|`
    /// over non-empty bins (0 if every sample is saturated).
    pub fn mce(&self) -> f64 {
        self.bins
            .iter()
            .filter_map(|b| Some((b.accuracy? - b.mean_confidence?).abs()))
            .fold(0.0, f64::max)
    }
}

/// Builds the notebook-compatible reliability diagram with `bins` equal-width bins.
///
/// # Errors
/// [`CalibError::ZeroBins`] if `bins == 0`.
pub fn reliability_diagram(p: &Predictions, bins: usize) -> Result<ReliabilityDiagram> {
    if bins == 0 {
        return Err(CalibError::ZeroBins);
    }
    let uppers = upper_edges(bins);
    let mut count = vec![0usize; bins];
    let mut conf_sum = vec![0.0f64; bins];
    let mut correct = vec![0usize; bins];
    let mut saturated = 0;
    for (i, &c) in p.confidences().iter().enumerate() {
        let b = digitize(c, &uppers);
        if b == bins {
            saturated += 1;
            continue;
        }
        count[b] += 1;
        conf_sum[b] += c;
        correct[b] += usize::from(p.is_correct(i));
    }
    let bins = (0..bins)
        .map(|b| ReliabilityBin {
            lower: if b == 0 { 0.0 } else { uppers[b - 1] },
            upper: uppers[b],
            count: count[b],
            mean_confidence: (count[b] > 0).then(|| conf_sum[b] / count[b] as f64),
            accuracy: (count[b] > 0).then(|| correct[b] as f64 / count[b] as f64),
        })
        .collect();
    Ok(ReliabilityDiagram {
        bins,
        n: p.len(),
        saturated,
    })
}

/// Expected calibration error with `bins` equal-width bins on top-label
/// confidence — exactly the original notebook's formula (see
/// [`ReliabilityDiagram`] for the binning and the treatment of confidence 1.0).
///
/// # Errors
/// [`CalibError::ZeroBins`] if `bins == 0`.
pub fn ece(p: &Predictions, bins: usize) -> Result<f64> {
    Ok(reliability_diagram(p, bins)?.ece())
}

/// Binned top-label calibration error under `norm` (L1 = [`ece`], L2 = RMS,
/// Linf = [`mce`]), on the notebook's equal-width bins (see
/// [`ReliabilityDiagram`]).
///
/// # Errors
/// [`CalibError::ZeroBins`] if `bins == 0`.
pub fn calibration_error(p: &Predictions, bins: usize, norm: Norm) -> Result<f64> {
    Ok(reliability_diagram(p, bins)?.calibration_error(norm))
}

/// Maximum calibration error over the same bins as [`ece`]; always `≥ ece`.
///
/// # Errors
/// [`CalibError::ZeroBins`] if `bins == 0`.
pub fn mce(p: &Predictions, bins: usize) -> Result<f64> {
    Ok(reliability_diagram(p, bins)?.mce())
}

/// Adaptive (equal-mass) ECE: samples sorted by confidence are split into
/// `bins` groups of near-equal size (the first `n mod bins` groups one larger,
/// as `numpy.array_split`), then `Σ_b (n_b / n) |acc_b − conf_b|`. Every
/// sample, including saturated ones, is in exactly one bin; when `n < bins`
/// the surplus bins are empty and skipped.
///
/// # Errors
/// [`CalibError::ZeroBins`] if `bins == 0`.
pub fn adaptive_ece(p: &Predictions, bins: usize) -> Result<f64> {
    if bins == 0 {
        return Err(CalibError::ZeroBins);
    }
    let n = p.len();
    let conf = p.confidences();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| conf[a].total_cmp(&conf[b]));
    let (base, extra) = (n / bins, n % bins);
    let mut start = 0;
    let mut total = 0.0;
    for b in 0..bins {
        let size = base + usize::from(b < extra);
        if size == 0 {
            continue;
        }
        let group = &order[start..start + size];
        start += size;
        let c: f64 = group.iter().map(|&i| conf[i]).sum::<f64>() / size as f64;
        let a = group.iter().filter(|&&i| p.is_correct(i)).count() as f64 / size as f64;
        total += size as f64 / n as f64 * (a - c).abs();
    }
    Ok(total)
}

/// Classwise ECE: for every class `k`, the equal-width-binned calibration
/// error of the probabilities `p_ik` against the indicators `[y_i = k]`
/// (over all samples), averaged over classes. Bins are `[b/B, (b+1)/B)` with
/// a probability of exactly 1.0 placed in the last bin.
///
/// # Errors
/// [`CalibError::ZeroBins`] if `bins == 0`.
pub fn classwise_ece(p: &Predictions, bins: usize) -> Result<f64> {
    if bins == 0 {
        return Err(CalibError::ZeroBins);
    }
    let (n, k) = (p.len(), p.num_classes());
    let uppers = upper_edges(bins);
    let mut total = 0.0;
    let mut count = vec![0usize; bins];
    let mut prob_sum = vec![0.0f64; bins];
    let mut hits = vec![0usize; bins];
    for class in 0..k {
        count.fill(0);
        prob_sum.fill(0.0);
        hits.fill(0);
        for i in 0..n {
            let q = p.probs(i)[class];
            let b = digitize(q, &uppers).min(bins - 1);
            count[b] += 1;
            prob_sum[b] += q;
            hits[b] += usize::from(p.labels()[i] == class);
        }
        for b in 0..bins {
            if count[b] > 0 {
                let c = count[b] as f64;
                total += c / n as f64 * (hits[b] as f64 / c - prob_sum[b] / c).abs();
            }
        }
    }
    Ok(total / k as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Logits;

    fn preds(logits: &[f64], k: usize, labels: &[usize]) -> Predictions {
        Predictions::new(&Logits::new(logits, k).unwrap(), labels).unwrap()
    }

    #[test]
    fn digitize_matches_numpy_right_false() {
        let u = upper_edges(10);
        assert_eq!(digitize(0.0, &u), 0);
        assert_eq!(digitize(0.05, &u), 0);
        assert_eq!(digitize(0.1, &u), 1);
        assert_eq!(digitize(0.95, &u), 9);
        assert_eq!(digitize(0.999_999_999, &u), 9);
        assert_eq!(digitize(1.0, &u), 10);
    }

    #[test]
    fn hand_computed_two_sample_case() {
        // Sample 0: p = softmax([ln 3, 0]) = (0.75, 0.25), label 0 → correct, bin 7.
        // Sample 1: p = (0.5, 0.5), predicted 0 (first max), label 1 → wrong, bin 5.
        let p = preds(&[3f64.ln(), 0.0, 0.0, 0.0], 2, &[0, 1]);
        assert_eq!(accuracy(&p), 0.5);
        // ECE = ½|1 − 0.75| + ½|0 − 0.5| = 0.375; MCE = 0.5.
        assert!((ece(&p, 10).unwrap() - 0.375).abs() < 1e-15);
        assert!((mce(&p, 10).unwrap() - 0.5).abs() < 1e-15);
        // Brier = ½[(0.25² + 0.25²) + (0.5² + 0.5²)] = 0.3125.
        assert!((brier(&p) - 0.3125).abs() < 1e-15);
        // NLL = ½[−ln 0.75 − ln 0.5].
        assert!((nll(&p) - 0.5 * (-(0.75f64.ln()) - 0.5f64.ln())).abs() < 1e-15);
        // Adaptive with 1 bin: |0.5 − 0.625| = 0.125.
        assert!((adaptive_ece(&p, 1).unwrap() - 0.125).abs() < 1e-15);
        // Classwise: class 0 probs (0.75, 0.5) in bins 7, 5 with indicators (1, 0):
        // ½·0.25 + ½·0.5 = 0.375; class 1 probs (0.25, 0.5), indicators (0, 1):
        // ½·0.25 + ½·0.5 = 0.375 → mean 0.375.
        assert!((classwise_ece(&p, 10).unwrap() - 0.375).abs() < 1e-15);
    }

    #[test]
    fn saturated_sample_is_in_no_bin_but_counts_in_n() {
        // Row 0 saturates (confidence exactly 1.0) and is wrong; row 1 is (0.5, 0.5), right.
        let p = preds(&[0.0, 800.0, 0.0, 0.0], 2, &[0, 0]);
        assert_eq!(p.confidences()[0], 1.0);
        let d = reliability_diagram(&p, 10).unwrap();
        assert_eq!((d.n, d.saturated), (2, 1));
        assert_eq!(d.bins.iter().map(|b| b.count).sum::<usize>(), 1);
        // Only row 1 contributes: ½ · |1 − 0.5|.
        assert_eq!(d.ece(), 0.25);
    }

    #[test]
    fn diagram_edges_and_empty_bins() {
        let p = preds(&[0.0, 0.0], 2, &[0]);
        let d = reliability_diagram(&p, 4).unwrap();
        let edges: Vec<_> = d.bins.iter().map(|b| (b.lower, b.upper)).collect();
        assert_eq!(
            edges,
            vec![(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]
        );
        assert_eq!(d.bins[0].accuracy, None);
        assert_eq!(d.bins[2].count, 1);
        assert_eq!(
            reliability_diagram(&p, 0).unwrap_err(),
            CalibError::ZeroBins
        );
        assert_eq!(adaptive_ece(&p, 0).unwrap_err(), CalibError::ZeroBins);
        assert_eq!(classwise_ece(&p, 0).unwrap_err(), CalibError::ZeroBins);
        // More bins than samples: the empty equal-mass bins are skipped.
        assert_eq!(adaptive_ece(&p, 5).unwrap(), 0.5);
    }

    #[test]
    fn perfect_confident_predictions_score_zero() {
        let p = preds(&[900.0, 0.0, 0.0, 900.0], 2, &[0, 1]);
        assert_eq!(accuracy(&p), 1.0);
        assert_eq!(brier(&p), 0.0);
        assert_eq!(nll(&p), 0.0);
        assert_eq!(ece(&p, 10).unwrap(), 0.0);
        assert_eq!(adaptive_ece(&p, 10).unwrap(), 0.0);
        assert_eq!(classwise_ece(&p, 10).unwrap(), 0.0);
    }
}
