//! `ms`: matrix scaling (Guo et al. 2017) with Kull et al. (2019)'s ODIR.

use serde::{Deserialize, Serialize};

use super::multinomial::{FullLinear, NewtonConfig, NewtonFit, newton};
use super::{Calibrated, Calibrator, Method, Recalibrator, check_apply, check_fit, check_setting};
use crate::error::Result;
use crate::logits::{Logits, log_softmax, softmax_into};

/// Matrix scaling: `softmax(W z + b)` on the logits `z`, `W` a full `k × k`
/// matrix, fitted by minimising the calibration split's mean NLL plus the
/// ODIR penalty of Kull et al. (2019), "Beyond temperature scaling":
/// `λ/(k(k−1)) Σ_{i≠j} W_ij² + μ/k Σ_i b_i²` (off-diagonal weights and
/// intercepts; the diagonal is not penalised).
///
/// This is dirichletcal's `MultinomialRegression(method='Full',
/// reg_lambda=λ, reg_mu=μ, reg_norm=True, ref_row=False)` on the logits —
/// the paper's penalty and normalisation. dirichletcal's defaults differ:
/// `reg_norm=False` (λ and μ not divided by `k(k−1)` and `k`) and
/// `ref_row=True` (its last row is subtracted from every row before the
/// penalty, which makes the penalty depend on the order of the classes);
/// its `MatrixScaling` class exposes neither switch. Both are fitted to the
/// optimum by Newton's method; muq stops at a gradient of `1e-10`
/// (max-abs), dirichletcal at `1e-8` (sum of absolute values) or when the
/// loss stalls. Unlike dirichletcal, muq does not clip the softmax at
/// machine epsilon inside the loss (that clip only matters for a true-class
/// probability below `2.2e-16`).
///
/// The defaults `λ = μ = 0.01` are fixed values, not the paper's choice: it
/// selects both by cross-validation on the calibration set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatrixScaling {
    /// ODIR strength on the off-diagonal weights, `λ ≥ 0` (divided by `k(k−1)`).
    pub lambda: f64,
    /// ODIR strength on the intercepts, `μ ≥ 0` (divided by `k`).
    pub mu: f64,
    /// The Newton solver's settings.
    pub newton: NewtonConfig,
}

impl Default for MatrixScaling {
    /// `λ = μ = 0.01`, default Newton settings.
    fn default() -> Self {
        MatrixScaling {
            lambda: 0.01,
            mu: 0.01,
            newton: NewtonConfig::default(),
        }
    }
}

/// What a fitted linear map reads from the logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Input {
    /// The logits themselves (matrix scaling).
    Logits,
    /// The log-softmax of the logits (Dirichlet calibration).
    LogProbs,
}

/// A fitted full linear map `softmax(W x + b)` (matrix scaling or Dirichlet
/// calibration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedLinear {
    /// Row-major `k × (k + 1)`: row `i` is `(W_i0, …, W_i,k−1, b_i)`, as
    /// dirichletcal's `weights_`.
    pub weights: Vec<f64>,
    /// How the fit went.
    pub fit: NewtonFit,
    num_classes: usize,
    input: Input,
}

impl FittedLinear {
    pub(super) fn fit(
        logits: &Logits<'_>,
        labels: &[usize],
        input: Input,
        lambda: f64,
        mu: f64,
        newton_cfg: &NewtonConfig,
    ) -> Result<Self> {
        check_fit(logits, labels)?;
        check_setting("lambda", lambda, 0.0, false)?;
        check_setting("mu", mu, 0.0, false)?;
        newton_cfg.check()?;
        let k = logits.num_classes();
        let features = features(logits, input);
        let obj = FullLinear {
            features: &features,
            labels,
            k,
            lambda: lambda / (k * (k - 1)) as f64,
            mu: mu / k as f64,
        };
        let (weights, fit) = newton(&obj, FullLinear::identity(k), newton_cfg);
        Ok(FittedLinear {
            weights,
            fit,
            num_classes: k,
            input,
        })
    }
}

/// The features a linear map reads: the logits or their log-softmax, `f64`.
fn features(logits: &Logits<'_>, input: Input) -> Vec<f64> {
    let z = logits.to_f64_vec();
    match input {
        Input::Logits => z,
        Input::LogProbs => z
            .chunks_exact(logits.num_classes())
            .flat_map(log_softmax)
            .collect(),
    }
}

impl Recalibrator for MatrixScaling {
    type Fitted = FittedLinear;

    fn fit(&self, logits: &Logits<'_>, labels: &[usize]) -> Result<FittedLinear> {
        FittedLinear::fit(
            logits,
            labels,
            Input::Logits,
            self.lambda,
            self.mu,
            &self.newton,
        )
    }
}

impl Calibrator for FittedLinear {
    fn method(&self) -> Method {
        match self.input {
            Input::Logits => Method::Ms,
            Input::LogProbs => Method::Dirichlet,
        }
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn apply(&self, logits: &Logits<'_>) -> Result<Calibrated> {
        check_apply(logits, self.num_classes)?;
        let k = self.num_classes;
        let m = k + 1;
        let x = features(logits, self.input);
        let mut probs = vec![0.0; x.len()];
        let mut s = vec![0.0; k];
        for (row, out) in x.chunks_exact(k).zip(probs.chunks_exact_mut(k)) {
            for (a, sa) in s.iter_mut().enumerate() {
                let w = &self.weights[a * m..(a + 1) * m];
                *sa = w[..k].iter().zip(row).map(|(w, x)| w * x).sum::<f64>() + w[k];
            }
            softmax_into(&s, 1.0, out);
        }
        Ok(Calibrated::from_probs(probs, k))
    }
}
