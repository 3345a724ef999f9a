//! f32 GEMM on Intel AMX tiles, with f32-level accuracy from three bf16 products.
//!
//! AMX's `tdpbf16ps` multiplies a 16 x 32 bf16 tile by a 32 x 16 one into 16 x 16 f32 sums
//! (8,192 multiply-adds per instruction, ~16x the rate of AVX-512 FMAs). A bf16 keeps 8 bits of
//! an f32's 24, so every f32 operand is split as `x = hi + lo + r` (`hi = bf16(x)`,
//! `lo = bf16(x - hi)`, `|r| <= 2^-17 |x|`) and the product is formed as
//! `a_hi b_hi + a_hi b_lo + a_lo b_hi` (the dropped `a_lo b_lo` and residual terms are
//! ~2^-16 of each product): "bf16x3", a relative error per product of ~1e-5 instead of f32's
//! 6e-8, at a third of the tile rate. The three products are one bf16 GEMM over a tripled
//! inner dimension: `A' = [A_hi | A_hi | A_lo]`, `B' = [B_hi; B_lo; B_hi]`.
//!
//! Used only where [`available`] (an x86-64 CPU with AMX-TILE and AMX-BF16, Linux granting the
//! tile state through `arch_prctl`); `FASTSAM2_NO_AMX=1` turns it off. Callers keep their f32
//! path for every other machine.

use rayon::prelude::*;

/// Rows of C per kernel call (two tiles) and columns (two tiles).
const MB: usize = 32;
const NB: usize = 32;
/// Inner-dimension granularity: one bf16 tile row holds 32 values.
const KB: usize = 32;
/// Rows of A per parallel task (packed once, reused by every column block).
const MP: usize = 128;

/// Whether the AMX kernels can run here (checked once; see the module docs).
pub fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| std::env::var_os("FASTSAM2_NO_AMX").is_none() && detect())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    let (max, l1, l7) = (
        __cpuid_count(0, 0).eax,
        __cpuid_count(1, 0),
        __cpuid_count(7, 0),
    );
    let amx = max >= 7 && l7.edx & (1 << 24) != 0 && l7.edx & (1 << 22) != 0;
    let osxsave = l1.ecx & (1 << 27) != 0;
    if !(amx && osxsave) {
        return false;
    }
    // ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA: Linux enables the 8 KB tile state per
    // process only on request.
    // SAFETY: a plain syscall with integer arguments.
    if unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1023, 18) } != 0 {
        return false;
    }
    let (lo, _hi): (u32, u32);
    // SAFETY: `xgetbv` with ecx = 0 reads XCR0; OSXSAVE is set (checked above).
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") _hi, options(nomem, nostack));
    }
    // XTILECFG and XTILEDATA enabled by the OS
    lo & (0b11 << 17) == (0b11 << 17)
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// Round an f32 to the nearest bf16 (ties to even).
#[inline(always)]
fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// `(hi, lo)` with `hi + lo` the f32 to ~2^-17 of its size.
#[inline(always)]
fn split(x: f32) -> (u16, u16) {
    let h = bf16(x);
    let hf = f32::from_bits((h as u32) << 16);
    (h, bf16(x - hf))
}

/// A zeroed buffer of `u16` / `f32` on 64-byte boundaries: a tile row (64 bytes) that
/// straddles two cache lines costs two line reads, and `Vec<u16>` is only 2-byte aligned
/// (measured: the tile loops ran ~1.5x slower on such buffers).
pub(crate) struct Aligned<T> {
    lines: Vec<Line>,
    len: usize,
    _t: std::marker::PhantomData<T>,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

impl<T: Copy> Aligned<T> {
    pub(crate) const fn new() -> Self {
        Self {
            lines: Vec::new(),
            len: 0,
            _t: std::marker::PhantomData,
        }
    }

    /// `len` values for a caller that overwrites every one of them before reading: the old
    /// contents are kept when the length is unchanged (no zeroing), else `len` zeros.
    pub(crate) fn reuse(&mut self, len: usize) {
        if self.len != len {
            self.zeroed(len);
        }
    }

    /// `len` zeros (reusing the allocation).
    pub(crate) fn zeroed(&mut self, len: usize) {
        let n = (len * std::mem::size_of::<T>()).div_ceil(64);
        self.lines.clear();
        self.lines.resize(n, Line([0; 64]));
        self.len = len;
    }
}

impl<T: Copy> std::ops::Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the lines hold at least `len` values of T (u16 / f32: every bit pattern,
        // zero included, is valid; the alignment of 64 covers theirs).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const T, self.len) }
    }
}

impl<T: Copy> std::ops::DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut T, self.len) }
    }
}

/// The right-hand operand of [`gemm`], split and laid out for the tiles once (weights are
/// packed once per model; attention keys / values once per head).
pub struct PackedB {
    k: usize,
    n: usize,
    /// The padded inner dimension of one of the three segments.
    kp: usize,
    /// Column blocks of `NB`: block `jb` holds `[3 kp / 2][NB][2]` bf16 (pairs of rows
    /// interleaved, as `tdpbf16ps` reads them).
    data: Aligned<u16>,
}

impl PackedB {
    /// `B [k, n]` given element-wise (`get(kk, j)`): row-major, transposed, or strided.
    pub fn new(k: usize, n: usize, get: impl Fn(usize, usize) -> f32 + Sync) -> Self {
        Self::build(k, n, get, true)
    }

    /// [`Self::new`] on the calling thread only (small operands inside a parallel task).
    pub fn new_serial(k: usize, n: usize, get: impl Fn(usize, usize) -> f32 + Sync) -> Self {
        Self::build(k, n, get, false)
    }

    fn build(k: usize, n: usize, get: impl Fn(usize, usize) -> f32 + Sync, par: bool) -> Self {
        let kp = k.div_ceil(KB) * KB;
        let blocks = n.div_ceil(NB);
        let per = 3 * kp * NB; // u16 per column block
        let mut data = Aligned::new();
        data.zeroed(blocks * per);
        let fill = |(jb, blk): (usize, &mut [u16])| {
            for c in 0..NB.min(n - jb * NB) {
                let j = jb * NB + c;
                for kk in 0..k {
                    let (h, l) = split(get(kk, j));
                    // segment s, row kk: pair row (s kp + kk) / 2, lane (kk & 1)
                    for (s, v) in [(0, h), (1, l), (2, h)] {
                        let r = s * kp + kk;
                        blk[(r / 2) * 2 * NB + c * 2 + (r & 1)] = v;
                    }
                }
            }
        };
        if par {
            data.par_chunks_mut(per).enumerate().for_each(fill);
        } else {
            data.chunks_mut(per).enumerate().for_each(fill);
        }
        Self { k, n, kp, data }
    }

    /// [`Self::new`] of `B = X` for `X` row-major `[k, n]` with row stride `ld` (attention
    /// values), on the calling thread, with AVX-512 (two rows of 16 columns per step instead
    /// of one closure call per element: ~4x faster on attention's 1024 x 256 chunks).
    ///
    /// Panics unless [`available`].
    pub(crate) fn rows_fast(x: &[f32], k: usize, n: usize, ld: usize) -> Self {
        let mut p = Self::empty(k, n);
        p.refill_rows(x, k, n, ld);
        p
    }

    /// [`Self::rows_fast`] into this packing's buffer where it has the same shape (every
    /// entry that the packing writes is rewritten and the padding stays zero, so nothing is
    /// re-zeroed: for small operands packed once per task).
    pub(crate) fn refill_rows(&mut self, x: &[f32], k: usize, n: usize, ld: usize) {
        assert!(
            available() && ld >= n && (k == 0 || x.len() >= (k - 1) * ld + n),
            "packed b: buffer size"
        );
        if (self.k, self.n) != (k, n) {
            *self = Self::empty(k, n);
        }
        // SAFETY: AMX CPUs have AVX-512F/BW; sizes asserted above and inside.
        unsafe { v512::pack_b_rows(x, ld, k, n, self.kp, &mut self.data) };
    }

    /// [`Self::new`] of `B = X^T` for `X` row-major `[n, k]` with row stride `ld` (attention
    /// keys), on the calling thread, with AVX-512 (16 channels of a row per step).
    ///
    /// Panics unless [`available`].
    pub(crate) fn transposed_fast(x: &[f32], k: usize, n: usize, ld: usize) -> Self {
        assert!(
            available() && ld >= k && (n == 0 || x.len() >= (n - 1) * ld + k),
            "packed b: buffer size"
        );
        let mut p = Self::empty(k, n);
        // SAFETY: AMX CPUs have AVX-512F/BW; sizes asserted above and inside.
        unsafe { v512::pack_b_transposed(x, ld, k, n, p.kp, &mut p.data) };
        p
    }

    /// All zeros, of the packed size of `B [k, n]`.
    pub(crate) fn empty(k: usize, n: usize) -> Self {
        let kp = k.div_ceil(KB) * KB;
        let mut data = Aligned::new();
        data.zeroed(n.div_ceil(NB) * 3 * kp * NB);
        Self { k, n, kp, data }
    }

    /// `B` row-major `[k, n]` with row stride `ld`.
    pub fn row_major(b: &[f32], k: usize, n: usize, ld: usize) -> Self {
        assert!(
            k == 0 || b.len() >= (k - 1) * ld + n,
            "packed b: buffer size"
        );
        Self::new(k, n, |kk, j| b[kk * ld + j])
    }

    /// `B = X^T` for `X` row-major `[n, k]` with row stride `ld` (attention keys).
    pub fn transposed(x: &[f32], k: usize, n: usize, ld: usize) -> Self {
        assert!(
            n == 0 || x.len() >= (n - 1) * ld + k,
            "packed b: buffer size"
        );
        Self::new(k, n, |kk, j| x[j * ld + kk])
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }
}

/// A 64-byte tile configuration: palette 1, eight tiles of 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const CONFIG: TileConfig = {
    let mut b = [0u8; 64];
    b[0] = 1;
    let mut t = 0;
    while t < 8 {
        b[16 + 2 * t] = 64;
        b[48 + t] = 16;
        t += 1;
    }
    TileConfig(b)
};

/// One 32 x 32 block of C (f32 rows `ldc` bytes apart), `+=` (`load`) or `=` the product of
/// `A [32, steps * 32]` (tiled: see [`tile_offset`]; `a` at the first of its two row tiles)
/// and a column block of packed B
/// (`steps` groups of 16 pair rows).
///
/// # Safety
/// AMX is [`available`] and configured with [`CONFIG`] on this thread; the pointers cover
/// what is read and written.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block(a: *const u16, b: *const u16, steps: usize, c: *mut f32, ldc: usize, load: bool) {
    // SAFETY: the caller's contract; tmm0-7 are not used by compiled code.
    unsafe {
        let c2 = c.byte_add(16 * ldc);
        if load {
            std::arch::asm!(
                "tileloadd tmm0, [{o} + {ldo}*1]",
                "tileloadd tmm1, [{o} + {ldo}*1 + 64]",
                "tileloadd tmm2, [{o2} + {ldo}*1]",
                "tileloadd tmm3, [{o2} + {ldo}*1 + 64]",
                o = in(reg) c,
                o2 = in(reg) c2,
                ldo = in(reg) ldc,
                options(nostack, readonly),
            );
        } else {
            std::arch::asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem),
            );
        }
        // software-pipelined: tiles are not renamed, so each operand tile is reloaded for the
        // next step as soon as its last product of this step has been issued
        std::arch::asm!(
            "tileloadd tmm4, [{a} + {lda}*1]",
            "tileloadd tmm6, [{b} + {ldb}*1]",
            "tileloadd tmm5, [{a2} + {lda}*1]",
            "tileloadd tmm7, [{b} + {ldb}*1 + 64]",
            "dec {n}",
            "jz 3f",
            "2:",
            "add {a}, 1024",
            "add {a2}, 1024",
            "add {b}, 2048",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tileloadd tmm6, [{b} + {ldb}*1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm4, [{a} + {lda}*1]",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "tileloadd tmm5, [{a2} + {lda}*1]",
            "tileloadd tmm7, [{b} + {ldb}*1 + 64]",
            "dec {n}",
            "jnz 2b",
            "3:",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "tilestored [{o} + {ldo}*1], tmm0",
            "tilestored [{o} + {ldo}*1 + 64], tmm1",
            "tilestored [{o2} + {ldo}*1], tmm2",
            "tilestored [{o2} + {ldo}*1 + 64], tmm3",
            a = inout(reg) a => _,
            a2 = inout(reg) a.add(steps * 512) => _,
            lda = in(reg) 64usize,
            b = inout(reg) b => _,
            ldb = in(reg) 2 * NB * 2,
            n = inout(reg) steps => _,
            o = in(reg) c,
            o2 = in(reg) c2,
            ldo = in(reg) ldc,
            options(nostack),
        );
    }
}

/// Where entry `(i, kk)` of a packed A with `steps` tile columns lives: A is stored as
/// 16 x 32 tiles (1 KB, contiguous: tile loads then read whole cache lines in sequence),
/// those of a 16-row band one after the other.
#[inline(always)]
fn tile_offset(i: usize, kk: usize, steps: usize) -> usize {
    ((i / 16) * steps + kk / KB) * 512 + (i % 16) * KB + kk % KB
}

/// Split `alpha src` into row `i` of a tiled packed A: three segments (`hi | hi | lo`, each
/// `kp` long, zero past `src`).
fn split_row(src: &[f32], alpha: f32, panel: &mut [u16], i: usize, kp: usize) {
    // SAFETY: AMX CPUs have AVX-512F/BW (callers run only where `available`).
    unsafe { v512::pack_row(src, alpha, None, panel, i, kp) };
}

/// `C = alpha A B` (+ the old `C` when `accumulate`; `alpha` scales A before the split): `A` row-major `[m, k]` with row stride
/// `lda`, `C` row-major `[m, n]` with row stride `ldc`. Parallel over blocks of rows.
///
/// Panics unless [`available`] (callers check first).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    alpha: f32,
    accumulate: bool,
) {
    let (k, n) = (b.k, b.n);
    assert!(available(), "amx::gemm without AMX");
    assert!(
        (m == 0 || (a.len() >= (m - 1) * lda + k && c.len() >= (m - 1) * ldc + n))
            && lda >= k
            && ldc >= n,
        "amx::gemm: buffer sizes"
    );
    if m == 0 || n == 0 {
        return;
    }
    let tasks = m.div_ceil(MP);
    let cp = super::attention::SendPtr(c.as_mut_ptr());
    (0..tasks).into_par_iter().for_each(|t| {
        let r0 = t * MP;
        let rows = MP.min(m - r0);
        // SAFETY: rows r0..r0 + rows of C belong to this task only.
        let c_rows =
            unsafe { std::slice::from_raw_parts_mut(cp.get().add(r0 * ldc), (rows - 1) * ldc + n) };
        panel(&a[r0 * lda..], lda, rows, b, c_rows, ldc, alpha, accumulate);
    });
}

/// [`gemm`] on the calling thread only (inside a caller's own parallel task).
#[allow(clippy::too_many_arguments)]
pub fn gemm_serial(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    alpha: f32,
    accumulate: bool,
) {
    let (k, n) = (b.k, b.n);
    assert!(available(), "amx::gemm_serial without AMX");
    assert!(
        (m == 0 || (a.len() >= (m - 1) * lda + k && c.len() >= (m - 1) * ldc + n))
            && lda >= k
            && ldc >= n,
        "amx::gemm_serial: buffer sizes"
    );
    if n == 0 {
        return;
    }
    for r0 in (0..m).step_by(MP) {
        let rows = MP.min(m - r0);
        let end = (r0 + rows - 1) * ldc + n;
        panel(
            &a[r0 * lda..],
            lda,
            rows,
            b,
            &mut c[r0 * ldc..end],
            ldc,
            alpha,
            accumulate,
        );
    }
}

/// [`PackedB::row_major`] of a weight matrix, cached by its contents: a model's weights are
/// packed once, and every later frame finds them (a 128-bit hash of the values and the
/// shape; the cache holds the packings of the last few hundred matrices).
pub fn packed_weights(w: &[f32], k: usize, n: usize) -> std::sync::Arc<PackedB> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Packings = HashMap<(u64, u64, usize, usize), Arc<PackedB>>;
    static CACHE: OnceLock<Mutex<Packings>> = OnceLock::new();
    assert_eq!(w.len(), k * n, "packed weights: buffer size");
    let (h1, h2) = content_hash(w);
    let key = (h1, h2, k, n);
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(p) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return p.clone();
    }
    let packed = Arc::new(PackedB::row_major(w, k, n, n));
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if c.len() >= 512 {
        c.clear();
    }
    c.insert(key, packed.clone());
    packed
}

/// A 128-bit hash of `w`'s bits (two multiply-xor lanes, order-sensitive). Each chunk runs 8
/// independent accumulators per lane: one chain per lane made the hash latency-bound at
/// ~5 cycles per value (~2.6 ms per call for a 256 x 2048 + 2048 x 256 MLP, of a ~22 ms call).
pub(crate) fn content_hash(w: &[f32]) -> (u64, u64) {
    const M1: u64 = 0x0000_0100_0000_01b3;
    const M2: u64 = 0xff51_afd7_ed55_8ccd | 1;
    let chunk = |c: &[f32]| {
        let (mut a, mut b) = ([0u64; 8], [0u64; 8]);
        for j in 0..8 {
            a[j] = 0xcbf2_9ce4_8422_2325 ^ j as u64;
            b[j] = 0x9e37_79b9_7f4a_7c15 ^ j as u64;
        }
        let mut it = c.chunks_exact(8);
        for v in &mut it {
            for j in 0..8 {
                let x = v[j].to_bits() as u64;
                a[j] = (a[j] ^ x).wrapping_mul(M1).rotate_left(29);
                b[j] = (b[j] ^ x).wrapping_mul(M2).rotate_left(29);
            }
        }
        for (j, v) in it.remainder().iter().enumerate() {
            let x = v.to_bits() as u64;
            a[j] = (a[j] ^ x).wrapping_mul(M1).rotate_left(29);
            b[j] = (b[j] ^ x).wrapping_mul(M2).rotate_left(29);
        }
        let fold = |h: [u64; 8], m: u64| {
            h.iter().fold(c.len() as u64, |s, &x| {
                (s ^ x).wrapping_mul(m).rotate_left(31)
            })
        };
        (fold(a, M1), fold(b, M2))
    };
    let parts: Vec<(u64, u64)> = if w.len() >= 1 << 17 {
        w.par_chunks(1 << 16).map(chunk).collect()
    } else {
        w.chunks(1 << 16).map(chunk).collect()
    };
    parts
        .into_iter()
        .fold((w.len() as u64, !(w.len() as u64)), |(x, y), (a, b)| {
            (
                (x ^ a).wrapping_mul(M1).rotate_left(31),
                (y ^ b).wrapping_mul(M2).rotate_left(31),
            )
        })
}

thread_local! {
    /// A task's packed rows of A (reused: a task packs up to `MP x 3 kp` bf16).
    static PANEL: std::cell::RefCell<Aligned<u16>> = const { std::cell::RefCell::new(Aligned::new()) };
}

/// `rows <= MP` rows of [`gemm`].
#[allow(clippy::too_many_arguments)]
fn panel(
    a: &[f32],
    lda: usize,
    rows: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    alpha: f32,
    accumulate: bool,
) {
    let (k, n, kp) = (b.k, b.n, b.kp);
    let kw = 3 * kp; // packed row length
    let rp = rows.div_ceil(MB) * MB;
    PANEL.with(|cell| {
        let mut ap = cell.borrow_mut();
        if ap.len() != rp * kw {
            ap.zeroed(rp * kw);
        }
        for i in 0..rows {
            split_row(&a[i * lda..i * lda + k], alpha, &mut ap, i, kp);
        }
        // rows past `rows` of the last band pair: zero (rows before are written in full)
        let steps = kw / KB;
        for i in rows..rp {
            for kk in (0..kw).step_by(KB) {
                let o = tile_offset(i, kk, steps);
                ap[o..o + KB].fill(0);
            }
        }
        let mut local = [0f32; MB * NB];
        let per = 3 * kp * NB;
        // SAFETY: AMX is available (asserted by `gemm`); the configuration is per thread.
        unsafe { std::arch::asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack)) };
        for jb in 0..n.div_ceil(NB) {
            let bb = &b.data[jb * per..(jb + 1) * per];
            let nc = NB.min(n - jb * NB);
            for ib in 0..rp / MB {
                let nr = rows.saturating_sub(ib * MB).min(MB);
                let ap = ap[ib * MB * kw..].as_ptr(); // two 16-row bands of kw / KB tiles
                let c0 = ib * MB * ldc + jb * NB;
                if nr == MB && nc == NB {
                    // SAFETY: a full 32 x 32 block of C inside `c`; A rows of the padded
                    // panel (kw bf16 each) and the column block's 3 kp / 2 pair rows.
                    unsafe {
                        block(
                            ap,
                            bb.as_ptr(),
                            kw / KB,
                            c[c0..].as_mut_ptr(),
                            ldc * 4,
                            accumulate,
                        )
                    };
                    continue;
                }
                // an edge block through a local 32 x 32 buffer
                for r in 0..nr {
                    let src = &c[c0 + r * ldc..][..nc];
                    let dst = &mut local[r * NB..r * NB + nc];
                    if accumulate {
                        dst.copy_from_slice(src);
                    }
                }
                // SAFETY: as above, into the local buffer (rows 128 bytes apart).
                unsafe {
                    block(
                        ap,
                        bb.as_ptr(),
                        kw / KB,
                        local.as_mut_ptr(),
                        NB * 4,
                        accumulate,
                    )
                };
                for r in 0..nr {
                    c[c0 + r * ldc..][..nc].copy_from_slice(&local[r * NB..r * NB + nc]);
                }
            }
        }
    });
}

/// Load [`CONFIG`] into this thread's tile configuration.
///
/// # Safety
/// AMX is [`available`].
#[inline(always)]
unsafe fn configure() {
    // SAFETY: the caller's contract.
    unsafe { std::arch::asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack)) };
}

/// `c (+)= A B` over whole blocks: `a` holds `rows_p` (a multiple of `MB`) packed rows of
/// `3 b.kp` bf16; `c` is row-major f32 with row stride `ldc >= b.n` rounded up to `NB`.
///
/// # Safety
/// AMX is available and configured on this thread; `c` covers `rows_p` rows of `ldc`.
unsafe fn gemm_blocks(
    a: &[u16],
    rows_p: usize,
    b: &PackedB,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let kw = 3 * b.kp;
    let per = kw * NB;
    assert!(
        rows_p.is_multiple_of(MB) && a.len() >= rows_p * kw && ldc >= b.n.div_ceil(NB) * NB,
        "amx::gemm_blocks: sizes"
    );
    for jb in 0..b.n.div_ceil(NB) {
        let bb = b.data[jb * per..(jb + 1) * per].as_ptr();
        for ib in 0..rows_p / MB {
            // SAFETY: the caller's contract and the sizes asserted above.
            unsafe {
                block(
                    a[ib * MB * kw..].as_ptr(),
                    bb,
                    kw / KB,
                    c.add(ib * MB * ldc + jb * NB),
                    ldc * 4,
                    accumulate,
                )
            };
        }
    }
}

/// A constant left operand of [`gemm_a`], split and tiled once (`A [m, k]` row-major; rows
/// padded to whole 32-row blocks with zeros, the inner dimension to whole tiles).
pub struct PackedA {
    m: usize,
    k: usize,
    kp: usize,
    data: Aligned<u16>,
}

impl PackedA {
    /// `A [m, k]` with row stride `lda`. `None` unless AMX is [`available`].
    pub fn new(a: &[f32], m: usize, k: usize, lda: usize) -> Option<Self> {
        if !available() {
            return None;
        }
        assert!(
            lda >= k && (m == 0 || a.len() >= (m - 1) * lda + k),
            "packed a: buffer size"
        );
        let kp = k.div_ceil(KB) * KB;
        let rp = m.div_ceil(MB) * MB;
        let mut data = Aligned::new();
        data.zeroed(rp * 3 * kp);
        for i in 0..m {
            split_row(&a[i * lda..i * lda + k], 1.0, &mut data, i, kp);
        }
        Some(Self { m, k, kp, data })
    }

    /// Rows including the zero padding (a multiple of 32).
    pub fn padded_rows(&self) -> usize {
        self.m.div_ceil(MB) * MB
    }
}

/// `C = A B` for a pre-packed `A` ([`PackedA`]): `c` row-major with row stride `ldc`, at least
/// [`PackedA::padded_rows`] rows (the padding rows come out zero) and `ldc >= n` rounded up to
/// 32 (columns past `n` come out zero too). On the calling thread.
pub fn gemm_a(a: &PackedA, b: &PackedB, c: &mut [f32], ldc: usize) {
    assert!(
        a.k == b.k
            && a.kp == b.kp
            && ldc >= b.n.div_ceil(NB) * NB
            && c.len() >= a.padded_rows() * ldc,
        "amx::gemm_a: sizes"
    );
    if b.n == 0 || a.m == 0 {
        return;
    }
    // SAFETY: AMX is available (a PackedA exists only then); the sizes are asserted here and
    // in `gemm_blocks`.
    unsafe {
        configure();
        gemm_blocks(&a.data, a.padded_rows(), b, c.as_mut_ptr(), ldc, false)
    }
}

/// AVX-512 helpers of the packing passes (every AMX CPU has AVX-512F/BW).
mod v512 {
    use std::arch::x86_64::*;

    /// `(hi, lo)` bf16 halves of 16 floats, as 16-bit lanes.
    #[inline(always)]
    pub(super) unsafe fn split16(x: __m512) -> (__m256i, __m256i) {
        // SAFETY: register-only AVX-512F arithmetic (the caller's contract: AVX-512F).
        unsafe {
            let (h, l) = halves32(x);
            (_mm512_cvtepi32_epi16(h), _mm512_cvtepi32_epi16(l))
        }
    }

    /// e^x on 16 lanes (the Cephes polynomial of `simd::exp`, clamped to [-87, 88]).
    #[inline(always)]
    pub(super) unsafe fn exp16(x: __m512) -> __m512 {
        // SAFETY: register-only AVX-512F arithmetic.
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

    /// Mask of the first `n <= 16` lanes.
    #[inline(always)]
    pub(super) fn lanes(n: usize) -> u16 {
        ((1u32 << n) - 1) as u16
    }

    /// Store `alpha src` as packed row segments `hi | hi | lo` (`kp` apart); zero the
    /// segments' padding past `src`. With `exp_of = Some(m)`, store `e^(src - m)` instead and
    /// return its sum.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn pack_row(
        src: &[f32],
        alpha: f32,
        exp_of: Option<f32>,
        panel: &mut [u16],
        row: usize,
        kp: usize,
    ) -> f32 {
        let k = src.len();
        let steps = 3 * kp / super::KB;
        assert!(
            k <= kp && kp.is_multiple_of(super::KB) && panel.len() >= (row / 16 + 1) * steps * 512,
            "pack_row: sizes"
        );
        let at = |kk: usize| super::tile_offset(row, kk, steps);
        let d = panel.as_mut_ptr();
        let mut sum = _mm512_setzero_ps();
        let a = _mm512_set1_ps(alpha);
        let m = _mm512_set1_ps(exp_of.unwrap_or(0.0));
        let mut i = 0;
        while i < kp {
            let n = (k.saturating_sub(i)).min(16);
            let mask = lanes(n);
            // SAFETY: lanes i..i + n of src (masked load); 16 u16 at i of each segment
            // (kp is a multiple of 32).
            unsafe {
                let x = _mm512_maskz_loadu_ps(mask, src.as_ptr().add(i));
                let x = match exp_of {
                    Some(_) => _mm512_maskz_mov_ps(mask, exp16(_mm512_sub_ps(x, m))),
                    None => _mm512_mul_ps(x, a),
                };
                sum = _mm512_add_ps(sum, x);
                let (h, l) = split16(x);
                // 16 lanes never straddle a tile row (kp and i are multiples of 16)
                _mm256_storeu_si256(d.add(at(i)) as *mut __m256i, h);
                _mm256_storeu_si256(d.add(at(kp + i)) as *mut __m256i, h);
                _mm256_storeu_si256(d.add(at(2 * kp + i)) as *mut __m256i, l);
            }
            i += 16;
        }
        _mm512_reduce_add_ps(sum)
    }

    /// The bf16 halves of 16 floats as 32-bit lanes (value in the low 16 bits).
    #[inline(always)]
    unsafe fn halves32(x: __m512) -> (__m512i, __m512i) {
        // SAFETY: register-only AVX-512F arithmetic (the caller's contract: AVX-512F).
        unsafe {
            let round = |v: __m512i| {
                let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(v), _mm512_set1_epi32(1));
                _mm512_srli_epi32::<16>(_mm512_add_epi32(
                    v,
                    _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff)),
                ))
            };
            let h = round(_mm512_castps_si512(x));
            let r = _mm512_sub_ps(x, _mm512_castsi512_ps(_mm512_slli_epi32::<16>(h)));
            (h, round(_mm512_castps_si512(r)))
        }
    }

    /// `PackedB` data of `B = X` (`X [k, n]`, row stride `ld`): per column block of
    /// `NB` = 32, pair rows `(2p, 2p + 1)` of each segment (`hi`, `lo`, `hi`, `kp` rows
    /// apart) as `[NB][2]` bf16; `data` zeroed, of the packed size.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn pack_b_rows(
        x: &[f32],
        ld: usize,
        k: usize,
        n: usize,
        kp: usize,
        data: &mut [u16],
    ) {
        let per = 3 * kp * super::NB;
        assert!(
            super::NB == 32
                && kp.is_multiple_of(2)
                && kp >= k
                && data.len() >= n.div_ceil(32) * per
                && (k == 0 || x.len() >= (k - 1) * ld + n),
            "pack_b_rows: sizes"
        );
        let d = data.as_mut_ptr();
        for jb in 0..n.div_ceil(32) {
            for q in [0, 16] {
                let j = jb * 32 + q;
                if j >= n {
                    break;
                }
                let mask = lanes((n - j).min(16));
                for kk in (0..k).step_by(2) {
                    // SAFETY: masked loads of columns j..j + 16 (< n) of rows kk, kk + 1 (< k);
                    // 16 u32 stores at pair row (s kp + kk) / 2, lanes q.., of block jb.
                    unsafe {
                        let x0 = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(kk * ld + j));
                        let x1 = if kk + 1 < k {
                            _mm512_maskz_loadu_ps(mask, x.as_ptr().add((kk + 1) * ld + j))
                        } else {
                            _mm512_setzero_ps()
                        };
                        let (h0, l0) = halves32(x0);
                        let (h1, l1) = halves32(x1);
                        let hp = _mm512_or_si512(h0, _mm512_slli_epi32::<16>(h1));
                        let lp = _mm512_or_si512(l0, _mm512_slli_epi32::<16>(l1));
                        for (seg, v) in [(0, hp), (1, lp), (2, hp)] {
                            let r = seg * kp + kk;
                            let at = jb * per + (r / 2) * 64 + 2 * q;
                            _mm512_storeu_si512(d.add(at) as *mut __m512i, v);
                        }
                    }
                }
            }
        }
    }

    /// `PackedB` data of `B = X^T` (`X [n, k]`, row stride `ld`); as [`pack_b_rows`]: the
    /// pairs `(2p, 2p + 1)` of B's column `j` are adjacent channels of row `j` of `X`, so 16
    /// channels give 8 pairs, scattered to their 8 pair rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn pack_b_transposed(
        x: &[f32],
        ld: usize,
        k: usize,
        n: usize,
        kp: usize,
        data: &mut [u16],
    ) {
        let per = 3 * kp * super::NB;
        assert!(
            super::NB == 32
                && kp.is_multiple_of(16)
                && kp >= k
                && data.len() >= n.div_ceil(32) * per
                && (n == 0 || x.len() >= (n - 1) * ld + k),
            "pack_b_transposed: sizes"
        );
        let d = data.as_mut_ptr() as *mut i32;
        // pair row p of a step is 32 u32 (one per column) after pair row p - 1
        let idx = _mm256_setr_epi32(0, 32, 64, 96, 128, 160, 192, 224);
        for j in 0..n {
            let (jb, c) = (j / 32, j % 32);
            let row = &x[j * ld..j * ld + k];
            for kk0 in (0..k).step_by(16) {
                let mask = lanes((k - kk0).min(16));
                // SAFETY: a masked load of channels kk0.. (< k) of row j; 8 u32 scattered to
                // pair rows (s kp + kk0) / 2 + 0..8 (inside the segment: kk0 + 16 <= kp) at
                // column c of block jb.
                unsafe {
                    let v = _mm512_maskz_loadu_ps(mask, row.as_ptr().add(kk0));
                    let (h, l) = halves32(v);
                    let (h, l) = (_mm512_cvtepi32_epi16(h), _mm512_cvtepi32_epi16(l));
                    for (seg, w) in [(0, h), (1, l), (2, h)] {
                        let r = seg * kp + kk0;
                        // u32 index of (pair row r / 2, column c) in the block
                        let base = d.add((jb * per) / 2 + (r / 2) * 32 + c);
                        _mm256_i32scatter_epi32::<4>(base, idx, w);
                    }
                }
            }
        }
    }

    /// Rows of 32 probability lanes (`st [n][32]`) as bf16 pairs of consecutive rows,
    /// `[n / 2][32 lanes][2]`, split into `hi` and `lo`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn pair_probs(st: &[f32], hi: &mut [u16], lo: &mut [u16]) {
        let n = st.len() / 32;
        assert!(
            n.is_multiple_of(2) && hi.len() >= n * 32 && lo.len() >= n * 32,
            "pair_probs: sizes"
        );
        let (s, h, l) = (st.as_ptr(), hi.as_mut_ptr(), lo.as_mut_ptr());
        for j in 0..n / 2 {
            for q in [0, 16] {
                // SAFETY: rows 2j, 2j + 1 (lanes q..q + 16) of st; 16 u32 pairs at row j of
                // hi / lo (asserted sizes).
                unsafe {
                    let (h0, l0) = halves32(_mm512_loadu_ps(s.add(2 * j * 32 + q)));
                    let (h1, l1) = halves32(_mm512_loadu_ps(s.add((2 * j + 1) * 32 + q)));
                    let hp = _mm512_or_si512(h0, _mm512_slli_epi32::<16>(h1));
                    let lp = _mm512_or_si512(l0, _mm512_slli_epi32::<16>(l1));
                    _mm512_storeu_si512(h.add(j * 64 + 2 * q) as *mut __m512i, hp);
                    _mm512_storeu_si512(l.add(j * 64 + 2 * q) as *mut __m512i, lp);
                }
            }
        }
    }

    /// `src` split into bf16 halves, element by element (`src.len()` a multiple of 16).
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn split_slice(src: &[f32], hi: &mut [u16], lo: &mut [u16]) {
        assert!(
            src.len().is_multiple_of(16) && hi.len() == src.len() && lo.len() == src.len(),
            "split_slice: sizes"
        );
        for i in (0..src.len()).step_by(16) {
            // SAFETY: 16 lanes at i of each slice (asserted sizes).
            unsafe {
                let (h, l) = split16(_mm512_loadu_ps(src.as_ptr().add(i)));
                _mm256_storeu_si256(hi.as_mut_ptr().add(i) as *mut __m256i, h);
                _mm256_storeu_si256(lo.as_mut_ptr().add(i) as *mut __m256i, l);
            }
        }
    }

    /// Largest entry of a row.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn row_max(row: &[f32]) -> f32 {
        let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i < row.len() {
            let n = (row.len() - i).min(16);
            // SAFETY: a masked load of lanes i..i + n.
            unsafe {
                let x = _mm512_mask_loadu_ps(m, lanes(n), row.as_ptr().add(i));
                m = _mm512_max_ps(m, x);
            }
            i += 16;
        }
        _mm512_reduce_max_ps(m)
    }
}

/// Query rows per attention task (every key tile loaded serves this many rows).
const QR: usize = 128;
/// Keys per chunk of the online softmax (a task's scores and packed probabilities,
/// `QR x KC` f32 + bf16x3, stay in L2).
const KC: usize = 1024;

/// Where [`attention_head`] reads a head's rows: row `i` of `x` at `x[i * ld..][..width]`.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub x: &'a [f32],
    pub ld: usize,
    pub width: usize,
}

impl Rows<'_> {
    fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.ld..i * self.ld + self.width]
    }
}

/// An attention task's buffers: packed queries, scores, packed probabilities, output.
type AttnScratch = (Aligned<u16>, Aligned<f32>, Aligned<u16>, Aligned<f32>);

thread_local! {
    static SCRATCH: std::cell::RefCell<AttnScratch> =
        const { std::cell::RefCell::new((Aligned::new(), Aligned::new(), Aligned::new(), Aligned::new())) };
}

/// `softmax(scale q k^T) v` of one head, the query blocks in parallel: `lq` query rows and
/// `lk` key / value rows; output row `i` goes to `out + i * ldo` (`v.width` floats).
///
/// Keys and values are packed once per head, in chunks of `KC`; each task runs flash-style
/// over the chunks (scores as one tile GEMM, exact f32 online softmax, probabilities split
/// into bf16x3, values as a second tile GEMM).
///
/// # Safety
/// AMX is [`available`]; `out` is valid for writes of rows `0..lq` (`v.width` each, `ldo`
/// apart) that nothing else reads or writes meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn attention_head(
    q: Rows<'_>,
    k: Rows<'_>,
    v: Rows<'_>,
    lq: usize,
    lk: usize,
    scale: f32,
    out: *mut f32,
    ldo: usize,
) {
    let (hd, vd) = (q.width, v.width);
    assert!(
        available()
            && k.width == hd
            && lk > 0
            && (lq == 0 || q.x.len() >= (lq - 1) * q.ld + hd)
            && k.x.len() >= (lk - 1) * k.ld + hd
            && v.x.len() >= (lk - 1) * v.ld + vd,
        "amx::attention_head: sizes"
    );
    if lq == 0 || vd == 0 {
        return;
    }
    let chunks = lk.div_ceil(KC);
    let packed: Vec<(PackedB, PackedB)> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let (j0, nk) = (c * KC, KC.min(lk - c * KC));
            (
                PackedB::transposed_fast(&k.x[j0 * k.ld..], hd, nk, k.ld),
                PackedB::rows_fast(&v.x[j0 * v.ld..], nk, vd, v.ld),
            )
        })
        .collect();
    let kpq = hd.div_ceil(KB) * KB;
    let vdp = vd.div_ceil(NB) * NB;
    let out = super::attention::SendPtr(out);
    (0..lq.div_ceil(QR)).into_par_iter().for_each(|blk| {
        let q0 = blk * QR;
        let m = QR.min(lq - q0);
        let mp = m.div_ceil(MB) * MB;
        SCRATCH.with(|cell| {
            let (qa, s, pa, o) = &mut *cell.borrow_mut();
            qa.zeroed(mp * 3 * kpq);
            for i in 0..m {
                split_row(q.row(q0 + i), scale, qa, i, kpq);
            }
            o.zeroed(mp * vdp);
            let mut mx = vec![f32::NEG_INFINITY; mp];
            let mut sum = vec![0f32; mp];
            // SAFETY: AMX is available (asserted above).
            unsafe { configure() };
            for (kt, vt) in &packed {
                let nk = kt.n;
                let ncp = nk.div_ceil(NB) * NB;
                let kw = 3 * vt.kp;
                if s.len() != mp * ncp {
                    s.zeroed(mp * ncp);
                }
                // every packed row is written in full (padding included) below
                if pa.len() != mp * kw {
                    pa.zeroed(mp * kw);
                }
                // SAFETY: s holds mp rows of ncp floats; qa mp packed rows of 3 kpq.
                unsafe { gemm_blocks(qa, mp, kt, s.as_mut_ptr(), ncp, false) };
                for r in 0..mp {
                    let row = &s[r * ncp..r * ncp + nk];
                    // SAFETY: as below.
                    let mnew = mx[r].max(unsafe { v512::row_max(row) });
                    let corr = if mx[r] == f32::NEG_INFINITY {
                        0.0
                    } else {
                        super::simd::exp(mx[r] - mnew)
                    };
                    // SAFETY: AVX-512 (AMX CPUs have it).
                    let e = unsafe { v512::pack_row(row, 1.0, Some(mnew), pa, r, vt.kp) };
                    sum[r] = sum[r] * corr + e;
                    mx[r] = mnew;
                    if corr != 1.0 {
                        for x in &mut o[r * vdp..(r + 1) * vdp] {
                            *x *= corr;
                        }
                    }
                }
                // SAFETY: o holds mp rows of vdp floats; pa mp packed rows of 3 kp.
                unsafe { gemm_blocks(pa, mp, vt, o.as_mut_ptr(), vdp, true) };
            }
            for i in 0..m {
                let inv = 1.0 / sum[i];
                // SAFETY: row q0 + i of the output belongs to this task (caller's contract).
                let dst =
                    unsafe { std::slice::from_raw_parts_mut(out.get().add((q0 + i) * ldo), vd) };
                for (d, x) in dst.iter_mut().zip(&o[i * vdp..i * vdp + vd]) {
                    *d = x * inv;
                }
            }
        });
    });
}

/// The memory tokens of SAM 2's folded cross-attention as the left operand of its value
/// product `O^T [kv, q] += V^T [kv, keys] P [keys, q]`: `[kv / 16][keys / 32][16][32]` bf16
/// tiles. `None` unless every value is a bf16 (the memories are stored in bf16, so their
/// tokens are exact and one product per probability half suffices) and the sizes are
/// multiples of the tiles.
pub(crate) fn pack_values_t(vals: &[f32], keys: usize, kv: usize) -> Option<Aligned<u16>> {
    if !available() || !keys.is_multiple_of(32) || !kv.is_multiple_of(32) || vals.len() < keys * kv
    {
        return None;
    }
    if !vals[..keys * kv]
        .par_iter()
        .all(|v| v.to_bits() & 0xffff == 0)
    {
        return None;
    }
    let groups = keys / 32;
    let mut vt = Aligned::new();
    vt.zeroed(kv * keys);
    vt.par_chunks_mut(512).enumerate().for_each(|(t, tile)| {
        let (eb, g) = (t / groups, t % groups);
        for (r, row) in tile.chunks_exact_mut(32).enumerate() {
            let e = eb * 16 + r;
            for (j, x) in row.iter_mut().enumerate() {
                *x = (vals[(g * 32 + j) * kv + e].to_bits() >> 16) as u16;
            }
        }
    });
    Some(vt)
}

thread_local! {
    /// The probabilities of a row step, split: `[n / 2][32][2]` bf16 (hi, then lo).
    static PROBS: std::cell::RefCell<(Aligned<u16>, Aligned<u16>)> =
        const { std::cell::RefCell::new((Aligned::new(), Aligned::new())) };
}

/// The value product of one row step of the folded cross-attention on AMX tiles:
/// `o [kv][32] += sum over the step's keys of p[key][q] v[key][e]`, for `frames` memory
/// frames whose probabilities are `st[t * st_stride..][..n * 32]` (key-major, 32 query lanes)
/// and whose keys are `t * l + key0 ..+ n` in `vt` ([`pack_values_t`]).
///
/// # Safety
/// AMX is [`available`]; `n`, `key0`, `l` and `kv` are multiples of 32.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn rope_values(
    st: &[f32],
    st_stride: usize,
    n: usize,
    frames: usize,
    l: usize,
    key0: usize,
    vt: &[u16],
    kv: usize,
    o: &mut [f32],
) {
    let groups = vt.len() / (kv * 32);
    assert!(
        n.is_multiple_of(32)
            && key0.is_multiple_of(32)
            && l.is_multiple_of(32)
            && kv.is_multiple_of(32)
            && groups * 32 >= (frames - 1) * l + key0 + n
            && st.len() >= (frames - 1) * st_stride + n * 32
            && o.len() >= kv * 32,
        "amx::rope_values: sizes"
    );
    PROBS.with(|cell| {
        let (ph, pl) = &mut *cell.borrow_mut();
        if ph.len() < n * 32 {
            ph.zeroed(n * 32);
            pl.zeroed(n * 32);
        }
        // SAFETY: AMX is available (caller).
        unsafe { configure() };
        for t in 0..frames {
            // SAFETY: AVX-512 (AMX CPUs have it); the step's n rows of 32 lanes.
            unsafe { v512::pair_probs(&st[t * st_stride..t * st_stride + n * 32], ph, pl) };
            let g0 = (t * l + key0) / 32;
            for half in 0..kv / 32 {
                // SAFETY: tiles of V^T bands 2 half and 2 half + 1 from group g0 (n / 32 of
                // them, inside vt: asserted); the packed probabilities; o rows 32 half..+32.
                unsafe {
                    values_block(
                        vt.as_ptr().add((2 * half * groups + g0) * 512),
                        vt.as_ptr().add(((2 * half + 1) * groups + g0) * 512),
                        ph.as_ptr(),
                        pl.as_ptr(),
                        n / 32,
                        o.as_mut_ptr().add(half * 32 * 32),
                    )
                };
            }
        }
    });
}

/// `C [32 e][32 q] += A [32 e][steps * 32 keys] (B_hi + B_lo)`: C at `c` (f32, rows 128 bytes
/// apart), A's two 16-row bands at `a0` / `a1` (1 KB tiles in sequence), B's halves as
/// `[16 pairs][32][2]` per step (2 KB) at `bh` / `bl`.
///
/// # Safety
/// AMX configured with [`CONFIG`]; the pointers cover `steps` tiles / steps.
#[inline(always)]
unsafe fn values_block(
    a0: *const u16,
    a1: *const u16,
    bh: *const u16,
    bl: *const u16,
    steps: usize,
    c: *mut f32,
) {
    // SAFETY: the caller's contract.
    unsafe {
        std::arch::asm!(
            "tileloadd tmm0, [{o} + {ldo}*1]",
            "tileloadd tmm1, [{o} + {ldo}*1 + 64]",
            "tileloadd tmm2, [{o2} + {ldo}*1]",
            "tileloadd tmm3, [{o2} + {ldo}*1 + 64]",
            "2:",
            "tileloadd tmm4, [{a0} + {lda}*1]",
            "tileloadd tmm5, [{a1} + {lda}*1]",
            "tileloadd tmm6, [{bh} + {ldo}*1]",
            "tileloadd tmm7, [{bh} + {ldo}*1 + 64]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "tileloadd tmm6, [{bl} + {ldo}*1]",
            "tileloadd tmm7, [{bl} + {ldo}*1 + 64]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 1024",
            "add {a1}, 1024",
            "add {bh}, 2048",
            "add {bl}, 2048",
            "dec {n}",
            "jnz 2b",
            "tilestored [{o} + {ldo}*1], tmm0",
            "tilestored [{o} + {ldo}*1 + 64], tmm1",
            "tilestored [{o2} + {ldo}*1], tmm2",
            "tilestored [{o2} + {ldo}*1 + 64], tmm3",
            a0 = inout(reg) a0 => _,
            a1 = inout(reg) a1 => _,
            bh = inout(reg) bh => _,
            bl = inout(reg) bl => _,
            n = inout(reg) steps => _,
            lda = in(reg) 64usize,
            o = in(reg) c,
            o2 = in(reg) c.add(16 * 32),
            ldo = in(reg) 128usize,
            options(nostack),
        );
    }
}

/// The memory tokens of the folded cross-attention as the left operand of its score products:
/// `u` (f32, row-major `[keys][kv]`) split into bf16 `hi` and `lo` halves of the same layout.
/// `None` unless AMX is [`available`] and the length a multiple of 16.
pub(crate) fn split_tokens(u: &[f32]) -> Option<(Aligned<u16>, Aligned<u16>)> {
    if !available() || !u.len().is_multiple_of(16) {
        return None;
    }
    let (mut hi, mut lo) = (Aligned::new(), Aligned::new());
    hi.zeroed(u.len());
    lo.zeroed(u.len());
    const CHUNK: usize = 1 << 14;
    hi.par_chunks_mut(CHUNK)
        .zip(lo.par_chunks_mut(CHUNK))
        .zip(u.par_chunks(CHUNK))
        // SAFETY: AMX CPUs have AVX-512F/BW; the three chunks have the same length.
        .for_each(|((h, l), x)| unsafe { v512::split_slice(x, h, l) });
    Some((hi, lo))
}

/// Rows of 32 f32 lanes (`src [n][32]`, `n` even) as the right operand of a tile product:
/// `[n / 2][32][2]` bf16 pairs of consecutive rows, split into `hi` and `lo`.
///
/// # Safety
/// AMX is [`available`].
pub(crate) unsafe fn pack_pairs(src: &[f32], hi: &mut [u16], lo: &mut [u16]) {
    // SAFETY: AMX CPUs have AVX-512F/BW; sizes are checked inside.
    unsafe { v512::pair_probs(src, hi, lo) }
}

/// Load [`CONFIG`] on this thread (before [`load_c`], [`scores_product`], [`store_c`]).
///
/// # Safety
/// AMX is [`available`].
pub(crate) unsafe fn configure_tiles() {
    // SAFETY: the caller's contract.
    unsafe { configure() }
}

/// Load (`tileloadd`) or store (`tilestored`) the accumulator tile pair `tmm$t0`, `tmm$t1`:
/// 16 rows of 32 f32 at `c`, rows `ld` bytes apart (tile register names must be literals in
/// the asm template, hence a macro rather than a register argument).
macro_rules! tile_pair {
    (tileloadd, $t0:literal, $t1:literal, $c:expr, $ld:expr, readonly) => {
        std::arch::asm!(
            concat!("tileloadd tmm", $t0, ", [{c} + {ld}*1]"),
            concat!("tileloadd tmm", $t1, ", [{c} + {ld}*1 + 64]"),
            c = in(reg) $c, ld = in(reg) $ld, options(nostack, readonly),
        )
    };
    (tilestored, $t0:literal, $t1:literal, $c:expr, $ld:expr) => {
        std::arch::asm!(
            concat!("tilestored [{c} + {ld}*1], tmm", $t0),
            concat!("tilestored [{c} + {ld}*1 + 64], tmm", $t1),
            c = in(reg) $c, ld = in(reg) $ld, options(nostack),
        )
    };
}

/// Load accumulator pair `k` (0: tmm0/tmm1, 1: tmm2/tmm3) from `[16][32]` f32 at `c`, rows
/// `ld` bytes apart.
///
/// # Safety
/// AMX configured with [`CONFIG`] on this thread; `c` covers 16 rows of 128 bytes, `ld` apart.
#[inline(always)]
pub(crate) unsafe fn load_c(k: usize, c: *const f32, ld: usize) {
    // SAFETY: the caller's contract; the tile registers are not used by compiled code.
    unsafe {
        if k == 0 {
            tile_pair!(tileloadd, "0", "1", c, ld, readonly);
        } else {
            tile_pair!(tileloadd, "2", "3", c, ld, readonly);
        }
    }
}

/// Store accumulator pair `k` (see [`load_c`]) to `c`, rows `ld` bytes apart.
///
/// # Safety
/// As [`load_c`], `c` writable.
#[inline(always)]
pub(crate) unsafe fn store_c(k: usize, c: *mut f32, ld: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        if k == 0 {
            tile_pair!(tilestored, "0", "1", c, ld);
        } else {
            tile_pair!(tilestored, "2", "3", c, ld);
        }
    }
}

/// The score products of the folded cross-attention: both accumulator pairs (two tiles of 16
/// keys x 32 queries) `+=` their keys' tokens times one G matrix, in bf16x3
/// (`u_hi g_hi + u_hi g_lo + u_lo g_hi`). The keys of pair `k` are the 16 rows at `ak` (hi)
/// and `ak_lo` (lo), `lda` bytes apart, 32 channels per step; the G matrix is `steps` blocks
/// of `[16 pairs][32][2]` bf16 (2 KB) at `bh` / `bl`.
///
/// # Safety
/// AMX configured with [`CONFIG`]; the pointers cover `steps` steps.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn scores_product(
    a0: *const u16,
    a1: *const u16,
    a0_lo: *const u16,
    a1_lo: *const u16,
    lda: usize,
    bh: *const u16,
    bl: *const u16,
    steps: usize,
) {
    // SAFETY: the caller's contract.
    unsafe {
        std::arch::asm!(
            "2:",
            "tileloadd tmm4, [{a0} + {lda}*1]",
            "tileloadd tmm5, [{a1} + {lda}*1]",
            "tileloadd tmm6, [{bh} + {ldb}*1]",
            "tileloadd tmm7, [{bh} + {ldb}*1 + 64]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "tileloadd tmm6, [{bl} + {ldb}*1]",
            "tileloadd tmm7, [{bl} + {ldb}*1 + 64]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "tileloadd tmm4, [{a0l} + {lda}*1]",
            "tileloadd tmm5, [{a1l} + {lda}*1]",
            "tileloadd tmm6, [{bh} + {ldb}*1]",
            "tileloadd tmm7, [{bh} + {ldb}*1 + 64]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 64",
            "add {a1}, 64",
            "add {a0l}, 64",
            "add {a1l}, 64",
            "add {bh}, 2048",
            "add {bl}, 2048",
            "dec {n}",
            "jnz 2b",
            a0 = inout(reg) a0 => _,
            a1 = inout(reg) a1 => _,
            a0l = inout(reg) a0_lo => _,
            a1l = inout(reg) a1_lo => _,
            lda = in(reg) lda,
            bh = inout(reg) bh => _,
            bl = inout(reg) bl => _,
            ldb = in(reg) 128usize,
            n = inout(reg) steps => _,
            options(nostack, readonly),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::attention::tests::{max_abs_diff, rand};

    /// The AVX-512 packings of attention keys and values equal the element-wise one, bit for
    /// bit (odd inner sizes, partial column blocks, strided rows).
    #[test]
    fn fast_packings_equal_elementwise() {
        if !available() {
            return;
        }
        for (k, n, ld) in [
            (256, 1024, 256),
            (33, 47, 40),
            (1, 5, 3),
            (64, 31, 96),
            (96, 64, 300),
        ] {
            // B = X^T, X [n, k]
            let x = rand(n * ld, 9);
            let a = PackedB::new(k, n, |kk, j| x[j * ld + kk]);
            let b = PackedB::transposed_fast(&x, k, n, ld);
            assert_eq!((a.k, a.n, a.kp), (b.k, b.n, b.kp));
            assert!(a.data[..] == b.data[..], "transposed {k} x {n}");
            // B = X, X [k, n]
            let ld = ld.max(n);
            let x = rand(k * ld, 10);
            let a = PackedB::new(k, n, |kk, j| x[kk * ld + j]);
            let b = PackedB::rows_fast(&x, k, n, ld);
            assert!(a.data[..] == b.data[..], "rows {k} x {n}");
        }
    }

    /// Peak of the 32 x 32 tile block on L1-resident operands (timing only).
    #[test]
    #[ignore]
    fn block_peak() {
        if !available() {
            return;
        }
        for steps in [1usize, 2, 4, 8, 16, 48, 192] {
            let mut a: Aligned<u16> = Aligned::new();
            a.zeroed(2 * steps * 512);
            let mut b: Aligned<u16> = Aligned::new();
            b.zeroed(steps * 1024);
            for (i, v) in a.iter_mut().enumerate() {
                *v = 0x3f80 + (i % 7) as u16;
            }
            for (i, v) in b.iter_mut().enumerate() {
                *v = 0x3f80 + (i % 5) as u16;
            }
            let mut c: Aligned<f32> = Aligned::new();
            c.zeroed(32 * 32);
            let reps = 200_000 / steps;
            // SAFETY: AMX available; the buffers cover a block of `steps`.
            unsafe { configure() };
            let t = std::time::Instant::now();
            for _ in 0..reps {
                unsafe { block(a.as_ptr(), b.as_ptr(), steps, c.as_mut_ptr(), 128, true) };
            }
            let s = t.elapsed().as_secs_f64();
            let macs = (reps * steps * 4 * 16 * 16 * 32) as f64;
            println!(
                "steps {steps}: {:.0} G bf16 MAC/s, {:.1} ns per tdpbf16ps",
                macs / s / 1e9,
                s * 1e9 / (reps * steps * 4) as f64
            );
        }
    }

    fn reference(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|kk| a[i * k + kk] as f64 * b[kk * n + j] as f64)
                    .sum::<f64>() as f32;
            }
        }
        c
    }

    #[test]
    fn split_keeps_sixteen_bits() {
        for x in [1.0f32, -2.3456, 1e-20, 6.5e4, 0.0, 123.456] {
            let (h, l) = split(x);
            let back = f32::from_bits((h as u32) << 16) + f32::from_bits((l as u32) << 16);
            assert!(
                (back - x).abs() <= x.abs() * 2f32.powi(-16),
                "{x} -> {back}"
            );
        }
    }

    #[test]
    fn gemm_matches_f64_reference() {
        if !available() {
            eprintln!("no AMX here: skipped");
            return;
        }
        for &(m, k, n) in &[(1, 1, 1), (33, 70, 45), (130, 96, 288), (300, 257, 64)] {
            let a = rand(m * k, 1);
            let b = rand(k * n, 2);
            let want = reference(&a, &b, (m, k, n));
            let pb = PackedB::row_major(&b, k, n, n);
            let mut c = vec![0.5f32; m * n];
            gemm(m, &a, k, &pb, &mut c, n, 1.0, false);
            let err = max_abs_diff(&c, &want);
            let top = want.iter().fold(0f32, |t, v| t.max(v.abs()));
            assert!(
                err <= 2e-5 * top.max(1.0),
                "{m}x{k}x{n}: {err} (|c| <= {top})"
            );
            // accumulate with a scale, and a transposed operand
            let pt = PackedB::transposed(&transpose(&b, k, n), k, n, k);
            gemm(m, &a, k, &pt, &mut c, n, -1.0, true);
            assert!(
                c.iter().all(|v| v.abs() <= 4e-5 * top.max(1.0)),
                "{m}x{k}x{n}: accumulate"
            );
        }
    }

    #[test]
    fn attention_matches_f64_reference() {
        if !available() {
            eprintln!("no AMX here: skipped");
            return;
        }
        for &(lq, lk, hd, vd) in &[(5, 7, 8, 3), (130, 1500, 96, 96), (200, 2100, 64, 40)] {
            let q = rand(lq * hd, 3)
                .iter()
                .map(|v| 3.0 * v)
                .collect::<Vec<f32>>();
            let k = rand(lk * hd, 4);
            let v = rand(lk * vd, 5);
            let scale = (hd as f32).powf(-0.5);
            let mut out = vec![0f32; lq * vd];
            // SAFETY: AMX available; out has lq rows of vd.
            unsafe {
                attention_head(
                    Rows {
                        x: &q,
                        ld: hd,
                        width: hd,
                    },
                    Rows {
                        x: &k,
                        ld: hd,
                        width: hd,
                    },
                    Rows {
                        x: &v,
                        ld: vd,
                        width: vd,
                    },
                    lq,
                    lk,
                    scale,
                    out.as_mut_ptr(),
                    vd,
                )
            };
            let mut err = 0f64;
            for i in 0..lq {
                let sc: Vec<f64> = (0..lk)
                    .map(|j| {
                        (0..hd)
                            .map(|d| q[i * hd + d] as f64 * k[j * hd + d] as f64)
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - mx).exp()).collect();
                let tot: f64 = e.iter().sum();
                for c in 0..vd {
                    let want: f64 = (0..lk).map(|j| e[j] * v[j * vd + c] as f64).sum::<f64>() / tot;
                    err = err.max((want - out[i * vd + c] as f64).abs());
                }
            }
            eprintln!("{lq}x{lk}x{hd}x{vd}: max|diff| {err:.2e}");
            assert!(err < 2e-5, "{lq}x{lk}x{hd}x{vd}: {err}");
        }
    }

    fn transpose(b: &[f32], k: usize, n: usize) -> Vec<f32> {
        let mut t = vec![0f32; k * n];
        for kk in 0..k {
            for j in 0..n {
                t[j * k + kk] = b[kk * n + j];
            }
        }
        t
    }
}
