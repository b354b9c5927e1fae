//! Backup: turns a source into a snapshot through a streaming, parallel pipeline:
//!
//! ```text
//! producer (read → chunk → keyed hash → dedup) ─▶ seal workers (zstd → AES-GCM, one per core)
//!        ─▶ packer (streams a pack to the store) ─▶ committer (fsync, rename) ;  then index, snapshot
//! ```
//! Stages are joined by bounded channels and packs are written as they fill, so memory is about
//! channel depth × chunk size, whatever the size of the source.

mod pg;
mod pg_local;
mod pipeline;
mod rewrite;
mod walk;

pub use pg::{backup_pg_dump, backup_pg_stream};
pub use pg_local::{LocalOptions, backup_pg_local};
pub use rewrite::{Rewrite, rewrite_damaged};

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use crate::pg::Conn;
use crate::progress::Progress;
use crate::repo::crypto::Id;
use crate::repo::snapshot::{self, Snapshot, SnapshotKind};
use crate::repo::tree::{Entry, EntryKind, TreeWriter};
use crate::repo::{Error, Repository, index, prune};
use pipeline::{Pipeline, Sink};

/// Choices a backup makes beyond its source.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub tags: Vec<String>,
    /// zstd level; the repository's default when `None`.
    pub compression_level: Option<i32>,
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
        tree.finish()
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
        return Err(Error::InvalidRequest(format!("stream name {name:?} must be a plain file name")));
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
        tree.finish()
    })
}

/// The common frame, for every kind of source: lock, load the index, run the producer through the pipeline, then write
/// the index file and last the snapshot. If the pipeline fails, the packs it wrote are deleted
/// again: no index names them yet, so nothing else can depend on them.
pub(crate) fn run<F>(
    repo: &Repository,
    mut snapshot: Snapshot,
    options: &BackupOptions,
    progress: &dyn Progress,
    produce: F,
) -> Result<(Id, Snapshot), Error>
where
    F: FnOnce(&Sink, &mut Snapshot) -> Result<Vec<Id>, Error> + Send,
{
    let started = Instant::now();
    let lock = repo.lock_shared("backup")?;
    // A damaged index file costs only deduplication: what it lists is stored again.
    let index = repo.load_index_skipping_damaged()?;
    let doomed = prune::marked_packs(repo).unwrap_or_else(|e| {
        // Prune cannot read it either, so it deletes nothing until it is repaired.
        tracing::warn!(error = %e, "cannot read prune's plan; backing up as if no pack were marked");
        Default::default()
    });
    let level = options.compression_level.unwrap_or(repo.config().compression_level);
    let pipeline = Pipeline::new(repo, &index, &doomed, level);
    let outcome = pipeline.run(|sink| produce(sink, &mut snapshot));
    let mut summary = std::mem::take(&mut snapshot.summary);
    progress.finish();
    let (tree, written) = match outcome {
        Ok(done) => done,
        Err((err, written)) => {
            pipeline::delete_packs(repo, &written);
            return Err(err);
        }
    };
    summary.new_chunks = written.iter().map(|p| p.chunks.len() as u64).sum();
    summary.delta_chunks = written.iter().flat_map(|p| &p.chunks).filter(|c| c.base.is_some()).count() as u64;
    summary.stored_bytes = written.iter().map(|p| p.size).sum();
    if !written.is_empty() {
        // From here on the packs stay even on failure: a failed index write may still have
        // become visible (an fsync failing after the rename, a timed-out upload that landed),
        // and another backup may already dedup against it. Prune reclaims them if unused.
        let (_, size) = index::save(repo.store(), repo.key(), &written)?;
        summary.stored_bytes += size;
    }
    summary.duration_seconds = started.elapsed().as_secs_f64();
    snapshot.tree = tree;
    snapshot.summary = summary;
    // Had another process taken the lock for stale, prune may have deleted what this snapshot
    // reuses: then no snapshot at all, rather than one that cannot be restored.
    lock.verify("writing the snapshot (what it stored stays for prune to judge)")?;
    let id = snapshot::save(repo.store(), repo.key(), &snapshot)?;
    tracing::info!(snapshot = %id.short(), new_chunks = snapshot.summary.new_chunks, stored_bytes = snapshot.summary.stored_bytes, "snapshot saved");
    Ok((id, snapshot))
}
