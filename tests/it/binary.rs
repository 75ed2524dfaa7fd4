//! The `candle_model_server` binary as operators run it: TF Serving's flags, the default
//! `./models.config`, start-up errors, and graceful shutdown on SIGTERM with a request in
//! flight.

use crate::common;

use std::time::{Duration, Instant};

use candle_serving::proto::tensorflow::serving::{
    model_service_client::ModelServiceClient, prediction_service_client::PredictionServiceClient,
};
use common::process::{run_failing, spawn_server};
use common::*;

async fn clients(
    addr: std::net::SocketAddr,
) -> (
    PredictionServiceClient<tonic::transport::Channel>,
    ModelServiceClient<tonic::transport::Channel>,
) {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (
        PredictionServiceClient::new(channel.clone()),
        ModelServiceClient::new(channel),
    )
}

#[tokio::test]
async fn single_model_mode_with_tensorflow_model_server_flags() {
    let dir = tempfile::tempdir().unwrap();
    publish_tiny_bert(&dir.path().join("repo"), 3, Kind::Embedding, 1);
    let base = dir.path().join("repo");
    let mut server = spawn_server(
        dir.path(),
        &[
            "--port=0",
            "--rest_api_port=0",
            "--model_name=tiny",
            &format!("--model_base_path={}", base.display()),
            "--grpc_max_threads=4",
        ],
    )
    .unwrap();
    let (mut grpc, mut models) = clients(server.grpc_addr).await;
    wait_for_state(&mut models, "tiny", 3, AVAILABLE).await;
    let r = grpc
        .predict(predict_request(
            spec("tiny", None),
            &[("text", strings(&["hello"]))],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dims(&r.outputs["embeddings"]), vec![1, 32]);
    assert!(server
        .log_text()
        .contains("--grpc_max_threads is accepted for compatibility and ignored"));
    server.signal("TERM");
    assert_eq!(server.wait_exit(), Some(0));
}

#[tokio::test]
async fn with_no_model_flags_it_serves_the_models_config_of_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    publish_tiny_bert(&dir.path().join("m"), 1, Kind::Classifier, 1);
    std::fs::write(
        dir.path().join("models.config"),
        "model_config_list { config { name: \"m\" base_path: \"m\" model_platform: \"candle\" } }",
    )
    .unwrap();
    let mut server = spawn_server(dir.path(), &["--port=0", "--rest_api_port=0"]).unwrap();
    let (mut grpc, mut models) = clients(server.grpc_addr).await;
    wait_for_state(&mut models, "m", 1, AVAILABLE).await;
    grpc.predict(predict_request(
        spec("m", Some(1)),
        &[("text", strings(&["hello"]))],
    ))
    .await
    .unwrap();
    server.signal("INT");
    assert_eq!(server.wait_exit(), Some(0));
}

#[test]
fn start_up_errors_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run_failing(dir.path(), &[]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(
            "no models to serve: pass --model_config_file, or --model_name and --model_base_path"
        ),
        "{err}"
    );

    let config = dir.path().join("bad.config");
    std::fs::write(&config, "model_config_list {\n  config {\n    name: \"a\"\n    base_path: \"/x\"\n    model_platform: \"tensorflow\"\n  }\n}\n").unwrap();
    let (code, err) = run_failing(
        dir.path(),
        &[&format!("--model_config_file={}", config.display())],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("bad.config:3: model `a`: model_platform \"tensorflow\" is not supported"),
        "{err}"
    );

    std::fs::write(
        &config,
        "model_config_list {\n  config {\n    name: \"a\"\n    base_path \"/x\"\n  }\n}\n",
    )
    .unwrap();
    let (code, err) = run_failing(
        dir.path(),
        &[&format!("--model_config_file={}", config.display())],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("bad.config:4:15:"), "{err}");
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_then_exits_zero() {
    let minilm = minilm_dir();
    let mut server = spawn_server(
        &repo_root(),
        &[
            "--port=0",
            &format!("--rest_api_port={}", common::services::free_port()),
            "--model_name=minilm",
            &format!("--model_base_path={}", minilm.parent().unwrap().display()),
        ],
    )
    .unwrap();
    let (mut grpc, mut models) = clients(server.grpc_addr).await;
    wait_for_state(&mut models, "minilm", 1, AVAILABLE).await;
    let long = std::fs::read_to_string(repo_root().join("data/bench/long.txt")).unwrap();
    let texts: Vec<&str> = long.lines().cycle().take(256).collect();
    let request = predict_request(spec("minilm", None), &[("text", strings(&texts))]);
    let in_flight = tokio::spawn(async move { grpc.predict(request).await });
    // SIGTERM only once the server itself counts the request as in flight.
    let metrics = format!(
        "http://{}/monitoring/prometheus/metrics",
        server.rest_addr.expect("REST is on")
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        if page.contains(":candle_serving:requests_in_flight 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the request never showed as in flight"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.signal("TERM");
    let response = in_flight
        .await
        .unwrap()
        .expect("the request in flight completes");
    assert_eq!(
        dims(&response.into_inner().outputs["embeddings"]),
        vec![256, 384]
    );
    assert_eq!(server.wait_exit(), Some(0));
    let log = server.log_text();
    assert!(
        log.contains("\"in_flight\":1"),
        "the server shut down with the request in flight: {log}"
    );
    assert!(log.contains("shutting down"), "{log}");
    // Once stopped, nothing listens any more.
    assert!(tokio::net::TcpStream::connect(server.grpc_addr)
        .await
        .is_err());
}
