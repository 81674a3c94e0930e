//! The crate's error type.

use muq_calibrate::CalibError;

/// Everything that can go wrong when computing efficacy metrics.
///
/// Each variant names the offending input (`what`: "shadow members",
/// "target", "forget losses", "probabilities", …) and, where there is one,
/// the offending row and value, so a caller can report it as is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EfficacyError {
    /// An input has no samples.
    #[error("{what} is empty: at least one sample is needed")]
    Empty {
        /// Which input is empty.
        what: &'static str,
    },
    /// `num_classes` was zero.
    #[error("num_classes must be at least 1")]
    ZeroClasses,
    /// A row-major matrix whose length is not a multiple of its row width.
    #[error("{what} is ragged: {len} values do not split into rows of {width}")]
    Ragged {
        /// Which matrix.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The row width it should have (the number of classes or features).
        width: usize,
    },
    /// Two lengths that must agree do not.
    #[error("{what}: expected {expected} entries, found {found}")]
    LengthMismatch {
        /// Which quantity has the wrong length.
        what: &'static str,
        /// The length it should have.
        expected: usize,
        /// The length it has.
        found: usize,
    },
    /// A label is not a valid class index.
    #[error("{what}: label {label} at row {row} is out of range for {num_classes} classes")]
    LabelOutOfRange {
        /// Which set's labels.
        what: &'static str,
        /// Zero-based row.
        row: usize,
        /// The offending label.
        label: usize,
        /// The number of classes (labels must be `< num_classes`).
        num_classes: usize,
    },
    /// A value is NaN.
    #[error("{what}: NaN at index {index}")]
    NaN {
        /// Which input.
        what: &'static str,
        /// Zero-based flat index into the input slice.
        index: usize,
    },
    /// An infinite value where only finite ones make sense (SVC features).
    #[error("{what}: non-finite value {value} at index {index}")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Zero-based flat index into the input slice.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A probability outside `[0, 1]` (or infinite).
    #[error("{what}: probability {value} at row {row}, column {column} is outside [0, 1]")]
    NotAProbability {
        /// Which set's probabilities.
        what: &'static str,
        /// Zero-based row.
        row: usize,
        /// Zero-based column (class).
        column: usize,
        /// The offending value.
        value: f64,
    },
    /// An SVM parameter is out of range (`C ≤ 0`, `gamma ≤ 0`, `tol ≤ 0`, or
    /// not finite).
    #[error("invalid SVM parameter {name} = {value}: it must be finite and > 0")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// The shadow set is larger than [`crate::SvcParams::max_shadow_rows`]
    /// (the dense kernel matrix takes `8·n²` bytes).
    #[error(
        "{rows} shadow rows exceed max_shadow_rows = {max} (the dense RBF kernel needs 8·n² bytes: \
         {gib:.1} GiB); subsample the shadow sets yourself or raise the limit"
    )]
    ShadowTooLarge {
        /// Shadow members plus shadow non-members.
        rows: usize,
        /// The configured limit.
        max: usize,
        /// The kernel matrix's size at `rows`, in GiB.
        gib: f64,
    },
    /// The SVM solver (linfa-svm) reported an error.
    #[error("SVM fit failed: {0}")]
    Svm(String),
    /// Invalid logits, from `muq-calibrate`'s validation.
    #[error("logits: {0}")]
    Logits(#[from] CalibError),
}

/// Shorthand for `Result<T, EfficacyError>`.
pub type Result<T, E = EfficacyError> = std::result::Result<T, E>;
