//! Forward-mode differentiation of the CIFAR ResNet-18 in eval mode: the
//! logits `z` and their directional derivative `J·v` in one pass.
//!
//! candle has reverse mode only, so this re-states muq-resnet's eval-mode
//! forward pass (torchvision's BasicBlock layout, read from the parameter
//! names) on (value, tangent) pairs:
//!
//! ```text
//! conv:  (x, ẋ) ↦ (x∗W, ẋ∗W + x∗Ẇ)
//! BN:    y = x·s + t, s = γ/√(σ²+ε), t = β − μ·s   ↦ ẏ = ẋ·s + x·ṡ + ṫ
//! ReLU:  ẏ = ẋ·[x > 0]            pool: ẏ = mean ẋ
//! fc:    ż = ḟ·Wᵀ + f·Ẇᵀ + ḃ
//! ```
//!
//! Running statistics are constants (BatchNorm frozen). [`check`] compares
//! the values with muq-resnet's own forward pass (done on the first batch of
//! the first product), so a change of architecture there is caught before
//! any product is used.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use muq_resnet::{BnMode, Gradients, ResNet};

use crate::{Result, UnlearnError};

/// BatchNorm's ε (PyTorch's default, as in muq-resnet).
const BN_EPS: f64 = 1e-5;

/// A value and its tangent.
type Dual = (Tensor, Tensor);

/// Named parameter values and tangents (buffers have no tangent).
pub(crate) struct Tangents {
    values: HashMap<String, Tensor>,
    tangents: HashMap<String, Tensor>,
}

impl Tangents {
    /// The model's current tensors with `v` (trainable order) as tangents.
    pub(crate) fn new(model: &ResNet, v: &Gradients) -> Result<Self> {
        let n = model.trainable().count();
        if v.tensors().len() != n {
            return Err(UnlearnError::Context {
                field: "direction",
                reason: format!(
                    "{} tensors for a model with {n} trainable tensors",
                    v.tensors().len()
                ),
            });
        }
        let values = model
            .params()
            .iter()
            .map(|p| (p.name.clone(), p.var.as_detached_tensor()))
            .collect();
        let tangents = model
            .trainable()
            .zip(v.tensors())
            .map(|(p, t)| (p.name.clone(), t.detach()))
            .collect();
        Ok(Self { values, tangents })
    }

    fn value(&self, name: &str) -> Result<&Tensor> {
        self.values.get(name).ok_or_else(|| missing(name))
    }

    fn tangent(&self, name: &str) -> Result<&Tensor> {
        self.tangents.get(name).ok_or_else(|| missing(name))
    }

    fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    fn conv(&self, x: &Dual, name: &str, stride: usize) -> Result<Dual> {
        let w = self.value(&format!("{name}.weight"))?;
        let dw = self.tangent(&format!("{name}.weight"))?;
        let pad = w.dim(3)? / 2;
        let y = x.0.conv2d(w, pad, stride, 1, 1)?;
        let dy = (x.1.conv2d(w, pad, stride, 1, 1)? + x.0.conv2d(dw, pad, stride, 1, 1)?)?;
        Ok((y, dy))
    }

    fn bn(&self, x: &Dual, name: &str) -> Result<Dual> {
        let get = |what: &str| self.value(&format!("{name}.{what}"));
        let c = x.0.dim(1)?;
        let shape = (1, c, 1, 1);
        let inv_std = (get("running_var")? + BN_EPS)?.sqrt()?.recip()?;
        let rm = get("running_mean")?;
        let scale = (get("weight")? * &inv_std)?;
        let shift = (get("bias")? - (rm * &scale)?)?;
        let dscale = (self.tangent(&format!("{name}.weight"))? * &inv_std)?;
        let dshift = (self.tangent(&format!("{name}.bias"))? - (rm * &dscale)?)?;
        let (scale, shift) = (scale.reshape(shape)?, shift.reshape(shape)?);
        let (dscale, dshift) = (dscale.reshape(shape)?, dshift.reshape(shape)?);
        let y = x.0.broadcast_mul(&scale)?.broadcast_add(&shift)?;
        let dy =
            x.1.broadcast_mul(&scale)?
                .broadcast_add(&x.0.broadcast_mul(&dscale)?)?
                .broadcast_add(&dshift)?;
        Ok((y, dy))
    }

    fn block(&self, x: &Dual, name: &str, stride: usize) -> Result<Dual> {
        let out = relu(&self.bn(
            &self.conv(x, &format!("{name}.conv1"), stride)?,
            &format!("{name}.bn1"),
        )?)?;
        let out = self.bn(
            &self.conv(&out, &format!("{name}.conv2"), 1)?,
            &format!("{name}.bn2"),
        )?;
        let identity = if self.has(&format!("{name}.downsample.0.weight")) {
            let d = self.conv(x, &format!("{name}.downsample.0"), stride)?;
            self.bn(&d, &format!("{name}.downsample.1"))?
        } else {
            x.clone()
        };
        relu(&((&out.0 + &identity.0)?, (&out.1 + &identity.1)?))
    }

    /// Logits and their tangent for images `x` (eval mode, no dropout).
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Dual> {
        let x = (x.clone(), x.zeros_like()?);
        let mut h = relu(&self.bn(&self.conv(&x, "conv1", 1)?, "bn1")?)?;
        for layer in 1..=4 {
            for block in 0..2 {
                let stride = if layer > 1 && block == 0 { 2 } else { 1 };
                h = self.block(&h, &format!("layer{layer}.{block}"), stride)?;
            }
        }
        let f = h.0.mean((2, 3))?;
        let df = h.1.mean((2, 3))?;
        let w = self.value("fc.weight")?;
        let z = f.matmul(&w.t()?)?.broadcast_add(self.value("fc.bias")?)?;
        let dz = (df.matmul(&w.t()?)? + f.matmul(&self.tangent("fc.weight")?.t()?)?)?
            .broadcast_add(self.tangent("fc.bias")?)?;
        Ok((z, dz))
    }
}

fn relu(x: &Dual) -> Result<Dual> {
    let mask = x.0.gt(0.0)?.to_dtype(x.1.dtype())?;
    Ok((x.0.relu()?, (&x.1 * mask)?))
}

fn missing(name: &str) -> UnlearnError {
    UnlearnError::Context {
        field: "model",
        reason: format!(
            "tensor `{name}` is missing: muq-unlearn's forward-mode pass expects muq-resnet's \
             CIFAR ResNet-18 layout"
        ),
    }
}

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
                "muq-unlearn's forward-mode pass disagrees with muq-resnet's forward pass by \
                 {err:e} (largest logit {scale:e}); the architecture changed — update \
                 crates/unlearn/src/jvp.rs, or use curvature = \"hessian\""
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
    use muq_resnet::ResNetConfig;

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
