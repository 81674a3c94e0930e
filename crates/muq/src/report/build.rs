//! Building a [`Report`] from loaded runs: grouping by configuration,
//! splitting by modality, averaging over seeds and pairing differences by
//! seed.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, bail};
use muq_calibrate::{ConfidenceInterval, Method, ReliabilityBin, ReliabilityDiagram};
use muq_data::ModalityKind;
use serde::Serialize;

use super::REPORT_SCHEMA;
use super::load::LoadedRun;
use super::model::*;
use super::reference::*;
use super::registry::*;
use super::{HEADLINE_STATE, ORIGINAL_STATE, RETRAIN_STATE};
use crate::evaluate::{Averaged, Recalibration, StateMetrics};
use crate::result::RunResult;

/// The per-epoch training statistics of the distinct base models among
/// `members`: runs whose seed and training log agree share one cached
/// model and count once.
fn training_rows(members: &[&LoadedRun]) -> Vec<EpochRow> {
    let mut seen = BTreeSet::new();
    let mut logs: Vec<&[muq_resnet::EpochStats]> = Vec::new();
    let mut sorted: Vec<&LoadedRun> = members.to_vec();
    sorted.sort_by(|a, b| a.result.seed.cmp(&b.result.seed).then(a.path.cmp(&b.path)));
    for run in sorted {
        let epochs = &run.result.training.epochs;
        let key: (u64, Vec<(u64, u64)>) = (
            run.result.seed,
            epochs
                .iter()
                .map(|e| (e.loss.to_bits(), e.accuracy.to_bits()))
                .collect(),
        );
        if seen.insert(key) {
            logs.push(epochs);
        }
    }
    let most = logs.iter().map(|l| l.len()).max().unwrap_or(0);
    (0..most)
        .filter_map(|i| {
            let at: Vec<&muq_resnet::EpochStats> = logs.iter().filter_map(|l| l.get(i)).collect();
            let stat = |f: fn(&muq_resnet::EpochStats) -> f64| {
                Stat::of(&at.iter().map(|e| f(e)).collect::<Vec<_>>())
            };
            Some(EpochRow {
                epoch: i + 1,
                loss: stat(|e| e.loss)?,
                accuracy: stat(|e| e.accuracy)?,
                seconds: stat(|e| e.seconds)?,
            })
        })
        .collect()
}

/// One run's recalibrators of one predictor (the model, its ensemble or
/// MC dropout): seed, the recalibration block, and the reliability diagram
/// of the uncalibrated softmax.
type RecalRun<'a> = (u64, &'a Recalibration, &'a ReliabilityDiagram);

/// An ensemble's or MC dropout's recalibrators in one run (absent in
/// results written before they were measured).
fn averaged_run(a: &Averaged, seed: u64) -> Option<RecalRun<'_>> {
    Some((
        seed,
        a.recalibration.as_ref()?,
        &a.reliability.as_ref()?.before_ts,
    ))
}

/// The recalibrators of one state over its runs: [`UNCALIBRATED`] first,
/// then every method some run measured.
fn recalibrated_reports(with: &[RecalRun<'_>]) -> anyhow::Result<Vec<RecalibratedReport>> {
    if with.is_empty() {
        return Ok(Vec::new());
    }
    let mut names: Vec<&str> = with
        .iter()
        .flat_map(|(_, r, _)| r.methods.keys().map(String::as_str))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Known methods in their canonical order, any other name after them.
    names.sort_by_key(|n| {
        let rank = Method::ALL
            .iter()
            .position(|m| m.name() == *n)
            .unwrap_or(Method::ALL.len());
        (rank, *n)
    });
    type Entry<'a> = (
        u64,
        RecalSplits<'a>,
        &'a ReliabilityDiagram,
        &'a BTreeMap<String, ConfidenceInterval>,
    );
    let entry = |method: &str, runs: Vec<Entry<'_>>| -> anyhow::Result<RecalibratedReport> {
        let metrics = RECAL_METRICS
            .iter()
            .filter_map(|(key, get)| {
                let xs: Vec<f64> = runs.iter().map(|(_, s, _, _)| get(s)).collect();
                if xs.iter().any(|x| !x.is_finite()) {
                    return None;
                }
                Some(((*key).to_string(), Stat::of(&xs)?))
            })
            .collect();
        let diagrams: Vec<&ReliabilityDiagram> = runs.iter().map(|(_, _, d, _)| *d).collect();
        Ok(RecalibratedReport {
            method: method.to_string(),
            seeds: runs.iter().map(|(seed, _, _, _)| *seed).collect(),
            metrics,
            reliability: pool_reliability(&diagrams)
                .with_context(|| format!("pooling the reliability bins after `{method}`"))?,
            bootstrap: match runs.as_slice() {
                [(_, _, _, ci)] => (*ci).clone(),
                _ => BTreeMap::new(),
            },
        })
    };
    let mut out = vec![entry(
        UNCALIBRATED,
        with.iter()
            .map(|(seed, r, before)| {
                let u = &r.uncalibrated;
                let splits = RecalSplits {
                    evaluation: &u.evaluation,
                    forget: &u.forget,
                    retain: &u.retain,
                };
                (*seed, splits, *before, &r.uncalibrated_bootstrap)
            })
            .collect(),
    )?];
    for name in names {
        let runs = with
            .iter()
            .filter_map(|(seed, r, _)| {
                let m = r.methods.get(name)?;
                let splits = RecalSplits {
                    evaluation: &m.evaluation,
                    forget: &m.forget,
                    retain: &m.retain,
                };
                Some((*seed, splits, &m.reliability, &m.bootstrap))
            })
            .collect();
        out.push(entry(name, runs)?);
    }
    Ok(out)
}

fn enum_name<T: Serialize + std::fmt::Debug>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{value:?}"),
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Array(items) => {
            if items.is_empty() {
                out.insert(prefix.to_string(), "[]".to_string());
            }
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// The configuration that defines a run's group, flattened to dotted keys:
/// everything but `seed` and `modality.kind`, with `train.on` replaced by
/// the resolved `train_on`.
pub fn group_config(result: &RunResult) -> anyhow::Result<BTreeMap<String, String>> {
    let mut value = serde_json::to_value(&result.config).context("serialising a run config")?;
    if let Some(root) = value.as_object_mut() {
        root.remove("seed");
        if let Some(m) = root.get_mut("modality").and_then(|m| m.as_object_mut()) {
            m.remove("kind");
        }
        if let Some(t) = root.get_mut("train").and_then(|t| t.as_object_mut()) {
            t.remove("on");
        }
    }
    let mut flat = BTreeMap::new();
    flatten("", &value, &mut flat);
    flat.insert("train_on".to_string(), enum_name(&result.train_on));
    Ok(flat)
}

/// Summarises loaded runs.
///
/// # Errors
/// When two runs of one group share modality and seed (they would be
/// counted twice), or when the reliability bins of one state disagree
/// between runs.
pub fn build_report(runs: &[LoadedRun]) -> anyhow::Result<Report> {
    // Group by the flattened config.
    let mut by_config: BTreeMap<Vec<(String, String)>, Vec<&LoadedRun>> = BTreeMap::new();
    for run in runs {
        let key = group_config(&run.result)?.into_iter().collect();
        by_config.entry(key).or_default().push(run);
    }
    let configs: Vec<BTreeMap<String, String>> = by_config
        .keys()
        .map(|k| k.iter().cloned().collect())
        .collect();
    // Keys whose value differs between groups label them.
    let all_keys: BTreeSet<&String> = configs.iter().flat_map(|c| c.keys()).collect();
    let differing: Vec<&String> = all_keys
        .into_iter()
        .filter(|k| configs.iter().any(|c| c.get(*k) != configs[0].get(*k)))
        .collect();
    let mut labelled: Vec<(String, BTreeMap<String, String>, Vec<&LoadedRun>)> = by_config
        .into_values()
        .zip(configs.iter().cloned())
        .map(|(members, config)| {
            let label = if differing.is_empty() {
                "all runs".to_string()
            } else {
                differing
                    .iter()
                    .map(|k| format!("{k}={}", config.get(*k).map_or("–", String::as_str)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            (label, config, members)
        })
        .collect();
    labelled.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let single = labelled.len() == 1;
    let groups = labelled
        .into_iter()
        .enumerate()
        .map(|(i, (label, config, members))| {
            let id = format!("g{}", i + 1);
            let prefix = if single {
                "figures".to_string()
            } else {
                format!("figures/{id}")
            };
            build_group(id, label, config, &members, &prefix)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Report {
        schema: REPORT_SCHEMA,
        runs: runs.len(),
        reference: reference_table(),
        groups,
    })
}

fn build_group(
    id: String,
    label: String,
    config: BTreeMap<String, String>,
    members: &[&LoadedRun],
    figure_prefix: &str,
) -> anyhow::Result<Group> {
    let first = &members[0].result;
    let n_train: BTreeSet<usize> = members.iter().map(|r| r.result.data.n_train).collect();
    let setup = Setup {
        protocol: enum_name(&first.config.protocol),
        train_on: enum_name(&first.train_on),
        width: first.config.model.width,
        epochs: first.config.train.epochs,
        n_train: n_train.into_iter().collect(),
        methods: first
            .config
            .unlearn
            .iter()
            .map(|m| m.state_name())
            .collect(),
        first_order_bn: first.config.first_order_bn().map(|b| enum_name(&b)),
        compute: {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for r in members {
                let c = &r.result.provenance.compute;
                let c = if c.is_empty() {
                    "unrecorded"
                } else {
                    c.as_str()
                };
                *counts.entry(c.to_string()).or_default() += 1;
            }
            counts.into_iter().collect()
        },
    };
    let has_headline = members
        .iter()
        .any(|r| r.result.state(HEADLINE_STATE).is_some());
    let headline_state = if has_headline {
        HEADLINE_STATE
    } else {
        ORIGINAL_STATE
    };

    let mut modalities = Vec::new();
    for modality in MODALITIES.map(ModalityKind::as_str) {
        let mut runs: Vec<&LoadedRun> = members
            .iter()
            .copied()
            .filter(|r| r.result.config.modality.kind.as_str() == modality)
            .collect();
        if runs.is_empty() {
            continue;
        }
        runs.sort_by(|a, b| a.result.seed.cmp(&b.result.seed).then(a.path.cmp(&b.path)));
        if let Some(w) = runs
            .windows(2)
            .find(|w| w[0].result.seed == w[1].result.seed)
        {
            bail!(
                "{} and {} are both {modality} runs with seed {} and the same config: \
                 remove one (a run must be counted once)",
                w[0].path,
                w[1].path,
                w[0].result.seed
            );
        }
        modalities.push(build_modality(modality, &runs, figure_prefix)?);
    }

    let headline = modalities
        .iter()
        .filter_map(|m| {
            let s = m.states.iter().find(|s| s.state == headline_state)?;
            Some(HeadlineRow {
                modality: m.modality.clone(),
                ece: s.metrics["ece_after_ts"],
                brier: s.metrics["brier_after_ts"],
            })
        })
        .collect();
    Ok(Group {
        id,
        label,
        setup,
        config,
        headline_state: headline_state.to_string(),
        headline,
        training: training_rows(members),
        modalities,
        chart: format!("{figure_prefix}/ece_brier"),
    })
}

fn build_modality(
    modality: &str,
    runs: &[&LoadedRun],
    figure_prefix: &str,
) -> anyhow::Result<ModalityReport> {
    let mut names: Vec<&str> = runs
        .iter()
        .flat_map(|r| r.result.states.iter().map(|s| s.name.as_str()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    names.sort_by_key(|n| state_rank(n));

    // Per state: (seed, metrics) in seed order.
    let per_state = |name: &str| -> Vec<(u64, &StateMetrics)> {
        runs.iter()
            .filter_map(|r| Some((r.result.seed, &r.result.state(name)?.metrics)))
            .collect()
    };
    let paired = |a: &[(u64, &StateMetrics)], b: &[(u64, &StateMetrics)], keys: &[&str]| {
        let mut out = BTreeMap::new();
        for def in METRICS.iter().filter(|d| keys.contains(&d.key)) {
            let diffs: Vec<f64> = a
                .iter()
                .filter_map(|(seed, ma)| {
                    let (_, mb) = b.iter().find(|(s, _)| s == seed)?;
                    Some((def.get)(ma) - (def.get)(mb)).filter(|d| d.is_finite())
                })
                .collect();
            if let Some(stat) = Stat::of(&diffs) {
                out.insert(def.key.to_string(), stat);
            }
        }
        out
    };
    let all_keys = metric_keys();
    let original = per_state(ORIGINAL_STATE);
    let retrain = per_state(RETRAIN_STATE);

    let mut states = Vec::new();
    for name in names {
        let values = per_state(name);
        let metrics = METRICS
            .iter()
            .filter_map(|def| {
                let xs: Vec<f64> = values
                    .iter()
                    .map(|(_, m)| (def.get)(m))
                    .filter(|x| x.is_finite())
                    .collect();
                Some((def.key.to_string(), Stat::of(&xs)?))
            })
            .collect();
        let minus_original = if name == ORIGINAL_STATE {
            BTreeMap::new()
        } else {
            paired(&values, &original, &all_keys)
        };
        let (minus_retrain, gap_to_retrain) = if name == RETRAIN_STATE {
            (BTreeMap::new(), BTreeMap::new())
        } else {
            (
                paired(&values, &retrain, RETRAIN_GAP_METRICS),
                absolute_gaps(&values, &retrain),
            )
        };
        let context = || format!("pooling the reliability bins of {modality} / {name}");
        let before: Vec<&ReliabilityDiagram> = values
            .iter()
            .map(|(_, m)| &m.reliability.before_ts)
            .collect();
        let after: Vec<&ReliabilityDiagram> = values
            .iter()
            .map(|(_, m)| &m.reliability.after_ts)
            .collect();
        let single: Vec<RecalRun<'_>> = values
            .iter()
            .filter_map(|(seed, m)| {
                Some((*seed, m.recalibration.as_ref()?, &m.reliability.before_ts))
            })
            .collect();
        let recalibrated = recalibrated_reports(&single)
            .with_context(|| format!("the recalibrators of {modality} / {name}"))?;
        // An averaged predictor's recalibrators over the runs that have it.
        let averaged = |what: &str, get: fn(&StateMetrics) -> Option<&Averaged>| {
            let runs: Vec<RecalRun<'_>> = values
                .iter()
                .filter_map(|(seed, m)| averaged_run(get(m)?, *seed))
                .collect();
            recalibrated_reports(&runs).with_context(|| format!("{what} of {modality} / {name}"))
        };
        let ensemble = averaged("the ensemble", |m| Some(&m.ensemble.as_ref()?.metrics))?;
        let mc_dropout = averaged("MC dropout", |m| Some(&m.mc_dropout.as_ref()?.metrics))?;
        let mut ensemble_members: Vec<usize> = values
            .iter()
            .filter_map(|(_, m)| Some(m.ensemble.as_ref()?.seeds.len()))
            .collect();
        ensemble_members.sort_unstable();
        ensemble_members.dedup();
        let recalibrated_figure = (!recalibrated.is_empty()).then(|| {
            format!(
                "{figure_prefix}/recalibrated-{modality}-{}",
                file_safe(name)
            )
        });
        states.push(StateReport {
            state: name.to_string(),
            seeds: values.iter().map(|(s, _)| *s).collect(),
            metrics,
            minus_original,
            minus_retrain,
            gap_to_retrain,
            reliability_before_ts: pool_reliability(&before).with_context(context)?,
            reliability_after_ts: pool_reliability(&after).with_context(context)?,
            figure: format!("{figure_prefix}/reliability-{modality}-{}", file_safe(name)),
            recalibrated,
            recalibrated_figure,
            ensemble,
            ensemble_members,
            mc_dropout,
        });
    }
    Ok(ModalityReport {
        modality: modality.to_string(),
        runs: runs
            .iter()
            .map(|r| RunRef {
                seed: r.result.seed,
                run_id: r.result.run_id.clone(),
                path: r.path.clone(),
            })
            .collect(),
        states,
        failed: runs
            .iter()
            .flat_map(|r| {
                r.result.failed.iter().map(|f| FailedRef {
                    state: f.name.clone(),
                    seed: r.result.seed,
                    error: f.error.clone(),
                })
            })
            .collect(),
    })
}

/// `|a − b|` per metric paired by seed (a metric a seed lacks in either is
/// skipped), and per seed the mean of the four efficacy gaps when all four
/// are there ([`AVG_GAP`]); then mean ± std over seeds.
fn absolute_gaps(a: &[(u64, &StateMetrics)], b: &[(u64, &StateMetrics)]) -> BTreeMap<String, Stat> {
    let get = |m: &StateMetrics, key: &str| {
        METRICS
            .iter()
            .find(|d| d.key == key)
            .map_or(f64::NAN, |d| (d.get)(m))
    };
    let mut per_key: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (seed, ma) in a {
        let Some((_, mb)) = b.iter().find(|(s, _)| s == seed) else {
            continue;
        };
        let gap = |key: &str| (get(ma, key) - get(mb, key)).abs();
        for key in EFFICACY_GAP_METRICS.iter().chain(&CALIBRATION_GAP_METRICS) {
            let g = gap(key);
            if g.is_finite() {
                per_key.entry((*key).to_string()).or_default().push(g);
            }
        }
        let four: Vec<f64> = EFFICACY_GAP_METRICS.iter().map(|k| gap(k)).collect();
        if four.iter().all(|g| g.is_finite()) {
            let mean = four.iter().sum::<f64>() / four.len() as f64;
            per_key.entry(AVG_GAP.to_string()).or_default().push(mean);
        }
    }
    per_key
        .into_iter()
        .filter_map(|(k, xs)| Some((k, Stat::of(&xs)?)))
        .collect()
}

/// Pools reliability diagrams with the same bins: counts summed, mean
/// confidence and accuracy weighted by count.
///
/// # Errors
/// When the diagrams' bin edges differ.
pub fn pool_reliability(diagrams: &[&ReliabilityDiagram]) -> anyhow::Result<ReliabilityDiagram> {
    let Some(first) = diagrams.first() else {
        return Ok(ReliabilityDiagram {
            bins: Vec::new(),
            n: 0,
            saturated: 0,
        });
    };
    for d in diagrams {
        let same = d.bins.len() == first.bins.len()
            && d.bins
                .iter()
                .zip(&first.bins)
                .all(|(a, b)| a.lower == b.lower && a.upper == b.upper);
        if !same {
            bail!("the runs' reliability diagrams have different bins");
        }
    }
    let bins = first
        .bins
        .iter()
        .enumerate()
        .map(|(i, edges)| {
            let mut count = 0;
            let (mut conf, mut acc, mut weight) = (0.0, 0.0, 0.0);
            for d in diagrams {
                let b = &d.bins[i];
                count += b.count;
                if let (Some(c), Some(a)) = (b.mean_confidence, b.accuracy)
                    && b.count > 0
                {
                    let w = b.count as f64;
                    conf += w * c;
                    acc += w * a;
                    weight += w;
                }
            }
            let has = weight > 0.0;
            ReliabilityBin {
                lower: edges.lower,
                upper: edges.upper,
                count,
                mean_confidence: has.then(|| conf / weight),
                accuracy: has.then(|| acc / weight),
            }
        })
        .collect();
    Ok(ReliabilityDiagram {
        bins,
        n: diagrams.iter().map(|d| d.n).sum(),
        saturated: diagrams.iter().map(|d| d.saturated).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatten_names_nested_fields_and_list_items() {
        let v = serde_json::json!({"a": {"b": 1, "c": "x"}, "l": [{"m": true}], "e": []});
        let mut out = BTreeMap::new();
        flatten("", &v, &mut out);
        let got: Vec<(&str, &str)> = out.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [("a.b", "1"), ("a.c", "x"), ("e", "[]"), ("l[0].m", "true")]
        );
    }

    #[test]
    fn pooling_weights_by_count() {
        let bin = |count, conf: Option<f64>, acc: Option<f64>| ReliabilityBin {
            lower: 0.5,
            upper: 1.0,
            count,
            mean_confidence: conf,
            accuracy: acc,
        };
        let a = ReliabilityDiagram {
            bins: vec![bin(1, Some(0.6), Some(1.0))],
            n: 1,
            saturated: 0,
        };
        let b = ReliabilityDiagram {
            bins: vec![bin(3, Some(0.8), Some(0.0))],
            n: 3,
            saturated: 1,
        };
        let empty = ReliabilityDiagram {
            bins: vec![bin(0, None, None)],
            n: 0,
            saturated: 0,
        };
        let p = pool_reliability(&[&a, &b, &empty]).unwrap();
        // confidence (1·0.6 + 3·0.8) / 4 = 0.75; accuracy (1·1 + 3·0) / 4 = 0.25.
        assert_eq!(p.bins[0].count, 4);
        assert!((p.bins[0].mean_confidence.unwrap() - 0.75).abs() < 1e-15);
        assert!((p.bins[0].accuracy.unwrap() - 0.25).abs() < 1e-15);
        assert_eq!((p.n, p.saturated), (4, 1));
        let e = pool_reliability(&[&empty]).unwrap();
        assert_eq!(e.bins[0].accuracy, None);
        let other = ReliabilityDiagram {
            bins: vec![ReliabilityBin {
                lower: 0.0,
                ..bin(1, Some(0.5), Some(0.5))
            }],
            n: 1,
            saturated: 0,
        };
        assert!(pool_reliability(&[&a, &other]).is_err());
    }
}
