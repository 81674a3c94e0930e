//! A safe-ish front to the `gemm` crate's f32 matrix multiply.

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
        gemm::gemm(
            d.rows,
            d.cols,
            l.cols,
            dst.as_mut_ptr(),
            d.cs as isize,
            d.rs as isize,
            accumulate,
            lhs.as_ptr(),
            l.cs as isize,
            l.rs as isize,
            rhs.as_ptr(),
            r.cs as isize,
            r.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
