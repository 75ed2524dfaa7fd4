//! Soak (a benchmark, not a test): one million mixed requests, valid and invalid, over gRPC
//! and REST, against a real server process whose model is hot-swapped every few seconds,
//! with the server's resident memory sampled throughout. Reports RSS over time and its
//! growth after warm-up (the goal is under 5%), the failures among valid requests (the goal
//! is none) and the swaps seen.
//!
//!     cargo bench --all-features --bench soak [-- --requests 1000000 --clients 16 --swap_every 5]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_serving::proto::tensorflow::serving::model_service_client::ModelServiceClient;
use candle_serving::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use common::process::spawn_server;
use common::services::free_port;
use common::*;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Publishes version `v` of the tagger the careful way: a hidden copy, then one rename.
fn publish(base: &Path, v: u64) {
    let tmp = base.join(format!(".tmp-{v}"));
    copy_dir(&repo_root().join("model_repo/symptom_ner/1"), &tmp);
    std::fs::rename(&tmp, base.join(v.to_string())).unwrap();
}

#[tokio::main]
async fn main() {
    let total: u64 = arg("--requests").map_or(1_000_000, |s| s.parse().expect("--requests"));
    let clients: u64 = arg("--clients").map_or(16, |s| s.parse().expect("--clients"));
    let swap_every =
        Duration::from_secs(arg("--swap_every").map_or(5, |s| s.parse().expect("--swap_every")));
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("ner");
    std::fs::create_dir_all(&base).unwrap();
    publish(&base, 1);
    let rest_port = free_port();
    let server = spawn_server(
        dir.path(),
        &[
            "--model_name=ner",
            &format!("--model_base_path={}", base.display()),
            &format!("--rest_api_port={rest_port}"),
        ],
    )
    .expect("the server starts");
    let pid = server.child.id();
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut models = ModelServiceClient::new(channel.clone());
    wait_for_state(&mut models, "ner", 1, AVAILABLE).await;
    let grpc = PredictionServiceClient::new(channel);
    let rest = format!("http://127.0.0.1:{rest_port}");
    let texts: Arc<Vec<String>> = Arc::new(
        [
            "我头痛发烧",
            "孩子咳嗽三天了",
            "肚子疼还拉肚子",
            "最近老是失眠，心慌",
            "嗓子疼",
            "你好",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    );

    let next = Arc::new(AtomicU64::new(0));
    let failed_valid = Arc::new(AtomicU64::new(0));
    let versions_seen = Arc::new(parking_lot::Mutex::new(std::collections::BTreeSet::new()));
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (mut grpc, http, rest, texts) = (
            grpc.clone(),
            reqwest::Client::new(),
            rest.clone(),
            texts.clone(),
        );
        let (next, failed_valid, versions_seen) =
            (next.clone(), failed_valid.clone(), versions_seen.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let text = &texts[i as usize % texts.len()];
                match i % 10 {
                    // Valid over gRPC (4 in 10) and REST (2 in 10).
                    0..=3 => match grpc
                        .predict(predict_request(
                            spec("ner", None),
                            &[("text", strings(&[text]))],
                        ))
                        .await
                    {
                        Ok(r) => {
                            if let Some(v) =
                                r.into_inner().model_spec.and_then(|s| s.version_choice)
                            {
                                versions_seen.lock().insert(format!("{v:?}"));
                            }
                        }
                        Err(e) => {
                            failed_valid.fetch_add(1, Ordering::Relaxed);
                            eprintln!("valid gRPC request failed: {e}");
                        }
                    },
                    4 | 5 => {
                        let ok = http
                            .post(format!("{rest}/v1/models/ner:predict"))
                            .body(format!("{{\"instances\": [\"{text}\"]}}"))
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                        if !ok {
                            failed_valid.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // Invalid: unknown models, wrong dtypes, shape bombs, ragged and broken JSON.
                    6 => {
                        let _ = grpc
                            .predict(predict_request(
                                spec(&format!("ghost{i}"), None),
                                &[("text", strings(&["a"]))],
                            ))
                            .await;
                    }
                    7 => {
                        let mut bomb = strings(&["a"]);
                        bomb.tensor_shape = shape(&[1 << 26]);
                        let _ = grpc
                            .predict(predict_request(spec("ner", None), &[("text", bomb)]))
                            .await;
                    }
                    8 => {
                        let _ = http
                            .post(format!("{rest}/v1/models/ner:predict"))
                            .body("{\"instances\": [[\"a\"], \"b\"]}")
                            .send()
                            .await;
                    }
                    _ => {
                        let _ = http
                            .post(format!("{rest}/v1/models/ner:predict"))
                            .body("{\"instances\": [")
                            .send()
                            .await;
                    }
                }
            }
        }));
    }

    // Hot swaps: a new version every `swap_every`, the oldest removed once two are newer.
    let swapper = {
        let (base, done) = (base.clone(), done.clone());
        tokio::spawn(async move {
            let mut v = 1;
            let mut swaps = 0;
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(swap_every).await;
                v += 1;
                publish(&base, v);
                if v > 3 {
                    let _ = std::fs::remove_dir_all(base.join((v - 3).to_string()));
                }
                swaps += 1;
            }
            swaps
        })
    };

    let started = Instant::now();
    let mut samples: Vec<(f64, u64, u64)> = Vec::new();
    while next.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(500)).await;
        samples.push((
            started.elapsed().as_secs_f64(),
            next.load(Ordering::Relaxed).min(total),
            status_kib(Some(pid), "VmRSS:"),
        ));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let swaps = swapper.await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let warm = samples
        .iter()
        .find(|(_, n, _)| *n >= total / 10)
        .map_or(0, |s| s.2);
    let last = samples.last().map_or(0, |s| s.2);
    let peak = samples.iter().map(|s| s.2).max().unwrap_or(0);
    println!(
        "## Soak: {total} mixed requests ({clients} clients), a hot swap every {} s",
        swap_every.as_secs()
    );
    println!();
    println!("| elapsed s | requests | server RSS MiB |");
    println!("|---|---|---|");
    let step = (samples.len() / 12).max(1);
    for (t, n, rss) in samples.iter().step_by(step).chain(samples.last()) {
        println!("| {t:.0} | {n} | {:.1} |", *rss as f64 / 1024.0);
    }
    println!();
    println!(
        "{:.0} requests/s; {swaps} swaps; versions that answered: {}; valid requests that failed: {}",
        total as f64 / seconds,
        versions_seen.lock().len(),
        failed_valid.load(Ordering::Relaxed)
    );
    println!(
        "RSS after warm-up (10% of requests) {:.1} MiB, at the end {:.1} MiB, peak {:.1} MiB: growth {:+.1}%",
        warm as f64 / 1024.0,
        last as f64 / 1024.0,
        peak as f64 / 1024.0,
        (last as f64 - warm as f64) * 100.0 / warm.max(1) as f64
    );
    drop(server);
}
