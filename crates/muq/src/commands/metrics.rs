//! `muq metrics`: calibration metrics of saved logits, printed as one JSON
//! object.

use crate::metrics::{MetricsRequest, compute};

/// Arguments of `muq metrics`.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// The files and settings.
    #[command(flatten)]
    pub request: MetricsRequest,
}

/// Runs `muq metrics`: prints the [`MetricsReport`](crate::metrics::MetricsReport) as one pretty-printed
/// JSON object on stdout.
///
/// # Errors
/// As [`compute`].
pub fn run(args: &MetricsArgs) -> anyhow::Result<()> {
    let report = compute(&args.request)?;
    crate::stdout::println(&serde_json::to_string_pretty(&report)?)
}
