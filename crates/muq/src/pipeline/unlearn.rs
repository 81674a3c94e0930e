//! Stage 3, unlearning: every method of `cfg.unlearn` applied to the base
//! model, each giving one named state.

use std::collections::BTreeMap;
use std::time::Instant;

use muq_resnet::{ResNet, TrainConfig};
use muq_unlearn::{Method, UnlearnContext};

use super::data::RunData;
use super::{RunOptions, say};
use crate::config::RunConfig;
use crate::result::FailedState;

/// One model after unlearning.
pub struct UnlearnedState<'c> {
    /// The state's name ([`Method::state_name`]).
    pub name: String,
    /// The method that made it.
    pub method: &'c Method,
    /// The method's report, as written to `result.json`.
    pub report: serde_json::Value,
    /// The unlearned model.
    pub model: ResNet,
}

/// What [`unlearn_all`] made.
pub struct Unlearned<'c> {
    /// The states, in `cfg.unlearn` order, failed methods left out.
    pub states: Vec<UnlearnedState<'c>>,
    /// The methods that failed, with their errors.
    pub failed: Vec<FailedState>,
    /// Wall seconds of each method, by state name.
    pub seconds: BTreeMap<String, f64>,
}

/// The unlearning context of `model` (of seed `seed`) on the run's data.
pub fn context<'a>(
    data: &'a RunData,
    model: &'a ResNet,
    train_config: &'a TrainConfig,
    seed: u64,
    opts: &RunOptions,
) -> UnlearnContext<'a> {
    UnlearnContext {
        model,
        trained_on: data.trained_on(),
        forget_data: &data.modified,
        forget: &data.modification.forget,
        retain: &data.modification.retain,
        train_config,
        seed,
        progress: opts.progress,
    }
}

/// Applies every method of `cfg.unlearn` in `ctx`. A method that fails
/// (diverges, or leaves a model whose logits are not finite) is recorded
/// with its error; the other states are kept.
///
/// # Errors
/// Only when a method's report or settings do not serialise.
pub fn unlearn_all<'c>(
    cfg: &'c RunConfig,
    ctx: &UnlearnContext<'_>,
    opts: &RunOptions,
) -> anyhow::Result<Unlearned<'c>> {
    let mut out = Unlearned {
        states: Vec::with_capacity(cfg.unlearn.len()),
        failed: Vec::new(),
        seconds: BTreeMap::new(),
    };
    for method in &cfg.unlearn {
        let name = method.state_name();
        say(opts.progress, format!("unlearning: {name}"));
        let t = Instant::now();
        let result = muq_unlearn::unlearn(method, ctx);
        out.seconds.insert(name.clone(), t.elapsed().as_secs_f64());
        match result {
            Ok(done) => out.states.push(UnlearnedState {
                name,
                method,
                report: serde_json::to_value(&done.report)?,
                model: done.model,
            }),
            Err(e) => {
                say(opts.progress, format!("unlearning `{name}` FAILED: {e}"));
                out.failed.push(FailedState {
                    name,
                    method: serde_json::to_value(method)?,
                    error: format!("unlearning: {e}"),
                });
            }
        }
    }
    Ok(out)
}
