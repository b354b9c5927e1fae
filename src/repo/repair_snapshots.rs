//! Repairing snapshots: removes the manifests that cannot be read. Such a manifest blocks
//! nothing (listing and retention skip it with a warning), but it can never be restored, and
//! until it goes every command warns about it and `check` fails on it. A manifest that
//! authenticates but does not parse is kept: a newer drctl may have written it.

use super::snapshot;
use super::{Error, Repository};
use crate::store;

/// One manifest that cannot be read, and why.
#[derive(Debug, serde::Serialize)]
pub struct Unreadable {
    pub id: String,
    pub reason: String,
    /// It authenticates under the repository's key (so it is not damage) and is left alone.
    pub kept: bool,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Repaired {
    pub unreadable: Vec<Unreadable>,
    /// How many of them were removed (none in a dry run).
    pub removed: usize,
    /// Manifests S3 Object Lock still retains: listed and left.
    pub retained: Vec<String>,
}

/// Removes every snapshot manifest that cannot be read and does not authenticate (unless
/// `dry_run`). The caller holds the
/// exclusive lock, as for `forget`. A store outage fails the whole repair: it proves nothing
/// about the manifests, so none is removed for it.
pub fn remove_unreadable(repo: &Repository, dry_run: bool) -> Result<Repaired, Error> {
    let mut repaired = Repaired::default();
    for (id, err) in snapshot::load_tolerant(repo.store(), repo.key())?.unreadable {
        let kept = snapshot::is_authentic(repo.store(), repo.key(), id)?;
        repaired.unreadable.push(Unreadable { id: id.to_hex(), reason: err.to_string(), kept });
        if dry_run || kept {
            continue;
        }
        match repo.store().delete(&snapshot::key_of(id)) {
            Ok(()) => repaired.removed += 1,
            Err(store::Error::Retained { key, until, .. }) => repaired.retained.push(format!("{key} (until {until})")),
            Err(e) => return Err(Error::Store(e)),
        }
    }
    Ok(repaired)
}
