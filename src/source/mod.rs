//! The Source: finds the version folders under each model's `base_path` and reports the
//! whole set every time it may have changed (a `notify` event, a poll tick, a config change).
//! It decides nothing: which versions to load is the manager's job. It must not load,
//! parse model files or touch what is serving.

pub mod remote;
mod watch;

pub use remote::RemoteMirror;
pub use watch::{FileSystemSource, ScanCallback};

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::config::VersionPolicy;

/// A model as the sources see it: the local folder its versions are read from and, for a
/// base path in object storage, what that folder mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedModel {
    pub name: String,
    /// The base path itself, or the model's folder in the model cache.
    pub dir: PathBuf,
    pub remote: Option<RemoteModel>,
}

/// A base path in object storage, and the policy that says which versions to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteModel {
    pub url: url::Url,
    pub policy: VersionPolicy,
}

impl WatchedModel {
    /// What the model's folder holds now. A remote model whose first listing has not
    /// finished yet has no folder; that is not an error of the model's.
    pub fn scan(&self) -> Scan {
        match &self.remote {
            Some(remote) if !self.dir.is_dir() => {
                Scan::Unavailable(format!("{} has not been listed yet", remote.url))
            }
            _ => scan(&self.dir),
        }
    }
}

/// A version folder on disk. The fingerprint changes whenever a file in it (or one level
/// below, e.g. `1_Pooling/config.json`) is added, removed, resized or touched, so a version
/// that failed to load is retried once its files change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionDir {
    pub path: PathBuf,
    pub fingerprint: u64,
}

/// What one scan of a base path found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// The base path is missing or unreadable; the text says why.
    Unavailable(String),
    Versions(BTreeMap<i64, VersionDir>),
}

/// The version number a folder name stands for: canonical decimal (no sign, no leading
/// zeros), positive, and within i64. Everything else (`.tmp-3`, `3.bak`, `0`, `007`,
/// a 30-digit name) is not a version and is ignored.
pub fn parse_version(name: &OsStr) -> Option<i64> {
    let name = name.to_str()?;
    if name.is_empty() || name.starts_with('0') || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse::<i64>().ok().filter(|&v| v > 0)
}

/// Lists the version folders of `base`.
pub fn scan(base: &Path) -> Scan {
    let entries = match std::fs::read_dir(base) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Scan::Unavailable(format!("base path {} does not exist", base.display()))
        }
        Err(e) => {
            return Scan::Unavailable(format!("cannot read base path {}: {e}", base.display()))
        }
    };
    let mut versions = BTreeMap::new();
    for entry in entries.flatten() {
        let Some(version) = parse_version(&entry.file_name()) else {
            continue;
        };
        let path = entry.path();
        // Follows symlinks, so a version may be a link to a folder elsewhere.
        if !path.is_dir() {
            continue;
        }
        let fingerprint = fingerprint(&path);
        versions.insert(version, VersionDir { path, fingerprint });
    }
    Scan::Versions(versions)
}

fn fingerprint(dir: &Path) -> u64 {
    let mut files = Vec::new();
    collect_files(dir, Path::new(""), 1, &mut files);
    files.sort();
    let mut hasher = DefaultHasher::new();
    files.hash(&mut hasher);
    hasher.finish()
}

/// (relative name, size, mtime in ns) of each file, `depth` levels of subfolders deep.
fn collect_files(dir: &Path, rel: &Path, depth: usize, out: &mut Vec<(PathBuf, u64, u128)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let name = rel.join(entry.file_name());
        if meta.is_dir() {
            if depth > 0 {
                collect_files(&entry.path(), &name, depth - 1, out);
            }
        } else {
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            out.push((name, meta.len(), mtime));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_positive_numbers_are_versions() {
        let v = |s: &str| parse_version(OsStr::new(s));
        assert_eq!(v("1"), Some(1));
        assert_eq!(v("1609392632"), Some(1609392632));
        assert_eq!(v("9223372036854775807"), Some(i64::MAX));
        for not in [
            "0",
            "007",
            "-1",
            "+3",
            "3.bak",
            ".3",
            ".tmp-4",
            "v2",
            "",
            "99999999999999999999",
        ] {
            assert_eq!(v(not), None, "{not}");
        }
    }

    #[test]
    fn scan_ignores_files_hidden_and_odd_folders() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["1", "2", ".3", "0", "007", "tmp", "4.partial"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("5"), b"a file, not a folder").unwrap();
        let Scan::Versions(found) = scan(dir.path()) else {
            panic!("scan failed")
        };
        assert_eq!(found.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert!(
            matches!(scan(&dir.path().join("missing")), Scan::Unavailable(m) if m.contains("does not exist"))
        );
    }

    #[test]
    fn fingerprint_changes_when_files_change() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("1");
        std::fs::create_dir_all(v.join("1_Pooling")).unwrap();
        std::fs::write(v.join("config.json"), b"{}").unwrap();
        let a = fingerprint(&v);
        assert_eq!(a, fingerprint(&v));
        std::fs::write(v.join("1_Pooling/config.json"), b"{}").unwrap();
        let b = fingerprint(&v);
        assert_ne!(a, b);
        std::fs::write(v.join("config.json"), b"{\"a\": 1}").unwrap();
        assert_ne!(b, fingerprint(&v));
    }
}
