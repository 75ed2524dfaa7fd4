//! A closed-loop load generator on tonic / reqwest clients, shared by the load benchmarks:
//! `concurrency` tasks each send a request, wait for its answer and send the next, for
//! `run`; latencies of every request, answered or not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{predict_request, spec, strings, TestServer};

pub struct Outcome {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: usize,
}

pub async fn drive<F, Fut>(concurrency: usize, run: Duration, call: F) -> Outcome
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors, mut i) = (Vec::new(), 0, c);
            while started.elapsed() < run {
                let t = Instant::now();
                if !call(i).await {
                    errors += 1;
                }
                latencies.push(t.elapsed());
                i += concurrency;
            }
            (latencies, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    all.sort();
    Outcome {
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50: all[all.len() / 2],
        p99: all[(all.len() * 99) / 100],
        errors,
    }
}

/// Two cells against `model` of a running server: gRPC Predict, then REST `:predict`, each
/// request one sentence of `sentences` (in turn).
pub async fn grpc_and_rest(
    s: &TestServer,
    model: &'static str,
    sentences: &Arc<Vec<String>>,
    concurrency: usize,
    run: Duration,
) -> [Outcome; 2] {
    let grpc = s.grpc.clone();
    let sents = sentences.clone();
    let g = drive(concurrency, run, move |i| {
        let mut grpc = grpc.clone();
        let text = sents[i % sents.len()].clone();
        async move {
            let request = predict_request(spec(model, None), &[("text", strings(&[&text]))]);
            grpc.predict(request).await.is_ok()
        }
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/v1/models/{model}:predict",
        s.server.rest_addr.unwrap()
    );
    let sents = sentences.clone();
    let r = drive(concurrency, run, move |i| {
        let (http, url) = (http.clone(), url.clone());
        let body = serde_json::json!({"instances": [sents[i % sents.len()]]}).to_string();
        async move {
            http.post(url)
                .body(body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    [g, r]
}
