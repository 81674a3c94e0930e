//! Evaluation of one model state, exactly as section 6 of the spec lists:
//! temperature fitted on the calibration half, every metric before and after
//! scaling on the evaluation half, the forget set and the retain sample —
//! and, when `eval.recalibrators` lists any, each of those recalibrators
//! fitted on the calibration half and measured on the same three sets
//! ([`Recalibration`]).

use std::collections::BTreeMap;

use anyhow::Context as _;
use muq_calibrate::{
    BootstrapConfig, CalibError, Calibrator, ConfidenceInterval, L2CeConfig, Logits, Method,
    MetricSet, Norm, PerMode, PlattMap, Predictions, RecalibrationConfig, Recalibrator,
    ReliabilityDiagram, Summary, TemperatureFit, bootstrap_ci, fit_temperature,
    l2_calibration_error, reliability_diagram, smooth_ece, summarize,
};
use muq_data::Dataset;
use muq_resnet::{Passes, ResNet, logits};
use serde::{Deserialize, Serialize};

use crate::config::EvalConfig;

/// One set of images a state is evaluated on.
#[derive(Clone, Copy, Debug)]
pub struct EvalSet<'a> {
    /// The data as the model sees it.
    pub data: &'a Dataset,
    /// Which of its images.
    pub indices: &'a [usize],
}

impl EvalSet<'_> {
    fn labels(&self) -> Vec<usize> {
        self.indices
            .iter()
            .map(|&i| self.data.labels()[i] as usize)
            .collect()
    }
}

/// The four sets every state is evaluated on.
#[derive(Clone, Copy, Debug)]
pub struct EvalSets<'a> {
    /// Calibration half of the test set (temperature fitting).
    pub calibration: EvalSet<'a>,
    /// Evaluation half of the test set (the reported metrics).
    pub evaluation: EvalSet<'a>,
    /// The forget set, as unlearning sees it (with its corruptions).
    pub forget: EvalSet<'a>,
    /// A seeded sample of the retain set, as the model was trained on it.
    pub retain: EvalSet<'a>,
}

/// Reliability diagrams of the evaluation half.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reliability {
    /// At temperature 1.
    pub before_ts: ReliabilityDiagram,
    /// At the fitted temperature.
    pub after_ts: ReliabilityDiagram,
}

/// A predictive distribution that averages several softmaxes — MC
/// dropout's stochastic passes or a deep ensemble's members — evaluated as
/// a state is: its temperature fitted on the calibration half, every metric
/// before and after scaling on the evaluation half, the forget set and the
/// retain sample, and each recalibrator of `eval.recalibrators` fitted on
/// the calibration half. Its "logits" are the log mean probabilities, so
/// temperature scaling and the recalibrators act on the averaged
/// distribution (scaling `ln p̄` by `1/T` is the tempered mean).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Averaged {
    /// Fitted on the calibration half's log mean probabilities.
    pub temperature: TemperatureFit,
    /// Evaluation half.
    pub evaluation: Summary,
    /// Forget set (absent in results written before it was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forget: Option<Summary>,
    /// Retain sample (absent in results written before it was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<Summary>,
    /// Reliability diagrams of the evaluation half (absent in results
    /// written before they were drawn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reliability: Option<Reliability>,
    /// The softmax-free metrics before and after each recalibrator (the
    /// recalibrators of `eval.recalibrators`; `uncalibrated` always).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recalibration: Option<Recalibration>,
}

/// MC-dropout evaluation: probabilities averaged over stochastic passes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct McDropout {
    /// Number of passes.
    pub passes: usize,
    /// The averaged distribution's metrics.
    #[serde(flatten)]
    pub metrics: Averaged,
}

/// A deep ensemble's evaluation: the mean softmax of `members` models that
/// differ only in their seed (see [`crate::pipeline::Ensemble`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ensemble {
    /// The seeds of the members' base models, the run's own first.
    pub seeds: Vec<u64>,
    /// The averaged distribution's metrics.
    #[serde(flatten)]
    pub metrics: Averaged,
}

/// Every metric of one model state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateMetrics {
    /// Fitted on the calibration half.
    pub temperature: TemperatureFit,
    /// Calibration half, before/after scaling (in-sample for the scaled part).
    pub calibration: Summary,
    /// Evaluation half: the numbers the study reports.
    pub evaluation: Summary,
    /// Forget set.
    pub forget: Summary,
    /// Retain sample.
    pub retain: Summary,
    /// Reliability diagrams of the evaluation half.
    pub reliability: Reliability,
    /// Bootstrap CIs of evaluation-half metrics after scaling (key: metric).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bootstrap: BTreeMap<String, ConfidenceInterval>,
    /// MC-dropout metrics, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mc_dropout: Option<McDropout>,
    /// The deep ensemble of `eval.ensemble` members in this state, when
    /// asked for (each member unlearned by the same method).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<Ensemble>,
    /// The unlearning field's efficacy metrics (absent in results written
    /// before they were measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efficacy: Option<Efficacy>,
    /// The recalibrators of `eval.recalibrators`, each fitted on the
    /// calibration half (absent when none are configured, and in results
    /// written before they existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recalibration: Option<Recalibration>,
}

/// How well the forget set is forgotten, as the unlearning field measures
/// it (SalUn / Unlearn-Sparse's names), at temperature 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Efficacy {
    /// Unlearning accuracy: 1 − accuracy on the forget set.
    pub ua: f64,
    /// Remaining accuracy: accuracy on the retain sample.
    pub ra: f64,
    /// Testing accuracy: accuracy on the evaluation half.
    pub ta: f64,
    /// MIA-efficacy per attack feature (`eval.mia_features`): the fraction
    /// of the forget set an RBF SVC (C = 3, gamma = 1/features), trained to
    /// tell the retain sample (members) from the evaluation half
    /// (non-members), calls non-member ([`muq_efficacy::mia_efficacy`]).
    pub mia_efficacy: BTreeMap<String, f64>,
    /// ROC AUC of per-sample cross-entropy separating the forget set
    /// (members score higher: lower loss) from a seeded sample of the
    /// evaluation half of the same size; 0.5 = indistinguishable
    /// ([`muq_efficacy::loss_auc`]).
    pub loss_auc: f64,
    /// Evaluation images in the loss-AUC sample.
    pub loss_auc_heldout: usize,
}

/// The stream the loss-AUC held-out sample is drawn from.
pub const LOSS_AUC_STREAM: &str = "efficacy/loss_auc";

/// Logits of a set, on the host, `n × k`.
fn host_logits(model: &ResNet, set: EvalSet<'_>, cfg: &EvalConfig) -> anyhow::Result<Vec<f32>> {
    let out = logits(model, set.data, set.indices, cfg.batch_size, Passes::Eval)?;
    Ok(out.passes.into_iter().next().unwrap_or_default())
}

/// One model state's logits on the four [`EvalSets`], on the host
/// (row-major `n × k` each): what [`evaluate_logits`] measures, and what a
/// deep ensemble averages over its members.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SetLogits {
    /// Calibration half.
    pub calibration: Vec<f32>,
    /// Evaluation half.
    pub evaluation: Vec<f32>,
    /// Forget set.
    pub forget: Vec<f32>,
    /// Retain sample.
    pub retain: Vec<f32>,
}

impl SetLogits {
    /// `model`'s eval-mode logits on each of `sets`.
    ///
    /// # Errors
    /// A forward-pass error.
    pub fn of(model: &ResNet, sets: &EvalSets<'_>, cfg: &EvalConfig) -> anyhow::Result<Self> {
        Ok(Self {
            calibration: host_logits(model, sets.calibration, cfg)?,
            evaluation: host_logits(model, sets.evaluation, cfg)?,
            forget: host_logits(model, sets.forget, cfg)?,
            retain: host_logits(model, sets.retain, cfg)?,
        })
    }
}

/// Evaluates `model` on `sets`; `seed` drives MC dropout and the bootstrap.
///
/// # Errors
/// A forward-pass or metric error.
pub fn evaluate(
    model: &ResNet,
    sets: &EvalSets<'_>,
    cfg: &EvalConfig,
    seed: u64,
) -> anyhow::Result<StateMetrics> {
    evaluate_logits(model, &SetLogits::of(model, sets, cfg)?, sets, cfg, seed)
}

/// [`evaluate`] on logits already computed by [`SetLogits::of`] (the model
/// is still needed for MC dropout's stochastic passes).
///
/// # Errors
/// A metric error, or a forward-pass error of MC dropout.
pub fn evaluate_logits(
    model: &ResNet,
    z: &SetLogits,
    sets: &EvalSets<'_>,
    cfg: &EvalConfig,
    seed: u64,
) -> anyhow::Result<StateMetrics> {
    let k = model.config().num_classes;
    let bins = cfg.bins;
    let cal_y = sets.calibration.labels();
    let cal = Logits::new(&z.calibration, k).context("calibration logits")?;
    let temperature = fit_temperature(&cal, &cal_y).context("fitting the temperature")?;
    let t = temperature.temperature;
    let summary =
        |z: &[f32], set: EvalSet<'_>, what: &str| -> anyhow::Result<(Vec<usize>, Summary)> {
            let y = set.labels();
            let s = summarize(&Logits::new(z, k)?, &y, t, bins)
                .with_context(|| format!("metrics of the {what}"))?;
            Ok((y, s))
        };
    let calibration = summarize(&cal, &cal_y, t, bins)?;
    let (eval_y, evaluation) = summary(&z.evaluation, sets.evaluation, "evaluation half")?;
    let (forget_y, forget) = summary(&z.forget, sets.forget, "forget set")?;
    let (retain_y, retain) = summary(&z.retain, sets.retain, "retain sample")?;
    let efficacy = efficacy(
        k,
        Split::new(&z.forget, &forget_y, &forget),
        Split::new(&z.retain, &retain_y, &retain),
        Split::new(&z.evaluation, &eval_y, &evaluation),
        cfg,
        seed,
    )?;
    let eval_logits = Logits::new(&z.evaluation, k)?;
    let plain = Predictions::new(&eval_logits, &eval_y)?;
    let scaled = Predictions::with_temperature(&eval_logits, &eval_y, t)?;
    let reliability = Reliability {
        before_ts: reliability_diagram(&plain, bins)?,
        after_ts: reliability_diagram(&scaled, bins)?,
    };
    let mut bootstrap = BTreeMap::new();
    if cfg.bootstrap > 0 {
        let bc = bootstrap_config(cfg, seed);
        type Metric = fn(&MetricSet) -> f64;
        let metrics: [(&str, Metric); 4] = [
            ("ece_after_ts", |m| m.ece),
            ("brier_after_ts", |m| m.brier),
            ("nll_after_ts", |m| m.nll),
            ("accuracy", |m| m.accuracy),
        ];
        for (name, f) in metrics {
            let ci = bootstrap_ci(scaled.len(), &bc, |idx| {
                scaled
                    .select(idx)
                    .and_then(|p| MetricSet::compute(&p, bins))
                    .map(|m| f(&m))
                    .unwrap_or(f64::NAN)
            })?;
            bootstrap.insert(name.to_string(), ci);
        }
    }
    let mc_dropout = if cfg.mc_dropout_passes > 0 {
        Some(mc_dropout(model, sets, cfg, seed)?)
    } else {
        None
    };
    let recalibration = if cfg.recalibrators.is_empty() {
        None
    } else {
        let splits = [
            (Logits::new(&z.evaluation, k)?, eval_y.as_slice()),
            (Logits::new(&z.forget, k)?, forget_y.as_slice()),
            (Logits::new(&z.retain, k)?, retain_y.as_slice()),
        ];
        Some(recalibrate(
            &cfg.recalibrators,
            &cfg.recalibration,
            (&cal, &cal_y),
            &splits,
            bins,
            (cfg.bootstrap > 0)
                .then(|| bootstrap_config(cfg, seed))
                .as_ref(),
        )?)
    };
    Ok(StateMetrics {
        temperature,
        calibration,
        evaluation,
        forget,
        retain,
        reliability,
        bootstrap,
        mc_dropout,
        ensemble: None,
        efficacy: Some(efficacy),
        recalibration,
    })
}

/// The bootstrap of `eval.bootstrap` resamples (95 %), seeded by the run.
fn bootstrap_config(cfg: &EvalConfig, seed: u64) -> BootstrapConfig {
    BootstrapConfig {
        resamples: cfg.bootstrap,
        seed,
        ..Default::default()
    }
}

/// Evaluates an averaged predictive distribution given as several
/// softmaxes' logits per set (MC dropout's passes, an ensemble's members):
/// see [`Averaged`].
///
/// # Errors
/// A metric or fit error.
pub fn evaluate_averaged(
    passes: &[&SetLogits],
    k: usize,
    sets: &EvalSets<'_>,
    cfg: &EvalConfig,
    seed: u64,
) -> anyhow::Result<Averaged> {
    let mean = |f: fn(&SetLogits) -> &Vec<f32>| -> Vec<f64> {
        let ps: Vec<&[f32]> = passes.iter().map(|p| f(p).as_slice()).collect();
        log_mean_probs(&ps, k)
    };
    let cal = mean(|z| &z.calibration);
    let ev = mean(|z| &z.evaluation);
    let fo = mean(|z| &z.forget);
    let re = mean(|z| &z.retain);
    let cal_y = sets.calibration.labels();
    let cal_logits = Logits::new(&cal, k)?;
    let temperature = fit_temperature(&cal_logits, &cal_y)
        .context("fitting the temperature of the averaged distribution")?;
    let t = temperature.temperature;
    let (ev_y, fo_y, re_y) = (
        sets.evaluation.labels(),
        sets.forget.labels(),
        sets.retain.labels(),
    );
    let ev_logits = Logits::new(&ev, k)?;
    let reliability = Reliability {
        before_ts: reliability_diagram(&Predictions::new(&ev_logits, &ev_y)?, cfg.bins)?,
        after_ts: reliability_diagram(
            &Predictions::with_temperature(&ev_logits, &ev_y, t)?,
            cfg.bins,
        )?,
    };
    let splits = [
        (Logits::new(&ev, k)?, ev_y.as_slice()),
        (Logits::new(&fo, k)?, fo_y.as_slice()),
        (Logits::new(&re, k)?, re_y.as_slice()),
    ];
    let recalibration = recalibrate(
        &cfg.recalibrators,
        &cfg.recalibration,
        (&cal_logits, &cal_y),
        &splits,
        cfg.bins,
        (cfg.bootstrap > 0)
            .then(|| bootstrap_config(cfg, seed))
            .as_ref(),
    )?;
    Ok(Averaged {
        temperature,
        evaluation: summarize(&ev_logits, &ev_y, t, cfg.bins)?,
        forget: Some(summarize(&splits[1].0, &fo_y, t, cfg.bins)?),
        retain: Some(summarize(&splits[2].0, &re_y, t, cfg.bins)?),
        reliability: Some(reliability),
        recalibration: Some(recalibration),
    })
}

/// One evaluated split's logits, labels and metrics.
struct Split<'a> {
    z: &'a [f32],
    y: &'a [usize],
    summary: &'a Summary,
}

impl<'a> Split<'a> {
    fn new(z: &'a [f32], y: &'a [usize], summary: &'a Summary) -> Self {
        Self { z, y, summary }
    }
}

fn efficacy(
    k: usize,
    forget: Split<'_>,
    retain: Split<'_>,
    evaluation: Split<'_>,
    cfg: &EvalConfig,
    seed: u64,
) -> anyhow::Result<Efficacy> {
    use muq_efficacy::{MiaSet, cross_entropy, loss_auc, mia_efficacy, softmax_probs};
    let probs = |s: &Split<'_>| softmax_probs(s.z, k);
    let (pf, pr, pe) = (probs(&forget)?, probs(&retain)?, probs(&evaluation)?);
    let mut mia = BTreeMap::new();
    for &feature in &cfg.mia_features {
        let e = mia_efficacy(
            feature,
            k,
            MiaSet::new(&pr, retain.y),
            MiaSet::new(&pe, evaluation.y),
            MiaSet::new(&pf, forget.y),
        )
        .with_context(|| format!("MIA-efficacy on the `{feature}` feature"))?;
        mia.insert(feature.to_string(), e);
    }
    // Held out: as many evaluation images as the forget set has (all of
    // them if fewer), a seeded sample.
    let n_eval = evaluation.y.len();
    let n = forget.y.len().min(n_eval);
    let mut pick =
        rand::seq::index::sample(&mut muq_data::rng::stream(seed, LOSS_AUC_STREAM), n_eval, n)
            .into_vec();
    pick.sort_unstable();
    let heldout_z: Vec<f32> = pick
        .iter()
        .flat_map(|&i| evaluation.z[i * k..(i + 1) * k].iter().copied())
        .collect();
    let heldout_y: Vec<usize> = pick.iter().map(|&i| evaluation.y[i]).collect();
    let auc = loss_auc(
        &cross_entropy(forget.z, k, forget.y)?,
        &cross_entropy(&heldout_z, k, &heldout_y)?,
    )
    .context("the loss-threshold AUC")?;
    Ok(Efficacy {
        ua: 1.0 - forget.summary.uncalibrated.accuracy,
        ra: retain.summary.uncalibrated.accuracy,
        ta: evaluation.summary.uncalibrated.accuracy,
        mia_efficacy: mia,
        loss_auc: auc,
        loss_auc_heldout: n,
    })
}

// ---------------------------------------------------------------- recalibrators

/// Metrics of one set of probabilities — softmax outputs or a recalibrator's
/// — against its labels: what `muq metrics --recalibrate` prints per method
/// and `result.json` records per recalibrator and split.
///
/// Non-finite values (the NLL of a binning recalibrator that gives a true
/// class probability 0 is `+∞` by definition) are written as the strings
/// `"inf"`, `"-inf"` and `"NaN"`, since JSON has no number for them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbMetrics {
    /// Fraction whose predicted class is the label (a top-label recalibrator
    /// keeps the uncalibrated prediction, so its accuracy is unchanged).
    #[serde(with = "nonfinite")]
    pub accuracy: f64,
    /// Notebook ECE on `eval.bins` (or `--bins`) equal-width bins.
    #[serde(with = "nonfinite")]
    pub ece: f64,
    /// Smooth ECE of the top-label confidence (Błasiok & Nakkiran; relplot's
    /// bandwidth rule: [`muq_calibrate::smooth_ece`]).
    #[serde(with = "nonfinite")]
    pub smooth_ece: f64,
    /// Kumar et al.'s debiased L2 calibration error, marginal over classes
    /// ([`muq_calibrate::l2_calibration_error`] with its defaults).
    #[serde(with = "nonfinite")]
    pub debiased_l2_ce: f64,
    /// RMS calibration error on the ECE's bins ([`Norm::L2`]).
    #[serde(with = "nonfinite")]
    pub rms_ce: f64,
    /// Maximum calibration error on the ECE's bins ([`Norm::Linf`]).
    #[serde(with = "nonfinite")]
    pub mce: f64,
    /// Multi-class Brier score, in `[0, 2]`.
    #[serde(with = "nonfinite")]
    pub brier: f64,
    /// Mean `−ln p[label]` (nats); `+∞` when some true class gets 0.
    #[serde(with = "nonfinite")]
    pub nll: f64,
    /// Samples whose top-label confidence is exactly 1.0 (in no ECE bin).
    pub saturated: usize,
}

impl ProbMetrics {
    /// Every metric of `p`, the binned ones on `bins` equal-width bins.
    ///
    /// # Errors
    /// [`CalibError::ZeroBins`] if `bins == 0`.
    pub fn compute(p: &Predictions, bins: usize) -> Result<Self, CalibError> {
        let diagram = reliability_diagram(p, bins)?;
        Ok(ProbMetrics {
            accuracy: muq_calibrate::accuracy(p),
            ece: diagram.calibration_error(Norm::L1),
            smooth_ece: smooth_ece(p)?.value,
            debiased_l2_ce: l2_calibration_error(p, &L2CeConfig::default())?,
            rms_ce: diagram.calibration_error(Norm::L2),
            mce: diagram.calibration_error(Norm::Linf),
            brier: muq_calibrate::brier(p),
            nll: muq_calibrate::nll(p),
            saturated: diagram.saturated,
        })
    }
}

/// How a recalibrator's fit went: the diagnostics its fitted map carries,
/// plus the fitting set's NLL before and after (in-sample). Fields that do
/// not apply to a method are left out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FitDiagnostics {
    /// Samples fitted on.
    pub n: usize,
    /// `ts`: the fitted temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// `platt`, `sb` (top-label): the logistic map's slope `a` in
    /// `σ(a · logit(p) + b)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slope: Option<f64>,
    /// `platt`, `sb` (top-label): its intercept `b`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intercept: Option<f64>,
    /// Solver steps: the temperature search's objective evaluations (`ts`)
    /// or Newton steps (`vs`, `ms`, `dirichlet`, and the logistic fits of
    /// `platt` and `sb`; the most over classes in one-vs-rest mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<usize>,
    /// Whether the solver met its tolerance (every class's, one-vs-rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converged: Option<bool>,
    /// The objective's gradient at the solution: `d NLL / d ln T` (`ts`),
    /// else the largest absolute entry (the largest over classes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient: Option<f64>,
    /// `hist`, `sb`: bins per map (the most over classes, one-vs-rest;
    /// scaling-binning drops bins whose edges coincide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bins: Option<usize>,
    /// `iso`: interpolation points per map (the most over classes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<usize>,
    /// Mean NLL of the fitting set's softmax.
    #[serde(with = "nonfinite")]
    pub nll_before: f64,
    /// Mean NLL of the fitting set after recalibration (in-sample; `+∞`
    /// when a binning method gives some true class 0).
    #[serde(with = "nonfinite")]
    pub nll_after: f64,
}

impl FitDiagnostics {
    /// Records Newton fits: most steps, all converged, largest gradient.
    fn newton<'a>(&mut self, fits: impl IntoIterator<Item = &'a muq_calibrate::NewtonFit>) {
        for f in fits {
            self.iterations = Some(self.iterations.unwrap_or(0).max(f.iterations));
            self.converged = Some(self.converged.unwrap_or(true) && f.converged);
            self.gradient = Some(self.gradient.unwrap_or(0.0).max(f.gradient));
        }
    }

    /// Records Platt maps: their Newton fits, and the slope and intercept
    /// of a single (top-label) logistic map.
    fn platt(&mut self, maps: &[&PlattMap]) {
        let fits = maps.iter().filter_map(|m| match m {
            PlattMap::Logistic { fit, .. } => Some(fit),
            PlattMap::Constant(_) => None,
        });
        self.newton(fits);
        if let [
            PlattMap::Logistic {
                slope, intercept, ..
            },
        ] = maps
        {
            self.slope = Some(*slope);
            self.intercept = Some(*intercept);
        }
    }
}

/// The maps of a top-label or one-vs-rest fit.
fn maps_of<M>(maps: &PerMode<M>) -> Vec<&M> {
    match maps {
        PerMode::TopLabel(m) => vec![m],
        PerMode::OneVsRest(ms) => ms.iter().collect(),
    }
}

/// Fits recalibrator `method` (settings from `config`) on `logits` and
/// `labels`, as [`muq_calibrate::fit_recalibrator`] does, and returns the
/// fitted map with its [`FitDiagnostics`].
///
/// # Errors
/// As [`Recalibrator::fit`].
pub fn fit_with_diagnostics(
    method: Method,
    config: &RecalibrationConfig,
    logits: &Logits<'_>,
    labels: &[usize],
) -> Result<(Box<dyn Calibrator>, FitDiagnostics), CalibError> {
    let mut d = FitDiagnostics {
        n: labels.len(),
        ..FitDiagnostics::default()
    };
    let fitted: Box<dyn Calibrator> = match method {
        Method::Ts => {
            let f = config.ts.fit(logits, labels)?;
            d.temperature = Some(f.fit.temperature);
            d.iterations = Some(f.fit.iterations);
            d.converged = Some(f.fit.converged);
            d.gradient = Some(f.fit.gradient);
            Box::new(f)
        }
        Method::Vs => {
            let f = config.vs.fit(logits, labels)?;
            d.newton([&f.fit]);
            Box::new(f)
        }
        Method::Ms => {
            let f = config.ms.fit(logits, labels)?;
            d.newton([&f.fit]);
            Box::new(f)
        }
        Method::Dirichlet => {
            let f = config.dirichlet.fit(logits, labels)?;
            d.newton([&f.fit]);
            Box::new(f)
        }
        Method::Hist => {
            let f = config.hist.fit(logits, labels)?;
            d.bins = maps_of(&f.maps).iter().map(|m| m.values.len()).max();
            Box::new(f)
        }
        Method::Iso => {
            let f = config.iso.fit(logits, labels)?;
            d.points = maps_of(&f.maps).iter().map(|m| m.x.len()).max();
            Box::new(f)
        }
        Method::Platt => {
            let f = config.platt.fit(logits, labels)?;
            d.platt(&maps_of(&f.maps));
            Box::new(f)
        }
        Method::Sb => {
            let f = config.sb.fit(logits, labels)?;
            let maps = maps_of(&f.maps);
            d.platt(&maps.iter().map(|m| &m.platt).collect::<Vec<_>>());
            d.bins = maps.iter().map(|m| m.values.len()).max();
            Box::new(f)
        }
    };
    d.nll_before = muq_calibrate::nll(&Predictions::new(logits, labels)?);
    d.nll_after = muq_calibrate::nll(&fitted.apply(logits)?.predictions(labels)?);
    Ok((fitted, d))
}

/// Metrics of the evaluation half, the forget set and the retain sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitMetrics {
    /// Evaluation half.
    pub evaluation: ProbMetrics,
    /// Forget set.
    pub forget: ProbMetrics,
    /// Retain sample.
    pub retain: ProbMetrics,
}

/// One recalibrator of one state: fitted on the calibration half, applied
/// to the other sets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecalibratorResult {
    /// How the fit went.
    pub fit: FitDiagnostics,
    /// Evaluation half.
    pub evaluation: ProbMetrics,
    /// Forget set.
    pub forget: ProbMetrics,
    /// Retain sample.
    pub retain: ProbMetrics,
    /// Reliability diagram of the evaluation half (top-label confidence,
    /// `eval.bins` equal-width bins).
    pub reliability: ReliabilityDiagram,
    /// With `eval.bootstrap`: percentile intervals on the evaluation half
    /// ([`bootstrap_intervals`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bootstrap: BTreeMap<String, ConfidenceInterval>,
}

/// Every configured recalibrator of one state, beside the same metrics of
/// the uncalibrated softmax.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recalibration {
    /// The softmax at temperature 1, measured the same way.
    pub uncalibrated: SplitMetrics,
    /// With `eval.bootstrap`: the uncalibrated softmax's intervals on the
    /// evaluation half ([`bootstrap_intervals`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub uncalibrated_bootstrap: BTreeMap<String, ConfidenceInterval>,
    /// Per recalibrator, by its short name (`ts`, `iso`, …).
    pub methods: BTreeMap<String, RecalibratorResult>,
}

/// Percentile bootstrap intervals of one set of predictions on the
/// evaluation half, every interval from the same resamples (the run's seed):
/// `ece`, `smooth_ece` and `brier`, and the paired differences
/// `ece_minus_ts` and `brier_minus_ts` to temperature scaling (fitted on the
/// calibration half with the `ts` settings) on each resample — an interval
/// of a difference that excludes 0 says the recalibrator beats (below 0) or
/// loses to temperature scaling beyond the evaluation half's sampling noise.
///
/// # Errors
/// A metric error, or [`CalibError::NonFiniteStatistic`].
pub fn bootstrap_intervals(
    p: &Predictions,
    ts: &Predictions,
    bins: usize,
    config: &BootstrapConfig,
) -> Result<BTreeMap<String, ConfidenceInterval>, CalibError> {
    type Stat = fn(&Predictions, &Predictions, usize) -> Result<f64, CalibError>;
    let stats: [(&str, Stat); 5] = [
        ("ece", |p, _, bins| {
            Ok(reliability_diagram(p, bins)?.calibration_error(Norm::L1))
        }),
        ("smooth_ece", |p, _, _| Ok(smooth_ece(p)?.value)),
        ("brier", |p, _, _| Ok(muq_calibrate::brier(p))),
        ("ece_minus_ts", |p, ts, bins| {
            Ok(reliability_diagram(p, bins)?.calibration_error(Norm::L1)
                - reliability_diagram(ts, bins)?.calibration_error(Norm::L1))
        }),
        ("brier_minus_ts", |p, ts, _| {
            Ok(muq_calibrate::brier(p) - muq_calibrate::brier(ts))
        }),
    ];
    let mut out = BTreeMap::new();
    for (name, stat) in stats {
        let ci = bootstrap_ci(p.len(), config, |idx| {
            (|| stat(&p.select(idx)?, &ts.select(idx)?, bins))().unwrap_or(f64::NAN)
        })?;
        out.insert(name.to_string(), ci);
    }
    Ok(out)
}

/// Fits each of `methods` on `calibration` and measures it on `splits`
/// (evaluation half, forget set, retain sample, in that order); with
/// `bootstrap`, also the [`bootstrap_intervals`] of the uncalibrated softmax
/// and of each method.
///
/// # Errors
/// A fit or metric error, naming the recalibrator.
pub fn recalibrate(
    methods: &[Method],
    config: &RecalibrationConfig,
    calibration: (&Logits<'_>, &[usize]),
    splits: &[(Logits<'_>, &[usize]); 3],
    bins: usize,
    bootstrap: Option<&BootstrapConfig>,
) -> anyhow::Result<Recalibration> {
    let metrics = |p: &[Predictions; 3]| -> Result<SplitMetrics, CalibError> {
        Ok(SplitMetrics {
            evaluation: ProbMetrics::compute(&p[0], bins)?,
            forget: ProbMetrics::compute(&p[1], bins)?,
            retain: ProbMetrics::compute(&p[2], bins)?,
        })
    };
    /// `f` of each split.
    fn each<F>(splits: &[(Logits<'_>, &[usize]); 3], f: F) -> Result<[Predictions; 3], CalibError>
    where
        F: Fn(&Logits<'_>, &[usize]) -> Result<Predictions, CalibError>,
    {
        Ok([
            f(&splits[0].0, splits[0].1)?,
            f(&splits[1].0, splits[1].1)?,
            f(&splits[2].0, splits[2].1)?,
        ])
    }
    let plain = each(splits, Predictions::new)?;
    let uncalibrated = metrics(&plain).context("metrics of the uncalibrated softmax")?;
    // The reference of the paired differences: temperature scaling.
    let ts = match bootstrap {
        Some(_) => {
            let fitted = config
                .ts
                .fit(calibration.0, calibration.1)
                .context("fitting temperature scaling (the bootstrap's reference)")?;
            Some(fitted.apply(&splits[0].0)?.predictions(splits[0].1)?)
        }
        None => None,
    };
    let intervals = |p: &Predictions, what: &str| -> anyhow::Result<_> {
        match (bootstrap, &ts) {
            (Some(bc), Some(ts)) => bootstrap_intervals(p, ts, bins, bc)
                .with_context(|| format!("bootstrap intervals of {what}")),
            _ => Ok(BTreeMap::new()),
        }
    };
    let uncalibrated_bootstrap = intervals(&plain[0], "the uncalibrated softmax")?;
    let mut out = BTreeMap::new();
    for &method in methods {
        let (fitted, fit) = fit_with_diagnostics(method, config, calibration.0, calibration.1)
            .with_context(|| format!("fitting the `{method}` recalibrator"))?;
        let applied = each(splits, |z, y| fitted.apply(z)?.predictions(y))
            .with_context(|| format!("applying the `{method}` recalibrator"))?;
        let m = metrics(&applied).with_context(|| format!("metrics after `{method}`"))?;
        out.insert(
            method.to_string(),
            RecalibratorResult {
                fit,
                evaluation: m.evaluation,
                forget: m.forget,
                retain: m.retain,
                reliability: reliability_diagram(&applied[0], bins)?,
                bootstrap: intervals(&applied[0], &format!("`{method}`"))?,
            },
        );
    }
    Ok(Recalibration {
        uncalibrated,
        uncalibrated_bootstrap,
        methods: out,
    })
}

/// Serde for an `f64` that may be infinite or NaN: finite values as JSON
/// numbers, the others as the strings `"inf"`, `"-inf"`, `"NaN"` (JSON has
/// no number for them, and `serde_json` would write `null`, which does not
/// read back as an `f64`). Reads numbers, those strings, and `null` (as NaN).
pub mod nonfinite {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `x`.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() {
            s.serialize_f64(*x)
        } else if x.is_nan() {
            s.serialize_str("NaN")
        } else if *x > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    /// Reads a number, `"inf"`, `"-inf"`, `"NaN"` or `null`.
    ///
    /// # Errors
    /// Any other string or type.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(f64),
            Text(String),
        }
        match Option::<Repr>::deserialize(d)? {
            Some(Repr::Number(x)) => Ok(x),
            None => Ok(f64::NAN),
            Some(Repr::Text(t)) => match t.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "NaN" => Ok(f64::NAN),
                other => Err(serde::de::Error::custom(format!(
                    "expected a number, \"inf\", \"-inf\" or \"NaN\", found {other:?}"
                ))),
            },
        }
    }
}

/// Log of the mean softmax over passes: valid logits of the averaged
/// predictive distribution.
fn log_mean_probs(passes: &[&[f32]], k: usize) -> Vec<f64> {
    let n = passes.first().map_or(0, |p| p.len() / k);
    let mut acc = vec![0.0f64; n * k];
    for pass in passes {
        for (row, out) in pass.chunks(k).zip(acc.chunks_mut(k)) {
            let z: Vec<f64> = row.iter().map(|&v| v as f64).collect();
            for (o, p) in out.iter_mut().zip(muq_calibrate::softmax(&z)) {
                *o += p;
            }
        }
    }
    let m = passes.len() as f64;
    acc.iter()
        .map(|&s| (s / m).max(f64::MIN_POSITIVE).ln())
        .collect()
}

fn mc_dropout(
    model: &ResNet,
    sets: &EvalSets<'_>,
    cfg: &EvalConfig,
    seed: u64,
) -> anyhow::Result<McDropout> {
    let k = model.config().num_classes;
    let passes = Passes::McDropout {
        passes: cfg.mc_dropout_passes,
        seed,
    };
    let run = |set: EvalSet<'_>| -> anyhow::Result<Vec<Vec<f32>>> {
        Ok(logits(model, set.data, set.indices, cfg.batch_size, passes)?.passes)
    };
    let (cal, ev, fo, re) = (
        run(sets.calibration)?,
        run(sets.evaluation)?,
        run(sets.forget)?,
        run(sets.retain)?,
    );
    // Each pass's four sets, moved (not copied) into one SetLogits.
    let per_pass: Vec<SetLogits> = cal
        .into_iter()
        .zip(ev)
        .zip(fo)
        .zip(re)
        .map(|(((calibration, evaluation), forget), retain)| SetLogits {
            calibration,
            evaluation,
            forget,
            retain,
        })
        .collect();
    let refs: Vec<&SetLogits> = per_pass.iter().collect();
    Ok(McDropout {
        passes: cfg.mc_dropout_passes,
        metrics: evaluate_averaged(&refs, k, sets, cfg, seed)
            .context("evaluating MC dropout's mean prediction")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_mean_probs_averages_distributions() {
        // Two passes over one sample, 2 classes: softmax(0,0) = (.5,.5),
        // softmax(ln 3, 0) = (.75,.25); mean (.625, .375).
        let passes: [&[f32]; 2] = [&[0.0, 0.0], &[3f32.ln(), 0.0]];
        let z = log_mean_probs(&passes, 2);
        assert!((z[0].exp() - 0.625).abs() < 1e-7);
        assert!((z[1].exp() - 0.375).abs() < 1e-7);
    }

    /// Eval sets over a synthetic test set of 60 images and seeded
    /// pseudo-logits for them (`scale` sets how confident they are).
    fn fixture() -> (muq_data::Dataset, Vec<usize>, Vec<usize>) {
        let data = muq_data::synthetic::generate(10, 60, 3);
        let test = muq_data::Dataset::clean(
            std::sync::Arc::new(data.test),
            muq_data::Normalization::CIFAR10,
        );
        ((test), (0..30).collect(), (30..60).collect())
    }

    fn pseudo_logits(n: usize, k: usize, labels: &[u8], scale: f32, salt: u32) -> Vec<f32> {
        (0..n * k)
            .map(|i| {
                // A cheap deterministic hash in [-1, 1), the label's logit raised.
                let h = (i as u32 ^ salt).wrapping_mul(2_654_435_761) >> 8;
                let u = h as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
                let bonus = if usize::from(labels[i / k]) == i % k {
                    1.5
                } else {
                    0.0
                };
                scale * (u + bonus)
            })
            .collect()
    }

    #[test]
    fn an_ensemble_of_one_model_repeated_is_that_model_and_averaging_lowers_brier() {
        let (test, cal_idx, eval_idx) = fixture();
        let set = |idx| EvalSet {
            data: &test,
            indices: idx,
        };
        let sets = EvalSets {
            calibration: set(&cal_idx),
            evaluation: set(&eval_idx),
            forget: set(&cal_idx),
            retain: set(&eval_idx),
        };
        let k = 10;
        let labels = test.labels();
        let member = |scale, salt| {
            let z = |idx: &[usize]| -> Vec<f32> {
                let l: Vec<u8> = idx.iter().map(|&i| labels[i]).collect();
                pseudo_logits(idx.len(), k, &l, scale, salt)
            };
            SetLogits {
                calibration: z(&cal_idx),
                evaluation: z(&eval_idx),
                forget: z(&cal_idx),
                retain: z(&eval_idx),
            }
        };
        let cfg = EvalConfig::default();
        let a = member(2.0, 1);
        // The same member twice: the single model's softmax, so its
        // temperature and metrics (fitted on log-probabilities, which differ
        // from the logits by a per-row constant).
        let twice = evaluate_averaged(&[&a, &a], k, &sets, &cfg, 0).unwrap();
        let cal = Logits::new(&a.calibration, k).unwrap();
        let single_t = fit_temperature(&cal, &sets.calibration.labels()).unwrap();
        assert!((twice.temperature.temperature - single_t.temperature).abs() < 1e-9);
        let single = summarize(
            &Logits::new(&a.evaluation, k).unwrap(),
            &sets.evaluation.labels(),
            single_t.temperature,
            cfg.bins,
        )
        .unwrap();
        for (x, y) in [
            (
                twice.evaluation.uncalibrated.brier,
                single.uncalibrated.brier,
            ),
            (twice.evaluation.scaled.ece, single.scaled.ece),
            (twice.evaluation.scaled.nll, single.scaled.nll),
        ] {
            assert!((x - y).abs() < 1e-9, "{x} vs {y}");
        }
        // Two different members: the mean prediction's Brier score is at
        // most the members' mean (Brier is convex in the probabilities) —
        // and here strictly below, which averaging logits would not ensure.
        let b = member(3.0, 7);
        let both = evaluate_averaged(&[&a, &b], k, &sets, &cfg, 0).unwrap();
        let brier = |m: &SetLogits| {
            summarize(
                &Logits::new(&m.evaluation, k).unwrap(),
                &sets.evaluation.labels(),
                1.0,
                cfg.bins,
            )
            .unwrap()
            .uncalibrated
            .brier
        };
        let mean = (brier(&a) + brier(&b)) / 2.0;
        assert!(
            both.evaluation.uncalibrated.brier < mean - 1e-6,
            "{} vs {mean}",
            both.evaluation.uncalibrated.brier
        );
    }
}
