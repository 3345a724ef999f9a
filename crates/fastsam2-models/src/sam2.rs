//! SAM 2 / 2.1 (`sam2/modeling/sam2_base.py`): the model and its per-frame tracking step —
//! SAM heads with high-resolution features and object scores, conditioning of the frame's
//! features on the memory bank, and encoding of new memories. The session bookkeeping
//! (which frames are memories, prompts, propagation order) lives in `fastsam2-predict`.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::sigmoid;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::common::{Mlp, tensor_from_vec, tensor_to_vec};
use crate::fpn_neck::{BackboneOut, Sam2ImageEncoder, Sam2ImageEncoderConfig};
use crate::hiera::HieraConfig;
use crate::mask_decoder::{MaskDecoder, MaskDecoderConfig, Sam2DecoderOptions};
use crate::memory_attention::{MemoryAttention, MemoryAttentionConfig};
use crate::memory_encoder::{MemoryEncoder, MemoryEncoderConfig};
use crate::position_encoding::sine_1d;
use crate::prompt_encoder::{PointInput, PromptEncoder, PromptEncoderConfig};
use crate::two_way_transformer::TwoWayTransformerConfig;

/// Score given to the masks of absent objects.
pub const NO_OBJ_SCORE: f32 = -1024.0;

fn t() -> bool {
    true
}
fn neg1() -> i64 {
    -1
}
fn one() -> usize {
    1
}

/// Hyper-parameters of a SAM 2 model (`SAM2Base` constructor arguments plus the
/// `build_sam2*` postprocessing overrides). Defaults are the official 2.1 values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sam2Config {
    pub image_encoder: Sam2ImageEncoderConfig,
    pub memory_attention: MemoryAttentionConfig,
    pub memory_encoder: MemoryEncoderConfig,
    pub prompt_encoder: PromptEncoderConfig,
    pub mask_decoder: MaskDecoderConfig,
    pub num_maskmem: usize,
    pub image_size: usize,
    pub sigmoid_scale_for_mem_enc: f32,
    pub sigmoid_bias_for_mem_enc: f32,
    #[serde(default = "t")]
    pub binarize_mask_from_pts_for_mem_enc: bool,
    #[serde(default = "t")]
    pub use_mask_input_as_output_without_sam: bool,
    #[serde(default = "t")]
    pub directly_add_no_mem_embed: bool,
    #[serde(default = "t")]
    pub multimask_output_in_sam: bool,
    #[serde(default)]
    pub multimask_min_pt_num: usize,
    #[serde(default = "one")]
    pub multimask_max_pt_num: usize,
    #[serde(default = "t")]
    pub multimask_output_for_tracking: bool,
    pub max_obj_ptrs_in_encoder: usize,
    pub add_tpos_enc_to_obj_ptrs: bool,
    pub proj_tpos_enc_in_obj_ptrs: bool,
    pub use_signed_tpos_enc_to_obj_ptrs: bool,
    #[serde(default = "t")]
    pub only_obj_ptrs_in_the_past_for_eval: bool,
    #[serde(default = "t")]
    pub fixed_no_obj_ptr: bool,
    #[serde(default)]
    pub soft_no_obj_ptr: bool,
    #[serde(default = "t")]
    pub use_mlp_for_obj_ptr_proj: bool,
    pub no_obj_embed_spatial: bool,
    #[serde(default = "neg1")]
    pub max_cond_frames_in_attn: i64,
    #[serde(default = "one")]
    pub memory_temporal_stride_for_eval: usize,
}

impl Sam2Config {
    fn official(trunk: HieraConfig, v21: bool) -> Self {
        let d = 256;
        let mut transformer = TwoWayTransformerConfig::sam();
        transformer.sam2_mlp_keys = true;
        Self {
            image_encoder: Sam2ImageEncoderConfig::new(trunk, d),
            memory_attention: MemoryAttentionConfig::sam2(),
            memory_encoder: MemoryEncoderConfig::sam2(),
            prompt_encoder: PromptEncoderConfig::sam(),
            mask_decoder: MaskDecoderConfig {
                transformer_dim: d,
                transformer,
                num_multimask_outputs: 3,
                iou_head_depth: 3,
                iou_head_hidden_dim: 256,
                sam2: Sam2DecoderOptions::sam2(),
            },
            num_maskmem: 7,
            image_size: 1024,
            sigmoid_scale_for_mem_enc: 20.0,
            sigmoid_bias_for_mem_enc: -10.0,
            binarize_mask_from_pts_for_mem_enc: true,
            use_mask_input_as_output_without_sam: true,
            directly_add_no_mem_embed: true,
            multimask_output_in_sam: true,
            multimask_min_pt_num: 0,
            multimask_max_pt_num: 1,
            multimask_output_for_tracking: true,
            max_obj_ptrs_in_encoder: 16,
            add_tpos_enc_to_obj_ptrs: v21,
            proj_tpos_enc_in_obj_ptrs: v21,
            use_signed_tpos_enc_to_obj_ptrs: v21,
            only_obj_ptrs_in_the_past_for_eval: true,
            fixed_no_obj_ptr: true,
            soft_no_obj_ptr: false,
            use_mlp_for_obj_ptr_proj: true,
            no_obj_embed_spatial: v21,
            max_cond_frames_in_attn: -1,
            memory_temporal_stride_for_eval: 1,
        }
    }
    pub fn sam2_tiny() -> Self {
        Self::official(HieraConfig::tiny(), false)
    }
    pub fn sam2_small() -> Self {
        Self::official(HieraConfig::small(), false)
    }
    pub fn sam2_base_plus() -> Self {
        Self::official(HieraConfig::base_plus(), false)
    }
    pub fn sam2_large() -> Self {
        Self::official(HieraConfig::large(), false)
    }
    pub fn sam21_tiny() -> Self {
        Self::official(HieraConfig::tiny(), true)
    }
    pub fn sam21_small() -> Self {
        Self::official(HieraConfig::small(), true)
    }
    pub fn sam21_base_plus() -> Self {
        Self::official(HieraConfig::base_plus(), true)
    }
    pub fn sam21_large() -> Self {
        Self::official(HieraConfig::large(), true)
    }

    pub fn hidden_dim(&self) -> usize {
        self.image_encoder.neck.d_model
    }
    pub fn mem_dim(&self) -> usize {
        self.memory_encoder.out_dim
    }

    pub fn init(&self, device: &Device) -> Sam2 {
        let c = self.hidden_dim();
        let m = self.mem_dim();
        Sam2 {
            image_encoder: self.image_encoder.init(device),
            mask_downsample: Conv2dConfig::new([1, 1], [4, 4])
                .with_stride([4, 4])
                .init(device),
            memory_attention: self.memory_attention.init(device),
            memory_encoder: self.memory_encoder.init(device),
            maskmem_tpos_enc: Param::from_tensor(Tensor::zeros(
                [self.num_maskmem, 1, 1, m],
                device,
            )),
            no_mem_embed: Param::from_tensor(Tensor::zeros([1, 1, c], device)),
            no_mem_pos_enc: Param::from_tensor(Tensor::zeros([1, 1, c], device)),
            no_obj_ptr: Some(Param::from_tensor(Tensor::zeros([1, c], device))),
            no_obj_embed_spatial: self
                .no_obj_embed_spatial
                .then(|| Param::from_tensor(Tensor::zeros([1, m], device))),
            sam_prompt_encoder: self.prompt_encoder.init(device),
            sam_mask_decoder: self.mask_decoder.init(device),
            obj_ptr_proj: if self.use_mlp_for_obj_ptr_proj {
                ObjPtrProj::Mlp(Mlp::new(c, c, c, 3, false, device))
            } else {
                ObjPtrProj::Linear(LinearConfig::new(c, c).init(device))
            },
            obj_ptr_tpos_proj: self
                .proj_tpos_enc_in_obj_ptrs
                .then(|| LinearConfig::new(c, m).init(device)),
            cfg: self.clone(),
        }
    }
}

/// `obj_ptr_proj`: a linear layer or a 3-layer MLP.
#[derive(Module, Debug)]
pub enum ObjPtrProj {
    Linear(Linear),
    Mlp(Mlp),
}

impl ObjPtrProj {
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            ObjPtrProj::Linear(l) => l.forward(x),
            ObjPtrProj::Mlp(m) => m.forward(x),
        }
    }
}

/// The SAM 2 model. Field names are the state-dict prefixes.
#[derive(Module, Debug)]
pub struct Sam2 {
    pub image_encoder: Sam2ImageEncoder,
    pub mask_downsample: Conv2d,
    pub memory_attention: MemoryAttention,
    pub memory_encoder: MemoryEncoder,
    pub maskmem_tpos_enc: Param<Tensor<4>>,
    pub no_mem_embed: Param<Tensor<3>>,
    pub no_mem_pos_enc: Param<Tensor<3>>,
    pub no_obj_ptr: Option<Param<Tensor<2>>>,
    pub no_obj_embed_spatial: Option<Param<Tensor<2>>>,
    pub sam_prompt_encoder: PromptEncoder,
    pub sam_mask_decoder: MaskDecoder,
    pub obj_ptr_proj: ObjPtrProj,
    pub obj_ptr_tpos_proj: Option<Linear>,
    #[module(skip)]
    pub cfg: Sam2Config,
}

/// Features of one frame, ready for the heads: the 64x64 level with its position encoding,
/// and the two high-resolution levels after `conv_s0` / `conv_s1`.
#[derive(Clone, Debug)]
pub struct FrameFeatures {
    /// [B, C, 64, 64]
    pub vision_feat: Tensor<4>,
    /// [B, C, 64, 64]
    pub vision_pos: Tensor<4>,
    /// ([B, C/8, 256, 256], [B, C/4, 128, 128])
    pub high_res: (Tensor<4>, Tensor<4>),
}

impl FrameFeatures {
    /// The same features repeated for `b` objects.
    pub fn expand(&self, b: usize) -> Self {
        let e = |t: &Tensor<4>| {
            let [_, c, h, w] = t.dims();
            t.clone().expand([b, c, h, w])
        };
        Self {
            vision_feat: e(&self.vision_feat),
            vision_pos: e(&self.vision_pos),
            high_res: (e(&self.high_res.0), e(&self.high_res.1)),
        }
    }
}

/// Point prompts in the 1024 model frame (boxes as corner points labelled 2 and 3).
#[derive(Clone, Debug)]
pub struct Sam2Points {
    /// [B, P, 2]
    pub coords: Tensor<3>,
    /// B * P labels.
    pub labels: Vec<i32>,
}

/// Output of the SAM heads for B objects.
#[derive(Clone, Debug)]
pub struct HeadsOut {
    /// [B, M, 256, 256] with absent objects set to NO_OBJ_SCORE.
    pub low_res_multimasks: Tensor<4>,
    /// [B, M]
    pub ious: Tensor<2>,
    /// [B, 1, 256, 256]: the best mask.
    pub low_res_masks: Tensor<4>,
    /// [B, 1, 1024, 1024]: the best mask upsampled.
    pub high_res_masks: Tensor<4>,
    /// [B, C]
    pub obj_ptr: Tensor<2>,
    /// [B, 1]
    pub object_score_logits: Tensor<2>,
}

/// One memory of one object: what a frame contributes to later frames.
#[derive(Clone, Debug)]
pub struct FrameMemory {
    /// [1, mem_dim, 64, 64], bf16-rounded (as the reference stores it).
    pub maskmem_features: Tensor<4>,
    /// [1, C]
    pub obj_ptr: Tensor<2>,
}

/// The memories an object can attend to at a frame.
pub struct MemoryBank<'a> {
    /// Conditioning frames (prompted).
    pub cond: Vec<(usize, &'a FrameMemory)>,
    /// Non-conditioning (tracked) frames.
    pub non_cond: &'a dyn Fn(usize) -> Option<&'a FrameMemory>,
}

/// Round every element to bfloat16 (round-to-nearest-even), kept as f32.
pub fn round_bf16(t: Tensor<4>) -> Tensor<4> {
    let dims = t.dims();
    let device = t.device();
    let v: Vec<f32> = tensor_to_vec(t)
        .into_iter()
        .map(|x| half::bf16::from_f32(x).to_f32())
        .collect();
    tensor_from_vec(v, dims, &device)
}

impl Sam2 {
    pub fn config(&self) -> &Sam2Config {
        &self.cfg
    }

    /// `forward_image` + `_prepare_backbone_features` for an input [B, 3, 1024, 1024].
    pub fn encode_frame(&self, img: Tensor<4>) -> FrameFeatures {
        let d = &self.sam_mask_decoder;
        if let (Some(c0), Some(c1)) = (&d.conv_s0, &d.conv_s1)
            && let Some(l) = self.image_encoder.forward_frame_host(img.clone(), c0, c1)
        {
            return FrameFeatures {
                vision_feat: l.feat,
                vision_pos: l.pos,
                high_res: (l.s0, l.s1),
            };
        }
        self.frame_features(self.image_encoder.forward(img))
    }

    /// Apply `conv_s0` / `conv_s1` to the high-resolution levels and keep the last three.
    pub fn frame_features(&self, out: BackboneOut) -> FrameFeatures {
        let BackboneOut {
            mut backbone_fpn,
            vision_pos_enc,
        } = out;
        let n = backbone_fpn.len();
        let d = &self.sam_mask_decoder;
        let s1 = backbone_fpn.remove(n - 2);
        let s0 = backbone_fpn.remove(n - 3);
        let s0 = d
            .conv_s0
            .as_ref()
            .map(|c| c.forward(s0.clone()))
            .unwrap_or(s0);
        let s1 = d
            .conv_s1
            .as_ref()
            .map(|c| c.forward(s1.clone()))
            .unwrap_or(s1);
        let vision_feat = backbone_fpn.pop().expect("three levels");
        let vision_pos = vision_pos_enc[n - 1].clone();
        FrameFeatures {
            vision_feat,
            vision_pos,
            high_res: (s0, s1),
        }
    }

    /// `_forward_sam_heads`: prompts (or none) and an optional 256x256 mask prompt.
    pub fn forward_sam_heads(
        &self,
        backbone: Tensor<4>,
        points: Option<&Sam2Points>,
        mask_inputs: Option<Tensor<4>>,
        high_res: Option<(Tensor<4>, Tensor<4>)>,
        multimask_output: bool,
    ) -> HeadsOut {
        let [b, _, _, _] = backbone.dims();
        let device = backbone.device();
        let pts = match points {
            Some(p) => PointInput {
                coords: p.coords.clone(),
                labels: p.labels.clone(),
            },
            None => PointInput {
                coords: Tensor::zeros([b, 1, 2], &device),
                labels: vec![-1; b],
            },
        };
        let (sparse, dense) = self
            .sam_prompt_encoder
            .forward(Some(&pts), None, mask_inputs);
        let pe = self.sam_prompt_encoder.get_dense_pe();
        let out = self.sam_mask_decoder.forward_full(
            backbone,
            pe,
            sparse,
            dense,
            multimask_output,
            high_res,
        );
        let score = out.object_score_logits;
        let [_, m, h, w] = out.masks.dims();
        // masks of absent objects -> NO_OBJ_SCORE
        let appearing = score
            .clone()
            .greater_elem(0.0)
            .float()
            .reshape([b, 1, 1, 1]);
        let low_res_multimasks =
            out.masks * appearing.clone() + (appearing.clone() * -1.0 + 1.0) * NO_OBJ_SCORE;
        let tokens = out.sam_tokens_out;
        let (low_res_masks, token) = if multimask_output {
            // argmax over the IoU predictions (first maximum), per object
            let ious = tensor_to_vec(out.iou_pred.clone());
            let best: Vec<usize> = (0..b)
                .map(|i| {
                    let row = &ious[i * m..(i + 1) * m];
                    (0..m).fold(0, |bi, j| if row[j] > row[bi] { j } else { bi })
                })
                .collect();
            let masks: Vec<Tensor<4>> = best
                .iter()
                .enumerate()
                .map(|(i, &j)| {
                    low_res_multimasks
                        .clone()
                        .slice([i..i + 1, j..j + 1, 0..h, 0..w])
                })
                .collect();
            let [_, nt, c] = tokens.dims();
            let toks: Vec<Tensor<3>> = best
                .iter()
                .enumerate()
                .map(|(i, &j)| {
                    let j = if nt > 1 { j } else { 0 };
                    tokens.clone().slice([i..i + 1, j..j + 1, 0..c])
                })
                .collect();
            (Tensor::cat(masks, 0), Tensor::cat(toks, 0))
        } else {
            let [_, _, c] = tokens.dims();
            (low_res_multimasks.clone(), tokens.slice([0..b, 0..1, 0..c]))
        };
        let [_, _, c] = token.dims();
        let high_res_masks = upsample_bilinear(low_res_masks.clone(), self.cfg.image_size);
        let mut obj_ptr = self.obj_ptr_proj.forward(token.reshape([b, c]));
        if let Some(no_obj) = &self.no_obj_ptr {
            let lambda = if self.cfg.soft_no_obj_ptr {
                sigmoid(score.clone())
            } else {
                appearing.reshape([b, 1])
            };
            if self.cfg.fixed_no_obj_ptr {
                obj_ptr = obj_ptr * lambda.clone();
            }
            obj_ptr = obj_ptr + (lambda * -1.0 + 1.0) * no_obj.val();
        }
        HeadsOut {
            low_res_multimasks,
            ious: out.iou_pred,
            low_res_masks,
            high_res_masks,
            obj_ptr,
            object_score_logits: score,
        }
    }

    /// `_use_mask_as_output`: a binary mask prompt [B, 1, 1024, 1024] becomes the output.
    pub fn use_mask_as_output(
        &self,
        backbone: Tensor<4>,
        high_res: Option<(Tensor<4>, Tensor<4>)>,
        mask_inputs: Tensor<4>,
    ) -> HeadsOut {
        let [b, _, h, w] = mask_inputs.dims();
        let device = mask_inputs.device();
        let high_res_masks = mask_inputs.clone() * 20.0 - 10.0;
        let low_res_masks = resize_aa(high_res_masks.clone(), h / 4, w / 4);
        let ious = Tensor::ones([b, 1], &device);
        let sam = self.forward_sam_heads(
            backbone,
            None,
            Some(self.mask_downsample.forward(mask_inputs.clone())),
            high_res,
            false,
        );
        let any: Vec<f32> = (0..b)
            .map(|i| {
                let v = tensor_to_vec(mask_inputs.clone().narrow(0, i, 1));
                if v.iter().any(|&x| x > 0.0) { 1.0 } else { 0.0 }
            })
            .collect();
        let lambda = tensor_from_vec(any, [b, 1], &device);
        let object_score_logits = lambda.clone() * 20.0 - 10.0;
        let mut obj_ptr = sam.obj_ptr;
        if let Some(no_obj) = &self.no_obj_ptr {
            if self.cfg.fixed_no_obj_ptr {
                obj_ptr = obj_ptr * lambda.clone();
            }
            obj_ptr = obj_ptr + (lambda * -1.0 + 1.0) * no_obj.val();
        }
        HeadsOut {
            low_res_multimasks: low_res_masks.clone(),
            ious,
            low_res_masks,
            high_res_masks,
            obj_ptr,
            object_score_logits,
        }
    }

    /// Whether the heads output three masks (`_use_multimask`).
    pub fn use_multimask(&self, is_init_cond_frame: bool, num_points: usize) -> bool {
        let c = &self.cfg;
        c.multimask_output_in_sam
            && (is_init_cond_frame || c.multimask_output_for_tracking)
            && (c.multimask_min_pt_num..=c.multimask_max_pt_num).contains(&num_points)
    }

    /// The object-independent start of the memory attention for a frame's features
    /// (`feat`/`pos`: [1, C, 64, 64]); pass it to [`Self::condition_on_memory`] for each
    /// object of that frame to compute it once instead of once per object.
    pub fn memory_attention_frame_part(&self, feat: Tensor<4>, pos: Tensor<4>) -> Tensor<3> {
        let curr = feat.flatten::<3>(2, 3).swap_dims(1, 2);
        let curr_pos = pos.flatten::<3>(2, 3).swap_dims(1, 2);
        self.memory_attention.forward_first_self(curr, curr_pos)
    }

    /// `_prepare_memory_conditioned_features` for one object: the frame's 64x64 features
    /// fused with the object's memories. `feat`/`pos`: [1, C, 64, 64]; `frame_part`: the
    /// result of [`Self::memory_attention_frame_part`] for the same features, if computed.
    #[allow(clippy::too_many_arguments)]
    pub fn condition_on_memory(
        &self,
        frame_idx: usize,
        is_init_cond_frame: bool,
        feat: Tensor<4>,
        pos: Tensor<4>,
        bank: &MemoryBank<'_>,
        maskmem_pos_enc: &Tensor<4>,
        num_frames: usize,
        track_in_reverse: bool,
        frame_part: Option<&Tensor<3>>,
    ) -> Tensor<4> {
        let [b, c, h, w] = feat.dims();
        let device = feat.device();
        if self.cfg.num_maskmem == 0 {
            return feat;
        }
        let curr = feat.flatten::<3>(2, 3).swap_dims(1, 2); // [B, HW, C]
        if is_init_cond_frame {
            if self.cfg.directly_add_no_mem_embed {
                let x = curr + self.no_mem_embed.val();
                return x.swap_dims(1, 2).reshape([b, c, h, w]);
            }
            let memory = self.no_mem_embed.val().expand([b, 1, c]);
            let memory_pos = self.no_mem_pos_enc.val().expand([b, 1, c]);
            let curr_pos = pos.flatten::<3>(2, 3).swap_dims(1, 2);
            let out = self
                .memory_attention
                .forward(curr, curr_pos, memory, memory_pos, 0);
            return out.swap_dims(1, 2).reshape([b, c, h, w]);
        }
        let (memory, memory_pos, num_obj_ptr_tokens) = self.gather_memory(
            frame_idx,
            bank,
            maskmem_pos_enc,
            num_frames,
            track_in_reverse,
            c,
            &device,
        );
        let out = match frame_part {
            Some(first) => self.memory_attention.forward_from_first_self(
                first.clone(),
                memory,
                memory_pos,
                num_obj_ptr_tokens,
            ),
            None => {
                let curr_pos = pos.flatten::<3>(2, 3).swap_dims(1, 2);
                self.memory_attention.forward(
                    curr,
                    curr_pos,
                    memory,
                    memory_pos,
                    num_obj_ptr_tokens,
                )
            }
        };
        out.swap_dims(1, 2).reshape([b, c, h, w])
    }

    /// The memory bank of one object for a tracked frame, as `_prepare_memory_conditioned_features`
    /// assembles it: (memory tokens [1, M, mem], their position encoding [1, M, mem], the
    /// number of object-pointer tokens at the end). `c`: the model's hidden width.
    #[allow(clippy::too_many_arguments)]
    pub fn gather_memory(
        &self,
        frame_idx: usize,
        bank: &MemoryBank<'_>,
        maskmem_pos_enc: &Tensor<4>,
        num_frames: usize,
        track_in_reverse: bool,
        c: usize,
        device: &Device,
    ) -> (Tensor<3>, Tensor<3>, usize) {
        let cfg = &self.cfg;
        let mem_dim = cfg.mem_dim();
        let (selected, unselected) =
            select_closest_cond_frames(frame_idx, &bank.cond, cfg.max_cond_frames_in_attn);
        let lookup_non_cond = |t: usize| -> Option<&FrameMemory> {
            (bank.non_cond)(t).or_else(|| unselected.iter().find(|(f, _)| *f == t).map(|(_, m)| *m))
        };
        // spatial memories: the selected conditioning frames at t_pos 0, then up to
        // num_maskmem - 1 previous frames in the tracking direction
        let mut entries: Vec<(usize, &FrameMemory)> =
            selected.iter().map(|(_, m)| (0usize, *m)).collect();
        let stride = cfg.memory_temporal_stride_for_eval as i64;
        let fi = frame_idx as i64;
        for t_pos in 1..cfg.num_maskmem {
            let t_rel = (cfg.num_maskmem - t_pos) as i64;
            let prev = if t_rel == 1 {
                if track_in_reverse { fi + 1 } else { fi - 1 }
            } else if !track_in_reverse {
                ((fi - 2).div_euclid(stride)) * stride - (t_rel - 2) * stride
            } else {
                -((-(fi + 2)).div_euclid(stride)) * stride + (t_rel - 2) * stride
            };
            if prev < 0 {
                continue;
            }
            if let Some(m) = lookup_non_cond(prev as usize) {
                entries.push((t_pos, m));
            }
        }
        let tpos = self.maskmem_tpos_enc.val(); // [num_maskmem, 1, 1, mem]
        let mut mem = Vec::new();
        let mut mem_pos = Vec::new();
        let pos_tokens = maskmem_pos_enc.clone().flatten::<3>(2, 3).swap_dims(1, 2); // [1, HW, mem]
        for (t_pos, m) in &entries {
            mem.push(
                m.maskmem_features
                    .clone()
                    .flatten::<3>(2, 3)
                    .swap_dims(1, 2),
            );
            let k = cfg.num_maskmem - t_pos - 1;
            let enc = tpos.clone().narrow(0, k, 1).reshape([1, 1, mem_dim]);
            mem_pos.push(pos_tokens.clone() + enc);
        }
        // object pointers
        let mut num_obj_ptr_tokens = 0;
        let max_ptrs = num_frames.min(cfg.max_obj_ptrs_in_encoder);
        let mut pos_and_ptrs: Vec<(f32, Tensor<2>)> = selected
            .iter()
            .filter(|(t, _)| {
                !cfg.only_obj_ptrs_in_the_past_for_eval
                    || if track_in_reverse {
                        *t >= frame_idx
                    } else {
                        *t <= frame_idx
                    }
            })
            .map(|(t, m)| {
                let d = if cfg.use_signed_tpos_enc_to_obj_ptrs {
                    (fi - *t as i64) * if track_in_reverse { -1 } else { 1 }
                } else {
                    (fi - *t as i64).abs()
                };
                (d as f32, m.obj_ptr.clone())
            })
            .collect();
        for t_diff in 1..max_ptrs {
            let t = if track_in_reverse {
                fi + t_diff as i64
            } else {
                fi - t_diff as i64
            };
            if t < 0 || t as usize >= num_frames {
                break;
            }
            if let Some(m) = lookup_non_cond(t as usize) {
                pos_and_ptrs.push((t_diff as f32, m.obj_ptr.clone()));
            }
        }
        if !pos_and_ptrs.is_empty() {
            let n = pos_and_ptrs.len();
            let ptrs = Tensor::cat(pos_and_ptrs.iter().map(|(_, p)| p.clone()).collect(), 0); // [n, C]
            let obj_pos = if cfg.add_tpos_enc_to_obj_ptrs {
                let t_diff_max = (max_ptrs - 1) as f32;
                let tpos_dim = if cfg.proj_tpos_enc_in_obj_ptrs {
                    c
                } else {
                    mem_dim
                };
                let p: Vec<f32> = pos_and_ptrs.iter().map(|(d, _)| d / t_diff_max).collect();
                let pe = tensor_from_vec(sine_1d(&p, tpos_dim), [n, tpos_dim], device);
                match &self.obj_ptr_tpos_proj {
                    Some(l) => l.forward(pe),
                    None => pe,
                }
            } else {
                Tensor::zeros([n, mem_dim], device)
            };
            // split each C-wide pointer into C / mem_dim tokens of mem_dim
            let split = c / mem_dim;
            let (ptrs, obj_pos) = if split > 1 {
                (
                    ptrs.reshape([n * split, mem_dim]),
                    obj_pos
                        .unsqueeze_dim::<3>(1)
                        .expand([n, split, mem_dim])
                        .reshape([n * split, mem_dim]),
                )
            } else {
                (ptrs, obj_pos)
            };
            num_obj_ptr_tokens = ptrs.dims()[0];
            mem.push(ptrs.unsqueeze::<3>());
            mem_pos.push(obj_pos.unsqueeze::<3>());
        }
        (
            Tensor::cat(mem, 1),
            Tensor::cat(mem_pos, 1),
            num_obj_ptr_tokens,
        )
    }

    /// [`Self::condition_on_memory`] for several objects of one tracked (not initial
    /// conditioning) frame, from [`Self::memory_attention_frame_part`] of its features and
    /// each object's [`Self::gather_memory`]. Objects whose banks have the same layout (token
    /// count, pointer tokens) run as one batch, so that the first layer's cross-attention
    /// projects and folds the shared queries once for all of them. Returns [1, C, H, W] per
    /// object, in order.
    pub fn condition_on_memories(
        &self,
        frame_part: &Tensor<3>,
        memories: Vec<(Tensor<3>, Tensor<3>, usize)>,
        [h, w]: [usize; 2],
    ) -> Vec<Tensor<4>> {
        let c = frame_part.dims()[2];
        let mut out: Vec<Option<Tensor<4>>> = vec![None; memories.len()];
        // groups of object indices with equal (tokens, pointer tokens), in first-seen order
        let mut groups: Vec<((usize, usize), Vec<usize>)> = Vec::new();
        for (i, (m, _, n_ptr)) in memories.iter().enumerate() {
            let key = (m.dims()[1], *n_ptr);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, g)) => g.push(i),
                None => groups.push((key, vec![i])),
            }
        }
        for ((_, n_ptr), idx) in groups {
            let memory = Tensor::cat(idx.iter().map(|&i| memories[i].0.clone()).collect(), 0);
            let memory_pos = Tensor::cat(idx.iter().map(|&i| memories[i].1.clone()).collect(), 0);
            let res = self.memory_attention.forward_from_first_self(
                frame_part.clone(),
                memory,
                memory_pos,
                n_ptr,
            );
            let k = idx.len();
            let res = res.swap_dims(1, 2).reshape([k, c, h, w]);
            for (j, &i) in idx.iter().enumerate() {
                out[i] = Some(res.clone().narrow(0, j, 1));
            }
        }
        out.into_iter()
            .map(|t| t.expect("every object is in a group"))
            .collect()
    }

    /// `_encode_new_memory`: (bf16-rounded features [B, mem, 64, 64], pos [1, mem, 64, 64]);
    /// `feat` may have one row for the B masks (the same frame).
    pub fn encode_new_memory(
        &self,
        feat: Tensor<4>,
        high_res_masks: Tensor<4>,
        object_score_logits: Tensor<2>,
        is_mask_from_pts: bool,
    ) -> (Tensor<4>, Tensor<4>) {
        let cfg = &self.cfg;
        let (scale, bias) = (cfg.sigmoid_scale_for_mem_enc, cfg.sigmoid_bias_for_mem_enc);
        let device = high_res_masks.device();
        let mask = if cfg.binarize_mask_from_pts_for_mem_enc && is_mask_from_pts {
            high_res_masks.greater_elem(0.0).float() * scale + bias
        } else if crate::kernels::host_fast_path(&device) {
            // one vectorised pass instead of three burn passes (~3.5 ms per 1024^2 mask)
            let (mut v, dims) = crate::kernels::to_host(high_res_masks);
            crate::kernels::simd::sigmoid_affine_inplace(&mut v, scale, bias);
            crate::kernels::from_host(v, dims, &device)
        } else {
            sigmoid(high_res_masks) * scale + bias
        };
        let (mut features, pos) = self.memory_encoder.forward(feat, mask);
        if let Some(e) = &self.no_obj_embed_spatial {
            let [b, m, h, w] = features.dims();
            let absent = object_score_logits
                .greater_elem(0.0)
                .float()
                .reshape([b, 1, 1, 1])
                * -1.0
                + 1.0;
            features = features + absent * e.val().reshape([1, m, 1, 1]).expand([b, m, h, w]);
        }
        let [_, m, h, w] = pos.dims();
        (round_bf16(features), pos.slice([0..1, 0..m, 0..h, 0..w]))
    }
}

/// (frame, memory) pairs.
pub type Memories<'a> = Vec<(usize, &'a FrameMemory)>;

/// `select_closest_cond_frames`: (selected, unselected), both in frame order.
pub fn select_closest_cond_frames<'a>(
    frame_idx: usize,
    cond: &[(usize, &'a FrameMemory)],
    max: i64,
) -> (Memories<'a>, Memories<'a>) {
    let mut all: Vec<(usize, &FrameMemory)> = cond.to_vec();
    all.sort_by_key(|(t, _)| *t);
    if max == -1 || all.len() as i64 <= max {
        return (all, Vec::new());
    }
    let max = max as usize;
    let mut sel: Vec<usize> = Vec::new();
    if let Some(b) = all
        .iter()
        .filter(|(t, _)| *t < frame_idx)
        .map(|(t, _)| *t)
        .max()
    {
        sel.push(b);
    }
    if let Some(a) = all
        .iter()
        .filter(|(t, _)| *t >= frame_idx)
        .map(|(t, _)| *t)
        .min()
    {
        sel.push(a);
    }
    let mut rest: Vec<usize> = all
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| !sel.contains(t))
        .collect();
    rest.sort_by_key(|t| (*t as i64 - frame_idx as i64).abs());
    sel.extend(rest.into_iter().take(max.saturating_sub(sel.len())));
    // the reference inserts into a dict in selection order; memory order follows it
    let selected: Vec<(usize, &FrameMemory)> = sel
        .iter()
        .map(|t| *all.iter().find(|(f, _)| f == t).expect("selected from all"))
        .collect();
    let unselected = all.into_iter().filter(|(t, _)| !sel.contains(t)).collect();
    (selected, unselected)
}

/// `F.interpolate(x, (size, size), mode="bilinear", align_corners=False)`; on the host fast
/// path plane by plane (`kernels::resample`: burn's CPU interpolate took ~7 ms per 256 -> 1024
/// mask, this ~1.5 ms).
pub fn upsample_bilinear(x: Tensor<4>, size: usize) -> Tensor<4> {
    let device = x.device();
    let [b, c, h, w] = x.dims();
    if crate::kernels::host_fast_path(&device) && h > 0 && w > 0 && size > 0 {
        let (v, _) = crate::kernels::to_host(x);
        let mut out = vec![0f32; b * c * size * size];
        for (plane, dst) in v.chunks_exact(h * w).zip(out.chunks_exact_mut(size * size)) {
            crate::kernels::resample::bilinear_into(plane, h, w, size, size, dst);
        }
        return crate::kernels::from_host(out, [b, c, size, size], &device);
    }
    interpolate(
        x,
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size([size, size]),
    )
}

/// `F.interpolate(x, (h, w), mode="bilinear", align_corners=False, antialias=True)` on the host
/// (torchvision-exact, see `fastsam2_core::resize::torch_resize_bilinear_aa`).
pub fn resize_aa(x: Tensor<4>, oh: usize, ow: usize) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let device = x.device();
    let v = tensor_to_vec(x);
    let out = fastsam2_core::resize::torch_resize_bilinear_aa(&v, b * c, h, w, oh, ow)
        .expect("valid non-empty buffer");
    tensor_from_vec(out, [b, c, oh, ow], &device)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};

    use super::*;

    /// The host upsampling equals burn's interpolate (the path of other devices), on SAM 2's
    /// 4x factor and an uneven one.
    #[test]
    fn host_upsample_equals_burn_interpolate() {
        let device = Device::flex();
        for (h, w, size) in [(16, 16, 64), (7, 12, 20)] {
            let x = Tensor::<4>::random([2, 3, h, w], Distribution::Normal(0.0, 3.0), &device);
            let x_max = x.clone().abs().max();
            let host = upsample_bilinear(x.clone(), size);
            let burn_op = interpolate(
                x,
                InterpolateOptions::new(InterpolateMode::Bilinear)
                    .with_align_corners(false)
                    .with_output_size([size, size]),
            );
            assert_eq!(host.dims(), burn_op.dims());
            // the two sum the same 4 products in another order: a few ulps of the largest
            // value (the inputs are unseeded, with |x| up to ~15, so a fixed 1e-5 was flaky)
            let scale: f32 = x_max.into_scalar();
            let tol = 16.0 * f32::EPSILON * scale.max(1.0);
            let d: f32 = (host - burn_op).abs().max().into_scalar();
            assert!(d <= tol, "{h}x{w} -> {size}: max diff {d} > {tol}");
        }
    }
}
