//! Peak f32 multiply-add rate of this CPU: `cargo run --release --example fma_peak -- [threads]`.
//!
//! Each thread runs 12 independent chains of 512-bit FMAs (AVX-512 where present, else 256-bit
//! AVX2 FMA), enough to cover the FMA latency on every current x86 core, so the figure is the
//! arithmetic ceiling the kernels are measured against (a FLOP is a multiply or an add, an FMA is
//! two). Prints GFLOP/s per thread count from 1 to `threads` (default: all cores).
use std::time::Instant;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chains512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let b = _mm512_set1_ps(1.000_000_1);
    let c = _mm512_set1_ps(1e-7);
    let mut a = [_mm512_setzero_ps(); 12];
    for (i, v) in a.iter_mut().enumerate() {
        *v = _mm512_set1_ps(i as f32);
    }
    for _ in 0..iters {
        for v in a.iter_mut() {
            *v = _mm512_fmadd_ps(*v, b, c);
        }
    }
    a.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains256(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let b = _mm256_set1_ps(1.000_000_1);
    let c = _mm256_set1_ps(1e-7);
    let mut a = [_mm256_setzero_ps(); 12];
    for (i, v) in a.iter_mut().enumerate() {
        *v = _mm256_set1_ps(i as f32);
    }
    for _ in 0..iters {
        for v in a.iter_mut() {
            *v = _mm256_fmadd_ps(*v, b, c);
        }
    }
    let mut s = 0.0;
    for v in a {
        let mut x = [0f32; 8];
        // SAFETY: x holds 8 f32s.
        unsafe { _mm256_storeu_ps(x.as_mut_ptr(), v) };
        s += x.iter().sum::<f32>();
    }
    s
}

/// FLOPs per iteration, the runner, and its name.
type Kernel = (f64, fn(u64) -> f32, &'static str);

/// The widest FMA this CPU has.
#[cfg(target_arch = "x86_64")]
fn kernel() -> Option<Kernel> {
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is present (checked above).
        Some((12.0 * 32.0, |n| unsafe { chains512(n) }, "avx512 fma"))
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: AVX2 and FMA are present (checked above).
        Some((12.0 * 16.0, |n| unsafe { chains256(n) }, "avx2 fma"))
    } else {
        None
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn kernel() -> Option<Kernel> {
    None
}

fn main() {
    let Some((flops_per_iter, run, name)) = kernel() else {
        eprintln!("fma_peak: no x86-64 FMA on this machine");
        std::process::exit(1);
    };
    let max_threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let iters: u64 = 100_000_000;
    for threads in 1..=max_threads {
        let mut best = 0f64;
        for _ in 0..3 {
            let t0 = Instant::now();
            let sum: f32 = std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads).map(|_| s.spawn(|| run(iters))).collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum()
            });
            let gflops =
                threads as f64 * iters as f64 * flops_per_iter / t0.elapsed().as_secs_f64() / 1e9;
            std::hint::black_box(sum);
            best = best.max(gflops);
        }
        println!("{name}: {threads} thread(s): {best:.1} GFLOP/s");
    }
}
