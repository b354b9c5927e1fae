//! Prune: reclaims the packs no snapshot uses, in two phases. A pack found unused is first only
//! marked (in the sealed `prune/plan` object, with the time); a later prune deletes it if it is
//! still unused and was marked at least the grace period before. A backup that, despite the
//! exclusive lock (a lock taken over as stale, a clock gone wrong), started before the mark and
//! reused a chunk of that pack has by then written its snapshot, which makes the pack used
//! again. Packs left by interrupted backups or copies (in no index) go the same way, but only
//! while every chunk the snapshots use is indexed: otherwise an index file was lost, and prune
//! refuses until `repair index` has listed those packs again. Temporary objects of killed
//! processes (local `.tmp-*` files, incomplete S3 multipart uploads) older than the grace
//! period are removed too.
//!
//! Order of a deletion, safe at every crash point: the index files listing doomed packs are
//! replaced by one listing the rest of their packs, then the old index files are deleted, then
//! the packs. A pack still under S3 Object Lock retention stays marked until a later run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::crypto::Id;
use super::format::{self, ObjectType};
use super::lock::Lock;
use super::{Error, Repository, index, snapshot};
use crate::store;

const PLAN_KEY: &str = "prune/plan";

/// Packs marked unused, and since when.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrunePlan {
    pub(crate) marked: BTreeMap<Id, DateTime<Utc>>,
}

#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    /// Packs deleted now (marked by an earlier run, still unused, grace period over).
    pub packs_deleted: usize,
    pub bytes_deleted: u64,
    /// Packs unused now and marked; deleted by a run after the grace period.
    pub packs_marked: usize,
    pub bytes_marked: u64,
    /// Packs due for deletion that S3 Object Lock still retains.
    pub packs_retained: usize,
    /// Packs partly used: kept whole; their unused bytes are reported, not reclaimed.
    pub packs_partly_used: usize,
    pub bytes_unused_in_partly_used: u64,
    pub index_files_rewritten: usize,
    /// Leftovers of writes that never finished (temporary files, incomplete uploads) removed.
    pub leftovers_removed: usize,
}

/// Whether an earlier prune marked packs that a later one must judge again.
pub fn plan_pending(repo: &Repository) -> Result<bool, Error> {
    Ok(!load_plan(repo)?.marked.is_empty())
}

/// The packs an earlier prune marked for deletion: a backup must not deduplicate against them.
pub fn marked_packs(repo: &Repository) -> Result<BTreeSet<Id>, Error> {
    Ok(load_plan(repo)?.marked.into_keys().collect())
}

fn load_plan(repo: &Repository) -> Result<PrunePlan, Error> {
    match repo.store().get(PLAN_KEY) {
        Ok(bytes) => {
            let json = format::open_file(repo.key(), ObjectType::PrunePlan, PLAN_KEY.as_bytes(), &bytes, PLAN_KEY)?;
            decode_plan(&json)
        }
        Err(store::Error::NotFound { .. }) => Ok(PrunePlan::default()),
        Err(e) => Err(e.into()),
    }
}

/// The plan in the authenticated JSON `json`.
pub(crate) fn decode_plan(json: &[u8]) -> Result<PrunePlan, Error> {
    serde_json::from_slice(json).map_err(|e| Error::corrupt(PLAN_KEY, format!("it does not parse: {e}")))
}

fn save_plan(repo: &Repository, plan: &PrunePlan) -> Result<(), Error> {
    let json = serde_json::to_vec(plan).expect("plans serialize");
    let sealed = format::seal_file(repo.key(), ObjectType::PrunePlan, PLAN_KEY.as_bytes(), &json);
    Ok(repo.store().put(PLAN_KEY, &sealed)?)
}

/// Runs one prune pass under the exclusive `lock`. With `dry_run`, only reports.
pub fn prune(
    repo: &Repository,
    lock: &Lock,
    grace: chrono::Duration,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<PruneReport, Error> {
    let index = repo.load_index()?;
    // A used chunk in no index lies in a pack this pass would take for unused (an index file
    // was lost): refuse until `repair index` lists that pack again.
    let used = match repo.chunks_used_by(&index, &snapshot::list(repo.store())?) {
        Err(Error::Missing { object }) if object.starts_with("chunk ") => return Err(Error::Unindexed { count: 1 }),
        other => other?,
    };
    let unindexed = used.iter().filter(|id| !index.contains(id)).count();
    if unindexed > 0 {
        return Err(Error::Unindexed { count: unindexed });
    }
    let mut report = PruneReport::default();

    // Usage per pack id (a pack listed by two index files is one pack; chunks point at one of
    // its listings); unindexed packs are left by interrupted backups.
    let mut used_bytes: HashMap<Id, u64> = HashMap::new();
    for (id, loc) in &index.chunks {
        if used.contains(id) {
            *used_bytes.entry(index.packs[loc.pack as usize].id).or_default() += loc.sealed_len as u64;
        }
    }
    let mut unused: BTreeMap<Id, u64> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for pack in index.packs.iter().filter(|p| seen.insert(p.id)) {
        match used_bytes.get(&pack.id) {
            None => {
                unused.insert(pack.id, pack.size);
            }
            Some(&bytes) if bytes < pack.size => {
                report.packs_partly_used += 1;
                report.bytes_unused_in_partly_used += pack.size - bytes;
            }
            Some(_) => {}
        }
    }
    let indexed: BTreeSet<Id> = index.packs.iter().map(|p| p.id).collect();
    for object in repo.store().list(format::PACKS_DIR)? {
        if let Some(id) = format::id_of_key(&object.key).filter(|id| !indexed.contains(id)) {
            unused.insert(id, object.size);
        }
    }

    let mut plan = load_plan(repo)?;
    let due: BTreeSet<Id> = plan
        .marked
        .iter()
        .filter(|(id, marked)| unused.contains_key(id) && now - **marked >= grace)
        .map(|(id, _)| *id)
        .collect();
    // What is unused now stays (or becomes) marked; what is used again is unmarked.
    plan.marked.retain(|id, _| unused.contains_key(id));
    for id in unused.keys() {
        plan.marked.entry(*id).or_insert(now);
    }
    // Belt and braces: no chunk a snapshot uses may resolve into a pack about to go.
    if let Some(id) = used.iter().find(|id| index.get(id).is_some_and(|(pack, _)| due.contains(&pack.id))) {
        return Err(Error::InvalidRequest(format!(
            "prune stopped: chunk {id} is used but its pack was due for deletion"
        )));
    }
    if dry_run {
        report.packs_deleted = due.len();
        report.bytes_deleted = due.iter().map(|id| unused[id]).sum();
    } else {
        lock.verify("deleting anything")?;
        report.index_files_rewritten = drop_from_index(repo, &index, &due)?;
        for id in &due {
            match repo.store().delete(&format::pack_key(*id)) {
                Ok(()) | Err(store::Error::NotFound { .. }) => {
                    plan.marked.remove(id);
                    report.packs_deleted += 1;
                    report.bytes_deleted += unused[id];
                }
                Err(store::Error::Retained { .. }) => report.packs_retained += 1,
                Err(e) => return Err(e.into()),
            }
        }
        save_plan(repo, &plan)?;
        // Writes still running are younger than the grace period: the lock keeps backups and
        // copies out, and a WAL upload takes seconds.
        report.leftovers_removed = repo.store().remove_abandoned((now - grace).into())?;
    }
    for id in plan.marked.keys().filter(|id| !due.contains(id)) {
        report.packs_marked += 1;
        report.bytes_marked += unused[id];
    }
    Ok(report)
}

/// Replaces the index files that list any of `doomed` by one listing the rest of their packs,
/// then deletes them; returns how many were replaced.
fn drop_from_index(repo: &Repository, index: &index::Index, doomed: &BTreeSet<Id>) -> Result<usize, Error> {
    let mut files: HashMap<Id, bool> = HashMap::new();
    for pack in &index.packs {
        *files.entry(pack.index_file).or_default() |= doomed.contains(&pack.id);
    }
    let affected: Vec<Id> = files.into_iter().filter(|(_, hit)| *hit).map(|(file, _)| file).collect();
    if affected.is_empty() {
        return Ok(0);
    }
    let mut rest = Vec::new();
    for file in &affected {
        let records = index::load_file(repo.store(), repo.key(), *file)?;
        rest.extend(records.into_iter().filter(|r| !doomed.contains(&r.id)));
    }
    if !rest.is_empty() {
        index::save(repo.store(), repo.key(), &rest)?;
    }
    // A file S3 Object Lock still retains fails here, before any pack is deleted: it would go on
    // listing them, and reading it would then report them missing.
    for file in &affected {
        repo.store().delete(&format!("{}{file}", format::INDEX_DIR))?;
    }
    Ok(affected.len())
}
