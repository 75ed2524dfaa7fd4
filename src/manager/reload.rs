//! HandleReloadConfigRequest: the configuration changes as a whole or not at all. The
//! versions the new configuration needs load beside what serves ("staged"), the labels are
//! checked against what would then be available, and only then does one commit add, remove
//! and change models and labels, published as one snapshot. This module must not touch a
//! version that serves before the commit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::handle::LoadedVersion;
use super::reconcile::{LoadJob, ModelState, Phase, VersionEntry, VersionState};
use super::{watch_list, watched, Manager, State};
use crate::config::ModelsConfig;
use crate::error::ServingError;
use crate::source::{Scan, WatchedModel};

/// A load started by a ReloadConfig that has not committed yet.
pub(super) struct Staged {
    model: String,
    version: i64,
    fingerprint: u64,
    cancel: Arc<AtomicBool>,
    /// `None` while loading.
    pub(super) result: Option<Result<Arc<LoadedVersion>, String>>,
}

impl Manager {
    /// Replaces the configuration with `new`, waiting at most `wait` for the versions it
    /// needs. Calls are serialised. Returns a summary of what changed.
    pub async fn reload(
        self: &Arc<Self>,
        new: ModelsConfig,
        wait: Duration,
    ) -> Result<String, ServingError> {
        let _serial = self.reload_lock.lock().await;
        let deadline = Instant::now() + wait;
        let scans = self.scan_new_base_paths(&new).await?;
        let staged = self.stage_loads(&new, &scans);
        let settled = self.wait_for_staged(&new, &staged, deadline).await;
        let summary = self.commit(&new, &scans, &staged, settled)?;
        tracing::info!(summary = %summary, "config reloaded");
        self.notify_changed();
        Ok(summary)
    }

    /// Models that are new, or moved to another base path, start from a fresh scan.
    async fn scan_new_base_paths(
        &self,
        new: &ModelsConfig,
    ) -> Result<HashMap<String, Scan>, ServingError> {
        let fresh: Vec<WatchedModel> = {
            let st = self.state.lock();
            new.models
                .iter()
                .filter(|d| {
                    st.models
                        .get(&d.name)
                        .is_none_or(|m| m.def.base_path != d.base_path)
                })
                .map(|d| watched(d, &self.options.model_cache_dir))
                .collect()
        };
        tokio::task::spawn_blocking(move || {
            fresh
                .into_iter()
                .map(|m| (m.name.clone(), m.scan()))
                .collect()
        })
        .await
        .map_err(|e| ServingError::internal(format!("scanning the new base paths failed: {e}")))
    }

    /// Starts the loads the new config needs, without publishing anything. Returns their ids.
    fn stage_loads(
        self: &Arc<Self>,
        new: &ModelsConfig,
        scans: &HashMap<String, Scan>,
    ) -> Vec<u64> {
        let mut st = self.state.lock();
        let mut ids = Vec::new();
        let mut jobs = Vec::new();
        for def in &new.models {
            let current = if scans.contains_key(&def.name) {
                None
            } else {
                st.models.get(&def.name)
            };
            let preview = preview(def.clone(), scans.get(&def.name), current);
            let needed: Vec<i64> = preview
                .aspired()
                .into_iter()
                .filter(|version| {
                    !current
                        .and_then(|m| m.versions.get(version))
                        .is_some_and(|e| {
                            matches!(e.phase, Phase::Available(_) | Phase::Loading { .. })
                        })
                })
                .collect();
            for version in needed {
                let dir =
                    preview.on_disk().expect("aspired versions are on disk")[&version].clone();
                st.next_id += 1;
                let id = st.next_id;
                let cancel = Arc::new(AtomicBool::new(false));
                st.staged.insert(
                    id,
                    Staged {
                        model: def.name.clone(),
                        version,
                        fingerprint: dir.fingerprint,
                        cancel: cancel.clone(),
                        result: None,
                    },
                );
                ids.push(id);
                jobs.push(LoadJob {
                    model: def.name.clone(),
                    version,
                    path: dir.path,
                    id,
                    cancel,
                });
            }
        }
        drop(st);
        self.spawn_loads(jobs);
        ids
    }

    /// Waits for the staged loads, and for labelled versions that are loading already.
    async fn wait_for_staged(&self, new: &ModelsConfig, staged: &[u64], deadline: Instant) -> bool {
        let labelled: Vec<(String, i64)> = new
            .models
            .iter()
            .flat_map(|d| d.labels.values().map(move |v| (d.name.clone(), *v)))
            .collect();
        self.wait_until(deadline, |st| {
            staged
                .iter()
                .all(|id| st.staged.get(id).is_none_or(|s| s.result.is_some()))
                && labelled.iter().all(|(m, v)| {
                    st.models
                        .get(m)
                        .and_then(|m| m.versions.get(v))
                        .is_none_or(|e| e.state() != VersionState::Loading)
                })
        })
        .await
    }

    /// Checks the labels and, if they hold, applies `new` and publishes once; otherwise
    /// cancels the staged loads and changes nothing.
    fn commit(
        self: &Arc<Self>,
        new: &ModelsConfig,
        scans: &HashMap<String, Scan>,
        staged: &[u64],
        settled: bool,
    ) -> Result<String, ServingError> {
        let mut st = self.state.lock();
        if !self.options.allow_labels_for_unavailable {
            let problems = label_problems(&st, new, scans, staged);
            if !problems.is_empty() {
                let discarded: Vec<Arc<LoadedVersion>> = staged
                    .iter()
                    .filter_map(|id| st.staged.remove(id))
                    .filter_map(|s| {
                        s.cancel.store(true, Ordering::Release);
                        s.result.and_then(Result::ok)
                    })
                    .collect();
                drop(st);
                drop(discarded);
                return Err(ServingError::failed_precondition(format!(
                    "{}; the configuration was not changed (labels may only point at AVAILABLE versions unless --allow_version_labels_for_unavailable_models is set)",
                    problems.join("; ")
                )));
            }
        }
        let removed = remove_replaced_models(&mut st, new, scans);
        let (added, changed) = add_or_update_models(&mut st, new, scans);
        adopt_staged(&mut st, staged);
        let names: Vec<String> = st.models.keys().cloned().collect();
        let loads: Vec<LoadJob> = names
            .iter()
            .flat_map(|name| Self::reconcile_model(&mut st, name))
            .collect();
        self.publish(&st);
        self.spawn_loads(loads);
        self.watched
            .send_replace(watch_list(new, &self.options.model_cache_dir));
        Ok(summarize(&st, &added, &removed, &changed, settled))
    }
}

/// The model as `def` would make it: the fresh scan, or the current disk and failures.
fn preview(
    def: crate::config::ModelDef,
    scan: Option<&Scan>,
    current: Option<&ModelState>,
) -> ModelState {
    let mut preview = ModelState::new(def);
    match (scan, current) {
        (Some(scan), _) => preview.disk = Some(scan.clone()),
        (None, Some(current)) => {
            preview.disk = current.disk.clone();
            for (v, e) in &current.versions {
                if let Phase::Failed(msg) = &e.phase {
                    preview.versions.insert(
                        *v,
                        VersionEntry {
                            phase: Phase::Failed(msg.clone()),
                            fingerprint: e.fingerprint,
                            since: e.since,
                        },
                    );
                }
            }
        }
        (None, None) => unreachable!("new models are always scanned"),
    }
    preview
}

/// Drops models that leave the config or move to another base path. Returns the names of
/// those that left.
fn remove_replaced_models(
    st: &mut State,
    new: &ModelsConfig,
    scans: &HashMap<String, Scan>,
) -> Vec<String> {
    let mut removed = Vec::new();
    let names: Vec<String> = st.models.keys().cloned().collect();
    for name in names {
        let keep = new.get(&name).is_some_and(|d| !scans.contains_key(&d.name));
        if keep {
            continue;
        }
        if let Some(old) = st.models.remove(&name) {
            for (v, e) in old.versions {
                if let Phase::Loading { cancel, .. } = &e.phase {
                    cancel.store(true, Ordering::Release);
                }
                tracing::info!(model = %name, version = v, "unloading: model removed from the config");
            }
        }
        if new.get(&name).is_none() {
            removed.push(name);
        }
    }
    removed
}

/// Adds new models and updates the definitions of the others. Returns (added, changed).
fn add_or_update_models(
    st: &mut State,
    new: &ModelsConfig,
    scans: &HashMap<String, Scan>,
) -> (Vec<String>, Vec<String>) {
    let (mut added, mut changed) = (Vec::new(), Vec::new());
    for def in &new.models {
        let is_new = !st.models.contains_key(&def.name);
        let m = st
            .models
            .entry(def.name.clone())
            .or_insert_with(|| ModelState::new(def.clone()));
        if is_new {
            m.disk = scans.get(&def.name).cloned();
            added.push(def.name.clone());
        } else if m.def != *def {
            changed.push(def.name.clone());
            if m.def.labels != def.labels {
                tracing::info!(model = %def.name, labels = ?def.labels, "version labels changed");
            }
        }
        m.def = def.clone();
    }
    (added, changed)
}

/// Moves the staged loads into their models' versions, finished or still loading.
fn adopt_staged(st: &mut State, staged: &[u64]) {
    for id in staged {
        let Some(s) = st.staged.remove(id) else {
            continue;
        };
        let Some(m) = st.models.get_mut(&s.model) else {
            continue;
        };
        let phase = match s.result {
            Some(Ok(loaded)) => Phase::Available(loaded),
            Some(Err(e)) => Phase::Failed(e),
            None => Phase::Loading {
                id: *id,
                cancel: s.cancel,
                retrying: None,
            },
        };
        m.versions.insert(
            s.version,
            VersionEntry {
                phase,
                fingerprint: s.fingerprint,
                since: Instant::now(),
            },
        );
    }
}

/// Labels of `new` that would not point at an AVAILABLE version after the reload.
fn label_problems(
    st: &State,
    new: &ModelsConfig,
    scans: &HashMap<String, Scan>,
    staged: &[u64],
) -> Vec<String> {
    let mut problems = Vec::new();
    for def in &new.models {
        let current = if scans.contains_key(&def.name) {
            None
        } else {
            st.models.get(&def.name)
        };
        let staged_version = |v: i64| {
            staged
                .iter()
                .filter_map(|id| st.staged.get(id))
                .find(|s| s.model == def.name && s.version == v)
        };
        for (label, &v) in &def.labels {
            let serving = current
                .and_then(|m| m.versions.get(&v))
                .is_some_and(|e| e.state() == VersionState::Available);
            let staged_ok = staged_version(v).is_some_and(|s| matches!(s.result, Some(Ok(_))));
            if serving || staged_ok {
                continue;
            }
            let why = current
                .and_then(|m| m.versions.get(&v))
                .map(|e| format!("version {v} {}", e.describe()))
                .or_else(|| {
                    staged_version(v).map(|s| match &s.result {
                        Some(Err(e)) => format!("version {v} failed to load: {e}"),
                        _ => format!("version {v} is still loading"),
                    })
                })
                .unwrap_or_else(|| format!("version {v} is not on disk under {}", def.base_path));
            problems.push(format!("model `{}` label `{label}` → {v}: {why}", def.name));
        }
    }
    problems
}

fn summarize(
    st: &State,
    added: &[String],
    removed: &[String],
    changed: &[String],
    settled: bool,
) -> String {
    let mut parts = Vec::new();
    for (what, names) in [("added", added), ("removed", removed), ("changed", changed)] {
        if !names.is_empty() {
            parts.push(format!("{what} {}", names.join(", ")));
        }
    }
    if parts.is_empty() {
        parts.push("no model changed".into());
    }
    let serving: Vec<String> = st
        .models
        .iter()
        .map(|(n, m)| {
            let a = m.available();
            if a.is_empty() {
                format!("{n} (none yet: {})", m.why_unavailable())
            } else {
                format!("{n} {a:?}")
            }
        })
        .collect();
    let mut text = format!("{}; serving: {}", parts.join("; "), serving.join(", "));
    if !settled {
        text.push_str("; some versions are still loading");
    }
    text
}
