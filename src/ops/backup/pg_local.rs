//! PostgreSQL base backups in local mode: drctl runs beside the server (a sidecar) and reads the
//! data directory itself between `pg_backup_start` and `pg_backup_stop` on one SQL session,
//! with parallel readers. A file whose size and modification time match the previous local
//! backup's, and that was last modified well before that backup started, is not read again:
//! its chunks are reused (pgBackRest's rule). Of a relation file whose changes the WAL since the
//! previous backup names (its block maps, see `wal_delta`), only the changed pages are read,
//! whatever its timestamps say. backup_label comes from pg_backup_stop and is
//! stored as a file; global/pg_control is read last, as pg_basebackup does.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::pg::RELATION_BLOCK;
use super::wal_delta::{self, ChangedPages, WalRange};
use super::walk::{self, Earlier, EarlierFn, WalkRules};
use super::{BackupOptions, run};
use crate::ops::Error;
use crate::pg::archiver;
use crate::pg::basebackup;
use crate::pg::datadir;
use crate::pg::session::Session;
use crate::pg::wal::parse_lsn;
use crate::pg::{Conn, Error as PgError};
use crate::progress::Progress;
use crate::repo::Id;
use crate::repo::chunker::Chunker;
use crate::repo::snapshot::{self, PgBackup, Snapshot, SnapshotKind};
use crate::repo::tree::{Entry, EntryKind, TreeReader, TreeWriter};
use crate::repo::writer::Sink;
use crate::repo::{self, Repository};

/// How long pg_backup_stop may wait for the last WAL segment to be archived.
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(300);
/// A reused file must have been last modified at least this long before the previous backup
/// started: beyond the coarseness of file-system timestamps and small clock adjustments.
const MTIME_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// Choices specific to local mode.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub pgdata: PathBuf,
    /// Read every file, reusing nothing from the previous backup by timestamps.
    pub full: bool,
}

pub fn backup_pg_local(
    repo: &Repository,
    conn: &Conn,
    local: &LocalOptions,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<(Id, Snapshot), Error> {
    let server = basebackup::preflight(conn)?;
    let pgdata =
        std::path::absolute(&local.pgdata).map_err(|source| Error::Source { path: local.pgdata.clone(), source })?;
    let read = |path: &Path| fs::read(path).map_err(|source| Error::Source { path: path.to_path_buf(), source });
    let on_disk = basebackup::system_identifier(&read(&pgdata.join(datadir::PG_CONTROL))?).ok_or_else(|| {
        Error::Usage(format!("{} has no valid global/pg_control: is it a data directory?", pgdata.display()))
    })?;
    let pg_version = String::from_utf8_lossy(&read(&pgdata.join("PG_VERSION"))?).trim().to_string();
    let mut session = Session::connect(conn)?;
    let served = session.query("SELECT system_identifier FROM pg_control_system()")?;
    if served.trim() != on_disk.to_string() {
        return Err(Error::Usage(format!(
            "{} belongs to another cluster (system identifier {on_disk}) than the server the connection reaches \
             ({}); give the data directory of that server with --pgdata",
            pgdata.display(),
            served.trim()
        )));
    }
    let parent = if local.full { None } else { previous_local_backup(repo, &on_disk.to_string())? };
    let snapshot = Snapshot::new(SnapshotKind::PgBase, &options.tags);
    run(repo, snapshot, options, progress, |sink, snap| {
        progress.start("backing up PostgreSQL", None);
        let started_at = chrono::Utc::now();
        let start = session.backup_start(&format!("drctl {}", started_at.format("%Y-%m-%dT%H:%M:%SZ")))?;
        let changed = match &parent {
            Some(parent) => changed_since(repo, &mut session, parent, &start, on_disk, &pgdata)?,
            None => None,
        };
        let mut tree = TreeWriter::new(repo.cdc(), repo.config().chunking.max_size as usize, |c| sink.add(c));
        let cdc = repo.cdc();
        let rules = WalkRules {
            base: pgdata.clone(),
            prune: Box::new(datadir::prune_for(&pg_version)),
            follow: Box::new(datadir::follow),
            chunker: Box::new(move |path| {
                if basebackup::is_relation_file(&path.to_string_lossy()) {
                    Chunker::Fixed { block_size: RELATION_BLOCK }
                } else {
                    cdc
                }
            }),
            earlier: parent.as_ref().map(|p| earlier_versions(repo, sink, p, changed.as_ref())),
        };
        walk::back_up_tree(repo, sink, std::slice::from_ref(&pgdata), rules, &mut tree, &mut snap.summary, progress)?;
        let control = read(&pgdata.join(datadir::PG_CONTROL))?;
        let control_meta = fs::metadata(pgdata.join(datadir::PG_CONTROL))
            .map_err(|source| Error::Source { path: pgdata.join(datadir::PG_CONTROL), source })?;
        push_file(sink, &mut tree, &mut snap.summary, datadir::PG_CONTROL, control, &control_meta, repo.cdc())?;
        // pg_wal may be a volume this process does not see (initdb --waldir): then the server waits.
        let pg_wal = pgdata.join("pg_wal");
        let stop = session.backup_stop(pg_wal.join("archive_status").is_dir(), ARCHIVE_TIMEOUT)?;
        archiver::wait_archived(&pg_wal, &stop.archive_pending, ARCHIVE_TIMEOUT)?;
        let root = fs::metadata(&pgdata).map_err(|source| Error::Source { path: pgdata.clone(), source })?;
        let label = stop.backup_label.clone().into_bytes();
        push_file(sink, &mut tree, &mut snap.summary, "backup_label", label, &root, repo.cdc())?;
        let parsed = basebackup::parse_backup_label(&stop.backup_label)
            .ok_or_else(|| PgError::database("pg_backup_stop returned an unreadable backup_label"))?;
        snap.pg = Some(PgBackup {
            mode: "local".into(),
            system_identifier: on_disk.to_string(),
            pg_version: pg_version.clone(),
            timeline: parsed.timeline,
            start_lsn: parsed.start_lsn,
            stop_lsn: stop.lsn,
            start_wal: parsed.start_wal,
            wal_segment_size: server.wal_segment_size,
            start_time: parsed.start_time,
            started_at: Some(started_at),
            tablespace_map: stop.tablespace_map,
        });
        snap.time = chrono::Utc::now();
        Ok(tree.finish()?)
    })
}

/// Adds one file read in full (pg_control, backup_label) to the tree, owned like `meta` says.
fn push_file<F: FnMut(Vec<u8>) -> Result<Id, repo::Error>>(
    sink: &Sink,
    tree: &mut TreeWriter<F>,
    summary: &mut snapshot::Summary,
    path: &str,
    data: Vec<u8>,
    meta: &fs::Metadata,
    cdc: Chunker,
) -> Result<(), Error> {
    let mut entry = Entry::new(EntryKind::File, Path::new(path));
    entry.mode = 0o600;
    (entry.uid, entry.gid) = (meta.uid(), meta.gid());
    let now = chrono::Utc::now();
    (entry.mtime, entry.mtime_nsec) = (now.timestamp(), now.timestamp_subsec_nanos());
    entry.size = data.len() as u64;
    let mut start = 0;
    for len in cdc.cut_points(&data) {
        entry.chunks.push(sink.add(data[start..start + len].to_vec())?);
        start += len;
    }
    summary.files += 1;
    summary.logical_bytes += entry.size;
    Ok(tree.push(&entry)?)
}

/// The newest local-mode base backup of the same cluster: the one whose files can be reused.
fn previous_local_backup(repo: &Repository, system_identifier: &str) -> Result<Option<Snapshot>, Error> {
    let mut newest: Option<Snapshot> = None;
    for (_, snap) in repo.snapshots()? {
        let usable = snap.pg.as_ref().is_some_and(|pg| {
            pg.mode == "local" && pg.system_identifier == system_identifier && pg.started_at.is_some()
        });
        if usable && newest.as_ref().is_none_or(|n| snap.time > n.time) {
            newest = Some(snap);
        }
    }
    Ok(newest)
}

/// The pages changed since `parent` started, read from the WAL up to this backup's `start`;
/// `None`, saying why, when the WAL cannot tell (files are then judged by their timestamps).
fn changed_since(
    repo: &Repository,
    session: &mut Session,
    parent: &Snapshot,
    start: &str,
    system_identifier: u64,
    pgdata: &Path,
) -> Result<Option<ChangedPages>, Error> {
    let Some(pg) = parent.pg.as_ref() else { return Ok(None) };
    let settings = session.query(
        "SELECT c.timeline_id, i.blocks_per_segment, i.database_block_size FROM pg_control_checkpoint() c, \
         pg_control_init() i",
    )?;
    let numbers: Vec<u64> = settings.trim().split('|').filter_map(|n| n.parse().ok()).collect();
    let pg_wal = pgdata.join("pg_wal");
    let range = (|| {
        let [timeline, pages_per_file, page_size] = numbers[..] else {
            return Err(format!("the server described its storage as {settings:?}"));
        };
        if page_size != 8192 {
            return Err(format!("its pages are {page_size} bytes"));
        }
        if timeline != u64::from(pg.timeline) {
            return Err(format!("the server is on timeline {timeline}, the previous backup on {}", pg.timeline));
        }
        let lsn = |text: &str| parse_lsn(text).ok_or_else(|| format!("{text:?} is not an LSN"));
        Ok(WalRange {
            system_identifier,
            timeline: pg.timeline,
            from: lsn(&pg.start_lsn)?,
            to: lsn(start.trim())?,
            segment_size: pg.wal_segment_size,
            pages_per_file: u32::try_from(pages_per_file).map_err(|e| e.to_string())?,
            pg_wal: &pg_wal,
        })
    })();
    match range.and_then(|range| wal_delta::changed_pages(repo, &range)) {
        Ok(changed) => {
            tracing::info!(
                maps = changed.maps,
                segments = changed.segments,
                "reading only the pages the WAL says changed"
            );
            Ok(Some(changed))
        }
        Err(why) => {
            tracing::warn!(reason = %why, "the WAL since the previous backup cannot say which pages changed; reading changed files whole");
            Ok(None)
        }
    }
}

/// Walks the previous backup's tree alongside the new walk (both in the same order) and hands
/// back a file's chunks: to reuse unread when it has not changed since (same size, same
/// modification time to the nanosecond, and modified before the previous backup started, minus
/// a margin, so the stored copy was read while nothing wrote to the file and holds no torn
/// page), else as the previous versions of its blocks. Any trouble reading the old tree only
/// turns this off.
fn earlier_versions<'a>(
    repo: &'a Repository,
    sink: &'a Sink,
    parent: &'a Snapshot,
    changed: Option<&'a ChangedPages>,
) -> EarlierFn<'a> {
    let started = parent.pg.as_ref().and_then(|pg| pg.started_at).expect("chosen for its start time");
    let cutoff = (started - MTIME_MARGIN).timestamp();
    let mut old = TreeReader::new(&parent.tree, move |id| repo.read_chunk(sink.index(), id)).peekable();
    let mut broken = false;
    Box::new(move |entry: &Entry| {
        let path = entry.relative_path().ok()?;
        while !broken {
            let candidate = match old.peek()? {
                Ok(candidate) => candidate,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the previous backup's file list; reading every file");
                    broken = true;
                    break;
                }
            };
            let Ok(candidate_path) = candidate.relative_path() else {
                old.next();
                continue;
            };
            match candidate_path.cmp(&path) {
                std::cmp::Ordering::Less => {
                    old.next();
                }
                std::cmp::Ordering::Greater => return None,
                std::cmp::Ordering::Equal => {
                    if candidate.kind != EntryKind::File {
                        old.next();
                        return None;
                    }
                    // Reused ids must be stored for good: an id whose index file was lost or
                    // whose pack prune marked would carry a hole into the new snapshot.
                    let stored = candidate.chunks.iter().all(|id| sink.is_stored(id));
                    let same = candidate.size == entry.size
                        && candidate.mtime == entry.mtime
                        && candidate.mtime_nsec == entry.mtime_nsec
                        && entry.mtime < cutoff
                        && stored;
                    let (chunks, size) = (candidate.chunks.clone(), candidate.size);
                    old.next();
                    if same {
                        return Some(Earlier::Unchanged(chunks));
                    }
                    // A relation file whose changes the WAL names: only those pages are read.
                    let pages = changed.filter(|_| stored).and_then(|c| {
                        let (fork, segno) = basebackup::relation_file(path.to_str()?)?;
                        c.in_file(fork, segno)
                    });
                    return Some(match pages {
                        Some(pages) if pages.is_empty() && size == entry.size => Earlier::Unchanged(chunks),
                        Some(changed) => Earlier::Pages { chunks, size, changed },
                        None => Earlier::Changed(chunks),
                    });
                }
            }
        }
        None
    })
}
