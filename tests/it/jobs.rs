//! Asynchronous jobs on the real `candle_model_server` binary, on the in-process queue and
//! on a real Redis (redis-server, started per test on a free port): results equal to what
//! `:predict` and Predict answer; requests refused at submission exactly as the synchronous
//! call refuses them; cancel, queue full and expiry; two processes splitting 500 jobs with
//! each stored exactly once; a process killed with SIGKILL while it runs jobs, whose jobs
//! then finish on another; Redis stopped and restarted; a version swap while jobs run.
//! Over REST, gRPC (`candle_serving.jobs.v1.JobService`) and the CLI.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_serving::proto::candle_serving::jobs::v1 as pb;
use candle_serving::proto::candle_serving::jobs::v1::job_service_client::JobServiceClient;
use candle_serving::proto::tensorflow::serving::model_spec::VersionChoice;
use candle_serving::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use common::process::{run_cli, spawn_server, Spawned};
use common::services::{free_port, Redis};
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use tonic::transport::Channel;

/// A model repository with version 1 of a tiny BERT `m`.
fn repository(dir: &Path) -> PathBuf {
    let base = dir.join("m");
    publish_tiny_bert(&base, 1, Kind::Embedding, 1);
    base
}

fn start(dir: &Path, base: &Path, extra: &[&str]) -> Spawned {
    let base = format!("--model_base_path={}", base.display());
    let rest = format!("--rest_api_port={}", free_port());
    let mut args = vec!["--model_name=m", &base, "--port=0", &rest];
    args.extend(extra);
    let server =
        spawn_server(dir, &args).unwrap_or_else(|log| panic!("the server did not start:\n{log}"));
    // The model loads in the background.
    let url = format!("http://{}/v1/models/m", server.rest_addr.unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: Value = blocking_get(&url);
        if body.to_string().contains("AVAILABLE") {
            break;
        }
        assert!(Instant::now() < deadline, "m never loaded: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

fn blocking_get(url: &str) -> Value {
    let url = url.to_string();
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            match reqwest::get(&url).await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            }
        })
    })
    .join()
    .unwrap()
}

fn rest(server: &Spawned) -> String {
    format!("http://{}", server.rest_addr.unwrap())
}

async fn post(url: &str, body: &Value) -> (u16, Value, Option<String>) {
    let r = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap();
    let location = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    (r.status().as_u16(), r.json().await.unwrap(), location)
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn delete(url: &str) -> (u16, Value) {
    let r = reqwest::Client::new().delete(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Submits `body` as a job; its id.
async fn submit(server: &str, path: &str, body: &Value) -> String {
    let (code, answer, location) =
        post(&format!("{server}/v1/models/{path}:predictAsync"), body).await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["state"], "PENDING");
    let id = answer["job_id"].as_str().unwrap().to_string();
    assert_eq!(location.as_deref(), Some(format!("/v1/jobs/{id}").as_str()));
    id
}

/// Polls the job until it ends (60 s at most).
async fn finished(server: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, job) = get(&format!("{server}/v1/jobs/{id}")).await;
        assert_eq!(code, 200, "{job}");
        let state = job["state"].as_str().unwrap().to_string();
        if ["SUCCEEDED", "FAILED", "CANCELLED"].contains(&state.as_str()) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} never ended: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn grpc_channel(server: &Spawned) -> Channel {
    Channel::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The value of a counter or gauge line of the Prometheus page (0 when absent).
async fn metric(server: &Spawned, line_start: &str) -> f64 {
    let text = reqwest::get(format!("{}/monitoring/prometheus/metrics", rest(server)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

const SUCCEEDED: &str = ":candle_serving:jobs_total{model_name=\"m\",state=\"succeeded\"}";
const RECLAIMED: &str = ":candle_serving:jobs_total{model_name=\"m\",state=\"reclaimed\"}";

fn text_body(i: usize) -> Value {
    let words = [
        "the quick brown fox",
        "jumps over",
        "the lazy dog",
        "quick dog",
    ];
    json!({"instances": [words[i % 4], words[(i + 1) % 4]]})
}

/// What the API answers synchronously and asynchronously must be the same, for good and
/// bad requests alike.
async fn jobs_answer_what_predict_answers(queue: &str) {
    let dir = tempfile::tempdir().unwrap();
    let base = repository(dir.path());
    let queue_flag = format!("--job_queue={queue}");
    let server = start(dir.path(), &base, &[&queue_flag]);
    let url = rest(&server);

    // Row and columnar bodies, latest and a pinned version.
    for (path, body) in [
        (
            "m",
            json!({"instances": ["the quick brown fox", "lazy dog"]}),
        ),
        (
            "m/versions/1",
            json!({"inputs": {"text": ["jumps over the dog"]}}),
        ),
    ] {
        let (code, sync, _) = post(&format!("{url}/v1/models/{path}:predict"), &body).await;
        assert_eq!(code, 200);
        let id = submit(&url, path, &body).await;
        let job = finished(&url, &id).await;
        assert_eq!(job["state"], "SUCCEEDED", "{job}");
        assert_eq!(job["job_id"], id.as_str());
        assert_eq!(
            job["result"], sync,
            "the job's result is exactly :predict's body"
        );
        assert_eq!(job["model_spec"], json!({"name": "m", "version": 1}));
        assert!(job["error"].is_null());
        let (created, started, ended) = (
            job["created_at"].as_str().unwrap(),
            job["started_at"].as_str().unwrap(),
            job["finished_at"].as_str().unwrap(),
        );
        assert!(created <= started && started <= ended, "{job}");
        assert!(created.ends_with('Z'), "RFC 3339 in UTC: {created}");
    }

    // Refused at submission exactly as :predict refuses, and never queued.
    for (path, body) in [
        ("m", json!({"instances": [1, 2]})),
        ("m", json!({"inputs": {"nope": ["x"]}})),
        ("m", json!({"signature_name": "other", "instances": ["x"]})),
        ("m/labels/nowhere", json!({"instances": ["x"]})),
        ("absent", json!({"instances": ["x"]})),
    ] {
        let (code, sync, _) = post(&format!("{url}/v1/models/{path}:predict"), &body).await;
        let (async_code, answer, location) =
            post(&format!("{url}/v1/models/{path}:predictAsync"), &body).await;
        assert!(code >= 400, "{sync}");
        assert_eq!((async_code, &answer), (code, &sync), "{path} {body}");
        assert!(location.is_none());
    }
    let (code, body) = get(&format!("{url}/v1/jobs/0123456789abcdef0123456789abcdef")).await;
    assert_eq!(code, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("does not exist"));
    assert_eq!(get(&format!("{url}/v1/jobs/..%2F..%2Fetc")).await.0, 404);
    let put = reqwest::Client::new()
        .put(format!("{url}/v1/jobs/0123456789abcdef0123456789abcdef"))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 405);

    // A finished job cannot be cancelled: 409.
    let id = submit(&url, "m", &text_body(0)).await;
    finished(&url, &id).await;
    let (code, body) = delete(&format!("{url}/v1/jobs/{id}")).await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("SUCCEEDED"),
        "{body}"
    );

    // gRPC: Submit, Wait, Get; the result is Predict's response.
    let channel = grpc_channel(&server).await;
    let mut jobs = JobServiceClient::new(channel.clone());
    let mut prediction = PredictionServiceClient::new(channel);
    let request = predict_request(spec("m", None), &[("text", strings(&["the lazy fox"]))]);
    let sync = prediction
        .predict(request.clone())
        .await
        .unwrap()
        .into_inner();
    let job = jobs.submit(request).await.unwrap().into_inner();
    assert_eq!(job.state, pb::JobState::Pending as i32);
    let mut wait = tonic::Request::new(pb::JobRequest {
        job_id: job.job_id.clone(),
    });
    wait.set_timeout(Duration::from_secs(30));
    let done = jobs.wait(wait).await.unwrap().into_inner();
    assert_eq!(done.state, pb::JobState::Succeeded as i32, "{done:?}");
    let Some(pb::job::Result::Response(response)) = done.result else {
        panic!("no response: {done:?}")
    };
    assert_eq!(response, sync);
    assert_eq!(
        done.model_spec.unwrap().version_choice,
        Some(VersionChoice::Version(1))
    );
    assert!(done.finished_at.is_some());
    // The same job over REST: the response as proto3 JSON.
    let (code, body) = get(&format!("{url}/v1/jobs/{}", job.job_id)).await;
    assert_eq!(code, 200);
    assert!(body["result"]["outputs"].is_object(), "{body}");
    // Refusals as Predict's.
    let bad = predict_request(spec("m", None), &[("nope", strings(&["x"]))]);
    let sync = prediction.predict(bad.clone()).await.unwrap_err();
    let queued = jobs.submit(bad).await.unwrap_err();
    assert_eq!(
        (queued.code(), queued.message()),
        (sync.code(), sync.message())
    );
    // Hostile submissions are refused as Predict refuses them, before decoding: a shape of
    // 2^40 strings claimed in a few bytes, and 300,000 one-byte strings.
    let mut claimed = strings(&[]);
    claimed.tensor_shape = shape(&[1 << 40]);
    let many: Vec<String> = (0..300_000).map(|_| "x".to_string()).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    for tensor in [claimed, strings(&many)] {
        let hostile = predict_request(spec("m", None), &[("text", tensor)]);
        let sync = prediction.predict(hostile.clone()).await.unwrap_err();
        let queued = jobs.submit(hostile).await.unwrap_err();
        assert_eq!(queued.code(), tonic::Code::InvalidArgument, "{queued:?}");
        assert_eq!(
            (queued.code(), queued.message()),
            (sync.code(), sync.message())
        );
    }
    let missing = jobs
        .get(pb::JobRequest {
            job_id: "0123456789abcdef0123456789abcdef".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // The CLI: submit and wait, then get.
    let grpc = format!("http://{}", server.grpc_addr);
    let (ok, out) = run_cli(
        &[
            "--server",
            &grpc,
            "job",
            "submit",
            "m",
            "quick fox",
            "--wait",
            "--json",
        ],
        &[],
    );
    assert!(ok, "{out}");
    let printed: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(printed["version"], 1, "{out}");
    let (ok, out) = run_cli(&["--server", &grpc, "job", "submit", "m", "quick fox"], &[]);
    assert!(ok, "{out}");
    let id = out.trim().to_string();
    let (ok, out) = run_cli(&["--server", &grpc, "job", "wait", &id], &[]);
    assert!(
        ok && out.contains("SUCCEEDED") && out.contains("m version 1"),
        "{out}"
    );
    let (ok, out) = run_cli(&["--server", &grpc, "job", "get", "0123"], &[]);
    assert!(!ok && out.contains("does not exist"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_answer_what_predict_answers_in_memory() {
    jobs_answer_what_predict_answers("memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_answer_what_predict_answers_on_redis() {
    let redis = Redis::start();
    jobs_answer_what_predict_answers(&redis.url()).await;
}

/// With no workers jobs stay pending: the bound, cancel, and the expiry of what ended.
async fn cancel_bound_and_expiry(queue: &str) {
    let dir = tempfile::tempdir().unwrap();
    let base = repository(dir.path());
    let queue_flag = format!("--job_queue={queue}");
    let server = start(
        dir.path(),
        &base,
        &[
            &queue_flag,
            "--job_concurrency=0",
            "--max_pending_jobs=3",
            "--max_pending_job_bytes=600",
            "--job_result_ttl_seconds=1",
        ],
    );
    let url = rest(&server);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(submit(&url, "m", &text_body(i)).await);
    }
    let (code, body, _) = post(&format!("{url}/v1/models/m:predictAsync"), &text_body(3)).await;
    assert_eq!(code, 429, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("model `m`") && message.contains("--max_pending_jobs"),
        "{message}"
    );
    let mut jobs = JobServiceClient::new(grpc_channel(&server).await);
    let full = jobs
        .submit(predict_request(
            spec("m", None),
            &[("text", strings(&["x"]))],
        ))
        .await
        .unwrap_err();
    assert_eq!(full.code(), tonic::Code::ResourceExhausted, "{full:?}");

    // Cancel (twice: the same answer), which makes room.
    for _ in 0..2 {
        let (code, job) = delete(&format!("{url}/v1/jobs/{}", ids[0])).await;
        assert_eq!(code, 200, "{job}");
        assert_eq!(job["state"], "CANCELLED");
        assert!(job["finished_at"].is_string());
    }
    // Room for one more job, but not for a large one: the bytes of pending requests are
    // bounded too.
    let big = json!({ "instances": ["the lazy dog ".repeat(80)] });
    let (code, body, _) = post(&format!("{url}/v1/models/m:predictAsync"), &big).await;
    assert_eq!(code, 429, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("--max_pending_job_bytes"),
        "{body}"
    );
    let fourth = submit(&url, "m", &text_body(3)).await;
    // Over the CLI.
    let grpc = format!("http://{}", server.grpc_addr);
    let (ok, out) = run_cli(&["--server", &grpc, "job", "cancel", &ids[1]], &[]);
    assert!(ok && out.contains("CANCELLED"), "{out}");
    assert_eq!(
        get(&format!("{url}/v1/jobs/{fourth}")).await.1["state"],
        "PENDING"
    );
    // The cancelled jobs' records expire; pending ones do not.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(get(&format!("{url}/v1/jobs/{}", ids[0])).await.0, 404);
    assert_eq!(get(&format!("{url}/v1/jobs/{}", ids[1])).await.0, 404);
    assert_eq!(get(&format!("{url}/v1/jobs/{}", ids[2])).await.0, 200);
    assert_eq!(delete(&format!("{url}/v1/jobs/{}", ids[0])).await.0, 404);
    drop(server);

    // A result expires too.
    let server = start(
        dir.path(),
        &base,
        &[&queue_flag, "--job_result_ttl_seconds=1"],
    );
    let url = rest(&server);
    let id = submit(&url, "m", &text_body(0)).await;
    assert_eq!(finished(&url, &id).await["state"], "SUCCEEDED");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (code, body) = get(&format!("{url}/v1/jobs/{id}")).await;
    assert_eq!(code, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_bound_and_expiry_in_memory() {
    cancel_bound_and_expiry("memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_bound_and_expiry_on_redis() {
    let redis = Redis::start();
    cancel_bound_and_expiry(&redis.url()).await;
}

/// Submits `n` jobs, `parallel` at a time, alternating between the servers; their ids.
async fn submit_many(servers: &[String], n: usize, body: impl Fn(usize) -> Value) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|i| {
            let server = servers[i % servers.len()].clone();
            let body = body(i);
            async move { submit(&server, "m", &body).await }
        })
        .buffered(16)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_redis_split_500_jobs_and_store_each_once() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let base = repository(dir.path());
    let queue = format!("--job_queue={}", redis.url());
    let a = start(dir.path(), &base, &[&queue]);
    let b = start(dir.path(), &base, &[&queue]);
    let urls = [rest(&a), rest(&b)];
    let ids = submit_many(&urls, 500, text_body).await;
    let mut expected = Vec::new();
    for i in 0..4 {
        let (_, sync, _) = post(&format!("{}/v1/models/m:predict", urls[0]), &text_body(i)).await;
        expected.push(sync);
    }
    for (i, id) in ids.iter().enumerate() {
        // Read from the other process than the one it was submitted to.
        let job = finished(&urls[(i + 1) % 2], id).await;
        assert_eq!(job["state"], "SUCCEEDED", "{job}");
        assert_eq!(job["result"], expected[i % 4]);
    }
    let (ran_a, ran_b) = (metric(&a, SUCCEEDED).await, metric(&b, SUCCEEDED).await);
    assert_eq!(
        ran_a + ran_b,
        500.0,
        "each job's result stored exactly once"
    );
    assert!(
        ran_a > 0.0 && ran_b > 0.0,
        "both processes took jobs: {ran_a} / {ran_b}"
    );
    // Nothing left in the stream.
    let length = ":candle_serving:job_queue_length";
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&a, length).await != 0.0 {
        assert!(Instant::now() < deadline, "the queue never emptied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A job of 32 sentences: slow enough (with one inference thread) that a process stopped
/// after a few have finished is in the middle of others.
fn big_job(i: usize) -> Value {
    let texts: Vec<String> = (0..32)
        .map(|j| format!("the quick brown fox jumps over the lazy dog {i} {j}"))
        .collect();
    json!({ "instances": texts })
}

/// A job of the largest batch a request may have (256 rows): enough work that 100 of them
/// outlast a SIGTERM sent after the first two finish, however fast the encoder gets (with
/// 32 rows, all 100 once finished before the signal).
fn largest_job(i: usize) -> Value {
    let texts: Vec<String> = (0..256)
        .map(|j| format!("the quick brown fox jumps over the lazy dog {i} {j}"))
        .collect();
    json!({ "instances": texts })
}

/// Waits until `server` has finished `n` jobs.
async fn until_succeeded(server: &Spawned, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(server, SUCCEEDED).await < n as f64 {
        assert!(Instant::now() < deadline, "fewer than {n} jobs finished");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_of_a_process_killed_mid_run_finish_on_another() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let base = repository(dir.path());
    let queue = format!("--job_queue={}", redis.url());
    let flags = [
        queue.as_str(),
        "--job_visibility_timeout_seconds=2",
        "--inference_threads=1",
        "--job_concurrency=8",
    ];
    let mut a = start(dir.path(), &base, &flags);
    let url_a = rest(&a);
    // Large jobs, so that the process is in the middle of them when it dies.
    let ids = submit_many(std::slice::from_ref(&url_a), 200, big_job).await;
    // Once it has finished a few, kill it.
    until_succeeded(&a, 3).await;
    a.signal("KILL");
    a.wait_exit();
    // It died holding deliveries it had not acknowledged.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg("candle-serving:jobs:queue")
        .arg("candle-serving")
        .query_async(&mut conn)
        .await
        .unwrap();
    let redis::Value::Array(summary) = pending else {
        panic!("XPENDING: {pending:?}")
    };
    assert!(
        matches!(summary.first(), Some(redis::Value::Int(n)) if *n > 0),
        "the killed process held no jobs: {summary:?}"
    );

    let b = start(dir.path(), &base, &flags);
    let url_b = rest(&b);
    for id in &ids {
        let job = finished(&url_b, id).await;
        assert_eq!(job["state"], "SUCCEEDED", "{job}");
        assert_eq!(job["result"]["predictions"].as_array().unwrap().len(), 32);
    }
    assert!(
        metric(&b, RECLAIMED).await > 0.0,
        "the survivor took the dead process's jobs over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_down_submission_is_503_inference_goes_on_and_jobs_resume() {
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let base = repository(dir.path());
    let queue = format!("--job_queue={}", redis.url());
    let server = start(dir.path(), &base, &[&queue]);
    let url = rest(&server);
    let id = submit(&url, "m", &text_body(0)).await;
    assert_eq!(finished(&url, &id).await["state"], "SUCCEEDED");

    redis.stop();
    let (code, body, _) = post(&format!("{url}/v1/models/m:predictAsync"), &text_body(1)).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("job queue is unavailable"),
        "{body}"
    );
    let mut jobs = JobServiceClient::new(grpc_channel(&server).await);
    let down = jobs
        .submit(predict_request(
            spec("m", None),
            &[("text", strings(&["x"]))],
        ))
        .await
        .unwrap_err();
    assert_eq!(down.code(), tonic::Code::Unavailable, "{down:?}");
    let (code, _, _) = post(&format!("{url}/v1/models/m:predict"), &text_body(1)).await;
    assert_eq!(code, 200, "synchronous inference does not need Redis");

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let (code, body, _) = post(&format!("{url}/v1/models/m:predictAsync"), &text_body(2)).await;
        if code == 202 {
            break body["job_id"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "submission never recovered: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(finished(&url, &id).await["state"], "SUCCEEDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_job_names_the_version_that_ran_it_across_a_swap() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let base = repository(dir.path());
    let queue = format!("--job_queue={}", redis.url());
    let server = start(
        dir.path(),
        &base,
        &[&queue, "--file_system_poll_wait_seconds=1"],
    );
    let url = rest(&server);
    let body = json!({"instances": ["the quick brown fox"]});
    let (_, v1_answer, _) = post(&format!("{url}/v1/models/m/versions/1:predict"), &body).await;

    let before = submit_many(std::slice::from_ref(&url), 20, |_| body.clone()).await;
    publish_tiny_bert(&base, 2, Kind::Embedding, 2);
    // Jobs keep coming while version 2 loads and version 1 goes.
    let mut during = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        during.push(submit(&url, "m", &body).await);
        let (_, status) = get(&format!("{url}/v1/models/m/versions/1")).await;
        if status.to_string().contains("END") || status["error"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "version 1 never left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, v2_answer, _) = post(&format!("{url}/v1/models/m/versions/2:predict"), &body).await;
    assert_ne!(v1_answer, v2_answer);
    let after = submit_many(std::slice::from_ref(&url), 20, |_| body.clone()).await;
    let mut seen = std::collections::BTreeSet::new();
    for (group, ids) in [("before", &before), ("during", &during), ("after", &after)] {
        for id in ids.iter() {
            let job = finished(&url, id).await;
            assert_eq!(job["state"], "SUCCEEDED", "{group}: {job}");
            let version = job["model_spec"]["version"].as_i64().unwrap();
            let expected = if version == 1 { &v1_answer } else { &v2_answer };
            assert_eq!(
                &job["result"], expected,
                "{group}: the result is version {version}'s"
            );
            if group == "after" {
                assert_eq!(version, 2);
            }
            seen.insert(version);
        }
    }
    assert!(seen.contains(&2), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_the_jobs_running_and_leaves_the_rest_pending() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let base = repository(dir.path());
    let queue = format!("--job_queue={}", redis.url());
    let flags = [
        queue.as_str(),
        "--inference_threads=1",
        "--job_concurrency=4",
    ];
    let mut a = start(dir.path(), &base, &flags);
    let url = rest(&a);
    let ids = submit_many(std::slice::from_ref(&url), 100, largest_job).await;
    until_succeeded(&a, 2).await;
    a.signal("TERM");
    assert_eq!(a.wait_exit(), Some(0));
    // Nothing was left half-done: every job either ended or was never started.
    let b = start(dir.path(), &base, &[&queue, "--job_concurrency=0"]);
    let url = rest(&b);
    let mut states = std::collections::BTreeMap::new();
    for id in &ids {
        let (code, job) = get(&format!("{url}/v1/jobs/{id}")).await;
        assert_eq!(code, 200, "{job}");
        *states
            .entry(job["state"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert!(!states.contains_key("RUNNING"), "{states:?}");
    assert!(
        states.get("SUCCEEDED").is_some_and(|&n| n >= 2),
        "{states:?}"
    );
    assert!(states.contains_key("PENDING"), "{states:?}");
}
