//! SAM 2's image encoder = Hiera trunk + FPN neck (`sam2/modeling/backbones/image_encoder.py`):
//! 1x1 lateral convs, nearest top-down fusion on the chosen levels, sine position encodings,
//! and `scalp` (dropping the lowest-resolution levels).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::hiera::{Hiera, HieraConfig, HostMap};
use crate::kernels::host::HostLinear;
use crate::kernels::{from_host, to_host};
use crate::position_encoding::{sine_2d, sine_2d_tensor};

fn default_top_down() -> Vec<usize> {
    vec![2, 3]
}
fn default_scalp() -> usize {
    1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FpnNeckConfig {
    pub d_model: usize,
    /// Must equal the trunk's channel list, lowest resolution first (as in the configs).
    pub backbone_channel_list: Vec<usize>,
    #[serde(default = "default_top_down")]
    pub fpn_top_down_levels: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sam2ImageEncoderConfig {
    pub trunk: HieraConfig,
    pub neck: FpnNeckConfig,
    #[serde(default = "default_scalp")]
    pub scalp: usize,
}

impl Sam2ImageEncoderConfig {
    pub fn new(trunk: HieraConfig, d_model: usize) -> Self {
        let mut list = trunk.channel_list();
        list.reverse();
        Self {
            trunk,
            neck: FpnNeckConfig {
                d_model,
                backbone_channel_list: list,
                fpn_top_down_levels: default_top_down(),
            },
            scalp: 1,
        }
    }

    pub fn init(&self, device: &Device) -> Sam2ImageEncoder {
        let convs = self
            .neck
            .backbone_channel_list
            .iter()
            .map(|&dim| LateralConv {
                conv: Conv2dConfig::new([dim, self.neck.d_model], [1, 1]).init(device),
            })
            .collect();
        Sam2ImageEncoder {
            trunk: self.trunk.init(device),
            neck: FpnNeck {
                convs,
                fpn_top_down_levels: self.neck.fpn_top_down_levels.clone(),
                d_model: self.neck.d_model,
            },
            scalp: self.scalp,
        }
    }
}

/// `nn.Sequential(conv=...)`: key `convs.<i>.conv.*`.
#[derive(Module, Debug)]
pub struct LateralConv {
    pub conv: Conv2d,
}

#[derive(Module, Debug)]
pub struct FpnNeck {
    pub convs: Vec<LateralConv>,
    pub fpn_top_down_levels: Vec<usize>,
    pub d_model: usize,
}

impl FpnNeck {
    /// Trunk levels (highest resolution first) -> (features, position encodings) per level.
    pub fn forward(&self, xs: Vec<Tensor<4>>) -> (Vec<Tensor<4>>, Vec<Tensor<4>>) {
        let n = self.convs.len() - 1;
        let mut out: Vec<Option<Tensor<4>>> = vec![None; n + 1];
        let mut prev: Option<Tensor<4>> = None;
        for i in (0..=n).rev() {
            let lateral = self.convs[n - i].conv.forward(xs[i].clone());
            let feat = match (&prev, self.fpn_top_down_levels.contains(&i)) {
                (Some(p), true) => {
                    let [_, _, h, w] = p.dims();
                    let up = interpolate(
                        p.clone(),
                        InterpolateOptions::new(InterpolateMode::Nearest)
                            .with_output_size([2 * h, 2 * w]),
                    );
                    lateral + up
                }
                _ => lateral,
            };
            prev = Some(feat.clone());
            out[i] = Some(feat);
        }
        let feats: Vec<Tensor<4>> = out
            .into_iter()
            .map(|o| o.expect("every level computed"))
            .collect();
        let pos = feats
            .iter()
            .map(|f| {
                let [b, _, h, w] = f.dims();
                sine_2d_tensor(self.d_model, h, w, &f.device()).expand([b, self.d_model, h, w])
            })
            .collect();
        (feats, pos)
    }
}

impl FpnNeck {
    /// [`Self::forward`] on the trunk's channels-last host maps: each lateral 1x1 conv as one
    /// GEMM over the pixels, the nearest 2x top-down fusion as a host pass, one transpose per
    /// level into the NCHW tensors (burn's path made each level contiguous, ran the convs,
    /// upsampled and added as separate full-map passes: ~65 ms of the neck's ~85 ms at 1024²).
    pub fn forward_host(
        &self,
        xs: Vec<HostMap>,
        device: &Device,
    ) -> (Vec<Tensor<4>>, Vec<Tensor<4>>) {
        let n = self.convs.len() - 1;
        let d = self.d_model;
        let mut out: Vec<Option<(Vec<f32>, [usize; 3])>> = vec![None; n + 1];
        let mut prev: Option<(Vec<f32>, [usize; 3])> = None;
        for (i, x) in xs.iter().enumerate().rev() {
            let lin = conv_linear(&self.convs[n - i].conv);
            let (b, h, wd) = (x.b, x.h, x.w);
            let mut feat = lin.rows(&x.v, b * h * wd);
            if let (Some((p, [_, ph, pw])), true) = (&prev, self.fpn_top_down_levels.contains(&i)) {
                add_upsampled(&mut feat, p, b, h, wd, *ph, *pw, d);
            }
            prev = Some((feat.clone(), [b, h, wd]));
            out[i] = Some((feat, [b, h, wd]));
        }
        let mut feats = Vec::new();
        let mut pos = Vec::new();
        for (v, [b, h, w]) in out.into_iter().map(|o| o.expect("every level computed")) {
            feats.push(from_host(
                channels_first(&v, b, h * w, d),
                [b, d, h, w],
                device,
            ));
            pos.push(cached_sine(d, h, w, device).expand([b, d, h, w]));
        }
        (feats, pos)
    }
}

/// A 1x1 conv's parameters as a host linear layer (`[c_in, c_out]` weights).
fn conv_linear(conv: &Conv2d) -> HostLinear {
    let (w, [d, c, _, _]) = to_host(conv.weight.val());
    let mut wt = vec![0f32; c * d];
    for o in 0..d {
        for k in 0..c {
            wt[k * d + o] = w[o * c + k];
        }
    }
    HostLinear {
        din: c,
        dout: d,
        w: wt,
        b: conv.bias.as_ref().map(|p| to_host(p.val()).0),
    }
}

/// `second(first(x))` of two linear layers as one (products in f64).
fn compose(first: &HostLinear, second: &HostLinear) -> HostLinear {
    let (c, d, e) = (first.din, first.dout, second.dout);
    assert_eq!(second.din, d, "compose: widths");
    let mut w = vec![0f32; c * e];
    for k in 0..c {
        for o in 0..e {
            w[k * e + o] = (0..d)
                .map(|j| first.w[k * d + j] as f64 * second.w[j * e + o] as f64)
                .sum::<f64>() as f32;
        }
    }
    let b = (0..e)
        .map(|o| {
            let inner = first
                .b
                .as_ref()
                .map(|b1| {
                    (0..d)
                        .map(|j| b1[j] as f64 * second.w[j * e + o] as f64)
                        .sum::<f64>()
                })
                .unwrap_or(0.0);
            (inner + second.b.as_ref().map_or(0.0, |b2| b2[o] as f64)) as f32
        })
        .collect();
    HostLinear {
        din: c,
        dout: e,
        w,
        b: Some(b),
    }
}

/// What the SAM 2 heads read from the image encoder, computed on the host: the level-`v`
/// FPN feature with its position encoding, and levels `v - 2`, `v - 1` through `post0` /
/// `post1` (`conv_s0` / `conv_s1`), each fused with its lateral conv into one 1x1 map (the
/// 256-channel high-resolution levels are never formed: 67 MB and 17 MB a frame at 1024²).
/// `None` when the trunk has no host path or a high-resolution level takes top-down input.
pub struct HostFrameLevels {
    /// `[b, d, h, w]` of level `v`, its sine encoding, and the two mapped levels.
    pub feat: Tensor<4>,
    pub pos: Tensor<4>,
    pub s0: Tensor<4>,
    pub s1: Tensor<4>,
}

impl Sam2ImageEncoder {
    pub fn forward_frame_host(
        &self,
        x: Tensor<4>,
        post0: &Conv2d,
        post1: &Conv2d,
    ) -> Option<HostFrameLevels> {
        let neck = &self.neck;
        let n = neck.convs.len();
        let v = n.checked_sub(self.scalp + 1)?;
        if v < 2
            || neck
                .fpn_top_down_levels
                .iter()
                .any(|&l| l == v - 1 || l == v - 2)
        {
            return None;
        }
        let device = x.device();
        let levels = self.trunk.forward_host_levels(x)?;
        if levels.len() != n {
            return None;
        }
        let d = neck.d_model;
        let lateral = |i: usize| conv_linear(&neck.convs[n - 1 - i].conv);
        // top-down chain from the lowest resolution to level v
        let mut prev: Option<(Vec<f32>, usize, usize)> = None;
        for i in (v..n).rev() {
            let m = &levels[i];
            let mut feat = lateral(i).rows(&m.v, m.b * m.h * m.w);
            if let (Some((p, ph, pw)), true) = (&prev, neck.fpn_top_down_levels.contains(&i)) {
                add_upsampled(&mut feat, p, m.b, m.h, m.w, *ph, *pw, d);
            }
            prev = Some((feat, m.h, m.w));
        }
        let (feat, h, w) = prev.expect("level v computed");
        let b = levels[v].b;
        let mapped = |i: usize, post: &Conv2d| {
            let m = &levels[i];
            let f = compose(&lateral(i), &conv_linear(post));
            let e = f.dout;
            let y = f.rows(&m.v, m.b * m.h * m.w);
            from_host(
                channels_first(&y, m.b, m.h * m.w, e),
                [m.b, e, m.h, m.w],
                &device,
            )
        };
        Some(HostFrameLevels {
            feat: from_host(channels_first(&feat, b, h * w, d), [b, d, h, w], &device),
            pos: cached_sine(d, h, w, &device).expand([b, d, h, w]),
            s0: mapped(v - 2, post0),
            s1: mapped(v - 1, post1),
        })
    }
}

/// `feat [b, h, w, d] += nearest 2x upsampling of p [b, ph, pw, d]`
/// (`F.interpolate(scale_factor=2, mode="nearest")`: source pixel `(y / 2, x / 2)`).
#[allow(clippy::too_many_arguments)]
fn add_upsampled(
    feat: &mut [f32],
    p: &[f32],
    _b: usize,
    h: usize,
    w: usize,
    ph: usize,
    pw: usize,
    d: usize,
) {
    use rayon::prelude::*;
    feat.par_chunks_mut(w * d)
        .enumerate()
        .for_each(|(row, dst)| {
            let (bi, y) = (row / h, row % h);
            let src = &p[(bi * ph + y / 2) * pw * d..];
            for (xx, px) in dst.chunks_exact_mut(d).enumerate() {
                for (v, s) in px.iter_mut().zip(&src[(xx / 2) * d..(xx / 2 + 1) * d]) {
                    *v += s;
                }
            }
        });
}

/// `[b, hw, c]` -> `[b, c, hw]`, in parallel over blocks of 64 pixels (each block reads its
/// pixels' rows once and writes 64-float runs of every channel row).
fn channels_first(v: &[f32], b: usize, hw: usize, c: usize) -> Vec<f32> {
    use rayon::prelude::*;
    const PB: usize = 64;
    assert_eq!(v.len(), b * hw * c, "channels_first: buffer size");
    let mut out = vec![0f32; b * hw * c];
    let dst = crate::kernels::attention::SendPtr(out.as_mut_ptr());
    let blocks = hw.div_ceil(PB);
    (0..b * blocks).into_par_iter().for_each(|t| {
        let (bi, p0) = (t / blocks, (t % blocks) * PB);
        let np = PB.min(hw - p0);
        let src = &v[(bi * hw + p0) * c..(bi * hw + p0 + np) * c];
        for ch in 0..c {
            // SAFETY: pixels p0..p0 + np of channel row (bi, ch): written by this task only.
            let row = unsafe {
                std::slice::from_raw_parts_mut(dst.get().add((bi * c + ch) * hw + p0), np)
            };
            for (p, o) in row.iter_mut().enumerate() {
                *o = src[p * c + ch];
            }
        }
    });
    out
}

/// A callback that sees named intermediate maps (parity tests).
type Tap<'a> = &'a mut dyn FnMut(&str, &Tensor<4>);

/// [`sine_2d_tensor`] computed once per size (a constant: ~20 ms per frame for SAM 2's four
/// levels otherwise).
fn cached_sine(d: usize, h: usize, w: usize, device: &Device) -> Tensor<4> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Sines = HashMap<(usize, usize, usize), Arc<Vec<f32>>>;
    static CACHE: OnceLock<Mutex<Sines>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let v = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((d, h, w))
        .or_insert_with(|| Arc::new(sine_2d(d, h, w)))
        .clone();
    from_host(v.as_ref().clone(), [1, d, h, w], device)
}

/// Backbone output: FPN levels (highest resolution first) and their position encodings.
#[derive(Clone, Debug)]
pub struct BackboneOut {
    pub backbone_fpn: Vec<Tensor<4>>,
    pub vision_pos_enc: Vec<Tensor<4>>,
}

#[derive(Module, Debug)]
pub struct Sam2ImageEncoder {
    pub trunk: Hiera,
    pub neck: FpnNeck,
    pub scalp: usize,
}

impl Sam2ImageEncoder {
    pub fn forward(&self, x: Tensor<4>) -> BackboneOut {
        self.forward_impl(x, None)
    }

    /// Forward with a tap on the trunk levels (`trunk_level{i}`), for parity checks.
    pub fn forward_with(&self, x: Tensor<4>, mut tap: impl FnMut(&str, &Tensor<4>)) -> BackboneOut {
        self.forward_impl(x, Some(&mut tap))
    }

    fn forward_impl(&self, x: Tensor<4>, mut tap: Option<Tap<'_>>) -> BackboneOut {
        let device = x.device();
        let (mut feats, mut pos) = match self.trunk.forward_host_levels(x.clone()) {
            Some(levels) => {
                if let Some(tap) = tap.as_mut() {
                    for (i, m) in levels.iter().enumerate() {
                        let t = from_host(m.v.clone(), [m.b, m.h, m.w, m.c], &device);
                        tap(&format!("trunk_level{i}"), &t.permute([0, 3, 1, 2]));
                    }
                }
                self.neck.forward_host(levels, &device)
            }
            None => {
                let levels = self.trunk.forward(x);
                if let Some(tap) = tap.as_mut() {
                    for (i, l) in levels.iter().enumerate() {
                        tap(&format!("trunk_level{i}"), l);
                    }
                }
                self.neck.forward(levels)
            }
        };
        let keep = feats.len() - self.scalp;
        feats.truncate(keep);
        pos.truncate(keep);
        BackboneOut {
            backbone_fpn: feats,
            vision_pos_enc: pos,
        }
    }
}
