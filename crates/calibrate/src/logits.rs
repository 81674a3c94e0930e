//! Validated logit views, f64 softmax, and per-sample predictions.

use crate::error::{CalibError, Result};

/// Borrowed logit storage in either precision.
///
/// Built implicitly through `From` by [`Logits::new`]; values are always
/// widened to `f64` before any arithmetic.
#[derive(Debug, Clone, Copy)]
pub enum LogitSlice<'a> {
    /// Single-precision logits (what a network usually emits).
    F32(&'a [f32]),
    /// Double-precision logits.
    F64(&'a [f64]),
}

impl LogitSlice<'_> {
    fn len(&self) -> usize {
        match self {
            LogitSlice::F32(s) => s.len(),
            LogitSlice::F64(s) => s.len(),
        }
    }

    fn get(&self, i: usize) -> f64 {
        match self {
            LogitSlice::F32(s) => f64::from(s[i]),
            LogitSlice::F64(s) => s[i],
        }
    }
}

impl<'a> From<&'a [f32]> for LogitSlice<'a> {
    fn from(s: &'a [f32]) -> Self {
        LogitSlice::F32(s)
    }
}

impl<'a> From<&'a [f64]> for LogitSlice<'a> {
    fn from(s: &'a [f64]) -> Self {
        LogitSlice::F64(s)
    }
}

impl<'a> From<&'a Vec<f32>> for LogitSlice<'a> {
    fn from(s: &'a Vec<f32>) -> Self {
        LogitSlice::F32(s)
    }
}

impl<'a> From<&'a Vec<f64>> for LogitSlice<'a> {
    fn from(s: &'a Vec<f64>) -> Self {
        LogitSlice::F64(s)
    }
}

impl<'a, const N: usize> From<&'a [f32; N]> for LogitSlice<'a> {
    fn from(s: &'a [f32; N]) -> Self {
        LogitSlice::F32(s)
    }
}

impl<'a, const N: usize> From<&'a [f64; N]> for LogitSlice<'a> {
    fn from(s: &'a [f64; N]) -> Self {
        LogitSlice::F64(s)
    }
}

/// A validated, row-major `n × num_classes` view of logits.
///
/// Construction guarantees: `num_classes ≥ 1`, at least one row, the length is
/// a multiple of `num_classes`, and every value is finite.
#[derive(Debug, Clone, Copy)]
pub struct Logits<'a> {
    data: LogitSlice<'a>,
    num_classes: usize,
    rows: usize,
}

impl<'a> Logits<'a> {
    /// Wraps row-major logits (`f32` or `f64`) with `num_classes` columns.
    ///
    /// # Errors
    /// [`CalibError::ZeroClasses`], [`CalibError::Empty`],
    /// [`CalibError::LengthMismatch`] when the length is not a multiple of
    /// `num_classes`, [`CalibError::NonFinite`] for NaN or ±∞.
    pub fn new(data: impl Into<LogitSlice<'a>>, num_classes: usize) -> Result<Self> {
        let data = data.into();
        if num_classes == 0 {
            return Err(CalibError::ZeroClasses);
        }
        let len = data.len();
        if len == 0 {
            return Err(CalibError::Empty);
        }
        if len % num_classes != 0 {
            return Err(CalibError::LengthMismatch {
                what: "logits length (a multiple of num_classes)",
                expected: len.next_multiple_of(num_classes),
                found: len,
            });
        }
        for i in 0..len {
            let value = data.get(i);
            if !value.is_finite() {
                return Err(CalibError::NonFinite {
                    row: i / num_classes,
                    column: i % num_classes,
                    value,
                });
            }
        }
        Ok(Logits {
            data,
            num_classes,
            rows: len / num_classes,
        })
    }

    /// Number of samples (rows); always ≥ 1.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Always `false`: construction rejects empty input.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Number of classes (columns).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The logit of sample `row` for class `column`, widened to `f64`.
    ///
    /// # Panics
    /// If `row ≥ len()` or `column ≥ num_classes()`.
    pub fn value(&self, row: usize, column: usize) -> f64 {
        assert!(column < self.num_classes, "column out of range");
        self.data.get(row * self.num_classes + column)
    }

    /// Copies row `row` into `out` as `f64` (`out.len()` must be `num_classes`).
    pub(crate) fn row_into(&self, row: usize, out: &mut [f64]) {
        let base = row * self.num_classes;
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.data.get(base + j);
        }
    }

    /// All logits widened to `f64`, row-major.
    pub(crate) fn to_f64_vec(self) -> Vec<f64> {
        (0..self.data.len()).map(|i| self.data.get(i)).collect()
    }
}

/// Checks that `labels` has one entry per row and every label is `< num_classes`.
pub(crate) fn check_labels(labels: &[usize], rows: usize, num_classes: usize) -> Result<()> {
    if labels.len() != rows {
        return Err(CalibError::LengthMismatch {
            what: "labels (one per logit row)",
            expected: rows,
            found: labels.len(),
        });
    }
    if let Some((index, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= num_classes) {
        return Err(CalibError::LabelOutOfRange {
            index,
            label,
            num_classes,
        });
    }
    Ok(())
}

/// Checks a row-major probability matrix (shape, every value in `[0, 1]`)
/// and returns its number of rows.
pub(crate) fn check_probabilities(probs: &[f64], num_classes: usize) -> Result<usize> {
    if num_classes == 0 {
        return Err(CalibError::ZeroClasses);
    }
    if probs.is_empty() {
        return Err(CalibError::Empty);
    }
    if !probs.len().is_multiple_of(num_classes) {
        return Err(CalibError::LengthMismatch {
            what: "probabilities length (a multiple of num_classes)",
            expected: probs.len().next_multiple_of(num_classes),
            found: probs.len(),
        });
    }
    if let Some(i) = probs.iter().position(|v| !(0.0..=1.0).contains(v)) {
        return Err(CalibError::InvalidProbability {
            row: i / num_classes,
            column: i % num_classes,
            value: probs[i],
        });
    }
    Ok(probs.len() / num_classes)
}

/// Writes `softmax(row / temperature)` into `out` and returns the row's
/// log-sum-exp of `row / temperature`.
///
/// Stable for any finite input: the maximum is subtracted before `exp`.
pub(crate) fn softmax_into(row: &[f64], temperature: f64, out: &mut [f64]) -> f64 {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for (o, &z) in out.iter_mut().zip(row) {
        *o = ((z - max) / temperature).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
    max / temperature + sum.ln()
}

/// Numerically stable softmax of one row, in `f64`.
///
/// ```
/// let p = muq_calibrate::softmax(&[1000.0, 1000.0, -1000.0]);
/// assert_eq!(p, vec![0.5, 0.5, 0.0]);
/// ```
pub fn softmax(row: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; row.len()];
    if !row.is_empty() {
        softmax_into(row, 1.0, &mut out);
    }
    out
}

/// Numerically stable log-softmax of one row, in `f64`.
///
/// Unlike `softmax(row).ln()`, it stays finite for very negative logits.
///
/// ```
/// let lp = muq_calibrate::log_softmax(&[0.0, -1000.0]);
/// assert_eq!(lp[0], 0.0);
/// assert_eq!(lp[1], -1000.0);
/// ```
pub fn log_softmax(row: &[f64]) -> Vec<f64> {
    if row.is_empty() {
        return Vec::new();
    }
    let mut scratch = vec![0.0; row.len()];
    let lse = softmax_into(row, 1.0, &mut scratch);
    row.iter().map(|z| z - lse).collect()
}

/// Softmax probabilities, labels and per-sample summaries of one logit set,
/// all in `f64`.
///
/// Built once (optionally at a temperature) and shared by every metric, so
/// the softmax is computed only once. Never empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    probs: Vec<f64>,
    nll: Vec<f64>,
    confidence: Vec<f64>,
    predicted: Vec<usize>,
    labels: Vec<usize>,
    num_classes: usize,
}

impl Predictions {
    /// Softmax of `logits` (temperature 1) paired with `labels`.
    ///
    /// # Errors
    /// [`CalibError::LengthMismatch`] if `labels.len() != logits.len()`,
    /// [`CalibError::LabelOutOfRange`] if a label is `≥ num_classes`.
    pub fn new(logits: &Logits<'_>, labels: &[usize]) -> Result<Self> {
        Self::with_temperature(logits, labels, 1.0)
    }

    /// Softmax of `logits / temperature` paired with `labels`.
    ///
    /// # Errors
    /// As [`Predictions::new`], plus [`CalibError::InvalidTemperature`] when
    /// `temperature` is not finite and positive.
    pub fn with_temperature(
        logits: &Logits<'_>,
        labels: &[usize],
        temperature: f64,
    ) -> Result<Self> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(CalibError::InvalidTemperature(temperature));
        }
        let (n, k) = (logits.len(), logits.num_classes());
        check_labels(labels, n, k)?;
        let mut probs = vec![0.0; n * k];
        let mut nll = Vec::with_capacity(n);
        let mut confidence = Vec::with_capacity(n);
        let mut predicted = Vec::with_capacity(n);
        let mut row = vec![0.0; k];
        for (i, out) in probs.chunks_exact_mut(k).enumerate() {
            logits.row_into(i, &mut row);
            let lse = softmax_into(&row, temperature, out);
            nll.push(lse - row[labels[i]] / temperature);
            let (arg, conf) = argmax(out);
            confidence.push(conf);
            predicted.push(arg);
        }
        Ok(Predictions {
            probs,
            nll,
            confidence,
            predicted,
            labels: labels.to_vec(),
            num_classes: k,
        })
    }

    /// Probabilities given directly (row-major, `num_classes` columns) paired
    /// with `labels`: the predicted class is the first maximum of each row and
    /// its confidence that maximum, as for softmax outputs.
    ///
    /// Use it for the output of any probabilistic model or recalibrator. The
    /// rows are used as given (not renormalised); the per-sample NLL is
    /// `−ln p[label]`, which is `+∞` where that probability is 0.
    ///
    /// # Errors
    /// [`CalibError::ZeroClasses`], [`CalibError::Empty`],
    /// [`CalibError::LengthMismatch`], [`CalibError::InvalidProbability`]
    /// for a value that is NaN or outside `[0, 1]`, and label errors as in
    /// [`Predictions::new`].
    pub fn from_probabilities(probs: &[f64], num_classes: usize, labels: &[usize]) -> Result<Self> {
        let rows = check_probabilities(probs, num_classes)?;
        check_labels(labels, rows, num_classes)?;
        let predicted = probs
            .chunks_exact(num_classes)
            .map(|r| argmax(r).0)
            .collect();
        Ok(Self::from_parts(
            probs.to_vec(),
            num_classes,
            predicted,
            labels,
        ))
    }

    /// Builds predictions from validated parts: `predicted[i]` is the class
    /// sample `i` predicts and its confidence is `probs[i][predicted[i]]`.
    pub(crate) fn from_parts(
        probs: Vec<f64>,
        num_classes: usize,
        predicted: Vec<usize>,
        labels: &[usize],
    ) -> Self {
        let rows = probs.chunks_exact(num_classes);
        let confidence = rows.clone().zip(&predicted).map(|(r, &c)| r[c]).collect();
        let nll = rows.zip(labels).map(|(r, &y)| -r[y].ln()).collect();
        Predictions {
            probs,
            nll,
            confidence,
            predicted,
            labels: labels.to_vec(),
            num_classes,
        }
    }

    /// The predictions of the samples at `indices` (repeats allowed), in that
    /// order; the building block for bootstrap resamples.
    ///
    /// # Errors
    /// [`CalibError::Empty`] if `indices` is empty.
    ///
    /// # Panics
    /// If an index is `≥ len()`.
    pub fn select(&self, indices: &[usize]) -> Result<Self> {
        if indices.is_empty() {
            return Err(CalibError::Empty);
        }
        let k = self.num_classes;
        let mut probs = Vec::with_capacity(indices.len() * k);
        for &i in indices {
            probs.extend_from_slice(self.probs(i));
        }
        let pick_f = |v: &[f64]| indices.iter().map(|&i| v[i]).collect::<Vec<_>>();
        let pick_u = |v: &[usize]| indices.iter().map(|&i| v[i]).collect::<Vec<_>>();
        Ok(Predictions {
            probs,
            nll: pick_f(&self.nll),
            confidence: pick_f(&self.confidence),
            predicted: pick_u(&self.predicted),
            labels: pick_u(&self.labels),
            num_classes: k,
        })
    }

    /// Number of samples; always ≥ 1.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Always `false`: predictions are never empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Softmax probabilities of sample `i`.
    pub fn probs(&self, i: usize) -> &[f64] {
        &self.probs[i * self.num_classes..(i + 1) * self.num_classes]
    }

    /// The true labels.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Top-label confidences (the maximum probability of each sample).
    pub fn confidences(&self) -> &[f64] {
        &self.confidence
    }

    /// Predicted classes (argmax; the first index wins ties, as `numpy.argmax`).
    pub fn predicted(&self) -> &[usize] {
        &self.predicted
    }

    /// Per-sample negative log-likelihood `-log softmax(z)[label]`, computed
    /// from the log-sum-exp so it stays finite where the probability underflows.
    pub fn sample_nll(&self) -> &[f64] {
        &self.nll
    }

    /// Whether sample `i` is classified correctly.
    pub fn is_correct(&self, i: usize) -> bool {
        self.predicted[i] == self.labels[i]
    }
}

/// Index and value of the first maximum (`numpy.argmax`).
pub(crate) fn argmax(v: &[f64]) -> (usize, f64) {
    let mut best = (0, v[0]);
    for (j, &x) in v.iter().enumerate().skip(1) {
        if x > best.1 {
            best = (j, x);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_shapes() {
        assert_eq!(Logits::new(&[1.0f32; 0], 3).unwrap_err(), CalibError::Empty);
        assert_eq!(
            Logits::new(&[1.0f32; 3], 0).unwrap_err(),
            CalibError::ZeroClasses
        );
        assert!(matches!(
            Logits::new(&[1.0f32; 5], 3).unwrap_err(),
            CalibError::LengthMismatch { found: 5, .. }
        ));
        assert!(matches!(
            Logits::new(&[1.0, f64::NAN, 0.0, 0.0], 2).unwrap_err(),
            CalibError::NonFinite {
                row: 0,
                column: 1,
                ..
            }
        ));
        assert!(matches!(
            Logits::new(&[1.0, 0.0, f32::INFINITY, 0.0], 2).unwrap_err(),
            CalibError::NonFinite {
                row: 1,
                column: 0,
                ..
            }
        ));
    }

    #[test]
    fn rejects_bad_labels() {
        let l = Logits::new(&[0.0f32; 6], 3).unwrap();
        assert!(matches!(
            Predictions::new(&l, &[0, 1, 2]).unwrap_err(),
            CalibError::LengthMismatch {
                expected: 2,
                found: 3,
                ..
            }
        ));
        assert_eq!(
            Predictions::new(&l, &[0, 3]).unwrap_err(),
            CalibError::LabelOutOfRange {
                index: 1,
                label: 3,
                num_classes: 3
            }
        );
        assert_eq!(
            Predictions::with_temperature(&l, &[0, 1], 0.0).unwrap_err(),
            CalibError::InvalidTemperature(0.0)
        );
    }

    #[test]
    fn softmax_is_stable_for_extreme_logits() {
        let p = softmax(&[1e300, 0.0, -1e300]);
        assert_eq!(p, vec![1.0, 0.0, 0.0]);
        let lp = log_softmax(&[800.0, 0.0]);
        assert_eq!(lp, vec![0.0, -800.0]);
        let p = softmax(&[-800.0, -800.0]);
        assert_eq!(p, vec![0.5, 0.5]);
    }

    #[test]
    fn f32_and_f64_views_agree() {
        let a32 = [0.5f32, -1.25, 3.0, 2.0];
        let a64 = a32.map(f64::from);
        let p32 = Predictions::new(&Logits::new(&a32, 2).unwrap(), &[0, 1]).unwrap();
        let p64 = Predictions::new(&Logits::new(&a64, 2).unwrap(), &[0, 1]).unwrap();
        assert_eq!(p32, p64);
    }

    #[test]
    fn nll_stays_finite_when_probability_underflows() {
        let l = Logits::new(&[0.0f64, -2000.0], 2).unwrap();
        let p = Predictions::new(&l, &[1]).unwrap();
        assert_eq!(p.probs(0)[1], 0.0);
        assert_eq!(p.sample_nll()[0], 2000.0);
    }

    #[test]
    fn select_repeats_and_reorders() {
        let l = Logits::new(&[2.0f32, 0.0, 0.0, 1.0], 2).unwrap();
        let p = Predictions::new(&l, &[0, 0]).unwrap();
        let s = p.select(&[1, 1, 0]).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.labels(), &[0, 0, 0]);
        assert_eq!(s.predicted(), &[1, 1, 0]);
        assert_eq!(s.probs(2), p.probs(0));
        assert_eq!(p.select(&[]).unwrap_err(), CalibError::Empty);
    }
}
