//! The WAL archive: one sealed object per WAL file at `wal/<timeline>/<name>`, written by
//! `wal-push` (archive_command) and read by `wal-fetch` (restore_command). The object's
//! associated data binds the file name, so a segment can never be served under another name.
//! Pushing a file that is already archived with the same content succeeds (PostgreSQL retries
//! after a crash); with different content it fails loudly.

use super::format::{self, ObjectType};
use super::pack;
use super::{Error, Repository};
use crate::pg::wal::WalName;
use crate::store::{self, Store};

pub const WAL_DIR: &str = "wal/";

pub fn key_of(name: &WalName) -> String {
    format!("{WAL_DIR}{}/{name}", &name.as_str()[..8])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Newly stored; the stored size in bytes.
    Stored(u64),
    /// Already in the archive with identical content.
    AlreadyArchived,
}

/// Archives one WAL file.
pub fn push(repo: &Repository, name: &WalName, data: &[u8]) -> Result<Pushed, Error> {
    let key = key_of(name);
    if repo.store().exists(&key)? {
        return match fetch(repo, name)? {
            Some(existing) if existing == data => Ok(Pushed::AlreadyArchived),
            _ => Err(Error::WalConflict { name: name.to_string() }),
        };
    }
    let mut compressor = zstd::bulk::Compressor::new(repo.config().compression_level)
        .map_err(|e| Error::InvalidRequest(format!("zstd: {e}")))?;
    let plaintext = pack::encode_payload(data, &mut compressor);
    let sealed = format::seal_file(repo.key(), ObjectType::Wal, name.as_str().as_bytes(), &plaintext);
    repo.store().put(&key, &sealed)?;
    Ok(Pushed::Stored(sealed.len() as u64))
}

/// Reads one archived WAL file; `None` when the archive does not hold it.
pub fn fetch(repo: &Repository, name: &WalName) -> Result<Option<Vec<u8>>, Error> {
    let object = format!("WAL file {name}");
    let sealed = match repo.store().get(&key_of(name)) {
        Ok(bytes) => bytes,
        Err(store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let plaintext = format::open_file(repo.key(), ObjectType::Wal, name.as_str().as_bytes(), &sealed, &object)?;
    pack::decode_payload(&plaintext, None).map(Some).map_err(|e| Error::corrupt(&object, e.to_string()))
}

/// Every archived WAL file with its stored size, sorted by name (timeline, then position).
pub fn list(store: &dyn Store) -> Result<Vec<(WalName, u64)>, Error> {
    let mut all: Vec<(WalName, u64)> = store
        .list(WAL_DIR)?
        .into_iter()
        .filter_map(|o| WalName::parse(o.key.rsplit('/').next()?).map(|n| (n, o.size)))
        .collect();
    all.sort();
    Ok(all)
}
