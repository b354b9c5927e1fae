//! `repair index`: lists again the packs no readable index file lists (an index file lost or
//! damaged), from each pack's own header, as restic's `repair index` does. The header
//! authenticates under the pack's id and every chunk under its own, so nothing unproven enters
//! the index. Delta bases are not in the header: they are read from the chunks themselves.
//!
//! Order, safe at every crash point: the new index file is written first, then the damaged ones
//! are deleted; a crash in between leaves packs listed twice, which the index tolerates.

use std::collections::BTreeSet;

use super::crypto::Id;
use super::format::{self, ObjectType};
use super::lock::Lock;
use super::pack::PackRecord;
use super::{Error, Repository, index, pack};

#[derive(Debug, Default, serde::Serialize)]
pub struct RepairReport {
    /// Packs in no readable index file, now listed again.
    pub packs_indexed: usize,
    pub chunks_indexed: usize,
    /// Damaged index files removed (their packs are listed again if they could be read).
    pub index_files_removed: Vec<Id>,
    /// Packs in no index that could not be read, with the reason; left for `check` and prune.
    pub unreadable_packs: Vec<(Id, String)>,
}

/// Rebuilds the index under the exclusive `lock`.
pub fn repair_index(repo: &Repository, lock: &Lock) -> Result<RepairReport, Error> {
    let (index, damaged) = index::load_tolerant(repo.store(), repo.key())?;
    let indexed: BTreeSet<Id> = index.packs.iter().map(|p| p.id).collect();
    let mut report = RepairReport::default();
    let mut records = Vec::new();
    for object in repo.store().list(format::PACKS_DIR)? {
        let Some(id) = format::id_of_key(&object.key).filter(|id| !indexed.contains(id)) else { continue };
        match read_pack(repo, id, object.size) {
            Ok(record) => records.push(record),
            Err(Error::Store(e)) => return Err(Error::Store(e)),
            Err(e) => report.unreadable_packs.push((id, e.to_string())),
        }
    }
    lock.verify("writing the new index")?;
    if !records.is_empty() {
        index::save(repo.store(), repo.key(), &records)?;
    }
    report.packs_indexed = records.len();
    report.chunks_indexed = records.iter().map(|r| r.chunks.len()).sum();
    for (file, _) in damaged {
        match repo.store().delete(&format!("{}{file}", format::INDEX_DIR)) {
            Ok(()) | Err(crate::store::Error::NotFound { .. }) => report.index_files_removed.push(file),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}

/// One pack as an index file would record it, proven by its header and chunks.
fn read_pack(repo: &Repository, id: Id, size: u64) -> Result<PackRecord, Error> {
    let object = format!("pack {id}");
    let mut chunks = pack::read_header(repo.store(), repo.key(), id, size, &object)?;
    let data = repo.store().get(&format::pack_key(id)).map_err(|e| Error::missing_or(e, &object))?;
    for chunk in &mut chunks {
        let fails = || Error::corrupt(&object, format!("chunk {} fails authentication", chunk.id.short()));
        let (start, end) = (chunk.offset as usize, chunk.offset as usize + chunk.sealed_len as usize);
        let sealed = data.get(start..end).ok_or_else(fails)?;
        let plaintext =
            repo.key().open(&format::associated_data(ObjectType::Chunk, &chunk.id.0), sealed).map_err(|_| fails())?;
        chunk.base = pack::delta_base(&plaintext);
    }
    Ok(PackRecord { id, size, chunks })
}
