//! Training throughput (optimizer steps per second, batch 1, no augmentation, box prompts,
//! focal + dice + IoU-MSE loss, AdamW with clipping), as `tools/train_refs/bench_torch_train.py`
//! measures the same loop in PyTorch:
//!
//! * `micro_full_1024`: the micro SAM ViT fixture, full fine-tuning, 1024 x 1024 input;
//! * `micro_full_256`: the same at 256 x 256 (the CI tests' size);
//! * `mobilesam_decoder_1024`: full-size MobileSAM, mask decoder only (encoder frozen), 1024 x 1024.
//!   Needs full-size weights: `$FASTSAM2_MOBILESAM` or `/tmp/full/mobilesam_vit_t/weights.safetensors`
//!   (`python tools/fixtures/make_sam_fixtures.py --model mobilesam --out /tmp/full`).
//!
//! `cargo bench -p fastsam2-train --bench train_speed [-- NAME]`; `FASTSAM2_BENCH_STEPS`
//! (default 10) timed steps after 2 warm-up steps. Prints the median step time.

use std::path::{Path, PathBuf};
use std::time::Instant;

use fastsam2_train::{TrainConfig, TrainOptions, Trainer};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn config(out: &Path, model: &str, image_size: Option<usize>, freeze_encoder: bool) -> TrainConfig {
    let r = root();
    let size = image_size
        .map(|s| format!("image_size = {s}"))
        .unwrap_or_default();
    let text = format!(
        r#"
output_dir = "{out}"
[model]
checkpoint = "{model}"
{size}
[strategy]
kind = "full"
[strategy.full]
freeze_image_encoder = {freeze_encoder}
[data]
val_fraction = 0.25
[data.train]
images = "{r}/fixtures/train/shapes/images"
masks = "{r}/fixtures/train/shapes/masks"
[augment]
hflip = 0.0
scale_crop = 0.0
brightness = 0.0
contrast = 0.0
saturation = 0.0
[prompts]
kinds = ["box"]
[loss]
kind = "focal_dice"
[optim]
lr = 1e-4
[train]
max_steps = 1000
batch_size = 1
"#,
        out = out.display(),
        r = r.display(),
    );
    TrainConfig::from_toml_str(&text).expect("bench config")
}

fn bench(name: &str, cfg: TrainConfig, steps: usize) {
    let mut t = Trainer::new(cfg, &TrainOptions::default()).expect("trainer");
    for _ in 0..2 {
        t.train_step().expect("step");
    }
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let t0 = Instant::now();
        t.train_step().expect("step");
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    println!(
        "{name:24} median {:8.1} ms/step  {:7.2} steps/s  (min {:.1} ms, max {:.1} ms, {} steps, {:.2} % of parameters trained)",
        med * 1e3,
        1.0 / med,
        times[0] * 1e3,
        times[times.len() - 1] * 1e3,
        steps,
        100.0 * t.counts.fraction()
    );
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let steps: usize = std::env::var("FASTSAM2_BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let want = |n: &str| filter.as_deref().is_none_or(|f| n.contains(f));
    let dir = std::env::temp_dir().join(format!("fastsam2-train-bench-{}", std::process::id()));
    let micro = root().join("fixtures/sam_vit_micro/weights.safetensors");
    let micro = micro.to_string_lossy();
    if want("micro_full_1024") {
        bench(
            "micro_full_1024",
            config(&dir.join("a"), &micro, None, false),
            steps,
        );
    }
    if want("micro_full_256") {
        bench(
            "micro_full_256",
            config(&dir.join("b"), &micro, Some(256), false),
            steps,
        );
    }
    if want("mobilesam_decoder_1024") {
        let p = std::env::var("FASTSAM2_MOBILESAM")
            .unwrap_or_else(|_| "/tmp/full/mobilesam_vit_t/weights.safetensors".into());
        if Path::new(&p).exists() {
            bench(
                "mobilesam_decoder_1024",
                config(&dir.join("c"), &p, None, true),
                steps,
            );
        } else {
            println!("mobilesam_decoder_1024: skipped ({p} not found)");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
