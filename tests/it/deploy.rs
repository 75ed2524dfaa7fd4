//! The deployment artefacts of deploy/, validated without a cluster: the Kubernetes manifests
//! against the strict Kubernetes schemas (kubernetes-validate) and the ServiceMonitor against
//! prometheus-operator's (scripts/validate_manifests.py; venv and npm packages by
//! scripts/setup_validators.sh, which the test command runs), the systemd unit with
//! systemd-analyze; a broken copy of each kind is refused by its path, so the check can fail;
//! and the models.config the ConfigMap carries is one this server accepts.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_serving::config::ModelsConfig;
use common::repo_root;

fn python() -> PathBuf {
    let p = repo_root().join(".cache/venv-validate/bin/python");
    assert!(
        p.is_file(),
        "no validator venv: run scripts/setup_validators.sh (the test command does)"
    );
    p
}

fn validate(files: &[PathBuf]) -> (Option<i32>, String) {
    let out = Command::new(python())
        .arg(repo_root().join("scripts/validate_manifests.py"))
        .args(files)
        .output()
        .expect("python runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

fn deploy(path: &str) -> PathBuf {
    repo_root().join("deploy").join(path)
}

/// A copy of `file` in its own folder under `dir`, with `from` replaced by `to` (which must
/// occur).
fn broken(dir: &Path, file: &Path, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} has no `{from}`", file.display());
    let folder = dir.join(to.replace(['/', ' ', '"', ':'], "_"));
    std::fs::create_dir_all(&folder).unwrap();
    let copy = folder.join(file.file_name().unwrap());
    std::fs::write(&copy, text.replacen(from, to, 1)).unwrap();
    copy
}

#[test]
fn the_manifests_and_the_unit_pass_their_schemas_and_broken_copies_do_not() {
    let files = [
        deploy("kubernetes/model-server.yaml"),
        deploy("kubernetes/doctor.yaml"),
        deploy("kubernetes/redis.yaml"),
        deploy("kubernetes/kustomization.yaml"),
        deploy("systemd/candle-model-server.service"),
    ];
    let (code, out) = validate(&files);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.matches("OK ").count(), files.len(), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            broken(dir.path(), &files[0], "readinessProbe:", "readinesProbe:"),
            "Deployment/candle-model-server: spec.template.spec.containers[0].readinesProbe: unknown field",
        ),
        (
            broken(dir.path(), &files[0], "port: 8500", "port: \"8500\""),
            "Service/candle-model-server: spec.ports[0].port",
        ),
        (
            broken(
                dir.path(),
                &files[0],
                "path: /monitoring/prometheus/metrics",
                "pathh: /monitoring/prometheus/metrics",
            ),
            "ServiceMonitor/candle-model-server: spec.endpoints[0].pathh: unknown field",
        ),
        (
            broken(dir.path(), &files[4], "Restart=on-failure", "Restart=on-failur"),
            "restart specifier",
        ),
    ];
    for (copy, expected) in cases {
        let (code, out) = validate(std::slice::from_ref(&copy));
        assert_eq!(code, Some(1), "{} passed:\n{out}", copy.display());
        assert!(out.contains(expected), "{}:\n{out}", copy.display());
        std::fs::remove_file(copy).unwrap();
    }
}

/// The ConfigMap's models.config parses as the server would read it, with the shipped models.
#[test]
fn the_configmap_holds_a_models_config_the_server_accepts() {
    let out = Command::new(python())
        .arg("-c")
        .arg(
            "import sys, yaml\n\
             for d in yaml.safe_load_all(open(sys.argv[1])):\n\
             \x20   if d and d.get('kind') == 'ConfigMap' and d['metadata']['name'] == 'candle-models':\n\
             \x20       sys.stdout.write(d['data']['models.config'])",
        )
        .arg(deploy("kubernetes/model-server.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.is_empty(), "no candle-models ConfigMap");
    let config = ModelsConfig::from_text(&text, Path::new("/etc/candle"), "the ConfigMap")
        .unwrap_or_else(|e| panic!("{e}"));
    let shipped = ModelsConfig::from_file(&repo_root().join("models.config")).unwrap();
    let names =
        |c: &ModelsConfig| -> Vec<String> { c.models.iter().map(|m| m.name.clone()).collect() };
    assert_eq!(names(&config), names(&shipped));
    for m in &config.models {
        assert_eq!(
            m.base_path.to_string(),
            format!("s3://candle-models/{}", m.name),
            "{}",
            m.name
        );
    }
}
