//! The data side of muq: everything between the CIFAR-10 files on disk and
//! the candle tensors a model trains and is evaluated on.
//!
//! - [`load_dir`] / [`write_dir`] read and write the CIFAR-10 binary layout,
//!   with errors that name the file and record at fault; images stay `u8`
//!   ([`ImageSet`]) until a batch is made.
//! - [`synthetic::generate`] makes a seeded, learnable CIFAR-like dataset for
//!   tests and demos.
//! - [`stratified_split`] and [`stratified_sample`] make the seeded
//!   calibration/evaluation split and class-balanced subsets.
//! - [`ModalityConfig`] and [`Modification`] draw the forget set and the
//!   corruptions of the `random`, `noise` and `label` modalities once from
//!   the run seed.
//! - [`Dataset`] applies a [`Modification`] and the [`Normalization`] and
//!   yields batches (`N×3×32×32` `f32`, `u32` labels) on any candle
//!   [`Device`](candle_core::Device); [`epoch_order`] reshuffles per epoch.
//! - [`rng`] derives a named random stream from the run seed for every
//!   random choice, so changing one changes nothing else.
//!
//! ```
//! use std::sync::Arc;
//! use candle_core::Device;
//! use muq_data::{
//!     synthetic, stratified_split, Dataset, ModalityConfig, ModalityKind, Modification,
//!     Normalization,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let seed = 100;
//! let data = synthetic::generate(200, 100, seed);
//! // The test set's calibration and evaluation halves.
//! let (calibration, evaluation) = stratified_split(data.test.labels(), 0.5, seed);
//! assert_eq!((calibration.len(), evaluation.len()), (50, 50));
//!
//! // Flip the labels of a 20% pool and forget 5% of the training set from it.
//! let cfg = ModalityConfig::new(ModalityKind::Label);
//! let m = Modification::draw(&cfg, &data.train, seed)?;
//! assert_eq!((m.pool.len(), m.forget.len(), m.retain.len()), (40, 10, 190));
//!
//! let train = Dataset::modified(Arc::new(data.train), &m, Normalization::CIFAR10);
//! let order = muq_data::epoch_order(&m.retain, seed, 0);
//! let batches = train.batches(&order, 64, &Device::Cpu);
//! assert_eq!(batches.len(), 3);
//! for batch in batches {
//!     let (x, y) = batch?;
//!     assert_eq!(x.dims()[1..], [3, 32, 32]);
//!     assert_eq!(y.dims(), &x.dims()[..1]);
//! }
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod cifar;
mod dataset;
mod error;
mod image_set;
mod locate;
mod modality;
mod normalize;
pub mod rng;
mod split;
pub mod synthetic;

pub use cifar::{CLASS_NAMES, Cifar10, DirCheck, FileCheck, load_dir, load_dir_checked, write_dir};
pub use dataset::{Batches, Dataset, NOISE_CLAMP, epoch_order};
pub use error::{DataError, Result};
pub use image_set::ImageSet;
pub use modality::{ModalityConfig, ModalityKind, Modification};
pub use normalize::Normalization;
pub use split::{stratified_sample, stratified_split};

/// Bytes of one image: 3 channels × 32 × 32, as CHW planes.
pub const IMAGE_BYTES: usize = 3072;
/// Bytes of one record of the binary layout: a label byte and an image.
pub const RECORD_BYTES: usize = IMAGE_BYTES + 1;
/// Number of classes.
pub const NUM_CLASSES: usize = 10;

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
