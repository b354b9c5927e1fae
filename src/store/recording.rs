//! For tests: a local store that calls itself remote (so callers behave as they do on S3) and
//! records every read, to hold them to what they download.

use std::sync::Mutex;

use super::{LocalStore, ObjectInfo, ObjectWriter, Result, Store};

/// One read: the key, the range (`None` for a whole object) and whether a thread without a
/// name (a worker, not the test's own thread) made it.
#[derive(Debug, Clone)]
pub struct Read {
    pub key: String,
    pub range: Option<(u64, u64)>,
    pub by_worker: bool,
}

pub struct RecordingStore {
    inner: LocalStore,
    pub reads: Mutex<Vec<Read>>,
}

impl RecordingStore {
    pub fn new(dir: impl AsRef<std::path::Path>) -> RecordingStore {
        RecordingStore { inner: LocalStore::new(dir), reads: Mutex::default() }
    }

    /// The reads since the last call, of keys starting with `prefix`.
    pub fn take_reads(&self, prefix: &str) -> Vec<Read> {
        let reads = std::mem::take(&mut *self.reads.lock().expect("poisoned"));
        reads.into_iter().filter(|r| r.key.starts_with(prefix)).collect()
    }

    fn record(&self, key: &str, range: Option<(u64, u64)>) {
        let by_worker = std::thread::current().name().is_none();
        self.reads.lock().expect("poisoned").push(Read { key: key.to_string(), range, by_worker });
    }
}

impl Store for RecordingStore {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.inner.put(key, data)
    }
    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        self.inner.create(key)
    }
    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool> {
        self.inner.put_new(key, data)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.record(key, None);
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.record(key, Some((offset, len)));
        self.inner.get_range(key, offset, len)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }
    fn exists(&self, key: &str) -> Result<bool> {
        self.inner.exists(key)
    }
    fn remove_abandoned(&self, before: std::time::SystemTime) -> Result<usize> {
        self.inner.remove_abandoned(before)
    }
    fn is_remote(&self) -> bool {
        true
    }
}
