//! # muq-unlearn
//!
//! Machine unlearning for muq's CIFAR ResNet-18: given a trained model, the
//! images to forget and the images to keep, make a model that behaves as if
//! it had never seen the forget set. One entry point, [`unlearn`], applies a
//! [`Method`]:
//!
//! - **first-order** (Warnecke et al., NDSS 2023; the original's method):
//!   `θ ← θ + τ·g`, `g` the summed (or mean) cross-entropy gradient over the
//!   forget set as the model sees it, τ = 2e-5, BatchNorm in training mode
//!   (the original) or frozen;
//! - **second-order**: a damped Newton step `θ ← θ + τ·(H + λI)⁻¹g` on the
//!   retained loss, `H` the Gauss–Newton matrix ([`GaussNewtonHvp`], exact
//!   products by forward- and reverse-mode differentiation) or the Hessian
//!   by finite differences of gradients ([`FiniteDiffHvp`]), solved
//!   by conjugate gradients or LiSSA ([`conjugate_gradient`], [`lissa`])
//!   behind the [`Hvp`] trait;
//! - **gradient ascent** on the forget set for k steps;
//! - **fine-tune** on the retain set for k epochs;
//! - **retrain** from scratch on the retain set — the gold standard;
//! - the field's standard methods: **random labels** and **SalUn** (Fan et
//!   al., ICLR 2024), **SCRUB** and **NegGrad+** (Kurmanji et al., NeurIPS
//!   2023), **ℓ1-sparse** fine-tuning (Jia et al., NeurIPS 2023) and
//!   **Fisher forgetting** (Golatkar et al., CVPR 2020), all stepping
//!   through one masked-SGD helper.
//!
//! Every method leaves the input model untouched and returns a fresh model
//! with an [`UnlearnReport`]: its [`Cost`] (seconds, per-sample gradients,
//! Hessian-vector products) and [`Diagnostics`] (‖g‖, forget loss, solver
//! residual, training log…), serialisable for result files. [`Method`]
//! deserialises from a run's config (`method = "first_order"`, …).
//!
//! ```
//! use std::sync::Arc;
//! use candle_core::Device;
//! use muq_data::{Dataset, Normalization, rng, synthetic};
//! use muq_resnet::{Progress, ResNet, ResNetConfig, TrainConfig};
//! use muq_unlearn::{Method, UnlearnContext, unlearn};
//!
//! let data = synthetic::generate(24, 0, 7);
//! let train_set = Dataset::clean(Arc::new(data.train), Normalization::CIFAR10);
//! let config = ResNetConfig { width: 4, ..Default::default() };
//! let model = ResNet::new(&config, &mut rng::stream(7, rng::INIT), &Device::Cpu)?;
//! let forget: Vec<usize> = (0..4).collect();
//! let retain: Vec<usize> = (4..24).collect();
//! let ctx = UnlearnContext {
//!     model: &model,
//!     trained_on: &train_set,
//!     forget_data: &train_set,
//!     forget: &forget,
//!     retain: &retain,
//!     train_config: &TrainConfig::default(),
//!     seed: 7,
//!     progress: Progress::Silent,
//! };
//! // The original: τ = 2e-5, summed gradient, BatchNorm in training mode.
//! let out = unlearn(&Method::default(), &ctx)?;
//! assert_eq!(out.report.method(), "first_order");
//! assert_eq!(out.report.cost.grad_samples, 4);
//! assert!(out.report.update_norm > 0.0);
//! # Ok::<(), muq_unlearn::UnlearnError>(())
//! ```
#![deny(missing_docs)]

mod context;
mod error;
mod field;
mod hvp;
mod jvp;
mod method;
mod methods;
mod report;
mod solve;

pub use context::UnlearnContext;
pub use error::{Result, UnlearnError};
pub use field::{distill_kl, fisher_noise_variance, l1_alpha, saliency_mask};
pub use hvp::{FiniteDiffHvp, GaussNewtonHvp, LogitModel, Objective, ResNetObjective};
pub use method::{
    Curvature, FineTuneConfig, FirstOrderConfig, FisherConfig, GradientAscentConfig,
    L1SparseConfig, Method, NegGradPlusConfig, RandomLabelConfig, RetrainConfig, SalunConfig,
    ScrubConfig, SecondOrderConfig, Solver,
};
pub use methods::{HESSIAN_STREAM, hessian_sample, unlearn};
pub use report::{
    Cost, Diagnostics, FirstOrderDiagnostics, FisherDiagnostics, GradientAscentDiagnostics,
    L1Epoch, L1SparseDiagnostics, MaskStats, NegGradEpoch, NegGradPlusDiagnostics,
    RandomLabelDiagnostics, RelabelEpoch, SalunDiagnostics, ScrubDiagnostics, ScrubEpoch,
    SecondOrderDiagnostics, TrainDiagnostics, UnlearnReport, Unlearned,
};
pub use solve::{Hvp, Solution, SolveOptions, SolveReport, StopReason, conjugate_gradient, lissa};
