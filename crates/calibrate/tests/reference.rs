//! Every recalibrator and metric against the library that defines it, on
//! `fixtures/recalibration.json`.
//!
//! The fixture holds two cases of seeded synthetic logits (numpy
//! `default_rng`, rounded to six decimals so Python and serde_json parse the
//! same `f64`): `k4` (4 classes, 200 fit + 150 apply rows, seed 20261202)
//! and `k10` (10 classes, 300 + 200, seed 20261203). Each recalibrator is
//! fitted on the fit half and applied to the apply half; the metrics are
//! computed on the apply half. Expected numbers are stored to 14 significant
//! digits.
//!
//! Made by `scripts/reference/recalibration.py` (rerun it from the
//! repository root to regenerate the file) in a fresh venv with Python
//! 3.11.7 and
//!
//! ```text
//! numpy==2.4.6 scipy==1.17.1 scikit-learn==1.9.1 netcal==1.4.0 relplot==1.0.3
//! uncertainty-calibration==0.1.4 dirichletcal==0.5.3 jax==0.10.2 jaxlib==0.10.2
//! ```
//!
//! (`pip install numpy scikit-learn netcal relplot uncertainty-calibration
//! jax jaxlib`, then `pip install --ignore-requires-python --no-deps
//! dirichletcal==0.5.3`: it declares Python ≥ 3.12 but runs on 3.11). The
//! library call behind each expected number is quoted beside its test.
//!
//! Tolerances, and why:
//! - exact algorithms (temperature at the exact optimum, histogram binning,
//!   isotonic regression, every metric): `1e-10` absolute or tighter — the
//!   only differences are floating-point summation order;
//! - Newton-fitted maps (vector and matrix scaling, Dirichlet calibration):
//!   the fitted objective and NLL within `1e-9` (muq's objective never
//!   above the reference's by more than `1e-12`), weights and probabilities
//!   within `1e-7` (measured: at most 2.5e-9).
//!   dirichletcal stops its Newton iterations at a summed absolute gradient
//!   of `1e-8` or when the loss stalls (the fixture records the gradient it
//!   stopped at: at most 5e-9); muq goes on to `1e-10` (max-abs). A gradient
//!   of `g` leaves the parameters `O(g / λ_min)` from the optimum and the
//!   objective `O(g² / λ_min)` above it;
//! - Platt and scaling-binning: `1e-8` against the package's code with its
//!   logistic regression converged (`tol=1e-12`; measured at most 2.7e-9,
//!   lbfgs's own residual), `1e-4` against the package as shipped, whose
//!   lbfgs stops at scikit-learn's default `tol=1e-4` (measured at most
//!   2.0e-5 on the top-label confidences).

use muq_calibrate::{
    BrierBinning, Calibrated, Calibrator, CeBinning, CeMode, DirichletCalibration,
    HistogramBinning, IsotonicCalibration, L2CeConfig, Logits, MatrixScaling, Mode, Norm,
    PlattScaling, Predictions, Recalibrator, ScalingBinning, TemperatureScaling, VectorScaling,
    brier_decomposition, calibration_error, l2_calibration_error, l2_calibration_error_scores,
    smooth_ece, smooth_ece_scores,
};
use serde_json::Value;

struct Case {
    name: String,
    k: usize,
    fit_logits: Vec<f64>,
    fit_labels: Vec<usize>,
    apply_logits: Vec<f64>,
    apply_labels: Vec<usize>,
    expected: Value,
}

impl Case {
    fn fit_view(&self) -> Logits<'_> {
        Logits::new(&self.fit_logits, self.k).unwrap()
    }

    fn apply_view(&self) -> Logits<'_> {
        Logits::new(&self.apply_logits, self.k).unwrap()
    }

    fn exp(&self, path: &str) -> &Value {
        let mut v = &self.expected;
        for key in path.split('.') {
            v = &v[key];
        }
        assert!(!v.is_null(), "{}: fixture has no {path}", self.name);
        v
    }

    fn num(&self, path: &str) -> f64 {
        self.exp(path).as_f64().unwrap()
    }

    /// A matrix (rows of numbers) or a vector, flattened.
    fn flat(&self, path: &str) -> Vec<f64> {
        flatten(self.exp(path))
    }

    /// Fits `r` on the fit half and applies it to the apply half.
    fn run<R: Recalibrator>(&self, r: &R) -> (R::Fitted, Calibrated) {
        let fitted = r.fit(&self.fit_view(), &self.fit_labels).unwrap();
        let out = fitted.apply(&self.apply_view()).unwrap();
        assert_eq!(out.len(), self.apply_labels.len());
        assert_eq!(out.num_classes(), self.k);
        (fitted, out)
    }

    /// Softmax of the apply half.
    fn apply_softmax(&self) -> Predictions {
        Predictions::new(&self.apply_view(), &self.apply_labels).unwrap()
    }
}

fn flatten(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(flatten).collect(),
        other => vec![other.as_f64().unwrap()],
    }
}

fn matrix(v: &Value) -> Vec<f64> {
    flatten(v)
}

fn labels(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn cases() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/recalibration.json"
    );
    let text = std::fs::read_to_string(path).expect("read fixtures/recalibration.json");
    let root: Value = serde_json::from_str(&text).expect("parse fixture");
    root["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_owned(),
            k: c["num_classes"].as_u64().unwrap() as usize,
            fit_logits: matrix(&c["fit"]["logits"]),
            fit_labels: labels(&c["fit"]["labels"]),
            apply_logits: matrix(&c["apply"]["logits"]),
            apply_labels: labels(&c["apply"]["labels"]),
            expected: c["expected"].clone(),
        })
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn assert_all_close(case: &Case, what: &str, got: &[f64], want: &[f64], tol: f64) {
    let d = max_diff(got, want);
    println!(
        "{}: {what}: max |diff| = {d:.3e} (tolerance {tol:.0e})",
        case.name
    );
    assert!(
        d <= tol,
        "{}: {what}: max |diff| {d:e} > {tol:e}",
        case.name
    );
}

fn assert_close(case: &Case, what: &str, got: f64, want: f64, tol: f64) {
    assert_all_close(case, what, &[got], &[want], tol);
}

/// The top-label confidences of a calibrated set, checking that it kept the
/// uncalibrated prediction.
fn top_label_confidences(case: &Case, out: &Calibrated) -> Vec<f64> {
    let plain = case.apply_softmax();
    assert_eq!(
        out.predicted(),
        plain.predicted(),
        "{}: prediction changed",
        case.name
    );
    out.confidences()
}

const EXACT: f64 = 1e-10;
const NEWTON_PROBS: f64 = 1e-7;
const NEWTON_OBJECTIVE: f64 = 1e-9;
const PLATT_CONVERGED: f64 = 1e-8;
const PLATT_SHIPPED: f64 = 1e-4;

/// `ts`. Expected: the root of dNLL/dβ by `scipy.optimize.brentq` (xtol
/// 1e-15) — `exact_temperature` in the script — and dirichletcal's
/// `TemperatureScaling(logit_input=True).fit(z, y)` (`1 / weights_[0, 0]`).
#[test]
fn temperature_scaling() {
    for case in cases() {
        let (fitted, out) = case.run(&TemperatureScaling::default());
        let t = fitted.temperature();
        let want = case.num("ts.temperature_exact");
        assert_close(&case, "T / T_exact − 1", t / want - 1.0, 0.0, 1e-9);
        let dc = case.num("ts.temperature_dirichletcal");
        assert_close(&case, "T / T_dirichletcal − 1", t / dc - 1.0, 0.0, 1e-9);
        assert_all_close(&case, "probs", out.probs(), &case.flat("ts.probs"), EXACT);
    }
}

/// `vs`. Expected: dirichletcal `VectorScaling(logit_input=True).fit(z_fit,
/// y_fit).predict_proba(z_apply)` and its mean NLL on the fit half.
#[test]
fn vector_scaling() {
    for case in cases() {
        let (fitted, out) = case.run(&VectorScaling::default());
        assert!(fitted.fit.converged, "{}: {:?}", case.name, fitted.fit);
        let want = case.num("vs.nll_fit");
        assert_close(&case, "fit NLL", fitted.fit.nll, want, NEWTON_OBJECTIVE);
        assert!(fitted.fit.nll <= want + 1e-12);
        assert_all_close(
            &case,
            "probs",
            out.probs(),
            &case.flat("vs.probs"),
            NEWTON_PROBS,
        );
    }
}

/// `ms` and `dirichlet`, λ = μ = 0.1. Expected: dirichletcal
/// `MultinomialRegression(method='Full', reg_lambda=0.1, reg_mu=0.1,
/// reg_norm=True, ref_row=False)` fitted on the logits (`ms`) or on
/// `log(clip_for_log(softmax(z)))` (`dirichlet`, identical to
/// `FullDirichletCalibrator(reg_lambda=0.1, reg_mu=0.1, reg_norm=True,
/// ref_row=False)`, which the script asserts); `objective` is its
/// `_objective` at the fitted weights, `nll_fit` the mean NLL there.
#[test]
fn matrix_scaling_and_dirichlet() {
    let ms = MatrixScaling {
        lambda: 0.1,
        mu: 0.1,
        ..MatrixScaling::default()
    };
    let dir = DirichletCalibration {
        lambda: 0.1,
        mu: 0.1,
        ..DirichletCalibration::default()
    };
    for case in cases() {
        for (key, (fitted, out)) in [("ms", case.run(&ms)), ("dirichlet", case.run(&dir))] {
            assert!(
                fitted.fit.converged,
                "{} {key}: {:?}",
                case.name, fitted.fit
            );
            let want = case.num(&format!("{key}.objective"));
            assert_close(
                &case,
                &format!("{key} objective"),
                fitted.fit.objective,
                want,
                NEWTON_OBJECTIVE,
            );
            assert!(fitted.fit.objective <= want + 1e-12, "{} {key}", case.name);
            let nll = case.num(&format!("{key}.nll_fit"));
            assert_close(
                &case,
                &format!("{key} fit NLL"),
                fitted.fit.nll,
                nll,
                NEWTON_OBJECTIVE,
            );
            assert_all_close(
                &case,
                &format!("{key} weights"),
                &fitted.weights,
                &case.flat(&format!("{key}.weights")),
                NEWTON_PROBS,
            );
            assert_all_close(
                &case,
                &format!("{key} probs"),
                out.probs(),
                &case.flat(&format!("{key}.probs")),
                NEWTON_PROBS,
            );
        }
    }
}

/// `hist`, 10 bins. Expected: netcal `HistogramBinning(bins=10)` fitted on
/// (top-label confidence, correct) and `.transform(confidences)` (top), or
/// fitted on the softmax matrix and labels (`ovr`, netcal's one-vs-all with
/// normalisation).
#[test]
fn histogram_binning() {
    for case in cases() {
        let (_, out) = case.run(&HistogramBinning::default());
        let conf = top_label_confidences(&case, &out);
        assert_all_close(&case, "hist top", &conf, &case.flat("hist.top"), EXACT);
        let ovr = HistogramBinning {
            mode: Mode::OneVsRest,
            ..HistogramBinning::default()
        };
        let (_, out) = case.run(&ovr);
        assert_all_close(
            &case,
            "hist ovr",
            out.probs(),
            &case.flat("hist.ovr"),
            EXACT,
        );
    }
}

/// `iso`. Expected: scikit-learn `IsotonicRegression(out_of_bounds='clip')`
/// fitted on (top-label confidence, correct) and `.predict(confidences)`;
/// one-vs-rest: one per class on (p_c, [y = c]), rows divided by their sums
/// (uniform where 0) as `CalibratedClassifierCV` does.
#[test]
fn isotonic_regression() {
    for case in cases() {
        let (_, out) = case.run(&IsotonicCalibration::default());
        let conf = top_label_confidences(&case, &out);
        assert_all_close(&case, "iso top", &conf, &case.flat("iso.top"), EXACT);
        let (_, out) = case.run(&IsotonicCalibration {
            mode: Mode::OneVsRest,
        });
        assert_all_close(&case, "iso ovr", out.probs(), &case.flat("iso.ovr"), EXACT);
    }
}

/// `platt`. Expected: uncertainty-calibration `PlattTopCalibrator(n,
/// 10).train_calibration(p_fit, y_fit)` then `.calibrate(p_apply)` (top), and
/// `get_platt_scaler(p_fit[:, c], y_fit == c)` per class, rows normalised
/// (ovr) — with `utils.LogisticRegression` replaced by
/// `functools.partial(LogisticRegression, tol=1e-12, max_iter=100000)`
/// (converged), and as shipped (`top_sklearn_default_tol`).
#[test]
fn platt_scaling() {
    for case in cases() {
        let (fitted, out) = case.run(&PlattScaling::default());
        let conf = top_label_confidences(&case, &out);
        assert_all_close(
            &case,
            "platt top (converged)",
            &conf,
            &case.flat("platt.top"),
            PLATT_CONVERGED,
        );
        assert_all_close(
            &case,
            "platt top (sklearn tol=1e-4)",
            &conf,
            &case.flat("platt.top_sklearn_default_tol"),
            PLATT_SHIPPED,
        );
        let muq_calibrate::PerMode::TopLabel(muq_calibrate::PlattMap::Logistic {
            slope,
            intercept,
            ..
        }) = fitted.maps
        else {
            panic!("{}: expected a fitted top-label logistic map", case.name);
        };
        let params = case.flat("platt.top_params");
        assert_all_close(&case, "platt (a, b)", &[slope, intercept], &params, 1e-7);
        let (_, out) = case.run(&PlattScaling {
            mode: Mode::OneVsRest,
            ..PlattScaling::default()
        });
        assert_all_close(
            &case,
            "platt ovr (converged)",
            out.probs(),
            &case.flat("platt.ovr"),
            PLATT_CONVERGED,
        );
    }
}

/// `sb`, 10 bins. Expected: uncertainty-calibration
/// `PlattBinnerTopCalibrator(n, 10)` (top) and
/// `PlattBinnerMarginalCalibrator(n, 10)` with rows normalised (ovr),
/// `train_calibration(p_fit, y_fit)` then `calibrate(p_apply)`, with the
/// converged logistic regression as for `platt`, and as shipped.
#[test]
fn scaling_binning() {
    for case in cases() {
        let (_, out) = case.run(&ScalingBinning::default());
        let conf = top_label_confidences(&case, &out);
        assert_all_close(
            &case,
            "sb top (converged)",
            &conf,
            &case.flat("sb.top"),
            PLATT_CONVERGED,
        );
        assert_all_close(
            &case,
            "sb top (sklearn tol=1e-4)",
            &conf,
            &case.flat("sb.top_sklearn_default_tol"),
            PLATT_SHIPPED,
        );
        let (_, out) = case.run(&ScalingBinning {
            mode: Mode::OneVsRest,
            ..ScalingBinning::default()
        });
        assert_all_close(
            &case,
            "sb ovr (converged)",
            out.probs(),
            &case.flat("sb.ovr"),
            PLATT_CONVERGED,
        );
    }
}

/// The predictions each metric block of the fixture was computed on.
fn metric_inputs(case: &Case) -> [(&'static str, Predictions); 2] {
    let t = case.num("ts.temperature_exact");
    let scaled = Predictions::with_temperature(&case.apply_view(), &case.apply_labels, t).unwrap();
    [
        ("uncalibrated", case.apply_softmax()),
        ("temperature", scaled),
    ]
}

/// Smooth ECE. Expected: relplot `smECE(conf, correct, return_width=True)`
/// on the top-label confidences and correctness.
#[test]
fn smooth_ece_matches_relplot() {
    for case in cases() {
        for (block, p) in metric_inputs(&case) {
            let s = smooth_ece(&p).unwrap();
            assert_close(
                &case,
                &format!("{block} smECE"),
                s.value,
                case.num(&format!("metrics.{block}.smooth_ece.smece")),
                EXACT,
            );
            assert_eq!(
                s.bandwidth,
                case.num(&format!("metrics.{block}.smooth_ece.sigma")),
                "{}",
                case.name
            );
        }
        let (conf, correct) = hist_top_pairs(&case);
        let s = smooth_ece_scores(&conf, &correct).unwrap();
        let block = "metrics.hist_top_confidences.smooth_ece";
        assert_close(
            &case,
            "hist smECE",
            s.value,
            case.num(&format!("{block}.smece")),
            EXACT,
        );
        assert_eq!(s.bandwidth, case.num(&format!("{block}.sigma")));
    }
}

/// netcal's top-label histogram confidences and the correctness of the
/// uncalibrated prediction (the fixture's discrete metric input).
fn hist_top_pairs(case: &Case) -> (Vec<f64>, Vec<bool>) {
    let p = case.apply_softmax();
    let correct = (0..p.len()).map(|i| p.is_correct(i)).collect();
    (case.flat("hist.top"), correct)
}

/// Debiased L2 calibration error. Expected: uncertainty-calibration
/// `get_calibration_error(probs, labels, p=2, debias=…, mode=…)`, and on
/// (confidence, correct) pairs `get_calibration_error(conf, correct, p=2,
/// debias=…)` (the 1-D path), whose `is_discrete` verdict is recorded.
#[test]
fn l2_calibration_error_matches_uncertainty_calibration() {
    for case in cases() {
        for (block, p) in metric_inputs(&case) {
            for (mode, mode_key) in [
                (CeMode::TopLabel, "top_label"),
                (CeMode::Marginal, "marginal"),
            ] {
                for (debias, debias_key) in [(true, "debiased"), (false, "plugin")] {
                    let cfg = L2CeConfig {
                        mode,
                        debias,
                        ..L2CeConfig::default()
                    };
                    let got = l2_calibration_error(&p, &cfg).unwrap();
                    let want = case.num(&format!("metrics.{block}.kumar.{mode_key}_{debias_key}"));
                    assert_close(
                        &case,
                        &format!("{block} {mode_key} {debias_key}"),
                        got,
                        want,
                        EXACT,
                    );
                }
            }
        }
        // The 1-D path on continuous confidences (equal-mass bins) and on
        // netcal's discrete histogram confidences (one bin per value).
        let p = case.apply_softmax();
        let correct: Vec<bool> = (0..p.len()).map(|i| p.is_correct(i)).collect();
        let (hconf, _) = hist_top_pairs(&case);
        for (block, conf) in [
            ("uncalibrated_binary", p.confidences().to_vec()),
            ("hist_top_confidences", hconf),
        ] {
            let base = format!("metrics.{block}.kumar_binary");
            let discrete = case.exp(&format!("{base}.discrete")).as_bool().unwrap();
            for (debias, key) in [(true, "debiased"), (false, "plugin")] {
                let cfg = L2CeConfig {
                    debias,
                    ..L2CeConfig::default()
                };
                let got = l2_calibration_error_scores(&conf, &correct, &cfg).unwrap();
                assert_close(
                    &case,
                    &format!("{block} 1-D {key}"),
                    got,
                    case.num(&format!("{base}.{key}")),
                    EXACT,
                );
                // Forcing the binning the package's rule chose gives the same.
                let forced = L2CeConfig {
                    binning: if discrete {
                        CeBinning::Distinct
                    } else {
                        CeBinning::EqualMass
                    },
                    ..cfg
                };
                assert_eq!(
                    l2_calibration_error_scores(&conf, &correct, &forced).unwrap(),
                    got
                );
            }
        }
    }
}

/// Binned calibration error under the three norms. Expected: the script's
/// numpy on the notebook's bins (`binned_ce`), and uncertainty-calibration
/// `lower_bound_scaling_ce(probs, labels, p=1|2, debias=False, num_bins=10,
/// binning_scheme=get_equal_prob_bins, mode='top-label')` (the same bins
/// here: the script asserts no confidence lies on an edge).
#[test]
fn binned_calibration_error_norms() {
    for case in cases() {
        for (block, p) in metric_inputs(&case) {
            let b = format!("metrics.{block}");
            let l1 = calibration_error(&p, 10, Norm::L1).unwrap();
            let l2 = calibration_error(&p, 10, Norm::L2).unwrap();
            let linf = calibration_error(&p, 10, Norm::Linf).unwrap();
            assert_close(
                &case,
                &format!("{block} L1"),
                l1,
                case.num(&format!("{b}.binned.l1")),
                EXACT,
            );
            assert_close(
                &case,
                &format!("{block} L2"),
                l2,
                case.num(&format!("{b}.binned.l2")),
                EXACT,
            );
            assert_close(
                &case,
                &format!("{block} Linf"),
                linf,
                case.num(&format!("{b}.binned.linf")),
                EXACT,
            );
            assert_close(
                &case,
                &format!("{block} L1 (Kumar)"),
                l1,
                case.num(&format!("{b}.kumar_equal_width.l1")),
                EXACT,
            );
            assert_close(
                &case,
                &format!("{block} L2 (Kumar)"),
                l2,
                case.num(&format!("{b}.kumar_equal_width.l2")),
                EXACT,
            );
            assert_eq!(l1, muq_calibrate::ece(&p, 10).unwrap());
            assert_eq!(linf, muq_calibrate::mce(&p, 10).unwrap());
            assert!(l1 <= l2 && l2 <= linf);
        }
        // The discrete block: muq's own top-label histogram binning (equal
        // to netcal's, see `histogram_binning`), through `Calibrated`.
        let (_, out) = case.run(&HistogramBinning::default());
        let p = out.predictions(&case.apply_labels).unwrap();
        let b = "metrics.hist_top_confidences.binned";
        for (norm, key) in [(Norm::L1, "l1"), (Norm::L2, "l2"), (Norm::Linf, "linf")] {
            let got = calibration_error(&p, 10, norm).unwrap();
            assert_close(
                &case,
                &format!("hist {key}"),
                got,
                case.num(&format!("{b}.{key}")),
                EXACT,
            );
        }
    }
}

/// Brier decomposition. Expected: the script's numpy (`brier_decomposition`:
/// Murphy's terms per class on 10 equal-width bins, plus Stephenson et al.'s
/// within-bin terms), and the identity it satisfies.
#[test]
fn brier_decomposition_matches_numpy() {
    for case in cases() {
        for (block, p) in metric_inputs(&case) {
            let d = brier_decomposition(&p, BrierBinning::EqualWidth(10)).unwrap();
            let b = format!("metrics.{block}.brier_decomposition");
            for (name, got) in [
                ("reliability", d.reliability),
                ("resolution", d.resolution),
                ("uncertainty", d.uncertainty),
                ("within_bin_variance", d.within_bin_variance),
                ("within_bin_covariance", d.within_bin_covariance),
                ("brier", d.brier),
            ] {
                assert_close(
                    &case,
                    &format!("{block} {name}"),
                    got,
                    case.num(&format!("{b}.{name}")),
                    EXACT,
                );
            }
            assert_close(
                &case,
                &format!("{block} five-term identity"),
                d.reconstructed(),
                d.brier,
                1e-14,
            );
            let gap = (d.murphy() - d.brier).abs();
            assert!(gap <= d.within_bin_variance + d.within_bin_covariance.abs() + 1e-14);
        }
    }
}
