//! Format constants shared by every stored object: the version, object types, where each kind of
//! object lives in the store, and the envelope of whole-file objects.
//!
//! docs/FORMAT.md is the specification; this module is its single source of truth in code.

use super::Error;
use super::crypto::{Id, MasterKey};

/// The repository format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Whole-file objects (config, index, snapshot, lock) start with these three bytes and the version.
pub const MAGIC: &[u8; 3] = b"DRC";
const AD_PREFIX: &[u8] = b"drctl";

/// What a sealed object is. Bound into every object's associated data, so one kind can never be
/// presented as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectType {
    Config = 1,
    Chunk = 2,
    PackHeader = 3,
    Index = 4,
    Snapshot = 5,
    Lock = 6,
    KeySlot = 7,
    Wal = 8,
    PrunePlan = 9,
    Audit = 10,
    Drill = 11,
    Job = 12,
    Check = 13,
    WalMap = 14,
}

/// Associated data: "drctl" || version || type || binding (the object's id or name where it has
/// one before sealing; empty for objects named by the hash of their sealed bytes).
pub fn associated_data(kind: ObjectType, binding: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(AD_PREFIX.len() + 2 + binding.len());
    ad.extend_from_slice(AD_PREFIX);
    ad.push(VERSION);
    ad.push(kind as u8);
    ad.extend_from_slice(binding);
    ad
}

pub const CONFIG_KEY: &str = "config";
pub const KEYS_DIR: &str = "keys/";
pub const PACKS_DIR: &str = "packs/";
pub const INDEX_DIR: &str = "index/";
pub const SNAPSHOTS_DIR: &str = "snapshots/";
pub const LOCKS_DIR: &str = "locks/";

/// Packs are spread over 256 folders by the first byte of their id, keeping folders small.
pub fn pack_key(id: Id) -> String {
    let hex = id.to_hex();
    format!("{PACKS_DIR}{}/{hex}", &hex[..2])
}

/// The id a store key names, if it is one of ours (`packs/ab/<hex>`, `index/<hex>`, …).
pub fn id_of_key(key: &str) -> Option<Id> {
    Id::from_hex(key.rsplit('/').next()?)
}

/// Seals a whole-file object: MAGIC || VERSION || type || sealed(plaintext).
pub fn seal_file(key: &MasterKey, kind: ObjectType, binding: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + 64);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&key.seal(&associated_data(kind, binding), plaintext));
    out
}

/// Reads the clear header of a whole-file object and refuses versions this build cannot read.
pub fn check_header(bytes: &[u8], kind: ObjectType, object: &str) -> Result<(), Error> {
    if bytes.len() < 5 || &bytes[..3] != MAGIC {
        return Err(Error::corrupt(object, "it does not start with the drctl object header"));
    }
    if bytes[3] > VERSION {
        return Err(Error::UnsupportedVersion { found: bytes[3], supported: VERSION });
    }
    if bytes[3] != VERSION || bytes[4] != kind as u8 {
        return Err(Error::corrupt(object, format!("its header says version {} type {}", bytes[3], bytes[4])));
    }
    Ok(())
}

/// Opens a whole-file object sealed by [`seal_file`]; `object` names it in errors.
pub fn open_file(
    key: &MasterKey,
    kind: ObjectType,
    binding: &[u8],
    bytes: &[u8],
    object: &str,
) -> Result<Vec<u8>, Error> {
    check_header(bytes, kind, object)?;
    key.open(&associated_data(kind, binding), &bytes[5..])
        .map_err(|_| Error::corrupt(object, "it fails authentication (changed, truncated or not ours)"))
}
