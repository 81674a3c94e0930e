//! Checkpoints: safetensors with the model config alongside, and PyTorch's
//! own layout both ways.
//!
//! `save(model, "m.safetensors")` writes `m.safetensors` (every parameter and
//! buffer under its torchvision name) and `m.json` (the [`ResNetConfig`]).
//! Both are written to a temporary file and renamed into place, so a crash
//! never leaves a half-written checkpoint under the final name.
//!
//! [`import_torch`] reads a PyTorch `state_dict` saved with
//! `safetensors.torch.save_file` — torchvision's ResNet-18 names, the CIFAR
//! variant (3×3 stem, stride 1, no max-pool), `num_batches_tracked`
//! included — reading the architecture off the tensors; [`export_torch`]
//! writes a model in that layout, so `model.load_state_dict(load_file(f),
//! strict=True)` takes it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::{ResNet, ResNetConfig, ResnetError, Result};

/// The config file that sits beside a checkpoint.
pub fn config_path(path: &Path) -> PathBuf {
    path.with_extension("json")
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ResnetError + '_ {
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

/// The suffix of the BatchNorm step counters PyTorch keeps in a
/// `state_dict` (unused by muq: BatchNorm's momentum is fixed).
const NUM_BATCHES_TRACKED: &str = "num_batches_tracked";

/// Reads the architecture off a torchvision-named CIFAR ResNet-18
/// `state_dict`: the width from `conv1.weight`, the classes from
/// `fc.weight`.
///
/// # Errors
/// [`ResnetError::Checkpoint`] naming the tensor that is missing or of the
/// wrong shape, or saying that a 7×7 stem is ImageNet's ResNet-18.
pub fn torch_config(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<ResNetConfig> {
    let bad = |reason: String| ResnetError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let get = |name: &str| {
        tensors.get(name).ok_or_else(|| {
            let mut some: Vec<&str> = tensors.keys().map(String::as_str).collect();
            some.sort_unstable();
            some.truncate(5);
            bad(format!(
                "no tensor `{name}`: not a torchvision ResNet-18 state_dict (its first names: \
                 {some:?}); save `model.state_dict()` of a torchvision-style ResNet-18"
            ))
        })
    };
    let conv1 = get("conv1.weight")?.dims().to_vec();
    let width = match conv1.as_slice() {
        [w, 3, 3, 3] => *w,
        [_, 3, 7, 7] => {
            return Err(bad(
                "`conv1.weight` is 7x7: this is ImageNet's ResNet-18; muq's is the CIFAR \
                 variant (3x3 stem with stride 1 and no max-pool): replace conv1 with \
                 Conv2d(3, 64, 3, 1, 1, bias=False) and maxpool with Identity, and train it"
                    .into(),
            ));
        }
        other => {
            return Err(bad(format!(
                "`conv1.weight` has shape {other:?}, a CIFAR ResNet-18 stem needs [width, 3, 3, 3]"
            )));
        }
    };
    let fc = get("fc.weight")?.dims().to_vec();
    let num_classes = match fc.as_slice() {
        [k, f] if *f == 8 * width => *k,
        other => {
            return Err(bad(format!(
                "`fc.weight` has shape {other:?}, a width-{width} ResNet-18 needs [classes, {}]",
                8 * width
            )));
        }
    };
    Ok(ResNetConfig {
        width,
        num_classes,
        dropout: 0.0,
    })
}

/// Loads a PyTorch checkpoint (see the module docs) onto `device`, with
/// `dropout` (PyTorch's `state_dict` does not record it).
///
/// A `module.` prefix on every name (what `DataParallel` saves) is removed.
/// Every tensor must be one the model has or a `num_batches_tracked`
/// counter; every tensor the model has must be there with its shape.
/// Floating-point tensors of any precision are converted to `f32`.
///
/// # Errors
/// [`ResnetError::Checkpoint`] naming the file and the tensor at fault.
pub fn import_torch(path: &Path, dropout: f32, device: &Device) -> Result<ResNet> {
    let bad = |reason: String| ResnetError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let raw: HashMap<String, Tensor> = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| bad(format!("cannot read safetensors: {e}")))?;
    let prefixed = !raw.is_empty() && raw.keys().all(|k| k.starts_with("module."));
    let mut tensors: HashMap<String, Tensor> = raw
        .into_iter()
        .map(|(k, v)| {
            let k = if prefixed {
                k["module.".len()..].to_string()
            } else {
                k
            };
            (k, v)
        })
        .collect();
    let mut config = torch_config(path, &tensors)?;
    config.dropout = dropout;
    config.validate()?;
    tensors.retain(|k, _| !k.ends_with(NUM_BATCHES_TRACKED));
    for (name, t) in &tensors {
        if !t.dtype().is_float() {
            return Err(bad(format!(
                "tensor `{name}` is {:?}, muq needs floating-point weights",
                t.dtype()
            )));
        }
    }
    let model = ResNet::from_tensors(&config, &tensors, device).map_err(|e| bad(e.to_string()))?;
    let known: std::collections::HashSet<&str> =
        model.params().iter().map(|p| p.name.as_str()).collect();
    let mut unknown: Vec<&str> = tensors
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        return Err(bad(format!(
            "tensors a CIFAR ResNet-18 does not have: {unknown:?}; save the plain \
             torchvision-style model's state_dict"
        )));
    }
    Ok(model)
}

/// Writes `model` in PyTorch's layout: every parameter and buffer under its
/// torchvision name as `f32`, plus each BatchNorm's `num_batches_tracked`
/// (an `int64` scalar; `batches` is the number of training steps it counts,
/// which PyTorch uses only when BatchNorm's momentum is `None`). Atomic, as
/// [`save`].
///
/// # Errors
/// [`ResnetError::Io`] or a tensor error.
pub fn export_torch(model: &ResNet, path: &Path, batches: i64) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let mut tensors = model.state_dict()?;
    let bns: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_suffix(".running_mean").map(str::to_string))
        .collect();
    for bn in bns {
        let count = Tensor::new(batches, &Device::Cpu)?;
        tensors.insert(format!("{bn}.{NUM_BATCHES_TRACKED}"), count);
    }
    let tensors: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    let tmp = tmp_name(path);
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

pub(crate) fn tmp_name(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    // The process id alone can repeat across the nodes of a cluster that
    // share one disk: the time in nanoseconds is added.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    name.push(format!(".tmp{}-{nanos}", std::process::id()));
    path.with_file_name(name)
}
