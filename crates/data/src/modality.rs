//! The modalities: which training images are forgotten, and how the pool
//! they come from is corrupted — the study's three (random, noise, label)
//! and the field's class-wise forgetting.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand::seq::index;
use rand_distr::StandardNormal;
use sha2::{Digest, Sha256};

use crate::{DataError, IMAGE_BYTES, ImageSet, NUM_CLASSES, Result, rng};

/// How the forget set is chosen and its pool corrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModalityKind {
    /// Forget set uniform over the training set; no corruption.
    Random,
    /// A pool gets additive Gaussian noise (normalised space, then clamped to
    /// [−3, 3]); the forget set is drawn from the pool.
    Noise,
    /// A pool gets labels drawn uniformly from the nine other classes; the
    /// forget set is drawn from the pool.
    Label,
    /// Class-wise forgetting: every training image of one class (`class`,
    /// or a seeded choice) is forgotten; no corruption.
    Class,
}

impl ModalityKind {
    /// Every kind, in table order.
    pub const ALL: [ModalityKind; 4] = [Self::Random, Self::Noise, Self::Label, Self::Class];

    /// The name the original's table gives the modality: `random`,
    /// `Gaussian noise`, `modified labels`, `class-wise`.
    pub fn title(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::Noise => "Gaussian noise",
            Self::Label => "modified labels",
            Self::Class => "class-wise",
        }
    }

    /// The original study's three modalities, in its table order.
    pub const STUDY: [ModalityKind; 3] = [Self::Random, Self::Noise, Self::Label];

    /// The lower-case name: `random`, `noise`, `label` or `class`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::Noise => "noise",
            Self::Label => "label",
            Self::Class => "class",
        }
    }

    /// Whether the modality changes the training data (labels or images):
    /// `noise` and `label` do; `random` and `class` only choose what to
    /// forget, so a model trained on their "modified" data is the clean
    /// model.
    pub fn changes_data(self) -> bool {
        matches!(self, Self::Noise | Self::Label)
    }
}

impl fmt::Display for ModalityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ModalityKind {
    type Err = DataError;

    /// Parses `random`, `noise`, `label` or `class` (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| DataError::InvalidConfig {
                field: "kind",
                reason: format!(
                    "unknown modality {s:?}; expected one of random, noise, label, class"
                ),
            })
    }
}

/// The parameters of a modality.
///
/// When deserialised, missing fields take their defaults (`kind` =
/// `random`) and an unknown field is an error naming it, so a typo such as
/// `remove_propp` cannot pass silently.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModalityConfig {
    /// Which modality.
    pub kind: ModalityKind,
    /// Fraction of the training set forgotten, in (0, 1]; default 0.05.
    /// Unused by `class` (which forgets the whole class), but still
    /// validated.
    pub remove_prop: f64,
    /// Fraction of the training set corrupted (noise, label), in (0, 1];
    /// default 0.20. Unused by `random`, but still validated.
    pub pool_prop: f64,
    /// Standard deviation of the noise in normalised space, finite and ≥ 0;
    /// default 0.2. Used by `noise` only, but still validated.
    pub sigma: f32,
    /// The class the `class` modality forgets, `0..10`; left out, a seeded
    /// choice (uniform over the classes, from the run's forget stream).
    /// Only the `class` modality takes it. Not serialised when left out,
    /// so configs written before it existed keep their ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<u8>,
}

impl ModalityConfig {
    /// Default `remove_prop`.
    pub const DEFAULT_REMOVE_PROP: f64 = 0.05;
    /// Default `pool_prop`.
    pub const DEFAULT_POOL_PROP: f64 = 0.20;
    /// Default `sigma`.
    pub const DEFAULT_SIGMA: f32 = 0.2;

    /// The default configuration of `kind`.
    pub fn new(kind: ModalityKind) -> Self {
        Self {
            kind,
            remove_prop: Self::DEFAULT_REMOVE_PROP,
            pool_prop: Self::DEFAULT_POOL_PROP,
            sigma: Self::DEFAULT_SIGMA,
            class: None,
        }
    }

    /// Size of the forget set for a training set of `n`: `round(remove_prop · n)`
    /// (for `class`, the class's size decides it: see [`Modification::draw`]).
    pub fn forget_size(&self, n: usize) -> usize {
        prop_size(self.remove_prop, n)
    }

    /// Size of the pool for a training set of `n`: `round(pool_prop · n)`
    /// for noise and label; for random the pool is the forget set.
    pub fn pool_size(&self, n: usize) -> usize {
        match self.kind {
            ModalityKind::Random | ModalityKind::Class => self.forget_size(n),
            ModalityKind::Noise | ModalityKind::Label => prop_size(self.pool_prop, n),
        }
    }

    /// Checks the configuration against a training set of `n_train` images:
    /// [`validate_values`](Self::validate_values), then the sizes.
    ///
    /// # Errors
    /// [`DataError::InvalidConfig`] naming the field if a proportion is not in
    /// (0, 1], `sigma` is negative or not finite, the forget set would be
    /// empty, or (noise, label) the forget set would be larger than the pool.
    pub fn validate(&self, n_train: usize) -> Result<()> {
        self.validate_values()?;
        if self.kind == ModalityKind::Class {
            // The class's size decides the forget set: checked on the data
            // by Modification::draw.
            return Ok(());
        }
        let forget = self.forget_size(n_train);
        if forget == 0 {
            return Err(DataError::InvalidConfig {
                field: "remove_prop",
                reason: format!(
                    "{} of {n_train} training images rounds to an empty forget set; \
                     raise remove_prop or use more training data",
                    self.remove_prop
                ),
            });
        }
        if forget >= n_train {
            return Err(DataError::InvalidConfig {
                field: "remove_prop",
                reason: format!(
                    "{} of {n_train} training images forgets all {forget} of them and leaves \
                     none to retain; use a proportion below 1 (the spec uses 0.05)",
                    self.remove_prop
                ),
            });
        }
        let pool = self.pool_size(n_train);
        if forget > pool {
            return Err(DataError::InvalidConfig {
                field: "remove_prop",
                reason: format!(
                    "the {} modality forgets {forget} images ({} of {n_train}) from a pool of \
                     only {pool} (pool_prop {}); make remove_prop <= pool_prop",
                    self.kind, self.remove_prop, self.pool_prop
                ),
            });
        }
        Ok(())
    }

    /// Checks what needs no data: the proportions are in (0, 1] and `sigma`
    /// is finite and ≥ 0. The forget-set and pool sizes need the
    /// training-set size: [`validate`](Self::validate).
    ///
    /// # Errors
    /// [`DataError::InvalidConfig`] naming the field.
    pub fn validate_values(&self) -> Result<()> {
        for (field, p) in [
            ("remove_prop", self.remove_prop),
            ("pool_prop", self.pool_prop),
        ] {
            if !(p > 0.0 && p <= 1.0) {
                return Err(DataError::InvalidConfig {
                    field,
                    reason: format!("{p} is not a proportion in (0, 1]"),
                });
            }
        }
        if !(self.sigma.is_finite() && self.sigma >= 0.0) {
            return Err(DataError::InvalidConfig {
                field: "sigma",
                reason: format!("{} is not a finite standard deviation >= 0", self.sigma),
            });
        }
        match (self.kind, self.class) {
            (ModalityKind::Class, Some(c)) if usize::from(c) >= NUM_CLASSES => {
                Err(DataError::InvalidConfig {
                    field: "class",
                    reason: format!(
                        "{c} is not a class of CIFAR-10: use 0..{} or leave it out for a \
                         seeded choice",
                        NUM_CLASSES - 1
                    ),
                })
            }
            (ModalityKind::Class, _) | (_, None) => Ok(()),
            (kind, Some(_)) => Err(DataError::InvalidConfig {
                field: "class",
                reason: format!(
                    "only the class modality forgets a class; drop `class` or set kind = \
                     \"class\" (kind is {kind})"
                ),
            }),
        }
    }
}

impl Default for ModalityConfig {
    /// The default `random` configuration.
    fn default() -> Self {
        Self::new(ModalityKind::Random)
    }
}

fn prop_size(p: f64, n: usize) -> usize {
    ((p * n as f64).round().max(0.0) as usize).min(n)
}

/// The corruptions and forget set of one run, drawn once from its seed.
///
/// Storing this (or re-drawing it from the same configuration, training set
/// and seed) replays the run exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct Modification {
    /// The modality.
    pub kind: ModalityKind,
    /// Indices of the images the modality may change, sorted.
    pub pool: Vec<usize>,
    /// Indices of the images to forget, sorted; a subset of `pool` (equal to
    /// it for `random` and `class`).
    pub forget: Vec<usize>,
    /// Every training index not in `forget`, sorted.
    pub retain: Vec<usize>,
    /// Label overrides `(index, new label)` of the `label` modality, sorted by
    /// index; one per pool image, each differing from the original label.
    pub labels: Vec<(usize, u8)>,
    /// Additive noise in normalised space `(index, 3072 values)` of the
    /// `noise` modality, sorted by index; one per pool image.
    pub noise: Vec<(usize, Vec<f32>)>,
    /// The noise's standard deviation (0 unless `noise`).
    pub sigma: f32,
    /// The forgotten class (`class` modality only).
    pub class: Option<u8>,
}

impl Modification {
    /// Draws the pool, its corruptions and the forget set for `train`.
    ///
    /// `class` forgets every image of its class (the configured one, or one
    /// drawn uniformly from [`rng::FORGET`]); its pool is its forget set.
    ///
    /// The pool and corruptions come from [`rng::stream`]`(seed, `[`rng::MODALITY`]`)`
    /// (pool indices first, then per pool image in index order its new label
    /// or its 3,072 noise values); the forget set from
    /// [`rng::stream`]`(seed, `[`rng::FORGET`]`)`, uniform without replacement
    /// from the pool (from the whole set for `random`).
    ///
    /// # Errors
    /// [`ModalityConfig::validate`]'s errors.
    pub fn draw(cfg: &ModalityConfig, train: &ImageSet, seed: u64) -> Result<Self> {
        let n = train.len();
        cfg.validate(n)?;
        let forget_size = cfg.forget_size(n);
        let mut forget_rng = rng::stream(seed, rng::FORGET);
        let mut m = Modification {
            kind: cfg.kind,
            pool: Vec::new(),
            forget: Vec::new(),
            retain: Vec::new(),
            labels: Vec::new(),
            noise: Vec::new(),
            sigma: 0.0,
            class: None,
        };
        if cfg.kind == ModalityKind::Class {
            let class = match cfg.class {
                Some(c) => c,
                None => forget_rng.random_range(0..NUM_CLASSES as u8),
            };
            m.forget = (0..n).filter(|&i| train.labels()[i] == class).collect();
            if m.forget.is_empty() {
                return Err(DataError::InvalidConfig {
                    field: "class",
                    reason: format!(
                        "class {class} has no image in the training set of {n}; choose a \
                         class present in the data"
                    ),
                });
            }
            if m.forget.len() == n {
                return Err(DataError::InvalidConfig {
                    field: "class",
                    reason: format!(
                        "every one of the {n} training images is of class {class}: forgetting \
                         it leaves none to retain; use data with more than one class"
                    ),
                });
            }
            m.pool = m.forget.clone();
            m.class = Some(class);
        } else if cfg.kind == ModalityKind::Random {
            m.forget = sorted_sample(&mut forget_rng, n, forget_size);
            m.pool = m.forget.clone();
        } else {
            let mut rng = rng::stream(seed, rng::MODALITY);
            m.pool = sorted_sample(&mut rng, n, cfg.pool_size(n));
            if cfg.kind == ModalityKind::Label {
                let classes = NUM_CLASSES as u8;
                m.labels = m
                    .pool
                    .iter()
                    .map(|&i| {
                        let old = train.labels()[i];
                        let new = rng.random_range(0..classes - 1);
                        (i, if new >= old { new + 1 } else { new })
                    })
                    .collect();
            } else {
                m.sigma = cfg.sigma;
                m.noise = m
                    .pool
                    .iter()
                    .map(|&i| {
                        let v = (0..IMAGE_BYTES)
                            .map(|_| rng.sample::<f32, _>(StandardNormal) * cfg.sigma)
                            .collect();
                        (i, v)
                    })
                    .collect();
            }
            m.forget = sorted_sample(&mut forget_rng, m.pool.len(), forget_size)
                .into_iter()
                .map(|j| m.pool[j])
                .collect();
        }
        m.retain = complement(&m.forget, n);
        Ok(m)
    }

    /// Number of training images (`forget.len() + retain.len()`).
    pub fn n_train(&self) -> usize {
        self.forget.len() + self.retain.len()
    }

    /// SHA-256 (lower-case hex) of everything drawn: kind, pool, forget,
    /// retain, label overrides, noise values, sigma and the forgotten class.
    pub fn checksum(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.kind.as_str().as_bytes());
        for list in [&self.pool, &self.forget, &self.retain] {
            h.update((list.len() as u64).to_le_bytes());
            for &i in list {
                h.update((i as u64).to_le_bytes());
            }
        }
        h.update((self.labels.len() as u64).to_le_bytes());
        for &(i, l) in &self.labels {
            h.update((i as u64).to_le_bytes());
            h.update([l]);
        }
        h.update((self.noise.len() as u64).to_le_bytes());
        for (i, v) in &self.noise {
            h.update((*i as u64).to_le_bytes());
            h.update((v.len() as u64).to_le_bytes());
            for x in v {
                h.update(x.to_le_bytes());
            }
        }
        h.update(self.sigma.to_le_bytes());
        if let Some(c) = self.class {
            h.update([c]);
        }
        crate::hex(&h.finalize())
    }
}

fn sorted_sample(rng: &mut impl Rng, n: usize, k: usize) -> Vec<usize> {
    let mut v = index::sample(rng, n, k).into_vec();
    v.sort_unstable();
    v
}

/// The sorted indices of `0..n` not in the sorted list `sorted`.
pub(crate) fn complement(sorted: &[usize], n: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(n.saturating_sub(sorted.len()));
    let mut it = sorted.iter().peekable();
    for i in 0..n {
        if it.peek() == Some(&&i) {
            it.next();
        } else {
            out.push(i);
        }
    }
    out
}
