//! `muq metrics`: calibration metrics of saved logits, before and after
//! temperature scaling — and after any other recalibrator asked for with
//! `--recalibrate`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use muq_calibrate::{
    CalibError, L2CeConfig, Logits, Method, MetricSet, Predictions, RecalibrationConfig, Summary,
    TemperatureFit, fit_temperature, l2_calibration_error, smooth_ece, summarize,
};
use serde::Serialize;

use crate::evaluate::{FitDiagnostics, ProbMetrics, fit_with_diagnostics};
use crate::exit::InvalidInput;
use crate::logits_io::{InputError, LabelledLogits, Location, read_labelled};

/// Which set the temperature was fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FittedOn {
    /// The evaluated set itself (no calibration set given): in-sample, optimistic.
    Evaluated,
    /// The separate calibration set.
    Calibration,
}

/// The JSON object `muq metrics` prints: one flat record, metrics after
/// temperature scaling suffixed `_after_ts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsReport {
    /// Samples in the evaluated set.
    pub n: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// Bins of the binned metrics.
    pub bins: usize,
    /// Accuracy (unchanged by temperature scaling), ECE, MCE, adaptive and
    /// classwise ECE, Brier, NLL and saturated samples before scaling
    /// (flattened into the record).
    #[serde(flatten)]
    pub uncalibrated: MetricSet,
    /// Smooth ECE of the top-label confidence (relplot's bandwidth rule).
    pub smooth_ece: f64,
    /// Debiased L2 calibration error (Kumar et al.; marginal, 15
    /// equal-mass bins).
    pub debiased_l2_ce: f64,
    /// The fitted temperature.
    pub temperature: f64,
    /// Where the temperature was fitted.
    pub temperature_fitted_on: FittedOn,
    /// Samples in the set the temperature was fitted on.
    pub temperature_fit_n: usize,
    /// Whether the temperature search converged at an interior optimum.
    pub temperature_converged: bool,
    /// Objective evaluations the temperature search made.
    pub temperature_iterations: usize,
    /// d NLL / d ln T on the fitting set at the fitted temperature.
    pub temperature_gradient: f64,
    /// NLL of the fitting set at T = 1.
    pub temperature_fit_nll_before: f64,
    /// NLL of the fitting set at the fitted temperature.
    pub temperature_fit_nll_after: f64,
    /// ECE after temperature scaling.
    pub ece_after_ts: f64,
    /// MCE after temperature scaling.
    pub mce_after_ts: f64,
    /// Adaptive ECE after temperature scaling.
    pub adaptive_ece_after_ts: f64,
    /// Classwise ECE after temperature scaling.
    pub classwise_ece_after_ts: f64,
    /// Brier score after temperature scaling.
    pub brier_after_ts: f64,
    /// NLL after temperature scaling.
    pub nll_after_ts: f64,
    /// Saturated samples after temperature scaling.
    pub saturated_after_ts: usize,
    /// Smooth ECE after temperature scaling.
    pub smooth_ece_after_ts: f64,
    /// Debiased L2 calibration error after temperature scaling.
    pub debiased_l2_ce_after_ts: f64,
    /// One block per `--recalibrate` method, by its short name, in the
    /// order `ts, vs, ms, dirichlet, hist, iso, platt, sb` (absent without
    /// `--recalibrate`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub recalibrated: BTreeMap<Method, RecalibratedBlock>,
}

/// The metrics of the evaluated set after one recalibrator, and its fit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecalibratedBlock {
    /// Accuracy, ECE, smooth ECE, debiased L2 CE, RMS CE, MCE, Brier, NLL,
    /// saturated samples (flattened into the block).
    #[serde(flatten)]
    pub metrics: ProbMetrics,
    /// Where it was fitted (the same set as the temperature).
    pub fitted_on: FittedOn,
    /// How the fit went.
    pub fit: FitDiagnostics,
    /// With `--bootstrap`: percentile 95 % intervals on the evaluated set
    /// ([`crate::evaluate::bootstrap_intervals`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub bootstrap: BTreeMap<String, muq_calibrate::ConfidenceInterval>,
}

/// Smooth ECE and debiased L2 calibration error of `p`.
fn unbinned(p: &Predictions) -> Result<(f64, f64), CalibError> {
    Ok((
        smooth_ece(p)?.value,
        l2_calibration_error(p, &L2CeConfig::default())?,
    ))
}

impl MetricsReport {
    /// Flattens a [`Summary`] (computed at `fit.temperature`) and the fit
    /// into one record; `unbinned` holds the smooth ECE and the debiased L2
    /// calibration error before and after scaling. `recalibrated` starts
    /// empty.
    pub fn new(
        summary: &Summary,
        fit: &TemperatureFit,
        fitted_on: FittedOn,
        fit_n: usize,
        unbinned: [(f64, f64); 2],
    ) -> Self {
        let after = &summary.scaled;
        MetricsReport {
            n: summary.n,
            num_classes: summary.num_classes,
            bins: summary.bins,
            uncalibrated: summary.uncalibrated,
            smooth_ece: unbinned[0].0,
            debiased_l2_ce: unbinned[0].1,
            temperature: fit.temperature,
            temperature_fitted_on: fitted_on,
            temperature_fit_n: fit_n,
            temperature_converged: fit.converged,
            temperature_iterations: fit.iterations,
            temperature_gradient: fit.gradient,
            temperature_fit_nll_before: fit.nll_before,
            temperature_fit_nll_after: fit.nll_after,
            ece_after_ts: after.ece,
            mce_after_ts: after.mce,
            adaptive_ece_after_ts: after.adaptive_ece,
            classwise_ece_after_ts: after.classwise_ece,
            brier_after_ts: after.brier,
            nll_after_ts: after.nll,
            saturated_after_ts: after.saturated,
            smooth_ece_after_ts: unbinned[1].0,
            debiased_l2_ce_after_ts: unbinned[1].1,
            recalibrated: BTreeMap::new(),
        }
    }
}

fn load(logits: &Path, labels: &Path) -> anyhow::Result<LabelledLogits> {
    Ok(read_labelled(logits, labels)?)
}

fn view(set: &LabelledLogits) -> anyhow::Result<Logits<'_>> {
    Logits::new(&set.logits.values, set.logits.num_classes).context("invalid logits")
}

/// What `muq metrics` measures: the files and settings, as its command-line
/// arguments (the `muq metrics` command flattens this struct).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct MetricsRequest {
    /// Logits of the evaluated set: CSV (one row per sample, one column per
    /// class, no header) or .npy (2-D float32/float64).
    #[arg(long, value_name = "FILE")]
    pub logits: PathBuf,
    /// Labels of the evaluated set: one integer per line, or .npy (1-D integer).
    #[arg(long, value_name = "FILE")]
    pub labels: PathBuf,
    /// Logits of a separate calibration set to fit the temperature on
    /// (default: fit on the evaluated set itself).
    #[arg(long, value_name = "FILE", requires = "cal_labels")]
    pub cal_logits: Option<PathBuf>,
    /// Labels of the calibration set.
    #[arg(long, value_name = "FILE", requires = "cal_logits")]
    pub cal_labels: Option<PathBuf>,
    /// Number of bins of the binned calibration errors (1 to 10,000).
    #[arg(long, default_value_t = crate::config::DEFAULT_BINS as u32,
          value_parser = clap::value_parser!(u32).range(1..=crate::config::MAX_BINS as i64))]
    pub bins: u32,
    /// Recalibrators to fit on the calibration set (or the evaluated set
    /// itself) and measure on the evaluated set, comma-separated: ts, vs,
    /// ms, dirichlet, hist, iso, platt, sb. Each adds a block to the
    /// `recalibrated` object.
    #[arg(long, value_name = "METHODS", value_delimiter = ',', value_parser = parse_method)]
    pub recalibrate: Vec<Method>,
    /// Bootstrap resamples for 95 % intervals of each `--recalibrate`
    /// block's ECE, smooth ECE and Brier and of their paired differences to
    /// temperature scaling (0 = none; 1000 is usual).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "recalibrate",
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub bootstrap: u32,
    /// Seed of the bootstrap's resampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// One `--recalibrate` name, spaces around it allowed.
fn parse_method(name: &str) -> Result<Method, CalibError> {
    name.trim().parse()
}

/// Computes the report for `args`, writing notes and warnings to stderr.
///
/// # Errors
/// Unreadable files; invalid contents as an
/// [`InputError`] (the binary exits with 2).
pub fn compute(args: &MetricsRequest) -> anyhow::Result<MetricsReport> {
    let mut methods = args.recalibrate.clone();
    methods.sort();
    if let Some(w) = methods.windows(2).find(|w| w[0] == w[1]) {
        return Err(InvalidInput(format!(
            "--recalibrate lists `{}` twice: list each of {} once",
            w[0],
            Method::ALL.map(Method::name).join(", ")
        ))
        .into());
    }
    let eval = load(&args.logits, &args.labels)?;
    let cal = match (&args.cal_logits, &args.cal_labels) {
        (Some(l), Some(y)) => {
            let cal = load(l, y)?;
            if cal.logits.num_classes != eval.logits.num_classes {
                return Err(InputError::new(
                    l,
                    Location::File,
                    format!(
                        "{} columns, but {} has {}",
                        cal.logits.num_classes,
                        args.logits.display(),
                        eval.logits.num_classes
                    ),
                )
                .into());
            }
            Some(cal)
        }
        _ => None,
    };
    let eval_logits = view(&eval)?;
    let (fit_set, fitted_on) = match &cal {
        Some(cal) => (cal, FittedOn::Calibration),
        None => {
            eprintln!(
                "note: no --cal-logits given: fitting the temperature on the evaluated set itself \
                 (the after-scaling metrics are in-sample)"
            );
            if !methods.is_empty() {
                eprintln!(
                    "note: fitting the --recalibrate methods on the evaluated set itself too \
                     (their metrics are in-sample)"
                );
            }
            (&eval, FittedOn::Evaluated)
        }
    };
    let fit =
        fit_temperature(&view(fit_set)?, &fit_set.labels).context("fitting the temperature")?;
    if !fit.converged {
        eprintln!(
            "warning: the temperature search did not converge to an interior optimum \
             (T = {}, d NLL/d ln T = {:e})",
            fit.temperature, fit.gradient
        );
    }
    let bins = args.bins as usize;
    let s = summarize(&eval_logits, &eval.labels, fit.temperature, bins)
        .context("computing metrics")?;
    let plain = Predictions::new(&eval_logits, &eval.labels).context("computing metrics")?;
    let scaled = Predictions::with_temperature(&eval_logits, &eval.labels, fit.temperature)
        .context("computing metrics")?;
    let unbinned = [
        unbinned(&plain).context("computing metrics")?,
        unbinned(&scaled).context("computing metrics after temperature scaling")?,
    ];
    let mut report = MetricsReport::new(&s, &fit, fitted_on, fit_set.labels.len(), unbinned);
    let config = RecalibrationConfig::default();
    let fit_logits = view(fit_set)?;
    for method in methods {
        let (fitted, diagnostics) =
            fit_with_diagnostics(method, &config, &fit_logits, &fit_set.labels)
                .with_context(|| format!("fitting the `{method}` recalibrator"))?;
        if diagnostics.converged == Some(false) {
            eprintln!(
                "warning: the `{method}` recalibrator's solver did not converge \
                 ({} steps, gradient {:e})",
                diagnostics.iterations.unwrap_or(0),
                diagnostics.gradient.unwrap_or(f64::NAN)
            );
        }
        let p = fitted
            .apply(&eval_logits)
            .and_then(|c| c.predictions(&eval.labels))
            .with_context(|| format!("applying the `{method}` recalibrator"))?;
        let metrics = ProbMetrics::compute(&p, bins)
            .with_context(|| format!("computing metrics after `{method}`"))?;
        let bootstrap = if args.bootstrap > 0 {
            let config = muq_calibrate::BootstrapConfig {
                resamples: args.bootstrap as usize,
                seed: args.seed,
                ..Default::default()
            };
            crate::evaluate::bootstrap_intervals(&p, &scaled, bins, &config)
                .with_context(|| format!("bootstrap intervals after `{method}`"))?
        } else {
            BTreeMap::new()
        };
        report.recalibrated.insert(
            method,
            RecalibratedBlock {
                metrics,
                fitted_on,
                fit: diagnostics,
                bootstrap,
            },
        );
    }
    Ok(report)
}
