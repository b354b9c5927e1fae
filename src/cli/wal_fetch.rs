use anyhow::Context;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

use super::RepoArgs;
use crate::pg::wal::WalName;
use crate::repo::{self, wal};

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
}

/// Exit status for "not in the archive".
pub const NOT_IN_ARCHIVE: u8 = 1;
/// Exit status for every other failure: above 125, PostgreSQL aborts recovery.
pub const FAILED: u8 = 126;

pub fn run(args: WalFetchArgs) -> anyhow::Result<u8> {
    let name = WalName::parse(&args.name)
        .ok_or_else(|| repo::Error::InvalidRequest(format!("{:?} is not a WAL file name", args.name)))?;
    let repo = args.repo.open()?;
    let Some(data) = wal::fetch(&repo, &name)? else {
        tracing::info!(wal = %name, "not in the archive");
        return Ok(NOT_IN_ARCHIVE);
    };
    // Written beside the target and renamed, so PostgreSQL never sees a partial file. No fsync:
    // the file is replayed at once, and after a crash recovery fetches it again.
    let temp = args.path.with_file_name(format!(".{name}.drctl-fetch"));
    let write = || -> std::io::Result<()> {
        std::fs::File::create(&temp)?.write_all(&data)?;
        std::fs::rename(&temp, &args.path)
    };
    write().with_context(|| format!("cannot write {}", args.path.display())).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        e.context(repo::Error::Target { path: args.path.clone(), reason: "cannot write the WAL file".into() })
    })?;
    tracing::info!(wal = %name, bytes = data.len(), "restored from the archive");
    Ok(0)
}
