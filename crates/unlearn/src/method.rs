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
///                          # | random_label | salun | scrub | l1_sparse | neggrad_plus | fisher
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
    /// Random labels (RL): fine-tuning on the forget set relabelled at
    /// random, then on the retain set, every epoch.
    RandomLabel(RandomLabelConfig),
    /// SalUn: random labels restricted to the weights with the largest
    /// forget-loss gradient (a saliency mask).
    Salun(SalunConfig),
    /// SCRUB: a student that moves away from the original (teacher) on the
    /// forget set and stays close to it on the retain set.
    Scrub(ScrubConfig),
    /// ℓ1-sparse fine-tuning on the retain set with a decaying ℓ1 penalty.
    L1Sparse(L1SparseConfig),
    /// NegGrad+: descent on the retain loss and ascent on the forget loss,
    /// one objective.
    #[serde(rename = "neggrad_plus")]
    NegGradPlus(NegGradPlusConfig),
    /// Fisher forgetting: Gaussian noise shaped by the inverse diagonal
    /// Fisher information of the retain set.
    Fisher(FisherConfig),
}

/// The method's short name ([`Method::short_name`]), as in configs.
impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.short_name())
    }
}

/// A short name to the method with its default settings
/// ([`Method::from_short_name`]): `"scrub".parse::<Method>()`.
impl std::str::FromStr for Method {
    type Err = UnlearnError;

    fn from_str(s: &str) -> Result<Method> {
        Method::from_short_name(s)
    }
}

impl Default for Method {
    /// The original's method: first-order, τ = 2e-5, BatchNorm in training
    /// mode, summed gradient.
    fn default() -> Self {
        Method::FirstOrder(FirstOrderConfig::default())
    }
}

impl Method {
    /// The short name of the original study's method, first-order
    /// unlearning.
    pub const FIRST_ORDER: &'static str = "first_order";

    /// The short name of retraining from scratch on the retain set, the
    /// gold standard every other method is compared with.
    pub const RETRAIN: &'static str = "retrain";

    /// Every method's short name, in the order of the enum.
    pub const SHORT_NAMES: [&'static str; 11] = [
        Self::FIRST_ORDER,
        "second_order",
        "gradient_ascent",
        "fine_tune",
        Self::RETRAIN,
        "random_label",
        "salun",
        "scrub",
        "l1_sparse",
        "neggrad_plus",
        "fisher",
    ];

    /// The short names of the unlearning field's standard methods (random
    /// labels, SalUn, SCRUB, ℓ1-sparse, NegGrad+, Fisher forgetting), a
    /// suffix of [`SHORT_NAMES`](Self::SHORT_NAMES).
    pub const FIELD_NAMES: [&'static str; 6] = [
        "random_label",
        "salun",
        "scrub",
        "l1_sparse",
        "neggrad_plus",
        "fisher",
    ];

    /// The method's stable short name (the `method` tag): one of
    /// [`SHORT_NAMES`](Self::SHORT_NAMES).
    pub fn short_name(&self) -> &'static str {
        match self {
            Method::FirstOrder(_) => Self::FIRST_ORDER,
            Method::SecondOrder(_) => "second_order",
            Method::GradientAscent(_) => "gradient_ascent",
            Method::FineTune(_) => "fine_tune",
            Method::Retrain(_) => Self::RETRAIN,
            Method::RandomLabel(_) => "random_label",
            Method::Salun(_) => "salun",
            Method::Scrub(_) => "scrub",
            Method::L1Sparse(_) => "l1_sparse",
            Method::NegGradPlus(_) => "neggrad_plus",
            Method::Fisher(_) => "fisher",
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
            Method::RandomLabel(c) => c.name.as_deref(),
            Method::Salun(c) => c.name.as_deref(),
            Method::Scrub(c) => c.name.as_deref(),
            Method::L1Sparse(c) => c.name.as_deref(),
            Method::NegGradPlus(c) => c.name.as_deref(),
            Method::Fisher(c) => c.name.as_deref(),
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
            "random_label" => Method::RandomLabel(RandomLabelConfig::default()),
            "salun" => Method::Salun(SalunConfig::default()),
            "scrub" => Method::Scrub(ScrubConfig::default()),
            "l1_sparse" => Method::L1Sparse(L1SparseConfig::default()),
            "neggrad_plus" => Method::NegGradPlus(NegGradPlusConfig::default()),
            "fisher" => Method::Fisher(FisherConfig::default()),
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
            Method::FineTune(c) => c.train_config().validate().map_err(|e| resnet_config(m, e)),
            Method::Retrain(_) => Ok(()),
            Method::RandomLabel(c) => {
                at_least_one(m, "epochs", c.epochs)?;
                batch_size(m, c.batch_size, BnPolicy::Train)?;
                sgd(m, c.lr, c.momentum, c.weight_decay)
            }
            Method::Salun(c) => {
                if !(c.mask_fraction > 0.0 && c.mask_fraction <= 1.0) {
                    return bad(
                        m,
                        "mask_fraction",
                        format!(
                            "must be in (0, 1] (the share of weights updated), got {}",
                            c.mask_fraction
                        ),
                    );
                }
                at_least_one(m, "epochs", c.epochs)?;
                batch_size(m, c.batch_size, BnPolicy::Train)?;
                sgd(m, c.lr, c.momentum, c.weight_decay)
            }
            Method::Scrub(c) => {
                at_least_one(m, "epochs", c.epochs)?;
                if c.msteps > c.epochs {
                    return bad(
                        m,
                        "msteps",
                        format!(
                            "is {} but there are only {} epochs; max-steps run in the first \
                             msteps epochs",
                            c.msteps, c.epochs
                        ),
                    );
                }
                positive_finite(m, "kd_t", c.kd_t)?;
                non_negative(m, "ce_weight", c.ce_weight)?;
                non_negative(m, "kl_weight", c.kl_weight)?;
                if c.forget_batch_size < 2 {
                    return bad(
                        m,
                        "forget_batch_size",
                        format!(
                            "must be at least 2 (BatchNorm trains), got {}",
                            c.forget_batch_size
                        ),
                    );
                }

                batch_size(m, c.batch_size, BnPolicy::Train)?;
                sgd(m, c.lr, c.momentum, c.weight_decay)
            }
            Method::L1Sparse(c) => {
                at_least_one(m, "epochs", c.epochs)?;
                non_negative(m, "alpha", c.alpha)?;
                if c.no_l1_epochs > c.epochs {
                    return bad(
                        m,
                        "no_l1_epochs",
                        format!(
                            "is {} but there are only {} epochs",
                            c.no_l1_epochs, c.epochs
                        ),
                    );
                }
                batch_size(m, c.batch_size, BnPolicy::Train)?;
                sgd(m, c.lr, c.momentum, c.weight_decay)
            }
            Method::NegGradPlus(c) => {
                if !(c.alpha > 0.0 && c.alpha < 1.0) {
                    return bad(
                        m,
                        "alpha",
                        format!(
                            "must be in (0, 1): the retain weight, 1 − alpha the forget \
                             weight; got {}",
                            c.alpha
                        ),
                    );
                }
                at_least_one(m, "epochs", c.epochs)?;
                batch_size(m, c.batch_size, BnPolicy::Train)?;
                if c.forget_batch_size < 2 {
                    return bad(
                        m,
                        "forget_batch_size",
                        format!(
                            "must be at least 2 (BatchNorm trains), got {}",
                            c.forget_batch_size
                        ),
                    );
                }
                sgd(m, c.lr, c.momentum, c.weight_decay)
            }
            Method::Fisher(c) => positive_finite(m, "alpha", c.alpha),
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

/// Settings of random-label unlearning (RL), as in SalUn's reference code
/// (OPTML-Group/Unlearn-Saliency, `Classification/unlearn/RL.py`, CIFAR-10
/// branch): every epoch first walks the forget set in shuffled batches, each
/// image given a label drawn uniformly from all `k` classes (the true class
/// included, as `torch.randint(0, num_classes)` does), then the retain set
/// with its labels; one SGD step on the batch's mean cross-entropy per batch,
/// BatchNorm in training mode, one optimiser for the whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RandomLabelConfig {
    /// State name in results; default `random_label`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Epochs (each a forget pass then a retain pass); default 10
    /// (`--unlearn_epochs 10` in the reference's README).
    pub epochs: usize,
    /// Learning rate; default 0.013 (the README's CIFAR-10 example).
    pub lr: f64,
    /// SGD momentum; default 0.9 (`--momentum`).
    pub momentum: f64,
    /// L2 weight decay; default 5e-4 (`--weight_decay`).
    pub weight_decay: f64,
    /// Images per step, forget and retain batches alike; default 256
    /// (`--batch_size`).
    pub batch_size: usize,
}

impl Default for RandomLabelConfig {
    fn default() -> Self {
        Self {
            name: None,
            epochs: 10,
            lr: 0.013,
            momentum: 0.9,
            weight_decay: 5e-4,
            batch_size: 256,
        }
    }
}

/// Settings of SalUn (Fan et al., ICLR 2024): random-label unlearning whose
/// updates touch only the salient weights. The saliency of a weight is
/// `|Σ over forget batches of ∇θ mean CE|` at the trained model (BatchNorm
/// frozen, true labels — `Classification/generate_mask.py`); the
/// `mask_fraction` share of all trainable weights with the largest saliency,
/// taken globally, get mask 1, the rest 0. Every step multiplies the update
/// direction (gradient plus weight decay) by the mask before momentum, so
/// unmasked weights never move (the reference restores them after each
/// step).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SalunConfig {
    /// State name in results; default `salun`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Share of trainable weights updated, in (0, 1]; default 0.5 (the
    /// paper's default and the README's `mask/with_0.5.pt`).
    pub mask_fraction: f64,
    /// Epochs; default 10.
    pub epochs: usize,
    /// Learning rate; default 0.013.
    pub lr: f64,
    /// SGD momentum; default 0.9.
    pub momentum: f64,
    /// L2 weight decay; default 5e-4.
    pub weight_decay: f64,
    /// Images per step (also per saliency batch); default 256.
    pub batch_size: usize,
}

impl Default for SalunConfig {
    fn default() -> Self {
        let rl = RandomLabelConfig::default();
        Self {
            name: None,
            mask_fraction: 0.5,
            epochs: rl.epochs,
            lr: rl.lr,
            momentum: rl.momentum,
            weight_decay: rl.weight_decay,
            batch_size: rl.batch_size,
        }
    }
}

impl SalunConfig {
    /// The random-label settings the masked steps use.
    pub fn random_label(&self) -> RandomLabelConfig {
        RandomLabelConfig {
            name: None,
            epochs: self.epochs,
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            batch_size: self.batch_size,
        }
    }
}

/// Settings of SCRUB (Kurmanji et al., NeurIPS 2023; meghdadk/SCRUB,
/// `large_scale_unlearning.ipynb` with `thirdparty/repdistiller`): the
/// student starts as a copy of the model, the original is a frozen teacher
/// (BatchNorm in eval mode). Epoch `e = 1..=epochs`: if `e ≤ msteps`, one
/// *max* pass over the forget set, each batch a step on `−KL(teacher ‖
/// student)`; then one *min* pass over the retain set, each batch a step on
/// `ce_weight·CE + kl_weight·KL`. KL is `DistillKL`: `Σ p_t (log p_t − log
/// p_s)` with softmaxes at temperature `kd_t`, times `kd_t²`, divided by the
/// batch size. The student trains in BatchNorm training mode; one SGD
/// optimiser serves both passes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrubConfig {
    /// State name in results; default `scrub`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Epochs (`sgda_epochs`); default 3.
    pub epochs: usize,
    /// Epochs that begin with a max pass (`msteps`); default 2; at most
    /// `epochs`.
    pub msteps: usize,
    /// Learning rate (`sgda_learning_rate`); default 5e-4.
    pub lr: f64,
    /// SGD momentum (`sgda_momentum`); default 0.9.
    pub momentum: f64,
    /// L2 weight decay (`sgda_weight_decay`); default 5e-4.
    pub weight_decay: f64,
    /// Distillation temperature (`kd_T`); default 4.
    pub kd_t: f64,
    /// Weight of the retain cross-entropy in a min step (`gamma`); default
    /// 0.99.
    pub ce_weight: f64,
    /// Weight of the retain KL in a min step (`alpha`); default 0.001.
    pub kl_weight: f64,
    /// Forget images per max step; default 512 (the notebook's forget
    /// loader).
    pub forget_batch_size: usize,
    /// Retain images per min step; default 256 (the notebook's retain
    /// loader).
    pub batch_size: usize,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        Self {
            name: None,
            epochs: 3,
            msteps: 2,
            lr: 5e-4,
            momentum: 0.9,
            weight_decay: 5e-4,
            kd_t: 4.0,
            ce_weight: 0.99,
            kl_weight: 0.001,
            forget_batch_size: 512,
            batch_size: 256,
        }
    }
}

/// Settings of ℓ1-sparse unlearning (Jia et al., NeurIPS 2023;
/// OPTML-Group/Unlearn-Sparse, `unlearn/FT.py`, `FT_l1`): fine-tuning on
/// the retain set (BatchNorm in training mode) on `mean CE + α_e·‖θ‖₁`,
/// `‖θ‖₁` over every trainable parameter and `α_e` the linearly decaying
/// schedule of [`l1_alpha`](crate::l1_alpha).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct L1SparseConfig {
    /// State name in results; default `l1_sparse`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Epochs (`--unlearn_epochs`); default 10.
    pub epochs: usize,
    /// Initial ℓ1 weight α (`--alpha`); default 5e-4 (see
    /// docs/experiment.md: the reference scripts leave it to the user).
    pub alpha: f64,
    /// Final epochs without the penalty (`--no-l1-epochs`); default 0.
    pub no_l1_epochs: usize,
    /// Learning rate (`--unlearn_lr`); default 0.01.
    pub lr: f64,
    /// SGD momentum; default 0.9.
    pub momentum: f64,
    /// L2 weight decay; default 5e-4.
    pub weight_decay: f64,
    /// Images per step; default 256.
    pub batch_size: usize,
}

impl Default for L1SparseConfig {
    fn default() -> Self {
        Self {
            name: None,
            epochs: 10,
            alpha: 5e-4,
            no_l1_epochs: 0,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 5e-4,
            batch_size: 256,
        }
    }
}

/// Settings of NegGrad+ (Kurmanji et al., NeurIPS 2023; meghdadk/SCRUB,
/// `thirdparty/repdistiller/helper/loops.py`, `train_negrad`): each step
/// pairs the next retain batch with the next forget batch (the forget set
/// cycles) and descends `alpha·CE_retain − (1 − alpha)·CE_forget`, both mean
/// cross-entropies, BatchNorm in training mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NegGradPlusConfig {
    /// State name in results; default `neggrad_plus`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Retain weight α in (0, 1) (`ng_alpha`); default 0.9999.
    pub alpha: f64,
    /// Passes over the retain set (`ng_epochs`); default 5.
    pub epochs: usize,
    /// Learning rate (`ng_lr`); default 0.01.
    pub lr: f64,
    /// SGD momentum; default 0 (the reference's `SGD(lr=lr,
    /// weight_decay=0.0)`).
    pub momentum: f64,
    /// L2 weight decay; default 0.
    pub weight_decay: f64,
    /// Retain images per step; default 128.
    pub batch_size: usize,
    /// Forget images per step; default 128.
    pub forget_batch_size: usize,
}

impl Default for NegGradPlusConfig {
    fn default() -> Self {
        Self {
            name: None,
            alpha: 0.9999,
            epochs: 5,
            lr: 0.01,
            momentum: 0.0,
            weight_decay: 0.0,
            batch_size: 128,
            forget_batch_size: 128,
        }
    }
}

/// Settings of Fisher forgetting (Golatkar et al., CVPR 2020, as in their
/// code reproduced in meghdadk/SCRUB's notebooks and Unlearn-Sparse's
/// `fisher_new`): `θ ← θ + √v ⊙ ε`, `ε ~ N(0, I)`, with `v` from the
/// diagonal of the retain set's Fisher information
/// `F = (1/n) Σ_i Σ_y p(y|x_i) (∇θ CE(x_i, y))²` (per image, BatchNorm
/// frozen) as [`fisher_noise_variance`](crate::fisher_noise_variance) says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FisherConfig {
    /// State name in results; default `fisher`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Noise scale α; default 1e-7 (the SCRUB notebooks' CIFAR setting).
    pub alpha: f64,
    /// Retained images the Fisher is taken over: a seeded uniform sample of
    /// this many, or every retained image if 0 (default, the reference).
    /// Each costs `k` backward passes.
    pub samples: usize,
}

impl Default for FisherConfig {
    fn default() -> Self {
        Self {
            name: None,
            alpha: 1e-7,
            samples: 0,
        }
    }
}

fn resnet_config(method: &'static str, e: muq_resnet::ResnetError) -> UnlearnError {
    match e {
        muq_resnet::ResnetError::Config { field, reason } => UnlearnError::Config {
            method,
            field,
            reason,
        },
        other => other.into(),
    }
}

fn sgd(method: &'static str, lr: f64, momentum: f64, weight_decay: f64) -> Result<()> {
    SgdConfig {
        lr,
        momentum,
        weight_decay,
    }
    .validate()
    .map_err(|e| resnet_config(method, e))
}

fn non_negative(method: &'static str, field: &'static str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        bad(
            method,
            field,
            format!("must be a non-negative number, got {v}"),
        )
    }
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
