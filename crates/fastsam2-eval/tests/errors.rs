//! Bad input: every error names the file and the entry.

mod common;
use std::path::{Path, PathBuf};

use fastsam2_eval::coco::{CocoGt, evaluate_files};
use fastsam2_eval::davis::{DavisOptions, evaluate as davis_eval};
use fastsam2_eval::mask_io::{write_id_png, write_label_png};
use fastsam2_eval::panoptic::evaluate as pq_eval;
use fastsam2_eval::rle::Rle;
use fastsam2_eval::{EvalError, NoProgress};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "fastsam2-eval-errors-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

/// A 3-object, 4-frame DAVIS layout (8x6 frames) with predictions.
fn davis_layout(root: &Path) -> (PathBuf, PathBuf) {
    let gt = root.join("gt");
    let pred = root.join("pred");
    let ann = gt.join("Annotations/480p/seq");
    std::fs::create_dir_all(&ann).unwrap();
    std::fs::create_dir_all(pred.join("seq")).unwrap();
    let mut labels = vec![0u8; 48];
    labels[0] = 1;
    labels[10] = 2;
    labels[20] = 3;
    labels[47] = 255;
    let mut pred_labels = labels.clone();
    pred_labels[47] = 0;
    for t in 0..4 {
        write_label_png(&ann.join(format!("{t:05}.png")), 8, 6, &labels, None).unwrap();
        write_label_png(
            &pred.join(format!("seq/{t:05}.png")),
            8,
            6,
            &pred_labels,
            None,
        )
        .unwrap();
    }
    (gt, pred)
}

#[test]
fn davis_valid_layout_scores_perfectly() {
    let root = tmpdir("davis-ok");
    let (gt, pred) = davis_layout(&root);
    let r = davis_eval(&gt, &pred, &DavisOptions::default(), &NoProgress).unwrap();
    assert_eq!(r.objects.len(), 3);
    assert_eq!(r.jf_mean, 1.0);
}

#[test]
fn davis_missing_frame_names_the_file() {
    let root = tmpdir("davis-missing");
    let (gt, pred) = davis_layout(&root);
    std::fs::remove_file(pred.join("seq/00002.png")).unwrap();
    let e = davis_eval(&gt, &pred, &DavisOptions::default(), &NoProgress).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, EvalError::Missing { .. }), "{msg}");
    assert!(
        msg.contains("seq/00002.png") && msg.contains("frame 00002"),
        "{msg}"
    );
}

#[test]
fn davis_missing_annotation_of_an_image_is_reported() {
    let root = tmpdir("davis-missing-ann");
    let (gt, pred) = davis_layout(&root);
    let img = gt.join("JPEGImages/480p/seq");
    std::fs::create_dir_all(&img).unwrap();
    for t in 0..5 {
        std::fs::write(img.join(format!("{t:05}.jpg")), b"").unwrap();
    }
    let msg = davis_eval(&gt, &pred, &DavisOptions::default(), &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("Annotations/480p/seq/00004.png") && msg.contains("frame 00004"),
        "{msg}"
    );
}

#[test]
fn davis_size_mismatch_and_bad_index() {
    let root = tmpdir("davis-size");
    let (gt, pred) = davis_layout(&root);
    write_label_png(&pred.join("seq/00001.png"), 9, 6, &[0u8; 54], None).unwrap();
    let e = davis_eval(&gt, &pred, &DavisOptions::default(), &NoProgress).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, EvalError::SizeMismatch { .. }), "{msg}");
    assert!(
        msg.contains("seq/00001.png") && msg.contains("9x6") && msg.contains("8x6"),
        "{msg}"
    );

    let root = tmpdir("davis-index");
    let (gt, pred) = davis_layout(&root);
    let mut l = vec![0u8; 48];
    l[5] = 4;
    write_label_png(&pred.join("seq/00002.png"), 8, 6, &l, None).unwrap();
    let msg = davis_eval(&gt, &pred, &DavisOptions::default(), &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("seq/00002.png") && msg.contains("object index 4"),
        "{msg}"
    );
}

const GT_JSON: &str = r#"{"images": [{"id": 1, "height": 4, "width": 5}],
 "categories": [{"id": 1, "name": "a"}],
 "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "area": 4.0, "iscrowd": 0,
                  "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]}]}"#;

#[test]
fn coco_malformed_json_names_file_and_position() {
    let d = tmpdir("coco-json");
    let gt = d.join("gt.json");
    write(&gt, &GT_JSON[..GT_JSON.len() - 5]);
    let e = CocoGt::load(&gt).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, EvalError::Json { .. }) && msg.contains("gt.json") && msg.contains("line"),
        "{msg}"
    );
    // structurally wrong entry: names the entry
    write(
        &gt,
        &GT_JSON.replace(r#""image_id": 1,"#, r#""image_id": "x","#),
    );
    let msg = CocoGt::load(&gt).unwrap_err().to_string();
    assert!(msg.contains("annotations[0] (id 10)"), "{msg}");
}

#[test]
fn coco_bad_results_name_the_entry() {
    let d = tmpdir("coco-res");
    let gt = d.join("gt.json");
    write(&gt, GT_JSON);
    let res = d.join("res.json");
    let counts = Rle::from_counts(4, 5, vec![2, 18]).unwrap().to_compressed();
    let short = Rle {
        height: 4,
        width: 5,
        counts: vec![2, 17],
    }
    .to_compressed();
    let good = format!(
        r#"{{"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": {{"size": [4, 5], "counts": "{counts}"}}}}"#
    );
    let good = good.as_str();
    write(&res, &format!("[{good}]"));
    evaluate_files(&gt, &res, &NoProgress).unwrap();

    // RLE whose counts do not add up to 4 x 5
    write(
        &res,
        &format!("[{good}, {}]", good.replace(&counts, &short)),
    );
    let e = evaluate_files(&gt, &res, &NoProgress).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, EvalError::Rle { .. })
            && msg.contains("res.json")
            && msg.contains("results[1]"),
        "{msg}"
    );
    assert!(msg.contains("20"), "{msg}");

    // invalid character in the counts string
    write(
        &res,
        &format!("[{}]", good.replace(&counts, &format!("~{counts}"))),
    );
    let msg = evaluate_files(&gt, &res, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("results[0]") && msg.contains("invalid character"),
        "{msg}"
    );

    // unknown category / image
    write(
        &res,
        &format!(
            "[{good}, {good}, {}]",
            good.replace(r#""category_id": 1"#, r#""category_id": 77"#)
        ),
    );
    let e = evaluate_files(&gt, &res, &NoProgress).unwrap_err();
    assert!(
        matches!(e, EvalError::UnknownCategory { id: 77, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("results[2]"), "{e}");
    write(
        &res,
        &format!("[{}]", good.replace(r#""image_id": 1"#, r#""image_id": 5"#)),
    );
    let e = evaluate_files(&gt, &res, &NoProgress).unwrap_err();
    assert!(
        matches!(e, EvalError::UnknownImage { id: 5, .. }) && e.to_string().contains("results[0]"),
        "{e}"
    );

    // mask size differs from the image's
    write(&res, &format!("[{}]", good.replace("[4, 5]", "[5, 4]")));
    let e = evaluate_files(&gt, &res, &NoProgress).unwrap_err();
    assert!(
        matches!(e, EvalError::SizeMismatch { .. }) && e.to_string().contains("results[0]"),
        "{e}"
    );

    // missing score
    write(
        &res,
        &format!("[{}]", good.replace(r#""score": 0.9, "#, "")),
    );
    let msg = evaluate_files(&gt, &res, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("results[0]") && msg.contains("score"), "{msg}");

    // ground truth with an unknown category and a polygon pycocotools rejects
    write(
        &gt,
        &GT_JSON.replace(r#""category_id": 1, "area""#, r#""category_id": 9, "area""#),
    );
    let e = CocoGt::load(&gt).unwrap_err();
    assert!(
        matches!(e, EvalError::UnknownCategory { id: 9, .. })
            && e.to_string().contains("annotations[0] (id 10)"),
        "{e}"
    );
    write(
        &gt,
        &GT_JSON.replace("[[0, 0, 2, 0, 2, 2, 0, 2]]", "[[0, 0, 2, 2]]"),
    );
    let msg = CocoGt::load(&gt).unwrap_err().to_string();
    assert!(
        msg.contains("annotations[0] (id 10)") && msg.contains("polygon"),
        "{msg}"
    );
}

#[test]
fn panoptic_inconsistencies_name_the_image_and_segment() {
    let d = tmpdir("pq");
    let (gd, pd) = (d.join("gt"), d.join("pred"));
    std::fs::create_dir_all(&gd).unwrap();
    std::fs::create_dir_all(&pd).unwrap();
    write_id_png(&gd.join("a.png"), 4, 2, &[0, 5, 5, 5, 7, 7, 7, 7]).unwrap();
    write_id_png(&pd.join("a.png"), 4, 2, &[0, 9, 9, 9, 3, 3, 3, 3]).unwrap();
    let gt_json = d.join("gt.json");
    write(
        &gt_json,
        r#"{"annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": [
            {"id": 5, "category_id": 1, "iscrowd": 0, "area": 3}, {"id": 7, "category_id": 2, "iscrowd": 0, "area": 4}]}],
           "categories": [{"id": 1, "name": "t", "isthing": 1}, {"id": 2, "name": "s", "isthing": 0}]}"#,
    );
    let pred_json = d.join("pred.json");
    let pred_ok = r#"{"annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": [
            {"id": 9, "category_id": 1}, {"id": 3, "category_id": 2}]}]}"#;
    write(&pred_json, pred_ok);
    let r = pq_eval(&gt_json, &gd, &pred_json, &pd, &NoProgress).unwrap();
    assert_eq!((r.all.pq, r.all.n), (1.0, 2));

    // a PNG segment missing from the JSON
    write(
        &pred_json,
        &pred_ok.replace(r#", {"id": 3, "category_id": 2}"#, ""),
    );
    let msg = pq_eval(&gt_json, &gd, &pred_json, &pd, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("a.png") && msg.contains("segment id 3") && msg.contains("image_id 1"),
        "{msg}"
    );
    // unknown category
    write(
        &pred_json,
        &pred_ok.replace(
            r#""id": 3, "category_id": 2"#,
            r#""id": 3, "category_id": 42"#,
        ),
    );
    let e = pq_eval(&gt_json, &gd, &pred_json, &pd, &NoProgress).unwrap_err();
    assert!(
        matches!(e, EvalError::UnknownCategory { id: 42, .. })
            && e.to_string().contains("segment 3"),
        "{e}"
    );
    // size mismatch
    write(&pred_json, pred_ok);
    write_id_png(&pd.join("a.png"), 2, 4, &[0, 9, 9, 9, 3, 3, 3, 3]).unwrap();
    let e = pq_eval(&gt_json, &gd, &pred_json, &pd, &NoProgress).unwrap_err();
    assert!(
        matches!(e, EvalError::SizeMismatch { .. }) && e.to_string().contains("a.png"),
        "{e}"
    );
    // image without prediction
    write(
        &pred_json,
        &pred_ok.replace(r#""image_id": 1"#, r#""image_id": 2"#),
    );
    let msg = pq_eval(&gt_json, &gd, &pred_json, &pd, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("pred.json") && msg.contains("image with id 1"),
        "{msg}"
    );
}
