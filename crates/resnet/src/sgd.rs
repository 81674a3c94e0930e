//! SGD with momentum and weight decay, PyTorch semantics.

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::{ResnetError, Result};

/// Hyper-parameters of [`Sgd`] (defaults: the spec's lr 0.01, momentum 0.9,
/// weight decay 5e-4).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum μ (0 disables the buffer).
    pub momentum: f64,
    /// L2 weight decay, added to the gradient before momentum.
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 5e-4,
        }
    }
}

impl SgdConfig {
    /// Checks the values, naming the field that is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| {
            Err(ResnetError::Config {
                field,
                reason: reason.to_string(),
            })
        };
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", &format!("must be a positive number, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(
                "momentum",
                &format!("must be in [0, 1), got {}", self.momentum),
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight_decay",
                &format!("must be a non-negative number, got {}", self.weight_decay),
            );
        }
        Ok(())
    }
}

/// `torch.optim.SGD(params, lr, momentum, weight_decay)` with no dampening
/// and no Nesterov:
///
/// ```text
/// g ← ∇θ + wd·θ
/// b ← g                 (first step)
/// b ← μ·b + g           (later steps)
/// θ ← θ − lr·b
/// ```
#[derive(Debug)]
pub struct Sgd {
    config: SgdConfig,
    momentum_buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    /// An optimiser with empty momentum buffers.
    pub fn new(config: SgdConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            momentum_buffers: Vec::new(),
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// One update of `params` with `grads` (same order and shapes every call).
    ///
    /// Everything stored is detached from the autograd graph, so memory stays
    /// flat however many steps are taken.
    pub fn step(&mut self, params: &[&Var], grads: &[Tensor]) -> Result<()> {
        if params.len() != grads.len() {
            return Err(ResnetError::Config {
                field: "grads",
                reason: format!("{} gradients for {} parameters", grads.len(), params.len()),
            });
        }
        if self.momentum_buffers.is_empty() {
            self.momentum_buffers = vec![None; params.len()];
        }
        let SgdConfig {
            lr,
            momentum,
            weight_decay,
        } = self.config;
        for ((var, grad), buf) in params.iter().zip(grads).zip(&mut self.momentum_buffers) {
            let theta = var.as_detached_tensor();
            let mut g = grad.detach();
            if weight_decay != 0.0 {
                g = (g + (&theta * weight_decay)?)?;
            }
            let step = if momentum != 0.0 {
                let b = match buf.take() {
                    None => g,
                    Some(b) => ((b * momentum)? + g)?,
                };
                *buf = Some(b.clone());
                b
            } else {
                g
            };
            var.set(&(theta - (step * lr)?)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Three SGD steps on `f(θ) = Σ (θ_i − t_i)²`, gradient `2(θ − t)`,
    /// lr 0.1, momentum 0.9, weight decay 0.01, θ₀ = (1, −2), t = (0.5, 1).
    ///
    /// Expected values: printed by this script under PyTorch 2.15.0 (CPU),
    /// ```python
    /// th = torch.tensor([1., -2.], requires_grad=True); t = torch.tensor([.5, 1.])
    /// opt = torch.optim.SGD([th], lr=0.1, momentum=0.9, weight_decay=0.01)
    /// for _ in range(3):
    ///     opt.zero_grad(); ((th - t)**2).sum().backward(); opt.step(); print(th)
    /// ```
    /// and identically by hand with the update rule in the type's docs:
    /// step 1: g = 2(1−.5)+.01·1 = 1.01, b = 1.01, θ = 1 − .101 = 0.899;
    ///         g = 2(−3)+.01·(−2) = −6.02, b = −6.02, θ = −2 + .602 = −1.398.
    /// step 2: g = .798 + .00899 = .80699, b = .909 + .80699 = 1.71599, θ = .7274010;
    ///         g = −4.796 − .01398 = −4.80998, b = −5.418 − 4.80998 = −10.22798, θ = −0.375202.
    /// step 3: g = .454802 + .00727401 = .46207601, b = 1.544391 + .46207601 = 2.00646701,
    ///         θ = .5267543; g = −2.750404 − .00375202 = −2.75415602,
    ///         b = −9.205182 − 2.75415602 = −11.95933802, θ = 0.8207318.
    #[test]
    fn matches_pytorch_sgd_for_three_steps() -> Result<()> {
        let dev = Device::Cpu;
        let theta = Var::new(&[1.0f32, -2.0], &dev)?;
        let target = Tensor::new(&[0.5f32, 1.0], &dev)?;
        let mut opt = Sgd::new(SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
        })?;
        let expected = [
            [0.899f32, -1.398],
            [0.727_401, -0.375_202],
            [0.526_754_3, 0.820_731_8],
        ];
        for want in expected {
            let loss = (theta.as_tensor() - &target)?.sqr()?.sum_all()?;
            let grads = loss.backward()?;
            let g = grads.get(theta.as_tensor()).expect("grad").clone();
            opt.step(&[&theta], &[g])?;
            let got = theta.as_tensor().to_vec1::<f32>()?;
            for (a, b) in got.iter().zip(want) {
                assert!((a - b).abs() < 1e-5, "{got:?} vs {want:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn plain_sgd_without_momentum_or_decay() -> Result<()> {
        let dev = Device::Cpu;
        let theta = Var::new(&[3.0f32], &dev)?;
        let mut opt = Sgd::new(SgdConfig {
            lr: 0.5,
            momentum: 0.0,
            weight_decay: 0.0,
        })?;
        opt.step(&[&theta], &[Tensor::new(&[2.0f32], &dev)?])?;
        assert_eq!(theta.as_tensor().to_vec1::<f32>()?, vec![2.0]);
        Ok(())
    }

    #[test]
    fn rejects_bad_hyper_parameters() {
        for (cfg, field) in [
            (
                SgdConfig {
                    lr: 0.0,
                    ..Default::default()
                },
                "lr",
            ),
            (
                SgdConfig {
                    momentum: 1.5,
                    ..Default::default()
                },
                "momentum",
            ),
            (
                SgdConfig {
                    weight_decay: f64::NAN,
                    ..Default::default()
                },
                "weight_decay",
            ),
        ] {
            match Sgd::new(cfg) {
                Err(ResnetError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected a config error on {field}, got {other:?}"),
            }
        }
    }
}
