//! End-to-end `ImagePredictor` parity with the official `SamPredictor` (preprocessing, encoder,
//! prompts in original pixels, decoder, post-processing) on the committed micro fixtures:
//! a 1024x1024 image (no resize) and a 451x300 photo (PIL-bilinear resize, crop, upsample).
//! `FASTSAM2_FULL_REFS=DIR` runs the same checks on full-size references (ignored tests).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use fastsam2_core::image_io::{RgbImage, load_rgb};
use fastsam2_core::prompt::{BoxXyxy, Point, Prompt};
use fastsam2_models::checkpoint::Checkpoint;
use fastsam2_models::loader::load_checkpoint;
use fastsam2_predict::ImagePredictor;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn astronaut_1024() -> RgbImage {
    let a = load_rgb(fixtures().join("images/astronaut.png")).unwrap();
    RgbImage::from_fn(1024, 1024, |x, y| a.get_pixel(x / 2, y / 2).unwrap()).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn subsample(v: &[f32], lead: usize, h: usize, w: usize, s: usize) -> Vec<f32> {
    (0..lead)
        .flat_map(|l| {
            (0..h)
                .step_by(s)
                .flat_map(move |y| (0..w).step_by(s).map(move |x| v[l * h * w + y * w + x]))
        })
        .collect()
}

/// IoU of the binary masks (logit > 0) of two logit buffers.
fn mask_iou(a: &[f32], b: &[f32]) -> f64 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (x, y) in a.iter().zip(b) {
        let (p, q) = (*x > 0.0, *y > 0.0);
        inter += (p && q) as usize;
        union += (p || q) as usize;
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

pub fn prompt_of(case: &serde_json::Value) -> Prompt {
    let f = |v: &serde_json::Value| v.as_f64().unwrap() as f32;
    let points = case["points"]
        .as_array()
        .map(|pts| {
            let labels = case["labels"].as_array().unwrap();
            pts.iter()
                .zip(labels)
                .map(|(p, l)| Point {
                    x: f(&p[0]),
                    y: f(&p[1]),
                    label: l.as_i64().unwrap() as i32,
                })
                .collect()
        })
        .unwrap_or_default();
    let bbox = case["box"]
        .as_array()
        .map(|b| BoxXyxy::new(f(&b[0]), f(&b[1]), f(&b[2]), f(&b[3])));
    Prompt {
        points,
        bbox,
        mask: None,
    }
}

/// Returns the worst (low_res, iou, logits, min mask IoU) over all cases.
fn check(dir: &Path, chelsea_tol: f32) {
    let device = Device::flex();
    let model = load_checkpoint(&dir.join("weights.safetensors"), None, None, &device).unwrap();
    let refs = Checkpoint::read(dir.join("refs.safetensors")).unwrap();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let mut pred = ImagePredictor::new(model, device);
    let mut n = 0;
    for (image, img, tol) in [
        ("square", astronaut_1024(), 1e-3f32),
        (
            "chelsea",
            load_rgb(fixtures().join("images/chelsea.png")).unwrap(),
            chelsea_tol,
        ),
    ] {
        pred.set_image(&img).unwrap();
        for (name, case) in cases["cases"].as_object().unwrap() {
            if case["image"] != image {
                continue;
            }
            n += 1;
            let p = pred
                .predict(&prompt_of(case), case["multimask"].as_bool().unwrap())
                .unwrap();
            let key = |k: &str| &refs.tensors[&format!("{name}/{k}")].data;
            let k = p.num_masks;
            let dl = max_abs_diff(
                &subsample(&p.low_res_logits, k, 256, 256, 4),
                key("low_res_logits_s4"),
            );
            let di = max_abs_diff(&p.scores, key("iou_predictions"));
            let s = case["logits_stride"].as_u64().unwrap() as usize;
            let sub = subsample(&p.logits, k, p.height, p.width, s);
            let dg = max_abs_diff(&sub, key("logits_sub"));
            let iou = mask_iou(&sub, key("logits_sub"));
            println!(
                "{name}: low_res {dl:.2e} iou_pred {di:.2e} logits {dg:.2e} mask IoU {iou:.5}"
            );
            assert!(
                dl <= tol && di <= tol && dg <= tol,
                "{name}: low_res {dl} iou {di} logits {dg} (tol {tol})"
            );
            assert!(iou >= 0.99, "{name}: mask IoU {iou}");
        }
    }
    assert_eq!(n, 16, "expected 16 cases");
}

#[test]
fn sam_vit_micro_end_to_end() {
    check(&fixtures().join("sam_vit_micro"), 1e-3);
}

#[test]
fn mobilesam_micro_end_to_end() {
    check(&fixtures().join("mobilesam_micro"), 1e-3);
}

fn full_dir(tag: &str) -> PathBuf {
    let root = std::env::var("FASTSAM2_FULL_REFS").expect("set FASTSAM2_FULL_REFS to the folder of full-size references (tools/fixtures/make_sam_fixtures.py --out)");
    Path::new(&root).join(tag)
}

#[test]
#[ignore = "full-size references: FASTSAM2_FULL_REFS=DIR"]
fn sam_vit_b_full_end_to_end() {
    check(&full_dir("sam_vit_b"), 1e-3);
}

#[test]
#[ignore = "full-size references: FASTSAM2_FULL_REFS=DIR"]
fn mobilesam_full_end_to_end() {
    check(&full_dir("mobilesam_vit_t"), 1e-3);
}

/// SAM 2.1 micro through `ImagePredictor` against the official `SAM2ImagePredictor`
/// (torchvision resize to 1024x1024, no_mem_embed, boxes as corner points, one-step upsample).
#[test]
fn sam21_micro_image_predictor_matches_official() {
    let device = Device::flex();
    let dir = fixtures().join("sam2.1_hiera_micro");
    let model = load_checkpoint(&dir.join("weights.safetensors"), None, None, &device).unwrap();
    let refs = Checkpoint::read(dir.join("image_refs.safetensors")).unwrap();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("image_cases.json")).unwrap())
            .unwrap();
    let mut pred = ImagePredictor::new(model, device);
    pred.set_image(&load_rgb(fixtures().join("images/chelsea.png")).unwrap())
        .unwrap();
    let mut n = 0;
    for (name, case) in cases["cases"].as_object().unwrap() {
        n += 1;
        let p = pred
            .predict(&prompt_of(case), case["multimask"].as_bool().unwrap())
            .unwrap();
        let key = |k: &str| &refs.tensors[&format!("{name}/{k}")].data;
        let k = p.num_masks;
        let dl = max_abs_diff(
            &subsample(&p.low_res_logits, k, 256, 256, 4),
            key("low_res_logits_s4"),
        );
        let di = max_abs_diff(&p.scores, key("iou_predictions"));
        let sub = subsample(&p.logits, k, p.height, p.width, 4);
        let dg = max_abs_diff(&sub, key("logits_s4"));
        let iou = mask_iou(&sub, key("logits_s4"));
        println!("{name}: low_res {dl:.2e} iou_pred {di:.2e} logits {dg:.2e} mask IoU {iou:.5}");
        assert!(
            dl <= 1e-3 && di <= 1e-3 && dg <= 1e-3,
            "{name}: low_res {dl} iou {di} logits {dg}"
        );
        assert!(iou >= 0.99, "{name}: mask IoU {iou}");
    }
    assert_eq!(n, 8);

    // Several prompts decoded as one batch (the high-res features of the one image broadcast
    // over the prompts) give what each prompt gives alone.
    let prompts: Vec<Prompt> = cases["cases"]
        .as_object()
        .unwrap()
        .values()
        .map(prompt_of)
        .collect();
    for multimask in [false, true] {
        let batch = pred.predict_batch(&prompts, multimask).unwrap();
        assert_eq!(batch.len(), prompts.len());
        for (p, one) in prompts.iter().zip(&batch) {
            let alone = pred.predict(p, multimask).unwrap();
            let d = max_abs_diff(&one.low_res_logits, &alone.low_res_logits);
            let ds = max_abs_diff(&one.scores, &alone.scores);
            assert!(d <= 1e-4 && ds <= 1e-5, "batched vs alone: {d} {ds}");
        }
    }
}
