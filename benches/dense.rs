//! The dense-layer kernels alone (not a test): GFLOP/s of `x · W` for MiniLM's four layer
//! shapes at a batch of one short sentence, one long one and 32 short ones, on one thread and
//! on the rayon pool, beside this core's measured FMA peak. Each product starts from a bias,
//! plus a residual for the two layers that take one, into a cleared destination, as the
//! model's layers do ([`PackedLayer::compute`]). The encoder benchmark says how fast
//! the model is; this one says how close its matrix products come to the hardware.
//!
//!     cargo bench --bench dense [-- --seconds 1 --int8 --cold]
//!
//! With `--int8` the figure counts the same product's multiply-adds (quantising the rows
//! included), so it compares directly with the f32 one.
//!
//! By default one copy of each layer's weights is multiplied again and again, so they stay in
//! cache. With `--cold` each call takes the next of enough copies to fill [`COLD_BYTES`], so
//! its weights come from memory, as the encoder's do at one sentence (every call of the model
//! reads all its dense layers, more than an L3 cache holds).
//!
//! `CANDLE_SERVING_KERNELS=avx2` measures the AVX2 kernels on an AVX-512 host.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use candle_serving::models::bert::packed::{F32Weights, Int8Weights, Isa, PackedLayer};
use common::arg;

/// Inputs, outputs and whether the layer adds a residual: MiniLM's QKV, attention output,
/// FFN up and FFN down.
const LAYERS: [(&str, usize, usize, bool); 4] = [
    ("qkv", 384, 1152, false),
    ("attn out", 384, 384, true),
    ("ffn up", 384, 1536, false),
    ("ffn down", 1536, 384, true),
];
const ROWS: [(&str, usize); 3] = [("1 short", 16), ("1 long", 64), ("32 short", 512)];
/// What the copies of a layer's weights fill with `--cold`: several times the L3 cache a core
/// of a server CPU can reach (32 MB on the Zen 4 host here, about 100 MB on large Xeons), so
/// that no call finds its weights there.
const COLD_BYTES: usize = 512 << 20;

fn main() {
    let seconds: f64 = arg("--seconds").map_or(1.0, |s| s.parse().expect("--seconds"));
    let int8 = std::env::args().any(|a| a == "--int8");
    let cold = std::env::args().any(|a| a == "--cold");
    let isa = if int8 { Isa::int8() } else { Isa::f32() };
    println!(
        "kernels: {} ({}); one core's FMA peak {:.0} GFLOP/s",
        if int8 {
            isa.int8_name()
        } else {
            isa.f32_name()
        },
        if int8 { "int8" } else { "f32" },
        fma_peak()
    );
    if cold {
        println!(
            "weights: cold (each call the next of {} MB of copies)",
            COLD_BYTES >> 20
        );
    }
    let pool = rayon::current_num_threads();
    println!("| layer | rows | GFLOP/s 1 thread | GFLOP/s {pool} threads |");
    println!("|---|---|---|---|");
    for (name, k, n, adds_residual) in LAYERS {
        let w: Vec<f32> = (0..k * n)
            .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let bytes = k * n * if int8 { 1 } else { 4 };
        let copies = if cold { COLD_BYTES.div_ceil(bytes) } else { 1 };
        let layers: Vec<Layer> = (0..copies)
            .map(|_| {
                if int8 {
                    Layer::Int8(Int8Weights::quantize(&w, k, n).unwrap())
                } else {
                    Layer::F32(F32Weights::pack(&w, k, n).unwrap())
                }
            })
            .collect();
        let next = AtomicUsize::new(0);
        for (label, rows) in ROWS {
            let x: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 104_729) % 1999) as f32 / 999.0 - 1.0)
                .collect();
            let bias: Vec<f32> = (0..n).map(|i| (i % 17) as f32 / 17.0).collect();
            let residual: Option<Vec<f32>> =
                adds_residual.then(|| (0..rows * n).map(|i| (i % 23) as f32 / 23.0).collect());
            let mut dst = Vec::with_capacity(rows * n);
            let mut rate = |threads: usize| {
                let run = |dst: &mut Vec<f32>| {
                    let i = next.fetch_add(1, Ordering::Relaxed) % layers.len();
                    let residual = residual.as_deref();
                    match &layers[i] {
                        Layer::Int8(w) => w.compute(&x, &bias, residual, dst, threads, false),
                        Layer::F32(w) => w.compute(&x, &bias, residual, dst, threads, false),
                    }
                };
                let flops = 2.0 * (rows * k * n) as f64;
                // Best of several rounds: this measures the kernel, not the neighbours.
                let mut best = 0f64;
                for _ in 0..5 {
                    let start = Instant::now();
                    let mut calls = 0u64;
                    while start.elapsed().as_secs_f64() < seconds / 5.0 {
                        black_box(run(&mut dst));
                        calls += 1;
                    }
                    best = best.max(flops * calls as f64 / start.elapsed().as_secs_f64() / 1e9);
                }
                best
            };
            let one = rate(1);
            let all = on_pool(|| rate(pool));
            println!("| {name} {k}→{n} | {rows} ({label}) | {one:.1} | {all:.1} |");
        }
    }
}

/// One copy of a layer's weights, in the form being measured.
enum Layer {
    F32(F32Weights),
    Int8(Int8Weights),
}

/// Runs `f` on a rayon worker, as the model's forward pass does.
fn on_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    rayon::scope(|_| f())
}

/// GFLOP/s of independent FMA chains on this core, with the widest vectors the kernels use.
fn fma_peak() -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            if Isa::f32() == Isa::Avx512 {
                // SAFETY: Isa::f32() saw AVX-512 F.
                return unsafe { fma_peak_avx512() };
            }
            // SAFETY: AVX2 and FMA were detected just above.
            return unsafe { fma_peak_avx2() };
        }
    }
    f64::NAN
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_peak_avx2() -> f64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.5); 12];
    let (a, b) = (_mm256_set1_ps(0.999_9), _mm256_set1_ps(1e-5));
    let rounds = 20_000_000u64;
    let start = Instant::now();
    for _ in 0..rounds {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    black_box(&acc);
    (rounds * 12 * 16) as f64 / elapsed / 1e9
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_peak_avx512() -> f64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(0.5); 24];
    let (a, b) = (_mm512_set1_ps(0.999_9), _mm512_set1_ps(1e-5));
    let rounds = 10_000_000u64;
    let start = Instant::now();
    for _ in 0..rounds {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    black_box(&acc);
    (rounds * 24 * 32) as f64 / elapsed / 1e9
}
