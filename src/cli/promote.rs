//! `drctl promote`: a streaming standby becomes the primary, behind safety gates.

use clap::Args;

use super::{GlobalArgs, RepoArgs, parse_duration};
use crate::ops::promote::{self, Lag, PromoteOptions, Promotion, lag_bytes, lag_seconds, parse_lag};
use crate::pg::Conn;

#[derive(Debug, Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The standby to promote (a libpq connection string or URL; PG* variables apply).
    #[arg(long, value_name = "DSN")]
    pub pg: String,
    /// The old primary, checked to be unreachable, stopped or read-only (default: where the
    /// standby streams from, its primary_conninfo).
    #[arg(long, value_name = "DSN", conflicts_with = "assume_fenced")]
    pub fence_primary: Option<String>,
    /// Take the old primary as fenced without checking (shut off by other means).
    #[arg(long)]
    pub assume_fenced: bool,
    /// The most replay lag accepted: a size ("16MiB", "512kB", bytes without a unit) and/or a
    /// time ("30s"); repeat to give both. Default: 16MiB.
    #[arg(long, value_name = "SIZE|DURATION", value_parser = parse_lag)]
    pub max_lag: Vec<Lag>,
    /// A planned move: the primary was shut down cleanly; wait for the standby to replay all it
    /// received and accept no lag at all.
    #[arg(long)]
    pub switchover: bool,
    /// Evaluate and print every gate; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long catching up, promotion, the first write and the archiving of the new timeline's
    /// history file may each take.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub wait: chrono::Duration,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PromoteArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let repo = args.repo.open()?;
    let options = PromoteOptions {
        standby: Conn::new(args.pg.clone()),
        fence_primary: args.fence_primary.clone().map(Conn::new),
        assume_fenced: args.assume_fenced,
        max_lag_bytes: lag_bytes(&args.max_lag),
        max_lag_seconds: lag_seconds(&args.max_lag),
        switchover: args.switchover,
        dry_run: args.dry_run,
        wait: args.wait.to_std().unwrap_or_default(),
    };
    promote::promote(&repo, &options, &mut |p| print(p, args.json, global.quiet))?;
    Ok(())
}

fn print(p: &Promotion, json: bool, quiet: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(p).expect("a promotion serializes"));
        return;
    }
    for g in &p.gates {
        println!("{} {}: {}", if g.passed { "ok    " } else { "REFUSE" }, g.name, g.measured);
        if let Some(fix) = &g.fix {
            println!("       fix: {fix}");
        }
    }
    if quiet {
        return;
    }
    match (p.dry_run, p.promoted) {
        (true, _) if p.refusals().is_empty() => println!("dry run: every gate passes; nothing was changed"),
        (true, _) => println!("dry run: {} gate(s) would refuse; nothing was changed", p.refusals().len()),
        (false, true) => println!(
            "promoted: timeline {} -> {}, writable after {:.1} s, history archived after {:.1} s; replay was {} bytes \
             and {:.1} s behind ({:.1} s in all)",
            p.timeline_before,
            p.timeline_after.unwrap_or_default(),
            p.promote_seconds.unwrap_or_default(),
            p.history_archived_seconds.unwrap_or_default(),
            p.replay_lag_bytes,
            p.replay_lag_seconds,
            p.total_seconds
        ),
        (false, false) => {}
    }
}
