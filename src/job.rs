//! A policy run as one job (`drctl backup --policy FILE`): the sources that are due, the RDS
//! snapshot, the state of WAL archiving, the cross-region copies, then retention, in that order.
//!
//! A source is *due* when its cron schedule has fired since its newest snapshot (or it has none):
//! the state lives in the repository, so a job can run as often as one likes (a CronJob every 15
//! minutes, the scheduler at each fire time), a run that was missed is made up by the next job
//! exactly once, and a source that failed stays due until it succeeds. `--source NAME` runs a
//! source whether due or not.
//!
//! One step failing does not stop the others (a failed dump must not keep the WAL from reaching
//! the DR region); the job reports every step and exits with the first failure's code.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aws::rds;
use crate::error;
use crate::ops::backup::{self, BackupOptions, BaseCacheOptions, LocalOptions, Source};
use crate::ops::policy_db;
use crate::ops::policy_repos::{self, location_of};
use crate::ops::{self, retention::ForgetOptions};
use crate::pg::Conn;
use crate::pg::archiver::ArchiverState;
use crate::policy::{self, BaseMode, Policy, SourceKind};
use crate::progress::NoProgress;
use crate::repo::retention::Rules;
use crate::repo::snapshot::{policy_source, policy_tags};
use crate::repo::{self, Repository, snapshot};
use crate::store;

/// The pseudo-source name of a `kind: rds` policy's RDS snapshot, for `--source`.
pub const RDS_SNAPSHOT: &str = "rds-snapshot";
/// How long a pack a prune marked unused stays before a later job's prune deletes it.
const PRUNE_GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// Objects a copy moves at once.
const COPY_JOBS: usize = 4;

/// What a job is asked to do beyond the policy.
#[derive(Debug, Clone, Default)]
pub struct JobOptions {
    /// Sources to run now whether due or not; when empty, every due source runs.
    pub sources: Vec<String>,
    /// S3 settings that are not in the policy (endpoint, path style, storage class…).
    pub s3: store::S3Options,
    /// How long to wait for a conflicting repository lock.
    pub lock_wait: std::time::Duration,
}

impl JobOptions {
    /// How the policy's repositories are reached.
    fn reach(&self) -> policy_repos::Reach {
        policy_repos::Reach { s3: self.s3.clone(), lock_wait: self.lock_wait }
    }
}

/// Everything a job did, step by step: printed with `--json`, turned into metrics, and read back
/// by the scheduler from its child processes (fields are only ever added).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobReport {
    /// The job's id, also the key of its record in the primary repository (`jobs/<id>`).
    #[serde(default)]
    pub id: String,
    pub policy: String,
    pub started: DateTime<Utc>,
    pub duration_seconds: f64,
    /// 0 when every step succeeded, else the documented exit code of the first that failed.
    pub exit_code: u8,
    pub sources: Vec<SourceReport>,
    pub rds: Option<RdsReport>,
    pub wal: Option<WalStatus>,
    pub copies: Vec<CopyStep>,
    pub retention: Vec<RetentionStep>,
    /// Why this report could not be stored as the job's record, when it could not.
    #[serde(default)]
    pub record_error: Option<StepError>,
}

/// A failed step: the error as the command line would print it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepError {
    pub message: String,
    pub hint: String,
    pub exit_code: u8,
}

impl StepError {
    fn of(err: &(dyn std::error::Error + 'static)) -> StepError {
        let (code, hint) = error::classify_cause(err);
        StepError { message: ops::with_causes(err), hint, exit_code: code as u8 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceReport {
    pub name: String,
    /// `base-backup`, `logical-dump` or `config-snapshot`.
    pub kind: String,
    pub schedule: String,
    /// Whether this job ran it, and why (or why not).
    pub ran: bool,
    pub reason: String,
    pub error: Option<StepError>,
    /// The snapshots it took (one per database for a logical dump).
    pub snapshots: Vec<SnapshotTaken>,
    /// Its newest snapshot after this job.
    pub newest: Option<DateTime<Utc>>,
    /// The longest its newest snapshot may get before a run is missing: the longest gap between
    /// two runs of its schedule.
    pub max_age_seconds: f64,
    pub next_run: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotTaken {
    pub id: String,
    pub short_id: String,
    pub time: DateTime<Utc>,
    /// What it holds: the database of a dump, the paths of a config snapshot, `PGDATA`.
    pub label: String,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub duration_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RdsReport {
    pub instance: String,
    pub region: String,
    pub dr_region: String,
    pub ran: bool,
    pub reason: String,
    pub error: Option<StepError>,
    pub snapshot: Option<rds::SnapshotCopy>,
    pub expired: Option<rds::Expired>,
    /// The newest snapshot drctl made of the instance, after this job.
    pub newest: Option<DateTime<Utc>>,
    /// When the source of the newest copy in the DR region was taken, after this job.
    pub newest_copy: Option<DateTime<Utc>>,
    pub max_age_seconds: f64,
}

/// The server's archiver as `pg_stat_archiver` sees it, for a policy whose WAL drctl archives.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WalStatus {
    pub error: Option<StepError>,
    #[serde(flatten)]
    pub archiver: ArchiverState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyStep {
    pub repository: String,
    pub error: Option<StepError>,
    pub snapshots_copied: usize,
    pub wal_copied: usize,
    pub objects_copied: usize,
    pub bytes_copied: u64,
    /// Snapshots of the primary the copy does not hold after this job.
    pub missing_snapshots: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetentionStep {
    pub repository: String,
    pub error: Option<StepError>,
    pub snapshots_removed: usize,
    pub snapshots_kept: usize,
    pub wal_removed: usize,
    /// Objects S3 Object Lock kept past their time; removed by a later job.
    pub retained_by_object_lock: usize,
    /// The snapshots removed, so reports can judge each removal against the policy later.
    #[serde(default)]
    pub removed: Vec<RemovedSnapshot>,
    /// Whether prune ran (after removals, or to finish an earlier prune's second phase).
    pub pruned: bool,
    pub packs_deleted: usize,
    pub bytes_deleted: u64,
    pub packs_marked: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemovedSnapshot {
    pub id: String,
    pub time: DateTime<Utc>,
    /// The source retention judged it in (docs/FORMAT.md §13a).
    pub group: String,
}

/// Runs `policy` once. Fails only when the job cannot start (an unknown `--source`); every later
/// failure is in the report.
pub fn run(policy: &Policy, options: &JobOptions) -> Result<JobReport, ops::Error> {
    let known = policy.sources.iter().map(|s| s.name.as_str()).chain(policy.rds.as_ref().map(|_| RDS_SNAPSHOT));
    let known: Vec<&str> = known.collect();
    if let Some(unknown) = options.sources.iter().find(|s| !known.contains(&s.as_str())) {
        return Err(ops::Error::Usage(format!(
            "policy {} has no source `{unknown}` (its sources: {})",
            policy.name,
            known.join(", ")
        )));
    }
    let clock = std::time::Instant::now();
    let mut report = JobReport::new(&policy.name, Utc::now());
    let password = policy_db::password(&policy.database);
    let conn = Conn {
        dsn: policy_db::connection_string(&policy.database.connection),
        password: password.as_ref().ok().cloned().flatten(),
    };
    let password = password.map_err(|e| StepError::of(&e));
    let primary = policy_repos::open(&policy.repositories.primary, &options.reach()).map_err(|e| StepError::of(&e));

    // Sources, in the order of the file.
    let existing = match &primary {
        Ok(repo) => repo.snapshots().map_err(|e| StepError::of(&e)),
        Err(e) => Err(e.clone()),
    };
    for source in &policy.sources {
        let newest = existing.as_ref().ok().and_then(|all| newest_of(all, &policy.name, source));
        let mut step = SourceReport {
            name: source.name.clone(),
            kind: source_kind(&source.what).into(),
            schedule: source.schedule.as_str().into(),
            ran: false,
            reason: String::new(),
            error: None,
            snapshots: Vec::new(),
            newest,
            max_age_seconds: source.schedule.longest_gap().num_seconds() as f64,
            next_run: source.schedule.next_after(Utc::now()),
        };
        let decision = match &existing {
            // Whether it is due cannot be known; trying says why it cannot run.
            Err(_) => Decision::Run("the repository could not be read".into()),
            Ok(_) => decide(&options.sources, &source.name, &source.schedule, newest, Utc::now()),
        };
        match decision {
            Decision::Skip(why) => step.reason = why,
            Decision::Run(why) => {
                step.ran = true;
                step.reason = why;
                let taken = match (&primary, &existing, &password) {
                    (Err(e), _, _) | (_, Err(e), _) => Err(e.clone()),
                    (_, _, Err(e)) if !matches!(source.what, SourceKind::ConfigSnapshot { .. }) => Err(e.clone()),
                    (Ok(repo), Ok(_), _) => {
                        run_source(repo, policy, source, &conn, &mut step.snapshots).map_err(|e| StepError::of(&e))
                    }
                };
                if let Err(e) = taken {
                    tracing::error!(policy = %policy.name, source = %source.name, "{}", e.message);
                    step.error = Some(e);
                }
                if step.error.is_none() && !step.snapshots.is_empty() {
                    // Every snapshot of the source was just taken: the oldest of them now counts.
                    step.newest = step.snapshots.iter().map(|t| t.time).min();
                }
            }
        }
        report.sources.push(step);
    }

    if let Some(config) = &policy.rds {
        report.rds = Some(run_rds(&policy.name, config, options));
    }
    if policy.archives_wal() {
        report.wal = Some(match &password {
            Ok(_) => archiver_status(&conn),
            Err(e) => WalStatus { error: Some(e.clone()), ..Default::default() },
        });
    }

    let rules = policy.retention.clone();
    match &primary {
        Ok(primary) => {
            for copy in &policy.repositories.copies {
                report.copies.push(copy_to(primary, copy, options));
            }
            report.retention.push(apply_retention(primary, &rules, &policy.name));
            for copy in &policy.repositories.copies {
                report.retention.push(match policy_repos::open_copy_of(primary, copy, &options.reach()) {
                    Ok(target) => apply_retention(&target, &rules, &policy.name),
                    Err(e) => failed_retention(location_of(copy), StepError::of(&e)),
                });
            }
        }
        Err(e) => {
            for copy in &policy.repositories.copies {
                report.copies.push(CopyStep { error: Some(e.clone()), ..CopyStep::new(location_of(copy)) });
            }
            report.retention.push(failed_retention(location_of(&policy.repositories.primary), e.clone()));
        }
    }

    report.duration_seconds = clock.elapsed().as_secs_f64();
    if let Ok(primary) = &primary {
        report.record_error = store_record(primary, &report).err().map(|e| StepError::of(&e));
    }
    report.exit_code = report.failures().first().map_or(0, |(_, e)| e.exit_code);
    Ok(report)
}

/// Stores the report as the job's record: the evidence schedule adherence and retention are
/// judged from in reports, after retention has removed the snapshots themselves.
fn store_record(repo: &Repository, report: &JobReport) -> Result<(), repo::Error> {
    let json = serde_json::to_vec(report).expect("job reports serialize");
    repo::evidence::put_record(repo, repo::evidence::Kind::Job, &report.id, &json)
}

enum Decision {
    Run(String),
    Skip(String),
}

/// Whether a source runs in this job, and why.
fn decide(
    forced: &[String],
    name: &str,
    schedule: &policy::Schedule,
    newest: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Decision {
    if !forced.is_empty() {
        return match forced.iter().any(|f| f == name) {
            true => Decision::Run("asked for with --source".into()),
            false => Decision::Skip("not asked for (--source names others)".into()),
        };
    }
    let fired = schedule.latest_at_or_before(now);
    match (newest, fired) {
        (None, _) => Decision::Run("due: no snapshot yet".into()),
        (Some(newest), Some(fired)) if newest < fired => {
            Decision::Run(format!("due: scheduled at {}, newest snapshot from {}", when(fired), when(newest)))
        }
        (Some(newest), _) => {
            Decision::Skip(format!("not due: newest snapshot from {} is after the last scheduled run", when(newest)))
        }
    }
}

/// A time as a job's report says it: to the second, in UTC.
fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The time of the newest snapshot the job took for `source` of `policy`.
/// For a logical dump, the oldest of its databases' newest dumps (none while one database has
/// none), so a database whose dump failed keeps the source due.
fn newest_of(all: &[(repo::Id, snapshot::Snapshot)], policy: &str, source: &policy::Source) -> Option<DateTime<Utc>> {
    let newest = |database: Option<&str>| {
        let name = database.map(|d| format!("{d}.dump"));
        all.iter()
            .filter(|(_, s)| policy_source(&s.tags) == Some((policy, source.name.as_str())))
            .filter(|(_, s)| name.is_none() || s.stdin_name == name)
            .map(|(_, s)| s.time)
            .max()
    };
    match &source.what {
        SourceKind::LogicalDump { databases } => {
            databases.iter().map(|d| newest(Some(d))).collect::<Option<Vec<_>>>()?.into_iter().min()
        }
        _ => newest(None),
    }
}

fn source_kind(what: &SourceKind) -> &'static str {
    match what {
        SourceKind::BaseBackup(_) => "base-backup",
        SourceKind::LogicalDump { .. } => "logical-dump",
        SourceKind::ConfigSnapshot { .. } => "config-snapshot",
    }
}

/// Takes the snapshots of one source, appending each to `taken` as it is saved.
fn run_source(
    repo: &Repository,
    policy: &Policy,
    source: &policy::Source,
    conn: &Conn,
    taken: &mut Vec<SnapshotTaken>,
) -> Result<(), ops::Error> {
    let tags = policy_tags(&policy.name, &source.name);
    // Only local mode reads delta bases, so only it keeps the packs it writes in the base cache.
    let local_mode = matches!(source.what, SourceKind::BaseBackup(BaseMode::Local { .. }));
    let base_cache = local_mode.then(BaseCacheOptions::default_location).flatten();
    let options = BackupOptions { tags, compression_level: None, base_cache };
    let take = |what: Source| backup::take(repo, &what, &options, &NoProgress);
    let mut record = |label: String, (id, snap): (repo::Id, snapshot::Snapshot)| {
        tracing::info!(policy = %policy.name, source = %source.name, snapshot = %id.short(), "{label} saved");
        taken.push(SnapshotTaken {
            id: id.to_hex(),
            short_id: id.short(),
            time: snap.time,
            label,
            logical_bytes: snap.summary.logical_bytes,
            stored_bytes: snap.summary.stored_bytes,
            duration_seconds: snap.summary.duration_seconds,
        });
    };
    match &source.what {
        SourceKind::BaseBackup(BaseMode::Stream) => {
            record("base backup".into(), take(Source::PgStream { conn: conn.clone() })?)
        }
        SourceKind::BaseBackup(BaseMode::Local { pgdata }) => {
            let local = LocalOptions { pgdata: pgdata.clone(), full: false };
            record(format!("base backup of {}", pgdata.display()), take(Source::PgLocal { conn: conn.clone(), local })?)
        }
        SourceKind::LogicalDump { databases } => {
            // One database failing does not keep the others from their dumps.
            let mut first_error = None;
            for database in databases {
                match take(Source::PgDump { conn: conn.clone(), database: database.clone() }) {
                    Ok(done) => record(format!("dump of {database}"), done),
                    Err(e) => {
                        tracing::error!(policy = %policy.name, database = %database, "dump failed: {e}");
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        SourceKind::ConfigSnapshot { paths } => {
            let label = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
            record(label, take(Source::Paths(paths.clone()))?)
        }
    }
    Ok(())
}

/// Brings `copy` up to date with `primary`: every snapshot and the WAL archive; an empty location
/// becomes a copy, opened by the key slot the policy names for it.
fn copy_to(primary: &Repository, copy: &policy::Repository, options: &JobOptions) -> CopyStep {
    let mut step = CopyStep::new(location_of(copy));
    let result = (|| -> Result<(), ops::Error> {
        let copy_options = ops::copy::Options { snapshots: None, wal: true, jobs: COPY_JOBS };
        let done = policy_repos::copy_to(primary, copy, &options.reach(), &copy_options)?;
        step.snapshots_copied = done.report.snapshots_copied;
        step.wal_copied = done.report.wal_copied;
        step.objects_copied = done.report.objects_copied;
        step.bytes_copied = done.report.bytes_copied;
        step.missing_snapshots = done.missing_snapshots;
        Ok(())
    })();
    if let Err(e) = result {
        let error = StepError::of(&e);
        tracing::error!(repository = %step.repository, "copy failed: {}", error.message);
        step.error = Some(error);
    }
    step
}

impl CopyStep {
    fn new(repository: String) -> CopyStep {
        CopyStep {
            repository,
            error: None,
            snapshots_copied: 0,
            wal_copied: 0,
            objects_copied: 0,
            bytes_copied: 0,
            missing_snapshots: 0,
        }
    }
}

/// forget with the policy's rules, then prune when forget freed something or an earlier prune
/// marked packs whose grace period may be over.
///
/// Only the policy's own snapshots are judged. The plan is made under a shared lock first, so
/// a job with nothing to remove (most of them) never holds the exclusive lock that would turn a
/// restore away.
fn apply_retention(repo: &Repository, rules: &Rules, policy: &str) -> RetentionStep {
    let mut step = RetentionStep::new(repo.store().location().to_string());
    let options =
        ForgetOptions { rules, policy: Some(policy), dry_run: false, prune: Some(PRUNE_GRACE), when_needed: true };
    match ops::retention::forget(repo, &options) {
        Ok(done) => {
            step.snapshots_kept = done.plan.snapshots.iter().filter(|j| j.verdict.keep).count();
            if let Some(applied) = done.applied {
                step.removed = done
                    .plan
                    .snapshots
                    .iter()
                    .filter(|j| !j.verdict.keep)
                    .filter(|j| {
                        let key = snapshot::key_of(j.verdict.id);
                        !applied.retained.iter().any(|r| r.starts_with(&key))
                    })
                    .map(|j| RemovedSnapshot { id: j.verdict.id.to_hex(), time: j.time, group: j.group.clone() })
                    .collect();
                step.snapshots_removed = applied.snapshots_removed;
                step.wal_removed = applied.wal_removed;
                step.retained_by_object_lock = applied.retained.len();
            }
            if let Some(pruned) = done.prune {
                step.pruned = true;
                step.packs_deleted = pruned.packs_deleted;
                step.bytes_deleted = pruned.bytes_deleted;
                step.packs_marked = pruned.packs_marked;
            }
        }
        Err(e) => {
            let error = StepError::of(&e);
            tracing::error!(repository = %step.repository, "retention failed: {}", error.message);
            step.error = Some(error);
        }
    }
    step
}

fn failed_retention(repository: String, error: StepError) -> RetentionStep {
    RetentionStep { error: Some(error), ..RetentionStep::new(repository) }
}

impl RetentionStep {
    fn new(repository: String) -> RetentionStep {
        RetentionStep {
            repository,
            error: None,
            snapshots_removed: 0,
            snapshots_kept: 0,
            wal_removed: 0,
            retained_by_object_lock: 0,
            removed: Vec::new(),
            pruned: false,
            packs_deleted: 0,
            bytes_deleted: 0,
            packs_marked: 0,
        }
    }
}

/// The RDS snapshot when due (`rds.snapshot_schedule`) with its copy in the DR region, then the
/// expiry of drctl's older snapshots in both regions.
fn run_rds(policy: &str, config: &policy::Rds, options: &JobOptions) -> RdsReport {
    let mut step = RdsReport {
        instance: config.instance.clone(),
        region: config.region.clone(),
        dr_region: config.dr_region.clone(),
        ran: false,
        reason: String::new(),
        error: None,
        snapshot: None,
        expired: None,
        newest: None,
        newest_copy: None,
        max_age_seconds: config.snapshot_schedule.longest_gap().num_seconds() as f64,
    };
    let result = (|| -> Result<(), rds::RdsError> {
        let client = rds::Rds::connect(&config.instance, &config.region, &config.dr_region)?;
        step.newest = client.newest_snapshot(policy)?;
        step.newest_copy = client.newest_copy(policy)?;
        // A snapshot whose copy failed leaves the DR region behind: due again until it has one.
        let complete = step.newest.min(step.newest_copy);
        match decide(&options.sources, RDS_SNAPSHOT, &config.snapshot_schedule, complete, Utc::now()) {
            Decision::Skip(why) => step.reason = why,
            Decision::Run(why) => {
                step.ran = true;
                step.reason = why;
                let copy = client.snapshot_and_copy(policy, Utc::now())?;
                step.newest = Some(copy.created);
                step.newest_copy = Some(copy.created);
                step.snapshot = Some(copy);
            }
        }
        step.expired = Some(client.expire(policy, config.snapshot_retention, Utc::now())?);
        Ok(())
    })();
    if let Err(e) = result {
        let error = StepError::of(&e);
        tracing::error!(instance = %config.instance, "RDS snapshot step failed: {}", error.message);
        step.error = Some(error);
    }
    step
}

/// The server's archiver, or why it could not be asked.
fn archiver_status(conn: &Conn) -> WalStatus {
    match crate::pg::archiver::state(conn) {
        Ok(archiver) => WalStatus { error: None, archiver },
        Err(e) => WalStatus { error: Some(StepError::of(&e)), ..Default::default() },
    }
}

impl JobReport {
    /// A report of no steps yet.
    pub fn new(policy: &str, started: DateTime<Utc>) -> JobReport {
        JobReport {
            id: repo::evidence::new_id(started),
            policy: policy.to_string(),
            started,
            duration_seconds: 0.0,
            exit_code: 0,
            sources: Vec::new(),
            rds: None,
            wal: None,
            copies: Vec::new(),
            retention: Vec::new(),
            record_error: None,
        }
    }

    /// Each failed step, named, with its error, in the order the job ran them.
    pub fn failures(&self) -> Vec<(String, &StepError)> {
        let mut failed = Vec::new();
        for s in &self.sources {
            failed.extend(s.error.as_ref().map(|e| (format!("source {}", s.name), e)));
        }
        if let Some(r) = &self.rds {
            failed.extend(r.error.as_ref().map(|e| (format!("RDS snapshot of {}", r.instance), e)));
        }
        if let Some(w) = &self.wal {
            failed.extend(w.error.as_ref().map(|e| ("WAL archiver status".to_string(), e)));
        }
        for c in &self.copies {
            failed.extend(c.error.as_ref().map(|e| (format!("copy to {}", c.repository), e)));
        }
        for r in &self.retention {
            failed.extend(r.error.as_ref().map(|e| (format!("retention in {}", r.repository), e)));
        }
        failed.extend(self.record_error.as_ref().map(|e| ("the job's record".to_string(), e)));
        failed
    }

    /// Whether every step succeeded.
    pub fn ok(&self) -> bool {
        self.exit_code == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_and_source_come_back_from_the_tags() {
        let t = policy_tags("api-db", "base");
        assert_eq!(policy_source(&t), Some(("api-db", "base")));
        assert_eq!(policy_source(&["policy=x".to_string()]), None);
        assert_eq!(policy_source(&["policyx=a".to_string(), "source=b".to_string()]), None);
    }

    #[test]
    fn a_source_is_due_once_its_schedule_fired_after_its_newest_snapshot() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let daily = policy::Schedule::parse("0 2 * * *").unwrap();
        let now = at("2026-11-20T14:00:00Z");
        let runs = |newest: Option<&str>| matches!(decide(&[], "b", &daily, newest.map(at), now), Decision::Run(_));
        assert!(runs(None));
        assert!(runs(Some("2026-11-20T01:59:00Z")));
        assert!(!runs(Some("2026-11-20T02:05:00Z")));
        let forced = vec!["b".to_string()];
        assert!(matches!(decide(&forced, "b", &daily, Some(now), now), Decision::Run(_)));
        assert!(matches!(decide(&forced, "a", &daily, None, now), Decision::Skip(_)));
    }
}
