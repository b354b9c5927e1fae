//! Backup: reads a source (files, a stream, a PostgreSQL cluster, a dump) and hands its chunks
//! to the repository's snapshot writer (`repo::writer`), which stores them concurrently.

#[cfg(test)]
mod cache_tests;
pub(crate) mod pg;
mod pg_local;
mod rewrite;
mod wal_delta;
mod walk;

pub use pg::{backup_pg_dump, backup_pg_stream};
pub use pg_local::{LocalOptions, backup_pg_local};
pub use rewrite::{Rewrite, rewrite_damaged};

use std::io::Read;
use std::path::PathBuf;

use crate::ops::Error;
use crate::pg::Conn;
use crate::progress::Progress;
use crate::repo::Id;
use crate::repo::Repository;
use crate::repo::base_cache::BaseCache;
use crate::repo::snapshot::{Snapshot, SnapshotKind};
use crate::repo::tree::{Entry, EntryKind, TreeWriter};
use crate::repo::writer::{self, Sink};

/// Choices a backup makes beyond its source.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub tags: Vec<String>,
    /// zstd level; the repository's default when `None`.
    pub compression_level: Option<i32>,
    /// Where a backup into a remote repository keeps a local copy of the packs it writes, so the
    /// next local-mode backup reads its delta bases from disk ([`crate::repo::base_cache`]).
    pub base_cache: Option<BaseCacheOptions>,
}

/// The local base cache: its folder (one subfolder per repository) and size bound.
#[derive(Debug, Clone)]
pub struct BaseCacheOptions {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

impl BaseCacheOptions {
    /// The default bound: a full backup's packs of a database of some 50 GB.
    pub const DEFAULT_MAX_BYTES: u64 = 16 << 30;

    /// The default folder, `$DRCTL_CACHE_DIR`, else `$XDG_CACHE_HOME/drctl`, else
    /// `~/.cache/drctl`, with the default bound.
    pub fn default_location() -> Option<BaseCacheOptions> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = var("DRCTL_CACHE_DIR")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("drctl")))
            .or_else(|| var("HOME").map(|d| d.join(".cache/drctl")))?;
        Some(BaseCacheOptions { dir, max_bytes: Self::DEFAULT_MAX_BYTES })
    }
}

/// What one backup reads.
#[derive(Debug, Clone)]
pub enum Source {
    /// Files and directories, stored under their absolute paths.
    Paths(Vec<PathBuf>),
    /// Standard input, stored as one file of this name.
    Stdin { name: String },
    /// A base backup over the replication protocol (pg_basebackup) of the server `conn` names.
    PgStream { conn: Conn },
    /// A base backup read from the data directory beside the server.
    PgLocal { conn: Conn, local: LocalOptions },
    /// A logical dump (pg_dump -Fc) of one database.
    PgDump { conn: Conn, database: String },
}

/// Takes one snapshot of `source`.
pub fn take(
    repo: &Repository,
    source: &Source,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<(Id, Snapshot), Error> {
    match source {
        Source::Paths(paths) => backup_paths(repo, paths, options, progress),
        Source::Stdin { name } => backup_stream(repo, std::io::stdin(), name, options, progress),
        Source::PgStream { conn } => backup_pg_stream(repo, conn, options, progress),
        Source::PgLocal { conn, local } => backup_pg_local(repo, conn, local, options, progress),
        Source::PgDump { conn, database } => backup_pg_dump(repo, conn, database, options, progress),
    }
}

/// Backs up files and directories (with modes, times, owners and symlinks).
pub fn backup_paths(
    repo: &Repository,
    paths: &[PathBuf],
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<(Id, Snapshot), Error> {
    let sources = walk::absolute_sources(paths)?;
    let mut snapshot = Snapshot::new(SnapshotKind::Paths, &options.tags);
    snapshot.paths = sources.iter().map(|p| p.display().to_string()).collect();
    run(repo, snapshot, options, progress, |sink, snap| {
        progress.start("backing up files", None);
        let mut tree = TreeWriter::new(repo.cdc(), repo.config().chunking.max_size as usize, |c| sink.add(c));
        let rules = walk::WalkRules::paths(repo.cdc());
        walk::back_up_tree(repo, sink, &sources, rules, &mut tree, &mut snap.summary, progress)?;
        Ok(tree.finish()?)
    })
}

/// Backs up one stream (for example `pg_dump` output) as a single file named `name`.
pub fn backup_stream<R: Read + Send + 'static>(
    repo: &Repository,
    reader: R,
    name: &str,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<(Id, Snapshot), Error> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::Usage(format!("stream name {name:?} must be a plain file name")));
    }
    let mut snapshot = Snapshot::new(SnapshotKind::Stream, &options.tags);
    snapshot.stdin_name = Some(name.to_string());
    back_up_one_stream(repo, reader, snapshot, options, progress, || Ok(()))
}

/// Stores `reader` as the one file of `snapshot` (named by its `stdin_name`). `at_end` runs once
/// the stream ended and before anything is committed: a producer that failed (a pg_dump that
/// exited non-zero after a short stream) fails the backup there.
pub(crate) fn back_up_one_stream<R: Read + Send + 'static>(
    repo: &Repository,
    reader: R,
    snapshot: Snapshot,
    options: &BackupOptions,
    progress: &dyn Progress,
    at_end: impl FnOnce() -> Result<(), Error> + Send,
) -> Result<(Id, Snapshot), Error> {
    let name = snapshot.stdin_name.clone().unwrap_or_default();
    run(repo, snapshot, options, progress, move |sink, snap| {
        let summary = &mut snap.summary;
        progress.start("backing up stream", None);
        let mut entry = Entry::new(EntryKind::File, std::path::Path::new(&name));
        entry.mode = 0o600;
        let now = chrono::Utc::now();
        (entry.mtime, entry.mtime_nsec) = (now.timestamp(), now.timestamp_subsec_nanos());
        for chunk in repo.cdc().chunks(reader) {
            let chunk = chunk.map_err(|source| Error::Source { path: PathBuf::from("<stdin>"), source })?;
            entry.size += chunk.len() as u64;
            progress.add(chunk.len() as u64);
            entry.chunks.push(sink.add(chunk)?);
        }
        at_end()?;
        summary.files = 1;
        summary.logical_bytes = entry.size;
        let mut tree = TreeWriter::new(repo.cdc(), repo.config().chunking.max_size as usize, |c| sink.add(c));
        tree.push(&entry)?;
        Ok(tree.finish()?)
    })
}

/// The common frame, for every kind of source: the repository's snapshot writer at the level
/// the options ask for, and the progress display closed whatever the outcome.
pub(crate) fn run<F>(
    repo: &Repository,
    snapshot: Snapshot,
    options: &BackupOptions,
    progress: &dyn Progress,
    produce: F,
) -> Result<(Id, Snapshot), Error>
where
    F: FnOnce(&Sink, &mut Snapshot) -> Result<Vec<Id>, Error> + Send,
{
    let level = options.compression_level.unwrap_or(repo.config().compression_level);
    let cache = options.base_cache.as_ref().filter(|_| repo.store().is_remote()).and_then(|c| {
        BaseCache::open(&c.dir, &repo.config().id, c.max_bytes)
            .inspect_err(|e| {
                tracing::warn!(dir = %c.dir.display(), error = %e, "cannot use the base cache; deltas will read the repository")
            })
            .ok()
    });
    let written = writer::write_snapshot(repo, snapshot, level, cache.as_ref(), produce);
    if let Some(cache) = &cache {
        cache.trim();
    }
    progress.finish();
    written
}
