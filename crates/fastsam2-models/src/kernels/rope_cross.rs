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
//!
//! Precision: f32 products by default (bf16x3 on AMX tiles). With the opt-in
//! `kernels::set_bf16_attention_weights` the value products take the probabilities rounded
//! to bf16 against the memories' bf16 values (`Products::av_pairs`, `vdpbf16ps`).

use rayon::prelude::*;

use super::attention::{SendPtr, gemm_f32};
use super::simd::{dispatch, exp};

/// Queries per inner block (two 16-lane vectors).
const QB: usize = 32;
/// Queries per task (and row stride of the G tables).
const GT: usize = 32;
/// At most this many memory frames in all when the row steps of objects that share their
/// queries are merged (`row_step_speed`, one thread, 32 queries, two objects merged vs one
/// after the other: 0.45 vs 0.72 ms at 1 frame each, 0.83 vs 0.91 at 2, 1.20 vs 1.28 at 3,
/// no gain at 4, 3.2 vs 2.8 at 7: their scratch and tokens no longer stay in the caches).
const MERGED_FRAMES: usize = 6;

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
    /// The rotations of one axis as an `s x half` matrix: row `X` holds the (cos, sin) pairs
    /// of position `X` (x: `(x = X, y = 0)`, first `half / 2` pairs; y: `(0, X)`, the rest).
    fn rotations(&self, y: bool) -> Vec<f64> {
        self.rotation_values(y).collect()
    }

    /// The entries of [`Self::rotations`], row by row.
    fn rotation_values(&self, y: bool) -> impl Iterator<Item = f64> + '_ {
        let (s, half) = (self.side, self.hd / 2);
        let per = half; // pairs per table row
        (0..s).flat_map(move |pos| {
            let row = if y {
                &self.table[pos * s * per + half / 2..(pos * s + 1) * per]
            } else {
                &self.table[pos * per..pos * per + half / 2]
            };
            row.iter().flat_map(|&(cos, sin)| [cos as f64, sin as f64])
        })
    }

    /// [`Self::axis`], cached by the contents of the weights and rotations: every object and
    /// frame reuses a layer's two (building one, ~1 MB, took ~0.4 ms, mostly first touches of
    /// fresh pages). A few dozen entries at most (two per memory-attention layer and model).
    fn tables(&self, y: bool) -> std::sync::Arc<Tables> {
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex, OnceLock};
        /// The inputs (compared on a hit: a hash collision must not return another model's
        /// tables) and the tables.
        struct Entry {
            wk: Vec<f32>,
            bk: Option<Vec<f32>>,
            rot: Vec<f64>,
            tables: Arc<Tables>,
        }
        static CACHE: OnceLock<Mutex<HashMap<u64, Entry>>> = OnceLock::new();
        let shape = [self.side, self.hd, self.kv, y as usize].map(|v| v as u64);
        let words = shape
            .into_iter()
            .chain(
                self.wk
                    .iter()
                    .chain(self.bk.unwrap_or(&[]))
                    .map(|v| v.to_bits() as u64),
            )
            .chain(self.rotation_values(y).map(f64::to_bits));
        // FNV-style multiply-xor with a rotation (SipHash took ~0.1 ms on these ~25k words)
        let key = words.fold(0xcbf2_9ce4_8422_2325u64, |h, w| {
            (h ^ w).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(23)
        });
        let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
        if let Some(e) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && e.wk == self.wk
            && e.bk.as_deref() == self.bk
            && e.rot.iter().copied().eq(self.rotation_values(y))
        {
            return e.tables.clone();
        }
        let tables = Arc::new(self.axis(y));
        let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() >= 64 {
            c.clear();
        }
        let entry = Entry {
            wk: self.wk.to_vec(),
            bk: self.bk.map(<[f32]>::to_vec),
            rot: self.rotations(y),
            tables: tables.clone(),
        };
        c.insert(key, entry);
        tables
    }

    /// The G-table factors of one axis (see [`Tables`]).
    fn axis(&self, y: bool) -> Tables {
        let (s, hd, kv) = (self.side, self.hd, self.kv);
        let half = hd / 2;
        let off = if y { half } else { 0 };
        let zeros = vec![0f32; hd];
        let rot = self.rotations(y);
        let f = factors(&rot, s, half);
        // a basis row per (rotation row, key channel): the channel's x / y weights rotated by
        // it; with the positions' own rotations (`rows` = `s`) this is `R(X) w_d` itself
        let (rows, rot_rows, u) = if f.worth(s, half) {
            (
                f.r,
                &f.q,
                Some(f.u.iter().map(|&v| v as f32).collect::<Vec<f32>>()),
            )
        } else {
            (s, &rot, None)
        };
        let rot32: Vec<f32> = rot_rows[..rows * half].iter().map(|&v| v as f32).collect();
        let mut basis = vec![0f32; rows * (kv + 1) * half];
        for (k, block) in basis.chunks_exact_mut((kv + 1) * half).enumerate() {
            let cs = &rot32[k * half..(k + 1) * half];
            for (d, dst) in block.chunks_exact_mut(half).enumerate() {
                let w: &[f32] = if d < kv {
                    &self.wk[d * hd..(d + 1) * hd]
                } else {
                    self.bk.unwrap_or(&zeros)
                };
                let w = &w[off..off + half];
                for ((o, w), r) in dst
                    .chunks_exact_mut(2)
                    .zip(w.chunks_exact(2))
                    .zip(cs.chunks_exact(2))
                {
                    let ((a, b), (cos, sin)) = ((w[0], w[1]), (r[0], r[1]));
                    o[0] = a * cos - b * sin;
                    o[1] = a * sin + b * cos;
                }
            }
        }
        // the basis as a pre-tiled AMX operand: the G-table products of every query block
        // then run on tiles (bf16x3), ~3x the f32 GEMM's rate on these shapes
        let (packed, packed_u) = if fast_kernels() {
            (
                super::amx::PackedA::new(&basis, rows * (kv + 1), half, half),
                u.as_ref()
                    .and_then(|u| super::amx::PackedA::new(u, s, rows, rows)),
            )
        } else {
            (None, None)
        };
        Tables {
            rows,
            basis,
            u,
            packed,
            packed_u,
        }
    }
}

/// Low-rank factors of an axis's rotations, `u [side, r] q [r, half]` ([`low_rank`]).
struct Factors {
    r: usize,
    u: Vec<f64>,
    q: Vec<f64>,
}

impl Factors {
    /// Whether the factored tables take fewer multiply-adds than the direct ones.
    fn worth(&self, side: usize, half: usize) -> bool {
        self.r * (half + side) < side * half
    }
}

/// [`low_rank`] of `rot [side, half]`, cached by its bits (the same two matrices serve every
/// layer, object and frame of a model; factoring one takes ~0.5 ms).
fn factors(rot: &[f64], side: usize, half: usize) -> std::sync::Arc<Factors> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Cache = HashMap<(usize, Vec<u64>), Arc<Factors>>;
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let key = (side, rot.iter().map(|v| v.to_bits()).collect::<Vec<u64>>());
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(f) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return f.clone();
    }
    let (u, q) = low_rank(rot, side, half, LOW_RANK_TOL);
    let f = Arc::new(Factors {
        r: u.len() / side,
        u,
        q,
    });
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, f.clone());
    f
}

/// Largest residual norm of a row (relative to the largest row norm) that [`low_rank`]
/// leaves: about 2e-7 per entry for SAM 2's rotations, a few times the f32 rounding of the
/// table's own cos / sin values (1e-7 would keep rank 30 of that rounding noise instead of 27).
const LOW_RANK_TOL: f64 = 3e-7;

/// `t [m, n] ~= u [m, r] q [r, n]` with orthonormal rows in `q`: Gram-Schmidt on the rows of
/// `t` with pivoting (the row with the largest residual next), until every row's residual norm
/// is below `tol` times the largest row norm. SAM 2's 64 x 128 axis rotation matrix has
/// numerical rank ~27 (its low frequencies barely turn over 64 positions).
fn low_rank(t: &[f64], m: usize, n: usize, tol: f64) -> (Vec<f64>, Vec<f64>) {
    let mut res = t.to_vec();
    let norm = |r: &[f64]| r.iter().map(|v| v * v).sum::<f64>().sqrt();
    let top = (0..m)
        .map(|i| norm(&t[i * n..(i + 1) * n]))
        .fold(0.0, f64::max);
    let mut q: Vec<f64> = Vec::new();
    while q.len() / n < m.min(n) {
        let (best, bn) = (0..m)
            .map(|i| (i, norm(&res[i * n..(i + 1) * n])))
            .fold((0, -1.0), |a, b| if b.1 > a.1 { b } else { a });
        if bn <= tol * top {
            break;
        }
        let dir: Vec<f64> = res[best * n..(best + 1) * n]
            .iter()
            .map(|v| v / bn)
            .collect();
        for i in 0..m {
            let row = &mut res[i * n..(i + 1) * n];
            let c: f64 = row.iter().zip(&dir).map(|(a, b)| a * b).sum();
            for (v, d) in row.iter_mut().zip(&dir) {
                *v -= c * d;
            }
        }
        q.extend(dir);
    }
    let r = q.len() / n;
    // coefficients against the orthonormal rows (a projection: residuals as above)
    let mut u = vec![0f64; m * r];
    for i in 0..m {
        for k in 0..r {
            u[i * r + k] = t[i * n..(i + 1) * n]
                .iter()
                .zip(&q[k * n..(k + 1) * n])
                .map(|(a, b)| a * b)
                .sum();
        }
    }
    (u, q)
}

/// How one axis's G table is formed from a block's queries: `basis [rows (kv + 1), half]`
/// times the queries' half of channels gives `[rows][kv + 1][GT]`; that is the table itself
/// (`u = None`, rows = positions) or, through the low-rank factors of the rotations, its
/// coefficients, and `u [side, rows]` times them the table (fewer multiply-adds when
/// `rows (half + side) < side half`: SAM 2, 27 x 192 vs 64 x 128).
struct Tables {
    rows: usize,
    basis: Vec<f32>,
    u: Option<Vec<f32>>,
    /// `basis` tiled for [`super::amx::gemm_a`] (where AMX is available).
    packed: Option<super::amx::PackedA>,
    /// `u` tiled likewise: the expansion `G = u coef` on tiles too (in f32 it was about half
    /// of the G tables' time, ~15 thread-ms per call at SAM 2's shapes).
    packed_u: Option<super::amx::PackedA>,
}

/// Whether the folded kernel is expected to beat rotating the projected keys and running
/// `attention_shared_values`, from multiply-add counts weighted by measured rates (SAM 2's
/// shapes, `rope_cross_speed` below, best of 5 with 2 threads: plain 28.5 ms per memory
/// frame, folded ~31 ms + 11.1 ms per frame with the low-rank tables, i.e. the G tables and
/// their fixed costs weigh 2.17 times their multiply-adds, the folded products 1.0 times).
pub fn worth_folding(
    keys: &RopeKeys<'_>,
    frames: usize,
    objects: usize,
    shared_queries: bool,
) -> bool {
    let (side, hd, kv) = (keys.side, keys.hd, keys.kv);
    if super::amx::available() {
        // both paths on AMX tiles (the unfolded attention whole, the folded one's G tables,
        // scores and value products): measured with `rope_cross_speed` (SAM 2's shapes, 2
        // threads), folded vs rotated keys + attention: 44 vs 28 ms at 1 frame, 55 vs 50 at
        // 2, 71 vs 75 at 3, 86 vs 96 at 4, 125 vs 195 at 7 (plus the key projection and
        // rotation, ~2 ms per frame, on the unfolded side)
        return frames >= 3;
    }
    let half = hd / 2;
    // multiply-adds per query of the two G tables
    let per_query: usize = [false, true]
        .map(|y| {
            let t = keys.tables(y);
            t.rows * (kv + 1) * (half + if t.u.is_some() { side } else { 0 })
        })
        .iter()
        .sum();
    let tables = per_query * if shared_queries { 1 } else { objects };
    let folded = 2.17 * tables as f64 + (objects * frames * side * side * 2 * kv) as f64;
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
    rope_cross_impl(
        keys, q, bq, u, vals, kptr, b, frames, n_ptr, scale, false, false, None,
    )
}

/// [`rope_cross_attention`] with the memory tokens' tile packings of an earlier call on the
/// same `u` / `vals` (SAM 2's four memory-attention layers read the same memories): `packed`
/// is filled on the first call and reused while its sizes match.
///
/// `bf16_probs`: the value products may take the probabilities rounded to bf16 (relative
/// error at most 2^-9 on each weight, sums in f32; flash attention's bf16 `P V`) where every
/// value is a bf16 (SAM 2's stored memories), on `vdpbf16ps` where the CPU has AVX-512 BF16
/// and no AMX: twice the multiply-adds of an f32 FMA per instruction. Elsewhere it changes
/// nothing.
#[allow(clippy::too_many_arguments)]
pub fn rope_cross_attention_cached(
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
    bf16_probs: bool,
    packed: &std::sync::OnceLock<PackedMemory>,
) -> Vec<f32> {
    rope_cross_impl(
        keys,
        q,
        bq,
        u,
        vals,
        kptr,
        b,
        frames,
        n_ptr,
        scale,
        false,
        bf16_probs,
        Some(packed),
    )
}

/// The memory tokens of one folded cross-attention call as tile operands, per object: the
/// transposed values ([`super::amx::pack_values_t`]) and the key inputs split into bf16
/// halves ([`super::amx::split_tokens`]); `None` entries where the AMX paths do not apply.
pub struct PackedMemory {
    /// (objects, memory tokens per object, kv) this packing was made for.
    shape: (usize, usize, usize),
    /// Whether the values were packed for bf16 probabilities (`vps`).
    bf16_probs: bool,
    vts: Vec<Option<super::amx::Aligned<u16>>>,
    /// The values as bf16 key pairs ([`pack_value_pairs`]) where the value products take
    /// bf16 probabilities and AMX does not serve them.
    vps: Vec<Option<Vec<u32>>>,
    us: Vec<Option<(super::amx::Aligned<u16>, super::amx::Aligned<u16>)>>,
}

impl std::fmt::Debug for PackedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMemory")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

impl PackedMemory {
    #[allow(clippy::too_many_arguments)]
    fn new(
        u: &[f32],
        vals: &[f32],
        b: usize,
        lk: usize,
        frames: usize,
        s: usize,
        kv: usize,
        portable: bool,
        bf16_probs: bool,
    ) -> Self {
        let l = s * s;
        // the value products on AMX tiles where possible: every memory token is a bf16 (the
        // memories are stored so) and the grid rows are whole tiles of keys
        let vts: Vec<Option<super::amx::Aligned<u16>>> = (0..b)
            .map(|ob| {
                (!portable && s.is_multiple_of(32) && fast_kernels())
                    .then(|| super::amx::pack_values_t(&vals[ob * lk * kv..], frames * l, kv))
                    .flatten()
            })
            .collect();
        // and the scores too (`avx512::amx_frames`) where the grid is whole tile pairs: the
        // memory tokens split into bf16 halves once
        let amx_scores = !portable
            && s.is_multiple_of(32)
            && kv.is_multiple_of(32)
            && fast_kernels()
            && amx_scores_enabled();
        let us = (0..b)
            .map(|ob| {
                (amx_scores && vts[ob].is_some())
                    .then(|| super::amx::split_tokens(&u[ob * lk * kv..][..frames * l * kv]))
                    .flatten()
            })
            .collect();
        // the value products with bf16 probabilities (`Products::av_pairs`): on `vdpbf16ps`,
        // or their portable reference; the steps cover whole key pairs where `s` is even
        let vps = (0..b)
            .map(|ob| {
                (bf16_probs
                    && vts[ob].is_none()
                    && s.is_multiple_of(2)
                    && (portable || bf16_kernels()))
                .then(|| pack_value_pairs(&vals[ob * lk * kv..], frames * l, kv))
                .flatten()
            })
            .collect();
        Self {
            shape: (b, frames * l, kv),
            bf16_probs,
            vts,
            us,
            vps,
        }
    }
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
    bf16_probs: bool,
    cache: Option<&std::sync::OnceLock<PackedMemory>>,
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
    let tables = [keys.tables(false), keys.tables(true)];
    let blocks = l.div_ceil(GT);
    let mut out = vec![0f32; b * l * kv];
    let out_ptr = SendPtr(out.as_mut_ptr());
    // the memories' tile packings: the caller's (made on its first call) where they are of
    // these sizes, else this call's own
    let owned;
    let packed_memory = match cache.map(|c| {
        c.get_or_init(|| PackedMemory::new(u, vals, b, lk, frames, s, kv, portable, bf16_probs))
    }) {
        Some(p) if p.shape == (b, frames * l, kv) && p.bf16_probs == bf16_probs => p,
        _ => {
            owned = PackedMemory::new(u, vals, b, lk, frames, s, kv, portable, bf16_probs);
            &owned
        }
    };
    let (vts, us, vps) = (&packed_memory.vts, &packed_memory.us, &packed_memory.vps);
    let run_block = |bi: usize, blk: usize, objects: std::ops::Range<usize>| {
        let q0 = blk * GT;
        let nt = GT.min(l - q0);
        // G tables of this block of GT queries: [side][kv + 1][GT] (one GEMM each: wide
        // enough for `gemm` to run at full rate), lanes past `nt` stay zero. Per-thread
        // buffers: a full block's products write every entry (zeroing 1 MB per block cost
        // ~10% of a one-frame call); a partial block starts from zeros.
        let (mut gx, mut gy, mut coef) = G_BUFFERS.with(|c| c.take());
        if nt < GT {
            gx.clear();
            gy.clear();
            coef.clear();
        }
        gx.resize(s * (kv + 1) * GT, 0.0);
        gy.resize(s * (kv + 1) * GT, 0.0);
        let qp = q[(bi * l + q0) * hd..].as_ptr();
        for ((g, t), off) in [&mut gx, &mut gy].into_iter().zip(&tables).zip([0, half]) {
            let n_rows = t.rows * (kv + 1);
            if let (Some(pa), false) = (&t.packed, portable) {
                // on AMX tiles: the block's queries (scaled) as the packed right operand; the
                // product has whole 32-row blocks (padding rows and lanes past nt: zeros)
                let qb = &q[(bi * l + q0) * hd..];
                let pb = super::amx::PackedB::new_serial(half, nt, |kk, j| {
                    qb[j * hd + off + kk] * scale
                });
                let pr = pa.padded_rows();
                if t.u.is_none() && pr == n_rows {
                    super::amx::gemm_a(pa, &pb, g, GT);
                } else {
                    coef.resize(coef.len().max(pr * GT), 0.0);
                    super::amx::gemm_a(pa, &pb, &mut coef, GT);
                    if t.u.is_none() {
                        g[..n_rows * GT].copy_from_slice(&coef[..n_rows * GT]);
                    }
                }
            } else {
                let dst = match &t.u {
                    Some(_) => {
                        coef.resize(coef.len().max(n_rows * GT), 0.0);
                        coef.as_mut_ptr()
                    }
                    None => g.as_mut_ptr(),
                };
                // SAFETY: the basis is [rows (kv + 1), half] row-major; q rows q0..q0 + nt
                // exist; dst is [rows (kv + 1), GT] and we write its first nt columns (the
                // others stay zero: `coef` is only ever written there too).
                unsafe {
                    gemm_f32(
                        t.rows * (kv + 1),
                        nt,
                        half,
                        dst,
                        GT,
                        false,
                        t.basis.as_ptr(),
                        half as isize,
                        1,
                        qp.add(off),
                        1,
                        hd as isize,
                        scale,
                    )
                };
            }
            if let (Some(pu), false) = (&t.packed_u, portable) {
                // on tiles: coef [rows, (kv + 1) GT] as the packed right operand (this
                // thread's buffer), g = u coef
                let w = (kv + 1) * GT;
                COEF_B.with(|cell| {
                    let mut pb = cell.borrow_mut();
                    let pb = pb.get_or_insert_with(|| super::amx::PackedB::empty(0, 0));
                    pb.refill_rows(&coef[..t.rows * w], t.rows, w, w);
                    super::amx::gemm_a(pu, pb, g, w);
                });
            } else if let Some(u) = &t.u {
                // SAFETY: u is [side, rows], coef [rows, (kv + 1) GT], g [side, (kv + 1) GT].
                unsafe {
                    gemm_f32(
                        s,
                        (kv + 1) * GT,
                        t.rows,
                        g.as_mut_ptr(),
                        (kv + 1) * GT,
                        false,
                        u.as_ptr(),
                        t.rows as isize,
                        1,
                        coef.as_ptr(),
                        ((kv + 1) * GT) as isize,
                        1,
                        1.0,
                    )
                };
            }
        }
        // the G tables as tile operands (packed on the first object that uses them)
        let mut packed: Option<AmxTables> = None;
        // objects sharing the queries (and so these G tables) run their row steps together,
        // up to MERGED_FRAMES memory frames in all, where no AMX packing serves them: every
        // position's G sum and loads then serve all their memory frames (with one or two
        // frames per object the scores are bound by those loads)
        let objects: Vec<usize> = objects.collect();
        let merge = bq == 1 && objects.iter().all(|&ob| vts[ob].is_none());
        let per_group = if merge {
            (MERGED_FRAMES / frames).max(1)
        } else {
            1
        };
        for grp in objects.chunks(per_group) {
            let nm = grp.len();
            let mem: Vec<ObjectMemory<'_>> = grp
                .iter()
                .map(|&ob| ObjectMemory {
                    u: &u[ob * lk * kv..(ob + 1) * lk * kv],
                    vals: &vals[ob * lk * kv..(ob + 1) * lk * kv],
                    vt: vts[ob].as_deref(),
                    vp: vps[ob].as_deref(),
                })
                .collect();
            let rows = rows_per_step(nm * frames);
            let mut st = vec![0f32; (nm * frames * rows * s).max(n_ptr) * QB];
            let mut o = vec![0f32; nm * kv * QB];
            let mut states: Vec<Softmax> = (0..nm).map(|_| Softmax::empty()).collect();
            // lanes of QB queries inside the block
            for sb in 0..nt.div_ceil(QB) {
                let qs = q0 + sb * QB;
                let nq = QB.min(nt - sb * QB);
                states.fill_with(Softmax::empty);
                o.fill(0.0);
                let amx = match (grp, nt == GT) {
                    (&[ob], true) => vts[ob].as_ref().zip(us[ob].as_ref()),
                    _ => None,
                };
                if let Some((vt, (uh, ul))) = amx {
                    let tabs = packed.get_or_insert_with(|| AmxTables::new(&gx, &gy, s, kv));
                    // SAFETY: AMX is available (`vts` and `us` are only packed where it is),
                    // so is AVX-512; sizes are checked inside.
                    unsafe {
                        avx512::amx_frames(
                            tabs,
                            &gx,
                            &gy,
                            uh,
                            ul,
                            vt,
                            s,
                            kv,
                            frames,
                            &mut states[0],
                            &mut o,
                        )
                    };
                } else {
                    row_steps(
                        portable,
                        &gx[sb * QB..],
                        &gy[sb * QB..],
                        &mem,
                        s,
                        kv,
                        frames,
                        &mut st,
                        &mut states,
                        &mut o,
                    );
                }
                for (k, &ob) in grp.iter().enumerate() {
                    let (state, o) = (&mut states[k], &mut o[k * kv * QB..(k + 1) * kv * QB]);
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
                        ptr_step(sp, &mem[k].vals[frames * l * kv..], n_ptr, kv, state, o);
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
        }
        if let Some(t) = packed {
            t.recycle();
        }
        G_BUFFERS.with(|c| c.set((gx, gy, coef)));
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

thread_local! {
    /// A thread's packing of the low-rank G-table coefficients (see `Tables::packed_u`).
    static COEF_B: std::cell::RefCell<Option<super::amx::PackedB>> =
        const { std::cell::RefCell::new(None) };
}

thread_local! {
    /// A task's G tables (x, y) and their low-rank coefficients, reused block after block.
    static G_BUFFERS: std::cell::Cell<(Vec<f32>, Vec<f32>, Vec<f32>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// Whether the folded cross-attention's scores may run on AMX tiles (where AMX is available;
/// `FASTSAM2_NO_AMX_SCORES=1` keeps them on AVX-512, for comparisons).
fn amx_scores_enabled() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        std::env::var_os("FASTSAM2_NO_AMX_SCORES").is_none() && super::amx::available()
    })
}

/// A query block's G tables as right-hand tile operands, `[side][kv / 2][32][2]` bf16 halves
/// per axis ([`super::amx::pack_pairs`]), and the scratch of [`avx512::amx_frames`].
struct AmxTables {
    gxh: super::amx::Aligned<u16>,
    gxl: super::amx::Aligned<u16>,
    gyh: super::amx::Aligned<u16>,
    gyl: super::amx::Aligned<u16>,
    /// `[16 rows][side][32]`: the bias terms of a band of 16 grid rows.
    bias: super::amx::Aligned<f32>,
    /// `[2 frames][16 rows][side][32]` scores / probabilities.
    st: super::amx::Aligned<f32>,
}

impl AmxTables {
    /// A query block's tables from its G tables, in this thread's buffers of its last block:
    /// every entry of every buffer is written before it is read (the packed halves here, for
    /// every grid position; the bias and the scores band by band in [`avx512::amx_frames`],
    /// frames past the band's count unread), so none is zeroed (a block re-zeroed ~1.4 MB).
    fn new(gx: &[f32], gy: &[f32], s: usize, kv: usize) -> Self {
        let pg = (kv + 1) * GT;
        let n = s * kv * GT;
        let mut t = AMX_TABLES.with(|c| c.take()).unwrap_or_else(|| Self {
            gxh: super::amx::Aligned::new(),
            gxl: super::amx::Aligned::new(),
            gyh: super::amx::Aligned::new(),
            gyl: super::amx::Aligned::new(),
            bias: super::amx::Aligned::new(),
            st: super::amx::Aligned::new(),
        });
        for b in [&mut t.gxh, &mut t.gxl, &mut t.gyh, &mut t.gyl] {
            b.reuse(n);
        }
        t.bias.reuse(16 * s * GT);
        t.st.reuse(2 * 16 * s * GT);
        for (g, (h, l)) in [
            (gx, (&mut t.gxh, &mut t.gxl)),
            (gy, (&mut t.gyh, &mut t.gyl)),
        ] {
            for x in 0..s {
                let d = x * kv * GT..(x + 1) * kv * GT;
                // SAFETY: AMX is available (the only callers run where it is).
                unsafe {
                    super::amx::pack_pairs(
                        &g[x * pg..x * pg + kv * GT],
                        &mut h[d.clone()],
                        &mut l[d],
                    )
                };
            }
        }
        t
    }

    /// Hand the buffers back to this thread for its next block.
    fn recycle(self) {
        AMX_TABLES.with(|c| c.set(Some(self)));
    }
}

thread_local! {
    /// A thread's [`AmxTables`] buffers, reused block after block.
    static AMX_TABLES: std::cell::Cell<Option<AmxTables>> = const { std::cell::Cell::new(None) };
}

/// Running max / sum of the online softmax, one lane per query.
struct Softmax {
    max: [f32; QB],
    sum: [f32; QB],
}

impl Softmax {
    /// The state before any key.
    fn empty() -> Self {
        Self {
            max: [f32::NEG_INFINITY; QB],
            sum: [0.0; QB],
        }
    }
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
    /// Scores of `NP` grid positions of one column (rows `p` apart by `gy_p` in `gy`, `u_p`
    /// in the memory tokens, `st_p` in `st`) against `MC` memory frames: for position `p`,
    /// frame `t`, `st[t * st_stride + p * st_p..][..QB] = sum_d g[d] u[t][p * u_p + d] + g[kv]`
    /// with `g = gx + gy[p * gy_p..]`; `gx` / `gy` hold the positions' `kv + 1` G rows (`GT`
    /// apart). `u[t]` points at frame `t`'s token of the first position: the frames may
    /// belong to different objects (whose queries, and so G tables, are the same). Several
    /// positions share the `Gx` loads and keep enough independent multiply-add chains in
    /// flight when there are few frames (one position and one frame: 2 chains, a quarter of
    /// the rate).
    ///
    /// # Safety
    /// The CPU supports the implementation's features; every `u[t]` has `(NP - 1) u_p + kv`
    /// readable floats.
    #[allow(clippy::too_many_arguments)]
    unsafe fn scores<const MC: usize, const NP: usize>(
        gx: &[f32],
        gy: &[f32],
        gy_p: usize,
        u: [*const f32; MC],
        u_p: usize,
        kv: usize,
        st: &mut [f32],
        st_stride: usize,
        st_p: usize,
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

    /// `o[e][..QB] += sum_k bf16(p[k][..QB]) v[k][e]` over `n` keys (`n` even): the value
    /// products with the probabilities rounded to bf16 (round to nearest even) and the values
    /// bf16 already, `vp` `[n / 2][kv]` holding each channel's values of two consecutive keys
    /// (the first in the low half, [`pack_value_pairs`]); products exact and sums in f32, as
    /// `vdpbf16ps` computes them. May overwrite `p`. This portable version is the reference of
    /// the AVX-512 BF16 one (`avx512::Avx512Bf16`).
    ///
    /// # Safety
    /// As `scores`.
    unsafe fn av_pairs(
        p: &mut [f32],
        vp: &[u32],
        n: usize,
        kv: usize,
        o: &mut [f32],
        _ahead: impl FnMut(usize),
    ) {
        assert!(
            n.is_multiple_of(2)
                && p.len() >= n * QB
                && vp.len() >= n / 2 * kv
                && o.len() >= kv * QB
        );
        for kp in 0..n / 2 {
            let p0: [f32; QB] = std::array::from_fn(|i| bf16_round(p[2 * kp * QB + i]));
            let p1: [f32; QB] = std::array::from_fn(|i| bf16_round(p[(2 * kp + 1) * QB + i]));
            let vk = &vp[kp * kv..(kp + 1) * kv];
            for (e, &pair) in vk.iter().enumerate() {
                let (v0, v1) = (
                    f32::from_bits(pair << 16),
                    f32::from_bits(pair & 0xffff_0000),
                );
                let oe = &mut o[e * QB..(e + 1) * QB];
                for i in 0..QB {
                    oe[i] += p0[i] * v0 + p1[i] * v1;
                }
            }
        }
    }

    /// [`softmax_fold`]; the AVX-512 version has its own `exp` (FMA and `vscalefps`: the
    /// portable one compiles to separate multiplies and adds, ~30 instructions a vector).
    ///
    /// # Safety
    /// As `scores`.
    #[inline(always)]
    unsafe fn fold(st: &mut [f32], n: usize, state: &mut Softmax, o: &mut [f32]) {
        softmax_fold(st, n, state, o)
    }

    /// Hint that the cache line holding `v[at]` is needed soon: the memory tokens stream
    /// from L3 (16 KB per frame and grid row) and the products stalled on them (the value
    /// products ran at half rate: 1.0 vs 0.52 ms per 32-query block and 7 frames). The row
    /// step fetches the next frame's values during the current frame's value products, and
    /// the next rows' first key tokens after the last; the scores' column sweep relies on the
    /// hardware prefetchers (see `row_step_with`).
    #[inline(always)]
    fn prefetch<T>(_v: &[T], _at: usize) {}

    /// [`Self::prefetch`] of the `kv` floats from `v[at]` (one memory token), a cache line
    /// (16 floats) at a time.
    #[inline(always)]
    fn prefetch_token(v: &[f32], at: usize, kv: usize) {
        for c in (0..kv).step_by(16) {
            Self::prefetch(v, at + c);
        }
    }
}

/// Plain Rust (LLVM vectorises it across the wrong loop: ~10x slower than AVX-512).
struct Portable;

impl Products for Portable {
    #[inline(always)]
    unsafe fn scores<const MC: usize, const NP: usize>(
        gx: &[f32],
        gy: &[f32],
        gy_p: usize,
        u: [*const f32; MC],
        u_p: usize,
        kv: usize,
        st: &mut [f32],
        st_stride: usize,
        st_p: usize,
    ) {
        for p in 0..NP {
            let gy = &gy[p * gy_p..];
            let st = &mut st[p * st_p..];
            // SAFETY: the caller's contract: every frame's `kv` floats at this position exist.
            let us: [&[f32]; MC] = std::array::from_fn(|t| unsafe {
                std::slice::from_raw_parts(u[t].add(p * u_p), kv)
            });
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

/// `x` rounded to the nearest bf16 (ties to even), as `vcvtne2ps2bf16` rounds (finite `x`).
#[inline(always)]
fn bf16_round(x: f32) -> f32 {
    let b = x.to_bits();
    f32::from_bits(b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000)
}

/// Whether the CPU has the AVX-512 BF16 dot products (`vdpbf16ps`) and the word permutes the
/// value products with bf16 probabilities use, besides [`fast_kernels`].
pub fn bf16_kernels() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        fast_kernels()
            && std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The value tokens `[keys][kv]` (`keys` even) as bf16 pairs of consecutive keys, `[keys /
/// 2][kv]`: word `(k, e)` holds key `2k`'s channel `e` in its low half and key `2k + 1`'s in
/// the high half, the operand layout of `vdpbf16ps` with the keys as the summed pairs. `None`
/// unless every value is a bf16 (its low 16 bits zero: the stored memories are), so the
/// packing is exact.
fn pack_value_pairs(vals: &[f32], keys: usize, kv: usize) -> Option<Vec<u32>> {
    let vals = &vals[..keys * kv];
    if !keys.is_multiple_of(2) || vals.iter().any(|v| v.to_bits() & 0xffff != 0) {
        return None;
    }
    let mut out = vec![0u32; keys / 2 * kv];
    for (dst, two) in out.chunks_exact_mut(kv).zip(vals.chunks_exact(2 * kv)) {
        let (a, b) = two.split_at(kv);
        for ((d, a), b) in dst.iter_mut().zip(a).zip(b) {
            *d = (a.to_bits() >> 16) | (b.to_bits() & 0xffff_0000);
        }
    }
    Some(out)
}

/// `o += p @ v` over `n` keys: p `[n][QB]`, v `[n][kv]`, o `[kv][QB]`.
///
/// # Safety
/// As [`Products::scores`].
///
/// `ahead(i)` is called with `i` in `0..kv / 8` between the column chunks, to spread
/// prefetches of the next step's data over the products.
#[inline(always)]
unsafe fn av<P: Products>(
    p: &[f32],
    v: &[f32],
    n: usize,
    kv: usize,
    o: &mut [f32],
    mut ahead: impl FnMut(usize),
) {
    assert!(p.len() >= n * QB && v.len() >= n * kv && o.len() >= kv * QB);
    let mut e0 = 0;
    // SAFETY: the caller's contract; sizes asserted above.
    unsafe {
        while e0 + 8 <= kv {
            ahead(e0 / 8);
            P::av_cols::<8>(p, v, n, kv, e0, o);
            e0 += 8;
        }
        while e0 < kv {
            P::av_cols::<1>(p, v, n, kv, e0, o);
            e0 += 1;
        }
    }
}

/// How many grid rows a step covers for `frames` memory frames: the scores kernel then works
/// on that many positions at once, sharing each `Gx` load (a position's `Gx` rows come from
/// L2: with one frame, one position per call spent most of its time loading them) and
/// keeping at least 8 multiply-add chains in flight. Counted per chunk of frames
/// ([`chunk_frames`]).
fn rows_per_step(frames: usize) -> usize {
    match chunk_frames(frames) {
        1 | 2 => 4,
        3..=6 => 2,
        _ => 1,
    }
}

/// The frames one scores call covers (at most 8: 8 frames x 2 registers of accumulators):
/// `frames` split into equal chunks (10 as 5 + 5, not 8 + 2: a chunk of 1 or 2 frames is
/// bound by its G-table loads).
fn chunk_frames(frames: usize) -> usize {
    frames.div_ceil(frames.div_ceil(8).max(1))
}

/// One object's memories in a row step: the key inputs `u` and value inputs `vals` of its
/// memory frames (`frames x side^2` tokens of `kv`, more may follow), and the values packed
/// for the AMX value products (`amx::pack_values_t`) where they apply.
#[derive(Clone, Copy)]
struct ObjectMemory<'a> {
    u: &'a [f32],
    vals: &'a [f32],
    vt: Option<&'a [u16]>,
    /// The values as bf16 key pairs ([`pack_value_pairs`]) where the value products take
    /// bf16 probabilities ([`Products::av_pairs`]).
    vp: Option<&'a [u32]>,
}

/// Scores, softmax and values of grid rows `y0..y0 + ny` of every memory frame of every
/// object in `mem`, all objects with the same queries (and G tables): the scores of all their
/// frames run as one set of frames, sharing each position's G sum and loads (with one or two
/// frames per object the scores are bound by those loads); object `k` has its own softmax
/// state `states[k]` and output accumulator `o[k * kv * QB..][..kv * QB]`.
///
/// `st`: `[mem.len() * frames][ny * s][QB]` scratch.
///
/// # Safety
/// As [`Products::scores`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn row_step_with<P: Products>(
    gx: &[f32],
    gy: &[f32],
    mem: &[ObjectMemory<'_>],
    y0: usize,
    ny: usize,
    s: usize,
    kv: usize,
    frames: usize,
    st: &mut [f32],
    states: &mut [Softmax],
    o: &mut [f32],
) {
    let l = s * s;
    let stride_u = l * kv;
    let stride_st = ny * s * QB;
    let pg = (kv + 1) * GT;
    let nv = mem.len() * frames;
    assert!(
        ny >= 1
            && frames >= 1
            && y0 + ny <= s
            && gx.len() >= (s * (kv + 1) - 1) * GT + QB
            && gy.len() >= (ny - 1) * pg + kv * GT + QB
            && mem
                .iter()
                .all(|m| m.u.len() >= frames * stride_u && m.vals.len() >= frames * stride_u)
            && st.len() >= nv * stride_st
            && states.len() == mem.len()
            && o.len() == mem.len() * kv * QB
    );
    // frame `v` of the set: frame `v % frames` of object `v / frames`
    let frame_u = |v: usize| &mem[v / frames].u[(v % frames) * stride_u..frames * stride_u];
    // frames in equal chunks of at most 8 (8 frames x 2 registers of accumulators): the G sum
    // of a position is formed once per chunk; with fewer frames, `np` rows per kernel call
    let chunk = chunk_frames(nv);
    let group = rows_per_step(nv);
    let np = if ny == group { group } else { 1 };
    // strides between the rows of a multi-row kernel call in u and st
    let (us, ss) = (s * kv, s * QB);
    // No software prefetch of the key tokens along the columns: every frame's tokens are a
    // sequential stream here, which the hardware prefetchers follow. Prefetching the value
    // tokens of each column and the key tokens two columns ahead cost 6-7% of the
    // cross-attention (AMD EPYC, `memattn_timing WEIGHTS 4 3`: 67 -> 62-63 ms per layer).
    for x in 0..s {
        let gxx = &gx[x * pg..];
        for p0 in (0..ny).step_by(np) {
            let gyp = &gy[p0 * pg..];
            // the tokens of these positions in every frame (rows p0.. + np, column x: inside
            // `frame_u(v)`, whose size is asserted above)
            let at = ((y0 + p0) * s + x) * kv;
            let mut t0 = 0;
            while t0 < nv {
                let mc = (nv - t0).min(chunk);
                let ur: [*const f32; 8] =
                    std::array::from_fn(|i| frame_u((t0 + i).min(nv - 1))[at..].as_ptr());
                let sr = &mut st[t0 * stride_st + (p0 * s + x) * QB..];
                macro_rules! scores {
                    ($mc:literal, $np:literal) => {
                        P::scores::<$mc, $np>(
                            gxx,
                            gyp,
                            pg,
                            std::array::from_fn(|i| ur[i]),
                            us,
                            kv,
                            sr,
                            stride_st,
                            ss,
                        )
                    };
                }
                // SAFETY: the caller's contract; frames t0..t0 + mc at rows y0 + p0.. + np,
                // column x are inside their objects' u and st (sizes asserted above).
                unsafe {
                    match (mc, np) {
                        (1, 4) => scores!(1, 4),
                        (2, 4) => scores!(2, 4),
                        (3, 2) => scores!(3, 2),
                        (4, 2) => scores!(4, 2),
                        (5, 2) => scores!(5, 2),
                        (6, 2) => scores!(6, 2),
                        (8, _) => scores!(8, 1),
                        (7, _) => scores!(7, 1),
                        (6, _) => scores!(6, 1),
                        (5, _) => scores!(5, 1),
                        (4, _) => scores!(4, 1),
                        (3, _) => scores!(3, 1),
                        (2, _) => scores!(2, 1),
                        _ => scores!(1, 1),
                    }
                }
                t0 += mc;
            }
        }
    }
    let n = ny * s;
    // the lines of the value tokens of rows y0.. + ny of a frame: ny * s * kv / 16
    let lines = (n * kv).div_ceil(16);
    let chunks = (kv / 8).max(1);
    for (ob, m) in mem.iter().enumerate() {
        let st = &mut st[ob * frames * stride_st..(ob + 1) * frames * stride_st];
        let o = &mut o[ob * kv * QB..(ob + 1) * kv * QB];
        // SAFETY: the caller's contract.
        unsafe { P::fold(st, frames * n, &mut states[ob], o) };
        if let Some(vt) = m.vt {
            // the value products on AMX tiles (`amx::rope_values`; the caller packed `vt`
            // only where the sizes are multiples of the tiles and the CPU has AMX)
            // SAFETY: as above; sizes checked inside.
            unsafe { super::amx::rope_values(st, stride_st, n, frames, l, y0 * s, vt, kv, o) };
            continue;
        }
        if let Some(vp) = m.vp {
            // bf16 probabilities against the values' bf16 key pairs (`vp` is packed only
            // where `n`, `l` and `s` are even): half the words of the f32 values
            let pair_lines = (n * kv).div_ceil(32);
            for t in 0..frames {
                let k0 = (t * l + y0 * s) / 2 * kv;
                // the next frame's pairs (or the next object's first)
                let next = if t + 1 < frames {
                    Some((vp, ((t + 1) * l + y0 * s) / 2 * kv))
                } else {
                    mem.get(ob + 1)
                        .and_then(|nm| nm.vp)
                        .map(|nvp| (nvp, y0 * s / 2 * kv))
                };
                let ahead = |i: usize| {
                    if let Some((next_vp, n0)) = next {
                        prefetch_part::<P, _>(next_vp, n0, pair_lines, i, chunks);
                    }
                };
                // SAFETY: the caller's contract; frame t's pairs of rows y0.. + ny exist.
                unsafe {
                    P::av_pairs(
                        &mut st[t * stride_st..t * stride_st + n * QB],
                        &vp[k0..k0 + n / 2 * kv],
                        n,
                        kv,
                        o,
                        ahead,
                    )
                };
            }
            continue;
        }
        for t in 0..frames {
            let v0 = (t * l + y0 * s) * kv;
            // the next frame's value tokens (the next object's first, or the next rows'
            // first key tokens), spread over the value products
            let next = if t + 1 < frames {
                Some((m.vals, ((t + 1) * l + y0 * s) * kv))
            } else {
                mem.get(ob + 1).map(|nm| (nm.vals, y0 * s * kv))
            };
            let ahead = |i: usize| {
                if let Some((next_vals, n0)) = next {
                    prefetch_part::<P, _>(next_vals, n0, lines, i, chunks);
                } else if y0 + ny < s && i == 0 {
                    for v in 0..nv {
                        for y in y0 + ny..(y0 + 2 * ny).min(s) {
                            for x in 0..2 {
                                P::prefetch_token(frame_u(v), (y * s + x) * kv, kv);
                            }
                        }
                    }
                }
            };
            // SAFETY: the caller's contract.
            unsafe {
                av::<P>(
                    &st[t * stride_st..t * stride_st + n * QB],
                    &m.vals[v0..v0 + n * kv],
                    n,
                    kv,
                    o,
                    ahead,
                )
            };
        }
    }
}

/// Part `i` of `parts` of the prefetch of `lines` cache lines (16 words each) of `v` from
/// `v[at]`: one slice of the next buffer's lines between two column chunks of the value
/// products.
#[inline(always)]
fn prefetch_part<P: Products, T>(v: &[T], at: usize, lines: usize, i: usize, parts: usize) {
    for line in (i * lines / parts)..((i + 1) * lines / parts) {
        P::prefetch(v, at + line * 16);
    }
}

/// [`row_step_with`] with the portable products.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn row_step_body(
    gx: &[f32],
    gy: &[f32],
    mem: &[ObjectMemory<'_>],
    y0: usize,
    ny: usize,
    s: usize,
    kv: usize,
    frames: usize,
    st: &mut [f32],
    states: &mut [Softmax],
    o: &mut [f32],
) {
    // SAFETY: the portable products need no CPU feature.
    unsafe { row_step_with::<Portable>(gx, gy, mem, y0, ny, s, kv, frames, st, states, o) }
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
    unsafe { av::<Portable>(sp, vals, n, kv, o, |_| {}) };
}

dispatch!(row_step_portable, row_step_body, (gx: &[f32], gy: &[f32], mem: &[ObjectMemory<'_>], y0: usize, ny: usize, s: usize, kv: usize, frames: usize, st: &mut [f32], states: &mut [Softmax], o: &mut [f32]));
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

/// [`row_step_with`] with the AVX-512 products where the CPU has them (unless `portable`).
#[allow(clippy::too_many_arguments)]
fn row_step(
    portable: bool,
    gx: &[f32],
    gy: &[f32],
    mem: &[ObjectMemory<'_>],
    y0: usize,
    ny: usize,
    s: usize,
    kv: usize,
    frames: usize,
    st: &mut [f32],
    states: &mut [Softmax],
    o: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if !portable && fast_kernels() {
        if mem.iter().any(|m| m.vp.is_some()) && bf16_kernels() {
            // SAFETY: the CPU has the features (checked above); bounds are asserted inside.
            return unsafe {
                avx512::row_step_bf16(gx, gy, mem, y0, ny, s, kv, frames, st, states, o)
            };
        }
        // SAFETY: the CPU has the features (checked above); slice bounds are asserted inside.
        return unsafe { avx512::row_step(gx, gy, mem, y0, ny, s, kv, frames, st, states, o) };
    }
    let _ = portable;
    row_step_portable(gx, gy, mem, y0, ny, s, kv, frames, st, states, o)
}

/// [`row_step`] over every grid row of one lane set of `QB` queries (`gx` / `gy` start at
/// its lanes), `rows_per_step(mem.len() * frames)` rows a step: the softmax states and
/// output accumulators take in every memory frame of every object in `mem`.
#[allow(clippy::too_many_arguments)]
fn row_steps(
    portable: bool,
    gx: &[f32],
    gy: &[f32],
    mem: &[ObjectMemory<'_>],
    s: usize,
    kv: usize,
    frames: usize,
    st: &mut [f32],
    states: &mut [Softmax],
    o: &mut [f32],
) {
    let rows = rows_per_step(mem.len() * frames);
    for y0 in (0..s).step_by(rows) {
        row_step(
            portable,
            gx,
            &gy[y0 * (kv + 1) * GT..],
            mem,
            y0,
            rows.min(s - y0),
            s,
            kv,
            frames,
            st,
            states,
            o,
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // register arrays indexed in step, as the loads
mod avx512 {
    //! The two inner products with explicit AVX-512: 32 queries in two registers, a broadcast
    //! memory / value channel per multiply-add.
    use std::arch::x86_64::*;

    use super::{AmxTables, GT, ObjectMemory, Products, QB, Softmax, row_step_with};

    pub(super) struct Avx512;

    /// e^x on 16 lanes: the Cephes polynomial of `simd::exp` with FMAs, the power of two by
    /// `vscalefps`; inputs clamped to [-87, 88] as there.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[inline(always)]
    unsafe fn exp_ps(x: __m512) -> __m512 {
        // SAFETY: register-only AVX-512F arithmetic (the caller's contract).
        unsafe {
            let x = _mm512_min_ps(
                _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
                _mm512_set1_ps(88.0),
            );
            let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(
                _mm512_fmadd_ps(
                    x,
                    _mm512_set1_ps(std::f32::consts::LOG2_E),
                    _mm512_set1_ps(0.5),
                ),
            );
            let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
            let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
            let mut p = _mm512_set1_ps(1.987_569_1e-4);
            for c in [
                1.398_199_9e-3,
                8.333_452e-3,
                4.166_579_6e-2,
                1.666_666_5e-1,
                0.5,
            ] {
                p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
            }
            let p = _mm512_add_ps(
                _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r),
                _mm512_set1_ps(1.0),
            );
            _mm512_scalef_ps(p, n)
        }
    }

    impl Products for Avx512 {
        #[inline(always)]
        unsafe fn scores<const MC: usize, const NP: usize>(
            gx: &[f32],
            gy: &[f32],
            gy_p: usize,
            u: [*const f32; MC],
            u_p: usize,
            kv: usize,
            st: &mut [f32],
            st_stride: usize,
            st_p: usize,
        ) {
            debug_assert!(gx.len() >= kv * GT + QB && gy.len() >= (NP - 1) * gy_p + kv * GT + QB);
            debug_assert!(st.len() >= (MC - 1) * st_stride + (NP - 1) * st_p + QB);
            let (gx, gy, st) = (gx.as_ptr(), gy.as_ptr(), st.as_mut_ptr());
            // SAFETY (whole body): the CPU has AVX-512 (caller); every offset is inside the
            // slices (`row_step_with` asserts their sizes).
            unsafe {
                let mut a0 = [[_mm512_setzero_ps(); MC]; NP];
                let mut a1 = [[_mm512_setzero_ps(); MC]; NP];
                for d in 0..kv {
                    let x0 = _mm512_loadu_ps(gx.add(d * GT));
                    let x1 = _mm512_loadu_ps(gx.add(d * GT + 16));
                    for p in 0..NP {
                        let gp = gy.add(p * gy_p + d * GT);
                        let g0 = _mm512_add_ps(x0, _mm512_loadu_ps(gp));
                        let g1 = _mm512_add_ps(x1, _mm512_loadu_ps(gp.add(16)));
                        for t in 0..MC {
                            let w = _mm512_set1_ps(*u[t].add(p * u_p + d));
                            a0[p][t] = _mm512_fmadd_ps(g0, w, a0[p][t]);
                            a1[p][t] = _mm512_fmadd_ps(g1, w, a1[p][t]);
                        }
                    }
                }
                let x0 = _mm512_loadu_ps(gx.add(kv * GT));
                let x1 = _mm512_loadu_ps(gx.add(kv * GT + 16));
                for p in 0..NP {
                    let gp = gy.add(p * gy_p + kv * GT);
                    let b0 = _mm512_add_ps(x0, _mm512_loadu_ps(gp));
                    let b1 = _mm512_add_ps(x1, _mm512_loadu_ps(gp.add(16)));
                    for t in 0..MC {
                        let dst = st.add(t * st_stride + p * st_p);
                        _mm512_storeu_ps(dst, _mm512_add_ps(a0[p][t], b0));
                        _mm512_storeu_ps(dst.add(16), _mm512_add_ps(a1[p][t], b1));
                    }
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

        #[inline(always)]
        unsafe fn fold(st: &mut [f32], n: usize, state: &mut Softmax, o: &mut [f32]) {
            assert!(st.len() >= n * QB && o.len().is_multiple_of(QB));
            // SAFETY (whole body): the CPU has AVX-512 (caller); st holds n rows of QB, the
            // state arrays QB lanes, o whole rows of QB (asserted above).
            unsafe {
                let p = st.as_mut_ptr();
                let old0 = _mm512_loadu_ps(state.max.as_ptr());
                let old1 = _mm512_loadu_ps(state.max.as_ptr().add(16));
                let (mut m0, mut m1) = (old0, old1);
                for r in 0..n {
                    m0 = _mm512_max_ps(m0, _mm512_loadu_ps(p.add(r * QB)));
                    m1 = _mm512_max_ps(m1, _mm512_loadu_ps(p.add(r * QB + 16)));
                }
                let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
                // lanes that had no keys yet: correction 0 (their sum and output are 0)
                let c0 = _mm512_maskz_mov_ps(
                    _mm512_cmp_ps_mask::<_CMP_NEQ_OQ>(old0, ninf),
                    exp_ps(_mm512_sub_ps(old0, m0)),
                );
                let c1 = _mm512_maskz_mov_ps(
                    _mm512_cmp_ps_mask::<_CMP_NEQ_OQ>(old1, ninf),
                    exp_ps(_mm512_sub_ps(old1, m1)),
                );
                let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
                for r in 0..n {
                    let e0 = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(p.add(r * QB)), m0));
                    let e1 = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(p.add(r * QB + 16)), m1));
                    _mm512_storeu_ps(p.add(r * QB), e0);
                    _mm512_storeu_ps(p.add(r * QB + 16), e1);
                    s0 = _mm512_add_ps(s0, e0);
                    s1 = _mm512_add_ps(s1, e1);
                }
                let sp = state.sum.as_mut_ptr();
                _mm512_storeu_ps(sp, _mm512_fmadd_ps(_mm512_loadu_ps(sp), c0, s0));
                _mm512_storeu_ps(
                    sp.add(16),
                    _mm512_fmadd_ps(_mm512_loadu_ps(sp.add(16)), c1, s1),
                );
                _mm512_storeu_ps(state.max.as_mut_ptr(), m0);
                _mm512_storeu_ps(state.max.as_mut_ptr().add(16), m1);
                let op = o.as_mut_ptr();
                for r in 0..o.len() / QB {
                    let a = op.add(r * QB);
                    _mm512_storeu_ps(a, _mm512_mul_ps(_mm512_loadu_ps(a), c0));
                    _mm512_storeu_ps(a.add(16), _mm512_mul_ps(_mm512_loadu_ps(a.add(16)), c1));
                }
            }
        }

        #[inline(always)]
        fn prefetch<T>(v: &[T], at: usize) {
            if at < v.len() {
                // SAFETY: a prefetch of an in-bounds address has no side effect.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(v.as_ptr().add(at).cast()) };
            }
        }
    }

    /// [`Avx512`] with the value products on `vdpbf16ps`: bf16 probabilities against the
    /// values' bf16 key pairs, twice the multiply-adds of an f32 FMA per instruction.
    pub(super) struct Avx512Bf16;

    /// The value products of channels `e0.. + EC` over `np` key pairs: `pp` holds pair `k`'s
    /// interleaved bf16 probabilities at `pp[2 k QB..][..QB]` (32 words for queries 0-15, then
    /// 32 for 16-31), `vp` the values' pairs.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX-512 BF16; `pp` holds `2 np QB` floats, `vp` `np` rows of
    /// `kv`, `o` `kv` rows of `QB`, `e0 + EC <= kv`.
    #[inline(always)]
    unsafe fn pair_cols<const EC: usize>(
        pp: *const f32,
        vp: *const u32,
        np: usize,
        kv: usize,
        e0: usize,
        o: *mut f32,
    ) {
        // SAFETY (whole body): the caller's contract.
        unsafe {
            let mut a0 = [_mm512_setzero_ps(); EC];
            let mut a1 = [_mm512_setzero_ps(); EC];
            for e in 0..EC {
                a0[e] = _mm512_loadu_ps(o.add((e0 + e) * QB));
                a1[e] = _mm512_loadu_ps(o.add((e0 + e) * QB + 16));
            }
            for k in 0..np {
                let pl: __m512bh = std::mem::transmute(_mm512_loadu_ps(pp.add(2 * k * QB)));
                let ph: __m512bh = std::mem::transmute(_mm512_loadu_ps(pp.add(2 * k * QB + 16)));
                let vk = vp.add(k * kv + e0);
                for e in 0..EC {
                    let w: __m512bh = std::mem::transmute(_mm512_set1_epi32(*vk.add(e) as i32));
                    a0[e] = _mm512_dpbf16_ps(a0[e], pl, w);
                    a1[e] = _mm512_dpbf16_ps(a1[e], ph, w);
                }
            }
            for e in 0..EC {
                _mm512_storeu_ps(o.add((e0 + e) * QB), a0[e]);
                _mm512_storeu_ps(o.add((e0 + e) * QB + 16), a1[e]);
            }
        }
    }

    impl Products for Avx512Bf16 {
        #[inline(always)]
        unsafe fn scores<const MC: usize, const NP: usize>(
            gx: &[f32],
            gy: &[f32],
            gy_p: usize,
            u: [*const f32; MC],
            u_p: usize,
            kv: usize,
            st: &mut [f32],
            st_stride: usize,
            st_p: usize,
        ) {
            // SAFETY: the caller's contract (a superset of Avx512's features).
            unsafe { Avx512::scores::<MC, NP>(gx, gy, gy_p, u, u_p, kv, st, st_stride, st_p) }
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
            // SAFETY: as above.
            unsafe { Avx512::av_cols::<EC>(p, v, n, kv, e0, o) }
        }

        #[inline(always)]
        unsafe fn fold(st: &mut [f32], n: usize, state: &mut Softmax, o: &mut [f32]) {
            // SAFETY: as above.
            unsafe { Avx512::fold(st, n, state, o) }
        }

        #[inline(always)]
        fn prefetch<T>(v: &[T], at: usize) {
            Avx512::prefetch(v, at)
        }

        #[inline(always)]
        unsafe fn av_pairs(
            p: &mut [f32],
            vp: &[u32],
            n: usize,
            kv: usize,
            o: &mut [f32],
            mut ahead: impl FnMut(usize),
        ) {
            assert!(
                n.is_multiple_of(2)
                    && p.len() >= n * QB
                    && vp.len() >= n / 2 * kv
                    && o.len() >= kv * QB
            );
            let (pp, vpp, op) = (p.as_mut_ptr(), vp.as_ptr(), o.as_mut_ptr());
            // word 2j of a pair's vector: key 2k's probability of query j, word 2j + 1: key
            // 2k + 1's (`vcvtne2ps2bf16` puts the first key's 16 in words 0-15)
            let order: [i16; 32] =
                std::array::from_fn(|w| (w / 2 + if w % 2 == 1 { 16 } else { 0 }) as i16);
            // SAFETY (whole body): the CPU has AVX-512F/BW/BF16 (caller); every offset is
            // inside p (n rows of QB), vp (n / 2 rows of kv) and o (kv rows of QB).
            unsafe {
                let idx = _mm512_loadu_si512(order.as_ptr().cast());
                // in place: pair k's bf16 words over the first of its two rows
                for k in 0..n / 2 {
                    let r0 = pp.add(2 * k * QB);
                    let r1 = r0.add(QB);
                    for h in [0, 16] {
                        let two = _mm512_cvtne2ps_pbh(
                            _mm512_loadu_ps(r1.add(h)),
                            _mm512_loadu_ps(r0.add(h)),
                        );
                        let pair = _mm512_permutexvar_epi16(
                            idx,
                            std::mem::transmute::<__m512bh, __m512i>(two),
                        );
                        _mm512_storeu_si512(r0.add(h).cast(), pair);
                    }
                }
                let mut e0 = 0;
                while e0 + 8 <= kv {
                    ahead(e0 / 8);
                    pair_cols::<8>(pp, vpp, n / 2, kv, e0, op);
                    e0 += 8;
                }
                while e0 < kv {
                    pair_cols::<1>(pp, vpp, n / 2, kv, e0, op);
                    e0 += 1;
                }
            }
        }
    }

    /// [`row_step_with`] with [`Avx512Bf16`]'s products, compiled for AVX-512 BF16.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512bf16,avx2,fma")]
    pub(super) unsafe fn row_step_bf16(
        gx: &[f32],
        gy: &[f32],
        mem: &[ObjectMemory<'_>],
        y0: usize,
        ny: usize,
        s: usize,
        kv: usize,
        frames: usize,
        st: &mut [f32],
        states: &mut [Softmax],
        o: &mut [f32],
    ) {
        // SAFETY: this function's own target features are the products' requirement.
        unsafe { row_step_with::<Avx512Bf16>(gx, gy, mem, y0, ny, s, kv, frames, st, states, o) }
    }

    /// [`row_step_with`] with the AVX-512 products, compiled for AVX-512.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) unsafe fn row_step(
        gx: &[f32],
        gy: &[f32],
        mem: &[ObjectMemory<'_>],
        y0: usize,
        ny: usize,
        s: usize,
        kv: usize,
        frames: usize,
        st: &mut [f32],
        states: &mut [Softmax],
        o: &mut [f32],
    ) {
        // SAFETY: this function's own target features are the products' requirement.
        unsafe { row_step_with::<Avx512>(gx, gy, mem, y0, ny, s, kv, frames, st, states, o) }
    }

    /// Every memory frame of one block of 32 queries with the scores on AMX tiles: per band
    /// of 16 grid rows and pair of frames, `S = bias + U Gy[y]` over the band's rows (two
    /// tiles of 16 keys along x share a row's `Gy`), then `S += U Gx[x]` over its columns (16
    /// keys along y, the two frames sharing `Gx`), then the softmax fold and the value
    /// products (`amx::rope_values`). `uh` / `ul`: the memory tokens `[frames * side^2][kv]`
    /// as bf16 halves; `vt`: the values packed by `amx::pack_values_t`.
    ///
    /// # Safety
    /// The CPU has AVX-512 and AMX, available to this process.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) unsafe fn amx_frames(
        tabs: &mut AmxTables,
        gx: &[f32],
        gy: &[f32],
        uh: &[u16],
        ul: &[u16],
        vt: &[u16],
        s: usize,
        kv: usize,
        frames: usize,
        state: &mut Softmax,
        o: &mut [f32],
    ) {
        use crate::kernels::amx::{configure_tiles, load_c, rope_values, scores_product, store_c};
        let l = s * s;
        let pg = (kv + 1) * GT;
        let nb = 16 * s;
        assert!(
            s.is_multiple_of(32)
                && kv.is_multiple_of(32)
                && GT == 32
                && QB == 32
                && gx.len() >= s * pg
                && gy.len() >= s * pg
                && uh.len() == frames * l * kv
                && ul.len() == uh.len()
                && tabs.gxh.len() == s * kv * GT
                && tabs.bias.len() == nb * GT
                && tabs.st.len() == 2 * nb * GT
                && o.len() >= kv * QB,
            "amx_frames: sizes"
        );
        let (gxh, gxl, gyh, gyl) = (
            tabs.gxh.as_ptr(),
            tabs.gxl.as_ptr(),
            tabs.gyh.as_ptr(),
            tabs.gyl.as_ptr(),
        );
        let (uhp, ulp) = (uh.as_ptr(), ul.as_ptr());
        let steps = kv / 32;
        for y0 in (0..s).step_by(16) {
            // the bias terms g[kv] of every key of the band
            for yy in 0..16 {
                let by = &gy[(y0 + yy) * pg + kv * GT..][..GT];
                for x in 0..s {
                    let bx = &gx[x * pg + kv * GT..][..GT];
                    let d = &mut tabs.bias[(yy * s + x) * GT..][..GT];
                    for q in 0..GT {
                        d[q] = bx[q] + by[q];
                    }
                }
            }
            let bias = tabs.bias.as_ptr();
            let mut t = 0;
            while t < frames {
                let nf = (frames - t).min(2);
                let st = tabs.st.as_mut_ptr();
                // SAFETY (tile products): every key index below is < frames * l (t + f <
                // frames, y0 + yy < s, x < s); G rows x / y < s; bias and st rows < nb (per
                // frame); AMX is configured first. rope_values checks its own sizes.
                unsafe {
                    configure_tiles();
                    for f in 0..nf {
                        for yy in 0..16 {
                            let y = y0 + yy;
                            for xb in (0..s).step_by(32) {
                                let key = (t + f) * l + y * s + xb;
                                let c = (yy * s + xb) * GT;
                                load_c(0, bias.add(c), 128);
                                load_c(1, bias.add(c + 16 * GT), 128);
                                scores_product(
                                    uhp.add(key * kv),
                                    uhp.add((key + 16) * kv),
                                    ulp.add(key * kv),
                                    ulp.add((key + 16) * kv),
                                    kv * 2,
                                    gyh.add(y * kv * GT),
                                    gyl.add(y * kv * GT),
                                    steps,
                                );
                                store_c(0, st.add(f * nb * GT + c), 128);
                                store_c(1, st.add(f * nb * GT + c + 16 * GT), 128);
                            }
                        }
                    }
                    for x in 0..s {
                        let k0 = t * l + y0 * s + x;
                        let k1 = if nf == 2 { k0 + l } else { k0 };
                        let c0 = st.add(x * GT);
                        let c1 = if nf == 2 { c0.add(nb * GT) } else { c0 };
                        load_c(0, c0, s * 128);
                        load_c(1, c1, s * 128);
                        scores_product(
                            uhp.add(k0 * kv),
                            uhp.add(k1 * kv),
                            ulp.add(k0 * kv),
                            ulp.add(k1 * kv),
                            s * kv * 2,
                            gxh.add(x * kv * GT),
                            gxl.add(x * kv * GT),
                            steps,
                        );
                        store_c(0, c0, s * 128);
                        if nf == 2 {
                            store_c(1, c1, s * 128);
                        }
                    }
                    let sts = &mut tabs.st[..nf * nb * GT];
                    Avx512::fold(sts, nf * nb, state, o);
                    rope_values(sts, nb * GT, nb, nf, l, t * l + y0 * s, vt, kv, o);
                }
                t += nf;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::attention::attention_shared_values;
    use crate::kernels::attention::tests::{max_abs_diff, rand};
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

    /// The owned inputs of a [`RopeKeys`] fixture: SAM 2's axial rotation table, a random key
    /// projection scaled by `w_scale` (seed `seed`) and a random bias (seed `seed + 1`).
    struct KeysFixture {
        side: usize,
        hd: usize,
        kv: usize,
        table: Vec<(f32, f32)>,
        wk: Vec<f32>,
        bk: Vec<f32>,
    }

    impl KeysFixture {
        fn new(side: usize, hd: usize, kv: usize, w_scale: f32, seed: u64) -> Self {
            Self {
                side,
                hd,
                kv,
                table: axial_rope(hd, side, side, 10000.0),
                wk: rand(kv * hd, seed).iter().map(|v| v * w_scale).collect(),
                bk: rand(hd, seed + 1),
            }
        }

        fn keys(&self) -> RopeKeys<'_> {
            RopeKeys {
                side: self.side,
                hd: self.hd,
                kv: self.kv,
                wk: &self.wk,
                bk: Some(&self.bk),
                table: &self.table,
            }
        }
    }

    fn check(side: usize, hd: usize, kv: usize, frames: usize, n_ptr: usize, b: usize, bq: usize) {
        let l = side * side;
        let lk = frames * l + n_ptr;
        let fixture = KeysFixture::new(side, hd, kv, 0.5, 1);
        let keys = fixture.keys();
        let q: Vec<f32> = rand(bq * l * hd, 3).iter().map(|v| v * 1.5).collect();
        let u = rand(b * lk * kv, 4);
        let vals = rand(b * lk * kv, 5);
        let kptr = rand(b * n_ptr * hd, 6);
        let scale = (hd as f32).powf(-0.5);
        let want = unfolded(&keys, &q, bq, &u, &vals, &kptr, b, frames, n_ptr, scale);
        for portable in [false, true] {
            let got = rope_cross_impl(
                &keys, &q, bq, &u, &vals, &kptr, b, frames, n_ptr, scale, portable, false, None,
            );
            let err = max_abs_diff(&got, &want);
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
        // shared queries, merged row steps (MERGED_FRAMES frames per group): four objects of
        // one frame in one group, partial query blocks and pointers; four of two frames as
        // groups of three and one; seven of one frame as six and one
        check(6, 16, 11, 1, 2, 4, 1);
        check(7, 16, 8, 2, 3, 4, 1);
        check(8, 32, 16, 1, 1, 7, 1);
        check(6, 16, 11, 10, 3, 1, 1); // partial query block, > 8 frames, odd kv
        check(4, 8, 8, 1, 0, 1, 1); // a single memory frame
        // steps of several grid rows (4 for 1-3 frames, 2 for 4-6) with a shorter last step
        check(6, 16, 11, 1, 2, 2, 2);
        check(7, 16, 8, 5, 2, 2, 1);
        check(7, 16, 16, 3, 0, 1, 1);
        check(8, 32, 16, 7, 1, 1, 1);
        // a grid long enough for the low-rank G tables (rank 13 of 32 positions)
        assert!(
            RopeKeys {
                side: 32,
                hd: 64,
                kv: 8,
                wk: &[0.0; 8 * 64],
                bk: None,
                table: &axial_rope(64, 32, 32, 10000.0),
            }
            .axis(true)
            .u
            .is_some()
        );
        check(32, 64, 8, 3, 2, 2, 1);
    }

    /// SAM 2's axis rotations (64 positions, 64 frequencies) factor at rank < 32 within the
    /// tolerance, and the factors reproduce the matrix.
    #[test]
    fn rotations_factor_at_low_rank() {
        let table = axial_rope(256, 64, 64, 10000.0);
        let keys = RopeKeys {
            side: 64,
            hd: 256,
            kv: 64,
            wk: &[0.0; 64 * 256],
            bk: None,
            table: &table,
        };
        for y in [false, true] {
            let t = keys.rotations(y);
            let (u, q) = low_rank(&t, 64, 128, LOW_RANK_TOL);
            let r = u.len() / 64;
            assert!((20..=27).contains(&r), "rank {r}");
            for i in 0..64 {
                // each row's norm is 8 (64 unit (cos, sin) pairs)
                let err = (0..128)
                    .map(|j| {
                        let v: f64 = (0..r).map(|k| u[i * r + k] * q[k * 128 + j]).sum();
                        (v - t[i * 128 + j]).powi(2)
                    })
                    .sum::<f64>()
                    .sqrt();
                assert!(err <= LOW_RANK_TOL * 8.0, "row {i}: residual {err}");
            }
        }
    }

    /// The AMX value products (bf16 memory tokens, whole tiles of keys) against the portable
    /// kernel, which never uses them.
    #[test]
    fn amx_values_match_portable() {
        // (side, kv, frames, objects, query sets): one and two pairs of 16-key tiles per grid
        // row, one and two 32-channel steps, an odd frame left over, shared and own queries
        for (side, kv, frames, b, bq) in [
            (32, 32, 1, 1, 1),
            (32, 32, 3, 2, 1),
            (64, 64, 3, 1, 1),
            (64, 64, 2, 2, 2),
        ] {
            let (hd, n_ptr) = (64, 3);
            let l = side * side;
            let fixture = KeysFixture::new(side, hd, kv, 0.3, 11);
            let keys = fixture.keys();
            let lk = frames * l + n_ptr;
            let q: Vec<f32> = rand(bq * l * hd, 13).iter().map(|v| 2.0 * v).collect();
            let u = rand(b * lk * kv, 14);
            let vals: Vec<f32> = rand(b * lk * kv, 15)
                .iter()
                .map(|v| f32::from_bits(v.to_bits() & 0xffff_0000))
                .collect();
            let kptr = rand(b * n_ptr * hd, 16);
            let run = |portable| {
                rope_cross_impl(
                    &keys, &q, bq, &u, &vals, &kptr, b, frames, n_ptr, 0.125, portable, false, None,
                )
            };
            let (fast, slow) = (run(false), run(true));
            // the packings cached by a first call serve a second one (other queries) exactly
            let cache = std::sync::OnceLock::new();
            let q2: Vec<f32> = q.iter().map(|v| -0.5 * v).collect();
            for (qq, want) in [(&q2, None), (&q, Some(&fast))] {
                let got = rope_cross_attention_cached(
                    &keys, qq, bq, &u, &vals, &kptr, b, frames, n_ptr, 0.125, false, &cache,
                );
                if let Some(want) = want {
                    assert_eq!(
                        &got, want,
                        "cached packings: side {side} kv {kv} frames {frames}"
                    );
                }
            }
            assert!(cache.get().is_some());
            let err = max_abs_diff(&fast, &slow);
            eprintln!(
                "side {side}, kv {kv}, frames {frames}, objects {b}/{bq}: max|diff| {err:.2e} (AMX: {})",
                crate::kernels::amx::available()
            );
            assert!(err < 2e-5, "side {side} frames {frames} b {b}: {err}");
        }
    }

    /// The value products with bf16 probabilities: the fast kernel (`vdpbf16ps` where the CPU
    /// has AVX-512 BF16) equals the portable reference that rounds each probability, and both
    /// stay within the rounding's bound of the f32 attention: each normalised weight `w_k`
    /// moves by at most `2^-9 w_k`, so an output by at most `2^-9 max |v|`.
    #[test]
    fn bf16_probabilities_round_only_the_weights() {
        // (side, hd, kv, frames, pointers, objects, query sets): own and shared queries
        // (merged row steps), an odd kv (one-channel columns), an odd side (no key pairs:
        // the f32 products), SAM 2's grid width
        for (side, hd, kv, frames, n_ptr, b, bq) in [
            (8, 32, 16, 3, 4, 2, 2),
            (8, 32, 16, 2, 0, 3, 1),
            (6, 16, 11, 1, 2, 4, 1),
            (7, 16, 8, 2, 3, 1, 1),
            (64, 64, 64, 2, 1, 1, 1),
        ] {
            let l = side * side;
            let lk = frames * l + n_ptr;
            let fixture = KeysFixture::new(side, hd, kv, 0.5, 21);
            let keys = fixture.keys();
            let q: Vec<f32> = rand(bq * l * hd, 23).iter().map(|v| v * 3.0).collect();
            let u = rand(b * lk * kv, 24);
            let vals: Vec<f32> = rand(b * lk * kv, 25)
                .iter()
                .map(|&v| bf16_round(v))
                .collect();
            let kptr = rand(b * n_ptr * hd, 26);
            let scale = (hd as f32).powf(-0.5);
            let exact = unfolded(&keys, &q, bq, &u, &vals, &kptr, b, frames, n_ptr, scale);
            let run = |portable| {
                rope_cross_impl(
                    &keys, &q, bq, &u, &vals, &kptr, b, frames, n_ptr, scale, portable, true, None,
                )
            };
            let (fast, reference) = (run(false), run(true));
            let vmax = vals.iter().fold(0f32, |m, v| m.max(v.abs()));
            let bound = vmax * 2f32.powi(-9) + 2e-5;
            let to_exact = max_abs_diff(&reference, &exact);
            let name = format!("side {side} kv {kv} frames {frames} b {b}/{bq}");
            eprintln!("{name}: bf16 weights vs f32 {to_exact:.2e} (bound {bound:.2e})");
            assert!(to_exact <= bound, "{name}: {to_exact} > {bound}");
            if side % 2 == 0 {
                // the weights really are rounded (an exact result would mean f32 products)
                assert!(to_exact > 1e-6, "{name}: {to_exact}");
            } else {
                assert!(
                    to_exact < 2e-5,
                    "{name}: odd side, f32 products: {to_exact}"
                );
            }
            // the fast kernel rounds the same weights where it takes them (not under AMX,
            // whose tiles keep the f32 weights as two bf16 halves)
            let amx = fast_kernels() && crate::kernels::amx::available() && side % 32 == 0;
            let fast_err = max_abs_diff(
                &fast,
                if bf16_kernels() && !amx {
                    &reference
                } else {
                    &exact
                },
            );
            assert!(fast_err < 2e-5, "{name}: fast kernel {fast_err}");
        }
    }

    /// Timing on SAM 2's shapes (4096 queries, 256 channels, 64-wide memories), folded vs
    /// rotate + `attention_shared_values`:
    /// `RAYON_NUM_THREADS=2 cargo test --release -p fastsam2-models rope_cross_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn rope_cross_speed() {
        let (side, hd, kv, n_ptr) = (64, 256, 64, 16);
        let l = side * side;
        let fixture = KeysFixture::new(side, hd, kv, 0.1, 1);
        let keys = fixture.keys();
        for frames in [1, 2, 3, 4, 7] {
            let lk = frames * l + n_ptr;
            let q = rand(l * hd, 3);
            let u = rand(lk * kv, 4);
            // bf16 values, as the stored memories are (the AMX value products need them)
            let vals: Vec<f32> = rand(lk * kv, 5)
                .iter()
                .map(|v| f32::from_bits(v.to_bits() & 0xffff_0000))
                .collect();
            let kptr = rand(n_ptr * hd, 6);
            let k = rand(lk * hd, 7);
            // best of 5 (the machine is shared and noisy)
            let time = |f: &dyn Fn()| {
                f();
                (0..5)
                    .map(|_| {
                        let t = std::time::Instant::now();
                        f();
                        t.elapsed().as_secs_f64() * 1e3
                    })
                    .fold(f64::INFINITY, f64::min)
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

    /// Single-thread timing of the row steps of one 32-query block (G tables given), 64 x 64
    /// grid, 64-wide bf16 memories, for one object and for two objects sharing the queries
    /// (one merged row step), with f32 probabilities and, where the CPU has AVX-512 BF16,
    /// bf16 ones:
    /// `cargo test --release -p fastsam2-models row_step_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn row_step_speed() {
        if !fast_kernels() {
            return;
        }
        let (s, kv) = (64usize, 64usize);
        let l = s * s;
        let modes: &[bool] = if bf16_kernels() {
            &[false, true]
        } else {
            &[false]
        };
        for &pairs in modes {
            for objects in [1usize, 2] {
                for frames in [1usize, 2, 3, 4, 7] {
                    let gx = rand(s * (kv + 1) * GT, 1);
                    let gy = rand(s * (kv + 1) * GT, 2);
                    let us: Vec<Vec<f32>> = (0..objects)
                        .map(|k| rand(frames * l * kv, 3 + 2 * k as u64))
                        .collect();
                    let vs: Vec<Vec<f32>> = (0..objects)
                        .map(|k| {
                            rand(frames * l * kv, 4 + 2 * k as u64)
                                .iter()
                                .map(|&v| bf16_round(v))
                                .collect()
                        })
                        .collect();
                    let vps: Vec<Option<Vec<u32>>> = vs
                        .iter()
                        .map(|v| pairs.then(|| pack_value_pairs(v, frames * l, kv)).flatten())
                        .collect();
                    let mem: Vec<ObjectMemory<'_>> = us
                        .iter()
                        .zip(&vs)
                        .zip(&vps)
                        .map(|((u, v), vp)| ObjectMemory {
                            u,
                            vals: v,
                            vt: None,
                            vp: vp.as_deref(),
                        })
                        .collect();
                    let rows = rows_per_step(objects * frames);
                    let mut st = vec![0f32; objects * frames * rows * s * QB];
                    let mut o = vec![0f32; objects * kv * QB];
                    let mut states: Vec<Softmax> = (0..objects).map(|_| Softmax::empty()).collect();
                    let mut best = f64::INFINITY;
                    for _ in 0..6 {
                        let t = std::time::Instant::now();
                        row_steps(
                            false,
                            &gx,
                            &gy,
                            &mem,
                            s,
                            kv,
                            frames,
                            &mut st,
                            &mut states,
                            &mut o,
                        );
                        best = best.min(t.elapsed().as_secs_f64());
                    }
                    let flop = (2 * 2 * QB * objects * frames * l * kv) as f64;
                    println!(
                        "{} probabilities, objects {objects}, frames {frames}: {:.3} ms per 32-query block, {:.1} GFLOP/s (1 thread)",
                        if pairs { "bf16" } else { "f32" },
                        best * 1e3,
                        flop / best / 1e9
                    );
                    std::hint::black_box(&o);
                }
            }
        }
    }
}
