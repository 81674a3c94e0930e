//! Command-line arguments shared by the subcommands that run experiments.

use std::path::{Path, PathBuf};

use muq_resnet::Progress;

use crate::config::RunConfig;
use crate::run::{RunOptions, default_cache_dir};

/// Where the data is, where results go, what computes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// CIFAR-10 binary-layout directory (default: $CIFAR10_DIR).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Override any config field, e.g. --set train.epochs=1 --set modality.kind=label.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Print nothing but errors.
    #[arg(long)]
    pub quiet: bool,
}

impl CommonArgs {
    /// The dataset directory: `--data-dir`, else `$CIFAR10_DIR`
    /// ([`muq_data::cifar::data_dir`]).
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        let Some(dir) = muq_data::cifar::data_dir(self.data_dir.as_deref(), Path::new(".")) else {
            anyhow::bail!(
                "no CIFAR-10 directory given: pass --data-dir DIR or set CIFAR10_DIR to a folder \
                 with data_batch_1.bin … test_batch.bin (`cargo xtask download` fetches one)"
            )
        };
        if dir.exists() && !dir.is_dir() {
            return Err(muq_data::DataError::NotADirectory { path: dir }.into());
        }
        if !dir.is_dir() {
            anyhow::bail!(
                "CIFAR-10 directory {} does not exist: pass --data-dir DIR or set CIFAR10_DIR \
                 (`cargo xtask download --dir {}` fetches it)",
                dir.display(),
                dir.display()
            );
        }
        Ok(dir)
    }

    /// Progress output setting.
    pub fn progress(&self) -> Progress {
        if self.quiet {
            Progress::Silent
        } else {
            Progress::Stderr
        }
    }
}

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
    let extras = crate::run::RunExtras {
        base_model: args.base_model.clone(),
        export_models: args.export_models,
    };
    let result = crate::run::run_with(&cfg, &opts, &extras)?;
    if !args.common.quiet {
        crate::summary::print_run(&result)?;
    }
    Ok(())
}
