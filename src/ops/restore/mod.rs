//! Restore, by phase as it runs: which snapshot serves the target ([`select`]), its files into a
//! directory or a stream ([`files`], in the order [`plan`] reads the repository in), a logical dump into a database ([`dump`]), and a base
//! backup made recoverable and optionally recovered ([`recovery`]). [`run`] strings them
//! together and reports each phase as it ends, so a command prints it and a drill times it.

pub mod dump;
pub mod files;
mod plan;
pub mod recovery;
pub mod select;

pub use files::{RestoreSummary, restore_to_dir, restore_to_writer};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Error, Result};
use crate::pg::Conn;
use crate::pg::recovery::{Recovery, RecoveryTarget};
use crate::pg::server::Recovered;
use crate::pg::wal::parse_lsn;
use crate::progress::Progress;
use crate::repo::Id;
use crate::repo::snapshot::{Snapshot, SnapshotKind};
use crate::repo::{self, Repository};
use select::EndedBefore;

/// Where a snapshot goes.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A new or empty directory.
    Dir(PathBuf),
    /// Standard output (a stream snapshot).
    Stdout,
    /// pg_restore into the database this connection names (a logical dump).
    Database(Conn),
}

/// Where PostgreSQL recovery stops, as asked (at most one of them).
#[derive(Debug, Clone, Default)]
pub struct TargetRequest {
    /// A time with a time zone, or `latest` (all archived WAL).
    pub point_in_time: Option<String>,
    pub lsn: Option<String>,
    pub xid: Option<u64>,
    /// The timeline to follow (default: the newest in the archive).
    pub timeline: Option<u32>,
}

/// What to restore, where, and how far.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// A snapshot id, prefix or `latest`; `None`: the newest base backup that reaches the target.
    pub snapshot: Option<String>,
    pub target: TargetRequest,
    pub destination: Destination,
    /// Keep the backup's archive settings (a new primary); else the restored cluster never
    /// archives into the repository it came from.
    pub keep_archiving: bool,
    /// Run recovery now and wait for it.
    pub start: bool,
    /// Restore every intact file and list the damaged ones instead of stopping at the first.
    pub skip_damaged: bool,
    /// The flags restore_command's `drctl wal-fetch` reaches the repository with.
    pub repo_args: Vec<String>,
    /// Environment variables the server (and so restore_command) gets with `start`, e.g. the
    /// passphrase as DRCTL_PASSWORD when a policy names another variable for it.
    pub repo_env: Vec<(String, String)>,
}

/// A phase that ended, in order.
pub enum Event<'a> {
    FilesRestored {
        id: Id,
        dir: &'a Path,
        summary: &'a RestoreSummary,
        elapsed: Duration,
    },
    /// Some files were left out (`skip_damaged`): recovery is not configured.
    PartlyRestored {
        summary: &'a RestoreSummary,
        postgres: bool,
    },
    RecoveryConfigured {
        dir: &'a Path,
        configured: &'a recovery::Configured,
        start: bool,
    },
    Recovered {
        dir: &'a Path,
        configured: &'a recovery::Configured,
        recovered: &'a Recovered,
    },
}

/// Restores as `options` say, reporting each phase to `events`. A restore that left damaged
/// files out ends in [`Error::PartlyRestored`] after reporting them.
pub fn run(
    repo: &Repository,
    options: &RestoreOptions,
    progress: &dyn Progress,
    events: &mut dyn FnMut(Event),
) -> Result<(Id, Snapshot)> {
    let (target, bound) = recovery_target(&options.target)?;
    let (id, snap) = match &options.snapshot {
        Some(query) => repo.find_snapshot(query)?,
        None => {
            let wal: Vec<_> = repo::wal::list(repo.store())?.into_iter().map(|(name, _)| name).collect();
            select::choose_backup(repo.snapshots()?, &wal, bound)?
        }
    };
    if options.start && snap.kind != SnapshotKind::PgBase {
        return Err(Error::Usage("--start applies to PostgreSQL base backups only".into()));
    }
    if options.start {
        recovery::check_server(&snap)?;
    }
    let started = Instant::now();
    let dir = match &options.destination {
        Destination::Database(conn) => {
            return dump::restore_dump(repo, &snap, conn, &[], progress).map(|()| (id, snap));
        }
        Destination::Stdout => {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            let bytes = restore_to_writer(repo, &snap, &mut out, progress)?;
            tracing::info!(snapshot = %id.short(), bytes, "stream restored");
            return Ok((id, snap));
        }
        Destination::Dir(dir) => dir,
    };
    let existed = dir.exists();
    let summary =
        restore_to_dir(repo, &snap, dir, options.skip_damaged, progress).map_err(|e| match e.is_damage() {
            false => e,
            true => Error::Context {
                context: format!(
                    "restore stopped at damaged data and left nothing in {}: nothing unverified was restored \
                 (--skip-damaged restores every file whose data is intact)",
                    dir.display()
                ),
                source: Box::new(e),
            },
        })?;
    events(Event::FilesRestored { id, dir, summary: &summary, elapsed: started.elapsed() });
    let postgres = snap.kind == SnapshotKind::PgBase;
    if !summary.not_restored.is_empty() {
        events(Event::PartlyRestored { summary: &summary, postgres });
        return Err(Error::PartlyRestored { path: dir.clone(), count: summary.not_restored.len() });
    }
    if postgres {
        let recovery = Recovery { target, timeline: options.target.timeline, keep_archiving: options.keep_archiving };
        let recovered = (|| {
            let configured = recovery::configure(dir, &snap, &recovery, &options.repo_args)?;
            events(Event::RecoveryConfigured { dir, configured: &configured, start: options.start });
            if options.start {
                let recovered = recovery::run(dir, &options.repo_env)?;
                events(Event::Recovered { dir, configured: &configured, recovered: &recovered });
            }
            Ok(())
        })();
        if let Err(e) = recovered {
            // Nothing half-recovered is left looking like a usable data directory.
            remove_restored(dir, existed);
            let context = format!("the restored files in {} were removed", dir.display());
            return Err(Error::Context { context, source: Box::new(e) });
        }
    }
    Ok((id, snap))
}

/// The recovery target asked for, and what a chosen base backup must have ended before.
fn recovery_target(request: &TargetRequest) -> Result<(RecoveryTarget, EndedBefore)> {
    if let Some(time) = &request.point_in_time {
        if time == "latest" {
            return Ok((RecoveryTarget::End, EndedBefore::Any));
        }
        let time = select::parse_time(time)?;
        return Ok((RecoveryTarget::Time(time), EndedBefore::Time(time)));
    }
    if let Some(text) = &request.lsn {
        let lsn = parse_lsn(text)
            .ok_or_else(|| Error::Usage(format!("{text:?} is not a WAL position; write it like 0/5000028")))?;
        return Ok((RecoveryTarget::Lsn(text.clone()), EndedBefore::Lsn(lsn)));
    }
    if let Some(xid) = request.xid {
        return Ok((RecoveryTarget::Xid(xid), EndedBefore::Any));
    }
    Ok((RecoveryTarget::Immediate, EndedBefore::Any))
}

/// Removes what a restore put in `dir` (the directory itself unless it existed before).
fn remove_restored(dir: &Path, existed: bool) {
    if !existed {
        let _ = std::fs::remove_dir_all(dir);
        return;
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let _ = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}
