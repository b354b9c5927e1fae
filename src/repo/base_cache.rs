//! A local copy of the packs a backup writes to a remote repository, so that the next backup
//! finds the previous versions of changed blocks (the bases of its deltas) on local disk instead
//! of downloading them. Without it a local-mode incremental into S3 downloads a block's previous
//! version for every block that changed.
//!
//! The cache is only ever a faster place to read sealed bytes from: what it returns is
//! authenticated and checked against the chunk id like anything read from the store, and a
//! cached pack that fails (damaged, cut short, from another repository) is dropped and read from
//! the store instead. Losing the cache, or any part of it, costs downloads, never a wrong backup.
//! A pack missing from the cache is fetched whole once (packs hold a backup's blocks together, so
//! one block's pack usually holds many more bases), and the cache keeps to a size bound by
//! removing the packs least recently used.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::crypto::Id;
use super::format;
use crate::store::Store;

/// Packs larger than this are not fetched whole on a miss (only the chunk is read).
const FETCH_WHOLE: u64 = 128 << 20;
/// Temporary files older than this are a killed process's leftovers.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// The packs of one repository cached in a local directory.
pub struct BaseCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Packs being fetched, so two workers needing one pack download it once.
    fetching: Mutex<HashMap<Id, Arc<Mutex<()>>>>,
}

impl BaseCache {
    /// The cache of the repository whose config id is `repo_id`, under `root`, created if
    /// absent (private to this user).
    pub fn open(root: &Path, repo_id: &str, max_bytes: u64) -> std::io::Result<BaseCache> {
        let dir = root.join(repo_id).join("packs");
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        Ok(BaseCache { dir, max_bytes, fetching: Mutex::default() })
    }

    fn path(&self, pack: Id) -> PathBuf {
        self.dir.join(pack.to_hex())
    }

    /// `len` bytes at `offset` of the cached copy of `pack`, if there is one that long.
    pub fn read(&self, pack: Id, offset: u64, len: u64) -> Option<Vec<u8>> {
        let file = File::open(self.path(pack)).ok()?;
        let mut data = vec![0; usize::try_from(len).ok()?];
        file.read_exact_at(&mut data, offset).ok()?;
        // Its modification time is its last use: the least recently used go first.
        let _ = file.set_modified(SystemTime::now());
        Some(data)
    }

    /// Drops a cached pack that failed authentication or was cut short.
    pub fn forget(&self, pack: Id) {
        tracing::warn!(pack = %pack.short(), "the cached copy of pack {} is damaged; reading the repository instead", pack.short());
        let _ = fs::remove_file(self.path(pack));
    }

    /// Fetches `pack` (of `size` bytes) whole from `store` into the cache, unless it is too
    /// large or another worker just did. Failures only cost the cache: the caller reads the
    /// store.
    pub fn fetch(&self, store: &dyn Store, pack: Id, size: u64) {
        if size > FETCH_WHOLE {
            return;
        }
        let lock = self.fetching.lock().expect("poisoned").entry(pack).or_default().clone();
        let _fetching = lock.lock().expect("poisoned");
        // A copy cut short (a full disk, a killed process) is fetched again.
        if !fs::metadata(self.path(pack)).is_ok_and(|m| m.len() == size) {
            match store.get(&format::pack_key(pack)) {
                Ok(data) => {
                    if let Some(mut mirror) = self.mirror() {
                        mirror.write(&data);
                        mirror.keep(pack);
                    }
                }
                Err(e) => tracing::debug!(pack = %pack.short(), error = %e, "cannot fetch a pack into the cache"),
            }
        }
        self.fetching.lock().expect("poisoned").remove(&pack);
    }

    /// A new cached copy being written, kept under its pack's name by [`Mirror::keep`].
    pub fn mirror(&self) -> Option<Mirror<'_>> {
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).expect("the OS random source works");
        let temp = self.dir.join(format!(".tmp-{}", hex::encode(suffix)));
        match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp) {
            Ok(file) => Some(Mirror { cache: self, temp, file: Some(file) }),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write to the base cache; deltas will read the repository");
                None
            }
        }
    }

    /// Removes the packs least recently used until the cache fits its bound, and temporary
    /// files that killed processes left.
    pub fn trim(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        let now = SystemTime::now();
        let mut packs: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                if now.duration_since(used).is_ok_and(|age| age > STALE_TEMP) {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            }
            packs.push((used, meta.len(), entry.path()));
        }
        packs.sort();
        let mut total: u64 = packs.iter().map(|p| p.1).sum();
        for (_, size, path) in packs {
            if total <= self.max_bytes {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= size;
            }
        }
    }
}

/// A pack's bytes copied into the cache as they are written to the store. A local write that
/// fails only ends the copy.
pub struct Mirror<'a> {
    cache: &'a BaseCache,
    temp: PathBuf,
    file: Option<File>,
}

impl Mirror<'_> {
    pub fn write(&mut self, data: &[u8]) {
        if let Some(file) = &mut self.file
            && let Err(e) = file.write_all(data)
        {
            tracing::warn!(error = %e, "writing to the base cache failed; this pack is not cached");
            self.file = None;
        }
    }

    /// Keeps the copy as `pack` once the store holds the pack.
    pub fn keep(mut self, pack: Id) {
        if self.file.take().is_some() {
            let _ = fs::rename(&self.temp, self.cache.path(pack));
        }
    }
}

impl Drop for Mirror<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.temp);
    }
}
