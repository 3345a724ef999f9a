//! The training configuration (TOML). Every table rejects unknown keys, so a typo is an error
//! that names the key, its line and the accepted keys. Every field is documented in the
//! crate's README.

use std::path::{Path, PathBuf};

use fastsam2_models::peft::LoraTarget;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError, io_err};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Folder for checkpoints, exported models, metrics and the plot.
    pub output_dir: PathBuf,
    /// Seed of everything random (initialisation of inserted modules, data order,
    /// augmentation, prompt simulation, LoRA dropout).
    #[serde(default)]
    pub seed: u64,
    pub model: ModelSection,
    pub strategy: StrategySection,
    pub data: DataSection,
    #[serde(default)]
    pub augment: AugmentSection,
    #[serde(default)]
    pub prompts: PromptSection,
    #[serde(default)]
    pub loss: LossSection,
    #[serde(default)]
    pub optim: OptimSection,
    pub train: TrainSection,
    #[serde(default)]
    pub validation: ValidationSection,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Checkpoint to start from (.pth / .pt / .safetensors); its type is detected.
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    /// Registered model name (`fastsam2 models`); alone: its official checkpoint from the
    /// Hugging Face cache; with `checkpoint`: forces that model type.
    #[serde(default)]
    pub name: Option<String>,
    /// Train (and export) at another square input size than the checkpoint's (a multiple of
    /// 16 for SAM ViT encoders, of 64 for TinyViT). ViT absolute position embeddings are
    /// resized bicubically and the relative position tables of global-attention blocks
    /// linearly, as `segment_anything` does for mismatched sizes.
    #[serde(default)]
    pub image_size: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    Full,
    Adapter,
    Lora,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchNormMode {
    /// Normalise with the checkpoint's running statistics and never update them (BN in eval
    /// mode, the usual choice for fine-tuning with small batches); affine weights still train
    /// when their module trains.
    #[default]
    Frozen,
    /// Normalise with batch statistics and update the running statistics (PyTorch
    /// `model.train()`); only sensible with large batches.
    Batch,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategySection {
    /// `full`, `adapter` or `lora`.
    pub kind: StrategyKind,
    /// TinyViT (MobileSAM) BatchNorm behaviour during training.
    #[serde(default)]
    pub batchnorm: BatchNormMode,
    #[serde(default)]
    pub full: FullSection,
    #[serde(default)]
    pub adapter: AdapterSection,
    #[serde(default)]
    pub lora: LoraSection,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FullSection {
    pub freeze_image_encoder: bool,
    pub freeze_prompt_encoder: bool,
    pub freeze_mask_decoder: bool,
}

impl Default for FullSection {
    fn default() -> Self {
        Self {
            freeze_image_encoder: false,
            freeze_prompt_encoder: true,
            freeze_mask_decoder: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdapterSection {
    /// Adapter hidden width as a fraction of the block width.
    pub ratio: f64,
    /// Scale of the MLP-parallel adapter.
    pub mlp_scale: f64,
    /// Also train the prompt encoder (the mask decoder always trains with adapters).
    pub train_prompt_encoder: bool,
}

impl Default for AdapterSection {
    fn default() -> Self {
        Self {
            ratio: 0.25,
            mlp_scale: 0.5,
            train_prompt_encoder: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSection {
    pub rank: usize,
    pub alpha: f64,
    /// Dropout on the LoRA branch input.
    pub dropout: f64,
    /// Encoder linears with a LoRA branch: `qkv`, `proj`, `lin1` (`fc1`), `lin2` (`fc2`).
    pub targets: Vec<LoraTarget>,
    /// Also train the mask decoder fully (SAMed-style); off: only LoRA factors train.
    pub train_mask_decoder: bool,
}

impl Default for LoraSection {
    fn default() -> Self {
        Self {
            rank: 4,
            alpha: 4.0,
            dropout: 0.0,
            targets: vec![LoraTarget::Qkv, LoraTarget::Proj],
            train_mask_decoder: false,
        }
    }
}

/// A data source: an image folder with a mask folder, or a COCO instances JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// Image folder (both formats).
    pub images: PathBuf,
    /// Mask folder: one binary PNG (0 / 255) per image, same file stem.
    #[serde(default)]
    pub masks: Option<PathBuf>,
    /// COCO instances JSON (polygons and RLE); one sample per non-crowd instance.
    #[serde(default)]
    pub coco: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub train: SourceSection,
    /// Separate validation data; without it `val_fraction` of `train` is held out.
    #[serde(default)]
    pub val: Option<SourceSection>,
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Skip empty masks instead of failing.
    #[serde(default)]
    pub skip_empty_masks: bool,
}

fn default_val_fraction() -> f64 {
    0.2
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentSection {
    pub hflip: f64,
    pub vflip: f64,
    /// Probability of a random scale-and-crop.
    pub scale_crop: f64,
    /// Range of the scale factor.
    pub scale_min: f64,
    pub scale_max: f64,
    /// Colour jitter strengths (0 = off), torchvision `ColorJitter` semantics.
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
}

impl Default for AugmentSection {
    fn default() -> Self {
        Self {
            hflip: 0.5,
            vflip: 0.0,
            scale_crop: 0.5,
            scale_min: 0.75,
            scale_max: 1.25,
            brightness: 0.2,
            contrast: 0.2,
            saturation: 0.2,
        }
    }
}

impl AugmentSection {
    /// No augmentation at all.
    pub fn none() -> Self {
        Self {
            hflip: 0.0,
            vflip: 0.0,
            scale_crop: 0.0,
            scale_min: 1.0,
            scale_max: 1.0,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptKind {
    /// The mask's box (jittered in training).
    Box,
    /// Positive points in the mask and negative points in the background.
    Points,
    /// Box and points.
    BoxPoints,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptSection {
    /// Prompt kinds; each optimizer micro-batch draws one uniformly.
    pub kinds: Vec<PromptKind>,
    /// Box jitter: standard deviation as a fraction of the box side ...
    pub box_jitter: f64,
    /// ... clamped to this many pixels (SAM: 10 %, at most 20 px).
    pub box_jitter_max_px: f64,
    /// Positive points sampled in the mask.
    pub positive_points: usize,
    /// Negative points sampled in the background.
    pub negative_points: usize,
    /// Extra corrective iterations per sample: a click in the error region of the previous
    /// prediction plus its low-res logits as mask input (SAM's interactive training).
    pub iterative_clicks: usize,
    /// A single point is ambiguous: predict 3 masks and back-propagate the best one (SAM).
    pub multimask_single_point: bool,
}

impl Default for PromptSection {
    fn default() -> Self {
        Self {
            kinds: vec![PromptKind::Box, PromptKind::Points, PromptKind::BoxPoints],
            box_jitter: 0.1,
            box_jitter_max_px: 20.0,
            positive_points: 1,
            negative_points: 0,
            iterative_clicks: 0,
            multimask_single_point: true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// SAM: focal (weight `focal_weight`) + dice (weight `dice_weight`).
    FocalDice,
    /// Binary cross-entropy (`bce_weight`) + dice (`dice_weight`).
    DiceBce,
    /// Focal only.
    Focal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IouLossKind {
    Mse,
    L1,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossSection {
    pub kind: LossKind,
    pub focal_weight: f64,
    pub dice_weight: f64,
    pub bce_weight: f64,
    pub focal_alpha: f64,
    pub focal_gamma: f64,
    /// Weight of the IoU-prediction loss (0 disables).
    pub iou_weight: f64,
    pub iou_loss: IouLossKind,
}

impl Default for LossSection {
    fn default() -> Self {
        Self {
            kind: LossKind::FocalDice,
            focal_weight: 20.0,
            dice_weight: 1.0,
            bce_weight: 1.0,
            focal_alpha: 0.25,
            focal_gamma: 2.0,
            iou_weight: 1.0,
            iou_loss: IouLossKind::Mse,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Linear warm-up then cosine decay to `min_lr_ratio · lr`.
    Cosine,
    /// Linear warm-up then constant.
    Constant,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Apply weight decay to 1-D parameters (biases, norms) too.
    pub decay_bias_and_norm: bool,
    /// Clip the global gradient norm to this value (0 = off).
    pub grad_clip_norm: f64,
    pub schedule: Schedule,
    pub warmup_steps: u64,
    pub min_lr_ratio: f64,
}

impl Default for OptimSection {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            decay_bias_and_norm: false,
            grad_clip_norm: 1.0,
            schedule: Schedule::Cosine,
            warmup_steps: 0,
            min_lr_ratio: 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    F32,
    /// bf16 compute with f32 master weights (backends with bf16 arithmetic only).
    Bf16,
    F16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Number of epochs (passes over the training samples).
    #[serde(default)]
    pub epochs: Option<u64>,
    /// Or a fixed number of optimizer steps (takes precedence; epochs follow from it).
    #[serde(default)]
    pub max_steps: Option<u64>,
    #[serde(default = "one")]
    pub batch_size: usize,
    /// Micro-batches accumulated per optimizer step.
    #[serde(default = "one")]
    pub grad_accum: usize,
    #[serde(default)]
    pub precision: Precision,
    /// Write the resumable checkpoint every N optimizer steps too (0 = end of epoch only).
    #[serde(default)]
    pub checkpoint_every_steps: u64,
    /// Log a training record every N steps.
    #[serde(default = "one_u64")]
    pub log_every_steps: u64,
    /// Compute device: `cpu` (`vulkan` in builds with that feature).
    #[serde(default = "cpu")]
    pub device: String,
}

fn one() -> usize {
    1
}
fn one_u64() -> u64 {
    1
}
fn cpu() -> String {
    "cpu".into()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationSection {
    /// Validate every N epochs (and after the last one); 0 = only after the last.
    pub every_epochs: u64,
    /// Validate before the first step (the starting point of the curves).
    pub at_start: bool,
    /// Prompt used for validation (deterministic, no jitter).
    pub prompt: PromptKind,
    /// Number of probability thresholds swept for the best binarisation threshold.
    pub thresholds: usize,
}

impl Default for ValidationSection {
    fn default() -> Self {
        Self {
            every_epochs: 1,
            at_start: true,
            prompt: PromptKind::Box,
            thresholds: 19,
        }
    }
}

impl TrainConfig {
    /// Parse a TOML file; relative paths inside are resolved against the file's folder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        let mut cfg = Self::from_toml_str(&text).map_err(|e| match e {
            TrainError::Config(m) => TrainError::ConfigParse {
                path: path.to_path_buf(),
                message: m,
            },
            other => other,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve_paths(base);
        Ok(cfg)
    }

    /// Parse TOML text (paths are kept as written) and validate it.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let cfg: TrainConfig =
            toml::from_str(text).map_err(|e| TrainError::Config(e.to_string().trim().into()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.output_dir);
        if let Some(c) = &mut self.model.checkpoint {
            fix(c);
        }
        for s in std::iter::once(&mut self.data.train).chain(self.data.val.as_mut()) {
            fix(&mut s.images);
            if let Some(m) = &mut s.masks {
                fix(m);
            }
            if let Some(c) = &mut s.coco {
                fix(c);
            }
        }
    }

    /// Check values the types cannot express.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.model.checkpoint.is_none() && self.model.name.is_none() {
            return bad("model: give `checkpoint` (a file) or `name` (a registered model)".into());
        }
        if let Some(s) = self.model.image_size
            && (s == 0 || !s.is_multiple_of(16))
        {
            return bad(format!(
                "model.image_size = {s}: must be a positive multiple of 16"
            ));
        }
        let l = &self.strategy.lora;
        if self.strategy.kind == StrategyKind::Lora {
            if l.rank == 0 {
                return bad("strategy.lora.rank must be at least 1".into());
            }
            if !(0.0..1.0).contains(&l.dropout) {
                return bad(format!(
                    "strategy.lora.dropout = {}: must be in [0, 1)",
                    l.dropout
                ));
            }
            if l.targets.is_empty() {
                return bad("strategy.lora.targets is empty".into());
            }
            if !(l.alpha.is_finite() && l.alpha > 0.0) {
                return bad("strategy.lora.alpha must be positive".into());
            }
        }
        let a = &self.strategy.adapter;
        if self.strategy.kind == StrategyKind::Adapter && !(a.ratio > 0.0 && a.ratio <= 4.0) {
            return bad(format!(
                "strategy.adapter.ratio = {}: must be in (0, 4]",
                a.ratio
            ));
        }
        let f = &self.strategy.full;
        if self.strategy.kind == StrategyKind::Full
            && f.freeze_image_encoder
            && f.freeze_prompt_encoder
            && f.freeze_mask_decoder
        {
            return bad("strategy.full freezes every component: nothing would train".into());
        }
        for (name, s) in std::iter::once(("train", &self.data.train))
            .chain(self.data.val.as_ref().map(|v| ("val", v)))
        {
            match (&s.masks, &s.coco) {
                (Some(_), Some(_)) => {
                    return bad(format!(
                        "data.{name}: give either `masks` (a mask folder) or `coco` (a JSON), not both"
                    ));
                }
                (None, None) => {
                    return bad(format!(
                        "data.{name}: give `masks` (a mask folder) or `coco` (a COCO instances JSON)"
                    ));
                }
                _ => {}
            }
        }
        if self.data.val.is_none()
            && !(self.data.val_fraction > 0.0 && self.data.val_fraction < 1.0)
        {
            return bad(format!(
                "data.val_fraction = {}: must be in (0, 1) when there is no data.val",
                self.data.val_fraction
            ));
        }
        let g = &self.augment;
        for (k, v) in [
            ("hflip", g.hflip),
            ("vflip", g.vflip),
            ("scale_crop", g.scale_crop),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("augment.{k} = {v}: a probability in [0, 1]"));
            }
        }
        if !(g.scale_min > 0.0 && g.scale_min <= g.scale_max) {
            return bad("augment: need 0 < scale_min <= scale_max".into());
        }
        for (k, v) in [
            ("brightness", g.brightness),
            ("contrast", g.contrast),
            ("saturation", g.saturation),
        ] {
            if !(0.0..1.0).contains(&v) {
                return bad(format!("augment.{k} = {v}: must be in [0, 1)"));
            }
        }
        let p = &self.prompts;
        if p.kinds.is_empty() {
            return bad("prompts.kinds is empty".into());
        }
        if p.kinds.iter().any(|k| *k != PromptKind::Box)
            && p.positive_points + p.negative_points == 0
        {
            return bad(
                "prompts: point prompts need positive_points or negative_points > 0".into(),
            );
        }
        let o = &self.optim;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return bad(format!("optim.lr = {}: must be positive", o.lr));
        }
        if !(0.0..1.0).contains(&o.beta1) || !(0.0..1.0).contains(&o.beta2) {
            return bad("optim.beta1 / beta2 must be in [0, 1)".into());
        }
        if o.weight_decay < 0.0 || o.grad_clip_norm < 0.0 || o.eps <= 0.0 {
            return bad("optim: weight_decay and grad_clip_norm must be >= 0, eps > 0".into());
        }
        if !(0.0..=1.0).contains(&o.min_lr_ratio) {
            return bad("optim.min_lr_ratio must be in [0, 1]".into());
        }
        let t = &self.train;
        if t.epochs.is_none() && t.max_steps.is_none() {
            return bad("train: give `epochs` or `max_steps`".into());
        }
        if t.epochs == Some(0) || t.max_steps == Some(0) {
            return bad("train: epochs / max_steps must be at least 1".into());
        }
        if t.batch_size == 0 || t.grad_accum == 0 || t.log_every_steps == 0 {
            return bad(
                "train: batch_size, grad_accum and log_every_steps must be at least 1".into(),
            );
        }
        if self.validation.thresholds == 0 {
            return bad("validation.thresholds must be at least 1".into());
        }
        Ok(())
    }
}
