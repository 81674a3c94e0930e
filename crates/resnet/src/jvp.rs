//! Forward-mode differentiation of the CIFAR ResNet-18 in eval mode: the
//! logits `z` and their directional derivative `J·v` in one pass.
//!
//! candle has reverse mode only, so this re-states the model's eval-mode
//! forward pass (torchvision's BasicBlock layout, read from the parameter
//! names) on (value, tangent) pairs, with BatchNorm's frozen affine map
//! taken from the model's own definition (one ε):
//!
//! ```text
//! conv:  (x, ẋ) ↦ (x∗W, ẋ∗W + x∗Ẇ)
//! BN:    y = x·s + t, s = γ/√(σ²+ε), t = β − μ·s   ↦ ẏ = ẋ·s + x·ṡ + ṫ
//! ReLU:  ẏ = ẋ·[x > 0]            pool: ẏ = mean ẋ
//! fc:    ż = ḟ·Wᵀ + f·Ẇᵀ + ḃ
//! ```
//!
//! Running statistics are constants (BatchNorm frozen). muq-unlearn checks
//! the values against [`ResNet::forward`] on the first batch it uses, so a
//! change of architecture is caught before any product is used.

use std::collections::HashMap;

use candle_core::Tensor;

use crate::model::{BN_EPS, FrozenBn};
use crate::{ParamVector, ResNet, ResnetError, Result};

/// A value and its tangent.
type Dual = (Tensor, Tensor);

/// A model's parameter values with a tangent for each trainable one
/// (buffers have none): what [`Tangents::forward`] differentiates along.
pub struct Tangents {
    values: HashMap<String, Tensor>,
    tangents: HashMap<String, Tensor>,
}

impl Tangents {
    /// The model's current tensors with `v` (trainable order) as tangents.
    ///
    /// # Errors
    /// [`ResnetError::Config`] (field `direction`) when `v` does not have
    /// one tensor per trainable parameter.
    pub fn new(model: &ResNet, v: &ParamVector) -> Result<Self> {
        let n = model.trainable().count();
        if v.tensors().len() != n {
            return Err(ResnetError::Config {
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
        let rm = get("running_mean")?;
        let frozen = FrozenBn::new(
            get("weight")?,
            get("bias")?,
            rm,
            get("running_var")?,
            BN_EPS,
        )?;
        let dscale = (self.tangent(&format!("{name}.weight"))? * &frozen.inv_std)?;
        let dshift = (self.tangent(&format!("{name}.bias"))? - (rm * &dscale)?)?;
        let (scale, shift) = (frozen.scale.reshape(shape)?, frozen.shift.reshape(shape)?);
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
    ///
    /// # Errors
    /// [`ResnetError::Config`] (field `model`) when a tensor of the CIFAR
    /// ResNet-18 layout is missing; tensor errors.
    pub fn forward(&self, x: &Tensor) -> Result<Dual> {
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

fn missing(name: &str) -> ResnetError {
    ResnetError::Config {
        field: "model",
        reason: format!(
            "tensor `{name}` is missing: the forward-mode pass expects the CIFAR ResNet-18 \
             layout"
        ),
    }
}
