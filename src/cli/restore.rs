use anyhow::Context;
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{GlobalArgs, RepoArgs, human_bytes};
use crate::ops::restore::{self as restore, select as pitr};
use crate::pg::recovery::{self, ArchiveAccess, Recovery, RecoveryTarget};
use crate::pg::server;
use crate::repo;
use crate::repo::snapshot::{self, Snapshot, SnapshotKind};

/// How long `--start` lets PostgreSQL replay WAL before giving up.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to", "stdout", "pg"])))]
pub struct RestoreArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Snapshot id (or a unique prefix of at least 4 characters), or `latest`. With a recovery
    /// target and no snapshot, the newest base backup that can reach the target is used.
    #[arg(value_name = "SNAPSHOT", required_unless_present_any = ["point_in_time", "target_lsn", "target_xid"])]
    pub snapshot: Option<String>,
    /// Restore a PostgreSQL cluster to this moment ("2026-11-20 14:03:00+00"): the newest base
    /// backup that ended before it, then WAL from the archive up to it (every transaction
    /// committed at or before it). `latest`: replay all archived WAL.
    #[arg(long, value_name = "TIME", conflicts_with = "snapshot", requires = "to", group = "recovery_target")]
    pub point_in_time: Option<String>,
    /// Recover up to and including this WAL position ("0/5000028").
    #[arg(long, value_name = "LSN", requires = "to", group = "recovery_target")]
    pub target_lsn: Option<String>,
    /// Recover up to and including the commit of this transaction id. Without SNAPSHOT the
    /// newest restorable base backup is used; give an older one if the transaction is older.
    #[arg(long, value_name = "XID", requires = "to", group = "recovery_target")]
    pub target_xid: Option<u64>,
    /// Follow this timeline (default: the newest in the archive).
    #[arg(long, value_name = "TLI", requires = "to")]
    pub target_timeline: Option<u32>,
    /// For a PostgreSQL restore: run recovery now (privately: no TCP, archiving off), wait until
    /// the target is reached and the server promoted, report it, and stop the server cleanly.
    #[arg(long, requires = "to")]
    pub start: bool,
    /// For a PostgreSQL restore: `off` sets archive_mode = off in the restored cluster, so
    /// starting it (a test, a drill) never archives into the repository it came from; `keep`
    /// leaves the backup's archive settings, for a cluster that becomes the new primary.
    #[arg(long, value_enum, value_name = "MODE", default_value = "off")]
    pub archive_mode: ArchiveMode,
    /// Restore into this directory; it must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
    /// Restore every file whose data is intact even if some are damaged: a file with a chunk
    /// that cannot be read or authenticated is left out whole and listed, and the exit code is
    /// 3. A PostgreSQL base backup restored so is not set up for recovery.
    #[arg(long, alias = "ignore-damaged", requires = "to", conflicts_with = "start")]
    pub skip_damaged: bool,
    /// Write a stream snapshot to standard output.
    #[arg(long)]
    pub stdout: bool,
    /// Restore a logical dump (backup --pg-dump) with pg_restore into the database this
    /// connection string names (it must exist; create it first, e.g. `createdb app_copy`).
    #[arg(long, value_name = "DSN", conflicts_with = "point_in_time")]
    pub pg: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchiveMode {
    Off,
    Keep,
}

pub fn run(args: RestoreArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let repo = args.repo.open()?;
    let (target, bound) = recovery_target(&args)?;
    let (id, snap) = match &args.snapshot {
        Some(query) => snapshot::find(repo.store(), repo.key(), query)?,
        None => {
            let wal: Vec<_> = crate::repo::wal::list(repo.store())?.into_iter().map(|(name, _)| name).collect();
            pitr::choose_backup(snapshot::load_all(repo.store(), repo.key())?, &wal, bound)?
        }
    };
    let target =
        Recovery { target, timeline: args.target_timeline, keep_archiving: args.archive_mode == ArchiveMode::Keep };
    if args.start && snap.kind != SnapshotKind::PgBase {
        anyhow::bail!(repo::Error::InvalidRequest("--start applies to PostgreSQL base backups only".into()));
    }
    let progress = super::progress(global);
    let started = std::time::Instant::now();
    if let Some(dsn) = &args.pg {
        return restore_dump(&repo, &snap, dsn, progress.as_ref());
    }
    let Some(dir) = &args.to else {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        let bytes = restore::restore_to_writer(&repo, &snap, &mut out, progress.as_ref())?;
        tracing::info!(snapshot = %id.short(), bytes, "stream restored");
        return Ok(());
    };
    let existed = dir.exists();
    let s = restore::restore_to_dir(&repo, &snap, dir, args.skip_damaged, progress.as_ref()).map_err(|e| {
        let damage = e.is_damage();
        let e = anyhow::Error::new(e);
        if !damage {
            return e;
        }
        e.context(format!(
            "restore stopped at damaged data and left nothing in {}: nothing unverified was restored \
             (--skip-damaged restores every file whose data is intact)",
            dir.display()
        ))
    })?;
    if !global.quiet {
        let secs = started.elapsed().as_secs_f64();
        println!(
            "restored snapshot {} to {}: {} files, {} dirs, {} symlinks, {} in {:.1} s ({:.0} MB/s)",
            id.short(),
            dir.display(),
            s.files,
            s.dirs,
            s.symlinks,
            human_bytes(s.bytes),
            secs,
            s.bytes as f64 / 1e6 / secs.max(1e-9)
        );
    }
    if !s.not_restored.is_empty() {
        for (path, reason) in &s.not_restored {
            println!("not restored: {path}: {reason}");
        }
        if snap.kind == SnapshotKind::PgBase {
            println!("the data directory is incomplete, so recovery was not configured");
        }
        anyhow::bail!(repo::Error::PartlyRestored { path: dir.clone(), count: s.not_restored.len() });
    }
    if snap.kind == SnapshotKind::PgBase
        && let Err(e) = configure_recovery(&args, &snap, dir, &target, global)
    {
        // Nothing half-recovered is left looking like a usable data directory.
        remove_restored(dir, existed);
        return Err(e.context(format!("the restored files in {} were removed", dir.display())));
    }
    Ok(())
}

/// The recovery target the flags ask for, and what a chosen base backup must have ended before.
fn recovery_target(args: &RestoreArgs) -> anyhow::Result<(RecoveryTarget, pitr::EndedBefore)> {
    if let Some(time) = &args.point_in_time {
        if time == "latest" {
            return Ok((RecoveryTarget::End, pitr::EndedBefore::Any));
        }
        let time = pitr::parse_time(time)?;
        return Ok((RecoveryTarget::Time(time), pitr::EndedBefore::Time(time)));
    }
    if let Some(text) = &args.target_lsn {
        let lsn = crate::pg::wal::parse_lsn(text).ok_or_else(|| {
            repo::Error::InvalidRequest(format!("{text:?} is not a WAL position; write it like 0/5000028"))
        })?;
        return Ok((RecoveryTarget::Lsn(text.clone()), pitr::EndedBefore::Lsn(lsn)));
    }
    if let Some(xid) = args.target_xid {
        return Ok((RecoveryTarget::Xid(xid), pitr::EndedBefore::Any));
    }
    Ok((RecoveryTarget::Immediate, pitr::EndedBefore::Any))
}

/// Streams a logical dump into pg_restore; its exit status decides success.
fn restore_dump(
    repo: &repo::Repository,
    snap: &Snapshot,
    dsn: &str,
    progress: &dyn crate::progress::Progress,
) -> anyhow::Result<()> {
    use std::process::Stdio;
    if snap.kind != SnapshotKind::PgDump {
        anyhow::bail!(repo::Error::InvalidRequest("--pg restores logical dumps (backup --pg-dump) only".into()));
    }
    let mut child = crate::pg::client("pg_restore")
        .args(["--exit-on-error", "-d", dsn])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| repo::Error::Database { detail: format!("cannot run pg_restore: {e}") })?;
    let mut stdin = child.stdin.take().expect("piped");
    let streamed = restore::restore_to_writer(repo, snap, &mut stdin, progress);
    drop(stdin);
    let status = child.wait()?;
    streamed?;
    if !status.success() {
        anyhow::bail!(repo::Error::Database {
            detail: format!("pg_restore failed ({status}); see its messages above")
        });
    }
    Ok(())
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

/// Writes the recovery settings into a restored base backup and, with `--start`, runs recovery.
fn configure_recovery(
    args: &RestoreArgs,
    snap: &Snapshot,
    dir: &Path,
    target: &Recovery,
    global: &GlobalArgs,
) -> anyhow::Result<()> {
    let drctl = std::env::current_exe().context("cannot find the drctl executable")?;
    // The server runs restore_command from its data directory: every path must be absolute.
    let repo_args: Vec<String> = args.repo.forward()?.into_iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let access = ArchiveAccess { drctl: &drctl, repo_args: &repo_args };
    recovery::prepare(dir, &access, target)?;
    if args.repo.key_file.is_none() && args.repo.password_file.is_none() {
        tracing::warn!(
            "restore_command has no --key-file: the server's environment must set DRCTL_KEY_FILE, or the \
             repository must have a KMS slot the server's credentials may use"
        );
    }
    let what = match &target.target {
        RecoveryTarget::Immediate => "the end of the backup".to_string(),
        RecoveryTarget::End => "the end of the archived WAL".to_string(),
        RecoveryTarget::Time(t) => t.to_rfc3339(),
        RecoveryTarget::Lsn(lsn) => format!("WAL position {lsn}"),
        RecoveryTarget::Xid(xid) => format!("the commit of transaction {xid}"),
    };
    let pg = snap.pg.as_ref().map(|pg| format!(" (base backup ended at WAL {})", pg.stop_lsn)).unwrap_or_default();
    let archiving = match args.archive_mode {
        ArchiveMode::Off => "archiving is off in it (archive_mode = off; --archive-mode keep leaves the backup's)",
        ArchiveMode::Keep => "it archives with the backup's settings once started",
    };
    if !args.start {
        if !global.quiet {
            println!(
                "recovery configured to {what}{pg}: start PostgreSQL on {} to replay WAL and promote; {archiving}",
                dir.display()
            );
        }
        return Ok(());
    }
    if let Some(pg) = &snap.pg {
        server::check_version(&pg.pg_version)?;
    }
    let recovered = server::recover(dir, RECOVERY_TIMEOUT);
    // The prefetch worker restore_command started outlives the server: stop it and remove its
    // spool before the directory is reported ready (or removed).
    crate::ops::wal::prefetch::shut_down(
        &dir.join("pg_wal").join(crate::ops::wal::prefetch::DEFAULT_SPOOL),
        Duration::from_secs(15),
    );
    let recovered = recovered?;
    if !global.quiet {
        println!("recovered to {what}{pg} and promoted; {} is ready to start; {archiving}", dir.display());
        for line in [&recovered.stop, &recovered.last_transaction].into_iter().flatten() {
            println!("  postgres: {line}");
        }
    }
    Ok(())
}
