//! Reading a results directory: every `result.json` under it, in path
//! order.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::exit::InvalidInput;
use crate::result::{RunResult, read_result};

/// One result file as read from disk.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedRun {
    /// The file's path relative to the results directory, `/`-separated.
    pub path: String,
    /// Its contents.
    pub result: RunResult,
}

/// Reads every file named `result.json` under `dir` (recursively, symbolic
/// links not followed), sorted by path.
///
/// # Errors
/// When `dir` is not a directory, holds no `result.json`, or a file cannot be
/// read or parsed (the error names the file).
pub fn load_results(dir: &Path) -> anyhow::Result<Vec<LoadedRun>> {
    if !dir.is_dir() {
        return Err(InvalidInput(format!(
            "results directory {} does not exist or is not a directory: pass the --out folder \
             of `muq sweep` or `muq run`",
            dir.display()
        ))
        .into());
    }
    let mut files = Vec::new();
    find_results(dir, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(InvalidInput(format!(
            "no result.json found under {}: point `muq report` at the --out directory of \
             `muq sweep` or `muq run` (it holds runs/<name>/result.json)",
            dir.display()
        ))
        .into());
    }
    files
        .into_iter()
        .map(|file| {
            let result = read_result(&file)?;
            let rel = file.strip_prefix(dir).unwrap_or(&file);
            let path = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            Ok(LoadedRun { path, result })
        })
        .collect()
}

fn find_results(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let kind = entry
            .file_type()
            .with_context(|| format!("inspecting {}", entry.path().display()))?;
        if kind.is_dir() {
            find_results(&entry.path(), out)?;
        } else if kind.is_file() && entry.file_name() == "result.json" {
            out.push(entry.path());
        }
    }
    Ok(())
}
