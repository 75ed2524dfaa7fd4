//! Clients we did not write: the Python scripts in clients/python use the official
//! `tensorflow-serving-api` package against a live server, unchanged from how they would
//! call TensorFlow Serving, and `async_jobs.py` (plain `requests`) runs seed 003's
//! submit-then-poll flow on the job API. The venv comes from scripts/setup_python_clients.sh (run by the
//! README's test command).

use crate::common;

use std::process::Command;

use candle_serving::config::ModelsConfig;
use candle_serving::server::ServerOptions;
use common::*;

/// The venv's python: `$CLIENTS_PYTHON`, or `.cache/venv-clients/bin/python`.
fn python() -> String {
    if let Ok(p) = std::env::var("CLIENTS_PYTHON") {
        return p;
    }
    let p = repo_root().join(".cache/venv-clients/bin/python");
    assert!(
        p.is_file(),
        "no Python client venv: run scripts/setup_python_clients.sh (the test command does)"
    );
    p.display().to_string()
}

fn run(script: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(python())
        .arg(repo_root().join("clients/python").join(script))
        .args(args)
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), text)
}

#[tokio::test]
async fn python_clients_get_the_reference_embeddings_and_status_over_grpc_and_rest() {
    let base = minilm_dir().parent().unwrap().to_path_buf();
    let mut s = TestServer::start(ServerOptions::local(
        ModelsConfig::single("minilm", &base).unwrap(),
    ))
    .await;
    s.wait_for("minilm", 1, AVAILABLE).await;
    let server = s.server.grpc_addr.to_string();
    let reference = repo_root().join("tests/data/minilm_embeddings.json");
    let addr = server.clone();
    let reference_arg = reference.display().to_string();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        run(
            "predict_grpc.py",
            &[
                "--server",
                &addr,
                "--model",
                "minilm",
                "--reference",
                &reference_arg,
            ],
        )
    })
    .await
    .unwrap();
    println!("{out}");
    assert!(ok, "predict_grpc.py failed:\n{out}");
    assert!(
        out.contains("model minilm version 1: embeddings (3, 384)"),
        "{out}"
    );
    assert_eq!(out.matches("OK ").count(), 5, "{out}");
    assert!(out.contains("reference check passed"), "{out}");

    let addr = server.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        run("status_grpc.py", &["--server", &addr, "--model", "minilm"])
    })
    .await
    .unwrap();
    println!("{out}");
    assert!(ok, "status_grpc.py failed:\n{out}");
    assert!(out.contains("model minilm version 1: AVAILABLE"), "{out}");
    assert!(out.contains("signature serving_default (tensorflow/serving/predict): inputs [attention_mask, input_ids, text, token_type_ids] -> outputs [embeddings]"), "{out}");

    let addr = server.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        run(
            "predict_grpc.py",
            &[
                "--server",
                &addr,
                "--model",
                "minilm",
                "--version",
                "1",
                "hello world",
            ],
        )
    })
    .await
    .unwrap();
    assert!(ok && out.contains("embeddings (1, 384)"), "{out}");

    let rest = format!("http://{}", s.server.rest_addr.unwrap());
    let reference_arg = reference.display().to_string();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        run(
            "predict_rest.py",
            &[
                "--server",
                &rest,
                "--model",
                "minilm",
                "--reference",
                &reference_arg,
            ],
        )
    })
    .await
    .unwrap();
    println!("{out}");
    assert!(ok, "predict_rest.py failed:\n{out}");
    assert!(out.contains(r#"{"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}"#), "{out}");
    assert_eq!(out.matches("OK ").count(), 4, "{out}");
    assert!(out.contains("reference check passed"), "{out}");

    // Seed 003's submit-then-poll flow, with `requests` only.
    let rest = format!("http://{}", s.server.rest_addr.unwrap());
    let (ok, out) = tokio::task::spawn_blocking(move || {
        run(
            "async_jobs.py",
            &[
                "--server",
                &rest,
                "--model",
                "minilm",
                "--batch",
                "2",
                "--check",
                "How do I reset my password?",
                "The weather is nice today",
                "我头疼",
            ],
        )
    })
    .await
    .unwrap();
    println!("{out}");
    assert!(ok, "async_jobs.py failed:\n{out}");
    assert!(out.contains("submitted 2 jobs"), "{out}");
    assert_eq!(out.matches("equal to :predict").count(), 2, "{out}");
    assert!(
        out.contains("SUCCEEDED on minilm version 1: 2 predictions"),
        "{out}"
    );
    s.stop().await;
}
