//! Copying snapshots and WAL to another repository (another bucket, another region) that shares
//! this one's master key and config but has its own key slots.
//!
//! Objects are copied byte for byte (they are sealed under the master key and bound to their
//! names, not to a location), and only those the target lacks. Each is authenticated before it
//! is sent, so a damaged source object is reported, not spread, and what the target holds is
//! proven identical: on S3 by the CRC32C computed here, checked by the service on arrival and
//! returned by it (no download); elsewhere, or when the service returns none, by reading it
//! back. The order is the backup's — packs,
//! then index files, then snapshot manifests — so an interrupted copy leaves only objects that a
//! second run skips, and a snapshot appears in the target only once all it needs is there.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde::Serialize;

use super::crypto::Id;
use super::evidence::{self, Kind};
use super::format::{self, ObjectType};
use super::index::{self, ChunkLocation};
use super::{Error, Repository, snapshot, wal, wal_map};
use crate::pg::wal::{WalName, parse_lsn, segment_name};
use crate::progress::Progress;
use crate::store::Store;

/// Objects are read back for verification in pieces of this size, so memory stays bounded.
const VERIFY_PIECE: u64 = 8 << 20;
/// Bytes of objects in flight at once, whatever the number of jobs: an object is held once, from
/// its download through its upload, so 8 jobs of 32 MiB packs would otherwise need 256 MiB.
const MEMORY_BUDGET: u64 = 128 << 20;

/// Admits objects while their bytes fit the budget (an object larger than the budget alone).
struct Budget {
    free: Mutex<u64>,
    freed: std::sync::Condvar,
}

impl Budget {
    fn take(&self, bytes: u64) -> u64 {
        let bytes = bytes.min(MEMORY_BUDGET);
        let mut free = self.freed.wait_while(self.free.lock().expect("poisoned"), |f| *f < bytes).expect("poisoned");
        *free -= bytes;
        bytes
    }

    fn give(&self, bytes: u64) {
        *self.free.lock().expect("poisoned") += bytes;
        self.freed.notify_all();
    }
}

/// Which snapshots to copy.
pub enum Selection {
    All,
    Snapshots(Vec<Id>),
}

pub struct CopyOptions {
    pub selection: Selection,
    /// Also copy the WAL archive.
    pub wal: bool,
    /// Objects in flight at once.
    pub jobs: usize,
}

/// What a copy did; `*_present` counts what the target already held and was not sent again.
#[derive(Debug, Default, Serialize)]
pub struct CopyReport {
    pub snapshots_copied: usize,
    pub snapshots_present: usize,
    pub packs_copied: usize,
    pub packs_present: usize,
    pub index_files_copied: usize,
    pub wal_copied: usize,
    /// Evidence records copied (audit, drill, job and check records).
    pub records_copied: usize,
    pub wal_present: usize,
    pub objects_copied: usize,
    pub bytes_copied: u64,
}

/// How an object is proven sound before it is sent.
enum Proof {
    /// A pack: its size, and every indexed chunk in it authenticates under its id.
    Pack { size: u64, chunks: Vec<(Id, ChunkLocation)> },
    /// Index files, manifests: named by the BLAKE3 hash of their bytes.
    NamedByHash(Id),
    /// A WAL file: it opens under its own name.
    Wal(WalName),
    /// A WAL segment's block map: it opens under its segment's name.
    WalMap(WalName),
    /// Evidence (an audit or drill record): it opens under its own key.
    Evidence(Kind),
}

struct Item {
    key: String,
    proof: Proof,
}

/// Copies `options.selection` (and the WAL archive if asked) from `source` to `target`.
pub fn copy(
    source: &Repository,
    target: &Repository,
    options: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport, Error> {
    if source.config().id != target.config().id {
        return Err(Error::InvalidRequest(format!(
            "{} is another repository (id {}), not a copy of {} (id {}); copy into an empty location or into an \
             earlier copy of this repository",
            target.store().location(),
            &target.config().id[..8],
            source.store().location(),
            &source.config().id[..8]
        )));
    }
    // Snapshots first, then the index: a manifest is written after its index file, so every
    // snapshot listed here has its chunks in the index loaded after (backups may be running).
    let snapshots = match &options.selection {
        Selection::All => snapshot::list(source.store())?,
        Selection::Snapshots(ids) => ids.clone(),
    };
    let index = source.load_index()?;
    let needed_packs: BTreeSet<u32> = match options.selection {
        Selection::All => (0..index.packs.len() as u32).collect(),
        Selection::Snapshots(_) => packs_used_by(source, &index, &snapshots)?,
    };

    let mut report = CopyReport::default();
    let in_target: HashMap<String, u64> = ["packs/", "index/", "snapshots/"]
        .into_iter()
        .chain(Kind::ALL.map(Kind::dir))
        .chain(options.wal.then_some(wal::WAL_DIR))
        .chain([wal_map::MAP_DIR])
        .map(|prefix| target.store().list(prefix))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .map(|o| (o.key, o.size))
        .collect();

    // 1. Packs (and WAL, which nothing else refers to).
    let mut chunks_of: HashMap<u32, Vec<(Id, ChunkLocation)>> = HashMap::new();
    for (id, loc) in &index.chunks {
        if needed_packs.contains(&loc.pack) {
            chunks_of.entry(loc.pack).or_default().push((*id, *loc));
        }
    }
    let mut items = Vec::new();
    let mut queued = HashSet::new();
    for &i in &needed_packs {
        let pack = &index.packs[i as usize];
        // A pack listed by two index files is copied once.
        if !queued.insert(pack.id) {
            continue;
        }
        let key = format::pack_key(pack.id);
        match in_target.get(&key) {
            Some(&size) if size == pack.size => report.packs_present += 1,
            found => {
                if let Some(size) = found {
                    tracing::warn!(%key, size, expected = pack.size, "replacing a damaged pack in the target");
                }
                let chunks = chunks_of.remove(&i).unwrap_or_default();
                items.push(Item { key, proof: Proof::Pack { size: pack.size, chunks } });
            }
        }
    }
    report.packs_copied = items.len();
    // A base backup restores only with the WAL from its start to its stop: that range goes
    // along even without --wal.
    let mut own_wal = HashSet::new();
    if !options.wal {
        for &id in &snapshots {
            if let Some(pg) = snapshot::load(source.store(), source.key(), id)?.pg {
                own_wal.extend(backup_wal(&pg));
            }
        }
    }
    if options.wal || !own_wal.is_empty() {
        let maps: HashSet<WalName> = wal_map::list(source.store())?.into_iter().map(|(name, _)| name).collect();
        for (name, size) in wal::list(source.store())? {
            if !options.wal && !own_wal.contains(name.as_str()) {
                continue;
            }
            // The segment's block map goes with it, so incrementals taken on the copy read
            // maps too.
            let map_key = wal_map::key_of(&name);
            if maps.contains(&name) && !in_target.contains_key(&map_key) {
                items.push(Item { key: map_key, proof: Proof::WalMap(name.clone()) });
            }
            let key = wal::key_of(&name);
            match in_target.get(&key) {
                Some(&theirs) if theirs == size => report.wal_present += 1,
                Some(_) => return Err(Error::WalConflict { name: name.to_string() }),
                None => {
                    report.wal_copied += 1;
                    items.push(Item { key, proof: Proof::Wal(name) });
                }
            }
        }
    }
    // Evidence records go wherever the backups go.
    for kind in Kind::ALL {
        for key in evidence::list(source, kind)? {
            if !in_target.contains_key(&key) {
                report.records_copied += 1;
                items.push(Item { key, proof: Proof::Evidence(kind) });
            }
        }
    }
    let total: u64 = items.iter().map(|i| if let Proof::Pack { size, .. } = i.proof { size } else { 0 }).sum();
    progress.start("copying", Some(total));
    transfer(source, target, items, options.jobs, progress, &mut report)?;

    // 2. Index files: whole where the target now holds all their packs, else a new one listing
    // just the copied packs they describe.
    let target_has =
        |i: u32| needed_packs.contains(&i) || in_target.contains_key(&format::pack_key(index.packs[i as usize].id));
    let mut by_file: HashMap<Id, Vec<u32>> = HashMap::new();
    for (i, pack) in index.packs.iter().enumerate() {
        by_file.entry(pack.index_file).or_default().push(i as u32);
    }
    let mut items = Vec::new();
    let mut partial = Vec::new();
    let target_indexed: HashSet<Id> = target.load_index()?.packs.iter().map(|p| p.id).collect();
    let mut listed = HashSet::new();
    for (file, packs) in &by_file {
        let key = format!("{}{file}", format::INDEX_DIR);
        if in_target.contains_key(&key) || !packs.iter().any(|p| needed_packs.contains(p)) {
            continue;
        }
        if packs.iter().all(|&p| target_has(p)) {
            items.push(Item { key, proof: Proof::NamedByHash(*file) });
        } else {
            // Only packs the target does not index yet: resumed and partial copies do not pile
            // up listings of the same packs.
            let wanted: HashSet<Id> = packs
                .iter()
                .filter(|p| needed_packs.contains(p))
                .map(|&p| index.packs[p as usize].id)
                .filter(|id| !target_indexed.contains(id))
                .collect();
            let records = index::load_file(source.store(), source.key(), *file)?;
            partial.extend(records.into_iter().filter(|r| wanted.contains(&r.id) && listed.insert(r.id)));
        }
    }
    report.index_files_copied = items.len();
    transfer(source, target, items, options.jobs, progress, &mut report)?;
    if !partial.is_empty() {
        let (_, size) = index::save(target.store(), target.key(), &partial)?;
        report.index_files_copied += 1;
        report.objects_copied += 1;
        report.bytes_copied += size;
    }

    // 3. Snapshot manifests, last.
    let mut items = Vec::new();
    for id in snapshots {
        let key = snapshot::key_of(id);
        if in_target.contains_key(&key) {
            report.snapshots_present += 1;
        } else {
            items.push(Item { key, proof: Proof::NamedByHash(id) });
        }
    }
    report.snapshots_copied = items.len();
    transfer(source, target, items, options.jobs, progress, &mut report)?;
    progress.finish();
    Ok(report)
}

/// The WAL segments from a base backup's start to its stop.
fn backup_wal(pg: &snapshot::PgBackup) -> Vec<String> {
    let (Some(start), Some(stop)) = (parse_lsn(&pg.start_lsn), parse_lsn(&pg.stop_lsn)) else { return Vec::new() };
    let size = pg.wal_segment_size;
    (start / size..=stop.saturating_sub(1).max(start) / size).map(|n| segment_name(pg.timeline, n, size)).collect()
}

/// The packs holding every chunk the snapshots need.
fn packs_used_by(source: &Repository, index: &index::Index, snapshots: &[Id]) -> Result<BTreeSet<u32>, Error> {
    let mut packs = BTreeSet::new();
    for id in source.chunks_used_by(index, snapshots)? {
        let loc = index.chunks.get(&id).ok_or_else(|| Error::Missing { object: format!("chunk {id}") })?;
        packs.insert(loc.pack);
    }
    Ok(packs)
}

/// Copies the items with `jobs` workers; the first failure stops the others.
fn transfer(
    source: &Repository,
    target: &Repository,
    items: Vec<Item>,
    jobs: usize,
    progress: &dyn Progress,
    report: &mut CopyReport,
) -> Result<(), Error> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let outcome: Mutex<(Option<Error>, usize, u64)> = Mutex::new((None, 0, 0));
    let budget = Budget { free: Mutex::new(MEMORY_BUDGET), freed: std::sync::Condvar::new() };
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) else { return };
                    let size = if let Proof::Pack { size, .. } = item.proof { size } else { 1 << 20 };
                    let held = budget.take(size);
                    let copied = copy_one(source, target.store(), item);
                    budget.give(held);
                    let mut outcome = outcome.lock().expect("poisoned");
                    match copied {
                        Ok(bytes) => {
                            outcome.1 += 1;
                            outcome.2 += bytes;
                            if matches!(item.proof, Proof::Pack { .. }) {
                                progress.add(bytes);
                            }
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            outcome.0.get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    let (error, objects, bytes) = outcome.into_inner().expect("poisoned");
    report.objects_copied += objects;
    report.bytes_copied += bytes;
    error.map_or(Ok(()), Err)
}

/// Reads one object from the source, proves it sound, writes it to the target and proves the
/// target holds the same bytes: by the checksum the store verified and returned (S3), else by
/// reading it back. Returns the bytes copied.
fn copy_one(source: &Repository, target: &dyn Store, item: &Item) -> Result<u64, Error> {
    let bytes = source.store().get(&item.key).map_err(|e| Error::missing_or(e, &item.key))?;
    match prove(source, item, &bytes) {
        // A block map only saves reading: a damaged one is left behind, not copied, and
        // nothing else waits on it.
        Err(e) if matches!(item.proof, Proof::WalMap(_)) && e.is_damage() => {
            tracing::warn!(error = %e, "not copying a damaged WAL block map");
            return Ok(0);
        }
        proved => proved?,
    }
    let hash = blake3::hash(&bytes);
    let len = bytes.len() as u64;
    if target.put_proven(&item.key, bytes)? {
        return Ok(len);
    }
    let mut hasher = blake3::Hasher::new();
    let mut offset = 0;
    while offset < len {
        let piece = VERIFY_PIECE.min(len - offset);
        let read = target.get_range(&item.key, offset, piece).map_err(|e| Error::missing_or(e, &item.key))?;
        hasher.update(&read);
        offset += piece;
    }
    if hasher.finalize() != hash {
        return Err(Error::corrupt(
            &format!("{} in {}", item.key, target.location()),
            "it reads back different from what was written; run the copy again",
        ));
    }
    Ok(len)
}

fn prove(source: &Repository, item: &Item, bytes: &[u8]) -> Result<(), Error> {
    let object = || format!("{} in {}", item.key, source.store().location());
    match &item.proof {
        Proof::Pack { size, chunks } => {
            if bytes.len() as u64 != *size {
                return Err(Error::corrupt(&object(), format!("it holds {} bytes, not {size}", bytes.len())));
            }
            for (id, loc) in chunks {
                let start = loc.offset as usize;
                let sealed = bytes
                    .get(start..start + loc.sealed_len as usize)
                    .ok_or_else(|| Error::corrupt(&object(), format!("chunk {} lies past its end", id.short())))?;
                source.key().open(&format::associated_data(ObjectType::Chunk, &id.0), sealed).map_err(|_| {
                    Error::corrupt(
                        &object(),
                        format!("chunk {} at offset {} fails authentication", id.short(), loc.offset),
                    )
                })?;
            }
        }
        Proof::NamedByHash(id) => {
            if Id::of_stored(bytes) != *id {
                return Err(Error::corrupt(&object(), "its content does not match its name"));
            }
        }
        Proof::Wal(name) => {
            format::open_file(source.key(), ObjectType::Wal, name.as_str().as_bytes(), bytes, &object())?;
        }
        Proof::WalMap(name) => {
            format::open_file(source.key(), ObjectType::WalMap, name.as_str().as_bytes(), bytes, &object())?;
        }
        Proof::Evidence(kind) => {
            format::open_file(source.key(), kind.object_type(), item.key.as_bytes(), bytes, &object())?;
        }
    }
    Ok(())
}
