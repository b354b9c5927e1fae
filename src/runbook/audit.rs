//! The audit log of runbook runs: one JSON record a line, each holding the BLAKE3 hash of the
//! record before it and its own, so a record altered or removed from the middle breaks the
//! chain `verify` walks.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::repo::Repository;

/// The hash the first record follows.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An audit log opened for appending.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    seq: u64,
    prev: String,
}

impl AuditLog {
    /// Opens (or creates, mode 0600, with its folder) the log at `path`, after the last record.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        let (seq, prev) = match File::open(path) {
            Ok(file) => match BufReader::new(file).lines().map_while(Result::ok).last() {
                Some(line) => {
                    let last: Value = serde_json::from_str(&line).map_err(std::io::Error::other)?;
                    (last["seq"].as_u64().unwrap_or(0), last["hash"].as_str().unwrap_or(GENESIS).to_string())
                }
                None => (0, GENESIS.to_string()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, GENESIS.to_string()),
            Err(e) => return Err(e),
        };
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        Ok(AuditLog { path: path.to_path_buf(), file, seq, prev })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `fields` as the next record, chained to the one before, and syncs it to disk.
    /// Returns the record's number and its line.
    pub fn append(&mut self, fields: Map<String, Value>) -> std::io::Result<(u64, String)> {
        let mut record = fields;
        record.insert("seq".into(), (self.seq + 1).into());
        record.insert("prev".into(), self.prev.clone().into());
        let hash = hash_of(&record);
        record.insert("hash".into(), hash.clone().into());
        let line = serde_json::to_string(&record).map_err(std::io::Error::other)?;
        self.file.write_all(format!("{line}\n").as_bytes())?;
        self.file.sync_data()?;
        self.seq += 1;
        self.prev = hash;
        Ok((self.seq, line))
    }
}

/// Where a run's records go: the local log first, then, encrypted, the repository the run was
/// given. The local log is the record of truth during a run: a repository that cannot take a
/// record (an outage in the middle of a failover) does not stop the recovery; the failure is
/// recorded locally and said once, and no further copies are tried.
pub struct Recorder<'a> {
    log: AuditLog,
    repo: Option<&'a Repository>,
    copying: bool,
}

impl<'a> Recorder<'a> {
    pub fn new(log: AuditLog, repo: Option<&'a Repository>) -> Recorder<'a> {
        Recorder { log, repo, copying: true }
    }

    pub fn path(&self) -> &Path {
        self.log.path()
    }

    /// Appends the record of run `run`; an error is the local log's.
    pub fn append(&mut self, run: &str, fields: Map<String, Value>) -> std::io::Result<()> {
        let (seq, line) = self.log.append(fields.clone())?;
        let Some(repo) = self.repo.filter(|_| self.copying) else { return Ok(()) };
        if let Err(e) = crate::repo::evidence::put_audit(repo, run, seq, line.as_bytes()) {
            self.copying = false;
            let cause = crate::ops::with_causes(&e);
            tracing::warn!("the audit record could not be copied to {}: {cause}", repo.store().location());
            let mut failed = Map::new();
            for key in ["time", "run", "runbook"] {
                if let Some(v) = fields.get(key) {
                    failed.insert(key.into(), v.clone());
                }
            }
            failed.insert("event".into(), "audit-copy-failed".into());
            failed.insert("repository".into(), repo.store().location().into());
            failed.insert("cause".into(), cause.into());
            self.log.append(failed)?;
        }
        Ok(())
    }
}

/// Checks the records stored in a repository: each authenticates under its key (any edit or move
/// fails), holds the hash of its own content, and, within a run, numbered without a gap, follows
/// the record before it. Returns the records in order, or the first that breaks and why.
pub fn verify_stored(repo: &Repository) -> Result<Vec<Map<String, Value>>, String> {
    let keys = crate::repo::evidence::list(repo, crate::repo::evidence::Kind::Audit)
        .map_err(|e| crate::ops::with_causes(&e))?;
    let mut records = Vec::new();
    let mut before: Option<(String, u64, String)> = None;
    for key in keys {
        let bytes = crate::repo::evidence::read(repo, crate::repo::evidence::Kind::Audit, &key)
            .map_err(|e| crate::ops::with_causes(&e))?;
        let record: Map<String, Value> =
            serde_json::from_slice(&bytes).map_err(|e| format!("{key}: not a JSON record: {e}"))?;
        let run = key.split('/').nth(1).unwrap_or_default().to_string();
        let seq = record.get("seq").and_then(Value::as_u64).unwrap_or(0);
        if crate::repo::evidence::audit_key(&run, seq) != key || record.get("run").and_then(Value::as_str) != Some(&run)
        {
            return Err(format!("{key}: holds record {seq} of run {:?}: it was moved", record.get("run")));
        }
        let hash = hash_of(&record);
        if record.get("hash").and_then(Value::as_str) != Some(hash.as_str()) {
            return Err(format!("{key}: its content does not match its hash: it was altered"));
        }
        if let Some((prev_run, prev_seq, prev_hash)) = &before
            && *prev_run == run
            && (seq != prev_seq + 1 || record.get("prev").and_then(Value::as_str) != Some(prev_hash))
        {
            return Err(format!("{key}: does not follow record {prev_seq} of its run: a record was removed"));
        }
        before = Some((run, seq, hash));
        records.push(record);
    }
    Ok(records)
}

/// The hash of a record without its own `hash` field (keys in order: serde_json's map sorts).
fn hash_of(record: &Map<String, Value>) -> String {
    let mut without = record.clone();
    without.remove("hash");
    blake3::hash(serde_json::to_string(&without).expect("a record serializes").as_bytes()).to_hex().to_string()
}

/// Walks the chain: every record's hash is its own and follows the one before, numbered without
/// a gap. Returns the records, or the first line where the chain breaks and why.
pub fn verify(path: &Path) -> Result<Vec<Map<String, Value>>, String> {
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut records = Vec::new();
    let mut prev = GENESIS.to_string();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| format!("line {n}: cannot be read: {e}"))?;
        let record: Map<String, Value> =
            serde_json::from_str(&line).map_err(|e| format!("line {n}: not a JSON record: {e}"))?;
        if record.get("seq").and_then(Value::as_u64) != Some(n as u64) {
            return Err(format!(
                "line {n}: numbered {:?}, not {n}: a record was removed or inserted",
                record.get("seq")
            ));
        }
        if record.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
            return Err(format!("line {n}: does not follow the record before it: a record was removed or replaced"));
        }
        let hash = hash_of(&record);
        if record.get("hash").and_then(Value::as_str) != Some(hash.as_str()) {
            return Err(format!("line {n}: its content does not match its hash: it was altered"));
        }
        prev = hash;
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("step".into(), step.into());
        m
    }

    #[test]
    fn the_chain_holds_and_breaks_where_it_was_touched() {
        let dir = std::env::temp_dir().join(format!("drctl-audit-{}", std::process::id()));
        let path = dir.join("audit.jsonl");
        let _ = std::fs::remove_dir_all(&dir);
        for step in ["a", "b"] {
            AuditLog::open(&path).unwrap().append(record(step)).unwrap();
        }
        AuditLog::open(&path).unwrap().append(record("c")).unwrap();
        assert_eq!(verify(&path).unwrap().len(), 3);

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        assert!(verify(&path).unwrap_err().contains("line 2"), "a removed record is found");
        std::fs::write(&path, text.replace("\"step\":\"b\"", "\"step\":\"x\"")).unwrap();
        assert!(verify(&path).unwrap_err().contains("altered"), "an edited record is found");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
