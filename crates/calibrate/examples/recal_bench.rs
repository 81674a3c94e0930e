//! Fit and apply time of every recalibrator on a 10,000-sample, 10-class
//! split, and the time of the new metrics on it.
//!
//! ```sh
//! cargo run --release -p muq-calibrate --example recal_bench
//! ```
//!
//! The logits are synthetic (seeded ChaCha8): an overconfident 10-class
//! classifier with class-dependent bias and scale, about 60 % accurate.
//! Each method is fitted with its defaults on one split and applied to a
//! second split of the same size; every time is the best of 5 runs.

use std::time::{Duration, Instant};

use muq_calibrate::{
    BrierBinning, L2CeConfig, Logits, Method, Predictions, RecalibrationConfig,
    brier_decomposition, fit_recalibrator, l2_calibration_error, smooth_ece,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const N: usize = 10_000;
const K: usize = 10;
const REPEATS: usize = 5;

fn split(rng: &mut ChaCha8Rng) -> (Vec<f32>, Vec<usize>) {
    let mut z = vec![0.0f32; N * K];
    let mut labels = vec![0usize; N];
    for (row, label) in z.chunks_exact_mut(K).zip(labels.iter_mut()) {
        *label = rng.random_range(0..K);
        // Box–Muller normals.
        for v in row.iter_mut() {
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
            *v = ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32;
        }
        let boosted = if rng.random::<f64>() < 0.3 {
            rng.random_range(0..K)
        } else {
            *label
        };
        row[boosted] += 2.0 + rng.random::<f32>() * 2.0;
        for (j, v) in row.iter_mut().enumerate() {
            let scale = 0.8 + 0.7 * j as f32 / (K - 1) as f32;
            let bias = -0.6 + 1.2 * j as f32 / (K - 1) as f32;
            *v = 2.0 * (*v * scale + bias);
        }
    }
    (z, labels)
}

fn best_of<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..REPEATS {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        out = Some(v);
    }
    (best, out.expect("REPEATS > 0"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<(), muq_calibrate::CalibError> {
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let (fit_z, fit_y) = split(&mut rng);
    let (eval_z, eval_y) = split(&mut rng);
    let fit = Logits::new(&fit_z, K)?;
    let eval = Logits::new(&eval_z, K)?;
    let config = RecalibrationConfig::default();
    let plain = Predictions::new(&eval, &eval_y)?;
    println!(
        "{N} x {K} logits (fit split), {N} x {K} (apply split); uncalibrated accuracy {:.3}; best of {REPEATS}",
        muq_calibrate::accuracy(&plain)
    );
    println!(
        "{:<10} {:>10} {:>10} {:>10}  notes",
        "method", "fit ms", "apply ms", "NLL after"
    );
    let (mut total_fit, mut total_apply) = (Duration::ZERO, Duration::ZERO);
    for method in Method::ALL {
        let (t_fit, fitted) = best_of(|| fit_recalibrator(method, &config, &fit, &fit_y));
        let fitted = fitted?;
        let (t_apply, out) = best_of(|| fitted.apply(&eval));
        let p = out?.predictions(&eval_y)?;
        total_fit += t_fit;
        total_apply += t_apply;
        println!(
            "{:<10} {:>10.2} {:>10.2} {:>10.4}  {:?}",
            method.name(),
            ms(t_fit),
            ms(t_apply),
            muq_calibrate::nll(&p),
            fitted.method()
        );
    }
    println!(
        "{:<10} {:>10.2} {:>10.2}",
        "all",
        ms(total_fit),
        ms(total_apply)
    );
    let (t, s) = best_of(|| smooth_ece(&plain));
    let s = s?;
    println!(
        "smooth ECE (relplot bandwidth search) {:.2} ms: {:.4} at sigma {}",
        ms(t),
        s.value,
        s.bandwidth
    );
    let (t, v) = best_of(|| l2_calibration_error(&plain, &L2CeConfig::default()));
    println!("debiased L2 CE (marginal) {:.2} ms: {:.4}", ms(t), v?);
    let (t, d) = best_of(|| brier_decomposition(&plain, BrierBinning::default()));
    let d = d?;
    println!(
        "Brier decomposition {:.2} ms: rel {:.4} res {:.4} unc {:.4} (brier {:.4})",
        ms(t),
        d.reliability,
        d.resolution,
        d.uncertainty,
        d.brier
    );
    Ok(())
}
