//! muq's own backward pass through the convolutions and BatchNorms.
//!
//! candle's backward pass adds every gradient it computes to an
//! accumulator it first fills with zeros, one per tensor of the graph: for
//! a ResNet-18 step, gigabytes of memory traffic that do no arithmetic. A
//! [`Recorded`] pass runs the same kernels outside candle's graph and keeps
//! what their backward passes read; its backward pass walks the blocks in
//! reverse and hands each gradient on, adding only where two paths meet
//! (a block's input feeds its first convolution and its shortcut). Only
//! the head — pooling, dropout, `fc` and whatever loss the caller builds on
//! the logits — stays on candle's graph.
//!
//! The gradients are the bits candle's pass computes: the same kernels in
//! the same order, a sum of two terms wherever candle sums two, and every
//! parameter's gradient passed through `+ 0.0` as candle's zero-filled
//! accumulator passes it (turning a −0 into +0; elsewhere a zero's sign
//! never reaches a non-zero value).

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use rand_chacha::ChaCha8Rng;

use super::{After, BasicBlock, BatchNorm2d, BnMode, Conv2d, ResNet};
use crate::kernels::{self, BnRecord, Kernels};
use crate::{ResnetError, Result};

/// A forward pass of [`ResNet::forward_recorded`]: the logits, and what its
/// backward pass ([`Recorded::backward`]) reads.
pub struct Recorded {
    /// The logits, `N×num_classes`, on candle's graph from the pooled
    /// features on: build any loss on them.
    pub logits: Tensor,
    tape: Option<Tape>,
}

impl std::fmt::Debug for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorded")
            .field("logits", &self.logits)
            .field("own_backward", &self.tape.is_some())
            .finish()
    }
}

impl Recorded {
    /// The gradients of `loss` (a scalar built on [`Recorded::logits`],
    /// possibly with terms of the parameters themselves) for every tensor
    /// the loss reached, in candle's [`GradStore`], as `loss.backward()`
    /// after [`ResNet::forward`] would give them, bit for bit.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn backward(self, loss: &Tensor) -> Result<GradStore> {
        backward(loss, [self])
    }
}

/// The gradients of `loss`, a scalar built on the logits of one or more
/// recorded passes (of one model or several): candle's backward pass
/// through the loss and the heads, then each pass's own. Where the
/// passes share parameters, their gradients are added in the order of
/// `passes` (after any term of the parameters themselves); with more than
/// two terms that order may differ from candle's, so the last bits may
/// too.
///
/// # Errors
/// Tensor errors.
pub fn backward(loss: &Tensor, passes: impl IntoIterator<Item = Recorded>) -> Result<GradStore> {
    let mut store = loss.backward()?;
    for pass in passes {
        if let Some(tape) = pass.tape {
            tape.backward(&mut store)?;
        }
    }
    Ok(store)
}

/// What the backward pass reads, layer by layer.
struct Tape {
    kernels: Kernels,
    stem: (ConvTape, BnTape),
    blocks: Vec<BlockTape>,
    /// `layer4`'s output as the head's leaf: its gradient enters the tape.
    features: Var,
}

/// A convolution's filter (the parameter: its gradient is stored under it)
/// and input.
struct ConvTape {
    w: Tensor,
    stride: usize,
    padding: usize,
    x: Tensor,
}

/// A BatchNorm's record and its γ and β.
struct BnTape {
    rec: BnRecord,
    gamma: Tensor,
    beta: Tensor,
}

struct BlockTape {
    conv1: ConvTape,
    bn1: BnTape,
    down: Option<(ConvTape, BnTape)>,
    conv2: ConvTape,
    bn2: BnTape,
}

impl ResNet {
    /// [`ResNet::forward`], recorded for muq's own backward pass
    /// ([`Recorded::backward`]) when the model runs muq's kernels on the
    /// CPU; otherwise a plain forward pass on candle's graph, whose
    /// [`Recorded::backward`] is candle's. The logits, the BatchNorm
    /// updates and the gradients are the bits of `forward` and
    /// `loss.backward()`; the backward pass is faster and holds less
    /// memory.
    ///
    /// Take the gradients with [`Recorded::backward`] (or [`backward`]):
    /// `loss.backward()` alone stops at the head, and would leave every
    /// convolution and BatchNorm parameter without a gradient.
    ///
    /// # Errors
    /// As [`ResNet::forward`].
    pub fn forward_recorded(
        &self,
        x: &Tensor,
        bn: BnMode,
        dropout_rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Recorded> {
        let k = self.kernels;
        if !(k.is_muq() && kernels::runs_on(x)) {
            return Ok(Recorded {
                logits: self.forward(x, bn, dropout_rng)?,
                tape: None,
            });
        }
        let stem = conv_bn(&self.conv1, &self.bn1, &x.detach(), bn, After::Relu, k)?;
        let mut h = stem.1.rec.y.clone();
        let mut blocks = Vec::with_capacity(self.layers.len());
        for block in &self.layers {
            let t = block.forward_recorded(&h, bn, k)?;
            h = t.bn2.rec.y.clone();
            blocks.push(t);
        }
        let features = Var::from_tensor(&h)?;
        let logits = self.head(features.as_tensor(), dropout_rng)?;
        Ok(Recorded {
            logits,
            tape: Some(Tape {
                kernels: k,
                stem,
                blocks,
                features,
            }),
        })
    }
}

/// `after(bn(conv(x)))` outside candle's graph, recorded.
fn conv_bn(
    conv: &Conv2d,
    norm: &BatchNorm2d,
    x: &Tensor,
    mode: BnMode,
    after: After<'_>,
    k: Kernels,
) -> Result<(ConvTape, BnTape)> {
    let y = kernels::conv2d(x, &conv.weight.detach(), conv.stride, conv.padding, k)?;
    let rec = norm.forward_recorded(&y, mode, after)?;
    let [gamma, beta] = norm.affine().map(Tensor::clone);
    Ok((
        ConvTape {
            w: conv.weight.clone(),
            stride: conv.stride,
            padding: conv.padding,
            x: x.clone(),
        },
        BnTape { rec, gamma, beta },
    ))
}

impl BasicBlock {
    /// [`BasicBlock::forward`] outside candle's graph, in the same order.
    fn forward_recorded(&self, x: &Tensor, mode: BnMode, k: Kernels) -> Result<BlockTape> {
        let (conv1, bn1) = conv_bn(&self.conv1, &self.bn1, x, mode, After::Relu, k)?;
        let down = match &self.downsample {
            Some((conv, norm)) => Some(conv_bn(conv, norm, x, mode, After::Nothing, k)?),
            None => None,
        };
        let identity = down.as_ref().map_or(x, |(_, b)| &b.rec.y);
        let (conv2, bn2) = conv_bn(
            &self.conv2,
            &self.bn2,
            &bn1.rec.y,
            mode,
            After::AddRelu(identity),
            k,
        )?;
        Ok(BlockTape {
            conv1,
            bn1,
            down,
            conv2,
            bn2,
        })
    }
}

impl Tape {
    /// Continues candle's backward pass (in `store`) from the features
    /// through every block and the stem.
    fn backward(self, store: &mut GradStore) -> Result<()> {
        let Some(mut dy) = store.remove(self.features.as_tensor()) else {
            // The loss did not reach the features.
            return Ok(());
        };
        let k = self.kernels;
        for block in self.blocks.into_iter().rev() {
            dy = block.backward(&dy, k, store)?;
        }
        let (conv, norm) = self.stem;
        let (dc, _) = norm.backward(&dy, store)?;
        // The image batch needs no gradient.
        conv.backward(&dc, k, false, store)?;
        Ok(())
    }
}

impl BlockTape {
    /// The gradient of the block's input, given its output's; the
    /// parameters' gradients go to `store`.
    fn backward(self, dy: &Tensor, k: Kernels, store: &mut GradStore) -> Result<Tensor> {
        let (dc2, dr) = self.bn2.backward(dy, store)?;
        let da1 = self.conv2.backward(&dc2, k, true, store)?;
        let (dc1, _) = self.bn1.backward(&da1, store)?;
        let dx = self.conv1.backward(&dc1, k, true, store)?;
        let dr = dr.ok_or(missing("the residual's gradient"))?;
        let shortcut = match self.down {
            Some((conv, norm)) => {
                let (dc, _) = norm.backward(&dr, store)?;
                conv.backward(&dc, k, true, store)?
            }
            None => dr,
        };
        Ok((dx + shortcut)?)
    }
}

impl ConvTape {
    /// The input gradient (an empty tensor when `need_dx` is false); the
    /// filter gradient goes to `store`.
    fn backward(
        self,
        dy: &Tensor,
        k: Kernels,
        need_dx: bool,
        store: &mut GradStore,
    ) -> Result<Tensor> {
        let (dx, dw) = kernels::conv2d_backward(
            &self.x,
            &self.w,
            dy,
            (self.stride, self.padding),
            k == Kernels::Winograd,
            (need_dx, true),
        )?;
        accumulate(store, &self.w, dw.ok_or(missing("the filter gradient"))?)?;
        match dx {
            Some(dx) => Ok(dx),
            None if !need_dx => Ok(Tensor::zeros(0, self.x.dtype(), self.x.device())?),
            None => Err(missing("the input gradient")),
        }
    }
}

impl BnTape {
    /// The input gradient and, for `relu(bn(x) + r)`, the residual's; γ's
    /// and β's go to `store`.
    fn backward(self, dy: &Tensor, store: &mut GradStore) -> Result<(Tensor, Option<Tensor>)> {
        let g = self.rec.backward(dy)?;
        let c = self.gamma.elem_count();
        let (dgamma, dbeta) = g.dwb.split_at(c);
        accumulate(store, &self.gamma, dgamma.to_vec())?;
        accumulate(store, &self.beta, dbeta.to_vec())?;
        Ok((g.dx, g.dr))
    }
}

/// Stores `g` as the gradient of the parameter `p`, added to what the head's
/// backward pass left there (a loss term of the parameters themselves),
/// after `+ 0.0` as candle's zero-filled accumulator would.
fn accumulate(store: &mut GradStore, p: &Tensor, mut g: Vec<f32>) -> Result<()> {
    for v in &mut g {
        *v += 0.0;
    }
    let g = Tensor::from_vec(g, p.dims(), p.device())?;
    let sum = match store.remove(p) {
        Some(prev) => (prev + g)?,
        None => g,
    };
    store.insert(p, sum);
    Ok(())
}

fn missing(what: &str) -> ResnetError {
    ResnetError::Candle(candle_core::Error::msg(format!(
        "muq's backward pass: a kernel returned no {what}"
    )))
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::kernels::at_each_level;
    use crate::{Gradients, ResNetConfig, cross_entropy_sum};

    /// Every value's bits: gradients, logits, loss, running statistics.
    fn bits(ts: &[Tensor]) -> Vec<u32> {
        ts.iter()
            .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .map(f32::to_bits)
            .collect()
    }

    /// One pass and its gradients, through candle's backward pass (`own`
    /// false) or muq's; with `l2`, the loss has a term of `conv1`'s filter
    /// itself, whose gradient candle's part of the pass computes.
    fn pass(
        kernels: Kernels,
        mode: BnMode,
        dropout: f32,
        l2: bool,
        own: bool,
    ) -> (Vec<u32>, Vec<u32>, bool) {
        let dev = Device::Cpu;
        // Width 16: Winograd from layer1 on, outer-product filter
        // gradients at layer4's 128 channels.
        let config = ResNetConfig {
            width: 16,
            dropout,
            ..Default::default()
        };
        let mut model = ResNet::new(
            &config,
            &mut muq_data::rng::stream(7, muq_data::rng::INIT),
            &dev,
        )
        .unwrap();
        model.set_kernels(kernels);
        let mut rng = muq_data::rng::stream(3, muq_data::rng::DROPOUT);
        let mut data = muq_data::rng::stream(5, muq_data::rng::INIT);
        let pixels: Vec<f32> = (0..3 * 3 * 32 * 32)
            .map(|_| rand::Rng::random::<f32>(&mut data) * 2.0 - 1.0)
            .collect();
        let x = Tensor::from_vec(pixels, (3, 3, 32, 32), &dev).unwrap();
        let y = Tensor::from_vec(vec![1u32, 7, 1], 3, &dev).unwrap();
        let loss_of = |logits: &Tensor| {
            let mut loss = (cross_entropy_sum(logits, &y).unwrap() / 3.0).unwrap();
            if l2 {
                let w = model.trainable().next().unwrap().var.as_tensor();
                loss = (loss + w.sqr().unwrap().sum_all().unwrap()).unwrap();
            }
            loss
        };
        let (logits, loss, store, taped) = if own {
            let rec = model.forward_recorded(&x, mode, Some(&mut rng)).unwrap();
            let taped = rec.tape.is_some();
            let logits = rec.logits.clone();
            let loss = loss_of(&logits);
            (logits, loss.clone(), rec.backward(&loss).unwrap(), taped)
        } else {
            let logits = model.forward(&x, mode, Some(&mut rng)).unwrap();
            let loss = loss_of(&logits);
            let store = loss.backward().unwrap();
            (logits, loss, store, false)
        };
        let grads = Gradients::from_store(&model, &store).unwrap();
        let buffers: Vec<Tensor> = model.buffers().map(|p| p.var.as_tensor().clone()).collect();
        let mut out = vec![logits, loss.to_dtype(DType::F32).unwrap()];
        out.extend(buffers);
        (bits(grads.tensors()), bits(&out), taped)
    }

    #[test]
    fn own_backward_pass_gives_candles_bits() {
        let cases = [
            (BnMode::Train, 0.0, false),
            (BnMode::Eval, 0.0, false),
            (BnMode::Train, 0.5, true),
        ];
        for kernels in [Kernels::Muq, Kernels::Winograd] {
            at_each_level(|level| {
                for &(mode, dropout, l2) in &cases {
                    let (want_g, want_v, _) = pass(kernels, mode, dropout, l2, false);
                    let (got_g, got_v, taped) = pass(kernels, mode, dropout, l2, true);
                    assert!(taped, "{kernels:?} on the CPU records its pass");
                    let case =
                        format!("{kernels:?} at {level}, {mode:?}, dropout {dropout}, l2 {l2}");
                    assert_eq!(want_v, got_v, "{case}: logits, loss or running statistics");
                    assert_eq!(want_g.len(), got_g.len());
                    let differ = want_g.iter().zip(&got_g).filter(|(a, b)| a != b).count();
                    assert_eq!(differ, 0, "{case}: {differ} gradient values differ");
                }
            });
        }
    }

    /// Two recorded passes of one model under one loss (each parameter's
    /// gradient a sum of two terms, as candle's): the bits of candle's pass.
    #[test]
    fn two_passes_under_one_loss_give_candles_bits() {
        let dev = Device::Cpu;
        let config = ResNetConfig {
            width: 8,
            ..Default::default()
        };
        let model = ResNet::new(
            &config,
            &mut muq_data::rng::stream(9, muq_data::rng::INIT),
            &dev,
        )
        .unwrap();
        let mut data = muq_data::rng::stream(4, muq_data::rng::INIT);
        let mut batch = || {
            let pixels: Vec<f32> = (0..2 * 3 * 32 * 32)
                .map(|_| rand::Rng::random::<f32>(&mut data) - 0.5)
                .collect();
            Tensor::from_vec(pixels, (2, 3, 32, 32), &dev).unwrap()
        };
        let (xa, xb) = (batch(), batch());
        let y = Tensor::from_vec(vec![3u32, 4], 2, &dev).unwrap();
        let loss = |a: &Tensor, b: &Tensor| {
            (cross_entropy_sum(a, &y).unwrap() - cross_entropy_sum(b, &y).unwrap()).unwrap()
        };
        let (a, b) = (
            model.forward(&xa, BnMode::Eval, None).unwrap(),
            model.forward(&xb, BnMode::Eval, None).unwrap(),
        );
        let want = Gradients::from_store(&model, &loss(&a, &b).backward().unwrap()).unwrap();
        let (a, b) = (
            model.forward_recorded(&xa, BnMode::Eval, None).unwrap(),
            model.forward_recorded(&xb, BnMode::Eval, None).unwrap(),
        );
        let l = loss(&a.logits, &b.logits);
        let got = Gradients::from_store(&model, &backward(&l, [a, b]).unwrap()).unwrap();
        assert!(bits(want.tensors()) == bits(got.tensors()));
    }

    #[test]
    fn stock_kernels_take_candles_backward_pass() {
        let (want_g, want_v, _) = pass(Kernels::Stock, BnMode::Train, 0.0, false, false);
        let (got_g, got_v, taped) = pass(Kernels::Stock, BnMode::Train, 0.0, false, true);
        assert!(!taped);
        assert!(
            want_g == got_g && want_v == got_v,
            "stock: the same pass twice differs"
        );
    }
}
