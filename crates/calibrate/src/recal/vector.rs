//! `vs`: vector scaling (Guo et al. 2017).

use serde::{Deserialize, Serialize};

use super::multinomial::{NewtonConfig, NewtonFit, Objective, newton};
use super::{Calibrated, Calibrator, Method, Recalibrator, check_apply, check_fit};
use crate::error::Result;
use crate::logits::{Logits, softmax_into};

/// Vector scaling: `softmax(w ⊙ z + b)`, one scale and one offset per
/// class, fitted by minimising the calibration split's mean NLL (no
/// regularisation) with Newton's method.
///
/// As dirichletcal's `VectorScaling(logit_input=True)` (its default
/// `reg_lambda_list=[0.0]`, i.e. unregularised). Softmax ignores a common
/// shift of `b`, so muq fixes the last class's offset at 0 (dirichletcal
/// subtracts its last row, the same model); the fit is then unique.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VectorScaling {
    /// The Newton solver's settings.
    pub newton: NewtonConfig,
}

/// Fitted vector scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedVectorScaling {
    /// Per-class scales `w`.
    pub scales: Vec<f64>,
    /// Per-class offsets `b` (the last one 0).
    pub offsets: Vec<f64>,
    /// How the fit went.
    pub fit: NewtonFit,
}

/// Mean NLL of `softmax(w ⊙ z + b)`; parameters `(w_0..w_{k−1}, b_0..b_{k−2})`.
struct Diagonal<'a> {
    z: &'a [f64],
    labels: &'a [usize],
    k: usize,
}

impl Diagonal<'_> {
    fn scores(&self, theta: &[f64], i: usize, s: &mut [f64]) {
        let k = self.k;
        for (j, sj) in s.iter_mut().enumerate() {
            let b = if j + 1 < k { theta[k + j] } else { 0.0 };
            *sj = theta[j] * self.z[i * k + j] + b;
        }
    }
}

impl Objective for Diagonal<'_> {
    fn dim(&self) -> usize {
        2 * self.k - 1
    }

    fn nll(&self, theta: &[f64]) -> f64 {
        let mut s = vec![0.0; self.k];
        let mut p = vec![0.0; self.k];
        let total: f64 = (0..self.labels.len())
            .map(|i| {
                self.scores(theta, i, &mut s);
                softmax_into(&s, 1.0, &mut p) - s[self.labels[i]]
            })
            .sum();
        total / self.labels.len() as f64
    }

    fn penalty(&self, _: &[f64], _: Option<&mut [f64]>, _: Option<&mut [f64]>) -> f64 {
        0.0
    }

    fn nll_derivatives(&self, theta: &[f64], grad: &mut [f64], hess: Option<&mut [f64]>) -> f64 {
        let k = self.k;
        let n = self.labels.len();
        grad.fill(0.0);
        let mut s = vec![0.0; k];
        let mut p = vec![0.0; k];
        let mut total = 0.0;
        // With C_i = diag(p_i) − p_i p_iᵀ, the k × k sums Σ_i C_i[j,l] z_ij z_il,
        // Σ_i C_i[j,l] z_il and Σ_i C_i[j,l].
        let want_hess = hess.is_some();
        let size = if want_hess { k * k } else { 0 };
        let (mut zz, mut z1, mut one) = (vec![0.0; size], vec![0.0; size], vec![0.0; size]);
        for (i, &y) in self.labels.iter().enumerate() {
            let z = &self.z[i * k..(i + 1) * k];
            self.scores(theta, i, &mut s);
            total += softmax_into(&s, 1.0, &mut p) - s[y];
            for j in 0..k {
                let r = p[j] - if j == y { 1.0 } else { 0.0 };
                grad[j] += r * z[j];
                if j + 1 < k {
                    grad[k + j] += r;
                }
            }
            if want_hess {
                for j in 0..k {
                    let (pj, zj) = (p[j], z[j]);
                    let row = j * k..(j + 1) * k;
                    let (zz, z1, one) = (&mut zz[row.clone()], &mut z1[row.clone()], &mut one[row]);
                    for l in 0..k {
                        let c = if j == l { pj - pj * pj } else { -pj * p[l] };
                        let cz = c * z[l];
                        one[l] += c;
                        z1[l] += cz;
                        zz[l] += cz * zj;
                    }
                }
            }
        }
        let inv_n = 1.0 / n as f64;
        for g in grad.iter_mut() {
            *g *= inv_n;
        }
        if let Some(h) = hess {
            // Parameters: w_j at j, b_j (j < k − 1) at k + j. With z1[j, l] =
            // Σ C[j,l] z_l, ∂²/∂w_l∂b_j = z1[j, l].
            let d = self.dim();
            h.fill(0.0);
            for j in 0..k {
                for l in 0..k {
                    h[j * d + l] = zz[j * k + l] * inv_n;
                    if j + 1 < k {
                        let v = z1[j * k + l] * inv_n;
                        h[(k + j) * d + l] = v;
                        h[l * d + k + j] = v;
                        if l + 1 < k {
                            h[(k + j) * d + k + l] = one[j * k + l] * inv_n;
                        }
                    }
                }
            }
        }
        total * inv_n
    }
}

impl Recalibrator for VectorScaling {
    type Fitted = FittedVectorScaling;

    fn fit(&self, logits: &Logits<'_>, labels: &[usize]) -> Result<FittedVectorScaling> {
        check_fit(logits, labels)?;
        self.newton.check()?;
        let k = logits.num_classes();
        let z = logits.to_f64_vec();
        let obj = Diagonal { z: &z, labels, k };
        let mut start = vec![0.0; 2 * k - 1];
        start[..k].fill(1.0);
        let (theta, fit) = newton(&obj, start, &self.newton);
        let mut offsets = theta[k..].to_vec();
        offsets.push(0.0);
        Ok(FittedVectorScaling {
            scales: theta[..k].to_vec(),
            offsets,
            fit,
        })
    }
}

impl Calibrator for FittedVectorScaling {
    fn method(&self) -> Method {
        Method::Vs
    }

    fn num_classes(&self) -> usize {
        self.scales.len()
    }

    fn apply(&self, logits: &Logits<'_>) -> Result<Calibrated> {
        let k = self.scales.len();
        check_apply(logits, k)?;
        let z = logits.to_f64_vec();
        let mut probs = vec![0.0; z.len()];
        let mut s = vec![0.0; k];
        for (row, out) in z.chunks_exact(k).zip(probs.chunks_exact_mut(k)) {
            for j in 0..k {
                s[j] = self.scales[j] * row[j] + self.offsets[j];
            }
            softmax_into(&s, 1.0, out);
        }
        Ok(Calibrated::from_probs(probs, k))
    }
}
