//! The WAL archive: one sealed object per WAL file at `wal/<timeline>/<name>`, written by
//! `wal-push` (archive_command) and read by `wal-fetch` (restore_command). The object's
//! associated data binds the file name, so a segment can never be served under another name.
//! Pushing a file that is already archived with the same content succeeds (PostgreSQL retries
//! after a crash); with different content it fails loudly.
//!
//! The archive also refuses a timeline history file that forks its parent timeline before the
//! parent's archived end: a restored copy (a test, a drill) archiving here while the original
//! goes on. Recovery to the latest point follows the newest timeline it finds a history file for,
//! so accepting it would silently restore the copy's data instead of the original's. The new
//! primary after a deliberate point-in-time restore names its timeline (`allow_fork`).

use super::format::{self, ObjectType};
use super::pack;
use super::{Error, Repository, wal_map};
use crate::pg::wal::{self as pgwal, WalKind, WalName};
use crate::pg::wal_blocks;
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
    /// Not stored: `still_current` said the file changed under the pusher.
    Abandoned,
}

/// How a WAL file is compressed: a zstd level and how many threads share the work.
#[derive(Debug, Clone, Copy)]
pub struct Compression {
    pub level: i32,
    pub threads: usize,
}

/// Archives one WAL file. `still_current` is asked after the data was read and sealed, just
/// before it is stored: a pusher that cannot be sure the file was not recycled meanwhile (the
/// async worker) abandons it there rather than store a mix of old and new WAL. A history file
/// that forks off its parent's archived past is refused unless its timeline is `allow_fork`.
pub fn push(
    repo: &Repository,
    name: &WalName,
    data: &[u8],
    compression: Compression,
    still_current: &dyn Fn() -> bool,
    allow_fork: Option<u32>,
) -> Result<Pushed, Error> {
    let key = key_of(name);
    if name.kind() == WalKind::History && allow_fork != Some(name.timeline()) {
        check_fork(repo, name, data)?;
    }
    let plaintext = pack::encode_payload_parallel(data, compression.level, compression.threads);
    let sealed = format::seal_file(repo.key(), ObjectType::Wal, name.as_str().as_bytes(), &plaintext);
    if !still_current() {
        return Ok(Pushed::Abandoned);
    }
    // The write is conditional (no request spent on a check first): a name already archived
    // (a retry after a crash, a standby with archive_mode = always, a split brain) is compared
    // instead, and the store decides who wins a race.
    let pushed = if repo.store().put_new(&key, &sealed)? {
        Pushed::Stored(sealed.len() as u64)
    } else {
        match fetch(repo, name)? {
            Some(existing) if existing == data => Pushed::AlreadyArchived,
            _ => return Err(Error::WalConflict { name: name.to_string() }),
        }
    };
    if name.kind() == WalKind::Segment {
        put_block_map(repo, name, data);
    }
    Ok(pushed)
}

/// Stores the block map of a segment just archived (only then: a map always describes the
/// segment archived under its name). Archiving does not depend on it: without a map, the next
/// incremental backup reads the segment instead.
fn put_block_map(repo: &Repository, name: &WalName, data: &[u8]) {
    let scan = wal_blocks::scan_segment(data, |_| {});
    if let Err(e) = wal_map::put(repo, name, &scan) {
        tracing::warn!(wal = %name, error = %e, "archived, but its block map could not be stored");
    }
}

/// Refuses history file `name` (content `data`) when the archive holds a segment of its parent
/// timeline that begins after the fork point. A retry of a history file already archived passes.
fn check_fork(repo: &Repository, name: &WalName, data: &[u8]) -> Result<(), Error> {
    let Some((parent, fork)) = pgwal::fork_point(data) else { return Ok(()) };
    let newest = repo
        .store()
        .list(&format!("{WAL_DIR}{parent:08X}/"))?
        .into_iter()
        .filter_map(|o| WalName::parse(o.key.rsplit('/').next()?))
        .filter(|n| n.kind() == WalKind::Segment && n.timeline() == parent)
        .max();
    let Some(newest) = newest else { return Ok(()) };
    // Segment names need the segment size to become positions: an archived segment's length.
    let Some(segment) = fetch(repo, &newest)? else { return Ok(()) };
    let size = segment.len() as u64;
    let starts = newest.segment_number(0x1_0000_0000 / size.max(1)).map(|n| n * size);
    if !size.is_power_of_two() || starts.is_none_or(|start| start <= fork) {
        return Ok(());
    }
    if fetch(repo, name)?.is_some_and(|existing| existing == data) {
        return Ok(());
    }
    Err(Error::TimelineFork {
        name: name.to_string(),
        parent,
        fork: pgwal::format_lsn(fork),
        newest: newest.to_string(),
    })
}

/// The authenticated plaintext of an archived WAL file (codec byte and payload); `None` when
/// the archive does not hold it.
fn open(repo: &Repository, name: &WalName, object: &str) -> Result<Option<Vec<u8>>, Error> {
    let sealed = match repo.store().get(&key_of(name)) {
        Ok(bytes) => bytes,
        Err(store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    format::open_file(repo.key(), ObjectType::Wal, name.as_str().as_bytes(), &sealed, object).map(Some)
}

/// Reads one archived WAL file; `None` when the archive does not hold it.
pub fn fetch(repo: &Repository, name: &WalName) -> Result<Option<Vec<u8>>, Error> {
    let object = format!("WAL file {name}");
    let Some(plaintext) = open(repo, name, &object)? else { return Ok(None) };
    pack::decode_payload(&plaintext, None).map(Some).map_err(|e| Error::corrupt(&object, e.to_string()))
}

/// Writes one archived WAL file to `out` as it decodes (no buffer the size of a segment); `None`
/// when the archive does not hold it. Everything is authenticated before a byte is written.
pub fn fetch_to(repo: &Repository, name: &WalName, out: &mut impl std::io::Write) -> Result<Option<u64>, Error> {
    let object = format!("WAL file {name}");
    let Some(plaintext) = open(repo, name, &object)? else { return Ok(None) };
    pack::decode_payload_to(&plaintext, out).map(Some).map_err(|e| Error::corrupt(&object, e.to_string()))
}

/// Every archived WAL file with its stored size, sorted by name (timeline, then position).
pub fn list(store: &dyn Store) -> Result<Vec<(WalName, u64)>, Error> {
    list_named(store, WAL_DIR)
}

/// The objects below `dir` named by a WAL file name, with their stored sizes, sorted by name.
pub(super) fn list_named(store: &dyn Store, dir: &str) -> Result<Vec<(WalName, u64)>, Error> {
    let mut all: Vec<(WalName, u64)> = store
        .list(dir)?
        .into_iter()
        .filter_map(|o| WalName::parse(o.key.rsplit('/').next()?).map(|n| (n, o.size)))
        .collect();
    all.sort();
    Ok(all)
}
