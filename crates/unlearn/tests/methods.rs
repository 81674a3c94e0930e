//! Every method on a tiny ResNet (width 4) and 48 synthetic images, 12 of
//! them forgotten (their labels flipped by the `label` modality).

use std::sync::{Arc, OnceLock};

use candle_core::{Device, Tensor};
use muq_data::{Dataset, Normalization, rng};
use muq_resnet::{
    BnMode, BnPolicy, GradSumOptions, Gradients, Passes, Progress, Reduction, ResNet, TrainConfig,
    grad_sum, logits, train,
};
use muq_unlearn::{
    Curvature, Diagnostics, FineTuneConfig, FiniteDiffHvp, FirstOrderConfig, GaussNewtonHvp,
    GradientAscentConfig, Hvp, LogitModel, Method, Objective, ResNetObjective, RetrainConfig,
    SecondOrderConfig, Solver, UnlearnContext, UnlearnError, Unlearned, hessian_sample, unlearn,
};
use rand::Rng;

mod common;

use common::{Fixture, ctx};

const SEED: u64 = 5;

/// A width-4 ResNet trained for 2 epochs on 48 synthetic images whose
/// 24-image pool has flipped labels; 12 of the pool are to be forgotten.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        common::build(common::Spec {
            n: 48,
            seed: SEED,
            remove_prop: 0.25,
            pool_prop: 0.5,
            width: 4,
            train_config: TrainConfig {
                epochs: 2,
                batch_size: 8,
                ..Default::default()
            },
        })
    })
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn trainable(m: &ResNet) -> Vec<Vec<f32>> {
    m.trainable().map(|p| values(p.var.as_tensor())).collect()
}

fn buffers(m: &ResNet) -> Vec<Vec<f32>> {
    m.buffers().map(|p| values(p.var.as_tensor())).collect()
}

fn everything(m: &ResNet) -> Vec<Vec<f32>> {
    m.params()
        .iter()
        .map(|p| values(p.var.as_tensor()))
        .collect()
}

/// Mean cross-entropy in eval mode, computed on the host from the logits.
fn eval_loss(m: &ResNet, data: &Dataset, idx: &[usize]) -> f64 {
    let out = logits(m, data, idx, 64, Passes::Eval).unwrap();
    let k = out.num_classes;
    let mut total = 0.0;
    for (row, &i) in out.passes[0].chunks(k).zip(idx) {
        let max = row.iter().copied().fold(f32::MIN, f32::max) as f64;
        let lse = max
            + row
                .iter()
                .map(|&z| (z as f64 - max).exp())
                .sum::<f64>()
                .ln();
        total += lse - row[usize::from(data.labels()[i])] as f64;
    }
    total / idx.len() as f64
}

fn run(method: Method) -> Unlearned {
    unlearn(&method, &ctx(fixture())).unwrap_or_else(|e| panic!("{}: {e}", method.short_name()))
}

#[test]
fn the_fixture_forgets_twelve_relabelled_images() {
    let f = fixture();
    let m = &f.modification;
    assert_eq!((m.forget.len(), m.retain.len()), (12, 36));
    for &i in &m.forget {
        assert_ne!(f.trained_on.labels()[i], f.trained_on.images().labels()[i]);
    }
}

/// θ_after − θ_before equals τ·g, g from an independent `grad_sum` on a copy,
/// to f32 rounding: the device computes fl(θ + fl(τ·g)), so per element
/// |Δ − τg| ≤ ½ulp(θ_after) + 2⁻²⁴|τg|.
#[test]
fn first_order_moves_theta_by_exactly_tau_g() {
    let f = fixture();
    let tau = 1e-3;
    for bn in [BnPolicy::Frozen, BnPolicy::Train] {
        for reduction in [Reduction::Sum, Reduction::Mean] {
            let cfg = FirstOrderConfig {
                tau,
                bn,
                reduction,
                batch_size: 8,
                ..Default::default()
            };
            let out = run(Method::FirstOrder(cfg));
            let copy = f.model.try_clone().unwrap();
            let opts = GradSumOptions {
                batch_size: 8,
                bn,
                reduction,
                seed: 0,
            };
            let g = grad_sum(&copy, &f.trained_on, &f.modification.forget, opts).unwrap();
            let before = trainable(&f.model);
            let after = trainable(&out.model);
            let g_host: Vec<Vec<f32>> = g.grads.tensors().iter().map(values).collect();
            let mut diff2 = 0.0;
            let mut step2 = 0.0;
            for ((b, a), g) in before.iter().zip(&after).zip(&g_host) {
                for ((&b, &a), &g) in b.iter().zip(a).zip(g) {
                    let delta = a as f64 - b as f64;
                    let want = tau * g as f64;
                    let ulp = f32::EPSILON as f64 * (a as f64).abs().max(f32::MIN_POSITIVE as f64);
                    let bound = 0.5 * ulp + want.abs() * 2f64.powi(-23);
                    assert!(
                        (delta - want).abs() <= bound,
                        "{bn:?}/{reduction:?}: Δ {delta} vs τg {want}"
                    );
                    diff2 += (delta - want).powi(2);
                    step2 += want * want;
                }
            }
            assert!(step2 > 0.0);
            assert!((diff2 / step2).sqrt() < 1e-3, "{bn:?}/{reduction:?}");
            let Diagnostics::FirstOrder(d) = &out.report.diagnostics else {
                panic!("{:?}", out.report.diagnostics)
            };
            assert!((d.grad_norm - g.grads.norm().unwrap()).abs() <= 1e-9 * d.grad_norm);
            assert!((d.forget_loss - g.loss_sum / 12.0).abs() < 1e-9);
            assert_eq!((d.batches, d.bn, d.reduction), (2, bn, reduction));
            assert_eq!(out.report.cost.grad_samples, 12);
            assert_eq!(out.report.cost.updates, 1);
            let want_norm = tau * d.grad_norm;
            assert!((out.report.update_norm - want_norm).abs() < 1e-3 * want_norm);
        }
    }
}

#[test]
fn the_batchnorm_policies_differ_exactly_as_specified() {
    let f = fixture();
    let cfg = |bn| FirstOrderConfig {
        bn,
        batch_size: 8,
        ..Default::default()
    };
    // frozen: running statistics bit-identical, parameters moved.
    let frozen = run(Method::FirstOrder(cfg(BnPolicy::Frozen)));
    assert_eq!(buffers(&frozen.model), buffers(&f.model));
    assert_ne!(trainable(&frozen.model), trainable(&f.model));
    // train: running statistics are what a train-mode pass over the same
    // batches (forget set in order, 8 per batch) leaves behind.
    let trained = run(Method::FirstOrder(cfg(BnPolicy::Train)));
    assert_ne!(buffers(&trained.model), buffers(&f.model));
    let reference = f.model.try_clone().unwrap();
    for batch in f
        .trained_on
        .batches(&f.modification.forget, 8, &Device::Cpu)
    {
        let (x, _) = batch.unwrap();
        reference.forward(&x, BnMode::Train, None).unwrap();
    }
    assert_eq!(buffers(&trained.model), buffers(&reference));
}

#[test]
fn gradient_ascent_raises_the_forget_loss() {
    let f = fixture();
    let forget = &f.modification.forget;
    let before = eval_loss(&f.model, &f.trained_on, forget);
    for bn in [BnPolicy::Train, BnPolicy::Frozen] {
        let out = run(Method::GradientAscent(GradientAscentConfig {
            steps: 4,
            lr: 0.05,
            batch_size: 6,
            bn,
            ..Default::default()
        }));
        let after = eval_loss(&out.model, &f.trained_on, forget);
        eprintln!("gradient ascent ({bn:?}): forget loss {before} -> {after}");
        assert!(
            after > before + 0.05,
            "{bn:?}: forget loss {before} -> {after}"
        );
        let Diagnostics::GradientAscent(d) = &out.report.diagnostics else {
            panic!()
        };
        // 12 forget images in batches of 6: two steps per pass.
        assert_eq!((d.step_losses.len(), d.images_seen, d.passes), (4, 24, 2));
        assert_eq!(out.report.cost.grad_samples, 24);
        assert_eq!(out.report.cost.updates, 4);
        if bn == BnPolicy::Frozen {
            assert_eq!(buffers(&out.model), buffers(&f.model));
        }
    }
}

#[test]
fn fine_tune_lowers_the_retain_loss() {
    let f = fixture();
    let retain = &f.modification.retain;
    let before = eval_loss(&f.model, &f.trained_on, retain);
    let out = run(Method::FineTune(FineTuneConfig {
        epochs: 2,
        batch_size: 8,
        ..Default::default()
    }));
    let after = eval_loss(&out.model, &f.trained_on, retain);
    eprintln!("fine-tune: retain loss {before} -> {after}");
    assert!(after < before, "retain loss {before} -> {after}");
    let Diagnostics::FineTune(d) = &out.report.diagnostics else {
        panic!()
    };
    assert_eq!(d.train.epochs.len(), 2);
    assert_eq!(d.images, 36);
    assert_eq!(out.report.cost.grad_samples, 72);
    assert_eq!(out.report.cost.updates, 10);
}

/// Retraining is `ResNet::new` from the run's init stream plus `train` on the
/// retain list with the base config and seed — and reads no forget image:
/// scrambling the forget set's labels and images changes no bit.
#[test]
fn retrain_trains_on_the_retain_set_only() {
    let f = fixture();
    let out = run(Method::Retrain(RetrainConfig::default()));

    let manual = ResNet::new(
        f.model.config(),
        &mut rng::stream(SEED, rng::INIT),
        &Device::Cpu,
    )
    .unwrap();
    train(
        &manual,
        &f.trained_on,
        &f.modification.retain,
        &f.train_config,
        SEED,
        Progress::Silent,
    )
    .unwrap();
    assert_eq!(everything(&out.model), everything(&manual));

    // Poison the forget set: new labels and heavy noise on every forget image.
    let n = f.trained_on.len();
    let mut poisoned = f.modification.clone();
    let forget = &f.modification.forget;
    for (i, label) in &mut poisoned.labels {
        if forget.contains(i) {
            *label = (*label + 3) % 10;
        }
    }
    let mut r = rng::stream(SEED, "test/poison");
    poisoned.noise = f
        .modification
        .forget
        .iter()
        .map(|&i| (i, (0..3072).map(|_| r.random_range(-3.0..3.0f32)).collect()))
        .collect();
    let poisoned_data = Dataset::modified(
        f.trained_on.images().clone(),
        &poisoned,
        Normalization::CIFAR10,
    );
    assert_eq!(poisoned_data.len(), n);
    let mut c = ctx(f);
    c.trained_on = &poisoned_data;
    c.forget_data = &poisoned_data;
    let poisoned_out = unlearn(&Method::Retrain(RetrainConfig::default()), &c).unwrap();
    assert_eq!(everything(&poisoned_out.model), everything(&out.model));
    // The base model, trained on all 48, differs from the retrained one.
    assert_ne!(everything(&out.model), everything(&f.model));
    let Diagnostics::Retrain(d) = &out.report.diagnostics else {
        panic!()
    };
    assert_eq!(
        (d.images, d.train_seed, d.train.epochs.len()),
        (36, SEED, 2)
    );
}

fn small_second_order(solver: Solver) -> SecondOrderConfig {
    SecondOrderConfig {
        damping: 0.5,
        solver,
        max_iters: 4,
        lissa_scale: 200.0,
        hessian_samples: 12,
        batch_size: 12,
        ..Default::default()
    }
}

/// Gauss–Newton (the default curvature) with CG.
#[test]
fn second_order_on_the_tiny_resnet_reports_a_residual_below_one() {
    let f = fixture();
    let out = run(Method::SecondOrder(small_second_order(Solver::Cg)));
    let Diagnostics::SecondOrder(d) = &out.report.diagnostics else {
        panic!()
    };
    let s = &d.solve;
    assert_eq!(d.curvature, Curvature::GaussNewton);
    eprintln!("second-order (Gauss–Newton, CG): {s:?}");
    assert!(s.residual.is_finite() && s.residual < 1.0, "{s:?}");
    assert!(s.iterations >= 1, "{s:?}");
    // Exact products: the recurrence's residual is the explicit one.
    let last = *s.residual_history.last().unwrap();
    assert!(
        (last - s.residual).abs() < 1e-3 * s.residual.max(1e-3),
        "{s:?}"
    );
    assert_eq!(out.report.cost.hvps, s.hvps);
    assert_eq!(out.report.cost.grad_samples, 12 + s.hvps * 12);
    assert_eq!(out.report.cost.forward_samples, 12 + s.hvps * 12);
    assert_eq!(d.hessian_samples, 12);
    assert!((d.tau - 1.0 / 36.0).abs() < 1e-15);
    assert!(d.g_dot_x > 0.0, "{d:?}");
    // θ moved by τx; BatchNorm was frozen throughout.
    assert_ne!(trainable(&out.model), trainable(&f.model));
    assert_eq!(buffers(&out.model), buffers(&f.model));
    let want = d.tau * d.step_norm;
    assert!((out.report.update_norm - want).abs() < 1e-3 * want);
    let json = serde_json::to_string(&out.report).unwrap();
    assert!(json.contains(r#""method":"second_order""#), "{json}");
    assert!(json.contains(r#""residual""#), "{json}");
}

/// The finite-difference Hessian with LiSSA: runs, reports, moves θ (its
/// residual is not asserted — see `hvp.rs` on kinks).
#[test]
fn second_order_with_the_hessian_and_lissa_runs_on_the_tiny_resnet() {
    let f = fixture();
    let out = run(Method::SecondOrder(SecondOrderConfig {
        curvature: Curvature::Hessian,
        max_iters: 2,
        ..small_second_order(Solver::Lissa)
    }));
    let Diagnostics::SecondOrder(d) = &out.report.diagnostics else {
        panic!()
    };
    assert_eq!(
        (d.curvature, d.solve.solver),
        (Curvature::Hessian, Solver::Lissa)
    );
    assert_eq!((d.solve.iterations, d.solve.hvps), (2, 2));
    assert!(d.solve.residual.is_finite(), "{:?}", d.solve);
    eprintln!("second-order (Hessian, LiSSA): {:?}", d.solve);
    assert_eq!(out.report.cost.grad_samples, 12 + 2 * 2 * 12);
    assert_eq!(out.report.cost.forward_samples, 0);
    assert_ne!(trainable(&out.model), trainable(&f.model));
}

fn random_direction(like: &Gradients, seed: u64) -> Gradients {
    let mut r = rng::stream(seed, "test/direction");
    Gradients::from_tensors(
        like.tensors()
            .iter()
            .map(|t| {
                let v: Vec<f32> = (0..t.elem_count())
                    .map(|_| r.random_range(-1.0..1.0))
                    .collect();
                Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap()
            })
            .collect(),
    )
}

/// Zero everywhere except the `fc` weight and bias (the last two tensors),
/// along which the logits are linear and the loss smooth.
fn fc_only(v: &Gradients) -> Gradients {
    let n = v.tensors().len();
    Gradients::from_tensors(
        v.tensors()
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if i + 2 >= n {
                    t.clone()
                } else {
                    t.zeros_like().unwrap()
                }
            })
            .collect(),
    )
}

fn host(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let n: f64 = b.iter().map(|y| y * y).sum();
    (d / n).sqrt()
}

/// The forward-mode `J·v` is the derivative autograd differentiates:
/// `uᵀ(Jv) = (Jᵀu)ᵀv` with `Jᵀu` from candle's backward pass, and along the
/// `fc` directions (where the logits are linear) it equals a central
/// difference. The Gauss–Newton product is then symmetric and PSD.
#[test]
fn resnet_forward_mode_matches_autograd_and_gauss_newton_is_symmetric_psd() {
    let f = fixture();
    let model = f.model.try_clone().unwrap();
    let before = everything(&model);
    let sample = hessian_sample(&f.modification.retain, 8, SEED);
    let mut obj = ResNetObjective::new(&model, &f.trained_on, sample, 8).unwrap();
    let theta = Objective::params(&obj).unwrap();
    let v = random_direction(&theta, 1);
    let u_host: Vec<f32> = {
        let mut r = rng::stream(SEED, "test/u");
        (0..80).map(|_| r.random_range(-1.0..1.0)).collect()
    };
    let u = Tensor::from_vec(u_host, (8, 10), &Device::Cpu).unwrap();
    let jv = obj.jvp(&v).unwrap();
    let jtu = obj.vjp(&u).unwrap();
    let lhs = (&u * &jv)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    let rhs = jtu.dot(&v).unwrap();
    eprintln!("adjoint: uᵀJv {lhs} vs (Jᵀu)ᵀv {rhs}");
    assert!(
        (lhs - rhs).abs() < 1e-5 * rhs.abs(),
        "uᵀJv {lhs} vs (Jᵀu)ᵀv {rhs}"
    );

    let vfc = fc_only(&v);
    let h = 1e-2;
    obj.set_params(&theta.add(&vfc.scale(h).unwrap()).unwrap())
        .unwrap();
    let plus = obj.logits().unwrap();
    obj.set_params(&theta.add(&vfc.scale(-h).unwrap()).unwrap())
        .unwrap();
    let minus = obj.logits().unwrap();
    obj.set_params(&theta).unwrap();
    let fd = ((plus - minus).unwrap() * (0.5 / h)).unwrap();
    let e = rel_diff(&host(&obj.jvp(&vfc).unwrap()), &host(&fd));
    eprintln!("fc-direction J·v vs central difference: {e:e}");
    assert!(e < 1e-4, "fc-direction J·v vs central difference: {e}");

    let mut ggn = GaussNewtonHvp::new(obj).unwrap();
    let w = random_direction(&theta, 2);
    let gv = ggn.apply(&v).unwrap();
    let gw = ggn.apply(&w).unwrap();
    let (wgv, vgw) = (w.dot(&gv).unwrap(), v.dot(&gw).unwrap());
    eprintln!("symmetry: wᵀGv {wgv} vs vᵀGw {vgw}");
    assert!(
        (wgv - vgw).abs() < 1e-4 * (w.norm().unwrap() * gv.norm().unwrap()),
        "{wgv} vs {vgw}"
    );
    assert!(v.dot(&gv).unwrap() > 0.0 && w.dot(&gw).unwrap() > 0.0);
    drop(ggn);
    assert_eq!(everything(&model), before);
}

/// Finite differences of gradients converge along the smooth `fc`
/// directions, and θ comes back bit for bit after every product.
#[test]
fn resnet_finite_difference_hessian_converges_where_smooth_and_restores_theta() {
    let f = fixture();
    let model = f.model.try_clone().unwrap();
    let before = everything(&model);
    let sample = hessian_sample(&f.modification.retain, 8, SEED);
    let theta = model.trainable_values().unwrap();
    let v = fc_only(&random_direction(&theta, 3));
    let mut products = Vec::new();
    for eps in [1e-2, 1e-4] {
        let obj = ResNetObjective::new(&model, &f.trained_on, sample.clone(), 8).unwrap();
        let mut hvp = FiniteDiffHvp::new(obj, eps).unwrap();
        products.push(hvp.apply(&v).unwrap());
        assert_eq!(hvp.grad_samples(), 2 * 8);
        drop(hvp);
        assert_eq!(everything(&model), before, "fd_eps {eps}");
    }
    let flat = |g: &Gradients| g.tensors().iter().flat_map(host).collect::<Vec<_>>();
    let e = rel_diff(&flat(&products[0]), &flat(&products[1]));
    eprintln!("fc-direction Hessian, fd_eps 1e-2 vs 1e-4: {e:e}");
    assert!(e < 2e-3, "fd_eps 1e-2 vs 1e-4: {e}");
}

#[test]
fn hessian_samples_are_seeded_sorted_subsets_of_retain() {
    let retain: Vec<usize> = (100..200).collect();
    let a = hessian_sample(&retain, 10, 1);
    assert_eq!(a, hessian_sample(&retain, 10, 1));
    assert_ne!(a, hessian_sample(&retain, 10, 2));
    assert!(a.windows(2).all(|w| w[0] < w[1]));
    assert!(a.iter().all(|i| retain.contains(i)));
    assert_eq!(hessian_sample(&retain, 500, 1), retain);
}

/// No method modifies the model it is given, and the model it returns
/// shares no storage with it.
#[test]
fn no_method_modifies_the_input_model() {
    let f = fixture();
    let before = everything(&f.model);
    let methods = [
        Method::FirstOrder(FirstOrderConfig {
            batch_size: 8,
            tau: 1e-3,
            ..Default::default()
        }),
        Method::SecondOrder(SecondOrderConfig {
            max_iters: 1,
            ..small_second_order(Solver::Cg)
        }),
        Method::GradientAscent(GradientAscentConfig {
            steps: 2,
            batch_size: 6,
            ..Default::default()
        }),
        Method::FineTune(FineTuneConfig {
            batch_size: 12,
            ..Default::default()
        }),
    ];
    for method in methods {
        let out = run(method.clone());
        assert_eq!(everything(&f.model), before, "{}", method.short_name());
        assert_ne!(everything(&out.model), before, "{}", method.short_name());
        assert_eq!(out.report.method(), method.short_name());
        assert!(out.report.cost.seconds > 0.0);
        // Writing into the returned model leaves the input alone.
        let g = out.model.trainable_values().unwrap();
        out.model.add_scaled(&g, 1.0).unwrap();
        assert_eq!(everything(&f.model), before, "{}", method.short_name());
        let json = serde_json::to_value(&out.report).unwrap();
        assert_eq!(json["diagnostics"]["method"], method.short_name());
    }
}

#[test]
fn bad_contexts_are_rejected_naming_the_field() {
    let f = fixture();
    let forget = f.modification.forget.clone();
    let retain = f.modification.retain.clone();
    let overlap: Vec<usize> = retain.iter().copied().chain([forget[0]]).collect();
    let repeated: Vec<usize> = forget.iter().copied().chain([forget[0]]).collect();
    let out_of_range = vec![48usize];
    let small = Dataset::clean(
        Arc::new(f.trained_on.images().subset(&[0, 1])),
        Normalization::CIFAR10,
    );
    let fo = Method::FirstOrder(FirstOrderConfig::default());
    let field = |method: &Method, c: UnlearnContext<'_>| match unlearn(method, &c) {
        Err(UnlearnError::Context { field, .. }) => field,
        other => panic!(
            "expected a context error, got {:?}",
            other.map(|o| o.report)
        ),
    };
    let base = ctx(f);
    assert_eq!(
        field(
            &fo,
            UnlearnContext {
                retain: &overlap,
                ..base
            }
        ),
        "retain"
    );
    assert_eq!(
        field(
            &fo,
            UnlearnContext {
                forget: &repeated,
                ..base
            }
        ),
        "forget"
    );
    assert_eq!(
        field(
            &fo,
            UnlearnContext {
                forget: &out_of_range,
                ..base
            }
        ),
        "forget"
    );
    assert_eq!(
        field(
            &fo,
            UnlearnContext {
                forget: &[],
                ..base
            }
        ),
        "forget"
    );
    assert_eq!(
        field(
            &fo,
            UnlearnContext {
                forget_data: &small,
                ..base
            }
        ),
        "forget_data"
    );
    for m in ["second_order", "fine_tune", "retrain"] {
        let m = Method::from_short_name(m).unwrap();
        assert_eq!(
            field(
                &m,
                UnlearnContext {
                    retain: &[],
                    ..base
                }
            ),
            "retain"
        );
    }
    // A bad setting is reported before any work.
    let bad = Method::FirstOrder(FirstOrderConfig {
        tau: 0.0,
        ..Default::default()
    });
    assert!(matches!(
        unlearn(&bad, &ctx(f)),
        Err(UnlearnError::Config { field: "tau", .. })
    ));
}
