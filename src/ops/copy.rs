//! Copy as one operation: open the target, or initialise an empty location as a copy of the
//! source (same master key, its own key slot), select, copy under both locks, report. `drctl
//! copy` and a policy job run it; each decides which secrets open the target.

use std::sync::Arc;

use super::Error;
use super::unlock::{SecretSource, kms_secret};
use crate::progress::Progress;
use crate::repo::copy::{self, CopyOptions, CopyReport, Selection};
use crate::repo::key::{self, Secret, SlotKind};
use crate::repo::{self, Repository, snapshot};
use crate::store::Store;

/// Where to copy to, and how to open it (with the caller's own error type `E`: how it finds a
/// secret is the caller's business).
pub struct Target<'a, E> {
    pub store: Arc<dyn Store>,
    /// Opens the target when it is a repository already.
    pub open: &'a dyn Fn(Arc<dyn Store>) -> Result<Repository, E>,
    /// The key slot of a new copy; asked for only when the location is empty (it may prompt).
    pub new_secret: &'a dyn Fn() -> Result<Secret, E>,
    pub lock_wait: std::time::Duration,
}

/// What to copy.
pub struct Options {
    /// Snapshot ids, unique prefixes or `latest`; `None`: every snapshot.
    pub snapshots: Option<Vec<String>>,
    /// Also the WAL archive.
    pub wal: bool,
    /// Objects copied at once.
    pub jobs: usize,
}

pub struct Copied {
    pub report: CopyReport,
    /// Snapshots of the source the target does not hold afterwards.
    pub missing_snapshots: usize,
}

pub fn copy<E: From<Error>>(
    source: &Repository,
    target: Target<E>,
    options: &Options,
    progress: &dyn Progress,
) -> Result<Copied, E> {
    let _source_lock = source.lock_for_reading("copy").map_err(Error::from)?;
    let mut repo = if Repository::is_in(target.store.as_ref()).map_err(Error::from)? {
        (target.open)(target.store)?
    } else {
        let secret = (target.new_secret)()?;
        Repository::init_copy_of(source, target.store, &secret).map_err(Error::from)?
    };
    repo.set_lock_wait(target.lock_wait);
    Ok(copy_into(source, &repo, options, progress)?)
}

/// The copy proper, with the source locked for reading.
fn copy_into(
    source: &Repository,
    repo: &Repository,
    options: &Options,
    progress: &dyn Progress,
) -> Result<Copied, Error> {
    let _target_lock = repo.lock_shared("copy")?;
    let selection = match &options.snapshots {
        None => Selection::All,
        Some(queries) => Selection::Snapshots(
            queries.iter().map(|q| source.find_snapshot(q).map(|(id, _)| id)).collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let copy_options = CopyOptions { selection, wal: options.wal, jobs: options.jobs };
    let report = copy::copy(source, repo, &copy_options, progress)?;
    let held = snapshot::list(repo.store())?;
    let missing_snapshots = snapshot::list(source.store())?.iter().filter(|id| !held.contains(id)).count();
    Ok(Copied { report, missing_snapshots })
}

/// Opens an existing copy: with `to` (the target's own secret) when given; else with `from`
/// (the source's), falling back to the target's KMS slot when that does not open it (a copy in
/// another region usually has one of its own); else with its KMS slot.
pub fn open_target(
    store: Arc<dyn Store>,
    to: Option<&Secret>,
    from: Option<&SecretSource>,
) -> Result<Repository, Error> {
    if let Some(secret) = to {
        return Ok(Repository::open(store, secret)?);
    }
    let has_kms = key::has_kms_slot(store.as_ref())?;
    if let Some(from) = from {
        match Repository::open(store.clone(), &from.secret()?) {
            Err(repo::Error::WrongPassword { .. }) if has_kms => {}
            other => return Ok(other?),
        }
    }
    Ok(Repository::open(store, &kms_secret(None))?)
}

/// For a new copy: the KMS key of the slot that opened `source`, if a KMS slot did (the copy
/// gets a slot like it); else the caller gives the same passphrase or key file.
pub fn kms_slot_of(source: &Repository) -> Result<Option<Secret>, Error> {
    let slots = source.key_slots()?;
    Ok(match slots.iter().find(|(id, _)| *id == source.slot()) {
        Some((_, slot)) if slot.kind == SlotKind::Kms => Some(kms_secret(slot.kms_key_id.clone())),
        _ => None,
    })
}
