//! The REST API, health endpoints, gRPC health and Prometheus metrics against a live
//! server with a real HTTP client: every endpoint, every error class with its exact status
//! and message, counters that move, readiness that flips.

use crate::common;

use std::time::Duration;

use candle_serving::config::ModelsConfig;
use candle_serving::server::ServerOptions;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const CONFIG: &str = r#"
model_config_list {
  config { name: "emb" base_path: "emb" }
  config { name: "cls" base_path: "cls" model_version_policy { all {} } version_labels { key: "stable" value: 1 } }
}"#;

struct Rest {
    s: TestServer,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Rest {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn text(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

async fn rest_with(config: &str, adjust: impl FnOnce(&mut ServerOptions)) -> Rest {
    let dir = tempfile::tempdir().unwrap();
    publish_tiny_bert(&dir.path().join("emb"), 1, Kind::Embedding, 1);
    publish_tiny_bert(&dir.path().join("cls"), 1, Kind::Classifier, 2);
    publish_tiny_bert(&dir.path().join("cls"), 2, Kind::Classifier, 3);
    let mut options =
        ServerOptions::local(ModelsConfig::from_text(config, dir.path(), "test").unwrap());
    adjust(&mut options);
    let mut s = TestServer::start(options).await;
    s.wait_for("emb", 1, AVAILABLE).await;
    s.wait_for("cls", 2, AVAILABLE).await;
    s.wait_for("cls", 1, AVAILABLE).await;
    let base = format!("http://{}", s.server.rest_addr.expect("REST is on"));
    Rest {
        s,
        base,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

async fn rest() -> Rest {
    rest_with(CONFIG, |_| {}).await
}

#[tokio::test]
async fn status_is_proto3_json_for_a_model_a_version_and_a_label() {
    let r = rest().await;
    let ok = |v: &str| json!({"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}});
    assert_eq!(
        r.get("/v1/models/emb").await,
        (StatusCode::OK, json!({"model_version_status": [ok("1")]}))
    );
    assert_eq!(
        r.get("/v1/models/cls").await,
        (
            StatusCode::OK,
            json!({"model_version_status": [ok("2"), ok("1")]})
        )
    );
    assert_eq!(
        r.get("/v1/models/cls/versions/2").await,
        (StatusCode::OK, json!({"model_version_status": [ok("2")]}))
    );
    assert_eq!(
        r.get("/v1/models/cls/labels/stable").await,
        (StatusCode::OK, json!({"model_version_status": [ok("1")]}))
    );
    r.s.stop().await;
}

#[tokio::test]
async fn metadata_has_the_signature_def_map() {
    let r = rest().await;
    let (status, body) = r.get("/v1/models/cls/versions/1/metadata").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["model_spec"],
        json!({"name": "cls", "signature_name": "", "version": "1"})
    );
    let sig = &body["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["method_name"], "tensorflow/serving/predict");
    assert_eq!(
        sig["inputs"]["text"],
        json!({"dtype": "DT_STRING", "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": false}, "name": "text:0"})
    );
    assert_eq!(
        sig["outputs"]["probabilities"]["tensor_shape"]["dim"][1]["size"],
        "3"
    );
    r.s.stop().await;
}

#[tokio::test]
async fn predict_in_row_and_columnar_formats_matches_grpc() {
    let mut r = rest().await;
    let texts = ["my head hurts", "the quick brown fox"];
    let grpc =
        r.s.grpc
            .predict(predict_request(
                spec("emb", None),
                &[("text", strings(&texts))],
            ))
            .await
            .unwrap()
            .into_inner();
    let expected = floats(&grpc.outputs["embeddings"]);

    let (status, body) = r
        .post(
            "/v1/models/emb:predict",
            json!({"instances": texts}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let rows = body["predictions"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let got: Vec<f32> = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    assert!(got.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-6));

    let (status, body) = r
        .post(
            "/v1/models/emb/versions/1:predict",
            json!({"inputs": {"text": texts}}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["outputs"].as_array().unwrap().len(), 2);

    // {"b64": ...} is a binary string: "my head hurts" encoded.
    let (status, body) = r
        .post(
            "/v1/models/emb:predict",
            json!({"instances": [{"b64": "bXkgaGVhZCBodXJ0cw=="}]}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let first: Vec<f32> = body["predictions"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert!(first
        .iter()
        .zip(&expected[..32])
        .all(|(a, b)| (a - b).abs() < 1e-6));
    r.s.stop().await;
}

#[tokio::test]
async fn classifier_pairs_labels_and_the_classify_verb() {
    let r = rest().await;
    let (status, body) = r
        .post(
            "/v1/models/cls/labels/stable:predict",
            json!({"instances": [{"text": "i have a fever", "text_pair": "my head hurts"}]})
                .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let p = &body["predictions"][0];
    let probs: Vec<f64> = p["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-5);
    let best = (0..3)
        .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
        .unwrap();
    assert_eq!(p["class_ids"], json!(best));
    assert_eq!(
        p["labels"],
        json!(["negative", "neutral", "positive"][best])
    );

    let (status, body) = r
        .post(
            "/v1/models/cls/versions/1:classify",
            json!({"examples": [{"text": "i have a fever", "text_pair": "my head hurts"}]})
                .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let results = body["results"][0].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for (i, pair) in results.iter().enumerate() {
        assert_eq!(pair[0], json!(["negative", "neutral", "positive"][i]));
        assert!((pair[1].as_f64().unwrap() - probs[i]).abs() < 1e-5);
    }
    r.s.stop().await;
}

#[tokio::test]
async fn every_error_has_its_status_and_message() {
    let r = rest().await;
    let cases: Vec<(&str, &str, Option<&str>, StatusCode, &str)> = vec![
        ("POST", "/v1/models/emb:predict", Some("{\"instances\": [\"a\""), StatusCode::BAD_REQUEST,
         "malformed JSON in the request body: EOF while parsing a list at line 1 column 18"),
        ("POST", "/v1/models/emb:predict", Some("[1, 2]"), StatusCode::BAD_REQUEST, "the request body must be a JSON object"),
        ("POST", "/v1/models/emb:predict", Some("{\"instances\": [1, 2]}"), StatusCode::BAD_REQUEST,
         "model `emb` version 1: `text` of instance 0 must hold strings (DT_STRING), got a number"),
        ("POST", "/v1/models/emb:predict", Some("{\"instances\": [{\"input_ids\": [2, 5]}, {\"input_ids\": [2]}]}"), StatusCode::BAD_REQUEST,
         "model `emb` version 1: ragged instances: `input_ids` has shape [1] in instance 1 but [2] in instance 0"),
        ("POST", "/v1/models/emb:predict", Some("{\"instances\": []}"), StatusCode::BAD_REQUEST,
         "model `emb` version 1: `instances` is empty; send at least one instance"),
        ("POST", "/v1/models/emb:predict", Some("{\"instances\": [\"a\"], \"signature_name\": 3}"), StatusCode::BAD_REQUEST,
         "`signature_name` must be a string"),
        ("POST", "/v1/models/ghost:predict", Some("{\"instances\": [\"a\"]}"), StatusCode::NOT_FOUND,
         "model `ghost` is not served here; served models: cls, emb"),
        ("POST", "/v1/models/cls/versions/9:predict", Some("{\"instances\": [\"a\"]}"), StatusCode::NOT_FOUND,
         "model `cls` version 9 does not exist; available versions: [1, 2]"),
        ("POST", "/v1/models/cls/labels/canary:predict", Some("{\"instances\": [\"a\"]}"), StatusCode::BAD_REQUEST,
         "model `cls` has no version label `canary`; its labels: stable → 1"),
        ("GET", "/v1/models/ghost", None, StatusCode::NOT_FOUND, "model `ghost` is not served here; served models: cls, emb"),
        ("GET", "/v1/models/emb:predict", None, StatusCode::METHOD_NOT_ALLOWED, "GET is not allowed on /v1/models/emb:predict; use POST"),
        ("POST", "/v1/models/emb", Some("{}"), StatusCode::METHOD_NOT_ALLOWED, "POST is not allowed on /v1/models/emb; use GET"),
        ("POST", "/v1/models/emb:regress", Some("{}"), StatusCode::NOT_IMPLEMENTED,
         "Regress is not implemented: no model kind served here (embedding, classifier, tagger) regresses; use :predict"),
        ("POST", "/v1/models/emb:explain", Some("{}"), StatusCode::NOT_FOUND, "unknown verb `:explain`; use :predict, :predictAsync, :classify or :regress"),
        ("POST", "/v1/models/emb:classify", Some("{\"examples\": [{\"text\": \"a\"}]}"), StatusCode::BAD_REQUEST,
         "model `emb` version 1 (embedding) does not classify; use Predict"),
        ("GET", "/v3/models", None, StatusCode::NOT_FOUND,
         "no route for GET /v3/models; the API is /v1/models/{model}[/versions/{v}|/labels/{l}][/metadata|:predict|:classify], /v2/..., /healthz, /readyz"),
        ("GET", "/v2/models", None, StatusCode::NOT_FOUND,
         "no route for GET /v2/models; the v2 API is /v2, /v2/health/live, /v2/health/ready, /v2/models/{model}[/versions/{v}][/ready|/infer]"),
    ];
    for (method, path, body, status, message) in cases {
        let url = format!("{}{path}", r.base);
        let request = match method {
            "GET" => r.http.get(url),
            _ => r.http.post(url).body(body.unwrap_or("").to_string()),
        };
        let response = request.send().await.unwrap();
        let got_status = response.status();
        let got: Value = response.json().await.unwrap();
        assert_eq!(
            (got_status, got),
            (status, json!({ "error": message })),
            "{method} {path}"
        );
    }
    r.s.stop().await;
}

#[tokio::test]
async fn oversized_bodies_and_slow_requests_get_their_own_errors() {
    let r = rest_with(CONFIG, |o| o.rest.max_body_bytes = 1024).await;
    let big = json!({"instances": vec!["x"; 600]}).to_string();
    assert_eq!(
        r.post("/v1/models/emb:predict", big).await,
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "the request body is larger than 1024 bytes (--rest_api_max_body_bytes)"})
        )
    );
    r.s.stop().await;

    // A real model and a deadline it cannot meet.
    let minilm = minilm_dir();
    let mut options =
        ServerOptions::local(ModelsConfig::single("minilm", minilm.parent().unwrap()).unwrap());
    options.rest.timeout = Some(Duration::from_millis(20));
    let mut s = TestServer::start(options).await;
    s.wait_for("minilm", 1, AVAILABLE).await;
    let long = std::fs::read_to_string(repo_root().join("data/bench/long.txt")).unwrap();
    let texts: Vec<&str> = long.lines().take(64).collect();
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/models/minilm:predict",
            s.server.rest_addr.unwrap()
        ))
        .body(json!({"instances": texts}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "model `minilm`: the request did not finish within 20 ms (--rest_api_timeout_in_ms)"})
    );
    s.stop().await;
}

#[tokio::test]
async fn a_failed_load_says_why_in_status_and_in_request_errors() {
    let r = rest().await;
    let bad = r._dir.path().join("emb/.tmp-2");
    write_tiny_bert(&bad, Kind::Embedding, 5);
    std::fs::remove_file(bad.join("tokenizer.json")).unwrap();
    std::fs::rename(&bad, r._dir.path().join("emb/2")).unwrap();
    let mut s = r.s;
    s.wait_for("emb", 2, END).await;
    let r = Rest { s, ..r };
    let (status, body) = r.get("/v1/models/emb/versions/2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["model_version_status"][0]["state"], "END");
    assert_eq!(
        body["model_version_status"][0]["status"],
        json!({"error_code": "UNKNOWN", "error_message": "tokenizer.json: missing"})
    );
    assert_eq!(
        r.post(
            "/v1/models/emb/versions/2:predict",
            json!({"instances": ["a"]}).to_string()
        )
        .await,
        (
            StatusCode::NOT_FOUND,
            json!({"error": "model `emb` version 2 failed to load: tokenizer.json: missing; available versions: [1]"})
        )
    );
    r.s.stop().await;
}

#[tokio::test]
async fn readiness_flips_with_the_models_and_grpc_health_follows() {
    let r = rest().await;
    let (status, body) = r.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["ready"], true);
    assert_eq!(
        r.get("/healthz").await,
        (StatusCode::OK, json!({"status": "alive"}))
    );

    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", r.s.server.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let check = |service: &str| tonic_health::pb::HealthCheckRequest {
        service: service.to_string(),
    };
    assert_eq!(
        health
            .check(check("emb"))
            .await
            .unwrap()
            .into_inner()
            .status,
        1,
        "SERVING"
    );

    // The only version of `emb` goes away: not ready, with the reason.
    std::fs::rename(
        r._dir.path().join("emb/1"),
        r._dir.path().join("emb/.removed-1"),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = r.get("/readyz").await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness never flipped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let emb = body["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "emb")
        .unwrap()
        .clone();
    assert_eq!(emb["ready"], false);
    assert_eq!(
        emb["reason"],
        format!(
            "no version folders (positive integers) in {}",
            r._dir.path().join("emb").display()
        )
    );
    assert_eq!(
        health
            .check(check("emb"))
            .await
            .unwrap()
            .into_inner()
            .status,
        2,
        "NOT_SERVING"
    );
    assert_eq!(
        health.check(check("")).await.unwrap().into_inner().status,
        2,
        "the server as a whole is not ready"
    );
    assert_eq!(
        health
            .check(check("cls"))
            .await
            .unwrap()
            .into_inner()
            .status,
        1
    );

    // A new version becomes AVAILABLE: ready again.
    publish_tiny_bert(&r._dir.path().join("emb"), 3, Kind::Embedding, 3);
    let mut s = r.s;
    s.wait_for("emb", 3, AVAILABLE).await;
    let r = Rest { s, ..r };
    assert_eq!(r.get("/readyz").await.0, StatusCode::OK);
    assert_eq!(
        health
            .check(check("emb"))
            .await
            .unwrap()
            .into_inner()
            .status,
        1
    );
    r.s.stop().await;
}

fn counter(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn metrics_count_requests_loads_and_process_state() {
    let mut r = rest().await;
    let path = "/monitoring/prometheus/metrics";
    let ok_rest = r#":tensorflow:serving:request_count{API="predict",entrypoint="REST",model_name="emb",model_version="1",status="OK"}"#;
    let ok_grpc = r#":tensorflow:serving:request_count{API="predict",entrypoint="GRPC",model_name="emb",model_version="1",status="OK"}"#;
    // A model that is not configured is counted under one fixed label, never its own name.
    let not_found = r#":tensorflow:serving:request_count{API="predict",entrypoint="REST",model_name="_unknown_",model_version="",status="NOT_FOUND"}"#;
    let (status, before) = r.text(path).await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..3 {
        assert_eq!(
            r.post(
                "/v1/models/emb:predict",
                json!({"instances": ["a"]}).to_string()
            )
            .await
            .0,
            StatusCode::OK
        );
    }
    r.s.grpc
        .predict(predict_request(
            spec("emb", None),
            &[("text", strings(&["a"]))],
        ))
        .await
        .unwrap();
    r.post(
        "/v1/models/ghost:predict",
        json!({"instances": ["a"]}).to_string(),
    )
    .await;
    let (_, after) = r.text(path).await;
    assert_eq!(counter(&after, ok_rest) - counter(&before, ok_rest), 3.0);
    assert_eq!(counter(&after, ok_grpc) - counter(&before, ok_grpc), 1.0);
    assert_eq!(
        counter(&after, not_found) - counter(&before, not_found),
        1.0
    );
    for expected in [
        r#":tensorflow:serving:request_latency_bucket{API="predict",entrypoint="REST",model_name="emb",model_version="1",le="#,
        r#":tensorflow:serving:runtime_latency_count{API="predict",model_name="emb",model_version="1",runtime="Candle"}"#,
        r#":candle_serving:model_load_latency_seconds_count{model_name="cls",model_version="2"} 1"#,
        r#":candle_serving:model_versions{model_name="cls",state="AVAILABLE"} 2"#,
        ":candle_serving:inference_queue_depth 0",
        "process_start_time_seconds ",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
    ] {
        assert!(after.contains(expected), "missing `{expected}` in\n{after}");
    }
    r.s.stop().await;
}

#[tokio::test]
async fn the_monitoring_config_moves_or_disables_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("monitoring.config");
    std::fs::write(
        &file,
        "prometheus_config { enable: true, path: \"/metrics\" }",
    )
    .unwrap();
    let args = candle_serving::config::ServerArgs::parse_args(&[
        "--model_name=x".to_string(),
        format!("--model_base_path={}", dir.path().display()),
        format!("--monitoring_config_file={}", file.display()),
    ]);
    let options = ServerOptions::from_args(&args).unwrap();
    assert_eq!(options.rest.metrics_path.as_deref(), Some("/metrics"));
    std::fs::write(&file, "prometheus_config { enable: false }").unwrap();
    assert_eq!(
        ServerOptions::from_args(&args).unwrap().rest.metrics_path,
        None
    );
    let r = rest_with(CONFIG, |o| o.rest.metrics_path = Some("/metrics".into())).await;
    assert_eq!(r.text("/metrics").await.0, StatusCode::OK);
    assert_eq!(
        r.text("/monitoring/prometheus/metrics").await.0,
        StatusCode::NOT_FOUND
    );
    r.s.stop().await;
}
