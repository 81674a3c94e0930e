//! The kernels wrapped as candle custom ops with explicit backward passes.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Storage, Tensor, bail,
};

use super::profile::{Kind, record};
use super::{BatchStats, BnAct, BnParams, bn, conv, winograd};
use crate::BnMode;

/// The contiguous f32 data of a CPU storage under `layout`.
fn cpu_f32<'a>(s: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("muq kernels take f32 tensors");
    };
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("muq kernels take contiguous tensors"),
    }
}

/// Runs `f` on the contiguous f32 data of the CPU tensor `t`.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(cpu_f32(s, layout)?),
        _ => bail!("muq kernels run on the CPU only"),
    }
}

fn tensor(v: Vec<f32>, dims: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(v, dims, &Device::Cpu)
}

fn conv_geom(x: &[usize], w: &[usize], stride: usize, pad: usize) -> Result<conv::Geom> {
    conv::Geom::new(x, w, stride, pad).map_err(candle_core::Error::msg)
}

/// `x ⋆ w` as a custom op (see [`super::conv2d`]).
struct Conv2dOp {
    stride: usize,
    padding: usize,
    /// Winograd for the forward pass and input gradient where it applies.
    winograd: bool,
}

/// The forward pass: Winograd where asked for and applicable, else GEMMs.
fn forward(g: &conv::Geom, x: &[f32], w: &[f32], winograd: bool) -> Vec<f32> {
    if winograd && winograd::applies(g) {
        winograd::forward(g, x, w)
    } else {
        conv::forward(g, x, w)
    }
}

/// The filter gradient: Winograd where asked for and applicable, else GEMMs.
fn weight_grad(g: &conv::Geom, x: &[f32], dy: &[f32], winograd: bool) -> Vec<f32> {
    if winograd && winograd::applies(g) {
        winograd::weight_grad(g, x, dy)
    } else {
        conv::weight_grad(g, x, dy)
    }
}

/// The input gradient: Winograd where asked for and applicable, else GEMMs.
fn input_grad(g: &conv::Geom, w: &[f32], dy: &[f32], winograd: bool) -> Vec<f32> {
    if winograd && winograd::applies(g) {
        winograd::input_grad(g, w, dy)
    } else {
        conv::input_grad(g, w, dy)
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "muq-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = conv_geom(l1.dims(), l2.dims(), self.stride, self.padding)?;
        let t = Instant::now();
        let y = forward(&g, cpu_f32(s1, l1)?, cpu_f32(s2, l2)?, self.winograd);
        record(Kind::ConvForward, t);
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Nothing upstream of an input that is neither a variable nor
        // computed from one (the image batch) needs its gradient.
        let (dx, dw) = conv2d_backward(
            x,
            w,
            dy,
            (self.stride, self.padding),
            self.winograd,
            (x.track_op(), w.track_op()),
        )?;
        let dw = dw.map(|v| tensor(v, w.dims())).transpose()?;
        Ok((dx, dw))
    }
}

/// The backward pass of [`Conv2dOp`], shared with muq's own backward pass
/// ([`crate::Recorded`]): the input gradient when `want.0`, the filter
/// gradient (as its values) when `want.1`.
pub(crate) fn conv2d_backward(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    (stride, padding): (usize, usize),
    winograd: bool,
    want: (bool, bool),
) -> Result<(Option<Tensor>, Option<Vec<f32>>)> {
    let dy = dy.contiguous()?;
    let g = conv_geom(x.dims(), w.dims(), stride, padding)?;
    let dx = if want.0 {
        let t = Instant::now();
        let v = with_f32(w, |w| {
            with_f32(&dy, |dy| Ok(input_grad(&g, w, dy, winograd)))
        })?;
        record(Kind::ConvInputGrad, t);
        Some(tensor(v, x.dims())?)
    } else {
        None
    };
    let dw = if want.1 {
        let t = Instant::now();
        let v = with_f32(x, |x| {
            with_f32(&dy, |dy| Ok(weight_grad(&g, x, dy, winograd)))
        })?;
        record(Kind::ConvWeightGrad, t);
        Some(v)
    } else {
        None
    };
    Ok((dx, dw))
}

pub(super) fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    winograd: bool,
) -> Result<Tensor> {
    // Validate before the op so a bad shape is an error, not a panic.
    conv_geom(x.dims(), w.dims(), stride, padding)?;
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    x.apply_op2(
        &w,
        Conv2dOp {
            stride,
            padding,
            winograd,
        },
    )
}

pub(super) fn conv2d_input_grad(
    x_dims: &[usize],
    w: &Tensor,
    dy: &Tensor,
    stride: usize,
    padding: usize,
    winograd: bool,
) -> Result<Tensor> {
    let g = conv_geom(x_dims, w.dims(), stride, padding)?;
    let (w, dy) = (w.contiguous()?, dy.contiguous()?);
    let v = with_f32(&w, |w| {
        with_f32(&dy, |dy| Ok(input_grad(&g, w, dy, winograd)))
    })?;
    tensor(v, x_dims)
}

pub(super) fn conv2d_weight_grad(
    x: &Tensor,
    w_dims: &[usize],
    dy: &Tensor,
    stride: usize,
    padding: usize,
    winograd: bool,
) -> Result<Tensor> {
    let g = conv_geom(x.dims(), w_dims, stride, padding)?;
    let (x, dy) = (x.contiguous()?, dy.contiguous()?);
    let v = with_f32(&x, |x| {
        with_f32(&dy, |dy| Ok(weight_grad(&g, x, dy, winograd)))
    })?;
    tensor(v, w_dims)
}

/// The state one BatchNorm op shares with its caller: the normalisation
/// constants (set by the forward pass in training mode, up front in eval
/// mode), read again by the backward pass and by the running-stat update.
struct BnOp {
    act: bn::Act,
    train: bool,
    eps: f64,
    stats: Arc<OnceLock<bn::Stats>>,
}

impl BnOp {
    fn geom(dims: &[usize]) -> Result<bn::Geom> {
        match dims {
            &[n, c, h, w] => Ok(bn::Geom { n, c, hw: h * w }),
            _ => bail!("BatchNorm2d wants an N×C×H×W input, got {dims:?}"),
        }
    }

    fn fwd(&self, x: &[f32], dims: &[usize], wb: &[f32], r: Option<&[f32]>) -> Result<Vec<f32>> {
        let g = Self::geom(dims)?;
        if wb.len() != 2 * g.c {
            bail!(
                "BatchNorm2d: {} affine values for {} channels",
                wb.len(),
                g.c
            );
        }
        let t = Instant::now();
        let stats = if self.train {
            self.stats.get_or_init(|| bn::batch_stats(&g, x, self.eps))
        } else {
            match self.stats.get() {
                Some(s) => s,
                None => bail!("muq BatchNorm: eval-mode op without running statistics"),
            }
        };
        let y = bn::forward(&g, x, wb, stats, self.act, r);
        record(Kind::BnForward, t);
        Ok(y)
    }

    fn bwd(
        &self,
        x: &Tensor,
        wb: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let g = Self::geom(x.dims())?;
        let Some(stats) = self.stats.get() else {
            bail!("muq BatchNorm: backward pass before the forward pass");
        };
        let dy = dy.contiguous()?;
        let t = Instant::now();
        let (dx, dwb, dr) = with_f32(x, |xs| {
            with_f32(wb, |wbs| {
                with_f32(y, |ys| {
                    with_f32(&dy, |ds| {
                        Ok(bn::backward(
                            &g, xs, wbs, stats, self.act, ys, ds, self.train,
                        ))
                    })
                })
            })
        })?;
        record(Kind::BnBackward, t);
        Ok((
            tensor(dx, x.dims())?,
            tensor(dwb, wb.dims())?,
            dr.map(|v| tensor(v, x.dims())).transpose()?,
        ))
    }
}

/// `act(bn(x))` for `act` ∈ {identity, relu}: arguments `x` and `[γ; β]`.
struct Bn2(BnOp);

impl CustomOp2 for Bn2 {
    fn name(&self) -> &'static str {
        "muq-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = self
            .0
            .fwd(cpu_f32(s1, l1)?, l1.dims(), cpu_f32(s2, l2)?, None)?;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wb: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dwb, _) = self.0.bwd(x, wb, y, dy)?;
        Ok((Some(dx), Some(dwb)))
    }
}

/// `relu(bn(x) + r)`: arguments `x`, `[γ; β]` and `r`.
struct Bn3(BnOp);

impl CustomOp3 for Bn3 {
    fn name(&self) -> &'static str {
        "muq-batch-norm-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l3.dims() != l1.dims() {
            bail!(
                "BatchNorm residual of shape {:?} for an input of shape {:?}",
                l3.dims(),
                l1.dims()
            );
        }
        let r = cpu_f32(s3, l3)?;
        let y = self
            .0
            .fwd(cpu_f32(s1, l1)?, l1.dims(), cpu_f32(s2, l2)?, Some(r))?;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wb: &Tensor,
        _r: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dwb, dr) = self.0.bwd(x, wb, y, dy)?;
        Ok((Some(dx), Some(dwb), dr))
    }
}

pub(super) fn batch_norm(
    x: &Tensor,
    p: &BnParams<'_>,
    mode: BnMode,
    act: BnAct<'_>,
) -> Result<(Tensor, Option<BatchStats>)> {
    let (y, batch, _) = batch_norm_op(x, p, mode, act)?;
    Ok((y, batch))
}

/// A BatchNorm pass run outside candle's graph, holding what its backward
/// pass reads: muq's own backward pass ([`crate::Recorded`]).
pub(crate) struct BnRecord {
    op: BnOp,
    x: Tensor,
    wb: Tensor,
    /// The output (the next layer's input).
    pub y: Tensor,
}

/// Gradients of a [`BnRecord`]'s pass: the input's, γ's and β's values
/// (`[dγ; dβ]`, `2·C`), and the residual's for `relu(bn(x) + r)`.
pub(crate) struct BnGrads {
    pub dx: Tensor,
    pub dwb: Vec<f32>,
    pub dr: Option<Tensor>,
}

impl BnRecord {
    /// The backward pass of the recorded op, the arithmetic of its custom
    /// op's.
    pub(crate) fn backward(&self, dy: &Tensor) -> Result<BnGrads> {
        let (dx, dwb, dr) = self.op.bwd(&self.x, &self.wb, &self.y, dy)?;
        Ok(BnGrads {
            dx,
            dwb: dwb.to_vec1::<f32>()?,
            dr,
        })
    }
}

/// [`batch_norm`] on tensors that carry no graph (`x`, `p`'s and the
/// residual detached), with the record of the pass.
pub(crate) fn batch_norm_recorded(
    x: &Tensor,
    p: &BnParams<'_>,
    mode: BnMode,
    act: BnAct<'_>,
) -> Result<(BnRecord, Option<BatchStats>)> {
    let (y, batch, (op, x, wb)) = batch_norm_op(x, p, mode, act)?;
    Ok((BnRecord { op, x, wb, y }, batch))
}

/// The pass behind [`batch_norm`] and [`batch_norm_recorded`]: the output,
/// the batch statistics (training mode), and the op with its inputs for a
/// backward pass of muq's own.
#[allow(clippy::type_complexity)]
fn batch_norm_op(
    x: &Tensor,
    p: &BnParams<'_>,
    mode: BnMode,
    act: BnAct<'_>,
) -> Result<(Tensor, Option<BatchStats>, (BnOp, Tensor, Tensor))> {
    let x = x.contiguous()?;
    let g = BnOp::geom(x.dims())?;
    let stats = Arc::new(OnceLock::new());
    let train = mode == BnMode::Train;
    if !train {
        let rm = p
            .running_mean
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let rv = p
            .running_var
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let _ = stats.set(bn::running_stats(&rm, &rv, p.eps));
    }
    let wb = Tensor::cat(&[p.weight, p.bias], 0)?;
    let op = |act| BnOp {
        act,
        train,
        eps: p.eps,
        stats: stats.clone(),
    };
    let (y, act) = match act {
        BnAct::Identity => (
            x.apply_op2(&wb, Bn2(op(bn::Act::Identity)))?,
            bn::Act::Identity,
        ),
        BnAct::Relu => (x.apply_op2(&wb, Bn2(op(bn::Act::Relu)))?, bn::Act::Relu),
        BnAct::AddRelu(r) => {
            let r = r.contiguous()?;
            (
                x.apply_op3(&wb, &r, Bn3(op(bn::Act::AddRelu)))?,
                bn::Act::AddRelu,
            )
        }
    };
    let batch = if train {
        let Some(s) = stats.get() else {
            bail!("muq BatchNorm: the forward pass left no statistics");
        };
        Some(BatchStats {
            mean: s.mean.clone(),
            var: s.var.clone(),
            count: g.count(),
        })
    } else {
        None
    };
    Ok((y, batch, (op(act), x, wb)))
}
