//! Bad input is reported before training starts, with a message naming the problem.

mod common;

use std::path::Path;

use common::{root, shapes_config, vit_micro};
use fastsam2_train::{TrainConfig, TrainError, TrainOptions, Trainer};

fn copy_shapes(dst: &Path, n: usize) {
    let src = root().join("fixtures/train/shapes");
    for sub in ["images", "masks"] {
        std::fs::create_dir_all(dst.join(sub)).unwrap();
    }
    for i in 0..n {
        for (sub, ext) in [("images", "jpg"), ("masks", "png")] {
            let f = format!("shape_{i:02}.{ext}");
            std::fs::copy(src.join(sub).join(&f), dst.join(sub).join(&f)).unwrap();
        }
    }
}

fn folder_config(data: &Path, out: &Path, extra: &str) -> TrainConfig {
    let mut c = shapes_config(out, &vit_micro(), "full", extra);
    c.data.train.images = data.join("images");
    c.data.train.masks = Some(data.join("masks"));
    c
}

fn assert_nothing_written(out: &Path) {
    assert!(
        !out.join("checkpoints").exists(),
        "a checkpoint was written"
    );
}

#[test]
fn missing_mask() {
    let d = tempfile::tempdir().unwrap();
    copy_shapes(d.path(), 4);
    std::fs::remove_file(d.path().join("masks/shape_02.png")).unwrap();
    let out = d.path().join("out");
    let e = Trainer::new(folder_config(d.path(), &out, ""), &TrainOptions::default()).unwrap_err();
    assert!(matches!(e, TrainError::MissingMask { .. }), "{e}");
    let m = e.to_string();
    assert!(
        m.contains("shape_02.jpg") && m.contains("masks/shape_02.png"),
        "{m}"
    );
    assert_nothing_written(&out);
}

#[test]
fn mask_size_mismatch() {
    let d = tempfile::tempdir().unwrap();
    copy_shapes(d.path(), 4);
    fastsam2_core::mask_io::write_binary_mask_png(
        &d.path().join("masks/shape_01.png"),
        64,
        32,
        &vec![true; 64 * 32],
    )
    .unwrap();
    let out = d.path().join("out");
    let e = Trainer::new(folder_config(d.path(), &out, ""), &TrainOptions::default()).unwrap_err();
    assert!(
        matches!(
            e,
            TrainError::MaskSizeMismatch {
                mask_w: 64,
                mask_h: 32,
                image_w: 128,
                image_h: 128,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("shape_01.png is 64x32"), "{e}");
    assert_nothing_written(&out);
}

#[test]
fn empty_mask_is_an_error_unless_skipped() {
    let d = tempfile::tempdir().unwrap();
    copy_shapes(d.path(), 5);
    fastsam2_core::mask_io::write_binary_mask_png(
        &d.path().join("masks/shape_03.png"),
        128,
        128,
        &vec![false; 128 * 128],
    )
    .unwrap();
    let out = d.path().join("out");
    let e = Trainer::new(folder_config(d.path(), &out, ""), &TrainOptions::default()).unwrap_err();
    assert!(matches!(e, TrainError::EmptyMask { .. }), "{e}");
    assert!(e.to_string().contains("shape_03.png is empty"), "{e}");
    let mut c = folder_config(d.path(), &out, "");
    c.data.skip_empty_masks = true;
    let t = Trainer::new(c, &TrainOptions::default()).unwrap();
    assert_eq!(t.data.train.len() + t.data.val.len(), 4);
}

#[test]
fn unknown_strategy() {
    let text =
        std::fs::read_to_string(root().join("crates/fastsam2-train/examples/shapes_lora.toml"))
            .unwrap();
    let bad = text.replace("kind = \"lora\"", "kind = \"qlora\"");
    let e = TrainConfig::from_toml_str(&bad).unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("unknown variant `qlora`") && m.contains("full") && m.contains("lora"),
        "{m}"
    );
}

#[test]
fn config_typo_names_the_key() {
    let d = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string(root().join("crates/fastsam2-train/examples/shapes_lora.toml"))
            .unwrap();
    let bad = text.replace("lr = ", "lerning_rate = ");
    let p = d.path().join("typo.toml");
    std::fs::write(&p, bad).unwrap();
    let e = TrainConfig::from_file(&p).unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("unknown field `lerning_rate`") && m.contains("typo.toml"),
        "{m}"
    );
    assert!(
        m.contains("weight_decay"),
        "the accepted keys are listed: {m}"
    );
}

#[test]
fn invalid_values_and_unsupported_precision() {
    let d = tempfile::tempdir().unwrap();
    let e = TrainConfig::from_toml_str(
        &std::fs::read_to_string(root().join("crates/fastsam2-train/examples/shapes_lora.toml"))
            .unwrap()
            .replace("rank = 4", "rank = 0"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("rank must be at least 1"), "{e}");
    let c = shapes_config(d.path(), &vit_micro(), "full", "");
    let mut c2 = c.clone();
    c2.train.precision = fastsam2_train::config::Precision::Bf16;
    let e = Trainer::new(c2, &TrainOptions::default()).unwrap_err();
    assert!(e.to_string().contains("mixed precision"), "{e}");
    // An existing run is neither overwritten nor resumed silently.
    let opts = TrainOptions {
        stop_after_steps: Some(1),
        ..Default::default()
    };
    Trainer::new(c.clone(), &opts)
        .unwrap()
        .run(&opts, &fastsam2_train::LogObserver)
        .unwrap();
    let e = Trainer::new(c, &TrainOptions::default()).unwrap_err();
    assert!(e.to_string().contains("--resume"), "{e}");
}

#[test]
fn coco_errors_name_the_entry() {
    let d = tempfile::tempdir().unwrap();
    let json = d.path().join("bad.json");
    std::fs::write(
        &json,
        r#"{"images":[{"id":1,"file_name":"voc.jpg","height":375,"width":500}],
            "annotations":[{"id":5,"image_id":1,"category_id":1,"segmentation":[[10,10,20,10,20,20]],"area":50,"bbox":[10,10,10,10],"iscrowd":0},
                           {"id":6,"image_id":1,"category_id":1,"segmentation":{"size":[10,10],"counts":[100]},"area":0,"bbox":[0,0,1,1],"iscrowd":0}],
            "categories":[{"id":1,"name":"x"}]}"#,
    )
    .unwrap();
    let src = fastsam2_train::config::SourceSection {
        images: root().join("fixtures/train/coco/images"),
        masks: None,
        coco: Some(json),
    };
    let e = fastsam2_train::data::load_source(&src, false).unwrap_err();
    assert!(
        e.to_string().contains("annotations[1]") || e.to_string().contains("id 6"),
        "{e}"
    );
}
