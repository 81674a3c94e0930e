//! Fused BatchNorm (+ReLU, +residual add) forward and backward over NCHW.
//!
//! Training mode normalises with the batch mean and biased variance (two
//! passes over each channel, sums in f64); eval mode with the running
//! statistics. Per-channel reductions run in parallel over channels,
//! element-wise passes in parallel over images.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::simd::{self, simd_fn, written_by};

/// The shape of a BatchNorm input: `n` images of `c` channels of `hw` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geom {
    /// Images.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Values per channel and image (`H·W`).
    pub hw: usize,
}

impl Geom {
    /// Values per channel over the batch.
    pub fn count(&self) -> usize {
        self.n * self.hw
    }

    fn image(&self) -> usize {
        self.c * self.hw
    }

    /// The `n` planes of channel `ch`.
    fn planes<'a>(&self, t: &'a [f32], ch: usize) -> impl Iterator<Item = &'a [f32]> {
        let (c, hw) = (self.c, self.hw);
        (0..self.n).map(move |i| &t[(i * c + ch) * hw..(i * c + ch + 1) * hw])
    }
}

/// What follows the normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    /// `bn(x)`.
    Identity,
    /// `relu(bn(x))`.
    Relu,
    /// `relu(bn(x) + r)`.
    AddRelu,
}

/// Per-channel normalisation constants: `y = (x − mean)·invstd·γ + β`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Stats {
    /// Mean used to centre.
    pub mean: Vec<f32>,
    /// `1/√(var + eps)`.
    pub invstd: Vec<f32>,
    /// The biased batch variance (training mode; empty in eval mode).
    pub var: Vec<f32>,
}

/// Batch mean and biased variance per channel, as `Stats` with
/// `invstd = 1/√(var + eps)`.
pub(crate) fn batch_stats(g: &Geom, x: &[f32], eps: f64) -> Stats {
    let m = g.count() as f64;
    let per: Vec<(f32, f32, f32)> = (0..g.c)
        .into_par_iter()
        .map(|ch| {
            let mean = g.planes(x, ch).map(simd::sum).sum::<f64>() / m;
            let mf = mean as f32;
            let var = g
                .planes(x, ch)
                .map(|p| simd::sum_sq_dev(p, mf))
                .sum::<f64>()
                / m;
            (mf, var as f32, (1.0 / (var + eps).sqrt()) as f32)
        })
        .collect();
    Stats {
        mean: per.iter().map(|t| t.0).collect(),
        var: per.iter().map(|t| t.1).collect(),
        invstd: per.iter().map(|t| t.2).collect(),
    }
}

/// Eval-mode constants from the running statistics, computed as the stock
/// path does (f32 `1/√(var + eps)`).
pub(crate) fn running_stats(mean: &[f32], var: &[f32], eps: f64) -> Stats {
    Stats {
        mean: mean.to_vec(),
        invstd: var.iter().map(|&v| 1.0 / (v + eps as f32).sqrt()).collect(),
        var: Vec::new(),
    }
}

simd_fn! {
    /// One plane of [`forward`]: `y = (x − m)·scale + shift [+ r]`, then
    /// ReLU when `relu`.
    fn plane_forward(
        y: &mut [MaybeUninit<f32>],
        x: &[f32],
        r: Option<&[f32]>,
        relu: bool,
        consts: (f32, f32, f32),
    ) {
        let (m, scale, shift) = consts;
        match (r, relu) {
            (None, false) => {
                for (o, &v) in y.iter_mut().zip(x) {
                    *o = MaybeUninit::new((v - m) * scale + shift);
                }
            }
            (None, true) => {
                for (o, &v) in y.iter_mut().zip(x) {
                    let t = (v - m) * scale + shift;
                    *o = MaybeUninit::new(if t > 0.0 { t } else { 0.0 });
                }
            }
            (Some(r), _) => {
                for ((o, &v), &rv) in y.iter_mut().zip(x).zip(r) {
                    let t = (v - m) * scale + shift + rv;
                    *o = MaybeUninit::new(if t > 0.0 { t } else { 0.0 });
                }
            }
        }
    }
}

/// `y = act((x − mean)·invstd·γ + β [+ r])`; `wb` is `[γ; β]`.
pub(crate) fn forward(
    g: &Geom,
    x: &[f32],
    wb: &[f32],
    s: &Stats,
    act: Act,
    r: Option<&[f32]>,
) -> Vec<f32> {
    let (gamma, beta) = wb.split_at(g.c);
    let scale: Vec<f32> = gamma.iter().zip(&s.invstd).map(|(a, b)| a * b).collect();
    let img = g.image();
    if img == 0 {
        return vec![0f32; x.len()];
    }
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(img).enumerate().for_each(|(i, yimg)| {
            let ximg = &x[i * img..(i + 1) * img];
            let rimg = r.map(|r| &r[i * img..(i + 1) * img]);
            for ch in 0..g.c {
                let span = ch * g.hw..(ch + 1) * g.hw;
                plane_forward(
                    &mut yimg[span.clone()],
                    &ximg[span.clone()],
                    rimg.map(|r| &r[span]),
                    act != Act::Identity,
                    (s.mean[ch], scale[ch], beta[ch]),
                );
            }
        });
    };
    // SAFETY: the images' `c` planes of `hw` cover `x.len()` (`img` is
    // `c·hw` and divides it), and `plane_forward` writes each element.
    unsafe { written_by(x.len(), fill) }
}

/// Where a backward pass's ReLU mask comes from, for one plane.
#[derive(Clone, Copy)]
enum Mask<'a> {
    /// No ReLU ([`Act::Identity`]): `g = dy`.
    Off,
    /// The forward output's sign ([`Act::AddRelu`], whose pre-activation
    /// also holds the residual): `g = dy` where `y > 0`.
    Output(&'a [f32]),
    /// Recomputed from the input with the forward pass's own arithmetic
    /// ([`Act::Relu`]): `g = dy` where `(x − m)·scale + shift > 0`, which is
    /// exactly where [`plane_forward`]'s output is positive — and saves
    /// reading the output, a third of what the pass reads.
    Input { scale: f32, shift: f32 },
}

simd_fn! {
    /// `(Σ g, Σ g·(x − m))` over one plane, `g = dy` masked as `mask` says
    /// (written to `scratch` first, so that the reduction below has no
    /// select in it and vectorises); 16 f32 lanes reduced in f64.
    fn plane_sums(
        xs: &[f32],
        ds: &[f32],
        m: f32,
        mask: Mask<'_>,
        scratch: &mut Vec<f32>,
    ) -> (f64, f64) {
        let gs: &[f32] = match mask {
            Mask::Off => ds,
            Mask::Output(ys) => {
                scratch.clear();
                scratch.extend(ys.iter().zip(ds).map(|(&y, &d)| if y > 0.0 { d } else { 0.0 }));
                scratch
            }
            Mask::Input { scale, shift } => {
                scratch.clear();
                scratch.extend(xs.iter().zip(ds).map(|(&x, &d)| {
                    if (x - m) * scale + shift > 0.0 { d } else { 0.0 }
                }));
                scratch
            }
        };
        simd::sum_and_dot_dev(gs, xs, m)
    }
}

simd_fn! {
    /// One plane of the input gradient: `out = c1·g − c2 − c3·(x − m)`,
    /// `g = dy` masked as `mask` says; and `dr = g` when given.
    fn plane_dx(
        out: &mut [MaybeUninit<f32>],
        dr: Option<&mut [MaybeUninit<f32>]>,
        xs: &[f32],
        ds: &[f32],
        mask: Mask<'_>,
        consts: (f32, f32, f32, f32),
    ) {
        let (m, c1, c2, c3) = consts;
        match mask {
            Mask::Off => {
                for ((o, &x), &d) in out.iter_mut().zip(xs).zip(ds) {
                    *o = MaybeUninit::new(c1 * d - c2 - c3 * (x - m));
                }
            }
            Mask::Output(ys) => {
                for (((o, &x), &y), &d) in out.iter_mut().zip(xs).zip(ys).zip(ds) {
                    let gv = if y > 0.0 { d } else { 0.0 };
                    *o = MaybeUninit::new(c1 * gv - c2 - c3 * (x - m));
                }
            }
            Mask::Input { scale, shift } => {
                for ((o, &x), &d) in out.iter_mut().zip(xs).zip(ds) {
                    let gv = if (x - m) * scale + shift > 0.0 { d } else { 0.0 };
                    *o = MaybeUninit::new(c1 * gv - c2 - c3 * (x - m));
                }
            }
        }
        if let Some(dr) = dr {
            // Only `relu(bn(x) + r)` asks for `dr`, and its mask is the
            // output's, as [`backward`] builds them.
            let Mask::Output(ys) = mask else {
                unreachable!("dr is asked for with the output's mask only")
            };
            for ((o, &y), &d) in dr.iter_mut().zip(ys).zip(ds) {
                *o = MaybeUninit::new(if y > 0.0 { d } else { 0.0 });
            }
        }
    }
}

/// Gradients of [`forward`]: `(dx, [dγ; dβ], dr)`, `dr` only for
/// [`Act::AddRelu`]. `y` is the forward output, whose sign is
/// [`Act::AddRelu`]'s ReLU mask ([`Act::Relu`]'s is recomputed from `x`,
/// see [`Mask`]);
/// `train` selects the batch-statistics backward pass (the mean and
/// variance depend on `x`) over the eval one (constants).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    g: &Geom,
    x: &[f32],
    wb: &[f32],
    s: &Stats,
    act: Act,
    y: &[f32],
    dy: &[f32],
    train: bool,
) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let (gamma, beta) = wb.split_at(g.c);
    let (c, hw) = (g.c, g.hw);
    // The ReLU mask of channel `ch` over `span` (see [`Mask`]).
    let mask = |ch: usize, span: std::ops::Range<usize>| match act {
        Act::Identity => Mask::Off,
        Act::Relu => Mask::Input {
            scale: gamma[ch] * s.invstd[ch],
            shift: beta[ch],
        },
        Act::AddRelu => Mask::Output(&y[span]),
    };
    // Pass 1 (per channel): Σ g and Σ g·(x − mean), g the masked gradient.
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let m = s.mean[ch];
            let (mut sg, mut sgx) = (0f64, 0f64);
            let mut scratch = Vec::with_capacity(if act == Act::Identity { 0 } else { hw });
            for i in 0..g.n {
                let span = (i * c + ch) * hw..(i * c + ch + 1) * hw;
                let (xs, ds) = (&x[span.clone()], &dy[span.clone()]);
                let (a, b) = plane_sums(xs, ds, m, mask(ch, span), &mut scratch);
                sg += a;
                sgx += b;
            }
            (sg, sgx * f64::from(s.invstd[ch]))
        })
        .collect();
    let mut dwb = vec![0f32; 2 * c];
    for (ch, &(sg, sgx)) in sums.iter().enumerate() {
        dwb[ch] = sgx as f32;
        dwb[c + ch] = sg as f32;
    }
    // dx = γ·invstd·(g − Σg/M − x̂·Σg·x̂/M) in training mode (the batch
    // statistics depend on x), γ·invstd·g in eval mode:
    // dx = c1·g − c2 − c3·(x − mean).
    let mcount = g.count() as f64;
    let coef: Vec<(f32, f32, f32)> = (0..c)
        .map(|ch| {
            let k = f64::from(gamma[ch]) * f64::from(s.invstd[ch]);
            if train {
                let (sg, sgx) = sums[ch];
                let is = f64::from(s.invstd[ch]);
                (
                    k as f32,
                    (k * sg / mcount) as f32,
                    (k * is * sgx / mcount) as f32,
                )
            } else {
                (k as f32, 0.0, 0.0)
            }
        })
        .collect();
    let img = g.image();
    if img == 0 {
        let zeros = || vec![0f32; x.len()];
        return (zeros(), dwb, (act == Act::AddRelu).then(zeros));
    }
    // Pass 2 (per image): dx (and dr).
    let work =
        |i: usize, dximg: &mut [MaybeUninit<f32>], mut drimg: Option<&mut [MaybeUninit<f32>]>| {
            let base = i * img;
            for (ch, &(c1, c2, c3)) in coef.iter().enumerate() {
                let span = base + ch * hw..base + (ch + 1) * hw;
                let local = ch * hw..(ch + 1) * hw;
                plane_dx(
                    &mut dximg[local.clone()],
                    drimg.as_deref_mut().map(|d| &mut d[local]),
                    &x[span.clone()],
                    &dy[span.clone()],
                    mask(ch, span),
                    (s.mean[ch], c1, c2, c3),
                );
            }
        };
    if act == Act::AddRelu {
        let mut dr = Vec::new();
        // SAFETY: the images' `c` planes of `hw` cover `x.len()`, and
        // `plane_dx` writes each element of `out` and, masked (`AddRelu`
        // is), of `dr`.
        let dx = unsafe {
            written_by(x.len(), |dx| {
                dr = written_by(x.len(), |dr| {
                    dx.par_chunks_mut(img)
                        .zip(dr.par_chunks_mut(img))
                        .enumerate()
                        .for_each(|(i, (a, b))| work(i, a, Some(b)));
                });
            })
        };
        (dx, dwb, Some(dr))
    } else {
        // SAFETY: as above, for `out`.
        let dx = unsafe {
            written_by(x.len(), |dx| {
                dx.par_chunks_mut(img)
                    .enumerate()
                    .for_each(|(i, a)| work(i, a, None));
            })
        };
        (dx, dwb, None)
    }
}
