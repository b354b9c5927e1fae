use clap::Args;

use super::{GlobalArgs, RepoArgs, human_bytes};
use crate::ops;
use crate::repo;

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Also read every pack and verify every chunk (decrypt, authenticate, hash).
    #[arg(long)]
    pub read_data: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CheckArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let repo = args.repo.open()?;
    let _lock = repo.lock_for_reading("check")?;
    let progress = super::progress(global);
    let checked = ops::check::check(&repo, args.read_data, progress.as_ref())?;
    let report = checked.report;
    if let Some(e) = checked.record_error {
        eprintln!("warning: the check's record could not be stored in the repository: {e}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for w in &report.warnings {
            println!("warning: {w}");
        }
        for p in &report.problems {
            println!("damaged: {}: {}", p.object, p.reason);
            if !p.snapshots.is_empty() {
                let ids: Vec<String> = p.snapshots.iter().map(|s| s.short()).collect();
                println!("  affects snapshots: {}", ids.join(" "));
            }
        }
        if !global.quiet || !report.is_ok() {
            println!(
                "checked {} snapshots, {} index files, {} packs, {} chunks, {} WAL files{}{}: {}",
                report.snapshots,
                report.index_files,
                report.packs,
                report.chunks,
                report.wal_files,
                report.records.iter().map(|(what, n)| format!(", {n} {what}s")).collect::<String>(),
                if args.read_data { format!(", read {}", human_bytes(report.bytes_read)) } else { String::new() },
                if report.is_ok() {
                    "no damage found".to_string()
                } else {
                    format!("{} damaged object(s)", report.problems.len())
                }
            );
        }
    }
    if !report.is_ok() {
        return Err(repo::Error::Damaged { count: report.problems.len() }.into());
    }
    Ok(())
}
