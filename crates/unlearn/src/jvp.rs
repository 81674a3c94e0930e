//! The check that muq-resnet's forward-mode pass ([`muq_resnet::jvp`])
//! computes the logits of the model's own forward pass: done on the first
//! batch of the first Jacobian-vector product, so a change of architecture
//! is caught before any product is used.

use candle_core::{DType, Tensor};
use muq_resnet::{BnMode, ResNet};

use crate::{Result, UnlearnError};

/// Checks that the forward-mode pass's logits `z` reproduce
/// `model.forward` (eval mode) on the same images `x`, to 1e-3 of the
/// largest logit.
pub(crate) fn check(model: &ResNet, x: &Tensor, z: &Tensor) -> Result<()> {
    let want = model.forward(x, BnMode::Eval, None)?;
    let max = |t: &Tensor| -> Result<f64> {
        Ok(t.abs()?
            .max_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?)
    };
    let scale = max(&want)?;
    let err = max(&(z - &want)?)?;
    if err.is_nan() || err > 1e-3 * scale.max(1.0) {
        return Err(UnlearnError::Context {
            field: "model",
            reason: format!(
                "muq-resnet's forward-mode pass (muq_resnet::jvp) disagrees with its forward pass by \
                 {err:e} (largest logit {scale:e}); the architecture changed — update \
                 crates/resnet/src/jvp.rs, or use curvature = \"hessian\""
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use candle_core::Device;
    use muq_data::{Dataset, Normalization, rng, synthetic};
    use muq_resnet::jvp::Tangents;
    use muq_resnet::{Gradients, ResNetConfig};

    use super::*;

    /// The primal half of the forward-mode pass is muq-resnet's eval-mode
    /// forward pass, and [`check`] rejects logits that are not.
    #[test]
    fn values_match_the_model_and_the_check_catches_a_mismatch() -> Result<()> {
        let data = synthetic::generate(4, 0, 1);
        let ds = Dataset::clean(Arc::new(data.train), Normalization::CIFAR10);
        let cfg = ResNetConfig {
            width: 4,
            ..Default::default()
        };
        let model = ResNet::new(&cfg, &mut rng::stream(1, rng::INIT), &Device::Cpu)?;
        let (x, _) = ds.batch(&[0, 1, 2, 3], &Device::Cpu)?;
        let v = model.trainable_values()?;
        let (z, dz) = Tangents::new(&model, &v)?.forward(&x)?;
        assert_eq!(dz.dims(), &[4, 10]);
        check(&model, &x, &z)?;
        let off = (z + 0.1)?;
        match check(&model, &x, &off) {
            Err(UnlearnError::Context { field: "model", .. }) => Ok(()),
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    /// Along `v = θ` restricted to the `fc` layer, the logits are linear:
    /// `J·v = z − (the logits with fc zeroed)`, i.e. `f·Wᵀ + b`.
    #[test]
    fn the_fc_tangent_is_exact() -> Result<()> {
        let data = synthetic::generate(2, 0, 2);
        let ds = Dataset::clean(Arc::new(data.train), Normalization::CIFAR10);
        let cfg = ResNetConfig {
            width: 4,
            ..Default::default()
        };
        let model = ResNet::new(&cfg, &mut rng::stream(2, rng::INIT), &Device::Cpu)?;
        let (x, _) = ds.batch(&[0, 1], &Device::Cpu)?;
        let theta = model.trainable_values()?;
        let n = theta.tensors().len();
        let v = Gradients::from_tensors(
            theta
                .tensors()
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    if i + 2 >= n {
                        Ok(t.clone())
                    } else {
                        t.zeros_like()
                    }
                })
                .collect::<candle_core::Result<Vec<_>>>()?,
        );
        let (z, dz) = Tangents::new(&model, &v)?.forward(&x)?;
        let diff = (z - dz)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{diff}");
        Ok(())
    }
}
