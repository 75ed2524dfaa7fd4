//! Symptom tagger speed (not a test): in-process latency per sentence, and gRPC
//! requests/s at concurrency 10 with one sentence per request against the release server
//! binary in its own process. Goal: 11,000 requests/s on 2 cores.
//!
//!     cargo bench --bench ner

#[path = "support/allocator.rs"]
mod allocator;
#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_serving::lexicon::Lexicon;
use candle_serving::models::bert::packed::Isa;
use candle_serving::models::tagger::TaggerServable;
use candle_serving::servable::{Inputs, Servable};
use candle_serving::tensor::Tensor;
use candle_serving::train::corpus::ner::{Generator, Split};
use common::process::spawn_server;
use common::*;

const RUN: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() {
    let lexicon = Lexicon::shipped().unwrap();
    let sentences: Vec<String> = Generator::new(&lexicon, 7)
        .corpus(Split::Test, 2000)
        .iter()
        .map(|s| s.text())
        .collect();
    let mean_chars =
        sentences.iter().map(|s| s.chars().count()).sum::<usize>() as f64 / sentences.len() as f64;
    // The version the server serves: the highest in the repository.
    let version: i64 = std::fs::read_dir(repo_root().join("model_repo/symptom_ner"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .max()
        .expect("a symptom_ner version");
    let dir = repo_root().join(format!("model_repo/symptom_ner/{version}"));
    let servable = TaggerServable::load(&dir).unwrap();

    // In-process: the whole servable call (decode UTF-8, map characters, BiLSTM, Viterbi,
    // entities, output tensors) for one sentence at a time, on one thread.
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        for s in &sentences {
            let inputs = Inputs::from([("text".to_string(), Tensor::strings([s]))]);
            let t = Instant::now();
            servable.run("serving_default", &inputs).unwrap();
            latencies.push(t.elapsed());
        }
    }
    latencies.sort();
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    println!(
        "symptom_ner in-process, one sentence per call ({mean_chars:.1} characters on average), one thread, {} recurrent kernel:",
        Isa::f32().f32_name()
    );
    println!(
        "  mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs, {:.0} sentences/s",
        mean.as_secs_f64() * 1e6,
        latencies[latencies.len() / 2].as_secs_f64() * 1e6,
        latencies[latencies.len() * 99 / 100].as_secs_f64() * 1e6,
        1.0 / mean.as_secs_f64()
    );

    // gRPC against the release binary in its own process.
    let server = spawn_server(
        &repo_root(),
        &[
            "--port=0",
            "--rest_api_port=0",
            "--model_name=symptom_ner",
            &format!("--model_base_path={}", dir.parent().unwrap().display()),
        ],
    )
    .expect("the server starts");
    let mut connections = Vec::new();
    for _ in 0..2 {
        connections.push(
            tonic::transport::Channel::from_shared(format!("http://{}", server.grpc_addr))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    let mut status =
        candle_serving::proto::tensorflow::serving::model_service_client::ModelServiceClient::new(
            connections[0].clone(),
        );
    wait_for_state(&mut status, "symptom_ner", version, AVAILABLE).await;
    let sentences = Arc::new(sentences);
    for concurrency in [1usize, 10] {
        let begun = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..concurrency {
            let mut client = candle_serving::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient::new(
                connections[c % connections.len()].clone(),
            );
            let sentences = sentences.clone();
            tasks.push(tokio::spawn(async move {
                let (mut lat, mut errors, mut i) = (Vec::new(), 0, c);
                while begun.elapsed() < RUN {
                    let request = predict_request(
                        spec("symptom_ner", None),
                        &[("text", strings(&[&sentences[i % sentences.len()]]))],
                    );
                    i += concurrency;
                    let t = Instant::now();
                    if client.predict(request).await.is_err() {
                        errors += 1;
                    }
                    lat.push(t.elapsed());
                }
                (lat, errors)
            }));
        }
        let (mut all, mut errors) = (Vec::new(), 0);
        for t in tasks {
            let (l, e) = t.await.unwrap();
            all.extend(l);
            errors += e;
        }
        all.sort();
        println!(
            "gRPC, concurrency {concurrency}: {:.0} requests/s, p50 {:.3} ms, p99 {:.3} ms, {errors} errors",
            all.len() as f64 / begun.elapsed().as_secs_f64(),
            all[all.len() / 2].as_secs_f64() * 1e3,
            all[all.len() * 99 / 100].as_secs_f64() * 1e3,
        );
    }
    server.signal("TERM");
}
