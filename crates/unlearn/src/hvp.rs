//! Curvature-vector products without double backward.
//!
//! candle's autograd does not differentiate twice, so two oracles are built
//! from first derivatives:
//!
//! - [`GaussNewtonHvp`], the generalised Gauss–Newton matrix
//!   `G = (1/N) Σ_i J_iᵀ (diag p_i − p_i p_iᵀ) J_i` of the mean
//!   cross-entropy of a [`LogitModel`] — `J·v` by forward-mode
//!   differentiation, the softmax Hessian exactly, `Jᵀ·u` by one backward
//!   pass: exact up to rounding, symmetric positive semi-definite;
//! - [`FiniteDiffHvp`], the Hessian of an [`Objective`] by central
//!   differences of gradients:
//!   `H·v ≈ (∇L(θ + εv) − ∇L(θ − εv)) / (2ε)`, `ε = fd_eps·(1 + ‖θ‖)/‖v‖`
//!   (so the perturbation `εv` has norm `fd_eps·(1 + ‖θ‖)`), error O(ε²) plus
//!   rounding of order `u/fd_eps` for a smooth `L`. θ is copied once when the
//!   oracle is built and written back bit for bit after every product, so no
//!   drift accumulates from `θ + εv − εv` round trips.
//!
//! **Why both.** A ReLU network's gradient jumps wherever a pre-activation
//! changes sign, so differences of gradients pick up those jumps: on a
//! width-4 ResNet, `‖H·v‖/‖v‖` from central differences grows like
//! `ε^{-1/2}` as ε shrinks (0.43, 3.2, 13, 37 for fd_eps 1e-1 … 1e-4 along a
//! random direction) instead of converging, and CG on that operator
//! diverged (relative residual 127 after two iterations); along the smooth
//! `fc` directions the same code agrees to five digits for fd_eps 1e-2 …
//! 1e-4. Differences of logits (continuous in θ) converge, but only like
//! O(ε^0.6) there (13% change from 1e-3 to 1e-4), too inexact for CG — hence
//! forward mode for the Gauss–Newton product. `G` is the usual curvature for
//! influence functions of deep networks; the Hessian stays available and is
//! exact for smooth losses (tested on a linear softmax model).

use candle_core::{D, Tensor};
use muq_data::Dataset;
use muq_resnet::{BnMode, BnPolicy, GradSumOptions, Gradients, Reduction, ResNet, grad_sum};

use crate::jvp;
use crate::solve::Hvp;
use crate::{Result, UnlearnError};
use muq_resnet::jvp::Tangents;

/// A differentiable objective `L(θ)` whose parameters can be read and
/// overwritten: what [`FiniteDiffHvp`] differentiates.
pub trait Objective {
    /// A copy of the current parameters.
    ///
    /// # Errors
    /// Whatever reading them fails with.
    fn params(&self) -> Result<Gradients>;
    /// Overwrites the parameters with `theta` (same shapes as
    /// [`params`](Self::params)).
    ///
    /// # Errors
    /// Whatever writing them fails with (e.g. a shape mismatch).
    fn set_params(&mut self, theta: &Gradients) -> Result<()>;
    /// `∇θ L` at the current parameters.
    ///
    /// # Errors
    /// Whatever the gradient fails with.
    fn gradient(&mut self) -> Result<Gradients>;
    /// Per-sample gradient evaluations one [`gradient`](Self::gradient)
    /// call costs (for cost accounting).
    fn samples_per_gradient(&self) -> usize;
}

/// The Hessian-vector product oracle of an [`Objective`] by central finite
/// differences (see the module docs), restoring θ exactly after each product.
#[derive(Debug)]
pub struct FiniteDiffHvp<O> {
    objective: O,
    theta: Gradients,
    theta_norm: f64,
    fd_eps: f64,
    products: usize,
    gradients: usize,
}

impl<O: Objective> FiniteDiffHvp<O> {
    /// Wraps `objective` at its current parameters, which every product
    /// restores.
    ///
    /// # Errors
    /// [`UnlearnError::Config`] on `fd_eps` if it is not a positive number;
    /// the objective's errors.
    pub fn new(objective: O, fd_eps: f64) -> Result<Self> {
        if !(fd_eps.is_finite() && fd_eps > 0.0) {
            return Err(UnlearnError::Config {
                method: "second_order",
                field: "fd_eps",
                reason: format!("must be a positive number (e.g. 1e-3), got {fd_eps}"),
            });
        }
        let theta = objective.params()?;
        let theta_norm = theta.norm()?;
        Ok(Self {
            objective,
            theta,
            theta_norm,
            fd_eps,
            products: 0,
            gradients: 0,
        })
    }

    /// The step `ε` used for a direction of norm `v_norm`.
    pub fn step_for(&self, v_norm: f64) -> f64 {
        self.fd_eps * (1.0 + self.theta_norm) / v_norm
    }

    /// Products evaluated so far (zero directions are free and not counted).
    pub fn products(&self) -> usize {
        self.products
    }

    /// Gradient evaluations so far (two per product).
    pub fn gradient_evaluations(&self) -> usize {
        self.gradients
    }

    /// Per-sample gradient evaluations so far.
    pub fn grad_samples(&self) -> usize {
        self.gradients * self.objective.samples_per_gradient()
    }

    /// The parameters every product restores.
    pub fn theta(&self) -> &Gradients {
        &self.theta
    }

    /// The objective, back at the saved parameters.
    pub fn into_objective(self) -> O {
        self.objective
    }

    fn difference(&mut self, hv: &Gradients, h: f64) -> Result<Gradients> {
        self.objective.set_params(&self.theta.add(hv)?)?;
        self.gradients += 1;
        let plus = self.objective.gradient()?;
        self.objective
            .set_params(&self.theta.add(&hv.scale(-1.0)?)?)?;
        self.gradients += 1;
        let minus = self.objective.gradient()?;
        Ok(plus.add(&minus.scale(-1.0)?)?.scale(0.5 / h)?)
    }
}

impl<O: Objective> Hvp for FiniteDiffHvp<O> {
    fn apply(&mut self, v: &Gradients) -> Result<Gradients> {
        let v_norm = v.norm()?;
        if v_norm == 0.0 {
            return Ok(v.scale(0.0)?);
        }
        if !v_norm.is_finite() {
            return Err(non_finite_direction(self.products, v_norm));
        }
        let h = self.step_for(v_norm);
        let hv = v.scale(h)?;
        let result = self.difference(&hv, h);
        // Restore θ from the saved copy whatever happened.
        let restored = self.objective.set_params(&self.theta);
        let hv = result?;
        restored?;
        self.products += 1;
        Ok(hv)
    }
}

/// A classifier over fixed samples, seen through its logits `z(θ)`: what
/// [`GaussNewtonHvp`] needs.
pub trait LogitModel {
    /// The logits of every sample, as one detached `N × K` tensor.
    ///
    /// # Errors
    /// Whatever the forward pass fails with.
    fn logits(&mut self) -> Result<Tensor>;
    /// `J·v`, the derivative of the logits along `v` (shaped like the
    /// parameters), as a detached `N × K` tensor.
    ///
    /// # Errors
    /// Whatever the forward-mode pass fails with.
    fn jvp(&mut self, v: &Gradients) -> Result<Tensor>;
    /// `Jᵀ·u = ∇θ Σ_i ⟨u_i, z_i(θ)⟩` for a detached `N × K` tensor `u`
    /// whose rows follow [`logits`](Self::logits).
    ///
    /// # Errors
    /// Whatever the backward pass fails with.
    fn vjp(&mut self, u: &Tensor) -> Result<Gradients>;
    /// Number of samples `N`.
    fn num_samples(&self) -> usize;
}

/// The generalised Gauss–Newton matrix of a [`LogitModel`]'s mean
/// cross-entropy as a product oracle:
///
/// ```text
/// G·v = (1/N) Jᵀ·(p ⊙ Jv − p·(pᵀJv)),   p = softmax(z(θ))
/// ```
///
/// `p` is computed once at construction. Each product costs one
/// forward-mode pass and one forward/backward pass over the samples; the
/// parameters are never changed.
#[derive(Debug)]
pub struct GaussNewtonHvp<M> {
    model: M,
    probs: Tensor,
    products: usize,
}

impl<M: LogitModel> GaussNewtonHvp<M> {
    /// Wraps `model` and computes its probabilities (one forward pass).
    ///
    /// # Errors
    /// The model's errors.
    pub fn new(mut model: M) -> Result<Self> {
        let z = model.logits()?.detach();
        let max = z.max_keepdim(D::Minus1)?;
        let e = z.broadcast_sub(&max)?.exp()?;
        let probs = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
        Ok(Self {
            model,
            probs,
            products: 0,
        })
    }

    /// Products evaluated so far (zero directions are free and not counted).
    pub fn products(&self) -> usize {
        self.products
    }

    /// Per-sample gradient evaluations so far (one backward pass per
    /// product).
    pub fn grad_samples(&self) -> usize {
        self.products * self.model.num_samples()
    }

    /// Per-sample forward-mode or plain forward evaluations so far (one at
    /// construction, one forward-mode pass per product).
    pub fn forward_samples(&self) -> usize {
        (1 + self.products) * self.model.num_samples()
    }

    /// The model.
    pub fn into_model(self) -> M {
        self.model
    }
}

impl<M: LogitModel> Hvp for GaussNewtonHvp<M> {
    fn apply(&mut self, v: &Gradients) -> Result<Gradients> {
        let v_norm = v.norm()?;
        if v_norm == 0.0 {
            return Ok(v.scale(0.0)?);
        }
        if !v_norm.is_finite() {
            return Err(non_finite_direction(self.products, v_norm));
        }
        let jv = self.model.jvp(v)?.detach();
        // The softmax cross-entropy Hessian in logit space, row by row:
        // (diag p − p pᵀ)·jv = p ⊙ jv − p (pᵀ jv); then the mean over samples.
        let p = &self.probs;
        let pj = (p * &jv)?;
        let u = (&pj - p.broadcast_mul(&pj.sum_keepdim(D::Minus1)?)?)?;
        let u = (u / self.model.num_samples() as f64)?.detach();
        let gv = self.model.vjp(&u)?;
        self.products += 1;
        Ok(gv)
    }
}

fn non_finite_direction(products: usize, v_norm: f64) -> UnlearnError {
    UnlearnError::Diverged {
        what: "curvature-vector product",
        iteration: products + 1,
        value: v_norm,
        hint: "the direction is NaN/inf; the solver diverged",
    }
}

/// The mean cross-entropy of a ResNet over fixed images, with BatchNorm
/// frozen (running statistics, buffers untouched): the objective whose
/// curvature second-order unlearning uses, as an [`Objective`] (for
/// [`FiniteDiffHvp`]) and a [`LogitModel`] (for [`GaussNewtonHvp`]).
#[derive(Debug)]
pub struct ResNetObjective<'a> {
    model: &'a ResNet,
    data: &'a Dataset,
    indices: Vec<usize>,
    batch_size: usize,
    jvp_checked: bool,
}

impl<'a> ResNetObjective<'a> {
    /// `(1/n) Σ_{i ∈ indices} CE(f(x_i), y_i)` of `model` on `data`, taken in
    /// batches of `batch_size`. [`Objective::set_params`] writes into
    /// `model`'s trainable parameters.
    ///
    /// The first [`LogitModel::jvp`] checks, on its first batch, that the
    /// forward-mode pass reproduces `model`'s own logits, and fails with
    /// [`UnlearnError::Context`] on `model` if not.
    ///
    /// # Errors
    /// [`UnlearnError::Context`] if `indices` is empty or `batch_size` is 0.
    pub fn new(
        model: &'a ResNet,
        data: &'a Dataset,
        indices: Vec<usize>,
        batch_size: usize,
    ) -> Result<Self> {
        if indices.is_empty() {
            return Err(UnlearnError::Context {
                field: "retain",
                reason: "the curvature needs at least one retained image".into(),
            });
        }
        if batch_size == 0 {
            return Err(UnlearnError::Context {
                field: "batch_size",
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self {
            model,
            data,
            indices,
            batch_size,
            jvp_checked: false,
        })
    }

    /// The images the loss is taken over.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl Objective for ResNetObjective<'_> {
    fn params(&self) -> Result<Gradients> {
        Ok(self.model.trainable_values()?)
    }

    fn set_params(&mut self, theta: &Gradients) -> Result<()> {
        set_trainable(self.model, theta)
    }

    fn gradient(&mut self) -> Result<Gradients> {
        let opts = GradSumOptions {
            batch_size: self.batch_size,
            bn: BnPolicy::Frozen,
            reduction: Reduction::Mean,
            seed: 0,
        };
        Ok(grad_sum(self.model, self.data, &self.indices, opts)?.grads)
    }

    fn samples_per_gradient(&self) -> usize {
        self.indices.len()
    }
}

impl LogitModel for ResNetObjective<'_> {
    fn logits(&mut self) -> Result<Tensor> {
        let device = self.model.device();
        let mut blocks = Vec::with_capacity(self.indices.len().div_ceil(self.batch_size));
        for batch in self.data.batches(&self.indices, self.batch_size, device) {
            let (x, _) = batch?;
            blocks.push(self.model.infer(&x, BnMode::Eval, None)?);
        }
        Ok(Tensor::cat(&blocks, 0)?)
    }

    fn jvp(&mut self, v: &Gradients) -> Result<Tensor> {
        let tangents = Tangents::new(self.model, v)?;
        let device = self.model.device();
        let mut blocks = Vec::with_capacity(self.indices.len().div_ceil(self.batch_size));
        for batch in self.data.batches(&self.indices, self.batch_size, device) {
            let (x, _) = batch?;
            let (z, dz) = tangents.forward(&x)?;
            if !self.jvp_checked {
                jvp::check(self.model, &x, &z)?;
                self.jvp_checked = true;
            }
            blocks.push(dz.detach());
        }
        Ok(Tensor::cat(&blocks, 0)?)
    }

    fn vjp(&mut self, u: &Tensor) -> Result<Gradients> {
        let device = self.model.device();
        let mut acc: Option<Gradients> = None;
        let mut offset = 0;
        for batch in self.data.batches(&self.indices, self.batch_size, device) {
            let (x, _) = batch?;
            let n = x.dim(0)?;
            let u_b = u.narrow(0, offset, n)?.detach();
            offset += n;
            let pass = self.model.forward_recorded(&x, BnMode::Eval, None)?;
            let inner = (&pass.logits * u_b)?.sum_all()?;
            let g = Gradients::from_store(self.model, &pass.backward(&inner)?)?;
            acc = Some(match acc {
                None => g,
                Some(a) => a.add(&g)?,
            });
        }
        acc.ok_or(UnlearnError::Context {
            field: "retain",
            reason: "the curvature needs at least one retained image".into(),
        })
    }

    fn num_samples(&self) -> usize {
        self.indices.len()
    }
}

/// Overwrites `model`'s trainable parameters with `theta` (buffers untouched).
pub(crate) fn set_trainable(model: &ResNet, theta: &Gradients) -> Result<()> {
    let n = model.trainable().count();
    if theta.tensors().len() != n {
        return Err(UnlearnError::Context {
            field: "theta",
            reason: format!(
                "{} tensors for a model with {n} trainable tensors",
                theta.tensors().len()
            ),
        });
    }
    for (p, t) in model.trainable().zip(theta.tensors()) {
        p.var.set(t)?;
    }
    Ok(())
}
