//! `check` of a repository, with its outcome kept as a check record (`checks/<id>`), so a report
//! can show which checks ran, whether they read every byte, and what they found.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::progress::Progress;
use crate::repo::evidence::{self, Kind};
use crate::repo::{self, Repository, check};

/// What a check record holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub started: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    /// Whether every pack, WAL file and record was read and authenticated (`--read-data`).
    pub read_data: bool,
    pub snapshots: usize,
    pub packs: usize,
    pub wal_files: usize,
    pub bytes_read: u64,
    /// The damaged objects found, each with the reason.
    pub damaged: Vec<String>,
}

/// A check's report, and why its record could not be stored when it could not (a check still
/// reports what it found when the repository refuses writes, e.g. to read-only credentials).
pub struct Checked {
    pub report: check::Report,
    pub record_error: Option<repo::Error>,
}

/// Checks `repo` (reading all data with `read_data`) under the caller's lock, then stores the
/// check's record in it.
pub fn check(repo: &Repository, read_data: bool, progress: &dyn Progress) -> Result<Checked, repo::Error> {
    let started = Utc::now();
    let report = check::check(repo, read_data, progress)?;
    let record = Record {
        id: evidence::new_id(started),
        started,
        ended: Utc::now(),
        read_data,
        snapshots: report.snapshots,
        packs: report.packs,
        wal_files: report.wal_files,
        bytes_read: report.bytes_read,
        damaged: report.problems.iter().map(|p| format!("{}: {}", p.object, p.reason)).collect(),
    };
    let json = serde_json::to_vec(&record).expect("check records serialize");
    let record_error = evidence::put_record(repo, Kind::Check, &record.id, &json).err();
    Ok(Checked { report, record_error })
}

/// Every check record in `repo`, oldest first.
pub fn records(repo: &Repository) -> Result<Vec<Record>, repo::Error> {
    evidence::read_all(repo, Kind::Check)
}
