//! Dialog-relevance speed (not a test): in-process latency of one message pair per call
//! through the classifier servable (tokenise, encode, pool, classify), on the shipped model.
//!
//!     cargo bench --bench relevance

#[path = "support/allocator.rs"]
mod allocator;
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use candle_serving::lexicon::Lexicon;
use candle_serving::models::bert::config::BertConfig;
use candle_serving::models::bert::ClassifierServable;
use candle_serving::models::LoadOptions;
use candle_serving::servable::{Inputs, Servable};
use candle_serving::tensor::Tensor;
use candle_serving::train::corpus::ner::Split;
use candle_serving::train::corpus::relevance::PairGenerator;
use common::repo_root;

fn main() {
    let lexicon = Lexicon::shipped().unwrap();
    let pairs = PairGenerator::new(&lexicon, 11).corpus(Split::Test, 1000);
    let dir = repo_root().join("model_repo/dialog_relevance/2");
    let config: BertConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let servable = ClassifierServable::load(&dir, &config, &LoadOptions::default()).unwrap();
    let chars = pairs
        .iter()
        .map(|p| p.first.chars().count() + p.second.chars().count())
        .sum::<usize>() as f64
        / pairs.len() as f64;
    for batch in [1usize, 8, 32] {
        let mut latencies = Vec::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(4) {
            for chunk in pairs.chunks(batch) {
                let inputs = Inputs::from([
                    (
                        "text".to_string(),
                        Tensor::strings(chunk.iter().map(|p| p.first.as_str())),
                    ),
                    (
                        "text_pair".to_string(),
                        Tensor::strings(chunk.iter().map(|p| p.second.as_str())),
                    ),
                ]);
                let t = Instant::now();
                servable.run("serving_default", &inputs).unwrap();
                latencies.push(t.elapsed());
            }
        }
        latencies.sort();
        let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
        println!(
            "dialog_relevance in-process, batch {batch} ({chars:.1} characters per pair): mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms per call, {:.0} pairs/s",
            mean.as_secs_f64() * 1e3,
            latencies[latencies.len() / 2].as_secs_f64() * 1e3,
            latencies[latencies.len() * 99 / 100].as_secs_f64() * 1e3,
            batch as f64 / mean.as_secs_f64()
        );
    }
}
