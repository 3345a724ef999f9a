//! On-disk layout readers.

use std::path::{Path, PathBuf};

use fastsam2_eval::coco::CocoGt;
use fastsam2_eval::datasets::{
    ImageMaskFolder, YouTubeVis, YouTubeVos, coco_instance_samples, load_vis_results,
};
use fastsam2_eval::mask_io::{write_binary_mask_png, write_label_png};
use fastsam2_eval::rle::Rle;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fastsam2-eval-ds-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

#[test]
fn image_and_mask_folders_pair_by_stem_with_ignore_value() {
    let d = tmpdir("imf");
    let (imgs, masks) = (d.join("img"), d.join("gt"));
    std::fs::create_dir_all(&imgs).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    write_label_png(&imgs.join("a.png"), 3, 2, &[10, 20, 30, 40, 50, 60], None).unwrap();
    // GrabCut style: 255 object, 128 ignore, 0 background
    let grey: Vec<[u8; 3]> = (0..=255u8).map(|v| [v, v, v]).collect();
    write_label_png(
        &masks.join("a.png"),
        3,
        2,
        &[0, 128, 255, 255, 0, 0],
        Some(&grey),
    )
    .unwrap();
    let f = ImageMaskFolder::open(&imgs, &masks).unwrap();
    assert_eq!(f.pairs.len(), 1);
    let (name, img, t) = f.load(0, Some(128)).unwrap();
    assert_eq!(name, "a");
    assert_eq!((img.width, img.height, t.width, t.height), (3, 2, 3, 2));
    assert_eq!(t.mask, vec![false, false, true, true, false, false]);
    assert_eq!(
        t.ignore,
        Some(vec![false, true, false, false, false, false])
    );
    // without an ignore value every non-zero pixel is the object
    write_binary_mask_png(
        &masks.join("a.png"),
        3,
        2,
        &[false, true, true, true, false, false],
    )
    .unwrap();
    let (_, _, t) = f.load(0, None).unwrap();
    assert_eq!(t.mask, vec![false, true, true, true, false, false]);
    // an image without mask
    write_label_png(&imgs.join("b.png"), 3, 2, &[0; 6], None).unwrap();
    let msg = ImageMaskFolder::open(&imgs, &masks)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("b.png") && msg.contains("mask for image"),
        "{msg}"
    );
}

#[test]
fn coco_instances_become_interactive_samples() {
    let fx = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coco/gt.json");
    let gt = CocoGt::load(&fx).unwrap();
    let samples = coco_instance_samples(&gt, Path::new("/images"));
    let non_crowd = gt.annotations.iter().filter(|a| !a.iscrowd).count();
    assert_eq!(samples.len(), non_crowd);
    let (name, path, t) = &samples[0];
    let a = &gt.annotations.iter().find(|a| !a.iscrowd).unwrap();
    assert!(name.ends_with(&format!("#{}", a.id)));
    assert!(path.starts_with("/images"));
    assert_eq!(t.mask.iter().filter(|&&b| b).count() as u64, a.rle.area());
}

#[test]
fn youtube_vos_layout() {
    let d = tmpdir("vos");
    write(
        &d.join("meta.json"),
        r#"{"videos": {"v1": {"objects": {"1": {"category": "cat", "frames": ["00000", "00005"]}, "2": {"frames": ["00005"]}}}}}"#,
    );
    for f in ["00000", "00005"] {
        write(&d.join(format!("JPEGImages/v1/{f}.jpg")), "");
    }
    std::fs::create_dir_all(d.join("Annotations/v1")).unwrap();
    write_label_png(
        &d.join("Annotations/v1/00000.png"),
        2,
        2,
        &[0, 1, 0, 0],
        None,
    )
    .unwrap();
    let vos = YouTubeVos::open(&d).unwrap();
    assert_eq!(vos.videos.len(), 1);
    let v = &vos.videos[0];
    assert_eq!((v.images.len(), v.annotations.len()), (2, 1));
    assert_eq!(v.objects[&1].category.as_deref(), Some("cat"));
    assert_eq!(v.objects[&2].frames, vec!["00005"]);
    // a frame listed in meta.json but missing on disk
    write(
        &d.join("meta.json"),
        r#"{"videos": {"v1": {"objects": {"1": {"frames": ["00010"]}}}}}"#,
    );
    let msg = YouTubeVos::open(&d).unwrap_err().to_string();
    assert!(
        msg.contains("00010.jpg") && msg.contains("meta.json"),
        "{msg}"
    );
}

#[test]
fn youtube_vis_json_and_results() {
    let d = tmpdir("vis");
    let rle = Rle::from_counts(2, 3, vec![1, 2, 3])
        .unwrap()
        .to_compressed();
    let gt = d.join("valid.json");
    write(
        &gt,
        &format!(
            r#"{{"videos": [{{"id": 1, "width": 3, "height": 2, "length": 2, "file_names": ["v/0.jpg", "v/1.jpg"]}}],
                "categories": [{{"id": 4, "name": "dog"}}],
                "annotations": [{{"id": 1, "video_id": 1, "category_id": 4, "iscrowd": 0, "areas": [2, null],
                    "segmentations": [{{"size": [2, 3], "counts": "{rle}"}}, null]}}]}}"#
        ),
    );
    let vis = YouTubeVis::load(&gt).unwrap();
    assert_eq!(vis.tracks.len(), 1);
    assert_eq!(vis.tracks[0].masks[0].as_ref().unwrap().area(), 2);
    assert!(vis.tracks[0].masks[1].is_none());
    let res = d.join("results.json");
    write(
        &res,
        &format!(
            r#"[{{"video_id": 1, "category_id": 4, "score": 0.5, "segmentations": [{{"size": [2, 3], "counts": "{rle}"}}, {{"size": [2, 3], "counts": "{rle}"}}]}}]"#
        ),
    );
    let r = load_vis_results(&res, &vis).unwrap();
    assert_eq!((r[0].id, r[0].score), (1, Some(0.5)));
    // one segmentation per frame is required
    write(
        &res,
        &format!(
            r#"[{{"video_id": 1, "category_id": 4, "score": 0.5, "segmentations": [{{"size": [2, 3], "counts": "{rle}"}}]}}]"#
        ),
    );
    let msg = load_vis_results(&res, &vis).unwrap_err().to_string();
    assert!(
        msg.contains("results[0]") && msg.contains("1 segmentations for a video of 2 frames"),
        "{msg}"
    );
    // unknown category
    write(
        &res,
        r#"[{"video_id": 1, "category_id": 5, "score": 0.5, "segmentations": [null, null]}]"#,
    );
    let msg = load_vis_results(&res, &vis).unwrap_err().to_string();
    assert!(msg.contains("unknown category id 5"), "{msg}");
}
