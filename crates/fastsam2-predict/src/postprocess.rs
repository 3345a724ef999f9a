//! Mask post-processing on host buffers: the SAM v1 chain low-res -> padded input size ->
//! crop -> original size, on the bilinear resampling of `fastsam2_models::kernels::resample`
//! (PyTorch's `F.interpolate(mode="bilinear", align_corners=False)` index rule, no
//! antialias), re-exported here.

pub use fastsam2_models::kernels::resample::{bilinear, resize_crop};

/// SAM v1 `postprocess_masks` for one low-res mask: upsample to `img_size`, crop to the
/// resized input `(in_h, in_w)`, resize to the original `(h, w)`.
pub fn sam_postprocess(
    low: &[f32],
    low_size: usize,
    img_size: usize,
    (in_h, in_w): (usize, usize),
    (h, w): (usize, usize),
) -> Vec<f32> {
    let cropped = resize_crop(low, low_size, low_size, img_size, img_size, in_h, in_w);
    if (in_h, in_w) == (h, w) {
        return cropped;
    }
    bilinear(&cropped, in_h, in_w, h, w)
}
