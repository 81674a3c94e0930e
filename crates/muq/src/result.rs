//! The result document of a run and how it is written.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use muq_resnet::TrainReport;
use serde::{Deserialize, Serialize};

use crate::config::{RunConfig, TrainOn};
use crate::evaluate::StateMetrics;

/// Version of the `result.json` layout.
pub const SCHEMA: u32 = 1;

/// The name of the state before unlearning: the base model itself.
pub const ORIGINAL_STATE: &str = "original";

/// What data a run used, with checksums.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    /// The CIFAR-10 directory.
    pub dir: String,
    /// SHA-256 of the training images and labels as loaded (before subsetting).
    pub train_checksum: String,
    /// SHA-256 of the test images and labels as loaded.
    pub test_checksum: String,
    /// SHA-256 of the drawn modification (pool, forget set, corruptions).
    pub modification_checksum: String,
    /// [`muq_data::Dataset::checksum`] of the data the base model trained
    /// on (the base-model cache keys on it; equal to the clean data's when
    /// the modality changes nothing). Empty in results written before it
    /// was recorded.
    #[serde(default)]
    pub trained_checksum: String,
    /// The class the `class` modality forgot (its test images are left out
    /// of both halves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgotten_class: Option<u8>,
    /// Training images used.
    pub n_train: usize,
    /// Calibration-half size.
    pub n_calibration: usize,
    /// Evaluation-half size.
    pub n_evaluation: usize,
    /// Corrupted pool size.
    pub n_pool: usize,
    /// Forget-set size.
    pub n_forget: usize,
    /// Retain-set size.
    pub n_retain: usize,
    /// Retained images evaluated per state.
    pub n_retain_eval: usize,
}

/// Where and with what a run was computed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The git commit the binary was built from (recorded at build time;
    /// `None` when not built from a checkout).
    pub git_commit: Option<String>,
    /// Whether the build's code differed from that commit (see
    /// [`git_state`]).
    pub git_dirty: Option<bool>,
    /// muq's version.
    pub muq_version: String,
    /// candle's version.
    pub candle_version: String,
    /// The device, e.g. `cpu` or `cuda:0`.
    pub device: String,
    /// What computed: the kernels and CPU instruction-set level, e.g.
    /// `muq/x86-64-v4` ([`muq_resnet::kernels::compute_path`]); runs that
    /// differ here may differ in their last bits. Empty in results written
    /// before it was recorded.
    #[serde(default)]
    pub compute: String,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    /// The user's own checkpoint the run started from (`muq run
    /// --base-model`) instead of training one; absent for a trained model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<ImportedModel>,
}

/// A base model imported from a PyTorch-layout checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportedModel {
    /// The file as given.
    pub path: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// The architecture read off its tensors.
    pub model: muq_resnet::ResNetConfig,
}

/// Wall-clock seconds per phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Loading, checksumming, splitting, drawing the modality.
    pub load_s: f64,
    /// Training the base model (or loading it from the cache).
    pub base_model_s: f64,
    /// Whether the base model came from the cache.
    pub base_model_cached: bool,
    /// Per unlearning method.
    pub unlearn_s: BTreeMap<String, f64>,
    /// Evaluating every state.
    pub evaluate_s: f64,
    /// The deep ensemble's extra members: their base models, unlearning
    /// and evaluation (absent without `eval.ensemble`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble_s: Option<f64>,
    /// The whole run.
    pub total_s: f64,
}

/// One model state of a run: the original, or the result of one method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateResult {
    /// `original`, or the method's state name (`first_order`, `retrain`, …).
    pub name: String,
    /// The method's resolved settings (absent for `original`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<serde_json::Value>,
    /// What the method cost and reported (absent for `original`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
    /// Every metric.
    pub metrics: StateMetrics,
}

/// The whole `result.json` of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Layout version ([`SCHEMA`]).
    pub schema: u32,
    /// Stable id: a hash of the resolved config.
    pub run_id: String,
    /// The resolved config.
    pub config: RunConfig,
    /// The run seed (also in `config`).
    pub seed: u64,
    /// The training set the base model saw, after the protocol.
    pub train_on: TrainOn,
    /// Data and checksums.
    pub data: DataInfo,
    /// Where and with what.
    pub provenance: Provenance,
    /// Per-phase wall time.
    pub timings: Timings,
    /// Per-epoch training log of the base model (stored with the cached model).
    pub training: TrainReport,
    /// Every state, `original` first.
    pub states: Vec<StateResult>,
    /// Methods that failed (diverged while unlearning, or left a model whose
    /// outputs could not be evaluated), with their errors; the run's other
    /// states are complete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedState>,
}

/// An unlearning method that produced no evaluable state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedState {
    /// The state name it would have had.
    pub name: String,
    /// The method's resolved settings.
    pub method: serde_json::Value,
    /// What went wrong, and in which phase (`unlearning: …`, `evaluating: …`).
    pub error: String,
}

impl RunResult {
    /// The state called `name`.
    pub fn state(&self, name: &str) -> Option<&StateResult> {
        self.states.iter().find(|s| s.name == name)
    }
}

/// A temporary-file suffix no other writer uses: the process id alone can
/// repeat across the nodes of a cluster sharing one disk, so the time in
/// nanoseconds and a per-process counter are added.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes the temporary files (`NAME.tmp<pid>…`, as [`write_atomic`] and
/// checkpoint saving name them) that a killed process left in `dir`: those
/// whose process is no longer running on this machine (`/proc/<pid>`;
/// elsewhere none are removed). A missing `dir` has none.
///
/// # Errors
/// When `dir` cannot be listed or such a file cannot be removed.
pub fn remove_stale_temporaries(dir: &Path) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .split_once(".tmp")
            .and_then(|(_, rest)| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        let gone = pid.is_some_and(|pid| {
            Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
        });
        if gone && entry.path().is_file() {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, flushed, then renamed over the destination.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", unique_suffix()));
    let tmp = dir.join(name);
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("flushing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Writes a value as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    write_atomic(path, &text)
}

/// Reads a `result.json`.
pub fn read_result(path: &Path) -> anyhow::Result<RunResult> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| {
        crate::exit::InvalidInput(format!(
            "{} is not a muq result ({e}): remove it or rerun the run that wrote it",
            path.display()
        ))
        .into()
    })
}

/// The git commit muq was built from, and whether its code (`crates/`,
/// `xtask/`, `Cargo.toml`, `Cargo.lock`, `rust-toolchain.toml`) differed
/// from that commit: recorded at build time by `build.rs`, so a moved
/// binary, or one run where `git` is not on `PATH`, still names its own
/// build. `None` when it was not built from a git checkout.
pub fn git_state() -> (Option<String>, Option<bool>) {
    let commit = Some(env!("MUQ_GIT_COMMIT"))
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    let dirty = match env!("MUQ_GIT_DIRTY") {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    };
    (commit, dirty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_temporaries_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("config.json.tmp4294967295-17-0");
        let live = dir
            .path()
            .join(format!("result.json.tmp{}", unique_suffix()));
        let kept = dir.path().join("config.json");
        for f in [&dead, &live, &kept] {
            std::fs::write(f, b"x").unwrap();
        }
        remove_stale_temporaries(dir.path()).unwrap();
        assert!(!dead.exists());
        assert!(live.exists() && kept.exists());
        remove_stale_temporaries(&dir.path().join("absent")).unwrap();
    }
}
