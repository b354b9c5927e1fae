//! Repairing a damaged repository from what it can still prove: the index again from the packs'
//! own headers, and snapshots without what is lost.

use super::Result;
use super::backup::{Rewrite, rewrite_damaged};
use crate::progress::Progress;
use crate::repo::repair_index::{self, RepairReport};
use crate::repo::repair_snapshots::{self, Repaired};
use crate::repo::{Id, Repository, snapshot};

/// Lists again the packs no readable index file lists, and removes damaged index files.
pub fn index(repo: &Repository) -> Result<RepairReport> {
    let lock = repo.lock_exclusive("repair index")?;
    Ok(repair_index::repair_index(repo, &lock)?)
}

/// What `snapshots` did (or, on a dry run, would do).
pub struct SnapshotsRepaired {
    /// Manifests that cannot be read, and which were removed.
    pub unreadable: Repaired,
    /// Snapshots of files whose data is damaged, and their rewrites without it.
    pub rewrites: Vec<Rewrite>,
    /// Originals removed once rewritten.
    pub forgotten: usize,
}

/// Removes unreadable snapshot manifests, rewrites each snapshot of files whose data is
/// damaged without the damaged files, and with `forget` removes the originals rewritten.
pub fn snapshots(repo: &Repository, forget: bool, dry_run: bool, progress: &dyn Progress) -> Result<SnapshotsRepaired> {
    let unreadable = {
        let _lock = repo.lock_exclusive("repair snapshots")?;
        repair_snapshots::remove_unreadable(repo, dry_run)?
    };
    let rewrites = rewrite_damaged(repo, dry_run, progress)?;
    let mut forgotten = 0;
    if forget && !dry_run {
        let _lock = repo.lock_exclusive("repair snapshots")?;
        for r in rewrites.iter().filter(|r| r.new.is_some()) {
            let id = Id::from_hex(&r.original).expect("ids listed by the repair are hex");
            repo.store().delete(&snapshot::key_of(id))?;
            forgotten += 1;
        }
    }
    Ok(SnapshotsRepaired { unreadable, rewrites, forgotten })
}
