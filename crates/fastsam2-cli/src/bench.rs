//! `fastsam2 bench`: timings of the engine, laid out like the reference harness's `bench.py`
//! (median of N timed runs after a warm-up, peak RSS), so the two can be put side by side.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use fastsam2_core::image_io::{RgbImage, load_rgb};
use fastsam2_core::prompt::{Point, Prompt};
use fastsam2_models::common::tensor_from_vec;
use fastsam2_models::loader::Network;
use fastsam2_predict::ImagePredictor;
use serde_json::json;

use crate::model_args::{ModelArgs, device};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image to encode (default: the 1024x1024 test image, astronaut repeated 2x).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Timed repetitions per measurement (after one warm-up run).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn median_ms(reps: usize, warmup: usize, mut f: impl FnMut()) -> (f64, Vec<f64>) {
    for _ in 0..warmup {
        f();
    }
    let mut runs: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let out = runs.clone();
    runs.sort_by(f64::total_cmp);
    (runs[runs.len() / 2], out)
}

/// Peak resident set size of this process (VmHWM), MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn test_image() -> Result<RgbImage> {
    let root =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/images/astronaut.png");
    let a = load_rgb(&root)?;
    Ok(RgbImage::from_fn(1024, 1024, |x, y| {
        a.get_pixel(x / 2, y / 2).expect("in range")
    })?)
}

pub fn run(args: BenchArgs) -> Result<()> {
    let device = device(&args.model.device)?;
    let model = args.model.load(&device)?;
    let name = model.name.clone();
    let image = match &args.image {
        Some(p) => load_rgb(p)?,
        None => test_image()?,
    };
    let (h, w) = image.hw();
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let mut pred = ImagePredictor::new(model, device.clone());
    let size = pred.img_size();
    let threads = rayon::current_num_threads();
    eprintln!(
        "benchmarking {name} on {w}x{h} ({threads} threads, median of {} after 1 warm-up)",
        args.reps
    );

    let x = tensor_from_vec(vec![0.5f32; 3 * size * size], [1, 3, size, size], &device);
    let (enc_ms, enc_runs) = {
        match &pred.model().network {
            Network::Sam(sam) => median_ms(args.reps, 1, || {
                let _ = sam.image_encoder.forward(x.clone()).into_data();
            }),
            Network::Sam2(sam2) => median_ms(args.reps, 1, || {
                let f = sam2.encode_frame(x.clone());
                let _ = f.vision_feat.into_data();
            }),
        }
    };
    eprintln!("image encoder: {enc_ms:.0} ms");
    let (set_ms, _) = median_ms(args.reps, 0, || pred.set_image(&image).expect("set_image"));
    eprintln!("set_image (preprocess + encode): {set_ms:.0} ms");
    // the reference's prompts, scaled to this image (1024x1024 in the default case)
    let (sx, sy) = (w as f32 / 1024.0, h as f32 / 1024.0);
    let pt1 = Prompt::points(vec![Point::positive(500.0 * sx, 375.0 * sy)]);
    let (p1_ms, p1_runs) = median_ms(args.reps.max(5), 1, || {
        let _ = pred.predict(&pt1, true).expect("predict");
    });
    eprintln!("predict 1 point, multimask, incl. upscale to {w}x{h}: {p1_ms:.1} ms");
    let boxpt = Prompt {
        points: vec![Point::positive(500.0 * sx, 375.0 * sy)],
        bbox: Some(fastsam2_core::prompt::BoxXyxy::new(
            300.0 * sx,
            150.0 * sy,
            750.0 * sx,
            700.0 * sy,
        )),
        mask: None,
    };
    let (bp_ms, _) = median_ms(args.reps.max(5), 1, || {
        let _ = pred.predict(&boxpt, false).expect("predict");
    });
    eprintln!("predict box + point, single mask, incl. upscale: {bp_ms:.1} ms");
    let boxes: Vec<Prompt> = (0..16)
        .map(|i| {
            let o = i as f32 * 20.0;
            Prompt::bbox(fastsam2_core::prompt::BoxXyxy::new(
                (100.0 + o) * sx,
                (100.0 + o) * sy,
                (500.0 + o) * sx,
                (600.0 + o) * sy,
            ))
        })
        .collect();
    let (b16_ms, _) = median_ms(args.reps, 1, || {
        let _ = pred.predict_batch(&boxes, false).expect("predict");
    });
    eprintln!("predict 16 boxes (one batch), incl. upscale: {b16_ms:.1} ms");
    let rss = peak_rss_mib();
    let report = json!({
        "model": name,
        "image_size": [h, w],
        "threads": threads,
        "results": {
            "image_encoder_ms": {"median": enc_ms, "runs": enc_runs},
            "set_image_total_ms": set_ms,
            "predict_1pt_multimask_incl_upscale_ms": {"median": p1_ms, "runs": p1_runs},
            "predict_boxpt_single_incl_upscale_ms": bp_ms,
            "predict_16_boxes_batched_ms": b16_ms,
        },
        "peak_rss_mib": rss,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
