//! SAM 2's image trunk, Hiera (`sam2/modeling/backbones/hieradet.py`): windowed and global
//! multi-scale blocks, q-pooling between stages, windowed absolute position embedding.
//! Channels-last ([B, H, W, C]) inside, NCHW level outputs, as in the reference.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::common::{Mlp, tensor_from_vec};
use crate::kernels::attention::{Bias, Grid, QkvLayout, grid_attention};
use crate::kernels::host::{
    self, HostLinear, add_assign, layer_norm_params, layer_norm_rows, max_pool_2x2,
    max_pool_2x2_strided,
};
use crate::kernels::mlp::{Act, HostMlp};
use crate::kernels::{from_host, host_fast_path, to_host};
use crate::vit::{window_partition, window_unpartition};
use rayon::prelude::*;

fn default_q_pool() -> usize {
    3
}
fn default_q_stride() -> [usize; 2] {
    [2, 2]
}
fn default_mul() -> f64 {
    2.0
}
fn default_window_spec() -> Vec<usize> {
    vec![8, 4, 14, 7]
}

/// Constructor arguments of `Hiera`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HieraConfig {
    pub embed_dim: usize,
    pub num_heads: usize,
    pub stages: Vec<usize>,
    pub global_att_blocks: Vec<usize>,
    pub window_pos_embed_bkg_spatial_size: [usize; 2],
    #[serde(default = "default_window_spec")]
    pub window_spec: Vec<usize>,
    #[serde(default = "default_q_pool")]
    pub q_pool: usize,
    #[serde(default = "default_q_stride")]
    pub q_stride: [usize; 2],
    #[serde(default = "default_mul")]
    pub dim_mul: f64,
    #[serde(default = "default_mul")]
    pub head_mul: f64,
}

impl HieraConfig {
    pub fn tiny() -> Self {
        Self {
            embed_dim: 96,
            num_heads: 1,
            stages: vec![1, 2, 7, 2],
            global_att_blocks: vec![5, 7, 9],
            window_pos_embed_bkg_spatial_size: [7, 7],
            window_spec: default_window_spec(),
            q_pool: 3,
            q_stride: [2, 2],
            dim_mul: 2.0,
            head_mul: 2.0,
        }
    }
    pub fn small() -> Self {
        Self {
            stages: vec![1, 2, 11, 2],
            global_att_blocks: vec![7, 10, 13],
            ..Self::tiny()
        }
    }
    pub fn base_plus() -> Self {
        Self {
            embed_dim: 112,
            num_heads: 2,
            stages: vec![2, 3, 16, 3],
            global_att_blocks: vec![12, 16, 20],
            window_pos_embed_bkg_spatial_size: [14, 14],
            ..Self::tiny()
        }
    }
    pub fn large() -> Self {
        Self {
            embed_dim: 144,
            num_heads: 2,
            stages: vec![2, 6, 36, 4],
            global_att_blocks: vec![23, 33, 43],
            window_pos_embed_bkg_spatial_size: [7, 7],
            window_spec: vec![8, 4, 16, 8],
            ..Self::tiny()
        }
    }

    fn stage_ends(&self) -> Vec<usize> {
        (1..=self.stages.len())
            .map(|i| self.stages[..i].iter().sum::<usize>() - 1)
            .collect()
    }

    /// Channels of the levels, highest resolution first.
    pub fn channel_list(&self) -> Vec<usize> {
        let mut dims = Vec::new();
        let mut d = self.embed_dim;
        for i in 0..self.stages.len() {
            if i > 0 {
                d = (d as f64 * self.dim_mul) as usize;
            }
            dims.push(d);
        }
        dims
    }

    pub fn init(&self, device: &Device) -> Hiera {
        let depth: usize = self.stages.iter().sum();
        let stage_ends = self.stage_ends();
        let q_pool_blocks: Vec<usize> = stage_ends[..stage_ends.len() - 1]
            .iter()
            .map(|e| e + 1)
            .take(self.q_pool)
            .collect();
        let mut embed_dim = self.embed_dim;
        let mut num_heads = self.num_heads;
        let mut cur_stage = 1;
        let mut blocks = Vec::with_capacity(depth);
        for i in 0..depth {
            let mut dim_out = embed_dim;
            let mut window_size = self.window_spec[cur_stage - 1];
            if self.global_att_blocks.contains(&i) {
                window_size = 0;
            }
            if i > 0 && stage_ends.contains(&(i - 1)) {
                dim_out = (embed_dim as f64 * self.dim_mul) as usize;
                num_heads = (num_heads as f64 * self.head_mul) as usize;
                cur_stage += 1;
            }
            let q_stride = q_pool_blocks.contains(&i).then_some(self.q_stride);
            blocks.push(MultiScaleBlock::new(
                embed_dim,
                dim_out,
                num_heads,
                q_stride,
                window_size,
                device,
            ));
            embed_dim = dim_out;
        }
        let [bh, bw] = self.window_pos_embed_bkg_spatial_size;
        let w0 = self.window_spec[0];
        Hiera {
            patch_embed: PatchEmbed {
                proj: Conv2dConfig::new([3, self.embed_dim], [7, 7])
                    .with_stride([4, 4])
                    .with_padding(PaddingConfig2d::Explicit(3, 3, 3, 3))
                    .init(device),
            },
            pos_embed: Param::from_tensor(Tensor::zeros([1, self.embed_dim, bh, bw], device)),
            pos_embed_window: Param::from_tensor(Tensor::zeros(
                [1, self.embed_dim, w0, w0],
                device,
            )),
            blocks,
            stage_ends,
        }
    }
}

#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub proj: Conv2d,
}

/// sam2's q-pooling: `nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=False)`.
fn is_pool_2x2(p: &MaxPool2d) -> bool {
    p.kernel_size == [2, 2] && p.stride == [2, 2] && !p.ceil_mode
}

/// `MultiScaleAttention`: attention with optional max-pooled queries.
#[derive(Module, Debug)]
pub struct MultiScaleAttention {
    pub qkv: Linear,
    pub proj: Linear,
    pub num_heads: usize,
    pub q_pool: Option<MaxPool2d>,
}

impl MultiScaleAttention {
    /// Whether [`Self::host_attend`] covers this layer: no q-pooling, or sam2's 2x2 stride-2
    /// max-pooling.
    fn host_ok(&self) -> bool {
        self.q_pool.as_ref().is_none_or(is_pool_2x2)
    }

    /// The attention on host buffers, before `proj`: `qkv` is the `qkv` linear's output
    /// `[b, h, w, 3 * c]`; returns `([b, h', w', c], h', w')`, or `None` where
    /// [`Self::host_ok`] is false.
    fn host_attend(
        &self,
        data: &[f32],
        b: usize,
        h: usize,
        w: usize,
    ) -> Option<(Vec<f32>, usize, usize)> {
        let c = data.len() / (b * h * w * 3).max(1);
        if c == 0 {
            return None;
        }
        let nh = self.num_heads;
        let hd = c / nh;
        let scale = (hd as f32).powf(-0.5);
        match &self.q_pool {
            None => {
                let grid = Grid::new(b, h, w, nh, hd);
                let out = grid_attention(data, &QkvLayout::sam(h * w, c, hd), &grid, Bias::None);
                Some((out, h, w))
            }
            Some(p) if is_pool_2x2(p) => {
                // q max-pooled 2x2, then attention to the full-resolution keys
                let (ho, wo) = (h / 2, w / 2);
                let q = max_pool_2x2_strided(data, (b, h, w, c), 3 * c);
                let mut k = vec![0f32; b * h * w * c];
                let mut v = vec![0f32; b * h * w * c];
                k.par_chunks_mut(c)
                    .zip(v.par_chunks_mut(c))
                    .zip(data.par_chunks(3 * c))
                    .for_each(|((kt, vt), src)| {
                        kt.copy_from_slice(&src[c..2 * c]);
                        vt.copy_from_slice(&src[2 * c..]);
                    });
                let out = crate::kernels::attention::attention(
                    &q,
                    &k,
                    &v,
                    b,
                    ho * wo,
                    h * w,
                    nh,
                    hd,
                    scale,
                );
                Some((out, ho, wo))
            }
            Some(_) => None,
        }
    }

    /// x: [B, H, W, C] -> [B, H', W', C_out] (H' = H / stride with q-pooling).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, w, _] = x.dims();
        let qkv = self.qkv.forward(x);
        let c = qkv.dims()[3] / 3;
        if host_fast_path(&qkv.device()) && self.host_ok() {
            let device = qkv.device();
            let (data, _) = to_host(qkv);
            if let Some((out, ho, wo)) = self.host_attend(&data, b, h, w) {
                return self.proj.forward(from_host(out, [b, ho, wo, c], &device));
            }
            return self.forward_generic(from_host(data, [b, h, w, 3 * c], &device));
        }
        self.forward_generic(qkv)
    }

    /// The burn-ops attention (any device, differentiable), from the `qkv` output.
    fn forward_generic(&self, qkv: Tensor<4>) -> Tensor<4> {
        let [b, h, w, c3] = qkv.dims();
        let c = c3 / 3;
        let nh = self.num_heads;
        let hd = c / nh;
        // [B, HW, 3, nH, hd]
        let qkv = qkv.reshape([b, h * w, 3, nh, hd]);
        let q = qkv.clone().narrow(2, 0, 1).reshape([b, h * w, nh, hd]);
        let k = qkv
            .clone()
            .narrow(2, 1, 1)
            .reshape([b, h * w, nh, hd])
            .swap_dims(1, 2);
        let v = qkv
            .narrow(2, 2, 1)
            .reshape([b, h * w, nh, hd])
            .swap_dims(1, 2);
        let (q, ho, wo) = match &self.q_pool {
            Some(pool) => {
                let q = pool
                    .forward(q.reshape([b, h, w, c]).permute([0, 3, 1, 2]))
                    .permute([0, 2, 3, 1]);
                let [_, ho, wo, _] = q.dims();
                (q.reshape([b, ho * wo, nh, hd]), ho, wo)
            }
            None => (q, h, w),
        };
        let out = attention(
            q.swap_dims(1, 2),
            k,
            v,
            None,
            None,
            AttentionModuleOptions::default(),
        );
        let out = out.swap_dims(1, 2).reshape([b, ho, wo, c]);
        self.proj.forward(out)
    }
}

/// The blocks' LayerNorm epsilon (`partial(nn.LayerNorm, eps=1e-6)`).
const LN_EPS: f64 = 1e-6;

/// A channels-last `[b, h, w, c]` map on the host, as the trunk's blocks pass it along on
/// the host fast path.
pub struct HostMap {
    pub v: Vec<f32>,
    pub b: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

/// `MultiScaleBlock`.
#[derive(Module, Debug)]
pub struct MultiScaleBlock {
    pub norm1: LayerNorm,
    pub attn: MultiScaleAttention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    /// Projection of the shortcut when the width changes.
    pub proj: Option<Linear>,
    pub pool: Option<MaxPool2d>,
    pub window_size: usize,
    pub q_stride: usize,
}

impl MultiScaleBlock {
    fn new(
        dim: usize,
        dim_out: usize,
        num_heads: usize,
        q_stride: Option<[usize; 2]>,
        window_size: usize,
        device: &Device,
    ) -> Self {
        let pool = || q_stride.map(|s| MaxPool2dConfig::new(s).with_strides(s).init());
        Self {
            norm1: LayerNormConfig::new(dim).with_epsilon(LN_EPS).init(device),
            attn: MultiScaleAttention {
                qkv: LinearConfig::new(dim, dim_out * 3).init(device),
                proj: LinearConfig::new(dim_out, dim_out).init(device),
                num_heads,
                q_pool: pool(),
            },
            norm2: LayerNormConfig::new(dim_out)
                .with_epsilon(LN_EPS)
                .init(device),
            mlp: Mlp::with_activation(
                dim_out,
                dim_out * 4,
                dim_out,
                2,
                crate::common::Activation::Gelu,
                device,
            ),
            proj: (dim != dim_out).then(|| LinearConfig::new(dim, dim_out).init(device)),
            pool: pool(),
            window_size,
            q_stride: q_stride.map(|s| s[0]).unwrap_or(0),
        }
    }

    fn do_pool(&self, x: Tensor<4>) -> Tensor<4> {
        match &self.pool {
            Some(p) => p.forward(x.permute([0, 3, 1, 2])).permute([0, 2, 3, 1]),
            None => x,
        }
    }

    /// Whether [`Self::forward_host`] covers this block (every official Hiera does).
    pub fn host_ok(&self) -> bool {
        self.attn.host_ok()
            && self.pool.as_ref().is_none_or(is_pool_2x2)
            && self.mlp.layers.len() == 2
            && self.mlp.act == crate::common::Activation::Gelu
            && !self.mlp.sigmoid_output
    }

    /// [`Self::forward`] on host buffers (the flex device, inference): the same operations in
    /// the same order, with the linears as single GEMMs onto their bias, the MLP through
    /// [`HostMlp`] and no intermediate burn tensors. Only for blocks where [`Self::host_ok`]
    /// holds (it panics otherwise); [`Hiera::forward`] checks that before taking this path.
    pub fn forward_host(&self, x: HostMap) -> HostMap {
        let HostMap { v: x, b, h, w, c } = x;
        let eps = LN_EPS as f32;
        let mut xn = x.clone();
        let (g1, b1) = layer_norm_params(&self.norm1);
        layer_norm_rows(&mut xn, &g1, &b1, eps);
        let dim_out = self.attn.proj.weight.dims()[1];
        let (shortcut, sh, sw) = match &self.proj {
            Some(p) => {
                let s = HostLinear::new(p).rows(&xn, b * h * w);
                match &self.pool {
                    Some(_) => (max_pool_2x2(&s, b, h, w, dim_out), h / 2, w / 2),
                    None => (s, h, w),
                }
            }
            None => (x, h, w),
        };
        let ws = self.window_size;
        let (win, nb, wh, ww, pad_hw) = if ws > 0 {
            let (win, pad_hw) = host::window_partition(&xn, (b, h, w, c), ws);
            let nb = b * (pad_hw.0 / ws) * (pad_hw.1 / ws);
            (win, nb, ws, ws, pad_hw)
        } else {
            (xn, b, h, w, (h, w))
        };
        let qkv = HostLinear::new(&self.attn.qkv).rows(&win, nb * wh * ww);
        drop(win);
        let (att, ho, wo) = self
            .attn
            .host_attend(&qkv, nb, wh, ww)
            .expect("host_ok checked by the caller");
        drop(qkv);
        let att = HostLinear::new(&self.attn.proj).rows(&att, nb * ho * wo);
        // the output grid: pooled with the queries when this block q-pools
        let (mut oh, mut ow, mut pad_hw, mut ows) = (h, w, pad_hw, ws);
        if let Some(pooled) = ws.checked_div(self.q_stride) {
            ows = pooled;
            (oh, ow) = (sh, sw);
            if ows > 0 {
                pad_hw = (oh.div_ceil(ows) * ows, ow.div_ceil(ows) * ows);
            }
        }
        let mut x = if ws > 0 {
            host::window_unpartition(&att, ows, pad_hw, (oh, ow), dim_out)
        } else {
            att
        };
        add_assign(&mut x, &shortcut);
        drop(shortcut);
        let mut xn = x.clone();
        let (g2, b2) = layer_norm_params(&self.norm2);
        layer_norm_rows(&mut xn, &g2, &b2, eps);
        let m = HostMlp::new(&self.mlp.layers[0], &self.mlp.layers[1], Act::Gelu)
            .rows(&xn, b * oh * ow);
        add_assign(&mut x, &m);
        HostMap {
            v: x,
            b,
            h: oh,
            w: ow,
            c: dim_out,
        }
    }

    /// x: [B, H, W, C]
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut shortcut = x.clone();
        let x = self.norm1.forward(x);
        if let Some(p) = &self.proj {
            shortcut = self.do_pool(p.forward(x.clone()));
        }
        let [_, h, w, _] = x.dims();
        let mut ws = self.window_size;
        let (x, pad_hw) = if ws > 0 {
            window_partition(x, ws)
        } else {
            (x, (h, w))
        };
        let x = self.attn.forward(x);
        let (mut h, mut w, mut pad_hw) = (h, w, pad_hw);
        if let Some(pooled) = self.window_size.checked_div(self.q_stride) {
            ws = pooled;
            let [_, sh, sw, _] = shortcut.dims();
            (h, w) = (sh, sw);
            if ws > 0 {
                let pad_h = (ws - h % ws) % ws;
                let pad_w = (ws - w % ws) % ws;
                pad_hw = (h + pad_h, w + pad_w);
            }
        }
        let x = if self.window_size > 0 {
            window_unpartition(x, ws, pad_hw, (h, w))
        } else {
            x
        };
        let x = shortcut + x;
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

/// PyTorch `upsample_bicubic2d` (align_corners=False, A = -0.75) as a [out, in] matrix.
pub fn bicubic_matrix(in_len: usize, out_len: usize) -> Vec<f32> {
    let a = -0.75f32;
    let cc1 = |x: f32| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    let cc2 = |x: f32| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    let scale = in_len as f32 / out_len as f32;
    let mut m = vec![0f32; out_len * in_len];
    for o in 0..out_len {
        let src = scale * (o as f32 + 0.5) - 0.5;
        let i0 = src.floor();
        let t = src - i0;
        let ws = [cc2(t + 1.0), cc1(t), cc1(1.0 - t), cc2(2.0 - t)];
        for (k, wk) in ws.iter().enumerate() {
            let idx = (i0 as i64 - 1 + k as i64).clamp(0, in_len as i64 - 1) as usize;
            m[o * in_len + idx] += wk;
        }
    }
    m
}

/// The Hiera trunk.
#[derive(Module, Debug)]
pub struct Hiera {
    pub patch_embed: PatchEmbed,
    pub pos_embed: Param<Tensor<4>>,
    pub pos_embed_window: Param<Tensor<4>>,
    pub blocks: Vec<MultiScaleBlock>,
    pub stage_ends: Vec<usize>,
}

impl Hiera {
    /// `_get_pos_embed`: bicubic-resized background embedding + tiled window embedding,
    /// [1, h, w, C].
    pub fn pos_embed(&self, h: usize, w: usize) -> Tensor<4> {
        let pe = self.pos_embed.val();
        let device = pe.device();
        let [_, c, bh, bw] = pe.dims();
        let my = tensor_from_vec(bicubic_matrix(bh, h), [h, bh], &device);
        let mx = tensor_from_vec(bicubic_matrix(bw, w), [w, bw], &device);
        // [C, bh, bw] @ mx^T -> [C, bh, w]; my @ -> [C, h, w]
        let p = pe
            .reshape([c, bh, bw])
            .matmul(mx.transpose().unsqueeze::<3>());
        let p = my.unsqueeze::<3>().matmul(p); // [C, h, w]
        let win = self.pos_embed_window.val();
        let [_, _, wh, ww] = win.dims();
        let tiled = win.reshape([c, wh, ww]).repeat(&[1, h / wh, w / ww]);
        (p + tiled).unsqueeze::<4>().permute([0, 2, 3, 1])
    }

    /// x: [B, 3, H, W] -> the stage outputs, NCHW, highest resolution first.
    pub fn forward(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let x = self.patch_embed.proj.forward(x).permute([0, 2, 3, 1]);
        let [_, h, w, _] = x.dims();
        let mut x = x + self.pos_embed(h, w);
        let mut outputs = Vec::new();
        let device = x.device();
        if host_fast_path(&device) && self.blocks.iter().all(MultiScaleBlock::host_ok) {
            return self
                .host_levels(x)
                .into_iter()
                .map(|m| from_host(m.v, [m.b, m.h, m.w, m.c], &device).permute([0, 3, 1, 2]))
                .collect();
        }
        for (i, blk) in self.blocks.iter().enumerate() {
            x = blk.forward(x);
            if self.stage_ends.contains(&i) {
                outputs.push(x.clone().permute([0, 3, 1, 2]));
            }
        }
        outputs
    }

    /// Whether [`Self::forward_host_levels`] applies (host device, every block host-capable).
    pub fn host_ok(&self, device: &Device) -> bool {
        host_fast_path(device) && self.blocks.iter().all(MultiScaleBlock::host_ok)
    }

    /// The stage outputs as channels-last host maps (highest resolution first), when
    /// [`Self::host_ok`]: what the FPN neck's host path consumes without NCHW round trips.
    pub fn forward_host_levels(&self, x: Tensor<4>) -> Option<Vec<HostMap>> {
        self.host_ok(&x.device()).then(|| {
            let x = self.patch_embed.proj.forward(x).permute([0, 2, 3, 1]);
            let [_, h, w, _] = x.dims();
            self.host_levels(x + self.pos_embed(h, w))
        })
    }

    /// The host blocks from the embedded input (`[b, h, w, c]`).
    fn host_levels(&self, x: Tensor<4>) -> Vec<HostMap> {
        let (v, [b, h, w, c]) = to_host(x);
        let mut m = HostMap { v, b, h, w, c };
        let mut outputs = Vec::new();
        for (i, blk) in self.blocks.iter().enumerate() {
            m = blk.forward_host(m);
            if self.stage_ends.contains(&i) {
                outputs.push(HostMap {
                    v: m.v.clone(),
                    ..m
                });
            }
        }
        outputs
    }
}
