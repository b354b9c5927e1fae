use clap::{Args, Subcommand};

use super::{GlobalArgs, RepoArgs};
use crate::repo::repair_index;

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// List again, from the packs' own headers, the packs no readable index file lists (an
    /// index file lost or damaged), and remove the damaged index files.
    Index(IndexArgs),
}

#[derive(Debug, Args)]
pub struct IndexArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: RepairCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    match command {
        RepairCommand::Index(args) => index(args, global),
    }
}

fn index(args: IndexArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let repo = args.repo.open()?;
    let lock = repo.lock_exclusive("repair index")?;
    let report = repair_index::repair_index(&repo, &lock)?;
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
