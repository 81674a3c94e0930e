//! Per-op micro-benchmarks of the kernels (`muq bench --ops`).
//!
//! Each op runs on random inputs of the shapes the CIFAR ResNet-18 meets in
//! its four stages (3×3 convolutions at stride 1) and its stem; the median
//! of `reps` timed runs after one warm-up run is reported. The same ops and
//! shapes are timed in PyTorch by `bench/pytorch_reference.py --ops`.

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use serde::Serialize;

use crate::kernels::{self, Kernels};
use crate::model::{After, BatchNorm2d};
use crate::{BnMode, Result};

/// One op's timing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpTiming {
    /// What ran: `conv_fwd`, `conv_dx`, `conv_dw`, `bn_relu_fwd`, `bn_relu_bwd`.
    pub op: String,
    /// The input shape, `N×C×H×W`, and for convolutions the filter count.
    pub shape: String,
    /// Median milliseconds.
    pub ms: f64,
}

/// Median milliseconds of `reps` runs of `f` after one warm-up run.
pub fn median_ms(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(&mut times))
}

/// The median of `v` (mean of the middle two for an even length); NaN when
/// empty.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Times convolution forward, input gradient and weight gradient at each
/// stage's 3×3 shape (plus the stem's forward and weight gradient), and
/// BatchNorm+ReLU in training mode, forward and backward, at each stage's
/// shape, for a model of `width` and a batch of `batch`.
pub fn op_timings(
    width: usize,
    batch: usize,
    kernels: Kernels,
    reps: usize,
    device: &Device,
) -> Result<Vec<OpTiming>> {
    let mut out = Vec::new();
    let sync = || -> Result<()> { Ok(device.synchronize()?) };
    // The stem: 3 → width channels at 32×32; its input needs no gradient.
    let stages: Vec<(usize, usize, usize)> = std::iter::once((3, width, 32))
        .chain((0..4).map(|s| (width << s, width << s, 32 >> s)))
        .collect();
    for (i, &(c, o, hw)) in stages.iter().enumerate() {
        let x = Tensor::randn(0f32, 1.0, (batch, c, hw, hw), device)?;
        let w = (Tensor::randn(0f32, 1.0, (o, c, 3, 3), device)? * 0.05)?;
        let dy = Tensor::randn(0f32, 1.0, (batch, o, hw, hw), device)?;
        let shape = format!("{batch}x{c}x{hw}x{hw} o{o}");
        let mut push = |op: &str, ms| {
            out.push(OpTiming {
                op: op.into(),
                shape: shape.clone(),
                ms,
            })
        };
        push(
            "conv_fwd",
            median_ms(reps, || {
                kernels::conv2d(&x, &w, 1, 1, kernels)?;
                sync()
            })?,
        );
        if i > 0 {
            push(
                "conv_dx",
                median_ms(reps, || {
                    kernels::conv2d_input_grad(x.dims(), &w, &dy, 1, 1, kernels)?;
                    sync()
                })?,
            );
        }
        push(
            "conv_dw",
            median_ms(reps, || {
                kernels::conv2d_weight_grad(&x, w.dims(), &dy, 1, 1, kernels)?;
                sync()
            })?,
        );
    }
    for s in 0..4 {
        let (c, hw) = (width << s, 32 >> s);
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (batch, c, hw, hw), device)?)?;
        let bn = BatchNorm2d::fresh(c, device)?;
        let shape = format!("{batch}x{c}x{hw}x{hw}");
        let fwd = median_ms(reps, || {
            bn.forward(x.as_tensor(), BnMode::Train, After::Relu, kernels)?;
            sync()
        })?;
        let y = bn.forward(x.as_tensor(), BnMode::Train, After::Relu, kernels)?;
        let bwd = median_ms(reps, || {
            y.backward()?;
            sync()
        })?;
        for (op, ms) in [("bn_relu_fwd", fwd), ("bn_relu_bwd", bwd)] {
            out.push(OpTiming {
                op: op.into(),
                shape: shape.clone(),
                ms,
            });
        }
    }
    Ok(out)
}
