//! Calibration metrics for classifiers, on plain slices.
//!
//! `muq-calibrate` measures how well a classifier's softmax confidence
//! matches its accuracy: accuracy, the original notebook's 10-bin expected
//! calibration error (ECE), maximum calibration error, adaptive (equal-mass)
//! and classwise ECE, the multi-class Brier score, negative log-likelihood,
//! reliability-diagram bins, temperature scaling (the exact NLL-minimising
//! temperature) and seeded percentile-bootstrap confidence intervals. It
//! depends on no tensor library: logits are a row-major `&[f32]` or `&[f64]`
//! slice, labels a `&[usize]`, and every computation runs in `f64`.
//!
//! ```
//! use muq_calibrate::{ece, fit_temperature, Logits, Predictions};
//!
//! // Four samples, three classes, row-major.
//! let z = [2.0f32, 0.5, -1.0, 0.1, 0.3, 0.2, -1.0, 0.0, 3.0, 1.0, 1.0, 0.5];
//! let labels = [0, 2, 2, 1];
//! let logits = Logits::new(&z, 3)?;
//!
//! let p = Predictions::new(&logits, &labels)?;
//! let e = ece(&p, 10)?;
//! assert!((0.0..=1.0).contains(&e));
//!
//! let fit = fit_temperature(&logits, &labels)?;
//! assert!(fit.nll_after <= fit.nll_before);
//! # Ok::<(), muq_calibrate::CalibError>(())
//! ```
//!
//! Workflow: wrap logits in a validated [`Logits`] view, turn them into
//! [`Predictions`] (softmax computed once, optionally at a temperature), then
//! call the metric functions — or [`summarize`] for all of them, before and
//! after temperature scaling, in one [`Summary`].
//!
//! Beyond temperature scaling, the calibration field's recalibrators — vector
//! and matrix scaling, Dirichlet calibration, histogram binning, isotonic
//! regression, Platt scaling, scaling-binning — share one [`Recalibrator`] →
//! [`Calibrator`] interface and are fitted by name with [`fit_recalibrator`];
//! their output ([`Calibrated`]) feeds the same metrics, plus smooth ECE
//! ([`smooth_ece`]), the debiased L2 calibration error
//! ([`l2_calibration_error`]), binned errors under a [`Norm`] and the Brier
//! decomposition ([`brier_decomposition`]). Each is checked against the
//! library that defines it (`tests/reference.rs`).
#![deny(missing_docs)]

mod bootstrap;
mod brier;
mod debiased;
mod error;
mod logits;
mod metrics;
mod recal;
mod smooth;
mod summary;
mod temperature;

pub use bootstrap::{BootstrapConfig, ConfidenceInterval, bootstrap_ci};
pub use brier::{BrierBinning, BrierDecomposition, brier_decomposition};
pub use debiased::{
    CeBinning, CeMode, L2CeConfig, l2_calibration_error, l2_calibration_error_scores,
};
pub use error::{CalibError, Result};
pub use logits::{LogitSlice, Logits, Predictions, log_softmax, softmax};
pub use metrics::{
    Norm, ReliabilityBin, ReliabilityDiagram, accuracy, adaptive_ece, brier, calibration_error,
    classwise_ece, ece, mce, nll, reliability_diagram,
};
pub use recal::{
    Calibrated, Calibrator, DirichletCalibration, FittedHistogram, FittedIsotonic, FittedLinear,
    FittedPlatt, FittedScalingBinning, FittedTemperature, FittedVectorScaling, HistogramBinning,
    HistogramMap, IsotonicCalibration, IsotonicMap, MatrixScaling, Method, Mode, NewtonConfig,
    NewtonFit, PerMode, PlattMap, PlattScaling, RecalibrationConfig, Recalibrator, ScalingBinning,
    ScalingBinningMap, TemperatureScaling, VectorScaling, fit_recalibrator,
};
pub use smooth::{SmoothEce, smooth_ece, smooth_ece_at, smooth_ece_scores};
pub use summary::{MetricSet, Summary, summarize};
pub use temperature::{
    TemperatureConfig, TemperatureFit, fit_temperature, fit_temperature_with, nll_at_temperature,
};
