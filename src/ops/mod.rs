//! Use cases as library operations: what a command, a policy job (and later a runbook or a
//! drill) asks for, composed from the layers below (`repo`, `pg`, `aws`, `policy`, `store`).
//! Each module takes plain option structs, never command-line arguments, and returns a report
//! for its caller to print.

pub mod backup;
pub mod copy;
pub mod restore;
pub mod retention;
pub mod unlock;
pub mod wal;

use std::path::PathBuf;

use crate::{repo, store};

/// What can stop a use case beyond the layers below it: secrets that cannot be read, and
/// requests that do not fit the snapshot or the repository they name.
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
    #[error(transparent)]
    Repo(#[from] repo::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Pg(#[from] crate::pg::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
