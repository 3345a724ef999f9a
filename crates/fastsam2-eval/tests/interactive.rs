//! The RITM / SimpleClick click protocol against RITM's own Clicker, evaluate_sample and
//! compute_noc_metric, run with a scripted predictor (tests/fixtures/interactive).

mod common;
use common::*;
use fastsam2_eval::interactive::{
    Click, ClickPrediction, Clicker, InteractiveParams, InteractivePredictor, InteractiveTarget,
    LowResLogits, PredictorError, RgbImage, evaluate_sample, padded_distance_transform, summarize,
};

/// Mirror of `ScriptedPredictor` in tools/eval_refs/gen_fixtures.py.
struct Scripted {
    w: usize,
    h: usize,
    belief: Vec<bool>,
    calls: usize,
}

const R_POS: i64 = 14;
const R_NEG: i64 = 5;

impl InteractivePredictor for Scripted {
    fn set_image(&mut self, image: &RgbImage) -> Result<(), PredictorError> {
        assert_eq!(
            (image.width as usize, image.height as usize),
            (self.w, self.h)
        );
        self.calls = 0;
        Ok(())
    }

    fn predict(
        &mut self,
        clicks: &[Click],
        prev: Option<&LowResLogits>,
    ) -> Result<ClickPrediction, PredictorError> {
        // the protocol hands back exactly what the previous call returned
        assert_eq!(prev.is_some(), self.calls > 0);
        self.calls += 1;
        let mut probs = match prev {
            None => vec![0.25f32; self.w * self.h],
            Some(p) => p.data.clone(),
        };
        let c = clicks.last().unwrap();
        let r2 = if c.is_positive {
            R_POS * R_POS
        } else {
            R_NEG * R_NEG
        };
        for y in 0..self.h {
            for x in 0..self.w {
                let d2 = (y as i64 - c.y as i64).pow(2) + (x as i64 - c.x as i64).pow(2);
                let i = y * self.w + x;
                if d2 < r2 {
                    probs[i] = match (c.is_positive, self.belief[i]) {
                        (true, true) => 0.9,
                        (true, false) => 0.3,
                        (false, _) => 0.1,
                    };
                }
                if d2 == r2 {
                    probs[i] = 0.49;
                }
            }
        }
        let logits = LowResLogits {
            width: self.w as u32,
            height: self.h as u32,
            data: probs.clone(),
        };
        Ok(ClickPrediction {
            probs,
            low_res_logits: Some(logits),
        })
    }
}

fn labels(v: &serde_json::Value) -> (usize, usize, Vec<i32>) {
    let rows = v.as_array().unwrap();
    let h = rows.len();
    let w = rows[0].as_array().unwrap().len();
    let l = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap() as i32)
        })
        .collect();
    (w, h, l)
}

fn clicks_json(c: &[Click]) -> Vec<(usize, usize, bool)> {
    c.iter().map(|c| (c.y, c.x, c.is_positive)).collect()
}

fn json_clicks(v: &serde_json::Value) -> Vec<(usize, usize, bool)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c[0].as_u64().unwrap() as usize,
                c[1].as_u64().unwrap() as usize,
                c[2].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn protocol_matches_ritm() {
    let r = load("interactive/ref.json");
    let samples = r["samples"].as_array().unwrap();
    for (key, stop) in [("1.01", Some(1.01)), ("0.9", Some(0.9))] {
        let run = &r["runs"][key];
        let params = InteractiveParams {
            stop_iou: stop,
            ..Default::default()
        };
        let mut results = Vec::new();
        for (i, s) in samples.iter().enumerate() {
            let (w, h, l) = labels(&s["gt"]);
            let target = InteractiveTarget::from_ritm_labels(w, h, &l);
            let belief: Vec<bool> = rows_to_mask(&s["belief"])
                .into_iter()
                .map(|v| v != 0)
                .collect();
            let image = RgbImage {
                width: w as u32,
                height: h as u32,
                data: vec![0; w * h * 3],
            };
            let mut p = Scripted {
                w,
                h,
                belief,
                calls: 0,
            };
            let res = evaluate_sample(&format!("s{i}"), &image, &target, &mut p, &params).unwrap();
            assert_eq!(
                clicks_json(&res.clicks),
                json_clicks(&run["clicks"][i]),
                "run {key} sample {i} clicks"
            );
            let official: Vec<f32> = f64s(&run["ious"][i]).iter().map(|&v| v as f32).collect();
            assert_eq!(res.ious, official, "run {key} sample {i} ious");
            results.push(res);
        }
        let rep = summarize(results, &params);
        assert_eq!(
            rep.noc[0].noc,
            run["noc85"].as_f64().unwrap(),
            "{key} NoC@85"
        );
        assert_eq!(
            rep.noc[1].noc,
            run["noc90"].as_f64().unwrap(),
            "{key} NoC@90"
        );
        assert_eq!(
            rep.noc[0].over_max as u64,
            run["over_max85"].as_u64().unwrap()
        );
        assert_eq!(
            rep.noc[1].over_max as u64,
            run["over_max90"].as_u64().unwrap()
        );
        let miou = f64s(&run["miou"]);
        assert_eq!(rep.miou.len(), miou.len());
        for (k, (a, b)) in rep.miou.iter().zip(&miou).enumerate() {
            // RITM averages float32 IoUs in float32; we average them in float64
            assert!((a - b).abs() < 1e-6, "{key} mIoU@{}: {a} vs {b}", k + 1);
        }
    }
}

#[test]
fn next_click_matches_ritm_clicker() {
    let r = load("interactive/ref.json");
    for (i, c) in r["next_clicks"].as_array().unwrap().iter().enumerate() {
        let (w, h, l) = labels(&c["gt"]);
        assert_eq!(
            (w, h),
            (
                c["w"].as_u64().unwrap() as usize,
                c["h"].as_u64().unwrap() as usize
            )
        );
        let target = InteractiveTarget::from_ritm_labels(w, h, &l);
        let pred: Vec<bool> = rows_to_mask(&c["pred"])
            .into_iter()
            .map(|v| v != 0)
            .collect();
        let mut clicker = Clicker::new(&target);
        let prior = json_clicks(&c["prior"]);
        for _ in 0..prior.len() {
            clicker.make_next_click(&pred);
        }
        assert_eq!(
            clicks_json(clicker.clicks()),
            prior,
            "case {i} prior clicks"
        );
        let next = clicker.next_click(&pred);
        let expected = json_clicks(&serde_json::json!([c["next"]]))[0];
        assert_eq!((next.y, next.x, next.is_positive), expected, "case {i}");
    }
}

#[test]
fn distance_transform_is_opencv_precise() {
    let r = load("interactive/ref.json");
    for (i, c) in r["distance_transforms"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let (w, h) = (
            c["w"].as_u64().unwrap() as usize,
            c["h"].as_u64().unwrap() as usize,
        );
        let m: Vec<bool> = rows_to_mask(&c["mask"])
            .into_iter()
            .map(|v| v != 0)
            .collect();
        let ours = padded_distance_transform(&m, w, h);
        let official: Vec<f32> = f64s(&c["dt"]).iter().map(|&v| v as f32).collect();
        assert_eq!(ours, official, "case {i} ({w}x{h})");
    }
}

#[test]
fn noc_counts_failures_and_over_max() {
    use fastsam2_eval::interactive::SampleResult;
    let mk = |ious: Vec<f32>| SampleResult {
        name: String::new(),
        clicks: vec![],
        ious,
    };
    let mut reach_at_20 = vec![0.5f32; 19];
    reach_at_20.push(0.95);
    let samples = vec![
        mk(vec![0.5, 0.86, 0.91]),
        mk(vec![0.2; 20]),
        mk(reach_at_20),
    ];
    let rep = summarize(samples, &InteractiveParams::default());
    // NoC@85: 2, 20 (never), 20 (at the 20th click)
    assert_eq!(rep.noc[0].noc, 42.0 / 3.0);
    assert_eq!(rep.noc[0].over_max, 2);
    assert_eq!(rep.noc[0].failures, 1);
    assert_eq!(rep.miou.len(), 3);
    // float32 threshold comparison, as NumPy does: f32(0.9) < 0.9
    let rep = summarize(vec![mk(vec![0.9f32])], &InteractiveParams::default());
    assert_eq!(rep.noc[1].noc, 1.0);
}
