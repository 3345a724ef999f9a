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
    /// The pointwise half on host buffers: `input + gamma * pwconv2(gelu(pwconv1(x)))` with
    /// the channel-last rows transposed on the host.
    fn forward_pointwise_host(&self, input: Tensor<4>, x: Tensor<4>) -> Tensor<4> {
        use crate::kernels::mlp::{Act, mlp_channels_first};
        use crate::kernels::{from_host, to_host};
        let device = input.device();
        let [b, c, h, w] = x.dims();
        let hw = h * w;
        let (xh, _) = to_host(x);
        let (w1, [_, hid]) = to_host(self.pwconv1.weight.val());
        let (w2, _) = to_host(self.pwconv2.weight.val());
        let b1 = self.pwconv1.bias.as_ref().map(|p| to_host(p.val()).0);
        let b2 = self.pwconv2.bias.as_ref().map(|p| to_host(p.val()).0);
        let y = mlp_channels_first(
            &xh,
            b,
            hw,
            c,
            &w1,
            b1.as_deref(),
            hid,
            &w2,
            b2.as_deref(),
            c,
            Act::Gelu,
        );
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
    /// pix_feat: [B, C, 64, 64]; masks: [B, 1, 1024, 1024] (already mapped through the
    /// sigmoid and scale/bias). Returns (features [B, out, 64, 64], pos [B, out, 64, 64]).
    pub fn forward(&self, pix_feat: Tensor<4>, masks: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let m = self.mask_downsampler.forward(masks);
        let mut x = self.pix_feat_proj.forward(pix_feat) + m;
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
