//! `muq report`: its arguments and what it prints.

use std::path::PathBuf;

use crate::report::write_report;

/// Arguments of `muq report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Directory searched recursively for `result.json` files (e.g. the
    /// `--out` of `muq sweep`).
    #[arg(value_name = "RESULTS_DIR")]
    pub results_dir: PathBuf,
    /// Where to write summary.md, summary.csv, summary.json and figures/
    /// (default: RESULTS_DIR).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Runs `muq report`: writes the report and prints what it wrote.
pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(|| args.results_dir.clone());
    let written = write_report(&args.results_dir, &out)?;
    crate::stdout::println(&format!(
        "muq report: {} runs in {} group(s) → {} ({} figure files under {})",
        written.runs,
        written.groups,
        out.join("summary.md").display(),
        written.figures.len(),
        out.join("figures").display()
    ))
}
