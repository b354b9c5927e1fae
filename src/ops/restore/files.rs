//! Restore: replays a snapshot into a directory or a stream. Every chunk is authenticated and
//! checked against its id before a byte of it is written. A directory restore is built in a
//! hidden staging folder beside the target and renamed into place only when complete, so a
//! failed restore never leaves a tree that looks valid. Into an existing (empty) target, a mount
//! point, the staging folder is inside it and its entries move up one by one, pg_control last; a
//! restore killed half way through that leaves its folder behind, and the next one names it.
//!
//! A snapshot's tree is not trusted to be well formed: every entry is created relative to an
//! open directory descriptor with calls that never follow a symbolic link (`openat` with
//! `O_NOFOLLOW`, `mkdirat`, `symlinkat`, metadata through the entry's own descriptor or with
//! `AT_SYMLINK_NOFOLLOW`), and a path given twice is refused. So a tree with `a -> /etc` and then
//! `a/passwd`, or a symlink and a file at one path, cannot write or chmod outside the target.

use crossbeam_channel::{Receiver, Sender, bounded};
use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::plan;
use crate::ops::Error;
use crate::progress::Progress;
use crate::repo::Id;
use crate::repo::index::Index;
use crate::repo::pack;
use crate::repo::snapshot::{Snapshot, SnapshotKind};
use crate::repo::tree::{Entry, EntryKind, TreeReader};
use crate::repo::{self, Repository};

/// Chunks fetched and decrypted ahead of the writer of a stream, per worker.
const READ_AHEAD: usize = 4;
/// Chunks that lie near each other in a pack are fetched with one ranged read of up to this many
/// bytes: one request instead of hundreds on S3. Each worker holds one run and one more waits
/// for each, which bounds a restore's memory.
const MAX_RUN: u64 = 8 << 20;
/// And decode to at most this many bytes, so that the workers share the work of an incremental's
/// pack of deltas (8 MiB of them decode to about 2 GiB).
const MAX_RUN_DECODED: u64 = 32 << 20;
/// A restore plans the reads of up to this many chunks (or of this many files) at once, in pack
/// order ([`plan`]); a larger snapshot is restored in several such stretches. About 100 bytes of
/// plan per chunk: 25 MiB at most, and 32 GiB of relation files (128 KiB blocks) per stretch.
const PLAN_CHUNKS: usize = 1 << 18;
const PLAN_FILES: usize = 1 << 17;
/// On a remote store, a run also takes in up to this many unneeded bytes between two chunks: cheaper
/// than another request.
const REMOTE_GAP: u64 = 256 << 10;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// With `skip_damaged`: what was left out because its data could not be read or
    /// authenticated (relative path, reason). Such a file is not in the target at all.
    pub not_restored: Vec<(String, String)>,
}

/// Files left out of a restore that skips damaged data, each with the first reason found.
#[derive(Default)]
struct Skipped(Mutex<Vec<(PathBuf, String, u64)>>);

impl Skipped {
    /// Marks `file` damaged; when `counts`, the chunk that failed is counted as done without
    /// being written (a base parked for a delta is not one of the file's chunks).
    fn mark(&self, file: &FileSlot, err: &repo::Error, counts: bool) {
        if !file.damaged.swap(true, Ordering::AcqRel) {
            self.0.lock().expect("poisoned").push((file.relative.clone(), err.to_string(), file.entry.size));
        }
        if counts {
            file.remaining.fetch_sub(1, Ordering::AcqRel);
        }
    }
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
    /// The staging folder, flock-ed while this restore runs: a folder no process holds was left
    /// by a restore that died (kill -9, a lost node), and the next restore clears it.
    _held: File,
}

/// Staging folders are named `<prefix><random>`: `.drctl-restore-…` inside an existing target,
/// `.<target name>.drctl-restore-…` beside a new one.
const STAGING: &str = ".drctl-restore-";

/// The staging folders named `<prefix>…` among a directory's `entries` that no running restore
/// holds (left by a restore that died), and how many other entries it has.
fn dead_staging(entries: fs::ReadDir, prefix: &str) -> std::io::Result<(Vec<PathBuf>, usize)> {
    let (mut dead, mut others) = (Vec::new(), 0);
    for entry in entries {
        let entry = entry?;
        let staging = entry.file_name().as_bytes().starts_with(prefix.as_bytes()) && entry.file_type()?.is_dir();
        // The lock is released when the folder closes, at once.
        if staging && File::open(entry.path())?.try_lock().is_ok() {
            dead.push(entry.path());
        } else {
            others += 1;
        }
    }
    Ok((dead, others))
}

fn remove_dead_staging(path: &Path) -> std::io::Result<()> {
    tracing::warn!(folder = %path.display(), "removing what a restore that died left behind");
    fs::remove_dir_all(path)
}

/// Checks that `target` is absent or an empty directory, and creates the staging folder: inside
/// an existing target, else beside it (then renamed to it).
fn prepare_target(target: &Path) -> Result<Staging, Error> {
    let bad = |reason: String| Error::Target { path: target.to_path_buf(), reason };
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).expect("the OS random source works");
    let staging_name = format!("{STAGING}{}", hex::encode(suffix));
    let (dir, inside_target) = match fs::read_dir(target) {
        Ok(entries) => {
            let (dead, others) = dead_staging(entries, STAGING).map_err(|e| bad(e.to_string()))?;
            if let (Some(folder), true) = (dead.first(), others > 0) {
                // The target was empty when that restore began, so what is beside its folder
                // is what it had moved up when it died.
                return Err(bad(format!(
                    "a restore into it was interrupted while moving its files into place (it left {}): \
                     it holds part of a snapshot, which must not be used; empty it and restore again",
                    folder.display()
                )));
            }
            if others > 0 {
                return Err(bad("it exists and is not empty".into()));
            }
            for folder in dead {
                remove_dead_staging(&folder).map_err(|e| bad(e.to_string()))?;
            }
            (target.join(staging_name), true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let absolute = std::path::absolute(target).map_err(|e| bad(e.to_string()))?;
            let parent = absolute.parent().ok_or_else(|| bad("it has no parent directory".into()))?;
            fs::create_dir_all(parent).map_err(|e| bad(format!("cannot create {}: {e}", parent.display())))?;
            let name = absolute.file_name().ok_or_else(|| bad("it has no name".into()))?.to_string_lossy();
            let entries = fs::read_dir(parent).map_err(|e| bad(e.to_string()))?;
            let (dead, _) = dead_staging(entries, &format!(".{name}{STAGING}")).map_err(|e| bad(e.to_string()))?;
            for folder in dead {
                remove_dead_staging(&folder).map_err(|e| bad(e.to_string()))?;
            }
            (parent.join(format!(".{name}{staging_name}")), false)
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    fs::create_dir(&dir).map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|e| bad(e.to_string()))?;
    let held = File::open(&dir).map_err(|e| bad(e.to_string()))?;
    // Held as long as the staging folder is in use.
    held.try_lock().map_err(|e| bad(format!("cannot lock {}: {e}", dir.display())))?;
    Ok(Staging { dir, inside_target, _held: held })
}

/// Restores every entry of `snapshot` under `target`. Damaged data stops the restore (and
/// nothing is left in `target`), unless `skip_damaged`: then every file whose data is intact is
/// restored, and each file with a chunk that cannot be read or authenticated is left out (never
/// written in part) and listed in the summary.
pub fn restore_to_dir(
    repo: &Repository,
    snapshot: &Snapshot,
    target: &Path,
    skip_damaged: bool,
    progress: &dyn Progress,
) -> Result<RestoreSummary, Error> {
    let _lock = repo.lock_for_reading("restore")?;
    let index = repo.load_index_skipping_damaged()?;
    let staging = prepare_target(target)?;
    progress.start("restoring", Some(snapshot.summary.logical_bytes));
    let result = restore_tree(repo, &index, snapshot, &staging.dir, skip_damaged, progress).and_then(|summary| {
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
    let children = fs::read_dir(&staging.dir)
        .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect::<std::io::Result<Vec<_>>>())
        .map_err(|e| bad(e.to_string()))?;
    for name in move_order(children) {
        fs::rename(staging.dir.join(&name), target.join(&name)).map_err(|e| bad(e.to_string()))?;
    }
    fs::remove_dir(&staging.dir).map_err(|e| bad(e.to_string()))?;
    File::open(target).and_then(|d| d.sync_all()).map_err(|e| bad(e.to_string()))
}

/// The order in which a staged tree's top entries move into an existing target: `global` (which
/// holds pg_control) last, so that a data directory a kill left half moved has no pg_control and
/// PostgreSQL refuses to start on it. The staging folder, removed after the last move, tells the
/// next restore what happened.
fn move_order(mut names: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    names.sort_by_key(|name| name == "global");
    names
}

/// A file of the stretch being restored; the write that completes it applies its metadata.
struct FileSlot {
    relative: PathBuf,
    /// Its metadata (its chunk list is in the plan, not here).
    entry: Entry,
    remaining: AtomicUsize,
    /// A chunk of it could not be read or authenticated (when skipping damaged data).
    damaged: AtomicBool,
}

/// Files walked since the last plan, and the chunk reads `(chunk, file, offset)` they need.
#[derive(Default)]
struct Segment {
    files: Vec<FileSlot>,
    reads: Vec<(Id, u32, u64)>,
}

fn restore_tree(
    repo: &Repository,
    index: &Index,
    snapshot: &Snapshot,
    root: &Path,
    skip_damaged: bool,
    progress: &dyn Progress,
) -> Result<RestoreSummary, Error> {
    let skipped = Skipped::default();
    let mut tree_lost: Option<(String, String)> = None;
    let is_root = unsafe { libc::geteuid() } == 0;
    let mut summary = RestoreSummary::default();
    let mut dirs: Vec<(PathBuf, PathBuf, Entry)> = Vec::new();
    let root_fd = File::open(root).map_err(|e| Error::Target { path: root.to_path_buf(), reason: e.to_string() })?;
    let skipping = skip_damaged.then_some(&skipped);
    let restorer = Restorer { repo, index, root, root_fd: root_fd.into(), is_root, skipping, progress };
    let mut segment = Segment::default();
    let mut dirs_open = DirCache::new(root)?;
    let entries = TreeReader::new(&snapshot.tree, |id| repo.read_chunk(index, id));
    let mut last = String::from("the first entry");
    for entry in entries {
        let entry = match entry {
            Err(e) if skip_damaged && e.is_damage() => {
                // The rest of the tree cannot be read: what was listed before is kept.
                tree_lost = Some((format!("every entry after {last}"), e.to_string()));
                break;
            }
            entry => entry?,
        };
        let relative = entry.relative_path()?;
        last = relative.display().to_string();
        let path = root.join(&relative);
        let target_err = |e: std::io::Error| Error::Target { path: path.clone(), reason: e.to_string() };
        let name = relative.file_name().expect("a plain relative path has a name");
        let parent = dirs_open.get(relative.parent().unwrap_or(Path::new("")))?;
        match entry.kind {
            EntryKind::Dir => {
                summary.dirs += 1;
                make_dir(parent, name, &relative)?;
                dirs.push((path, relative, entry));
            }
            EntryKind::Symlink => {
                summary.symlinks += 1;
                let link = cstr(entry.symlink_target()?.as_os_str())?;
                // SAFETY: valid C strings and an open directory descriptor.
                let made = unsafe { libc::symlinkat(link.as_ptr(), parent.as_raw_fd(), cstr(name)?.as_ptr()) };
                if made != 0 {
                    return Err(exists_or(std::io::Error::last_os_error(), &relative, &path));
                }
                apply_link_metadata(parent, name, &path, &entry, is_root)?;
            }
            EntryKind::File => {
                summary.files += 1;
                summary.bytes += entry.size;
                let file = create_file(parent, name).map_err(|e| exists_or(e, &relative, &path))?;
                // Sized first: all-zero chunks are then skipped, leaving holes as the source
                // (often sparse) had.
                file.set_len(entry.size).map_err(target_err)?;
                if entry.chunks.is_empty() {
                    if entry.size != 0 {
                        return Err(Error::corrupt("tree", format!("{} has a size but no data", path.display())));
                    }
                    apply_metadata(&file, &path, &entry, is_root)?;
                    continue;
                }
                let sizes = entry
                    .chunks
                    .iter()
                    .map(|id| {
                        index
                            .get(id)
                            .map(|(_, loc)| loc.raw_len as u64)
                            .ok_or_else(|| repo::Error::Missing { object: format!("chunk {id}") })
                    })
                    .collect::<Result<Vec<_>, _>>();
                let sizes = match sizes {
                    Err(e) if skip_damaged => {
                        // Not one byte of it is written; it is removed below.
                        skipped.0.lock().expect("poisoned").push((relative, e.to_string(), entry.size));
                        continue;
                    }
                    sizes => sizes?,
                };
                if sizes.iter().sum::<u64>() != entry.size {
                    return Err(Error::corrupt(
                        "tree",
                        format!("{}: chunk sizes do not add up to the file size", path.display()),
                    ));
                }
                let mut entry = entry;
                let chunks = std::mem::take(&mut entry.chunks);
                let remaining = AtomicUsize::new(chunks.len());
                let file = segment.files.len() as u32;
                let mut offset = 0u64;
                for (id, size) in chunks.into_iter().zip(sizes) {
                    segment.reads.push((id, file, offset));
                    offset += size;
                }
                segment.files.push(FileSlot { relative, entry, remaining, damaged: AtomicBool::new(false) });
                if segment.reads.len() >= PLAN_CHUNKS || segment.files.len() >= PLAN_FILES {
                    restorer.restore(std::mem::take(&mut segment))?;
                }
            }
        }
    }
    restorer.restore(segment)?;
    // Files with damaged data go whole: a restore never leaves a byte it did not authenticate.
    let mut left_out = skipped.0.into_inner().expect("poisoned");
    left_out.sort();
    for (relative, reason, size) in left_out {
        let parent = dirs_open.get(relative.parent().unwrap_or(Path::new("")))?;
        let name = cstr(relative.file_name().expect("a file has a name"))?;
        // SAFETY: an open directory and a C string; unlinkat never follows a link.
        if unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), 0) } != 0 {
            let reason = std::io::Error::last_os_error().to_string();
            return Err(Error::Target { path: root.join(&relative), reason });
        }
        summary.files -= 1;
        summary.bytes -= size;
        summary.not_restored.push((relative.display().to_string(), reason));
    }
    summary.not_restored.extend(tree_lost);
    // Directory times last, deepest first, since creating entries inside changes them.
    for (path, relative, entry) in dirs.iter().rev() {
        let dir = dirs_open.get(relative)?;
        apply_metadata(dir, path, entry, is_root)?;
    }
    Ok(summary)
}

/// What the workers restoring a stretch of files share.
struct Restorer<'a> {
    repo: &'a Repository,
    index: &'a Index,
    root: &'a Path,
    root_fd: OwnedFd,
    is_root: bool,
    skipping: Option<&'a Skipped>,
    progress: &'a dyn Progress,
}

/// A pack of the plan: its runs still to go, and its deltas whose bases it parks itself, which
/// wait for all of its runs.
#[derive(Default)]
struct PackState {
    runs_left: AtomicUsize,
    deferred: Mutex<Vec<(plan::Item, Vec<u8>)>>,
}

impl Restorer<'_> {
    /// Restores the files of `segment`, reading the repository in the plan's order.
    fn restore(&self, segment: Segment) -> Result<(), Error> {
        let Segment { files, reads } = segment;
        if reads.is_empty() {
            return Ok(());
        }
        let remote = self.repo.store().is_remote();
        let gap = if remote { REMOTE_GAP } else { 0 };
        let how = plan::Reads { gap, max_run: MAX_RUN, max_decoded: MAX_RUN_DECODED, park: remote };
        let plan = plan::build(self.index, reads, how);
        let mut packs: HashMap<u32, PackState> = HashMap::new();
        for run in plan.runs() {
            packs.entry(run.pack).or_default().runs_left.fetch_add(1, Ordering::Relaxed);
        }
        for wave in plan.waves {
            self.run_wave(wave, &files, &packs)?;
        }
        Ok(())
    }

    /// Runs of one wave on all workers; the first error stops them.
    fn run_wave(&self, wave: Vec<plan::Run>, files: &[FileSlot], packs: &HashMap<u32, PackState>) -> Result<(), Error> {
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        let (run_tx, run_rx) = bounded::<plan::Run>(workers());
        std::thread::scope(|s| {
            for _ in 0..workers() {
                let (runs, failed, first_error) = (run_rx.clone(), &failed, &first_error);
                let mut writer = Writer { r: self, files, open: Vec::new() };
                s.spawn(move || {
                    for run in runs {
                        if failed.load(Ordering::Relaxed) {
                            continue;
                        }
                        if let Err(e) = writer.run(run, packs) {
                            failed.store(true, Ordering::Relaxed);
                            first_error.lock().expect("poisoned").get_or_insert(e);
                        }
                    }
                });
            }
            drop(run_rx);
            for run in wave {
                if failed.load(Ordering::Relaxed) || run_tx.send(run).is_err() {
                    break;
                }
            }
            drop(run_tx);
        });
        first_error.into_inner().expect("poisoned").map_or(Ok(()), Err)
    }
}

/// Files a worker keeps open: a pack's chunks usually go to a few files.
const OPEN_FILES: usize = 8;

/// One worker: reads runs, opens their chunks and writes them where they go.
struct Writer<'a> {
    r: &'a Restorer<'a>,
    files: &'a [FileSlot],
    open: Vec<OpenFile>,
}

/// A file a worker has open, with the byte ranges it wrote there for good (not parked bases,
/// which their deltas overwrite) since it last started writing them to disk.
struct OpenFile {
    n: u32,
    file: File,
    written: Vec<(u64, u64)>,
}

impl OpenFile {
    /// Starts writing the ranges written for good to disk, without waiting, so the disk works
    /// while chunks are still decoded and the flush at the end has little left to do. Parked
    /// bases stay in memory: writing them out would write those blocks twice.
    fn start_writeback(&mut self) {
        for (offset, len) in self.written.drain(..) {
            // SAFETY: an open descriptor; the call only starts writeback of dirty pages.
            unsafe {
                libc::sync_file_range(self.file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE)
            };
        }
    }

    fn wrote(&mut self, offset: u64, len: u64) {
        match self.written.last_mut() {
            Some((start, run)) if *start + *run == offset => *run += len,
            _ => self.written.push((offset, len)),
        }
    }
}

impl Writer<'_> {
    /// Fetches a run with one read, then opens and writes each of its chunks. With skipping, a
    /// chunk that cannot be read or authenticated marks its files damaged instead of failing
    /// (anything else, the target or an outage, still stops the restore).
    fn run(&mut self, run: plan::Run, packs: &HashMap<u32, PackState>) -> Result<(), Error> {
        let state = &packs[&run.pack];
        let pack = self.r.index.packs[run.pack as usize].id;
        match self.r.repo.read_pack_range(pack, run.start, run.len) {
            Ok(sealed) => {
                for item in run.items {
                    let at = (item.loc.offset as u64 - run.start) as usize;
                    let sealed = &sealed[at..at + item.loc.sealed_len as usize];
                    if item.base.is_some_and(|b| b.parked_by == Some(run.pack)) {
                        state.deferred.lock().expect("poisoned").push((item, sealed.to_vec()));
                    } else {
                        self.item(pack, &item, sealed)?;
                    }
                }
            }
            Err(e) if e.is_damage() && self.r.skipping.is_some() => {
                run.items.iter().for_each(|item| self.failed(item, &e))
            }
            Err(e) => return Err(e.into()),
        }
        if state.runs_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let deferred = std::mem::take(&mut *state.deferred.lock().expect("poisoned"));
            for (item, sealed) in deferred {
                self.item(pack, &item, &sealed)?;
            }
        }
        self.open.iter_mut().for_each(OpenFile::start_writeback);
        Ok(())
    }

    /// Opens one chunk (a delta against its base parked in the target, or else read from the
    /// repository) and writes it to each of its targets.
    fn item(&mut self, pack: Id, item: &plan::Item, sealed: &[u8]) -> Result<(), Error> {
        let r = self.r;
        let opened = r.repo.open_chunk_with(pack, item.id, item.loc, sealed, &mut |base| match item.base {
            Some(planned) if planned.id == base && planned.parked_by.is_some() => {
                let mut data = vec![0; item.loc.raw_len as usize];
                let at = item.targets[0];
                let read_back =
                    |e: String| pack::ChunkError::Base(base, format!("reading it back from the target: {e}"));
                let open = self.file(at.file).map_err(|e| read_back(e.to_string()))?;
                open.file.read_exact_at(&mut data, at.offset).map_err(|e| read_back(e.to_string()))?;
                Ok(data)
            }
            _ => r.repo.read_delta_base(r.index, base),
        });
        match opened {
            Ok(data) => self.write(item, &data),
            Err(e) if e.is_damage() && r.skipping.is_some() => {
                self.failed(item, &e);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn write(&mut self, item: &plan::Item, data: &[u8]) -> Result<(), Error> {
        let zero = data.iter().all(|&b| b == 0);
        let parked = item.base.is_some_and(|b| b.parked_by.is_some());
        for (i, at) in item.targets.iter().enumerate() {
            // Zeros are a hole already, except where a base was parked.
            if !zero || (i == 0 && parked) {
                let (files, root) = (self.files, self.r.root);
                let open = self.file(at.file)?;
                open.file.write_all_at(data, at.offset).map_err(|e| target_error(root, files, at.file, e))?;
                if at.counts {
                    open.wrote(at.offset, data.len() as u64);
                }
            }
            if !at.counts {
                continue;
            }
            self.r.progress.add(data.len() as u64);
            let (slot, r) = (&self.files[at.file as usize], self.r);
            if slot.remaining.fetch_sub(1, Ordering::AcqRel) == 1 && !slot.damaged.load(Ordering::Acquire) {
                let open = self.file(at.file)?;
                apply_metadata(&open.file, &r.root.join(&slot.relative), &slot.entry, r.is_root)?;
            }
        }
        Ok(())
    }

    /// Marks every file `item` was to be written to as damaged.
    fn failed(&self, item: &plan::Item, err: &repo::Error) {
        let skipped = self.r.skipping.expect("only when skipping damaged data");
        for at in &item.targets {
            skipped.mark(&self.files[at.file as usize], err, at.counts);
        }
    }

    /// An open descriptor of file `n`, reopened below the root without following a link.
    fn file(&mut self, n: u32) -> Result<&mut OpenFile, Error> {
        match self.open.iter().position(|open| open.n == n) {
            Some(0) => {}
            Some(i) => {
                let entry = self.open.remove(i);
                self.open.insert(0, entry);
            }
            None => {
                let file = open_below(&self.r.root_fd, &self.files[n as usize].relative)
                    .map_err(|e| target_error(self.r.root, self.files, n, e))?;
                self.open.insert(0, OpenFile { n, file, written: Vec::new() });
                if self.open.len() > OPEN_FILES {
                    self.open.pop().expect("more than one").start_writeback();
                }
            }
        }
        Ok(&mut self.open[0])
    }
}

fn target_error(root: &Path, files: &[FileSlot], n: u32, e: std::io::Error) -> Error {
    Error::Target { path: root.join(&files[n as usize].relative), reason: e.to_string() }
}

/// Opens the regular file at `relative` below `root` for reading and writing, one component at a
/// time, following no link on the way.
fn open_below(root: &OwnedFd, relative: &Path) -> std::io::Result<File> {
    let mut dir: Option<OwnedFd> = None;
    let mut parts = relative.components().peekable();
    while let Some(part) = parts.next() {
        let at = dir.as_ref().unwrap_or(root);
        if parts.peek().is_some() {
            dir = Some(open_dir_at(at, part.as_os_str())?);
            continue;
        }
        let name = CString::new(part.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
        let flags = libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: an open directory and a C string; the returned descriptor is owned here.
        let fd = unsafe { libc::openat(at.as_raw_fd(), name.as_ptr(), flags) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    Err(std::io::Error::other("an empty path"))
}

/// Sets owner (as root), mode and modification time through the entry's own descriptor, so no
/// link is followed. Owner first: chown clears setuid bits.
fn apply_metadata(fd: &impl AsRawFd, path: &Path, entry: &Entry, is_root: bool) -> Result<(), Error> {
    let fd = fd.as_raw_fd();
    let times = [mtime_of(entry); 2];
    // SAFETY: plain syscalls on an open descriptor; `times` outlives the call.
    let failed = (is_root && unsafe { libc::fchown(fd, entry.uid, entry.gid) } != 0)
        || unsafe { libc::fchmod(fd, entry.mode & 0o7777) } != 0
        || unsafe { libc::futimens(fd, times.as_ptr()) } != 0;
    if failed {
        return Err(Error::Target { path: path.to_path_buf(), reason: std::io::Error::last_os_error().to_string() });
    }
    Ok(())
}

/// Owner (as root) and time of the symlink `name` in `dir`, never of what it points to.
fn apply_link_metadata(dir: &OwnedFd, name: &OsStr, path: &Path, entry: &Entry, is_root: bool) -> Result<(), Error> {
    let name = cstr(name)?;
    let times = [mtime_of(entry); 2];
    let no_follow = libc::AT_SYMLINK_NOFOLLOW;
    // SAFETY: plain syscalls with an open directory, a C string and `times` outliving the call.
    let failed = (is_root
        && unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), entry.uid, entry.gid, no_follow) } != 0)
        || unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), times.as_ptr(), no_follow) } != 0;
    if failed {
        return Err(Error::Target { path: path.to_path_buf(), reason: std::io::Error::last_os_error().to_string() });
    }
    Ok(())
}

fn mtime_of(entry: &Entry) -> libc::timespec {
    libc::timespec { tv_sec: entry.mtime, tv_nsec: entry.mtime_nsec.min(999_999_999) as libc::c_long }
}

fn cstr(name: &OsStr) -> Result<CString, Error> {
    CString::new(name.as_bytes()).map_err(|_| Error::corrupt("tree", format!("name {name:?} holds a NUL byte")))
}

/// Opens `name` in `dir` as a directory, refusing a symlink or anything else in its place.
fn open_dir_at(dir: &OwnedFd, name: &OsStr) -> std::io::Result<OwnedFd> {
    let name = CString::new(name.as_bytes()).map_err(std::io::Error::other)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: an open directory and a C string; the returned descriptor is owned here.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates the new regular file `name` in `dir`; an existing entry (of any kind) is an error.
fn create_file(dir: &OwnedFd, name: &OsStr) -> std::io::Result<File> {
    let name = CString::new(name.as_bytes()).map_err(std::io::Error::other)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: an open directory and a C string; the returned descriptor is owned here.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, 0o600 as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Creates directory `name` in `dir`. One that exists already may only be a directory (made for
/// an earlier entry below it): a symlink or file there would be followed or replaced.
fn make_dir(dir: &OwnedFd, name: &OsStr, relative: &Path) -> Result<(), Error> {
    let c = cstr(name)?;
    // SAFETY: an open directory and a C string.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o777) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.kind() == std::io::ErrorKind::AlreadyExists && open_dir_at(dir, name).is_ok() {
        return Ok(());
    }
    Err(exists_or(err, relative, relative))
}

/// A path the tree gives twice is a malformed (or hostile) tree; other failures are the target's.
fn exists_or(err: std::io::Error, relative: &Path, path: &Path) -> Error {
    if err.kind() == std::io::ErrorKind::AlreadyExists {
        return Error::corrupt("tree", format!("{} appears twice in the tree; refused", relative.display()));
    }
    Error::Target { path: path.to_path_buf(), reason: err.to_string() }
}

/// Directories of the staged tree, each reached from the staging folder one component at a
/// time without following a link, and created if absent. The last one opened is kept: trees list a directory's entries together.
struct DirCache {
    root: OwnedFd,
    last: Option<(PathBuf, OwnedFd)>,
}

impl DirCache {
    fn new(root: &Path) -> Result<DirCache, Error> {
        let root_fd =
            File::open(root).map_err(|e| Error::Target { path: root.to_path_buf(), reason: e.to_string() })?;
        Ok(DirCache { root: root_fd.into(), last: None })
    }

    fn get(&mut self, relative: &Path) -> Result<&OwnedFd, Error> {
        if relative.as_os_str().is_empty() {
            return Ok(&self.root);
        }
        if self.last.as_ref().is_none_or(|(p, _)| p != relative) {
            let mut below = PathBuf::new();
            let mut dir: Option<OwnedFd> = None;
            for part in relative.components() {
                let name = part.as_os_str();
                below.push(name);
                let at = dir.as_ref().unwrap_or(&self.root);
                let opened = match open_dir_at(at, name) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        make_dir(at, name, &below)?;
                        open_dir_at(at, name)
                    }
                    other => other,
                };
                dir = Some(opened.map_err(|e| match e.raw_os_error() {
                    Some(libc::ELOOP | libc::ENOTDIR) => Error::corrupt(
                        "tree",
                        format!(
                            "{} lies below {}, which the tree made a symlink or file; refused",
                            relative.display(),
                            below.display()
                        ),
                    ),
                    _ => Error::Target { path: below.clone(), reason: e.to_string() },
                })?);
            }
            self.last = Some((relative.to_path_buf(), dir.expect("a non-empty path has a component")));
        }
        Ok(&self.last.as_ref().expect("set above").1)
    }
}

/// Writes the one stream of a stream snapshot to `out`, in order, fetching ahead in parallel.
pub fn restore_to_writer(
    repo: &Repository,
    snapshot: &Snapshot,
    out: &mut dyn Write,
    progress: &dyn Progress,
) -> Result<u64, Error> {
    if !matches!(snapshot.kind, SnapshotKind::Stream | SnapshotKind::PgDump) {
        return Err(Error::Usage(
            "only a stream snapshot (backup --stdin) can be restored to standard output; use --to DIR".into(),
        ));
    }
    let _lock = repo.lock_for_reading("restore")?;
    let index = repo.load_index_skipping_damaged()?;
    let mut entries = TreeReader::new(&snapshot.tree, |id| repo.read_chunk(&index, id));
    let entry = entries.next().ok_or_else(|| Error::corrupt("tree", "a stream snapshot without an entry"))??;
    progress.start("restoring", Some(entry.size));
    let (job_tx, job_rx) = bounded::<(Id, Sender<Result<Vec<u8>, repo::Error>>)>(workers());
    let (order_tx, order_rx) = bounded::<Receiver<Result<Vec<u8>, repo::Error>>>(workers() * READ_AHEAD);
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
            let data = pending.recv().map_err(|_| Error::Usage("chunk reader stopped".into()))??;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::repo::InitOptions;
    use crate::repo::key::Secret;
    use crate::repo::tree::TreeWriter;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;

    #[test]
    fn a_killed_restores_staging_folder_does_not_block_the_next_one_but_a_running_ones_does() {
        let dir = tempfile::tempdir().unwrap();
        // A mount point a restore was killed in: its staging folder, half written, inside.
        let mount = dir.path().join("mount");
        fs::create_dir_all(mount.join(".drctl-restore-0123456789ab/base")).unwrap();
        fs::write(mount.join(".drctl-restore-0123456789ab/base/1"), b"half").unwrap();
        // A new folder a restore was killed making: its staging folder beside it.
        fs::create_dir_all(dir.path().join(".new.drctl-restore-0123456789ab")).unwrap();
        let inside = prepare_target(&mount).expect("the dead restore's folder is cleared");
        assert_eq!(fs::read_dir(&mount).unwrap().count(), 1, "only the new staging folder is left");
        prepare_target(&dir.path().join("new")).expect("a new target");
        assert!(!dir.path().join(".new.drctl-restore-0123456789ab").exists(), "the dead restore's folder is gone");
        // While that restore runs, its folder is its own.
        assert!(prepare_target(&mount).is_err(), "a running restore's folder is not cleared");
        drop(inside);
    }

    #[test]
    fn a_restore_killed_while_moving_its_files_into_a_mount_point_is_named_not_hidden() {
        let dir = tempfile::tempdir().unwrap();
        // Killed after `base` moved up into the mount point, before `global` (pg_control) did.
        let mount = dir.path().join("mount");
        let dead = mount.join(".drctl-restore-0123456789ab");
        fs::create_dir_all(dead.join("global")).unwrap();
        fs::write(dead.join("global/pg_control"), b"control").unwrap();
        fs::create_dir_all(mount.join("base/1")).unwrap();
        let err = prepare_target(&mount).err().expect("a half-moved restore is refused");
        let text = err.to_string();
        assert!(text.contains("interrupted") && text.contains("part of a snapshot"), "{text}");
        assert!(text.contains("empty it"), "the error says what to do: {text}");
        assert!(dead.join("global/pg_control").exists(), "the folder that shows it is kept");
        // Emptied as told, the mount point takes the next restore.
        fs::remove_dir_all(&mount).unwrap();
        fs::create_dir(&mount).unwrap();
        prepare_target(&mount).expect("an empty mount point");
    }

    #[test]
    fn the_folder_holding_pg_control_moves_into_a_mount_point_last() {
        let names = ["global", "PG_VERSION", "base", "pg_wal", "backup_label"].map(std::ffi::OsString::from);
        let ordered = move_order(names.to_vec());
        assert_eq!(ordered.last().unwrap(), "global");
        assert_eq!(ordered.len(), 5);
    }

    /// Tree entries, each with a file's data.
    type Tree<'a> = Vec<(Entry, &'a [u8])>;

    fn repository(dir: &Path) -> Repository {
        let store: Arc<dyn crate::store::Store> = Arc::new(crate::store::LocalStore::new(dir));
        Repository::init(store, &Secret::KeyFile([7; 32]), &InitOptions::default()).unwrap()
    }

    fn entry(kind: EntryKind, path: &str, mode: u32) -> Entry {
        let mut e = Entry::new(kind, Path::new(path));
        (e.mode, e.uid, e.gid, e.mtime) = (mode, 0, 0, 1_000_000_000);
        e
    }

    fn link(path: &str, target: &Path) -> Entry {
        let mut e = entry(EntryKind::Symlink, path, 0o777);
        e.set_target(target);
        e
    }

    /// Stores a snapshot whose tree is exactly `entries` (a file's data given beside it), as a
    /// hostile or broken writer could, bypassing the backup walk.
    fn crafted(repo: &Repository, entries: Tree) -> Snapshot {
        let snap = Snapshot::new(SnapshotKind::Paths, &[]);
        let options = crate::ops::backup::BackupOptions::default();
        crate::ops::backup::run(repo, snap, &options, &NoProgress, |sink, _| {
            let mut tree = TreeWriter::new(repo.cdc(), repo.config().chunking.max_size as usize, |c| sink.add(c));
            for (mut e, data) in entries {
                if !data.is_empty() {
                    e.size = data.len() as u64;
                    e.chunks = vec![sink.add(data.to_vec())?];
                }
                tree.push(&e)?;
            }
            Ok(tree.finish()?)
        })
        .unwrap()
        .1
    }

    /// Every file below `dir` with its mode and content (symlinks not followed).
    fn state(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                out.push((p.clone(), meta.permissions().mode(), Vec::new()));
                out.extend(state(&p));
            } else {
                let data = if meta.is_file() { fs::read(&p).unwrap() } else { Vec::new() };
                out.push((p, meta.permissions().mode(), data));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_hostile_tree_cannot_reach_outside_the_target() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = repository(&tmp.path().join("repo"));
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim"), b"precious").unwrap();
        fs::set_permissions(outside.join("victim"), fs::Permissions::from_mode(0o600)).unwrap();
        let before = state(&outside);

        let cases: Vec<(&str, Tree)> = vec![
            // A symlink to a directory outside, then a file below it.
            (
                "below a symlink",
                vec![(link("a", &outside), b""), (entry(EntryKind::File, "a/planted", 0o4755), b"evil")],
            ),
            // A symlink to a file outside, then a file at the same path.
            (
                "file over a symlink",
                vec![(link("v", &outside.join("victim")), b""), (entry(EntryKind::File, "v", 0o666), b"evil")],
            ),
            // A symlink to a directory outside, then a directory entry at the same path: its
            // mode must not be applied through the link.
            ("directory over a symlink", vec![(link("d", &outside), b""), (entry(EntryKind::Dir, "d", 0o777), b"")]),
            // A symlink to a directory outside, then a directory below it.
            (
                "directory below a symlink",
                vec![(link("b", &outside), b""), (entry(EntryKind::Dir, "b/sub", 0o777), b"")],
            ),
            // The same file twice.
            (
                "duplicate file",
                vec![(entry(EntryKind::File, "f", 0o644), b"one"), (entry(EntryKind::File, "f", 0o644), b"two")],
            ),
        ];
        for (what, entries) in cases {
            let snap = crafted(&repo, entries);
            let target = tmp.path().join(format!("target-{}", what.replace(' ', "-")));
            let err = restore_to_dir(&repo, &snap, &target, false, &NoProgress).expect_err(what);
            assert!(matches!(err, Error::Repo(repo::Error::Corrupt { .. })), "{what}: {err}");
            assert_eq!(state(&outside), before, "{what}: the restore changed something outside the target");
            assert!(!target.exists(), "{what}: a refused restore left {}", target.display());
        }
    }

    #[test]
    fn symlinks_and_directories_restore_without_following() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = repository(&tmp.path().join("repo"));
        let snap = crafted(
            &repo,
            vec![
                (entry(EntryKind::Dir, "d", 0o750), b""),
                (entry(EntryKind::File, "d/f", 0o640), b"data"),
                (link("d/l", Path::new("/etc/hostname")), b""),
                (entry(EntryKind::Dir, "d/e", 0o500), b""),
            ],
        );
        let target = tmp.path().join("t");
        restore_to_dir(&repo, &snap, &target, false, &NoProgress).unwrap();
        assert_eq!(fs::read(target.join("d/f")).unwrap(), b"data");
        assert_eq!(fs::read_link(target.join("d/l")).unwrap(), Path::new("/etc/hostname"));
        let mode = |p: &str| fs::symlink_metadata(target.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!((mode("d"), mode("d/f"), mode("d/e")), (0o750, 0o640, 0o500));
        let mtime = |p: &str| fs::symlink_metadata(target.join(p)).unwrap().mtime();
        assert_eq!((mtime("d"), mtime("d/f"), mtime("d/l")), (1_000_000_000, 1_000_000_000, 1_000_000_000));
    }
}

#[cfg(test)]
mod pack_order_tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::repo::InitOptions;
    use crate::repo::key::Secret;
    use crate::repo::tree::TreeWriter;
    use crate::store::recording::RecordingStore;
    use crate::testing::random_block;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;

    const BLOCK: usize = 128 << 10;

    /// A file's blocks, each with the chunk it is a new version of.
    type Blocks = Vec<(Vec<u8>, Option<Id>)>;

    /// Backs up `files` as one snapshot; a block given an earlier version is stored as a version
    /// of it (a delta when that pays), as a local-mode incremental does. Returns the snapshot and
    /// every block's chunk id.
    fn backup(repo: &Repository, files: &[(&str, Blocks)]) -> (Snapshot, Vec<Vec<Id>>) {
        let mut ids = Vec::new();
        let snap = Snapshot::new(SnapshotKind::Paths, &[]);
        let options = crate::ops::backup::BackupOptions::default();
        let snapshot = crate::ops::backup::run(repo, snap, &options, &NoProgress, |sink, _| {
            let mut tree = TreeWriter::new(repo.cdc(), repo.config().chunking.max_size as usize, |c| sink.add(c));
            for (path, blocks) in files {
                let mut e = Entry::new(EntryKind::File, Path::new(path));
                (e.mode, e.mtime) = (0o640, 1_000_000_000);
                for (data, earlier) in blocks {
                    e.size += data.len() as u64;
                    e.chunks.push(sink.add_version(data.clone(), *earlier)?);
                }
                ids.push(e.chunks.clone());
                tree.push(&e)?;
            }
            Ok(tree.finish()?)
        })
        .unwrap()
        .1;
        (snapshot, ids)
    }

    #[test]
    fn an_incremental_with_deltas_restores_bit_exact_reading_each_pack_byte_once() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(RecordingStore::new(tmp.path().join("repo")));
        let repo = Repository::init(store.clone(), &Secret::KeyFile([7; 32]), &InitOptions::default()).unwrap();
        let blocks: Vec<Vec<u8>> = (0..6).map(random_block).collect();
        let zero = vec![0u8; BLOCK];
        let (full, ids) = backup(
            &repo,
            &[
                ("a", vec![(blocks[0].clone(), None), (blocks[1].clone(), None), (blocks[2].clone(), None)]),
                ("sparse", vec![(zero.clone(), None), (blocks[3].clone(), None), (zero.clone(), None)]),
                ("shares-a-block", vec![(blocks[0].clone(), None)]),
            ],
        );
        // The incremental: a few bytes of two blocks changed, a file copied whole, one added.
        let mut changed = [blocks[1].clone(), blocks[3].clone()];
        changed[0][100..108].copy_from_slice(b"changed!");
        changed[1][BLOCK - 1] ^= 0xff;
        let a = vec![(blocks[0].clone(), None), (changed[0].clone(), Some(ids[0][1])), (blocks[2].clone(), None)];
        let (incremental, new_ids) = backup(
            &repo,
            &[
                ("a", a.clone()),
                ("copy-of-a", a),
                ("sparse", vec![(zero.clone(), None), (changed[1].clone(), Some(ids[1][1])), (zero.clone(), None)]),
                ("new", vec![(blocks[4].clone(), None)]),
            ],
        );
        let index = repo.load_index().unwrap();
        let deltas = [new_ids[0][1], new_ids[2][1]].map(|d| index.deltas.get(&d).copied());
        assert_eq!(deltas, [Some(ids[0][1]), Some(ids[1][1])], "both changed blocks are stored as deltas");

        let expect_a = [blocks[0].clone(), changed[0].clone(), blocks[2].clone()].concat();
        let expected: Vec<(&str, Vec<u8>)> = vec![
            ("a", expect_a.clone()),
            ("copy-of-a", expect_a),
            ("new", blocks[4].clone()),
            ("sparse", [zero.clone(), changed[1].clone(), zero.clone()].concat()),
        ];
        store.take_reads("");
        let target = tmp.path().join("incremental");
        let summary = restore_to_dir(&repo, &incremental, &target, false, &NoProgress).unwrap();
        assert_eq!((summary.files, summary.bytes), (4, 10 * BLOCK as u64));
        for (name, data) in &expected {
            assert!(fs::read(target.join(name)).unwrap() == *data, "{name} differs");
            assert_eq!(fs::metadata(target.join(name)).unwrap().mode() & 0o7777, 0o640, "{name}");
        }
        let sparse = fs::metadata(target.join("sparse")).unwrap();
        assert!(sparse.blocks() * 512 < 2 * BLOCK as u64, "the zero blocks are holes: {} blocks", sparse.blocks());

        // The workers read every pack byte at most once, and nothing but what the snapshot needs
        // (its chunks and the bases of its deltas; its tree is read before, by the walk) plus
        // gaps of at most 10%.
        let reads: Vec<(String, u64, u64)> = store
            .take_reads("packs/")
            .into_iter()
            .filter(|r| r.by_worker)
            .map(|r| (r.key, r.range.expect("restores read ranges").0, r.range.expect("a range").1))
            .collect();
        let mut seen: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
        for (key, offset, len) in &reads {
            for &(o, l) in seen.get(key.as_str()).into_iter().flatten() {
                assert!(offset + len <= o || o + l <= *offset, "{key} read twice around {offset}: {reads:?}");
            }
            seen.entry(key).or_default().push((*offset, *len));
        }
        let needed: u64 = repo
            .chunks_used_by(&index, &[repo.find_snapshot("latest").unwrap().0])
            .unwrap()
            .iter()
            .filter(|id| !incremental.tree.contains(id))
            .map(|id| index.get(id).unwrap().1.sealed_len as u64)
            .sum();
        let read: u64 = reads.iter().map(|r| r.2).sum();
        assert!(read <= needed + needed / 10, "read {read} bytes for {needed} needed");

        let target = tmp.path().join("full");
        restore_to_dir(&repo, &full, &target, false, &NoProgress).unwrap();
        assert!(
            fs::read(target.join("a")).unwrap() == [blocks[0].clone(), blocks[1].clone(), blocks[2].clone()].concat()
        );
        assert!(fs::read(target.join("shares-a-block")).unwrap() == blocks[0]);
    }
}
