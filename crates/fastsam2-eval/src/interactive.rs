//! The click-based interactive segmentation protocol of RITM / SimpleClick (NoC@85, NoC@90,
//! mIoU@k), run against any model through [`InteractivePredictor`].
//!
//! What `isegm.inference` does, and so what this module does:
//!
//! * **Next click** (`Clicker._get_next_click`): false-negative and false-positive maps
//!   (ignore pixels excluded), each padded by one background pixel, exact Euclidean distance
//!   transform (`cv2.distanceTransform(DIST_L2, DIST_MASK_PRECISE)`, `float32`), padding
//!   removed, already-clicked pixels zeroed. The click is positive when the largest
//!   false-negative distance is strictly larger than the largest false-positive one, and goes
//!   to the first pixel (row-major) holding that maximum.
//! * **Loop** (`evaluate_sample`): start from an empty prediction, click, predict, threshold
//!   the probabilities with `prob > 0.49` (compared in `float32`, as NumPy compares a
//!   `float32` array with a Python float), IoU over non-ignored pixels, up to 20 clicks,
//!   stopping early once `IoU ≥ stop_iou` (RITM's `--target-iou`; `None` never stops, as
//!   RITM's `--iou-analysis` run does). IoUs are kept as `float32`.
//! * **NoC@t** (`compute_noc_metric`): the first click whose IoU (`float32`) reaches `t`
//!   (compared in `float32`), `max_clicks` when never; `over_max` counts samples whose NoC
//!   equals `max_clicks` (RITM's `>=20@85` column), `failures` those that never reach `t`.
//! * **mIoU@k**: mean over samples of the IoU after `k` clicks, for `k` up to the shortest
//!   sample's click count (RITM's `--print-ious`).

use serde::Serialize;

use crate::Progress;
use crate::error::{EvalError, Result};

/// One click, in RITM's `(y, x)` pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Click {
    /// Row.
    pub y: usize,
    /// Column.
    pub x: usize,
    /// Positive (foreground) or negative click.
    pub is_positive: bool,
}

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width × height × 3` bytes.
    pub data: Vec<u8>,
}

/// Low-resolution logits a model returns and gets back with the next click (SAM's
/// `mask_input`). The protocol only carries them from one call to the next.
#[derive(Debug, Clone, PartialEq)]
pub struct LowResLogits {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Row-major logits.
    pub data: Vec<f32>,
}

/// A model's answer to a list of clicks.
#[derive(Debug, Clone, PartialEq)]
pub struct ClickPrediction {
    /// Foreground probabilities at the image's resolution, row-major.
    pub probs: Vec<f32>,
    /// Logits to pass back with the next click, if the model uses them.
    pub low_res_logits: Option<LowResLogits>,
}

/// Error type predictors return.
pub type PredictorError = Box<dyn std::error::Error + Send + Sync>;

/// A click-driven segmentation model, as the protocol sees it.
pub trait InteractivePredictor {
    /// Sets the image; called once per sample before its first click.
    fn set_image(&mut self, image: &RgbImage) -> std::result::Result<(), PredictorError>;

    /// Predicts foreground probabilities for all clicks so far (oldest first), given the
    /// low-resolution logits the previous call returned (`None` for the first click).
    fn predict(
        &mut self,
        clicks: &[Click],
        prev_low_res_logits: Option<&LowResLogits>,
    ) -> std::result::Result<ClickPrediction, PredictorError>;
}

/// A ground-truth object for the protocol.
#[derive(Debug, Clone)]
pub struct InteractiveTarget {
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// Row-major object mask (RITM's `gt_mask == 1`).
    pub mask: Vec<bool>,
    /// Row-major ignore mask (RITM's `gt_mask == -1`), if any.
    pub ignore: Option<Vec<bool>>,
}

impl InteractiveTarget {
    /// Builds a target from RITM-style labels: `1` object, `-1` ignore, anything else background.
    pub fn from_ritm_labels(width: usize, height: usize, labels: &[i32]) -> InteractiveTarget {
        let mask = labels.iter().map(|&v| v == 1).collect();
        let ignore: Vec<bool> = labels.iter().map(|&v| v == -1).collect();
        let ignore = ignore.iter().any(|&b| b).then_some(ignore);
        InteractiveTarget {
            width,
            height,
            mask,
            ignore,
        }
    }

    fn ignored(&self, i: usize) -> bool {
        self.ignore.as_ref().is_some_and(|m| m[i])
    }

    fn validate(&self, sample: &str) -> Result<()> {
        let n = self.width * self.height;
        if self.mask.len() != n || self.ignore.as_ref().is_some_and(|m| m.len() != n) {
            return Err(EvalError::Usage(format!(
                "{sample}: mask buffers do not match {}x{}",
                self.width, self.height
            )));
        }
        if !(0..n).any(|i| self.mask[i] && !self.ignored(i)) {
            return Err(EvalError::Usage(format!(
                "{sample}: the ground-truth object is empty"
            )));
        }
        Ok(())
    }
}

/// Exact Euclidean distance transform of a binary mask padded by one background pixel on
/// every side (`cv2.distanceTransform(pad(mask), DIST_L2, 0)[1:-1, 1:-1]`): for each
/// foreground pixel the distance to the nearest background pixel, `float32`.
pub fn padded_distance_transform(mask: &[bool], width: usize, height: usize) -> Vec<f32> {
    let (pw, ph) = (width + 2, height + 2);
    // column pass on the padded grid: squared vertical distance to the nearest zero
    let mut g = vec![0i64; pw * ph];
    let fg = |x: usize, y: usize| -> bool {
        x >= 1 && y >= 1 && x <= width && y <= height && mask[(y - 1) * width + (x - 1)]
    };
    for x in 0..pw {
        let mut d: i64 = i64::MAX / 4;
        for y in 0..ph {
            d = if fg(x, y) { d + 1 } else { 0 };
            g[y * pw + x] = d;
        }
        let mut d: i64 = i64::MAX / 4;
        for y in (0..ph).rev() {
            d = if fg(x, y) { d + 1 } else { 0 };
            let v = &mut g[y * pw + x];
            if d < *v {
                *v = d;
            }
        }
    }
    // row pass: lower envelope of parabolas (Felzenszwalb & Huttenlocher), integer values
    let mut out = vec![0f32; width * height];
    let mut f = vec![0i64; pw];
    let mut v = vec![0usize; pw];
    let mut z = vec![0f64; pw + 1];
    for y in 1..=height {
        for x in 0..pw {
            let gv = g[y * pw + x];
            f[x] = gv * gv;
        }
        let mut k = 0usize;
        v[0] = 0;
        z[0] = f64::NEG_INFINITY;
        z[1] = f64::INFINITY;
        for q in 1..pw {
            loop {
                let p = v[k];
                let s = ((f[q] + (q * q) as i64) - (f[p] + (p * p) as i64)) as f64
                    / (2 * (q - p)) as f64;
                if s <= z[k] && k > 0 {
                    k -= 1;
                    continue;
                }
                if s <= z[k] {
                    // k == 0 and the new parabola is lower everywhere
                    v[0] = q;
                    z[0] = f64::NEG_INFINITY;
                    z[1] = f64::INFINITY;
                    break;
                }
                k += 1;
                v[k] = q;
                z[k] = s;
                z[k + 1] = f64::INFINITY;
                break;
            }
        }
        k = 0;
        for q in 0..pw {
            while z[k + 1] < q as f64 {
                k += 1;
            }
            if q >= 1 && q <= width {
                let p = v[k];
                let dq = q as i64 - p as i64;
                let d2 = dq * dq + f[p];
                out[(y - 1) * width + (q - 1)] = (d2 as f32).sqrt();
            }
        }
    }
    out
}

/// RITM's click generator for one sample.
#[derive(Debug, Clone)]
pub struct Clicker<'a> {
    target: &'a InteractiveTarget,
    not_clicked: Vec<bool>,
    clicks: Vec<Click>,
}

impl<'a> Clicker<'a> {
    /// A clicker with no clicks yet.
    pub fn new(target: &'a InteractiveTarget) -> Clicker<'a> {
        Clicker {
            target,
            not_clicked: vec![true; target.width * target.height],
            clicks: Vec::new(),
        }
    }

    /// Clicks so far.
    pub fn clicks(&self) -> &[Click] {
        &self.clicks
    }

    /// Adds a click (and marks its pixel as clicked).
    pub fn add_click(&mut self, c: Click) {
        self.not_clicked[c.y * self.target.width + c.x] = false;
        self.clicks.push(c);
    }

    /// The click RITM would make next for the current prediction.
    pub fn next_click(&self, pred: &[bool]) -> Click {
        let t = self.target;
        let (w, h) = (t.width, t.height);
        let n = w * h;
        let mut fn_mask = vec![false; n];
        let mut fp_mask = vec![false; n];
        for i in 0..n {
            if t.ignored(i) {
                continue;
            }
            fn_mask[i] = t.mask[i] && !pred[i];
            fp_mask[i] = !t.mask[i] && pred[i];
        }
        let fn_dt = padded_distance_transform(&fn_mask, w, h);
        let fp_dt = padded_distance_transform(&fp_mask, w, h);
        let masked = |dt: &[f32]| -> (f32, usize) {
            let mut best = (f32::NEG_INFINITY, 0usize);
            for (i, (&d, &free)) in dt.iter().zip(&self.not_clicked).enumerate() {
                let v = if free { d } else { 0.0 };
                if v > best.0 {
                    best = (v, i);
                }
            }
            best
        };
        let (fn_max, fn_at) = masked(&fn_dt);
        let (fp_max, fp_at) = masked(&fp_dt);
        let is_positive = fn_max > fp_max;
        let at = if is_positive { fn_at } else { fp_at };
        Click {
            y: at / w,
            x: at % w,
            is_positive,
        }
    }

    /// Makes the next click for `pred` and records it.
    pub fn make_next_click(&mut self, pred: &[bool]) -> Click {
        let c = self.next_click(pred);
        self.add_click(c);
        c
    }
}

/// IoU over non-ignored pixels (`isegm.inference.utils.get_iou`).
pub fn iou(target: &InteractiveTarget, pred: &[bool]) -> f64 {
    let (mut i, mut u) = (0u64, 0u64);
    for (k, (&g, &p)) in target.mask.iter().zip(pred).enumerate() {
        if target.ignored(k) {
            continue;
        }
        i += (g && p) as u64;
        u += (g || p) as u64;
    }
    i as f64 / u as f64
}

/// Protocol parameters.
#[derive(Debug, Clone)]
pub struct InteractiveParams {
    /// Maximum clicks per sample (20).
    pub max_clicks: usize,
    /// Probability threshold (`prob > 0.49`).
    pub pred_thr: f32,
    /// Stop a sample once its IoU reaches this (RITM `--target-iou`); `None` runs every click.
    pub stop_iou: Option<f64>,
    /// Never stop before this many clicks (RITM `--min-n-clicks`, 1).
    pub min_clicks: usize,
    /// NoC thresholds (0.85, 0.90).
    pub noc_thresholds: Vec<f64>,
}

impl Default for InteractiveParams {
    fn default() -> Self {
        InteractiveParams {
            max_clicks: 20,
            pred_thr: 0.49,
            stop_iou: None,
            min_clicks: 1,
            noc_thresholds: vec![0.85, 0.90],
        }
    }
}

/// One sample's run.
#[derive(Debug, Clone, Serialize)]
pub struct SampleResult {
    /// Sample name.
    pub name: String,
    /// The clicks made.
    pub clicks: Vec<Click>,
    /// IoU after each click (`float32`, as RITM stores them).
    pub ious: Vec<f32>,
}

/// Runs the protocol on one sample (`evaluate_sample`).
pub fn evaluate_sample(
    name: &str,
    image: &RgbImage,
    target: &InteractiveTarget,
    predictor: &mut dyn InteractivePredictor,
    params: &InteractiveParams,
) -> Result<SampleResult> {
    target.validate(name)?;
    if (image.width as usize, image.height as usize) != (target.width, target.height) {
        return Err(EvalError::Usage(format!(
            "{name}: image is {}x{} but its mask is {}x{}",
            image.width, image.height, target.width, target.height
        )));
    }
    let perr = |e: PredictorError| EvalError::Predictor {
        sample: name.to_string(),
        msg: e.to_string(),
    };
    predictor.set_image(image).map_err(perr)?;
    let n = target.width * target.height;
    let mut clicker = Clicker::new(target);
    let mut pred = vec![false; n];
    let mut prev: Option<LowResLogits> = None;
    let mut ious = Vec::new();
    for click_idx in 0..params.max_clicks {
        clicker.make_next_click(&pred);
        let out = predictor
            .predict(clicker.clicks(), prev.as_ref())
            .map_err(perr)?;
        if out.probs.len() != n {
            return Err(EvalError::Predictor {
                sample: name.to_string(),
                msg: format!(
                    "returned {} probabilities for a {}x{} image",
                    out.probs.len(),
                    target.width,
                    target.height
                ),
            });
        }
        for (p, &v) in pred.iter_mut().zip(&out.probs) {
            *p = v > params.pred_thr;
        }
        prev = out.low_res_logits;
        let v = iou(target, &pred);
        ious.push(v as f32);
        if params.stop_iou.is_some_and(|t| v >= t) && click_idx + 1 >= params.min_clicks {
            break;
        }
    }
    Ok(SampleResult {
        name: name.to_string(),
        clicks: clicker.clicks.clone(),
        ious,
    })
}

/// NoC at one threshold.
#[derive(Debug, Clone, Serialize)]
pub struct NocResult {
    /// IoU threshold.
    pub threshold: f64,
    /// Mean number of clicks.
    pub noc: f64,
    /// Samples whose NoC equals `max_clicks` (RITM's `>=20@t`).
    pub over_max: usize,
    /// Samples that never reach the threshold.
    pub failures: usize,
}

/// Summary over samples.
#[derive(Debug, Clone, Serialize)]
pub struct InteractiveReport {
    /// One entry per NoC threshold.
    pub noc: Vec<NocResult>,
    /// `miou[k - 1]` = mIoU@k, up to the shortest sample's click count.
    pub miou: Vec<f64>,
    /// Per-sample runs.
    pub samples: Vec<SampleResult>,
    /// Maximum clicks.
    pub max_clicks: usize,
}

/// `compute_noc_metric` and the mIoU curve.
pub fn summarize(samples: Vec<SampleResult>, params: &InteractiveParams) -> InteractiveReport {
    let noc = params
        .noc_thresholds
        .iter()
        .map(|&thr| {
            let t32 = thr as f32;
            let nocs: Vec<usize> = samples
                .iter()
                .map(|s| {
                    s.ious
                        .iter()
                        .position(|&v| v >= t32)
                        .map_or(params.max_clicks, |i| i + 1)
                })
                .collect();
            let failures = samples
                .iter()
                .filter(|s| !s.ious.iter().any(|&v| v >= t32))
                .count();
            NocResult {
                threshold: thr,
                noc: nocs.iter().sum::<usize>() as f64 / nocs.len() as f64,
                over_max: nocs.iter().filter(|&&n| n == params.max_clicks).count(),
                failures,
            }
        })
        .collect();
    let min_len = samples.iter().map(|s| s.ious.len()).min().unwrap_or(0);
    let miou = (0..min_len)
        .map(|k| samples.iter().map(|s| s.ious[k] as f64).sum::<f64>() / samples.len() as f64)
        .collect();
    InteractiveReport {
        noc,
        miou,
        samples,
        max_clicks: params.max_clicks,
    }
}

/// Runs the protocol over samples `(name, image, target)` with one predictor.
pub fn evaluate<'a, I>(
    samples: I,
    predictor: &mut dyn InteractivePredictor,
    params: &InteractiveParams,
    progress: &dyn Progress,
) -> Result<InteractiveReport>
where
    I: ExactSizeIterator<Item = Result<(String, RgbImage, InteractiveTarget)>> + 'a,
{
    progress.start(samples.len() as u64);
    let mut results = Vec::with_capacity(samples.len());
    for s in samples {
        let (name, image, target) = s?;
        results.push(evaluate_sample(&name, &image, &target, predictor, params)?);
        progress.advance(1);
    }
    progress.finish();
    Ok(summarize(results, params))
}

impl InteractiveReport {
    /// `{"NoC@85": .., "NoC@90": .., ">=20@85": .., "fail@85": .., "mIoU@1": .., ...}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for r in &self.noc {
            let pct = (r.threshold * 100.0).round() as i64;
            m.insert(format!("NoC@{pct}"), serde_json::json!(r.noc));
            m.insert(
                format!(">={}@{pct}", self.max_clicks),
                serde_json::json!(r.over_max),
            );
            m.insert(format!("fail@{pct}"), serde_json::json!(r.failures));
        }
        for (k, v) in self.miou.iter().enumerate() {
            m.insert(format!("mIoU@{}", k + 1), serde_json::json!(v));
        }
        m.insert("num_samples".into(), serde_json::json!(self.samples.len()));
        m.insert(
            "per_sample".into(),
            serde_json::Value::Array(
                self.samples
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "name": s.name,
                            "ious": s.ious,
                            "clicks": s.clicks.iter().map(|c| serde_json::json!([c.y, c.x, c.is_positive])).collect::<Vec<_>>(),
                        })
                    })
                    .collect(),
            ),
        );
        serde_json::Value::Object(m)
    }

    /// A readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        for r in &self.noc {
            let pct = (r.threshold * 100.0).round() as i64;
            s.push_str(&format!(
                "NoC@{pct}: {:.2}   >={}@{pct}: {}   never reached: {}\n",
                r.noc, self.max_clicks, r.over_max, r.failures
            ));
        }
        for k in [1usize, 3, 5, 10, 20] {
            if let Some(v) = self.miou.get(k - 1) {
                s.push_str(&format!("mIoU@{k}: {:.2}%\n", 100.0 * v));
            }
        }
        s.push_str(&format!("samples: {}\n", self.samples.len()));
        s
    }
}
