use clap::Args;
use std::path::PathBuf;

use super::RepoArgs;
use crate::ops::wal::RepoSource;
use crate::ops::wal::push::{PushOptions, push};

/// `archive_command = 'drctl wal-push %p'`, with DRCTL_REPO and DRCTL_KEY_FILE in the server's
/// environment. Returns only once the file is durably stored in the repository.
#[derive(Debug, Args)]
pub struct WalPushArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The WAL file to archive (PostgreSQL's %p, relative to the data directory).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Archive through a background worker that pushes every ready WAL file ahead, in
    /// parallel; this call then returns as soon as the worker has stored its file.
    #[arg(long = "async", env = "DRCTL_WAL_ASYNC")]
    pub asynchronous: bool,
    /// With --async: where the worker keeps its markers and log, in an `archive` folder (default:
    /// drctl-spool beside the WAL file, inside pg_wal). One per server.
    #[arg(long, value_name = "DIR", env = "DRCTL_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// zstd level for WAL files. 1 by default: WAL compresses nearly as well as at 3, twice as
    /// fast, and archiving must keep up with the busiest server.
    #[arg(long, value_name = "LEVEL", default_value_t = 1, env = "DRCTL_WAL_COMPRESSION_LEVEL",
          value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression_level: i32,
    /// With --async: WAL files the worker pushes at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Archive the history file of timeline TLI even though it leaves its parent timeline before
    /// the parent's archived end: for the new primary after a deliberate point-in-time restore
    /// (a restored copy's new timeline is refused, so that restoring the latest point never
    /// follows it).
    #[arg(long, value_name = "TLI", env = "DRCTL_ALLOW_FORK")]
    pub allow_fork: Option<u32>,
    /// Run as the background worker (started by --async itself).
    #[arg(long, hide = true, requires = "asynchronous")]
    pub worker: bool,
}

pub fn run(args: WalPushArgs) -> anyhow::Result<()> {
    let options = PushOptions {
        path: args.path,
        asynchronous: args.asynchronous,
        spool_dir: args.spool_dir,
        compression_level: args.compression_level,
        jobs: args.jobs,
        allow_fork: args.allow_fork,
        worker: args.worker,
    };
    Ok(push(&options, &args.repo)?)
}

/// The repository options, opened here or forwarded to a background worker.
impl RepoSource for RepoArgs {
    fn open(&self) -> crate::ops::Result<crate::repo::Repository> {
        RepoArgs::open(self)
    }

    fn forward(&self) -> crate::ops::Result<Vec<std::ffi::OsString>> {
        RepoArgs::forward(self)
    }
}
