//! The SGD update fused into one pass over each parameter's host memory.
//!
//! [`crate::Sgd`] on candle's tensor ops makes five to seven passes and as
//! many temporary tensors per parameter and step (weight decay, the
//! momentum buffer, the step, the new value, the copy into the variable).
//! Here one loop reads the parameter, its gradient and its momentum buffer
//! and writes the parameter and the buffer in place. Each element goes
//! through the same f32 operations, in the same order, as candle's ops
//! compute them — `x * c` is candle's `affine(c, 0)`, i.e. `x·c + 0` — so
//! the two paths agree to the bit (a test checks it at every level).

use std::cell::RefCell;

use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor, Var, bail};
use rayon::prelude::*;

use super::simd::simd_fn;

/// The hyper-parameters of one update, as f32 (candle converts its f64
/// scalars the same way), and which terms the f64 settings switch on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SgdStep {
    /// Learning rate.
    pub lr: f32,
    /// Momentum μ.
    pub momentum: f32,
    /// L2 weight decay.
    pub weight_decay: f32,
    /// Whether there is a momentum buffer (μ ≠ 0 in f64).
    pub has_momentum: bool,
    /// Whether weight decay is added (≠ 0 in f64).
    pub has_decay: bool,
}

impl SgdStep {
    /// From the f64 settings, converted as candle's `Tensor * f64` does.
    pub fn new(lr: f64, momentum: f64, weight_decay: f64) -> Self {
        Self {
            lr: lr as f32,
            momentum: momentum as f32,
            weight_decay: weight_decay as f32,
            has_momentum: momentum != 0.0,
            has_decay: weight_decay != 0.0,
        }
    }
}

/// A parameter's momentum buffer during one update.
#[derive(Debug)]
pub(crate) enum Momentum<'a> {
    /// Momentum is off: the step is the (decayed) gradient.
    Off,
    /// The first step: the buffer is set to the gradient.
    First(&'a mut [f32]),
    /// A later step: `b ← μ·b + g`.
    Next(&'a mut [f32]),
}

/// Elements per parallel task (64 KiB of each array).
const CHUNK: usize = 1 << 14;

/// `g + (θ·wd + 0)` when `DECAY`, else `g`: candle's `g + θ * wd`.
#[inline(always)]
fn decayed<const DECAY: bool>(theta: f32, g: f32, wd: f32) -> f32 {
    if DECAY { g + (theta * wd + 0.0) } else { g }
}

/// One chunk of [`update`] with weight decay on or off.
#[inline(always)]
fn chunk<const DECAY: bool>(theta: &mut [f32], grad: &[f32], m: Momentum<'_>, h: SgdStep) {
    let (lr, mu, wd) = (h.lr, h.momentum, h.weight_decay);
    match m {
        Momentum::Off => {
            for (t, &g) in theta.iter_mut().zip(grad) {
                let g = decayed::<DECAY>(*t, g, wd);
                *t -= g * lr + 0.0;
            }
        }
        Momentum::First(buf) => {
            for ((t, b), &g) in theta.iter_mut().zip(buf.iter_mut()).zip(grad) {
                let g = decayed::<DECAY>(*t, g, wd);
                *b = g;
                *t -= g * lr + 0.0;
            }
        }
        Momentum::Next(buf) => {
            for ((t, b), &g) in theta.iter_mut().zip(buf.iter_mut()).zip(grad) {
                let g = decayed::<DECAY>(*t, g, wd);
                let v = (*b * mu + 0.0) + g;
                *b = v;
                *t -= v * lr + 0.0;
            }
        }
    }
}

simd_fn! {
    /// One chunk of the update: `g ← ∇ + wd·θ`, `b ← g` or `μ·b + g`,
    /// `θ ← θ − lr·b` (or `θ − lr·g` without momentum).
    fn update_chunk(theta: &mut [f32], grad: &[f32], m: Momentum<'_>, h: SgdStep) {
        if h.has_decay {
            chunk::<true>(theta, grad, m, h);
        } else {
            chunk::<false>(theta, grad, m, h);
        }
    }
}

/// The update over whole slices (equal lengths), in parallel chunks: each
/// element is independent, so the result does not depend on the split.
pub(crate) fn update(theta: &mut [f32], grad: &[f32], m: Momentum<'_>, h: SgdStep) {
    assert_eq!(theta.len(), grad.len(), "sgd: gradient length");
    let (buf, first) = match m {
        Momentum::Off => (None, false),
        Momentum::First(b) => (Some(b), true),
        Momentum::Next(b) => (Some(b), false),
    };
    let thetas = theta.par_chunks_mut(CHUNK).zip(grad.par_chunks(CHUNK));
    match buf {
        None => thetas.for_each(|(t, g)| update_chunk(t, g, Momentum::Off, h)),
        Some(buf) => {
            assert_eq!(buf.len(), grad.len(), "sgd: momentum buffer length");
            thetas
                .zip(buf.par_chunks_mut(CHUNK))
                .for_each(|((t, g), b)| {
                    let m = if first {
                        Momentum::First(b)
                    } else {
                        Momentum::Next(b)
                    };
                    update_chunk(t, g, m, h)
                });
        }
    }
}

/// The update as an in-place candle op on the parameter, the gradient the
/// other operand; the buffer is host memory the op borrows.
struct FusedSgd<'a> {
    step: SgdStep,
    momentum: RefCell<Option<Momentum<'a>>>,
}

impl InplaceOp2 for FusedSgd<'_> {
    fn name(&self) -> &'static str {
        "muq-fused-sgd"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(theta), CpuStorage::F32(grad)) = (s1, s2) else {
            bail!("muq-fused-sgd: parameter and gradient must be f32")
        };
        let (Some((t0, t1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            bail!("muq-fused-sgd: parameter and gradient must be contiguous")
        };
        if l1.shape() != l2.shape() {
            bail!(
                "muq-fused-sgd: gradient of shape {:?} for a parameter of shape {:?}",
                l2.shape(),
                l1.shape()
            )
        }
        let Some(m) = self.momentum.borrow_mut().take() else {
            bail!("muq-fused-sgd: applied twice")
        };
        update(&mut theta[t0..t1], &grad[g0..g1], m, self.step);
        Ok(())
    }
}

/// Applies one SGD step to `var` in place, reading `grad` (same shape) and
/// updating `buffer` (created on the first step when `step` has
/// momentum). Both tensors must be f32 on the CPU ([`super::runs_on`]).
pub(crate) fn sgd_step(
    var: &Var,
    grad: &Tensor,
    buffer: &mut Option<Vec<f32>>,
    step: SgdStep,
) -> candle_core::Result<()> {
    if grad.shape() != var.shape() {
        bail!(
            "muq-fused-sgd: gradient of shape {:?} for a parameter of shape {:?}",
            grad.shape(),
            var.shape()
        )
    }
    let momentum = if !step.has_momentum {
        Momentum::Off
    } else {
        match buffer {
            Some(b) => Momentum::Next(b.as_mut_slice()),
            None => Momentum::First(buffer.insert(vec![0f32; var.elem_count()]).as_mut_slice()),
        }
    };
    let op = FusedSgd {
        step,
        momentum: RefCell::new(Some(momentum)),
    };
    var.as_tensor().inplace_op2(&grad.contiguous()?, &op)
}
