//! The unlearning field's standard methods — random labels, SalUn, SCRUB,
//! ℓ1-sparse, NegGrad+ and Fisher forgetting — and the one SGD loop they
//! share ([`Stepper`]: a custom per-batch loss, PyTorch's SGD, an optional
//! gradient mask).
//!
//! Every method draws its randomness (batch order, random labels, dropout,
//! samples, noise) from named streams of `method_seed(ctx.seed, "<name>")`,
//! so the same inputs give bit-identical models.

use candle_core::{D, DType, Tensor, Var};
use muq_data::{epoch_order, rng};
use muq_resnet::{
    BnMode, Gradients, Recorded, ResNet, Sgd, SgdConfig, backward, cross_entropy_sum,
};
use rand::Rng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;

use crate::methods::{Outcome, method_seed};
use crate::report::{
    Cost, Diagnostics, FisherDiagnostics, L1Epoch, L1SparseDiagnostics, MaskStats, NegGradEpoch,
    NegGradPlusDiagnostics, RandomLabelDiagnostics, RelabelEpoch, SalunDiagnostics,
    ScrubDiagnostics, ScrubEpoch,
};
use crate::{
    FisherConfig, L1SparseConfig, NegGradPlusConfig, RandomLabelConfig, Result, SalunConfig,
    ScrubConfig, UnlearnContext, UnlearnError,
};

/// SGD steps on a custom loss: `torch.optim.SGD` semantics (weight decay
/// added to the gradient before momentum), plus an optional ℓ1 term
/// `l1·sign(θ)` (the gradient of `l1·‖θ‖₁`, 0 at 0 as in PyTorch) and an
/// optional 0/1 mask that multiplies the whole direction — gradient, ℓ1 and
/// weight decay — before momentum, so masked weights never move.
struct Stepper<'m> {
    model: &'m ResNet,
    vars: Vec<Var>,
    opt: Sgd,
    weight_decay: f64,
    mask: Option<Vec<Tensor>>,
    what: &'static str,
    steps: usize,
}

impl<'m> Stepper<'m> {
    fn new(
        model: &'m ResNet,
        (lr, momentum, weight_decay): (f64, f64, f64),
        mask: Option<Vec<Tensor>>,
        what: &'static str,
    ) -> Result<Self> {
        // Weight decay is applied here, before the mask; the optimiser only
        // adds momentum.
        let mut opt = Sgd::new(SgdConfig {
            lr,
            momentum,
            weight_decay: 0.0,
        })?;
        opt.set_kernels(model.kernels());
        Ok(Self {
            model,
            vars: model.trainable().map(|p| p.var.clone()).collect(),
            opt,
            weight_decay,
            mask,
            what,
            steps: 0,
        })
    }

    /// One step down `loss` (a scalar built on the logits of `passes`, the
    /// model's recorded forward passes) plus `l1·‖θ‖₁`; returns the value
    /// of `loss`.
    fn step(
        &mut self,
        loss: &Tensor,
        passes: impl IntoIterator<Item = Recorded>,
        l1: f64,
    ) -> Result<f64> {
        let value = f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
        if !value.is_finite() {
            return Err(UnlearnError::Diverged {
                what: self.what,
                iteration: self.steps + 1,
                value,
                hint: "the loss is NaN/inf; lower lr",
            });
        }
        let grads = Gradients::from_store(self.model, &backward(loss, passes)?)?.into_tensors();
        let mut dirs = Vec::with_capacity(grads.len());
        for (i, (g, var)) in grads.into_iter().zip(&self.vars).enumerate() {
            let theta = var.as_detached_tensor();
            let mut d = g;
            if l1 != 0.0 {
                d = (d + (theta.sign()? * l1)?)?;
            }
            if self.weight_decay != 0.0 {
                d = (d + (&theta * self.weight_decay)?)?;
            }
            if let Some(mask) = &self.mask {
                d = (d * &mask[i])?;
            }
            dirs.push(d);
        }
        let refs: Vec<&Var> = self.vars.iter().collect();
        self.opt.step(&refs, &dirs)?;
        self.steps += 1;
        Ok(value)
    }
}

/// Consecutive batches of `order`; a lone leftover image joins the last
/// batch (as in gradient ascent).
fn batches(order: &[usize], batch_size: usize) -> Vec<&[usize]> {
    let mut out = Vec::with_capacity(order.len().div_ceil(batch_size));
    let mut pos = 0;
    while pos < order.len() {
        let mut end = (pos + batch_size).min(order.len());
        if order.len() - end == 1 {
            end += 1;
        }
        out.push(&order[pos..end]);
        pos = end;
    }
    out
}

fn sub_seed(seed: u64, name: &str) -> u64 {
    rng::stream(seed, name).random()
}

fn ce_mean(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok((cross_entropy_sum(logits, labels)? / logits.dim(0)? as f64)?)
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(f64::from(t.to_dtype(DType::F32)?.to_scalar::<f32>()?))
}

fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// SCRUB's distillation loss (`DistillKL` of RepDistiller, as SCRUB uses
/// it): with `p_s = softmax(student/T)` and `p_t = softmax(teacher/T)` row by
/// row,
///
/// ```text
/// F.kl_div(log p_s, p_t, size_average=False) · T² / N = T²/N · Σ_rows Σ_c p_t (log p_t − log p_s)
/// ```
///
/// differentiable in `student`; `teacher` is detached.
///
/// # Errors
/// Shape errors from candle (both must be `N×K`).
pub fn distill_kl(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let n = student.dim(0)?;
    let log_ps = log_softmax(&(student / temperature)?)?;
    let log_pt = log_softmax(&(teacher.detach() / temperature)?)?;
    let pt = log_pt.exp()?;
    let kl = (pt * (log_pt - log_ps)?)?.sum_all()?;
    Ok((kl * (temperature * temperature / n as f64))?)
}

/// The ℓ1 weight of `FT_l1` (Unlearn-Sparse, `unlearn/FT.py`) in 0-based
/// `epoch` of `epochs`: with `a = epochs − no_l1_epochs`,
/// `alpha·(1 − epoch/a)` while `epoch < a`, `alpha` if `a = 0`, else 0.
pub fn l1_alpha(alpha: f64, epoch: usize, epochs: usize, no_l1_epochs: usize) -> f64 {
    let active = epochs.saturating_sub(no_l1_epochs);
    if epoch < active {
        alpha * (1.0 - epoch as f64 / active as f64)
    } else if active == 0 {
        alpha
    } else {
        0.0
    }
}

/// SalUn's hard saliency mask: 1 for the `⌊fraction·N⌋` entries of
/// `saliency` (over all tensors together, `N` entries in all) with the
/// largest absolute value, 0 elsewhere; ties go to the earlier entry (in
/// trainable-parameter order, then row-major). Returns the mask (shaped
/// like `saliency`), the number kept and the smallest kept `|saliency|`
/// (`0` if none is kept).
///
/// # Errors
/// Host-transfer errors from candle.
pub fn saliency_mask(saliency: &Gradients, fraction: f64) -> Result<(Gradients, usize, f64)> {
    let host = saliency
        .tensors()
        .iter()
        .map(|t| t.abs()?.flatten_all()?.to_vec1::<f32>())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let flat: Vec<f32> = host.concat();
    let total = flat.len();
    let kept = ((total as f64 * fraction).floor() as usize).min(total);
    let mut idx: Vec<usize> = (0..total).collect();
    if kept > 0 && kept < total {
        idx.select_nth_unstable_by(kept - 1, |&a, &b| {
            flat[b].total_cmp(&flat[a]).then(a.cmp(&b))
        });
    }
    let mut keep = vec![0.0f32; total];
    let mut threshold = f32::INFINITY;
    for &i in &idx[..kept] {
        keep[i] = 1.0;
        threshold = threshold.min(flat[i]);
    }
    let mut tensors = Vec::with_capacity(host.len());
    let mut start = 0;
    for t in saliency.tensors() {
        let n = t.elem_count();
        tensors.push(Tensor::from_slice(
            &keep[start..start + n],
            t.shape(),
            t.device(),
        )?);
        start += n;
    }
    let threshold = if kept == 0 { 0.0 } else { f64::from(threshold) };
    Ok((Gradients::from_tensors(tensors), kept, threshold))
}

/// Fisher forgetting's noise variance for one parameter tensor (Golatkar
/// et al.'s `get_mean_var`, random-sample forgetting): from its diagonal
/// Fisher `F`,
///
/// ```text
/// v = alpha · min(1/(F + 1e-8), c)        c = 100 for the last layer, else 1000
/// v ← mean of v over dim 1, broadcast      (tensors of rank ≥ 2: per output unit and tap)
/// v ← 10·v                                 for the last layer and for rank-1 tensors (BatchNorm)
/// ```
///
/// # Errors
/// Shape errors from candle.
pub fn fisher_noise_variance(fisher: &Tensor, alpha: f64, last_layer: bool) -> Result<Tensor> {
    let cap = if last_layer { 1e2 } else { 1e3 };
    let inv = (fisher + 1e-8)?.recip()?;
    let mut var = (inv.clamp(0.0, cap)? * alpha)?;
    if var.rank() > 1 {
        var = var
            .mean_keepdim(1)?
            .broadcast_as(var.shape())?
            .contiguous()?;
    }
    if last_layer || var.rank() == 1 {
        var = (var * 10.0)?;
    }
    Ok(var)
}

/// Random-label training shared by RL and SalUn.
fn relabel_train(
    c: &RandomLabelConfig,
    ctx: &UnlearnContext<'_>,
    mask: Option<Vec<Tensor>>,
    what: &'static str,
) -> Result<(ResNet, Cost, RandomLabelDiagnostics)> {
    let model = ctx.model.try_clone()?;
    let seed = method_seed(ctx.seed, what);
    let (forget_seed, retain_seed) = (sub_seed(seed, "forget"), sub_seed(seed, "retain"));
    let mut labels = rng::stream(seed, "labels");
    let mut dropout = rng::stream(seed, rng::DROPOUT);
    let k = model.config().num_classes as u32;
    let device = model.device().clone();
    let true_labels = ctx.forget_data.labels();
    let mut epochs = Vec::with_capacity(c.epochs);
    let mut labels_unchanged = 0;
    let steps = {
        let mut stepper = Stepper::new(&model, (c.lr, c.momentum, c.weight_decay), mask, what)?;
        for epoch in 0..c.epochs {
            let start = stepper.steps;
            let mut forget_sum = 0.0;
            let order = epoch_order(ctx.forget, forget_seed, epoch);
            for batch in batches(&order, c.batch_size) {
                let (x, _) = ctx.forget_data.batch(batch, &device)?;
                let ys: Vec<u32> = batch.iter().map(|_| labels.random_range(0..k)).collect();
                labels_unchanged += batch
                    .iter()
                    .zip(&ys)
                    .filter(|&(&i, &y)| u32::from(true_labels[i]) == y)
                    .count();
                let y = Tensor::from_vec(ys, batch.len(), &device)?;
                let pass = model.forward_recorded(&x, BnMode::Train, Some(&mut dropout))?;
                let loss = ce_mean(&pass.logits, &y)?;
                forget_sum += stepper.step(&loss, [pass], 0.0)? * batch.len() as f64;
            }
            let mut retain_sum = 0.0;
            let order = epoch_order(ctx.retain, retain_seed, epoch);
            for batch in batches(&order, c.batch_size) {
                let (x, y) = ctx.trained_on.batch(batch, &device)?;
                let pass = model.forward_recorded(&x, BnMode::Train, Some(&mut dropout))?;
                let loss = ce_mean(&pass.logits, &y)?;
                retain_sum += stepper.step(&loss, [pass], 0.0)? * batch.len() as f64;
            }
            epochs.push(RelabelEpoch {
                epoch: epoch + 1,
                forget_loss: forget_sum / ctx.forget.len() as f64,
                retain_loss: retain_sum / ctx.retain.len() as f64,
                steps: stepper.steps - start,
            });
        }
        stepper.steps
    };
    let cost = Cost {
        grad_samples: c.epochs * (ctx.forget.len() + ctx.retain.len()),
        updates: steps,
        ..Cost::default()
    };
    let diag = RandomLabelDiagnostics {
        epochs,
        labels_unchanged,
    };
    Ok((model, cost, diag))
}

pub(crate) fn random_label(c: &RandomLabelConfig, ctx: &UnlearnContext<'_>) -> Result<Outcome> {
    ctx.validate(true)?;
    let (model, cost, diag) = relabel_train(c, ctx, None, "random_label")?;
    Ok((model, cost, Diagnostics::RandomLabel(diag)))
}

pub(crate) fn salun(c: &SalunConfig, ctx: &UnlearnContext<'_>) -> Result<Outcome> {
    ctx.validate(true)?;
    // Saliency: Σ over forget batches of ∇θ mean CE at the trained model,
    // BatchNorm frozen (generate_mask.py runs model.eval()).
    let device = ctx.model.device().clone();
    let mut saliency: Option<Gradients> = None;
    let mut loss_sum = 0.0;
    for batch in ctx.forget.chunks(c.batch_size) {
        let (x, y) = ctx.forget_data.batch(batch, &device)?;
        let pass = ctx.model.forward_recorded(&x, BnMode::Eval, None)?;
        let sum = cross_entropy_sum(&pass.logits, &y)?;
        let loss = (&sum / batch.len() as f64)?;
        let g = Gradients::from_store(ctx.model, &pass.backward(&loss)?)?;
        loss_sum += scalar(&sum)?;
        saliency = Some(match saliency {
            None => g,
            Some(s) => s.add(&g)?,
        });
    }
    let saliency = saliency.ok_or(UnlearnError::Context {
        field: "forget",
        reason: "is empty: there is nothing to unlearn".into(),
    })?;
    let (mask, kept, threshold) = saliency_mask(&saliency, c.mask_fraction)?;
    let total = ctx.model.num_trainable();
    if kept == 0 {
        return Err(UnlearnError::Config {
            method: "salun",
            field: "mask_fraction",
            reason: format!(
                "{} of {total} weights keeps none; raise it",
                c.mask_fraction
            ),
        });
    }
    let stats = MaskStats {
        kept,
        total,
        threshold,
        forget_loss: loss_sum / ctx.forget.len() as f64,
        grad_norm: saliency.norm()?,
    };
    let (model, mut cost, training) =
        relabel_train(&c.random_label(), ctx, Some(mask.into_tensors()), "salun")?;
    cost.grad_samples += ctx.forget.len();
    let diag = SalunDiagnostics {
        mask: stats,
        training,
    };
    Ok((model, cost, Diagnostics::Salun(diag)))
}

pub(crate) fn scrub(c: &ScrubConfig, ctx: &UnlearnContext<'_>) -> Result<Outcome> {
    ctx.validate(true)?;
    let teacher = ctx.model;
    let student = ctx.model.try_clone()?;
    let seed = method_seed(ctx.seed, "scrub");
    let (forget_seed, retain_seed) = (sub_seed(seed, "forget"), sub_seed(seed, "retain"));
    let mut dropout = rng::stream(seed, rng::DROPOUT);
    let device = student.device().clone();
    let mut epochs = Vec::with_capacity(c.epochs);
    let mut images = 0;
    let steps = {
        let mut stepper =
            Stepper::new(&student, (c.lr, c.momentum, c.weight_decay), None, "scrub")?;
        for epoch in 1..=c.epochs {
            let mut max_steps = 0;
            let max_kl = if epoch <= c.msteps {
                let mut sum = 0.0;
                let order = epoch_order(ctx.forget, forget_seed, epoch - 1);
                for batch in batches(&order, c.forget_batch_size) {
                    let (x, _) = ctx.forget_data.batch(batch, &device)?;
                    let t = teacher.infer(&x, BnMode::Eval, None)?;
                    let s = student.forward_recorded(&x, BnMode::Train, Some(&mut dropout))?;
                    let kl = distill_kl(&s.logits, &t, c.kd_t)?;
                    sum -= stepper.step(&kl.neg()?, [s], 0.0)? * batch.len() as f64;
                    max_steps += 1;
                }
                images += ctx.forget.len();
                Some(sum / ctx.forget.len() as f64)
            } else {
                None
            };
            let (mut ce_sum, mut kl_sum, mut min_steps) = (0.0, 0.0, 0);
            let order = epoch_order(ctx.retain, retain_seed, epoch - 1);
            for batch in batches(&order, c.batch_size) {
                let (x, y) = ctx.trained_on.batch(batch, &device)?;
                let t = teacher.infer(&x, BnMode::Eval, None)?;
                let s = student.forward_recorded(&x, BnMode::Train, Some(&mut dropout))?;
                let ce = ce_mean(&s.logits, &y)?;
                let kl = distill_kl(&s.logits, &t, c.kd_t)?;
                ce_sum += scalar(&ce)? * batch.len() as f64;
                kl_sum += scalar(&kl)? * batch.len() as f64;
                let loss = ((ce * c.ce_weight)? + (kl * c.kl_weight)?)?;
                stepper.step(&loss, [s], 0.0)?;
                min_steps += 1;
            }
            images += ctx.retain.len();
            epochs.push(ScrubEpoch {
                epoch,
                max_kl,
                min_ce: ce_sum / ctx.retain.len() as f64,
                min_kl: kl_sum / ctx.retain.len() as f64,
                max_steps,
                min_steps,
            });
        }
        stepper.steps
    };
    let cost = Cost {
        grad_samples: images,
        forward_samples: images,
        updates: steps,
        ..Cost::default()
    };
    Ok((
        student,
        cost,
        Diagnostics::Scrub(ScrubDiagnostics { epochs }),
    ))
}

fn l1_norm(model: &ResNet) -> Result<f64> {
    let mut acc = 0.0;
    for p in model.trainable() {
        acc += f64::from(
            p.var
                .as_detached_tensor()
                .abs()?
                .sum_all()?
                .to_scalar::<f32>()?,
        );
    }
    Ok(acc)
}

pub(crate) fn l1_sparse(c: &L1SparseConfig, ctx: &UnlearnContext<'_>) -> Result<Outcome> {
    ctx.validate(true)?;
    let model = ctx.model.try_clone()?;
    let seed = method_seed(ctx.seed, "l1_sparse");
    let retain_seed = sub_seed(seed, "retain");
    let mut dropout = rng::stream(seed, rng::DROPOUT);
    let device = model.device().clone();
    let l1_norm_before = l1_norm(&model)?;
    let mut epochs = Vec::with_capacity(c.epochs);
    let steps = {
        let mut stepper = Stepper::new(
            &model,
            (c.lr, c.momentum, c.weight_decay),
            None,
            "l1_sparse",
        )?;
        for epoch in 0..c.epochs {
            let start = stepper.steps;
            let alpha = l1_alpha(c.alpha, epoch, c.epochs, c.no_l1_epochs);
            let mut ce_sum = 0.0;
            let order = epoch_order(ctx.retain, retain_seed, epoch);
            for batch in batches(&order, c.batch_size) {
                let (x, y) = ctx.trained_on.batch(batch, &device)?;
                let pass = model.forward_recorded(&x, BnMode::Train, Some(&mut dropout))?;
                let loss = ce_mean(&pass.logits, &y)?;
                ce_sum += stepper.step(&loss, [pass], alpha)? * batch.len() as f64;
            }
            epochs.push(L1Epoch {
                epoch: epoch + 1,
                alpha,
                ce: ce_sum / ctx.retain.len() as f64,
                l1_norm: l1_norm(&model)?,
                steps: stepper.steps - start,
            });
        }
        stepper.steps
    };
    let cost = Cost {
        grad_samples: c.epochs * ctx.retain.len(),
        updates: steps,
        ..Cost::default()
    };
    let diag = L1SparseDiagnostics {
        l1_norm_before,
        epochs,
    };
    Ok((model, cost, Diagnostics::L1Sparse(diag)))
}

pub(crate) fn neggrad_plus(c: &NegGradPlusConfig, ctx: &UnlearnContext<'_>) -> Result<Outcome> {
    ctx.validate(true)?;
    let model = ctx.model.try_clone()?;
    let seed = method_seed(ctx.seed, "neggrad_plus");
    let (forget_seed, retain_seed) = (sub_seed(seed, "forget"), sub_seed(seed, "retain"));
    let mut dropout = rng::stream(seed, rng::DROPOUT);
    let device = model.device().clone();
    let mut epochs = Vec::with_capacity(c.epochs);
    let mut forget_order = epoch_order(ctx.forget, forget_seed, 0);
    let mut forget_passes = 1;
    let mut forget_pos = 0;
    let mut images = 0;
    let steps = {
        let mut stepper = Stepper::new(
            &model,
            (c.lr, c.momentum, c.weight_decay),
            None,
            "neggrad_plus",
        )?;
        for epoch in 0..c.epochs {
            let start = stepper.steps;
            let (mut retain_sum, mut forget_sum, mut forget_n) = (0.0, 0.0, 0);
            let order = epoch_order(ctx.retain, retain_seed, epoch);
            for rb in batches(&order, c.batch_size) {
                if forget_pos >= forget_order.len() {
                    forget_order = epoch_order(ctx.forget, forget_seed, forget_passes);
                    forget_passes += 1;
                    forget_pos = 0;
                }
                let mut end = (forget_pos + c.forget_batch_size).min(forget_order.len());
                if forget_order.len() - end == 1 {
                    end += 1;
                }
                let fb = &forget_order[forget_pos..end];
                forget_pos = end;
                let (xr, yr) = ctx.trained_on.batch(rb, &device)?;
                let (xf, yf) = ctx.forget_data.batch(fb, &device)?;
                let out_r = model.forward_recorded(&xr, BnMode::Train, Some(&mut dropout))?;
                let out_f = model.forward_recorded(&xf, BnMode::Train, Some(&mut dropout))?;
                let ce_r = ce_mean(&out_r.logits, &yr)?;
                let ce_f = ce_mean(&out_f.logits, &yf)?;
                retain_sum += scalar(&ce_r)? * rb.len() as f64;
                forget_sum += scalar(&ce_f)? * fb.len() as f64;
                forget_n += fb.len();
                let loss = ((ce_r * c.alpha)? - (ce_f * (1.0 - c.alpha))?)?;
                stepper.step(&loss, [out_r, out_f], 0.0)?;
            }
            images += ctx.retain.len() + forget_n;
            epochs.push(NegGradEpoch {
                epoch: epoch + 1,
                retain_loss: retain_sum / ctx.retain.len() as f64,
                forget_loss: forget_sum / forget_n as f64,
                steps: stepper.steps - start,
            });
        }
        stepper.steps
    };
    let cost = Cost {
        grad_samples: images,
        updates: steps,
        ..Cost::default()
    };
    let diag = NegGradPlusDiagnostics {
        epochs,
        forget_passes,
    };
    Ok((model, cost, Diagnostics::NegGradPlus(diag)))
}

/// A standard normal draw by Box–Muller (one of the pair).
fn standard_normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

pub(crate) fn fisher(c: &FisherConfig, ctx: &UnlearnContext<'_>) -> Result<Outcome> {
    ctx.validate(true)?;
    let model = ctx.model.try_clone()?;
    let seed = method_seed(ctx.seed, "fisher");
    let sample: Vec<usize> = if c.samples == 0 || c.samples >= ctx.retain.len() {
        ctx.retain.to_vec()
    } else {
        let mut picked: Vec<usize> = index::sample(
            &mut rng::stream(seed, "sample"),
            ctx.retain.len(),
            c.samples,
        )
        .into_iter()
        .map(|i| ctx.retain[i])
        .collect();
        picked.sort_unstable();
        picked
    };
    let k = model.config().num_classes;
    let device = model.device().clone();
    let mut acc: Vec<Tensor> = model
        .trainable()
        .map(|p| p.var.as_detached_tensor().zeros_like())
        .collect::<candle_core::Result<_>>()?;
    for &i in &sample {
        let (x, _) = ctx.trained_on.batch(&[i], &device)?;
        let logits = model.forward(&x, BnMode::Eval, None)?;
        let probs = candle_core::Tensor::exp(&log_softmax(&logits.detach())?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for (y, &p) in probs.iter().enumerate().take(k) {
            let label = Tensor::new(&[y as u32], &device)?;
            let loss = cross_entropy_sum(&logits, &label)?;
            let g = Gradients::from_store(&model, &loss.backward()?)?;
            for (a, g) in acc.iter_mut().zip(g.tensors()) {
                *a = (&*a + (g.sqr()? * f64::from(p))?)?;
            }
        }
    }
    let n = sample.len() as f64;
    let mut noise = rng::stream(seed, "noise");
    let (mut fisher_sum, mut std_sum, mut std_max, mut count) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    for (p, f) in model.trainable().zip(&acc) {
        let f = (f / n)?;
        let var = fisher_noise_variance(&f, c.alpha, p.name.starts_with("fc."))?;
        let std = var.sqrt()?;
        let eps: Vec<f32> = (0..std.elem_count())
            .map(|_| standard_normal(&mut noise))
            .collect();
        let eps = Tensor::from_vec(eps, std.shape(), &device)?;
        let theta = p.var.as_detached_tensor();
        p.var.set(&(theta + (&std * eps)?)?)?;
        fisher_sum += f64::from(f.sum_all()?.to_scalar::<f32>()?);
        let host = std.flatten_all()?.to_vec1::<f32>()?;
        std_sum += host.iter().map(|&s| f64::from(s)).sum::<f64>();
        std_max = host.iter().fold(std_max, |m, &s| m.max(f64::from(s)));
        count += host.len();
    }
    let cost = Cost {
        grad_samples: sample.len() * k,
        updates: 1,
        ..Cost::default()
    };
    let diag = FisherDiagnostics {
        samples: sample.len(),
        alpha: c.alpha,
        fisher_mean: fisher_sum / count as f64,
        noise_std_mean: std_sum / count as f64,
        noise_std_max: std_max,
    };
    Ok((model, cost, Diagnostics::Fisher(diag)))
}
