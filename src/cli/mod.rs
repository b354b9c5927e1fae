//! The command line: global flags, one file per command. Each command parses its arguments and
//! calls the library; nothing here knows the repository format.

mod backup;
mod check;
mod copy;
mod forget;
mod init;
mod key;
mod policy;
mod prune;
mod repair;
mod report;
mod restore;
mod schedule;
mod snapshots;
mod wal_fetch;
mod wal_push;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use crate::ops::unlock::{Access, SecretSource};
use crate::progress::{NoProgress, Progress};
use crate::repo::key::Secret;
use crate::repo::{self, Repository};
use crate::store;

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
    /// Archive one WAL file (PostgreSQL's archive_command: `drctl wal-push %p`).
    WalPush(wal_push::WalPushArgs),
    /// Restore one archived WAL file (PostgreSQL's restore_command: `drctl wal-fetch %f %p`).
    WalFetch(wal_fetch::WalFetchArgs),
    /// Run policies on their cron schedules (for hosts without Kubernetes CronJobs), serving
    /// /metrics and /healthz.
    Schedule(schedule::ScheduleArgs),
    /// Check policy files (one YAML file per protected system) and say what is wrong, where.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
}

/// Where the repository is and how to unlock it; shared by every command.
#[derive(Debug, Args)]
pub struct RepoArgs {
    /// Repository location: a local directory or s3://bucket/prefix[?region=NAME] (credentials
    /// and region from the AWS default chain).
    #[arg(long, env = "DRCTL_REPO", value_name = "LOCATION")]
    pub repo: String,
    #[command(flatten)]
    pub access: AccessArgs,
}

impl std::ops::Deref for RepoArgs {
    type Target = AccessArgs;
    fn deref(&self) -> &AccessArgs {
        &self.access
    }
}

impl RepoArgs {
    pub fn access(&self) -> Access {
        self.access.access(&self.repo)
    }

    pub fn store(&self) -> anyhow::Result<Arc<dyn store::Store>> {
        Ok(self.access().store()?)
    }

    pub fn open(&self) -> anyhow::Result<Repository> {
        self.access.open(&self.repo)
    }

    /// These settings as command-line flags, with absolute paths: for a background worker
    /// started from another directory.
    pub fn forward(&self) -> anyhow::Result<Vec<std::ffi::OsString>> {
        Ok(self.access().forward()?)
    }
}

/// How to unlock a repository and reach its store: everything but its location.
#[derive(Debug, Args)]
pub struct AccessArgs {
    /// File whose first line is the passphrase (else DRCTL_PASSWORD, else a prompt on a terminal).
    #[arg(long, env = "DRCTL_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Open with a key file (made by `drctl key add --new-key-file`) instead of a passphrase:
    /// no argon2 run, for commands PostgreSQL starts once per WAL segment.
    #[arg(long, env = "DRCTL_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// For s3:// repositories: the endpoint of an S3-compatible service.
    #[arg(long, env = "DRCTL_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// For s3:// repositories: path-style addressing (the bucket in the path), as most
    /// S3-compatible services want.
    #[arg(long, env = "DRCTL_S3_PATH_STYLE")]
    pub s3_path_style: bool,
    /// For s3:// repositories: the storage class of new objects (STANDARD, STANDARD_IA,
    /// ONEZONE_IA, INTELLIGENT_TIERING, GLACIER_IR; classes that need a thaw are refused).
    #[arg(long, env = "DRCTL_S3_STORAGE_CLASS", value_name = "CLASS")]
    pub s3_storage_class: Option<String>,
    /// For s3:// repositories: server-side encryption of new objects with this KMS key, on top of
    /// drctl's own encryption.
    #[arg(long, env = "DRCTL_S3_SSE_KMS_KEY_ID", value_name = "ARN")]
    pub s3_sse_kms_key_id: Option<String>,
    /// For s3:// repositories in a bucket with Object Lock: retain every new object (locks aside)
    /// for DAYS in MODE governance or compliance, so nobody can delete a backup before then.
    #[arg(long, env = "DRCTL_S3_OBJECT_LOCK", value_name = "MODE:DAYS")]
    pub s3_object_lock: Option<store::ObjectLock>,
    /// Wait up to this long for a conflicting repository lock (a backup while prune runs)
    /// instead of failing at once with exit 6.
    #[arg(long, env = "DRCTL_LOCK_WAIT", value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub lock_wait: chrono::Duration,
}

pub use crate::ops::unlock::read_password_file;

pub use crate::repo::retention::parse_duration;

impl AccessArgs {
    /// Where these flags (and DRCTL_PASSWORD) say the secret comes from: a key file first, then
    /// a password file, then the variable; `None` leaves it to a KMS slot or a prompt.
    pub fn secret_source(&self) -> Option<SecretSource> {
        if let Some(path) = &self.key_file {
            return Some(SecretSource::KeyFile(path.clone()));
        }
        if let Some(path) = &self.password_file {
            return Some(SecretSource::PasswordFile(path.clone()));
        }
        std::env::var_os("DRCTL_PASSWORD").map(|_| SecretSource::PasswordEnv("DRCTL_PASSWORD".into()))
    }

    /// The repository at `location` as these flags reach it.
    pub fn access(&self, location: &str) -> Access {
        Access {
            location: location.to_string(),
            s3: self.s3_options(),
            secret: self.secret_source(),
            lock_wait: self.lock_wait.to_std().unwrap_or_default(),
        }
    }

    pub fn store(&self, location: &str) -> anyhow::Result<Arc<dyn store::Store>> {
        Ok(self.access(location).store()?)
    }

    /// The S3 settings of these flags.
    pub fn s3_options(&self) -> store::S3Options {
        store::S3Options {
            endpoint: self.s3_endpoint.clone(),
            path_style: self.s3_path_style,
            storage_class: self.s3_storage_class.as_ref().map(|c| c.to_ascii_uppercase()),
            sse_kms_key_id: self.s3_sse_kms_key_id.clone(),
            object_lock: self.s3_object_lock.clone(),
            retry: Some(crate::aws::sdk::retry_config()),
            timeout: Some(crate::aws::sdk::timeout_config()),
        }
    }

    /// The secret these flags give, else a passphrase typed at a terminal (twice with `confirm`).
    pub fn secret(&self, confirm: bool) -> anyhow::Result<Secret> {
        match self.secret_source() {
            Some(source) => Ok(source.secret()?),
            None => Ok(Secret::Passphrase(prompt_passphrase(confirm)?.into_bytes())),
        }
    }

    /// Whether a key file or passphrase is given (else a KMS slot or a prompt opens).
    pub fn secret_given(&self) -> bool {
        self.secret_source().is_some()
    }

    pub fn open(&self, location: &str) -> anyhow::Result<Repository> {
        self.access(location).open(|| Ok(Secret::Passphrase(prompt_passphrase(false)?.into_bytes())))
    }
}

/// A passphrase typed at a terminal; without one, the error that no secret was given.
fn prompt_passphrase(confirm: bool) -> anyhow::Result<String> {
    if !std::io::stderr().is_terminal() {
        return Err(repo::Error::NoPassword.into());
    }
    let first = rpassword::prompt_password("repository passphrase: ")?;
    if confirm && rpassword::prompt_password("repeat passphrase: ")? != first {
        anyhow::bail!(repo::Error::InvalidRequest("the two passphrases differ".into()));
    }
    Ok(first)
}

/// Where a policy job's metrics go (both, either or neither).
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Write the job's metrics to this file (Prometheus text format, for node_exporter's textfile
    /// collector), replaced whole by each job.
    #[arg(long, env = "DRCTL_METRICS_FILE", value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Push the job's metrics to this Prometheus Pushgateway (e.g. http://pushgateway:9091),
    /// replacing the policy's group.
    #[arg(long, env = "DRCTL_PUSHGATEWAY", value_name = "URL")]
    pub pushgateway: Option<String>,
}

impl MetricsArgs {
    /// Publishes `report` where asked. A failure is logged, not fatal: the job's own result
    /// stands, and the alert on a stale success timestamp still fires.
    pub fn publish(&self, report: &crate::job::JobReport) {
        if self.metrics_file.is_none() && self.pushgateway.is_none() {
            return;
        }
        let text = crate::metrics::of_report(report);
        if let Some(path) = &self.metrics_file
            && let Err(e) = crate::metrics::write_textfile(path, &text)
        {
            tracing::error!("cannot write the metrics file {}: {e}", path.display());
        }
        if let Some(gateway) = &self.pushgateway
            && let Err(e) = crate::metrics::push(gateway, &report.policy, &text)
        {
            tracing::error!("{e}");
        }
    }
}

/// A progress bar on a terminal, nothing otherwise.
pub fn progress(global: &GlobalArgs) -> Box<dyn Progress> {
    if global.quiet || !std::io::stderr().is_terminal() {
        Box::new(NoProgress)
    } else {
        Box::new(TerminalProgress(indicatif::ProgressBar::hidden()))
    }
}

struct TerminalProgress(indicatif::ProgressBar);

impl Progress for TerminalProgress {
    fn start(&self, label: &str, total: Option<u64>) {
        let template = match total {
            Some(_) => "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            None => "{msg} {spinner} {bytes} {bytes_per_sec} {elapsed}",
        };
        let style = indicatif::ProgressStyle::with_template(template).expect("valid template").progress_chars("=> ");
        self.0.set_style(style);
        self.0.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        self.0.set_length(total.unwrap_or(0));
        self.0.set_position(0);
        self.0.set_message(label.to_string());
        self.0.enable_steady_tick(std::time::Duration::from_millis(200));
    }
    fn add(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// Runs the parsed command; returns the exit status of a command that ended normally.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
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
        Command::WalPush(args) => wal_push::run(args),
        Command::WalFetch(args) => return wal_fetch::run(args),
        Command::Policy(command) => return policy::run(command),
        Command::Schedule(args) => return schedule::run(args, &cli.global),
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

/// Byte counts for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}
