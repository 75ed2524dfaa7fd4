//! Why a request or a status query found nothing: the error texts that name the model, the
//! version and the real cause ("version 3 failed to load: tokenizer.json: missing") instead
//! of TF Serving's bare "Servable not found". Read-only over the manager's state; every
//! "not served here" message is written here and nowhere else.

use std::collections::BTreeMap;

use super::reconcile::{ModelState, VersionState};
use super::VersionChoice;
use crate::error::{Code, ServingError};

/// The model is not configured.
pub(super) fn not_served(model: &str, models: &BTreeMap<String, ModelState>) -> ServingError {
    let known: Vec<&str> = models.keys().map(String::as_str).collect();
    ServingError::not_found(format!(
        "model `{model}` is not served here; served models: {}",
        if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        }
    ))
}

/// Why `choice` of `model` does not resolve to a serving version.
pub(super) fn unresolved(
    model: &str,
    choice: &VersionChoice,
    models: &BTreeMap<String, ModelState>,
) -> ServingError {
    let Some(m) = models.get(model) else {
        return not_served(model, models);
    };
    let available = m.available();
    let available_text = if available.is_empty() {
        "none".to_string()
    } else {
        format!("{available:?}")
    };
    match choice {
        VersionChoice::Latest => {
            let loading = m
                .versions
                .values()
                .any(|e| e.state() == VersionState::Loading);
            ServingError::new(
                if loading {
                    Code::Unavailable
                } else {
                    Code::NotFound
                },
                format!(
                    "model `{model}` has no version available: {}",
                    m.why_unavailable()
                ),
            )
        }
        VersionChoice::Number(v) => {
            let (code, why) = version_problem(m, *v);
            ServingError::new(
                code,
                format!("model `{model}` {why}; available versions: {available_text}"),
            )
        }
        VersionChoice::Label(label) => match m.def.labels.get(label) {
            None => no_such_label(model, label, m),
            Some(v) => {
                let (code, why) = version_problem(m, *v);
                ServingError::new(
                    code,
                    format!("model `{model}` version label `{label}` points at version {v}, which is not available: {why}; available versions: {available_text}"),
                )
            }
        },
    }
}

/// The label is not defined for the model.
pub(super) fn no_such_label(model: &str, label: &str, m: &ModelState) -> ServingError {
    let labels: Vec<String> = m
        .def
        .labels
        .iter()
        .map(|(l, v)| format!("{l} → {v}"))
        .collect();
    ServingError::invalid_argument(format!(
        "model `{model}` has no version label `{label}`; its labels: {}",
        if labels.is_empty() {
            "none".into()
        } else {
            labels.join(", ")
        }
    ))
}

/// Why one version of a configured model does not serve, with the code that fits: still
/// loading is UNAVAILABLE (retry), anything else NOT_FOUND.
fn version_problem(m: &ModelState, version: i64) -> (Code, String) {
    match m.versions.get(&version) {
        Some(e) if e.state() == VersionState::Loading => (
            Code::Unavailable,
            format!("version {version} {}", e.describe()),
        ),
        Some(e) => (
            Code::NotFound,
            format!("version {version} {}", e.describe()),
        ),
        None if m.on_disk().is_some_and(|d| d.contains_key(&version)) => (
            Code::NotFound,
            format!("version {version} is on disk but the version policy does not serve it"),
        ),
        None => (Code::NotFound, format!("version {version} does not exist")),
    }
}
