//! COCO mask AP against pycocotools COCOeval(iouType='segm') (tests/fixtures/coco).
//!
//! The fixture has polygon, compressed-RLE and crowd (uncompressed RLE) ground truth, `area`
//! fields that disagree with the masks around the 32² / 96² boundaries, tiny objects, empty
//! detections, tied scores, an image with > 100 detections, detections of a category
//! without ground truth, and a results file with `bbox` fields (so areas come from boxes).

mod common;
use common::*;
use fastsam2_eval::NoProgress;
use fastsam2_eval::coco::{CocoGt, CocoParams, STAT_KEYS, evaluate, evaluate_files};

fn check(res: &str) {
    let refs = load("coco/ref.json");
    let r = &refs[res];
    let gt_path = fixtures().join("coco/gt.json");
    let rep = evaluate_files(
        &gt_path,
        &fixtures().join(format!("coco/{res}.json")),
        &NoProgress,
    )
    .unwrap();
    for (i, k) in STAT_KEYS.iter().enumerate() {
        close(&format!("{res} {k}"), rep.stats[i], &r[*k], 0.0);
    }
    // recall[T][K][A][M], the full array
    let [t_n, _, k_n, a_n, m_n] = rep.counts;
    let rec = r["recall"].as_array().unwrap();
    assert_eq!(rec.len(), t_n);
    for (t, rec_t) in rec.iter().enumerate() {
        for (k, rec_tk) in rec_t.as_array().unwrap().iter().enumerate() {
            for (a, rec_tka) in rec_tk.as_array().unwrap().iter().enumerate() {
                for (m, v) in rec_tka.as_array().unwrap().iter().enumerate() {
                    let ours = rep.recall[((t * k_n + k) * a_n + a) * m_n + m];
                    assert_eq!(
                        ours,
                        v.as_f64().unwrap(),
                        "{res} recall[{t}][{k}][{a}][{m}]"
                    );
                }
            }
        }
    }
    let psum: f64 = rep.precision.iter().sum();
    close(
        &format!("{res} sum(precision)"),
        psum,
        &r["precision_sum"],
        1e-9,
    );
    let j = rep.to_json();
    assert_eq!(j.as_object().unwrap().len(), 12);
}

#[test]
fn segm_results_match_pycocotools() {
    check("res_segm");
}

#[test]
fn results_with_boxes_use_box_area_like_pycocotools() {
    check("res_with_bbox");
    // and the two files really differ in the area-dependent numbers
    let refs = load("coco/ref.json");
    assert_ne!(refs["res_segm"]["APs"], refs["res_with_bbox"]["APs"]);
}

#[test]
fn loaded_areas_follow_load_res_rules() {
    let gt = CocoGt::load(&fixtures().join("coco/gt.json")).unwrap();
    let plain = gt
        .load_results(&fixtures().join("coco/res_segm.json"))
        .unwrap();
    assert!(plain.iter().all(|d| d.area == d.rle.area() as f64));
    let boxed = gt
        .load_results(&fixtures().join("coco/res_with_bbox.json"))
        .unwrap();
    assert!(boxed.iter().any(|d| d.area != d.rle.area() as f64));
    assert_eq!(plain[0].id, 1);
    // evaluating twice gives identical numbers (parallel evaluation is deterministic)
    let a = evaluate(&gt, &plain, &CocoParams::default(), &NoProgress);
    let b = evaluate(&gt, &plain, &CocoParams::default(), &NoProgress);
    assert_eq!(a.stats, b.stats);
}
