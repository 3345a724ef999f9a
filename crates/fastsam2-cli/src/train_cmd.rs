//! `fastsam2 train`: fine-tune SAM / MobileSAM (full, adapter, LoRA) from a TOML config, or
//! export a training checkpoint to a deployable model.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use fastsam2_train::{Event, Observer, TrainConfig, TrainOptions, Trainer};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Training configuration (TOML; every key is documented in the fastsam2-train README).
    #[arg(long, value_name = "CONFIG.toml", required_unless_present = "export")]
    pub config: Option<PathBuf>,
    /// Continue from OUTPUT_DIR/checkpoints/last.safetensors (exactly where it stopped).
    #[arg(long)]
    pub resume: bool,
    /// Start over even if the output folder holds a checkpoint.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Stop (after writing the checkpoint) once this many optimizer steps are done.
    #[arg(long, value_name = "N")]
    pub stop_after_steps: Option<u64>,
    /// Check the config, the data and the model, print the trainable parameters, and exit.
    #[arg(long)]
    pub check: bool,
    /// Compute device: `cpu`, or `vulkan` in builds with the `vulkan` feature
    /// (overrides `train.device`).
    #[arg(long)]
    pub device: Option<String>,
    /// No progress bar (log lines instead).
    #[arg(long)]
    pub no_progress: bool,
    /// Export a training checkpoint (e.g. OUTPUT_DIR/checkpoints/last.safetensors) to a
    /// deployable model (LoRA merged, official key names) and exit.
    #[arg(long, value_name = "CHECKPOINT", requires = "out")]
    pub export: Option<PathBuf>,
    /// Where --export writes the model.
    #[arg(long, value_name = "MODEL.safetensors")]
    pub out: Option<PathBuf>,
}

struct Bar(ProgressBar);

impl Observer for Bar {
    fn event(&self, e: Event<'_>) {
        match e {
            Event::Start {
                total_steps,
                start_step,
                counts,
            } => {
                self.0.set_length(total_steps);
                self.0.set_position(start_step);
                self.0.println(counts.summary());
            }
            Event::Step(r) => {
                self.0.set_position(r.step);
                self.0.set_message(format!(
                    "loss {:.4} lr {:.2e} {:.1} samples/s",
                    r.loss, r.lr, r.samples_per_s
                ));
            }
            Event::Val(v) => self.0.println(format!(
                "val @ step {}: IoU {:.4}  Dice {:.4}  pixel acc {:.4}  loss {:.4}  best threshold {:.2} (IoU {:.4})",
                v.step, v.iou, v.dice, v.pixel_accuracy, v.loss, v.best_threshold, v.best_threshold_iou
            )),
            Event::Message(m) => self.0.println(m),
        }
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    if let Some(ckpt) = &args.export {
        let out = args.out.as_ref().expect("clap requires --out");
        fastsam2_train::checkpoint::export_checkpoint(ckpt, out)
            .with_context(|| format!("cannot export {}", ckpt.display()))?;
        println!("wrote {}", out.display());
        return Ok(());
    }
    let Some(path) = &args.config else {
        bail!("give --config CONFIG.toml (or --export CHECKPOINT --out MODEL.safetensors)");
    };
    let cfg = TrainConfig::from_file(path)?;
    let device_name = args
        .device
        .clone()
        .unwrap_or_else(|| cfg.train.device.clone());
    let device = crate::model_args::device(&device_name)?.autodiff();
    let opts = TrainOptions {
        resume: args.resume,
        overwrite: args.overwrite,
        stop_after_steps: args.stop_after_steps,
        device: Some(device),
    };
    let mut trainer = Trainer::new(cfg, &opts)?;
    if args.check {
        println!("{}", trainer.counts.summary());
        println!(
            "{} training / {} validation samples; {} steps ({} per epoch); starting at step {}",
            trainer.data.train.len(),
            trainer.data.val.len(),
            trainer.total_steps,
            trainer.steps_per_epoch,
            trainer.step
        );
        return Ok(());
    }
    let summary = if args.no_progress || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        trainer.run(&opts, &fastsam2_train::LogObserver)?
    } else {
        let bar = ProgressBar::new(trainer.total_steps);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} step {pos}/{len} [{elapsed_precise} < {eta_precise}] {bar:30} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let obs = Bar(bar);
        let s = trainer.run(&opts, &obs)?;
        obs.0.finish();
        s
    };
    let out = trainer.output_dir();
    if let (Some(a), Some(b)) = (&summary.first_val, &summary.last_val) {
        println!(
            "val IoU {:.4} -> {:.4} (best {:.4}); val loss {:.4} -> {:.4}",
            a.iou,
            b.iou,
            summary.best_iou.unwrap_or(b.iou),
            a.loss,
            b.loss
        );
    }
    match &summary.exported {
        Some(p) => println!(
            "model: {} (best: {}); metrics, curves.png and checkpoints in {}",
            p.display(),
            out.join("best.safetensors").display(),
            out.display()
        ),
        None => println!(
            "stopped at step {}; resume with --resume (checkpoint in {})",
            summary.steps,
            out.join("checkpoints").display()
        ),
    }
    Ok(())
}
