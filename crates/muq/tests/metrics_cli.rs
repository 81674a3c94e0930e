//! End-to-end tests of `muq metrics` through the real binary.
//!
//! Expected numbers come from `fixtures/calibration.json` (a copy of
//! `../shared/golden/calibration.json`; see its `source` field: the
//! original notebook's formulas). Tolerances: 1e-6 absolute for accuracy,
//! ECE, Brier and NLL before and after temperature scaling; 1e-5 relative for
//! the fitted temperature. The golden file has one set per case, so the
//! temperature is fitted on the evaluated set itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const ABS_TOL: f64 = 1e-6;
const T_REL_TOL: f64 = 1e-5;

struct Case {
    name: String,
    num_classes: usize,
    logits: Vec<Vec<f64>>,
    labels: Vec<u64>,
    expected: Value,
}

fn cases() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/calibration.json"
    );
    let root: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    root["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_owned(),
            num_classes: c["num_classes"].as_u64().unwrap() as usize,
            logits: c["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    r.as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_f64().unwrap())
                        .collect()
                })
                .collect(),
            labels: c["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect(),
            expected: c["expected"].clone(),
        })
        .collect()
}

fn muq(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_muq"))
        .arg("metrics")
        .args(args)
        .output()
        .expect("run muq")
}

fn metrics(logits: &Path, labels: &Path) -> Output {
    muq(&[Path::new("--logits"), logits, Path::new("--labels"), labels])
}

fn write_csv(path: &Path, rows: &[Vec<f64>]) {
    let text: String = rows
        .iter()
        .map(|r| r.iter().map(f64::to_string).collect::<Vec<_>>().join(",") + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
}

fn write_labels(path: &Path, labels: &[u64]) {
    let text: String = labels.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// Writes a `.npy` version 1.0 file as `numpy.save` does: magic, version,
/// little-endian u16 header length, a dict literal padded with spaces to a
/// 64-byte boundary and ending in `\n`, then the raw little-endian data.
fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) {
    let shape = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&u16::try_from(header.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

fn npy_logits(path: &Path, rows: &[Vec<f64>], descr: &str) {
    let flat = rows.iter().flatten();
    let data: Vec<u8> = match descr {
        "<f4" => flat.flat_map(|&v| (v as f32).to_le_bytes()).collect(),
        "<f8" => flat.flat_map(|&v| v.to_le_bytes()).collect(),
        _ => unreachable!(),
    };
    write_npy(path, descr, &[rows.len(), rows[0].len()], &data);
}

fn npy_labels(path: &Path, labels: &[u64], descr: &str) {
    let data: Vec<u8> = match descr {
        "|u1" => labels.iter().map(|&l| u8::try_from(l).unwrap()).collect(),
        "<i4" => labels
            .iter()
            .flat_map(|&l| (l as i32).to_le_bytes())
            .collect(),
        "<i8" => labels
            .iter()
            .flat_map(|&l| (l as i64).to_le_bytes())
            .collect(),
        "<u4" => labels
            .iter()
            .flat_map(|&l| (l as u32).to_le_bytes())
            .collect(),
        "<u8" => labels.iter().flat_map(|&l| l.to_le_bytes()).collect(),
        _ => unreachable!(),
    };
    write_npy(path, descr, &[labels.len()], &data);
}

fn check_against_golden(case: &Case, out: &Output, how: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} ({how}): muq failed: {stderr}",
        case.name
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    let get = |key: &str| {
        json[key]
            .as_f64()
            .unwrap_or_else(|| panic!("missing {key} in {json}"))
    };
    let want = |key: &str| case.expected[key].as_f64().unwrap();
    for (got, exp) in [
        ("accuracy", "accuracy"),
        ("ece", "ece_10"),
        ("brier", "brier"),
        ("nll", "nll"),
        ("ece_after_ts", "ece_10_after_ts"),
        ("brier_after_ts", "brier_after_ts"),
        ("nll_after_ts", "nll_after_ts"),
    ] {
        assert!(
            (get(got) - want(exp)).abs() <= ABS_TOL,
            "{} ({how}): {got} = {}, expected {}",
            case.name,
            get(got),
            want(exp)
        );
    }
    let t = want("temperature");
    assert!(
        ((get("temperature") - t) / t).abs() <= T_REL_TOL,
        "{} ({how}): T",
        case.name
    );
    assert_eq!(json["n"].as_u64().unwrap() as usize, case.labels.len());
    assert_eq!(
        json["num_classes"].as_u64().unwrap() as usize,
        case.num_classes
    );
    for key in ["mce", "adaptive_ece", "classwise_ece"] {
        assert!((0.0..=1.0).contains(&get(key)), "{key}");
    }
    assert!(get("mce") >= get("ece"));
    assert_eq!(json["temperature_fitted_on"], "evaluated");
    assert!(
        stderr.contains("fitting the temperature on the evaluated set"),
        "{stderr}"
    );
}

#[test]
fn csv_reproduces_every_golden_case() {
    let dir = tempfile::tempdir().unwrap();
    for case in cases() {
        let (l, y) = (dir.path().join("logits.csv"), dir.path().join("labels.txt"));
        write_csv(&l, &case.logits);
        write_labels(&y, &case.labels);
        check_against_golden(&case, &metrics(&l, &y), "csv");
    }
}

#[test]
fn npy_reproduces_every_golden_case() {
    // Every supported dtype appears at least once; the golden logits are
    // float32 values, so writing them as <f4 is exact.
    let combos = [
        ("<f4", "<i8"),
        ("<f8", "<i4"),
        ("<f4", "|u1"),
        ("<f8", "<u4"),
        ("<f4", "<u8"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    for (i, (fdescr, ldescr)) in combos.iter().enumerate() {
        let case = &cases[i % cases.len()];
        let (l, y) = (dir.path().join("logits.npy"), dir.path().join("labels.npy"));
        npy_logits(&l, &case.logits, fdescr);
        npy_labels(&y, &case.labels, ldescr);
        check_against_golden(case, &metrics(&l, &y), &format!("npy {fdescr} {ldescr}"));
    }
}

#[test]
fn separate_calibration_set_is_used_for_the_temperature() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let (eval, cal) = (&cases[0], &cases[1]);
    let p = |name: &str| dir.path().join(name);
    write_csv(&p("l.csv"), &eval.logits);
    write_labels(&p("y.txt"), &eval.labels);
    write_csv(&p("cl.csv"), &cal.logits);
    write_labels(&p("cy.txt"), &cal.labels);
    let out = muq(&[
        Path::new("--logits"),
        &p("l.csv"),
        Path::new("--labels"),
        &p("y.txt"),
        Path::new("--cal-logits"),
        &p("cl.csv"),
        Path::new("--cal-labels"),
        &p("cy.txt"),
        Path::new("--bins"),
        Path::new("15"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["temperature_fitted_on"], "calibration");
    assert_eq!(json["bins"], 15);
    assert_eq!(json["temperature_fit_n"], cal.labels.len());
    // The calibration case's own optimum, applied to the evaluated set.
    let t = cal.expected["temperature"].as_f64().unwrap();
    assert!(((json["temperature"].as_f64().unwrap() - t) / t).abs() <= T_REL_TOL);
    let nll = json["nll"].as_f64().unwrap();
    assert!((nll - eval.expected["nll"].as_f64().unwrap()).abs() <= ABS_TOL);
}

/// Writes a small valid 4×10 problem, lets `corrupt` edit the texts, runs
/// `muq metrics`, and returns (exit code, stderr).
fn run_corrupted(corrupt: impl FnOnce(&mut Vec<String>, &mut Vec<String>)) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut rows: Vec<String> = (0..4)
        .map(|i| {
            (0..10)
                .map(|j| format!("{}", (i * 10 + j) as f64 * 0.1))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    let mut labels: Vec<String> = ["1", "9", "0", "3"].map(String::from).to_vec();
    corrupt(&mut rows, &mut labels);
    let (l, y) = (dir.path().join("logits.csv"), dir.path().join("labels.csv"));
    std::fs::write(&l, rows.join("\n") + "\n").unwrap();
    std::fs::write(&y, labels.join("\n") + "\n").unwrap();
    let out = metrics(&l, &y);
    assert_eq!(
        out.status.success(),
        !out.stdout.is_empty(),
        "JSON on success only"
    );
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_input_error(code: i32, stderr: &str, file_and_line: &str, message: &str) {
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one-line error: {stderr}"
    );
    assert!(
        stderr.contains(file_and_line),
        "{stderr:?} should contain {file_and_line:?}"
    );
    assert!(
        stderr.contains(message),
        "{stderr:?} should contain {message:?}"
    );
}

#[test]
fn valid_corruption_baseline_succeeds() {
    let (code, stderr) = run_corrupted(|_, _| {});
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.starts_with("note: "), "{stderr}");
}

#[test]
fn ragged_row_is_an_input_error() {
    let (code, stderr) = run_corrupted(|rows, _| {
        rows[2] = rows[2].rsplit_once(',').unwrap().0.to_owned();
    });
    assert_input_error(
        code,
        &stderr,
        "logits.csv line 3",
        "expected 10 columns, found 9",
    );
}

#[test]
fn nan_logit_is_an_input_error() {
    let (code, stderr) = run_corrupted(|rows, _| rows[1] = rows[1].replacen("1.1", "NaN", 1));
    assert_input_error(code, &stderr, "logits.csv line 2", "non-finite");
    let (code, stderr) = run_corrupted(|rows, _| rows[3] = rows[3].replacen("3.5", "inf", 1));
    assert_input_error(code, &stderr, "logits.csv line 4", "non-finite");
}

#[test]
fn unparsable_number_is_an_input_error() {
    let (code, stderr) = run_corrupted(|rows, _| rows[0] = rows[0].replacen("0.5", "0.5x", 1));
    assert_input_error(code, &stderr, "logits.csv line 1", "cannot parse \"0.5x\"");
    let (code, stderr) = run_corrupted(|_, labels| labels[2] = "two".into());
    assert_input_error(code, &stderr, "labels.csv line 3", "cannot parse \"two\"");
}

#[test]
fn label_equal_to_num_classes_is_an_input_error() {
    let (code, stderr) = run_corrupted(|_, labels| labels[3] = "10".into());
    assert_input_error(
        code,
        &stderr,
        "labels.csv line 4",
        "label 10 out of range for 10 classes",
    );
    let (code, stderr) = run_corrupted(|_, labels| labels[0] = "-1".into());
    assert_input_error(code, &stderr, "labels.csv line 1", "negative label -1");
}

#[test]
fn row_count_mismatch_is_an_input_error() {
    let (code, stderr) = run_corrupted(|_, labels| {
        labels.pop();
    });
    assert_input_error(code, &stderr, "labels.csv line 4", "missing label");
    let (code, stderr) = run_corrupted(|_, labels| labels.push("2".into()));
    assert_input_error(code, &stderr, "labels.csv line 5", "extra label");
}

#[test]
fn npy_nan_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let (l, y) = (dir.path().join("bad.npy"), dir.path().join("y.npy"));
    npy_logits(&l, &[vec![0.0, 1.0], vec![2.0, f64::NAN]], "<f4");
    npy_labels(&y, &[0, 1], "<i8");
    let out = metrics(&l, &y);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_input_error(
        out.status.code().unwrap(),
        &stderr,
        "bad.npy[1]",
        "non-finite",
    );
}

#[test]
fn missing_file_exits_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let missing: PathBuf = dir.path().join("nope.csv");
    let out = metrics(&missing, &missing);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot read") && stderr.contains("nope.csv"),
        "{stderr}"
    );
}

#[test]
fn calibration_logits_require_calibration_labels() {
    let out = muq(&[
        Path::new("--logits"),
        Path::new("a.csv"),
        Path::new("--labels"),
        Path::new("b.txt"),
        Path::new("--cal-logits"),
        Path::new("c.csv"),
    ]);
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit with 2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cal-labels"));
}
