//! Peak resident memory of a real server process while many clients send the worst requests
//! we know (a benchmark, not a test): shape bombs, 4 MiB messages of one-byte strings (the
//! largest expansion protobuf decoding allows within the message limit), JSON bodies just
//! under the value limit, nesting bombs, and made-up model names. The server runs the
//! shipped models.config with its default limits; the load generator shares the machine.
//! Prints RSS before, the peak (VmHWM, reset before the attack) and after, beside the
//! configured bound (concurrency budget x request bytes).
//!
//!     cargo bench --all-features --bench hostile_rss [-- --seconds 30 --clients 64 --only N]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_serving::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use candle_serving::proto::tensorflow::TensorProto;
use common::process::spawn_server;
use common::services::free_port;
use common::*;

/// The worst requests, by kind.
const KINDS: [&str; 6] = [
    "gRPC shape bomb [67108864] x 1 KiB",
    "gRPC 4 MiB of one-byte strings",
    "gRPC int64 [8192,8192] one value",
    "REST 262,000 JSON numbers",
    "REST 100,000 nested lists",
    "gRPC/REST made-up model names",
];

#[tokio::main]
async fn main() {
    let seconds: f64 = arg("--seconds").map_or(30.0, |s| s.parse().expect("--seconds"));
    let clients: usize = arg("--clients").map_or(64, |s| s.parse().expect("--clients"));
    // `--only N`: every client sends kind N of KINDS (0-based) instead of all in turn.
    let only: Option<usize> = arg("--only").map(|s| s.parse().expect("--only"));
    minilm_dir();
    let rest_port = free_port();
    let server = spawn_server(&repo_root(), &[&format!("--rest_api_port={rest_port}")])
        .expect("the server starts");
    let pid = server.child.id();
    let grpc_url = format!("http://{}", server.grpc_addr);
    let rest = format!("http://127.0.0.1:{rest_port}");
    let channel = tonic::transport::Channel::from_shared(grpc_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut models =
        candle_serving::proto::tensorflow::serving::model_service_client::ModelServiceClient::new(
            channel.clone(),
        );
    for model in ["minilm", "symptom_ner", "dialog_relevance"] {
        // The shipped models.config serves each model's highest version.
        let latest: i64 = std::fs::read_dir(repo_root().join("model_repo").join(model))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .max()
            .expect("a version folder");
        wait_for_state(&mut models, model, latest, AVAILABLE).await;
    }
    let mut grpc = PredictionServiceClient::new(channel)
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    for _ in 0..20 {
        grpc.predict(predict_request(
            spec("minilm", None),
            &[("text", strings(&["a normal sentence"]))],
        ))
        .await
        .expect("an ordinary request");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = status_kib(Some(pid), "VmRSS:");
    // Reset the peak so VmHWM measures the attack alone.
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");

    let one_byte = TensorProto {
        dtype: 7,
        tensor_shape: shape(&[1_390_000]),
        string_val: vec![b"a".to_vec(); 1_390_000],
        ..Default::default()
    };
    let bomb = TensorProto {
        dtype: 7,
        tensor_shape: shape(&[67_108_864]),
        string_val: vec![vec![b'a'; 1024]],
        ..Default::default()
    };
    let ids = TensorProto {
        dtype: 9,
        tensor_shape: shape(&[8192, 8192]),
        int64_val: vec![1],
        ..Default::default()
    };
    let numbers = Arc::new(format!(
        "{{\"inputs\": {{\"input_ids\": [[{}1]]}}}}",
        "1,".repeat(261_000)
    ));
    let nested = Arc::new(format!("{{\"instances\": {}}}", "[".repeat(100_000)));
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Arc<Vec<AtomicU64>> = Arc::new(KINDS.iter().map(|_| AtomicU64::new(0)).collect());
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (mut grpc, http) = (grpc.clone(), reqwest::Client::new());
        let (one_byte, bomb, ids) = (one_byte.clone(), bomb.clone(), ids.clone());
        let (numbers, nested, rest) = (numbers.clone(), nested.clone(), rest.clone());
        let (stop, sent, refused) = (stop.clone(), sent.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let kind = only.unwrap_or(i % KINDS.len());
                i += 1;
                let ok = match kind {
                    0 => grpc
                        .predict(predict_request(
                            spec("minilm", None),
                            &[("text", bomb.clone())],
                        ))
                        .await
                        .is_ok(),
                    1 => grpc
                        .predict(predict_request(
                            spec("minilm", None),
                            &[("text", one_byte.clone())],
                        ))
                        .await
                        .is_ok(),
                    2 => grpc
                        .predict(predict_request(
                            spec("minilm", None),
                            &[("input_ids", ids.clone())],
                        ))
                        .await
                        .is_ok(),
                    3 => http
                        .post(format!("{rest}/v1/models/minilm:predict"))
                        .body(numbers.to_string())
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success()),
                    4 => http
                        .post(format!("{rest}/v1/models/minilm:predict"))
                        .body(nested.to_string())
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success()),
                    _ => {
                        let name = format!("ghost-{c}-{i}");
                        let _ = http
                            .post(format!("{rest}/v1/models/{name}:predict"))
                            .body("{}")
                            .send()
                            .await;
                        grpc.predict(predict_request(
                            spec(&name, None),
                            &[("text", strings(&["a"]))],
                        ))
                        .await
                        .is_ok()
                    }
                };
                sent[kind].fetch_add(1, Ordering::Relaxed);
                if !ok {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed().as_secs_f64() < seconds {
        tokio::time::sleep(Duration::from_millis(50)).await;
        samples.push(status_kib(Some(pid), "VmRSS:"));
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let peak = status_kib(Some(pid), "VmHWM:").max(samples.iter().copied().max().unwrap_or(0));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = status_kib(Some(pid), "VmRSS:");
    grpc.predict(predict_request(
        spec("minilm", None),
        &[("text", strings(&["still there?"]))],
    ))
    .await
    .expect("the server still answers after the attack");
    let total: u64 = sent.iter().map(|s| s.load(Ordering::Relaxed)).sum();
    let what = only.map_or("all kinds in turn".to_string(), |k| KINDS[k].to_string());
    println!("## Hostile load: {clients} clients for {seconds:.0} s ({what}), server on the shipped models.config, default limits");
    println!();
    println!("| request kind | sent |");
    println!("|---|---|");
    for (kind, n) in KINDS.iter().zip(sent.iter()) {
        println!("| {kind} | {} |", n.load(Ordering::Relaxed));
    }
    println!();
    println!(
        "{total} requests, {} refused (all should be)",
        refused.load(Ordering::Relaxed)
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!();
    println!("| server RSS | MiB |");
    println!("|---|---|");
    println!("| before | {:.0} |", mib(before));
    println!("| peak during the attack | {:.0} |", mib(peak));
    println!(
        "| growth at the peak | {:.0} |",
        mib(peak.saturating_sub(before))
    );
    println!("| 2 s after | {:.0} |", mib(after));
    println!("| configured bound: 32 concurrent x 4 MiB messages | 128 (plus decoding) |");
}
