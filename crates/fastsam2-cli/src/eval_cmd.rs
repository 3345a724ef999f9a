//! `fastsam2 eval`: official-protocol evaluation (DAVIS J&F, interactive NoC/mIoU, COCO mask
//! AP, panoptic PQ). A thin layer over `fastsam2-eval`: parse arguments, run, print the
//! table on stdout, write the JSON report, show a progress bar on stderr.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use fastsam2_eval::interactive::{InteractiveParams, InteractivePredictor};
use fastsam2_eval::{Progress, coco, datasets, davis, interactive, panoptic};

/// `fastsam2 eval <protocol>`.
#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// DAVIS 2017 semi-supervised J&F, as davis2017-evaluation computes it.
    Davis {
        /// DAVIS root (with Annotations/480p, ImageSets/2017) or a folder of per-sequence
        /// annotation folders.
        #[arg(long)]
        gt: PathBuf,
        /// Results: one folder per sequence of indexed PNGs named like the annotations.
        #[arg(long)]
        pred: PathBuf,
        /// Comma-separated sequences (default: ImageSets/2017/<set>.txt, else all).
        #[arg(long, value_delimiter = ',')]
        sequences: Option<Vec<String>>,
        /// Subset list to read from ImageSets/2017.
        #[arg(long, default_value = "val")]
        set: String,
        /// Resolution folder.
        #[arg(long, default_value = "480p")]
        resolution: String,
        /// Write the JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Click-based interactive segmentation (RITM / SimpleClick protocol): NoC@85/90, mIoU@k.
    Interactive {
        /// Image folder.
        #[arg(long)]
        images: PathBuf,
        /// Mask folder (masks paired with images by file stem).
        #[arg(long, conflicts_with = "coco")]
        masks: Option<PathBuf>,
        /// COCO instances JSON instead of a mask folder: every non-crowd instance is a sample.
        #[arg(long)]
        coco: Option<PathBuf>,
        /// Mask value marking ignored pixels (128 for GrabCut).
        #[arg(long)]
        ignore_value: Option<u8>,
        /// Clicks per sample.
        #[arg(long, default_value_t = 20)]
        max_clicks: usize,
        /// Stop a sample once its IoU reaches this (RITM --target-iou); default: all clicks.
        #[arg(long)]
        target_iou: Option<f64>,
        /// Evaluate only the first N samples.
        #[arg(long)]
        limit: Option<usize>,
        /// Model checkpoint, passed to the engine.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Model name / variant, passed to the engine.
        #[arg(long)]
        model: Option<String>,
        /// Write the JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// COCO mask AP (pycocotools COCOeval, iouType segm).
    Coco {
        /// COCO instances ground truth JSON.
        #[arg(long)]
        gt: PathBuf,
        /// Results JSON (list of {image_id, category_id, segmentation, score}).
        #[arg(long)]
        pred: PathBuf,
        /// Write the JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// COCO panoptic PQ / SQ / RQ (panopticapi).
    Panoptic {
        /// Ground-truth panoptic JSON.
        #[arg(long)]
        gt_json: PathBuf,
        /// Ground-truth PNG folder (default: the JSON path without `.json`).
        #[arg(long)]
        gt_dir: Option<PathBuf>,
        /// Predicted panoptic JSON.
        #[arg(long)]
        pred_json: PathBuf,
        /// Predicted PNG folder (default: the JSON path without `.json`).
        #[arg(long)]
        pred_dir: Option<PathBuf>,
        /// Write the JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// What `eval interactive` hands to the engine to build a predictor.
#[derive(Debug, Clone)]
pub struct EngineArgs {
    /// `--checkpoint`.
    pub checkpoint: Option<PathBuf>,
    /// `--model`.
    pub model: Option<String>,
}

impl EngineArgs {
    /// `checkpoint X, model Y` for messages.
    pub fn describe(&self) -> String {
        let ck = self
            .checkpoint
            .as_ref()
            .map_or("none".to_string(), |p| p.display().to_string());
        format!(
            "checkpoint {ck}, model {}",
            self.model.as_deref().unwrap_or("default")
        )
    }
}

/// Builds the model for `eval interactive`.
pub type EngineFactory = dyn Fn(&EngineArgs) -> anyhow::Result<Box<dyn InteractivePredictor>>;

/// Runs an `eval` subcommand; `engine` builds the predictor for `interactive`.
pub fn run_with_engine(cmd: EvalCommand, engine: Option<&EngineFactory>) -> anyhow::Result<()> {
    let bar = Bar::new();
    match cmd {
        EvalCommand::Davis {
            gt,
            pred,
            sequences,
            set,
            resolution,
            json,
        } => {
            let opts = davis::DavisOptions {
                sequences,
                subset: set,
                resolution,
                ..Default::default()
            };
            let r = davis::evaluate(&gt, &pred, &opts, &bar)?;
            print!("{}", r.table());
            write_json(json.as_deref(), &r.to_json())
        }
        EvalCommand::Coco { gt, pred, json } => {
            let r = coco::evaluate_files(&gt, &pred, &bar)?;
            print!("{}", r.table());
            write_json(json.as_deref(), &r.to_json())
        }
        EvalCommand::Panoptic {
            gt_json,
            gt_dir,
            pred_json,
            pred_dir,
            json,
        } => {
            let gt_dir = gt_dir.unwrap_or_else(|| panoptic::default_folder(&gt_json));
            let pred_dir = pred_dir.unwrap_or_else(|| panoptic::default_folder(&pred_json));
            let r = panoptic::evaluate(&gt_json, &gt_dir, &pred_json, &pred_dir, &bar)?;
            print!("{}", r.table());
            write_json(json.as_deref(), &r.to_json())
        }
        EvalCommand::Interactive {
            images,
            masks,
            coco,
            ignore_value,
            max_clicks,
            target_iou,
            limit,
            checkpoint,
            model,
            json,
        } => {
            let args = EngineArgs { checkpoint, model };
            let Some(engine) = engine else {
                bail!(
                    "no segmentation engine is linked into this build of fastsam2, so `eval interactive` cannot run a model \
                     ({}); the protocol itself lives in fastsam2-eval and can be driven by any InteractivePredictor",
                    args.describe()
                );
            };
            let mut predictor = engine(&args)
                .with_context(|| format!("building the model ({})", args.describe()))?;
            let params = InteractiveParams {
                max_clicks,
                stop_iou: target_iou,
                ..Default::default()
            };
            let report = match (masks, coco) {
                (Some(masks), None) => {
                    let folder = datasets::ImageMaskFolder::open(&images, &masks)?;
                    let n = limit.unwrap_or(usize::MAX).min(folder.pairs.len());
                    let samples = (0..n).map(|i| folder.load(i, ignore_value));
                    interactive::evaluate(samples, predictor.as_mut(), &params, &bar)?
                }
                (None, Some(coco_json)) => {
                    let gt = coco::CocoGt::load(&coco_json)?;
                    let mut all = datasets::coco_instance_samples(&gt, &images);
                    all.truncate(limit.unwrap_or(usize::MAX));
                    let samples = all.into_iter().map(|(name, path, target)| {
                        datasets::load_rgb(&path).map(|img| (name, img, target))
                    });
                    interactive::evaluate(samples, predictor.as_mut(), &params, &bar)?
                }
                _ => bail!("give either --masks DIR or --coco INSTANCES.json"),
            };
            print!("{}", report.table());
            write_json(json.as_deref(), &report.to_json())
        }
    }
}

fn write_json(path: Option<&Path>, v: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(p) = path {
        let text = serde_json::to_string_pretty(v)?;
        std::fs::write(p, text + "\n").with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// An indicatif progress bar on stderr.
struct Bar(indicatif::ProgressBar);

impl Bar {
    fn new() -> Bar {
        let pb = indicatif::ProgressBar::new(0);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} (eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Bar(pb)
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
        self.0.set_position(0);
    }

    fn advance(&self, n: u64) {
        self.0.inc(n);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
