//! Training data: an image folder + a mask folder (binary PNGs, paired by file stem) or a COCO
//! instances JSON (polygons and RLE, one sample per non-crowd instance); the train/val split;
//! augmentation applied to image and mask together.
//!
//! Everything is read and checked when the data set is opened, before the first step: a
//! missing mask, a mask whose size differs from its image, an empty mask or an unreadable file
//! is an error that names the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fastsam2_core::image_io::{RgbImage, load_rgb};
use fastsam2_core::mask_io::read_binary_mask_png;
use fastsam2_eval::coco::CocoGt;
use rayon::prelude::*;

use crate::config::{AugmentSection, DataSection, SourceSection};
use crate::error::{Result, TrainError, io_err};
use crate::rng::Rng;

/// One training sample: an image and one object's binary mask.
#[derive(Clone, Debug)]
pub struct Sample {
    /// `stem` (folder) or `file_name#annotation_id` (COCO).
    pub name: String,
    pub image: Arc<RgbImage>,
    /// Row-major foreground flags, image size.
    pub mask: Arc<Vec<bool>>,
}

impl Sample {
    pub fn hw(&self) -> (usize, usize) {
        self.image.hw()
    }
}

const IMAGE_EXTS: [&str; 6] = ["jpg", "jpeg", "png", "bmp", "tif", "tiff"];

fn list_by_stem(dir: &Path, exts: &[&str]) -> Result<BTreeMap<String, PathBuf>> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let p = e.map_err(io_err(dir))?.path();
        let ok = p
            .extension()
            .and_then(|s| s.to_str())
            .is_some_and(|x| exts.iter().any(|e| x.eq_ignore_ascii_case(e)));
        if ok && let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
            m.insert(stem.to_string(), p);
        }
    }
    Ok(m)
}

fn load_folder(images: &Path, masks: &Path, skip_empty: bool) -> Result<Vec<Sample>> {
    let imgs = list_by_stem(images, &IMAGE_EXTS)?;
    if imgs.is_empty() {
        return Err(TrainError::Data(format!(
            "no images (jpg/png/bmp/tif) in {}",
            images.display()
        )));
    }
    let msks = list_by_stem(masks, &["png"])?;
    let mut pairs = Vec::with_capacity(imgs.len());
    for (stem, ip) in &imgs {
        let mp = msks.get(stem).ok_or_else(|| TrainError::MissingMask {
            image: ip.clone(),
            expected: masks.join(format!("{stem}.png")),
        })?;
        pairs.push((stem.clone(), ip.clone(), mp.clone()));
    }
    let loaded: Vec<Result<Option<Sample>>> = pairs
        .par_iter()
        .map(|(stem, ip, mp)| {
            let img = load_rgb(ip)?;
            let m = read_binary_mask_png(mp)?;
            if (m.width, m.height) != (img.width(), img.height()) {
                return Err(TrainError::MaskSizeMismatch {
                    mask: mp.clone(),
                    image: ip.clone(),
                    mask_w: m.width,
                    mask_h: m.height,
                    image_w: img.width(),
                    image_h: img.height(),
                });
            }
            if !m.data.iter().any(|&b| b) {
                if skip_empty {
                    return Ok(None);
                }
                return Err(TrainError::EmptyMask {
                    what: mp.display().to_string(),
                });
            }
            Ok(Some(Sample {
                name: stem.clone(),
                image: Arc::new(img),
                mask: Arc::new(m.data),
            }))
        })
        .collect();
    let mut out = Vec::with_capacity(loaded.len());
    for s in loaded {
        if let Some(s) = s? {
            out.push(s);
        }
    }
    Ok(out)
}

fn load_coco(images: &Path, json: &Path, skip_empty: bool) -> Result<Vec<Sample>> {
    let gt = CocoGt::load(json)?;
    let mut by_image: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, a) in gt.annotations.iter().enumerate() {
        if !a.iscrowd {
            by_image.entry(a.image_id).or_default().push(i);
        }
    }
    let jobs: Vec<(i64, Vec<usize>)> = by_image.into_iter().collect();
    let loaded: Vec<Result<Vec<Sample>>> = jobs
        .par_iter()
        .map(|(image_id, anns)| {
            let im = gt.image(*image_id).ok_or_else(|| {
                TrainError::Data(format!(
                    "{}: annotation refers to unknown image id {image_id}",
                    json.display()
                ))
            })?;
            let ip = images.join(&im.file_name);
            let img = Arc::new(load_rgb(&ip)?);
            if (img.width(), img.height()) != (im.width, im.height) {
                return Err(TrainError::Data(format!(
                    "{}: image {} is {}x{} but the JSON says {}x{}",
                    json.display(),
                    ip.display(),
                    img.width(),
                    img.height(),
                    im.width,
                    im.height
                )));
            }
            let mut out = Vec::new();
            for &ai in anns {
                let a = &gt.annotations[ai];
                let mask: Vec<bool> = a.rle.decode().into_iter().map(|v| v != 0).collect();
                if !mask.iter().any(|&b| b) {
                    if skip_empty {
                        continue;
                    }
                    return Err(TrainError::EmptyMask {
                        what: format!("of annotation id {} in {}", a.id, json.display()),
                    });
                }
                out.push(Sample {
                    name: format!("{}#{}", im.file_name, a.id),
                    image: img.clone(),
                    mask: Arc::new(mask),
                });
            }
            Ok(out)
        })
        .collect();
    let mut out = Vec::new();
    for s in loaded {
        out.extend(s?);
    }
    Ok(out)
}

/// Read every sample of a source.
pub fn load_source(src: &SourceSection, skip_empty: bool) -> Result<Vec<Sample>> {
    let samples = match (&src.masks, &src.coco) {
        (Some(m), None) => load_folder(&src.images, m, skip_empty)?,
        (None, Some(c)) => load_coco(&src.images, c, skip_empty)?,
        _ => {
            return Err(TrainError::Config(
                "a data source needs exactly one of `masks` or `coco`".into(),
            ));
        }
    };
    if samples.is_empty() {
        return Err(TrainError::Data(format!(
            "no usable samples in {}",
            src.images.display()
        )));
    }
    Ok(samples)
}

/// Training and validation samples.
#[derive(Clone, Debug)]
pub struct Splits {
    pub train: Vec<Sample>,
    pub val: Vec<Sample>,
}

/// Open the configured data and split it.
pub fn open(data: &DataSection, seed: u64) -> Result<Splits> {
    let all = load_source(&data.train, data.skip_empty_masks)?;
    if let Some(v) = &data.val {
        let val = load_source(v, data.skip_empty_masks)?;
        return Ok(Splits { train: all, val });
    }
    let n = all.len();
    if n < 2 {
        return Err(TrainError::Data(format!(
            "{} holds {n} sample(s): a validation split needs at least 2 (or give data.val)",
            data.train.images.display()
        )));
    }
    let n_val = ((n as f64 * data.val_fraction).round() as usize).clamp(1, n - 1);
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(seed, &[0x5917]).shuffle(&mut order);
    let val_set: std::collections::BTreeSet<usize> = order[..n_val].iter().copied().collect();
    let mut train = Vec::with_capacity(n - n_val);
    let mut val = Vec::with_capacity(n_val);
    for (i, s) in all.into_iter().enumerate() {
        if val_set.contains(&i) {
            val.push(s);
        } else {
            train.push(s);
        }
    }
    Ok(Splits { train, val })
}

/// An augmented copy of a sample: HWC bytes and mask of `w x h`.
#[derive(Clone, Debug)]
pub struct Augmented {
    pub image: RgbImage,
    pub mask: Vec<bool>,
}

/// Apply the configured augmentation with `rng` (same geometric transform on image and mask;
/// colour jitter on the image only). A scale-crop that would leave the object with less than
/// a quarter of its pixels is redrawn, then skipped.
pub fn augment(s: &Sample, cfg: &AugmentSection, rng: &mut Rng) -> Augmented {
    let (h, w) = s.hw();
    let mut img: Vec<u8> = s.image.as_raw().to_vec();
    let mut mask: Vec<bool> = s.mask.as_ref().clone();
    if rng.bernoulli(cfg.hflip) {
        flip(&mut img, &mut mask, w, h, true);
    }
    if rng.bernoulli(cfg.vflip) {
        flip(&mut img, &mut mask, w, h, false);
    }
    if rng.bernoulli(cfg.scale_crop) {
        let area = mask.iter().filter(|&&b| b).count();
        for _ in 0..4 {
            let scale = rng.uniform(cfg.scale_min, cfg.scale_max);
            let (vw, vh) = (w as f64 / scale, h as f64 / scale);
            let (lo_x, hi_x) = ((w as f64 - vw).min(0.0), (w as f64 - vw).max(0.0));
            let (lo_y, hi_y) = ((h as f64 - vh).min(0.0), (h as f64 - vh).max(0.0));
            let x0 = rng.uniform(lo_x, hi_x);
            let y0 = rng.uniform(lo_y, hi_y);
            let (ni, nm) = scale_crop(&img, &mask, w, h, x0, y0, scale);
            if nm.iter().filter(|&&b| b).count() * 4 >= area.max(1) {
                img = ni;
                mask = nm;
                break;
            }
        }
    }
    if cfg.brightness > 0.0 || cfg.contrast > 0.0 || cfg.saturation > 0.0 {
        let b = rng.uniform(1.0 - cfg.brightness, 1.0 + cfg.brightness) as f32;
        let c = rng.uniform(1.0 - cfg.contrast, 1.0 + cfg.contrast) as f32;
        let sat = rng.uniform(1.0 - cfg.saturation, 1.0 + cfg.saturation) as f32;
        colour_jitter(&mut img, b, c, sat);
    }
    Augmented {
        image: RgbImage::from_raw(w as u32, h as u32, img).expect("same size as the source"),
        mask,
    }
}

fn flip(img: &mut [u8], mask: &mut [bool], w: usize, h: usize, horizontal: bool) {
    if horizontal {
        for y in 0..h {
            mask[y * w..(y + 1) * w].reverse();
            let row = &mut img[y * w * 3..(y + 1) * w * 3];
            for x in 0..w / 2 {
                for c in 0..3 {
                    row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
                }
            }
        }
    } else {
        for y in 0..h / 2 {
            let y2 = h - 1 - y;
            for x in 0..w {
                mask.swap(y * w + x, y2 * w + x);
                for c in 0..3 {
                    img.swap((y * w + x) * 3 + c, (y2 * w + x) * 3 + c);
                }
            }
        }
    }
}

/// Output pixel (x, y) shows source point (x0 + (x + 0.5) / s - 0.5, ...): bilinear for the
/// image, nearest for the mask, black / background outside.
fn scale_crop(
    img: &[u8],
    mask: &[bool],
    w: usize,
    h: usize,
    x0: f64,
    y0: f64,
    s: f64,
) -> (Vec<u8>, Vec<bool>) {
    let mut oi = vec![0u8; img.len()];
    let mut om = vec![false; mask.len()];
    for y in 0..h {
        let sy = y0 + (y as f64 + 0.5) / s - 0.5;
        for x in 0..w {
            let sx = x0 + (x as f64 + 0.5) / s - 0.5;
            let (nx, ny) = (sx.round(), sy.round());
            if nx >= 0.0 && ny >= 0.0 && (nx as usize) < w && (ny as usize) < h {
                om[y * w + x] = mask[ny as usize * w + nx as usize];
            }
            if sx < -0.5 || sy < -0.5 || sx > w as f64 - 0.5 || sy > h as f64 - 0.5 {
                continue;
            }
            let cx = sx.clamp(0.0, (w - 1) as f64);
            let cy = sy.clamp(0.0, (h - 1) as f64);
            let (ix, iy) = (cx.floor() as usize, cy.floor() as usize);
            let (ix1, iy1) = ((ix + 1).min(w - 1), (iy + 1).min(h - 1));
            let (fx, fy) = (cx - ix as f64, cy - iy as f64);
            for c in 0..3 {
                let p = |xx: usize, yy: usize| img[(yy * w + xx) * 3 + c] as f64;
                let v = (1.0 - fy) * ((1.0 - fx) * p(ix, iy) + fx * p(ix1, iy))
                    + fy * ((1.0 - fx) * p(ix, iy1) + fx * p(ix1, iy1));
                oi[(y * w + x) * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    (oi, om)
}

/// torchvision `ColorJitter` (fixed order: brightness, contrast, saturation).
fn colour_jitter(img: &mut [u8], b: f32, c: f32, s: f32) {
    let gray = |p: &[f32]| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    let mut f: Vec<f32> = img
        .iter()
        .map(|&v| (v as f32 * b).clamp(0.0, 255.0))
        .collect();
    let mean = f.chunks_exact(3).map(gray).sum::<f32>() / (f.len() / 3).max(1) as f32;
    for v in f.iter_mut() {
        *v = (mean + (*v - mean) * c).clamp(0.0, 255.0);
    }
    for px in f.chunks_exact_mut(3) {
        let g = gray(px);
        for v in px.iter_mut() {
            *v = (g + (*v - g) * s).clamp(0.0, 255.0);
        }
    }
    for (o, v) in img.iter_mut().zip(f) {
        *o = v.round() as u8;
    }
}
