//! Forgetting: applies retention rules to the snapshots of a repository, and removes the WAL no
//! kept base backup needs. Only manifests and WAL objects go here; the packs their data lived in
//! are reclaimed by prune, which checks what is still used.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::retention::{self, Item, Rules, Verdict};
use super::snapshot::{self, Snapshot, SnapshotKind};
use super::{Error, Repository, wal, wal_map};
use crate::pg::wal::{WalKind, WalName, parse_lsn};
use crate::pg::window::Archive;
use crate::store;

/// What forgetting would do.
#[derive(Debug, Serialize)]
pub struct Plan {
    /// Every snapshot, oldest first, with whether it stays and why.
    pub snapshots: Vec<Judged>,
    /// WAL files older than the oldest kept base backup's start, which nothing can replay.
    pub wal_to_remove: Vec<String>,
    /// The first WAL segment kept (the oldest kept base backup's start), if any base backup is.
    pub wal_kept_from: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Judged {
    pub short_id: String,
    pub time: DateTime<Utc>,
    pub group: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// What was removed; objects still under Object Lock retention are listed, not removed.
#[derive(Debug, Default, Serialize)]
pub struct Applied {
    pub snapshots_removed: usize,
    pub wal_removed: usize,
    pub retained: Vec<String>,
}

/// The source a snapshot belongs to: retention compares snapshots within it only.
/// Snapshots a policy job takes carry the policy and source as tags, and are grouped by those
/// rather than by host: each run of a Kubernetes CronJob has a new pod name.
pub fn group_of(s: &Snapshot) -> String {
    let name = s.stdin_name.as_deref().unwrap_or("");
    let origin = match snapshot::policy_source(&s.tags) {
        Some((policy, source)) => format!("of policy {policy} source {source}"),
        None => format!("from {}", s.hostname),
    };
    match (s.kind, &s.pg) {
        (SnapshotKind::PgBase, Some(pg)) => format!("pg-base of cluster {}", pg.system_identifier),
        (SnapshotKind::PgDump, _) => format!("pg-dump {name} {origin}"),
        (SnapshotKind::Stream, _) => format!("stream {name} {origin}"),
        _ => format!("paths {} {origin}", s.paths.join(",")),
    }
}

/// Judges every snapshot by `rules`. With `policy`, only that policy's snapshots are judged and
/// every other one stays: a policy job never applies its rules to snapshots it did not take.
pub fn plan(repo: &Repository, rules: &Rules, now: DateTime<Utc>, policy: Option<&str>) -> Result<Plan, Error> {
    let all = snapshot::load_all(repo.store(), repo.key())?;
    let archived: Vec<WalName> = wal::list(repo.store())?.into_iter().map(|(name, _)| name).collect();
    let items: Vec<Item> =
        all.iter()
            .map(|(id, s)| Item {
                id: *id,
                time: s.time,
                group: group_of(s),
                restorable_from: s.pg.as_ref().map(|_| {
                    s.time + chrono::Duration::milliseconds((s.summary.duration_seconds * 1000.0).ceil() as i64)
                }),
                good: s.pg.as_ref().is_none_or(|pg| {
                    Archive::new(&archived, pg.wal_segment_size)
                        .missing_for(pg.timeline, &pg.start_lsn, &pg.stop_lsn)
                        .is_empty()
                }),
            })
            .collect();
    let mut verdicts = retention::decide(rules, &items, now);
    if let Some(policy) = policy {
        for ((_, s), verdict) in all.iter().zip(verdicts.iter_mut()) {
            if snapshot::policy_source(&s.tags).is_none_or(|(p, _)| p != policy) {
                verdict.keep = true;
                verdict.reasons = vec![format!("not taken by policy {policy}")];
            }
        }
    }

    // WAL before the oldest kept base backup's start can never be replayed by any kept backup.
    // Segment numbers compare only within one cluster and one segment size: a repository that
    // mixes them keeps all its WAL.
    let kept_pg: Vec<_> =
        all.iter().zip(&verdicts).filter_map(|((_, s), v)| s.pg.as_ref().filter(|_| v.keep)).collect();
    let one_cluster = kept_pg
        .windows(2)
        .all(|w| w[0].system_identifier == w[1].system_identifier && w[0].wal_segment_size == w[1].wal_segment_size);
    let mut oldest: Option<(u64, u64, String)> = None;
    for ((_, s), v) in all.iter().zip(&verdicts).filter(|_| one_cluster) {
        let Some(pg) = s.pg.as_ref().filter(|_| v.keep) else { continue };
        let start = parse_lsn(&pg.start_lsn)
            .ok_or_else(|| Error::corrupt(&format!("snapshot {}", v.id), "its start LSN does not parse"))?;
        let segment = start / pg.wal_segment_size;
        if oldest.as_ref().is_none_or(|(n, _, _)| segment < *n) {
            oldest = Some((segment, pg.wal_segment_size, pg.start_wal.clone()));
        }
    }
    let wal_to_remove = match &oldest {
        Some((first, segment_size, _)) => archived
            .iter()
            .filter(|n| matches!(n.kind(), WalKind::Segment | WalKind::Partial | WalKind::BackupHistory))
            .filter(|n| n.segment_number(0x1_0000_0000 / segment_size).is_some_and(|s| s < *first))
            .map(|n| n.to_string())
            .collect(),
        // No base backup is kept (or several clusters are): nothing of the archive goes.
        None => Vec::new(),
    };
    let snapshots = all
        .iter()
        .zip(verdicts)
        .map(|((id, s), verdict)| Judged { short_id: id.short(), time: s.time, group: group_of(s), verdict })
        .collect();
    Ok(Plan { snapshots, wal_to_remove, wal_kept_from: oldest.map(|(_, _, name)| name) })
}

/// Removes what the plan does not keep: manifests first, then WAL. An object S3 Object Lock
/// still retains is listed and left; the next run removes it once the retention ends.
pub fn apply(repo: &Repository, plan: &Plan) -> Result<Applied, Error> {
    let mut applied = Applied::default();
    // Ok(true) removed, Ok(false) kept by Object Lock (and listed).
    let remove = |key: String, retained: &mut Vec<String>| match repo.store().delete(&key) {
        Ok(()) => Ok(true),
        Err(store::Error::Retained { key, until, .. }) => {
            retained.push(format!("{key} (until {until})"));
            Ok(false)
        }
        Err(e) => Err(Error::Store(e)),
    };
    for judged in plan.snapshots.iter().filter(|j| !j.verdict.keep) {
        applied.snapshots_removed += remove(snapshot::key_of(judged.verdict.id), &mut applied.retained)? as usize;
    }
    // A manifest Object Lock kept is still listed: the WAL it needs must stay with it.
    if applied.retained.is_empty() {
        for name in &plan.wal_to_remove {
            let name = WalName::parse(name).expect("listed names are valid");
            // Its block map first: a map never outlives its segment.
            remove(wal_map::key_of(&name), &mut applied.retained)?;
            applied.wal_removed += remove(wal::key_of(&name), &mut applied.retained)? as usize;
        }
    }
    Ok(applied)
}
