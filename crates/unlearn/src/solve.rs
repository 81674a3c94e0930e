//! Solving `(H + λI)·x = g` with only Hessian-vector products: conjugate
//! gradients and LiSSA.
//!
//! The Hessian is reached through the [`Hvp`] trait, so the solvers run
//! unchanged on a ResNet (finite-difference products, see
//! [`FiniteDiffHvp`](crate::FiniteDiffHvp)) and on small problems whose
//! Hessian is known exactly (the tests).

use muq_resnet::{Gradients, Progress};
use serde::{Deserialize, Serialize};

use crate::{Result, Solver, UnlearnError};

/// A Hessian-vector product oracle: `v ↦ H·v` for a fixed symmetric `H`,
/// vectors shaped like the trainable parameters.
pub trait Hvp {
    /// `H·v`.
    ///
    /// # Errors
    /// Whatever evaluating the product fails with.
    fn apply(&mut self, v: &Gradients) -> Result<Gradients>;
}

impl<T: Hvp + ?Sized> Hvp for &mut T {
    fn apply(&mut self, v: &Gradients) -> Result<Gradients> {
        (**self).apply(v)
    }
}

/// Settings shared by the solvers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SolveOptions {
    /// λ in `(H + λI)·x = g`.
    pub damping: f64,
    /// Most iterations (each costs one Hessian-vector product).
    pub max_iters: usize,
    /// Stop once `‖(H+λI)x − g‖/‖g‖ ≤ tol`.
    pub tol: f64,
    /// [`Progress::Stderr`] prints one line per iteration.
    pub progress: Progress,
}

/// Why a solver stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The relative residual reached `tol`.
    Converged,
    /// `max_iters` iterations were taken.
    MaxIters,
    /// CG met a direction `p` with `pᵀ(H+λI)p ≤ 0` (the damped Hessian is
    /// not positive definite there) and returned the iterate so far; more
    /// damping helps.
    NegativeCurvature,
}

/// What a solve did and how well it went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SolveReport {
    /// Which solver.
    pub solver: Solver,
    /// Iterations taken (updates of `x`).
    pub iterations: usize,
    /// Hessian-vector products evaluated, including the final residual check.
    pub hvps: usize,
    /// The final relative residual `‖(H+λI)x − g‖/‖g‖`, computed with an
    /// explicit product (1 for `x = 0`, 0 for `g = 0`).
    pub residual: f64,
    /// Relative residual before each iteration and after the last: CG's
    /// recurrence (exact in exact arithmetic), LiSSA's explicit residuals.
    pub residual_history: Vec<f64>,
    /// Why it stopped.
    pub stop: StopReason,
}

/// A solution with its report.
#[derive(Clone, Debug)]
pub struct Solution {
    /// The approximate `x = (H + λI)⁻¹·g`.
    pub x: Gradients,
    /// How it was obtained.
    pub report: SolveReport,
}

/// `(H + λI)·v`.
fn damped<H: Hvp + ?Sized>(hvp: &mut H, v: &Gradients, damping: f64) -> Result<Gradients> {
    let hv = hvp.apply(v)?;
    if damping == 0.0 {
        Ok(hv)
    } else {
        Ok(hv.add(&v.scale(damping)?)?)
    }
}

fn trivial(solver: Solver, g: &Gradients) -> Result<Solution> {
    Ok(Solution {
        x: g.scale(0.0)?,
        report: SolveReport {
            solver,
            iterations: 0,
            hvps: 0,
            residual: 0.0,
            residual_history: vec![0.0],
            stop: StopReason::Converged,
        },
    })
}

fn say(opts: &SolveOptions, solver: Solver, iteration: usize, residual: f64) {
    if opts.progress == Progress::Stderr {
        eprintln!(
            "{:>6} iter {iteration:>4}  relative residual {residual:.3e}",
            solver.as_str()
        );
    }
}

/// Conjugate gradients on `(H + λI)·x = g` from `x = 0`.
///
/// Stops when the recurrence's relative residual reaches `tol`, after
/// `max_iters` iterations, or on negative curvature (returning the iterate
/// reached, see [`StopReason::NegativeCurvature`]); then checks the
/// residual with one explicit product.
///
/// # Errors
/// The oracle's errors; [`UnlearnError::Diverged`] if a product is NaN/inf.
pub fn conjugate_gradient<H: Hvp + ?Sized>(
    hvp: &mut H,
    g: &Gradients,
    opts: &SolveOptions,
) -> Result<Solution> {
    let solver = Solver::Cg;
    let g_norm = g.norm()?;
    if g_norm == 0.0 {
        return trivial(solver, g);
    }
    let mut x = g.scale(0.0)?;
    let mut r = g.clone();
    let mut p = r.clone();
    let mut rs = g_norm * g_norm;
    let mut history = vec![1.0];
    let mut hvps = 0;
    let mut iterations = 0;
    let mut stop = StopReason::MaxIters;
    while iterations < opts.max_iters {
        if rs.sqrt() / g_norm <= opts.tol {
            stop = StopReason::Converged;
            break;
        }
        let ap = damped(hvp, &p, opts.damping)?;
        hvps += 1;
        let pap = p.dot(&ap)?;
        if !pap.is_finite() {
            return Err(non_finite("cg", iterations + 1, pap));
        }
        if pap <= 0.0 {
            stop = StopReason::NegativeCurvature;
            break;
        }
        let alpha = rs / pap;
        x = x.add(&p.scale(alpha)?)?;
        r = r.add(&ap.scale(-alpha)?)?;
        let rs_new = r.dot(&r)?;
        iterations += 1;
        let rel = rs_new.sqrt() / g_norm;
        if !rel.is_finite() {
            return Err(non_finite("cg", iterations, rel));
        }
        history.push(rel);
        say(opts, solver, iterations, rel);
        p = r.add(&p.scale(rs_new / rs)?)?;
        rs = rs_new;
    }
    if stop == StopReason::MaxIters && history.last().is_some_and(|&r| r <= opts.tol) {
        stop = StopReason::Converged;
    }
    let residual = if iterations == 0 {
        1.0
    } else {
        hvps += 1;
        explicit_residual(hvp, &x, g, g_norm, opts.damping)?
    };
    Ok(Solution {
        x,
        report: SolveReport {
            solver,
            iterations,
            hvps,
            residual,
            residual_history: history,
            stop,
        },
    })
}

/// LiSSA on `(H + λI)·x = g` with a fixed Hessian: the Neumann-series
/// recursion `x_j = g + (I − (H+λI)/s)·x_{j−1}`, returned as `x_j / s`,
/// which is Richardson iteration `y ← y + (g − (H+λI)·y)/s` from `y = 0`.
///
/// Converges when `s` exceeds the largest eigenvalue of `H + λI` (and `H + λI`
/// is positive definite); its residual is computed exactly every iteration.
///
/// # Errors
/// The oracle's errors; [`UnlearnError::Diverged`] once the relative
/// residual is NaN/inf or above 10⁶ (raise `scale`); a config error if
/// `scale` is not positive.
pub fn lissa<H: Hvp + ?Sized>(
    hvp: &mut H,
    g: &Gradients,
    scale: f64,
    opts: &SolveOptions,
) -> Result<Solution> {
    let solver = Solver::Lissa;
    if !(scale.is_finite() && scale > 0.0) {
        return Err(UnlearnError::Config {
            method: "second_order",
            field: "lissa_scale",
            reason: format!("must be a positive number, got {scale}"),
        });
    }
    let g_norm = g.norm()?;
    if g_norm == 0.0 {
        return trivial(solver, g);
    }
    let mut x = g.scale(0.0)?;
    let mut history = Vec::with_capacity(opts.max_iters + 1);
    let mut hvps = 0;
    let mut iterations = 0;
    let (stop, residual) = loop {
        let r = if iterations == 0 {
            g.clone()
        } else {
            hvps += 1;
            g.add(&damped(hvp, &x, opts.damping)?.scale(-1.0)?)?
        };
        let rel = r.norm()? / g_norm;
        history.push(rel);
        if !rel.is_finite() || rel > 1e6 {
            return Err(UnlearnError::Diverged {
                what: "lissa",
                iteration: iterations,
                value: rel,
                hint: "raise lissa_scale above the largest eigenvalue of H + damping, \
                       add damping, or use solver = \"cg\"",
            });
        }
        if iterations > 0 {
            say(opts, solver, iterations, rel);
        }
        if rel <= opts.tol {
            break (StopReason::Converged, rel);
        }
        if iterations == opts.max_iters {
            break (StopReason::MaxIters, rel);
        }
        x = x.add(&r.scale(1.0 / scale)?)?;
        iterations += 1;
    };
    Ok(Solution {
        x,
        report: SolveReport {
            solver,
            iterations,
            hvps,
            residual,
            residual_history: history,
            stop,
        },
    })
}

fn explicit_residual<H: Hvp + ?Sized>(
    hvp: &mut H,
    x: &Gradients,
    g: &Gradients,
    g_norm: f64,
    damping: f64,
) -> Result<f64> {
    let ax = damped(hvp, x, damping)?;
    Ok(ax.add(&g.scale(-1.0)?)?.norm()? / g_norm)
}

fn non_finite(what: &'static str, iteration: usize, value: f64) -> UnlearnError {
    UnlearnError::Diverged {
        what,
        iteration,
        value,
        hint: "a Hessian-vector product is NaN/inf; lower fd_eps or check the model",
    }
}
