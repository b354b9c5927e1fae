//! Runbook audit records kept in the repository, beside what they recovered: one sealed object
//! per record at `audit/<run>/<seq>`, its associated data binding that key, so a record can be
//! neither edited nor moved to another run or place. The records are the audit log's own lines
//! (hash-chained there); here they are also encrypted and authenticated, travel with `copy`, and
//! are never deleted by `forget` or `prune`: evidence outlives the backups it speaks of.

use super::format::{self, ObjectType};
use super::{Error, Repository};

pub const AUDIT_DIR: &str = "audit/";

/// The store key of record `seq` of run `run` (numbers zero-padded, so keys sort in order).
pub fn key_of(run: &str, seq: u64) -> String {
    format!("{AUDIT_DIR}{run}/{seq:012}")
}

/// Stores one record. Runs are named by the time they started and random bits, and a record's
/// number is its place in the log, so no two records share a key.
pub fn put(repo: &Repository, run: &str, seq: u64, record: &[u8]) -> Result<(), Error> {
    if run.is_empty() || !run.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(Error::InvalidRequest(format!("{run:?} is not a run id")));
    }
    let key = key_of(run, seq);
    let sealed = format::seal_file(repo.key(), ObjectType::Audit, key.as_bytes(), record);
    Ok(repo.store().put(&key, &sealed)?)
}

/// The keys of every record, sorted (by run, then number).
pub fn list(repo: &Repository) -> Result<Vec<String>, Error> {
    let mut keys: Vec<String> =
        repo.store().list(AUDIT_DIR)?.into_iter().map(|o| o.key).filter(|k| k.split('/').count() == 3).collect();
    keys.sort();
    Ok(keys)
}

/// The record at `key`, authenticated under that key.
pub fn read(repo: &Repository, key: &str) -> Result<Vec<u8>, Error> {
    let sealed = repo.store().get(key).map_err(|e| Error::missing_or(e, key))?;
    format::open_file(repo.key(), ObjectType::Audit, key.as_bytes(), &sealed, &format!("audit record {key}"))
}
