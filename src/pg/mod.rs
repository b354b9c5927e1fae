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
/// refused logins and SQL errors come back as [`crate::repo::Error::Database`] with psql's words.
pub fn query_row(dsn: &str, sql: &str) -> Result<Vec<String>, crate::repo::Error> {
    let failed = |detail: String| crate::repo::Error::Database { detail };
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
