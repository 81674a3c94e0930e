//! The field's standard methods (random labels, SalUn, SCRUB, ℓ1-sparse,
//! NegGrad+, Fisher forgetting) on a width-8 ResNet trained for 24 epochs
//! (batch 16, lr 0.02) on 96 synthetic images, 12 of which — all with flipped
//! labels (`label` modality, pool = forget) — are to be forgotten. The base
//! model fits them (11 of 12 predicted as their flipped label, eval mode) and
//! all 84 retained images.

use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use muq_resnet::{BnMode, Gradients, cross_entropy_sum};
use muq_resnet::{Passes, ResNet, SgdConfig, TrainConfig, logits};
use muq_unlearn::{
    Diagnostics, FisherConfig, L1SparseConfig, Method, NegGradPlusConfig, RandomLabelConfig,
    SalunConfig, ScrubConfig, UnlearnContext, Unlearned, distill_kl, fisher_noise_variance,
    l1_alpha, saliency_mask, unlearn,
};

mod common;

use common::{Fixture, ctx};

const SEED: u64 = 11;
const N: usize = 96;

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        common::build(common::Spec {
            n: N,
            seed: SEED,
            remove_prop: 0.125,
            pool_prop: 0.125,
            width: 8,
            train_config: TrainConfig {
                epochs: 24,
                batch_size: 16,
                sgd: SgdConfig {
                    lr: 0.02,
                    ..Default::default()
                },
            },
        })
    })
}

/// Eval-mode accuracy against the labels trained on.
fn accuracy(m: &ResNet, idx: &[usize]) -> f64 {
    let f = fixture();
    let out = logits(m, &f.trained_on, idx, 64, Passes::Eval).unwrap();
    let k = out.num_classes;
    let hits = out.passes[0]
        .chunks(k)
        .zip(idx)
        .filter(|(row, i)| {
            let argmax = row
                .iter()
                .enumerate()
                .fold(0, |b, (j, &z)| if z > row[b] { j } else { b });
            argmax == usize::from(f.trained_on.labels()[**i])
        })
        .count();
    hits as f64 / idx.len() as f64
}

fn run(method: &Method) -> Unlearned {
    unlearn(method, &ctx(fixture())).unwrap_or_else(|e| panic!("{}: {e}", method.short_name()))
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn everything(m: &ResNet) -> Vec<Vec<f32>> {
    m.params()
        .iter()
        .map(|p| values(p.var.as_tensor()))
        .collect()
}

/// Small settings of every new method, strong enough to unlearn the fixture.
fn small_methods() -> Vec<Method> {
    vec![
        Method::RandomLabel(RandomLabelConfig {
            epochs: 2,
            batch_size: 16,
            lr: 0.02,
            ..Default::default()
        }),
        Method::Salun(SalunConfig {
            epochs: 2,
            batch_size: 16,
            lr: 0.02,
            ..Default::default()
        }),
        Method::Scrub(ScrubConfig {
            epochs: 3,
            msteps: 2,
            lr: 0.01,
            forget_batch_size: 16,
            batch_size: 16,
            ..Default::default()
        }),
        Method::L1Sparse(L1SparseConfig {
            epochs: 5,
            batch_size: 16,
            alpha: 5e-4,
            ..Default::default()
        }),
        Method::NegGradPlus(NegGradPlusConfig {
            epochs: 2,
            alpha: 0.7,
            lr: 0.02,
            batch_size: 16,
            forget_batch_size: 8,
            ..Default::default()
        }),
        Method::Fisher(FisherConfig {
            alpha: 1e-6,
            samples: 32,
            ..Default::default()
        }),
    ]
}

/// Each method lowers forget-set accuracy (against the flipped labels the
/// model was trained on) by at least 0.2 — from 11/12 to at most 8/12 — and
/// keeps retain accuracy within 0.15 of the original's; the update is
/// non-zero, the input model untouched, and cost and diagnostics fit.
#[test]
fn every_field_method_forgets_and_keeps_the_retain_set() {
    let f = fixture();
    let (forget, retain) = (&f.modification.forget, &f.modification.retain);
    let before = everything(&f.model);
    let (base_f, base_r) = (accuracy(&f.model, forget), accuracy(&f.model, retain));
    assert!(base_f > 0.9 && base_r > 0.99, "base {base_f} / {base_r}");
    for method in small_methods() {
        let name = method.short_name();
        let out = run(&method);
        let (acc_f, acc_r) = (accuracy(&out.model, forget), accuracy(&out.model, retain));
        eprintln!("{name}: forget {base_f:.3} -> {acc_f:.3}, retain {base_r:.3} -> {acc_r:.3}");
        assert!(
            acc_f <= base_f - 0.2,
            "{name}: forget accuracy {base_f} -> {acc_f}"
        );
        assert!(
            acc_r >= base_r - 0.15,
            "{name}: retain accuracy {base_r} -> {acc_r}"
        );
        assert!(out.report.update_norm > 0.0, "{name}");
        assert_eq!(everything(&f.model), before, "{name} modified its input");
        assert_eq!(out.report.method(), name);
        let json = serde_json::to_value(&out.report).unwrap();
        assert_eq!(json["diagnostics"]["method"], name);
        let cost = &out.report.cost;
        let (nf, nr) = (forget.len(), retain.len());
        match &out.report.diagnostics {
            Diagnostics::RandomLabel(d) => {
                assert_eq!(d.epochs.len(), 2);
                // 12 forget in batches of 16: 1 step; 84 retain: 6 steps.
                assert!(d.epochs.iter().all(|e| e.steps == 7));
                assert_eq!((cost.grad_samples, cost.updates), (2 * (nf + nr), 14));
            }
            Diagnostics::Salun(d) => {
                assert_eq!(d.mask.total, f.model.num_trainable());
                assert_eq!(d.mask.kept, d.mask.total / 2);
                assert_eq!(cost.grad_samples, nf + 2 * (nf + nr));
            }
            Diagnostics::Scrub(d) => {
                let max: Vec<bool> = d.epochs.iter().map(|e| e.max_kl.is_some()).collect();
                assert_eq!(max, [true, true, false]);
                assert!(d.epochs[1].max_kl.unwrap() > d.epochs[0].max_kl.unwrap());
                assert_eq!(cost.grad_samples, 2 * nf + 3 * nr);
                assert_eq!(cost.updates, 2 + 3 * 6);
            }
            Diagnostics::L1Sparse(d) => {
                let alphas: Vec<f64> = d.epochs.iter().map(|e| e.alpha).collect();
                let want: Vec<f64> = (0..5).map(|e| l1_alpha(5e-4, e, 5, 0)).collect();
                assert_eq!(alphas, want);
                assert!(d.epochs[4].l1_norm < d.l1_norm_before, "{d:?}");
                assert_eq!((cost.grad_samples, cost.updates), (5 * nr, 30));
            }
            Diagnostics::NegGradPlus(d) => {
                // 6 retain steps an epoch; a pass over the 12 forget images
                // is 2 steps (8 + 4), so 12 steps begin 6 passes.
                assert_eq!(d.epochs.len(), 2);
                assert_eq!(d.forget_passes, 6);
                assert!(d.epochs[1].forget_loss > d.epochs[0].forget_loss, "{d:?}");
                assert_eq!(cost.updates, 12);
            }
            Diagnostics::Fisher(d) => {
                assert_eq!(d.samples, 32);
                assert!(d.noise_std_max > 0.0 && d.fisher_mean > 0.0, "{d:?}");
                assert_eq!(cost.grad_samples, 32 * 10);
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// Same seed, same weights (every parameter and buffer, bit for bit); a
/// different seed, different weights.
#[test]
fn reruns_are_bit_identical() {
    let f = fixture();
    for method in [&small_methods()[0], &small_methods()[5]] {
        let a = run(method);
        let b = run(method);
        assert_eq!(
            everything(&a.model),
            everything(&b.model),
            "{}",
            method.short_name()
        );
        let other = unlearn(
            method,
            &UnlearnContext {
                seed: SEED + 1,
                ..ctx(f)
            },
        )
        .unwrap();
        assert_ne!(everything(&a.model), everything(&other.model));
    }
}

/// The saliency SalUn masks by, recomputed here: Σ over forget chunks of
/// ∇ mean CE, BatchNorm frozen.
fn saliency(batch_size: usize) -> Gradients {
    let f = fixture();
    let mut acc: Option<Gradients> = None;
    for chunk in f.modification.forget.chunks(batch_size) {
        let (x, y) = f.trained_on.batch(chunk, &Device::Cpu).unwrap();
        let logits = f.model.forward(&x, BnMode::Eval, None).unwrap();
        let loss = (cross_entropy_sum(&logits, &y).unwrap() / chunk.len() as f64).unwrap();
        let g = Gradients::from_store(&f.model, &loss.backward().unwrap()).unwrap();
        acc = Some(match acc {
            None => g,
            Some(a) => a.add(&g).unwrap(),
        });
    }
    acc.unwrap()
}

/// SalUn keeps ⌊fraction·N⌋ weights, and those outside the mask end
/// bit-identical to the original despite momentum and weight decay.
#[test]
fn salun_updates_only_the_masked_weights() {
    let f = fixture();
    for fraction in [0.5, 0.1] {
        let cfg = SalunConfig {
            mask_fraction: fraction,
            epochs: 1,
            batch_size: 16,
            lr: 0.02,
            ..Default::default()
        };
        let out = run(&Method::Salun(cfg));
        let Diagnostics::Salun(d) = &out.report.diagnostics else {
            panic!()
        };
        let total = f.model.num_trainable();
        let want = (total as f64 * fraction).floor() as usize;
        assert!(d.mask.kept.abs_diff(want) <= 1, "{} vs {want}", d.mask.kept);
        let (mask, kept, _) = saliency_mask(&saliency(16), fraction).unwrap();
        assert_eq!(kept, d.mask.kept);
        let (mut moved, mut frozen) = (0, 0);
        for ((p_old, p_new), m) in f
            .model
            .trainable()
            .zip(out.model.trainable())
            .zip(mask.tensors())
        {
            let (a, b, m) = (
                values(p_old.var.as_tensor()),
                values(p_new.var.as_tensor()),
                values(m),
            );
            for ((a, b), m) in a.iter().zip(&b).zip(&m) {
                if *m == 0.0 {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{} moved outside the mask",
                        p_old.name
                    );
                    frozen += 1;
                } else if a != b {
                    moved += 1;
                }
            }
        }
        assert_eq!(frozen, total - kept);
        assert!(moved > kept / 2, "{moved} of {kept} masked weights moved");
    }
}

#[test]
fn the_saliency_mask_keeps_the_largest_magnitudes_globally() {
    let dev = Device::Cpu;
    let g = Gradients::from_tensors(vec![
        Tensor::new(&[3.0f32, -1.0, 2.0], &dev).unwrap(),
        Tensor::new(&[[0.5f32], [-4.0]], &dev).unwrap(),
    ]);
    // ⌊5 · 0.4⌋ = 2: |−4| and |3|.
    let (mask, kept, threshold) = saliency_mask(&g, 0.4).unwrap();
    assert_eq!((kept, threshold), (2, 3.0));
    assert_eq!(values(&mask.tensors()[0]), [1.0, 0.0, 0.0]);
    assert_eq!(values(&mask.tensors()[1]), [0.0, 1.0]);
    assert_eq!(mask.tensors()[1].dims(), [2, 1]);
    let (mask, kept, threshold) = saliency_mask(&g, 1.0).unwrap();
    assert_eq!((kept, threshold), (5, 0.5));
    assert!(
        mask.tensors()
            .iter()
            .all(|t| values(t).iter().all(|&v| v == 1.0))
    );
    // Ties go to the earlier entry.
    let ties = Gradients::from_tensors(vec![Tensor::new(&[1.0f32, -1.0, 1.0], &dev).unwrap()]);
    let (mask, kept, _) = saliency_mask(&ties, 0.5).unwrap();
    assert_eq!((kept, values(&mask.tensors()[0])), (1, vec![1.0, 0.0, 0.0]));
}

/// `FT_l1`'s schedule by hand: α(1 − e/a), a = epochs − no_l1_epochs.
#[test]
fn the_l1_schedule_decays_linearly_as_in_ft_l1() {
    let got: Vec<f64> = (0..4).map(|e| l1_alpha(1e-3, e, 4, 0)).collect();
    assert_eq!(got, [1e-3, 1e-3 * 0.75, 1e-3 * 0.5, 1e-3 * 0.25]);
    let got: Vec<f64> = (0..4).map(|e| l1_alpha(1e-3, e, 4, 2)).collect();
    assert_eq!(got, [1e-3, 1e-3 * 0.5, 0.0, 0.0]);
    // epochs == no_l1_epochs: the reference keeps α throughout.
    assert_eq!(l1_alpha(1e-3, 1, 2, 2), 1e-3);
}

/// DistillKL on two rows, by hand in f64: row 1 student logits (0, 0),
/// teacher (ln 3, 0); row 2 equal (KL 0). At T, p_t = softmax((ln 3)/T, 0),
/// p_s = (½, ½), KL = Σ p_t ln(2 p_t), loss = T² · KL / 2.
#[test]
fn distill_kl_matches_a_hand_computation() {
    let dev = Device::Cpu;
    let s = Tensor::new(&[[0.0f32, 0.0], [1.0, -2.0]], &dev).unwrap();
    let t = Tensor::new(&[[3f32.ln(), 0.0], [1.0, -2.0]], &dev).unwrap();
    for temp in [1.0f64, 2.0, 4.0] {
        let a = (3f64.ln() / temp).exp();
        let p = [a / (1.0 + a), 1.0 / (1.0 + a)];
        let kl: f64 = p.iter().map(|&q| q * (2.0 * q).ln()).sum();
        let want = temp * temp * kl / 2.0;
        let got = distill_kl(&s, &t, temp)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (f64::from(got) - want).abs() < 1e-6,
            "T={temp}: {got} vs {want}"
        );
    }
    // T = 1: 0.75 ln 1.5 + 0.25 ln 0.5 = 0.1308120, halved.
    let got = distill_kl(&s, &t, 1.0).unwrap().to_scalar::<f32>().unwrap();
    assert!((got - 0.065_406).abs() < 1e-5, "{got}");
}

/// Golatkar et al.'s variance by hand: α·min(1/(F + 1e-8), cap), averaged
/// over dim 1, ×10 for the last layer and rank-1 tensors.
#[test]
fn fisher_noise_variance_matches_a_hand_computation() {
    let dev = Device::Cpu;
    let f = Tensor::new(&[[0.0f32, 1e-4], [1.0, 3.0]], &dev).unwrap();
    // Not last: rows (2000, 2000) and (2/(1+1e-8), 2/3) → means 2000, 4/3.
    let v = values(&fisher_noise_variance(&f, 2.0, false).unwrap());
    for (got, want) in v.iter().zip([2000.0, 2000.0, 4.0 / 3.0, 4.0 / 3.0]) {
        assert!((f64::from(*got) - want).abs() < 1e-4 * want, "{v:?}");
    }
    // Last layer: cap 100 → (200, 200) and (2, 2/3), then ×10.
    let v = values(&fisher_noise_variance(&f, 2.0, true).unwrap());
    for (got, want) in v.iter().zip([2000.0, 2000.0, 40.0 / 3.0, 40.0 / 3.0]) {
        assert!((f64::from(*got) - want).abs() < 1e-4 * want, "{v:?}");
    }
    // Rank 1 (BatchNorm): 1/0.5 = 2, ×10.
    let b = Tensor::new(&[0.5f32], &dev).unwrap();
    let v = values(&fisher_noise_variance(&b, 1.0, false).unwrap());
    assert!((v[0] - 20.0).abs() < 1e-4, "{v:?}");
}
