//! Loading a model: from a checkpoint file (type detected from its keys, or given), or by
//! registry name through the Hugging Face hub cache.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::checkpoint::{Checkpoint, apply_checkpoint};
use crate::error::{ModelError, Result};
use crate::registry::{self, ModelConfig};
use crate::sam::Sam;
use crate::sam2::Sam2;

/// The network of a loaded model.
#[allow(clippy::large_enum_variant)] // one per loaded model
#[derive(Debug)]
pub enum Network {
    Sam(Sam),
    Sam2(Box<Sam2>),
}

/// A model ready for inference: its name (registry name or "custom"), config and weights.
#[derive(Debug)]
pub struct LoadedModel {
    pub name: String,
    pub config: ModelConfig,
    pub network: Network,
    pub source: PathBuf,
}

/// Prefixes of official checkpoints that no inference module uses (TinyViT's classifier).
const IGNORABLE: &[&str] = &["image_encoder.norm_head.", "image_encoder.head."];

/// Load a checkpoint. `name` forces a registered model (its config must fit the file);
/// `config` forces explicit hyper-parameters; otherwise the file's metadata or its keys
/// and shapes decide.
pub fn load_checkpoint(
    path: &Path,
    name: Option<&str>,
    config: Option<ModelConfig>,
    device: &Device,
) -> Result<LoadedModel> {
    let ck = Checkpoint::read(path)?;
    ck.check_finite()?;
    let config = match (config, name) {
        (Some(c), _) => c,
        (None, Some(n)) => (registry::lookup(n)?.config)(),
        (None, None) => registry::detect(&ck)?,
    };
    let name = name
        .map(str::to_string)
        .or_else(|| registry::name_of(&config).map(str::to_string))
        .unwrap_or_else(|| "custom".to_string());
    let network = match &config {
        ModelConfig::Sam(c) => {
            let mut sam = c.init(device);
            apply_checkpoint(&mut sam, &ck, &name, IGNORABLE)?;
            Network::Sam(sam)
        }
        ModelConfig::Sam2(c) => {
            let mut sam2 = c.init(device);
            apply_checkpoint(&mut sam2, &ck, &name, IGNORABLE)?;
            Network::Sam2(Box::new(sam2))
        }
    };
    tracing::debug!(model = %name, path = %path.display(), tensors = ck.tensors.len(), "loaded checkpoint");
    Ok(LoadedModel {
        name,
        config,
        network,
        source: path.to_path_buf(),
    })
}

/// Path of the official checkpoint of a registered model, downloading it into the Hugging
/// Face cache (`$HF_HOME`, default `~/.cache/huggingface`) when it is not there yet.
/// Offline (or with `HF_HUB_OFFLINE=1`) a missing file is a clear error naming what to pass.
pub fn fetch_checkpoint(name: &str) -> Result<PathBuf> {
    let entry = registry::lookup(name)?;
    let err = |message: String| ModelError::Download {
        repo: entry.hf_repo.to_string(),
        file: entry.hf_file.to_string(),
        message,
    };
    let cache = hf_hub::Cache::from_env();
    if let Some(p) = cache.model(entry.hf_repo.to_string()).get(entry.hf_file) {
        return Ok(p);
    }
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        return Err(err(
            "not in the local cache and HF_HUB_OFFLINE is set".into()
        ));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| err(e.to_string()))?;
    api.model(entry.hf_repo.to_string())
        .get(entry.hf_file)
        .map_err(|e| err(e.to_string()))
}

/// Load a registered model by name (downloading its checkpoint if needed).
pub fn load_by_name(name: &str, device: &Device) -> Result<LoadedModel> {
    let path = fetch_checkpoint(name)?;
    load_checkpoint(&path, Some(name), None, device)
}
