//! Gradients of the trainable parameters, detached from the graph.

use candle_core::Tensor;
use candle_core::backprop::GradStore;

use crate::{ResNet, Result};

/// One gradient tensor per trainable parameter, in [`ResNet::trainable`]
/// order. Every tensor is detached: holding a `Gradients` never keeps an
/// autograd graph alive.
#[derive(Clone, Debug)]
pub struct Gradients(Vec<Tensor>);

/// A vector in parameter space — one tensor per trainable parameter, in
/// [`ResNet::trainable`] order: the parameters' values
/// ([`ResNet::trainable_values`]), a direction, a tangent, an update. It has
/// the layout and arithmetic of [`Gradients`], whose type it is.
pub type ParamVector = Gradients;

impl Gradients {
    /// Reads the gradients of `model`'s trainable parameters out of a
    /// backward pass; a parameter the loss did not reach gets zeros.
    pub fn from_store(model: &ResNet, store: &GradStore) -> Result<Self> {
        model
            .trainable()
            .map(|p| match store.get(p.var.as_tensor()) {
                Some(g) => Ok(g.detach()),
                None => Ok(p.var.as_detached_tensor().zeros_like()?),
            })
            .collect::<Result<Vec<_>>>()
            .map(Self)
    }

    /// Wraps tensors already in trainable-parameter order.
    pub fn from_tensors(tensors: Vec<Tensor>) -> Self {
        Self(tensors.into_iter().map(|t| t.detach()).collect())
    }

    /// The tensors, in trainable-parameter order.
    pub fn tensors(&self) -> &[Tensor] {
        &self.0
    }

    /// Consumes the wrapper.
    pub fn into_tensors(self) -> Vec<Tensor> {
        self.0
    }

    /// `self + other`, element-wise.
    pub fn add(&self, other: &Gradients) -> Result<Gradients> {
        self.zip_with(other, |a, b| Ok((a + b)?))
    }

    /// `α · self`.
    pub fn scale(&self, alpha: f64) -> Result<Gradients> {
        Ok(Self(
            self.0
                .iter()
                .map(|t| t * alpha)
                .collect::<candle_core::Result<_>>()?,
        ))
    }

    /// Σ over tensors of ⟨self, other⟩, accumulated in f64 on the host.
    pub fn dot(&self, other: &Gradients) -> Result<f64> {
        let mut acc = 0.0f64;
        for (a, b) in self.0.iter().zip(&other.0) {
            acc += (a * b)?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
        Ok(acc)
    }

    /// The Euclidean norm over all tensors.
    pub fn norm(&self) -> Result<f64> {
        Ok(self.dot(self)?.sqrt())
    }

    /// Whether every element is finite.
    pub fn is_finite(&self) -> Result<bool> {
        Ok(self.norm()?.is_finite())
    }

    fn zip_with(
        &self,
        other: &Gradients,
        f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Gradients> {
        Ok(Self(
            self.0
                .iter()
                .zip(&other.0)
                .map(|(a, b)| f(a, b))
                .collect::<Result<_>>()?,
        ))
    }
}

impl ResNet {
    /// `θ ← θ + α·g` for every trainable parameter (buffers untouched).
    pub fn add_scaled(&self, g: &Gradients, alpha: f64) -> Result<()> {
        for (p, g) in self.trainable().zip(g.tensors()) {
            let theta = p.var.as_detached_tensor();
            p.var.set(&(theta + (g * alpha)?)?)?;
        }
        Ok(())
    }

    /// A detached copy of the trainable parameters, as a [`ParamVector`]
    /// (handy for parameter-space arithmetic).
    pub fn trainable_values(&self) -> Result<ParamVector> {
        Ok(Gradients(
            self.trainable()
                .map(|p| Ok(p.var.as_detached_tensor().copy()?))
                .collect::<Result<_>>()?,
        ))
    }
}
