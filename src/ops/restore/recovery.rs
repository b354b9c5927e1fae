//! A restored base backup made recoverable: recovery settings written into it (restore_command,
//! the target, archiving off unless kept), and with `start`, recovery run to the target.

use std::path::Path;
use std::time::Duration;

use crate::ops::wal::prefetch;
use crate::ops::{Error, Result};
use crate::pg::recovery::{self, ArchiveAccess, Recovery, RecoveryTarget};
use crate::pg::server::{self, Recovered};
use crate::repo::snapshot::Snapshot;

/// How long `start` lets PostgreSQL replay WAL before giving up.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// What was set up, in words for the report.
#[derive(Debug, Clone)]
pub struct Configured {
    /// Where recovery stops ("the end of the backup", a time, …).
    pub target: String,
    /// " (base backup ended at WAL …)", or empty.
    pub backup_end: String,
    /// Whether the restored cluster archives, and how to change that.
    pub archiving: &'static str,
}

/// Writes the recovery settings into the restored data directory `dir`; `repo_args` are the
/// flags restore_command's `drctl wal-fetch` reaches the repository with (absolute paths).
pub fn configure(dir: &Path, snap: &Snapshot, recovery: &Recovery, repo_args: &[String]) -> Result<Configured> {
    let drctl = std::env::current_exe()
        .map_err(|source| Error::Io { what: "cannot find the drctl executable".into(), source })?;
    recovery::prepare(dir, &ArchiveAccess { drctl: &drctl, repo_args }, recovery)?;
    if !repo_args.iter().any(|a| a == "--key-file" || a == "--password-file") {
        tracing::warn!(
            "restore_command has no --key-file: the server's environment must set DRCTL_KEY_FILE, or the \
             repository must have a KMS slot the server's credentials may use"
        );
    }
    let target = match &recovery.target {
        RecoveryTarget::Immediate => "the end of the backup".to_string(),
        RecoveryTarget::End => "the end of the archived WAL".to_string(),
        RecoveryTarget::Time(t) => t.to_rfc3339(),
        RecoveryTarget::Lsn(lsn) => format!("WAL position {lsn}"),
        RecoveryTarget::Xid(xid) => format!("the commit of transaction {xid}"),
    };
    let backup_end =
        snap.pg.as_ref().map(|pg| format!(" (base backup ended at WAL {})", pg.stop_lsn)).unwrap_or_default();
    let archiving = match recovery.keep_archiving {
        false => "archiving is off in it (archive_mode = off; --archive-mode keep leaves the backup's)",
        true => "it archives with the backup's settings once started",
    };
    Ok(Configured { target, backup_end, archiving })
}

/// Refuses, before anything is restored, a `--start` this machine cannot carry out: the
/// backup's own major version of `postgres` must be installed (another version would fail on
/// the directory, or worse, half-start).
pub fn check_server(snap: &Snapshot) -> Result<()> {
    let Some(pg) = &snap.pg else { return Ok(()) };
    let major = pg.major().ok_or_else(|| {
        crate::pg::Error::database(format!("the backup names an unknown PostgreSQL version {:?}", pg.pg_version))
    })?;
    let purpose = format!("recovery of a PostgreSQL {major} base backup");
    crate::pg::programs::server("postgres", major, &purpose)?;
    Ok(())
}

/// Runs recovery in `dir` privately (no TCP, archiving off) until the target is reached and the
/// server promoted, then stops it cleanly; with the server binaries of the backup's version.
pub fn run(dir: &Path, env: &[(String, String)]) -> Result<Recovered> {
    let recovered = server::recover(dir, RECOVERY_TIMEOUT, env);
    // The prefetch worker restore_command started outlives the server: stop it and remove its
    // spool before the directory is reported ready (or removed).
    prefetch::shut_down(&dir.join("pg_wal").join(prefetch::DEFAULT_SPOOL), Duration::from_secs(15));
    Ok(recovered?)
}
