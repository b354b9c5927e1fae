//! Prometheus metrics of policy jobs: written as a node_exporter textfile, pushed to a
//! Pushgateway, or served by `drctl schedule` on `/metrics`.
//!
//! Every job reports the whole state of its policy (the newest snapshot of every source, read from
//! the repository), not only what it ran, so a textfile rewritten or a Pushgateway group replaced
//! by each job never loses a source's series. Ages are exported beside the timestamps for
//! dashboards; alerts should use `time() - drctl_backup_last_success_timestamp_seconds`, which
//! stays right when a textfile goes stale.

use chrono::{DateTime, Utc};
use prometheus::{CounterVec, Encoder, GaugeVec, Opts, Registry, TextEncoder};
use std::path::Path;

use crate::job::JobReport;

/// Every metric drctl exports (the alert rules and dashboard in monitoring/ use only these).
pub const METRIC_NAMES: &[&str] = &[
    "drctl_job_last_run_timestamp_seconds",
    "drctl_job_last_status",
    "drctl_job_duration_seconds",
    "drctl_backup_last_success_timestamp_seconds",
    "drctl_backup_age_seconds",
    "drctl_backup_max_age_seconds",
    "drctl_backup_last_status",
    "drctl_backup_duration_seconds",
    "drctl_backup_logical_bytes",
    "drctl_backup_stored_bytes",
    "drctl_wal_last_archived_timestamp_seconds",
    "drctl_wal_archive_lag_seconds",
    "drctl_wal_archive_failures_total",
    "drctl_copy_last_status",
    "drctl_copy_last_success_timestamp_seconds",
    "drctl_copy_missing_snapshots",
    "drctl_copy_bytes",
    "drctl_retention_last_status",
    "drctl_retention_snapshots_removed",
    "drctl_rds_snapshot_last_success_timestamp_seconds",
    "drctl_drill_last_run_timestamp_seconds",
    "drctl_drill_last_success_timestamp_seconds",
    "drctl_drill_last_status",
    "drctl_drill_rto_seconds",
    "drctl_drill_rpo_seconds",
    "drctl_drill_phase_seconds",
    "drctl_schedule_up",
    "drctl_schedule_runs_total",
    "drctl_schedule_skipped_runs_total",
];

/// One registry's worth of drctl metrics; build one per exposition.
pub struct Metrics {
    registry: Registry,
    gauges: std::collections::HashMap<&'static str, GaugeVec>,
    counters: std::collections::HashMap<&'static str, CounterVec>,
}

/// Counters (cumulative values that drctl reads elsewhere and exports as they are).
const COUNTERS: &[(&str, &str, &[&str])] = &[
    (
        "drctl_wal_archive_failures_total",
        "WAL files the server failed to archive since its statistics were reset (pg_stat_archiver).",
        &["policy"],
    ),
    ("drctl_schedule_runs_total", "Jobs the scheduler ran, by result.", &["policy", "result"]),
    (
        "drctl_schedule_skipped_runs_total",
        "Scheduled runs skipped because the policy's previous job was still running.",
        &["policy"],
    ),
];

/// Name, help and labels of each family.
const FAMILIES: &[(&str, &str, &[&str])] = &[
    ("drctl_job_last_run_timestamp_seconds", "When the policy's last job started (Unix time).", &["policy"]),
    ("drctl_job_last_status", "1 if every step of the policy's last job succeeded, else 0.", &["policy"]),
    ("drctl_job_duration_seconds", "How long the policy's last job took.", &["policy"]),
    (
        "drctl_backup_last_success_timestamp_seconds",
        "When the source's newest snapshot was taken (Unix time).",
        &["policy", "source"],
    ),
    (
        "drctl_backup_age_seconds",
        "Age of the source's newest snapshot when these metrics were made.",
        &["policy", "source"],
    ),
    (
        "drctl_backup_max_age_seconds",
        "The longest gap between two runs of the source's schedule: how old its newest snapshot may get.",
        &["policy", "source"],
    ),
    (
        "drctl_backup_last_status",
        "1 if the source's run in the last job succeeded, 0 if it failed (sources that ran only).",
        &["policy", "source"],
    ),
    ("drctl_backup_duration_seconds", "How long the source's last run took.", &["policy", "source"]),
    ("drctl_backup_logical_bytes", "Bytes read by the source's last run.", &["policy", "source"]),
    ("drctl_backup_stored_bytes", "Bytes the source's last run added to the repository.", &["policy", "source"]),
    (
        "drctl_wal_last_archived_timestamp_seconds",
        "When the server last archived a WAL file (pg_stat_archiver).",
        &["policy"],
    ),
    (
        "drctl_wal_archive_lag_seconds",
        "0 when every complete WAL segment is archived, else the time since the last one was.",
        &["policy"],
    ),
    ("drctl_copy_last_status", "1 if the last copy to the repository succeeded, else 0.", &["policy", "repository"]),
    (
        "drctl_copy_last_success_timestamp_seconds",
        "When the last successful copy to the repository ended.",
        &["policy", "repository"],
    ),
    (
        "drctl_copy_missing_snapshots",
        "Snapshots of the primary repository the copy lacks after the last job.",
        &["policy", "repository"],
    ),
    ("drctl_copy_bytes", "Bytes the last copy sent.", &["policy", "repository"]),
    (
        "drctl_retention_last_status",
        "1 if the last retention run (forget, prune) succeeded, else 0.",
        &["policy", "repository"],
    ),
    ("drctl_retention_snapshots_removed", "Snapshots the last retention run removed.", &["policy", "repository"]),
    (
        "drctl_rds_snapshot_last_success_timestamp_seconds",
        "When drctl's newest RDS snapshot of the instance was taken: in its region, and of the newest copy in the DR region.",
        &["policy", "region"],
    ),
    ("drctl_drill_last_run_timestamp_seconds", "When the policy's last drill started (Unix time).", &["policy"]),
    (
        "drctl_drill_last_success_timestamp_seconds",
        "When the policy's newest passing drill started (Unix time), from the drill records.",
        &["policy"],
    ),
    ("drctl_drill_last_status", "1 if the policy's last drill passed every check and target, else 0.", &["policy"]),
    (
        "drctl_drill_rto_seconds",
        "RTO the last drill measured: its start to the restored database passing its checks (phase=\"total\"), and the time to the end of each phase.",
        &["policy", "phase"],
    ),
    (
        "drctl_drill_rpo_seconds",
        "RPO the last drill measured: the simulated failure to the newest heartbeat recovered.",
        &["policy"],
    ),
    ("drctl_drill_phase_seconds", "How long each phase of the last drill took.", &["policy", "phase"]),
    ("drctl_schedule_up", "1 while drctl schedule runs.", &[]),
];

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let mut gauges = std::collections::HashMap::new();
        for (name, help, labels) in FAMILIES {
            let gauge = GaugeVec::new(Opts::new(*name, *help), labels).expect("valid metric definitions");
            registry.register(Box::new(gauge.clone())).expect("each metric registered once");
            gauges.insert(*name, gauge);
        }
        let mut counters = std::collections::HashMap::new();
        for (name, help, labels) in COUNTERS {
            let counter = CounterVec::new(Opts::new(*name, *help), labels).expect("valid metric definitions");
            registry.register(Box::new(counter.clone())).expect("each metric registered once");
            counters.insert(*name, counter);
        }
        Metrics { registry, gauges, counters }
    }

    fn set(&self, name: &str, labels: &[&str], value: f64) {
        self.gauges[name].with_label_values(labels).set(value);
    }

    fn count(&self, name: &str, labels: &[&str], value: f64) {
        self.counters[name].with_label_values(labels).inc_by(value);
    }

    /// The state of one policy after `report`'s job, with ages as of `now`.
    pub fn record(&self, report: &JobReport, now: DateTime<Utc>) {
        let policy = report.policy.as_str();
        let seconds = |t: DateTime<Utc>| t.timestamp_millis() as f64 / 1000.0;
        let age = |t: DateTime<Utc>| (now - t).num_milliseconds().max(0) as f64 / 1000.0;
        let ok = |failed: bool| if failed { 0.0 } else { 1.0 };
        self.set("drctl_job_last_run_timestamp_seconds", &[policy], seconds(report.started));
        self.set("drctl_job_last_status", &[policy], ok(!report.ok()));
        self.set("drctl_job_duration_seconds", &[policy], report.duration_seconds);
        for source in &report.sources {
            let labels = [policy, source.name.as_str()];
            self.set("drctl_backup_max_age_seconds", &labels, source.max_age_seconds);
            if let Some(newest) = source.newest {
                self.set("drctl_backup_last_success_timestamp_seconds", &labels, seconds(newest));
                self.set("drctl_backup_age_seconds", &labels, age(newest));
            }
            if source.ran {
                self.set("drctl_backup_last_status", &labels, ok(source.error.is_some()));
                let sum = |f: fn(&crate::job::SnapshotTaken) -> f64| source.snapshots.iter().map(f).sum::<f64>();
                self.set("drctl_backup_duration_seconds", &labels, sum(|s| s.duration_seconds));
                self.set("drctl_backup_logical_bytes", &labels, sum(|s| s.logical_bytes as f64));
                self.set("drctl_backup_stored_bytes", &labels, sum(|s| s.stored_bytes as f64));
            }
        }
        if let Some(wal) = &report.wal {
            if let Some(at) = wal.archiver.last_archived_time {
                self.set("drctl_wal_last_archived_timestamp_seconds", &[policy], seconds(at));
            }
            if let Some(lag) = wal.archiver.lag_seconds {
                self.set("drctl_wal_archive_lag_seconds", &[policy], lag);
            }
            if wal.error.is_none() {
                self.count("drctl_wal_archive_failures_total", &[policy], wal.archiver.failed_count as f64);
            }
        }
        for copy in &report.copies {
            let labels = [policy, copy.repository.as_str()];
            self.set("drctl_copy_last_status", &labels, ok(copy.error.is_some()));
            if copy.error.is_none() {
                let ended = report.started + chrono::Duration::milliseconds((report.duration_seconds * 1000.0) as i64);
                self.set("drctl_copy_last_success_timestamp_seconds", &labels, seconds(ended));
                self.set("drctl_copy_missing_snapshots", &labels, copy.missing_snapshots as f64);
            }
            self.set("drctl_copy_bytes", &labels, copy.bytes_copied as f64);
        }
        for retention in &report.retention {
            let labels = [policy, retention.repository.as_str()];
            self.set("drctl_retention_last_status", &labels, ok(retention.error.is_some()));
            self.set("drctl_retention_snapshots_removed", &labels, retention.snapshots_removed as f64);
        }
        if let Some(rds) = &report.rds {
            for (region, newest) in [(&rds.region, rds.newest), (&rds.dr_region, rds.newest_copy)] {
                if let Some(newest) = newest {
                    self.set("drctl_rds_snapshot_last_success_timestamp_seconds", &[policy, region], seconds(newest));
                }
            }
        }
    }

    /// The state of one policy's drills after `record`'s drill; `last_success` is when the newest
    /// passing one (of all recorded) started.
    pub fn record_drill(&self, record: &crate::drill::record::Record, last_success: Option<DateTime<Utc>>) {
        let policy = record.policy.as_str();
        let seconds = |t: DateTime<Utc>| t.timestamp_millis() as f64 / 1000.0;
        self.set("drctl_drill_last_run_timestamp_seconds", &[policy], seconds(record.started));
        self.set("drctl_drill_last_status", &[policy], if record.passed { 1.0 } else { 0.0 });
        if let Some(at) = last_success {
            self.set("drctl_drill_last_success_timestamp_seconds", &[policy], seconds(at));
        }
        let mut elapsed = 0.0;
        for phase in &record.phases {
            elapsed += phase.seconds;
            self.set("drctl_drill_phase_seconds", &[policy, &phase.name], phase.seconds);
            self.set("drctl_drill_rto_seconds", &[policy, &phase.name], elapsed);
        }
        if let Some(rto) = record.rto_seconds {
            self.set("drctl_drill_rto_seconds", &[policy, "total"], rto);
        }
        if let Some(rpo) = record.rpo_seconds {
            self.set("drctl_drill_rpo_seconds", &[policy], rpo);
        }
    }

    /// The scheduler's own state: up, and its run and skip counts per policy.
    pub fn record_schedule(&self, runs: &[(String, &'static str, u64)], skipped: &[(String, u64)]) {
        self.set("drctl_schedule_up", &[], 1.0);
        for (policy, result, n) in runs {
            self.count("drctl_schedule_runs_total", &[policy, result], *n as f64);
        }
        for (policy, n) in skipped {
            self.count("drctl_schedule_skipped_runs_total", &[policy], *n as f64);
        }
    }

    /// The Prometheus text exposition format (0.0.4).
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// The exposition of one job's report.
pub fn of_report(report: &JobReport) -> String {
    let metrics = Metrics::new();
    metrics.record(report, Utc::now());
    metrics.encode()
}

/// Writes `text` for node_exporter's textfile collector: to a temporary file beside `path`, then
/// renamed over it, so the collector never reads half a file.
pub fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| std::io::Error::other("the metrics file needs a file name"))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Replaces the policy's group of `job` on a Pushgateway (`PUT /metrics/job/JOB/policy/NAME`;
/// `drctl` for jobs, `drctl-drill` for drills): the group holds exactly the latest state.
pub fn push(gateway: &str, job: &str, policy: &str, text: &str) -> Result<(), String> {
    let url = format!("{}/metrics/job/{job}/policy/{policy}", gateway.trim_end_matches('/'));
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(std::time::Duration::from_secs(30))).build().into();
    agent
        .put(&url)
        .header("Content-Type", "text/plain; version=0.0.4")
        .send(text)
        .map(|_| ())
        .map_err(|e| crate::redact::credentials(&format!("cannot push metrics to {url}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_listed_and_every_listed_name_is_made() {
        let mut made: Vec<&str> = FAMILIES.iter().chain(COUNTERS).map(|(name, _, _)| *name).collect();
        made.sort();
        let mut listed = METRIC_NAMES.to_vec();
        listed.sort();
        assert_eq!(made, listed);
    }

    #[test]
    fn the_schedule_families_encode() {
        let metrics = Metrics::new();
        metrics.record_schedule(&[("api-db".into(), "ok", 3)], &[("api-db".into(), 1)]);
        let text = metrics.encode();
        assert!(text.contains("drctl_schedule_up 1\n"), "{text}");
        assert!(text.contains("drctl_schedule_runs_total{policy=\"api-db\",result=\"ok\"} 3\n"), "{text}");
        assert!(text.contains("# TYPE drctl_schedule_skipped_runs_total counter\n"), "{text}");
    }
}
