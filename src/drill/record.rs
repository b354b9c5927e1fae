//! A drill's record: what was restored, how long each phase took, what each check saw, the RPO
//! and RTO measured and the targets they were held to. Stored as JSON, encrypted, in the
//! policy's primary repository (`drills/<id>`, docs/FORMAT.md §12b), so it travels with `copy`
//! and reports can be built from it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::repo::Repository;
use crate::repo::evidence::{self, Kind};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The drill's id: its start time and random hex (`20261205T141500Z-1a2b3c4d`).
    pub id: String,
    pub policy: String,
    pub drctl_version: String,
    pub started: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    /// How the simulated failure was chosen: `latest`, `at`, `random-within` or `snapshot`.
    pub mode: String,
    /// The simulated failure: the moment the RPO is measured back from.
    pub failure_time: DateTime<Utc>,
    pub targets: Targets,
    /// The snapshot restored.
    pub snapshot: Option<SnapshotUsed>,
    /// The WAL recovery read, when it replayed WAL.
    pub wal: Option<WalUsed>,
    /// Each phase in order, with how long it took.
    pub phases: Vec<Phase>,
    pub checks: Vec<Check>,
    /// The newest heartbeat the restored database holds (at or before the failure).
    pub heartbeat: Option<DateTime<Utc>>,
    /// Drill start → the restored database passing its checks.
    pub rto_seconds: Option<f64>,
    /// The failure → the newest heartbeat recovered.
    pub rpo_seconds: Option<f64>,
    pub passed: bool,
    /// Why it did not pass, each naming the check or target.
    pub failures: Vec<String>,
    /// The scratch directory, when it was kept (`--keep`).
    pub kept: Option<String>,
    /// The scratch RDS instance of `drill --rds` (absent in records before it existed).
    #[serde(default)]
    pub rds: Option<RdsUsed>,
}

/// The scratch RDS instance a drill restored, checked and (unless kept) deleted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RdsUsed {
    /// The scratch instance's identifier.
    pub instance: String,
    /// The instance it was restored from.
    pub source: String,
    pub region: String,
    /// The moment asked of RDS; `None`: its latest restorable time (`--latest`).
    pub restore_time: Option<DateTime<Utc>>,
    /// The source's latest restorable time when the restore was asked: what `--latest` got.
    #[serde(default)]
    pub latest_restorable: Option<DateTime<Utc>>,
    /// `host:port`, once RDS gave it one.
    pub endpoint: Option<String>,
    /// The restore request → the instance available.
    pub restore_seconds: Option<f64>,
    /// The drill's start → the instance passing its checks.
    pub rto_seconds: Option<f64>,
    /// RDS no longer lists it (deleted, or the request never made it).
    pub deleted: bool,
    /// Left running for inspection (`--keep`).
    pub kept: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Targets {
    pub rto_seconds: f64,
    pub rpo_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotUsed {
    pub id: String,
    pub time: DateTime<Utc>,
    /// `pg-base` or `pg-dump`.
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WalUsed {
    /// WAL files in the archive when recovery began (or, for `latest`, at the failure: recovery
    /// was given only those).
    pub files_in_archive: usize,
    /// The newest segment among them.
    pub newest_segment: Option<String>,
    /// What PostgreSQL logged about where recovery stopped.
    pub recovered_to: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phase {
    /// `select`, `restore`, `replay`, `checksums`, `open`, `checks`.
    pub name: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    /// What it saw.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// Not applicable here (e.g. checksums off in the cluster), saying why.
    Skip,
}

impl Record {
    /// Stores the record in `repo`; returns its key.
    pub fn store(&self, repo: &Repository) -> Result<String, crate::repo::Error> {
        let json = serde_json::to_vec(self).expect("records serialize");
        evidence::put_record(repo, Kind::Drill, &self.id, &json)?;
        Ok(evidence::record_key(Kind::Drill, &self.id))
    }
}

/// Every drill record in `repo`, oldest first; a record that cannot be opened or read is an
/// error naming it (evidence is never skipped silently).
pub fn list(repo: &Repository) -> Result<Vec<Record>, crate::repo::Error> {
    evidence::read_all(repo, Kind::Drill)
}
