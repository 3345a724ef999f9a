//! Module-level parity with the official `segment_anything` / `mobile_sam` code on the
//! committed micro fixtures (1024x1024 image, no resizing): image embeddings, sparse prompt
//! embeddings, low-res logits and IoU predictions of every case.

use std::path::PathBuf;

use burn::tensor::{Device, Tensor};
use fastsam2_models::checkpoint::Checkpoint;
use fastsam2_models::common::{tensor_from_vec, tensor_to_vec};
use fastsam2_models::loader::{Network, load_checkpoint};
use fastsam2_models::prompt_encoder::PointInput;
use fastsam2_models::sam::Sam;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The harness's 1024x1024 test image: astronaut repeated 2x (nearest), normalised.
fn square_input(device: &Device) -> Tensor<4> {
    let img = image::open(fixtures().join("images/astronaut.png"))
        .unwrap()
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mean = [123.675f32, 116.28, 103.53];
    let std = [58.395f32, 57.12, 57.375];
    let mut data = vec![0f32; 3 * 4 * w * h];
    for y in 0..2 * h {
        for x in 0..2 * w {
            let p = img.get_pixel((x / 2) as u32, (y / 2) as u32);
            for c in 0..3 {
                data[c * 4 * w * h + y * 2 * w + x] = (p[c] as f32 - mean[c]) / std[c];
            }
        }
    }
    tensor_from_vec(data, [1, 3, 2 * h, 2 * w], device)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Every `stride`-th element along the last two dims of a [.., H, W] buffer.
fn subsample(v: &[f32], lead: usize, h: usize, w: usize, stride: usize) -> Vec<f32> {
    let mut out = Vec::new();
    for l in 0..lead {
        for y in (0..h).step_by(stride) {
            for x in (0..w).step_by(stride) {
                out.push(v[l * h * w + y * w + x]);
            }
        }
    }
    out
}

fn run(tag: &str) {
    let device = Device::flex();
    let dir = fixtures().join(tag);
    let model = load_checkpoint(&dir.join("weights.safetensors"), None, None, &device).unwrap();
    let Network::Sam(sam) = &model.network else {
        panic!("not a SAM model")
    };
    let refs = Checkpoint::read(dir.join("refs.safetensors")).unwrap();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();

    let emb = sam.image_encoder.forward(square_input(&device));
    let [_, c, h, w] = emb.dims();
    let got = subsample(&tensor_to_vec(emb.clone()), c, h, w, 4);
    let d = max_abs_diff(&got, &refs.tensors["square/image_embeddings_s4"].data);
    println!("{tag} image_embeddings max|diff| = {d:e}");
    assert!(d <= 1e-3, "{tag}: image embeddings differ by {d}");

    let dense_pe = sam.prompt_encoder.get_dense_pe();
    let mut n = 0;
    for (name, case) in cases["cases"].as_object().unwrap() {
        if case["image"] != "square" {
            continue;
        }
        n += 1;
        let (sparse, lowres, iou) = predict(sam, &emb, &dense_pe, case, &device);
        let key = |k: &str| &refs.tensors[&format!("{name}/{k}")].data;
        let ds = max_abs_diff(&tensor_to_vec(sparse), key("sparse_embeddings"));
        let [_, k, lh, lw] = lowres.dims();
        let dl = max_abs_diff(
            &subsample(&tensor_to_vec(lowres), k, lh, lw, 4),
            key("low_res_logits_s4"),
        );
        let di = max_abs_diff(&tensor_to_vec(iou), key("iou_predictions"));
        println!("{tag} {name}: sparse {ds:e} low_res {dl:e} iou {di:e}");
        assert!(
            ds <= 1e-4 && dl <= 1e-3 && di <= 1e-3,
            "{tag} {name}: sparse {ds} low_res {dl} iou {di}"
        );
    }
    assert_eq!(n, 8, "expected 8 square cases");
}

fn predict(
    sam: &Sam,
    emb: &Tensor<4>,
    dense_pe: &Tensor<4>,
    case: &serde_json::Value,
    device: &Device,
) -> (Tensor<3>, Tensor<4>, Tensor<2>) {
    let points = case["points"].as_array().map(|pts| {
        let coords: Vec<f32> = pts
            .iter()
            .flat_map(|p| [p[0].as_f64().unwrap() as f32, p[1].as_f64().unwrap() as f32])
            .collect();
        let labels: Vec<i32> = case["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_i64().unwrap() as i32)
            .collect();
        PointInput {
            coords: tensor_from_vec(coords, [1, pts.len(), 2], device),
            labels,
        }
    });
    let boxes = case["box"].as_array().map(|b| {
        let v: Vec<f32> = b.iter().map(|x| x.as_f64().unwrap() as f32).collect();
        tensor_from_vec(v, [1, 4], device)
    });
    let (sparse, dense) = sam.prompt_encoder.forward(points.as_ref(), boxes, None);
    let out = sam.mask_decoder.forward(
        emb.clone(),
        dense_pe.clone(),
        sparse.clone(),
        dense,
        case["multimask"].as_bool().unwrap(),
    );
    let [b, k] = out.iou_pred.dims();
    assert_eq!(b, 1);
    let [_, _, h, w] = out.masks.dims();
    (sparse, out.masks.reshape([1, k, h, w]), out.iou_pred)
}

#[test]
fn sam_vit_micro_matches_official() {
    run("sam_vit_micro");
}

#[test]
fn mobilesam_micro_matches_official() {
    run("mobilesam_micro");
}

/// Model-type detection from keys and shapes alone recovers every hyper-parameter that
/// shapes determine (the fixtures also carry their exact config in the metadata).
#[test]
fn detection_from_shapes_recovers_the_config() {
    use fastsam2_models::registry::{ModelConfig, detect};
    for tag in ["sam_vit_micro", "mobilesam_micro"] {
        let mut ck = Checkpoint::read(fixtures().join(tag).join("weights.safetensors")).unwrap();
        let declared = detect(&ck).unwrap();
        ck.metadata.clear();
        let derived = detect(&ck).unwrap();
        let (ModelConfig::Sam(mut d), ModelConfig::Sam(e)) = (derived, declared) else {
            panic!("{tag}: not SAM configs")
        };
        // The decoder's head count is the one thing shapes cannot tell (official: 8).
        assert_eq!(d.mask_decoder.transformer.num_heads, 8);
        d.mask_decoder.transformer.num_heads = e.mask_decoder.transformer.num_heads;
        assert_eq!(d, e, "{tag}");
    }
}
