//! # fastsam2-train
//!
//! Fine-tuning of SAM / MobileSAM on a user's data with burn's autodiff, on the same modules
//! that run inference. Three strategies:
//!
//! * `full`: any of image encoder / prompt encoder / mask decoder trains (or is frozen);
//! * `adapter`: bottleneck adapters in every encoder block (after the attention and in
//!   parallel with the MLP); they and the mask decoder train;
//! * `lora`: low-rank branches `B·A` on the chosen encoder linears (rank, alpha, dropout,
//!   targets), base weights frozen, merged into the weights on export.
//!
//! Data come from an image + mask folder or a COCO instances JSON; prompts (jittered boxes,
//! points, corrective clicks with the previous mask) are simulated per sample. The loss is
//! SAM's (focal ×20 + dice, MSE on the IoU head). The [`Trainer`] runs AdamW with a warm-up +
//! cosine schedule, gradient accumulation and clipping, validates every epoch (IoU, Dice,
//! pixel accuracy, best threshold), writes best / last checkpoints atomically, resumes
//! exactly, logs CSV / JSONL and plots the curves. See the crate README for the TOML config.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod rng;
pub mod trainer;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
pub use model::{ParamCounts, TrainModel, load_exported};
pub use trainer::{Event, LogObserver, Observer, Summary, TrainOptions, Trainer};
