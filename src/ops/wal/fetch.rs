//! `wal-fetch`: restore one WAL file from the archive, through the prefetch spool when a worker
//! has fetched it ahead, and keep the prefetch worker going.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::spool::Spool;
use super::{Error, RepoSource, Result, prefetch};
use crate::pg::wal::{WalKind, WalName};

/// What to fetch and where.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The WAL file PostgreSQL asks for (%f).
    pub name: String,
    /// Where to write it (%p).
    pub path: PathBuf,
    /// Segments the worker fetches ahead; 0 turns prefetch off.
    pub prefetch: u16,
    /// Where prefetched segments wait (a `prefetch` folder in it; the worker is given the spool
    /// itself).
    pub spool_dir: Option<PathBuf>,
    /// Segments the worker fetches at once.
    pub jobs: u16,
    /// Run as the prefetch worker.
    pub worker: bool,
    /// Serve only the files this list names (one per line), as if the archive held nothing else:
    /// a drill recovers from the archive as it was at its simulated failure.
    pub archive_list: Option<PathBuf>,
}

/// How a fetch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// The file is at its path (or, as the worker, the worker is done).
    Restored,
    /// The archive does not hold it.
    NotInArchive,
}

/// Restores `options.name` to `options.path`.
pub fn fetch(options: &FetchOptions, repo: &dyn RepoSource) -> Result<Fetched> {
    let name = WalName::parse(&options.name)
        .ok_or_else(|| Error::Usage(format!("{:?} is not a WAL file name", options.name)))?;
    // Only segments are prefetched; history and partial files are asked for rarely.
    let spool = if options.prefetch > 0 && name.kind() == WalKind::Segment { open_spool(options) } else { None };
    if options.worker {
        // Errors are logged, never an exit status: whoever reaps a detached worker (in a container
        // without an init, the postmaster) must not take it for a crash.
        let served = (|| -> Result<()> {
            let spool = spool.ok_or_else(|| Error::Usage("the prefetch spool is not usable".into()))?;
            let Some(_lock) = spool.try_lock().map_err(Error::io("cannot lock the prefetch spool"))? else {
                return Ok(());
            };
            let repo = repo.open()?;
            prefetch::serve(&repo, &spool, options.prefetch as usize, options.jobs as usize, prefetch::IDLE_EXIT)?;
            Ok(())
        })();
        if let Err(e) = served {
            tracing::error!(error = %crate::ops::with_causes(&e), "prefetch worker stopped");
        }
        return Ok(Fetched::Restored);
    }
    if let Some(list) = &options.archive_list {
        let listed = std::fs::read_to_string(list)
            .map_err(Error::io(format!("cannot read the archive list {}", list.display())))?;
        if !listed.lines().any(|l| l.trim() == name.as_str()) {
            tracing::info!(wal = %name, list = %list.display(), "not in the archive list");
            return Ok(Fetched::NotInArchive);
        }
    }
    if let Some(spool) = &spool
        && prefetch::take(spool, &name, &options.path).unwrap_or(false)
    {
        tracing::info!(wal = %name, "restored from the prefetch spool");
        keep_prefetching(options, repo, spool, &name);
        return Ok(Fetched::Restored);
    }
    let opened = repo.open()?;
    // Written beside the target and renamed, so PostgreSQL never sees a partial file. No fsync:
    // the file is replayed at once, and after a crash recovery fetches it again.
    let Some(bytes) = super::fetch_into(&opened, &name, &options.path)? else {
        tracing::info!(wal = %name, "not in the archive");
        return Ok(Fetched::NotInArchive);
    };
    tracing::info!(wal = %name, bytes, "restored from the archive");
    if let Some(spool) = &spool {
        keep_prefetching(options, repo, spool, &name);
    }
    Ok(Fetched::Restored)
}

fn open_spool(options: &FetchOptions) -> Option<Spool> {
    // The worker is handed the spool itself.
    let dir = match &options.spool_dir {
        Some(dir) if options.worker => dir.clone(),
        Some(dir) => dir.join("prefetch"),
        None => options.path.parent().unwrap_or(Path::new(".")).join(prefetch::DEFAULT_SPOOL),
    };
    Spool::open(&dir)
        .inspect_err(|e| tracing::warn!(spool = %dir.display(), error = %e, "prefetch off: the spool is not usable"))
        .ok()
}

/// Tells the worker what the server asked for and makes sure one runs. Prefetch is an
/// optimisation: a failure here is logged, never fails the fetch.
fn keep_prefetching(options: &FetchOptions, repo: &dyn RepoSource, spool: &Spool, name: &WalName) {
    let started = (|| -> Result<()> {
        prefetch::request(spool, name).map_err(Error::io("cannot tell the prefetch worker what was asked for"))?;
        let mut worker: Vec<OsString> = vec!["wal-fetch".into(), "--worker".into()];
        worker.extend(repo.forward()?);
        worker.extend(["--spool-dir".into(), spool.dir().as_os_str().to_owned()]);
        worker.extend(["--prefetch".into(), options.prefetch.to_string().into()]);
        worker.extend(["--jobs".into(), options.jobs.to_string().into()]);
        let target = std::path::absolute(&options.path).map_err(Error::io("cannot resolve the WAL file's path"))?;
        worker.extend([name.as_str().into(), target.into_os_string()]);
        spool.ensure_worker(&worker).map_err(Error::io("cannot start the prefetch worker"))?;
        Ok(())
    })();
    if let Err(e) = started {
        tracing::warn!(error = %crate::ops::with_causes(&e), "cannot start WAL prefetch");
    }
}
