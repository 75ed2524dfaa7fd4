//! In-process MiniLM throughput (not a test): tokenise, encode, pool and normalise the
//! sentences of `data/bench/short.txt` and `long.txt` in batches of 1, 8 and 32 through
//! the embedding servable, the way the server runs a batch.
//!
//!     cargo bench --bench encoder [-- --seconds 5 --json out.json --int8]
//!
//! Threads: the matmuls use gemm's rayon pool (`RAYON_NUM_THREADS`, default the physical
//! cores); everything else runs on the calling thread.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use candle_serving::models::{load_servable_with, LoadOptions};
use candle_serving::servable::Inputs;
use candle_serving::tensor::Tensor;
use common::{arg, repo_root};

fn main() {
    let seconds: f64 = arg("--seconds").map_or(5.0, |s| s.parse().expect("--seconds"));
    let dir = repo_root().join("model_repo/minilm/1");
    let int8 = std::env::args().any(|a| a == "--int8");
    let servable = load_servable_with(&dir, &LoadOptions { int8 })
        .expect("run scripts/fetch_weights.sh first");
    let runtime = if int8 {
        "candle-serving-int8"
    } else {
        "candle-serving"
    };
    let bench = repo_root().join("data/bench");
    let mut results = Vec::new();
    println!("| file | batch | sentences/s | mean per call |");
    println!("|---|---|---|---|");
    for file in ["short", "long"] {
        let text = std::fs::read_to_string(bench.join(format!("{file}.txt"))).unwrap();
        let sentences: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        for batch in [1usize, 8, 32] {
            let batches: Vec<Inputs> = sentences
                .chunks(batch)
                .filter(|c| c.len() == batch)
                .map(|c| Inputs::from([("text".to_string(), Tensor::strings(c.iter()))]))
                .collect();
            for inputs in batches.iter().take(2) {
                servable.run("serving_default", inputs).unwrap();
            }
            let (mut calls, mut done) = (0usize, 0usize);
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs_f64(seconds) {
                let inputs = &batches[calls % batches.len()];
                servable.run("serving_default", inputs).unwrap();
                calls += 1;
                done += batch;
            }
            let took = started.elapsed().as_secs_f64();
            let rate = done as f64 / took;
            println!(
                "| {file} | {batch} | {rate:.0} | {:.2} ms |",
                took * 1e3 / calls as f64
            );
            results.push(serde_json::json!({
                "runtime": runtime, "file": file, "batch": batch,
                "sentences_per_s": rate,
            }));
        }
    }
    if let Some(path) = arg("--json") {
        std::fs::write(path, serde_json::to_string_pretty(&results).unwrap()).unwrap();
    }
}
