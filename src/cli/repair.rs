//! `drctl repair index | snapshots`: rebuild what a damaged repository can still prove.

use clap::{Args, Subcommand};

use super::{GlobalArgs, RepoArgs};
use crate::ops::repair;

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// List again, from the packs' own headers, the packs no readable index file lists (an
    /// index file lost or damaged), and remove the damaged index files.
    Index(IndexArgs),
    /// Remove snapshot manifests that are damaged (fail authentication, cut short, lost), then
    /// read every snapshot's data and write, for each snapshot of files whose data is damaged,
    /// a new one without the damaged files (tagged `repaired`).
    Snapshots(RepairSnapshotsArgs),
}

#[derive(Debug, Args)]
pub struct IndexArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RepairSnapshotsArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Also remove each original that was rewritten (it stays by default: a copy of the
    /// repository may still restore it whole).
    #[arg(long)]
    pub forget: bool,
    /// Only list what would be removed or rewritten.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: RepairCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    match command {
        RepairCommand::Index(args) => index(args, global),
        RepairCommand::Snapshots(args) => snapshots(args, global),
    }
}

fn index(args: IndexArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let report = repair::index(&args.repo.open()?)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for (pack, reason) in &report.unreadable_packs {
        println!("warning: pack {pack} is in no index and cannot be read: {reason}");
    }
    if !global.quiet {
        println!(
            "repair index: {} packs ({} chunks) indexed again; {} damaged index files removed",
            report.packs_indexed,
            report.chunks_indexed,
            report.index_files_removed.len()
        );
    }
    Ok(())
}

fn snapshots(args: RepairSnapshotsArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let progress = super::progress(global);
    let done = repair::snapshots(&args.repo.open()?, args.forget, args.dry_run, progress.as_ref())?;
    let (repaired, rewrites, forgotten) = (done.unreadable, done.rewrites, done.forgotten);
    if args.json {
        let out = serde_json::json!({"unreadable": repaired, "rewritten": rewrites, "forgotten": forgotten});
        println!("{}", serde_json::to_string_pretty(&out)?);
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
    for r in &rewrites {
        println!("snapshot {} has damaged data:", r.original);
        r.dropped.iter().for_each(|d| println!("  damaged: {d}"));
        match (&r.new, &r.not_rewritten) {
            (Some(new), _) => println!("  rewritten without it as snapshot {new} (tagged repaired)"),
            (None, Some(why)) => println!("  not rewritten: {why}"),
            (None, None) => println!("  would be rewritten without it"),
        }
    }
    if forgotten > 0 {
        println!("removed {forgotten} original(s) that were rewritten");
    }
    Ok(())
}
