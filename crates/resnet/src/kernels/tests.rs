//! Each muq kernel against candle's stock op: values and gradients, at
//! every instruction-set level this machine runs ([`at_each_level`]).
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
        let tag = format!(
            "x {:?} w {:?} stride {stride} pad {pad}",
            x.dims(),
            w.dims()
        );
        let dx = conv2d_input_grad(x.dims(), &w, &r, stride, pad, Kernels::Stock).unwrap();
        let dw = conv2d_weight_grad(&x, w.dims(), &r, stride, pad, Kernels::Stock).unwrap();
        assert_close(&format!("stock conv2d_input_grad, {tag}"), &dx, &dxs);
        assert_close(&format!("stock conv2d_weight_grad, {tag}"), &dw, &dws);
        at_each_level(|level| {
            let tag = format!("{tag}, {level}");
            let (ym, dxm, dwm) = conv_run(&x, &w, &r, stride, pad, Kernels::Muq);
            assert_close(&format!("y, {tag}"), &ym, &ys);
            assert_close(&format!("dx, {tag}"), &dxm, &dxs);
            assert_close(&format!("dw, {tag}"), &dwm, &dws);
            // The stand-alone gradient functions agree with the op's.
            let dx = conv2d_input_grad(x.dims(), &w, &r, stride, pad, Kernels::Muq).unwrap();
            let dw = conv2d_weight_grad(&x, w.dims(), &r, stride, pad, Kernels::Muq).unwrap();
            assert_close(&format!("conv2d_input_grad, {tag}"), &dx, &dxs);
            assert_close(&format!("conv2d_weight_grad, {tag}"), &dw, &dws);
        });
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
    let ones = Tensor::ones(&[2, 4, 6, 6], candle_core::DType::F32, &Device::Cpu).unwrap();
    let (_, _, dw) = conv_run(&x, w.as_tensor(), &ones, 1, 1, Kernels::Stock);
    at_each_level(|level| {
        let y = conv2d(&x, w.as_tensor(), 1, 1, Kernels::Muq).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_none(), "the image batch needs no gradient");
        assert_close(
            &format!("dw, {level}"),
            grads.get(w.as_tensor()).expect("dw"),
            &dw,
        );
    });
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

/// `relu(bn(x))`'s backward pass recomputes its ReLU mask from `x`; it
/// must give, bit for bit, what the output's sign gives — here
/// `relu(bn(x) + 0)`, whose mask is read from its output — in training
/// and eval mode, at every level, with inputs that put some
/// pre-activations exactly on zero.
#[test]
fn batch_norm_relu_mask_from_the_input_gives_the_outputs_bits() {
    let g = bn::Geom { n: 3, c: 5, hw: 37 };
    let len = g.n * g.c * g.hw;
    let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut x = flat(randn(&[len], 21));
    // Channel 0 all one value, its batch and running mean: it centres to
    // exactly zero, and its `β = 0` puts every pre-activation on zero.
    for i in 0..g.n {
        x[i * g.c * g.hw..][..g.hw].fill(0.75);
    }
    let dy = flat(randn(&[len], 22));
    let wb: Vec<f32> = [1.5, -0.5, 0.25, 2.0, 1.0, 0.0, 0.3, -0.2, 0.1, 0.0].to_vec();
    let zeros = vec![0f32; len];
    at_each_level(|level| {
        for train in [true, false] {
            let s = if train {
                bn::batch_stats(&g, &x, 1e-5)
            } else {
                bn::running_stats(
                    &[0.75, -0.2, 0.0, 0.3, 0.05],
                    &[1.0, 0.5, 2.0, 0.8, 1.2],
                    1e-5,
                )
            };
            let y = bn::forward(&g, &x, &wb, &s, bn::Act::Relu, None);
            let y0 = bn::forward(&g, &x, &wb, &s, bn::Act::AddRelu, Some(&zeros));
            assert_eq!(
                y, y0,
                "{level}, train {train}: relu(bn(x)) = relu(bn(x) + 0)"
            );
            assert!(y.contains(&0.0) && y.iter().any(|&v| v > 0.0));
            let (dx, dwb, dr) = bn::backward(&g, &x, &wb, &s, bn::Act::Relu, &y, &dy, train);
            let (dx0, dwb0, _) = bn::backward(&g, &x, &wb, &s, bn::Act::AddRelu, &y0, &dy, train);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert!(dr.is_none());
            assert_eq!(bits(&dx), bits(&dx0), "{level}, train {train}: dx");
            assert_eq!(bits(&dwb), bits(&dwb0), "{level}, train {train}: dγ, dβ");
        }
    });
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
                at_each_level(|level| {
                    let m = bn_run(&dims, seed, mode, after, Kernels::Muq);
                    let tag = format!("{dims:?} {mode:?} after {after}, {level}");
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
                });
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
    for name in ["stock", "muq", "winograd"] {
        assert!(err.to_string().contains(name), "{err}");
    }
    assert!(Kernels::Winograd.is_muq() && Kernels::Muq.is_muq() && !Kernels::Stock.is_muq());
    assert_eq!(Kernels::default(), Kernels::Muq);
}

#[test]
fn compute_path_names_the_kernels_and_the_cpu_level() {
    let level = cpu_level();
    let detected = CpuLevel::detected();
    // Unforced (unless this whole process runs under MUQ_CPU_LEVEL).
    let muq = match CpuLevel::try_from_env().unwrap() {
        Some(forced) if forced != detected => format!("muq/{forced} (forced on {detected})"),
        _ => format!("muq/{level}"),
    };
    assert_eq!(compute_path(Kernels::Muq, &Device::Cpu), muq);
    // Winograd changes the bits, so it is a path of its own.
    assert_eq!(
        compute_path(Kernels::Winograd, &Device::Cpu),
        muq.replacen("muq/", "winograd/", 1)
    );
    assert_eq!(
        compute_path(Kernels::Stock, &Device::Cpu),
        format!("stock/{detected}")
    );
    #[cfg(target_arch = "x86_64")]
    {
        let has = |f: &[&str]| {
            f.iter().all(|f| match *f {
                "avx2" => std::arch::is_x86_feature_detected!("avx2"),
                "fma" => std::arch::is_x86_feature_detected!("fma"),
                "f16c" => std::arch::is_x86_feature_detected!("f16c"),
                "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
                "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
                "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
                "avx512dq" => std::arch::is_x86_feature_detected!("avx512dq"),
                _ => unreachable!(),
            })
        };
        let v3 = has(&["avx2", "fma", "f16c"]);
        let expected = if v3 && has(&["avx512f", "avx512vl", "avx512bw", "avx512dq"]) {
            "x86-64-v4"
        } else if v3 {
            "x86-64-v3"
        } else {
            "x86-64"
        };
        assert_eq!(detected.name(), expected);
    }
    #[cfg(not(target_arch = "x86_64"))]
    assert_eq!(detected.name(), std::env::consts::ARCH);
    // Forced per thread: the path names the level in use and, below the
    // detected one, the machine's.
    at_each_level(|forced| {
        assert_eq!(cpu_level(), forced.name());
        let want = if forced == detected {
            format!("muq/{forced}")
        } else {
            format!("muq/{forced} (forced on {detected})")
        };
        assert_eq!(compute_path(Kernels::Muq, &Device::Cpu), want);
        assert_eq!(
            compute_path(Kernels::Stock, &Device::Cpu),
            format!("stock/{detected}")
        );
        // Something must dispatch for the helper to accept the run.
        simd::sum(&[1.0, 2.0]);
    });
}

#[test]
fn every_supported_level_runs_and_they_are_all_distinct_paths() {
    let ran = at_each_level(|_| {
        simd::sum(&[1.0]);
    });
    eprintln!(
        "levels this machine runs: {}",
        ran.iter()
            .map(|l| l.env_value())
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert_eq!(ran, CpuLevel::supported());
    assert_eq!(ran.first(), Some(&CpuLevel::Baseline));
    assert_eq!(ran.last(), Some(&CpuLevel::detected()));
    #[cfg(not(target_arch = "x86_64"))]
    assert_eq!(ran, [CpuLevel::Baseline]);
    // Each level is its own compute path: never a shared cache entry.
    let mut paths = std::collections::BTreeSet::new();
    at_each_level(|_| {
        simd::sum(&[1.0]);
        paths.insert(compute_path(Kernels::Muq, &Device::Cpu));
    });
    assert_eq!(paths.len(), ran.len(), "{paths:?}");
}

#[test]
fn process_level_is_the_one_muq_cpu_level_forces() {
    // Under `MUQ_CPU_LEVEL=v3 cargo test …` (.ci/run runs every level this
    // way) the whole process, rayon's pool included, runs at v3.
    let forced = CpuLevel::try_from_env().expect("MUQ_CPU_LEVEL is valid here");
    let want = forced.unwrap_or_else(CpuLevel::detected);
    assert_eq!(CpuLevel::active(), want);
    let on_workers: Vec<CpuLevel> = rayon::broadcast(|_| CpuLevel::active());
    assert!(on_workers.iter().all(|&l| l == want), "{on_workers:?}");
    eprintln!(
        "process level: {want} ({})",
        match forced {
            Some(_) => format!("forced by {CPU_LEVEL_ENV}"),
            None => "detected".to_string(),
        }
    );
}

#[test]
fn cpu_level_values_parse_or_say_what_to_set() {
    use super::level::resolve;
    for l in CpuLevel::ALL {
        assert_eq!(resolve(l.env_value(), CpuLevel::V4), Ok(l));
        assert_eq!(resolve(&format!(" {} ", l.name()), CpuLevel::V4), Ok(l));
    }
    assert_eq!(resolve("Scalar", CpuLevel::V3), Ok(CpuLevel::Baseline));
    assert_eq!(
        resolve(std::env::consts::ARCH, CpuLevel::Baseline),
        Ok(CpuLevel::Baseline)
    );
    let unknown = resolve("avx9", CpuLevel::V4).unwrap_err();
    assert!(matches!(unknown, CpuLevelError::Unknown { .. }));
    let msg = unknown.to_string();
    for needle in [
        "MUQ_CPU_LEVEL=`avx9`",
        "`baseline`, `v3` or `v4`",
        "unset it",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    }
    // Never a level the CPU lacks: that would run instructions it does
    // not have.
    let too_high = resolve("v4", CpuLevel::V3).unwrap_err();
    assert_eq!(
        too_high,
        CpuLevelError::Unsupported {
            value: "v4".into(),
            level: CpuLevel::V4,
            detected: CpuLevel::V3,
        }
    );
    let msg = too_high.to_string();
    for needle in ["MUQ_CPU_LEVEL=`v4`", "cannot run", "`baseline` or `v3`"] {
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    }
    let msg = resolve("v3", CpuLevel::Baseline).unwrap_err().to_string();
    assert!(msg.contains("set it to `baseline`, or unset it"), "{msg}");
}

/// `reduce_scalar` with the product added by a fused multiply-add: what
/// the AVX-512 reduction computes, in its order.
fn reduce_fma_model(g: &[f32], x: &[f32], mg: f32, m: f32) -> (f64, f64) {
    let n = g.len().min(x.len());
    let full = n / 16 * 16;
    let (mut a, mut b) = ([0f32; 16], [0f32; 16]);
    for i in 0..full {
        let gv = g[i] - mg;
        a[i % 16] += gv;
        b[i % 16] = gv.mul_add(x[i] - m, b[i % 16]);
    }
    let mut sa: f64 = a.iter().map(|&v| f64::from(v)).sum();
    let mut sb: f64 = b.iter().map(|&v| f64::from(v)).sum();
    for i in full..n {
        sa += f64::from(g[i] - mg);
        sb += f64::from((g[i] - mg) * (x[i] - m));
    }
    (sa, sb)
}

#[test]
fn reductions_keep_one_order_at_every_level() {
    let v = |seed| {
        randn(&[1003], seed)
            .affine(3.0, 1.5)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (g, x) = (v(1), v(2));
    let bits = |(a, b): (f64, f64)| (a.to_bits(), b.to_bits());
    let mut fma_differs = false;
    at_each_level(|level| {
        for n in [0, 1, 15, 16, 17, 32, 100, 1003] {
            let (g, x) = (&g[..n], &x[..n]);
            let scalar = simd::reduce_scalar(g, x, 0.0, 0.7);
            let want = match level {
                CpuLevel::V4 => reduce_fma_model(g, x, 0.0, 0.7),
                CpuLevel::V3 | CpuLevel::Baseline => scalar,
            };
            assert_eq!(
                bits(simd::sum_and_dot_dev(g, x, 0.7)),
                bits(want),
                "Σ g, Σ g·(x − m), n {n}, {level}"
            );
            let sq = if level == CpuLevel::V4 {
                reduce_fma_model(x, x, 0.7, 0.7).1
            } else {
                simd::reduce_scalar(x, x, 0.7, 0.7).1
            };
            assert_eq!(
                simd::sum_sq_dev(x, 0.7).to_bits(),
                sq.to_bits(),
                "n {n}, {level}"
            );
            assert_eq!(
                simd::sum(x).to_bits(),
                simd::reduce_scalar(x, x, 0.0, 0.0).0.to_bits()
            );
            // All of them are the sums, to f32 rounding.
            let exact: f64 = g
                .iter()
                .zip(x)
                .map(|(&a, &b)| f64::from(a) * (f64::from(b) - 0.7))
                .sum();
            assert!(
                (want.1 - exact).abs() <= 1e-4 * (1.0 + exact.abs()),
                "{want:?} vs {exact}"
            );
            fma_differs |= level == CpuLevel::V4 && reduce_fma_model(g, x, 0.0, 0.7) != scalar;
        }
    });
    if CpuLevel::detected() == CpuLevel::V4 {
        // The FMA model is not the scalar order in disguise.
        assert!(fma_differs, "the fused product never changed a bit");
    }
}

/// `dst ← [dst +] lhs · rhs` in f64 over strided views.
fn naive_matmul(
    dst: &mut [f32],
    d: super::gemm::Mat,
    acc: bool,
    l: &[f32],
    lm: super::gemm::Mat,
    r: &[f32],
    rm: super::gemm::Mat,
) {
    for i in 0..d.rows {
        for j in 0..d.cols {
            let mut s = if acc {
                f64::from(dst[i * d.rs + j * d.cs])
            } else {
                0.0
            };
            for p in 0..lm.cols {
                s += f64::from(l[i * lm.rs + p * lm.cs]) * f64::from(r[p * rm.rs + j * rm.cs]);
            }
            dst[i * d.rs + j * d.cs] = s as f32;
        }
    }
}

/// The micro-kernels `gemm::gemm` picks on this CPU, as a level.
fn gemm_detected_level() -> CpuLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            CpuLevel::V4
        } else if std::arch::is_x86_feature_detected!("fma") {
            CpuLevel::V3
        } else {
            CpuLevel::Baseline
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        CpuLevel::Baseline
    }
}

/// (m, n, k): the driver's special cases — k ≤ 2 (an outer product),
/// n = 1 (a matrix-vector product), m·n ≤ 256 (horizontal kernels) — and
/// blocked products with remainders.
const GEMM_SHAPES: &[(usize, usize, usize)] = &[
    (5, 7, 1),
    (9, 4, 2),
    (33, 1, 40),
    (1, 30, 19),
    (12, 13, 50),
    (16, 16, 16),
    (37, 70, 45),
    (64, 130, 300),
    (130, 64, 9),
];

#[test]
fn gemm_is_correct_at_every_level_and_gemms_own_at_the_detected_one() {
    use super::gemm::Mat;
    for (i, &(m, n, k)) in GEMM_SHAPES.iter().enumerate() {
        let v = |len: usize, seed: u64| randn(&[len.max(1)], seed).to_vec1::<f32>().unwrap();
        let seed = 1000 + 10 * i as u64;
        // Row-major operands, the left one also read through a transposed
        // view of column-major memory.
        let (l, r, d0) = (v(m * k, seed), v(k * n, seed + 1), v(m * n, seed + 2));
        let (lm, rm, dm) = (Mat::rows(m, k, k), Mat::rows(k, n, n), Mat::rows(m, n, n));
        let mut lt = vec![0f32; m * k];
        for a in 0..m {
            for b in 0..k {
                lt[b * m + a] = l[a * k + b];
            }
        }
        let ltm = Mat::rows(k, m, m).t();
        for acc in [false, true] {
            let mut want = d0.clone();
            naive_matmul(&mut want, dm, acc, &l, lm, &r, rm);
            let scale = 1.0 + want.iter().fold(0f32, |a, v| a.max(v.abs()));
            at_each_level(|level| {
                for (left, view) in [(&l, lm), (&lt, ltm)] {
                    let mut got = d0.clone();
                    super::gemm::matmul(&mut got, dm, acc, left, view, &r, rm);
                    for (e, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-5 * scale * (k as f32).sqrt(),
                            "{m}×{n}×{k} acc {acc} {level}: element {e}: {a} vs {b}"
                        );
                    }
                }
            });
            // At the level gemm picks for itself, muq's call is gemm's own.
            let gemm_own = gemm_detected_level();
            if gemm_own != CpuLevel::detected() {
                eprintln!(
                    "gemm detects {gemm_own}, muq {}: no bitwise check",
                    CpuLevel::detected()
                );
                continue;
            }
            let mut theirs = d0.clone();
            // SAFETY: the views lie inside their vectors; `theirs` is a
            // separate allocation.
            unsafe {
                ::gemm::gemm(
                    m,
                    n,
                    k,
                    theirs.as_mut_ptr(),
                    1,
                    n as isize,
                    acc,
                    l.as_ptr(),
                    1,
                    k as isize,
                    r.as_ptr(),
                    1,
                    n as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    ::gemm::Parallelism::None,
                );
            }
            let mut ours = d0.clone();
            at_each_level(|level| {
                if level == gemm_own {
                    super::gemm::matmul(&mut ours, dm, acc, &l, lm, &r, rm);
                } else {
                    simd::sum(&[1.0]);
                }
            });
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&ours), bits(&theirs), "{m}×{n}×{k} acc {acc}");
        }
    }
}

/// Shapes on the Winograd path: (n, c, h, w, filters).
const WINOGRAD_SHAPES: &[(usize, usize, usize, usize, usize)] = &[
    (2, 16, 4, 4, 16),   // one tile per image, every image one column
    (3, 64, 32, 32, 64), // layer 1's planes, a chunk per 8 images
    (20, 17, 8, 12, 19), // 6 tiles a plane: planes straddle column blocks
    (1, 16, 16, 16, 40), // batch 1, output rows past a 6-row block
    (70, 24, 4, 8, 16),  // several chunks and a partial last one
    (2, 130, 4, 4, 128), // the filter gradient's outer products by default
];

/// Largest `|a − b| / (1 + max |b|)` over the elements.
fn rel_err(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims());
    let g = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let w = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = 1.0 + w.iter().fold(0f32, |m, v| m.max(v.abs()));
    g.iter()
        .zip(&w)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs() / scale))
}

/// Winograd's extra rounding, relative to the largest output: measured
/// at most 7.1e-6 on these unit-scale shapes (docs/benchmarks.md); the
/// bound leaves room.
const WINOGRAD_TOL: f32 = 2e-5;

#[test]
fn winograd_matches_stock_values_and_gradients() {
    for (i, &(n, c, h, wd, o)) in WINOGRAD_SHAPES.iter().enumerate() {
        let g = conv::Geom::new(&[n, c, h, wd], &[o, c, 3, 3], 1, 1).unwrap();
        assert!(winograd::applies(&g), "{g:?} is not on the Winograd path");
        let seed = 500 + 10 * i as u64;
        let x = randn(&[n, c, h, wd], seed);
        let w = randn(&[o, c, 3, 3], seed + 1);
        let r = randn(&[n, o, h, wd], seed + 2);
        let (ys, dxs, dws) = conv_run(&x, &w, &r, 1, 1, Kernels::Stock);
        let mut by_level = Vec::new();
        at_each_level(|level| {
            let tag = format!("x {:?} w {:?}, {level}", x.dims(), w.dims());
            let (y, dx, dw) = conv_run(&x, &w, &r, 1, 1, Kernels::Winograd);
            let errs = [rel_err(&y, &ys), rel_err(&dx, &dxs), rel_err(&dw, &dws)];
            eprintln!(
                "winograd {tag}: relative error y {:.1e}, dx {:.1e}, dw {:.1e}",
                errs[0], errs[1], errs[2]
            );
            for (what, e) in ["y", "dx", "dw"].iter().zip(errs) {
                assert!(e <= WINOGRAD_TOL, "{what}, {tag}: relative error {e:e}");
            }
            let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let dx2 = conv2d_input_grad(x.dims(), &w, &r, 1, 1, Kernels::Winograd).unwrap();
            assert_eq!(bits(&dx2), bits(&dx), "conv2d_input_grad, {tag}");
            let dw2 = conv2d_weight_grad(&x, w.dims(), &r, 1, 1, Kernels::Winograd).unwrap();
            assert_eq!(bits(&dw2), bits(&dw), "conv2d_weight_grad, {tag}");
            // Both ways of summing the filter gradient, whichever the
            // shape takes by default.
            let [dw_dot, dw_outer] = [false, true].map(|outer| {
                winograd::force_outer(outer, || {
                    conv2d_weight_grad(&x, w.dims(), &r, 1, 1, Kernels::Winograd).unwrap()
                })
            });
            for (what, d) in [
                ("dw (dot products)", &dw_dot),
                ("dw (outer products)", &dw_outer),
            ] {
                let e = rel_err(d, &dws);
                eprintln!("winograd {tag}: {what} relative error {e:.1e}");
                assert!(e <= WINOGRAD_TOL, "{what}, {tag}: relative error {e:e}");
            }
            let default = if winograd::outer_products(o, c) {
                &dw_outer
            } else {
                &dw_dot
            };
            assert_eq!(
                bits(default),
                bits(&dw),
                "default filter-gradient path, {tag}"
            );
            by_level.push((
                level,
                [bits(&y), bits(&dx), bits(&dw_dot), bits(&dw_outer)]
                    .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()),
            ));
        });
        // The module's promise: v3 and v4 fuse the same products in the same
        // order, so they agree to the bit, gradients included.
        let of = |l: CpuLevel| by_level.iter().find(|(k, _)| *k == l).map(|(_, v)| v);
        if let (Some(v3), Some(v4)) = (of(CpuLevel::V3), of(CpuLevel::V4)) {
            let whats = ["y", "dx", "dw (dot products)", "dw (outer products)"];
            for (what, (a, b)) in whats.iter().zip(v3.iter().zip(v4)) {
                assert!(a == b, "{what}: v3 and v4 differ for x {:?}", x.dims());
            }
        }
    }
}
