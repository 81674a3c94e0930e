//! `sb`: the scaling-binning calibrator of Kumar, Liang & Ma (2019),
//! "Verified uncertainty calibration", as uncertainty-calibration's
//! `PlattBinnerTopCalibrator` / `PlattBinnerMarginalCalibrator`.

use serde::{Deserialize, Serialize};

use super::multinomial::NewtonConfig;
use super::platt::PlattMap;
use super::{
    BinaryMap, Calibrated, Calibrator, Method, Mode, PerMode, Recalibrator, apply_maps,
    check_apply, check_fit, check_setting,
};
use crate::error::{CalibError, Result};
use crate::logits::Logits;

/// Scaling-binning: Platt scaling, then equal-mass binning of the scaled
/// probabilities, each bin's output being the mean *scaled probability* of
/// the calibration samples in it (not their label frequency: that is what
/// makes the calibration error measurable).
///
/// As uncertainty-calibration 0.1.4: the Platt step is [`PlattScaling`](super::PlattScaling)'s
/// (`C = 1e10`, fitted to the optimum where the package's lbfgs stops at
/// `tol=1e-4`); the bins are `get_equal_bins` — the sorted scaled
/// probabilities split into `bins` near-equal parts (`numpy.array_split`),
/// edges halfway between neighbouring parts, then 1.0, duplicates dropped —
/// and a value goes to the first bin whose upper edge is `≥` it
/// (`bisect_left`); an empty bin outputs its edges' midpoint.
///
/// The paper fits the scaling, the bin edges and the bin means on three
/// disjoint parts of the calibration set; the package (and muq) fits all
/// three on the whole set, so nothing here is random. [`Mode::TopLabel`] is
/// `PlattBinnerTopCalibrator`; [`Mode::OneVsRest`] is
/// `PlattBinnerMarginalCalibrator` with each row then normalised (the
/// package leaves rows unnormalised).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScalingBinning {
    /// Number of equal-mass bins (≥ 1; fewer when the set is smaller or
    /// scaled probabilities repeat).
    pub bins: usize,
    /// Top-label (default) or one-vs-rest.
    pub mode: Mode,
    /// The Platt step's `C` (> 0).
    pub c: f64,
    /// The Platt step's Newton settings.
    pub newton: NewtonConfig,
}

impl Default for ScalingBinning {
    /// 10 bins, top-label, `C = 1e10`, default Newton settings.
    fn default() -> Self {
        ScalingBinning {
            bins: 10,
            mode: Mode::TopLabel,
            c: 1e10,
            newton: NewtonConfig::default(),
        }
    }
}

/// A fitted scaling-binning map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingBinningMap {
    /// The scaling step.
    pub platt: PlattMap,
    /// Upper bin edges, increasing, the last 1.0.
    pub edges: Vec<f64>,
    /// Each bin's output.
    pub values: Vec<f64>,
}

impl ScalingBinningMap {
    fn fit(p: &[f64], targets: &[bool], cfg: &ScalingBinning) -> Self {
        let platt = PlattMap::fit(p, targets, cfg.c, &cfg.newton);
        let scaled: Vec<f64> = p.iter().map(|&v| platt.map(v)).collect();
        let edges = equal_mass_edges(&scaled, cfg.bins);
        let mut sum = vec![0.0; edges.len()];
        let mut count = vec![0usize; edges.len()];
        for &s in &scaled {
            let b = bin(&edges, s);
            sum[b] += s;
            count[b] += 1;
        }
        let values = (0..edges.len())
            .map(|b| match (count[b], b) {
                (0, 0) => edges[0] / 2.0,
                (0, _) => (edges[b] + edges[b - 1]) / 2.0,
                (c, _) => sum[b] / c as f64,
            })
            .collect();
        ScalingBinningMap {
            platt,
            edges,
            values,
        }
    }
}

/// `bisect_left(edges, x)`, kept inside the last bin.
fn bin(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|&e| e < x).min(edges.len() - 1)
}

/// uncertainty-calibration's `get_equal_bins`: upper edges of `bins`
/// near-equal-mass bins of `values` (non-empty), the last 1.0.
pub(crate) fn equal_mass_edges(values: &[f64], bins: usize) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let parts = bins.min(n);
    // numpy.array_split: the first n % parts parts one longer.
    let (base, extra) = (n / parts, n % parts);
    let mut edges = Vec::with_capacity(parts);
    let mut end = 0;
    for part in 0..parts - 1 {
        end += base + usize::from(part < extra);
        edges.push((sorted[end - 1] + sorted[end]) / 2.0);
    }
    edges.push(1.0);
    edges.sort_by(f64::total_cmp);
    edges.dedup();
    edges
}

impl BinaryMap for ScalingBinningMap {
    fn map(&self, p: f64) -> f64 {
        self.values[bin(&self.edges, self.platt.map(p))]
    }
}

/// Fitted scaling-binning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedScalingBinning {
    /// The maps, for the top label or per class.
    pub maps: PerMode<ScalingBinningMap>,
    num_classes: usize,
}

impl Recalibrator for ScalingBinning {
    type Fitted = FittedScalingBinning;

    fn fit(&self, logits: &Logits<'_>, labels: &[usize]) -> Result<FittedScalingBinning> {
        check_fit(logits, labels)?;
        if self.bins == 0 {
            return Err(CalibError::ZeroBins);
        }
        check_setting("c", self.c, 0.0, true)?;
        self.newton.check()?;
        let maps = PerMode::fit(self.mode, logits, labels, |p, t| {
            Ok(ScalingBinningMap::fit(p, t, self))
        })?;
        Ok(FittedScalingBinning {
            maps,
            num_classes: logits.num_classes(),
        })
    }
}

impl Calibrator for FittedScalingBinning {
    fn method(&self) -> Method {
        Method::Sb
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn apply(&self, logits: &Logits<'_>) -> Result<Calibrated> {
        check_apply(logits, self.num_classes)?;
        Ok(apply_maps(&self.maps, logits))
    }
}
