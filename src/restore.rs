//! Restore: replays a snapshot into a directory or a stream. Every chunk is authenticated and
//! checked against its id before a byte of it is written. A directory restore is built in a
//! hidden staging folder beside the target and renamed into place only when complete, so a
//! failed restore never leaves a tree that looks valid.

use crossbeam_channel::{Receiver, Sender, bounded};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::progress::Progress;
use crate::repo::crypto::Id;
use crate::repo::index::{ChunkLocation, Index};
use crate::repo::snapshot::{Snapshot, SnapshotKind};
use crate::repo::tree::{Entry, EntryKind, TreeReader};
use crate::repo::{Error, Repository};

/// Chunks fetched and decrypted ahead of the writer, per worker.
const READ_AHEAD: usize = 4;
/// Chunks that lie near each other in a pack are fetched with one ranged read of up to this many
/// bytes: one request instead of hundreds on S3.
const MAX_RUN: u64 = 4 << 20;
/// Reads of this many chunks (or of chunks of this many files, each an open file) are sorted by
/// pack and offset before they become runs, so an incremental's chunks, interleaved with its
/// parent's in file order, still come in a few large reads.
const PLAN_CHUNKS: usize = 8192;
const PLAN_FILES: usize = 256;
/// On a remote store, a run also takes in up to this many unneeded bytes between two chunks: cheaper
/// than another request.
const REMOTE_GAP: u64 = 1 << 20;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

fn workers() -> usize {
    // Fetching is I/O bound on remote stores; a few more threads than cores keep it busy.
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) + 2
}

/// Where a restore is built before it is moved into place.
struct Staging {
    dir: PathBuf,
    /// True when the target already existed (empty): the staging folder is inside it and its
    /// children are moved up at the end, so the target keeps its own mode, owner and mount.
    inside_target: bool,
}

/// Checks that `target` is absent or an empty directory, and creates the staging folder: inside
/// an existing target, else beside it (then renamed to it).
fn prepare_target(target: &Path) -> Result<Staging, Error> {
    let bad = |reason: String| Error::Target { path: target.to_path_buf(), reason };
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).expect("the OS random source works");
    let staging_name = format!(".drctl-restore-{}", hex::encode(suffix));
    let (dir, inside_target) = match fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(bad("it exists and is not empty".into()));
            }
            (target.join(staging_name), true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let absolute = std::path::absolute(target).map_err(|e| bad(e.to_string()))?;
            let parent = absolute.parent().ok_or_else(|| bad("it has no parent directory".into()))?;
            fs::create_dir_all(parent).map_err(|e| bad(format!("cannot create {}: {e}", parent.display())))?;
            let name = absolute.file_name().ok_or_else(|| bad("it has no name".into()))?.to_string_lossy();
            (parent.join(format!(".{name}{staging_name}")), false)
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    fs::create_dir(&dir).map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|e| bad(e.to_string()))?;
    Ok(Staging { dir, inside_target })
}

/// Restores every entry of `snapshot` under `target`.
pub fn restore_to_dir(
    repo: &Repository,
    snapshot: &Snapshot,
    target: &Path,
    progress: &dyn Progress,
) -> Result<RestoreSummary, Error> {
    let _lock = repo.lock_for_reading("restore")?;
    let index = repo.load_index_skipping_damaged()?;
    let staging = prepare_target(target)?;
    progress.start("restoring", Some(snapshot.summary.logical_bytes));
    let result = restore_tree(repo, &index, snapshot, &staging.dir, progress).and_then(|summary| {
        finish_target(&staging, target)?;
        Ok(summary)
    });
    progress.finish();
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging.dir);
    }
    result
}

/// Flushes the staged tree to disk and moves it into place.
fn finish_target(staging: &Staging, target: &Path) -> Result<(), Error> {
    let bad = |reason: String| Error::Target { path: target.to_path_buf(), reason };
    let dir = File::open(&staging.dir).map_err(|e| bad(e.to_string()))?;
    // SAFETY: syncfs on a valid open descriptor.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
        return Err(bad(format!("flushing to disk failed: {}", std::io::Error::last_os_error())));
    }
    if !staging.inside_target {
        return fs::rename(&staging.dir, target).map_err(|e| bad(e.to_string()));
    }
    for child in fs::read_dir(&staging.dir).map_err(|e| bad(e.to_string()))? {
        let child = child.map_err(|e| bad(e.to_string()))?;
        fs::rename(child.path(), target.join(child.file_name())).map_err(|e| bad(e.to_string()))?;
    }
    fs::remove_dir(&staging.dir).map_err(|e| bad(e.to_string()))?;
    File::open(target).and_then(|d| d.sync_all()).map_err(|e| bad(e.to_string()))
}

/// A file being written by several workers; the last one to finish applies its metadata.
struct OpenFile {
    file: File,
    path: PathBuf,
    entry: Entry,
    remaining: AtomicUsize,
}

struct ChunkJob {
    file: Arc<OpenFile>,
    id: Id,
    offset: u64,
}

fn restore_tree(
    repo: &Repository,
    index: &Index,
    snapshot: &Snapshot,
    root: &Path,
    progress: &dyn Progress,
) -> Result<RestoreSummary, Error> {
    let is_root = unsafe { libc::geteuid() } == 0;
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let fail = |e: Error| {
        failed.store(true, Ordering::Relaxed);
        first_error.lock().expect("poisoned").get_or_insert(e);
    };
    let mut summary = RestoreSummary::default();
    let mut dirs = Vec::new();
    let (job_tx, job_rx) = bounded::<ReadRun>(workers() * READ_AHEAD);

    std::thread::scope(|s| {
        for _ in 0..workers() {
            let jobs = job_rx.clone();
            let (fail, failed) = (&fail, &failed);
            s.spawn(move || {
                for run in jobs {
                    if failed.load(Ordering::Relaxed) {
                        continue;
                    }
                    if let Err(e) = write_run(repo, index, &run, is_root, progress) {
                        fail(e);
                    }
                }
            });
        }
        drop(job_rx);
        let gap = if repo.store().is_remote() { REMOTE_GAP } else { 0 };
        let mut planner = Planner { reads: Vec::new(), files: 0, gap, runs: &job_tx };
        let walked = (|| {
            let entries = TreeReader::new(&snapshot.tree, |id| repo.read_chunk(index, id));
            let mut last_parent = PathBuf::new();
            for entry in entries {
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let entry = entry?;
                let path = root.join(entry.relative_path()?);
                let target_err = |e: std::io::Error| Error::Target { path: path.clone(), reason: e.to_string() };
                // Trees list parents first; this only covers a tree that does not.
                if let Some(parent) = path.parent().filter(|p| *p != last_parent) {
                    fs::create_dir_all(parent).map_err(target_err)?;
                    last_parent = parent.to_path_buf();
                }
                match entry.kind {
                    EntryKind::Dir => {
                        summary.dirs += 1;
                        fs::create_dir_all(&path).map_err(target_err)?;
                        dirs.push((path, entry));
                    }
                    EntryKind::Symlink => {
                        summary.symlinks += 1;
                        std::os::unix::fs::symlink(entry.symlink_target()?, &path).map_err(target_err)?;
                        apply_metadata(&path, &entry, is_root)?;
                    }
                    EntryKind::File => {
                        summary.files += 1;
                        summary.bytes += entry.size;
                        let file = File::create(&path).map_err(target_err)?;
                        // Sized first: all-zero chunks are then skipped, leaving holes as the
                        // source (often sparse) had.
                        file.set_len(entry.size).map_err(target_err)?;
                        if entry.chunks.is_empty() {
                            if entry.size != 0 {
                                return Err(Error::corrupt(
                                    "tree",
                                    format!("{} has a size but no data", path.display()),
                                ));
                            }
                            apply_metadata(&path, &entry, is_root)?;
                            continue;
                        }
                        let chunks = entry.chunks.clone();
                        let open = Arc::new(OpenFile { file, path, remaining: AtomicUsize::new(chunks.len()), entry });
                        let mut offset = 0u64;
                        planner.files += 1;
                        for id in chunks {
                            let (pack, loc) =
                                index.get(&id).ok_or_else(|| Error::Missing { object: format!("chunk {id}") })?;
                            planner.reads.push((pack.id, loc, ChunkJob { file: open.clone(), id, offset }));
                            offset += loc.raw_len as u64;
                        }
                        if (planner.reads.len() >= PLAN_CHUNKS || planner.files >= PLAN_FILES) && !planner.flush() {
                            break;
                        }
                        if offset != open.entry.size {
                            return Err(Error::corrupt(
                                "tree",
                                format!("{}: chunk sizes do not add up to the file size", open.path.display()),
                            ));
                        }
                    }
                }
            }
            planner.flush();
            Ok(())
        })();
        drop(job_tx);
        if let Err(e) = walked {
            fail(e);
        }
    });
    if let Some(e) = first_error.into_inner().expect("poisoned") {
        return Err(e);
    }
    // Directory times last, deepest first, since creating entries inside changes them.
    for (path, entry) in dirs.iter().rev() {
        apply_metadata(path, entry, is_root)?;
    }
    Ok(summary)
}

/// Chunks read from one pack with one ranged read.
struct ReadRun {
    pack: Id,
    start: u64,
    len: u64,
    chunks: Vec<(ChunkJob, ChunkLocation)>,
}

impl ReadRun {
    fn new(pack: Id, loc: ChunkLocation, job: ChunkJob) -> ReadRun {
        ReadRun { pack, start: loc.offset as u64, len: loc.sealed_len as u64, chunks: vec![(job, loc)] }
    }

    /// Whether the chunk at `loc` (not before the run's start) lies in the same pack within
    /// `gap` bytes of the run's end, and the run still fits; if so, the run now covers it (the
    /// caller adds the job).
    fn extend(&mut self, pack: Id, loc: ChunkLocation, gap: u64) -> bool {
        let (offset, end) = (loc.offset as u64, loc.offset as u64 + loc.sealed_len as u64);
        let fits = pack == self.pack
            && offset >= self.start
            && offset <= self.start + self.len + gap
            && end - self.start <= MAX_RUN;
        if fits {
            self.len = self.len.max(end - self.start);
        }
        fits
    }
}

/// Collects the chunk reads of a stretch of files and sends them as runs in pack order.
struct Planner<'a> {
    reads: Vec<(Id, ChunkLocation, ChunkJob)>,
    /// Files with reads collected (each holds an open file until its chunks are written).
    files: usize,
    gap: u64,
    runs: &'a Sender<ReadRun>,
}

impl Planner<'_> {
    /// Sends what was collected; false when the workers stopped (a failure).
    fn flush(&mut self) -> bool {
        let mut reads = std::mem::take(&mut self.reads);
        self.files = 0;
        reads.sort_by_key(|(pack, loc, _)| (*pack, loc.offset));
        let mut run: Option<ReadRun> = None;
        for (pack, loc, job) in reads {
            if let Some(current) = &mut run
                && current.extend(pack, loc, self.gap)
            {
                current.chunks.push((job, loc));
                continue;
            }
            if let Some(done) = run.replace(ReadRun::new(pack, loc, job))
                && self.runs.send(done).is_err()
            {
                return false;
            }
        }
        run.is_none_or(|last| self.runs.send(last).is_ok())
    }
}

/// Fetches a run with one read, then opens and writes each of its chunks.
fn write_run(
    repo: &Repository,
    index: &Index,
    run: &ReadRun,
    is_root: bool,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let sealed = repo.read_pack_range(run.pack, run.start, run.len)?;
    for (job, loc) in &run.chunks {
        let at = (loc.offset as u64 - run.start) as usize;
        let data = repo.open_chunk(index, run.pack, job.id, *loc, &sealed[at..at + loc.sealed_len as usize])?;
        write_chunk(&data, job, is_root, progress)?;
    }
    Ok(())
}

fn write_chunk(data: &[u8], job: &ChunkJob, is_root: bool, progress: &dyn Progress) -> Result<(), Error> {
    if data.iter().any(|&b| b != 0) {
        job.file
            .file
            .write_all_at(data, job.offset)
            .map_err(|e| Error::Target { path: job.file.path.clone(), reason: e.to_string() })?;
    }
    progress.add(data.len() as u64);
    if job.file.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
        apply_metadata(&job.file.path, &job.file.entry, is_root)?;
    }
    Ok(())
}

/// Sets owner (as root), mode and modification time. Owner first: chown clears setuid bits.
fn apply_metadata(path: &Path, entry: &Entry, is_root: bool) -> Result<(), Error> {
    let err = |e: std::io::Error| Error::Target { path: path.to_path_buf(), reason: e.to_string() };
    let mtime = filetime::FileTime::from_unix_time(entry.mtime, entry.mtime_nsec.min(999_999_999));
    if entry.kind == EntryKind::Symlink {
        if is_root {
            std::os::unix::fs::lchown(path, Some(entry.uid), Some(entry.gid)).map_err(err)?;
        }
        return filetime::set_symlink_file_times(path, mtime, mtime).map_err(err);
    }
    if is_root {
        std::os::unix::fs::chown(path, Some(entry.uid), Some(entry.gid)).map_err(err)?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(entry.mode)).map_err(err)?;
    filetime::set_file_times(path, mtime, mtime).map_err(err)
}

/// Writes the one stream of a stream snapshot to `out`, in order, fetching ahead in parallel.
pub fn restore_to_writer(
    repo: &Repository,
    snapshot: &Snapshot,
    out: &mut dyn Write,
    progress: &dyn Progress,
) -> Result<u64, Error> {
    if !matches!(snapshot.kind, SnapshotKind::Stream | SnapshotKind::PgDump) {
        return Err(Error::InvalidRequest(
            "only a stream snapshot (backup --stdin) can be restored to standard output; use --to DIR".into(),
        ));
    }
    let _lock = repo.lock_for_reading("restore")?;
    let index = repo.load_index_skipping_damaged()?;
    let mut entries = TreeReader::new(&snapshot.tree, |id| repo.read_chunk(&index, id));
    let entry = entries.next().ok_or_else(|| Error::corrupt("tree", "a stream snapshot without an entry"))??;
    progress.start("restoring", Some(entry.size));
    let (job_tx, job_rx) = bounded::<(Id, Sender<Result<Vec<u8>, Error>>)>(workers());
    let (order_tx, order_rx) = bounded::<Receiver<Result<Vec<u8>, Error>>>(workers() * READ_AHEAD);
    let written = std::thread::scope(|s| {
        for _ in 0..workers() {
            let (jobs, index) = (job_rx.clone(), &index);
            s.spawn(move || {
                for (id, done) in jobs {
                    let _ = done.send(repo.read_chunk(index, id));
                }
            });
        }
        drop(job_rx);
        let chunks = &entry.chunks;
        s.spawn(move || {
            for &id in chunks {
                let (done, pending) = bounded(1);
                if order_tx.send(pending).is_err() || job_tx.send((id, done)).is_err() {
                    return;
                }
            }
        });
        let mut written = 0u64;
        for pending in order_rx {
            let data = pending.recv().map_err(|_| Error::InvalidRequest("chunk reader stopped".into()))??;
            out.write_all(&data).map_err(|e| Error::Target { path: "<stdout>".into(), reason: e.to_string() })?;
            written += data.len() as u64;
            progress.add(data.len() as u64);
        }
        Ok::<u64, Error>(written)
    })?;
    out.flush().map_err(|e| Error::Target { path: "<stdout>".into(), reason: e.to_string() })?;
    progress.finish();
    if written != entry.size {
        return Err(Error::corrupt(
            "tree",
            format!("the stream has {written} bytes but its entry says {}", entry.size),
        ));
    }
    Ok(written)
}
