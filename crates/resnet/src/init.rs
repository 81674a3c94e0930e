//! Host-seeded parameter initialisation with torchvision's schemes.
//!
//! candle's CPU `randn` ignores `Device::set_seed`, so every initial value is
//! drawn here on the host from a [`ChaCha8Rng`] and then moved to the device
//! once. The same seed therefore gives the same weights on every device.

use candle_core::{Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::Result;

/// How a weight tensor is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// `torch.nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")`:
    /// `N(0, 2 / fan_out)` with `fan_out = out_channels · kh · kw`.
    KaimingNormalFanOut,
    /// PyTorch's default for `Conv2d`/`Linear` weights,
    /// `kaiming_uniform_(w, a=√5)`: `U(±1/√fan_in)` with
    /// `fan_in = in_channels · kh · kw`.
    DefaultUniform,
    /// PyTorch's default bias of `Conv2d`/`Linear`: `U(±1/√fan_in)` where
    /// `fan_in` is the fan-in of the layer's weight (passed explicitly).
    BiasUniform {
        /// Fan-in of the layer the bias belongs to.
        fan_in: usize,
    },
    /// Every element equal to the value (BatchNorm weight 1, bias 0, running
    /// statistics).
    Constant(f32),
}

/// `(fan_in, fan_out)` of a weight of shape `[out, in, k...]` as PyTorch's
/// `_calculate_fan_in_and_fan_out` computes it.
pub fn fans(shape: &[usize]) -> (usize, usize) {
    let receptive: usize = shape.iter().skip(2).product();
    let fan_out = shape.first().copied().unwrap_or(1) * receptive;
    let fan_in = shape.get(1).copied().unwrap_or(1) * receptive;
    (fan_in, fan_out)
}

impl Init {
    /// Draws the host values for a tensor of `shape` from `rng`.
    pub fn values(self, shape: &[usize], rng: &mut ChaCha8Rng) -> Vec<f32> {
        let n: usize = shape.iter().product();
        let (fan_in, fan_out) = fans(shape);
        match self {
            Init::KaimingNormalFanOut => {
                let std = (2.0 / fan_out as f64).sqrt();
                (0..n)
                    .map(|_| {
                        let z: f64 = StandardNormal.sample(rng);
                        (z * std) as f32
                    })
                    .collect()
            }
            Init::DefaultUniform => uniform(n, 1.0 / (fan_in as f64).sqrt(), rng),
            Init::BiasUniform { fan_in } => uniform(n, 1.0 / (fan_in as f64).sqrt(), rng),
            Init::Constant(c) => vec![c; n],
        }
    }

    /// Draws a tensor of `shape` on `device`.
    pub fn tensor(self, shape: &[usize], rng: &mut ChaCha8Rng, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(self.values(shape, rng), shape, device)?)
    }
}

fn uniform(n: usize, bound: f64, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(-bound..bound) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn moments(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn fans_match_pytorch() {
        // torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(64, 32, 3, 3)) == (288, 576)
        assert_eq!(fans(&[64, 32, 3, 3]), (288, 576));
        // Linear(512, 10).weight: (512, 10)
        assert_eq!(fans(&[10, 512]), (512, 10));
    }

    #[test]
    fn kaiming_normal_fan_out_has_the_formula_std() {
        // A full-size layer4 conv: 512×512×3×3 = 2,359,296 values.
        // Formula: std = sqrt(2 / fan_out) = sqrt(2 / (512·9)) = 0.020833…
        let shape = [512, 512, 3, 3];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let v = Init::KaimingNormalFanOut.values(&shape, &mut rng);
        let (mean, std) = moments(&v);
        let expected = (2.0f64 / (512.0 * 9.0)).sqrt();
        // The sample std of 2.4M normals is within ~0.05% of the truth (1/sqrt(2n)).
        assert!(
            (std / expected - 1.0).abs() < 2e-3,
            "std {std} vs {expected}"
        );
        assert!(mean.abs() < 5.0 * expected / (v.len() as f64).sqrt());
    }

    #[test]
    fn default_uniform_has_bound_one_over_sqrt_fan_in() {
        // kaiming_uniform(a=√5): gain = sqrt(2/(1+5)), bound = gain·sqrt(3/fan_in) = 1/sqrt(fan_in).
        let shape = [64, 3, 3, 3];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let v = Init::DefaultUniform.values(&shape, &mut rng);
        let bound = 1.0 / 27f64.sqrt();
        assert!(v.iter().all(|&x| (x as f64).abs() <= bound));
        let (_, std) = moments(&v);
        // U(±b) has std b/sqrt(3); 1,728 samples → ±5% is several sigmas.
        assert!((std / (bound / 3f64.sqrt()) - 1.0).abs() < 0.05);
    }

    #[test]
    fn same_seed_same_values() {
        let a = Init::KaimingNormalFanOut.values(&[8, 4, 3, 3], &mut ChaCha8Rng::seed_from_u64(3));
        let b = Init::KaimingNormalFanOut.values(&[8, 4, 3, 3], &mut ChaCha8Rng::seed_from_u64(3));
        let c = Init::KaimingNormalFanOut.values(&[8, 4, 3, 3], &mut ChaCha8Rng::seed_from_u64(4));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
