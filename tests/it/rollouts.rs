//! Progressive rollouts on a live server (two tiny BERT versions, `stable` → 1 and
//! `canary` → 2): the keyed split within ±3 points over 2,000 requests, stickiness and its
//! monotone growth, no failed request while the percentage changes under load, an automatic
//! rollout promoting a good canary end to end (label moved, config file rewritten), a canary
//! that fails on a share of its inputs rolled back by itself, a restart keeping the rollout,
//! and invalid control requests refused without changing anything. Over REST, gRPC
//! (`RolloutService`) and the CLI.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_serving::config::ModelsConfig;
use candle_serving::proto::candle_serving::rollout::v1 as pb;
use candle_serving::proto::tensorflow::serving::model_spec::VersionChoice;
use candle_serving::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use candle_serving::server::ServerOptions;
use common::process::run_cli;
use common::*;
use serde_json::{json, Value};
use tonic::transport::Channel;

const CONFIG: &str = r#"model_config_list {
  config {
    name: "m"
    base_path: "m"
    model_platform: "candle"
    model_version_policy { all {} }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
}
"#;

/// Versions 1 and 2 of `m` and a config file labelling them; version 2's tokenizer is
/// broken (a word the model has no embedding for) when `broken_canary`.
fn repository(dir: &Path, broken_canary: bool) -> PathBuf {
    let base = dir.join("m");
    publish_tiny_bert(&base, 1, Kind::Embedding, 1);
    let v2 = publish_tiny_bert(&base, 2, Kind::Embedding, 2);
    if broken_canary {
        // A tokenizer ahead of its model: `kaboom` gets an id past the embedding table, so
        // every input with it fails inside the model (INTERNAL), the others succeed.
        let path = v2.join("tokenizer.json");
        let mut tokenizer: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        tokenizer["model"]["vocab"]["kaboom"] = json!(50_000);
        std::fs::write(&path, serde_json::to_vec(&tokenizer).unwrap()).unwrap();
    }
    let file = dir.join("models.config");
    std::fs::write(&file, CONFIG).unwrap();
    file
}

async fn start(file: &Path) -> TestServer {
    let mut options = ServerOptions::local(ModelsConfig::from_file(file).unwrap());
    options.config_file = Some(file.to_path_buf());
    let mut server = TestServer::start(options).await;
    server.wait_for("m", 1, AVAILABLE).await;
    server.wait_for("m", 2, AVAILABLE).await;
    server
}

fn rest(server: &TestServer) -> String {
    format!(
        "http://{}/v1/models/m/rollout",
        server.server.rest_addr.unwrap()
    )
}

async fn put(server: &TestServer, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .put(rest(server))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn get(server: &TestServer) -> (u16, Value) {
    let r = reqwest::get(rest(server)).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The version that answers an unpinned Predict from `key` (None: no key).
async fn answer(
    grpc: &mut PredictionServiceClient<Channel>,
    key: Option<&str>,
    text: &str,
) -> Result<i64, tonic::Status> {
    let mut request = tonic::Request::new(predict_request(
        spec("m", None),
        &[("text", strings(&[text]))],
    ));
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("x-client-id", key.parse().unwrap());
    }
    let response = grpc.predict(request).await?.into_inner();
    match response.model_spec.and_then(|s| s.version_choice) {
        Some(VersionChoice::Version(v)) => Ok(v),
        other => panic!("no version in the answer: {other:?}"),
    }
}

async fn keyed_versions(server: &TestServer, keys: std::ops::Range<usize>) -> Vec<i64> {
    let mut grpc = server.grpc.clone();
    let mut out = Vec::new();
    for i in keys {
        let key = format!("client-{i}");
        out.push(answer(&mut grpc, Some(&key), "the lazy dog").await.unwrap());
    }
    out
}

fn canary_share(versions: &[i64]) -> f64 {
    versions.iter().filter(|&&v| v == 2).count() as f64 / versions.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_requests_split_by_the_percentage_stick_and_grow_monotonically() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&repository(dir.path(), false)).await;

    // Without a rollout, unpinned requests go to the latest version.
    assert!(keyed_versions(&server, 0..20).await.iter().all(|&v| v == 2));

    let (code, body) = put(&server, json!({"canary_percent": 20})).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["phase"], "PROGRESSING");
    assert_eq!(
        (
            body["stable_version"].as_i64(),
            body["canary_version"].as_i64()
        ),
        (Some(1), Some(2))
    );

    let at_20 = keyed_versions(&server, 0..2000).await;
    let share = canary_share(&at_20);
    assert!((share - 0.20).abs() <= 0.03, "canary share at 20%: {share}");
    // Sticky: the same keys land on the same side again.
    assert_eq!(keyed_versions(&server, 0..300).await, at_20[..300]);

    // Growing moves keys only from stable to canary.
    assert_eq!(put(&server, json!({"canary_percent": 50})).await.0, 200);
    let at_50 = keyed_versions(&server, 0..2000).await;
    let share = canary_share(&at_50);
    assert!((share - 0.50).abs() <= 0.03, "canary share at 50%: {share}");
    for (i, (before, after)) in at_20.iter().zip(&at_50).enumerate() {
        assert!(
            !(*before == 2 && *after == 1),
            "client-{i} went back to stable"
        );
    }

    // Requests that name a version or a label are never split.
    let mut grpc = server.grpc.clone();
    for _ in 0..20 {
        let pinned = grpc
            .predict(predict_request(
                spec("m", Some(1)),
                &[("text", strings(&["x"]))],
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            pinned.model_spec.unwrap().version_choice,
            Some(VersionChoice::Version(1))
        );
        let labelled = grpc
            .predict(predict_request(
                label_spec("m", "canary"),
                &[("text", strings(&["x"]))],
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            labelled.model_spec.unwrap().version_choice,
            Some(VersionChoice::Version(2))
        );
    }

    // The same key over REST (Open Inference Protocol, which names the version) and gRPC
    // lands on the same side; requests without a key are split at random.
    let http = reqwest::Client::new();
    let infer = format!(
        "http://{}/v2/models/m/infer",
        server.server.rest_addr.unwrap()
    );
    for (i, expected) in at_50.iter().enumerate().take(40) {
        let r: Value = http
            .post(&infer)
            .header("X-Client-Id", format!("client-{i}"))
            .json(&json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["the lazy dog"]}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["model_version"], expected.to_string(), "client-{i}: {r}");
    }
    let mut anonymous = Vec::new();
    for _ in 0..200 {
        anonymous.push(answer(&mut grpc, None, "x").await.unwrap());
    }
    let share = canary_share(&anonymous);
    assert!(
        (0.3..=0.7).contains(&share),
        "unkeyed share at 50%: {share}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentages_change_under_load_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&repository(dir.path(), false)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (mut grpc, stop) = (server.grpc.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let (mut seen, mut failures, mut n) = (Vec::new(), Vec::new(), 0u64);
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("c{c}-{}", n % 50);
                let key = (n % 3 != 0).then_some(key.as_str());
                match answer(&mut grpc, key, "my head hurts").await {
                    Ok(v) => seen.push(v),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (seen, failures)
        }));
    }
    for percent in [10, 30, 60, 90, 0, 45] {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (code, body) = put(&server, json!({"canary_percent": percent})).await;
        assert_eq!(code, 200, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    let r = reqwest::Client::new()
        .delete(rest(&server))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(250)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for client in clients {
        let (seen, failures) = client.await.unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        all.extend(seen);
    }
    assert!(all.len() > 100, "only {} requests", all.len());
    assert!(all.contains(&1) && all.contains(&2));
    let (_, body) = get(&server).await;
    assert_eq!(body["phase"], "ABORTED");
    assert_eq!(body["canary_percent"], 0);
    server.stop().await;
}

/// Keyed clients sending `share_bad` of their inputs with the word the broken canary
/// cannot embed, until `stop`. Returns (answers, failures).
fn load(
    server: &TestServer,
    stop: Arc<AtomicBool>,
    share_bad: u64,
) -> Vec<tokio::task::JoinHandle<(usize, usize)>> {
    (0..3)
        .map(|c| {
            let (mut grpc, stop) = (server.grpc.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed, mut n) = (0, 0, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = format!("c{c}-{n}");
                    let text = if n % 100 < share_bad {
                        "kaboom"
                    } else {
                        "the lazy dog"
                    };
                    match answer(&mut grpc, Some(&key), text).await {
                        Ok(_) => ok += 1,
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

async fn wait_for_phase(server: &TestServer, phase: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = get(server).await;
        if body["phase"] == phase {
            return body;
        }
        assert!(Instant::now() < deadline, "never {phase}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_rollout_promotes_a_good_canary() {
    let dir = tempfile::tempdir().unwrap();
    let file = repository(dir.path(), false);
    let server = start(&file).await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&server, stop.clone(), 0);
    let (code, body) = put(
        &server,
        json!({"canary_percent": 10, "auto": {"step_percent": 30, "interval_seconds": 0.5,
               "min_requests": 20, "max_error_rate": 0.01, "max_p99_ratio": 50}}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let done = wait_for_phase(&server, "PROMOTED").await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let (ok, failed) = client.await.unwrap();
        assert_eq!(failed, 0);
        assert!(ok > 0);
    }
    assert_eq!(done["last_analysis"]["decision"], "promote", "{done}");
    assert!(
        done["last_analysis"]["canary"]["requests"]
            .as_u64()
            .unwrap()
            >= 20,
        "{done}"
    );
    // `stable` now names version 2, in the server and in the config file.
    let mut grpc = server.grpc.clone();
    let r = grpc
        .predict(predict_request(
            label_spec("m", "stable"),
            &[("text", strings(&["x"]))],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.model_spec.unwrap().version_choice,
        Some(VersionChoice::Version(2))
    );
    let written = ModelsConfig::from_file(&file).unwrap();
    assert_eq!(written.models[0].labels["stable"], 2);
    assert_eq!(written.models[0].labels["canary"], 2);
    let metrics = reqwest::get(format!(
        "http://{}/monitoring/prometheus/metrics",
        server.server.rest_addr.unwrap()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        metrics
            .contains(r#":candle_serving:rollout_events_total{event="promote",model_name="m"} 1"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_fails_on_some_inputs_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = repository(dir.path(), true);
    let server = start(&file).await;
    // The broken canary really fails on its word, and only there.
    let mut grpc = server.grpc.clone();
    let bad = grpc
        .predict(predict_request(
            label_spec("m", "canary"),
            &[("text", strings(&["kaboom"]))],
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::Internal, "{bad:?}");
    assert!(grpc
        .predict(predict_request(
            label_spec("m", "stable"),
            &[("text", strings(&["kaboom"]))]
        ))
        .await
        .is_ok());

    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&server, stop.clone(), 20);
    let (code, body) = put(
        &server,
        json!({"canary_percent": 50, "auto": {"step_percent": 10, "interval_seconds": 0.5,
               "min_requests": 30, "max_error_rate": 0.05, "max_p99_ratio": 50}}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let done = wait_for_phase(&server, "ROLLED_BACK").await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(done["canary_percent"], 0, "{done}");
    let reason = done["reason"].as_str().unwrap();
    assert!(reason.contains("error rate"), "{reason}");
    assert_eq!(done["last_analysis"]["decision"], "rollback", "{done}");
    assert!(
        done["last_analysis"]["canary"]["errors"].as_u64().unwrap() > 0,
        "{done}"
    );
    // Unpinned traffic is back on stable; the canary label stays where it was.
    for i in 0..50 {
        let key = format!("after-{i}");
        assert_eq!(answer(&mut grpc, Some(&key), "kaboom").await.unwrap(), 1);
    }
    let written = ModelsConfig::from_file(&file).unwrap();
    assert_eq!(written.models[0].labels["canary"], 2);
    assert_eq!(written.models[0].labels["stable"], 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_rollout_and_the_cli_drives_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = repository(dir.path(), false);
    let server = start(&file).await;
    let cli = |addr: std::net::SocketAddr, args: &[&str]| {
        let server = format!("--server=http://{addr}");
        run_cli(&[&[server.as_str()], args].concat(), &[])
    };
    let (ok, out) = cli(
        server.server.grpc_addr,
        &["rollout", "start", "m", "--percent", "30"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("PROGRESSING") && out.contains("30%"), "{out}");
    let before = keyed_versions(&server, 0..200).await;
    server.stop().await;
    assert!(dir.path().join("models.rollouts.json").is_file());

    let server = start(&file).await;
    let (code, body) = get(&server).await;
    assert_eq!(code, 200);
    assert_eq!(
        (body["phase"].as_str(), body["canary_percent"].as_u64()),
        (Some("PROGRESSING"), Some(30)),
        "{body}"
    );
    assert_eq!(
        keyed_versions(&server, 0..200).await,
        before,
        "keys moved across the restart"
    );

    let (ok, out) = cli(server.server.grpc_addr, &["rollout", "status", "m"]);
    assert!(ok && out.contains("30%"), "{out}");
    let (ok, out) = cli(server.server.grpc_addr, &["rollout", "promote", "m"]);
    assert!(ok && out.contains("PROMOTED"), "{out}");
    assert_eq!(
        ModelsConfig::from_file(&file).unwrap().models[0].labels["stable"],
        2
    );
    // Unpinned requests follow `stable` (now 2) until the ended rollout is forgotten.
    let (ok, out) = cli(server.server.grpc_addr, &["rollout", "abort", "m"]);
    assert!(ok && out.contains("PROMOTED"), "{out}");
    let (ok, out) = cli(server.server.grpc_addr, &["rollout", "status", "m"]);
    assert!(!ok && out.contains("has no rollout"), "{out}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_control_requests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = repository(dir.path(), false);
    // A label on a version that does not exist (allowed by the flag below).
    std::fs::write(
        &file,
        CONFIG.replace(
            r#"version_labels { key: "canary" value: 2 }"#,
            r#"version_labels { key: "canary" value: 2 } version_labels { key: "next" value: 3 }"#,
        ),
    )
    .unwrap();
    let mut options = ServerOptions::local(ModelsConfig::from_file(&file).unwrap());
    options.config_file = Some(file.clone());
    options.manager.allow_labels_for_unavailable = true;
    let mut server = TestServer::start(options).await;
    server.wait_for("m", 1, AVAILABLE).await;
    server.wait_for("m", 2, AVAILABLE).await;
    let (code, _) = get(&server).await;
    assert_eq!(code, 404);
    assert_eq!(put(&server, json!({"canary_percent": 20})).await.0, 200);
    let (_, before) = get(&server).await;

    for (body, status, words) in [
        (json!({"canary_percent": 150}), 400, "0 to 100"),
        (
            json!({"canary_percent": 20, "canary_label": "nope"}),
            400,
            "no version label `nope`",
        ),
        (
            json!({"canary_percent": 20, "canary_label": "next"}),
            400,
            "version 3",
        ),
        (
            json!({"canary_percent": 20, "canary_label": "bad label!"}),
            400,
            "not a valid label",
        ),
        (
            json!({"canary_percent": 20, "canary_label": "stable"}),
            400,
            "both `stable`",
        ),
        (
            json!({"canary_percent": 20, "cnary_percent": 3}),
            400,
            "unknown field",
        ),
        (
            json!({"canary_percent": 20, "auto": {"step_percent": 0}}),
            400,
            "step_percent",
        ),
        (
            json!({"canary_percent": 20, "auto": {"max_error_rate": 7}}),
            400,
            "max_error_rate",
        ),
        (json!("not an object"), 400, "not valid"),
    ] {
        let (code, answer) = put(&server, body.clone()).await;
        assert_eq!(code, status, "{body}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(words) && message.contains("`m`"),
            "{body}: {message}"
        );
        assert_eq!(get(&server).await.1, before, "{body} changed the rollout");
    }
    // A model that is not configured; a method that is not a control.
    let other = rest(&server).replace("/m/", "/nosuch/");
    let r = reqwest::Client::new()
        .put(&other)
        .json(&json!({"canary_percent": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = reqwest::Client::new()
        .post(rest(&server))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    // gRPC refuses the same way.
    let channel = Channel::from_shared(format!("http://{}", server.server.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut rollouts = pb::rollout_service_client::RolloutServiceClient::new(channel);
    let e = rollouts
        .start_rollout(pb::StartRolloutRequest {
            model: "m".into(),
            canary_percent: 101,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let status = rollouts
        .get_rollout(pb::GetRolloutRequest { model: "m".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (status.phase.as_str(), status.canary_percent),
        ("PROGRESSING", 20)
    );
    server.stop().await;
}
