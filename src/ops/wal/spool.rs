//! The spool directory behind asynchronous archiving and WAL prefetch. `archive_command` and
//! `restore_command` start a fresh drctl per file; for throughput, the first one starts one
//! long-lived background drctl (detached, its own session) that works ahead in parallel, and
//! later calls only check the spool. A lock file held by the background process makes sure
//! there is one per spool; it exits by itself after a quiet spell.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Spool {
    dir: PathBuf,
}

/// Held while a background worker serves the spool; released when dropped (or the process dies).
pub struct WorkerLock(#[allow(dead_code)] File);

const LOCK: &str = "worker.lock";
const LOG: &str = "worker.log";
const BINDING: &str = "worker.binding";

impl Spool {
    /// Opens (creating, mode 0700) the spool directory; the folders above it that it creates
    /// (a new `--spool-dir`) are 0700 too, as WAL passes through them.
    pub fn open(dir: &Path) -> io::Result<Spool> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        Ok(Spool { dir: std::path::absolute(dir)? })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Becomes the spool's worker, unless another process already is.
    pub fn try_lock(&self) -> io::Result<Option<WorkerLock>> {
        let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(self.path(LOCK))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(WorkerLock(file))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Whether a worker serves the spool right now.
    pub fn has_worker(&self) -> io::Result<bool> {
        Ok(self.try_lock()?.is_none())
    }

    /// Starts `drctl <args>` as the spool's worker, detached from the caller (new session, no
    /// terminal, output appended to the spool's log), unless one runs already. The worker takes
    /// the lock itself; two racing starts leave one worker, the other exits at once.
    pub fn ensure_worker(&self, args: &[OsString]) -> io::Result<()> {
        if self.has_worker()? {
            return Ok(());
        }
        let log = fs::OpenOptions::new().create(true).append(true).open(self.path(LOG))?;
        if log.metadata()?.len() > 16 << 20 {
            log.set_len(0)?;
        }
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        // SAFETY: setsid is async-signal-safe; it detaches the worker from the caller's session,
        // so the server's signals to its archiver or startup process do not reach it.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        // Reap it from a thread if it exits while we still run (e.g. lost the race for the lock).
        std::thread::spawn(move || child.wait());
        Ok(())
    }

    /// Records which worker the callers want now (`binding`: what it must be bound to), so a
    /// worker started for other settings stops serving the spool. Written only when it changes.
    pub fn want(&self, binding: &str) -> io::Result<()> {
        if self.wanted()?.as_deref() == Some(binding) {
            return Ok(());
        }
        let temp = self.path(&format!(".{BINDING}.{}", std::process::id()));
        fs::write(&temp, binding).and_then(|()| fs::rename(&temp, self.path(BINDING))).inspect_err(|_| {
            let _ = fs::remove_file(&temp);
        })
    }

    /// Fails if the spool cannot take one more small file now (its disk full, a quota, a
    /// read-only mount): a worker could archive but not say so, and callers would wait for a
    /// marker that never comes. Writes and removes a probe the size of a marker.
    pub fn check_room(&self) -> io::Result<()> {
        let probe = self.path(&format!(".room.{}", std::process::id()));
        let written = fs::write(&probe, [0u8; 128]);
        let _ = fs::remove_file(&probe);
        written
    }

    /// The binding the callers want (see [`Spool::want`]); `None` before any asked.
    pub fn wanted(&self) -> io::Result<Option<String>> {
        match fs::read_to_string(self.path(BINDING)) {
            Ok(binding) => Ok(Some(binding)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Names of the files in the spool (not the lock, log or binding, not temporary files).
    pub fn files(&self) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n != LOCK && n != LOG && n != BINDING && !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }
}
