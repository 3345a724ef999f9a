//! The model being fine-tuned: a `Sam` on the autodiff device, with the strategy applied
//! (frozen components, adapters, LoRA branches), its parameter inventory, and export.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot};
use burn::tensor::{Device, Tensor};
use fastsam2_models::checkpoint::{Checkpoint, TensorEntry, apply_checkpoint};
use fastsam2_models::loader::fetch_checkpoint;
use fastsam2_models::peft::{AdapterSpec, DropoutRng, LoraSpec, PeftInit};
use fastsam2_models::registry::{self, CONFIG_METADATA_KEY, ModelConfig};
use fastsam2_models::sam::{ImageEncoder, ImageEncoderConfig, Sam, SamConfig};
use serde::{Deserialize, Serialize};

use crate::config::{BatchNormMode, ModelSection, StrategyKind, StrategySection};
use crate::error::{Result, TrainError};

/// Prefixes of official checkpoints no module uses (TinyViT's classifier head).
const IGNORABLE: &[&str] = &["image_encoder.norm_head.", "image_encoder.head."];

/// Safetensors metadata key of an exported model's adapter configuration (JSON of
/// [`AdapterSpec`]); present only when the model has adapters.
pub const ADAPTER_METADATA_KEY: &str = "fastsam2.adapter";
/// Safetensors metadata key describing how a model was fine-tuned.
pub const FINETUNE_METADATA_KEY: &str = "fastsam2.finetune";

/// The structural PEFT additions of a model (what must be rebuilt before loading weights).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PeftLayout {
    pub adapter: Option<AdapterSpec>,
    pub lora: Option<LoraLayout>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraLayout {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Vec<fastsam2_models::peft::LoraTarget>,
}

impl LoraLayout {
    pub fn spec(&self) -> LoraSpec {
        LoraSpec {
            rank: self.rank,
            alpha: self.alpha,
            dropout: self.dropout,
            targets: self.targets.clone(),
        }
    }
}

/// A model under training.
#[derive(Debug)]
pub struct TrainModel {
    pub sam: Sam,
    pub config: SamConfig,
    pub layout: PeftLayout,
    /// Reseeded per micro-batch by the trainer (LoRA dropout masks).
    pub dropout_rng: DropoutRng,
    pub source: PathBuf,
}

/// Read the base checkpoint and decide its configuration (with the image-size override).
pub fn read_base(m: &ModelSection) -> Result<(Checkpoint, SamConfig, PathBuf)> {
    let path = match (&m.checkpoint, &m.name) {
        (Some(p), _) => p.clone(),
        (None, Some(n)) => fetch_checkpoint(n)?,
        (None, None) => {
            return Err(TrainError::Config(
                "model: give `checkpoint` or `name`".into(),
            ));
        }
    };
    let mut ck = Checkpoint::read(&path)?;
    ck.check_finite()?;
    let config = match &m.name {
        Some(n) => (registry::lookup(n)?.config)(),
        None => registry::detect(&ck)?,
    };
    let ModelConfig::Sam(mut config) = config else {
        return Err(TrainError::Config(format!(
            "{}: SAM 2 fine-tuning is not supported yet; use a SAM / MobileSAM checkpoint",
            path.display()
        )));
    };
    if let Some(size) = m.image_size {
        resize_for_image_size(&mut ck, &mut config, size)?;
    }
    Ok((ck, config, path))
}

/// Change the input size of a SAM v1 model: ViT absolute position embeddings are resized
/// bicubically (align_corners = False, timm's `resample_abs_pos_embed`), the relative
/// position tables of global-attention blocks linearly (what `segment_anything`'s
/// `get_rel_pos` does for mismatched sizes); TinyViT has no size-dependent weights.
pub fn resize_for_image_size(
    ck: &mut Checkpoint,
    config: &mut SamConfig,
    size: usize,
) -> Result<()> {
    let old = config.image_encoder.img_size();
    if size == old {
        return Ok(());
    }
    match &mut config.image_encoder {
        ImageEncoderConfig::Vit(v) => {
            if !size.is_multiple_of(v.patch_size) {
                return Err(TrainError::Config(format!(
                    "model.image_size = {size} is not a multiple of the patch size {}",
                    v.patch_size
                )));
            }
            let (g_old, g_new) = (old / v.patch_size, size / v.patch_size);
            if v.use_abs_pos {
                let key = "image_encoder.pos_embed";
                let e = ck.tensors.get(key).ok_or_else(|| {
                    TrainError::Config(format!("{}: no {key}", ck.path.display()))
                })?;
                let c = e.shape[3];
                let dev = Device::flex();
                let t = fastsam2_models::common::tensor_from_vec(
                    e.data.clone(),
                    [1, g_old, g_old, c],
                    &dev,
                )
                .permute([0, 3, 1, 2]);
                let r = burn::tensor::module::interpolate(
                    t,
                    burn::tensor::ops::InterpolateOptions::new(
                        burn::tensor::ops::InterpolateMode::Bicubic,
                    )
                    .with_align_corners(false)
                    .with_output_size([g_new, g_new]),
                )
                .permute([0, 2, 3, 1]);
                let data = fastsam2_models::common::tensor_to_vec(r);
                ck.tensors.insert(
                    key.into(),
                    TensorEntry {
                        shape: vec![1, g_new, g_new, c],
                        data,
                    },
                );
            }
            if v.use_rel_pos {
                for &i in &v.global_attn_indexes {
                    for hw in ["h", "w"] {
                        let key = format!("image_encoder.blocks.{i}.attn.rel_pos_{hw}");
                        if let Some(e) = ck.tensors.get(&key) {
                            let (len, c) = (e.shape[0], e.shape[1]);
                            let new_len = 2 * g_new - 1;
                            let data = linear_resize_rows(&e.data, len, c, new_len);
                            ck.tensors.insert(
                                key,
                                TensorEntry {
                                    shape: vec![new_len, c],
                                    data,
                                },
                            );
                        }
                    }
                }
            }
            v.img_size = size;
        }
        ImageEncoderConfig::TinyVit(t) => {
            if !size.is_multiple_of(64) {
                return Err(TrainError::Config(format!(
                    "model.image_size = {size}: TinyViT needs a multiple of 64"
                )));
            }
            t.img_size = size;
        }
    }
    let g = size / 16;
    config.prompt_encoder.image_embedding_size = [g, g];
    config.prompt_encoder.input_image_size = [size, size];
    Ok(())
}

/// `F.interpolate(x[None].permute(0, 2, 1), size=new_len, mode="linear")` for a [len, c] table.
fn linear_resize_rows(data: &[f32], len: usize, c: usize, new_len: usize) -> Vec<f32> {
    let scale = len as f64 / new_len as f64;
    let mut out = vec![0f32; new_len * c];
    for i in 0..new_len {
        let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(len - 1);
        let i1 = (i0 + 1).min(len - 1);
        let f = (src - i0 as f64) as f32;
        for j in 0..c {
            out[i * c + j] = data[i0 * c + j] * (1.0 - f) + data[i1 * c + j] * f;
        }
    }
    out
}

/// Build the base model on `device` and apply the strategy.
pub fn build(
    m: &ModelSection,
    s: &StrategySection,
    seed: u64,
    device: &Device,
) -> Result<TrainModel> {
    let (ck, config, source) = read_base(m)?;
    let mut sam = config.init(device);
    apply_checkpoint(&mut sam, &ck, "base model", IGNORABLE)?;
    let dropout_rng = DropoutRng::default();
    let (sam, layout) = apply_strategy(sam, s, seed, &dropout_rng);
    Ok(TrainModel {
        sam,
        config,
        layout,
        dropout_rng,
        source,
    })
}

/// Insert the strategy's modules (adapters / LoRA) and set what trains.
pub fn apply_strategy(
    mut sam: Sam,
    s: &StrategySection,
    seed: u64,
    rng: &DropoutRng,
) -> (Sam, PeftLayout) {
    let mut init = PeftInit::new(seed);
    let mut layout = PeftLayout::default();
    match s.kind {
        StrategyKind::Full => {}
        StrategyKind::Adapter => {
            let spec = AdapterSpec {
                ratio: s.adapter.ratio,
                mlp_scale: s.adapter.mlp_scale,
            };
            insert_adapters(&mut sam, &spec, &mut init);
            layout.adapter = Some(spec);
        }
        StrategyKind::Lora => {
            let l = LoraLayout {
                rank: s.lora.rank,
                alpha: s.lora.alpha,
                dropout: s.lora.dropout,
                targets: s.lora.targets.clone(),
            };
            insert_lora(&mut sam, &l.spec(), &mut init, rng);
            layout.lora = Some(l);
        }
    }
    (set_trainable(sam, s), layout)
}

/// Set which parameters train: whole components per the strategy, then every LoRA / adapter
/// parameter. BatchNorm layers get their mode (`freeze` turns their training flag off: they
/// normalise with the running statistics and leave them alone).
pub fn set_trainable(sam: Sam, s: &StrategySection) -> Sam {
    let Sam {
        image_encoder,
        prompt_encoder,
        mask_decoder,
    } = sam;
    let (train_enc, train_pe, train_dec) = match s.kind {
        StrategyKind::Full => (
            !s.full.freeze_image_encoder,
            !s.full.freeze_prompt_encoder,
            !s.full.freeze_mask_decoder,
        ),
        StrategyKind::Adapter => (false, s.adapter.train_prompt_encoder, true),
        StrategyKind::Lora => (false, false, s.lora.train_mask_decoder),
    };
    let image_encoder = match s.batchnorm {
        BatchNormMode::Frozen => image_encoder.freeze(),
        BatchNormMode::Batch => image_encoder.unfreeze(),
    }
    .set_require_grad(train_enc);
    let peft: Vec<ParamId> = ids_where(&image_encoder, |p| {
        p.split('.')
            .any(|seg| seg.ends_with("_lora") || seg.starts_with("adapter_"))
    });
    let image_encoder = if peft.is_empty() {
        image_encoder
    } else {
        image_encoder.set_require_grad_group(ParamGroup::from_ids(peft), true)
    };
    Sam {
        image_encoder,
        prompt_encoder: prompt_encoder.set_require_grad(train_pe),
        mask_decoder: mask_decoder.set_require_grad(train_dec),
    }
}

/// Ids of the float parameters whose module path satisfies `pred`.
fn ids_where<M: Module>(m: &M, pred: impl Fn(&str) -> bool) -> Vec<ParamId> {
    struct V<F> {
        path: Vec<String>,
        pred: F,
        out: Vec<ParamId>,
    }
    impl<F: Fn(&str) -> bool> ModuleVisitor for V<F> {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if (self.pred)(&self.path.join(".")) {
                self.out.push(param.id);
            }
        }
    }
    let mut v = V {
        path: Vec::new(),
        pred,
        out: Vec::new(),
    };
    m.visit(&mut v);
    v.out
}

pub fn insert_adapters(sam: &mut Sam, spec: &AdapterSpec, init: &mut PeftInit) {
    match &mut sam.image_encoder {
        ImageEncoder::Vit(e) => e.add_adapters(spec, init),
        ImageEncoder::TinyVit(e) => e.add_adapters(spec, init),
    }
}

pub fn insert_lora(sam: &mut Sam, spec: &LoraSpec, init: &mut PeftInit, rng: &DropoutRng) {
    match &mut sam.image_encoder {
        ImageEncoder::Vit(e) => e.add_lora(spec, init, rng),
        ImageEncoder::TinyVit(e) => e.add_lora(spec, init, rng),
    }
}

/// Rebuild a model of `config` + `layout` on `device` (untrained inserted modules; load
/// weights afterwards).
pub fn skeleton(config: &SamConfig, layout: &PeftLayout, device: &Device, rng: &DropoutRng) -> Sam {
    let mut sam = config.init(device);
    let mut init = PeftInit::new(0);
    if let Some(a) = &layout.adapter {
        insert_adapters(&mut sam, a, &mut init);
    }
    if let Some(l) = &layout.lora {
        insert_lora(&mut sam, &l.spec(), &mut init, rng);
    }
    sam
}

/// One parameter of the model.
#[derive(Clone, Debug)]
pub struct ParamInfo {
    /// Module path (burn field names).
    pub path: String,
    pub numel: usize,
    pub trainable: bool,
}

#[derive(Default)]
struct Inventory {
    path: Vec<String>,
    out: Vec<ParamInfo>,
    values: Option<Vec<Vec<f32>>>,
}

impl ModuleVisitor for Inventory {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        self.out.push(ParamInfo {
            path: self.path.join("."),
            numel: t.shape().num_elements(),
            trainable: t.is_require_grad(),
        });
        if let Some(v) = &mut self.values {
            v.push(fastsam2_models::common::tensor_to_vec(t.detach()));
        }
    }
}

/// Every float parameter with its trainability.
pub fn inventory<M: Module>(m: &M) -> Vec<ParamInfo> {
    let mut v = Inventory::default();
    m.visit(&mut v);
    v.out
}

/// Every float parameter with its current values (for tests and checks).
pub fn snapshot<M: Module>(m: &M) -> Vec<(ParamInfo, Vec<f32>)> {
    let mut v = Inventory {
        values: Some(Vec::new()),
        ..Default::default()
    };
    m.visit(&mut v);
    let values = v.values.unwrap_or_default();
    v.out.into_iter().zip(values).collect()
}

/// Trainable / total parameter counts per component.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ParamCounts {
    pub total: usize,
    pub trainable: usize,
    /// component -> (trainable, total)
    pub by_component: BTreeMap<String, (usize, usize)>,
}

impl ParamCounts {
    pub fn of(sam: &Sam) -> Self {
        let mut c = ParamCounts::default();
        for p in inventory(sam) {
            let comp = p.path.split('.').next().unwrap_or("").to_string();
            let e = c.by_component.entry(comp).or_default();
            e.1 += p.numel;
            c.total += p.numel;
            if p.trainable {
                e.0 += p.numel;
                c.trainable += p.numel;
            }
        }
        c
    }

    pub fn fraction(&self) -> f64 {
        self.trainable as f64 / self.total.max(1) as f64
    }

    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .by_component
            .iter()
            .map(|(k, (t, n))| format!("{k} {t}/{n}"))
            .collect();
        format!(
            "trainable parameters: {} of {} ({:.3} %); {}",
            self.trainable,
            self.total,
            100.0 * self.fraction(),
            parts.join(", ")
        )
    }
}

/// A tensor to write: name, shape, little-endian f32 bytes.
pub type NamedTensor = (String, Vec<usize>, Vec<u8>);

/// All tensors of `sam` in PyTorch names and layout (float32).
pub fn state_dict(sam: &Sam) -> Result<Vec<NamedTensor>> {
    let tensors = sam.collect(None, Some(Box::new(BurnToPyTorchAdapter)), true);
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        let shape: Vec<usize> = t.shape.iter().copied().collect();
        let name = t.name.clone();
        let bytes = t.to_bytes().map_err(|e| TrainError::Checkpoint {
            path: PathBuf::new(),
            message: format!("cannot read tensor {name}: {e}"),
        })?;
        out.push((name, shape, bytes.to_vec()));
    }
    Ok(out)
}

impl TrainModel {
    /// The model for export: on the plain (non-autodiff) device, LoRA merged into the weights.
    pub fn merged(&self) -> Sam {
        let mut sam = self.sam.valid();
        match &mut sam.image_encoder {
            ImageEncoder::Vit(e) => e.merge_lora(),
            ImageEncoder::TinyVit(e) => e.merge_lora(),
        }
        sam
    }

    /// Write the deployable model: official key names (LoRA merged; adapter weights under
    /// `*.adapter_attn.*` / `*.adapter_mlp.*` when present), the model config in
    /// `fastsam2.config`, atomically.
    pub fn export(&self, path: &Path, info: &serde_json::Value) -> Result<()> {
        let sam = self.merged();
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        meta.insert(
            CONFIG_METADATA_KEY.to_string(),
            serde_json::to_string(&ModelConfig::Sam(self.config.clone())).unwrap_or_default(),
        );
        if let Some(a) = &self.layout.adapter {
            meta.insert(
                ADAPTER_METADATA_KEY.to_string(),
                serde_json::to_string(a).unwrap_or_default(),
            );
        }
        meta.insert(FINETUNE_METADATA_KEY.to_string(), info.to_string());
        let tensors = state_dict(&sam)?;
        crate::checkpoint::write_safetensors_atomic(path, &tensors, meta)
    }
}

/// Load an exported fine-tuned model (with or without adapters) as a [`LoadedModel`] usable by
/// `ImagePredictor` / `fastsam2 segment`.
///
/// [`LoadedModel`]: fastsam2_models::loader::LoadedModel
pub fn load_exported(path: &Path, device: &Device) -> Result<fastsam2_models::loader::LoadedModel> {
    let ck = Checkpoint::read(path)?;
    ck.check_finite()?;
    let ModelConfig::Sam(config) = registry::detect(&ck)? else {
        return Err(TrainError::Config(format!(
            "{}: not a SAM v1 family export",
            path.display()
        )));
    };
    let adapter: Option<AdapterSpec> = match ck.metadata.get(ADAPTER_METADATA_KEY) {
        Some(j) => Some(serde_json::from_str(j).map_err(|e| TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: format!("invalid {ADAPTER_METADATA_KEY} metadata: {e}"),
        })?),
        None => None,
    };
    let layout = PeftLayout {
        adapter,
        lora: None,
    };
    let mut sam = skeleton(&config, &layout, device, &DropoutRng::default());
    apply_checkpoint(&mut sam, &ck, "fine-tuned model", &[])?;
    Ok(fastsam2_models::loader::LoadedModel {
        name: "custom".into(),
        config: ModelConfig::Sam(config),
        network: fastsam2_models::loader::Network::Sam(sam),
        source: path.to_path_buf(),
    })
}

/// Whether `path` is a `.safetensors` export with adapters (its header's metadata holds
/// `fastsam2.adapter`); reads only the header. Such files load with [`load_exported`].
pub fn is_adapter_export(path: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut len = [0u8; 8];
    if f.read_exact(&mut len).is_err() {
        return false;
    }
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        return false;
    }
    let mut header = vec![0u8; n as usize];
    if f.read_exact(&mut header).is_err() {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(&header)
        .ok()
        .and_then(|v| v.get("__metadata__")?.get(ADAPTER_METADATA_KEY).cloned())
        .is_some()
}
