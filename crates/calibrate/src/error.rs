//! The crate's error type.

/// Everything that can go wrong when computing calibration metrics.
///
/// Each variant names the offending quantity so that a caller can report it
/// without re-deriving it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CalibError {
    /// There are no samples (empty logits, labels or index set).
    #[error("empty input: at least one sample is needed")]
    Empty,
    /// `num_classes` was zero.
    #[error("num_classes must be at least 1")]
    ZeroClasses,
    /// Two lengths that must agree do not.
    #[error("length mismatch: {what}: expected {expected}, found {found}")]
    LengthMismatch {
        /// Which quantity has the wrong length.
        what: &'static str,
        /// The length it should have.
        expected: usize,
        /// The length it has.
        found: usize,
    },
    /// A label is not a valid class index.
    #[error("label {label} at sample {index} is out of range for {num_classes} classes")]
    LabelOutOfRange {
        /// Zero-based sample index.
        index: usize,
        /// The offending label.
        label: usize,
        /// The number of classes (labels must be `< num_classes`).
        num_classes: usize,
    },
    /// A logit is NaN or infinite.
    #[error("non-finite logit {value} at row {row}, column {column}")]
    NonFinite {
        /// Zero-based row (sample) index.
        row: usize,
        /// Zero-based column (class) index.
        column: usize,
        /// The offending value.
        value: f64,
    },
    /// A binned metric was asked for zero bins.
    #[error("the number of bins must be at least 1")]
    ZeroBins,
    /// A temperature (or temperature bound) is not a finite positive number.
    #[error("temperature must be finite and > 0, got {0}")]
    InvalidTemperature(f64),
    /// A bootstrap was asked for zero resamples.
    #[error("the number of bootstrap resamples must be at least 1")]
    ZeroResamples,
    /// A confidence level outside the open interval (0, 1).
    #[error("confidence level must lie in (0, 1), got {0}")]
    InvalidLevel(f64),
    /// A probability is NaN, infinite, or outside `[0, 1]`.
    #[error("probability {value} at row {row}, column {column} is not in [0, 1]")]
    InvalidProbability {
        /// Zero-based row (sample) index.
        row: usize,
        /// Zero-based column (class) index.
        column: usize,
        /// The offending value.
        value: f64,
    },
    /// A recalibrator needs at least two classes.
    #[error("recalibration needs at least 2 classes, got {0}")]
    TooFewClasses(usize),
    /// A recalibrator or metric setting is out of its range.
    #[error("invalid setting {name} = {value}: {expected}")]
    InvalidSetting {
        /// The setting's name, as in its config struct.
        name: &'static str,
        /// The value given.
        value: f64,
        /// What it must be.
        expected: &'static str,
    },
    /// A recalibrator name that is none of `ts, vs, ms, dirichlet, hist, iso, platt, sb`.
    #[error(
        "unknown recalibrator {0:?}: expected one of ts, vs, ms, dirichlet, hist, iso, platt, sb"
    )]
    UnknownRecalibrator(String),
    /// A bootstrap statistic evaluated to NaN or infinity.
    #[error("bootstrap statistic is not finite ({value}) on resample {resample}")]
    NonFiniteStatistic {
        /// Zero-based resample index (`usize::MAX` for the full-sample estimate).
        resample: usize,
        /// The value returned by the statistic.
        value: f64,
    },
}

/// Shorthand for `Result<T, CalibError>`.
pub type Result<T, E = CalibError> = std::result::Result<T, E>;
