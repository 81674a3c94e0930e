//! # muq-resnet
//!
//! The CIFAR ResNet-18 that muq trains and unlearns, written on candle, and
//! everything that trains it or reads it out — with the pieces candle lacks:
//!
//! - torchvision's architecture and parameter names (`conv1.weight`,
//!   `layer2.0.downsample.0.weight`, `fc.bias`, …) at any `width`
//!   (64 = full size, 11,173,962 trainable parameters);
//! - initialisation drawn on the host from a seed (reproducible on every
//!   device) with torchvision's schemes ([`init`]);
//! - a clear split between trainable parameters and BatchNorm running
//!   statistics ([`ParamKind`]);
//! - BatchNorm and SGD (momentum, weight decay) with PyTorch semantics;
//! - [`train`] (or [`train_resumable`], which survives being stopped),
//!   [`logits`] (incl. MC dropout), [`grad_sum`] (the building
//!   block of unlearning) and safetensors [`checkpoint`]s;
//! - a backward pass of its own through the convolutions and BatchNorms
//!   ([`ResNet::forward_recorded`], [`Recorded::backward`], [`backward`]):
//!   candle's bits without candle's zero-filled gradient accumulators.
//!
//! ```
//! use candle_core::Device;
//! use muq_data::{Dataset, Normalization, rng, synthetic};
//! use muq_resnet::{Progress, ResNet, ResNetConfig, TrainConfig, logits, train, Passes};
//! use std::sync::Arc;
//!
//! let data = synthetic::generate(64, 32, 1);
//! let train_set = Dataset::clean(Arc::new(data.train), Normalization::CIFAR10);
//! let config = ResNetConfig { width: 4, ..Default::default() };
//! let model = ResNet::new(&config, &mut rng::stream(1, rng::INIT), &Device::Cpu)?;
//! let all: Vec<usize> = (0..train_set.len()).collect();
//! let cfg = TrainConfig { epochs: 1, batch_size: 32, ..Default::default() };
//! let report = train(&model, &train_set, &all, &cfg, 1, Progress::Silent)?;
//! assert_eq!(report.epochs.len(), 1);
//! let out = logits(&model, &train_set, &all[..8], 8, Passes::Eval)?;
//! assert_eq!(out.passes[0].len(), 8 * 10);
//! # Ok::<(), muq_resnet::ResnetError>(())
//! ```
#![deny(missing_docs)]

pub mod bench;
pub mod checkpoint;
mod error;
mod grad_sum;
mod grads;
mod infer;
pub mod init;
pub mod jvp;
pub mod kernels;
mod model;
mod resume;
mod sgd;
mod train;

pub use error::{ResnetError, Result};
pub use grad_sum::{BnPolicy, GradSum, GradSumOptions, Reduction, grad_sum};
pub use grads::{Gradients, ParamVector};
pub use infer::{Logits, Passes, logits};
pub use kernels::Kernels;
pub use model::{
    BN_EPS, BnMode, Param, ParamKind, Recorded, ResNet, ResNetConfig, backward, cross_entropy_sum,
};
pub use resume::Resume;
pub use sgd::{Sgd, SgdConfig};
pub use train::{
    EpochStats, Progress, ResumePoint, StepBackward, StepForward, TrainConfig, TrainReport,
    TrainStep, Trained, train, train_resumable,
};
