//! `ts`: temperature scaling (Guo et al. 2017), the exact NLL minimiser.

use serde::{Deserialize, Serialize};

use super::{Calibrated, Calibrator, Method, Recalibrator, check_apply, check_fit};
use crate::error::Result;
use crate::logits::{Logits, softmax_into};
use crate::temperature::{TemperatureConfig, TemperatureFit, fit_temperature_with};

/// Temperature scaling: `softmax(z / T)` with the `T > 0` that minimises the
/// calibration split's mean NLL, found by [`fit_temperature_with`] (exact to
/// the search tolerance, not an iterative optimiser stopped early).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemperatureScaling {
    /// The temperature search's bounds and tolerance.
    pub search: TemperatureConfig,
}

/// A fitted temperature.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FittedTemperature {
    /// The search's result (temperature, NLL before and after, convergence).
    pub fit: TemperatureFit,
    num_classes: usize,
}

impl FittedTemperature {
    /// The fitted temperature.
    pub fn temperature(&self) -> f64 {
        self.fit.temperature
    }
}

impl Recalibrator for TemperatureScaling {
    type Fitted = FittedTemperature;

    fn fit(&self, logits: &Logits<'_>, labels: &[usize]) -> Result<FittedTemperature> {
        check_fit(logits, labels)?;
        Ok(FittedTemperature {
            fit: fit_temperature_with(logits, labels, &self.search)?,
            num_classes: logits.num_classes(),
        })
    }
}

impl Calibrator for FittedTemperature {
    fn method(&self) -> Method {
        Method::Ts
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn apply(&self, logits: &Logits<'_>) -> Result<Calibrated> {
        check_apply(logits, self.num_classes)?;
        let k = self.num_classes;
        let mut probs = vec![0.0; logits.len() * k];
        let mut row = vec![0.0; k];
        for (i, out) in probs.chunks_exact_mut(k).enumerate() {
            logits.row_into(i, &mut row);
            softmax_into(&row, self.fit.temperature, out);
        }
        Ok(Calibrated::from_probs(probs, k))
    }
}
