//! Use cases as library operations: what a command, a policy job (and later a runbook or a
//! drill) asks for, composed from the layers below (`repo`, `pg`, `aws`, `policy`, `store`).
//! Each module takes plain option structs, never command-line arguments, and returns a report
//! for its caller to print.

pub mod backup;
pub mod catalog;
pub mod check;
pub mod copy;
pub mod heartbeat;
pub mod policy_db;
pub mod policy_repos;
pub mod promote;
pub mod promote_rds;
pub mod repair;
pub mod restore;
pub mod retention;
pub mod unlock;
pub mod wal;

use std::path::PathBuf;

use crate::{repo, store};

/// What can stop a use case beyond the layers below it: secrets that cannot be read, requests
/// that do not fit what they name, sources that cannot be read and targets that cannot be
/// written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key file or password file that cannot be read: the repository cannot be opened (exit 4).
    #[error("cannot read the {what} {}: {reason}", path.display())]
    UnreadableSecret { what: &'static str, path: PathBuf, reason: String },
    /// The environment variable a policy names for the passphrase is not set (exit 4).
    #[error("the repository passphrase variable {name} the policy names is not set")]
    UnsetSecret { name: String },
    /// What was going on when `source` happened, and what was done about it.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
    /// A local operation of drctl's own that failed (exit 1).
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A request that does not fit what it names (a snapshot, a path, a WAL file): exit 2.
    #[error("{0}")]
    Usage(String),
    /// A file or stream being backed up cannot be read: no snapshot is written (exit 7).
    #[error("cannot read {}", path.display())]
    Source {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The WAL file PostgreSQL asked to archive cannot be read (exit 2, as before any archive).
    #[error("WAL file {} is not readable: cannot read {}", path.display(), path.display())]
    UnreadableWal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Where a restore or a fetch writes cannot take it (exit 9).
    #[error("cannot restore to {}: {reason}", path.display())]
    Target { path: PathBuf, reason: String },
    /// A restore that wrote every verified file but left out the damaged ones it listed (exit 3).
    #[error("{count} file(s) of the snapshot were not restored to {}: their data is damaged (listed above)", path.display())]
    PartlyRestored { path: PathBuf, count: usize },
    /// Safety gates refused (each printed with what it measured): nothing was changed (exit 15).
    #[error("promotion refused by {count} safety gate(s): {}", names.join(", "))]
    Refused { count: usize, names: Vec<&'static str> },
    /// A promotion that went through but did not end as it must (exit 12).
    #[error("{0}")]
    Promotion(String),
    #[error(transparent)]
    Repo(#[from] repo::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Pg(#[from] crate::pg::Error),
    #[error(transparent)]
    Rds(#[from] crate::aws::rds::RdsError),
    #[error(transparent)]
    Dns(#[from] crate::aws::route53::DnsError),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Damage to stored data found while using it (see [`repo::Error::corrupt`]).
    pub fn corrupt(object: &str, reason: impl Into<String>) -> Error {
        Error::Repo(repo::Error::corrupt(object, reason))
    }

    /// Whether this is damage to stored data (see [`repo::Error::is_damage`]).
    pub fn is_damage(&self) -> bool {
        matches!(self, Error::Repo(e) if e.is_damage())
    }

    /// Turns an io error of drctl's own work into one that says what it was doing.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { what: what.into(), source }
    }
}

/// An error and its causes on one line ("what: why: why"), for logs of background workers,
/// whose errors reach no terminal.
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}
