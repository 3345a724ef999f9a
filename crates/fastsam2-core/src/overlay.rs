//! Overlay rendering: masks blended over the image with outlines, plus prompt markers, so a
//! result can be looked at rather than read.

use std::path::Path;

use crate::image_io::RgbImage;
use crate::prompt::{BoxXyxy, Point};

/// Distinct colours for masks (cycled).
pub const PALETTE: [[u8; 3]; 10] = [
    [30, 144, 255],
    [255, 127, 14],
    [44, 200, 44],
    [214, 39, 40],
    [148, 103, 189],
    [23, 190, 207],
    [255, 215, 0],
    [227, 119, 194],
    [140, 86, 75],
    [188, 189, 34],
];

/// Blend each mask (H x W booleans) over `img` with `alpha` and draw its outline opaque.
pub fn draw_masks(img: &RgbImage, masks: &[&[bool]], alpha: f32) -> RgbImage {
    let (h, w) = img.hw();
    let mut out = img.as_raw().to_vec();
    for (i, mask) in masks.iter().enumerate() {
        assert_eq!(mask.len(), h * w, "mask size must match the image");
        let c = PALETTE[i % PALETTE.len()];
        for y in 0..h {
            for x in 0..w {
                if !mask[y * w + x] {
                    continue;
                }
                let edge = x == 0
                    || y == 0
                    || x + 1 == w
                    || y + 1 == h
                    || !mask[y * w + x - 1]
                    || !mask[y * w + x + 1]
                    || !mask[(y - 1) * w + x]
                    || !mask[(y + 1) * w + x];
                let a = if edge { 1.0 } else { alpha };
                let px = &mut out[(y * w + x) * 3..(y * w + x) * 3 + 3];
                for k in 0..3 {
                    px[k] = (px[k] as f32 * (1.0 - a) + c[k] as f32 * a).round() as u8;
                }
            }
        }
    }
    RgbImage::from_raw(w as u32, h as u32, out).expect("same size as the input")
}

fn put(buf: &mut [u8], w: usize, h: usize, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h {
        let i = (y as usize * w + x as usize) * 3;
        buf[i..i + 3].copy_from_slice(&c);
    }
}

/// Draw clicks (green disc = positive, red = negative, with a white rim) and a box (yellow).
pub fn draw_prompts(img: &RgbImage, points: &[Point], boxes: &[BoxXyxy]) -> RgbImage {
    let (h, w) = img.hw();
    let mut buf = img.as_raw().to_vec();
    let r = ((w.max(h) as f32) / 150.0).clamp(3.0, 12.0) as i64;
    for b in boxes {
        let (x0, y0, x1, y1) = (
            b.x0.round() as i64,
            b.y0.round() as i64,
            b.x1.round() as i64,
            b.y1.round() as i64,
        );
        for t in 0..(r / 3).max(1) {
            for x in x0..=x1 {
                put(&mut buf, w, h, x, y0 + t, [255, 220, 0]);
                put(&mut buf, w, h, x, y1 - t, [255, 220, 0]);
            }
            for y in y0..=y1 {
                put(&mut buf, w, h, x0 + t, y, [255, 220, 0]);
                put(&mut buf, w, h, x1 - t, y, [255, 220, 0]);
            }
        }
    }
    for p in points {
        let c = if p.label == 1 {
            [0, 220, 0]
        } else {
            [230, 0, 0]
        };
        let (cx, cy) = (p.x.round() as i64, p.y.round() as i64);
        for dy in -r - 1..=r + 1 {
            for dx in -r - 1..=r + 1 {
                let d2 = dx * dx + dy * dy;
                if d2 <= r * r {
                    put(&mut buf, w, h, cx + dx, cy + dy, c);
                } else if d2 <= (r + 1) * (r + 1) {
                    put(&mut buf, w, h, cx + dx, cy + dy, [255, 255, 255]);
                }
            }
        }
    }
    RgbImage::from_raw(w as u32, h as u32, buf).expect("same size as the input")
}

/// Write an RGB image as PNG.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<(), image::ImageError> {
    image::save_buffer(
        path,
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blends_inside_and_outlines_edges() {
        let img = RgbImage::from_fn(5, 5, |_, _| [100, 100, 100]).unwrap();
        let mut m = vec![false; 25];
        for y in 1..4 {
            for x in 1..4 {
                m[y * 5 + x] = true;
            }
        }
        let out = draw_masks(&img, &[&m], 0.5);
        let c = PALETTE[0];
        // centre: half-way blend; edge of the mask: the colour itself; outside: untouched
        let centre = out.get_pixel(2, 2).unwrap();
        for k in 0..3 {
            assert_eq!(centre[k], (100.0 * 0.5 + c[k] as f32 * 0.5).round() as u8);
        }
        assert_eq!(out.get_pixel(1, 1).unwrap(), c);
        assert_eq!(out.get_pixel(0, 0).unwrap(), [100, 100, 100]);
    }
}
