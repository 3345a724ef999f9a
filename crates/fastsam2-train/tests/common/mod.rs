#![allow(dead_code)]
//! Shared helpers: configs on the committed fixtures.

use std::path::{Path, PathBuf};

use fastsam2_train::TrainConfig;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn vit_micro() -> PathBuf {
    root().join("fixtures/sam_vit_micro/weights.safetensors")
}

pub fn mobilesam_micro() -> PathBuf {
    root().join("fixtures/mobilesam_micro/weights.safetensors")
}

/// A config on the shapes fixture (image + mask folders).
pub fn shapes_config(out: &Path, checkpoint: &Path, strategy: &str, extra: &str) -> TrainConfig {
    let r = root();
    let text = format!(
        r#"
output_dir = "{out}"
seed = 7

[model]
checkpoint = "{ck}"
image_size = 256

[strategy]
kind = "{strategy}"

[data]
val_fraction = 0.25
[data.train]
images = "{r}/fixtures/train/shapes/images"
masks = "{r}/fixtures/train/shapes/masks"

[train]
max_steps = 20
batch_size = 2

{extra}
"#,
        out = out.display(),
        ck = checkpoint.display(),
        r = r.display(),
    );
    TrainConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Every float parameter: path, trainable, values.
pub fn params(sam: &fastsam2_models::sam::Sam) -> Vec<(String, bool, Vec<f32>)> {
    fastsam2_train::model::snapshot(sam)
        .into_iter()
        .map(|(i, v)| (i.path, i.trainable, v))
        .collect()
}
