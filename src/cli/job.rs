//! `backup --policy FILE`: one job of the policy, its report (as people read it, or --json) and
//! its metrics.

use clap::Args;
use std::path::PathBuf;

use super::backup::BackupArgs;
use super::{GlobalArgs, human_bytes};
use crate::error::ExitCode;
use crate::job::{self, JobOptions, JobReport};

/// `backup --policy FILE`: one job of the policy, its report, and its metrics.
pub fn run(path: &std::path::Path, args: &BackupArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    let Some(policy) = super::policy::load_or_explain(path) else { return Ok(ExitCode::Usage as u8) };
    let options = JobOptions {
        sources: args.sources.clone(),
        s3: args.access.s3_options(),
        lock_wait: args.access.lock_wait.to_std().unwrap_or_default(),
    };
    let report = job::run(&policy, &options)?;
    args.metrics.publish(&report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !global.quiet {
        print(&report);
    }
    for (step, error) in report.failures() {
        eprintln!("error: {step}: {}\nhint: {}", error.message, error.hint);
    }
    Ok(report.exit_code)
}

/// Where a policy job's metrics go (both, either or neither).
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Write the job's metrics to this file (Prometheus text format, for node_exporter's textfile
    /// collector), replaced whole by each job.
    #[arg(long, env = "DRCTL_METRICS_FILE", value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Push the job's metrics to this Prometheus Pushgateway (e.g. http://pushgateway:9091),
    /// replacing the policy's group.
    #[arg(long, env = "DRCTL_PUSHGATEWAY", value_name = "URL")]
    pub pushgateway: Option<String>,
}

impl MetricsArgs {
    /// Publishes `report` where asked. A failure is logged, not fatal: the job's own result
    /// stands, and the alert on a stale success timestamp still fires.
    pub fn publish(&self, report: &crate::job::JobReport) {
        if self.metrics_file.is_none() && self.pushgateway.is_none() {
            return;
        }
        self.write(&crate::metrics::of_report(report), "drctl", &report.policy);
    }

    fn write(&self, text: &str, job: &str, policy: &str) {
        if let Some(path) = &self.metrics_file
            && let Err(e) = crate::metrics::write_textfile(path, text)
        {
            tracing::error!("cannot write the metrics file {}: {e}", path.display());
        }
        if let Some(gateway) = &self.pushgateway
            && let Err(e) = crate::metrics::push(gateway, job, policy, text)
        {
            tracing::error!("{e}");
        }
    }
}

impl MetricsArgs {
    /// Publishes a drill's metrics where asked (the Pushgateway group `drctl-drill`, apart from
    /// the jobs'); a failure is logged, as for jobs.
    pub fn publish_drill(&self, drilled: &crate::drill::Drilled) {
        if self.metrics_file.is_none() && self.pushgateway.is_none() {
            return;
        }
        let metrics = crate::metrics::Metrics::new();
        metrics.record_drill(&drilled.record, drilled.last_success);
        self.write(&metrics.encode(), "drctl-drill", &drilled.record.policy);
    }
}

fn print(report: &JobReport) {
    let failed = report.failures().len();
    let verdict = match failed {
        0 => "every step succeeded".to_string(),
        n => format!("{n} step(s) failed, exit {}", report.exit_code),
    };
    println!("policy {}: job took {:.1} s, {verdict}", report.policy, report.duration_seconds);
    for s in &report.sources {
        let what = match (&s.error, s.ran) {
            (Some(_), _) => "FAILED (below)".to_string(),
            (None, true) => s
                .snapshots
                .iter()
                .map(|t| {
                    format!(
                        "snapshot {} ({}: {}, {} new, {:.1} s)",
                        t.short_id,
                        t.label,
                        human_bytes(t.logical_bytes),
                        human_bytes(t.stored_bytes),
                        t.duration_seconds
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            (None, false) => match s.next_run {
                Some(next) => format!("next run {}", next.format("%Y-%m-%d %H:%M UTC")),
                None => String::new(),
            },
        };
        println!("  source {:<16} {}: {what}", s.name, s.reason);
    }
    if let Some(r) = &report.rds {
        let done = match (&r.error, &r.snapshot) {
            (Some(_), _) => "FAILED (below)".to_string(),
            (None, Some(copy)) => format!("snapshot {} copied to {}", copy.snapshot_id, copy.dr_region),
            (None, None) => r.reason.clone(),
        };
        let expired = r.expired.as_ref().map_or(0, |e| e.deleted.len());
        println!("  RDS {}: {done}; {expired} expired snapshot(s) deleted", r.instance);
    }
    if let Some(w) = &report.wal {
        match (&w.error, &w.archiver.last_archived_wal) {
            (Some(_), _) => println!("  WAL archiver: FAILED (below)"),
            (None, Some(name)) => println!(
                "  WAL archiver: last archived {name}, {} complete segment(s) waiting, {} failure(s) since reset",
                w.archiver.segments_behind.map_or("?".to_string(), |n| n.to_string()),
                w.archiver.failed_count
            ),
            (None, None) => println!("  WAL archiver: nothing archived yet, {} failure(s)", w.archiver.failed_count),
        }
    }
    for c in &report.copies {
        match &c.error {
            Some(_) => println!("  copy to {}: FAILED (below)", c.repository),
            None => println!(
                "  copy to {}: {} snapshot(s), {} WAL file(s), {} sent; {} snapshot(s) missing",
                c.repository,
                c.snapshots_copied,
                c.wal_copied,
                human_bytes(c.bytes_copied),
                c.missing_snapshots
            ),
        }
    }
    for r in &report.retention {
        match &r.error {
            Some(_) => println!("  retention in {}: FAILED (below)", r.repository),
            None => println!(
                "  retention in {}: {} snapshot(s) kept, {} removed, {} WAL file(s) removed{}",
                r.repository,
                r.snapshots_kept,
                r.snapshots_removed,
                r.wal_removed,
                if r.pruned {
                    format!(
                        "; prune deleted {} pack(s) ({}), marked {}",
                        r.packs_deleted,
                        human_bytes(r.bytes_deleted),
                        r.packs_marked
                    )
                } else {
                    String::new()
                }
            ),
        }
    }
}
