//! The repository: encrypted, content-addressed, deduplicated storage of snapshots.
//!
//! Write order is packs, then index, then snapshot manifest; read order is the reverse. So a
//! snapshot that can be listed has everything it needs, and a crash at any point leaves at worst
//! unreferenced packs, which `check` reports as harmless and prune reclaims.

pub mod base_cache;
pub mod check;
pub mod chunker;
pub mod config;
pub mod copy;
pub(crate) mod crypto;
pub mod evidence;
pub mod forget;
pub(crate) mod format;
pub(crate) mod index;
pub mod key;
pub mod lock;
pub(crate) mod pack;
pub mod prune;
mod readahead;
pub mod repair_index;
pub mod repair_snapshots;
pub mod retention;
pub mod snapshot;
pub mod tree;
pub mod wal;
pub mod wal_map;
pub mod waves;
pub mod writer;

use std::sync::Arc;

use crate::store::{self, Store};
use chunker::{Chunker, Chunking};
use config::Config;
pub use crypto::Id;
use crypto::MasterKey;
use format::ObjectType;

/// What can go wrong at the repository level. Each variant carries the facts a message needs;
/// `crate::error` adds the hint and the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{location} is not a drctl repository (no drctl config object)")]
    NotARepository { location: String },
    #[error("{location} already exists and is not empty")]
    AlreadyExists { location: String },
    #[error("{location} holds other data: it is neither empty nor a copy of the source repository")]
    NotACopyTarget { location: String },
    #[error("the key file {} already exists", path.display())]
    KeyFileExists { path: std::path::PathBuf },
    #[error("the repository uses format version {found}; this drctl reads version {supported} and older")]
    UnsupportedVersion { found: u8, supported: u8 },
    #[error("no password given")]
    NoPassword,
    #[error("the passphrase is empty")]
    EmptyPassphrase,
    #[error("wrong password or key file: no key slot of {location} opens with it")]
    WrongPassword { location: String },
    #[error("{object} is damaged: {reason}")]
    Corrupt { object: String, reason: String },
    #[error("{object} is missing from the repository")]
    Missing { object: String },
    #[error("repository {location} is locked: {holder}")]
    Locked { location: String, holder: String },
    #[error("no snapshot matches {query:?}")]
    SnapshotNotFound { query: String },
    #[error("{query:?} is not a snapshot id: give `latest` or at least 4 hex characters of an id")]
    BadSnapshotQuery { query: String },
    #[error("{count} snapshots match {query:?}")]
    AmbiguousSnapshot { query: String, count: usize },
    #[error("the repository holds no snapshots")]
    NoSnapshots,
    #[error("check found {count} damaged object(s)")]
    Damaged { count: usize },
    #[error("WAL file {name} is already archived with different content")]
    WalConflict { name: String },
    #[error(
        "timeline history file {name} starts a timeline that leaves timeline {parent} at {fork}, but the archive \
         holds timeline {parent}'s WAL past that point (up to {newest}): the cluster archiving it was restored from \
         this archive while the original went on, and a restore of the latest point would follow it; it was not \
         archived"
    )]
    TimelineFork { name: String, parent: u32, fork: String, newest: String },
    /// KMS would not wrap or unwrap the master key; the service's own error, which says why.
    #[error("{0}")]
    Kms(key::KmsFailure),
    #[error(
        "prune refused: {count} chunk(s) that kept snapshots use are in no index (an index file is lost or damaged), \
         so their packs look unused"
    )]
    Unindexed { count: usize },
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A PostgreSQL step of a backup or restore (the repository layer passes it through).
    #[error(transparent)]
    Pg(#[from] crate::pg::Error),
}

impl Error {
    /// Whether this is damage to stored data (an object missing or failing verification), as
    /// opposed to an outage, a lock or a problem of the caller's.
    pub fn is_damage(&self) -> bool {
        matches!(self, Error::Corrupt { .. } | Error::Missing { .. })
    }

    pub fn corrupt(object: &str, reason: impl Into<String>) -> Error {
        Error::Corrupt { object: object.to_string(), reason: reason.into() }
    }

    /// A store error while reading `object`: "missing" when the object is not there, "damaged"
    /// when it is shorter than its record says.
    pub fn missing_or(err: store::Error, object: &str) -> Error {
        match err {
            store::Error::NotFound { .. } => Error::Missing { object: object.to_string() },
            store::Error::OutOfRange { offset, len, .. } => {
                Error::corrupt(object, format!("it ends before {offset}+{len}, where a chunk should be (truncated?)"))
            }
            other => Error::Store(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Settings chosen at `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub compression_level: i32,
    pub pack_size: u64,
    pub chunking: Chunking,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            compression_level: config::DEFAULT_COMPRESSION_LEVEL,
            pack_size: config::DEFAULT_PACK_SIZE,
            chunking: Chunking::default(),
        }
    }
}

/// An open repository: store, master key (and the key slot that opened it) and config.
pub struct Repository {
    store: Arc<dyn Store>,
    key: MasterKey,
    slot: Id,
    config: Config,
    /// For remote stores: windows of packs read ahead of single-chunk reads.
    readahead: Option<readahead::ReadAhead>,
    /// How long taking a lock waits for a conflicting one to go.
    lock_wait: std::time::Duration,
}

impl Repository {
    /// Creates a new repository in an empty store.
    pub fn init(store: Arc<dyn Store>, secret: &key::Secret, options: &InitOptions) -> Result<Repository> {
        if store.exists(format::CONFIG_KEY)? || !store.list("")?.is_empty() {
            return Err(Error::AlreadyExists { location: store.location().to_string() });
        }
        let key = MasterKey::generate();
        let mut id = [0u8; 32];
        getrandom::fill(&mut id).expect("the OS random source works");
        let config = Config {
            version: format::VERSION,
            id: hex::encode(id),
            created: chrono::Utc::now(),
            chunking: options.chunking,
            compression_level: options.compression_level,
            pack_size: options.pack_size,
        };
        let slot = key::add_slot(store.as_ref(), &key, secret)?;
        // The config goes last: until it exists, the folder is not a repository.
        let json = serde_json::to_vec(&config).expect("config serializes");
        let sealed = format::seal_file(&key, ObjectType::Config, format::CONFIG_KEY.as_bytes(), &json);
        store.put(format::CONFIG_KEY, &sealed)?;
        Ok(Repository::assemble(store, key, slot, config))
    }

    /// Creates an empty copy of `source` in an empty store: the same master key and config (so
    /// objects copied byte for byte open in it), under a key slot of its own.
    /// A copy interrupted between its key slot and its config is taken up again when the slot
    /// opens with `secret` and holds the same master key.
    pub fn init_copy_of(source: &Repository, store: Arc<dyn Store>, secret: &key::Secret) -> Result<Repository> {
        let taken = || Error::NotACopyTarget { location: store.location().to_string() };
        let objects = store.list("")?;
        if store.exists(format::CONFIG_KEY)?
            || objects.iter().any(|o| !o.key.starts_with(format::KEYS_DIR) && !o.key.starts_with(format::LOCKS_DIR))
        {
            return Err(taken());
        }
        let slot = if objects.iter().any(|o| o.key.starts_with(format::KEYS_DIR)) {
            match key::unlock(store.as_ref(), secret) {
                Ok((key, slot)) if key.to_bytes() == source.key.to_bytes() => slot,
                _ => return Err(taken()),
            }
        } else {
            key::add_slot(store.as_ref(), &source.key, secret)?
        };
        let json = serde_json::to_vec(&source.config).expect("config serializes");
        let sealed = format::seal_file(&source.key, ObjectType::Config, format::CONFIG_KEY.as_bytes(), &json);
        store.put(format::CONFIG_KEY, &sealed)?;
        Ok(Repository::assemble(store, source.key.clone(), slot, source.config.clone()))
    }

    /// Whether `store` holds a repository (its config object), before any key is tried.
    pub fn is_in(store: &dyn Store) -> Result<bool> {
        Ok(store.exists(format::CONFIG_KEY)?)
    }

    /// Opens an existing repository with a passphrase or key file.
    pub fn open(store: Arc<dyn Store>, secret: &key::Secret) -> Result<Repository> {
        let raw = match store.get(format::CONFIG_KEY) {
            Ok(raw) => raw,
            Err(store::Error::NotFound { .. }) => {
                return Err(Error::NotARepository { location: store.location().to_string() });
            }
            Err(e) => return Err(e.into()),
        };
        if !raw.starts_with(format::MAGIC) {
            return Err(Error::NotARepository { location: store.location().to_string() });
        }
        // The version is readable before any key is tried, so a newer format says so clearly.
        format::check_header(&raw, ObjectType::Config, "config")?;
        let (key, slot) = key::unlock(store.as_ref(), secret)?;
        let json = format::open_file(&key, ObjectType::Config, format::CONFIG_KEY.as_bytes(), &raw, "config")?;
        let config = Config::decode(&json)?;
        Ok(Repository::assemble(store, key, slot, config))
    }

    /// Whether the store still holds the config this repository was opened with: false once
    /// its location holds another repository (deleted and initialised again), whose objects
    /// this key cannot seal.
    pub fn still_in_store(&self) -> Result<bool> {
        let raw = match self.store.get(format::CONFIG_KEY) {
            Ok(raw) => raw,
            Err(store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let config = format::open_file(&self.key, ObjectType::Config, format::CONFIG_KEY.as_bytes(), &raw, "config")
            .ok()
            .and_then(|json| Config::decode(&json).ok());
        Ok(config.is_some_and(|c| c.id == self.config.id))
    }

    fn assemble(store: Arc<dyn Store>, key: MasterKey, slot: Id, config: Config) -> Repository {
        let readahead = store.is_remote().then(readahead::ReadAhead::default);
        Repository { store, key, slot, config, readahead, lock_wait: std::time::Duration::ZERO }
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn shared_store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// A MAC of `data` under the repository's report key (see `MasterKey::report_mac`).
    pub fn report_mac(&self, data: &[u8]) -> [u8; 32] {
        self.key.report_mac(data)
    }

    /// The master key, for the modules of the repository only: callers ask for what it does.
    pub(in crate::repo) fn key(&self) -> &MasterKey {
        &self.key
    }

    /// The key slot this repository was opened with.
    pub fn slot(&self) -> Id {
        self.slot
    }

    /// Every key slot, by id.
    pub fn key_slots(&self) -> Result<Vec<(Id, key::KeySlot)>> {
        key::list(self.store())
    }

    /// Adds a key slot that `secret` opens.
    pub fn add_key_slot(&self, secret: &key::Secret) -> Result<Id> {
        key::add_slot(self.store(), &self.key, secret)
    }

    /// Replaces the slots `old` opens (the one this repository was opened with, and any twin)
    /// by one `new` opens; they go only once the new one is proven to open the repository.
    /// Run again after an interruption that left both, it reuses the new slot already there: no
    /// slot of the old secret survives, and no twin of the new one is made (a twin would keep
    /// the secret working after the next rotation retired one of them). Returns the new slot.
    /// A KMS secret opens every KMS slot its credentials may use, so for KMS only the slot this
    /// repository was opened with is retired, and a new slot is always made.
    pub fn rotate_key_slot(&self, old: &key::Secret, new: &key::Secret) -> Result<Id> {
        let opened_by = |secret: &key::Secret| match secret {
            key::Secret::Kms(..) => Ok(Vec::new()),
            _ => key::slots_opened_by(self.store(), secret, &self.key),
        };
        let id = match opened_by(new)?.first() {
            Some(&id) => id,
            None => {
                let id = self.add_key_slot(new)?;
                key::verify_slot(self.store(), id, new, &self.key)?;
                id
            }
        };
        let retired = match old {
            key::Secret::Kms(..) => vec![self.slot],
            _ => opened_by(old)?,
        };
        for retired in retired {
            if retired != id {
                key::remove(self.store(), retired)?;
            }
        }
        Ok(id)
    }

    /// Removes the one key slot whose id starts with `query` (never the last slot).
    pub fn remove_key_slot(&self, query: &str) -> Result<Id> {
        let prefix = query.to_ascii_lowercase();
        let matches: Vec<Id> =
            self.key_slots()?.into_iter().map(|(id, _)| id).filter(|id| id.to_hex().starts_with(&prefix)).collect();
        let [id] = matches.as_slice() else {
            return Err(Error::InvalidRequest(format!(
                "{} key slots match {query:?}; see `drctl key list`",
                matches.len()
            )));
        };
        key::remove(self.store(), *id)?;
        Ok(*id)
    }

    /// Every snapshot that opens, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(Id, snapshot::Snapshot)>> {
        snapshot::load_all(self.store(), &self.key)
    }

    /// Writes a snapshot manifest; what it names must be stored already (a snapshot appears only
    /// once all it needs is there).
    pub fn save_snapshot(&self, snapshot: &snapshot::Snapshot) -> Result<Id> {
        snapshot::save(self.store(), &self.key, snapshot)
    }

    /// The snapshot `query` names: `latest`, or a unique prefix of its id.
    pub fn find_snapshot(&self, query: &str) -> Result<(Id, snapshot::Snapshot)> {
        snapshot::find(self.store(), &self.key, query)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The chunker for generic streams (and trees) in this repository.
    pub fn cdc(&self) -> Chunker {
        Chunker::Cdc { params: self.config.chunking, seed: self.key.chunker_seed() }
    }

    /// Lets lock requests wait up to `wait` for a conflicting lock to be released (a backup
    /// started while prune runs), instead of failing at once.
    pub fn set_lock_wait(&mut self, wait: std::time::Duration) {
        self.lock_wait = wait;
    }

    fn lock(&self, exclusive: bool, command: &str) -> Result<lock::Lock> {
        let deadline = std::time::Instant::now() + self.lock_wait;
        loop {
            match lock::Lock::acquire(self.store.clone(), &self.key, exclusive, command) {
                Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                    // Jittered, so two waiters that saw each other do not retry in step forever.
                    let mut jitter = [0u8; 1];
                    getrandom::fill(&mut jitter).expect("the OS random source works");
                    std::thread::sleep(std::time::Duration::from_millis(500 + 4 * jitter[0] as u64));
                }
                other => return other,
            }
        }
    }

    pub fn lock_shared(&self, command: &str) -> Result<lock::Lock> {
        self.lock(false, command)
    }

    /// A shared lock for commands that only read (restore, check). On a repository this user
    /// cannot write (read-only media, a read-only replica of the bucket) they go on without one:
    /// nothing they do needs protecting from, only prune could disturb them.
    pub fn lock_for_reading(&self, command: &str) -> Result<Option<lock::Lock>> {
        match self.lock_shared(command) {
            Ok(lock) => Ok(Some(lock)),
            Err(Error::Store(store::Error::PermissionDenied { .. })) => {
                tracing::warn!("the repository is not writable by this user: {command} runs without a lock");
                Ok(None)
            }
            Err(Error::Store(store::Error::Io { source, .. })) if source.raw_os_error() == Some(libc::EROFS) => {
                tracing::warn!("the repository is on a read-only file system: {command} runs without a lock");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn lock_exclusive(&self, command: &str) -> Result<lock::Lock> {
        self.lock(true, command)
    }

    pub fn load_index(&self) -> Result<index::Index> {
        index::load(self.store.as_ref(), &self.key)
    }

    /// Every readable index file; a damaged one is skipped with a warning naming it (`check`
    /// reports it, `repair index` replaces it). A chunk only it listed is then unknown: a backup
    /// stores it again, a restore that needs it fails. Prune and copy load strictly instead.
    pub fn load_index_skipping_damaged(&self) -> Result<index::Index> {
        let (index, damaged) = index::load_tolerant(self.store.as_ref(), &self.key)?;
        for (file, err) in damaged {
            tracing::warn!(
                index = %file,
                "index file {file} cannot be read ({err}); what only it lists counts as not stored. `drctl check` \
                 reports it, `drctl repair index` rebuilds it"
            );
        }
        Ok(index)
    }

    /// Reads, authenticates and verifies one chunk.
    pub fn read_chunk(&self, index: &index::Index, id: Id) -> Result<Vec<u8>> {
        let (pack, loc, sealed) = self.read_sealed(index, id)?;
        self.open_chunk(index, pack, id, loc, &sealed)
    }

    /// Chunk `id`'s data, read through `cache` where given, and the chunk a new version of it
    /// is compressed against with that chunk's data: `id` itself, or its delta base when it is a
    /// delta (as [`Repository::read_base_for`] chooses).
    pub fn read_version(
        &self,
        index: &index::Index,
        id: Id,
        cache: Option<&base_cache::BaseCache>,
    ) -> Result<(Vec<u8>, writer::Base)> {
        let base_read = std::cell::RefCell::new(None);
        let data = self.with_sealed(index, id, cache, |pack, loc, sealed| {
            self.open_chunk_with(pack, id, loc, sealed, &mut |base| {
                let data = self
                    .with_sealed(index, base, cache, |_, loc, sealed| {
                        pack::open_base(&self.key, base, sealed, loc.raw_len)
                            .map_err(|e| Error::corrupt(&format!("chunk {base}"), e.to_string()))
                    })
                    .map_err(|e| pack::ChunkError::Base(base, e.to_string()))?;
                *base_read.borrow_mut() = Some((base, data.clone()));
                Ok(data)
            })
        })?;
        let base = base_read.into_inner().unwrap_or_else(|| (id, data.clone()));
        Ok((data, base))
    }

    /// Authenticates, decodes and verifies chunk `id`, read as `sealed` from `pack` at `loc`.
    pub fn open_chunk(
        &self,
        index: &index::Index,
        pack: Id,
        id: Id,
        loc: index::ChunkLocation,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        self.open_chunk_with(pack, id, loc, sealed, &mut |base| self.read_delta_base(index, base))
    }

    /// Like [`Repository::open_chunk`], with a delta's base read by `base` (a restore reads it
    /// back from where it parked it).
    pub fn open_chunk_with(
        &self,
        pack: Id,
        id: Id,
        loc: index::ChunkLocation,
        sealed: &[u8],
        base: pack::BaseLoader,
    ) -> Result<Vec<u8>> {
        pack::open_chunk(&self.key, id, sealed, loc.raw_len, base).map_err(|e| {
            Error::corrupt(&format!("pack {pack}"), format!("chunk {} at offset {}: {e}", id.short(), loc.offset))
        })
    }

    /// Every chunk the snapshots need: their trees, their files' chunks, and the bases of deltas
    /// among them.
    pub fn chunks_used_by(&self, index: &index::Index, snapshots: &[Id]) -> Result<std::collections::HashSet<Id>> {
        let mut used = std::collections::HashSet::new();
        let mut use_chunk = |id: &Id| {
            used.insert(*id);
            if let Some(base) = index.deltas.get(id) {
                used.insert(*base);
            }
        };
        for &snap_id in snapshots {
            let snap = snapshot::load(self.store(), &self.key, snap_id)?;
            snap.tree.iter().for_each(&mut use_chunk);
            for entry in tree::TreeReader::new(&snap.tree, |id| self.read_chunk(index, id)) {
                entry?.chunks.iter().for_each(&mut use_chunk);
            }
        }
        Ok(used)
    }

    /// `len` bytes of a pack from `offset`; a pack shorter than that is damage.
    pub fn read_pack_range(&self, pack: Id, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.store
            .get_range(&format::pack_key(pack), offset, len)
            .map_err(|e| Error::missing_or(e, &format!("pack {pack}")))
    }

    /// The data of a delta's base, which is never a delta itself (chains are one step long),
    /// for decoding that delta only ([`pack::open_base`]).
    pub fn read_delta_base(&self, index: &index::Index, base: Id) -> std::result::Result<Vec<u8>, pack::ChunkError> {
        let fail = |e: String| pack::ChunkError::Base(base, e);
        let (_, loc, sealed) = self.read_sealed(index, base).map_err(|e| fail(e.to_string()))?;
        pack::open_base(&self.key, base, &sealed, loc.raw_len).map_err(|e| fail(e.to_string()))
    }

    /// A chunk to compress an earlier version of a block against, as (its id, its data): the
    /// earlier version itself, or, if that is a delta, its base (so chains stay one step long).
    /// With `cache`, both are read from the local base cache where it holds them.
    pub fn read_base_for(
        &self,
        index: &index::Index,
        earlier: Id,
        cache: Option<&base_cache::BaseCache>,
    ) -> Result<(Id, Vec<u8>)> {
        let corrupt = |pack: Id, id: Id, e: pack::ChunkError| {
            Error::corrupt(&format!("pack {pack}"), format!("chunk {}: {e}", id.short()))
        };
        let opened = self.with_sealed(index, earlier, cache, |pack, loc, sealed| {
            let plaintext = self
                .key
                .open(&format::associated_data(format::ObjectType::Chunk, &earlier.0), sealed)
                .map_err(|e| corrupt(pack, earlier, e.into()))?;
            match pack::delta_base(&plaintext) {
                Some(root) => Ok(Err(root)),
                None => {
                    let mut no_base = |b| Err(pack::ChunkError::Base(b, "not a delta".into()));
                    pack::decode_chunk(&self.key, earlier, &plaintext, loc.raw_len, &mut no_base)
                        .map(Ok)
                        .map_err(|e| corrupt(pack, earlier, e))
                }
            }
        })?;
        let root = match opened {
            Ok(data) => return Ok((earlier, data)),
            Err(root) => root,
        };
        let data = self.with_sealed(index, root, cache, |pack, loc, sealed| {
            let mut chain = |_| Err(pack::ChunkError::Base(root, "it is a delta itself".into()));
            pack::open_chunk(&self.key, root, sealed, loc.raw_len, &mut chain).map_err(|e| corrupt(pack, earlier, e))
        })?;
        Ok((root, data))
    }

    /// Opens chunk `id` with `open`, from the base cache when one is given (fetching the chunk's
    /// pack into it on a miss) and else, or when the cached copy fails, from the store.
    fn with_sealed<T>(
        &self,
        index: &index::Index,
        id: Id,
        cache: Option<&base_cache::BaseCache>,
        open: impl Fn(Id, index::ChunkLocation, &[u8]) -> Result<T>,
    ) -> Result<T> {
        if let Some(cache) = cache {
            let (pack, loc) = index.get(&id).ok_or_else(|| Error::Missing { object: format!("chunk {id}") })?;
            let (offset, len) = (loc.offset as u64, loc.sealed_len as u64);
            let cached = cache.read(pack.id, offset, len).or_else(|| {
                cache.fetch(self.store(), pack.id, pack.size);
                cache.read(pack.id, offset, len)
            });
            if let Some(sealed) = cached {
                match open(pack.id, loc, &sealed) {
                    Err(e) if e.is_damage() => cache.forget(pack.id),
                    opened => return opened,
                }
            }
        }
        let (pack, loc, sealed) = self.read_sealed(index, id)?;
        open(pack, loc, &sealed)
    }

    fn read_sealed(&self, index: &index::Index, id: Id) -> Result<(Id, index::ChunkLocation, Vec<u8>)> {
        let (pack, loc) = index.get(&id).ok_or_else(|| Error::Missing { object: format!("chunk {id}") })?;
        let (offset, len) = (loc.offset as u64, loc.sealed_len as u64);
        let Some(readahead) = &self.readahead else {
            return Ok((pack.id, loc, self.read_pack_range(pack.id, offset, len)?));
        };
        if let Some(sealed) = readahead.get(pack.id, offset, len) {
            return Ok((pack.id, loc, sealed));
        }
        let window = len.max(readahead::WINDOW.min(pack.size.saturating_sub(offset)));
        let data = match self.read_pack_range(pack.id, offset, window) {
            Ok(data) => data,
            // A pack cut short after this chunk still serves it; the exact read decides.
            Err(Error::Corrupt { .. }) if window > len => {
                return Ok((pack.id, loc, self.read_pack_range(pack.id, offset, len)?));
            }
            Err(e) => return Err(e),
        };
        let sealed = data[..len as usize].to_vec();
        readahead.keep(pack.id, offset, data);
        Ok((pack.id, loc, sealed))
    }
}

/// This machine's name, for snapshots and locks.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
