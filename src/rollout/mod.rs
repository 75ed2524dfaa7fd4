//! Progressive rollouts: requests that name neither a version nor a label are split between
//! the version labelled `stable` and the one labelled `canary` by a percentage. A client key
//! (`X-Client-Id`, `x-client-id`, a request id) always lands on the same side while the
//! percentage holds, and moves only from stable to canary as it grows; requests without a key
//! are split at random. With an automatic policy, the server compares the canary with stable
//! every interval (server-made errors, p99 latency) and raises the share by a step, promotes
//! at 100 % (the stable label moves to the canary's version), or rolls back by itself.
//!
//! The request path reads one `ArcSwap` of routes and never waits on the controller; every
//! change (a client's, or a decision) publishes a new route table at once. The state of every
//! rollout is written atomically to a JSON file beside the config, and read back at start.
//! This module decides nothing about loading: the manager's labels say which version a side
//! is, and a promotion is an ordinary config reload.

mod analysis;

pub use analysis::{Decision, Window};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::config::model_server_config::is_valid_label;
use crate::error::ServingError;
use crate::manager::{Manager, VersionChoice, VersionState};

pub const DEFAULT_STABLE_LABEL: &str = "stable";
pub const DEFAULT_CANARY_LABEL: &str = "canary";

/// How long a promotion waits for the reload that moves the stable label.
const PROMOTION_WAIT: Duration = Duration::from_secs(30);

/// The automatic policy of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoPolicy {
    #[serde(default = "defaults::step_percent")]
    pub step_percent: u32,
    #[serde(default = "defaults::interval_seconds")]
    pub interval_seconds: f64,
    #[serde(default = "defaults::min_requests")]
    pub min_requests: u64,
    #[serde(default = "defaults::max_error_rate")]
    pub max_error_rate: f64,
    #[serde(default = "defaults::max_p99_ratio")]
    pub max_p99_ratio: f64,
}

impl Default for AutoPolicy {
    fn default() -> Self {
        AutoPolicy {
            step_percent: defaults::step_percent(),
            interval_seconds: defaults::interval_seconds(),
            min_requests: defaults::min_requests(),
            max_error_rate: defaults::max_error_rate(),
            max_p99_ratio: defaults::max_p99_ratio(),
        }
    }
}

mod defaults {
    pub fn step_percent() -> u32 {
        10
    }
    pub fn interval_seconds() -> f64 {
        60.0
    }
    pub fn min_requests() -> u64 {
        200
    }
    pub fn max_error_rate() -> f64 {
        0.01
    }
    pub fn max_p99_ratio() -> f64 {
        1.5
    }
}

impl AutoPolicy {
    fn check(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.step_percent) {
            return Err(format!(
                "auto.step_percent is {}; it must be 1 to 100",
                self.step_percent
            ));
        }
        if !(self.interval_seconds.is_finite() && (0.1..=86_400.0).contains(&self.interval_seconds))
        {
            return Err(format!(
                "auto.interval_seconds is {}; it must be 0.1 to 86400",
                self.interval_seconds
            ));
        }
        if self.min_requests == 0 {
            return Err("auto.min_requests must be at least 1".into());
        }
        if !(self.max_error_rate.is_finite() && (0.0..=1.0).contains(&self.max_error_rate)) {
            return Err(format!(
                "auto.max_error_rate is {}; it must be 0 to 1",
                self.max_error_rate
            ));
        }
        if !(self.max_p99_ratio.is_finite() && self.max_p99_ratio >= 1.0) {
            return Err(format!(
                "auto.max_p99_ratio is {}; it must be a number of at least 1",
                self.max_p99_ratio
            ));
        }
        Ok(())
    }
}

/// What a client sends to start or change a rollout (the PUT body).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    #[serde(default)]
    pub canary_label: Option<String>,
    #[serde(default)]
    pub stable_label: Option<String>,
    pub canary_percent: u32,
    #[serde(default)]
    pub auto: Option<AutoPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    Progressing,
    Promoted,
    RolledBack,
    Aborted,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Progressing => "PROGRESSING",
            Phase::Promoted => "PROMOTED",
            Phase::RolledBack => "ROLLED_BACK",
            Phase::Aborted => "ABORTED",
        }
    }
}

/// One side of the comparison, over one analysis window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SideFigures {
    pub version: i64,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p99_ms: f64,
}

/// What the last automatic decision was based on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Unix time, seconds.
    pub at: f64,
    pub window_seconds: f64,
    pub stable: SideFigures,
    pub canary: SideFigures,
    /// `step`, `wait`, `rollback` or `promote`.
    pub decision: String,
    pub reason: String,
}

/// A rollout, as GET shows it and the state file keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub model: String,
    pub stable_label: String,
    pub canary_label: String,
    pub stable_version: i64,
    pub canary_version: i64,
    pub canary_percent: u32,
    pub auto: Option<AutoPolicy>,
    pub phase: Phase,
    /// Why it ended (a rollback's reason, "promoted by a client", ...).
    pub reason: Option<String>,
    pub last_analysis: Option<Analysis>,
    pub started_at: f64,
    pub updated_at: f64,
}

/// What the request path reads: an immutable route per model with a rollout in progress.
#[derive(Debug)]
struct Route {
    stable_label: String,
    canary_label: String,
    stable_version: i64,
    canary_version: i64,
    /// Canary share in hundredths of a percent (0..=10_000); 0 once the rollout ended.
    canary_basis_points: u32,
    /// Only a rollout in progress gathers figures.
    progressing: bool,
    /// The analysis windows of its two versions, shared with the controller: a request
    /// locks only its own side's window, never a lock every model shares.
    windows: Arc<Windows>,
}

/// The analysis windows of one rollout's stable and canary versions.
#[derive(Debug)]
struct Windows {
    stable_version: i64,
    canary_version: i64,
    stable: Mutex<Window>,
    canary: Mutex<Window>,
}

impl Windows {
    fn new(stable_version: i64, canary_version: i64) -> Arc<Self> {
        Arc::new(Windows {
            stable_version,
            canary_version,
            stable: Mutex::default(),
            canary: Mutex::default(),
        })
    }

    /// Starts both windows afresh (a decision consumed them, or the rollout changed).
    fn reset(&self) {
        *self.stable.lock() = Window::default();
        *self.canary.lock() = Window::default();
    }
}

/// Which side of a rollout a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Stable,
    Canary,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Stable => "stable",
            Side::Canary => "canary",
        }
    }
}

/// The server's rollouts.
pub struct Rollouts {
    manager: Arc<Manager>,
    routes: ArcSwap<HashMap<String, Arc<Route>>>,
    state: Mutex<BTreeMap<String, Rollout>>,
    /// Per model: the analysis windows of its rollout's two versions (also in its route).
    windows: Mutex<HashMap<String, Arc<Windows>>>,
    /// Serialises changes (client calls and decisions) so each sees the last one's result.
    changes: tokio::sync::Mutex<()>,
    tasks: Mutex<HashMap<String, JoinHandle<()>>>,
    file: Option<PathBuf>,
    config_file: Option<PathBuf>,
    metrics: RolloutMetrics,
}

struct RolloutMetrics {
    percent: GaugeVec,
    requests: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    events: IntCounterVec,
}

impl RolloutMetrics {
    fn new(registry: &Registry) -> Self {
        let percent = GaugeVec::new(
            Opts::new(
                ":candle_serving:rollout_canary_percent",
                "Share of unpinned requests sent to the canary, in percent.",
            ),
            &["model_name"],
        )
        .expect("valid metric");
        let requests = IntCounterVec::new(
            Opts::new(
                ":candle_serving:rollout_requests_total",
                "Requests run by each side of a rollout.",
            ),
            &["model_name", "side"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                ":candle_serving:rollout_errors_total",
                "Requests of each side of a rollout that failed by the server's fault.",
            ),
            &["model_name", "side"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                ":candle_serving:rollout_latency_seconds",
                "Model time of each side of a rollout, in seconds.",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 18).expect("valid buckets")),
            &["model_name", "side"],
        )
        .expect("valid metric");
        let events = IntCounterVec::new(
            Opts::new(
                ":candle_serving:rollout_events_total",
                "Rollout events: start, change, step, promote, rollback, abort.",
            ),
            &["model_name", "event"],
        )
        .expect("valid metric");
        for c in [
            Box::new(percent.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(requests.clone()),
            Box::new(errors.clone()),
            Box::new(latency.clone()),
            Box::new(events.clone()),
        ] {
            let _ = registry.register(c);
        }
        RolloutMetrics {
            percent,
            requests,
            errors,
            latency,
            events,
        }
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Where a client key lands, in hundredths of a percent: a fixed point per (model, key), so a
/// key is on the canary exactly while the canary share is above its point.
pub fn key_point(model: &str, key: &str) -> u32 {
    let mut h = crate::util::fnv1a64(model.bytes().chain([0]).chain(key.bytes()));
    // splitmix64's finaliser spreads FNV's low bits.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h % 10_000) as u32
}

impl Rollouts {
    /// The rollouts of a server; `file` keeps their state (read here), `config_file` is
    /// rewritten when a promotion moves a label.
    pub fn new(
        manager: Arc<Manager>,
        registry: &Registry,
        file: Option<PathBuf>,
        config_file: Option<PathBuf>,
    ) -> Arc<Rollouts> {
        let saved: BTreeMap<String, Rollout> = file
            .as_ref()
            .and_then(|f| match std::fs::read(f) {
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(saved) => Some(saved),
                    Err(e) => {
                        tracing::error!(file = %f.display(), error = %e, "the rollout state file is unreadable; starting without rollouts");
                        None
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    tracing::error!(file = %f.display(), error = %e, "cannot read the rollout state file; starting without rollouts");
                    None
                }
            })
            .unwrap_or_default();
        let rollouts = Arc::new(Rollouts {
            manager,
            routes: ArcSwap::from_pointee(HashMap::new()),
            state: Mutex::new(saved),
            windows: Mutex::new(HashMap::new()),
            changes: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(HashMap::new()),
            file,
            config_file,
            metrics: RolloutMetrics::new(registry),
        });
        let resumed: Vec<Rollout> = rollouts
            .state
            .lock()
            .values()
            .filter(|r| r.phase == Phase::Progressing)
            .cloned()
            .collect();
        for r in &resumed {
            tracing::info!(model = %r.model, percent = r.canary_percent, "resuming a rollout");
            rollouts
                .metrics
                .percent
                .with_label_values(&[&r.model])
                .set(f64::from(r.canary_percent));
            if r.auto.is_some() {
                rollouts.spawn_analysis(&r.model);
            }
        }
        rollouts.publish();
        rollouts
    }

    /// The label an unpinned request for `model` goes to, if the model has a rollout in
    /// progress. Lock-free.
    pub fn route(&self, model: &str, key: Option<&str>) -> Option<(String, Side)> {
        let routes = self.routes.load();
        let route = routes.get(model)?;
        let point = match key {
            Some(key) => key_point(model, key),
            None => rand::random_range(0..10_000),
        };
        Some(if point < route.canary_basis_points {
            (route.canary_label.clone(), Side::Canary)
        } else {
            (route.stable_label.clone(), Side::Stable)
        })
    }

    /// Records one run of `model` `version` for the analysis and the metrics: how long the
    /// model took and whether it failed by the server's fault. Only the two versions of a
    /// rollout in progress are recorded, however the request chose them.
    pub fn record(&self, model: &str, version: i64, took: Duration, server_error: bool) {
        let routes = self.routes.load();
        let Some(route) = routes.get(model).filter(|r| r.progressing) else {
            return;
        };
        let side = if version == route.canary_version {
            Side::Canary
        } else if version == route.stable_version {
            Side::Stable
        } else {
            return;
        };
        let labels = [model, side.name()];
        self.metrics.requests.with_label_values(&labels).inc();
        if server_error {
            self.metrics.errors.with_label_values(&labels).inc();
        }
        self.metrics
            .latency
            .with_label_values(&labels)
            .observe(took.as_secs_f64());
        let window = match side {
            Side::Stable => &route.windows.stable,
            Side::Canary => &route.windows.canary,
        };
        window.lock().add(took, server_error);
    }

    /// The rollout of `model` (in progress or the last one that ended).
    pub fn get(&self, model: &str) -> Result<Rollout, ServingError> {
        self.state
            .lock()
            .get(model)
            .cloned()
            .ok_or_else(|| ServingError::not_found(format!("model `{model}` has no rollout")))
    }

    /// Starts a rollout, or changes the percentage or policy of the one in progress. Checked
    /// whole before anything changes.
    pub async fn start(
        self: &Arc<Self>,
        model: &str,
        request: RolloutRequest,
    ) -> Result<Rollout, ServingError> {
        let _serial = self.changes.lock().await;
        let stable_label = request
            .stable_label
            .unwrap_or_else(|| DEFAULT_STABLE_LABEL.to_string());
        let canary_label = request
            .canary_label
            .unwrap_or_else(|| DEFAULT_CANARY_LABEL.to_string());
        let invalid = |m: String| ServingError::invalid_argument(format!("model `{model}`: {m}"));
        if request.canary_percent > 100 {
            return Err(invalid(format!(
                "canary_percent is {}; it must be 0 to 100",
                request.canary_percent
            )));
        }
        for label in [&stable_label, &canary_label] {
            if !is_valid_label(label) {
                return Err(invalid(format!(
                    "`{label}` is not a valid label; labels match [a-zA-Z0-9_]+"
                )));
            }
        }
        if stable_label == canary_label {
            return Err(invalid(format!(
                "the stable and canary labels are both `{stable_label}`"
            )));
        }
        if let Some(auto) = &request.auto {
            auto.check().map_err(invalid)?;
        }
        if !self.manager.is_configured(model) {
            return Err(ServingError::not_found(format!(
                "model `{model}` is not configured"
            )));
        }
        let stable_version = self.available_label(model, &stable_label)?;
        let canary_version = self.available_label(model, &canary_label)?;
        if stable_version == canary_version {
            return Err(ServingError::failed_precondition(format!(
                "model `{model}`: labels `{stable_label}` and `{canary_label}` both point at version {stable_version}; point `{canary_label}` at the new version first"
            )));
        }
        let at = now();
        let rollout = {
            let mut state = self.state.lock();
            let same = state.get(model).filter(|r| {
                r.phase == Phase::Progressing
                    && r.stable_label == stable_label
                    && r.canary_label == canary_label
                    && r.canary_version == canary_version
            });
            let event = if same.is_some() { "change" } else { "start" };
            let rollout = Rollout {
                model: model.to_string(),
                stable_label,
                canary_label,
                stable_version,
                canary_version,
                canary_percent: request.canary_percent,
                auto: request.auto,
                phase: Phase::Progressing,
                reason: None,
                last_analysis: same.and_then(|r| r.last_analysis.clone()),
                started_at: same.map_or(at, |r| r.started_at),
                updated_at: at,
            };
            state.insert(model.to_string(), rollout.clone());
            self.metrics.events.with_label_values(&[model, event]).inc();
            tracing::info!(
                model,
                event,
                percent = rollout.canary_percent,
                stable = stable_version,
                canary = canary_version,
                "rollout"
            );
            rollout
        };
        self.metrics
            .percent
            .with_label_values(&[model])
            .set(f64::from(rollout.canary_percent));
        self.publish();
        self.save();
        self.stop_analysis(model);
        if rollout.auto.is_some() {
            self.reset_windows(model);
            self.spawn_analysis(model);
        }
        Ok(rollout)
    }

    /// Ends the rollout in progress with all traffic on stable; on a rollout that already
    /// ended, forgets it, so unpinned requests go to the latest version again.
    pub async fn abort(&self, model: &str) -> Result<Rollout, ServingError> {
        let _serial = self.changes.lock().await;
        let ended = self
            .state
            .lock()
            .get(model)
            .filter(|r| r.phase != Phase::Progressing)
            .cloned();
        if let Some(ended) = ended {
            self.state.lock().remove(model);
            tracing::info!(
                model,
                "rollout forgotten; unpinned requests go to the latest version"
            );
            self.publish();
            self.save();
            return Ok(ended);
        }
        self.end(model, Phase::Aborted, "aborted by a client".into(), None)
    }

    /// Moves the stable label to the canary's version (a config reload, and the config file
    /// rewritten) and ends the rollout.
    pub async fn promote(&self, model: &str) -> Result<Rollout, ServingError> {
        let _serial = self.changes.lock().await;
        self.promote_locked(model, "promoted by a client".into(), None)
            .await
    }

    async fn promote_locked(
        &self,
        model: &str,
        reason: String,
        analysis: Option<Analysis>,
    ) -> Result<Rollout, ServingError> {
        let current = self.in_progress(model)?;
        let mut config = self.manager.config();
        let Some(def) = config.models.iter_mut().find(|d| d.name == model) else {
            return Err(ServingError::not_found(format!(
                "model `{model}` is not configured"
            )));
        };
        def.labels
            .insert(current.stable_label.clone(), current.canary_version);
        self.manager
            .reload(config, PROMOTION_WAIT)
            .await
            .map_err(|e| {
                e.context(format_args!(
                    "model `{model}`: promoting version {} to `{}`",
                    current.canary_version, current.stable_label
                ))
            })?;
        if let Some(file) = &self.config_file {
            if let Err(e) =
                relabel_config_file(file, model, &current.stable_label, current.canary_version)
            {
                tracing::error!(file = %file.display(), error = %e, "the promotion serves, but the config file could not be rewritten; a restart would bring the old label back");
            }
        }
        self.end(model, Phase::Promoted, reason, analysis)
    }

    fn in_progress(&self, model: &str) -> Result<Rollout, ServingError> {
        match self.state.lock().get(model) {
            Some(r) if r.phase == Phase::Progressing => Ok(r.clone()),
            Some(r) => Err(ServingError::failed_precondition(format!(
                "model `{model}`: its last rollout already ended ({})",
                r.phase.name()
            ))),
            None => Err(ServingError::not_found(format!(
                "model `{model}` has no rollout"
            ))),
        }
    }

    fn end(
        &self,
        model: &str,
        phase: Phase,
        reason: String,
        analysis: Option<Analysis>,
    ) -> Result<Rollout, ServingError> {
        let rollout = {
            let mut state = self.state.lock();
            let r = match state.get_mut(model) {
                Some(r) if r.phase == Phase::Progressing => r,
                Some(r) => {
                    return Err(ServingError::failed_precondition(format!(
                        "model `{model}`: its last rollout already ended ({})",
                        r.phase.name()
                    )))
                }
                None => {
                    return Err(ServingError::not_found(format!(
                        "model `{model}` has no rollout"
                    )))
                }
            };
            r.phase = phase;
            r.reason = Some(reason.clone());
            r.updated_at = now();
            if phase != Phase::Promoted {
                r.canary_percent = 0;
            }
            if analysis.is_some() {
                r.last_analysis = analysis;
            }
            r.clone()
        };
        let event = match phase {
            Phase::Promoted => "promote",
            Phase::RolledBack => "rollback",
            _ => "abort",
        };
        self.metrics.events.with_label_values(&[model, event]).inc();
        self.metrics.percent.with_label_values(&[model]).set(0.0);
        if phase == Phase::RolledBack {
            tracing::warn!(model, %reason, canary = rollout.canary_version, "rollout rolled back");
        } else {
            tracing::info!(model, event, %reason, "rollout ended");
        }
        self.publish();
        self.save();
        self.stop_analysis(model);
        self.reset_windows(model);
        Ok(rollout)
    }

    /// The version a label points at, if that version is AVAILABLE.
    fn available_label(&self, model: &str, label: &str) -> Result<i64, ServingError> {
        let status = self
            .manager
            .status(model, &VersionChoice::Label(label.to_string()))
            .map_err(|e| ServingError::failed_precondition(e.message))?;
        match status.first() {
            Some(s) if s.state == VersionState::Available => Ok(s.version),
            Some(s) => Err(ServingError::failed_precondition(format!(
                "model `{model}`: label `{label}` points at version {}, which is {}, not AVAILABLE",
                s.version,
                s.state.name()
            ))),
            None => Err(ServingError::failed_precondition(format!(
                "model `{model}` has no label `{label}`"
            ))),
        }
    }

    /// Publishes the routes: one atomic switch for requests. A rollout that ended keeps
    /// unpinned requests on stable (with `all` versions served, "latest" would be the canary
    /// that was just rolled back) until it is forgotten.
    fn publish(&self) {
        let mut windows = self.windows.lock();
        let routes = self
            .state
            .lock()
            .values()
            .map(|r| {
                let progressing = r.phase == Phase::Progressing;
                // The same versions keep their windows; other versions start new ones.
                let shared = windows
                    .get(&r.model)
                    .filter(|w| {
                        w.stable_version == r.stable_version && w.canary_version == r.canary_version
                    })
                    .cloned()
                    .unwrap_or_else(|| Windows::new(r.stable_version, r.canary_version));
                windows.insert(r.model.clone(), shared.clone());
                (
                    r.model.clone(),
                    Arc::new(Route {
                        windows: shared,
                        stable_label: r.stable_label.clone(),
                        canary_label: r.canary_label.clone(),
                        stable_version: r.stable_version,
                        canary_version: r.canary_version,
                        canary_basis_points: if progressing {
                            r.canary_percent * 100
                        } else {
                            0
                        },
                        progressing,
                    }),
                )
            })
            .collect();
        self.routes.store(Arc::new(routes));
    }

    fn reset_windows(&self, model: &str) {
        if let Some(w) = self.windows.lock().get(model) {
            w.reset();
        }
    }

    /// Writes every rollout to the state file (temporary file, then rename).
    fn save(&self) {
        let Some(file) = &self.file else {
            return;
        };
        let json =
            serde_json::to_vec_pretty(&*self.state.lock()).expect("rollouts serialise to JSON");
        if let Err(e) = crate::util::write_atomically(file, &json) {
            tracing::error!(file = %file.display(), error = %e, "cannot write the rollout state file; a restart would forget the last change");
        }
    }

    fn stop_analysis(&self, model: &str) {
        if let Some(task) = self.tasks.lock().remove(model) {
            task.abort();
        }
    }

    fn spawn_analysis(self: &Arc<Self>, model: &str) {
        let weak: Weak<Rollouts> = Arc::downgrade(self);
        let model = model.to_string();
        let task = tokio::spawn({
            let model = model.clone();
            async move {
                loop {
                    let Some(interval) = weak.upgrade().and_then(|r| {
                        r.state
                            .lock()
                            .get(&model)
                            .filter(|r| r.phase == Phase::Progressing)
                            .and_then(|r| r.auto.as_ref())
                            .map(|a| Duration::from_secs_f64(a.interval_seconds))
                    }) else {
                        return;
                    };
                    tokio::time::sleep(interval).await;
                    let Some(rollouts) = weak.upgrade() else {
                        return;
                    };
                    if !rollouts.analyse(&model, interval).await {
                        return;
                    }
                }
            }
        });
        if let Some(old) = self.tasks.lock().insert(model, task) {
            old.abort();
        }
    }

    /// One automatic decision; false once the rollout ended.
    async fn analyse(&self, model: &str, interval: Duration) -> bool {
        let _serial = self.changes.lock().await;
        let Ok(current) = self.in_progress(model) else {
            return false;
        };
        let Some(policy) = current.auto.clone() else {
            return false;
        };
        let (stable, canary) = match self.windows.lock().get(model) {
            Some(w)
                if w.stable_version == current.stable_version
                    && w.canary_version == current.canary_version =>
            {
                (w.stable.lock().clone(), w.canary.lock().clone())
            }
            _ => Default::default(),
        };
        let decision = analysis::decide(&policy, current.canary_percent, &stable, &canary);
        let analysis = Analysis {
            at: now(),
            window_seconds: stable.age().max(canary.age()).max(interval).as_secs_f64(),
            stable: stable.figures(current.stable_version),
            canary: canary.figures(current.canary_version),
            decision: decision.name().to_string(),
            reason: decision.reason(),
        };
        tracing::info!(model, decision = %analysis.decision, reason = %analysis.reason, "rollout analysis");
        if !matches!(decision, Decision::Wait(_)) {
            // A decision consumes its window; waiting keeps gathering.
            self.reset_windows(model);
        }
        match decision {
            Decision::Wait(_) => {
                if let Some(r) = self.state.lock().get_mut(model) {
                    r.last_analysis = Some(analysis);
                }
                self.save();
                true
            }
            Decision::Rollback(reason) => {
                let _ = self.end(model, Phase::RolledBack, reason, Some(analysis));
                false
            }
            Decision::Promote => {
                match self
                    .promote_locked(
                        model,
                        "promoted by the automatic analysis".into(),
                        Some(analysis.clone()),
                    )
                    .await
                {
                    Ok(_) => false,
                    Err(e) => {
                        let reason = format!("the promotion failed: {}", e.message);
                        let _ = self.end(model, Phase::RolledBack, reason, Some(analysis));
                        false
                    }
                }
            }
            Decision::Step(percent) => {
                {
                    let mut state = self.state.lock();
                    if let Some(r) = state.get_mut(model) {
                        r.canary_percent = percent;
                        r.updated_at = now();
                        r.last_analysis = Some(analysis);
                    }
                }
                self.metrics
                    .events
                    .with_label_values(&[model, "step"])
                    .inc();
                self.metrics
                    .percent
                    .with_label_values(&[model])
                    .set(f64::from(percent));
                self.publish();
                self.save();
                true
            }
        }
    }
}

impl Drop for Rollouts {
    fn drop(&mut self) {
        for (_, task) in self.tasks.lock().drain() {
            task.abort();
        }
    }
}

/// Points `label` of `model` at `version` in a `models.config` file, keeping the rest of
/// the file's configuration as written (its comments are not kept).
fn relabel_config_file(
    file: &std::path::Path,
    model: &str,
    label: &str,
    version: i64,
) -> Result<(), String> {
    use crate::proto::tensorflow::serving::{model_server_config, ModelServerConfig};
    const TYPE: &str = "tensorflow.serving.ModelServerConfig";
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let mut config: ModelServerConfig =
        crate::config::text_format::parse(TYPE, &text, &file.display().to_string())
            .map_err(|e| e.to_string())?;
    let Some(model_server_config::Config::ModelConfigList(list)) = config.config.as_mut() else {
        return Err("the file has no model_config_list".into());
    };
    let Some(entry) = list.config.iter_mut().find(|m| m.name == model) else {
        return Err(format!("the file has no model `{model}`"));
    };
    entry.version_labels.insert(label.to_string(), version);
    crate::util::write_atomically(
        file,
        crate::config::text_format::format(TYPE, &config).as_bytes(),
    )
    .map_err(|e| e.to_string())
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_points_are_spread_and_grow_monotonically_into_the_canary() {
        let points: Vec<u32> = (0..20_000)
            .map(|i| key_point("m", &format!("client-{i}")))
            .collect();
        for percent in [1u32, 10, 20, 50, 90] {
            let share =
                points.iter().filter(|&&p| p < percent * 100).count() as f64 / points.len() as f64;
            assert!(
                (share - f64::from(percent) / 100.0).abs() < 0.01,
                "{percent}%: {share}"
            );
        }
        // The same key, the same point; another model, another point.
        assert_eq!(key_point("m", "alice"), key_point("m", "alice"));
        let moved = (0..1000)
            .filter(|i| key_point("m", &i.to_string()) != key_point("n", &i.to_string()))
            .count();
        assert!(moved > 990, "{moved}");
    }

    #[test]
    fn policies_are_checked() {
        let ok = AutoPolicy {
            step_percent: 10,
            interval_seconds: 60.0,
            min_requests: 200,
            max_error_rate: 0.01,
            max_p99_ratio: 1.5,
        };
        assert!(ok.check().is_ok());
        for (bad, why) in [
            (
                AutoPolicy {
                    step_percent: 0,
                    ..ok.clone()
                },
                "step_percent",
            ),
            (
                AutoPolicy {
                    interval_seconds: f64::NAN,
                    ..ok.clone()
                },
                "interval_seconds",
            ),
            (
                AutoPolicy {
                    min_requests: 0,
                    ..ok.clone()
                },
                "min_requests",
            ),
            (
                AutoPolicy {
                    max_error_rate: 2.0,
                    ..ok.clone()
                },
                "max_error_rate",
            ),
            (
                AutoPolicy {
                    max_p99_ratio: 0.5,
                    ..ok.clone()
                },
                "max_p99_ratio",
            ),
        ] {
            assert!(bad.check().unwrap_err().contains(why), "{why}");
        }
        let parsed: RolloutRequest =
            serde_json::from_str(r#"{"canary_percent": 5, "auto": {"step_percent": 20}}"#).unwrap();
        assert_eq!(parsed.auto.unwrap().min_requests, 200);
        assert!(
            serde_json::from_str::<RolloutRequest>(r#"{"canary_percent": 5, "cnary": 1}"#).is_err()
        );
    }
}
