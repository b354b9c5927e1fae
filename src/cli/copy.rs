use clap::Args;
use std::path::PathBuf;

use super::{AccessArgs, GlobalArgs, human_bytes};
use crate::ops::{self, unlock::SecretSource};
use crate::repo::key::Secret;

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The repository to copy from (DRCTL_REPO works too).
    #[arg(long, env = "DRCTL_REPO", value_name = "LOCATION")]
    pub from: String,
    /// The repository to copy to: an earlier copy of the source, or an empty location, which
    /// becomes one (same master key, its own key slot).
    #[arg(long, value_name = "LOCATION")]
    pub to: String,
    /// Snapshots to copy (ids, unique prefixes, or `latest`).
    #[arg(value_name = "SNAPSHOT", required_unless_present_any = ["all", "wal"], conflicts_with = "all")]
    pub snapshots: Vec<String>,
    /// Copy every snapshot.
    #[arg(long)]
    pub all: bool,
    /// Also copy the WAL archive (for point-in-time restores from the copy).
    #[arg(long)]
    pub wal: bool,
    /// Objects copied at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// How to open the source (and, unless the --to-* options say otherwise, the target).
    #[command(flatten)]
    pub access: AccessArgs,
    /// The target's key slot is a KMS key (e.g. one in the target's region).
    #[arg(long, value_name = "ARN", conflicts_with_all = ["to_key_file", "to_password_file"])]
    pub to_kms_key_id: Option<String>,
    /// Open the target with this key file.
    #[arg(long, value_name = "FILE", conflicts_with = "to_password_file")]
    pub to_key_file: Option<PathBuf>,
    /// Open the target with the passphrase in this file.
    #[arg(long, value_name = "FILE")]
    pub to_password_file: Option<PathBuf>,
}

pub fn run(args: CopyArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let source = args.access.open(&args.from)?;
    let new_secret = || -> anyhow::Result<Secret> {
        let secret = match target_secret(&args)? {
            Some(secret) => secret,
            None => match ops::copy::kms_slot_of(&source)? {
                Some(kms) => kms,
                None => args.access.secret(false)?,
            },
        };
        if matches!(secret, Secret::Kms(..)) && args.to_kms_key_id.is_none() {
            tracing::warn!(
                "the copy's only key slot uses the source's KMS key: if that key's region is down, the copy cannot \
                 be opened; give --to-kms-key-id with a key in the copy's region (or add one with `drctl key add`)"
            );
        }
        Ok(secret)
    };
    let from = args.access.secret_source();
    let target = ops::copy::Target {
        store: args.access.store(&args.to)?,
        open: &|store| Ok(ops::copy::open_target(store, target_secret(&args)?.as_ref(), from.as_ref())?),
        new_secret: &new_secret,
        lock_wait: args.access.lock_wait.to_std().unwrap_or_default(),
    };
    let options = ops::copy::Options {
        snapshots: (!args.all).then(|| args.snapshots.clone()),
        wal: args.wal,
        jobs: args.jobs.into(),
    };
    let progress = super::progress(global);
    let report = ops::copy::copy(&source, target, &options, progress.as_ref())?.report;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !global.quiet {
        println!(
            "copied {} snapshots ({} already there), {} packs ({} already there), {} index files, {} WAL files ({} \
             already there), {} evidence records: {} objects, {}, each read back and verified",
            report.snapshots_copied,
            report.snapshots_present,
            report.packs_copied,
            report.packs_present,
            report.index_files_copied,
            report.wal_copied,
            report.wal_present,
            report.records_copied,
            report.objects_copied,
            human_bytes(report.bytes_copied)
        );
    }
    Ok(())
}

/// The target's secret from the --to-* options, if any. One that cannot be read is a mistake
/// in the command line (exit 2), as it has always been for these options.
fn target_secret(args: &CopyArgs) -> anyhow::Result<Option<Secret>> {
    let source = match (&args.to_kms_key_id, &args.to_key_file, &args.to_password_file) {
        (Some(key), _, _) => SecretSource::Kms(Some(key.clone())),
        (None, Some(path), _) => SecretSource::KeyFile(path.clone()),
        (None, None, Some(path)) => SecretSource::PasswordFile(path.clone()),
        (None, None, None) => return Ok(None),
    };
    match source.secret() {
        Ok(secret) => Ok(Some(secret)),
        Err(e @ ops::Error::UnreadableSecret { .. }) => Err(ops::Error::Usage(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}
