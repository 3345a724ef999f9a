//! Export: official key names, LoRA merged, loadable by the inference loader /
//! `fastsam2 segment`, same predictions as the model that was trained.

mod common;

use burn::module::Module;
use burn::tensor::Device;
use common::{root, shapes_config, vit_micro};
use fastsam2_core::image_io::load_rgb;
use fastsam2_core::prompt::{BoxXyxy, Prompt};
use fastsam2_models::checkpoint::Checkpoint;
use fastsam2_models::loader::{LoadedModel, Network, load_checkpoint};
use fastsam2_models::registry::ModelConfig;
use fastsam2_predict::ImagePredictor;
use fastsam2_train::{TrainOptions, Trainer, load_exported};

fn predict(model: LoadedModel) -> (Vec<f32>, Vec<f32>) {
    let img = load_rgb(root().join("fixtures/train/shapes/images/shape_05.jpg")).unwrap();
    let mut p = ImagePredictor::new(model, Device::flex());
    p.set_image(&img).unwrap();
    let r = p
        .predict(&Prompt::bbox(BoxXyxy::new(30.0, 25.0, 100.0, 110.0)), false)
        .unwrap();
    (r.low_res_logits, r.scores)
}

fn trained(strategy: &str, extra: &str) -> (tempfile::TempDir, Trainer) {
    trained_with(strategy, extra, "5e-3", 3)
}

fn trained_with(
    strategy: &str,
    extra: &str,
    lr: &str,
    steps: usize,
) -> (tempfile::TempDir, Trainer) {
    let d = tempfile::tempdir().unwrap();
    let cfg = shapes_config(
        d.path(),
        &vit_micro(),
        strategy,
        &format!("{extra}\n[optim]\nlr = {lr}\n"),
    );
    let mut t = Trainer::new(cfg, &TrainOptions::default()).unwrap();
    for _ in 0..steps {
        t.train_step().unwrap();
    }
    (d, t)
}

fn in_memory(t: &Trainer) -> LoadedModel {
    LoadedModel {
        name: "trained".into(),
        config: ModelConfig::Sam(t.model.config.clone()),
        network: Network::Sam(t.model.sam.valid()),
        source: Default::default(),
    }
}

/// The base micro model at the training size (no fine-tuning).
fn load_base_at_size(t: &Trainer) -> LoadedModel {
    let m = fastsam2_train::model::read_base(&t.cfg.model).unwrap();
    let (ck, config, _) = m;
    let mut sam = config.init(&Device::flex());
    fastsam2_models::checkpoint::apply_checkpoint(&mut sam, &ck, "base", &[]).unwrap();
    LoadedModel {
        name: "base".into(),
        config: ModelConfig::Sam(config),
        network: Network::Sam(sam),
        source: Default::default(),
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn lora_export_is_merged_and_loads_with_the_inference_loader() {
    let (d, t) = trained_with(
        "lora",
        "[strategy.lora]\ntargets = [\"qkv\", \"proj\", \"lin1\", \"lin2\"]\n",
        "3e-2",
        6,
    );
    let path = d.path().join("lora.safetensors");
    t.model.export(&path, &serde_json::json!({})).unwrap();
    let ck = Checkpoint::read(&path).unwrap();
    assert!(
        ck.tensors.keys().all(|k| !k.contains("lora")),
        "LoRA factors left in the export"
    );
    assert!(ck.contains("image_encoder.blocks.0.attn.qkv.weight"));
    // The official loader (what `fastsam2 segment --checkpoint` uses) accepts it.
    let loaded = load_checkpoint(&path, None, None, &Device::flex()).unwrap();
    let (a, sa) = predict(loaded);
    let (b, sb) = predict(in_memory(&t));
    let d1 = max_diff(&a, &b);
    assert!(d1 < 1e-3, "merged vs unmerged logits differ by {d1}");
    assert!(max_diff(&sa, &sb) < 1e-4);
    // The branches changed the function (so the comparison above is not vacuous), ...
    let (base_pred, _) = predict(load_base_at_size(&t));
    let moved = max_diff(&base_pred, &b);
    assert!(
        moved > 1e-2,
        "LoRA did not change the predictions ({moved})"
    );
    // ... and the merged weights differ from the base.
    let base = Checkpoint::read(vit_micro()).unwrap();
    let w = &ck.tensors["image_encoder.blocks.0.attn.qkv.weight"].data;
    assert_ne!(
        w,
        &base.tensors["image_encoder.blocks.0.attn.qkv.weight"].data
    );
}

#[test]
fn full_export_round_trips_exactly() {
    let (d, t) = trained("full", "");
    let path = d.path().join("full.safetensors");
    t.model
        .export(&path, &serde_json::json!({"note": "test"}))
        .unwrap();
    let loaded = load_checkpoint(&path, None, None, &Device::flex()).unwrap();
    assert_eq!(loaded.name, "custom");
    let (a, _) = predict(loaded);
    let (b, _) = predict(in_memory(&t));
    assert!(max_diff(&a, &b) < 1e-5);
}

#[test]
fn adapter_export_loads_with_its_structure() {
    let (d, t) = trained("adapter", "");
    let path = d.path().join("adapter.safetensors");
    t.model.export(&path, &serde_json::json!({})).unwrap();
    let ck = Checkpoint::read(&path).unwrap();
    assert!(ck.contains("image_encoder.blocks.0.adapter_attn.down.weight"));
    assert!(
        ck.metadata
            .contains_key(fastsam2_train::model::ADAPTER_METADATA_KEY)
    );
    let loaded = load_exported(&path, &Device::flex()).unwrap();
    let (a, _) = predict(loaded);
    let (b, _) = predict(in_memory(&t));
    assert!(max_diff(&a, &b) < 1e-5);
}
