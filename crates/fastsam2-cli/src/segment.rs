//! `fastsam2 segment`: masks for one image and a prompt, in the layout of DESIGN.md's CLI
//! contract (`result.json`, `mask_<k>.png`, `--save-logits` npy files) plus `overlay.png`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fastsam2_core::image_io::load_rgb;
use fastsam2_core::mask_io::{read_npy, write_binary_mask_png, write_npy_f32};
use fastsam2_core::overlay::{draw_masks, draw_prompts, save_png};
use fastsam2_core::prompt::{BoxXyxy, MaskInput, Point, Prompt};
use fastsam2_predict::{ImagePredictor, Prediction};
use serde::Serialize;

use crate::model_args::{ModelArgs, device};

#[derive(Debug, clap::Args)]
pub struct SegmentArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Input image (PNG or JPEG).
    #[arg(long)]
    pub image: PathBuf,
    /// A click X,Y[,LABEL] in pixels of the image; LABEL 1 = positive (default), 0 = negative.
    #[arg(long = "point", value_name = "X,Y[,LABEL]", value_parser = parse_point)]
    pub points: Vec<Point>,
    /// A box X0,Y0,X1,Y1 in pixels. Repeat for several boxes: each is decoded as its own
    /// prompt in one batch (without points), and masks are numbered box by box.
    #[arg(long = "box", value_name = "X0,Y0,X1,Y1", value_parser = parse_box)]
    pub boxes: Vec<BoxXyxy>,
    /// Low-resolution logits of a previous prediction (`low_res_logits.npy`): 256x256,
    /// 1x256x256 or 1x1x256x256; `FILE.npy:K` picks mask K of a Kx256x256 file.
    #[arg(long, value_name = "LOGITS.npy[:K]")]
    pub mask_input: Option<String>,
    /// Return three masks (for ambiguous prompts) instead of one.
    #[arg(long)]
    pub multimask: bool,
    /// Also write low_res_logits.npy (K x 256 x 256) and logits.npy (K x H x W), f32.
    #[arg(long)]
    pub save_logits: bool,
    /// Do not write overlay.png.
    #[arg(long)]
    pub no_overlay: bool,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
}

fn parse_nums(s: &str, what: &str) -> Result<Vec<f32>, String> {
    s.split(',')
        .map(|t| {
            let v: f32 = t
                .trim()
                .parse()
                .map_err(|_| format!("{what} '{s}': '{t}' is not a number"))?;
            if v.is_finite() {
                Ok(v)
            } else {
                Err(format!("{what} '{s}': '{t}' is not a finite number"))
            }
        })
        .collect()
}

fn parse_point(s: &str) -> Result<Point, String> {
    let v = parse_nums(s, "point")?;
    match v.as_slice() {
        [x, y] => Ok(Point::positive(*x, *y)),
        [x, y, l] if *l == 0.0 || *l == 1.0 => Ok(Point {
            x: *x,
            y: *y,
            label: *l as i32,
        }),
        [_, _, l] => Err(format!(
            "point '{s}': label {l} must be 1 (positive) or 0 (negative)"
        )),
        _ => Err(format!("point '{s}': expected X,Y or X,Y,LABEL")),
    }
}

fn parse_box(s: &str) -> Result<BoxXyxy, String> {
    match parse_nums(s, "box")?.as_slice() {
        [a, b, c, d] => Ok(BoxXyxy::new(*a, *b, *c, *d)),
        _ => Err(format!("box '{s}': expected X0,Y0,X1,Y1")),
    }
}

/// Read `--mask-input FILE.npy[:K]` as 256x256 logits.
fn read_mask_input(spec: &str, size: usize) -> Result<MaskInput> {
    let (file, index) = match spec.rsplit_once(':') {
        Some((f, k)) if !k.is_empty() && k.chars().all(|c| c.is_ascii_digit()) => {
            (f, Some(k.parse::<usize>()?))
        }
        _ => (spec, None),
    };
    let arr = read_npy(Path::new(file)).with_context(|| format!("--mask-input {file}"))?;
    let data = arr.data.to_f32();
    let plane = size * size;
    let dims: Vec<usize> = arr.shape.iter().copied().filter(|&d| d != 1).collect();
    let logits = match (dims.as_slice(), index) {
        ([h, w], None) if *h == size && *w == size => data,
        ([k, h, w], Some(i)) if *h == size && *w == size && i < *k => {
            data[i * plane..(i + 1) * plane].to_vec()
        }
        ([k, h, w], None) if *h == size && *w == size => {
            bail!(
                "--mask-input {file} holds {k} masks of {h}x{w}; pick one with {file}:K (0..{})",
                k - 1
            )
        }
        _ => bail!(
            "--mask-input {file} has shape {:?}{}; expected {size}x{size} low-resolution logits",
            arr.shape,
            index
                .map(|i| format!(" (mask {i} requested)"))
                .unwrap_or_default()
        ),
    };
    Ok(MaskInput { logits, size })
}

#[derive(Serialize)]
struct MaskEntry {
    file: String,
    score: f32,
    area: usize,
    bbox: [usize; 4],
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<usize>,
}

#[derive(Serialize)]
struct SegmentResult {
    model: String,
    image_size: [usize; 2],
    masks: Vec<MaskEntry>,
}

/// Panels of equal height side by side, separated by a white gap.
fn hconcat(panels: &[fastsam2_core::image_io::RgbImage]) -> fastsam2_core::image_io::RgbImage {
    let (h, w) = panels[0].hw();
    let gap = 8;
    let total = panels.len() * w + (panels.len() - 1) * gap;
    fastsam2_core::image_io::RgbImage::from_fn(total as u32, h as u32, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let (i, off) = (x / (w + gap), x % (w + gap));
        if off >= w {
            [255, 255, 255]
        } else {
            panels[i].get_pixel(off as u32, y as u32).expect("in range")
        }
    })
    .expect("non-empty panels")
}

/// Area and `[x, y, w, h]` bounding box (pycocotools `toBbox` convention) of a mask.
pub fn area_bbox(mask: &[bool], w: usize) -> (usize, [usize; 4]) {
    let (mut area, mut x0, mut y0, mut x1, mut y1) = (0, usize::MAX, usize::MAX, 0, 0);
    for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
        let (x, y) = (i % w, i / w);
        area += 1;
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if area == 0 {
        (0, [0, 0, 0, 0])
    } else {
        (area, [x0, y0, x1 - x0 + 1, y1 - y0 + 1])
    }
}

pub fn run(args: SegmentArgs) -> Result<()> {
    let image = load_rgb(&args.image)?;
    let (h, w) = image.hw();
    // Validate prompts before the (slow) model load and encoding.
    let mask = args
        .mask_input
        .as_deref()
        .map(|s| read_mask_input(s, 256))
        .transpose()?;
    let prompts: Vec<Prompt> = if args.boxes.len() > 1 {
        if !args.points.is_empty() || mask.is_some() {
            bail!(
                "several --box prompts are decoded as a batch of box-only prompts; drop --point/--mask-input or give one box"
            );
        }
        args.boxes.iter().map(|b| Prompt::bbox(*b)).collect()
    } else {
        vec![Prompt {
            points: args.points.clone(),
            bbox: args.boxes.first().copied(),
            mask,
        }]
    };
    for (i, p) in prompts.iter().enumerate() {
        p.validate(w, h, 256).map_err(|e| {
            anyhow::anyhow!(if prompts.len() > 1 {
                format!("box {i}: {e}")
            } else {
                e.to_string()
            })
        })?;
    }

    let device = device(&args.model.device)?;
    let model = args.model.load(&device)?;
    let name = model.name.clone();
    let mut predictor = ImagePredictor::new(model, device);
    let t0 = Instant::now();
    predictor.set_image(&image)?;
    tracing::info!(
        "encoded {}x{} image in {:.2} s",
        w,
        h,
        t0.elapsed().as_secs_f64()
    );
    let t1 = Instant::now();
    let preds = predictor.predict_batch(&prompts, args.multimask)?;
    let n_masks: usize = preds.iter().map(|p| p.num_masks).sum();
    tracing::info!(
        "decoded {n_masks} mask(s) in {:.1} ms",
        t1.elapsed().as_secs_f64() * 1000.0
    );

    write_outputs(&args, &name, &image, &prompts, &preds)?;
    tracing::info!("wrote {}", args.out.display());
    Ok(())
}

fn write_outputs(
    args: &SegmentArgs,
    name: &str,
    image: &fastsam2_core::image_io::RgbImage,
    prompts: &[Prompt],
    preds: &[Prediction],
) -> Result<()> {
    let (h, w) = image.hw();
    let out = &args.out;
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output folder {}", out.display()))?;
    let mut entries = Vec::new();
    let mut all_masks: Vec<Vec<bool>> = Vec::new();
    let mut k = 0;
    for (pi, p) in preds.iter().enumerate() {
        for j in 0..p.num_masks {
            let m = p.mask(j);
            let (area, bbox) = area_bbox(&m, w);
            let file = format!("mask_{k}.png");
            write_binary_mask_png(&out.join(&file), w as u32, h as u32, &m)?;
            entries.push(MaskEntry {
                file,
                score: p.scores[j],
                area,
                bbox,
                prompt: (preds.len() > 1).then_some(pi),
            });
            all_masks.push(m);
            k += 1;
        }
    }
    if args.save_logits {
        let s = preds[0].low_res_size;
        let low: Vec<f32> = preds
            .iter()
            .flat_map(|p| p.low_res_logits.iter().copied())
            .collect();
        write_npy_f32(&out.join("low_res_logits.npy"), &[k, s, s], &low)?;
        let full: Vec<f32> = preds
            .iter()
            .flat_map(|p| p.logits.iter().copied())
            .collect();
        write_npy_f32(&out.join("logits.npy"), &[k, h, w], &full)?;
    }
    if !args.no_overlay {
        let points: Vec<Point> = prompts
            .iter()
            .flat_map(|p| p.points.iter().copied())
            .collect();
        let boxes: Vec<BoxXyxy> = prompts.iter().filter_map(|p| p.bbox).collect();
        let img = if preds.len() == 1 {
            // one panel per mask, side by side, in the model's order
            let panels: Vec<_> = all_masks
                .iter()
                .map(|m| draw_prompts(&draw_masks(image, &[m.as_slice()], 0.45), &points, &boxes))
                .collect();
            hconcat(&panels)
        } else {
            // several prompts: the best mask of each, one colour per prompt
            let best: Vec<&[bool]> = preds
                .iter()
                .scan(0, |start, p| {
                    let i = *start + p.best();
                    *start += p.num_masks;
                    Some(all_masks[i].as_slice())
                })
                .collect();
            draw_prompts(&draw_masks(image, &best, 0.45), &points, &boxes)
        };
        save_png(&img, &out.join("overlay.png")).context("cannot write overlay.png")?;
    }
    let result = SegmentResult {
        model: name.to_string(),
        image_size: [h, w],
        masks: entries,
    };
    let json = serde_json::to_string_pretty(&result)?;
    std::fs::write(out.join("result.json"), json)
        .with_context(|| format!("cannot write {}", out.join("result.json").display()))?;
    Ok(())
}
