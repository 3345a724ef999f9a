//! FastSAM2 models: burn modules mirroring the official PyTorch module trees, so official
//! state dicts load without key remapping; configs; registry; checkpoint loading.

pub mod checkpoint;
pub mod common;
pub mod error;
pub mod fpn_neck;
pub mod hiera;
pub mod kernels;
pub mod mask_decoder;
pub mod memory_attention;
pub mod memory_encoder;
pub mod peft;
pub mod position_encoding;
pub mod prompt_encoder;
pub mod sam;
pub mod sam2;
pub mod tiny_vit;
pub mod two_way_transformer;
pub mod vit;

pub use error::{ModelError, Result};
pub mod loader;
pub mod registry;
