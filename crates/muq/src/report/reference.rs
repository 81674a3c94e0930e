//! The original study's published numbers, set beside ours in the report.

use muq_data::ModalityKind;
use serde::{Deserialize, Serialize};

use super::model::Reported;

/// One row of the original study's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceRow {
    /// `random`, `noise` or `label`.
    pub modality: String,
    /// ECE after temperature scaling.
    pub ece: Reported,
    /// Brier score after temperature scaling.
    pub brier: Reported,
}

/// The original study's numbers (ResNet-18, 3 epochs, 3 runs,
/// `train_on = clean`, `bn = train`, after temperature scaling), as section 8
/// of the spec quotes them.
pub fn reference_table() -> Vec<ReferenceRow> {
    let row = |modality: ModalityKind, ece: (f64, f64), brier: (f64, f64)| ReferenceRow {
        modality: modality.to_string(),
        ece: Reported {
            mean: ece.0,
            std: ece.1,
        },
        brier: Reported {
            mean: brier.0,
            std: brier.1,
        },
    };
    vec![
        row(ModalityKind::Random, (0.0154, 0.0025), (0.4118, 0.0181)),
        row(ModalityKind::Noise, (0.0184, 0.0003), (0.4268, 0.0263)),
        row(ModalityKind::Label, (0.0495, 0.0283), (0.6376, 0.0813)),
    ]
}

/// The original study's training accuracy after epochs 1, 2, 3, as read off
/// its training log (spec section 8: "about 48% / 68% / 77%").
pub const ORIGINAL_TRAIN_ACCURACY: [f64; 3] = [0.48, 0.68, 0.77];
