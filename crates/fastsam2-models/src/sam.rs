//! `Sam`: image encoder + prompt encoder + mask decoder (`segment_anything/modeling/sam.py`).

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::mask_decoder::{MaskDecoder, MaskDecoderConfig};
use crate::prompt_encoder::{PromptEncoder, PromptEncoderConfig};
use crate::tiny_vit::{TinyViT, TinyViTConfig};
use crate::vit::{ImageEncoderViT, ImageEncoderViTConfig};

/// ImageNet statistics in 0..255 (SAM v1 preprocessing).
pub const SAM_PIXEL_MEAN: [f32; 3] = [123.675, 116.28, 103.53];
pub const SAM_PIXEL_STD: [f32; 3] = [58.395, 57.12, 57.375];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageEncoderConfig {
    Vit(ImageEncoderViTConfig),
    TinyVit(TinyViTConfig),
}

impl ImageEncoderConfig {
    pub fn img_size(&self) -> usize {
        match self {
            ImageEncoderConfig::Vit(c) => c.img_size,
            ImageEncoderConfig::TinyVit(c) => c.img_size,
        }
    }
}

/// Full hyper-parameters of a SAM v1 family model (SAM ViT-B/L/H, MobileSAM, micro configs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamConfig {
    pub image_encoder: ImageEncoderConfig,
    pub prompt_encoder: PromptEncoderConfig,
    pub mask_decoder: MaskDecoderConfig,
    pub pixel_mean: [f32; 3],
    pub pixel_std: [f32; 3],
}

impl SamConfig {
    fn with_encoder(image_encoder: ImageEncoderConfig) -> Self {
        Self {
            image_encoder,
            prompt_encoder: PromptEncoderConfig::sam(),
            mask_decoder: MaskDecoderConfig::sam(),
            pixel_mean: SAM_PIXEL_MEAN,
            pixel_std: SAM_PIXEL_STD,
        }
    }
    pub fn vit_b() -> Self {
        Self::with_encoder(ImageEncoderConfig::Vit(ImageEncoderViTConfig::vit_b()))
    }
    pub fn vit_l() -> Self {
        Self::with_encoder(ImageEncoderConfig::Vit(ImageEncoderViTConfig::vit_l()))
    }
    pub fn vit_h() -> Self {
        Self::with_encoder(ImageEncoderConfig::Vit(ImageEncoderViTConfig::vit_h()))
    }
    pub fn mobile_sam() -> Self {
        Self::with_encoder(ImageEncoderConfig::TinyVit(TinyViTConfig::mobile_sam()))
    }

    pub fn init(&self, device: &Device) -> Sam {
        Sam {
            image_encoder: match &self.image_encoder {
                ImageEncoderConfig::Vit(c) => ImageEncoder::Vit(c.init(device)),
                ImageEncoderConfig::TinyVit(c) => ImageEncoder::TinyVit(c.init(device)),
            },
            prompt_encoder: self.prompt_encoder.init(device),
            mask_decoder: self.mask_decoder.init(device),
        }
    }
}

#[allow(clippy::large_enum_variant)] // one per model, never in collections
#[derive(Module, Debug)]
pub enum ImageEncoder {
    Vit(ImageEncoderViT),
    TinyVit(TinyViT),
}

impl ImageEncoder {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            ImageEncoder::Vit(e) => e.forward(x),
            ImageEncoder::TinyVit(e) => e.forward(x),
        }
    }
}

/// A SAM v1 family model. Field names are the state-dict prefixes.
#[derive(Module, Debug)]
pub struct Sam {
    pub image_encoder: ImageEncoder,
    pub prompt_encoder: PromptEncoder,
    pub mask_decoder: MaskDecoder,
}
