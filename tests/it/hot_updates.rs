//! Hot updates against a live server: versions swapped under load with zero failed
//! requests, everything that really happens on disk (half-copied, corrupt, truncated,
//! incomplete or vanishing folders, odd names, a base path that appears later), requests in
//! flight finishing on their version, and the memory of an unloaded version released.

use crate::common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use candle_serving::config::ModelsConfig;
use candle_serving::proto::tensorflow::serving::{
    model_spec::VersionChoice, GetModelStatusRequest,
};
use candle_serving::server::ServerOptions;
use common::*;

fn options(dir: &Path, config: &str) -> ServerOptions {
    let mut o = ServerOptions::local(ModelsConfig::from_text(config, dir, "test config").unwrap());
    o.manager.load_retry_interval = Duration::from_millis(150);
    o.manager.max_load_retries = 3;
    o
}

const ONE_MODEL: &str =
    r#"model_config_list { config { name: "m" base_path: "m" model_platform: "candle" } }"#;

async fn status_of(s: &mut TestServer, model: &str) -> Vec<(i64, i32, String)> {
    s.models
        .get_model_status(GetModelStatusRequest {
            model_spec: Some(spec(model, None)),
        })
        .await
        .map(|r| {
            r.into_inner()
                .model_version_status
                .into_iter()
                .map(|v| {
                    (
                        v.version,
                        v.state,
                        v.status.unwrap_or_default().error_message,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn served_version(s: &mut TestServer, model: &str) -> i64 {
    let r = s
        .grpc
        .predict(predict_request(
            spec(model, None),
            &[("text", strings(&["hello world"]))],
        ))
        .await
        .unwrap();
    match r.into_inner().model_spec.unwrap().version_choice {
        Some(VersionChoice::Version(v)) => v,
        other => panic!("no version in the response: {other:?}"),
    }
}

/// Writes a version folder with only some of a good version's files, straight into place
/// (the way a careless `cp -r` would).
fn partial_version(base: &Path, version: i64, files: &[&str]) -> std::path::PathBuf {
    let staging = tempfile::tempdir().unwrap();
    write_tiny_bert(staging.path(), Kind::Embedding, version as u64);
    let dst = base.join(version.to_string());
    std::fs::create_dir_all(&dst).unwrap();
    for f in files {
        std::fs::copy(staging.path().join(f), dst.join(f)).unwrap();
    }
    dst
}

fn complete_version(dst: &Path, seed: u64) {
    let staging = tempfile::tempdir().unwrap();
    write_tiny_bert(staging.path(), Kind::Embedding, seed);
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(staging.path().join(f), dst.join(f)).unwrap();
    }
}

async fn wait_failed(s: &mut TestServer, model: &str, version: i64) -> String {
    s.wait_for(model, version, END).await;
    let found = status_of(s, model).await;
    found.into_iter().find(|(v, _, _)| *v == version).unwrap().2
}

#[tokio::test]
async fn versions_swap_under_load_without_a_single_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("m");
    publish_tiny_bert(&base, 1, Kind::Embedding, 1);
    let mut s = TestServer::start(options(dir.path(), ONE_MODEL)).await;
    s.wait_for("m", 1, AVAILABLE).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut grpc = s.grpc.clone();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let (mut versions, mut failures) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let request = predict_request(
                    spec("m", None),
                    &[("text", strings(&["my head hurts", "the lazy dog"]))],
                );
                match grpc.predict(request).await {
                    Ok(r) => match r.into_inner().model_spec.unwrap().version_choice {
                        Some(VersionChoice::Version(v)) => versions.push(v),
                        other => failures.push(format!("no version: {other:?}")),
                    },
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (versions, failures)
        }));
    }
    let pause = || tokio::time::sleep(Duration::from_millis(300));
    pause().await;
    publish_tiny_bert(&base, 2, Kind::Embedding, 2);
    s.wait_for("m", 2, AVAILABLE).await;
    pause().await;
    publish_tiny_bert(&base, 3, Kind::Embedding, 3);
    s.wait_for("m", 3, AVAILABLE).await;
    pause().await;
    // A corrupt version 4 appears: it must fail alone.
    let tmp = base.join(".tmp-4");
    write_tiny_bert(&tmp, Kind::Embedding, 4);
    std::fs::write(
        tmp.join("model.safetensors"),
        b"this is not a safetensors file",
    )
    .unwrap();
    std::fs::rename(&tmp, base.join("4")).unwrap();
    let error = wait_failed(&mut s, "m", 4).await;
    pause().await;
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    for client in clients {
        let (versions, failures) = client.await.unwrap();
        assert!(
            failures.is_empty(),
            "failed requests during swaps: {failures:?}"
        );
        assert!(
            versions.windows(2).all(|w| w[0] <= w[1]),
            "a client went back to an older version: {versions:?}"
        );
        assert!(!versions.contains(&4));
        total += versions.len();
    }
    assert!(total > 100, "only {total} requests were made");
    assert!(error.starts_with("model.safetensors: "), "{error}");
    let end: Vec<(i64, i32)> = status_of(&mut s, "m")
        .await
        .into_iter()
        .map(|(v, st, _)| (v, st))
        .collect();
    assert_eq!(end, vec![(4, END), (3, AVAILABLE), (2, END), (1, END)]);
    assert_eq!(served_version(&mut s, "m").await, 3);
    s.stop().await;
}

#[tokio::test]
async fn a_folder_still_being_copied_is_retried_and_then_served() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("m");
    publish_tiny_bert(&base, 1, Kind::Embedding, 1);
    let mut s = TestServer::start(options(dir.path(), ONE_MODEL)).await;
    s.wait_for("m", 1, AVAILABLE).await;
    let v2 = partial_version(&base, 2, &["config.json"]);
    s.wait_for("m", 2, LOADING).await;
    assert_eq!(
        served_version(&mut s, "m").await,
        1,
        "version 1 serves while 2 is incomplete"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    complete_version(&v2, 2);
    s.wait_for("m", 2, AVAILABLE).await;
    assert_eq!(served_version(&mut s, "m").await, 2);
    s.stop().await;
}

#[tokio::test]
async fn retries_end_in_error_in_status_and_a_fixed_folder_is_loaded_again() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("m");
    publish_tiny_bert(&base, 1, Kind::Embedding, 1);
    let mut s = TestServer::start(options(dir.path(), ONE_MODEL)).await;
    s.wait_for("m", 1, AVAILABLE).await;
    let v2 = partial_version(&base, 2, &["config.json", "tokenizer.json"]);
    let error = wait_failed(&mut s, "m", 2).await;
    assert_eq!(error, "model.safetensors: missing");
    assert_eq!(served_version(&mut s, "m").await, 1);
    // Asking for the failed version says why it is not there.
    let e = s
        .grpc
        .predict(predict_request(
            spec("m", Some(2)),
            &[("text", strings(&["x"]))],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(
        e.message(),
        "model `m` version 2 failed to load: model.safetensors: missing; available versions: [1]"
    );
    // Its files change: the server tries again.
    complete_version(&v2, 2);
    s.wait_for("m", 2, AVAILABLE).await;
    assert_eq!(served_version(&mut s, "m").await, 2);
    s.stop().await;
}

#[tokio::test]
async fn broken_versions_fail_alone_with_the_real_cause() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("m");
    publish_tiny_bert(&base, 1, Kind::Embedding, 1);
    let mut s = TestServer::start(options(dir.path(), r#"model_config_list { config { name: "m" base_path: "m" model_version_policy { all {} } } }"#)).await;
    s.wait_for("m", 1, AVAILABLE).await;

    let good = tempfile::tempdir().unwrap();
    write_tiny_bert(good.path(), Kind::Embedding, 9);
    let weights = std::fs::read(good.path().join("model.safetensors")).unwrap();
    let publish = |version: i64, edit: &dyn Fn(&Path)| {
        let tmp = base.join(format!(".tmp-{version}"));
        write_tiny_bert(&tmp, Kind::Embedding, version as u64);
        edit(&tmp);
        std::fs::rename(&tmp, base.join(version.to_string())).unwrap();
    };
    publish(2, &|d| {
        std::fs::write(
            d.join("model.safetensors"),
            b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!",
        )
        .unwrap()
    });
    publish(3, &|d| {
        std::fs::write(d.join("model.safetensors"), &weights[..weights.len() / 2]).unwrap()
    });
    publish(4, &|d| {
        std::fs::remove_file(d.join("tokenizer.json")).unwrap()
    });
    publish(5, &|d| std::fs::remove_file(d.join("config.json")).unwrap());
    publish(6, &|d| {
        std::fs::write(
            d.join("config.json"),
            r#"{"architectures": ["GPT2LMHeadModel"]}"#,
        )
        .unwrap()
    });
    publish(7, &|d| {
        std::fs::write(d.join("tokenizer.json"), "{ not json").unwrap()
    });

    let mut errors = Vec::new();
    for v in 2..=7 {
        errors.push(wait_failed(&mut s, "m", v).await);
    }
    assert!(
        errors[0].starts_with("model.safetensors: "),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].starts_with("model.safetensors: "),
        "{}",
        errors[1]
    );
    assert_eq!(errors[2], "tokenizer.json: missing");
    assert_eq!(errors[3], "config.json: missing");
    assert_eq!(errors[4], "config.json: architecture `GPT2LMHeadModel` is not supported; this server loads BertModel, BertForSequenceClassification and BiLstmCrf");
    assert!(errors[5].starts_with("tokenizer.json: "), "{}", errors[5]);
    assert_eq!(served_version(&mut s, "m").await, 1);
    let states: Vec<(i64, i32)> = status_of(&mut s, "m")
        .await
        .into_iter()
        .map(|(v, st, _)| (v, st))
        .collect();
    assert_eq!(
        states,
        vec![
            (7, END),
            (6, END),
            (5, END),
            (4, END),
            (3, END),
            (2, END),
            (1, AVAILABLE)
        ]
    );
    s.stop().await;
}

#[tokio::test]
async fn a_folder_deleted_during_its_load_is_dropped_and_serving_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("m");
    publish_tiny_bert(&base, 1, Kind::Embedding, 1);
    let mut o = options(dir.path(), ONE_MODEL);
    o.manager.max_load_retries = 100;
    let mut s = TestServer::start(o).await;
    s.wait_for("m", 1, AVAILABLE).await;
    let v2 = partial_version(&base, 2, &["config.json"]);
    s.wait_for("m", 2, LOADING).await;
    std::fs::remove_dir_all(&v2).unwrap();
    s.wait_for("m", 2, END).await;
    assert_eq!(served_version(&mut s, "m").await, 1);
    let v1: Vec<(i64, i32)> = status_of(&mut s, "m")
        .await
        .into_iter()
        .filter(|(v, _, _)| *v == 1)
        .map(|(v, st, _)| (v, st))
        .collect();
    assert_eq!(v1, vec![(1, AVAILABLE)]);
    s.stop().await;
}

#[tokio::test]
async fn folders_that_are_not_versions_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("m");
    publish_tiny_bert(&base, 1, Kind::Embedding, 1);
    let mut s = TestServer::start(options(dir.path(), ONE_MODEL)).await;
    s.wait_for("m", 1, AVAILABLE).await;
    for odd in [
        "abc",
        ".5",
        "0",
        "007",
        "99999999999999999999",
        "3.bak",
        "-4",
    ] {
        write_tiny_bert(&base.join(odd), Kind::Embedding, 7);
    }
    std::fs::write(base.join("8"), b"a file named like a version").unwrap();
    // A real version arrives after the odd ones; the scan that finds it saw them all.
    publish_tiny_bert(&base, 2, Kind::Embedding, 2);
    s.wait_for("m", 2, AVAILABLE).await;
    s.wait_for("m", 1, END).await;
    let versions: Vec<i64> = status_of(&mut s, "m")
        .await
        .into_iter()
        .map(|(v, _, _)| v)
        .collect();
    assert_eq!(versions, vec![2, 1]);
    s.stop().await;
}

#[tokio::test]
async fn a_base_path_that_does_not_exist_yet_is_reported_and_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"model_config_list { config { name: "later" base_path: "not/yet/there" } }"#;
    let mut s = TestServer::start(options(dir.path(), config)).await;
    let missing = dir.path().join("not/yet/there");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let message = loop {
        let e = s
            .models
            .get_model_status(GetModelStatusRequest {
                model_spec: Some(spec("later", None)),
            })
            .await
            .unwrap_err();
        if e.message().contains("does not exist") || tokio::time::Instant::now() > deadline {
            break e.message().to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        message,
        format!(
            "model `later` has no versions: base path {} does not exist",
            missing.display()
        )
    );
    let e = s
        .grpc
        .predict(predict_request(
            spec("later", None),
            &[("text", strings(&["x"]))],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(
        e.message()
            .starts_with("model `later` has no version available: base path"),
        "{}",
        e.message()
    );
    publish_tiny_bert(&missing, 1, Kind::Embedding, 1);
    s.wait_for("later", 1, AVAILABLE).await;
    assert_eq!(served_version(&mut s, "later").await, 1);
    s.stop().await;
}

#[tokio::test]
async fn requests_in_flight_finish_on_their_version_which_is_then_released() {
    // Two versions of the real MiniLM (files linked, not copied), so a request is slow
    // enough to be in flight across the swap.
    let minilm = minilm_dir();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("m");
    let link_version = |v: i64| {
        let tmp = base.join(format!(".tmp-{v}"));
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
        std::fs::rename(&tmp, base.join(v.to_string())).unwrap();
    };
    link_version(1);
    let mut s = TestServer::start(options(dir.path(), ONE_MODEL)).await;
    s.wait_for("m", 1, AVAILABLE).await;

    let long = std::fs::read_to_string(repo_root().join("data/bench/long.txt")).unwrap();
    let texts: Vec<&str> = long.lines().cycle().take(192).collect();
    let request = predict_request(spec("m", None), &[("text", strings(&texts))]);
    let mut grpc = s.grpc.clone();
    let in_flight = tokio::spawn(async move { grpc.predict(request).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    link_version(2);
    s.wait_for("m", 2, AVAILABLE).await;
    let during: Vec<(i64, i32)> = status_of(&mut s, "m")
        .await
        .into_iter()
        .map(|(v, st, _)| (v, st))
        .collect();
    let response = in_flight
        .await
        .unwrap()
        .expect("the request in flight succeeds")
        .into_inner();
    assert_eq!(
        response.model_spec.unwrap().version_choice,
        Some(VersionChoice::Version(1)),
        "it finished on the version it started on"
    );
    assert_eq!(
        during,
        vec![(2, AVAILABLE), (1, 40)],
        "version 1 was UNLOADING while its request ran"
    );
    // END is only reported once the last reference is gone, i.e. its memory is released.
    s.wait_for("m", 1, END).await;
    assert_eq!(served_version(&mut s, "m").await, 2);
    s.stop().await;
}

/// A writer that rewrites `model.safetensors` in place (truncate, then write it back in two
/// halves) while the version loads over and over: each load ends in a servable or a clean
/// error, never in SIGBUS, because weights are read into memory rather than mapped. With a
/// mapping, a truncation during the copy kills the whole process.
#[test]
fn a_weights_file_rewritten_in_place_during_loads_never_kills_the_server() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let version = dir.path().join("1");
    write_tiny_bert(&version, Kind::Embedding, 7);
    let weights = version.join("model.safetensors");
    let original = std::fs::read(&weights).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let rewrites = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let writer = {
        let (stop, rewrites) = (stop.clone(), rewrites.clone());
        let (weights, original) = (weights.clone(), original.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut file = std::fs::File::create(&weights).unwrap();
                let half = original.len() / 2;
                file.write_all(&original[..half]).unwrap();
                file.write_all(&original[half..]).unwrap();
                rewrites.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Load until the file has been rewritten many times under the loads.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (mut loaded, mut refused) = (0u32, 0u32);
    while loaded + refused < 300 || rewrites.load(Ordering::Relaxed) < 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never got going"
        );
        match candle_serving::models::load_servable(&version) {
            Ok(_) => loaded += 1,
            Err(e) => {
                assert!(e.to_string().starts_with("model.safetensors"), "{e}");
                refused += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    std::fs::write(&weights, &original).unwrap();
    candle_serving::models::load_servable(&version).expect("the finished file loads");
}
