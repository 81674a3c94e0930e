//! One run — one (modality, seed) under one config — as named stages, from
//! the data files to `result.json`:
//!
//! 1. [`load_data`]: CIFAR-10 read and checked, subsets, the calibration
//!    and evaluation halves, the modality ([`RunData`]);
//! 2. [`base_model`]: the model imported, from the cache, or trained
//!    ([`BaseModel`]);
//! 3. [`unlearn_all`]: every method of `cfg.unlearn` ([`Unlearned`]);
//! 4. [`evaluate_states`] (and [`Ensemble::evaluate`]): every state's
//!    metrics ([`Evaluated`]);
//! 5. [`export_models`] and [`write_result`].
//!
//! [`run`] runs them in that order; a library user can call them one by
//! one (the crate docs show how).

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use candle_core::Device;
use muq_resnet::{Kernels, Progress, kernels};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, RunConfig};
use crate::device;
use crate::result::{Provenance, RunResult, Timings, git_state};

mod base_model;
mod data;
mod evaluate;
mod folders;
mod unlearn;
mod write;

pub use base_model::{
    BaseModel, CHECKSUM_FILE, Compute, base_model, base_model_signature, import_base_model,
};
pub use data::{RETAIN_EVAL_STREAM, RunData, load_data};
pub use evaluate::{Ensemble, Evaluated, evaluate_states};
pub use folders::{FolderError, ensure_writable_dir};
pub use unlearn::{Unlearned, UnlearnedState, context, unlearn_all};
pub use write::{MODELS_DIR, export_models, write_result};

/// Where a run reads and writes, and on what it computes.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The CIFAR-10 binary layout directory.
    pub data_dir: PathBuf,
    /// Where `result.json` goes.
    pub out_dir: PathBuf,
    /// Base-model checkpoint cache, shared between runs.
    pub cache_dir: PathBuf,
    /// The device every tensor lives on.
    pub device: Device,
    /// Progress output.
    pub progress: Progress,
}

/// What a run starts from and leaves behind besides `result.json`.
#[derive(Clone, Debug, Default)]
pub struct RunExtras {
    /// Start from this PyTorch-layout checkpoint (torchvision ResNet-18
    /// names, CIFAR stem; see [`muq_resnet::checkpoint::import_torch`])
    /// instead of training a base model.
    pub base_model: Option<PathBuf>,
    /// Also write every state's model (`original` and each unlearned one)
    /// in PyTorch's layout to `<out>/models/<state>.safetensors`.
    pub export_models: bool,
}

/// The file a run writes into its output directory.
pub const RESULT_FILE: &str = "result.json";

/// A short stable id of a serialisable value: the first 16 hex digits of the
/// SHA-256 of its JSON.
pub fn stable_id<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).expect("config serialises");
    let digest = Sha256::digest(&json);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The id of a run: a hash of its resolved config.
pub fn run_id(cfg: &RunConfig) -> String {
    stable_id(cfg)
}

/// The default cache directory for a run writing into `out_dir`: a `cache`
/// folder beside it, so runs of one study share base models.
pub fn default_cache_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("cache")
}

/// A progress line on stderr, unless the run is silent.
pub(crate) fn say(progress: Progress, msg: String) {
    if progress == Progress::Stderr {
        eprintln!("[muq] {msg}");
    }
}

/// Runs `cfg` and writes `result.json` into `opts.out_dir`, returning it.
///
/// # Errors
/// An invalid config or environment, unusable folders or data, and
/// failures of training or of the base model's evaluation. A method that
/// fails is not an error: it is recorded in [`RunResult::failed`].
pub fn run(cfg: &RunConfig, opts: &RunOptions) -> anyhow::Result<RunResult> {
    run_with(cfg, opts, &RunExtras::default())
}

/// [`run`], starting from and leaving behind what `extras` says.
///
/// # Errors
/// As [`run`], and an unreadable or mismatched `--base-model`.
pub fn run_with(
    cfg: &RunConfig,
    opts: &RunOptions,
    extras: &RunExtras,
) -> anyhow::Result<RunResult> {
    cfg.validate()?;
    let kernels = Kernels::try_from_env().context(kernels::KERNELS_ENV)?;
    // Its error names MUQ_CPU_LEVEL and what to set.
    kernels::CpuLevel::try_from_env()?;
    let path = kernels::compute_path(kernels, &opts.device);
    let compute = Compute {
        kernels,
        path: &path,
    };
    ensure_writable_dir(&opts.out_dir, "output folder (--out)")?;
    ensure_writable_dir(&opts.cache_dir, "cache folder (--cache-dir)")?;
    if extras.base_model.is_some() && cfg.eval.ensemble > 0 {
        return Err(ConfigError::Invalid {
            field: "eval.ensemble".into(),
            reason: "an ensemble's members are base models trained with seeds seed + 1, …, which \
                     an imported model (--base-model) has no counterpart of: leave eval.ensemble \
                     at 0 with --base-model"
                .into(),
        }
        .into());
    }
    // A user's own model is read (and checked) before the data.
    let imported = match &extras.base_model {
        Some(path) => Some(import_base_model(cfg, path, &opts.device)?),
        None => None,
    };
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    // 1. Data, split, modality.
    let data = load_data(cfg, opts)?;
    let mut timings = Timings {
        load_s: started.elapsed().as_secs_f64(),
        ..Default::default()
    };

    // 2. Base model, imported, trained or from the cache.
    let t = Instant::now();
    let base = base_model(cfg, &data, imported, compute, opts)?;
    timings.base_model_s = t.elapsed().as_secs_f64();
    timings.base_model_cached = base.cached;

    // 3. Unlearning.
    let train_config = cfg.train.config();
    let ctx = context(&data, &base.model, &train_config, cfg.seed, opts);
    let unlearned = unlearn_all(cfg, &ctx, opts)?;
    timings.unlearn_s = unlearned.seconds;
    let mut failed = unlearned.failed;

    // 4. Evaluation of every state, and of their deep ensembles.
    let t = Instant::now();
    let evaluated = evaluate_states(
        cfg,
        &data,
        &base.model,
        &unlearned.states,
        &mut failed,
        opts,
    )?;
    timings.evaluate_s = t.elapsed().as_secs_f64();
    let mut states = evaluated.states;
    if cfg.eval.ensemble > 0 {
        let t = Instant::now();
        let ensemble = Ensemble {
            cfg,
            data: &data,
            compute,
            ctx: &ctx,
            opts,
        };
        ensemble.evaluate(&mut states, evaluated.member0, &mut failed)?;
        timings.ensemble_s = Some(t.elapsed().as_secs_f64());
    }

    // 5. The models (when asked for) and the result document.
    if extras.export_models {
        let steps = base.training.epochs.iter().map(|e| e.steps).sum();
        let models = unlearned.states.iter().map(|s| (s.name.as_str(), &s.model));
        export_models(&base.model, models, steps, opts)?;
    }
    timings.total_s = started.elapsed().as_secs_f64();
    let (git_commit, git_dirty) = git_state();
    let result = RunResult {
        schema: crate::result::SCHEMA,
        run_id: run_id(cfg),
        config: cfg.clone(),
        seed: cfg.seed,
        train_on: data.train_on,
        data: data.info,
        provenance: Provenance {
            git_commit,
            git_dirty,
            muq_version: env!("CARGO_PKG_VERSION").to_string(),
            candle_version: candle_version().to_string(),
            device: device::describe(&opts.device),
            compute: path.clone(),
            started_unix,
            base_model: base.imported,
        },
        timings,
        training: base.training,
        states,
        failed,
    };
    write_result(&result, opts)?;
    Ok(result)
}

/// The candle version muq is built against (the workspace pins it; a test
/// checks this string against Cargo.lock).
fn candle_version() -> &'static str {
    "0.11.1"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candle_version_matches_the_lock_file() {
        let lock = include_str!("../../../../Cargo.lock");
        let locked = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"candle-core\""))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
            .map(|v| v.trim_matches('"'));
        assert_eq!(locked, Some(candle_version()));
    }
}
