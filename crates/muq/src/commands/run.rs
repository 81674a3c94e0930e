//! `muq run`: one run from the command line, its summary printed.

use std::path::PathBuf;

use super::common::CommonArgs;
use crate::config::RunConfig;
use crate::pipeline::{RunExtras, RunOptions, default_cache_dir, run_with};

/// Arguments of `muq run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// TOML config (default: the spec's defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output directory for result.json.
    #[arg(long, value_name = "DIR", default_value = "runs/run")]
    pub out: PathBuf,
    /// Base-model cache (default: a `cache` folder beside --out).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Start from your own model instead of training one: a safetensors file
    /// of a PyTorch `state_dict` with torchvision's ResNet-18 names (CIFAR
    /// variant: 3x3 stem, no max-pool), e.g. from
    /// `safetensors.torch.save_file(model.state_dict(), FILE)`.
    #[arg(long, value_name = "FILE")]
    pub base_model: Option<PathBuf>,
    /// Also write every state's model (original and unlearned) in PyTorch's
    /// layout to OUT/models/STATE.safetensors.
    #[arg(long)]
    pub export_models: bool,
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `muq run`.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    // Config errors come before anything is loaded or trained.
    let cfg = RunConfig::load(args.config.as_deref(), &args.common.overrides)?;
    let opts = RunOptions {
        data_dir: args.common.data_dir()?,
        out_dir: args.out.clone(),
        cache_dir: args
            .cache_dir
            .clone()
            .unwrap_or_else(|| default_cache_dir(&args.out)),
        device: crate::device::open(&args.common.device)?,
        progress: args.common.progress(),
    };
    let extras = RunExtras {
        base_model: args.base_model.clone(),
        export_models: args.export_models,
    };
    let result = run_with(&cfg, &opts, &extras)?;
    if !args.common.quiet {
        crate::summary::print_run(&result)?;
    }
    Ok(())
}
