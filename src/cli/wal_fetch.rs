use clap::Args;
use std::path::PathBuf;

use super::RepoArgs;
use crate::ops::wal::fetch::{FetchOptions, Fetched, fetch};

/// `restore_command = 'drctl wal-fetch %f %p'`. Exits 0 when the file was restored, 1 when the
/// archive does not hold it (PostgreSQL asks for files that may not exist), and 126 on any other
/// failure, which makes PostgreSQL stop recovery instead of taking a damaged archive for its end.
#[derive(Debug, Args)]
pub struct WalFetchArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The WAL file PostgreSQL asks for (%f).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Where to write it (%p, relative to the data directory).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Segments a background worker fetches ahead of the server, in parallel; 0 turns prefetch off.
    #[arg(long, value_name = "N", default_value_t = 8, env = "DRCTL_PREFETCH")]
    pub prefetch: u16,
    /// Where prefetched segments wait, in a `prefetch` folder (default: drctl-prefetch beside the
    /// file, inside pg_wal). One per server.
    #[arg(long, value_name = "DIR", env = "DRCTL_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Segments the prefetch worker fetches at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Serve only the WAL files FILE names (one per line) and report every other as not in the
    /// archive: `drill` recovers from the archive as it was at the simulated failure.
    #[arg(long, value_name = "FILE")]
    pub archive_list: Option<PathBuf>,
    /// Run as the prefetch worker (started by wal-fetch itself).
    #[arg(long, hide = true)]
    pub worker: bool,
}

/// Exit status for "not in the archive".
pub const NOT_IN_ARCHIVE: u8 = 1;
/// Exit status for every other failure: above 125, PostgreSQL aborts recovery.
pub const FAILED: u8 = 126;

pub fn run(args: WalFetchArgs) -> anyhow::Result<u8> {
    let options = FetchOptions {
        name: args.name,
        path: args.path,
        prefetch: args.prefetch,
        spool_dir: args.spool_dir,
        jobs: args.jobs,
        worker: args.worker,
        archive_list: args.archive_list,
    };
    Ok(match fetch(&options, &args.repo)? {
        Fetched::Restored => 0,
        Fetched::NotInArchive => NOT_IN_ARCHIVE,
    })
}
