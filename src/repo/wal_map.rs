//! WAL block maps: for each archived WAL segment, which relation blocks its records change (its
//! [`SegmentScan`]), sealed at `walmap/<timeline>/<name>` beside the segment. An incremental
//! backup reads the maps between its parent's start and its own instead of the WAL itself: a few
//! kilobytes per segment, where the segment is 16 MiB.
//!
//! A map is an aid, never a source of restored data: a missing or damaged one makes the next
//! incremental read more, not restore less. It is bound to its segment's name, and it carries the
//! system identifier and start of the WAL it was read from, which the reader checks.

use std::collections::BTreeSet;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::format::{self, ObjectType};
use super::{Error, Repository};
use crate::pg::wal::WalName;
use crate::pg::wal_blocks::{BlockRef, Continuation, RelFork, SegmentScan, Stopped, Tail, Unvouched};
use crate::store::{self, Store};

pub const MAP_DIR: &str = "walmap/";
/// The stored layout's version; a map of another version is not read (the WAL is, instead).
const MAP_VERSION: u32 = 1;
/// More block references than any segment can hold (each takes at least 12 bytes of WAL in a
/// segment of at most 1 GiB): a map claiming more is damaged.
const MOST_BLOCKS: u64 = 1 << 27;

pub fn key_of(name: &WalName) -> String {
    format!("{MAP_DIR}{}/{name}", &name.as_str()[..8])
}

/// One relation fork's changed blocks as stored: tablespace, database, relation, fork, and runs
/// of blocks (first, count).
type ForkRuns = (u32, u32, u32, u8, Vec<(u32, u32)>);

/// A map as stored: blocks as runs per relation fork, carried record parts in base64.
#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    system_identifier: u64,
    start: u64,
    major: u32,
    blocks: Vec<ForkRuns>,
    /// Relations created or truncated: `[tablespace, database, relation]`.
    relations: Vec<(u32, u32, u32)>,
    /// Why any file may have changed, if a record says so.
    everything: Vec<String>,
    stopped: Option<(u64, String)>,
    /// The continuation the segment starts with: bytes still to come, bytes held.
    head: Option<(u32, String)>,
    /// The record the segment does not finish: its LSN, length and bytes held.
    tail: Option<(u64, u32, String)>,
    switched: bool,
}

fn encode(scan: &SegmentScan) -> Vec<u8> {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut blocks: Vec<ForkRuns> = Vec::new();
    for b in &scan.blocks {
        let f = b.file;
        match blocks.last_mut() {
            Some(last) if (last.0, last.1, last.2, last.3) == (f.spc, f.db, f.rel, f.fork) => {
                let run = last.4.last_mut().expect("a fork is listed with its first run");
                if u64::from(run.0) + u64::from(run.1) == u64::from(b.block) {
                    run.1 += 1;
                } else {
                    last.4.push((b.block, 1));
                }
            }
            _ => blocks.push((f.spc, f.db, f.rel, f.fork, vec![(b.block, 1)])),
        }
    }
    let mut relations = Vec::new();
    let mut everything = Vec::new();
    for u in &scan.unvouched {
        match u {
            Unvouched::Relation { spc, db, rel } => relations.push((*spc, *db, *rel)),
            Unvouched::Everything(why) => everything.push(why.clone()),
        }
    }
    let stored = Stored {
        version: MAP_VERSION,
        system_identifier: scan.system_identifier,
        start: scan.start,
        major: scan.major,
        blocks,
        relations,
        everything,
        stopped: scan.stopped.as_ref().map(|s| (s.at, s.why.clone())),
        head: scan.head.as_ref().map(|h| (h.remaining, b64(&h.bytes))),
        tail: scan.tail.as_ref().map(|t| (t.lsn, t.total, b64(&t.bytes))),
        switched: scan.switched,
    };
    serde_json::to_vec(&stored).expect("a map serializes")
}

fn decode(json: &[u8]) -> Result<SegmentScan, String> {
    let stored: Stored = serde_json::from_slice(json).map_err(|e| format!("it is not a block map: {e}"))?;
    if stored.version != MAP_VERSION {
        return Err(format!("it is a block map of version {}, not {MAP_VERSION}", stored.version));
    }
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| e.to_string());
    let mut blocks = BTreeSet::new();
    let mut count = 0u64;
    for (spc, db, rel, fork, runs) in stored.blocks {
        let file = RelFork { spc, db, rel, fork };
        for (first, len) in runs {
            count += u64::from(len);
            if count > MOST_BLOCKS || first.checked_add(len).is_none() {
                return Err("it lists more blocks than a segment can change".into());
            }
            blocks.extend((first..first + len).map(|block| BlockRef { file, block }));
        }
    }
    let mut unvouched: Vec<Unvouched> =
        stored.relations.into_iter().map(|(spc, db, rel)| Unvouched::Relation { spc, db, rel }).collect();
    unvouched.extend(stored.everything.into_iter().map(Unvouched::Everything));
    Ok(SegmentScan {
        start: stored.start,
        major: stored.major,
        system_identifier: stored.system_identifier,
        blocks,
        unvouched,
        head: match stored.head {
            Some((remaining, bytes)) => Some(Continuation { remaining, bytes: b64(&bytes)? }),
            None => None,
        },
        tail: match stored.tail {
            Some((lsn, total, bytes)) => Some(Tail { lsn, total, bytes: b64(&bytes)? }),
            None => None,
        },
        switched: stored.switched,
        stopped: stored.stopped.map(|(at, why)| Stopped { at, why }),
    })
}

/// Seals and stores segment `name`'s map (replacing any: a map is a function of the segment).
pub fn put(repo: &Repository, name: &WalName, scan: &SegmentScan) -> Result<(), Error> {
    let plaintext = super::pack::encode_payload_parallel(&encode(scan), 3, 1);
    let sealed = format::seal_file(repo.key(), ObjectType::WalMap, name.as_str().as_bytes(), &plaintext);
    Ok(repo.store().put(&key_of(name), &sealed)?)
}

/// Segment `name`'s map; `None` when there is none. A map that fails authentication or does
/// not parse is an error naming it.
pub fn get(repo: &Repository, name: &WalName) -> Result<Option<SegmentScan>, Error> {
    let object = format!("WAL block map {name}");
    let sealed = match repo.store().get(&key_of(name)) {
        Ok(bytes) => bytes,
        Err(store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let plaintext = format::open_file(repo.key(), ObjectType::WalMap, name.as_str().as_bytes(), &sealed, &object)?;
    let json = super::pack::decode_payload(&plaintext, None).map_err(|e| Error::corrupt(&object, e.to_string()))?;
    decode(&json).map(Some).map_err(|e| Error::corrupt(&object, e))
}

/// Every stored map's segment name with its stored size, sorted.
pub fn list(store: &dyn Store) -> Result<Vec<(WalName, u64)>, Error> {
    super::wal::list_named(store, MAP_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_survives_its_stored_form() {
        let file = RelFork { spc: 1663, db: 5, rel: 16384, fork: 0 };
        let other = RelFork { fork: 2, ..file };
        let blocks = [0, 1, 2, 7, 9, 10, u32::MAX - 1]
            .into_iter()
            .map(|block| BlockRef { file, block })
            .chain([BlockRef { file: other, block: 3 }])
            .collect();
        let scan = SegmentScan {
            start: 0x5_0000_0000,
            major: 17,
            system_identifier: 7_412_345_678_901_234_567,
            blocks,
            unvouched: vec![
                Unvouched::Relation { spc: 1663, db: 5, rel: 16400 },
                Unvouched::Everything("a database was created".into()),
            ],
            head: Some(Continuation { remaining: 40, bytes: vec![1, 2, 3] }),
            tail: Some(Tail { lsn: 0x5_00FF_FFC0, total: 300, bytes: vec![0, 255, 7] }),
            switched: false,
            stopped: Some(Stopped { at: 0x5_0000_1000, why: "the WAL ends".into() }),
        };
        assert_eq!(decode(&encode(&scan)), Ok(scan));
    }

    #[test]
    fn an_impossible_map_is_refused() {
        let mut stored: serde_json::Value = serde_json::from_slice(&encode(&SegmentScan::default())).unwrap();
        stored["blocks"] = serde_json::json!([[1663, 5, 16384, 0, [[0, 4_000_000_000u32]]]]);
        assert!(decode(&serde_json::to_vec(&stored).unwrap()).unwrap_err().contains("more blocks"));
        stored["blocks"] = serde_json::json!([[1663, 5, 16384, 0, [[4_000_000_000u32, 400_000_000]]]]);
        assert!(decode(&serde_json::to_vec(&stored).unwrap()).is_err());
        stored["version"] = serde_json::json!(2);
        assert!(decode(&serde_json::to_vec(&stored).unwrap()).unwrap_err().contains("version 2"));
    }
}
