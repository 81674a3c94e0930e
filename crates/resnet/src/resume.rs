//! Training that survives being stopped: the state [`crate::train_resumable`]
//! saves every few steps and starts from when it finds one.
//!
//! A state is one safetensors file, replaced atomically: every parameter
//! and buffer of the model under its torchvision name, each momentum
//! buffer under `momentum.<name>`, and a JSON record (as a `u8` tensor
//! named [`RECORD`]) of where training stands — epoch, step, the epoch's
//! running loss and accuracy sums, the dropout stream's position — and of
//! which training it belongs to (seed, config, model, training set). One
//! file, so that a crash never pairs the weights of one step with the
//! record of another.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{io_err, tmp_name};
use crate::train::{EpochStats, ResumePoint, TrainConfig};
use crate::{ResNet, ResNetConfig, ResnetError, Result};

/// Where [`crate::train_resumable`] keeps its state, how often it saves it,
/// and whether it stops early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The state file (safetensors). Training starts from it when it
    /// exists; the caller deletes it once the trained model is stored.
    pub path: PathBuf,
    /// Save after every `every_steps` steps of an epoch, and at the end of
    /// each epoch (0: only at the end of each epoch).
    pub every_steps: usize,
    /// Stop, with the state saved, once this call has taken this many
    /// steps (for a job whose time limit is shorter than the training);
    /// `None` trains to the end.
    pub stop_after_steps: Option<usize>,
}

impl Resume {
    /// Saves to `path` every `every_steps` steps and at each epoch's end,
    /// and trains to the end.
    pub fn new(path: impl Into<PathBuf>, every_steps: usize) -> Self {
        Self {
            path: path.into(),
            every_steps,
            stop_after_steps: None,
        }
    }
}

/// The name of the record tensor inside a state file.
pub const RECORD: &str = "train_state.json";

/// The prefix of the momentum buffers' names inside a state file.
const MOMENTUM: &str = "momentum.";

/// The record's format; a state of another format is refused.
pub(crate) const FORMAT: u32 = 1;

/// Where a training stands, and which training it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub format: u32,
    /// Which training: these must match for a state to be used.
    pub seed: u64,
    pub config: TrainConfig,
    pub model: ResNetConfig,
    pub examples: usize,
    /// FNV-1a of the training indices, in hex.
    pub indices_fnv: String,
    /// The 1-based epoch under way, and how many of its steps are done.
    pub epoch: usize,
    pub step: usize,
    /// The epoch's running sums so far.
    pub loss_sum: f64,
    pub correct: f64,
    /// Seconds spent on the epoch under way, and in all, so far.
    pub epoch_seconds: f64,
    pub seconds: f64,
    /// The epochs finished.
    pub finished: Vec<EpochStats>,
    /// Earlier resumptions.
    pub resumed_at: Vec<ResumePoint>,
    /// The dropout stream's word position (a `u128` in decimal).
    pub dropout_word_pos: String,
}

/// FNV-1a over the indices' little-endian `u64` bytes: a fingerprint,
/// stable across builds, of the exact slice a state was saved with.
pub(crate) fn fingerprint(indices: &[usize]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &i in indices {
        for b in (i as u64).to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn bad(path: &Path, reason: impl Into<String>) -> ResnetError {
    ResnetError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Writes `record`, the model and the momentum buffers (one per trainable
/// parameter, in order) to `path`, atomically.
pub(crate) fn save(
    path: &Path,
    record: &Record,
    model: &ResNet,
    momentum: &[Option<Tensor>],
) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let cpu = Device::Cpu;
    let mut tensors: HashMap<String, Tensor> = model
        .state_dict()?
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_device(&cpu)?)))
        .collect::<Result<_>>()?;
    for (p, m) in model.trainable().zip(momentum) {
        if let Some(m) = m {
            tensors.insert(format!("{MOMENTUM}{}", p.name), m.to_device(&cpu)?);
        }
    }
    let json = serde_json::to_vec(record).map_err(|e| bad(path, e.to_string()))?;
    let n = json.len();
    tensors.insert(RECORD.into(), Tensor::from_vec(json, n, &cpu)?);
    let tmp = tmp_name(path);
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// Reads the state at `path` into `model` and returns its record and
/// momentum buffers, after checking that it belongs to the training
/// `want` describes (every field up to `indices_fnv`).
pub(crate) fn load(
    path: &Path,
    want: &Record,
    model: &ResNet,
) -> Result<(Record, Vec<Option<Tensor>>)> {
    let device = model.device();
    let mut tensors: HashMap<String, Tensor> = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| {
        bad(
            path,
            format!("cannot read the saved training state ({e}); delete it to start over"),
        )
    })?;
    let record = tensors
        .remove(RECORD)
        .ok_or_else(|| bad(path, format!("no `{RECORD}` record: not a training state")))?;
    if record.dtype() != DType::U8 {
        return Err(bad(path, format!("`{RECORD}` is not bytes")));
    }
    let record: Record = serde_json::from_slice(&record.to_vec1::<u8>()?).map_err(|e| {
        bad(
            path,
            format!("unreadable `{RECORD}` ({e}); delete it to start over"),
        )
    })?;
    let same = record.format == want.format
        && record.seed == want.seed
        && record.config == want.config
        && record.model == want.model
        && record.examples == want.examples
        && record.indices_fnv == want.indices_fnv;
    if !same {
        return Err(bad(
            path,
            format!(
                "saved by another training (format {}, seed {}, {:?}, {:?}, {} examples, \
                 fingerprint {}) than this one (format {}, seed {}, {:?}, {:?}, {} examples, \
                 fingerprint {}); delete it or use another path",
                record.format,
                record.seed,
                record.config,
                record.model,
                record.examples,
                record.indices_fnv,
                want.format,
                want.seed,
                want.config,
                want.model,
                want.examples,
                want.indices_fnv
            ),
        ));
    }
    if record.epoch == 0 || record.epoch > record.config.epochs + 1 {
        return Err(bad(path, format!("records epoch {}", record.epoch)));
    }
    let mut momentum = Vec::new();
    for p in model.trainable() {
        let m = tensors.remove(&format!("{MOMENTUM}{}", p.name));
        if let Some(m) = &m
            && m.shape() != p.var.shape()
        {
            return Err(bad(
                path,
                format!(
                    "the momentum of {} is {:?}, the parameter {:?}",
                    p.name,
                    m.shape(),
                    p.var.shape()
                ),
            ));
        }
        momentum.push(m.map(|t| t.to_device(device)).transpose()?);
    }
    let some = momentum.iter().filter(|m| m.is_some()).count();
    if some != 0 && some != momentum.len() {
        return Err(bad(
            path,
            format!(
                "momentum for {some} of {} parameters; delete it to start over",
                momentum.len()
            ),
        ));
    }
    let loaded = ResNet::from_tensors(model.config(), &tensors, device)
        .map_err(|e| bad(path, e.to_string()))?;
    model.load_from(&loaded)?;
    Ok((record, momentum))
}
