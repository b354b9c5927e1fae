//! Integrity check. The structural pass loads every index file and snapshot, reads every tree and
//! confirms that every chunk a snapshot needs is indexed in a pack that exists with the recorded
//! size. `read_data` then reads every pack whole: its header must authenticate under its own id
//! and match the index, chunks and header must cover it exactly, and every chunk must decrypt and
//! hash to its id. Each pack byte is read once: packs holding delta bases go first, and the bases
//! are kept aside on local disk for the deltas.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use super::crypto::Id;
use super::evidence::{self, Kind};
use super::format;
use super::index::{self, ChunkLocation, PackInfo};
use super::pack::{self, ChunkEntry};
use super::snapshot;
use super::tree::TreeReader;
use super::{Error, Repository};
use super::{wal, wal_map};
use crate::progress::Progress;

/// Bytes read at once while verifying a pack.
const VERIFY_BATCH: u64 = 16 << 20;

/// One damaged or missing object and the snapshots that can no longer be restored because of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    pub object: String,
    pub reason: String,
    pub snapshots: Vec<Id>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub problems: Vec<Problem>,
    /// Harmless findings, e.g. packs left unreferenced by an interrupted backup.
    pub warnings: Vec<String>,
    pub snapshots: usize,
    pub index_files: usize,
    pub packs: usize,
    pub chunks: usize,
    pub wal_files: usize,
    /// Evidence records by kind (`audit record`, `drill record`, …), kinds with none left out.
    pub records: std::collections::BTreeMap<&'static str, usize>,
    pub bytes_read: u64,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Problems keyed by object, so each is reported once with all its dependent snapshots.
#[derive(Default)]
struct Findings(BTreeMap<String, (String, BTreeSet<Id>)>);

impl Findings {
    fn add(&mut self, object: String, reason: String) {
        self.0.entry(object).or_insert_with(|| (reason, BTreeSet::new()));
    }
    fn add_for(&mut self, object: String, reason: String, snapshot: Id) {
        self.0.entry(object).or_insert_with(|| (reason, BTreeSet::new())).1.insert(snapshot);
    }
    fn blame(&mut self, object: &str, snapshot: Id) {
        if let Some(entry) = self.0.get_mut(object) {
            entry.1.insert(snapshot);
        }
    }
}

fn object_of(err: &Error) -> Option<String> {
    match err {
        Error::Corrupt { object, .. } | Error::Missing { object } => Some(object.clone()),
        _ => None,
    }
}

pub fn check(repo: &Repository, read_data: bool, progress: &dyn Progress) -> Result<Report, Error> {
    let store = repo.store();
    let mut report = Report::default();
    let mut findings = Findings::default();

    let (index, damaged_index) = index::load_tolerant(store, repo.key())?;
    for (id, err) in damaged_index {
        findings.add(format!("index {id}"), err.to_string());
    }
    report.index_files = index.files.len();
    report.packs = index.packs.len();
    report.chunks = index.chunks.len();

    // Packs: every indexed pack exists with its recorded size; unindexed packs are only noted.
    let stored: HashMap<Id, u64> = store
        .list(format::PACKS_DIR)?
        .into_iter()
        .filter_map(|o| match format::id_of_key(&o.key) {
            Some(id) => Some((id, o.size)),
            None => {
                report.warnings.push(format!("{} is not a pack name; ignored", o.key));
                None
            }
        })
        .collect();
    let mut present = vec![true; index.packs.len()];
    // A pack cut short after its last indexed chunk lost only its header, which a restore never
    // reads: it is damaged, but no snapshot is (with --read-data every chunk is verified).
    let mut chunks_end = vec![0u64; index.packs.len()];
    for loc in index.chunks.values() {
        let end = &mut chunks_end[loc.pack as usize];
        *end = (*end).max(loc.offset as u64 + loc.sealed_len as u64);
    }
    let mut header_cut = vec![false; index.packs.len()];
    for (i, pack) in index.packs.iter().enumerate() {
        let object = format!("pack {}", pack.id);
        match stored.get(&pack.id) {
            None => {
                findings.add(object, "it is missing".into());
                present[i] = false;
            }
            Some(&size) if size < pack.size && size >= chunks_end[i] => {
                findings.add(
                    object,
                    format!(
                        "it holds {size} bytes but was written with {}: its header was cut off, but every chunk the \
                         index places in it is still there, so no snapshot depends on the lost part",
                        pack.size
                    ),
                );
                header_cut[i] = true;
            }
            Some(&size) if size != pack.size => {
                findings.add(
                    object,
                    format!("it holds {size} bytes but was written with {} (truncated or replaced)", pack.size),
                );
                present[i] = false;
            }
            Some(_) => {}
        }
    }
    let indexed: BTreeSet<Id> = index.packs.iter().map(|p| p.id).collect();
    for id in stored.keys().filter(|id| !indexed.contains(id)) {
        report.warnings.push(format!(
            "pack {id} is in no index: left by an interrupted backup or copy, or its index file was lost or is \
             damaged; `drctl repair index` lists it again, prune reclaims it if no snapshot needs it"
        ));
    }

    // Snapshots: every tree entry's chunks must be indexed in a present pack.
    let mut pack_users: Vec<BTreeSet<Id>> = vec![BTreeSet::new(); index.packs.len()];
    let snapshot_ids = snapshot::list(store)?;
    report.snapshots = snapshot_ids.len();
    for snap_id in snapshot_ids {
        let snap = match snapshot::load(store, repo.key(), snap_id) {
            Ok(s) => s,
            Err(Error::Store(e)) => return Err(Error::Store(e)),
            Err(e) => {
                findings.add_for(format!("snapshot {snap_id}"), e.to_string(), snap_id);
                continue;
            }
        };
        let mut missing = 0u64;
        // A delta also uses its base: a lost base makes the snapshot unrestorable too.
        let use_chunk = |id: &Id, missing: &mut u64, pack_users: &mut Vec<BTreeSet<Id>>| {
            for id in std::iter::once(id).chain(index.deltas.get(id)) {
                match index.chunks.get(id) {
                    Some(loc) => {
                        pack_users[loc.pack as usize].insert(snap_id);
                    }
                    None => *missing += 1,
                }
            }
        };
        for id in &snap.tree {
            use_chunk(id, &mut missing, &mut pack_users);
        }
        let entries = TreeReader::new(&snap.tree, |id| repo.read_chunk(&index, id));
        for entry in entries {
            match entry {
                Ok(entry) => entry.chunks.iter().for_each(|id| use_chunk(id, &mut missing, &mut pack_users)),
                Err(Error::Store(e)) => return Err(Error::Store(e)),
                Err(e) => {
                    let object = object_of(&e).unwrap_or_else(|| format!("snapshot {snap_id}"));
                    findings.add_for(object, format!("its tree cannot be read: {e}"), snap_id);
                    break;
                }
            }
        }
        if missing > 0 {
            findings.add_for(
                format!("snapshot {snap_id}"),
                format!("{missing} of its chunks are in no index (index or pack lost; `drctl repair index` finds them in packs \
                         that are left)"),
                snap_id,
            );
        }
    }

    if read_data {
        let damaged = read_all_packs(repo, &index, &present, &header_cut, progress, &mut report.bytes_read)?;
        for (object, reason) in damaged {
            findings.add(object, reason);
        }
    }

    // The WAL archive: every object must open under its own name (read in full with --read-data).
    let archived = wal::list(store)?;
    report.wal_files = archived.len();
    if read_data {
        for (name, size) in archived {
            match wal::fetch(repo, &name) {
                Ok(Some(_)) => report.bytes_read += size,
                Ok(None) => findings.add(format!("WAL file {name}"), "it vanished while being checked".into()),
                Err(Error::Store(e)) => return Err(Error::Store(e)),
                Err(e) => findings.add(object_of(&e).unwrap_or_else(|| format!("WAL file {name}")), e.to_string()),
            }
        }
    }

    // WAL block maps: each must open under its segment's name (read with --read-data). A damaged
    // one is reported; incrementals read its segment instead, so no snapshot depends on it.
    if read_data {
        for (name, size) in wal_map::list(store)? {
            match wal_map::get(repo, &name) {
                Ok(_) => report.bytes_read += size,
                Err(Error::Store(e)) => return Err(Error::Store(e)),
                Err(e) => findings.add(object_of(&e).unwrap_or_else(|| format!("WAL block map {name}")), e.to_string()),
            }
        }
    }

    // Evidence records: each must open under its own key (read with --read-data).
    for kind in Kind::ALL {
        let records = evidence::list(repo, kind)?;
        if !records.is_empty() {
            report.records.insert(kind.what(), records.len());
        }
        if read_data {
            for key in records {
                match evidence::read(repo, kind, &key) {
                    Ok(bytes) => report.bytes_read += bytes.len() as u64,
                    Err(Error::Store(e)) => return Err(Error::Store(e)),
                    Err(e) => {
                        findings.add(object_of(&e).unwrap_or_else(|| format!("{} {key}", kind.what())), e.to_string())
                    }
                }
            }
        }
    }

    // Blame each damaged pack on the snapshots that use it.
    // A pack that lost only its header is blamed for a damaged chunk, not for the header.
    for (i, pack) in index.packs.iter().enumerate() {
        let object = damaged_pack_object(pack, header_cut[i]);
        for snap in &pack_users[i] {
            findings.blame(&object, *snap);
        }
    }
    report.problems = findings
        .0
        .into_iter()
        .map(|(object, (reason, snaps))| Problem { object, reason, snapshots: snaps.into_iter().collect() })
        .collect();
    Ok(report)
}

/// Reads every present pack in parallel; returns (object, reason) for each damaged one.
/// The name a pack's damaged chunks are reported and blamed under. A pack that lost only its
/// header has that loss reported as "pack ID" already (no snapshot depends on it): a damaged
/// chunk in it is news, under its own name.
fn damaged_pack_object(pack: &PackInfo, header_cut: bool) -> String {
    if header_cut { format!("pack {} (chunks)", pack.id) } else { format!("pack {}", pack.id) }
}

/// Reads every present pack once, in waves (a pack holding delta bases before the packs holding
/// their deltas), keeping each base aside in a temporary file as its pack is verified, so a delta
/// is decoded against it without reading the base's pack again.
fn read_all_packs(
    repo: &Repository,
    index: &index::Index,
    present: &[bool],
    header_cut: &[bool],
    progress: &dyn Progress,
    bytes_read: &mut u64,
) -> Result<Vec<(String, String)>, Error> {
    let mut expected: Vec<Vec<(Id, ChunkLocation)>> = vec![Vec::new(); index.packs.len()];
    for (id, loc) in &index.chunks {
        expected[loc.pack as usize].push((*id, *loc));
    }
    let mut needs: BTreeMap<u32, HashSet<u32>> =
        (0..index.packs.len() as u32).filter(|&p| present[p as usize]).map(|p| (p, HashSet::new())).collect();
    for (delta, base) in &index.deltas {
        if let (Some(d), Some(b)) = (index.chunks.get(delta), index.chunks.get(base))
            && let Some(needed) = needs.get_mut(&d.pack)
        {
            needed.insert(b.pack);
        }
    }
    let (mut order, cycle) = super::waves::waves(&needs);
    order.push(cycle);
    let spill = BaseSpill::new(index.deltas.values().copied().collect());
    let total: u64 = index.packs.iter().zip(present).filter(|(_, p)| **p).map(|(p, _)| p.size).sum();
    progress.start("checking data", Some(total));
    let damaged = Mutex::new(Vec::new());
    let fatal = Mutex::new(None);
    let read = std::sync::atomic::AtomicU64::new(0);
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(4);
    for wave in order {
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if n >= wave.len() || fatal.lock().expect("poisoned").is_some() {
                            return;
                        }
                        let i = wave[n] as usize;
                        let pack = &index.packs[i];
                        match verify_pack(repo, index, pack, &expected[i], header_cut[i], spill.as_ref()) {
                            Ok(None) => {}
                            Ok(Some(reason)) => damaged
                                .lock()
                                .expect("poisoned")
                                .push((damaged_pack_object(pack, header_cut[i]), reason)),
                            Err(e) => *fatal.lock().expect("poisoned") = Some(e),
                        }
                        read.fetch_add(pack.size, std::sync::atomic::Ordering::Relaxed);
                        progress.add(pack.size);
                    }
                });
            }
        });
    }
    progress.finish();
    *bytes_read = read.into_inner();
    match fatal.into_inner().expect("poisoned") {
        Some(e) => Err(e),
        None => Ok(damaged.into_inner().expect("poisoned")),
    }
}

/// Delta bases kept aside, sealed as stored, in an unnamed temporary file.
struct BaseSpill {
    file: std::fs::File,
    wanted: HashSet<Id>,
    kept: Mutex<Kept>,
}

/// The spill's length, and where each base is in it: (offset, sealed length, raw length).
#[derive(Default)]
struct Kept(u64, HashMap<Id, (u64, u32, u32)>);

impl BaseSpill {
    /// A spill for `wanted`; `None` (bases are then read from the repository again) when there
    /// is nothing to keep or no temporary file can be made.
    fn new(wanted: HashSet<Id>) -> Option<BaseSpill> {
        if wanted.is_empty() {
            return None;
        }
        let file = tempfile::tempfile()
            .inspect_err(|e| tracing::warn!(error = %e, "no temporary file for delta bases; reading them again"))
            .ok()?;
        Some(BaseSpill { file, wanted, kept: Mutex::default() })
    }

    /// Keeps chunk `id` (verified) if a delta needs it.
    fn keep(&self, id: Id, sealed: &[u8], raw_len: u32) {
        use std::os::unix::fs::FileExt;
        if !self.wanted.contains(&id) {
            return;
        }
        let mut kept = self.kept.lock().expect("poisoned");
        if self.file.write_all_at(sealed, kept.0).is_ok() {
            let at = kept.0;
            kept.1.insert(id, (at, sealed.len() as u32, raw_len));
            kept.0 += sealed.len() as u64;
        }
    }

    /// The data of base `id`, if it was kept.
    fn data(&self, key: &super::crypto::MasterKey, id: Id) -> Option<Result<Vec<u8>, pack::ChunkError>> {
        use std::os::unix::fs::FileExt;
        let (at, len, raw_len) = *self.kept.lock().expect("poisoned").1.get(&id)?;
        let mut sealed = vec![0; len as usize];
        self.file.read_exact_at(&mut sealed, at).ok()?;
        let mut chain = |_| Err(pack::ChunkError::Base(id, "it is a delta itself".into()));
        Some(pack::open_chunk(key, id, &sealed, raw_len, &mut chain))
    }
}

/// Verifies one pack completely; `Ok(Some(reason))` when it is damaged. Chunks are read in
/// ranges of about VERIFY_BATCH bytes, so memory stays bounded whatever the pack size.
fn verify_pack(
    repo: &Repository,
    index: &index::Index,
    pack: &PackInfo,
    expected: &[(Id, ChunkLocation)],
    header_cut: bool,
    spill: Option<&BaseSpill>,
) -> Result<Option<String>, Error> {
    let object = format!("pack {}", pack.id);
    let damaged = |e: Error| match e {
        Error::Store(e) => Err(Error::Store(e)),
        e => Ok(Some(match e {
            Error::Corrupt { reason, .. } => reason,
            Error::Missing { .. } => "it is missing".into(),
            other => other.to_string(),
        })),
    };
    let header = if header_cut {
        // No header to compare with: verify the chunks where the index places them.
        let mut from_index: Vec<ChunkEntry> = expected
            .iter()
            .map(|(id, loc)| ChunkEntry {
                id: *id,
                offset: loc.offset,
                sealed_len: loc.sealed_len,
                raw_len: loc.raw_len,
                base: None,
            })
            .collect();
        from_index.sort_by_key(|e| e.offset);
        from_index
    } else {
        match pack::read_header(repo.store(), repo.key(), pack.id, pack.size, &object) {
            Ok(h) => h,
            Err(e) => return damaged(e),
        }
    };
    let in_header: HashMap<Id, &ChunkEntry> = header.iter().map(|e| (e.id, e)).collect();
    for (chunk, loc) in expected {
        match in_header.get(chunk) {
            Some(e) if e.offset == loc.offset && e.sealed_len == loc.sealed_len && e.raw_len == loc.raw_len => {}
            _ => return Ok(Some(format!("chunk {} is not where the index says", chunk.short()))),
        }
    }
    let key = format::pack_key(pack.id);
    let mut rest = header.as_slice();
    while !rest.is_empty() {
        // Chunks are in offset order, so a run of them is one range (with gaps only in a pack
        // verified from the index, which need not list every chunk).
        let start = rest[0].offset as u64;
        let end_of = |e: &ChunkEntry| e.offset as u64 + e.sealed_len as u64;
        let mut n = 1;
        while n < rest.len() && end_of(&rest[n]) - start <= VERIFY_BATCH {
            n += 1;
        }
        let (batch, tail) = rest.split_at(n);
        rest = tail;
        let len = end_of(&batch[n - 1]) - start;
        let data = match repo.store().get_range(&key, start, len) {
            Ok(d) => d,
            Err(e) => return damaged(Error::missing_or(e, &object)),
        };
        for e in batch {
            let at = (e.offset as u64 - start) as usize;
            let sealed = &data[at..at + e.sealed_len as usize];
            let mut base = |base| match spill.and_then(|s| s.data(repo.key(), base)) {
                Some(data) => data,
                None => repo.read_delta_base(index, base),
            };
            if let Err(err) = pack::open_chunk(repo.key(), e.id, sealed, e.raw_len, &mut base) {
                return Ok(Some(format!("chunk {} at offset {}: {err}", e.id.short(), e.offset)));
            }
            if let Some(spill) = spill {
                spill.keep(e.id, sealed, e.raw_len);
            }
        }
    }
    Ok(None)
}
