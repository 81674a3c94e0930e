//! `platt`: Platt scaling (Platt 1999), as uncertainty-calibration's
//! `get_platt_scaler`.

use serde::{Deserialize, Serialize};

use super::multinomial::{NewtonConfig, NewtonFit, Objective, newton};
use super::{
    BinaryMap, Calibrated, Calibrator, Method, Mode, PerMode, Recalibrator, apply_maps,
    check_apply, check_fit, check_setting,
};
use crate::error::Result;
use crate::logits::Logits;

/// Platt scaling: `σ(a · logit(p) + b)` of a probability `p`, with `(a, b)`
/// the logistic-regression fit of the 0/1 targets on `logit(p)`.
///
/// As uncertainty-calibration 0.1.4's `get_platt_scaler` (Kumar et al.
/// 2019), which muq follows: `p` clipped to `[1e-12, 1 − 1e-12]`,
/// `logit(p) = ln(p / (1 − p))`, scikit-learn's
/// `LogisticRegression(C=1e10, solver='lbfgs')` — the log-loss summed over
/// samples plus `a² / (2C)` (the intercept unpenalised). muq solves that to
/// its optimum by Newton's method; scikit-learn's lbfgs stops at its
/// default `tol=1e-4`, which moves the top-label confidences by up to
/// `2e-5` on the reference fixture (and one-vs-rest probabilities by up to
/// `3e-4` on an earlier, more miscalibrated draw of it). [`Mode::TopLabel`] (`PlattTopCalibrator`) fits
/// the top-label confidence against correctness; [`Mode::OneVsRest`] fits
/// each class (as `PlattBinnerMarginalCalibrator`'s scaling step) and
/// normalises each row. If every target is the same, no finite fit exists:
/// the map is the constant 0 or 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlattScaling {
    /// Top-label (default) or one-vs-rest.
    pub mode: Mode,
    /// Inverse L2 strength on the slope, scikit-learn's `C` (> 0).
    pub c: f64,
    /// The Newton solver's settings.
    pub newton: NewtonConfig,
}

impl Default for PlattScaling {
    /// Top-label, `C = 1e10` (uncertainty-calibration's), default Newton settings.
    fn default() -> Self {
        PlattScaling {
            mode: Mode::TopLabel,
            c: 1e10,
            newton: NewtonConfig::default(),
        }
    }
}

/// A fitted Platt map.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlattMap {
    /// `σ(slope · logit(p) + intercept)`.
    Logistic {
        /// `a`.
        slope: f64,
        /// `b`.
        intercept: f64,
        /// How the fit went.
        fit: NewtonFit,
    },
    /// Every fitting target was the same: this value (0 or 1).
    Constant(f64),
}

/// uncertainty-calibration's feature: `ln(p / (1 − p))` of `p` clipped to
/// `[1e-12, 1 − 1e-12]`.
fn log_odds(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    (p / (1.0 - p)).ln()
}

fn sigmoid(s: f64) -> f64 {
    1.0 / (1.0 + (-s).exp())
}

/// Mean log-loss of `σ(a x + b)` plus `a² / (2 C n)` (scikit-learn's
/// objective divided by `n`).
struct Logistic<'a> {
    x: &'a [f64],
    y: &'a [bool],
    c: f64,
}

impl Objective for Logistic<'_> {
    fn dim(&self) -> usize {
        2
    }

    fn nll(&self, theta: &[f64]) -> f64 {
        let total: f64 = self
            .x
            .iter()
            .zip(self.y)
            .map(|(&x, &y)| softplus_loss(theta[0] * x + theta[1], y))
            .sum();
        total / self.x.len() as f64
    }

    fn penalty(&self, theta: &[f64], grad: Option<&mut [f64]>, hess: Option<&mut [f64]>) -> f64 {
        let strength = 1.0 / (self.c * self.x.len() as f64);
        if let Some(g) = grad {
            g[0] += strength * theta[0];
        }
        if let Some(h) = hess {
            h[0] += strength;
        }
        0.5 * strength * theta[0] * theta[0]
    }

    fn nll_derivatives(&self, theta: &[f64], grad: &mut [f64], hess: Option<&mut [f64]>) -> f64 {
        let (mut total, mut g, mut h) = (0.0, [0.0; 2], [0.0; 3]);
        for (&x, &y) in self.x.iter().zip(self.y) {
            let s = theta[0] * x + theta[1];
            total += softplus_loss(s, y);
            let p = sigmoid(s);
            let r = p - if y { 1.0 } else { 0.0 };
            g[0] += r * x;
            g[1] += r;
            let v = p * (1.0 - p);
            h[0] += v * x * x;
            h[1] += v * x;
            h[2] += v;
        }
        let inv_n = 1.0 / self.x.len() as f64;
        grad[0] = g[0] * inv_n;
        grad[1] = g[1] * inv_n;
        if let Some(hess) = hess {
            hess.copy_from_slice(&[h[0] * inv_n, h[1] * inv_n, h[1] * inv_n, h[2] * inv_n]);
        }
        total * inv_n
    }
}

/// `−ln σ(s)` for a positive target, `−ln(1 − σ(s))` otherwise, stably.
fn softplus_loss(s: f64, y: bool) -> f64 {
    let t = if y { -s } else { s };
    // ln(1 + e^t)
    if t > 0.0 {
        t + (-t).exp().ln_1p()
    } else {
        t.exp().ln_1p()
    }
}

impl PlattMap {
    /// Fits the map on probabilities `p` against `targets`.
    pub(super) fn fit(p: &[f64], targets: &[bool], c: f64, cfg: &NewtonConfig) -> Self {
        if targets.iter().all(|&t| t == targets[0]) {
            return PlattMap::Constant(if targets[0] { 1.0 } else { 0.0 });
        }
        let x: Vec<f64> = p.iter().map(|&v| log_odds(v)).collect();
        let obj = Logistic {
            x: &x,
            y: targets,
            c,
        };
        let (theta, fit) = newton(&obj, vec![0.0, 0.0], cfg);
        PlattMap::Logistic {
            slope: theta[0],
            intercept: theta[1],
            fit,
        }
    }
}

impl BinaryMap for PlattMap {
    fn map(&self, p: f64) -> f64 {
        match *self {
            PlattMap::Logistic {
                slope, intercept, ..
            } => sigmoid(log_odds(p) * slope + intercept),
            PlattMap::Constant(v) => v,
        }
    }
}

/// Fitted Platt scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedPlatt {
    /// The maps, for the top label or per class.
    pub maps: PerMode<PlattMap>,
    num_classes: usize,
}

impl PlattScaling {
    pub(super) fn check(&self) -> Result<()> {
        check_setting("c", self.c, 0.0, true)?;
        self.newton.check()
    }
}

impl Recalibrator for PlattScaling {
    type Fitted = FittedPlatt;

    fn fit(&self, logits: &Logits<'_>, labels: &[usize]) -> Result<FittedPlatt> {
        check_fit(logits, labels)?;
        self.check()?;
        let maps = PerMode::fit(self.mode, logits, labels, |p, t| {
            Ok(PlattMap::fit(p, t, self.c, &self.newton))
        })?;
        Ok(FittedPlatt {
            maps,
            num_classes: logits.num_classes(),
        })
    }
}

impl Calibrator for FittedPlatt {
    fn method(&self) -> Method {
        Method::Platt
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn apply(&self, logits: &Logits<'_>) -> Result<Calibrated> {
        check_apply(logits, self.num_classes)?;
        Ok(apply_maps(&self.maps, logits))
    }
}
