//! WAL archiving and fetching for PostgreSQL's `archive_command` and `restore_command`: one file
//! pushed or fetched per call, and the background workers that work ahead through a spool.

pub mod async_push;
pub mod fetch;
pub mod prefetch;
pub mod push;
pub mod spool;

use std::ffi::OsString;

use crate::repo::Repository;

/// The repository a WAL operation works on: opened only once a file must travel, and named on
/// the command line of a background worker, which opens it itself.
pub trait RepoSource {
    fn open(&self) -> anyhow::Result<Repository>;
    /// The options that make a worker open the same repository from any directory.
    fn forward(&self) -> anyhow::Result<Vec<OsString>>;
}
