//! Building blocks shared by several components: `LayerNorm2d`, `MLPBlock`, `MLP`,
//! and small tensor helpers. Field names follow `segment_anything/modeling/common.py`
//! and `mask_decoder.py` so state-dict keys map 1:1.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::module::layer_norm;
use burn::tensor::{Device, Tensor};

use crate::peft::{Lora, linear_lora};

/// Channel-wise LayerNorm of an NCHW tensor (`common.LayerNorm2d`, eps 1e-6).
#[derive(Module, Debug)]
pub struct LayerNorm2d {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub eps: f64,
}

impl LayerNorm2d {
    pub fn new(channels: usize, eps: f64, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            eps,
        }
    }

    /// `x`: [B, C, H, W].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // Normalise over C by moving it last, using the fused layer-norm kernel.
        let x = x.permute([0, 2, 3, 1]);
        let x = layer_norm(x, self.weight.val(), Some(self.bias.val()), self.eps);
        x.permute([0, 3, 1, 2])
    }

    /// Same normalisation for a channels-last tensor `[.., C]`.
    pub fn forward_channels_last<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        layer_norm(x, self.weight.val(), Some(self.bias.val()), self.eps)
    }
}

/// Activation functions used by the official modules (`nn.GELU` is the exact erf form).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Gelu,
    Relu,
}

impl Activation {
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Gelu => crate::kernels::gelu(x),
            Activation::Relu => relu(x),
        }
    }
}

/// `common.MLPBlock`: lin2(act(lin1(x))).
#[derive(Module, Debug)]
pub struct MlpBlock {
    pub lin1: Linear,
    pub lin2: Linear,
    #[module(skip)]
    pub act: Activation,
    /// Optional LoRA branches (fine-tuning; `None` in official models).
    pub lin1_lora: Option<Lora>,
    pub lin2_lora: Option<Lora>,
}

impl MlpBlock {
    pub fn new(dim: usize, hidden: usize, act: Activation, device: &Device) -> Self {
        Self {
            lin1: LinearConfig::new(dim, hidden).init(device),
            lin2: LinearConfig::new(hidden, dim).init(device),
            act,
            lin1_lora: None,
            lin2_lora: None,
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let h = self
            .act
            .forward(linear_lora(&self.lin1, &self.lin1_lora, x));
        linear_lora(&self.lin2, &self.lin2_lora, h)
    }
}

/// `mask_decoder.MLP` / `sam2_utils.MLP`: `num_layers` linears with an activation (ReLU unless
/// given) between them, optional sigmoid.
#[derive(Module, Debug)]
pub struct Mlp {
    pub layers: Vec<Linear>,
    pub sigmoid_output: bool,
    #[module(skip)]
    pub act: Activation,
}

impl Mlp {
    pub fn new(
        input_dim: usize,
        hidden_dim: usize,
        output_dim: usize,
        num_layers: usize,
        sigmoid_output: bool,
        device: &Device,
    ) -> Self {
        let mut layers = Vec::with_capacity(num_layers);
        for i in 0..num_layers {
            let d_in = if i == 0 { input_dim } else { hidden_dim };
            let d_out = if i + 1 == num_layers {
                output_dim
            } else {
                hidden_dim
            };
            layers.push(LinearConfig::new(d_in, d_out).init(device));
        }
        Self {
            layers,
            sigmoid_output,
            act: Activation::Relu,
        }
    }

    /// An MLP with another activation between its layers (SAM 2's Hiera MLP uses GELU).
    pub fn with_activation(
        input_dim: usize,
        hidden_dim: usize,
        output_dim: usize,
        num_layers: usize,
        act: Activation,
        device: &Device,
    ) -> Self {
        Self {
            act,
            ..Self::new(input_dim, hidden_dim, output_dim, num_layers, false, device)
        }
    }

    pub fn forward<const D: usize>(&self, mut x: Tensor<D>) -> Tensor<D> {
        let n = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i + 1 < n {
                x = self.act.forward(x);
            }
        }
        if self.sigmoid_output {
            x = sigmoid(x);
        }
        x
    }
}

/// Build a float tensor from a host vector.
pub fn tensor_from_vec<const D: usize>(
    data: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(burn::tensor::TensorData::new(data, shape), device)
}

/// Copy a float tensor to a host vector (row-major).
pub fn tensor_to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("float tensor converts to f32")
}
