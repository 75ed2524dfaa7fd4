//! The Manager: owns every model's versions. It applies the version policy to what the
//! source finds on disk, loads versions on its own worker pool, and publishes an immutable
//! [`Snapshot`] of what serves through `ArcSwap`, so a request resolves its servable without
//! taking a lock and holds it (a [`ServableHandle`]) only for the length of the request.
//! Loads happen before unloads; a failed load is recorded and never disturbs a version that
//! serves.
//!
//! The concerns live apart: [`reconcile`] is the pure version policy, `loading` runs the
//! load pool and its retries, `reload` stages and commits a ReloadConfig, `explain` writes
//! the errors, [`handle`] is what a request holds. This module ties them together and
//! answers queries. It does not know about transports, protos or tensors, and only the
//! serving core ([`crate::serving::Core`]) calls it on the request path.

mod explain;
pub mod handle;
mod loading;
mod reconcile;
mod reload;

pub use handle::{LoadedVersion, ServableHandle};
pub use reconcile::VersionState;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use self::reconcile::{LoadJob, ModelState, VersionEntry};
use self::reload::Staged;
use crate::config::{BasePath, ModelDef, ModelsConfig};
use crate::error::ServingError;
use crate::metrics::Metrics;
use crate::pool::WorkerPool;
use crate::source::{RemoteModel, WatchedModel};

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
    /// `--int8_models`: models whose versions load with int8 dense layers.
    pub int8_models: BTreeSet<String>,
    /// `--model_cache_dir`: where versions in object storage are mirrored.
    pub model_cache_dir: PathBuf,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            max_load_retries: 5,
            load_retry_interval: Duration::from_secs(1),
            allow_labels_for_unavailable: false,
            load_threads: 2,
            int8_models: BTreeSet::new(),
            model_cache_dir: crate::source::remote::default_cache_dir(),
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
    versions: BTreeMap<i64, Arc<LoadedVersion>>,
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

/// Everything behind the manager's one lock.
struct State {
    models: BTreeMap<String, ModelState>,
    /// Loads started by a ReloadConfig that has not committed yet, by load id.
    staged: HashMap<u64, Staged>,
    next_id: u64,
}

pub struct Manager {
    serving: ArcSwap<Snapshot>,
    state: Mutex<State>,
    options: ManagerOptions,
    loads: WorkerPool,
    /// Told when the last request of an unloaded version lets go of it.
    dropped: mpsc::UnboundedSender<(String, i64, u64)>,
    /// Counts state changes; waiters watch it.
    changes: watch::Sender<u64>,
    /// Every model's folder (and what it mirrors), for the sources.
    watched: watch::Sender<Vec<WatchedModel>>,
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
        let watched = watch_list(config, &options.model_cache_dir);
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
            watched: watch::channel(watched).0,
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
                manager.on_drained(&model, version, id);
            }
        });
        manager
    }

    /// The model list for the source; it changes when a reload adds or removes models.
    pub fn watch_list(&self) -> watch::Receiver<Vec<WatchedModel>> {
        self.watched.subscribe()
    }

    /// The versions of `model` that are loading, serving or draining: their files must stay.
    pub fn versions_in_use(&self, model: &str) -> BTreeSet<i64> {
        let st = self.state.lock();
        st.models
            .get(model)
            .map(|m| {
                m.versions
                    .iter()
                    .filter(|(_, e)| {
                        matches!(
                            e.state(),
                            VersionState::Loading
                                | VersionState::Available
                                | VersionState::Unloading
                        )
                    })
                    .map(|(v, _)| *v)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A receiver that changes whenever any version changes state.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn notify_changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Publishes what serves now as a new snapshot.
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

    /// Reconciles one model and returns the loads it asks for, without publishing.
    fn reconcile_model(st: &mut State, model: &str) -> Vec<LoadJob> {
        let State {
            models, next_id, ..
        } = st;
        let Some(m) = models.get_mut(model) else {
            return Vec::new();
        };
        let changes = m.reconcile(next_id);
        loading::log_changes(model, &changes);
        changes.loads
    }

    /// Reconciles one model, publishes, and starts the loads it asked for.
    fn apply(self: &Arc<Self>, st: &mut State, model: &str) {
        let loads = Self::reconcile_model(st, model);
        self.publish(st);
        self.spawn_loads(loads);
    }

    /// The servable for a request, without a lock. The error names the model and explains
    /// what is there instead.
    pub fn resolve(
        &self,
        model: &str,
        choice: &VersionChoice,
    ) -> Result<ServableHandle, ServingError> {
        let snapshot = self.serving.load();
        if let Some(m) = snapshot.models.get(model) {
            let found = match choice {
                VersionChoice::Latest => m.versions.values().next_back(),
                VersionChoice::Number(v) => m.versions.get(v),
                VersionChoice::Label(l) => m.labels.get(l).and_then(|v| m.versions.get(v)),
            };
            if let Some(loaded) = found {
                return Ok(ServableHandle::new(loaded.clone()));
            }
        }
        Err(explain::unresolved(
            model,
            choice,
            &self.state.lock().models,
        ))
    }

    /// GetModelStatus: every version the manager knows of (newest first) for
    /// [`VersionChoice::Latest`], or the one version a number or label names.
    pub fn status(
        &self,
        model: &str,
        choice: &VersionChoice,
    ) -> Result<Vec<VersionStatus>, ServingError> {
        let st = self.state.lock();
        let Some(m) = st.models.get(model) else {
            return Err(explain::not_served(model, &st.models));
        };
        let line = |(v, e): (&i64, &VersionEntry)| VersionStatus {
            version: *v,
            state: e.state(),
            error: e.error().map(str::to_string),
        };
        let version = match choice {
            VersionChoice::Latest => None,
            VersionChoice::Number(v) => Some(*v),
            VersionChoice::Label(label) => match m.def.labels.get(label) {
                Some(v) => Some(*v),
                None => return Err(explain::no_such_label(model, label, m)),
            },
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

    /// The configuration being served (labels as they are now).
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

    /// Names of the configured models.
    pub fn model_names(&self) -> Vec<String> {
        self.state.lock().models.keys().cloned().collect()
    }

    /// Whether `model` is configured (without copying the model list).
    pub fn is_configured(&self, model: &str) -> bool {
        self.state.lock().models.contains_key(model)
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
}

fn watch_list(config: &ModelsConfig, cache: &Path) -> Vec<WatchedModel> {
    config.models.iter().map(|d| watched(d, cache)).collect()
}

/// Where the sources look for `def`'s versions.
fn watched(def: &ModelDef, cache: &Path) -> WatchedModel {
    match &def.base_path {
        BasePath::Local(dir) => WatchedModel {
            name: def.name.clone(),
            dir: dir.clone(),
            remote: None,
        },
        BasePath::Remote(url) => WatchedModel {
            name: def.name.clone(),
            dir: crate::source::remote::cache_folder(cache, &def.name, url),
            remote: Some(RemoteModel {
                url: url.clone(),
                policy: def.policy.clone(),
            }),
        },
    }
}
