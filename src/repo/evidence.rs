//! Evidence kept in the repository beside what it speaks of: runbook audit records, drill
//! records, policy job records and check records (what reports are built from). Each record is one sealed object whose associated data binds its full store key, so
//! a record can be neither edited nor moved to another place. Records are encrypted and
//! authenticated, travel with `copy`, are counted (and with `--read-data` opened) by `check`,
//! and are never deleted by `forget` or `prune`: evidence outlives the backups it speaks of.

use super::format::{self, ObjectType};
use super::{Error, Repository};

/// The kinds of evidence, each under its own folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `audit/<run>/<seq>`: one line of a runbook run's audit log.
    Audit,
    /// `drills/<id>`: the record of one DR drill.
    Drill,
    /// `jobs/<id>`: what one policy job did (sources, copies, retention).
    Job,
    /// `checks/<id>`: the outcome of one `check` of the repository.
    Check,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Audit, Kind::Drill, Kind::Job, Kind::Check];

    /// The folder its records live in.
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Audit => "audit/",
            Kind::Drill => "drills/",
            Kind::Job => "jobs/",
            Kind::Check => "checks/",
        }
    }

    pub fn object_type(self) -> ObjectType {
        match self {
            Kind::Audit => ObjectType::Audit,
            Kind::Drill => ObjectType::Drill,
            Kind::Job => ObjectType::Job,
            Kind::Check => ObjectType::Check,
        }
    }

    /// How messages name one record.
    pub fn what(self) -> &'static str {
        match self {
            Kind::Audit => "audit record",
            Kind::Drill => "drill record",
            Kind::Job => "job record",
            Kind::Check => "check record",
        }
    }

    /// Path components of a record's key (`audit/<run>/<seq>`, `drills/<id>`).
    fn depth(self) -> usize {
        match self {
            Kind::Audit => 3,
            Kind::Drill | Kind::Job | Kind::Check => 2,
        }
    }
}

/// The store key of audit record `seq` of run `run` (numbers zero-padded, so keys sort in order).
pub fn audit_key(run: &str, seq: u64) -> String {
    format!("{}{run}/{seq:012}", Kind::Audit.dir())
}

/// The store key of record `id` of a kind kept one object per record (drills, jobs, checks).
pub fn record_key(kind: Kind, id: &str) -> String {
    format!("{}{id}", kind.dir())
}

/// A new record id: the time (`YYYYMMDDTHHMMSSZ`, so keys sort by it) and 8 random hex
/// characters, so records made in the same second do not collide.
pub fn new_id(at: chrono::DateTime<chrono::Utc>) -> String {
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).expect("the system's random source");
    format!("{}-{}", at.format("%Y%m%dT%H%M%SZ"), hex::encode(random))
}

/// A run or drill id: letters, digits and `-` (ids are a start time and random bits, so no two
/// records share a key).
fn check_id(id: &str) -> Result<(), Error> {
    match !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        true => Ok(()),
        false => Err(Error::InvalidRequest(format!("{id:?} is not a record id"))),
    }
}

/// Stores audit record `seq` of run `run`.
pub fn put_audit(repo: &Repository, run: &str, seq: u64, record: &[u8]) -> Result<(), Error> {
    check_id(run)?;
    put(repo, Kind::Audit, &audit_key(run, seq), record)
}

/// Stores record `id` of a kind kept one object per record (not audit records: see
/// [`put_audit`]).
pub fn put_record(repo: &Repository, kind: Kind, id: &str, record: &[u8]) -> Result<(), Error> {
    debug_assert!(kind != Kind::Audit);
    check_id(id)?;
    put(repo, kind, &record_key(kind, id), record)
}

fn put(repo: &Repository, kind: Kind, key: &str, record: &[u8]) -> Result<(), Error> {
    let sealed = format::seal_file(repo.key(), kind.object_type(), key.as_bytes(), record);
    Ok(repo.store().put(key, &sealed)?)
}

/// The keys of every record of `kind`, sorted (audit records by run, then number; drill records
/// by id, which starts with the drill's start time).
pub fn list(repo: &Repository, kind: Kind) -> Result<Vec<String>, Error> {
    let mut keys: Vec<String> = repo
        .store()
        .list(kind.dir())?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.split('/').count() == kind.depth())
        .collect();
    keys.sort();
    Ok(keys)
}

/// The record of `kind` at `key`, authenticated under that key.
pub fn read(repo: &Repository, kind: Kind, key: &str) -> Result<Vec<u8>, Error> {
    let sealed = repo.store().get(key).map_err(|e| Error::missing_or(e, key))?;
    format::open_file(repo.key(), kind.object_type(), key.as_bytes(), &sealed, &format!("{} {key}", kind.what()))
}

/// Every record of `kind` (not audit records, which `runbook audit` reads as chains), parsed as
/// `T`, oldest first; a record that cannot be opened or parsed is an error naming it (evidence is
/// never skipped silently).
pub fn read_all<T: serde::de::DeserializeOwned>(repo: &Repository, kind: Kind) -> Result<Vec<T>, Error> {
    let mut records = Vec::new();
    for key in list(repo, kind)? {
        let bytes = read(repo, kind, &key)?;
        let record = serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupt(&format!("{} {key}", kind.what()), format!("not a {}: {e}", kind.what())))?;
        records.push(record);
    }
    Ok(records)
}
