//! `MaskDecoder` (`segment_anything/modeling/mask_decoder.py`): output tokens + two-way
//! transformer + upscaling + hypernetwork MLPs + IoU head.

use burn::module::Module;
use burn::nn::conv::{ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Gelu};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::common::{LayerNorm2d, Mlp};
use crate::two_way_transformer::{TwoWayTransformer, TwoWayTransformerConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaskDecoderConfig {
    pub transformer_dim: usize,
    pub transformer: TwoWayTransformerConfig,
    pub num_multimask_outputs: usize,
    pub iou_head_depth: usize,
    pub iou_head_hidden_dim: usize,
}

impl MaskDecoderConfig {
    pub fn sam() -> Self {
        Self {
            transformer_dim: 256,
            transformer: TwoWayTransformerConfig::sam(),
            num_multimask_outputs: 3,
            iou_head_depth: 3,
            iou_head_hidden_dim: 256,
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
        MaskDecoder {
            transformer: self.transformer.init(device),
            iou_token: EmbeddingConfig::new(1, d).init(device),
            mask_tokens: EmbeddingConfig::new(n_tokens, d).init(device),
            output_upscaling: vec![
                UpscaleLayer::ConvT(up(d, d / 4)),
                UpscaleLayer::Norm(LayerNorm2d::new(d / 4, 1e-6, device)),
                UpscaleLayer::Act(Gelu::default()),
                UpscaleLayer::ConvT(up(d / 4, d / 8)),
                UpscaleLayer::Act(Gelu::default()),
            ],
            output_hypernetworks_mlps: (0..n_tokens)
                .map(|_| Mlp::new(d, d, d / 8, 3, false, device))
                .collect(),
            iou_prediction_head: Mlp::new(
                d,
                self.iou_head_hidden_dim,
                n_tokens,
                self.iou_head_depth,
                false,
                device,
            ),
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
            UpscaleLayer::ConvT(c) => c.forward(x),
            UpscaleLayer::Norm(n) => n.forward(x),
            UpscaleLayer::Act(a) => a.forward(x),
        }
    }
}

#[derive(Module, Debug)]
pub struct MaskDecoder {
    pub transformer: TwoWayTransformer,
    pub iou_token: Embedding,
    pub mask_tokens: Embedding,
    pub output_upscaling: Vec<UpscaleLayer>,
    pub output_hypernetworks_mlps: Vec<Mlp>,
    pub iou_prediction_head: Mlp,
}

/// Decoder outputs for a batch of B prompt sets.
#[derive(Clone, Debug)]
pub struct DecoderOutput {
    /// [B, K, 256, 256] low-resolution mask logits (K = 3 multimask, else 1).
    pub masks: Tensor<4>,
    /// [B, K] predicted IoU.
    pub iou_pred: Tensor<2>,
}

impl MaskDecoder {
    pub fn num_mask_tokens(&self) -> usize {
        self.output_hypernetworks_mlps.len()
    }

    /// image_embeddings: [1 or B, C, h, w]; image_pe: [1, C, h, w]; sparse: [B, N, C];
    /// dense: [B, C, h, w].
    pub fn forward(
        &self,
        image_embeddings: Tensor<4>,
        image_pe: Tensor<4>,
        sparse: Tensor<3>,
        dense: Tensor<4>,
        multimask_output: bool,
    ) -> DecoderOutput {
        let (masks, iou_pred) = self.predict_masks(image_embeddings, image_pe, sparse, dense);
        let [b, k, h, w] = masks.dims();
        let range = if multimask_output { 1..k } else { 0..1 };
        DecoderOutput {
            masks: masks.slice([0..b, range.clone(), 0..h, 0..w]),
            iou_pred: iou_pred.slice([0..b, range]),
        }
    }

    /// All mask tokens: ([B, 4, 256, 256], [B, 4]).
    pub fn predict_masks(
        &self,
        image_embeddings: Tensor<4>,
        image_pe: Tensor<4>,
        sparse: Tensor<3>,
        dense: Tensor<4>,
    ) -> (Tensor<4>, Tensor<2>) {
        let [b, _, d] = sparse.dims();
        let n_tok = self.num_mask_tokens();
        let output_tokens = Tensor::cat(
            vec![self.iou_token.weight.val(), self.mask_tokens.weight.val()],
            0,
        )
        .unsqueeze::<3>()
        .expand([b, 1 + n_tok, d]);
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
        let iou_token_out = hs.clone().slice([0..b, 0..1]).reshape([b, d]);
        let mask_tokens_out = hs.slice([0..b, 1..1 + n_tok]);

        let mut up = src.swap_dims(1, 2).reshape([b, c, h, w]);
        for layer in &self.output_upscaling {
            up = layer.forward(up);
        }
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
        (masks, iou_pred)
    }
}
