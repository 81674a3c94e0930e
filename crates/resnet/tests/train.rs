//! Training, gradients, determinism and memory.

mod common;

use candle_core::Device;
use common::{model, synthetic_train, weights};
use muq_resnet::{
    BnPolicy, GradSumOptions, Passes, Progress, Reduction, ResnetError, SgdConfig, TrainConfig,
    grad_sum, logits, train,
};

fn accuracy(m: &muq_resnet::ResNet, ds: &muq_data::Dataset, idx: &[usize]) -> f64 {
    let out = logits(m, ds, idx, 64, Passes::Eval).unwrap();
    let k = out.num_classes;
    let hits = out.passes[0]
        .chunks(k)
        .zip(idx)
        .filter(|(row, i)| {
            let best = (0..k).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            best == ds.labels()[**i] as usize
        })
        .count();
    hits as f64 / idx.len() as f64
}

#[test]
fn a_width_8_model_learns_the_synthetic_set() -> muq_resnet::Result<()> {
    let (ds, idx) = synthetic_train(256, 11);
    let m = model(8, 11);
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 32,
        sgd: SgdConfig {
            lr: 0.05,
            ..Default::default()
        },
    };
    let report = train(&m, &ds, &idx, &cfg, 11, Progress::Silent)?;
    let losses: Vec<f64> = report.epochs.iter().map(|e| e.loss).collect();
    assert!(losses[2] < losses[0] * 0.8, "loss should fall: {losses:?}");
    let acc = accuracy(&m, &ds, &idx);
    // Chance is 0.10; this set reaches ~0.55 here.
    assert!(
        acc > 0.35,
        "eval accuracy {acc} after 3 epochs; losses {losses:?}"
    );
    Ok(())
}

#[test]
fn same_seed_gives_bitwise_identical_weights() -> muq_resnet::Result<()> {
    let (ds, idx) = synthetic_train(96, 2);
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 32,
        ..Default::default()
    };
    let run = |seed| {
        let m = model(4, 7);
        train(&m, &ds, &idx, &cfg, seed, Progress::Silent).unwrap();
        weights(&m)
    };
    let a = run(1);
    assert_eq!(a, run(1));
    assert_ne!(a, run(2), "another shuffle seed gives other weights");
    Ok(())
}

#[test]
fn a_diverging_run_stops_naming_epoch_and_step() {
    let (ds, idx) = synthetic_train(64, 2);
    let m = model(4, 7);
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 16,
        sgd: SgdConfig {
            lr: 1e38,
            momentum: 0.0,
            weight_decay: 0.0,
        },
    };
    match train(&m, &ds, &idx, &cfg, 1, Progress::Silent) {
        Err(e @ ResnetError::NonFiniteLoss { epoch, step, .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("epoch {epoch}, step {step}")),
                "{msg}"
            );
        }
        other => panic!("expected NonFiniteLoss, got {other:?}"),
    }
}

#[test]
fn bad_training_config_names_the_field() {
    let (ds, idx) = synthetic_train(8, 2);
    let m = model(4, 7);
    let cfg = TrainConfig {
        batch_size: 1,
        ..Default::default()
    };
    let msg = train(&m, &ds, &idx, &cfg, 1, Progress::Silent)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("`batch_size`"), "{msg}");
}

/// Central finite differences of the summed loss against `grad_sum`
/// (BatchNorm frozen, so the loss is a deterministic function of θ).
#[test]
fn grad_sum_agrees_with_finite_differences() -> muq_resnet::Result<()> {
    let (ds, idx) = synthetic_train(24, 5);
    let m = model(4, 3);
    let opts = GradSumOptions {
        batch_size: 10,
        bn: BnPolicy::Frozen,
        reduction: Reduction::Sum,
        seed: 0,
    };
    let g = grad_sum(&m, &ds, &idx, opts)?;
    assert_eq!(g.batches, 3);
    let loss_at = |m: &muq_resnet::ResNet| grad_sum(m, &ds, &idx, opts).unwrap().loss_sum;
    // Check the largest-magnitude coordinate of a few tensors.
    let names = [
        "conv1.weight",
        "layer3.0.conv1.weight",
        "layer4.1.bn2.weight",
        "fc.weight",
        "fc.bias",
    ];
    for (p, gt) in m.trainable().zip(g.grads.tensors()) {
        if !names.contains(&p.name.as_str()) {
            continue;
        }
        let gv = gt.flatten_all()?.to_vec1::<f32>()?;
        let (j, &gj) = gv
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap();
        let theta = p.var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        // h = 1e-3: large enough that f32 rounding of the ~55-nat loss sum is
        // negligible, small enough to cross few ReLU kinks (1e-2 is off by 25% on conv1).
        let h = 1e-3f32;
        let eval = |delta: f32| {
            let mut t = theta.clone();
            t[j] += delta;
            p.var
                .set(&candle_core::Tensor::from_vec(t, p.var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            loss_at(&m)
        };
        let fd = (eval(h) - eval(-h)) / (2.0 * h as f64);
        eval(0.0);
        let err = (fd - gj as f64).abs();
        assert!(
            err <= 0.05 * (gj.abs() as f64) + 5e-3,
            "{}[{j}]: grad {gj} vs finite difference {fd}",
            p.name
        );
    }
    // Mean is sum / n.
    let mean = grad_sum(
        &m,
        &ds,
        &idx,
        GradSumOptions {
            reduction: Reduction::Mean,
            ..opts
        },
    )?;
    let ratio = mean.grads.norm()? * 24.0 / g.grads.norm()?;
    assert!((ratio - 1.0).abs() < 1e-5, "{ratio}");
    Ok(())
}

#[test]
fn grad_sum_bn_policies_touch_buffers_as_specified() -> muq_resnet::Result<()> {
    let (ds, idx) = synthetic_train(16, 5);
    let buffers = |m: &muq_resnet::ResNet| -> Vec<Vec<f32>> {
        m.buffers()
            .map(|p| p.var.as_tensor().to_vec1::<f32>().unwrap())
            .collect()
    };
    let trainable = |m: &muq_resnet::ResNet| -> Vec<Vec<f32>> {
        m.trainable()
            .map(|p| {
                p.var
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect()
    };
    let opts = |bn| GradSumOptions {
        batch_size: 8,
        bn,
        reduction: Reduction::Sum,
        seed: 0,
    };
    let m = model(4, 3);
    let (b0, t0) = (buffers(&m), trainable(&m));
    let frozen = grad_sum(&m, &ds, &idx, opts(BnPolicy::Frozen))?;
    assert_eq!(
        b0,
        buffers(&m),
        "frozen leaves running statistics untouched"
    );
    let train_mode = grad_sum(&m, &ds, &idx, opts(BnPolicy::Train))?;
    assert_ne!(
        b0,
        buffers(&m),
        "train mode absorbs the batches into running statistics"
    );
    assert_eq!(t0, trainable(&m), "grad_sum never changes parameters");
    assert_ne!(frozen.loss_sum, train_mode.loss_sum);
    Ok(())
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Gradients or momentum buffers stored without `detach()` keep every step's
/// graph alive; then resident memory grows by a graph per step.
#[test]
fn memory_stays_flat_over_many_steps() -> muq_resnet::Result<()> {
    let Some(_) = rss_kib() else {
        eprintln!("memory_stays_flat_over_many_steps: did not run (no /proc/self/status)");
        return Ok(());
    };
    let (ds, idx) = synthetic_train(16 * 20, 5);
    let m = model(8, 3);
    let cfg = |epochs| TrainConfig {
        epochs,
        batch_size: 16,
        ..Default::default()
    };
    // Warm up allocator pools with a few steps, then measure over 60 more.
    train(&m, &ds, &idx[..16 * 4], &cfg(1), 1, Progress::Silent)?;
    let before = rss_kib().unwrap();
    train(&m, &ds, &idx, &cfg(3), 1, Progress::Silent)?;
    let after = rss_kib().unwrap();
    // One retained width-8 graph at batch 16 holds ~40 activations of up to
    // 0.5 MiB (≈10 MiB); 60 retained graphs would be ~600 MiB.
    let grown_mib = (after as f64 - before as f64) / 1024.0;
    assert!(
        grown_mib < 64.0,
        "RSS grew by {grown_mib:.1} MiB over 60 steps"
    );
    Ok(())
}

/// A training stopped every few steps and continued by a fresh model (as a
/// new process would) ends with the bits, epoch losses and accuracies of
/// one run in one go — with dropout, whose stream position the state keeps,
/// and with the state saved both mid-epoch and at epoch ends.
#[test]
fn a_training_stopped_and_resumed_gives_the_same_bits() -> muq_resnet::Result<()> {
    use muq_resnet::{ResNet, ResNetConfig, Resume, ResumePoint, Trained, train_resumable};
    let (ds, idx) = synthetic_train(64, 5);
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 16,
        ..Default::default()
    };
    let fresh = || {
        let c = ResNetConfig {
            width: 4,
            dropout: 0.5,
            ..Default::default()
        };
        ResNet::new(
            &c,
            &mut muq_data::rng::stream(3, muq_data::rng::INIT),
            &Device::Cpu,
        )
        .unwrap()
    };
    let whole = fresh();
    let want = train(&whole, &ds, &idx, &cfg, 9, Progress::Silent)?;

    let dir = tempfile::tempdir().unwrap();
    let mut resume = Resume::new(dir.path().join("state.safetensors"), 2);
    resume.stop_after_steps = Some(3);
    let mut pauses = Vec::new();
    let (model, got) = loop {
        let m = fresh();
        match train_resumable(&m, &ds, &idx, &cfg, 9, Progress::Silent, &resume)? {
            Trained::Paused(at) => pauses.push(at),
            Trained::Finished(report) => break (m, report),
        }
        assert!(pauses.len() < 10, "never finishes: {pauses:?}");
    };
    let at = |epoch, step| ResumePoint { epoch, step };
    // 4 steps an epoch, 3 a call.
    assert_eq!(pauses, [at(1, 3), at(2, 2), at(3, 1)]);
    assert_eq!(got.resumed_at, pauses);
    assert_eq!(weights(&model), weights(&whole));
    for (g, w) in got.epochs.iter().zip(&want.epochs) {
        assert_eq!((g.epoch, g.loss, g.accuracy), (w.epoch, w.loss, w.accuracy));
    }
    assert_eq!(got.epochs.len(), 3);

    // The finished state gives the finished report at once.
    let m = fresh();
    let Trained::Finished(again) =
        train_resumable(&m, &ds, &idx, &cfg, 9, Progress::Silent, &resume)?
    else {
        panic!("a finished state pauses")
    };
    assert_eq!(weights(&m), weights(&whole));
    assert_eq!(again.epochs.len(), 3);
    Ok(())
}

/// A state saved by another training is refused, naming the file and what
/// to do, before any step; so is a file that is not a training state.
#[test]
fn a_state_from_another_training_is_refused() -> muq_resnet::Result<()> {
    use muq_resnet::{Resume, Trained, train_resumable};
    let (ds, idx) = synthetic_train(32, 5);
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 16,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.safetensors");
    let mut resume = Resume::new(&path, 0);
    resume.stop_after_steps = Some(2);
    let r = train_resumable(&model(4, 1), &ds, &idx, &cfg, 1, Progress::Silent, &resume)?;
    assert!(matches!(r, Trained::Paused(_)));
    for (seed, indices, width) in [(2, &idx[..], 4), (1, &idx[..31], 4), (1, &idx[..], 8)] {
        let e = train_resumable(
            &model(width, 1),
            &ds,
            indices,
            &cfg,
            seed,
            Progress::Silent,
            &resume,
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ResnetError::Checkpoint { .. }), "{msg}");
        assert!(
            msg.contains("state.safetensors") && msg.contains("delete it"),
            "{msg}"
        );
    }
    muq_resnet::checkpoint::save(&model(4, 1), &path)?;
    let e =
        train_resumable(&model(4, 1), &ds, &idx, &cfg, 1, Progress::Silent, &resume).unwrap_err();
    assert!(e.to_string().contains("not a training state"), "{e}");
    Ok(())
}
