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

// ------------------------------------------------------------ --recalibrate

/// A seeded, overconfident `n × k` problem (xorshift64* uniforms, Box–Muller
/// normals): each row's label gets a boost of 2–4 with probability 0.7,
/// another class otherwise, then every logit is scaled by 2 and given a
/// class-dependent bias, so that the recalibrators have something to fix.
fn synthetic(n: usize, k: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<u64>) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut rows = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let label = (uniform() * k as f64) as usize % k;
        let mut row: Vec<f64> = (0..k)
            .map(|_| {
                let (u1, u2) = (uniform().max(1e-300), uniform());
                (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            })
            .collect();
        let boosted = if uniform() < 0.7 {
            label
        } else {
            (uniform() * k as f64) as usize % k
        };
        row[boosted] += 2.0 + 2.0 * uniform();
        for (j, v) in row.iter_mut().enumerate() {
            *v = 2.0 * *v + 0.3 * j as f64;
        }
        rows.push(row);
        labels.push(label as u64);
    }
    (rows, labels)
}

/// Writes an evaluated and a calibration set into `dir` and returns the
/// `muq metrics` arguments naming them.
fn eval_and_cal_args(
    dir: &Path,
    eval: (&[Vec<f64>], &[u64]),
    cal: (&[Vec<f64>], &[u64]),
) -> Vec<PathBuf> {
    let p = |name: &str| dir.join(name);
    write_csv(&p("l.csv"), eval.0);
    write_labels(&p("y.txt"), eval.1);
    write_csv(&p("cl.csv"), cal.0);
    write_labels(&p("cy.txt"), cal.1);
    let mut args = Vec::new();
    for (flag, file) in [
        ("--logits", "l.csv"),
        ("--labels", "y.txt"),
        ("--cal-logits", "cl.csv"),
        ("--cal-labels", "cy.txt"),
    ] {
        args.push(PathBuf::from(flag));
        args.push(p(file));
    }
    args
}

/// A JSON number, or one of the strings muq writes for non-finite values.
fn number(v: &Value) -> f64 {
    match v {
        Value::Number(x) => x.as_f64().unwrap(),
        Value::String(s) if s == "inf" => f64::INFINITY,
        other => panic!("not a metric value: {other}"),
    }
}

fn close_or_both_infinite(got: f64, want: f64, tol: f64) -> bool {
    (got == want) || (got - want).abs() <= tol
}

#[test]
fn recalibrate_blocks_match_the_library_on_the_same_data() {
    use muq_calibrate::{
        L2CeConfig, Logits, Method, Norm, RecalibrationConfig, accuracy, brier, calibration_error,
        ece, fit_recalibrator, l2_calibration_error, nll, smooth_ece,
    };
    let k = 5;
    let (eval_rows, eval_labels) = synthetic(600, k, 1);
    let (cal_rows, cal_labels) = synthetic(500, k, 2);
    let dir = tempfile::tempdir().unwrap();
    let mut args = eval_and_cal_args(
        dir.path(),
        (&eval_rows, &eval_labels),
        (&cal_rows, &cal_labels),
    );
    // Spaces and any order: the blocks come out in the canonical order.
    args.extend(["--recalibrate", "sb, platt,iso,hist,dirichlet,ms,vs,ts"].map(PathBuf::from));
    let out = muq(&args.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = String::from_utf8(out.stdout).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();

    // The same data as muq read it (`f64::to_string` round-trips exactly).
    let flat = |rows: &[Vec<f64>]| rows.iter().flatten().copied().collect::<Vec<f64>>();
    let usize_labels = |l: &[u64]| l.iter().map(|&y| y as usize).collect::<Vec<_>>();
    let (eval_z, cal_z) = (flat(&eval_rows), flat(&cal_rows));
    let (eval_y, cal_y) = (usize_labels(&eval_labels), usize_labels(&cal_labels));
    let eval = Logits::new(&eval_z, k).unwrap();
    let cal = Logits::new(&cal_z, k).unwrap();
    let config = RecalibrationConfig::default();

    let block = &json["recalibrated"];
    let mut last = 0;
    for method in Method::ALL {
        // Blocks in `Method::ALL` order in the printed text.
        let at = text
            .find(&format!("\"{method}\": {{"))
            .unwrap_or_else(|| panic!("no {method} block in {text}"));
        assert!(at > last, "{method} block out of order");
        last = at;

        let b = &block[method.name()];
        let fitted = fit_recalibrator(method, &config, &cal, &cal_y).unwrap();
        let probs = fitted.apply(&eval).unwrap().predictions(&eval_y).unwrap();
        // serde_json reads a float to within an ulp or two of what muq wrote.
        let tol = 1e-12;
        for (key, want) in [
            ("accuracy", accuracy(&probs)),
            ("ece", ece(&probs, 10).unwrap()),
            ("smooth_ece", smooth_ece(&probs).unwrap().value),
            (
                "debiased_l2_ce",
                l2_calibration_error(&probs, &L2CeConfig::default()).unwrap(),
            ),
            ("rms_ce", calibration_error(&probs, 10, Norm::L2).unwrap()),
            ("mce", calibration_error(&probs, 10, Norm::Linf).unwrap()),
            ("brier", brier(&probs)),
            ("nll", nll(&probs)),
        ] {
            let got = number(&b[key]);
            assert!(
                close_or_both_infinite(got, want, tol),
                "{method} {key}: muq {got}, library {want}"
            );
        }
        assert_eq!(b["fitted_on"], "calibration", "{method}");
        assert_eq!(b["fit"]["n"], cal_y.len(), "{method}");
        let fit_nll = nll(&fitted.apply(&cal).unwrap().predictions(&cal_y).unwrap());
        assert!(
            close_or_both_infinite(number(&b["fit"]["nll_after"]), fit_nll, tol),
            "{method}: fit nll_after"
        );
    }
    // Nothing else in the object.
    assert_eq!(block.as_object().unwrap().len(), Method::ALL.len());

    // `ts` is the temperature scaling of the flat keys.
    let ts = &block["ts"];
    assert_eq!(ts["fit"]["temperature"], json["temperature"]);
    for key in ["ece", "mce", "brier", "nll", "smooth_ece", "debiased_l2_ce"] {
        let flat_key = format!("{key}_after_ts");
        let (got, want) = (number(&ts[key]), number(&json[flat_key.as_str()]));
        assert!((got - want).abs() <= 1e-12, "ts {key}: {got} vs {want}");
    }
    // A top-label method keeps the predictions; the full-vector ones need not.
    for method in ["hist", "iso", "platt", "sb"] {
        assert_eq!(block[method]["accuracy"], json["accuracy"], "{method}");
    }
    for (method, key) in [
        ("vs", "iterations"),
        ("ms", "iterations"),
        ("dirichlet", "iterations"),
        ("hist", "bins"),
        ("iso", "points"),
        ("platt", "slope"),
        ("sb", "bins"),
    ] {
        assert!(
            block[method]["fit"][key].is_number(),
            "{method}: no {key} in {}",
            block[method]["fit"]
        );
    }

    // The new top-level keys, before and after temperature scaling.
    let plain = muq_calibrate::Predictions::new(&eval, &eval_y).unwrap();
    let t = number(&json["temperature"]);
    let scaled = muq_calibrate::Predictions::with_temperature(&eval, &eval_y, t).unwrap();
    for (key, p) in [("", &plain), ("_after_ts", &scaled)] {
        let s = smooth_ece(p).unwrap().value;
        let l2 = l2_calibration_error(p, &L2CeConfig::default()).unwrap();
        // The temperature itself went through JSON: compare loosely after TS.
        let tol = if key.is_empty() { 1e-12 } else { 1e-9 };
        let got_s = number(&json[format!("smooth_ece{key}").as_str()]);
        let got_l2 = number(&json[format!("debiased_l2_ce{key}").as_str()]);
        assert!((got_s - s).abs() <= tol, "smooth_ece{key}: {got_s} vs {s}");
        assert!(
            (got_l2 - l2).abs() <= tol,
            "debiased_l2_ce{key}: {got_l2} vs {l2}"
        );
    }
}

#[test]
fn without_a_calibration_set_the_recalibrators_fit_on_the_evaluated_set() {
    let (rows, labels) = synthetic(300, 4, 3);
    let dir = tempfile::tempdir().unwrap();
    let (l, y) = (dir.path().join("l.csv"), dir.path().join("y.txt"));
    write_csv(&l, &rows);
    write_labels(&y, &labels);
    let plain = metrics(&l, &y);
    assert!(plain.status.success());
    let json: Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert!(
        json.get("recalibrated").is_none(),
        "only with --recalibrate"
    );

    let out = muq(&[
        Path::new("--logits"),
        &l,
        Path::new("--labels"),
        &y,
        Path::new("--recalibrate"),
        Path::new("iso,ts"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("fitting the --recalibrate methods on the evaluated set"),
        "{stderr}"
    );
    let with: Value = serde_json::from_slice(&out.stdout).unwrap();
    let block = with["recalibrated"].as_object().unwrap();
    assert_eq!(block.keys().collect::<Vec<_>>(), ["iso", "ts"]);
    for b in block.values() {
        assert_eq!(b["fitted_on"], "evaluated");
        assert_eq!(b["fit"]["n"], 300);
    }
    // Every key of the plain output is there with the same value.
    for (key, value) in json.as_object().unwrap() {
        assert_eq!(&with[key], value, "{key}");
    }
    // These logits are overconfident; isotonic regression, fitted and
    // measured on the same set, removes most of the ECE.
    assert!(number(&block["iso"]["ece"]) < number(&with["ece"]));
}

#[test]
fn bad_recalibrator_names_exit_with_two_and_list_the_valid_ones() {
    let (rows, labels) = synthetic(20, 3, 4);
    let dir = tempfile::tempdir().unwrap();
    let (l, y) = (dir.path().join("l.csv"), dir.path().join("y.txt"));
    write_csv(&l, &rows);
    write_labels(&y, &labels);
    for (list, needle) in [
        ("ts,isotonic", "isotonic"),
        ("TS", "TS"),
        ("ts,iso,ts", "`ts` twice"),
    ] {
        let out = muq(&[
            Path::new("--logits"),
            &l,
            Path::new("--labels"),
            &y,
            Path::new("--recalibrate"),
            Path::new(list),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{list}: {stderr}");
        assert!(out.stdout.is_empty(), "{list}");
        for want in [
            "--recalibrate",
            needle,
            "ts, vs, ms, dirichlet, hist, iso, platt, sb",
        ] {
            assert!(stderr.contains(want), "{list}: {want:?} not in {stderr}");
        }
    }
}

#[test]
fn bootstrap_intervals_are_seeded_and_paired_with_temperature_scaling() {
    let k = 4;
    let (eval_rows, eval_labels) = synthetic(400, k, 5);
    let (cal_rows, cal_labels) = synthetic(400, k, 6);
    let dir = tempfile::tempdir().unwrap();
    let files = eval_and_cal_args(
        dir.path(),
        (&eval_rows, &eval_labels),
        (&cal_rows, &cal_labels),
    );
    let run = |seed: &str| -> Value {
        let mut args = files.clone();
        args.extend(
            [
                "--recalibrate",
                "ts,iso",
                "--bootstrap",
                "300",
                "--seed",
                seed,
            ]
            .map(PathBuf::from),
        );
        let out = muq(&args.iter().map(PathBuf::as_path).collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let a = run("3");
    assert_eq!(a, run("3"), "same seed, same intervals");
    let ci = |v: &Value, method: &str, key: &str| -> [f64; 3] {
        let c = &v["recalibrated"][method]["bootstrap"][key];
        [
            c["estimate"].as_f64().unwrap(),
            c["lower"].as_f64().unwrap(),
            c["upper"].as_f64().unwrap(),
        ]
    };
    // `ts` is the reference itself: its paired differences are exactly 0.
    assert_eq!(ci(&a, "ts", "ece_minus_ts"), [0.0; 3]);
    assert_eq!(ci(&a, "ts", "brier_minus_ts"), [0.0; 3]);
    // Each estimate is the block's own value, inside its interval.
    let iso = &a["recalibrated"]["iso"];
    for key in ["ece", "smooth_ece", "brier"] {
        let [est, lo, hi] = ci(&a, "iso", key);
        assert_eq!(est, iso[key].as_f64().unwrap(), "{key}");
        assert!(lo <= est && est <= hi && lo < hi, "{key}: {lo} {est} {hi}");
    }
    let [d, _, _] = ci(&a, "iso", "ece_minus_ts");
    let want = iso["ece"].as_f64().unwrap() - a["recalibrated"]["ts"]["ece"].as_f64().unwrap();
    assert!((d - want).abs() < 1e-12, "{d} vs {want}");
    // Another seed, other resamples.
    assert_ne!(ci(&a, "iso", "ece"), ci(&run("4"), "iso", "ece"));
    // Without --recalibrate, --bootstrap is refused by the argument parser.
    let mut args = files[..4].to_vec();
    args.extend(["--bootstrap", "10"].map(PathBuf::from));
    let out = muq(&args.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(2));
}
