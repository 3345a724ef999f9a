//! Vectorisable elementwise math (exp, erf, GELU) with runtime CPU-feature dispatch.
//! The bodies are plain Rust; compiled inside `#[target_feature]` functions, LLVM turns them
//! into AVX2/AVX-512 code. Accuracy: exp ~1e-7 relative (Cephes expf polynomial), erf
//! 1.5e-7 absolute (Abramowitz & Stegun 7.1.26).

use rayon::prelude::*;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// e^x for x in [-87, 88] (smaller inputs give ~0, as softmax needs).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let p = p * r2 + r + 1.0;
    // 2^n from the bits: n is an integer in [-125, 127] here; adding 1.5 * 2^23 puts it in the
    // low mantissa bits of `t`. A saturating `n as i32` would do the same, but LLVM scalarises
    // that cast (NaN / range checks per lane), which made every softmax and GELU 3-4x slower.
    // A NaN input stays NaN through `p` (no undefined behaviour on any input).
    let t = n + 12_582_912.0;
    let e = t.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23;
    p * f32::from_bits(e)
}

/// erf(x), |error| <= 1.5e-7.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let y = 1.0
        - (((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_72) * t
            + 0.254_829_6)
            * t)
            * exp(-a * a);
    y.copysign(x)
}

#[inline(always)]
fn gelu_body(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

macro_rules! dispatch {
    ($vis:vis $name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) { $body($($arg),*) }
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) { $body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512dq") {
                    // SAFETY: the CPU supports the enabled features (checked just above).
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: as above.
                    return unsafe { v3($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use dispatch;

dispatch!(pub gelu_chunk, gelu_body, (v: &mut [f32]));

/// In-place exact-form GELU, `0.5 x (1 + erf(x / sqrt 2))`, parallel over chunks.
pub fn gelu_inplace(v: &mut [f32]) {
    v.par_chunks_mut(1 << 14).for_each(gelu_chunk);
}

#[inline(always)]
fn sigmoid_affine_body(v: &mut [f32], scale: f32, bias: f32) {
    for x in v.iter_mut() {
        *x = scale / (1.0 + exp(-*x)) + bias;
    }
}

dispatch!(sigmoid_affine_chunk, sigmoid_affine_body, (v: &mut [f32], scale: f32, bias: f32));

/// In place `scale * sigmoid(x) + bias` (SAM 2's mask for the memory encoder), parallel over
/// chunks; within ~3e-7 relative of the sigmoid (this module's `exp`).
pub fn sigmoid_affine_inplace(v: &mut [f32], scale: f32, bias: f32) {
    v.par_chunks_mut(1 << 14)
        .for_each(|c| sigmoid_affine_chunk(c, scale, bias));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_are_accurate() {
        let mut worst_exp = 0f64;
        let mut worst_erf = 0f64;
        for i in 0..200_000 {
            let x = -80.0 + i as f32 * 0.0004;
            let e = exp(x) as f64;
            let r = (x as f64).exp();
            worst_exp = worst_exp.max(((e - r) / r).abs());
            let y = -6.0 + i as f32 * 0.00006;
            worst_erf = worst_erf.max((erf(y) as f64 - libm_erf(y as f64)).abs());
        }
        assert!(worst_exp < 3e-7, "exp rel error {worst_exp}");
        assert!(worst_erf < 1e-6, "erf abs error {worst_erf}");
    }

    /// erf by its Taylor / continued-fraction definition in f64 (reference).
    fn libm_erf(x: f64) -> f64 {
        // high-precision series for |x| < 3, asymptotic complement beyond
        if x.abs() < 3.0 {
            let mut sum = 0.0;
            let mut term = x;
            let mut n = 0.0;
            while term.abs() > 1e-17 {
                sum += term / (2.0 * n + 1.0);
                n += 1.0;
                term *= -x * x / n;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let z = x.abs();
            // continued fraction for erfc
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (z + f);
            }
            let erfc = (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + f);
            (1.0 - erfc).copysign(x)
        }
    }

    #[test]
    fn sigmoid_affine_matches_definition() {
        let mut v: Vec<f32> = (0..50_001).map(|i| -100.0 + i as f32 * 0.004).collect();
        v.extend([f32::NEG_INFINITY, f32::INFINITY, -1024.0]);
        let orig = v.clone();
        sigmoid_affine_inplace(&mut v, 20.0, -10.0);
        for (g, x) in v.iter().zip(&orig) {
            let r = 20.0 / (1.0 + (-*x as f64).exp()) - 10.0;
            assert!(
                (*g as f64 - r).abs() < 1e-5,
                "20 sigmoid({x}) - 10 = {g}, want {r}"
            );
        }
    }

    #[test]
    fn gelu_matches_definition() {
        let mut v: Vec<f32> = (0..50_000).map(|i| -8.0 + i as f32 * 0.00032).collect();
        let orig = v.clone();
        gelu_inplace(&mut v);
        for (g, x) in v.iter().zip(&orig) {
            let r = 0.5 * *x as f64 * (1.0 + libm_erf(*x as f64 / std::f64::consts::SQRT_2));
            assert!((*g as f64 - r).abs() < 2e-6, "gelu({x}) = {g}, want {r}");
        }
    }
}
