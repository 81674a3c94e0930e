//! Recalibrators: maps fitted on a calibration split's logits and labels,
//! then applied to the logits of any split.
//!
//! Every method is a config struct (serde, with defaults) implementing
//! [`Recalibrator`]; fitting it returns a [`Calibrator`], whose
//! [`apply`](Calibrator::apply) turns logits into a [`Calibrated`] set of
//! probabilities. [`Method`] names the methods (`ts, vs, ms, dirichlet, hist,
//! iso, platt, sb`) and [`fit_recalibrator`] fits any of them by name from one
//! [`RecalibrationConfig`].
//!
//! Adding a method: one file in this folder with its config and fitted types,
//! then a [`Method`] variant, a [`RecalibrationConfig`] field and a match arm
//! in [`fit_recalibrator`].

mod dirichlet;
mod histogram;
mod isotonic;
mod matrix;
mod multinomial;
mod platt;
mod scaling_binning;
mod temperature;
mod vector;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{CalibError, Result};
use crate::logits::{Logits, Predictions, argmax, check_labels, softmax_into};

pub use dirichlet::DirichletCalibration;
pub use histogram::{FittedHistogram, HistogramBinning, HistogramMap};
pub use isotonic::{FittedIsotonic, IsotonicCalibration, IsotonicMap};
pub use matrix::{FittedLinear, MatrixScaling};
pub use multinomial::{NewtonConfig, NewtonFit};
pub use platt::{FittedPlatt, PlattMap, PlattScaling};
pub(crate) use scaling_binning::equal_mass_edges;
pub use scaling_binning::{FittedScalingBinning, ScalingBinning, ScalingBinningMap};
pub use temperature::{FittedTemperature, TemperatureScaling};
pub use vector::{FittedVectorScaling, VectorScaling};

/// A recalibration method with its settings: fits a [`Calibrator`].
pub trait Recalibrator {
    /// The fitted map.
    type Fitted: Calibrator + 'static;

    /// Fits the map on a calibration split's logits and labels.
    ///
    /// # Errors
    /// [`CalibError::TooFewClasses`] for fewer than 2 classes, label errors
    /// as in [`Predictions::new`], and [`CalibError::InvalidSetting`] for a
    /// setting out of range.
    fn fit(&self, logits: &Logits<'_>, labels: &[usize]) -> Result<Self::Fitted>;
}

/// A fitted recalibration map.
pub trait Calibrator: fmt::Debug + Send + Sync {
    /// Which method fitted it.
    fn method(&self) -> Method;

    /// The number of classes it was fitted on (and applies to).
    fn num_classes(&self) -> usize;

    /// Recalibrated probabilities of `logits`.
    ///
    /// # Errors
    /// [`CalibError::LengthMismatch`] if `logits` has another number of
    /// classes than the fitting set.
    fn apply(&self, logits: &Logits<'_>) -> Result<Calibrated>;
}

/// Recalibrated probabilities: row-major `n × k` `f64`, plus the class each
/// row predicts.
///
/// For the methods that map the whole vector (`ts`, `vs`, `ms`, `dirichlet`,
/// and the one-vs-rest modes) the prediction is the first maximum of the row.
/// A top-label method calibrates the confidence of the *uncalibrated*
/// prediction and keeps that prediction: its row has the calibrated
/// confidence at the predicted class and the other classes share the rest in
/// proportion to their uncalibrated probabilities (equally when those are all
/// 0). Another class can then end up above the predicted one; top-label
/// metrics read the kept prediction and its confidence, through
/// [`Calibrated::predictions`].
#[derive(Debug, Clone, PartialEq)]
pub struct Calibrated {
    probs: Vec<f64>,
    num_classes: usize,
    predicted: Vec<usize>,
}

impl Calibrated {
    /// Probabilities whose predictions are each row's first maximum.
    pub(crate) fn from_probs(probs: Vec<f64>, num_classes: usize) -> Self {
        let predicted = probs
            .chunks_exact(num_classes)
            .map(|r| argmax(r).0)
            .collect();
        Calibrated {
            probs,
            num_classes,
            predicted,
        }
    }

    /// The probabilities, row-major `len() × num_classes()`.
    pub fn probs(&self) -> &[f64] {
        &self.probs
    }

    /// Row `i` of the probabilities.
    ///
    /// # Panics
    /// If `i ≥ len()`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.probs[i * self.num_classes..(i + 1) * self.num_classes]
    }

    /// Consumes `self`, returning the row-major probabilities.
    pub fn into_probs(self) -> Vec<f64> {
        self.probs
    }

    /// The class each row predicts.
    pub fn predicted(&self) -> &[usize] {
        &self.predicted
    }

    /// The probability of each row's predicted class (its top-label confidence).
    pub fn confidences(&self) -> Vec<f64> {
        self.predicted
            .iter()
            .enumerate()
            .map(|(i, &c)| self.row(i)[c])
            .collect()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.predicted.len()
    }

    /// Whether there are no rows (never, for the output of [`Calibrator::apply`]).
    pub fn is_empty(&self) -> bool {
        self.predicted.is_empty()
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Pairs the probabilities with `labels` for the metrics, keeping each
    /// row's prediction (see [`Calibrated`]).
    ///
    /// # Errors
    /// Label errors as in [`Predictions::new`].
    pub fn predictions(&self, labels: &[usize]) -> Result<Predictions> {
        check_labels(labels, self.len(), self.num_classes)?;
        Ok(Predictions::from_parts(
            self.probs.clone(),
            self.num_classes,
            self.predicted.clone(),
            labels,
        ))
    }
}

/// What a one-dimensional calibrator (histogram binning, isotonic
/// regression, Platt scaling, scaling-binning) calibrates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The top-label confidence (the softmax maximum) against whether the
    /// prediction is correct; the prediction is kept (see [`Calibrated`]).
    #[default]
    TopLabel,
    /// Each class's probability against `[label = class]`, one map per
    /// class, then each row divided by its sum (a uniform row where the sum
    /// is 0), as scikit-learn's `CalibratedClassifierCV` normalises.
    OneVsRest,
}

/// The recalibration methods, by their short names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Method {
    /// `ts`: temperature scaling ([`TemperatureScaling`]).
    Ts,
    /// `vs`: vector scaling ([`VectorScaling`]).
    Vs,
    /// `ms`: matrix scaling with ODIR ([`MatrixScaling`]).
    Ms,
    /// `dirichlet`: Dirichlet calibration with ODIR ([`DirichletCalibration`]).
    Dirichlet,
    /// `hist`: histogram binning ([`HistogramBinning`]).
    Hist,
    /// `iso`: isotonic regression ([`IsotonicCalibration`]).
    Iso,
    /// `platt`: Platt scaling ([`PlattScaling`]).
    Platt,
    /// `sb`: Kumar et al.'s scaling-binning calibrator ([`ScalingBinning`]).
    Sb,
}

impl Method {
    /// Every method, in the order of their short names above.
    pub const ALL: [Method; 8] = [
        Method::Ts,
        Method::Vs,
        Method::Ms,
        Method::Dirichlet,
        Method::Hist,
        Method::Iso,
        Method::Platt,
        Method::Sb,
    ];

    /// The short name (`"ts"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Method::Ts => "ts",
            Method::Vs => "vs",
            Method::Ms => "ms",
            Method::Dirichlet => "dirichlet",
            Method::Hist => "hist",
            Method::Iso => "iso",
            Method::Platt => "platt",
            Method::Sb => "sb",
        }
    }

    /// Parses a comma-separated list such as `"ts,vs,iso"` (spaces around
    /// names allowed, empty entries ignored).
    ///
    /// # Errors
    /// [`CalibError::UnknownRecalibrator`] naming the first unknown entry.
    pub fn parse_list(list: &str) -> Result<Vec<Method>> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect()
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = CalibError;

    fn from_str(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| CalibError::UnknownRecalibrator(s.to_owned()))
    }
}

impl From<Method> for String {
    fn from(m: Method) -> String {
        m.name().to_owned()
    }
}

impl TryFrom<String> for Method {
    type Error = CalibError;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// The settings of every method, for [`fit_recalibrator`]; each field
/// defaults to its method's defaults, so a TOML or JSON config names only
/// what it changes (e.g. `[ms] lambda = 0.1`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecalibrationConfig {
    /// `ts`.
    pub ts: TemperatureScaling,
    /// `vs`.
    pub vs: VectorScaling,
    /// `ms`.
    pub ms: MatrixScaling,
    /// `dirichlet`.
    pub dirichlet: DirichletCalibration,
    /// `hist`.
    pub hist: HistogramBinning,
    /// `iso`.
    pub iso: IsotonicCalibration,
    /// `platt`.
    pub platt: PlattScaling,
    /// `sb`.
    pub sb: ScalingBinning,
}

/// Fits the method `method` with its settings from `config`.
///
/// ```
/// use muq_calibrate::{fit_recalibrator, Logits, Method, RecalibrationConfig};
/// let z = [2.0f32, 0.0, 0.0, 1.0, 1.5, 0.2, 0.3, 0.1, 0.0, 2.5, 1.0, 0.0];
/// let labels = [0, 1, 1, 0, 1, 0];
/// let logits = Logits::new(&z, 2)?;
/// let config = RecalibrationConfig::default();
/// for method in Method::parse_list("ts,vs,hist,iso")? {
///     let fitted = fit_recalibrator(method, &config, &logits, &labels)?;
///     let out = fitted.apply(&logits)?;
///     assert_eq!(out.probs().len(), z.len());
/// }
/// # Ok::<(), muq_calibrate::CalibError>(())
/// ```
///
/// # Errors
/// As [`Recalibrator::fit`].
pub fn fit_recalibrator(
    method: Method,
    config: &RecalibrationConfig,
    logits: &Logits<'_>,
    labels: &[usize],
) -> Result<Box<dyn Calibrator>> {
    fn boxed<R: Recalibrator>(
        r: &R,
        logits: &Logits<'_>,
        labels: &[usize],
    ) -> Result<Box<dyn Calibrator>> {
        Ok(Box::new(r.fit(logits, labels)?))
    }
    match method {
        Method::Ts => boxed(&config.ts, logits, labels),
        Method::Vs => boxed(&config.vs, logits, labels),
        Method::Ms => boxed(&config.ms, logits, labels),
        Method::Dirichlet => boxed(&config.dirichlet, logits, labels),
        Method::Hist => boxed(&config.hist, logits, labels),
        Method::Iso => boxed(&config.iso, logits, labels),
        Method::Platt => boxed(&config.platt, logits, labels),
        Method::Sb => boxed(&config.sb, logits, labels),
    }
}

// ---------------------------------------------------------------- shared helpers

/// Checks what every fit needs: at least two classes and valid labels.
fn check_fit(logits: &Logits<'_>, labels: &[usize]) -> Result<()> {
    if logits.num_classes() < 2 {
        return Err(CalibError::TooFewClasses(logits.num_classes()));
    }
    check_labels(labels, logits.len(), logits.num_classes())
}

/// Checks that `logits` has the number of classes a calibrator was fitted on.
fn check_apply(logits: &Logits<'_>, num_classes: usize) -> Result<()> {
    if logits.num_classes() != num_classes {
        return Err(CalibError::LengthMismatch {
            what: "classes of the logits (as many as the fitting set had)",
            expected: num_classes,
            found: logits.num_classes(),
        });
    }
    Ok(())
}

/// Checks that a setting is finite and at least `min` (`> min` if `strict`).
fn check_setting(name: &'static str, value: f64, min: f64, strict: bool) -> Result<()> {
    let ok = value.is_finite() && if strict { value > min } else { value >= min };
    if ok {
        Ok(())
    } else {
        Err(CalibError::InvalidSetting {
            name,
            value,
            expected: if strict {
                "a finite number above its minimum"
            } else {
                "a finite number at least its minimum"
            },
        })
    }
}

/// Softmax of every row (row-major `n × k`).
fn softmax_rows(logits: &Logits<'_>) -> Vec<f64> {
    let k = logits.num_classes();
    let mut probs = vec![0.0; logits.len() * k];
    let mut row = vec![0.0; k];
    for (i, out) in probs.chunks_exact_mut(k).enumerate() {
        logits.row_into(i, &mut row);
        softmax_into(&row, 1.0, out);
    }
    probs
}

/// Top-label view of softmax probabilities: (prediction, confidence) per row.
fn top_label(probs: &[f64], k: usize) -> (Vec<usize>, Vec<f64>) {
    probs.chunks_exact(k).map(argmax).unzip()
}

/// Binary targets of one-vs-rest class `class`, or of top-label correctness.
fn targets_of_class(labels: &[usize], class: usize) -> Vec<bool> {
    labels.iter().map(|&y| y == class).collect()
}

/// The full rows of a top-label calibration (see [`Calibrated`]): the
/// predicted class gets `confidence[i]`, the others share `1 − confidence[i]`
/// in proportion to their uncalibrated probabilities.
fn fill_top_label(
    probs: &[f64],
    k: usize,
    predicted: Vec<usize>,
    confidence: &[f64],
) -> Calibrated {
    let mut out = vec![0.0; probs.len()];
    for (i, (row, dst)) in probs
        .chunks_exact(k)
        .zip(out.chunks_exact_mut(k))
        .enumerate()
    {
        let (pred, c) = (predicted[i], confidence[i]);
        let rest = 1.0 - row[pred];
        if rest > 0.0 {
            let scale = (1.0 - c) / rest;
            for (d, &p) in dst.iter_mut().zip(row) {
                *d = p * scale;
            }
        } else {
            dst.fill((1.0 - c) / (k - 1) as f64);
        }
        dst[pred] = c;
    }
    Calibrated {
        probs: out,
        num_classes: k,
        predicted,
    }
}

/// Divides each row by its sum; a row summing to 0 becomes uniform.
fn normalise_rows(mut probs: Vec<f64>, k: usize) -> Calibrated {
    for row in probs.chunks_exact_mut(k) {
        let sum: f64 = row.iter().sum();
        if sum > 0.0 {
            for v in row.iter_mut() {
                *v /= sum;
            }
        } else {
            row.fill(1.0 / k as f64);
        }
    }
    Calibrated::from_probs(probs, k)
}

/// A fitted one-dimensional map from a probability to a calibrated one.
trait BinaryMap {
    fn map(&self, x: f64) -> f64;
}

/// One fitted 1-D map for the top label, or one per class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PerMode<M> {
    /// The map of the top-label confidence.
    TopLabel(M),
    /// One map per class, in class order.
    OneVsRest(Vec<M>),
}

impl<M> PerMode<M> {
    /// Fits `fit(x, targets)` on the top-label or on each class.
    fn fit(
        mode: Mode,
        logits: &Logits<'_>,
        labels: &[usize],
        mut fit: impl FnMut(&[f64], &[bool]) -> Result<M>,
    ) -> Result<Self> {
        let k = logits.num_classes();
        let probs = softmax_rows(logits);
        match mode {
            Mode::TopLabel => {
                let (pred, conf) = top_label(&probs, k);
                let correct: Vec<bool> = pred.iter().zip(labels).map(|(p, y)| p == y).collect();
                Ok(PerMode::TopLabel(fit(&conf, &correct)?))
            }
            Mode::OneVsRest => {
                let mut column = vec![0.0; logits.len()];
                (0..k)
                    .map(|c| {
                        for (dst, row) in column.iter_mut().zip(probs.chunks_exact(k)) {
                            *dst = row[c];
                        }
                        fit(&column, &targets_of_class(labels, c))
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(PerMode::OneVsRest)
            }
        }
    }

    /// The mode these maps were fitted in.
    pub fn mode(&self) -> Mode {
        match self {
            PerMode::TopLabel(_) => Mode::TopLabel,
            PerMode::OneVsRest(_) => Mode::OneVsRest,
        }
    }
}

/// Applies fitted 1-D maps to `logits` (top-label or one-vs-rest).
fn apply_maps<M: BinaryMap>(maps: &PerMode<M>, logits: &Logits<'_>) -> Calibrated {
    {
        let k = logits.num_classes();
        let probs = softmax_rows(logits);
        match maps {
            PerMode::TopLabel(map) => {
                let (pred, conf) = top_label(&probs, k);
                let calibrated: Vec<f64> = conf.iter().map(|&c| map.map(c)).collect();
                fill_top_label(&probs, k, pred, &calibrated)
            }
            PerMode::OneVsRest(maps) => {
                let mut out = probs;
                for row in out.chunks_exact_mut(k) {
                    for (v, map) in row.iter_mut().zip(maps) {
                        *v = map.map(*v);
                    }
                }
                normalise_rows(out, k)
            }
        }
    }
}
