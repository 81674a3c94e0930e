//! The configuration of one run: a TOML file with the spec's defaults,
//! command-line overrides, and validation that names the field at fault.
//!
//! ```toml
//! protocol = "corrected"   # or "original": train_on = clean, bn = train, reduction = sum, first-order only
//! seed = 100
//!
//! [data]
//! train_subset = 0         # 0 = the whole training set; else a class-balanced subset
//! test_subset = 0          # 0 = the whole test set
//! retain_eval = 5000       # retained images evaluated per state (a seeded sample; 0 = all)
//!
//! [modality]
//! kind = "random"          # random | noise | label
//! remove_prop = 0.05
//! pool_prop = 0.20
//! sigma = 0.2
//!
//! [model]
//! width = 64
//! dropout = 0.0
//!
//! [train]
//! on = "modified"          # modified | clean
//! epochs = 3
//! batch_size = 128
//! lr = 0.01
//! momentum = 0.9
//! weight_decay = 5e-4
//!
//! [[unlearn]]
//! method = "first_order"
//! tau = 2e-5
//!
//! [eval]
//! bins = 10
//! batch_size = 500
//! mc_dropout_passes = 0
//! bootstrap = 0
//! mia_features = ["confidence"]   # SVC membership attack features; [] = none
//! recalibrators = []              # beside temperature scaling: ts, vs, ms, dirichlet, hist, iso, platt, sb
//! ensemble = 0                    # deep-ensemble members (0 = none; else >= 2)
//!
//! [eval.recalibration.hist]       # any recalibrator's settings, e.g.
//! bins = 15
//! ```

use std::path::Path;

use muq_data::ModalityConfig;
use muq_efficacy::MiaFeature;
use muq_resnet::{BnPolicy, ResNetConfig, SgdConfig, TrainConfig};
use muq_unlearn::Method;
use serde::{Deserialize, Serialize};

/// Equal-width bins of the binned calibration errors unless told otherwise
/// (`eval.bins`, `muq metrics --bins`): the spec's 10.
pub const DEFAULT_BINS: usize = 10;

/// The most bins a binned calibration error may have (`eval.bins`,
/// `muq metrics --bins`): far beyond any useful resolution, and a bound on
/// the memory they take.
pub const MAX_BINS: u32 = 10_000;

/// A configuration error: the field (as a dotted TOML path) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML does not parse or does not fit the schema (unknown field,
    /// wrong type).
    #[error("{origin}: {message}")]
    Parse {
        /// The file, or "command line".
        origin: String,
        /// toml's message, which names the key and position.
        message: String,
    },
    /// A value is impossible.
    #[error("config field `{field}`: {reason}")]
    Invalid {
        /// Dotted path of the field, e.g. `modality.remove_prop`.
        field: String,
        /// Why, and what to use instead.
        reason: String,
    },
}

/// Which study protocol a run follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The fixed protocol (default): the model is trained on the modified
    /// data, so the forget set is data it actually learned.
    #[default]
    Corrected,
    /// Exactly what the original notebook did: train on clean data,
    /// first-order unlearning with BatchNorm in training mode and a summed
    /// gradient.
    Original,
}

/// Which training set the base model sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainOn {
    /// The training set with the modality's corruptions (default).
    #[default]
    Modified,
    /// The clean training set (the original).
    Clean,
}

/// `[data]`: which part of CIFAR-10 a run uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Class-balanced subset of the training set (0 = all 50,000).
    pub train_subset: usize,
    /// Class-balanced subset of the test set before the 50/50 split (0 = all
    /// 10,000).
    pub test_subset: usize,
    /// How many retained images are evaluated per state (a seeded sample;
    /// 0 = every retained image).
    pub retain_eval: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            train_subset: 0,
            test_subset: 0,
            retain_eval: 5000,
        }
    }
}

/// `[train]`: how the base model is trained (the fields of
/// [`TrainConfig`], spelled out flat so unknown keys are rejected).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Clean or modified training data; `None` = the protocol's choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<TrainOn>,
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// SGD learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay, added to the gradient before momentum.
    pub weight_decay: f64,
}

impl Default for TrainSection {
    fn default() -> Self {
        let t = TrainConfig::default();
        Self {
            on: None,
            epochs: t.epochs,
            batch_size: t.batch_size,
            lr: t.sgd.lr,
            momentum: t.sgd.momentum,
            weight_decay: t.sgd.weight_decay,
        }
    }
}

impl TrainSection {
    /// The muq-resnet training configuration.
    pub fn config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            sgd: SgdConfig {
                lr: self.lr,
                momentum: self.momentum,
                weight_decay: self.weight_decay,
            },
        }
    }
}

/// `[eval]`: how every model state is evaluated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Equal-width bins of ECE, MCE and the reliability diagram.
    pub bins: usize,
    /// Images per forward pass (only speed and memory depend on it).
    pub batch_size: usize,
    /// MC-dropout passes per state (0 = off; needs `model.dropout > 0`).
    pub mc_dropout_passes: usize,
    /// Bootstrap resamples for confidence intervals of the evaluation-half
    /// metrics (0 = off).
    pub bootstrap: usize,
    /// Features of the SVC membership-inference attack whose MIA-efficacy
    /// is measured per state (`confidence`, `entropy`, `modified_entropy`,
    /// `correctness`, `prob`); default `["confidence"]`, the field's
    /// headline; `[]` = no SVC attack (UA/RA/TA and the loss AUC are always
    /// measured). Each costs one SVC fit on ~10,000 samples per state.
    /// Left out of the serialised config at its default, so configs
    /// written before it existed keep their ids.
    #[serde(skip_serializing_if = "is_default_mia")]
    pub mia_features: Vec<MiaFeature>,
    /// Recalibrators fitted per state on the calibration half and measured
    /// on the evaluation half, the forget set and the retain sample, beside
    /// temperature scaling (which always runs): `ts`, `vs`, `ms`,
    /// `dirichlet`, `hist`, `iso`, `platt`, `sb`, each with its defaults
    /// ([`muq_calibrate::RecalibrationConfig`]). Default `[]`; left out of
    /// the serialised config when empty, so configs written before it
    /// existed keep their ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recalibrators: Vec<muq_calibrate::Method>,
    /// The recalibrators' settings, each defaulting to its method's
    /// defaults (a table per method, e.g. `[eval.recalibration.ms] lambda =
    /// 0.01`; [`muq_calibrate::RecalibrationConfig`]). Left out of the
    /// serialised config at its default.
    #[serde(skip_serializing_if = "is_default_recalibration")]
    pub recalibration: muq_calibrate::RecalibrationConfig,
    /// Deep-ensemble members per state (0 = none, else at least 2): member
    /// `j` is the base model trained with seed `seed + j` on the same
    /// training data (member 0 is the run's own model), unlearned by each
    /// method on the same forget set with its methods' streams seeded by
    /// `seed + j`; a state's ensemble is the mean of its members' softmax
    /// ([`crate::evaluate::Ensemble`]). Costs `ensemble − 1` more base
    /// models (from the cache when they exist) and unlearnings. Left out of
    /// the serialised config at 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub ensemble: usize,
}

fn is_default_recalibration(c: &muq_calibrate::RecalibrationConfig) -> bool {
    *c == muq_calibrate::RecalibrationConfig::default()
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The most members a deep ensemble may have (`eval.ensemble`).
pub const MAX_ENSEMBLE: usize = 64;

fn is_default_mia(features: &[MiaFeature]) -> bool {
    features == [MiaFeature::Confidence]
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            bins: DEFAULT_BINS,
            batch_size: 500,
            mc_dropout_passes: 0,
            bootstrap: 0,
            mia_features: vec![MiaFeature::Confidence],
            recalibrators: Vec::new(),
            recalibration: muq_calibrate::RecalibrationConfig::default(),
            ensemble: 0,
        }
    }
}

/// The whole configuration of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Study protocol.
    pub protocol: Protocol,
    /// Run seed: every random choice derives from it through a named stream.
    pub seed: u64,
    /// Data selection.
    pub data: DataConfig,
    /// Forget-set modality.
    pub modality: ModalityConfig,
    /// Model architecture.
    pub model: ResNetConfig,
    /// Base-model training.
    pub train: TrainSection,
    /// Unlearning methods, applied each to the base model.
    pub unlearn: Vec<Method>,
    /// Evaluation.
    pub eval: EvalConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            protocol: Protocol::default(),
            seed: 100,
            data: DataConfig::default(),
            modality: ModalityConfig::default(),
            model: ResNetConfig::default(),
            train: TrainSection::default(),
            unlearn: vec![Method::default()],
            eval: EvalConfig::default(),
        }
    }
}

/// Parses `--set key=value` overrides into a TOML table: `key` is a dotted
/// path (`train.epochs`, `modality.kind`), `value` a TOML literal or a bare
/// string.
pub fn apply_override(root: &mut toml::Table, assignment: &str) -> Result<(), ConfigError> {
    let origin = || "command line".to_string();
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| ConfigError::Parse {
            origin: origin(),
            message: format!("override `{assignment}` is not of the form key=value"),
        })?;
    let key = key.trim();
    let raw = raw.trim();
    let value: toml::Value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts
        .pop()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ConfigError::Parse {
            origin: origin(),
            message: format!("override `{assignment}` has an empty key"),
        })?;
    let mut table = root;
    for part in parts {
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| ConfigError::Invalid {
            field: key.to_string(),
            reason: format!("`{part}` is not a table"),
        })?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

impl RunConfig {
    /// Reads a TOML file (or the defaults when `path` is `None`), applies the
    /// `key=value` overrides, and validates the result.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self, ConfigError> {
        let (mut table, origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Io {
                    path: p.display().to_string(),
                    source,
                })?;
                let table = text
                    .parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse {
                        origin: p.display().to_string(),
                        message: e.to_string(),
                    })?;
                (table, p.display().to_string())
            }
            None => (toml::Table::new(), "defaults".to_string()),
        };
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        let origin = if overrides.is_empty() {
            origin
        } else {
            format!("{origin} with overrides {}", overrides.join(" "))
        };
        let cfg: RunConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| schema_error(e, &origin))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML string (tests, presets).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: RunConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: "config".into(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The training set the base model sees, after the protocol.
    pub fn train_on(&self) -> TrainOn {
        self.train.on.unwrap_or(match self.protocol {
            Protocol::Corrected => TrainOn::Modified,
            Protocol::Original => TrainOn::Clean,
        })
    }

    /// Checks every value that can be checked before data is loaded, naming
    /// the field (data-dependent checks, e.g. the proportions against the
    /// training-set size, happen when the data is loaded, still before
    /// training).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: String| {
            Err(ConfigError::Invalid {
                field: field.to_string(),
                reason,
            })
        };
        self.model.validate().map_err(|e| prefixed("model", e))?;
        if self.model.num_classes != muq_data::NUM_CLASSES {
            return invalid(
                "model.num_classes",
                format!(
                    "{} does not fit CIFAR-10, whose labels are the {n} classes 0-{}: set \
                     model.num_classes = {n} or leave it out",
                    self.model.num_classes,
                    muq_data::NUM_CLASSES - 1,
                    n = muq_data::NUM_CLASSES
                ),
            );
        }
        if let Err(muq_data::DataError::InvalidConfig { field, reason }) =
            self.modality.validate_values()
        {
            return invalid(&format!("modality.{field}"), reason);
        }
        self.train
            .config()
            .validate()
            .map_err(|e| prefixed("train", e))?;
        if self.eval.bins == 0 || self.eval.bins > MAX_BINS as usize {
            return invalid(
                "eval.bins",
                format!(
                    "{} is not in 1..={MAX_BINS} (the spec uses 10)",
                    self.eval.bins
                ),
            );
        }
        let mut features = self.eval.mia_features.clone();
        features.sort_by_key(|f| f.name());
        if let Some(w) = features.windows(2).find(|w| w[0] == w[1]) {
            return invalid(
                "eval.mia_features",
                format!("`{}` is listed twice; list each feature once", w[0]),
            );
        }
        let mut recalibrators = self.eval.recalibrators.clone();
        recalibrators.sort();
        if let Some(w) = recalibrators.windows(2).find(|w| w[0] == w[1]) {
            return invalid(
                "eval.recalibrators",
                format!("`{}` is listed twice; list each recalibrator once", w[0]),
            );
        }
        check_recalibration(&self.eval.recalibration)?;
        if self.eval.ensemble == 1 || self.eval.ensemble > MAX_ENSEMBLE {
            return invalid(
                "eval.ensemble",
                format!(
                    "{} members: use 0 (no ensemble) or 2..={MAX_ENSEMBLE} (5 is the usual deep \
                     ensemble)",
                    self.eval.ensemble
                ),
            );
        }
        if self.seed.checked_add(self.eval.ensemble as u64).is_none() {
            return invalid(
                "eval.ensemble",
                format!(
                    "member seeds are seed + 0..{}, which overflows with seed = {}: use a smaller seed",
                    self.eval.ensemble, self.seed
                ),
            );
        }
        if self.eval.batch_size == 0 {
            return invalid("eval.batch_size", "must be at least 1".into());
        }
        if self.eval.mc_dropout_passes > 0 && self.model.dropout <= 0.0 {
            return invalid(
                "eval.mc_dropout_passes",
                "MC dropout needs a model with dropout: set model.dropout (e.g. 0.5)".into(),
            );
        }
        if self.unlearn.is_empty() {
            return invalid(
                "unlearn",
                "list at least one method (e.g. first_order)".into(),
            );
        }
        for (i, m) in self.unlearn.iter().enumerate() {
            m.validate()
                .map_err(|e| prefixed_string(&format!("unlearn[{i}]"), e.to_string()))?;
        }
        let mut names: Vec<String> = self.unlearn.iter().map(|m| m.state_name()).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return invalid(
                "unlearn",
                format!(
                    "method `{}` is listed twice; give each entry a distinct `name`",
                    w[0]
                ),
            );
        }
        if self.protocol == Protocol::Original {
            if self.train.on == Some(TrainOn::Modified) {
                return invalid(
                    "train.on",
                    "protocol = \"original\" trains on clean data; drop train.on or use protocol = \"corrected\"".into(),
                );
            }
            for (i, m) in self.unlearn.iter().enumerate() {
                if !m.is_original_first_order() {
                    return invalid(
                        &format!("unlearn[{i}]"),
                        "protocol = \"original\" runs first-order unlearning only, with bn = \"train\" \
                         and reduction = \"sum\"; use protocol = \"corrected\" for other methods"
                            .into(),
                    );
                }
            }
        }
        Ok(())
    }

    /// The BatchNorm policy of the first first-order method, if any (for
    /// reports).
    pub fn first_order_bn(&self) -> Option<BnPolicy> {
        self.unlearn.iter().find_map(|m| m.first_order_bn())
    }
}

/// A value that does not fit the schema (wrong type, negative count, unknown
/// key), as an error naming the field: `config field `train.epochs`:
/// invalid type: string "abc", expected a whole number >= 0 (in …)`.
fn schema_error(e: serde_path_to_error::Error<toml::de::Error>, origin: &str) -> ConfigError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let message = inner
        .message()
        .replace("expected usize", "expected a whole number >= 0")
        .replace("expected u64", "expected a whole number >= 0")
        .replace("expected u8", "expected a whole number from 0 to 255")
        .replace("expected f64", "expected a number");
    if path.is_empty() || path == "." {
        return ConfigError::Parse {
            origin: origin.to_string(),
            message,
        };
    }
    ConfigError::Invalid {
        field: path,
        reason: format!("{message} (in {origin})"),
    }
}

/// Checks `[eval.recalibration]` before any work: each recalibrator's
/// settings in range, named by their dotted path.
fn check_recalibration(c: &muq_calibrate::RecalibrationConfig) -> Result<(), ConfigError> {
    let fail = |field: &str, reason: String| {
        Err(ConfigError::Invalid {
            field: format!("eval.recalibration.{field}"),
            reason,
        })
    };
    let at_least = |field: &str, x: f64, min: f64, strict: bool| {
        let ok = x.is_finite() && if strict { x > min } else { x >= min };
        if ok {
            Ok(())
        } else {
            let bound = if strict { "above" } else { "at least" };
            fail(field, format!("{x} must be a finite number {bound} {min}"))
        }
    };
    let newton = |method: &str, n: &muq_calibrate::NewtonConfig| {
        if n.max_iterations == 0 {
            return fail(
                &format!("{method}.newton.max_iterations"),
                "must be at least 1 (the default is 100)".into(),
            );
        }
        at_least(
            &format!("{method}.newton.gradient_tolerance"),
            n.gradient_tolerance,
            0.0,
            true,
        )
    };
    let bins = |field: &str, n: usize| {
        if n == 0 || n > MAX_BINS as usize {
            return fail(field, format!("{n} is not in 1..={MAX_BINS}"));
        }
        Ok(())
    };
    let search = &c.ts.search;
    at_least(
        "ts.search.min_temperature",
        search.min_temperature,
        0.0,
        true,
    )?;
    at_least(
        "ts.search.max_temperature",
        search.max_temperature,
        search.min_temperature,
        true,
    )?;
    at_least("ts.search.tolerance", search.tolerance, 0.0, true)?;
    if search.max_iterations == 0 {
        return fail(
            "ts.search.max_iterations",
            "must be at least 1 (the default is 100)".into(),
        );
    }
    newton("vs", &c.vs.newton)?;
    for (method, lambda, mu, n) in [
        ("ms", c.ms.lambda, c.ms.mu, &c.ms.newton),
        (
            "dirichlet",
            c.dirichlet.lambda,
            c.dirichlet.mu,
            &c.dirichlet.newton,
        ),
    ] {
        at_least(&format!("{method}.lambda"), lambda, 0.0, false)?;
        at_least(&format!("{method}.mu"), mu, 0.0, false)?;
        newton(method, n)?;
    }
    bins("hist.bins", c.hist.bins)?;
    at_least("platt.c", c.platt.c, 0.0, true)?;
    newton("platt", &c.platt.newton)?;
    bins("sb.bins", c.sb.bins)?;
    at_least("sb.c", c.sb.c, 0.0, true)?;
    newton("sb", &c.sb.newton)
}

fn prefixed(section: &str, e: muq_resnet::ResnetError) -> ConfigError {
    match e {
        muq_resnet::ResnetError::Config { field, reason } => ConfigError::Invalid {
            field: format!("{section}.{field}"),
            reason,
        },
        other => prefixed_string(section, other.to_string()),
    }
}

fn prefixed_string(section: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        field: section.to_string(),
        reason: message,
    }
}
