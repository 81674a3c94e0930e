//! # muq
//!
//! Measure how machine unlearning changes a CIFAR-10 ResNet-18's
//! calibration: the library behind the `muq` binary, in three layers.
//!
//! - [`pipeline`]: one run as named stages — [`load_data`](pipeline::load_data)
//!   → [`base_model`](pipeline::base_model) (trained, or from the cache) →
//!   [`unlearn_all`](pipeline::unlearn_all) →
//!   [`evaluate_states`](pipeline::evaluate_states) →
//!   [`write_result`](pipeline::write_result); [`run`] calls them in order.
//!   [`sweep`] expands a grid of configs into runs and executes them.
//! - [`report`]: a plain data model ([`Report`]) built from result files,
//!   and its Markdown, CSV and figure renderers.
//! - [`commands`]: the binary's subcommands, each its clap arguments and
//!   its printing.
//!
//! Around them: the run [`config`] (TOML and `--set` overrides, with every
//! default), the [`result`] document, the metrics of a state
//! ([`evaluate`]), `muq metrics` on saved logits ([`metrics`],
//! [`logits_io`]) and `muq bench` ([`bench`](mod@bench)).
//!
//! A run driven from Rust, stage by stage, on a small synthetic dataset
//! (the binary's `muq run` is [`run`], which does the same and writes
//! `result.json`):
//!
//! ```
//! use muq::pipeline::{self, Compute, RunOptions};
//! use muq::RunConfig;
//! use muq_resnet::{Kernels, Progress, kernels};
//!
//! # fn main() -> anyhow::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let data_dir = dir.path().join("cifar");
//! muq_data::write_dir(&data_dir, &muq_data::synthetic::generate(200, 100, 7), 50)?;
//! let settings = [
//!     "model.width=4",
//!     "train.epochs=1",
//!     "train.batch_size=32",
//!     "data.retain_eval=50",
//!     "modality.kind=label",
//!     r#"unlearn=[{method="first_order"}]"#,
//! ];
//! let cfg = RunConfig::load(None, &settings.map(String::from))?;
//! let opts = RunOptions {
//!     data_dir,
//!     out_dir: dir.path().join("run"),
//!     cache_dir: dir.path().join("cache"),
//!     device: candle_core::Device::Cpu,
//!     progress: Progress::Silent,
//! };
//! let path = kernels::compute_path(Kernels::Muq, &opts.device);
//! let compute = Compute { kernels: Kernels::Muq, path: &path };
//!
//! let data = pipeline::load_data(&cfg, &opts)?;
//! let base = pipeline::base_model(&cfg, &data, None, compute, &opts)?;
//! let train = cfg.train.config();
//! let ctx = pipeline::context(&data, &base.model, &train, cfg.seed, &opts);
//! let unlearned = pipeline::unlearn_all(&cfg, &ctx, &opts)?;
//! let mut failed = unlearned.failed;
//! let evaluated =
//!     pipeline::evaluate_states(&cfg, &data, &base.model, &unlearned.states, &mut failed, &opts)?;
//!
//! let names: Vec<&str> = evaluated.states.iter().map(|s| s.name.as_str()).collect();
//! assert_eq!(names, ["original", "first_order"]);
//! let ece = evaluated.states[1].metrics.evaluation.uncalibrated.ece;
//! assert!((0.0..=1.0).contains(&ece));
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod bench;
pub mod commands;
pub mod config;
pub mod device;
pub mod evaluate;
pub mod exit;
pub mod logits_io;
pub mod metrics;
pub mod pipeline;
pub mod report;
pub mod result;
pub mod stdout;
pub mod summary;
pub mod sweep;

pub use config::RunConfig;
pub use pipeline::{RunExtras, RunOptions, run, run_with};
pub use report::{Report, build_report, load_results, write_report};
pub use result::{RunResult, read_result};
pub use sweep::{SweepOptions, SweepSpec, expand, preset};
