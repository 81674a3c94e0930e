//! Winograd F(4×4, 3×3) for stride-1, padding-1 3×3 convolutions: the
//! forward pass, the input gradient (a convolution of the output gradient
//! by the flipped, transposed filters) and the filter gradient (36 GEMMs
//! over the tiles, [`weight_grad`]).
//!
//! Each 4×4 block of output pixels (a *tile*) of one image and output
//! channel is computed from the 6×6 input patch around it (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016):
//! `Y = Aᵀ [ Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B) ] A`. The 36 element-wise
//! products summed over input channels are 36 independent GEMMs,
//! `M_ξ (O × tiles) = U_ξ (O × C) · V_ξ (C × tiles)`, each with 1/16 of the
//! output pixels as columns: 36·O·C multiplies per 16 output pixels instead
//! of 144·O·C, 4× fewer than a direct convolution. The transforms cost
//! O(C + O) per tile and run vectorised; the GEMMs run on muq's own
//! micro-kernels over operands the transforms write already packed (no
//! GEMM-side packing, but for the filter gradient from 128 channels,
//! whose operands are transposed per ξ: [`outer_gemms`]), per
//! instruction-set level: AVX-512 and
//! AVX2 + FMA intrinsics, and portable Rust for the baseline and for other
//! architectures.
//!
//! Numerics: the transforms' constants (1/4, 1/6, 1/12, 1/24; 2, 4, 5, 8)
//! add rounding, so the result differs from a direct convolution by more
//! than summation order does — measured in `tests.rs` and stated in
//! `docs/benchmarks.md`. The sums are in a fixed order (channels in order
//! inside each GEMM; no reduction across threads), so a level gives the
//! same bits at every thread count. v3 and v4 fuse each multiply-add, the
//! baseline rounds the product first: v3 and v4 agree to the bit, the
//! baseline differs in the last bits.
//!
//! Work is split three ways per chunk of images (enough to give each GEMM
//! ~512 columns): the input transform by channel, the 36 GEMMs by ξ, the
//! output transform by output channel — each phase a rayon loop with
//! disjoint outputs.
//!
//! The input (and output-gradient) transform works one block of [`NB`]
//! columns of one channel at a time, whatever the plane size: each
//! column's patch is gathered into its lane ([`gather_patches`]: AVX-512
//! or AVX2 gather instructions, or for eight neighbouring tiles of a row
//! two loads and a permutation), then both passes of `Bᵀ · B` run across
//! the block's 64 lanes and the second writes `V`'s rows in place. On
//! 4×4 and 8×8 planes (one or four tiles each) this vectorises across
//! images what per-plane code could not.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::conv::Geom;
use super::level::{CpuLevel, dispatch};
use super::simd::{simd_fn, written_by};

/// Output tile side.
const M: usize = 4;
/// Input tile side (`M + 3 − 1`).
const ALPHA: usize = 6;
/// Transformed positions per tile.
const XI: usize = ALPHA * ALPHA;
/// Rows (output channels) of a micro-kernel block.
const MR: usize = 6;
/// Columns (tiles) of a micro-kernel block.
const NB: usize = 64;
/// Aim for this many GEMM columns (tiles) per chunk of images.
const TARGET_COLUMNS: usize = 512;
/// Smallest input and output channel count whose filter gradient runs
/// on [`outer_gemms`] rather than [`dot_gemms`]: on the Xeon of
/// `docs/benchmarks.md`, about a third faster at 512 channels (4×4
/// planes), a fifth at 256, a tenth at 128, and 25 % slower at 64, where
/// transposing the operands costs more than the faster multiplies save.
const OUTER_MIN_CHANNELS: usize = 128;
/// Smallest channel count that takes this path (the stem's 3 channels
/// make each GEMM too shallow to pay for the transforms).
const MIN_CHANNELS: usize = 16;

/// Whether `g` runs on the Winograd path: a 3×3, stride-1, padding-1
/// convolution of planes whose sides are multiples of 4, with at least
/// [`MIN_CHANNELS`] input and output channels.
pub(crate) fn applies(g: &Geom) -> bool {
    g.k == 3
        && g.stride == 1
        && g.pad == 1
        && g.h.is_multiple_of(M)
        && g.w.is_multiple_of(M)
        && g.h > 0
        && g.w > 0
        && g.c >= MIN_CHANNELS
        && g.o >= MIN_CHANNELS
}

/// `y = x ⋆ w` for a geometry [`applies`] accepts: `x` is `N×C×H×W`, `w`
/// is `O×C×3×3`; returns `N×O×H×W`.
pub(crate) fn forward(g: &Geom, x: &[f32], w: &[f32]) -> Vec<f32> {
    debug_assert!(applies(g));
    with_buffers(|b| {
        transform_filters(g.o, g.c, w, false, &mut b.u);
        run(g.n, g.c, g.o, g.h, g.w, x, b)
    })
}

/// `∂L/∂x` (`N×C×H×W`) from `dy = ∂L/∂y` (`N×O×H×W`) for a geometry
/// [`applies`] accepts: the convolution of `dy` (padding 1) by the filters
/// rotated by 180°, input and output channels swapped.
pub(crate) fn input_grad(g: &Geom, w: &[f32], dy: &[f32]) -> Vec<f32> {
    debug_assert!(applies(g));
    with_buffers(|b| {
        transform_filters(g.c, g.o, w, true, &mut b.u);
        run(g.n, g.o, g.c, g.h, g.w, dy, b)
    })
}

/// `∂L/∂w` (`O×C×3×3`) from the input `x` (`N×C×H×W`) and `dy = ∂L/∂y`
/// (`N×O×H×W`) for a geometry [`applies`] accepts. The forward pass is
/// linear in each filter's transform `U = G g Gᵀ`, so
/// `∂L/∂U_ξ[o][c] = Σ_tiles (A dY Aᵀ)_ξ[o] · (Bᵀ d B)_ξ[c]` — 36 GEMMs
/// whose depth is the tiles — and `∂L/∂g = Gᵀ (∂L/∂U) G`.
pub(crate) fn weight_grad(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    debug_assert!(applies(g));
    let (n, c, o, h, w) = (g.n, g.c, g.o, g.h, g.w);
    let mut dw = vec![0f32; o * c * 9];
    if n == 0 {
        return dw;
    }
    with_buffers(|b| {
        let tiles = (h / M) * (w / M);
        let per_chunk = TARGET_COLUMNS.div_ceil(tiles).clamp(1, n);
        let cols = (per_chunk * tiles).div_ceil(NB) * NB;
        fit(&mut b.v, cols * c * XI);
        fit(&mut b.m, cols * o * XI);
        fit(&mut b.u, XI * o * c);
        let level = dispatch();
        let gemms = if outer_products(o, c) {
            outer_gemms
        } else {
            dot_gemms
        };
        let mut first = 0;
        while first < n {
            let count = per_chunk.min(n - first);
            let filled = count * tiles;
            let used = filled.div_ceil(NB) * NB;
            transform_inputs(c, h, w, &x[first * c * h * w..], count, &mut b.v);
            transform_planes(o, h, w, &dy[first * o * h * w..], count, &mut b.m, true);
            // The sums run over every column of the used blocks: the tail
            // of the last one must add nothing.
            if used > filled {
                let (block, lane) = (filled / NB, filled % NB);
                for row in b.m[block * o * XI * NB..(block + 1) * o * XI * NB].chunks_exact_mut(NB)
                {
                    row[lane..].fill(0.0);
                }
            }
            gemms(level, o, c, &b.m, &b.v, used / NB, first > 0, &mut b.u);
            first += count;
        }
        untransform_filters(o, c, &b.u, &mut dw);
    });
    dw
}

/// The transformed operands, kept per calling thread between calls so that
/// each call does not allocate and zero tens of megabytes afresh. Every
/// element a call's results depend on is written by that call first;
/// stale elements are only ever met by padding rows and columns, whose
/// products are never read.
#[derive(Default)]
struct Buffers {
    /// Filters, `[block][ξ][depth][MR]` ([`transform_filters`]).
    u: Vec<f32>,
    /// Inputs, `[block][ξ][channel][NB]` ([`transform_inputs`]).
    v: Vec<f32>,
    /// Products, `[row][ξ][column]` ([`gemms`]).
    m: Vec<f32>,
}

fn with_buffers<R>(f: impl FnOnce(&mut Buffers) -> R) -> R {
    thread_local! {
        static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::default();
    }
    // Taken out (not borrowed) so that a nested call, were there one,
    // would start from empty buffers instead of panicking.
    let mut b = BUFFERS.with(|c| std::mem::take(&mut *c.borrow_mut()));
    let r = f(&mut b);
    BUFFERS.with(|c| *c.borrow_mut() = b);
    r
}

/// Resizes `v` to `len` without clearing what it holds.
fn fit(v: &mut Vec<f32>, len: usize) {
    v.resize(len, 0.0);
}

/// The convolution of `x` (`n×c×h×w`) by the filters whose transform is
/// in `b.u` ([`transform_filters`], `o` rows over `c` channels).
fn run(n: usize, c: usize, o: usize, h: usize, w: usize, x: &[f32], b: &mut Buffers) -> Vec<f32> {
    let len = n * o * h * w;
    if len == 0 {
        return Vec::new();
    }
    let tiles = (h / M) * (w / M);
    let per_chunk = TARGET_COLUMNS.div_ceil(tiles).clamp(1, n);
    let cols = (per_chunk * tiles).div_ceil(NB) * NB;
    let row_blocks = o.div_ceil(MR);
    fit(&mut b.v, cols * c * XI);
    fit(&mut b.m, row_blocks * MR * XI * cols);
    let level = dispatch();
    let fill = |y: &mut [MaybeUninit<f32>]| {
        let mut first = 0;
        while first < n {
            let count = per_chunk.min(n - first);
            // Columns past the chunk's tiles (the last block's tail) hold
            // stale values; their products are never read.
            let used = (count * tiles).div_ceil(NB) * NB;
            transform_inputs(c, h, w, &x[first * c * h * w..], count, &mut b.v);
            gemms(level, c, row_blocks, &b.u, &b.v, cols, used, &mut b.m);
            let chunk = &mut y[first * o * h * w..(first + count) * o * h * w];
            transform_outputs(o, h, w, &b.m, cols, count, chunk);
            first += count;
        }
    };
    // SAFETY: the chunks cover all `n` images, and `transform_outputs`
    // writes every element of its chunk's `count·o` planes (each plane is
    // tiled completely: `h` and `w` are multiples of 4, `applies`). Not
    // zeroed first: that was 4 % of a width-64 32×32 forward pass.
    unsafe { written_by(len, fill) }
}

/// A shared pointer to an output buffer that several rayon tasks write
/// disjoint parts of.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: the tasks that share it write disjoint index sets (each caller
// says why) and nothing reads the buffer until they have all finished.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so that closures capture the whole `Shared`
    /// and not its non-`Send` field).
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}

/// `G g Gᵀ` for every filter into `u`, packed for the micro-kernels:
/// `U[block][ξ][d][r]` with `block·MR + r` the output row (rows past `rows`
/// hold stale values). Rows are `w`'s filters (`rows × depth × 3 × 3`),
/// or with `transposed` the input gradient's: row `ci`, depth `oi` reads
/// `w[oi][ci]` rotated by 180°.
fn transform_filters(rows: usize, depth: usize, w: &[f32], transposed: bool, u: &mut Vec<f32>) {
    let blocks = rows.div_ceil(MR);
    fit(u, blocks * XI * depth * MR);
    u.par_chunks_mut(XI * depth * MR).enumerate().for_each_init(
        || vec![0f32; (9 + 3 * ALPHA + MR * XI) * depth],
        |scratch, (b, ub)| {
            let (work, outs) = scratch.split_at_mut((9 + 3 * ALPHA) * depth);
            let live = MR.min(rows - b * MR);
            for (r, out) in outs.chunks_exact_mut(XI * depth).take(live).enumerate() {
                filter_row(b * MR + r, rows, depth, w, transposed, work, out);
            }
            // Interleaved into `[ξ][d][MR]` in one pass of contiguous
            // writes (one strided pass per row wrote every line six times);
            // rows past `rows` repeat the block's first.
            let row = |r: usize| &outs[if r < live { r } else { 0 } * XI * depth..][..XI * depth];
            let (s0, s1, s2, s3, s4, s5) = (row(0), row(1), row(2), row(3), row(4), row(5));
            for (i, dst) in ub.chunks_exact_mut(MR).enumerate() {
                dst.copy_from_slice(&[s0[i], s1[i], s2[i], s3[i], s4[i], s5[i]]);
            }
        },
    );
}

/// `$f` (six values) for every `$x < $len` into six rows of `$dst`,
/// `$stride` apart, at column `$base + $x`: value `i` to row `i`. A macro,
/// so that every transform keeps loops the compiler sees whole: as a
/// generic function taking closures the same loops measured 3–10 % slower.
macro_rules! six_rows {
    ($dst:expr, $stride:expr, $base:expr, $len:expr, |$x:ident| $f:expr) => {{
        let (r0, rest) = $dst.split_at_mut($stride);
        let (r1, rest) = rest.split_at_mut($stride);
        let (r2, rest) = rest.split_at_mut($stride);
        let (r3, rest) = rest.split_at_mut($stride);
        let (r4, r5) = rest.split_at_mut($stride);
        let base = $base;
        let (r0, r1, r2) = (&mut r0[base..], &mut r1[base..], &mut r2[base..]);
        let (r3, r4, r5) = (&mut r3[base..], &mut r4[base..], &mut r5[base..]);
        store_six!((r0, r1, r2, r3, r4, r5), $len, |$x| $f);
    }};
}

/// `$f` (six values) for every `$x < $len` into the first `$len` elements
/// of six slices: value `i` to slice `i`. The store loop of [`six_rows!`]
/// and [`along_rows!`].
macro_rules! store_six {
    (($r0:ident, $r1:ident, $r2:ident, $r3:ident, $r4:ident, $r5:ident), $len:expr,
     |$x:ident| $f:expr) => {{
        let len = $len;
        let (r0, r1, r2) = (&mut $r0[..len], &mut $r1[..len], &mut $r2[..len]);
        let (r3, r4, r5) = (&mut $r3[..len], &mut $r4[..len], &mut $r5[..len]);
        for $x in 0..len {
            let v = $f;
            r0[$x] = v[0];
            r1[$x] = v[1];
            r2[$x] = v[2];
            r3[$x] = v[3];
            r4[$x] = v[4];
            r5[$x] = v[5];
        }
    }};
}

simd_fn! {
    /// Row `row`'s `depth` filters, transformed, into `out` (`[ξ][d]`).
    /// `work` holds `(9 + 18)·depth` floats.
    fn filter_row(
        row: usize,
        rows: usize,
        depth: usize,
        w: &[f32],
        transposed: bool,
        work: &mut [f32],
        out: &mut [f32],
    ) {
        let (taps, cols) = work.split_at_mut(9 * depth);
        // Tap-major: taps[t][d].
        for d in 0..depth {
            if transposed {
                let f = &w[(d * rows + row) * 9..][..9];
                for t in 0..9 {
                    taps[t * depth + d] = f[8 - t];
                }
            } else {
                let f = &w[(row * depth + d) * 9..][..9];
                for t in 0..9 {
                    taps[t * depth + d] = f[t];
                }
            }
        }
        // G·g down the columns, then ·Gᵀ along the rows, vectorised over d:
        // first col[x][r][d]…
        for x in 0..3 {
            let (g0, g1, g2) = (
                &taps[x * depth..(x + 1) * depth],
                &taps[(3 + x) * depth..(4 + x) * depth],
                &taps[(6 + x) * depth..(7 + x) * depth],
            );
            let dst = &mut cols[x * ALPHA * depth..(x + 1) * ALPHA * depth];
            six_rows!(dst, depth, 0, depth, |d| g_col(g0[d], g1[d], g2[d]));
        }
        // …then out[r·6 + c][d].
        for rr in 0..ALPHA {
            let src = |x: usize| &cols[(x * ALPHA + rr) * depth..][..depth];
            let (k0, k1, k2) = (src(0), src(1), src(2));
            let dst = &mut out[rr * ALPHA * depth..(rr + 1) * ALPHA * depth];
            six_rows!(dst, depth, 0, depth, |d| g_col(k0[d], k1[d], k2[d]));
        }
    }
}

/// `G · (g0, g1, g2)` for F(4×4, 3×3).
#[inline(always)]
fn g_col(g0: f32, g1: f32, g2: f32) -> [f32; ALPHA] {
    let a = g0 + g2;
    let b = g0 * (1.0 / 24.0) + g2 * (1.0 / 6.0);
    [
        g0 * 0.25,
        (a + g1) * (-1.0 / 6.0),
        (a - g1) * (-1.0 / 6.0),
        b + g1 * (1.0 / 12.0),
        b - g1 * (1.0 / 12.0),
        g2,
    ]
}

/// `Bᵀ · d` for F(4×4, 3×3).
#[inline(always)]
fn bt(d: [f32; ALPHA]) -> [f32; ALPHA] {
    [
        4.0 * d[0] - 5.0 * d[2] + d[4],
        -4.0 * (d[1] + d[2]) + (d[3] + d[4]),
        4.0 * (d[1] - d[2]) + (d[4] - d[3]),
        2.0 * (d[3] - d[1]) + (d[4] - d[2]),
        2.0 * (d[1] - d[3]) + (d[4] - d[2]),
        4.0 * d[1] - 5.0 * d[3] + d[5],
    ]
}

/// `Aᵀ · m` for F(4×4, 3×3).
#[inline(always)]
fn at(m: [f32; ALPHA]) -> [f32; M] {
    let (p, q) = (m[1] + m[2], m[1] - m[2]);
    let (r, s) = (m[3] + m[4], m[3] - m[4]);
    [m[0] + p + r, q + 2.0 * s, p + 4.0 * r, q + 8.0 * s + m[5]]
}

/// Transforms `count` images of `x` (a slice starting at the first, `c`
/// planes of `h×w` each) into `v`: `V[block][ξ][c][j]`, tile `t` of
/// image `i` at column `i·tiles + t`, blocks of [`NB`] columns.
fn transform_inputs(c: usize, h: usize, w: usize, x: &[f32], count: usize, v: &mut [f32]) {
    transform_planes(c, h, w, x, count, v, false);
}

/// [`transform_inputs`] (`grads = false`: `Bᵀ d B` of the padded 6×6
/// patches) or, with `grads`, `A d Aᵀ` of the 4×4 output-gradient tiles,
/// into the same layout, one rayon task per channel. Each block of [`NB`]
/// columns is transformed as one: the patches of its tiles — of several
/// images where planes are small — gathered lane by lane, then both
/// passes vectorised across the block's columns, the second writing
/// `V`'s rows directly.
fn transform_planes(
    c: usize,
    h: usize,
    w: usize,
    x: &[f32],
    count: usize,
    v: &mut [f32],
    grads: bool,
) {
    let (th, tw) = (h / M, w / M);
    let (plane, filled) = (h * w, count * th * tw);
    let blocks = filled.div_ceil(NB);
    let x = &x[..count * c * plane];
    assert!(v.len() >= blocks * XI * c * NB);
    let out = Shared(v.as_mut_ptr());
    let (rw, padded) = (w + 2, (h + 2) * (w + 2));
    // Where each column's patch starts: in the padded planes of one
    // channel (inputs), or from channel `ch`'s plane of the first image
    // (gradients). Columns past the chunk's tiles read the first patch
    // (finite values whose products are never read, or are multiplied by
    // zeros).
    let firsts = if grads {
        tile_offsets(count, h, w, c * plane, w, blocks * NB)
    } else {
        tile_offsets(count, h, w, padded, rw, blocks * NB)
    };
    let level = dispatch();
    (0..c).into_par_iter().for_each_init(
        || Scratch::new(if grads { 0 } else { count * padded }),
        |s, ch| {
            let (data, stride, side): (&[f32], usize, usize) = if grads {
                (&x[ch * plane..], w, M)
            } else {
                // The chunk's planes of `ch`, each inside a zero border
                // (written once per task: only the interiors change).
                for i in 0..count {
                    let src = &x[(i * c + ch) * plane..][..plane];
                    let dst = &mut s.pad[i * padded..][..padded];
                    for (y, row) in src.chunks_exact(w).enumerate() {
                        dst[(y + 1) * rw + 1..][..w].copy_from_slice(row);
                    }
                }
                (&s.pad, rw, ALPHA)
            };
            for (block, first) in firsts.chunks_exact(NB).enumerate() {
                gather_patches(level, data, first, stride, side, &mut s.d);
                let rows: [&mut [f32]; XI] = std::array::from_fn(|xi| {
                    let at = ((block * XI + xi) * c + ch) * NB;
                    // SAFETY: `at + NB ≤ blocks·XI·c·NB ≤ v.len()`
                    // (checked above); row (block, ξ, ch) of `V`, which only
                    // this task (channel `ch`) writes, each row once here,
                    // and no other reference to `v` is alive.
                    unsafe { std::slice::from_raw_parts_mut(out.ptr().add(at), NB) }
                });
                if grads {
                    grad_block(&s.d, &mut s.e, rows);
                } else {
                    input_block(&s.d, &mut s.e, rows);
                }
            }
        },
    );
}

/// Where each tile of `count` images of `h×w` planes starts, column by
/// column (tile `t` of image `i` at column `i·tiles + t`), for planes
/// `image` floats apart with rows `row` apart; `len` entries, those past
/// the tiles 0.
fn tile_offsets(
    count: usize,
    h: usize,
    w: usize,
    image: usize,
    row: usize,
    len: usize,
) -> Vec<usize> {
    let (th, tw) = (h / M, w / M);
    let mut firsts = vec![0usize; len];
    let tiles =
        (0..count).flat_map(|i| (0..th).flat_map(move |ty| (0..tw).map(move |tx| (i, ty, tx))));
    for (f, (i, ty, tx)) in firsts.iter_mut().zip(tiles) {
        *f = i * image + M * ty * row + M * tx;
    }
    firsts
}

/// `d[(r·side + k)·NB + j] = data[first[j] + r·stride + k]` for `r, k <
/// side`, `j < NB`: the `side × side` patch at each lane's `first`, laid
/// out position by position, [`NB`] lanes each — with the level's
/// gather instruction where it has one.
fn gather_patches(
    level: CpuLevel,
    data: &[f32],
    first: &[usize],
    stride: usize,
    side: usize,
    d: &mut [f32],
) {
    let last = first.iter().max().copied().unwrap_or(0) + (side - 1) * stride + side;
    assert!(first.len() == NB && last <= data.len() && side * side * NB <= d.len());
    #[cfg(target_arch = "x86_64")]
    if level != CpuLevel::Baseline && last <= i32::MAX as usize {
        let idx: [i32; NB] = std::array::from_fn(|j| first[j] as i32);
        // SAFETY: the CPU runs the level's instructions (the dispatched
        // level); every index read is at most `last − 1 < data.len()` and
        // fits in an `i32` (both checked), and `d` holds `side²·NB` floats.
        unsafe {
            if level == CpuLevel::V4 {
                x86::gather_v4(data.as_ptr(), &idx, stride, side, d.as_mut_ptr());
            } else {
                x86::gather_v3(data.as_ptr(), &idx, stride, side, d.as_mut_ptr());
            }
        }
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = level;
    for r in 0..side {
        for k in 0..side {
            let off = r * stride + k;
            let dst = &mut d[(r * side + k) * NB..][..NB];
            for (v, &f) in dst.iter_mut().zip(first) {
                *v = data[f + off];
            }
        }
    }
}

/// Per-task buffers of the tile transforms.
struct Scratch {
    /// The chunk's planes of one channel, zero-padded (the input transform
    /// only): 1 row and column before, 1 after.
    pad: Vec<f32>,
    /// One block's patches, `[position][lane]`, [`NB`] lanes.
    d: Vec<f32>,
    /// The first pass (down the columns), `[column][r'][lane]`.
    e: Vec<f32>,
}

impl Scratch {
    fn new(pad: usize) -> Self {
        Self {
            pad: vec![0f32; pad],
            d: vec![0f32; XI * NB],
            e: vec![0f32; XI * NB],
        }
    }
}

/// The second pass of a block transform: for each `r'`, `f` of row `r'`
/// of the first pass (`$e`, `[column][r'][lane]`; `$q(k)` is column `k`'s
/// lanes) into the six rows `r'·6 + s'` of `$rows`, vectorised across the
/// lanes. A macro for the reason [`six_rows!`] is.
macro_rules! along_rows {
    ($e:expr, $rows:expr, |$q:ident, $j:ident| $f:expr) => {
        let mut rows = $rows.into_iter();
        for rr in 0..ALPHA {
            let $q = |k: usize| &$e[(k * ALPHA + rr) * NB..][..NB];
            let mut next = || rows.next().unwrap_or_default();
            let (r0, r1, r2, r3, r4, r5) = (next(), next(), next(), next(), next(), next());
            store_six!((r0, r1, r2, r3, r4, r5), NB, |$j| $f);
        }
    };
}

simd_fn! {
    /// `Bᵀ d B` of a block's 6×6 patches (`d`, `[r·6 + k][lane]`) into the
    /// 36 rows `rows` (`ξ = r'·6 + s'`): `Bᵀ` down the columns, then along
    /// the rows, each vectorised across the block's lanes.
    fn input_block(d: &[f32], e: &mut [f32], rows: [&mut [f32]; XI]) {
        for k in 0..ALPHA {
            let p = |r: usize| &d[(r * ALPHA + k) * NB..][..NB];
            let (d0, d1, d2, d3, d4, d5) = (p(0), p(1), p(2), p(3), p(4), p(5));
            let dst = &mut e[k * ALPHA * NB..(k + 1) * ALPHA * NB];
            six_rows!(dst, NB, 0, NB, |j| bt([d0[j], d1[j], d2[j], d3[j], d4[j], d5[j]]));
        }
        along_rows!(e, rows, |q, j| {
            let (q0, q1, q2, q3, q4, q5) = (q(0), q(1), q(2), q(3), q(4), q(5));
            bt([q0[j], q1[j], q2[j], q3[j], q4[j], q5[j]])
        });
    }
}

/// `A · (d0, d1, d2, d3)` for F(4×4, 3×3): the adjoint of [`at`].
#[inline(always)]
fn a_col(d: [f32; M]) -> [f32; ALPHA] {
    let (p, q) = (d[0] + d[2], d[1] + d[3]);
    let (r, s) = (d[0] + 4.0 * d[2], 2.0 * d[1] + 8.0 * d[3]);
    [d[0], p + q, p - q, r + s, r - s, d[3]]
}

simd_fn! {
    /// `A d Aᵀ` of a block's 4×4 tiles (`d`, `[r·4 + k][lane]`) into the 36
    /// rows `rows`, as [`input_block`] does.
    fn grad_block(d: &[f32], e: &mut [f32], rows: [&mut [f32]; XI]) {
        for k in 0..M {
            let p = |r: usize| &d[(r * M + k) * NB..][..NB];
            let (d0, d1, d2, d3) = (p(0), p(1), p(2), p(3));
            let dst = &mut e[k * ALPHA * NB..(k + 1) * ALPHA * NB];
            six_rows!(dst, NB, 0, NB, |j| a_col([d0[j], d1[j], d2[j], d3[j]]));
        }
        along_rows!(e, rows, |q, j| {
            let (q0, q1, q2, q3) = (q(0), q(1), q(2), q(3));
            a_col([q0[j], q1[j], q2[j], q3[j]])
        });
    }
}

/// Whether the filter gradient's GEMMs run on [`outer_gemms`] (at least
/// [`OUTER_MIN_CHANNELS`] channels in and out) or [`dot_gemms`]; tests
/// force either ([`force_outer`]).
pub(crate) fn outer_products(o: usize, c: usize) -> bool {
    #[cfg(test)]
    if let Some(forced) = FORCE_OUTER.with(std::cell::Cell::get) {
        return forced;
    }
    o.min(c) >= OUTER_MIN_CHANNELS
}

#[cfg(test)]
thread_local! {
    static FORCE_OUTER: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with this thread's filter gradients on [`outer_gemms`]
/// (`outer`) or [`dot_gemms`], whatever the channel counts.
#[cfg(test)]
pub(crate) fn force_outer<R>(outer: bool, f: impl FnOnce() -> R) -> R {
    let before = FORCE_OUTER.with(|c| c.replace(Some(outer)));
    let r = f();
    FORCE_OUTER.with(|c| c.set(before));
    r
}

/// The weight gradient's 36 GEMMs as [`dot_gemms`] computes them, but
/// through the forward pass's micro-kernel ([`block`]): per ξ, `z`'s rows
/// packed `[row block][t][MR]` and `v`'s `[column block][t][NB]`
/// (transposed: `t` the tile, now the depth), then `MR × NB` tiles of
/// `du[ξ][o][c] = Σ_t z[o][t] · v[c][t]`, each a sum over the chunk's
/// columns in order, added to what `du` holds when `accumulate`. No lane
/// reductions, and each `v` panel is read once per row block from L2;
/// the price is the transposition of both operands.
#[allow(clippy::too_many_arguments)]
fn outer_gemms(
    level: CpuLevel,
    o: usize,
    c: usize,
    z: &[f32],
    v: &[f32],
    blocks: usize,
    accumulate: bool,
    du: &mut [f32],
) {
    thread_local! {
        /// The packed operands and one output tile, per rayon worker.
        static PACKED: std::cell::RefCell<[Vec<f32>; 3]> = std::cell::RefCell::default();
    }
    let depth = blocks * NB;
    let (row_blocks, col_blocks) = (o.div_ceil(MR), c.div_ceil(NB));
    let (sz, sv) = (XI * o * NB, XI * c * NB);
    assert!(z.len() >= blocks * sz && v.len() >= blocks * sv);
    du[..XI * o * c]
        .par_chunks_mut(o * c)
        .enumerate()
        .for_each(|(xi, dux)| {
            PACKED.with(|cell| {
                let [pa, pb, tile] = &mut *cell.borrow_mut();
                fit(pa, row_blocks * depth * MR);
                fit(pb, col_blocks * depth * NB);
                fit(tile, MR * NB);
                // Column block by column block (64 tiles), so that the
                // strided writes of one block's rows land close together.
                // Rows and columns past the edge repeat the last one;
                // their sums are not stored. Every element read below is
                // written here first.
                for k in 0..blocks {
                    for row in 0..row_blocks * MR {
                        let src = &z[k * sz + (xi * o + row.min(o - 1)) * NB..][..NB];
                        let dst = &mut pa[((row / MR) * depth + k * NB) * MR + row % MR..];
                        for (t, &x) in src.iter().enumerate() {
                            dst[t * MR] = x;
                        }
                    }
                    for col in 0..col_blocks * NB {
                        let src = &v[k * sv + (xi * c + col.min(c - 1)) * NB..][..NB];
                        let dst = &mut pb[((col / NB) * depth + k * NB) * NB + col % NB..];
                        for (t, &x) in src.iter().enumerate() {
                            dst[t * NB] = x;
                        }
                    }
                }
                for jb in 0..col_blocks {
                    let b = &pb[jb * depth * NB..][..depth * NB];
                    for ib in 0..row_blocks {
                        let a = &pa[ib * depth * MR..][..depth * MR];
                        // SAFETY: `tile` holds `MR` rows of `NB` floats,
                        // this thread's alone.
                        unsafe { block(level, depth, a, b, tile.as_mut_ptr(), NB) };
                        for (r, row) in tile.chunks_exact(NB).enumerate().take(o - ib * MR) {
                            let at = (ib * MR + r) * c + jb * NB;
                            store(&mut dux[at..][..NB.min(c - jb * NB)], row, accumulate);
                        }
                    }
                }
            });
        });
}

/// `dst = src` (the first chunk's sums), or `dst += src` when
/// `accumulate`, element by element over `dst`.
fn store(dst: &mut [f32], src: &[f32], accumulate: bool) {
    for (d, &x) in dst.iter_mut().zip(src) {
        if accumulate {
            *d += x;
        } else {
            *d = x;
        }
    }
}

/// Rows and columns of a [`dot_block`].
const DR: usize = 4;

/// The weight gradient's 36 GEMMs below [`OUTER_MIN_CHANNELS`], as
/// blocks of dot products, one rayon task per ξ:
/// `du[ξ][o][c] (+)= Σ_t z[t][o][ξ] · v[t][c][ξ]` over `blocks` column
/// blocks of `z` (`[block][ξ][o][NB]`) and `v` (`[block][ξ][c][NB]`);
/// added to what `du` holds when `accumulate`.
#[allow(clippy::too_many_arguments)]
fn dot_gemms(
    level: CpuLevel,
    o: usize,
    c: usize,
    z: &[f32],
    v: &[f32],
    blocks: usize,
    accumulate: bool,
    du: &mut [f32],
) {
    du[..XI * o * c]
        .par_chunks_mut(o * c)
        .enumerate()
        .for_each(move |(xi, dux)| {
            // Read in place: in the `[block][ξ][row][NB]` layout each
            // block's ξ rows are one contiguous panel. (Gathering each
            // row's blocks contiguous first, which the older
            // `[block][row][ξ][NB]` layout needed, measured 10–20 % slower
            // at 32×32 and 5 % at 4×4, 5–10 % faster at 16×16 and 8×8.)

            for ob in (0..o).step_by(DR) {
                for cb in (0..c).step_by(DR) {
                    // Rows past the edge repeat the last one; their sums
                    // are not stored.
                    let za = Rows {
                        data: z,
                        first: std::array::from_fn(|r| (xi * o + (ob + r).min(o - 1)) * NB),
                        stride: XI * o * NB,
                        blocks,
                    };
                    let vb = Rows {
                        data: v,
                        first: std::array::from_fn(|j| (xi * c + (cb + j).min(c - 1)) * NB),
                        stride: XI * c * NB,
                        blocks,
                    };
                    let acc = dot_block(level, &za, &vb);
                    for (r, row) in acc.iter().enumerate().take(o - ob) {
                        store(
                            &mut dux[(ob + r) * c + cb..][..DR.min(c - cb)],
                            row,
                            accumulate,
                        );
                    }
                }
            }
        });
}

/// [`DR`] rows of a [`dot_block`] operand: row `r`'s block `k` is
/// `data[first[r] + k·stride..][..NB]`, for `k < blocks`.
struct Rows<'a> {
    data: &'a [f32],
    first: [usize; DR],
    stride: usize,
    blocks: usize,
}

impl Rows<'_> {
    /// Whether every block of every row lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.blocks == 0
            || self
                .first
                .iter()
                .all(|f| f + (self.blocks - 1) * self.stride + NB <= self.data.len())
    }
}

/// `out[r][j] = Σ_l a[r][l] · b[j][l]` over every block of the rows, in
/// 16 lanes (lane `k` sums the columns `l ≡ k mod 16`, block by block, in
/// order), the lanes then added up.
fn dot_block(level: CpuLevel, a: &Rows<'_>, b: &Rows<'_>) -> [[f32; DR]; DR] {
    assert!(a.blocks == b.blocks && a.in_bounds() && b.in_bounds());
    #[cfg(target_arch = "x86_64")]
    if level == CpuLevel::V4 {
        // SAFETY: the CPU runs AVX-512 (the dispatched level); every block
        // lies inside its slice (checked).
        return unsafe { x86::dot_v4(a, b) };
    }
    #[cfg(target_arch = "x86_64")]
    if level == CpuLevel::V3 {
        // SAFETY: the CPU runs AVX2 and FMA (the dispatched level); every
        // block lies inside its slice (checked).
        return unsafe { x86::dot_v3(a, b) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = level;
    dot_portable(a, b)
}

simd_fn! {
    /// [`dot_block`] in portable Rust (products rounded before adding, the
    /// lanes added in order).
    fn dot_portable(a: &Rows<'_>, b: &Rows<'_>) -> [[f32; DR]; DR] {
        const L: usize = 16;
        let mut acc = [[[0f32; L]; DR]; DR];
        for k in 0..a.blocks {
            let ar: [&[f32]; DR] = std::array::from_fn(|r| &a.data[a.first[r] + k * a.stride..][..NB]);
            let br: [&[f32]; DR] = std::array::from_fn(|j| &b.data[b.first[j] + k * b.stride..][..NB]);
            for s in 0..NB / L {
                for (r, ar) in ar.iter().enumerate() {
                    let av = &ar[s * L..(s + 1) * L];
                    for (j, bj) in br.iter().enumerate() {
                        let bv = &bj[s * L..(s + 1) * L];
                        for l in 0..L {
                            acc[r][j][l] += av[l] * bv[l];
                        }
                    }
                }
            }
        }
        std::array::from_fn(|r| std::array::from_fn(|j| acc[r][j].iter().sum()))
    }
}

/// `dw[o][c] = Gᵀ du[·][o][c] G` for every filter (`du` is `[ξ][o][c]`),
/// one rayon task per output channel, vectorised across input channels.
fn untransform_filters(o: usize, c: usize, du: &[f32], dw: &mut [f32]) {
    dw.par_chunks_mut(c * 9).enumerate().for_each_init(
        || vec![0f32; (ALPHA * 3 + 9) * c],
        |buf, (oi, row)| untransform_row(oi, o, c, du, buf, row),
    );
}

/// `Gᵀ · (u0, …, u5)` for F(4×4, 3×3): the adjoint of [`g_col`].
#[inline(always)]
fn gt_col(u: [f32; ALPHA]) -> [f32; 3] {
    let (p, q) = (u[1] + u[2], u[1] - u[2]);
    let (r, s) = (u[3] + u[4], u[3] - u[4]);
    [
        u[0] * 0.25 + p * (-1.0 / 6.0) + r * (1.0 / 24.0),
        q * (-1.0 / 6.0) + s * (1.0 / 12.0),
        p * (-1.0 / 6.0) + r * (1.0 / 6.0) + u[5],
    ]
}

simd_fn! {
    /// Output channel `oi`'s filters from `du` into `row` (`c × 3 × 3`).
    fn untransform_row(oi: usize, o: usize, c: usize, du: &[f32], buf: &mut [f32], row: &mut [f32]) {
        let (half, taps) = buf.split_at_mut(ALPHA * 3 * c);
        // Along each transformed row: half[r'][x][ci] = (Gᵀ u[r'][·])[x].
        for rr in 0..ALPHA {
            let src = |cc: usize| &du[((rr * ALPHA + cc) * o + oi) * c..][..c];
            let (u0, u1, u2, u3, u4, u5) = (src(0), src(1), src(2), src(3), src(4), src(5));
            let dst = &mut half[rr * 3 * c..(rr + 1) * 3 * c];
            let (h0, rest) = dst.split_at_mut(c);
            let (h1, h2) = rest.split_at_mut(c);
            for ci in 0..c {
                let v = gt_col([u0[ci], u1[ci], u2[ci], u3[ci], u4[ci], u5[ci]]);
                h0[ci] = v[0];
                h1[ci] = v[1];
                h2[ci] = v[2];
            }
        }
        // Down the columns: taps[y·3 + x][ci].
        for x in 0..3 {
            let src = |rr: usize| &half[(rr * 3 + x) * c..][..c];
            let (a0, a1, a2, a3, a4, a5) = (src(0), src(1), src(2), src(3), src(4), src(5));
            let (t0, rest) = taps.split_at_mut(3 * c);
            let (t1, t2) = rest.split_at_mut(3 * c);
            let (t0, t1, t2) = (&mut t0[x * c..][..c], &mut t1[x * c..][..c], &mut t2[x * c..][..c]);
            for ci in 0..c {
                let v = gt_col([a0[ci], a1[ci], a2[ci], a3[ci], a4[ci], a5[ci]]);
                t0[ci] = v[0];
                t1[ci] = v[1];
                t2[ci] = v[2];
            }
        }
        for (ci, f) in row.chunks_exact_mut(9).enumerate() {
            for (t, v) in f.iter_mut().enumerate() {
                *v = taps[t * c + ci];
            }
        }
    }
}

/// The 36 GEMMs `M_ξ = U_ξ · V_ξ` over the first `used` columns, one rayon
/// task per ξ (so that each task's `V_ξ`, one column block at a time,
/// stays in cache across all row blocks). `m` is `[row][ξ][col]`,
/// `row_blocks·MR` rows of `XI·cols`.
#[allow(clippy::too_many_arguments)]
fn gemms(
    level: CpuLevel,
    depth: usize,
    row_blocks: usize,
    u: &[f32],
    v: &[f32],
    cols: usize,
    used: usize,
    m: &mut [f32],
) {
    let panel = depth * MR;
    let ld = XI * cols;
    let len = row_blocks * MR * ld;
    assert!(m.len() >= len);
    let out = Shared(m.as_mut_ptr());
    (0..XI).into_par_iter().for_each(|xi| {
        for jb in 0..used / NB {
            let b = &v[(jb * XI + xi) * depth * NB..];
            for ib in 0..row_blocks {
                let a = &u[(ib * XI + xi) * panel..][..panel];
                let at = ib * MR * ld + xi * cols + jb * NB;
                assert!(at + (MR - 1) * ld + NB <= len);
                // SAFETY: `block` writes `NB` floats in each of `MR` rows
                // `ld` apart from `at`: inside `m` (checked), and in the
                // columns of ξ, which only this task writes (no two tasks'
                // writes overlap, and no reference to `m` is alive).
                unsafe { block(level, depth, a, b, out.ptr().add(at), ld) };
            }
        }
    });
}

/// One micro-kernel block: `out[r][j] = Σ_k a[k][r] · b[k][j]` for
/// `r < MR`, `j < NB`, rows of `out` `ld` apart. `a` is `depth × MR`
/// row-major; `b` is `depth × NB` row-major (one ξ of a [`transform_inputs`] block).
///
/// # Safety
/// `out` is valid for writes of `NB` floats at each of `out + r·ld`,
/// `r < MR`, which nothing else reads or writes meanwhile.
unsafe fn block(level: CpuLevel, depth: usize, a: &[f32], b: &[f32], out: *mut f32, ld: usize) {
    const LDB: usize = NB;
    assert!(depth > 0 && a.len() >= depth * MR && b.len() >= (depth - 1) * LDB + NB);
    #[cfg(target_arch = "x86_64")]
    match level {
        // SAFETY: the dispatched level is one the CPU runs; `a` and `b`
        // were checked to hold what the kernels read, `out` is the
        // caller's contract.
        CpuLevel::V4 => {
            return unsafe { x86::block_v4(depth, a.as_ptr(), b.as_ptr(), LDB, out, ld) };
        }
        // SAFETY: as above.
        CpuLevel::V3 => {
            return unsafe { x86::block_v3(depth, a.as_ptr(), b.as_ptr(), LDB, out, ld) };
        }
        CpuLevel::Baseline => {}
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = level;
    // SAFETY: the caller's contract.
    unsafe { block_portable(depth, a, b, LDB, out, ld) };
}

/// [`block`] in portable Rust: 16-column strips, products rounded before
/// they are added.
///
/// # Safety
/// As [`block`].
unsafe fn block_portable(depth: usize, a: &[f32], b: &[f32], ldb: usize, out: *mut f32, ld: usize) {
    const S: usize = 16;
    for strip in 0..NB / S {
        let mut acc = [[0f32; S]; MR];
        for k in 0..depth {
            let av = &a[k * MR..(k + 1) * MR];
            let bv = &b[k * ldb + strip * S..][..S];
            for (row, &ar) in acc.iter_mut().zip(av) {
                for (c, &bj) in row.iter_mut().zip(bv) {
                    *c += ar * bj;
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            // SAFETY: row `r`, columns `strip·S..+S < NB`: the caller's
            // contract.
            unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), out.add(r * ld + strip * S), S) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{DR, M, MR, NB, Rows};

    /// [`super::gather_patches`] with AVX-512 gathers, 16 lanes at a time.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `data + first[j] + r·stride + k` is readable
    /// for every lane `j` and `r, k < side`; `d` is writable for
    /// `side²·NB` floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather_v4(
        data: *const f32,
        first: &[i32; NB],
        stride: usize,
        side: usize,
        d: *mut f32,
    ) {
        // Lanes 0, 4, …, 28 of two vectors into the lower eight.
        let every4 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0);
        for (g, f) in first.chunks_exact(16).enumerate() {
            // Eight neighbouring tiles of a row of tiles start 4 floats
            // apart: their values are every fourth of 29 contiguous ones,
            // two loads and a permutation instead of a gather (which
            // costs as many loads as lanes).
            let run = |s: usize| (1..8).all(|j| f[s + j] == f[s] + 4 * j as i32);
            if run(0) && run(8) {
                let (f0, f8) = (f[0] as usize, f[8] as usize);
                for r in 0..side {
                    for k in 0..side {
                        let off = r * stride + k;
                        // SAFETY: the caller's contract: lane `j < 8` of
                        // each half reads `p + 4j ≤ p + 28`, which the
                        // masked load does not pass.
                        unsafe {
                            let half = |p: *const f32| {
                                let (a, b) =
                                    (_mm512_loadu_ps(p), _mm512_maskz_loadu_ps(0x1FFF, p.add(16)));
                                _mm512_permutex2var_ps(a, every4, b)
                            };
                            let (lo, hi) = (half(data.add(f0 + off)), half(data.add(f8 + off)));
                            let v = _mm512_shuffle_f32x4::<0x44>(lo, hi);
                            _mm512_storeu_ps(d.add((r * side + k) * NB + 16 * g), v);
                        }
                    }
                }
                continue;
            }
            // SAFETY: `f` holds 16 indices.
            let base = unsafe { _mm512_loadu_si512(f.as_ptr().cast()) };
            for r in 0..side {
                for k in 0..side {
                    let off = _mm512_set1_epi32((r * stride + k) as i32);
                    // SAFETY: the caller's contract.
                    unsafe {
                        let v = _mm512_i32gather_ps::<4>(_mm512_add_epi32(base, off), data);
                        _mm512_storeu_ps(d.add((r * side + k) * NB + 16 * g), v);
                    }
                }
            }
        }
    }

    /// [`super::gather_patches`] with AVX2 gathers, 8 lanes at a time.
    ///
    /// # Safety
    /// The CPU has AVX2; otherwise as [`gather_v4`].
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn gather_v3(
        data: *const f32,
        first: &[i32; NB],
        stride: usize,
        side: usize,
        d: *mut f32,
    ) {
        for g in 0..NB / 8 {
            // SAFETY: `first` holds NB indices.
            let base = unsafe { _mm256_loadu_si256(first.as_ptr().add(8 * g).cast()) };
            for r in 0..side {
                for k in 0..side {
                    let off = _mm256_set1_epi32((r * stride + k) as i32);
                    // SAFETY: the caller's contract.
                    unsafe {
                        let v = _mm256_i32gather_ps::<4>(data, _mm256_add_epi32(base, off));
                        _mm256_storeu_ps(d.add((r * side + k) * NB + 8 * g), v);
                    }
                }
            }
        }
    }

    /// [`super::scatter_tiles`] on AVX-512: each group of 16 lanes whose
    /// two halves are eight neighbouring tiles of a row (`first` 4 apart)
    /// writes each tile row's 32 pixels as two vectors, interleaved from
    /// the four `px` rows by permutation; other lanes go one by one.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the rest as [`super::scatter_tiles`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scatter_v4(px: &[f32], first: &[usize], y: *mut f32, w: usize) {
        let pp = px.as_ptr();
        // Pairs (p0[t], p1[t]) of lanes t = 0…7, or of t = 8…15.
        let pairs = [
            _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23),
            _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31),
        ];
        // Tiles 0…3 (then 4…7) of pairs a = (p0, p1) and b = (p2, p3).
        let quads = [
            _mm512_setr_epi32(0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23),
            _mm512_setr_epi32(8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31),
        ];
        let mut done = 0;
        for (g, f) in first.chunks_exact(16).enumerate() {
            let run = |s: usize| (1..8).all(|j| f[s + j] == f[s] + 4 * j);
            if !(run(0) && run(8)) {
                break;
            }
            for i in 0..M {
                // SAFETY: rows `i·4 + k` of `px`, lanes 16g…16g+15 (`px`
                // holds 16 rows of NB); the stores are tile row `i` of the
                // group's 16 tiles, the caller's contract.
                unsafe {
                    let p: [__m512; M] =
                        std::array::from_fn(|k| _mm512_loadu_ps(pp.add((i * M + k) * NB + 16 * g)));
                    for (h, sel) in pairs.iter().enumerate() {
                        let a = _mm512_permutex2var_ps(p[0], *sel, p[1]);
                        let b = _mm512_permutex2var_ps(p[2], *sel, p[3]);
                        let dst = y.add(f[8 * h] + i * w);
                        _mm512_storeu_ps(dst, _mm512_permutex2var_ps(a, quads[0], b));
                        _mm512_storeu_ps(dst.add(16), _mm512_permutex2var_ps(a, quads[1], b));
                    }
                }
            }
            done = 16 * (g + 1);
        }
        // SAFETY: the caller's contract.
        unsafe { super::scatter_portable(px, first, done, y, w) };
    }

    /// [`super::block`] on AVX-512: 6 rows × 4 vectors of 16 columns in 24
    /// registers, one fused multiply-add per product, channels in order.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a` holds `depth·MR` floats, `b`
    /// `(depth − 1)·ldb + NB`, `out` `(MR − 1)·ld + NB`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block_v4(
        depth: usize,
        a: *const f32,
        b: *const f32,
        ldb: usize,
        out: *mut f32,
        ld: usize,
    ) {
        const V: usize = NB / 16;
        let mut acc = [[_mm512_setzero_ps(); V]; MR];
        for k in 0..depth {
            // SAFETY: `k < depth`, within the caller's bounds.
            unsafe {
                let bk = b.add(k * ldb);
                let bv: [__m512; V] = std::array::from_fn(|j| _mm512_loadu_ps(bk.add(16 * j)));
                let ak = a.add(k * MR);
                for (r, row) in acc.iter_mut().enumerate() {
                    let ar = _mm512_set1_ps(*ak.add(r));
                    for (c, bj) in row.iter_mut().zip(&bv) {
                        *c = _mm512_fmadd_ps(ar, *bj, *c);
                    }
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (j, c) in row.iter().enumerate() {
                // SAFETY: within the caller's bounds.
                unsafe { _mm512_storeu_ps(out.add(r * ld + 16 * j), *c) };
            }
        }
    }

    /// [`super::dot_block`] on AVX-512: 16 registers of 16 lanes, one
    /// fused multiply-add per product; the lanes added in
    /// `_mm512_reduce_add_ps`'s tree, all 16 registers at once
    /// ([`reduce_16`]).
    ///
    /// # Safety
    /// The CPU has AVX-512F; every block of every row lies inside its
    /// slice.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot_v4(a: &Rows<'_>, b: &Rows<'_>) -> [[f32; DR]; DR] {
        let mut acc = [[_mm512_setzero_ps(); DR]; DR];
        let (pa, pb) = (a.data.as_ptr(), b.data.as_ptr());
        for k in 0..a.blocks {
            let ra: [*const f32; DR] =
                std::array::from_fn(|r| pa.wrapping_add(a.first[r] + k * a.stride));
            let rb: [*const f32; DR] =
                std::array::from_fn(|j| pb.wrapping_add(b.first[j] + k * b.stride));
            for s in 0..NB / 16 {
                // SAFETY: block `k` of each row is inside its slice (the
                // caller's contract) and `16·s + 16 ≤ NB`.
                unsafe {
                    let av: [__m512; DR] =
                        std::array::from_fn(|r| _mm512_loadu_ps(ra[r].add(16 * s)));
                    let bv: [__m512; DR] =
                        std::array::from_fn(|j| _mm512_loadu_ps(rb[j].add(16 * s)));
                    for (row, ar) in acc.iter_mut().zip(&av) {
                        for (c, bj) in row.iter_mut().zip(&bv) {
                            *c = _mm512_fmadd_ps(*ar, *bj, *c);
                        }
                    }
                }
            }
        }
        let sums = reduce_16(&acc);
        std::array::from_fn(|r| std::array::from_fn(|j| sums[DR * j + r]))
    }

    /// The lane sums of 16 registers, `acc[r][j]`'s at index `4·j + r`,
    /// each added in the tree `_mm512_reduce_add_ps` uses — lanes `i` and
    /// `i + 8`, then `i` and `i + 4`, then `i` and `i + 2`, then the two
    /// left — so the bits are its bits. Each level adds two registers'
    /// halves in one instruction after two shuffles: 15 additions and 30
    /// shuffles in all, against 16 reductions of 4 shuffles and 4
    /// additions each (a tenth to a third of a dot block's time at 4×4 to
    /// 32×32 planes, when reduced one by one).
    #[target_feature(enable = "avx512f")]
    fn reduce_16(acc: &[[__m512; DR]; DR]) -> [f32; DR * DR] {
        let a: [__m512; 16] = std::array::from_fn(|q| acc[q / DR][q % DR]);
        // Register k: the 8-lane sums of a[2k] (lanes 0..8) and a[2k + 1].
        let s: [__m512; 8] = std::array::from_fn(|k| {
            let (x, y) = (a[2 * k], a[2 * k + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x44>(x, y),
                _mm512_shuffle_f32x4::<0xEE>(x, y),
            )
        });
        // Register m: the 4-lane sums of a[4m..4m + 4], one per quarter.
        let u: [__m512; 4] = std::array::from_fn(|m| {
            let (x, y) = (s[2 * m], s[2 * m + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x88>(x, y),
                _mm512_shuffle_f32x4::<0xDD>(x, y),
            )
        });
        // Register p, quarter k: the 2-lane sums of a[8p + k], a[8p + 4 + k].
        let w: [__m512; 2] = std::array::from_fn(|p| {
            let (x, y) = (u[2 * p], u[2 * p + 1]);
            _mm512_add_ps(
                _mm512_shuffle_ps::<0x44>(x, y),
                _mm512_shuffle_ps::<0xEE>(x, y),
            )
        });
        // Quarter k, element t: the sum of a[4t + k].
        let total = _mm512_add_ps(
            _mm512_shuffle_ps::<0x88>(w[0], w[1]),
            _mm512_shuffle_ps::<0xDD>(w[0], w[1]),
        );
        let mut lanes = [0f32; 16];
        // SAFETY: `lanes` holds 16 floats.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), total) };
        // Lane 4k + t holds a[4t + k], that is acc[t][k].
        lanes
    }

    /// [`super::dot_block`] on AVX2 + FMA, to the bit what [`dot_v4`]
    /// gives: each of the 16 lanes kept as one of two 8-lane halves, one
    /// fused multiply-add per product, the lanes then added in the tree
    /// `_mm512_reduce_add_ps` uses (halves, then 128-bit halves, then
    /// pairs). Four passes over the blocks, a 2×2 corner each, keep the
    /// eight accumulators and eight operands in the 16 registers.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; every block of every row lies inside its
    /// slice.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_v3(a: &Rows<'_>, b: &Rows<'_>) -> [[f32; DR]; DR] {
        const H: usize = 2;
        let mut out = [[0f32; DR]; DR];
        let (pa, pb) = (a.data.as_ptr(), b.data.as_ptr());
        for r0 in (0..DR).step_by(H) {
            for j0 in (0..DR).step_by(H) {
                // acc[r][j][half]
                let mut acc = [[[_mm256_setzero_ps(); 2]; H]; H];
                for k in 0..a.blocks {
                    let ra: [*const f32; H] =
                        std::array::from_fn(|r| pa.wrapping_add(a.first[r0 + r] + k * a.stride));
                    let rb: [*const f32; H] =
                        std::array::from_fn(|j| pb.wrapping_add(b.first[j0 + j] + k * b.stride));
                    for s in 0..NB / 16 {
                        // SAFETY: block `k` of each row is inside its slice
                        // (the caller's contract) and `16·s + 16 ≤ NB`.
                        unsafe {
                            for half in 0..2 {
                                let off = 16 * s + 8 * half;
                                let av: [__m256; H] =
                                    std::array::from_fn(|r| _mm256_loadu_ps(ra[r].add(off)));
                                let bv: [__m256; H] =
                                    std::array::from_fn(|j| _mm256_loadu_ps(rb[j].add(off)));
                                for (row, ar) in acc.iter_mut().zip(&av) {
                                    for (c, bj) in row.iter_mut().zip(&bv) {
                                        c[half] = _mm256_fmadd_ps(*ar, *bj, c[half]);
                                    }
                                }
                            }
                        }
                    }
                }
                for (r, row) in acc.iter().enumerate() {
                    for (j, [lo, hi]) in row.iter().enumerate() {
                        let v8 = _mm256_add_ps(*lo, *hi);
                        let v4 =
                            _mm_add_ps(_mm256_castps256_ps128(v8), _mm256_extractf128_ps::<1>(v8));
                        let v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
                        let mut l = [0f32; 4];
                        // SAFETY: `l` holds 4 floats.
                        unsafe { _mm_storeu_ps(l.as_mut_ptr(), v2) };
                        out[r0 + r][j0 + j] = l[0] + l[1];
                    }
                }
            }
        }
        out
    }

    /// [`super::block`] on AVX2 + FMA: 16-column strips of 6 rows × 2
    /// vectors of 8 in 12 registers, one fused multiply-add per product,
    /// channels in order (the same bits as [`block_v4`]).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; bounds as [`block_v4`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block_v3(
        depth: usize,
        a: *const f32,
        b: *const f32,
        ldb: usize,
        out: *mut f32,
        ld: usize,
    ) {
        for strip in 0..NB / 16 {
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            for k in 0..depth {
                // SAFETY: `k < depth`, within the caller's bounds.
                unsafe {
                    let bk = b.add(k * ldb + 16 * strip);
                    let bv = [_mm256_loadu_ps(bk), _mm256_loadu_ps(bk.add(8))];
                    let ak = a.add(k * MR);
                    for (r, row) in acc.iter_mut().enumerate() {
                        let ar = _mm256_set1_ps(*ak.add(r));
                        for (c, bj) in row.iter_mut().zip(&bv) {
                            *c = _mm256_fmadd_ps(ar, *bj, *c);
                        }
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (j, c) in row.iter().enumerate() {
                    // SAFETY: within the caller's bounds.
                    unsafe { _mm256_storeu_ps(out.add(r * ld + 16 * strip + 8 * j), *c) };
                }
            }
        }
    }
}

/// `Aᵀ m A` of every tile into `count` images of `y` (`o` planes of `h×w`
/// each), reading `m` (`[row][ξ][col]`, `cols` columns), one rayon task
/// per output channel, one block of [`NB`] columns at a time: both passes
/// vectorised across the block's lanes ([`output_block`]), then each
/// lane's 4×4 pixels written into its plane ([`scatter_tiles`]).
fn transform_outputs(
    o: usize,
    h: usize,
    w: usize,
    m: &[f32],
    cols: usize,
    count: usize,
    y: &mut [MaybeUninit<f32>],
) {
    let plane = h * w;
    let filled = count * (h / M) * (w / M);
    let blocks = filled.div_ceil(NB);
    assert!(y.len() >= count * o * plane && m.len() >= o * XI * cols && blocks * NB <= cols);
    let firsts = tile_offsets(count, h, w, o * plane, w, blocks * NB);
    let out = Shared(y.as_mut_ptr().cast::<f32>());
    let level = dispatch();
    (0..o).into_par_iter().for_each_init(
        || vec![0f32; (ALPHA * M + M * M) * NB],
        |buf, ch| {
            let (e, px) = buf.split_at_mut(ALPHA * M * NB);
            for (block, first) in firsts.chunks_exact(NB).enumerate() {
                output_block(&m[ch * XI * cols + block * NB..], cols, e, px);
                let live = NB.min(filled - block * NB);
                // SAFETY: lane `j < live` is a tile of plane `ch` of one of
                // the chunk's images, at `ch·plane + first[j]` (its 4×4
                // pixels inside the plane, `w` apart, so inside `y`,
                // checked above); only this task writes plane `ch`, and no
                // reference to `y` is alive.
                unsafe {
                    scatter_tiles(level, px, &first[..live], out.ptr().add(ch * plane), w);
                }
            }
        },
    );
    // Each plane's tiles are all among the chunk's columns (`h` and `w`
    // are multiples of 4), so every element of `y`'s `count·o` planes is
    // written.
}

simd_fn! {
    /// One block of one output channel: `mc` holds its `[ξ][col]` products
    /// (`cols` apart, the block's first column first); `px[i·4 + j][lane]`
    /// receives pixel `(i, j)` of each lane's tile. Both passes of
    /// `Aᵀ · A` run across the lanes; `e` holds `6·4·NB` floats.
    fn output_block(mc: &[f32], cols: usize, e: &mut [f32], px: &mut [f32]) {
        // Along each transformed row: e[r'][j][lane] = Σ_c' Aᵀ[j][c'] m[r'·6 + c'][lane].
        for rr in 0..ALPHA {
            let src = |cc: usize| &mc[(rr * ALPHA + cc) * cols..][..NB];
            let (m0, m1, m2, m3, m4, m5) = (src(0), src(1), src(2), src(3), src(4), src(5));
            let dst = &mut e[rr * M * NB..(rr + 1) * M * NB];
            let (t0, rest) = dst.split_at_mut(NB);
            let (t1, rest) = rest.split_at_mut(NB);
            let (t2, t3) = rest.split_at_mut(NB);
            for t in 0..NB {
                let v = at([m0[t], m1[t], m2[t], m3[t], m4[t], m5[t]]);
                t0[t] = v[0];
                t1[t] = v[1];
                t2[t] = v[2];
                t3[t] = v[3];
            }
        }
        // Down the columns: px[i·4 + j][lane] = Σ_r' Aᵀ[i][r'] e[r'][j][lane].
        for j in 0..M {
            let src = |rr: usize| &e[(rr * M + j) * NB..][..NB];
            let (a0, a1, a2, a3, a4, a5) = (src(0), src(1), src(2), src(3), src(4), src(5));
            let (p0, rest) = px.split_at_mut(M * NB);
            let (p1, rest) = rest.split_at_mut(M * NB);
            let (p2, p3) = rest.split_at_mut(M * NB);
            let (p0, p1) = (&mut p0[j * NB..][..NB], &mut p1[j * NB..][..NB]);
            let (p2, p3) = (&mut p2[j * NB..][..NB], &mut p3[j * NB..][..NB]);
            for t in 0..NB {
                let v = at([a0[t], a1[t], a2[t], a3[t], a4[t], a5[t]]);
                p0[t] = v[0];
                p1[t] = v[1];
                p2[t] = v[2];
                p3[t] = v[3];
            }
        }
    }
}

/// `y[first[j] + i·w + k] = px[(i·4 + k)·NB + j]` for every lane `j <
/// first.len()` and `i, k < 4`: each lane's 4×4 tile into its plane —
/// for eight neighbouring tiles of a row, with AVX-512, four rows of 32
/// pixels by permutation instead of 16 stores a tile.
///
/// # Safety
/// `y + first[j] + i·w + k` is valid for writes for every lane and
/// `i, k < 4`, and nothing else reads or writes it meanwhile.
unsafe fn scatter_tiles(level: CpuLevel, px: &[f32], first: &[usize], y: *mut f32, w: usize) {
    assert!(first.len() <= NB && px.len() >= M * M * NB);
    #[cfg(target_arch = "x86_64")]
    if level == CpuLevel::V4 {
        // SAFETY: the CPU runs AVX-512 (the dispatched level); the rest is
        // the caller's contract.
        return unsafe { x86::scatter_v4(px, first, y, w) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = level;
    // SAFETY: the caller's contract.
    unsafe { scatter_portable(px, first, 0, y, w) };
}

/// [`scatter_tiles`] in portable Rust, for the lanes `skip..first.len()`
/// (`first` indexed by lane).
///
/// # Safety
/// As [`scatter_tiles`].
unsafe fn scatter_portable(px: &[f32], first: &[usize], skip: usize, y: *mut f32, w: usize) {
    for (j, &f) in first.iter().enumerate().skip(skip) {
        for i in 0..M {
            let row = [
                px[(i * M) * NB + j],
                px[(i * M + 1) * NB + j],
                px[(i * M + 2) * NB + j],
                px[(i * M + 3) * NB + j],
            ];
            // SAFETY: the caller's contract.
            unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), y.add(f + i * w), M) };
        }
    }
}
