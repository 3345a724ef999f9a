//! SAM's image encoder: a plain ViT with windowed and global attention blocks, decomposed
//! relative position bias and a convolutional neck (`segment_anything/modeling/image_encoder.py`).
//! Layout is channels-last ([B, H, W, C]) inside the blocks, as in the reference.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::common::{Activation, LayerNorm2d, MlpBlock};
use crate::peft::{
    Adapter, AdapterSpec, DropoutRng, Lora, LoraSpec, LoraTarget, PeftInit, linear_lora,
    merge_lora, with_adapter,
};

/// Hyper-parameters of `ImageEncoderViT` (constructor arguments of the reference class).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageEncoderViTConfig {
    pub img_size: usize,
    pub patch_size: usize,
    pub in_chans: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    pub out_chans: usize,
    pub qkv_bias: bool,
    pub use_abs_pos: bool,
    pub use_rel_pos: bool,
    pub window_size: usize,
    pub global_attn_indexes: Vec<usize>,
    /// LayerNorm epsilon of the blocks (SAM builds them with 1e-6).
    pub norm_eps: f64,
}

impl ImageEncoderViTConfig {
    fn sam(embed_dim: usize, depth: usize, num_heads: usize, global: [usize; 4]) -> Self {
        Self {
            img_size: 1024,
            patch_size: 16,
            in_chans: 3,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio: 4.0,
            out_chans: 256,
            qkv_bias: true,
            use_abs_pos: true,
            use_rel_pos: true,
            window_size: 14,
            global_attn_indexes: global.to_vec(),
            norm_eps: 1e-6,
        }
    }
    /// `build_sam_vit_b`.
    pub fn vit_b() -> Self {
        Self::sam(768, 12, 12, [2, 5, 8, 11])
    }
    /// `build_sam_vit_l`.
    pub fn vit_l() -> Self {
        Self::sam(1024, 24, 16, [5, 11, 17, 23])
    }
    /// `build_sam_vit_h`.
    pub fn vit_h() -> Self {
        Self::sam(1280, 32, 16, [7, 15, 23, 31])
    }

    pub fn grid(&self) -> usize {
        self.img_size / self.patch_size
    }

    pub fn init(&self, device: &Device) -> ImageEncoderViT {
        let g = self.grid();
        let pos_embed = self
            .use_abs_pos
            .then(|| Param::from_tensor(Tensor::zeros([1, g, g, self.embed_dim], device)));
        let blocks = (0..self.depth)
            .map(|i| {
                let window = if self.global_attn_indexes.contains(&i) {
                    0
                } else {
                    self.window_size
                };
                let input = if window == 0 { g } else { window };
                Block {
                    norm1: LayerNormConfig::new(self.embed_dim)
                        .with_epsilon(self.norm_eps)
                        .init(device),
                    attn: Attention::new(
                        self.embed_dim,
                        self.num_heads,
                        self.qkv_bias,
                        self.use_rel_pos.then_some(input),
                        device,
                    ),
                    norm2: LayerNormConfig::new(self.embed_dim)
                        .with_epsilon(self.norm_eps)
                        .init(device),
                    mlp: MlpBlock::new(
                        self.embed_dim,
                        (self.embed_dim as f64 * self.mlp_ratio) as usize,
                        Activation::Gelu,
                        device,
                    ),
                    window_size: window,
                    adapter_attn: None,
                    adapter_mlp: None,
                }
            })
            .collect();
        let neck = vec![
            NeckLayer::Conv(
                Conv2dConfig::new([self.embed_dim, self.out_chans], [1, 1])
                    .with_bias(false)
                    .init(device),
            ),
            NeckLayer::Norm(LayerNorm2d::new(self.out_chans, 1e-6, device)),
            NeckLayer::Conv(
                Conv2dConfig::new([self.out_chans, self.out_chans], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_bias(false)
                    .init(device),
            ),
            NeckLayer::Norm(LayerNorm2d::new(self.out_chans, 1e-6, device)),
        ];
        ImageEncoderViT {
            patch_embed: PatchEmbed {
                proj: Conv2dConfig::new(
                    [self.in_chans, self.embed_dim],
                    [self.patch_size, self.patch_size],
                )
                .with_stride([self.patch_size, self.patch_size])
                .init(device),
            },
            pos_embed,
            blocks,
            neck,
            patch_size: self.patch_size,
        }
    }
}

/// A conv or a LayerNorm2d inside an `nn.Sequential` (keys `neck.0`, `neck.1`, ...).
#[derive(Module, Debug)]
pub enum NeckLayer {
    Conv(Conv2d),
    Norm(LayerNorm2d),
}

impl NeckLayer {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            NeckLayer::Conv(c) => c.forward(x),
            NeckLayer::Norm(n) => n.forward(x),
        }
    }
}

/// `PatchEmbed`: non-overlapping patch projection, output channels-last.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub proj: Conv2d,
}

impl PatchEmbed {
    /// [B, C, H, W] -> [B, H/p, W/p, D]. A stride-p p×p conv on non-overlapping patches is a
    /// matmul over unfolded patches, which is what we run.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let weight = self.proj.weight.val();
        let [d, _, ph, pw] = weight.dims();
        let (gh, gw) = (h / ph, w / pw);
        let patches = x
            .reshape([b, c, gh, ph, gw, pw])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([b * gh * gw, c * ph * pw]);
        let wmat = weight.reshape([d, c * ph * pw]).transpose();
        let mut y = patches.matmul(wmat);
        if let Some(bias) = &self.proj.bias {
            y = y + bias.val().unsqueeze::<2>();
        }
        y.reshape([b, gh, gw, d])
    }
}

/// Transformer block with optional window attention.
#[derive(Module, Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: MlpBlock,
    /// 0 = global attention.
    pub window_size: usize,
    /// Fine-tuning adapters (`None` in official models): after the attention (residual) and
    /// in parallel with the MLP.
    pub adapter_attn: Option<Adapter>,
    pub adapter_mlp: Option<Adapter>,
}

impl Block {
    /// x: [B, H, W, C]
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = x.clone();
        let mut h = self.norm1.forward(x);
        let [_, hh, ww, _] = h.dims();
        if self.window_size > 0 {
            let (windows, pad_hw) = window_partition(h, self.window_size);
            let out = self.attn.forward(windows);
            h = window_unpartition(out, self.window_size, pad_hw, (hh, ww));
        } else {
            h = self.attn.forward(h);
        }
        let h = with_adapter(&self.adapter_attn, h);
        let x = shortcut + h;
        let xn = self.norm2.forward(x.clone());
        let m = match &self.adapter_mlp {
            Some(a) => self.mlp.forward(xn.clone()) + a.forward(xn),
            None => self.mlp.forward(xn),
        };
        x + m
    }
}

/// Multi-head attention with decomposed relative position bias.
#[derive(Module, Debug)]
pub struct Attention {
    pub qkv: Linear,
    pub proj: Linear,
    pub rel_pos_h: Option<Param<Tensor<2>>>,
    pub rel_pos_w: Option<Param<Tensor<2>>>,
    pub num_heads: usize,
    /// Fine-tuning LoRA branches (`None` in official models).
    pub qkv_lora: Option<Lora>,
    pub proj_lora: Option<Lora>,
}

impl Attention {
    fn new(
        dim: usize,
        num_heads: usize,
        qkv_bias: bool,
        rel_input: Option<usize>,
        device: &Device,
    ) -> Self {
        let head_dim = dim / num_heads;
        let rel = |n: usize| Param::from_tensor(Tensor::zeros([2 * n - 1, head_dim], device));
        Self {
            qkv: LinearConfig::new(dim, dim * 3)
                .with_bias(qkv_bias)
                .init(device),
            proj: LinearConfig::new(dim, dim).init(device),
            rel_pos_h: rel_input.map(rel),
            rel_pos_w: rel_input.map(rel),
            num_heads,
            qkv_lora: None,
            proj_lora: None,
        }
    }

    /// x: [B, H, W, C] -> [B, H, W, C]
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // The fused kernel has no LoRA branches: unmerged LoRA runs the generic path.
        if self.qkv_lora.is_none()
            && self.proj_lora.is_none()
            && crate::kernels::host_fast_path(&x.device())
        {
            self.forward_fused(x)
        } else {
            self.forward_generic(x)
        }
    }

    /// Burn ops only (any device, differentiable); materialises the bias.
    pub fn forward_generic(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, w, c] = x.dims();
        let nh = self.num_heads;
        let hd = c / nh;
        let l = h * w;
        // [B, L, 3, nH, hd] -> [3, B, nH, L, hd]
        let qkv = linear_lora(&self.qkv, &self.qkv_lora, x.reshape([b, l, c]))
            .reshape([b, l, 3, nh, hd])
            .permute([2, 0, 3, 1, 4]);
        let q: Tensor<4> = qkv.clone().narrow(0, 0, 1).reshape([b, nh, l, hd]);
        let k: Tensor<4> = qkv.clone().narrow(0, 1, 1).reshape([b, nh, l, hd]);
        let v: Tensor<4> = qkv.narrow(0, 2, 1).reshape([b, nh, l, hd]);

        let bias = match (&self.rel_pos_h, &self.rel_pos_w) {
            (Some(rh), Some(rw)) => Some(
                decomposed_rel_pos_bias(
                    q.clone().reshape([b * nh, h, w, hd]),
                    rh.val(),
                    rw.val(),
                    (h, w),
                )
                .reshape([b, nh, l, l]),
            ),
            _ => None,
        };
        let out = attention(q, k, v, None, bias, AttentionModuleOptions::default());
        // [B, nH, L, hd] -> [B, H, W, C]
        let out = out.swap_dims(1, 2).reshape([b, h, w, c]);
        linear_lora(&self.proj, &self.proj_lora, out)
    }
}

/// `get_rel_pos` for equal query/key sizes: gathers `rel_pos[q - k + size - 1]` -> [size, size, C].
pub fn get_rel_pos(size: usize, rel_pos: Tensor<2>) -> Tensor<3> {
    let [len, c] = rel_pos.dims();
    debug_assert_eq!(len, 2 * size - 1);
    let idx: Vec<i64> = (0..size)
        .flat_map(|q| (0..size).map(move |k| (q + size - 1 - k) as i64))
        .collect();
    let device = rel_pos.device();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [size * size]), &device);
    rel_pos.select(0, idx).reshape([size, size, c])
}

/// Decomposed relative position bias of `add_decomposed_rel_pos` (q and k of equal size):
/// `bias[b, qh, qw, kh, kw] = <q[b,qh,qw], Rh[qh,kh]> + <q[b,qh,qw], Rw[qw,kw]>`,
/// returned as [B, qh*qw, kh*kw]. `q` is [B, qh, qw, C] (unscaled).
pub fn decomposed_rel_pos_bias(
    q: Tensor<4>,
    rel_pos_h: Tensor<2>,
    rel_pos_w: Tensor<2>,
    (qh, qw): (usize, usize),
) -> Tensor<3> {
    let [b, _, _, c] = q.dims();
    let rh = get_rel_pos(qh, rel_pos_h); // [qh, kh, C]
    let rw = get_rel_pos(qw, rel_pos_w); // [qw, kw, C]
    // rel_h[b, y, x, kh] = sum_c q[b,y,x,c] rh[y,kh,c]: batch over y.
    let q_y = q.clone().permute([1, 0, 2, 3]).reshape([qh, b * qw, c]);
    let rel_h = q_y.matmul(rh.swap_dims(1, 2)); // [qh, b*qw, kh]
    let rel_h = rel_h.reshape([qh, b, qw, qh]).permute([1, 0, 2, 3]); // [b, qh, qw, kh]
    // rel_w[b, y, x, kw] = sum_c q[b,y,x,c] rw[x,kw,c]: batch over x.
    let q_x = q.permute([2, 0, 1, 3]).reshape([qw, b * qh, c]);
    let rel_w = q_x.matmul(rw.swap_dims(1, 2)); // [qw, b*qh, kw]
    let rel_w = rel_w.reshape([qw, b, qh, qw]).permute([1, 2, 0, 3]); // [b, qh, qw, kw]
    let bias: Tensor<5> = rel_h.unsqueeze_dim::<5>(4) + rel_w.unsqueeze_dim::<5>(3);
    bias.reshape([b, qh * qw, qh * qw])
}

/// Partition [B, H, W, C] into windows [B*nW, ws, ws, C], zero-padding H and W up to multiples
/// of `ws`. Returns the padded size.
pub fn window_partition(x: Tensor<4>, ws: usize) -> (Tensor<4>, (usize, usize)) {
    let [b, h, w, c] = x.dims();
    let pad_h = (ws - h % ws) % ws;
    let pad_w = (ws - w % ws) % ws;
    let x = if pad_h > 0 || pad_w > 0 {
        let device = x.device();
        let padded = Tensor::zeros([b, h + pad_h, w + pad_w, c], &device);
        padded.slice_assign([0..b, 0..h, 0..w, 0..c], x)
    } else {
        x
    };
    let (hp, wp) = (h + pad_h, w + pad_w);
    let windows = x
        .reshape([b, hp / ws, ws, wp / ws, ws, c])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([b * (hp / ws) * (wp / ws), ws, ws, c]);
    (windows, (hp, wp))
}

/// Inverse of [`window_partition`], cropping the padding.
pub fn window_unpartition(
    windows: Tensor<4>,
    ws: usize,
    (hp, wp): (usize, usize),
    (h, w): (usize, usize),
) -> Tensor<4> {
    let [nb, _, _, c] = windows.dims();
    let b = nb / ((hp / ws) * (wp / ws));
    let x = windows
        .reshape([b, hp / ws, wp / ws, ws, ws, c])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([b, hp, wp, c]);
    if hp > h || wp > w {
        x.slice([0..b, 0..h, 0..w, 0..c])
    } else {
        x
    }
}

/// `ImageEncoderViT`.
#[derive(Module, Debug)]
pub struct ImageEncoderViT {
    pub patch_embed: PatchEmbed,
    pub pos_embed: Option<Param<Tensor<4>>>,
    pub blocks: Vec<Block>,
    pub neck: Vec<NeckLayer>,
    pub patch_size: usize,
}

impl ImageEncoderViT {
    /// x: [B, 3, 1024, 1024] (normalised, padded) -> [B, out_chans, 64, 64].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_with(x, |_, _| {})
    }

    /// Forward, calling `tap(name, &tensor)` on intermediate outputs
    /// (`patch_embed`, `block{i}`), for parity checks.
    pub fn forward_with(&self, x: Tensor<4>, mut tap: impl FnMut(&str, &Tensor<4>)) -> Tensor<4> {
        let mut x = self.patch_embed.forward(x);
        tap("patch_embed", &x);
        if let Some(pe) = &self.pos_embed {
            x = x + pe.val();
        }
        for (i, blk) in self.blocks.iter().enumerate() {
            x = blk.forward(x);
            tap(&format!("block{i}"), &x);
        }
        let mut x = x.permute([0, 3, 1, 2]);
        for layer in &self.neck {
            x = layer.forward(x);
        }
        x
    }
}

impl ImageEncoderViT {
    /// Insert LoRA branches on the `spec.targets` linears of every block.
    pub fn add_lora(&mut self, spec: &LoraSpec, init: &mut PeftInit, rng: &DropoutRng) {
        for blk in &mut self.blocks {
            let device = blk.attn.qkv.weight.device();
            for t in &spec.targets {
                let (lin, slot) = match t {
                    LoraTarget::Qkv => (&blk.attn.qkv, &mut blk.attn.qkv_lora),
                    LoraTarget::Proj => (&blk.attn.proj, &mut blk.attn.proj_lora),
                    LoraTarget::Lin1 => (&blk.mlp.lin1, &mut blk.mlp.lin1_lora),
                    LoraTarget::Lin2 => (&blk.mlp.lin2, &mut blk.mlp.lin2_lora),
                };
                *slot = Some(Lora::for_linear(lin, spec, init, rng, &device));
            }
        }
    }

    /// Fold every LoRA branch into its linear and remove it.
    pub fn merge_lora(&mut self) {
        for blk in &mut self.blocks {
            merge_lora(&mut blk.attn.qkv, &mut blk.attn.qkv_lora);
            merge_lora(&mut blk.attn.proj, &mut blk.attn.proj_lora);
            merge_lora(&mut blk.mlp.lin1, &mut blk.mlp.lin1_lora);
            merge_lora(&mut blk.mlp.lin2, &mut blk.mlp.lin2_lora);
        }
    }

    /// Insert bottleneck adapters in every block.
    pub fn add_adapters(&mut self, spec: &AdapterSpec, init: &mut PeftInit) {
        for blk in &mut self.blocks {
            let [dim, _] = blk.attn.proj.weight.dims();
            let device = blk.attn.proj.weight.device();
            blk.adapter_attn = Some(Adapter::new(dim, spec, 1.0, init, &device));
            blk.adapter_mlp = Some(Adapter::new(dim, spec, spec.mlp_scale, init, &device));
        }
    }
}
