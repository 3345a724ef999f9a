//! Two-layer MLP on host buffers (`linear2(act(linear1(x)))`: SAM 2's memory-attention
//! feed-forward with ReLU, the memory encoder's ConvNeXt blocks with GELU): row blocks run in
//! parallel, each block's hidden activations stay in the cache between the two products
//! (burn's path materialises the [rows, 4 x width] activations and adds the bias and the
//! activation as separate passes: measured 2.3x slower on 4096 x 256 -> 2048 -> 256, 3.5x on
//! the ConvNeXt block's 4096 x 256 -> 1024 -> 256).

use rayon::prelude::*;

use burn::nn::Linear;

use super::attention::{SendPtr, gemm_f32};
use super::simd::gelu_chunk;
use super::to_host;

/// The hidden activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Relu,
    /// Exact (erf) GELU, `nn.GELU()`.
    Gelu,
}

/// Rows per block.
const RB: usize = 128;

thread_local! {
    static HIDDEN: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The weights of `linear2(act(linear1(x)))` on the host, in burn's `[in, out]` layout:
/// `w1` `[din, hid]`, `w2` `[hid, dout]`.
pub struct HostMlp {
    pub din: usize,
    pub w1: Vec<f32>,
    pub b1: Option<Vec<f32>>,
    pub hid: usize,
    pub w2: Vec<f32>,
    pub b2: Option<Vec<f32>>,
    pub dout: usize,
    pub act: Act,
}

impl HostMlp {
    /// Copy the two layers' parameters to the host.
    pub fn new(l1: &Linear, l2: &Linear, act: Act) -> Self {
        let (w1, [din, hid]) = to_host(l1.weight.val());
        let (w2, [_, dout]) = to_host(l2.weight.val());
        Self {
            din,
            w1,
            b1: l1.bias.as_ref().map(|p| to_host(p.val()).0),
            hid,
            w2,
            b2: l2.bias.as_ref().map(|p| to_host(p.val()).0),
            dout,
            act,
        }
    }

    /// `rows` channels-last rows (`[rows, din]`) -> `[rows, dout]`.
    pub fn rows(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.strided(x, 1, rows, true)
    }

    /// The pixels of channels-first maps: `x` `[b, din, hw]` -> `[b, dout, hw]` (a 1x1-conv
    /// MLP). Where AMX tiles apply, through channels-last rows and two transposes; elsewhere
    /// the f32 products read and write the channel-strided layout directly.
    pub fn channels_first(&self, x: &[f32], b: usize, hw: usize) -> Vec<f32> {
        if self.tiles_apply() && x.len() == b * self.din * hw && hw >= 256 {
            // through channels-last rows on AMX tiles: the two transposes (~1 ms per 4 MB
            // map) cost far less than the f32 products they replace (SAM 2's memory-encoder
            // ConvNeXt MLP, 4096 x 256 -> 1024 -> 256: ~17 ms in f32 per block)
            let rows = transpose_items(x, b, self.din, hw);
            let y = self.strided(&rows, 1, b * hw, true);
            return transpose_items(&y, b, hw, self.dout);
        }
        self.strided(x, b, hw, false)
    }

    /// Whether the channels-last products run on AMX tiles (bf16x3).
    fn tiles_apply(&self) -> bool {
        super::amx::available() && self.din >= 128 && self.hid >= 256
    }

    /// `b` items of `n` rows each, rows either channel-last (`[b, n, din]`) or channels-first
    /// (`[b, din, n]`); the output has the same layout.
    fn strided(&self, x: &[f32], b: usize, n: usize, channels_last: bool) -> Vec<f32> {
        let Self {
            din,
            ref w1,
            ref b1,
            hid,
            ref w2,
            ref b2,
            dout,
            act,
        } = *self;
        let (b1, b2) = (b1.as_deref(), b2.as_deref());
        assert!(
            x.len() == b * n * din
                && w1.len() == din * hid
                && w2.len() == hid * dout
                && b1.is_none_or(|v| v.len() == hid)
                && b2.is_none_or(|v| v.len() == dout),
            "mlp: buffer sizes"
        );
        // (row stride, channel stride) of input and output
        let (x_rs, x_cs, o_rs, o_cs) = if channels_last {
            (din, 1, dout, 1)
        } else {
            (1, n, 1, n)
        };
        let mut out = vec![0f32; b * n * dout];
        let out_ptr = SendPtr(out.as_mut_ptr());
        let blocks = n.div_ceil(RB);
        // AMX tiles (bf16x3) for channels-last rows wide enough to be bound by the products
        // (SAM 2's memory-attention feed-forward, 256 -> 2048 -> 256)
        let tiles = (channels_last && self.tiles_apply()).then(|| {
            (
                super::amx::packed_weights(w1, din, hid),
                super::amx::packed_weights(w2, hid, dout),
            )
        });
        (0..b * blocks).into_par_iter().for_each(|task| {
            let (bi, blk) = (task / blocks, task % blocks);
            let r0 = blk * RB;
            let m = RB.min(n - r0);
            // the task's hidden activations: a per-thread buffer (every entry is written by
            // the first product before it is read; zeroing 1 MB per task cost ~7% of a call)
            HIDDEN.with(|cell| {
                let mut h = cell.borrow_mut();
                if h.len() < m * hid {
                    h.resize(m * hid, 0.0);
                }
                let h = &mut h[..m * hid];
                if let Some((p1, _)) = &tiles {
                    let xr = &x[(bi * n + r0) * din..(bi * n + r0 + m) * din];
                    super::amx::gemm_serial(m, xr, din, p1, h, hid, 1.0, false);
                } else {
                    // SAFETY: rows r0..r0 + m of item bi, weights and h sized as asserted.
                    unsafe {
                        gemm_f32(
                            m,
                            hid,
                            din,
                            h.as_mut_ptr(),
                            hid,
                            false,
                            x.as_ptr().add(bi * n * din + r0 * x_rs),
                            x_rs as isize,
                            x_cs as isize,
                            w1.as_ptr(),
                            hid as isize,
                            1,
                            1.0,
                        )
                    };
                }
                match (b1, act) {
                    // bias and ReLU in one pass
                    (Some(bias), Act::Relu) => {
                        for row in h.chunks_exact_mut(hid) {
                            for (v, bb) in row.iter_mut().zip(bias) {
                                let x = *v + *bb;
                                *v = if x > 0.0 { x } else { 0.0 };
                            }
                        }
                    }
                    (None, Act::Relu) => {
                        for v in h.iter_mut() {
                            *v = if *v > 0.0 { *v } else { 0.0 };
                        }
                    }
                    (bias, Act::Gelu) => {
                        if let Some(bias) = bias {
                            for row in h.chunks_exact_mut(hid) {
                                for (v, bb) in row.iter_mut().zip(bias) {
                                    *v += *bb;
                                }
                            }
                        }
                        gelu_chunk(h)
                    }
                }
                // SAFETY: output rows r0..r0 + m of item bi belong to this task only.
                unsafe {
                    let dst = out_ptr.get().add(bi * n * dout + r0 * o_rs);
                    if let Some(bias) = b2 {
                        for r in 0..m {
                            for (o, bb) in bias.iter().enumerate() {
                                *dst.add(r * o_rs + o * o_cs) = *bb;
                            }
                        }
                    }
                    if let Some((_, p2)) = &tiles {
                        // channels-last: rows of dout, o_rs = dout
                        let c = std::slice::from_raw_parts_mut(dst, m * dout);
                        super::amx::gemm_serial(m, h, hid, p2, c, dout, 1.0, b2.is_some());
                        return;
                    }
                    gemm::gemm(
                        m,
                        dout,
                        hid,
                        dst,
                        o_cs as isize,
                        o_rs as isize,
                        b2.is_some(),
                        h.as_ptr(),
                        1,
                        hid as isize,
                        w2.as_ptr(),
                        1,
                        dout as isize,
                        if b2.is_some() { 1.0 } else { 0.0 },
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                };
            });
        });
        out
    }
}

/// `b` row-major `[r, c]` matrices transposed to `[c, r]` each (16 x 16 blocks, items and
/// block rows in parallel).
fn transpose_items(x: &[f32], b: usize, r: usize, c: usize) -> Vec<f32> {
    assert_eq!(x.len(), b * r * c, "transpose: buffer size");
    let mut out = vec![0f32; b * r * c];
    const T: usize = 16;
    if b * r * c == 0 {
        return out;
    }
    // one task per item and block of T output rows (T input columns)
    out.par_chunks_mut(r * c)
        .zip(x.par_chunks(r * c))
        .for_each(|(item, src)| {
            item.par_chunks_mut(T * r)
                .enumerate()
                .for_each(|(cb, dst)| {
                    let c0 = cb * T;
                    let nc = dst.len() / r;
                    for i in 0..r {
                        for (j, v) in src[i * c + c0..i * c + c0 + nc].iter().enumerate() {
                            dst[j * r + i] = *v;
                        }
                    }
                })
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Taylor series (|x| < 6 here).
    fn erf64(x: f64) -> f64 {
        let (mut sum, mut term, mut n) = (0.0, x, 0.0);
        while term.abs() > 1e-17 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn transpose_items_transposes_each_item() {
        let (b, r, c) = (3, 37, 21);
        let x: Vec<f32> = (0..b * r * c).map(|i| i as f32).collect();
        let t = transpose_items(&x, b, r, c);
        for bi in 0..b {
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(t[bi * r * c + j * r + i], x[bi * r * c + i * c + j]);
                }
            }
        }
    }

    /// The wide shapes (AMX tiles where available: channels-first through transposes) give
    /// the channels-last result, item by item.
    #[test]
    fn wide_channels_first_matches_rows() {
        let (b, n, din, hid, dout) = (2, 300, 128, 256, 64);
        let f = |len: usize, k: u32| -> Vec<f32> {
            (0..len)
                .map(|i| (((i as u32).wrapping_mul(2654435761) ^ k) % 1000) as f32 / 5000.0 - 0.1)
                .collect()
        };
        let m = HostMlp {
            din,
            w1: f(din * hid, 2),
            b1: Some(f(hid, 3)),
            hid,
            w2: f(hid * dout, 4),
            b2: Some(f(dout, 5)),
            dout,
            act: Act::Gelu,
        };
        let x = f(b * n * din, 1);
        let rows = m.rows(&x, b * n);
        let xt = transpose_items(&x, b, n, din);
        let cf = m.channels_first(&xt, b, n);
        let (mut worst, mut worst_rows) = (0f64, 0f64);
        for bi in 0..b {
            for r in 0..n {
                let xr = &x[(bi * n + r) * din..][..din];
                let h: Vec<f64> = (0..hid)
                    .map(|j| {
                        let v = (0..din)
                            .map(|i| xr[i] as f64 * m.w1[i * hid + j] as f64)
                            .sum::<f64>()
                            + m.b1.as_ref().unwrap()[j] as f64;
                        0.5 * v * (1.0 + erf64(v / std::f64::consts::SQRT_2))
                    })
                    .collect();
                for o in 0..dout {
                    let want = (0..hid)
                        .map(|j| h[j] * m.w2[j * dout + o] as f64)
                        .sum::<f64>()
                        + m.b2.as_ref().unwrap()[o] as f64;
                    let got = cf[bi * n * dout + o * n + r] as f64;
                    worst = worst.max((want - got).abs());
                    worst_rows =
                        worst_rows.max((want - rows[(bi * n + r) * dout + o] as f64).abs());
                }
            }
        }
        assert!(
            worst < 1e-5 && worst_rows < 1e-5,
            "channels-first {worst}, rows {worst_rows}"
        );
    }

    #[test]
    fn mlp_matches_f64() {
        let (rows, din, hid, dout) = (300, 24, 40, 16);
        let f = |n: usize, k: u32| -> Vec<f32> {
            (0..n)
                .map(|i| (((i as u32).wrapping_mul(2654435761) ^ k) % 1000) as f32 / 500.0 - 1.0)
                .collect()
        };
        let (x, w1, b1, w2, b2) = (
            f(rows * din, 1),
            f(din * hid, 2),
            f(hid, 3),
            f(hid * dout, 4),
            f(dout, 5),
        );
        for (bias, act) in [(true, Act::Relu), (false, Act::Relu), (true, Act::Gelu)] {
            let m = HostMlp {
                din,
                w1: w1.clone(),
                b1: bias.then(|| b1.clone()),
                hid,
                w2: w2.clone(),
                b2: bias.then(|| b2.clone()),
                dout,
                act,
            };
            let got = m.rows(&x, rows);
            let mut xt = vec![0f32; rows * din];
            for r in 0..rows {
                for i in 0..din {
                    xt[i * rows + r] = x[r * din + i];
                }
            }
            let cf = m.channels_first(&xt, 1, rows);
            for r in 0..rows {
                let h: Vec<f64> = (0..hid)
                    .map(|j| {
                        let v = (0..din)
                            .map(|i| x[r * din + i] as f64 * w1[i * hid + j] as f64)
                            .sum::<f64>()
                            + if bias { b1[j] as f64 } else { 0.0 };
                        match act {
                            Act::Relu => v.max(0.0),
                            Act::Gelu => 0.5 * v * (1.0 + erf64(v / std::f64::consts::SQRT_2)),
                        }
                    })
                    .collect();
                for o in 0..dout {
                    let want = (0..hid)
                        .map(|j| h[j] * w2[j * dout + o] as f64)
                        .sum::<f64>()
                        + if bias { b2[o] as f64 } else { 0.0 };
                    let d = (got[r * dout + o] as f64 - want).abs();
                    assert!(d < 1e-4, "row {r} out {o}: {} vs {want}", got[r * dout + o]);
                    let d = (cf[o * rows + r] as f64 - want).abs();
                    assert!(
                        d < 1e-4,
                        "channels-first row {r} out {o}: {}",
                        cf[o * rows + r]
                    );
                }
            }
        }
    }
}
