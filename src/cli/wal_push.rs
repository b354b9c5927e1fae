use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

use super::RepoArgs;
use crate::pg::wal::WalName;
use crate::repo::{self, wal};

/// `archive_command = 'drctl wal-push %p'`, with DRCTL_REPO and DRCTL_KEY_FILE in the server's
/// environment. Returns only once the file is durably stored.
#[derive(Debug, Args)]
pub struct WalPushArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The WAL file to archive (PostgreSQL's %p, relative to the data directory).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

pub fn run(args: WalPushArgs) -> anyhow::Result<()> {
    let file_name = args.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let name = WalName::parse(file_name).ok_or_else(|| {
        repo::Error::InvalidRequest(format!("{} is not a WAL file name PostgreSQL archives", args.path.display()))
    })?;
    let data =
        std::fs::read(&args.path).with_context(|| format!("cannot read {}", args.path.display())).map_err(|e| {
            e.context(repo::Error::InvalidRequest(format!("WAL file {} is not readable", args.path.display())))
        })?;
    let repo = args.repo.open()?;
    match wal::push(&repo, &name, &data)? {
        wal::Pushed::Stored(bytes) => tracing::info!(wal = %name, bytes, "archived"),
        wal::Pushed::AlreadyArchived => tracing::info!(wal = %name, "already archived with identical content"),
    }
    Ok(())
}
