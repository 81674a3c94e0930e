//! Which unlearning method to run, with its settings: what a run's config
//! file holds under `[[unlearn]]`.

use muq_resnet::{BnPolicy, Reduction, SgdConfig, TrainConfig};
use serde::{Deserialize, Serialize};

use crate::{Result, UnlearnError};

/// An unlearning method and its settings.
///
/// Serialised internally tagged by `method`, with the settings beside it;
/// every setting may be left out and takes the default given on its field:
///
/// ```toml
/// [[unlearn]]
/// method = "first_order"   # first_order | second_order | gradient_ascent | fine_tune | retrain
/// tau = 2e-5
/// bn = "train"             # train | frozen
/// reduction = "sum"        # sum | mean
///
/// [[unlearn]]
/// method = "first_order"
/// name = "first_order_frozen"   # state name in results (default: the method's short name)
/// bn = "frozen"
/// ```
///
/// An unknown setting is an error that names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum Method {
    /// `θ ← θ + τ·g`, `g` the gradient over the forget set (the original).
    FirstOrder(FirstOrderConfig),
    /// `θ ← θ + τ·(H + λI)⁻¹g`, a damped Newton step on the retained loss.
    SecondOrder(SecondOrderConfig),
    /// Stochastic gradient *ascent* on the forget set's loss.
    GradientAscent(GradientAscentConfig),
    /// SGD on the retain set, starting from the trained model.
    FineTune(FineTuneConfig),
    /// Training from scratch on the retain set: the gold standard.
    Retrain(RetrainConfig),
}

impl Default for Method {
    /// The original's method: first-order, τ = 2e-5, BatchNorm in training
    /// mode, summed gradient.
    fn default() -> Self {
        Method::FirstOrder(FirstOrderConfig::default())
    }
}

impl Method {
    /// Every method's short name, in the order of the enum.
    pub const SHORT_NAMES: [&'static str; 5] = [
        "first_order",
        "second_order",
        "gradient_ascent",
        "fine_tune",
        "retrain",
    ];

    /// The method's stable short name: `first_order`, `second_order`,
    /// `gradient_ascent`, `fine_tune` or `retrain` (the `method` tag).
    pub fn short_name(&self) -> &'static str {
        match self {
            Method::FirstOrder(_) => "first_order",
            Method::SecondOrder(_) => "second_order",
            Method::GradientAscent(_) => "gradient_ascent",
            Method::FineTune(_) => "fine_tune",
            Method::Retrain(_) => "retrain",
        }
    }

    /// The name of the model state this method produces in results: the
    /// entry's `name` if given, else [`short_name`](Self::short_name).
    pub fn state_name(&self) -> String {
        self.custom_name()
            .map_or_else(|| self.short_name().to_string(), str::to_string)
    }

    fn custom_name(&self) -> Option<&str> {
        match self {
            Method::FirstOrder(c) => c.name.as_deref(),
            Method::SecondOrder(c) => c.name.as_deref(),
            Method::GradientAscent(c) => c.name.as_deref(),
            Method::FineTune(c) => c.name.as_deref(),
            Method::Retrain(c) => c.name.as_deref(),
        }
    }

    /// The method called `short_name` with its default settings.
    ///
    /// # Errors
    /// [`UnlearnError::Config`] listing the known names if there is no such
    /// method.
    pub fn from_short_name(short_name: &str) -> Result<Method> {
        Ok(match short_name.trim() {
            "first_order" => Method::FirstOrder(FirstOrderConfig::default()),
            "second_order" => Method::SecondOrder(SecondOrderConfig::default()),
            "gradient_ascent" => Method::GradientAscent(GradientAscentConfig::default()),
            "fine_tune" => Method::FineTune(FineTuneConfig::default()),
            "retrain" => Method::Retrain(RetrainConfig::default()),
            other => {
                return Err(UnlearnError::Config {
                    method: "unlearn",
                    field: "method",
                    reason: format!(
                        "unknown method {other:?}; expected one of {}",
                        Self::SHORT_NAMES.join(", ")
                    ),
                });
            }
        })
    }

    /// Whether this is exactly the original notebook's method: first-order
    /// with `bn = "train"` and `reduction = "sum"` (any τ).
    pub fn is_original_first_order(&self) -> bool {
        matches!(
            self,
            Method::FirstOrder(FirstOrderConfig {
                bn: BnPolicy::Train,
                reduction: Reduction::Sum,
                ..
            })
        )
    }

    /// The BatchNorm policy of a first-order method; `None` for the others.
    pub fn first_order_bn(&self) -> Option<BnPolicy> {
        match self {
            Method::FirstOrder(c) => Some(c.bn),
            _ => None,
        }
    }

    /// Checks every setting, naming the field that is wrong.
    ///
    /// # Errors
    /// [`UnlearnError::Config`] with the method's short name and the field.
    pub fn validate(&self) -> Result<()> {
        let m = self.short_name();
        if let Some(name) = self.custom_name() {
            check_name(m, name)?;
        }
        match self {
            Method::FirstOrder(c) => {
                positive_finite(m, "tau", c.tau)?;
                batch_size(m, c.batch_size, c.bn)
            }
            Method::SecondOrder(c) => {
                if let Some(tau) = c.tau {
                    positive_finite(m, "tau", tau)?;
                }
                if !(c.damping.is_finite() && c.damping >= 0.0) {
                    return bad(
                        m,
                        "damping",
                        format!(
                            "must be a non-negative number (e.g. 0.01), got {}",
                            c.damping
                        ),
                    );
                }
                at_least_one(m, "max_iters", c.max_iters)?;
                if !(c.tol.is_finite() && c.tol >= 0.0) {
                    return bad(
                        m,
                        "tol",
                        format!("must be a non-negative number, got {}", c.tol),
                    );
                }
                positive_finite(m, "lissa_scale", c.lissa_scale)?;
                at_least_one(m, "hessian_samples", c.hessian_samples)?;
                positive_finite(m, "fd_eps", c.fd_eps)?;
                batch_size(m, c.batch_size, c.bn)
            }
            Method::GradientAscent(c) => {
                at_least_one(m, "steps", c.steps)?;
                positive_finite(m, "lr", c.lr)?;
                batch_size(m, c.batch_size, c.bn)
            }
            Method::FineTune(c) => c.train_config().validate().map_err(|e| match e {
                muq_resnet::ResnetError::Config { field, reason } => UnlearnError::Config {
                    method: m,
                    field,
                    reason,
                },
                other => other.into(),
            }),
            Method::Retrain(_) => Ok(()),
        }
    }
}

/// Settings of first-order unlearning (Warnecke et al., NDSS 2023, removal
/// case): `θ ← θ + τ·g` for every trainable tensor, where
/// `g = Σ over forget batches of ∇θ Σ_i CE(f(x_i), y_i)` (divided by the
/// forget-set size under `reduction = "mean"`), taken over the forget set as
/// the model sees it (with its corruptions).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FirstOrderConfig {
    /// State name in results; default `first_order`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Step size τ; default 2e-5 (the original).
    pub tau: f64,
    /// BatchNorm while `g` is taken: `train` (default, the original: batch
    /// statistics, and the running statistics absorb every forget batch) or
    /// `frozen` (running statistics, buffers untouched).
    pub bn: BnPolicy,
    /// `sum` (default, the original) or `mean` over the forget set.
    pub reduction: Reduction,
    /// Images per forward/backward pass; default 128 (under `bn = "train"`
    /// it sets the batches whose statistics normalise).
    pub batch_size: usize,
}

impl Default for FirstOrderConfig {
    fn default() -> Self {
        Self {
            name: None,
            tau: 2e-5,
            bn: BnPolicy::Train,
            reduction: Reduction::Sum,
            batch_size: 128,
        }
    }
}

/// Which linear solver second-order unlearning uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Solver {
    /// Conjugate gradients (default); stops early on negative curvature.
    #[default]
    Cg,
    /// LiSSA (Agarwal et al., 2017) on a fixed Hessian sample, which makes
    /// it Richardson iteration `x ← x + (g − (H + λI)x)/s`; converges when
    /// `s = lissa_scale` exceeds the largest eigenvalue of `H + λI`.
    Lissa,
}

impl Solver {
    /// `cg` or `lissa`.
    pub fn as_str(self) -> &'static str {
        match self {
            Solver::Cg => "cg",
            Solver::Lissa => "lissa",
        }
    }
}

/// Which curvature matrix second-order unlearning inverts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Curvature {
    /// The generalised Gauss–Newton matrix `G = (1/N) Σ Jᵀ(diag p − ppᵀ)J`
    /// (default): positive semi-definite, products exact (forward-mode
    /// `J·v`, backward-mode `Jᵀ·u`).
    #[default]
    GaussNewton,
    /// The Hessian, by central differences of gradients. On a ReLU network
    /// the gradient jumps at every activation kink, so these products are
    /// noisy and only approximately linear (see
    /// [`FiniteDiffHvp`](crate::FiniteDiffHvp)); exact for smooth losses.
    Hessian,
}

/// Settings of second-order unlearning: one damped Newton step on the loss
/// of the retained data,
///
/// ```text
/// θ ← θ + τ·x,   (H + λI)·x = g
/// ```
///
/// with `g` the *summed* cross-entropy gradient over the forget set (as in
/// first-order), `H` the curvature of the *mean* cross-entropy over a
/// seeded sample of the retain set (BatchNorm frozen) — the Gauss–Newton
/// matrix by default, or the Hessian — `λ = damping`, and `τ = 1/|retain|`
/// unless set. With that τ the step is Newton's (Gauss–Newton's) step on
/// `Σ_retain CE`, whose gradient at the trained θ is `−g` when θ minimised
/// the loss over all training data — the influence-function estimate of
/// removing the forget set.
///
/// candle has no double backward: a Gauss–Newton product costs one
/// forward-mode pass and one gradient pass over the sample; a Hessian
/// product, by central differences of gradients, two gradient passes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecondOrderConfig {
    /// State name in results; default `second_order`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Scale of the step; default (left out) `1/|retain|`, the Newton step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tau: Option<f64>,
    /// Damping λ added to the curvature's diagonal; default 0.01. The
    /// Gauss–Newton matrix is singular and a ResNet's Hessian indefinite, so
    /// λ > 0 is usually needed.
    pub damping: f64,
    /// `gauss_newton` (default) or `hessian`.
    pub curvature: Curvature,
    /// `cg` (default) or `lissa`.
    pub solver: Solver,
    /// Most solver iterations (one curvature-vector product each); default 20.
    pub max_iters: usize,
    /// Stop once the relative residual `‖(H+λI)x − g‖/‖g‖` is at most this;
    /// default 1e-3 (finite differences in f32 limit what is reachable).
    pub tol: f64,
    /// LiSSA's scale `s`, above the largest eigenvalue of `H + λI`; default
    /// 100. Unused by `cg`.
    pub lissa_scale: f64,
    /// Retained images the curvature is taken over (a seeded uniform sample;
    /// all of them if the retain set is smaller); default 1024.
    pub hessian_samples: usize,
    /// Relative finite-difference step of `curvature = "hessian"`: the
    /// perturbation `εv` has norm `fd_eps·(1 + ‖θ‖)`; default 1e-3.
    pub fd_eps: f64,
    /// BatchNorm while the forget gradient `g` is taken; default `frozen`
    /// (the curvature is always taken with BatchNorm frozen, at the running
    /// statistics that pass leaves).
    pub bn: BnPolicy,
    /// Images per forward/backward pass; default 128.
    pub batch_size: usize,
}

impl Default for SecondOrderConfig {
    fn default() -> Self {
        Self {
            name: None,
            tau: None,
            damping: 0.01,
            curvature: Curvature::GaussNewton,
            solver: Solver::Cg,
            max_iters: 20,
            tol: 1e-3,
            lissa_scale: 100.0,
            hessian_samples: 1024,
            fd_eps: 1e-3,
            bn: BnPolicy::Frozen,
            batch_size: 128,
        }
    }
}

/// Settings of gradient ascent on the forget set.
///
/// Each step takes **one batch** of `batch_size` forget images and moves θ
/// *up* the gradient of their mean cross-entropy: `θ ← θ + lr·∇θ mean CE`
/// (plain SGD, no momentum or weight decay). Batches walk through the forget
/// set in a seeded shuffled order, reshuffled on each new pass; the last
/// batch of a pass holds the remainder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GradientAscentConfig {
    /// State name in results; default `gradient_ascent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Number of ascent steps (batches); default 10.
    pub steps: usize,
    /// Learning rate; default 0.01 (the training rate).
    pub lr: f64,
    /// Forget images per step; default 128.
    pub batch_size: usize,
    /// BatchNorm during the steps: `train` (default, as in training: running
    /// statistics absorb the forget batches) or `frozen`.
    pub bn: BnPolicy,
}

impl Default for GradientAscentConfig {
    fn default() -> Self {
        Self {
            name: None,
            steps: 10,
            lr: 0.01,
            batch_size: 128,
            bn: BnPolicy::Train,
        }
    }
}

/// Settings of fine-tuning: the trained model is trained further on the
/// retain set with muq-resnet's training loop (fresh optimiser state, its
/// own shuffling stream).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FineTuneConfig {
    /// State name in results; default `fine_tune`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Passes over the retain set; default 1.
    pub epochs: usize,
    /// Images per step; default 128.
    pub batch_size: usize,
    /// Learning rate; default 0.01.
    pub lr: f64,
    /// SGD momentum; default 0.9.
    pub momentum: f64,
    /// L2 weight decay; default 5e-4.
    pub weight_decay: f64,
}

impl Default for FineTuneConfig {
    fn default() -> Self {
        let sgd = SgdConfig::default();
        Self {
            name: None,
            epochs: 1,
            batch_size: 128,
            lr: sgd.lr,
            momentum: sgd.momentum,
            weight_decay: sgd.weight_decay,
        }
    }
}

impl FineTuneConfig {
    /// The equivalent muq-resnet training configuration.
    pub fn train_config(&self) -> TrainConfig {
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

/// Settings of retraining: none beyond the name — the model is built with
/// the base model's architecture and initialisation seed and trained with
/// the base [`TrainConfig`] and run seed, on the retain set only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrainConfig {
    /// State name in results; default `retrain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn bad<T>(method: &'static str, field: &'static str, reason: String) -> Result<T> {
    Err(UnlearnError::Config {
        method,
        field,
        reason,
    })
}

fn positive_finite(method: &'static str, field: &'static str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        bad(method, field, format!("must be a positive number, got {v}"))
    }
}

fn at_least_one(method: &'static str, field: &'static str, v: usize) -> Result<()> {
    if v >= 1 {
        Ok(())
    } else {
        bad(method, field, "must be at least 1".into())
    }
}

fn batch_size(method: &'static str, v: usize, bn: BnPolicy) -> Result<()> {
    match bn {
        BnPolicy::Train if v < 2 => bad(
            method,
            "batch_size",
            format!("must be at least 2 with bn = \"train\" (BatchNorm needs a batch), got {v}"),
        ),
        _ => at_least_one(method, "batch_size", v),
    }
}

fn check_name(method: &'static str, name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return bad(
            method,
            "name",
            format!("{name:?} must be non-empty and use only ASCII letters, digits, `_` and `-`"),
        );
    }
    if name == "original" {
        return bad(
            method,
            "name",
            "`original` is the state before unlearning; choose another name".into(),
        );
    }
    Ok(())
}
