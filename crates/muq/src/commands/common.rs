//! The arguments shared by the commands that run experiments (`run`,
//! `sweep`).

use std::path::{Path, PathBuf};

use muq_resnet::Progress;

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
