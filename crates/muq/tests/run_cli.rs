//! End to end through the real binary: `muq run` on generated data, for every
//! modality and both protocols, asserting on result.json.

use std::path::{Path, PathBuf};
use std::process::Command;

use muq::result::RunResult;

mod common;
use common::{SMALL, dataset, muq, run, run_command, run_with};

fn check_ranges(r: &RunResult) {
    for s in &r.states {
        let m = &s.metrics;
        for set in [&m.evaluation, &m.forget, &m.retain, &m.calibration] {
            for ms in [&set.uncalibrated, &set.scaled] {
                assert!((0.0..=1.0).contains(&ms.accuracy), "{}: {ms:?}", s.name);
                assert!((0.0..=1.0).contains(&ms.ece), "{}: {ms:?}", s.name);
                assert!((0.0..=2.0).contains(&ms.brier), "{}: {ms:?}", s.name);
                assert!(ms.nll.is_finite() && ms.nll >= 0.0, "{}: {ms:?}", s.name);
            }
        }
        assert!(m.temperature.temperature > 0.0);
        // Temperature scaling never worsens the NLL of the set it was fitted on.
        assert!(m.calibration.scaled.nll <= m.calibration.uncalibrated.nll + 1e-12);
    }
}

#[test]
fn every_modality_and_protocol_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    for modality in ["random", "noise", "label"] {
        for protocol in ["corrected", "original"] {
            let out = tmp.path().join(format!("runs/{modality}-{protocol}"));
            let kind = format!("modality.kind={modality}");
            let proto = format!("protocol={protocol}");
            let r = run(&data_dir, &out, &[&kind, &proto]);
            assert_eq!(r.config.modality.kind.to_string(), modality);
            let names: Vec<&str> = r.states.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, ["original", "first_order"], "{modality}/{protocol}");
            assert_eq!(r.data.n_train, 300);
            assert_eq!(r.data.n_forget, 15);
            assert_eq!((r.data.n_calibration, r.data.n_evaluation), (100, 100));
            let expected_on = if protocol == "original" {
                "Clean"
            } else {
                "Modified"
            };
            assert_eq!(format!("{:?}", r.train_on), expected_on);
            check_ranges(&r);
            // Unlearning moved the model: the forget-set loss changed.
            let before = r.state("original").unwrap().metrics.forget.uncalibrated.nll;
            let after = r
                .state("first_order")
                .unwrap()
                .metrics
                .forget
                .uncalibrated
                .nll;
            assert_ne!(
                before, after,
                "{modality}/{protocol}: first-order changed nothing"
            );
            assert_eq!(r.training.epochs.len(), 1);
        }
    }
}

/// With BatchNorm frozen, a first-order step is gradient ascent on the forget
/// loss: for a step small enough to be in the linear regime, the forget-set
/// loss must rise. Also checks that the base model comes from the cache the
/// second time and that the result is bit-identical apart from timings.
#[test]
fn first_order_raises_the_forget_loss_and_the_cache_is_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    // ‖g‖ is ~1e3 here, so τ = 1e-5 moves θ by ~1e-2: small, but visible.
    let method = r#"unlearn=[{method="first_order", bn="frozen", tau=1e-5}]"#;
    let a = run(
        &data_dir,
        &tmp.path().join("runs/a"),
        &["modality.kind=label", method],
    );
    let before = a.state("original").unwrap().metrics.forget.uncalibrated.nll;
    let after = a
        .state("first_order")
        .unwrap()
        .metrics
        .forget
        .uncalibrated
        .nll;
    assert!(after > before, "forget NLL {before} → {after}");
    assert!(!a.timings.base_model_cached);
    let b = run(
        &data_dir,
        &tmp.path().join("runs/b"),
        &["modality.kind=label", method],
    );
    assert!(
        b.timings.base_model_cached,
        "the second run reuses the base model"
    );
    // Same config and seed → the same metrics, bit for bit (only the
    // methods' wall-clock costs differ).
    for (x, y) in a.states.iter().zip(&b.states) {
        assert_eq!((&x.name, &x.metrics), (&y.name, &y.metrics));
    }
    assert_eq!(a.run_id, b.run_id);
}

/// Base models are shared exactly when the data trained on are the same:
/// the corrected protocol's `random` run trains on unmodified data and so
/// finds the `original` protocol's clean model of its seed, while the
/// modalities that change the data, another seed, or other kernels train
/// their own. The kernels are in the provenance.
#[test]
fn base_models_are_shared_exactly_when_the_training_data_are() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    let go = |name: &str, extra: &[&str], env: &[(&str, &str)]| {
        run_with(&data_dir, &tmp.path().join("runs").join(name), extra, env)
    };
    let clean = go("original-random", &["protocol=original"], &[]);
    assert!(!clean.timings.base_model_cached);
    assert!(
        clean.provenance.compute.starts_with("muq/"),
        "{}",
        clean.provenance.compute
    );
    // The other direction first: the data-changing modalities never get
    // the clean model, under the corrected protocol.
    for kind in ["noise", "label"] {
        let r = go(kind, &[&format!("modality.kind={kind}")], &[]);
        assert!(!r.timings.base_model_cached, "{kind} trained its own model");
        assert_ne!(r.data.trained_checksum, clean.data.trained_checksum);
    }
    let random = go("corrected-random", &["modality.kind=random"], &[]);
    assert_eq!(random.train_on, muq::config::TrainOn::Modified);
    assert!(
        random.timings.base_model_cached,
        "random forgetting changes no training data: the clean model is reused"
    );
    assert_eq!(random.data.trained_checksum, clean.data.trained_checksum);
    assert_eq!(random.training, clean.training);
    // The original protocol's noise run trains on clean data too.
    let noise_original = go(
        "original-noise",
        &["protocol=original", "modality.kind=noise"],
        &[],
    );
    assert!(noise_original.timings.base_model_cached);
    // Another seed, or other kernels, is another model.
    assert!(!go("seed", &["seed=101"], &[]).timings.base_model_cached);
    let stock = go("stock", &["protocol=original"], &[("MUQ_KERNELS", "stock")]);
    assert!(
        !stock.timings.base_model_cached,
        "stock kernels train their own model"
    );
    assert!(
        stock.provenance.compute.starts_with("stock/"),
        "{}",
        stock.provenance.compute
    );
}

/// Class-wise forgetting end to end: the forget set is one whole class,
/// both test halves leave that class out, the base model is the clean one,
/// and every state carries the efficacy block (UA/RA/TA from the same
/// accuracies as the summaries, an MIA-efficacy and a loss AUC in [0, 1]).
#[test]
fn class_modality_and_efficacy_metrics_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    let r = run(
        &data_dir,
        &tmp.path().join("runs/class"),
        &[
            "modality.kind=class",
            "modality.class=2",
            "eval.mia_features=[\"confidence\", \"entropy\"]",
        ],
    );
    assert_eq!(r.data.forgotten_class, Some(2));
    // 300 synthetic training images, 30 of class 2; 200 test images, 20 of
    // class 2, so 180 in the two halves together.
    assert_eq!(r.data.n_forget, 30);
    assert_eq!(r.data.n_calibration + r.data.n_evaluation, 180);
    for s in &r.states {
        let m = &s.metrics;
        let e = m.efficacy.as_ref().expect("efficacy measured");
        assert_eq!(e.ua, 1.0 - m.forget.uncalibrated.accuracy);
        assert_eq!(e.ra, m.retain.uncalibrated.accuracy);
        assert_eq!(e.ta, m.evaluation.uncalibrated.accuracy);
        assert_eq!(e.mia_efficacy.len(), 2, "{:?}", e.mia_efficacy);
        for v in e.mia_efficacy.values().chain([&e.loss_auc]) {
            assert!((0.0..=1.0).contains(v), "{}: {e:?}", s.name);
        }
        assert_eq!(e.loss_auc_heldout, 30);
    }
    // A bad feature name is a config error naming the field.
    let out = muq()
        .args(["run", "--data-dir"])
        .arg(&data_dir)
        .args(["--set", "eval.mia_features=[\"confidense\"]", "--out"])
        .arg(tmp.path().join("runs/bad"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mia_features") && err.contains("confidense"),
        "{err}"
    );
}

/// Every unlearning method, the field's included, runs through `muq run`
/// with its defaults (the `benchmark` preset's list) and leaves a state
/// with its cost report, efficacy metrics and a model that moved.
#[test]
fn every_method_runs_through_muq_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    let mut names: Vec<&str> = muq_unlearn::Method::SHORT_NAMES.to_vec();
    let list: Vec<String> = names
        .iter()
        .map(|n| format!("{{method=\"{n}\"}}"))
        .collect();
    let unlearn = format!("unlearn=[{}]", list.join(", "));
    let r = run(
        &data_dir,
        &tmp.path().join("runs/all"),
        &[
            "modality.remove_prop=0.1",
            "modality.pool_prop=0.2",
            "train.epochs=3",
            &unlearn,
        ],
    );
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let mut states: Vec<&str> = r.states.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(states.remove(0), "original");
    names.sort_unstable();
    states.sort_unstable();
    assert_eq!(states, names);
    for s in &r.states[1..] {
        let report = s.report.as_ref().expect("a cost report");
        let norm = report["update_norm"].as_f64().unwrap();
        assert!(norm > 0.0, "{}: update norm {norm}", s.name);
        assert!(s.metrics.efficacy.is_some(), "{}", s.name);
        assert!(r.timings.unlearn_s.contains_key(&s.name));
    }
}

/// A method that diverges is recorded under `failed` with its error; the
/// run and its other states are kept.
#[test]
fn a_failing_method_is_recorded_and_the_others_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    let r = run(
        &data_dir,
        &tmp.path().join("runs/failing"),
        &[r#"unlearn=[{method="gradient_ascent", lr=1e12, steps=3}, {method="first_order"}]"#],
    );
    let names: Vec<&str> = r.states.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["original", "first_order"]);
    assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
    assert_eq!(r.failed[0].name, "gradient_ascent");
    assert!(
        r.failed[0].error.contains("gradient_ascent"),
        "{}",
        r.failed[0].error
    );
}

#[test]
fn config_errors_name_the_field_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    // Each error must say what is wrong, not just echo the override.
    for (set, needle) in [
        ("train.epoch=3", "unknown field `epoch`"),
        (
            "modality.remove_prop=1.5",
            "1.5 is not a proportion in (0, 1]",
        ),
        ("modality.remove_propp=0.1", "unknown field `remove_propp`"),
        ("modality.kind=blur", "unknown variant `blur`"),
        ("eval.bins=0", "`eval.bins`: 0 is not in 1..=10000"),
        ("train.on=modified", "trains on clean data; drop train.on"),
    ] {
        let mut cmd = muq();
        cmd.args(["run", "--quiet", "--set", set])
            .arg("--data-dir")
            .arg(&data_dir);
        if set.starts_with("train.on") {
            cmd.args(["--set", "protocol=original"]);
        }
        cmd.arg("--out").arg(tmp.path().join("never"));
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} should fail");
        assert!(err.contains(needle), "{set}: {err}");
        assert!(!tmp.path().join("never/result.json").exists());
    }
    // A config file with a typo'd section.
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "[modalty]\nkind = \"label\"\n").unwrap();
    let out = muq()
        .args(["run", "--quiet", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("modalty") && err.contains("bad.toml"),
        "{err}"
    );
}

#[test]
fn a_missing_data_dir_says_what_to_do() {
    let out = muq()
        .args(["run", "--quiet", "--data-dir", "/nonexistent/cifar"])
        .env_remove("CIFAR10_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--data-dir") && err.contains("CIFAR10_DIR"),
        "{err}"
    );
}

/// A damaged cache entry — truncated, emptied, or with bytes overwritten in
/// place — is found (by loading, or by its checksum), reported with its
/// path, and rebuilt: the run retrains and gives the same numbers as
/// before. The provenance names the commit the binary was built from, also
/// when `git` cannot be run.
#[test]
fn a_corrupt_cache_entry_is_found_and_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    // No `git` on PATH: the commit comes from the build.
    let first = run_with(
        &data_dir,
        &tmp.path().join("runs/first"),
        &[],
        &[("PATH", "")],
    );
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => assert_eq!(first.provenance.git_commit.as_deref(), Some(&*head)),
        None => {
            eprintln!("a_corrupt_cache_entry…: the git-commit check did not run (no git checkout)")
        }
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(tmp.path().join("runs/cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1);
    let ckpt = entries[0].join("model.safetensors");
    assert!(entries[0].join("model.safetensors.sha256").exists());
    let full = std::fs::read(&ckpt).unwrap();
    for how in ["truncated", "emptied", "overwritten"] {
        let damaged = match how {
            "truncated" => full[..full.len() / 2].to_vec(),
            "emptied" => Vec::new(),
            // Same size, loads fine: only the checksum can tell.
            _ => {
                let mut b = full.clone();
                let n = b.len();
                for x in &mut b[n - 64..] {
                    *x ^= 0x5a;
                }
                b
            }
        };
        std::fs::write(&ckpt, damaged).unwrap();
        let out = tmp.path().join(format!("runs/{how}"));
        let mut cmd = muq();
        cmd.env_remove("MUQ_KERNELS")
            .arg("run")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--out")
            .arg(&out);
        for s in SMALL {
            cmd.args(["--set", s]);
        }
        let o = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{how}: {err}");
        assert!(
            err.contains("is unusable") && err.contains(&*entries[0].display().to_string()),
            "{how}: the warning names the entry\n{err}"
        );
        let again = muq::result::read_result(&out.join("result.json")).unwrap();
        assert!(!again.timings.base_model_cached, "{how}: retrained");
        for (x, y) in first.states.iter().zip(&again.states) {
            assert_eq!((&x.name, &x.metrics), (&y.name, &y.metrics), "{how}");
        }
        assert_eq!(
            std::fs::read(&ckpt).unwrap(),
            full,
            "{how}: the entry is whole again"
        );
    }
}

/// A run killed while its base model trains continues from the training
/// state in the cache entry, and ends with the model (to the bit) and the
/// metrics of a run never interrupted; the state is gone once the entry is
/// complete.
#[test]
fn a_run_killed_while_training_continues_to_the_same_result() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    // 3 steps an epoch: the state is saved at each epoch's end, and 5
    // epochs remain when the first appears.
    let long = ["train.epochs=6", "train.batch_size=100"];
    let whole = run(&data_dir, &tmp.path().join("a/run"), &long);

    let out = tmp.path().join("b/run");
    let mut child = run_command(&data_dir, &out, &long)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cache = tmp.path().join("b/cache");
    let state = || {
        std::fs::read_dir(&cache).ok().and_then(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path().join("train-state.safetensors"))
                .find(|p| p.exists())
        })
    };
    let start = Instant::now();
    let saved = loop {
        if let Some(p) = state() {
            break p;
        }
        assert!(start.elapsed() < Duration::from_secs(600), "no state saved");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.join("result.json").exists(), "killed before the end");

    let resumed = run(&data_dir, &out, &long);
    assert!(
        !saved.exists(),
        "the state is removed once the entry is whole"
    );
    let points = &resumed.training.resumed_at;
    assert_eq!(points.len(), 1, "{points:?}");
    assert!(points[0].epoch > 1 && points[0].step == 0, "{points:?}");
    assert!(whole.training.resumed_at.is_empty());
    let epochs = |r: &RunResult| -> Vec<(usize, f64, f64)> {
        r.training
            .epochs
            .iter()
            .map(|e| (e.epoch, e.loss, e.accuracy))
            .collect()
    };
    assert_eq!(epochs(&resumed), epochs(&whole));
    for (x, y) in whole.states.iter().zip(&resumed.states) {
        assert_eq!((&x.name, &x.metrics), (&y.name, &y.metrics));
    }
    let model = |dir: &str| {
        let entry = std::fs::read_dir(tmp.path().join(dir))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        std::fs::read(entry.path().join("model.safetensors")).unwrap()
    };
    assert_eq!(
        model("a/cache"),
        model("b/cache"),
        "the same model, to the bit"
    );
}

/// `--base-model` starts from a PyTorch checkpoint (the fixture of
/// crates/resnet/tests/torch_interop.rs) instead of training, records it in
/// the provenance, and `--export-models` writes every state back in
/// PyTorch's layout: the original unchanged to the bit, the unlearned one
/// moved. A checkpoint that does not fit the config is refused before any
/// work, saying what to set.
#[test]
fn a_pytorch_model_is_unlearned_and_exported_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/torch-resnet18-w4.safetensors");
    let out = tmp.path().join("runs/byom");
    let mut cmd = muq();
    cmd.env_remove("MUQ_KERNELS")
        .arg("run")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--out")
        .arg(&out)
        .arg("--base-model")
        .arg(&fixture)
        .arg("--export-models")
        .arg("--quiet");
    for s in SMALL.iter().chain(&["model.width=4"]) {
        cmd.args(["--set", s]);
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = muq::result::read_result(&out.join("result.json")).unwrap();
    let imported = r
        .provenance
        .base_model
        .as_ref()
        .expect("provenance.base_model");
    assert_eq!(imported.model.width, 4);
    assert_eq!(imported.sha256.len(), 64);
    assert!(r.training.epochs.is_empty(), "nothing was trained");
    assert!(
        !tmp.path()
            .join("runs/cache")
            .read_dir()
            .unwrap()
            .any(|_| true)
    );
    let load = |p: &Path| candle_core::safetensors::load(p, &candle_core::Device::Cpu).unwrap();
    let source = load(&fixture);
    let original = load(&out.join("models/original.safetensors"));
    let unlearned = load(&out.join("models/first_order.safetensors"));
    let bits = |t: &candle_core::Tensor| -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    };
    let mut moved = false;
    for (name, t) in &source {
        if name.ends_with("num_batches_tracked") {
            assert!(original.contains_key(name), "{name}");
            continue;
        }
        assert_eq!(bits(t), bits(&original[name]), "{name}");
        moved |= bits(t) != bits(&unlearned[name]);
    }
    assert!(moved, "first-order unlearning changed the exported weights");
    // A checkpoint that does not fit the config: refused, saying what to set.
    let mut cmd = muq();
    cmd.arg("run")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--out")
        .arg(tmp.path().join("runs/wide"))
        .arg("--base-model")
        .arg(&fixture)
        .args(["--set", "model.width=8"]);
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--set model.width=4"), "{err}");
    // Not a checkpoint at all.
    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"not safetensors").unwrap();
    let o = muq()
        .arg("run")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--base-model")
        .arg(&junk)
        .arg("--out")
        .arg(tmp.path().join("runs/junk"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("junk.safetensors") && err.contains("cannot read safetensors"),
        "{err}"
    );
}

#[test]
fn a_deep_ensemble_and_mc_dropout_are_evaluated_per_state_with_intervals() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    let common = [
        "model.dropout=0.2",
        "eval.mc_dropout_passes=3",
        "eval.bootstrap=20",
        r#"eval.recalibrators=["ts","iso"]"#,
        r#"unlearn=[{method="first_order"},{method="random_label"}]"#,
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        common.iter().chain(extra).copied().collect::<Vec<_>>()
    };
    let r = run(
        &data_dir,
        &tmp.path().join("runs/ensemble"),
        &with(&["eval.ensemble=2"]),
    );
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert!(r.timings.ensemble_s.is_some());
    assert_eq!(r.states.len(), 3);
    let mut differs = false;
    for s in &r.states {
        let e = s.metrics.ensemble.as_ref().expect("an ensemble per state");
        assert_eq!(e.seeds, [r.seed, r.seed + 1], "{}", s.name);
        let m = &e.metrics;
        assert!(m.forget.is_some() && m.retain.is_some());
        let rc = m
            .recalibration
            .as_ref()
            .expect("the ensemble's recalibrators");
        assert_eq!(rc.methods.keys().collect::<Vec<_>>(), ["iso", "ts"]);
        // Temperature scaling through the recalibrator interface is the
        // bootstrap's reference itself: a difference of exactly 0.
        let ts = &rc.methods["ts"].bootstrap["ece_minus_ts"];
        assert_eq!((ts.estimate, ts.lower, ts.upper), (0.0, 0.0, 0.0));
        let iso = &rc.methods["iso"].bootstrap["ece"];
        assert!(
            iso.lower <= iso.estimate && iso.estimate <= iso.upper,
            "{iso:?}"
        );
        assert_eq!(iso.resamples, 20);
        differs |= m.evaluation.uncalibrated.nll != s.metrics.evaluation.uncalibrated.nll;
        // MC dropout: every split, before and after each recalibrator.
        let mc = s.metrics.mc_dropout.as_ref().expect("MC dropout");
        assert_eq!(mc.passes, 3);
        let mcr = mc.metrics.recalibration.as_ref().unwrap();
        assert!(mcr.methods.contains_key("iso") && mc.metrics.forget.is_some());
        // The single model's recalibrators carry intervals too.
        let single = s.metrics.recalibration.as_ref().unwrap();
        assert!(single.uncalibrated_bootstrap.contains_key("brier_minus_ts"));
    }
    assert!(differs, "the ensemble equals its first member");

    // Member 1 is the base model a seed-101 run trains on the same data
    // (`random` trains on unmodified data): a seed-101 run finds it in the
    // shared cache instead of training.
    let r101 = run(
        &data_dir,
        &tmp.path().join("runs/seed101"),
        &with(&["seed=101"]),
    );
    assert!(r101.timings.base_model_cached, "member 1 was not cached");
    assert!(r101.states.iter().all(|s| s.metrics.ensemble.is_none()));
}

#[test]
fn an_ensemble_is_refused_with_an_imported_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/torch-resnet18-w4.safetensors");
    let out = muq()
        .args([
            "run",
            "--quiet",
            "--set",
            "model.width=4",
            "--set",
            "eval.ensemble=3",
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--base-model")
        .arg(&fixture)
        .arg("--out")
        .arg(tmp.path().join("never"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("eval.ensemble") && err.contains("--base-model"),
        "{err}"
    );
    assert!(!tmp.path().join("never/result.json").exists());
}
