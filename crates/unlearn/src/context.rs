//! What a method is applied to.

use muq_data::Dataset;
use muq_resnet::{Progress, ResNet, TrainConfig};

use crate::{Result, UnlearnError};

/// Everything an unlearning method may read. Nothing in it is modified.
#[derive(Clone, Copy, Debug)]
pub struct UnlearnContext<'a> {
    /// The trained model to unlearn from (its architecture and device are
    /// also those of a retrained model).
    pub model: &'a ResNet,
    /// The training set exactly as the model was trained on it (clean or
    /// modified): fine-tuning, retraining and the second-order Hessian read
    /// its `retain` images.
    pub trained_on: &'a Dataset,
    /// The training set as the forget gradient sees it (with the modality's
    /// noise and flipped labels): first-order, second-order and gradient
    /// ascent read its `forget` images. Same images, same length.
    pub forget_data: &'a Dataset,
    /// Indices of the images to forget (non-empty, no repeats).
    pub forget: &'a [usize],
    /// Indices of the images kept (no repeats, disjoint from `forget`).
    pub retain: &'a [usize],
    /// How the base model was trained; retraining repeats it on `retain`.
    pub train_config: &'a TrainConfig,
    /// The run seed: the base model's initialisation and shuffling seed,
    /// and the root of every stream a method draws from.
    pub seed: u64,
    /// Where the methods that train report progress.
    pub progress: Progress,
}

impl UnlearnContext<'_> {
    /// Checks that the pieces fit: equal dataset lengths, indices in range,
    /// a non-empty forget set, no repeats, `forget ∩ retain = ∅`, and (when
    /// `needs_retain`) a non-empty retain set.
    ///
    /// # Errors
    /// [`UnlearnError::Context`] naming the field at fault.
    pub fn validate(&self, needs_retain: bool) -> Result<()> {
        let n = self.trained_on.len();
        if self.forget_data.len() != n {
            return bad(
                "forget_data",
                format!(
                    "has {} images but trained_on has {n}; both must be views of the same \
                     training set",
                    self.forget_data.len()
                ),
            );
        }
        if self.forget.is_empty() {
            return bad("forget", "is empty: there is nothing to unlearn".into());
        }
        if needs_retain && self.retain.is_empty() {
            return bad(
                "retain",
                "is empty, but this method trains on or differentiates the retained data".into(),
            );
        }
        // 0 = unseen, 1 = in forget, 2 = in retain.
        let mut seen = vec![0u8; n];
        for (field, list, mark) in [("forget", self.forget, 1u8), ("retain", self.retain, 2)] {
            for &i in list {
                let Some(slot) = seen.get_mut(i) else {
                    return bad(
                        field,
                        format!("index {i} is out of range for a training set of {n}"),
                    );
                };
                match *slot {
                    0 => *slot = mark,
                    m if m == mark => {
                        return bad(field, format!("index {i} appears more than once"));
                    }
                    _ => {
                        return bad(
                            "retain",
                            format!(
                                "index {i} is also in the forget set; retain must be disjoint \
                                 from forget"
                            ),
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

fn bad(field: &'static str, reason: String) -> Result<()> {
    Err(UnlearnError::Context { field, reason })
}
