//! Checkpoints: safetensors with the model config alongside.
//!
//! `save(model, "m.safetensors")` writes `m.safetensors` (every parameter and
//! buffer under its torchvision name) and `m.json` (the [`ResNetConfig`]).
//! Both are written to a temporary file and renamed into place, so a crash
//! never leaves a half-written checkpoint under the final name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::{ResNet, ResNetConfig, ResnetError, Result};

/// The config file that sits beside a checkpoint.
pub fn config_path(path: &Path) -> PathBuf {
    path.with_extension("json")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ResnetError + '_ {
    move |source| ResnetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `model` to `path` (safetensors) and its config to
/// [`config_path`]`(path)`, atomically.
pub fn save(model: &ResNet, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let cfg_path = config_path(path);
    let json =
        serde_json::to_string_pretty(model.config()).map_err(|e| ResnetError::Checkpoint {
            path: cfg_path.clone(),
            reason: e.to_string(),
        })?;
    let tmp_cfg = tmp_name(&cfg_path);
    std::fs::write(&tmp_cfg, json).map_err(io_err(&tmp_cfg))?;
    std::fs::rename(&tmp_cfg, &cfg_path).map_err(io_err(&cfg_path))?;
    let tensors = model.state_dict()?;
    let tmp = tmp_name(path);
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// Reads the config stored beside a checkpoint.
pub fn load_config(path: &Path) -> Result<ResNetConfig> {
    let cfg_path = config_path(path);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| ResnetError::Checkpoint {
        path: cfg_path.clone(),
        reason: format!("cannot read the model config that belongs beside the checkpoint: {e}"),
    })?;
    serde_json::from_str(&text).map_err(|e| ResnetError::Checkpoint {
        path: cfg_path,
        reason: format!("not a model config: {e}"),
    })
}

/// Loads a checkpoint onto `device`, checking that it was saved with
/// `expected`'s architecture (width, class count, dropout).
pub fn load(path: &Path, expected: &ResNetConfig, device: &Device) -> Result<ResNet> {
    let stored = load_config(path)?;
    if &stored != expected {
        return Err(ResnetError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!(
                "saved as width {} with {} classes (dropout {}), but a model of width {} with {} \
                 classes (dropout {}) was asked for; use a matching config or retrain",
                stored.width,
                stored.num_classes,
                stored.dropout,
                expected.width,
                expected.num_classes,
                expected.dropout
            ),
        });
    }
    let tensors: HashMap<String, _> =
        candle_core::safetensors::load(path, device).map_err(|e| ResnetError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("cannot read safetensors: {e}"),
        })?;
    ResNet::from_tensors(&stored, &tensors, device).map_err(|e| ResnetError::Checkpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn tmp_name(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}
