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

/// `fastsam2 bench <image|video|stream>`.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Image encoder and prompt -> mask latency (SAM, MobileSAM, SAM 2).
    Image(BenchArgs),
    /// Offline video tracking time per frame with 1..N objects (SAM 2), like bench.py sam2.
    Video(VideoBenchArgs),
    /// Streaming: a synthetic stream of N frames, per-frame time and peak RSS (bounded memory).
    Stream(StreamBenchArgs),
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Image(a) => run_image(a),
        BenchCommand::Video(a) => run_video(a),
        BenchCommand::Stream(a) => run_stream(a),
    }
}

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
    /// Timed repetitions of each prompt -> mask measurement (after one warm-up run).
    #[arg(long, default_value_t = 11)]
    pub prompt_reps: usize,
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

pub fn run_image(args: BenchArgs) -> Result<()> {
    let device = device(&args.model.device)?;
    let model = args.model.load(&device)?;
    let name = model.name.clone();
    let image = match &args.image {
        Some(p) => load_rgb(p)?,
        None => test_image()?,
    };
    let (h, w) = image.hw();
    if args.reps == 0 || args.prompt_reps == 0 {
        bail!("--reps and --prompt-reps must be at least 1");
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
    let (p1_ms, p1_runs) = median_ms(args.prompt_reps, 1, || {
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
    let (bp_ms, _) = median_ms(args.prompt_reps, 1, || {
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

#[derive(Debug, clap::Args)]
pub struct VideoBenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Frames folder (default: the synthetic 8-frame 1024x1024 video of the reference harness,
    /// written to a temporary folder).
    #[arg(long)]
    pub frames: Option<PathBuf>,
    /// Object counts to measure (objects are clicked on frame 0).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub objects: Vec<usize>,
    /// Timed repetitions per object count (after one warm-up round); the counts alternate
    /// within each repetition and the report gives each count's per-frame time relative to
    /// the first count in the same repetition.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct StreamBenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Frames to stream.
    #[arg(long, default_value_t = 200)]
    pub num_frames: usize,
    /// Frame side (square synthetic frames).
    #[arg(long, default_value_t = 512)]
    pub size: usize,
    /// Objects clicked on frame 0.
    #[arg(long, default_value_t = 1)]
    pub objects: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The harness's synthetic video (`make_sam2_refs.make_video`): textured background, a red disk
/// and a blue square moving; `size` x `size` pixels, frame `t`.
pub fn synthetic_frame(t: usize, size: usize) -> RgbImage {
    let s = size as f32 / 1024.0;
    let tf = t as f32;
    let (dx, dy) = (
        (330.0 + 40.0 * (tf % 16.0)) * s,
        (400.0 + 10.0 * (tf % 16.0)) * s,
    );
    let (sx, sy) = (
        (720.0 - 25.0 * (tf % 16.0)) * s,
        (650.0 - 20.0 * (tf % 16.0)) * s,
    );
    RgbImage::from_fn(size as u32, size as u32, |x, y| {
        let (x, y) = (x as f32 / s, y as f32 / s);
        let mut c = [
            90.0 + 40.0 * ((x + 7.0 * tf) / 41.0).sin() * (y / 67.0).cos(),
            110.0 + 40.0 * ((x - 3.0 * tf) / 59.0 + y / 83.0).cos(),
            100.0 + 30.0 * ((x + y) / 97.0).sin(),
        ];
        let (px, py) = (x * s, y * s);
        if (px - dx).powi(2) + (py - dy).powi(2) < (110.0 * s).powi(2) {
            c = [220.0, 40.0, 40.0];
        }
        if (px - sx).abs() < 100.0 * s && (py - sy).abs() < 100.0 * s {
            c = [30.0, 60.0, 210.0];
        }
        let tex = 12.0 * (x / 5.0 + y / 7.0).sin();
        [0, 1, 2].map(|k| (c[k] + tex).round().clamp(0.0, 255.0) as u8)
    })
    .expect("non-empty")
}

/// Click positions of the synthetic objects on frame 0 (disk, square, then spread points).
/// One positive click per object on frame 0 (object ids 1, 2, ...).
fn click_objects(
    session: &mut fastsam2_predict::video::Session,
    clicks: &[(f32, f32)],
) -> Result<()> {
    for (i, &(x, y)) in clicks.iter().enumerate() {
        session.add_prompt(
            0,
            i as u32 + 1,
            &fastsam2_predict::video::VideoPrompt::Points {
                points: vec![Point::positive(x, y)],
                bbox: None,
                clear: true,
            },
        )?;
    }
    Ok(())
}

fn object_clicks(n: usize, size: usize) -> Vec<(f32, f32)> {
    let s = size as f32 / 1024.0;
    let mut v = vec![(330.0 * s, 400.0 * s), (720.0 * s, 650.0 * s)];
    for i in 2..n {
        v.push((
            (100.0 + 97.0 * i as f32) % 1000.0 * s,
            (150.0 + 61.0 * i as f32) % 1000.0 * s,
        ));
    }
    v.truncate(n);
    v
}

fn run_video(args: VideoBenchArgs) -> Result<()> {
    use fastsam2_predict::video::{SessionOptions, VideoPredictor};
    if args.reps == 0 || args.objects.is_empty() || args.objects.contains(&0) {
        bail!("bench video: --reps must be >= 1 and --objects a list of counts >= 1");
    }
    let device = device(&args.model.device)?;
    let model = args.model.load(&device)?;
    let name = model.name.clone();
    let predictor = VideoPredictor::new(model, device)?;
    let tmp;
    let frames = match &args.frames {
        Some(f) => f.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("fastsam2-bench-video-{}", std::process::id()));
            std::fs::create_dir_all(&tmp)?;
            for t in 0..8 {
                fastsam2_core::overlay::save_png(
                    &synthetic_frame(t, 1024),
                    &tmp.join(format!("{t:05}.png")),
                )?;
            }
            tmp.clone()
        }
    };
    let threads = rayon::current_num_threads();
    let mut results = serde_json::Map::new();
    // repetition-major: the object counts alternate, so that a slow spell of this shared
    // machine lands on all of them instead of on one count's whole series, and each
    // repetition gives a paired ratio to the first count
    let mut runs: Vec<Vec<serde_json::Value>> = vec![Vec::new(); args.objects.len()];
    for rep in 0..args.reps + 1 {
        for (k, &n_obj) in args.objects.iter().enumerate() {
            let t0 = Instant::now();
            let mut session = predictor.open_folder(&frames, SessionOptions::default())?;
            let (h, w) = session.video_hw().expect("folder");
            let clicks = object_clicks(n_obj, w.max(h));
            let t1 = Instant::now();
            click_objects(&mut session, &clicks)?;
            let t2 = Instant::now();
            let mut per_frame = Vec::new();
            let mut tf = Instant::now();
            session.propagate(false, |_| {
                per_frame.push(tf.elapsed().as_secs_f64() * 1000.0);
                tf = Instant::now();
                Ok(())
            })?;
            let t3 = Instant::now();
            let n = session.num_frames();
            let run = json!({
                "open_ms": (t1 - t0).as_secs_f64() * 1000.0,
                "add_points_ms": (t2 - t1).as_secs_f64() * 1000.0,
                "propagate_ms": (t3 - t2).as_secs_f64() * 1000.0,
                "total_ms": (t3 - t0).as_secs_f64() * 1000.0,
                "per_frame_ms": per_frame,
                "propagate_per_tracked_frame_ms": (t3 - t2).as_secs_f64() * 1000.0 / (n - 1) as f64,
            });
            eprintln!(
                "{n_obj} object(s), run {rep}{}: {}",
                if rep == 0 { " (warm-up)" } else { "" },
                run
            );
            if rep > 0 {
                runs[k].push(run);
            }
        }
    }
    let per_frame = |r: &serde_json::Value| {
        r["propagate_per_tracked_frame_ms"]
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    for (k, &n_obj) in args.objects.iter().enumerate() {
        // paired with the same repetition of the first object count
        let mut ratios: Vec<f64> = runs[k]
            .iter()
            .zip(&runs[0])
            .map(|(r, r0)| per_frame(r) / per_frame(r0))
            .collect();
        ratios.sort_by(f64::total_cmp);
        let mut sorted = runs[k].clone();
        sorted.sort_by(|a, b| {
            a["total_ms"]
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&b["total_ms"].as_f64().unwrap_or(0.0))
        });
        let med = sorted[sorted.len() / 2].clone();
        results.insert(
            format!("video_{n_obj}obj"),
            json!({
                "median_run": med,
                "runs": runs[k],
                "per_frame_ratio_to_first_count": ratios,
                "median_ratio_to_first_count": ratios[ratios.len() / 2],
            }),
        );
    }
    let weights = if fastsam2_models::kernels::bf16_attention_weights() {
        "bf16"
    } else {
        "f32"
    };
    let report = json!({"model": name, "threads": threads, "attention_weights": weights, "results": results, "peak_rss_mib": peak_rss_mib()});
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

fn run_stream(args: StreamBenchArgs) -> Result<()> {
    use fastsam2_predict::video::{SessionOptions, VideoPredictor};
    let device = device(&args.model.device)?;
    let model = args.model.load(&device)?;
    let name = model.name.clone();
    let predictor = VideoPredictor::new(model, device)?;
    let mut session = predictor.streaming(SessionOptions::default());
    let clicks = object_clicks(args.objects, args.size);
    let t0 = Instant::now();
    let mut rss_at = Vec::new();
    let mut frame_ms = Vec::new();
    for t in 0..args.num_frames {
        let img = synthetic_frame(t, args.size);
        let tf = Instant::now();
        session.push_frame(&img)?;
        if t == 0 {
            click_objects(&mut session, &clicks)?;
        }
        let m = session.track()?;
        frame_ms.push(tf.elapsed().as_secs_f64() * 1000.0);
        let _ = m;
        if (t + 1) % 50 == 0 || t + 1 == args.num_frames {
            let rss = current_rss_mib().unwrap_or(0.0);
            rss_at.push(json!({"frame": t + 1, "rss_mib": rss, "peak_rss_mib": peak_rss_mib(), "retained_outputs": session.retained_outputs()}));
            eprintln!(
                "frame {}: rss {rss:.0} MiB, peak {:.0} MiB, {} retained outputs, {:.0} ms/frame",
                t + 1,
                peak_rss_mib().unwrap_or(0.0),
                session.retained_outputs(),
                frame_ms.iter().rev().take(50).sum::<f64>() / frame_ms.len().min(50) as f64
            );
        }
    }
    let mut sorted = frame_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let report = json!({
        "model": name, "num_frames": args.num_frames, "size": args.size, "objects": args.objects,
        "total_s": t0.elapsed().as_secs_f64(), "median_frame_ms": sorted[sorted.len() / 2],
        "peak_rss_mib": peak_rss_mib(), "rss_timeline": rss_at,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// Current resident set size (VmRSS), MiB.
fn current_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
