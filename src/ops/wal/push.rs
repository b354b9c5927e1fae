//! `wal-push`: archive one WAL file, directly or through the asynchronous worker.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::async_push::{self, Waited};
use super::spool::Spool;
use super::{Error, RepoSource, Result};
use crate::pg::wal::WalName;
use crate::repo::wal;

/// What to archive and how.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// The WAL file (PostgreSQL's %p).
    pub path: PathBuf,
    /// Through the background worker, which pushes every ready file ahead.
    pub asynchronous: bool,
    /// Where the worker keeps its markers (an `archive` folder in it; the worker is given the
    /// spool itself).
    pub spool_dir: Option<PathBuf>,
    pub compression_level: i32,
    /// WAL files the worker pushes at once.
    pub jobs: u16,
    /// The timeline whose fork is accepted.
    pub allow_fork: Option<u32>,
    /// Run as the background worker.
    pub worker: bool,
}

/// How long an asynchronous call waits for the worker before pushing the file itself.
const WAIT_FOR_WORKER: Duration = Duration::from_secs(120);

/// Archives `options.path`; returns once it is durably in the repository (or, as the worker, once
/// the worker exits).
pub fn push(options: &PushOptions, repo: &dyn RepoSource) -> Result<()> {
    let file_name = options.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let name = WalName::parse(file_name).ok_or_else(|| {
        Error::Usage(format!("{} is not a WAL file name PostgreSQL archives", options.path.display()))
    })?;
    if options.asynchronous {
        let pg_wal = options.path.parent().unwrap_or(Path::new("."));
        // The worker is handed the spool itself.
        let dir = match &options.spool_dir {
            Some(dir) if options.worker => dir.clone(),
            Some(dir) => dir.join("archive"),
            None => pg_wal.join("drctl-spool"),
        };
        match Spool::open(&dir) {
            Ok(spool) if options.worker => return serve(options, repo, pg_wal, &spool),
            Ok(spool) => {
                let worker = worker_args(options, repo, &spool)?;
                let binding = binding(&worker);
                let data = read_wal(&options.path)?;
                // Asked at once and every second while waiting: a spool without room sends the
                // caller to push the file itself at once, not after the whole wait.
                let start = || {
                    spool.check_room()?;
                    spool.want(&binding)?;
                    spool.ensure_worker(&worker)
                };
                match async_push::wait_for(&spool, name.as_str(), &data, &binding, start, WAIT_FOR_WORKER) {
                    Ok(Waited::Archived) => return Ok(()),
                    Ok(Waited::Failed(reason)) => {
                        tracing::warn!(wal = %name, reason, "the worker failed; pushing directly")
                    }
                    Ok(Waited::TimedOut) => tracing::warn!(wal = %name, "the worker is slow; pushing directly"),
                    Err(e) => tracing::warn!(wal = %name, error = %e, "cannot use the spool; pushing directly"),
                }
            }
            // Archiving must go on: without a usable spool, push directly (and say why).
            Err(e) => {
                tracing::warn!(spool = %dir.display(), error = %e, "the spool directory is not usable; pushing directly")
            }
        }
    }
    push_directly(options, repo, &name)
}

fn read_wal(path: &Path) -> Result<memmap2::Mmap> {
    async_push::map_wal_file(path).map_err(|source| Error::UnreadableWal { path: path.to_path_buf(), source })
}

fn push_directly(options: &PushOptions, repo: &dyn RepoSource, name: &WalName) -> Result<()> {
    let data = read_wal(&options.path)?;
    let repo = repo.open()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let compression = wal::Compression { level: options.compression_level, threads };
    match wal::push(&repo, name, &data, compression, &|| true, options.allow_fork)? {
        wal::Pushed::Stored(bytes) => tracing::info!(wal = %name, bytes, "archived"),
        wal::Pushed::AlreadyArchived => tracing::info!(wal = %name, "already archived with identical content"),
        wal::Pushed::Abandoned => unreachable!("a direct push is never abandoned"),
    }
    Ok(())
}

/// The command line that starts the worker for this spool.
fn worker_args(options: &PushOptions, repo: &dyn RepoSource, spool: &Spool) -> Result<Vec<OsString>> {
    let mut worker: Vec<OsString> = vec!["wal-push".into(), "--async".into(), "--worker".into()];
    worker.extend(repo.forward()?);
    worker.extend(["--spool-dir".into(), spool.dir().as_os_str().to_owned()]);
    worker.extend(["--jobs".into(), options.jobs.to_string().into()]);
    worker.extend(["--compression-level".into(), options.compression_level.to_string().into()]);
    if let Some(tli) = options.allow_fork {
        worker.extend(["--allow-fork".into(), tli.to_string().into()]);
    }
    let wal = std::path::absolute(&options.path).map_err(Error::io("cannot resolve the WAL file's path"))?;
    worker.push(wal.into_os_string());
    Ok(worker)
}

/// What a worker is bound to: a hash of its command line (repository location, S3 settings,
/// key, compression, spool), without the WAL file it was started for.
fn binding(worker: &[OsString]) -> String {
    let mut hasher = blake3::Hasher::new();
    for arg in &worker[..worker.len() - 1] {
        hasher.update(arg.as_encoded_bytes());
        hasher.update(&[0]);
    }
    hasher.finalize().to_hex()[..32].to_string()
}

/// The background worker: one per spool; exits at once if another serves it already.
fn serve(options: &PushOptions, repo: &dyn RepoSource, pg_wal: &Path, spool: &Spool) -> Result<()> {
    // A worker's exit status reaches no one but whoever reaps it (in a container without an
    // init, the postmaster, which takes unexpected statuses for a crash): errors are logged, and
    // every archive_command that waited pushes its file itself.
    let served = (|| -> Result<()> {
        let Some(_lock) = spool.try_lock().map_err(Error::io("cannot lock the archiving spool"))? else {
            return Ok(());
        };
        let binding = binding(&worker_args(options, repo, spool)?);
        let repo = repo.open()?;
        tracing::info!(spool = %spool.dir().display(), jobs = options.jobs, "archiving worker started");
        let compression = wal::Compression { level: options.compression_level, threads: 1 };
        let settings =
            async_push::Settings { binding, jobs: options.jobs as usize, compression, allow_fork: options.allow_fork };
        async_push::serve(&repo, pg_wal, spool, &settings, async_push::IDLE_EXIT)
            .map_err(Error::io("archiving worker"))?;
        tracing::info!("archiving worker idle; exiting");
        Ok(())
    })();
    if let Err(e) = served {
        tracing::error!(error = %crate::ops::with_causes(&e), "archiving worker stopped");
    }
    Ok(())
}
