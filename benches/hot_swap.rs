//! Hot-swap benchmark (not a test): the real MiniLM swapped repeatedly under load.
//! Reports requests and failures, p50/p99 latency steady versus during swaps for the
//! swapped model and for a second model that is not swapped, the time from rename to
//! AVAILABLE, and RSS (one version, peak during swaps, after the old version is unloaded).
//!
//!     cargo bench --bench hot_swap            (results go in BENCHMARKS.md by hand)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_serving::config::ModelsConfig;
use candle_serving::manager::{VersionChoice, VersionState};
use candle_serving::proto::tensorflow::serving::{
    prediction_service_client::PredictionServiceClient, ModelSpec, PredictRequest,
};
use candle_serving::server::{Server, ServerOptions};
use candle_serving::serving::ModelSpec as CoreSpec;
use candle_serving::tensor::{tensor_to_proto, Tensor};

const CLIENTS_PER_MODEL: usize = 4;
const SWAPS: i64 = 6;
const STEADY: Duration = Duration::from_secs(8);
const BETWEEN_SWAPS: Duration = Duration::from_secs(4);

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn link_version(minilm: &Path, base: &Path, version: i64) {
    let tmp = base.join(format!(".tmp-{version}"));
    std::fs::create_dir_all(tmp.join("1_Pooling")).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        std::os::unix::fs::symlink(minilm.join(f), tmp.join(f)).unwrap();
    }
    std::fs::rename(&tmp, base.join(version.to_string())).unwrap();
}

#[derive(Default)]
struct Samples {
    /// (start offset since the run began, latency, ok)
    records: Vec<(Duration, Duration, bool)>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let minilm = root.join("model_repo/minilm/1");
    assert!(
        minilm.join("model.safetensors").is_file(),
        "run scripts/fetch_weights.sh first"
    );
    let sentences: Vec<String> = std::fs::read_to_string(root.join("data/bench/short.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let swapped = dir.path().join("swapped");
    let steady = dir.path().join("steady");
    std::fs::create_dir_all(&swapped).unwrap();
    std::fs::create_dir_all(&steady).unwrap();
    let rss_empty = rss_kib();
    link_version(&minilm, &swapped, 1);
    link_version(&minilm, &steady, 1);
    let config = r#"model_config_list { config { name: "swapped" base_path: "swapped" } config { name: "steady" base_path: "steady" } }"#;
    let server = Server::start(ServerOptions::local(
        ModelsConfig::from_text(config, dir.path(), "bench").unwrap(),
    ))
    .await
    .unwrap();
    let core = server.core.clone();
    while core.readiness().iter().any(|m| m.problem.is_some()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rss_two_models = rss_kib();
    let one_version_kib = (rss_two_models - rss_empty) / 2;

    let peak = Arc::new(AtomicUsize::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib() as usize, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    }

    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let begun = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (model, samples) in [
        ("swapped", Arc::new(Mutex::new(Samples::default()))),
        ("steady", Arc::new(Mutex::new(Samples::default()))),
    ] {
        for c in 0..CLIENTS_PER_MODEL {
            let mut client = PredictionServiceClient::new(channel.clone());
            let (stop, samples, sentences) = (stop.clone(), samples.clone(), sentences.clone());
            tasks.push((
                model,
                samples.clone(),
                tokio::spawn(async move {
                    let mut i = c;
                    while !stop.load(Ordering::Relaxed) {
                        let request = PredictRequest {
                            model_spec: Some(ModelSpec {
                                name: model.into(),
                                ..Default::default()
                            }),
                            inputs: [(
                                "text".to_string(),
                                tensor_to_proto(&Tensor::strings(
                                    [&sentences[i % sentences.len()]],
                                )),
                            )]
                            .into(),
                            ..Default::default()
                        };
                        i += 1;
                        let start = Instant::now();
                        let ok = client.predict(request).await.is_ok();
                        samples
                            .lock()
                            .unwrap()
                            .records
                            .push((start - begun, start.elapsed(), ok));
                    }
                }),
            ));
        }
    }

    tokio::time::sleep(STEADY).await;
    let mut swap_windows = Vec::new();
    let mut to_available = Vec::new();
    let mut rss_after_unload = Vec::new();
    for version in 2..=SWAPS + 1 {
        let renamed = Instant::now();
        link_version(&minilm, &swapped, version);
        let mut changes = core.subscribe();
        let available = loop {
            let s = core
                .status(&versioned("swapped", version))
                .unwrap_or_default();
            if s.first()
                .is_some_and(|s| s.state == VersionState::Available)
            {
                break renamed.elapsed();
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), changes.changed()).await;
        };
        to_available.push(available);
        loop {
            let s = core
                .status(&versioned("swapped", version - 1))
                .unwrap_or_default();
            if s.first().is_some_and(|s| s.state == VersionState::End) {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), changes.changed()).await;
        }
        let window_end = renamed.elapsed() + Duration::from_millis(500);
        swap_windows.push((renamed - begun, renamed - begun + window_end));
        tokio::time::sleep(Duration::from_millis(300)).await;
        rss_after_unload.push(rss_kib());
        tokio::time::sleep(BETWEEN_SWAPS.saturating_sub(window_end)).await;
    }
    stop.store(true, Ordering::Relaxed);
    sampling.store(false, Ordering::Relaxed);

    println!("hot-swap benchmark: real MiniLM, {SWAPS} swaps, {CLIENTS_PER_MODEL} closed-loop clients per model, one short sentence per request");
    println!(
        "cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut seen = std::collections::HashSet::new();
    for (model, samples, task) in tasks {
        task.await.unwrap();
        if !seen.insert(model) {
            continue;
        }
        let records = &samples.lock().unwrap().records;
        let failures = records.iter().filter(|r| !r.2).count();
        let in_swap = |t: Duration| swap_windows.iter().any(|(a, b)| t >= *a && t < *b);
        let mut steady_lat: Vec<Duration> = records
            .iter()
            .filter(|r| r.0 < STEADY)
            .map(|r| r.1)
            .collect();
        let mut swap_lat: Vec<Duration> = records
            .iter()
            .filter(|r| in_swap(r.0))
            .map(|r| r.1)
            .collect();
        steady_lat.sort();
        swap_lat.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{model:8} requests {:6} failures {failures} | steady p50 {:6.1} ms p99 {:6.1} ms | during swaps p50 {:6.1} ms p99 {:6.1} ms | p99 ratio {:.2}",
            records.len(),
            ms(percentile(&steady_lat, 0.5)),
            ms(percentile(&steady_lat, 0.99)),
            ms(percentile(&swap_lat, 0.5)),
            ms(percentile(&swap_lat, 0.99)),
            ms(percentile(&swap_lat, 0.99)) / ms(percentile(&steady_lat, 0.99)),
        );
    }
    let ms: Vec<String> = to_available
        .iter()
        .map(|d| format!("{}", d.as_millis()))
        .collect();
    println!("rename → AVAILABLE (ms): {}", ms.join(", "));
    println!(
        "RSS: one MiniLM version {} MiB; two models serving {} MiB; peak during swaps {} MiB; after each unload {} MiB",
        one_version_kib / 1024,
        rss_two_models / 1024,
        peak.load(Ordering::Relaxed) / 1024,
        rss_after_unload.iter().map(|k| (k / 1024).to_string()).collect::<Vec<_>>().join(", ")
    );
    server.shutdown().await.unwrap();
}

fn versioned(model: &str, version: i64) -> CoreSpec {
    CoreSpec {
        version: VersionChoice::Number(version),
        ..CoreSpec::latest(model)
    }
}
