//! Floating-point reductions in the order NumPy performs them.
//!
//! The official evaluation code averages with `numpy.mean` / `numpy.nanmean`, which sum
//! contiguous `float64` data with pairwise summation (blocks of 8 partial sums up to 128
//! elements, recursive halving above). Summing in the same order gives the same bits,
//! so reports match the official numbers to the last digit rather than to ~1e-16.

const PW_BLOCKSIZE: usize = 128;

/// `numpy.add.reduce` over a contiguous `float64` array (pairwise summation).
pub fn np_sum(a: &[f64]) -> f64 {
    0.0 + pairwise(a)
}

fn pairwise(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &v in a {
            res += v;
        }
        res
    } else if n <= PW_BLOCKSIZE {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - (n % 8) {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise(&a[..n2]) + pairwise(&a[n2..])
    }
}

/// `numpy.mean` of a `float64` array: pairwise sum divided by the count (NaN when empty).
pub fn np_mean(a: &[f64]) -> f64 {
    np_sum(a) / a.len() as f64
}

/// `numpy.nanmean`: NaNs are dropped (replaced by 0 and not counted), NaN when nothing is left.
pub fn np_nanmean(a: &[f64]) -> f64 {
    let cnt = a.iter().filter(|v| !v.is_nan()).count();
    if cnt == a.len() {
        return np_mean(a);
    }
    let replaced: Vec<f64> = a
        .iter()
        .map(|&v| if v.is_nan() { 0.0 } else { v })
        .collect();
    np_sum(&replaced) / cnt as f64
}

/// `numpy.linspace(start, stop, num)` (endpoint included), value for value.
pub fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return vec![];
    }
    if num == 1 {
        return vec![start];
    }
    let div = (num - 1) as f64;
    let step = (stop - start) / div;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// Python's `round()` (round half to even) for an `f64`.
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_matches_numpy() {
        // numpy.linspace(.5, .95, 10)
        let t = np_linspace(0.5, 0.95, 10);
        assert_eq!(t[1], 0.55);
        assert_eq!(t[5], 0.75);
        assert_eq!(t[9], 0.95);
        assert_eq!(t[8], 0.8999999999999999); // as numpy gives it
        let r = np_linspace(0.0, 1.0, 101);
        assert_eq!(r[7], 0.07);
        assert_eq!(r[100], 1.0);
    }

    #[test]
    fn pairwise_differs_from_naive() {
        // 1e16 + 1 + 1 + ... : naive left-to-right loses the ones, pairwise keeps some
        let mut a = vec![1.0f64; 200];
        a[0] = 1e16;
        let naive: f64 = a.iter().fold(0.0, |s, v| s + v);
        assert_ne!(np_sum(&a), naive);
        assert_eq!(np_sum(&[1.0, 2.0, 3.0]), 6.0);
        assert!(np_mean(&[]).is_nan());
        assert_eq!(np_nanmean(&[1.0, f64::NAN, 3.0]), 2.0);
    }

    #[test]
    fn round_like_python() {
        assert_eq!(round_half_even(128.5), 128.0);
        assert_eq!(round_half_even(129.5), 130.0);
        assert_eq!(round_half_even(2.4), 2.0);
    }
}
