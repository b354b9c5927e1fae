//! Backing up files and directories: a walker lists entries in a fixed order (sorted names,
//! parents before children), file workers read and chunk files in parallel, and the tree is
//! written in walk order through a bounded reorder queue.

use crossbeam_channel::{Receiver, Sender, bounded};
use std::collections::BTreeSet;
use std::fs::{self, File, Metadata};
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
                    let result = read_file(repo, sink, &job.path, job.entry, progress);
                    let _ = job.done.send(result);
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
        drop(order_rx);
        let walked = walker.join().expect("walker panicked");
        written?;
        walked?;
        tree.finish()
    })
}

fn entry_from(meta: &Metadata, kind: EntryKind, relative: &Path) -> Entry {
    let mut e = Entry::new(kind, relative);
    e.mode = meta.mode() & 0o7777;
    e.uid = meta.uid();
    e.gid = meta.gid();
    e.mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
    e
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
                let meta =
                    fs::symlink_metadata(&parent).map_err(|source| Error::Source { path: parent.clone(), source })?;
                if !send_ready(order, entry_from(&meta, EntryKind::Dir, parent.strip_prefix("/").expect("absolute"))) {
                    return Ok(());
                }
            }
        }
        if !walk(source, jobs, order)? {
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

/// Returns false when the consumer stopped listening.
fn walk(path: &Path, jobs: &Sender<FileJob>, order: &Sender<Pending>) -> Result<bool, Error> {
    let source_err = |source| Error::Source { path: path.to_path_buf(), source };
    let meta = fs::symlink_metadata(path).map_err(source_err)?;
    let relative = path.strip_prefix("/").expect("sources are absolute");
    let ft = meta.file_type();
    if ft.is_dir() {
        // The root itself has no name to store; its children carry everything.
        if !relative.as_os_str().is_empty() && !send_ready(order, entry_from(&meta, EntryKind::Dir, relative)) {
            return Ok(false);
        }
        let mut names = Vec::new();
        for child in fs::read_dir(path).map_err(source_err)? {
            names.push(child.map_err(source_err)?.file_name());
        }
        names.sort();
        for name in names {
            if !walk(&path.join(name), jobs, order)? {
                return Ok(false);
            }
        }
        Ok(true)
    } else if ft.is_symlink() {
        let mut entry = entry_from(&meta, EntryKind::Symlink, relative);
        entry.set_target(&fs::read_link(path).map_err(source_err)?);
        Ok(send_ready(order, entry))
    } else if ft.is_file() {
        let mut entry = entry_from(&meta, EntryKind::File, relative);
        entry.size = meta.len();
        let (done, pending) = bounded(1);
        Ok(order.send(pending).is_ok() && jobs.send(FileJob { path: path.to_path_buf(), entry, done }).is_ok())
    } else {
        tracing::warn!(path = %path.display(), "skipping a special file (socket, FIFO or device)");
        Ok(true)
    }
}

/// Reads and chunks one file. Files below the largest chunk size are read whole and cut in
/// memory (same boundaries as streaming), avoiding a chunk-sized buffer per small file.
fn read_file(
    repo: &Repository,
    sink: &Sink,
    path: &Path,
    mut entry: Entry,
    progress: &dyn Progress,
) -> Result<Option<Entry>, Error> {
    let source_err = |source| Error::Source { path: path.to_path_buf(), source };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), "file vanished before it was read; skipped");
            return Ok(None);
        }
        Err(e) => return Err(source_err(e)),
    };
    let expected = entry.size;
    let mut read = 0u64;
    if expected < repo.config().chunking.max_size as u64 {
        let mut data = Vec::with_capacity(expected as usize + 1);
        file.read_to_end(&mut data).map_err(source_err)?;
        let mut start = 0;
        for len in repo.cdc().cut_points(&data) {
            entry.chunks.push(sink.add(data[start..start + len].to_vec())?);
            start += len;
        }
        read = data.len() as u64;
        progress.add(read);
    } else {
        for chunk in repo.cdc().chunks(file) {
            let chunk = chunk.map_err(source_err)?;
            read += chunk.len() as u64;
            progress.add(chunk.len() as u64);
            entry.chunks.push(sink.add(chunk)?);
        }
    }
    if read != expected {
        tracing::warn!(path = %path.display(), expected, read, "file changed size while it was read");
        entry.size = read;
    }
    Ok(Some(entry))
}
