//! The report's metrics: each name with where its value is read from a
//! state's metrics, and the metrics of the gap summaries.

use crate::evaluate::{ProbMetrics, StateMetrics};

/// A metric the report summarises, read from a state's [`StateMetrics`].
#[derive(Clone, Copy)]
pub(super) struct MetricDef {
    pub(super) key: &'static str,
    pub(super) get: fn(&StateMetrics) -> f64,
}

/// Every metric, in the order of the CSV rows.
pub(super) const METRICS: &[MetricDef] = &[
    MetricDef {
        key: "accuracy_evaluation",
        get: |m| m.evaluation.uncalibrated.accuracy,
    },
    MetricDef {
        key: "accuracy_forget",
        get: |m| m.forget.uncalibrated.accuracy,
    },
    MetricDef {
        key: "accuracy_retain",
        get: |m| m.retain.uncalibrated.accuracy,
    },
    MetricDef {
        key: "ece_before_ts",
        get: |m| m.evaluation.uncalibrated.ece,
    },
    MetricDef {
        key: "ece_after_ts",
        get: |m| m.evaluation.scaled.ece,
    },
    MetricDef {
        key: "brier_before_ts",
        get: |m| m.evaluation.uncalibrated.brier,
    },
    MetricDef {
        key: "brier_after_ts",
        get: |m| m.evaluation.scaled.brier,
    },
    MetricDef {
        key: "nll_before_ts",
        get: |m| m.evaluation.uncalibrated.nll,
    },
    MetricDef {
        key: "nll_after_ts",
        get: |m| m.evaluation.scaled.nll,
    },
    MetricDef {
        key: "adaptive_ece_before_ts",
        get: |m| m.evaluation.uncalibrated.adaptive_ece,
    },
    MetricDef {
        key: "adaptive_ece_after_ts",
        get: |m| m.evaluation.scaled.adaptive_ece,
    },
    MetricDef {
        key: "mce_after_ts",
        get: |m| m.evaluation.scaled.mce,
    },
    MetricDef {
        key: "classwise_ece_after_ts",
        get: |m| m.evaluation.scaled.classwise_ece,
    },
    MetricDef {
        key: "temperature",
        get: |m| m.temperature.temperature,
    },
    MetricDef {
        key: "ece_forget_after_ts",
        get: |m| m.forget.scaled.ece,
    },
    MetricDef {
        key: "brier_forget_after_ts",
        get: |m| m.forget.scaled.brier,
    },
    MetricDef {
        key: "ece_retain_after_ts",
        get: |m| m.retain.scaled.ece,
    },
    MetricDef {
        key: "brier_retain_after_ts",
        get: |m| m.retain.scaled.brier,
    },
    // The unlearning field's efficacy metrics (SalUn's names): UA = 1 −
    // forget accuracy, RA = retain-sample accuracy, TA = evaluation-half
    // accuracy; MIA-efficacy (confidence feature) and the loss-threshold
    // AUC where the run measured them (NaN = not measured, left out).
    MetricDef {
        key: "ua",
        get: |m| 1.0 - m.forget.uncalibrated.accuracy,
    },
    MetricDef {
        key: "ra",
        get: |m| m.retain.uncalibrated.accuracy,
    },
    MetricDef {
        key: "ta",
        get: |m| m.evaluation.uncalibrated.accuracy,
    },
    MetricDef {
        key: "mia_efficacy",
        get: |m| {
            m.efficacy
                .as_ref()
                .and_then(|e| e.mia_efficacy.get(DEFAULT_MIA_FEATURE).copied())
                .unwrap_or(f64::NAN)
        },
    },
    MetricDef {
        key: "loss_auc",
        get: |m| m.efficacy.as_ref().map_or(f64::NAN, |e| e.loss_auc),
    },
];

/// The MIA feature the report's efficacy table shows (the field's default).
pub const DEFAULT_MIA_FEATURE: &str = "confidence";

/// The metrics compared with `retrain` (method − retrain, paired by seed).
pub(super) const RETRAIN_GAP_METRICS: &[&str] =
    &["ece_after_ts", "brier_after_ts", "accuracy_forget"];

/// The metrics whose absolute gap to `retrain` is reported (paired by seed):
/// SalUn's four, whose mean is its "Avg. Gap", then the calibration gap.
pub(super) const EFFICACY_GAP_METRICS: [&str; 4] = ["ua", "ra", "ta", "mia_efficacy"];

/// The calibration metrics whose absolute gap to `retrain` is reported.
pub(super) const CALIBRATION_GAP_METRICS: [&str; 2] = ["ece_after_ts", "brier_after_ts"];

/// The key of the mean of the `EFFICACY_GAP_METRICS` gaps in
/// [`StateReport::gap_to_retrain`](super::StateReport::gap_to_retrain) (SalUn's "Avg. Gap").
pub const AVG_GAP: &str = "avg_gap";

/// The metric keys of [`StateReport::metrics`](super::StateReport::metrics), in CSV order.
pub fn metric_keys() -> Vec<&'static str> {
    METRICS.iter().map(|m| m.key).collect()
}

/// A metric of [`RecalibratedReport::metrics`], read from one split's
/// [`ProbMetrics`].
pub(super) type RecalMetricDef = (&'static str, fn(&RecalSplits<'_>) -> f64);

/// The three splits of one recalibrator in one run.
pub(super) struct RecalSplits<'a> {
    pub(super) evaluation: &'a ProbMetrics,
    pub(super) forget: &'a ProbMetrics,
    pub(super) retain: &'a ProbMetrics,
}

/// Every metric of a [`RecalibratedReport`], in CSV order.
pub(super) const RECAL_METRICS: &[RecalMetricDef] = &[
    ("accuracy", |s| s.evaluation.accuracy),
    ("ece", |s| s.evaluation.ece),
    ("smooth_ece", |s| s.evaluation.smooth_ece),
    ("debiased_l2_ce", |s| s.evaluation.debiased_l2_ce),
    ("brier", |s| s.evaluation.brier),
    ("nll", |s| s.evaluation.nll),
    ("ece_forget", |s| s.forget.ece),
    ("smooth_ece_forget", |s| s.forget.smooth_ece),
    ("brier_forget", |s| s.forget.brier),
    ("ece_retain", |s| s.retain.ece),
    ("smooth_ece_retain", |s| s.retain.smooth_ece),
    ("brier_retain", |s| s.retain.brier),
];

/// The metric keys of [`RecalibratedReport::metrics`](super::RecalibratedReport::metrics), in CSV
/// order.
pub fn recalibrated_metric_keys() -> Vec<&'static str> {
    RECAL_METRICS.iter().map(|(k, _)| *k).collect()
}
