use fastsam2_core::prompt::PromptError;
use fastsam2_core::resize::ResizeError;
use fastsam2_models::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("no image is set: call set_image first")]
    NoImage,
    #[error("prompt {index}: {source}")]
    Prompt {
        index: usize,
        #[source]
        source: PromptError,
    },
    #[error("image preprocessing: {0}")]
    Resize(#[from] ResizeError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("image of {width}x{height} pixels is too small (needs at least 1x1)")]
    EmptyImage { width: usize, height: usize },
}

pub type Result<T, E = PredictError> = std::result::Result<T, E>;
