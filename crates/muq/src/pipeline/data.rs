//! Stage 1, the data: CIFAR-10 read and checked, subsets drawn, the test set
//! split into calibration and evaluation halves, the modality applied.

use std::sync::Arc;

use anyhow::Context as _;
use muq_data::{
    Dataset, ImageSet, Modification, Normalization, rng, stratified_sample, stratified_split,
};
use muq_resnet::Progress;

use super::{RunOptions, say};
use crate::config::{ConfigError, RunConfig, TrainOn};
use crate::evaluate::{EvalSet, EvalSets};
use crate::result::DataInfo;

/// Everything a run computes on, drawn from the data directory by
/// [`load_data`].
#[derive(Debug)]
pub struct RunData {
    /// The training set as drawn (`data.train_subset`), unmodified.
    pub clean: Dataset,
    /// The same images with the modality applied (noise, flipped labels).
    pub modified: Dataset,
    /// The test set as drawn (`data.test_subset`).
    pub test: Dataset,
    /// What the modality did: the pool, the forget and retain sets, the
    /// forgotten class.
    pub modification: Modification,
    /// Indices into `test` of the calibration half (temperatures and
    /// recalibrators are fitted on it).
    pub calibration: Vec<usize>,
    /// Indices into `test` of the evaluation half.
    pub evaluation: Vec<usize>,
    /// The retained images each state is evaluated on
    /// (`data.retain_eval` of them).
    pub retain_eval: Vec<usize>,
    /// Which of `clean` and `modified` the base model trains on.
    pub train_on: TrainOn,
    /// Sizes and checksums, for `result.json`.
    pub info: DataInfo,
}

impl RunData {
    /// The training set the base model trains on: [`RunData::clean`] or
    /// [`RunData::modified`], as [`RunData::train_on`] says.
    pub fn trained_on(&self) -> &Dataset {
        match self.train_on {
            TrainOn::Modified => &self.modified,
            TrainOn::Clean => &self.clean,
        }
    }

    /// The four sets every state is evaluated on.
    pub fn eval_sets(&self) -> EvalSets<'_> {
        EvalSets {
            calibration: EvalSet {
                data: &self.test,
                indices: &self.calibration,
            },
            evaluation: EvalSet {
                data: &self.test,
                indices: &self.evaluation,
            },
            forget: EvalSet {
                data: &self.modified,
                indices: &self.modification.forget,
            },
            retain: EvalSet {
                data: self.trained_on(),
                indices: &self.retain_eval,
            },
        }
    }
}

/// Reads the data directory of `opts` and draws the run's sets for `cfg`
/// (all seeded by `cfg.seed`).
///
/// # Errors
/// Unreadable or invalid data files; a subset or modality that does not fit
/// the data, as a [`ConfigError`] naming the field.
pub fn load_data(cfg: &RunConfig, opts: &RunOptions) -> anyhow::Result<RunData> {
    let seed = cfg.seed;
    let (data, files) = muq_data::load_dir_checked(&opts.data_dir)
        .with_context(|| format!("loading CIFAR-10 from {}", opts.data_dir.display()))?;
    if opts.progress == Progress::Stderr {
        for w in files.warnings() {
            eprintln!("warning: {}: {w}", opts.data_dir.display());
        }
    }
    let train_checksum = data.train.checksum();
    let test_checksum = data.test.checksum();
    let train_set = subset(data.train, cfg.data.train_subset, seed, "data.train_subset")?;
    let test_set = subset(data.test, cfg.data.test_subset, seed, "data.test_subset")?;
    cfg.modality
        .validate(train_set.len())
        .map_err(modality_error)?;
    let (mut calibration, mut evaluation) = stratified_split(test_set.labels(), 0.5, seed);
    let modification =
        Modification::draw(&cfg.modality, &train_set, seed).map_err(modality_error)?;
    if let Some(class) = modification.class {
        // Class-wise forgetting: the model is meant to lose that class, so
        // the temperature is fitted and the metrics are reported on the
        // remaining classes (the forget set holds the class's own images).
        for idx in [&mut calibration, &mut evaluation] {
            idx.retain(|&i| test_set.labels()[i] != class);
        }
    }
    let norm = Normalization::CIFAR10;
    let train_images = Arc::new(train_set);
    let n_train = train_images.len();
    let clean = Dataset::clean(train_images.clone(), norm);
    let modified = Dataset::modified(train_images, &modification, norm);
    let test = Dataset::clean(Arc::new(test_set), norm);
    let retain_eval = retain_sample(&modification.retain, cfg.data.retain_eval, seed);
    let train_on = cfg.train_on();
    let mut data = RunData {
        clean,
        modified,
        test,
        info: DataInfo {
            dir: opts.data_dir.display().to_string(),
            train_checksum,
            test_checksum,
            trained_checksum: String::new(),
            modification_checksum: modification.checksum(),
            forgotten_class: modification.class,
            n_train,
            n_calibration: calibration.len(),
            n_evaluation: evaluation.len(),
            n_pool: modification.pool.len(),
            n_forget: modification.forget.len(),
            n_retain: modification.retain.len(),
            n_retain_eval: retain_eval.len(),
        },
        modification,
        calibration,
        evaluation,
        retain_eval,
        train_on,
    };
    data.info.trained_checksum = data.trained_on().checksum();
    let info = &data.info;
    say(
        opts.progress,
        format!(
            "{} run, seed {seed}: {} training images ({} trained on), forget {} from a pool of {}, {} calibration / {} evaluation",
            cfg.modality.kind,
            info.n_train,
            match train_on {
                TrainOn::Modified => "modified",
                TrainOn::Clean => "clean",
            },
            info.n_forget,
            info.n_pool,
            info.n_calibration,
            info.n_evaluation
        ),
    );
    Ok(data)
}

/// `n` images of `set` (0 = all), class-balanced and seeded.
fn subset(set: ImageSet, n: usize, seed: u64, field: &str) -> Result<ImageSet, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        field: field.to_string(),
        reason,
    };
    if n == 0 {
        return Ok(set);
    }
    if n > set.len() {
        return Err(invalid(format!(
            "asks for {n} images but the set has {}; use 0 for all or a smaller number",
            set.len()
        )));
    }
    if n < muq_data::NUM_CLASSES {
        return Err(invalid(format!("{n} is fewer than one image per class")));
    }
    let idx = stratified_sample(set.labels(), n, seed);
    Ok(set.subset(&idx))
}

/// A modality that does not fit the data, as the config field at fault.
fn modality_error(e: muq_data::DataError) -> anyhow::Error {
    match e {
        muq_data::DataError::InvalidConfig { field, reason } => ConfigError::Invalid {
            field: format!("modality.{field}"),
            reason,
        }
        .into(),
        other => anyhow::Error::new(other).context("config section [modality]"),
    }
}

/// The retained images each state is evaluated on: `data.retain_eval` of
/// them (0 = all), a seeded sample.
fn retain_sample(retain: &[usize], n: usize, seed: u64) -> Vec<usize> {
    if n == 0 {
        return retain.to_vec();
    }
    rng::sample_sorted(retain, n, seed, RETAIN_EVAL_STREAM)
}

/// The stream of the retain sample each state is evaluated on
/// (`data.retain_eval` of the retained images).
pub const RETAIN_EVAL_STREAM: &str = "retain_eval";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retain_sample_is_seeded_sorted_and_inside_retain() {
        let retain: Vec<usize> = (0..100).map(|i| i * 3).collect();
        let a = retain_sample(&retain, 10, 1);
        assert_eq!(a, retain_sample(&retain, 10, 1));
        assert_ne!(a, retain_sample(&retain, 10, 2));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(a.iter().all(|i| retain.contains(i)));
        assert_eq!(retain_sample(&retain, 0, 1), retain);
    }
}
