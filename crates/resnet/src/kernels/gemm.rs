//! A safe-ish front to the `gemm` crate's f32 matrix multiply, at the
//! instruction-set level muq's kernels run at.
//!
//! `gemm::gemm` picks its micro-kernels itself (AVX-512 if the CPU has
//! AVX-512F, else AVX2+FMA if it has FMA, else scalar; once per process,
//! with no override), so a forced level would not reach it. On x86_64 this
//! front therefore calls the driver `gemm::gemm` itself ends in,
//! `gemm_common::gemm::gemm_basic_generic`, with the micro-kernel table of
//! the dispatched level (`gemm_f32::microkernel::{scalar, fma, avx512f}`):
//! at the level gemm would detect, the very call `gemm::gemm` makes, so
//! the same bits (a test checks it). Those items are public but not
//! gemm's documented interface, so the three gemm crates are pinned to
//! one exact version. Elsewhere than x86_64 there is one level, and this
//! calls `gemm::gemm` (NEON on aarch64).

/// A strided matrix view: element `(i, j)` lives at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Row stride (elements).
    pub rs: usize,
    /// Column stride (elements).
    pub cs: usize,
}

impl Mat {
    /// A row-major `rows × cols` matrix, rows `ld` apart.
    pub fn rows(rows: usize, cols: usize, ld: usize) -> Self {
        Self {
            rows,
            cols,
            rs: ld,
            cs: 1,
        }
    }

    /// The transpose of the same memory.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// One past the largest offset the view touches (0 if empty).
    fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1
        }
    }
}

/// `dst ← lhs · rhs` (or `dst ← dst + lhs · rhs` when `accumulate`), single
/// threaded: the kernels parallelise over images themselves.
///
/// # Panics
/// If the shapes do not chain or a view reaches past its slice.
pub(crate) fn matmul(
    dst: &mut [f32],
    d: Mat,
    accumulate: bool,
    lhs: &[f32],
    l: Mat,
    rhs: &[f32],
    r: Mat,
) {
    assert_eq!((d.rows, d.cols), (l.rows, r.cols), "matmul: dst shape");
    assert_eq!(l.cols, r.rows, "matmul: inner dimension");
    assert!(d.extent() <= dst.len(), "matmul: dst out of bounds");
    assert!(l.extent() <= lhs.len(), "matmul: lhs out of bounds");
    assert!(r.extent() <= rhs.len(), "matmul: rhs out of bounds");
    if d.rows == 0 || d.cols == 0 {
        return;
    }
    if l.cols == 0 {
        if !accumulate {
            for i in 0..d.rows {
                for j in 0..d.cols {
                    dst[i * d.rs + j * d.cs] = 0.0;
                }
            }
        }
        return;
    }
    // SAFETY: every view was checked to lie inside its slice; `dst` is
    // borrowed mutably and so does not alias `lhs` or `rhs`.
    unsafe {
        gemm_at(
            super::level::dispatch(),
            [d.rows, d.cols, l.cols],
            (dst.as_mut_ptr(), d.cs as isize, d.rs as isize),
            accumulate,
            (lhs.as_ptr(), l.cs as isize, l.rs as isize),
            (rhs.as_ptr(), r.cs as isize, r.rs as isize),
        );
    }
}

/// `gemm::gemm(m, n, k, dst, …, read_dst, lhs, …, rhs, …, 1, 1, no
/// conjugation, single-threaded)` with the micro-kernels of `level`
/// (see the module docs). Operands are `(pointer, column stride, row
/// stride)`.
///
/// # Safety
/// As `gemm::gemm`: every view lies inside its allocation and `dst`
/// aliases neither operand; `level` is one the CPU runs.
#[cfg(target_arch = "x86_64")]
unsafe fn gemm_at(
    level: super::level::CpuLevel,
    [m, n, k]: [usize; 3],
    (dst, dst_cs, dst_rs): (*mut f32, isize, isize),
    read_dst: bool,
    (lhs, lhs_cs, lhs_rs): (*const f32, isize, isize),
    (rhs, rhs_cs, rhs_rs): (*const f32, isize, isize),
) {
    use super::level::CpuLevel;
    use gemm_common::simd::{MixedSimd, Scalar, V3, V4};
    use gemm_f32::microkernel::{avx512f, fma, scalar};

    // `gemm::gemm`'s own first step, which the driver does not repeat: the
    // micro-kernels store `dst` a column at a time, so a row-major `dst` is
    // computed as its transpose, `dstᵀ = rhsᵀ · lhsᵀ` (without this, the
    // row-major products of most convolutions ran 1.1–3.8× slower: the
    // stem's forward pass 14.6 ms instead of 3.8). One exception, measured:
    // a `dst` over 8× taller than wide (the 4×4 stage's input gradient,
    // 4,608 × 256) runs faster as it is (45 vs 65 ms). The orientation
    // changes no bits — each element is the same fused sum over `k` in the
    // same order, which the bitwise test against `gemm::gemm` checks on
    // both sides of the exception. gemm's other step, flipping negative
    // strides, never applies: `Mat`'s are unsigned.
    let ([m, n, k], (dst_cs, dst_rs), (lhs, lhs_cs, lhs_rs), (rhs, rhs_cs, rhs_rs)) =
        if dst_cs.abs() < dst_rs.abs() && m <= 8 * n {
            (
                [n, m, k],
                (dst_rs, dst_cs),
                (rhs, rhs_rs, rhs_cs),
                (lhs, lhs_rs, lhs_cs),
            )
        } else {
            (
                [m, n, k],
                (dst_cs, dst_rs),
                (lhs, lhs_cs, lhs_rs),
                (rhs, rhs_cs, rhs_rs),
            )
        };

    // `gemm::gemm`'s f32 instantiation (`gemm_def!(f32, 2)` in
    // gemm-common): per level, the SIMD type, its lane count `N` and the
    // micro-kernel module, which fixes `MR = MR_DIV_N·N`, `NR` and the
    // horizontal kernels.
    macro_rules! call {
        ($simd:ty, $n:expr, $ukr:ident) => {{
            const N: usize = $n;
            const _: () = assert!(<$simd as MixedSimd<f32, f32, f32, f32>>::SIMD_WIDTH == N);
            let simd = <$simd as MixedSimd<f32, f32, f32, f32>>::try_new()
                .expect("the dispatched level is one the CPU runs");
            // SAFETY: the caller's contract, which is gemm's; the table and
            // the lane count belong to the same micro-kernel module.
            unsafe {
                gemm_common::gemm::gemm_basic_generic::<
                    _,
                    f32,
                    N,
                    { $ukr::f32::MR_DIV_N * N },
                    { $ukr::f32::NR },
                    { $ukr::f32::MR_DIV_N },
                    { $ukr::f32::H_M },
                    { $ukr::f32::H_N },
                >(
                    simd,
                    m,
                    n,
                    k,
                    dst,
                    dst_cs,
                    dst_rs,
                    read_dst,
                    lhs,
                    lhs_cs,
                    lhs_rs,
                    rhs,
                    rhs_cs,
                    rhs_rs,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    |a, b, c| a * b + c,
                    &$ukr::f32::UKR,
                    &$ukr::f32::H_UKR,
                    false,
                    gemm_common::Parallelism::None,
                )
            }
        }};
    }
    match level {
        CpuLevel::V4 => call!(V4, 16, avx512f),
        CpuLevel::V3 => call!(V3, 8, fma),
        CpuLevel::Baseline => call!(Scalar, 1, scalar),
    }
}

/// `gemm::gemm` (its only level off x86_64 is the baseline).
///
/// # Safety
/// As `gemm::gemm`: every view lies inside its allocation and `dst`
/// aliases neither operand.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn gemm_at(
    _level: super::level::CpuLevel,
    [m, n, k]: [usize; 3],
    (dst, dst_cs, dst_rs): (*mut f32, isize, isize),
    read_dst: bool,
    (lhs, lhs_cs, lhs_rs): (*const f32, isize, isize),
    (rhs, rhs_cs, rhs_rs): (*const f32, isize, isize),
) {
    // SAFETY: the caller's contract, which is gemm's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            read_dst,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
