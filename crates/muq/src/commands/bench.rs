//! `muq bench`: the benchmark run and its report printed, as a table or as
//! one JSON object.

use crate::bench::{BenchConfig, BenchReport, EPOCH_STEPS, measure};

/// Arguments of `muq bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// What to measure.
    #[command(flatten)]
    pub config: BenchConfig,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark and prints the report (a table, or JSON with `--json`).
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.config.kernels.is_muq() {
        // Before any thread starts; the kernels would do it on first use.
        muq_resnet::kernels::tune_allocator();
    }
    let report = measure(&args.config)?;
    if args.json {
        crate::stdout::println(&serde_json::to_string(&report)?)
    } else {
        crate::stdout::print(&format_table(&report))
    }
}

fn format_table(r: &BenchReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "muq bench: width {}, batch {}, {} kernels on {} ({} threads), median of {} steps",
        r.width, r.batch, r.kernels, r.device, r.threads, r.steps
    );
    let row = |out: &mut String, name: &str, ms: f64| {
        let _ = writeln!(out, "  {name:<22} {ms:>10.1} ms");
    };
    row(&mut out, "train step", r.train_step_ms);
    if let Some(c) = r.train_step_cpu_ms {
        row(&mut out, "  (CPU time)", c);
    }
    row(&mut out, "  forward + loss", r.forward_ms);
    row(&mut out, "  backward", r.backward_ms);
    row(&mut out, "  optimiser", r.optimizer_ms);
    let k = &r.kernel_ms;
    if k.total_ms() > 0.0 {
        let _ = writeln!(
            out,
            "    in muq kernels: conv fwd {:.0}, conv dx {:.0}, conv dw {:.0}, bn fwd {:.0}, \
             bn bwd {:.0}; other {:.0} ms",
            k.conv_fwd_ms,
            k.conv_dx_ms,
            k.conv_dw_ms,
            k.bn_fwd_ms,
            k.bn_bwd_ms,
            r.train_step_ms - k.total_ms()
        );
    }
    row(&mut out, "eval batch", r.eval_batch_ms);
    if let Some(ms) = r.grad_sum_ms {
        row(
            &mut out,
            &format!("grad_sum ({} images)", r.grad_images),
            ms,
        );
    }
    let _ = match r.peak_rss_mib {
        Some(m) => writeln!(out, "  {:<22} {m:>10.0} MiB", "peak RSS"),
        None => writeln!(out, "  {:<22} {:>10}", "peak RSS", "n/a"),
    };
    let _ = writeln!(
        out,
        "  {:<22} {:>10.1} min",
        format!("epoch ({EPOCH_STEPS} steps)"),
        r.epoch_min
    );
    for op in &r.ops {
        let _ = writeln!(out, "  {:<12} {:<24} {:>10.2} ms", op.op, op.shape, op.ms);
    }
    out
}
