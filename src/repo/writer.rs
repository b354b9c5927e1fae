//! Writing a snapshot: a producer (whatever reads the source) hands chunks to a [`Sink`]; seal
//! workers, a packer and a committer store them concurrently; then the index file and last the
//! snapshot are written.
//!
//! ```text
//! producer (read → chunk → keyed hash → dedup) ─▶ seal workers (zstd → AES-GCM, one per core)
//!        ─▶ packer (streams a pack to the store) ─▶ committer (fsync, rename) ;  then index, snapshot
//! ```
//! Stages are joined by bounded channels and packs are written as they fill, so memory is about
//! channel depth × chunk size, whatever the size of the source.

use crossbeam_channel::{Receiver, Sender, bounded};
use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::base_cache::BaseCache;
use super::crypto::Id;
use super::format;
use super::index::{self, Index};
use super::pack::{self, PackRecord, PackWriter};
use super::snapshot::Snapshot;
use super::{Error, Repository, prune};

/// Stores what `produce` gives the sink as `snapshot`, its tree being what `produce` returns:
/// lock, load the index, run the producer through the stages, then write the index file and
/// last the snapshot. If a stage or the producer fails, the packs written are deleted again: no
/// index names them yet, so nothing else can depend on them. `level` is the zstd level; with
/// `cache`, delta bases are read from it and the packs written are copied into it.
pub fn write_snapshot<E, F>(
    repo: &Repository,
    mut snapshot: Snapshot,
    level: i32,
    cache: Option<&BaseCache>,
    produce: F,
) -> Result<(Id, Snapshot), E>
where
    E: From<Error> + Send,
    F: FnOnce(&Sink, &mut Snapshot) -> Result<Vec<Id>, E> + Send,
{
    let started = Instant::now();
    let lock = repo.lock_shared("backup")?;
    // A damaged index file costs only deduplication: what it lists is stored again.
    let index = repo.load_index_skipping_damaged()?;
    let doomed = prune::marked_packs(repo).unwrap_or_else(|e| {
        // Prune cannot read it either, so it deletes nothing until it is repaired.
        tracing::warn!(error = %e, "cannot read prune's plan; backing up as if no pack were marked");
        Default::default()
    });
    let pipeline = Pipeline::new(repo, &index, &doomed, level, cache);
    let outcome = pipeline.run(|sink| produce(sink, &mut snapshot));
    let mut summary = std::mem::take(&mut snapshot.summary);
    let (tree, written) = match outcome {
        Ok(done) => done,
        Err((err, written)) => {
            delete_packs(repo, &written);
            return Err(err);
        }
    };
    summary.new_chunks = written.iter().map(|p| p.chunks.len() as u64).sum();
    summary.delta_chunks = written.iter().flat_map(|p| &p.chunks).filter(|c| c.base.is_some()).count() as u64;
    summary.stored_bytes = written.iter().map(|p| p.size).sum();
    if !written.is_empty() {
        // From here on the packs stay even on failure: a failed index write may still have
        // become visible (an fsync failing after the rename, a timed-out upload that landed),
        // and another backup may already dedup against it. Prune reclaims them if unused.
        let (_, size) = index::save(repo.store(), repo.key(), &written)?;
        summary.stored_bytes += size;
    }
    summary.duration_seconds = started.elapsed().as_secs_f64();
    snapshot.tree = tree;
    snapshot.summary = summary;
    // Had another process taken the lock for stale, prune may have deleted what this snapshot
    // reuses: then no snapshot at all, rather than one that cannot be restored.
    lock.verify("writing the snapshot (what it stored stays for prune to judge)")?;
    let id = repo.save_snapshot(&snapshot)?;
    tracing::info!(snapshot = %id.short(), new_chunks = snapshot.summary.new_chunks, stored_bytes = snapshot.summary.stored_bytes, "snapshot saved");
    Ok((id, snapshot))
}

/// Where producers put chunks. `add` hashes, drops duplicates (already in the repository or
/// already on their way in) and queues the rest for sealing.
pub struct Sink<'a> {
    repo: &'a Repository,
    index: &'a Index,
    doomed: &'a BTreeSet<Id>,
    in_flight: Mutex<HashSet<Id>>,
    tx: Sender<Plain>,
    stopped: &'a AtomicBool,
    cache: Option<&'a BaseCache>,
}

impl Sink<'_> {
    /// Stops the backup early: later `add` calls fail and readers stop reading.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// The repository's index as the backup started.
    pub fn index(&self) -> &Index {
        self.index
    }

    /// Whether chunk `id` is stored for good: indexed, and neither it nor its delta base in a
    /// pack prune has marked for deletion. Only such chunks may be referenced without storing
    /// them again.
    pub fn is_stored(&self, id: &Id) -> bool {
        stored(self.index, self.doomed, id)
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// The data of chunk `id`, an earlier version of a block, read through the base cache
    /// where the backup has one (a remote repository is then not asked again), with the
    /// [`Base`] a new version of the block is compressed against.
    pub fn read_earlier(&self, id: Id) -> Result<(Vec<u8>, Base), Error> {
        self.repo.read_version(self.index, id, self.cache)
    }

    pub fn add(&self, data: Vec<u8>) -> Result<Id, Error> {
        self.add_version(data, None)
    }

    /// Adds a new version of a block whose previous version is the chunk `earlier`: if it
    /// must be stored, it is compressed against that version too, and the smaller form kept.
    pub fn add_version(&self, data: Vec<u8>, earlier: Option<Id>) -> Result<Id, Error> {
        self.add_against(data, earlier.map(Earlier::Read))
    }

    /// Like [`Sink::add_version`] with the base of the previous version already read (by
    /// [`Sink::read_earlier`]): it is not read again.
    pub fn add_with_base(&self, data: Vec<u8>, base: Base) -> Result<Id, Error> {
        self.add_against(data, Some(Earlier::Known(base)))
    }

    fn add_against(&self, data: Vec<u8>, earlier: Option<Earlier>) -> Result<Id, Error> {
        let id = self.repo.key().chunk_id(&data);
        if self.is_stored(&id) || !self.in_flight.lock().expect("poisoned").insert(id) {
            return Ok(id);
        }
        let earlier = earlier.filter(|e| self.is_stored(&e.id()));
        if self.stopped.load(Ordering::Relaxed) || self.tx.send((id, data, earlier)).is_err() {
            return Err(stopped());
        }
        Ok(id)
    }
}

fn stored(index: &Index, doomed: &BTreeSet<Id>, id: &Id) -> bool {
    let in_kept_pack = |id: &Id| index.get(id).is_some_and(|(pack, _)| !doomed.contains(&pack.id));
    in_kept_pack(id) && index.deltas.get(id).is_none_or(in_kept_pack)
}

/// The error a producer sees when a later stage failed; the stage's own error is reported.
fn stopped() -> Error {
    Error::InvalidRequest("backup pipeline stopped".into())
}

struct Pipeline<'a> {
    repo: &'a Repository,
    index: &'a Index,
    /// Packs prune has marked for deletion: never deduplicated against.
    doomed: &'a BTreeSet<Id>,
    level: i32,
    workers: usize,
    cache: Option<&'a BaseCache>,
}

/// A chunk to compress a block's new version against, with its data: the previous version, or
/// that version's own delta base (chains stay one step long).
pub type Base = (Id, Vec<u8>);

/// The previous version of a block, as a chunk to seal learns it.
enum Earlier {
    /// The chunk holding it: its base is read when the new version is sealed.
    Read(Id),
    /// Its base, already read.
    Known(Base),
}

impl Earlier {
    fn id(&self) -> Id {
        match self {
            Earlier::Read(id) | Earlier::Known((id, _)) => *id,
        }
    }
}

/// Chunks to seal: (id, data, the block's previous version).
type Plain = (Id, Vec<u8>, Option<Earlier>);
/// Chunks sealed but not yet packed: (id, sealed bytes, plaintext length, delta base).
type Sealed = (Id, Vec<u8>, u32, Option<Id>);

impl<'a> Pipeline<'a> {
    fn new(
        repo: &'a Repository,
        index: &'a Index,
        doomed: &'a BTreeSet<Id>,
        level: i32,
        cache: Option<&'a BaseCache>,
    ) -> Self {
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Pipeline { repo, index, doomed, level, workers, cache }
    }

    /// Runs `produce` with a sink while the stages run; returns what it produced and the packs
    /// written. On failure, also returns the packs already written so the caller can remove them.
    #[allow(clippy::type_complexity)]
    fn run<T: Send, E: From<Error> + Send>(
        &self,
        produce: impl FnOnce(&Sink) -> Result<T, E> + Send,
    ) -> Result<(T, Vec<PackRecord>), (E, Vec<PackRecord>)> {
        let stopped = AtomicBool::new(false);
        let (plain_tx, plain_rx) = bounded::<Plain>(2 * self.workers);
        let (sealed_tx, sealed_rx) = bounded::<Sealed>(2 * self.workers);
        // A rendezvous: at most one pack being filled and one being committed.
        let (pack_tx, pack_rx) = bounded::<pack::FinishedPack>(0);
        let written = Mutex::new(Vec::new());

        let (produced, stage_errors) = std::thread::scope(|s| {
            let mut stages = Vec::new();
            for _ in 0..self.workers {
                let (rx, tx, stopped) = (plain_rx.clone(), sealed_tx.clone(), &stopped);
                stages.push(s.spawn(move || self.seal_worker(rx, tx, stopped)));
            }
            drop((plain_rx, sealed_tx));
            let stopped_ref = &stopped;
            stages.push(s.spawn(move || self.packer(sealed_rx, pack_tx, stopped_ref)));
            let written_ref = &written;
            stages.push(s.spawn(move || self.committer(pack_rx, written_ref, stopped_ref)));

            let sink = Sink {
                repo: self.repo,
                index: self.index,
                doomed: self.doomed,
                in_flight: Mutex::new(HashSet::new()),
                tx: plain_tx,
                stopped: &stopped,
                cache: self.cache,
            };
            let produced = produce(&sink);
            if produced.is_err() {
                stopped.store(true, Ordering::Relaxed);
            }
            drop(sink);
            let errors: Vec<Error> =
                stages.into_iter().filter_map(|h| h.join().expect("pipeline stage panicked").err()).collect();
            (produced, errors)
        });
        let written = written.into_inner().expect("poisoned");
        // A failing stage's error is the cause; the producer then only saw "stopped".
        match (produced, stage_errors.into_iter().next()) {
            (_, Some(err)) => Err((err.into(), written)),
            (Err(err), None) => Err((err, written)),
            (Ok(value), None) => Ok((value, written)),
        }
    }

    fn seal_worker(&self, rx: Receiver<Plain>, tx: Sender<Sealed>, stopped: &AtomicBool) -> Result<(), Error> {
        let mut compressor = zstd::bulk::Compressor::new(self.level)
            .map_err(|e| Error::InvalidRequest(format!("zstd level {} is not usable: {e}", self.level)))?;
        for (id, data, earlier) in rx {
            if stopped.load(Ordering::Relaxed) {
                return Ok(());
            }
            // An unreadable earlier version only costs the delta: the block is stored whole.
            let base = earlier
                .and_then(|e| match e {
                    Earlier::Known(base) => Some(base),
                    Earlier::Read(e) => self
                        .repo
                        .read_base_for(self.index, e, self.cache)
                        .inspect_err(
                            |err| tracing::warn!(chunk = %e.short(), error = %err, "cannot read an earlier block version"),
                        )
                        .ok(),
                })
                // The earlier version may itself be a delta against a base in a doomed pack.
                .filter(|(base, _)| stored(self.index, self.doomed, base));
            let (sealed, base) = match base {
                Some((base, base_data)) => {
                    pack::seal_chunk_against(self.repo.key(), id, &data, base, &base_data, &mut compressor)
                }
                None => (pack::seal_chunk(self.repo.key(), id, &data, &mut compressor), None),
            };
            let raw_len = u32::try_from(data.len()).expect("chunks are below 4 GiB");
            if tx.send((id, sealed, raw_len, base)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Streams sealed chunks into packs; a full pack goes to the committer while the next fills.
    fn packer(
        &self,
        rx: Receiver<Sealed>,
        tx: Sender<pack::FinishedPack<'a>>,
        stopped: &AtomicBool,
    ) -> Result<(), Error> {
        let fail = |e: Error| {
            stopped.store(true, Ordering::Relaxed);
            e
        };
        let target = self.repo.config().pack_size;
        let mut current: Option<PackWriter> = None;
        for (id, sealed, raw_len, base) in rx {
            let writer = match &mut current {
                Some(w) => w,
                None => current.insert(PackWriter::create(self.repo.store(), self.cache).map_err(fail)?),
            };
            writer.add(id, &sealed, raw_len, base).map_err(fail)?;
            if writer.len() >= target {
                let full = current.take().expect("just filled").finish(self.repo.key()).map_err(fail)?;
                if tx.send(full).is_err() {
                    return Ok(());
                }
            }
        }
        if let Some(last) = current.filter(|w| !w.is_empty() && !stopped.load(Ordering::Relaxed)) {
            let _ = tx.send(last.finish(self.repo.key()).map_err(fail)?);
        }
        Ok(())
    }

    /// Makes finished packs durable (fsync and rename on a local store) off the packer's path.
    fn committer(
        &self,
        rx: Receiver<pack::FinishedPack<'a>>,
        written: &Mutex<Vec<PackRecord>>,
        stopped: &AtomicBool,
    ) -> Result<(), Error> {
        for pack in rx {
            let _span = tracing::debug_span!("pack", id = %pack.id.short(), bytes = pack.size).entered();
            match pack.commit() {
                Ok(record) => written.lock().expect("poisoned").push(record),
                Err(e) => {
                    stopped.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// Best-effort removal of packs a failed backup wrote before any index named them.
fn delete_packs(repo: &Repository, packs: &[PackRecord]) {
    for p in packs {
        if let Err(e) = repo.store().delete(&format::pack_key(p.id)) {
            tracing::warn!(pack = %p.id, error = %e, "could not remove a pack of the failed backup; prune will");
        }
    }
}
