//! Models to and from PyTorch, against `fixtures/torch-resnet18-w4.safetensors`
//! and `fixtures/torch-resnet18.json`, made by
//! `scripts/reference/torch_resnet.py` (python 3.11.7, torch 2.15.0 on the
//! CPU, torchvision 0.29.2, safetensors 0.8.0): a width-4 CIFAR ResNet-18
//! (torchvision's `BasicBlock`s and names, 3×3 stem, no max-pool) with
//! random BatchNorm affine parameters and running statistics from three
//! train-mode passes, saved with `safetensors.torch.save_file(model.state_dict())`;
//! four images and the model's `model.eval()` logits for them; and the names,
//! shapes and dtypes of `torchvision.models.resnet18(num_classes=10)`'s
//! `state_dict` with the CIFAR stem.
//!
//! The reverse direction was also run once: a muq export of the imported
//! model, loaded by the same script (`torch_resnet.py EXPORTED`) with
//! `load_state_dict(strict=True)`, gave the fixture's logits again (see
//! docs/experiment.md, "Bring your own model").

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use muq_resnet::{BnMode, ResNet, ResNetConfig, ResnetError, checkpoint};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("torch-resnet18.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|x| match x.as_array() {
            Some(row) => row.iter().map(|y| y.as_f64().unwrap() as f32).collect(),
            None => vec![x.as_f64().unwrap() as f32],
        })
        .collect()
}

fn eval_logits(model: &ResNet, images: &[f32]) -> Vec<f32> {
    let n = images.len() / 3072;
    let x = Tensor::from_slice(images, (n, 3, 32, 32), &Device::Cpu).unwrap();
    model
        .forward(&x, BnMode::Eval, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Float32 convolutions summed in another order: PyTorch's logits (|z| up
/// to ~0.2 here) are matched to 2e-6 absolute; measured ≤ 1e-7.
const TOLERANCE: f32 = 2e-6;

#[test]
fn a_pytorch_checkpoint_gives_pytorchs_logits() {
    let r = reference();
    let model =
        checkpoint::import_torch(&fixture("torch-resnet18-w4.safetensors"), 0.0, &Device::Cpu)
            .unwrap();
    assert_eq!(
        model.config(),
        &ResNetConfig {
            width: 4,
            num_classes: 10,
            dropout: 0.0
        }
    );
    let got = eval_logits(&model, &floats(&r["images"]));
    let want = floats(&r["logits"]);
    assert_eq!(got.len(), want.len());
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("max |muq − torch| = {worst:e}");
    assert!(worst <= TOLERANCE, "max |muq − torch| = {worst:e}");
    // Not vacuous: the logits differ between images and classes.
    assert!(want.iter().any(|&z| z.abs() > 0.05));
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

#[test]
fn an_export_has_exactly_torchvisions_names_shapes_and_dtypes() {
    let r = reference();
    let want: Vec<(String, Vec<usize>, String)> = r["torchvision_state_dict"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect(),
                t["dtype"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let model = ResNet::new(
        &ResNetConfig::default(),
        &mut muq_data::rng::stream(1, "init"),
        &Device::Cpu,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.safetensors");
    checkpoint::export_torch(&model, &path, 7).unwrap();
    let got = load(&path);
    let mut got: Vec<(String, Vec<usize>, String)> = got
        .iter()
        .map(|(k, v)| {
            let dtype = match v.dtype() {
                DType::F32 => "float32",
                DType::I64 => "int64",
                other => panic!("{k}: unexpected {other:?}"),
            };
            (k.clone(), v.dims().to_vec(), dtype.to_string())
        })
        .collect();
    got.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(got.len(), 122);
    assert_eq!(got, want_sorted);
    // The counters hold what was passed.
    let n: i64 = load(&path)["bn1.num_batches_tracked"].to_scalar().unwrap();
    assert_eq!(n, 7);
}

#[test]
fn import_then_export_gives_back_the_same_tensors() {
    let src = fixture("torch-resnet18-w4.safetensors");
    let model = checkpoint::import_torch(&src, 0.0, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("back.safetensors");
    checkpoint::export_torch(&model, &out, 3).unwrap();
    let (a, b) = (load(&src), load(&out));
    let mut names: Vec<&String> = a.keys().collect();
    names.sort();
    let mut back: Vec<&String> = b.keys().collect();
    back.sort();
    assert_eq!(names, back);
    for name in names {
        let (x, y) = (&a[name], &b[name]);
        assert_eq!(x.dims(), y.dims(), "{name}");
        if x.dtype() == DType::I64 {
            // PyTorch counted 3 train-mode passes; the export was told 3.
            assert_eq!(x.to_scalar::<i64>().unwrap(), 3, "{name}");
            assert_eq!(y.to_scalar::<i64>().unwrap(), 3, "{name}");
            continue;
        }
        let (x, y): (Vec<f32>, Vec<f32>) = (
            x.flatten_all().unwrap().to_vec1().unwrap(),
            y.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{name}"
        );
    }
}

/// Writes `tensors` to a file and imports it, returning the error text.
fn import_error(tensors: &HashMap<String, Tensor>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    candle_core::safetensors::save(tensors, &path).unwrap();
    let err = checkpoint::import_torch(&path, 0.0, &Device::Cpu).unwrap_err();
    assert!(matches!(err, ResnetError::Checkpoint { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("bad.safetensors"), "names the file: {msg}");
    msg
}

#[test]
fn a_checkpoint_that_does_not_fit_says_which_tensor() {
    let good = load(&fixture("torch-resnet18-w4.safetensors"));
    let with = |edit: &dyn Fn(&mut HashMap<String, Tensor>)| {
        let mut t = good.clone();
        edit(&mut t);
        t
    };
    let zeros = |dims: &[usize]| Tensor::zeros(dims, DType::F32, &Device::Cpu).unwrap();
    // ImageNet's stem.
    let msg = import_error(&with(&|t| {
        t.insert("conv1.weight".into(), zeros(&[4, 3, 7, 7]));
    }));
    assert!(
        msg.contains("7x7") && msg.contains("CIFAR variant"),
        "{msg}"
    );
    // A missing tensor.
    let msg = import_error(&with(&|t| {
        t.remove("layer3.1.bn2.running_var");
    }));
    assert!(
        msg.contains("`layer3.1.bn2.running_var` is missing"),
        "{msg}"
    );
    // A tensor of the wrong shape.
    let msg = import_error(&with(&|t| {
        t.insert("layer2.0.conv1.weight".into(), zeros(&[8, 4, 5, 5]));
    }));
    assert!(msg.contains("`layer2.0.conv1.weight` has shape"), "{msg}");
    // A tensor the model does not have.
    let msg = import_error(&with(&|t| {
        t.insert("fc2.weight".into(), zeros(&[2, 2]));
    }));
    assert!(msg.contains("fc2.weight"), "{msg}");
    // A head that does not fit the width.
    let msg = import_error(&with(&|t| {
        t.insert("fc.weight".into(), zeros(&[10, 31]));
    }));
    assert!(msg.contains("`fc.weight` has shape [10, 31]"), "{msg}");
    // Not a ResNet at all.
    let mut other = HashMap::new();
    other.insert("encoder.weight".to_string(), zeros(&[2]));
    let msg = import_error(&other);
    assert!(msg.contains("no tensor `conv1.weight`"), "{msg}");
}

#[test]
fn a_data_parallel_prefix_is_removed() {
    let good = load(&fixture("torch-resnet18-w4.safetensors"));
    let prefixed: HashMap<String, Tensor> = good
        .iter()
        .map(|(k, v)| (format!("module.{k}"), v.clone()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ddp.safetensors");
    candle_core::safetensors::save(&prefixed, &path).unwrap();
    let a = checkpoint::import_torch(&path, 0.0, &Device::Cpu).unwrap();
    let b = checkpoint::import_torch(&fixture("torch-resnet18-w4.safetensors"), 0.0, &Device::Cpu)
        .unwrap();
    let images = floats(&reference()["images"]);
    assert_eq!(eval_logits(&a, &images), eval_logits(&b, &images));
}
