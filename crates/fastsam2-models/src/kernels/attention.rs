//! Fused multi-head attention over token grids, reading q/k/v in place from a packed
//! projection buffer (no head split copies), with an optional bias that is never
//! materialised as [heads, L, L]:
//! * `Bias::RelPos`: SAM's decomposed relative position (`add_decomposed_rel_pos`):
//!   `bias[i, (ky, kx)] = <q_i, Rh[qy_i, ky]> + <q_i, Rw[qx_i, kx]>` with unscaled q;
//! * `Bias::PerHead`: a [heads, L, L] table shared by every grid (TinyViT).
//!
//! It runs as flash attention: online softmax over key tiles, `gemm` for the two block
//! products per tile.

use rayon::prelude::*;

use super::simd::{dispatch, exp};

/// Where q, k and v of a token and head live in the packed buffer.
#[derive(Clone, Copy, Debug)]
pub struct QkvLayout {
    /// Elements between two grids (batch items / windows).
    pub batch_stride: usize,
    /// Elements between two tokens.
    pub token_stride: usize,
    /// Elements between two heads.
    pub head_stride: usize,
    /// Offsets of q, k and v of head 0.
    pub q: usize,
    pub k: usize,
    pub v: usize,
}

impl QkvLayout {
    /// SAM ViT `qkv` output: per token [3, heads, head_dim].
    pub fn sam(nb_tokens: usize, dim: usize, head_dim: usize) -> Self {
        Self {
            batch_stride: nb_tokens * 3 * dim,
            token_stride: 3 * dim,
            head_stride: head_dim,
            q: 0,
            k: dim,
            v: 2 * dim,
        }
    }
    /// TinyViT `qkv` output: per token [heads, 3, key_dim].
    pub fn tiny_vit(nb_tokens: usize, heads: usize, key_dim: usize) -> Self {
        Self {
            batch_stride: nb_tokens * heads * 3 * key_dim,
            token_stride: heads * 3 * key_dim,
            head_stride: 3 * key_dim,
            q: 0,
            k: key_dim,
            v: 2 * key_dim,
        }
    }
}

/// Attention bias.
#[derive(Clone, Copy, Debug)]
pub enum Bias<'a> {
    None,
    /// `get_rel_pos` tables: `rh` [gh, gh, head_dim] = Rh[qy, ky, c], `rw` [gw, gw, head_dim].
    RelPos {
        rh: &'a [f32],
        rw: &'a [f32],
    },
    /// [heads, L, L], shared by every grid.
    PerHead(&'a [f32]),
}

/// Problem size: `nb` grids of `gh x gw` tokens, `nh` heads of `hd` channels.
#[derive(Clone, Copy, Debug)]
pub struct Grid {
    pub nb: usize,
    pub gh: usize,
    pub gw: usize,
    pub nh: usize,
    pub hd: usize,
    pub scale: f32,
}

impl Grid {
    /// The usual softmax scale, `hd^-0.5`.
    pub fn new(nb: usize, gh: usize, gw: usize, nh: usize, hd: usize) -> Self {
        Self {
            nb,
            gh,
            gw,
            nh,
            hd,
            scale: (hd as f32).powf(-0.5),
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);

impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: tasks write disjoint (token, head) slices of the output.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

#[derive(Clone, Copy)]
pub(crate) struct TileDims {
    m: usize,
    t: usize,
    hd: usize,
    gh: usize,
    gw: usize,
    /// first key row of the tile (RelPos) / first key token (PerHead)
    ky0: usize,
    k0: usize,
    q0: usize,
    l: usize,
    mode: u8,
}

const LANES: usize = 16;

/// Max of a slice with independent lane accumulators (vectorisable).
#[inline(always)]
fn max_of(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut it = v.chunks_exact(LANES);
    for ch in &mut it {
        for k in 0..LANES {
            acc[k] = if ch[k] > acc[k] { ch[k] } else { acc[k] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &x in it.remainder().iter().chain(acc.iter()) {
        m = if x > m { x } else { m };
    }
    m
}

/// v = exp(v - sub) in place; returns the sum (lane accumulators, vectorisable).
#[inline(always)]
fn exp_sub_sum(v: &mut [f32], sub: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut it = v.chunks_exact_mut(LANES);
    for ch in &mut it {
        for k in 0..LANES {
            let e = exp(ch[k] - sub);
            ch[k] = e;
            acc[k] += e;
        }
    }
    let mut s = 0f32;
    for x in it.into_remainder() {
        *x = exp(*x - sub);
        s += *x;
    }
    s + acc.iter().sum::<f32>()
}

#[inline(always)]
fn softmax_rows_body(v: &mut [f32], n: usize) {
    // Three passes over the (cache-resident) chunk so that the exp runs over whole 16-lane
    // vectors even when rows are short (SAM's decoder has 7-wide rows: one per token).
    for row in v.chunks_exact_mut(n) {
        let m = max_of(row);
        for x in row.iter_mut() {
            *x -= m;
        }
    }
    let mut it = v.chunks_exact_mut(LANES);
    for ch in &mut it {
        for x in ch.iter_mut() {
            *x = exp(*x);
        }
    }
    for x in it.into_remainder() {
        *x = exp(*x);
    }
    for row in v.chunks_exact_mut(n) {
        let inv = 1.0 / row.iter().sum::<f32>();
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}

dispatch!(softmax_rows_chunk, softmax_rows_body, (v: &mut [f32], n: usize));

/// In-place softmax of every length-`n` row of `v` (vectorised exp, parallel over rows).
pub fn softmax_rows(v: &mut [f32], n: usize) {
    assert!(
        n > 0 && v.len().is_multiple_of(n),
        "softmax_rows: {} not a multiple of {n}",
        v.len()
    );
    let rows_per_task = (1usize << 15).div_ceil(n).max(1);
    v.par_chunks_mut(rows_per_task * n)
        .for_each(|c| softmax_rows_chunk(c, n));
}

/// Add the bias to a score tile, then fold it into the running softmax state and rescale
/// the output accumulator. Scores become the tile's probabilities (unnormalised).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn softmax_update(
    s: &mut [f32],
    o: &mut [f32],
    row_max: &mut [f32],
    row_sum: &mut [f32],
    rh: &[f32],
    rw: &[f32],
    ph: &[f32],
    d: TileDims,
) {
    for i in 0..d.m {
        let row = &mut s[i * d.t..(i + 1) * d.t];
        match d.mode {
            1 => {
                let rwi = &rw[i * d.gw..(i + 1) * d.gw];
                for (r, chunk) in row.chunks_exact_mut(d.gw).enumerate() {
                    let add = rh[i * d.gh + d.ky0 + r];
                    for (v, w) in chunk.iter_mut().zip(rwi) {
                        *v += add + *w;
                    }
                }
            }
            2 => {
                let b = &ph[(d.q0 + i) * d.l + d.k0..(d.q0 + i) * d.l + d.k0 + d.t];
                for (v, w) in row.iter_mut().zip(b) {
                    *v += *w;
                }
            }
            _ => {}
        }
        let tmax = max_of(row);
        let old = row_max[i];
        let new = if tmax > old { tmax } else { old };
        let sum = exp_sub_sum(row, new);
        let corr = if old == f32::NEG_INFINITY {
            0.0
        } else {
            exp(old - new)
        };
        for v in &mut o[i * d.hd..(i + 1) * d.hd] {
            *v *= corr;
        }
        row_sum[i] = row_sum[i] * corr + sum;
        row_max[i] = new;
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn softmax_update_ref(
    s: &mut [f32],
    o: &mut [f32],
    row_max: &mut [f32],
    row_sum: &mut [f32],
    rh: &[f32],
    rw: &[f32],
    ph: &[f32],
    d: TileDims,
) {
    softmax_update(s, o, row_max, row_sum, rh, rw, ph, d)
}

dispatch!(pub(crate) softmax_tile, softmax_update_ref, (s: &mut [f32], o: &mut [f32], row_max: &mut [f32], row_sum: &mut [f32], rh: &[f32], rw: &[f32], ph: &[f32], d: TileDims));

/// dst = beta * lhs @ rhs (+ dst when `accumulate`), row-major dst with row stride `dst_rs`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const f32,
    rhs_rs: isize,
    rhs_cs: isize,
    beta: f32,
) {
    // SAFETY: the caller guarantees every pointer/stride combination stays in bounds.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            if accumulate { 1.0 } else { 0.0 },
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Flash attention of `m` query rows (row stride `q_rs`) against `lk` keys / values (row
/// strides `k_rs`, `v_rs`) in tiles of `tile` keys; q/k rows have `hd` channels, value rows
/// `vd`; writes the normalised output to `o` (m x vd). `dims(k0, t)` must report `hd = vd`
/// (it sizes the output rows). `dims(k0, t)` describes the bias of the tile starting at key `k0`.
///
/// # Safety
/// Every row pointer plus `hd` elements must be in bounds for `m` / `lk` rows.
#[allow(clippy::too_many_arguments)]
unsafe fn flash_rows(
    qp: *const f32,
    q_rs: isize,
    kp: *const f32,
    k_rs: isize,
    vp: *const f32,
    v_rs: isize,
    m: usize,
    lk: usize,
    hd: usize,
    vd: usize,
    scale: f32,
    tile: usize,
    o: &mut [f32],
    dims: impl Fn(usize, usize) -> TileDims,
    rh: &[f32],
    rw: &[f32],
    ph: &[f32],
) {
    let mut s = vec![0f32; m * tile];
    let mut row_max = vec![f32::NEG_INFINITY; m];
    let mut row_sum = vec![0f32; m];
    o.fill(0.0);
    let mut k0 = 0;
    while k0 < lk {
        let t = tile.min(lk - k0);
        // SAFETY: rows k0..k0+t exist (caller contract).
        unsafe {
            gemm_f32(
                m,
                t,
                hd,
                s.as_mut_ptr(),
                t,
                false,
                qp,
                q_rs,
                1,
                kp.offset(k0 as isize * k_rs),
                1,
                k_rs,
                scale,
            );
        }
        softmax_tile(
            &mut s[..m * t],
            o,
            &mut row_max,
            &mut row_sum,
            rh,
            rw,
            ph,
            dims(k0, t),
        );
        unsafe {
            gemm_f32(
                m,
                vd,
                t,
                o.as_mut_ptr(),
                vd,
                true,
                s.as_ptr(),
                t as isize,
                1,
                vp.offset(k0 as isize * v_rs),
                v_rs,
                1,
                1.0,
            );
        }
        k0 += t;
    }
    for i in 0..m {
        let inv = 1.0 / row_sum[i];
        for v in &mut o[i * vd..(i + 1) * vd] {
            *v *= inv;
        }
    }
}

/// Plain multi-head attention (no bias): q [b, lq, nh * hd], k / v [b, lk, nh * hd];
/// returns [b, lq, nh * hd]. Softmax scale `scale`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    b: usize,
    lq: usize,
    lk: usize,
    nh: usize,
    hd: usize,
    scale: f32,
) -> Vec<f32> {
    let c = nh * hd;
    assert!(
        q.len() == b * lq * c && k.len() == b * lk * c && v.len() == b * lk * c,
        "attention: buffer sizes"
    );
    // per-head values: head h reads columns h*hd.. of rows of width c
    let values = ValueLayout {
        batch_stride: lk * c,
        head_offset: hd,
        row_stride: c,
        width: hd,
    };
    blocked_attention(q, k, v, b, lq, lk, nh, hd, values, scale)
}

/// Attention whose values are shared by every head: q / k [b, l, nh * hd], v [b, lk, vd];
/// returns [b, lq, nh, vd] = softmax(q_h k_h^T * scale) @ v per head. With V = X W^T + c, the
/// caller projects afterwards: P (X W^T + c) = (P X) W^T + c, cheaper when vd < hd (SAM 2's
/// cross-attention to 64-wide memories).
#[allow(clippy::too_many_arguments)]
pub fn attention_shared_values(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    b: usize,
    lq: usize,
    lk: usize,
    nh: usize,
    hd: usize,
    vd: usize,
    scale: f32,
) -> Vec<f32> {
    let c = nh * hd;
    assert!(
        q.len() == b * lq * c && k.len() == b * lk * c && v.len() == b * lk * vd,
        "attention_shared_values: buffer sizes"
    );
    let values = ValueLayout {
        batch_stride: lk * vd,
        head_offset: 0,
        row_stride: vd,
        width: vd,
    };
    blocked_attention(q, k, v, b, lq, lk, nh, hd, values, scale)
}

/// Where head `h` of batch item `bi` finds its value rows: at
/// `bi * batch_stride + h * head_offset`, `row_stride` apart, `width` wide.
#[derive(Clone, Copy)]
struct ValueLayout {
    batch_stride: usize,
    head_offset: usize,
    row_stride: usize,
    width: usize,
}

/// Flash attention over 512-query blocks of every (batch item, head); q / k rows are
/// [nh * hd] wide. Returns [b, lq, nh, values.width].
#[allow(clippy::too_many_arguments)]
fn blocked_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    b: usize,
    lq: usize,
    lk: usize,
    nh: usize,
    hd: usize,
    values: ValueLayout,
    scale: f32,
) -> Vec<f32> {
    // 512-query blocks: each key tile's packing (inside `gemm`) is shared by more rows;
    // measured 130 ms vs 170 ms with 128 for SAM 2's 4096 x 16384 (hd 256) cross-attention.
    const QB: usize = 512;
    const TILE: usize = 256;
    let c = nh * hd;
    let vd = values.width;
    if super::amx::available() && lk >= 1024 && lq >= 512 {
        // AMX tiles (bf16x3), one (batch item, head) at a time, its query blocks in parallel
        let mut out = vec![0f32; b * lq * nh * vd];
        for bi in 0..b {
            for h in 0..nh {
                fn rows(x: &[f32], off: usize, ld: usize, width: usize) -> super::amx::Rows<'_> {
                    super::amx::Rows {
                        x: &x[off..],
                        ld,
                        width,
                    }
                }
                // SAFETY: AMX is available; rows (bi, i, h) of the output, nh * vd apart.
                unsafe {
                    super::amx::attention_head(
                        rows(q, bi * lq * c + h * hd, c, hd),
                        rows(k, bi * lk * c + h * hd, c, hd),
                        rows(
                            v,
                            bi * values.batch_stride + h * values.head_offset,
                            values.row_stride,
                            vd,
                        ),
                        lq,
                        lk,
                        scale,
                        out.as_mut_ptr().add(bi * lq * nh * vd + h * vd),
                        nh * vd,
                    )
                };
            }
        }
        return out;
    }
    let blocks = lq.div_ceil(QB);
    let mut out = vec![0f32; b * lq * nh * vd];
    let out_ptr = SendPtr(out.as_mut_ptr());
    let run = |task: usize| {
        let (bi, rest) = (task / (nh * blocks), task % (nh * blocks));
        let (h, blk) = (rest / blocks, rest % blocks);
        let q0 = blk * QB;
        let m = QB.min(lq - q0);
        let mut o = vec![0f32; m * vd];
        // SAFETY: indices stay inside the buffer sizes asserted by the callers.
        unsafe {
            let qp = q.as_ptr().add((bi * lq + q0) * c + h * hd);
            let kp = k.as_ptr().add(bi * lk * c + h * hd);
            let vp = v
                .as_ptr()
                .add(bi * values.batch_stride + h * values.head_offset);
            flash_rows(
                qp,
                c as isize,
                kp,
                c as isize,
                vp,
                values.row_stride as isize,
                m,
                lk,
                hd,
                vd,
                scale,
                TILE,
                &mut o,
                |k0, t| TileDims {
                    m,
                    t,
                    hd: vd,
                    gh: 0,
                    gw: 1,
                    ky0: 0,
                    k0,
                    q0,
                    l: lk,
                    mode: 0,
                },
                &[],
                &[],
                &[],
            );
        }
        for i in 0..m {
            // SAFETY: query (q0 + i) of batch bi, head h: disjoint across tasks.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(
                    out_ptr.get().add(((bi * lq + q0 + i) * nh + h) * vd),
                    vd,
                )
            };
            dst.copy_from_slice(&o[i * vd..(i + 1) * vd]);
        }
    };
    if blocks >= 4 {
        // one (batch item, head) at a time, its query blocks in parallel: the threads share
        // its keys and values in the cache (SAM 2: 4-16 MB per object; splitting the objects
        // between the threads made two objects cost 2.3x one)
        for bh in 0..b * nh {
            (0..blocks)
                .into_par_iter()
                .for_each(|blk| run(bh * blocks + blk));
        }
    } else {
        (0..b * nh * blocks).into_par_iter().for_each(run);
    }
    out
}

/// Multi-head attention over `g.nb` grids. Returns [nb, L, nh * hd] (heads concatenated per
/// token, the layout the output projection expects).
pub fn grid_attention(qkv: &[f32], lay: &QkvLayout, g: &Grid, bias: Bias<'_>) -> Vec<f32> {
    let Grid {
        nb,
        gh,
        gw,
        nh,
        hd,
        scale,
    } = *g;
    let l = gh * gw;
    let c = nh * hd;
    assert!(
        qkv.len()
            >= (nb - 1) * lay.batch_stride
                + (l - 1) * lay.token_stride
                + (nh - 1) * lay.head_stride
                + lay.v
                + hd
    );
    match bias {
        Bias::RelPos { rh, rw } => assert!(rh.len() == gh * gh * hd && rw.len() == gw * gw * hd),
        Bias::PerHead(b) => assert_eq!(b.len(), nh * l * l),
        Bias::None => {}
    }
    if matches!(bias, Bias::None) && super::amx::available() && l >= 1024 {
        // AMX tiles (bf16x3): Hiera's global-attention blocks, a grid and head at a time
        let mut out = vec![0f32; nb * l * c];
        for b in 0..nb {
            for h in 0..nh {
                let base = b * lay.batch_stride + h * lay.head_stride;
                let rows = |off: usize| super::amx::Rows {
                    x: &qkv[base + off..],
                    ld: lay.token_stride,
                    width: hd,
                };
                // SAFETY: AMX is available; tokens of grid b, head h: rows c apart.
                unsafe {
                    super::amx::attention_head(
                        rows(lay.q),
                        rows(lay.k),
                        rows(lay.v),
                        l,
                        l,
                        scale,
                        out.as_mut_ptr().add(b * l * c + h * hd),
                        c,
                    )
                };
            }
        }
        return out;
    }
    // query blocks and key tiles of whole grid rows, ~512 each (larger blocks share gemm's
    // packing across more rows: a 64x64 global block took 97 vs 110 ms (Hiera-T, 8x48) and
    // 200 vs 240 ms (ViT-B, 12x64, rel-pos) against 128-query / 256-key blocks)
    let qrows = if l <= 512 {
        gh
    } else {
        512usize.div_ceil(gw).min(gh)
    };
    let trows = if l <= 512 {
        gh
    } else {
        512usize.div_ceil(gw).min(gh)
    };
    let blocks = gh.div_ceil(qrows);
    let mut out = vec![0f32; nb * l * c];
    let out_ptr = SendPtr(out.as_mut_ptr());
    let (mode, rh, rw, ph): (u8, &[f32], &[f32], &[f32]) = match bias {
        Bias::None => (0, &[], &[], &[]),
        Bias::RelPos { rh, rw } => (1, rh, rw, &[]),
        Bias::PerHead(b) => (2, &[], &[], b),
    };
    (0..nb * nh * blocks).into_par_iter().for_each(|task| {
        let (b, rest) = (task / (nh * blocks), task % (nh * blocks));
        let (h, blk) = (rest / blocks, rest % blocks);
        let y0 = blk * qrows;
        let y1 = (y0 + qrows).min(gh);
        let m = (y1 - y0) * gw;
        let q0 = y0 * gw;
        let base = b * lay.batch_stride + h * lay.head_stride;
        let ts = lay.token_stride as isize;
        let qp = unsafe { qkv.as_ptr().add(base + lay.q + q0 * lay.token_stride) };
        let mut rh_blk = Vec::new();
        let mut rw_blk = Vec::new();
        if mode == 1 {
            rh_blk = vec![0f32; m * gh];
            rw_blk = vec![0f32; m * gw];
            for y in y0..y1 {
                // rh_blk[(y, x), ky] = <q(y, x), Rh[y, ky]>
                unsafe {
                    gemm_f32(
                        gw,
                        gh,
                        hd,
                        rh_blk.as_mut_ptr().add((y - y0) * gw * gh),
                        gh,
                        false,
                        qp.offset((y - y0) as isize * gw as isize * ts),
                        ts,
                        1,
                        rh.as_ptr().add(y * gh * hd),
                        1,
                        hd as isize,
                        1.0,
                    )
                };
            }
            for x in 0..gw {
                // rw_blk[(y, x), kx] = <q(y, x), Rw[x, kx]>
                unsafe {
                    gemm_f32(
                        y1 - y0,
                        gw,
                        hd,
                        rw_blk.as_mut_ptr().add(x * gw),
                        gw * gw,
                        false,
                        qp.offset(x as isize * ts),
                        gw as isize * ts,
                        1,
                        rw.as_ptr().add(x * gw * hd),
                        1,
                        hd as isize,
                        1.0,
                    )
                };
            }
        }
        let ph_h: &[f32] = if mode == 2 {
            &ph[h * l * l..(h + 1) * l * l]
        } else {
            &[]
        };
        let mut o = vec![0f32; m * hd];
        let kp = unsafe { qkv.as_ptr().add(base + lay.k) };
        let vp = unsafe { qkv.as_ptr().add(base + lay.v) };
        // SAFETY: q/k/v rows of grid b, head h stay inside `qkv` (asserted above).
        unsafe {
            flash_rows(
                qp,
                ts,
                kp,
                ts,
                vp,
                ts,
                m,
                l,
                hd,
                hd,
                scale,
                trows * gw,
                &mut o,
                |k0, t| TileDims {
                    m,
                    t,
                    hd,
                    gh,
                    gw,
                    ky0: k0 / gw,
                    k0,
                    q0,
                    l,
                    mode,
                },
                &rh_blk,
                &rw_blk,
                ph_h,
            )
        };
        for i in 0..m {
            // SAFETY: token (q0 + i) of grid b, head h: disjoint from every other task.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(out_ptr.get().add((b * l + q0 + i) * c + h * hd), hd)
            };
            dst.copy_from_slice(&o[i * hd..(i + 1) * hd]);
        }
    });
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) (an LCG), shared by the kernels' tests.
    pub(crate) fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f64 / (1u64 << 31) as f64 * 2.0 - 1.0) as f32
            })
            .collect()
    }

    /// Largest absolute elementwise difference, shared by the kernels' tests.
    pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "max_abs_diff: lengths");
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    /// Straightforward f64 attention with the same bias definitions.
    fn reference(qkv: &[f32], lay: &QkvLayout, g: &Grid, bias: Bias<'_>) -> Vec<f32> {
        let Grid {
            nb,
            gh,
            gw,
            nh,
            hd,
            scale,
        } = *g;
        let l = gh * gw;
        let mut out = vec![0f32; nb * l * nh * hd];
        let at = |b: usize, t: usize, h: usize, off: usize, ch: usize| {
            qkv[b * lay.batch_stride + t * lay.token_stride + h * lay.head_stride + off + ch] as f64
        };
        for b in 0..nb {
            for h in 0..nh {
                for i in 0..l {
                    let (qy, qx) = (i / gw, i % gw);
                    let mut sc = vec![0f64; l];
                    for (j, s) in sc.iter_mut().enumerate() {
                        let (ky, kx) = (j / gw, j % gw);
                        let mut dot = 0.0;
                        for ch in 0..hd {
                            dot += at(b, i, h, lay.q, ch) * at(b, j, h, lay.k, ch);
                        }
                        *s = dot * scale as f64;
                        match bias {
                            Bias::RelPos { rh, rw } => {
                                for ch in 0..hd {
                                    let q = at(b, i, h, lay.q, ch);
                                    *s += q * rh[(qy * gh + ky) * hd + ch] as f64
                                        + q * rw[(qx * gw + kx) * hd + ch] as f64;
                                }
                            }
                            Bias::PerHead(p) => *s += p[h * l * l + i * l + j] as f64,
                            Bias::None => {}
                        }
                    }
                    let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = sc.iter().map(|s| (s - mx).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for ch in 0..hd {
                        let v: f64 = (0..l).map(|j| e[j] * at(b, j, h, lay.v, ch)).sum();
                        out[(b * l + i) * nh * hd + h * hd + ch] = (v / z) as f32;
                    }
                }
            }
        }
        out
    }

    fn check(nb: usize, gh: usize, gw: usize, nh: usize, hd: usize, sam_layout: bool, mode: u8) {
        let l = gh * gw;
        let c = nh * hd;
        let lay = if sam_layout {
            QkvLayout::sam(l, c, hd)
        } else {
            QkvLayout::tiny_vit(l, nh, hd)
        };
        let qkv: Vec<f32> = rand(nb * l * 3 * c, 7).iter().map(|v| v * 2.0).collect();
        let rh = rand(gh * gh * hd, 8);
        let rw = rand(gw * gw * hd, 9);
        let ph = rand(nh * l * l, 10);
        let bias = match mode {
            1 => Bias::RelPos { rh: &rh, rw: &rw },
            2 => Bias::PerHead(&ph),
            _ => Bias::None,
        };
        let g = Grid::new(nb, gh, gw, nh, hd);
        let got = grid_attention(&qkv, &lay, &g, bias);
        let want = reference(&qkv, &lay, &g, bias);
        let err = max_abs_diff(&got, &want);
        assert!(
            err < 2e-5,
            "nb {nb} grid {gh}x{gw} heads {nh}x{hd} mode {mode}: max err {err}"
        );
    }

    #[test]
    fn softmax_rows_matches_f64() {
        // 37-wide rows (not a multiple of the 16 lanes), large and negative scores
        let n = 37;
        let mut v: Vec<f32> = (0..n * 300)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.05 - 25.0 + (i / n) as f32)
            .collect();
        let orig = v.clone();
        softmax_rows(&mut v, n);
        for (row, orow) in v.chunks(n).zip(orig.chunks(n)) {
            let mx = orow.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
            let e: Vec<f64> = orow.iter().map(|&x| (x as f64 - mx).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (p, r) in row.iter().zip(&e) {
                assert!((*p as f64 - r / sum).abs() < 1e-6, "{p} vs {}", r / sum);
            }
            assert!((row.iter().map(|&p| p as f64).sum::<f64>() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn plain_attention_matches_reference() {
        let (b, lq, lk, nh, hd) = (2, 1100, 300, 2, 8);
        let c = nh * hd;
        let q = rand(b * lq * c, 1);
        let k = rand(b * lk * c, 2);
        let v = rand(b * lk * c, 3);
        let scale = 0.35;
        let got = attention(&q, &k, &v, b, lq, lk, nh, hd, scale);
        let mut worst = 0f32;
        for bi in 0..b {
            for h in 0..nh {
                for i in 0..lq {
                    let sc: Vec<f64> = (0..lk)
                        .map(|j| {
                            (0..hd)
                                .map(|x| {
                                    q[(bi * lq + i) * c + h * hd + x] as f64
                                        * k[(bi * lk + j) * c + h * hd + x] as f64
                                })
                                .sum::<f64>()
                                * scale as f64
                        })
                        .collect();
                    let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = sc.iter().map(|s| (s - mx).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for x in 0..hd {
                        let r: f64 = (0..lk)
                            .map(|j| e[j] * v[(bi * lk + j) * c + h * hd + x] as f64)
                            .sum::<f64>()
                            / z;
                        worst = worst.max((got[(bi * lq + i) * c + h * hd + x] - r as f32).abs());
                    }
                }
            }
        }
        assert!(worst < 2e-5, "max err {worst}");
    }

    #[test]
    fn matches_reference_all_bias_kinds() {
        check(2, 5, 7, 3, 8, true, 1); // small grid: one query block, one key tile
        check(1, 23, 24, 2, 4, true, 1); // several query blocks and key tiles (L > 512)
        check(3, 7, 7, 2, 16, false, 2); // TinyViT layout, per-head bias
        check(1, 30, 20, 1, 8, false, 0); // no bias, ragged last tile
    }
}
