//! What a request holds: a [`ServableHandle`] on one loaded version, as in TF Serving. A
//! request holds its handle until it finishes, so a version that is unloaded lives exactly
//! as long as its last request. This module owns that lifetime rule; it knows nothing of
//! policies, loading or the transports.

use std::sync::{Arc, OnceLock};

use crate::batching::Batcher;
use crate::servable::Servable;

/// Called once with (model, version, load id) when a version's last holder lets go.
pub type OnDrained = Box<dyn FnOnce(&str, i64, u64) + Send + Sync>;

/// The per-request handle on a loaded version. Cheap to clone (one `Arc`); dereferences to
/// the version's model name, number, servable and batcher.
#[derive(Clone, Debug)]
pub struct ServableHandle(Arc<LoadedVersion>);

impl ServableHandle {
    pub(super) fn new(version: Arc<LoadedVersion>) -> Self {
        ServableHandle(version)
    }

    /// "model `m` version 3", the way every error message names what answered.
    pub fn describe(&self) -> String {
        format!("model `{}` version {}", self.0.model, self.0.version)
    }
}

impl std::ops::Deref for ServableHandle {
    type Target = LoadedVersion;

    fn deref(&self) -> &LoadedVersion {
        &self.0
    }
}

/// A version that serves, as the manager keeps it. Requests see it through
/// [`ServableHandle`]s; when the last handle and the manager's own reference are gone,
/// `Drop` tells the manager (through a channel, never a lock) that the version has drained.
pub struct LoadedVersion {
    model: String,
    version: i64,
    pub(super) load_id: u64,
    servable: Arc<dyn Servable>,
    /// This version's batching queue, started by the first request when batching is on.
    batcher: OnceLock<Batcher>,
    on_drop: Option<OnDrained>,
}

impl LoadedVersion {
    pub fn new(
        model: &str,
        version: i64,
        load_id: u64,
        servable: Arc<dyn Servable>,
        on_drop: Option<OnDrained>,
    ) -> Self {
        LoadedVersion {
            model: model.to_string(),
            version,
            load_id,
            servable,
            batcher: OnceLock::new(),
            on_drop,
        }
    }

    /// This version's batcher, started by `start` on first use.
    pub fn batcher(&self, start: impl FnOnce(Arc<dyn Servable>) -> Batcher) -> &Batcher {
        self.batcher.get_or_init(|| start(self.servable.clone()))
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    pub fn servable(&self) -> &dyn Servable {
        self.servable.as_ref()
    }
}

impl Drop for LoadedVersion {
    fn drop(&mut self) {
        if let Some(notify) = self.on_drop.take() {
            notify(&self.model, self.version, self.load_id);
        }
    }
}

impl std::fmt::Debug for LoadedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoadedVersion({} v{})", self.model, self.version)
    }
}
