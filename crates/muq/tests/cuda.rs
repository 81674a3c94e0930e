//! CPU ↔ CUDA: the same tiny training and first-order unlearning on both
//! devices, compared.
//!
//! A width-8 ResNet-18 is initialised from the same host-drawn weights on
//! each device, trained for one epoch (4 SGD steps of 16 synthetic images),
//! then 8 of its 64 training images are unlearned with the first-order update
//! (τ = 1e-3, BatchNorm in train mode, sum over the forget set). Shuffling,
//! initialisation and data are drawn on the host, so both devices see the
//! same numbers; only the order of floating-point additions differs (cuBLAS
//! GEMMs and block-tree reductions on the GPU, the `gemm` crate and muq's
//! CPU kernels on the host).
//!
//! Tolerance: every logit, after training and after unlearning, within
//! `TOL · max(1, max |z_cpu|)` of the CPU's, with `TOL = 1e-3` (f32 rounding
//! is ~6e-8 per operation; a few SGD steps through 17 BatchNorm layers
//! amplify that by orders of magnitude but stay far below 1e-3), and the
//! unlearning update θ_after − θ_before within 1e-3 relative L2 distance.
//! With the `cudnn` feature cuDNN may run f32 convolutions on TF32 tensor
//! cores (10-bit mantissa, ~5e-4 relative per product), so the tolerance is
//! 3e-2 there; `NVIDIA_TF32_OVERRIDE=0` turns that off (docs/cuda.md).
//!
//! The tests run only where a GPU is usable: a `--features cuda` build on a
//! machine with an NVIDIA driver and GPU. Everywhere else each test prints
//! that it did not run, and why, and passes. (A `--features cuda` test binary
//! links the driver's libcuda.so.1 and does not start at all on a machine
//! without one: build it there, don't run it; `scripts/device-check.sh`
//! runs it on a GPU machine.)

use std::sync::Arc;

use candle_core::{Device, Tensor};
use muq_data::{Dataset, Normalization, rng, synthetic};
use muq_resnet::{
    BnPolicy, Passes, Progress, Reduction, ResNet, ResNetConfig, TrainConfig, logits, train,
};
use muq_unlearn::{FirstOrderConfig, Method, UnlearnContext, unlearn};

const SEED: u64 = 11;
const WIDTH: usize = 8;
const N_TRAIN: usize = 64;
const N_TEST: usize = 32;
const N_FORGET: usize = 8;
const TOL: f32 = if cfg!(feature = "cudnn") { 3e-2 } else { 1e-3 };

/// The CUDA device, or `None` (having said why) where none is usable.
fn cuda(test: &str) -> Option<Device> {
    if !candle_core::utils::cuda_is_available() {
        eprintln!(
            "{test}: did not run: built without the `cuda` feature \
             (cargo test -p muq --features cuda --test cuda, on a machine with a GPU)"
        );
        return None;
    }
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("{test}: did not run: no usable CUDA device 0: {e}");
            None
        }
    }
}

/// What one device computed.
struct Outcome {
    trained: Vec<f32>,
    unlearned: Vec<f32>,
    /// θ_after − θ_before of the trainable parameters, flattened.
    update: Vec<f32>,
}

fn flat(m: &ResNet) -> Vec<f32> {
    m.trainable()
        .flat_map(|p| {
            let t: &Tensor = p.var.as_tensor();
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        })
        .collect()
}

/// Initialise, train and unlearn on `device`; logits of the test images
/// after training and after unlearning.
fn study(device: &Device) -> Outcome {
    let data = synthetic::generate(N_TRAIN, N_TEST, SEED);
    let train_set = Dataset::clean(Arc::new(data.train), Normalization::CIFAR10);
    let test_set = Dataset::clean(Arc::new(data.test), Normalization::CIFAR10);
    let config = ResNetConfig {
        width: WIDTH,
        ..Default::default()
    };
    let model = ResNet::new(&config, &mut rng::stream(SEED, rng::INIT), device).expect("model");
    assert!(
        model.device().same_device(device),
        "the model lives on the device asked for"
    );
    let all: Vec<usize> = (0..N_TRAIN).collect();
    let train_config = TrainConfig {
        epochs: 1,
        batch_size: 16,
        ..Default::default()
    };
    train(
        &model,
        &train_set,
        &all,
        &train_config,
        SEED,
        Progress::Silent,
    )
    .expect("train");
    let test_idx: Vec<usize> = (0..N_TEST).collect();
    let eval = |m: &ResNet| {
        logits(m, &test_set, &test_idx, N_TEST, Passes::Eval)
            .expect("logits")
            .passes[0]
            .clone()
    };
    let trained = eval(&model);

    let (forget, retain) = all.split_at(N_FORGET);
    let method = Method::FirstOrder(FirstOrderConfig {
        tau: 1e-3,
        bn: BnPolicy::Train,
        reduction: Reduction::Sum,
        batch_size: N_FORGET,
        ..Default::default()
    });
    let ctx = UnlearnContext {
        model: &model,
        trained_on: &train_set,
        forget_data: &train_set,
        forget,
        retain,
        train_config: &train_config,
        seed: SEED,
        progress: Progress::Silent,
    };
    let out = unlearn(&method, &ctx).expect("unlearn");
    assert!(out.model.device().same_device(device));
    let update = flat(&out.model)
        .iter()
        .zip(flat(&model))
        .map(|(a, b)| a - b)
        .collect();
    Outcome {
        trained,
        unlearned: eval(&out.model),
        update,
    }
}

/// Largest |a − b| over the largest |a| (at least 1), with the worst index.
fn max_scaled_diff(cpu: &[f32], gpu: &[f32]) -> (f32, usize) {
    assert_eq!(cpu.len(), gpu.len());
    let scale = cpu.iter().fold(1f32, |m, z| m.max(z.abs()));
    let (i, d) = cpu
        .iter()
        .zip(gpu)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold((0, 0f32), |(bi, bd), (i, d)| {
            if d > bd || d.is_nan() {
                (i, d)
            } else {
                (bi, bd)
            }
        });
    (d / scale, i)
}

fn rel_l2(cpu: &[f32], gpu: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (&a, &b) in cpu.iter().zip(gpu) {
        num += f64::from(a - b).powi(2);
        den += f64::from(a).powi(2);
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

#[test]
fn training_and_unlearning_agree_between_cpu_and_cuda() {
    let Some(gpu) = cuda("training_and_unlearning_agree_between_cpu_and_cuda") else {
        return;
    };
    let on_cpu = study(&Device::Cpu);
    let on_gpu = study(&gpu);
    for (what, a, b) in [
        ("after training", &on_cpu.trained, &on_gpu.trained),
        ("after unlearning", &on_cpu.unlearned, &on_gpu.unlearned),
    ] {
        let (d, i) = max_scaled_diff(a, b);
        eprintln!("logits {what}: max |Δ| / max(1, max|z|) = {d:.3e} (tolerance {TOL:.0e})");
        assert!(
            d <= TOL,
            "logits {what}: element {i}: cpu {} vs cuda {} (scaled difference {d:.3e} > {TOL:.0e})",
            a[i],
            b[i]
        );
        let argmax = |z: &[f32]| -> Vec<usize> {
            z.chunks(10)
                .map(|r| (0..10).max_by(|&x, &y| r[x].total_cmp(&r[y])).unwrap())
                .collect()
        };
        let agree = argmax(a)
            .iter()
            .zip(argmax(b))
            .filter(|(x, y)| **x == *y)
            .count();
        eprintln!("predicted classes {what}: {agree}/{N_TEST} agree");
    }
    let r = rel_l2(&on_cpu.update, &on_gpu.update);
    eprintln!("first-order update: relative L2 distance cpu↔cuda {r:.3e} (tolerance {TOL:.0e})");
    assert!(
        on_cpu.update.iter().any(|&u| u != 0.0),
        "the update moved the weights"
    );
    assert!(r <= f64::from(TOL), "first-order update differs: {r:.3e}");
}

/// The CUDA path without cuDNN uses no atomics (candle's reductions are
/// block trees, its scatter/index-add kernels loop serially, cuBLAS GEMMs are
/// deterministic on one GPU), so two runs on the same GPU must agree bit for
/// bit. With `cudnn` this is expected too (cuDNN's heuristic picks the same
/// forward algorithm every time) but is checked the same way.
#[test]
fn cuda_runs_are_bitwise_repeatable() {
    let Some(gpu) = cuda("cuda_runs_are_bitwise_repeatable") else {
        return;
    };
    let first = study(&gpu);
    let second = study(&gpu);
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(
        same(&first.trained, &second.trained),
        "logits after training differ between runs"
    );
    assert!(
        same(&first.unlearned, &second.unlearned),
        "logits after unlearning differ between runs"
    );
    assert!(
        same(&first.update, &second.update),
        "the update differs between runs"
    );
    eprintln!("cuda_runs_are_bitwise_repeatable: two runs agree bit for bit");
}

/// Always runs: the CPU half of the comparison, so that it is known to work
/// before a GPU ever sees it; twice, bit for bit the same.
#[test]
fn the_cpu_half_runs_everywhere() {
    let a = study(&Device::Cpu);
    assert!(a.trained.iter().chain(&a.unlearned).all(|z| z.is_finite()));
    assert_eq!(a.trained.len(), N_TEST * 10);
    assert!(
        a.update.iter().any(|&u| u != 0.0),
        "the update moved the weights"
    );
    assert_ne!(a.trained, a.unlearned, "unlearning changed the logits");
    let b = study(&Device::Cpu);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.trained), bits(&b.trained));
    assert_eq!(bits(&a.unlearned), bits(&b.unlearned));
}

/// Always runs: says, in the test output, whether the CUDA comparisons above
/// did (so a green CI log cannot be mistaken for a GPU check).
#[test]
fn reports_whether_the_cuda_comparison_ran() {
    match cuda("reports_whether_the_cuda_comparison_ran") {
        Some(d) => eprintln!("CUDA device available: {d:?}; the CPU↔CUDA comparisons ran"),
        None => eprintln!("the CPU↔CUDA comparisons did not run here (no usable GPU)"),
    }
}
