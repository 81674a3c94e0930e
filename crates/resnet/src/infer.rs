//! Reading a model out: logits in batches and gradient sums over a dataset.

use candle_core::{DType, Tensor};
use muq_data::{Dataset, rng};
use serde::{Deserialize, Serialize};

use crate::grads::Gradients;
use crate::{BnMode, ResNet, ResnetError, Result, cross_entropy_sum};

/// Deterministic or stochastic forward passes for [`logits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Passes {
    /// One pass in eval mode (BatchNorm running statistics, no dropout).
    Eval,
    /// `passes` stochastic passes in eval mode with dropout on (MC dropout);
    /// masks come from the `dropout` stream of `seed`.
    McDropout {
        /// How many passes.
        passes: usize,
        /// Run seed.
        seed: u64,
    },
}

/// Logits of one or more passes over a dataset, on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Logits {
    /// One row-major `n × num_classes` block per pass.
    pub passes: Vec<Vec<f32>>,
    /// Number of samples.
    pub n: usize,
    /// Number of classes.
    pub num_classes: usize,
}

/// Logits of `model` on `data[indices]`, in eval mode, in batches of
/// `batch_size`. Logits stay on the device until the whole set is done and
/// come back to the host once per pass.
pub fn logits(
    model: &ResNet,
    data: &Dataset,
    indices: &[usize],
    batch_size: usize,
    passes: Passes,
) -> Result<Logits> {
    if batch_size == 0 {
        return Err(ResnetError::Config {
            field: "batch_size",
            reason: "must be at least 1".into(),
        });
    }
    let device = model.device();
    let k = model.config().num_classes;
    let (count, mut dropout_rng) = match passes {
        Passes::Eval => (1, None),
        Passes::McDropout { passes, seed } => {
            if model.config().dropout <= 0.0 {
                return Err(ResnetError::Config {
                    field: "mc_dropout",
                    reason: "MC dropout needs a model trained with dropout > 0".into(),
                });
            }
            (passes, Some(rng::stream(seed, "mc_dropout")))
        }
    };
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let mut blocks = Vec::with_capacity(indices.len().div_ceil(batch_size.max(1)));
        for batch in data.batches(indices, batch_size, device) {
            let (x, _) = batch?;
            blocks.push(
                model
                    .forward(&x, BnMode::Eval, dropout_rng.as_mut())?
                    .detach(),
            );
        }
        let all = if blocks.is_empty() {
            Vec::new()
        } else {
            Tensor::cat(&blocks, 0)?.flatten_all()?.to_vec1::<f32>()?
        };
        out.push(all);
    }
    Ok(Logits {
        passes: out,
        n: indices.len(),
        num_classes: k,
    })
}

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
        let logits = model.forward(&x, mode, dropout_rng.as_mut())?;
        let loss = cross_entropy_sum(&logits, &y)?;
        let g = Gradients::from_store(model, &loss.backward()?)?;
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
