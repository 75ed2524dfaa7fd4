//! The load side of the manager: what the source reports, loads on the manager's own pool
//! (never on the async runtime or the inference threads) with `--max_num_load_retries`
//! retries, recording each result, and noticing when an unloaded version has drained. It
//! changes state only under the manager's lock and through [`ModelState::reconcile`].

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::handle::LoadedVersion;
use super::reconcile::{Changes, LoadJob, Phase, VersionEntry};
use super::Manager;
use crate::models::{self, LoadError};
use crate::servable::Servable;
use crate::source::Scan;

impl Manager {
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
        self.notify_changed();
    }

    pub(super) fn spawn_loads(self: &Arc<Self>, jobs: Vec<LoadJob>) {
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

    /// A loaded servable as the manager keeps it: it reports back when it has drained.
    fn loaded_version(&self, job: &LoadJob, servable: Arc<dyn Servable>) -> Arc<LoadedVersion> {
        let drained = self.dropped.clone();
        Arc::new(LoadedVersion::new(
            &job.model,
            job.version,
            job.id,
            servable,
            Some(Box::new(move |model, version, id| {
                let _ = drained.send((model.to_string(), version, id));
            })),
        ))
    }

    /// Records a finished load: into the ReloadConfig that staged it, or into the model's
    /// versions (then reconciles and publishes), or, if the version stopped being wanted
    /// meanwhile, drops it.
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
        let result = result.map(|s| self.loaded_version(&job, s));
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
        // Dropped outside the lock: dropping a version may notify the manager.
        drop(discarded);
        self.notify_changed();
    }

    /// The last holder of an unloading version let go of it.
    pub(super) fn on_drained(&self, model: &str, version: i64, id: u64) {
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
        self.notify_changed();
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

pub(super) fn log_changes(model: &str, changes: &Changes) {
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
