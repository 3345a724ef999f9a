//! From samples to model inputs: SAM v1 preprocessing (Pillow-exact resize of the longest
//! side, normalisation, padding), low-resolution soft targets, and prompt simulation (jittered
//! boxes, points in the mask / background, corrective clicks in the error region).

use burn::tensor::{Device, Tensor};
use fastsam2_core::image_io::RgbImage;
use fastsam2_core::resize::{SAM_V1_PIXEL_MEAN, SAM_V1_PIXEL_STD, sam_v1_preprocess};
use fastsam2_models::common::tensor_from_vec;
use fastsam2_models::prompt_encoder::PointInput;

use crate::config::{PromptKind, PromptSection};
use crate::error::Result;
use crate::rng::Rng;

/// One sample in the encoder's frame.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// 3 x S x S normalised, zero-padded.
    pub pixels: Vec<f32>,
    /// L x L soft target (fraction of each low-res cell covered by the object), L = S / 4.
    pub target: Vec<f32>,
    /// L x L: 1 inside the resized image, 0 in the padding.
    pub valid: Vec<f32>,
    /// Resized image size inside the S x S input.
    pub input_hw: (usize, usize),
    /// Original (augmented) size and mask.
    pub original_hw: (usize, usize),
    pub mask: Vec<bool>,
}

/// Preprocess an image and its mask for an encoder input of `size` (low-res side `size / 4`).
pub fn prepare(
    img: &RgbImage,
    mask: &[bool],
    size: usize,
    pixel_mean: [f32; 3],
    pixel_std: [f32; 3],
) -> Result<Prepared> {
    let pre = sam_v1_preprocess(img, size)?;
    let mut pixels = pre.data;
    let (nh, nw) = pre.resized_hw;
    if pixel_mean != SAM_V1_PIXEL_MEAN || pixel_std != SAM_V1_PIXEL_STD {
        for c in 0..3 {
            let plane = &mut pixels[c * size * size..(c + 1) * size * size];
            for y in 0..nh {
                for v in &mut plane[y * size..y * size + nw] {
                    let raw = *v * SAM_V1_PIXEL_STD[c] + SAM_V1_PIXEL_MEAN[c];
                    *v = (raw - pixel_mean[c]) / pixel_std[c];
                }
            }
        }
    }
    let (h, w) = img.hw();
    let l = size / 4;
    let mut target = vec![0f32; l * l];
    let mut valid = vec![0f32; l * l];
    let src_x: Vec<usize> = (0..nw)
        .map(|x| (((x as f64 + 0.5) * w as f64 / nw as f64) as usize).min(w - 1))
        .collect();
    for y in 0..nh.min(size) {
        let sy = (((y as f64 + 0.5) * h as f64 / nh as f64) as usize).min(h - 1);
        let row = &mask[sy * w..(sy + 1) * w];
        let ly = y / 4;
        for (x, &sx) in src_x.iter().enumerate().take(size) {
            if row[sx] {
                target[ly * l + x / 4] += 1.0 / 16.0;
            }
        }
    }
    for ly in 0..l {
        for lx in 0..l {
            if 4 * ly + 2 <= nh && 4 * lx + 2 <= nw {
                valid[ly * l + lx] = 1.0;
            }
        }
    }
    Ok(Prepared {
        pixels,
        target,
        valid,
        input_hw: (nh, nw),
        original_hw: (h, w),
        mask: mask.to_vec(),
    })
}

/// Prompts of one sample in the encoder frame.
#[derive(Clone, Debug, Default)]
pub struct SamplePrompt {
    /// (x, y) in pixels of the S x S input.
    pub points: Vec<[f32; 2]>,
    /// 1 positive, 0 negative, -1 padding.
    pub labels: Vec<i32>,
    pub bbox: Option<[f32; 4]>,
}

/// The tight box of a mask, `[x0, y0, x1, y1]` with inclusive pixel indices.
pub fn mask_box(mask: &[bool], w: usize, h: usize) -> Option<[f64; 4]> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..h {
        for x in 0..w {
            if mask[y * w + x] {
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x);
                y1 = y1.max(y);
            }
        }
    }
    (x0 != usize::MAX).then_some([x0 as f64, y0 as f64, x1 as f64, y1 as f64])
}

fn pick(mask: &[bool], want: bool, rng: &mut Rng) -> Option<usize> {
    let n = mask.iter().filter(|&&b| b == want).count();
    if n == 0 {
        return None;
    }
    let k = rng.below(n);
    mask.iter()
        .enumerate()
        .filter(|(_, b)| **b == want)
        .nth(k)
        .map(|(i, _)| i)
}

/// Simulate a prompt of `kind` for a prepared sample (training: jittered; validation:
/// `jitter = false`, centre-most points are not needed, the draws are seeded per sample).
pub fn simulate(
    p: &Prepared,
    kind: PromptKind,
    cfg: &PromptSection,
    jitter: bool,
    rng: &mut Rng,
) -> SamplePrompt {
    let (h, w) = p.original_hw;
    let (nh, nw) = p.input_hw;
    let (sx, sy) = (nw as f64 / w as f64, nh as f64 / h as f64);
    let mut out = SamplePrompt::default();
    if matches!(kind, PromptKind::Box | PromptKind::BoxPoints)
        && let Some([x0, y0, x1, y1]) = mask_box(&p.mask, w, h)
    {
        let mut b = [x0, y0, x1, y1];
        if jitter && cfg.box_jitter > 0.0 {
            let (bw, bh) = (x1 - x0 + 1.0, y1 - y0 + 1.0);
            for (i, v) in b.iter_mut().enumerate() {
                let side = if i % 2 == 0 { bw } else { bh };
                let sd = cfg.box_jitter * side;
                let noise =
                    (rng.normal() * sd).clamp(-cfg.box_jitter_max_px, cfg.box_jitter_max_px);
                *v += noise;
            }
            b[0] = b[0].clamp(0.0, (w - 1) as f64);
            b[2] = b[2].clamp(0.0, (w - 1) as f64);
            b[1] = b[1].clamp(0.0, (h - 1) as f64);
            b[3] = b[3].clamp(0.0, (h - 1) as f64);
            if b[2] < b[0] {
                b.swap(0, 2);
            }
            if b[3] < b[1] {
                b.swap(1, 3);
            }
        }
        out.bbox = Some([
            (b[0] * sx) as f32,
            (b[1] * sy) as f32,
            (b[2] * sx) as f32,
            (b[3] * sy) as f32,
        ]);
    }
    if matches!(kind, PromptKind::Points | PromptKind::BoxPoints) {
        let mut push = |want: bool, label: i32, rng: &mut Rng| match pick(&p.mask, want, rng) {
            Some(i) => {
                out.points
                    .push([((i % w) as f64 * sx) as f32, ((i / w) as f64 * sy) as f32]);
                out.labels.push(label);
            }
            None => {
                out.points.push([0.0, 0.0]);
                out.labels.push(-1);
            }
        };
        for _ in 0..cfg.positive_points {
            push(true, 1, rng);
        }
        for _ in 0..cfg.negative_points {
            push(false, 0, rng);
        }
    }
    out
}

/// A corrective click: uniformly in the error region of `pred_logits` (L x L) against the
/// target, positive on a false negative, negative on a false positive (SAM's interactive
/// training). A padding point when the prediction has no error.
pub fn corrective_click(p: &Prepared, pred_logits: &[f32], rng: &mut Rng) -> ([f32; 2], i32) {
    let errors: Vec<usize> = (0..p.target.len())
        .filter(|&i| p.valid[i] > 0.0 && (pred_logits[i] > 0.0) != (p.target[i] >= 0.5))
        .collect();
    if errors.is_empty() {
        return ([0.0, 0.0], -1);
    }
    let i = errors[rng.below(errors.len())];
    let l = (p.target.len() as f64).sqrt() as usize;
    let (lx, ly) = (i % l, i / l);
    let x = (lx * 4 + rng.below(4)) as f32;
    let y = (ly * 4 + rng.below(4)) as f32;
    let label = if p.target[i] >= 0.5 { 1 } else { 0 };
    ([x, y], label)
}

/// Batched tensors for the prompt encoder. All prompts of a batch have the same signature.
pub fn prompt_tensors(
    prompts: &[SamplePrompt],
    device: &Device,
) -> (Option<PointInput>, Option<Tensor<2>>) {
    let b = prompts.len();
    let n = prompts[0].points.len();
    let points = (n > 0).then(|| {
        let coords: Vec<f32> = prompts
            .iter()
            .flat_map(|p| p.points.iter().flat_map(|q| q.iter().copied()))
            .collect();
        let labels: Vec<i32> = prompts.iter().flat_map(|p| p.labels.clone()).collect();
        PointInput {
            coords: tensor_from_vec(coords, [b, n, 2], device),
            labels,
        }
    });
    let boxes = prompts[0].bbox.is_some().then(|| {
        let v: Vec<f32> = prompts
            .iter()
            .flat_map(|p| p.bbox.unwrap_or([0.0; 4]))
            .collect();
        tensor_from_vec(v, [b, 4], device)
    });
    (points, boxes)
}
