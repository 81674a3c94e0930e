//! Per-sample softmax probabilities and cross-entropy from logits.
//!
//! Both reuse `muq-calibrate`: its [`Logits`] view validates the input
//! (shape, finiteness) and its [`Predictions`] computes the softmax in `f64`
//! with the maximum subtracted, and the per-sample negative log-likelihood
//! from the log-sum-exp (finite even where the probability underflows).

use muq_calibrate::{LogitSlice, Logits, Predictions};

use crate::error::Result;

/// Row-major softmax probabilities (`n × num_classes`, `f64`) of row-major
/// logits (`f32` or `f64`); numerically stable for any finite logits.
///
/// ```
/// let p = muq_efficacy::softmax_probs(&[0.0f32, 0.0, 1000.0, 0.0], 2)?;
/// assert_eq!(p, vec![0.5, 0.5, 1.0, 0.0]);
/// # Ok::<(), muq_efficacy::EfficacyError>(())
/// ```
///
/// # Errors
/// [`crate::EfficacyError::Logits`] for empty or ragged logits, zero classes,
/// or a NaN/infinite logit (the inner error names the row and column).
pub fn softmax_probs<'a>(
    logits: impl Into<LogitSlice<'a>>,
    num_classes: usize,
) -> Result<Vec<f64>> {
    let logits = Logits::new(logits, num_classes)?;
    let mut out = Vec::with_capacity(logits.len() * num_classes);
    let mut row = vec![0.0; num_classes];
    for i in 0..logits.len() {
        for (j, r) in row.iter_mut().enumerate() {
            *r = logits.value(i, j);
        }
        out.extend(muq_calibrate::softmax(&row));
    }
    Ok(out)
}

/// Per-sample cross-entropy `-log softmax(z_i)[y_i]` of row-major logits
/// (`f32` or `f64`) and labels, in `f64` — the per-sample losses that
/// [`crate::loss_auc`] takes.
///
/// ```
/// let l = muq_efficacy::cross_entropy(&[0.0f32, 0.0, 0.0, -2000.0], 2, &[0, 1])?;
/// assert_eq!(l, vec![std::f64::consts::LN_2, 2000.0]);
/// # Ok::<(), muq_efficacy::EfficacyError>(())
/// ```
///
/// # Errors
/// As [`softmax_probs`], plus (also wrapped in
/// [`crate::EfficacyError::Logits`]) a label count that differs from the
/// number of rows, or a label `≥ num_classes`.
pub fn cross_entropy<'a>(
    logits: impl Into<LogitSlice<'a>>,
    num_classes: usize,
    labels: &[usize],
) -> Result<Vec<f64>> {
    let logits = Logits::new(logits, num_classes)?;
    let p = Predictions::new(&logits, labels)?;
    Ok(p.sample_nll().to_vec())
}
