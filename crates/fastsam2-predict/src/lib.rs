//! FastSAM2 predictors: pre/post-processing around the models.

pub mod error;
pub mod image_predictor;
pub mod postprocess;
pub mod video;

pub use error::{PredictError, Result};
pub use image_predictor::{EncodedImage, ImagePredictor, Prediction};
pub use video::{
    FrameMasks, ObjectMask, Session, SessionOptions, VideoError, VideoPredictor, VideoPrompt,
};
