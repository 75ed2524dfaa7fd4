//! Version reconciliation, as plain data: per model, what is on disk and what each version
//! is doing. [`ModelState::reconcile`] is the whole version policy: it decides which
//! versions to load and which to unload, and is pure (no threads, no I/O, no clock reads
//! beyond timestamps) so it can be tested on its own. It must not load or publish anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::handle::LoadedVersion;
use crate::config::ModelDef;
use crate::source::{Scan, VersionDir};

/// TF Serving's version states, with its numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionState {
    Start = 10,
    Loading = 20,
    Available = 30,
    Unloading = 40,
    End = 50,
}

impl VersionState {
    pub fn name(self) -> &'static str {
        match self {
            VersionState::Start => "START",
            VersionState::Loading => "LOADING",
            VersionState::Available => "AVAILABLE",
            VersionState::Unloading => "UNLOADING",
            VersionState::End => "END",
        }
    }
}

#[derive(Debug)]
pub enum Phase {
    Loading {
        id: u64,
        cancel: Arc<AtomicBool>,
        /// The last failed attempt while retries remain.
        retrying: Option<String>,
    },
    Available(Arc<LoadedVersion>),
    /// Out of the serving snapshot; requests that started on it are finishing.
    Unloading {
        id: u64,
    },
    Unloaded,
    Failed(String),
}

#[derive(Debug)]
pub struct VersionEntry {
    pub phase: Phase,
    /// The folder's fingerprint when the load started: a failed version is retried only
    /// once its files change.
    pub fingerprint: u64,
    pub since: Instant,
}

impl VersionEntry {
    pub fn state(&self) -> VersionState {
        match self.phase {
            Phase::Loading { .. } => VersionState::Loading,
            Phase::Available(_) => VersionState::Available,
            Phase::Unloading { .. } => VersionState::Unloading,
            Phase::Unloaded | Phase::Failed(_) => VersionState::End,
        }
    }

    pub fn error(&self) -> Option<&str> {
        match &self.phase {
            Phase::Failed(e) => Some(e),
            _ => None,
        }
    }

    pub fn loaded(&self) -> Option<&Arc<LoadedVersion>> {
        match &self.phase {
            Phase::Available(l) => Some(l),
            _ => None,
        }
    }

    /// Words for an error message about this version: "is loading", "failed to load: ...".
    pub fn describe(&self) -> String {
        match &self.phase {
            Phase::Loading {
                retrying: Some(e), ..
            } => format!("is loading (retrying after: {e})"),
            Phase::Loading { .. } => "is loading".into(),
            Phase::Available(_) => "is available".into(),
            Phase::Unloading { .. } => "is being unloaded".into(),
            Phase::Unloaded => "was unloaded".into(),
            Phase::Failed(e) => format!("failed to load: {e}"),
        }
    }
}

/// A load the manager must start.
#[derive(Debug, Clone)]
pub struct LoadJob {
    pub model: String,
    pub version: i64,
    pub path: PathBuf,
    pub id: u64,
    pub cancel: Arc<AtomicBool>,
}

/// How many finished (END) versions a model keeps in its status before forgetting the oldest.
const KEPT_ENDED: usize = 16;

#[derive(Debug)]
pub struct ModelState {
    pub def: ModelDef,
    /// The last scan of the base path; `None` until the first one.
    pub disk: Option<Scan>,
    pub versions: BTreeMap<i64, VersionEntry>,
}

/// What [`ModelState::reconcile`] changed.
#[derive(Debug, Default)]
pub struct Changes {
    pub loads: Vec<LoadJob>,
    pub unloading: Vec<i64>,
    pub cancelled: Vec<i64>,
}

impl ModelState {
    pub fn new(def: ModelDef) -> Self {
        ModelState {
            def,
            disk: None,
            versions: BTreeMap::new(),
        }
    }

    pub fn on_disk(&self) -> Option<&BTreeMap<i64, VersionDir>> {
        match &self.disk {
            Some(Scan::Versions(v)) => Some(v),
            _ => None,
        }
    }

    /// Versions that could be served: on disk, and not a failed load whose files have not
    /// changed since.
    pub fn candidates(&self) -> BTreeSet<i64> {
        let Some(disk) = self.on_disk() else {
            return BTreeSet::new();
        };
        disk.iter()
            .filter(|(v, dir)| {
                !self.versions.get(v).is_some_and(|e| {
                    matches!(e.phase, Phase::Failed(_)) && e.fingerprint == dir.fingerprint
                })
            })
            .map(|(v, _)| *v)
            .collect()
    }

    /// The versions the policy wants: its selection among the candidates, plus any candidate
    /// a label points at (a label keeps its version loaded, so it never dangles because a
    /// newer version arrived under `latest`).
    pub fn aspired(&self) -> BTreeSet<i64> {
        let candidates = self.candidates();
        let mut aspired = self.def.policy.select(&candidates);
        aspired.extend(self.def.labels.values().filter(|v| candidates.contains(v)));
        aspired
    }

    /// Brings the versions in line with the policy and the disk. Availability first: a
    /// version that is no longer wanted (even one whose folder is gone) keeps serving until a
    /// wanted one is AVAILABLE or nothing wanted is still loading. A failed load never takes
    /// down what serves, because failed versions are not candidates.
    pub fn reconcile(&mut self, next_id: &mut u64) -> Changes {
        let mut changes = Changes::default();
        let aspired = self.aspired();
        let empty = BTreeMap::new();
        let disk = match &self.disk {
            Some(Scan::Versions(v)) => v,
            _ => &empty,
        };

        for &version in &aspired {
            let needs_load = match self.versions.get(&version).map(|e| &e.phase) {
                None | Some(Phase::Unloaded | Phase::Failed(_) | Phase::Unloading { .. }) => true,
                Some(Phase::Loading { .. } | Phase::Available(_)) => false,
            };
            if !needs_load {
                continue;
            }
            let dir = &disk[&version];
            *next_id += 1;
            let cancel = Arc::new(AtomicBool::new(false));
            self.versions.insert(
                version,
                VersionEntry {
                    phase: Phase::Loading {
                        id: *next_id,
                        cancel: cancel.clone(),
                        retrying: None,
                    },
                    fingerprint: dir.fingerprint,
                    since: Instant::now(),
                },
            );
            changes.loads.push(LoadJob {
                model: self.def.name.clone(),
                version,
                path: dir.path.clone(),
                id: *next_id,
                cancel,
            });
        }

        let wanted_available = aspired.iter().any(|v| {
            matches!(
                self.versions.get(v).map(|e| &e.phase),
                Some(Phase::Available(_))
            )
        });
        let wanted_loading = aspired.iter().any(|v| {
            matches!(
                self.versions.get(v).map(|e| &e.phase),
                Some(Phase::Loading { .. })
            )
        });
        for (version, entry) in self.versions.iter_mut() {
            if aspired.contains(version) {
                continue;
            }
            match &entry.phase {
                Phase::Loading { cancel, .. } => {
                    cancel.store(true, Ordering::Release);
                    entry.phase = Phase::Unloaded;
                    entry.since = Instant::now();
                    changes.cancelled.push(*version);
                }
                // Even a version whose folder was removed keeps serving from memory until
                // its replacement is AVAILABLE: rolling back by moving the bad folder away
                // never leaves the model without a version.
                Phase::Available(loaded) if wanted_available || !wanted_loading => {
                    entry.phase = Phase::Unloading { id: loaded.load_id };
                    entry.since = Instant::now();
                    changes.unloading.push(*version);
                }
                _ => {}
            }
        }
        self.forget_old_ended();
        changes
    }

    fn forget_old_ended(&mut self) {
        let mut ended: Vec<(Instant, i64)> = self
            .versions
            .iter()
            .filter(|(_, e)| e.state() == VersionState::End)
            .map(|(v, e)| (e.since, *v))
            .collect();
        if ended.len() > KEPT_ENDED {
            ended.sort();
            for (_, v) in &ended[..ended.len() - KEPT_ENDED] {
                self.versions.remove(v);
            }
        }
    }

    pub fn available(&self) -> Vec<i64> {
        self.versions
            .iter()
            .filter(|(_, e)| e.loaded().is_some())
            .map(|(v, _)| *v)
            .collect()
    }

    /// Why this model has nothing to serve, for readiness and NOT_FOUND messages.
    pub fn why_unavailable(&self) -> String {
        match &self.disk {
            None => "its base path has not been scanned yet".into(),
            Some(Scan::Unavailable(why)) => why.clone(),
            Some(Scan::Versions(v)) if v.is_empty() => format!(
                "no version folders (positive integers) in {}",
                self.def.base_path
            ),
            Some(Scan::Versions(_)) => {
                let parts: Vec<String> = self
                    .versions
                    .iter()
                    .rev()
                    .filter(|(_, e)| e.loaded().is_none())
                    .take(3)
                    .map(|(v, e)| format!("version {v} {}", e.describe()))
                    .collect();
                if parts.is_empty() {
                    "no version is wanted by the version policy".into()
                } else {
                    parts.join("; ")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VersionPolicy;
    use crate::servable::{Inputs, Outputs, Servable, ServableError, SignatureMap};

    struct Dummy;
    impl Servable for Dummy {
        fn kind(&self) -> &'static str {
            "dummy"
        }
        fn signatures(&self) -> &SignatureMap {
            unimplemented!()
        }
        fn run(&self, _: &str, _: &Inputs) -> Result<Outputs, ServableError> {
            unimplemented!()
        }
    }

    fn model(policy: VersionPolicy, disk: &[i64]) -> ModelState {
        let mut m = ModelState::new(ModelDef {
            name: "m".into(),
            base_path: crate::config::BasePath::Local("/m".into()),
            policy,
            labels: Default::default(),
        });
        set_disk(&mut m, disk);
        m
    }

    fn set_disk(m: &mut ModelState, disk: &[i64]) {
        m.disk = Some(Scan::Versions(
            disk.iter()
                .map(|&v| {
                    (
                        v,
                        VersionDir {
                            path: format!("/m/{v}").into(),
                            fingerprint: 7,
                        },
                    )
                })
                .collect(),
        ));
    }

    fn finish(m: &mut ModelState, version: i64, ok: bool) {
        let e = m.versions.get_mut(&version).unwrap();
        let Phase::Loading { id, .. } = e.phase else {
            panic!("not loading")
        };
        e.phase = if ok {
            Phase::Available(Arc::new(LoadedVersion::new(
                "m",
                version,
                id,
                Arc::new(Dummy),
                None,
            )))
        } else {
            Phase::Failed("boom".into())
        };
    }

    fn states(m: &ModelState) -> Vec<(i64, VersionState)> {
        m.versions.iter().map(|(v, e)| (*v, e.state())).collect()
    }

    #[test]
    fn new_version_loads_before_the_old_one_unloads() {
        let mut id = 0;
        let mut m = model(VersionPolicy::Latest(1), &[1]);
        assert_eq!(m.reconcile(&mut id).loads.len(), 1);
        finish(&mut m, 1, true);
        m.reconcile(&mut id);
        set_disk(&mut m, &[1, 2]);
        let c = m.reconcile(&mut id);
        assert_eq!(
            c.loads.iter().map(|j| j.version).collect::<Vec<_>>(),
            vec![2]
        );
        assert!(
            c.unloading.is_empty(),
            "version 1 must keep serving while 2 loads"
        );
        finish(&mut m, 2, true);
        let c = m.reconcile(&mut id);
        assert_eq!(c.unloading, vec![1]);
        assert_eq!(
            states(&m),
            vec![(1, VersionState::Unloading), (2, VersionState::Available)]
        );
    }

    #[test]
    fn a_failed_version_never_takes_down_the_serving_one_and_is_retried_when_it_changes() {
        let mut id = 0;
        let mut m = model(VersionPolicy::Latest(1), &[1]);
        m.reconcile(&mut id);
        finish(&mut m, 1, true);
        set_disk(&mut m, &[1, 2]);
        m.reconcile(&mut id);
        finish(&mut m, 2, false);
        let c = m.reconcile(&mut id);
        assert!(c.loads.is_empty() && c.unloading.is_empty());
        assert_eq!(
            states(&m),
            vec![(1, VersionState::Available), (2, VersionState::End)]
        );
        assert_eq!(m.aspired(), [1].into());
        // The folder of version 2 is rewritten: its fingerprint changes, so it is tried again.
        if let Some(Scan::Versions(d)) = &mut m.disk {
            d.get_mut(&2).unwrap().fingerprint = 8;
        }
        let c = m.reconcile(&mut id);
        assert_eq!(
            c.loads.iter().map(|j| j.version).collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn a_removed_folder_unloads_and_a_load_in_progress_is_cancelled() {
        let mut id = 0;
        let mut m = model(VersionPolicy::All, &[1, 2]);
        let jobs = m.reconcile(&mut id).loads;
        finish(&mut m, 1, true);
        set_disk(&mut m, &[]);
        let c = m.reconcile(&mut id);
        assert_eq!(c.unloading, vec![1]);
        assert_eq!(c.cancelled, vec![2]);
        assert!(jobs
            .iter()
            .find(|j| j.version == 2)
            .unwrap()
            .cancel
            .load(Ordering::Acquire));
    }

    #[test]
    fn removing_the_newest_folder_rolls_back_without_a_gap() {
        let mut id = 0;
        let mut m = model(VersionPolicy::Latest(1), &[2, 3]);
        m.reconcile(&mut id);
        finish(&mut m, 3, true);
        set_disk(&mut m, &[2]);
        let c = m.reconcile(&mut id);
        assert_eq!(
            c.loads.iter().map(|j| j.version).collect::<Vec<_>>(),
            vec![2]
        );
        assert!(
            c.unloading.is_empty(),
            "version 3 serves from memory until 2 is back"
        );
        finish(&mut m, 2, true);
        assert_eq!(m.reconcile(&mut id).unloading, vec![3]);
    }

    #[test]
    fn labels_keep_their_version_and_specific_waits_for_its_versions() {
        let mut id = 0;
        let mut m = model(VersionPolicy::Latest(1), &[1, 2]);
        m.def.labels.insert("stable".into(), 1);
        assert_eq!(m.aspired(), [1, 2].into());
        let mut s = model(VersionPolicy::Specific([3].into()), &[1, 2]);
        assert!(s.reconcile(&mut id).loads.is_empty());
        set_disk(&mut s, &[1, 2, 3]);
        assert_eq!(s.reconcile(&mut id).loads[0].version, 3);
    }

    #[test]
    fn explains_why_nothing_serves() {
        let mut m = model(VersionPolicy::Latest(1), &[]);
        assert!(m.why_unavailable().starts_with("no version folders"));
        m.disk = Some(Scan::Unavailable("base path /m does not exist".into()));
        assert_eq!(m.why_unavailable(), "base path /m does not exist");
        set_disk(&mut m, &[4]);
        let mut id = 0;
        m.reconcile(&mut id);
        finish(&mut m, 4, false);
        assert_eq!(m.why_unavailable(), "version 4 failed to load: boom");
    }
}
