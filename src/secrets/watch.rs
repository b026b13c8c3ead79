//! Noticing secret rotation: the files a compiled config read its secrets from, and a
//! [`Watcher`] that tells the caller (the `run` command's watch loop) when one of them changed so
//! it reloads — the same path as SIGHUP, so a rotated admin token or backend client secret takes
//! effect without a restart, and an unreadable new value leaves the previous config serving.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub(super) ino: u64,
    pub(super) size: u64,
    pub(super) mtime: (i64, i64),
    pub(super) ctime: (i64, i64),
}

/// The secret files one compile consulted, each with the version it saw (`None`: absent).
#[derive(Debug, Clone)]
pub struct Sources {
    id: u64,
    files: Vec<(PathBuf, Option<Stamp>)>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Default for Sources {
    fn default() -> Self {
        Sources { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), files: Vec::new() }
    }
}

impl Sources {
    pub(super) fn record(&mut self, path: &Path) {
        if !self.files.iter().any(|(p, _)| p == path) {
            self.files.push((path.to_path_buf(), Stamp::of(path)));
        }
    }

    /// How many files are watched.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn now(&self) -> Vec<Option<Stamp>> {
        self.files.iter().map(|(p, _)| Stamp::of(p)).collect()
    }
}

/// Polled (about once a second) with the active snapshot's [`Sources`]: `changed` is true once
/// per change of a secret file since that snapshot compiled. A failed reload keeps the old
/// snapshot; the watcher remembers what it already reported, so it does not reload again until
/// the file changes again.
#[derive(Debug, Default)]
pub struct Watcher {
    of: u64,
    seen: Vec<Option<Stamp>>,
}

impl Watcher {
    pub fn changed(&mut self, sources: &Sources) -> bool {
        if self.of != sources.id {
            self.of = sources.id;
            self.seen = sources.files.iter().map(|(_, s)| *s).collect();
        }
        if sources.files.is_empty() {
            return false;
        }
        let now = sources.now();
        if now == self.seen {
            return false;
        }
        self.seen = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_change_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "one").expect("write");
        let mut sources = Sources::default();
        sources.record(&a);
        sources.record(&b);
        sources.record(&a);
        assert_eq!(sources.len(), 2);
        let mut w = Watcher::default();
        assert!(!w.changed(&sources));
        std::fs::write(&a, "two!").expect("write");
        assert!(w.changed(&sources));
        assert!(!w.changed(&sources), "reported once, not on every poll while the reload fails");
        std::fs::write(&b, "appeared").expect("write");
        assert!(w.changed(&sources), "a file that was missing and now exists is a change");
        // Kubernetes style: the path is replaced by a new file (rename over it), same size.
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, "owt!").expect("write");
        std::fs::rename(&tmp, &a).expect("rename");
        assert!(w.changed(&sources));
        // A new snapshot starts from what its compile saw.
        let mut fresh = Sources::default();
        fresh.record(&a);
        assert!(!w.changed(&fresh));
        std::fs::remove_file(&a).expect("remove");
        assert!(w.changed(&fresh));
    }
}
