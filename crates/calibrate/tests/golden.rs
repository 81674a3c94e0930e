//! Golden tests against `fixtures/calibration.json`.
//!
//! Source of the expected numbers: the file's `source` field — the original
//! notebook's formulas (ECE with 10 equal-width bins via `numpy.digitize` on
//! the upper bin edges; Brier = sum over classes / n; NLL = mean cross-entropy;
//! `temperature` = the exact minimiser of the NLL over T). The file is a copy
//! of `../shared/golden/calibration.json` (the shared folder beside the
//! repository).
//!
//! Tolerances: accuracy, ECE, Brier and NLL (before and after temperature
//! scaling) within 1e-6 absolute; the fitted temperature within 1e-5 relative
//! of `temperature` (not `temperature_seed_bfgs`, which is the notebook's BFGS
//! stopped after 50 iterations).

use muq_calibrate::{
    Logits, Predictions, accuracy, brier, ece, fit_temperature, mce, nll, summarize,
};
use serde_json::Value;

const ABS_TOL: f64 = 1e-6;
const T_REL_TOL: f64 = 1e-5;

struct Case {
    name: String,
    num_classes: usize,
    logits: Vec<f64>,
    labels: Vec<usize>,
    expected: Value,
}

fn cases() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/calibration.json"
    );
    let text = std::fs::read_to_string(path).expect("read fixtures/calibration.json");
    let root: Value = serde_json::from_str(&text).expect("parse golden JSON");
    root["cases"]
        .as_array()
        .expect("cases array")
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_owned(),
            num_classes: c["num_classes"].as_u64().unwrap() as usize,
            logits: c["logits"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
                .collect(),
            labels: c["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect(),
            expected: c["expected"].clone(),
        })
        .collect()
}

fn expected(case: &Case, key: &str) -> f64 {
    case.expected[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{}: missing {key}", case.name))
}

fn assert_close(case: &Case, what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= ABS_TOL,
        "{}: {what} = {got}, expected {want} (±{ABS_TOL})",
        case.name
    );
}

#[test]
fn golden_file_has_the_four_cases() {
    let names: Vec<_> = cases().into_iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "overconfident_1000x10",
            "underconfident_500x10",
            "small_37x3",
            "saturated_row_50x10"
        ]
    );
}

#[test]
fn metrics_at_temperature_one() {
    for case in cases() {
        let logits = Logits::new(&case.logits, case.num_classes).unwrap();
        let p = Predictions::new(&logits, &case.labels).unwrap();
        assert_close(&case, "accuracy", accuracy(&p), expected(&case, "accuracy"));
        assert_close(
            &case,
            "ece",
            ece(&p, 10).unwrap(),
            expected(&case, "ece_10"),
        );
        assert_close(&case, "brier", brier(&p), expected(&case, "brier"));
        assert_close(&case, "nll", nll(&p), expected(&case, "nll"));
        assert!(mce(&p, 10).unwrap() >= ece(&p, 10).unwrap());
    }
}

#[test]
fn f32_logits_give_the_same_metrics() {
    // The golden logits are f32 values (written from float32 arrays), so the
    // f32 view carries the same numbers up to JSON parsing's last-ulp rounding.
    for case in cases() {
        let z32: Vec<f32> = case.logits.iter().map(|&v| v as f32).collect();
        let p =
            Predictions::new(&Logits::new(&z32, case.num_classes).unwrap(), &case.labels).unwrap();
        assert_close(
            &case,
            "ece",
            ece(&p, 10).unwrap(),
            expected(&case, "ece_10"),
        );
        assert_close(&case, "nll", nll(&p), expected(&case, "nll"));
    }
}

#[test]
fn saturated_case_has_one_confidence_of_exactly_one() {
    let case = cases()
        .into_iter()
        .find(|c| c.name == "saturated_row_50x10")
        .unwrap();
    let p = Predictions::new(&Logits::new(&case.logits, 10).unwrap(), &case.labels).unwrap();
    assert_eq!(p.confidences().iter().filter(|&&c| c == 1.0).count(), 1);
}

#[test]
fn temperature_scaling() {
    for case in cases() {
        let logits = Logits::new(&case.logits, case.num_classes).unwrap();
        let fit = fit_temperature(&logits, &case.labels).unwrap();
        let want = expected(&case, "temperature");
        println!("{}: {fit:?}", case.name);
        assert!(
            ((fit.temperature - want) / want).abs() <= T_REL_TOL,
            "{}: T = {}, expected {want} ({fit:?})",
            case.name,
            fit.temperature
        );
        assert!(fit.converged, "{}: {fit:?}", case.name);
        assert!(fit.iterations <= 12, "{}: {fit:?}", case.name);
        assert_close(&case, "nll_before", fit.nll_before, expected(&case, "nll"));
        assert_close(
            &case,
            "nll_after",
            fit.nll_after,
            expected(&case, "nll_after_ts"),
        );

        let s = summarize(&logits, &case.labels, fit.temperature, 10).unwrap();
        assert_close(&case, "ece", s.uncalibrated.ece, expected(&case, "ece_10"));
        assert_close(
            &case,
            "ece_after_ts",
            s.scaled.ece,
            expected(&case, "ece_10_after_ts"),
        );
        assert_close(
            &case,
            "brier_after_ts",
            s.scaled.brier,
            expected(&case, "brier_after_ts"),
        );
        assert_close(
            &case,
            "nll_after_ts",
            s.scaled.nll,
            expected(&case, "nll_after_ts"),
        );
        assert_close(
            &case,
            "accuracy_after_ts",
            s.scaled.accuracy,
            expected(&case, "accuracy"),
        );
    }
}
