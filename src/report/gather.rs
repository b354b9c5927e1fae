//! The evidence a report is built from, read once: from the policy's primary repository its
//! snapshots, WAL (with the time each object was written), key slots and every record; from each
//! copy what it holds. A copy that cannot be opened is evidence too (the copies control fails,
//! naming why); the primary must open.

use chrono::{DateTime, Utc};
use std::collections::HashMap;

use crate::drill::record::Record as DrillRecord;
use crate::job::JobReport;
use crate::ops;
use crate::ops::check::Record as CheckRecord;
use crate::ops::policy_repos::{self, Reach, location_of};
use crate::pg::wal::WalName;
use crate::policy::Policy;
use crate::repo::evidence::{self, Kind};
use crate::repo::key::KeySlot;
use crate::repo::snapshot::{self, Snapshot};
use crate::repo::{Id, Repository};
use crate::store::{ObjectLock, Retention};

use super::Period;

/// What one repository holds.
pub struct Holdings {
    pub location: String,
    /// When the repository was made (its config): no run was expected of it before.
    pub created: DateTime<Utc>,
    /// Every snapshot, with when its manifest was written there (for a copy: when it arrived).
    pub snapshots: Vec<(Id, Snapshot, Option<DateTime<Utc>>)>,
    /// Archived WAL files, sorted by name, with when each was written.
    pub wal: Vec<(WalName, Option<DateTime<Utc>>)>,
    pub keys: Vec<(Id, KeySlot)>,
    pub checks: Vec<CheckRecord>,
    /// S3 only: the Object Lock retention of each snapshot manifest of the period.
    pub retention: Option<Vec<(Id, Option<Retention>)>>,
}

pub struct Evidence {
    pub primary: Holdings,
    /// Each copy the policy names, in its order: what it holds, or why it could not be read.
    pub copies: Vec<(String, Result<Holdings, String>)>,
    pub jobs: Vec<JobReport>,
    pub drills: Vec<DrillRecord>,
    /// Runbook audit records, each authenticated and chained; or why the chain is broken.
    pub audit: Result<Vec<serde_json::Map<String, serde_json::Value>>, String>,
    /// The Object Lock retention drctl writes S3 objects with (`--s3-object-lock`), when set.
    pub object_lock: Option<ObjectLock>,
}

/// The evidence, and the primary repository (whose key seals the report).
pub fn gather(policy: &Policy, reach: &Reach, period: &Period) -> Result<(Evidence, Repository), ops::Error> {
    let repo = policy_repos::open(&policy.repositories.primary, reach)?;
    let jobs: Vec<JobReport> = evidence::read_all(&repo, Kind::Job)?;
    let jobs = jobs.into_iter().filter(|j| j.policy == policy.name).collect();
    let drills: Vec<DrillRecord> = crate::drill::record::list(&repo)?;
    let drills = drills.into_iter().filter(|d| d.policy == policy.name).collect();
    let audit = crate::runbook::audit::verify_stored(&repo);
    let primary = holdings(location_of(&policy.repositories.primary), &repo, period)?;
    let copies = policy
        .repositories
        .copies
        .iter()
        .map(|copy| {
            let held = policy_repos::open_copy_of(&repo, copy, reach)
                .and_then(|r| holdings(location_of(copy), &r, period))
                .map_err(|e| ops::with_causes(&e));
            (location_of(copy), held)
        })
        .collect();
    let object_lock = reach.s3.object_lock.clone();
    Ok((Evidence { primary, copies, jobs, drills, audit, object_lock }, repo))
}

fn holdings(location: String, repo: &Repository, period: &Period) -> Result<Holdings, ops::Error> {
    let written: HashMap<String, Option<DateTime<Utc>>> =
        repo.store().list("snapshots/")?.into_iter().map(|o| (o.key, o.modified)).collect();
    let snapshots: Vec<(Id, Snapshot, Option<DateTime<Utc>>)> = repo
        .snapshots()?
        .into_iter()
        .map(|(id, s)| {
            let at = written.get(&snapshot::key_of(id)).copied().flatten();
            (id, s, at)
        })
        .collect();
    let mut wal: Vec<(WalName, Option<DateTime<Utc>>)> = repo
        .store()
        .list("wal/")?
        .into_iter()
        .filter_map(|o| Some((WalName::parse(o.key.rsplit('/').next()?)?, o.modified)))
        .collect();
    wal.sort_by(|a, b| a.0.cmp(&b.0));
    let keys = crate::repo::key::list(repo.store())?;
    let checks = evidence::read_all(repo, Kind::Check)?;
    let retention = match repo.store().is_remote() {
        false => None,
        true => Some(
            snapshots
                .iter()
                .filter(|(_, s, _)| s.time >= period.from && s.time < period.to)
                .map(|(id, _, _)| Ok((*id, repo.store().retention(&snapshot::key_of(*id))?)))
                .collect::<Result<_, crate::store::Error>>()?,
        ),
    };
    Ok(Holdings { location, created: repo.config().created, snapshots, wal, keys, checks, retention })
}
