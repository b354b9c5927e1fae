//! WAL archiving and fetching for PostgreSQL's `archive_command` and `restore_command`: one file
//! pushed or fetched per call, and the background workers that work ahead through a spool.

pub mod async_push;
pub mod fetch;
pub mod prefetch;
pub mod push;
pub mod spool;

use std::ffi::OsString;
use std::path::Path;

use super::{Error, Result};
use crate::pg::wal::WalName;
use crate::repo::{Repository, wal};

/// The repository a WAL operation works on: opened only once a file must travel, and named on
/// the command line of a background worker, which opens it itself.
pub trait RepoSource {
    fn open(&self) -> Result<Repository>;
    /// The options that make a worker open the same repository from any directory.
    fn forward(&self) -> Result<Vec<OsString>>;
}

/// Writes one archived WAL file to `dest`: into a temporary file beside it, renamed over `dest`
/// only when complete (never fsynced: a WAL file fetched for replay is fetched again after a
/// crash). `None` when the archive does not hold it.
pub fn fetch_into(repo: &Repository, name: &WalName, dest: &Path) -> Result<Option<u64>> {
    let temp = dest.with_file_name(format!(".{name}.drctl-fetch"));
    let failed = |e: std::io::Error| Error::Target { path: dest.to_path_buf(), reason: e.to_string() };
    let result = (|| {
        let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&temp).map_err(failed)?);
        let Some(bytes) = wal::fetch_to(repo, name, &mut file)? else { return Ok(None) };
        file.into_inner().map_err(|e| failed(e.into_error()))?;
        std::fs::rename(&temp, dest).map_err(failed)?;
        Ok(Some(bytes))
    })();
    if !matches!(result, Ok(Some(_))) {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
