//! DR drills: a policy's newest backup (or the one a simulated failure calls for) restored into a
//! scratch cluster that never touches production, verified, and measured. RTO is the drill's
//! start → the restored database passing its checks; RPO is the simulated failure → the newest
//! heartbeat row the restore recovered. Nothing is assumed from configuration: a drill without
//! a heartbeat in the restored data cannot show its RPO and fails.
//!
//! The drill measures the archive as it is: it forces no WAL switch and no backup. For `latest`
//! recovery is given only the WAL files archived when the drill started (the simulated failure),
//! so WAL that arrives while it runs cannot improve the RPO it reports.

mod dump;
mod rds;
pub mod record;

use chrono::{DateTime, Utc};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::ops::restore::{self, Destination, Event, RestoreOptions, TargetRequest, select};
use crate::ops::{self, policy_db, policy_repos};
use crate::pg::server::Private;
use crate::pg::sql::Session;
use crate::pg::{heartbeat, verify};
use crate::policy::{DrillCheck, KeySlot, Policy};
use crate::progress::NoProgress;
use crate::repo::snapshot::SnapshotKind;
use crate::repo::{self, Repository};
use record::{Check, Phase, Record, SnapshotUsed, Status, Targets, WalUsed};

/// When the simulated failure happens.
#[derive(Debug, Clone)]
pub enum Point {
    /// Now: recover everything the archive held when the drill started.
    Latest,
    /// At this moment: recover every transaction committed by then.
    At(DateTime<Utc>),
    /// At a random moment within this long before now (and after the oldest restorable backup).
    RandomWithin(chrono::Duration),
    /// Restore this snapshot to its end; the failure is the moment it ended.
    Snapshot(String),
}

/// The simulated failure a [`Point`] names.
enum Failure<'a> {
    /// At this moment; the mode says how it was chosen (`latest`, `at`, `random-within`).
    At(&'static str, DateTime<Utc>),
    /// At the end of this snapshot.
    EndOf(&'a str),
}

impl Point {
    /// The failure this point names, `now` being the drill's start. `oldest` is the earliest
    /// moment a backup (`what`) can be restored to, asked for `RandomWithin` only.
    fn failure(
        &self,
        now: DateTime<Utc>,
        oldest: impl FnOnce() -> Option<DateTime<Utc>>,
        what: &str,
    ) -> Result<Failure<'_>, ops::Error> {
        Ok(match self {
            Point::Latest => Failure::At("latest", now),
            Point::At(t) => Failure::At("at", *t),
            Point::RandomWithin(window) => Failure::At("random-within", random_moment(now, *window, oldest(), what)?),
            Point::Snapshot(query) => Failure::EndOf(query),
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    pub point: Option<Point>,
    /// Where the scratch cluster goes (a new directory); default: one in the temporary folder.
    pub scratch: Option<PathBuf>,
    /// Leave the scratch cluster (stopped) for inspection, and the scratch RDS instance running.
    pub keep: bool,
    /// Also restore the RDS instance to the failure into a scratch instance (`kind: rds`).
    pub rds: bool,
    pub reach: policy_repos::Reach,
}

/// A drill that ran: its record, where the record was stored (or why it could not be), and the
/// error that ended it early, if one did (the record says so too).
pub struct Drilled {
    pub record: Record,
    /// When the newest passing drill of the policy (this one included) started.
    pub last_success: Option<DateTime<Utc>>,
    pub stored: Result<String, String>,
    pub error: Option<ops::Error>,
}

/// How long the restored server may take to accept connections after recovery.
const OPEN_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs a drill of `policy`. `say` hears each phase as it ends. Fails only when no drill could be
/// started (the repository cannot be opened, the request does not fit the policy); everything
/// after that ends in a stored record.
pub fn run(policy: &Policy, options: &DrillOptions, say: &mut dyn FnMut(&str)) -> Result<Drilled, ops::Error> {
    if !policy.archives_wal() && dump::databases(policy).is_empty() {
        return Err(ops::Error::Usage(format!(
            "policy {} takes neither base backups nor logical dumps: a drill has nothing to restore",
            policy.name
        )));
    }
    let clock = Instant::now();
    let started = Utc::now();
    let point = options.point.clone().unwrap_or(Point::Latest);
    let mut drill = Drill::new(policy, started, clock, options)?;
    if options.rds {
        drill.rds = Some(rds::Scratch::prepare(policy, &drill.record.id, &point)?);
    }
    let primary = &policy.repositories.primary;
    let repo = policy_repos::open(primary, &options.reach)?;
    let scratch = Scratch::create(options.scratch.clone(), &drill.record.id, options.keep)?;

    let result = match policy.archives_wal() {
        true => drill.run_base_backup(&repo, &point, &scratch, clock, say),
        false => drill.run_dumps(&repo, &point, &scratch, clock, say),
    };
    let result = drill.rds_finish(result, options.keep, clock, say);
    if options.keep {
        drill.record.kept = Some(scratch.root.display().to_string());
    }
    drop(scratch);
    let error = match result {
        Ok(()) => None,
        Err(e) => {
            drill.record.failures.push(format!("the drill stopped: {}", ops::with_causes(&e)));
            Some(e)
        }
    };
    drill.finish();
    let stored = drill.record.store(&repo).map_err(|e| ops::with_causes(&e));
    let earlier = record::list(&repo).unwrap_or_default();
    let passed = earlier.iter().chain([&drill.record]).filter(|r| r.passed && r.policy == policy.name);
    let last_success = passed.map(|r| r.started).max();
    Ok(Drilled { record: drill.record, last_success, stored, error })
}

/// A drill in progress.
struct Drill<'a> {
    policy: &'a Policy,
    record: Record,
    phase_started: Instant,
    /// The server's environment for restore_command (a passphrase the policy names).
    repo_env: Vec<(String, String)>,
    repo_args: Vec<String>,
    /// The scratch RDS instance, with `--rds`.
    rds: Option<rds::Scratch>,
}

impl<'a> Drill<'a> {
    fn new(
        policy: &'a Policy,
        started: DateTime<Utc>,
        clock: Instant,
        options: &DrillOptions,
    ) -> Result<Drill<'a>, ops::Error> {
        let id = crate::repo::evidence::new_id(started);
        let secs = |d: chrono::Duration| d.num_milliseconds() as f64 / 1000.0;
        let record = Record {
            id,
            policy: policy.name.clone(),
            drctl_version: env!("CARGO_PKG_VERSION").into(),
            started,
            ended: started,
            mode: String::new(),
            failure_time: started,
            targets: Targets { rto_seconds: secs(policy.targets.rto), rpo_seconds: secs(policy.targets.rpo) },
            snapshot: None,
            wal: None,
            phases: Vec::new(),
            checks: Vec::new(),
            heartbeat: None,
            rto_seconds: None,
            rpo_seconds: None,
            passed: false,
            failures: Vec::new(),
            kept: None,
            rds: None,
        };
        let access = policy_repos::access_of(&policy.repositories.primary, &options.reach);
        let repo_args = access.forward().map_err(ops::Error::io("cannot resolve the repository's path"))?;
        let repo_args = repo_args.into_iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let repo_env = match &policy.repositories.primary.key {
            KeySlot::PasswordEnv(name) => {
                std::env::var(name).map(|v| vec![("DRCTL_PASSWORD".into(), v)]).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        Ok(Drill { policy, record, phase_started: clock, repo_env, repo_args, rds: None })
    }

    /// Ends the current phase now: its time goes in the record and to `say`.
    fn phase(&mut self, name: &str, say: &mut dyn FnMut(&str), detail: &str) {
        self.phase_ended(name, Instant::now(), say, detail);
    }

    /// Ends the current phase at `at` (the next one starts there).
    fn phase_ended(&mut self, name: &str, at: Instant, say: &mut dyn FnMut(&str), detail: &str) {
        let seconds = at.duration_since(self.phase_started).as_secs_f64();
        self.phase_started = at;
        self.record.phases.push(Phase { name: name.into(), seconds });
        say(&format!("{name:<11} {seconds:>8.1} s  {detail}"));
    }

    fn check(&mut self, name: &str, verdict: Result<String, String>, say: &mut dyn FnMut(&str)) {
        let (status, detail) = match verdict {
            Ok(saw) => (Status::Pass, saw),
            Err(saw) => (Status::Fail, saw),
        };
        self.record_check(name, status, detail, say);
    }

    fn skip(&mut self, name: &str, why: String, say: &mut dyn FnMut(&str)) {
        self.record_check(name, Status::Skip, why, say);
    }

    fn record_check(&mut self, name: &str, status: Status, detail: String, say: &mut dyn FnMut(&str)) {
        let word = match status {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        say(&format!("  check {word} {name}: {detail}"));
        if status == Status::Fail {
            self.record.failures.push(format!("check {name} failed: {detail}"));
        }
        self.record.checks.push(Check { name: name.into(), status, detail });
    }

    /// A drill of a base backup and its WAL.
    fn run_base_backup(
        &mut self,
        repo: &Repository,
        point: &Point,
        scratch: &Scratch,
        clock: Instant,
        say: &mut dyn FnMut(&str),
    ) -> Result<(), ops::Error> {
        // Select: the snapshot and the recovery target the simulated failure calls for.
        let wal = repo::wal::list(repo.store())?;
        let names: Vec<_> = wal.iter().map(|(name, _)| name.clone()).collect();
        let snapshots = repo.snapshots()?;
        let oldest = || select::restorable(snapshots.clone(), &names).first().map(|(_, s)| s.time);
        let (mode, failure, (id, snap), target) = match point.failure(self.record.started, oldest, "base backup")? {
            Failure::At(mode, time) => {
                let chosen = select::choose_backup(snapshots, &names, select::EndedBefore::Time(time))?;
                let target = match point {
                    Point::Latest => "latest".to_string(),
                    _ => time.to_rfc3339(),
                };
                (mode, time, chosen, Some(target))
            }
            Failure::EndOf(query) => {
                let (id, snap) = repo.find_snapshot(query)?;
                if snap.kind != SnapshotKind::PgBase {
                    return Err(ops::Error::Usage(format!(
                        "snapshot {} is not a PostgreSQL base backup: a drill restores base backups",
                        id.short()
                    )));
                }
                ("snapshot", snap.time, (id, snap), None)
            }
        };
        self.record.mode = mode.into();
        self.record.failure_time = failure;
        self.record.snapshot = Some(SnapshotUsed { id: id.to_string(), time: snap.time, kind: "pg-base".into() });
        let mut repo_args = self.repo_args.clone();
        if let Point::Latest = point {
            // Recovery gets exactly the archive as it was at the failure.
            let list = scratch.root.join("archive-at-failure");
            let text: String = names.iter().map(|n| format!("{n}\n")).collect();
            std::fs::write(&list, text).map_err(ops::Error::io(format!("cannot write {}", list.display())))?;
            std::fs::set_permissions(&list, std::fs::Permissions::from_mode(0o644))
                .map_err(ops::Error::io(format!("cannot write {}", list.display())))?;
            repo_args.extend(["--archive-list".into(), list.display().to_string()]);
        }
        self.record.wal = Some(WalUsed {
            files_in_archive: names.len(),
            newest_segment: names
                .iter()
                .filter(|n| n.kind() == crate::pg::wal::WalKind::Segment)
                .max()
                .map(|n| n.to_string()),
            recovered_to: None,
        });
        self.phase(
            "select",
            say,
            &format!(
                "snapshot {} of {}, failure at {}",
                id.short(),
                snap.time.format("%Y-%m-%d %H:%M:%S UTC"),
                failure.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        );

        let major = snap.pg.as_ref().and_then(|pg| pg.major());
        verify::require_programs(major.ok_or_else(|| {
            crate::pg::Error::database(format!("snapshot {} names no PostgreSQL version", id.short()))
        })?)?;

        // Restore and replay: the files, then recovery run privately (archiving off).
        let pgdata = scratch.root.join("pgdata");
        let options = RestoreOptions {
            snapshot: Some(id.to_string()),
            target: TargetRequest { point_in_time: target, ..Default::default() },
            destination: Destination::Dir(pgdata.clone()),
            keep_archiving: false,
            start: true,
            skip_damaged: false,
            repo_args,
            repo_env: self.repo_env.clone(),
        };
        let mut restored_after = None;
        let mut recovered_to = None;
        let restored = restore::run(repo, &options, &NoProgress, &mut |event| match event {
            Event::FilesRestored { summary, .. } => {
                restored_after = Some((Instant::now(), summary.files, summary.bytes));
            }
            Event::Recovered { recovered, .. } => {
                recovered_to = recovered.stop.clone().or_else(|| recovered.last_transaction.clone());
            }
            _ => {}
        });
        // The files may have been restored before recovery failed: their phase counts either way.
        if let Some((restored_at, files, bytes)) = restored_after {
            let mib = bytes as f64 / 1048576.0;
            self.phase_ended("restore", restored_at, say, &format!("{files} files, {mib:.1} MiB"));
        }
        restored?;
        if let Some(wal) = &mut self.record.wal {
            wal.recovered_to = recovered_to.clone();
        }
        self.phase("replay", say, recovered_to.as_deref().unwrap_or("recovery reached the end of the backup"));

        // Checksums on the stopped cluster, before it opens.
        let checksums = match verify::has_checksums(&pgdata)? {
            true => Some(verify::checksums(&pgdata)?),
            false => None,
        };
        self.phase("checksums", say, if checksums.is_some() { "pg_checksums --check" } else { "checksums are off" });

        // Open: the restored cluster started privately, accepting connections.
        let mut server = Private::start(&pgdata, &[])?;
        let candidates = candidate_users(&pgdata, self.policy);
        let (superuser, mut session) = server.superuser_session(&candidates, OPEN_TIMEOUT)?;
        self.phase("open", say, &format!("accepting connections (as {superuser})"));

        match checksums {
            Some(verdict) => self.check("checksums", verdict, say),
            None => {
                self.skip("checksums", "data checksums are off in this cluster (initdb --data-checksums)".into(), say)
            }
        }
        self.verify(&server, &superuser, &mut session, failure, Expected::Heartbeat, clock, say)?;
        drop(session);
        server.stop();
        Ok(())
    }

    /// The checks on the open scratch cluster, then RTO (if they pass) and RPO (from the newest
    /// heartbeat at or before `failure`).
    #[allow(clippy::too_many_arguments)]
    fn verify(
        &mut self,
        server: &Private,
        superuser: &str,
        session: &mut Session,
        failure: DateTime<Utc>,
        expected: Expected,
        clock: Instant,
        say: &mut dyn FnMut(&str),
    ) -> Result<(), ops::Error> {
        let database = heartbeat_database(self.policy);
        let beat = match Session::connect(&server.conn(superuser, &database), crate::pg::sql::CONNECT_TIMEOUT) {
            Ok(mut s) => heartbeat::newest(&mut s, failure)?,
            Err(_) => None,
        };
        let restored = names_of(session, DATABASES)?;
        match (&expected, &beat) {
            (Expected::Dumps(dumped), _) => {
                self.check("databases", present("database", dumped, &restored), say);
                self.skip("roles", "a logical dump holds no roles (pg_dumpall --globals-only does)".into(), say);
            }
            (Expected::Heartbeat, Some(beat)) => {
                self.check("databases", present("database", &beat.databases, &restored), say);
                self.check("roles", present("role", &beat.roles, &names_of(session, ROLES)?), say);
            }
            (Expected::Heartbeat, None) => {
                self.skip("databases", "no heartbeat recovered, so what the source had is not known".into(), say);
                self.skip("roles", "no heartbeat recovered, so what the source had is not known".into(), say);
            }
        }
        let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.check("amcheck", verify::amcheck(&server.client_env(superuser), server.major(), jobs)?, say);
        for check in &self.policy.drill.checks {
            let db = check.database.clone().unwrap_or_else(|| database.clone());
            self.check(&check.name, run_check(Ok(server.conn(superuser, &db)), check), say);
        }
        let passed_checks = self.record.checks.iter().all(|c| c.status != Status::Fail);
        self.phase("checks", say, &format!("{} check(s)", self.record.checks.len()));
        if passed_checks {
            self.record.rto_seconds = Some(clock.elapsed().as_secs_f64());
        }
        match beat {
            Some(beat) => {
                self.record.heartbeat = Some(beat.at);
                self.record.rpo_seconds = Some((failure - beat.at).num_milliseconds().max(0) as f64 / 1000.0);
            }
            None => self.record.failures.push(format!(
                "RPO not measured: the restored database {database} holds no heartbeat at or before the failure; run \
                 `drctl heartbeat --policy FILE` (or set drill.heartbeat for drctl schedule) on the primary"
            )),
        }
        Ok(())
    }

    /// Judges the measurements against the targets and closes the record.
    fn finish(&mut self) {
        let r = &mut self.record;
        r.ended = Utc::now();
        let measured = [("RTO", r.rto_seconds, r.targets.rto_seconds), ("RPO", r.rpo_seconds, r.targets.rpo_seconds)];
        for (what, value, target) in measured {
            if let Some(value) = value
                && value > target
            {
                r.failures.push(format!(
                    "{what} target missed: {} measured, the target is {}",
                    seconds(value),
                    seconds(target)
                ));
            }
        }
        if r.rto_seconds.is_none() && r.failures.is_empty() {
            r.failures.push("RTO not measured: the restored database did not pass its checks".into());
        }
        r.passed = r.failures.is_empty();
    }
}

/// Runs one of the policy's `drill.checks` on `conn`: what it returned, or why it did not pass.
fn run_check(conn: Result<crate::pg::Conn, crate::pg::Error>, check: &DrillCheck) -> Result<String, String> {
    conn.and_then(|conn| Session::connect(&conn, crate::pg::sql::CONNECT_TIMEOUT))
        .and_then(|mut s| s.text(&check.sql))
        .map_err(|e| e.to_string())
        .and_then(|got| match got.trim() == check.expect.trim() {
            true => Ok(format!("returned {:?}", got.trim())),
            false => Err(format!("`{}` returned {:?}, not {:?}", check.sql, got.trim(), check.expect.trim())),
        })
}

/// What the restored databases are held to: the heartbeat's lists (a base backup), or the
/// databases whose dumps were restored.
enum Expected {
    Heartbeat,
    Dumps(Vec<String>),
}

/// A duration in seconds, for people: tenths under a minute, else whole seconds.
pub fn seconds(s: f64) -> String {
    match s < 60.0 {
        true => format!("{s:.1}s"),
        false => humantime::format_duration(Duration::from_secs(s.round() as u64)).to_string(),
    }
}

const DATABASES: &str = "SELECT datname::text FROM pg_database WHERE datallowconn ORDER BY 1";
const ROLES: &str = "SELECT rolname::text FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1";

fn names_of(session: &mut Session, sql: &str) -> Result<Vec<String>, ops::Error> {
    Ok(session.rows(sql, |row| sqlx::Row::try_get(row, 0))?)
}

/// Whether every name the source had is restored.
fn present(what: &str, source: &[String], restored: &[String]) -> Result<String, String> {
    let missing: Vec<&str> = source.iter().filter(|n| !restored.contains(n)).map(String::as_str).collect();
    match missing.is_empty() {
        true => Ok(format!("all {} {what}s the source had are there", source.len())),
        false => Err(format!("{} {what}(s) the source had are missing: {}", missing.len(), missing.join(", "))),
    }
}

/// The database the heartbeat writes into: the policy connection's.
fn heartbeat_database(policy: &Policy) -> String {
    let dsn = policy_db::connection_string(&policy.database.connection);
    let options = crate::pg::sql::connect_options(&dsn).ok();
    let database = options.as_ref().and_then(|o| o.get_database().map(str::to_string));
    database.or_else(|| options.map(|o| o.get_username().to_string())).unwrap_or_else(|| "postgres".into())
}

/// Roles to ask the restored server who its superuser is: the data directory owner's name
/// (initdb's default), `postgres`, and the policy's user.
fn candidate_users(pgdata: &Path, policy: &Policy) -> Vec<String> {
    let mut users = Vec::new();
    if let Ok(meta) = std::fs::metadata(pgdata)
        && let Some(name) = crate::pg::server::user_name(std::os::unix::fs::MetadataExt::uid(&meta))
    {
        users.push(name);
    }
    users.push("postgres".into());
    let dsn = policy_db::connection_string(&policy.database.connection);
    if let Ok(options) = crate::pg::sql::connect_options(&dsn) {
        users.push(options.get_username().to_string());
    }
    users.dedup();
    users
}

/// A random moment between `window` before `now` (but not before `oldest`, the earliest moment
/// a backup can be restored to) and `now`.
fn random_moment(
    now: DateTime<Utc>,
    window: chrono::Duration,
    oldest: Option<DateTime<Utc>>,
    what: &str,
) -> Result<DateTime<Utc>, ops::Error> {
    let from = oldest.map_or(now, |oldest| (now - window).max(oldest));
    if from >= now {
        return Err(ops::Error::Usage(format!(
            "no moment within {} before now can be restored: {}",
            humantime::format_duration(window.to_std().unwrap_or_default()),
            match oldest {
                Some(t) => format!("the oldest restorable {what} ended at {t}"),
                None => format!("the repository holds no restorable {what}"),
            }
        )));
    }
    let span = (now - from).num_milliseconds().max(1) as u64;
    let mut random = [0u8; 8];
    let _ = getrandom::fill(&mut random);
    Ok(from + chrono::Duration::milliseconds((u64::from_le_bytes(random) % span) as i64))
}

/// The drill's scratch directory: created new, removed when dropped unless kept.
struct Scratch {
    root: PathBuf,
    keep: bool,
}

impl Scratch {
    fn create(root: Option<PathBuf>, id: &str, keep: bool) -> Result<Scratch, ops::Error> {
        let root = root.unwrap_or_else(|| std::env::temp_dir().join(format!("drctl-drill-{id}")));
        let made = std::fs::create_dir(&root)
            .and_then(|()| std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711)));
        made.map_err(|e| ops::Error::Target {
            path: root.clone(),
            reason: format!("the drill's scratch directory must be new: {e}"),
        })?;
        Ok(Scratch { root, keep })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
