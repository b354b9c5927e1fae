//! Copy as one operation: open the target, or initialise an empty location as a copy of the
//! source (same master key, its own key slot), select, copy under both locks, report. `drctl
//! copy` and a policy job run it; each decides which secrets open the target.

use std::sync::Arc;

use crate::progress::Progress;
use crate::repo::copy::{self, CopyOptions, CopyReport, Selection};
use crate::repo::key::Secret;
use crate::repo::{Repository, format, snapshot};
use crate::store::Store;

/// Where to copy to, and how to open it.
pub struct Target<'a> {
    pub store: Arc<dyn Store>,
    /// Opens the target when it is a repository already.
    pub open: &'a dyn Fn(Arc<dyn Store>) -> anyhow::Result<Repository>,
    /// The key slot of a new copy; asked for only when the location is empty (it may prompt).
    pub new_secret: &'a dyn Fn() -> anyhow::Result<Secret>,
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

pub fn copy(source: &Repository, target: Target, options: &Options, progress: &dyn Progress) -> anyhow::Result<Copied> {
    let _source_lock = source.lock_for_reading("copy")?;
    let mut repo = if target.store.exists(format::CONFIG_KEY)? {
        (target.open)(target.store)?
    } else {
        Repository::init_copy_of(source, target.store, &(target.new_secret)()?)?
    };
    repo.set_lock_wait(target.lock_wait);
    let _target_lock = repo.lock_shared("copy")?;
    let selection = match &options.snapshots {
        None => Selection::All,
        Some(queries) => Selection::Snapshots(
            queries
                .iter()
                .map(|q| snapshot::find(source.store(), source.key(), q).map(|(id, _)| id))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let copy_options = CopyOptions { selection, wal: options.wal, jobs: options.jobs };
    let report = copy::copy(source, &repo, &copy_options, progress)?;
    let held = snapshot::list(repo.store())?;
    let missing_snapshots = snapshot::list(source.store())?.iter().filter(|id| !held.contains(id)).count();
    Ok(Copied { report, missing_snapshots })
}
