//! SGD with momentum and weight decay, PyTorch semantics.

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::kernels::{self, Kernels, optim};
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
///
/// With [`Kernels::Muq`] (the default, as for models) a parameter that
/// lives on the CPU in f32 is updated in one fused pass over its memory,
/// in place, its momentum buffer kept in host memory; every other
/// parameter, and every parameter with [`Kernels::Stock`], by candle's
/// tensor ops. The two compute the same bits.
#[derive(Debug)]
pub struct Sgd {
    config: SgdConfig,
    kernels: Kernels,
    momentum_buffers: Vec<Option<Buffer>>,
}

/// A momentum buffer, held where the last update used it.
#[derive(Debug)]
enum Buffer {
    /// A tensor beside the parameter (candle's ops).
    Tensor(Tensor),
    /// Host memory, the parameter's element order (the fused update).
    Host(Vec<f32>),
}

impl Sgd {
    /// An optimiser with empty momentum buffers, on the kernels
    /// [`Kernels::from_env`] names (as a new model is).
    ///
    /// # Panics
    /// As [`Kernels::from_env`], if `MUQ_KERNELS` is neither `stock` nor
    /// `muq`.
    pub fn new(config: SgdConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            kernels: Kernels::from_env(),
            momentum_buffers: Vec::new(),
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// Which update runs: the fused one ([`Kernels::Muq`], CPU f32
    /// parameters) or candle's ops.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Selects the update for every later step (set it to the model's
    /// [`crate::ResNet::kernels`]); momentum buffers carry over.
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
    }

    /// The momentum buffers of `params` (the parameters [`Sgd::step`] is
    /// given, in its order): `None` for each before the first step, and
    /// always with momentum 0. With [`Sgd::set_momentum_buffers`], what a
    /// saved training state needs to continue bit for bit.
    ///
    /// # Errors
    /// A buffer that does not fit its parameter's shape.
    pub fn momentum_buffers(&self, params: &[&Var]) -> Result<Vec<Option<Tensor>>> {
        if self.momentum_buffers.is_empty() {
            return Ok(vec![None; params.len()]);
        }
        params
            .iter()
            .zip(&self.momentum_buffers)
            .map(|(var, buf)| {
                Ok(match buf {
                    None => None,
                    Some(Buffer::Tensor(t)) => Some(t.detach()),
                    Some(Buffer::Host(b)) => {
                        Some(Tensor::from_slice(b, var.shape(), var.device())?)
                    }
                })
            })
            .collect()
    }

    /// Replaces the momentum buffers, one per parameter in [`Sgd::step`]'s
    /// order (from [`Sgd::momentum_buffers`] of an earlier optimiser).
    pub fn set_momentum_buffers(&mut self, buffers: Vec<Option<Tensor>>) {
        self.momentum_buffers = buffers.into_iter().map(|b| b.map(Buffer::Tensor)).collect();
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
            self.momentum_buffers = params.iter().map(|_| None).collect();
        }
        if self.momentum_buffers.len() != params.len() {
            return Err(ResnetError::Config {
                field: "momentum_buffers",
                reason: format!(
                    "{} momentum buffers for {} parameters",
                    self.momentum_buffers.len(),
                    params.len()
                ),
            });
        }
        let SgdConfig {
            lr,
            momentum,
            weight_decay,
        } = self.config;
        for ((var, grad), buf) in params.iter().zip(grads).zip(&mut self.momentum_buffers) {
            if self.kernels.is_muq() && kernels::runs_on(var.as_tensor()) && kernels::runs_on(grad)
            {
                let mut host = match buf.take() {
                    None => None,
                    Some(Buffer::Host(b)) => Some(b),
                    Some(Buffer::Tensor(t)) => Some(t.flatten_all()?.to_vec1::<f32>()?),
                };
                let step = optim::SgdStep::new(lr, momentum, weight_decay);
                optim::sgd_step(var, grad, &mut host, step)?;
                *buf = host.map(Buffer::Host);
                continue;
            }
            let theta = var.as_detached_tensor();
            let mut g = grad.detach();
            if weight_decay != 0.0 {
                g = (g + (&theta * weight_decay)?)?;
            }
            let step = if momentum != 0.0 {
                let b = match buf.take() {
                    None => g,
                    Some(Buffer::Tensor(b)) => ((b * momentum)? + g)?,
                    Some(Buffer::Host(b)) => {
                        let b = Tensor::from_vec(b, theta.shape(), theta.device())?;
                        ((b * momentum)? + g)?
                    }
                };
                *buf = Some(Buffer::Tensor(b.clone()));
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
    use crate::kernels::at_each_level;
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
    /// The three steps below on `kernels`.
    fn pytorch_three_steps(kernels: Kernels) -> Result<()> {
        let dev = Device::Cpu;
        let theta = Var::new(&[1.0f32, -2.0], &dev)?;
        let target = Tensor::new(&[0.5f32, 1.0], &dev)?;
        let mut opt = Sgd::new(SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
        })?;
        opt.set_kernels(kernels);
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
                assert!((a - b).abs() < 1e-5, "{kernels}: {got:?} vs {want:?}");
            }
        }
        Ok(())
    }

    /// Three SGD steps on `f(θ) = Σ (θ_i − t_i)²`, gradient `2(θ − t)`,
    /// lr 0.1, momentum 0.9, weight decay 0.01, θ₀ = (1, −2), t = (0.5, 1),
    /// on candle's ops and fused at every instruction-set level.
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
        pytorch_three_steps(Kernels::Stock)?;
        at_each_level(|_| pytorch_three_steps(Kernels::Muq).unwrap());
        Ok(())
    }

    #[test]
    fn plain_sgd_without_momentum_or_decay() -> Result<()> {
        let run = |kernels| -> Result<()> {
            let dev = Device::Cpu;
            let theta = Var::new(&[3.0f32], &dev)?;
            let mut opt = Sgd::new(SgdConfig {
                lr: 0.5,
                momentum: 0.0,
                weight_decay: 0.0,
            })?;
            opt.set_kernels(kernels);
            opt.step(&[&theta], &[Tensor::new(&[2.0f32], &dev)?])?;
            assert_eq!(theta.as_tensor().to_vec1::<f32>()?, vec![2.0], "{kernels}");
            Ok(())
        };
        run(Kernels::Stock)?;
        at_each_level(|_| run(Kernels::Muq).unwrap());
        Ok(())
    }

    /// Values of unit scale with zeros of both signs, tiny and huge values
    /// and exact ties sprinkled in.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| match i % 97 {
                0 => 0.0,
                1 => -0.0,
                2 => 1e-30,
                3 => -3e30,
                4 => 0.5,
                _ => rng.random_range(-2.0f32..2.0),
            })
            .collect()
    }

    /// The parameters after `steps` updates with random gradients, the
    /// first `switch_at` steps on candle's ops and the rest on `kernels`.
    /// Gradients come as given, as a transposed (non-contiguous) view and
    /// as a narrowed one (an offset into a larger tensor).
    fn run_steps(
        config: SgdConfig,
        shapes: &[&[usize]],
        steps: u64,
        switch_at: u64,
        kernels: Kernels,
    ) -> Vec<Vec<u32>> {
        let dev = Device::Cpu;
        let vars: Vec<Var> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let n = s.iter().product();
                Var::from_vec(values(n, 7 + i as u64), *s, &dev).unwrap()
            })
            .collect();
        let refs: Vec<&Var> = vars.iter().collect();
        let mut opt = Sgd::new(config).unwrap();
        for step in 0..steps {
            opt.set_kernels(if step < switch_at {
                Kernels::Stock
            } else {
                kernels
            });
            let grads: Vec<Tensor> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let n: usize = s.iter().product();
                    let v = values(n + 3, 100 * step + i as u64);
                    match (i % 3, s) {
                        (1, &[a, b]) => Tensor::from_vec(v[..n].to_vec(), (*b, *a), &dev)
                            .unwrap()
                            .t()
                            .unwrap(),
                        (2, _) => Tensor::from_vec(v, n + 3, &dev)
                            .unwrap()
                            .narrow(0, 3, n)
                            .unwrap()
                            .reshape(*s)
                            .unwrap(),
                        _ => Tensor::from_vec(v[..n].to_vec(), *s, &dev).unwrap(),
                    }
                })
                .collect();
            opt.step(&refs, &grads).unwrap();
        }
        vars.iter()
            .map(|v| {
                let t = v
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                t.iter().map(|x| x.to_bits()).collect()
            })
            .collect()
    }

    /// The fused update computes candle's ops' bits, at every level: each
    /// element goes through the same f32 operations in the same order.
    #[test]
    fn fused_update_equals_candle_ops_to_the_bit() {
        // One parameter larger than a parallel chunk (1 << 14 elements).
        let shapes: &[&[usize]] = &[&[40_000], &[37, 21], &[5, 4, 3, 3], &[1]];
        for (momentum, weight_decay) in [(0.9, 5e-4), (0.9, 0.0), (0.0, 5e-4), (0.0, 0.0)] {
            let config = SgdConfig {
                lr: 0.03,
                momentum,
                weight_decay,
            };
            let stock = run_steps(config, shapes, 4, 4, Kernels::Stock);
            at_each_level(|level| {
                // Fused from the start, and fused after two stock steps (the
                // momentum buffer moves from a tensor to host memory).
                for switch_at in [0, 2] {
                    let fused = run_steps(config, shapes, 4, switch_at, Kernels::Muq);
                    assert!(
                        fused == stock,
                        "μ {momentum}, wd {weight_decay}, {level}, fused from step {switch_at}"
                    );
                }
            });
            // And back: fused steps, then candle's ops on the host buffer.
            let mut back = Sgd::new(config).unwrap();
            back.set_kernels(Kernels::Muq);
            let theta = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
            let g = Tensor::new(&[0.25f32, 0.5], &Device::Cpu).unwrap();
            back.step(&[&theta], std::slice::from_ref(&g)).unwrap();
            back.set_kernels(Kernels::Stock);
            back.step(&[&theta], std::slice::from_ref(&g)).unwrap();
            let mut ops = Sgd::new(config).unwrap();
            ops.set_kernels(Kernels::Stock);
            let theta2 = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
            ops.step(&[&theta2], std::slice::from_ref(&g)).unwrap();
            ops.step(&[&theta2], &[g]).unwrap();
            assert_eq!(
                theta.as_tensor().to_vec1::<f32>().unwrap(),
                theta2.as_tensor().to_vec1::<f32>().unwrap()
            );
        }
    }

    #[test]
    fn fused_update_rejects_a_gradient_of_another_shape() {
        let theta = Var::new(&[1.0f32, 2.0, 3.0], &Device::Cpu).unwrap();
        let mut opt = Sgd::new(SgdConfig::default()).unwrap();
        opt.set_kernels(Kernels::Muq);
        let g = Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let err = opt.step(&[&theta], &[g]).unwrap_err();
        assert!(err.to_string().contains("shape"), "{err}");
        assert_eq!(theta.as_tensor().to_vec1::<f32>().unwrap(), [1.0, 2.0, 3.0]);
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
