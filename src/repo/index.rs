//! The index: which pack holds each chunk. Every backup writes one index file listing the packs it
//! wrote (after the packs, before its snapshot); opening the repository merges all index files.
//!
//! Index file plaintext (little endian): u32 pack count, then per pack: id (32 bytes), u64 pack
//! size, u32 chunk count, then per chunk: id (32), u32 offset, u32 sealed length, u32 raw length.

use std::collections::HashMap;

use super::Error;
use super::crypto::{Id, MasterKey};
use super::format::{self, ObjectType};
use super::pack::{ChunkEntry, PackRecord};
use crate::store::Store;

pub fn encode(packs: &[PackRecord]) -> Vec<u8> {
    let chunks: usize = packs.iter().map(|p| p.chunks.len()).sum();
    let mut out = Vec::with_capacity(4 + packs.len() * 44 + chunks * 44);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        out.extend_from_slice(&p.id.0);
        out.extend_from_slice(&p.size.to_le_bytes());
        out.extend_from_slice(&(p.chunks.len() as u32).to_le_bytes());
        for c in &p.chunks {
            out.extend_from_slice(&c.id.0);
            out.extend_from_slice(&c.offset.to_le_bytes());
            out.extend_from_slice(&c.sealed_len.to_le_bytes());
            out.extend_from_slice(&c.raw_len.to_le_bytes());
        }
    }
    // Deltas and their bases, so prune keeps a base while a delta needs it. Absent when there
    // are none (index files from before deltas end here).
    let deltas: Vec<(Id, Id)> = packs.iter().flat_map(|p| &p.chunks).filter_map(|c| Some((c.id, c.base?))).collect();
    if !deltas.is_empty() {
        out.extend_from_slice(&(deltas.len() as u32).to_le_bytes());
        for (chunk, base) in deltas {
            out.extend_from_slice(&chunk.0);
            out.extend_from_slice(&base.0);
        }
    }
    out
}

pub fn decode(bytes: &[u8], object: &str) -> Result<Vec<PackRecord>, Error> {
    let mut r = Reader { bytes, pos: 0, object };
    let pack_count = r.u32()?;
    let mut packs = Vec::with_capacity(r.at_most(pack_count, PACK_RECORD_LEN));
    for _ in 0..pack_count {
        let id = r.id()?;
        let size = r.u64()?;
        let count = r.u32()?;
        let mut chunks = Vec::with_capacity(r.at_most(count, CHUNK_RECORD_LEN));
        for _ in 0..count {
            chunks.push(ChunkEntry {
                id: r.id()?,
                offset: r.u32()?,
                sealed_len: r.u32()?,
                raw_len: r.u32()?,
                base: None,
            });
        }
        packs.push(PackRecord { id, size, chunks });
    }
    if r.pos < bytes.len() {
        let mut bases = HashMap::new();
        for _ in 0..r.u32()? {
            bases.insert(r.id()?, r.id()?);
        }
        for chunk in packs.iter_mut().flat_map(|p| &mut p.chunks) {
            chunk.base = bases.remove(&chunk.id);
        }
        if !bases.is_empty() {
            return Err(Error::corrupt(object, "it names a delta it does not hold"));
        }
    }
    if r.pos != bytes.len() {
        return Err(Error::corrupt(object, "it has trailing bytes"));
    }
    Ok(packs)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    object: &'a str,
}

/// Encoded sizes of a pack record (id, size, chunk count) and a chunk record (id, offset,
/// sealed and raw length).
const PACK_RECORD_LEN: usize = 32 + 8 + 4;
const CHUNK_RECORD_LEN: usize = 32 + 4 + 4 + 4;

impl Reader<'_> {
    /// `count` records of `len` bytes each, or as many as the bytes left can hold if fewer: a
    /// capacity to reserve that a count read from the input cannot inflate.
    fn at_most(&self, count: u32, len: usize) -> usize {
        (count as usize).min((self.bytes.len() - self.pos) / len)
    }
    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| Error::corrupt(self.object, "it ends early"))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }
    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn id(&mut self) -> Result<Id, Error> {
        Ok(Id(self.take(32)?.try_into().expect("32 bytes")))
    }
}

/// Where to read one chunk from.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLocation {
    /// Position in [`Index::packs`].
    pub pack: u32,
    pub offset: u32,
    pub sealed_len: u32,
    pub raw_len: u32,
}

/// A known pack: its id, its size, and which index file listed it.
#[derive(Debug, Clone)]
pub struct PackInfo {
    pub id: Id,
    pub size: u64,
    pub index_file: Id,
}

/// All index files merged in memory: about 60 bytes per chunk.
#[derive(Default)]
pub struct Index {
    pub packs: Vec<PackInfo>,
    pub chunks: HashMap<Id, ChunkLocation>,
    /// The chunks read from a delta copy, and their bases.
    pub deltas: HashMap<Id, Id>,
    pub files: Vec<Id>,
}

impl Index {
    pub fn get(&self, id: &Id) -> Option<(&PackInfo, ChunkLocation)> {
        self.chunks.get(id).map(|loc| (&self.packs[loc.pack as usize], *loc))
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.chunks.contains_key(id)
    }

    fn add_file(&mut self, file: Id, packs: Vec<PackRecord>) {
        self.files.push(file);
        for p in packs {
            let pack = self.packs.len() as u32;
            self.packs.push(PackInfo { id: p.id, size: p.size, index_file: file });
            for c in p.chunks {
                let location = ChunkLocation { pack, offset: c.offset, sealed_len: c.sealed_len, raw_len: c.raw_len };
                // A chunk stored twice (two backups racing) is read from the first pack listed,
                // unless that copy is a delta and this one is not: bases must never be deltas,
                // whatever order the store lists index files in.
                match self.chunks.entry(c.id) {
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(location);
                        if let Some(base) = c.base {
                            self.deltas.insert(c.id, base);
                        }
                    }
                    std::collections::hash_map::Entry::Occupied(mut slot) => {
                        if c.base.is_none() && self.deltas.remove(&c.id).is_some() {
                            slot.insert(location);
                        }
                    }
                }
            }
        }
    }
}

/// Seals and stores one index file; returns its id and stored size.
pub fn save(store: &dyn Store, key: &MasterKey, packs: &[PackRecord]) -> Result<(Id, u64), Error> {
    let bytes = format::seal_file(key, ObjectType::Index, b"", &encode(packs));
    let id = Id::of_stored(&bytes);
    store.put(&format!("{}{id}", format::INDEX_DIR), &bytes)?;
    Ok((id, bytes.len() as u64))
}

/// Loads, verifies and decodes one index file.
pub fn load_file(store: &dyn Store, key: &MasterKey, id: Id) -> Result<Vec<PackRecord>, Error> {
    let object = format!("index {id}");
    let bytes = store.get(&format!("{}{id}", format::INDEX_DIR)).map_err(|e| Error::missing_or(e, &object))?;
    if Id::of_stored(&bytes) != id {
        return Err(Error::corrupt(&object, "its content does not match its name"));
    }
    decode(&format::open_file(key, ObjectType::Index, b"", &bytes, &object)?, &object)
}

/// The ids of all index files in the store.
pub fn list(store: &dyn Store) -> Result<Vec<Id>, Error> {
    Ok(store.list(format::INDEX_DIR)?.iter().filter_map(|o| format::id_of_key(&o.key)).collect())
}

/// Loads every index file. Any damaged index file is an error here; `check` reports them all.
pub fn load(store: &dyn Store, key: &MasterKey) -> Result<Index, Error> {
    let mut index = Index::default();
    for id in list(store)? {
        let packs = load_file(store, key, id)?;
        index.add_file(id, packs);
    }
    Ok(index)
}

/// Like [`load`], but skips damaged files and returns them with their errors.
pub fn load_tolerant(store: &dyn Store, key: &MasterKey) -> Result<(Index, Vec<(Id, Error)>), Error> {
    let mut index = Index::default();
    let mut damaged = Vec::new();
    for id in list(store)? {
        match load_file(store, key, id) {
            Ok(packs) => index.add_file(id, packs),
            Err(e @ Error::Store(_)) => return Err(e),
            Err(e) => damaged.push((id, e)),
        }
    }
    Ok((index, damaged))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let packs = vec![PackRecord {
            id: Id([1; 32]),
            size: 1234,
            chunks: vec![
                ChunkEntry { id: Id([2; 32]), offset: 0, sealed_len: 50, raw_len: 10, base: None },
                ChunkEntry { id: Id([4; 32]), offset: 50, sealed_len: 20, raw_len: 10, base: Some(Id([2; 32])) },
            ],
        }];
        let bytes = encode(&packs);
        assert_eq!(decode(&bytes, "i").unwrap(), packs);
        assert!(decode(&bytes[..bytes.len() - 1], "i").is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, "i").is_err());
    }
}
