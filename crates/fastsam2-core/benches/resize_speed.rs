//! Timing of the resize paths on a 4000x3000 photo-sized input:
//! `cargo bench -p fastsam2-core --bench resize_speed`.

use std::time::{Duration, Instant};

use fastsam2_core::image_io::RgbImage;
use fastsam2_core::resize::{
    PilFilter, pil_resize, sam_v1_preprocess, sam2_image_preprocess, sam2_video_frame_preprocess,
};

fn synthetic_photo(w: u32, h: u32) -> RgbImage {
    // Smooth gradients plus a little xorshift noise: photo-like statistics.
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    RgbImage::from_fn(w, h, |x, y| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let n = (s & 15) as u32;
        [
            ((x * 255 / w + n) & 255) as u8,
            ((y * 255 / h + n) & 255) as u8,
            (((x + y) * 127 / (w + h) + n) & 255) as u8,
        ]
    })
    .expect("non-empty")
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed());
        last = Some(r);
    }
    (best, last.expect("runs > 0"))
}

fn main() {
    let img = synthetic_photo(4000, 3000);
    let (t, out) = best_of(5, || {
        pil_resize(&img, 1024, 768, PilFilter::Bilinear).unwrap()
    });
    assert_eq!((out.width(), out.height()), (1024, 768));
    eprintln!(
        "pil_resize bilinear 4000x3000 -> 1024x768: {:.1} ms",
        t.as_secs_f64() * 1e3
    );
    let (t, _) = best_of(5, || {
        pil_resize(&img, 1024, 1024, PilFilter::Bicubic).unwrap()
    });
    eprintln!(
        "pil_resize bicubic 4000x3000 -> 1024x1024: {:.1} ms",
        t.as_secs_f64() * 1e3
    );
    let (t, p) = best_of(3, || sam_v1_preprocess(&img, 1024).unwrap());
    assert_eq!(p.resized_hw, (768, 1024));
    eprintln!(
        "sam_v1_preprocess 4000x3000: {:.1} ms",
        t.as_secs_f64() * 1e3
    );
    let (t, _) = best_of(3, || sam2_video_frame_preprocess(&img, 1024).unwrap());
    eprintln!(
        "sam2_video_frame_preprocess 4000x3000: {:.1} ms",
        t.as_secs_f64() * 1e3
    );
    let (t, _) = best_of(3, || sam2_image_preprocess(&img, 1024).unwrap());
    eprintln!(
        "sam2_image_preprocess 4000x3000: {:.1} ms",
        t.as_secs_f64() * 1e3
    );
    let small = synthetic_photo(320, 240);
    let (t, _) = best_of(5, || sam2_image_preprocess(&small, 1024).unwrap());
    eprintln!(
        "sam2_image_preprocess 320x240 (upscale): {:.1} ms",
        t.as_secs_f64() * 1e3
    );
}
