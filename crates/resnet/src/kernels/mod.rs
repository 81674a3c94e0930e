//! Which CPU kernels the model's convolutions and BatchNorms run on.
//!
//! [`Kernels::Stock`] uses candle's own ops (`conv2d`, and BatchNorm composed
//! of element-wise ops), exactly as before this module existed.
//! [`Kernels::Muq`] uses muq's CPU kernels, written as candle custom ops with
//! explicit backward passes; on any other device than the CPU, or for another
//! dtype than f32, it falls back to the stock ops. [`Kernels::Winograd`] is
//! [`Kernels::Muq`] with the stride-1 3×3 convolutions' forward pass and
//! input gradient computed by Winograd F(4×4, 3×3) (4× fewer multiplies,
//! more rounding; see `winograd.rs`).
//!
//! The selection is a runtime choice ([`crate::ResNet::set_kernels`]), not
//! part of a model's architecture or of its checkpoints. A new model takes
//! the default from the `MUQ_KERNELS` environment variable (`stock`, `muq`
//! or `winograd`; unset = `muq`), so the whole test suite can be run on either path:
//! `MUQ_KERNELS=stock cargo test -p muq-resnet`.
//!
//! # Instruction-set levels
//!
//! muq's kernels are compiled for several x86-64 levels ([`CpuLevel`]:
//! the baseline, x86-64-v3 = AVX2 + FMA, x86-64-v4 = AVX-512) and pick one
//! at run time: the best the CPU has, or the one `MUQ_CPU_LEVEL`
//! (`baseline`, `v3`, `v4`) forces — never one the CPU lacks
//! ([`CpuLevelError`]). The level covers every loop muq compiles (see
//! `simd.rs`), BatchNorm's reductions and the convolutions' GEMMs, whose
//! micro-kernels `gemm.rs` selects per level instead of letting the `gemm`
//! crate detect them, and the fused SGD update. It does not reach candle's
//! own ops: the classifier's matrix multiply and the convolutions of
//! [`Kernels::Stock`] call `gemm` through candle, at the level `gemm`
//! detects. [`compute_path`] records both. Off x86_64 there is one level, the
//! target's baseline (NEON on aarch64).
//!
//! This crate's kernel tests run every check at every level the machine
//! supports, forced per thread (`at_each_level`); `MUQ_CPU_LEVEL` forces
//! a level for a whole process, tests included.

mod bn;
mod conv;
mod gemm;
pub(crate) mod level;
mod ops;
pub(crate) mod optim;
mod simd;
#[cfg(test)]
mod tests;
mod winograd;

#[cfg(test)]
pub(crate) use level::at_each_level;
pub use level::{CPU_LEVEL_ENV, CpuLevel, CpuLevelError};
pub(crate) use ops::{BnRecord, batch_norm_recorded, conv2d_backward};

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::BnMode;

/// The environment variable that sets the default [`Kernels`].
pub const KERNELS_ENV: &str = "MUQ_KERNELS";

/// Which implementation of convolution and BatchNorm a model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernels {
    /// candle's stock ops.
    Stock,
    /// muq's CPU kernels (GEMM convolutions, fused BatchNorm); stock ops on
    /// other devices.
    #[default]
    Muq,
    /// [`Kernels::Muq`] with Winograd F(4×4, 3×3) for the forward pass,
    /// input gradient and filter gradient of stride-1 3×3 convolutions with
    /// ≥ 16 channels
    /// (every 3×3 convolution of ResNet-18 but the stem and the three
    /// stride-2 ones); stock ops on other devices.
    Winograd,
}

impl Kernels {
    /// Every setting, stock first.
    pub const ALL: [Kernels; 3] = [Kernels::Stock, Kernels::Muq, Kernels::Winograd];

    /// The lowercase name (`stock`, `muq` or `winograd`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kernels::Stock => "stock",
            Kernels::Muq => "muq",
            Kernels::Winograd => "winograd",
        }
    }

    /// The revision of this setting's arithmetic, raised whenever a change
    /// to its kernels changes the bits they compute: [`compute_path`]
    /// names the kernels and the CPU level, not the code, so caches key on
    /// this too and never serve a model the current code would not
    /// compute. 1 for `stock` and `muq`; 2 for `winograd`, whose filter
    /// gradient sums outer products from 128 channels since 2026-12-03.
    pub fn revision(self) -> u32 {
        match self {
            Kernels::Stock | Kernels::Muq => 1,
            Kernels::Winograd => 2,
        }
    }

    /// Whether this setting runs muq's CPU kernels (where they apply): all
    /// but [`Kernels::Stock`].
    pub fn is_muq(self) -> bool {
        self != Kernels::Stock
    }

    /// The default for new models: `MUQ_KERNELS` if set, else
    /// [`Kernels::Muq`].
    ///
    /// # Panics
    /// If `MUQ_KERNELS` holds anything but `stock`, `muq` or `winograd`: a
    /// typo must not
    /// silently benchmark or test the wrong path.
    pub fn from_env() -> Kernels {
        Self::try_from_env().unwrap_or_else(|e| panic!("{KERNELS_ENV}: {e}"))
    }

    /// [`from_env`](Self::from_env) without the panic: the setting of
    /// `MUQ_KERNELS`, [`Kernels::Muq`] when unset or empty.
    ///
    /// # Errors
    /// [`UnknownKernels`] if it holds anything but `stock`, `muq` or
    /// `winograd`.
    pub fn try_from_env() -> Result<Kernels, UnknownKernels> {
        match std::env::var(KERNELS_ENV) {
            Ok(v) if !v.is_empty() => v.parse(),
            _ => Ok(Kernels::default()),
        }
    }
}

impl fmt::Display for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kernel name that is not `stock`, `muq` or `winograd`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown kernels `{0}`: use `stock` (candle's ops), `muq` (muq's CPU kernels) or \
     `winograd` (muq's, with Winograd 3×3 convolutions)"
)]
pub struct UnknownKernels(pub String);

impl FromStr for Kernels {
    type Err = UnknownKernels;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "stock" => Ok(Kernels::Stock),
            "muq" => Ok(Kernels::Muq),
            "winograd" => Ok(Kernels::Winograd),
            _ => Err(UnknownKernels(s.to_owned())),
        }
    }
}

/// The name of the instruction-set level muq's kernels run at
/// ([`CpuLevel::active`]): `x86-64-v4` (AVX-512), `x86-64-v3` (AVX2 +
/// FMA), `x86-64` (baseline), or the architecture's name elsewhere
/// (`aarch64`, …). Floating-point sums are ordered differently at each
/// level, so results are bit-identical only within one.
///
/// # Panics
/// If `MUQ_CPU_LEVEL` is invalid ([`CpuLevel::try_from_env`]).
pub fn cpu_level() -> &'static str {
    CpuLevel::active().name()
}

/// What a model set to `kernels` actually computes with on `device`, as
/// result provenance and base-model cache keys record it: the kernels
/// that run (muq's fall back to stock off the CPU) and, on the CPU, the
/// instruction-set level — e.g. `muq/x86-64-v4`, `winograd/x86-64-v4`,
/// `stock/x86-64-v3`,
/// `stock/cuda`. Two runs that differ here may differ in their
/// floating-point bits.
///
/// With muq's kernels the level is [`cpu_level`]'s. When `MUQ_CPU_LEVEL`
/// forces one below what the CPU has, candle's own ops (the classifier's
/// matrix multiply) still run at the detected level, so the path names
/// both — `muq/x86-64-v3 (forced on x86-64-v4)` — and never equals a
/// machine's own v3 path. candle's stock ops never see the forced level:
/// `stock/` always names the detected one.
///
/// # Panics
/// If `MUQ_CPU_LEVEL` is invalid ([`CpuLevel::try_from_env`]).
pub fn compute_path(kernels: Kernels, device: &Device) -> String {
    match device {
        Device::Cpu => {
            let detected = CpuLevel::detected();
            match kernels {
                Kernels::Stock => format!("stock/{detected}"),
                Kernels::Muq | Kernels::Winograd => match CpuLevel::active() {
                    level if level == detected => format!("{kernels}/{level}"),
                    level => format!("{kernels}/{level} (forced on {detected})"),
                },
            }
        }
        Device::Cuda(_) => "stock/cuda".to_string(),
        Device::Metal(_) => "stock/metal".to_string(),
    }
}

/// Makes glibc's `malloc` keep large freed blocks for reuse: raises its
/// mmap threshold and trim threshold to 1 GiB (idempotent; a no-op
/// elsewhere than Linux/glibc). Returns whether the settings took.
///
/// By default glibc serves every block over 32 MiB (a width-64 layer-1
/// activation at batch 128 is exactly that) with a fresh `mmap` and unmaps
/// it on free, so each step page-faults hundreds of megabytes back in:
/// measured here, 1.6 M page faults and 17 % more CPU time per training
/// step. With the thresholds raised, freed activations are reused from the
/// heap. Resident memory then stays at its high-water mark instead of
/// shrinking between steps. The muq kernels call this on first use; a
/// program may call it first thing in `main`.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::sync::OnceLock;
        static TOOK: OnceLock<bool> = OnceLock::new();
        *TOOK.get_or_init(|| {
            unsafe extern "C" {
                fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
            }
            const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
            const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
            const LIMIT: std::ffi::c_int = 1 << 30;
            // SAFETY: `mallopt` only changes allocator parameters, under
            // glibc's arena lock; both values are in its accepted range.
            unsafe {
                mallopt(M_MMAP_THRESHOLD, LIMIT) == 1 && mallopt(M_TRIM_THRESHOLD, LIMIT) == 1
            }
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Whether muq's kernels can run on `x` (a CPU f32 tensor); when they
/// cannot, [`Kernels::Muq`] falls back to the stock ops.
pub fn runs_on(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32
}

/// A 2-D convolution without bias: `x` is `N×C×H×W`, `w` is `O×C×k×k`,
/// zero padding `padding` on every side, square `stride`.
///
/// With [`Kernels::Muq`] on the CPU this is a custom op whose backward pass
/// computes the input gradient only when the input needs one (not for the
/// stem, whose input is the image batch).
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    kernels: Kernels,
) -> candle_core::Result<Tensor> {
    if kernels.is_muq() && runs_on(x) && runs_on(w) {
        tune_allocator();
        ops::conv2d(x, w, stride, padding, kernels == Kernels::Winograd)
    } else {
        x.conv2d(w, padding, stride, 1, 1)
    }
}

/// The gradient of [`conv2d`] with respect to its input, of shape
/// `x_dims`, given the output gradient `dy`.
pub fn conv2d_input_grad(
    x_dims: &[usize],
    w: &Tensor,
    dy: &Tensor,
    stride: usize,
    padding: usize,
    kernels: Kernels,
) -> candle_core::Result<Tensor> {
    if kernels.is_muq() && runs_on(w) && runs_on(dy) {
        return ops::conv2d_input_grad(
            x_dims,
            w,
            dy,
            stride,
            padding,
            kernels == Kernels::Winograd,
        );
    }
    // candle's own backward pass: a transposed convolution.
    let (_, _, k, _) = w.dims4()?;
    let out_size = (dy.dim(2)? - 1) * stride + k - 2 * padding;
    let out_padding = x_dims[2] - out_size;
    dy.conv_transpose2d(w, padding, out_padding, stride, 1)
}

/// The gradient of [`conv2d`] with respect to its filters, of shape
/// `w_dims`, given the input `x` and the output gradient `dy`.
pub fn conv2d_weight_grad(
    x: &Tensor,
    w_dims: &[usize],
    dy: &Tensor,
    stride: usize,
    padding: usize,
    kernels: Kernels,
) -> candle_core::Result<Tensor> {
    if kernels.is_muq() && runs_on(x) && runs_on(dy) {
        return ops::conv2d_weight_grad(
            x,
            w_dims,
            dy,
            stride,
            padding,
            kernels == Kernels::Winograd,
        );
    }
    // candle's own backward pass: a convolution of the input by the output
    // gradient, channels and batch swapped, dilated by the stride.
    let g = x
        .transpose(0, 1)?
        .conv2d(&dy.transpose(0, 1)?, padding, 1, stride, 1)?
        .transpose(0, 1)?;
    let (k0, k1) = (w_dims[2], w_dims[3]);
    if g.dim(2)? != k0 || g.dim(3)? != k1 {
        g.narrow(2, 0, k0)?.narrow(3, 0, k1)
    } else {
        Ok(g)
    }
}

/// The tensors of one BatchNorm layer.
#[derive(Clone, Copy, Debug)]
pub struct BnParams<'a> {
    /// γ, shape `C`.
    pub weight: &'a Tensor,
    /// β, shape `C`.
    pub bias: &'a Tensor,
    /// Running mean, shape `C` (read in eval mode only).
    pub running_mean: &'a Tensor,
    /// Running (unbiased) variance, shape `C` (read in eval mode only).
    pub running_var: &'a Tensor,
    /// Added to the variance before the square root.
    pub eps: f64,
}

/// What follows the normalisation in the fused BatchNorm pass.
#[derive(Clone, Copy, Debug)]
pub enum BnAct<'a> {
    /// `bn(x)`.
    Identity,
    /// `relu(bn(x))`.
    Relu,
    /// `relu(bn(x) + residual)`.
    AddRelu(&'a Tensor),
}

/// Batch statistics of a training-mode BatchNorm pass, for the running-stat
/// update.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchStats {
    /// Per-channel mean.
    pub mean: Vec<f32>,
    /// Per-channel biased variance (the one that normalises).
    pub var: Vec<f32>,
    /// Values per channel (`N·H·W`).
    pub count: usize,
}

/// Fused BatchNorm (+ReLU, +residual) as one custom op with its own
/// backward pass; `x` (`N×C×H×W`) must satisfy [`runs_on`]. Returns the
/// output and, in training mode, the batch statistics: the caller updates
/// the running statistics (they are not touched here).
pub fn batch_norm(
    x: &Tensor,
    params: &BnParams<'_>,
    mode: BnMode,
    act: BnAct<'_>,
) -> candle_core::Result<(Tensor, Option<BatchStats>)> {
    ops::batch_norm(x, params, mode, act)
}

/// Wall-clock time spent inside muq's CPU kernels, for `muq bench`.
pub mod profile {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    use serde::Serialize;

    /// The kernels timed.
    #[derive(Clone, Copy, Debug)]
    pub(crate) enum Kind {
        ConvForward = 0,
        ConvInputGrad = 1,
        ConvWeightGrad = 2,
        BnForward = 3,
        BnBackward = 4,
    }

    static NANOS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

    /// Adds the time since `start` to `kind`'s total.
    pub(crate) fn record(kind: Kind, start: Instant) {
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        NANOS[kind as usize].fetch_add(ns, Ordering::Relaxed);
    }

    /// Milliseconds spent in each kernel (summed over calls and threads
    /// that called them; the kernels parallelise inside, so this is wall
    /// time of the calling thread).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
    pub struct KernelTimes {
        /// Convolution forward passes.
        pub conv_fwd_ms: f64,
        /// Convolution input gradients.
        pub conv_dx_ms: f64,
        /// Convolution filter gradients.
        pub conv_dw_ms: f64,
        /// BatchNorm (+ReLU, +residual) forward passes.
        pub bn_fwd_ms: f64,
        /// BatchNorm backward passes.
        pub bn_bwd_ms: f64,
    }

    impl KernelTimes {
        /// The sum over kernels.
        pub fn total_ms(&self) -> f64 {
            self.conv_fwd_ms + self.conv_dx_ms + self.conv_dw_ms + self.bn_fwd_ms + self.bn_bwd_ms
        }

        /// Each figure divided by `n`.
        pub fn per(&self, n: f64) -> Self {
            Self {
                conv_fwd_ms: self.conv_fwd_ms / n,
                conv_dx_ms: self.conv_dx_ms / n,
                conv_dw_ms: self.conv_dw_ms / n,
                bn_fwd_ms: self.bn_fwd_ms / n,
                bn_bwd_ms: self.bn_bwd_ms / n,
            }
        }
    }

    /// The totals since the last call (or since the start), resetting them.
    pub fn take() -> KernelTimes {
        let ms = |k: Kind| NANOS[k as usize].swap(0, Ordering::Relaxed) as f64 / 1e6;
        KernelTimes {
            conv_fwd_ms: ms(Kind::ConvForward),
            conv_dx_ms: ms(Kind::ConvInputGrad),
            conv_dw_ms: ms(Kind::ConvWeightGrad),
            bn_fwd_ms: ms(Kind::BnForward),
            bn_bwd_ms: ms(Kind::BnBackward),
        }
    }
}
