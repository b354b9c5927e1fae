//! A logical dump restored into a database: streamed into pg_restore, whose exit status decides.

use std::process::Stdio;

use super::files::restore_to_writer;
use crate::ops::Error;
use crate::ops::Result;
use crate::pg::Conn;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::snapshot::{Snapshot, SnapshotKind};

/// Restores the dump `snap` into the database `conn` names (it must exist); `options` are extra
/// pg_restore flags (a drill's scratch cluster has none of the source's roles: `--no-owner`).
pub fn restore_dump(
    repo: &Repository,
    snap: &Snapshot,
    conn: &Conn,
    options: &[&str],
    progress: &dyn Progress,
) -> Result<()> {
    if snap.kind != SnapshotKind::PgDump {
        return Err(Error::Usage("--pg restores logical dumps (backup --pg-dump) only".into()));
    }
    let failed = crate::pg::Error::database;
    let major = conn.server_major()?;
    let purpose = format!("restoring a dump into a PostgreSQL {major} server");
    let program = crate::pg::programs::client("pg_restore", major, &purpose)?;
    let mut child = conn
        .client(&program)
        .args(["--exit-on-error", "-d", &conn.dsn])
        .args(options)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run pg_restore: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    let streamed = restore_to_writer(repo, snap, &mut stdin, progress);
    drop(stdin);
    let status = child.wait().map_err(|e| failed(format!("cannot wait for pg_restore: {e}")))?;
    streamed?;
    if !status.success() {
        return Err(failed(format!("pg_restore failed ({status}); see its messages above")).into());
    }
    Ok(())
}
