//! Real CIFAR-10, when `CIFAR10_DIR` points at it: a small model trained for
//! one epoch on a class-balanced subset must clear 35% test accuracy (chance
//! is 10%). Without the variable the test says so and passes.

use std::sync::Arc;

use candle_core::Device;
use muq_data::{Dataset, Normalization, rng, stratified_sample};
use muq_resnet::{Passes, Progress, ResNet, ResNetConfig, SgdConfig, TrainConfig, logits, train};

#[test]
fn a_small_model_learns_real_cifar10_in_one_epoch() {
    let Some(dir) = muq_data::cifar::real_data_for_test(
        "a_small_model_learns_real_cifar10_in_one_epoch",
        &workspace_root(),
    ) else {
        return;
    };
    let data = muq_data::load_dir(&dir).expect("load CIFAR-10");
    let seed = 100;
    let train_idx = stratified_sample(data.train.labels(), 12_000, seed);
    let test_idx = stratified_sample(data.test.labels(), 2000, seed);
    let norm = Normalization::CIFAR10;
    let train_set = Dataset::clean(Arc::new(data.train.subset(&train_idx)), norm);
    let test_set = Dataset::clean(Arc::new(data.test.subset(&test_idx)), norm);
    let cfg = ResNetConfig {
        width: 16,
        ..Default::default()
    };
    let model = ResNet::new(&cfg, &mut rng::stream(seed, rng::INIT), &Device::Cpu).unwrap();
    let all: Vec<usize> = (0..train_set.len()).collect();
    let tc = TrainConfig {
        epochs: 1,
        batch_size: 32,
        sgd: SgdConfig {
            lr: 0.02,
            ..Default::default()
        },
    };
    let report = train(&model, &train_set, &all, &tc, seed, Progress::Silent).unwrap();
    let test_all: Vec<usize> = (0..test_set.len()).collect();
    let out = logits(&model, &test_set, &test_all, 500, Passes::Eval).unwrap();
    let k = out.num_classes;
    let hits = out.passes[0]
        .chunks(k)
        .zip(test_set.labels())
        .filter(|(row, y)| {
            let best = (0..k).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            best == **y as usize
        })
        .count();
    let acc = hits as f64 / test_all.len() as f64;
    eprintln!(
        "real CIFAR-10, width 16, 12,000 images, 1 epoch: train loss {:.3}, train acc {:.3}, \
         test acc {acc:.3} ({:.0} s)",
        report.epochs[0].loss, report.epochs[0].accuracy, report.seconds
    );
    assert!(acc > 0.35, "test accuracy {acc} after one epoch");
}

/// The workspace root, which a relative `CIFAR10_DIR` is read from.
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
