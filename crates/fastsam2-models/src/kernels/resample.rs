//! Bilinear resampling of host planes with PyTorch's `F.interpolate(mode="bilinear",
//! align_corners=False)` index rule (no antialias): the video predictor's outputs at video
//! resolution, SAM v1's mask post-processing and SAM 2's 256 -> 1024 mask upsampling on the
//! host path.

use rayon::prelude::*;

/// Source index and weights along one axis, as `upsample_bilinear2d` computes them.
fn axis_weights(in_len: usize, out_len: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = in_len as f32 / out_len as f32;
    (0..out_len)
        .map(|d| {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src as usize).min(in_len - 1);
            let i1 = if i0 < in_len - 1 { i0 + 1 } else { i0 };
            let l1 = src - i0 as f32;
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Bilinear resize of one `in_h x in_w` plane to `out_h x out_w` ([`resize_crop`] for a
/// window of the output).
pub fn bilinear(src: &[f32], in_h: usize, in_w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    resize_crop(src, in_h, in_w, out_h, out_w, out_h, out_w)
}

/// [`bilinear`] into `out` (`out_h * out_w` floats), e.g. one plane of a batch buffer.
pub fn bilinear_into(
    src: &[f32],
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
    out: &mut [f32],
) {
    assert_eq!(out.len(), out_h * out_w, "bilinear_into: output size");
    resize_crop_into(src, in_h, in_w, out_h, out_w, out_w, out);
}

/// Rows `0..crop_h` and columns `0..crop_w` of the bilinear resize of `src` (`in_h x in_w`)
/// to `full_h x full_w`: exactly the values of resizing and then slicing, without computing
/// the cropped-away part.
pub fn resize_crop(
    src: &[f32],
    in_h: usize,
    in_w: usize,
    full_h: usize,
    full_w: usize,
    crop_h: usize,
    crop_w: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; crop_h * crop_w];
    resize_crop_into(src, in_h, in_w, full_h, full_w, crop_w, &mut out);
    out
}

/// [`resize_crop`] into `out`: `out.len() / crop_w` rows (at most `full_h`) of `crop_w`.
fn resize_crop_into(
    src: &[f32],
    in_h: usize,
    in_w: usize,
    full_h: usize,
    full_w: usize,
    crop_w: usize,
    out: &mut [f32],
) {
    assert_eq!(src.len(), in_h * in_w);
    let wy = axis_weights(in_h, full_h);
    let wx = &axis_weights(in_w, full_w)[..crop_w];
    out.par_chunks_mut(crop_w).enumerate().for_each(|(y, row)| {
        let (y0, y1, h0, h1) = wy[y];
        let r0 = &src[y0 * in_w..(y0 + 1) * in_w];
        let r1 = &src[y1 * in_w..(y1 + 1) * in_w];
        for (o, &(x0, x1, w0, w1)) in row.iter_mut().zip(wx) {
            *o = h0 * (w0 * r0[x0] + w1 * r0[x1]) + h1 * (w0 * r1[x0] + w1 * r1[x1]);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_computed_bilinear() {
        // 2x2 -> 4x4, align_corners=False: src = (d + 0.5) / 2 - 0.5, clamped at 0.
        let src = [0.0, 1.0, 2.0, 3.0];
        let out = bilinear(&src, 2, 2, 4, 4);
        // x weights: d=0 -> src 0 (clamped); d=1 -> 0.25; d=2 -> 0.75; d=3 -> 1.25 -> i0 = 1, i1 = 1
        let row0 = [0.0, 0.25, 0.75, 1.0];
        for (x, v) in row0.iter().enumerate() {
            assert!((out[x] - v).abs() < 1e-7, "{x}: {}", out[x]);
        }
        // y = 1 (src 0.25): 0.75 * row0 + 0.25 * row1 (row1 = row0 + 2)
        for x in 0..4 {
            assert!((out[4 + x] - (row0[x] + 0.5)).abs() < 1e-6);
        }
        assert!((out[15] - 3.0).abs() < 1e-7);
    }

    #[test]
    fn crop_equals_resize_then_slice() {
        let src: Vec<f32> = (0..49).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        let full = bilinear(&src, 7, 7, 20, 20);
        let crop = resize_crop(&src, 7, 7, 20, 20, 13, 9);
        for y in 0..13 {
            for x in 0..9 {
                assert_eq!(crop[y * 9 + x], full[y * 20 + x]);
            }
        }
    }
}
