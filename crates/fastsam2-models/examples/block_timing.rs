//! Per-op timing of one global and one windowed ViT-B block (random weights).
use std::time::Instant;

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Distribution, Tensor};
use fastsam2_models::vit::{ImageEncoderViTConfig, decomposed_rel_pos_bias, window_partition};

fn t<const D: usize>(label: &str, t0: &mut Instant, x: &Tensor<D>) {
    let _ = x.clone().into_data();
    println!("  {label}: {:.0} ms", t0.elapsed().as_secs_f64() * 1000.0);
    *t0 = Instant::now();
}

fn main() {
    let device = Device::flex();
    let cfg = ImageEncoderViTConfig::vit_b();
    let enc = cfg.init(&device);
    for (bi, name) in [(2usize, "global"), (0, "windowed")] {
        let blk = &enc.blocks[bi];
        let x = Tensor::<4>::random([1, 64, 64, 768], Distribution::Normal(0.0, 1.0), &device);
        for _ in 0..2 {
            println!("{name} block");
            let mut t0 = Instant::now();
            let h = blk.norm1.forward(x.clone());
            t("norm1", &mut t0, &h);
            let h = if blk.window_size > 0 {
                window_partition(h, 14).0
            } else {
                h
            };
            t("partition", &mut t0, &h);
            let [b, hh, ww, c] = h.dims();
            let nh = 12;
            let hd = 64;
            let l = hh * ww;
            let qkv = blk.attn.qkv.forward(h.reshape([b, l, c]));
            t("qkv linear", &mut t0, &qkv);
            let qkv = qkv.reshape([b, l, 3, nh, hd]).permute([2, 0, 3, 1, 4]);
            let q: Tensor<4> = qkv.clone().slice([0..1]).reshape([b, nh, l, hd]);
            let k: Tensor<4> = qkv.clone().slice([1..2]).reshape([b, nh, l, hd]);
            let v: Tensor<4> = qkv.slice([2..3]).reshape([b, nh, l, hd]);
            t("split", &mut t0, &v);
            let bias = decomposed_rel_pos_bias(
                q.clone().reshape([b * nh, hh, ww, hd]),
                blk.attn.rel_pos_h.as_ref().unwrap().val(),
                blk.attn.rel_pos_w.as_ref().unwrap().val(),
                (hh, ww),
            )
            .reshape([b, nh, l, l]);
            t("rel bias", &mut t0, &bias);
            let out = attention(
                q.clone(),
                k.clone(),
                v.clone(),
                None,
                Some(bias),
                AttentionModuleOptions::default(),
            );
            t("attention+bias", &mut t0, &out);
            let out2 = attention(q, k, v, None, None, AttentionModuleOptions::default());
            t("attention nobias", &mut t0, &out2);
            let o = blk
                .attn
                .proj
                .forward(out.swap_dims(1, 2).reshape([b, l, c]));
            t("proj", &mut t0, &o);
            let xx = x.clone().reshape([1, 4096, 768]);
            let n2 = blk.norm2.forward(xx.clone());
            t("norm2", &mut t0, &n2);
            let m1 = blk.mlp.lin1.forward(n2);
            t("lin1", &mut t0, &m1);
            let m1 = burn::tensor::activation::gelu(m1);
            t("gelu", &mut t0, &m1);
            let m2 = blk.mlp.lin2.forward(m1);
            t("lin2", &mut t0, &m2);
        }
    }
}
