//! COCO panoptic quality (PQ, SQ, RQ), as `panopticapi.evaluation.pq_compute` computes it.
//!
//! * Segment ids come from the PNGs (`id = R + 256·G + 256²·B`); the JSON's
//!   `segments_info` gives each id its category (and, for the ground truth, `iscrowd` and
//!   `area` — the ground-truth **area is taken from the JSON**, the predicted one is counted
//!   in the PNG).
//! * A ground-truth and a predicted segment of the same category match when
//!   `IoU > 0.5`, where the union leaves out the predicted segment's pixels on void
//!   (ground-truth id 0). Crowd ground truth is never matched.
//! * Unmatched non-crowd ground truth is a false negative. An unmatched prediction is a
//!   false positive unless more than half of it lies on void plus the crowd region of its
//!   category (the last crowd segment of that category in the image).
//! * Per category `PQ = ΣIoU / (TP + FP/2 + FN/2)`, `SQ = ΣIoU / TP`, `RQ = TP / (TP + FP/2 +
//!   FN/2)`; All / Things / Stuff average the categories with at least one TP, FP or FN.
//!   (When no category qualifies the official code divides by zero; this reports zeros with
//!   `n = 0`.)
//!
//! Inputs are validated like the official code (ids in the PNG but not in the JSON and the
//! reverse, unknown categories, images without prediction) plus size mismatches.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fastsam2_core::mask_io::{IdImage, read_id_png};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Progress;
use crate::error::{EvalError, Result, read_json};

#[derive(Debug, Clone, Deserialize)]
struct SegmentInfo {
    id: u32,
    category_id: i64,
    #[serde(default)]
    iscrowd: Option<i64>,
    #[serde(default)]
    area: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
struct PanopticAnnotation {
    image_id: serde_json::Value,
    file_name: String,
    segments_info: Vec<SegmentInfo>,
}

#[derive(Debug, Clone, Deserialize)]
struct PanopticCategory {
    id: i64,
    #[serde(default)]
    name: String,
    isthing: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct PanopticJson {
    annotations: Vec<PanopticAnnotation>,
    #[serde(default)]
    categories: Vec<PanopticCategory>,
}

/// Accumulated counts of one category.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PqStat {
    /// Sum of the IoUs of the matches.
    pub iou: f64,
    /// True positives.
    pub tp: u64,
    /// False positives.
    pub fp: u64,
    /// False negatives.
    pub fn_: u64,
}

/// PQ, SQ, RQ and the number of categories averaged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PqScores {
    /// Panoptic quality.
    pub pq: f64,
    /// Segmentation quality.
    pub sq: f64,
    /// Recognition quality.
    pub rq: f64,
    /// Categories averaged (`n`).
    pub n: usize,
}

/// Per-category and averaged results.
#[derive(Debug, Clone, Serialize)]
pub struct PanopticReport {
    /// All categories.
    pub all: PqScores,
    /// Thing categories.
    pub things: PqScores,
    /// Stuff categories.
    pub stuff: PqScores,
    /// `(category id, name, isthing, pq, sq, rq, stat)` in the ground truth's category order.
    pub per_class: Vec<ClassResult>,
}

/// One category's result.
#[derive(Debug, Clone, Serialize)]
pub struct ClassResult {
    /// Category id.
    pub id: i64,
    /// Category name.
    pub name: String,
    /// Thing (true) or stuff.
    pub isthing: bool,
    /// PQ (0 when the category has no TP, FP or FN).
    pub pq: f64,
    /// SQ.
    pub sq: f64,
    /// RQ.
    pub rq: f64,
    /// Raw counts.
    pub stat: PqStat,
}

fn image_entry(i: usize, id: &serde_json::Value) -> String {
    format!("annotations[{i}] (image_id {id})")
}

/// Pixel pairs `(gt id, pred id)` with their counts, sorted like `np.unique` of
/// `gt · 2²⁴ + pred`.
fn confusion(gt: &IdImage, pred: &IdImage) -> Vec<((u32, u32), u64)> {
    let mut map: HashMap<(u32, u32), u64> = HashMap::new();
    let mut run_key = (u32::MAX, u32::MAX);
    let mut run_len = 0u64;
    for (&g, &p) in gt.data.iter().zip(&pred.data) {
        if (g, p) == run_key {
            run_len += 1;
        } else {
            if run_len > 0 {
                *map.entry(run_key).or_insert(0) += run_len;
            }
            run_key = (g, p);
            run_len = 1;
        }
    }
    if run_len > 0 {
        *map.entry(run_key).or_insert(0) += run_len;
    }
    let mut v: Vec<_> = map.into_iter().collect();
    v.sort_unstable_by_key(|&(k, _)| k);
    v
}

struct Category {
    isthing: bool,
}

#[allow(clippy::too_many_arguments)]
fn pq_single_image(
    idx: usize,
    gt_ann: &PanopticAnnotation,
    pred_ann: &PanopticAnnotation,
    gt_dir: &Path,
    pred_dir: &Path,
    gt_json: &Path,
    pred_json: &Path,
    categories: &HashMap<i64, Category>,
) -> Result<HashMap<i64, PqStat>> {
    let gt_path = gt_dir.join(&gt_ann.file_name);
    let pred_path = pred_dir.join(&pred_ann.file_name);
    let gt = read_id_png(&gt_path)?;
    let pred = read_id_png(&pred_path)?;
    if (gt.width, gt.height) != (pred.width, pred.height) {
        return Err(EvalError::SizeMismatch {
            path: pred_path,
            entry: format!("prediction of {}", gt_path.display()),
            got_w: pred.width,
            got_h: pred.height,
            exp_w: gt.width,
            exp_h: gt.height,
        });
    }
    let gentry = image_entry(idx, &gt_ann.image_id);
    // ground-truth segments, in JSON order
    let mut gt_segms: HashMap<u32, (i64, bool, u64)> = HashMap::new();
    let mut gt_order: Vec<u32> = Vec::new();
    for s in &gt_ann.segments_info {
        if !categories.contains_key(&s.category_id) {
            return Err(EvalError::UnknownCategory {
                path: gt_json.to_path_buf(),
                entry: format!("{gentry}: segment {}", s.id),
                id: s.category_id,
            });
        }
        let area = s.area.ok_or_else(|| EvalError::Invalid {
            path: gt_json.to_path_buf(),
            entry: format!("{gentry}: segment {}", s.id),
            msg: "missing \"area\"".into(),
        })?;
        if gt_segms
            .insert(s.id, (s.category_id, s.iscrowd == Some(1), area))
            .is_none()
        {
            gt_order.push(s.id);
        }
    }
    // predicted segments: areas from the PNG
    let pentry = image_entry(idx, &pred_ann.image_id);
    let mut pred_segms: HashMap<u32, (i64, u64)> = HashMap::new();
    let mut pred_order: Vec<u32> = Vec::new();
    for s in &pred_ann.segments_info {
        if pred_segms.insert(s.id, (s.category_id, 0)).is_none() {
            pred_order.push(s.id);
        }
    }
    let pairs = confusion(&gt, &pred);
    let mut pred_area: HashMap<u32, u64> = HashMap::new();
    for &((_, p), c) in &pairs {
        *pred_area.entry(p).or_insert(0) += c;
    }
    let mut labels: Vec<(u32, u64)> = pred_area.into_iter().collect();
    labels.sort_unstable();
    let mut seen = 0usize;
    for (label, cnt) in labels {
        match pred_segms.get_mut(&label) {
            None if label == 0 => continue,
            None => {
                return Err(EvalError::Invalid {
                    path: pred_path,
                    entry: pentry,
                    msg: format!(
                        "segment id {label} is in the PNG but not in the JSON's segments_info"
                    ),
                });
            }
            Some(seg) => {
                seg.1 = cnt;
                seen += 1;
                if !categories.contains_key(&seg.0) {
                    return Err(EvalError::UnknownCategory {
                        path: pred_json.to_path_buf(),
                        entry: format!("{pentry}: segment {label}"),
                        id: seg.0,
                    });
                }
            }
        }
    }
    if seen != pred_segms.len() {
        let missing: Vec<u32> = pred_order
            .iter()
            .copied()
            .filter(|id| pred_segms[id].1 == 0)
            .collect();
        return Err(EvalError::Invalid {
            path: pred_json.to_path_buf(),
            entry: pentry,
            msg: format!(
                "segment ids {missing:?} are in segments_info but not in the PNG {}",
                pred_path.display()
            ),
        });
    }
    let map: HashMap<(u32, u32), u64> = pairs.iter().copied().collect();
    let void_of = |p: u32| map.get(&(0, p)).copied().unwrap_or(0);

    let mut stats: HashMap<i64, PqStat> = HashMap::new();
    let mut gt_matched = std::collections::HashSet::new();
    let mut pred_matched = std::collections::HashSet::new();
    for &((g, p), inter) in &pairs {
        let Some(&(gcat, gcrowd, garea)) = gt_segms.get(&g) else {
            continue;
        };
        let Some(&(pcat, parea)) = pred_segms.get(&p) else {
            continue;
        };
        if gcrowd || gcat != pcat {
            continue;
        }
        let union = (parea + garea) as i64 - inter as i64 - void_of(p) as i64;
        if union <= 0 {
            return Err(EvalError::Invalid {
                path: gt_json.to_path_buf(),
                entry: format!("{gentry}: segment {g}"),
                msg: format!(
                    "\"area\" {garea} is inconsistent with the PNG (union with segment {p} is {union})"
                ),
            });
        }
        let iou = inter as f64 / union as f64;
        if iou > 0.5 {
            let s = stats.entry(gcat).or_default();
            s.tp += 1;
            s.iou += iou;
            gt_matched.insert(g);
            pred_matched.insert(p);
        }
    }
    let mut crowd_of: HashMap<i64, u32> = HashMap::new();
    for g in &gt_order {
        if gt_matched.contains(g) {
            continue;
        }
        let (cat, crowd, _) = gt_segms[g];
        if crowd {
            crowd_of.insert(cat, *g);
            continue;
        }
        stats.entry(cat).or_default().fn_ += 1;
    }
    for p in &pred_order {
        if pred_matched.contains(p) {
            continue;
        }
        let (cat, area) = pred_segms[p];
        let mut inter = void_of(*p);
        if let Some(&c) = crowd_of.get(&cat) {
            inter += map.get(&(c, *p)).copied().unwrap_or(0);
        }
        if inter as f64 / area as f64 > 0.5 {
            continue;
        }
        stats.entry(cat).or_default().fp += 1;
    }
    Ok(stats)
}

/// Runs `pq_compute(gt_json, pred_json, gt_folder, pred_folder)`.
pub fn evaluate(
    gt_json: &Path,
    gt_dir: &Path,
    pred_json: &Path,
    pred_dir: &Path,
    progress: &dyn Progress,
) -> Result<PanopticReport> {
    let gt: PanopticJson = read_json(gt_json)?;
    let pred: PanopticJson = read_json(pred_json)?;
    for (dir, what) in [
        (gt_dir, "ground-truth PNG folder"),
        (pred_dir, "prediction PNG folder"),
    ] {
        if !dir.is_dir() {
            return Err(EvalError::Missing {
                path: dir.to_path_buf(),
                what: what.into(),
            });
        }
    }
    let mut categories: HashMap<i64, Category> = HashMap::new();
    for (i, c) in gt.categories.iter().enumerate() {
        let isthing = c.isthing.ok_or_else(|| EvalError::Invalid {
            path: gt_json.to_path_buf(),
            entry: format!("categories[{i}] (id {})", c.id),
            msg: "missing \"isthing\"".into(),
        })?;
        categories.insert(
            c.id,
            Category {
                isthing: isthing == 1,
            },
        );
    }
    let mut pred_by_image: HashMap<String, &PanopticAnnotation> = HashMap::new();
    for a in &pred.annotations {
        pred_by_image.insert(a.image_id.to_string(), a);
    }
    let mut matched = Vec::with_capacity(gt.annotations.len());
    for (i, a) in gt.annotations.iter().enumerate() {
        let p = pred_by_image
            .get(&a.image_id.to_string())
            .ok_or_else(|| EvalError::Missing {
                path: pred_json.to_path_buf(),
                what: format!(
                    "prediction for the image with id {} (ground truth {})",
                    a.image_id,
                    image_entry(i, &a.image_id)
                ),
            })?;
        matched.push((i, a, *p));
    }
    progress.start(matched.len() as u64);
    let per_image: Vec<HashMap<i64, PqStat>> = matched
        .par_iter()
        .map(|(i, g, p)| {
            let r = pq_single_image(*i, g, p, gt_dir, pred_dir, gt_json, pred_json, &categories);
            progress.advance(1);
            r
        })
        .collect::<Result<_>>()?;
    progress.finish();
    // accumulate in image order (a single-process run of the official code)
    let mut total: HashMap<i64, PqStat> = HashMap::new();
    for m in per_image {
        let mut keys: Vec<_> = m.into_iter().collect();
        keys.sort_by_key(|(k, _)| *k);
        for (cat, s) in keys {
            let t = total.entry(cat).or_default();
            t.iou += s.iou;
            t.tp += s.tp;
            t.fp += s.fp;
            t.fn_ += s.fn_;
        }
    }
    let mut per_class = Vec::new();
    for c in &gt.categories {
        let s = total.get(&c.id).copied().unwrap_or_default();
        let (pq, sq, rq) = class_scores(&s);
        per_class.push(ClassResult {
            id: c.id,
            name: c.name.clone(),
            isthing: categories[&c.id].isthing,
            pq,
            sq,
            rq,
            stat: s,
        });
    }
    let average = |filter: Option<bool>| -> PqScores {
        let (mut pq, mut sq, mut rq, mut n) = (0.0, 0.0, 0.0, 0usize);
        for c in &per_class {
            if filter.is_some_and(|t| t != c.isthing) {
                continue;
            }
            if c.stat.tp + c.stat.fp + c.stat.fn_ == 0 {
                continue;
            }
            n += 1;
            pq += c.pq;
            sq += c.sq;
            rq += c.rq;
        }
        if n == 0 {
            PqScores {
                pq: 0.0,
                sq: 0.0,
                rq: 0.0,
                n,
            }
        } else {
            PqScores {
                pq: pq / n as f64,
                sq: sq / n as f64,
                rq: rq / n as f64,
                n,
            }
        }
    };
    Ok(PanopticReport {
        all: average(None),
        things: average(Some(true)),
        stuff: average(Some(false)),
        per_class,
    })
}

fn class_scores(s: &PqStat) -> (f64, f64, f64) {
    if s.tp + s.fp + s.fn_ == 0 {
        return (0.0, 0.0, 0.0);
    }
    let denom = s.tp as f64 + 0.5 * s.fp as f64 + 0.5 * s.fn_ as f64;
    let pq = s.iou / denom;
    let sq = if s.tp != 0 { s.iou / s.tp as f64 } else { 0.0 };
    let rq = s.tp as f64 / denom;
    (pq, sq, rq)
}

impl PanopticReport {
    /// `{"All": {pq, sq, rq, n}, "Things": ..., "Stuff": ..., "per_class": {id: {pq, sq, rq}}}`,
    /// values in 0–1 as panopticapi's dict.
    pub fn to_json(&self) -> serde_json::Value {
        let s = |p: &PqScores| serde_json::json!({"pq": p.pq, "sq": p.sq, "rq": p.rq, "n": p.n});
        let mut per = serde_json::Map::new();
        for c in &self.per_class {
            per.insert(
                c.id.to_string(),
                serde_json::json!({"pq": c.pq, "sq": c.sq, "rq": c.rq}),
            );
        }
        serde_json::json!({"All": s(&self.all), "Things": s(&self.things), "Stuff": s(&self.stuff), "per_class": per})
    }

    /// The table `pq_compute` prints (percentages).
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:10}| {:>5}  {:>5}  {:>5} {:>5}\n",
            "", "PQ", "SQ", "RQ", "N"
        );
        out.push_str(&"-".repeat(38));
        out.push('\n');
        for (name, p) in [
            ("All", &self.all),
            ("Things", &self.things),
            ("Stuff", &self.stuff),
        ] {
            out.push_str(&format!(
                "{:10}| {:5.1}  {:5.1}  {:5.1} {:5}\n",
                name,
                100.0 * p.pq,
                100.0 * p.sq,
                100.0 * p.rq,
                p.n
            ));
        }
        out
    }
}

/// Paths of a panoptic evaluation, with panopticapi's defaults (`X.json` → folder `X`).
pub fn default_folder(json: &Path) -> PathBuf {
    let s = json.to_string_lossy().replace(".json", "");
    PathBuf::from(s)
}
