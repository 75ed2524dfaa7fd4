//! The watching half of the Source: a `notify` watcher on every base path (or, while a base
//! path does not exist, on its nearest existing ancestor, so its creation is seen), plus an
//! optional poll for filesystems that do not deliver events. Bursts of events are coalesced
//! into one scan per model.
//! Like the rest of the Source, it only reports scans through its callback; it never loads
//! or decides.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Scan, WatchedModel};

/// Receives every scan: the model name and what its base path holds.
pub type ScanCallback = Arc<dyn Fn(&str, Scan) + Send + Sync>;

/// How long events are gathered before the affected models are scanned. Copying a version
/// folder produces dozens of events; one scan after them is enough.
const DEBOUNCE: Duration = Duration::from_millis(50);

pub struct FileSystemSource {
    task: JoinHandle<()>,
}

impl FileSystemSource {
    /// Starts the source on the current runtime. `models` holds every configured model;
    /// a change rescans them all. `poll` of `None` disables polling. The folder of a model
    /// in object storage is scanned like any other once its mirror has made it; before
    /// that, the mirror reports for it.
    pub fn start(
        models: watch::Receiver<Vec<WatchedModel>>,
        poll: Option<Duration>,
        on_scan: ScanCallback,
    ) -> Self {
        FileSystemSource {
            task: tokio::spawn(run(models, poll, on_scan)),
        }
    }
}

impl Drop for FileSystemSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    mut models_rx: watch::Receiver<Vec<WatchedModel>>,
    poll: Option<Duration>,
    on_scan: ScanCallback,
) {
    let (event_tx, mut event_rx) = mpsc::unbounded_channel::<notify::Result<notify::Event>>();
    let mut watcher = match notify::recommended_watcher(move |event| {
        let _ = event_tx.send(event);
    }) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "file-system events are unavailable; relying on polling");
            None
        }
    };
    let mut watched: HashMap<PathBuf, RecursiveMode> = HashMap::new();
    let mut models = models_rx.borrow_and_update().clone();
    let mut dirty: HashSet<String> = models.iter().map(|m| m.name.clone()).collect();
    let mut deadline = Some(Instant::now());
    let mut ticker = poll.map(|p| {
        let mut t = tokio::time::interval_at(Instant::now() + p, p);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });

    loop {
        tokio::select! {
            changed = models_rx.changed() => {
                if changed.is_err() {
                    return; // the manager is gone
                }
                models = models_rx.borrow_and_update().clone();
                dirty = models.iter().map(|m| m.name.clone()).collect();
                deadline = Some(Instant::now());
            }
            Some(event) = event_rx.recv() => match event {
                Ok(event) => {
                    for m in &models {
                        if event.paths.iter().any(|p| p.starts_with(&m.dir) || m.dir.starts_with(p)) {
                            dirty.insert(m.name.clone());
                        }
                    }
                    if !dirty.is_empty() && deadline.is_none() {
                        deadline = Some(Instant::now() + DEBOUNCE);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "file-system watcher error"),
            },
            _ = async { ticker.as_mut().expect("guarded by the branch condition").tick().await }, if ticker.is_some() => {
                dirty = models.iter().map(|m| m.name.clone()).collect();
                deadline = Some(Instant::now());
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                deadline = None;
                let batch: Vec<WatchedModel> = models
                    .iter()
                    .filter(|m| dirty.contains(&m.name))
                    // A remote model's mirror reports until its folder exists.
                    .filter(|m| m.remote.is_none() || m.dir.is_dir())
                    .cloned()
                    .collect();
                dirty.clear();
                let scans = tokio::task::spawn_blocking(move || {
                    batch.into_iter().map(|m| { let s = m.scan(); (m.name, s) }).collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default();
                for (name, found) in scans {
                    on_scan(&name, found);
                }
                if let Some(w) = watcher.as_mut() {
                    update_watches(w, &mut watched, &models);
                }
            }
        }
    }
}

/// Watches each existing base path recursively (new version folders and files being copied
/// into them), and the nearest existing ancestor of each missing one.
fn update_watches(
    watcher: &mut impl Watcher,
    watched: &mut HashMap<PathBuf, RecursiveMode>,
    models: &[WatchedModel],
) {
    let mut wanted: HashMap<PathBuf, RecursiveMode> = HashMap::new();
    for base in models.iter().map(|m| &m.dir) {
        if base.is_dir() {
            wanted.insert(base.clone(), RecursiveMode::Recursive);
        } else if let Some(ancestor) = nearest_existing(base) {
            wanted
                .entry(ancestor)
                .or_insert(RecursiveMode::NonRecursive);
        }
    }
    watched.retain(|path, mode| {
        if wanted.get(path) == Some(mode) {
            return true;
        }
        let _ = watcher.unwatch(path);
        false
    });
    for (path, mode) in wanted {
        if watched.contains_key(&path) {
            continue;
        }
        match watcher.watch(&path, mode) {
            Ok(()) => {
                watched.insert(path, mode);
            }
            Err(e) => tracing::debug!(path = %path.display(), error = %e, "cannot watch yet"),
        }
    }
}

fn nearest_existing(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .find(|p| p.is_dir())
        .map(Path::to_path_buf)
}
