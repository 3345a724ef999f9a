//! `fastsam2 track` end to end against the official CLI layout (SAM 2.1 micro, committed
//! 8-frame video, 1, 2 and 3 rounds of prompts), and its errors on bad input; also the
//! `eval interactive` engine wiring; `--stream` (PPM frames on standard input, or a folder read
//! frame by frame) against offline tracking, and its errors.

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

/// `fastsam2 track --stream` with `stdin` as its standard input.
fn fastsam2_stdin(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_fastsam2"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run fastsam2");
    let mut pipe = child.stdin.take().unwrap();
    // a broken pipe is fine: the command may stop reading early on an error
    let _ = pipe.write_all(stdin);
    drop(pipe);
    child.wait_with_output().unwrap()
}

/// The committed frames as one PPM stream (what `ffmpeg -f image2pipe -vcodec ppm` writes).
fn ppm_stream(indices: impl IntoIterator<Item = usize>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for i in indices {
        let img = fastsam2_core::image_io::load_rgb(
            root().join(format!("fixtures/video/frames/{i:05}.png")),
        )
        .unwrap();
        fastsam2_core::ppm_stream::write_ppm_frame(&mut bytes, &img).unwrap();
    }
    bytes
}

#[test]
fn track_stream_equals_offline_tracking() {
    let d = tmp("stream");
    let w = weights();
    let prompts = root().join("fixtures/sam2.1_hiera_micro/cli/prompts_rounds_1.json");
    let prompts = prompts.to_str().unwrap();
    let dir = |n: &str| d.join(n).to_str().unwrap().to_string();
    let common = |frames: &str, out: &str| -> Vec<String> {
        [
            "track",
            "--checkpoint",
            &w,
            "--frames",
            frames,
            "--prompts",
            prompts,
            "--save-logits",
            "--out",
            out,
        ]
        .map(String::from)
        .to_vec()
    };
    let offline = common(&frames(), &dir("offline"));
    let o = fastsam2(&offline.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // live: PPM frames on standard input; and a folder read one frame at a time
    let mut piped = common("-", &dir("piped"));
    piped.push("--stream".into());
    let o = fastsam2_stdin(
        &piped.iter().map(String::as_str).collect::<Vec<_>>(),
        &ppm_stream(0..8),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut folder = common(&frames(), &dir("folder"));
    folder.push("--stream".into());
    let o = fastsam2(&folder.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let reference = json(&d.join("offline/result.json"));
    for run in ["piped", "folder"] {
        let out = d.join(run);
        let r = json(&out.join("result.json"));
        for key in ["model", "num_frames", "image_size", "objects"] {
            assert_eq!(r[key], reference[key], "{run}: {key}");
        }
        let lines = std::fs::read_to_string(out.join("frames.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 8, "{run}: one line per frame");
        let (fa, fb) = (
            r["frames"].as_array().unwrap(),
            reference["frames"].as_array().unwrap(),
        );
        assert_eq!(fa.len(), 8);
        for (f, (a, b)) in fa.iter().zip(fb).enumerate() {
            let line: serde_json::Value =
                serde_json::from_str(lines.lines().nth(f).unwrap()).unwrap();
            assert_eq!(
                &line, a,
                "{run}: frames.jsonl line {f} is result.json's entry"
            );
            assert_eq!(a["frame"], b["frame"]);
            for (oa, ob) in wo_objects(a).iter().zip(&wo_objects(b)) {
                assert_eq!(oa["object"], ob["object"], "{run} frame {f}");
                assert_eq!(oa["area"], ob["area"], "{run} frame {f}");
                assert_eq!(oa["bbox"], ob["bbox"], "{run} frame {f}");
                let (sa, sb) = (
                    oa["object_score"].as_f64().unwrap(),
                    ob["object_score"].as_f64().unwrap(),
                );
                assert!(
                    (sa - sb).abs() < 1e-5,
                    "{run} frame {f}: score {sa} vs {sb}"
                );
            }
            let la = read_npy(&out.join(format!("logits/{f:05}.npy"))).unwrap();
            let lb = read_npy(&d.join(format!("offline/logits/{f:05}.npy"))).unwrap();
            assert_eq!(la.shape, lb.shape);
            let diff = la
                .data
                .to_f32()
                .iter()
                .zip(&lb.data.to_f32())
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(diff <= 1e-5, "{run} frame {f}: logits differ by {diff}");
            for id in [1, 2] {
                let name = format!("{id}/{f:05}.png");
                assert_eq!(
                    read_binary_mask_png(&out.join(&name)).unwrap().data,
                    read_binary_mask_png(&d.join("offline").join(&name))
                        .unwrap()
                        .data,
                    "{run}: {name}"
                );
            }
        }
    }
}

#[test]
fn track_stream_bad_input_keeps_results() {
    let d = tmp("stream-bad");
    let w = weights();
    let out = d.join("out");
    let run = |prompts: &str, stdin: &[u8], extra: &[&str]| -> (bool, String) {
        let p = d.join("p.json");
        std::fs::write(&p, prompts).unwrap();
        let _ = std::fs::remove_dir_all(&out);
        let mut args = vec![
            "track",
            "--stream",
            "--checkpoint",
            &w,
            "--frames",
            "-",
            "--prompts",
            p.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = fastsam2_stdin(&args, stdin);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!err.contains("panicked"), "{err}");
        let line = err
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or("")
            .to_string();
        (o.status.success(), line)
    };
    let frames_done = || {
        json(&out.join("result.json"))["frames"]
            .as_array()
            .unwrap()
            .len()
    };
    // fails with every one of `needles` in its error line, keeping `kept` frames' results
    let fails_keeping = |prompts: &str, stdin: &[u8], needles: &[&str], kept: usize| {
        let (ok, e) = run(prompts, stdin, &[]);
        assert!(!ok && needles.iter().all(|n| e.contains(n)), "{e}");
        assert_eq!(frames_done(), kept, "{e}");
    };
    let click0 = r#"{"rounds": [{"prompts": [{"frame": 0, "object": 1, "points": [[160, 60]]}]}]}"#;
    let all = ppm_stream(0..8);

    // the stream is cut inside frame 4: frames 0-3 are kept, and result.json lists them
    let one = ppm_stream([0]).len();
    let (ok, e) = run(click0, &all[..4 * one + one / 3], &[]);
    assert!(
        !ok && e.contains("PPM stream, frame 4") && e.contains("pixel bytes"),
        "{e}"
    );
    assert_eq!(frames_done(), 4);
    assert_eq!(json(&out.join("result.json"))["num_frames"], 4);
    assert!(out.join("1/00003.png").exists() && !out.join("1/00004.png").exists());

    // a frame of another size
    let mut mixed = ppm_stream(0..2);
    let small = fastsam2_core::image_io::RgbImage::from_fn(32, 24, |x, _| [x as u8; 3]).unwrap();
    fastsam2_core::ppm_stream::write_ppm_frame(&mut mixed, &small).unwrap();
    fails_keeping(
        click0,
        &mixed,
        &["frame 2", "32x24 but the stream is 320x240"],
        2,
    );

    // a prompt outside the frame, checked when its frame arrives
    let late_bad = r#"{"rounds": [{"prompts": [{"frame": 0, "object": 1, "points": [[160, 60]]},
        {"frame": 3, "object": 2, "points": [[400, 60]]}]}]}"#;
    fails_keeping(late_bad, &all, &["frame 3", "outside the 320x240 image"], 3);

    // a prompt on a frame the stream never reaches: every frame is written, then the error
    let never = r#"{"rounds": [{"prompts": [{"frame": 0, "object": 1, "points": [[160, 60]]},
        {"frame": 9, "object": 2, "points": [[60, 60]]}]}]}"#;
    fails_keeping(
        never,
        &all,
        &["frame 9 were never applied", "after 8 frames"],
        8,
    );

    // an object that starts on frame 2: the frames before it have no objects
    let mid = r#"{"rounds": [{"prompts": [{"frame": 2, "object": 7, "points": [[160, 60]]}]}]}"#;
    let (ok, e) = run(mid, &all, &["--max-frames", "5"]);
    assert!(ok, "{e}");
    let r = json(&out.join("result.json"));
    let counts: Vec<usize> = r["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["objects"].as_array().unwrap().len())
        .collect();
    assert_eq!(counts, [0, 0, 1, 1, 1]);
    assert_eq!(r["objects"], serde_json::json!([7]));
    assert!(!out.join("7/00001.png").exists() && out.join("7/00004.png").exists());

    // refused before any frame is read
    let two_rounds = r#"{"rounds": [{"prompts": [{"frame": 0, "object": 1, "points": [[160, 60]]}]},
        {"prompts": [{"frame": 4, "object": 1, "points": [[160, 60]]}]}]}"#;
    let (ok, e) = run(two_rounds, &all, &[]);
    assert!(!ok && e.contains("--stream takes one round"), "{e}");
    let (ok, e) = run(click0, &all, &["--max-frames", "0"]);
    assert!(!ok && e.contains("--max-frames 0"), "{e}");
    let (ok, e) = run(click0, b"", &[]);
    assert!(!ok && e.contains("standard input: no frames"), "{e}");
    assert!(!out.join("result.json").exists());
    let (ok, e) = run(click0, b"GIF89a....", &[]);
    assert!(
        !ok && e.contains("expected a binary PPM header (P6)"),
        "{e}"
    );
    assert!(!out.join("result.json").exists());
}

#[test]
fn track_stream_sources_without_ffmpeg() {
    let d = tmp("stream-src");
    let video = d.join("clip.mp4");
    std::fs::write(&video, b"not decoded here").unwrap();
    let prompts = root().join("fixtures/sam2.1_hiera_micro/cli/prompts_rounds_1.json");
    let w = weights();
    let run = |frames: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_fastsam2"))
            .args(["track", "--stream", "--checkpoint", &w, "--frames", frames])
            .args(["--prompts", prompts.to_str().unwrap()])
            .args(["--out", d.join("out").to_str().unwrap()])
            .env("HF_HUB_OFFLINE", "1")
            .env("PATH", "") // no ffmpeg on it, whatever the machine has
            .output()
            .unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    for src in [video.to_str().unwrap(), "rtsp://127.0.0.1:1/live"] {
        let e = run(src);
        assert!(e.contains("needs the ffmpeg program on PATH"), "{src}: {e}");
    }
    let e = run(d.join("missing.mp4").to_str().unwrap());
    assert!(e.contains("no such file, folder or URL"), "{e}");
    assert!(!d.join("out/result.json").exists());
}

#[test]
fn track_stream_drop_frames_keeps_source_indices() {
    let d = tmp("stream-drop");
    let out = d.join("out");
    let p = d.join("p.json");
    // object 2 is prompted on frame 3, which may be skipped: it then starts on the next
    // tracked frame
    std::fs::write(
        &p,
        r#"{"rounds": [{"prompts": [{"frame": 0, "object": 1, "points": [[160, 60]]},
            {"frame": 3, "object": 2, "points": [[250, 180]]}]}]}"#,
    )
    .unwrap();
    // 24 frames at once: the reader gets ahead of the tracker, whatever the machine
    let o = fastsam2_stdin(
        &[
            "track",
            "--stream",
            "--drop-frames",
            "--checkpoint",
            &weights(),
            "--frames",
            "-",
            "--prompts",
            p.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &ppm_stream((0..24).map(|i| i % 8)),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = json(&out.join("result.json"));
    let frames = r["frames"].as_array().unwrap();
    let idx: Vec<u64> = frames
        .iter()
        .map(|f| f["frame"].as_u64().unwrap())
        .collect();
    assert!(
        !idx.is_empty() && idx.windows(2).all(|w| w[0] < w[1]),
        "{idx:?}"
    );
    assert_eq!(*idx.last().unwrap(), 23, "the last frame is always tracked");
    assert_eq!(r["num_frames"].as_u64().unwrap() as usize, idx.len());
    assert_eq!(r["objects"], serde_json::json!([1, 2]));
    for (f, &i) in frames.iter().zip(&idx) {
        let ids: Vec<u64> = wo_objects(f)
            .iter()
            .map(|o| o["object"].as_u64().unwrap())
            .collect();
        let expect: &[u64] = if i >= 3 { &[1, 2] } else { &[1] };
        assert_eq!(ids, expect, "frame {i}");
        assert!(out.join(format!("1/{i:05}.png")).exists());
    }
    // skipped frames have no outputs
    let written = std::fs::read_dir(out.join("1")).unwrap().count();
    assert_eq!(written, idx.len());
}

/// Waits (up to 2 minutes) for `child` to exit.
fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed() > std::time::Duration::from_secs(120) {
            let _ = child.kill();
            panic!("fastsam2 did not exit after the interrupt");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn track_stream_interrupt_writes_result() {
    use std::io::{Read, Write};
    let d = tmp("stream-int");
    let w = weights();
    let prompts = root().join("fixtures/sam2.1_hiera_micro/cli/prompts_rounds_1.json");
    let args = |out: &Path| {
        [
            "track",
            "--stream",
            "--checkpoint",
            &w,
            "--frames",
            "-",
            "--prompts",
            prompts.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    // the same 3 frames, ended by --max-frames: what the interrupted runs must have written
    let want = d.join("want");
    let mut a = args(&want);
    a.extend(["--max-frames".into(), "3".into()]);
    let o = fastsam2_stdin(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &ppm_stream(0..8),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    for (signal, extra) in [("-INT", None), ("-TERM", Some("--drop-frames"))] {
        let out = d.join(format!("out{signal}"));
        let mut a = args(&out);
        a.extend(extra.map(String::from));
        let mut child = Command::new(env!("CARGO_BIN_EXE_fastsam2"))
            .args(&a)
            .env("HF_HUB_OFFLINE", "1")
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // 3 frames, then the source stays open and silent, like a stalled live stream; the
        // frames go one at a time so that --drop-frames skips none of them
        let mut pipe = child.stdin.take().unwrap();
        let jsonl = out.join("frames.jsonl");
        let lines = || {
            std::fs::read_to_string(&jsonl)
                .map(|s| s.lines().count())
                .unwrap_or(0)
        };
        for i in 0..3 {
            pipe.write_all(&ppm_stream([i])).unwrap();
            pipe.flush().unwrap();
            let t0 = std::time::Instant::now();
            while lines() < i + 1 {
                assert!(t0.elapsed().as_secs() < 120, "frame {i} was not tracked");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        assert!(!out.join("result.json").exists());
        let pid = child.id().to_string();
        let k = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(k.success());
        let status = wait_exit(&mut child);
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        drop(pipe);
        assert!(status.success(), "{signal}: {status}: {err}");
        assert!(err.contains("interrupted"), "{signal}: {err}");
        let r = json(&out.join("result.json"));
        let g = json(&want.join("result.json"));
        assert_eq!(r["num_frames"], 3, "{signal}");
        assert_eq!(
            r, g,
            "{signal}: result.json differs from the --max-frames 3 run"
        );
        for obj in [1, 2] {
            for f in 0..3 {
                let p = format!("{obj}/{f:05}.png");
                assert_eq!(
                    std::fs::read(out.join(&p)).unwrap(),
                    std::fs::read(want.join(&p)).unwrap(),
                    "{signal}: {p}"
                );
            }
        }
    }
}
