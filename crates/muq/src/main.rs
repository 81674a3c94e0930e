//! The `muq` command-line tool: a thin dispatcher over the subcommands in
//! the `muq` library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use muq::commands::{bench, metrics, report, run, sweep};

/// Measure how machine unlearning changes a classifier's calibration.
#[derive(Debug, Parser)]
#[command(name = "muq", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Calibration metrics (ECE, MCE, Brier, NLL, …) of saved logits, before
    /// and after temperature scaling; prints one JSON object.
    Metrics(metrics::MetricsArgs),
    /// One run: train (or load) the base model, unlearn, evaluate every
    /// state, write result.json.
    Run(run::RunArgs),
    /// A whole study: a grid of runs (resumable, shardable, Slurm-ready),
    /// then its report.
    Sweep(sweep::SweepArgs),
    /// Time a training step, an eval batch and a gradient sum, and the peak
    /// memory (`--json` for one JSON object).
    Bench(bench::BenchArgs),
    /// Summarise a results directory: the original's table, the extended
    /// view and figures (summary.md, summary.csv, summary.json, figures/).
    Report(report::ReportArgs),
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Metrics(args) => metrics::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Sweep(args) => {
            if sweep::run(&args)? {
                Ok(())
            } else {
                anyhow::bail!(
                    "some runs failed: see error.txt in their folders; run the sweep again to retry them"
                )
            }
        }
        Command::Bench(args) => bench::run(&args),
        Command::Report(args) => report::run(&args),
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(err) => {
            let code = muq::exit::code(&err);
            if code != muq::exit::SUCCESS {
                // `{:#}` prints the whole chain on one line: "context: cause: root".
                eprintln!("error: {err:#}");
            }
            Ok(ExitCode::from(code))
        }
    }
}
