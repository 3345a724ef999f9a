//! Stateless-by-construction randomness: every random decision of a run draws from a
//! generator seeded by `(seed, purpose, step / epoch / sample position)`. Nothing random
//! carries over from one step to the next, so a resumed run makes exactly the draws of an
//! uninterrupted one.

use fastsam2_models::peft::SplitMix64;

#[derive(Clone, Debug)]
pub struct Rng(SplitMix64);

/// Mix a seed with a list of integers (order-sensitive).
pub fn derive_seed(seed: u64, parts: &[u64]) -> u64 {
    let mut s = SplitMix64(seed ^ 0xA076_1D64_78BD_642F);
    let mut h = s.next_u64();
    for &p in parts {
        let mut m = SplitMix64(h ^ p.wrapping_mul(0xE703_7ED1_A0B4_28DB));
        h = m.next_u64();
    }
    h
}

impl Rng {
    pub fn new(seed: u64, parts: &[u64]) -> Self {
        Self(SplitMix64(derive_seed(seed, parts)))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        self.0.next_f64()
    }

    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        if hi <= lo {
            return lo;
        }
        lo + (hi - lo) * self.f64()
    }

    pub fn bernoulli(&mut self, p: f64) -> bool {
        p > 0.0 && self.f64() < p
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.f64() * n as f64) as usize).min(n.saturating_sub(1))
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(1e-300);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}
