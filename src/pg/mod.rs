//! PostgreSQL know-how: WAL file names and timelines (base backups and point-in-time restore
//! build on this).

pub mod basebackup;
pub mod datadir;
pub mod recovery;
pub mod server;
pub mod session;
pub mod wal;
pub mod window;

use std::sync::OnceLock;

/// What PostgreSQL (a server, a client program, a data directory) did not do. Each variant
/// carries the facts a message needs; `crate::error` adds the hint and the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the database cannot be backed up: {detail}")]
    Database { detail: String },
    #[error("WAL archiving is not set up on the database (archive_mode = {archive_mode}{}), so a base backup could never be restored", if *standby { ", a standby" } else { "" })]
    ArchivingOff { archive_mode: String, standby: bool },
    #[error("pg_basebackup waited {seconds} s for the backup's last WAL segment to be archived")]
    ArchiveStalled { seconds: u64 },
    #[error("the point in time is out of reach: {detail}")]
    OutOfReach { detail: String },
    #[error("cannot restore to {}: {reason}", path.display())]
    DataDirectory { path: std::path::PathBuf, reason: String },
}

impl Error {
    pub fn database(detail: impl Into<String>) -> Error {
        Error::Database { detail: detail.into() }
    }
}

/// The database password a policy names (from its environment variable or file), handed to every
/// client program as `PGPASSWORD`: never on a command line, where other users could read it.
static CLIENT_PASSWORD: OnceLock<String> = OnceLock::new();

/// Sets the password the client programs of this process use; the first call wins (one process
/// runs one policy).
pub fn set_client_password(password: String) {
    let _ = CLIENT_PASSWORD.set(password);
}

/// A PostgreSQL client program (psql, pg_basebackup, pg_dump, pg_restore) ready to run, with the
/// policy's password if one was set.
pub fn client(program: &str) -> std::process::Command {
    let mut command = std::process::Command::new(basebackup::find_program(program));
    if let Some(password) = CLIENT_PASSWORD.get() {
        command.env("PGPASSWORD", password);
    }
    command
}

/// Runs one query that returns one row with psql, and returns its columns. Unreachable servers,
/// refused logins and SQL errors come back as [`Error::Database`] with psql's words.
pub fn query_row(dsn: &str, sql: &str) -> Result<Vec<String>, Error> {
    let failed = |detail: String| Error::Database { detail };
    let out = client("psql")
        .args(["-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| failed(format!("cannot run {}: {e}", basebackup::find_program("psql").display())))?;
    if !out.status.success() {
        return Err(failed(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().split('|').map(str::to_string).collect())
}
