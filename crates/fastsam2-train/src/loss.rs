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

/// Per-(sample, mask) segmentation loss, [B, K]. `logits`: [B, K, L, L]; `target`, `valid`:
/// [B, 1, L, L] (broadcast over K).
pub fn segmentation_loss(
    cfg: &LossSection,
    logits: Tensor<4>,
    target: Tensor<4>,
    valid: Tensor<4>,
) -> Tensor<2> {
    let [b, k, l, _] = logits.dims();
    let target = target.expand([b, k, l, l]);
    let valid = valid.expand([b, k, l, l]);
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
