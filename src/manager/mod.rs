//! The Manager: owns every model's versions. It applies the version policy to what the
//! source finds on disk, loads versions on its own worker pool, and publishes an immutable
//! [`Snapshot`] of what serves through `ArcSwap`, so a request resolves its servable without
//! taking a lock and holds it (an `Arc`) only for the length of the request. Loads happen
//! before unloads; a failed load is recorded and never disturbs a version that serves.
//!
//! It does not know about transports, protos or tensors.

mod state;

pub use state::{Loaded, VersionState};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use self::state::{Changes, LoadJob, ModelState, Phase, VersionEntry};
use crate::config::ModelsConfig;
use crate::error::{Code, ServingError};
use crate::metrics::Metrics;
use crate::models::{self, LoadError};
use crate::pool::WorkerPool;
use crate::servable::Servable;
use crate::source::{self, Scan};

/// Settings of the manager, from the server's flags.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// `--max_num_load_retries`: attempts after the first failure.
    pub max_load_retries: u32,
    /// `--load_retry_interval_micros`.
    pub load_retry_interval: Duration,
    /// `--allow_version_labels_for_unavailable_models`.
    pub allow_labels_for_unavailable: bool,
    /// Threads of the load pool.
    pub load_threads: usize,
    /// `--int8_models`: models whose versions load with 8-bit dense layers.
    pub int8_models: BTreeSet<String>,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            max_load_retries: 5,
            load_retry_interval: Duration::from_secs(1),
            allow_labels_for_unavailable: false,
            load_threads: 2,
            int8_models: BTreeSet::new(),
        }
    }
}

/// Which version a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionChoice {
    /// The highest available version.
    Latest,
    Number(i64),
    Label(String),
}

impl std::fmt::Display for VersionChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionChoice::Latest => write!(f, "latest version"),
            VersionChoice::Number(v) => write!(f, "version {v}"),
            VersionChoice::Label(l) => write!(f, "version label `{l}`"),
        }
    }
}

/// What serves right now. Never mutated: a change publishes a new snapshot.
#[derive(Default)]
pub struct Snapshot {
    models: HashMap<String, ServingModel>,
}

#[derive(Default)]
struct ServingModel {
    versions: BTreeMap<i64, Arc<Loaded>>,
    labels: BTreeMap<String, i64>,
}

/// One version's line in a status report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionStatus {
    pub version: i64,
    pub state: VersionState,
    /// Why the version ended in error; `None` when all is well.
    pub error: Option<String>,
}

/// Whether a model can serve, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelReadiness {
    pub model: String,
    pub available_versions: Vec<i64>,
    /// `None` when the model serves.
    pub problem: Option<String>,
}

struct State {
    models: BTreeMap<String, ModelState>,
    /// Loads started by a ReloadConfig that has not committed yet, by load id.
    staged: HashMap<u64, Staged>,
    next_id: u64,
}

struct Staged {
    model: String,
    version: i64,
    fingerprint: u64,
    cancel: Arc<AtomicBool>,
    /// `None` while loading.
    result: Option<Result<Arc<Loaded>, String>>,
}

pub struct Manager {
    serving: ArcSwap<Snapshot>,
    state: Mutex<State>,
    options: ManagerOptions,
    loads: WorkerPool,
    /// Told when the last request of an unloaded version lets go of it.
    dropped: mpsc::UnboundedSender<(String, i64, u64)>,
    /// Bumped on every state change; waiters watch it.
    changes: watch::Sender<u64>,
    /// The (name, base path) of every model, for the source.
    watched: watch::Sender<Vec<(String, PathBuf)>>,
    reload_lock: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

impl Manager {
    /// Creates the manager serving `config`. Nothing loads until the source reports what is
    /// on disk ([`Manager::on_scan`]); [`Manager::watch_list`] tells the source where to look.
    /// Must be called inside a tokio runtime.
    pub fn new(
        config: &ModelsConfig,
        options: ManagerOptions,
        metrics: Arc<Metrics>,
    ) -> Arc<Manager> {
        let (dropped, mut dropped_rx) = mpsc::unbounded_channel();
        let models = config
            .models
            .iter()
            .map(|d| (d.name.clone(), ModelState::new(d.clone())))
            .collect();
        let manager = Arc::new(Manager {
            serving: ArcSwap::from_pointee(Snapshot::default()),
            state: Mutex::new(State {
                models,
                staged: HashMap::new(),
                next_id: 0,
            }),
            loads: WorkerPool::new("model-load", options.load_threads, usize::MAX),
            options,
            dropped,
            changes: watch::channel(0).0,
            watched: watch::channel(watch_list(config)).0,
            reload_lock: tokio::sync::Mutex::new(()),
            metrics,
        });
        manager.publish(&manager.state.lock());
        let weak = Arc::downgrade(&manager);
        tokio::spawn(async move {
            while let Some((model, version, id)) = dropped_rx.recv().await {
                let Some(manager) = weak.upgrade() else {
                    return;
                };
                manager.on_dropped(&model, version, id);
            }
        });
        manager
    }

    /// The model list for the source; it changes when a reload adds or removes models.
    pub fn watch_list(&self) -> watch::Receiver<Vec<(String, PathBuf)>> {
        self.watched.subscribe()
    }

    /// A receiver that changes whenever any version changes state.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    fn publish(&self, st: &State) {
        let models = st
            .models
            .iter()
            .map(|(name, m)| {
                let versions = m
                    .versions
                    .iter()
                    .filter_map(|(v, e)| e.loaded().map(|l| (*v, l.clone())))
                    .collect();
                (
                    name.clone(),
                    ServingModel {
                        versions,
                        labels: m.def.labels.clone(),
                    },
                )
            })
            .collect();
        self.serving.store(Arc::new(Snapshot { models }));
    }

    /// Reconciles one model, publishes, and starts the loads it asked for.
    fn apply(self: &Arc<Self>, st: &mut State, model: &str) {
        let State {
            models, next_id, ..
        } = st;
        let Some(m) = models.get_mut(model) else {
            return;
        };
        let changes = m.reconcile(next_id);
        log_changes(model, &changes);
        self.publish(st);
        self.spawn_loads(changes.loads);
    }

    /// The source found `scan` under `model`'s base path.
    pub fn on_scan(self: &Arc<Self>, model: &str, scan: Scan) {
        {
            let mut st = self.state.lock();
            let Some(m) = st.models.get_mut(model) else {
                return;
            };
            if m.disk.as_ref() == Some(&scan) {
                return;
            }
            match &scan {
                Scan::Unavailable(why) => tracing::warn!(model, "{why}; waiting for it to appear"),
                Scan::Versions(found) => {
                    let before: BTreeSet<i64> = m
                        .on_disk()
                        .map(|d| d.keys().copied().collect())
                        .unwrap_or_default();
                    let now: BTreeSet<i64> = found.keys().copied().collect();
                    if before != now {
                        tracing::info!(model, versions = ?now, "version folders on disk");
                    }
                }
            }
            m.disk = Some(scan);
            self.apply(&mut st, model);
        }
        self.bump();
    }

    fn spawn_loads(self: &Arc<Self>, jobs: Vec<LoadJob>) {
        for job in jobs {
            let manager = self.clone();
            tokio::spawn(async move { manager.load(job).await });
        }
    }

    /// Loads one version on the load pool, retrying as the flags say, then records the result.
    async fn load(self: Arc<Self>, job: LoadJob) {
        let started = Instant::now();
        let mut attempt = 0;
        let result = loop {
            if job.cancel.load(Ordering::Acquire) {
                break Err("the load was cancelled: the version is no longer wanted".to_string());
            }
            let path = job.path.clone();
            let options = models::LoadOptions {
                int8: self.options.int8_models.contains(&job.model),
            };
            let load = move || models::load_servable_with(&path, &options);
            let outcome = match self.loads.run(load).await {
                Ok(outcome) => outcome,
                Err(e) => Err(LoadError::invalid("loader", e.to_string())),
            };
            match outcome {
                Ok(servable) => break Ok(servable),
                Err(e) => {
                    let last = attempt >= self.options.max_load_retries
                        || matches!(e, LoadError::FolderGone(_));
                    if last {
                        break Err(e.to_string());
                    }
                    attempt += 1;
                    tracing::warn!(
                        model = %job.model, version = job.version, attempt, error = %e,
                        "load failed; retrying in {:?}", self.options.load_retry_interval
                    );
                    self.note_retry(&job, e.to_string());
                    tokio::time::sleep(self.options.load_retry_interval).await;
                }
            }
        };
        self.finish_load(job, result, started.elapsed());
    }

    fn note_retry(&self, job: &LoadJob, error: String) {
        let mut st = self.state.lock();
        if let Some(VersionEntry {
            phase: Phase::Loading { id, retrying, .. },
            ..
        }) = st
            .models
            .get_mut(&job.model)
            .and_then(|m| m.versions.get_mut(&job.version))
        {
            if *id == job.id {
                *retrying = Some(error);
            }
        }
    }

    fn wrap(self: &Arc<Self>, job: &LoadJob, servable: Arc<dyn Servable>) -> Arc<Loaded> {
        let dropped = self.dropped.clone();
        Arc::new(Loaded::new(
            &job.model,
            job.version,
            job.id,
            servable,
            Some(Box::new(move |model, version, id| {
                let _ = dropped.send((model.to_string(), version, id));
            })),
        ))
    }

    fn finish_load(
        self: &Arc<Self>,
        job: LoadJob,
        result: Result<Arc<dyn Servable>, String>,
        took: Duration,
    ) {
        let ms = took.as_millis() as u64;
        if !job.cancel.load(Ordering::Acquire) {
            self.metrics
                .load(&job.model, job.version, result.is_ok(), took);
        }
        let result = result.map(|s| self.wrap(&job, s));
        match &result {
            Ok(loaded) => tracing::info!(
                model = %job.model, version = job.version, kind = loaded.servable().kind(), ms,
                "loaded"
            ),
            Err(e) => {
                tracing::error!(model = %job.model, version = job.version, ms, error = %e, "load failed")
            }
        }
        let mut discarded = None;
        {
            let mut st = self.state.lock();
            if let Some(staged) = st.staged.get_mut(&job.id) {
                staged.result = Some(result);
            } else {
                let entry = st
                    .models
                    .get_mut(&job.model)
                    .and_then(|m| m.versions.get_mut(&job.version))
                    .filter(|e| matches!(e.phase, Phase::Loading { id, .. } if id == job.id));
                match entry {
                    Some(entry) => {
                        entry.phase = match result {
                            Ok(loaded) => Phase::Available(loaded),
                            Err(e) => Phase::Failed(e),
                        };
                        entry.since = Instant::now();
                        self.apply(&mut st, &job.model);
                    }
                    None => {
                        tracing::info!(model = %job.model, version = job.version, "load finished after the version stopped being wanted; discarded");
                        discarded = Some(result);
                    }
                }
            }
        }
        drop(discarded);
        self.bump();
    }

    fn on_dropped(&self, model: &str, version: i64, id: u64) {
        {
            let mut st = self.state.lock();
            if let Some(entry) = st
                .models
                .get_mut(model)
                .and_then(|m| m.versions.get_mut(&version))
            {
                if matches!(entry.phase, Phase::Unloading { id: i } if i == id) {
                    let drained = entry.since.elapsed().as_millis() as u64;
                    entry.phase = Phase::Unloaded;
                    entry.since = Instant::now();
                    tracing::info!(model, version, drained_ms = drained, "unloaded");
                    release_freed_memory();
                }
            } else {
                tracing::info!(model, version, "unloaded (model removed from the config)");
            }
        }
        self.bump();
    }

    /// The servable for a request, without a lock. The error names the model and explains
    /// what is there instead.
    pub fn resolve(
        &self,
        model: &str,
        choice: &VersionChoice,
    ) -> Result<Arc<Loaded>, ServingError> {
        let snapshot = self.serving.load();
        if let Some(m) = snapshot.models.get(model) {
            let found = match choice {
                VersionChoice::Latest => m.versions.values().next_back(),
                VersionChoice::Number(v) => m.versions.get(v),
                VersionChoice::Label(l) => m.labels.get(l).and_then(|v| m.versions.get(v)),
            };
            if let Some(loaded) = found {
                return Ok(loaded.clone());
            }
        }
        Err(self.explain_unresolved(model, choice))
    }

    fn explain_unresolved(&self, model: &str, choice: &VersionChoice) -> ServingError {
        let st = self.state.lock();
        let Some(m) = st.models.get(model) else {
            let known: Vec<&str> = st.models.keys().map(String::as_str).collect();
            return ServingError::not_found(format!(
                "model `{model}` is not served here; served models: {}",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ));
        };
        let available = m.available();
        let available_text = if available.is_empty() {
            "none".to_string()
        } else {
            format!("{available:?}")
        };
        let about = |version: i64| -> (Code, String) {
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
                    format!(
                        "version {version} is on disk but the version policy does not serve it"
                    ),
                ),
                None => (Code::NotFound, format!("version {version} does not exist")),
            }
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
                let (code, why) = about(*v);
                ServingError::new(
                    code,
                    format!("model `{model}` {why}; available versions: {available_text}"),
                )
            }
            VersionChoice::Label(label) => match m.def.labels.get(label) {
                None => {
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
                Some(v) => {
                    let (code, why) = about(*v);
                    ServingError::new(
                        code,
                        format!("model `{model}` version label `{label}` points at version {v}, which is not available: {why}; available versions: {available_text}"),
                    )
                }
            },
        }
    }

    /// GetModelStatus: every version the manager knows of (newest first), or one.
    pub fn status(
        &self,
        model: &str,
        version: Option<i64>,
    ) -> Result<Vec<VersionStatus>, ServingError> {
        let st = self.state.lock();
        let Some(m) = st.models.get(model) else {
            let known: Vec<&str> = st.models.keys().map(String::as_str).collect();
            return Err(ServingError::not_found(format!(
                "model `{model}` is not served here; served models: {}",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )));
        };
        let line = |(v, e): (&i64, &VersionEntry)| VersionStatus {
            version: *v,
            state: e.state(),
            error: e.error().map(str::to_string),
        };
        match version {
            Some(v) => m
                .versions
                .get_key_value(&v)
                .map(|kv| vec![line(kv)])
                .ok_or_else(|| {
                    ServingError::not_found(format!(
                        "model `{model}` has no version {v}; known versions: {:?}",
                        m.versions.keys().collect::<Vec<_>>()
                    ))
                }),
            None if m.versions.is_empty() => Err(ServingError::not_found(format!(
                "model `{model}` has no versions: {}",
                m.why_unavailable()
            ))),
            None => Ok(m.versions.iter().rev().map(line).collect()),
        }
    }

    /// Per model: which versions serve, or why none does.
    pub fn readiness(&self) -> Vec<ModelReadiness> {
        let st = self.state.lock();
        st.models
            .iter()
            .map(|(name, m)| {
                let available = m.available();
                ModelReadiness {
                    model: name.clone(),
                    problem: available.is_empty().then(|| m.why_unavailable()),
                    available_versions: available,
                }
            })
            .collect()
    }

    /// How many versions of each model are in each state.
    pub fn version_counts(&self) -> Vec<(String, VersionState, usize)> {
        let st = self.state.lock();
        let mut counts = Vec::new();
        for (name, m) in &st.models {
            let mut by_state: BTreeMap<i32, (VersionState, usize)> = BTreeMap::new();
            for e in m.versions.values() {
                by_state.entry(e.state() as i32).or_insert((e.state(), 0)).1 += 1;
            }
            counts.extend(
                by_state
                    .into_values()
                    .map(|(state, n)| (name.clone(), state, n)),
            );
        }
        counts
    }

    /// Names of the configured models.
    pub fn model_names(&self) -> Vec<String> {
        self.state.lock().models.keys().cloned().collect()
    }

    /// The configuration in force.
    pub fn config(&self) -> ModelsConfig {
        ModelsConfig {
            models: self
                .state
                .lock()
                .models
                .values()
                .map(|m| m.def.clone())
                .collect(),
        }
    }

    /// Waits until `done` holds for the state, or the deadline passes. Returns whether it held.
    async fn wait_until(&self, deadline: Instant, done: impl Fn(&State) -> bool) -> bool {
        let mut rx = self.changes.subscribe();
        loop {
            if done(&self.state.lock()) {
                return true;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return false;
            }
            if tokio::time::timeout(remaining, rx.changed()).await.is_err() {
                return done(&self.state.lock());
            }
        }
    }

    /// Waits until no version is loading (or `timeout` passes); true if settled.
    pub async fn wait_until_settled(&self, timeout: Duration) -> bool {
        self.wait_until(Instant::now() + timeout, |st| {
            st.models.values().all(|m| {
                m.disk.is_some()
                    && m.versions
                        .values()
                        .all(|e| e.state() != VersionState::Loading)
            })
        })
        .await
    }

    /// HandleReloadConfigRequest: replaces the configuration as a whole or not at all.
    /// Loads the versions the new config needs beside what serves, waits for them (at most
    /// `wait`), checks every label against what would then be available, and only then
    /// commits: adds, removes and changes models and labels in one snapshot swap. Calls are
    /// serialised. Returns a summary of what changed.
    pub async fn reload(
        self: &Arc<Self>,
        new: ModelsConfig,
        wait: Duration,
    ) -> Result<String, ServingError> {
        let _serial = self.reload_lock.lock().await;
        let deadline = Instant::now() + wait;

        // Models that are new, or moved to another base path, start from a fresh scan.
        let fresh: Vec<(String, PathBuf)> = {
            let st = self.state.lock();
            new.models
                .iter()
                .filter(|d| {
                    st.models
                        .get(&d.name)
                        .is_none_or(|m| m.def.base_path != d.base_path)
                })
                .map(|d| (d.name.clone(), d.base_path.clone()))
                .collect()
        };
        let scans: HashMap<String, Scan> = tokio::task::spawn_blocking(move || {
            fresh
                .into_iter()
                .map(|(n, p)| (n, source::scan(&p)))
                .collect()
        })
        .await
        .map_err(|e| ServingError::internal(format!("scanning the new base paths failed: {e}")))?;

        // Stage the loads the new config needs, without publishing anything.
        let mut staged_ids = Vec::new();
        {
            let mut st = self.state.lock();
            let mut jobs = Vec::new();
            for def in &new.models {
                let mut preview = ModelState::new(def.clone());
                match (scans.get(&def.name), st.models.get(&def.name)) {
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
                let current = if scans.contains_key(&def.name) {
                    None
                } else {
                    st.models.get(&def.name)
                };
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
                    staged_ids.push(id);
                    jobs.push(LoadJob {
                        model: def.name.clone(),
                        version,
                        path: dir.path,
                        id,
                        cancel,
                    });
                }
            }
            self.spawn_loads(jobs);
        }

        // Wait for the staged loads, and for labelled versions that are loading already.
        let labelled: Vec<(String, i64)> = new
            .models
            .iter()
            .flat_map(|d| d.labels.values().map(move |v| (d.name.clone(), *v)))
            .collect();
        let settled = self
            .wait_until(deadline, |st| {
                staged_ids
                    .iter()
                    .all(|id| st.staged.get(id).is_none_or(|s| s.result.is_some()))
                    && labelled.iter().all(|(m, v)| {
                        st.models
                            .get(m)
                            .and_then(|m| m.versions.get(v))
                            .is_none_or(|e| e.state() != VersionState::Loading)
                    })
            })
            .await;

        let mut discard: Vec<Arc<Loaded>> = Vec::new();
        let summary;
        {
            let mut st = self.state.lock();
            if !self.options.allow_labels_for_unavailable {
                let problems = label_problems(&st, &new, &scans, &staged_ids);
                if !problems.is_empty() {
                    for id in &staged_ids {
                        if let Some(s) = st.staged.remove(id) {
                            s.cancel.store(true, Ordering::Release);
                            if let Some(Ok(l)) = s.result {
                                discard.push(l);
                            }
                        }
                    }
                    drop(st);
                    drop(discard);
                    return Err(ServingError::failed_precondition(format!(
                        "{}; the configuration was not changed (labels may only point at AVAILABLE versions unless --allow_version_labels_for_unavailable_models is set)",
                        problems.join("; ")
                    )));
                }
            }

            // Commit.
            let mut added = Vec::new();
            let mut removed = Vec::new();
            let mut changed = Vec::new();
            let names: Vec<String> = st.models.keys().cloned().collect();
            for name in names {
                let keep = new.get(&name).is_some_and(|d| !scans.contains_key(&d.name));
                if !keep {
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
            }
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
            for id in &staged_ids {
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
            let names: Vec<String> = st.models.keys().cloned().collect();
            for name in &names {
                self.apply(&mut st, name);
            }
            self.publish(&st);
            self.watched.send_replace(watch_list(&new));
            summary = summarize(&st, &added, &removed, &changed, settled);
        }
        tracing::info!(summary = %summary, "config reloaded");
        self.bump();
        Ok(summary)
    }
}

/// Hands the pages of an unloaded version back to the OS. glibc keeps freed heap memory
/// for reuse, so without this a process's RSS only ever grows with each swap.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::task::spawn_blocking(|| {
        // SAFETY: malloc_trim only returns free memory to the OS; it has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
    });
}

fn watch_list(config: &ModelsConfig) -> Vec<(String, PathBuf)> {
    config
        .models
        .iter()
        .map(|d| (d.name.clone(), d.base_path.clone()))
        .collect()
}

fn log_changes(model: &str, changes: &Changes) {
    for job in &changes.loads {
        tracing::info!(model, version = job.version, path = %job.path.display(), "loading");
    }
    for v in &changes.unloading {
        tracing::info!(
            model,
            version = v,
            "unloading: no longer wanted; waiting for its requests to finish"
        );
    }
    for v in &changes.cancelled {
        tracing::info!(model, version = v, "load cancelled: no longer wanted");
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
        for (label, &v) in &def.labels {
            let serving = current
                .and_then(|m| m.versions.get(&v))
                .is_some_and(|e| e.state() == VersionState::Available);
            let staged_ok = staged
                .iter()
                .filter_map(|id| st.staged.get(id))
                .any(|s| s.model == def.name && s.version == v && matches!(s.result, Some(Ok(_))));
            if serving || staged_ok {
                continue;
            }
            let why = current
                .and_then(|m| m.versions.get(&v))
                .map(|e| format!("version {v} {}", e.describe()))
                .or_else(|| {
                    staged
                        .iter()
                        .filter_map(|id| st.staged.get(id))
                        .find(|s| s.model == def.name && s.version == v)
                        .map(|s| match &s.result {
                            Some(Err(e)) => format!("version {v} failed to load: {e}"),
                            _ => format!("version {v} is still loading"),
                        })
                })
                .unwrap_or_else(|| {
                    format!(
                        "version {v} is not on disk under {}",
                        def.base_path.display()
                    )
                });
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
