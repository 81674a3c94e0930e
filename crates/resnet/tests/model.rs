//! Architecture, modes, checkpoints.

mod common;

use candle_core::{Device, Tensor};
use common::{model, synthetic_train, weights};
use muq_data::rng;
use muq_resnet::{
    BnMode, ParamKind, Passes, ResNet, ResNetConfig, ResnetError, checkpoint, logits,
};

#[test]
fn full_size_model_has_torchvisions_parameter_count() {
    // torchvision.models.resnet18(num_classes=10) with conv1 replaced by a
    // 3×3 stride-1 conv: sum(p.numel() for p in m.parameters()) == 11_173_962.
    let m = model(64, 0);
    assert_eq!(m.num_trainable(), 11_173_962);
}

#[test]
fn names_follow_torchvisions_state_dict() {
    let m = model(8, 0);
    let names: Vec<&str> = m.params().iter().map(|p| p.name.as_str()).collect();
    for want in [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "layer1.0.conv1.weight",
        "layer1.1.bn2.running_var",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_mean",
        "layer4.1.conv2.weight",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(names.contains(&want), "missing {want}");
    }
    assert!(!names.contains(&"layer1.0.downsample.0.weight"));
    // 20 BatchNorms (1 stem + 16 in blocks + 3 downsample), 2 buffers each.
    assert_eq!(m.buffers().count(), 40);
    assert!(
        m.buffers()
            .all(|p| p.name.ends_with("running_mean") || p.name.ends_with("running_var"))
    );
    assert!(m.trainable().all(|p| p.kind == ParamKind::Trainable));
    // 20 convs/linear weights + fc bias + 20 × (weight, bias) of BatchNorm.
    assert_eq!(m.trainable().count(), 21 + 1 + 40);
}

#[test]
fn output_shapes() -> muq_resnet::Result<()> {
    let m = model(8, 0);
    for n in [1, 3] {
        let x = Tensor::zeros((n, 3, 32, 32), candle_core::DType::F32, &Device::Cpu)?;
        assert_eq!(m.forward(&x, BnMode::Eval, None)?.dims(), &[n, 10]);
    }
    let x = Tensor::randn(0f32, 1.0, (4, 3, 32, 32), &Device::Cpu)?;
    assert_eq!(m.forward(&x, BnMode::Train, None)?.dims(), &[4, 10]);
    Ok(())
}

#[test]
fn train_and_eval_modes_differ_and_eval_is_deterministic() -> muq_resnet::Result<()> {
    let (ds, idx) = synthetic_train(16, 3);
    let m = model(8, 1);
    let (x, _) = ds.batch(&idx, &Device::Cpu)?;
    let before = weights(&m);
    let e1 = m
        .forward(&x, BnMode::Eval, None)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let e2 = m
        .forward(&x, BnMode::Eval, None)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    assert_eq!(e1, e2, "eval mode must be deterministic");
    assert_eq!(before, weights(&m), "eval mode must not touch buffers");
    let t = m
        .forward(&x, BnMode::Train, None)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    assert_ne!(e1, t, "train mode normalises with batch statistics");
    let after: Vec<_> = weights(&m);
    let changed: Vec<_> = m
        .params()
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (a, b))| a != b)
        .map(|(p, _)| p.kind)
        .collect();
    assert!(!changed.is_empty());
    assert!(
        changed.iter().all(|k| *k == ParamKind::Buffer),
        "only buffers move"
    );
    Ok(())
}

#[test]
fn same_seed_same_init_different_seed_different() {
    assert_eq!(weights(&model(8, 5)), weights(&model(8, 5)));
    assert_ne!(weights(&model(8, 5)), weights(&model(8, 6)));
}

#[test]
fn save_load_round_trip_gives_identical_logits() -> muq_resnet::Result<()> {
    let (ds, idx) = synthetic_train(12, 4);
    let m = model(8, 2);
    // Move the buffers away from their initial values first.
    let (x, _) = ds.batch(&idx, &Device::Cpu)?;
    m.forward(&x, BnMode::Train, None)?;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ckpt/model.safetensors");
    checkpoint::save(&m, &path)?;
    assert!(checkpoint::config_path(&path).exists());
    let loaded = checkpoint::load(&path, m.config(), &Device::Cpu)?;
    assert_eq!(weights(&m), weights(&loaded));
    let a = logits(&m, &ds, &idx, 5, Passes::Eval)?;
    let b = logits(&loaded, &ds, &idx, 5, Passes::Eval)?;
    assert_eq!(a, b);
    Ok(())
}

#[test]
fn loading_another_architecture_is_a_clear_error() -> muq_resnet::Result<()> {
    let m = model(8, 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.safetensors");
    checkpoint::save(&m, &path)?;
    for other in [
        ResNetConfig {
            width: 16,
            ..Default::default()
        },
        ResNetConfig {
            width: 8,
            num_classes: 100,
            ..Default::default()
        },
    ] {
        let err = checkpoint::load(&path, &other, &Device::Cpu).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ResnetError::Checkpoint { .. }), "{msg}");
        assert!(
            msg.contains("m.safetensors") && msg.contains("width 8"),
            "{msg}"
        );
    }
    // A config file that lies about the tensors: shape error, not a panic.
    std::fs::write(
        checkpoint::config_path(&path),
        r#"{"width": 16, "num_classes": 10, "dropout": 0.0}"#,
    )
    .expect("write");
    let lying = ResNetConfig {
        width: 16,
        ..Default::default()
    };
    let msg = checkpoint::load(&path, &lying, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("shape"), "{msg}");
    Ok(())
}

#[test]
fn config_validation_names_the_field() {
    let bad = ResNetConfig {
        dropout: 1.0,
        ..Default::default()
    };
    let err = ResNet::new(&bad, &mut rng::stream(0, rng::INIT), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("`dropout`"), "{err}");
}

#[test]
fn mc_dropout_passes_are_stochastic_but_seeded() -> muq_resnet::Result<()> {
    let (ds, idx) = synthetic_train(8, 1);
    let cfg = ResNetConfig {
        width: 4,
        dropout: 0.5,
        ..Default::default()
    };
    let m = ResNet::new(&cfg, &mut rng::stream(0, rng::INIT), &Device::Cpu)?;
    let mc = Passes::McDropout { passes: 3, seed: 9 };
    let a = logits(&m, &ds, &idx, 4, mc)?;
    let b = logits(&m, &ds, &idx, 4, mc)?;
    assert_eq!(a, b, "same seed, same masks");
    assert_eq!(a.passes.len(), 3);
    assert_ne!(a.passes[0], a.passes[1], "passes differ");
    let eval = logits(&m, &ds, &idx, 4, Passes::Eval)?;
    assert_ne!(eval.passes[0], a.passes[0]);
    // A model without dropout cannot do MC dropout.
    assert!(logits(&model(4, 0), &ds, &idx, 4, mc).is_err());
    Ok(())
}

/// `infer` computes `forward`'s bits (eval mode, and with dropout drawn from
/// the same stream) on every kernel path, records no graph, and leaves
/// later `forward` passes recording theirs.
#[test]
fn infer_gives_forwards_bits_without_a_graph() -> muq_resnet::Result<()> {
    use muq_resnet::Kernels;
    let cfg = ResNetConfig {
        width: 8,
        dropout: 0.5,
        ..Default::default()
    };
    let x = Tensor::randn(0f32, 1.0, (6, 3, 32, 32), &Device::Cpu)?;
    let bits = |t: &Tensor| -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    for k in Kernels::ALL {
        let mut m = ResNet::new(&cfg, &mut rng::stream(4, rng::INIT), &Device::Cpu)?;
        m.set_kernels(k);
        let want = m.forward(&x, BnMode::Eval, None)?;
        let got = m.infer(&x, BnMode::Eval, None)?;
        assert_eq!(bits(&got), bits(&want), "{k}");
        let mc = |f: &dyn Fn(&mut rand_chacha::ChaCha8Rng) -> Tensor| {
            f(&mut rng::stream(4, "mc_dropout"))
        };
        assert_eq!(
            bits(&mc(&|r| m.infer(&x, BnMode::Eval, Some(r)).unwrap())),
            bits(&mc(&|r| m.forward(&x, BnMode::Eval, Some(r)).unwrap())),
            "{k}: with dropout"
        );
        let w = m.trainable().next().unwrap().var.as_tensor().clone();
        let grads = got.sum_all()?.backward()?;
        assert!(grads.get(&w).is_none(), "{k}: infer recorded a graph");
        let grads = want.sum_all()?.backward()?;
        assert!(grads.get(&w).is_some(), "{k}: forward records its graph");
        let again = m.forward(&x, BnMode::Eval, None)?;
        let grads = again.sum_all()?.backward()?;
        assert!(
            grads.get(&w).is_some(),
            "{k}: forward after infer records its graph"
        );
    }
    Ok(())
}
