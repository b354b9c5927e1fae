//! PostgreSQL base backups in stream mode: pg_basebackup's tar stream becomes a file-aware
//! snapshot as it arrives. Relation files are cut into fixed, aligned blocks (their pages never
//! shift, so unchanged blocks dedup exactly against earlier backups); everything else is
//! chunked by content. backup_label, backup_manifest and pg_control are kept in the snapshot
//! like any file and also read for the manifest's restore metadata.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use super::{BackupOptions, run};
use crate::ops::Error;
use crate::pg::basebackup::{self, BaseBackupProcess};
use crate::pg::{Conn, Error as PgError, programs};
use crate::progress::Progress;
use crate::repo::Id;
use crate::repo::Repository;
use crate::repo::chunker::Chunker;
use crate::repo::snapshot::{PgBackup, Snapshot, SnapshotKind, Summary};
use crate::repo::tree::{Entry, EntryKind, TreeWriter};

/// Block size for relation files: 16 PostgreSQL pages. Provisional until the pgbench benchmark
/// settles it (stored bytes after updates against index size; see docs/FORMAT.md).
pub const RELATION_BLOCK: usize = 128 << 10;
/// How long pg_basebackup may wait for the last WAL segment to be archived.
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// Small files kept to fill the snapshot's PostgreSQL metadata.
#[derive(Default)]
pub(crate) struct Metadata {
    label: Option<String>,
    manifest: Option<Vec<u8>>,
    pg_control: Option<Vec<u8>>,
    pg_version: Option<String>,
}

/// Takes a base backup of the server `conn` names, over the replication protocol.
pub fn backup_pg_stream(
    repo: &Repository,
    conn: &Conn,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<(Id, Snapshot), Error> {
    let server = basebackup::preflight(conn)?;
    let major = server.version_num / 10000;
    let program =
        programs::client("pg_basebackup", major, &format!("a stream-mode backup of a PostgreSQL {major} server"))?;
    let snapshot = Snapshot::new(SnapshotKind::PgBase, &options.tags);
    run(repo, snapshot, options, progress, |sink, snap| {
        progress.start("backing up PostgreSQL", None);
        let (process, stdout) = BaseBackupProcess::start(conn, &program)?;
        let mut meta = Metadata::default();
        let chunking = (repo.cdc(), repo.config().chunking.max_size as usize);
        let tree = match read_tar(chunking, &|c| sink.add(c), stdout, &mut snap.summary, &mut meta, progress) {
            Ok(tree) => tree,
            Err(e) => {
                let stderr = process.abort();
                return Err(match e {
                    // A broken stream usually means pg_basebackup failed: its message is the cause.
                    Error::Source { .. } if !stderr.trim().is_empty() => {
                        PgError::database(format!("pg_basebackup: {}", stderr.trim())).into()
                    }
                    other => other,
                });
            }
        };
        process.finish(ARCHIVE_TIMEOUT)?;
        snap.pg = Some(pg_metadata(&meta, server.wal_segment_size)?);
        snap.time = chrono::Utc::now();
        Ok(tree)
    })
}

pub(crate) fn pg_metadata(meta: &Metadata, wal_segment_size: u64) -> Result<PgBackup, Error> {
    let missing = |what: &str| PgError::database(format!("the base backup has no usable {what}"));
    let label = basebackup::parse_backup_label(meta.label.as_deref().ok_or_else(|| missing("backup_label"))?)
        .ok_or_else(|| missing("backup_label"))?;
    let stop_lsn = basebackup::manifest_stop_lsn(meta.manifest.as_deref().ok_or_else(|| missing("backup_manifest"))?)
        .ok_or_else(|| missing("WAL range in backup_manifest"))?;
    let system_identifier = basebackup::system_identifier(meta.pg_control.as_deref().unwrap_or_default())
        .ok_or_else(|| missing("global/pg_control"))?;
    Ok(PgBackup {
        mode: "stream".into(),
        system_identifier: system_identifier.to_string(),
        pg_version: meta.pg_version.clone().ok_or_else(|| missing("PG_VERSION"))?,
        timeline: label.timeline,
        start_lsn: label.start_lsn,
        stop_lsn,
        start_wal: label.start_wal,
        wal_segment_size,
        start_time: label.start_time,
        started_at: None,
        tablespace_map: String::new(),
    })
}

/// Turns the tar stream into tree entries and chunks, in the order pg_basebackup sends them
/// (directories before their contents). `chunking` is the repository's content-defined chunker
/// and its largest chunk; `add` stores a chunk and returns its id.
pub(crate) fn read_tar(
    chunking: (Chunker, usize),
    add: &dyn Fn(Vec<u8>) -> Result<Id, crate::repo::Error>,
    stream: impl Read + Send,
    summary: &mut Summary,
    meta: &mut Metadata,
    progress: &dyn Progress,
) -> Result<Vec<Id>, Error> {
    let broken = |source: std::io::Error| Error::Source { path: "<pg_basebackup stream>".into(), source };
    let (cdc, max_chunk) = chunking;
    let mut tree = TreeWriter::new(cdc, max_chunk, add);
    let mut archive = tar::Archive::new(stream);
    for item in archive.entries().map_err(broken)? {
        let mut item = item.map_err(broken)?;
        let raw_path = item.path().map_err(broken)?.into_owned();
        let path = raw_path.strip_prefix("./").unwrap_or(&raw_path).to_path_buf();
        let name = path.to_string_lossy().trim_end_matches('/').to_string();
        // The signal files belong to the source server's role; a restore writes its own.
        if name.is_empty() || name == "." || name == "standby.signal" || name == "recovery.signal" {
            continue;
        }
        let header = item.header();
        let kind = match header.entry_type() {
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink,
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
            other => {
                tracing::warn!(path = %name, kind = ?other, "skipping an unexpected tar entry");
                continue;
            }
        };
        let mut entry = Entry::new(kind, Path::new(&name));
        entry.mode = header.mode().map_err(broken)? & 0o7777;
        entry.uid = header.uid().map_err(broken)? as u32;
        entry.gid = header.gid().map_err(broken)? as u32;
        entry.mtime = header.mtime().map_err(broken)? as i64;
        match kind {
            EntryKind::Dir => summary.dirs += 1,
            EntryKind::Symlink => {
                summary.symlinks += 1;
                let target = item.link_name().map_err(broken)?.unwrap_or_default().into_owned();
                entry.set_target(&target);
            }
            EntryKind::File => {
                summary.files += 1;
                let chunker = if basebackup::is_relation_file(&name) {
                    Chunker::Fixed { block_size: RELATION_BLOCK }
                } else {
                    cdc
                };
                let keep =
                    matches!(name.as_str(), "backup_label" | "backup_manifest" | "global/pg_control" | "PG_VERSION");
                let mut kept = Vec::new();
                for chunk in chunker.chunks(&mut item) {
                    let chunk = chunk.map_err(broken)?;
                    entry.size += chunk.len() as u64;
                    progress.add(chunk.len() as u64);
                    if keep {
                        kept.extend_from_slice(&chunk);
                    }
                    entry.chunks.push(add(chunk)?);
                }
                summary.logical_bytes += entry.size;
                match name.as_str() {
                    "backup_label" => meta.label = Some(String::from_utf8_lossy(&kept).into_owned()),
                    "backup_manifest" => meta.manifest = Some(kept),
                    "global/pg_control" => meta.pg_control = Some(kept),
                    "PG_VERSION" => meta.pg_version = Some(String::from_utf8_lossy(&kept).trim().to_string()),
                    _ => {}
                }
            }
        }
        tree.push(&entry)?;
    }
    // The tar's end-of-archive blocks may come after its last entry, and pg_basebackup may write
    // its end padding later still: read to the end, or it dies of SIGPIPE and the backup fails.
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(broken)?;
    Ok(tree.finish()?)
}

/// A logical dump of database `database` on the server `conn` names: `pg_dump -Fc -Z0` (the
/// compression is ours), streamed into a snapshot named `<database>.dump`. pg_dump's exit status
/// is checked before the snapshot is written, so a dump cut short never becomes a snapshot.
pub fn backup_pg_dump(
    repo: &Repository,
    conn: &Conn,
    database: &str,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<(Id, Snapshot), Error> {
    let conn = conn.with_database(database);
    let major = conn.server_major()?;
    let program = programs::client("pg_dump", major, &format!("a logical dump of a PostgreSQL {major} server"))?;
    let mut child = conn
        .client(&program)
        .args(["-F", "c", "-Z", "0", "-d", &conn.dsn])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| PgError::database(format!("cannot run pg_dump: {e}")))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = basebackup::collect_stderr(&mut child);
    let mut snapshot = Snapshot::new(SnapshotKind::PgDump, &options.tags);
    snapshot.stdin_name = Some(format!("{database}.dump"));
    let child = std::sync::Mutex::new(child);
    let result = super::back_up_one_stream(repo, stdout, snapshot, options, progress, || {
        let status = child.lock().expect("poisoned").wait().map_err(|e| PgError::database(e.to_string()))?;
        if status.success() {
            return Ok(());
        }
        Err(PgError::database(format!("pg_dump failed ({status})")).into())
    });
    let _ = child.lock().expect("poisoned").kill();
    let _ = child.lock().expect("poisoned").wait();
    let stderr = stderr.join().unwrap_or_default();
    result.map_err(|e| match e {
        Error::Pg(PgError::Database { detail }) if !stderr.trim().is_empty() => {
            PgError::database(format!("{detail}: {}", stderr.trim())).into()
        }
        other => other,
    })
}
