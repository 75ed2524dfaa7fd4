//! `candle_serving_cli` against a live server: status, metadata, predict, push (atomic
//! deploy with --wait), set-label (server first, file second) and reload-config.

use crate::common;

use std::process::Command;

use candle_serving::config::ModelsConfig;
use candle_serving::server::ServerOptions;
use common::*;

fn cli(server: &std::net::SocketAddr, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_candle_serving_cli"))
        .arg(format!("--server=http://{server}"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn deploy_label_and_query_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("repo/m");
    publish_tiny_bert(&base, 1, Kind::Classifier, 1);
    let file = dir.path().join("models.config");
    std::fs::write(&file, "# the test's config\nmodel_config_list { config { name: \"m\" base_path: \"repo/m\" model_version_policy { all {} } } }\n").unwrap();
    let mut options = ServerOptions::local(ModelsConfig::from_file(&file).unwrap());
    options.config_file = Some(file.clone());
    let mut s = TestServer::start(options).await;
    s.wait_for("m", 1, AVAILABLE).await;
    let addr = s.server.grpc_addr;

    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            cli(&addr, &args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };

    // push: a trained folder becomes version 2 through a hidden temporary folder.
    let trained = dir.path().join("trained");
    write_tiny_bert(&trained, Kind::Classifier, 2);
    let (ok, out, err) = run(vec![
        "push".into(),
        trained.display().to_string(),
        base.display().to_string(),
        "--wait".into(),
    ])
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!(
            "pushed {} as {}",
            trained.display(),
            base.join("2").display()
        )),
        "{out}"
    );
    assert!(out.contains("m version 2 is AVAILABLE ("), "{out}");
    let leftovers: Vec<String> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary folders left behind: {leftovers:?}"
    );
    // Versions are immutable.
    let (ok, _, err) = run(vec![
        "push".into(),
        trained.display().to_string(),
        base.display().to_string(),
        "--version".into(),
        "2".into(),
    ])
    .await
    .unwrap();
    assert!(
        !ok && err.contains("already exists; versions are immutable"),
        "{err}"
    );
    // A folder that is not a version is refused before anything is copied.
    let (ok, _, err) = run(vec![
        "push".into(),
        dir.path().join("repo").display().to_string(),
        base.display().to_string(),
    ])
    .await
    .unwrap();
    assert!(
        !ok && err.contains("is not a version folder: config.json is missing"),
        "{err}"
    );

    let (ok, out, _) = run(vec!["status".into(), "m".into()]).await.unwrap();
    assert!(ok);
    assert_eq!(out, "m version 2: AVAILABLE\nm version 1: AVAILABLE\n");

    // set-label: the server takes it first, then the file is rewritten.
    let (ok, out, err) = run(vec![
        "set-label".into(),
        "m".into(),
        "canary=2".into(),
        format!("--config={}", file.display()),
    ])
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("m: `canary` → version 2"), "{out}");
    let written = ModelsConfig::from_file(&file).unwrap();
    assert_eq!(written.models[0].labels.get("canary"), Some(&2));
    let (ok, out, _) = run(vec![
        "predict".into(),
        "m".into(),
        "--label=canary".into(),
        "i have a fever".into(),
        "--json".into(),
    ])
    .await
    .unwrap();
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(json["version"], 2);
    assert_eq!(
        json["outputs"]["probabilities"]["shape"],
        serde_json::json!([1, 3])
    );
    // A label on a version that is not there: refused by the server, file untouched.
    let before = std::fs::read_to_string(&file).unwrap();
    let (ok, _, err) = run(vec![
        "set-label".into(),
        "m".into(),
        "stable=9".into(),
        format!("--config={}", file.display()),
    ])
    .await
    .unwrap();
    assert!(!ok && err.contains("label `stable` → 9"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);

    let (ok, out, _) = run(vec!["metadata".into(), "m".into(), "--version=1".into()])
        .await
        .unwrap();
    assert!(ok);
    assert!(
        out.contains("signature serving_default (tensorflow/serving/predict)"),
        "{out}"
    );
    assert!(out.contains("probabilities: DT_FLOAT [-1,3]"), "{out}");

    let (ok, _, err) = run(vec!["reload-config".into(), file.display().to_string()])
        .await
        .unwrap();
    assert!(ok, "{err}");
    s.stop().await;
}
