//! Data loading and augmentation.

mod common;

use common::root;
use fastsam2_train::config::{AugmentSection, SourceSection};
use fastsam2_train::data::{Sample, augment, load_source};
use fastsam2_train::rng::Rng;

#[test]
fn coco_fixture_polygons_and_rle_match_their_areas() {
    let src = SourceSection {
        images: root().join("fixtures/train/coco/images"),
        masks: None,
        coco: Some(root().join("fixtures/train/coco/instances.json")),
    };
    let samples = load_source(&src, false).unwrap();
    assert_eq!(samples.len(), 27);
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/train/coco/instances.json")).unwrap(),
    )
    .unwrap();
    let (mut polys, mut rles) = (0, 0);
    for (s, a) in samples.iter().zip(json["annotations"].as_array().unwrap()) {
        let area = a["area"].as_f64().unwrap();
        let n = s.mask.iter().filter(|&&b| b).count() as f64;
        if a["segmentation"].is_array() {
            polys += 1;
            // pixel-corner polygons traced from the mask rasterise back to (almost) the mask
            assert!(
                (n - area).abs() <= 0.03 * area + 4.0,
                "{}: {n} vs {area}",
                s.name
            );
        } else {
            rles += 1;
            assert_eq!(n, area, "{}", s.name);
        }
    }
    assert!(polys > 0 && rles > 0);
}

fn checker_sample() -> Sample {
    // The image encodes each pixel's own mask value in its red channel.
    let (w, h) = (40u32, 30u32);
    let mask: Vec<bool> = (0..w * h)
        .map(|i| ((i % w) / 5 + (i / w) / 5) % 2 == 0)
        .collect();
    let img = fastsam2_core::image_io::RgbImage::from_fn(w, h, |x, y| {
        let m = mask[(y * w + x) as usize];
        [if m { 250 } else { 5 }, (x * 6) as u8, (y * 8) as u8]
    })
    .unwrap();
    Sample {
        name: "checker".into(),
        image: std::sync::Arc::new(img),
        mask: std::sync::Arc::new(mask),
    }
}

#[test]
fn geometric_augmentation_moves_image_and_mask_together() {
    let s = checker_sample();
    let cfg = AugmentSection {
        hflip: 0.5,
        vflip: 0.5,
        scale_crop: 1.0,
        scale_min: 0.7,
        scale_max: 1.4,
        ..AugmentSection::none()
    };
    for seed in 0..20 {
        let a = augment(&s, &cfg, &mut Rng::new(seed, &[1]));
        let raw = a.image.as_raw();
        let mut agree = 0;
        let mut total = 0;
        for (i, &m) in a.mask.iter().enumerate() {
            let r = raw[i * 3];
            if r == 0 {
                continue; // black border of a zoom-out
            }
            total += 1;
            agree += ((r > 127) == m) as usize;
        }
        // bilinear image vs nearest mask differ only on block edges
        assert!(
            agree as f64 > 0.85 * total as f64,
            "seed {seed}: {agree}/{total}"
        );
    }
}

#[test]
fn augmentation_is_a_function_of_its_seed() {
    let s = checker_sample();
    let cfg = AugmentSection::default();
    let a = augment(&s, &cfg, &mut Rng::new(3, &[9, 2]));
    let b = augment(&s, &cfg, &mut Rng::new(3, &[9, 2]));
    assert_eq!(a.image, b.image);
    assert_eq!(a.mask, b.mask);
    let c = augment(&s, &AugmentSection::none(), &mut Rng::new(3, &[9, 2]));
    assert_eq!(c.image.as_raw(), s.image.as_raw());
    assert_eq!(&c.mask, s.mask.as_ref());
}
