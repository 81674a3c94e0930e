//! `eval.recalibrators` end to end: `muq run` on generated data with
//! recalibrators beside temperature scaling, asserting on `result.json`;
//! and the config field's validation and its effect on run ids.

use std::path::{Path, PathBuf};

use muq::config::RunConfig;
use muq::evaluate::{ProbMetrics, Recalibration};
use muq_calibrate::{Method, MetricSet};

mod common;
use common::{dataset, muq, run};

/// Every metric in its range; the NLL may be `+∞` only for a binning method.
fn check_ranges(what: &str, m: &ProbMetrics, binning: bool) {
    for (name, v, hi) in [
        ("accuracy", m.accuracy, 1.0),
        ("ece", m.ece, 1.0),
        ("smooth_ece", m.smooth_ece, 1.0),
        ("debiased_l2_ce", m.debiased_l2_ce, 1.0),
        ("rms_ce", m.rms_ce, 1.0),
        ("mce", m.mce, 1.0),
        ("brier", m.brier, 2.0),
    ] {
        assert!((0.0..=hi).contains(&v), "{what}: {name} = {v}");
    }
    assert!(
        m.ece <= m.rms_ce + 1e-15 && m.rms_ce <= m.mce + 1e-15,
        "{what}: {m:?}"
    );
    assert!(
        m.nll >= 0.0 && (m.nll.is_finite() || (binning && m.nll == f64::INFINITY)),
        "{what}: nll {}",
        m.nll
    );
}

/// `ProbMetrics` of a split against the `MetricSet` the run computed for it
/// the existing way: equal where they are the same computation.
fn same_as(what: &str, p: &ProbMetrics, m: &MetricSet, nll_tol: f64) {
    assert_eq!(p.accuracy, m.accuracy, "{what}: accuracy");
    assert_eq!(p.ece, m.ece, "{what}: ece");
    assert_eq!(p.mce, m.mce, "{what}: mce");
    assert_eq!(p.brier, m.brier, "{what}: brier");
    assert_eq!(p.saturated, m.saturated, "{what}: saturated");
    assert!(
        (p.nll - m.nll).abs() <= nll_tol,
        "{what}: nll {} vs {}",
        p.nll,
        m.nll
    );
}

#[test]
fn run_records_each_recalibrator_and_ts_equals_temperature_scaling() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    let r = run(
        &data_dir,
        &tmp.path().join("runs/recal"),
        &[
            "modality.kind=label",
            r#"eval.recalibrators=["ts","iso","dirichlet"]"#,
        ],
    );
    assert_eq!(
        r.config.eval.recalibrators,
        [Method::Ts, Method::Iso, Method::Dirichlet]
    );
    let names: Vec<&str> = r.states.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["original", "first_order"]);
    // The printed summary has a second table: per state, uncalibrated and
    // each method in canonical order.
    let table = muq::summary::format_run(&r);
    let tail = &table[table.find("after each recalibrator").expect("second table")..];
    for state in ["original", "first_order"] {
        let rows: Vec<&str> = tail
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(state))
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        assert_eq!(rows, ["uncalibrated", "ts", "dirichlet", "iso"], "{table}");
    }
    for s in &r.states {
        let m = &s.metrics;
        let rc: &Recalibration = m.recalibration.as_ref().expect("recalibration block");
        let methods: Vec<&str> = rc.methods.keys().map(String::as_str).collect();
        assert_eq!(methods, ["dirichlet", "iso", "ts"], "{}", s.name);
        let what = |x: &str| format!("{} / {x}", s.name);

        // The uncalibrated reference is the softmax the run measured anyway
        // (the NLL from the probabilities instead of the log-sum-exp).
        same_as(
            &what("uncalibrated evaluation"),
            &rc.uncalibrated.evaluation,
            &m.evaluation.uncalibrated,
            1e-9,
        );
        same_as(
            &what("uncalibrated forget"),
            &rc.uncalibrated.forget,
            &m.forget.uncalibrated,
            1e-9,
        );
        same_as(
            &what("uncalibrated retain"),
            &rc.uncalibrated.retain,
            &m.retain.uncalibrated,
            1e-9,
        );

        // `ts` through the recalibrator interface is the run's own
        // temperature scaling: the same temperature, the same metrics.
        let ts = &rc.methods["ts"];
        assert_eq!(ts.fit.temperature, Some(m.temperature.temperature));
        assert_eq!(ts.fit.converged, Some(m.temperature.converged));
        assert_eq!(ts.fit.n, r.data.n_calibration);
        assert!((ts.fit.nll_before - m.temperature.nll_before).abs() <= 1e-9);
        assert!((ts.fit.nll_after - m.temperature.nll_after).abs() <= 1e-9);
        same_as(
            &what("ts evaluation"),
            &ts.evaluation,
            &m.evaluation.scaled,
            1e-9,
        );
        same_as(&what("ts forget"), &ts.forget, &m.forget.scaled, 1e-9);
        same_as(&what("ts retain"), &ts.retain, &m.retain.scaled, 1e-9);
        assert_eq!(ts.reliability, m.reliability.after_ts);

        for (name, res) in &rc.methods {
            let binning = name == "iso";
            check_ranges(&what(name), &res.evaluation, binning);
            check_ranges(&what(name), &res.forget, binning);
            check_ranges(&what(name), &res.retain, binning);
            assert_eq!(res.fit.n, r.data.n_calibration, "{}", what(name));
            assert_eq!(res.reliability.n, r.data.n_evaluation, "{}", what(name));
            // (To rounding: serde_json reads floats to within an ulp or two.)
            let from_bins = res.reliability.calibration_error(muq_calibrate::Norm::L1);
            assert!(
                (from_bins - res.evaluation.ece).abs() <= 1e-12,
                "{}: {from_bins} vs {}",
                what(name),
                res.evaluation.ece
            );
        }
        // Isotonic regression is top-label: it keeps every prediction.
        let iso = &rc.methods["iso"];
        assert_eq!(iso.evaluation.accuracy, m.evaluation.uncalibrated.accuracy);
        assert_eq!(iso.forget.accuracy, m.forget.uncalibrated.accuracy);
        assert!(iso.fit.points.is_some_and(|p| p >= 1), "{:?}", iso.fit);
        // Dirichlet calibration minimises the fitting set's NLL (plus a
        // penalty that is 0 at its starting point, the identity map), so it
        // cannot end above the softmax's NLL there.
        let dir = &rc.methods["dirichlet"];
        assert!(dir.fit.converged.is_some() && dir.fit.iterations.is_some());
        assert!(
            dir.fit.nll_after <= dir.fit.nll_before + 1e-12,
            "{}: {:?}",
            s.name,
            dir.fit
        );
    }
}

/// Class-wise forgetting leaves one class out of both test halves, so the
/// recalibrators are fitted on 9 of 10 classes; every one of them still
/// fits and measures.
#[test]
fn every_recalibrator_runs_under_class_wise_forgetting() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    let all: Vec<String> = Method::ALL.iter().map(|m| format!("\"{m}\"")).collect();
    let set = format!("eval.recalibrators=[{}]", all.join(","));
    let r = run(
        &data_dir,
        &tmp.path().join("runs/class"),
        &["modality.kind=class", "modality.class=2", &set],
    );
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    for s in &r.states {
        let rc = s.metrics.recalibration.as_ref().expect("recalibration");
        assert_eq!(rc.methods.len(), Method::ALL.len(), "{}", s.name);
        for (name, res) in &rc.methods {
            let binning = ["hist", "iso", "sb"].contains(&name.as_str());
            let what = format!("{} / {name}", s.name);
            check_ranges(&what, &res.evaluation, binning);
            check_ranges(&what, &res.forget, binning);
            check_ranges(&what, &res.retain, binning);
        }
    }
}

#[test]
fn bad_recalibrator_lists_are_config_errors_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    for (set, needles) in [
        (
            r#"eval.recalibrators=["ts","isotonic"]"#,
            &[
                "eval.recalibrators",
                "isotonic",
                "ts, vs, ms, dirichlet, hist, iso, platt, sb",
            ][..],
        ),
        (
            r#"eval.recalibrators=["iso","ts","iso"]"#,
            &["eval.recalibrators", "`iso` is listed twice"][..],
        ),
    ] {
        // No data directory is needed: the config is checked first.
        let out = muq()
            .args(["run", "--data-dir"])
            .arg(tmp.path())
            .args(["--set", set, "--out"])
            .arg(tmp.path().join("out"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{set}");
        let err = String::from_utf8_lossy(&out.stderr);
        for needle in needles {
            assert!(err.contains(needle), "{set}: {needle:?} not in {err}");
        }
    }
}

#[test]
fn an_empty_list_keeps_configs_and_result_files_as_before() {
    let default = RunConfig::default();
    assert!(default.eval.recalibrators.is_empty());
    let json = serde_json::to_string(&default).unwrap();
    assert!(!json.contains("recalibrators"), "{json}");
    let explicit = RunConfig::from_toml("[eval]\nrecalibrators = []\n").unwrap();
    assert_eq!(
        muq::pipeline::run_id(&explicit),
        muq::pipeline::run_id(&default)
    );
    let with = RunConfig::from_toml("[eval]\nrecalibrators = [\"ts\"]\n").unwrap();
    assert_ne!(
        muq::pipeline::run_id(&with),
        muq::pipeline::run_id(&default)
    );

    // Result files written before the field existed still read, without a
    // recalibration block, and write none back; their configs still hash
    // to their run ids.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/results");
    let mut files = Vec::new();
    find(&root, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no result.json under {}", root.display());
    for file in &files {
        let r = muq::result::read_result(file).unwrap();
        assert_eq!(
            muq::pipeline::run_id(&r.config),
            r.run_id,
            "{}",
            file.display()
        );
        if !r.config.eval.recalibrators.is_empty() {
            // Written with recalibrators (docs/results/recalibration).
            continue;
        }
        assert!(
            r.states.iter().all(|s| s.metrics.recalibration.is_none()),
            "{}",
            file.display()
        );
        assert_eq!(
            muq::pipeline::run_id(&r.config),
            r.run_id,
            "{}",
            file.display()
        );
        let again = serde_json::to_string(&r).unwrap();
        assert!(!again.contains("recalibration"), "{}", file.display());
        assert!(!muq::summary::format_run(&r).contains("recalibrator"));
    }
}

fn find(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            find(&path, out);
        } else if path.file_name().is_some_and(|n| n == "result.json") {
            out.push(path);
        }
    }
}
