//! Model repositories in object storage. A base path `s3://bucket/prefix/model` (or `gs://`,
//! `az://`) is listed every poll; the versions its policy wants are downloaded into the
//! model's folder in the local model cache, each into a hidden folder renamed into place
//! when complete, and the file-system source serves that folder like any local base path.
//! Versions that leave the bucket leave the folder (and so are unloaded); versions the
//! policy no longer wants leave it once nothing uses them.
//!
//! Object storage has no atomic folder, so a version is taken only when it is complete:
//! at once if its writer uploaded the marker object [`MARKER`] last (as
//! `candle_serving_cli push` does), otherwise when two listings a poll apart show the same
//! objects (names, sizes, ETags), i.e. its upload has paused for a whole poll interval. A
//! version taken before its upload ended fails to load; its listing then changes and it is
//! fetched and loaded again, as a half-copied local folder is.
//!
//! Like the rest of the Source, the mirror reports and decides nothing about serving.

use crate::util::fnv1a64;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{parse_version, RemoteModel, Scan, ScanCallback, WatchedModel};
use crate::config::VersionPolicy;

/// The object a writer uploads last into a version's prefix to say the version is complete.
pub const MARKER: &str = "_SUCCESS";

/// The file in each of the cache's model folders that says which URL it mirrors; only
/// folders with it are ever removed, so a cache dir pointed at a shared folder is safe.
const ORIGIN_FILE: &str = ".origin";

/// The lock file of a cache dir: one server process per cache dir.
const LOCK_FILE: &str = ".lock";

/// More objects than this under one version is not a model; the listing is refused.
const MAX_OBJECTS_PER_MODEL: usize = 100_000;

/// Deepest relative path of a file in a version (`1_Pooling/config.json` is 2).
const MAX_DEPTH: usize = 8;

/// Which versions of a model are loading, serving or draining: their files must stay.
pub type InUse = Arc<dyn Fn(&str) -> BTreeSet<i64> + Send + Sync>;

/// `--model_cache_dir`'s default: a folder under the system's temporary folder.
pub fn default_cache_dir() -> PathBuf {
    std::env::temp_dir().join("candle-serving-models")
}

/// The cache folder of one remote model: its name (made safe) and a hash of the URL, so
/// that two models, or one model moved to another URL, never share a folder.
pub fn cache_folder(cache: &Path, model: &str, url: &url::Url) -> PathBuf {
    let safe: String = model
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    cache.join(format!("{safe}-{:016x}", fnv1a64(url.as_str().bytes())))
}

/// Opens the store a URL names, with credentials and endpoint from the standard
/// variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`; `GOOGLE_*`; `AZURE_*`). Returns the store and the
/// prefix within it.
pub fn open(url: &url::Url) -> Result<(Arc<dyn ObjectStore>, ObjectPath), String> {
    use object_store::aws::AmazonS3Builder;
    use object_store::azure::MicrosoftAzureBuilder;
    use object_store::gcp::GoogleCloudStorageBuilder;
    // reqwest is built without a crypto provider of its own; the server's is ring.
    crate::install_crypto_provider();
    let (scheme, prefix) =
        ObjectStoreScheme::parse(url).map_err(|e| format!("cannot read {url}: {e}"))?;
    // A listing is repeated every poll anyway: a failure should surface in seconds, not
    // after the crate's default of three minutes of retries.
    let retry = object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(15),
        ..Default::default()
    };
    let built = match scheme {
        ObjectStoreScheme::AmazonS3 => {
            let mut builder = AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .with_retry(retry);
            if plain_http_endpoint(|k| std::env::var(k).ok()) {
                // As the AWS CLI and boto3 do: an endpoint written as http:// is meant.
                builder = builder.with_allow_http(true);
            }
            builder.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        ObjectStoreScheme::GoogleCloudStorage => GoogleCloudStorageBuilder::from_env()
            .with_url(url.as_str())
            .with_retry(retry)
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
        ObjectStoreScheme::MicrosoftAzure => MicrosoftAzureBuilder::from_env()
            .with_url(url.as_str())
            .with_retry(retry)
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
        _ => return Err(format!("{url}: not an object-storage URL")),
    };
    built
        .map(|store| (store, prefix))
        .map_err(|e| format!("cannot open {url}: {e}"))
}

/// Whether the S3 endpoint is given as `http://...` and `AWS_ALLOW_HTTP` is not set either
/// way. object_store refuses plain http unless told; an explicit `AWS_ALLOW_HTTP=false` wins.
fn plain_http_endpoint(var: impl Fn(&str) -> Option<String>) -> bool {
    var("AWS_ALLOW_HTTP").is_none()
        && ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
            .iter()
            .find_map(|k| var(k))
            .is_some_and(|e| e.to_ascii_lowercase().starts_with("http://"))
}

/// One object of a version: its path below the version, size and ETag.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    relative: Vec<String>,
    size: u64,
    e_tag: Option<String>,
}

/// What one listing found for one version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Listed {
    entries: Vec<Entry>,
    marked: bool,
}

impl Listed {
    /// Identifies the version's contents: changes whenever an object is added, removed or
    /// rewritten.
    fn digest(&self) -> String {
        let text: String = self
            .entries
            .iter()
            .map(|e| {
                format!(
                    "{}\t{}\t{}\n",
                    e.relative.join("/"),
                    e.size,
                    e.e_tag.as_deref().unwrap_or("")
                )
            })
            .collect();
        format!("{:016x}-{}", fnv1a64(text.bytes()), self.entries.len())
    }
}

/// Lists every version below `prefix`. Objects outside a version folder, and folder
/// placeholders, are ignored.
async fn list(
    store: &dyn ObjectStore,
    prefix: &ObjectPath,
) -> Result<BTreeMap<i64, Listed>, String> {
    let mut versions: BTreeMap<i64, Listed> = BTreeMap::new();
    let mut objects = store.list(Some(prefix));
    let mut count = 0usize;
    while let Some(meta) = objects.next().await {
        let meta = meta.map_err(|e| e.to_string())?;
        count += 1;
        if count > MAX_OBJECTS_PER_MODEL {
            return Err(format!(
                "more than {MAX_OBJECTS_PER_MODEL} objects under it; is the base path a model's?"
            ));
        }
        let Some(parts) = meta.location.prefix_match(prefix) else {
            continue;
        };
        let parts: Vec<String> = parts.map(|p| p.as_ref().to_string()).collect();
        let Some((first, relative)) = parts.split_first() else {
            continue;
        };
        let Some(version) = parse_version(std::ffi::OsStr::new(first)) else {
            continue;
        };
        let listed = versions.entry(version).or_default();
        if relative == [MARKER] {
            listed.marked = true;
            continue;
        }
        if relative.is_empty()
            || relative.len() > MAX_DEPTH
            || !relative.iter().all(|p| safe_part(p))
        {
            tracing::debug!(object = %meta.location, "not a file of a version; ignored");
            continue;
        }
        listed.entries.push(Entry {
            relative: relative.to_vec(),
            size: meta.size,
            e_tag: meta.e_tag,
        });
    }
    for listed in versions.values_mut() {
        listed.entries.sort();
    }
    versions.retain(|_, l| !l.entries.is_empty());
    Ok(versions)
}

/// A path component that is safe to create under a cache folder.
fn safe_part(part: &str) -> bool {
    !part.is_empty() && part != "." && part != ".." && !part.contains(['/', '\\', '\0'])
}

/// Mirrors every remote model of the configuration into the model cache.
pub struct RemoteMirror {
    task: JoinHandle<()>,
}

impl RemoteMirror {
    /// Starts the mirror on the current runtime. `poll` is how often each remote base path
    /// is listed (`None`: once, plus the listing that completes its versions). Fails if a
    /// configured model is remote and another process holds the cache dir.
    pub fn start(
        models: watch::Receiver<Vec<WatchedModel>>,
        cache: PathBuf,
        poll: Option<Duration>,
        in_use: InUse,
        on_scan: ScanCallback,
    ) -> Result<Self, String> {
        let lock = if models.borrow().iter().any(|m| m.remote.is_some()) {
            Some(CacheLock::acquire(&cache)?)
        } else {
            None
        };
        Ok(RemoteMirror {
            task: tokio::spawn(supervise(models, cache, poll, in_use, on_scan, lock)),
        })
    }
}

impl Drop for RemoteMirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One task per remote model; started, re-pointed and stopped as the configuration changes.
struct ModelTask {
    policy: watch::Sender<VersionPolicy>,
    task: JoinHandle<()>,
}

impl Drop for ModelTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn supervise(
    mut models_rx: watch::Receiver<Vec<WatchedModel>>,
    cache: PathBuf,
    poll: Option<Duration>,
    in_use: InUse,
    on_scan: ScanCallback,
    mut lock: Option<CacheLock>,
) {
    let mut tasks: HashMap<PathBuf, ModelTask> = HashMap::new();
    loop {
        let models = models_rx.borrow_and_update().clone();
        let remote: Vec<(&WatchedModel, &RemoteModel)> = models
            .iter()
            .filter_map(|m| m.remote.as_ref().map(|r| (m, r)))
            .collect();
        if !remote.is_empty() && lock.is_none() {
            match CacheLock::acquire(&cache) {
                Ok(l) => lock = Some(l),
                Err(why) => {
                    tracing::error!(error = %why, "models in object storage cannot be served");
                    for (m, _) in &remote {
                        on_scan(&m.name, Scan::Unavailable(why.clone()));
                    }
                }
            }
        }
        if lock.is_some() {
            tasks.retain(|dir, _| remote.iter().any(|(m, _)| &m.dir == dir));
            for (m, r) in &remote {
                match tasks.get(&m.dir) {
                    Some(t) => {
                        t.policy.send_if_modified(|p| {
                            let changed = *p != r.policy;
                            *p = r.policy.clone();
                            changed
                        });
                    }
                    None => {
                        let (policy, policy_rx) = watch::channel(r.policy.clone());
                        let mirror = Mirror {
                            model: m.name.clone(),
                            url: r.url.clone(),
                            dir: m.dir.clone(),
                            in_use: in_use.clone(),
                            on_scan: on_scan.clone(),
                        };
                        let task = tokio::spawn(mirror.run(policy_rx, poll));
                        tasks.insert(m.dir.clone(), ModelTask { policy, task });
                    }
                }
            }
            let keep: Vec<PathBuf> = remote.iter().map(|(m, _)| m.dir.clone()).collect();
            let cache = cache.clone();
            let _ = tokio::task::spawn_blocking(move || remove_unconfigured(&cache, &keep)).await;
        }
        if models_rx.changed().await.is_err() {
            return; // the manager is gone
        }
    }
}

/// Removes the cache folders of models no longer configured (only folders this server
/// made: those with an origin file).
fn remove_unconfigured(cache: &Path, keep: &[PathBuf]) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if keep.contains(&path) || !path.join(ORIGIN_FILE).is_file() {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(folder = %path.display(), "removed the cache of a model no longer configured")
            }
            Err(e) => {
                tracing::warn!(folder = %path.display(), error = %e, "cannot remove an unused cache folder")
            }
        }
    }
}

/// An exclusive `flock` on the cache dir's lock file, held while the server runs: two
/// processes sharing a cache would remove each other's versions.
struct CacheLock {
    _file: std::fs::File,
}

impl CacheLock {
    fn acquire(cache: &Path) -> Result<CacheLock, String> {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(cache)
            .map_err(|e| format!("cannot create the model cache {}: {e}", cache.display()))?;
        let path = cache.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(format!(
                "the model cache {} is in use by another server process; give each process its own --model_cache_dir",
                cache.display()
            ));
        }
        Ok(CacheLock { _file: file })
    }
}

/// The mirror of one remote model.
struct Mirror {
    model: String,
    url: url::Url,
    dir: PathBuf,
    in_use: InUse,
    on_scan: ScanCallback,
}

/// What one round of mirroring left undone.
#[derive(Default)]
struct Round {
    /// Versions listed but not yet known to be complete.
    waiting: BTreeSet<i64>,
}

impl Mirror {
    async fn run(self, mut policy: watch::Receiver<VersionPolicy>, poll: Option<Duration>) {
        let (store, prefix) = match open(&self.url) {
            Ok(opened) => opened,
            Err(why) => {
                tracing::error!(model = %self.model, error = %why, "cannot open the model's base path");
                (self.on_scan)(&self.model, Scan::Unavailable(why));
                return;
            }
        };
        self.remove_partials();
        // The previous listing, to see which unmarked versions stopped changing.
        let mut previous: BTreeMap<i64, Listed> = BTreeMap::new();
        loop {
            let wanted = policy.borrow_and_update().clone();
            let retry = match self
                .round(store.as_ref(), &prefix, &wanted, &mut previous)
                .await
            {
                Ok(round) => (!round.waiting.is_empty()).then_some(Duration::from_secs(1)),
                Err(why) => {
                    tracing::warn!(model = %self.model, url = %self.url, error = %why, "cannot mirror the model's base path");
                    if !self.dir.is_dir() {
                        (self.on_scan)(
                            &self.model,
                            Scan::Unavailable(format!("cannot list {}: {why}", self.url)),
                        );
                    }
                    Some(Duration::from_secs(5))
                }
            };
            // Polling lists at its own pace; without it, only until every version settled.
            let Some(wait) = poll.or(retry) else {
                if policy.changed().await.is_err() {
                    return;
                }
                continue;
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                changed = policy.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Lists the base path, fetches the complete versions the policy wants, and removes
    /// what is no longer wanted.
    async fn round(
        &self,
        store: &dyn ObjectStore,
        prefix: &ObjectPath,
        policy: &VersionPolicy,
        previous: &mut BTreeMap<i64, Listed>,
    ) -> Result<Round, String> {
        let listed = list(store, prefix).await?;
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let origin = self.dir.join(ORIGIN_FILE);
        if !origin.is_file() {
            tokio::fs::write(&origin, format!("{}\n", self.url))
                .await
                .map_err(|e| format!("cannot write {}: {e}", origin.display()))?;
        }
        let mut round = Round::default();
        let mut complete = BTreeSet::new();
        for (version, now) in &listed {
            let digest = now.digest();
            let cached = self.cached_digest(*version).await;
            if now.marked
                || previous.get(version) == Some(now)
                || cached.as_deref() == Some(&digest)
            {
                complete.insert(*version);
            } else {
                round.waiting.insert(*version);
            }
        }
        *previous = listed.clone();

        let wanted = policy.select(&complete);
        for &version in &wanted {
            let digest = listed[&version].digest();
            if self.cached_digest(version).await.as_deref() == Some(&digest) {
                continue;
            }
            self.fetch(store, prefix, version, &listed[&version], &digest)
                .await
                .map_err(|e| format!("version {version}: {e}"))?;
        }

        // Cached versions that left the bucket go now (the manager unloads them); those the
        // policy no longer wants go once nothing uses them.
        let in_use = (self.in_use)(&self.model);
        for version in self.cached_versions() {
            let stays = wanted.contains(&version)
                || (listed.contains_key(&version) && in_use.contains(&version));
            if !stays {
                self.remove_version(version);
            }
        }
        Ok(round)
    }

    fn digest_file(&self, version: i64) -> PathBuf {
        self.dir.join(format!(".{version}.listing"))
    }

    /// The listing digest the cached copy of `version` was fetched at, if it is cached.
    async fn cached_digest(&self, version: i64) -> Option<String> {
        if !self.dir.join(version.to_string()).is_dir() {
            return None;
        }
        tokio::fs::read_to_string(self.digest_file(version))
            .await
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn cached_versions(&self) -> Vec<i64> {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| parse_version(&e.file_name()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Downloads `version` into a hidden folder and renames it into place.
    async fn fetch(
        &self,
        store: &dyn ObjectStore,
        prefix: &ObjectPath,
        version: i64,
        listed: &Listed,
        digest: &str,
    ) -> Result<(), String> {
        let started = std::time::Instant::now();
        let partial = self
            .dir
            .join(format!(".{version}.partial-{}", std::process::id()));
        let _ = tokio::fs::remove_dir_all(&partial).await;
        let result = async {
            let mut bytes = 0u64;
            for entry in &listed.entries {
                let location = entry
                    .relative
                    .iter()
                    .fold(prefix.clone().join(version.to_string()), |l, part| {
                        l.join(part.as_str())
                    });
                let mut target = partial.clone();
                target.extend(&entry.relative);
                bytes += download(store, &location, &target, entry.size).await?;
            }
            let target = self.dir.join(version.to_string());
            let stale = self
                .dir
                .join(format!(".{version}.stale-{}", std::process::id()));
            if target.exists() {
                // A version rewritten in the bucket: the new copy replaces the old one.
                tokio::fs::rename(&target, &stale)
                    .await
                    .map_err(|e| format!("cannot move the old copy aside: {e}"))?;
            }
            tokio::fs::rename(&partial, &target)
                .await
                .map_err(|e| format!("cannot rename into {}: {e}", target.display()))?;
            let _ = tokio::fs::remove_dir_all(&stale).await;
            tokio::fs::write(self.digest_file(version), digest)
                .await
                .map_err(|e| format!("cannot record the listing: {e}"))?;
            Ok::<u64, String>(bytes)
        }
        .await;
        match result {
            Ok(bytes) => {
                tracing::info!(
                    model = %self.model,
                    version,
                    files = listed.entries.len(),
                    bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "fetched a version from object storage"
                );
                Ok(())
            }
            Err(why) => {
                let _ = tokio::fs::remove_dir_all(&partial).await;
                Err(why)
            }
        }
    }

    fn remove_version(&self, version: i64) {
        let folder = self.dir.join(version.to_string());
        match std::fs::remove_dir_all(&folder) {
            Ok(()) => {
                let _ = std::fs::remove_file(self.digest_file(version));
                tracing::info!(model = %self.model, version, "removed a cached version that is no longer served");
            }
            Err(e) => {
                tracing::warn!(model = %self.model, version, error = %e, "cannot remove a cached version")
            }
        }
    }

    /// Hidden folders of an earlier process that stopped mid-download.
    fn remove_partials(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && (name.contains(".partial-") || name.contains(".stale-")) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Streams one object into `target`, checking it has the listed size.
async fn download(
    store: &dyn ObjectStore,
    location: &ObjectPath,
    target: &Path,
    size: u64,
) -> Result<u64, String> {
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let got = store
        .get(location)
        .await
        .map_err(|e| format!("cannot read {location}: {e}"))?;
    let mut file = tokio::fs::File::create(target)
        .await
        .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let mut stream = got.into_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("reading {location}: {e}"))?;
        written += chunk.len() as u64;
        if written > size {
            return Err(format!(
                "{location} is larger than listed; it is being rewritten"
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| format!("writing {}: {e}", target.display()))?;
    }
    if written != size {
        return Err(format!("{location} is {written} bytes, listed as {size}"));
    }
    file.sync_all()
        .await
        .map_err(|e| format!("writing {}: {e}", target.display()))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::PutPayload;

    fn url() -> url::Url {
        "s3://bucket/models/m".parse().unwrap()
    }

    #[test]
    fn an_http_endpoint_allows_http_unless_told_otherwise() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(plain_http_endpoint(env(&[(
            "AWS_ENDPOINT_URL",
            "http://127.0.0.1:9000"
        )])));
        assert!(plain_http_endpoint(env(&[(
            "AWS_ENDPOINT_URL_S3",
            "HTTP://minio:9000"
        )])));
        assert!(!plain_http_endpoint(env(&[(
            "AWS_ENDPOINT_URL",
            "https://s3.example.com"
        )])));
        assert!(!plain_http_endpoint(env(&[])));
        assert!(!plain_http_endpoint(env(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_ALLOW_HTTP", "false"),
        ])));
    }

    #[test]
    fn cache_folders_are_stable_and_safe() {
        let cache = Path::new("/cache");
        let a = cache_folder(cache, "../m/x", &url());
        assert_eq!(a.parent(), Some(cache));
        assert!(a
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("___m_x-"));
        assert_eq!(a, cache_folder(cache, "../m/x", &url()));
        let other: url::Url = "s3://bucket/models/n".parse().unwrap();
        assert_ne!(a, cache_folder(cache, "../m/x", &other));
    }

    async fn put(store: &InMemory, key: &str, body: &str) {
        store
            .put(&ObjectPath::from(key), PutPayload::from(body.to_string()))
            .await
            .unwrap();
    }

    fn mirror(dir: &Path, in_use: BTreeSet<i64>) -> Mirror {
        Mirror {
            model: "m".into(),
            url: url(),
            dir: dir.to_path_buf(),
            in_use: Arc::new(move |_| in_use.clone()),
            on_scan: Arc::new(|_, _| {}),
        }
    }

    fn versions(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn unmarked_versions_wait_for_a_quiet_listing_and_marked_ones_do_not() {
        let store = InMemory::new();
        let prefix = ObjectPath::from("models/m");
        put(&store, "models/m/1/config.json", "{}").await;
        put(&store, "models/m/1/sub/vocab.txt", "a\nb").await;
        put(&store, "models/m/notes.txt", "not a version").await;
        let cache = tempfile::tempdir().unwrap();
        let m = mirror(cache.path(), BTreeSet::new());
        let mut previous = BTreeMap::new();
        let policy = VersionPolicy::All;

        let round = m
            .round(&store, &prefix, &policy, &mut previous)
            .await
            .unwrap();
        assert_eq!(
            round.waiting,
            [1].into(),
            "first sight of an unmarked version"
        );
        assert!(versions(cache.path()).is_empty());

        let round = m
            .round(&store, &prefix, &policy, &mut previous)
            .await
            .unwrap();
        assert!(round.waiting.is_empty());
        assert_eq!(versions(cache.path()), ["1"]);
        assert_eq!(
            std::fs::read_to_string(cache.path().join("1/sub/vocab.txt")).unwrap(),
            "a\nb"
        );

        // A marked version is taken at first sight; the marker itself is not copied.
        put(&store, "models/m/2/config.json", "{\"v\": 2}").await;
        put(&store, "models/m/2/_SUCCESS", "").await;
        m.round(&store, &prefix, &policy, &mut previous)
            .await
            .unwrap();
        assert_eq!(versions(cache.path()), ["1", "2"]);
        assert!(!cache.path().join("2/_SUCCESS").exists());

        // A version still changing between listings is not taken.
        put(&store, "models/m/3/config.json", "{}").await;
        m.round(&store, &prefix, &policy, &mut previous)
            .await
            .unwrap();
        put(&store, "models/m/3/model.safetensors", "weights").await;
        let round = m
            .round(&store, &prefix, &policy, &mut previous)
            .await
            .unwrap();
        assert_eq!(round.waiting, [3].into());
        assert_eq!(versions(cache.path()), ["1", "2"]);
    }

    #[tokio::test]
    async fn the_policy_picks_what_is_fetched_and_what_leaves_the_bucket_leaves_the_cache() {
        let store = InMemory::new();
        let prefix = ObjectPath::from("models/m");
        for v in 1..=3 {
            put(&store, &format!("models/m/{v}/config.json"), "{}").await;
            put(&store, &format!("models/m/{v}/_SUCCESS"), "").await;
        }
        let cache = tempfile::tempdir().unwrap();
        let mut previous = BTreeMap::new();
        // Version 2 serves; the policy now wants only the latest.
        std::fs::create_dir_all(cache.path().join("2")).unwrap();
        let m = mirror(cache.path(), [2].into());
        m.round(&store, &prefix, &VersionPolicy::Latest(1), &mut previous)
            .await
            .unwrap();
        assert_eq!(
            versions(cache.path()),
            ["2", "3"],
            "2 stays while it serves"
        );

        let m = mirror(cache.path(), [3].into());
        m.round(&store, &prefix, &VersionPolicy::Latest(1), &mut previous)
            .await
            .unwrap();
        assert_eq!(versions(cache.path()), ["3"]);

        // Version 3 leaves the bucket: it leaves the cache even though it serves, and the
        // policy falls back to version 2.
        store
            .delete(&ObjectPath::from("models/m/3/config.json"))
            .await
            .unwrap();
        store
            .delete(&ObjectPath::from("models/m/3/_SUCCESS"))
            .await
            .unwrap();
        m.round(&store, &prefix, &VersionPolicy::Latest(1), &mut previous)
            .await
            .unwrap();
        assert_eq!(versions(cache.path()), ["2"]);
    }

    #[tokio::test]
    async fn a_rewritten_version_is_fetched_again() {
        let store = InMemory::new();
        let prefix = ObjectPath::from("models/m");
        put(&store, "models/m/1/config.json", "old").await;
        put(&store, "models/m/1/_SUCCESS", "").await;
        let cache = tempfile::tempdir().unwrap();
        let m = mirror(cache.path(), BTreeSet::new());
        let mut previous = BTreeMap::new();
        m.round(&store, &prefix, &VersionPolicy::All, &mut previous)
            .await
            .unwrap();
        put(&store, "models/m/1/config.json", "new!").await;
        m.round(&store, &prefix, &VersionPolicy::All, &mut previous)
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(cache.path().join("1/config.json")).unwrap(),
            "new!"
        );
        let hidden: Vec<_> = std::fs::read_dir(cache.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial") || n.contains("stale"))
            .collect();
        assert!(hidden.is_empty(), "{hidden:?}");
    }

    #[test]
    fn a_second_process_cannot_take_a_cache_in_use() {
        let cache = tempfile::tempdir().unwrap();
        let held = CacheLock::acquire(cache.path()).unwrap();
        // flock locks belong to the open file description: a second open conflicts even
        // within one process, as a second server would.
        let err = CacheLock::acquire(cache.path()).err().unwrap();
        assert!(err.contains("in use by another server process"), "{err}");
        drop(held);
        assert!(CacheLock::acquire(cache.path()).is_ok());
    }

    #[test]
    fn unconfigured_folders_are_removed_only_if_they_are_ours() {
        let cache = tempfile::tempdir().unwrap();
        let (ours, kept, foreign) = (
            cache.path().join("old-1"),
            cache.path().join("m-2"),
            cache.path().join("someone-elses"),
        );
        for d in [&ours, &kept, &foreign] {
            std::fs::create_dir_all(d.join("1")).unwrap();
        }
        std::fs::write(ours.join(ORIGIN_FILE), "s3://b/old").unwrap();
        std::fs::write(kept.join(ORIGIN_FILE), "s3://b/m").unwrap();
        remove_unconfigured(cache.path(), std::slice::from_ref(&kept));
        assert!(!ours.exists());
        assert!(kept.exists() && foreign.exists());
    }
}
