//! `muq sweep` through the real binary: stable grids, shards, kill-and-resume,
//! injected failures, and the Slurm script.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn muq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_muq"))
}

fn dataset(dir: &Path) -> PathBuf {
    let data_dir = dir.join("cifar");
    let data = muq_data::synthetic::generate(200, 100, 3);
    muq_data::write_dir(&data_dir, &data, 40).expect("write synthetic layout");
    data_dir
}

/// A tiny grid: random + label × seeds 1, 2 (4 runs).
fn grid_args(data_dir: &Path, out: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "sweep",
        "--quiet",
        "--axis",
        "modality.kind=random,label",
        "--seeds",
        "1,2",
    ]
    .map(String::from)
    .to_vec();
    for s in [
        "model.width=4",
        "train.epochs=1",
        "train.batch_size=50",
        "data.retain_eval=50",
        "eval.batch_size=100",
    ] {
        a.extend(["--set".into(), s.into()]);
    }
    a.extend(["--data-dir".into(), data_dir.display().to_string()]);
    a.extend(["--out".into(), out.display().to_string()]);
    a
}

fn plan(args: &[String], extra: &[&str]) -> Vec<(String, String)> {
    let out = muq().args(args).arg("--plan").args(extra).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[2].to_string(), f[1].to_string())
        })
        .collect()
}

fn results(out: &Path) -> BTreeSet<String> {
    std::fs::read_dir(out.join("runs"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("result.json").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn grid_ids_are_stable_and_shards_partition_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    let args = grid_args(&data_dir, &tmp.path().join("out"));
    let a = plan(&args, &[]);
    assert_eq!(a, plan(&args, &[]), "same grid, same ids");
    assert_eq!(a.len(), 4);
    let names: Vec<&str> = a.iter().map(|(n, _)| n.as_str()).collect();
    // Seeds outermost: seed 1's whole grid, then seed 2's.
    for (name, prefix) in names
        .iter()
        .zip(["random-s1-", "label-s1-", "random-s2-", "label-s2-"])
    {
        assert!(name.starts_with(prefix), "{names:?}");
    }
    // Another value of an unrelated setting gives other ids.
    let mut other = args.clone();
    other.extend(["--set".into(), "eval.bins=15".into()]);
    assert!(plan(&other, &[]).iter().all(|r| !a.contains(r)));
    // Shards are disjoint and together cover the grid.
    let mut union = Vec::new();
    for i in 0..3 {
        let s = plan(&args, &["--shard", &format!("{i}/3")]);
        union.extend(s);
    }
    union.sort();
    let mut all = a.clone();
    all.sort();
    assert_eq!(union, all);
}

#[test]
fn a_killed_sweep_resumes_without_touching_finished_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    let out = tmp.path().join("out");
    let args = grid_args(&data_dir, &out);

    // Start the sweep, wait for its first finished run, then kill it hard.
    let mut child = muq()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while results(&out).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no run finished"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("sweep ended before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let first = results(&out);
    assert!(!first.is_empty() && first.len() < 4, "{first:?}");
    let saved: Vec<(String, Vec<u8>)> = first
        .iter()
        .map(|n| {
            (
                n.clone(),
                std::fs::read(out.join("runs").join(n).join("result.json")).unwrap(),
            )
        })
        .collect();

    // Run again: the rest is computed, the finished runs are left alone.
    let status = muq().args(&args).status().unwrap();
    assert!(status.success());
    assert_eq!(results(&out).len(), 4);
    for (name, bytes) in &saved {
        assert_eq!(
            &std::fs::read(out.join("runs").join(name).join("result.json")).unwrap(),
            bytes,
            "{name} changed"
        );
    }
    assert!(
        plan(&args, &[])
            .iter()
            .all(|(_, state)| state == "finished")
    );
    assert!(
        out.join("summary.md").exists(),
        "the report is written at the end"
    );
    // No temporary files are left behind.
    for entry in walk(&out) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp"), "{}", entry.display());
    }
}

#[test]
fn failed_runs_are_recorded_and_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    let out = tmp.path().join("out");
    let args = grid_args(&data_dir, &out);
    // Inject a failure the sweep's first check (files present, whole
    // records) cannot see and every run's loading does: a label out of range.
    let test_batch = data_dir.join("test_batch.bin");
    let good = std::fs::read(&test_batch).unwrap();
    let mut bad = good.clone();
    bad[0] = 200;
    std::fs::write(&test_batch, &bad).unwrap();
    let failed = muq().args(&args).output().unwrap();
    assert!(
        !failed.status.success(),
        "a sweep with failed runs exits non-zero"
    );
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("some runs failed"), "{err}");
    let runs: Vec<PathBuf> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 4);
    for r in &runs {
        let msg = std::fs::read_to_string(r.join("error.txt")).unwrap();
        assert!(msg.contains("test_batch.bin"), "{msg}");
        assert!(!r.join("result.json").exists());
    }
    // Repair and resume: every run completes and the error files go.
    std::fs::write(&test_batch, &good).unwrap();
    assert!(muq().args(&args).status().unwrap().success());
    assert_eq!(results(&out).len(), 4);
    assert!(runs.iter().all(|r| !r.join("error.txt").exists()));
}

#[test]
fn the_slurm_script_is_valid_bash_and_runs_one_array_task() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    let out = tmp.path().join("out");
    let args = grid_args(&data_dir, &out);
    let written = muq().args(&args).arg("--slurm").output().unwrap();
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let script = out.join("sweep.sbatch");
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("#SBATCH --array=0-3"), "{text}");
    assert!(
        text.contains("--shard \"${SLURM_ARRAY_TASK_ID}/4\""),
        "{text}"
    );
    assert!(
        Command::new("bash")
            .arg("-n")
            .arg(&script)
            .status()
            .unwrap()
            .success()
    );
    assert!(results(&out).is_empty(), "--slurm runs nothing");
    // Slurm opens `--output` before the script runs, so the log folder
    // exists at submission.
    assert!(text.contains(&format!("#SBATCH --output={}/logs/", out.display())));
    assert!(out.join("logs").is_dir());

    // Array task 2 locally: exactly grid point 2 is computed.
    let status = Command::new("bash")
        .arg(&script)
        .env("SLURM_ARRAY_TASK_ID", "2")
        .status()
        .unwrap();
    assert!(status.success());
    let done = results(&out);
    let expected = plan(&args, &[])[2].0.clone();
    assert_eq!(done, BTreeSet::from([expected]));
    // Without the variable the script refuses to guess.
    let bare = Command::new("bash")
        .arg(&script)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .output()
        .unwrap();
    assert!(!bare.status.success());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// The progress line counts runs finished earlier — also those later in
/// the list, finished by another shard — as finished, not as still to go.
#[test]
fn the_progress_line_counts_runs_finished_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    let out = tmp.path().join("out");
    let args: Vec<String> = grid_args(&data_dir, &out)
        .into_iter()
        .filter(|a| a != "--quiet")
        .collect();
    // Another machine finishes the last run of the four.
    let last = muq()
        .args(&args)
        .args(["--shard", "3/4", "--no-report"])
        .output()
        .unwrap();
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    let o = muq().args(&args).arg("--no-report").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // After the first run: it and the one finished elsewhere are done.
    let line = err
        .lines()
        .find(|l| l.starts_with("[sweep 1/4]") && l.contains("done in"))
        .unwrap_or_else(|| panic!("no progress line\n{err}"));
    assert!(line.contains("2 of 4 runs finished, 2 to go"), "{line}");
    let line = err
        .lines()
        .find(|l| l.starts_with("[sweep 3/4]") && l.contains("done in"))
        .unwrap_or_else(|| panic!("no progress line\n{err}"));
    assert!(line.contains("4 of 4 runs finished, 0 to go"), "{line}");
}
