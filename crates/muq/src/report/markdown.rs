//! `summary.md`: the original's table, the extended view and the figures of
//! every group, rendered from a [`Report`].

use std::collections::BTreeMap;

use muq_calibrate::ConfidenceInterval;
use muq_data::ModalityKind;

use super::format::{d4, f4};
use super::model::*;
use super::reference::ORIGINAL_TRAIN_ACCURACY;
use super::registry::*;
use super::{HEADLINE_STATE, ORIGINAL_STATE, RETRAIN_STATE};

fn pm(s: &Stat) -> String {
    format!("{} ± {}", f4(s.mean), f4(s.std))
}

fn dpm(s: &Stat) -> String {
    format!("{} ± {}", d4(s.mean), f4(s.std))
}

fn cell(map: &BTreeMap<String, Stat>, key: &str) -> String {
    map.get(key).map_or_else(|| "–".to_string(), pm)
}

fn dcell(map: &BTreeMap<String, Stat>, key: &str) -> String {
    map.get(key).map_or_else(|| "–".to_string(), dpm)
}

fn before_after(map: &BTreeMap<String, Stat>, metric: &str) -> String {
    format!(
        "{} → {}",
        cell(map, &format!("{metric}_before_ts")),
        cell(map, &format!("{metric}_after_ts"))
    )
}

fn seeds_text(seeds: &[u64]) -> String {
    seeds
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `summary.md`: the original's table, the extended view and the figures of
/// every group.
pub fn render_markdown(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# muq report\n");
    let _ = writeln!(
        w,
        "{} runs in {} configuration group(s). Every number is `mean ± std` over seeds, the std \
         being the population standard deviation (ddof = 0). TS = temperature scaling, its \
         temperature T fitted per state on the calibration half; ECE, Brier and NLL are on the \
         evaluation half. Differences between states are paired by seed.\n",
        report.runs,
        report.groups.len()
    );
    if report.groups.len() > 1 {
        let _ = writeln!(
            w,
            "The runs differ in more than modality and seed, so each configuration has its own \
             tables; numbers are never averaged across configurations.\n"
        );
    }
    for g in &report.groups {
        render_group(w, report, g);
    }
    md
}

/// One group's section: setup, training, the original's table, the
/// extended view, the changes and gaps, efficacy, recalibrators, baselines
/// and figures.
fn render_group(w: &mut String, report: &Report, g: &Group) {
    render_setup(w, report, g);
    render_training(w, g);
    render_original_table(w, report, g);
    render_extended(w, g);
    render_change_from_original(w, g);
    render_gap_to_retrain(w, g);
    render_efficacy(w, g);
    render_recalibrated(w, g);
    render_baselines(w, g);
    render_figures(w, g);
}

/// The group's heading, its setup line and its runs per modality.
fn render_setup(w: &mut String, report: &Report, g: &Group) {
    use std::fmt::Write as _;
    if report.groups.len() > 1 {
        let _ = writeln!(w, "## Group {}: {}\n", g.id, g.label);
    } else {
        let _ = writeln!(w, "## Runs\n");
    }
    let s = &g.setup;
    let n_train = s
        .n_train
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" / ");
    let methods = s
        .methods
        .iter()
        .map(|m| format!("`{m}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let bn = s
        .first_order_bn
        .as_ref()
        .map_or_else(String::new, |b| format!(" · first-order `bn = {b}`"));
    let compute = s
        .compute
        .iter()
        .map(|(c, n)| format!("`{c}` ({n} runs)"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        w,
        "Setup: protocol `{}` · `train_on = {}` · width {} · {} epochs · {} training images · \
         methods {}{} · computed with {}.\n",
        s.protocol, s.train_on, s.width, s.epochs, n_train, methods, bn, compute
    );
    for m in &g.modalities {
        let seeds: Vec<u64> = m.runs.iter().map(|r| r.seed).collect();
        let _ = writeln!(
            w,
            "- {}: {} runs, seeds {}",
            modality_title(&m.modality),
            m.runs.len(),
            seeds_text(&seeds)
        );
    }
    let _ = writeln!(w);
}

/// Base-model training per epoch, beside the original study's log.
fn render_training(w: &mut String, g: &Group) {
    use std::fmt::Write as _;
    if !g.training.is_empty() {
        let models = g.training[0].accuracy.n;
        let _ = writeln!(w, "### Base-model training\n");
        let _ = writeln!(
            w,
            "Per epoch, over the group's {models} distinct base model(s) (runs that share a \
             cached model count once): training-mode loss and accuracy and wall time, beside the \
             training accuracy the original study's log shows (approximate).\n"
        );
        let _ = writeln!(
            w,
            "| epoch | models | loss | training accuracy | seconds | original study's training accuracy |"
        );
        let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|");
        for row in &g.training {
            let reference = ORIGINAL_TRAIN_ACCURACY
                .get(row.epoch - 1)
                .map_or_else(|| "–".to_string(), |a| format!("≈ {a:.2}"));
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {:.0} ± {:.0} | {} |",
                row.epoch,
                row.accuracy.n,
                pm(&row.loss),
                pm(&row.accuracy),
                row.seconds.mean,
                row.seconds.std,
                reference
            );
        }
        let _ = writeln!(w);
    }
}

/// The original's table: the headline state's ECE and Brier after TS
/// beside the original study's numbers.
fn render_original_table(w: &mut String, report: &Report, g: &Group) {
    use std::fmt::Write as _;
    // The original's table.
    let _ = writeln!(w, "### The original's table\n");
    if g.headline_state == HEADLINE_STATE {
        let _ = writeln!(
            w,
            "State `{HEADLINE_STATE}` (after first-order unlearning), ECE and Brier after \
             temperature scaling, beside the original study's numbers.\n"
        );
    } else {
        let _ = writeln!(
            w,
            "No run in this group has a `{HEADLINE_STATE}` state, so this table shows the \
             `{}` state (before unlearning), ECE and Brier after temperature scaling, beside \
             the original study's numbers (which are after first-order unlearning).\n",
            g.headline_state
        );
    }
    let _ = writeln!(
        w,
        "| modality | runs | ECE | Brier | original study's ECE | original study's Brier |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|");
    for row in &g.headline {
        let reference = report.reference.iter().find(|r| r.modality == row.modality);
        let (re, rb) = reference.map_or_else(
            || ("–".to_string(), "–".to_string()),
            |r| {
                (
                    format!("{} ± {}", f4(r.ece.mean), f4(r.ece.std)),
                    format!("{} ± {}", f4(r.brier.mean), f4(r.brier.std)),
                )
            },
        );
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            modality_title(&row.modality),
            row.ece.n,
            pm(&row.ece),
            pm(&row.brier),
            re,
            rb
        );
    }
    let _ = writeln!(
        w,
        "\nThe original study's columns are copied from its ResNet-18 notebook (spec section 8: \
         3 epochs, 3 runs, `train_on = clean`, first-order `bn = train`, after temperature \
         scaling); they are not computed from these runs.\n"
    );
}

/// Every state's accuracies and before → after metrics, per modality.
fn render_extended(w: &mut String, g: &Group) {
    use std::fmt::Write as _;
    // Extended view.
    let _ = writeln!(w, "### Extended view\n");
    let _ = writeln!(
        w,
        "Accuracy on the evaluation half, the forget set and the retain sample; ECE, Brier and \
         NLL on the evaluation half before → after TS; adaptive (equal-mass) ECE after TS; the \
         fitted temperature T.\n"
    );
    for m in &g.modalities {
        let _ = writeln!(
            w,
            "#### {} ({} runs)\n",
            modality_title(&m.modality),
            m.runs.len()
        );
        let _ = writeln!(
            w,
            "| state | runs | acc. evaluation | acc. forget | acc. retain | ECE before → after TS \
             | Brier before → after TS | NLL before → after TS | adaptive ECE after TS | T |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for st in &m.states {
            let x = &st.metrics;
            let _ = writeln!(
                w,
                "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                st.state,
                st.seeds.len(),
                cell(x, "accuracy_evaluation"),
                cell(x, "accuracy_forget"),
                cell(x, "accuracy_retain"),
                before_after(x, "ece"),
                before_after(x, "brier"),
                before_after(x, "nll"),
                cell(x, "adaptive_ece_after_ts"),
                cell(x, "temperature"),
            );
        }
        let _ = writeln!(w);
        for f in &m.failed {
            let _ = writeln!(
                w,
                "- `{}` failed in the run with seed {} and is left out: {}",
                f.state,
                f.seed,
                f.error.lines().next().unwrap_or_default()
            );
        }
        if !m.failed.is_empty() {
            let _ = writeln!(w);
        }
    }
}

/// Each state minus `original`, paired by seed.
fn render_change_from_original(w: &mut String, g: &Group) {
    use std::fmt::Write as _;
    // Change from original.
    let changes: Vec<(&ModalityReport, &StateReport)> = g
        .modalities
        .iter()
        .flat_map(|m| m.states.iter().map(move |s| (m, s)))
        .filter(|(_, s)| !s.minus_original.is_empty())
        .collect();
    if !changes.is_empty() {
        let _ = writeln!(
            w,
            "### Change from `{ORIGINAL_STATE}`\n\nEach state minus `{ORIGINAL_STATE}` of the \
             same run, then mean ± std over seeds.\n"
        );
        let _ = writeln!(
            w,
            "| modality | state | pairs | Δ acc. evaluation | Δ acc. forget | Δ acc. retain | \
             Δ ECE after TS | Δ Brier after TS | Δ NLL after TS | Δ T |"
        );
        let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (m, s) in changes {
            let x = &s.minus_original;
            let _ = writeln!(
                w,
                "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
                modality_title(&m.modality),
                s.state,
                x.get("ece_after_ts").map_or(0, |s| s.n),
                dcell(x, "accuracy_evaluation"),
                dcell(x, "accuracy_forget"),
                dcell(x, "accuracy_retain"),
                dcell(x, "ece_after_ts"),
                dcell(x, "brier_after_ts"),
                dcell(x, "nll_after_ts"),
                dcell(x, "temperature"),
            );
        }
        let _ = writeln!(w);
    }
}

/// Each state minus `retrain`, paired by seed.
fn render_gap_to_retrain(w: &mut String, g: &Group) {
    use std::fmt::Write as _;
    // Gap to retrain.
    let gaps: Vec<(&ModalityReport, &StateReport)> = g
        .modalities
        .iter()
        .flat_map(|m| m.states.iter().map(move |s| (m, s)))
        .filter(|(_, s)| !s.minus_retrain.is_empty())
        .collect();
    if !gaps.is_empty() {
        let _ = writeln!(
            w,
            "### Gap to `{RETRAIN_STATE}`\n\nEach state minus `{RETRAIN_STATE}` (the gold \
             standard) of the same run, then mean ± std over seeds: 0 means the method behaves \
             like retraining from scratch.\n"
        );
        let _ = writeln!(
            w,
            "| modality | state | pairs | ECE after TS | Brier after TS | acc. forget |"
        );
        let _ = writeln!(w, "|---|---|---:|---:|---:|---:|");
        for (m, s) in gaps {
            let x = &s.minus_retrain;
            let _ = writeln!(
                w,
                "| {} | `{}` | {} | {} | {} | {} |",
                modality_title(&m.modality),
                s.state,
                x.get("ece_after_ts").map_or(0, |s| s.n),
                dcell(x, "ece_after_ts"),
                dcell(x, "brier_after_ts"),
                dcell(x, "accuracy_forget"),
            );
        }
        let _ = writeln!(w);
    }
}

/// The chart and the reliability diagrams, linked.
fn render_figures(w: &mut String, g: &Group) {
    use std::fmt::Write as _;
    // Figures.
    let _ = writeln!(w, "### Figures\n");
    let _ = writeln!(
        w,
        "ECE and Brier after TS per modality and state (error bars: ± std over seeds; \
         [SVG]({0}.svg)):\n\n![ECE and Brier after temperature scaling]({0}.png)\n",
        g.chart
    );
    let _ = writeln!(
        w,
        "Reliability diagrams of the evaluation half, bins pooled over seeds (counts summed, \
         confidence and accuracy count-weighted), before and after TS. Each title links its \
         SVG.\n"
    );
    for m in &g.modalities {
        let _ = writeln!(w, "#### {}\n", modality_title(&m.modality));
        for st in &m.states {
            let _ = writeln!(
                w,
                "[`{1}`]({0}.svg)\n\n![reliability diagram: {2}, {1}]({0}.png)\n",
                st.figure,
                st.state,
                modality_title(&m.modality)
            );
        }
    }
    if has_recalibrators(g) {
        let _ = writeln!(
            w,
            "Reliability diagrams of the evaluation half after each recalibrator, one panel \
             per recalibrator (the first: uncalibrated), bins pooled over seeds. Each title \
             links its SVG.\n"
        );
        for m in &g.modalities {
            for st in &m.states {
                if let Some(fig) = &st.recalibrated_figure {
                    let _ = writeln!(
                        w,
                        "[{2}, `{1}`, after each recalibrator]({0}.svg)\n\n\
                         ![reliability diagrams after each recalibrator: {2}, {1}]({0}.png)\n",
                        fig,
                        st.state,
                        modality_title(&m.modality)
                    );
                }
            }
        }
    }
}

/// Whether some state of the group has recalibrators.
fn has_recalibrators(g: &Group) -> bool {
    g.modalities
        .iter()
        .flat_map(|m| &m.states)
        .any(|s| !s.recalibrated.is_empty())
}

/// `estimate [lower, upper]` of the bootstrap interval `key`, or `–`.
fn ci_cell(cis: &BTreeMap<String, ConfidenceInterval>, key: &str) -> String {
    cis.get(key).map_or_else(
        || "–".to_string(),
        |c| format!("{} [{}, {}]", d4(c.estimate), d4(c.lower), d4(c.upper)),
    )
}

/// Whether some entry of some state carries bootstrap intervals.
fn has_intervals<'a>(entries: impl IntoIterator<Item = &'a RecalibratedReport>) -> bool {
    entries.into_iter().any(|r| !r.bootstrap.is_empty())
}

/// The rows of one predictor's recalibrators in a state: `predictor` is
/// the table's predictor column, if it has one.
fn recal_rows(
    w: &mut String,
    state: &str,
    predictor: Option<&str>,
    entries: &[RecalibratedReport],
    intervals: bool,
) {
    use std::fmt::Write as _;
    for r in entries {
        let name = if r.method == UNCALIBRATED {
            r.method.clone()
        } else {
            format!("`{}`", r.method)
        };
        let x = &r.metrics;
        let _ = write!(w, "| `{state}` |");
        if let Some(p) = predictor {
            let _ = write!(w, " {p} |");
        }
        let _ = write!(
            w,
            " {} | {} | {} | {} | {} | {} |",
            name,
            r.seeds.len(),
            cell(x, "accuracy"),
            cell(x, "ece"),
            cell(x, "smooth_ece"),
            cell(x, "brier"),
        );
        if intervals {
            let _ = write!(
                w,
                " {} | {} |",
                ci_cell(&r.bootstrap, "ece_minus_ts"),
                ci_cell(&r.bootstrap, "brier_minus_ts")
            );
        }
        let _ = writeln!(w);
    }
}

/// The header of a recalibrator table (with a predictor column or not,
/// with the bootstrap columns or not).
fn recal_header(w: &mut String, predictor: bool, intervals: bool) {
    use std::fmt::Write as _;
    let (p, pa) = if predictor {
        (" predictor |", "---|")
    } else {
        ("", "")
    };
    let (c, ca) = if intervals {
        (
            " ECE − `ts` [95 % CI] | Brier − `ts` [95 % CI] |",
            "---:|---:|",
        )
    } else {
        ("", "")
    };
    let _ = writeln!(
        w,
        "| state |{p} recalibrator | runs | accuracy | ECE | smooth ECE | Brier |{c}"
    );
    let _ = writeln!(w, "|---|{pa}---|---:|---:|---:|---:|---:|{ca}");
}

const INTERVALS_NOTE: &str = "With `eval.bootstrap` and one run per row, the last columns give \
    the paired bootstrap difference to temperature scaling on the evaluation half (the same \
    resamples for both; percentile 95 % interval): an interval below 0 means the recalibrator \
    beats temperature scaling beyond the evaluation half's sampling noise, one that holds 0 \
    means no difference is shown.";

/// The table "ECE / smooth ECE / Brier after each recalibrator", per
/// modality and state; nothing when no run has recalibrators.
fn render_recalibrated(w: &mut String, g: &Group) {
    use std::fmt::Write as _;
    if !has_recalibrators(g) {
        return;
    }
    let intervals = has_intervals(
        g.modalities
            .iter()
            .flat_map(|m| &m.states)
            .flat_map(|s| &s.recalibrated),
    );
    let _ = writeln!(
        w,
        "### ECE / smooth ECE / Brier after each recalibrator\n\nEach recalibrator of \
         `eval.recalibrators` is fitted per state on the calibration half and measured on the \
         evaluation half; `uncalibrated` is the softmax itself, `ts` temperature scaling \
         through the same interface. Smooth ECE: Błasiok & Nakkiran's kernel estimate with \
         relplot's bandwidth; ECE on the configured equal-width bins. The top-label methods \
         (`hist`, `iso`, `platt`, `sb`) keep every prediction, so their accuracy is the \
         uncalibrated one. `summary.csv` and `summary.json` also hold the debiased L2 \
         calibration error, the NLL and the forget-set and retain-sample numbers.{}\n",
        if intervals {
            format!(" {INTERVALS_NOTE}")
        } else {
            String::new()
        }
    );
    for m in &g.modalities {
        if m.states.iter().all(|s| s.recalibrated.is_empty()) {
            continue;
        }
        let _ = writeln!(
            w,
            "#### {} ({} runs)\n",
            modality_title(&m.modality),
            m.runs.len()
        );
        recal_header(w, false, intervals);
        for st in &m.states {
            recal_rows(w, &st.state, None, &st.recalibrated, intervals);
        }
        let _ = writeln!(w);
    }
}

/// The table of the uncertainty baselines — deep ensemble and MC dropout —
/// per modality and state, before and after each recalibrator, beside the
/// single model; nothing when no run has either.
fn render_baselines(w: &mut String, g: &Group) {
    use std::fmt::Write as _;
    let states = || g.modalities.iter().flat_map(|m| &m.states);
    if states().all(|s| s.ensemble.is_empty() && s.mc_dropout.is_empty()) {
        return;
    }
    let intervals = has_intervals(states().flat_map(|s| {
        s.recalibrated
            .iter()
            .chain(&s.ensemble)
            .chain(&s.mc_dropout)
    }));
    let _ = writeln!(
        w,
        "### Uncertainty baselines: deep ensemble and MC dropout\n\n\
         Per state, the single model beside the deep ensemble (`eval.ensemble`: the mean softmax \
         of members trained with seeds seed, seed + 1, … on the same data and each unlearned by \
         the same method on the same forget set) and MC dropout (`eval.mc_dropout_passes`: the \
         mean softmax of stochastic passes), each before (`uncalibrated`) and after every \
         recalibrator, fitted on the calibration half and measured on the evaluation half.{}\n",
        if intervals {
            format!(" {INTERVALS_NOTE}")
        } else {
            String::new()
        }
    );
    for m in &g.modalities {
        if m.states
            .iter()
            .all(|s| s.ensemble.is_empty() && s.mc_dropout.is_empty())
        {
            continue;
        }
        let _ = writeln!(
            w,
            "#### {} ({} runs)\n",
            modality_title(&m.modality),
            m.runs.len()
        );
        recal_header(w, true, intervals);
        for st in &m.states {
            let members = st
                .ensemble_members
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("/");
            let ensemble = format!("ensemble of {members}");
            recal_rows(w, &st.state, Some("model"), &st.recalibrated, intervals);
            recal_rows(w, &st.state, Some(&ensemble), &st.ensemble, intervals);
            recal_rows(w, &st.state, Some("MC dropout"), &st.mc_dropout, intervals);
        }
        let _ = writeln!(w);
    }
}

/// The unlearning-efficacy tables: the field's UA / RA / TA / MIA-efficacy
/// beside the gaps to retrain, and calibration on the forget and retain
/// splits.
fn render_efficacy(w: &mut String, g: &Group) {
    use std::fmt::Write as _;
    let _ = writeln!(
        w,
        "### Unlearning efficacy\n\nThe field's measures (SalUn's names): UA = 1 − accuracy on \
         the forget set, RA = accuracy on the retain sample, TA = accuracy on the evaluation half \
         (under class-wise forgetting: on the remaining classes), MIA-efficacy = the fraction of \
         the forget set an RBF-SVC membership attack on the `{DEFAULT_MIA_FEATURE}` feature \
         calls non-member (trained on retain sample vs evaluation half), loss AUC = ROC AUC of \
         per-sample loss, forget set vs an equal-size evaluation sample (0.5 = \
         indistinguishable). Gaps are `|state − retrain|` paired by seed; Avg. Gap is their \
         mean over UA, RA, TA and MIA-efficacy; the calibration gaps are of ECE and Brier after \
         TS. A method forgets well when its gaps are near 0. – = not measured.\n"
    );
    for m in &g.modalities {
        let _ = writeln!(
            w,
            "#### {} ({} runs)\n",
            modality_title(&m.modality),
            m.runs.len()
        );
        if m.modality == ModalityKind::Class.as_str() {
            let _ = writeln!(
                w,
                "Class-wise forgetting: UA is on the forgotten class's training images; TA, \
                 the temperature and every calibration metric are on the remaining classes' \
                 test images, which is what matters once a class is gone.\n"
            );
        }
        let _ = writeln!(
            w,
            "| state | runs | UA | RA | TA | MIA-efficacy | loss AUC | Avg. Gap | ECE gap | \
             Brier gap |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for st in &m.states {
            let (x, gap) = (&st.metrics, &st.gap_to_retrain);
            let _ = writeln!(
                w,
                "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                st.state,
                st.seeds.len(),
                cell(x, "ua"),
                cell(x, "ra"),
                cell(x, "ta"),
                cell(x, "mia_efficacy"),
                cell(x, "loss_auc"),
                cell(gap, AVG_GAP),
                cell(gap, "ece_after_ts"),
                cell(gap, "brier_after_ts"),
            );
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(
        w,
        "Calibration on the forget set and the retain sample, after TS (temperature from the \
         calibration half):\n"
    );
    let _ = writeln!(
        w,
        "| modality | state | ECE forget | Brier forget | ECE retain | Brier retain |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|");
    for m in &g.modalities {
        for st in &m.states {
            let x = &st.metrics;
            let _ = writeln!(
                w,
                "| {} | `{}` | {} | {} | {} | {} |",
                modality_title(&m.modality),
                st.state,
                cell(x, "ece_forget_after_ts"),
                cell(x, "brier_forget_after_ts"),
                cell(x, "ece_retain_after_ts"),
                cell(x, "brier_retain_after_ts"),
            );
        }
    }
    let _ = writeln!(w);
}
