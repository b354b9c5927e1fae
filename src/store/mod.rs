//! Storage backends: the repository sees only this small trait, so a local directory and S3 (a later
//! backend) are interchangeable without changing callers.

pub mod https;
mod local;
#[cfg(test)]
pub mod recording;
mod s3;

pub use local::LocalStore;
pub use s3::{ObjectLock, S3Options, S3Store};

use std::path::PathBuf;

/// Errors from a storage backend. Each says whether retrying may help, so a retry wrapper can decide.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object {key} does not exist in {location}")]
    NotFound { location: String, key: String },
    #[error("object {key} in {location} is shorter than the range {offset}+{len} read from it")]
    OutOfRange { location: String, key: String, offset: u64, len: u64 },
    #[error("no space left on the device holding {path}")]
    NoSpace { path: PathBuf },
    #[error("permission denied on {path}")]
    PermissionDenied { path: PathBuf },
    #[error("{key} in {location} is under S3 Object Lock retention until {until}: it cannot be deleted before then")]
    Retained { location: String, key: String, until: String },
    #[error("S3 {op} of {key} in {location} failed: {detail}")]
    Remote { location: String, op: &'static str, key: String, detail: String },
    /// A location `open` cannot use as written (a malformed S3 URL, an unreadable storage class).
    #[error("cannot use {location}: {reason}")]
    InvalidLocation { location: String, reason: String },
    /// A `scheme://` no backend of this build serves.
    #[error("repository location {location} is not supported by this build")]
    UnsupportedScheme { location: String },
    #[error("storage I/O error: {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the same call may succeed if tried again (transient faults only).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// One listed object: its key relative to the store root, its size in bytes, and when it was
/// written (the file's mtime, S3's LastModified): reports date WAL segments and copies by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// A flat key/value object store. Keys are `/`-separated relative names such as `packs/ab/abcd…`.
///
/// Contract every backend keeps (checked by one conformance suite, tests/it/store.rs):
/// - `put` and `create`…`commit` are atomic: readers see the old state or the whole new object, never a part of it, even
///   after a crash; when `put` returns, the object is durable.
/// - objects are immutable in practice: the repository never overwrites a key with other content.
/// - `get_range` of a range past the end is an error, not a short read.
pub trait Store: Send + Sync {
    /// A human-readable location for messages (a path or URL).
    fn location(&self) -> &str;
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;
    /// Starts a large object written piece by piece (a pack), so it never sits in memory whole.
    /// Nothing is visible under `key` until [`ObjectWriter::commit`]; dropping the writer
    /// without committing leaves no trace.
    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>>;
    /// Like `put`, but only if nothing is stored under `key` yet, decided by the store itself
    /// (no window between a check and the write): `false` when an object was already there,
    /// which is left as it was.
    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool>;
    /// Like `put`, taking the data by value; true when the store itself proved that what it
    /// holds is what was sent (S3: the upload's CRC32C, computed before sending and returned by
    /// the service). False: only reading it back proves it.
    fn put_proven(&self, key: &str, data: Vec<u8>) -> Result<bool> {
        self.put(key, &data)?;
        Ok(false)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>>;
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Every object whose key starts with `prefix` (a folder such as `"packs/"`), in no set order.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Deleting a key that holds nothing succeeds (a command run again after a kill finds some
    /// of its deletions done).
    fn delete(&self, key: &str) -> Result<()>;
    fn exists(&self, key: &str) -> Result<bool>;
    /// Removes what writes started before `before` and never finished left behind (a killed
    /// process's temporary files, its incomplete multipart uploads); returns how many. Callers
    /// pick `before` so that no write still running is that old.
    fn remove_abandoned(&self, before: std::time::SystemTime) -> Result<usize>;
    /// Whether each request costs a network round trip (and a fee): callers then read ahead.
    fn is_remote(&self) -> bool {
        false
    }
    /// The S3 Object Lock retention of the object at `key`, if the store has such a thing and
    /// the object has one: its mode (`GOVERNANCE`, `COMPLIANCE`) and until when.
    fn retention(&self, _key: &str) -> Result<Option<Retention>> {
        Ok(None)
    }
}

/// An object's Object Lock retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub mode: String,
    pub until: chrono::DateTime<chrono::Utc>,
}

/// An object being written; see [`Store::create`].
pub trait ObjectWriter: Send {
    fn write(&mut self, data: &[u8]) -> Result<()>;
    /// Makes the object durable and visible under its key, atomically.
    fn commit(self: Box<Self>) -> Result<()>;
}

/// Opens the store a repository location names: `s3://bucket/prefix` or a local directory. Any
/// other scheme gets a clear error rather than being mistaken for a relative path.
pub fn open(location: &str, s3: &S3Options) -> Result<Box<dyn Store>> {
    if location.starts_with("s3://") {
        let store = S3Store::open(location, s3)
            .map_err(|reason| Error::InvalidLocation { location: location.to_string(), reason })?;
        return Ok(Box::new(store));
    }
    if location.contains("://") {
        return Err(Error::UnsupportedScheme { location: location.to_string() });
    }
    Ok(Box::new(LocalStore::new(location)))
}
