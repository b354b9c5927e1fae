//! `drctl promote`: a streaming standby, or an RDS read replica, becomes the primary, behind
//! safety gates.

use clap::Args;

use super::{AccessArgs, GlobalArgs, parse_duration};
use crate::ops::policy_repos;
use crate::ops::promote::{self, Gate, Lag, PromoteOptions, Promotion, lag_bytes, lag_seconds, parse_lag};
use crate::ops::promote_rds::{self, RdsPromoteOptions, RdsPromotion};
use crate::pg::Conn;

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The repository the standby's cluster archives into (self-managed: its base backups and
    /// WAL are checked, and the new timeline's history file must reach it).
    #[arg(long, env = "DRCTL_REPO", value_name = "LOCATION")]
    pub repo: Option<String>,
    /// The cluster's policy, instead of --repo: its primary repository is checked and receives
    /// the new timeline's history file, which is then copied to every copy the policy names.
    #[arg(long, value_name = "FILE", conflicts_with = "rds_instance")]
    pub policy: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub access: AccessArgs,
    /// The standby to promote (a libpq connection string or URL; PG* variables apply).
    #[arg(long, value_name = "DSN", required_unless_present = "rds_instance", conflicts_with = "rds_instance")]
    pub pg: Option<String>,
    /// The RDS read replica to promote (its identifier), with --region.
    #[arg(long, value_name = "ID", requires = "region")]
    pub rds_instance: Option<String>,
    /// The read replica's region.
    #[arg(long, value_name = "REGION", requires = "rds_instance")]
    pub region: Option<String>,
    /// RDS: the promoted instance's connection string, checked to answer SQL and take writes.
    #[arg(long, value_name = "DSN", requires = "rds_instance")]
    pub verify_dsn: Option<String>,
    /// RDS: promote though CloudWatch has no current ReplicaLag (the source's region is down).
    #[arg(long, requires = "rds_instance")]
    pub accept_unknown_lag: bool,
    /// The old primary, checked to be unreachable, stopped or read-only (default: where the
    /// standby streams from, its primary_conninfo).
    #[arg(long, value_name = "DSN", conflicts_with_all = ["assume_fenced", "rds_instance"])]
    pub fence_primary: Option<String>,
    /// Take the old primary as fenced without checking (shut off by other means).
    #[arg(long)]
    pub assume_fenced: bool,
    /// The most replay lag accepted: a size ("16MiB", "512kB", bytes without a unit) and/or a
    /// time ("30s"); repeat to give both. Default: 16MiB; for RDS (which reports seconds only)
    /// 30s.
    #[arg(long, value_name = "SIZE|DURATION", value_parser = parse_lag)]
    pub max_lag: Vec<Lag>,
    /// A planned move: the primary was shut down cleanly; wait for the standby to replay all it
    /// received and accept no lag at all.
    #[arg(long, conflicts_with = "rds_instance")]
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
    let wait = args.wait.to_std().unwrap_or_default();
    if let (Some(instance), Some(region)) = (&args.rds_instance, &args.region) {
        let options = RdsPromoteOptions {
            instance: instance.clone(),
            region: region.clone(),
            assume_fenced: args.assume_fenced,
            max_lag_seconds: promote_rds::max_lag_seconds(&args.max_lag)
                .map_err(|e| crate::ops::Error::Usage(format!("--max-lag: {e}")))?,
            accept_unknown_lag: args.accept_unknown_lag,
            verify: args.verify_dsn.clone().map(Conn::new),
            dry_run: args.dry_run,
            wait,
        };
        promote_rds::promote(&options, &mut |p| print_rds(p, args.json, global.quiet))?;
        return Ok(());
    }
    let reach = args.access.reach();
    let (repo, copies) = match (&args.policy, &args.repo) {
        (Some(path), _) => {
            let policy = crate::policy::load(path).map_err(|invalid| crate::ops::Error::Usage(invalid.to_string()))?;
            (policy_repos::open(&policy.repositories.primary, &reach)?, policy.repositories.copies)
        }
        (None, Some(location)) => (args.access.open(location)?, Vec::new()),
        (None, None) => {
            return Err(crate::ops::Error::Usage(
                "promoting a standby needs --repo (or DRCTL_REPO) or --policy: the repository its cluster archives \
                 into"
                    .into(),
            )
            .into());
        }
    };
    let options = PromoteOptions {
        standby: Conn::new(args.pg.clone().expect("clap requires --pg without --rds-instance")),
        fence_primary: args.fence_primary.clone().map(Conn::new),
        assume_fenced: args.assume_fenced,
        max_lag_bytes: lag_bytes(&args.max_lag),
        max_lag_seconds: lag_seconds(&args.max_lag),
        switchover: args.switchover,
        dry_run: args.dry_run,
        wait,
        copies,
        reach,
    };
    promote::promote(&repo, &options, &mut |p| print(p, args.json, global.quiet))?;
    Ok(())
}

fn print(p: &Promotion, json: bool, quiet: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(p).expect("a promotion serializes"));
        return;
    }
    print_gates(&p.gates);
    if quiet {
        return;
    }
    match (p.dry_run, p.promoted) {
        (true, _) => print_dry_run(p.refusals().len()),
        (false, true) => {
            for copy in &p.history_copies {
                println!(
                    "history file copied to {} ({} WAL object(s) in {:.1} s)",
                    copy.repository, copy.wal_copied, copy.seconds
                );
            }
            println!(
                "promoted: timeline {} -> {}, writable after {:.1} s, history archived after {:.1} s; replay was {} \
                 bytes and {:.1} s behind ({:.1} s in all)",
                p.timeline_before,
                p.timeline_after.unwrap_or_default(),
                p.promote_seconds.unwrap_or_default(),
                p.history_archived_seconds.unwrap_or_default(),
                p.replay_lag_bytes,
                p.replay_lag_seconds,
                p.total_seconds
            )
        }
        (false, false) => {}
    }
}

fn print_dry_run(refusals: usize) {
    match refusals {
        0 => println!("dry run: every gate passes; nothing was changed"),
        n => println!("dry run: {n} gate(s) would refuse; nothing was changed"),
    }
}

fn print_gates(gates: &[Gate]) {
    for g in gates {
        println!("{} {}: {}", if g.passed { "ok    " } else { "REFUSE" }, g.name, g.measured);
        if let Some(fix) = &g.fix {
            println!("       fix: {fix}");
        }
    }
}

fn print_rds(p: &RdsPromotion, json: bool, quiet: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(p).expect("a promotion serializes"));
        return;
    }
    print_gates(&p.gates);
    if quiet {
        return;
    }
    match (p.dry_run, p.promoted) {
        (true, _) => print_dry_run(p.refusals().len()),
        (false, true) => println!(
            "promoted: {} in {} is a standalone instance after {:.1} s{}{} ({:.1} s in all)",
            p.instance,
            p.region,
            p.promote_seconds.unwrap_or_default(),
            p.endpoint.as_deref().map(|e| format!(" at {e}")).unwrap_or_default(),
            p.verified.as_deref().map(|v| format!("; it {v}")).unwrap_or_default(),
            p.total_seconds
        ),
        (false, false) => {}
    }
}
