//! Resumable training checkpoints and atomic file writes.
//!
//! A training checkpoint is one `.safetensors` file: every model tensor under its PyTorch name
//! (LoRA / adapter factors included, unmerged), the AdamW moments under
//! `optim.m.<path>` / `optim.v.<path>`, and JSON metadata (`fastsam2.train_state`: step,
//! per-parameter AdamW step counts, best metric, config). Files are written to a temporary
//! file in the same folder, fsynced, then renamed over the target, so a crash (even SIGKILL)
//! leaves either the previous complete file or the new complete file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use fastsam2_models::checkpoint::{Checkpoint, apply_checkpoint};
use fastsam2_models::common::{tensor_from_vec, tensor_to_vec};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::model::{PeftLayout, TrainModel, state_dict};
use crate::optim::{AdamState, AdamW};

pub const STATE_METADATA_KEY: &str = "fastsam2.train_state";

/// Write `tensors` (name, shape, little-endian f32 bytes) with `metadata` atomically.
pub fn write_safetensors_atomic(
    path: &Path,
    tensors: &[crate::model::NamedTensor],
    metadata: BTreeMap<String, String>,
) -> Result<()> {
    let err = |message: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| err(format!("tensor {n}: {e}")))
        })
        .collect::<Result<_>>()?;
    let meta: std::collections::HashMap<String, String> = metadata.into_iter().collect();
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| err(e.to_string()))?;
    write_atomic(path, &bytes)
}

/// temp file + fsync + rename (+ fsync of the folder).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(crate::error::io_err(dir))?;
    let tmp = tmp_path(path);
    let io = |p: &Path| crate::error::io_err(p.to_path_buf());
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// What a training checkpoint records besides tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: u64,
    /// Best validation IoU so far and its step.
    pub best_iou: Option<f64>,
    pub best_step: Option<u64>,
    /// Per-parameter AdamW step counts.
    pub adam_steps: BTreeMap<String, u64>,
    pub layout: PeftLayout,
    /// The configuration the run started with (a resume checks it is unchanged).
    pub config: TrainConfig,
    /// The model config (image size override applied).
    pub model_config: fastsam2_models::sam::SamConfig,
}

/// Save model + optimizer + state atomically.
pub fn save(path: &Path, model: &TrainModel, opt: &AdamW, state: &TrainState) -> Result<()> {
    let mut tensors = state_dict(&model.sam.valid())?;
    let mut st = state.clone();
    st.adam_steps.clear();
    for (k, a) in &opt.state {
        st.adam_steps.insert(k.clone(), a.step);
        for (kind, t) in [("m", &a.m), ("v", &a.v)] {
            let v = tensor_to_vec(t.clone());
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            tensors.push((format!("optim.{kind}.{k}"), vec![v.len()], bytes));
        }
    }
    let mut meta = BTreeMap::new();
    meta.insert(
        STATE_METADATA_KEY.to_string(),
        serde_json::to_string(&st).map_err(|e| TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?,
    );
    write_safetensors_atomic(path, &tensors, meta)
}

/// A loaded checkpoint: the state, and the tensors to restore.
pub struct Loaded {
    pub state: TrainState,
    pub ck: Checkpoint,
}

pub fn read(path: &Path) -> Result<Loaded> {
    let mut ck = Checkpoint::read(path)?;
    let bad = |message: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let json = ck.metadata.get(STATE_METADATA_KEY).ok_or_else(|| {
        bad("not a training checkpoint (no fastsam2.train_state metadata)".into())
    })?;
    let state: TrainState =
        serde_json::from_str(json).map_err(|e| bad(format!("invalid train state: {e}")))?;
    ck.metadata.clear();
    Ok(Loaded { state, ck })
}

/// Restore model weights (strictly: every tensor present with its shape) and the optimizer.
pub fn restore(loaded: &Loaded, model: &mut TrainModel, device: &Device) -> Result<AdamW> {
    let path = loaded.ck.path.clone();
    let mut model_ck = loaded.ck.clone();
    let mut opt_tensors = BTreeMap::new();
    model_ck.tensors.retain(|k, v| {
        if let Some(rest) = k.strip_prefix("optim.") {
            opt_tensors.insert(rest.to_string(), v.clone());
            false
        } else {
            true
        }
    });
    apply_checkpoint(&mut model.sam, &model_ck, "training checkpoint", &[])?;
    let mut opt = AdamW::default();
    for (k, &step) in &loaded.state.adam_steps {
        let get = |kind: &str| {
            opt_tensors
                .get(&format!("{kind}.{k}"))
                .ok_or_else(|| TrainError::Checkpoint {
                    path: path.clone(),
                    message: format!("optimizer state optim.{kind}.{k} missing"),
                })
        };
        let (m, v) = (get("m")?, get("v")?);
        let n = m.data.len();
        let dev = device.clone().inner();
        let m: Tensor<1> = tensor_from_vec(m.data.clone(), [n], &dev);
        let v: Tensor<1> = tensor_from_vec(v.data.clone(), [n], &dev);
        opt.state.insert(k.clone(), AdamState { step, m, v });
    }
    Ok(opt)
}

/// Export the model of a training checkpoint (LoRA merged) to a deployable `.safetensors`.
pub fn export_checkpoint(ckpt: &Path, out: &Path) -> Result<()> {
    let loaded = read(ckpt)?;
    let device = Device::flex();
    let rng = fastsam2_models::peft::DropoutRng::default();
    let sam = crate::model::skeleton(
        &loaded.state.model_config,
        &loaded.state.layout,
        &device,
        &rng,
    );
    let mut model = TrainModel {
        sam,
        config: loaded.state.model_config.clone(),
        layout: loaded.state.layout.clone(),
        dropout_rng: rng,
        source: ckpt.to_path_buf(),
    };
    restore(&loaded, &mut model, &device)?;
    let info = serde_json::json!({
        "strategy": loaded.state.config.strategy.kind,
        "step": loaded.state.step,
        "from_checkpoint": ckpt.display().to_string(),
    });
    model.export(out, &info)
}
