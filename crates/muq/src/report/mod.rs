//! The report: a directory of run results summarised as the study's tables
//! and figures (`muq report`, and the end of `muq sweep`).
//!
//! Three layers, each depending only on the one before: [`load_results`]
//! reads the files; [`build_report`] turns them into a [`Report`], a plain
//! serialisable data model; [`render_markdown`], [`render_csv`] and
//! [`write_figures`] render that model and nothing else.
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
//! numbers, structured as [`Report`]), plus the figures of [`write_figures`]
//! under `figures/`. The same inputs give byte-identical files: everything is
//! sorted, floats are formatted deterministically and nothing records the
//! time.

use std::path::{Path, PathBuf};

use crate::result::{write_atomic, write_json};

mod build;
mod csv;
mod figures;
mod format;
mod load;
mod markdown;
mod model;
mod reference;
mod registry;

pub use build::{build_report, group_config, pool_reliability};
pub use csv::{CSV_HEADER, recalibrated_quantity, render_csv};
pub use figures::write_figures;
pub use load::{LoadedRun, load_results};
pub use markdown::render_markdown;
pub use model::{
    EpochRow, FailedRef, Group, HeadlineRow, ModalityReport, RecalibratedReport, Report, Reported,
    RunRef, Setup, Stat, StateReport, UNCALIBRATED, modality_title,
};
pub use reference::{ORIGINAL_TRAIN_ACCURACY, ReferenceRow, reference_table};
pub use registry::{AVG_GAP, DEFAULT_MIA_FEATURE, metric_keys, recalibrated_metric_keys};

/// Version of the `summary.json` layout.
pub const REPORT_SCHEMA: u32 = 1;

/// The state the original's table reports: the model after first-order
/// unlearning.
pub const HEADLINE_STATE: &str = muq_unlearn::Method::FIRST_ORDER;

pub use crate::result::ORIGINAL_STATE;

/// The gold-standard state every method is compared with.
pub const RETRAIN_STATE: &str = muq_unlearn::Method::RETRAIN;

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
    let figures = write_figures(report, out_dir)?;
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
