//! What an unlearning method returns: the new model, what it cost, and
//! method-specific diagnostics.

use muq_resnet::{BnPolicy, Reduction, ResNet, TrainReport};
use serde::{Deserialize, Serialize};

use crate::{Curvature, SolveReport};

/// The result of [`unlearn`](crate::unlearn).
#[derive(Debug)]
pub struct Unlearned {
    /// The new model: a fresh [`ResNet`], independent of the input model.
    pub model: ResNet,
    /// Cost and diagnostics, ready for a result file.
    pub report: UnlearnReport,
}

/// Cost and diagnostics of one unlearning run (serialisable).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnlearnReport {
    /// What it cost.
    pub cost: Cost,
    /// `‖θ_new − θ_base‖` over the trainable parameters.
    pub update_norm: f64,
    /// Method-specific numbers, tagged by `method`.
    pub diagnostics: Diagnostics,
}

impl UnlearnReport {
    /// The method's short name (`first_order`, …).
    pub fn method(&self) -> &'static str {
        match self.diagnostics {
            Diagnostics::FirstOrder(_) => "first_order",
            Diagnostics::SecondOrder(_) => "second_order",
            Diagnostics::GradientAscent(_) => "gradient_ascent",
            Diagnostics::FineTune(_) => "fine_tune",
            Diagnostics::Retrain(_) => "retrain",
            Diagnostics::RandomLabel(_) => "random_label",
            Diagnostics::Salun(_) => "salun",
            Diagnostics::Scrub(_) => "scrub",
            Diagnostics::L1Sparse(_) => "l1_sparse",
            Diagnostics::NegGradPlus(_) => "neggrad_plus",
            Diagnostics::Fisher(_) => "fisher",
        }
    }
}

/// What a method cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Wall-clock seconds, including copying the model.
    pub seconds: f64,
    /// Per-sample gradient evaluations (one forward and backward pass of
    /// one image): `|forget|` for first-order; for second-order that plus,
    /// per product, one (Gauss–Newton) or two (Hessian) per sampled image;
    /// `epochs·|retain|` for training.
    pub grad_samples: usize,
    /// Per-sample forward-only or forward-mode evaluations (the
    /// Gauss–Newton products' `J·v`).
    pub forward_samples: usize,
    /// Curvature-vector products (second-order only).
    pub hvps: usize,
    /// Parameter updates applied (optimiser steps; 1 for the closed-form
    /// methods).
    pub updates: usize,
}

/// Method-specific diagnostics, tagged by `method` in JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Diagnostics {
    /// First-order.
    FirstOrder(FirstOrderDiagnostics),
    /// Second-order.
    SecondOrder(SecondOrderDiagnostics),
    /// Gradient ascent.
    GradientAscent(GradientAscentDiagnostics),
    /// Fine-tune.
    FineTune(TrainDiagnostics),
    /// Retrain.
    Retrain(TrainDiagnostics),
    /// Random labels.
    RandomLabel(RandomLabelDiagnostics),
    /// SalUn.
    Salun(SalunDiagnostics),
    /// SCRUB.
    Scrub(ScrubDiagnostics),
    /// ℓ1-sparse.
    L1Sparse(L1SparseDiagnostics),
    /// NegGrad+.
    #[serde(rename = "neggrad_plus")]
    NegGradPlus(NegGradPlusDiagnostics),
    /// Fisher forgetting.
    Fisher(FisherDiagnostics),
}

/// Diagnostics of first-order unlearning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FirstOrderDiagnostics {
    /// Mean cross-entropy over the forget set during the gradient pass,
    /// before the update (BatchNorm as `bn` says).
    pub forget_loss: f64,
    /// `‖g‖` (after the reduction).
    pub grad_norm: f64,
    /// The step size τ used.
    pub tau: f64,
    /// BatchNorm policy used.
    pub bn: BnPolicy,
    /// Reduction used.
    pub reduction: Reduction,
    /// Forward/backward passes taken.
    pub batches: usize,
}

/// Diagnostics of second-order unlearning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecondOrderDiagnostics {
    /// Mean cross-entropy over the forget set during the gradient pass.
    pub forget_loss: f64,
    /// `‖g‖` of the summed forget gradient.
    pub grad_norm: f64,
    /// The scale τ used (`1/|retain|` unless set).
    pub tau: f64,
    /// Damping λ.
    pub damping: f64,
    /// Curvature used.
    pub curvature: Curvature,
    /// Retained images the curvature was taken over.
    pub hessian_samples: usize,
    /// Relative finite-difference step (used by `curvature = "hessian"`).
    pub fd_eps: f64,
    /// `‖x‖`, the solution before scaling by τ.
    pub step_norm: f64,
    /// `gᵀx`, positive when the solve found a descent direction of the
    /// retained loss (the Newton decrement, squared, for `λ = 0`).
    pub g_dot_x: f64,
    /// The solver's report: iterations, products, final relative residual.
    pub solve: SolveReport,
}

/// Diagnostics of gradient ascent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradientAscentDiagnostics {
    /// Mean cross-entropy of each step's batch, before that step's update
    /// (BatchNorm as `bn` says).
    pub step_losses: Vec<f64>,
    /// Forget images visited (with repeats across passes).
    pub images_seen: usize,
    /// Passes over the forget set begun.
    pub passes: usize,
}

/// Diagnostics of the methods that train: fine-tune and retrain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainDiagnostics {
    /// The training loop's per-epoch log.
    pub train: TrainReport,
    /// The seed handed to the training loop (shuffling and dropout).
    pub train_seed: u64,
    /// Retained images trained on.
    pub images: usize,
}

/// One epoch of random-label training (random labels and SalUn).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RelabelEpoch {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean cross-entropy against the random labels over the forget pass,
    /// each batch before its step.
    pub forget_loss: f64,
    /// Mean cross-entropy over the retain pass, each batch before its step.
    pub retain_loss: f64,
    /// Optimiser steps taken (forget and retain batches).
    pub steps: usize,
}

/// Diagnostics of random-label unlearning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RandomLabelDiagnostics {
    /// One entry per epoch.
    pub epochs: Vec<RelabelEpoch>,
    /// Forget images whose random label equalled their own label (the
    /// reference draws from all classes).
    pub labels_unchanged: usize,
}

/// The SalUn saliency mask, as measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaskStats {
    /// Weights with mask 1 (`⌊fraction·total⌋`).
    pub kept: usize,
    /// Trainable weights in all.
    pub total: usize,
    /// The smallest saliency kept.
    pub threshold: f64,
    /// Mean cross-entropy over the forget set during the saliency pass.
    pub forget_loss: f64,
    /// `‖g‖` of the saliency gradient.
    pub grad_norm: f64,
}

/// Diagnostics of SalUn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SalunDiagnostics {
    /// The mask.
    pub mask: MaskStats,
    /// The masked random-label training.
    pub training: RandomLabelDiagnostics,
}

/// One SCRUB epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScrubEpoch {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean forget-set KL(teacher ‖ student) over the max pass, each batch
    /// before its step; `None` after `msteps`.
    pub max_kl: Option<f64>,
    /// Mean retain cross-entropy over the min pass.
    pub min_ce: f64,
    /// Mean retain KL over the min pass.
    pub min_kl: f64,
    /// Max steps taken.
    pub max_steps: usize,
    /// Min steps taken.
    pub min_steps: usize,
}

/// Diagnostics of SCRUB.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScrubDiagnostics {
    /// One entry per epoch.
    pub epochs: Vec<ScrubEpoch>,
}

/// One ℓ1-sparse epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct L1Epoch {
    /// 1-based epoch.
    pub epoch: usize,
    /// The ℓ1 weight α_e used.
    pub alpha: f64,
    /// Mean retain cross-entropy, each batch before its step.
    pub ce: f64,
    /// `‖θ‖₁` over the trainable parameters at the end of the epoch.
    pub l1_norm: f64,
    /// Optimiser steps taken.
    pub steps: usize,
}

/// Diagnostics of ℓ1-sparse unlearning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct L1SparseDiagnostics {
    /// `‖θ‖₁` of the model before unlearning.
    pub l1_norm_before: f64,
    /// One entry per epoch.
    pub epochs: Vec<L1Epoch>,
}

/// One NegGrad+ epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NegGradEpoch {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean retain cross-entropy, each batch before its step.
    pub retain_loss: f64,
    /// Mean forget cross-entropy, each batch before its step.
    pub forget_loss: f64,
    /// Optimiser steps taken (one per retain batch).
    pub steps: usize,
}

/// Diagnostics of NegGrad+.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NegGradPlusDiagnostics {
    /// One entry per epoch.
    pub epochs: Vec<NegGradEpoch>,
    /// Passes over the forget set begun.
    pub forget_passes: usize,
}

/// Diagnostics of Fisher forgetting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FisherDiagnostics {
    /// Retained images the Fisher was taken over.
    pub samples: usize,
    /// Noise scale α.
    pub alpha: f64,
    /// Mean of the diagonal Fisher over all trainable weights.
    pub fisher_mean: f64,
    /// Mean noise standard deviation `√v` over all trainable weights.
    pub noise_std_mean: f64,
    /// Largest noise standard deviation.
    pub noise_std_max: f64,
}
