//! Backing up files and directories: a walker lists entries in a fixed order (sorted names,
//! parents before children), file workers read and chunk files in parallel, and the tree is
//! written in walk order through a bounded reorder queue. [`WalkRules`] adapt the walk to a
//! source: where stored paths start, what is left out, how files are chunked, and which
//! unchanged files reuse an earlier snapshot's chunks without being read.

use crossbeam_channel::{Receiver, Sender, bounded};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ops::Error;
use crate::progress::Progress;
use crate::repo::Id;
use crate::repo::chunker::Chunker;
use crate::repo::snapshot::Summary;
use crate::repo::tree::{Entry, EntryKind, TreeWriter};
use crate::repo::writer::Sink;
use crate::repo::{self, Repository};

/// Files read at once. Reading is cheap next to sealing; a few readers hide per-file latency.
const FILE_WORKERS: usize = 3;
/// Entries walked ahead of the tree writer, bounding the reorder queue.
const WALK_AHEAD: usize = 1024;

/// Makes source paths absolute (without resolving symlinks), sorted, and drops any path inside
/// another given path, which the walk of its parent covers.
pub fn absolute_sources(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    if paths.is_empty() {
        return Err(Error::Usage("no path to back up".into()));
    }
    let mut absolute = BTreeSet::new();
    for p in paths {
        let abs = std::path::absolute(p).map_err(|source| Error::Source { path: p.clone(), source })?;
        // Normalize `.` and trailing slashes; `..` would make the stored path ambiguous.
        let clean: PathBuf = abs.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect();
        if clean.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(Error::Usage(format!("path {} contains `..`; give it without", p.display())));
        }
        fs::symlink_metadata(&clean).map_err(|source| Error::Source { path: clean.clone(), source })?;
        absolute.insert(clean);
    }
    let mut kept: Vec<PathBuf> = Vec::new();
    for p in absolute {
        if !kept.iter().any(|k| p.starts_with(k)) {
            kept.push(p);
        }
    }
    Ok(kept)
}

/// Removes names from a directory's listing (the directory relative to the walk's base).
pub type PruneFn<'a> = Box<dyn Fn(&Path, &mut Vec<OsString>) + Send + Sync + 'a>;
/// What an earlier snapshot says about a file entry, if it holds the same path.
pub type EarlierFn<'a> = Box<dyn FnMut(&Entry) -> Option<Earlier> + Send + 'a>;

/// A file as an earlier snapshot stored it.
pub enum Earlier {
    /// Unchanged since: these chunks are reused without reading the file.
    Unchanged(Vec<Id>),
    /// Changed: its chunks are the previous versions of the new blocks (fixed-block files are
    /// compressed against them).
    Changed(Vec<Id>),
    /// Changed in these pages only (sorted, numbered from the file's start; fixed-block files):
    /// the other pages are taken from its chunks, the file's previous version, which was
    /// `size` bytes long.
    Pages { chunks: Vec<Id>, size: u64, changed: Vec<u32> },
}

/// How a walk turns a directory hierarchy into entries.
pub struct WalkRules<'a> {
    /// Stored paths are relative to this directory: "/" for path backups (whose sources' parent
    /// directories are then stored too), the data directory for PostgreSQL.
    pub base: PathBuf,
    /// Removes the names that are not backed up from a directory's sorted listing (the directory
    /// given relative to `base`).
    pub prune: PruneFn<'a>,
    /// Whether a symlink (relative to `base`) is followed and stored as the directory it points to.
    pub follow: Box<dyn Fn(&Path) -> bool + Send + Sync + 'a>,
    /// The chunker for a file, by its relative path.
    pub chunker: Box<dyn Fn(&Path) -> Chunker + Send + Sync + 'a>,
    /// The file in an earlier snapshot: reused unread when unchanged, else the previous
    /// versions of its blocks; asked in walk order with the entry as listed (size and times set).
    pub earlier: Option<EarlierFn<'a>>,
}

impl WalkRules<'_> {
    /// Path backups: absolute paths, nothing left out, content-defined chunks.
    pub fn paths(cdc: Chunker) -> WalkRules<'static> {
        WalkRules {
            base: PathBuf::from("/"),
            prune: Box::new(|_, _| {}),
            follow: Box::new(|_| false),
            chunker: Box::new(move |_| cdc),
            earlier: None,
        }
    }
}

/// An entry whose tree record is ready once its file (if any) is read; `None` for a file that
/// was deleted between listing and reading, which is skipped like any file deleted earlier.
type Pending = Receiver<Result<Option<Entry>, Error>>;

struct FileJob {
    path: PathBuf,
    entry: Entry,
    chunker: Chunker,
    /// The chunks of the file's previous version (fixed blocks only), block by block.
    previous: Vec<Id>,
    /// The pages changed since that version and its length, when only those are to be read.
    changed: Option<(Vec<u32>, u64)>,
    /// Device and inode the walk saw, to detect a path replaced before it is opened.
    dev: u64,
    ino: u64,
    done: Sender<Result<Option<Entry>, Error>>,
}

/// Backs up `sources` (absolute paths below `rules.base`) into `tree`, reading files in parallel.
pub fn back_up_tree<F: FnMut(Vec<u8>) -> Result<Id, repo::Error>>(
    repo: &Repository,
    sink: &Sink,
    sources: &[PathBuf],
    mut rules: WalkRules,
    tree: &mut TreeWriter<F>,
    summary: &mut Summary,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let (job_tx, job_rx) = bounded::<FileJob>(WALK_AHEAD);
    // Bytes of files read in part that were taken from an earlier snapshot instead.
    let unchanged = AtomicU64::new(0);
    let (order_tx, order_rx) = bounded::<Pending>(WALK_AHEAD);
    std::thread::scope(|s| {
        let rules = &mut rules;
        let walker = s.spawn(move || {
            let mut walker = Walker { rules, jobs: job_tx, order: order_tx, progress, unchanged_bytes: 0 };
            walker.walk_sources(sources).map(|()| walker.unchanged_bytes)
        });
        for _ in 0..FILE_WORKERS {
            let (jobs, unchanged) = (job_rx.clone(), &unchanged);
            s.spawn(move || {
                for job in jobs {
                    // After a failure, drain the queue without reading: nothing more is stored.
                    let done = job.done.clone();
                    let result =
                        if sink.is_stopped() { Ok(None) } else { read_file(repo, sink, job, progress, unchanged) };
                    let _ = done.send(result);
                }
            });
        }
        drop(job_rx);
        let written: Result<(), Error> = (|| {
            for pending in &order_rx {
                let Some(entry) = pending.recv().map_err(|_| Error::Usage("file reader stopped".into()))?? else {
                    continue;
                };
                match entry.kind {
                    EntryKind::File => {
                        summary.files += 1;
                        summary.logical_bytes += entry.size;
                    }
                    EntryKind::Dir => summary.dirs += 1,
                    EntryKind::Symlink => summary.symlinks += 1,
                }
                tree.push(&entry)?;
            }
            Ok(())
        })();
        // Stop the walker and readers early on failure: dropping the queue ends their sends.
        if written.is_err() {
            sink.stop();
        }
        drop(order_rx);
        let walked = walker.join().expect("walker panicked");
        written?;
        summary.unchanged_bytes += walked? + unchanged.load(Ordering::Relaxed);
        Ok(())
    })
}

fn entry_from(meta: &Metadata, kind: EntryKind, relative: &Path) -> Entry {
    let mut e = Entry::new(kind, relative);
    set_metadata(&mut e, meta);
    e
}

fn set_metadata(e: &mut Entry, meta: &Metadata) {
    e.mode = meta.mode() & 0o7777;
    e.uid = meta.uid();
    e.gid = meta.gid();
    e.mtime = meta.mtime();
    e.mtime_nsec = meta.mtime_nsec() as u32;
}

/// Whether an error means the path disappeared (or changed type) since it was listed: a normal
/// race on a live system, skipped with a warning like a file deleted just before the backup.
fn vanished(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP))
}

/// The walking thread: lists entries in order, hands files to the readers.
struct Walker<'r, 'a> {
    rules: &'r mut WalkRules<'a>,
    jobs: Sender<FileJob>,
    order: Sender<Pending>,
    progress: &'r dyn Progress,
    /// Bytes of files reused from an earlier snapshot without reading them.
    unchanged_bytes: u64,
}

impl Walker<'_, '_> {
    /// Walks every source, sending entries in order; stops quietly when the consumer went away.
    fn walk_sources(&mut self, sources: &[PathBuf]) -> Result<(), Error> {
        let mut emitted_parents = BTreeSet::new();
        for source in sources {
            // Parent directories first, so a restore recreates them with their modes and times.
            let mut parent = self.rules.base.clone();
            let parents = source.parent().and_then(|p| p.strip_prefix(&self.rules.base).ok());
            for component in parents.into_iter().flat_map(|p| p.components()) {
                parent.push(component);
                if emitted_parents.insert(parent.clone()) {
                    // Followed: a parent reached through a symlink is restored as the directory it is.
                    let meta =
                        fs::metadata(&parent).map_err(|source| Error::Source { path: parent.clone(), source })?;
                    let relative = parent.strip_prefix(&self.rules.base).expect("below base");
                    if !self.send_ready(entry_from(&meta, EntryKind::Dir, relative)) {
                        return Ok(());
                    }
                }
            }
            if fs::symlink_metadata(source).is_ok_and(|m| m.file_type().is_symlink()) {
                tracing::warn!(path = %source.display(), "the source is a symlink and is stored as one; give its target to back up what it points to");
            }
            if !self.walk(source, true)? {
                return Ok(());
            }
        }
        Ok(())
    }

    fn send_ready(&self, entry: Entry) -> bool {
        let (tx, rx) = bounded(1);
        tx.send(Ok(Some(entry))).expect("fresh channel");
        self.order.send(rx).is_ok()
    }

    /// Returns false when the consumer stopped listening. Below a top-level source, entries that
    /// vanish while the walk runs are skipped.
    fn walk(&mut self, path: &Path, top_level: bool) -> Result<bool, Error> {
        let source_err = |source| Error::Source { path: path.to_path_buf(), source };
        let skip = |e: &std::io::Error| {
            let gone = !top_level && vanished(e);
            if gone {
                tracing::warn!(path = %path.display(), "vanished while the backup ran; skipped");
            }
            gone
        };
        let relative = path.strip_prefix(&self.rules.base).expect("sources are below the base").to_path_buf();
        let mut meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if skip(&e) => return Ok(true),
            Err(e) => return Err(source_err(e)),
        };
        if meta.file_type().is_symlink() && (self.rules.follow)(&relative) {
            meta = match fs::metadata(path) {
                Ok(meta) if meta.is_dir() => meta,
                Ok(_) => return Err(source_err(std::io::Error::other("a followed symlink must point to a directory"))),
                Err(e) => return Err(source_err(e)),
            };
        }
        let ft = meta.file_type();
        if ft.is_dir() {
            let listing = match fs::read_dir(path) {
                Ok(listing) => listing,
                Err(e) if skip(&e) => return Ok(true),
                Err(e) => return Err(source_err(e)),
            };
            // The root itself has no name to store; its children carry everything.
            if !relative.as_os_str().is_empty() && !self.send_ready(entry_from(&meta, EntryKind::Dir, &relative)) {
                return Ok(false);
            }
            let mut names = Vec::new();
            for child in listing {
                names.push(child.map_err(source_err)?.file_name());
            }
            names.sort();
            (self.rules.prune)(&relative, &mut names);
            for name in names {
                if !self.walk(&path.join(name), false)? {
                    return Ok(false);
                }
            }
            Ok(true)
        } else if ft.is_symlink() {
            let mut entry = entry_from(&meta, EntryKind::Symlink, &relative);
            match fs::read_link(path) {
                Ok(target) => entry.set_target(&target),
                Err(e) if skip(&e) => return Ok(true),
                Err(e) => return Err(source_err(e)),
            }
            Ok(self.send_ready(entry))
        } else if ft.is_file() {
            let mut entry = entry_from(&meta, EntryKind::File, &relative);
            entry.size = meta.len();
            let chunker = (self.rules.chunker)(&relative);
            let (mut previous, mut changed) = (Vec::new(), None);
            let fixed = matches!(chunker, Chunker::Fixed { .. });
            match self.rules.earlier.as_mut().and_then(|earlier| earlier(&entry)) {
                Some(Earlier::Unchanged(chunks)) => {
                    entry.chunks = chunks;
                    self.progress.add(entry.size);
                    self.unchanged_bytes += entry.size;
                    return Ok(self.send_ready(entry));
                }
                Some(Earlier::Changed(chunks)) if fixed => previous = chunks,
                Some(Earlier::Pages { chunks, size, changed: pages }) if fixed => {
                    previous = chunks;
                    changed = Some((pages, size));
                }
                _ => {}
            }
            let (done, pending) = bounded(1);
            let (dev, ino) = (meta.dev(), meta.ino());
            let job = FileJob { path: path.to_path_buf(), entry, chunker, previous, changed, dev, ino, done };
            Ok(self.order.send(pending).is_ok() && self.jobs.send(job).is_ok())
        } else {
            tracing::warn!(path = %path.display(), "skipping a special file (socket, FIFO or device)");
            Ok(true)
        }
    }
}

/// Reads and chunks one file. It is opened without following symlinks and without blocking,
/// and must still be the regular file the walk listed (same device and inode): a path swapped
/// for a symlink or a FIFO meanwhile is skipped, never followed. Metadata comes from the open
/// file. Small files are read whole (at most one largest chunk) and cut in memory, with the same
/// boundaries as streaming, avoiding a chunk-sized buffer per file.
fn read_file(
    repo: &Repository,
    sink: &Sink,
    job: FileJob,
    progress: &dyn Progress,
    unchanged: &AtomicU64,
) -> Result<Option<Entry>, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let FileJob { path, mut entry, chunker, previous, changed, dev, ino, .. } = job;
    // Block i of a fixed-block file was chunk i of its previous version.
    let add = |i: usize, data: Vec<u8>| sink.add_version(data, previous.get(i).copied());
    let source_err = |source| Error::Source { path: path.clone(), source };
    let opened = fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&path);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if vanished(&e) => {
            tracing::warn!(path = %path.display(), "vanished or replaced before it was read; skipped");
            return Ok(None);
        }
        Err(e) => return Err(source_err(e)),
    };
    let meta = file.metadata().map_err(source_err)?;
    if !meta.is_file() || meta.dev() != dev || meta.ino() != ino {
        tracing::warn!(path = %path.display(), "replaced by another file while the backup ran; skipped");
        return Ok(None);
    }
    set_metadata(&mut entry, &meta);
    if let (Some((pages, previous_size)), Chunker::Fixed { block_size }) = (&changed, chunker) {
        let earlier = PreviousVersion { chunks: &previous, size: *previous_size, changed: pages };
        match read_pages(sink, &file, &mut entry, &earlier, block_size as u64, meta.len(), progress) {
            Ok(reused) => {
                unchanged.fetch_add(reused, Ordering::Relaxed);
                return Ok(Some(entry));
            }
            // Read it all, as if without a map.
            Err(PagesError::ReadWhole) => entry.chunks.clear(),
            Err(PagesError::Read(e)) => return Err(source_err(e)),
            Err(PagesError::Store(e)) => return Err(e.into()),
        }
    }
    let max_chunk = repo.config().chunking.max_size as u64;
    let mut head = Vec::with_capacity(meta.len().min(max_chunk) as usize + 1);
    (&mut file).take(max_chunk + 1).read_to_end(&mut head).map_err(source_err)?;
    let mut read = head.len() as u64;
    if read <= max_chunk {
        let mut start = 0;
        for len in chunker.cut_points(&head) {
            entry.chunks.push(add(entry.chunks.len(), head[start..start + len].to_vec())?);
            start += len;
        }
        progress.add(read);
    } else {
        read = 0;
        for chunk in chunker.chunks(std::io::Cursor::new(head).chain(file)) {
            let chunk = chunk.map_err(source_err)?;
            read += chunk.len() as u64;
            progress.add(chunk.len() as u64);
            entry.chunks.push(add(entry.chunks.len(), chunk)?);
        }
    }
    if read != meta.len() {
        tracing::warn!(path = %path.display(), expected = meta.len(), read, "file changed size while it was read");
    }
    entry.size = read;
    Ok(Some(entry))
}

/// PostgreSQL's page: the unit in which the WAL names what changed.
const PAGE: u64 = 8192;
/// A block is patched from its previous version while less than 1/PATCH_BELOW of it changed,
/// else read whole. Measured on pgbench's scattered updates (a quarter of the pages changed):
/// patching read 20% of the data directory where whole blocks read 96%, and took 15% longer on
/// local NVMe, where reads are nearly free; on network volumes reads are what costs.
const PATCH_BELOW: u64 = 2;
/// How many of the blocks to be read, from the one being read on, have their reads announced to
/// the kernel. Scattered page reads from a cold cache otherwise wait for the device one at a
/// time; announced, they queue at the device together (a pgbench incremental from a cold cache:
/// 1.1 s of its 3 s were such waits).
const ANNOUNCE_AHEAD: usize = 64;

/// A relation file's previous version, and the pages changed since.
struct PreviousVersion<'a> {
    chunks: &'a [Id],
    size: u64,
    /// Sorted page numbers from the file's start.
    changed: &'a [u32],
}

/// What becomes of one block of a relation file read by page.
enum Step<'p> {
    /// No page of it changed: the previous version's chunk, unread.
    Reuse(Id),
    /// The previous version's block with these pages read over it.
    Patch(Id, &'p [u32]),
    /// Read whole (new, of another length, or half or more of it changed), compressed against
    /// the previous version's chunk if there is one.
    Whole(Option<Id>),
}

/// One block of a relation file: where it starts, its length, and what becomes of it.
struct Block<'p> {
    start: u64,
    len: u64,
    step: Step<'p>,
}

/// Decides each block's [`Step`] from the previous version and the changed pages.
fn plan_blocks<'p>(earlier: &PreviousVersion<'p>, block_size: u64, len: u64) -> Vec<Block<'p>> {
    let mut next = 0usize;
    let mut plan = Vec::with_capacity(len.div_ceil(block_size) as usize);
    for (i, start) in (0..len).step_by(block_size as usize).enumerate() {
        let block_len = block_size.min(len - start);
        let end_page = ((start + block_len) / PAGE) as u32;
        let first = next;
        while next < earlier.changed.len() && earlier.changed[next] < end_page {
            next += 1;
        }
        let pages = &earlier.changed[first..next];
        let previous = earlier.chunks.get(i).copied();
        let same_length = start < earlier.size && block_size.min(earlier.size - start) == block_len;
        // A block with many changed pages is read whole: one read costs about what decoding its
        // previous version and reading the pages apart does.
        let step = match previous.filter(|_| same_length) {
            Some(id) if pages.is_empty() => Step::Reuse(id),
            Some(id) if (pages.len() as u64 * PAGE) < block_len / PATCH_BELOW => Step::Patch(id, pages),
            _ => Step::Whole(previous),
        };
        plan.push(Block { start, len: block_len, step });
    }
    plan
}

/// Runs of adjacent pages, as (byte offset, length).
fn page_runs(pages: &[u32]) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut rest = pages;
    std::iter::from_fn(move || {
        let &first = rest.first()?;
        let run = rest.iter().zip(first..).take_while(|(p, q)| *p == q).count();
        rest = &rest[run..];
        Some((u64::from(first) * PAGE, run as u64 * PAGE))
    })
}

/// Tells the kernel the block's bytes will be read soon. Only advice: errors are ignored. (A patch
/// that falls back to reading its block whole reads what was not announced; that is rare.)
fn announce(file: &fs::File, block: &Block) {
    use std::os::fd::AsRawFd;
    let will_need = |at: u64, len: u64| {
        // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), at as libc::off_t, len as libc::off_t, libc::POSIX_FADV_WILLNEED)
        };
    };
    match block.step {
        Step::Reuse(_) => {}
        Step::Patch(_, pages) => page_runs(pages).for_each(|(at, len)| will_need(at, len)),
        Step::Whole(_) => will_need(block.start, block.len),
    }
}

/// Stores a relation file of `len` bytes from its previous version and its changed pages, block
/// by block as [`plan_blocks`] decides. Returns the bytes not read; [`PagesError::ReadWhole`] when
/// the file is not its previous version grown (shorter, not whole pages, or shorter than `len`
/// when read), for the caller to read whole.
fn read_pages(
    sink: &Sink,
    file: &fs::File,
    entry: &mut Entry,
    earlier: &PreviousVersion,
    block_size: u64,
    len: u64,
    progress: &dyn Progress,
) -> Result<u64, PagesError> {
    use std::os::unix::fs::FileExt;
    let fits = len >= earlier.size
        && len.is_multiple_of(PAGE)
        && earlier.size.is_multiple_of(PAGE)
        && block_size.is_multiple_of(PAGE)
        && earlier.chunks.len() as u64 == earlier.size.div_ceil(block_size);
    if !fits {
        return Err(PagesError::ReadWhole);
    }
    let read_at = |buf: &mut [u8], at: u64| {
        file.read_exact_at(buf, at).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => PagesError::ReadWhole,
            _ => PagesError::Read(e),
        })
    };
    // The previous version's block with `pages` read over it, its delta base and the bytes left
    // unread; `None` when that version cannot be used and the block is read whole instead.
    let patch = |id: Id, start: u64, block_len: u64, pages: &[u32]| {
        match sink.read_earlier(id) {
            Ok((mut data, base)) if data.len() as u64 == block_len => {
                for (at, len) in page_runs(pages) {
                    read_at(&mut data[(at - start) as usize..][..len as usize], at)?;
                }
                return Ok(Some((data, base, block_len - pages.len() as u64 * PAGE)));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(chunk = %id.short(), error = %e, "cannot read a block's earlier version; reading the block")
            }
        }
        Ok(None)
    };
    let plan = plan_blocks(earlier, block_size, len);
    // The blocks that read anything, in order: the announcements run ahead over these.
    let mut to_read = plan.iter().filter(|b| !matches!(b.step, Step::Reuse(_)));
    let (mut read_blocks, mut announced, mut reused) = (0, 0, 0u64);
    for block in &plan {
        let Block { start, len: block_len, ref step } = *block;
        let previous = match *step {
            Step::Reuse(id) => {
                entry.chunks.push(id);
                reused += block_len;
                progress.add(block_len);
                continue;
            }
            Step::Patch(id, _) | Step::Whole(Some(id)) => Some(id),
            Step::Whole(None) => None,
        };
        read_blocks += 1;
        while announced < read_blocks + ANNOUNCE_AHEAD
            && let Some(ahead) = to_read.next()
        {
            announce(file, ahead);
            announced += 1;
        }
        let patched = match *step {
            Step::Patch(id, pages) => patch(id, start, block_len, pages)?,
            _ => None,
        };
        let added = match patched {
            Some((data, base, unread)) => {
                reused += unread;
                sink.add_with_base(data, base)
            }
            None => {
                let mut data = vec![0; block_len as usize];
                read_at(&mut data, start)?;
                sink.add_version(data, previous)
            }
        };
        entry.chunks.push(added.map_err(PagesError::Store)?);
        progress.add(block_len);
    }
    entry.size = len;
    Ok(reused)
}

/// Why [`read_pages`] did not store the file: it is not its previous version grown, in whole
/// pages (the caller reads it whole), or the source file or the repository failed.
enum PagesError {
    ReadWhole,
    Read(std::io::Error),
    Store(repo::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: u64 = 4 * PAGE;

    fn steps(chunks: &[Id], size: u64, changed: &[u32], len: u64) -> Vec<String> {
        let earlier = PreviousVersion { chunks, size, changed };
        plan_blocks(&earlier, BLOCK, len)
            .into_iter()
            .map(|Block { start, len, step }| match step {
                Step::Reuse(id) => format!("{start}+{len} reuse {}", id.0[0]),
                Step::Patch(id, pages) => format!("{start}+{len} patch {} {pages:?}", id.0[0]),
                Step::Whole(id) => format!("{start}+{len} whole {:?}", id.map(|id| id.0[0])),
            })
            .collect()
    }

    #[test]
    fn blocks_are_reused_patched_or_read_whole_by_their_changed_pages() {
        let chunks: Vec<Id> = (1..=3).map(|n| Id([n; 32])).collect();
        // Three blocks of four pages, the last one two pages long; the file grew by six pages.
        let plan = steps(&chunks, 10 * PAGE, &[4, 8, 9], 16 * PAGE);
        assert_eq!(
            plan,
            [
                "0+32768 reuse 1".to_string(),
                format!("{}+32768 patch 2 [4]", BLOCK),
                // Half its pages changed, and it is longer than before.
                format!("{}+32768 whole Some(3)", 2 * BLOCK),
                format!("{}+32768 whole None", 3 * BLOCK),
            ]
        );
        // Half of a block changed is read whole; fewer pages are patched.
        assert_eq!(steps(&chunks[..1], BLOCK, &[0, 3], BLOCK), ["0+32768 whole Some(1)"]);
        assert_eq!(steps(&chunks[..1], BLOCK, &[3], BLOCK), ["0+32768 patch 1 [3]"]);
        // A last block that grew is read whole even with no page named: extending a relation
        // need not be logged page by page, so its new pages are not vouched for.
        for changed in [&[][..], &[8]] {
            let grown = steps(&chunks, 10 * PAGE, changed, 12 * PAGE);
            assert_eq!(grown[2], format!("{}+32768 whole Some(3)", 2 * BLOCK), "{changed:?}");
        }
    }

    #[test]
    fn adjacent_pages_are_read_as_one_run() {
        let runs: Vec<(u64, u64)> = page_runs(&[0, 1, 2, 5, 7, 8]).collect();
        assert_eq!(runs, [(0, 3 * PAGE), (5 * PAGE, PAGE), (7 * PAGE, 2 * PAGE)]);
        assert_eq!(page_runs(&[]).count(), 0);
    }
}
