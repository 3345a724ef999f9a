#![allow(dead_code)]
use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

pub fn load(rel: &str) -> serde_json::Value {
    let p = fixtures().join(rel);
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// `["0101", "1100"]` -> row-major bytes.
pub fn rows_to_mask(rows: &serde_json::Value) -> Vec<u8> {
    rows.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_str().unwrap().bytes().map(|b| (b == b'1') as u8))
        .collect()
}

pub fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

pub fn u32v(v: &serde_json::Value) -> u32 {
    v.as_u64().unwrap() as u32
}

/// Asserts |a - b| <= tol, treating JSON null as NaN.
pub fn close(what: &str, ours: f64, official: &serde_json::Value, tol: f64) {
    match official.as_f64() {
        None => assert!(ours.is_nan(), "{what}: ours {ours}, official null (NaN)"),
        Some(o) => assert!(
            (ours - o).abs() <= tol,
            "{what}: ours {ours:.17}, official {o:.17}, diff {:e}",
            (ours - o).abs()
        ),
    }
}
