//! Rewriting snapshots whose data is damaged (`repair snapshots`, as restic's): a new snapshot
//! of the same source without the files whose data cannot be read or authenticated, tagged
//! `repaired`, so what is intact stays restorable as `latest` and under retention. The
//! original stays unless the caller removes it: a copy of the repository may restore it whole.

use crate::ops::Error;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::snapshot::{self, SnapshotKind};
use crate::repo::tree::{EntryKind, TreeReader, TreeWriter};

/// The tag a rewritten snapshot carries.
pub const REPAIRED_TAG: &str = "repaired";

/// A rewritten snapshot's time: just after the original's, so `latest` prefers it while both
/// exist, and a second repair knows it is done.
fn repaired_time(original: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    original + chrono::Duration::microseconds(1)
}

/// One snapshot found with damaged data.
#[derive(Debug, serde::Serialize)]
pub struct Rewrite {
    pub original: String,
    /// The snapshot written without the damaged files (none in a dry run or when not rewritten).
    pub new: Option<String>,
    /// What was left out: "path: reason".
    pub dropped: Vec<String>,
    /// Why it was not rewritten.
    pub not_rewritten: Option<String>,
}

/// Reads and authenticates every chunk of every snapshot, and rewrites each snapshot of files
/// and directories that has damaged data (unless `dry_run`). A base backup, dump or stream
/// missing data is reported, not rewritten: part of it restores nothing usable.
pub fn rewrite_damaged(repo: &Repository, dry_run: bool, progress: &dyn Progress) -> Result<Vec<Rewrite>, Error> {
    let _lock = repo.lock_shared("repair snapshots")?;
    let index = repo.load_index()?;
    let mut found = Vec::new();
    let all = repo.snapshots()?;
    let repaired_at = |t| all.iter().any(|(_, s)| s.time == t && s.tags.iter().any(|t| t == REPAIRED_TAG));
    for (id, snap) in &all {
        let (id, snap) = (*id, snap);
        if repaired_at(repaired_time(snap.time)) {
            continue;
        }
        let (mut kept, mut dropped) = (Vec::new(), Vec::new());
        let mut last = String::from("the first entry");
        for entry in TreeReader::new(&snap.tree, |c| repo.read_chunk(&index, c)) {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) if e.is_damage() => {
                    dropped.push(format!("every entry after {last}: {e}"));
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            last = entry.relative_path()?.display().to_string();
            match entry.chunks.iter().find_map(|c| repo.read_chunk(&index, *c).err()) {
                None => kept.push(entry),
                Some(e) if e.is_damage() => dropped.push(format!("{last}: {e}")),
                Some(e) => return Err(e.into()),
            }
        }
        if dropped.is_empty() {
            continue;
        }
        let mut rewrite = Rewrite { original: id.to_hex(), new: None, dropped, not_rewritten: None };
        if snap.kind != SnapshotKind::Paths {
            rewrite.not_rewritten = Some(format!(
                "a {:?} snapshot without part of its data restores nothing usable; restore it from a copy of the \
                 repository, and take a new backup",
                snap.kind
            ));
        } else if !dry_run {
            let mut new = snap.clone();
            new.time = repaired_time(snap.time);
            if !new.tags.iter().any(|t| t == REPAIRED_TAG) {
                new.tags.push(REPAIRED_TAG.to_string());
            }
            new.summary = snapshot::Summary {
                files: kept.iter().filter(|e| e.kind == EntryKind::File).count() as u64,
                dirs: kept.iter().filter(|e| e.kind == EntryKind::Dir).count() as u64,
                symlinks: kept.iter().filter(|e| e.kind == EntryKind::Symlink).count() as u64,
                logical_bytes: kept.iter().map(|e| e.size).sum(),
                ..Default::default()
            };
            let options = super::BackupOptions::default();
            let (new_id, _) = super::run(repo, new, &options, progress, |sink, _| {
                let max = repo.config().chunking.max_size as usize;
                let mut tree = TreeWriter::new(repo.cdc(), max, |c| sink.add(c));
                kept.iter().try_for_each(|e| tree.push(e))?;
                Ok(tree.finish()?)
            })?;
            rewrite.new = Some(new_id.to_hex());
        }
        found.push(rewrite);
    }
    Ok(found)
}
