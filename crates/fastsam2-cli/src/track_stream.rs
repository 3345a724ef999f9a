//! `fastsam2 track --stream`: a live source (a pipe of PPM frames, anything the `ffmpeg`
//! program opens: a file, an RTSP/HTTP URL, a device; or a folder) read and tracked one
//! frame at a time through a streaming [`Session`], in memory that does not grow with the
//! stream: the session keeps only the memories later frames attend to, each frame's
//! outputs go to disk as it completes (`frames.jsonl` gets one line per frame), and
//! `result.json` is assembled from `frames.jsonl` when the stream ends, or when it is
//! interrupted (Ctrl-C, SIGTERM, SIGHUP: the frame being tracked is finished first).
//!
//! The prompts are one round; each prompt is applied when its frame arrives, before that
//! frame is tracked (a prompt on a later frame for a tracked object is a correction: it
//! becomes a conditioning frame). Frames before the first prompt have no objects.

use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fastsam2_core::image_io::{RgbImage, load_rgb};
use fastsam2_core::ppm_stream::PpmStream;
use fastsam2_predict::video::{SessionOptions, VideoPredictor, VideoPrompt, list_frames};

use crate::model_args::device;
use crate::track::{FrameResult, PromptsFile, TrackArgs, TrackResult, write_frame};

/// Where the frames come from.
enum Frames {
    /// PPM frames on a pipe: standard input, or the output of an `ffmpeg` child.
    Ppm {
        stream: PpmStream<Box<dyn BufRead + Send>>,
        name: String,
    },
    /// A folder of frames, read one at a time.
    Folder { files: Vec<PathBuf>, next: usize },
}

impl Frames {
    /// The next frame, or `None` at the end of the source.
    fn next(&mut self) -> Result<Option<RgbImage>> {
        match self {
            Self::Ppm { stream, name } => stream
                .next_frame()
                .with_context(|| format!("reading frames from {name}")),
            Self::Folder { files, next } => {
                let Some(f) = files.get(*next) else {
                    return Ok(None);
                };
                *next += 1;
                Ok(Some(load_rgb(f)?))
            }
        }
    }
}

/// The frames, and the `ffmpeg` child decoding them (if any).
fn open(frames: &Path) -> Result<(Frames, Option<Child>)> {
    if frames == Path::new("-") {
        let stdin: Box<dyn BufRead + Send> =
            Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin()));
        let stream = PpmStream::new(stdin);
        let name = "standard input".into();
        return Ok((Frames::Ppm { stream, name }, None));
    }
    if frames.is_dir() {
        let files = list_frames(frames)?;
        return Ok((Frames::Folder { files, next: 0 }, None));
    }
    let name = frames.display().to_string();
    if !name.contains("://") && !frames.exists() {
        bail!("--frames {name}: no such file, folder or URL");
    }
    let mut child = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-nostdin", "-i"])
        .arg(frames)
        .args([
            "-vsync",
            "0",
            "-f",
            "image2pipe",
            "-vcodec",
            "ppm",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "--stream --frames {name}: reading a video file, URL or device needs the ffmpeg program on PATH (or pipe PPM frames into --frames -)"
                )
            } else {
                anyhow::anyhow!("cannot run ffmpeg on {name}: {e}")
            }
        })?;
    let stdout = child.stdout.take().context("ffmpeg has no output pipe")?;
    let stdout: Box<dyn BufRead + Send> =
        Box::new(std::io::BufReader::with_capacity(1 << 20, stdout));
    let stream = PpmStream::new(stdout);
    let name = format!("ffmpeg's decoding of {name}");
    Ok((Frames::Ppm { stream, name }, Some(child)))
}

/// Ends the `ffmpeg` child: waited for when the source was read to its end (a failure is
/// then an error), else stopped.
fn finish(child: Option<Child>, complete: bool, read: usize) -> Result<()> {
    let Some(mut child) = child else {
        return Ok(());
    };
    if !complete {
        let _ = child.kill();
        let _ = child.wait();
        return Ok(());
    }
    let status = child.wait().context("waiting for ffmpeg")?;
    if !status.success() {
        bail!("ffmpeg failed ({status}) after {read} frame(s); see its message above");
    }
    Ok(())
}

/// The frames, read ahead by a thread so that the tracking loop waits in one place for a
/// frame, the end of the source or an interrupt (Ctrl-C, SIGTERM, SIGHUP), even while the
/// source itself blocks (a live pipe, a stalled RTSP stream). Without `--drop-frames` it
/// holds one frame and the reader waits until that is taken; with `--drop-frames` the
/// newest frame replaces an untaken one, so tracking that falls behind a live source skips
/// to the present instead of lagging further and further.
struct Reader {
    state: Mutex<ReaderState>,
    ready: Condvar,
    drop_frames: bool,
}

#[derive(Default)]
struct ReaderState {
    /// The next unread frame and its index in the source.
    frame: Option<(usize, RgbImage)>,
    /// Set when the source has ended (`Ok`) or failed.
    end: Option<Result<()>>,
    /// Frames replaced before they were taken (`--drop-frames`).
    dropped: usize,
    /// Frames read from the source.
    read: usize,
    /// Set by the first interrupt: the loop stops after the frame it is on.
    interrupted: bool,
}

/// What [`Reader::take`] gives.
enum Next {
    Frame(usize, RgbImage),
    End,
    Interrupted,
}

impl Reader {
    fn spawn(mut frames: Frames, drop_frames: bool) -> Arc<Self> {
        let shared = Arc::new(Self {
            state: Mutex::new(ReaderState::default()),
            ready: Condvar::new(),
            drop_frames,
        });
        let s = shared.clone();
        // detached: on an early stop it ends with the source (ffmpeg killed) or the process
        std::thread::spawn(move || {
            loop {
                if !s.drop_frames {
                    let mut st = s.lock();
                    while st.frame.is_some() && !st.interrupted {
                        st = s.ready.wait(st).unwrap_or_else(|e| e.into_inner());
                    }
                    if st.interrupted {
                        break;
                    }
                }
                let r = frames.next();
                let mut st = s.lock();
                let last = !matches!(r, Ok(Some(_))) || st.interrupted;
                match r {
                    Ok(Some(img)) => {
                        if st.frame.is_some() {
                            st.dropped += 1;
                        }
                        let idx = st.read;
                        st.frame = Some((idx, img));
                        st.read += 1;
                    }
                    Ok(None) => st.end = Some(Ok(())),
                    Err(e) => st.end = Some(Err(e)),
                }
                drop(st);
                s.ready.notify_all();
                if last {
                    break;
                }
            }
        });
        shared
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReaderState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next frame (waiting for one), the end of the source, or an interrupt.
    fn take(&self) -> Result<Next> {
        let mut st = self.lock();
        loop {
            if st.interrupted {
                return Ok(Next::Interrupted);
            }
            if let Some((i, img)) = st.frame.take() {
                drop(st);
                self.ready.notify_all();
                return Ok(Next::Frame(i, img));
            }
            match st.end.take() {
                Some(Ok(())) => {
                    st.end = Some(Ok(()));
                    return Ok(Next::End);
                }
                Some(Err(e)) => return Err(e),
                None => st = self.ready.wait(st).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    /// The first call stops the loop after the frame it is on (and returns `true`); a
    /// second one returns `false`.
    fn interrupt(&self) -> bool {
        let mut st = self.lock();
        let first = !st.interrupted;
        st.interrupted = true;
        drop(st);
        self.ready.notify_all();
        first
    }

    fn interrupted(&self) -> bool {
        self.lock().interrupted
    }

    /// (frames read, frames dropped).
    fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (st.read, st.dropped)
    }
}

/// Ctrl-C (and SIGTERM / SIGHUP) end the stream like its source ending: the frame being
/// tracked is finished and `result.json` is written. A second signal quits at once (the
/// outputs of completed frames are on disk already).
fn on_interrupt(reader: &Arc<Reader>) {
    let r = reader.clone();
    let set = ctrlc::try_set_handler(move || {
        if r.interrupt() {
            eprintln!(
                "interrupted: finishing the current frame, then writing result.json (interrupt again to quit at once)"
            );
        } else {
            eprintln!("interrupted twice: quitting; result.json is not written");
            std::process::exit(130);
        }
    });
    if let Err(e) = set {
        tracing::warn!("cannot catch Ctrl-C ({e}): an interrupt will not write result.json");
    }
}

pub fn run(args: &TrackArgs, spec: &PromptsFile) -> Result<()> {
    if spec.rounds.len() > 1 {
        bail!(
            "{}: --stream takes one round of prompts (a later round re-propagates over past frames, which a stream does not keep); put every prompt in one round, on the frame where it applies",
            args.prompts.display()
        );
    }
    let base = args
        .prompts
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    // validate what can be checked before the frames arrive (sizes are checked on arrival)
    let mut by_frame: BTreeMap<usize, Vec<(u32, VideoPrompt)>> = BTreeMap::new();
    for (i, p) in spec.rounds[0].prompts.iter().enumerate() {
        let where_ = format!(
            "{}: prompt {} (frame {}, object {})",
            args.prompts.display(),
            i + 1,
            p.frame,
            p.object
        );
        if !args.drop_frames && args.max_frames.is_some_and(|n| p.frame >= n) {
            bail!(
                "{where_}: frame {} is past --max-frames {}",
                p.frame,
                args.max_frames.unwrap_or(0)
            );
        }
        by_frame
            .entry(p.frame)
            .or_default()
            .push((p.object, p.to_prompt(&base, &where_)?));
    }
    if args.max_frames == Some(0) {
        bail!("--max-frames 0: nothing to track");
    }

    // the source first: a wrong path or a missing ffmpeg fails before the model loads
    let (frames, child) = open(&args.frames)?;
    let dev = device(&args.model.device)?;
    let model = args.model.load(&dev)?;
    let name = model.name.clone();
    let predictor = VideoPredictor::new(model, dev)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create output folder {}", args.out.display()))?;
    let jsonl_path = args.out.join("frames.jsonl");
    let mut jsonl = BufWriter::new(
        std::fs::File::create(&jsonl_path)
            .with_context(|| format!("cannot write {}", jsonl_path.display()))?,
    );
    let mut session = predictor.streaming(SessionOptions::default());
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} stream: {pos} frames {elapsed_precise} ({per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let t0 = Instant::now();
    // the frames with their index in the source, from a reader thread
    let reader = Reader::spawn(frames, args.drop_frames);
    on_interrupt(&reader);
    // frames completed (their outputs and line written), and the last source index seen
    let mut done = 0usize;
    let mut seen: Option<usize> = None;
    let mut complete = false;
    // the loop's error, if any, is returned after result.json is written for what was done
    let outcome: Result<()> = (|| {
        loop {
            if args.max_frames.is_some_and(|n| done >= n) {
                break;
            }
            let (src, img) = match reader.take() {
                Ok(Next::Frame(src, img)) => (src, img),
                Ok(Next::End) => {
                    complete = true;
                    break;
                }
                Ok(Next::Interrupted) => break,
                // a source killed by the same Ctrl-C (ffmpeg, the other end of a pipe)
                // may end inside a frame: that is the interrupt, not a broken source
                Err(_) if reader.interrupted() => break,
                Err(e) => return Err(e),
            };
            seen = Some(src);
            let frame = session
                .push_frame(&img)
                .with_context(|| format!("frame {src}"))?;
            // the prompts of this frame, and with --drop-frames of skipped ones before it
            let due: Vec<usize> = by_frame.range(..=src).map(|(f, _)| *f).collect();
            for f in due {
                for (obj, prompt) in by_frame.remove(&f).unwrap_or_default() {
                    session
                        .add_prompt(frame, obj, &prompt)
                        .with_context(|| format!("prompt on frame {f} for object {obj}"))?;
                }
            }
            let entry = if session.object_ids().is_empty() {
                FrameResult {
                    frame: src,
                    objects: Vec::new(),
                }
            } else {
                let mut masks = session
                    .track()
                    .with_context(|| format!("tracking frame {src}"))?;
                masks.frame = src; // outputs are named by the source's frame index
                write_frame(args, &masks, img.hw(), &|| Ok(img.clone()))
                    .with_context(|| format!("writing frame {src}"))?
            };
            serde_json::to_writer(&mut jsonl, &entry)?;
            jsonl.write_all(b"\n")?;
            jsonl
                .flush()
                .with_context(|| format!("cannot write {}", jsonl_path.display()))?;
            done += 1;
            bar.inc(1);
        }
        Ok(())
    })();
    bar.finish_and_clear();
    let (read, dropped) = reader.counts();
    if dropped > 0 {
        tracing::info!("--drop-frames: skipped {dropped} of {read} frames to keep up");
    }
    // an interrupt that came while the source was ending still counts: ffmpeg, stopped by
    // the same Ctrl-C, exits with a failure status that is not an error here
    let interrupted = reader.interrupted();
    let complete = complete && !interrupted;
    let ended = finish(child, complete, read);
    drop(jsonl);
    if done == 0 {
        let _ = std::fs::remove_file(&jsonl_path);
        outcome?;
        ended?;
        bail!(
            "{}: no frames (the {} before its first frame)",
            if args.frames == Path::new("-") {
                "standard input".to_string()
            } else {
                args.frames.display().to_string()
            },
            if interrupted {
                "stream was interrupted"
            } else {
                "source ended"
            }
        );
    }
    let hw = session.video_hw().unwrap_or((0, 0));
    let mut ids = session.object_ids();
    ids.sort();
    write_result_from_jsonl(&args.out, &name, done, hw, ids)?;
    outcome?;
    ended?;
    if let Some((f, _)) = by_frame.iter().next() {
        let count = seen.map_or(0, |s| s + 1);
        if interrupted {
            tracing::warn!(
                "{}: the prompts on frame {f} were not applied: interrupted after {count} frames",
                args.prompts.display()
            );
            return Ok(());
        }
        bail!(
            "{}: the prompts on frame {f} were never applied: the stream ended after {count} frames (results for those are written)",
            args.prompts.display()
        );
    }
    tracing::info!(
        "stream{}: tracked {} object(s) over {done} frames in {:.1} s; wrote {}",
        if interrupted { " interrupted" } else { "" },
        session.object_ids().len(),
        t0.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// `result.json` (the offline layout) from `frames.jsonl`, streamed: the frame entries are
/// never all in memory.
fn write_result_from_jsonl(
    out: &Path,
    model: &str,
    num_frames: usize,
    (h, w): (usize, usize),
    objects: Vec<u32>,
) -> Result<()> {
    let head = TrackResult::<()> {
        model,
        num_frames,
        image_size: [h, w],
        objects,
        frames: Vec::new(),
    };
    let head = serde_json::to_string(&head)?;
    let head = head
        .strip_suffix("[]}")
        .context("result.json layout: \"frames\" must be the last field")?;
    let tmp = out.join("result.json.tmp");
    let mut dst = BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?,
    );
    dst.write_all(head.as_bytes())?;
    dst.write_all(b"[\n")?;
    let src = std::io::BufReader::new(std::fs::File::open(out.join("frames.jsonl"))?);
    for (i, line) in src.lines().enumerate() {
        let line = line?;
        if i > 0 {
            dst.write_all(b",\n")?;
        }
        dst.write_all(line.as_bytes())?;
    }
    dst.write_all(b"\n]}\n")?;
    dst.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let path = out.join("result.json");
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
