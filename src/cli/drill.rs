//! `drctl drill`: a DR drill of a policy (restore into a scratch cluster, verify, measure RTO and
//! RPO against the policy's targets), and `drctl drill list`, the drills recorded.

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use std::path::PathBuf;

use super::job::MetricsArgs;
use super::{AccessArgs, GlobalArgs};
use crate::drill::record::{self, Record, Status};
use crate::drill::{self, DrillOptions, Point, seconds};
use crate::error::ExitCode;
use crate::ops::policy_repos;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DrillArgs {
    #[command(subcommand)]
    pub command: Option<DrillCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// The drills recorded in the policy's primary repository, oldest first.
    List(ListArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("point").args(["latest", "at", "random_within", "snapshot"])))]
pub struct RunArgs {
    /// The policy to drill: its primary repository, its targets (rto, rpo) and drill checks.
    #[arg(long, value_name = "FILE", required = true)]
    pub policy: Option<PathBuf>,
    /// Simulate a failure now and recover everything archived by then (the default).
    #[arg(long)]
    pub latest: bool,
    /// Simulate a failure at TIME ("2026-11-20 14:03:00+00") and recover to it.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Simulate a failure at a random moment within DURATION before now.
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    pub random_within: Option<chrono::Duration>,
    /// Restore this snapshot to its end (the failure is the moment it ended).
    #[arg(long, value_name = "ID")]
    pub snapshot: Option<String>,
    /// Where the scratch cluster goes: a new directory (default: one in the temporary folder).
    /// It is removed afterwards unless --keep.
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// Also drill RDS's own point-in-time recovery (`kind: rds`, with `rds.drill` in the policy):
    /// a scratch instance restored to the failure, checked, and deleted afterwards.
    #[arg(long)]
    pub rds: bool,
    /// Leave the scratch cluster (stopped) and the scratch RDS instance (running, and billed) for
    /// inspection; the record names them.
    #[arg(long)]
    pub keep: bool,
    /// Print the record as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub access: AccessArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The policy whose primary repository holds the records.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Print the records as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub access: AccessArgs,
}

pub fn run(args: DrillArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    match args.command {
        Some(DrillCommand::List(list)) => self::list(list),
        None => drill(args.run, global),
    }
}

fn drill(args: RunArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    let path = args.policy.as_deref().expect("clap requires --policy");
    let Some(policy) = super::policy::load_or_explain(path) else { return Ok(ExitCode::Usage as u8) };
    let point = match (&args.at, args.random_within, &args.snapshot) {
        (Some(at), _, _) => Point::At(crate::ops::restore::select::parse_time(at)?),
        (_, Some(window), _) => Point::RandomWithin(window),
        (_, _, Some(id)) => Point::Snapshot(id.clone()),
        _ => Point::Latest,
    };
    let options = DrillOptions {
        point: Some(point),
        scratch: args.scratch.clone(),
        keep: args.keep,
        rds: args.rds,
        reach: args.access.reach(),
    };
    let talk = !args.json && !global.quiet;
    if talk {
        println!("drill of {} ({})", policy.name, path.display());
    }
    let drilled = drill::run(&policy, &options, &mut |line| {
        if talk {
            println!("  {line}");
        }
    })?;
    args.metrics.publish_drill(&drilled);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&drilled.record)?);
    } else if !global.quiet || !drilled.record.passed {
        print(&drilled.record);
    }
    match &drilled.stored {
        Ok(key) if talk => println!("record stored in the primary repository as {key}"),
        Ok(_) => {}
        Err(e) => eprintln!("error: the drill record could not be stored: {e}"),
    }
    if let Some(e) = drilled.error {
        return Err(e.into());
    }
    for failure in &drilled.record.failures {
        eprintln!("error: {failure}");
    }
    Ok(match (drilled.record.passed, &drilled.stored) {
        (false, _) => ExitCode::Check as u8,
        (true, Err(_)) => ExitCode::Repository as u8,
        (true, Ok(_)) => ExitCode::Ok as u8,
    })
}

fn print(r: &Record) {
    let verdict = if r.passed { "PASSED" } else { "FAILED" };
    println!("drill {} of {}: {verdict}", r.id, r.policy);
    if let Some(s) = &r.snapshot {
        println!(
            "  {} failure at {}; snapshot {} ({})",
            r.mode,
            r.failure_time.format("%Y-%m-%d %H:%M:%S UTC"),
            &s.id[..8.min(s.id.len())],
            s.time.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    let phases: Vec<String> = r.phases.iter().map(|p| format!("{} {:.1} s", p.name, p.seconds)).collect();
    println!("  phases: {}", phases.join(", "));
    let failed = r.checks.iter().filter(|c| c.status == Status::Fail).count();
    println!("  checks: {} run, {failed} failed", r.checks.len());
    let measured = |value: Option<f64>, target: f64| match value {
        Some(v) => format!("{} (target {})", seconds(v), seconds(target)),
        None => format!("not measured (target {})", seconds(target)),
    };
    println!("  RTO {}", measured(r.rto_seconds, r.targets.rto_seconds));
    println!("  RPO {}", measured(r.rpo_seconds, r.targets.rpo_seconds));
    if let Some(kept) = &r.kept {
        println!("  scratch cluster kept (stopped) in {kept}");
    }
    if let Some(rds) = &r.rds {
        let at = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        let asked = match (rds.restore_time, rds.latest_restorable) {
            (Some(t), _) => at(t),
            (None, Some(t)) => format!("its latest restorable time ({})", at(t)),
            (None, None) => "its latest restorable time".into(),
        };
        println!("  RDS {} restored as of {asked} into {} in {}", rds.source, rds.instance, rds.region);
        let restore = rds.restore_seconds.map_or("not available".into(), |s| format!("available after {}", seconds(s)));
        println!("  RDS instance {restore}, endpoint {}", rds.endpoint.as_deref().unwrap_or("none"));
        println!("  RDS RTO {}", rds.rto_seconds.map_or("not measured".into(), seconds));
        match (rds.kept, rds.deleted) {
            (true, _) => println!("  RDS instance {} KEPT (running, and billed): delete it when done", rds.instance),
            (false, true) => println!("  RDS instance {} deleted", rds.instance),
            (false, false) => println!("  RDS instance {} NOT deleted: see the failure below", rds.instance),
        }
    }
}

fn list(args: ListArgs) -> anyhow::Result<u8> {
    let Some(policy) = super::policy::load_or_explain(&args.policy) else { return Ok(ExitCode::Usage as u8) };
    let repo = policy_repos::open(&policy.repositories.primary, &args.access.reach())?;
    let records = record::list(&repo)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(ExitCode::Ok as u8);
    }
    println!("{:<28} {:<20} {:<14} {:<7} {:>10} {:>10}", "DRILL", "STARTED", "MODE", "RESULT", "RTO", "RPO");
    for r in &records {
        let shown = |v: Option<f64>| v.map_or("-".to_string(), seconds);
        println!(
            "{:<28} {:<20} {:<14} {:<7} {:>10} {:>10}",
            r.id,
            r.started.format("%Y-%m-%d %H:%M:%S"),
            r.mode,
            if r.passed { "pass" } else { "FAIL" },
            shown(r.rto_seconds),
            shown(r.rpo_seconds)
        );
    }
    Ok(ExitCode::Ok as u8)
}
