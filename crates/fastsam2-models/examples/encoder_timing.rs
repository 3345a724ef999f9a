//! Quick timing of the image encoder: `cargo run --release --example encoder_timing -- WEIGHTS [reps]`.
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use burn::tensor::{Device, Tensor};
use fastsam2_models::loader::{Network, load_checkpoint};
use fastsam2_models::sam::ImageEncoder;

fn main() {
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    let args: Vec<String> = std::env::args().collect();
    let device = Device::flex();
    let m = load_checkpoint(args[1].as_ref(), None, None, &device).unwrap();
    let reps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let Network::Sam(sam) = &m.network else {
        panic!("encoder_timing runs SAM v1 models")
    };
    let x = Tensor::<4>::random(
        [1, 3, 1024, 1024],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    for r in 0..reps + 1 {
        let t0 = Instant::now();
        let mut marks = Vec::new();
        let y = match &sam.image_encoder {
            ImageEncoder::Vit(v) => v.forward_with(x.clone(), |name, t| {
                let _ = t.clone().slice([0..1, 0..1, 0..1, 0..1]).into_data();
                marks.push((name.to_string(), t0.elapsed().as_secs_f64()));
            }),
            ImageEncoder::TinyVit(v) => v.forward_with(x.clone(), |name, t| {
                let _ = t.clone().slice([0..1, 0..1, 0..1]).into_data();
                marks.push((name.to_string(), t0.elapsed().as_secs_f64()));
            }),
        };
        let _ = y.into_data();
        let total = t0.elapsed().as_secs_f64();
        let mut prev = 0.0;
        let parts: Vec<String> = marks
            .iter()
            .map(|(n, t)| {
                let s = format!("{n}:{:.0}", (t - prev) * 1000.0);
                prev = *t;
                s
            })
            .collect();
        println!(
            "rep {r}: total {:.0} ms | {} | neck:{:.0}",
            total * 1000.0,
            parts.join(" "),
            (total - prev) * 1000.0
        );
    }
}
