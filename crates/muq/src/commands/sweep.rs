//! `muq sweep`: a grid of runs from the command line (listed with
//! `--plan`, written as a Slurm array with `--slurm`), then its report.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::common::CommonArgs;
use crate::pipeline::ensure_writable_dir;
use crate::result::write_atomic;
use crate::sweep::{
    Axis, DEFAULT_SEEDS, Shard, SweepOptions, SweepSpec, execute, expand, is_finished, preset,
    slurm_script, study_axis,
};

/// Arguments of `muq sweep`.
#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    /// A named grid: paper, original, extended, quick.
    #[arg(long, conflicts_with = "config")]
    pub preset: Option<String>,
    /// A TOML base config (with --axis/--seeds to span a grid).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A grid axis, KEY=V1,V2,… (repeatable; default modality.kind=random,noise,label).
    #[arg(long = "axis", value_name = "KEY=V1,V2")]
    pub axes: Vec<Axis>,
    /// Run seeds (default 100,101,102).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Output directory: runs/, cache/, summary.* and figures/.
    #[arg(long, value_name = "DIR", default_value = "results/sweep")]
    pub out: PathBuf,
    /// Base-model cache (default: OUT/cache).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Run only slice I of N (0-based), e.g. 0/4.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Write OUT/sweep.sbatch (a Slurm array, one task per run) instead of running.
    #[arg(long)]
    pub slurm: bool,
    /// List the runs of the grid and whether each is finished; run nothing.
    #[arg(long)]
    pub plan: bool,
    /// Do not write the report when the sweep ends.
    #[arg(long)]
    pub no_report: bool,
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
}

impl SweepArgs {
    fn spec(&self) -> anyhow::Result<SweepSpec> {
        let mut spec = match &self.preset {
            Some(p) => preset(p)?,
            None => SweepSpec {
                config: self.config.clone(),
                overrides: Vec::new(),
                axes: vec![study_axis()],
                seeds: DEFAULT_SEEDS.to_vec(),
            },
        };
        spec.overrides.extend(self.common.overrides.iter().cloned());
        if !self.axes.is_empty() {
            spec.axes = self.axes.clone();
        }
        if !self.seeds.is_empty() {
            spec.seeds = self.seeds.clone();
        }
        Ok(spec)
    }

    /// The arguments that reproduce this sweep's grid and destination, for
    /// the Slurm script.
    fn grid_args(&self, data_dir: &Path, out: &Path) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(p) = &self.preset {
            a.extend(["--preset".into(), p.clone()]);
        }
        if let Some(c) = &self.config {
            a.extend(["--config".into(), absolute(c).display().to_string()]);
        }
        for axis in &self.axes {
            a.extend([
                "--axis".into(),
                format!("{}={}", axis.key, axis.values.join(",")),
            ]);
        }
        if !self.seeds.is_empty() {
            let s: Vec<String> = self.seeds.iter().map(u64::to_string).collect();
            a.extend(["--seeds".into(), s.join(",")]);
        }
        for o in &self.common.overrides {
            a.extend(["--set".into(), o.clone()]);
        }
        a.extend(["--data-dir".into(), data_dir.display().to_string()]);
        a.extend(["--out".into(), out.display().to_string()]);
        if let Some(c) = &self.cache_dir {
            a.extend(["--cache-dir".into(), absolute(c).display().to_string()]);
        }
        a.extend(["--device".into(), self.common.device.clone()]);
        if self.common.quiet {
            a.push("--quiet".into());
        }
        a
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `muq sweep`. Returns whether every run of the slice finished.
pub fn run(args: &SweepArgs) -> anyhow::Result<bool> {
    let spec = args.spec()?;
    // Every grid point is resolved and validated before anything runs.
    let runs = expand(&spec)?;
    let out = absolute(&args.out);
    if args.plan {
        for r in &runs {
            let state = if is_finished(&out, r) {
                "finished"
            } else {
                "pending"
            };
            let shard = args.shard.is_none_or(|s| s.contains(r.index));
            if shard {
                crate::stdout::println(&format!("{:>4}  {:<8}  {}", r.index, state, r.name))?;
            }
        }
        return Ok(true);
    }
    let data_dir = absolute(&args.common.data_dir()?);
    if args.slurm {
        let muq = std::env::current_exe().context("locating the muq binary")?;
        let script = slurm_script(
            &muq,
            &args.grid_args(&data_dir, &out),
            runs.len(),
            &out,
            args.common.device.starts_with("cuda"),
        );
        let path = out.join("sweep.sbatch");
        write_atomic(&path, script.as_bytes())?;
        // Slurm opens each task's --output file before the script runs and
        // fails the launch when its folder is missing.
        let logs = out.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        crate::stdout::println(&format!(
            "wrote {} ({} array tasks): submit it with `sbatch {}`",
            path.display(),
            runs.len(),
            path.display()
        ))?;
        return Ok(true);
    }
    let opts = SweepOptions {
        cache_dir: args
            .cache_dir
            .as_ref()
            .map_or_else(|| out.join("cache"), |c| absolute(c)),
        out: out.clone(),
        data_dir,
        device: crate::device::open(&args.common.device)?,
        progress: args.common.progress(),
        shard: args.shard,
    };
    // Everything the pending runs need, checked once before the first one
    // starts: a sweep that cannot finish fails now, not run by run.
    let pending = runs
        .iter()
        .any(|r| opts.shard.is_none_or(|s| s.contains(r.index)) && !is_finished(&out, r));
    if pending {
        ensure_writable_dir(&opts.out, "output folder (--out)")?;
        ensure_writable_dir(&opts.cache_dir, "cache folder (--cache-dir)")?;
        muq_data::cifar::check_dir(&opts.data_dir)?;
        muq_resnet::Kernels::try_from_env().context(muq_resnet::kernels::KERNELS_ENV)?;
        muq_resnet::kernels::CpuLevel::try_from_env()?;
    }
    let outcome = execute(&runs, &opts)?;
    let all_done = outcome.failed == 0;
    // The report covers whatever has finished; with nothing finished there
    // is nothing to report (and the failures above say why).
    if !args.no_report && args.shard.is_none() && outcome.completed + outcome.skipped > 0 {
        crate::report::write_report(&out, &out)?;
        if !args.common.quiet {
            eprintln!("[sweep] report: {}", out.join("summary.md").display());
        }
    }
    Ok(all_done)
}
