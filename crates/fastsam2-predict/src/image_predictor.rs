//! `ImagePredictor`: encode an image once, then decode any number of prompt sets against the
//! cached embedding (the `SamPredictor` workflow), single or batched.

use std::sync::Arc;
use std::time::Instant;

use burn::tensor::{Device, Tensor};
use fastsam2_core::image_io::RgbImage;
use fastsam2_core::prompt::Prompt;
use fastsam2_core::resize::{
    SAM_V1_PIXEL_MEAN, SAM_V1_PIXEL_STD, sam_v1_preprocess, sam2_image_preprocess,
};
use fastsam2_models::common::{tensor_from_vec, tensor_to_vec};
use fastsam2_models::loader::{LoadedModel, Network};
use fastsam2_models::mask_decoder::MaskDecoder;
use fastsam2_models::prompt_encoder::{PointInput, PromptEncoder};
use fastsam2_models::registry::ModelConfig;
use rayon::prelude::*;

use crate::error::{PredictError, Result};
use crate::postprocess::sam_postprocess;

/// Masks predicted for one prompt set.
#[derive(Clone, Debug)]
pub struct Prediction {
    /// Number of masks K (3 with multimask output, else 1), in the model's output order.
    pub num_masks: usize,
    /// Original image size.
    pub height: usize,
    pub width: usize,
    /// K x H x W mask logits at the original image size (mask = logit > 0).
    pub logits: Vec<f32>,
    /// K predicted IoU scores.
    pub scores: Vec<f32>,
    /// K x S x S low-resolution logits (S = 256), reusable as a mask input.
    pub low_res_logits: Vec<f32>,
    pub low_res_size: usize,
}

impl Prediction {
    /// Logits of mask `k` (H x W).
    pub fn mask_logits(&self, k: usize) -> &[f32] {
        let n = self.height * self.width;
        &self.logits[k * n..(k + 1) * n]
    }

    /// Binary mask `k` (logit > 0), H x W.
    pub fn mask(&self, k: usize) -> Vec<bool> {
        self.mask_logits(k).iter().map(|&v| v > 0.0).collect()
    }

    /// Low-resolution logits of mask `k` (S x S).
    pub fn low_res(&self, k: usize) -> &[f32] {
        let n = self.low_res_size * self.low_res_size;
        &self.low_res_logits[k * n..(k + 1) * n]
    }

    /// Index of the mask with the highest predicted IoU.
    pub fn best(&self) -> usize {
        (0..self.num_masks)
            .max_by(|&a, &b| self.scores[a].total_cmp(&self.scores[b]))
            .unwrap_or(0)
    }
}

/// Image features computed by [`ImagePredictor::set_image`].
#[derive(Clone, Debug)]
pub struct EncodedImage {
    /// [1, C, 64, 64] (SAM 2: with `no_mem_embed` added, as `SAM2ImagePredictor` does).
    pub features: Tensor<4>,
    /// SAM 2: the high-resolution levels after `conv_s0` / `conv_s1`.
    pub high_res: Option<(Tensor<4>, Tensor<4>)>,
    pub original_hw: (usize, usize),
    /// Size of the resized image inside the padded encoder input.
    pub input_hw: (usize, usize),
}

/// Promptable image segmentation with any SAM v1 family model.
pub struct ImagePredictor {
    model: Arc<LoadedModel>,
    device: Device,
    image: Option<EncodedImage>,
    dense_pe: Tensor<4>,
}

impl ImagePredictor {
    pub fn new(model: LoadedModel, device: Device) -> Self {
        Self::from_shared(Arc::new(model), device)
    }

    pub fn from_shared(model: Arc<LoadedModel>, device: Device) -> Self {
        let dense_pe = match &model.network {
            Network::Sam(sam) => sam.prompt_encoder.get_dense_pe(),
            Network::Sam2(sam2) => sam2.sam_prompt_encoder.get_dense_pe(),
        };
        Self {
            model,
            device,
            image: None,
            dense_pe,
        }
    }

    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    fn prompt_encoder(&self) -> &PromptEncoder {
        match &self.model.network {
            Network::Sam(s) => &s.prompt_encoder,
            Network::Sam2(s) => &s.sam_prompt_encoder,
        }
    }

    fn mask_decoder(&self) -> &MaskDecoder {
        match &self.model.network {
            Network::Sam(s) => &s.mask_decoder,
            Network::Sam2(s) => &s.sam_mask_decoder,
        }
    }

    /// Side of the square encoder input (1024 for every official model).
    pub fn img_size(&self) -> usize {
        self.prompt_encoder().input_image_size[0]
    }

    /// Side of the low-resolution masks (256).
    pub fn low_res_size(&self) -> usize {
        4 * self.prompt_encoder().image_embedding_size[0]
    }

    fn is_sam2(&self) -> bool {
        matches!(self.model.network, Network::Sam2(_))
    }

    pub fn encoded(&self) -> Option<&EncodedImage> {
        self.image.as_ref()
    }

    pub fn reset_image(&mut self) {
        self.image = None;
    }

    /// Preprocess (PIL-exact resize of the longest side, normalise, pad) and encode `img`.
    pub fn set_image(&mut self, img: &RgbImage) -> Result<()> {
        let (h, w) = img.hw();
        if h == 0 || w == 0 {
            return Err(PredictError::EmptyImage {
                width: w,
                height: h,
            });
        }
        let t0 = Instant::now();
        let size = self.img_size();
        match &self.model.network {
            Network::Sam(sam) => {
                let pre = sam_v1_preprocess(img, size)?;
                let mut data = pre.data;
                if let ModelConfig::Sam(cfg) = &self.model.config
                    && (cfg.pixel_mean != SAM_V1_PIXEL_MEAN || cfg.pixel_std != SAM_V1_PIXEL_STD)
                {
                    renormalise(
                        &mut data,
                        size,
                        pre.resized_hw,
                        cfg.pixel_mean,
                        cfg.pixel_std,
                    );
                }
                let x = tensor_from_vec(data, [1, 3, size, size], &self.device);
                let features = sam.image_encoder.forward(x);
                self.image = Some(EncodedImage {
                    features,
                    high_res: None,
                    original_hw: pre.original_hw,
                    input_hw: pre.resized_hw,
                });
            }
            Network::Sam2(sam2) => {
                // SAM2ImagePredictor: torchvision resize to size x size (no padding), features
                // of the last level plus no_mem_embed
                let pre = sam2_image_preprocess(img, size)?;
                let x = tensor_from_vec(pre.data, [1, 3, size, size], &self.device);
                let f = sam2.encode_frame(x);
                let mut features = f.vision_feat;
                if sam2.config().directly_add_no_mem_embed {
                    let [_, c, _, _] = features.dims();
                    features = features + sam2.no_mem_embed.val().reshape([1, c, 1, 1]);
                }
                self.image = Some(EncodedImage {
                    features,
                    high_res: Some(f.high_res),
                    original_hw: pre.original_hw,
                    input_hw: (size, size),
                });
            }
        }
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, "image encoded");
        Ok(())
    }

    /// Use precomputed features (e.g. from a cache) for an image of `original_hw`.
    pub fn set_features(
        &mut self,
        features: Tensor<4>,
        high_res: Option<(Tensor<4>, Tensor<4>)>,
        original_hw: (usize, usize),
    ) {
        let (h, w) = original_hw;
        let size = self.img_size();
        let input_hw = if self.is_sam2() {
            (size, size)
        } else {
            fastsam2_core::resize::longest_side_size(h, w, size)
        };
        self.image = Some(EncodedImage {
            features,
            high_res,
            original_hw,
            input_hw,
        });
    }

    /// Masks for one prompt set.
    pub fn predict(&self, prompt: &Prompt, multimask: bool) -> Result<Prediction> {
        let mut v = self.predict_batch(std::slice::from_ref(prompt), multimask)?;
        Ok(v.remove(0))
    }

    /// Masks for many prompt sets against the same image. Prompt sets with the same shape
    /// (number of points, box or not, mask input or not) are decoded as one batch.
    pub fn predict_batch(&self, prompts: &[Prompt], multimask: bool) -> Result<Vec<Prediction>> {
        let img = self.image.as_ref().ok_or(PredictError::NoImage)?;
        let (h, w) = img.original_hw;
        let low = self.low_res_size();
        for (index, p) in prompts.iter().enumerate() {
            p.validate(w, h, low)
                .map_err(|source| PredictError::Prompt { index, source })?;
        }
        let mut groups: Vec<((usize, bool, bool), Vec<usize>)> = Vec::new();
        for (i, p) in prompts.iter().enumerate() {
            let sig = p.signature();
            match groups.iter_mut().find(|(s, _)| *s == sig) {
                Some((_, v)) => v.push(i),
                None => groups.push((sig, vec![i])),
            }
        }
        let mut out: Vec<Option<Prediction>> = vec![None; prompts.len()];
        for (_, idx) in groups {
            let batch: Vec<&Prompt> = idx.iter().map(|&i| &prompts[i]).collect();
            for (i, pred) in idx
                .into_iter()
                .zip(self.decode_group(img, &batch, multimask))
            {
                out[i] = Some(pred);
            }
        }
        Ok(out
            .into_iter()
            .map(|p| p.expect("every prompt decoded"))
            .collect())
    }

    fn decode_group(
        &self,
        img: &EncodedImage,
        batch: &[&Prompt],
        multimask: bool,
    ) -> Vec<Prediction> {
        if self.is_sam2() {
            return self.decode_group_sam2(img, batch, multimask);
        }
        let b = batch.len();
        let (h, w) = img.original_hw;
        let (nh, nw) = img.input_hw;
        let (sx, sy) = (nw as f64 / w as f64, nh as f64 / h as f64);
        let n_pts = batch[0].points.len();
        let points = (n_pts > 0).then(|| {
            let mut coords = Vec::with_capacity(b * n_pts * 2);
            let mut labels = Vec::with_capacity(b * n_pts);
            for p in batch {
                for pt in &p.points {
                    coords.push((pt.x as f64 * sx) as f32);
                    coords.push((pt.y as f64 * sy) as f32);
                    labels.push(pt.label);
                }
            }
            PointInput {
                coords: tensor_from_vec(coords, [b, n_pts, 2], &self.device),
                labels,
            }
        });
        let boxes = batch[0].bbox.is_some().then(|| {
            let v: Vec<f32> = batch
                .iter()
                .flat_map(|p| {
                    let bb = p.bbox.expect("same signature");
                    [
                        (bb.x0 as f64 * sx) as f32,
                        (bb.y0 as f64 * sy) as f32,
                        (bb.x1 as f64 * sx) as f32,
                        (bb.y1 as f64 * sy) as f32,
                    ]
                })
                .collect();
            tensor_from_vec(v, [b, 4], &self.device)
        });
        let low = self.low_res_size();
        let masks = batch[0].mask.is_some().then(|| {
            let v: Vec<f32> = batch
                .iter()
                .flat_map(|p| {
                    p.mask
                        .as_ref()
                        .expect("same signature")
                        .logits
                        .iter()
                        .copied()
                })
                .collect();
            tensor_from_vec(v, [b, 1, low, low], &self.device)
        });
        let (sparse, dense) = self.prompt_encoder().forward(points.as_ref(), boxes, masks);
        let out = self.mask_decoder().forward(
            img.features.clone(),
            self.dense_pe.clone(),
            sparse,
            dense,
            multimask,
        );
        let [_, k, lh, lw] = out.masks.dims();
        let low_all = tensor_to_vec(out.masks);
        let iou_all = tensor_to_vec(out.iou_pred);
        let size = self.img_size();
        (0..b)
            .into_par_iter()
            .map(|i| {
                let low_res_logits = low_all[i * k * lh * lw..(i + 1) * k * lh * lw].to_vec();
                let mut logits = Vec::with_capacity(k * h * w);
                for j in 0..k {
                    logits.extend(sam_postprocess(
                        &low_res_logits[j * lh * lw..(j + 1) * lh * lw],
                        lh,
                        size,
                        (nh, nw),
                        (h, w),
                    ));
                }
                Prediction {
                    num_masks: k,
                    height: h,
                    width: w,
                    logits,
                    scores: iou_all[i * k..(i + 1) * k].to_vec(),
                    low_res_logits,
                    low_res_size: lh,
                }
            })
            .collect()
    }
}

impl ImagePredictor {
    /// `SAM2ImagePredictor._predict`: boxes become corner points (labels 2, 3) before the
    /// clicks; coordinates are normalised by the image size and scaled to the model frame;
    /// masks go from 256 to the original size in one bilinear step; no object-score masking.
    fn decode_group_sam2(
        &self,
        img: &EncodedImage,
        batch: &[&Prompt],
        multimask: bool,
    ) -> Vec<Prediction> {
        let b = batch.len();
        let (h, w) = img.original_hw;
        let size = self.img_size() as f32;
        let tr = |x: f32, y: f32| [x / w as f32 * size, y / h as f32 * size];
        let n = batch[0].points.len() + if batch[0].bbox.is_some() { 2 } else { 0 };
        let points = (n > 0).then(|| {
            let mut coords = Vec::with_capacity(b * n * 2);
            let mut labels = Vec::with_capacity(b * n);
            for p in batch {
                if let Some(bb) = p.bbox {
                    coords.extend(tr(bb.x0, bb.y0));
                    coords.extend(tr(bb.x1, bb.y1));
                    labels.extend([2, 3]);
                }
                for pt in &p.points {
                    coords.extend(tr(pt.x, pt.y));
                    labels.push(pt.label);
                }
            }
            PointInput {
                coords: tensor_from_vec(coords, [b, n, 2], &self.device),
                labels,
            }
        });
        let low = self.low_res_size();
        let masks = batch[0].mask.is_some().then(|| {
            let v: Vec<f32> = batch
                .iter()
                .flat_map(|p| {
                    p.mask
                        .as_ref()
                        .expect("same signature")
                        .logits
                        .iter()
                        .copied()
                })
                .collect();
            tensor_from_vec(v, [b, 1, low, low], &self.device)
        });
        let (sparse, dense) = self.prompt_encoder().forward(points.as_ref(), None, masks);
        let out = self.mask_decoder().forward_full(
            img.features.clone(),
            self.dense_pe.clone(),
            sparse,
            dense,
            multimask,
            img.high_res.clone(),
        );
        let [_, k, lh, lw] = out.masks.dims();
        let low_all = tensor_to_vec(out.masks);
        let iou_all = tensor_to_vec(out.iou_pred);
        (0..b)
            .into_par_iter()
            .map(|i| {
                let raw = &low_all[i * k * lh * lw..(i + 1) * k * lh * lw];
                let mut logits = Vec::with_capacity(k * h * w);
                for j in 0..k {
                    logits.extend(crate::postprocess::bilinear(
                        &raw[j * lh * lw..(j + 1) * lh * lw],
                        lh,
                        lw,
                        h,
                        w,
                    ));
                }
                Prediction {
                    num_masks: k,
                    height: h,
                    width: w,
                    logits,
                    scores: iou_all[i * k..(i + 1) * k].to_vec(),
                    low_res_logits: raw.iter().map(|v| v.clamp(-32.0, 32.0)).collect(),
                    low_res_size: lh,
                }
            })
            .collect()
    }
}

/// Re-normalise SAM-normalised input data to another mean/std (custom models).
fn renormalise(
    data: &mut [f32],
    size: usize,
    (rh, rw): (usize, usize),
    mean: [f32; 3],
    std: [f32; 3],
) {
    for c in 0..3 {
        let plane = &mut data[c * size * size..(c + 1) * size * size];
        for y in 0..rh {
            for v in &mut plane[y * size..y * size + rw] {
                let raw = *v * SAM_V1_PIXEL_STD[c] + SAM_V1_PIXEL_MEAN[c];
                *v = (raw - mean[c]) / std[c];
            }
        }
    }
}
