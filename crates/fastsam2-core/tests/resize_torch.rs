//! `torch_resize_bilinear_aa` against torchvision `Resize` (antialiased
//! bilinear) on float32 CHW tensors.

mod common;

use common::{fixture, manifest, max_abs_diff, read_npy};
use fastsam2_core::resize::{to_tensor_chw, torch_resize_bilinear_aa};

/// Tolerance required by the project (float path).
const TOL: f32 = 1e-5;

fn check(
    case: &serde_json::Value,
    from_u8: bool,
    worst: &mut f32,
    exact: &mut usize,
    total: &mut usize,
) {
    let inp = read_npy(fixture("resize").join(case["input"].as_str().unwrap()));
    let want_npy = read_npy(fixture("resize").join(case["output"].as_str().unwrap()));
    let want = want_npy.f32();
    let (c, ih, iw, src) = if from_u8 {
        let img = inp.rgb();
        let (h, w) = img.hw();
        (3, h, w, to_tensor_chw(&img))
    } else {
        (inp.shape[0], inp.shape[1], inp.shape[2], inp.f32())
    };
    let oh = case["height"].as_u64().unwrap() as usize;
    let ow = case["width"].as_u64().unwrap() as usize;
    assert_eq!(want_npy.shape, vec![c, oh, ow]);
    let got = torch_resize_bilinear_aa(&src, c, ih, iw, oh, ow).expect("resize");
    let (d, at) = max_abs_diff(&got, &want);
    assert!(
        d <= TOL,
        "{} -> {oh}x{ow}: max abs diff {d:e} at {at} (got {}, want {})",
        case["input"],
        got[at],
        want[at]
    );
    *worst = worst.max(d);
    if case.get("note").is_some() {
        // torch's own output is wrong here (output width 1, see resize.rs);
        // the reference is torch on the transposed image, which runs the two
        // passes in the other order, so only the tolerance applies.
        return;
    }
    let ex = got
        .iter()
        .zip(&want)
        .filter(|(a, b)| a.to_bits() == b.to_bits())
        .count();
    if ex != want.len() {
        eprintln!(
            "  {} -> {oh}x{ow}: {ex}/{} bit-identical",
            case["input"],
            want.len()
        );
    }
    *exact += ex;
    *total += want.len();
}

#[test]
fn torch_resize_matches_torchvision_on_u8_images() {
    let m = manifest("resize");
    let cases = m["torchvision"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let (mut worst, mut exact, mut total) = (0f32, 0, 0);
    for case in cases {
        check(case, true, &mut worst, &mut exact, &mut total);
    }
    eprintln!("torchvision u8 cases: max abs diff {worst:e}, {exact}/{total} bit-identical");
    assert!(worst < 1e-6, "worst {worst:e}");
    if common::fixtures_from_fma_torch() {
        assert_eq!(exact, total, "not bit-identical to torch");
    }
}

#[test]
fn torch_resize_matches_torchvision_on_arbitrary_floats() {
    let m = manifest("resize");
    let cases = m["torchvision_float"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    let (mut worst, mut exact, mut total) = (0f32, 0, 0);
    for case in cases {
        check(case, false, &mut worst, &mut exact, &mut total);
    }
    eprintln!("torchvision float cases: max abs diff {worst:e}, {exact}/{total} bit-identical");
    assert!(worst < 2e-6, "worst {worst:e}");
    if common::fixtures_from_fma_torch() {
        assert_eq!(exact, total, "not bit-identical to torch");
    }
}

#[test]
fn torch_resize_same_size_is_identity() {
    let src: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32 * 0.37 - 1.0).collect();
    assert_eq!(torch_resize_bilinear_aa(&src, 2, 3, 4, 3, 4).unwrap(), src);
}
