//! Parameter-efficient fine-tuning modules for the image encoders: LoRA branches on linears
//! and bottleneck adapters in the transformer blocks.
//!
//! Both are optional fields (`Option<..>`) of the encoder modules, `None` after construction
//! and after loading an official checkpoint, so state dicts are unchanged unless they are
//! inserted. They are initialised so that the model computes exactly what it computed before
//! insertion (LoRA `B = 0`, adapter up-projection `= 0`): training starts from the pretrained
//! function.
//!
//! * [`Lora`]: `y = W x + b + (alpha / r) · B A dropout(x)`, `A: in → r`, `B: r → out`
//!   (PEFT's `lora_A` / `lora_B`, same shapes in PyTorch layout). Mergeable into `W`
//!   ([`Lora::merge_into`]).
//! * [`Adapter`]: `x ↦ scale · up(GELU(down(x)))`, placed as in Medical SAM Adapter:
//!   after the attention (sequential, residual) and in parallel with the MLP.
//!
//! Random initialisation and LoRA dropout draw from explicit seeded generators
//! ([`PeftInit`], [`DropoutRng`]), not from the backend's global RNG, so fine-tuning runs are
//! reproducible and resumable bit for bit.

use std::sync::{Arc, Mutex};

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::common::tensor_from_vec;

/// SplitMix64: a tiny, fast, well-mixed generator (used for initialisation and dropout masks).
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Seeded initialiser of the inserted modules.
#[derive(Clone, Debug)]
pub struct PeftInit {
    rng: SplitMix64,
}

impl PeftInit {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SplitMix64(seed ^ 0x005E_ED0F_1A7E_u64),
        }
    }

    /// PyTorch's default `nn.Linear` weight init (`kaiming_uniform_(a=√5)`): U(-1/√fan_in, 1/√fan_in).
    fn uniform(&mut self, n: usize, bound: f64) -> Vec<f32> {
        (0..n)
            .map(|_| ((self.rng.next_f64() * 2.0 - 1.0) * bound) as f32)
            .collect()
    }

    /// A bias-free linear `d_in → d_out` with PyTorch's default init, or all zeros.
    fn linear(&mut self, d_in: usize, d_out: usize, zero: bool, device: &Device) -> Linear {
        let mut l = LinearConfig::new(d_in, d_out).with_bias(false).init(device);
        let data = if zero {
            vec![0.0; d_in * d_out]
        } else {
            self.uniform(d_in * d_out, 1.0 / (d_in as f64).sqrt())
        };
        // burn's Linear weight is [in, out].
        l.weight = Param::from_tensor(tensor_from_vec(data, [d_in, d_out], device));
        l
    }
}

/// Shared, reseedable source of LoRA dropout masks. Every [`Lora`] of a model holds a clone of
/// the same handle; the trainer reseeds it before each forward pass (so masks depend only on the
/// step, which makes resumed runs identical) and clears it for evaluation.
#[derive(Clone, Debug, Default)]
pub struct DropoutRng(Arc<Mutex<Option<SplitMix64>>>);

impl DropoutRng {
    /// Start a new mask stream (`Some(seed)`), or disable dropout (`None`).
    pub fn reseed(&self, seed: Option<u64>) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *g = seed.map(SplitMix64);
    }

    /// A keep-mask scaled by `1 / (1 - p)`, or `None` when dropout is disabled.
    fn mask(&self, n: usize, p: f64) -> Option<Vec<f32>> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let rng = g.as_mut()?;
        let keep = (1.0 / (1.0 - p)) as f32;
        Some(
            (0..n)
                .map(|_| if rng.next_f64() >= p { keep } else { 0.0 })
                .collect(),
        )
    }
}

/// Which linears of the encoder blocks get a LoRA branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    /// Attention input projection (`attn.qkv`).
    Qkv,
    /// Attention output projection (`attn.proj`).
    Proj,
    /// First MLP linear (`mlp.lin1` in SAM's ViT, `mlp.fc1` in TinyViT).
    #[serde(alias = "fc1")]
    Lin1,
    /// Second MLP linear (`mlp.lin2` / `mlp.fc2`).
    #[serde(alias = "fc2")]
    Lin2,
}

/// LoRA hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Vec<LoraTarget>,
}

/// Bottleneck adapter hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterSpec {
    /// Hidden width as a fraction of the block width (MSA: 0.25).
    pub ratio: f64,
    /// Scale of the parallel MLP adapter (MSA: 0.5).
    pub mlp_scale: f64,
}

impl Default for AdapterSpec {
    fn default() -> Self {
        Self {
            ratio: 0.25,
            mlp_scale: 0.5,
        }
    }
}

impl AdapterSpec {
    pub fn hidden(&self, dim: usize) -> usize {
        ((dim as f64 * self.ratio).round() as usize).max(1)
    }
}

/// A LoRA branch for one linear layer.
#[derive(Module, Debug)]
pub struct Lora {
    /// `A`: in → r (PyTorch `lora_A.weight` is [r, in]).
    pub lora_a: Linear,
    /// `B`: r → out (PyTorch `lora_B.weight` is [out, r]); zero at insertion.
    pub lora_b: Linear,
    /// alpha / r.
    pub scale: f64,
    pub dropout: f64,
    #[module(skip)]
    pub rng: DropoutRng,
}

impl Lora {
    pub fn new(
        d_in: usize,
        d_out: usize,
        spec: &LoraSpec,
        init: &mut PeftInit,
        rng: &DropoutRng,
        device: &Device,
    ) -> Self {
        Self {
            lora_a: init.linear(d_in, spec.rank, false, device),
            lora_b: init.linear(spec.rank, d_out, true, device),
            scale: spec.alpha / spec.rank as f64,
            dropout: spec.dropout,
            rng: rng.clone(),
        }
    }

    /// For a linear of `d_in → d_out` (burn layout `[in, out]`).
    pub fn for_linear(
        l: &Linear,
        spec: &LoraSpec,
        init: &mut PeftInit,
        rng: &DropoutRng,
        device: &Device,
    ) -> Self {
        let [d_in, d_out] = l.weight.dims();
        Self::new(d_in, d_out, spec, init, rng, device)
    }

    /// The branch's contribution for input `x` ([.., in] -> [.., out]).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let x = if self.dropout > 0.0 && x.device().is_autodiff() {
            let shape = x.shape();
            match self.rng.mask(shape.num_elements(), self.dropout) {
                Some(m) => {
                    let device = x.device();
                    let mask = Tensor::<D>::from_data(TensorData::new(m, shape), &device);
                    x * mask
                }
                None => x,
            }
        } else {
            x
        };
        self.lora_b.forward(self.lora_a.forward(x)) * self.scale
    }

    /// `W + scale · A B` in burn layout, detached: the weight of the merged linear.
    pub fn merged_weight(&self, base: &Linear) -> Tensor<2> {
        let a = self.lora_a.weight.val().detach(); // [in, r]
        let b = self.lora_b.weight.val().detach(); // [r, out]
        base.weight.val().detach() + a.matmul(b) * self.scale
    }

    /// Fold this branch into `base` (same forward result up to float rounding).
    pub fn merge_into(&self, base: &mut Linear) {
        let w = self.merged_weight(base);
        base.weight = Param::from_tensor(w);
    }
}

/// `linear(x)` plus the LoRA branch when present.
pub fn linear_lora<const D: usize>(l: &Linear, lora: &Option<Lora>, x: Tensor<D>) -> Tensor<D> {
    match lora {
        Some(lo) => l.forward(x.clone()) + lo.forward(x),
        None => l.forward(x),
    }
}

/// Merge and remove a LoRA branch.
pub fn merge_lora(l: &mut Linear, lora: &mut Option<Lora>) {
    if let Some(lo) = lora.take() {
        lo.merge_into(l);
    }
}

/// A bottleneck adapter `scale · up(GELU(down(x)))` (the caller adds the residual).
#[derive(Module, Debug)]
pub struct Adapter {
    pub down: Linear,
    /// Zero at insertion.
    pub up: Linear,
    pub scale: f64,
}

impl Adapter {
    pub fn new(
        dim: usize,
        spec: &AdapterSpec,
        scale: f64,
        init: &mut PeftInit,
        device: &Device,
    ) -> Self {
        let hidden = spec.hidden(dim);
        let mut down = init.linear(dim, hidden, false, device);
        let mut up = init.linear(hidden, dim, true, device);
        down.bias = Some(Param::from_tensor(Tensor::zeros([hidden], device)));
        up.bias = Some(Param::from_tensor(Tensor::zeros([dim], device)));
        Self { down, up, scale }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let y = self.up.forward(gelu(self.down.forward(x)));
        if self.scale == 1.0 { y } else { y * self.scale }
    }
}

/// `x + adapter(x)` when present.
pub fn with_adapter<const D: usize>(a: &Option<Adapter>, x: Tensor<D>) -> Tensor<D> {
    match a {
        Some(a) => x.clone() + a.forward(x),
        None => x,
    }
}
