//! `VideoPredictor` sessions for SAM 2 / 2.1: prompts (points, boxes, masks) on any frame for
//! any object, propagation forward and backward, corrections that become conditioning frames,
//! objects added and removed, and a streaming mode where frames arrive one at a time.
//!
//! The bookkeeping mirrors `sam2.sam2_video_predictor.SAM2VideoPredictor` (prompt storage,
//! temporary outputs consolidated before propagation, which memories a frame attends to), so
//! the masks equal the official ones. Differences, all outputs-preserving:
//! * every object on a frame is decoded in one batch and the frame's image features are
//!   computed once per frame and shared (the reference loops over objects);
//! * frames are decoded from disk when needed instead of holding the whole video in memory;
//! * memory features are kept as packed bf16 (what the reference stores);
//! * streaming sessions keep only the memories a future frame can attend to (the most recent
//!   `max(num_maskmem, max_obj_ptrs_in_encoder) - 1` frames and at most
//!   `max_cond_memories` conditioning frames), so memory does not grow with the stream.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::{Device, Tensor};
use fastsam2_core::image_io::{RgbImage, image_dimensions, load_rgb};
use fastsam2_core::prompt::{BoxXyxy, Point};
use fastsam2_core::resize::sam2_video_frame_preprocess;
use fastsam2_models::common::{tensor_from_vec, tensor_to_vec};
use fastsam2_models::loader::{LoadedModel, Network};
use fastsam2_models::sam2::{
    FrameFeatures, FrameMemory, HeadsOut, MemoryBank, NO_OBJ_SCORE, Sam2, Sam2Points, resize_aa,
    upsample_bilinear,
};

use crate::postprocess::bilinear;

/// Errors of video sessions. Each names the frame / object / file concerned.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("model {0} is not a SAM 2 model; video tracking needs a SAM 2 / 2.1 checkpoint")]
    NotSam2(String),
    #[error("no frames (.jpg, .jpeg, .png) in {0}")]
    EmptyFolder(PathBuf),
    #[error("cannot read the frame folder {path}: {source}")]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "frame {path} is {got_w}x{got_h} but the first frame is {w}x{h}; all frames must have one size"
    )]
    MixedSizes {
        path: PathBuf,
        w: u32,
        h: u32,
        got_w: u32,
        got_h: u32,
    },
    #[error("frame index {frame} is past the end of the video ({num_frames} frames)")]
    FrameOutOfRange { frame: usize, num_frames: usize },
    #[error("unknown object id {0}")]
    UnknownObject(u32),
    #[error("object {obj} on frame {frame}: {message}")]
    BadPrompt {
        frame: usize,
        obj: u32,
        message: String,
    },
    #[error("no prompts were given for object {0}; add points, a box or a mask first")]
    NoPrompts(u32),
    #[error("no objects to track: add a prompt first")]
    NoObjects,
    #[error("streaming session: {0}")]
    Streaming(String),
    #[error(transparent)]
    Image(#[from] fastsam2_core::image_io::ImageError),
    #[error(transparent)]
    Resize(#[from] fastsam2_core::resize::ResizeError),
}

pub type Result<T, E = VideoError> = std::result::Result<T, E>;

/// A prompt for one object on one frame, in pixels of the video frames.
#[derive(Clone, Debug, PartialEq)]
pub enum VideoPrompt {
    /// Clicks and/or a box. `clear` replaces the object's earlier clicks on that frame
    /// (sam2's `clear_old_points`); a box always needs `clear`.
    Points {
        points: Vec<Point>,
        bbox: Option<BoxXyxy>,
        clear: bool,
    },
    /// A binary mask (`height x width` of the video, row-major).
    Mask {
        mask: Vec<bool>,
        width: usize,
        height: usize,
    },
}

/// Session options.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// A correction on an already tracked frame becomes a conditioning frame (sam2's
    /// `add_all_frames_to_correct_as_cond`; without it a later propagation overwrites it).
    pub add_all_frames_to_correct_as_cond: bool,
    /// Streaming only: conditioning memories kept (the first prompted frame and the most
    /// recent ones). `None` keeps all.
    pub max_cond_memories: Option<usize>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            add_all_frames_to_correct_as_cond: true,
            max_cond_memories: Some(8),
        }
    }
}

/// Masks of every object on one frame.
#[derive(Clone, Debug)]
pub struct FrameMasks {
    pub frame: usize,
    /// Video size (height, width).
    pub video_hw: (usize, usize),
    /// Per object in insertion order: (id, 256x256 low-res logits, object score).
    pub objects: Vec<ObjectMask>,
}

#[derive(Clone, Debug)]
pub struct ObjectMask {
    pub id: u32,
    /// 256 x 256 logits (NO_OBJ_SCORE = -1024 where the object is absent).
    pub low_res: Vec<f32>,
    pub low_res_size: usize,
    pub object_score: f32,
}

impl ObjectMask {
    /// Logits at the video resolution (bilinear, align_corners=False), H x W.
    pub fn video_logits(&self, (h, w): (usize, usize)) -> Vec<f32> {
        bilinear(&self.low_res, self.low_res_size, self.low_res_size, h, w)
    }
}

/// A stored per-frame output (see [`Session::stored_output`]).
#[derive(Clone, Debug)]
pub struct StoredOutput {
    pub low_res: Vec<f32>,
    pub object_score: f32,
    pub obj_ptr: Vec<f32>,
    pub maskmem_features: Option<(Vec<f32>, [usize; 4])>,
    pub is_cond: bool,
}

/// bf16-packed memory features (what sam2 stores), plus the object pointer.
#[derive(Clone, Debug)]
struct PackedMemory {
    features: Vec<half::bf16>,
    dims: [usize; 4],
    obj_ptr: Tensor<2>,
}

impl PackedMemory {
    fn pack(features: Tensor<4>, obj_ptr: Tensor<2>) -> Self {
        let dims = features.dims();
        let features = tensor_to_vec(features)
            .into_iter()
            .map(half::bf16::from_f32)
            .collect();
        Self {
            features,
            dims,
            obj_ptr,
        }
    }
    fn unpack(&self, device: &Device) -> FrameMemory {
        let v: Vec<f32> = self.features.iter().map(|x| x.to_f32()).collect();
        FrameMemory {
            maskmem_features: tensor_from_vec(v, self.dims, device),
            obj_ptr: self.obj_ptr.clone(),
        }
    }
}

/// A frame's output for one object (sam2's `compact_current_out`).
#[derive(Clone, Debug)]
struct FrameOutput {
    /// [1, 1, 256, 256]
    pred_masks: Tensor<4>,
    object_score: Tensor<2>,
    obj_ptr: Tensor<2>,
    memory: Option<PackedMemory>,
}

#[derive(Clone, Debug)]
struct PointsInput {
    /// (x, y) in the 1024 model frame
    coords: Vec<[f32; 2]>,
    labels: Vec<i32>,
}

#[derive(Clone, Debug, Default)]
struct ObjectState {
    id: u32,
    points: BTreeMap<usize, PointsInput>,
    /// [1, 1, 1024, 1024] binary masks
    masks: BTreeMap<usize, Tensor<4>>,
    cond: BTreeMap<usize, FrameOutput>,
    non_cond: BTreeMap<usize, FrameOutput>,
    temp_cond: BTreeMap<usize, FrameOutput>,
    temp_non_cond: BTreeMap<usize, FrameOutput>,
    /// frame -> tracked in reverse
    tracked: BTreeMap<usize, bool>,
}

#[allow(clippy::large_enum_variant)] // one per session
enum Frames {
    Folder(Vec<PathBuf>),
    /// Streaming: the latest frame's preprocessed pixels, by index.
    Stream {
        latest: Option<(usize, Tensor<4>)>,
        count: usize,
    },
}

/// Creates sessions for a loaded SAM 2 model.
#[derive(Clone)]
pub struct VideoPredictor {
    model: Arc<LoadedModel>,
    device: Device,
}

impl VideoPredictor {
    pub fn new(model: LoadedModel, device: Device) -> Result<Self> {
        Self::from_shared(Arc::new(model), device)
    }

    pub fn from_shared(model: Arc<LoadedModel>, device: Device) -> Result<Self> {
        match &model.network {
            Network::Sam2(_) => Ok(Self { model, device }),
            _ => Err(VideoError::NotSam2(model.name.clone())),
        }
    }

    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    /// An offline session over a folder of frames (`.jpg`, `.jpeg`, `.png`, one size), ordered
    /// by integer file stem when every stem is an integer, else by name.
    pub fn open_folder(&self, dir: &Path, opts: SessionOptions) -> Result<Session> {
        let paths = list_frames(dir)?;
        let (w, h) = image_dimensions(&paths[0])?;
        for p in &paths[1..] {
            let (pw, ph) = image_dimensions(p)?;
            if (pw, ph) != (w, h) {
                return Err(VideoError::MixedSizes {
                    path: p.clone(),
                    w,
                    h,
                    got_w: pw,
                    got_h: ph,
                });
            }
        }
        Ok(Session::new(
            self.clone(),
            Frames::Folder(paths),
            Some((h as usize, w as usize)),
            false,
            opts,
        ))
    }

    /// A streaming session: frames are pushed one at a time with [`Session::push_frame`].
    pub fn streaming(&self, opts: SessionOptions) -> Session {
        Session::new(
            self.clone(),
            Frames::Stream {
                latest: None,
                count: 0,
            },
            None,
            true,
            opts,
        )
    }
}

/// Frame files of a folder in the order of the CLI contract.
pub fn list_frames(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|source| VideoError::Folder {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for e in rd {
        let e = e.map_err(|source| VideoError::Folder {
            path: dir.to_path_buf(),
            source,
        })?;
        let p = e.path();
        let ok = p
            .extension()
            .and_then(|x| x.to_str())
            .map(|x| matches!(x.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
            .unwrap_or(false);
        if ok && p.is_file() {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(VideoError::EmptyFolder(dir.to_path_buf()));
    }
    let stem = |p: &PathBuf| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string()
    };
    if files.iter().all(|p| {
        let s = stem(p);
        !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())
    }) {
        files.sort_by_key(|p| stem(p).parse::<u128>().unwrap_or(u128::MAX));
    } else {
        files.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
    }
    Ok(files)
}

/// One tracking session (sam2's `inference_state`).
pub struct Session {
    predictor: VideoPredictor,
    frames: Frames,
    video_hw: Option<(usize, usize)>,
    streaming: bool,
    opts: SessionOptions,
    objects: Vec<ObjectState>,
    cache: Option<(usize, FrameFeatures)>,
    maskmem_pos_enc: Option<Tensor<4>>,
}

impl Session {
    fn new(
        predictor: VideoPredictor,
        frames: Frames,
        video_hw: Option<(usize, usize)>,
        streaming: bool,
        opts: SessionOptions,
    ) -> Self {
        Self {
            predictor,
            frames,
            video_hw,
            streaming,
            opts,
            objects: Vec::new(),
            cache: None,
            maskmem_pos_enc: None,
        }
    }

    fn sam2(&self) -> &Sam2 {
        match &self.predictor.model.network {
            Network::Sam2(m) => m,
            _ => unreachable!("checked by VideoPredictor::new"),
        }
    }

    fn device(&self) -> &Device {
        &self.predictor.device
    }

    /// Number of frames (offline), or frames pushed so far (streaming).
    pub fn num_frames(&self) -> usize {
        match &self.frames {
            Frames::Folder(p) => p.len(),
            Frames::Stream { count, .. } => *count,
        }
    }

    /// The frame count that bounds object-pointer offsets: the video length offline; a stream
    /// has no end, so every pointer slot counts.
    fn frames_for_ptrs(&self) -> usize {
        if self.streaming {
            usize::MAX
        } else {
            self.num_frames()
        }
    }

    /// Video size (height, width); known once the first frame is there.
    pub fn video_hw(&self) -> Option<(usize, usize)> {
        self.video_hw
    }

    /// Object ids in insertion order.
    pub fn object_ids(&self) -> Vec<u32> {
        self.objects.iter().map(|o| o.id).collect()
    }

    fn obj_idx(&self, id: u32) -> Option<usize> {
        self.objects.iter().position(|o| o.id == id)
    }

    fn check_frame(&self, frame: usize) -> Result<()> {
        let n = self.num_frames();
        if frame >= n {
            return Err(VideoError::FrameOutOfRange {
                frame,
                num_frames: n,
            });
        }
        if let Frames::Stream { latest, .. } = &self.frames
            && latest.as_ref().map(|(i, _)| *i) != Some(frame)
        {
            return Err(VideoError::Streaming(format!(
                "prompts must be on the latest pushed frame ({}), not frame {frame}",
                n - 1
            )));
        }
        Ok(())
    }

    /// Features of a frame (computed once and cached until another frame is needed).
    fn features(&mut self, frame: usize) -> Result<FrameFeatures> {
        if let Some((f, feats)) = &self.cache
            && *f == frame
        {
            return Ok(feats.clone());
        }
        let x = match &self.frames {
            Frames::Folder(paths) => {
                let img = load_rgb(&paths[frame])?;
                let pre = sam2_video_frame_preprocess(&img, self.sam2().config().image_size)?;
                let s = pre.size;
                tensor_from_vec(pre.data, [1, 3, s, s], self.device())
            }
            Frames::Stream { latest, .. } => match latest {
                Some((i, x)) if *i == frame => x.clone(),
                _ => {
                    return Err(VideoError::Streaming(format!(
                        "frame {frame} is no longer available"
                    )));
                }
            },
        };
        let feats = self.sam2().encode_frame(x);
        self.cache = Some((frame, feats.clone()));
        Ok(feats)
    }

    /// Add a prompt for `obj_id` on `frame` (a new id creates an object). Returns the masks
    /// of every object on that frame (sam2's `add_new_points_or_box` / `add_new_mask`).
    pub fn add_prompt(
        &mut self,
        frame: usize,
        obj_id: u32,
        prompt: &VideoPrompt,
    ) -> Result<FrameMasks> {
        self.check_frame(frame)?;
        let (vh, vw) = self
            .video_hw
            .ok_or_else(|| VideoError::Streaming("push a frame first".into()))?;
        let size = self.sam2().config().image_size;
        let bad = |message: String| VideoError::BadPrompt {
            frame,
            obj: obj_id,
            message,
        };
        // validate before touching any state
        #[allow(clippy::large_enum_variant)] // one per call
        enum Input {
            Points(PointsInput, bool),
            Mask(Tensor<4>),
        }
        let input = match prompt {
            VideoPrompt::Points {
                points,
                bbox,
                clear,
            } => {
                if points.is_empty() && bbox.is_none() {
                    return Err(bad("give at least one point or a box".into()));
                }
                if bbox.is_some() && !clear {
                    return Err(bad(
                        "a box replaces the object's earlier clicks: it needs clear = true".into(),
                    ));
                }
                let p = fastsam2_core::prompt::Prompt {
                    points: points.clone(),
                    bbox: *bbox,
                    mask: None,
                };
                p.validate(vw, vh, 256).map_err(|e| bad(e.to_string()))?;
                let (sx, sy) = (size as f32 / vw as f32, size as f32 / vh as f32);
                // sam2: points / [W, H] * image_size, in float32
                let scale =
                    |x: f32, y: f32| [x / vw as f32 * size as f32, y / vh as f32 * size as f32];
                let _ = (sx, sy);
                let mut coords = Vec::new();
                let mut labels = Vec::new();
                if let Some(b) = bbox {
                    coords.push(scale(b.x0, b.y0));
                    coords.push(scale(b.x1, b.y1));
                    labels.extend([2, 3]);
                }
                for pt in points {
                    coords.push(scale(pt.x, pt.y));
                    labels.push(pt.label);
                }
                Input::Points(PointsInput { coords, labels }, *clear)
            }
            VideoPrompt::Mask {
                mask,
                width,
                height,
            } => {
                if (*height, *width) != (vh, vw) || mask.len() != vh * vw {
                    return Err(bad(format!(
                        "mask is {width}x{height} ({} values) but the video is {vw}x{vh}",
                        mask.len()
                    )));
                }
                let m: Vec<f32> = mask.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
                let t = if (vh, vw) == (size, size) {
                    tensor_from_vec(m, [1, 1, size, size], self.device())
                } else {
                    let r =
                        fastsam2_core::resize::torch_resize_bilinear_aa(&m, 1, vh, vw, size, size)?;
                    let r: Vec<f32> = r
                        .into_iter()
                        .map(|v| if v >= 0.5 { 1.0 } else { 0.0 })
                        .collect();
                    tensor_from_vec(r, [1, 1, size, size], self.device())
                };
                Input::Mask(t)
            }
        };
        let idx = match self.obj_idx(obj_id) {
            Some(i) => i,
            None => {
                self.objects.push(ObjectState {
                    id: obj_id,
                    ..Default::default()
                });
                self.objects.len() - 1
            }
        };
        let (points, mask) = match input {
            Input::Points(p, clear) => {
                let o = &mut self.objects[idx];
                let merged = match (clear, o.points.get(&frame)) {
                    (false, Some(old)) => {
                        let mut m = old.clone();
                        m.coords.extend(p.coords);
                        m.labels.extend(p.labels);
                        m
                    }
                    _ => p,
                };
                o.points.insert(frame, merged.clone());
                o.masks.remove(&frame);
                (Some(merged), None)
            }
            Input::Mask(m) => {
                let o = &mut self.objects[idx];
                o.masks.insert(frame, m.clone());
                o.points.remove(&frame);
                (None, Some(m))
            }
        };
        let o = &self.objects[idx];
        let is_init_cond_frame = !o.tracked.contains_key(&frame);
        let reverse = o.tracked.get(&frame).copied().unwrap_or(false);
        let is_cond = is_init_cond_frame || self.opts.add_all_frames_to_correct_as_cond;
        let prev_logits = if points.is_some() {
            let temp = if is_cond {
                &o.temp_cond
            } else {
                &o.temp_non_cond
            };
            temp.get(&frame)
                .or_else(|| o.cond.get(&frame))
                .or_else(|| o.non_cond.get(&frame))
                .map(|out| out.pred_masks.clone().clamp(-32.0, 32.0))
        } else {
            None
        };
        let feats = self.features(frame)?;
        let out = self.run_frame(
            &[idx],
            frame,
            &feats,
            is_init_cond_frame,
            &[points],
            &[mask],
            reverse,
            false,
            &[prev_logits],
        );
        let out = out.into_iter().next().expect("one object");
        let o = &mut self.objects[idx];
        if is_cond {
            o.temp_cond.insert(frame, out)
        } else {
            o.temp_non_cond.insert(frame, out)
        };
        Ok(self.consolidate(frame, is_cond))
    }

    /// The masks of every object on a frame from the temporary / stored outputs.
    fn consolidate(&self, frame: usize, is_cond: bool) -> FrameMasks {
        let low = 4 * self.sam2().config().prompt_encoder.image_embedding_size[0];
        let objects = self
            .objects
            .iter()
            .map(|o| {
                let temp = if is_cond {
                    &o.temp_cond
                } else {
                    &o.temp_non_cond
                };
                let out = temp
                    .get(&frame)
                    .or_else(|| o.cond.get(&frame))
                    .or_else(|| o.non_cond.get(&frame));
                match out {
                    Some(out) => ObjectMask {
                        id: o.id,
                        low_res: tensor_to_vec(out.pred_masks.clone()),
                        low_res_size: low,
                        object_score: tensor_to_vec(out.object_score.clone())[0],
                    },
                    None => ObjectMask {
                        id: o.id,
                        low_res: vec![NO_OBJ_SCORE; low * low],
                        low_res_size: low,
                        object_score: NO_OBJ_SCORE,
                    },
                }
            })
            .collect();
        FrameMasks {
            frame,
            video_hw: self.video_hw.unwrap_or((0, 0)),
            objects,
        }
    }

    /// Run `f` on object `oi`'s memory bank for `frame`: its conditioning memories and the
    /// tracked frames' memories within reach (pointers or spatial memories), unpacked from bf16.
    fn with_bank<T>(
        &self,
        oi: usize,
        frame: usize,
        device: &Device,
        f: impl FnOnce(&MemoryBank<'_>) -> T,
    ) -> T {
        let o = &self.objects[oi];
        let cfg = self.sam2().config();
        let reach = cfg.max_obj_ptrs_in_encoder.max(cfg.num_maskmem);
        let cond: Vec<(usize, FrameMemory)> = o
            .cond
            .iter()
            .filter_map(|(f, out)| out.memory.as_ref().map(|m| (*f, m.unpack(device))))
            .collect();
        let non_cond: BTreeMap<usize, FrameMemory> = o
            .non_cond
            .iter()
            .filter(|(f, _)| (**f as i64 - frame as i64).unsigned_abs() as usize <= reach)
            .filter_map(|(f, out)| out.memory.as_ref().map(|m| (*f, m.unpack(device))))
            .collect();
        let lookup = |t: usize| non_cond.get(&t);
        f(&MemoryBank {
            cond: cond.iter().map(|(f, m)| (*f, m)).collect(),
            non_cond: &lookup,
        })
    }

    /// `_run_single_frame_inference` for several objects at once (features shared, heads and
    /// memory encoder batched; memory attention per object, each against its own memories).
    #[allow(clippy::too_many_arguments)]
    fn run_frame(
        &mut self,
        objs: &[usize],
        frame: usize,
        feats: &FrameFeatures,
        is_init_cond_frame: bool,
        points: &[Option<PointsInput>],
        masks: &[Option<Tensor<4>>],
        reverse: bool,
        run_mem_encoder: bool,
        prev_logits: &[Option<Tensor<4>>],
    ) -> Vec<FrameOutput> {
        let model = self.predictor.model.clone();
        let Network::Sam2(sam2) = &model.network else {
            unreachable!("checked by VideoPredictor::new")
        };
        let device = self.predictor.device.clone();
        let b = objs.len();
        let num_frames = self.frames_for_ptrs();
        let batch = feats.expand(b);
        let high_res = batch.high_res.clone();
        // all objects of a call share the kind of input (propagation: none; prompts: one object)
        let heads: HeadsOut = if let Some(Some(m)) = masks.first()
            && sam2.config().use_mask_input_as_output_without_sam
        {
            sam2.use_mask_as_output(batch.vision_feat.clone(), Some(high_res), m.clone())
        } else {
            let pos_enc = self.maskmem_pos_enc(sam2, feats);
            let t0 = std::time::Instant::now();
            let conditioned: Vec<Tensor<4>> = if b > 1 && !is_init_cond_frame {
                // tracked frame, several objects: the frame's part of the memory attention
                // once, then one batch per memory-bank layout
                let first = sam2.memory_attention_frame_part(
                    feats.vision_feat.clone(),
                    feats.vision_pos.clone(),
                );
                let [_, c, h, w] = feats.vision_feat.dims();
                let memories = objs
                    .iter()
                    .map(|&oi| {
                        self.with_bank(oi, frame, &device, |bank| {
                            sam2.gather_memory(
                                frame, bank, &pos_enc, num_frames, reverse, c, &device,
                            )
                        })
                    })
                    .collect();
                sam2.condition_on_memories(&first, memories, [h, w])
            } else {
                objs.iter()
                    .map(|&oi| {
                        self.with_bank(oi, frame, &device, |bank| {
                            sam2.condition_on_memory(
                                frame,
                                is_init_cond_frame,
                                feats.vision_feat.clone(),
                                feats.vision_pos.clone(),
                                bank,
                                &pos_enc,
                                num_frames,
                                reverse,
                                None,
                            )
                        })
                    })
                    .collect()
            };
            if tracing::enabled!(tracing::Level::DEBUG) {
                let _ = conditioned[0]
                    .clone()
                    .slice([0..1, 0..1, 0..1, 0..1])
                    .into_data();
                tracing::debug!(
                    frame,
                    b,
                    ms = t0.elapsed().as_secs_f64() * 1e3,
                    "memory attention"
                );
            }
            let t0 = std::time::Instant::now();
            let pix = Tensor::cat(conditioned, 0);
            let n_pts = points
                .first()
                .and_then(|p| p.as_ref())
                .map(|p| p.labels.len())
                .unwrap_or(0);
            let sam_points = points.first().and_then(|p| p.as_ref()).map(|_| {
                let coords: Vec<f32> = points
                    .iter()
                    .flat_map(|p| {
                        p.as_ref()
                            .expect("same kind")
                            .coords
                            .iter()
                            .flat_map(|c| [c[0], c[1]])
                    })
                    .collect();
                let labels: Vec<i32> = points
                    .iter()
                    .flat_map(|p| p.as_ref().expect("same kind").labels.clone())
                    .collect();
                Sam2Points {
                    coords: tensor_from_vec(coords, [b, n_pts, 2], &device),
                    labels,
                }
            });
            let low = 4 * sam2.config().prompt_encoder.image_embedding_size[0];
            let mask_prompt = match (prev_logits.first(), masks.first()) {
                (Some(Some(_)), _) => Some(Tensor::cat(
                    prev_logits
                        .iter()
                        .map(|p| p.clone().expect("same kind"))
                        .collect(),
                    0,
                )),
                // a mask prompt through the SAM heads (models without use_mask_input_as_output)
                (_, Some(Some(_))) => Some(resize_aa(
                    Tensor::cat(
                        masks
                            .iter()
                            .map(|m| m.clone().expect("same kind"))
                            .collect(),
                        0,
                    ),
                    low,
                    low,
                )),
                _ => None,
            };
            let multimask = sam2.use_multimask(is_init_cond_frame, n_pts);
            let h = sam2.forward_sam_heads(
                pix,
                sam_points.as_ref(),
                mask_prompt,
                Some(high_res),
                multimask,
            );
            tracing::debug!(
                frame,
                b,
                ms = t0.elapsed().as_secs_f64() * 1e3,
                "prompt encoder + mask decoder"
            );
            h
        };
        let t0 = std::time::Instant::now();
        let memory = run_mem_encoder.then(|| {
            let (f, _) = sam2.encode_new_memory(
                feats.vision_feat.clone(), // one row: shared by every object
                heads.high_res_masks.clone(),
                heads.object_score_logits.clone(),
                points.first().is_some_and(|p| p.is_some()),
            );
            f
        });
        tracing::debug!(
            frame,
            b,
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "memory encoder"
        );
        let t0 = std::time::Instant::now();
        let outs = (0..b)
            .map(|i| {
                let sl4 = |t: &Tensor<4>| {
                    let [_, c, h, w] = t.dims();
                    t.clone().slice([i..i + 1, 0..c, 0..h, 0..w])
                };
                let sl2 = |t: &Tensor<2>| {
                    let [_, c] = t.dims();
                    t.clone().slice([i..i + 1, 0..c])
                };
                let obj_ptr = sl2(&heads.obj_ptr);
                FrameOutput {
                    pred_masks: sl4(&heads.low_res_masks),
                    object_score: sl2(&heads.object_score_logits),
                    memory: memory
                        .as_ref()
                        .map(|m| PackedMemory::pack(sl4(m), obj_ptr.clone())),
                    obj_ptr,
                }
            })
            .collect();
        tracing::debug!(
            frame,
            b,
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "outputs packed"
        );
        outs
    }

    /// The memories' position encoding (a constant of the model).
    fn maskmem_pos_enc(&mut self, sam2: &Sam2, feats: &FrameFeatures) -> Tensor<4> {
        if let Some(p) = &self.maskmem_pos_enc {
            return p.clone();
        }
        let [_, _, h, w] = feats.vision_feat.dims();
        let m = sam2.config().mem_dim();
        let p = fastsam2_models::position_encoding::sine_2d_tensor(
            m,
            h,
            w,
            &feats.vision_feat.device(),
        );
        self.maskmem_pos_enc = Some(p.clone());
        p
    }

    /// `propagate_in_video_preflight`: encode the memories of the prompted frames and move
    /// them out of the temporary outputs.
    fn preflight(&mut self) -> Result<()> {
        if self.objects.is_empty() {
            return Err(VideoError::NoObjects);
        }
        for oi in 0..self.objects.len() {
            for is_cond in [false, true] {
                let temp = {
                    let o = &mut self.objects[oi];
                    std::mem::take(if is_cond {
                        &mut o.temp_cond
                    } else {
                        &mut o.temp_non_cond
                    })
                };
                for (frame, mut out) in temp {
                    if out.memory.is_none() {
                        let model = self.predictor.model.clone();
                        let Network::Sam2(sam2) = &model.network else {
                            unreachable!("checked by VideoPredictor::new")
                        };
                        let feats = self.features(frame)?;
                        let high =
                            upsample_bilinear(out.pred_masks.clone(), sam2.config().image_size);
                        let (f, _) = sam2.encode_new_memory(
                            feats.vision_feat.clone(),
                            high,
                            out.object_score.clone(),
                            true,
                        );
                        out.memory = Some(PackedMemory::pack(f, out.obj_ptr.clone()));
                    }
                    let o = &mut self.objects[oi];
                    if is_cond {
                        o.cond.insert(frame, out)
                    } else {
                        o.non_cond.insert(frame, out)
                    };
                }
            }
            let o = &mut self.objects[oi];
            if o.cond.is_empty() {
                return Err(VideoError::NoPrompts(o.id));
            }
            let cond_frames: Vec<usize> = o.cond.keys().copied().collect();
            for f in cond_frames {
                o.non_cond.remove(&f);
            }
        }
        Ok(())
    }

    /// The earliest conditioning frame of any object (where propagation starts).
    pub fn start_frame(&self) -> Option<usize> {
        self.objects
            .iter()
            .flat_map(|o| o.cond.keys().chain(o.temp_cond.keys()))
            .min()
            .copied()
    }

    /// `propagate_in_video`: track every object through the video from the earliest
    /// conditioning frame (forward, or backward with `reverse`), calling `on_frame` with the
    /// masks of each frame as it is done.
    pub fn propagate(
        &mut self,
        reverse: bool,
        mut on_frame: impl FnMut(&FrameMasks) -> Result<()>,
    ) -> Result<()> {
        if self.streaming {
            return Err(VideoError::Streaming(
                "use push_frame/track to advance a stream".into(),
            ));
        }
        self.preflight()?;
        let start = self.start_frame().expect("preflight checked prompts");
        let n = self.num_frames();
        let order: Vec<usize> = if reverse {
            if start > 0 {
                (0..=start).rev().collect()
            } else {
                Vec::new()
            }
        } else {
            (start..n).collect()
        };
        for f in order {
            let masks = self.track_frame(f, reverse)?;
            on_frame(&masks)?;
        }
        Ok(())
    }

    /// One round as `fastsam2 track` runs it: forward from the earliest conditioning frame,
    /// then backward from it. `on_frame` sees each frame's final masks of the round (the
    /// start frame twice, identical).
    pub fn propagate_round(
        &mut self,
        mut on_frame: impl FnMut(&FrameMasks) -> Result<()>,
    ) -> Result<()> {
        self.propagate(false, &mut on_frame)?;
        self.propagate(true, &mut on_frame)
    }

    /// Track all objects on one frame (outputs of conditioning frames are reused).
    fn track_frame(&mut self, frame: usize, reverse: bool) -> Result<FrameMasks> {
        let need: Vec<usize> = (0..self.objects.len())
            .filter(|&i| !self.objects[i].cond.contains_key(&frame))
            .collect();
        if !need.is_empty() {
            let t0 = std::time::Instant::now();
            let feats = self.features(frame)?;
            tracing::debug!(
                frame,
                ms = t0.elapsed().as_secs_f64() * 1e3,
                "image encoder"
            );
            let k = need.len();
            let outs = self.run_frame(
                &need,
                frame,
                &feats,
                false,
                &vec![None; k],
                &vec![None; k],
                reverse,
                true,
                &vec![None; k],
            );
            for (i, out) in need.into_iter().zip(outs) {
                self.objects[i].non_cond.insert(frame, out);
            }
        }
        for o in &mut self.objects {
            o.tracked.insert(frame, reverse);
        }
        let t0 = std::time::Instant::now();
        let masks = self.consolidate(frame, false);
        tracing::debug!(
            frame,
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "outputs consolidated"
        );
        Ok(masks)
    }

    /// The stored output of an object on a frame, for inspection and parity checks:
    /// (256x256 low-res logits, object score, object pointer, bf16 memory features if encoded).
    pub fn stored_output(&self, id: u32, frame: usize) -> Option<StoredOutput> {
        let o = &self.objects[self.obj_idx(id)?];
        let out = o.cond.get(&frame).or_else(|| o.non_cond.get(&frame))?;
        Some(StoredOutput {
            low_res: tensor_to_vec(out.pred_masks.clone()),
            object_score: tensor_to_vec(out.object_score.clone())[0],
            obj_ptr: tensor_to_vec(out.obj_ptr.clone()),
            maskmem_features: out
                .memory
                .as_ref()
                .map(|m| (m.features.iter().map(|x| x.to_f32()).collect(), m.dims)),
            is_cond: o.cond.contains_key(&frame),
        })
    }

    /// Number of per-frame outputs held (all objects, conditioning and tracked): bounded in
    /// streaming sessions.
    pub fn retained_outputs(&self) -> usize {
        self.objects
            .iter()
            .map(|o| o.cond.len() + o.non_cond.len() + o.temp_cond.len() + o.temp_non_cond.len())
            .sum()
    }

    /// Remove an object and all its prompts and outputs.
    pub fn remove_object(&mut self, id: u32) -> Result<()> {
        let i = self.obj_idx(id).ok_or(VideoError::UnknownObject(id))?;
        self.objects.remove(i);
        Ok(())
    }

    /// Remove the prompts of an object on a frame (`clear_all_prompts_in_frame`): its
    /// conditioning output there becomes an ordinary tracked output.
    pub fn clear_prompts(&mut self, frame: usize, id: u32) -> Result<()> {
        let i = self.obj_idx(id).ok_or(VideoError::UnknownObject(id))?;
        let o = &mut self.objects[i];
        o.points.remove(&frame);
        o.masks.remove(&frame);
        o.temp_cond.remove(&frame);
        o.temp_non_cond.remove(&frame);
        if let Some(out) = o.cond.remove(&frame) {
            o.non_cond.insert(frame, out);
            o.tracked.remove(&frame);
        }
        Ok(())
    }

    /// Streaming: add the next frame. Returns its index. Prompts for it may follow
    /// ([`Session::add_prompt`]); then [`Session::track`] returns its masks.
    pub fn push_frame(&mut self, img: &RgbImage) -> Result<usize> {
        let (h, w) = img.hw();
        match self.video_hw {
            Some(hw) if hw != (h, w) => {
                return Err(VideoError::Streaming(format!(
                    "frame is {w}x{h} but the stream is {}x{}",
                    hw.1, hw.0
                )));
            }
            _ => self.video_hw = Some((h, w)),
        }
        let size = self.sam2().config().image_size;
        let pre = sam2_video_frame_preprocess(img, size)?;
        let x = tensor_from_vec(pre.data, [1, 3, size, size], self.device());
        let Frames::Stream { latest, count } = &mut self.frames else {
            return Err(VideoError::Streaming(
                "push_frame needs a streaming session".into(),
            ));
        };
        let idx = *count;
        *latest = Some((idx, x));
        *count += 1;
        self.cache = None;
        Ok(idx)
    }

    /// Streaming: masks of the latest frame (prompted objects keep their prompt output; the
    /// others are tracked from memory), then drop what no future frame needs.
    pub fn track(&mut self) -> Result<FrameMasks> {
        let n = self.num_frames();
        if n == 0 {
            return Err(VideoError::Streaming("push a frame first".into()));
        }
        let frame = n - 1;
        self.preflight()?;
        let masks = self.track_frame(frame, false)?;
        self.prune(frame);
        Ok(masks)
    }

    /// Drop non-conditioning outputs no later frame can attend to, and conditioning memories
    /// beyond the cap (keeping the first prompted frame).
    fn prune(&mut self, frame: usize) {
        let cfg = self.sam2().config();
        let window = cfg.num_maskmem.max(cfg.max_obj_ptrs_in_encoder);
        let keep_from = (frame + 1).saturating_sub(window);
        let cap = self.opts.max_cond_memories;
        for o in &mut self.objects {
            o.non_cond = o.non_cond.split_off(&keep_from);
            o.tracked = o.tracked.split_off(&keep_from);
            o.points = o.points.split_off(&keep_from);
            o.masks = o.masks.split_off(&keep_from);
            if let Some(cap) = cap
                && o.cond.len() > cap.max(1)
            {
                let frames: Vec<usize> = o.cond.keys().copied().collect();
                // keep the first and the most recent cap - 1
                for f in &frames[1..frames.len() - (cap.max(1) - 1)] {
                    o.cond.remove(f);
                }
            }
        }
    }
}
