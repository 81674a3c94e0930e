//! Shared helpers of the muq-resnet integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use candle_core::Device;
use muq_data::{Dataset, Normalization, rng, synthetic};
use muq_resnet::{ResNet, ResNetConfig};

/// A clean synthetic dataset of `n` training images (and its index list).
pub fn synthetic_train(n: usize, seed: u64) -> (Dataset, Vec<usize>) {
    let data = synthetic::generate(n, 10, seed);
    let ds = Dataset::clean(Arc::new(data.train), Normalization::CIFAR10);
    let idx = (0..ds.len()).collect();
    (ds, idx)
}

/// A model of `width` from `seed`'s init stream on the CPU.
pub fn model(width: usize, seed: u64) -> ResNet {
    let cfg = ResNetConfig {
        width,
        ..Default::default()
    };
    ResNet::new(&cfg, &mut rng::stream(seed, rng::INIT), &Device::Cpu).expect("model")
}

/// Flattened values of every parameter and buffer.
pub fn weights(m: &ResNet) -> Vec<Vec<f32>> {
    m.params()
        .iter()
        .map(|p| {
            p.var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}
