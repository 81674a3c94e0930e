//! Each muq kernel against candle's stock op: values and gradients.
//!
//! Tolerance: the two paths sum the same products in different orders (and
//! BatchNorm's statistics are summed in f64 here, in f32 by candle), so they
//! agree to f32 rounding: `|a − b| ≤ 1e-4 · (1 + max |b|)` element-wise,
//! with inputs of unit scale.

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::*;
use crate::model::{After, BatchNorm2d};

const TOL: f32 = 1e-4;

fn randn(dims: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let g = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let w = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = 1.0 + w.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            (a - b).abs() <= TOL * scale,
            "{what}: element {i}: muq {a} vs stock {b} (scale {scale})"
        );
    }
}

/// (n, c, h, w, filters, k, stride, pad)
type ConvShape = (usize, usize, usize, usize, usize, usize, usize, usize);

const CONV_SHAPES: &[ConvShape] = &[
    (2, 3, 7, 5, 4, 3, 1, 1),   // the stem's 3 input channels, odd sides
    (1, 5, 9, 9, 6, 3, 2, 1),   // batch 1, stride 2
    (3, 17, 8, 8, 19, 1, 2, 0), // 1×1 stride 2 (downsample), C ∤ 16
    (2, 17, 6, 6, 5, 1, 1, 0),  // 1×1 stride 1
    (4, 20, 4, 4, 33, 3, 1, 1), // late-stage shape: images grouped
    (37, 8, 4, 4, 8, 3, 1, 1),  // several groups and a remainder
    (3, 6, 10, 10, 7, 3, 2, 1), // even side, stride 2
    (2, 4, 5, 5, 3, 5, 1, 2),   // 5×5 filters
    // Planes large enough for the shifted-GEMM path (no im2col):
    (1, 3, 24, 24, 4, 3, 1, 1),  // the stem at batch 1 (im2col: C < 16)
    (2, 16, 32, 32, 5, 3, 1, 1), // 32×32, 3×3 (shifted)
    (5, 5, 20, 18, 7, 3, 1, 1),  // two images per group and a remainder
    (3, 17, 16, 16, 9, 1, 1, 0), // 1×1 stride 1
    (2, 6, 32, 32, 5, 5, 1, 2),  // 5×5 filters
];

/// `(y, dx, dw)` of `Σ r ⊙ conv(x, w)` on `kernels`.
fn conv_run(
    x: &Tensor,
    w: &Tensor,
    r: &Tensor,
    stride: usize,
    pad: usize,
    kernels: Kernels,
) -> (Tensor, Tensor, Tensor) {
    let xv = Var::from_tensor(x).unwrap();
    let wv = Var::from_tensor(w).unwrap();
    let y = conv2d(xv.as_tensor(), wv.as_tensor(), stride, pad, kernels).unwrap();
    let grads = (&y * r).unwrap().sum_all().unwrap().backward().unwrap();
    let dx = grads.get(xv.as_tensor()).expect("dx").clone();
    let dw = grads.get(wv.as_tensor()).expect("dw").clone();
    (y, dx, dw)
}

#[test]
fn conv2d_matches_stock_values_and_gradients() {
    for (i, &(n, c, h, wd, o, k, stride, pad)) in CONV_SHAPES.iter().enumerate() {
        let seed = 10 * i as u64;
        let x = randn(&[n, c, h, wd], seed);
        let w = randn(&[o, c, k, k], seed + 1);
        let oh = (h + 2 * pad - k) / stride + 1;
        let ow = (wd + 2 * pad - k) / stride + 1;
        let r = randn(&[n, o, oh, ow], seed + 2);
        let (ys, dxs, dws) = conv_run(&x, &w, &r, stride, pad, Kernels::Stock);
        let (ym, dxm, dwm) = conv_run(&x, &w, &r, stride, pad, Kernels::Muq);
        let tag = format!(
            "x {:?} w {:?} stride {stride} pad {pad}",
            x.dims(),
            w.dims()
        );
        assert_close(&format!("y, {tag}"), &ym, &ys);
        assert_close(&format!("dx, {tag}"), &dxm, &dxs);
        assert_close(&format!("dw, {tag}"), &dwm, &dws);
        // The stand-alone gradient functions agree with the op's.
        let dx = conv2d_input_grad(x.dims(), &w, &r, stride, pad, Kernels::Muq).unwrap();
        let dw = conv2d_weight_grad(&x, w.dims(), &r, stride, pad, Kernels::Muq).unwrap();
        assert_close(&format!("conv2d_input_grad, {tag}"), &dx, &dxs);
        assert_close(&format!("conv2d_weight_grad, {tag}"), &dw, &dws);
        let dx = conv2d_input_grad(x.dims(), &w, &r, stride, pad, Kernels::Stock).unwrap();
        let dw = conv2d_weight_grad(&x, w.dims(), &r, stride, pad, Kernels::Stock).unwrap();
        assert_close(&format!("stock conv2d_input_grad, {tag}"), &dx, &dxs);
        assert_close(&format!("stock conv2d_weight_grad, {tag}"), &dw, &dws);
    }
}

#[test]
fn both_convolution_paths_are_covered() {
    let mut shifted = 0;
    for &(n, c, h, wd, o, k, stride, pad) in CONV_SHAPES {
        let g = conv::Geom::new(&[n, c, h, wd], &[o, c, k, k], stride, pad).unwrap();
        shifted += usize::from(conv::uses_shifted_path(&g));
    }
    assert!(
        shifted >= 3 && shifted < CONV_SHAPES.len(),
        "{shifted} shifted"
    );
}

#[test]
fn conv2d_skips_the_input_gradient_of_a_constant_input() {
    let x = randn(&[2, 3, 6, 6], 1);
    let w = Var::from_tensor(&randn(&[4, 3, 3, 3], 2)).unwrap();
    let y = conv2d(&x, w.as_tensor(), 1, 1, Kernels::Muq).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none(), "the image batch needs no gradient");
    let (_, _, dw) = conv_run(
        &x,
        w.as_tensor(),
        &y.ones_like().unwrap(),
        1,
        1,
        Kernels::Stock,
    );
    assert_close("dw", grads.get(w.as_tensor()).expect("dw"), &dw);
}

#[test]
fn conv2d_rejects_shapes_that_do_not_fit() {
    let x = randn(&[1, 3, 4, 4], 1);
    let w = randn(&[2, 5, 3, 3], 2);
    let err = conv2d(&x, &w, 1, 1, Kernels::Muq).unwrap_err();
    assert!(err.to_string().contains("do not fit"), "{err}");
}

/// (n, c, h, w)
const BN_SHAPES: &[(usize, usize, usize, usize)] = &[
    (2, 3, 5, 7),  // odd sides, a remainder past the 16 lanes
    (1, 17, 4, 4), // batch 1, C ∤ 16
    (5, 4, 1, 1),  // 1×1 planes
    (3, 20, 8, 8), // several full lane blocks
];

struct BnRun {
    y: Tensor,
    grads: Vec<Tensor>,
    running: Vec<Tensor>,
}

fn bn_run(dims: &[usize], seed: u64, mode: BnMode, after: u8, kernels: Kernels) -> BnRun {
    let c = dims[1];
    let vals = |s: u64, shift: f32| -> Vec<f32> {
        randn(&[c], s)
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(|v| v * 0.5 + shift)
            .collect()
    };
    let var: Vec<f32> = vals(seed + 4, 0.0).iter().map(|v| v.abs() + 0.5).collect();
    let layer = BatchNorm2d::with_values(
        [
            vals(seed + 1, 1.0),
            vals(seed + 2, 0.0),
            vals(seed + 3, 0.0),
            var,
        ],
        &Device::Cpu,
    )
    .unwrap();
    // Offset inputs: a channel mean far from zero tests the centring.
    let x = Var::from_tensor(&randn(dims, seed).affine(2.0, 3.0).unwrap()).unwrap();
    let res = Var::from_tensor(&randn(dims, seed + 5)).unwrap();
    let r = randn(dims, seed + 6);
    let then = match after {
        0 => After::Nothing,
        1 => After::Relu,
        _ => After::AddRelu(res.as_tensor()),
    };
    let y = layer.forward(x.as_tensor(), mode, then, kernels).unwrap();
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let [w, b, rm, rv] = layer.tensors();
    let mut g = vec![
        grads.get(x.as_tensor()).expect("dx").clone(),
        grads.get(w).expect("dγ").clone(),
        grads.get(b).expect("dβ").clone(),
    ];
    if after == 2 {
        g.push(grads.get(res.as_tensor()).expect("dr").clone());
    }
    BnRun {
        y,
        grads: g,
        running: vec![rm.copy().unwrap(), rv.copy().unwrap()],
    }
}

#[test]
fn batch_norm_matches_stock_values_gradients_and_running_stats() {
    let names = ["dx", "dγ", "dβ", "dresidual"];
    for (i, dims) in BN_SHAPES.iter().enumerate() {
        let dims = [dims.0, dims.1, dims.2, dims.3];
        for mode in [BnMode::Train, BnMode::Eval] {
            if mode == BnMode::Train && dims[0] * dims[2] * dims[3] < 2 {
                continue;
            }
            for after in 0..3u8 {
                let seed = 100 * i as u64;
                let s = bn_run(&dims, seed, mode, after, Kernels::Stock);
                let m = bn_run(&dims, seed, mode, after, Kernels::Muq);
                let tag = format!("{dims:?} {mode:?} after {after}");
                assert_close(&format!("y, {tag}"), &m.y, &s.y);
                assert_eq!(m.grads.len(), s.grads.len());
                for (k, (a, b)) in m.grads.iter().zip(&s.grads).enumerate() {
                    assert_close(&format!("{}, {tag}", names[k]), a, b);
                }
                assert_close(
                    &format!("running mean, {tag}"),
                    &m.running[0],
                    &s.running[0],
                );
                assert_close(&format!("running var, {tag}"), &m.running[1], &s.running[1]);
            }
        }
    }
}

#[test]
fn kernels_parse_and_print() {
    for k in Kernels::ALL {
        assert_eq!(k.as_str().parse::<Kernels>().unwrap(), k);
        assert_eq!(k.to_string(), k.as_str());
    }
    assert_eq!(" MUQ ".parse::<Kernels>().unwrap(), Kernels::Muq);
    let err = "fast".parse::<Kernels>().unwrap_err();
    assert!(err.to_string().contains("stock"), "{err}");
    assert_eq!(Kernels::default(), Kernels::Muq);
}

#[test]
fn compute_path_names_the_kernels_and_the_cpu_level() {
    let level = cpu_level();
    assert_eq!(
        compute_path(Kernels::Muq, &Device::Cpu),
        format!("muq/{level}")
    );
    assert_eq!(
        compute_path(Kernels::Stock, &Device::Cpu),
        format!("stock/{level}")
    );
    #[cfg(target_arch = "x86_64")]
    {
        let v3 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        let expected = if simd::has_v4() {
            "x86-64-v4"
        } else if v3 {
            "x86-64-v3"
        } else {
            "x86-64"
        };
        assert_eq!(level, expected);
    }
}
