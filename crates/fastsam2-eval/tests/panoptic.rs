//! Panoptic PQ / SQ / RQ against panopticapi (tests/fixtures/panoptic).
//!
//! The fixture has void pixels, crowd segments with predictions on them, false positives
//! lying mostly on void, a ground-truth segment listed in the JSON but absent from the PNG,
//! a JSON `area` that differs from the pixel count, wrong-category predictions, and a stuff
//! category that never occurs (left out of the averages).

mod common;
use common::*;
use fastsam2_eval::NoProgress;
use fastsam2_eval::panoptic::evaluate;

#[test]
fn pq_matches_panopticapi() {
    let r = load("panoptic/ref.json");
    let f = fixtures().join("panoptic");
    let rep = evaluate(
        &f.join("gt.json"),
        &f.join("gt"),
        &f.join("pred.json"),
        &f.join("pred"),
        &NoProgress,
    )
    .unwrap();
    // panopticapi sums IoUs per worker process and then across processes; we sum in image
    // order, so the last bits of a sum may differ: 1e-12 is far below the 1e-6 target.
    let tol = 1e-12;
    for (name, s) in [
        ("All", &rep.all),
        ("Things", &rep.things),
        ("Stuff", &rep.stuff),
    ] {
        close(&format!("{name} pq"), s.pq, &r[name]["pq"], tol);
        close(&format!("{name} sq"), s.sq, &r[name]["sq"], tol);
        close(&format!("{name} rq"), s.rq, &r[name]["rq"], tol);
        assert_eq!(s.n as u64, r[name]["n"].as_u64().unwrap(), "{name} n");
    }
    let per = r["per_class"].as_object().unwrap();
    assert_eq!(per.len(), rep.per_class.len());
    for c in &rep.per_class {
        let o = &per[&c.id.to_string()];
        close(&format!("class {} pq", c.id), c.pq, &o["pq"], tol);
        close(&format!("class {} sq", c.id), c.sq, &o["sq"], tol);
        close(&format!("class {} rq", c.id), c.rq, &o["rq"], tol);
    }
    let j = rep.to_json();
    for k in ["All", "Things", "Stuff"] {
        for f in ["pq", "sq", "rq", "n"] {
            assert!(j[k].get(f).is_some());
        }
    }
}
