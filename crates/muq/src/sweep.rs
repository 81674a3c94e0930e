//! Sweeps: a config × axes × seeds expanded into runs with stable ids,
//! executed (or sharded, or written out as a Slurm array), skipping runs
//! already finished, so a killed sweep resumes where it stopped.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::config::RunConfig;
use crate::pipeline::{RESULT_FILE, RunOptions, base_model_signature, run, run_id};
use crate::result::{read_result, write_atomic};
use muq_data::ModalityKind;

/// One axis of a grid: a config field and the values it takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// Dotted config path, e.g. `modality.kind`.
    pub key: String,
    /// TOML literals (or bare strings), one run each.
    pub values: Vec<String>,
}

impl std::str::FromStr for Axis {
    type Err = anyhow::Error;

    /// `key=v1,v2,v3`.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (key, values) = s
            .split_once('=')
            .with_context(|| format!("axis `{s}` is not of the form key=v1,v2"))?;
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
        if key.trim().is_empty() || values.iter().any(String::is_empty) {
            bail!("axis `{s}` has an empty key or value");
        }
        Ok(Self {
            key: key.trim().to_string(),
            values,
        })
    }
}

/// What a sweep runs: a base config (file + overrides), axes and seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepSpec {
    /// Optional TOML file.
    pub config: Option<PathBuf>,
    /// `key=value` overrides applied to every run.
    pub overrides: Vec<String>,
    /// Grid axes, outermost first.
    pub axes: Vec<Axis>,
    /// Run seeds (outermost: one seed's whole grid runs before the next).
    pub seeds: Vec<u64>,
}

/// One run of an expanded grid.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// Position in the grid.
    pub index: usize,
    /// Stable id: a hash of the resolved config.
    pub id: String,
    /// Folder name: `<modality>-s<seed>-<id>`.
    pub name: String,
    /// The resolved config.
    pub config: RunConfig,
}

/// The named presets of `cargo xtask sweep`.
pub const PRESETS: [&str; 5] = ["paper", "original", "extended", "benchmark", "quick"];

/// Every unlearning method with its default settings, `retrain` last: the
/// `unlearn` list of the `extended` and `benchmark` presets.
fn every_method() -> String {
    use muq_unlearn::Method;
    let mut names: Vec<&str> = Method::SHORT_NAMES
        .into_iter()
        .filter(|n| *n != Method::RETRAIN)
        .collect();
    names.push(Method::RETRAIN);
    let entries: Vec<String> = names
        .iter()
        .map(|n| format!("{{method=\"{n}\"}}"))
        .collect();
    format!("unlearn=[{}]", entries.join(", "))
}

/// The run seeds of every preset and of a sweep given no `--seeds`.
pub const DEFAULT_SEEDS: [u64; 3] = [100, 101, 102];

/// The three modalities of the study, in the original's row order.
fn study_modalities() -> Vec<String> {
    ModalityKind::STUDY.map(|k| k.to_string()).to_vec()
}

/// The axis of every preset but `benchmark`, and of a sweep given no
/// `--axis`: the study's three modalities.
pub fn study_axis() -> Axis {
    Axis {
        key: "modality.kind".into(),
        values: study_modalities(),
    }
}

/// The spec of a named preset.
pub fn preset(name: &str) -> anyhow::Result<SweepSpec> {
    let seeds = DEFAULT_SEEDS.to_vec();
    let methods = every_method();
    let mut axes = vec![study_axis()];
    let overrides: Vec<&str> = match name {
        // The original's grid, corrected protocol, spec defaults.
        "paper" => vec![],
        // Exactly what the original did.
        "original" => vec!["protocol=original"],
        // Every method against the retrain oracle, and MC dropout.
        "extended" => vec![
            "model.dropout=0.5",
            "eval.mc_dropout_passes=20",
            "eval.bootstrap=200",
            &methods,
        ],
        // The unlearning field's standard setting (SalUn, Unlearn-Sparse):
        // 10 % random forgetting and class-wise forgetting, every method
        // against the retrain oracle.
        "benchmark" => {
            axes = vec![Axis {
                key: "modality.kind".into(),
                values: [ModalityKind::Random, ModalityKind::Class]
                    .map(|k| k.to_string())
                    .to_vec(),
            }];
            vec!["modality.remove_prop=0.1", &methods]
        }
        // Minutes on a laptop CPU: a small model on a class-balanced subset.
        "quick" => vec![
            "model.width=8",
            "data.train_subset=4000",
            "data.test_subset=2000",
            "data.retain_eval=1000",
            "train.epochs=2",
            "train.lr=0.05",
            r#"unlearn=[{method="first_order"}, {method="retrain"}]"#,
        ],
        other => bail!(
            "unknown preset `{other}`: use one of {}",
            PRESETS.join(", ")
        ),
    };
    Ok(SweepSpec {
        config: None,
        overrides: overrides.into_iter().map(String::from).collect(),
        axes,
        seeds,
    })
}

/// Expands a spec into runs: seeds outermost (every grid point of the first
/// seed, then of the next), then the axes, outermost first; every config is
/// validated before anything runs.
pub fn expand(spec: &SweepSpec) -> anyhow::Result<Vec<PlannedRun>> {
    if spec.seeds.is_empty() {
        bail!("a sweep needs at least one seed");
    }
    let mut combos: Vec<Vec<String>> = vec![Vec::new()];
    for axis in &spec.axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                axis.values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push(format!("{}={}", axis.key, v));
                    c
                })
            })
            .collect();
    }
    let mut runs = Vec::new();
    // Seeds outermost: the first seed of every grid point finishes before
    // the second starts, so a long sweep has a one-seed comparison early.
    for &seed in &spec.seeds {
        for combo in &combos {
            let mut overrides = spec.overrides.clone();
            overrides.extend(combo.iter().cloned());
            overrides.push(format!("seed={seed}"));
            let config = RunConfig::load(spec.config.as_deref(), &overrides)
                .with_context(|| format!("grid point {}", overrides.join(" ")))?;
            let id = run_id(&config);
            let name = format!("{}-s{}-{}", config.modality.kind, seed, &id[..8]);
            runs.push(PlannedRun {
                index: runs.len(),
                id,
                name,
                config,
            });
        }
    }
    let mut ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        bail!("two grid points resolve to the same config: check the axes for duplicates");
    }
    Ok(runs)
}

/// A slice `I/N` of a grid (0-based `I`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This slice.
    pub index: usize,
    /// Number of slices.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let parsed = s
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if count > 0 && index < count => Ok(Self { index, count }),
            _ => bail!("--shard `{s}`: expected I/N with 0 ≤ I < N, e.g. 0/4"),
        }
    }
}

impl Shard {
    /// Whether run `i` of the grid belongs to this slice (round-robin, so
    /// slices are balanced and disjoint and together cover the grid).
    pub fn contains(&self, i: usize) -> bool {
        i % self.count == self.index
    }
}

/// The folder of a run inside a sweep's output.
pub fn run_dir(out: &Path, run: &PlannedRun) -> PathBuf {
    out.join("runs").join(&run.name)
}

/// Whether a run's result is already there and belongs to this config.
pub fn is_finished(out: &Path, run: &PlannedRun) -> bool {
    read_result(&run_dir(out, run).join(RESULT_FILE)).is_ok_and(|r| r.run_id == run.id)
}

/// How a sweep executes.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Where the runs, the cache and the report go.
    pub out: PathBuf,
    /// Base-model cache (default `<out>/cache`).
    pub cache_dir: PathBuf,
    /// Dataset, device, progress.
    pub data_dir: PathBuf,
    /// Device for every run.
    pub device: candle_core::Device,
    /// Progress output for each run.
    pub progress: muq_resnet::Progress,
    /// Only this slice of the grid.
    pub shard: Option<Shard>,
}

/// Counts of a sweep execution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Runs in this slice.
    pub planned: usize,
    /// Finished by earlier invocations.
    pub skipped: usize,
    /// Finished now.
    pub completed: usize,
    /// Failed now (their error is in `<run>/error.txt`).
    pub failed: usize,
}

/// Runs every unfinished run of this slice, one after the other. A failing
/// run does not stop the sweep: its error goes to `error.txt` in its folder
/// and the sweep goes on; finished runs are never touched.
pub fn execute(runs: &[PlannedRun], opts: &SweepOptions) -> anyhow::Result<SweepOutcome> {
    let mine: Vec<&PlannedRun> = runs
        .iter()
        .filter(|r| opts.shard.is_none_or(|s| s.contains(r.index)))
        .collect();
    let mut outcome = SweepOutcome {
        planned: mine.len(),
        ..Default::default()
    };
    let started = Instant::now();
    let mut eta = Eta::default();
    let quiet = opts.progress == muq_resnet::Progress::Silent;
    for (k, planned) in mine.iter().enumerate() {
        let dir = run_dir(&opts.out, planned);
        let tag = format!("[sweep {}/{}] {}", k + 1, mine.len(), planned.name);
        if is_finished(&opts.out, planned) {
            eta.model_trained(&planned.config);
            outcome.skipped += 1;
            if !quiet {
                eprintln!("{tag}: finished earlier, skipped");
            }
            continue;
        }
        if !quiet {
            eprintln!("{tag}: starting");
        }
        let t = Instant::now();
        let run_opts = RunOptions {
            data_dir: opts.data_dir.clone(),
            out_dir: dir.clone(),
            cache_dir: opts.cache_dir.clone(),
            device: opts.device.clone(),
            progress: opts.progress,
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // A sweep killed while writing leaves its temporary files behind.
        crate::result::remove_stale_temporaries(&dir)?;
        crate::result::write_json(&dir.join("config.json"), &planned.config)?;
        let result = run(&planned.config, &run_opts);
        let seconds = t.elapsed().as_secs_f64();
        match result {
            Ok(r) => {
                outcome.completed += 1;
                let trained = (!r.timings.base_model_cached).then_some(r.timings.base_model_s);
                eta.record(seconds, trained);
                eta.model_trained(&planned.config);
                let _ = std::fs::remove_file(dir.join("error.txt"));
            }
            Err(e) => {
                outcome.failed += 1;
                eta.record(seconds, None);
                let msg = format!("{e:#}\n");
                write_atomic(&dir.join("error.txt"), msg.as_bytes())?;
                eprintln!("{tag}: FAILED: {e:#}");
            }
        }
        if !quiet {
            // Runs later in the list may have been finished meanwhile (by
            // another shard or machine): they are neither to go nor timed.
            let rest: Vec<&RunConfig> = mine[k + 1..]
                .iter()
                .filter(|r| !is_finished(&opts.out, r))
                .map(|r| &r.config)
                .collect();
            let finished = mine.iter().filter(|r| is_finished(&opts.out, r)).count();
            eprintln!(
                "{tag}: done in {seconds:.0} s; {finished} of {} runs finished, {} to go, ETA {}",
                mine.len(),
                rest.len(),
                format_duration(eta.remaining(rest.into_iter()))
            );
        }
    }
    if !quiet {
        eprintln!(
            "[sweep] {} completed, {} skipped (finished earlier), {} failed, in {}",
            outcome.completed,
            outcome.skipped,
            outcome.failed,
            format_duration(started.elapsed().as_secs_f64())
        );
    }
    Ok(outcome)
}

/// The time a sweep has left, from the runs done so far: each remaining run
/// costs the mean time of a run without its base-model training, plus the
/// mean training time once for every base model not yet trained (runs that
/// share one — the `original` protocol's modalities — train it once).
#[derive(Debug, Default)]
struct Eta {
    /// Wall seconds of each run done now, its base-model training excluded.
    other: Vec<f64>,
    /// Seconds of each base-model training done now.
    training: Vec<f64>,
    /// Signatures of the base models already trained (or cached).
    trained: std::collections::BTreeSet<String>,
}

impl Eta {
    /// A run took `seconds`, `trained` of them training its base model.
    fn record(&mut self, seconds: f64, trained: Option<f64>) {
        let t = trained.unwrap_or(0.0);
        self.other.push((seconds - t).max(0.0));
        if let Some(t) = trained {
            self.training.push(t);
        }
    }

    /// The base model of `cfg` exists now.
    fn model_trained(&mut self, cfg: &RunConfig) {
        self.trained.insert(base_model_signature(cfg));
    }

    /// Seconds the runs `rest` should take.
    fn remaining<'a>(&self, rest: impl Iterator<Item = &'a RunConfig>) -> f64 {
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
        let mut to_train = std::collections::BTreeSet::new();
        let mut runs = 0usize;
        for cfg in rest {
            runs += 1;
            let sig = base_model_signature(cfg);
            if !self.trained.contains(&sig) {
                to_train.insert(sig);
            }
        }
        // No training measured yet (every model came from the cache): a
        // whole run is the best guess for one.
        let per_training = if self.training.is_empty() {
            mean(&self.other)
        } else {
            mean(&self.training)
        };
        runs as f64 * mean(&self.other) + to_train.len() as f64 * per_training
    }
}

fn format_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// A Slurm array script: one array task per run, each running its own shard
/// of the same sweep (`--shard $SLURM_ARRAY_TASK_ID/N`), results into `out`.
pub fn slurm_script(
    muq: &Path,
    sweep_args: &[String],
    runs: usize,
    out: &Path,
    gpu: bool,
) -> String {
    let quoted: Vec<String> = sweep_args.iter().map(|a| shell_quote(a)).collect();
    let gres = if gpu { "#SBATCH --gres=gpu:1\n" } else { "" };
    format!(
        "#!/usr/bin/env bash\n\
         # Written by `muq sweep --slurm`: one array task per run of the grid.\n\
         # Submit with: sbatch {script}\n\
         # When every task is done: {muq} report {out}\n\
         #SBATCH --job-name=muq-sweep\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --output={logs}/%A_%a.out\n\
         {gres}\
         # Slurm opens --output before this script runs: the log folder must\n\
         # exist at submission (`muq sweep --slurm` created it).\n\
         set -euo pipefail\n\
         : \"${{SLURM_ARRAY_TASK_ID:?run this script with sbatch, or set SLURM_ARRAY_TASK_ID}}\"\n\
         exec {muq} sweep {args} --no-report --shard \"${{SLURM_ARRAY_TASK_ID}}/{runs}\"\n",
        script = shell_quote(&out.join("sweep.sbatch").display().to_string()),
        muq = shell_quote(&muq.display().to_string()),
        out = shell_quote(&out.display().to_string()),
        last = runs.saturating_sub(1),
        logs = shell_quote(&out.join("logs").display().to_string()),
        args = quoted.join(" "),
    )
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_and_shards_parse() {
        let a: Axis = "modality.kind=random,label".parse().unwrap();
        assert_eq!(a.values, ["random", "label"]);
        assert!("novalue".parse::<Axis>().is_err());
        assert_eq!(
            "1/4".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 4 }
        );
        for bad in ["4/4", "1/0", "x/2", "3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    /// The `original` grid (models trained on clean data, shared by the
    /// three modalities of a seed) and the `paper` grid (one model a run).
    #[test]
    fn eta_counts_each_base_model_once() {
        let grid = |name: &str| -> Vec<RunConfig> {
            expand(&preset(name).unwrap())
                .unwrap()
                .into_iter()
                .map(|r| r.config)
                .collect()
        };
        let original = grid("original");
        assert_eq!(original.len(), 9);
        let mut eta = Eta::default();
        // The first run: 100 s of training, 10 s of the rest.
        eta.record(110.0, Some(100.0));
        eta.model_trained(&original[0]);
        // Runs 2..9 are noise and label of seed 100 (its model), then the
        // three modalities of seeds 101 and 102: two more models to train,
        // eight runs' other work.
        assert_eq!(
            eta.remaining(original[1..].iter()),
            8.0 * 10.0 + 2.0 * 100.0
        );
        // Once every seed's model exists, only the other work is left.
        eta.model_trained(&original[3]);
        eta.model_trained(&original[6]);
        assert_eq!(eta.remaining(original[3..].iter()), 6.0 * 10.0);
        // The corrected protocol's random runs train on unmodified data:
        // after the original grid, `paper` trains 6 new models, not 9.
        let paper = grid("paper");
        assert_eq!(eta.remaining(paper.iter()), 9.0 * 10.0 + 6.0 * 100.0);

        let mut eta = Eta::default();
        eta.record(110.0, Some(100.0));
        eta.model_trained(&paper[0]);
        // Trained on modified data: every run has a model of its own.
        assert_eq!(eta.remaining(paper[1..].iter()), 8.0 * 110.0);
        // A failed run counts as other work only.
        eta.record(30.0, None);
        assert_eq!(eta.remaining(paper[2..].iter()), 7.0 * 20.0 + 7.0 * 100.0);
    }

    /// Every preset expands to valid configs; `extended` and `benchmark`
    /// list every method with `retrain` last; `benchmark` is the field's
    /// setting: 10 % random and class-wise forgetting, 3 seeds.
    #[test]
    fn presets_expand_and_list_every_method() {
        for name in PRESETS {
            let runs = expand(&preset(name).unwrap()).unwrap();
            assert!(!runs.is_empty(), "{name}");
        }
        let bench = expand(&preset("benchmark").unwrap()).unwrap();
        assert_eq!(bench.len(), 6);
        let kinds: Vec<String> = bench
            .iter()
            .map(|r| format!("{}-{}", r.config.modality.kind, r.config.seed))
            .collect();
        assert_eq!(
            kinds,
            [
                "random-100",
                "class-100",
                "random-101",
                "class-101",
                "random-102",
                "class-102"
            ]
        );
        for name in ["extended", "benchmark"] {
            let cfg = &expand(&preset(name).unwrap()).unwrap()[0].config;
            let methods: Vec<&str> = cfg.unlearn.iter().map(|m| m.short_name()).collect();
            assert_eq!(
                methods.len(),
                muq_unlearn::Method::SHORT_NAMES.len(),
                "{name}"
            );
            assert_eq!(methods.last(), Some(&"retrain"));
            for m in muq_unlearn::Method::FIELD_NAMES {
                assert!(methods.contains(&m), "{name} lacks {m}");
            }
        }
        assert_eq!(bench[0].config.modality.remove_prop, 0.1);
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("a/b-c.d"), "a/b-c.d");
        assert_eq!(shell_quote("it's here"), r"'it'\''s here'");
    }
}
