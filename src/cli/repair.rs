use clap::{Args, Subcommand};

use super::{GlobalArgs, RepoArgs};
use crate::repo::repair_snapshots;

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Remove snapshot manifests that are damaged (fail authentication, cut short, lost).
    Snapshots(RepairSnapshotsArgs),
}

#[derive(Debug, Args)]
pub struct RepairSnapshotsArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Only list what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: RepairCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    match command {
        RepairCommand::Snapshots(args) => snapshots(args, global),
    }
}

fn snapshots(args: RepairSnapshotsArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let repo = args.repo.open()?;
    let _lock = repo.lock_exclusive("repair snapshots")?;
    let repaired = repair_snapshots::remove_unreadable(&repo, args.dry_run)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&repaired)?);
        return Ok(());
    }
    if global.quiet {
        return Ok(());
    }
    for u in &repaired.unreadable {
        let note = if u.kept { " (kept: it authenticates; upgrade drctl to read it)" } else { "" };
        println!("unreadable snapshot {}: {}{note}", u.id, u.reason);
    }
    let verb = if args.dry_run { "would remove" } else { "removed" };
    let count = if args.dry_run { repaired.unreadable.iter().filter(|u| !u.kept).count() } else { repaired.removed };
    println!("{verb} {count} unreadable snapshot manifest(s)");
    if !repaired.retained.is_empty() {
        println!("kept by S3 Object Lock until their retention ends: {}", repaired.retained.join(", "));
    }
    Ok(())
}
