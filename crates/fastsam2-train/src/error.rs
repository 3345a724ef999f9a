use std::path::PathBuf;

/// Everything that can go wrong before or during fine-tuning. Input problems (config, data)
/// are reported before the first step.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    ConfigParse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Config(String),
    #[error("data: {0}")]
    Data(String),
    #[error("data: image {image} has no mask (expected {expected})")]
    MissingMask { image: PathBuf, expected: PathBuf },
    #[error("data: mask {mask} is {mask_w}x{mask_h} but its image {image} is {image_w}x{image_h}")]
    MaskSizeMismatch {
        mask: PathBuf,
        image: PathBuf,
        mask_w: u32,
        mask_h: u32,
        image_w: u32,
        image_h: u32,
    },
    #[error(
        "data: mask {what} is empty (no foreground pixel); remove it or set data.skip_empty_masks = true"
    )]
    EmptyMask { what: String },
    #[error("model: {0}")]
    Model(#[from] fastsam2_models::ModelError),
    #[error("image: {0}")]
    Image(#[from] fastsam2_core::image_io::ImageError),
    #[error("mask: {0}")]
    Mask(#[from] fastsam2_core::mask_io::MaskIoError),
    #[error("eval: {0}")]
    Eval(#[from] fastsam2_eval::EvalError),
    #[error("resize: {0}")]
    Resize(#[from] fastsam2_core::resize::ResizeError),
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("training diverged at step {step}: loss is {value}")]
    NonFinite { step: u64, value: f64 },
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}
