//! One run: one (modality, seed) under one config, from the data files to
//! `result.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use candle_core::Device;
use muq_data::{
    Dataset, ImageSet, Modification, Normalization, rng, stratified_sample, stratified_split,
};
use muq_resnet::{Kernels, Progress, ResNet, TrainReport, checkpoint, kernels, train};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, RunConfig, TrainOn};
use crate::device;
use crate::evaluate::{EvalSet, EvalSets, SetLogits, evaluate_averaged, evaluate_logits};
use crate::result::{
    DataInfo, FailedState, ImportedModel, Provenance, RunResult, StateResult, Timings, git_state,
    write_json,
};

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

/// A folder a run must write to is unusable: found before any work.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// The path exists and is not a folder.
    #[error("{what} {}: is a file, not a folder; pass a folder (created if missing)", path.display())]
    NotAFolder {
        /// Which folder: "output folder (--out)", "cache folder (--cache-dir)".
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// The folder cannot be created, or a file cannot be written in it.
    #[error("{what} {}: cannot {op} ({source}); pass a folder you can write to", path.display())]
    NotWritable {
        /// Which folder.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// "create it" or "write in it".
        op: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Makes sure `dir` is a folder this process can write in, creating it
/// (and its parents) when missing: a run checks its output and cache
/// folders so that it fails in its first second, not after training.
///
/// # Errors
/// [`FolderError`] naming the folder and what to do.
pub fn ensure_writable_dir(dir: &Path, what: &'static str) -> Result<(), FolderError> {
    if dir.exists() && !dir.is_dir() {
        return Err(FolderError::NotAFolder {
            what,
            path: dir.to_path_buf(),
        });
    }
    let fail = |op, source| FolderError::NotWritable {
        what,
        path: dir.to_path_buf(),
        op,
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        // A regular file somewhere up the path: say so rather than "Not a directory".
        match dir.ancestors().skip(1).find(|a| a.is_file()) {
            Some(file) => FolderError::NotAFolder {
                what,
                path: file.to_path_buf(),
            },
            None => fail("create it", e),
        }
    })?;
    let probe = dir.join(format!(".muq-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| fail("write in it", e))
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

/// The part of a config that decides its base model: runs with equal
/// signatures on the same data train the same model (the cache key adds
/// the data's checksum and what computes). Sweeps use it to foresee which
/// runs will find their base model in the cache: a model trained on data
/// the modality leaves unchanged (`random`, `class`) is the clean model of
/// its seed.
pub fn base_model_signature(cfg: &RunConfig) -> String {
    #[derive(Serialize)]
    struct Signature<'a> {
        seed: u64,
        train_subset: usize,
        /// Only when the model trains on data the modality changes.
        modality: Option<&'a muq_data::ModalityConfig>,
        model: &'a muq_resnet::ResNetConfig,
        train: muq_resnet::TrainConfig,
    }
    let changes_data = cfg.modality.kind.changes_data();
    stable_id(&Signature {
        seed: cfg.seed,
        train_subset: cfg.data.train_subset,
        modality: (cfg.train_on() == TrainOn::Modified && changes_data).then_some(&cfg.modality),
        model: &cfg.model,
        train: cfg.train.config(),
    })
}

/// Everything that determines a base model's bits: the cache key is its
/// hash. Two trainings share an entry exactly when they see the same data
/// (so `random` forgetting under the corrected protocol, whose training
/// data are unmodified, shares the `original` protocol's clean model) with
/// the same architecture, schedule, seed and compute path.
#[derive(Serialize)]
struct BaseModelKey<'a> {
    /// [`muq_data::Dataset::checksum`] of the data trained on: images,
    /// labels as trained, noise, normalisation.
    trained_data: &'a str,
    model: &'a muq_resnet::ResNetConfig,
    train: &'a muq_resnet::TrainConfig,
    seed: u64,
    device: String,
    /// [`muq_resnet::kernels::compute_path`]: kernels and CPU level.
    compute: &'a str,
}

fn subset(
    set: ImageSet,
    n: usize,
    seed: u64,
    field: &str,
) -> Result<(ImageSet, Vec<usize>), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        field: field.to_string(),
        reason,
    };
    if n == 0 {
        let all = (0..set.len()).collect();
        return Ok((set, all));
    }
    if n > set.len() {
        return Err(invalid(format!(
            "asks for {n} images but the set has {}; use 0 for all or a smaller number",
            set.len()
        )));
    }
    if n < muq_data::NUM_CLASSES {
        return Err(invalid(format!("{n} is fewer than one image per class")));
    }
    let idx = stratified_sample(set.labels(), n, seed);
    Ok((set.subset(&idx), idx))
}

/// A modality that does not fit the data, as the config field at fault.
fn modality_error(e: muq_data::DataError) -> anyhow::Error {
    match e {
        muq_data::DataError::InvalidConfig { field, reason } => ConfigError::Invalid {
            field: format!("modality.{field}"),
            reason,
        }
        .into(),
        other => anyhow::Error::new(other).context("config section [modality]"),
    }
}

/// What a run starts from and leaves behind besides `result.json`.
#[derive(Clone, Debug, Default)]
pub struct RunExtras {
    /// Start from this PyTorch-layout checkpoint (torchvision ResNet-18
    /// names, CIFAR stem; see [`checkpoint::import_torch`]) instead of
    /// training a base model.
    pub base_model: Option<PathBuf>,
    /// Also write every state's model (`original` and each unlearned one)
    /// in PyTorch's layout to `<out>/models/<state>.safetensors`.
    pub export_models: bool,
}

/// The folder of `--export-models`' files inside a run's output.
pub const MODELS_DIR: &str = "models";

/// Runs `cfg` and writes `result.json` into `opts.out_dir`, returning it.
pub fn run(cfg: &RunConfig, opts: &RunOptions) -> anyhow::Result<RunResult> {
    run_with(cfg, opts, &RunExtras::default())
}

/// Imports a user's checkpoint, checking it against the config's model.
fn import_base_model(
    cfg: &RunConfig,
    path: &Path,
    device: &Device,
) -> anyhow::Result<(ResNet, ImportedModel)> {
    let model = checkpoint::import_torch(path, cfg.model.dropout, device)?;
    let found = model.config();
    if found != &cfg.model {
        return Err(ConfigError::Invalid {
            field: "model".into(),
            reason: format!(
                "the checkpoint {} is a width-{} model with {} classes, but the config asks for \
                 width {} with {}: pass --set model.width={} (and model.num_classes={})",
                path.display(),
                found.width,
                found.num_classes,
                cfg.model.width,
                cfg.model.num_classes,
                found.width,
                found.num_classes
            ),
        }
        .into());
    }
    let imported = ImportedModel {
        path: path.display().to_string(),
        sha256: file_sha256(path)?,
        model: found.clone(),
    };
    Ok((model, imported))
}

/// [`run`], starting from and leaving behind what `extras` says.
pub fn run_with(
    cfg: &RunConfig,
    opts: &RunOptions,
    extras: &RunExtras,
) -> anyhow::Result<RunResult> {
    cfg.validate()?;
    let kernels = Kernels::try_from_env().context(kernels::KERNELS_ENV)?;
    // Its error names MUQ_CPU_LEVEL and what to set.
    kernels::CpuLevel::try_from_env()?;
    let compute = kernels::compute_path(kernels, &opts.device);
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
    let seed = cfg.seed;
    let say = |msg: String| {
        if opts.progress == Progress::Stderr {
            eprintln!("[muq] {msg}");
        }
    };

    // 1. Data, split, modality.
    let (data, files) = muq_data::load_dir_checked(&opts.data_dir)
        .with_context(|| format!("loading CIFAR-10 from {}", opts.data_dir.display()))?;
    if opts.progress == Progress::Stderr {
        for w in files.warnings() {
            eprintln!("warning: {}: {w}", opts.data_dir.display());
        }
    }
    let train_checksum = data.train.checksum();
    let test_checksum = data.test.checksum();
    let (train_set, _) = subset(data.train, cfg.data.train_subset, seed, "data.train_subset")?;
    let (test_set, _) = subset(data.test, cfg.data.test_subset, seed, "data.test_subset")?;
    cfg.modality
        .validate(train_set.len())
        .map_err(modality_error)?;
    let (mut cal_idx, mut eval_idx) = stratified_split(test_set.labels(), 0.5, seed);
    let modification =
        Modification::draw(&cfg.modality, &train_set, seed).map_err(modality_error)?;
    if let Some(class) = modification.class {
        // Class-wise forgetting: the model is meant to lose that class, so
        // the temperature is fitted and the metrics are reported on the
        // remaining classes (the forget set holds the class's own images).
        for idx in [&mut cal_idx, &mut eval_idx] {
            idx.retain(|&i| test_set.labels()[i] != class);
        }
    }
    let norm = Normalization::CIFAR10;
    let train_images = Arc::new(train_set);
    let clean = Dataset::clean(train_images.clone(), norm);
    let modified = Dataset::modified(train_images.clone(), &modification, norm);
    let train_on = cfg.train_on();
    let trained_on = match train_on {
        TrainOn::Modified => &modified,
        TrainOn::Clean => &clean,
    };
    let test = Dataset::clean(Arc::new(test_set), norm);
    let retain_eval = retain_sample(&modification.retain, cfg.data.retain_eval, seed);
    let data_info = DataInfo {
        dir: opts.data_dir.display().to_string(),
        train_checksum,
        test_checksum,
        trained_checksum: trained_on.checksum(),
        modification_checksum: modification.checksum(),
        forgotten_class: modification.class,
        n_train: train_images.len(),
        n_calibration: cal_idx.len(),
        n_evaluation: eval_idx.len(),
        n_pool: modification.pool.len(),
        n_forget: modification.forget.len(),
        n_retain: modification.retain.len(),
        n_retain_eval: retain_eval.len(),
    };
    let mut timings = Timings {
        load_s: started.elapsed().as_secs_f64(),
        ..Default::default()
    };
    say(format!(
        "{} run, seed {seed}: {} training images ({} trained on), forget {} from a pool of {}, {} calibration / {} evaluation",
        cfg.modality.kind,
        data_info.n_train,
        match train_on {
            TrainOn::Modified => "modified",
            TrainOn::Clean => "clean",
        },
        data_info.n_forget,
        data_info.n_pool,
        data_info.n_calibration,
        data_info.n_evaluation
    ));

    // 2. Base model, trained or from the cache.
    let train_config = cfg.train.config();
    let t = Instant::now();
    let key = BaseModelKey {
        trained_data: &data_info.trained_checksum,
        model: &cfg.model,
        train: &train_config,
        seed,
        device: device::describe(&opts.device),
        compute: &compute,
    };
    let (model, training, cached, imported) = match imported {
        Some((mut model, imported)) => {
            model.set_kernels(kernels);
            say(format!(
                "base model imported from {} (width {}); it is taken to have been trained on \
                 the clean training set: the {} forget set is data it {}",
                imported.path,
                imported.model.width,
                cfg.modality.kind,
                if cfg.modality.kind.changes_data() {
                    "never saw (as under the original protocol)"
                } else {
                    "saw"
                }
            ));
            (model, TrainReport::default(), false, Some(imported))
        }
        None => {
            let (model, training, cached) = base_model(cfg, &key, kernels, trained_on, opts, &say)?;
            (model, training, cached, None)
        }
    };
    timings.base_model_s = t.elapsed().as_secs_f64();
    timings.base_model_cached = cached;

    // 3. Unlearning.
    let ctx = muq_unlearn::UnlearnContext {
        model: &model,
        trained_on,
        forget_data: &modified,
        forget: &modification.forget,
        retain: &modification.retain,
        train_config: &train_config,
        seed,
        progress: opts.progress,
    };
    // A method that fails (diverges, or leaves a model whose logits are not
    // finite) is recorded with its error; the other states are kept.
    let mut states = Vec::with_capacity(cfg.unlearn.len());
    let mut failed = Vec::new();
    for method in &cfg.unlearn {
        let name = method.state_name();
        say(format!("unlearning: {name}"));
        let t = Instant::now();
        let out = muq_unlearn::unlearn(method, &ctx);
        timings
            .unlearn_s
            .insert(name.clone(), t.elapsed().as_secs_f64());
        match out {
            Ok(out) => states.push((name, method, serde_json::to_value(&out.report)?, out.model)),
            Err(e) => {
                say(format!("unlearning `{name}` FAILED: {e}"));
                failed.push(FailedState {
                    name,
                    method: serde_json::to_value(method)?,
                    error: format!("unlearning: {e}"),
                });
            }
        }
    }

    // 4. Evaluation of every state.
    let t = Instant::now();
    let sets = EvalSets {
        calibration: EvalSet {
            data: &test,
            indices: &cal_idx,
        },
        evaluation: EvalSet {
            data: &test,
            indices: &eval_idx,
        },
        forget: EvalSet {
            data: &modified,
            indices: &modification.forget,
        },
        retain: EvalSet {
            data: trained_on,
            indices: &retain_eval,
        },
    };
    let mut results = Vec::with_capacity(states.len() + 1);
    // With an ensemble, each evaluated state's logits are kept: they are its
    // member 0.
    let mut member0 = Vec::new();
    say("evaluating: original".into());
    let z = SetLogits::of(&model, &sets, &cfg.eval)?;
    results.push(StateResult {
        name: "original".into(),
        method: None,
        report: None,
        metrics: evaluate_logits(&model, &z, &sets, &cfg.eval, seed)?,
    });
    if cfg.eval.ensemble > 0 {
        member0.push(z);
    }
    for (name, method, report, state_model) in &states {
        say(format!("evaluating: {name}"));
        let evaluated = SetLogits::of(state_model, &sets, &cfg.eval).and_then(|z| {
            let m = evaluate_logits(state_model, &z, &sets, &cfg.eval, seed)?;
            Ok((z, m))
        });
        match evaluated {
            Ok((z, metrics)) => {
                results.push(StateResult {
                    name: name.clone(),
                    method: Some(serde_json::to_value(method)?),
                    report: Some(report.clone()),
                    metrics,
                });
                if cfg.eval.ensemble > 0 {
                    member0.push(z);
                }
            }
            Err(e) => {
                say(format!("evaluating `{name}` FAILED: {e:#}"));
                failed.push(FailedState {
                    name: name.clone(),
                    method: serde_json::to_value(method)?,
                    error: format!("evaluating: {e:#}"),
                });
            }
        }
    }
    timings.evaluate_s = t.elapsed().as_secs_f64();

    // 5. The deep ensemble of every evaluated state.
    if cfg.eval.ensemble > 0 {
        let t = Instant::now();
        let members = Members {
            cfg,
            kernels,
            compute: &compute,
            trained_checksum: &data_info.trained_checksum,
            trained_on,
            ctx: &ctx,
            sets: &sets,
            opts,
        };
        members.evaluate(&mut results, member0, &mut failed, &say)?;
        timings.ensemble_s = Some(t.elapsed().as_secs_f64());
    }
    if extras.export_models {
        let dir = opts.out_dir.join(MODELS_DIR);
        let steps: usize = training.epochs.iter().map(|e| e.steps).sum();
        let steps = i64::try_from(steps).unwrap_or(i64::MAX);
        let all = std::iter::once(("original", &model))
            .chain(states.iter().map(|(name, _, _, m)| (name.as_str(), m)));
        for (name, m) in all {
            let path = dir.join(format!("{name}.safetensors"));
            checkpoint::export_torch(m, &path, steps)
                .with_context(|| format!("exporting {}", path.display()))?;
        }
        say(format!(
            "wrote the models in PyTorch's layout to {}",
            dir.display()
        ));
    }
    timings.total_s = started.elapsed().as_secs_f64();

    // 6. The result document, written atomically.
    let (git_commit, git_dirty) = git_state();
    let result = RunResult {
        schema: crate::result::SCHEMA,
        run_id: run_id(cfg),
        config: cfg.clone(),
        seed,
        train_on,
        data: data_info,
        provenance: Provenance {
            git_commit,
            git_dirty,
            muq_version: env!("CARGO_PKG_VERSION").to_string(),
            candle_version: candle_version().to_string(),
            device: device::describe(&opts.device),
            compute,
            started_unix,
            base_model: imported,
        },
        timings,
        training,
        states: results,
        failed,
    };
    write_json(&opts.out_dir.join(RESULT_FILE), &result)?;
    say(format!(
        "wrote {} ({:.1} s)",
        opts.out_dir.join(RESULT_FILE).display(),
        result.timings.total_s
    ));
    Ok(result)
}

/// The candle version muq is built against (the workspace pins it; a test
/// checks this string against Cargo.lock).
fn candle_version() -> &'static str {
    "0.11.1"
}

/// The extra members of a run's deep ensemble (`eval.ensemble`): member
/// `j ≥ 1` is the base model of seed `seed + j` trained on the run's own
/// training data (so under the corrected protocol a `random` run's members
/// are the clean models the runs of seeds `seed + j` train, shared through
/// the cache), unlearned by each method on the run's forget set with the
/// method's streams seeded by `seed + j`.
struct Members<'a> {
    cfg: &'a RunConfig,
    kernels: Kernels,
    compute: &'a str,
    trained_checksum: &'a str,
    trained_on: &'a Dataset,
    ctx: &'a muq_unlearn::UnlearnContext<'a>,
    sets: &'a EvalSets<'a>,
    opts: &'a RunOptions,
}

impl Members<'_> {
    /// Makes every extra member, and sets each evaluated state's
    /// `metrics.ensemble` from `member0` (the states' own logits, in the
    /// order of `results`) and the members' logits. A member whose
    /// unlearning or evaluation fails is recorded in `failed` and that
    /// state gets no ensemble; the other states keep theirs.
    fn evaluate(
        &self,
        results: &mut [StateResult],
        member0: Vec<SetLogits>,
        failed: &mut Vec<FailedState>,
        say: &dyn Fn(String),
    ) -> anyhow::Result<()> {
        let cfg = self.cfg;
        let seeds: Vec<u64> = (0..cfg.eval.ensemble as u64)
            .map(|j| cfg.seed + j)
            .collect();
        let mut logits: Vec<Option<Vec<SetLogits>>> =
            member0.into_iter().map(|z| Some(vec![z])).collect();
        let train = cfg.train.config();
        for &member_seed in &seeds[1..] {
            let key = BaseModelKey {
                trained_data: self.trained_checksum,
                model: &cfg.model,
                train: &train,
                seed: member_seed,
                device: device::describe(&self.opts.device),
                compute: self.compute,
            };
            say(format!("ensemble member of seed {member_seed}"));
            let (base, _, _) = base_model(cfg, &key, self.kernels, self.trained_on, self.opts, say)
                .with_context(|| format!("the ensemble member of seed {member_seed}"))?;
            let ctx = muq_unlearn::UnlearnContext {
                model: &base,
                seed: member_seed,
                ..*self.ctx
            };
            for (state, zs) in results.iter().zip(logits.iter_mut()) {
                let Some(members) = zs else { continue };
                let method = cfg.unlearn.iter().find(|m| m.state_name() == state.name);
                let z = match method {
                    None => SetLogits::of(&base, self.sets, &cfg.eval),
                    Some(method) => {
                        say(format!("  unlearning: {} (seed {member_seed})", state.name));
                        muq_unlearn::unlearn(method, &ctx)
                            .map_err(anyhow::Error::new)
                            .and_then(|out| SetLogits::of(&out.model, self.sets, &cfg.eval))
                    }
                };
                match z {
                    Ok(z) => members.push(z),
                    Err(e) => {
                        say(format!(
                            "ensemble member {} of seed {member_seed} FAILED: {e:#}",
                            state.name
                        ));
                        failed.push(FailedState {
                            name: format!("{} (ensemble member of seed {member_seed})", state.name),
                            method: state.method.clone().unwrap_or_default(),
                            error: format!("{e:#}"),
                        });
                        *zs = None;
                    }
                }
            }
        }
        let k = cfg.model.num_classes;
        for (state, zs) in results.iter_mut().zip(&logits) {
            let Some(members) = zs else { continue };
            let refs: Vec<&SetLogits> = members.iter().collect();
            match evaluate_averaged(&refs, k, self.sets, &cfg.eval, cfg.seed) {
                Ok(metrics) => {
                    state.metrics.ensemble = Some(crate::evaluate::Ensemble {
                        seeds: seeds.clone(),
                        metrics,
                    });
                }
                Err(e) => failed.push(FailedState {
                    name: format!("{} (ensemble)", state.name),
                    method: state.method.clone().unwrap_or_default(),
                    error: format!("evaluating the ensemble: {e:#}"),
                }),
            }
        }
        Ok(())
    }
}

/// Loads the base model from the cache, or trains it and stores it there.
fn base_model(
    cfg: &RunConfig,
    key: &BaseModelKey<'_>,
    kernels: Kernels,
    trained_on: &Dataset,
    opts: &RunOptions,
    say: &dyn Fn(String),
) -> anyhow::Result<(ResNet, TrainReport, bool)> {
    let id = stable_id(key);
    let dir = opts.cache_dir.join(&id);
    let ckpt = dir.join("model.safetensors");
    let log = dir.join("training.json");
    let sum = dir.join(CHECKSUM_FILE);
    if ckpt.exists() && log.exists() {
        match load_cached(cfg, &ckpt, &log, &sum, &opts.device) {
            Ok((mut model, report)) => {
                model.set_kernels(kernels);
                say(format!("base model from the cache: {}", dir.display()));
                return Ok((model, report, true));
            }
            Err(e) => {
                // Always shown: a corrupt entry costs a retraining.
                eprintln!(
                    "warning: the cached base model {} is unusable ({e:#}); training it again \
                     and replacing the entry",
                    dir.display()
                );
                // Without its log the entry is incomplete until rewritten.
                std::fs::remove_file(&log)
                    .with_context(|| format!("removing the corrupt entry's {}", log.display()))?;
            }
        }
    }
    say(format!(
        "training the base model: width {}, {} epochs, {} images",
        cfg.model.width,
        cfg.train.epochs,
        trained_on.len()
    ));
    // A run killed while saving this entry leaves temporaries behind.
    crate::result::remove_stale_temporaries(&dir)?;
    let mut model = ResNet::new(
        &cfg.model,
        &mut rng::stream(key.seed, rng::INIT),
        &opts.device,
    )?;
    model.set_kernels(kernels);
    let all: Vec<usize> = (0..trained_on.len()).collect();
    let report = train(
        &model,
        trained_on,
        &all,
        &cfg.train.config(),
        key.seed,
        opts.progress,
    )?;
    write_json(&dir.join("key.json"), key)?;
    checkpoint::save(&model, &ckpt)?;
    let digest = file_sha256(&ckpt)?;
    crate::result::write_atomic(&sum, format!("{digest}\n").as_bytes())?;
    // The log last: its presence marks a complete cache entry.
    write_json(&log, &report)?;
    Ok((model, report, false))
}

/// The file of a cache entry holding the SHA-256 of its `model.safetensors`.
pub const CHECKSUM_FILE: &str = "model.safetensors.sha256";

fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// Loads a cache entry, checking the checkpoint against its recorded
/// SHA-256 (entries written before checksums existed have none and are
/// only checked by loading).
fn load_cached(
    cfg: &RunConfig,
    ckpt: &Path,
    log: &Path,
    sum: &Path,
    device: &Device,
) -> anyhow::Result<(ResNet, TrainReport)> {
    if sum.exists() {
        let want =
            std::fs::read_to_string(sum).with_context(|| format!("reading {}", sum.display()))?;
        let got = file_sha256(ckpt)?;
        if want.trim() != got {
            anyhow::bail!(
                "{} does not match its checksum in {}",
                ckpt.display(),
                sum.display()
            );
        }
    }
    let model = checkpoint::load(ckpt, &cfg.model, device)
        .with_context(|| format!("loading {}", ckpt.display()))?;
    let report: TrainReport = serde_json::from_slice(
        &std::fs::read(log).with_context(|| format!("reading {}", log.display()))?,
    )
    .with_context(|| format!("reading {}", log.display()))?;
    Ok((model, report))
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

/// The retained images each state is evaluated on: `data.retain_eval` of
/// them (0 = all), a seeded sample.
fn retain_sample(retain: &[usize], n: usize, seed: u64) -> Vec<usize> {
    if n == 0 {
        return retain.to_vec();
    }
    rng::sample_sorted(retain, n, seed, RETAIN_EVAL_STREAM)
}

/// The stream of the retain sample each state is evaluated on
/// (`data.retain_eval` of the retained images).
pub const RETAIN_EVAL_STREAM: &str = "retain_eval";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candle_version_matches_the_lock_file() {
        let lock = include_str!("../../../Cargo.lock");
        let locked = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"candle-core\""))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
            .map(|v| v.trim_matches('"'));
        assert_eq!(locked, Some(candle_version()));
    }

    #[test]
    fn retain_sample_is_seeded_sorted_and_inside_retain() {
        let retain: Vec<usize> = (0..100).map(|i| i * 3).collect();
        let a = retain_sample(&retain, 10, 1);
        assert_eq!(a, retain_sample(&retain, 10, 1));
        assert_ne!(a, retain_sample(&retain, 10, 2));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(a.iter().all(|i| retain.contains(i)));
        assert_eq!(retain_sample(&retain, 0, 1), retain);
    }
}
