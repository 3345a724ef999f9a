//! `fastsam2 track`: video object segmentation with SAM 2 per the CLI contract of DESIGN.md:
//! rounds of prompts from PROMPTS.json, each followed by propagation (forward from the
//! earliest conditioning frame, then backward), per-object PNGs, `result.json`, and with
//! `--save-logits` per-frame logits. Outputs are written as frames complete, so an error
//! mid-run keeps what was already written. `--stream` (live sources) is `track_stream.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fastsam2_core::image_io::load_rgb;
use fastsam2_core::mask_io::{read_binary_mask_png, write_binary_mask_png, write_npy_f32};
use fastsam2_core::overlay::{draw_masks, save_png};
use fastsam2_core::prompt::{BoxXyxy, Point};
use fastsam2_predict::video::{
    FrameMasks, Session, SessionOptions, VideoPredictor, VideoPrompt, list_frames,
};
use serde::{Deserialize, Serialize};

use crate::model_args::{ModelArgs, device};
use crate::segment::area_bbox;

#[derive(Debug, clap::Args)]
pub struct TrackArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Folder of frames (.jpg/.jpeg/.png, one size; ordered by integer stem, else by name),
    /// or a video file (decoded with the `ffmpeg` program).
    #[arg(long)]
    pub frames: PathBuf,
    /// Rounds of prompts (see README).
    #[arg(long)]
    pub prompts: PathBuf,
    /// Also write logits/<frame:05>.npy (f32, O x H x W, objects in ascending id).
    #[arg(long)]
    pub save_logits: bool,
    /// Also write overlay/<frame:05>.png (every object drawn over the frame).
    #[arg(long)]
    pub overlay: bool,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Live mode: read and track frames one at a time as they arrive, in memory that does
    /// not grow with the stream (one round of prompts, each applied when its frame arrives;
    /// no backward pass). `--frames` is then `-` (binary PPM frames on standard input, e.g.
    /// `ffmpeg -i rtsp://... -f image2pipe -vcodec ppm -pix_fmt rgb24 -`), a video file, URL
    /// or device that the `ffmpeg` program opens, or a folder of frames. Also writes
    /// `frames.jsonl`, one line per frame as it completes. Ctrl-C (or SIGTERM) ends the
    /// stream: the current frame is finished and `result.json` written.
    #[arg(long)]
    pub stream: bool,
    /// With --stream: stop after this many frames (with --drop-frames, tracked frames).
    #[arg(long, requires = "stream")]
    pub max_frames: Option<usize>,
    /// With --stream, for live sources: when tracking falls behind, skip to the newest frame
    /// (a reader thread keeps only the latest one). Outputs keep the source's frame indices,
    /// so skipped frames have none; a prompt on a skipped frame applies to the next tracked one.
    #[arg(long, requires = "stream")]
    pub drop_frames: bool,
}

/// PROMPTS.json.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptsFile {
    pub rounds: Vec<Round>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Round {
    pub prompts: Vec<PromptEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptEntry {
    pub frame: usize,
    pub object: u32,
    #[serde(default)]
    pub points: Option<Vec<[f32; 2]>>,
    #[serde(default)]
    pub labels: Option<Vec<i32>>,
    #[serde(rename = "box", default)]
    pub bbox: Option<[f32; 4]>,
    /// A binary mask PNG (path relative to PROMPTS.json).
    #[serde(default)]
    pub mask: Option<PathBuf>,
    #[serde(default)]
    pub clear: Option<bool>,
}

impl PromptEntry {
    /// The prompt, reading a mask file relative to `base`.
    pub(crate) fn to_prompt(&self, base: &Path, where_: &str) -> Result<VideoPrompt> {
        if let Some(m) = &self.mask {
            if self.points.is_some() || self.bbox.is_some() {
                bail!("{where_}: a mask prompt cannot be combined with points or a box");
            }
            let path = if m.is_absolute() {
                m.clone()
            } else {
                base.join(m)
            };
            let mask = read_binary_mask_png(&path)
                .with_context(|| format!("{where_}: mask {}", path.display()))?;
            return Ok(VideoPrompt::Mask {
                mask: mask.data,
                width: mask.width as usize,
                height: mask.height as usize,
            });
        }
        let pts = self.points.clone().unwrap_or_default();
        let labels = match &self.labels {
            Some(l) if l.len() != pts.len() => {
                bail!("{where_}: {} points but {} labels", pts.len(), l.len())
            }
            Some(l) => l.clone(),
            None => vec![1; pts.len()],
        };
        if pts.is_empty() && self.bbox.is_none() {
            bail!("{where_}: needs points, a box or a mask");
        }
        Ok(VideoPrompt::Points {
            points: pts
                .iter()
                .zip(labels)
                .map(|(p, label)| Point {
                    x: p[0],
                    y: p[1],
                    label,
                })
                .collect(),
            bbox: self.bbox.map(|b| BoxXyxy::new(b[0], b[1], b[2], b[3])),
            clear: self.clear.unwrap_or(true),
        })
    }
}

#[derive(Serialize)]
pub(crate) struct ObjResult {
    object: u32,
    area: usize,
    bbox: [usize; 4],
    object_score: f32,
}

#[derive(Serialize)]
pub(crate) struct FrameResult {
    pub frame: usize,
    pub objects: Vec<ObjResult>,
}

#[derive(Serialize)]
pub(crate) struct TrackResult<'a, F: Serialize> {
    pub model: &'a str,
    pub num_frames: usize,
    pub image_size: [usize; 2],
    pub objects: Vec<u32>,
    pub frames: Vec<F>,
}

/// Frames of a video file, extracted with the `ffmpeg` program into a temporary folder.
fn extract_video(path: &Path) -> Result<tempdir::TempFolder> {
    let dir = tempdir::TempFolder::new("fastsam2-frames")?;
    let status = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-i"])
        .arg(path)
        .args(["-vsync", "0", "-start_number", "0"])
        .arg(dir.path().join("%05d.png"))
        .status();
    match status {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "{} is a file; reading video files needs the ffmpeg program on PATH (or extract the frames to a folder)",
                path.display()
            )
        }
        Err(e) => bail!("cannot run ffmpeg on {}: {e}", path.display()),
        Ok(s) if !s.success() => bail!("ffmpeg could not decode {} ({s})", path.display()),
        Ok(_) => Ok(dir),
    }
}

/// A temporary folder removed on drop.
mod tempdir {
    use std::path::{Path, PathBuf};

    pub struct TempFolder(PathBuf);

    impl TempFolder {
        pub fn new(prefix: &str) -> std::io::Result<Self> {
            let p = std::env::temp_dir().join(format!(
                "{prefix}-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ));
            std::fs::create_dir_all(&p)?;
            Ok(Self(p))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempFolder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn run(args: TrackArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.prompts)
        .with_context(|| format!("cannot read prompts {}", args.prompts.display()))?;
    let spec: PromptsFile = serde_json::from_str(&text)
        .with_context(|| format!("invalid prompts file {}", args.prompts.display()))?;
    if spec.rounds.is_empty() || spec.rounds.iter().all(|r| r.prompts.is_empty()) {
        bail!("{}: no prompts", args.prompts.display());
    }
    if args.stream {
        return crate::track_stream::run(&args, &spec);
    }
    let _video_tmp;
    let frames_dir = if args.frames.is_file() {
        let t = extract_video(&args.frames)?;
        let d = t.path().to_path_buf();
        _video_tmp = t;
        d
    } else {
        args.frames.clone()
    };
    let frame_files = list_frames(&frames_dir)?;
    let num_frames = frame_files.len();
    // Validate every prompt before any computation.
    let base = args
        .prompts
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut rounds: Vec<Vec<(usize, u32, VideoPrompt)>> = Vec::new();
    for (r, round) in spec.rounds.iter().enumerate() {
        let mut v = Vec::new();
        for (i, p) in round.prompts.iter().enumerate() {
            let where_ = format!(
                "{}: round {} prompt {} (frame {}, object {})",
                args.prompts.display(),
                r + 1,
                i + 1,
                p.frame,
                p.object
            );
            if p.frame >= num_frames {
                bail!(
                    "{where_}: frame {} is past the end of the video ({num_frames} frames)",
                    p.frame
                );
            }
            v.push((p.frame, p.object, p.to_prompt(&base, &where_)?));
        }
        rounds.push(v);
    }

    let device = device(&args.model.device)?;
    let model = args.model.load(&device)?;
    let name = model.name.clone();
    let predictor = VideoPredictor::new(model, device)?;
    let mut session = predictor.open_folder(&frames_dir, SessionOptions::default())?;
    let (h, w) = session.video_hw().expect("folder sessions know their size");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create output folder {}", args.out.display()))?;
    let mut results: BTreeMap<usize, FrameResult> = BTreeMap::new();
    let t0 = Instant::now();
    for (r, round) in rounds.iter().enumerate() {
        for (frame, obj, prompt) in round {
            session.add_prompt(*frame, *obj, prompt).with_context(|| {
                format!("round {} prompt on frame {frame} for object {obj}", r + 1)
            })?;
        }
        let start = session.start_frame().unwrap_or(0);
        let total = (num_frames - start) + start; // forward then backward (start frame twice)
        let bar = progress(
            total as u64 + 1,
            &format!("round {}/{}", r + 1, rounds.len()),
        );
        let mut on_frame = |m: &FrameMasks| -> fastsam2_predict::video::Result<()> {
            bar.inc(1);
            write_frame(&args, m, (h, w), &|| Ok(load_rgb(&frame_files[m.frame])?))
                .map(|r| {
                    results.insert(m.frame, r);
                })
                .map_err(|e| {
                    fastsam2_predict::video::VideoError::Streaming(format!(
                        "writing frame {}: {e:#}",
                        m.frame
                    ))
                })
        };
        session.propagate_round(&mut on_frame)?;
        bar.finish_and_clear();
        tracing::info!(
            "round {}/{}: tracked {} object(s) over {num_frames} frames",
            r + 1,
            rounds.len(),
            session.object_ids().len()
        );
        write_result(&args.out, &name, num_frames, (h, w), &session, &results)?;
    }
    tracing::info!(
        "done in {:.1} s; wrote {}",
        t0.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

fn progress(len: u64, msg: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} frames {elapsed_precise} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Writes one frame's outputs (per-object PNGs, logits, overlay) and returns its entry of
/// `result.json`. `frame_image` gives the frame for the overlay.
pub(crate) fn write_frame(
    args: &TrackArgs,
    m: &FrameMasks,
    (h, w): (usize, usize),
    frame_image: &dyn Fn() -> Result<fastsam2_core::image_io::RgbImage>,
) -> Result<FrameResult> {
    let mut objs: Vec<&fastsam2_predict::video::ObjectMask> = m.objects.iter().collect();
    objs.sort_by_key(|o| o.id);
    let mut logits_all = Vec::new();
    let mut masks = Vec::new();
    let mut entries = Vec::new();
    for o in &objs {
        let logits = o.video_logits((h, w));
        let mask: Vec<bool> = logits.iter().map(|&v| v > 0.0).collect();
        let dir = args.out.join(o.id.to_string());
        std::fs::create_dir_all(&dir)?;
        write_binary_mask_png(
            &dir.join(format!("{:05}.png", m.frame)),
            w as u32,
            h as u32,
            &mask,
        )?;
        let (area, bbox) = area_bbox(&mask, w);
        entries.push(ObjResult {
            object: o.id,
            area,
            bbox,
            object_score: o.object_score,
        });
        if args.save_logits {
            logits_all.extend_from_slice(&logits);
        }
        masks.push(mask);
    }
    if args.save_logits {
        let dir = args.out.join("logits");
        std::fs::create_dir_all(&dir)?;
        write_npy_f32(
            &dir.join(format!("{:05}.npy", m.frame)),
            &[objs.len(), h, w],
            &logits_all,
        )?;
    }
    if args.overlay {
        let dir = args.out.join("overlay");
        std::fs::create_dir_all(&dir)?;
        let img = frame_image()?;
        let refs: Vec<&[bool]> = masks.iter().map(|m| m.as_slice()).collect();
        save_png(
            &draw_masks(&img, &refs, 0.45),
            &dir.join(format!("{:05}.png", m.frame)),
        )
        .context("cannot write overlay")?;
    }
    Ok(FrameResult {
        frame: m.frame,
        objects: entries,
    })
}

fn write_result(
    out: &Path,
    model: &str,
    num_frames: usize,
    (h, w): (usize, usize),
    session: &Session,
    results: &BTreeMap<usize, FrameResult>,
) -> Result<()> {
    let mut ids = session.object_ids();
    ids.sort();
    let r = TrackResult {
        model,
        num_frames,
        image_size: [h, w],
        objects: ids,
        frames: results.values().collect(),
    };
    let path = out.join("result.json");
    let tmp = out.join("result.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&r)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
