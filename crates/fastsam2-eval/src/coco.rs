//! COCO instance-segmentation AP (`pycocotools.cocoeval.COCOeval` with `iouType='segm'`).
//!
//! What `COCOeval` does, and so what this module does:
//!
//! * IoU thresholds `linspace(.5, .95, 10)`, recall thresholds `linspace(0, 1, 101)`,
//!   `maxDets` 1 / 10 / 100, area ranges all / small `[0, 32²]` / medium `[32², 96²]` /
//!   large `[96², 1e5²]` (both ends inclusive).
//! * **Area**: ground truth uses the annotation's `area` field (not the mask's pixel count).
//!   Detections get their area in `loadRes`: if the *first* result has a non-empty `bbox`,
//!   every detection's area is `bbox[2] · bbox[3]` (the box area, even for `segm`);
//!   otherwise it is the RLE's pixel count.
//! * **Crowd**: `iscrowd` ground truth is ignored, may be matched by any number of
//!   detections, and its IoU divides by the detection's area.
//! * **Matching**: per image and category, detections by descending score (stable
//!   mergesort, so ties keep file order), at most 100; ground truth with non-ignored first;
//!   each detection takes the unmatched (or crowd) ground truth of highest IoU ≥ threshold,
//!   stopping at ignored ground truth once it holds a regular match. Unmatched detections
//!   outside the area range are ignored.
//! * **Accumulation**: all images' detections of a category by descending score (stable
//!   across the image order), precision made monotone, sampled at the recall thresholds
//!   with `searchsorted(side='left')`; recall is the final recall. Categories without
//!   non-ignored ground truth are `-1` and left out of the means.
//!
//! Inputs are validated: unknown image or category ids, RLEs whose counts do not add up,
//! masks whose size differs from their image's, and malformed JSON are errors that name the
//! file and the entry. (pycocotools silently drops detections of unknown categories.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fastsam2_core::rle::{Rle, RleCounts, RleJson, iou_one};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Progress;
use crate::error::{EvalError, Result, io_err};
use crate::numeric::{np_linspace, np_mean};

/// `[x, y]` polygon lists or an RLE, as COCO `segmentation` fields hold them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Segmentation {
    /// One or more polygons `[x0, y0, x1, y1, ...]`.
    Polygons(Vec<Vec<f64>>),
    /// Compressed or uncompressed RLE.
    Rle(RleJson),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum IntOrBool {
    Int(i64),
    Bool(bool),
}

impl IntOrBool {
    fn truthy(&self) -> bool {
        match self {
            IntOrBool::Int(v) => *v != 0,
            IntOrBool::Bool(b) => *b,
        }
    }
}

/// An `images` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CocoImage {
    /// Image id.
    pub id: i64,
    /// Height in pixels.
    pub height: u32,
    /// Width in pixels.
    pub width: u32,
    /// File name, if given.
    #[serde(default)]
    pub file_name: String,
}

/// A `categories` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CocoCategory {
    /// Category id.
    pub id: i64,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Panoptic "thing" flag (panoptic JSON only).
    #[serde(default)]
    pub isthing: Option<u8>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawAnnotation {
    #[serde(default)]
    id: Option<i64>,
    image_id: i64,
    category_id: i64,
    #[serde(default)]
    segmentation: Option<Segmentation>,
    #[serde(default)]
    area: Option<f64>,
    #[serde(default)]
    bbox: Option<Vec<f64>>,
    #[serde(default)]
    iscrowd: Option<IntOrBool>,
    #[serde(default)]
    score: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct RawGt {
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<RawAnnotation>,
    categories: Vec<CocoCategory>,
}

/// A ground-truth instance, its segmentation converted to RLE (`annToRLE`).
#[derive(Debug, Clone)]
pub struct GtInstance {
    /// Annotation id.
    pub id: i64,
    /// Image id.
    pub image_id: i64,
    /// Category id.
    pub category_id: i64,
    /// The mask.
    pub rle: Rle,
    /// The `area` field (what COCOeval's area ranges use).
    pub area: f64,
    /// `iscrowd`.
    pub iscrowd: bool,
}

/// A detection, with the id, area and crowd flag `loadRes` gives it.
#[derive(Debug, Clone)]
pub struct Detection {
    /// `index + 1` in the results file.
    pub id: i64,
    /// Image id.
    pub image_id: i64,
    /// Category id.
    pub category_id: i64,
    /// The mask.
    pub rle: Rle,
    /// The box area if the results carry boxes, else the mask area (see the module docs).
    pub area: f64,
    /// Confidence.
    pub score: f64,
}

/// A COCO instances ground-truth file.
#[derive(Debug, Clone)]
pub struct CocoGt {
    /// Where it was read from.
    pub path: PathBuf,
    /// Images.
    pub images: Vec<CocoImage>,
    /// Categories.
    pub categories: Vec<CocoCategory>,
    /// Annotations in file order.
    pub annotations: Vec<GtInstance>,
    image_index: HashMap<i64, usize>,
    category_index: HashMap<i64, usize>,
}

fn entry_name(kind: &str, i: usize, id: Option<i64>) -> String {
    match id {
        Some(id) => format!("{kind}[{i}] (id {id})"),
        None => format!("{kind}[{i}]"),
    }
}

/// Converts a COCO segmentation to an RLE for an image of `h × w` (`annToRLE`).
pub fn segmentation_to_rle(
    seg: &Segmentation,
    h: u32,
    w: u32,
    path: &Path,
    entry: &str,
) -> Result<Rle> {
    let rle_err = |source| EvalError::Rle {
        path: path.to_path_buf(),
        entry: entry.to_string(),
        source,
    };
    let rle = match seg {
        Segmentation::Polygons(p) => Rle::from_polygons(p, h, w).map_err(rle_err)?,
        Segmentation::Rle(j) => {
            let [rh, rw] = j.size;
            if (rh, rw) != (h, w) {
                return Err(EvalError::SizeMismatch {
                    path: path.to_path_buf(),
                    entry: format!("{entry}: segmentation size"),
                    got_w: rw,
                    got_h: rh,
                    exp_w: w,
                    exp_h: h,
                });
            }
            match &j.counts {
                RleCounts::Compressed(s) => Rle::from_compressed(s, h, w).map_err(rle_err)?,
                RleCounts::Uncompressed(c) => Rle::from_counts(h, w, c.clone()).map_err(rle_err)?,
            }
        }
    };
    Ok(rle)
}

/// Parses a JSON array file entry by entry when the typed parse failed, to name the entry.
fn locate_bad_entry<T: serde::de::DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
    pointer: &str,
    kind: &str,
    source: serde_json::Error,
) -> EvalError {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return EvalError::Json {
            path: path.to_path_buf(),
            source,
        };
    };
    if let Some(arr) = v.pointer(pointer).and_then(|a| a.as_array()) {
        for (i, e) in arr.iter().enumerate() {
            if let Err(err) = serde_json::from_value::<T>(e.clone()) {
                let id = e.get("id").and_then(|x| x.as_i64());
                return EvalError::Invalid {
                    path: path.to_path_buf(),
                    entry: entry_name(kind, i, id),
                    msg: err.to_string(),
                };
            }
        }
    }
    EvalError::Json {
        path: path.to_path_buf(),
        source,
    }
}

impl CocoGt {
    /// Reads a COCO instances JSON (`images`, `annotations`, `categories`).
    pub fn load(path: &Path) -> Result<CocoGt> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let raw: RawGt = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                let mut err = locate_bad_entry::<RawAnnotation>(
                    path,
                    &bytes,
                    "/annotations",
                    "annotations",
                    e,
                );
                if let EvalError::Json { source, .. } = err {
                    err = locate_bad_entry::<CocoImage>(path, &bytes, "/images", "images", source);
                }
                if let EvalError::Json { source, .. } = err {
                    err = locate_bad_entry::<CocoCategory>(
                        path,
                        &bytes,
                        "/categories",
                        "categories",
                        source,
                    );
                }
                return Err(err);
            }
        };
        Self::from_parts(path, raw.images, raw.categories, raw.annotations)
    }

    fn from_parts(
        path: &Path,
        images: Vec<CocoImage>,
        categories: Vec<CocoCategory>,
        anns: Vec<RawAnnotation>,
    ) -> Result<CocoGt> {
        let mut image_index = HashMap::with_capacity(images.len());
        for (i, im) in images.iter().enumerate() {
            if image_index.insert(im.id, i).is_some() {
                return Err(EvalError::Invalid {
                    path: path.to_path_buf(),
                    entry: entry_name("images", i, Some(im.id)),
                    msg: "duplicate image id".into(),
                });
            }
        }
        let mut category_index = HashMap::with_capacity(categories.len());
        for (i, c) in categories.iter().enumerate() {
            if category_index.insert(c.id, i).is_some() {
                return Err(EvalError::Invalid {
                    path: path.to_path_buf(),
                    entry: entry_name("categories", i, Some(c.id)),
                    msg: "duplicate category id".into(),
                });
            }
        }
        let annotations = anns
            .into_par_iter()
            .enumerate()
            .map(|(i, a)| {
                let entry = entry_name("annotations", i, a.id);
                let invalid = |msg: &str| EvalError::Invalid {
                    path: path.to_path_buf(),
                    entry: entry.clone(),
                    msg: msg.into(),
                };
                let id = a.id.ok_or_else(|| invalid("missing \"id\""))?;
                let &ii = image_index
                    .get(&a.image_id)
                    .ok_or_else(|| EvalError::UnknownImage {
                        path: path.to_path_buf(),
                        entry: entry.clone(),
                        id: a.image_id,
                    })?;
                if !category_index.contains_key(&a.category_id) {
                    return Err(EvalError::UnknownCategory {
                        path: path.to_path_buf(),
                        entry,
                        id: a.category_id,
                    });
                }
                let seg = a
                    .segmentation
                    .as_ref()
                    .ok_or_else(|| invalid("missing \"segmentation\""))?;
                let area = a.area.ok_or_else(|| {
                    invalid("missing \"area\" (COCOeval's area ranges use this field)")
                })?;
                let im = &images[ii];
                let rle = segmentation_to_rle(seg, im.height, im.width, path, &entry)?;
                Ok(GtInstance {
                    id,
                    image_id: a.image_id,
                    category_id: a.category_id,
                    rle,
                    area,
                    iscrowd: a.iscrowd.as_ref().is_some_and(IntOrBool::truthy),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CocoGt {
            path: path.to_path_buf(),
            images,
            categories,
            annotations,
            image_index,
            category_index,
        })
    }

    /// The image entry of an id.
    pub fn image(&self, id: i64) -> Option<&CocoImage> {
        self.image_index.get(&id).map(|&i| &self.images[i])
    }

    /// Whether the category id is defined.
    pub fn has_category(&self, id: i64) -> bool {
        self.category_index.contains_key(&id)
    }

    /// Reads a results file (a JSON list of `{image_id, category_id, segmentation, score}`),
    /// applying `loadRes`'s rules (see the module docs for the area rule).
    pub fn load_results(&self, path: &Path) -> Result<Vec<Detection>> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let raw: Vec<RawAnnotation> = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                return Err(locate_bad_entry::<RawAnnotation>(
                    path, &bytes, "", "results", e,
                ));
            }
        };
        self.results_from_raw(path, raw)
    }

    fn results_from_raw(&self, path: &Path, raw: Vec<RawAnnotation>) -> Result<Vec<Detection>> {
        let box_branch = raw
            .first()
            .and_then(|a| a.bbox.as_ref())
            .is_some_and(|b| !b.is_empty());
        raw.into_par_iter()
            .enumerate()
            .map(|(i, a)| {
                let entry = entry_name("results", i, None);
                let invalid = |msg: String| EvalError::Invalid { path: path.to_path_buf(), entry: entry.clone(), msg };
                let im = self.image(a.image_id).ok_or_else(|| EvalError::UnknownImage {
                    path: path.to_path_buf(),
                    entry: entry.clone(),
                    id: a.image_id,
                })?;
                if !self.has_category(a.category_id) {
                    return Err(EvalError::UnknownCategory { path: path.to_path_buf(), entry, id: a.category_id });
                }
                let score = a.score.ok_or_else(|| invalid("missing \"score\"".into()))?;
                if !score.is_finite() {
                    return Err(invalid(format!("score {score} is not finite")));
                }
                let (rle, area) = if box_branch {
                    let bb = a.bbox.as_ref().filter(|b| b.len() == 4).ok_or_else(|| {
                        invalid("missing or malformed \"bbox\" (the first result has one, so every result needs one)".into())
                    })?;
                    let rle = match &a.segmentation {
                        Some(seg) => segmentation_to_rle(seg, im.height, im.width, path, &entry)?,
                        None => {
                            let (x1, y1, x2, y2) = (bb[0], bb[1], bb[0] + bb[2], bb[1] + bb[3]);
                            Rle::from_polygons(&[vec![x1, y1, x1, y2, x2, y2, x2, y1]], im.height, im.width).map_err(
                                |source| EvalError::Rle { path: path.to_path_buf(), entry: entry.clone(), source },
                            )?
                        }
                    };
                    (rle, bb[2] * bb[3])
                } else {
                    let seg = a.segmentation.as_ref().ok_or_else(|| invalid("missing \"segmentation\"".into()))?;
                    let rle = segmentation_to_rle(seg, im.height, im.width, path, &entry)?;
                    let area = rle.area() as f64;
                    (rle, area)
                };
                Ok(Detection { id: i as i64 + 1, image_id: a.image_id, category_id: a.category_id, rle, area, score })
            })
            .collect()
    }
}

/// COCOeval parameters (the `segm` defaults).
#[derive(Debug, Clone)]
pub struct CocoParams {
    /// IoU thresholds.
    pub iou_thrs: Vec<f64>,
    /// Recall thresholds.
    pub rec_thrs: Vec<f64>,
    /// Max detections per image, ascending.
    pub max_dets: Vec<usize>,
    /// Area ranges `[lo, hi]`, inclusive.
    pub area_rng: Vec<[f64; 2]>,
    /// Area range labels.
    pub area_lbl: Vec<&'static str>,
}

impl Default for CocoParams {
    fn default() -> Self {
        CocoParams {
            iou_thrs: np_linspace(0.5, 0.95, 10),
            rec_thrs: np_linspace(0.0, 1.0, 101),
            max_dets: vec![1, 10, 100],
            area_rng: vec![[0.0, 1e10], [0.0, 1024.0], [1024.0, 9216.0], [9216.0, 1e10]],
            area_lbl: vec!["all", "small", "medium", "large"],
        }
    }
}

/// `evaluateImg`'s result for one image, category and area range.
#[derive(Debug, Clone)]
struct EvalImg {
    scores: Vec<f64>,
    /// `[t][d]`: matched ground-truth id, 0 when unmatched (as pycocotools stores it).
    dt_matches: Vec<Vec<i64>>,
    dt_ignore: Vec<Vec<bool>>,
    gt_ignore: Vec<bool>,
}

/// The 12 summary numbers plus the accumulated arrays.
#[derive(Debug, Clone, Serialize)]
pub struct CocoReport {
    /// AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl (`COCOeval.stats`).
    pub stats: [f64; 12],
    /// Category ids, sorted (the `K` axis).
    pub category_ids: Vec<i64>,
    /// `precision[T][R][K][A][M]`, flattened C order; `-1` where a category has no ground truth.
    pub precision: Vec<f64>,
    /// `recall[T][K][A][M]`, flattened C order.
    pub recall: Vec<f64>,
    /// Array dimensions `[T, R, K, A, M]`.
    pub counts: [usize; 5],
}

/// The JSON keys of the 12 summary numbers.
pub const STAT_KEYS: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

fn stable_desc_order(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    // np.argsort(-scores, kind='mergesort'): stable ascending on the negated score
    idx.sort_by(|&a, &b| {
        (-scores[a])
            .partial_cmp(&-scores[b])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    idx
}

fn evaluate_img(
    gts: &[&GtInstance],
    dts: &[&Detection],
    ious: &[f64],
    rng: [f64; 2],
    max_det: usize,
    p: &CocoParams,
) -> Option<EvalImg> {
    if gts.is_empty() && dts.is_empty() {
        return None;
    }
    let g_ignore: Vec<bool> = gts
        .iter()
        .map(|g| g.iscrowd || g.area < rng[0] || g.area > rng[1])
        .collect();
    // stable argsort of the ignore flags: regular ground truth first
    let mut gtind: Vec<usize> = (0..gts.len()).collect();
    gtind.sort_by_key(|&i| g_ignore[i]);
    // dts are already sorted by score and truncated to maxDets[-1] (computeIoU); evaluateImg
    // sorts again (stable, no-op) and keeps maxDet.
    let nd = dts.len().min(max_det);
    let ng = gts.len();
    let t_n = p.iou_thrs.len();
    let gt_ig: Vec<bool> = gtind.iter().map(|&i| g_ignore[i]).collect();
    let crowd: Vec<bool> = gtind.iter().map(|&i| gts[i].iscrowd).collect();
    let mut gtm = vec![vec![0i64; ng]; t_n];
    let mut dtm = vec![vec![0i64; nd]; t_n];
    let mut dt_ig = vec![vec![false; nd]; t_n];
    let full_ng = gts.len();
    if !ious.is_empty() {
        for (ti, &t) in p.iou_thrs.iter().enumerate() {
            for d in 0..nd {
                let mut iou = t.min(1.0 - 1e-10);
                let mut m: Option<usize> = None;
                for g in 0..ng {
                    if gtm[ti][g] > 0 && !crowd[g] {
                        continue;
                    }
                    if let Some(mm) = m
                        && !gt_ig[mm]
                        && gt_ig[g]
                    {
                        break;
                    }
                    let v = ious[d * full_ng + gtind[g]];
                    if v < iou {
                        continue;
                    }
                    iou = v;
                    m = Some(g);
                }
                if let Some(mm) = m {
                    dt_ig[ti][d] = gt_ig[mm];
                    dtm[ti][d] = gts[gtind[mm]].id;
                    gtm[ti][mm] = dts[d].id;
                }
            }
        }
    }
    for d in 0..nd {
        let a = dts[d].area < rng[0] || dts[d].area > rng[1];
        if a {
            for ti in 0..t_n {
                if dtm[ti][d] == 0 {
                    dt_ig[ti][d] = true;
                }
            }
        }
    }
    Some(EvalImg {
        scores: dts[..nd].iter().map(|d| d.score).collect(),
        dt_matches: dtm,
        dt_ignore: dt_ig,
        gt_ignore: gt_ig,
    })
}

/// Runs `evaluate()`, `accumulate()` and `summarize()` of COCOeval (`segm`).
pub fn evaluate(
    gt: &CocoGt,
    dets: &[Detection],
    p: &CocoParams,
    progress: &dyn Progress,
) -> CocoReport {
    let mut img_ids: Vec<i64> = gt.images.iter().map(|i| i.id).collect();
    img_ids.sort_unstable();
    img_ids.dedup();
    let mut cat_ids: Vec<i64> = gt.categories.iter().map(|c| c.id).collect();
    cat_ids.sort_unstable();
    cat_ids.dedup();
    let img_pos: HashMap<i64, usize> = img_ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let cat_pos: HashMap<i64, usize> = cat_ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let (ni, nk) = (img_ids.len(), cat_ids.len());

    // group by (category, image), keeping file order
    let mut gt_groups: Vec<Vec<Vec<&GtInstance>>> = vec![vec![Vec::new(); ni]; nk];
    for g in &gt.annotations {
        if let (Some(&k), Some(&i)) = (cat_pos.get(&g.category_id), img_pos.get(&g.image_id)) {
            gt_groups[k][i].push(g);
        }
    }
    let mut dt_groups: Vec<Vec<Vec<&Detection>>> = vec![vec![Vec::new(); ni]; nk];
    for d in dets {
        if let (Some(&k), Some(&i)) = (cat_pos.get(&d.category_id), img_pos.get(&d.image_id)) {
            dt_groups[k][i].push(d);
        }
    }
    let max_det_last = *p.max_dets.last().unwrap_or(&100);
    let (t_n, r_n, a_n, m_n) = (
        p.iou_thrs.len(),
        p.rec_thrs.len(),
        p.area_rng.len(),
        p.max_dets.len(),
    );
    progress.start(nk as u64);

    // per category: evaluate every image, then accumulate
    let per_cat: Vec<(Vec<f64>, Vec<f64>)> = (0..nk)
        .into_par_iter()
        .map(|k| {
            // evalImgs[a][i]
            let mut eval_imgs: Vec<Vec<Option<EvalImg>>> = vec![Vec::with_capacity(ni); a_n];
            for i in 0..ni {
                let gts = &gt_groups[k][i];
                let mut dts = dt_groups[k][i].clone();
                let order = stable_desc_order(&dts.iter().map(|d| d.score).collect::<Vec<_>>());
                dts = order.into_iter().map(|j| dts[j]).collect();
                dts.truncate(max_det_last);
                let gboxes: Vec<[f64; 4]> = gts.iter().map(|g| g.rle.to_bbox()).collect();
                let mut ious = Vec::with_capacity(dts.len() * gts.len());
                if !gts.is_empty() && !dts.is_empty() {
                    for d in &dts {
                        let dbox = d.rle.to_bbox();
                        for (g, gb) in gts.iter().zip(&gboxes) {
                            ious.push(iou_one(&d.rle, &g.rle, g.iscrowd, &dbox, gb));
                        }
                    }
                }
                for (a, rng) in p.area_rng.iter().enumerate() {
                    eval_imgs[a].push(evaluate_img(gts, &dts, &ious, *rng, max_det_last, p));
                }
            }
            // accumulate: precision[t][r][a][m], recall[t][a][m] for this k
            let mut prec = vec![-1.0; t_n * r_n * a_n * m_n];
            let mut rec = vec![-1.0; t_n * a_n * m_n];
            for a in 0..a_n {
                let es: Vec<&EvalImg> = eval_imgs[a].iter().flatten().collect();
                if es.is_empty() {
                    continue;
                }
                for (m, &max_det) in p.max_dets.iter().enumerate() {
                    let mut scores = Vec::new();
                    for e in &es {
                        scores.extend_from_slice(&e.scores[..e.scores.len().min(max_det)]);
                    }
                    let inds = stable_desc_order(&scores);
                    let npig = es
                        .iter()
                        .flat_map(|e| &e.gt_ignore)
                        .filter(|&&ig| !ig)
                        .count();
                    if npig == 0 {
                        continue;
                    }
                    for t in 0..t_n {
                        let mut dtm_all: Vec<bool> = Vec::with_capacity(scores.len());
                        let mut dtig_all: Vec<bool> = Vec::with_capacity(scores.len());
                        for e in &es {
                            let n = e.scores.len().min(max_det);
                            dtm_all.extend(e.dt_matches[t][..n].iter().map(|&id| id != 0));
                            dtig_all.extend_from_slice(&e.dt_ignore[t][..n]);
                        }
                        let nd = inds.len();
                        let mut tp = 0.0f64;
                        let mut fp = 0.0f64;
                        let mut rc = Vec::with_capacity(nd);
                        let mut pr = Vec::with_capacity(nd);
                        for &j in &inds {
                            let (mt, ig) = (dtm_all[j], dtig_all[j]);
                            if mt && !ig {
                                tp += 1.0;
                            }
                            if !mt && !ig {
                                fp += 1.0;
                            }
                            rc.push(tp / npig as f64);
                            pr.push(tp / (fp + tp + f64::EPSILON));
                        }
                        rec[(t * a_n + a) * m_n + m] = if nd > 0 { rc[nd - 1] } else { 0.0 };
                        for i in (1..nd).rev() {
                            if pr[i] > pr[i - 1] {
                                pr[i - 1] = pr[i];
                            }
                        }
                        let base = t * r_n * a_n * m_n;
                        let mut lo = 0usize;
                        for (ri, &thr) in p.rec_thrs.iter().enumerate() {
                            // searchsorted(rc, thr, side='left'); thresholds ascend, so continue from lo
                            lo += rc[lo..].partition_point(|&v| v < thr);
                            let q = if lo < nd { pr[lo] } else { 0.0 };
                            prec[base + (ri * a_n + a) * m_n + m] = q;
                        }
                    }
                }
            }
            progress.advance(1);
            (prec, rec)
        })
        .collect();
    progress.finish();

    // assemble [T][R][K][A][M] and [T][K][A][M]
    let mut precision = vec![-1.0; t_n * r_n * nk * a_n * m_n];
    let mut recall = vec![-1.0; t_n * nk * a_n * m_n];
    for (k, (prec, rec)) in per_cat.iter().enumerate() {
        for t in 0..t_n {
            for r in 0..r_n {
                for a in 0..a_n {
                    for m in 0..m_n {
                        precision[(((t * r_n + r) * nk + k) * a_n + a) * m_n + m] =
                            prec[((t * r_n + r) * a_n + a) * m_n + m];
                    }
                }
            }
            for a in 0..a_n {
                for m in 0..m_n {
                    recall[((t * nk + k) * a_n + a) * m_n + m] = rec[(t * a_n + a) * m_n + m];
                }
            }
        }
    }
    let counts = [t_n, r_n, nk, a_n, m_n];
    let stats = summarize(&precision, &recall, counts, p);
    CocoReport {
        stats,
        category_ids: cat_ids,
        precision,
        recall,
        counts,
    }
}

/// `summarize()`: the 12 numbers, each a NumPy mean over the selected entries `> -1`.
fn summarize(precision: &[f64], recall: &[f64], counts: [usize; 5], p: &CocoParams) -> [f64; 12] {
    let [t_n, r_n, nk, a_n, m_n] = counts;
    let area = |lbl: &str| p.area_lbl.iter().position(|&l| l == lbl);
    let mdet = |d: usize| p.max_dets.iter().position(|&m| m == d);
    let thr = |v: f64| p.iou_thrs.iter().position(|&t| t == v);
    let mean_valid = |vals: Vec<f64>| -> f64 {
        let v: Vec<f64> = vals.into_iter().filter(|&x| x > -1.0).collect();
        if v.is_empty() { -1.0 } else { np_mean(&v) }
    };
    let ap = |iou: Option<f64>, a: &str, md: usize| -> f64 {
        let (Some(ai), Some(mi)) = (area(a), mdet(md)) else {
            return -1.0;
        };
        let ts: Vec<usize> = match iou {
            Some(v) => thr(v).into_iter().collect(),
            None => (0..t_n).collect(),
        };
        let mut vals = Vec::new();
        for &t in &ts {
            for r in 0..r_n {
                for k in 0..nk {
                    vals.push(precision[(((t * r_n + r) * nk + k) * a_n + ai) * m_n + mi]);
                }
            }
        }
        mean_valid(vals)
    };
    let ar = |a: &str, md: usize| -> f64 {
        let (Some(ai), Some(mi)) = (area(a), mdet(md)) else {
            return -1.0;
        };
        let mut vals = Vec::new();
        for t in 0..t_n {
            for k in 0..nk {
                vals.push(recall[((t * nk + k) * a_n + ai) * m_n + mi]);
            }
        }
        mean_valid(vals)
    };
    let md = |i: usize| p.max_dets.get(i).copied().unwrap_or(0);
    let m2 = md(2);
    [
        ap(None, "all", m2),
        ap(Some(0.5), "all", m2),
        ap(Some(0.75), "all", m2),
        ap(None, "small", m2),
        ap(None, "medium", m2),
        ap(None, "large", m2),
        ar("all", md(0)),
        ar("all", md(1)),
        ar("all", m2),
        ar("small", m2),
        ar("medium", m2),
        ar("large", m2),
    ]
}

impl CocoReport {
    /// `{"AP": ..., "AP50": ..., ..., "ARl": ...}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (k, v) in STAT_KEYS.iter().zip(self.stats) {
            m.insert((*k).to_string(), serde_json::json!(v));
        }
        serde_json::Value::Object(m)
    }

    /// The summary lines as `COCOeval.summarize()` prints them.
    pub fn table(&self) -> String {
        let rows = [
            ("Average Precision", "(AP)", "0.50:0.95", "all", 100),
            ("Average Precision", "(AP)", "0.50", "all", 100),
            ("Average Precision", "(AP)", "0.75", "all", 100),
            ("Average Precision", "(AP)", "0.50:0.95", "small", 100),
            ("Average Precision", "(AP)", "0.50:0.95", "medium", 100),
            ("Average Precision", "(AP)", "0.50:0.95", "large", 100),
            ("Average Recall", "(AR)", "0.50:0.95", "all", 1),
            ("Average Recall", "(AR)", "0.50:0.95", "all", 10),
            ("Average Recall", "(AR)", "0.50:0.95", "all", 100),
            ("Average Recall", "(AR)", "0.50:0.95", "small", 100),
            ("Average Recall", "(AR)", "0.50:0.95", "medium", 100),
            ("Average Recall", "(AR)", "0.50:0.95", "large", 100),
        ];
        rows.iter()
            .zip(self.stats)
            .map(|((title, ty, iou, area, md), v)| {
                format!(" {title:<18} {ty} @[ IoU={iou:<9} | area={area:>6} | maxDets={md:>3} ] = {v:0.3}\n")
            })
            .collect()
    }
}

/// Loads the ground truth and results and runs [`evaluate`] with the default parameters.
pub fn evaluate_files(
    gt_path: &Path,
    results_path: &Path,
    progress: &dyn Progress,
) -> Result<CocoReport> {
    let gt = CocoGt::load(gt_path)?;
    let dets = gt.load_results(results_path)?;
    Ok(evaluate(&gt, &dets, &CocoParams::default(), progress))
}
