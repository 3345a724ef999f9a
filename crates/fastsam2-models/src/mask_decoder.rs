//! `MaskDecoder`: output tokens + two-way transformer + upscaling + hypernetwork MLPs + IoU
//! head (`segment_anything/modeling/mask_decoder.py`), with SAM 2's additions behind its
//! config (`sam2/modeling/sam/mask_decoder.py`): object-score token and head, high-resolution
//! skip features (`conv_s0`/`conv_s1`), sigmoid IoU, dynamic multimask via stability, and the
//! output tokens used for object pointers.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Gelu, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::common::{LayerNorm2d, Mlp, tensor_from_vec, tensor_to_vec};
use crate::two_way_transformer::{TwoWayTransformer, TwoWayTransformerConfig};

/// SAM 2 options of the decoder (all off for SAM v1).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sam2DecoderOptions {
    pub use_high_res_features: bool,
    pub iou_prediction_use_sigmoid: bool,
    pub pred_obj_scores: bool,
    pub pred_obj_scores_mlp: bool,
    pub use_multimask_token_for_obj_ptr: bool,
    /// Single-mask output falls back to the best multimask output when unstable
    /// (`dynamic_multimask_via_stability`, set by `build_sam2*` postprocessing).
    pub dynamic_multimask_via_stability: bool,
    pub dynamic_multimask_stability_delta: f32,
    pub dynamic_multimask_stability_thresh: f32,
}

impl Sam2DecoderOptions {
    /// The official SAM 2 / 2.1 decoder as built by `build_sam2` (postprocessing on).
    pub fn sam2() -> Self {
        Self {
            use_high_res_features: true,
            iou_prediction_use_sigmoid: true,
            pred_obj_scores: true,
            pred_obj_scores_mlp: true,
            use_multimask_token_for_obj_ptr: true,
            dynamic_multimask_via_stability: true,
            dynamic_multimask_stability_delta: 0.05,
            dynamic_multimask_stability_thresh: 0.98,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaskDecoderConfig {
    pub transformer_dim: usize,
    pub transformer: TwoWayTransformerConfig,
    pub num_multimask_outputs: usize,
    pub iou_head_depth: usize,
    pub iou_head_hidden_dim: usize,
    #[serde(default)]
    pub sam2: Sam2DecoderOptions,
}

impl MaskDecoderConfig {
    pub fn sam() -> Self {
        Self {
            transformer_dim: 256,
            transformer: TwoWayTransformerConfig::sam(),
            num_multimask_outputs: 3,
            iou_head_depth: 3,
            iou_head_hidden_dim: 256,
            sam2: Sam2DecoderOptions::default(),
        }
    }

    pub fn init(&self, device: &Device) -> MaskDecoder {
        let d = self.transformer_dim;
        let n_tokens = self.num_multimask_outputs + 1;
        let up = |cin, cout| {
            ConvTranspose2dConfig::new([cin, cout], [2, 2])
                .with_stride([2, 2])
                .init(device)
        };
        let o = &self.sam2;
        let conv1 = |cout| Conv2dConfig::new([d, cout], [1, 1]).init(device);
        MaskDecoder {
            transformer: self.transformer.init(device),
            iou_token: EmbeddingConfig::new(1, d).init(device),
            mask_tokens: EmbeddingConfig::new(n_tokens, d).init(device),
            obj_score_token: o
                .pred_obj_scores
                .then(|| EmbeddingConfig::new(1, d).init(device)),
            output_upscaling: vec![
                UpscaleLayer::ConvT(up(d, d / 4)),
                UpscaleLayer::Norm(LayerNorm2d::new(d / 4, 1e-6, device)),
                UpscaleLayer::Act(Gelu::default()),
                UpscaleLayer::ConvT(up(d / 4, d / 8)),
                UpscaleLayer::Act(Gelu::default()),
            ],
            conv_s0: o.use_high_res_features.then(|| conv1(d / 8)),
            conv_s1: o.use_high_res_features.then(|| conv1(d / 4)),
            output_hypernetworks_mlps: (0..n_tokens)
                .map(|_| Mlp::new(d, d, d / 8, 3, false, device))
                .collect(),
            iou_prediction_head: Mlp::new(
                d,
                self.iou_head_hidden_dim,
                n_tokens,
                self.iou_head_depth,
                o.iou_prediction_use_sigmoid,
                device,
            ),
            pred_obj_score_head: o.pred_obj_scores.then(|| {
                if o.pred_obj_scores_mlp {
                    ObjScoreHead::Mlp(Mlp::new(d, d, 1, 3, false, device))
                } else {
                    ObjScoreHead::Linear(LinearConfig::new(d, 1).init(device))
                }
            }),
            options: o.clone(),
        }
    }
}

/// Element of `output_upscaling` (`nn.Sequential`: convT, LN2d, GELU, convT, GELU).
#[derive(Module, Debug)]
pub enum UpscaleLayer {
    ConvT(ConvTranspose2d),
    Norm(LayerNorm2d),
    Act(Gelu),
}

impl UpscaleLayer {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            UpscaleLayer::ConvT(c) => conv_transpose_patchwise(c, x),
            UpscaleLayer::Norm(n) => n.forward(x),
            UpscaleLayer::Act(_) => crate::kernels::gelu(x),
        }
    }
}

/// A transposed convolution whose stride equals its kernel (SAM's 2x2 / stride-2 upscaling):
/// every input pixel writes its own k x k output patch, i.e. one matmul
/// `[pixels, C_in] @ [C_in, C_out * k * k]` and a pixel shuffle. Other configurations use
/// the generic operator.
pub fn conv_transpose_patchwise(c: &ConvTranspose2d, x: Tensor<4>) -> Tensor<4> {
    let [k0, k1] = c.kernel_size;
    if c.stride != [k0, k1]
        || c.padding != [0, 0]
        || c.padding_out != [0, 0]
        || c.dilation != [1, 1]
        || c.groups != 1
    {
        return c.forward(x);
    }
    let [b, cin, h, w] = x.dims();
    let wt = c.weight.val(); // [C_in, C_out, k0, k1]
    let cout = wt.dims()[1];
    let xm = crate::kernels::contiguous(x.permute([0, 2, 3, 1])).reshape([b * h * w, cin]);
    let y = xm.matmul(wt.reshape([cin, cout * k0 * k1])); // [BHW, C_out*k0*k1]
    let y = y
        .reshape([b, h, w, cout, k0, k1])
        .permute([0, 3, 1, 4, 2, 5])
        .reshape([b, cout, h * k0, w * k1]);
    match &c.bias {
        Some(bias) => y + bias.val().reshape([1, cout, 1, 1]),
        None => y,
    }
}

/// `pred_obj_score_head`: a linear layer or a 3-layer MLP.
#[derive(Module, Debug)]
pub enum ObjScoreHead {
    Linear(Linear),
    Mlp(Mlp),
}

#[derive(Module, Debug)]
pub struct MaskDecoder {
    pub transformer: TwoWayTransformer,
    pub iou_token: Embedding,
    pub mask_tokens: Embedding,
    pub obj_score_token: Option<Embedding>,
    pub output_upscaling: Vec<UpscaleLayer>,
    pub conv_s0: Option<Conv2d>,
    pub conv_s1: Option<Conv2d>,
    pub output_hypernetworks_mlps: Vec<Mlp>,
    pub iou_prediction_head: Mlp,
    pub pred_obj_score_head: Option<ObjScoreHead>,
    #[module(skip)]
    pub options: Sam2DecoderOptions,
}

/// Decoder outputs for a batch of B prompt sets.
#[derive(Clone, Debug)]
pub struct DecoderOutput {
    /// [B, K, 256, 256] low-resolution mask logits (K = 3 multimask, else 1).
    pub masks: Tensor<4>,
    /// [B, K] predicted IoU.
    pub iou_pred: Tensor<2>,
    /// [B, K', C] output tokens for object pointers (SAM 2).
    pub sam_tokens_out: Tensor<3>,
    /// [B, 1] object-score logits (10 when the model has no object-score head).
    pub object_score_logits: Tensor<2>,
}

impl MaskDecoder {
    pub fn num_mask_tokens(&self) -> usize {
        self.output_hypernetworks_mlps.len()
    }

    /// image_embeddings: [1 or B, C, h, w]; image_pe: [1, C, h, w]; sparse: [B, N, C];
    /// dense: [B, C, h, w]; high_res: SAM 2's (feat_s0 [B, C/8, 4h, 4w], feat_s1 [B, C/4, 2h, 2w]).
    pub fn forward_full(
        &self,
        image_embeddings: Tensor<4>,
        image_pe: Tensor<4>,
        sparse: Tensor<3>,
        dense: Tensor<4>,
        multimask_output: bool,
        high_res: Option<(Tensor<4>, Tensor<4>)>,
    ) -> DecoderOutput {
        let (masks, iou_pred, mask_tokens_out, object_score_logits) =
            self.predict_masks_full(image_embeddings, image_pe, sparse, dense, high_res);
        let [b, k, h, w] = masks.dims();
        let (masks, iou_pred) = if multimask_output {
            (
                masks.slice([0..b, 1..k, 0..h, 0..w]),
                iou_pred.slice([0..b, 1..k]),
            )
        } else if self.options.dynamic_multimask_via_stability {
            self.dynamic_multimask_via_stability(masks, iou_pred)
        } else {
            (
                masks.slice([0..b, 0..1, 0..h, 0..w]),
                iou_pred.slice([0..b, 0..1]),
            )
        };
        let [_, nt, c] = mask_tokens_out.dims();
        let sam_tokens_out = if multimask_output && self.options.use_multimask_token_for_obj_ptr {
            mask_tokens_out.slice([0..b, 1..nt, 0..c])
        } else {
            mask_tokens_out.slice([0..b, 0..1, 0..c])
        };
        DecoderOutput {
            masks,
            iou_pred,
            sam_tokens_out,
            object_score_logits,
        }
    }

    /// SAM v1 interface: no high-resolution features.
    pub fn forward(
        &self,
        image_embeddings: Tensor<4>,
        image_pe: Tensor<4>,
        sparse: Tensor<3>,
        dense: Tensor<4>,
        multimask_output: bool,
    ) -> DecoderOutput {
        self.forward_full(
            image_embeddings,
            image_pe,
            sparse,
            dense,
            multimask_output,
            None,
        )
    }

    /// All mask tokens: ([B, T, 256, 256], [B, T]) (SAM v1 interface).
    pub fn predict_masks(
        &self,
        image_embeddings: Tensor<4>,
        image_pe: Tensor<4>,
        sparse: Tensor<3>,
        dense: Tensor<4>,
    ) -> (Tensor<4>, Tensor<2>) {
        let (m, i, _, _) = self.predict_masks_full(image_embeddings, image_pe, sparse, dense, None);
        (m, i)
    }

    fn predict_masks_full(
        &self,
        image_embeddings: Tensor<4>,
        image_pe: Tensor<4>,
        sparse: Tensor<3>,
        dense: Tensor<4>,
        high_res: Option<(Tensor<4>, Tensor<4>)>,
    ) -> (Tensor<4>, Tensor<2>, Tensor<3>, Tensor<2>) {
        let [b, _, d] = sparse.dims();
        let n_tok = self.num_mask_tokens();
        let mut toks = Vec::new();
        if let Some(t) = &self.obj_score_token {
            toks.push(t.weight.val());
        }
        let s = toks.len();
        toks.push(self.iou_token.weight.val());
        toks.push(self.mask_tokens.weight.val());
        let output_tokens = Tensor::cat(toks, 0)
            .unsqueeze::<3>()
            .expand([b, s + 1 + n_tok, d]);
        let tokens = Tensor::cat(vec![output_tokens, sparse], 1);
        let [eb, c, h, w] = image_embeddings.dims();
        let src = if eb == b {
            image_embeddings
        } else {
            image_embeddings.expand([b, c, h, w])
        };
        let src = src + dense;
        let pos_src = image_pe.expand([b, c, h, w]);
        let (hs, src) = self.transformer.forward(src, pos_src, tokens);
        let iou_token_out = hs.clone().slice([0..b, s..s + 1]).reshape([b, d]);
        let mask_tokens_out = hs.clone().slice([0..b, s + 1..s + 1 + n_tok]);

        let src = src.swap_dims(1, 2).reshape([b, c, h, w]);
        if crate::kernels::host_fast_path(&src.device()) && self.output_upscaling.len() == 5 {
            let masks = self.upscale_masks_host(src, high_res, &mask_tokens_out);
            let iou_pred = self.iou_prediction_head.forward(iou_token_out);
            let object_score_logits = self.object_scores(&hs, b, d, &iou_pred);
            return (masks, iou_pred, mask_tokens_out, object_score_logits);
        }
        let up = match high_res {
            None => {
                let mut up = src;
                for layer in &self.output_upscaling {
                    up = layer.forward(up);
                }
                up
            }
            Some((feat_s0, feat_s1)) => {
                let l = &self.output_upscaling;
                let x = l[0].forward(src) + feat_s1;
                let x = l[2].forward(l[1].forward(x));
                l[4].forward(l[3].forward(x) + feat_s0)
            }
        };
        let hyper_in = Tensor::cat(
            self.output_hypernetworks_mlps
                .iter()
                .enumerate()
                .map(|(i, mlp)| mlp.forward(mask_tokens_out.clone().slice([0..b, i..i + 1])))
                .collect(),
            1,
        ); // [B, n_tok, C/8]
        let [_, cu, hu, wu] = up.dims();
        let masks = hyper_in
            .matmul(up.reshape([b, cu, hu * wu]))
            .reshape([b, n_tok, hu, wu]);
        let iou_pred = self.iou_prediction_head.forward(iou_token_out);
        let object_score_logits = self.object_scores(&hs, b, d, &iou_pred);
        (masks, iou_pred, mask_tokens_out, object_score_logits)
    }

    fn object_scores(&self, hs: &Tensor<3>, b: usize, d: usize, iou_pred: &Tensor<2>) -> Tensor<2> {
        match &self.pred_obj_score_head {
            Some(head) => {
                let t = hs.clone().slice([0..b, 0..1]).reshape([b, d]);
                match head {
                    ObjScoreHead::Linear(l) => l.forward(t),
                    ObjScoreHead::Mlp(m) => m.forward(t),
                }
            }
            None => Tensor::ones([b, 1], &iou_pred.device()) * 10.0,
        }
    }

    /// `output_upscaling` + hypernetworks on the host (inference): [B, n_tok, 4h, 4w].
    fn upscale_masks_host(
        &self,
        src: Tensor<4>,
        high_res: Option<(Tensor<4>, Tensor<4>)>,
        mask_tokens_out: &Tensor<3>,
    ) -> Tensor<4> {
        use crate::kernels::upscale::{UpscaleWeights, upscale_and_masks};
        use crate::kernels::{from_host, to_host};
        let device = src.device();
        let [b, c, h, w] = src.dims();
        let n_tok = self.num_mask_tokens();
        let (UpscaleLayer::ConvT(t1), UpscaleLayer::Norm(ln), UpscaleLayer::ConvT(t2)) = (
            &self.output_upscaling[0],
            &self.output_upscaling[1],
            &self.output_upscaling[3],
        ) else {
            unreachable!("output_upscaling is convT, LN2d, GELU, convT, GELU")
        };
        let host1 = |p: &burn::module::Param<Tensor<1>>| to_host(p.val()).0;
        let zeros = |n: usize| vec![0f32; n];
        let (w1, _) = to_host(t1.weight.val());
        let (w2, _) = to_host(t2.weight.val());
        let c1 = t1.weight.dims()[1];
        let c2 = t2.weight.dims()[1];
        let b1 = t1.bias.as_ref().map(host1).unwrap_or_else(|| zeros(c1));
        let b2 = t2.bias.as_ref().map(host1).unwrap_or_else(|| zeros(c2));
        let (lw, lb) = (host1(&ln.weight), host1(&ln.bias));
        let wt = UpscaleWeights {
            w1: &w1,
            b1: &b1,
            ln_w: &lw,
            ln_b: &lb,
            eps: ln.eps as f32,
            w2: &w2,
            b2: &b2,
        };
        let (src_h, _) = to_host(src.permute([0, 2, 3, 1]));
        // High-res features are per image: batch 1 broadcasts over every prompt of the batch
        // (`feat_s1` added to `dc1(src)` in PyTorch), else one per batch row.
        let mut hr_batch = b;
        let (s0, s1) = match high_res {
            Some((f0, f1)) => {
                hr_batch = f0.dims()[0];
                assert!(
                    (hr_batch == 1 || hr_batch == b) && f1.dims()[0] == hr_batch,
                    "high-res features batch {} for {b} prompts",
                    hr_batch
                );
                (
                    Some(to_host(f0.permute([0, 2, 3, 1])).0),
                    Some(to_host(f1.permute([0, 2, 3, 1])).0),
                )
            }
            None => (None, None),
        };
        let hyper = Tensor::cat(
            self.output_hypernetworks_mlps
                .iter()
                .enumerate()
                .map(|(i, mlp)| mlp.forward(mask_tokens_out.clone().slice([0..b, i..i + 1])))
                .collect(),
            1,
        );
        let (hyper, _) = to_host(hyper); // [B, n_tok, c2]
        let plane = 16 * h * w;
        let mut out = Vec::with_capacity(b * n_tok * plane);
        for i in 0..b {
            let j = if hr_batch == 1 { 0 } else { i };
            let s1i = s1
                .as_ref()
                .map(|v| &v[j * 4 * h * w * c1..(j + 1) * 4 * h * w * c1]);
            let s0i = s0
                .as_ref()
                .map(|v| &v[j * plane * c2..(j + 1) * plane * c2]);
            out.extend(upscale_and_masks(
                &src_h[i * h * w * c..(i + 1) * h * w * c],
                h,
                w,
                c,
                &wt,
                s1i,
                s0i,
                &hyper[i * n_tok * c2..(i + 1) * n_tok * c2],
                n_tok,
            ));
        }
        from_host(out, [b, n_tok, 4 * h, 4 * w], &device)
    }

    /// `_dynamic_multimask_via_stability`: keep the single-mask output where its stability
    /// (IoU of the masks thresholded at +delta and -delta) reaches the threshold, else take the
    /// multimask output with the highest predicted IoU. Selection is done on the host.
    fn dynamic_multimask_via_stability(
        &self,
        masks: Tensor<4>,
        iou: Tensor<2>,
    ) -> (Tensor<4>, Tensor<2>) {
        let [b, k, h, w] = masks.dims();
        let device = masks.device();
        let delta = self.options.dynamic_multimask_stability_delta;
        let thresh = self.options.dynamic_multimask_stability_thresh;
        let m = tensor_to_vec(masks);
        let s = tensor_to_vec(iou);
        let plane = h * w;
        let mut out_m = Vec::with_capacity(b * plane);
        let mut out_s = Vec::with_capacity(b);
        for i in 0..b {
            let single = &m[(i * k) * plane..(i * k + 1) * plane];
            let area_i = single.iter().filter(|&&v| v > delta).count();
            let area_u = single.iter().filter(|&&v| v > -delta).count();
            let stability = if area_u > 0 {
                area_i as f32 / area_u as f32
            } else {
                1.0
            };
            if stability >= thresh {
                out_m.extend_from_slice(single);
                out_s.push(s[i * k]);
            } else {
                // torch.argmax: first maximum
                let mut best = 1;
                for j in 2..k {
                    if s[i * k + j] > s[i * k + best] {
                        best = j;
                    }
                }
                out_m.extend_from_slice(&m[(i * k + best) * plane..(i * k + best + 1) * plane]);
                out_s.push(s[i * k + best]);
            }
        }
        (
            tensor_from_vec(out_m, [b, 1, h, w], &device),
            tensor_from_vec(out_s, [b, 1], &device),
        )
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::nn::conv::ConvTranspose2dConfig;
    use burn::tensor::{Device, Distribution, Tensor};

    #[test]
    fn patchwise_transposed_conv_equals_burn() {
        let device = Device::flex();
        let mut c = ConvTranspose2dConfig::new([6, 4], [2, 2])
            .with_stride([2, 2])
            .init(&device);
        let b = c.bias.as_ref().unwrap().val();
        c.bias = Some(Param::from_tensor(Tensor::random(
            b.shape(),
            Distribution::Normal(0.0, 1.0),
            &device,
        )));
        let x = Tensor::<4>::random([2, 6, 5, 7], Distribution::Normal(0.0, 1.0), &device);
        let d: f32 = (super::conv_transpose_patchwise(&c, x.clone()) - c.forward(x))
            .abs()
            .max()
            .into_scalar();
        assert!(d < 1e-5, "{d}");
    }
}
