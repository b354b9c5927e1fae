//! Drills of policies that keep logical dumps (`kind: rds`, or self-managed without base
//! backups): the newest dump of each database taken at or before the simulated failure,
//! restored with pg_restore into a new scratch cluster, then the same checks as a base backup's.
//! A dump holds no roles, so objects are restored without owners and grants.

use chrono::{DateTime, Utc};
use std::time::Instant;

use super::record::SnapshotUsed;
use super::{Drill, Expected, Failure, Point, Scratch};
use crate::ops;
use crate::ops::restore::dump::restore_dump;
use crate::pg::server::{self, Private};
use crate::policy::{Policy, SourceKind};
use crate::progress::NoProgress;
use crate::repo::snapshot::{Snapshot, SnapshotKind, policy_source};
use crate::repo::{Id, Repository};

/// The databases the policy's logical-dump sources dump.
pub(super) fn databases(policy: &Policy) -> Vec<String> {
    let mut all: Vec<String> = policy
        .sources
        .iter()
        .filter_map(|s| match &s.what {
            SourceKind::LogicalDump { databases } => Some(databases.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    all.sort();
    all.dedup();
    all
}

/// The database a dump snapshot holds (its stream is named `<database>.dump`).
fn database_of(snap: &Snapshot) -> Option<&str> {
    snap.stdin_name.as_deref()?.strip_suffix(".dump")
}

impl Drill<'_> {
    pub(super) fn run_dumps(
        &mut self,
        repo: &Repository,
        point: &Point,
        scratch: &Scratch,
        clock: Instant,
        say: &mut dyn FnMut(&str),
    ) -> Result<(), ops::Error> {
        // Select: per database, the newest dump of this policy taken at or before the failure.
        let policy = self.policy;
        let dumps: Vec<(Id, Snapshot)> = repo
            .snapshots()?
            .into_iter()
            .filter(|(_, s)| s.kind == SnapshotKind::PgDump)
            .filter(|(_, s)| policy_source(&s.tags).is_some_and(|(p, _)| p == policy.name))
            .collect();
        let oldest = || dumps.iter().map(|(_, s)| s.time).min();
        let (mode, failure, only) = match point.failure(self.record.started, oldest, "logical dump")? {
            Failure::At(mode, time) => (mode, time, None),
            Failure::EndOf(query) => {
                let (id, snap) = repo.find_snapshot(query)?;
                let Some(database) = database_of(&snap).filter(|_| snap.kind == SnapshotKind::PgDump) else {
                    return Err(ops::Error::Usage(format!(
                        "snapshot {} is not a logical dump: policy {} drills its logical dumps",
                        id.short(),
                        policy.name
                    )));
                };
                ("snapshot", snap.time, Some(database.to_string()))
            }
        };
        let wanted = match only {
            Some(database) => vec![database],
            None => databases(policy),
        };
        let chosen =
            wanted.iter().map(|database| newest_dump(&dumps, database, failure)).collect::<Result<Vec<_>, _>>()?;
        self.record.mode = mode.into();
        self.record.failure_time = failure;
        let heartbeat_db = super::heartbeat_database(policy);
        let shown = chosen.iter().find(|(db, ..)| *db == heartbeat_db).or(chosen.first());
        self.record.snapshot =
            shown.map(|(_, id, snap)| SnapshotUsed { id: id.to_string(), time: snap.time, kind: "pg-dump".into() });
        let listed: Vec<String> = chosen
            .iter()
            .map(|(db, id, snap)| format!("{db} {} ({})", id.short(), snap.time.format("%Y-%m-%d %H:%M:%S UTC")))
            .collect();
        self.phase(
            "select",
            say,
            &format!("dumps {}; failure at {}", listed.join(", "), failure.format("%Y-%m-%d %H:%M:%S UTC")),
        );
        // RDS restores while the dump is restored here.
        self.rds_request(failure, say)?;

        // Open: a new cluster, started privately.
        let pgdata = scratch.root.join("pgdata");
        server::init_scratch(&pgdata)?;
        let mut server = Private::start(&pgdata, &[])?;
        let (superuser, mut session) = server.superuser_session(&["postgres".to_string()], super::OPEN_TIMEOUT)?;
        self.phase("open", say, "a new cluster accepting connections");

        // Restore: each database created and its dump restored into it.
        for (database, _, snap) in &chosen {
            session.execute(&format!("CREATE DATABASE \"{}\"", database.replace('"', "\"\"")))?;
            let conn = server.conn(&superuser, database);
            restore_dump(repo, snap, &conn, &["--no-owner", "--no-privileges"], &NoProgress)?;
        }
        self.phase("restore", say, &format!("{} database(s) restored with pg_restore", chosen.len()));

        self.skip("checksums", "a dump is restored into a new cluster: no page of the source to check".into(), say);
        self.verify(&server, &superuser, &mut session, failure, Expected::Dumps(wanted.clone()), clock, say)?;
        drop(session);
        server.stop();
        Ok(())
    }
}

/// The newest dump of `database` taken at or before `failure`.
fn newest_dump<'a>(
    dumps: &'a [(Id, Snapshot)],
    database: &'a str,
    failure: DateTime<Utc>,
) -> Result<(&'a str, Id, &'a Snapshot), ops::Error> {
    dumps
        .iter()
        .filter(|(_, s)| database_of(s) == Some(database) && s.time <= failure)
        .max_by_key(|(_, s)| s.time)
        .map(|(id, s)| (database, *id, s))
        .ok_or_else(|| {
            crate::pg::Error::OutOfReach {
                detail: format!(
                    "the repository holds no logical dump of database {database} taken at or before {failure}"
                ),
            }
            .into()
        })
}
