//! AMX bf16x3 GEMM against the f32 `gemm` crate on Hiera-T / memory-attention shapes:
//! `cargo run --release -p fastsam2-models --example amx_timing`.
use fastsam2_models::kernels::{amx, attention, host};
use std::time::Instant;

// the CLI's allocator and settings (freed pages stay mapped): timings without page faults
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f64 / (1u64 << 31) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    // SAFETY: mimalloc's purge_delay option (index 15): never purge
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    println!("amx available: {}", amx::available());
    let only_attention = std::env::args().any(|a| a == "attention");
    if std::env::args().any(|a| a == "mlp") {
        use burn::nn::LinearConfig;
        let device = burn::tensor::Device::flex();
        let l1 = LinearConfig::new(256, 2048).init(&device);
        let l2 = LinearConfig::new(2048, 256).init(&device);
        let x = rand(4096 * 256, 1);
        let mlp = fastsam2_models::kernels::mlp::HostMlp::new(
            &l1,
            &l2,
            fastsam2_models::kernels::mlp::Act::Relu,
        );
        let ms = best(5, || {
            std::hint::black_box(mlp.rows(&x, 4096));
        });
        let t = Instant::now();
        let mlp2 = fastsam2_models::kernels::mlp::HostMlp::new(
            &l1,
            &l2,
            fastsam2_models::kernels::mlp::Act::Relu,
        );
        let new_ms = t.elapsed().as_secs_f64() * 1e3;
        drop(mlp2);
        println!("HostMlp 4096 x 256 -> 2048 -> 256: {ms:.1} ms (HostMlp::new {new_ms:.1} ms)");
        return;
    }
    if std::env::args().any(|a| a == "serial") {
        for &(m, k, n) in &[
            (128usize, 256usize, 1024usize),
            (128, 256, 2048),
            (128, 2048, 256),
            (128, 1536, 384),
            (128, 256, 1008),
            (128, 256, 992),
            (128, 256, 96),
            (32, 256, 64),
            (32, 32, 32),
            (128, 32, 32),
        ] {
            let a = rand(m * k, 1);
            let b = rand(k * n, 2);
            let pb = amx::PackedB::row_major(&b, k, n, n);
            let mut c = vec![0f32; m * n];
            let reps = 200;
            let ms = best(3, || {
                for _ in 0..reps {
                    amx::gemm_serial(m, &a, k, &pb, &mut c, n, 1.0, false);
                }
            }) / reps as f64;
            let macs = (m * n * 3 * k.div_ceil(32) * 32) as f64;
            println!(
                "serial {m} x {k} x {n}: {:.1} us, {:.0} G bf16 MAC/s ({:.0}% of 1.5 T)",
                ms * 1e3,
                macs / ms / 1e6,
                macs / ms / 1e6 / 15.0
            );
        }
        return;
    }
    for &(m, k, n) in if only_attention {
        &[][..]
    } else {
        &[
            (65536, 96, 288),
            (65536, 96, 384),
            (65536, 384, 96),
            (16384, 192, 768),
            (4096, 384, 1536),
            (4096, 1536, 384),
            (1024, 768, 3072),
            (1024, 3072, 768),
            (4096, 256, 4096),
            (4096, 4096, 256),
        ][..]
    } {
        let a = rand(m * k, 1);
        let b = rand(k * n, 2);
        let mut c = vec![0f32; m * n];
        let f32_ms = best(3, || host::matmul_into(&mut c, &a, &b, (m, k, n), false));
        let want = c.clone();
        let t = Instant::now();
        let pb = amx::PackedB::row_major(&b, k, n, n);
        let pack_ms = t.elapsed().as_secs_f64() * 1e3;
        let amx_ms = if amx::available() {
            best(3, || amx::gemm(m, &a, k, &pb, &mut c, n, 1.0, false))
        } else {
            f64::NAN
        };
        let err = want
            .iter()
            .zip(&c)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let gmac = (m * k * n) as f64 / 1e9;
        println!(
            "{m:>6} x {k:>5} x {n:>5}: f32 {f32_ms:8.2} ms ({:6.1} GMAC/s)  amx {amx_ms:8.2} ms ({:6.1} GMAC/s)  pack B {pack_ms:6.2} ms  max|diff| {err:.2e}",
            gmac / f32_ms * 1e3,
            gmac / amx_ms * 1e3
        );
    }

    for &(nh, hd, lq, lk, vd) in &[
        (4usize, 96usize, 4096usize, 4096usize, 96usize),
        (1, 256, 4096, 4096, 256),
        (1, 256, 4096, 28688, 64),
    ] {
        let q = rand(lq * nh * hd, 3);
        let k = rand(lk * nh * hd, 4);
        let v = rand(lk * vd, 5);
        let scale = (hd as f32).powf(-0.5);
        let mut want = Vec::new();
        let f32_ms = best(2, || {
            want = attention::attention_shared_values(&q, &k, &v, 1, lq, lk, nh, hd, vd, scale)
        });
        let mut out = vec![0f32; lq * nh * vd];
        let amx_ms = best(2, || {
            for h in 0..nh {
                // SAFETY: AMX available; out rows of nh * vd.
                unsafe {
                    amx::attention_head(
                        amx::Rows {
                            x: &q[h * hd..],
                            ld: nh * hd,
                            width: hd,
                        },
                        amx::Rows {
                            x: &k[h * hd..],
                            ld: nh * hd,
                            width: hd,
                        },
                        amx::Rows {
                            x: &v,
                            ld: vd,
                            width: vd,
                        },
                        lq,
                        lk,
                        scale,
                        out.as_mut_ptr().add(h * vd),
                        nh * vd,
                    )
                }
            }
        });
        let err = want
            .iter()
            .zip(&out)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        println!(
            "attention {nh} x {lq} x {lk} x {hd} -> {vd}: f32 {f32_ms:.1} ms, amx {amx_ms:.1} ms, max|diff| {err:.2e}"
        );
    }
}
