//! Temperature scaling: the exact NLL-minimising temperature.

use serde::{Deserialize, Serialize};

use crate::error::{CalibError, Result};
use crate::logits::{Logits, check_labels};

/// Search settings for [`fit_temperature_with`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemperatureConfig {
    /// Smallest temperature searched (> 0).
    pub min_temperature: f64,
    /// Largest temperature searched (> `min_temperature`).
    pub max_temperature: f64,
    /// Maximum number of Newton/bisection steps.
    pub max_iterations: usize,
    /// Stop once a step changes `ln T` by at most this much (relative to
    /// `max(1, |ln T|)`); the fitted `T` is then accurate to about this
    /// relative error.
    pub tolerance: f64,
}

impl Default for TemperatureConfig {
    /// Search `T ∈ [1e-4, 1e4]`, at most 100 steps, tolerance `1e-12` in `ln T`.
    fn default() -> Self {
        TemperatureConfig {
            min_temperature: 1e-4,
            max_temperature: 1e4,
            max_iterations: 100,
            tolerance: 1e-12,
        }
    }
}

/// Result of fitting a temperature.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TemperatureFit {
    /// The fitted temperature `T > 0` (divide logits by it).
    pub temperature: f64,
    /// Objective evaluations made by the search: the start `T = 1`, the
    /// search bound on the downhill side, then one per Newton/bisection step.
    pub iterations: usize,
    /// `d NLL / d ln T` at the fitted temperature (≈ 0 at an interior optimum).
    pub gradient: f64,
    /// Mean NLL of the fitting set at `T = 1`.
    pub nll_before: f64,
    /// Mean NLL of the fitting set at the fitted temperature (≤ `nll_before`).
    pub nll_after: f64,
    /// `true` when the step-size or gradient tolerance was met at an interior
    /// point; `false` when the iteration limit was hit or the optimum lies at
    /// (or beyond) a search bound, e.g. `T → 0` for a perfectly separated set.
    pub converged: bool,
}

/// Objective and derivatives in `u = ln β = −ln T`.
#[derive(Debug, Clone, Copy)]
struct Eval {
    nll: f64,
    /// `d NLL / d u`.
    grad: f64,
    /// `d² NLL / d u²`.
    hess: f64,
}

/// NLL as a function of the inverse temperature; logits pre-widened to `f64`.
struct Objective<'a> {
    z: Vec<f64>,
    labels: &'a [usize],
    k: usize,
}

impl Objective<'_> {
    /// NLL(β) = mean_i [logsumexp(β z_i) − β z_iy] is convex in β with
    /// NLL' = mean(E_p[z] − z_y) and NLL'' = mean(Var_p[z]); mapped to `u = ln β`.
    fn eval(&self, u: f64) -> Eval {
        let beta = u.exp();
        let (mut nll, mut g, mut h) = (0.0, 0.0, 0.0);
        let mut w = vec![0.0; self.k];
        for (row, &y) in self.z.chunks_exact(self.k).zip(self.labels) {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for (wj, &zj) in w.iter_mut().zip(row) {
                *wj = (beta * (zj - max)).exp();
                sum += *wj;
            }
            let mean: f64 = w.iter().zip(row).map(|(wj, zj)| wj * zj).sum::<f64>() / sum;
            let var: f64 = w
                .iter()
                .zip(row)
                .map(|(wj, zj)| wj * (zj - mean) * (zj - mean))
                .sum::<f64>()
                / sum;
            nll += beta * (max - row[y]) + sum.ln();
            g += mean - row[y];
            h += var;
        }
        let n = self.labels.len() as f64;
        let (nll, g_beta, h_beta) = (nll / n, g / n, h / n);
        Eval {
            nll,
            grad: beta * g_beta,
            hess: beta * g_beta + beta * beta * h_beta,
        }
    }
}

/// Mean NLL of `logits / temperature` against `labels`.
///
/// # Errors
/// [`CalibError::InvalidTemperature`], or a label error as in
/// [`Predictions::new`](crate::Predictions::new).
pub fn nll_at_temperature(logits: &Logits<'_>, labels: &[usize], temperature: f64) -> Result<f64> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(CalibError::InvalidTemperature(temperature));
    }
    check_labels(labels, logits.len(), logits.num_classes())?;
    let obj = Objective {
        z: logits.to_f64_vec(),
        labels,
        k: logits.num_classes(),
    };
    Ok(obj.eval(-temperature.ln()).nll)
}

/// Fits the temperature minimising the mean NLL, with [`TemperatureConfig::default`].
///
/// # Errors
/// Label errors as in [`Predictions::new`](crate::Predictions::new).
pub fn fit_temperature(logits: &Logits<'_>, labels: &[usize]) -> Result<TemperatureFit> {
    fit_temperature_with(logits, labels, &TemperatureConfig::default())
}

/// Fits the temperature `T > 0` minimising the mean NLL of `logits / T`.
///
/// The NLL is convex in `β = 1/T`, so its derivative changes sign at most
/// once. The search runs Newton's method in `u = ln β = −ln T` starting from
/// `T = 1`, keeping a bracket `[lo, hi]` around the root of the derivative
/// from the signs seen so far; a Newton step that leaves the bracket (or has
/// non-positive curvature, or fails to halve the step before last) is
/// replaced by bisection of the bracket. Before that, the search bound on the
/// downhill side is evaluated once: if the derivative has not changed sign
/// there, the optimum lies at or beyond it and that bound is returned with
/// `converged = false`. Typical fits take 6–9 evaluations.
///
/// # Errors
/// [`CalibError::InvalidTemperature`] for bad bounds; label errors as in
/// [`Predictions::new`](crate::Predictions::new).
pub fn fit_temperature_with(
    logits: &Logits<'_>,
    labels: &[usize],
    config: &TemperatureConfig,
) -> Result<TemperatureFit> {
    for t in [config.min_temperature, config.max_temperature] {
        if !(t.is_finite() && t > 0.0) {
            return Err(CalibError::InvalidTemperature(t));
        }
    }
    if config.min_temperature >= config.max_temperature {
        return Err(CalibError::InvalidTemperature(config.max_temperature));
    }
    check_labels(labels, logits.len(), logits.num_classes())?;
    let obj = Objective {
        z: logits.to_f64_vec(),
        labels,
        k: logits.num_classes(),
    };
    // u = −ln T = ln β; the bounds swap.
    let (u_min, u_max) = (-config.max_temperature.ln(), -config.min_temperature.ln());
    let finish =
        |u: f64, e: Eval, iterations: usize, nll_before: f64, converged: bool| TemperatureFit {
            temperature: (-u).exp(),
            iterations,
            gradient: -e.grad,
            nll_before,
            nll_after: e.nll,
            converged,
        };
    let mut u = 0.0f64.clamp(u_min, u_max);
    let mut e = obj.eval(u);
    let nll_before = if u == 0.0 { e.nll } else { obj.eval(0.0).nll };
    let mut iterations = 1;
    if e.grad == 0.0 {
        return Ok(finish(u, e, iterations, nll_before, true));
    }
    // The derivative is increasing in u (convexity in β): find the bound on
    // the downhill side and make sure the minimum lies inside it.
    let (mut lo, mut hi) = if e.grad < 0.0 { (u, u_max) } else { (u_min, u) };
    let bound = if e.grad < 0.0 { u_max } else { u_min };
    if bound != u {
        let eb = obj.eval(bound);
        iterations += 1;
        let beyond = if e.grad < 0.0 {
            eb.grad <= 0.0
        } else {
            eb.grad >= 0.0
        };
        if beyond {
            // Still downhill at the bound: the optimum is at or beyond it.
            return Ok(finish(bound, eb, iterations, nll_before, false));
        }
    } else {
        return Ok(finish(u, e, iterations, nll_before, false));
    }
    // Safeguarded Newton (in the manner of `rtsafe`): bisect whenever the
    // Newton step leaves the bracket or fails to halve the step before last.
    let mut dx_old = hi - lo;
    let mut dx = dx_old;
    loop {
        // Converged when the Newton step (or the bracket) is below tolerance.
        let scale = u.abs().max(1.0);
        if (e.hess > 0.0 && (e.grad / e.hess).abs() <= config.tolerance * scale)
            || hi - lo <= config.tolerance * scale
        {
            return Ok(finish(u, e, iterations, nll_before, true));
        }
        let newton_ok = e.hess > 0.0 && {
            let target = u - e.grad / e.hess;
            target > lo && target < hi && (2.0 * e.grad).abs() <= (dx_old * e.hess).abs()
        };
        dx_old = dx;
        if newton_ok {
            dx = e.grad / e.hess;
            u -= dx;
        } else {
            dx = 0.5 * (hi - lo);
            u = lo + dx;
        }
        e = obj.eval(u);
        iterations += 1;
        if e.grad == 0.0 {
            return Ok(finish(u, e, iterations, nll_before, true));
        }
        if iterations >= config.max_iterations {
            return Ok(finish(u, e, iterations, nll_before, false));
        }
        if e.grad > 0.0 {
            hi = u;
        } else {
            lo = u;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_class_closed_form() {
        // Logits (a, 0) with label 0 in 3 of 4 samples and label 1 in 1: the NLL
        // is minimised where sigmoid(a/T) = 3/4, i.e. T = a / ln 3.
        let a = 2.0f64;
        let z = [a, 0.0, a, 0.0, a, 0.0, a, 0.0];
        let l = Logits::new(&z, 2).unwrap();
        let fit = fit_temperature(&l, &[0, 0, 0, 1]).unwrap();
        let expected = a / 3f64.ln();
        assert!(
            (fit.temperature - expected).abs() < 1e-12 * expected,
            "{fit:?}"
        );
        assert!(fit.converged);
        assert!(fit.iterations <= 10, "{fit:?}");
        assert!(fit.gradient.abs() < 1e-12);
        assert!(fit.nll_after <= fit.nll_before);
        let direct = nll_at_temperature(&l, &[0, 0, 0, 1], expected).unwrap();
        assert!((fit.nll_after - direct).abs() < 1e-15);
    }

    #[test]
    fn separable_data_runs_to_the_lower_bound() {
        let z = [3.0f32, 0.0, 0.0, 3.0];
        let l = Logits::new(&z, 2).unwrap();
        let fit = fit_temperature(&l, &[0, 1]).unwrap();
        assert!(!fit.converged);
        assert!((fit.temperature - 1e-4).abs() < 1e-16);
        assert!(fit.nll_after < fit.nll_before);
    }

    #[test]
    fn uninformative_logits_run_to_the_upper_bound() {
        // Always confidently wrong on one sample, right on the other with the
        // same margin: the best one can do is uniform probabilities, T → ∞.
        let z = [3.0f32, 0.0, 3.0, 0.0];
        let l = Logits::new(&z, 2).unwrap();
        let fit = fit_temperature(&l, &[0, 1]).unwrap();
        assert!(!fit.converged);
        assert!((fit.temperature - 1e4).abs() < 1e-8);
    }

    #[test]
    fn constant_rows_keep_temperature_one() {
        let l = Logits::new(&[1.0f32; 6], 3).unwrap();
        let fit = fit_temperature(&l, &[0, 2]).unwrap();
        assert_eq!(fit.temperature, 1.0);
        assert!(fit.converged);
        assert_eq!(fit.iterations, 1);
    }

    #[test]
    fn rejects_bad_config() {
        let l = Logits::new(&[1.0f32, 0.0], 2).unwrap();
        let bad = TemperatureConfig {
            min_temperature: 0.0,
            ..TemperatureConfig::default()
        };
        assert_eq!(
            fit_temperature_with(&l, &[0], &bad).unwrap_err(),
            CalibError::InvalidTemperature(0.0)
        );
        assert_eq!(
            nll_at_temperature(&l, &[0], -1.0).unwrap_err(),
            CalibError::InvalidTemperature(-1.0)
        );
    }
}
