//! The fixture the method tests share: a small ResNet trained on synthetic
//! images whose pool has flipped labels (`label` modality), some of them to
//! be forgotten, and the unlearning context over it.

use std::sync::Arc;

use candle_core::Device;
use muq_data::{
    Dataset, ModalityConfig, ModalityKind, Modification, Normalization, rng, synthetic,
};
use muq_resnet::{Progress, ResNet, ResNetConfig, TrainConfig, train};
use muq_unlearn::UnlearnContext;

/// A trained model, the data it trained on and what is to be forgotten.
pub struct Fixture {
    /// The trained base model.
    pub model: ResNet,
    /// The training set as trained on (modified: flipped labels in the pool).
    pub trained_on: Dataset,
    /// Pool, forget and retain sets.
    pub modification: Modification,
    /// How the model was trained.
    pub train_config: TrainConfig,
    /// The seed of data, model, training and context.
    pub seed: u64,
}

/// The shape of a [`Fixture`].
pub struct Spec {
    /// Synthetic training images.
    pub n: usize,
    /// Seed of everything.
    pub seed: u64,
    /// The `label` modality's forget and pool proportions.
    pub remove_prop: f64,
    /// Pool proportion.
    pub pool_prop: f64,
    /// ResNet width.
    pub width: usize,
    /// Training of the base model (on every image, modified labels).
    pub train_config: TrainConfig,
}

/// Builds the fixture `spec` describes.
pub fn build(spec: Spec) -> Fixture {
    let data = synthetic::generate(spec.n, 0, spec.seed);
    let cfg = ModalityConfig {
        remove_prop: spec.remove_prop,
        pool_prop: spec.pool_prop,
        ..ModalityConfig::new(ModalityKind::Label)
    };
    let modification = Modification::draw(&cfg, &data.train, spec.seed).expect("modification");
    let trained_on = Dataset::modified(Arc::new(data.train), &modification, Normalization::CIFAR10);
    let model_cfg = ResNetConfig {
        width: spec.width,
        ..Default::default()
    };
    let model = ResNet::new(
        &model_cfg,
        &mut rng::stream(spec.seed, rng::INIT),
        &Device::Cpu,
    )
    .expect("model");
    let all: Vec<usize> = (0..spec.n).collect();
    train(
        &model,
        &trained_on,
        &all,
        &spec.train_config,
        spec.seed,
        Progress::Silent,
    )
    .expect("train");
    Fixture {
        model,
        trained_on,
        modification,
        train_config: spec.train_config,
        seed: spec.seed,
    }
}

/// The unlearning context over `f`: forget gradients on the data as trained.
pub fn ctx(f: &Fixture) -> UnlearnContext<'_> {
    UnlearnContext {
        model: &f.model,
        trained_on: &f.trained_on,
        forget_data: &f.trained_on,
        forget: &f.modification.forget,
        retain: &f.modification.retain,
        train_config: &f.train_config,
        seed: f.seed,
        progress: Progress::Silent,
    }
}
