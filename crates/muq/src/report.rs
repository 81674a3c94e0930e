//! `muq report`: summarise a directory of run results as the study's tables
//! and figures.
//!
//! Every `result.json` under the results directory is read (recursively, in
//! path order). Runs are grouped by their configuration without the modality
//! kind and the seed, so that different configurations are never averaged
//! together; within a group, runs are split by modality and each number is a
//! mean ± population standard deviation (ddof = 0) over seeds. Differences
//! between states (a method minus `retrain`, a state minus `original`) are
//! paired by seed.
//!
//! The report is written as `summary.md`, `summary.csv` (one tidy row per
//! group, modality, state, quantity and metric) and `summary.json` (the same
//! numbers, structured as [`Report`]), plus the figures of [`crate::plot`]
//! under `figures/`. The same inputs give byte-identical files: everything is
//! sorted, floats are formatted deterministically and nothing records the
//! time.

use crate::exit::InvalidInput;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use muq_calibrate::{ConfidenceInterval, ReliabilityBin, ReliabilityDiagram};
use muq_data::ModalityKind;
use serde::{Deserialize, Serialize};

use crate::evaluate::{ProbMetrics, Recalibration, StateMetrics};
use crate::result::{RunResult, read_result, write_atomic, write_json};
use muq_calibrate::Method;

/// Version of the `summary.json` layout.
pub const REPORT_SCHEMA: u32 = 1;

/// The state the original's table reports: the model after first-order
/// unlearning.
pub const HEADLINE_STATE: &str = "first_order";

/// The state before unlearning.
pub const ORIGINAL_STATE: &str = "original";

/// The gold-standard state every method is compared with.
pub const RETRAIN_STATE: &str = "retrain";

/// Arguments of `muq report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Directory searched recursively for `result.json` files (e.g. the
    /// `--out` of `muq sweep`).
    #[arg(value_name = "RESULTS_DIR")]
    pub results_dir: PathBuf,
    /// Where to write summary.md, summary.csv, summary.json and figures/
    /// (default: RESULTS_DIR).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Runs `muq report`: writes the report and prints what it wrote.
pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(|| args.results_dir.clone());
    let written = write_report(&args.results_dir, &out)?;
    crate::stdout::println(&format!(
        "muq report: {} runs in {} group(s) → {} ({} figure files under {})",
        written.runs,
        written.groups,
        out.join("summary.md").display(),
        written.figures.len(),
        out.join("figures").display()
    ))
}

/// What [`write_report`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// Runs summarised.
    pub runs: usize,
    /// Configuration groups.
    pub groups: usize,
    /// `summary.md`, `summary.csv` and `summary.json`.
    pub summaries: Vec<PathBuf>,
    /// Every PNG and SVG file.
    pub figures: Vec<PathBuf>,
}

/// Reads every result under `results_dir` and writes the report into
/// `out_dir`: `summary.md`, `summary.csv`, `summary.json` and `figures/`.
pub fn write_report(results_dir: &Path, out_dir: &Path) -> anyhow::Result<Written> {
    let runs = load_results(results_dir)?;
    let report = build_report(&runs)?;
    write_outputs(&report, out_dir)
}

/// Writes a built report into `out_dir`: the figures first, then
/// `summary.md`, `summary.csv` and `summary.json`, each atomically.
pub fn write_outputs(report: &Report, out_dir: &Path) -> anyhow::Result<Written> {
    let figures = crate::plot::write_figures(report, out_dir)?;
    let summaries = vec![
        out_dir.join("summary.md"),
        out_dir.join("summary.csv"),
        out_dir.join("summary.json"),
    ];
    write_atomic(&summaries[0], render_markdown(report).as_bytes())?;
    write_atomic(&summaries[1], render_csv(report)?.as_bytes())?;
    write_json(&summaries[2], report)?;
    Ok(Written {
        runs: report.runs,
        groups: report.groups.len(),
        summaries,
        figures,
    })
}

/// One result file as read from disk.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedRun {
    /// The file's path relative to the results directory, `/`-separated.
    pub path: String,
    /// Its contents.
    pub result: RunResult,
}

/// Reads every file named `result.json` under `dir` (recursively, symbolic
/// links not followed), sorted by path.
///
/// # Errors
/// When `dir` is not a directory, holds no `result.json`, or a file cannot be
/// read or parsed (the error names the file).
pub fn load_results(dir: &Path) -> anyhow::Result<Vec<LoadedRun>> {
    if !dir.is_dir() {
        return Err(InvalidInput(format!(
            "results directory {} does not exist or is not a directory: pass the --out folder \
             of `muq sweep` or `muq run`",
            dir.display()
        ))
        .into());
    }
    let mut files = Vec::new();
    find_results(dir, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(InvalidInput(format!(
            "no result.json found under {}: point `muq report` at the --out directory of \
             `muq sweep` or `muq run` (it holds runs/<name>/result.json)",
            dir.display()
        ))
        .into());
    }
    files
        .into_iter()
        .map(|file| {
            let result = read_result(&file)?;
            let rel = file.strip_prefix(dir).unwrap_or(&file);
            let path = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            Ok(LoadedRun { path, result })
        })
        .collect()
}

fn find_results(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let kind = entry
            .file_type()
            .with_context(|| format!("inspecting {}", entry.path().display()))?;
        if kind.is_dir() {
            find_results(&entry.path(), out)?;
        } else if kind.is_file() && entry.file_name() == "result.json" {
            out.push(entry.path());
        }
    }
    Ok(())
}

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

/// A metric the report summarises, read from a state's [`StateMetrics`].
#[derive(Clone, Copy)]
struct MetricDef {
    key: &'static str,
    get: fn(&StateMetrics) -> f64,
}

/// Every metric, in the order of the CSV rows.
const METRICS: &[MetricDef] = &[
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
const RETRAIN_GAP_METRICS: &[&str] = &["ece_after_ts", "brier_after_ts", "accuracy_forget"];

/// The metrics whose absolute gap to `retrain` is reported (paired by seed):
/// SalUn's four, whose mean is its "Avg. Gap", then the calibration gap.
const EFFICACY_GAP_METRICS: [&str; 4] = ["ua", "ra", "ta", "mia_efficacy"];

/// The calibration metrics whose absolute gap to `retrain` is reported.
const CALIBRATION_GAP_METRICS: [&str; 2] = ["ece_after_ts", "brier_after_ts"];

/// The key of the mean of the `EFFICACY_GAP_METRICS` gaps in
/// [`StateReport::gap_to_retrain`] (SalUn's "Avg. Gap").
pub const AVG_GAP: &str = "avg_gap";

/// The metric keys of [`StateReport::metrics`], in CSV order.
pub fn metric_keys() -> Vec<&'static str> {
    METRICS.iter().map(|m| m.key).collect()
}

/// The whole report: what `summary.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Layout version ([`REPORT_SCHEMA`]).
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

/// One row of the original study's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceRow {
    /// `random`, `noise` or `label`.
    pub modality: String,
    /// ECE after temperature scaling.
    pub ece: Reported,
    /// Brier score after temperature scaling.
    pub brier: Reported,
}

/// The original study's numbers (ResNet-18, 3 epochs, 3 runs,
/// `train_on = clean`, `bn = train`, after temperature scaling), as section 8
/// of the spec quotes them.
pub fn reference_table() -> Vec<ReferenceRow> {
    let row = |modality: &str, ece: (f64, f64), brier: (f64, f64)| ReferenceRow {
        modality: modality.to_string(),
        ece: Reported {
            mean: ece.0,
            std: ece.1,
        },
        brier: Reported {
            mean: brier.0,
            std: brier.1,
        },
    };
    vec![
        row("random", (0.0154, 0.0025), (0.4118, 0.0181)),
        row("noise", (0.0184, 0.0003), (0.4268, 0.0263)),
        row("label", (0.0495, 0.0283), (0.6376, 0.0813)),
    ]
}

/// The modalities in table order.
const MODALITIES: [ModalityKind; 4] = ModalityKind::ALL;

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
    /// The state of the original's table: [`HEADLINE_STATE`], or
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

/// The original study's training accuracy after epochs 1, 2, 3, as read off
/// its training log (spec section 8: "about 48% / 68% / 77%").
pub const ORIGINAL_TRAIN_ACCURACY: [f64; 3] = [0.48, 0.68, 0.77];

/// The per-epoch training statistics of the distinct base models among
/// `members`: runs whose seed and training log agree share one cached
/// model and count once.
fn training_rows(members: &[&LoadedRun]) -> Vec<EpochRow> {
    let mut seen = BTreeSet::new();
    let mut logs: Vec<&[muq_resnet::EpochStats]> = Vec::new();
    let mut sorted: Vec<&LoadedRun> = members.to_vec();
    sorted.sort_by(|a, b| a.result.seed.cmp(&b.result.seed).then(a.path.cmp(&b.path)));
    for run in sorted {
        let epochs = &run.result.training.epochs;
        let key: (u64, Vec<(u64, u64)>) = (
            run.result.seed,
            epochs
                .iter()
                .map(|e| (e.loss.to_bits(), e.accuracy.to_bits()))
                .collect(),
        );
        if seen.insert(key) {
            logs.push(epochs);
        }
    }
    let most = logs.iter().map(|l| l.len()).max().unwrap_or(0);
    (0..most)
        .filter_map(|i| {
            let at: Vec<&muq_resnet::EpochStats> = logs.iter().filter_map(|l| l.get(i)).collect();
            let stat = |f: fn(&muq_resnet::EpochStats) -> f64| {
                Stat::of(&at.iter().map(|e| f(e)).collect::<Vec<_>>())
            };
            Some(EpochRow {
                epoch: i + 1,
                loss: stat(|e| e.loss)?,
                accuracy: stat(|e| e.accuracy)?,
                seconds: stat(|e| e.seconds)?,
            })
        })
        .collect()
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
    /// Every metric (keys: [`metric_keys`]).
    pub metrics: BTreeMap<String, Stat>,
    /// This state minus `original`, paired by seed, every metric (empty for
    /// `original` itself or when it is missing).
    pub minus_original: BTreeMap<String, Stat>,
    /// This state minus `retrain`, paired by seed: ECE and Brier after
    /// temperature scaling, forget-set accuracy (empty without `retrain`).
    pub minus_retrain: BTreeMap<String, Stat>,
    /// `|this state − retrain|`, paired by seed, for UA, RA, TA and
    /// MIA-efficacy, their per-seed mean ([`AVG_GAP`], SalUn's "Avg. Gap"),
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
    /// Keys ([`recalibrated_metric_keys`]): `accuracy`, `ece`, `smooth_ece`,
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

/// A metric of [`RecalibratedReport::metrics`], read from one split's
/// [`ProbMetrics`].
type RecalMetricDef = (&'static str, fn(&RecalSplits<'_>) -> f64);

/// The three splits of one recalibrator in one run.
struct RecalSplits<'a> {
    evaluation: &'a ProbMetrics,
    forget: &'a ProbMetrics,
    retain: &'a ProbMetrics,
}

/// Every metric of a [`RecalibratedReport`], in CSV order.
const RECAL_METRICS: &[RecalMetricDef] = &[
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

/// The metric keys of [`RecalibratedReport::metrics`], in CSV order.
pub fn recalibrated_metric_keys() -> Vec<&'static str> {
    RECAL_METRICS.iter().map(|(k, _)| *k).collect()
}

/// One run's recalibrators of one predictor (the model, its ensemble or
/// MC dropout): seed, the recalibration block, and the reliability diagram
/// of the uncalibrated softmax.
type RecalRun<'a> = (u64, &'a Recalibration, &'a ReliabilityDiagram);

/// An ensemble's or MC dropout's recalibrators in one run (absent in
/// results written before they were measured).
fn averaged_run(a: &crate::evaluate::Averaged, seed: u64) -> Option<RecalRun<'_>> {
    Some((
        seed,
        a.recalibration.as_ref()?,
        &a.reliability.as_ref()?.before_ts,
    ))
}

/// The recalibrators of one state over its runs: [`UNCALIBRATED`] first,
/// then every method some run measured.
fn recalibrated_reports(with: &[RecalRun<'_>]) -> anyhow::Result<Vec<RecalibratedReport>> {
    if with.is_empty() {
        return Ok(Vec::new());
    }
    let mut names: Vec<&str> = with
        .iter()
        .flat_map(|(_, r, _)| r.methods.keys().map(String::as_str))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Known methods in their canonical order, any other name after them.
    names.sort_by_key(|n| {
        let rank = Method::ALL
            .iter()
            .position(|m| m.name() == *n)
            .unwrap_or(Method::ALL.len());
        (rank, *n)
    });
    type Entry<'a> = (
        u64,
        RecalSplits<'a>,
        &'a ReliabilityDiagram,
        &'a BTreeMap<String, ConfidenceInterval>,
    );
    let entry = |method: &str, runs: Vec<Entry<'_>>| -> anyhow::Result<RecalibratedReport> {
        let metrics = RECAL_METRICS
            .iter()
            .filter_map(|(key, get)| {
                let xs: Vec<f64> = runs.iter().map(|(_, s, _, _)| get(s)).collect();
                if xs.iter().any(|x| !x.is_finite()) {
                    return None;
                }
                Some(((*key).to_string(), Stat::of(&xs)?))
            })
            .collect();
        let diagrams: Vec<&ReliabilityDiagram> = runs.iter().map(|(_, _, d, _)| *d).collect();
        Ok(RecalibratedReport {
            method: method.to_string(),
            seeds: runs.iter().map(|(seed, _, _, _)| *seed).collect(),
            metrics,
            reliability: pool_reliability(&diagrams)
                .with_context(|| format!("pooling the reliability bins after `{method}`"))?,
            bootstrap: match runs.as_slice() {
                [(_, _, _, ci)] => (*ci).clone(),
                _ => BTreeMap::new(),
            },
        })
    };
    let mut out = vec![entry(
        UNCALIBRATED,
        with.iter()
            .map(|(seed, r, before)| {
                let u = &r.uncalibrated;
                let splits = RecalSplits {
                    evaluation: &u.evaluation,
                    forget: &u.forget,
                    retain: &u.retain,
                };
                (*seed, splits, *before, &r.uncalibrated_bootstrap)
            })
            .collect(),
    )?];
    for name in names {
        let runs = with
            .iter()
            .filter_map(|(seed, r, _)| {
                let m = r.methods.get(name)?;
                let splits = RecalSplits {
                    evaluation: &m.evaluation,
                    forget: &m.forget,
                    retain: &m.retain,
                };
                Some((*seed, splits, &m.reliability, &m.bootstrap))
            })
            .collect();
        out.push(entry(name, runs)?);
    }
    Ok(out)
}

/// Order of states: `original`, the known methods, other names, `retrain`.
pub(crate) fn state_rank(name: &str) -> (u8, &str) {
    let rank = match name {
        ORIGINAL_STATE => 0,
        "first_order" => 1,
        "second_order" => 2,
        "gradient_ascent" => 3,
        "fine_tune" => 4,
        RETRAIN_STATE => 6,
        _ => 5,
    };
    (rank, name)
}

/// A file-name-safe version of a state name.
fn file_safe(name: &str) -> String {
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

fn enum_name<T: Serialize + std::fmt::Debug>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{value:?}"),
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Array(items) => {
            if items.is_empty() {
                out.insert(prefix.to_string(), "[]".to_string());
            }
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// The configuration that defines a run's group, flattened to dotted keys:
/// everything but `seed` and `modality.kind`, with `train.on` replaced by
/// the resolved `train_on`.
pub fn group_config(result: &RunResult) -> anyhow::Result<BTreeMap<String, String>> {
    let mut value = serde_json::to_value(&result.config).context("serialising a run config")?;
    if let Some(root) = value.as_object_mut() {
        root.remove("seed");
        if let Some(m) = root.get_mut("modality").and_then(|m| m.as_object_mut()) {
            m.remove("kind");
        }
        if let Some(t) = root.get_mut("train").and_then(|t| t.as_object_mut()) {
            t.remove("on");
        }
    }
    let mut flat = BTreeMap::new();
    flatten("", &value, &mut flat);
    flat.insert("train_on".to_string(), enum_name(&result.train_on));
    Ok(flat)
}

/// Summarises loaded runs.
///
/// # Errors
/// When two runs of one group share modality and seed (they would be
/// counted twice), or when the reliability bins of one state disagree
/// between runs.
pub fn build_report(runs: &[LoadedRun]) -> anyhow::Result<Report> {
    // Group by the flattened config.
    let mut by_config: BTreeMap<Vec<(String, String)>, Vec<&LoadedRun>> = BTreeMap::new();
    for run in runs {
        let key = group_config(&run.result)?.into_iter().collect();
        by_config.entry(key).or_default().push(run);
    }
    let configs: Vec<BTreeMap<String, String>> = by_config
        .keys()
        .map(|k| k.iter().cloned().collect())
        .collect();
    // Keys whose value differs between groups label them.
    let all_keys: BTreeSet<&String> = configs.iter().flat_map(|c| c.keys()).collect();
    let differing: Vec<&String> = all_keys
        .into_iter()
        .filter(|k| configs.iter().any(|c| c.get(*k) != configs[0].get(*k)))
        .collect();
    let mut labelled: Vec<(String, BTreeMap<String, String>, Vec<&LoadedRun>)> = by_config
        .into_values()
        .zip(configs.iter().cloned())
        .map(|(members, config)| {
            let label = if differing.is_empty() {
                "all runs".to_string()
            } else {
                differing
                    .iter()
                    .map(|k| format!("{k}={}", config.get(*k).map_or("–", String::as_str)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            (label, config, members)
        })
        .collect();
    labelled.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let single = labelled.len() == 1;
    let groups = labelled
        .into_iter()
        .enumerate()
        .map(|(i, (label, config, members))| {
            let id = format!("g{}", i + 1);
            let prefix = if single {
                "figures".to_string()
            } else {
                format!("figures/{id}")
            };
            build_group(id, label, config, &members, &prefix)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Report {
        schema: REPORT_SCHEMA,
        runs: runs.len(),
        reference: reference_table(),
        groups,
    })
}

fn build_group(
    id: String,
    label: String,
    config: BTreeMap<String, String>,
    members: &[&LoadedRun],
    figure_prefix: &str,
) -> anyhow::Result<Group> {
    let first = &members[0].result;
    let n_train: BTreeSet<usize> = members.iter().map(|r| r.result.data.n_train).collect();
    let setup = Setup {
        protocol: enum_name(&first.config.protocol),
        train_on: enum_name(&first.train_on),
        width: first.config.model.width,
        epochs: first.config.train.epochs,
        n_train: n_train.into_iter().collect(),
        methods: first
            .config
            .unlearn
            .iter()
            .map(|m| m.state_name())
            .collect(),
        first_order_bn: first.config.first_order_bn().map(|b| enum_name(&b)),
        compute: {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for r in members {
                let c = &r.result.provenance.compute;
                let c = if c.is_empty() {
                    "unrecorded"
                } else {
                    c.as_str()
                };
                *counts.entry(c.to_string()).or_default() += 1;
            }
            counts.into_iter().collect()
        },
    };
    let has_headline = members
        .iter()
        .any(|r| r.result.state(HEADLINE_STATE).is_some());
    let headline_state = if has_headline {
        HEADLINE_STATE
    } else {
        ORIGINAL_STATE
    };

    let mut modalities = Vec::new();
    for modality in MODALITIES.map(ModalityKind::as_str) {
        let mut runs: Vec<&LoadedRun> = members
            .iter()
            .copied()
            .filter(|r| r.result.config.modality.kind.as_str() == modality)
            .collect();
        if runs.is_empty() {
            continue;
        }
        runs.sort_by(|a, b| a.result.seed.cmp(&b.result.seed).then(a.path.cmp(&b.path)));
        if let Some(w) = runs
            .windows(2)
            .find(|w| w[0].result.seed == w[1].result.seed)
        {
            bail!(
                "{} and {} are both {modality} runs with seed {} and the same config: \
                 remove one (a run must be counted once)",
                w[0].path,
                w[1].path,
                w[0].result.seed
            );
        }
        modalities.push(build_modality(modality, &runs, figure_prefix)?);
    }

    let headline = modalities
        .iter()
        .filter_map(|m| {
            let s = m.states.iter().find(|s| s.state == headline_state)?;
            Some(HeadlineRow {
                modality: m.modality.clone(),
                ece: s.metrics["ece_after_ts"],
                brier: s.metrics["brier_after_ts"],
            })
        })
        .collect();
    Ok(Group {
        id,
        label,
        setup,
        config,
        headline_state: headline_state.to_string(),
        headline,
        training: training_rows(members),
        modalities,
        chart: format!("{figure_prefix}/ece_brier"),
    })
}

fn build_modality(
    modality: &str,
    runs: &[&LoadedRun],
    figure_prefix: &str,
) -> anyhow::Result<ModalityReport> {
    let mut names: Vec<&str> = runs
        .iter()
        .flat_map(|r| r.result.states.iter().map(|s| s.name.as_str()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    names.sort_by_key(|n| state_rank(n));

    // Per state: (seed, metrics) in seed order.
    let per_state = |name: &str| -> Vec<(u64, &StateMetrics)> {
        runs.iter()
            .filter_map(|r| Some((r.result.seed, &r.result.state(name)?.metrics)))
            .collect()
    };
    let paired = |a: &[(u64, &StateMetrics)], b: &[(u64, &StateMetrics)], keys: &[&str]| {
        let mut out = BTreeMap::new();
        for def in METRICS.iter().filter(|d| keys.contains(&d.key)) {
            let diffs: Vec<f64> = a
                .iter()
                .filter_map(|(seed, ma)| {
                    let (_, mb) = b.iter().find(|(s, _)| s == seed)?;
                    Some((def.get)(ma) - (def.get)(mb)).filter(|d| d.is_finite())
                })
                .collect();
            if let Some(stat) = Stat::of(&diffs) {
                out.insert(def.key.to_string(), stat);
            }
        }
        out
    };
    let all_keys = metric_keys();
    let original = per_state(ORIGINAL_STATE);
    let retrain = per_state(RETRAIN_STATE);

    let mut states = Vec::new();
    for name in names {
        let values = per_state(name);
        let metrics = METRICS
            .iter()
            .filter_map(|def| {
                let xs: Vec<f64> = values
                    .iter()
                    .map(|(_, m)| (def.get)(m))
                    .filter(|x| x.is_finite())
                    .collect();
                Some((def.key.to_string(), Stat::of(&xs)?))
            })
            .collect();
        let minus_original = if name == ORIGINAL_STATE {
            BTreeMap::new()
        } else {
            paired(&values, &original, &all_keys)
        };
        let (minus_retrain, gap_to_retrain) = if name == RETRAIN_STATE {
            (BTreeMap::new(), BTreeMap::new())
        } else {
            (
                paired(&values, &retrain, RETRAIN_GAP_METRICS),
                absolute_gaps(&values, &retrain),
            )
        };
        let context = || format!("pooling the reliability bins of {modality} / {name}");
        let before: Vec<&ReliabilityDiagram> = values
            .iter()
            .map(|(_, m)| &m.reliability.before_ts)
            .collect();
        let after: Vec<&ReliabilityDiagram> = values
            .iter()
            .map(|(_, m)| &m.reliability.after_ts)
            .collect();
        let single: Vec<RecalRun<'_>> = values
            .iter()
            .filter_map(|(seed, m)| {
                Some((*seed, m.recalibration.as_ref()?, &m.reliability.before_ts))
            })
            .collect();
        let recalibrated = recalibrated_reports(&single)
            .with_context(|| format!("the recalibrators of {modality} / {name}"))?;
        let ensemble_runs: Vec<RecalRun<'_>> = values
            .iter()
            .filter_map(|(seed, m)| averaged_run(&m.ensemble.as_ref()?.metrics, *seed))
            .collect();
        let ensemble = recalibrated_reports(&ensemble_runs)
            .with_context(|| format!("the ensemble of {modality} / {name}"))?;
        let mc_runs: Vec<RecalRun<'_>> = values
            .iter()
            .filter_map(|(seed, m)| averaged_run(&m.mc_dropout.as_ref()?.metrics, *seed))
            .collect();
        let mc_dropout = recalibrated_reports(&mc_runs)
            .with_context(|| format!("MC dropout of {modality} / {name}"))?;
        let mut ensemble_members: Vec<usize> = values
            .iter()
            .filter_map(|(_, m)| Some(m.ensemble.as_ref()?.seeds.len()))
            .collect();
        ensemble_members.sort_unstable();
        ensemble_members.dedup();
        let recalibrated_figure = (!recalibrated.is_empty()).then(|| {
            format!(
                "{figure_prefix}/recalibrated-{modality}-{}",
                file_safe(name)
            )
        });
        states.push(StateReport {
            state: name.to_string(),
            seeds: values.iter().map(|(s, _)| *s).collect(),
            metrics,
            minus_original,
            minus_retrain,
            gap_to_retrain,
            reliability_before_ts: pool_reliability(&before).with_context(context)?,
            reliability_after_ts: pool_reliability(&after).with_context(context)?,
            figure: format!("{figure_prefix}/reliability-{modality}-{}", file_safe(name)),
            recalibrated,
            recalibrated_figure,
            ensemble,
            ensemble_members,
            mc_dropout,
        });
    }
    Ok(ModalityReport {
        modality: modality.to_string(),
        runs: runs
            .iter()
            .map(|r| RunRef {
                seed: r.result.seed,
                run_id: r.result.run_id.clone(),
                path: r.path.clone(),
            })
            .collect(),
        states,
        failed: runs
            .iter()
            .flat_map(|r| {
                r.result.failed.iter().map(|f| FailedRef {
                    state: f.name.clone(),
                    seed: r.result.seed,
                    error: f.error.clone(),
                })
            })
            .collect(),
    })
}

/// `|a − b|` per metric paired by seed (a metric a seed lacks in either is
/// skipped), and per seed the mean of the four efficacy gaps when all four
/// are there ([`AVG_GAP`]); then mean ± std over seeds.
fn absolute_gaps(a: &[(u64, &StateMetrics)], b: &[(u64, &StateMetrics)]) -> BTreeMap<String, Stat> {
    let get = |m: &StateMetrics, key: &str| {
        METRICS
            .iter()
            .find(|d| d.key == key)
            .map_or(f64::NAN, |d| (d.get)(m))
    };
    let mut per_key: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (seed, ma) in a {
        let Some((_, mb)) = b.iter().find(|(s, _)| s == seed) else {
            continue;
        };
        let gap = |key: &str| (get(ma, key) - get(mb, key)).abs();
        for key in EFFICACY_GAP_METRICS.iter().chain(&CALIBRATION_GAP_METRICS) {
            let g = gap(key);
            if g.is_finite() {
                per_key.entry((*key).to_string()).or_default().push(g);
            }
        }
        let four: Vec<f64> = EFFICACY_GAP_METRICS.iter().map(|k| gap(k)).collect();
        if four.iter().all(|g| g.is_finite()) {
            let mean = four.iter().sum::<f64>() / four.len() as f64;
            per_key.entry(AVG_GAP.to_string()).or_default().push(mean);
        }
    }
    per_key
        .into_iter()
        .filter_map(|(k, xs)| Some((k, Stat::of(&xs)?)))
        .collect()
}

/// Pools reliability diagrams with the same bins: counts summed, mean
/// confidence and accuracy weighted by count.
///
/// # Errors
/// When the diagrams' bin edges differ.
pub fn pool_reliability(diagrams: &[&ReliabilityDiagram]) -> anyhow::Result<ReliabilityDiagram> {
    let Some(first) = diagrams.first() else {
        return Ok(ReliabilityDiagram {
            bins: Vec::new(),
            n: 0,
            saturated: 0,
        });
    };
    for d in diagrams {
        let same = d.bins.len() == first.bins.len()
            && d.bins
                .iter()
                .zip(&first.bins)
                .all(|(a, b)| a.lower == b.lower && a.upper == b.upper);
        if !same {
            bail!("the runs' reliability diagrams have different bins");
        }
    }
    let bins = first
        .bins
        .iter()
        .enumerate()
        .map(|(i, edges)| {
            let mut count = 0;
            let (mut conf, mut acc, mut weight) = (0.0, 0.0, 0.0);
            for d in diagrams {
                let b = &d.bins[i];
                count += b.count;
                if let (Some(c), Some(a)) = (b.mean_confidence, b.accuracy)
                    && b.count > 0
                {
                    let w = b.count as f64;
                    conf += w * c;
                    acc += w * a;
                    weight += w;
                }
            }
            let has = weight > 0.0;
            ReliabilityBin {
                lower: edges.lower,
                upper: edges.upper,
                count,
                mean_confidence: has.then(|| conf / weight),
                accuracy: has.then(|| acc / weight),
            }
        })
        .collect();
    Ok(ReliabilityDiagram {
        bins,
        n: diagrams.iter().map(|d| d.n).sum(),
        saturated: diagrams.iter().map(|d| d.saturated).sum(),
    })
}

/// `x` with 4 decimals, never `-0.0000`.
fn f4(x: f64) -> String {
    let s = format!("{x:.4}");
    if s == "-0.0000" {
        "0.0000".to_string()
    } else {
        s
    }
}

/// A signed difference with 4 decimals (`+0.0123`, `-0.0040`, `0.0000`).
fn d4(x: f64) -> String {
    let s = format!("{x:+.4}");
    if s == "-0.0000" || s == "+0.0000" {
        "0.0000".to_string()
    } else {
        s
    }
}

fn pm(s: &Stat) -> String {
    format!("{} ± {}", f4(s.mean), f4(s.std))
}

fn dpm(s: &Stat) -> String {
    format!("{} ± {}", d4(s.mean), f4(s.std))
}

fn cell(map: &BTreeMap<String, Stat>, key: &str) -> String {
    map.get(key).map_or_else(|| "–".to_string(), pm)
}

fn dcell(map: &BTreeMap<String, Stat>, key: &str) -> String {
    map.get(key).map_or_else(|| "–".to_string(), dpm)
}

fn before_after(map: &BTreeMap<String, Stat>, metric: &str) -> String {
    format!(
        "{} → {}",
        cell(map, &format!("{metric}_before_ts")),
        cell(map, &format!("{metric}_after_ts"))
    )
}

fn seeds_text(seeds: &[u64]) -> String {
    seeds
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `summary.md`: the original's table, the extended view and the figures of
/// every group.
pub fn render_markdown(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# muq report\n");
    let _ = writeln!(
        w,
        "{} runs in {} configuration group(s). Every number is `mean ± std` over seeds, the std \
         being the population standard deviation (ddof = 0). TS = temperature scaling, its \
         temperature T fitted per state on the calibration half; ECE, Brier and NLL are on the \
         evaluation half. Differences between states are paired by seed.\n",
        report.runs,
        report.groups.len()
    );
    if report.groups.len() > 1 {
        let _ = writeln!(
            w,
            "The runs differ in more than modality and seed, so each configuration has its own \
             tables; numbers are never averaged across configurations.\n"
        );
    }
    for g in &report.groups {
        render_group(w, report, g);
    }
    md
}

fn render_group(w: &mut String, report: &Report, g: &Group) {
    use std::fmt::Write as _;
    if report.groups.len() > 1 {
        let _ = writeln!(w, "## Group {}: {}\n", g.id, g.label);
    } else {
        let _ = writeln!(w, "## Runs\n");
    }
    let s = &g.setup;
    let n_train = s
        .n_train
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" / ");
    let methods = s
        .methods
        .iter()
        .map(|m| format!("`{m}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let bn = s
        .first_order_bn
        .as_ref()
        .map_or_else(String::new, |b| format!(" · first-order `bn = {b}`"));
    let compute = s
        .compute
        .iter()
        .map(|(c, n)| format!("`{c}` ({n} runs)"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        w,
        "Setup: protocol `{}` · `train_on = {}` · width {} · {} epochs · {} training images · \
         methods {}{} · computed with {}.\n",
        s.protocol, s.train_on, s.width, s.epochs, n_train, methods, bn, compute
    );
    for m in &g.modalities {
        let seeds: Vec<u64> = m.runs.iter().map(|r| r.seed).collect();
        let _ = writeln!(
            w,
            "- {}: {} runs, seeds {}",
            modality_title(&m.modality),
            m.runs.len(),
            seeds_text(&seeds)
        );
    }
    let _ = writeln!(w);

    if !g.training.is_empty() {
        let models = g.training[0].accuracy.n;
        let _ = writeln!(w, "### Base-model training\n");
        let _ = writeln!(
            w,
            "Per epoch, over the group's {models} distinct base model(s) (runs that share a \
             cached model count once): training-mode loss and accuracy and wall time, beside the \
             training accuracy the original study's log shows (approximate).\n"
        );
        let _ = writeln!(
            w,
            "| epoch | models | loss | training accuracy | seconds | original study's training accuracy |"
        );
        let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|");
        for row in &g.training {
            let reference = ORIGINAL_TRAIN_ACCURACY
                .get(row.epoch - 1)
                .map_or_else(|| "–".to_string(), |a| format!("≈ {a:.2}"));
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {:.0} ± {:.0} | {} |",
                row.epoch,
                row.accuracy.n,
                pm(&row.loss),
                pm(&row.accuracy),
                row.seconds.mean,
                row.seconds.std,
                reference
            );
        }
        let _ = writeln!(w);
    }

    // The original's table.
    let _ = writeln!(w, "### The original's table\n");
    if g.headline_state == HEADLINE_STATE {
        let _ = writeln!(
            w,
            "State `{HEADLINE_STATE}` (after first-order unlearning), ECE and Brier after \
             temperature scaling, beside the original study's numbers.\n"
        );
    } else {
        let _ = writeln!(
            w,
            "No run in this group has a `{HEADLINE_STATE}` state, so this table shows the \
             `{}` state (before unlearning), ECE and Brier after temperature scaling, beside \
             the original study's numbers (which are after first-order unlearning).\n",
            g.headline_state
        );
    }
    let _ = writeln!(
        w,
        "| modality | runs | ECE | Brier | original study's ECE | original study's Brier |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|");
    for row in &g.headline {
        let reference = report.reference.iter().find(|r| r.modality == row.modality);
        let (re, rb) = reference.map_or_else(
            || ("–".to_string(), "–".to_string()),
            |r| {
                (
                    format!("{} ± {}", f4(r.ece.mean), f4(r.ece.std)),
                    format!("{} ± {}", f4(r.brier.mean), f4(r.brier.std)),
                )
            },
        );
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            modality_title(&row.modality),
            row.ece.n,
            pm(&row.ece),
            pm(&row.brier),
            re,
            rb
        );
    }
    let _ = writeln!(
        w,
        "\nThe original study's columns are copied from its ResNet-18 notebook (spec section 8: \
         3 epochs, 3 runs, `train_on = clean`, first-order `bn = train`, after temperature \
         scaling); they are not computed from these runs.\n"
    );

    // Extended view.
    let _ = writeln!(w, "### Extended view\n");
    let _ = writeln!(
        w,
        "Accuracy on the evaluation half, the forget set and the retain sample; ECE, Brier and \
         NLL on the evaluation half before → after TS; adaptive (equal-mass) ECE after TS; the \
         fitted temperature T.\n"
    );
    for m in &g.modalities {
        let _ = writeln!(
            w,
            "#### {} ({} runs)\n",
            modality_title(&m.modality),
            m.runs.len()
        );
        let _ = writeln!(
            w,
            "| state | runs | acc. evaluation | acc. forget | acc. retain | ECE before → after TS \
             | Brier before → after TS | NLL before → after TS | adaptive ECE after TS | T |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for st in &m.states {
            let x = &st.metrics;
            let _ = writeln!(
                w,
                "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                st.state,
                st.seeds.len(),
                cell(x, "accuracy_evaluation"),
                cell(x, "accuracy_forget"),
                cell(x, "accuracy_retain"),
                before_after(x, "ece"),
                before_after(x, "brier"),
                before_after(x, "nll"),
                cell(x, "adaptive_ece_after_ts"),
                cell(x, "temperature"),
            );
        }
        let _ = writeln!(w);
        for f in &m.failed {
            let _ = writeln!(
                w,
                "- `{}` failed in the run with seed {} and is left out: {}",
                f.state,
                f.seed,
                f.error.lines().next().unwrap_or_default()
            );
        }
        if !m.failed.is_empty() {
            let _ = writeln!(w);
        }
    }

    // Change from original.
    let changes: Vec<(&ModalityReport, &StateReport)> = g
        .modalities
        .iter()
        .flat_map(|m| m.states.iter().map(move |s| (m, s)))
        .filter(|(_, s)| !s.minus_original.is_empty())
        .collect();
    if !changes.is_empty() {
        let _ = writeln!(
            w,
            "### Change from `{ORIGINAL_STATE}`\n\nEach state minus `{ORIGINAL_STATE}` of the \
             same run, then mean ± std over seeds.\n"
        );
        let _ = writeln!(
            w,
            "| modality | state | pairs | Δ acc. evaluation | Δ acc. forget | Δ acc. retain | \
             Δ ECE after TS | Δ Brier after TS | Δ NLL after TS | Δ T |"
        );
        let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (m, s) in changes {
            let x = &s.minus_original;
            let _ = writeln!(
                w,
                "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
                modality_title(&m.modality),
                s.state,
                x.get("ece_after_ts").map_or(0, |s| s.n),
                dcell(x, "accuracy_evaluation"),
                dcell(x, "accuracy_forget"),
                dcell(x, "accuracy_retain"),
                dcell(x, "ece_after_ts"),
                dcell(x, "brier_after_ts"),
                dcell(x, "nll_after_ts"),
                dcell(x, "temperature"),
            );
        }
        let _ = writeln!(w);
    }

    // Gap to retrain.
    let gaps: Vec<(&ModalityReport, &StateReport)> = g
        .modalities
        .iter()
        .flat_map(|m| m.states.iter().map(move |s| (m, s)))
        .filter(|(_, s)| !s.minus_retrain.is_empty())
        .collect();
    if !gaps.is_empty() {
        let _ = writeln!(
            w,
            "### Gap to `{RETRAIN_STATE}`\n\nEach state minus `{RETRAIN_STATE}` (the gold \
             standard) of the same run, then mean ± std over seeds: 0 means the method behaves \
             like retraining from scratch.\n"
        );
        let _ = writeln!(
            w,
            "| modality | state | pairs | ECE after TS | Brier after TS | acc. forget |"
        );
        let _ = writeln!(w, "|---|---|---:|---:|---:|---:|");
        for (m, s) in gaps {
            let x = &s.minus_retrain;
            let _ = writeln!(
                w,
                "| {} | `{}` | {} | {} | {} | {} |",
                modality_title(&m.modality),
                s.state,
                x.get("ece_after_ts").map_or(0, |s| s.n),
                dcell(x, "ece_after_ts"),
                dcell(x, "brier_after_ts"),
                dcell(x, "accuracy_forget"),
            );
        }
        let _ = writeln!(w);
    }

    render_efficacy(w, g);
    render_recalibrated(w, g);
    render_baselines(w, g);

    // Figures.
    let _ = writeln!(w, "### Figures\n");
    let _ = writeln!(
        w,
        "ECE and Brier after TS per modality and state (error bars: ± std over seeds; \
         [SVG]({0}.svg)):\n\n![ECE and Brier after temperature scaling]({0}.png)\n",
        g.chart
    );
    let _ = writeln!(
        w,
        "Reliability diagrams of the evaluation half, bins pooled over seeds (counts summed, \
         confidence and accuracy count-weighted), before and after TS. Each title links its \
         SVG.\n"
    );
    for m in &g.modalities {
        let _ = writeln!(w, "#### {}\n", modality_title(&m.modality));
        for st in &m.states {
            let _ = writeln!(
                w,
                "[`{1}`]({0}.svg)\n\n![reliability diagram: {2}, {1}]({0}.png)\n",
                st.figure,
                st.state,
                modality_title(&m.modality)
            );
        }
    }
    if has_recalibrators(g) {
        let _ = writeln!(
            w,
            "Reliability diagrams of the evaluation half after each recalibrator, one panel \
             per recalibrator (the first: uncalibrated), bins pooled over seeds. Each title \
             links its SVG.\n"
        );
        for m in &g.modalities {
            for st in &m.states {
                if let Some(fig) = &st.recalibrated_figure {
                    let _ = writeln!(
                        w,
                        "[{2}, `{1}`, after each recalibrator]({0}.svg)\n\n\
                         ![reliability diagrams after each recalibrator: {2}, {1}]({0}.png)\n",
                        fig,
                        st.state,
                        modality_title(&m.modality)
                    );
                }
            }
        }
    }
}

/// Whether some state of the group has recalibrators.
fn has_recalibrators(g: &Group) -> bool {
    g.modalities
        .iter()
        .flat_map(|m| &m.states)
        .any(|s| !s.recalibrated.is_empty())
}

/// `estimate [lower, upper]` of the bootstrap interval `key`, or `–`.
fn ci_cell(cis: &BTreeMap<String, ConfidenceInterval>, key: &str) -> String {
    cis.get(key).map_or_else(
        || "–".to_string(),
        |c| format!("{} [{}, {}]", d4(c.estimate), d4(c.lower), d4(c.upper)),
    )
}

/// Whether some entry of some state carries bootstrap intervals.
fn has_intervals<'a>(entries: impl IntoIterator<Item = &'a RecalibratedReport>) -> bool {
    entries.into_iter().any(|r| !r.bootstrap.is_empty())
}

/// The rows of one predictor's recalibrators in a state: `predictor` is
/// the table's predictor column, if it has one.
fn recal_rows(
    w: &mut String,
    state: &str,
    predictor: Option<&str>,
    entries: &[RecalibratedReport],
    intervals: bool,
) {
    use std::fmt::Write as _;
    for r in entries {
        let name = if r.method == UNCALIBRATED {
            r.method.clone()
        } else {
            format!("`{}`", r.method)
        };
        let x = &r.metrics;
        let _ = write!(w, "| `{state}` |");
        if let Some(p) = predictor {
            let _ = write!(w, " {p} |");
        }
        let _ = write!(
            w,
            " {} | {} | {} | {} | {} | {} |",
            name,
            r.seeds.len(),
            cell(x, "accuracy"),
            cell(x, "ece"),
            cell(x, "smooth_ece"),
            cell(x, "brier"),
        );
        if intervals {
            let _ = write!(
                w,
                " {} | {} |",
                ci_cell(&r.bootstrap, "ece_minus_ts"),
                ci_cell(&r.bootstrap, "brier_minus_ts")
            );
        }
        let _ = writeln!(w);
    }
}

/// The header of a recalibrator table (with a predictor column or not,
/// with the bootstrap columns or not).
fn recal_header(w: &mut String, predictor: bool, intervals: bool) {
    use std::fmt::Write as _;
    let (p, pa) = if predictor {
        (" predictor |", "---|")
    } else {
        ("", "")
    };
    let (c, ca) = if intervals {
        (
            " ECE − `ts` [95 % CI] | Brier − `ts` [95 % CI] |",
            "---:|---:|",
        )
    } else {
        ("", "")
    };
    let _ = writeln!(
        w,
        "| state |{p} recalibrator | runs | accuracy | ECE | smooth ECE | Brier |{c}"
    );
    let _ = writeln!(w, "|---|{pa}---|---:|---:|---:|---:|---:|{ca}");
}

const INTERVALS_NOTE: &str = "With `eval.bootstrap` and one run per row, the last columns give \
    the paired bootstrap difference to temperature scaling on the evaluation half (the same \
    resamples for both; percentile 95 % interval): an interval below 0 means the recalibrator \
    beats temperature scaling beyond the evaluation half's sampling noise, one that holds 0 \
    means no difference is shown.";

/// The table "ECE / smooth ECE / Brier after each recalibrator", per
/// modality and state; nothing when no run has recalibrators.
fn render_recalibrated(w: &mut String, g: &Group) {
    use std::fmt::Write as _;
    if !has_recalibrators(g) {
        return;
    }
    let intervals = has_intervals(
        g.modalities
            .iter()
            .flat_map(|m| &m.states)
            .flat_map(|s| &s.recalibrated),
    );
    let _ = writeln!(
        w,
        "### ECE / smooth ECE / Brier after each recalibrator\n\nEach recalibrator of \
         `eval.recalibrators` is fitted per state on the calibration half and measured on the \
         evaluation half; `uncalibrated` is the softmax itself, `ts` temperature scaling \
         through the same interface. Smooth ECE: Błasiok & Nakkiran's kernel estimate with \
         relplot's bandwidth; ECE on the configured equal-width bins. The top-label methods \
         (`hist`, `iso`, `platt`, `sb`) keep every prediction, so their accuracy is the \
         uncalibrated one. `summary.csv` and `summary.json` also hold the debiased L2 \
         calibration error, the NLL and the forget-set and retain-sample numbers.{}\n",
        if intervals {
            format!(" {INTERVALS_NOTE}")
        } else {
            String::new()
        }
    );
    for m in &g.modalities {
        if m.states.iter().all(|s| s.recalibrated.is_empty()) {
            continue;
        }
        let _ = writeln!(
            w,
            "#### {} ({} runs)\n",
            modality_title(&m.modality),
            m.runs.len()
        );
        recal_header(w, false, intervals);
        for st in &m.states {
            recal_rows(w, &st.state, None, &st.recalibrated, intervals);
        }
        let _ = writeln!(w);
    }
}

/// The table of the uncertainty baselines — deep ensemble and MC dropout —
/// per modality and state, before and after each recalibrator, beside the
/// single model; nothing when no run has either.
fn render_baselines(w: &mut String, g: &Group) {
    use std::fmt::Write as _;
    let states = || g.modalities.iter().flat_map(|m| &m.states);
    if states().all(|s| s.ensemble.is_empty() && s.mc_dropout.is_empty()) {
        return;
    }
    let intervals = has_intervals(states().flat_map(|s| {
        s.recalibrated
            .iter()
            .chain(&s.ensemble)
            .chain(&s.mc_dropout)
    }));
    let _ = writeln!(
        w,
        "### Uncertainty baselines: deep ensemble and MC dropout\n\n\
         Per state, the single model beside the deep ensemble (`eval.ensemble`: the mean softmax \
         of members trained with seeds seed, seed + 1, … on the same data and each unlearned by \
         the same method on the same forget set) and MC dropout (`eval.mc_dropout_passes`: the \
         mean softmax of stochastic passes), each before (`uncalibrated`) and after every \
         recalibrator, fitted on the calibration half and measured on the evaluation half.{}\n",
        if intervals {
            format!(" {INTERVALS_NOTE}")
        } else {
            String::new()
        }
    );
    for m in &g.modalities {
        if m.states
            .iter()
            .all(|s| s.ensemble.is_empty() && s.mc_dropout.is_empty())
        {
            continue;
        }
        let _ = writeln!(
            w,
            "#### {} ({} runs)\n",
            modality_title(&m.modality),
            m.runs.len()
        );
        recal_header(w, true, intervals);
        for st in &m.states {
            let members = st
                .ensemble_members
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("/");
            let ensemble = format!("ensemble of {members}");
            recal_rows(w, &st.state, Some("model"), &st.recalibrated, intervals);
            recal_rows(w, &st.state, Some(&ensemble), &st.ensemble, intervals);
            recal_rows(w, &st.state, Some("MC dropout"), &st.mc_dropout, intervals);
        }
        let _ = writeln!(w);
    }
}

/// The unlearning-efficacy tables: the field's UA / RA / TA / MIA-efficacy
/// beside the gaps to retrain, and calibration on the forget and retain
/// splits.
fn render_efficacy(w: &mut String, g: &Group) {
    use std::fmt::Write as _;
    let _ = writeln!(
        w,
        "### Unlearning efficacy\n\nThe field's measures (SalUn's names): UA = 1 − accuracy on \
         the forget set, RA = accuracy on the retain sample, TA = accuracy on the evaluation half \
         (under class-wise forgetting: on the remaining classes), MIA-efficacy = the fraction of \
         the forget set an RBF-SVC membership attack on the `{DEFAULT_MIA_FEATURE}` feature \
         calls non-member (trained on retain sample vs evaluation half), loss AUC = ROC AUC of \
         per-sample loss, forget set vs an equal-size evaluation sample (0.5 = \
         indistinguishable). Gaps are `|state − retrain|` paired by seed; Avg. Gap is their \
         mean over UA, RA, TA and MIA-efficacy; the calibration gaps are of ECE and Brier after \
         TS. A method forgets well when its gaps are near 0. – = not measured.\n"
    );
    for m in &g.modalities {
        let _ = writeln!(
            w,
            "#### {} ({} runs)\n",
            modality_title(&m.modality),
            m.runs.len()
        );
        if m.modality == ModalityKind::Class.as_str() {
            let _ = writeln!(
                w,
                "Class-wise forgetting: UA is on the forgotten class's training images; TA, \
                 the temperature and every calibration metric are on the remaining classes' \
                 test images, which is what matters once a class is gone.\n"
            );
        }
        let _ = writeln!(
            w,
            "| state | runs | UA | RA | TA | MIA-efficacy | loss AUC | Avg. Gap | ECE gap | \
             Brier gap |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for st in &m.states {
            let (x, gap) = (&st.metrics, &st.gap_to_retrain);
            let _ = writeln!(
                w,
                "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                st.state,
                st.seeds.len(),
                cell(x, "ua"),
                cell(x, "ra"),
                cell(x, "ta"),
                cell(x, "mia_efficacy"),
                cell(x, "loss_auc"),
                cell(gap, AVG_GAP),
                cell(gap, "ece_after_ts"),
                cell(gap, "brier_after_ts"),
            );
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(
        w,
        "Calibration on the forget set and the retain sample, after TS (temperature from the \
         calibration half):\n"
    );
    let _ = writeln!(
        w,
        "| modality | state | ECE forget | Brier forget | ECE retain | Brier retain |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|");
    for m in &g.modalities {
        for st in &m.states {
            let x = &st.metrics;
            let _ = writeln!(
                w,
                "| {} | `{}` | {} | {} | {} | {} |",
                modality_title(&m.modality),
                st.state,
                cell(x, "ece_forget_after_ts"),
                cell(x, "brier_forget_after_ts"),
                cell(x, "ece_retain_after_ts"),
                cell(x, "brier_retain_after_ts"),
            );
        }
    }
    let _ = writeln!(w);
}

/// The CSV header of `summary.csv`.
pub const CSV_HEADER: [&str; 9] = [
    "group",
    "group_label",
    "modality",
    "state",
    "quantity",
    "metric",
    "mean",
    "std",
    "n",
];

/// The `quantity` column of [`render_csv`]'s rows for one entry of
/// [`StateReport::recalibrated`]: `uncalibrated`, or `after_<method>`
/// (`after_ts`, `after_iso`, …).
pub fn recalibrated_quantity(method: &str) -> String {
    if method == UNCALIBRATED {
        UNCALIBRATED.to_string()
    } else {
        format!("after_{method}")
    }
}

/// `summary.csv`: one row per group, modality, state, quantity and metric.
/// `quantity` is `value` (the metric itself), `minus_original` or
/// `minus_retrain` (paired differences) or `gap_to_retrain` (paired
/// absolute differences, with the metric `avg_gap`); with recalibrators
/// also `uncalibrated` and `after_<method>` (see
/// [`recalibrated_quantity`]), and with a deep ensemble or MC dropout the
/// same prefixed `ensemble_` or `mc_dropout_`, with the metrics of
/// [`recalibrated_metric_keys`]. Floats are written in the shortest
/// form that reads back to the same `f64`.
pub fn render_csv(report: &Report) -> anyhow::Result<String> {
    let mut wtr = csv::Writer::from_writer(Vec::new());
    wtr.write_record(CSV_HEADER)?;
    for g in &report.groups {
        for m in &g.modalities {
            for s in &m.states {
                let quantities = [
                    ("value", &s.metrics),
                    ("minus_original", &s.minus_original),
                    ("minus_retrain", &s.minus_retrain),
                    ("gap_to_retrain", &s.gap_to_retrain),
                ];
                for (quantity, map) in quantities {
                    for key in metric_keys().into_iter().chain([AVG_GAP]) {
                        if let Some(stat) = map.get(key) {
                            wtr.write_record([
                                g.id.as_str(),
                                g.label.as_str(),
                                m.modality.as_str(),
                                s.state.as_str(),
                                quantity,
                                key,
                                &stat.mean.to_string(),
                                &stat.std.to_string(),
                                &stat.n.to_string(),
                            ])?;
                        }
                    }
                }
                let predictors = [
                    ("", &s.recalibrated),
                    ("ensemble_", &s.ensemble),
                    ("mc_dropout_", &s.mc_dropout),
                ];
                for (prefix, r) in predictors
                    .iter()
                    .flat_map(|(p, rs)| rs.iter().map(move |r| (*p, r)))
                {
                    let quantity = format!("{prefix}{}", recalibrated_quantity(&r.method));
                    for key in recalibrated_metric_keys() {
                        if let Some(stat) = r.metrics.get(key) {
                            wtr.write_record([
                                g.id.as_str(),
                                g.label.as_str(),
                                m.modality.as_str(),
                                s.state.as_str(),
                                quantity.as_str(),
                                key,
                                &stat.mean.to_string(),
                                &stat.std.to_string(),
                                &stat.n.to_string(),
                            ])?;
                        }
                    }
                }
            }
        }
    }
    let bytes = wtr.into_inner().context("writing summary.csv")?;
    Ok(String::from_utf8(bytes)?)
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
    fn fixed_formatting_has_no_negative_zero() {
        assert_eq!(f4(-0.000_01), "0.0000");
        assert_eq!(f4(0.015_44), "0.0154");
        assert_eq!(d4(-0.000_01), "0.0000");
        assert_eq!(d4(0.012_34), "+0.0123");
        assert_eq!(d4(-0.004), "-0.0040");
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

    #[test]
    fn flatten_names_nested_fields_and_list_items() {
        let v = serde_json::json!({"a": {"b": 1, "c": "x"}, "l": [{"m": true}], "e": []});
        let mut out = BTreeMap::new();
        flatten("", &v, &mut out);
        let got: Vec<(&str, &str)> = out.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [("a.b", "1"), ("a.c", "x"), ("e", "[]"), ("l[0].m", "true")]
        );
    }

    #[test]
    fn pooling_weights_by_count() {
        let bin = |count, conf: Option<f64>, acc: Option<f64>| ReliabilityBin {
            lower: 0.5,
            upper: 1.0,
            count,
            mean_confidence: conf,
            accuracy: acc,
        };
        let a = ReliabilityDiagram {
            bins: vec![bin(1, Some(0.6), Some(1.0))],
            n: 1,
            saturated: 0,
        };
        let b = ReliabilityDiagram {
            bins: vec![bin(3, Some(0.8), Some(0.0))],
            n: 3,
            saturated: 1,
        };
        let empty = ReliabilityDiagram {
            bins: vec![bin(0, None, None)],
            n: 0,
            saturated: 0,
        };
        let p = pool_reliability(&[&a, &b, &empty]).unwrap();
        // confidence (1·0.6 + 3·0.8) / 4 = 0.75; accuracy (1·1 + 3·0) / 4 = 0.25.
        assert_eq!(p.bins[0].count, 4);
        assert!((p.bins[0].mean_confidence.unwrap() - 0.75).abs() < 1e-15);
        assert!((p.bins[0].accuracy.unwrap() - 0.25).abs() < 1e-15);
        assert_eq!((p.n, p.saturated), (4, 1));
        let e = pool_reliability(&[&empty]).unwrap();
        assert_eq!(e.bins[0].accuracy, None);
        let other = ReliabilityDiagram {
            bins: vec![ReliabilityBin {
                lower: 0.0,
                ..bin(1, Some(0.5), Some(0.5))
            }],
            n: 1,
            saturated: 0,
        };
        assert!(pool_reliability(&[&a, &other]).is_err());
    }
}
