//! Full preprocessing pipelines against the official Python code:
//! SAM v1 `SamPredictor.set_image`, SAM 2 `_load_img_as_tensor` +
//! `load_video_frames` normalisation, SAM 2 `SAM2Transforms`.

mod common;

use common::{crc32_f32, fixture, manifest, max_abs_diff, read_npy};
use fastsam2_core::image_io::load_rgb;
use fastsam2_core::resize::{
    Preprocessed, sam_v1_preprocess, sam2_image_preprocess, sam2_video_frame_preprocess,
};

fn get_usize(v: &serde_json::Value, k: &str) -> usize {
    v[k].as_u64().unwrap_or_else(|| panic!("missing {k}")) as usize
}

/// Checks a 1024 summary: shape, sampled values, per-channel sums and the
/// CRC32 of the float32 bytes.  Returns whether the CRC matched.
fn check_summary(p: &Preprocessed, s: &serde_json::Value, tol: f32) -> bool {
    let shape: Vec<usize> = s["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(shape, vec![3, p.size, p.size]);
    assert_eq!(p.data.len(), 3 * p.size * p.size);
    let plane = p.size * p.size;
    let samples = s["samples"].as_array().unwrap();
    assert!(samples.len() >= 500);
    for smp in samples {
        let a = smp.as_array().unwrap();
        let (c, y, x) = (
            a[0].as_u64().unwrap() as usize,
            a[1].as_u64().unwrap() as usize,
            a[2].as_u64().unwrap() as usize,
        );
        let want = a[3].as_f64().unwrap() as f32;
        let got = p.data[c * plane + y * p.size + x];
        assert!(
            (got - want).abs() <= tol,
            "({c},{y},{x}): got {got}, want {want}"
        );
    }
    for (c, want) in s["channel_sums"].as_array().unwrap().iter().enumerate() {
        let got: f64 = p.data[c * plane..(c + 1) * plane]
            .iter()
            .map(|&v| f64::from(v))
            .sum();
        let want = want.as_f64().unwrap();
        assert!(
            (got - want).abs() <= f64::from(tol) * plane as f64 + 1e-6 * want.abs(),
            "channel {c}: sum {got} vs {want}"
        );
    }
    u64::from(crc32_f32(&p.data)) == s["crc32"].as_u64().unwrap()
}

fn check_full(p: &Preprocessed, file: &str, tol: f32) -> (f32, usize) {
    let want = read_npy(fixture("preprocess").join(file));
    assert_eq!(want.shape, vec![3, p.size, p.size], "{file}");
    let want = want.f32();
    let (d, at) = max_abs_diff(&p.data, &want);
    assert!(d <= tol, "{file}: max abs diff {d:e} at {at}");
    let exact = p
        .data
        .iter()
        .zip(&want)
        .filter(|(a, b)| a.to_bits() == b.to_bits())
        .count();
    (d, exact)
}

#[test]
fn sam_v1_matches_sam_predictor_bit_exactly() {
    let m = manifest("preprocess");
    let cases = m["sam_v1"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let img = load_rgb(fixture("preprocess").join(case["file"].as_str().unwrap())).unwrap();
        let target = get_usize(case, "target");
        let p = sam_v1_preprocess(&img, target).unwrap();
        let isz = case["input_size"].as_array().unwrap();
        assert_eq!(
            p.resized_hw,
            (
                isz[0].as_u64().unwrap() as usize,
                isz[1].as_u64().unwrap() as usize
            ),
            "{}",
            case["file"]
        );
        assert_eq!(p.original_hw, img.hw());
        // Padding is exactly zero.
        let plane = target * target;
        for c in 0..3 {
            for y in 0..target {
                for x in 0..target {
                    if y >= p.resized_hw.0 || x >= p.resized_hw.1 {
                        assert_eq!(p.data[c * plane + y * target + x], 0.0);
                    }
                }
            }
        }
        if let Some(full) = case["full"].as_str() {
            let (_, exact) = check_full(&p, full, 0.0);
            assert_eq!(exact, p.data.len(), "{full}: not bit-identical");
        } else {
            // uint8 PIL resize + float32 (x - mean) / std: bit-identical.
            assert!(
                check_summary(&p, case, 0.0),
                "{}: CRC32 mismatch",
                case["file"]
            );
        }
    }
}

#[test]
fn sam2_video_frames_match_bit_exactly() {
    let m = manifest("preprocess");
    let cases = m["sam2_video"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let img = load_rgb(fixture("preprocess").join(case["file"].as_str().unwrap())).unwrap();
        let target = get_usize(case, "target");
        let p = sam2_video_frame_preprocess(&img, target).unwrap();
        assert_eq!(p.resized_hw, (target, target));
        let vhw = case["video_hw"].as_array().unwrap();
        assert_eq!(
            p.original_hw,
            (
                vhw[0].as_u64().unwrap() as usize,
                vhw[1].as_u64().unwrap() as usize
            )
        );
        if let Some(full) = case["full"].as_str() {
            let (_, exact) = check_full(&p, full, 0.0);
            assert_eq!(exact, p.data.len(), "{full}: not bit-identical");
        } else {
            assert!(
                check_summary(&p, case, 0.0),
                "{}: CRC32 mismatch",
                case["file"]
            );
        }
    }
}

#[test]
fn sam2_image_predictor_matches_sam2_transforms() {
    let m = manifest("preprocess");
    let cases = m["sam2_image"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let img = load_rgb(fixture("preprocess").join(case["file"].as_str().unwrap())).unwrap();
        let target = get_usize(case, "target");
        let p = sam2_image_preprocess(&img, target).unwrap();
        // With fixtures from an FMA build of torch (see resize.rs) the result
        // is bit-identical; otherwise it must still be within 1e-5.
        let exact_expected = common::fixtures_from_fma_torch();
        if let Some(full) = case["full"].as_str() {
            let (d, exact) = check_full(&p, full, 1e-5);
            if exact_expected {
                assert_eq!(exact, p.data.len(), "{full}: max abs diff {d:e}");
            }
        } else {
            let crc_ok = check_summary(&p, case, 1e-5);
            if exact_expected {
                assert!(crc_ok, "{}: CRC32 mismatch", case["file"]);
            }
        }
    }
}
