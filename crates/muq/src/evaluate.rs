//! Evaluation of one model state, exactly as section 6 of the spec lists:
//! temperature fitted on the calibration half, every metric before and after
//! scaling on the evaluation half, the forget set and the retain sample.

use std::collections::BTreeMap;

use anyhow::Context as _;
use muq_calibrate::{
    BootstrapConfig, ConfidenceInterval, Logits, MetricSet, Predictions, ReliabilityDiagram,
    Summary, TemperatureFit, bootstrap_ci, fit_temperature, reliability_diagram, summarize,
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

/// MC-dropout evaluation: probabilities averaged over stochastic passes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct McDropout {
    /// Number of passes.
    pub passes: usize,
    /// Temperature fitted on the calibration half's log mean probabilities.
    pub temperature: TemperatureFit,
    /// Metrics on the evaluation half.
    pub evaluation: Summary,
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
    /// The unlearning field's efficacy metrics (absent in results written
    /// before they were measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efficacy: Option<Efficacy>,
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

/// Evaluates `model` on `sets`; `seed` drives MC dropout and the bootstrap.
pub fn evaluate(
    model: &ResNet,
    sets: &EvalSets<'_>,
    cfg: &EvalConfig,
    seed: u64,
) -> anyhow::Result<StateMetrics> {
    let k = model.config().num_classes;
    let bins = cfg.bins;
    let cal_z = host_logits(model, sets.calibration, cfg)?;
    let cal_y = sets.calibration.labels();
    let cal = Logits::new(&cal_z, k).context("calibration logits")?;
    let temperature = fit_temperature(&cal, &cal_y).context("fitting the temperature")?;
    let t = temperature.temperature;
    let summary =
        |set: EvalSet<'_>, what: &str| -> anyhow::Result<(Vec<f32>, Vec<usize>, Summary)> {
            let z = host_logits(model, set, cfg)?;
            let y = set.labels();
            let s = summarize(&Logits::new(&z, k)?, &y, t, bins)
                .with_context(|| format!("metrics of the {what}"))?;
            Ok((z, y, s))
        };
    let calibration = summarize(&cal, &cal_y, t, bins)?;
    let (eval_z, eval_y, evaluation) = summary(sets.evaluation, "evaluation half")?;
    let (forget_z, forget_y, forget) = summary(sets.forget, "forget set")?;
    let (retain_z, retain_y, retain) = summary(sets.retain, "retain sample")?;
    let efficacy = efficacy(
        k,
        Split::new(&forget_z, &forget_y, &forget),
        Split::new(&retain_z, &retain_y, &retain),
        Split::new(&eval_z, &eval_y, &evaluation),
        cfg,
        seed,
    )?;
    let eval_logits = Logits::new(&eval_z, k)?;
    let plain = Predictions::new(&eval_logits, &eval_y)?;
    let scaled = Predictions::with_temperature(&eval_logits, &eval_y, t)?;
    let reliability = Reliability {
        before_ts: reliability_diagram(&plain, bins)?,
        after_ts: reliability_diagram(&scaled, bins)?,
    };
    let mut bootstrap = BTreeMap::new();
    if cfg.bootstrap > 0 {
        let bc = BootstrapConfig {
            resamples: cfg.bootstrap,
            seed,
            ..Default::default()
        };
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
    Ok(StateMetrics {
        temperature,
        calibration,
        evaluation,
        forget,
        retain,
        reliability,
        bootstrap,
        mc_dropout,
        efficacy: Some(efficacy),
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

/// Log of the mean softmax over passes: valid logits of the averaged
/// predictive distribution.
fn log_mean_probs(passes: &[Vec<f32>], k: usize) -> Vec<f64> {
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
    let run = |set: EvalSet<'_>| -> anyhow::Result<Vec<f64>> {
        let out = logits(model, set.data, set.indices, cfg.batch_size, passes)?;
        Ok(log_mean_probs(&out.passes, k))
    };
    let cal = run(sets.calibration)?;
    let cal_y = sets.calibration.labels();
    let temperature = fit_temperature(&Logits::new(&cal, k)?, &cal_y)?;
    let ev = run(sets.evaluation)?;
    let evaluation = summarize(
        &Logits::new(&ev, k)?,
        &sets.evaluation.labels(),
        temperature.temperature,
        cfg.bins,
    )?;
    Ok(McDropout {
        passes: cfg.mc_dropout_passes,
        temperature,
        evaluation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_mean_probs_averages_distributions() {
        // Two passes over one sample, 2 classes: softmax(0,0) = (.5,.5),
        // softmax(ln 3, 0) = (.75,.25); mean (.625, .375).
        let passes = vec![vec![0.0f32, 0.0], vec![3f32.ln(), 0.0]];
        let z = log_mean_probs(&passes, 2);
        assert!((z[0].exp() - 0.625).abs() < 1e-7);
        assert!((z[1].exp() - 0.375).abs() < 1e-7);
    }
}
