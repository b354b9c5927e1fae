//! PostgreSQL know-how: WAL file names and timelines (base backups and point-in-time restore
//! build on this).

pub mod async_push;
pub mod basebackup;
pub mod datadir;
pub mod pitr;
pub mod prefetch;
pub mod recovery;
pub mod server;
pub mod session;
pub mod spool;
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
