//! Speed of `fastsam2-eval` against the official Python implementations, on the same files
//! in the same run.
//!
//! ```sh
//! EVAL_REFS_PYTHON=/tmp/evalvenv/bin/python DAVIS2017_EVAL=/path/to/davis2017-evaluation \
//! CARGO_TARGET_DIR=/work/target-eval cargo bench -p fastsam2-eval --bench eval_speed
//! ```
//!
//! * DAVIS: a DAVIS-val-sized synthetic set, 30 sequences × 70 frames × 3 objects at
//!   854×480 (palette PNGs for ground truth and predictions), J&F end to end.
//! * COCO: 5,000 images (640×480) × 20 detections (compressed RLE), 80 categories, polygon
//!   ground truth, mask AP end to end (JSON parsing included).
//!
//! Without `EVAL_REFS_PYTHON` only our timings are printed. Options (environment):
//! `EVAL_BENCH_DIR` (where the data goes, default a temp dir; kept when given),
//! `EVAL_BENCH_ONLY=davis|coco`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use fastsam2_eval::mask_io::write_label_png;
use fastsam2_eval::rle::Rle;
use fastsam2_eval::{NoProgress, coco, davis};

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    fn f(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * self.f()
    }
}

fn ellipse_fill(labels: &mut [u8], w: usize, h: usize, [cy, cx, ry, rx]: [f64; 4], v: u8) {
    let y0 = (cy - ry).floor().max(0.0) as usize;
    let y1 = ((cy + ry).ceil() as usize).min(h.saturating_sub(1));
    for y in y0..=y1 {
        let dy = (y as f64 - cy) / ry;
        if dy.abs() > 1.0 {
            continue;
        }
        let half = rx * (1.0 - dy * dy).sqrt();
        let x0 = (cx - half).ceil().max(0.0) as usize;
        let x1 = ((cx + half).floor() as i64).min(w as i64 - 1);
        if x1 < x0 as i64 {
            continue;
        }
        labels[y * w + x0..=y * w + x1 as usize].fill(v);
    }
}

fn gen_davis(dir: &Path) {
    let (w, h) = (854usize, 480usize);
    let (nseq, nframes, nobj) = (30, 70, 3);
    let gt = dir.join("gt");
    let sets = gt.join("ImageSets/2017");
    std::fs::create_dir_all(&sets).unwrap();
    let names: Vec<String> = (0..nseq).map(|s| format!("seq{s:02}")).collect();
    std::fs::write(sets.join("val.txt"), names.join("\n") + "\n").unwrap();
    let mut rng = Rng(7);
    for name in &names {
        let ann = gt.join("Annotations/480p").join(name);
        let pred = dir.join("pred").join(name);
        std::fs::create_dir_all(&ann).unwrap();
        std::fs::create_dir_all(&pred).unwrap();
        let objs: Vec<[f64; 6]> = (0..nobj)
            .map(|_| {
                [
                    rng.range(0.2, 0.8) * h as f64,
                    rng.range(0.2, 0.8) * w as f64,
                    rng.range(0.08, 0.25) * h as f64,
                    rng.range(0.05, 0.2) * w as f64,
                    rng.range(-2.0, 2.0),
                    rng.range(-3.0, 3.0),
                ]
            })
            .collect();
        for t in 0..nframes {
            let mut g = vec![0u8; w * h];
            let mut p = vec![0u8; w * h];
            for (k, o) in objs.iter().enumerate() {
                let (cy, cx) = (o[0] + o[4] * t as f64, o[1] + o[5] * t as f64);
                ellipse_fill(&mut g, w, h, [cy, cx, o[2], o[3]], k as u8 + 1);
                let j = [
                    rng.range(-6.0, 6.0),
                    rng.range(-6.0, 6.0),
                    rng.range(0.85, 1.15),
                    rng.range(0.85, 1.15),
                ];
                let geo = [cy + j[0], cx + j[1], o[2] * j[2], o[3] * j[3]];
                ellipse_fill(&mut p, w, h, geo, k as u8 + 1);
            }
            write_label_png(
                &ann.join(format!("{t:05}.png")),
                w as u32,
                h as u32,
                &g,
                None,
            )
            .unwrap();
            write_label_png(
                &pred.join(format!("{t:05}.png")),
                w as u32,
                h as u32,
                &p,
                None,
            )
            .unwrap();
        }
    }
}

/// RLE of an axis-aligned ellipse, built column by column (no full mask needed).
fn ellipse_rle(h: u32, w: u32, cy: f64, cx: f64, ry: f64, rx: f64) -> Rle {
    let mut counts = Vec::new();
    let mut pos: u64 = 0; // column-major position of the next pixel to emit
    let mut last_end: u64 = 0; // end of the last run of ones
    for x in 0..w {
        let dx = (x as f64 - cx) / rx;
        if dx.abs() > 1.0 {
            continue;
        }
        let half = ry * (1.0 - dx * dx).sqrt();
        let y0 = (cy - half).ceil().max(0.0) as i64;
        let y1 = ((cy + half).floor() as i64).min(h as i64 - 1);
        if y1 < y0 {
            continue;
        }
        let start = x as u64 * h as u64 + y0 as u64;
        let end = x as u64 * h as u64 + y1 as u64 + 1;
        if start == last_end && !counts.is_empty() {
            // contiguous with the previous run (wraps across columns)
            *counts.last_mut().unwrap() += (end - start) as u32;
        } else {
            counts.push((start - pos) as u32);
            counts.push((end - start) as u32);
        }
        pos = end;
        last_end = end;
    }
    counts.push((h as u64 * w as u64 - pos) as u32);
    Rle::from_counts(h, w, counts).unwrap()
}

fn gen_coco(dir: &Path) -> (PathBuf, PathBuf) {
    use std::fmt::Write;
    let (w, h) = (640u32, 480u32);
    let (nimg, ndet, ncat) = (5000, 20, 80);
    let mut rng = Rng(11);
    let mut images = String::new();
    let mut anns = String::new();
    let mut res = String::new();
    let mut ann_id = 1;
    for i in 0..nimg {
        let iid = i * 3 + 1;
        write!(
            images,
            r#"{}{{"id": {iid}, "height": {h}, "width": {w}, "file_name": "{iid:012}.jpg"}}"#,
            if i > 0 { "," } else { "" }
        )
        .unwrap();
        let mut objs = Vec::new();
        for _ in 0..7 {
            let cat = (rng.next() % ncat) as i64 + 1;
            let (cy, cx) = (rng.range(0.0, h as f64), rng.range(0.0, w as f64));
            let s = rng.f();
            let (ry, rx) = if s < 0.4 {
                (rng.range(3.0, 16.0), rng.range(3.0, 16.0))
            } else {
                (rng.range(10.0, 120.0), rng.range(10.0, 160.0))
            };
            // 16-gon polygon ground truth
            let mut poly = String::new();
            for k in 0..16 {
                let a = k as f64 * std::f64::consts::TAU / 16.0;
                let (px, py) = (cx + rx * a.cos(), cy + ry * a.sin());
                write!(poly, "{}{:.2},{:.2}", if k > 0 { "," } else { "" }, px, py).unwrap();
            }
            let crowd = rng.next().is_multiple_of(50) as i32;
            let poly_v: Vec<f64> = poly.split(',').map(|v| v.parse().unwrap()).collect();
            let area = Rle::from_polygons(&[poly_v], h, w).unwrap().area();
            let seg = if crowd == 1 {
                let r = ellipse_rle(h, w, cy, cx, ry, rx);
                format!(
                    r#"{{"size": [{h}, {w}], "counts": [{}]}}"#,
                    r.counts
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            } else {
                format!("[[{poly}]]")
            };
            write!(
                anns,
                r#"{}{{"id": {ann_id}, "image_id": {iid}, "category_id": {cat}, "iscrowd": {crowd}, "area": {area}, "bbox": [0, 0, 1, 1], "segmentation": {seg}}}"#,
                if ann_id > 1 { "," } else { "" }
            )
            .unwrap();
            ann_id += 1;
            objs.push((cat, cy, cx, ry, rx));
        }
        for d in 0..ndet {
            let (cat, cy, cx, ry, rx) = if d < 10 {
                let o = objs[d % objs.len()];
                (
                    o.0,
                    o.1 + rng.range(-3.0, 3.0),
                    o.2 + rng.range(-3.0, 3.0),
                    o.3 * rng.range(0.85, 1.15),
                    o.4 * rng.range(0.85, 1.15),
                )
            } else {
                (
                    (rng.next() % ncat) as i64 + 1,
                    rng.range(0.0, h as f64),
                    rng.range(0.0, w as f64),
                    rng.range(3.0, 100.0),
                    rng.range(3.0, 100.0),
                )
            };
            let r = ellipse_rle(h, w, cy, cx, ry, rx);
            let score = (rng.f() * 1000.0).round() / 1000.0;
            write!(
                res,
                r#"{}{{"image_id": {iid}, "category_id": {cat}, "score": {score}, "segmentation": {{"size": [{h}, {w}], "counts": {}}}}}"#,
                if i > 0 || d > 0 { "," } else { "" },
                serde_json::Value::String(r.to_compressed())
            )
            .unwrap();
        }
    }
    let cats: Vec<String> = (1..=ncat)
        .map(|c| format!(r#"{{"id": {c}, "name": "c{c}"}}"#))
        .collect();
    let gt = format!(
        r#"{{"images": [{images}], "annotations": [{anns}], "categories": [{}]}}"#,
        cats.join(",")
    );
    let gt_path = dir.join("coco_gt.json");
    let res_path = dir.join("coco_res.json");
    std::fs::write(&gt_path, gt).unwrap();
    std::fs::write(&res_path, format!("[{res}]")).unwrap();
    (gt_path, res_path)
}

fn run_official(args: &[&str]) -> Option<(f64, serde_json::Value)> {
    let py = std::env::var("EVAL_REFS_PYTHON").ok()?;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/eval_refs/bench_official.py");
    let out = Command::new(py)
        .arg(script)
        .args(args)
        .output()
        .expect("running the official benchmark script");
    if !out.status.success() {
        eprintln!(
            "official run failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.lines().last()?).ok()?;
    Some((v["seconds"].as_f64()?, v["results"].clone()))
}

fn compare(what: &str, ours: &serde_json::Value, official: &serde_json::Value) {
    let mut worst: f64 = 0.0;
    for (k, v) in official.as_object().unwrap() {
        let (a, b) = (
            ours[k].as_f64().unwrap_or(f64::NAN),
            v.as_f64().unwrap_or(f64::NAN),
        );
        worst = worst.max((a - b).abs());
    }
    println!("  {what}: largest difference from the official numbers: {worst:e}");
}

fn main() {
    let only = std::env::var("EVAL_BENCH_ONLY").unwrap_or_default();
    let (dir, keep) = match std::env::var("EVAL_BENCH_DIR") {
        Ok(d) => (PathBuf::from(d), true),
        Err(_) => (
            std::env::temp_dir().join(format!("fastsam2-eval-bench-{}", std::process::id())),
            false,
        ),
    };
    std::fs::create_dir_all(&dir).unwrap();
    println!("threads: {}", rayon::current_num_threads());
    let mut summary = Vec::new();

    if only.is_empty() || only == "davis" {
        if !dir.join("pred").is_dir() {
            let t = Instant::now();
            gen_davis(&dir);
            println!(
                "generated DAVIS-sized data (30 x 70 x 3 objects, 854x480) in {:.1}s",
                t.elapsed().as_secs_f64()
            );
        }
        let t = Instant::now();
        let r = davis::evaluate(
            &dir.join("gt"),
            &dir.join("pred"),
            &davis::DavisOptions::default(),
            &NoProgress,
        )
        .unwrap();
        let ours = t.elapsed().as_secs_f64();
        println!(
            "DAVIS J&F   fastsam2-eval: {ours:8.2} s   (J&F-Mean {:.6}, {} objects)",
            r.jf_mean,
            r.objects.len()
        );
        if let Some((secs, res)) = run_official(&["davis", dir.to_str().unwrap()]) {
            println!(
                "DAVIS J&F   davis2017-evaluation: {secs:8.2} s   ratio {:.1}x",
                secs / ours
            );
            compare("DAVIS", &r.to_json(), &res);
            summary.push(format!(
                "DAVIS: {:.2} s vs {:.2} s official = {:.1}x faster",
                ours,
                secs,
                secs / ours
            ));
        }
    }
    if only.is_empty() || only == "coco" {
        let (gt, res) = (dir.join("coco_gt.json"), dir.join("coco_res.json"));
        if !res.is_file() {
            let t = Instant::now();
            gen_coco(&dir);
            println!(
                "generated COCO-sized data (5000 images x 20 detections) in {:.1}s",
                t.elapsed().as_secs_f64()
            );
        }
        let t = Instant::now();
        let r = coco::evaluate_files(&gt, &res, &NoProgress).unwrap();
        let ours = t.elapsed().as_secs_f64();
        println!(
            "COCO segm AP fastsam2-eval: {ours:8.2} s   (AP {:.6})",
            r.stats[0]
        );
        if let Some((secs, official)) =
            run_official(&["coco", gt.to_str().unwrap(), res.to_str().unwrap()])
        {
            println!(
                "COCO segm AP pycocotools:   {secs:8.2} s   ratio {:.1}x",
                secs / ours
            );
            compare("COCO", &r.to_json(), &official);
            summary.push(format!(
                "COCO: {:.2} s vs {:.2} s official = {:.1}x faster",
                ours,
                secs,
                secs / ours
            ));
        }
    }
    for s in summary {
        println!("{s}");
    }
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
