//! The training loop.

use std::time::Instant;

use candle_core::{D, DType, Tensor, Var};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use muq_data::{Dataset, epoch_order, rng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::grads::Gradients;
use crate::{BnMode, ResNet, ResnetError, Result, Sgd, SgdConfig, cross_entropy_sum};

/// How a model is trained (defaults: the spec's 3 epochs, batch 128 and
/// SGD lr 0.01, momentum 0.9, weight decay 5e-4).
///
/// Serialises flat (`epochs`, `batch_size`, `lr`, `momentum`,
/// `weight_decay`). serde cannot combine `flatten` with
/// `deny_unknown_fields`, so config files go through a flat struct of their
/// own (muq's `[train]` section) that rejects unknown keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// The optimiser.
    #[serde(flatten)]
    pub sgd: SgdConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 3,
            batch_size: 128,
            sgd: SgdConfig::default(),
        }
    }
}

impl TrainConfig {
    /// Checks the values, naming the field that is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(ResnetError::Config {
                field: "epochs",
                reason: "must be at least 1".into(),
            });
        }
        if self.batch_size < 2 {
            return Err(ResnetError::Config {
                field: "batch_size",
                reason: format!(
                    "must be at least 2 (BatchNorm needs a batch), got {}",
                    self.batch_size
                ),
            });
        }
        self.sgd.validate()
    }
}

/// Where progress goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Progress {
    /// Nothing is printed.
    Silent,
    /// One fixed-column line per epoch on stderr, plus a progress bar with
    /// step rate and ETA while stderr is a terminal.
    #[default]
    Stderr,
}

/// What one epoch measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean cross-entropy over the epoch's samples (training mode).
    pub loss: f64,
    /// Fraction of the epoch's samples classified correctly (training mode).
    pub accuracy: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Optimiser steps taken.
    pub steps: usize,
}

/// What a whole training run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// One entry per epoch.
    pub epochs: Vec<EpochStats>,
    /// Total wall-clock seconds.
    pub seconds: f64,
}

/// Trains `model` in place on `data[indices]` for `config.epochs` epochs.
///
/// Each epoch visits the indices in the order [`epoch_order`] gives for
/// `seed`, so the same model, data, config and seed give bitwise-identical
/// weights. Dropout masks (if the model has dropout) come from the
/// `dropout` stream of `seed`. A NaN or infinite loss stops training with
/// [`ResnetError::NonFiniteLoss`] naming the epoch and step.
pub fn train(
    model: &ResNet,
    data: &Dataset,
    indices: &[usize],
    config: &TrainConfig,
    seed: u64,
    progress: Progress,
) -> Result<TrainReport> {
    config.validate()?;
    if indices.is_empty() {
        return Err(ResnetError::EmptyData("the training set"));
    }
    let device = model.device().clone();
    let mut step_fn = TrainStep::new(model, config.sgd)?;
    let mut dropout_rng = rng::stream(seed, rng::DROPOUT);
    let steps_per_epoch = indices.len().div_ceil(config.batch_size);
    let started = Instant::now();
    let mut report = TrainReport::default();
    if progress == Progress::Stderr {
        eprintln!(
            "{:>5} {:>10} {:>9} {:>9} {:>7}",
            "epoch", "loss", "train_acc", "seconds", "steps"
        );
    }
    for epoch in 1..=config.epochs {
        let epoch_start = Instant::now();
        let order = epoch_order(indices, seed, epoch - 1);
        let bar = progress_bar(progress, steps_per_epoch, epoch, config.epochs);
        let mut loss_sum = 0.0f64;
        let mut correct = 0.0f64;
        for (step, batch) in data.batches(&order, config.batch_size, &device).enumerate() {
            let (x, y) = batch?;
            let n = y.dim(0)?;
            let forward = step_fn.forward(model, &x, &y, Some(&mut dropout_rng))?;
            let out = step_fn.backward(model, forward, &y)?;
            let batch_loss = out.loss_sum / n as f32;
            if !batch_loss.is_finite() {
                bar.finish_and_clear();
                return Err(ResnetError::NonFiniteLoss {
                    epoch,
                    step: step + 1,
                    loss: batch_loss,
                });
            }
            step_fn.update(&out.grads)?;
            loss_sum += out.loss_sum as f64;
            correct += out.correct as f64;
            bar.inc(1);
            bar.set_message(format!("loss {batch_loss:.4}"));
        }
        bar.finish_and_clear();
        let stats = EpochStats {
            epoch,
            loss: loss_sum / indices.len() as f64,
            accuracy: correct / indices.len() as f64,
            seconds: epoch_start.elapsed().as_secs_f64(),
            steps: steps_per_epoch,
        };
        if progress == Progress::Stderr {
            eprintln!(
                "{:>5} {:>10.4} {:>9.4} {:>9.1} {:>7}",
                stats.epoch, stats.loss, stats.accuracy, stats.seconds, stats.steps
            );
        }
        report.epochs.push(stats);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// One optimiser step of [`train`] in its three phases — forward with the
/// loss, backward with the gradients and the batch's loss and correct count
/// read out, the SGD update — so that a caller can time each (muq's
/// `bench` does) while taking exactly the steps `train` takes.
pub struct TrainStep {
    opt: Sgd,
    vars: Vec<Var>,
}

/// What [`TrainStep::forward`] computed: the logits and the summed and mean
/// cross-entropy, still on the autograd graph.
pub struct StepForward {
    logits: Tensor,
    loss_sum: Tensor,
    loss: Tensor,
}

/// What [`TrainStep::backward`] computed.
pub struct StepBackward {
    /// The gradient of the mean loss for every trainable parameter.
    pub grads: Gradients,
    /// The batch's summed cross-entropy.
    pub loss_sum: f32,
    /// How many of the batch's images were classified correctly.
    pub correct: f32,
}

impl TrainStep {
    /// An SGD optimiser with `sgd`'s settings over `model`'s trainable
    /// parameters, using the model's kernels.
    ///
    /// # Errors
    /// Invalid `sgd` settings.
    pub fn new(model: &ResNet, sgd: SgdConfig) -> Result<Self> {
        let mut opt = Sgd::new(sgd)?;
        opt.set_kernels(model.kernels());
        let vars = model.trainable().map(|p| p.var.clone()).collect();
        Ok(Self { opt, vars })
    }

    /// The training-mode forward pass (BatchNorm statistics updated,
    /// dropout from `dropout_rng` when given) and the loss of labels `y`.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn forward(
        &self,
        model: &ResNet,
        x: &Tensor,
        y: &Tensor,
        dropout_rng: Option<&mut ChaCha8Rng>,
    ) -> Result<StepForward> {
        let n = y.dim(0)?;
        let logits = model.forward(x, BnMode::Train, dropout_rng)?;
        let loss_sum = cross_entropy_sum(&logits, y)?;
        let loss = (&loss_sum / n as f64)?;
        Ok(StepForward {
            logits,
            loss_sum,
            loss,
        })
    }

    /// Back-propagates the mean loss and reads out the gradients, and the
    /// batch's summed loss and correct count (one host transfer).
    ///
    /// # Errors
    /// Tensor errors.
    pub fn backward(
        &self,
        model: &ResNet,
        forward: StepForward,
        y: &Tensor,
    ) -> Result<StepBackward> {
        let store = forward.loss.backward()?;
        let grads = Gradients::from_store(model, &store)?;
        drop(store);
        let hits = forward
            .logits
            .argmax(D::Minus1)?
            .eq(y)?
            .to_dtype(DType::F32)?
            .sum_all()?;
        let scalars = Tensor::stack(&[forward.loss_sum.detach(), hits], 0)?.to_vec1::<f32>()?;
        Ok(StepBackward {
            grads,
            loss_sum: scalars[0],
            correct: scalars[1],
        })
    }

    /// The SGD update with `grads` (from [`TrainStep::backward`]).
    ///
    /// # Errors
    /// Tensor errors.
    pub fn update(&mut self, grads: &Gradients) -> Result<()> {
        let vars: Vec<&Var> = self.vars.iter().collect();
        self.opt.step(&vars, grads.tensors())
    }
}

/// A bar that draws only on a terminal (indicatif hides it otherwise).
pub(crate) fn progress_bar(
    progress: Progress,
    len: usize,
    epoch: usize,
    epochs: usize,
) -> ProgressBar {
    if progress == Progress::Silent {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "epoch {prefix} [{bar:30}] {pos}/{len} steps  {per_sec}  eta {eta}  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}
