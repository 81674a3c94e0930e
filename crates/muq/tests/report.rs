//! Tests of `muq report` on synthetic results: `RunResult`s built here with
//! chosen metric values (no model is trained), written as `result.json`
//! files, then summarised through the library and through the real binary.
//!
//! Every expected number is computed by hand in a comment next to it; the
//! standard deviation is the population one (ddof = 0). Tolerance 1e-12
//! absolute for computed means and stds (sums of three or four doubles).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use muq::config::{RunConfig, TrainOn};
use muq::evaluate::{
    Averaged, Efficacy, Ensemble, FitDiagnostics, McDropout, ProbMetrics, Recalibration,
    RecalibratorResult, Reliability, SplitMetrics, StateMetrics,
};
use muq::report::{self, Report, Stat};
use muq::result::{DataInfo, Provenance, RunResult, StateResult, Timings, write_json};
use muq_calibrate::ConfidenceInterval;
use muq_calibrate::{MetricSet, ReliabilityBin, ReliabilityDiagram, Summary, TemperatureFit};
use muq_data::{ModalityConfig, ModalityKind};
use muq_resnet::TrainReport;
use muq_unlearn::Method;

const TOL: f64 = 1e-12;

/// The values a synthetic state reports; everything else derives from them.
#[derive(Clone, Copy, Debug)]
struct Values {
    /// ECE after temperature scaling (before = 3×).
    ece: f64,
    /// Brier after temperature scaling (before = + 0.05).
    brier: f64,
    /// Forget-set accuracy.
    forget_acc: f64,
}

fn v(ece: f64, brier: f64, forget_acc: f64) -> Values {
    Values {
        ece,
        brier,
        forget_acc,
    }
}

fn metric_set(accuracy: f64, ece: f64, brier: f64) -> MetricSet {
    MetricSet {
        accuracy,
        ece,
        mce: 2.0 * ece,
        adaptive_ece: 1.5 * ece,
        classwise_ece: 0.5 * ece,
        brier,
        nll: 2.0 * brier,
        saturated: 0,
    }
}

fn summary(accuracy: f64, ece_after: f64, brier_after: f64) -> Summary {
    Summary {
        n: 100,
        num_classes: 10,
        bins: 10,
        temperature: 1.5,
        uncalibrated: metric_set(accuracy, 3.0 * ece_after, brier_after + 0.05),
        scaled: metric_set(accuracy, ece_after, brier_after),
    }
}

/// Ten equal-width bins; bin 9 holds `count` predictions with the given
/// accuracy (mean confidence 0.95), bin 5 holds 10 at accuracy 0.5, the
/// others are empty.
fn diagram(count: usize, accuracy: f64) -> ReliabilityDiagram {
    let bins = (0..10)
        .map(|i| {
            let (c, conf, acc) = match i {
                9 => (count, Some(0.95), Some(accuracy)),
                5 => (10, Some(0.55), Some(0.5)),
                _ => (0, None, None),
            };
            ReliabilityBin {
                lower: i as f64 / 10.0,
                upper: (i + 1) as f64 / 10.0,
                count: c,
                mean_confidence: conf,
                accuracy: acc,
            }
        })
        .collect();
    ReliabilityDiagram {
        bins,
        n: count + 10,
        saturated: 0,
    }
}

fn state(name: &str, values: Values) -> StateResult {
    let evaluation = summary(0.8, values.ece, values.brier);
    StateResult {
        name: name.to_string(),
        method: None,
        report: None,
        metrics: StateMetrics {
            temperature: TemperatureFit {
                temperature: 1.5,
                iterations: 10,
                gradient: 0.0,
                nll_before: 1.0,
                nll_after: 0.9,
                converged: true,
            },
            calibration: evaluation,
            evaluation,
            forget: summary(values.forget_acc, 0.1, 0.5),
            retain: summary(0.9, 0.02, 0.2),
            reliability: Reliability {
                before_ts: diagram(90, 0.9),
                after_ts: diagram(90, 0.94),
            },
            bootstrap: BTreeMap::new(),
            mc_dropout: None,
            ensemble: None,
            efficacy: None,
            recalibration: None,
        },
    }
}

/// A run of `kind` and `seed` with the given states (`original` and method
/// names); `epochs` stands for "some other config".
fn run_result(
    kind: ModalityKind,
    seed: u64,
    epochs: usize,
    states: &[(&str, Values)],
) -> RunResult {
    let mut config = RunConfig {
        seed,
        modality: ModalityConfig::new(kind),
        ..RunConfig::default()
    };
    config.train.epochs = epochs;
    config.model.width = 8;
    config.unlearn = states
        .iter()
        .filter(|(n, _)| *n != "original")
        .map(|(n, _)| Method::from_short_name(n).unwrap())
        .collect();
    RunResult {
        schema: muq::result::SCHEMA,
        run_id: format!("{kind}-{seed}-e{epochs}"),
        config,
        seed,
        train_on: TrainOn::Modified,
        data: DataInfo {
            dir: "/synthetic".into(),
            train_checksum: "0".into(),
            test_checksum: "0".into(),
            modification_checksum: "0".into(),
            trained_checksum: "0".into(),
            forgotten_class: None,
            n_train: 640,
            n_calibration: 100,
            n_evaluation: 100,
            n_pool: 128,
            n_forget: 32,
            n_retain: 608,
            n_retain_eval: 100,
        },
        provenance: Provenance {
            git_commit: None,
            git_dirty: None,
            muq_version: "test".into(),
            candle_version: "test".into(),
            device: "cpu".into(),
            compute: "muq/x86-64".into(),
            started_unix: 0,
            base_model: None,
        },
        timings: Timings::default(),
        training: TrainReport::default(),
        states: states.iter().map(|(n, vals)| state(n, *vals)).collect(),
        failed: Vec::new(),
    }
}

/// Writes each run to `dir/runs/<name>/result.json`.
fn write_runs(dir: &Path, runs: &[(&str, RunResult)]) {
    for (name, run) in runs {
        write_json(&dir.join("runs").join(name).join("result.json"), run).unwrap();
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < TOL
}

fn assert_stat(s: &Stat, mean: f64, std: f64, n: usize) {
    assert!(close(s.mean, mean), "mean {} ≠ {mean}", s.mean);
    assert!(close(s.std, std), "std {} ≠ {std}", s.std);
    assert_eq!(s.n, n);
}

fn read_report(out: &Path) -> Report {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

/// The main fixture: random × 3 seeds, noise × 2 seeds, no label runs;
/// states original, first_order, retrain.
fn standard_runs() -> Vec<(&'static str, RunResult)> {
    use ModalityKind::{Noise, Random};
    vec![
        (
            "random-100",
            run_result(
                Random,
                100,
                3,
                &[
                    ("original", v(0.010, 0.30, 1.0)),
                    ("first_order", v(0.01, 0.40, 0.9)),
                    ("retrain", v(0.005, 0.35, 0.7)),
                ],
            ),
        ),
        (
            "random-101",
            run_result(
                Random,
                101,
                3,
                &[
                    ("original", v(0.012, 0.31, 1.0)),
                    ("first_order", v(0.02, 0.41, 0.8)),
                    ("retrain", v(0.006, 0.36, 0.7)),
                ],
            ),
        ),
        (
            "random-102",
            run_result(
                Random,
                102,
                3,
                &[
                    ("original", v(0.014, 0.32, 1.0)),
                    ("first_order", v(0.03, 0.45, 0.7)),
                    ("retrain", v(0.007, 0.37, 0.7)),
                ],
            ),
        ),
        (
            "noise-100",
            run_result(
                Noise,
                100,
                3,
                &[
                    ("original", v(0.02, 0.5, 1.0)),
                    ("first_order", v(0.04, 0.6, 0.9)),
                    ("retrain", v(0.01, 0.5, 0.6)),
                ],
            ),
        ),
        (
            "noise-101",
            run_result(
                Noise,
                101,
                3,
                &[
                    ("original", v(0.02, 0.5, 1.0)),
                    ("first_order", v(0.06, 0.7, 0.9)),
                    ("retrain", v(0.01, 0.5, 0.6)),
                ],
            ),
        ),
    ]
}

#[test]
fn original_table_matches_hand_computation() {
    let dir = tempfile::tempdir().unwrap();
    write_runs(dir.path(), &standard_runs());
    let written = report::write_report(dir.path(), dir.path()).unwrap();
    assert_eq!((written.runs, written.groups), (5, 1));
    let r = read_report(dir.path());
    let g = &r.groups[0];
    assert_eq!(g.headline_state, "first_order");
    assert_eq!(g.label, "all runs");
    let rows: Vec<&str> = g.headline.iter().map(|h| h.modality.as_str()).collect();
    assert_eq!(
        rows,
        ["random", "noise"],
        "only present modalities, in table order"
    );

    // random ECE after TS: 0.01, 0.02, 0.03 → mean 0.02; deviations ±0.01, 0
    // → var 0.0002/3 → pop std 0.00816496580927726.
    assert_stat(&g.headline[0].ece, 0.02, 0.008_164_965_809_277_26, 3);
    // random Brier after TS: 0.40, 0.41, 0.45 → mean 0.42; deviations
    // −0.02, −0.01, 0.03 → var 0.0014/3 → pop std 0.0216024689946929.
    assert_stat(&g.headline[0].brier, 0.42, 0.021_602_468_994_692_9, 3);
    // noise ECE: 0.04, 0.06 → mean 0.05, std 0.01; Brier 0.6, 0.7 → 0.65, 0.05.
    assert_stat(&g.headline[1].ece, 0.05, 0.01, 2);
    assert_stat(&g.headline[1].brier, 0.65, 0.05, 2);

    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(
        md.contains(
            "| random | 3 | 0.0200 ± 0.0082 | 0.4200 ± 0.0216 | 0.0154 ± 0.0025 | 0.4118 ± 0.0181 |"
        ),
        "{md}"
    );
    assert!(md.contains("| Gaussian noise | 2 | 0.0500 ± 0.0100 | 0.6500 ± 0.0500 | 0.0184 ± 0.0003 | 0.4268 ± 0.0263 |"), "{md}");
    assert!(
        !md.contains("| modified labels |"),
        "no label runs, no label row"
    );
    assert!(md.contains("original study's ECE"));
    assert!(md.contains("protocol `corrected` · `train_on = modified` · width 8 · 3 epochs · 640 training images"), "{md}");

    // The extended view: original → first_order change of ECE after TS,
    // random: 0.01−0.010, 0.02−0.012, 0.03−0.014 = 0, 0.008, 0.016 → mean
    // 0.008, pop std sqrt((0.008² + 0 + 0.008²)/3) = 0.00653197264742181.
    let random = &g.modalities[0];
    let fo = random
        .states
        .iter()
        .find(|s| s.state == "first_order")
        .unwrap();
    assert_stat(
        &fo.minus_original["ece_after_ts"],
        0.008,
        0.006_531_972_647_421_81,
        3,
    );
    // ECE before TS is 3× after: 0.03, 0.06, 0.09 → mean 0.06.
    assert!(close(fo.metrics["ece_before_ts"].mean, 0.06));
    // NLL = 2 × Brier; adaptive ECE = 1.5 × ECE; T = 1.5 everywhere.
    assert!(close(fo.metrics["nll_after_ts"].mean, 0.84));
    assert!(close(fo.metrics["adaptive_ece_after_ts"].mean, 0.03));
    assert_stat(&fo.metrics["temperature"], 1.5, 0.0, 3);
    // Forget accuracy 0.9, 0.8, 0.7 → 0.8 ± 0.0816496580927726.
    assert_stat(
        &fo.metrics["accuracy_forget"],
        0.8,
        0.081_649_658_092_772_6,
        3,
    );
    let states: Vec<&str> = random.states.iter().map(|s| s.state.as_str()).collect();
    assert_eq!(states, ["original", "first_order", "retrain"]);
    assert!(md.contains("### Gap to `retrain`"));
    assert!(md.contains("### Change from `original`"));

    // Pooled reliability: bin 9 of three runs, 90 each → 270; bin 5 → 30.
    assert_eq!(fo.reliability_after_ts.bins[9].count, 270);
    assert_eq!(fo.reliability_after_ts.bins[5].count, 30);
    assert_eq!(fo.reliability_after_ts.n, 300);
}

#[test]
fn falls_back_to_original_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<(&str, RunResult)> = [100, 101]
        .into_iter()
        .map(|seed| {
            let name = if seed == 100 { "a" } else { "b" };
            let ece = if seed == 100 { 0.01 } else { 0.03 };
            (
                name,
                run_result(
                    ModalityKind::Label,
                    seed,
                    3,
                    &[
                        ("original", v(ece, 0.5, 1.0)),
                        ("retrain", v(0.0, 0.4, 0.5)),
                    ],
                ),
            )
        })
        .collect();
    write_runs(dir.path(), &runs);
    report::write_report(dir.path(), dir.path()).unwrap();
    let r = read_report(dir.path());
    assert_eq!(r.groups[0].headline_state, "original");
    // 0.01, 0.03 → 0.02 ± 0.01.
    assert_stat(&r.groups[0].headline[0].ece, 0.02, 0.01, 2);
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(
        md.contains("No run in this group has a `first_order` state"),
        "{md}"
    );
    assert!(
        md.contains("| modified labels | 2 | 0.0200 ± 0.0100 |"),
        "{md}"
    );
}

#[test]
fn grouping_keeps_different_configs_apart() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for (i, (epochs, ece)) in [(3, 0.01), (3, 0.03), (8, 0.10), (8, 0.20)]
        .into_iter()
        .enumerate()
    {
        let seed = 100 + (i as u64 % 2);
        let name: &'static str = ["e3-100", "e3-101", "e8-100", "e8-101"][i];
        runs.push((
            name,
            run_result(
                ModalityKind::Random,
                seed,
                epochs,
                &[
                    ("original", v(0.0, 0.3, 1.0)),
                    ("first_order", v(ece, 0.4, 0.9)),
                ],
            ),
        ));
    }
    write_runs(dir.path(), &runs);
    let written = report::write_report(dir.path(), dir.path()).unwrap();
    assert_eq!(written.groups, 2);
    let r = read_report(dir.path());
    let labels: Vec<&str> = r.groups.iter().map(|g| g.label.as_str()).collect();
    assert_eq!(labels, ["train.epochs=3", "train.epochs=8"]);
    // Never pooled: 0.01, 0.03 → 0.02 ± 0.01 and 0.10, 0.20 → 0.15 ± 0.05
    // (pooling all four would give 0.085).
    assert_stat(&r.groups[0].headline[0].ece, 0.02, 0.01, 2);
    assert_stat(&r.groups[1].headline[0].ece, 0.15, 0.05, 2);
    assert_eq!(r.groups[1].setup.epochs, 8);
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(md.contains("## Group g1: train.epochs=3"));
    assert!(md.contains("## Group g2: train.epochs=8"));
    // Figures of each group in their own folder, linked relatively.
    assert!(dir.path().join("figures/g2/ece_brier.png").is_file());
    assert!(md.contains("](figures/g2/ece_brier.png)"));
}

#[test]
fn retrain_gap_is_paired_by_seed() {
    let dir = tempfile::tempdir().unwrap();
    // File names sort in a different order than seeds, and seed 103 has no
    // retrain state. first_order ECE 0.05, 0.01, 0.03, 0.09 (seeds 100–103),
    // retrain 0.04, 0.00, 0.02 (seeds 100–102): paired differences are
    // 0.01, 0.01, 0.01 → mean 0.01, std 0. Pairing by position after sorting
    // the values would give a non-zero std.
    let fo = [0.05, 0.01, 0.03, 0.09];
    let rt = [0.04, 0.00, 0.02];
    let names = ["z", "y", "x", "w"];
    let runs: Vec<(&str, RunResult)> = (0..4)
        .map(|i| {
            let states = [
                ("original", v(0.0, 0.3, 1.0)),
                ("first_order", v(fo[i], 0.4 + i as f64 * 0.01, 0.9)),
                ("retrain", v(rt.get(i).copied().unwrap_or(0.0), 0.35, 0.6)),
            ];
            let mut run = run_result(ModalityKind::Random, 100 + i as u64, 3, &states);
            if i == 3 {
                // Same config (retrain listed), but its retrain state is absent.
                run.states.retain(|s| s.name != "retrain");
            }
            (names[i], run)
        })
        .collect();
    write_runs(dir.path(), &runs);
    report::write_report(dir.path(), dir.path()).unwrap();
    let r = read_report(dir.path());
    let m = &r.groups[0].modalities[0];
    let seeds: Vec<u64> = m.runs.iter().map(|r| r.seed).collect();
    assert_eq!(seeds, [100, 101, 102, 103]);
    let first_order = m.states.iter().find(|s| s.state == "first_order").unwrap();
    assert_eq!(first_order.seeds, [100, 101, 102, 103]);
    assert_stat(&first_order.minus_retrain["ece_after_ts"], 0.01, 0.0, 3);
    // Brier 0.40, 0.41, 0.42 minus 0.35 → 0.05, 0.06, 0.07 → 0.06 ± 0.0081650.
    assert_stat(
        &first_order.minus_retrain["brier_after_ts"],
        0.06,
        0.008_164_965_809_277_26,
        3,
    );
    // Forget accuracy 0.9 − 0.6 = 0.3 each.
    assert_stat(&first_order.minus_retrain["accuracy_forget"], 0.3, 0.0, 3);
    // Only these three metrics are compared with retrain.
    assert_eq!(first_order.minus_retrain.len(), 3);
    let retrain = m.states.iter().find(|s| s.state == "retrain").unwrap();
    assert!(retrain.minus_retrain.is_empty());
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(md.contains("| random | `first_order` | 3 | +0.0100 ± 0.0000 | +0.0600 ± 0.0082 | +0.3000 ± 0.0000 |"), "{md}");
}

/// SalUn's "Avg. Gap" on a hand-built pair of seeds: per seed the mean of
/// |UA|, |RA|, |TA| and |MIA-efficacy| gaps to retrain, then mean ± std; and
/// the calibration gap (|ECE after TS − retrain's|).
#[test]
fn avg_gap_to_retrain_on_a_hand_built_pair() {
    let dir = tempfile::tempdir().unwrap();
    // (UA, RA, TA, MIA-efficacy) per seed for first_order and retrain.
    let fo = [(0.10, 0.90, 0.80, 0.20), (0.15, 0.92, 0.79, 0.25)];
    let rt = [(0.30, 0.85, 0.82, 0.50), (0.25, 0.90, 0.80, 0.45)];
    let set = |run: &mut RunResult, name: &str, (ua, ra, ta, mia): (f64, f64, f64, f64)| {
        let m = &mut run
            .states
            .iter_mut()
            .find(|s| s.name == name)
            .unwrap()
            .metrics;
        m.forget.uncalibrated.accuracy = 1.0 - ua;
        m.retain.uncalibrated.accuracy = ra;
        m.evaluation.uncalibrated.accuracy = ta;
        m.efficacy = Some(Efficacy {
            ua,
            ra,
            ta,
            mia_efficacy: [("confidence".to_string(), mia)].into(),
            loss_auc: 0.5,
            loss_auc_heldout: 100,
        });
    };
    let runs: Vec<(&str, RunResult)> = (0..2)
        .map(|i| {
            let states = [
                ("original", v(0.0, 0.3, 1.0)),
                ("first_order", v(0.05 + 0.01 * i as f64, 0.4, 0.9)),
                ("retrain", v(0.02, 0.35, 0.6)),
            ];
            let mut run = run_result(ModalityKind::Random, 100 + i as u64, 3, &states);
            set(&mut run, "first_order", fo[i]);
            set(&mut run, "retrain", rt[i]);
            (["a", "b"][i], run)
        })
        .collect();
    write_runs(dir.path(), &runs);
    report::write_report(dir.path(), dir.path()).unwrap();
    let r = read_report(dir.path());
    let m = &r.groups[0].modalities[0];
    let first_order = m.states.iter().find(|s| s.state == "first_order").unwrap();
    let gap = &first_order.gap_to_retrain;
    // Seed 100: gaps 0.20, 0.05, 0.02, 0.30 → mean 0.1425;
    // seed 101: 0.10, 0.02, 0.01, 0.20 → 0.0825; so 0.1125 ± 0.03.
    assert_stat(&gap["avg_gap"], 0.1125, 0.03, 2);
    assert_stat(&gap["ua"], 0.15, 0.05, 2);
    assert_stat(&gap["mia_efficacy"], 0.25, 0.05, 2);
    // ECE after TS 0.05 and 0.06 against 0.02 → 0.03, 0.04.
    assert_stat(&gap["ece_after_ts"], 0.035, 0.005, 2);
    assert_stat(&first_order.metrics["mia_efficacy"], 0.225, 0.025, 2);
    let retrain = m.states.iter().find(|s| s.state == "retrain").unwrap();
    assert!(retrain.gap_to_retrain.is_empty());
    // The original state has no efficacy block: MIA-efficacy is left out,
    // UA/RA/TA still come from the accuracies, and so no Avg. Gap.
    let original = m.states.iter().find(|s| s.state == "original").unwrap();
    assert!(!original.metrics.contains_key("mia_efficacy"));
    assert!(original.metrics.contains_key("ua"));
    assert!(!original.gap_to_retrain.contains_key("avg_gap"));
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(md.contains("### Unlearning efficacy"), "{md}");
    // What computed the runs is in the setup line.
    assert!(md.contains("computed with `muq/x86-64` (2 runs)"), "{md}");
    assert!(
        md.contains("| `first_order` | 2 | 0.1250 ± 0.0250 | 0.9100 ± 0.0100 | 0.7950 ± 0.0050 | 0.2250 ± 0.0250 | 0.5000 ± 0.0000 | 0.1125 ± 0.0300 |"),
        "{md}"
    );
}

#[test]
fn csv_parses_back_to_the_same_numbers() {
    let dir = tempfile::tempdir().unwrap();
    write_runs(dir.path(), &standard_runs());
    report::write_report(dir.path(), dir.path()).unwrap();
    // The report as computed (exact), and as summary.json holds it (serde_json
    // may read a decimal back one ulp off, hence the tolerance there).
    let r = report::build_report(&report::load_results(dir.path()).unwrap()).unwrap();
    let json = read_report(dir.path());
    let mut rdr = csv::Reader::from_path(dir.path().join("summary.csv")).unwrap();
    assert_eq!(
        rdr.headers().unwrap().iter().collect::<Vec<_>>(),
        report::CSV_HEADER
    );
    let mut rows = 0;
    for rec in rdr.records() {
        let rec = rec.unwrap();
        let g = r.groups.iter().find(|g| g.id == rec[0]).unwrap();
        assert_eq!(g.label, &rec[1]);
        let m = g.modalities.iter().find(|m| m.modality == rec[2]).unwrap();
        let s = m.states.iter().find(|s| s.state == rec[3]).unwrap();
        let map = match &rec[4] {
            "value" => &s.metrics,
            "minus_original" => &s.minus_original,
            "minus_retrain" => &s.minus_retrain,
            "gap_to_retrain" => &s.gap_to_retrain,
            other => panic!("unknown quantity {other}"),
        };
        let stat = map[&rec[5]];
        // Exact: the CSV holds the shortest decimal that reads back to the f64.
        assert_eq!(rec[6].parse::<f64>().unwrap(), stat.mean);
        assert_eq!(rec[7].parse::<f64>().unwrap(), stat.std);
        assert_eq!(rec[8].parse::<usize>().unwrap(), stat.n);
        rows += 1;
    }
    // Every number of the JSON is in the CSV: per state, all metrics, plus
    // the paired differences.
    let expected: usize = r
        .groups
        .iter()
        .flat_map(|g| &g.modalities)
        .flat_map(|m| &m.states)
        .map(|s| {
            s.metrics.len()
                + s.minus_original.len()
                + s.minus_retrain.len()
                + s.gap_to_retrain.len()
        })
        .sum();
    assert_eq!(rows, expected);
    // 2 modalities × 3 states × 21 metrics (these results have no efficacy
    // block, so no MIA-efficacy or loss AUC) + minus_original (2 × 2 states
    // × 21) + minus_retrain (2 × 2 states × 3) + gap_to_retrain (2 × 2
    // states × 5: UA, RA, TA, ECE, Brier; no MIA, so no Avg. Gap).
    assert_eq!(rows, 2 * 3 * 21 + 2 * 2 * 21 + 2 * 2 * 3 + 2 * 2 * 5);
    // summary.json holds the same numbers, structured the same way.
    let states = |r: &Report| -> Vec<StateReportFlat> {
        r.groups
            .iter()
            .flat_map(|g| &g.modalities)
            .flat_map(|m| &m.states)
            .map(|s| {
                (
                    s.state.clone(),
                    s.metrics.clone(),
                    s.minus_original.clone(),
                    s.minus_retrain.clone(),
                )
            })
            .collect()
    };
    let (exact, read) = (states(&r), states(&json));
    assert_eq!(exact.len(), read.len());
    for (a, b) in exact.iter().zip(&read) {
        assert_eq!(a.0, b.0);
        for (ma, mb) in [(&a.1, &b.1), (&a.2, &b.2), (&a.3, &b.3)] {
            assert_eq!(ma.keys().collect::<Vec<_>>(), mb.keys().collect::<Vec<_>>());
            for (k, x) in ma {
                let y = mb[k];
                assert!(
                    (x.mean - y.mean).abs() <= 1e-15 * x.mean.abs().max(1.0),
                    "{k}"
                );
                assert!((x.std - y.std).abs() <= 1e-15 * x.std.abs().max(1.0), "{k}");
                assert_eq!(x.n, y.n);
            }
        }
    }
}

type StatMap = BTreeMap<String, Stat>;
type StateReportFlat = (String, StatMap, StatMap, StatMap);

#[test]
fn figures_exist_and_are_nonempty() {
    let dir = tempfile::tempdir().unwrap();
    write_runs(dir.path(), &standard_runs());
    let written = report::write_report(dir.path(), dir.path()).unwrap();
    // One chart + 2 modalities × 3 states reliability diagrams, PNG and SVG.
    assert_eq!(written.figures.len(), 2 * (1 + 2 * 3));
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    for f in &written.figures {
        let bytes = std::fs::read(f).unwrap();
        assert!(bytes.len() > 1000, "{} is nearly empty", f.display());
        let rel = f
            .strip_prefix(dir.path())
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        assert!(
            md.contains(&format!("({rel})")),
            "{rel} is not linked from summary.md"
        );
        match f.extension().and_then(|e| e.to_str()) {
            Some("png") => assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n"),
            Some("svg") => assert!(String::from_utf8(bytes).unwrap().contains("<svg")),
            other => panic!("unexpected figure {other:?}"),
        }
    }
    assert!(
        dir.path()
            .join("figures/reliability-noise-retrain.png")
            .is_file()
    );
    assert!(dir.path().join("figures/ece_brier.svg").is_file());
    // No temporary files left behind.
    for e in std::fs::read_dir(dir.path().join("figures")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp"), "leftover {name}");
    }
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    files
}

#[test]
fn running_twice_gives_byte_identical_files() {
    let results = tempfile::tempdir().unwrap();
    write_runs(results.path(), &standard_runs());
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    report::write_report(results.path(), a.path()).unwrap();
    report::write_report(results.path(), b.path()).unwrap();
    let (sa, sb) = (snapshot(a.path()), snapshot(b.path()));
    assert!(sa.contains_key(Path::new("summary.md")));
    assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
    for (k, bytes) in &sa {
        assert!(bytes == &sb[k], "{} differs between two runs", k.display());
    }
    // And again into the same folder: nothing changes.
    report::write_report(results.path(), a.path()).unwrap();
    assert!(snapshot(a.path()) == sa);
}

#[test]
fn directory_without_results_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("runs/empty")).unwrap();
    let err = report::write_report(dir.path(), dir.path()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("no result.json"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    let missing = dir.path().join("nope");
    let msg = format!(
        "{:#}",
        report::write_report(&missing, dir.path()).unwrap_err()
    );
    assert!(
        msg.contains(&missing.display().to_string()) && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn malformed_result_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_runs(dir.path(), &standard_runs()[..1]);
    let bad = dir.path().join("runs/broken/result.json");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    std::fs::write(&bad, b"{\"schema\": 1, \"run_id\": ").unwrap();
    let msg = format!(
        "{:#}",
        report::write_report(dir.path(), dir.path()).unwrap_err()
    );
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(!dir.path().join("summary.md").exists(), "no partial report");
}

#[test]
fn duplicate_runs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let runs = standard_runs();
    write_runs(dir.path(), &[runs[0].clone(), ("copy", runs[0].1.clone())]);
    let msg = format!(
        "{:#}",
        report::write_report(dir.path(), dir.path()).unwrap_err()
    );
    assert!(
        msg.contains("runs/copy/result.json") && msg.contains("runs/random-100/result.json"),
        "{msg}"
    );
}

#[test]
fn binary_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    write_runs(dir.path(), &standard_runs());
    let out = dir.path().join("report");
    let output = Command::new(env!("CARGO_BIN_EXE_muq"))
        .arg("report")
        .arg(dir.path())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("5 runs in 1 group"));
    for f in [
        "summary.md",
        "summary.csv",
        "summary.json",
        "figures/ece_brier.png",
        "figures/reliability-random-first_order.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // The default output directory is the results directory.
    let output = Command::new(env!("CARGO_BIN_EXE_muq"))
        .arg("report")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        std::fs::read(dir.path().join("summary.md")).unwrap(),
        std::fs::read(out.join("summary.md")).unwrap()
    );
    // An empty directory fails with a message naming it.
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_muq"))
        .arg("report")
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no result.json") && stderr.contains(&empty.path().display().to_string()),
        "{stderr}"
    );
}

/// A training log of `epochs` epochs: loss `l0 / e`, accuracy `a0 · e`,
/// 10 s per epoch.
fn training_log(l0: f64, a0: f64, epochs: usize) -> TrainReport {
    TrainReport {
        epochs: (1..=epochs)
            .map(|e| muq_resnet::EpochStats {
                epoch: e,
                loss: l0 / e as f64,
                accuracy: a0 * e as f64,
                seconds: 10.0,
                steps: 5,
            })
            .collect(),
        seconds: 10.0 * epochs as f64,
        resumed_at: Vec::new(),
    }
}

#[test]
fn training_log_counts_each_shared_base_model_once() {
    use ModalityKind::{Noise, Random};
    let states = [("original", v(0.01, 0.3, 1.0))];
    let mut r100 = run_result(Random, 100, 2, &states);
    let mut r101 = run_result(Random, 101, 2, &states);
    // The noise run of seed 100 trained on clean data: the same cached
    // model, hence the same log, as the random run of seed 100.
    let mut n100 = run_result(Noise, 100, 2, &states);
    r100.training = training_log(2.0, 0.2, 2);
    r101.training = training_log(1.0, 0.3, 2);
    n100.training = training_log(2.0, 0.2, 2);
    let dir = std::env::temp_dir().join(format!("muq-report-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_runs(
        &dir,
        &[
            ("random-100", r100),
            ("random-101", r101),
            ("noise-100", n100),
        ],
    );
    report::write_report(&dir, &dir.join("out")).unwrap();
    let rep = read_report(&dir.join("out"));
    let rows = &rep.groups[0].training;
    assert_eq!(rows.len(), 2);
    // Epoch 1: losses 2.0 and 1.0 → mean 1.5, std 0.5; accuracies 0.2 and
    // 0.3 → 0.25 ± 0.05. Epoch 2: losses 1.0, 0.5 → 0.75 ± 0.25; accuracies
    // 0.4, 0.6 → 0.5 ± 0.1. Two models, not three.
    assert_eq!(rows[0].epoch, 1);
    assert_stat(&rows[0].loss, 1.5, 0.5, 2);
    assert_stat(&rows[0].accuracy, 0.25, 0.05, 2);
    assert_stat(&rows[1].loss, 0.75, 0.25, 2);
    assert_stat(&rows[1].accuracy, 0.5, 0.1, 2);
    assert_stat(&rows[1].seconds, 10.0, 0.0, 2);
    let md = std::fs::read_to_string(dir.join("out/summary.md")).unwrap();
    assert!(md.contains("### Base-model training"), "{md}");
    assert!(
        md.contains("| 1 | 2 | 1.5000 ± 0.5000 | 0.2500 ± 0.0500 | 10 ± 0 | ≈ 0.48 |"),
        "{md}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// ------------------------------------------------------------ recalibrators

/// Metrics of one split after a recalibrator: ECE `ece`, smooth ECE
/// `ece + 0.001`, Brier `brier`, NLL `nll`, accuracy 0.8; the others
/// derived.
fn prob(ece: f64, brier: f64, nll: f64) -> ProbMetrics {
    ProbMetrics {
        accuracy: 0.8,
        ece,
        smooth_ece: ece + 0.001,
        debiased_l2_ce: ece / 2.0,
        rms_ce: 1.2 * ece,
        mce: 2.0 * ece,
        brier,
        nll,
        saturated: 0,
    }
}

/// A recalibrator's result: the evaluation half as given, the forget set
/// with 10× the ECE, the retain sample as the evaluation half.
fn recal(ece: f64, brier: f64, nll: f64) -> RecalibratorResult {
    RecalibratorResult {
        fit: FitDiagnostics::default(),
        evaluation: prob(ece, brier, nll),
        forget: prob(10.0 * ece, brier, nll),
        retain: prob(ece, brier, nll),
        reliability: diagram(90, 0.9),
        bootstrap: BTreeMap::new(),
    }
}

/// A run with `ts` and `iso` in every state: uncalibrated ECE 0.1, `ts`
/// ECE `ts_ece`, `iso` ECE `iso_ece` with NLL `iso_nll`.
fn recalibrated_run(seed: u64, ts_ece: f64, iso_ece: f64, iso_nll: f64) -> RunResult {
    let mut r = run_result(
        ModalityKind::Random,
        seed,
        3,
        &[
            ("original", v(0.01, 0.3, 1.0)),
            ("first_order", v(0.02, 0.4, 0.9)),
        ],
    );
    r.config.eval.recalibrators = vec![muq_calibrate::Method::Ts, muq_calibrate::Method::Iso];
    for s in &mut r.states {
        let uncal = prob(0.1, 0.5, 1.0);
        s.metrics.recalibration = Some(Recalibration {
            uncalibrated: SplitMetrics {
                evaluation: uncal,
                forget: uncal,
                retain: uncal,
            },
            uncalibrated_bootstrap: BTreeMap::new(),
            methods: [
                ("iso".to_string(), recal(iso_ece, 0.42, iso_nll)),
                ("ts".to_string(), recal(ts_ece, 0.45, 0.9)),
            ]
            .into_iter()
            .collect(),
        });
    }
    r
}

#[test]
fn recalibrator_table_appears_with_recalibrators_only() {
    // Without recalibrators: no table, no figure, no CSV rows.
    let plain = tempfile::tempdir().unwrap();
    write_runs(plain.path(), &standard_runs());
    let written = report::write_report(plain.path(), plain.path()).unwrap();
    let md = std::fs::read_to_string(plain.path().join("summary.md")).unwrap();
    assert!(!md.contains("after each recalibrator"), "{md}");
    assert!(
        written
            .figures
            .iter()
            .all(|f| !f.to_string_lossy().contains("recalibrated"))
    );
    let json = std::fs::read_to_string(plain.path().join("summary.json")).unwrap();
    assert!(!json.contains("recalibrated"));

    // Two seeds with `ts` and `iso`; iso's NLL is infinite in one of them.
    let dir = tempfile::tempdir().unwrap();
    write_runs(
        dir.path(),
        &[
            ("random-100", recalibrated_run(100, 0.03, 0.01, 1.1)),
            (
                "random-101",
                recalibrated_run(101, 0.05, 0.03, f64::INFINITY),
            ),
        ],
    );
    let written = report::write_report(dir.path(), dir.path()).unwrap();
    let r = read_report(dir.path());
    let st = &r.groups[0].modalities[0].states[1];
    assert_eq!(st.state, "first_order");
    let names: Vec<&str> = st.recalibrated.iter().map(|x| x.method.as_str()).collect();
    // The softmax first, then the methods in their canonical order (not
    // alphabetical: ts before iso).
    assert_eq!(names, ["uncalibrated", "ts", "iso"]);
    let [uncal, ts, iso] = &st.recalibrated[..] else {
        unreachable!()
    };
    assert_eq!(uncal.seeds, [100, 101]);
    assert_stat(&uncal.metrics["ece"], 0.1, 0.0, 2);
    // ts: ECE (0.03 + 0.05) / 2 = 0.04, std 0.01; smooth ECE + 0.001.
    assert_stat(&ts.metrics["ece"], 0.04, 0.01, 2);
    assert_stat(&ts.metrics["smooth_ece"], 0.041, 0.01, 2);
    assert_stat(&ts.metrics["brier"], 0.45, 0.0, 2);
    assert_stat(&ts.metrics["nll"], 0.9, 0.0, 2);
    // Forget set: 10 × ECE, so 0.4 ± 0.1.
    assert_stat(&ts.metrics["ece_forget"], 0.4, 0.1, 2);
    // iso: ECE 0.02 ± 0.01; the NLL is infinite in one run, so left out.
    assert_stat(&iso.metrics["ece"], 0.02, 0.01, 2);
    assert_stat(&iso.metrics["debiased_l2_ce"], 0.01, 0.005, 2);
    assert!(!iso.metrics.contains_key("nll"), "{:?}", iso.metrics);
    // Pooled reliability: two runs of 100 predictions.
    assert_eq!(iso.reliability.n, 200);

    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(
        md.contains("### ECE / smooth ECE / Brier after each recalibrator"),
        "{md}"
    );
    for row in [
        "| `first_order` | uncalibrated | 2 | 0.8000 ± 0.0000 | 0.1000 ± 0.0000 | 0.1010 ± 0.0000 | 0.5000 ± 0.0000 |",
        "| `first_order` | `ts` | 2 | 0.8000 ± 0.0000 | 0.0400 ± 0.0100 | 0.0410 ± 0.0100 | 0.4500 ± 0.0000 |",
        "| `first_order` | `iso` | 2 | 0.8000 ± 0.0000 | 0.0200 ± 0.0100 | 0.0210 ± 0.0100 | 0.4200 ± 0.0000 |",
        "| `original` | `ts` | 2 |",
    ] {
        assert!(md.contains(row), "no row {row} in\n{md}");
    }

    // CSV rows: quantity `after_<method>` (or `uncalibrated`), the metric.
    let csv = std::fs::read_to_string(dir.path().join("summary.csv")).unwrap();
    let mut rdr = csv::Reader::from_reader(csv.as_bytes());
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    let find = |quantity: &str, metric: &str| {
        rows.iter()
            .find(|r| &r[3] == "first_order" && &r[4] == quantity && &r[5] == metric)
            .map(|r| (r[6].parse::<f64>().unwrap(), r[7].parse::<f64>().unwrap()))
    };
    let (mean, std) = find("after_iso", "ece").expect("an after_iso ece row");
    assert!(close(mean, 0.02) && close(std, 0.01));
    assert!(find("after_ts", "brier_retain").is_some());
    assert!(find("uncalibrated", "ece").is_some());
    assert!(find("after_iso", "nll").is_none());

    // One more figure per state, PNG and SVG, linked from summary.md:
    // chart + 2 states × (reliability + recalibrated).
    assert_eq!(written.figures.len(), 2 * (1 + 2 * 2));
    for stem in [
        "recalibrated-random-original",
        "recalibrated-random-first_order",
    ] {
        for ext in ["png", "svg"] {
            let rel = format!("figures/{stem}.{ext}");
            let bytes = std::fs::read(dir.path().join(&rel)).unwrap();
            assert!(bytes.len() > 1000, "{rel} is nearly empty");
            assert!(md.contains(&format!("({rel})")), "{rel} not linked");
        }
    }
}

/// An averaged distribution (ensemble or MC dropout) whose uncalibrated
/// ECE is `uncal_ece` and whose `ts` ECE is `ts_ece`.
fn averaged(uncal_ece: f64, ts_ece: f64) -> Averaged {
    let uncal = prob(uncal_ece, 0.4, 1.0);
    Averaged {
        temperature: TemperatureFit {
            temperature: 1.2,
            nll_before: 1.0,
            nll_after: 0.9,
            iterations: 5,
            converged: true,
            gradient: 0.0,
        },
        evaluation: summary(0.85, ts_ece, 0.4),
        forget: Some(summary(0.85, ts_ece, 0.4)),
        retain: Some(summary(0.85, ts_ece, 0.4)),
        reliability: Some(Reliability {
            before_ts: diagram(90, 0.9),
            after_ts: diagram(90, 0.9),
        }),
        recalibration: Some(Recalibration {
            uncalibrated: SplitMetrics {
                evaluation: uncal,
                forget: uncal,
                retain: uncal,
            },
            uncalibrated_bootstrap: BTreeMap::new(),
            methods: [("ts".to_string(), recal(ts_ece, 0.38, 0.9))]
                .into_iter()
                .collect(),
        }),
    }
}

#[test]
fn ensemble_and_mc_dropout_get_their_own_table_and_csv_rows() {
    // Without either: no table.
    let plain = tempfile::tempdir().unwrap();
    write_runs(plain.path(), &standard_runs());
    report::write_report(plain.path(), plain.path()).unwrap();
    let md = std::fs::read_to_string(plain.path().join("summary.md")).unwrap();
    assert!(!md.contains("Uncertainty baselines"), "{md}");

    // One seed: the model with `ts` and `iso`, an ensemble of 3 and MC
    // dropout; the ensemble's `ts` entry carries bootstrap intervals.
    let mut r = recalibrated_run(100, 0.03, 0.01, 1.1);
    for s in &mut r.states {
        let mut ensemble = averaged(0.02, 0.015);
        if let Some(rc) = &mut ensemble.recalibration {
            let ci = |estimate, lower, upper| ConfidenceInterval {
                estimate,
                lower,
                upper,
                level: 0.95,
                resamples: 200,
            };
            rc.methods.get_mut("ts").unwrap().bootstrap = [
                ("ece_minus_ts".to_string(), ci(0.0, 0.0, 0.0)),
                ("brier_minus_ts".to_string(), ci(-0.001, -0.002, 0.0005)),
            ]
            .into_iter()
            .collect();
        }
        s.metrics.ensemble = Some(Ensemble {
            seeds: vec![100, 101, 102],
            metrics: ensemble,
        });
        s.metrics.mc_dropout = Some(McDropout {
            passes: 10,
            metrics: averaged(0.05, 0.025),
        });
    }
    let dir = tempfile::tempdir().unwrap();
    write_runs(dir.path(), &[("random-100", r)]);
    report::write_report(dir.path(), dir.path()).unwrap();
    let rep = read_report(dir.path());
    let st = &rep.groups[0].modalities[0].states[1];
    assert_eq!(st.state, "first_order");
    assert_eq!(st.ensemble_members, [3]);
    let names = |rs: &[report::RecalibratedReport]| -> Vec<String> {
        rs.iter().map(|x| x.method.clone()).collect()
    };
    assert_eq!(names(&st.ensemble), ["uncalibrated", "ts"]);
    assert_eq!(names(&st.mc_dropout), ["uncalibrated", "ts"]);
    assert_stat(&st.ensemble[0].metrics["ece"], 0.02, 0.0, 1);
    assert_stat(&st.mc_dropout[1].metrics["ece"], 0.025, 0.0, 1);
    // One run: its intervals are carried into the report.
    assert_eq!(
        st.ensemble[1].bootstrap["brier_minus_ts"].lower, -0.002,
        "{:?}",
        st.ensemble[1].bootstrap
    );

    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(
        md.contains("### Uncertainty baselines: deep ensemble and MC dropout"),
        "{md}"
    );
    for row in [
        "| `first_order` | model | `ts` | 1 | 0.8000 ± 0.0000 | 0.0300 ± 0.0000 |",
        "| `first_order` | ensemble of 3 | uncalibrated | 1 | 0.8000 ± 0.0000 | 0.0200 ± 0.0000 |",
        "| `first_order` | ensemble of 3 | `ts` | 1 |",
        "| `first_order` | MC dropout | `ts` | 1 | 0.8000 ± 0.0000 | 0.0250 ± 0.0000 |",
        "| 0.0000 [0.0000, 0.0000] | -0.0010 [-0.0020, +0.0005] |",
    ] {
        assert!(md.contains(row), "no row {row} in\n{md}");
    }
    let csv = std::fs::read_to_string(dir.path().join("summary.csv")).unwrap();
    for quantity in [
        "ensemble_uncalibrated",
        "ensemble_after_ts",
        "mc_dropout_after_ts",
    ] {
        assert!(
            csv.lines()
                .any(|l| l.contains(&format!(",first_order,{quantity},ece,"))),
            "no {quantity} row in\n{csv}"
        );
    }
}
