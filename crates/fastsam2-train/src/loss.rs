//! Losses on low-resolution mask logits, as SAM trains: focal (×20) + dice (×1) on the masks,
//! MSE between the IoU head and the real IoU of each predicted mask; `dice_bce` and `focal`
//! alternatives. Every term is a per-(sample, mask) mean over the valid (non-padding) cells.

use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;

use crate::config::{IouLossKind, LossKind, LossSection};

/// softplus(x) = log(1 + e^x), stable.
fn softplus(x: Tensor<4>) -> Tensor<4> {
    x.clone().clamp_min(0.0) + (-x.abs()).exp().log1p()
}

/// Per-(sample, mask) segmentation loss, [B, K]. `logits`: [B, K, H, W]; `target`, `valid`:
/// [B, 1, H, W] (broadcast over K).
pub fn segmentation_loss(
    cfg: &LossSection,
    logits: Tensor<4>,
    target: Tensor<4>,
    valid: Tensor<4>,
) -> Tensor<2> {
    let [b, k, h, w] = logits.dims();
    let target = target.expand([b, k, h, w]);
    let valid = valid.expand([b, k, h, w]);
    let n_valid = valid
        .clone()
        .sum_dim(3)
        .sum_dim(2)
        .reshape([b, k])
        .clamp_min(1.0);
    // BCE with logits: softplus(z) - z t.
    let ce = softplus(logits.clone()) - logits.clone() * target.clone();
    let p = sigmoid(logits);
    let mean =
        |x: Tensor<4>| (x * valid.clone()).sum_dim(3).sum_dim(2).reshape([b, k]) / n_valid.clone();
    let focal = || {
        let p_t =
            p.clone() * target.clone() + (p.clone().neg() + 1.0) * (target.clone().neg() + 1.0);
        let modulating = (p_t.neg() + 1.0).powf_scalar(cfg.focal_gamma);
        let alpha_t = target.clone() * cfg.focal_alpha
            + (target.clone().neg() + 1.0) * (1.0 - cfg.focal_alpha);
        let f = if cfg.focal_alpha >= 0.0 {
            ce.clone() * modulating * alpha_t
        } else {
            ce.clone() * modulating
        };
        mean(f)
    };
    let dice = || {
        let pv = p.clone() * valid.clone();
        let inter = (pv.clone() * target.clone())
            .sum_dim(3)
            .sum_dim(2)
            .reshape([b, k]);
        let ps = pv.sum_dim(3).sum_dim(2).reshape([b, k]);
        let ts = (target.clone() * valid.clone())
            .sum_dim(3)
            .sum_dim(2)
            .reshape([b, k]);
        ((inter * 2.0 + 1.0) / (ps + ts + 1.0)).neg() + 1.0
    };
    match cfg.kind {
        LossKind::FocalDice => focal() * cfg.focal_weight + dice() * cfg.dice_weight,
        LossKind::DiceBce => mean(ce.clone()) * cfg.bce_weight + dice() * cfg.dice_weight,
        LossKind::Focal => focal() * cfg.focal_weight,
    }
}

/// The real IoU of each binarised mask (logit > 0) with the binarised target (>= 0.5) over
/// valid cells, computed on the host (it is a regression target, not differentiated).
pub fn real_iou(logits: &[f32], target: &[f32], valid: &[f32], b: usize, k: usize) -> Vec<f32> {
    let n = target.len() / b;
    let mut out = Vec::with_capacity(b * k);
    for i in 0..b {
        for j in 0..k {
            let z = &logits[(i * k + j) * n..(i * k + j + 1) * n];
            let t = &target[i * n..(i + 1) * n];
            let v = &valid[i * n..(i + 1) * n];
            let (mut inter, mut union) = (0u32, 0u32);
            for c in 0..n {
                if v[c] == 0.0 {
                    continue;
                }
                let (pp, tt) = (z[c] > 0.0, t[c] >= 0.5);
                inter += (pp && tt) as u32;
                union += (pp || tt) as u32;
            }
            out.push(if union == 0 {
                1.0
            } else {
                inter as f32 / union as f32
            });
        }
    }
    out
}

/// IoU-head loss, [B, K].
pub fn iou_loss(cfg: &LossSection, pred: Tensor<2>, real: Tensor<2>) -> Tensor<2> {
    let d = pred - real;
    match cfg.iou_loss {
        IouLossKind::Mse => d.clone() * d,
        IouLossKind::L1 => d.abs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use fastsam2_models::common::{tensor_from_vec, tensor_to_vec};

    fn sig(z: f64) -> f64 {
        1.0 / (1.0 + (-z).exp())
    }

    /// The tensor losses against a scalar re-implementation of the PyTorch formulas
    /// (`sigmoid_focal_loss` of torchvision, soft dice with +1 smoothing, BCE with logits).
    #[test]
    fn matches_scalar_formulas() {
        let dev = Device::flex();
        let z = [2.0f32, -1.0, 0.5, -3.0, 4.0, 0.0];
        let t = [1.0f32, 0.0, 0.5, 0.0, 1.0, 1.0];
        let v = [1.0f32, 1.0, 1.0, 1.0, 0.0, 1.0]; // one padding cell
        let zt = tensor_from_vec(z.to_vec(), [1, 1, 2, 3], &dev);
        let tt = tensor_from_vec(t.to_vec(), [1, 1, 2, 3], &dev);
        let vt = tensor_from_vec(v.to_vec(), [1, 1, 2, 3], &dev);
        let (mut focal, mut bce, mut inter, mut ps, mut ts, mut n) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for i in 0..6 {
            if v[i] == 0.0 {
                continue;
            }
            let (z, t) = (z[i] as f64, t[i] as f64);
            let p = sig(z);
            let ce = -(t * p.ln() + (1.0 - t) * (1.0 - p).ln());
            let p_t = p * t + (1.0 - p) * (1.0 - t);
            focal += ce * (1.0 - p_t).powi(2) * (0.25 * t + 0.75 * (1.0 - t));
            bce += ce;
            inter += p * t;
            ps += p;
            ts += t;
            n += 1.0;
        }
        let dice = 1.0 - (2.0 * inter + 1.0) / (ps + ts + 1.0);
        let mut cfg = LossSection::default();
        let got =
            tensor_to_vec(segmentation_loss(&cfg, zt.clone(), tt.clone(), vt.clone()))[0] as f64;
        let want = 20.0 * focal / n + dice;
        assert!((got - want).abs() < 1e-5, "focal_dice {got} vs {want}");
        cfg.kind = LossKind::DiceBce;
        let got = tensor_to_vec(segmentation_loss(&cfg, zt, tt, vt))[0] as f64;
        let want = bce / n + dice;
        assert!((got - want).abs() < 1e-5, "dice_bce {got} vs {want}");
    }

    #[test]
    fn real_iou_counts_valid_cells_only() {
        // pred > 0: [1, 1, 0, 1]; target >= 0.5: [1, 0, 0, 1]; last cell is padding.
        let iou = real_iou(
            &[1.0, 2.0, -1.0, 3.0],
            &[1.0, 0.0, 0.4, 0.6],
            &[1.0, 1.0, 1.0, 0.0],
            1,
            1,
        );
        assert_eq!(iou, vec![0.5]);
    }
}
