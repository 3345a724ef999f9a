//! Row-major host-buffer building blocks for the channels-last trunks (Hiera): a `Linear` as
//! one multithreaded GEMM with its bias, LayerNorm over rows, max-pooling 2x2, window
//! partitioning and residual adds.
//!
//! Why: burn's flex backend allocates every op's output through a zeroed byte vector that it
//! then copies into an aligned allocation (`FlexTensor::empty` -> `Bytes::from_bytes_vec`), and
//! adds a `Linear`'s bias as a separate broadcast pass. On Hiera's high-resolution stages
//! (65,536 tokens of 96 channels, 16,384 of 192) these memory passes cost more than the
//! products: in a profile of the trunk, memcpy + memset + page clearing were ~65% of the main
//! thread's samples inside the blocks.

use burn::nn::{LayerNorm, Linear};
use rayon::prelude::*;

use super::to_host;

/// A `Linear`'s parameters on the host, in burn's `[in, out]` layout.
pub struct HostLinear {
    pub din: usize,
    pub dout: usize,
    pub w: Vec<f32>,
    pub b: Option<Vec<f32>>,
}

impl HostLinear {
    pub fn new(l: &Linear) -> Self {
        let (w, [din, dout]) = to_host(l.weight.val());
        Self {
            din,
            dout,
            w,
            b: l.bias.as_ref().map(|p| to_host(p.val()).0),
        }
    }

    /// `x` `[rows, din]` -> `[rows, dout]`: the bias written first, the product accumulated
    /// onto it (one GEMM over all rows, parallel inside).
    pub fn rows(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let (din, dout) = (self.din, self.dout);
        assert!(
            x.len() == rows * din && self.w.len() == din * dout,
            "linear: buffer sizes"
        );
        let mut out = vec![0f32; rows * dout];
        if let Some(b) = &self.b {
            out.par_chunks_mut(dout * 64).for_each(|chunk| {
                for row in chunk.chunks_exact_mut(dout) {
                    row.copy_from_slice(b);
                }
            });
        }
        if super::amx::available() && din >= 128 && dout >= 256 && rows >= 256 {
            // AMX tiles (bf16x3): 1.6-2x the f32 GEMM on Hiera's stage 2-4 shapes; the narrow
            // stage-1 products are bound by memory traffic either way
            let w = super::amx::packed_weights(&self.w, din, dout);
            super::amx::gemm(rows, x, din, &w, &mut out, dout, 1.0, self.b.is_some());
        } else {
            matmul_into(&mut out, x, &self.w, (rows, din, dout), self.b.is_some());
        }
        out
    }
}

/// `l.forward(x)` for `x` `[b, n, din]`: on the host fast path as one [`HostLinear`] GEMM
/// (AMX tiles where they apply), burn's op elsewhere (autodiff and other devices). SAM 2's
/// memory attention runs ~7 such 4096 x 256 x 256 projections per layer and object; burn's
/// op (zeroed allocation, alignment copy, separate bias pass) took ~5 ms each.
pub fn linear3(l: &Linear, x: burn::tensor::Tensor<3>) -> burn::tensor::Tensor<3> {
    let device = x.device();
    if !super::host_fast_path(&device) {
        return l.forward(x);
    }
    let (v, [b, n, _]) = to_host(x);
    let hl = HostLinear::new(l);
    let out = hl.rows(&v, b * n);
    super::from_host(out, [b, n, hl.dout], &device)
}

/// `c = a @ b`, plus the old `c` when `accumulate`: row-major `a` `[m, k]`, `b` `[k, n]`,
/// `c` `[m, n]`, one GEMM parallel inside.
pub fn matmul_into(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
) {
    assert!(
        a.len() == m * k && b.len() == k * n && c.len() == m * n,
        "matmul: buffer sizes"
    );
    if c.is_empty() {
        return;
    }
    // SAFETY: the three buffers are row-major with the sizes asserted above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        )
    };
}

/// `a @ b` into a new buffer (see [`matmul_into`]).
pub fn matmul(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    matmul_into(&mut c, a, b, (m, k, n), false);
    c
}

/// LayerNorm over the last dimension of every row of `x` (biased variance, as PyTorch's
/// `nn.LayerNorm` and SAM's `LayerNorm2d`), in place.
pub fn layer_norm_rows(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let c = w.len();
    assert!(
        c > 0 && b.len() == c && x.len().is_multiple_of(c),
        "layer norm: sizes"
    );
    x.par_chunks_mut(c * 256).for_each(|chunk| {
        for row in chunk.chunks_exact_mut(c) {
            let mean = row.iter().sum::<f32>() / c as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, wi), bi) in row.iter_mut().zip(w).zip(b) {
                *v = (*v - mean) * inv * wi + bi;
            }
        }
    });
}

/// A burn `LayerNorm`'s scale and shift on the host (shift zero when it has none).
pub fn layer_norm_params(n: &LayerNorm) -> (Vec<f32>, Vec<f32>) {
    let (w, [c]) = to_host(n.gamma.val());
    let b = n
        .beta
        .as_ref()
        .map_or_else(|| vec![0.0; c], |p| to_host(p.val()).0);
    (w, b)
}

/// `a += b` elementwise, in parallel.
pub fn add_assign(a: &mut [f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "add: sizes");
    a.par_chunks_mut(1 << 14)
        .zip(b.par_chunks(1 << 14))
        .for_each(|(x, y)| {
            for (u, v) in x.iter_mut().zip(y) {
                *u += *v;
            }
        });
}

/// 2x2 max-pooling with stride 2 (floor mode) of a channels-last `[b, h, w, c]` map.
pub fn max_pool_2x2(x: &[f32], b: usize, h: usize, w: usize, c: usize) -> Vec<f32> {
    assert_eq!(x.len(), b * h * w * c, "max pool: sizes");
    max_pool_2x2_strided(x, (b, h, w, c), c)
}

/// [`max_pool_2x2`] of the first `c` channels of tokens `token_stride` floats apart (the
/// queries of a fused `qkv` output).
pub fn max_pool_2x2_strided(
    x: &[f32],
    (b, h, w, c): (usize, usize, usize, usize),
    token_stride: usize,
) -> Vec<f32> {
    assert!(
        c <= token_stride && x.len() >= b * h * w * token_stride,
        "max pool: sizes"
    );
    let (ho, wo) = (h / 2, w / 2);
    let mut out = vec![0f32; b * ho * wo * c];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(wo * c).enumerate().for_each(|(r, row)| {
        let (bi, y) = (r / ho, r % ho);
        for xo in 0..wo {
            let dst = &mut row[xo * c..(xo + 1) * c];
            dst.fill(f32::NEG_INFINITY);
            for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let t = ((bi * h + 2 * y + dy) * w + 2 * xo + dx) * token_stride;
                for (d, s) in dst.iter_mut().zip(&x[t..t + c]) {
                    *d = d.max(*s);
                }
            }
        }
    });
    out
}

/// `vit.window_partition` on the host: `[b, h, w, c]` -> `[b * nw, ws, ws, c]`, zero-padding
/// `h` and `w` up to multiples of `ws`. Returns the windows and the padded size.
pub fn window_partition(
    x: &[f32],
    (b, h, w, c): (usize, usize, usize, usize),
    ws: usize,
) -> (Vec<f32>, (usize, usize)) {
    assert!(
        ws > 0 && x.len() == b * h * w * c,
        "window partition: sizes"
    );
    let (hp, wp) = (h.div_ceil(ws) * ws, w.div_ceil(ws) * ws);
    let (nwh, nww) = (hp / ws, wp / ws);
    let mut out = vec![0f32; b * hp * wp * c];
    // one window row (ws tokens) per task
    out.par_chunks_mut(ws * c).enumerate().for_each(|(i, dst)| {
        let r = i % ws;
        let win = i / ws;
        let (bi, wy, wx) = (win / (nwh * nww), (win / nww) % nwh, win % nww);
        let y = wy * ws + r;
        if y >= h {
            return;
        }
        let x0 = wx * ws;
        let n = ws.min(w.saturating_sub(x0));
        let src = ((bi * h + y) * w + x0) * c;
        dst[..n * c].copy_from_slice(&x[src..src + n * c]);
    });
    (out, (hp, wp))
}

/// Inverse of [`window_partition`]: `[b * nw, ws, ws, c]` windows of a `(hp, wp)` map ->
/// `[b, h, w, c]`, cropping the padding.
pub fn window_unpartition(
    win: &[f32],
    ws: usize,
    (hp, wp): (usize, usize),
    (h, w): (usize, usize),
    c: usize,
) -> Vec<f32> {
    assert!(
        ws > 0 && hp.is_multiple_of(ws) && wp.is_multiple_of(ws) && h <= hp && w <= wp,
        "window unpartition: sizes"
    );
    let (nwh, nww) = (hp / ws, wp / ws);
    let b = win.len() / (hp * wp * c);
    assert_eq!(win.len(), b * hp * wp * c, "window unpartition: sizes");
    let mut out = vec![0f32; b * h * w * c];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(w * c).enumerate().for_each(|(r, row)| {
        let (bi, y) = (r / h, r % h);
        let (wy, iy) = (y / ws, y % ws);
        for wx in 0..nww {
            let x0 = wx * ws;
            if x0 >= w {
                break;
            }
            let n = ws.min(w - x0);
            let src = ((((bi * nwh + wy) * nww + wx) * ws + iy) * ws) * c;
            row[x0 * c..(x0 + n) * c].copy_from_slice(&win[src..src + n * c]);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect()
    }

    #[test]
    fn partition_round_trip_with_padding() {
        let (b, h, w, c, ws) = (2, 5, 7, 3, 4);
        let x = seq(b * h * w * c);
        let (win, (hp, wp)) = window_partition(&x, (b, h, w, c), ws);
        assert_eq!((hp, wp), (8, 8));
        assert_eq!(win.len(), b * 4 * ws * ws * c);
        // window (b=1, wy=1, wx=0), row 0, column 2 is token (y=4, x=2) of item 1
        let src = ((h + 4) * w + 2) * c;
        let dst = ((((4 + 2) * ws) * ws) + 2) * c;
        assert_eq!(&win[dst..dst + c], &x[src..src + c]);
        // row 1 of window (wy=1) is y=5: padding
        let pad = ((((4 + 2) * ws + 1) * ws) + 2) * c;
        assert!(win[pad..pad + c].iter().all(|v| *v == 0.0));
        assert_eq!(window_unpartition(&win, ws, (hp, wp), (h, w), c), x);
    }

    #[test]
    fn max_pool_picks_window_maxima() {
        let (b, h, w, c) = (1, 5, 4, 2);
        let x = seq(b * h * w * c);
        let p = max_pool_2x2(&x, b, h, w, c);
        assert_eq!(p.len(), 2 * 2 * c);
        for (y, xo, ch) in [(0, 0, 0), (1, 1, 1), (0, 1, 0)] {
            let m = [(0, 0), (0, 1), (1, 0), (1, 1)]
                .iter()
                .map(|(dy, dx)| x[((2 * y + dy) * w + 2 * xo + dx) * c + ch])
                .fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(p[(y * 2 + xo) * c + ch], m);
        }
    }

    #[test]
    fn layer_norm_rows_normalises() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, -1.0, -1.0, 1.0, 1.0];
        layer_norm_rows(&mut x, &[1.0; 4], &[0.5; 4], 0.0);
        // row 0: mean 2.5, var 1.25
        let s = 1.25f32.sqrt();
        for (v, e) in x[..4].iter().zip([-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s]) {
            assert!((v - (e + 0.5)).abs() < 1e-6, "{v} vs {}", e + 0.5);
        }
        assert_eq!(&x[4..], &[-0.5, -0.5, 1.5, 1.5]);
    }
}
