//! MiniLM end to end under load (not a test): one short sentence per request
//! (`data/bench/short.txt`), closed loop, gRPC and REST, at concurrency 1, 8, 32 and 64,
//! with server-side batching on and off. Client and server share the machine's cores, as a
//! sidecar load generator would.
//!
//!     cargo bench --bench load [-- --seconds 6 --json out.json --batching on|off --concurrency 1,8 --int8]

#[path = "support/allocator.rs"]
mod allocator;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/load.rs"]
mod load;

use std::time::Duration;

use candle_serving::batching::BatchingOptions;
use candle_serving::config::ModelsConfig;
use candle_serving::server::ServerOptions;
use common::*;
use load::grpc_and_rest;

#[tokio::main]
async fn main() {
    let run =
        Duration::from_secs_f64(arg("--seconds").map_or(6.0, |s| s.parse().expect("--seconds")));
    let sentences = load::short_sentences();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(minilm_dir().parent().unwrap(), dir.path().join("minilm")).unwrap();
    let config = r#"model_config_list { config { name: "minilm" base_path: "minilm" } }"#;
    println!(
        "MiniLM, one short sentence per request, closed loop, {}s per cell, {} cores",
        run.as_secs_f64(),
        std::thread::available_parallelism().unwrap()
    );
    println!("| batching | transport | concurrency | requests/s | p50 | p99 | errors |");
    println!("|---|---|---|---|---|---|---|");
    let mut results = Vec::new();
    let modes: Vec<bool> = match arg("--batching").as_deref() {
        Some("on") => vec![true],
        Some("off") => vec![false],
        _ => vec![true, false],
    };
    let int8 = std::env::args().any(|a| a == "--int8");
    let levels: Vec<usize> = arg("--concurrency").map_or(vec![1, 8, 32, 64], |l| {
        l.split(',')
            .map(|c| c.parse().expect("--concurrency 1,8,32"))
            .collect()
    });
    for batching in modes {
        let mut options =
            ServerOptions::local(ModelsConfig::from_text(config, dir.path(), "bench").unwrap());
        if int8 {
            options.manager.int8_models = ["minilm".to_string()].into();
        }
        options.core.batching = batching.then(|| BatchingOptions {
            max_batch_size: 64,
            ..BatchingOptions::default()
        });
        let mut s = TestServer::start(options).await;
        s.wait_for("minilm", 1, AVAILABLE).await;
        // Warm up (first-touch of the weights, allocator growth) before any cell counts.
        let warm = std::time::Instant::now();
        for text in sentences.iter().cycle() {
            if warm.elapsed() > Duration::from_secs(2) {
                break;
            }
            let mut grpc = s.grpc.clone();
            let request = predict_request(spec("minilm", None), &[("text", strings(&[text]))]);
            grpc.predict(request).await.expect("warm-up request");
        }
        for &concurrency in &levels {
            let [g, r] = grpc_and_rest(&s, "minilm", &sentences, concurrency, run).await;
            for (transport, o) in [("gRPC", g), ("REST", r)] {
                let on = match (batching, int8) {
                    (true, false) => "on",
                    (false, false) => "off",
                    (true, true) => "on, int8",
                    (false, true) => "off, int8",
                };
                println!(
                    "| {on} | {transport} | {concurrency} | {:.0} | {:.2} ms | {:.2} ms | {} |",
                    o.rps,
                    o.p50.as_secs_f64() * 1e3,
                    o.p99.as_secs_f64() * 1e3,
                    o.errors
                );
                results.push(serde_json::json!({
                    "server": "candle-serving", "batching": batching, "int8": int8,
                    "transport": transport,
                    "concurrency": concurrency, "rps": o.rps,
                    "p50_ms": o.p50.as_secs_f64() * 1e3, "p99_ms": o.p99.as_secs_f64() * 1e3,
                    "errors": o.errors,
                }));
            }
        }
        s.stop().await;
    }
    if let Some(path) = arg("--json") {
        std::fs::write(path, serde_json::to_string_pretty(&results).unwrap()).unwrap();
    }
}
