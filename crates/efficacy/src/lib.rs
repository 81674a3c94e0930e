//! Unlearning efficacy metrics, on plain slices.
//!
//! `muq-efficacy` measures how well a forget set has been forgotten, with the
//! two membership-inference (MIA) metrics of the machine-unlearning
//! literature:
//!
//! - **MIA-efficacy** ([`mia_efficacy`]), exactly as the SalUn /
//!   Unlearn-Sparse reference code (OPTML-Group, `evaluation/SVC_MIA.py`)
//!   computes it: an RBF SVC (`C = 3`, `gamma = 1 / n_features`) trained to
//!   tell shadow members from shadow non-members on a per-sample feature
//!   ([`MiaFeature`]: confidence, entropy, modified entropy, correctness, or
//!   the whole probability vector), then the fraction of the forget set it
//!   classifies as non-member.
//! - **Loss-threshold MIA** ([`loss_auc`]): the ROC AUC of per-sample loss
//!   separating the forget set from held-out samples (0.5 =
//!   indistinguishable).
//!
//! plus the per-sample helpers a run needs to feed them: [`softmax_probs`]
//! and [`cross_entropy`] from logits (both reuse `muq-calibrate`). It depends
//! on no tensor library: probabilities are a row-major `&[f64]` with
//! `num_classes` columns, labels a `&[usize]`.
//!
//! ```
//! use muq_efficacy::{cross_entropy, loss_auc, mia_efficacy, softmax_probs, MiaFeature, MiaSet};
//!
//! // Logits of 4 retained (member), 4 test (non-member) and 2 forget images, 2 classes.
//! let retain = [4.0f32, 0.0, 3.5, 0.0, 0.0, 4.0, 0.0, 3.0];
//! let test = [0.5f32, 0.0, 0.0, 0.2, 0.1, 0.0, 0.0, 0.4];
//! let forget = [0.3f32, 0.0, 0.0, 0.2];
//! let labels = [0, 0, 1, 1];
//!
//! let e = mia_efficacy(
//!     MiaFeature::Confidence,
//!     2,
//!     MiaSet::new(&softmax_probs(&retain, 2)?, &labels),
//!     MiaSet::new(&softmax_probs(&test, 2)?, &labels),
//!     MiaSet::new(&softmax_probs(&forget, 2)?, &[0, 1]),
//! )?;
//! assert_eq!(e, 1.0); // the forget set looks like unseen data
//!
//! let auc = loss_auc(&cross_entropy(&forget, 2, &[0, 1])?, &cross_entropy(&test, 2, &labels)?)?;
//! assert!((0.0..=1.0).contains(&auc));
//! # Ok::<(), muq_efficacy::EfficacyError>(())
//! ```
//!
//! The SVM is linfa-svm's (a port of libsvm's solver, the one under
//! scikit-learn's `SVC`); it keeps the shadow set's dense kernel matrix,
//! `8·n²` bytes (0.8 GB at n = 10,000). See [`svc_attack`] and
//! [`SvcParams`].
#![deny(missing_docs)]

mod error;
mod features;
mod logits;
mod loss;
mod svc;

pub use error::{EfficacyError, Result};
pub use features::{
    MiaFeature, ParseMiaFeatureError, confidence, correctness, entropy, mia_features,
    modified_entropy, modified_entropy_song_mittal,
};
pub use logits::{cross_entropy, softmax_probs};
pub use loss::loss_auc;
pub use svc::{Gamma, MiaOutcome, MiaSet, SvcParams, mia_efficacy, mia_efficacy_with, svc_attack};
