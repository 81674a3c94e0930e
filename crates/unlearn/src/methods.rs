//! The five methods and the entry point that dispatches to them.

use std::time::Instant;

use muq_data::{epoch_order, rng};
use muq_resnet::{
    BnMode, BnPolicy, GradSumOptions, Gradients, Reduction, ResNet, cross_entropy_sum, grad_sum,
    train,
};
use rand::Rng;

use crate::field;
use crate::hvp::{FiniteDiffHvp, GaussNewtonHvp, ResNetObjective};
use crate::report::{
    Cost, Diagnostics, FirstOrderDiagnostics, GradientAscentDiagnostics, SecondOrderDiagnostics,
    TrainDiagnostics, UnlearnReport, Unlearned,
};
use crate::solve::{Hvp, SolveOptions, conjugate_gradient, lissa};
use crate::{
    Curvature, FineTuneConfig, FirstOrderConfig, GradientAscentConfig, Method, Result,
    SecondOrderConfig, Solver, UnlearnContext, UnlearnError,
};

/// Name of the stream second-order draws its Hessian sample from.
pub const HESSIAN_STREAM: &str = "unlearn/hessian";

/// Applies `method` to `ctx.model` and returns the new model with its cost
/// and diagnostics.
///
/// The input model is never modified: every method works on a deep copy
/// (retrain on a fresh model). Only trainable parameters change, plus the
/// BatchNorm running statistics where the method's `bn = "train"` (or, for
/// fine-tune and retrain, the training loop) updates them.
///
/// Randomness (dropout, batch order, the Hessian sample) comes from streams
/// named `unlearn/<method>` (and [`HESSIAN_STREAM`]) of `ctx.seed`, except
/// retraining, which reuses the base model's own `init` stream and seed so
/// that it differs from the base model only in the data it sees.
///
/// # Errors
/// [`UnlearnError::Config`] if the method's settings are invalid,
/// [`UnlearnError::Context`] if the context's pieces do not fit, and the
/// model's, solver's or training loop's errors.
pub fn unlearn(method: &Method, ctx: &UnlearnContext<'_>) -> Result<Unlearned> {
    method.validate()?;
    let started = Instant::now();
    let (model, mut cost, diagnostics) = match method {
        Method::FirstOrder(c) => first_order(c, ctx)?,
        Method::SecondOrder(c) => second_order(c, ctx)?,
        Method::GradientAscent(c) => gradient_ascent(c, ctx)?,
        Method::FineTune(c) => fine_tune(c, ctx)?,
        Method::Retrain(_) => retrain(ctx)?,
        Method::RandomLabel(c) => field::random_label(c, ctx)?,
        Method::Salun(c) => field::salun(c, ctx)?,
        Method::Scrub(c) => field::scrub(c, ctx)?,
        Method::L1Sparse(c) => field::l1_sparse(c, ctx)?,
        Method::NegGradPlus(c) => field::neggrad_plus(c, ctx)?,
        Method::Fisher(c) => field::fisher(c, ctx)?,
    };
    cost.seconds = started.elapsed().as_secs_f64();
    let update_norm = model
        .trainable_values()?
        .add(&ctx.model.trainable_values()?.scale(-1.0)?)?
        .norm()?;
    Ok(Unlearned {
        model,
        report: UnlearnReport {
            cost,
            update_norm,
            diagnostics,
        },
    })
}

pub(crate) type Outcome = (ResNet, Cost, Diagnostics);

/// A seed for a method's own streams, derived from the run seed.
pub(crate) fn method_seed(seed: u64, method: &str) -> u64 {
    rng::stream(seed, &format!("unlearn/{method}")).random()
}

fn first_order(c: &FirstOrderConfig, ctx: &UnlearnContext<'_>) -> Result<Outcome> {
    ctx.validate(false)?;
    let model = ctx.model.try_clone()?;
    let gs = grad_sum(
        &model,
        ctx.forget_data,
        ctx.forget,
        GradSumOptions {
            batch_size: c.batch_size,
            bn: c.bn,
            reduction: c.reduction,
            seed: method_seed(ctx.seed, "first_order"),
        },
    )?;
    model.add_scaled(&gs.grads, c.tau)?;
    let cost = Cost {
        grad_samples: gs.n,
        updates: 1,
        ..Cost::default()
    };
    let diag = FirstOrderDiagnostics {
        forget_loss: gs.loss_sum / gs.n as f64,
        grad_norm: gs.grads.norm()?,
        tau: c.tau,
        bn: c.bn,
        reduction: c.reduction,
        batches: gs.batches,
    };
    Ok((model, cost, Diagnostics::FirstOrder(diag)))
}

/// The retained images second-order takes its Hessian over: all of
/// `retain` if it has at most `n`, else `n` of them drawn uniformly without
/// replacement from [`HESSIAN_STREAM`] of `seed`, in ascending index order.
pub fn hessian_sample(retain: &[usize], n: usize, seed: u64) -> Vec<usize> {
    rng::sample_sorted(retain, n, seed, HESSIAN_STREAM)
}

fn second_order(c: &SecondOrderConfig, ctx: &UnlearnContext<'_>) -> Result<Outcome> {
    ctx.validate(true)?;
    let model = ctx.model.try_clone()?;
    // 1. g: the summed forget gradient (BatchNorm as configured).
    let gs = grad_sum(
        &model,
        ctx.forget_data,
        ctx.forget,
        GradSumOptions {
            batch_size: c.batch_size,
            bn: c.bn,
            reduction: Reduction::Sum,
            seed: method_seed(ctx.seed, "second_order"),
        },
    )?;
    // 2. Solve (H + λI)x = g, H the mean-loss curvature on a retain sample,
    //    BatchNorm frozen (at the statistics step 1 left).
    let sample = hessian_sample(ctx.retain, c.hessian_samples, ctx.seed);
    let n_sample = sample.len();
    let objective = ResNetObjective::new(&model, ctx.trained_on, sample, c.batch_size)?;
    let opts = SolveOptions {
        damping: c.damping,
        max_iters: c.max_iters,
        tol: c.tol,
        progress: ctx.progress,
    };
    let solve = |hvp: &mut dyn Hvp| match c.solver {
        Solver::Cg => conjugate_gradient(hvp, &gs.grads, &opts),
        Solver::Lissa => lissa(hvp, &gs.grads, c.lissa_scale, &opts),
    };
    let (solution, hvp_grad_samples, forward_samples) = match c.curvature {
        Curvature::GaussNewton => {
            let mut hvp = GaussNewtonHvp::new(objective)?;
            let s = solve(&mut hvp)?;
            (s, hvp.grad_samples(), hvp.forward_samples())
        }
        Curvature::Hessian => {
            let mut hvp = FiniteDiffHvp::new(objective, c.fd_eps)?;
            let s = solve(&mut hvp)?;
            (s, hvp.grad_samples(), 0)
        }
    };
    // 3. θ ← θ + τx.
    let tau = c.tau.unwrap_or(1.0 / ctx.retain.len() as f64);
    model.add_scaled(&solution.x, tau)?;
    let cost = Cost {
        grad_samples: gs.n + hvp_grad_samples,
        forward_samples,
        hvps: solution.report.hvps,
        updates: 1,
        ..Cost::default()
    };
    let diag = SecondOrderDiagnostics {
        forget_loss: gs.loss_sum / gs.n as f64,
        grad_norm: gs.grads.norm()?,
        tau,
        damping: c.damping,
        curvature: c.curvature,
        hessian_samples: n_sample,
        fd_eps: c.fd_eps,
        step_norm: solution.x.norm()?,
        g_dot_x: gs.grads.dot(&solution.x)?,
        solve: solution.report,
    };
    Ok((model, cost, Diagnostics::SecondOrder(diag)))
}

fn gradient_ascent(c: &GradientAscentConfig, ctx: &UnlearnContext<'_>) -> Result<Outcome> {
    ctx.validate(false)?;
    let model = ctx.model.try_clone()?;
    let seed = method_seed(ctx.seed, "gradient_ascent");
    let (mode, mut dropout_rng) = match c.bn {
        BnPolicy::Train => (BnMode::Train, Some(rng::stream(seed, rng::DROPOUT))),
        BnPolicy::Frozen => (BnMode::Eval, None),
    };
    let device = model.device().clone();
    let mut passes = 1;
    let mut order = epoch_order(ctx.forget, seed, 0);
    let mut pos = 0;
    let mut step_losses = Vec::with_capacity(c.steps);
    let mut images_seen = 0;
    for step in 1..=c.steps {
        if pos >= order.len() {
            order = epoch_order(ctx.forget, seed, passes);
            passes += 1;
            pos = 0;
        }
        let mut end = (pos + c.batch_size).min(order.len());
        if order.len() - end == 1 {
            // A lone leftover image joins this batch (BatchNorm in training
            // mode cannot normalise a batch of one).
            end += 1;
        }
        let batch = &order[pos..end];
        pos = end;
        let (x, y) = ctx.forget_data.batch(batch, &device)?;
        let pass = model.forward_recorded(&x, mode, dropout_rng.as_mut())?;
        let loss = (cross_entropy_sum(&pass.logits, &y)? / batch.len() as f64)?;
        let grads = Gradients::from_store(&model, &pass.backward(&loss)?)?;
        let loss = f64::from(loss.to_scalar::<f32>()?);
        if !loss.is_finite() || !grads.is_finite()? {
            return Err(UnlearnError::Diverged {
                what: "gradient_ascent",
                iteration: step,
                value: loss,
                hint: "the forget loss or its gradient is NaN/inf; lower lr or steps",
            });
        }
        model.add_scaled(&grads, c.lr)?;
        step_losses.push(loss);
        images_seen += batch.len();
    }
    let cost = Cost {
        grad_samples: images_seen,
        updates: c.steps,
        ..Cost::default()
    };
    let diag = GradientAscentDiagnostics {
        step_losses,
        images_seen,
        passes,
    };
    Ok((model, cost, Diagnostics::GradientAscent(diag)))
}

fn fine_tune(c: &FineTuneConfig, ctx: &UnlearnContext<'_>) -> Result<Outcome> {
    ctx.validate(true)?;
    let model = ctx.model.try_clone()?;
    let seed = method_seed(ctx.seed, "fine_tune");
    let cfg = c.train_config();
    let report = train(&model, ctx.trained_on, ctx.retain, &cfg, seed, ctx.progress)?;
    let cost = training_cost(&report, ctx.retain.len());
    let diag = TrainDiagnostics {
        train: report,
        train_seed: seed,
        images: ctx.retain.len(),
    };
    Ok((model, cost, Diagnostics::FineTune(diag)))
}

fn retrain(ctx: &UnlearnContext<'_>) -> Result<Outcome> {
    ctx.validate(true)?;
    let model = ResNet::new(
        ctx.model.config(),
        &mut rng::stream(ctx.seed, rng::INIT),
        ctx.model.device(),
    )?;
    let report = train(
        &model,
        ctx.trained_on,
        ctx.retain,
        ctx.train_config,
        ctx.seed,
        ctx.progress,
    )?;
    let cost = training_cost(&report, ctx.retain.len());
    let diag = TrainDiagnostics {
        train: report,
        train_seed: ctx.seed,
        images: ctx.retain.len(),
    };
    Ok((model, cost, Diagnostics::Retrain(diag)))
}

fn training_cost(report: &muq_resnet::TrainReport, images: usize) -> Cost {
    Cost {
        grad_samples: report.epochs.len() * images,
        updates: report.epochs.iter().map(|e| e.steps).sum(),
        ..Cost::default()
    }
}
