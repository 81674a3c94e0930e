//! The report's data model: plain, serialisable structs built from result
//! files ([`super::build_report`]) and read by every renderer (Markdown,
//! CSV, figures). Nothing here reads or writes files.

use std::collections::BTreeMap;

use muq_calibrate::{ConfidenceInterval, ReliabilityDiagram};
use muq_data::ModalityKind;
use muq_unlearn::Method;
use serde::{Deserialize, Serialize};

use super::reference::ReferenceRow;
use super::{ORIGINAL_STATE, RETRAIN_STATE};

/// Mean and population standard deviation (ddof = 0) of some values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Arithmetic mean.
    pub mean: f64,
    /// Population standard deviation: `sqrt(Σ (x − mean)² / n)`.
    pub std: f64,
    /// Number of values.
    pub n: usize,
}

impl Stat {
    /// The statistics of `values`, `None` when there are none. Summed in the
    /// given order, so the same values in the same order give the same bits.
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let naive = values.iter().sum::<f64>() / n;
        // One correction pass (the sum of the residuals is 0 in exact
        // arithmetic): equal values then give exactly that value and std 0.
        let mean = naive + values.iter().map(|x| x - naive).sum::<f64>() / n;
        let var = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        Some(Stat {
            mean,
            std: var.sqrt(),
            n: values.len(),
        })
    }
}

/// The whole report: what `summary.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Layout version ([`REPORT_SCHEMA`](super::REPORT_SCHEMA)).
    pub schema: u32,
    /// Result files summarised.
    pub runs: usize,
    /// The original study's table (spec section 8), for comparison only.
    pub reference: Vec<ReferenceRow>,
    /// One entry per distinct configuration (modality kind and seed aside),
    /// sorted by label.
    pub groups: Vec<Group>,
}

/// A mean ± std as the original study printed it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reported {
    /// Mean over its 3 runs.
    pub mean: f64,
    /// Its standard deviation.
    pub std: f64,
}

/// The modalities in table order.
pub(super) const MODALITIES: [ModalityKind; 4] = ModalityKind::ALL;

/// The name the original's table gives a modality
/// ([`ModalityKind::title`]); any other name as it is.
pub fn modality_title(modality: &str) -> &str {
    match modality.parse::<ModalityKind>() {
        Ok(kind) => kind.title(),
        Err(_) => modality,
    }
}

/// Runs that share one configuration, modality kind and seed aside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Short id, `g1`, `g2`, … in label order.
    pub id: String,
    /// What sets this group apart from the others (`all runs` when alone).
    pub label: String,
    /// The setup in words.
    pub setup: Setup,
    /// The shared configuration, flattened to dotted keys (without `seed`
    /// and `modality.kind`; `train_on` resolved).
    pub config: BTreeMap<String, String>,
    /// The state of the original's table: [`HEADLINE_STATE`](super::HEADLINE_STATE), or
    /// [`ORIGINAL_STATE`] when no run has it.
    pub headline_state: String,
    /// The original's table: ECE and Brier after temperature scaling of the
    /// headline state, per modality.
    pub headline: Vec<HeadlineRow>,
    /// The base models' training log, per epoch, over the group's distinct
    /// base models (runs that share a cached model count it once).
    pub training: Vec<EpochRow>,
    /// The extended view, per modality.
    pub modalities: Vec<ModalityReport>,
    /// Path of the ECE/Brier chart relative to the output directory, without
    /// extension (`.png` and `.svg` exist).
    pub chart: String,
}

/// The setup of a group, for the line under its heading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    /// `corrected` or `original`.
    pub protocol: String,
    /// `modified` or `clean`.
    pub train_on: String,
    /// ResNet width.
    pub width: usize,
    /// Training epochs.
    pub epochs: usize,
    /// Training images used (every distinct value over the runs).
    pub n_train: Vec<usize>,
    /// The unlearning methods' state names, as configured.
    pub methods: Vec<String>,
    /// BatchNorm policy of first-order unlearning, if configured.
    pub first_order_bn: Option<String>,
    /// What computed the runs (`provenance.compute`: kernels and CPU
    /// instruction-set level) with how many runs each, sorted; runs from
    /// before it was recorded count as `unrecorded`. Runs computed on
    /// different paths agree only to rounding.
    #[serde(default)]
    pub compute: Vec<(String, usize)>,
}

/// One epoch of the base models' training, over models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss of the epoch (training mode).
    pub loss: Stat,
    /// Training accuracy of the epoch (training mode).
    pub accuracy: Stat,
    /// Wall-clock seconds of the epoch.
    pub seconds: Stat,
}

/// One row of the original's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadlineRow {
    /// `random`, `noise` or `label`.
    pub modality: String,
    /// ECE after temperature scaling (its `n` = runs).
    pub ece: Stat,
    /// Brier score after temperature scaling.
    pub brier: Stat,
}

/// The runs of one modality within a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModalityReport {
    /// `random`, `noise`, `label` or `class`.
    pub modality: String,
    /// The runs, by seed.
    pub runs: Vec<RunRef>,
    /// Every state present in some run: `original`, the methods, `retrain`
    /// last.
    pub states: Vec<StateReport>,
    /// Methods that failed in some run (left out of the statistics).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedRef>,
}

/// A method that failed in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedRef {
    /// State name.
    pub state: String,
    /// Run seed.
    pub seed: u64,
    /// The run's error for it.
    pub error: String,
}

/// Which file a run came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRef {
    /// Run seed.
    pub seed: u64,
    /// Run id.
    pub run_id: String,
    /// `result.json` relative to the results directory.
    pub path: String,
}

/// One state of one modality, over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateReport {
    /// State name.
    pub state: String,
    /// Seeds of the runs that have this state.
    pub seeds: Vec<u64>,
    /// Every metric (keys: [`metric_keys`](super::metric_keys)).
    pub metrics: BTreeMap<String, Stat>,
    /// This state minus `original`, paired by seed, every metric (empty for
    /// `original` itself or when it is missing).
    pub minus_original: BTreeMap<String, Stat>,
    /// This state minus `retrain`, paired by seed: ECE and Brier after
    /// temperature scaling, forget-set accuracy (empty without `retrain`).
    pub minus_retrain: BTreeMap<String, Stat>,
    /// `|this state − retrain|`, paired by seed, for UA, RA, TA and
    /// MIA-efficacy, their per-seed mean ([`AVG_GAP`](super::AVG_GAP), SalUn's "Avg. Gap"),
    /// and ECE and Brier after TS (the calibration gap to retrain); empty
    /// without `retrain`. A metric a run did not measure is left out, and
    /// the Avg. Gap then needs all four.
    #[serde(default)]
    pub gap_to_retrain: BTreeMap<String, Stat>,
    /// Reliability diagrams of the evaluation half pooled over seeds
    /// (counts summed, confidence and accuracy count-weighted).
    pub reliability_before_ts: ReliabilityDiagram,
    /// The same after temperature scaling.
    pub reliability_after_ts: ReliabilityDiagram,
    /// Path of the reliability figure relative to the output directory,
    /// without extension (`.png` and `.svg` exist).
    pub figure: String,
    /// The recalibrators of `eval.recalibrators` (over the seeds whose runs
    /// measured them): first `uncalibrated` (the softmax, measured the same
    /// way), then each method in the order `ts, vs, ms, dirichlet, hist,
    /// iso, platt, sb`. Empty when no run of this state has any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recalibrated: Vec<RecalibratedReport>,
    /// Path of the figure of reliability diagrams after each recalibrator,
    /// relative to the output directory, without extension (absent without
    /// recalibrators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recalibrated_figure: Option<String>,
    /// The deep ensemble (`eval.ensemble`) of this state, before and after
    /// each recalibrator, as [`StateReport::recalibrated`] (empty when no
    /// run of this state has an ensemble).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ensemble: Vec<RecalibratedReport>,
    /// The ensembles' member counts, over the runs that have one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ensemble_members: Vec<usize>,
    /// MC dropout (`eval.mc_dropout_passes`) of this state, before and
    /// after each recalibrator (empty when no run has it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mc_dropout: Vec<RecalibratedReport>,
}

/// The name of the reference entry of [`StateReport::recalibrated`]: the
/// softmax without recalibration.
pub const UNCALIBRATED: &str = "uncalibrated";

/// One recalibrator of one state, over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecalibratedReport {
    /// The recalibrator's short name, or [`UNCALIBRATED`].
    pub method: String,
    /// Seeds of the runs that measured it.
    pub seeds: Vec<u64>,
    /// Keys ([`recalibrated_metric_keys`](super::recalibrated_metric_keys)): `accuracy`, `ece`, `smooth_ece`,
    /// `debiased_l2_ce`, `brier`, `nll` on the evaluation half, and `ece`,
    /// `smooth_ece` and `brier` of the forget set (`_forget`) and the
    /// retain sample (`_retain`). A metric with a non-finite value in some
    /// run (the NLL of a binning method that gives a true class 0) is left
    /// out.
    pub metrics: BTreeMap<String, Stat>,
    /// Reliability diagram of the evaluation half, bins pooled over seeds.
    pub reliability: ReliabilityDiagram,
    /// The bootstrap intervals of the evaluation half
    /// ([`crate::evaluate::bootstrap_intervals`]) when exactly one run
    /// measured this entry and had `eval.bootstrap` (over several seeds the
    /// spread over seeds is reported instead).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bootstrap: BTreeMap<String, ConfidenceInterval>,
}

/// The methods whose states come right after `original`, in this order:
/// the study's own (the first four of [`Method::SHORT_NAMES`]).
const STUDY_METHODS: usize = 4;

/// Order of states: `original`, the study's methods, other names,
/// `retrain`.
pub(crate) fn state_rank(name: &str) -> (u8, &str) {
    let study = Method::SHORT_NAMES[..STUDY_METHODS]
        .iter()
        .position(|m| *m == name);
    let rank = match (name, study) {
        (ORIGINAL_STATE, _) => 0,
        (_, Some(i)) => 1 + i as u8,
        (RETRAIN_STATE, None) => STUDY_METHODS as u8 + 2,
        (_, None) => STUDY_METHODS as u8 + 1,
    };
    (rank, name)
}

/// A file-name-safe version of a state name.
pub(super) fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn population_std_of_three_values() {
        // mean = (0.01 + 0.02 + 0.03) / 3 = 0.02;
        // var = (0.01² + 0 + 0.01²) / 3 = 0.0002 / 3 = 6.6667e-5; std = 0.0081650.
        let s = Stat::of(&[0.01, 0.02, 0.03]).unwrap();
        assert!((s.mean - 0.02).abs() < 1e-15);
        assert!((s.std - 0.008_164_965_809_277_26).abs() < 1e-12);
        assert_eq!(s.n, 3);
        assert_eq!(Stat::of(&[0.5]).unwrap().std, 0.0);
        // 0.8 + 0.8 + 0.8 = 2.4000000000000004 in doubles; the correction
        // pass gives back 0.8 exactly and std 0.
        let same = Stat::of(&[0.8, 0.8, 0.8]).unwrap();
        assert_eq!((same.mean, same.std), (0.8, 0.0));
        assert!(Stat::of(&[]).is_none());
    }

    #[test]
    fn states_sort_original_first_retrain_last() {
        let mut names = vec![
            "retrain",
            "zeta",
            "fine_tune",
            "original",
            "first_order",
            "second_order",
            "gradient_ascent",
        ];
        names.sort_by_key(|n| state_rank(n));
        assert_eq!(
            names,
            [
                "original",
                "first_order",
                "second_order",
                "gradient_ascent",
                "fine_tune",
                "zeta",
                "retrain"
            ]
        );
    }
}
