//! Server-side batching on a live server over real sockets: batched answers equal unbatched
//! ones on the real MiniLM (gRPC and REST), concurrent requests really share batches, a
//! full queue is RESOURCE_EXHAUSTED / 429 while the server keeps serving, versions swap
//! under batched load without a failed request or a mixed batch, and the binary's flags.
//! The scheduler's finer behaviour (ordering, timeouts, abandoned requests, one bad input
//! in a batch) is tested against a recording servable in `src/batching/tests.rs`.

use crate::common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use candle_serving::batching::BatchingOptions;
use candle_serving::config::ModelsConfig;
use candle_serving::models::load_servable;
use candle_serving::proto::tensorflow::serving::model_spec::VersionChoice;
use candle_serving::servable::Inputs;
use candle_serving::server::ServerOptions;
use candle_serving::tensor::{Tensor, TensorData};
use common::process::run_failing;
use common::*;

const MINILM: &str = r#"model_config_list { config { name: "minilm" base_path: "minilm" model_platform: "candle" } }"#;

/// A folder holding `minilm/1` as a link to the real weights.
fn minilm_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("minilm")).unwrap();
    std::os::unix::fs::symlink(minilm_dir(), dir.path().join("minilm/1")).unwrap();
    dir
}

fn options(dir: &Path, config: &str, batching: Option<BatchingOptions>) -> ServerOptions {
    let mut o = ServerOptions::local(ModelsConfig::from_text(config, dir, "test config").unwrap());
    o.core.batching = batching;
    o
}

/// A server on the real MiniLM of `dir`, once it serves.
async fn minilm_server(dir: &Path, batching: Option<BatchingOptions>) -> TestServer {
    let mut s = TestServer::start(options(dir, MINILM, batching)).await;
    s.wait_for("minilm", 1, AVAILABLE).await;
    s
}

fn sentences() -> Vec<String> {
    std::fs::read_to_string(repo_root().join("data/bench/short.txt"))
        .expect("data/bench/short.txt")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

async fn metrics(s: &TestServer) -> String {
    let url = format!(
        "http://{}/monitoring/prometheus/metrics",
        s.server.rest_addr.unwrap()
    );
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// The value of the first line of `text` starting with `prefix`.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {prefix} in:\n{text}"))
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_batches_and_get_what_they_would_get_alone() {
    let dir = minilm_repo();
    let plain = minilm_server(dir.path(), None).await;
    let batched = minilm_server(
        dir.path(),
        Some(BatchingOptions {
            max_batch_size: 16,
            ..BatchingOptions::default()
        }),
    )
    .await;
    let sentences = sentences();
    // Requests of one, two and three sentences, all in flight at once.
    let requests: Vec<Vec<String>> = (0..40)
        .map(|i| {
            let n = 1 + i % 3;
            (0..n)
                .map(|j| sentences[(i * 3 + j) % sentences.len()].clone())
                .collect()
        })
        .collect();
    let ask = |s: &TestServer, texts: Vec<String>| {
        let mut grpc = s.grpc.clone();
        tokio::spawn(async move {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let r = grpc
                .predict(predict_request(
                    spec("minilm", None),
                    &[("text", strings(&refs))],
                ))
                .await
                .unwrap()
                .into_inner();
            let e = &r.outputs["embeddings"];
            (dims(e), floats(e))
        })
    };
    let batched_answers: Vec<_> = requests.iter().map(|t| ask(&batched, t.clone())).collect();
    for (texts, handle) in requests.iter().zip(batched_answers) {
        let (got_dims, got) = handle.await.unwrap();
        let (want_dims, want) = ask(&plain, texts.clone()).await.unwrap();
        assert_eq!(got_dims, want_dims);
        assert_eq!(got_dims, vec![texts.len() as i64, 384]);
        let d = max_difference(&got, &want);
        assert!(d < 1e-5, "{texts:?}: batched differs from unbatched by {d}");
    }
    let text = metrics(&batched).await;
    let batches = metric(&text, ":candle_serving:batch_size_count{");
    let rows = metric(&text, ":candle_serving:batch_size_sum{");
    let sent: usize = requests.iter().map(Vec::len).sum();
    assert_eq!(
        rows as usize, sent,
        "every row went through the batcher once"
    );
    assert!(
        batches < requests.len() as f64,
        "{} requests ran as {batches} batches: none were merged",
        requests.len()
    );
    // The unbatched server has no batches at all.
    assert!(!metrics(&plain)
        .await
        .contains(":candle_serving:batch_size_count{"));

    // REST goes through the same batcher.
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/v1/models/minilm:predict",
        batched.server.rest_addr.unwrap()
    );
    let body =
        serde_json::json!({ "instances": [{ "text": sentences[0] }, { "text": sentences[1] }] });
    let rest: serde_json::Value = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rest_rows: Vec<Vec<f32>> = serde_json::from_value(rest["predictions"].clone()).unwrap();
    let (_, want) = ask(&plain, vec![sentences[0].clone(), sentences[1].clone()])
        .await
        .unwrap();
    assert!(max_difference(&rest_rows.concat(), &want) < 1e-5);
    assert!(
        metric(&metrics(&batched).await, ":candle_serving:batch_size_sum{") as usize == sent + 2
    );
    plain.stop().await;
    batched.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_resource_exhausted_and_429_and_the_server_keeps_serving() {
    let dir = minilm_repo();
    let tight = BatchingOptions {
        max_batch_size: 1,
        max_enqueued_batches: 1,
        ..BatchingOptions::default()
    };
    let s = minilm_server(dir.path(), Some(tight)).await;
    let long = std::fs::read_to_string(repo_root().join("data/bench/long.txt")).unwrap();
    let text = long.lines().next().unwrap().to_string();
    let url = format!(
        "http://{}/v1/models/minilm:predict",
        s.server.rest_addr.unwrap()
    );
    let mut calls = Vec::new();
    for i in 0..48 {
        let (mut grpc, url, text) = (s.grpc.clone(), url.clone(), text.clone());
        calls.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let request = predict_request(spec("minilm", None), &[("text", strings(&[&text]))]);
                match grpc.predict(request).await {
                    Ok(_) => ("grpc", 0, String::new()),
                    Err(e) => ("grpc", e.code() as i32, e.message().to_string()),
                }
            } else {
                let body = serde_json::json!({ "instances": [{ "text": text }] });
                let r = reqwest::Client::new()
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16() as i32;
                ("rest", status, r.text().await.unwrap())
            }
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for c in calls {
        match c.await.unwrap() {
            ("grpc", 0, _) | ("rest", 200, _) => ok += 1,
            ("grpc", 8, m) | ("rest", 429, m) => {
                assert!(
                    m.contains("model `minilm` version 1") && m.contains("batching queue is full"),
                    "{m}"
                );
                refused += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(ok >= 2, "requests were served ({ok})");
    assert!(
        refused >= 1,
        "48 requests at once on a queue of one row: some are refused"
    );
    // Overload leaves nothing behind: the next request is served.
    let mut grpc = s.grpc.clone();
    let r = grpc
        .predict(predict_request(
            spec("minilm", None),
            &[("text", strings(&["still here"]))],
        ))
        .await;
    assert!(r.is_ok(), "{r:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_swap_under_batched_load_without_a_failed_request_or_a_mixed_batch() {
    const CONFIG: &str =
        r#"model_config_list { config { name: "m" base_path: "m" model_platform: "candle" } }"#;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("m");
    let v1 = publish_tiny_bert(&base, 1, Kind::Embedding, 1);
    let mut s = TestServer::start(options(
        dir.path(),
        CONFIG,
        Some(BatchingOptions {
            max_batch_size: 8,
            batch_timeout: Duration::from_millis(2),
            ..BatchingOptions::default()
        }),
    ))
    .await;
    s.wait_for("m", 1, AVAILABLE).await;
    let texts = ["my head hurts", "the lazy dog"];

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (mut grpc, stop) = (s.grpc.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let (mut answers, mut failures) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let request = predict_request(spec("m", None), &[("text", strings(&texts))]);
                match grpc.predict(request).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        match r.model_spec.unwrap().version_choice {
                            Some(VersionChoice::Version(v)) => {
                                answers.push((v, floats(&r.outputs["embeddings"])))
                            }
                            other => failures.push(format!("no version: {other:?}")),
                        }
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (answers, failures)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v2 = publish_tiny_bert(&base, 2, Kind::Embedding, 2);
    s.wait_for("m", 2, AVAILABLE).await;
    s.wait_for("m", 1, END).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    // What each version answers on its own, computed in this process.
    let inputs = Inputs::from([("text".to_string(), Tensor::strings(texts))]);
    let expected = |dir: &Path| {
        let out = load_servable(dir)
            .unwrap()
            .run("serving_default", &inputs)
            .unwrap();
        match out["embeddings"].data() {
            TensorData::Float(v) => v.clone(),
            other => panic!("{other:?}"),
        }
    };
    let (want1, want2) = (expected(&v1), expected(&v2));
    let mut seen = [0usize; 3];
    for client in clients {
        let (answers, failures) = client.await.unwrap();
        assert!(
            failures.is_empty(),
            "failed requests during the swap: {failures:?}"
        );
        for (version, got) in answers {
            let want = match version {
                1 => &want1,
                2 => &want2,
                v => panic!("version {v} was never published"),
            };
            let d = max_difference(&got, want);
            assert!(
                d < 1e-5,
                "an answer labelled version {version} is not that version's ({d})"
            );
            seen[version as usize] += 1;
        }
    }
    assert!(
        seen[1] > 0 && seen[2] > 0,
        "both versions answered: {seen:?}"
    );
    s.stop().await;
}

#[test]
fn the_binary_reads_the_batching_file_and_names_the_line_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("batching.config");
    std::fs::write(
        &bad,
        "max_batch_size { value: 8 }\nbatch_timeout_micros: 5\n",
    )
    .unwrap();
    let config = repo_root().join("models.config");
    let (code, output) = run_failing(
        &repo_root(),
        &[
            &format!("--model_config_file={}", config.display()),
            "--enable_batching",
            &format!("--batching_parameters_file={}", bad.display()),
        ],
    );
    assert_ne!(code, Some(0));
    assert!(
        output.contains(&format!("{}:2:", bad.display())),
        "{output}"
    );

    std::fs::write(
        &bad,
        "max_batch_size { value: 8 }\nallowed_batch_sizes: 4\n",
    )
    .unwrap();
    let (code, output) = run_failing(
        &repo_root(),
        &[
            "--enable_batching=true",
            &format!("--batching_parameters_file={}", bad.display()),
        ],
    );
    assert_ne!(code, Some(0));
    assert!(output.contains("must equal max_batch_size"), "{output}");
}
