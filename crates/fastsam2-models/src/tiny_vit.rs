//! MobileSAM's image encoder, TinyViT (`mobile_sam/modeling/tiny_vit_sam.py`): a conv stage of
//! MBConv blocks, then windowed-attention stages with learned attention biases, patch merging
//! and SAM's neck. Inference uses BatchNorm running statistics.

use crate::kernels::gelu;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Gelu, LayerNorm, LayerNormConfig, Linear, LinearConfig,
    PaddingConfig2d,
};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::common::LayerNorm2d;
use crate::peft::{
    Adapter, AdapterSpec, DropoutRng, Lora, LoraSpec, LoraTarget, PeftInit, linear_lora,
    merge_lora, with_adapter,
};
use crate::vit::{NeckLayer, window_partition, window_unpartition};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TinyViTConfig {
    pub img_size: usize,
    pub in_chans: usize,
    pub embed_dims: Vec<usize>,
    pub depths: Vec<usize>,
    pub num_heads: Vec<usize>,
    pub window_sizes: Vec<usize>,
    pub mlp_ratio: f64,
    pub mbconv_expand_ratio: f64,
    pub local_conv_size: usize,
    /// Neck width (hard-wired to 256 in the reference).
    pub out_chans: usize,
}

impl TinyViTConfig {
    /// `build_sam_vit_t` (MobileSAM).
    pub fn mobile_sam() -> Self {
        Self {
            img_size: 1024,
            in_chans: 3,
            embed_dims: vec![64, 128, 160, 320],
            depths: vec![2, 2, 6, 2],
            num_heads: vec![2, 4, 5, 10],
            window_sizes: vec![7, 7, 14, 7],
            mlp_ratio: 4.0,
            mbconv_expand_ratio: 4.0,
            local_conv_size: 3,
            out_chans: 256,
        }
    }

    /// Input resolution of stage `i` (the reference's rule: the last stage keeps stage 2's).
    fn stage_resolution(&self, i: usize) -> usize {
        let p = self.img_size / 4;
        let e = if i == 3 { i - 1 } else { i };
        p >> e
    }

    pub fn init(&self, device: &Device) -> TinyViT {
        let e0 = self.embed_dims[0];
        let patch_embed = PatchEmbed {
            seq: vec![
                SeqLayer::ConvBn(Conv2dBn::new(self.in_chans, e0 / 2, 3, 2, 1, 1, device)),
                SeqLayer::Act(Gelu::default()),
                SeqLayer::ConvBn(Conv2dBn::new(e0 / 2, e0, 3, 2, 1, 1, device)),
            ],
        };
        let n = self.embed_dims.len();
        let mut layers = Vec::with_capacity(n);
        for i in 0..n {
            let dim = self.embed_dims[i];
            let res = self.stage_resolution(i);
            let out_dim = self.embed_dims[(i + 1).min(n - 1)];
            let downsample = (i + 1 < n).then(|| PatchMerging::new(res, dim, out_dim, device));
            let layer = if i == 0 {
                let hidden = (dim as f64 * self.mbconv_expand_ratio) as usize;
                Layer::Conv(ConvLayer {
                    blocks: (0..self.depths[i])
                        .map(|_| MbConv::new(dim, hidden, device))
                        .collect(),
                    downsample,
                })
            } else {
                let ws = self.window_sizes[i];
                let blocks = (0..self.depths[i])
                    .map(|_| {
                        TinyViTBlock::new(
                            dim,
                            res,
                            self.num_heads[i],
                            ws,
                            self.mlp_ratio,
                            self.local_conv_size,
                            device,
                        )
                    })
                    .collect();
                Layer::Basic(BasicLayer { blocks, downsample })
            };
            layers.push(layer);
        }
        let last = self.embed_dims[n - 1];
        let c = self.out_chans;
        let neck = vec![
            NeckLayer::Conv(
                Conv2dConfig::new([last, c], [1, 1])
                    .with_bias(false)
                    .init(device),
            ),
            NeckLayer::Norm(LayerNorm2d::new(c, 1e-6, device)),
            NeckLayer::Conv(
                Conv2dConfig::new([c, c], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_bias(false)
                    .init(device),
            ),
            NeckLayer::Norm(LayerNorm2d::new(c, 1e-6, device)),
        ];
        TinyViT {
            patch_embed,
            layers,
            neck,
            out_resolution: self.stage_resolution(n - 1),
        }
    }
}

/// `Conv2d_BN`: bias-free conv followed by BatchNorm (keys `c.*`, `bn.*`).
#[derive(Module, Debug)]
pub struct Conv2dBn {
    pub c: Conv2d,
    pub bn: BatchNorm,
}

impl Conv2dBn {
    fn new(
        cin: usize,
        cout: usize,
        ks: usize,
        stride: usize,
        pad: usize,
        groups: usize,
        device: &Device,
    ) -> Self {
        Self {
            c: Conv2dConfig::new([cin, cout], [ks, ks])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_groups(groups)
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(cout).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if crate::kernels::host_fast_path(&x.device()) {
            // inference: fold the BatchNorm (running statistics) into the conv
            let scale =
                self.bn.gamma.val() / (self.bn.running_var.value() + self.bn.epsilon).sqrt();
            let shift = self.bn.beta.val() - self.bn.running_mean.value() * scale.clone();
            let [co, _, _, _] = self.c.weight.dims();
            let mut c = self.c.clone();
            c.weight =
                Param::from_tensor(self.c.weight.val() * scale.clone().reshape([co, 1, 1, 1]));
            c.bias = Some(Param::from_tensor(match &self.c.bias {
                Some(b) => shift + b.val() * scale,
                None => shift,
            }));
            return c.forward(x);
        }
        self.bn.forward(self.c.forward(x))
    }
}

#[allow(clippy::large_enum_variant)] // mirrors an nn.Sequential of three entries
#[derive(Module, Debug)]
pub enum SeqLayer {
    ConvBn(Conv2dBn),
    Act(Gelu),
}

#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub seq: Vec<SeqLayer>,
}

impl PatchEmbed {
    pub fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        for l in &self.seq {
            x = match l {
                SeqLayer::ConvBn(c) => c.forward(x),
                SeqLayer::Act(_) => gelu(x),
            };
        }
        x
    }
}

#[derive(Module, Debug)]
pub struct MbConv {
    pub conv1: Conv2dBn,
    pub conv2: Conv2dBn,
    pub conv3: Conv2dBn,
}

impl MbConv {
    fn new(dim: usize, hidden: usize, device: &Device) -> Self {
        Self {
            conv1: Conv2dBn::new(dim, hidden, 1, 1, 0, 1, device),
            conv2: Conv2dBn::new(hidden, hidden, 3, 1, 1, hidden, device),
            conv3: Conv2dBn::new(hidden, dim, 1, 1, 0, 1, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = gelu(self.conv1.forward(x.clone()));
        let h = gelu(self.conv2.forward(h));
        let h = self.conv3.forward(h);
        gelu(h + x)
    }
}

#[derive(Module, Debug)]
pub struct PatchMerging {
    pub conv1: Conv2dBn,
    pub conv2: Conv2dBn,
    pub conv3: Conv2dBn,
    pub input_resolution: usize,
}

impl PatchMerging {
    fn new(res: usize, dim: usize, out_dim: usize, device: &Device) -> Self {
        let stride = if matches!(out_dim, 320 | 448 | 576) {
            1
        } else {
            2
        };
        Self {
            conv1: Conv2dBn::new(dim, out_dim, 1, 1, 0, 1, device),
            conv2: Conv2dBn::new(out_dim, out_dim, 3, stride, 1, out_dim, device),
            conv3: Conv2dBn::new(out_dim, out_dim, 1, 1, 0, 1, device),
            input_resolution: res,
        }
    }

    /// NCHW input -> tokens [B, L', C'].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<3> {
        let x = gelu(self.conv1.forward(x));
        let x = gelu(self.conv2.forward(x));
        let x = self.conv3.forward(x);
        x.flatten::<3>(2, 3).swap_dims(1, 2)
    }

    /// Tokens [B, L, C] at `input_resolution` -> [B, L', C'].
    pub fn forward_tokens(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, _, c] = x.dims();
        let r = self.input_resolution;
        self.forward(x.reshape([b, r, r, c]).permute([0, 3, 1, 2]))
    }
}

#[derive(Module, Debug)]
pub struct ConvLayer {
    pub blocks: Vec<MbConv>,
    pub downsample: Option<PatchMerging>,
}

/// TinyViT attention with per-head learned biases indexed by |dy|, |dx|.
#[derive(Module, Debug)]
pub struct TinyAttention {
    pub norm: LayerNorm,
    pub qkv: Linear,
    pub proj: Linear,
    pub attention_biases: Param<Tensor<2>>,
    pub num_heads: usize,
    pub key_dim: usize,
    /// Flattened `attention_bias_idxs` [N*N] (a non-persistent buffer in the reference).
    pub bias_idxs: Vec<usize>,
    /// Fine-tuning LoRA branches (`None` in official models).
    pub qkv_lora: Option<Lora>,
    pub proj_lora: Option<Lora>,
}

/// Offset indices of TinyViT's `Attention.__init__`: offsets numbered in order of first
/// appearance over all (p1, p2) pairs of the window.
fn attention_bias_idxs(res: usize) -> (Vec<usize>, usize) {
    let points: Vec<(usize, usize)> = (0..res)
        .flat_map(|i| (0..res).map(move |j| (i, j)))
        .collect();
    let mut offsets: Vec<(usize, usize)> = Vec::new();
    let mut idxs = Vec::with_capacity(points.len() * points.len());
    let mut lookup = std::collections::HashMap::new();
    for p1 in &points {
        for p2 in &points {
            let off = (p1.0.abs_diff(p2.0), p1.1.abs_diff(p2.1));
            let id = *lookup.entry(off).or_insert_with(|| {
                offsets.push(off);
                offsets.len() - 1
            });
            idxs.push(id);
        }
    }
    (idxs, offsets.len())
}

impl TinyAttention {
    fn new(dim: usize, num_heads: usize, res: usize, device: &Device) -> Self {
        let key_dim = dim / num_heads;
        let (idxs, n_off) = attention_bias_idxs(res);
        Self {
            norm: LayerNormConfig::new(dim).init(device),
            qkv: LinearConfig::new(dim, key_dim * num_heads * 3).init(device),
            proj: LinearConfig::new(key_dim * num_heads, dim).init(device),
            attention_biases: Param::from_tensor(Tensor::zeros([num_heads, n_off], device)),
            num_heads,
            key_dim,
            bias_idxs: idxs,
            qkv_lora: None,
            proj_lora: None,
        }
    }

    /// [B, N, C] -> [B, N, C]
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
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

    /// Burn ops only (any device, differentiable).
    pub fn forward_generic(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, _] = x.dims();
        let (nh, kd) = (self.num_heads, self.key_dim);
        let x = self.norm.forward(x);
        // per head: [q(kd), k(kd), v(kd)]
        let qkv = linear_lora(&self.qkv, &self.qkv_lora, x)
            .reshape([b, n, nh, 3 * kd])
            .swap_dims(1, 2); // [B, nH, N, 3kd]
        let q = qkv.clone().slice([0..b, 0..nh, 0..n, 0..kd]);
        let k = qkv.clone().slice([0..b, 0..nh, 0..n, kd..2 * kd]);
        let v = qkv.slice([0..b, 0..nh, 0..n, 2 * kd..3 * kd]);
        let device = q.device();
        let idx: Vec<i64> = self.bias_idxs.iter().map(|&i| i as i64).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n * n]), &device);
        let bias = self
            .attention_biases
            .val()
            .select(1, idx)
            .reshape([1, nh, n, n])
            .expand([b, nh, n, n]);
        let out = attention(q, k, v, None, Some(bias), AttentionModuleOptions::default());
        linear_lora(
            &self.proj,
            &self.proj_lora,
            out.swap_dims(1, 2).reshape([b, n, nh * kd]),
        )
    }
}

#[derive(Module, Debug)]
pub struct TinyMlp {
    pub norm: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    /// Fine-tuning LoRA branches (`None` in official models).
    pub fc1_lora: Option<Lora>,
    pub fc2_lora: Option<Lora>,
}

impl TinyMlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.forward_normed(self.norm.forward(x))
    }

    /// The MLP after its LayerNorm.
    pub fn forward_normed(&self, xn: Tensor<3>) -> Tensor<3> {
        let h = gelu(linear_lora(&self.fc1, &self.fc1_lora, xn));
        linear_lora(&self.fc2, &self.fc2_lora, h)
    }
}

#[derive(Module, Debug)]
pub struct TinyViTBlock {
    pub attn: TinyAttention,
    pub local_conv: Conv2dBn,
    pub mlp: TinyMlp,
    pub input_resolution: usize,
    pub window_size: usize,
    /// Fine-tuning adapters (`None` in official models): after the attention (residual) and
    /// in parallel with the MLP.
    pub adapter_attn: Option<Adapter>,
    pub adapter_mlp: Option<Adapter>,
}

impl TinyViTBlock {
    fn new(
        dim: usize,
        res: usize,
        num_heads: usize,
        ws: usize,
        mlp_ratio: f64,
        local_conv: usize,
        device: &Device,
    ) -> Self {
        let hidden = (dim as f64 * mlp_ratio) as usize;
        Self {
            attn: TinyAttention::new(dim, num_heads, ws, device),
            local_conv: Conv2dBn::new(dim, dim, local_conv, 1, local_conv / 2, dim, device),
            mlp: TinyMlp {
                norm: LayerNormConfig::new(dim).init(device),
                fc1: LinearConfig::new(dim, hidden).init(device),
                fc2: LinearConfig::new(hidden, dim).init(device),
                fc1_lora: None,
                fc2_lora: None,
            },
            input_resolution: res,
            window_size: ws,
            adapter_attn: None,
            adapter_mlp: None,
        }
    }

    /// tokens [B, L, C] -> [B, L, C]
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, l, c] = x.dims();
        let (h, w) = (self.input_resolution, self.input_resolution);
        let ws = self.window_size;
        let attn = if h == ws && w == ws {
            self.attn.forward(x.clone())
        } else {
            let (windows, pad) = window_partition(x.clone().reshape([b, h, w, c]), ws);
            let nw = windows.dims()[0];
            let out = self.attn.forward(windows.reshape([nw, ws * ws, c]));
            window_unpartition(out.reshape([nw, ws, ws, c]), ws, pad, (h, w)).reshape([b, l, c])
        };
        let attn = with_adapter(&self.adapter_attn, attn);
        let x = x + attn;
        let x = self
            .local_conv
            .forward(x.swap_dims(1, 2).reshape([b, c, h, w]));
        let x = x.reshape([b, c, l]).swap_dims(1, 2);
        match &self.adapter_mlp {
            Some(a) => {
                let xn = self.mlp.norm.forward(x.clone());
                x + self.mlp.forward_normed(xn.clone()) + a.forward(xn)
            }
            None => x.clone() + self.mlp.forward(x),
        }
    }
}

#[derive(Module, Debug)]
pub struct BasicLayer {
    pub blocks: Vec<TinyViTBlock>,
    pub downsample: Option<PatchMerging>,
}

#[derive(Module, Debug)]
pub enum Layer {
    Conv(ConvLayer),
    Basic(BasicLayer),
}

#[derive(Module, Debug)]
pub struct TinyViT {
    pub patch_embed: PatchEmbed,
    pub layers: Vec<Layer>,
    pub neck: Vec<NeckLayer>,
    pub out_resolution: usize,
}

impl TinyViT {
    /// x: [B, 3, 1024, 1024] -> [B, 256, 64, 64].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_with(x, |_, _| {})
    }

    /// Forward with taps: `patch_embed` ([B, C0, 256, 256]) and `layer{i}` ([B, L, C]).
    pub fn forward_with(&self, x: Tensor<4>, mut tap: impl FnMut(&str, &Tensor<3>)) -> Tensor<4> {
        let x = self.patch_embed.forward(x);
        tap("patch_embed", &x.clone().flatten::<3>(2, 3));
        let mut tokens: Option<Tensor<3>> = None;
        let mut spatial = Some(x);
        for (i, layer) in self.layers.iter().enumerate() {
            let out = match layer {
                Layer::Conv(cl) => {
                    let mut x = spatial.take().expect("conv stage runs first");
                    for blk in &cl.blocks {
                        x = blk.forward(x);
                    }
                    match &cl.downsample {
                        Some(d) => d.forward(x),
                        None => x.flatten::<3>(2, 3).swap_dims(1, 2),
                    }
                }
                Layer::Basic(bl) => {
                    let mut x = tokens
                        .take()
                        .expect("attention stages follow the conv stage");
                    for blk in &bl.blocks {
                        x = blk.forward(x);
                    }
                    match &bl.downsample {
                        Some(d) => d.forward_tokens(x),
                        None => x,
                    }
                }
            };
            tap(&format!("layer{i}"), &out);
            tokens = Some(out);
        }
        let x = tokens.expect("TinyViT has stages");
        let [b, _, c] = x.dims();
        let r = self.out_resolution;
        let mut x = x.reshape([b, r, r, c]).permute([0, 3, 1, 2]);
        for layer in &self.neck {
            x = layer.forward(x);
        }
        x
    }
}

impl TinyViT {
    fn attention_blocks_mut(&mut self) -> impl Iterator<Item = &mut TinyViTBlock> {
        self.layers.iter_mut().flat_map(|l| match l {
            Layer::Basic(b) => b.blocks.iter_mut().collect::<Vec<_>>(),
            Layer::Conv(_) => Vec::new(),
        })
    }

    /// Insert LoRA branches on the `spec.targets` linears of every attention block (the
    /// convolutional first stage has no linears).
    pub fn add_lora(&mut self, spec: &LoraSpec, init: &mut PeftInit, rng: &DropoutRng) {
        for blk in self.attention_blocks_mut() {
            let device = blk.attn.qkv.weight.device();
            for t in &spec.targets {
                let (lin, slot) = match t {
                    LoraTarget::Qkv => (&blk.attn.qkv, &mut blk.attn.qkv_lora),
                    LoraTarget::Proj => (&blk.attn.proj, &mut blk.attn.proj_lora),
                    LoraTarget::Lin1 => (&blk.mlp.fc1, &mut blk.mlp.fc1_lora),
                    LoraTarget::Lin2 => (&blk.mlp.fc2, &mut blk.mlp.fc2_lora),
                };
                *slot = Some(Lora::for_linear(lin, spec, init, rng, &device));
            }
        }
    }

    /// Fold every LoRA branch into its linear and remove it.
    pub fn merge_lora(&mut self) {
        for blk in self.attention_blocks_mut() {
            merge_lora(&mut blk.attn.qkv, &mut blk.attn.qkv_lora);
            merge_lora(&mut blk.attn.proj, &mut blk.attn.proj_lora);
            merge_lora(&mut blk.mlp.fc1, &mut blk.mlp.fc1_lora);
            merge_lora(&mut blk.mlp.fc2, &mut blk.mlp.fc2_lora);
        }
    }

    /// Insert bottleneck adapters in every attention block.
    pub fn add_adapters(&mut self, spec: &AdapterSpec, init: &mut PeftInit) {
        for blk in self.attention_blocks_mut() {
            let [_, dim] = blk.attn.proj.weight.dims();
            let device = blk.attn.proj.weight.device();
            blk.adapter_attn = Some(Adapter::new(dim, spec, 1.0, init, &device));
            blk.adapter_mlp = Some(Adapter::new(dim, spec, spec.mlp_scale, init, &device));
        }
    }
}
