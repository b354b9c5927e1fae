use clap::Args;

use super::{GlobalArgs, RepoArgs, human_bytes, parse_duration};
use crate::repo::prune::{self, PruneReport};
use crate::repo::retention::Rules;
use crate::repo::{self, forget};

#[derive(Debug, Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub keep: KeepArgs,
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

/// Retention rules; a snapshot stays if any rule keeps it, and the newest good one always does.
#[derive(Debug, Args)]
pub struct KeepArgs {
    /// Keep the N newest snapshots of each source.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: u32,
    /// … of each of the N newest days.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// … of each of the N newest ISO weeks.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// … of each of the N newest months.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// … of each of the N newest years.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep every snapshot taken within this long of the newest (e.g. 7d, 36h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_within: Option<chrono::Duration>,
    /// Keep base backups and WAL so that any moment of the last DURATION can be restored.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub pitr_window: Option<chrono::Duration>,
}

#[derive(Debug, Args)]
pub struct GraceArgs {
    /// A pack found unused is deleted by a prune at least this long after the one that marked
    /// it unused, so a backup running meanwhile cannot lose a chunk it reuses.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub grace: chrono::Duration,
}

impl KeepArgs {
    fn rules(&self) -> anyhow::Result<Rules> {
        let rules = Rules {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within,
            pitr_window: self.pitr_window,
        };
        if rules == Rules::default() {
            anyhow::bail!(repo::Error::InvalidRequest(
                "no retention rule given: name at least one --keep-* option or --pitr-window (without one, every \
                 snapshot but the newest would go)"
                    .into()
            ));
        }
        Ok(rules)
    }
}

pub fn run(args: ForgetArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let rules = args.keep.rules()?;
    let repo = args.repo.open()?;
    let lock = repo.lock_exclusive("forget")?;
    let now = chrono::Utc::now();
    let plan = forget::plan(&repo, &rules, now, None)?;
    let applied = if args.dry_run { None } else { Some(forget::apply(&repo, &plan)?) };
    let pruned = if args.prune {
        Some(prune::prune(&repo, &lock, args.grace.grace, args.dry_run, chrono::Utc::now())?)
    } else {
        None
    };
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
