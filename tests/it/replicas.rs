//! Replicas behind a real load balancer: three `candle_model_server` processes serve one
//! model repository in object storage (a real S3 API server, moto) behind nginx (Debian
//! package, installed by scripts/setup_services.sh), REST through `proxy_pass` and gRPC
//! through `grpc_pass`. A new version is pushed to the bucket with `candle_serving_cli push`
//! under continuous load through nginx: no request fails, the gRPC clients (whose answers
//! name the version) end on the new version, and every replica ends serving it (while they
//! switch, nginx may send one client to replicas on either side).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_serving::proto::tensorflow::serving::model_spec::VersionChoice;
use candle_serving::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use common::process::{run_cli, spawn_server_with_env, Spawned};
use common::services::{free_port, S3};
use common::*;
use serde_json::{json, Value};

/// nginx, started on a config of its own in a temporary folder, stopped on drop.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("nginx is not installed: run scripts/setup_services.sh (the test command does)")
}

impl Nginx {
    fn start(dir: &Path, rest_port: u16, grpc_port: u16, replicas: &[&Spawned]) -> Nginx {
        let servers = |addr: fn(&Spawned) -> std::net::SocketAddr| -> String {
            replicas
                .iter()
                .map(|r| format!("    server {};\n", addr(r)))
                .collect()
        };
        let d = dir.display();
        // As root, workers would otherwise switch to `nobody`; a test runs them as itself.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;"
        } else {
            ""
        };
        let config = format!(
            "{user}
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  # nginx closes a client connection after this many requests (1000 by default), which a
  # gRPC channel in a tight loop reaches in a second.
  keepalive_requests 1000000;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream rest {{
{rest}    keepalive 16;
    keepalive_requests 1000000;
  }}
  upstream grpc {{
{grpc}    keepalive 16;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{rest_port};
    location / {{
      proxy_pass http://rest;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }}
  }}
  server {{
    listen 127.0.0.1:{grpc_port} http2;
    location / {{ grpc_pass grpc://grpc; }}
  }}
}}
",
            rest = servers(|r| r.rest_addr.unwrap()),
            grpc = servers(|r| r.grpc_addr),
        );
        let file = dir.join("nginx.conf");
        std::fs::write(&file, config).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx runs");
        Nginx {
            child,
            dir: dir.to_path_buf(),
        }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    /// SIGTERM to the master, which stops its workers (SIGKILL would orphan them).
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The versions a replica reports for `m`, as (version, state) from its own REST port.
async fn states(http: &reqwest::Client, replica: &Spawned) -> Vec<(String, String)> {
    let url = format!("http://{}/v1/models/m", replica.rest_addr.unwrap());
    let status: Value = http.get(url).send().await.unwrap().json().await.unwrap();
    status["model_version_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["version"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_s3_behind_nginx_take_a_new_version_under_load_without_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start();
    s3.create_bucket("repo");
    let url = "s3://repo/models/m";
    let push = |version: i64, seed: u64| {
        let folder = dir.path().join(format!("build-{version}"));
        write_tiny_bert(&folder, Kind::Embedding, seed);
        let folder = folder.display().to_string();
        let (ok, out) = run_cli(&["push", folder.as_str(), url], &s3.env());
        assert!(ok, "{out}");
    };
    push(1, 1);
    let base_arg = format!("--model_base_path={url}");
    let replicas: Vec<Spawned> = (0..3)
        .map(|i| {
            // --rest_api_port=0 turns REST off; a free port is picked instead.
            let rest = format!("--rest_api_port={}", free_port());
            // Each replica has a model cache of its own, as each pod does.
            let cache = format!(
                "--model_cache_dir={}",
                dir.path().join(format!("cache-{i}")).display()
            );
            spawn_server_with_env(
                dir.path(),
                &[
                    "--model_name=m",
                    &base_arg,
                    &cache,
                    "--port=0",
                    &rest,
                    "--file_system_poll_wait_seconds=1",
                ],
                &s3.env(),
            )
            .unwrap_or_else(|log| panic!("a replica did not start:\n{log}"))
        })
        .collect();
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let (rest_port, grpc_port) = (free_port(), free_port());
    let nginx = Nginx::start(
        &nginx_dir,
        rest_port,
        grpc_port,
        &replicas.iter().collect::<Vec<_>>(),
    );

    // Ready through nginx: every replica answers /readyz.
    let http = reqwest::Client::new();
    let front = format!("http://127.0.0.1:{rest_port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut ready = 0;
        for _ in 0..6 {
            if let Ok(r) = http.get(format!("{front}/readyz")).send().await {
                ready += usize::from(r.status().is_success());
            }
        }
        if ready == 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready through nginx:\n{}",
            nginx.error_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..6 {
        let (http, stop, front) = (http.clone(), stop.clone(), front.clone());
        clients.push(tokio::spawn(async move {
            let (mut versions, mut failures) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"instances": [format!("client {c} says my head hurts")]});
                match http
                    .post(format!("{front}/v1/models/m:predict"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => versions.push(0),
                    Ok(r) => failures.push(format!(
                        "REST {}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => failures.push(format!("REST: {e}")),
                }
            }
            (versions, failures)
        }));
    }
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    for _ in 0..2 {
        let mut grpc = PredictionServiceClient::new(channel.clone());
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let (mut versions, mut failures) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let request =
                    predict_request(spec("m", None), &[("text", strings(&["the lazy dog"]))]);
                match grpc.predict(request).await {
                    Ok(r) => match r.into_inner().model_spec.and_then(|s| s.version_choice) {
                        Some(VersionChoice::Version(v)) => versions.push(v),
                        other => failures.push(format!("gRPC: no version: {other:?}")),
                    },
                    Err(e) => failures.push(format!("gRPC: {e}")),
                }
            }
            (versions, failures)
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    push(2, 2);
    // Every replica picks it up by itself, at its next listing (1 s poll).
    let deadline = Instant::now() + Duration::from_secs(60);
    for replica in &replicas {
        loop {
            let s = states(&http, replica).await;
            if s.contains(&("2".to_string(), "AVAILABLE".to_string())) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a replica never loaded version 2: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);

    let (mut rest_answers, mut grpc_versions) = (0, Vec::new());
    for (i, client) in clients.into_iter().enumerate() {
        let (versions, failures) = client.await.unwrap();
        assert!(
            failures.is_empty(),
            "failed requests through nginx: {failures:?}\n{}",
            nginx.error_log()
        );
        if i < 6 {
            rest_answers += versions.len();
        } else {
            assert_eq!(
                versions.last(),
                Some(&2),
                "gRPC through nginx ended on {versions:?}"
            );
            grpc_versions.extend(versions);
        }
    }
    assert!(rest_answers > 50, "only {rest_answers} REST answers");
    assert!(
        grpc_versions.contains(&1) && grpc_versions.contains(&2),
        "{grpc_versions:?}"
    );
    for replica in &replicas {
        let s = states(&http, replica).await;
        assert_eq!(
            s.first(),
            Some(&("2".to_string(), "AVAILABLE".to_string())),
            "{s:?}"
        );
        assert!(
            !s.contains(&("1".to_string(), "AVAILABLE".to_string())),
            "{s:?}"
        );
    }
}
