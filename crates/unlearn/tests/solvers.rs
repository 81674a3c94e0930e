//! The Hessian-vector machinery on problems whose Hessian is known exactly:
//! an explicit SPD quadratic and a linear softmax classifier (multinomial
//! logistic regression), whose mean cross-entropy Hessian has the closed form
//! `H = (1/N) Σ_i (diag(p_i) − p_i p_iᵀ) ⊗ x̃_i x̃_iᵀ`, `x̃ = (x, 1)` — and,
//! the logits being linear in θ, equals its Gauss–Newton matrix.
//!
//! Expected values come from plain-Rust f64 linear algebra in this file
//! (dense products and Gaussian elimination), never from the code under test.

use candle_core::{DType, Device, Tensor, Var};
use muq_resnet::{Gradients, Progress, cross_entropy_sum};
use muq_unlearn::{
    FiniteDiffHvp, GaussNewtonHvp, Hvp, LogitModel, Objective, Result, SolveOptions, StopReason,
    UnlearnError, conjugate_gradient, lissa,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------- helpers

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn uniform(r: &mut ChaCha8Rng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| r.random_range(-scale..scale)).collect()
}

/// Flattens a parameter-shaped vector to f64 on the host.
fn flat(g: &Gradients) -> Vec<f64> {
    g.tensors()
        .iter()
        .flat_map(|t| {
            t.to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        })
        .collect()
}

/// Splits `v` into tensors shaped like `like`, with `like`'s dtype.
fn unflat(v: &[f64], like: &Gradients) -> Gradients {
    let mut at = 0;
    let ts = like
        .tensors()
        .iter()
        .map(|t| {
            let n = t.elem_count();
            let out = Tensor::from_slice(&v[at..at + n], t.dims(), &Device::Cpu)
                .unwrap()
                .to_dtype(t.dtype())
                .unwrap();
            at += n;
            out
        })
        .collect();
    Gradients::from_tensors(ts)
}

fn matvec(a: &[f64], v: &[f64]) -> Vec<f64> {
    let n = v.len();
    (0..n)
        .map(|i| (0..n).map(|j| a[i * n + j] * v[j]).sum())
        .collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    let d: Vec<f64> = got.iter().zip(want).map(|(a, b)| a - b).collect();
    norm(&d) / norm(want)
}

/// Solves `(A + λI)x = b` by Gaussian elimination with partial pivoting.
fn direct_solve(a: &[f64], lambda: f64, b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut m: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            let mut row: Vec<f64> = a[i * n..(i + 1) * n].to_vec();
            row[i] += lambda;
            row.push(b[i]);
            row
        })
        .collect();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))
            .unwrap();
        m.swap(col, piv);
        let pivot = m[col].clone();
        for row in &mut m[col + 1..] {
            let f = row[col] / pivot[col];
            for (a, b) in row[col..].iter_mut().zip(&pivot[col..]) {
                *a -= f * b;
            }
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|c| m[r][c] * x[c]).sum();
        x[r] = (m[r][n] - s) / m[r][r];
    }
    x
}

fn opts(damping: f64, max_iters: usize, tol: f64) -> SolveOptions {
    SolveOptions {
        damping,
        max_iters,
        tol,
        progress: Progress::Silent,
    }
}

// ------------------------------------------------------ explicit quadratic

/// `v ↦ A·v` for an explicit symmetric matrix.
struct Dense {
    a: Vec<f64>,
    calls: usize,
}

impl Hvp for Dense {
    fn apply(&mut self, v: &Gradients) -> Result<Gradients> {
        self.calls += 1;
        Ok(unflat(&matvec(&self.a, &flat(v)), v))
    }
}

/// A seeded SPD matrix `M·Mᵀ/n + 0.05·I` (n = 7) and a right-hand side
/// split over two tensors (3×2 and 1), in f64.
fn quadratic() -> (Dense, Gradients) {
    let n = 7;
    let mut r = rng(11);
    let m = uniform(&mut r, n * n, 1.0);
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] = (0..n).map(|k| m[i * n + k] * m[j * n + k]).sum::<f64>() / n as f64;
        }
        a[i * n + i] += 0.05;
    }
    let b = uniform(&mut r, n, 1.0);
    let like = Gradients::from_tensors(vec![
        Tensor::zeros((3, 2), DType::F64, &Device::Cpu).unwrap(),
        Tensor::zeros(1, DType::F64, &Device::Cpu).unwrap(),
    ]);
    (Dense { a, calls: 0 }, unflat(&b, &like))
}

#[test]
fn cg_solves_an_spd_quadratic_to_the_stated_residual() -> Result<()> {
    let (mut h, g) = quadratic();
    let lambda = 0.1;
    let sol = conjugate_gradient(&mut h, &g, &opts(lambda, 50, 1e-10))?;
    let want = direct_solve(&h.a, lambda, &flat(&g));
    let rep = &sol.report;
    assert_eq!(rep.stop, StopReason::Converged, "{rep:?}");
    assert!(rep.residual <= 1e-9, "{rep:?}");
    // Exact arithmetic needs at most n = 7 iterations; allow rounding slack.
    assert!(rep.iterations <= 9, "{rep:?}");
    assert_eq!(rep.hvps, h.calls);
    assert_eq!(
        rep.hvps,
        rep.iterations + 1,
        "one product per iteration + the check"
    );
    assert!(rel_err(&flat(&sol.x), &want) < 1e-8);
    // The reported residual is the true one.
    let ax = matvec(&h.a, &flat(&sol.x));
    let r: Vec<f64> = ax
        .iter()
        .zip(flat(&sol.x))
        .zip(flat(&g))
        .map(|((ax, x), g)| ax + lambda * x - g)
        .collect();
    assert!((norm(&r) / norm(&flat(&g)) - rep.residual).abs() < 1e-12);
    Ok(())
}

#[test]
fn cg_with_few_iterations_reports_the_true_residual() -> Result<()> {
    let (mut h, g) = quadratic();
    let sol = conjugate_gradient(&mut h, &g, &opts(0.0, 2, 1e-12))?;
    assert_eq!(sol.report.stop, StopReason::MaxIters);
    assert_eq!(sol.report.iterations, 2);
    let ax = matvec(&h.a, &flat(&sol.x));
    let want = rel_err(&ax, &flat(&g));
    assert!((sol.report.residual - want).abs() < 1e-12);
    assert!(sol.report.residual < 1.0 && sol.report.residual > 1e-6);
    assert_eq!(sol.report.residual_history.len(), 3);
    Ok(())
}

#[test]
fn cg_stops_on_negative_curvature() -> Result<()> {
    // diag(2, −1) with g = (1, 2): gᵀAg = 2 − 4 < 0 on the first direction.
    let mut h = Dense {
        a: vec![2.0, 0.0, 0.0, -1.0],
        calls: 0,
    };
    let g = Gradients::from_tensors(vec![Tensor::new(&[1.0f64, 2.0], &Device::Cpu)?]);
    let sol = conjugate_gradient(&mut h, &g, &opts(0.0, 10, 1e-8))?;
    assert_eq!(sol.report.stop, StopReason::NegativeCurvature);
    assert_eq!(sol.report.iterations, 0);
    assert_eq!(sol.report.residual, 1.0);
    assert_eq!(flat(&sol.x), vec![0.0, 0.0]);
    // Enough damping makes it positive definite and solvable.
    let sol = conjugate_gradient(&mut h, &g, &opts(1.5, 10, 1e-10))?;
    assert_eq!(sol.report.stop, StopReason::Converged);
    let want = [1.0 / 3.5, 2.0 / 0.5];
    assert!(rel_err(&flat(&sol.x), &want) < 1e-10);
    Ok(())
}

#[test]
fn a_zero_right_hand_side_costs_nothing() -> Result<()> {
    let (mut h, g) = quadratic();
    let zero = g.scale(0.0)?;
    for sol in [
        conjugate_gradient(&mut h, &zero, &opts(0.1, 5, 1e-6))?,
        lissa(&mut h, &zero, 10.0, &opts(0.1, 5, 1e-6))?,
    ] {
        assert_eq!(sol.report.residual, 0.0);
        assert_eq!(sol.report.hvps, 0);
        assert!(flat(&sol.x).iter().all(|&v| v == 0.0));
    }
    assert_eq!(h.calls, 0);
    Ok(())
}

/// Gershgorin bound on the largest eigenvalue.
fn gershgorin(a: &[f64], n: usize) -> f64 {
    (0..n)
        .map(|i| (0..n).map(|j| a[i * n + j].abs()).sum::<f64>())
        .fold(0.0, f64::max)
}

#[test]
fn lissa_converges_to_the_direct_solution_when_scaled_above_the_spectrum() -> Result<()> {
    let (mut h, g) = quadratic();
    let lambda = 0.2;
    let scale = gershgorin(&h.a, 7) + lambda;
    let sol = lissa(&mut h, &g, scale, &opts(lambda, 5000, 1e-9))?;
    let rep = &sol.report;
    assert_eq!(rep.stop, StopReason::Converged, "{:?}", rep.residual);
    assert!(rep.residual <= 1e-9);
    assert_eq!(rep.hvps, h.calls);
    assert_eq!(
        rep.hvps, rep.iterations,
        "the first iterate's residual is free"
    );
    let want = direct_solve(&h.a, lambda, &flat(&g));
    assert!(rel_err(&flat(&sol.x), &want) < 1e-7);
    // Residuals of Richardson iteration with s > λ_max never grow.
    assert!(
        rep.residual_history
            .windows(2)
            .all(|w| w[1] <= w[0] * (1.0 + 1e-12))
    );
    Ok(())
}

#[test]
fn lissa_reports_divergence_when_the_scale_is_too_small() {
    let (mut h, g) = quadratic();
    let err = lissa(&mut h, &g, 0.05, &opts(0.0, 500, 1e-9)).unwrap_err();
    match err {
        UnlearnError::Diverged { what, .. } => assert_eq!(what, "lissa"),
        other => panic!("expected divergence, got {other}"),
    }
}

// ------------------------------------------------- linear softmax model

const N: usize = 24;
const D: usize = 5;
const K: usize = 3;

/// Mean cross-entropy of `softmax(X·Wᵀ + b)` over fixed samples, as an
/// [`Objective`] with parameters `[W (K×D), b (K)]`.
struct Softmax {
    w: Var,
    b: Var,
    x: Tensor,
    y: Tensor,
    xs: Vec<f64>,
    ys: Vec<usize>,
}

impl Softmax {
    fn new(dtype: DType, seed: u64) -> Self {
        let dev = Device::Cpu;
        let mut r = rng(seed);
        let xs = uniform(&mut r, N * D, 2.0);
        let ys: Vec<usize> = (0..N).map(|i| (i * 7 + i / 5) % K).collect();
        let w = uniform(&mut r, K * D, 0.5);
        let b = uniform(&mut r, K, 0.5);
        let t = |v: &[f64], shape: &[usize]| {
            Tensor::from_slice(v, shape, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        };
        Self {
            w: Var::from_tensor(&t(&w, &[K, D])).unwrap(),
            b: Var::from_tensor(&t(&b, &[K])).unwrap(),
            x: t(&xs, &[N, D]),
            y: Tensor::from_vec(ys.iter().map(|&c| c as u32).collect(), N, &dev).unwrap(),
            xs,
            ys,
        }
    }

    /// The exact Hessian of the mean cross-entropy at the current θ, f64,
    /// indices `k·D + d` for `W[k][d]` and `K·D + k` for `b[k]`.
    fn exact_hessian(&self) -> Vec<f64> {
        let w = self.w.as_tensor().to_dtype(DType::F64).unwrap();
        let w = w.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let b = self.b.as_tensor().to_dtype(DType::F64).unwrap();
        let b = b.to_vec1::<f64>().unwrap();
        let p_dim = K * D + K;
        let idx = |k: usize, d: usize| if d < D { k * D + d } else { K * D + k };
        let mut h = vec![0.0; p_dim * p_dim];
        for i in 0..N {
            let xt: Vec<f64> = self.xs[i * D..(i + 1) * D]
                .iter()
                .copied()
                .chain([1.0])
                .collect();
            let z: Vec<f64> = (0..K)
                .map(|k| (0..D).map(|d| w[k * D + d] * xt[d]).sum::<f64>() + b[k])
                .collect();
            let zmax = z.iter().copied().fold(f64::MIN, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - zmax).exp()).collect();
            let s: f64 = e.iter().sum();
            let p: Vec<f64> = e.iter().map(|v| v / s).collect();
            for k in 0..K {
                for k2 in 0..K {
                    let a = if k == k2 { p[k] } else { 0.0 } - p[k] * p[k2];
                    for d in 0..=D {
                        for d2 in 0..=D {
                            h[idx(k, d) * p_dim + idx(k2, d2)] += a * xt[d] * xt[d2] / N as f64;
                        }
                    }
                }
            }
        }
        h
    }

    /// The summed cross-entropy gradient over the first `m` samples (a
    /// stand-in "forget" gradient).
    fn partial_gradient(&self, m: usize) -> Gradients {
        let x = self.x.narrow(0, 0, m).unwrap();
        let y = self.y.narrow(0, 0, m).unwrap();
        let logits = x
            .matmul(&self.w.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(self.b.as_tensor())
            .unwrap();
        let store = cross_entropy_sum(&logits, &y).unwrap().backward().unwrap();
        Gradients::from_tensors(vec![
            store.get(self.w.as_tensor()).unwrap().clone(),
            store.get(self.b.as_tensor()).unwrap().clone(),
        ])
    }
}

impl Objective for Softmax {
    fn params(&self) -> Result<Gradients> {
        Ok(Gradients::from_tensors(vec![
            self.w.as_tensor().copy()?,
            self.b.as_tensor().copy()?,
        ]))
    }

    fn set_params(&mut self, theta: &Gradients) -> Result<()> {
        self.w.set(&theta.tensors()[0])?;
        self.b.set(&theta.tensors()[1])?;
        Ok(())
    }

    fn gradient(&mut self) -> Result<Gradients> {
        let logits = self
            .x
            .matmul(&self.w.as_tensor().t()?)?
            .broadcast_add(self.b.as_tensor())?;
        let loss = (cross_entropy_sum(&logits, &self.y)? / N as f64)?;
        let store = loss.backward()?;
        Ok(Gradients::from_tensors(vec![
            store.get(self.w.as_tensor()).expect("dW").clone(),
            store.get(self.b.as_tensor()).expect("db").clone(),
        ]))
    }

    fn samples_per_gradient(&self) -> usize {
        N
    }
}

impl Softmax {
    fn forward(&self) -> Result<Tensor> {
        Ok(self
            .x
            .matmul(&self.w.as_tensor().t()?)?
            .broadcast_add(self.b.as_tensor())?)
    }
}

impl LogitModel for Softmax {
    fn logits(&mut self) -> Result<Tensor> {
        Ok(self.forward()?.detach())
    }

    /// Exact: `z = X·Wᵀ + b` is linear, so `J·(dW, db) = X·dWᵀ + db`.
    fn jvp(&mut self, v: &Gradients) -> Result<Tensor> {
        let [dw, db] = v.tensors() else {
            panic!("two tensors")
        };
        Ok(self.x.matmul(&dw.t()?)?.broadcast_add(db)?)
    }

    fn vjp(&mut self, u: &Tensor) -> Result<Gradients> {
        let inner = (self.forward()? * u)?.sum_all()?;
        let store = inner.backward()?;
        Ok(Gradients::from_tensors(vec![
            store.get(self.w.as_tensor()).expect("dW").clone(),
            store.get(self.b.as_tensor()).expect("db").clone(),
        ]))
    }

    fn num_samples(&self) -> usize {
        N
    }
}

#[test]
fn softmax_labels_cover_every_class() {
    let m = Softmax::new(DType::F64, 1);
    for k in 0..K {
        assert!(m.ys.contains(&k));
    }
}

/// Central differences have error O(ε²·‖∇³L‖) plus rounding O(u/ε). Measured
/// relative errors when written: ~1e-10 in f64 with fd_eps 1e-5, ~7e-5 in
/// f32 (what the ResNet uses) with the default fd_eps 1e-3; the bounds leave
/// 10–100× headroom.
#[test]
fn finite_difference_hvp_matches_the_exact_softmax_hessian() -> Result<()> {
    for (dtype, fd_eps, tol) in [(DType::F64, 1e-5, 1e-8), (DType::F32, 1e-3, 1e-3)] {
        let model = Softmax::new(dtype, 3);
        let h = model.exact_hessian();
        let before = flat(&model.params()?);
        let mut hvp = FiniteDiffHvp::new(model, fd_eps)?;
        let mut r = rng(5);
        for trial in 0..3 {
            let v = uniform(&mut r, K * D + K, 1.0);
            let got = flat(&hvp.apply(&unflat(&v, hvp.theta()))?);
            let want = matvec(&h, &v);
            let e = rel_err(&got, &want);
            assert!(e < tol, "{dtype:?} trial {trial}: relative error {e}");
        }
        assert_eq!(hvp.products(), 3);
        assert_eq!(hvp.gradient_evaluations(), 6);
        assert_eq!(hvp.grad_samples(), 6 * N);
        // θ is restored bit for bit after every product.
        let after = flat(&hvp.into_objective().params()?);
        assert_eq!(before, after, "{dtype:?}");
    }
    Ok(())
}

/// For a model linear in θ the Gauss–Newton matrix is the Hessian, and the
/// product has no finite-difference error: only rounding.
#[test]
fn gauss_newton_products_match_the_exact_softmax_hessian() -> Result<()> {
    for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
        let model = Softmax::new(dtype, 3);
        let h = model.exact_hessian();
        let like = model.params()?;
        let mut ggn = GaussNewtonHvp::new(model)?;
        let mut r = rng(6);
        for trial in 0..3 {
            let v = uniform(&mut r, K * D + K, 1.0);
            let got = flat(&ggn.apply(&unflat(&v, &like))?);
            let e = rel_err(&got, &matvec(&h, &v));
            assert!(e < tol, "{dtype:?} trial {trial}: relative error {e}");
        }
        assert_eq!(ggn.products(), 3);
        assert_eq!((ggn.grad_samples(), ggn.forward_samples()), (3 * N, 4 * N));
    }
    Ok(())
}

#[test]
fn cg_with_gauss_newton_products_solves_the_softmax_system() -> Result<()> {
    let model = Softmax::new(DType::F32, 9);
    let h = model.exact_hessian();
    let g = model.partial_gradient(4);
    let lambda = 0.01;
    let want = direct_solve(&h, lambda, &flat(&g));
    let mut ggn = GaussNewtonHvp::new(model)?;
    let sol = conjugate_gradient(&mut ggn, &g, &opts(lambda, 60, 1e-5))?;
    assert_eq!(sol.report.stop, StopReason::Converged, "{:?}", sol.report);
    assert!(sol.report.residual < 1e-4, "{:?}", sol.report);
    let e = rel_err(&flat(&sol.x), &want);
    assert!(e < 1e-3, "error against the direct solution {e}");
    Ok(())
}

#[test]
fn finite_difference_step_scales_with_theta_and_direction() -> Result<()> {
    let model = Softmax::new(DType::F64, 3);
    let theta_norm = norm(&flat(&model.params()?));
    let hvp = FiniteDiffHvp::new(model, 1e-3)?;
    let want = 1e-3 * (1.0 + theta_norm) / 4.0;
    assert!((hvp.step_for(4.0) - want).abs() < 1e-15);
    assert!(FiniteDiffHvp::new(Softmax::new(DType::F64, 3), 0.0).is_err());
    Ok(())
}

#[test]
fn cg_with_finite_differences_solves_the_softmax_system() -> Result<()> {
    for (dtype, tol, max_err) in [(DType::F64, 1e-10, 1e-6), (DType::F32, 1e-4, 2e-3)] {
        let model = Softmax::new(dtype, 9);
        let h = model.exact_hessian();
        let g = model.partial_gradient(4);
        let lambda = 0.01;
        let want = direct_solve(&h, lambda, &flat(&g));
        let mut hvp = FiniteDiffHvp::new(model, if dtype == DType::F64 { 1e-5 } else { 1e-3 })?;
        let sol = conjugate_gradient(&mut hvp, &g, &opts(lambda, 60, tol))?;
        let rep = &sol.report;
        assert_eq!(rep.stop, StopReason::Converged, "{dtype:?}: {rep:?}");
        assert!(rep.residual < 10.0 * tol, "{dtype:?}: {rep:?}");
        assert_eq!(rep.hvps, hvp.products());
        let e = rel_err(&flat(&sol.x), &want);
        assert!(
            e < max_err,
            "{dtype:?}: error against the direct solution {e}"
        );
    }
    Ok(())
}

#[test]
fn lissa_with_finite_differences_solves_the_softmax_system() -> Result<()> {
    let model = Softmax::new(DType::F64, 9);
    let h = model.exact_hessian();
    let g = model.partial_gradient(4);
    // A well-conditioned system: λ = 0.5, s above Gershgorin's bound.
    let lambda = 0.5;
    let scale = gershgorin(&h, K * D + K) + lambda;
    let want = direct_solve(&h, lambda, &flat(&g));
    let mut hvp = FiniteDiffHvp::new(model, 1e-5)?;
    let sol = lissa(&mut hvp, &g, scale, &opts(lambda, 3000, 1e-8))?;
    assert_eq!(sol.report.stop, StopReason::Converged);
    let e = rel_err(&flat(&sol.x), &want);
    assert!(e < 1e-6, "error against the direct solution {e}");
    Ok(())
}
