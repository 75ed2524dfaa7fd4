//! A closed-loop load generator on tonic / reqwest clients, shared by the load benchmarks:
//! `concurrency` tasks each send a request, wait for its answer and send the next, for
//! `run`; latencies of every request, answered or not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{predict_request, repo_root, spec, strings, TestServer};

/// The benchmark's short sentences (`data/bench/short.txt`), one per line.
pub fn short_sentences() -> Arc<Vec<String>> {
    let path = repo_root().join("data/bench/short.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Arc::new(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect(),
    )
}

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

/// The same request over the Open Inference Protocol: v2 gRPC ModelInfer (raw contents, as
/// tritonclient sends it), v2 REST with a JSON tensor (as curl would), and v2 REST with
/// Triton's binary-data extension (tritonclient.http's default).
#[allow(dead_code)] // rest_vs_grpc only
pub async fn v2_cells(
    s: &TestServer,
    model: &'static str,
    sentences: &Arc<Vec<String>>,
    concurrency: usize,
    run: Duration,
) -> [Outcome; 3] {
    use candle_serving::proto::inference::{
        grpc_inference_service_client::GrpcInferenceServiceClient,
        model_infer_request::InferInputTensor, ModelInferRequest,
    };
    fn raw(text: &str) -> Vec<u8> {
        let mut out = (text.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(text.as_bytes());
        out
    }
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", s.server.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = GrpcInferenceServiceClient::new(channel);
    let sents = sentences.clone();
    let grpc = drive(concurrency, run, move |i| {
        let mut client = client.clone();
        let request = ModelInferRequest {
            model_name: model.into(),
            inputs: vec![InferInputTensor {
                name: "text".into(),
                datatype: "BYTES".into(),
                shape: vec![1],
                ..Default::default()
            }],
            raw_input_contents: vec![raw(&sents[i % sents.len()])],
            ..Default::default()
        };
        async move { client.model_infer(request).await.is_ok() }
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/v2/models/{model}/infer",
        s.server.rest_addr.unwrap()
    );
    let (sents, client, to) = (sentences.clone(), http.clone(), url.clone());
    let json = drive(concurrency, run, move |i| {
        let body = serde_json::json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [sents[i % sents.len()]]}]}).to_string();
        let request = client.post(&to).body(body);
        async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    let sents = sentences.clone();
    let binary = drive(concurrency, run, move |i| {
        let data = raw(&sents[i % sents.len()]);
        let header = serde_json::json!({
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": data.len()}}],
            "parameters": {"binary_data_output": true},
        })
        .to_string();
        let length = header.len();
        let mut body = header.into_bytes();
        body.extend_from_slice(&data);
        let request = http
            .post(&url)
            .header("Inference-Header-Content-Length", length)
            .body(body);
        async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    [grpc, json, binary]
}
