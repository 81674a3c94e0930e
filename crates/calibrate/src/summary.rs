//! Every metric in one serialisable struct.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::logits::{Logits, Predictions};
use crate::metrics::{accuracy, adaptive_ece, brier, classwise_ece, nll, reliability_diagram};

/// All scalar metrics of one set of predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricSet {
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Notebook ECE ([`ece`](crate::ece)).
    pub ece: f64,
    /// Maximum calibration error over the same bins ([`mce`](crate::mce)).
    pub mce: f64,
    /// Equal-mass ECE ([`adaptive_ece`]).
    pub adaptive_ece: f64,
    /// Classwise ECE ([`classwise_ece`]).
    pub classwise_ece: f64,
    /// Multi-class Brier score in `[0, 2]` ([`brier`]).
    pub brier: f64,
    /// Mean cross-entropy in nats ([`nll`]).
    pub nll: f64,
    /// Samples whose top-label confidence is exactly 1.0 (in no ECE bin; see
    /// [`ReliabilityDiagram`](crate::ReliabilityDiagram)).
    pub saturated: usize,
}

impl MetricSet {
    /// Computes every metric of `p`, binned metrics with `bins` bins.
    ///
    /// # Errors
    /// [`CalibError::ZeroBins`](crate::CalibError::ZeroBins) if `bins == 0`.
    pub fn compute(p: &Predictions, bins: usize) -> Result<Self> {
        let diagram = reliability_diagram(p, bins)?;
        Ok(MetricSet {
            accuracy: accuracy(p),
            ece: diagram.ece(),
            mce: diagram.mce(),
            adaptive_ece: adaptive_ece(p, bins)?,
            classwise_ece: classwise_ece(p, bins)?,
            brier: brier(p),
            nll: nll(p),
            saturated: diagram.saturated,
        })
    }
}

/// Metrics of one logit set before and after temperature scaling.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// Number of bins of the binned metrics.
    pub bins: usize,
    /// The temperature applied for `scaled` (fitted elsewhere, usually on a
    /// separate calibration set with [`fit_temperature`](crate::fit_temperature)).
    pub temperature: f64,
    /// Metrics of `softmax(logits)`.
    pub uncalibrated: MetricSet,
    /// Metrics of `softmax(logits / temperature)`.
    pub scaled: MetricSet,
}

/// Computes every metric of `logits` against `labels` at temperature 1 and at
/// `temperature`.
///
/// ```
/// use muq_calibrate::{fit_temperature, summarize, Logits};
/// let z = [2.0f32, 0.0, 0.0, 1.0, 1.5, 0.2, 0.3, 0.1];
/// let labels = [0, 1, 1, 0];
/// let logits = Logits::new(&z, 2)?;
/// let fit = fit_temperature(&logits, &labels)?;
/// let s = summarize(&logits, &labels, fit.temperature, 10)?;
/// assert!(s.scaled.nll <= s.uncalibrated.nll);
/// # Ok::<(), muq_calibrate::CalibError>(())
/// ```
///
/// # Errors
/// Label and temperature errors as in [`Predictions::with_temperature`];
/// [`CalibError::ZeroBins`](crate::CalibError::ZeroBins) if `bins == 0`.
pub fn summarize(
    logits: &Logits<'_>,
    labels: &[usize],
    temperature: f64,
    bins: usize,
) -> Result<Summary> {
    let scaled = Predictions::with_temperature(logits, labels, temperature)?;
    let plain = Predictions::new(logits, labels)?;
    Ok(Summary {
        n: logits.len(),
        num_classes: logits.num_classes(),
        bins,
        temperature,
        uncalibrated: MetricSet::compute(&plain, bins)?,
        scaled: MetricSet::compute(&scaled, bins)?,
    })
}
