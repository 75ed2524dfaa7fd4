//! Model repositories in object storage, against a real S3 API server (moto, started on a
//! loopback port) and the real `candle_model_server` and `candle_serving_cli` binaries:
//! versions pushed with the CLI (which marks them complete) and uploaded by boto3 (which
//! does not) are fetched into the model cache and served; a version still being uploaded is
//! never served; versions that leave the bucket are unloaded; a restart serves from the
//! cache; one cache dir belongs to one process; an unreachable endpoint is reported.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::process::{run_cli, spawn_server_with_env, Spawned};
use common::services::{free_port, S3};
use common::*;
use serde_json::Value;

/// `candle_serving_cli push`, with the S3 server's variables; (success, stdout + stderr).
fn push(s3: &S3, folder: &Path, url: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "push".to_string(),
        folder.display().to_string(),
        url.to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    run_cli(&args, &s3.env())
}

fn start(s3: &S3, dir: &Path, cache: &Path, url: &str) -> Spawned {
    let base = format!("--model_base_path={url}");
    let cache = format!("--model_cache_dir={}", cache.display());
    let rest = format!("--rest_api_port={}", free_port());
    spawn_server_with_env(
        dir,
        &[
            "--model_name=m",
            &base,
            &cache,
            "--port=0",
            &rest,
            "--file_system_poll_wait_seconds=1",
        ],
        &s3.env(),
    )
    .unwrap_or_else(|log| panic!("the server did not start:\n{log}"))
}

/// GET /v1/models/m: (status code, body).
async fn status(server: &Spawned) -> (u16, Value) {
    let url = format!("http://{}/v1/models/m", server.rest_addr.unwrap());
    let r = reqwest::get(url).await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

/// The versions in state AVAILABLE.
async fn available(server: &Spawned) -> Vec<i64> {
    let (_, body) = status(server).await;
    body["model_version_status"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["state"] == "AVAILABLE")
        .filter_map(|s| s["version"].as_str()?.parse().ok())
        .collect()
}

async fn wait_for(server: &Spawned, what: &str, want: impl Fn(&[i64]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = available(server).await;
        if want(&now) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: available {now:?}; status {:?}\n{}",
            status(server).await,
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The version folders in the model's cache folder.
fn cached(cache: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for model in std::fs::read_dir(cache).unwrap().flatten() {
        if model.path().is_dir() {
            for v in std::fs::read_dir(model.path()).unwrap().flatten() {
                let name = v.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    names.push(name);
                }
            }
        }
    }
    names.sort();
    names
}

async fn predict_ok(server: &Spawned) {
    let r = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/models/m:predict",
            server.rest_addr.unwrap()
        ))
        .json(&serde_json::json!({"instances": ["my head hurts"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_in_s3_are_fetched_served_and_unloaded_when_they_leave_the_bucket() {
    let s3 = S3::start();
    s3.create_bucket("models");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let url = "s3://models/prod/m";

    // The CLI uploads version 1 and its completion marker; the same number again is refused.
    let v1 = dir.path().join("v1");
    write_tiny_bert(&v1, Kind::Embedding, 1);
    let (ok, out) = push(&s3, &v1, url, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("as s3://models/prod/m/1"), "{out}");
    // Without AWS_ALLOW_HTTP, an http:// endpoint is still taken as meant (as the AWS CLI does).
    let no_flag: Vec<(String, String)> = s3
        .env()
        .into_iter()
        .filter(|(k, _)| k != "AWS_ALLOW_HTTP")
        .collect();
    let (ok, out) = run_cli(
        &[
            "push".to_string(),
            v1.display().to_string(),
            "s3://models/other/m".into(),
        ],
        &no_flag,
    );
    assert!(ok && out.contains("as s3://models/other/m/1"), "{out}");
    let (ok, out) = push(&s3, &v1, url, &["--version=1"]);
    assert!(!ok && out.contains("already exists"), "{out}");
    let (ok, out) = push(&s3, dir.path(), url, &[]);
    assert!(!ok && out.contains("is not a version folder"), "{out}");

    let server = start(&s3, dir.path(), &cache, url);
    wait_for(&server, "version 1 from S3", |v| v == [1]).await;
    predict_ok(&server).await;
    assert_eq!(cached(&cache), ["1"]);

    // A second process on the same cache dir is refused at start, and says why.
    let base = format!("--model_base_path={url}");
    let cache_arg = format!("--model_cache_dir={}", cache.display());
    match spawn_server_with_env(
        dir.path(),
        &[
            "--model_name=m",
            &base,
            &cache_arg,
            "--port=0",
            "--rest_api_port=0",
        ],
        &s3.env(),
    ) {
        Ok(_) => panic!("two processes share one model cache"),
        Err(log) => assert!(log.contains("in use by another server process"), "{log}"),
    }

    // boto3 uploads version 2 without a marker, pausing for more than two polls after the
    // first file: the half version may be fetched and fail to load, but it never serves;
    // once whole, it is fetched again and serves.
    let v2 = dir.path().join("v2");
    write_tiny_bert(&v2, Kind::Embedding, 2);
    // Uploads one file of version 2, or (None) all of them.
    let upload = |only: Option<&str>| {
        let files: Vec<String> = std::fs::read_dir(&v2)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| only.is_none_or(|o| o == n))
            .collect();
        assert!(!files.is_empty());
        let calls: String = files
            .iter()
            .map(|f| {
                format!(
                    "s3.upload_file('{}', 'models', 'prod/m/2/{f}')\n",
                    v2.join(f).display()
                )
            })
            .collect();
        s3.boto3(&calls);
    };
    upload(Some("config.json"));
    let pause = Instant::now();
    while pause.elapsed() < Duration::from_millis(2500) {
        assert_eq!(
            available(&server).await,
            [1],
            "a half-uploaded version serves"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    upload(None);
    wait_for(&server, "version 2 once whole", |v| v == [2]).await;
    predict_ok(&server).await;
    // Version 1 is neither wanted by the policy (latest 1) nor served: its copy goes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while cached(&cache) != ["2"] {
        assert!(Instant::now() < deadline, "cache: {:?}", cached(&cache));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Version 2 leaves the bucket: it is unloaded and version 1 is fetched and serves again.
    s3.boto3(
        "for o in s3.list_objects_v2(Bucket='models', Prefix='prod/m/2/')['Contents']:\n    s3.delete_object(Bucket='models', Key=o['Key'])",
    );
    wait_for(&server, "back to version 1", |v| v == [1]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while cached(&cache) != ["1"] {
        assert!(Instant::now() < deadline, "cache: {:?}", cached(&cache));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(server);

    // A restart serves the cached copy without downloading it again.
    let again = start(&s3, dir.path(), &cache, url);
    wait_for(&again, "version 1 after a restart", |v| v == [1]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = again.log_text();
    assert!(
        !log.contains("fetched a version from object storage"),
        "the restart downloaded again:\n{log}"
    );
    predict_ok(&again).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_reported_in_the_model_status() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let env: Vec<(String, String)> = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let rest = format!("--rest_api_port={}", free_port());
    let cache = format!("--model_cache_dir={}", dir.path().join("cache").display());
    let server = spawn_server_with_env(
        dir.path(),
        &[
            "--model_name=m",
            "--model_base_path=s3://models/m",
            &cache,
            "--port=0",
            &rest,
        ],
        &env,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = status(&server).await;
        let text = body.to_string();
        if code == 404 && text.contains("cannot list s3://models/m") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{code} {text}\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still alive and answering.
    let r = reqwest::get(format!("http://{}/healthz", server.rest_addr.unwrap()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
