//! Reading a model out: logits in batches (eval mode, or MC-dropout passes).

use candle_core::Tensor;
use muq_data::{Dataset, rng};

use crate::{BnMode, ResNet, ResnetError, Result};

/// Deterministic or stochastic forward passes for [`logits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Passes {
    /// One pass in eval mode (BatchNorm running statistics, no dropout).
    Eval,
    /// `passes` stochastic passes in eval mode with dropout on (MC dropout);
    /// masks come from the `dropout` stream of `seed`.
    McDropout {
        /// How many passes.
        passes: usize,
        /// Run seed.
        seed: u64,
    },
}

/// Logits of one or more passes over a dataset, on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Logits {
    /// One row-major `n × num_classes` block per pass.
    pub passes: Vec<Vec<f32>>,
    /// Number of samples.
    pub n: usize,
    /// Number of classes.
    pub num_classes: usize,
}

/// Logits of `model` on `data[indices]`, in eval mode, in batches of
/// `batch_size`. Logits stay on the device until the whole set is done and
/// come back to the host once per pass.
pub fn logits(
    model: &ResNet,
    data: &Dataset,
    indices: &[usize],
    batch_size: usize,
    passes: Passes,
) -> Result<Logits> {
    if batch_size == 0 {
        return Err(ResnetError::Config {
            field: "batch_size",
            reason: "must be at least 1".into(),
        });
    }
    let device = model.device();
    let k = model.config().num_classes;
    let (count, mut dropout_rng) = match passes {
        Passes::Eval => (1, None),
        Passes::McDropout { passes, seed } => {
            if model.config().dropout <= 0.0 {
                return Err(ResnetError::Config {
                    field: "mc_dropout",
                    reason: "MC dropout needs a model trained with dropout > 0".into(),
                });
            }
            (passes, Some(rng::stream(seed, "mc_dropout")))
        }
    };
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let mut blocks = Vec::with_capacity(indices.len().div_ceil(batch_size.max(1)));
        for batch in data.batches(indices, batch_size, device) {
            let (x, _) = batch?;
            blocks.push(model.infer(&x, BnMode::Eval, dropout_rng.as_mut())?);
        }
        let all = if blocks.is_empty() {
            Vec::new()
        } else {
            Tensor::cat(&blocks, 0)?.flatten_all()?.to_vec1::<f32>()?
        };
        out.push(all);
    }
    Ok(Logits {
        passes: out,
        n: indices.len(),
        num_classes: k,
    })
}
