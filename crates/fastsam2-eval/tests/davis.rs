//! DAVIS 2017 semi-supervised J&F against davis2017-evaluation (tests/fixtures/davis).
//!
//! The fixture has 480p multi-object sequences, void (255) rings in the ground truth,
//! objects absent from some frames, an object id gap (ids 1 and 3: object 2 is empty
//! throughout), an object appearing after the first frame (ignored), empty and
//! missing predictions, tiny objects, a greyscale prediction, a 3-frame sequence and a
//! 260-frame sequence whose Decay bins wrap (uint8), giving NaN as in the official code.

mod common;
use common::*;
use fastsam2_eval::NoProgress;
use fastsam2_eval::davis::{DavisOptions, evaluate};

const KEYS: [(&str, usize); 7] = [
    ("J&F-Mean", 0),
    ("J-Mean", 1),
    ("J-Recall", 2),
    ("J-Decay", 3),
    ("F-Mean", 4),
    ("F-Recall", 5),
    ("F-Decay", 6),
];

fn check_subset(subset: &str, tol: f64) {
    let refs = load("davis/ref.json");
    let r = &refs[subset];
    let opts = DavisOptions {
        subset: subset.into(),
        ..Default::default()
    };
    let gt = fixtures().join("davis/gt");
    let pred = fixtures().join("davis/pred");
    let rep = evaluate(&gt, &pred, &opts, &NoProgress).unwrap();
    let ours = [
        rep.jf_mean,
        rep.j_mean,
        rep.j_recall,
        rep.j_decay,
        rep.f_mean,
        rep.f_recall,
        rep.f_decay,
    ];
    for (k, i) in KEYS {
        close(&format!("{subset} {k}"), ours[i], &r[k], tol);
    }
    let per = r["per_object"].as_object().unwrap();
    assert_eq!(per.len(), rep.objects.len());
    for o in &rep.objects {
        close(
            &format!("{} J-Mean", o.name),
            o.j_stats.mean,
            &per[&o.name]["J-Mean"],
            tol,
        );
        close(
            &format!("{} F-Mean", o.name),
            o.f_stats.mean,
            &per[&o.name]["F-Mean"],
            tol,
        );
        let frames = &r["per_frame"][&o.name];
        assert_eq!(o.j, f64s(&frames["J"]), "{} per-frame J", o.name);
        assert_eq!(o.f, f64s(&frames["F"]), "{} per-frame F", o.name);
    }
    // the JSON report uses the official key names
    let j = rep.to_json();
    for (k, _) in KEYS {
        assert!(j.get(k).is_some(), "{k}");
    }
    assert!(j["per_object"].as_object().unwrap().len() == per.len());
}

#[test]
fn val_subset_matches_official_exactly() {
    // every number is the official one (same float64 operations, same summation order)
    check_subset("val", 0.0);
}

#[test]
fn long_sequence_decay_wraps_like_official() {
    check_subset("train", 0.0);
}

#[test]
fn sequences_option_selects_and_orders() {
    let opts = DavisOptions {
        sequences: Some(vec!["small".into(), "multi3".into()]),
        ..Default::default()
    };
    let rep = evaluate(
        &fixtures().join("davis/gt"),
        &fixtures().join("davis/pred"),
        &opts,
        &NoProgress,
    )
    .unwrap();
    let names: Vec<&str> = rep.objects.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["small_1", "multi3_1", "multi3_2", "multi3_3"]);
    let refs = load("davis/ref.json");
    close(
        "small_1",
        rep.objects[0].j_stats.mean,
        &refs["val"]["per_object"]["small_1"]["J-Mean"],
        0.0,
    );
}
