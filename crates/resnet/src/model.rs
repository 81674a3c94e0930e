//! The CIFAR ResNet-18 and its layers.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::init::{Init, fans};
use crate::kernels::{self, Kernels};
use crate::{ResnetError, Result};

mod recorded;
pub use recorded::{Recorded, backward};

/// The architecture of a model: what a checkpoint must agree with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResNetConfig {
    /// Channels of the stem and `layer1`; `layer2..4` use 2×, 4×, 8× this.
    /// 64 is torchvision's full size; 8 or 16 make tiny test models.
    pub width: usize,
    /// Number of output classes (10 for CIFAR-10).
    pub num_classes: usize,
    /// Dropout probability between the pooled features and `fc`; 0 = none.
    pub dropout: f32,
}

impl Default for ResNetConfig {
    fn default() -> Self {
        Self {
            width: 64,
            num_classes: 10,
            dropout: 0.0,
        }
    }
}

/// The widest model [`ResNetConfig::validate`] accepts: 16 times the full
/// size, beyond which the parameters alone outgrow any one machine's memory
/// (and a request for more is a typo, better refused than an aborted
/// allocation).
pub const MAX_WIDTH: usize = 1024;

impl ResNetConfig {
    /// Checks the values, naming the field that is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.width == 0 || self.width > MAX_WIDTH {
            return Err(ResnetError::Config {
                field: "width",
                reason: format!(
                    "{} is not in 1..={MAX_WIDTH} (64 is full size; width 1024 already has \
                     2.8 billion parameters)",
                    self.width
                ),
            });
        }
        if self.num_classes < 2 {
            return Err(ResnetError::Config {
                field: "num_classes",
                reason: format!("must be at least 2, got {}", self.num_classes),
            });
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ResnetError::Config {
                field: "dropout",
                reason: format!("must be in [0, 1), got {}", self.dropout),
            });
        }
        Ok(())
    }

    /// Width of the pooled feature vector that feeds `fc` (`8 · width`).
    pub fn feature_dim(&self) -> usize {
        8 * self.width
    }
}

/// How BatchNorm behaves in a forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BnMode {
    /// PyTorch's `model.train()`: normalise with the batch's biased variance
    /// and update the running statistics (momentum 0.1, unbiased variance).
    Train,
    /// PyTorch's `model.eval()`: normalise with the running statistics, which
    /// stay untouched.
    Eval,
}

/// Whether a named tensor is learnt or a BatchNorm buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A trainable parameter: optimisers, weight decay and unlearning updates
    /// touch it.
    Trainable,
    /// A BatchNorm running statistic: changed only by forward passes in
    /// [`BnMode::Train`]; saved in checkpoints, never optimised.
    Buffer,
}

/// One named tensor of the model.
#[derive(Clone, Debug)]
pub struct Param {
    /// torchvision's `state_dict` name, e.g. `layer2.0.downsample.0.weight`.
    pub name: String,
    /// The value (candle keeps it in place across updates).
    pub var: Var,
    /// Trainable parameter or buffer.
    pub kind: ParamKind,
}

/// Where a model's initial values come from.
enum Source<'a> {
    Init(&'a mut ChaCha8Rng),
    Tensors(&'a HashMap<String, Tensor>),
}

struct Builder<'a> {
    source: Source<'a>,
    device: Device,
    params: Vec<Param>,
}

impl Builder<'_> {
    fn tensor(
        &mut self,
        name: String,
        shape: &[usize],
        init: Init,
        kind: ParamKind,
    ) -> Result<Var> {
        let t = match &mut self.source {
            Source::Init(rng) => init.tensor(shape, rng, &self.device)?,
            Source::Tensors(map) => {
                let t = map.get(&name).ok_or_else(|| ResnetError::Config {
                    field: "checkpoint",
                    reason: format!("tensor `{name}` is missing"),
                })?;
                if t.dims() != shape {
                    return Err(ResnetError::Config {
                        field: "checkpoint",
                        reason: format!(
                            "tensor `{name}` has shape {:?}, the model needs {shape:?} \
                             (was it saved with another width or class count?)",
                            t.dims()
                        ),
                    });
                }
                t.to_dtype(DType::F32)?.to_device(&self.device)?.copy()?
            }
        };
        let var = Var::from_tensor(&t)?;
        self.params.push(Param {
            name,
            var: var.clone(),
            kind,
        });
        Ok(var)
    }

    fn conv(
        &mut self,
        name: &str,
        out: usize,
        inp: usize,
        k: usize,
        stride: usize,
        init: Init,
    ) -> Result<Conv2d> {
        let w = self.tensor(
            format!("{name}.weight"),
            &[out, inp, k, k],
            init,
            ParamKind::Trainable,
        )?;
        Ok(Conv2d {
            weight: w.as_tensor().clone(),
            stride,
            padding: k / 2,
        })
    }

    fn bn(&mut self, name: &str, c: usize) -> Result<BatchNorm2d> {
        let t = ParamKind::Trainable;
        let b = ParamKind::Buffer;
        let weight = self.tensor(format!("{name}.weight"), &[c], Init::Constant(1.0), t)?;
        let bias = self.tensor(format!("{name}.bias"), &[c], Init::Constant(0.0), t)?;
        let running_mean =
            self.tensor(format!("{name}.running_mean"), &[c], Init::Constant(0.0), b)?;
        let running_var =
            self.tensor(format!("{name}.running_var"), &[c], Init::Constant(1.0), b)?;
        Ok(BatchNorm2d {
            weight: weight.as_tensor().clone(),
            bias: bias.as_tensor().clone(),
            running_mean,
            running_var,
            eps: BN_EPS,
            momentum: 0.1,
        })
    }
}

thread_local! {
    /// Set while [`ResNet::infer`] runs on this thread: parameters are read
    /// detached, so candle records no autograd graph.
    static INFERRING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `t` as the pass under way reads it: detached (sharing its storage, no
/// copy) inside [`ResNet::infer`], so that no op records a graph and each
/// intermediate tensor is freed as soon as the next layer has read it.
fn param(t: &Tensor) -> Tensor {
    if INFERRING.get() {
        t.detach()
    } else {
        t.clone()
    }
}

/// A bias-free 2-D convolution with "same" padding.
#[derive(Clone, Debug)]
struct Conv2d {
    weight: Tensor,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    fn forward(&self, x: &Tensor, k: Kernels) -> Result<Tensor> {
        Ok(kernels::conv2d(
            x,
            &param(&self.weight),
            self.stride,
            self.padding,
            k,
        )?)
    }
}

/// What a BatchNorm's forward pass applies after normalising, in the same
/// (fused, with [`Kernels::Muq`]) pass.
#[derive(Clone, Copy, Debug)]
pub(crate) enum After<'a> {
    /// Nothing: `bn(x)`.
    Nothing,
    /// `relu(bn(x))`.
    Relu,
    /// `relu(bn(x) + residual)`, the end of a BasicBlock.
    AddRelu(&'a Tensor),
}

impl<'a> After<'a> {
    /// The kernels' name for this.
    fn act(self) -> kernels::BnAct<'a> {
        match self {
            After::Nothing => kernels::BnAct::Identity,
            After::Relu => kernels::BnAct::Relu,
            After::AddRelu(r) => kernels::BnAct::AddRelu(r),
        }
    }
}

/// BatchNorm's ε, added to the variance before the square root (PyTorch's
/// default): every BatchNorm of the model and its forward-mode pass
/// ([`crate::jvp`]) use it.
pub const BN_EPS: f64 = 1e-5;

/// BatchNorm over the channels of an `N×C×H×W` tensor, PyTorch semantics.
#[derive(Clone, Debug)]
pub(crate) struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm2d {
    /// A fresh layer of `c` channels (γ = 1, β = 0, running mean 0 and
    /// variance 1), as the model's constructor makes it.
    pub(crate) fn fresh(c: usize, device: &Device) -> Result<Self> {
        let full = |v: f32| vec![v; c];
        Self::with_values([full(1.0), full(0.0), full(0.0), full(1.0)], device)
    }

    /// A layer with the given γ, β, running mean and running variance.
    pub(crate) fn with_values(values: [Vec<f32>; 4], device: &Device) -> Result<Self> {
        let [weight, bias, mean, var] = values.map(|v| {
            let n = v.len();
            Tensor::from_vec(v, n, device).and_then(|t| Var::from_tensor(&t))
        });
        Ok(Self {
            weight: weight?.as_tensor().clone(),
            bias: bias?.as_tensor().clone(),
            running_mean: mean?,
            running_var: var?,
            eps: BN_EPS,
            momentum: 0.1,
        })
    }

    /// γ, β, running mean and running variance.
    #[cfg(test)]
    pub(crate) fn tensors(&self) -> [&Tensor; 4] {
        [
            &self.weight,
            &self.bias,
            self.running_mean.as_tensor(),
            self.running_var.as_tensor(),
        ]
    }

    /// `bn(x)` followed by `after`, on the kernels `k`.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        mode: BnMode,
        after: After<'_>,
        k: Kernels,
    ) -> Result<Tensor> {
        Self::check_batch(x, mode)?;
        if k.is_muq() && kernels::runs_on(x) {
            let params = [
                &self.weight,
                &self.bias,
                self.running_mean.as_tensor(),
                self.running_var.as_tensor(),
            ]
            .map(param);
            let (y, stats) =
                kernels::batch_norm(x, &self.kernel_params(&params), mode, after.act())?;
            self.absorb(x, stats)?;
            return Ok(y);
        }
        let y = self.forward_stock(x, mode)?;
        Ok(match after {
            After::Nothing => y,
            After::Relu => y.relu()?,
            After::AddRelu(r) => (y + r)?.relu()?,
        })
    }

    /// `bn(x)` followed by `after` outside candle's graph, on muq's
    /// kernels (`x` and the residual detached), recorded for muq's own
    /// backward pass; running statistics updated as [`Self::forward`] does.
    pub(crate) fn forward_recorded(
        &self,
        x: &Tensor,
        mode: BnMode,
        after: After<'_>,
    ) -> Result<kernels::BnRecord> {
        Self::check_batch(x, mode)?;
        let params = [
            &self.weight,
            &self.bias,
            self.running_mean.as_tensor(),
            self.running_var.as_tensor(),
        ]
        .map(Tensor::detach);
        let (rec, stats) =
            kernels::batch_norm_recorded(x, &self.kernel_params(&params), mode, after.act())?;
        self.absorb(x, stats)?;
        Ok(rec)
    }

    /// A training-mode pass needs two values per channel.
    fn check_batch(x: &Tensor, mode: BnMode) -> Result<()> {
        if mode == BnMode::Train {
            let (n, _, h, wd) = x.dims4()?;
            if n * h * wd < 2 {
                return Err(ResnetError::Config {
                    field: "batch_size",
                    reason: "BatchNorm in training mode needs more than one value per channel \
                             (use a batch of at least 2)"
                        .into(),
                });
            }
        }
        Ok(())
    }

    /// γ, β and the running statistics as the kernels take them.
    fn kernel_params<'a>(&self, p: &'a [Tensor; 4]) -> kernels::BnParams<'a> {
        kernels::BnParams {
            weight: &p[0],
            bias: &p[1],
            running_mean: &p[2],
            running_var: &p[3],
            eps: self.eps,
        }
    }

    /// Folds a training-mode pass's batch statistics into the running ones.
    fn absorb(&self, x: &Tensor, stats: Option<kernels::BatchStats>) -> Result<()> {
        if let Some(s) = stats {
            let (_, c, _, _) = x.dims4()?;
            let dev = x.device();
            let mean = Tensor::from_vec(s.mean, c, dev)?;
            let var = Tensor::from_vec(s.var, c, dev)?;
            self.update_running(&mean, &var, s.count)?;
        }
        Ok(())
    }

    /// γ and β (their gradients are looked up by these tensors).
    pub(crate) fn affine(&self) -> [&Tensor; 2] {
        [&self.weight, &self.bias]
    }

    /// candle's stock ops: BatchNorm composed of reductions and broadcasts.
    fn forward_stock(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        let c = x.dim(1)?;
        let shape = (1, c, 1, 1);
        let (weight, bias) = (param(&self.weight), param(&self.bias));
        match mode {
            BnMode::Eval => {
                let frozen = FrozenBn::new(
                    &weight,
                    &bias,
                    &self.running_mean.as_detached_tensor(),
                    &self.running_var.as_detached_tensor(),
                    self.eps,
                )?;
                let scale = frozen.scale.reshape(shape)?;
                let shift = frozen.shift.reshape(shape)?;
                Ok(x.broadcast_mul(&scale)?.broadcast_add(&shift)?)
            }
            BnMode::Train => {
                let (n, _, h, wd) = x.dims4()?;
                let count = n * h * wd;
                let mean = x.mean_keepdim((0, 2, 3))?;
                let centred = x.broadcast_sub(&mean)?;
                let var = centred.sqr()?.mean_keepdim((0, 2, 3))?;
                let inv_std = (&var + self.eps)?.sqrt()?.recip()?;
                let y = centred
                    .broadcast_mul(&inv_std.broadcast_mul(&weight.reshape(shape)?)?)?
                    .broadcast_add(&bias.reshape(shape)?)?;
                self.update_running(&mean.detach(), &var.detach(), count)?;
                Ok(y)
            }
        }
    }

    /// `running ← (1 − m)·running + m·batch`, with the unbiased variance.
    fn update_running(&self, mean: &Tensor, biased_var: &Tensor, count: usize) -> Result<()> {
        let m = self.momentum;
        let unbias = count as f64 / (count as f64 - 1.0);
        let rm = self.running_mean.as_detached_tensor();
        let rv = self.running_var.as_detached_tensor();
        let new_mean = ((rm * (1.0 - m))? + (mean.flatten_all()? * m)?)?;
        let new_var = ((rv * (1.0 - m))? + (biased_var.flatten_all()? * (m * unbias))?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)?;
        Ok(())
    }
}

/// BatchNorm with frozen statistics (eval mode) as a per-channel affine
/// map, `y = x·scale + shift` with `scale = γ·inv_std`,
/// `shift = β − μ·scale` and `inv_std = 1/√(σ² + ε)` (1-D tensors, one
/// value per channel): the one definition the eval-mode forward pass and
/// the forward-mode pass ([`crate::jvp`]) share.
pub(crate) struct FrozenBn {
    /// `1/√(σ² + ε)`.
    pub(crate) inv_std: Tensor,
    /// `γ·inv_std`.
    pub(crate) scale: Tensor,
    /// `β − μ·scale`.
    pub(crate) shift: Tensor,
}

impl FrozenBn {
    /// The map of γ `weight`, β `bias`, running mean μ and variance σ².
    pub(crate) fn new(
        weight: &Tensor,
        bias: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        eps: f64,
    ) -> Result<Self> {
        let inv_std = (running_var + eps)?.sqrt()?.recip()?;
        let scale = (weight * &inv_std)?;
        let shift = (bias - (running_mean * &scale)?)?;
        Ok(Self {
            inv_std,
            scale,
            shift,
        })
    }
}

#[derive(Clone, Debug)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl BasicBlock {
    fn new(b: &mut Builder<'_>, name: &str, inp: usize, out: usize, stride: usize) -> Result<Self> {
        let kn = Init::KaimingNormalFanOut;
        let conv1 = b.conv(&format!("{name}.conv1"), out, inp, 3, stride, kn)?;
        let bn1 = b.bn(&format!("{name}.bn1"), out)?;
        let conv2 = b.conv(&format!("{name}.conv2"), out, out, 3, 1, kn)?;
        let bn2 = b.bn(&format!("{name}.bn2"), out)?;
        let downsample = if stride != 1 || inp != out {
            let c = b.conv(&format!("{name}.downsample.0"), out, inp, 1, stride, kn)?;
            let n = b.bn(&format!("{name}.downsample.1"), out)?;
            Some((c, n))
        } else {
            None
        };
        Ok(Self {
            conv1,
            bn1,
            conv2,
            bn2,
            downsample,
        })
    }

    fn forward(&self, x: &Tensor, mode: BnMode, k: Kernels) -> Result<Tensor> {
        let out = self
            .bn1
            .forward(&self.conv1.forward(x, k)?, mode, After::Relu, k)?;
        let identity = match &self.downsample {
            Some((conv, bn)) => bn.forward(&conv.forward(x, k)?, mode, After::Nothing, k)?,
            None => x.clone(),
        };
        let out = self.conv2.forward(&out, k)?;
        self.bn2.forward(&out, mode, After::AddRelu(&identity), k)
    }
}

/// CIFAR ResNet-18: torchvision's BasicBlock layout `[2, 2, 2, 2]` with a
/// 3×3 stride-1 stem, no max-pool, global average pooling, optional dropout
/// and `Linear(8·width, num_classes)`.
///
/// Parameter names follow torchvision's `state_dict` so a checkpoint maps one
/// to one onto PyTorch's.
#[derive(Debug)]
pub struct ResNet {
    config: ResNetConfig,
    device: Device,
    params: Vec<Param>,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    layers: Vec<BasicBlock>,
    fc_weight: Tensor,
    fc_bias: Tensor,
    kernels: Kernels,
}

impl ResNet {
    /// A freshly initialised model; every value is drawn on the host from
    /// `rng` (use `muq_data::rng::stream(seed, INIT)`).
    pub fn new(config: &ResNetConfig, rng: &mut ChaCha8Rng, device: &Device) -> Result<Self> {
        Self::build(config, Source::Init(rng), device)
    }

    /// A model whose values are taken from `tensors` (names as in
    /// [`ResNet::state_dict`]); a missing tensor or a wrong shape is an error.
    pub fn from_tensors(
        config: &ResNetConfig,
        tensors: &HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        Self::build(config, Source::Tensors(tensors), device)
    }

    fn build(config: &ResNetConfig, source: Source<'_>, device: &Device) -> Result<Self> {
        config.validate()?;
        let mut b = Builder {
            source,
            device: device.clone(),
            params: Vec::new(),
        };
        let w = config.width;
        let conv1 = b.conv("conv1", w, 3, 3, 1, Init::DefaultUniform)?;
        let bn1 = b.bn("bn1", w)?;
        let mut layers = Vec::with_capacity(8);
        let mut inp = w;
        for (i, mult) in [1usize, 2, 4, 8].into_iter().enumerate() {
            let out = w * mult;
            let stride = if i == 0 { 1 } else { 2 };
            layers.push(BasicBlock::new(
                &mut b,
                &format!("layer{}.0", i + 1),
                inp,
                out,
                stride,
            )?);
            layers.push(BasicBlock::new(
                &mut b,
                &format!("layer{}.1", i + 1),
                out,
                out,
                1,
            )?);
            inp = out;
        }
        let feat = config.feature_dim();
        let fc_shape = [config.num_classes, feat];
        let fc_weight = b.tensor(
            "fc.weight".into(),
            &fc_shape,
            Init::DefaultUniform,
            ParamKind::Trainable,
        )?;
        let fan_in = fans(&fc_shape).0;
        let fc_bias = b.tensor(
            "fc.bias".into(),
            &[config.num_classes],
            Init::BiasUniform { fan_in },
            ParamKind::Trainable,
        )?;
        Ok(Self {
            config: config.clone(),
            device: device.clone(),
            params: b.params,
            conv1,
            bn1,
            layers,
            fc_weight: fc_weight.as_tensor().clone(),
            fc_bias: fc_bias.as_tensor().clone(),
            kernels: Kernels::from_env(),
        })
    }

    /// The architecture.
    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// The kernels the forward and backward passes run on (a runtime choice,
    /// not part of the architecture or of checkpoints).
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Selects the kernels for every later pass; the default comes from
    /// [`Kernels::from_env`].
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
    }

    /// The device the model lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every named tensor, in torchvision's `state_dict` order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The trainable parameters, in order.
    pub fn trainable(&self) -> impl Iterator<Item = &Param> {
        self.params
            .iter()
            .filter(|p| p.kind == ParamKind::Trainable)
    }

    /// The BatchNorm running statistics, in order.
    pub fn buffers(&self) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(|p| p.kind == ParamKind::Buffer)
    }

    /// Number of trainable scalars (11,173,962 at width 64, 10 classes).
    pub fn num_trainable(&self) -> usize {
        self.trainable().map(|p| p.var.elem_count()).sum()
    }

    /// A detached copy of every named tensor (parameters and buffers).
    pub fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        self.params
            .iter()
            .map(|p| Ok((p.name.clone(), p.var.as_detached_tensor().copy()?)))
            .collect()
    }

    /// An independent deep copy of the model on `device` (with the same
    /// kernel selection).
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let mut copy = Self::from_tensors(&self.config, &self.state_dict()?, device)?;
        copy.kernels = self.kernels;
        Ok(copy)
    }

    /// An independent deep copy of the model on its own device.
    pub fn try_clone(&self) -> Result<Self> {
        self.to_device(&self.device)
    }

    /// Overwrites every parameter and buffer with the values of `other`
    /// (same architecture).
    pub fn load_from(&self, other: &ResNet) -> Result<()> {
        if self.config != other.config {
            return Err(ResnetError::Config {
                field: "model",
                reason: format!(
                    "cannot copy a {:?} model into a {:?} one",
                    other.config, self.config
                ),
            });
        }
        for (dst, src) in self.params.iter().zip(&other.params) {
            dst.var
                .set(&src.var.as_detached_tensor().to_device(&self.device)?)?;
        }
        Ok(())
    }

    /// Logits `N×num_classes` for images `N×3×32×32`.
    ///
    /// `bn` selects BatchNorm's behaviour (and in [`BnMode::Train`] updates
    /// the running statistics). Dropout is applied only when the model has
    /// `dropout > 0` and `dropout_rng` is given; the mask is drawn on the host
    /// from that generator so the pass is reproducible.
    pub fn forward(
        &self,
        x: &Tensor,
        bn: BnMode,
        dropout_rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        let k = self.kernels;
        let mut h = self
            .bn1
            .forward(&self.conv1.forward(x, k)?, bn, After::Relu, k)?;
        for block in &self.layers {
            h = block.forward(&h, bn, k)?;
        }
        self.head(&h, dropout_rng)
    }

    /// Pooling, dropout and `fc`: the logits of `layer4`'s output `h`.
    fn head(&self, h: &Tensor, dropout_rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let mut feat = h.mean((2, 3))?;
        if let Some(rng) = dropout_rng
            && self.config.dropout > 0.0
        {
            feat = feat.broadcast_mul(&self.dropout_mask(feat.dims(), rng)?)?;
        }
        Ok(feat
            .matmul(&param(&self.fc_weight).t()?)?
            .broadcast_add(&param(&self.fc_bias))?)
    }

    /// [`ResNet::forward`] without the autograd graph, for evaluation: the
    /// same bits, but candle records nothing, so each layer's input is
    /// freed once the next has read it (a recorded pass keeps every
    /// intermediate tensor until its output is dropped). Gradients of the
    /// result are not available.
    ///
    /// # Errors
    /// As [`ResNet::forward`].
    pub fn infer(
        &self,
        x: &Tensor,
        bn: BnMode,
        dropout_rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        /// Clears the flag however the pass ends.
        struct Reset(bool);
        impl Drop for Reset {
            fn drop(&mut self) {
                INFERRING.set(self.0);
            }
        }
        let _reset = Reset(INFERRING.replace(true));
        self.forward(&x.detach(), bn, dropout_rng)
    }

    /// An inverted-dropout mask: 0 with probability p, else 1/(1−p).
    fn dropout_mask(&self, dims: &[usize], rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let p = self.config.dropout as f64;
        let keep = (1.0 / (1.0 - p)) as f32;
        let n: usize = dims.iter().product();
        let mask: Vec<f32> = (0..n)
            .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
            .collect();
        Ok(Tensor::from_vec(mask, dims, &self.device)?)
    }
}

/// Summed (not averaged) cross-entropy of `logits` (`N×K`) against `labels`
/// (`N`, u32), as `F.cross_entropy(..., reduction="sum")`.
pub fn cross_entropy_sum(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp.gather(&labels.unsqueeze(1)?, 1)?;
    Ok(picked.sum_all()?.neg()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bn(c: usize) -> BatchNorm2d {
        let dev = Device::Cpu;
        let var = |v: f32| Var::from_tensor(&Tensor::full(v, c, &dev).unwrap()).unwrap();
        BatchNorm2d {
            weight: Tensor::new(&[2.0f32][..c], &dev).unwrap(),
            bias: Tensor::new(&[0.5f32][..c], &dev).unwrap(),
            running_mean: var(0.0),
            running_var: var(1.0),
            eps: BN_EPS,
            momentum: 0.1,
        }
    }

    /// Worked example, one channel, x = [1, 2, 3, 6] as a 2×1×1×2 batch:
    /// batch mean 3, biased variance (4+1+0+9)/4 = 3.5, unbiased 14/3.
    /// Train mode (PyTorch `nn.BatchNorm2d(1)` with weight 2, bias 0.5):
    ///   y = 2·(x − 3)/√(3.5 + 1e-5) + 0.5
    ///   running_mean = 0.9·0 + 0.1·3 = 0.3
    ///   running_var  = 0.9·1 + 0.1·14/3 = 1.366667
    /// Eval mode then uses those: y = 2·(x − 0.3)/√(1.366667 + 1e-5) + 0.5.
    /// PyTorch 2.15.0 prints exactly these for `nn.BatchNorm2d(1)` with
    /// weight 2, bias 0.5: train y = [−1.638087, −0.569043, 0.5, 3.707130],
    /// running stats (0.3, 1.366667), eval y = [1.697554, 3.408346, 5.119137,
    /// 10.251512].
    #[test]
    fn batchnorm_matches_the_worked_example() -> Result<()> {
        for k in Kernels::ALL {
            batchnorm_worked_example(k)?;
        }
        Ok(())
    }

    fn batchnorm_worked_example(k: Kernels) -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[1.0f32, 2.0, 3.0, 6.0], &dev)?.reshape((2, 1, 1, 2))?;
        let layer = bn(1);
        let y = layer
            .forward(&x, BnMode::Train, After::Nothing, k)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let s = (3.5f64 + 1e-5).sqrt();
        for (got, xi) in y.iter().zip([1.0, 2.0, 3.0, 6.0]) {
            let want = 2.0 * (xi - 3.0) / s + 0.5;
            assert!((*got as f64 - want).abs() < 1e-5, "{k}: {got} vs {want}");
        }
        let rm = layer.running_mean.as_tensor().to_vec1::<f32>()?[0];
        let rv = layer.running_var.as_tensor().to_vec1::<f32>()?[0];
        assert!((rm - 0.3).abs() < 1e-6, "{k}: {rm}");
        assert!(
            (rv as f64 - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-6,
            "{k}: {rv}"
        );
        let y = layer
            .forward(&x, BnMode::Eval, After::Nothing, k)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let s = (0.9 + 0.1 * 14.0 / 3.0 + 1e-5f64).sqrt();
        for (got, xi) in y.iter().zip([1.0, 2.0, 3.0, 6.0]) {
            let want = 2.0 * (xi - 0.3) / s + 0.5;
            assert!((*got as f64 - want).abs() < 1e-5, "{k}: {got} vs {want}");
        }
        // Eval mode leaves the buffers alone.
        assert_eq!(layer.running_mean.as_tensor().to_vec1::<f32>()?[0], rm);
        Ok(())
    }

    #[test]
    fn batchnorm_train_mode_rejects_a_single_value_per_channel() {
        let x = Tensor::new(&[1.0f32], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 1))
            .unwrap();
        for k in Kernels::ALL {
            let err = bn(1)
                .forward(&x, BnMode::Train, After::Nothing, k)
                .unwrap_err();
            assert!(err.to_string().contains("batch_size"), "{k}: {err}");
        }
    }

    #[test]
    fn cross_entropy_sum_matches_pytorch() -> Result<()> {
        // F.cross_entropy(torch.tensor([[1., 2., 3.], [0., 0., 0.]]),
        //                 torch.tensor([2, 0]), reduction="sum")  (PyTorch 2.15.0: 1.5062182)
        //   = (log(e+e²+e³) − 3) + log 3 = 0.4076059645 + 1.0986122887 = 1.5062182532
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[1.0f32, 2.0, 3.0], [0.0, 0.0, 0.0]], &dev)?;
        let y = Tensor::new(&[2u32, 0], &dev)?;
        let l = cross_entropy_sum(&logits, &y)?.to_scalar::<f32>()?;
        assert!((l - 1.506_218_3).abs() < 1e-6, "{l}");
        Ok(())
    }
}
