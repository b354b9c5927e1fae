use clap::Args;

use super::{GlobalArgs, RepoArgs, human_bytes, parse_duration};
use crate::ops::retention::{self, ForgetOptions};
use crate::repo::prune::PruneReport;
use crate::repo::retention::Rules;

#[derive(Debug, Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub keep: Rules,
    /// Only show what would be removed, and why the rest stays.
    #[arg(long)]
    pub dry_run: bool,
    /// Then prune: reclaim the packs no snapshot uses any more.
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub grace: GraceArgs,
    /// Print the plan and what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GraceArgs {
    /// A pack found unused is deleted by a prune at least this long after the one that marked
    /// it unused, so a backup running meanwhile cannot lose a chunk it reuses.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub grace: chrono::Duration,
}

pub fn run(args: ForgetArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    retention::check_rules(&args.keep)?;
    let repo = args.repo.open()?;
    let options = ForgetOptions {
        rules: &args.keep,
        policy: None,
        dry_run: args.dry_run,
        prune: args.prune.then_some(args.grace.grace),
        when_needed: false,
    };
    let retention::ForgetReport { plan, applied, prune: pruned } = retention::forget(&repo, &options)?;
    if args.json {
        let out = serde_json::json!({"plan": plan, "applied": applied, "prune": pruned});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if global.quiet {
        return Ok(());
    }
    for j in &plan.snapshots {
        let what = if j.verdict.keep { "keep  " } else { "remove" };
        println!(
            "{what}  {}  {}  {}  {}",
            j.short_id,
            j.time.format("%Y-%m-%d %H:%M:%S"),
            j.group,
            j.verdict.reasons.join(", ")
        );
    }
    let verb = if args.dry_run { "would remove" } else { "removed" };
    let removed = plan.snapshots.iter().filter(|j| !j.verdict.keep).count();
    match &plan.wal_kept_from {
        Some(first) => println!(
            "{verb} {removed} snapshots and {} WAL files; WAL is kept from {first} on",
            plan.wal_to_remove.len()
        ),
        None => println!("{verb} {removed} snapshots; no base backup is kept, so no WAL is removed"),
    }
    if let Some(applied) = &applied
        && !applied.retained.is_empty()
    {
        println!("kept by S3 Object Lock until their retention ends: {}", applied.retained.join(", "));
    }
    if let Some(report) = &pruned {
        print_prune(report, args.dry_run);
        if args.dry_run {
            println!("(a dry run prunes nothing: the figures above do not count the packs this forget would free)");
        }
    }
    Ok(())
}

pub fn print_prune(r: &PruneReport, dry_run: bool) {
    let verb = if dry_run { "would delete" } else { "deleted" };
    println!(
        "prune: {verb} {} packs ({}); {} packs ({}) marked unused, deleted by a prune after the grace period; {} packs \
         partly used ({} unused in them){}",
        r.packs_deleted,
        human_bytes(r.bytes_deleted),
        r.packs_marked,
        human_bytes(r.bytes_marked),
        r.packs_partly_used,
        human_bytes(r.bytes_unused_in_partly_used),
        if r.packs_retained > 0 {
            format!("; {} packs kept by Object Lock until their retention ends", r.packs_retained)
        } else {
            String::new()
        }
    );
    if r.leftovers_removed > 0 {
        println!(
            "prune: removed {} leftovers of interrupted writes (temporary files, incomplete uploads)",
            r.leftovers_removed
        );
    }
}
