//! SAM 2's memory cross-attention (one head, 2-D axial RoPE on queries and keys, keys
//! repeated over memory frames) with the key projection folded into the queries.
//!
//! The keys of a memory frame are `k_j = R(p_j) (W u_j + b)`: a `kv`-wide memory token `u_j`
//! (64 in SAM 2) projected to `hd` (256) channels, then rotated by the rotation of its grid
//! position `p_j = (x_j, y_j)`. The first `hd / 2` channels rotate with `x`, the rest with `y`.
//! A score is therefore
//!
//! ```text
//! q'_i . k_j = sum_d u_jd (Gx[i, x_j, d] + Gy[i, y_j, d]) + Gx[i, x_j, kv] + Gy[i, y_j, kv]
//! Gx[i, X, d] = <q'_i[x half], (R(X) w_d)[x half]>,  w_d = row d of W (w_kv = b)
//! ```
//!
//! `Gx` and `Gy` are `side x (kv + 1)` vectors per query (two GEMMs, computed once per query
//! block and shared by every memory frame and, when the queries are shared, by every object);
//! each score then costs `kv` multiply-adds instead of `hd`. The values are the memory tokens
//! themselves (the value projection is applied afterwards by the caller, see
//! `attention_shared_values`), so a memory token costs `2 kv` instead of `hd + kv`
//! multiply-adds: 2.5x fewer for SAM 2, for a fixed `2 side (kv + 1) hd / 2` per query.
//!
//! Same online-softmax (flash) scheme as `attention.rs`, with queries in SIMD lanes: scores,
//! probabilities and the output accumulator are stored key-major / channel-major with 32
//! queries per row, so the softmax and both products vectorise over queries.

use rayon::prelude::*;

use super::attention::{SendPtr, gemm_f32};
use super::simd::{dispatch, exp};

/// Queries per inner block (two 16-lane vectors).
const QB: usize = 32;
/// Queries per task (and row stride of the G tables).
const GT: usize = 32;

/// The rotated keys of the memory frames: `k = R(p) (u W + b)` over a `side x side` grid.
#[derive(Clone, Copy, Debug)]
pub struct RopeKeys<'a> {
    pub side: usize,
    /// Channels of queries and keys (one head); a multiple of 4.
    pub hd: usize,
    /// Width of the memory tokens `u` (and of the values).
    pub kv: usize,
    /// Key projection in burn's `[in, out]` layout: `[kv, hd]`.
    pub wk: &'a [f32],
    /// Key projection bias `[hd]`.
    pub bk: Option<&'a [f32]>,
    /// `axial_rope(hd, side, side)`: `[side * side, hd / 2]` (cos, sin) pairs.
    pub table: &'a [(f32, f32)],
}

impl RopeKeys<'_> {
    /// Rotated projection bases: `bx[X][d][c] = (R(x = X) w_d)[c]` for the `hd / 2` x-channels
    /// and `by[Y][d][c]` likewise for the y-channels (`w_kv` = bias), each
    /// `[side, kv + 1, hd / 2]`.
    fn bases(&self) -> (Vec<f32>, Vec<f32>) {
        let (s, hd, kv) = (self.side, self.hd, self.kv);
        let half = hd / 2;
        let per = hd / 2; // pairs per table row
        let zeros = vec![0f32; hd];
        let mut bx = vec![0f32; s * (kv + 1) * half];
        let mut by = vec![0f32; s * (kv + 1) * half];
        for pos in 0..s {
            let rx = &self.table[pos * per..(pos + 1) * per]; // (x = pos, y = 0)
            let ry = &self.table[pos * s * per..(pos * s + 1) * per]; // (x = 0, y = pos)
            for d in 0..=kv {
                let w: &[f32] = if d < kv {
                    &self.wk[d * hd..(d + 1) * hd]
                } else {
                    self.bk.unwrap_or(&zeros)
                };
                let o = (pos * (kv + 1) + d) * half;
                for c in 0..half / 2 {
                    let (cos, sin) = rx[c];
                    let (a, b) = (w[2 * c], w[2 * c + 1]);
                    bx[o + 2 * c] = a * cos - b * sin;
                    bx[o + 2 * c + 1] = a * sin + b * cos;
                    let (cos, sin) = ry[half / 2 + c];
                    let (a, b) = (w[half + 2 * c], w[half + 2 * c + 1]);
                    by[o + 2 * c] = a * cos - b * sin;
                    by[o + 2 * c + 1] = a * sin + b * cos;
                }
            }
        }
        (bx, by)
    }
}

/// Whether the folded kernel is expected to beat rotating the projected keys and running
/// `attention_shared_values`, from multiply-add counts weighted by measured rates (SAM 2's
/// shapes, `rope_cross_speed` below: the G tables cost about twice their count, the folded
/// products about 4/3; plain 31 ms per memory frame, folded ~50 ms + 15 ms per frame).
pub fn worth_folding(
    side: usize,
    hd: usize,
    kv: usize,
    frames: usize,
    objects: usize,
    shared_queries: bool,
) -> bool {
    let tables = side * (kv + 1) * hd * if shared_queries { 1 } else { objects };
    let folded = 2.0 * tables as f64 + (objects * frames * side * side * 2 * kv) as f64 * 4.0 / 3.0;
    let plain = (objects * frames * side * side * (hd + kv)) as f64;
    folded < plain
}

/// `softmax(q k^T * scale) @ u` for the rotated memory keys of [`RopeKeys`] followed by
/// `n_ptr` extra keys that are not rotated (SAM 2's object pointers, already projected).
///
/// * `q`: `[bq, side^2, hd]` rotated queries, `bq` = 1 (shared by every object) or `b`;
/// * `u`: `[b, frames * side^2 + n_ptr, kv]` memory tokens plus position encoding (the key
///   inputs); `vals`: same shape, the value inputs (memory tokens);
/// * `kptr`: `[b, n_ptr, hd]` projected pointer keys.
///
/// Returns `[b, side^2, kv]` (the attention-weighted value inputs).
#[allow(clippy::too_many_arguments)]
pub fn rope_cross_attention(
    keys: &RopeKeys<'_>,
    q: &[f32],
    bq: usize,
    u: &[f32],
    vals: &[f32],
    kptr: &[f32],
    b: usize,
    frames: usize,
    n_ptr: usize,
    scale: f32,
) -> Vec<f32> {
    rope_cross_impl(keys, q, bq, u, vals, kptr, b, frames, n_ptr, scale, false)
}

#[allow(clippy::too_many_arguments)]
fn rope_cross_impl(
    keys: &RopeKeys<'_>,
    q: &[f32],
    bq: usize,
    u: &[f32],
    vals: &[f32],
    kptr: &[f32],
    b: usize,
    frames: usize,
    n_ptr: usize,
    scale: f32,
    portable: bool,
) -> Vec<f32> {
    let (s, hd, kv) = (keys.side, keys.hd, keys.kv);
    let l = s * s;
    let lk = frames * l + n_ptr;
    assert!(
        hd % 4 == 0 && kv > 0 && (bq == 1 || bq == b),
        "rope_cross_attention: shapes"
    );
    assert!(
        q.len() == bq * l * hd
            && u.len() == b * lk * kv
            && vals.len() == b * lk * kv
            && kptr.len() == b * n_ptr * hd
            && keys.wk.len() == kv * hd
            && keys.table.len() == l * hd / 2
            && keys.bk.is_none_or(|v| v.len() == hd),
        "rope_cross_attention: buffer sizes"
    );
    let half = hd / 2;
    let (bx, by) = keys.bases();
    let blocks = l.div_ceil(GT);
    let mut out = vec![0f32; b * l * kv];
    let out_ptr = SendPtr(out.as_mut_ptr());
    let run_block = |bi: usize, blk: usize, objects: std::ops::Range<usize>| {
        let q0 = blk * GT;
        let nt = GT.min(l - q0);
        // G tables of this block of GT queries: [side][kv + 1][GT] (one GEMM each: wide
        // enough for `gemm` to run at full rate), lanes past `nt` stay zero
        let mut gx = vec![0f32; s * (kv + 1) * GT];
        let mut gy = vec![0f32; s * (kv + 1) * GT];
        let qp = q[(bi * l + q0) * hd..].as_ptr();
        for (g, basis, off) in [(&mut gx, &bx, 0), (&mut gy, &by, half)] {
            // SAFETY: basis is [side (kv + 1), half] row-major; q rows q0..q0 + nt exist;
            // g is [side (kv + 1), GT] and we write its first nt columns.
            unsafe {
                gemm_f32(
                    s * (kv + 1),
                    nt,
                    half,
                    g.as_mut_ptr(),
                    GT,
                    false,
                    basis.as_ptr(),
                    half as isize,
                    1,
                    qp.add(off),
                    1,
                    hd as isize,
                    scale,
                )
            };
        }
        let mut st = vec![0f32; (frames * s).max(n_ptr) * QB];
        let mut o = vec![0f32; kv * QB];
        for ob in objects {
            let ub = &u[ob * lk * kv..(ob + 1) * lk * kv];
            let vb = &vals[ob * lk * kv..(ob + 1) * lk * kv];
            // lanes of QB queries inside the block
            for sb in 0..nt.div_ceil(QB) {
                let qs = q0 + sb * QB;
                let nq = QB.min(nt - sb * QB);
                let mut state = Softmax {
                    max: [f32::NEG_INFINITY; QB],
                    sum: [0.0; QB],
                };
                o.fill(0.0);
                for y in 0..s {
                    row_step(
                        portable,
                        &gx[sb * QB..],
                        &gy[y * (kv + 1) * GT + sb * QB..],
                        ub,
                        vb,
                        y,
                        s,
                        kv,
                        frames,
                        &mut st,
                        &mut state,
                        &mut o,
                    );
                }
                if n_ptr > 0 {
                    let sp = &mut st[..n_ptr * QB];
                    // SAFETY: kptr rows of object ob, q rows qs..qs + nq; sp is [n_ptr, QB].
                    unsafe {
                        gemm_f32(
                            n_ptr,
                            nq,
                            hd,
                            sp.as_mut_ptr(),
                            QB,
                            false,
                            kptr[ob * n_ptr * hd..].as_ptr(),
                            hd as isize,
                            1,
                            qp.add(sb * QB * hd),
                            1,
                            hd as isize,
                            scale,
                        )
                    };
                    if nq < QB {
                        for row in sp.chunks_exact_mut(QB) {
                            row[nq..].fill(0.0);
                        }
                    }
                    ptr_step(sp, &vb[frames * l * kv..], n_ptr, kv, &mut state, &mut o);
                }
                for i in 0..nq {
                    let inv = 1.0 / state.sum[i];
                    // SAFETY: row (ob, qs + i) is written by this task only.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            out_ptr.get().add((ob * l + qs + i) * kv),
                            kv,
                        )
                    };
                    for (e, v) in dst.iter_mut().enumerate() {
                        *v = o[e * QB + i] * inv;
                    }
                }
            }
        }
    };
    // one object at a time in parallel (its memories, 2 x frames x 1 MB here, are re-read by
    // every query block and should stay in the cache); shared queries visit every object in
    // each block, so both threads still move through the objects together
    if bq == 1 {
        (0..blocks)
            .into_par_iter()
            .for_each(|blk| run_block(0, blk, 0..b));
    } else {
        for ob in 0..b {
            (0..blocks)
                .into_par_iter()
                .for_each(|blk| run_block(ob, blk, ob..ob + 1));
        }
    }
    out
}

/// Running max / sum of the online softmax, one lane per query.
struct Softmax {
    max: [f32; QB],
    sum: [f32; QB],
}

/// Fold `n` score rows (`[n][QB]`) into the softmax state: they become unnormalised
/// probabilities, and the output accumulator `o` (`[kv][QB]`) is rescaled.
#[inline(always)]
fn softmax_fold(st: &mut [f32], n: usize, state: &mut Softmax, o: &mut [f32]) {
    let mut m = state.max;
    for row in st[..n * QB].chunks_exact(QB) {
        for i in 0..QB {
            m[i] = if row[i] > m[i] { row[i] } else { m[i] };
        }
    }
    let mut corr = [0f32; QB];
    for i in 0..QB {
        corr[i] = if state.max[i] == f32::NEG_INFINITY {
            0.0
        } else {
            exp(state.max[i] - m[i])
        };
    }
    let mut sum = [0f32; QB];
    for row in st[..n * QB].chunks_exact_mut(QB) {
        for i in 0..QB {
            let e = exp(row[i] - m[i]);
            row[i] = e;
            sum[i] += e;
        }
    }
    for i in 0..QB {
        state.sum[i] = state.sum[i] * corr[i] + sum[i];
    }
    state.max = m;
    for row in o.chunks_exact_mut(QB) {
        for i in 0..QB {
            row[i] *= corr[i];
        }
    }
}

/// The two inner products of a row step: portable, or AVX-512 (`avx512::Avx512`).
trait Products {
    /// Scores of one grid position against `MC` memory frames:
    /// `st[t * st_stride..][..QB] = sum_d (gx + gy)[d] u[t * u_stride + d] + (gx + gy)[kv]`,
    /// with `gx` / `gy` the position's `kv + 1` G rows (`GT` apart).
    ///
    /// # Safety
    /// The CPU supports the implementation's features.
    unsafe fn scores<const MC: usize>(
        gx: &[f32],
        gy: &[f32],
        u: &[f32],
        u_stride: usize,
        kv: usize,
        st: &mut [f32],
        st_stride: usize,
    );

    /// `o[e0 + e][..QB] += sum_k p[k][..QB] v[k][e0 + e]` for `EC` value channels.
    ///
    /// # Safety
    /// As `scores`.
    unsafe fn av_cols<const EC: usize>(
        p: &[f32],
        v: &[f32],
        n: usize,
        kv: usize,
        e0: usize,
        o: &mut [f32],
    );
}

/// Plain Rust (LLVM vectorises it across the wrong loop: ~10x slower than AVX-512).
struct Portable;

impl Products for Portable {
    #[inline(always)]
    unsafe fn scores<const MC: usize>(
        gx: &[f32],
        gy: &[f32],
        u: &[f32],
        u_stride: usize,
        kv: usize,
        st: &mut [f32],
        st_stride: usize,
    ) {
        let us: [&[f32]; MC] = std::array::from_fn(|t| &u[t * u_stride..t * u_stride + kv]);
        let mut acc = [[0f32; QB]; MC];
        for d in 0..kv {
            let gxd: &[f32; QB] = gx[d * GT..d * GT + QB].try_into().expect("QB lanes");
            let gyd: &[f32; QB] = gy[d * GT..d * GT + QB].try_into().expect("QB lanes");
            let mut g = [0f32; QB];
            for i in 0..QB {
                g[i] = gxd[i] + gyd[i];
            }
            for t in 0..MC {
                let w = us[t][d];
                for i in 0..QB {
                    acc[t][i] = g[i].mul_add(w, acc[t][i]);
                }
            }
        }
        let gxb: &[f32; QB] = gx[kv * GT..kv * GT + QB].try_into().expect("QB lanes");
        let gyb: &[f32; QB] = gy[kv * GT..kv * GT + QB].try_into().expect("QB lanes");
        for (t, a) in acc.iter().enumerate() {
            let dst = &mut st[t * st_stride..t * st_stride + QB];
            for i in 0..QB {
                dst[i] = a[i] + (gxb[i] + gyb[i]);
            }
        }
    }

    #[inline(always)]
    unsafe fn av_cols<const EC: usize>(
        p: &[f32],
        v: &[f32],
        n: usize,
        kv: usize,
        e0: usize,
        o: &mut [f32],
    ) {
        let mut acc = [[0f32; QB]; EC];
        for (e, a) in acc.iter_mut().enumerate() {
            a.copy_from_slice(&o[(e0 + e) * QB..(e0 + e + 1) * QB]);
        }
        for k in 0..n {
            let pk: &[f32; QB] = p[k * QB..(k + 1) * QB].try_into().expect("QB lanes");
            let vk: &[f32; EC] = v[k * kv + e0..k * kv + e0 + EC]
                .try_into()
                .expect("EC channels");
            for e in 0..EC {
                let w = vk[e];
                for i in 0..QB {
                    acc[e][i] = pk[i].mul_add(w, acc[e][i]);
                }
            }
        }
        for (e, a) in acc.iter().enumerate() {
            o[(e0 + e) * QB..(e0 + e + 1) * QB].copy_from_slice(a);
        }
    }
}

/// `o += p @ v` over `n` keys: p `[n][QB]`, v `[n][kv]`, o `[kv][QB]`.
///
/// # Safety
/// As [`Products::scores`].
#[inline(always)]
unsafe fn av<P: Products>(p: &[f32], v: &[f32], n: usize, kv: usize, o: &mut [f32]) {
    assert!(p.len() >= n * QB && v.len() >= n * kv && o.len() >= kv * QB);
    let mut e0 = 0;
    // SAFETY: the caller's contract; sizes asserted above.
    unsafe {
        while e0 + 8 <= kv {
            P::av_cols::<8>(p, v, n, kv, e0, o);
            e0 += 8;
        }
        while e0 < kv {
            P::av_cols::<1>(p, v, n, kv, e0, o);
            e0 += 1;
        }
    }
}

/// Scores, softmax and values of grid row `y` of every memory frame.
///
/// # Safety
/// As [`Products::scores`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn row_step_with<P: Products>(
    gx: &[f32],
    gy: &[f32],
    u: &[f32],
    vals: &[f32],
    y: usize,
    s: usize,
    kv: usize,
    frames: usize,
    st: &mut [f32],
    state: &mut Softmax,
    o: &mut [f32],
) {
    let l = s * s;
    let stride_u = l * kv;
    let stride_st = s * QB;
    assert!(
        gx.len() >= (s * (kv + 1) - 1) * GT + QB
            && gy.len() >= kv * GT + QB
            && u.len() >= frames * stride_u
            && vals.len() >= frames * stride_u
            && st.len() >= frames * stride_st
            && y < s
    );
    // frames in chunks of at most 8 (8 frames x 2 registers of accumulators): the G sum of a
    // position is formed once per chunk
    for x in 0..s {
        let gxx = &gx[x * (kv + 1) * GT..];
        let mut t0 = 0;
        while t0 < frames {
            let mc = (frames - t0).min(8);
            let ur = &u[t0 * stride_u + (y * s + x) * kv..];
            let sr = &mut st[(t0 * s + x) * QB..];
            // SAFETY: the caller's contract; frames t0..t0 + mc at (y, x) are inside u / st.
            unsafe {
                match mc {
                    8 => P::scores::<8>(gxx, gy, ur, stride_u, kv, sr, stride_st),
                    7 => P::scores::<7>(gxx, gy, ur, stride_u, kv, sr, stride_st),
                    6 => P::scores::<6>(gxx, gy, ur, stride_u, kv, sr, stride_st),
                    5 => P::scores::<5>(gxx, gy, ur, stride_u, kv, sr, stride_st),
                    4 => P::scores::<4>(gxx, gy, ur, stride_u, kv, sr, stride_st),
                    3 => P::scores::<3>(gxx, gy, ur, stride_u, kv, sr, stride_st),
                    2 => P::scores::<2>(gxx, gy, ur, stride_u, kv, sr, stride_st),
                    _ => P::scores::<1>(gxx, gy, ur, stride_u, kv, sr, stride_st),
                }
            }
            t0 += mc;
        }
    }
    softmax_fold(st, frames * s, state, o);
    for t in 0..frames {
        let v0 = (t * l + y * s) * kv;
        // SAFETY: the caller's contract.
        unsafe {
            av::<P>(
                &st[t * s * QB..(t + 1) * s * QB],
                &vals[v0..v0 + s * kv],
                s,
                kv,
                o,
            )
        };
    }
}

/// [`row_step_with`] with the portable products.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn row_step_body(
    gx: &[f32],
    gy: &[f32],
    u: &[f32],
    vals: &[f32],
    y: usize,
    s: usize,
    kv: usize,
    frames: usize,
    st: &mut [f32],
    state: &mut Softmax,
    o: &mut [f32],
) {
    // SAFETY: the portable products need no CPU feature.
    unsafe { row_step_with::<Portable>(gx, gy, u, vals, y, s, kv, frames, st, state, o) }
}

#[inline(always)]
fn ptr_step_body(
    sp: &mut [f32],
    vals: &[f32],
    n: usize,
    kv: usize,
    state: &mut Softmax,
    o: &mut [f32],
) {
    softmax_fold(sp, n, state, o);
    // SAFETY: the portable products need no CPU feature.
    unsafe { av::<Portable>(sp, vals, n, kv, o) };
}

dispatch!(row_step_portable, row_step_body, (gx: &[f32], gy: &[f32], u: &[f32], vals: &[f32], y: usize, s: usize, kv: usize, frames: usize, st: &mut [f32], state: &mut Softmax, o: &mut [f32]));
dispatch!(ptr_step, ptr_step_body, (sp: &mut [f32], vals: &[f32], n: usize, kv: usize, state: &mut Softmax, o: &mut [f32]));

/// Whether the AVX-512 microkernels run on this CPU (the portable bodies are ~10x slower:
/// LLVM vectorises them across the wrong loop, and callers then keep the unfolded path).
pub fn fast_kernels() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[allow(clippy::too_many_arguments)]
fn row_step(
    portable: bool,
    gx: &[f32],
    gy: &[f32],
    u: &[f32],
    vals: &[f32],
    y: usize,
    s: usize,
    kv: usize,
    frames: usize,
    st: &mut [f32],
    state: &mut Softmax,
    o: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if !portable && fast_kernels() {
        // SAFETY: the CPU has the features (checked above); slice bounds are asserted inside.
        return unsafe { avx512::row_step(gx, gy, u, vals, y, s, kv, frames, st, state, o) };
    }
    let _ = portable;
    row_step_portable(gx, gy, u, vals, y, s, kv, frames, st, state, o)
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // register arrays indexed in step, as the loads
mod avx512 {
    //! The two inner products with explicit AVX-512: 32 queries in two registers, a broadcast
    //! memory / value channel per multiply-add.
    use std::arch::x86_64::*;

    use super::{GT, Products, QB, Softmax, row_step_with};

    pub(super) struct Avx512;

    impl Products for Avx512 {
        #[inline(always)]
        unsafe fn scores<const MC: usize>(
            gx: &[f32],
            gy: &[f32],
            u: &[f32],
            u_stride: usize,
            kv: usize,
            st: &mut [f32],
            st_stride: usize,
        ) {
            debug_assert!(gx.len() >= kv * GT + QB && gy.len() >= kv * GT + QB);
            debug_assert!(u.len() >= (MC - 1) * u_stride + kv);
            debug_assert!(st.len() >= (MC - 1) * st_stride + QB);
            let (gx, gy, u, st) = (gx.as_ptr(), gy.as_ptr(), u.as_ptr(), st.as_mut_ptr());
            // SAFETY (whole body): the CPU has AVX-512 (caller); every offset is inside the
            // slices (`row_step_with` asserts their sizes).
            unsafe {
                let mut a0 = [_mm512_setzero_ps(); MC];
                let mut a1 = [_mm512_setzero_ps(); MC];
                for d in 0..kv {
                    let g0 = _mm512_add_ps(
                        _mm512_loadu_ps(gx.add(d * GT)),
                        _mm512_loadu_ps(gy.add(d * GT)),
                    );
                    let g1 = _mm512_add_ps(
                        _mm512_loadu_ps(gx.add(d * GT + 16)),
                        _mm512_loadu_ps(gy.add(d * GT + 16)),
                    );
                    for t in 0..MC {
                        let w = _mm512_set1_ps(*u.add(t * u_stride + d));
                        a0[t] = _mm512_fmadd_ps(g0, w, a0[t]);
                        a1[t] = _mm512_fmadd_ps(g1, w, a1[t]);
                    }
                }
                let b0 = _mm512_add_ps(
                    _mm512_loadu_ps(gx.add(kv * GT)),
                    _mm512_loadu_ps(gy.add(kv * GT)),
                );
                let b1 = _mm512_add_ps(
                    _mm512_loadu_ps(gx.add(kv * GT + 16)),
                    _mm512_loadu_ps(gy.add(kv * GT + 16)),
                );
                for t in 0..MC {
                    let dst = st.add(t * st_stride);
                    _mm512_storeu_ps(dst, _mm512_add_ps(a0[t], b0));
                    _mm512_storeu_ps(dst.add(16), _mm512_add_ps(a1[t], b1));
                }
            }
        }

        #[inline(always)]
        unsafe fn av_cols<const EC: usize>(
            p: &[f32],
            v: &[f32],
            n: usize,
            kv: usize,
            e0: usize,
            o: &mut [f32],
        ) {
            let (p, v, o) = (p.as_ptr(), v.as_ptr(), o.as_mut_ptr());
            // SAFETY (whole body): the CPU has AVX-512 (caller); p holds n * QB floats, v n
            // rows of kv, o kv * QB (asserted by `av`).
            unsafe {
                let mut a0 = [_mm512_setzero_ps(); EC];
                let mut a1 = [_mm512_setzero_ps(); EC];
                for e in 0..EC {
                    a0[e] = _mm512_loadu_ps(o.add((e0 + e) * QB));
                    a1[e] = _mm512_loadu_ps(o.add((e0 + e) * QB + 16));
                }
                for k in 0..n {
                    let p0 = _mm512_loadu_ps(p.add(k * QB));
                    let p1 = _mm512_loadu_ps(p.add(k * QB + 16));
                    let vk = v.add(k * kv + e0);
                    for e in 0..EC {
                        let w = _mm512_set1_ps(*vk.add(e));
                        a0[e] = _mm512_fmadd_ps(p0, w, a0[e]);
                        a1[e] = _mm512_fmadd_ps(p1, w, a1[e]);
                    }
                }
                for e in 0..EC {
                    _mm512_storeu_ps(o.add((e0 + e) * QB), a0[e]);
                    _mm512_storeu_ps(o.add((e0 + e) * QB + 16), a1[e]);
                }
            }
        }
    }

    /// [`row_step_with`] with the AVX-512 products, compiled for AVX-512.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) unsafe fn row_step(
        gx: &[f32],
        gy: &[f32],
        u: &[f32],
        vals: &[f32],
        y: usize,
        s: usize,
        kv: usize,
        frames: usize,
        st: &mut [f32],
        state: &mut Softmax,
        o: &mut [f32],
    ) {
        // SAFETY: this function's own target features are the products' requirement.
        unsafe { row_step_with::<Avx512>(gx, gy, u, vals, y, s, kv, frames, st, state, o) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::attention::attention_shared_values;
    use crate::kernels::attention::tests::rand;
    use crate::position_encoding::axial_rope;

    /// The unfolded computation: project and rotate the keys, then `attention_shared_values`.
    #[allow(clippy::too_many_arguments)]
    fn unfolded(
        keys: &RopeKeys<'_>,
        q: &[f32],
        bq: usize,
        u: &[f32],
        vals: &[f32],
        kptr: &[f32],
        b: usize,
        frames: usize,
        n_ptr: usize,
        scale: f32,
    ) -> Vec<f32> {
        let (s, hd, kv) = (keys.side, keys.hd, keys.kv);
        let l = s * s;
        let lk = frames * l + n_ptr;
        let mut k = vec![0f32; b * lk * hd];
        for ob in 0..b {
            for j in 0..frames * l {
                let row = &mut k[(ob * lk + j) * hd..(ob * lk + j + 1) * hd];
                for (r, out) in row.iter_mut().enumerate() {
                    let mut acc = keys.bk.map_or(0.0, |bk| bk[r]) as f64;
                    for d in 0..kv {
                        acc += u[(ob * lk + j) * kv + d] as f64 * keys.wk[d * hd + r] as f64;
                    }
                    *out = acc as f32;
                }
                let t = &keys.table[(j % l) * hd / 2..(j % l + 1) * hd / 2];
                for (p, (cos, sin)) in row.chunks_exact_mut(2).zip(t) {
                    let (a, c) = (p[0], p[1]);
                    p[0] = a * cos - c * sin;
                    p[1] = a * sin + c * cos;
                }
            }
            for j in 0..n_ptr {
                let dst = (ob * lk + frames * l + j) * hd;
                k[dst..dst + hd]
                    .copy_from_slice(&kptr[(ob * n_ptr + j) * hd..(ob * n_ptr + j + 1) * hd]);
            }
        }
        let qb: Vec<f32> = if bq == 1 {
            (0..b).flat_map(|_| q.iter().copied()).collect()
        } else {
            q.to_vec()
        };
        attention_shared_values(&qb, &k, vals, b, l, lk, 1, hd, kv, scale)
    }

    fn check(side: usize, hd: usize, kv: usize, frames: usize, n_ptr: usize, b: usize, bq: usize) {
        let l = side * side;
        let lk = frames * l + n_ptr;
        let table = axial_rope(hd, side, side, 10000.0);
        let wk: Vec<f32> = rand(kv * hd, 1).iter().map(|v| v * 0.5).collect();
        let bk = rand(hd, 2);
        let keys = RopeKeys {
            side,
            hd,
            kv,
            wk: &wk,
            bk: Some(&bk),
            table: &table,
        };
        let q: Vec<f32> = rand(bq * l * hd, 3).iter().map(|v| v * 1.5).collect();
        let u = rand(b * lk * kv, 4);
        let vals = rand(b * lk * kv, 5);
        let kptr = rand(b * n_ptr * hd, 6);
        let scale = (hd as f32).powf(-0.5);
        let want = unfolded(&keys, &q, bq, &u, &vals, &kptr, b, frames, n_ptr, scale);
        for portable in [false, true] {
            let got = rope_cross_impl(
                &keys, &q, bq, &u, &vals, &kptr, b, frames, n_ptr, scale, portable,
            );
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                err < 2e-5,
                "side {side} hd {hd} kv {kv} frames {frames} ptr {n_ptr} b {b} bq {bq} portable {portable}: {err}"
            );
        }
    }

    #[test]
    fn folded_keys_match_rotated_projection() {
        check(8, 32, 16, 3, 4, 2, 2); // per-object queries, pointer tokens
        check(8, 32, 16, 2, 0, 3, 1); // queries shared by three objects, no pointers
        check(6, 16, 11, 10, 3, 1, 1); // partial query block, > 8 frames, odd kv
        check(4, 8, 8, 1, 0, 1, 1); // a single memory frame
    }

    /// Timing on SAM 2's shapes (4096 queries, 256 channels, 64-wide memories), folded vs
    /// rotate + `attention_shared_values`:
    /// `RAYON_NUM_THREADS=2 cargo test --release -p fastsam2-models rope_cross_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn rope_cross_speed() {
        let (side, hd, kv, n_ptr) = (64, 256, 64, 16);
        let l = side * side;
        let table = axial_rope(hd, side, side, 10000.0);
        let wk: Vec<f32> = rand(kv * hd, 1).iter().map(|v| v * 0.1).collect();
        let bk = rand(hd, 2);
        let keys = RopeKeys {
            side,
            hd,
            kv,
            wk: &wk,
            bk: Some(&bk),
            table: &table,
        };
        for frames in [1, 2, 4, 7] {
            let lk = frames * l + n_ptr;
            let q = rand(l * hd, 3);
            let u = rand(lk * kv, 4);
            let vals = rand(lk * kv, 5);
            let kptr = rand(n_ptr * hd, 6);
            let k = rand(lk * hd, 7);
            let time = |f: &dyn Fn()| {
                f();
                let t = std::time::Instant::now();
                for _ in 0..3 {
                    f();
                }
                t.elapsed().as_secs_f64() * 1e3 / 3.0
            };
            let folded = time(&|| {
                std::hint::black_box(rope_cross_attention(
                    &keys, &q, 1, &u, &vals, &kptr, 1, frames, n_ptr, 0.0625,
                ));
            });
            let plain = time(&|| {
                std::hint::black_box(attention_shared_values(
                    &q, &k, &vals, 1, l, lk, 1, hd, kv, 0.0625,
                ));
            });
            println!(
                "frames {frames}: folded {folded:.1} ms, rotated keys + shared-value attention {plain:.1} ms (without projecting/rotating the keys)"
            );
        }
    }
}
