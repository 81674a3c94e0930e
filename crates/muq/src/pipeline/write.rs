//! Stage 5, the outputs: every state's model in PyTorch's layout (with
//! `--export-models`) and `result.json`, written atomically.

use std::path::Path;

use anyhow::Context as _;
use muq_resnet::{ResNet, checkpoint};

use super::RunOptions;
use super::{RESULT_FILE, say};
use crate::result::{ORIGINAL_STATE, RunResult, write_json};

/// The folder of `--export-models`' files inside a run's output.
pub const MODELS_DIR: &str = "models";

/// Writes `base` (as [`ORIGINAL_STATE`]) and every `(name, model)` of
/// `states` in PyTorch's layout to `<out>/models/<name>.safetensors`,
/// recording `steps` optimiser steps in each.
///
/// # Errors
/// When a file cannot be written.
pub fn export_models<'m>(
    base: &'m ResNet,
    states: impl IntoIterator<Item = (&'m str, &'m ResNet)>,
    steps: usize,
    opts: &RunOptions,
) -> anyhow::Result<()> {
    let dir = opts.out_dir.join(MODELS_DIR);
    let steps = i64::try_from(steps).unwrap_or(i64::MAX);
    let all = std::iter::once((ORIGINAL_STATE, base)).chain(states);
    for (name, m) in all {
        let path = dir.join(format!("{name}.safetensors"));
        checkpoint::export_torch(m, &path, steps)
            .with_context(|| format!("exporting {}", path.display()))?;
    }
    say(
        opts.progress,
        format!("wrote the models in PyTorch's layout to {}", dir.display()),
    );
    Ok(())
}

/// Writes `result` to `<out>/result.json`, atomically.
///
/// # Errors
/// When the file cannot be written.
pub fn write_result(result: &RunResult, opts: &RunOptions) -> anyhow::Result<()> {
    let path: &Path = &opts.out_dir.join(RESULT_FILE);
    write_json(path, result)?;
    say(
        opts.progress,
        format!("wrote {} ({:.1} s)", path.display(), result.timings.total_s),
    );
    Ok(())
}
