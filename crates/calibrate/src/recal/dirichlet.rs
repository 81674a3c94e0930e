//! `dirichlet`: Dirichlet calibration (Kull et al. 2019) with ODIR.

use serde::{Deserialize, Serialize};

use super::Recalibrator;
use super::matrix::{FittedLinear, Input};
use super::multinomial::NewtonConfig;
use crate::error::Result;
use crate::logits::Logits;

/// Dirichlet calibration: `softmax(W ln p + b)` with `p = softmax(z)`, i.e.
/// matrix scaling on the log-probabilities, with the same ODIR penalty
/// `λ/(k(k−1)) Σ_{i≠j} W_ij² + μ/k Σ_i b_i²` (see [`MatrixScaling`](super::MatrixScaling)
/// for the solver and the penalty's conventions).
///
/// This is dirichletcal's `FullDirichletCalibrator(reg_lambda=λ, reg_mu=μ,
/// reg_norm=True, ref_row=False)` — the paper's formulation. muq computes
/// `ln p` as the log-softmax of the logits, where dirichletcal takes
/// `log(clip(p, tiny, 1 − tiny))` of given probabilities; the two agree
/// unless a probability underflows. Defaults `λ = μ = 0.01` (fixed; the
/// paper cross-validates them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirichletCalibration {
    /// ODIR strength on the off-diagonal weights, `λ ≥ 0` (divided by `k(k−1)`).
    pub lambda: f64,
    /// ODIR strength on the intercepts, `μ ≥ 0` (divided by `k`).
    pub mu: f64,
    /// The Newton solver's settings.
    pub newton: NewtonConfig,
}

impl Default for DirichletCalibration {
    /// `λ = μ = 0.01`, default Newton settings.
    fn default() -> Self {
        DirichletCalibration {
            lambda: 0.01,
            mu: 0.01,
            newton: NewtonConfig::default(),
        }
    }
}

impl Recalibrator for DirichletCalibration {
    type Fitted = FittedLinear;

    fn fit(&self, logits: &Logits<'_>, labels: &[usize]) -> Result<FittedLinear> {
        FittedLinear::fit(
            logits,
            labels,
            Input::LogProbs,
            self.lambda,
            self.mu,
            &self.newton,
        )
    }
}
