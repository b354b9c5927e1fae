//! The command line: global flags, one file per command. Each command parses its arguments and
//! calls the library; nothing here knows the repository format.

mod access;
mod backup;
mod check;
mod copy;
mod drill;
mod forget;
mod heartbeat;
mod init;
mod job;
mod key;
mod policy;
mod progress;
mod promote;
mod prune;
mod repair;
mod report;
mod restore;
mod runbook;
mod runbook_run;
mod schedule;
mod snapshots;
mod wal_fetch;
mod wal_push;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::repo::retention::parse_duration;
pub use access::{AccessArgs, RepoArgs};
pub use progress::progress;

/// drctl: encrypted, deduplicated backups and disaster recovery for PostgreSQL-backed services.
#[derive(Debug, Parser)]
#[command(name = "drctl", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log format on stderr: text on a terminal and JSON otherwise (auto), or forced.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto, env = "DRCTL_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// More log detail (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print only results and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The folder of the PostgreSQL programs to use (postgres, initdb, pg_basebackup, …): looked
    /// in first, and the only source of server programs, which must be of the data's version.
    #[arg(long, global = true, value_name = "DIR", env = "DRCTL_PG_BIN")]
    pub pg_bin: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository.
    Init(init::InitArgs),
    /// Back up files and directories, or one stream from standard input.
    Backup(backup::BackupArgs),
    /// List the snapshots a repository holds.
    Snapshots(snapshots::SnapshotsArgs),
    /// Restore a snapshot into a new directory, or a stream snapshot to standard output.
    Restore(restore::RestoreArgs),
    /// Verify the repository's structure; with --read-data, every stored byte.
    Check(check::CheckArgs),
    /// Copy snapshots (and WAL) to another repository, e.g. in another region: only what it
    /// lacks, each object verified.
    Copy(copy::CopyArgs),
    /// Remove snapshots (and WAL) retention rules do not keep; with --prune, reclaim space.
    Forget(forget::ForgetArgs),
    /// Reclaim the packs no snapshot uses (two phases: marked unused first, deleted a grace
    /// period later).
    Prune(prune::PruneArgs),
    /// Manage key slots: the passphrases and key files that open the repository.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Rebuild what a damaged repository can prove, and remove what it cannot.
    #[command(subcommand)]
    Repair(repair::RepairCommand),
    /// Promote a streaming standby to primary behind safety gates (standby, replaying, same
    /// cluster as the repository, old primary fenced, lag within bounds, archive gap-free).
    Promote(promote::PromoteArgs),
    /// Archive one WAL file (PostgreSQL's archive_command: `drctl wal-push %p`).
    WalPush(wal_push::WalPushArgs),
    /// Restore one archived WAL file (PostgreSQL's restore_command: `drctl wal-fetch %f %p`).
    WalFetch(wal_fetch::WalFetchArgs),
    /// Write heartbeat rows into a policy's database (table drctl.heartbeat), which drills
    /// measure RPO with: once, or --every DURATION until stopped.
    Heartbeat(heartbeat::HeartbeatArgs),
    /// A DR drill: restore the policy's backup into a scratch cluster (never production), verify
    /// it, measure RTO and RPO against the policy's targets, and store the record; `drill list`
    /// shows the records.
    Drill(drill::DrillArgs),
    /// A compliance report of a policy over a period (schedule adherence, backup age, WAL
    /// coverage, encryption, copies, retention, checks, drills, runbooks), each control PASS,
    /// FAIL or NO-EVIDENCE from the repositories' evidence; sealed (`report verify`).
    Report(report::ReportArgs),
    /// Run policies on their cron schedules (for hosts without Kubernetes CronJobs), serving
    /// /metrics and /healthz.
    Schedule(schedule::ScheduleArgs),
    /// The recovery procedures as code (runbooks/): list, show and check them.
    #[command(subcommand)]
    Runbook(runbook::RunbookCommand),
    /// Check policy files (one YAML file per protected system) and say what is wrong, where.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
}

/// Runs the parsed command; returns the exit status of a command that ended normally.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    if let Some(dir) = &cli.global.pg_bin {
        crate::pg::programs::set_bin_dir(dir.clone());
    }
    let done = match cli.command {
        Command::Init(args) => init::run(args, &cli.global),
        Command::Backup(args) => return backup::run(args, &cli.global),
        Command::Snapshots(args) => snapshots::run(args),
        Command::Restore(args) => restore::run(args, &cli.global),
        Command::Check(args) => check::run(args, &cli.global),
        Command::Copy(args) => copy::run(args, &cli.global),
        Command::Forget(args) => forget::run(args, &cli.global),
        Command::Prune(args) => prune::run(args, &cli.global),
        Command::Key(command) => key::run(command, &cli.global),
        Command::Repair(command) => repair::run(command, &cli.global),
        Command::Promote(args) => promote::run(args, &cli.global),
        Command::WalPush(args) => wal_push::run(args),
        Command::WalFetch(args) => return wal_fetch::run(args),
        Command::Policy(command) => return policy::run(command),
        Command::Runbook(command) => return runbook::run(command),
        Command::Schedule(args) => return schedule::run(args, &cli.global),
        Command::Heartbeat(args) => return heartbeat::run(args, &cli.global),
        Command::Drill(args) => return drill::run(args, &cli.global),
        Command::Report(args) => return report::run(args, &cli.global),
    };
    done.map(|()| 0)
}

impl Command {
    /// The exit status every failure of this command gets instead of the documented codes:
    /// `wal-fetch` must make PostgreSQL stop recovery, whatever failed (see wal_fetch.rs).
    pub fn failure_override(&self) -> Option<u8> {
        match self {
            Command::WalFetch(_) => Some(wal_fetch::FAILED),
            _ => None,
        }
    }
}

pub use crate::progress::human_bytes;
