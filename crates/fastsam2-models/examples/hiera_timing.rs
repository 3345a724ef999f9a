//! Per-block timing of the SAM 2 image encoder (host fast path): `cargo run --release --example hiera_timing -- WEIGHTS`.
use std::time::Instant;

use burn::tensor::{Device, Tensor};
use fastsam2_models::hiera::HostMap;
use fastsam2_models::loader::{Network, load_checkpoint};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    let args: Vec<String> = std::env::args().collect();
    let device = Device::flex();
    let m = load_checkpoint(args[1].as_ref(), None, None, &device).unwrap();
    let Network::Sam2(s) = &m.network else {
        panic!("SAM 2 weights expected")
    };
    let x = Tensor::<4>::random(
        [1, 3, 1024, 1024],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let tr = &s.image_encoder.trunk;
    for rep in 0..3 {
        let t0 = Instant::now();
        let mut h = tr.patch_embed.proj.forward(x.clone()).permute([0, 2, 3, 1]);
        let [_, hh, ww, _] = h.dims();
        h = h + tr.pos_embed(hh, ww);
        let (v, [b, hh, ww, c]) = fastsam2_models::kernels::to_host(h);
        let mut m = HostMap {
            v,
            b,
            h: hh,
            w: ww,
            c,
        };
        let mut parts = vec![format!("embed:{:.0}", t0.elapsed().as_secs_f64() * 1e3)];
        for (i, blk) in tr.blocks.iter().enumerate() {
            let t = Instant::now();
            m = blk.forward_host(m);
            parts.push(format!("b{i}:{:.0}", t.elapsed().as_secs_f64() * 1e3));
        }
        let t1 = Instant::now();
        for hw in [256, 128, 64, 32] {
            let p = fastsam2_models::position_encoding::sine_2d_tensor(256, hw, hw, &device);
            let _ = p.slice([0..1, 0..1, 0..1, 0..1]).into_data();
        }
        println!("  pos encodings {:.0} ms", t1.elapsed().as_secs_f64() * 1e3);
        let t1 = Instant::now();
        let levels = tr.forward(x.clone());
        let _ = levels[0]
            .clone()
            .slice([0..1, 0..1, 0..1, 0..1])
            .into_data();
        let t_trunk = t1.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let (feats, pos) = s.image_encoder.neck.forward(levels);
        let _ = feats[0].clone().slice([0..1, 0..1, 0..1, 0..1]).into_data();
        let _ = pos[0].clone().slice([0..1, 0..1, 0..1, 0..1]).into_data();
        let t_neck = t1.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let ff = s.frame_features(fastsam2_models::fpn_neck::BackboneOut {
            backbone_fpn: feats[..3].to_vec(),
            vision_pos_enc: pos[..3].to_vec(),
        });
        let _ = ff
            .high_res
            .0
            .clone()
            .slice([0..1, 0..1, 0..1, 0..1])
            .into_data();
        let _ = ff
            .high_res
            .1
            .clone()
            .slice([0..1, 0..1, 0..1, 0..1])
            .into_data();
        println!(
            "  trunk.forward {t_trunk:.0} ms, neck + pos {t_neck:.0} ms, conv_s0/s1 {:.0} ms",
            t1.elapsed().as_secs_f64() * 1e3
        );
        let t1 = Instant::now();
        let lv = tr.forward_host_levels(x.clone()).unwrap();
        let t_l = t1.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let (f2, p2) = s.image_encoder.neck.forward_host(lv, &device);
        let _ = f2[0].clone().slice([0..1, 0..1, 0..1, 0..1]).into_data();
        let _ = p2[0].clone().slice([0..1, 0..1, 0..1, 0..1]).into_data();
        println!(
            "  host levels {t_l:.0} ms, host neck {:.0} ms",
            t1.elapsed().as_secs_f64() * 1e3
        );
        let t = Instant::now();
        let f = s.encode_frame(x.clone());
        let _ = f.vision_feat.into_data();
        println!(
            "rep {rep}: trunk {:.0} ms | {} | full encode_frame {:.0} ms",
            t0.elapsed().as_secs_f64() * 1e3 - t.elapsed().as_secs_f64() * 1e3,
            parts.join(" "),
            t.elapsed().as_secs_f64() * 1e3
        );
    }
}
