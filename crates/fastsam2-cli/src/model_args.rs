//! Model selection shared by the subcommands: `--checkpoint PATH`, `--model NAME`, `--config`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use fastsam2_models::loader::{LoadedModel, fetch_checkpoint, load_checkpoint};
use fastsam2_models::registry::ModelConfig;

#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Checkpoint file: SAM `.pth`, MobileSAM `.pt`, SAM 2 `.pt` or `.safetensors`.
    /// The model type is detected from its keys and shapes.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// Registered model name (see `fastsam2 models`). Alone: download the official checkpoint
    /// through the Hugging Face hub cache. With --checkpoint: force that model type.
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Model hyper-parameters as JSON (for non-official sizes whose checkpoint carries none).
    #[arg(long, value_name = "CONFIG.json")]
    pub config: Option<PathBuf>,
    /// Compute device: `cpu`, or `vulkan` in builds with the `vulkan` feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" | "flex" => Ok(Device::flex()),
        #[cfg(feature = "vulkan")]
        "vulkan" | "gpu" => crate::gpu::vulkan_device(),
        other => bail!(
            "unknown device '{other}' (this build supports: cpu{})",
            if cfg!(feature = "vulkan") {
                ", vulkan"
            } else {
                ""
            }
        ),
    }
}

impl ModelArgs {
    pub fn load(&self, device: &Device) -> Result<LoadedModel> {
        let config: Option<ModelConfig> = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config {}", p.display()))?;
                Some(
                    serde_json::from_str(&text)
                        .with_context(|| format!("invalid model config {}", p.display()))?,
                )
            }
            None => None,
        };
        let t0 = Instant::now();
        let model = match (&self.checkpoint, &self.model) {
            // a fine-tuned export with adapters (`fastsam2 train`): the adapters join the model
            (Some(path), None)
                if config.is_none() && fastsam2_train::model::is_adapter_export(path) =>
            {
                fastsam2_train::load_exported(path, device)?
            }
            (Some(path), name) => load_checkpoint(path, name.as_deref(), config, device)?,
            (None, Some(name)) => {
                let path = fetch_checkpoint(name)?;
                load_checkpoint(&path, Some(name), config, device)?
            }
            (None, None) => bail!("give --checkpoint PATH or --model NAME (see `fastsam2 models`)"),
        };
        tracing::info!(
            "loaded {} from {} in {:.2} s",
            model.name,
            model.source.display(),
            t0.elapsed().as_secs_f64()
        );
        Ok(model)
    }
}
