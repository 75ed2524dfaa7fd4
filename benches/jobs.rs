//! Asynchronous jobs against the synchronous path (not a test): real `candle_model_server`
//! processes serving MiniLM with batching on, sharing one redis-server, the load generator
//! on the same machine. For one and two server processes:
//! - synchronous REST `:predict`, one short sentence per request, closed loop at
//!   concurrency 32: requests/s, p50, p99;
//! - jobs: `--jobs` jobs of one short sentence each submitted (32 at a time, round robin
//!   over the processes), every result collected; jobs/s from the first submission to the
//!   last result, and p50/p99 of submission → result stored (the jobs' own timestamps);
//! - 200 jobs one at a time (submit, poll every 2 ms until it ends): the queue's overhead
//!   without a backlog.
//!
//!     cargo bench --bench jobs [-- --seconds 6 --jobs 2000]

#[path = "../tests/common/mod.rs"]
mod common;
// Only `drive` is used here; the other benchmarks use the rest.
#[allow(dead_code)]
#[path = "support/load.rs"]
mod load;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{spawn_server, Spawned};
use common::services::{free_port, Redis};
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

fn start(redis: &Redis) -> Spawned {
    let base = format!(
        "--model_base_path={}",
        minilm_dir().parent().unwrap().display()
    );
    let rest = format!("--rest_api_port={}", free_port());
    let queue = format!("--job_queue={}", redis.url());
    let server = spawn_server(
        &repo_root(),
        &[
            "--model_name=minilm",
            &base,
            "--port=0",
            &rest,
            &queue,
            "--enable_batching",
            "--max_pending_jobs=100000",
        ],
    )
    .unwrap_or_else(|log| panic!("the server did not start:\n{log}"));
    let url = format!("http://{}/readyz", server.rest_addr.unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::thread::spawn({
        let url = url.clone();
        move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async { reqwest::get(&url).await.map(|r| r.status().is_success()) })
                .unwrap_or(false)
        }
    })
    .join()
    .unwrap()
    {
        assert!(Instant::now() < deadline, "MiniLM never loaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn millis(rfc3339: &Value) -> f64 {
    let t = humantime::parse_rfc3339(rfc3339.as_str().expect("a timestamp")).unwrap();
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// Polls a job every `pause` until it ends: its submission and end times (ms) if it
/// SUCCEEDED, `None` otherwise.
async fn ended(
    client: &reqwest::Client,
    server: &str,
    id: &str,
    pause: Duration,
) -> Option<(f64, f64)> {
    loop {
        let job: Value = client
            .get(format!("{server}/v1/jobs/{id}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        match job["state"].as_str() {
            Some("SUCCEEDED") => {
                return Some((millis(&job["created_at"]), millis(&job["finished_at"])))
            }
            Some("PENDING" | "RUNNING") => tokio::time::sleep(pause).await,
            _ => return None,
        }
    }
}

#[tokio::main]
async fn main() {
    let run =
        Duration::from_secs_f64(arg("--seconds").map_or(6.0, |s| s.parse().expect("--seconds")));
    let jobs: usize = arg("--jobs").map_or(2000, |s| s.parse().expect("--jobs"));
    let sentences = load::short_sentences();
    println!(
        "MiniLM, one short sentence per request or job, batching on, {} cores, {}",
        std::thread::available_parallelism().unwrap(),
        std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("")
            .trim()
    );
    println!("| processes | path | requests or jobs/s | p50 | p99 | errors |");
    println!("|---|---|---|---|---|---|");
    let redis = Redis::start();
    let client = reqwest::Client::new();
    for processes in [1, 2] {
        let servers: Vec<Spawned> = (0..processes).map(|_| start(&redis)).collect();
        let urls: Arc<Vec<String>> = Arc::new(
            servers
                .iter()
                .map(|s| format!("http://{}", s.rest_addr.unwrap()))
                .collect(),
        );

        let (c, u, s) = (client.clone(), urls.clone(), sentences.clone());
        let sync = load::drive(32, run, move |i| {
            let (c, u, s) = (c.clone(), u.clone(), s.clone());
            async move {
                let url = format!("{}/v1/models/minilm:predict", u[i % u.len()]);
                match c
                    .post(url)
                    .json(&json!({"instances": [s[i % s.len()]]}))
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => true,
                    Ok(r) => {
                        if i < 64 {
                            eprintln!("  {}: {}", r.status(), r.text().await.unwrap_or_default());
                        }
                        false
                    }
                    Err(e) => {
                        if i < 64 {
                            eprintln!("  {e}");
                        }
                        false
                    }
                }
            }
        })
        .await;
        println!(
            "| {processes} | sync REST :predict, concurrency 32 | {:.0} | {:.1} ms | {:.1} ms | {} |",
            sync.rps,
            sync.p50.as_secs_f64() * 1000.0,
            sync.p99.as_secs_f64() * 1000.0,
            sync.errors
        );

        let started = Instant::now();
        let ids: Vec<Option<String>> = futures::stream::iter(0..jobs)
            .map(|i| {
                let (c, u, s) = (client.clone(), urls.clone(), sentences.clone());
                async move {
                    let url = format!("{}/v1/models/minilm:predictAsync", u[i % u.len()]);
                    let r = c
                        .post(url)
                        .json(&json!({"instances": [s[i % s.len()]]}))
                        .send()
                        .await
                        .ok()?;
                    let body: Value = r.json().await.ok()?;
                    body["job_id"].as_str().map(String::from)
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let mut latencies = Vec::new();
        let mut errors = ids.iter().filter(|i| i.is_none()).count();
        let mut last_end: f64 = 0.0;
        let mut first_start = f64::MAX;
        for id in ids.into_iter().flatten() {
            match ended(&client, &urls[0], &id, Duration::from_millis(20)).await {
                Some((created, ended)) => {
                    latencies.push(ended - created);
                    last_end = last_end.max(ended);
                    first_start = first_start.min(created);
                }
                None => errors += 1,
            }
        }
        let wall = started.elapsed();
        latencies.sort_by(f64::total_cmp);
        let rate = latencies.len() as f64 / ((last_end - first_start) / 1000.0).max(1e-3);
        println!(
            "| {processes} | jobs ({jobs}, submitted 32 at a time) | {rate:.0} | {:.0} ms | {:.0} ms | {errors} |",
            percentile(&latencies, 50),
            percentile(&latencies, 99),
        );
        eprintln!(
            "  (all {jobs} jobs submitted and collected in {:.1} s)",
            wall.as_secs_f64()
        );

        // One job at a time: the queue's own overhead, without a backlog.
        let mut alone = Vec::new();
        let started = Instant::now();
        for i in 0..200 {
            let url = format!("{}/v1/models/minilm:predictAsync", urls[i % urls.len()]);
            let body: Value = client
                .post(url)
                .json(&json!({"instances": [sentences[i % sentences.len()]]}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let id = body["job_id"].as_str().unwrap().to_string();
            let (created, ended) = ended(&client, &urls[0], &id, Duration::from_millis(2))
                .await
                .expect("the job succeeds");
            alone.push(ended - created);
        }
        alone.sort_by(f64::total_cmp);
        println!(
            "| {processes} | jobs one at a time (200) | {:.0} | {:.0} ms | {:.0} ms | 0 |",
            200.0 / started.elapsed().as_secs_f64(),
            percentile(&alone, 50),
            percentile(&alone, 99),
        );
        drop(servers);
    }
}
