//! SAM 2.1 micro: image-encoder parity with the official `sam2` package (frame 0 of the
//! committed 320x240 video, resized by sam2's loader = PIL bicubic to 1024x1024).

use std::path::PathBuf;

use burn::tensor::{Device, Tensor};
use fastsam2_core::image_io::load_rgb;
use fastsam2_core::resize::sam2_video_frame_preprocess;
use fastsam2_models::checkpoint::Checkpoint;
use fastsam2_models::common::{tensor_from_vec, tensor_to_vec};
use fastsam2_models::loader::{Network, load_checkpoint};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn sub(t: &Tensor<4>, s: usize) -> Vec<f32> {
    let [b, c, h, w] = t.dims();
    let v = tensor_to_vec(t.clone());
    let mut out = Vec::new();
    for i in 0..b * c {
        for y in (0..h).step_by(s) {
            for x in (0..w).step_by(s) {
                out.push(v[(i * h + y) * w + x]);
            }
        }
    }
    out
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn sam2_micro_image_encoder_matches_official() {
    let device = Device::flex();
    let dir = fixtures().join("sam2.1_hiera_micro");
    let model = load_checkpoint(&dir.join("weights.safetensors"), None, None, &device).unwrap();
    let Network::Sam2(sam2) = &model.network else {
        panic!("not a SAM 2 model")
    };
    let refs = Checkpoint::read(dir.join("refs.safetensors")).unwrap();
    let s: usize = refs.metadata["sub"].parse().unwrap();
    let img = load_rgb(fixtures().join("video/frames/00000.png")).unwrap();
    let pre = sam2_video_frame_preprocess(&img, 1024).unwrap();
    let x = tensor_from_vec(pre.data, [1, 3, 1024, 1024], &device);
    let mut levels = Vec::new();
    let out = sam2
        .image_encoder
        .forward_with(x, |_, t| levels.push(t.clone()));
    for (i, l) in levels.iter().enumerate() {
        let d = max_abs_diff(
            &sub(l, s),
            &refs.tensors[&format!("frame0/trunk_level{i}_sub")].data,
        );
        println!("trunk level {i}: {d:e}");
        assert!(d < 1e-3, "trunk level {i}: {d}");
    }
    let feats = sam2.frame_features(out.clone());
    for (i, t) in [&feats.high_res.0, &feats.high_res.1, &feats.vision_feat]
        .iter()
        .enumerate()
    {
        let d = max_abs_diff(
            &sub(t, s),
            &refs.tensors[&format!("frame0/backbone_fpn{i}_sub")].data,
        );
        println!("backbone_fpn{i}: {d:e}");
        assert!(d < 1e-3, "backbone_fpn{i}: {d}");
    }
    let d = max_abs_diff(
        &sub(&feats.vision_pos, s),
        &refs.tensors["frame0/vision_pos_enc2_sub"].data,
    );
    println!("vision_pos_enc2: {d:e}");
    assert!(d < 1e-5);
}
