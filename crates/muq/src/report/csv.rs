//! `summary.csv`: one tidy row per group, modality, state, quantity and
//! metric, rendered from a [`Report`].

use anyhow::Context as _;

use super::model::*;
use super::registry::{AVG_GAP, metric_keys, recalibrated_metric_keys};

/// The CSV header of `summary.csv`.
pub const CSV_HEADER: [&str; 9] = [
    "group",
    "group_label",
    "modality",
    "state",
    "quantity",
    "metric",
    "mean",
    "std",
    "n",
];

/// The `quantity` column of [`render_csv`]'s rows for one entry of
/// [`StateReport::recalibrated`]: `uncalibrated`, or `after_<method>`
/// (`after_ts`, `after_iso`, …).
pub fn recalibrated_quantity(method: &str) -> String {
    if method == UNCALIBRATED {
        UNCALIBRATED.to_string()
    } else {
        format!("after_{method}")
    }
}

/// `summary.csv`: one row per group, modality, state, quantity and metric.
/// `quantity` is `value` (the metric itself), `minus_original` or
/// `minus_retrain` (paired differences) or `gap_to_retrain` (paired
/// absolute differences, with the metric `avg_gap`); with recalibrators
/// also `uncalibrated` and `after_<method>` (see
/// [`recalibrated_quantity`]), and with a deep ensemble or MC dropout the
/// same prefixed `ensemble_` or `mc_dropout_`, with the metrics of
/// [`recalibrated_metric_keys`]. Floats are written in the shortest
/// form that reads back to the same `f64`.
pub fn render_csv(report: &Report) -> anyhow::Result<String> {
    let mut wtr = csv::Writer::from_writer(Vec::new());
    wtr.write_record(CSV_HEADER)?;
    for g in &report.groups {
        for m in &g.modalities {
            for s in &m.states {
                let quantities = [
                    ("value", &s.metrics),
                    ("minus_original", &s.minus_original),
                    ("minus_retrain", &s.minus_retrain),
                    ("gap_to_retrain", &s.gap_to_retrain),
                ];
                for (quantity, map) in quantities {
                    for key in metric_keys().into_iter().chain([AVG_GAP]) {
                        if let Some(stat) = map.get(key) {
                            wtr.write_record([
                                g.id.as_str(),
                                g.label.as_str(),
                                m.modality.as_str(),
                                s.state.as_str(),
                                quantity,
                                key,
                                &stat.mean.to_string(),
                                &stat.std.to_string(),
                                &stat.n.to_string(),
                            ])?;
                        }
                    }
                }
                let predictors = [
                    ("", &s.recalibrated),
                    ("ensemble_", &s.ensemble),
                    ("mc_dropout_", &s.mc_dropout),
                ];
                for (prefix, r) in predictors
                    .iter()
                    .flat_map(|(p, rs)| rs.iter().map(move |r| (*p, r)))
                {
                    let quantity = format!("{prefix}{}", recalibrated_quantity(&r.method));
                    for key in recalibrated_metric_keys() {
                        if let Some(stat) = r.metrics.get(key) {
                            wtr.write_record([
                                g.id.as_str(),
                                g.label.as_str(),
                                m.modality.as_str(),
                                s.state.as_str(),
                                quantity.as_str(),
                                key,
                                &stat.mean.to_string(),
                                &stat.std.to_string(),
                                &stat.n.to_string(),
                            ])?;
                        }
                    }
                }
            }
        }
    }
    let bytes = wtr.into_inner().context("writing summary.csv")?;
    Ok(String::from_utf8(bytes)?)
}
