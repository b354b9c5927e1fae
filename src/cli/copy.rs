use clap::Args;
use std::path::PathBuf;

use super::{AccessArgs, GlobalArgs, human_bytes};
use crate::ops;
use crate::repo::key::{self, Secret, SlotKind};
use crate::repo::{self, Repository};

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
    let new_secret = || {
        let secret = match target_secret(&args)? {
            Some(secret) => secret,
            None => same_secret_as(&args.access, &source)?,
        };
        if matches!(secret, Secret::Kms(..)) && args.to_kms_key_id.is_none() {
            tracing::warn!(
                "the copy's only key slot uses the source's KMS key: if that key's region is down, the copy cannot \
                 be opened; give --to-kms-key-id with a key in the copy's region (or add one with `drctl key add`)"
            );
        }
        Ok(secret)
    };
    let target = ops::copy::Target {
        store: args.access.store(&args.to)?,
        open: &|store| open_target(&args, store),
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
             already there): {} objects, {}, each read back and verified",
            report.snapshots_copied,
            report.snapshots_present,
            report.packs_copied,
            report.packs_present,
            report.index_files_copied,
            report.wal_copied,
            report.wal_present,
            report.objects_copied,
            human_bytes(report.bytes_copied)
        );
    }
    Ok(())
}

/// An existing target: with the --to-* secret if given; else with the secret given for the
/// source, falling back to the target's KMS slot when that does not open it (a copy in another
/// region usually has one of its own); else with its KMS slot.
fn open_target(args: &CopyArgs, store: std::sync::Arc<dyn crate::store::Store>) -> anyhow::Result<Repository> {
    if let Some(secret) = target_secret(args)? {
        return Ok(Repository::open(store, &secret)?);
    }
    let has_kms = key::has_kms_slot(store.as_ref())?;
    if args.access.secret_given() {
        match Repository::open(store.clone(), &args.access.secret(false)?) {
            Err(repo::Error::WrongPassword { .. }) if has_kms => {}
            other => return Ok(other?),
        }
    }
    Ok(Repository::open(store, &crate::ops::unlock::kms_secret(None))?)
}

/// The target's secret from the --to-* options, if any.
fn target_secret(args: &CopyArgs) -> anyhow::Result<Option<Secret>> {
    if let Some(key) = &args.to_kms_key_id {
        return Ok(Some(crate::ops::unlock::kms_secret(Some(key.clone()))));
    }
    if let Some(path) = &args.to_key_file {
        let secret = Secret::read_key_file(path)
            .map_err(|e| repo::Error::InvalidRequest(format!("cannot read the key file {}: {e}", path.display())))?;
        return Ok(Some(secret));
    }
    if let Some(path) = &args.to_password_file {
        let passphrase = super::read_password_file(path).map_err(|e| {
            repo::Error::InvalidRequest(format!("cannot read the password file {}: {e}", path.display()))
        })?;
        return Ok(Some(Secret::Passphrase(passphrase.into_bytes())));
    }
    Ok(None)
}

/// For a new target without --to-* options: a slot like the one that opened the source (the
/// same passphrase, key file or KMS key).
fn same_secret_as(access: &AccessArgs, source: &Repository) -> anyhow::Result<Secret> {
    let slots = key::list(source.store())?;
    match slots.iter().find(|(id, _)| *id == source.slot()) {
        Some((_, slot)) if slot.kind == SlotKind::Kms => Ok(crate::ops::unlock::kms_secret(slot.kms_key_id.clone())),
        _ => access.secret(false),
    }
}
