use clap::Args;

use super::forget::{GraceArgs, print_prune};
use super::{GlobalArgs, RepoArgs};
use crate::ops::retention;

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub grace: GraceArgs,
    /// Only report what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PruneArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let repo = args.repo.open()?;
    let report = retention::prune(&repo, args.grace.grace, args.dry_run)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !global.quiet {
        print_prune(&report, args.dry_run);
    }
    Ok(())
}
