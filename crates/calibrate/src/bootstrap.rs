//! Percentile bootstrap confidence intervals for any statistic.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{CalibError, Result};

/// Settings for [`bootstrap_ci`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootstrapConfig {
    /// Number of resamples `B` (≥ 1; 1000 or more for a 95 % interval).
    pub resamples: usize,
    /// Two-sided confidence level in `(0, 1)`, e.g. `0.95`.
    pub level: f64,
    /// Seed of the resampling generator (ChaCha8); same seed, same interval.
    pub seed: u64,
}

impl Default for BootstrapConfig {
    /// 1000 resamples, 95 % level, seed 0.
    fn default() -> Self {
        BootstrapConfig {
            resamples: 1000,
            level: 0.95,
            seed: 0,
        }
    }
}

/// A percentile bootstrap confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConfidenceInterval {
    /// The statistic on the full sample (indices `0..n`).
    pub estimate: f64,
    /// Lower percentile, `(1 − level)/2`, of the resampled statistics.
    pub lower: f64,
    /// Upper percentile, `(1 + level)/2`, of the resampled statistics.
    pub upper: f64,
    /// The confidence level.
    pub level: f64,
    /// The number of resamples.
    pub resamples: usize,
}

/// Percentile bootstrap CI of `statistic` over `n` samples.
///
/// `statistic` receives a list of `n` sample indices: first `0..n` (the point
/// estimate), then `config.resamples` lists drawn uniformly with replacement.
/// Percentiles use linear interpolation between order statistics (numpy's
/// default). Typical use with [`Predictions::select`](crate::Predictions::select):
///
/// ```
/// use muq_calibrate::{bootstrap_ci, ece, BootstrapConfig, Logits, Predictions};
/// let z = [2.0f32, 0.0, 0.0, 1.0, 1.5, 0.2, 0.3, 0.1];
/// let p = Predictions::new(&Logits::new(&z, 2)?, &[0, 1, 1, 0])?;
/// let cfg = BootstrapConfig { resamples: 200, ..BootstrapConfig::default() };
/// let ci = bootstrap_ci(p.len(), &cfg, |idx| ece(&p.select(idx).unwrap(), 10).unwrap())?;
/// assert!(ci.lower <= ci.upper);
/// # Ok::<(), muq_calibrate::CalibError>(())
/// ```
///
/// # Errors
/// [`CalibError::Empty`] if `n == 0`, [`CalibError::ZeroResamples`],
/// [`CalibError::InvalidLevel`], and [`CalibError::NonFiniteStatistic`] if
/// the statistic returns NaN or ±∞.
pub fn bootstrap_ci<F>(
    n: usize,
    config: &BootstrapConfig,
    mut statistic: F,
) -> Result<ConfidenceInterval>
where
    F: FnMut(&[usize]) -> f64,
{
    if n == 0 {
        return Err(CalibError::Empty);
    }
    if config.resamples == 0 {
        return Err(CalibError::ZeroResamples);
    }
    if !(config.level > 0.0 && config.level < 1.0) {
        return Err(CalibError::InvalidLevel(config.level));
    }
    let mut idx: Vec<usize> = (0..n).collect();
    let estimate = statistic(&idx);
    if !estimate.is_finite() {
        return Err(CalibError::NonFiniteStatistic {
            resample: usize::MAX,
            value: estimate,
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut values = Vec::with_capacity(config.resamples);
    for resample in 0..config.resamples {
        for slot in idx.iter_mut() {
            *slot = rng.random_range(0..n);
        }
        let value = statistic(&idx);
        if !value.is_finite() {
            return Err(CalibError::NonFiniteStatistic { resample, value });
        }
        values.push(value);
    }
    values.sort_by(f64::total_cmp);
    let alpha = (1.0 - config.level) / 2.0;
    Ok(ConfidenceInterval {
        estimate,
        lower: percentile(&values, alpha),
        upper: percentile(&values, 1.0 - alpha),
        level: config.level,
        resamples: config.resamples,
    })
}

/// Linear-interpolation quantile of sorted, non-empty `v` at `q ∈ [0, 1]`.
fn percentile(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let i = pos.floor() as usize;
    let frac = pos - i as f64;
    match v.get(i + 1) {
        Some(&next) => v[i] + frac * (next - v[i]),
        None => v[i],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy_linear() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 4.0);
        assert_eq!(percentile(&v, 0.5), 2.5);
        assert!((percentile(&v, 0.025) - 1.075).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 0.3), 7.0);
    }

    #[test]
    fn mean_ci_is_seeded_and_covers_the_mean() {
        let data: Vec<f64> = (0..200).map(|i| f64::from(i % 7)).collect();
        let mean = |idx: &[usize]| idx.iter().map(|&i| data[i]).sum::<f64>() / idx.len() as f64;
        let cfg = BootstrapConfig::default();
        let a = bootstrap_ci(data.len(), &cfg, mean).unwrap();
        let b = bootstrap_ci(data.len(), &cfg, mean).unwrap();
        assert_eq!(a, b);
        assert!(a.lower < a.estimate && a.estimate < a.upper, "{a:?}");
        // Standard error of the mean of 200 draws of i mod 7 is about 0.14.
        assert!(a.upper - a.lower > 0.3 && a.upper - a.lower < 0.8, "{a:?}");
        let c = bootstrap_ci(data.len(), &BootstrapConfig { seed: 1, ..cfg }, mean).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn rejects_bad_arguments() {
        let f = |_: &[usize]| 0.0;
        let cfg = BootstrapConfig::default();
        assert_eq!(bootstrap_ci(0, &cfg, f).unwrap_err(), CalibError::Empty);
        let zero = BootstrapConfig {
            resamples: 0,
            ..cfg
        };
        assert_eq!(
            bootstrap_ci(3, &zero, f).unwrap_err(),
            CalibError::ZeroResamples
        );
        let bad = BootstrapConfig { level: 1.0, ..cfg };
        assert_eq!(
            bootstrap_ci(3, &bad, f).unwrap_err(),
            CalibError::InvalidLevel(1.0)
        );
        assert!(matches!(
            bootstrap_ci(3, &cfg, |_| f64::NAN).unwrap_err(),
            CalibError::NonFiniteStatistic { .. }
        ));
    }
}
