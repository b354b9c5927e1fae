//! WAL prefetch for `restore_command`. After each segment the server asks for, a background
//! worker fetches the next segments of the same timeline that the archive holds, several at
//! once, into the spool (authenticated and decompressed, renamed into place when whole); the
//! next `wal-fetch` only moves its file out of the spool. Replay, not fetching, then sets the
//! pace of recovery.
//!
//! The spool holds prefetched segments named as the server asks for them and a `requested` file
//! naming the newest segment the server asked for. Anything the server will not ask for next
//! is deleted, and the worker clears the spool when it exits after a quiet spell.

use crossbeam_channel::bounded;
use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use super::spool::Spool;
use super::{Error, fetch_into};
use crate::pg::wal::{WalKind, WalName};
use crate::repo::{Repository, wal};

/// The spool's name beside the file the server asks for: `pg_wal/drctl-prefetch`.
pub const DEFAULT_SPOOL: &str = "drctl-prefetch";
const REQUESTED: &str = "requested";
/// Written by whoever wants the worker gone now (a restore that is done with the directory).
const STOP: &str = "stop";
/// The worker exits after this long without a new request.
pub const IDLE_EXIT: Duration = Duration::from_secs(10);
/// How often the worker re-lists the archive while it has nothing left to prefetch.
const RELIST: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

/// How long a request waits for a segment the worker is fetching at that moment.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(30);

/// Moves a prefetched `name` to `dest`; false when the spool does not hold it. A segment the
/// worker is fetching right now (its temporary file exists) is waited for rather than fetched
/// a second time.
pub fn take(spool: &Spool, name: &WalName, dest: &Path) -> io::Result<bool> {
    // Files are only vouched for by a live worker: it cleared the spool when it started, so
    // nothing left by a crash (never fsynced, possibly empty) is served.
    if !spool.has_worker()? {
        return Ok(false);
    }
    let source = spool.path(name.as_str());
    let in_flight = spool.path(&format!(".{name}.drctl-fetch"));
    let deadline = Instant::now() + IN_FLIGHT_WAIT;
    let mut polls = 0u32;
    while !source.exists() && in_flight.exists() && Instant::now() < deadline {
        // A temporary file left by a worker that died is not worth waiting for.
        if polls.is_multiple_of(50) && !spool.has_worker()? {
            break;
        }
        polls += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    match fs::rename(&source, dest) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        // A spool on another file system: copy, then drop the spooled file.
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let temp = dest.with_file_name(format!(".{name}.drctl-fetch"));
            if let Err(e) = fs::copy(&source, &temp).and_then(|_| fs::rename(&temp, dest)) {
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
            let _ = fs::remove_file(&source);
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// Tells the worker which segment the server asked for last.
pub fn request(spool: &Spool, name: &WalName) -> io::Result<()> {
    let temp = spool.path(&format!(".{REQUESTED}.{}", std::process::id()));
    let written = fs::write(&temp, name.as_str()).and_then(|()| fs::rename(&temp, spool.path(REQUESTED)));
    if written.is_err() {
        // A full disk: not one more file left in it per request.
        let _ = fs::remove_file(&temp);
    }
    written
}

fn requested(spool: &Spool) -> Option<WalName> {
    let text = fs::read_to_string(spool.path(REQUESTED)).ok()?;
    WalName::parse(text.trim()).filter(|n| n.kind() == WalKind::Segment)
}

/// The worker: keeps the `depth` archived segments after the newest request in the spool,
/// fetching with `jobs` in parallel, until no request came for `idle`.
pub fn serve(repo: &Repository, spool: &Spool, depth: usize, jobs: usize, idle: Duration) -> Result<(), Error> {
    let io = |e: io::Error| Error::Target { path: spool.dir().to_path_buf(), reason: e.to_string() };
    // Whatever an earlier worker left (after a crash perhaps, never fsynced) is not trusted.
    for entry in fs::read_dir(spool.dir()).map_err(io)?.flatten() {
        let name = entry.file_name();
        let name = name.to_str().unwrap_or("");
        if name.ends_with(".drctl-fetch") || WalName::parse(name).is_some() || name == STOP {
            let _ = fs::remove_file(entry.path());
        }
    }
    // Segments that failed once are not fetched again by this worker (no busy loop on a
    // damaged object or a full disk); the server's own request reports the error.
    let mut failed: std::collections::HashSet<WalName> = std::collections::HashSet::new();
    let mut archived: Vec<WalName> = Vec::new();
    let mut listed_at: Option<Instant> = None;
    let mut last: Option<WalName> = None;
    let mut last_request = Instant::now();
    loop {
        let current = requested(spool);
        if current != last {
            last_request = Instant::now();
            last = current.clone();
        }
        if last_request.elapsed() >= idle || spool.path(STOP).exists() {
            break;
        }
        let Some(current) = current else {
            std::thread::sleep(POLL);
            continue;
        };
        let wanted: Vec<&WalName> = archived
            .iter()
            .filter(|n| n.kind() == WalKind::Segment && n.timeline() == current.timeline() && **n > current)
            .filter(|n| !failed.contains(*n))
            .take(depth)
            .collect();
        let present = spool.files().map_err(io)?;
        for file in &present {
            if file != REQUESTED && !wanted.iter().any(|w| w.as_str() == file) {
                let _ = fs::remove_file(spool.path(file));
            }
        }
        let missing: Vec<WalName> =
            wanted.iter().filter(|w| !present.iter().any(|p| p == w.as_str())).map(|w| (*w).clone()).collect();
        if missing.is_empty() {
            // The archive may have grown (a standby, or archiving still running): look again now and then.
            if wanted.len() < depth && listed_at.is_none_or(|t| t.elapsed() >= RELIST) {
                archived = wal::list(repo.store())?.into_iter().map(|(name, _)| name).collect();
                listed_at = Some(Instant::now());
                continue;
            }
            std::thread::sleep(POLL);
            continue;
        }
        failed.extend(fetch_all(repo, spool, missing, jobs));
    }
    for file in spool.files().map_err(io)? {
        let _ = fs::remove_file(spool.path(&file));
    }
    Ok(())
}

/// Stops the spool's worker (it clears the spool as it exits) and removes the spool, waiting at
/// most `timeout`; for a restore that is done with the data directory.
pub fn shut_down(dir: &Path, timeout: Duration) {
    let Ok(spool) = Spool::open(dir) else { return };
    let _ = fs::write(spool.path(STOP), b"");
    let deadline = Instant::now() + timeout;
    while spool.has_worker().unwrap_or(false) && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    if let Err(e) = fs::remove_dir_all(dir) {
        tracing::warn!(spool = %dir.display(), error = %e, "cannot remove the prefetch spool");
    }
}

/// Fetches `names` into the spool, `jobs` at once; returns those that failed.
fn fetch_all(repo: &Repository, spool: &Spool, names: Vec<WalName>, jobs: usize) -> Vec<WalName> {
    let failed = std::sync::Mutex::new(Vec::new());
    let (tx, rx) = bounded::<WalName>(names.len());
    for name in names {
        tx.send(name).expect("sized for all");
    }
    drop(tx);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let (rx, failed) = (rx.clone(), &failed);
            s.spawn(move || {
                for name in rx {
                    // A failure is only logged: the server's own request then fetches directly
                    // and reports the error where it counts.
                    if let Err(e) = fetch_one(repo, spool, &name) {
                        tracing::warn!(wal = %name, error = %e, "prefetch failed");
                        failed.lock().expect("poisoned").push(name);
                    }
                }
            });
        }
    });
    failed.into_inner().expect("poisoned")
}

fn fetch_one(repo: &Repository, spool: &Spool, name: &WalName) -> Result<(), Error> {
    if fetch_into(repo, name, &spool.path(name.as_str()))?.is_some() {
        tracing::debug!(wal = %name, "prefetched");
    }
    Ok(())
}
