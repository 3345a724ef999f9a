//! `load_rgb` / `decode_rgb` against `np.asarray(PIL.Image.open(p).convert("RGB"))`.

mod common;

use common::{fixture, manifest, read_npy};
use fastsam2_core::image_io::{ImageError, RgbImage, decode_rgb, decode_rgb_named, load_rgb};

fn io_path(name: &str) -> std::path::PathBuf {
    fixture("io").join(name)
}

#[test]
fn png_all_color_types_match_pillow_exactly() {
    let m = manifest("io");
    let cases: Vec<_> = m["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["exact"].as_bool() == Some(true))
        .collect();
    assert_eq!(cases.len(), 17, "expected 17 PNG variants");
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let want = read_npy(io_path(case["expected"].as_str().unwrap()));
        let got = load_rgb(io_path(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            vec![got.height() as usize, got.width() as usize, 3],
            want.shape,
            "{file}"
        );
        assert_eq!(got.as_raw(), want.u8(), "{file} ({})", case["note"]);
    }
}

#[test]
fn sixteen_bit_gray_is_clipped_like_pillow() {
    // Pillow opens 16-bit gray PNG as I;16 and clips to 255 on convert("RGB").
    let got = load_rgb(io_path("gray16.png")).unwrap();
    let first_row: Vec<u8> = got.as_raw()[..got.width() as usize * 3]
        .iter()
        .step_by(3)
        .copied()
        .collect();
    // The generator wrote v = 40 * x in the first row.
    let expected: Vec<u8> = (0..got.width()).map(|x| (40 * x).min(255) as u8).collect();
    assert_eq!(first_row, expected);
}

#[test]
fn jpeg_within_two_levels_of_pillow() {
    let m = manifest("io");
    let cases: Vec<_> = m["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["exact"].as_bool() == Some(false))
        .collect();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let want = read_npy(io_path(case["expected"].as_str().unwrap()));
        let got = load_rgb(io_path(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            vec![got.height() as usize, got.width() as usize, 3],
            want.shape,
            "{file}: EXIF orientation must not be applied"
        );
        let diffs: Vec<i16> = got
            .as_raw()
            .iter()
            .zip(want.u8())
            .map(|(&a, &b)| (i16::from(a) - i16::from(b)).abs())
            .collect();
        let max = diffs.iter().copied().max().unwrap();
        let off = diffs.iter().filter(|&&d| d != 0).count();
        let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
        eprintln!(
            "{file}: max |diff| {max}, {off}/{} samples differ, mean |diff| {mean:.4}",
            diffs.len()
        );
        // Observed on these fixtures: max 3 (4:2:0 chroma upsampling), max 2
        // for 4:4:4, max 1 for grayscale.
        assert!(max <= 3, "{file}: max diff {max}");

        assert!(mean < 0.25, "{file}: mean diff {mean}");
    }
}

#[test]
fn decode_from_bytes_equals_load() {
    for name in ["rgb8.png", "palette4.png", "photo_q90_420.jpg"] {
        let bytes = std::fs::read(io_path(name)).unwrap();
        assert_eq!(
            decode_rgb(&bytes).unwrap(),
            load_rgb(io_path(name)).unwrap(),
            "{name}"
        );
    }
}

fn err_of(name: &str) -> ImageError {
    match load_rgb(io_path(name)) {
        Ok(img) => panic!("{name} decoded unexpectedly: {img:?}"),
        Err(e) => e,
    }
}

fn assert_names_file(e: &ImageError, name: &str) {
    let msg = e.to_string();
    assert!(msg.contains(name), "error does not name the file: {msg}");
}

#[test]
fn truncated_png_is_corrupt() {
    let e = err_of("bad_truncated.png");
    assert!(matches!(e, ImageError::Corrupt { .. }), "{e:?}");
    assert_names_file(&e, "bad_truncated.png");
}

#[test]
fn truncated_jpeg_is_corrupt() {
    let e = err_of("bad_truncated.jpg");
    assert!(matches!(e, ImageError::Corrupt { .. }), "{e:?}");
    assert_names_file(&e, "bad_truncated.jpg");
}

#[test]
fn random_bytes_are_unsupported() {
    let e = err_of("bad_random.png");
    assert!(matches!(e, ImageError::UnsupportedFormat { .. }), "{e:?}");
    assert_names_file(&e, "bad_random.png");
}

#[test]
fn text_file_renamed_png_is_unsupported() {
    let e = err_of("bad_text.png");
    assert!(matches!(e, ImageError::UnsupportedFormat { .. }), "{e:?}");
    assert_names_file(&e, "bad_text.png");
}

#[test]
fn empty_file_is_reported() {
    let e = err_of("bad_empty.png");
    assert!(matches!(e, ImageError::EmptyFile { .. }), "{e:?}");
    assert_names_file(&e, "bad_empty.png");
}

#[test]
fn zero_width_png_is_zero_sized() {
    let e = err_of("bad_zero_width.png");
    assert!(
        matches!(
            e,
            ImageError::ZeroSized {
                width: 0,
                height: 5,
                ..
            }
        ),
        "{e:?}"
    );
    assert_names_file(&e, "bad_zero_width.png");
}

#[test]
fn gif_is_unsupported_format() {
    let e = err_of("unsupported.gif");
    assert!(matches!(e, ImageError::UnsupportedFormat { .. }), "{e:?}");
    assert!(e.to_string().contains("Gif"), "{e}");
}

#[test]
fn missing_file_is_not_found() {
    let e = err_of("does_not_exist.png");
    assert!(matches!(e, ImageError::NotFound { .. }), "{e:?}");
    assert_names_file(&e, "does_not_exist.png");
}

#[test]
fn directory_is_unreadable() {
    let e = load_rgb(fixture("io")).unwrap_err();
    assert!(matches!(e, ImageError::Unreadable { .. }), "{e:?}");
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn in_memory_errors_are_labelled() {
    let e = decode_rgb(b"").unwrap_err();
    assert!(matches!(e, ImageError::EmptyFile { .. }));
    assert!(e.to_string().contains("<in-memory image>"), "{e}");
    let e = decode_rgb_named(b"GIF89a-not-really", "frame_0001.gif").unwrap_err();
    assert!(e.to_string().contains("frame_0001.gif"), "{e}");
}

/// Offset just past the data (before the CRC) of the last IDAT chunk.
fn png_pixel_data_end(bytes: &[u8]) -> usize {
    let mut pos = 8;
    let mut end = 0;
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if &bytes[pos + 4..pos + 8] == b"IDAT" {
            end = pos + 8 + len;
        }
        pos += 12 + len;
    }
    end
}

#[test]
fn every_truncation_fails_cleanly() {
    // No panic for any truncation point.  Every prefix that cuts into the
    // pixel data is an error (as in Pillow).  For JPEG even a missing final
    // EOI byte is an error (Pillow: "image file is truncated").  A PNG cut
    // after its pixel data (inside the IDAT CRC or IEND) is rejected here,
    // although Pillow accepts it.
    for name in ["rgb8.png", "palette8_trns.png", "rgb16.png"] {
        let bytes = std::fs::read(io_path(name)).unwrap();
        let data_end = png_pixel_data_end(&bytes);
        assert!(data_end > 100 && data_end < bytes.len());
        for len in 0..bytes.len() {
            let r = decode_rgb(&bytes[..len]);
            if len < data_end {
                assert!(
                    r.is_err(),
                    "{name}: prefix of {len}/{} bytes decoded",
                    bytes.len()
                );
            }
        }
        assert!(decode_rgb(&bytes).is_ok());
    }
    for name in ["photo_q90_420.jpg", "photo_gray.jpg"] {
        let bytes = std::fs::read(io_path(name)).unwrap();
        for len in 0..bytes.len() {
            let e = decode_rgb(&bytes[..len]).expect_err("truncated JPEG must fail");
            assert!(
                matches!(
                    e,
                    ImageError::Corrupt { .. }
                        | ImageError::UnsupportedFormat { .. }
                        | ImageError::EmptyFile { .. }
                ),
                "{name}[..{len}]: {e:?}"
            );
        }
        assert!(decode_rgb(&bytes).is_ok());
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    // Flip bytes across a valid PNG and JPEG: the decoder may succeed or fail,
    // but must not panic; failures must be typed errors.
    for name in ["rgb16.png", "photo_q95_444.jpg"] {
        let bytes = std::fs::read(io_path(name)).unwrap();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut errors = 0;
        for _ in 0..300 {
            let mut b = bytes.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state % b.len() as u64) as usize;
                b[i] ^= (state >> 32) as u8 | 1;
            }
            match decode_rgb(&b) {
                Ok(img) => assert!(img.width() > 0 && img.height() > 0),
                Err(_) => errors += 1,
            }
        }
        assert!(errors > 0, "{name}: corruption never detected");
    }
}

#[test]
fn rgb_image_round_trip() {
    let img = RgbImage::from_raw(2, 1, vec![1, 2, 3, 4, 5, 6]).unwrap();
    assert_eq!(img.get_pixel(1, 0), Some([4, 5, 6]));
    assert_eq!(img.into_raw(), vec![1, 2, 3, 4, 5, 6]);
}
