//! Per-component timing of SAM 2's per-object work (memory attention layers, memory
//! encoder): `cargo run --release --example memattn_timing -- WEIGHTS [frames] [reps]`.
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use burn::tensor::{Device, Distribution, Tensor};
use fastsam2_models::loader::{Network, load_checkpoint};

fn sync3(t: &Tensor<3>) {
    let _ = t.clone().slice([0..1, 0..1, 0..1]).into_data();
}

fn main() {
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    let args: Vec<String> = std::env::args().collect();
    let device = Device::flex();
    let m = load_checkpoint(args[1].as_ref(), None, None, &device).unwrap();
    let frames: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(7);
    let reps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let Network::Sam2(sam2) = &m.network else {
        panic!("memattn_timing runs SAM 2 models")
    };
    let ma = &sam2.memory_attention;
    let n = Distribution::Normal(0.0, 1.0);
    let l = 4096;
    let tgt = Tensor::<3>::random([1, l, 256], n, &device);
    let n_ptr = 4 * frames.min(16);
    // memories are stored in bf16 (their tokens are exact bf16 values, which the AMX value
    // products rely on)
    let bf16 = |t: Tensor<3>| {
        let dims = t.dims();
        let (v, _) = fastsam2_models::kernels::to_host(t);
        let v = v
            .iter()
            .map(|x| f32::from_bits(x.to_bits() & 0xffff_0000))
            .collect();
        fastsam2_models::kernels::from_host(v, dims, &device)
    };
    let mem = bf16(Tensor::<3>::random([1, frames * l + n_ptr, 64], n, &device));
    let pos = Tensor::<3>::random([1, frames * l + n_ptr, 64], n, &device);
    for r in 0..=reps {
        let mut line = format!("rep {r}:");
        let t_all = Instant::now();
        let mut out = tgt.clone();
        for (i, layer) in ma.layers.iter().enumerate() {
            let t = Instant::now();
            if i > 0 {
                out = layer.forward_self(out);
                sync3(&out);
            }
            let ts = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let t2 = layer.norm2.forward(out.clone());
            let a =
                layer
                    .cross_attn_image
                    .forward(t2, mem.clone() + pos.clone(), mem.clone(), n_ptr);
            out = out + a;
            sync3(&out);
            let tc = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let t3 = layer.norm3.forward(out.clone());
            out = out.clone() + layer.mlp(t3);
            sync3(&out);
            let tm = t.elapsed().as_secs_f64() * 1e3;
            line += &format!(" L{i} self {ts:.0} cross {tc:.0} mlp {tm:.0} |");
        }
        let out = ma.norm.forward(out);
        sync3(&out);
        line += &format!(" total {:.0} ms", t_all.elapsed().as_secs_f64() * 1e3);
        // memory encoder for one object: shared pixel features + one mask
        let feat = Tensor::<4>::random([1, 256, 64, 64], n, &device);
        let mask =
            Tensor::<4>::random([1, 1, 1024, 1024], Distribution::Uniform(0.0, 1.0), &device);
        let t = Instant::now();
        let (f, _) = sam2.memory_encoder.forward(feat, mask);
        let _ = f.slice([0..1, 0..1, 0..1, 0..1]).into_data();
        line += &format!(
            " | memory encoder {:.0} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        println!("{line}");
    }
    // two objects on one frame: separately (b = 1 each) against one batch (shared layer-0
    // queries), both from the frame's shared first self-attention; interleaved. Third: the
    // two b = 1 calls side by side (`rayon::join`), each thread mostly on its own object:
    // whether the per-object work loses time to its kernels' own thread scaling (AMD EPYC,
    // 4 frames, 2 threads: 954-979 ms against 940-964 batched, so it does not)
    let first = ma.forward_first_self(tgt.clone(), tgt.clone() * 0.0);
    let mem2 = bf16(Tensor::<3>::random([1, frames * l + n_ptr, 64], n, &device));
    for r in 0..=reps {
        let t = Instant::now();
        for m in [&mem, &mem2] {
            let o = ma.forward_from_first_self(first.clone(), m.clone(), pos.clone(), n_ptr);
            sync3(&o);
        }
        let sep = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let o = ma.forward_from_first_self(
            first.clone(),
            Tensor::cat(vec![mem.clone(), mem2.clone()], 0),
            Tensor::cat(vec![pos.clone(), pos.clone()], 0),
            n_ptr,
        );
        sync3(&o);
        let bat = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let run = |m: &Tensor<3>| {
            let o = ma.forward_from_first_self(first.clone(), m.clone(), pos.clone(), n_ptr);
            sync3(&o);
        };
        rayon::join(|| run(&mem), || run(&mem2));
        let par = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "rep {r}: two objects separately {sep:.0} ms, batched {bat:.0} ms, object-parallel {par:.0} ms"
        );
    }
}
