//! Host fast paths of the encoders' attention layers (inference on the flex device).

use burn::tensor::Tensor;

use super::attention::{Bias, Grid, QkvLayout, grid_attention};
use super::{from_host, to_host};
use crate::tiny_vit::TinyAttention;
use crate::vit::{Attention, get_rel_pos};

impl Attention {
    /// Same result as the generic `forward`, with the fused attention kernel.
    pub fn forward_fused(&self, x: Tensor<4>) -> Tensor<4> {
        let device = x.device();
        let [b, h, w, c] = x.dims();
        let nh = self.num_heads;
        let hd = c / nh;
        let qkv = self.qkv.forward(x.reshape([b, h * w, c]));
        let (qkv, _) = to_host(qkv);
        let tables = match (&self.rel_pos_h, &self.rel_pos_w) {
            (Some(rh), Some(rw)) => Some((
                to_host(get_rel_pos(h, rh.val())).0,
                to_host(get_rel_pos(w, rw.val())).0,
            )),
            _ => None,
        };
        let bias = match &tables {
            Some((rh, rw)) => Bias::RelPos { rh, rw },
            None => Bias::None,
        };
        let grid = Grid::new(b, h, w, nh, hd);
        let out = grid_attention(&qkv, &QkvLayout::sam(h * w, c, hd), &grid, bias);
        self.proj.forward(from_host(out, [b, h, w, c], &device))
    }
}

impl TinyAttention {
    /// Same result as the generic `forward`, with the fused attention kernel.
    pub fn forward_fused(&self, x: Tensor<3>) -> Tensor<3> {
        let device = x.device();
        let [b, n, _] = x.dims();
        let (nh, kd) = (self.num_heads, self.key_dim);
        let side = (n as f64).sqrt().round() as usize;
        assert_eq!(side * side, n, "TinyViT attention runs on square windows");
        let qkv = self.qkv.forward(self.norm.forward(x));
        let (qkv, _) = to_host(qkv);
        let (ab, _) = to_host(self.attention_biases.val());
        let n_off = ab.len() / nh;
        let mut table = vec![0f32; nh * n * n];
        for h in 0..nh {
            for (i, &idx) in self.bias_idxs.iter().enumerate() {
                table[h * n * n + i] = ab[h * n_off + idx];
            }
        }
        let grid = Grid::new(b, side, side, nh, kd);
        let out = grid_attention(
            &qkv,
            &QkvLayout::tiny_vit(n, nh, kd),
            &grid,
            Bias::PerHead(&table),
        );
        self.proj.forward(from_host(out, [b, n, nh * kd], &device))
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::tensor::{Device, Distribution, Tensor};

    use crate::tiny_vit::TinyViTConfig;
    use crate::vit::ImageEncoderViTConfig;

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    fn randomise<const D: usize>(p: &Param<Tensor<D>>) -> Param<Tensor<D>> {
        let t = p.val();
        Param::from_tensor(Tensor::random(
            t.shape(),
            Distribution::Normal(0.0, 0.5),
            &t.device(),
        ))
    }

    #[test]
    fn vit_attention_fused_equals_generic() {
        let device = Device::flex();
        let mut cfg = ImageEncoderViTConfig::vit_b();
        cfg.embed_dim = 64;
        cfg.num_heads = 4;
        cfg.depth = 2;
        cfg.img_size = 320; // grid 20: windows of 14 need padding
        cfg.global_attn_indexes = vec![1];
        let enc = cfg.init(&device);
        for blk in &enc.blocks {
            let mut attn = blk.attn.clone();
            attn.rel_pos_h = attn.rel_pos_h.as_ref().map(randomise);
            attn.rel_pos_w = attn.rel_pos_w.as_ref().map(randomise);
            let side = if blk.window_size > 0 {
                blk.window_size
            } else {
                20
            };
            let x =
                Tensor::<4>::random([2, side, side, 64], Distribution::Normal(0.0, 1.0), &device);
            let d = max_diff(attn.forward_generic(x.clone()), attn.forward_fused(x));
            assert!(d < 1e-5, "window {}: {d}", blk.window_size);
        }
    }

    #[test]
    fn tiny_vit_attention_fused_equals_generic() {
        let device = Device::flex();
        let mut cfg = TinyViTConfig::mobile_sam();
        cfg.embed_dims = vec![16, 32, 64, 320];
        cfg.depths = vec![1, 1, 1, 1];
        cfg.num_heads = vec![1, 2, 2, 4];
        let enc = cfg.init(&device);
        let crate::tiny_vit::Layer::Basic(layer) = &enc.layers[1] else {
            panic!("stage 1 is attention")
        };
        let mut attn = layer.blocks[0].attn.clone();
        attn.attention_biases = randomise(&attn.attention_biases);
        let x = Tensor::<3>::random([3, 49, 32], Distribution::Normal(0.0, 1.0), &device);
        let d = max_diff(attn.forward_generic(x.clone()), attn.forward_fused(x));
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn gelu_kernel_equals_burn() {
        let device = Device::flex();
        let x = Tensor::<2>::random([64, 1000], Distribution::Normal(0.0, 3.0), &device);
        let d = max_diff(
            super::super::gelu(x.clone()),
            burn::tensor::activation::gelu(x),
        );
        assert!(d < 2e-6, "{d}");
    }
}
