use anyhow::Context;
use clap::Args;
use std::path::{Path, PathBuf};

use super::RepoArgs;
use crate::pg::prefetch;
use crate::pg::spool::Spool;
use crate::pg::wal::{WalKind, WalName};
use crate::repo::{self, wal};

/// `restore_command = 'drctl wal-fetch %f %p'`. Exits 0 when the file was restored, 1 when the
/// archive does not hold it (PostgreSQL asks for files that may not exist), and 126 on any other
/// failure, which makes PostgreSQL stop recovery instead of taking a damaged archive for its end.
#[derive(Debug, Args)]
pub struct WalFetchArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The WAL file PostgreSQL asks for (%f).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Where to write it (%p, relative to the data directory).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Segments a background worker fetches ahead of the server, in parallel; 0 turns prefetch off.
    #[arg(long, value_name = "N", default_value_t = 8, env = "DRCTL_PREFETCH")]
    pub prefetch: u16,
    /// Where prefetched segments wait, in a `prefetch` folder (default: drctl-prefetch beside the
    /// file, inside pg_wal). One per server.
    #[arg(long, value_name = "DIR", env = "DRCTL_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Segments the prefetch worker fetches at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Run as the prefetch worker (started by wal-fetch itself).
    #[arg(long, hide = true)]
    pub worker: bool,
}

/// Exit status for "not in the archive".
pub const NOT_IN_ARCHIVE: u8 = 1;
/// Exit status for every other failure: above 125, PostgreSQL aborts recovery.
pub const FAILED: u8 = 126;

pub fn run(args: WalFetchArgs) -> anyhow::Result<u8> {
    let name = WalName::parse(&args.name)
        .ok_or_else(|| repo::Error::InvalidRequest(format!("{:?} is not a WAL file name", args.name)))?;
    // Only segments are prefetched; history and partial files are asked for rarely.
    let spool = if args.prefetch > 0 && name.kind() == WalKind::Segment { open_spool(&args) } else { None };
    if args.worker {
        // Errors are logged, never an exit status: whoever reaps a detached worker (in a container
        // without an init, the postmaster) must not take it for a crash.
        let served = (|| -> anyhow::Result<()> {
            let spool = spool.context("the prefetch spool is not usable")?;
            let Some(_lock) = spool.try_lock()? else { return Ok(()) };
            let repo = args.repo.open()?;
            prefetch::serve(&repo, &spool, args.prefetch as usize, args.jobs as usize, prefetch::IDLE_EXIT)?;
            Ok(())
        })();
        if let Err(e) = served {
            tracing::error!(error = %format!("{e:#}"), "prefetch worker stopped");
        }
        return Ok(0);
    }
    if let Some(spool) = &spool
        && prefetch::take(spool, &name, &args.path).unwrap_or(false)
    {
        tracing::info!(wal = %name, "restored from the prefetch spool");
        keep_prefetching(&args, spool, &name);
        return Ok(0);
    }
    let repo = args.repo.open()?;
    // Written beside the target and renamed, so PostgreSQL never sees a partial file. No fsync:
    // the file is replayed at once, and after a crash recovery fetches it again.
    let Some(bytes) = wal::fetch_into(&repo, &name, &args.path)? else {
        tracing::info!(wal = %name, "not in the archive");
        return Ok(NOT_IN_ARCHIVE);
    };
    tracing::info!(wal = %name, bytes, "restored from the archive");
    if let Some(spool) = &spool {
        keep_prefetching(&args, spool, &name);
    }
    Ok(0)
}

fn open_spool(args: &WalFetchArgs) -> Option<Spool> {
    // The worker is handed the spool itself.
    let dir = match &args.spool_dir {
        Some(dir) if args.worker => dir.clone(),
        Some(dir) => dir.join("prefetch"),
        None => args.path.parent().unwrap_or(Path::new(".")).join(prefetch::DEFAULT_SPOOL),
    };
    Spool::open(&dir)
        .inspect_err(|e| tracing::warn!(spool = %dir.display(), error = %e, "prefetch off: the spool is not usable"))
        .ok()
}

/// Tells the worker what the server asked for and makes sure one runs. Prefetch is an
/// optimisation: a failure here is logged, never fails the fetch.
fn keep_prefetching(args: &WalFetchArgs, spool: &Spool, name: &WalName) {
    let started = (|| -> anyhow::Result<()> {
        prefetch::request(spool, name)?;
        let mut worker: Vec<std::ffi::OsString> = vec!["wal-fetch".into(), "--worker".into()];
        worker.extend(args.repo.forward()?);
        worker.extend(["--spool-dir".into(), spool.dir().as_os_str().to_owned()]);
        worker.extend(["--prefetch".into(), args.prefetch.to_string().into()]);
        worker.extend(["--jobs".into(), args.jobs.to_string().into()]);
        worker.extend([name.as_str().into(), std::path::absolute(&args.path)?.into_os_string()]);
        spool.ensure_worker(&worker)?;
        Ok(())
    })();
    if let Err(e) = started {
        tracing::warn!(error = %e, "cannot start WAL prefetch");
    }
}
