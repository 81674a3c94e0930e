//! Gradient sums over a dataset — the building block of unlearning — and
//! how BatchNorm behaves while they are taken ([`BnPolicy`]).

use candle_core::{DType, Tensor};
use muq_data::{Dataset, rng};
use serde::{Deserialize, Serialize};

use crate::grads::Gradients;
use crate::{BnMode, ResNet, ResnetError, Result, cross_entropy_sum};

/// How BatchNorm behaves while gradients are taken over a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BnPolicy {
    /// The original: training mode — batch statistics, and the running
    /// statistics absorb every batch seen.
    #[default]
    Train,
    /// Eval-mode statistics; buffers untouched.
    Frozen,
}

/// Whether gradients over a dataset are summed or averaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reduction {
    /// Σ over samples (the original).
    #[default]
    Sum,
    /// Σ over samples divided by their number.
    Mean,
}

/// Options of [`grad_sum`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GradSumOptions {
    /// Images per forward/backward pass (the result does not depend on it
    /// under [`BnPolicy::Frozen`]; under `Train` batch statistics do).
    pub batch_size: usize,
    /// BatchNorm behaviour.
    pub bn: BnPolicy,
    /// Sum or mean.
    pub reduction: Reduction,
    /// Seed of the dropout stream used under [`BnPolicy::Train`].
    pub seed: u64,
}

/// The gradient of the summed cross-entropy over a dataset.
#[derive(Clone, Debug)]
pub struct GradSum {
    /// Per trainable parameter.
    pub grads: Gradients,
    /// Σ cross-entropy over the samples (before any `Mean` division).
    pub loss_sum: f64,
    /// Number of samples.
    pub n: usize,
    /// Forward/backward passes taken.
    pub batches: usize,
}

/// `Σ over batches of ∇θ Σ_i CE(f(x_i), y_i)` over `data[indices]` (or that
/// divided by `n` under [`Reduction::Mean`]), for every trainable tensor.
///
/// Under [`BnPolicy::Train`] the model runs in training mode, exactly as the
/// original notebook: batch statistics normalise, running statistics are
/// updated, dropout (if any) is on.
pub fn grad_sum(
    model: &ResNet,
    data: &Dataset,
    indices: &[usize],
    opts: GradSumOptions,
) -> Result<GradSum> {
    if indices.is_empty() {
        return Err(ResnetError::EmptyData("the gradient set"));
    }
    if opts.batch_size == 0 {
        return Err(ResnetError::Config {
            field: "batch_size",
            reason: "must be at least 1".into(),
        });
    }
    let device = model.device();
    let (mode, mut dropout_rng) = match opts.bn {
        BnPolicy::Train => (BnMode::Train, Some(rng::stream(opts.seed, rng::DROPOUT))),
        BnPolicy::Frozen => (BnMode::Eval, None),
    };
    let mut acc: Option<Gradients> = None;
    let mut loss_acc: Option<Tensor> = None;
    let mut batches = 0;
    for batch in data.batches(indices, opts.batch_size, device) {
        let (x, y) = batch?;
        let pass = model.forward_recorded(&x, mode, dropout_rng.as_mut())?;
        let loss = cross_entropy_sum(&pass.logits, &y)?;
        let g = Gradients::from_store(model, &pass.backward(&loss)?)?;
        acc = Some(match acc {
            None => g,
            Some(a) => a.add(&g)?,
        });
        let loss = loss.detach().to_dtype(DType::F64)?;
        loss_acc = Some(match loss_acc {
            None => loss,
            Some(l) => (l + loss)?,
        });
        batches += 1;
    }
    let n = indices.len();
    let mut grads = acc.ok_or(ResnetError::EmptyData("the gradient set"))?;
    let loss_sum = loss_acc
        .ok_or(ResnetError::EmptyData("the gradient set"))?
        .to_scalar::<f64>()?;
    if !loss_sum.is_finite() || !grads.is_finite()? {
        return Err(ResnetError::NonFiniteGradient {
            what: format!("{n} samples"),
            loss: loss_sum,
        });
    }
    if opts.reduction == Reduction::Mean {
        grads = grads.scale(1.0 / n as f64)?;
    }
    Ok(GradSum {
        grads,
        loss_sum,
        n,
        batches,
    })
}
