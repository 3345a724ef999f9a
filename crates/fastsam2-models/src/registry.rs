//! Model registry: official names, where their checkpoints live on the Hugging Face hub, and
//! detection of the model type (and its hyper-parameters) from a checkpoint's keys and shapes.

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::{ModelError, Result};
use crate::mask_decoder::MaskDecoderConfig;
use crate::prompt_encoder::PromptEncoderConfig;
use crate::sam::{ImageEncoderConfig, SAM_PIXEL_MEAN, SAM_PIXEL_STD, SamConfig};
use crate::sam2::Sam2Config;
use crate::tiny_vit::TinyViTConfig;
use crate::two_way_transformer::TwoWayTransformerConfig;
use crate::vit::ImageEncoderViTConfig;

/// Safetensors metadata key holding a model's full configuration (JSON of [`ModelConfig`]).
pub const CONFIG_METADATA_KEY: &str = "fastsam2.config";

/// Hyper-parameters of any supported model, tagged by family.
#[allow(clippy::large_enum_variant)] // one per model
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum ModelConfig {
    /// SAM v1 image models: SAM ViT-B/L/H, MobileSAM, and custom sizes of the same classes.
    Sam(SamConfig),
    /// SAM 2 / 2.1 image and video models (Hiera trunk, memory).
    Sam2(Sam2Config),
}

/// A registered official model.
#[derive(Clone, Debug)]
pub struct RegistryEntry {
    pub name: &'static str,
    pub description: &'static str,
    /// Hugging Face hub repository and file of the official checkpoint.
    pub hf_repo: &'static str,
    pub hf_file: &'static str,
    pub config: fn() -> ModelConfig,
}

pub const REGISTRY: &[RegistryEntry] = &[
    RegistryEntry {
        name: "sam-vit-b",
        description: "Segment Anything ViT-B (91M)",
        hf_repo: "ybelkada/segment-anything",
        hf_file: "checkpoints/sam_vit_b_01ec64.pth",
        config: || ModelConfig::Sam(SamConfig::vit_b()),
    },
    RegistryEntry {
        name: "sam-vit-l",
        description: "Segment Anything ViT-L (308M)",
        hf_repo: "ybelkada/segment-anything",
        hf_file: "checkpoints/sam_vit_l_0b3195.pth",
        config: || ModelConfig::Sam(SamConfig::vit_l()),
    },
    RegistryEntry {
        name: "sam-vit-h",
        description: "Segment Anything ViT-H (636M)",
        hf_repo: "ybelkada/segment-anything",
        hf_file: "checkpoints/sam_vit_h_4b8939.pth",
        config: || ModelConfig::Sam(SamConfig::vit_h()),
    },
    RegistryEntry {
        name: "mobilesam",
        description: "MobileSAM (TinyViT-5M encoder + SAM decoder)",
        hf_repo: "dhkim2810/MobileSAM",
        hf_file: "mobile_sam.pt",
        config: || ModelConfig::Sam(SamConfig::mobile_sam()),
    },
    RegistryEntry {
        name: "sam2-hiera-tiny",
        description: "SAM 2 Hiera-T (39M)",
        hf_repo: "facebook/sam2-hiera-tiny",
        hf_file: "sam2_hiera_tiny.pt",
        config: || ModelConfig::Sam2(Sam2Config::sam2_tiny()),
    },
    RegistryEntry {
        name: "sam2-hiera-small",
        description: "SAM 2 Hiera-S (46M)",
        hf_repo: "facebook/sam2-hiera-small",
        hf_file: "sam2_hiera_small.pt",
        config: || ModelConfig::Sam2(Sam2Config::sam2_small()),
    },
    RegistryEntry {
        name: "sam2-hiera-base-plus",
        description: "SAM 2 Hiera-B+ (81M)",
        hf_repo: "facebook/sam2-hiera-base-plus",
        hf_file: "sam2_hiera_base_plus.pt",
        config: || ModelConfig::Sam2(Sam2Config::sam2_base_plus()),
    },
    RegistryEntry {
        name: "sam2-hiera-large",
        description: "SAM 2 Hiera-L (224M)",
        hf_repo: "facebook/sam2-hiera-large",
        hf_file: "sam2_hiera_large.pt",
        config: || ModelConfig::Sam2(Sam2Config::sam2_large()),
    },
    RegistryEntry {
        name: "sam2.1-hiera-tiny",
        description: "SAM 2.1 Hiera-T (39M)",
        hf_repo: "facebook/sam2.1-hiera-tiny",
        hf_file: "sam2.1_hiera_tiny.pt",
        config: || ModelConfig::Sam2(Sam2Config::sam21_tiny()),
    },
    RegistryEntry {
        name: "sam2.1-hiera-small",
        description: "SAM 2.1 Hiera-S (46M)",
        hf_repo: "facebook/sam2.1-hiera-small",
        hf_file: "sam2.1_hiera_small.pt",
        config: || ModelConfig::Sam2(Sam2Config::sam21_small()),
    },
    RegistryEntry {
        name: "sam2.1-hiera-base-plus",
        description: "SAM 2.1 Hiera-B+ (81M)",
        hf_repo: "facebook/sam2.1-hiera-base-plus",
        hf_file: "sam2.1_hiera_base_plus.pt",
        config: || ModelConfig::Sam2(Sam2Config::sam21_base_plus()),
    },
    RegistryEntry {
        name: "sam2.1-hiera-large",
        description: "SAM 2.1 Hiera-L (224M)",
        hf_repo: "facebook/sam2.1-hiera-large",
        hf_file: "sam2.1_hiera_large.pt",
        config: || ModelConfig::Sam2(Sam2Config::sam21_large()),
    },
];

pub fn lookup(name: &str) -> Result<&'static RegistryEntry> {
    REGISTRY
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| ModelError::UnknownName {
            name: name.to_string(),
            known: REGISTRY
                .iter()
                .map(|e| e.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The registered name whose configuration equals `config`, if any.
pub fn name_of(config: &ModelConfig) -> Option<&'static str> {
    REGISTRY
        .iter()
        .find(|e| (e.config)() == *config)
        .map(|e| e.name)
}

/// Decide the configuration of a checkpoint: its own metadata if it carries one, else derived
/// from its keys and shapes.
pub fn detect(ck: &Checkpoint) -> Result<ModelConfig> {
    if let Some(json) = ck.metadata.get(CONFIG_METADATA_KEY) {
        return serde_json::from_str(json).map_err(|e| ModelError::UnknownModel {
            path: ck.path.clone(),
            message: format!("invalid '{CONFIG_METADATA_KEY}' metadata: {e}"),
        });
    }
    let unknown = |message: String| ModelError::UnknownModel {
        path: ck.path.clone(),
        message,
    };
    if ck.contains("image_encoder.trunk.patch_embed.proj.weight") {
        return detect_sam2(ck).map(ModelConfig::Sam2).map_err(unknown);
    }
    let encoder = if ck.contains("image_encoder.patch_embed.proj.weight")
        && ck.contains("image_encoder.blocks.0.attn.qkv.weight")
    {
        ImageEncoderConfig::Vit(derive_vit(ck).map_err(unknown)?)
    } else if ck.contains("image_encoder.layers.0.blocks.0.conv1.c.weight") {
        ImageEncoderConfig::TinyVit(derive_tiny_vit(ck).map_err(unknown)?)
    } else {
        let sample: Vec<_> = ck.tensors.keys().take(5).cloned().collect();
        return Err(unknown(format!(
            "not a SAM / MobileSAM state dict (no image_encoder.* keys of a known encoder; first keys: {})",
            sample.join(", ")
        )));
    };
    let img = encoder.img_size();
    let (prompt_encoder, mask_decoder) = derive_heads(ck, img).map_err(unknown)?;
    Ok(ModelConfig::Sam(SamConfig {
        image_encoder: encoder,
        prompt_encoder,
        mask_decoder,
        pixel_mean: SAM_PIXEL_MEAN,
        pixel_std: SAM_PIXEL_STD,
    }))
}

fn dims(ck: &Checkpoint, key: &str, rank: usize) -> std::result::Result<Vec<usize>, String> {
    match ck.shape(key) {
        Some(s) if s.len() == rank => Ok(s.to_vec()),
        Some(s) => Err(format!("'{key}' has shape {s:?}, expected rank {rank}")),
        None => Err(format!("missing '{key}'")),
    }
}

fn derive_vit(ck: &Checkpoint) -> std::result::Result<ImageEncoderViTConfig, String> {
    let p = "image_encoder";
    let pe = dims(ck, &format!("{p}.patch_embed.proj.weight"), 4)?;
    let (embed_dim, in_chans, patch) = (pe[0], pe[1], pe[2]);
    let depth = ck.count_indexed(&format!("{p}.blocks."), ".attn.qkv.weight");
    let img_size = match ck.shape(&format!("{p}.pos_embed")) {
        Some([1, g, _, _]) => g * patch,
        _ => 1024,
    };
    let grid = img_size / patch;
    let use_rel_pos = ck.contains(&format!("{p}.blocks.0.attn.rel_pos_h"));
    let (num_heads, window_size, global) = if use_rel_pos {
        let mut head_dim = 0;
        let mut window = 0;
        let mut global = Vec::new();
        for i in 0..depth {
            let r = dims(ck, &format!("{p}.blocks.{i}.attn.rel_pos_h"), 2)?;
            head_dim = r[1];
            let size = r[0].div_ceil(2);
            if size == grid {
                global.push(i);
            } else {
                window = size;
            }
        }
        (embed_dim / head_dim.max(1), window, global)
    } else {
        let official = match embed_dim {
            768 => ImageEncoderViTConfig::vit_b(),
            1024 => ImageEncoderViTConfig::vit_l(),
            1280 => ImageEncoderViTConfig::vit_h(),
            _ => return Err("ViT without relative positions: number of heads and window layout cannot be derived; pass a config".into()),
        };
        (
            official.num_heads,
            official.window_size,
            official.global_attn_indexes,
        )
    };
    let lin1 = dims(ck, &format!("{p}.blocks.0.mlp.lin1.weight"), 2)?;
    let neck = dims(ck, &format!("{p}.neck.0.weight"), 4)?;
    Ok(ImageEncoderViTConfig {
        img_size,
        patch_size: patch,
        in_chans,
        embed_dim,
        depth,
        num_heads,
        mlp_ratio: lin1[0] as f64 / embed_dim as f64,
        out_chans: neck[0],
        qkv_bias: ck.contains(&format!("{p}.blocks.0.attn.qkv.bias")),
        use_abs_pos: ck.contains(&format!("{p}.pos_embed")),
        use_rel_pos,
        window_size,
        global_attn_indexes: global,
        norm_eps: 1e-6,
    })
}

fn derive_tiny_vit(ck: &Checkpoint) -> std::result::Result<TinyViTConfig, String> {
    let p = "image_encoder";
    let n = (0..)
        .take_while(|i| {
            ck.contains(&format!("{p}.layers.{i}.blocks.0.conv1.c.weight"))
                || ck.contains(&format!("{p}.layers.{i}.blocks.0.attn.qkv.weight"))
        })
        .count();
    let mut embed_dims = Vec::new();
    let mut depths = Vec::new();
    let mut num_heads = Vec::new();
    let mut window_sizes = Vec::new();
    let conv1 = dims(ck, &format!("{p}.layers.0.blocks.0.conv1.c.weight"), 4)?;
    embed_dims.push(conv1[1]);
    depths.push(ck.count_indexed(&format!("{p}.layers.0.blocks."), ".conv1.c.weight"));
    num_heads.push(1);
    window_sizes.push(7);
    let mut mlp_ratio = 4.0;
    let mut local_conv_size = 3;
    for i in 1..n {
        let qkv = dims(ck, &format!("{p}.layers.{i}.blocks.0.attn.qkv.weight"), 2)?;
        let ab = dims(
            ck,
            &format!("{p}.layers.{i}.blocks.0.attn.attention_biases"),
            2,
        )?;
        let fc1 = dims(ck, &format!("{p}.layers.{i}.blocks.0.mlp.fc1.weight"), 2)?;
        let lc = dims(
            ck,
            &format!("{p}.layers.{i}.blocks.0.local_conv.c.weight"),
            4,
        )?;
        embed_dims.push(qkv[1]);
        depths.push(ck.count_indexed(&format!("{p}.layers.{i}.blocks."), ".attn.qkv.weight"));
        num_heads.push(ab[0]);
        let ws = (ab[1] as f64).sqrt().round() as usize;
        if ws * ws != ab[1] {
            return Err(format!(
                "layers.{i} attention_biases {ab:?} is not a square window"
            ));
        }
        window_sizes.push(ws);
        mlp_ratio = fc1[0] as f64 / qkv[1] as f64;
        local_conv_size = lc[2];
    }
    let seq0 = dims(ck, &format!("{p}.patch_embed.seq.0.c.weight"), 4)?;
    let neck = dims(ck, &format!("{p}.neck.0.weight"), 4)?;
    Ok(TinyViTConfig {
        img_size: 1024,
        in_chans: seq0[1],
        mbconv_expand_ratio: conv1[0] as f64 / conv1[1] as f64,
        embed_dims,
        depths,
        num_heads,
        window_sizes,
        mlp_ratio,
        local_conv_size,
        out_chans: neck[0],
    })
}

fn derive_heads(
    ck: &Checkpoint,
    img_size: usize,
) -> std::result::Result<(PromptEncoderConfig, MaskDecoderConfig), String> {
    let emb = dims(ck, "prompt_encoder.not_a_point_embed.weight", 2)?;
    let m3 = dims(ck, "prompt_encoder.mask_downscaling.3.weight", 4)?;
    let g = img_size / 16;
    let prompt = PromptEncoderConfig {
        embed_dim: emb[1],
        image_embedding_size: [g, g],
        input_image_size: [img_size, img_size],
        mask_in_chans: m3[0],
    };
    let d = dims(ck, "mask_decoder.iou_token.weight", 2)?[1];
    let depth = ck.count_indexed(
        "mask_decoder.transformer.layers.",
        ".self_attn.q_proj.weight",
    );
    let mlp = dims(ck, "mask_decoder.transformer.layers.0.mlp.lin1.weight", 2)?;
    let cross = dims(
        ck,
        "mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight",
        2,
    )?;
    let tokens = dims(ck, "mask_decoder.mask_tokens.weight", 2)?[0];
    let iou_depth = ck.count_indexed("mask_decoder.iou_prediction_head.layers.", ".weight");
    let iou_hidden = dims(ck, "mask_decoder.iou_prediction_head.layers.0.weight", 2)?[0];
    let decoder = MaskDecoderConfig {
        transformer_dim: d,
        transformer: TwoWayTransformerConfig {
            depth,
            embedding_dim: d,
            // Not recoverable from shapes: every official model uses 8 heads; other
            // configurations must carry their config in the checkpoint metadata.
            num_heads: 8,
            mlp_dim: mlp[0],
            attention_downsample_rate: d / cross[0].max(1),
            sam2_mlp_keys: false,
        },
        num_multimask_outputs: tokens.saturating_sub(1),
        iou_head_depth: iou_depth,
        iou_head_hidden_dim: iou_hidden,
        sam2: Default::default(),
    };
    Ok((prompt, decoder))
}

/// SAM 2 variants differ in the trunk's width and stage depths (which the keys show) and in
/// head counts / global blocks (which they do not): match the official configurations.
fn detect_sam2(ck: &Checkpoint) -> std::result::Result<Sam2Config, String> {
    let p = "image_encoder.trunk";
    let pe = dims(ck, &format!("{p}.patch_embed.proj.weight"), 4)?;
    let depth = ck.count_indexed(&format!("{p}.blocks."), ".attn.qkv.weight");
    let mut stages = Vec::new();
    let mut len = 0;
    for i in 0..depth {
        if i > 0 && ck.contains(&format!("{p}.blocks.{i}.proj.weight")) {
            stages.push(len);
            len = 0;
        }
        len += 1;
    }
    stages.push(len);
    let v21 = ck.contains("no_obj_embed_spatial");
    let candidates = if v21 {
        [
            Sam2Config::sam21_tiny(),
            Sam2Config::sam21_small(),
            Sam2Config::sam21_base_plus(),
            Sam2Config::sam21_large(),
        ]
    } else {
        [
            Sam2Config::sam2_tiny(),
            Sam2Config::sam2_small(),
            Sam2Config::sam2_base_plus(),
            Sam2Config::sam2_large(),
        ]
    };
    candidates
        .into_iter()
        .find(|c| c.image_encoder.trunk.embed_dim == pe[0] && c.image_encoder.trunk.stages == stages)
        .ok_or_else(|| {
            format!(
                "SAM 2 checkpoint with trunk width {} and stages {stages:?} matches no official SAM 2{} model; \
                 pass its hyper-parameters with --config",
                pe[0],
                if v21 { ".1" } else { "" }
            )
        })
}
