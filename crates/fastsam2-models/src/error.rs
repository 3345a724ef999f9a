use std::path::PathBuf;

/// Errors of model construction and checkpoint loading.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a readable checkpoint ({reason}); expected a PyTorch .pt/.pth state dict or a .safetensors file"
    )]
    NotACheckpoint { path: PathBuf, reason: String },
    #[error("{path}: {message}")]
    UnknownModel { path: PathBuf, message: String },
    #[error("{path} does not fit model {model}: {message}")]
    Mismatch {
        path: PathBuf,
        model: String,
        message: String,
    },
    #[error("{path}: tensor '{key}' is {dtype}, expected a float tensor")]
    BadDtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },
    #[error("{path}: tensor '{key}' contains {what} values")]
    NonFinite {
        path: PathBuf,
        key: String,
        what: &'static str,
    },
    #[error("unknown model name '{name}'; known: {known}")]
    UnknownName { name: String, known: String },
    #[error("invalid model config: {0}")]
    Config(String),
    #[error(
        "cannot download {file} from the Hugging Face hub repository {repo}: {message}. Download it yourself and pass --checkpoint PATH"
    )]
    Download {
        repo: String,
        file: String,
        message: String,
    },
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
