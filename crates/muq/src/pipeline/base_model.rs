//! Stage 2, the base model: imported from the user's checkpoint, loaded
//! from the cache, or trained and stored there.

use std::path::Path;

use anyhow::Context as _;
use candle_core::Device;
use muq_data::{Dataset, rng};
use muq_resnet::{
    Kernels, ResNet, ResnetError, Resume, TrainReport, Trained, checkpoint, train_resumable,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::data::RunData;
use super::{RunOptions, say, stable_id};
use crate::config::{ConfigError, RunConfig, TrainOn};
use crate::device;
use crate::result::{ImportedModel, write_json};

/// The model a run unlearns from, and where it came from.
pub struct BaseModel {
    /// The model.
    pub model: ResNet,
    /// Its training log (empty for an imported model).
    pub training: TrainReport,
    /// Whether it came from the cache.
    pub cached: bool,
    /// The user's checkpoint it was imported from (`--base-model`).
    pub imported: Option<ImportedModel>,
}

/// How base models are computed: the kernels and the compute path that is
/// part of every cache key.
#[derive(Clone, Copy, Debug)]
pub struct Compute<'a> {
    /// The kernels every model uses.
    pub kernels: Kernels,
    /// [`muq_resnet::kernels::compute_path`]: kernels and CPU level.
    pub path: &'a str,
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
    /// [`Kernels::revision`] where past 1 (left out at 1, so that the keys
    /// of entries made before revisions existed stay what they were).
    #[serde(skip_serializing_if = "Option::is_none")]
    kernels_revision: Option<u32>,
}

/// [`BaseModelKey::kernels_revision`] of a model computed with `kernels`.
fn kernels_revision(kernels: Kernels) -> Option<u32> {
    Some(kernels.revision()).filter(|&r| r > 1)
}

/// Imports a user's checkpoint (`--base-model`), checking it against the
/// config's model. Done before the data are read, so that a wrong file
/// fails at once.
///
/// # Errors
/// An unreadable checkpoint, or one whose width or class count is not the
/// config's (a [`ConfigError`] saying which `--set` fixes it).
pub fn import_base_model(
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

/// The run's base model: `imported` (from [`import_base_model`]) when
/// given, else the cache entry of seed `cfg.seed` on the run's training
/// data, trained and stored first when missing or unusable.
///
/// # Errors
/// Training failures and unwritable cache entries.
pub fn base_model(
    cfg: &RunConfig,
    data: &RunData,
    imported: Option<(ResNet, ImportedModel)>,
    compute: Compute<'_>,
    opts: &RunOptions,
) -> anyhow::Result<BaseModel> {
    Ok(match imported {
        Some((mut model, imported)) => {
            model.set_kernels(compute.kernels);
            say(
                opts.progress,
                format!(
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
                ),
            );
            BaseModel {
                model,
                training: TrainReport::default(),
                cached: false,
                imported: Some(imported),
            }
        }
        None => cached_or_trained(cfg, cfg.seed, data, compute, opts)?,
    })
}

/// The base model of seed `seed` on the run's training data, from the
/// cache or trained and stored there.
pub(crate) fn cached_or_trained(
    cfg: &RunConfig,
    seed: u64,
    data: &RunData,
    compute: Compute<'_>,
    opts: &RunOptions,
) -> anyhow::Result<BaseModel> {
    let train_config = cfg.train.config();
    let key = BaseModelKey {
        trained_data: &data.info.trained_checksum,
        model: &cfg.model,
        train: &train_config,
        seed,
        device: device::describe(&opts.device),
        compute: compute.path,
        kernels_revision: kernels_revision(compute.kernels),
    };
    let (model, training, cached) =
        load_or_train(cfg, &key, compute.kernels, data.trained_on(), opts)?;
    Ok(BaseModel {
        model,
        training,
        cached,
        imported: None,
    })
}

/// Loads the base model from the cache, or trains it and stores it there.
fn load_or_train(
    cfg: &RunConfig,
    key: &BaseModelKey<'_>,
    kernels: Kernels,
    trained_on: &Dataset,
    opts: &RunOptions,
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
                say(
                    opts.progress,
                    format!("base model from the cache: {}", dir.display()),
                );
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
    say(
        opts.progress,
        format!(
            "training the base model: width {}, {} epochs, {} images",
            cfg.model.width,
            cfg.train.epochs,
            trained_on.len()
        ),
    );
    // A run killed while saving this entry leaves temporaries behind.
    crate::result::remove_stale_temporaries(&dir)?;
    let fresh = || -> anyhow::Result<ResNet> {
        let mut model = ResNet::new(
            &cfg.model,
            &mut rng::stream(key.seed, rng::INIT),
            &opts.device,
        )?;
        model.set_kernels(kernels);
        Ok(model)
    };
    let all: Vec<usize> = (0..trained_on.len()).collect();
    let state = dir.join(TRAIN_STATE_FILE);
    let resume = Resume::new(&state, TRAIN_STATE_EVERY_STEPS);
    let train = |model: &ResNet| {
        train_resumable(
            model,
            trained_on,
            &all,
            &cfg.train.config(),
            key.seed,
            opts.progress,
            &resume,
        )
    };
    let mut model = fresh()?;
    let trained = match train(&model) {
        Err(ResnetError::Checkpoint { reason, .. }) if state.exists() => {
            // Always shown: it costs the training done so far.
            eprintln!(
                "warning: the saved training state {} is unusable ({reason}); training from the \
                 start",
                state.display()
            );
            std::fs::remove_file(&state)
                .with_context(|| format!("removing the unusable {}", state.display()))?;
            model = fresh()?;
            train(&model)?
        }
        other => other?,
    };
    let Trained::Finished(report) = trained else {
        anyhow::bail!("training paused without a step limit (a bug)");
    };
    write_json(&dir.join("key.json"), key)?;
    checkpoint::save(&model, &ckpt)?;
    let digest = file_sha256(&ckpt)?;
    crate::result::write_atomic(&sum, format!("{digest}\n").as_bytes())?;
    // The log last: its presence marks a complete cache entry.
    write_json(&log, &report)?;
    // The entry is complete: the state it was trained through is not needed.
    match std::fs::remove_file(&state) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", state.display()));
        }
        _ => {}
    }
    Ok((model, report, false))
}

/// The file of a cache entry holding the state of its model's training
/// while it runs ([`muq_resnet::train_resumable`]): a run killed during
/// training continues from it, to the same bits.
pub const TRAIN_STATE_FILE: &str = "train-state.safetensors";

/// How often (in steps) the training state is saved: at full size, every
/// two to five minutes on two cores, for about 0.2 s of writing (90 MB).
pub const TRAIN_STATE_EVERY_STEPS: usize = 50;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(compute: &str, kernels: Kernels) -> String {
        let (model, train) = (
            muq_resnet::ResNetConfig::default(),
            muq_resnet::TrainConfig::default(),
        );
        serde_json::to_string(&BaseModelKey {
            trained_data: "data",
            model: &model,
            train: &train,
            seed: 7,
            device: "cpu".into(),
            compute,
            kernels_revision: kernels_revision(kernels),
        })
        .unwrap()
    }

    #[test]
    fn only_a_revised_kernel_setting_changes_the_key_beyond_its_path() {
        // Revision 1 adds nothing: entries cached before revisions existed
        // keep their keys.
        for kernels in [Kernels::Stock, Kernels::Muq] {
            let k = key("muq/x86-64-v4", kernels);
            assert!(!k.contains("kernels_revision"), "{k}");
            assert!(k.ends_with(r#""compute":"muq/x86-64-v4"}"#), "{k}");
        }
        // Winograd's filter gradient changed its bits (revision 2): its
        // older entries must not be served.
        let k = key("winograd/x86-64-v4", Kernels::Winograd);
        assert!(
            k.ends_with(r#""compute":"winograd/x86-64-v4","kernels_revision":2}"#),
            "{k}"
        );
    }
}
