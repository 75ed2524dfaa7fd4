//! REST versus gRPC, TF Serving's API versus the Open Inference Protocol's (v2 gRPC; v2 REST
//! with a JSON tensor and with the binary-data extension), for the same small request (one
//! short sentence) at concurrency 1 and 32: requests/s, p50 and p99. Run against a tiny BERT (the transport dominates) and the real
//! MiniLM (the model dominates). Not a test; results go in BENCHMARKS.md.
//!
//!     cargo bench --bench rest_vs_grpc

#[path = "support/allocator.rs"]
mod allocator;
#[path = "../tests/common/mod.rs"]
mod common;

#[path = "support/load.rs"]
mod load;

use std::time::Duration;

use candle_serving::config::ModelsConfig;
use candle_serving::server::ServerOptions;
use common::*;
use load::{grpc_and_rest, v2_cells};

const RUN: Duration = Duration::from_secs(6);

#[tokio::main]
async fn main() {
    let sentences = load::short_sentences();
    let dir = tempfile::tempdir().unwrap();
    publish_tiny_bert(&dir.path().join("tiny"), 1, Kind::Embedding, 1);
    std::os::unix::fs::symlink(minilm_dir().parent().unwrap(), dir.path().join("minilm")).unwrap();
    let config = r#"model_config_list { config { name: "tiny" base_path: "tiny" } config { name: "minilm" base_path: "minilm" } }"#;
    let mut s = TestServer::start(ServerOptions::local(
        ModelsConfig::from_text(config, dir.path(), "bench").unwrap(),
    ))
    .await;
    s.wait_for("tiny", 1, AVAILABLE).await;
    s.wait_for("minilm", 1, AVAILABLE).await;

    println!(
        "REST vs gRPC, one short sentence per request, closed loop, {}s per cell, {} cores",
        RUN.as_secs(),
        std::thread::available_parallelism().unwrap()
    );
    println!("| model | API | concurrency | requests/s | p50 | p99 | errors |");
    println!("|---|---|---|---|---|---|---|");
    for model in ["tiny", "minilm"] {
        for concurrency in [1, 32] {
            let [g, r] = grpc_and_rest(&s, model, &sentences, concurrency, RUN).await;
            let [vg, vj, vb] = v2_cells(&s, model, &sentences, concurrency, RUN).await;
            let cells = [
                ("TF gRPC", g),
                ("TF REST", r),
                ("v2 gRPC", vg),
                ("v2 REST JSON", vj),
                ("v2 REST binary", vb),
            ];
            for (name, o) in cells {
                println!(
                    "| {model} | {name} | {concurrency} | {:.0} | {:.2} ms | {:.2} ms | {} |",
                    o.rps,
                    o.p50.as_secs_f64() * 1e3,
                    o.p99.as_secs_f64() * 1e3,
                    o.errors
                );
            }
        }
    }
    s.stop().await;
}
