use clap::Args;
use std::path::PathBuf;

use super::{GlobalArgs, RepoArgs, human_bytes};
use crate::ops::restore::{self, Destination, Event, RestoreOptions, TargetRequest};
use crate::pg::Conn;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to", "stdout", "pg"])))]
pub struct RestoreArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Snapshot id (or a unique prefix of at least 4 characters), or `latest`. With a recovery
    /// target and no snapshot, the newest base backup that can reach the target is used.
    #[arg(value_name = "SNAPSHOT", required_unless_present_any = ["point_in_time", "target_lsn", "target_xid"])]
    pub snapshot: Option<String>,
    /// Restore a PostgreSQL cluster to this moment ("2026-11-20 14:03:00+00"): the newest base
    /// backup that ended before it, then WAL from the archive up to it (every transaction
    /// committed at or before it). `latest`: replay all archived WAL.
    #[arg(long, value_name = "TIME", conflicts_with = "snapshot", requires = "to", group = "recovery_target")]
    pub point_in_time: Option<String>,
    /// Recover up to and including this WAL position ("0/5000028").
    #[arg(long, value_name = "LSN", requires = "to", group = "recovery_target")]
    pub target_lsn: Option<String>,
    /// Recover up to and including the commit of this transaction id. Without SNAPSHOT the
    /// newest restorable base backup is used; give an older one if the transaction is older.
    #[arg(long, value_name = "XID", requires = "to", group = "recovery_target")]
    pub target_xid: Option<u64>,
    /// Follow this timeline (default: the newest in the archive).
    #[arg(long, value_name = "TLI", requires = "to")]
    pub target_timeline: Option<u32>,
    /// For a PostgreSQL restore: run recovery now (privately: no TCP, archiving off), wait until
    /// the target is reached and the server promoted, report it, and stop the server cleanly.
    #[arg(long, requires = "to")]
    pub start: bool,
    /// For a PostgreSQL restore: `off` sets archive_mode = off in the restored cluster, so
    /// starting it (a test, a drill) never archives into the repository it came from; `keep`
    /// leaves the backup's archive settings, for a cluster that becomes the new primary.
    #[arg(long, value_enum, value_name = "MODE", default_value = "off")]
    pub archive_mode: ArchiveMode,
    /// Restore into this directory; it must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
    /// Restore every file whose data is intact even if some are damaged: a file with a chunk
    /// that cannot be read or authenticated is left out whole and listed, and the exit code is
    /// 3. A PostgreSQL base backup restored so is not set up for recovery.
    #[arg(long, alias = "ignore-damaged", requires = "to", conflicts_with = "start")]
    pub skip_damaged: bool,
    /// Write a stream snapshot to standard output.
    #[arg(long)]
    pub stdout: bool,
    /// Restore a logical dump (backup --pg-dump) with pg_restore into the database this
    /// connection string names (it must exist; create it first, e.g. `createdb app_copy`).
    #[arg(long, value_name = "DSN", conflicts_with = "point_in_time")]
    pub pg: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchiveMode {
    Off,
    Keep,
}

pub fn run(args: RestoreArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let repo = args.repo.open()?;
    let destination = match (&args.pg, &args.to) {
        (Some(dsn), _) => Destination::Database(Conn::new(dsn.clone())),
        (None, Some(dir)) => Destination::Dir(dir.clone()),
        (None, None) => Destination::Stdout,
    };
    // The server runs restore_command from its data directory: every path must be absolute.
    let repo_args = match destination {
        Destination::Dir(_) => args.repo.forward()?.into_iter().map(|a| a.to_string_lossy().into_owned()).collect(),
        _ => Vec::new(),
    };
    let options = RestoreOptions {
        snapshot: args.snapshot,
        target: TargetRequest {
            point_in_time: args.point_in_time,
            lsn: args.target_lsn,
            xid: args.target_xid,
            timeline: args.target_timeline,
        },
        destination,
        keep_archiving: args.archive_mode == ArchiveMode::Keep,
        start: args.start,
        skip_damaged: args.skip_damaged,
        repo_args,
        repo_env: Vec::new(),
    };
    let progress = super::progress(global);
    restore::run(&repo, &options, progress.as_ref(), &mut |event| print(event, global.quiet))?;
    Ok(())
}

fn print(event: Event, quiet: bool) {
    match event {
        Event::FilesRestored { id, dir, summary: s, elapsed } if !quiet => {
            let secs = elapsed.as_secs_f64();
            println!(
                "restored snapshot {} to {}: {} files, {} dirs, {} symlinks, {} in {:.1} s ({:.0} MB/s)",
                id.short(),
                dir.display(),
                s.files,
                s.dirs,
                s.symlinks,
                human_bytes(s.bytes),
                secs,
                s.bytes as f64 / 1e6 / secs.max(1e-9)
            );
        }
        Event::PartlyRestored { summary, postgres } => {
            for (path, reason) in &summary.not_restored {
                println!("not restored: {path}: {reason}");
            }
            if postgres {
                println!("the data directory is incomplete, so recovery was not configured");
            }
        }
        Event::RecoveryConfigured { dir, configured: c, start: false } if !quiet => println!(
            "recovery configured to {}{}: start PostgreSQL on {} to replay WAL and promote; {}",
            c.target,
            c.backup_end,
            dir.display(),
            c.archiving
        ),
        Event::Recovered { dir, configured: c, recovered } if !quiet => {
            println!(
                "recovered to {}{} and promoted; {} is ready to start; {}",
                c.target,
                c.backup_end,
                dir.display(),
                c.archiving
            );
            for line in [&recovered.stop, &recovered.last_transaction].into_iter().flatten() {
                println!("  postgres: {line}");
            }
        }
        _ => {}
    }
}
