//! Compiling hot loops for AVX2 and AVX-512 without assuming either at
//! build time.
//!
//! The workspace builds for the target's baseline (SSE2 on x86-64), where
//! the compiler vectorises little. [`simd_fn!`] compiles a function's body
//! three times on x86_64 — as is, inside a `#[target_feature]` wrapper for
//! x86-64-v3 (AVX2 + FMA) and inside one for x86-64-v4 (AVX-512) — and runs
//! the copy for the level [`super::level::dispatch`] names: the best the
//! CPU has, or the one `MUQ_CPU_LEVEL` (or a test) forces. Elsewhere than
//! x86_64 there is one copy, the baseline.
//!
//! The three copies compute the same bits: Rust never contracts `a·b + c`
//! into a fused multiply-add or reorders floating-point operations, so a
//! wider target only changes how many lanes run at once. What differs by
//! level is the hand-written code: the reductions below and the `gemm`
//! crate's micro-kernels ([`super::gemm`]).
//!
//! The reductions ([`sum`], [`sum_sq_dev`], [`sum_and_dot_dev`]) keep one
//! order at every level: 16 f32 lanes, lane `j` accumulating the elements
//! `i ≡ j (mod 16)` of the whole 16-blocks in order; the lanes are then
//! added in f64, lane 0 first, and the remainder (`< 16` elements) after
//! them, in order, in f64. The baseline and v3 (two 8-lane AVX registers
//! for lanes 0–7 and 8–15) round the product `g·(x − m)` before adding it,
//! so they agree to the bit; v4 (one 16-lane AVX-512 register) adds it with
//! a fused multiply-add, which rounds once, so its `Σ g·(x − m)` may differ
//! from theirs in the last bits.

#[cfg(target_arch = "x86_64")]
use super::level::CpuLevel;
use super::level::dispatch;

/// Defines `fn name(args) -> ret { body }` whose body is compiled for each
/// instruction-set level and run at the dispatched one (see the module
/// docs).
macro_rules! simd_fn {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            let level = $crate::kernels::level::dispatch();
            // Off x86_64 the baseline is the only level.
            #[cfg(not(target_arch = "x86_64"))]
            let _ = level;
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                match level {
                    // SAFETY: a dispatched level is one the CPU supports
                    // (detected, or forced and checked against detection),
                    // and each level includes every feature its copy is
                    // compiled for.
                    $crate::kernels::level::CpuLevel::V4 => return unsafe { v4($($arg),*) },
                    // SAFETY: as above.
                    $crate::kernels::level::CpuLevel::V3 => return unsafe { v3($($arg),*) },
                    $crate::kernels::level::CpuLevel::Baseline => {}
                }
            }
            body($($arg),*)
        }
    };
}

pub(crate) use simd_fn;

/// Σ x (f32 lanes, reduced in f64).
pub(crate) fn sum(x: &[f32]) -> f64 {
    sum_and_dot_dev(x, x, 0.0).0
}

/// Σ (x − m)².
pub(crate) fn sum_sq_dev(x: &[f32], m: f32) -> f64 {
    reduce(x, x, m, m).1
}

/// `(Σ g, Σ g·(x − m))` over `min(len)` elements.
pub(crate) fn sum_and_dot_dev(g: &[f32], x: &[f32], m: f32) -> (f64, f64) {
    reduce(g, x, 0.0, m)
}

/// [`reduce_scalar`] at the dispatched level.
fn reduce(g: &[f32], x: &[f32], mg: f32, m: f32) -> (f64, f64) {
    match dispatch() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a dispatched v4 means the CPU has AVX-512F.
        CpuLevel::V4 => unsafe { avx512::sum_and_dot_dev(g, x, mg, m) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a dispatched v3 means the CPU has AVX.
        CpuLevel::V3 => unsafe { avx::sum_and_dot_dev(g, x, mg, m) },
        _ => reduce_scalar(g, x, mg, m),
    }
}

/// `(Σ (g − mg), Σ (g − mg)·(x − m))` in 16 f32 lanes, reduced in f64 (the
/// order in the module docs).
pub(crate) fn reduce_scalar(g: &[f32], x: &[f32], mg: f32, m: f32) -> (f64, f64) {
    const L: usize = 16;
    let n = g.len().min(x.len());
    let full = n / L * L;
    let (mut a, mut b) = ([0f32; L], [0f32; L]);
    for (gc, xc) in g[..full].chunks_exact(L).zip(x[..full].chunks_exact(L)) {
        for j in 0..L {
            let gv = gc[j] - mg;
            a[j] += gv;
            b[j] += gv * (xc[j] - m);
        }
    }
    let mut sa: f64 = a.iter().map(|&v| f64::from(v)).sum();
    let mut sb: f64 = b.iter().map(|&v| f64::from(v)).sum();
    for (&gv, &xv) in g[full..n].iter().zip(&x[full..n]) {
        sa += f64::from(gv - mg);
        sb += f64::from((gv - mg) * (xv - m));
    }
    (sa, sb)
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// [`super::reduce_scalar`] in two 8-lane AVX accumulators per sum
    /// (lanes 0–7 and 8–15 of the 16), the product rounded before it is
    /// added as there: the same bits.
    #[target_feature(enable = "avx")]
    pub(super) fn sum_and_dot_dev(g: &[f32], x: &[f32], mg: f32, m: f32) -> (f64, f64) {
        let n = g.len().min(x.len());
        let (mgv, mv) = (_mm256_set1_ps(mg), _mm256_set1_ps(m));
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (mut b0, mut b1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 ≤ n, which both slices reach.
            let (g0, g1, x0, x1) = unsafe {
                (
                    _mm256_loadu_ps(g.as_ptr().add(i)),
                    _mm256_loadu_ps(g.as_ptr().add(i + 8)),
                    _mm256_loadu_ps(x.as_ptr().add(i)),
                    _mm256_loadu_ps(x.as_ptr().add(i + 8)),
                )
            };
            let (g0, g1) = (_mm256_sub_ps(g0, mgv), _mm256_sub_ps(g1, mgv));
            a0 = _mm256_add_ps(a0, g0);
            a1 = _mm256_add_ps(a1, g1);
            b0 = _mm256_add_ps(b0, _mm256_mul_ps(g0, _mm256_sub_ps(x0, mv)));
            b1 = _mm256_add_ps(b1, _mm256_mul_ps(g1, _mm256_sub_ps(x1, mv)));
            i += 16;
        }
        let (mut la, mut lb) = ([0f32; 16], [0f32; 16]);
        // SAFETY: each array holds 16 floats, two registers of 8.
        unsafe {
            _mm256_storeu_ps(la.as_mut_ptr(), a0);
            _mm256_storeu_ps(la.as_mut_ptr().add(8), a1);
            _mm256_storeu_ps(lb.as_mut_ptr(), b0);
            _mm256_storeu_ps(lb.as_mut_ptr().add(8), b1);
        }
        let mut sa: f64 = la.iter().map(|&v| f64::from(v)).sum();
        let mut sb: f64 = lb.iter().map(|&v| f64::from(v)).sum();
        for (&gv, &xv) in g[i..n].iter().zip(&x[i..n]) {
            sa += f64::from(gv - mg);
            sb += f64::from((gv - mg) * (xv - m));
        }
        (sa, sb)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// [`super::reduce_scalar`] in one 16-lane AVX-512 accumulator per sum,
    /// the product added with a fused multiply-add (one rounding).
    #[target_feature(enable = "avx512f")]
    pub(super) fn sum_and_dot_dev(g: &[f32], x: &[f32], mg: f32, m: f32) -> (f64, f64) {
        let n = g.len().min(x.len());
        let (mgv, mv) = (_mm512_set1_ps(mg), _mm512_set1_ps(m));
        let (mut a, mut b) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 ≤ n, which both slices reach.
            let (gv, xv) = unsafe {
                (
                    _mm512_loadu_ps(g.as_ptr().add(i)),
                    _mm512_loadu_ps(x.as_ptr().add(i)),
                )
            };
            let gv = _mm512_sub_ps(gv, mgv);
            a = _mm512_add_ps(a, gv);
            b = _mm512_fmadd_ps(gv, _mm512_sub_ps(xv, mv), b);
            i += 16;
        }
        let (mut la, mut lb) = ([0f32; 16], [0f32; 16]);
        // SAFETY: each array holds 16 floats.
        unsafe {
            _mm512_storeu_ps(la.as_mut_ptr(), a);
            _mm512_storeu_ps(lb.as_mut_ptr(), b);
        }
        let mut sa: f64 = la.iter().map(|&v| f64::from(v)).sum();
        let mut sb: f64 = lb.iter().map(|&v| f64::from(v)).sum();
        for (&gv, &xv) in g[i..n].iter().zip(&x[i..n]) {
            sa += f64::from(gv - mg);
            sb += f64::from((gv - mg) * (xv - m));
        }
        (sa, sb)
    }
}

/// A vector of `len` floats that `fill` writes, handed them uninitialised
/// (zero-filling an output every element of which a kernel writes was
/// measurable: tens of megabytes an op at batch 128).
///
/// # Safety
/// `fill` writes every element of the slice it is given.
pub(crate) unsafe fn written_by(
    len: usize,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<f32>]),
) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: `fill` wrote all `len` elements (the caller's contract).
    unsafe { v.set_len(len) };
    v
}
