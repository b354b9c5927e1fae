//! The controls against a day of known history: hourly base backups with one run missed (its job
//! failed) and one late, a WAL gap, a snapshot missing from the copy, a removal the policy did
//! not allow, an old key slot, a passed then a failed drill, no full check of the copy.

use chrono::{DateTime, Duration, Utc};

use super::gather::{Evidence, Holdings};
use super::*;
use crate::drill::record::{Record as DrillRecord, Targets};
use crate::job::{JobReport, RemovedSnapshot, RetentionStep, SnapshotTaken, SourceReport, StepError};
use crate::ops::check::Record as CheckRecord;
use crate::pg::wal::{WalName, segment_name};
use crate::repo::Id;
use crate::repo::key::{KeySlot, SlotKind};
use crate::repo::snapshot::{PgBackup, Snapshot, SnapshotKind, policy_tags};

const COPY: &str = "/backups/copy";

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn t0() -> DateTime<Utc> {
    at("2026-07-01T00:00:00Z")
}

fn policy() -> Policy {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.yaml");
    std::fs::write(
        &path,
        format!(
            "name: api\nkind: self-managed\ndatabase:\n  dsn: \"host=/tmp\"\n\
             sources:\n  base:\n    type: base-backup\n    mode: stream\n    schedule: \"0 * * * *\"\n\
             repositories:\n  primary:\n    location: /backups/primary\n    password_env: P\n  copies:\n    \
             - location: {COPY}\n      password_env: P\n  key_rotation: 400d\n\
             retention:\n  keep_last: 48\n\
             targets:\n  rto: 10m\n  rpo: 15m\n"
        ),
    )
    .unwrap();
    crate::policy::load(&path).unwrap()
}

/// The base backup that started at `start`, taking two minutes; its first WAL segment is the
/// one written next (segments are written every ten minutes, number k at k × 10 min).
fn base(start: DateTime<Utc>) -> (Id, Snapshot) {
    let mut s = Snapshot::new(SnapshotKind::PgBase, &policy_tags("api", "base"));
    s.time = start + Duration::minutes(2);
    s.summary.duration_seconds = 120.0;
    s.summary.stored_bytes = 1 << 20;
    let first = (start - t0()).num_minutes() / 10 + 1;
    s.pg = Some(PgBackup {
        mode: "stream".into(),
        system_identifier: "7".into(),
        pg_version: "15".into(),
        timeline: 1,
        start_lsn: "0/0".into(),
        stop_lsn: "0/0".into(),
        start_wal: segment_name(1, first as u64, 16 << 20),
        wal_segment_size: 16 << 20,
        start_time: String::new(),
        started_at: None,
        tablespace_map: String::new(),
    });
    let id = Id::of_stored(start.to_rfc3339().as_bytes());
    (id, s)
}

fn job(started: DateTime<Utc>) -> JobReport {
    JobReport::new("api", started)
}

fn source_step(snapshots: Vec<SnapshotTaken>, error: Option<&str>) -> SourceReport {
    SourceReport {
        name: "base".into(),
        kind: "base-backup".into(),
        schedule: "0 * * * *".into(),
        ran: true,
        reason: String::new(),
        error: error.map(|m| StepError { message: m.into(), hint: String::new(), exit_code: 12 }),
        snapshots,
        newest: None,
        max_age_seconds: 3600.0,
        next_run: None,
    }
}

fn drill(started: DateTime<Utc>, passed: bool) -> DrillRecord {
    DrillRecord {
        id: format!("{}-00000000", started.format("%Y%m%dT%H%M%SZ")),
        policy: "api".into(),
        drctl_version: "0".into(),
        started,
        ended: started + Duration::minutes(3),
        mode: "latest".into(),
        failure_time: started,
        targets: Targets { rto_seconds: 600.0, rpo_seconds: 900.0 },
        snapshot: None,
        wal: None,
        phases: vec![],
        checks: vec![],
        heartbeat: None,
        rto_seconds: Some(180.0),
        rpo_seconds: Some(if passed { 60.0 } else { 1800.0 }),
        passed,
        failures: if passed { vec![] } else { vec!["RPO 30 min is above the target 15 min".into()] },
        kept: None,
        rds: None,
    }
}

fn slot(created: &str) -> KeySlot {
    KeySlot {
        version: 1,
        kind: SlotKind::Passphrase,
        created: at(created),
        hostname: "h".into(),
        kdf: None,
        kms_key_id: None,
        wrapped_key: String::new(),
    }
}

fn history() -> Evidence {
    let mut snapshots = Vec::new();
    let mut jobs = Vec::new();
    for hour in 0..24 {
        let fire = t0() + Duration::hours(hour);
        match hour {
            5 => {
                let mut j = job(fire);
                j.sources.push(source_step(vec![], Some("cannot connect to the server")));
                jobs.push(j);
            }
            _ => {
                let start = if hour == 9 { fire + Duration::minutes(30) } else { fire };
                let (id, s) = base(start);
                let mut j = job(start);
                j.sources.push(source_step(
                    vec![SnapshotTaken {
                        id: id.to_hex(),
                        short_id: id.short(),
                        time: s.time,
                        label: "PGDATA".into(),
                        logical_bytes: 1 << 24,
                        stored_bytes: 1 << 20,
                        duration_seconds: 120.0,
                    }],
                    None,
                ));
                jobs.push(j);
                snapshots.push((id, s.clone(), Some(s.time)));
            }
        }
    }
    // 23:10: retention removed the 00:00 backup, which keep_last 48 keeps.
    let (first, first_snap) = base(t0());
    let mut j = job(t0() + Duration::hours(23) + Duration::minutes(10));
    j.retention.push(RetentionStep {
        repository: "/backups/primary".into(),
        error: None,
        snapshots_removed: 1,
        snapshots_kept: 22,
        wal_removed: 0,
        retained_by_object_lock: 0,
        removed: vec![RemovedSnapshot {
            id: first.to_hex(),
            time: first_snap.time,
            group: crate::repo::forget::group_of(&first_snap),
        }],
        pruned: false,
        packs_deleted: 0,
        bytes_deleted: 0,
        packs_marked: 0,
    });
    jobs.push(j);
    snapshots.retain(|(id, _, _)| *id != first);

    // WAL: segment k written at k × 10 min; 70 and 71 (0x46, 0x47) are missing.
    let wal: Vec<(WalName, Option<DateTime<Utc>>)> = (1..=144u64)
        .filter(|k| !(70..=71).contains(k))
        .map(|k| {
            (WalName::parse(&segment_name(1, k, 16 << 20)).unwrap(), Some(t0() + Duration::minutes(10 * k as i64)))
        })
        .collect();
    // The copy: every snapshot five minutes after it ended, but the 14:00 one.
    let missing = base(t0() + Duration::hours(14)).0;
    let copy_snaps = snapshots
        .iter()
        .filter(|(id, _, _)| *id != missing)
        .map(|(id, s, _)| (*id, s.clone(), Some(s.time + Duration::minutes(5))))
        .collect();
    let check = CheckRecord {
        id: "c".into(),
        started: t0() + Duration::hours(3),
        ended: t0() + Duration::hours(3),
        read_data: true,
        snapshots: 3,
        packs: 3,
        wal_files: 18,
        bytes_read: 1 << 30,
        damaged: vec![],
    };
    let created = at("2026-01-01T00:00:00Z");
    let primary = Holdings {
        location: "/backups/primary".into(),
        created,
        snapshots,
        wal: wal.clone(),
        keys: vec![
            (Id::of_stored(b"old"), slot("2025-01-01T00:00:00Z")),
            (Id::of_stored(b"new"), slot("2026-06-01T00:00:00Z")),
        ],
        checks: vec![check],
        retention: None,
    };
    let copy = Holdings {
        location: COPY.into(),
        created,
        snapshots: copy_snaps,
        wal,
        keys: vec![(Id::of_stored(b"new"), slot("2026-06-01T00:00:00Z"))],
        checks: vec![],
        retention: None,
    };
    Evidence {
        primary,
        copies: vec![(COPY.into(), Ok(copy))],
        jobs,
        drills: vec![drill(t0() + Duration::hours(10), true), drill(t0() + Duration::hours(20), false)],
        audit: Ok(vec![]),
        object_lock: None,
    }
}

fn report() -> Report {
    let period = Period::parse("2026-07-01..2026-07-01").unwrap();
    let repository = RepositoryRef { id: "0".repeat(64), location: "/backups/primary".into() };
    assemble(&policy(), &period, period.to, &history(), repository)
}

fn control<'a>(r: &'a Report, id: &str) -> &'a Control {
    r.controls.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no control {id}: {:#?}", r.controls))
}

fn says(c: &Control, text: &str) -> bool {
    c.finding.contains(text) || c.evidence.iter().any(|e| e.contains(text))
}

#[test]
fn each_finding_of_a_known_history_is_named() {
    let r = report();
    let c = control(&r, "schedule/base");
    assert_eq!(c.status, Status::Fail, "{c:#?}");
    assert!(says(c, "22 of 24 runs on time (91.7%), 1 late, 1 missed"), "{c:#?}");
    assert!(says(c, "missed: 2026-07-01 05:00 (the job of 2026-07-01 05:00 failed: cannot connect"), "{c:#?}");
    assert!(says(c, "late: the run of 2026-07-01 09:00 started 30 min late"), "{c:#?}");

    let c = control(&r, "backup-age/base");
    assert_eq!(c.status, Status::Pass, "{c:#?}");
    assert!(says(c, "ended 58 min before"), "{c:#?}");

    let c = control(&r, "wal-continuity");
    assert_eq!(c.status, Status::Fail, "{c:#?}");
    assert!(
        says(c, "gap on timeline 1: 000000010000000000000046 to 000000010000000000000047 (2 segments) missing"),
        "{c:#?}"
    );
    assert!(says(c, "not restorable from 2026-07-01 11:30 to 2026-07-01 12:02"), "{c:#?}");

    let c = control(&r, &format!("copies/{COPY}"));
    assert_eq!(c.status, Status::Fail, "{c:#?}");
    let missing = base(t0() + Duration::hours(14)).0.short();
    assert!(says(c, &format!("missing: snapshot {missing} of 2026-07-01 14:02")), "{c:#?}");
    assert!(says(c, "21 of 22 snapshots copied (lag p50 5 min, p95 5 min"), "{c:#?}");

    let c = control(&r, "retention");
    assert_eq!(c.status, Status::Fail, "{c:#?}");
    assert!(says(c, "removed early: snapshot"), "{c:#?}");
    assert!(says(c, "last 48"), "{c:#?}");

    let c = control(&r, "encryption");
    assert_eq!(c.status, Status::Fail, "{c:#?}");
    assert!(says(c, "rotation due (the policy's key_rotation is 400.0 d)"), "{c:#?}");

    let c = control(&r, "check-read-data");
    assert_eq!(c.status, Status::NoEvidence, "{c:#?}");
    assert!(says(c, &format!("{COPY}: no check --read-data in the period")), "{c:#?}");

    let c = control(&r, "drills");
    assert_eq!(c.status, Status::Fail, "{c:#?}");
    assert!(says(c, "2 drill(s), 1 failed"), "{c:#?}");
    assert!(says(c, "RPO 30 min is above the target"), "{c:#?}");

    assert_eq!(control(&r, "runbooks").status, Status::NoEvidence);
    assert_eq!((r.summary.pass, r.summary.fail, r.summary.no_evidence), (1, 6, 2));
}

#[test]
fn the_same_evidence_gives_the_same_bytes_in_one_self_contained_html_file() {
    let r = report();
    let again = report();
    assert_eq!(serde_json::to_string(&r).unwrap(), serde_json::to_string(&again).unwrap());
    assert_eq!(markdown::render(&r), markdown::render(&again));
    let html = html::render(&r);
    assert_eq!(html, html::render(&again));
    assert!(html.len() < 2 << 20, "{} bytes", html.len());
    assert_eq!(html.matches("<svg").count(), 5, "heat-map, sizes, WAL, copy lag, drills");
    assert_eq!(
        html.matches("http").count(),
        html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(),
        "no link out"
    );
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
}

#[test]
fn periods_parse_as_written() {
    let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    let p = Period::parse("2026-Q3").unwrap();
    assert_eq!((p.from, p.to), (at("2026-07-01T00:00:00Z"), at("2026-10-01T00:00:00Z")));
    let p = Period::parse("2026-Q4").unwrap();
    assert_eq!(p.to, at("2027-01-01T00:00:00Z"));
    let p = Period::parse("2026-02").unwrap();
    assert_eq!((p.from, p.to), (at("2026-02-01T00:00:00Z"), at("2026-03-01T00:00:00Z")));
    let p = Period::parse("2026-11-20").unwrap();
    assert_eq!((p.from, p.to), (at("2026-11-20T00:00:00Z"), at("2026-11-21T00:00:00Z")));
    let p = Period::parse("2026").unwrap();
    assert_eq!(p.to, at("2027-01-01T00:00:00Z"));
    let p = Period::parse("2026-07-01..2026-09-30").unwrap();
    assert_eq!((p.from, p.to), (at("2026-07-01T00:00:00Z"), at("2026-10-01T00:00:00Z")));
    let p = Period::parse("2026-07-01 06:00:00+00..2026-07-02 06:00:00+00").unwrap();
    assert_eq!((p.from, p.to), (at("2026-07-01T06:00:00Z"), at("2026-07-02T06:00:00Z")));
    for bad in ["2026-Q5", "Q3", "2026-13", "2026-02-30", "2026-09-30..2026-07-01", "yesterday", ""] {
        assert!(Period::parse(bad).is_err(), "{bad}");
    }
}
