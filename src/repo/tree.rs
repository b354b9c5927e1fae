//! A snapshot's tree: the list of entries (path, type, metadata, chunk ids) as newline-delimited
//! JSON, itself stored as content-defined chunks. Streaming it in both directions keeps memory
//! bounded whatever the number of files, and unchanged stretches of the tree dedup across
//! snapshots like any other data.

use serde::{Deserialize, Serialize};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::Error;
use super::chunker::Chunker;
use super::crypto::Id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One tree entry. Names are stored as UTF-8 strings; a name that is not valid UTF-8 is stored
/// as hex in `path_hex` / `target_hex` instead, so every byte of every name survives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    #[serde(rename = "type")]
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time: seconds since the Unix epoch (may be negative) and nanoseconds.
    pub mtime: i64,
    #[serde(default)]
    pub mtime_nsec: u32,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_hex: Option<String>,
}

/// Splits raw name bytes into the (string, hex) pair an entry stores.
fn encode_name(bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (String::new(), Some(hex::encode(bytes))),
    }
}

fn decode_name(text: &str, hex_form: &Option<String>) -> Result<Vec<u8>, Error> {
    match hex_form {
        Some(h) => hex::decode(h).map_err(|_| Error::corrupt("tree", "a hex name is not hex")),
        None => Ok(text.as_bytes().to_vec()),
    }
}

impl Entry {
    pub fn new(kind: EntryKind, relative_path: &Path) -> Entry {
        let (path, path_hex) = encode_name(relative_path.as_os_str().as_bytes());
        Entry {
            path,
            path_hex,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            size: 0,
            chunks: Vec::new(),
            target: None,
            target_hex: None,
        }
    }

    pub fn set_target(&mut self, target: &Path) {
        let (t, h) = encode_name(target.as_os_str().as_bytes());
        self.target = Some(t);
        self.target_hex = h;
    }

    /// The entry's path, relative to the restore target; never absolute, never with `..`.
    pub fn relative_path(&self) -> Result<std::path::PathBuf, Error> {
        let bytes = decode_name(&self.path, &self.path_hex)?;
        let path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&bytes));
        let safe = !bytes.is_empty() && path.components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if !safe {
            return Err(Error::corrupt("tree", format!("entry path {:?} is not a plain relative path", path)));
        }
        Ok(path)
    }

    pub fn symlink_target(&self) -> Result<std::path::PathBuf, Error> {
        let bytes = decode_name(self.target.as_deref().unwrap_or(""), &self.target_hex)?;
        Ok(std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)))
    }
}

/// Serializes entries and cuts the text into chunks as it grows; `store_chunk` stores one chunk
/// and returns its id.
pub struct TreeWriter<F> {
    buf: Vec<u8>,
    chunker: Chunker,
    flush_at: usize,
    ids: Vec<Id>,
    store_chunk: F,
}

impl<F: FnMut(Vec<u8>) -> Result<Id, Error>> TreeWriter<F> {
    pub fn new(chunker: Chunker, max_chunk: usize, store_chunk: F) -> Self {
        TreeWriter { buf: Vec::new(), chunker, flush_at: 2 * max_chunk, ids: Vec::new(), store_chunk }
    }

    pub fn push(&mut self, entry: &Entry) -> Result<(), Error> {
        serde_json::to_writer(&mut self.buf, entry).expect("entries serialize");
        self.buf.push(b'\n');
        if self.buf.len() >= self.flush_at {
            self.emit(false)?;
        }
        Ok(())
    }

    /// Stores the remaining text; returns the tree's chunk ids in order.
    pub fn finish(mut self) -> Result<Vec<Id>, Error> {
        self.emit(true)?;
        Ok(self.ids)
    }

    /// Stores all complete chunks; the last cut of a partial buffer is not a real boundary (more
    /// text follows), so it stays buffered unless this is the end.
    fn emit(&mut self, all: bool) -> Result<(), Error> {
        let mut cuts = self.chunker.cut_points(&self.buf);
        if !all {
            cuts.pop();
        }
        let taken: usize = cuts.iter().sum();
        let mut rest = self.buf.split_off(taken);
        std::mem::swap(&mut rest, &mut self.buf);
        let mut start = 0;
        for len in cuts {
            let id = (self.store_chunk)(rest[start..start + len].to_vec())?;
            self.ids.push(id);
            start += len;
        }
        Ok(())
    }
}

/// Reads the entries of a tree back, loading one chunk at a time.
pub struct TreeReader<'a, F> {
    chunks: std::slice::Iter<'a, Id>,
    load_chunk: F,
    buf: Vec<u8>,
    pos: usize,
}

impl<'a, F: FnMut(Id) -> Result<Vec<u8>, Error>> TreeReader<'a, F> {
    pub fn new(tree: &'a [Id], load_chunk: F) -> Self {
        TreeReader { chunks: tree.iter(), load_chunk, buf: Vec::new(), pos: 0 }
    }
}

impl<F: FnMut(Id) -> Result<Vec<u8>, Error>> Iterator for TreeReader<'_, F> {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(nl) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let line = &self.buf[self.pos..self.pos + nl];
                self.pos += nl + 1;
                return Some(
                    serde_json::from_slice(line)
                        .map_err(|e| Error::corrupt("tree", format!("an entry does not parse: {e}"))),
                );
            }
            match self.chunks.next() {
                Some(&id) => match (self.load_chunk)(id) {
                    Ok(data) => {
                        self.buf.drain(..self.pos);
                        self.pos = 0;
                        self.buf.extend_from_slice(&data);
                    }
                    Err(e) => {
                        self.chunks = [].iter();
                        return Some(Err(e));
                    }
                },
                None if self.pos < self.buf.len() => {
                    self.pos = self.buf.len();
                    return Some(Err(Error::corrupt("tree", "the last entry is cut off")));
                }
                None => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::chunker::Chunking;
    use std::collections::HashMap;

    #[test]
    fn tree_round_trip_across_many_chunks() {
        let small = Chunking { min_size: 64, avg_size: 256, max_size: 1024 };
        let chunker = Chunker::Cdc { params: small, seed: 3 };
        let mut stored: HashMap<Id, Vec<u8>> = HashMap::new();
        let mut writer = TreeWriter::new(chunker, 1024, |data: Vec<u8>| {
            let id = Id(*blake3::hash(&data).as_bytes());
            stored.insert(id, data);
            Ok(id)
        });
        let mut entries = Vec::new();
        for i in 0..500 {
            let mut e = Entry::new(EntryKind::File, Path::new(&format!("dir/file-{i}")));
            e.size = i;
            e.chunks = vec![Id([i as u8; 32])];
            writer.push(&e).unwrap();
            entries.push(e);
        }
        let mut odd = Entry::new(EntryKind::Symlink, Path::new(std::ffi::OsStr::from_bytes(b"bad\xffname")));
        odd.set_target(Path::new("../x"));
        writer.push(&odd).unwrap();
        entries.push(odd);
        let ids = writer.finish().unwrap();
        assert!(ids.len() > 10);
        let back: Vec<Entry> = TreeReader::new(&ids, |id| Ok(stored[&id].clone())).collect::<Result<_, _>>().unwrap();
        assert_eq!(back, entries);
        assert_eq!(back.last().unwrap().relative_path().unwrap().as_os_str().as_bytes(), b"bad\xffname");
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for p in ["/etc/passwd", "../x", "a/../../x", ""] {
            let e = Entry::new(EntryKind::File, Path::new(p));
            assert!(e.relative_path().is_err(), "{p} must be refused");
        }
    }
}
