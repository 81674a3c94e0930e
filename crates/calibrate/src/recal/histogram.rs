//! `hist`: histogram binning (Zadrozny & Elkan 2001), as netcal's `HistogramBinning`.

use serde::{Deserialize, Serialize};

use super::{
    BinaryMap, Calibrated, Calibrator, Method, Mode, PerMode, Recalibrator, apply_maps,
    check_apply, check_fit,
};
use crate::error::{CalibError, Result};
use crate::logits::Logits;

/// Histogram binning: `[0, 1]` is cut into `bins` equal-width bins and a
/// probability is replaced by the fraction of positive targets among the
/// calibration samples in its bin (the bin's centre when it is empty).
///
/// As netcal 1.4.0's `HistogramBinning(bins, equal_intervals=True)`: in
/// [`Mode::TopLabel`] fitted on the top-label confidences against
/// correctness (netcal given the 1-D confidences and 0/1 correctness), in
/// [`Mode::OneVsRest`] one histogram per class, rows then normalised
/// (netcal's multi-class default). Where muq differs, only on edge cases:
/// bins are `[b/B, (b+1)/B)` (1.0 in the last) both when fitting and when
/// applying — netcal fits with `[lo, hi)` (scipy's `binned_statistic_dd`)
/// but applies with `(lo, hi]` (`numpy.digitize(right=True)`), which
/// differ for a probability exactly on an inner edge; a row whose
/// one-vs-rest values are all 0 becomes uniform (netcal divides by 0); a
/// class absent from the calibration split gets the fitted all-zero map
/// (netcal leaves its column at 0 and warns).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistogramBinning {
    /// Number of equal-width bins (≥ 1).
    pub bins: usize,
    /// Top-label or one-vs-rest.
    pub mode: Mode,
}

impl Default for HistogramBinning {
    /// 10 bins (netcal's default), top-label.
    fn default() -> Self {
        HistogramBinning {
            bins: 10,
            mode: Mode::TopLabel,
        }
    }
}

/// The calibrated value of each of `values.len()` equal-width bins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramMap {
    /// Bin `b`'s calibrated value.
    pub values: Vec<f64>,
}

impl HistogramMap {
    /// Bin of `x`: the number of inner edges `b/B` (`b = 1..B`) at most `x`.
    fn bin(&self, x: f64) -> usize {
        let bins = self.values.len();
        (1..bins)
            .take_while(|&b| b as f64 / bins as f64 <= x)
            .count()
    }

    fn fit(bins: usize, x: &[f64], y: &[bool]) -> Self {
        let mut map = HistogramMap {
            values: vec![0.0; bins],
        };
        let mut count = vec![0usize; bins];
        let mut hits = vec![0usize; bins];
        for (&xi, &yi) in x.iter().zip(y) {
            let b = map.bin(xi);
            count[b] += 1;
            hits[b] += usize::from(yi);
        }
        for (b, v) in map.values.iter_mut().enumerate() {
            *v = if count[b] > 0 {
                hits[b] as f64 / count[b] as f64
            } else {
                0.5 * (b as f64 / bins as f64 + (b + 1) as f64 / bins as f64)
            };
        }
        map
    }
}

impl BinaryMap for HistogramMap {
    fn map(&self, x: f64) -> f64 {
        self.values[self.bin(x)]
    }
}

/// Fitted histogram binning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedHistogram {
    /// The bin values, for the top label or per class.
    pub maps: PerMode<HistogramMap>,
    num_classes: usize,
}

impl Recalibrator for HistogramBinning {
    type Fitted = FittedHistogram;

    fn fit(&self, logits: &Logits<'_>, labels: &[usize]) -> Result<FittedHistogram> {
        check_fit(logits, labels)?;
        if self.bins == 0 {
            return Err(CalibError::ZeroBins);
        }
        let maps = PerMode::fit(self.mode, logits, labels, |x, y| {
            Ok(HistogramMap::fit(self.bins, x, y))
        })?;
        Ok(FittedHistogram {
            maps,
            num_classes: logits.num_classes(),
        })
    }
}

impl Calibrator for FittedHistogram {
    fn method(&self) -> Method {
        Method::Hist
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn apply(&self, logits: &Logits<'_>) -> Result<Calibrated> {
        check_apply(logits, self.num_classes)?;
        Ok(apply_maps(&self.maps, logits))
    }
}
