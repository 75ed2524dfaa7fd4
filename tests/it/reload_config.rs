//! HandleReloadConfigRequest, labels and --model_config_file_poll_wait_seconds against a
//! live server: add, remove, relabel, invalid configs rejected with nothing changed,
//! labels on unavailable versions, concurrent reloads, label moves under load, and a config
//! file that changes (or breaks) while the server runs.

use crate::common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use candle_serving::config::text_format;
use candle_serving::config::ModelsConfig;
use candle_serving::proto::tensorflow::serving::{
    model_spec::VersionChoice, ModelServerConfig, ReloadConfigRequest, StatusProto,
};
use candle_serving::server::ServerOptions;
use common::*;

fn config_proto(text: &str) -> ModelServerConfig {
    text_format::parse("tensorflow.serving.ModelServerConfig", text, "test").unwrap()
}

async fn reload(s: &mut TestServer, text: &str) -> StatusProto {
    s.models
        .handle_reload_config_request(ReloadConfigRequest {
            config: Some(config_proto(text)),
            metric_names: vec![],
        })
        .await
        .expect("ReloadConfig answers with a status, not a transport error")
        .into_inner()
        .status
        .unwrap_or_default()
}

async fn version_of(
    s: &mut TestServer,
    spec: candle_serving::proto::tensorflow::serving::ModelSpec,
) -> Result<i64, tonic::Status> {
    let r = s
        .grpc
        .predict(predict_request(spec, &[("text", strings(&["hello"]))]))
        .await?;
    match r.into_inner().model_spec.unwrap().version_choice {
        Some(VersionChoice::Version(v)) => Ok(v),
        other => panic!("{other:?}"),
    }
}

fn repo(dir: &Path) {
    publish_tiny_bert(&dir.join("a"), 1, Kind::Embedding, 1);
    publish_tiny_bert(&dir.join("a"), 2, Kind::Embedding, 2);
    publish_tiny_bert(&dir.join("b"), 1, Kind::Classifier, 3);
}

const A: &str = r#"model_config_list { config { name: "a" base_path: "A_DIR" model_version_policy { all {} } version_labels { key: "stable" value: 1 } } }"#;

fn text(template: &str, dir: &Path) -> String {
    template
        .replace("A_DIR", &dir.join("a").display().to_string())
        .replace("B_DIR", &dir.join("b").display().to_string())
}

async fn start(dir: &Path, options: impl FnOnce(&mut ServerOptions)) -> TestServer {
    let mut o =
        ServerOptions::local(ModelsConfig::from_text(&text(A, dir), dir, "initial").unwrap());
    options(&mut o);
    let mut s = TestServer::start(o).await;
    s.wait_for("a", 1, AVAILABLE).await;
    s.wait_for("a", 2, AVAILABLE).await;
    s
}

#[tokio::test]
async fn adding_a_model_returns_once_it_serves_and_removing_one_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    repo(dir.path());
    let mut s = start(dir.path(), |_| {}).await;
    let both = r#"model_config_list {
        config { name: "a" base_path: "A_DIR" model_version_policy { all {} } version_labels { key: "stable" value: 1 } }
        config { name: "b" base_path: "B_DIR" }
    }"#;
    let status = reload(&mut s, &text(both, dir.path())).await;
    assert_eq!((status.error_code, status.error_message.as_str()), (0, ""));
    // No waiting: the reload returned after b became AVAILABLE.
    assert_eq!(version_of(&mut s, spec("b", None)).await.unwrap(), 1);
    let status = reload(
        &mut s,
        &text(
            r#"model_config_list { config { name: "b" base_path: "B_DIR" } }"#,
            dir.path(),
        ),
    )
    .await;
    assert_eq!(status.error_code, 0, "{}", status.error_message);
    let e = version_of(&mut s, spec("a", None)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            tonic::Code::NotFound,
            "model `a` is not served here; served models: b"
        )
    );
    s.stop().await;
}

#[tokio::test]
async fn relabelling_moves_requests_and_policies_change() {
    let dir = tempfile::tempdir().unwrap();
    repo(dir.path());
    let mut s = start(dir.path(), |_| {}).await;
    assert_eq!(
        version_of(&mut s, label_spec("a", "stable")).await.unwrap(),
        1
    );
    let moved = r#"model_config_list { config { name: "a" base_path: "A_DIR" model_version_policy { all {} }
        version_labels { key: "stable" value: 2 } version_labels { key: "canary" value: 1 } } }"#;
    assert_eq!(reload(&mut s, &text(moved, dir.path())).await.error_code, 0);
    assert_eq!(
        version_of(&mut s, label_spec("a", "stable")).await.unwrap(),
        2
    );
    assert_eq!(
        version_of(&mut s, label_spec("a", "canary")).await.unwrap(),
        1
    );
    // Back to latest{1} without labels: version 1 is unloaded.
    let latest = r#"model_config_list { config { name: "a" base_path: "A_DIR" } }"#;
    assert_eq!(
        reload(&mut s, &text(latest, dir.path())).await.error_code,
        0
    );
    s.wait_for("a", 1, END).await;
    let e = version_of(&mut s, spec("a", Some(1))).await.unwrap_err();
    assert_eq!(
        e.message(),
        "model `a` version 1 was unloaded; available versions: [2]"
    );
    s.stop().await;
}

#[tokio::test]
async fn invalid_configs_are_rejected_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    repo(dir.path());
    let mut s = start(dir.path(), |_| {}).await;
    let platform = r#"model_config_list { config { name: "a" base_path: "A_DIR" model_platform: "tensorflow" } config { name: "b" base_path: "B_DIR" } }"#;
    let status = reload(&mut s, &text(platform, dir.path())).await;
    assert_eq!(status.error_code, 3);
    assert_eq!(status.error_message, "ReloadConfigRequest.config: model `a`: model_platform \"tensorflow\" is not supported; this server serves model_platform \"candle\"; the configuration was not changed");
    // A label on a version that does not exist: FAILED_PRECONDITION, and b was not added either.
    let label = r#"model_config_list { config { name: "a" base_path: "A_DIR" model_version_policy { all {} } version_labels { key: "canary" value: 3 } }
                    config { name: "b" base_path: "B_DIR" } }"#;
    let status = reload(&mut s, &text(label, dir.path())).await;
    assert_eq!(status.error_code, 9);
    assert_eq!(
        status.error_message,
        format!("model `a` label `canary` → 3: version 3 is not on disk under {}; the configuration was not changed (labels may only point at AVAILABLE versions unless --allow_version_labels_for_unavailable_models is set)", dir.path().join("a").display())
    );
    assert_eq!(
        version_of(&mut s, label_spec("a", "stable")).await.unwrap(),
        1,
        "old labels still apply"
    );
    assert_eq!(
        version_of(&mut s, spec("b", None))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound,
        "b was not added"
    );
    s.stop().await;
}

#[tokio::test]
async fn labels_on_unavailable_versions_are_allowed_with_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    repo(dir.path());
    let mut s = start(dir.path(), |o| {
        o.manager.allow_labels_for_unavailable = true
    })
    .await;
    let label = r#"model_config_list { config { name: "a" base_path: "A_DIR" model_version_policy { all {} } version_labels { key: "canary" value: 3 } } }"#;
    assert_eq!(reload(&mut s, &text(label, dir.path())).await.error_code, 0);
    let e = version_of(&mut s, label_spec("a", "canary"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(e.message(), "model `a` version label `canary` points at version 3, which is not available: version 3 does not exist; available versions: [1, 2]");
    publish_tiny_bert(&dir.path().join("a"), 3, Kind::Embedding, 5);
    s.wait_for("a", 3, AVAILABLE).await;
    assert_eq!(
        version_of(&mut s, label_spec("a", "canary")).await.unwrap(),
        3
    );
    s.stop().await;
}

#[tokio::test]
async fn concurrent_reloads_are_serialised_and_never_hang() {
    let dir = tempfile::tempdir().unwrap();
    repo(dir.path());
    let mut s = start(dir.path(), |_| {}).await;
    let with_b = text(
        r#"model_config_list { config { name: "a" base_path: "A_DIR" } config { name: "b" base_path: "B_DIR" } }"#,
        dir.path(),
    );
    let with_c = text(
        r#"model_config_list { config { name: "a" base_path: "A_DIR" } config { name: "c" base_path: "B_DIR" } }"#,
        dir.path(),
    );
    let mut calls = Vec::new();
    for t in [with_b, with_c].into_iter().cycle().take(6) {
        let mut client = s.models.clone();
        calls.push(tokio::spawn(async move {
            let config = config_proto(&t);
            tokio::time::timeout(
                Duration::from_secs(60),
                client.handle_reload_config_request(ReloadConfigRequest {
                    config: Some(config),
                    metric_names: vec![],
                }),
            )
            .await
            .expect("ReloadConfig did not hang")
            .unwrap()
            .into_inner()
            .status
            .unwrap_or_default()
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap().error_code, 0);
    }
    // Exactly one of b and c serves: the last config applied, whole.
    let b = version_of(&mut s, spec("b", None)).await.is_ok();
    let c = version_of(&mut s, spec("c", None)).await.is_ok();
    assert!(b != c, "b serves: {b}, c serves: {c}");
    assert_eq!(version_of(&mut s, spec("a", None)).await.unwrap(), 2);
    s.stop().await;
}

#[tokio::test]
async fn moving_a_label_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    repo(dir.path());
    let mut s = start(dir.path(), |_| {}).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..6 {
        let mut grpc = s.grpc.clone();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = grpc
                    .predict(predict_request(
                        label_spec("a", "stable"),
                        &[("text", strings(&["hi"]))],
                    ))
                    .await;
                seen.push(
                    r.map(|r| r.into_inner().model_spec.unwrap().version_choice)
                        .map_err(|e| e.to_string()),
                );
            }
            seen
        }));
    }
    for target in [2, 1, 2, 1, 2] {
        let t = A.replace("value: 1", &format!("value: {target}"));
        assert_eq!(reload(&mut s, &text(&t, dir.path())).await.error_code, 0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        for r in client.await.unwrap() {
            let v = r.expect("no request fails while the label moves");
            assert!(matches!(v, Some(VersionChoice::Version(1 | 2))), "{v:?}");
        }
    }
    assert_eq!(
        version_of(&mut s, label_spec("a", "stable")).await.unwrap(),
        2
    );
    s.stop().await;
}

#[tokio::test]
async fn the_config_file_is_polled_and_a_broken_one_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    repo(dir.path());
    let file = dir.path().join("models.config");
    std::fs::write(
        &file,
        r#"model_config_list { config { name: "a" base_path: "a" } }"#,
    )
    .unwrap();
    let mut o = ServerOptions::local(ModelsConfig::from_file(&file).unwrap());
    o.config_file = Some(file.clone());
    o.config_poll = Some(Duration::from_millis(100));
    let mut s = TestServer::start(o).await;
    s.wait_for("a", 2, AVAILABLE).await;

    std::fs::write(&file, r#"model_config_list { config { name: "a" base_path: "a" } config { name: "b" base_path: "b" } }"#).unwrap();
    s.wait_for("b", 1, AVAILABLE).await;
    // A broken file: logged and ignored; both models keep serving.
    std::fs::write(
        &file,
        r#"model_config_list { config { name: "a" base_path: "a" } config { name: "b" "#,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(version_of(&mut s, spec("a", None)).await.unwrap(), 2);
    assert_eq!(version_of(&mut s, spec("b", None)).await.unwrap(), 1);
    // Fixed again, without b: b goes.
    std::fs::write(
        &file,
        r#"model_config_list { config { name: "a" base_path: "a" } }"#,
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while version_of(&mut s, spec("b", None)).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b was never removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;
}
