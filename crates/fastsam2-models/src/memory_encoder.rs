//! SAM 2's memory encoder (`sam2/modeling/memory_encoder.py`): mask downsampler, fusion of
//! the frame features with the mask (ConvNeXt blocks), projection to the memory width, and
//! the memory's sine position encoding.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Gelu, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::common::LayerNorm2d;
use crate::kernels::gelu;
use crate::kernels::host::layer_norm_rows;
use crate::position_encoding::sine_2d_tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryEncoderConfig {
    /// Memory width (`out_dim`, 64 officially).
    pub out_dim: usize,
    /// Width of the frame features (`in_dim`, the FPN d_model).
    pub in_dim: usize,
    /// Fuser ConvNeXt blocks.
    pub fuser_layers: usize,
}

impl MemoryEncoderConfig {
    pub fn sam2() -> Self {
        Self {
            out_dim: 64,
            in_dim: 256,
            fuser_layers: 2,
        }
    }

    pub fn init(&self, device: &Device) -> MemoryEncoder {
        let d = self.in_dim;
        // MaskDownSampler(kernel 3, stride 2, padding 1, total_stride 16): 4 x (conv, LN2d, GELU) + 1x1 conv
        let mut encoder = Vec::new();
        let mut cin = 1;
        for _ in 0..4 {
            let cout = cin * 4;
            encoder.push(DownLayer::Conv(
                Conv2dConfig::new([cin, cout], [3, 3])
                    .with_stride([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device),
            ));
            encoder.push(DownLayer::Norm(LayerNorm2d::new(cout, 1e-6, device)));
            encoder.push(DownLayer::Act(Gelu::default()));
            cin = cout;
        }
        encoder.push(DownLayer::Conv(
            Conv2dConfig::new([cin, d], [1, 1]).init(device),
        ));
        MemoryEncoder {
            mask_downsampler: MaskDownSampler { encoder },
            pix_feat_proj: Conv2dConfig::new([d, d], [1, 1]).init(device),
            fuser: Fuser {
                layers: (0..self.fuser_layers)
                    .map(|_| CxBlock {
                        dwconv: Conv2dConfig::new([d, d], [7, 7])
                            .with_padding(PaddingConfig2d::Explicit(3, 3, 3, 3))
                            .with_groups(d)
                            .init(device),
                        norm: LayerNorm2d::new(d, 1e-6, device),
                        pwconv1: LinearConfig::new(d, 4 * d).init(device),
                        pwconv2: LinearConfig::new(4 * d, d).init(device),
                        gamma: Param::from_tensor(Tensor::ones([d], device) * 1e-6),
                    })
                    .collect(),
            },
            out_proj: (self.out_dim != d)
                .then(|| Conv2dConfig::new([d, self.out_dim], [1, 1]).init(device)),
            out_dim: self.out_dim,
        }
    }
}

#[derive(Module, Debug)]
pub enum DownLayer {
    Conv(Conv2d),
    Norm(LayerNorm2d),
    Act(Gelu),
}

#[derive(Module, Debug)]
pub struct MaskDownSampler {
    pub encoder: Vec<DownLayer>,
}

impl MaskDownSampler {
    pub fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        if crate::kernels::host_fast_path(&x.device())
            && let Some(y) = self.forward_host(x.clone())
        {
            return y;
        }
        for l in &self.encoder {
            x = match l {
                DownLayer::Conv(c) => c.forward(x),
                DownLayer::Norm(n) => n.forward(x),
                DownLayer::Act(_) => gelu(x),
            };
        }
        x
    }
}

impl MaskDownSampler {
    /// The same chain on channels-last host buffers, each convolution as im2col + one GEMM
    /// per row block (burn's convolutions ran at ~10% of the GEMM rate on these few-channel,
    /// large maps: ~60 ms of the ~1 GFLOP per object and frame). `None` for convolutions other
    /// than ungrouped, undilated, explicitly padded ones.
    fn forward_host(&self, x: Tensor<4>) -> Option<Tensor<4>> {
        let device = x.device();
        let (cur, [b, h, w, c]) = self.forward_host_nhwc(x)?;
        let out = nhwc_to_nchw(&cur, b, c, h * w);
        Some(crate::kernels::from_host(out, [b, c, h, w], &device))
    }

    /// [`Self::forward_host`] without the final transpose: ([b, h, w, c] buffer, dims).
    fn forward_host_nhwc(&self, x: Tensor<4>) -> Option<(Vec<f32>, [usize; 4])> {
        use crate::kernels::{simd::gelu_inplace, to_host};
        let [b, c0, h0, w0] = x.dims();
        let (xh, _) = to_host(x);
        // the first few-channel layers on row-interleaved planes (a GEMM or an im2col row
        // per pixel is mostly overhead at 1-16 channels), the rest channels-last
        let (rows, c, h, w, done) = self.planar_prefix(xh, b, c0, h0, w0);
        let mut cur = if done == 0 {
            nchw_to_nhwc(&rows, b, c, h * w)
        } else {
            nhcw_to_nhwc(&rows, c, w)
        };
        let (mut c, mut h, mut w) = (c, h, w);
        for l in &self.encoder[done..] {
            match l {
                DownLayer::Conv(conv) => {
                    let (y, ho, wo, co) = conv_nhwc(&cur, b, h, w, c, conv)?;
                    (cur, h, w, c) = (y, ho, wo, co);
                }
                DownLayer::Norm(n) => {
                    let (wt, _) = to_host(n.weight.val());
                    let (bs, _) = to_host(n.bias.val());
                    layer_norm_rows(&mut cur, &wt, &bs, n.eps as f32);
                }
                DownLayer::Act(_) => gelu_inplace(&mut cur),
            }
        }
        Some((cur, [b, h, w, c]))
    }
}

/// [b, c, hw] -> [b, hw, c].
fn nchw_to_nhwc(x: &[f32], b: usize, c: usize, hw: usize) -> Vec<f32> {
    if c == 1 {
        return x.to_vec();
    }
    let mut out = vec![0f32; x.len()];
    for bi in 0..b {
        for ch in 0..c {
            for p in 0..hw {
                out[(bi * hw + p) * c + ch] = x[(bi * c + ch) * hw + p];
            }
        }
    }
    out
}

impl MaskDownSampler {
    /// The leading `(conv 3x3 stride 2 padding 1, LayerNorm2d, GELU)` triples with at most 16
    /// output channels, on `[b, h, c, w]` buffers (each image row's channels as contiguous
    /// planes; the input mask, `c = 1`, is already one): every output row is its own task, and
    /// the convolution, the norm across channels and the GELU all run along the row
    /// (`down_row`). Returns (buffer, c, h, w, layers consumed); with no layer consumed `x`
    /// comes back as given (`[b, c, h, w]`).
    fn planar_prefix(
        &self,
        mut x: Vec<f32>,
        b: usize,
        mut c: usize,
        mut h: usize,
        mut w: usize,
    ) -> (Vec<f32>, usize, usize, usize, usize) {
        use crate::kernels::to_host;
        use rayon::prelude::*;
        let mut done = 0;
        while let [
            DownLayer::Conv(conv),
            DownLayer::Norm(norm),
            DownLayer::Act(_),
            ..,
        ] = &self.encoder[done..]
        {
            let [co, ci, kh, kw] = conv.weight.dims();
            // [b, c, h, w] is row-interleaved only for one channel
            if (done == 0 && c > 1)
                || ci != c
                || co > 16
                || [kh, kw] != [3, 3]
                || conv.stride != [2, 2]
                || conv.dilation != [1, 1]
                || conv.groups != 1
                || conv.padding != PaddingConfig2d::Explicit(1, 1, 1, 1)
                || h < 2
                || w < 2
            {
                break;
            }
            let (ho, wo) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
            let (wt, _) = to_host(conv.weight.val()); // [co, ci, 3, 3]
            let bias = conv
                .bias
                .as_ref()
                .map_or_else(|| vec![0f32; co], |p| to_host(p.val()).0);
            let (nw, _) = to_host(norm.weight.val());
            let (nb, _) = to_host(norm.bias.val());
            let eps = norm.eps as f32;
            let mut out = vec![0f32; b * ho * co * wo];
            out.par_chunks_mut(co * wo)
                .enumerate()
                .for_each(|(r, dst)| {
                    let (bi, oy) = (r / ho, r % ho);
                    let img = &x[bi * h * c * w..(bi + 1) * h * c * w];
                    down_row(img, c, h, w, oy, &wt, &bias, &nw, &nb, eps, dst);
                });
            (x, c, h, w) = (out, co, ho, wo);
            done += 3;
        }
        (x, c, h, w, done)
    }
}

/// One output row of a (conv 3x3 stride 2 padding 1, LayerNorm2d, GELU) triple: `img` is one
/// image `[h, ci, w]`, `dst` the row `[co, wo]`. Each input row is split into the columns the
/// three kernel columns read (odd to the left, even, odd to the right), so that every
/// multiply-add runs along contiguous output columns.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn down_row_body(
    img: &[f32],
    ci: usize,
    h: usize,
    w: usize,
    oy: usize,
    wt: &[f32],
    bias: &[f32],
    nw: &[f32],
    nb: &[f32],
    eps: f32,
    dst: &mut [f32],
) {
    let co = bias.len();
    let wo = dst.len() / co;
    let mut lanes = vec![0f32; 3 * wo];
    for (o, row) in dst.chunks_exact_mut(wo).enumerate() {
        row.fill(bias[o]);
    }
    for ky in 0..3 {
        let Some(iy) = (2 * oy + ky).checked_sub(1).filter(|&iy| iy < h) else {
            continue;
        };
        for c in 0..ci {
            let src = &img[(iy * ci + c) * w..(iy * ci + c + 1) * w];
            let (left, rest) = lanes.split_at_mut(wo);
            let (mid, right) = rest.split_at_mut(wo);
            for ox in 0..wo {
                left[ox] = if ox > 0 { src[2 * ox - 1] } else { 0.0 };
                mid[ox] = src[2 * ox];
                right[ox] = if 2 * ox + 1 < w { src[2 * ox + 1] } else { 0.0 };
            }
            for (o, row) in dst.chunks_exact_mut(wo).enumerate() {
                let k = &wt[((o * ci + c) * 3 + ky) * 3..][..3];
                for (((a, l), m), r) in row.iter_mut().zip(&*left).zip(&*mid).zip(&*right) {
                    *a += k[0] * l + k[1] * m + k[2] * r;
                }
            }
        }
    }
    // LayerNorm2d across the channels of every column (biased variance), then GELU
    let (mean, var) = lanes.split_at_mut(wo);
    let var = &mut var[..wo];
    mean.fill(0.0);
    var.fill(0.0);
    for row in dst.chunks_exact(wo) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    let inv_c = 1.0 / co as f32;
    for m in mean.iter_mut() {
        *m *= inv_c;
    }
    for row in dst.chunks_exact(wo) {
        for ((s, v), m) in var.iter_mut().zip(row).zip(&*mean) {
            *s += (v - m) * (v - m);
        }
    }
    for s in var.iter_mut() {
        *s = 1.0 / (*s * inv_c + eps).sqrt();
    }
    for (o, row) in dst.chunks_exact_mut(wo).enumerate() {
        for ((v, m), inv) in row.iter_mut().zip(&*mean).zip(&*var) {
            let y = (*v - m) * inv * nw[o] + nb[o];
            *v = 0.5 * y * (1.0 + crate::kernels::simd::erf(y * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

crate::kernels::simd::dispatch!(down_row, down_row_body, (img: &[f32], ci: usize, h: usize, w: usize, oy: usize, wt: &[f32], bias: &[f32], nw: &[f32], nb: &[f32], eps: f32, dst: &mut [f32]));

/// [.., c, w] rows -> [.., w, c].
fn nhcw_to_nhwc(x: &[f32], c: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for (src, dst) in x.chunks_exact(c * w).zip(out.chunks_exact_mut(w * c)) {
        for ch in 0..c {
            for p in 0..w {
                dst[p * c + ch] = src[ch * w + p];
            }
        }
    }
    out
}

/// [b, hw, c] -> [b, c, hw].
fn nhwc_to_nchw(x: &[f32], b: usize, c: usize, hw: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for bi in 0..b {
        for p in 0..hw {
            for ch in 0..c {
                out[(bi * c + ch) * hw + p] = x[(bi * hw + p) * c + ch];
            }
        }
    }
    out
}

/// `conv` on a channels-last [b, h, w, ci] buffer: im2col rows in (ky, kx, ci) order, then
/// GEMM with the weight; returns ([b, ho, wo, co], ho, wo, co).
fn conv_nhwc(
    x: &[f32],
    b: usize,
    h: usize,
    w: usize,
    ci: usize,
    conv: &Conv2d,
) -> Option<(Vec<f32>, usize, usize, usize)> {
    use crate::kernels::attention::{SendPtr, gemm_f32};
    use crate::kernels::to_host;
    use rayon::prelude::*;
    let (pt, pl, pb, pr) = match conv.padding {
        PaddingConfig2d::Explicit(t, l, b, r) => (t, l, b, r),
        PaddingConfig2d::Valid => (0, 0, 0, 0),
        PaddingConfig2d::Same => return None,
    };
    let [co, wci, kh, kw] = conv.weight.dims();
    let [sh, sw] = conv.stride;
    if conv.groups != 1
        || conv.dilation != [1, 1]
        || wci != ci
        || h + pt + pb < kh
        || w + pl + pr < kw
    {
        return None;
    }
    let ho = (h + pt + pb - kh) / sh + 1;
    let wo = (w + pl + pr - kw) / sw + 1;
    let k = kh * kw * ci;
    let (wt, _) = to_host(conv.weight.val()); // [co, ci, kh, kw]
    // rhs [k, co] in (ky, kx, ci) row order
    let mut rhs = vec![0f32; k * co];
    for o in 0..co {
        for c in 0..ci {
            for ky in 0..kh {
                for kx in 0..kw {
                    rhs[((ky * kw + kx) * ci + c) * co + o] =
                        wt[((o * ci + c) * kh + ky) * kw + kx];
                }
            }
        }
    }
    let bias = conv.bias.as_ref().map(|p| to_host(p.val()).0);
    let direct = kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt + pl + pb + pr == 0;
    // few taps x channels (a 1-channel layer that `planar_prefix` did not take): a GEMM with
    // k = 9, n = 4 is mostly overhead; gather each row's taps and multiply in place
    let small = !direct && k * co <= 256;
    let rows = b * ho * wo;
    let mut out = vec![0f32; rows * co];
    let out_ptr = SendPtr(out.as_mut_ptr());
    const RB: usize = 256;
    let gather = |r: usize, dst: &mut [f32]| {
        let (bi, oy, ox) = (r / (ho * wo), (r / wo) % ho, r % wo);
        for ky in 0..kh {
            let iy = (oy * sh + ky) as isize - pt as isize;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            for kx in 0..kw {
                let ix = (ox * sw + kx) as isize - pl as isize;
                if ix < 0 || ix >= w as isize {
                    continue;
                }
                let src = ((bi * h + iy as usize) * w + ix as usize) * ci;
                dst[(ky * kw + kx) * ci..(ky * kw + kx + 1) * ci]
                    .copy_from_slice(&x[src..src + ci]);
            }
        }
    };
    if small {
        out.par_chunks_mut(co * 1024)
            .enumerate()
            .for_each(|(blk, chunk)| {
                let mut col = vec![0f32; k];
                for (i, row) in chunk.chunks_exact_mut(co).enumerate() {
                    col.fill(0.0);
                    gather(blk * 1024 + i, &mut col);
                    match &bias {
                        Some(bs) => row.copy_from_slice(bs),
                        None => row.fill(0.0),
                    }
                    for (j, cv) in col.iter().enumerate() {
                        for (o, v) in row.iter_mut().enumerate() {
                            *v += cv * rhs[j * co + o];
                        }
                    }
                }
            });
        return Some((out, ho, wo, co));
    }
    // AMX tiles (bf16x3) for the wide layers (SAM 2's last down-sampling conv: 4096 x 576 x
    // 256 per mask, ~5 ms in f32 on 2 cores)
    let tiles = (crate::kernels::amx::available() && k >= 128 && co >= 128)
        .then(|| crate::kernels::amx::packed_weights(&rhs, k, co));
    (0..rows.div_ceil(RB)).into_par_iter().for_each(|blk| {
        let r0 = blk * RB;
        let m = RB.min(rows - r0);
        let col: std::borrow::Cow<'_, [f32]> = if direct {
            std::borrow::Cow::Borrowed(&x[r0 * k..(r0 + m) * k])
        } else {
            let mut col = vec![0f32; m * k];
            for (i, dst) in col.chunks_exact_mut(k).enumerate() {
                gather(r0 + i, dst);
            }
            std::borrow::Cow::Owned(col)
        };
        // SAFETY: output rows r0..r0 + m belong to this block; col is [m, k], rhs [k, co].
        let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(r0 * co), m * co) };
        if let Some(bs) = &bias {
            for row in dst.chunks_exact_mut(co) {
                row.copy_from_slice(bs);
            }
        }
        if let Some(p) = &tiles {
            crate::kernels::amx::gemm_serial(m, &col, k, p, dst, co, 1.0, bias.is_some());
            return;
        }
        unsafe {
            gemm_f32(
                m,
                co,
                k,
                dst.as_mut_ptr(),
                co,
                bias.is_some(),
                col.as_ptr(),
                k as isize,
                1,
                rhs.as_ptr(),
                co as isize,
                1,
                1.0,
            )
        };
    });
    Some((out, ho, wo, co))
}

/// ConvNeXt block (depthwise conv, LN, pointwise MLP, layer scale, residual).
#[derive(Module, Debug)]
pub struct CxBlock {
    pub dwconv: Conv2d,
    pub norm: LayerNorm2d,
    pub pwconv1: Linear,
    pub pwconv2: Linear,
    pub gamma: Param<Tensor<1>>,
}

impl CxBlock {
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let x = self.norm.forward(self.dwconv.forward(input.clone()));
        if crate::kernels::host_fast_path(&input.device()) {
            return self.forward_pointwise_host(input, x);
        }
        let x = x.permute([0, 2, 3, 1]);
        let x = self.pwconv2.forward(gelu(self.pwconv1.forward(x)));
        let x = x * self.gamma.val().unsqueeze::<4>();
        input + x.permute([0, 3, 1, 2])
    }
}

impl CxBlock {
    /// `pwconv2(gelu(pwconv1(.)))` on the host.
    fn mlp(&self) -> crate::kernels::mlp::HostMlp {
        use crate::kernels::mlp::{Act, HostMlp};
        HostMlp::new(&self.pwconv1, &self.pwconv2, Act::Gelu)
    }

    /// The pointwise half on host buffers: `input + gamma * pwconv2(gelu(pwconv1(x)))`, the
    /// MLP reading and writing the channels-first maps through strides.
    fn forward_pointwise_host(&self, input: Tensor<4>, x: Tensor<4>) -> Tensor<4> {
        use crate::kernels::{from_host, to_host};
        let device = input.device();
        let [b, c, h, w] = x.dims();
        let hw = h * w;
        let y = self.mlp().channels_first(&to_host(x).0, b, hw);
        let (gamma, _) = to_host(self.gamma.val());
        let (mut out, _) = to_host(input);
        for (i, (dst, src)) in out.chunks_exact_mut(hw).zip(y.chunks_exact(hw)).enumerate() {
            let g = gamma[i % c];
            for (v, yv) in dst.iter_mut().zip(src) {
                *v += yv * g;
            }
        }
        from_host(out, [b, c, h, w], &device)
    }
}

#[derive(Module, Debug)]
pub struct Fuser {
    pub layers: Vec<CxBlock>,
}

#[derive(Module, Debug)]
pub struct MemoryEncoder {
    pub mask_downsampler: MaskDownSampler,
    pub pix_feat_proj: Conv2d,
    pub fuser: Fuser,
    pub out_proj: Option<Conv2d>,
    pub out_dim: usize,
}

impl MemoryEncoder {
    /// pix_feat: [B, C, 64, 64] or [1, C, 64, 64] (shared); masks: [B, 1, 1024, 1024] (already mapped through the
    /// sigmoid and scale/bias). Returns (features [B, out, 64, 64], pos [B, out, 64, 64]).
    pub fn forward(&self, pix_feat: Tensor<4>, masks: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        if crate::kernels::host_fast_path(&masks.device())
            && let Some(x) = self.forward_host(pix_feat.clone(), masks.clone())
        {
            let [b, c, h, w] = x.dims();
            let pos = sine_2d_tensor(self.out_dim, h, w, &x.device()).expand([b, c, h, w]);
            return (x, pos);
        }
        let m = self.mask_downsampler.forward(masks);
        let p = self.pix_feat_proj.forward(pix_feat);
        // one feature row may serve every mask (the same frame)
        let p = if p.dims()[0] != m.dims()[0] {
            p.expand(m.dims())
        } else {
            p
        };
        let mut x = p + m;
        for l in &self.fuser.layers {
            x = l.forward(x);
        }
        if let Some(p) = &self.out_proj {
            x = p.forward(x);
        }
        let [b, c, h, w] = x.dims();
        let pos = sine_2d_tensor(self.out_dim, h, w, &x.device()).expand([b, c, h, w]);
        (x, pos)
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::tensor::{Device, Distribution, Tensor};

    use super::*;

    #[test]
    fn host_mask_downsampler_equals_burn_ops() {
        // 32 channels (f32 products) and SAM 2's 256 (the last conv, 576 x 256, on AMX tiles
        // where they exist)
        for in_dim in [32, 256] {
            mask_downsampler_case(in_dim);
        }
    }

    fn mask_downsampler_case(in_dim: usize) {
        let device = Device::flex();
        let mut m = MemoryEncoderConfig {
            out_dim: 16,
            in_dim,
            fuser_layers: 1,
        }
        .init(&device)
        .mask_downsampler;
        // random weights and norms (the defaults are too regular to catch layout mistakes)
        for l in &mut m.encoder {
            match l {
                DownLayer::Conv(c) => {
                    let d = c.weight.val().dims();
                    c.weight = Param::from_tensor(Tensor::random(
                        d,
                        Distribution::Normal(0.0, 0.5),
                        &device,
                    ));
                    c.bias = Some(Param::from_tensor(Tensor::random(
                        [d[0]],
                        Distribution::Normal(0.0, 0.5),
                        &device,
                    )));
                }
                DownLayer::Norm(n) => {
                    let d = n.weight.val().dims();
                    n.weight = Param::from_tensor(Tensor::random(
                        d,
                        Distribution::Normal(1.0, 0.3),
                        &device,
                    ));
                    n.bias = Param::from_tensor(Tensor::random(
                        d,
                        Distribution::Normal(0.0, 0.3),
                        &device,
                    ));
                }
                DownLayer::Act(_) => {}
            }
        }
        // two masks of 48 x 81 (not square, odd width: the last stride-2 column reads the
        // padding)
        let x = Tensor::<4>::random([2, 1, 48, 81], Distribution::Normal(0.0, 1.0), &device);
        let host = m.forward_host(x.clone()).expect("explicit padding");
        let mut y = x;
        for l in &m.encoder {
            y = match l {
                DownLayer::Conv(c) => c.forward(y),
                DownLayer::Norm(n) => n.forward(y),
                DownLayer::Act(_) => burn::tensor::activation::gelu(y),
            };
        }
        assert_eq!(host.dims(), y.dims());
        // relative to the output's scale (bf16x3 tile products: ~1e-5 of it)
        let scale: f32 = y.clone().abs().max().into_scalar();
        let d: f32 = (host - y).abs().max().into_scalar();
        assert!(
            d < 1e-4 + 1e-5 * scale,
            "{in_dim} channels: max diff {d} (scale {scale})"
        );
    }

    #[test]
    fn host_memory_encoder_equals_burn_ops() {
        let device = Device::flex();
        let mut m = MemoryEncoderConfig {
            out_dim: 8,
            in_dim: 16,
            fuser_layers: 2,
        }
        .init(&device);
        let rnd = |d: [usize; 4], s: f64| {
            Param::from_tensor(Tensor::<4>::random(
                d,
                Distribution::Normal(0.0, s),
                &device,
            ))
        };
        let rnd1 = |n: usize, mean: f64| {
            Param::from_tensor(Tensor::<1>::random(
                [n],
                Distribution::Normal(mean, 0.3),
                &device,
            ))
        };
        m.pix_feat_proj.weight = rnd(m.pix_feat_proj.weight.val().dims(), 0.3);
        m.pix_feat_proj.bias = Some(rnd1(16, 0.0));
        for l in &mut m.fuser.layers {
            l.dwconv.weight = rnd(l.dwconv.weight.val().dims(), 0.3);
            l.dwconv.bias = Some(rnd1(16, 0.0));
            l.norm.weight = rnd1(16, 1.0);
            l.norm.bias = rnd1(16, 0.0);
            l.gamma = rnd1(16, 0.5);
        }
        let op = m.out_proj.as_mut().expect("16 -> 8");
        op.weight = rnd(op.weight.val().dims(), 0.3);
        // masks of 3 objects on one frame's features (shared row), 64 x 96 -> 4 x 6 grid
        let feat = Tensor::<4>::random([1, 16, 4, 6], Distribution::Normal(0.0, 1.0), &device);
        let masks = Tensor::<4>::random([3, 1, 64, 96], Distribution::Normal(0.0, 2.0), &device);
        let host = m
            .forward_host(feat.clone(), masks.clone())
            .expect("SAM 2 layout");
        let md = m.mask_downsampler.forward(masks);
        let mut y = m.pix_feat_proj.forward(feat.expand([3, 16, 4, 6])) + md;
        for l in &m.fuser.layers {
            let x = l
                .norm
                .forward(l.dwconv.forward(y.clone()))
                .permute([0, 2, 3, 1]);
            let x = l
                .pwconv2
                .forward(burn::tensor::activation::gelu(l.pwconv1.forward(x)));
            let x = x * l.gamma.val().unsqueeze::<4>();
            y = y + x.permute([0, 3, 1, 2]);
        }
        let y = m.out_proj.as_ref().unwrap().forward(y);
        assert_eq!(host.dims(), y.dims());
        let d: f32 = (host - y).abs().max().into_scalar();
        assert!(d < 1e-4, "max diff {d}");
    }
}

impl MemoryEncoder {
    /// [`Self::forward`]'s features on channels-last host buffers (one GEMM per 1x1
    /// convolution, a vectorised depthwise convolution, the ConvNeXt MLPs with `kernels::mlp`);
    /// `pix_feat` may have one row for every mask (the same frame). `None` for layer shapes
    /// other than SAM 2's (then the burn ops run).
    fn forward_host(&self, pix_feat: Tensor<4>, masks: Tensor<4>) -> Option<Tensor<4>> {
        use crate::kernels::attention::gemm_f32;
        use crate::kernels::{from_host, to_host};
        let device = masks.device();
        let [bp, cin, hp, wp] = pix_feat.dims();
        let b = masks.dims()[0];
        let pointwise = |c: &Conv2d| {
            c.kernel_size == [1, 1]
                && c.stride == [1, 1]
                && c.groups == 1
                && matches!(
                    c.padding,
                    PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0)
                )
        };
        let dw_ok = self.fuser.layers.iter().all(|l| {
            let [kh, kw] = l.dwconv.kernel_size;
            l.dwconv.groups == cin
                && kh == kw
                && kh % 2 == 1
                && l.dwconv.stride == [1, 1]
                && l.dwconv.dilation == [1, 1]
                && l.dwconv.padding == PaddingConfig2d::Explicit(kh / 2, kh / 2, kh / 2, kh / 2)
        });
        if !(bp == 1 || bp == b)
            || !pointwise(&self.pix_feat_proj)
            || !self.out_proj.as_ref().is_none_or(pointwise)
            || !dw_ok
        {
            return None;
        }
        let (mut x, [_, h, w, c]) = self.mask_downsampler.forward_host_nhwc(masks)?;
        if (h, w, c) != (hp, wp, self.pix_feat_proj.weight.dims()[0]) {
            return None;
        }
        let hw = h * w;
        // x += pix_feat_proj(pix_feat): rows read from the channels-first features
        let (pix, _) = to_host(pix_feat);
        let (wp_, _) = to_host(self.pix_feat_proj.weight.val()); // [c, cin, 1, 1]
        let mut proj = vec![0f32; bp * hw * c];
        if let Some(bias) = &self.pix_feat_proj.bias {
            let (bs, _) = to_host(bias.val());
            for row in proj.chunks_exact_mut(c) {
                row.copy_from_slice(&bs);
            }
        }
        for bi in 0..bp {
            // SAFETY: [hw, cin] rows of item bi (strided), weight [c, cin], proj [hw, c].
            unsafe {
                gemm_f32(
                    hw,
                    c,
                    cin,
                    proj[bi * hw * c..].as_mut_ptr(),
                    c,
                    self.pix_feat_proj.bias.is_some(),
                    pix[bi * cin * hw..].as_ptr(),
                    1,
                    hw as isize,
                    wp_.as_ptr(),
                    1,
                    cin as isize,
                    1.0,
                )
            };
        }
        for (bi, xb) in x.chunks_exact_mut(hw * c).enumerate() {
            let pb = &proj[(bi % bp) * hw * c..(bi % bp + 1) * hw * c];
            for (v, p) in xb.iter_mut().zip(pb) {
                *v += p;
            }
        }
        for l in &self.fuser.layers {
            let mut y = depthwise_nhwc(&x, b, h, w, c, &l.dwconv);
            let (nw, _) = to_host(l.norm.weight.val());
            let (nb, _) = to_host(l.norm.bias.val());
            layer_norm_rows(&mut y, &nw, &nb, l.norm.eps as f32);
            let z = l.mlp().rows(&y, b * hw);
            let (gamma, _) = to_host(l.gamma.val());
            for (xr, zr) in x.chunks_exact_mut(c).zip(z.chunks_exact(c)) {
                for ((v, zv), g) in xr.iter_mut().zip(zr).zip(&gamma) {
                    *v += zv * g;
                }
            }
        }
        let Some(op) = &self.out_proj else {
            return Some(from_host(nhwc_to_nchw(&x, b, c, hw), [b, c, h, w], &device));
        };
        // out_proj straight into channels-first [b, co, hw]
        let (wo, [co, _, _, _]) = to_host(op.weight.val());
        let mut out = vec![0f32; b * co * hw];
        if let Some(bias) = &op.bias {
            let (bs, _) = to_host(bias.val());
            for (i, plane) in out.chunks_exact_mut(hw).enumerate() {
                plane.fill(bs[i % co]);
            }
        }
        for bi in 0..b {
            // SAFETY: rows of item bi [hw, c], weight [co, c], dst planes [co, hw] of item bi.
            unsafe {
                gemm::gemm(
                    hw,
                    co,
                    c,
                    out[bi * co * hw..].as_mut_ptr(),
                    hw as isize,
                    1,
                    op.bias.is_some(),
                    x[bi * hw * c..].as_ptr(),
                    1,
                    c as isize,
                    wo.as_ptr(),
                    c as isize,
                    1,
                    if op.bias.is_some() { 1.0 } else { 0.0 },
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(0),
                )
            };
        }
        Some(from_host(out, [b, co, h, w], &device))
    }
}

/// Depthwise `conv` (odd square kernel, same padding) on channels-last [b, h, w, c].
fn depthwise_nhwc(x: &[f32], b: usize, h: usize, w: usize, c: usize, conv: &Conv2d) -> Vec<f32> {
    use crate::kernels::to_host;
    use rayon::prelude::*;
    let k = conv.kernel_size[0];
    let r = k / 2;
    assert_eq!(x.len(), b * h * w * c, "depthwise_nhwc: buffer size");
    let (wt, _) = to_host(conv.weight.val()); // [c, 1, k, k]
    let mut taps = vec![0f32; k * k * c]; // [tap][c]
    for ch in 0..c {
        for t in 0..k * k {
            taps[t * c + ch] = wt[ch * k * k + t];
        }
    }
    let bias = conv
        .bias
        .as_ref()
        .map(|p| to_host(p.val()).0)
        .unwrap_or_else(|| vec![0f32; c]);
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(w * c)
        .enumerate()
        .for_each(|(row, dst)| {
            let (bi, y) = (row / h, row % h);
            depthwise_row(x, &taps, &bias, bi, y, h, w, c, k, r, dst);
        });
    out
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn depthwise_row_body(
    x: &[f32],
    taps: &[f32],
    bias: &[f32],
    bi: usize,
    y: usize,
    h: usize,
    w: usize,
    c: usize,
    k: usize,
    r: usize,
    dst: &mut [f32],
) {
    for (ox, acc) in dst.chunks_exact_mut(c).enumerate() {
        acc.copy_from_slice(bias);
        for ky in 0..k {
            let iy = y as isize + ky as isize - r as isize;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            for kx in 0..k {
                let ix = ox as isize + kx as isize - r as isize;
                if ix < 0 || ix >= w as isize {
                    continue;
                }
                let src = ((bi * h + iy as usize) * w + ix as usize) * c;
                let t = &taps[(ky * k + kx) * c..(ky * k + kx + 1) * c];
                for ((a, xv), tv) in acc.iter_mut().zip(&x[src..src + c]).zip(t) {
                    *a += xv * tv;
                }
            }
        }
    }
}

crate::kernels::simd::dispatch!(depthwise_row, depthwise_row_body, (x: &[f32], taps: &[f32], bias: &[f32], bi: usize, y: usize, h: usize, w: usize, c: usize, k: usize, r: usize, dst: &mut [f32]));
