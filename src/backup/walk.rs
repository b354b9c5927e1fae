//! Backing up files and directories: a walker lists entries in a fixed order (sorted names,
//! parents before children), file workers read and chunk files in parallel, and the tree is
//! written in walk order through a bounded reorder queue.

use crossbeam_channel::{Receiver, Sender, bounded};
use std::collections::BTreeSet;
use std::fs::{self, Metadata};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::pipeline::Sink;
use crate::progress::Progress;
use crate::repo::crypto::Id;
use crate::repo::snapshot::Summary;
use crate::repo::tree::{Entry, EntryKind, TreeWriter};
use crate::repo::{Error, Repository};

/// Files read at once. Reading is cheap next to sealing; a few readers hide per-file latency.
const FILE_WORKERS: usize = 3;
/// Entries walked ahead of the tree writer, bounding the reorder queue.
const WALK_AHEAD: usize = 1024;

/// Makes source paths absolute (without resolving symlinks), sorted, and drops any path inside
/// another given path, which the walk of its parent covers.
pub fn absolute_sources(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    if paths.is_empty() {
        return Err(Error::InvalidRequest("no path to back up".into()));
    }
    let mut absolute = BTreeSet::new();
    for p in paths {
        let abs = std::path::absolute(p).map_err(|source| Error::Source { path: p.clone(), source })?;
        // Normalize `.` and trailing slashes; `..` would make the stored path ambiguous.
        let clean: PathBuf = abs.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect();
        if clean.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(Error::InvalidRequest(format!("path {} contains `..`; give it without", p.display())));
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

/// An entry whose tree record is ready once its file (if any) is read; `None` for a file that
/// was deleted between listing and reading, which is skipped like any file deleted earlier.
type Pending = Receiver<Result<Option<Entry>, Error>>;

struct FileJob {
    path: PathBuf,
    entry: Entry,
    /// Device and inode the walk saw, to detect a path replaced before it is opened.
    dev: u64,
    ino: u64,
    done: Sender<Result<Option<Entry>, Error>>,
}

pub fn back_up_tree(
    repo: &Repository,
    sink: &Sink,
    sources: &[PathBuf],
    summary: &mut Summary,
    progress: &dyn Progress,
) -> Result<Vec<Id>, Error> {
    progress.start("backing up files", None);
    let (job_tx, job_rx) = bounded::<FileJob>(WALK_AHEAD);
    let (order_tx, order_rx) = bounded::<Pending>(WALK_AHEAD);
    std::thread::scope(|s| {
        let walker = s.spawn(move || walk_sources(sources, &job_tx, &order_tx));
        for _ in 0..FILE_WORKERS {
            let jobs = job_rx.clone();
            s.spawn(move || {
                for job in jobs {
                    // After a failure, drain the queue without reading: nothing more is stored.
                    let done = job.done.clone();
                    let result = if sink.is_stopped() { Ok(None) } else { read_file(repo, sink, job, progress) };
                    let _ = done.send(result);
                }
            });
        }
        drop(job_rx);
        let mut tree = TreeWriter::new(repo.cdc(), repo.config().chunking.max_size as usize, |c| sink.add(c));
        let written: Result<(), Error> = (|| {
            for pending in &order_rx {
                let Some(entry) = pending.recv().map_err(|_| Error::InvalidRequest("file reader stopped".into()))??
                else {
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
        walked?;
        tree.finish()
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

/// Walks every source, sending entries in order; stops quietly when the consumer went away.
fn walk_sources(sources: &[PathBuf], jobs: &Sender<FileJob>, order: &Sender<Pending>) -> Result<(), Error> {
    let mut emitted_parents = BTreeSet::new();
    for source in sources {
        // Parent directories first, so a restore recreates them with their modes and times.
        let mut parent = PathBuf::from("/");
        for component in source.parent().into_iter().flat_map(|p| p.components()).skip(1) {
            parent.push(component);
            if emitted_parents.insert(parent.clone()) {
                // Followed: a parent reached through a symlink is restored as the directory it is.
                let meta = fs::metadata(&parent).map_err(|source| Error::Source { path: parent.clone(), source })?;
                if !send_ready(order, entry_from(&meta, EntryKind::Dir, parent.strip_prefix("/").expect("absolute"))) {
                    return Ok(());
                }
            }
        }
        if fs::symlink_metadata(source).is_ok_and(|m| m.file_type().is_symlink()) {
            tracing::warn!(path = %source.display(), "the source is a symlink and is stored as one; give its target to back up what it points to");
        }
        if !walk(source, true, jobs, order)? {
            return Ok(());
        }
    }
    Ok(())
}

fn send_ready(order: &Sender<Pending>, entry: Entry) -> bool {
    let (tx, rx) = bounded(1);
    tx.send(Ok(Some(entry))).expect("fresh channel");
    order.send(rx).is_ok()
}

/// Returns false when the consumer stopped listening. Below a top-level source, entries that
/// vanish while the walk runs are skipped.
fn walk(path: &Path, top_level: bool, jobs: &Sender<FileJob>, order: &Sender<Pending>) -> Result<bool, Error> {
    let source_err = |source| Error::Source { path: path.to_path_buf(), source };
    let skip = |e: &std::io::Error| {
        let gone = !top_level && vanished(e);
        if gone {
            tracing::warn!(path = %path.display(), "vanished while the backup ran; skipped");
        }
        gone
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if skip(&e) => return Ok(true),
        Err(e) => return Err(source_err(e)),
    };
    let relative = path.strip_prefix("/").expect("sources are absolute");
    let ft = meta.file_type();
    if ft.is_dir() {
        let listing = match fs::read_dir(path) {
            Ok(listing) => listing,
            Err(e) if skip(&e) => return Ok(true),
            Err(e) => return Err(source_err(e)),
        };
        // The root itself has no name to store; its children carry everything.
        if !relative.as_os_str().is_empty() && !send_ready(order, entry_from(&meta, EntryKind::Dir, relative)) {
            return Ok(false);
        }
        let mut names = Vec::new();
        for child in listing {
            names.push(child.map_err(source_err)?.file_name());
        }
        names.sort();
        for name in names {
            if !walk(&path.join(name), false, jobs, order)? {
                return Ok(false);
            }
        }
        Ok(true)
    } else if ft.is_symlink() {
        let mut entry = entry_from(&meta, EntryKind::Symlink, relative);
        match fs::read_link(path) {
            Ok(target) => entry.set_target(&target),
            Err(e) if skip(&e) => return Ok(true),
            Err(e) => return Err(source_err(e)),
        }
        Ok(send_ready(order, entry))
    } else if ft.is_file() {
        let mut entry = entry_from(&meta, EntryKind::File, relative);
        entry.size = meta.len();
        let (done, pending) = bounded(1);
        let job = FileJob { path: path.to_path_buf(), entry, dev: meta.dev(), ino: meta.ino(), done };
        Ok(order.send(pending).is_ok() && jobs.send(job).is_ok())
    } else {
        tracing::warn!(path = %path.display(), "skipping a special file (socket, FIFO or device)");
        Ok(true)
    }
}

/// Reads and chunks one file. It is opened without following symlinks and without blocking,
/// and must still be the regular file the walk listed (same device and inode): a path swapped
/// for a symlink or a FIFO meanwhile is skipped, never followed. Metadata comes from the open
/// file. Small files are read whole (at most one largest chunk) and cut in memory, with the same
/// boundaries as streaming, avoiding a chunk-sized buffer per file.
fn read_file(repo: &Repository, sink: &Sink, job: FileJob, progress: &dyn Progress) -> Result<Option<Entry>, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let FileJob { path, mut entry, dev, ino, .. } = job;
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
    let max_chunk = repo.config().chunking.max_size as u64;
    let mut head = Vec::with_capacity(meta.len().min(max_chunk) as usize + 1);
    (&mut file).take(max_chunk + 1).read_to_end(&mut head).map_err(source_err)?;
    let mut read = head.len() as u64;
    if read <= max_chunk {
        let mut start = 0;
        for len in repo.cdc().cut_points(&head) {
            entry.chunks.push(sink.add(head[start..start + len].to_vec())?);
            start += len;
        }
        progress.add(read);
    } else {
        read = 0;
        for chunk in repo.cdc().chunks(std::io::Cursor::new(head).chain(file)) {
            let chunk = chunk.map_err(source_err)?;
            read += chunk.len() as u64;
            progress.add(chunk.len() as u64);
            entry.chunks.push(sink.add(chunk)?);
        }
    }
    if read != meta.len() {
        tracing::warn!(path = %path.display(), expected = meta.len(), read, "file changed size while it was read");
    }
    entry.size = read;
    Ok(Some(entry))
}
