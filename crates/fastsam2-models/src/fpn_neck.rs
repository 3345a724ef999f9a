//! SAM 2's image encoder = Hiera trunk + FPN neck (`sam2/modeling/backbones/image_encoder.py`):
//! 1x1 lateral convs, nearest top-down fusion on the chosen levels, sine position encodings,
//! and `scalp` (dropping the lowest-resolution levels).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::hiera::{Hiera, HieraConfig};
use crate::position_encoding::sine_2d_tensor;

fn default_top_down() -> Vec<usize> {
    vec![2, 3]
}
fn default_scalp() -> usize {
    1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FpnNeckConfig {
    pub d_model: usize,
    /// Must equal the trunk's channel list, lowest resolution first (as in the configs).
    pub backbone_channel_list: Vec<usize>,
    #[serde(default = "default_top_down")]
    pub fpn_top_down_levels: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sam2ImageEncoderConfig {
    pub trunk: HieraConfig,
    pub neck: FpnNeckConfig,
    #[serde(default = "default_scalp")]
    pub scalp: usize,
}

impl Sam2ImageEncoderConfig {
    pub fn new(trunk: HieraConfig, d_model: usize) -> Self {
        let mut list = trunk.channel_list();
        list.reverse();
        Self {
            trunk,
            neck: FpnNeckConfig {
                d_model,
                backbone_channel_list: list,
                fpn_top_down_levels: default_top_down(),
            },
            scalp: 1,
        }
    }

    pub fn init(&self, device: &Device) -> Sam2ImageEncoder {
        let convs = self
            .neck
            .backbone_channel_list
            .iter()
            .map(|&dim| LateralConv {
                conv: Conv2dConfig::new([dim, self.neck.d_model], [1, 1]).init(device),
            })
            .collect();
        Sam2ImageEncoder {
            trunk: self.trunk.init(device),
            neck: FpnNeck {
                convs,
                fpn_top_down_levels: self.neck.fpn_top_down_levels.clone(),
                d_model: self.neck.d_model,
            },
            scalp: self.scalp,
        }
    }
}

/// `nn.Sequential(conv=...)`: key `convs.<i>.conv.*`.
#[derive(Module, Debug)]
pub struct LateralConv {
    pub conv: Conv2d,
}

#[derive(Module, Debug)]
pub struct FpnNeck {
    pub convs: Vec<LateralConv>,
    pub fpn_top_down_levels: Vec<usize>,
    pub d_model: usize,
}

impl FpnNeck {
    /// Trunk levels (highest resolution first) -> (features, position encodings) per level.
    pub fn forward(&self, xs: Vec<Tensor<4>>) -> (Vec<Tensor<4>>, Vec<Tensor<4>>) {
        let n = self.convs.len() - 1;
        let mut out: Vec<Option<Tensor<4>>> = vec![None; n + 1];
        let mut prev: Option<Tensor<4>> = None;
        for i in (0..=n).rev() {
            let lateral = self.convs[n - i].conv.forward(xs[i].clone());
            let feat = match (&prev, self.fpn_top_down_levels.contains(&i)) {
                (Some(p), true) => {
                    let [_, _, h, w] = p.dims();
                    let up = interpolate(
                        p.clone(),
                        InterpolateOptions::new(InterpolateMode::Nearest)
                            .with_output_size([2 * h, 2 * w]),
                    );
                    lateral + up
                }
                _ => lateral,
            };
            prev = Some(feat.clone());
            out[i] = Some(feat);
        }
        let feats: Vec<Tensor<4>> = out
            .into_iter()
            .map(|o| o.expect("every level computed"))
            .collect();
        let pos = feats
            .iter()
            .map(|f| {
                let [b, _, h, w] = f.dims();
                sine_2d_tensor(self.d_model, h, w, &f.device()).expand([b, self.d_model, h, w])
            })
            .collect();
        (feats, pos)
    }
}

/// Backbone output: FPN levels (highest resolution first) and their position encodings.
#[derive(Clone, Debug)]
pub struct BackboneOut {
    pub backbone_fpn: Vec<Tensor<4>>,
    pub vision_pos_enc: Vec<Tensor<4>>,
}

#[derive(Module, Debug)]
pub struct Sam2ImageEncoder {
    pub trunk: Hiera,
    pub neck: FpnNeck,
    pub scalp: usize,
}

impl Sam2ImageEncoder {
    pub fn forward(&self, x: Tensor<4>) -> BackboneOut {
        self.forward_with(x, |_, _| {})
    }

    /// Forward with a tap on the trunk levels (`trunk_level{i}`), for parity checks.
    pub fn forward_with(&self, x: Tensor<4>, mut tap: impl FnMut(&str, &Tensor<4>)) -> BackboneOut {
        let levels = self.trunk.forward(x);
        for (i, l) in levels.iter().enumerate() {
            tap(&format!("trunk_level{i}"), l);
        }
        let (mut feats, mut pos) = self.neck.forward(levels);
        let keep = feats.len() - self.scalp;
        feats.truncate(keep);
        pos.truncate(keep);
        BackboneOut {
            backbone_fpn: feats,
            vision_pos_enc: pos,
        }
    }
}
