//! `drctl promote`: a streaming standby becomes the primary, behind safety gates.

use clap::Args;

use super::{GlobalArgs, RepoArgs, parse_duration};
use crate::ops::promote::{self, PromoteOptions, Promotion};
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

/// One bound on replay lag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lag {
    Bytes(u64),
    Seconds(f64),
}

pub fn run(args: PromoteArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let repo = args.repo.open()?;
    let options = PromoteOptions {
        standby: Conn::new(args.pg.clone()),
        fence_primary: args.fence_primary.clone().map(Conn::new),
        assume_fenced: args.assume_fenced,
        max_lag_bytes: args
            .max_lag
            .iter()
            .find_map(|l| if let Lag::Bytes(b) = l { Some(*b) } else { None })
            .unwrap_or(16 << 20),
        max_lag_seconds: args.max_lag.iter().find_map(|l| if let Lag::Seconds(s) = l { Some(*s) } else { None }),
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

/// A lag bound: a duration ("30s", "2m") or a size ("16MiB", "512kB", "1048576").
fn parse_lag(text: &str) -> Result<Lag, String> {
    let text = text.trim();
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(Lag::Seconds(d.as_secs_f64()));
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is neither a size (16MiB) nor a duration (30s)"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1000 * 1000,
        "MiB" => 1 << 20,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}: use B, kB, KiB, MB, MiB, GB or GiB")),
    };
    number.checked_mul(scale).map(Lag::Bytes).ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_bounds_are_sizes_or_durations() {
        assert_eq!(parse_lag("16MiB"), Ok(Lag::Bytes(16 << 20)));
        assert_eq!(parse_lag("512kB"), Ok(Lag::Bytes(512_000)));
        assert_eq!(parse_lag("4096"), Ok(Lag::Bytes(4096)));
        assert_eq!(parse_lag("30s"), Ok(Lag::Seconds(30.0)));
        assert!(parse_lag("16 parsecs").is_err());
        assert!(parse_lag("lots").is_err());
    }
}
