//! Readers for the data-set layouts people have on disk.
//!
//! * [`ImageMaskFolder`]: an image folder plus a mask folder paired by file stem (the
//!   GrabCut / Berkeley / DAVIS-345 layouts of the interactive benchmarks).
//! * COCO instances JSON: [`crate::coco::CocoGt`]; [`coco_instance_samples`] turns its
//!   instances into interactive samples.
//! * COCO panoptic JSON + PNGs: [`crate::panoptic`].
//! * DAVIS (`JPEGImages/480p`, `Annotations/480p`, `ImageSets`): [`crate::davis::DavisDataset`].
//! * YouTube-VOS (`meta.json`, `JPEGImages/`, `Annotations/`): [`YouTubeVos`].
//! * YouTube-VIS JSON (ground truth and results): [`YouTubeVis`], [`load_vis_results`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use fastsam2_core::rle::Rle;
use serde::Deserialize;

use crate::coco::{CocoGt, Segmentation, segmentation_to_rle};
use crate::error::{EvalError, Result, io_err, read_json};
use crate::interactive::{InteractiveTarget, RgbImage};

const IMAGE_EXTS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "tif"];
const MASK_EXTS: [&str; 3] = ["png", "bmp", "tif"];

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

/// Decodes an image file to 8-bit RGB.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let img = image::open(path).map_err(|e| EvalError::Invalid {
        path: path.to_path_buf(),
        entry: "image".into(),
        msg: e.to_string(),
    })?;
    let rgb = img.to_rgb8();
    Ok(RgbImage {
        width: rgb.width(),
        height: rgb.height(),
        data: rgb.into_raw(),
    })
}

/// Reads a mask image as an interactive target: the maximum over colour channels is the
/// label; `ignore_value` (e.g. 128 for GrabCut) marks ignored pixels, any other non-zero
/// value is the object.
pub fn load_mask_target(path: &Path, ignore_value: Option<u8>) -> Result<InteractiveTarget> {
    let img = image::open(path).map_err(|e| EvalError::Invalid {
        path: path.to_path_buf(),
        entry: "mask".into(),
        msg: e.to_string(),
    })?;
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let vals: Vec<u8> = rgb
        .pixels()
        .map(|p| p.0[0].max(p.0[1]).max(p.0[2]))
        .collect();
    let ignore: Vec<bool> = vals.iter().map(|&v| Some(v) == ignore_value).collect();
    let mask = vals
        .iter()
        .zip(&ignore)
        .map(|(&v, &ig)| v > 0 && !ig)
        .collect();
    let ignore = ignore.iter().any(|&b| b).then_some(ignore);
    Ok(InteractiveTarget {
        width: w,
        height: h,
        mask,
        ignore,
    })
}

/// An image folder and a mask folder, paired by file stem.
#[derive(Debug, Clone)]
pub struct ImageMaskFolder {
    /// `(name, image path, mask path)`, sorted by name.
    pub pairs: Vec<(String, PathBuf, PathBuf)>,
}

impl ImageMaskFolder {
    /// Pairs every image of `images` with the mask of the same stem in `masks`; an image
    /// without a mask is an error that names the expected mask.
    pub fn open(images: &Path, masks: &Path) -> Result<ImageMaskFolder> {
        let imgs = list_by_stem(images, &IMAGE_EXTS)?;
        let msks = list_by_stem(masks, &MASK_EXTS)?;
        if imgs.is_empty() {
            return Err(EvalError::Missing {
                path: images.to_path_buf(),
                what: "images (jpg/png/bmp/tif)".into(),
            });
        }
        let mut pairs = Vec::with_capacity(imgs.len());
        for (stem, ip) in imgs {
            let mp = msks.get(&stem).ok_or_else(|| EvalError::Missing {
                path: masks.join(format!("{stem}.png")),
                what: format!("mask for image {}", ip.display()),
            })?;
            pairs.push((stem, ip, mp.clone()));
        }
        Ok(ImageMaskFolder { pairs })
    }

    /// Loads sample `i` as `(name, image, target)`, checking that image and mask sizes agree.
    pub fn load(
        &self,
        i: usize,
        ignore_value: Option<u8>,
    ) -> Result<(String, RgbImage, InteractiveTarget)> {
        let (name, ip, mp) = &self.pairs[i];
        let img = load_rgb(ip)?;
        let t = load_mask_target(mp, ignore_value)?;
        if (t.width, t.height) != (img.width as usize, img.height as usize) {
            return Err(EvalError::SizeMismatch {
                path: mp.clone(),
                entry: format!("mask of {}", ip.display()),
                got_w: t.width as u32,
                got_h: t.height as u32,
                exp_w: img.width,
                exp_h: img.height,
            });
        }
        Ok((name.clone(), img, t))
    }
}

/// Every non-crowd instance of a COCO ground truth as an interactive sample
/// `(name, image path, target)`; images are looked up in `images_dir` by `file_name`.
pub fn coco_instance_samples(
    gt: &CocoGt,
    images_dir: &Path,
) -> Vec<(String, PathBuf, InteractiveTarget)> {
    gt.annotations
        .iter()
        .filter(|a| !a.iscrowd)
        .filter_map(|a| {
            let im = gt.image(a.image_id)?;
            let mask: Vec<bool> = a.rle.decode().into_iter().map(|v| v != 0).collect();
            Some((
                format!("{}#{}", im.file_name, a.id),
                images_dir.join(&im.file_name),
                InteractiveTarget {
                    width: im.width as usize,
                    height: im.height as usize,
                    mask,
                    ignore: None,
                },
            ))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// YouTube-VOS
// ---------------------------------------------------------------------------

/// One object of a YouTube-VOS video (`meta.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct VosObject {
    /// Category name (train split only).
    #[serde(default)]
    pub category: Option<String>,
    /// Frames in which the object is annotated / first appears.
    pub frames: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct VosVideoMeta {
    objects: BTreeMap<String, VosObject>,
}

#[derive(Debug, Clone, Deserialize)]
struct VosMeta {
    videos: BTreeMap<String, VosVideoMeta>,
}

/// A YouTube-VOS video.
#[derive(Debug, Clone)]
pub struct VosVideo {
    /// Video id.
    pub name: String,
    /// Objects by id (the label value in the annotation PNGs).
    pub objects: BTreeMap<u8, VosObject>,
    /// JPEG frames, sorted.
    pub images: Vec<PathBuf>,
    /// Annotation PNGs present, sorted.
    pub annotations: Vec<PathBuf>,
}

/// A YouTube-VOS split: `meta.json`, `JPEGImages/<video>/*.jpg`, `Annotations/<video>/*.png`.
#[derive(Debug, Clone)]
pub struct YouTubeVos {
    /// Videos in `meta.json` order (sorted by id).
    pub videos: Vec<VosVideo>,
}

impl YouTubeVos {
    /// Reads a split folder.
    pub fn open(root: &Path) -> Result<YouTubeVos> {
        let meta_path = root.join("meta.json");
        let meta: VosMeta = read_json(&meta_path)?;
        let mut videos = Vec::with_capacity(meta.videos.len());
        for (name, v) in meta.videos {
            let mut objects = BTreeMap::new();
            for (id, o) in v.objects {
                let k: u8 =
                    id.parse()
                        .ok()
                        .filter(|&k| k > 0)
                        .ok_or_else(|| EvalError::Invalid {
                            path: meta_path.clone(),
                            entry: format!("videos.{name}.objects.{id}"),
                            msg:
                                "object ids must be integers 1..=255 (the label values of the PNGs)"
                                    .into(),
                        })?;
                objects.insert(k, o);
            }
            let img_dir = root.join("JPEGImages").join(&name);
            let ann_dir = root.join("Annotations").join(&name);
            if !img_dir.is_dir() {
                return Err(EvalError::Missing {
                    path: img_dir,
                    what: format!("frames of video {name}"),
                });
            }
            if !ann_dir.is_dir() {
                return Err(EvalError::Missing {
                    path: ann_dir,
                    what: format!("annotations of video {name}"),
                });
            }
            let images: Vec<PathBuf> = list_by_stem(&img_dir, &["jpg", "jpeg"])?
                .into_values()
                .collect();
            let annotations: Vec<PathBuf> =
                list_by_stem(&ann_dir, &["png"])?.into_values().collect();
            for (k, o) in &objects {
                for f in &o.frames {
                    if !img_dir.join(format!("{f}.jpg")).is_file() {
                        return Err(EvalError::Missing {
                            path: img_dir.join(format!("{f}.jpg")),
                            what: format!(
                                "frame {f} listed for object {k} of video {name} in {}",
                                meta_path.display()
                            ),
                        });
                    }
                }
            }
            videos.push(VosVideo {
                name,
                objects,
                images,
                annotations,
            });
        }
        Ok(YouTubeVos { videos })
    }
}

// ---------------------------------------------------------------------------
// YouTube-VIS
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
struct VisVideoRaw {
    id: i64,
    width: u32,
    height: u32,
    #[serde(default)]
    length: Option<usize>,
    file_names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct VisAnnRaw {
    #[serde(default)]
    id: Option<i64>,
    video_id: i64,
    category_id: i64,
    segmentations: Vec<Option<Segmentation>>,
    #[serde(default)]
    areas: Vec<Option<f64>>,
    #[serde(default)]
    iscrowd: Option<i64>,
    #[serde(default)]
    score: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
struct VisCategoryRaw {
    id: i64,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Clone, Deserialize)]
struct VisRaw {
    videos: Vec<VisVideoRaw>,
    #[serde(default)]
    annotations: Vec<VisAnnRaw>,
    categories: Vec<VisCategoryRaw>,
}

/// A YouTube-VIS video.
#[derive(Debug, Clone)]
pub struct VisVideo {
    /// Video id.
    pub id: i64,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Frame file names.
    pub file_names: Vec<String>,
}

/// A YouTube-VIS instance track (ground truth or result).
#[derive(Debug, Clone)]
pub struct VisTrack {
    /// Annotation id (results: `index + 1`).
    pub id: i64,
    /// Video id.
    pub video_id: i64,
    /// Category id.
    pub category_id: i64,
    /// One mask per frame, `None` where the object is absent.
    pub masks: Vec<Option<Rle>>,
    /// `areas` field per frame (ground truth), if given.
    pub areas: Vec<Option<f64>>,
    /// Crowd flag.
    pub iscrowd: bool,
    /// Confidence (results).
    pub score: Option<f64>,
}

/// A YouTube-VIS ground-truth JSON.
#[derive(Debug, Clone)]
pub struct YouTubeVis {
    /// Videos.
    pub videos: Vec<VisVideo>,
    /// Categories `(id, name)`.
    pub categories: Vec<(i64, String)>,
    /// Instance tracks.
    pub tracks: Vec<VisTrack>,
}

fn vis_tracks(
    path: &Path,
    anns: Vec<VisAnnRaw>,
    videos: &HashMap<i64, VisVideo>,
    cats: &HashMap<i64, String>,
    kind: &str,
) -> Result<Vec<VisTrack>> {
    anns.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let entry = match a.id {
                Some(id) => format!("{kind}[{i}] (id {id})"),
                None => format!("{kind}[{i}]"),
            };
            let v = videos.get(&a.video_id).ok_or_else(|| EvalError::Invalid {
                path: path.to_path_buf(),
                entry: entry.clone(),
                msg: format!("unknown video id {}", a.video_id),
            })?;
            if !cats.contains_key(&a.category_id) {
                return Err(EvalError::UnknownCategory {
                    path: path.to_path_buf(),
                    entry,
                    id: a.category_id,
                });
            }
            if a.segmentations.len() != v.file_names.len() {
                return Err(EvalError::Invalid {
                    path: path.to_path_buf(),
                    entry,
                    msg: format!(
                        "{} segmentations for a video of {} frames",
                        a.segmentations.len(),
                        v.file_names.len()
                    ),
                });
            }
            let masks = a
                .segmentations
                .iter()
                .enumerate()
                .map(|(f, s)| match s {
                    None => Ok(None),
                    Some(s) => segmentation_to_rle(
                        s,
                        v.height,
                        v.width,
                        path,
                        &format!("{entry}: frame {f}"),
                    )
                    .map(Some),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(VisTrack {
                id: a.id.unwrap_or(i as i64 + 1),
                video_id: a.video_id,
                category_id: a.category_id,
                masks,
                areas: a.areas,
                iscrowd: a.iscrowd.unwrap_or(0) != 0,
                score: a.score,
            })
        })
        .collect()
}

impl YouTubeVis {
    /// Reads a YouTube-VIS ground-truth JSON.
    pub fn load(path: &Path) -> Result<YouTubeVis> {
        let raw: VisRaw = read_json(path)?;
        let mut vids = HashMap::new();
        let mut videos = Vec::with_capacity(raw.videos.len());
        for (i, v) in raw.videos.into_iter().enumerate() {
            if let Some(l) = v.length
                && l != v.file_names.len()
            {
                return Err(EvalError::Invalid {
                    path: path.to_path_buf(),
                    entry: format!("videos[{i}] (id {})", v.id),
                    msg: format!("length {l} but {} file_names", v.file_names.len()),
                });
            }
            let vv = VisVideo {
                id: v.id,
                width: v.width,
                height: v.height,
                file_names: v.file_names,
            };
            vids.insert(v.id, vv.clone());
            videos.push(vv);
        }
        let cats: HashMap<i64, String> = raw
            .categories
            .iter()
            .map(|c| (c.id, c.name.clone()))
            .collect();
        let tracks = vis_tracks(path, raw.annotations, &vids, &cats, "annotations")?;
        Ok(YouTubeVis {
            videos,
            categories: raw.categories.into_iter().map(|c| (c.id, c.name)).collect(),
            tracks,
        })
    }
}

/// Reads a YouTube-VIS results file (a list of `{video_id, category_id, score, segmentations}`).
pub fn load_vis_results(path: &Path, gt: &YouTubeVis) -> Result<Vec<VisTrack>> {
    let raw: Vec<VisAnnRaw> = read_json(path)?;
    let vids: HashMap<i64, VisVideo> = gt.videos.iter().map(|v| (v.id, v.clone())).collect();
    let cats: HashMap<i64, String> = gt.categories.iter().cloned().collect();
    let tracks = vis_tracks(path, raw, &vids, &cats, "results")?;
    for (i, t) in tracks.iter().enumerate() {
        if t.score.is_none() {
            return Err(EvalError::Invalid {
                path: path.to_path_buf(),
                entry: format!("results[{i}]"),
                msg: "missing \"score\"".into(),
            });
        }
    }
    Ok(tracks)
}
