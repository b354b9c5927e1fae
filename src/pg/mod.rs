//! PostgreSQL know-how: WAL file names, timelines and the blocks WAL records change (base
//! backups, incrementals and point-in-time restore build on this), client programs, the
//! archiver's and a standby's state, promotion.

pub mod archiver;
pub mod basebackup;
pub mod datadir;
pub mod heartbeat;
pub mod programs;
pub mod recovery;
pub mod server;
pub mod session;
pub mod sql;
pub mod standby;
pub mod verify;
pub mod wal;
pub mod wal_blocks;
pub mod window;

/// What PostgreSQL (a server, a client program, a data directory) did not do. Each variant
/// carries the facts a message needs; `crate::error` adds the hint and the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the database cannot be backed up: {detail}")]
    Database { detail: String },
    /// SQL drctl sends itself (promotion, runbook checks): the server and what went wrong.
    #[error("PostgreSQL {detail}")]
    Sql { detail: String },
    #[error("WAL archiving is not set up on the database (archive_mode = {archive_mode}{}), so a base backup could never be restored", if *standby { ", a standby" } else { "" })]
    ArchivingOff { archive_mode: String, standby: bool },
    #[error("pg_basebackup waited {seconds} s for the backup's last WAL segment to be archived")]
    ArchiveStalled { seconds: u64 },
    /// No program of the version a server or data directory needs ([`programs`]).
    #[error("{purpose} needs {program} of PostgreSQL {needed}, and {found} (searched {searched})")]
    MissingProgram { program: String, needed: String, purpose: String, searched: String, found: String },
    #[error("the point in time is out of reach: {detail}")]
    OutOfReach { detail: String },
    #[error("cannot restore to {}: {reason}", path.display())]
    DataDirectory { path: std::path::PathBuf, reason: String },
}

impl Error {
    pub fn database(detail: impl Into<String>) -> Error {
        Error::Database { detail: detail.into() }
    }

    pub fn sql(detail: impl Into<String>) -> Error {
        Error::Sql { detail: detail.into() }
    }
}

/// A libpq connection string of `keyword='value'` pairs (quotes and backslashes escaped); a
/// keyword without a value is left out.
pub fn conninfo(pairs: &[(&str, Option<String>)]) -> String {
    let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    let present = pairs.iter().filter_map(|(keyword, value)| Some(format!("{keyword}={}", quote(value.as_deref()?))));
    present.collect::<Vec<_>>().join(" ")
}

/// A server to talk to: its libpq connection string (or URL; PG* variables apply) and the
/// password a policy names. The password reaches client programs only as `PGPASSWORD` in their
/// environment, never on a command line where other users could read it; each connection carries
/// its own, so one process can talk to two servers (a drill, a promotion).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conn {
    pub dsn: String,
    pub password: Option<String>,
}

impl Conn {
    /// A connection with no password of its own (libpq finds one: PGPASSWORD, ~/.pgpass, …).
    pub fn new(dsn: impl Into<String>) -> Conn {
        Conn { dsn: dsn.into(), password: None }
    }

    /// The same server and password, another database.
    pub fn with_database(&self, database: &str) -> Conn {
        Conn { dsn: basebackup::with_database(&self.dsn, database), password: self.password.clone() }
    }

    /// A PostgreSQL client program ([`programs`]) ready to run, with this connection's password;
    /// the caller passes `-d` with [`Conn::dsn`].
    pub fn client(&self, program: &std::path::Path) -> std::process::Command {
        let mut command = std::process::Command::new(program);
        if let Some(password) = &self.password {
            command.env("PGPASSWORD", password);
        }
        command
    }

    /// The server's major version (`server_version_num` / 10000), to choose client programs.
    pub fn server_major(&self) -> Result<u32, Error> {
        let fields = self.query_row("SELECT current_setting('server_version_num')")?;
        let number = fields.first().and_then(|v| v.parse::<u32>().ok());
        number.map(|n| n / 10000).ok_or_else(|| Error::database(format!("unexpected server version {fields:?}")))
    }

    /// Runs one query that returns one row with psql, and returns its columns. Unreachable
    /// servers, refused logins and SQL errors come back as [`Error::Database`] with psql's words.
    pub fn query_row(&self, sql: &str) -> Result<Vec<String>, Error> {
        let failed = |detail: String| Error::Database { detail };
        let psql = programs::psql();
        let out = self
            .client(&psql)
            .args(["-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-d", &self.dsn, "-c", sql])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| failed(format!("cannot run {}: {e}", psql.display())))?;
        if !out.status.success() {
            return Err(failed(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().split('|').map(str::to_string).collect())
    }
}
