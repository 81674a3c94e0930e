//! A human-readable table of one run's result.

use muq_calibrate::Method;

use crate::result::RunResult;

/// Formats the per-state metrics of a run as a fixed-column table, and,
/// when the run has `eval.recalibrators`, a second one of the evaluation
/// half after each recalibrator.
pub fn format_run(result: &RunResult) -> String {
    let mut out = format!(
        "{:<16} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8}\n",
        "state", "acc", "ECE", "ECE_ts", "Brier", "Brier_ts", "NLL_ts", "T", "forget", "retain"
    );
    for s in &result.states {
        let m = &s.metrics;
        let (u, c) = (&m.evaluation.uncalibrated, &m.evaluation.scaled);
        out.push_str(&format!(
            "{:<16} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>8.4} {:>7.4} {:>7.3} {:>8.4} {:>8.4}\n",
            s.name,
            u.accuracy,
            u.ece,
            c.ece,
            u.brier,
            c.brier,
            c.nll,
            m.temperature.temperature,
            m.forget.uncalibrated.accuracy,
            m.retain.uncalibrated.accuracy,
        ));
    }
    if result
        .states
        .iter()
        .any(|s| s.metrics.recalibration.is_some())
    {
        out.push_str(&format!(
            "after each recalibrator (fitted on the calibration half), evaluation half:\n\
             {:<16} {:<13} {:>7} {:>7} {:>7} {:>7} {:>8}\n",
            "state", "recalibrator", "acc", "ECE", "smECE", "Brier", "NLL"
        ));
        for s in &result.states {
            let Some(r) = &s.metrics.recalibration else {
                continue;
            };
            let rows = std::iter::once(("uncalibrated", &r.uncalibrated.evaluation)).chain(
                Method::ALL
                    .iter()
                    .filter_map(|m| Some((m.name(), &r.methods.get(m.name())?.evaluation))),
            );
            for (name, e) in rows {
                out.push_str(&format!(
                    "{:<16} {:<13} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>8.4}\n",
                    s.name, name, e.accuracy, e.ece, e.smooth_ece, e.brier, e.nll
                ));
            }
        }
    }
    out
}

/// Prints [`format_run`] to stdout, with a heading naming the run.
///
/// # Errors
/// As [`crate::stdout::print`].
pub fn print_run(result: &RunResult) -> anyhow::Result<()> {
    crate::stdout::print(&format!(
        "run {} — {} / seed {} / trained on {:?}; accuracies: evaluation half, forget set, retain sample\n{}",
        result.run_id,
        result.config.modality.kind,
        result.seed,
        result.train_on,
        format_run(result)
    ))
}
