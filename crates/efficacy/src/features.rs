//! Per-sample membership-inference features of a probability matrix, as the
//! SalUn / Unlearn-Sparse reference code computes them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{EfficacyError, Result};

/// `ln(1e-30)`: the value the reference substitutes for `log p` where `p = 0`
/// in `m_entropy` (there in `float32`: −69.07755; here in `f64`).
const LOG_FLOOR: f64 = -69.077_552_789_821_37;

/// The per-sample feature the SVC membership-inference attack separates
/// members from non-members on (the keys of the reference's `SVC_MIA` result).
///
/// Parses from and prints as its snake-case name (`"confidence"`, …;
/// `"m_entropy"`, the reference's key, also parses as
/// [`MiaFeature::ModifiedEntropy`]).
///
/// ```
/// use muq_efficacy::MiaFeature;
/// assert_eq!(MiaFeature::default(), MiaFeature::Confidence);
/// assert_eq!("modified_entropy".parse::<MiaFeature>()?, MiaFeature::ModifiedEntropy);
/// assert_eq!("m_entropy".parse::<MiaFeature>()?, MiaFeature::ModifiedEntropy);
/// assert_eq!(MiaFeature::Prob.to_string(), "prob");
/// # Ok::<(), muq_efficacy::ParseMiaFeatureError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MiaFeature {
    /// `p[label]`, the probability of the true class (see [`confidence`]).
    /// The default, and the figure SalUn reports as "MIA-efficacy"
    /// (`SVC_MIA_forget_efficacy['confidence']`).
    #[default]
    Confidence,
    /// The Shannon entropy of the probability vector (see [`entropy`]).
    Entropy,
    /// The reference's `m_entropy` (see [`modified_entropy`], which documents
    /// its quirks).
    #[serde(alias = "m_entropy")]
    ModifiedEntropy,
    /// 1 when the argmax is the label, else 0 (see [`correctness`]).
    Correctness,
    /// The whole probability vector (`num_classes` features per sample).
    Prob,
}

impl MiaFeature {
    /// Every feature, in the order of the reference's result dictionary
    /// (`correctness` first there; here the default first).
    pub const ALL: [MiaFeature; 5] = [
        MiaFeature::Confidence,
        MiaFeature::Entropy,
        MiaFeature::ModifiedEntropy,
        MiaFeature::Correctness,
        MiaFeature::Prob,
    ];

    /// The snake-case name (what `Display` prints and serde writes).
    pub fn name(self) -> &'static str {
        match self {
            MiaFeature::Confidence => "confidence",
            MiaFeature::Entropy => "entropy",
            MiaFeature::ModifiedEntropy => "modified_entropy",
            MiaFeature::Correctness => "correctness",
            MiaFeature::Prob => "prob",
        }
    }

    /// Features per sample: `num_classes` for [`MiaFeature::Prob`], else 1.
    pub fn width(self, num_classes: usize) -> usize {
        match self {
            MiaFeature::Prob => num_classes,
            _ => 1,
        }
    }
}

impl fmt::Display for MiaFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a [`MiaFeature`] from an unknown name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown MIA feature {0:?}: expected one of confidence, entropy, modified_entropy (or m_entropy), correctness, prob"
)]
pub struct ParseMiaFeatureError(pub String);

impl FromStr for MiaFeature {
    type Err = ParseMiaFeatureError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "m_entropy" => Ok(MiaFeature::ModifiedEntropy),
            _ => MiaFeature::ALL
                .into_iter()
                .find(|f| f.name() == s)
                .ok_or_else(|| ParseMiaFeatureError(s.to_owned())),
        }
    }
}

/// Checks a row-major probability matrix: `num_classes ≥ 1`, non-empty, not
/// ragged, every value in `[0, 1]` (NaN reported as such); returns the rows.
pub(crate) fn check_probs(what: &'static str, probs: &[f64], num_classes: usize) -> Result<usize> {
    if num_classes == 0 {
        return Err(EfficacyError::ZeroClasses);
    }
    if probs.is_empty() {
        return Err(EfficacyError::Empty { what });
    }
    if !probs.len().is_multiple_of(num_classes) {
        return Err(EfficacyError::Ragged {
            what,
            len: probs.len(),
            width: num_classes,
        });
    }
    for (i, &value) in probs.iter().enumerate() {
        if value.is_nan() {
            return Err(EfficacyError::NaN { what, index: i });
        }
        if !(0.0..=1.0).contains(&value) {
            return Err(EfficacyError::NotAProbability {
                what,
                row: i / num_classes,
                column: i % num_classes,
                value,
            });
        }
    }
    Ok(probs.len() / num_classes)
}

/// Checks one label per row, each `< num_classes`.
pub(crate) fn check_labels(
    what: &'static str,
    labels: &[usize],
    rows: usize,
    num_classes: usize,
) -> Result<()> {
    if labels.len() != rows {
        return Err(EfficacyError::LengthMismatch {
            what,
            expected: rows,
            found: labels.len(),
        });
    }
    if let Some((row, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= num_classes) {
        return Err(EfficacyError::LabelOutOfRange {
            what,
            row,
            label,
            num_classes,
        });
    }
    Ok(())
}

fn checked(probs: &[f64], num_classes: usize, labels: &[usize]) -> Result<()> {
    let rows = check_probs("probabilities", probs, num_classes)?;
    check_labels("labels", labels, rows, num_classes)
}

/// `p[label]` per row: the reference's `torch.gather(prob, 1, labels[:, None])`.
///
/// ```
/// let c = muq_efficacy::confidence(&[0.7, 0.3, 0.2, 0.8], 2, &[0, 0])?;
/// assert_eq!(c, vec![0.7, 0.2]);
/// # Ok::<(), muq_efficacy::EfficacyError>(())
/// ```
///
/// # Errors
/// [`EfficacyError::Empty`], [`EfficacyError::Ragged`],
/// [`EfficacyError::NaN`], [`EfficacyError::NotAProbability`] for the
/// probabilities; [`EfficacyError::LengthMismatch`] and
/// [`EfficacyError::LabelOutOfRange`] for the labels. The same for every
/// feature function.
pub fn confidence(probs: &[f64], num_classes: usize, labels: &[usize]) -> Result<Vec<f64>> {
    checked(probs, num_classes, labels)?;
    Ok(confidence_unchecked(probs, num_classes, labels))
}

/// Shannon entropy per row, `−Σ_j p_j ln p_j` with `0·ln 0 = 0` (the
/// reference's `entropy`: `-torch.where(p > 0, p * p.log(), 0).sum(-1)`).
/// The uniform vector over `k` classes has entropy `ln k`, a one-hot vector 0.
///
/// ```
/// let h = muq_efficacy::entropy(&[0.25; 4], 4)?;
/// assert!((h[0] - 4f64.ln()).abs() < 1e-15);
/// # Ok::<(), muq_efficacy::EfficacyError>(())
/// ```
///
/// # Errors
/// As [`confidence`], for the probabilities.
pub fn entropy(probs: &[f64], num_classes: usize) -> Result<Vec<f64>> {
    check_probs("probabilities", probs, num_classes)?;
    Ok(entropy_unchecked(probs, num_classes))
}

/// The reference's `m_entropy`, exactly as OPTML-Group's current code
/// computes it (Unlearn-Saliency `Classification/evaluation/SVC_MIA.py` at
/// a6e89fd, 2026; Unlearn-Sparse's `evaluation/SVC_MIA.py` at 16a2dbc is
/// the same function).
///
/// That code is meant to be the modified entropy of Song & Mittal (2021),
/// `Mentr(p, y) = −(1 − p_y) ln p_y − Σ_{j≠y} p_j ln(1 − p_j)`
/// ([`modified_entropy_song_mittal`]), but computes something else, and this
/// function reproduces it quirk for quirk:
///
/// 1. **The reverse term uses `ln p`, not `ln(1 − p)`**: `log_reverse_prob`
///    is `where(p > 0, p.log(), log(1e-30))`, identical to `log_prob`. Forks
///    of the reference fix this line (e.g. `where(reverse_prob > 0,
///    reverse_prob.log(), …)` or `where(p < 1, …)`), so their numbers differ;
///    this function does not follow them.
/// 2. **Labels index columns of the whole matrix, not one entry per row**:
///    `modified_probs[:, labels] = reverse_prob[:, labels]` replaces, in
///    *every* row, each column whose class occurs *anywhere* in the set's
///    labels. With `S` the set of classes present in `labels`, row `i` gets
///
///    `m_i = −Σ_j q_ij · ℓ_ij`, with `q_ij = 1 − p_ij` if `j ∈ S` else `p_ij`,
///    and `ℓ_ij = ln p_ij` (or `ln 1e-30` where `p_ij = 0`).
///
///    So the value of a row does not depend on its own label, and depends on
///    which other rows are passed with it: when every class occurs (a large
///    shadow set) it is `−Σ_j (1 − p_j) ln p_j`; for a class-wise forget set
///    (one class `c`) it is `−(1 − p_c) ln p_c − Σ_{j≠c} p_j ln p_j`. The SVC
///    is then trained on one formula and applied to another — the fixture
///    test shows the effect.
///
/// The reference computes in `float32` (softmax output); this computes in
/// `f64`, including `ln(1e-30)` (−69.0775527898 rather than `float32`'s
/// −69.07755). Pass each set (shadow members, shadow non-members, target)
/// separately, as the reference does.
///
/// ```
/// // Both rows use column set S = {0}: m = −(1−p0) ln p0 − p1 ln p1.
/// let m = muq_efficacy::modified_entropy(&[0.5, 0.5, 1.0, 0.0], 2, &[0, 0])?;
/// assert!((m[0] - 0.5f64.ln().abs()).abs() < 1e-15);
/// assert_eq!(m[1], 0.0);
/// # Ok::<(), muq_efficacy::EfficacyError>(())
/// ```
///
/// # Errors
/// As [`confidence`].
pub fn modified_entropy(probs: &[f64], num_classes: usize, labels: &[usize]) -> Result<Vec<f64>> {
    checked(probs, num_classes, labels)?;
    Ok(modified_entropy_unchecked(probs, num_classes, labels))
}

/// Song & Mittal's (2021) modified prediction entropy, one label per row:
/// `−(1 − p_y) ln p_y − Σ_{j≠y} p_j ln(1 − p_j)`, with `ln 0` replaced by
/// `ln 1e-30` as the reference does. This is what the reference's `m_entropy`
/// is meant to compute; it is *not* what [`MiaFeature::ModifiedEntropy`]
/// uses (that follows the reference's code: [`modified_entropy`]). Offered
/// for comparison.
///
/// ```
/// let m = muq_efficacy::modified_entropy_song_mittal(&[0.5, 0.5], 2, &[0])?;
/// assert!((m[0] - 2f64.ln()).abs() < 1e-15);
/// # Ok::<(), muq_efficacy::EfficacyError>(())
/// ```
///
/// # Errors
/// As [`confidence`].
pub fn modified_entropy_song_mittal(
    probs: &[f64],
    num_classes: usize,
    labels: &[usize],
) -> Result<Vec<f64>> {
    checked(probs, num_classes, labels)?;
    let log = |x: f64| if x > 0.0 { x.ln() } else { LOG_FLOOR };
    Ok(probs
        .chunks_exact(num_classes)
        .zip(labels)
        .map(|(row, &y)| {
            let mut m = 0.0;
            for (j, &p) in row.iter().enumerate() {
                m -= if j == y {
                    (1.0 - p) * log(p)
                } else {
                    p * log(1.0 - p)
                };
            }
            m
        })
        .collect())
}

/// 1.0 where the first maximum of the row (`argmax`, first index on ties, as
/// `torch.argmax` and `numpy.argmax`) is the label, else 0.0.
///
/// ```
/// // Row 1 ties classes 0 and 1: the first wins, so label 1 is "wrong".
/// let c = muq_efficacy::correctness(&[0.2, 0.8, 0.5, 0.5], 2, &[1, 1])?;
/// assert_eq!(c, vec![1.0, 0.0]);
/// # Ok::<(), muq_efficacy::EfficacyError>(())
/// ```
///
/// # Errors
/// As [`confidence`].
pub fn correctness(probs: &[f64], num_classes: usize, labels: &[usize]) -> Result<Vec<f64>> {
    checked(probs, num_classes, labels)?;
    Ok(correctness_unchecked(probs, num_classes, labels))
}

/// The feature matrix of `feature` (row-major, [`MiaFeature::width`] columns).
///
/// ```
/// use muq_efficacy::{mia_features, MiaFeature};
/// let p = [0.9, 0.1, 0.4, 0.6];
/// assert_eq!(mia_features(MiaFeature::Prob, &p, 2, &[0, 0])?, p.to_vec());
/// assert_eq!(mia_features(MiaFeature::Confidence, &p, 2, &[0, 0])?, vec![0.9, 0.4]);
/// # Ok::<(), muq_efficacy::EfficacyError>(())
/// ```
///
/// # Errors
/// As [`confidence`].
pub fn mia_features(
    feature: MiaFeature,
    probs: &[f64],
    num_classes: usize,
    labels: &[usize],
) -> Result<Vec<f64>> {
    checked(probs, num_classes, labels)?;
    Ok(features_unchecked(feature, probs, num_classes, labels))
}

/// [`mia_features`] on input already checked.
pub(crate) fn features_unchecked(
    feature: MiaFeature,
    probs: &[f64],
    num_classes: usize,
    labels: &[usize],
) -> Vec<f64> {
    match feature {
        MiaFeature::Confidence => confidence_unchecked(probs, num_classes, labels),
        MiaFeature::Entropy => entropy_unchecked(probs, num_classes),
        MiaFeature::ModifiedEntropy => modified_entropy_unchecked(probs, num_classes, labels),
        MiaFeature::Correctness => correctness_unchecked(probs, num_classes, labels),
        MiaFeature::Prob => probs.to_vec(),
    }
}

fn confidence_unchecked(probs: &[f64], k: usize, labels: &[usize]) -> Vec<f64> {
    probs
        .chunks_exact(k)
        .zip(labels)
        .map(|(row, &y)| row[y])
        .collect()
}

fn entropy_unchecked(probs: &[f64], k: usize) -> Vec<f64> {
    probs
        .chunks_exact(k)
        .map(|row| {
            -row.iter()
                .map(|&p| if p > 0.0 { p * p.ln() } else { 0.0 })
                .sum::<f64>()
        })
        .collect()
}

fn modified_entropy_unchecked(probs: &[f64], k: usize, labels: &[usize]) -> Vec<f64> {
    let mut in_labels = vec![false; k];
    for &y in labels {
        in_labels[y] = true;
    }
    probs
        .chunks_exact(k)
        .map(|row| {
            -row.iter()
                .zip(&in_labels)
                .map(|(&p, &replaced)| {
                    let q = if replaced { 1.0 - p } else { p };
                    let log_p = if p > 0.0 { p.ln() } else { LOG_FLOOR };
                    q * log_p
                })
                .sum::<f64>()
        })
        .collect()
}

fn correctness_unchecked(probs: &[f64], k: usize, labels: &[usize]) -> Vec<f64> {
    probs
        .chunks_exact(k)
        .zip(labels)
        .map(|(row, &y)| {
            let mut arg = 0;
            for (j, &p) in row.iter().enumerate().skip(1) {
                if p > row[arg] {
                    arg = j;
                }
            }
            if arg == y { 1.0 } else { 0.0 }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_floor_is_ln_1e_minus_30() {
        assert_eq!(LOG_FLOOR, 1e-30f64.ln());
    }
}
