//! The error type of `fastsam2-eval`: every variant names the file (and, for entries of a
//! JSON file or frames of a sequence, the entry) it is about.

use std::path::PathBuf;

use fastsam2_core::mask_io::MaskIoError;
use fastsam2_core::rle::RleError;

/// Errors from reading evaluation inputs or running a protocol.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Reading a mask / PNG / `.npy` file failed.
    #[error(transparent)]
    MaskIo(#[from] MaskIoError),
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON or does not have the expected structure.
    #[error("{path}: malformed JSON: {source}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// serde_json's error, with line and column.
        source: serde_json::Error,
    },
    /// An entry of an input file is invalid.
    #[error("{path}: {entry}: {msg}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Which entry (e.g. `annotations[12] (id 7)`).
        entry: String,
        /// What is wrong with it.
        msg: String,
    },
    /// An RLE in an input file does not decode.
    #[error("{path}: {entry}: {source}")]
    Rle {
        /// The file.
        path: PathBuf,
        /// Which entry.
        entry: String,
        /// The RLE error (e.g. counts that do not add up to height × width).
        source: RleError,
    },
    /// A category id that the ground truth does not define.
    #[error("{path}: {entry}: unknown category id {id}")]
    UnknownCategory {
        /// The file.
        path: PathBuf,
        /// Which entry.
        entry: String,
        /// The unknown id.
        id: i64,
    },
    /// An image id that the ground truth does not define.
    #[error("{path}: {entry}: unknown image id {id}")]
    UnknownImage {
        /// The file.
        path: PathBuf,
        /// Which entry.
        entry: String,
        /// The unknown id.
        id: i64,
    },
    /// A mask whose size differs from the one it is compared with.
    #[error("{path}: {entry}: size {got_w}x{got_h} does not match the expected {exp_w}x{exp_h}")]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Which entry or frame.
        entry: String,
        /// Width found.
        got_w: u32,
        /// Height found.
        got_h: u32,
        /// Width expected.
        exp_w: u32,
        /// Height expected.
        exp_h: u32,
    },
    /// A frame or file that the protocol needs is missing.
    #[error("{path}: missing {what}")]
    Missing {
        /// The path that was expected.
        path: PathBuf,
        /// What it should have held.
        what: String,
    },
    /// The predictor used by a protocol failed.
    #[error("predictor failed on {sample}: {msg}")]
    Predictor {
        /// Which sample.
        sample: String,
        /// Its message.
        msg: String,
    },
    /// Invalid arguments / options.
    #[error("{0}")]
    Usage(String),
}

/// `Result` with [`EvalError`].
pub type Result<T, E = EvalError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> EvalError {
    let path = path.into();
    move |source| EvalError::Io { path, source }
}

/// Reads and parses a JSON file into `T`, naming the file on error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|source| EvalError::Json {
        path: path.to_path_buf(),
        source,
    })
}
