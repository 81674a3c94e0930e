//! Compiling hot loops for AVX-512 without assuming it at build time.
//!
//! The workspace builds for baseline x86-64 (SSE2), where the compiler
//! vectorises little. [`simd_fn!`] compiles a function's body twice — once
//! as is and once inside a `#[target_feature]` wrapper for x86-64-v4
//! (AVX-512) — and picks the second at run time when the CPU has it, the way
//! the `gemm` crate picks its micro-kernels.

/// Whether this CPU runs x86-64-v4 (AVX-512 F/VL/BW/DQ, AVX2, FMA) code.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_v4() -> bool {
    use std::sync::OnceLock;
    static V4: OnceLock<bool> = OnceLock::new();
    *V4.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    })
}

/// Defines `fn name(args) -> ret { body }` whose body runs compiled for
/// AVX-512 when the CPU has it (see the module docs).
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
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if $crate::kernels::simd::has_v4() {
                    // SAFETY: the CPU supports every feature `v4` is compiled for.
                    return unsafe { v4($($arg),*) };
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
    #[cfg(target_arch = "x86_64")]
    if has_v4() {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx512::sum_and_dot_dev(x, x, m, m).1 };
    }
    reduce_scalar(x, x, m, m).1
}

/// `(Σ g, Σ g·(x − m))` over `min(len)` elements.
pub(crate) fn sum_and_dot_dev(g: &[f32], x: &[f32], m: f32) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if has_v4() {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx512::sum_and_dot_dev(g, x, 0.0, m) };
    }
    reduce_scalar(g, x, 0.0, m)
}

/// `(Σ (g − mg), Σ (g − mg)·(x − m))` in 16 f32 lanes, reduced in f64.
fn reduce_scalar(g: &[f32], x: &[f32], mg: f32, m: f32) -> (f64, f64) {
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
mod avx512 {
    use std::arch::x86_64::*;

    /// [`super::reduce_scalar`] in two 16-lane AVX-512 accumulators.
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
