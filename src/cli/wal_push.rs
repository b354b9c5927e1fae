use anyhow::Context;
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::RepoArgs;
use crate::pg::async_push::{self, Waited};
use crate::pg::spool::Spool;
use crate::pg::wal::WalName;
use crate::repo::{self, wal};

/// `archive_command = 'drctl wal-push %p'`, with DRCTL_REPO and DRCTL_KEY_FILE in the server's
/// environment. Returns only once the file is durably stored in the repository.
#[derive(Debug, Args)]
pub struct WalPushArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The WAL file to archive (PostgreSQL's %p, relative to the data directory).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Archive through a background worker that pushes every ready WAL file ahead, in
    /// parallel; this call then returns as soon as the worker has stored its file.
    #[arg(long = "async", env = "DRCTL_WAL_ASYNC")]
    pub asynchronous: bool,
    /// With --async: where the worker keeps its markers and log, in an `archive` folder (default:
    /// drctl-spool beside the WAL file, inside pg_wal). One per server.
    #[arg(long, value_name = "DIR", env = "DRCTL_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// zstd level for WAL files. 1 by default: WAL compresses nearly as well as at 3, twice as
    /// fast, and archiving must keep up with the busiest server.
    #[arg(long, value_name = "LEVEL", default_value_t = 1, env = "DRCTL_WAL_COMPRESSION_LEVEL",
          value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression_level: i32,
    /// With --async: WAL files the worker pushes at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Archive the history file of timeline TLI even though it leaves its parent timeline before
    /// the parent's archived end: for the new primary after a deliberate point-in-time restore
    /// (a restored copy's new timeline is refused, so that restoring the latest point never
    /// follows it).
    #[arg(long, value_name = "TLI", env = "DRCTL_ALLOW_FORK")]
    pub allow_fork: Option<u32>,
    /// Run as the background worker (started by --async itself).
    #[arg(long, hide = true, requires = "asynchronous")]
    pub worker: bool,
}

/// How long an --async call waits for the worker before pushing the file itself.
const WAIT_FOR_WORKER: Duration = Duration::from_secs(120);

pub fn run(args: WalPushArgs) -> anyhow::Result<()> {
    let file_name = args.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let name = WalName::parse(file_name).ok_or_else(|| {
        repo::Error::InvalidRequest(format!("{} is not a WAL file name PostgreSQL archives", args.path.display()))
    })?;
    if args.asynchronous {
        let pg_wal = args.path.parent().unwrap_or(Path::new("."));
        // The worker is handed the spool itself.
        let dir = match &args.spool_dir {
            Some(dir) if args.worker => dir.clone(),
            Some(dir) => dir.join("archive"),
            None => pg_wal.join("drctl-spool"),
        };
        match Spool::open(&dir) {
            Ok(spool) if args.worker => return serve(&args, pg_wal, &spool),
            Ok(spool) => {
                let worker = worker_args(&args, &spool)?;
                let binding = binding(&worker);
                let data = read_wal(&args.path)?;
                let start = || spool.want(&binding).and_then(|()| spool.ensure_worker(&worker));
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
    push(&args, &name)
}

fn read_wal(path: &Path) -> anyhow::Result<memmap2::Mmap> {
    async_push::map_wal_file(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .map_err(|e| e.context(repo::Error::InvalidRequest(format!("WAL file {} is not readable", path.display()))))
}

fn push(args: &WalPushArgs, name: &WalName) -> anyhow::Result<()> {
    let data = read_wal(&args.path)?;
    let repo = args.repo.open()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let compression = wal::Compression { level: args.compression_level, threads };
    match wal::push(&repo, name, &data, compression, &|| true, args.allow_fork)? {
        wal::Pushed::Stored(bytes) => tracing::info!(wal = %name, bytes, "archived"),
        wal::Pushed::AlreadyArchived => tracing::info!(wal = %name, "already archived with identical content"),
        wal::Pushed::Abandoned => unreachable!("a direct push is never abandoned"),
    }
    Ok(())
}

/// The command line that starts the worker for this spool.
fn worker_args(args: &WalPushArgs, spool: &Spool) -> anyhow::Result<Vec<std::ffi::OsString>> {
    let mut worker: Vec<std::ffi::OsString> = vec!["wal-push".into(), "--async".into(), "--worker".into()];
    worker.extend(args.repo.forward()?);
    worker.extend(["--spool-dir".into(), spool.dir().as_os_str().to_owned()]);
    worker.extend(["--jobs".into(), args.jobs.to_string().into()]);
    worker.extend(["--compression-level".into(), args.compression_level.to_string().into()]);
    if let Some(tli) = args.allow_fork {
        worker.extend(["--allow-fork".into(), tli.to_string().into()]);
    }
    worker.push(std::path::absolute(&args.path)?.into_os_string());
    Ok(worker)
}

/// What a worker is bound to: a hash of its command line (repository location, S3 settings,
/// key, compression, spool), without the WAL file it was started for.
fn binding(worker: &[std::ffi::OsString]) -> String {
    let mut hasher = blake3::Hasher::new();
    for arg in &worker[..worker.len() - 1] {
        hasher.update(arg.as_encoded_bytes());
        hasher.update(&[0]);
    }
    hasher.finalize().to_hex()[..32].to_string()
}

/// The background worker: one per spool; exits at once if another serves it already.
fn serve(args: &WalPushArgs, pg_wal: &Path, spool: &Spool) -> anyhow::Result<()> {
    // A worker's exit status reaches no one but whoever reaps it (in a container without an
    // init, the postmaster, which takes unexpected statuses for a crash): errors are logged, and
    // every archive_command that waited pushes its file itself.
    let served = (|| -> anyhow::Result<()> {
        let Some(_lock) = spool.try_lock()? else { return Ok(()) };
        let binding = binding(&worker_args(args, spool)?);
        let repo = args.repo.open()?;
        tracing::info!(spool = %spool.dir().display(), jobs = args.jobs, "archiving worker started");
        let compression = wal::Compression { level: args.compression_level, threads: 1 };
        let settings =
            async_push::Settings { binding, jobs: args.jobs as usize, compression, allow_fork: args.allow_fork };
        async_push::serve(&repo, pg_wal, spool, &settings, async_push::IDLE_EXIT)?;
        tracing::info!("archiving worker idle; exiting");
        Ok(())
    })();
    if let Err(e) = served {
        tracing::error!(error = %format!("{e:#}"), "archiving worker stopped");
    }
    Ok(())
}
