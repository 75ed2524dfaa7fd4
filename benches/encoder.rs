//! In-process MiniLM throughput (not a test): tokenise, encode, pool and normalise the
//! sentences of `data/bench/short.txt` and `long.txt` in batches of 1, 8 and 32 through
//! the embedding servable, the way the server runs a batch.
//!
//!     cargo bench --bench encoder [-- --seconds 5 --json out.json --int8 --file short --batch 1]
//!
//! With `--int8` it first prints how far the int8 embeddings are from fp32 (lowest cosine over
//! the reference and benchmark sentences), so a speed figure never comes without its accuracy.
//!
//! Threads: the matmuls use gemm's rayon pool (`RAYON_NUM_THREADS`, default the physical
//! cores); everything else runs on the calling thread.

#[path = "support/allocator.rs"]
mod allocator;
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use candle_serving::models::{load_servable_with, LoadOptions};
use candle_serving::servable::Inputs;
use candle_serving::tensor::Tensor;
use common::{arg, cosine, repo_root};

fn main() {
    let seconds: f64 = arg("--seconds").map_or(5.0, |s| s.parse().expect("--seconds"));
    let dir = repo_root().join("model_repo/minilm/1");
    let int8 = std::env::args().any(|a| a == "--int8");
    let servable = load_servable_with(&dir, &LoadOptions { int8 })
        .expect("run scripts/fetch_weights.sh first");
    let runtime = arg("--runtime").unwrap_or_else(|| {
        if int8 {
            "candle-serving-int8".into()
        } else {
            "candle-serving".into()
        }
    });
    let bench = repo_root().join("data/bench");
    if int8 {
        let fp32 = load_servable_with(&dir, &LoadOptions { int8: false }).unwrap();
        let texts = common::minilm_accuracy_sentences();
        let embed = |s: &dyn candle_serving::servable::Servable| {
            let inputs = Inputs::from([("text".to_string(), Tensor::strings(texts.iter()))]);
            let out = s.run("serving_default", &inputs).unwrap();
            match out["embeddings"].data() {
                candle_serving::tensor::TensorData::Float(v) => v.clone(),
                other => panic!("embeddings are {:?}", other.dtype()),
            }
        };
        let (a, b) = (embed(fp32.as_ref()), embed(servable.as_ref()));
        let lowest = a
            .chunks(384)
            .zip(b.chunks(384))
            .map(|(a, b)| cosine(a, b))
            .fold(1f32, f32::min);
        println!(
            "int8 vs fp32 over {} sentences: lowest cosine {lowest:.5}",
            texts.len()
        );
    }
    let mut results = Vec::new();
    println!("| file | batch | sentences/s | mean per call |");
    println!("|---|---|---|---|");
    let only_file = arg("--file");
    let only_batch: Option<usize> = arg("--batch").map(|b| b.parse().expect("--batch"));
    for file in ["short", "long"] {
        if only_file.as_deref().is_some_and(|f| f != file) {
            continue;
        }
        let text = std::fs::read_to_string(bench.join(format!("{file}.txt"))).unwrap();
        let sentences: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        for batch in [1usize, 8, 32] {
            if only_batch.is_some_and(|b| b != batch) {
                continue;
            }
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
