//! SAM's mask-decoder output path on the host: two stride-2 transposed convolutions (as
//! matmuls + pixel shuffles) with LayerNorm2d and GELU between them, SAM 2's high-resolution
//! skip features, and the hypernetwork product, in channels-last buffers with no layout
//! round trips through the tensor library.

use rayon::prelude::*;

use super::host::matmul;
use super::simd::{dispatch, erf};

/// Weights of `output_upscaling` (PyTorch layouts, row-major).
pub struct UpscaleWeights<'a> {
    /// ConvTranspose2d 1: [c_in, c1, 2, 2], bias [c1].
    pub w1: &'a [f32],
    pub b1: &'a [f32],
    /// LayerNorm2d: weight, bias [c1], eps.
    pub ln_w: &'a [f32],
    pub ln_b: &'a [f32],
    pub eps: f32,
    /// ConvTranspose2d 2: [c1, c2, 2, 2], bias [c2].
    pub w2: &'a [f32],
    pub b2: &'a [f32],
}

/// Pixel shuffle of a stride-2 / 2x2 transposed conv output: `y` [h*w, c*4] (channel-major
/// within a pixel: c, i, j) -> [2h, 2w, c] channels-last, plus bias and optional skip.
fn shuffle(
    y: &[f32],
    h: usize,
    w: usize,
    c: usize,
    bias: &[f32],
    skip: Option<&[f32]>,
) -> Vec<f32> {
    let mut out = vec![0f32; 4 * h * w * c];
    out.par_chunks_mut(2 * w * c)
        .enumerate()
        .for_each(|(oy, row)| {
            let (y0, i) = (oy / 2, oy % 2);
            for ox in 0..2 * w {
                let (x0, j) = (ox / 2, ox % 2);
                let src = &y[(y0 * w + x0) * c * 4..(y0 * w + x0 + 1) * c * 4];
                let dst = &mut row[ox * c..(ox + 1) * c];
                for ch in 0..c {
                    dst[ch] = src[ch * 4 + i * 2 + j] + bias[ch];
                }
                if let Some(s) = skip {
                    let s = &s[(oy * 2 * w + ox) * c..(oy * 2 * w + ox + 1) * c];
                    for (d, v) in dst.iter_mut().zip(s) {
                        *d += v;
                    }
                }
            }
        });
    out
}

#[inline(always)]
fn gelu1(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn ln_gelu_body(px: &mut [f32], c: usize, w: &[f32], b: &[f32], eps: f32) {
    for p in px.chunks_exact_mut(c) {
        let mean = p.iter().sum::<f32>() / c as f32;
        let var = p.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), bb) in p.iter_mut().zip(w).zip(b) {
            *v = gelu1((*v - mean) * inv * g + bb);
        }
    }
}

#[inline(always)]
fn gelu_body(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = gelu1(*x);
    }
}

dispatch!(ln_gelu_chunk, ln_gelu_body, (px: &mut [f32], c: usize, w: &[f32], b: &[f32], eps: f32));
dispatch!(gelu_chunk, gelu_body, (v: &mut [f32]));

/// `a [m, k] @ w [k, n]` for a weight matrix `w`: on AMX tiles (bf16x3, the weights packed
/// once per model) where they apply and the product is wide enough, else the f32 GEMM
/// (SAM's two transposed convolutions: 4096 x 256 x 256 and 16384 x 64 x 128, ~2 ms each in
/// f32 on 2 cores).
fn product(a: &[f32], w: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
    if super::amx::available() && k >= 64 && n >= 128 && m >= 256 {
        let p = super::amx::packed_weights(w, k, n);
        let mut c = vec![0f32; m * n];
        super::amx::gemm(m, a, k, &p, &mut c, n, 1.0, false);
        return c;
    }
    matmul(a, w, (m, k, n))
}

/// One prompt: `src` channels-last [h*w, c_in]; `skip1` [2h*2w, c1] and `skip0` [4h*4w, c2]
/// (SAM 2, channels-last); `hyper` [k, c2]. Returns the k mask logits [k, 4h*4w].
#[allow(clippy::too_many_arguments)]
pub fn upscale_and_masks(
    src: &[f32],
    h: usize,
    w: usize,
    c_in: usize,
    wt: &UpscaleWeights<'_>,
    skip1: Option<&[f32]>,
    skip0: Option<&[f32]>,
    hyper: &[f32],
    k: usize,
) -> Vec<f32> {
    let c1 = wt.b1.len();
    let c2 = wt.b2.len();
    assert!(
        src.len() == h * w * c_in
            && wt.w1.len() == c_in * c1 * 4
            && wt.w2.len() == c1 * c2 * 4
            && hyper.len() == k * c2
    );
    let y1 = product(src, wt.w1, (h * w, c_in, c1 * 4));
    let mut z1 = shuffle(&y1, h, w, c1, wt.b1, skip1);
    z1.par_chunks_mut(c1 * 256)
        .for_each(|ch| ln_gelu_chunk(ch, c1, wt.ln_w, wt.ln_b, wt.eps));
    let y2 = product(&z1, wt.w2, (4 * h * w, c1, c2 * 4));
    let mut z2 = shuffle(&y2, 2 * h, 2 * w, c2, wt.b2, skip0);
    z2.par_chunks_mut(1 << 14).for_each(gelu_chunk);
    // masks [k, P] = hyper [k, c2] @ z2^T [c2, P]
    let p = 16 * h * w;
    let mut out = vec![0f32; k * p];
    // SAFETY: out [k, p], hyper [k, c2], z2 [p, c2] read transposed.
    unsafe {
        gemm::gemm(
            k,
            p,
            c2,
            out.as_mut_ptr(),
            1,
            p as isize,
            false,
            hyper.as_ptr(),
            1,
            c2 as isize,
            z2.as_ptr(),
            c2 as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
    out
}
