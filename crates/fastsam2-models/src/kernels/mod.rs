//! Hand-written CPU kernels for the inference hot spots (flex backend, no autodiff):
//! fused multi-head attention with SAM's decomposed relative-position bias or TinyViT's
//! per-head bias (no materialised [heads, L, L] bias, vectorised online softmax), and GELU.
//!
//! Why hand-written: burn's generic path materialises the relative-position bias
//! (12 x 4096 x 4096 floats = 805 MB per global ViT-B block) through a broadcast add and runs a
//! scalar `exp` per score; that made attention ~3 s of a ~2.6 s-per-block budget. The
//! training path (autodiff devices) keeps the generic burn ops, which have gradients; both
//! paths are compared in the tests below.

pub mod amx;
pub mod attention;
mod fused;
pub mod host;
pub mod mlp;
pub mod resample;
pub mod rope_cross;
pub mod simd;
pub mod upscale;

use burn::tensor::{Device, Tensor, TensorData};

/// Process-wide: 0 unset (read `FASTSAM2_BF16_PROBS` on first use), 1 off, 2 on.
static BF16_ATTENTION_WEIGHTS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Allow the memory cross-attention's value products to take the attention weights rounded to
/// bf16 (off by default; like PyTorch's `allow_tf32`, a precision setting for the whole
/// process). Each weight then moves by at most 2^-9 of itself, so an output by at most 2^-9
/// of the largest value, with sums in f32 (flash attention's bf16 `P V`); the values are the
/// stored memories, bf16 already. It applies where the CPU has AVX-512 BF16 and no AMX
/// (`vdpbf16ps`: twice an f32 FMA's multiply-adds per instruction) and changes nothing
/// elsewhere. `FASTSAM2_BF16_PROBS=1` turns it on when this is never called.
pub fn set_bf16_attention_weights(on: bool) {
    BF16_ATTENTION_WEIGHTS.store(if on { 2 } else { 1 }, std::sync::atomic::Ordering::Relaxed);
}

/// The setting of [`set_bf16_attention_weights`].
pub fn bf16_attention_weights() -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    match BF16_ATTENTION_WEIGHTS.load(Relaxed) {
        0 => {
            let on = std::env::var("FASTSAM2_BF16_PROBS").is_ok_and(|v| v != "0" && !v.is_empty());
            // a concurrent explicit setting wins over the environment
            let _ = BF16_ATTENTION_WEIGHTS.compare_exchange(
                0,
                if on { 2 } else { 1 },
                Relaxed,
                Relaxed,
            );
            BF16_ATTENTION_WEIGHTS.load(Relaxed) == 2
        }
        v => v == 2,
    }
}

/// Whether the host kernels apply: tensors live on the plain flex (CPU) device.
pub fn host_fast_path(device: &Device) -> bool {
    // Device equality ignores autodiff: exclude autodiff devices explicitly (training needs
    // the differentiable generic ops).
    *device == Device::flex() && !device.is_autodiff()
}

/// Move a float tensor's data to a host vector.
pub fn to_host<const D: usize>(t: Tensor<D>) -> (Vec<f32>, [usize; D]) {
    let dims = t.dims();
    let v = t
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float tensor");
    (v, dims)
}

/// A host vector back into a tensor on `device`.
pub fn from_host<const D: usize>(v: Vec<f32>, dims: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, dims), device)
}

/// A row-major copy of a lazily permuted tensor on the host fast path (elementwise ops on
/// strided views are much slower in the flex backend); other devices get it unchanged.
pub fn contiguous<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !host_fast_path(&device) {
        return x;
    }
    let (v, dims) = to_host(x);
    from_host(v, dims, &device)
}

/// Exact-erf GELU (`nn.GELU()`), on the host fast path when possible.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !host_fast_path(&device) {
        return burn::tensor::activation::gelu(x);
    }
    let (mut v, dims) = to_host(x);
    simd::gelu_inplace(&mut v);
    from_host(v, dims, &device)
}

/// Softmax over the last dimension, vectorised on the host fast path (burn's CPU softmax
/// runs a scalar `exp` per element).
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !host_fast_path(&device) {
        return burn::tensor::activation::softmax(x, D - 1);
    }
    let (mut v, dims) = to_host(x);
    attention::softmax_rows(&mut v, dims[D - 1]);
    from_host(v, dims, &device)
}
