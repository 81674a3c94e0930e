//! Stage 4, evaluation: every state's metrics on the calibration,
//! evaluation, forget and retain sets, and (with `eval.ensemble`) the deep
//! ensemble of every state.

use anyhow::Context as _;
use muq_resnet::ResNet;
use muq_unlearn::UnlearnContext;

use super::base_model::{Compute, cached_or_trained};
use super::data::RunData;
use super::unlearn::UnlearnedState;
use super::{RunOptions, say};
use crate::config::RunConfig;
use crate::evaluate::{EvalSets, SetLogits, evaluate_averaged, evaluate_logits};
use crate::result::{FailedState, ORIGINAL_STATE, StateResult};

/// What [`evaluate_states`] measured.
pub struct Evaluated {
    /// Every evaluated state, `original` first.
    pub states: Vec<StateResult>,
    /// With an ensemble, each evaluated state's own logits (its member 0),
    /// in the order of `states`; empty without.
    pub member0: Vec<SetLogits>,
}

/// Evaluates the base model (as [`ORIGINAL_STATE`]) and every unlearned
/// state. A state whose evaluation fails is recorded in `failed` and left
/// out; the others are kept.
///
/// # Errors
/// When the base model cannot be evaluated.
pub fn evaluate_states(
    cfg: &RunConfig,
    data: &RunData,
    base: &ResNet,
    unlearned: &[UnlearnedState<'_>],
    failed: &mut Vec<FailedState>,
    opts: &RunOptions,
) -> anyhow::Result<Evaluated> {
    let sets = data.eval_sets();
    let seed = cfg.seed;
    let mut out = Evaluated {
        states: Vec::with_capacity(unlearned.len() + 1),
        member0: Vec::new(),
    };
    say(opts.progress, format!("evaluating: {ORIGINAL_STATE}"));
    let z = SetLogits::of(base, &sets, &cfg.eval)?;
    out.states.push(StateResult {
        name: ORIGINAL_STATE.into(),
        method: None,
        report: None,
        metrics: evaluate_logits(base, &z, &sets, &cfg.eval, seed)?,
    });
    if cfg.eval.ensemble > 0 {
        out.member0.push(z);
    }
    for state in unlearned {
        let name = &state.name;
        say(opts.progress, format!("evaluating: {name}"));
        let evaluated = SetLogits::of(&state.model, &sets, &cfg.eval).and_then(|z| {
            let m = evaluate_logits(&state.model, &z, &sets, &cfg.eval, seed)?;
            Ok((z, m))
        });
        match evaluated {
            Ok((z, metrics)) => {
                out.states.push(StateResult {
                    name: name.clone(),
                    method: Some(serde_json::to_value(state.method)?),
                    report: Some(state.report.clone()),
                    metrics,
                });
                if cfg.eval.ensemble > 0 {
                    out.member0.push(z);
                }
            }
            Err(e) => {
                say(opts.progress, format!("evaluating `{name}` FAILED: {e:#}"));
                failed.push(FailedState {
                    name: name.clone(),
                    method: serde_json::to_value(state.method)?,
                    error: format!("evaluating: {e:#}"),
                });
            }
        }
    }
    Ok(out)
}

/// The extra members of a run's deep ensemble (`eval.ensemble`): member
/// `j ≥ 1` is the base model of seed `seed + j` trained on the run's own
/// training data (so under the corrected protocol a `random` run's members
/// are the clean models the runs of seeds `seed + j` train, shared through
/// the cache), unlearned by each method on the run's forget set with the
/// method's streams seeded by `seed + j`.
pub struct Ensemble<'a> {
    /// The run's config.
    pub cfg: &'a RunConfig,
    /// The run's data.
    pub data: &'a RunData,
    /// How base models are computed.
    pub compute: Compute<'a>,
    /// The run's unlearning context (member 0's).
    pub ctx: &'a UnlearnContext<'a>,
    /// The run's options.
    pub opts: &'a RunOptions,
}

impl Ensemble<'_> {
    /// Makes every extra member, and sets each evaluated state's
    /// `metrics.ensemble` from `member0` (the states' own logits, in the
    /// order of `results`) and the members' logits. A member whose
    /// unlearning or evaluation fails is recorded in `failed` and that
    /// state gets no ensemble; the other states keep theirs.
    ///
    /// # Errors
    /// When a member's base model cannot be trained or loaded.
    pub fn evaluate(
        &self,
        results: &mut [StateResult],
        member0: Vec<SetLogits>,
        failed: &mut Vec<FailedState>,
    ) -> anyhow::Result<()> {
        let cfg = self.cfg;
        let progress = self.opts.progress;
        let sets: EvalSets<'_> = self.data.eval_sets();
        let seeds: Vec<u64> = (0..cfg.eval.ensemble as u64)
            .map(|j| cfg.seed + j)
            .collect();
        let mut logits: Vec<Option<Vec<SetLogits>>> =
            member0.into_iter().map(|z| Some(vec![z])).collect();
        for &member_seed in &seeds[1..] {
            say(progress, format!("ensemble member of seed {member_seed}"));
            let base = cached_or_trained(cfg, member_seed, self.data, self.compute, self.opts)
                .with_context(|| format!("the ensemble member of seed {member_seed}"))?
                .model;
            let ctx = UnlearnContext {
                model: &base,
                seed: member_seed,
                ..*self.ctx
            };
            for (state, zs) in results.iter().zip(logits.iter_mut()) {
                let Some(members) = zs else { continue };
                let method = cfg.unlearn.iter().find(|m| m.state_name() == state.name);
                let z = match method {
                    None => SetLogits::of(&base, &sets, &cfg.eval),
                    Some(method) => {
                        say(
                            progress,
                            format!("  unlearning: {} (seed {member_seed})", state.name),
                        );
                        muq_unlearn::unlearn(method, &ctx)
                            .map_err(anyhow::Error::new)
                            .and_then(|out| SetLogits::of(&out.model, &sets, &cfg.eval))
                    }
                };
                match z {
                    Ok(z) => members.push(z),
                    Err(e) => {
                        say(
                            progress,
                            format!(
                                "ensemble member {} of seed {member_seed} FAILED: {e:#}",
                                state.name
                            ),
                        );
                        failed.push(FailedState {
                            name: format!("{} (ensemble member of seed {member_seed})", state.name),
                            method: state.method.clone().unwrap_or_default(),
                            error: format!("{e:#}"),
                        });
                        *zs = None;
                    }
                }
            }
        }
        let k = cfg.model.num_classes;
        for (state, zs) in results.iter_mut().zip(&logits) {
            let Some(members) = zs else { continue };
            let refs: Vec<&SetLogits> = members.iter().collect();
            match evaluate_averaged(&refs, k, &sets, &cfg.eval, cfg.seed) {
                Ok(metrics) => {
                    state.metrics.ensemble = Some(crate::evaluate::Ensemble {
                        seeds: seeds.clone(),
                        metrics,
                    });
                }
                Err(e) => failed.push(FailedState {
                    name: format!("{} (ensemble)", state.name),
                    method: state.method.clone().unwrap_or_default(),
                    error: format!("evaluating the ensemble: {e:#}"),
                }),
            }
        }
        Ok(())
    }
}
