//! `fastsam2 track` end to end against the official CLI layout (SAM 2.1 micro, committed
//! 8-frame video, 1, 2 and 3 rounds of prompts), and its errors on bad input; also the
//! `eval interactive` engine wiring.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fastsam2_core::mask_io::{read_binary_mask_png, read_npy};

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
    let d = std::env::temp_dir().join(format!("fastsam2-track-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn weights() -> String {
    root()
        .join("fixtures/sam2.1_hiera_micro/weights.safetensors")
        .display()
        .to_string()
}

fn frames() -> String {
    root().join("fixtures/video/frames").display().to_string()
}

#[test]
fn track_matches_official_cli_outputs() {
    check_rounds(&[], 1..=3, "rounds");
}

/// The opt-in bf16 attention weights (a global option, before the subcommand) keep the CLI's
/// outputs within the same tolerances of the official ones (on CPUs without AVX-512 BF16 or
/// with AMX the option changes nothing).
#[test]
fn track_with_bf16_attention_weights_matches_official_cli_outputs() {
    check_rounds(&["--attention-weights", "bf16"], 1..=2, "bf16w");
    let e = fails(&["--attention-weights", "fp8", "models"]);
    assert!(
        e.contains("fp8") && e.contains("--attention-weights"),
        "{e}"
    );
}

/// `track` with `global` options on rounds `rounds` of the committed prompts, against the
/// official CLI outputs (object scores to 1e-3, areas to 0.1%, mask IoU >= 0.999).
fn check_rounds(global: &[&str], rounds: std::ops::RangeInclusive<usize>, tag: &str) {
    let cli = root().join("fixtures/sam2.1_hiera_micro/cli");
    let (w, f) = (weights(), frames());
    for k in rounds {
        let out = tmp(&format!("{tag}{k}"));
        let prompts = cli.join(format!("prompts_rounds_{k}.json"));
        let mut args: Vec<&str> = global.to_vec();
        args.extend([
            "track",
            "--checkpoint",
            &w,
            "--frames",
            &f,
            "--prompts",
            prompts.to_str().unwrap(),
            "--save-logits",
            "--out",
            out.to_str().unwrap(),
        ]);
        let o = fastsam2(&args);
        assert!(
            o.status.success(),
            "rounds {k}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let refd = cli.join(format!("rounds_{k}"));
        let (got, want) = (
            json(&out.join("result.json")),
            json(&refd.join("result.json")),
        );
        assert_eq!(got["num_frames"], want["num_frames"]);
        assert_eq!(got["image_size"], want["image_size"]);
        assert_eq!(got["objects"], want["objects"]);
        let ids: Vec<u64> = want["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        for (gf, wf) in got["frames"]
            .as_array()
            .unwrap()
            .iter()
            .zip(want["frames"].as_array().unwrap())
        {
            let f = wf["frame"].as_u64().unwrap();
            assert_eq!(gf["frame"], wf["frame"]);
            for (go, wo) in gf["objects"].as_array().unwrap().iter().zip(wo_objects(wf)) {
                assert_eq!(go["object"], wo["object"]);
                let ds = (go["object_score"].as_f64().unwrap()
                    - wo["object_score"].as_f64().unwrap())
                .abs();
                assert!(
                    ds <= 1e-3,
                    "rounds {k} frame {f}: object score differs by {ds}"
                );
                let (ga, wa) = (go["area"].as_i64().unwrap(), wo["area"].as_i64().unwrap());
                assert!(
                    (ga - wa).abs() as f64 <= 1e-3 * wa.max(1) as f64,
                    "rounds {k} frame {f}: area {ga} vs {wa}"
                );
            }
            for id in &ids {
                let name = format!("{id}/{f:05}.png");
                let a = read_binary_mask_png(&out.join(&name)).unwrap();
                let b = read_binary_mask_png(&refd.join(&name)).unwrap();
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
                    .count()
                    .max(1);
                assert!(
                    inter as f64 >= 0.999 * union as f64,
                    "rounds {k} {name}: IoU {}",
                    inter as f64 / union as f64
                );
            }
            let l = read_npy(&out.join(format!("logits/{f:05}.npy"))).unwrap();
            assert_eq!(l.shape, vec![ids.len(), 240, 320]);
        }
    }
}

fn wo_objects(f: &serde_json::Value) -> Vec<serde_json::Value> {
    f["objects"].as_array().unwrap().clone()
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
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one error line for {args:?}, got: {err}"
    );
    lines[0].to_string()
}

#[test]
fn track_bad_input() {
    let d = tmp("bad");
    let out = d.join("out");
    let out = out.to_str().unwrap();
    let w = weights();
    let good_prompts = root().join("fixtures/sam2.1_hiera_micro/cli/prompts_rounds_1.json");
    let good_prompts = good_prompts.to_str().unwrap();
    let track = |frames: &str, prompts: &str, ck: &str| {
        fails(&[
            "track",
            "--checkpoint",
            ck,
            "--frames",
            frames,
            "--prompts",
            prompts,
            "--out",
            out,
        ])
    };

    // empty folder
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = track(empty.to_str().unwrap(), good_prompts, &w);
    assert!(e.contains("no frames") && e.contains("empty"), "{e}");
    // mixed frame sizes
    let mixed = d.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(
        root().join("fixtures/video/frames/00000.png"),
        mixed.join("00000.png"),
    )
    .unwrap();
    std::fs::copy(
        root().join("fixtures/images/chelsea.png"),
        mixed.join("00001.png"),
    )
    .unwrap();
    let e = track(mixed.to_str().unwrap(), good_prompts, &w);
    assert!(
        e.contains("00001.png") && e.contains("451x300") && e.contains("320x240"),
        "{e}"
    );
    // prompt on a frame past the end
    let p = d.join("late.json");
    std::fs::write(
        &p,
        r#"{"rounds": [{"prompts": [{"frame": 8, "object": 1, "points": [[10, 10]]}]}]}"#,
    )
    .unwrap();
    let e = track(&frames(), p.to_str().unwrap(), &w);
    assert!(
        e.contains("frame 8 is past the end") && e.contains("8 frames"),
        "{e}"
    );
    // an object id that is not a non-negative integer; a typo in a key
    let p = d.join("badid.json");
    std::fs::write(
        &p,
        r#"{"rounds": [{"prompts": [{"frame": 0, "object": -1, "points": [[10, 10]]}]}]}"#,
    )
    .unwrap();
    let e = track(&frames(), p.to_str().unwrap(), &w);
    assert!(e.contains("badid.json") && e.contains("-1"), "{e}");
    let p = d.join("typo.json");
    std::fs::write(
        &p,
        r#"{"rounds": [{"prompts": [{"frame": 0, "object": 1, "point": [[10, 10]]}]}]}"#,
    )
    .unwrap();
    let e = track(&frames(), p.to_str().unwrap(), &w);
    assert!(e.contains("unknown field `point`"), "{e}");
    // mask prompt of the wrong size
    std::fs::copy(
        root().join("fixtures/sam_vit_micro/cli/chelsea_box_single/mask_0.png"),
        d.join("m.png"),
    )
    .unwrap();
    let p = d.join("mask.json");
    std::fs::write(
        &p,
        r#"{"rounds": [{"prompts": [{"frame": 0, "object": 1, "mask": "m.png"}]}]}"#,
    )
    .unwrap();
    let e = track(&frames(), p.to_str().unwrap(), &w);
    assert!(
        e.contains("mask is 451x300") && e.contains("320x240"),
        "{e}"
    );
    // truncated checkpoint
    let trunc = d.join("trunc.safetensors");
    let wb = std::fs::read(&w).unwrap();
    std::fs::write(&trunc, &wb[..wb.len() / 3]).unwrap();
    let e = track(&frames(), good_prompts, trunc.to_str().unwrap());
    assert!(e.contains("trunc.safetensors"), "{e}");
    // a SAM v1 checkpoint cannot track
    let v1 = root().join("fixtures/sam_vit_micro/weights.safetensors");
    let e = track(&frames(), good_prompts, v1.to_str().unwrap());
    assert!(e.contains("not a SAM 2 model"), "{e}");
    assert!(!Path::new(out).join("result.json").exists());
}

#[test]
fn track_keeps_written_results_when_a_frame_fails() {
    let d = tmp("keep");
    let fr = d.join("frames");
    std::fs::create_dir_all(&fr).unwrap();
    for i in 0..8 {
        let name = format!("{i:05}.png");
        let src = root().join("fixtures/video/frames").join(&name);
        if i == 5 {
            let b = std::fs::read(&src).unwrap();
            std::fs::write(fr.join(&name), &b[..b.len() / 2]).unwrap(); // header intact, pixels cut
        } else {
            std::fs::copy(&src, fr.join(&name)).unwrap();
        }
    }
    let out = d.join("out");
    let prompts = root().join("fixtures/sam2.1_hiera_micro/cli/prompts_rounds_1.json");
    let e = fails(&[
        "track",
        "--checkpoint",
        &weights(),
        "--frames",
        fr.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("00005.png"), "{e}");
    for i in 0..5 {
        assert!(
            out.join(format!("1/{i:05}.png")).exists(),
            "frame {i} written before the failure"
        );
    }
    assert!(!out.join("1/00005.png").exists());
}

#[test]
fn eval_interactive_runs_the_engine() {
    let d = tmp("inter");
    std::fs::create_dir_all(d.join("images")).unwrap();
    std::fs::create_dir_all(d.join("masks")).unwrap();
    std::fs::copy(
        root().join("fixtures/images/chelsea.png"),
        d.join("images/cat.png"),
    )
    .unwrap();
    std::fs::copy(
        root().join("fixtures/sam_vit_micro/cli/chelsea_box_single/mask_0.png"),
        d.join("masks/cat.png"),
    )
    .unwrap();
    let w = root().join("fixtures/sam_vit_micro/weights.safetensors");
    let j = d.join("out.json");
    let o = fastsam2(&[
        "eval",
        "interactive",
        "--images",
        d.join("images").to_str().unwrap(),
        "--masks",
        d.join("masks").to_str().unwrap(),
        "--checkpoint",
        w.to_str().unwrap(),
        "--max-clicks",
        "4",
        "--json",
        j.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = json(&j);
    assert_eq!(r["num_samples"], 1);
    let clicks = r["per_sample"][0]["clicks"].as_array().unwrap();
    assert_eq!(clicks.len(), 4);
    // the first click of the protocol is positive, inside the object
    assert_eq!(clicks[0][2], true);
    for k in 1..=4 {
        let v = r[format!("mIoU@{k}")].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "mIoU@{k} = {v}");
    }
}
