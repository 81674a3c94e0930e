//! How long one SVC MIA-efficacy fit + predict takes at a run's size:
//! 5,000 shadow members, 5,000 shadow non-members, 5,000 target rows,
//! k = 10, synthetic probabilities (members more confident).
//!
//! `cargo run --release -p muq-efficacy --example mia_timing [feature…]`
//! (default: confidence and prob).

use std::time::Instant;

use muq_efficacy::{MiaFeature, MiaSet, SvcParams, mia_efficacy_with};

/// xorshift64*: a dependency-free, deterministic uniform in [0, 1).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` softmax rows over `k` classes with the label's logit boosted by up to `boost`.
fn synthetic(rng: &mut Rng, n: usize, k: usize, boost: f64) -> (Vec<f64>, Vec<usize>) {
    let mut probs = Vec::with_capacity(n * k);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let y = (rng.uniform() * k as f64) as usize % k;
        let z: Vec<f64> = (0..k)
            .map(|j| 2.0 * rng.uniform() + if j == y { boost * rng.uniform() } else { 0.0 })
            .collect();
        probs.extend(muq_calibrate::softmax(&z));
        labels.push(y);
    }
    (probs, labels)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let features: Vec<MiaFeature> = match std::env::args().skip(1).collect::<Vec<_>>() {
        a if a.is_empty() => vec![MiaFeature::Confidence, MiaFeature::Prob],
        a => a.iter().map(|s| s.parse()).collect::<Result<_, _>>()?,
    };
    let (n, k) = (5_000, 10);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let members = synthetic(&mut rng, n, k, 12.0);
    let nonmembers = synthetic(&mut rng, n, k, 6.0);
    let target = synthetic(&mut rng, n, k, 9.0);
    for feature in features {
        let start = Instant::now();
        let out = mia_efficacy_with(
            feature,
            k,
            MiaSet::new(&members.0, &members.1),
            MiaSet::new(&nonmembers.0, &nonmembers.1),
            MiaSet::new(&target.0, &target.1),
            &SvcParams::default(),
        )?;
        println!(
            "{feature}: shadow n = {}, target n = {n}: efficacy {:.4}, {} support vectors, {:.2} s",
            2 * n,
            out.efficacy,
            out.n_support,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
