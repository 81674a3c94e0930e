//! The training loop.

use std::time::Instant;

use candle_core::{D, DType, Tensor, Var};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use muq_data::{Dataset, epoch_order, rng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::grads::Gradients;
use crate::resume::{self, Resume};
use crate::{BnMode, Recorded, ResNet, ResnetError, Result, Sgd, SgdConfig, cross_entropy_sum};

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
    /// Total wall-clock seconds (across resumptions).
    pub seconds: f64,
    /// Where [`train_resumable`] continued from a saved state, in order
    /// (empty for a training that ran in one go).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumed_at: Vec<ResumePoint>,
}

/// A point a training continued from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumePoint {
    /// The 1-based epoch under way.
    pub epoch: usize,
    /// How many of its steps were already done.
    pub step: usize,
}

/// How [`train_resumable`] ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Trained {
    /// Every epoch ran.
    Finished(TrainReport),
    /// [`Resume::stop_after_steps`] stopped it, with its state saved.
    Paused(ResumePoint),
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
    match run(model, data, indices, config, seed, progress, None)? {
        Trained::Finished(report) => Ok(report),
        Trained::Paused(_) => unreachable!("a training without `Resume` never pauses"),
    }
}

/// [`train`], saving its state to `resume.path` as it goes and starting
/// from the state there when there is one, so that a killed training loses
/// at most `resume.every_steps` steps.
///
/// A continued training computes the same bits as one run in one go: the
/// state holds the weights, BatchNorm statistics, momentum buffers, the
/// dropout stream's position and the epoch's running sums; the batch order
/// is a function of the seed and epoch. `model` must be freshly built as
/// for [`train`]; it is overwritten from the state when one is found. The
/// state file stays after training (the caller deletes it once the model is
/// stored elsewhere).
///
/// # Errors
/// As [`train`]; [`ResnetError::Checkpoint`] for a state file that is
/// unreadable or belongs to another training (other seed, config, model or
/// training indices).
pub fn train_resumable(
    model: &ResNet,
    data: &Dataset,
    indices: &[usize],
    config: &TrainConfig,
    seed: u64,
    progress: Progress,
    resume: &Resume,
) -> Result<Trained> {
    run(model, data, indices, config, seed, progress, Some(resume))
}

/// Where a training stands: the running state that a [`Resume`] saves.
struct Cursor {
    epoch: usize,
    step: usize,
    loss_sum: f64,
    correct: f64,
    epoch_seconds: f64,
    seconds: f64,
    report: TrainReport,
}

impl Cursor {
    fn record(
        &self,
        identity: &resume::Record,
        dropout_rng: &ChaCha8Rng,
        epoch_seconds: f64,
        seconds: f64,
    ) -> resume::Record {
        resume::Record {
            epoch: self.epoch,
            step: self.step,
            loss_sum: self.loss_sum,
            correct: self.correct,
            epoch_seconds,
            seconds,
            finished: self.report.epochs.clone(),
            resumed_at: self.report.resumed_at.clone(),
            dropout_word_pos: dropout_rng.get_word_pos().to_string(),
            ..identity.clone()
        }
    }
}

fn run(
    model: &ResNet,
    data: &Dataset,
    indices: &[usize],
    config: &TrainConfig,
    seed: u64,
    progress: Progress,
    resume: Option<&Resume>,
) -> Result<Trained> {
    config.validate()?;
    if indices.is_empty() {
        return Err(ResnetError::EmptyData("the training set"));
    }
    let device = model.device().clone();
    let mut step_fn = TrainStep::new(model, config.sgd)?;
    let mut dropout_rng = rng::stream(seed, rng::DROPOUT);
    let steps_per_epoch = indices.len().div_ceil(config.batch_size);
    let mut at = Cursor {
        epoch: 1,
        step: 0,
        loss_sum: 0.0,
        correct: 0.0,
        epoch_seconds: 0.0,
        seconds: 0.0,
        report: TrainReport::default(),
    };
    let identity = resume::Record {
        format: resume::FORMAT,
        seed,
        config: config.clone(),
        model: model.config().clone(),
        examples: indices.len(),
        indices_fnv: resume::fingerprint(indices),
        epoch: 1,
        step: 0,
        loss_sum: 0.0,
        correct: 0.0,
        epoch_seconds: 0.0,
        seconds: 0.0,
        finished: Vec::new(),
        resumed_at: Vec::new(),
        dropout_word_pos: "0".into(),
    };
    if let Some(r) = resume.filter(|r| r.path.exists()) {
        let (saved, momentum) = resume::load(&r.path, &identity, model)?;
        let word_pos: u128 =
            saved
                .dropout_word_pos
                .parse()
                .map_err(|_| ResnetError::Checkpoint {
                    path: r.path.clone(),
                    reason: format!("bad dropout position `{}`", saved.dropout_word_pos),
                })?;
        dropout_rng.set_word_pos(word_pos);
        step_fn.restore_momentum(momentum);
        at = Cursor {
            epoch: saved.epoch,
            step: saved.step,
            loss_sum: saved.loss_sum,
            correct: saved.correct,
            epoch_seconds: saved.epoch_seconds,
            seconds: saved.seconds,
            report: TrainReport {
                epochs: saved.finished,
                seconds: 0.0,
                resumed_at: saved.resumed_at,
            },
        };
        at.report.resumed_at.push(ResumePoint {
            epoch: at.epoch,
            step: at.step,
        });
        if progress == Progress::Stderr {
            eprintln!(
                "resuming at epoch {}, step {} of {steps_per_epoch}, from {}",
                at.epoch,
                at.step,
                r.path.display()
            );
        }
    }
    let started = Instant::now();
    let mut taken = 0usize;
    if progress == Progress::Stderr {
        eprintln!(
            "{:>5} {:>10} {:>9} {:>9} {:>7}",
            "epoch", "loss", "train_acc", "seconds", "steps"
        );
        for stats in &at.report.epochs {
            print_epoch(stats);
        }
    }
    while at.epoch <= config.epochs {
        let epoch = at.epoch;
        let epoch_start = Instant::now();
        let order = epoch_order(indices, seed, epoch - 1);
        let bar = progress_bar(progress, steps_per_epoch, epoch, config.epochs);
        bar.set_position(at.step as u64);
        let rest = &order[(at.step * config.batch_size).min(order.len())..];
        for batch in data.batches(rest, config.batch_size, &device) {
            let (x, y) = batch?;
            let n = y.dim(0)?;
            let forward = step_fn.forward(model, &x, &y, Some(&mut dropout_rng))?;
            let out = step_fn.backward(model, forward, &y)?;
            let batch_loss = out.loss_sum / n as f32;
            if !batch_loss.is_finite() {
                bar.finish_and_clear();
                return Err(ResnetError::NonFiniteLoss {
                    epoch,
                    step: at.step + 1,
                    loss: batch_loss,
                });
            }
            step_fn.update(&out.grads)?;
            at.loss_sum += out.loss_sum as f64;
            at.correct += out.correct as f64;
            at.step += 1;
            taken += 1;
            bar.inc(1);
            bar.set_message(format!("loss {batch_loss:.4}"));
            let Some(r) = resume else { continue };
            if at.step == steps_per_epoch {
                continue;
            }
            let stop = r.stop_after_steps.is_some_and(|s| taken >= s);
            if stop || (r.every_steps > 0 && at.step.is_multiple_of(r.every_steps)) {
                let record = at.record(
                    &identity,
                    &dropout_rng,
                    at.epoch_seconds + epoch_start.elapsed().as_secs_f64(),
                    at.seconds + started.elapsed().as_secs_f64(),
                );
                resume::save(&r.path, &record, model, &step_fn.momentum()?)?;
            }
            if stop {
                bar.finish_and_clear();
                return Ok(Trained::Paused(ResumePoint {
                    epoch,
                    step: at.step,
                }));
            }
        }
        bar.finish_and_clear();
        let stats = EpochStats {
            epoch,
            loss: at.loss_sum / indices.len() as f64,
            accuracy: at.correct / indices.len() as f64,
            seconds: at.epoch_seconds + epoch_start.elapsed().as_secs_f64(),
            steps: steps_per_epoch,
        };
        if progress == Progress::Stderr {
            print_epoch(&stats);
        }
        at.report.epochs.push(stats);
        at.epoch += 1;
        at.step = 0;
        at.loss_sum = 0.0;
        at.correct = 0.0;
        at.epoch_seconds = 0.0;
        if let Some(r) = resume {
            let record = at.record(
                &identity,
                &dropout_rng,
                0.0,
                at.seconds + started.elapsed().as_secs_f64(),
            );
            resume::save(&r.path, &record, model, &step_fn.momentum()?)?;
            if at.epoch <= config.epochs && r.stop_after_steps.is_some_and(|s| taken >= s) {
                return Ok(Trained::Paused(ResumePoint {
                    epoch: at.epoch,
                    step: 0,
                }));
            }
        }
    }
    at.report.seconds = at.seconds + started.elapsed().as_secs_f64();
    Ok(Trained::Finished(at.report))
}

fn print_epoch(stats: &EpochStats) {
    eprintln!(
        "{:>5} {:>10.4} {:>9.4} {:>9.1} {:>7}",
        stats.epoch, stats.loss, stats.accuracy, stats.seconds, stats.steps
    );
}

/// One optimiser step of [`train`] in its three phases — forward with the
/// loss, backward with the gradients and the batch's loss and correct count
/// read out, the SGD update — so that a caller can time each (muq's
/// `bench` does) while taking exactly the steps `train` takes.
pub struct TrainStep {
    opt: Sgd,
    vars: Vec<Var>,
}

/// What [`TrainStep::forward`] computed: the recorded pass (logits) and the
/// summed and mean cross-entropy, still on the autograd graph.
pub struct StepForward {
    recorded: Recorded,
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
        let recorded = model.forward_recorded(x, BnMode::Train, dropout_rng)?;
        let loss_sum = cross_entropy_sum(&recorded.logits, y)?;
        let loss = (&loss_sum / n as f64)?;
        Ok(StepForward {
            recorded,
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
        let logits = forward.recorded.logits.clone();
        let store = forward.recorded.backward(&forward.loss)?;
        let grads = Gradients::from_store(model, &store)?;
        drop(store);
        let hits = logits
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

    /// The optimiser's momentum buffers (see [`Sgd::momentum_buffers`]).
    ///
    /// # Errors
    /// Tensor errors.
    pub fn momentum(&self) -> Result<Vec<Option<Tensor>>> {
        let vars: Vec<&Var> = self.vars.iter().collect();
        self.opt.momentum_buffers(&vars)
    }

    /// Replaces the optimiser's momentum buffers (from
    /// [`TrainStep::momentum`] of an earlier step).
    pub fn restore_momentum(&mut self, buffers: Vec<Option<Tensor>>) {
        self.opt.set_momentum_buffers(buffers);
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
