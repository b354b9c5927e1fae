//! Evidence kept in the repository beside what it speaks of: runbook audit records and drill
//! records. Each record is one sealed object whose associated data binds its full store key, so
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
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Audit, Kind::Drill];

    /// The folder its records live in.
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Audit => "audit/",
            Kind::Drill => "drills/",
        }
    }

    pub fn object_type(self) -> ObjectType {
        match self {
            Kind::Audit => ObjectType::Audit,
            Kind::Drill => ObjectType::Drill,
        }
    }

    /// How messages name one record.
    pub fn what(self) -> &'static str {
        match self {
            Kind::Audit => "audit record",
            Kind::Drill => "drill record",
        }
    }

    /// Path components of a record's key (`audit/<run>/<seq>`, `drills/<id>`).
    fn depth(self) -> usize {
        match self {
            Kind::Audit => 3,
            Kind::Drill => 2,
        }
    }
}

/// The store key of audit record `seq` of run `run` (numbers zero-padded, so keys sort in order).
pub fn audit_key(run: &str, seq: u64) -> String {
    format!("{}{run}/{seq:012}", Kind::Audit.dir())
}

/// The store key of the drill record `id`.
pub fn drill_key(id: &str) -> String {
    format!("{}{id}", Kind::Drill.dir())
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

/// Stores the record of drill `id`.
pub fn put_drill(repo: &Repository, id: &str, record: &[u8]) -> Result<(), Error> {
    check_id(id)?;
    put(repo, Kind::Drill, &drill_key(id), record)
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
