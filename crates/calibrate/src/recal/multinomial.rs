//! Newton's method for the convex multinomial-logistic fits behind vector
//! scaling, matrix scaling and Dirichlet calibration, and the full
//! `k × (k + 1)` linear map with ODIR that the last two share.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::logits::softmax_into;

use super::check_setting;

/// Settings of the Newton solver used by `vs`, `ms` and `dirichlet`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewtonConfig {
    /// Most Newton steps (each one Hessian, one Cholesky solve and a
    /// backtracking line search).
    pub max_iterations: usize,
    /// Stop once the largest absolute entry of the objective's gradient is
    /// at most this.
    pub gradient_tolerance: f64,
}

impl Default for NewtonConfig {
    /// 100 steps, gradient tolerance `1e-10`.
    fn default() -> Self {
        NewtonConfig {
            max_iterations: 100,
            gradient_tolerance: 1e-10,
        }
    }
}

impl NewtonConfig {
    pub(super) fn check(&self) -> Result<()> {
        check_setting(
            "newton.gradient_tolerance",
            self.gradient_tolerance,
            0.0,
            true,
        )
    }
}

/// How a Newton fit went.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NewtonFit {
    /// The minimised objective at the solution: mean NLL of the fitting set
    /// plus the regularisation penalty (0 where there is none).
    pub objective: f64,
    /// Mean NLL of the fitting set at the solution.
    pub nll: f64,
    /// Mean NLL of the fitting set at the starting point (the identity map).
    pub nll_before: f64,
    /// Largest absolute entry of the objective's gradient at the solution.
    pub gradient: f64,
    /// Newton steps taken.
    pub iterations: usize,
    /// Whether the gradient tolerance was met.
    pub converged: bool,
}

/// A smooth convex objective in `dim()` parameters.
pub(super) trait Objective {
    /// Number of parameters.
    fn dim(&self) -> usize;
    /// Mean NLL of the fitting set at `theta` (no penalty).
    fn nll(&self, theta: &[f64]) -> f64;
    /// The penalty at `theta`, added to its gradient and (diagonal) Hessian.
    fn penalty(&self, theta: &[f64], grad: Option<&mut [f64]>, hess: Option<&mut [f64]>) -> f64;
    /// Mean NLL, writing its gradient into `grad` and, if given, its Hessian
    /// (dense, row-major `dim × dim`) into `hess`.
    fn nll_derivatives(&self, theta: &[f64], grad: &mut [f64], hess: Option<&mut [f64]>) -> f64;

    /// Objective value.
    fn value(&self, theta: &[f64]) -> f64 {
        self.nll(theta) + self.penalty(theta, None, None)
    }

    /// Objective value, gradient and optionally Hessian.
    fn derivatives(&self, theta: &[f64], grad: &mut [f64], mut hess: Option<&mut [f64]>) -> f64 {
        let nll = self.nll_derivatives(theta, grad, hess.as_deref_mut());
        nll + self.penalty(theta, Some(grad), hess)
    }
}

/// Minimises `obj` from `theta` by Newton's method with a backtracking
/// (Armijo) line search — full steps, kept while they shrink the gradient,
/// once the predicted decrease is below the objective's resolution; the
/// Newton system is solved by Cholesky, with a
/// growing ridge added to the Hessian's diagonal when it is not numerically
/// positive definite (an unregularised, over-parametrised fit).
pub(super) fn newton(
    obj: &impl Objective,
    mut theta: Vec<f64>,
    cfg: &NewtonConfig,
) -> (Vec<f64>, NewtonFit) {
    let d = obj.dim();
    let nll_before = obj.nll(&theta);
    let mut grad = vec![0.0; d];
    let mut hess = vec![0.0; d * d];
    let mut trial = vec![0.0; d];
    let mut iterations = 0;
    let mut f = obj.derivatives(&theta, &mut grad, None);
    loop {
        let gmax = max_abs(&grad);
        if gmax <= cfg.gradient_tolerance || iterations >= cfg.max_iterations {
            break;
        }
        obj.derivatives(&theta, &mut grad, Some(&mut hess));
        let mut step = solve_spd(&hess, &grad, d);
        let mut slope: f64 = step.iter().zip(&grad).map(|(s, g)| s * g).sum();
        if slope.is_nan() || slope <= 0.0 {
            // Not a descent direction (numerically): fall back to the gradient.
            step.clone_from(&grad);
            slope = grad.iter().map(|g| g * g).sum();
        }
        iterations += 1;
        if slope <= 1e-10 * f.abs().max(1.0) {
            // The predicted decrease is within a few thousand ulps of the
            // objective, too small for a line search to see: in this
            // quadratic regime take the full Newton step, and keep it only
            // if it shrinks the gradient.
            for ((x, s), th) in trial.iter_mut().zip(&step).zip(&theta) {
                *x = th - s;
            }
            let mut trial_grad = vec![0.0; d];
            let f_new = obj.derivatives(&trial, &mut trial_grad, None);
            let g_new = max_abs(&trial_grad);
            if g_new.is_nan() || g_new >= gmax {
                break;
            }
            std::mem::swap(&mut theta, &mut trial);
            grad = trial_grad;
            f = f_new;
            continue;
        }
        // Backtracking (Armijo) line search.
        let mut t = 1.0;
        let mut accepted = false;
        for _ in 0..60 {
            for ((x, s), th) in trial.iter_mut().zip(&step).zip(&theta) {
                *x = th - t * s;
            }
            let f_new = obj.value(&trial);
            if f_new < f - 1e-4 * t * slope {
                accepted = true;
                break;
            }
            t *= 0.5;
        }
        if !accepted {
            // No decrease left to find at floating-point resolution.
            break;
        }
        std::mem::swap(&mut theta, &mut trial);
        f = obj.derivatives(&theta, &mut grad, None);
    }
    let gradient = max_abs(&grad);
    let fit = NewtonFit {
        objective: f,
        nll: obj.nll(&theta),
        nll_before,
        gradient,
        iterations,
        converged: gradient <= cfg.gradient_tolerance,
    };
    (theta, fit)
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Solves `h x = g` for symmetric positive (semi-)definite `h` (row-major
/// `d × d`) by Cholesky; where a pivot is not clearly positive, retries with
/// a ridge `r·I` growing from `1e-12 · max diag` by factors of 10.
fn solve_spd(h: &[f64], g: &[f64], d: usize) -> Vec<f64> {
    let scale = (0..d)
        .map(|i| h[i * d + i].abs())
        .fold(f64::MIN_POSITIVE, f64::max);
    let mut ridge = 0.0;
    let mut l = vec![0.0; d * d];
    loop {
        if cholesky(h, ridge, scale, d, &mut l) {
            // Forward then back substitution: L y = g, Lᵀ x = y.
            let mut x = g.to_vec();
            for i in 0..d {
                let s: f64 = (0..i).map(|j| l[i * d + j] * x[j]).sum();
                x[i] = (x[i] - s) / l[i * d + i];
            }
            for i in (0..d).rev() {
                let s: f64 = (i + 1..d).map(|j| l[j * d + i] * x[j]).sum();
                x[i] = (x[i] - s) / l[i * d + i];
            }
            return x;
        }
        ridge = if ridge == 0.0 {
            1e-12 * scale
        } else {
            ridge * 10.0
        };
    }
}

/// Lower Cholesky factor of `h + ridge·I` into `l`; `false` when a pivot is
/// at most `1e-13 · scale` (not numerically positive definite).
fn cholesky(h: &[f64], ridge: f64, scale: f64, d: usize, l: &mut [f64]) -> bool {
    l.fill(0.0);
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|m| l[i * d + m] * l[j * d + m]).sum();
            if i == j {
                let pivot = h[i * d + i] + ridge - s;
                if pivot.is_nan() || pivot <= 1e-13 * scale {
                    return false;
                }
                l[i * d + i] = pivot.sqrt();
            } else {
                l[i * d + j] = (h[i * d + j] - s) / l[j * d + j];
            }
        }
    }
    true
}

/// The multinomial-logistic objective of a full linear map
/// `s_i = W x_i` with `x_i = (features_i, 1)` and `W` of shape `k × (k + 1)`
/// (row-major parameters), with Kull et al.'s ODIR penalty
/// `λ/(k(k−1)) Σ_{a≠j} W_aj² + μ/k Σ_a W_a,k²` (off-diagonal weights and
/// intercepts; the diagonal is free). No reference row is fixed: the
/// penalty makes the over-parametrised fit unique when `λ, μ > 0`.
pub(super) struct FullLinear<'a> {
    /// Row-major `n × k` features (logits or log-probabilities).
    pub features: &'a [f64],
    pub labels: &'a [usize],
    pub k: usize,
    /// `λ / (k(k−1))`.
    pub lambda: f64,
    /// `μ / k`.
    pub mu: f64,
}

impl FullLinear<'_> {
    fn m(&self) -> usize {
        self.k + 1
    }

    /// Scores of sample `i` into `s`.
    fn scores(&self, theta: &[f64], i: usize, s: &mut [f64]) {
        let (k, m) = (self.k, self.m());
        let x = &self.features[i * k..(i + 1) * k];
        for (a, sa) in s.iter_mut().enumerate() {
            let w = &theta[a * m..(a + 1) * m];
            *sa = w[..k].iter().zip(x).map(|(w, x)| w * x).sum::<f64>() + w[k];
        }
    }

    /// The identity map `W = [I | 0]` (dirichletcal's starting point).
    pub fn identity(k: usize) -> Vec<f64> {
        let m = k + 1;
        let mut theta = vec![0.0; k * m];
        for a in 0..k {
            theta[a * m + a] = 1.0;
        }
        theta
    }
}

impl Objective for FullLinear<'_> {
    fn dim(&self) -> usize {
        self.k * self.m()
    }

    fn nll(&self, theta: &[f64]) -> f64 {
        let k = self.k;
        let mut s = vec![0.0; k];
        let mut p = vec![0.0; k];
        let mut total = 0.0;
        for (i, &y) in self.labels.iter().enumerate() {
            self.scores(theta, i, &mut s);
            total += softmax_into(&s, 1.0, &mut p) - s[y];
        }
        total / self.labels.len() as f64
    }

    fn penalty(&self, theta: &[f64], grad: Option<&mut [f64]>, hess: Option<&mut [f64]>) -> f64 {
        let (k, m) = (self.k, self.m());
        let mut value = 0.0;
        let mut grad = grad;
        let mut hess = hess;
        let d = self.dim();
        for a in 0..k {
            for j in 0..m {
                let coef = if j == k {
                    self.mu
                } else if j != a {
                    self.lambda
                } else {
                    continue;
                };
                let idx = a * m + j;
                let w = theta[idx];
                value += coef * w * w;
                if let Some(g) = grad.as_deref_mut() {
                    g[idx] += 2.0 * coef * w;
                }
                if let Some(h) = hess.as_deref_mut() {
                    h[idx * d + idx] += 2.0 * coef;
                }
            }
        }
        value
    }

    fn nll_derivatives(&self, theta: &[f64], grad: &mut [f64], hess: Option<&mut [f64]>) -> f64 {
        let (k, m) = (self.k, self.m());
        let n = self.labels.len();
        let tri = m * (m + 1) / 2;
        let pairs = k * (k + 1) / 2;
        grad.fill(0.0);
        let mut s = vec![0.0; k];
        let mut p = vec![0.0; k];
        let mut x = vec![1.0; m];
        // Samples are taken BATCH at a time so that each block entry is
        // loaded and stored once per batch rather than once per sample.
        const BATCH: usize = 8;
        let mut coef = vec![0.0; BATCH * pairs];
        let mut xxs = vec![0.0; BATCH * tri];
        let mut filled = 0;
        // Per class pair (a ≤ b), the upper triangle of Σ_i c_iab x_i x_iᵀ
        // with c_iab = p_ia [a = b] − p_ia p_ib.
        let want_hess = hess.is_some();
        let mut blocks = if want_hess {
            vec![0.0; pairs * tri]
        } else {
            Vec::new()
        };
        let flush = |blocks: &mut [f64], coef: &[f64], xxs: &[f64], filled: usize| {
            for (q, block) in blocks.chunks_exact_mut(tri).enumerate() {
                let mut c = [0.0; BATCH];
                for (b, cb) in c.iter_mut().enumerate().take(filled) {
                    *cb = coef[b * pairs + q];
                }
                for (t, dst) in block.iter_mut().enumerate() {
                    let mut acc = *dst;
                    for (b, cb) in c.iter().enumerate() {
                        acc += cb * xxs[b * tri + t];
                    }
                    *dst = acc;
                }
            }
        };
        let mut total = 0.0;
        for (i, &y) in self.labels.iter().enumerate() {
            x[..k].copy_from_slice(&self.features[i * k..(i + 1) * k]);
            self.scores(theta, i, &mut s);
            total += softmax_into(&s, 1.0, &mut p) - s[y];
            for a in 0..k {
                let r = p[a] - if a == y { 1.0 } else { 0.0 };
                for (g, xj) in grad[a * m..(a + 1) * m].iter_mut().zip(&x) {
                    *g += r * xj;
                }
            }
            if want_hess {
                let xx = &mut xxs[filled * tri..(filled + 1) * tri];
                let mut t = 0;
                for j in 0..m {
                    for l in j..m {
                        xx[t] = x[j] * x[l];
                        t += 1;
                    }
                }
                let c = &mut coef[filled * pairs..(filled + 1) * pairs];
                let mut q = 0;
                for a in 0..k {
                    for b in a..k {
                        c[q] = if a == b {
                            p[a] - p[a] * p[a]
                        } else {
                            -p[a] * p[b]
                        };
                        q += 1;
                    }
                }
                filled += 1;
                if filled == BATCH {
                    flush(&mut blocks, &coef, &xxs, filled);
                    filled = 0;
                }
            }
        }
        if want_hess && filled > 0 {
            flush(&mut blocks, &coef, &xxs, filled);
        }
        let inv_n = 1.0 / n as f64;
        for g in grad.iter_mut() {
            *g *= inv_n;
        }
        if let Some(h) = hess {
            let d = k * m;
            let mut q = 0;
            for a in 0..k {
                for b in a..k {
                    let block = &blocks[q * tri..(q + 1) * tri];
                    let mut t = 0;
                    for j in 0..m {
                        for l in j..m {
                            let v = block[t] * inv_n;
                            t += 1;
                            let (r1, c1) = (a * m + j, b * m + l);
                            let (r2, c2) = (a * m + l, b * m + j);
                            h[r1 * d + c1] = v;
                            h[c1 * d + r1] = v;
                            h[r2 * d + c2] = v;
                            h[c2 * d + r2] = v;
                        }
                    }
                    q += 1;
                }
            }
        }
        total * inv_n
    }
}
