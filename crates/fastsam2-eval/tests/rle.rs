//! COCO RLE / polygon / merge / IoU against pycocotools (tests/fixtures/rle_ref.json).

mod common;
use common::*;
use fastsam2_eval::rle::{Rle, iou};

fn arr(v: &serde_json::Value) -> &Vec<serde_json::Value> {
    v.as_array().unwrap()
}

#[test]
fn encode_decode_area_bbox_match_pycocotools() {
    let r = load("rle_ref.json");
    let cases = arr(&r["masks"]);
    assert!(cases.len() >= 30);
    for (i, c) in cases.iter().enumerate() {
        let (h, w) = (u32v(&c["h"]), u32v(&c["w"]));
        let mask = rows_to_mask(&c["rows"]);
        let rle = Rle::encode(&mask, h, w).unwrap();
        assert_eq!(
            rle.to_compressed(),
            c["counts"].as_str().unwrap(),
            "case {i}"
        );
        let back = Rle::from_compressed(c["counts"].as_str().unwrap(), h, w).unwrap();
        assert_eq!(back, rle, "case {i}");
        assert_eq!(back.decode(), mask, "case {i}");
        assert_eq!(rle.area(), c["area"].as_u64().unwrap(), "case {i}");
        assert_eq!(rle.to_bbox().to_vec(), f64s(&c["bbox"]), "case {i}");
        let bools: Vec<bool> = mask.iter().map(|&v| v != 0).collect();
        assert_eq!(Rle::encode_bool(&bools, h, w).unwrap(), rle);
    }
}

#[test]
fn polygons_rasterise_like_pycocotools() {
    let r = load("rle_ref.json");
    for (i, c) in arr(&r["polygons"]).iter().enumerate() {
        let (h, w) = (u32v(&c["h"]), u32v(&c["w"]));
        let polys: Vec<Vec<f64>> = arr(&c["polygons"]).iter().map(f64s).collect();
        for (p, part) in polys.iter().zip(arr(&c["parts"])) {
            let rle = Rle::from_polygon(p, h, w).unwrap();
            assert_eq!(rle.to_compressed(), part.as_str().unwrap(), "case {i} part");
        }
        let rle = Rle::from_polygons(&polys, h, w).unwrap();
        assert_eq!(
            rle.to_compressed(),
            c["counts"].as_str().unwrap(),
            "case {i}: {polys:?}"
        );
        assert_eq!(rle.area(), c["area"].as_u64().unwrap(), "case {i}");
        assert_eq!(rle.to_bbox().to_vec(), f64s(&c["bbox"]), "case {i}");
    }
    for (i, c) in arr(&r["bboxes"]).iter().enumerate() {
        let (h, w) = (u32v(&c["h"]), u32v(&c["w"]));
        let bb = f64s(&c["bbox"]);
        let rle = Rle::from_bbox([bb[0], bb[1], bb[2], bb[3]], h, w).unwrap();
        assert_eq!(
            rle.to_compressed(),
            c["counts"].as_str().unwrap(),
            "bbox case {i}"
        );
        assert_eq!(rle.area(), c["area"].as_u64().unwrap());
    }
}

#[test]
fn uncompressed_rle_and_merge_match_pycocotools() {
    let r = load("rle_ref.json");
    for c in arr(&r["uncompressed"]) {
        let (h, w) = (u32v(&c["h"]), u32v(&c["w"]));
        let counts: Vec<u32> = arr(&c["counts_list"]).iter().map(u32v).collect();
        let rle = Rle::from_counts(h, w, counts).unwrap();
        assert_eq!(rle.to_compressed(), c["counts"].as_str().unwrap());
        assert_eq!(rle.area(), c["area"].as_u64().unwrap());
        assert_eq!(rle.decode(), rows_to_mask(&c["rows"]));
    }
    for (i, c) in arr(&r["merge"]).iter().enumerate() {
        let (h, w) = (u32v(&c["h"]), u32v(&c["w"]));
        let inputs: Vec<Rle> = arr(&c["inputs"])
            .iter()
            .map(|s| Rle::from_compressed(s.as_str().unwrap(), h, w).unwrap())
            .collect();
        assert_eq!(
            Rle::merge(&inputs, false).to_compressed(),
            c["union"].as_str().unwrap(),
            "merge {i}"
        );
        assert_eq!(
            Rle::merge(&inputs, true).to_compressed(),
            c["intersection"].as_str().unwrap(),
            "merge {i}"
        );
    }
}

#[test]
fn iou_matrix_matches_pycocotools_bit_for_bit() {
    let r = load("rle_ref.json");
    for (i, c) in arr(&r["iou"]).iter().enumerate() {
        let (h, w) = (u32v(&c["h"]), u32v(&c["w"]));
        let parse = |k: &str| -> Vec<Rle> {
            arr(&c[k])
                .iter()
                .map(|s| Rle::from_compressed(s.as_str().unwrap(), h, w).unwrap())
                .collect()
        };
        let (dt, gt) = (parse("dt"), parse("gt"));
        let crowd: Vec<bool> = arr(&c["iscrowd"])
            .iter()
            .map(|v| v.as_i64().unwrap() != 0)
            .collect();
        let ours = iou(&dt, &gt, &crowd);
        let official: Vec<f64> = arr(&c["iou"]).iter().flat_map(f64s).collect();
        assert_eq!(ours, official, "iou case {i}");
    }
}
