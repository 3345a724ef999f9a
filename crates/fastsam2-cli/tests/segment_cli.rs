//! `fastsam2 segment` end to end: the CLI contract against the official outputs (micro
//! fixtures, resized 451x300 photo) and one-line errors with a non-zero exit on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fastsam2_core::mask_io::{read_binary_mask_png, read_npy, write_npy_f32};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fastsam2(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fastsam2"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run fastsam2")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fastsam2-cli-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn segment_matches_official_cli_outputs() {
    for tag in ["sam_vit_micro", "mobilesam_micro"] {
        let fx = root().join("fixtures").join(tag);
        let cases = json(&fx.join("cases.json"));
        let weights = fx.join("weights.safetensors");
        let image = root().join("fixtures/images/chelsea.png");
        let mut n = 0;
        for (name, case) in cases["cases"].as_object().unwrap() {
            let Some(cli) = case["cli"].as_str() else {
                continue;
            };
            n += 1;
            let out = tmp(&format!("{tag}-{name}"));
            let mut args = vec![
                "segment",
                "--checkpoint",
                weights.to_str().unwrap(),
                "--image",
                image.to_str().unwrap(),
            ];
            let extra: Vec<String> = case["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            args.extend(extra.iter().map(|s| s.as_str()));
            args.extend(["--save-logits", "--out", out.to_str().unwrap()]);
            let o = fastsam2(&args);
            assert!(
                o.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&o.stderr)
            );

            let refd = fx.join(cli);
            let (got, want) = (
                json(&out.join("result.json")),
                json(&refd.join("result.json")),
            );
            assert_eq!(got["image_size"], want["image_size"]);
            let (gm, wm) = (
                got["masks"].as_array().unwrap(),
                want["masks"].as_array().unwrap(),
            );
            assert_eq!(gm.len(), wm.len(), "{name}: mask count");
            for (g, w) in gm.iter().zip(wm) {
                assert_eq!(g["file"], w["file"]);
                let ds = (g["score"].as_f64().unwrap() - w["score"].as_f64().unwrap()).abs();
                assert!(ds <= 1e-3, "{name}: score differs by {ds}");
                let (ga, wa) = (g["area"].as_i64().unwrap(), w["area"].as_i64().unwrap());
                assert!(
                    (ga - wa).abs() as f64 <= 1e-3 * wa.max(1) as f64,
                    "{name}: area {ga} vs {wa}"
                );
                let a = read_binary_mask_png(&out.join(g["file"].as_str().unwrap())).unwrap();
                let b = read_binary_mask_png(&refd.join(w["file"].as_str().unwrap())).unwrap();
                let inter = a
                    .data
                    .iter()
                    .zip(&b.data)
                    .filter(|(x, y)| **x && **y)
                    .count();
                let union = a
                    .data
                    .iter()
                    .zip(&b.data)
                    .filter(|(x, y)| **x || **y)
                    .count();
                assert!(
                    inter as f64 >= 0.999 * union as f64,
                    "{name}: mask IoU {}",
                    inter as f64 / union as f64
                );
            }
            let k = gm.len();
            assert_eq!(
                read_npy(&out.join("low_res_logits.npy")).unwrap().shape,
                vec![k, 256, 256]
            );
            assert_eq!(
                read_npy(&out.join("logits.npy")).unwrap().shape,
                vec![k, 300, 451]
            );
            assert!(out.join("overlay.png").exists());
        }
        assert_eq!(n, 8, "{tag}: expected 8 CLI cases");
    }
}

#[test]
fn iterative_refinement_and_batched_boxes() {
    let w = root().join("fixtures/sam_vit_micro/weights.safetensors");
    let img = root().join("fixtures/images/chelsea.png");
    let (w, img) = (w.to_str().unwrap(), img.to_str().unwrap());
    let first = tmp("iter1");
    let o = fastsam2(&[
        "segment",
        "--checkpoint",
        w,
        "--image",
        img,
        "--point",
        "220,150",
        "--multimask",
        "--save-logits",
        "--out",
        first.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // feed mask 1 of the previous low-res logits back with a new click
    let second = tmp("iter2");
    let spec = format!("{}:1", first.join("low_res_logits.npy").display());
    let o = fastsam2(&[
        "segment",
        "--checkpoint",
        w,
        "--image",
        img,
        "--point",
        "220,150",
        "--point",
        "300,200,0",
        "--mask-input",
        &spec,
        "--out",
        second.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        json(&second.join("result.json"))["masks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // three boxes decoded as one batch: 3 x 3 masks, tagged with their prompt
    let third = tmp("boxes");
    let o = fastsam2(&[
        "segment",
        "--checkpoint",
        w,
        "--image",
        img,
        "--box",
        "10,10,100,100",
        "--box",
        "120,30,330,280",
        "--box",
        "0,0,451,300",
        "--multimask",
        "--out",
        third.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = json(&third.join("result.json"));
    let masks = r["masks"].as_array().unwrap();
    assert_eq!(masks.len(), 9);
    assert_eq!(masks[4]["prompt"], 1);
    assert_eq!(masks[8]["file"], "mask_8.png");
}

/// Runs a failing command and returns its single stderr line.
fn fails(args: &[&str]) -> String {
    let o = fastsam2(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        !o.status.success(),
        "expected failure for {args:?}; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic for {args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one error line for {args:?}, got: {err}"
    );
    lines[0].to_string()
}

#[test]
fn bad_input_gives_one_line_errors() {
    let d = tmp("bad");
    let w = root().join("fixtures/sam_vit_micro/weights.safetensors");
    let mobile = root().join("fixtures/mobilesam_micro/weights.safetensors");
    let img = root().join("fixtures/images/chelsea.png");
    let (w, img) = (w.to_str().unwrap(), img.to_str().unwrap());
    let out = d.join("out");
    let out = out.to_str().unwrap();
    let seg = |extra: &[&str]| {
        let mut a = vec!["segment", "--out", out];
        a.extend_from_slice(extra);
        fails(&a)
    };

    // corrupt image
    let corrupt = d.join("corrupt.png");
    let mut bytes = std::fs::read(root().join("fixtures/images/chelsea.png")).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&corrupt, &bytes).unwrap();
    let e = seg(&[
        "--checkpoint",
        w,
        "--image",
        corrupt.to_str().unwrap(),
        "--point",
        "1,1",
    ]);
    assert!(e.contains("corrupt.png"), "{e}");

    // empty and garbage checkpoints
    let empty = d.join("empty.pth");
    std::fs::write(&empty, b"").unwrap();
    let e = seg(&[
        "--checkpoint",
        empty.to_str().unwrap(),
        "--image",
        img,
        "--point",
        "1,1",
    ]);
    assert!(e.contains("empty.pth") && e.contains("empty"), "{e}");
    let garbage = d.join("garbage.pt");
    std::fs::write(
        &garbage,
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let e = seg(&[
        "--checkpoint",
        garbage.to_str().unwrap(),
        "--image",
        img,
        "--point",
        "1,1",
    ]);
    assert!(
        e.contains("garbage.pt") && e.contains("not a readable checkpoint"),
        "{e}"
    );

    // truncated checkpoint
    let trunc = d.join("trunc.safetensors");
    let wb = std::fs::read(w).unwrap();
    std::fs::write(&trunc, &wb[..wb.len() / 2]).unwrap();
    let e = seg(&[
        "--checkpoint",
        trunc.to_str().unwrap(),
        "--image",
        img,
        "--point",
        "1,1",
    ]);
    assert!(e.contains("trunc.safetensors"), "{e}");

    // a checkpoint of another model: keys of a classifier
    let other = d.join("resnet.safetensors");
    let data = vec![0u8; 64 * 3 * 7 * 7 * 4];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![64, 3, 7, 7], &data)
            .unwrap();
    safetensors::serialize_to_file([("conv1.weight", view)], None, &other).unwrap();
    let e = seg(&[
        "--checkpoint",
        other.to_str().unwrap(),
        "--image",
        img,
        "--point",
        "1,1",
    ]);
    assert!(e.contains("not a SAM") && e.contains("conv1.weight"), "{e}");
    // MobileSAM weights forced into the SAM ViT-B layout
    let e = seg(&[
        "--checkpoint",
        mobile.to_str().unwrap(),
        "--model",
        "sam-vit-b",
        "--image",
        img,
        "--point",
        "1,1",
    ]);
    assert!(e.contains("does not fit model sam-vit-b"), "{e}");

    // prompts: outside the image, inverted box, NaN, bad label
    let e = seg(&["--checkpoint", w, "--image", img, "--point", "500,10"]);
    assert!(e.contains("outside the 451x300 image"), "{e}");
    let e = seg(&["--checkpoint", w, "--image", img, "--box", "300,200,100,50"]);
    assert!(e.contains("inverted"), "{e}");
    let e = seg(&["--checkpoint", w, "--image", img, "--point", "NaN,3"]);
    assert!(e.contains("not a finite number"), "{e}");
    let e = seg(&["--checkpoint", w, "--image", img, "--point", "3,4,2"]);
    assert!(e.contains("label"), "{e}");

    // mask input of the wrong shape
    let small = d.join("small.npy");
    write_npy_f32(&small, &[64, 64], &vec![0.0; 64 * 64]).unwrap();
    let e = seg(&[
        "--checkpoint",
        w,
        "--image",
        img,
        "--point",
        "1,1",
        "--mask-input",
        small.to_str().unwrap(),
    ]);
    assert!(e.contains("small.npy") && e.contains("256x256"), "{e}");

    // unknown model name, and --model offline without a cached file
    let e = seg(&["--model", "sam-vit-q", "--image", img, "--point", "1,1"]);
    assert!(e.contains("unknown model name"), "{e}");
    let e = seg(&["--model", "sam-vit-b", "--image", img, "--point", "1,1"]);
    assert!(
        e.contains("checkpoints/sam_vit_b_01ec64.pth") && e.contains("--checkpoint"),
        "{e}"
    );
    // nothing was written for any of the failures
    assert!(!Path::new(out).join("result.json").exists());
}
