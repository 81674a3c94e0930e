//! The training loop.

use std::time::Instant;

use candle_core::{D, DType, Tensor};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use muq_data::{Dataset, epoch_order, rng};
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
    let mut opt = Sgd::new(config.sgd)?;
    opt.set_kernels(model.kernels());
    let mut dropout_rng = rng::stream(seed, rng::DROPOUT);
    let vars: Vec<_> = model.trainable().map(|p| p.var.clone()).collect();
    let var_refs: Vec<_> = vars.iter().collect();
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
            let logits = model.forward(&x, BnMode::Train, Some(&mut dropout_rng))?;
            let loss_sum_t = cross_entropy_sum(&logits, &y)?;
            let loss = (&loss_sum_t / n as f64)?;
            let store = loss.backward()?;
            let grads = Gradients::from_store(model, &store)?;
            // One host transfer per step: the summed loss and the correct count.
            let hits = logits
                .argmax(D::Minus1)?
                .eq(&y)?
                .to_dtype(DType::F32)?
                .sum_all()?;
            let scalars = Tensor::stack(&[loss_sum_t.detach(), hits], 0)?.to_vec1::<f32>()?;
            let batch_loss = scalars[0] / n as f32;
            if !batch_loss.is_finite() {
                bar.finish_and_clear();
                return Err(ResnetError::NonFiniteLoss {
                    epoch,
                    step: step + 1,
                    loss: batch_loss,
                });
            }
            opt.step(&var_refs, grads.tensors())?;
            loss_sum += scalars[0] as f64;
            correct += scalars[1] as f64;
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
