//! Fixed (parameter-free) encodings of SAM 2, computed on the host exactly as
//! `sam2/modeling/position_encoding.py` and `sam2_utils.py` do: the 2-D sine encoding of the
//! FPN levels and memories, the 1-D sine encoding of object-pointer offsets, and the axial
//! rotary tables of the memory attention.

use burn::tensor::{Device, Tensor};

use crate::common::tensor_from_vec;

/// `PositionEmbeddingSine(num_pos_feats, temperature=10000, normalize=True, scale=2π)` on an
/// `h x w` grid: [num_pos_feats, h, w] (y features first, then x).
pub fn sine_2d(num_pos_feats: usize, h: usize, w: usize) -> Vec<f32> {
    let npf = num_pos_feats / 2;
    let scale = 2.0 * std::f32::consts::PI;
    let eps = 1e-6f32;
    let dim_t: Vec<f32> = (0..npf)
        .map(|i| 10000f32.powf((2 * (i / 2)) as f32 / npf as f32))
        .collect();
    let enc = |v: f32, k: usize| -> f32 {
        let p = v / dim_t[k];
        if k.is_multiple_of(2) {
            p.sin()
        } else {
            p.cos()
        }
    };
    // Separable: the first half of the channels depends on y only, the second on x only, so
    // evaluate npf x (h + w) sines instead of npf x h x w (SAM 2's stride-4 level is 256 x 256
    // x 256: 16.7 M evaluations per frame otherwise) and broadcast.
    let mut out = vec![0f32; 2 * npf * h * w];
    let (y_half, x_half) = out.split_at_mut(npf * h * w);
    for k in 0..npf {
        // torch.stack((sin(even), cos(odd)), dim=4).flatten(3): interleaves pairs
        let slot = 2 * (k / 2) + (k % 2);
        let ys = &mut y_half[slot * h * w..(slot + 1) * h * w];
        for (y, row) in ys.chunks_exact_mut(w).enumerate() {
            let ye = (y + 1) as f32 / (h as f32 + eps) * scale;
            row.fill(enc(ye, k));
        }
        let xrow: Vec<f32> = (0..w)
            .map(|x| enc((x + 1) as f32 / (w as f32 + eps) * scale, k))
            .collect();
        for row in x_half[slot * h * w..(slot + 1) * h * w].chunks_exact_mut(w) {
            row.copy_from_slice(&xrow);
        }
    }
    out
}

/// [1, C, h, w] sine encoding as a tensor.
pub fn sine_2d_tensor(num_pos_feats: usize, h: usize, w: usize, device: &Device) -> Tensor<4> {
    tensor_from_vec(
        sine_2d(num_pos_feats, h, w),
        [1, num_pos_feats, h, w],
        device,
    )
}

/// `get_1d_sine_pe(pos, dim)`: [len(pos), dim] (sines then cosines).
pub fn sine_1d(pos: &[f32], dim: usize) -> Vec<f32> {
    let pe_dim = dim / 2;
    let dim_t: Vec<f32> = (0..pe_dim)
        .map(|i| 10000f32.powf((2 * (i / 2)) as f32 / pe_dim as f32))
        .collect();
    let mut out = Vec::with_capacity(pos.len() * dim);
    for &p in pos {
        out.extend(dim_t.iter().map(|d| (p / d).sin()));
        out.extend(dim_t.iter().map(|d| (p / d).cos()));
    }
    out
}

/// `compute_axial_cis(dim, end_x, end_y, theta)`: per token (row-major over y then x), dim/2
/// complex rotations as (cos, sin) pairs: the first dim/4 from the x position, the rest from y.
pub fn axial_rope(dim: usize, end_x: usize, end_y: usize, theta: f32) -> Vec<(f32, f32)> {
    let nf = dim / 4;
    let freqs: Vec<f32> = (0..nf)
        .map(|i| 1.0 / theta.powf((4 * i) as f32 / dim as f32))
        .collect();
    let mut out = Vec::with_capacity(end_x * end_y * 2 * nf);
    for t in 0..end_x * end_y {
        let (tx, ty) = ((t % end_x) as f32, (t / end_x) as f32);
        for f in &freqs {
            let a = tx * f;
            out.push((a.cos(), a.sin()));
        }
        for f in &freqs {
            let a = ty * f;
            out.push((a.cos(), a.sin()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sine_2d_hand_values() {
        // 4 features on a 1x2 grid: y uses dims 0..2, x dims 2..4; dim_t = [1, 1]
        let pe = sine_2d(4, 1, 2);
        let s = 2.0 * std::f32::consts::PI;
        let ye = 1.0 / (1.0 + 1e-6) * s;
        let xe1 = 2.0 / (2.0 + 1e-6) * s;
        // channel 0 = sin(ye), 1 = cos(ye), 2 = sin(xe), 3 = cos(xe); pixel x = 1
        assert!((pe[1] - ye.sin()).abs() < 1e-6);
        assert!((pe[2 + 1] - ye.cos()).abs() < 1e-6);
        assert!((pe[4 + 1] - xe1.sin()).abs() < 1e-6);
        assert!((pe[6 + 1] - xe1.cos()).abs() < 1e-6);
    }

    #[test]
    fn sine_1d_and_rope_hand_values() {
        let pe = sine_1d(&[0.5], 4); // dim_t = [1, 1]
        assert_eq!(
            pe,
            vec![0.5f32.sin(), 0.5f32.sin(), 0.5f32.cos(), 0.5f32.cos()]
        );
        let r = axial_rope(8, 3, 2, 10000.0); // token 4 = (x 1, y 1); freqs [1, 0.01]
        let tok = &r[4 * 4..5 * 4];
        assert!((tok[0].0 - 1f32.cos()).abs() < 1e-7 && (tok[1].1 - 0.01f32.sin()).abs() < 1e-7);
        assert!((tok[2].1 - 1f32.sin()).abs() < 1e-7);
    }
}
