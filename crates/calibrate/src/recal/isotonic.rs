//! `iso`: isotonic regression (Zadrozny & Elkan 2002), as scikit-learn's
//! `IsotonicRegression(out_of_bounds='clip')`.

use serde::{Deserialize, Serialize};

use super::{
    BinaryMap, Calibrated, Calibrator, Method, Mode, PerMode, Recalibrator, apply_maps,
    check_apply, check_fit,
};
use crate::error::Result;
use crate::logits::Logits;

/// Isotonic regression: the non-decreasing step-then-linear map of the
/// probability that best fits the 0/1 targets in squared error, found by the
/// pool-adjacent-violators algorithm.
///
/// As scikit-learn 1.9.1's `IsotonicRegression(out_of_bounds='clip')`
/// (`increasing=True`, no `y_min`/`y_max`): samples are sorted by
/// probability, probabilities within `1e-15` of the first of a run
/// (`numpy.finfo(float64).resolution`) are merged into one point whose
/// target is the run's mean, the pooled fit is interpolated linearly between
/// those points (as `scipy.interpolate.interp1d`), and inputs outside the
/// fitted range are clipped to it. [`Mode::TopLabel`] fits the top-label
/// confidence against correctness; [`Mode::OneVsRest`] fits each class and
/// normalises each row as `CalibratedClassifierCV(method='isotonic')` does
/// (dividing by the sum; uniform where the sum is 0).
///
/// Hand-written (about 60 lines): the Rust isotonic crates either carry an
/// LGPL licence (`pav_regression`) or bring a linear-algebra stack
/// (`linfa-linear`), and neither merges near-equal inputs and interpolates
/// as scikit-learn does, which is what makes the outputs match.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IsotonicCalibration {
    /// Top-label (default) or one-vs-rest.
    pub mode: Mode,
}

/// A fitted isotonic map: the interpolation points, increasing in `x`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsotonicMap {
    /// The distinct fitted inputs (scikit-learn's `X_thresholds_`).
    pub x: Vec<f64>,
    /// The fitted values at `x` (`y_thresholds_`), non-decreasing.
    pub y: Vec<f64>,
}

impl IsotonicMap {
    /// Fits the map to `(x, targets)`; `x` must be non-empty.
    pub fn fit(x: &[f64], targets: &[bool]) -> Self {
        // numpy.lexsort((y, X)): by x, then by target.
        let mut order: Vec<usize> = (0..x.len()).collect();
        order.sort_by(|&a, &b| x[a].total_cmp(&x[b]).then(targets[a].cmp(&targets[b])));
        // _make_unique: merge inputs within `resolution` of a run's first.
        const RESOLUTION: f64 = 1e-15;
        let (mut ux, mut uy, mut uw) = (Vec::new(), Vec::new(), Vec::new());
        let mut current_x = x[order[0]];
        let (mut sum_y, mut weight) = (0.0, 0.0);
        for &i in &order {
            let yi = if targets[i] { 1.0 } else { 0.0 };
            if x[i] - current_x >= RESOLUTION {
                ux.push(current_x);
                uy.push(sum_y / weight);
                uw.push(weight);
                current_x = x[i];
                sum_y = yi;
                weight = 1.0;
            } else {
                sum_y += yi;
                weight += 1.0;
            }
        }
        ux.push(current_x);
        uy.push(sum_y / weight);
        uw.push(weight);
        let y = pool_adjacent_violators(&uy, &uw);
        // Drop interior points whose value equals both neighbours' (the
        // interpolant is unchanged; scikit-learn does the same).
        let keep: Vec<bool> = (0..y.len())
            .map(|i| i == 0 || i + 1 == y.len() || y[i] != y[i - 1] || y[i] != y[i + 1])
            .collect();
        let pick = |v: &[f64]| {
            v.iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(v, _)| *v)
                .collect()
        };
        IsotonicMap {
            x: pick(&ux),
            y: pick(&y),
        }
    }
}

/// Weighted least-squares non-decreasing fit of `y` (PAVA with a block stack).
fn pool_adjacent_violators(y: &[f64], w: &[f64]) -> Vec<f64> {
    // Blocks: (weighted mean, total weight, number of points).
    let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(y.len());
    for (&yi, &wi) in y.iter().zip(w) {
        let (mut mean, mut weight, mut len) = (yi, wi, 1);
        while let Some(&(prev_mean, prev_weight, prev_len)) = blocks.last() {
            if prev_mean < mean {
                break;
            }
            blocks.pop();
            let total = prev_weight + weight;
            mean = (prev_mean * prev_weight + mean * weight) / total;
            weight = total;
            len += prev_len;
        }
        blocks.push((mean, weight, len));
    }
    blocks
        .into_iter()
        .flat_map(|(mean, _, len)| std::iter::repeat_n(mean, len))
        .collect()
}

impl BinaryMap for IsotonicMap {
    /// `interp1d(x, y, kind='linear')` at `x` clipped to `[x_min, x_max]`.
    fn map(&self, x: f64) -> f64 {
        let n = self.x.len();
        if n == 1 {
            return self.y[0];
        }
        let t = x.clamp(self.x[0], self.x[n - 1]);
        let hi = self.x.partition_point(|&v| v < t).clamp(1, n - 1);
        let lo = hi - 1;
        let slope = (self.y[hi] - self.y[lo]) / (self.x[hi] - self.x[lo]);
        slope * (t - self.x[lo]) + self.y[lo]
    }
}

/// Fitted isotonic regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedIsotonic {
    /// The maps, for the top label or per class.
    pub maps: PerMode<IsotonicMap>,
    num_classes: usize,
}

impl Recalibrator for IsotonicCalibration {
    type Fitted = FittedIsotonic;

    fn fit(&self, logits: &Logits<'_>, labels: &[usize]) -> Result<FittedIsotonic> {
        check_fit(logits, labels)?;
        let maps = PerMode::fit(self.mode, logits, labels, |x, y| Ok(IsotonicMap::fit(x, y)))?;
        Ok(FittedIsotonic {
            maps,
            num_classes: logits.num_classes(),
        })
    }
}

impl Calibrator for FittedIsotonic {
    fn method(&self) -> Method {
        Method::Iso
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn apply(&self, logits: &Logits<'_>) -> Result<Calibrated> {
        check_apply(logits, self.num_classes)?;
        Ok(apply_maps(&self.maps, logits))
    }
}
