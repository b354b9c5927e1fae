use clap::Args;
use std::path::PathBuf;

use super::{GlobalArgs, RepoArgs, human_bytes};
use anyhow::Context;

use crate::pg::recovery::{self, ArchiveAccess, RecoveryTarget};
use crate::repo::snapshot::{self, SnapshotKind};
use crate::restore;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to", "stdout"])))]
pub struct RestoreArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Snapshot id (or a unique prefix of at least 4 characters), or `latest`.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Restore into this directory; it must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
    /// Write a stream snapshot to standard output.
    #[arg(long)]
    pub stdout: bool,
}

pub fn run(args: RestoreArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let repo = args.repo.open()?;
    let (id, snap) = snapshot::find(repo.store(), repo.key(), &args.snapshot)?;
    let progress = super::progress(global);
    let started = std::time::Instant::now();
    if let Some(dir) = &args.to {
        let s = restore::restore_to_dir(&repo, &snap, dir, progress.as_ref())?;
        if snap.kind == SnapshotKind::PgBase {
            let drctl = std::env::current_exe().context("cannot find the drctl executable")?;
            // The server runs restore_command from its data directory: every path must be absolute.
            let repo_location = std::path::absolute(&args.repo.repo)?.to_string_lossy().into_owned();
            let key_file = args.repo.key_file.as_deref().map(std::path::absolute).transpose()?;
            let access = ArchiveAccess { drctl: &drctl, repo: &repo_location, key_file: key_file.as_deref() };
            recovery::prepare(dir, &access, &RecoveryTarget::Immediate)?;
            if access.key_file.is_none() {
                tracing::warn!("restore_command has no --key-file: the server's environment must set DRCTL_KEY_FILE");
            }
            if !global.quiet {
                println!(
                    "recovery configured: start PostgreSQL on {} to replay WAL to the end of the backup",
                    dir.display()
                );
            }
        }
        if !global.quiet {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "restored snapshot {} to {}: {} files, {} dirs, {} symlinks, {} in {:.1} s ({:.0} MB/s)",
                id.short(),
                dir.display(),
                s.files,
                s.dirs,
                s.symlinks,
                human_bytes(s.bytes),
                secs,
                s.bytes as f64 / 1e6 / secs.max(1e-9)
            );
        }
    } else {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        let bytes = restore::restore_to_writer(&repo, &snap, &mut out, progress.as_ref())?;
        tracing::info!(snapshot = %id.short(), bytes, "stream restored");
    }
    Ok(())
}
