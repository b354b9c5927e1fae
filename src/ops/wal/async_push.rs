//! Asynchronous archiving (`wal-push --async`). A background worker pushes every WAL file the
//! server has marked ready (`pg_wal/archive_status/*.ready`), several at once, and leaves a
//! marker in the spool for each: `<name>.ok` once the file is durably in the repository,
//! `<name>.error` with the reason otherwise. The `archive_command` for a file only waits for its
//! marker, which the worker has usually written long before the server asks.
//!
//! A file counts as archived only once it is in the repository, never merely spooled: losing
//! the server's disk loses nothing the server believes archived. A marker and its worker are
//! bound to the worker's settings (repository, S3 settings, key, compression): a caller accepts
//! only markers made under its own, and a worker stops once callers want others (the server
//! reloaded a new archive_command), so WAL never lands in a repository no longer named. On an
//! error marker the `archive_command` pushes the file itself, so the error and exit code are the
//! real ones.

use crossbeam_channel::bounded;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::spool::Spool;
use crate::pg::wal::{WalKind, WalName};
use crate::repo::{Repository, wal};

/// The worker exits after this long without anything to push.
pub const IDLE_EXIT: Duration = Duration::from_secs(60);
/// How often the worker looks for newly ready files when it has nothing to do.
const POLL: Duration = Duration::from_millis(20);

fn ok_marker(name: &str) -> String {
    format!("{name}.ok")
}

fn error_marker(name: &str) -> String {
    format!("{name}.error")
}

/// What an `.ok` marker holds: the BLAKE3 hash of the file the worker stored and the worker's
/// binding. The archive_command accepts a marker only for its own file's content stored under
/// its own settings, so a marker left by another cluster sharing the spool, for an earlier file
/// of the same name, or by a worker serving another repository, never counts.
fn marker_content(data: &[u8], binding: &str) -> String {
    format!("{} {binding}", blake3::hash(data).to_hex())
}

/// What the archive_command learns from the spool.
#[derive(Debug)]
pub enum Waited {
    Archived,
    Failed(String),
    TimedOut,
}

/// Waits until the worker bound to `binding` archived `name` (whose content is `data`), or
/// failed to. `start_worker` is called at once and then every second, so a worker that died
/// (even mid-push) or stopped for other settings is replaced.
pub fn wait_for(
    spool: &Spool,
    name: &str,
    data: &[u8],
    binding: &str,
    start_worker: impl Fn() -> io::Result<()>,
    timeout: Duration,
) -> io::Result<Waited> {
    let deadline = Instant::now() + timeout;
    let mut next_start = Instant::now();
    let mut expected: Option<String> = None;
    loop {
        if let Ok(stored) = fs::read_to_string(spool.path(&ok_marker(name))) {
            let _ = fs::remove_file(spool.path(&ok_marker(name)));
            let expected = expected.get_or_insert_with(|| marker_content(data, binding));
            if stored.trim() == expected.as_str() {
                return Ok(Waited::Archived);
            }
            tracing::warn!(wal = %name, "the spool's marker is for other content or settings; pushing directly");
            return Ok(Waited::Failed("marker for other content or settings".into()));
        }
        if let Ok(reason) = fs::read_to_string(spool.path(&error_marker(name))) {
            let _ = fs::remove_file(spool.path(&error_marker(name)));
            return Ok(Waited::Failed(reason));
        }
        if Instant::now() >= deadline {
            return Ok(Waited::TimedOut);
        }
        if Instant::now() >= next_start {
            start_worker()?;
            next_start = Instant::now() + Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// WAL files the server waits to have archived, oldest first (history files sort first).
fn ready_files(pg_wal: &Path) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(pg_wal.join("archive_status"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".ready").map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

/// A WAL file mapped into memory: read by the kernel straight from the page cache, without a
/// 16 MiB buffer to fault in and copy into.
pub fn map_wal_file(path: &Path) -> io::Result<memmap2::Mmap> {
    let file = fs::File::open(path)?;
    // SAFETY: PostgreSQL never changes a WAL file once it is handed to archive_command; a file
    // truncated under us would fault, and the archiver would retry.
    unsafe { memmap2::MmapOptions::new().populate().map(&file) }
}

/// How a worker archives.
pub struct Settings {
    /// What its markers are bound to (see [`Spool::want`]).
    pub binding: String,
    /// WAL files pushed at once.
    pub jobs: usize,
    pub compression: wal::Compression,
    /// A timeline whose history file may fork off its parent's archived past.
    pub allow_fork: Option<u32>,
}

/// The worker: pushes ready files in parallel until idle for `idle`, or until the callers want
/// a worker bound to something else. History files go first, one by one, and the segments of a
/// timeline whose history file was refused are not archived either (as PostgreSQL, which
/// archives a new timeline's history file before anything else). Before a batch, and again
/// before its `.ok` markers are written, the location must still hold the repository the worker
/// opened (not one deleted and initialised again, which the worker's key cannot serve).
pub fn serve(repo: &Repository, pg_wal: &Path, spool: &Spool, settings: &Settings, idle: Duration) -> io::Result<()> {
    let binding = settings.binding.as_str();
    let mut last_work = Instant::now();
    loop {
        if spool.wanted()?.as_deref() != Some(binding) {
            tracing::info!("archive_command now names other settings (a new repository?); this worker stops");
            return Ok(());
        }
        let ready = ready_files(pg_wal)?;
        let spooled = spool.files()?;
        // Markers of files no longer waiting (archived some other way) are stale.
        for marker in &spooled {
            let base = marker.strip_suffix(".ok").or_else(|| marker.strip_suffix(".error"));
            if base.is_some_and(|b| ready.binary_search_by(|r| r.as_str().cmp(b)).is_err()) {
                let _ = fs::remove_file(spool.path(marker));
            }
        }
        let marked = |n: &String| spooled.contains(&ok_marker(n)) || spooled.contains(&error_marker(n));
        let todo: Vec<WalName> =
            ready.iter().filter(|n| !marked(n)).filter_map(|n| WalName::parse(n)).take(settings.jobs * 8).collect();
        if todo.is_empty() {
            if last_work.elapsed() >= idle {
                return Ok(());
            }
            std::thread::sleep(POLL);
            continue;
        }
        last_work = Instant::now();
        if !repo.still_in_store().map_err(io::Error::other)? {
            tracing::error!("the repository location now holds another repository; this worker stops");
            return Ok(());
        }
        let (histories, others): (Vec<WalName>, Vec<WalName>) =
            todo.into_iter().partition(|n| n.kind() == WalKind::History);
        let stored = Mutex::new(Vec::new());
        let push = |name: &WalName| push_one(repo, pg_wal, spool, settings, name, &stored);
        // Timelines whose history file still waits: ready, not stored by this worker.
        let mut waiting: Vec<u32> = ready
            .iter()
            .filter(|n| n.ends_with(".history") && !spooled.contains(&ok_marker(n)))
            .filter_map(|n| WalName::parse(n))
            .map(|n| n.timeline())
            .collect();
        for history in &histories {
            if push(history) {
                waiting.retain(|&tli| tli != history.timeline());
            }
        }
        let (tx, rx) = bounded::<WalName>(others.len().max(1));
        for name in others {
            if waiting.contains(&name.timeline()) {
                let reason = format!("the history file of timeline {} is not archived", name.timeline());
                mark_failed(spool, &name, &reason);
            } else {
                tx.send(name).expect("sized for all");
            }
        }
        drop(tx);
        std::thread::scope(|s| {
            for _ in 0..settings.jobs {
                let rx = rx.clone();
                let push = &push;
                s.spawn(move || {
                    for name in rx {
                        push(&name);
                    }
                });
            }
        });
        if !repo.still_in_store().map_err(io::Error::other)? {
            tracing::error!("the repository location now holds another repository; this worker stops");
            return Ok(());
        }
        for (name, marker) in stored.into_inner().expect("no pusher panicked") {
            let temp = spool.path(&format!(".{name}.ok"));
            let written =
                fs::write(&temp, &marker).and_then(|()| fs::rename(&temp, spool.path(&ok_marker(name.as_str()))));
            if let Err(e) = written {
                tracing::warn!(wal = %name, error = %e, "archived, but cannot write the marker; archive_command will push it again");
            }
        }
    }
}

/// Pushes one file; adds its `.ok` marker to `stored`, or leaves an error marker and returns
/// false.
fn push_one(
    repo: &Repository,
    pg_wal: &Path,
    spool: &Spool,
    settings: &Settings,
    name: &WalName,
    stored: &Mutex<Vec<(WalName, String)>>,
) -> bool {
    let data = match map_wal_file(&pg_wal.join(name.as_str())) {
        Ok(data) => data,
        // Archived another way and removed meanwhile: nothing to do.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
        Err(e) => {
            mark_failed(spool, name, &format!("cannot read {name}: {e}"));
            return false;
        }
    };
    let marker = marker_content(&data, &settings.binding);
    // The server may have archived the file another way meanwhile (a direct push after a
    // timeout), marked it done and recycled it, so what was read may mix old and new WAL. Its
    // .ready goes away before any recycling: a file still ready after it was read is intact.
    let ready = pg_wal.join("archive_status").join(format!("{name}.ready"));
    let still_ready = || ready.exists();
    match wal::push(repo, name, &data, settings.compression, &still_ready, settings.allow_fork) {
        Ok(wal::Pushed::Abandoned) => tracing::info!(wal = %name, "archived another way meanwhile; not stored"),
        Ok(_) if !still_ready() => tracing::info!(wal = %name, "archived another way meanwhile; no marker"),
        Ok(_) => {
            stored.lock().expect("no pusher panicked").push((name.clone(), marker));
            tracing::info!(wal = %name, "archived");
        }
        Err(e) => {
            mark_failed(spool, name, &e.to_string());
            return false;
        }
    }
    true
}

fn mark_failed(spool: &Spool, name: &WalName, reason: &str) {
    tracing::warn!(wal = %name, reason, "archiving failed");
    let temp = spool.path(&format!(".{name}.error"));
    if fs::write(&temp, reason).and_then(|()| fs::rename(&temp, spool.path(&error_marker(name.as_str())))).is_err() {
        let _ = fs::remove_file(&temp);
    }
}
