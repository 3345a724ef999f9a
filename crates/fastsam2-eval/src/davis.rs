//! DAVIS 2017 semi-supervised evaluation, as `davis2017-evaluation` computes it.
//!
//! What the official code does, and so what this module does:
//!
//! * **Frames scored**: all annotated frames except the first (given to the method) and the
//!   last. Frame names come from the ground-truth annotation PNGs; the prediction for frame
//!   `X` is `PRED/<sequence>/X.png` (palette indices or grey values = object ids).
//! * **Object count**: the largest label of the *first* ground-truth frame after void
//!   (`255`) pixels are set to background. Ids between 1 and that maximum that never occur
//!   are still objects (with empty ground truth); ids above it appearing later are ignored.
//!   A prediction label above the object count is an error (the official script exits).
//! * **Void**: in the semi-supervised task `255` pixels are plain background for both J and
//!   F — the official code reads the void mask but passes `None` to the metrics.
//! * **J**: `|P ∧ G| / |P ∨ G|`, and 1 when both are empty.
//! * **F**: boundary maps by `_seg2bmap`'s shift rule, each dilated by a disk of radius
//!   `ceil(0.008 · √(h² + w²))` (`skimage.morphology.disk`, `cv2.dilate`), precision and
//!   recall of the matched boundary pixels, `2PR / (P + R)`; an empty predicted boundary with
//!   a non-empty ground-truth one scores P = 1, R = 0 (and the reverse), both empty P = R = 1.
//! * **Per object**: Mean (`nanmean`), Recall (fraction of frames > 0.5) and Decay (mean of
//!   the first quarter minus mean of the last quarter, with the official bin indices —
//!   `round(linspace(1, n, 5) + 1e-10) - 1` cast to `uint8`, which wraps for sequences of
//!   more than 256 scored frames, exactly as the official code does).
//! * **Global**: means over all objects of all sequences; `J&F-Mean = (J-Mean + F-Mean) / 2`.
//!
//! Means are computed with NumPy's pairwise summation ([`crate::numeric`]), so the numbers
//! are the official ones bit for bit (the official code works on `float64` images).

use std::path::{Path, PathBuf};

use fastsam2_core::mask_io::{LabelImage, read_label_png};
use rayon::prelude::*;
use serde::Serialize;

use crate::Progress;
use crate::bitmask::{BitMask, Disk};
use crate::error::{EvalError, Result, io_err};
use crate::numeric::{np_linspace, np_mean, np_nanmean, round_half_even};

/// The void label of DAVIS annotations.
pub const VOID_LABEL: u8 = 255;

/// Region similarity J: `|P ∧ G| / |P ∨ G|`, 1 when both masks are empty.
pub fn j_measure(gt: &BitMask, pred: &BitMask) -> f64 {
    let (i, u) = pred.inter_union(gt);
    if u == 0 { 1.0 } else { i as f64 / u as f64 }
}

/// Dilation radius in pixels: `bound_th` itself when ≥ 1, else `ceil(bound_th · √(h² + w²))`.
pub fn bound_pix(bound_th: f64, height: usize, width: usize) -> Result<usize> {
    let r = if bound_th >= 1.0 {
        bound_th
    } else {
        let diag = ((height * height + width * width) as f64).sqrt();
        (bound_th * diag).ceil()
    };
    if r.fract() != 0.0 || !(0.0..=10_000.0).contains(&r) {
        return Err(EvalError::Usage(format!(
            "boundary tolerance {bound_th} gives a non-integer disk radius {r}"
        )));
    }
    Ok(r as usize)
}

/// Boundary F-measure between a predicted and a ground-truth mask (`f_measure`).
pub fn f_measure(pred: &BitMask, gt: &BitMask, disk: &Disk) -> f64 {
    let fg_b = pred.seg2bmap();
    let gt_b = gt.seg2bmap();
    let n_fg = fg_b.count();
    let n_gt = gt_b.count();
    let (precision, recall) = if n_fg == 0 && n_gt > 0 {
        (1.0, 0.0)
    } else if n_fg > 0 && n_gt == 0 {
        (0.0, 1.0)
    } else if n_fg == 0 && n_gt == 0 {
        (1.0, 1.0)
    } else {
        let fg_match = disk.count_covered(&gt_b, &fg_b);
        let gt_match = disk.count_covered(&fg_b, &gt_b);
        (fg_match as f64 / n_fg as f64, gt_match as f64 / n_gt as f64)
    };
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

/// Mean, recall and decay of one object's per-frame values (`db_statistics`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Statistics {
    /// `nanmean` of the values.
    pub mean: f64,
    /// Fraction of frames with a value above 0.5.
    pub recall: f64,
    /// Mean of the first quarter of the frames minus mean of the last quarter (NaN when a
    /// bin is empty, as in the official code).
    pub decay: f64,
}

/// `db_statistics` of `davis2017.utils`.
pub fn db_statistics(values: &[f64]) -> Statistics {
    let n = values.len();
    let mean = np_nanmean(values);
    let recall = values.iter().filter(|&&v| v > 0.5).count() as f64 / n as f64;
    let lin = np_linspace(1.0, n as f64, 5);
    // np.round(...) - 1, then .astype(np.uint8): wraps modulo 256
    let ids: Vec<usize> = lin
        .iter()
        .map(|&v| ((round_half_even(v + 1e-10) - 1.0) as i64).rem_euclid(256) as usize)
        .collect();
    let bin = |i: usize| -> &[f64] {
        let start = ids[i].min(n);
        let end = (ids[i + 1] + 1).min(n);
        if start >= end {
            &[]
        } else {
            &values[start..end]
        }
    };
    let decay = np_nanmean(bin(0)) - np_nanmean(bin(3));
    Statistics {
        mean,
        recall,
        decay,
    }
}

/// Results of one object of one sequence.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectResult {
    /// `<sequence>_<object id>`, the official per-object name.
    pub name: String,
    /// J per scored frame.
    pub j: Vec<f64>,
    /// F per scored frame.
    pub f: Vec<f64>,
    /// Statistics of `j`.
    pub j_stats: Statistics,
    /// Statistics of `f`.
    pub f_stats: Statistics,
}

/// Scores the scored frames of one sequence, in memory.
///
/// `gt` and `pred` are the label images of the scored frames (the first and last annotated
/// frames excluded), `num_objects` the object count from the first ground-truth frame.
/// Labels of `pred` must not exceed `num_objects` (checked by the file-level reader);
/// ground-truth labels above it (and the void label) count as background.
pub fn score_frames(
    sequence: &str,
    num_objects: usize,
    gt: &[LabelImage],
    pred: &[LabelImage],
    bound_th: f64,
) -> Result<Vec<ObjectResult>> {
    if gt.len() != pred.len() {
        return Err(EvalError::Usage(format!(
            "{sequence}: {} ground-truth frames but {} predicted frames",
            gt.len(),
            pred.len()
        )));
    }
    let per_frame: Vec<(Vec<f64>, Vec<f64>)> = gt
        .par_iter()
        .zip(pred.par_iter())
        .map(|(g, p)| score_one_frame(num_objects, g, p, bound_th))
        .collect::<Result<_>>()?;
    Ok(collect_objects(sequence, num_objects, per_frame))
}

fn score_one_frame(
    num_objects: usize,
    g: &LabelImage,
    p: &LabelImage,
    bound_th: f64,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (w, h) = (g.width as usize, g.height as usize);
    if (p.width, p.height) != (g.width, g.height) {
        return Err(EvalError::Usage(format!(
            "prediction is {}x{} but the ground truth is {}x{}",
            p.width, p.height, g.width, g.height
        )));
    }
    let disk = Disk::new(bound_pix(bound_th, h, w)?);
    let gts = BitMask::split_labels(w, h, &g.data, num_objects);
    let preds = BitMask::split_labels(w, h, &p.data, num_objects);
    let mut j = Vec::with_capacity(num_objects);
    let mut f = Vec::with_capacity(num_objects);
    for (gm, pm) in gts.iter().zip(&preds) {
        j.push(j_measure(gm, pm));
        f.push(f_measure(pm, gm, &disk));
    }
    Ok((j, f))
}

fn collect_objects(
    sequence: &str,
    num_objects: usize,
    per_frame: Vec<(Vec<f64>, Vec<f64>)>,
) -> Vec<ObjectResult> {
    (0..num_objects)
        .map(|k| {
            let j: Vec<f64> = per_frame.iter().map(|(j, _)| j[k]).collect();
            let f: Vec<f64> = per_frame.iter().map(|(_, f)| f[k]).collect();
            ObjectResult {
                name: format!("{sequence}_{}", k + 1),
                j_stats: db_statistics(&j),
                f_stats: db_statistics(&f),
                j,
                f,
            }
        })
        .collect()
}

/// Options of [`evaluate`].
#[derive(Debug, Clone)]
pub struct DavisOptions {
    /// Sequences to evaluate; `None` reads `ImageSets/2017/<subset>.txt`, or takes every
    /// sequence folder when there is no such file.
    pub sequences: Option<Vec<String>>,
    /// Subset name for the `ImageSets` list (`val`, `train`, `test-dev`).
    pub subset: String,
    /// Resolution folder (`480p` or `Full-Resolution`).
    pub resolution: String,
    /// Boundary tolerance (`0.008` of the diagonal).
    pub bound_th: f64,
}

impl Default for DavisOptions {
    fn default() -> Self {
        DavisOptions {
            sequences: None,
            subset: "val".into(),
            resolution: "480p".into(),
            bound_th: 0.008,
        }
    }
}

/// The ground-truth frames of one sequence.
#[derive(Debug, Clone)]
pub struct DavisSequence {
    /// Sequence name.
    pub name: String,
    /// Frame ids (file stems), sorted.
    pub frames: Vec<String>,
    /// Annotation PNG per frame.
    pub annotations: Vec<PathBuf>,
    /// JPEG per frame, when the `JPEGImages` folder exists.
    pub images: Option<Vec<PathBuf>>,
}

/// A DAVIS data set on disk: `JPEGImages/<res>/<seq>/*.jpg`, `Annotations/<res>/<seq>/*.png`,
/// `ImageSets/2017/<subset>.txt`.
#[derive(Debug, Clone)]
pub struct DavisDataset {
    /// The folder holding the sequence folders of annotations.
    pub annotations_root: PathBuf,
    /// The folder holding the sequence folders of images, if present.
    pub images_root: Option<PathBuf>,
    /// The sequences, in evaluation order.
    pub sequences: Vec<DavisSequence>,
}

fn sorted_entries(dir: &Path, ext: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let p = e.path();
        if p.extension()
            .and_then(|s| s.to_str())
            .is_some_and(|s| s.eq_ignore_ascii_case(ext))
            && let Some(stem) = p.file_stem().and_then(|s| s.to_str())
        {
            v.push((stem.to_string(), p));
        }
    }
    v.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(v)
}

impl DavisDataset {
    /// Opens a DAVIS root (with `Annotations/<res>`), or a folder that directly holds one
    /// annotation folder per sequence.
    pub fn open(root: &Path, opts: &DavisOptions) -> Result<DavisDataset> {
        let ann_root = root.join("Annotations").join(&opts.resolution);
        let (annotations_root, images_root, list_file) = if ann_root.is_dir() {
            let img = root.join("JPEGImages").join(&opts.resolution);
            let list = root
                .join("ImageSets")
                .join("2017")
                .join(format!("{}.txt", opts.subset));
            (ann_root, img.is_dir().then_some(img), Some(list))
        } else if root.is_dir() {
            (root.to_path_buf(), None, None)
        } else {
            return Err(EvalError::Missing {
                path: root.to_path_buf(),
                what: "DAVIS ground-truth folder".into(),
            });
        };
        let names: Vec<String> = if let Some(s) = &opts.sequences {
            s.clone()
        } else if let Some(list) = list_file.as_ref().filter(|l| l.is_file()) {
            std::fs::read_to_string(list)
                .map_err(io_err(list))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        } else {
            let mut v: Vec<String> = std::fs::read_dir(&annotations_root)
                .map_err(io_err(&annotations_root))?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().to_str().map(String::from))
                .collect();
            v.sort();
            v
        };
        let mut sequences = Vec::with_capacity(names.len());
        for name in names {
            let dir = annotations_root.join(&name);
            if !dir.is_dir() {
                return Err(EvalError::Missing {
                    path: dir,
                    what: format!("annotation folder of sequence {name}"),
                });
            }
            let anns = sorted_entries(&dir, "png")?;
            let images = match &images_root {
                Some(ir) if ir.join(&name).is_dir() => {
                    let imgs = sorted_entries(&ir.join(&name), "jpg")?;
                    // every image frame must have its annotation
                    for (stem, _) in &imgs {
                        if !anns.iter().any(|(s, _)| s == stem) {
                            return Err(EvalError::Missing {
                                path: dir.join(format!("{stem}.png")),
                                what: format!(
                                    "annotation of frame {stem} of sequence {name} (its image exists)"
                                ),
                            });
                        }
                    }
                    Some(imgs.into_iter().map(|(_, p)| p).collect())
                }
                _ => None,
            };
            sequences.push(DavisSequence {
                name,
                frames: anns.iter().map(|(s, _)| s.clone()).collect(),
                annotations: anns.into_iter().map(|(_, p)| p).collect(),
                images,
            });
        }
        Ok(DavisDataset {
            annotations_root,
            images_root,
            sequences,
        })
    }
}

/// Global and per-object results of a DAVIS evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct DavisReport {
    /// `(J-Mean + F-Mean) / 2`.
    pub jf_mean: f64,
    /// Mean over objects of the per-object J means.
    pub j_mean: f64,
    /// Mean J recall.
    pub j_recall: f64,
    /// Mean J decay.
    pub j_decay: f64,
    /// Mean over objects of the per-object F means.
    pub f_mean: f64,
    /// Mean F recall.
    pub f_recall: f64,
    /// Mean F decay.
    pub f_decay: f64,
    /// Every object of every sequence, in evaluation order.
    pub objects: Vec<ObjectResult>,
}

impl DavisReport {
    /// Aggregates per-object results the way `evaluation_method.py` does.
    pub fn from_objects(objects: Vec<ObjectResult>) -> DavisReport {
        let col = |f: &dyn Fn(&ObjectResult) -> f64| -> f64 {
            np_mean(&objects.iter().map(f).collect::<Vec<_>>())
        };
        let j_mean = col(&|o| o.j_stats.mean);
        let f_mean = col(&|o| o.f_stats.mean);
        DavisReport {
            jf_mean: (j_mean + f_mean) / 2.0,
            j_mean,
            j_recall: col(&|o| o.j_stats.recall),
            j_decay: col(&|o| o.j_stats.decay),
            f_mean,
            f_recall: col(&|o| o.f_stats.recall),
            f_decay: col(&|o| o.f_stats.decay),
            objects,
        }
    }

    /// The JSON report: the official CSV's column names, and `per_object` with each
    /// `<seq>_<obj>`'s `J-Mean` and `F-Mean`. NaN (an empty decay bin) is written as `null`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut per = serde_json::Map::new();
        for o in &self.objects {
            per.insert(
                o.name.clone(),
                serde_json::json!({"J-Mean": o.j_stats.mean, "F-Mean": o.f_stats.mean}),
            );
        }
        serde_json::json!({
            "J&F-Mean": self.jf_mean,
            "J-Mean": self.j_mean,
            "J-Recall": self.j_recall,
            "J-Decay": self.j_decay,
            "F-Mean": self.f_mean,
            "F-Recall": self.f_recall,
            "F-Decay": self.f_decay,
            "per_object": per,
        })
    }

    /// A readable table, laid out like the official script's output (3 decimals).
    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str("J&F-Mean  J-Mean  J-Recall  J-Decay  F-Mean  F-Recall  F-Decay\n");
        s.push_str(&format!(
            "{:>8.3}  {:>6.3}  {:>8.3}  {:>7.3}  {:>6.3}  {:>8.3}  {:>7.3}\n\n",
            self.jf_mean,
            self.j_mean,
            self.j_recall,
            self.j_decay,
            self.f_mean,
            self.f_recall,
            self.f_decay
        ));
        let wname = self
            .objects
            .iter()
            .map(|o| o.name.len())
            .max()
            .unwrap_or(8)
            .max(8);
        s.push_str(&format!("{:<wname$}  J-Mean  F-Mean\n", "Sequence"));
        for o in &self.objects {
            s.push_str(&format!(
                "{:<wname$}  {:>6.3}  {:>6.3}\n",
                o.name, o.j_stats.mean, o.f_stats.mean
            ));
        }
        s
    }
}

fn read_frame(path: &Path) -> Result<LabelImage> {
    Ok(read_label_png(path)?)
}

fn size_mismatch(path: &Path, entry: String, got: &LabelImage, exp: &LabelImage) -> EvalError {
    EvalError::SizeMismatch {
        path: path.to_path_buf(),
        entry,
        got_w: got.width,
        got_h: got.height,
        exp_w: exp.width,
        exp_h: exp.height,
    }
}

/// Evaluates one sequence from files: ground truth from `seq`, predictions from
/// `pred_root/<seq>/<frame>.png`.
pub fn evaluate_sequence(
    seq: &DavisSequence,
    pred_root: &Path,
    bound_th: f64,
) -> Result<Vec<ObjectResult>> {
    let n = seq.frames.len();
    if n < 3 {
        let dir = seq
            .annotations
            .first()
            .and_then(|p| p.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        return Err(EvalError::Invalid {
            path: dir,
            entry: format!("sequence {}", seq.name),
            msg: format!(
                "{n} annotated frames; the semi-supervised protocol scores frames 2..n-1 and needs at least 3"
            ),
        });
    }
    let first = read_frame(&seq.annotations[0])?;
    let num_objects = first
        .data
        .iter()
        .filter(|&&v| v != VOID_LABEL)
        .copied()
        .max()
        .unwrap_or(0) as usize;
    let pred_dir = pred_root.join(&seq.name);
    if !pred_dir.is_dir() {
        return Err(EvalError::Missing {
            path: pred_dir,
            what: format!("prediction folder of sequence {}", seq.name),
        });
    }
    let per_frame: Vec<(Vec<f64>, Vec<f64>)> = (1..n - 1)
        .into_par_iter()
        .map(|t| {
            let gpath = &seq.annotations[t];
            let g = read_frame(gpath)?;
            if (g.width, g.height) != (first.width, first.height) {
                return Err(size_mismatch(gpath, format!("frame {} (first frame)", seq.frames[t]), &g, &first));
            }
            let ppath = pred_dir.join(format!("{}.png", seq.frames[t]));
            if !ppath.is_file() {
                return Err(EvalError::Missing {
                    path: ppath,
                    what: format!("predicted mask of frame {} of sequence {}", seq.frames[t], seq.name),
                });
            }
            let p = read_frame(&ppath)?;
            if (p.width, p.height) != (g.width, g.height) {
                return Err(size_mismatch(&ppath, format!("frame {} (ground truth)", seq.frames[t]), &p, &g));
            }
            if let Some(&max) = p.data.iter().max()
                && max as usize > num_objects
            {
                return Err(EvalError::Invalid {
                    path: ppath,
                    entry: format!("frame {}", seq.frames[t]),
                    msg: format!(
                        "object index {max} is higher than the number of objects in the sequence ({num_objects}, from the first ground-truth frame)"
                    ),
                });
            }
            score_one_frame(num_objects, &g, &p, bound_th).map_err(|e| match e {
                EvalError::Usage(msg) => EvalError::Invalid { path: ppath.clone(), entry: seq.frames[t].clone(), msg },
                e => e,
            })
        })
        .collect::<Result<_>>()?;
    Ok(collect_objects(&seq.name, num_objects, per_frame))
}

/// Runs the DAVIS 2017 semi-supervised evaluation of `pred_root` against `gt_root`.
pub fn evaluate(
    gt_root: &Path,
    pred_root: &Path,
    opts: &DavisOptions,
    progress: &dyn Progress,
) -> Result<DavisReport> {
    let ds = DavisDataset::open(gt_root, opts)?;
    progress.start(ds.sequences.len() as u64);
    let per_seq: Vec<Vec<ObjectResult>> = ds
        .sequences
        .par_iter()
        .map(|s| {
            let r = evaluate_sequence(s, pred_root, opts.bound_th);
            progress.advance(1);
            r
        })
        .collect::<Result<_>>()?;
    progress.finish();
    Ok(DavisReport::from_objects(
        per_seq.into_iter().flatten().collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_bins() {
        // n = 8: ids = round(linspace(1, 8, 5) + 1e-10) - 1 = [0, 2, 4, 5, 7]
        let v: Vec<f64> = (0..8).map(|i| i as f64 / 10.0).collect();
        let s = db_statistics(&v);
        assert!((s.mean - 0.35).abs() < 1e-15);
        assert_eq!(s.recall, 2.0 / 8.0);
        // bin0 = v[0..3] mean 0.1, bin3 = v[5..8] mean 0.6
        assert!((s.decay - (0.1 - 0.6)).abs() < 1e-12);
    }

    #[test]
    fn bound_pix_davis() {
        assert_eq!(bound_pix(0.008, 480, 854).unwrap(), 8);
        assert_eq!(bound_pix(0.008, 90, 120).unwrap(), 2);
        assert_eq!(bound_pix(3.0, 10, 10).unwrap(), 3);
        assert!(bound_pix(2.5, 10, 10).is_err());
    }

    #[test]
    fn empty_masks() {
        let e = BitMask::new(10, 10);
        let mut m = BitMask::new(10, 10);
        m.set(3, 3, true);
        let d = Disk::new(1);
        assert_eq!(j_measure(&e, &e), 1.0);
        assert_eq!(f_measure(&e, &e, &d), 1.0);
        assert_eq!(f_measure(&e, &m, &d), 0.0);
        assert_eq!(f_measure(&m, &e, &d), 0.0);
        assert_eq!(j_measure(&m, &e), 0.0);
    }
}
