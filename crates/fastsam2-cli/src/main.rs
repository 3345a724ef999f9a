//! `fastsam2`: promptable segmentation of images and video.

mod alloc;
mod bench;
mod engine;
mod eval_cmd;
#[cfg(feature = "vulkan")]
mod gpu;
mod model_args;
mod segment;
mod track;
mod track_stream;
mod train_cmd;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "fastsam2",
    version,
    about = "Fast promptable segmentation (SAM, MobileSAM, SAM 2) on CPU and GPU"
)]
struct Cli {
    /// Log level for stderr (error, warn, info, debug, trace); RUST_LOG overrides.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    /// Worker threads for the tensor backend (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Precision of the SAM 2 memory cross-attention's weights in its value products: `f32`
    /// (default), or `bf16` (faster on CPUs with AVX-512 BF16 and no AMX; each weight within
    /// 2^-9 of itself, outputs change slightly). Also `FASTSAM2_BF16_PROBS=1`.
    #[arg(long, global = true, value_enum)]
    attention_weights: Option<WeightPrecision>,
    #[command(subcommand)]
    command: Command,
}

/// `--attention-weights`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum WeightPrecision {
    F32,
    Bf16,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Segment one image from points, boxes and/or a previous mask.
    Segment(segment::SegmentArgs),
    /// Track objects through a video (SAM 2): rounds of prompts, propagation, per-object masks.
    Track(track::TrackArgs),
    /// Score predictions with the official protocols (DAVIS, interactive, COCO, panoptic).
    #[command(subcommand)]
    Eval(eval_cmd::EvalCommand),
    /// List the registered models and their checkpoints.
    Models,
    /// Fine-tune a model (full, adapter or LoRA) from a TOML config; export checkpoints.
    Train(train_cmd::TrainArgs),
    /// Time the engine (encoder, prompt -> mask) like the reference harness's bench.py.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() {
    alloc::configure();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => match e.kind() {
            clap::error::ErrorKind::DisplayHelp
            | clap::error::ErrorKind::DisplayVersion
            | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            _ => {
                // Usage errors in one line, like every other error.
                let text = e.render().to_string();
                eprintln!(
                    "{}",
                    text.lines().next().unwrap_or("error: invalid arguments")
                );
                std::process::exit(2);
            }
        },
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{},ureq=warn,rustls=warn", cli.log))
    });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_env_filter(filter)
        .init();
    if let Some(n) = cli.threads
        && let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
    {
        eprintln!("error: cannot set {n} threads: {e}");
        std::process::exit(2);
    }
    if let Some(p) = cli.attention_weights {
        fastsam2_models::kernels::set_bf16_attention_weights(matches!(p, WeightPrecision::Bf16));
    }
    let result = match cli.command {
        Command::Segment(a) => segment::run(a),
        Command::Track(a) => track::run(a),
        Command::Eval(c) => eval_cmd::run_with_engine(c, Some(&engine::factory)),
        Command::Train(a) => train_cmd::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Models => {
            for e in fastsam2_models::registry::REGISTRY {
                println!(
                    "{:<22} {:<48} hf://{}/{}",
                    e.name, e.description, e.hf_repo, e.hf_file
                );
            }
            Ok(())
        }
    };
    if let Err(e) = result {
        // One line: the error and its causes.
        let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eprintln!("error: {}", msg.join(": "));
        std::process::exit(1);
    }
}
