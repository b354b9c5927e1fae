//! Packs: many sealed chunks in one large object, followed by a sealed header that lists them and
//! a 4-byte trailer with the header's length. Large objects keep the object count (and S3 request
//! cost) low; per-chunk sealing keeps every chunk readable with one ranged read. A pack is named by
//! a random id chosen when it is started, so it can be streamed to the store as it fills; its
//! header binds that id.
//!
//! Chunk plaintext is a one-byte codec (0 = stored, 1 = zstd) followed by the payload; it is
//! sealed with associated data binding the chunk id, so a chunk moved to another id fails.

use super::Error;
use super::base_cache::{BaseCache, Mirror};
use super::crypto::{AuthError, Id, MasterKey};
use super::format::{self, ObjectType};
use crate::store::{ObjectWriter, Store};

const CODEC_STORED: u8 = 0;
const CODEC_ZSTD: u8 = 1;
/// zstd with another chunk's data as prefix: the payload is the base's id, then the frame.
const CODEC_DELTA: u8 = 2;
const HEADER_ENTRY_LEN: usize = 32 + 4 + 4 + 4;
const TRAILER_LEN: usize = 4;

/// Where one chunk sits inside its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEntry {
    pub id: Id,
    pub offset: u32,
    pub sealed_len: u32,
    pub raw_len: u32,
    /// The chunk whose data the payload was compressed against (a delta), which must be kept
    /// as long as this one. Recorded in index files, not in the pack header.
    pub base: Option<Id>,
}

/// One pack as written, and as an index file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackRecord {
    pub id: Id,
    pub size: u64,
    pub chunks: Vec<ChunkEntry>,
}

/// Compresses (unless it does not pay) and seals one chunk. `compressor` is per thread.
pub fn seal_chunk(key: &MasterKey, id: Id, data: &[u8], compressor: &mut zstd::bulk::Compressor) -> Vec<u8> {
    key.seal(&format::associated_data(ObjectType::Chunk, &id.0), &encode_payload(data, compressor))
}

/// Like [`seal_chunk`], but compresses `data` against `base_data` (the data of chunk `base`, an
/// earlier version of the same block) first. A small delta is kept at once; a large one only if
/// it beats compressing the data alone. Returns the sealed chunk and the base it depends on.
pub fn seal_chunk_against(
    key: &MasterKey,
    id: Id,
    data: &[u8],
    base: Id,
    base_data: &[u8],
    compressor: &mut zstd::bulk::Compressor,
) -> (Vec<u8>, Option<Id>) {
    let seal = |payload: &[u8]| key.seal(&format::associated_data(ObjectType::Chunk, &id.0), payload);
    let delta = encode_delta(data, base, base_data);
    if let Some(delta) = &delta
        && delta.len() <= data.len() / 16
    {
        return (seal(delta), Some(base));
    }
    let whole = encode_payload(data, compressor);
    match delta {
        Some(delta) if delta.len() < whole.len() => (seal(&delta), Some(base)),
        _ => (seal(&whole), None),
    }
}

/// zstd level for deltas: a delta is mostly zeros, which every level compresses alike.
const DELTA_LEVEL: i32 = 1;

thread_local! {
    /// One compressor per thread for deltas (the pipeline's own uses the backup's level).
    static DELTA_COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// A delta is the block XORed with its earlier version (same length): zero wherever the block
/// did not change, so it compresses to almost nothing at memory speed, and decoding is one
/// XOR more than a plain chunk.
fn encode_delta(data: &[u8], base: Id, base_data: &[u8]) -> Option<Vec<u8>> {
    if data.len() != base_data.len() {
        return None;
    }
    let xored: Vec<u8> = data.iter().zip(base_data).map(|(a, b)| a ^ b).collect();
    DELTA_COMPRESSOR.with_borrow_mut(|slot| {
        if slot.is_none() {
            *slot = Some(zstd::bulk::Compressor::new(DELTA_LEVEL).ok()?);
        }
        let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(xored.len()));
        slot.as_mut()?.compress_to_buffer(&xored, &mut frame).ok()?;
        let mut payload = Vec::with_capacity(33 + frame.len());
        payload.push(CODEC_DELTA);
        payload.extend_from_slice(&base.0);
        payload.extend_from_slice(&frame);
        Some(payload)
    })
}

/// The codec byte and payload: zstd when it saves more than 1/64, else the data as it is.
pub fn encode_payload(data: &[u8], compressor: &mut zstd::bulk::Compressor) -> Vec<u8> {
    // Compressed into spare capacity (never zero-filled: a WAL segment's bound is 16 MiB of
    // page faults otherwise), then the codec byte goes in front.
    let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()) + 1);
    match compressor.compress_to_buffer(data, &mut frame) {
        Ok(_) => with_codec(data, frame),
        Err(_) => stored(data),
    }
}

/// Like [`encode_payload`], cut into `parts` independent zstd frames compressed at once on as
/// many threads (concatenated frames are one valid zstd stream), for large single objects.
pub fn encode_payload_parallel(data: &[u8], level: i32, parts: usize) -> Vec<u8> {
    const MIB: usize = 1 << 20;
    let part_len = data.len().div_ceil(parts.max(1)).div_ceil(MIB).max(1) * MIB;
    let frames: Vec<Option<Vec<u8>>> = std::thread::scope(|s| {
        let workers: Vec<_> = data
            .chunks(part_len)
            .map(|part| {
                s.spawn(move || {
                    let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(part.len()));
                    let mut compressor = zstd::bulk::Compressor::new(level).ok()?;
                    compressor.compress_to_buffer(part, &mut frame).ok()?;
                    Some(frame)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("compression thread panicked")).collect()
    });
    let Some(frames) = frames.into_iter().collect::<Option<Vec<Vec<u8>>>>() else { return stored(data) };
    let mut joined = Vec::with_capacity(frames.iter().map(Vec::len).sum::<usize>() + 1);
    joined.push(CODEC_ZSTD);
    for frame in &frames {
        joined.extend_from_slice(frame);
    }
    if joined.len() - 1 < data.len() - data.len() / 64 { joined } else { stored(data) }
}

/// Incompressible data is stored as it is: zstd gives up fast on it, and storing the original
/// avoids both the frame overhead and decompression on restore.
fn with_codec(data: &[u8], mut frame: Vec<u8>) -> Vec<u8> {
    if frame.len() >= data.len() - data.len() / 64 {
        return stored(data);
    }
    frame.insert(0, CODEC_ZSTD);
    frame
}

fn stored(data: &[u8]) -> Vec<u8> {
    let mut plaintext = Vec::with_capacity(data.len() + 1);
    plaintext.push(CODEC_STORED);
    plaintext.extend_from_slice(data);
    plaintext
}

/// Largest payload decoded in one buffer from the size its zstd frame header states (a WAL
/// segment is at most 1 GiB); anything else decodes as a stream.
const MAX_STATED_SIZE: u64 = 1 << 30;

/// The total content size the frames of `frames` state; `None` if any frame does not state it.
fn stated_size(mut frames: &[u8]) -> Option<usize> {
    let mut total: u64 = 0;
    while !frames.is_empty() {
        total += zstd::zstd_safe::get_frame_content_size(frames).ok()??;
        let len = zstd::zstd_safe::find_frame_compressed_size(frames).ok()?;
        frames = frames.get(len..)?;
    }
    (total <= MAX_STATED_SIZE).then_some(total as usize)
}

/// Writes the data of a payload to `out` as it decodes, in small pieces (no buffer the size of
/// the data); returns the number of bytes written.
pub fn decode_payload_to(plaintext: &[u8], out: &mut impl std::io::Write) -> Result<u64, ChunkError> {
    let codec = |e: std::io::Error| ChunkError::Codec(e.to_string());
    match plaintext.first() {
        Some(&CODEC_STORED) => out.write_all(&plaintext[1..]).map(|()| plaintext.len() as u64 - 1).map_err(codec),
        Some(&CODEC_ZSTD) => {
            let mut counted = CountingWriter { inner: out, written: 0 };
            zstd::stream::copy_decode(&plaintext[1..], &mut counted).map_err(codec)?;
            Ok(counted.written)
        }
        other => Err(ChunkError::Codec(format!("unknown codec {other:?}"))),
    }
}

struct CountingWriter<'a, W> {
    inner: &'a mut W,
    written: u64,
}

impl<W: std::io::Write> std::io::Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reverses [`encode_payload`]. zstd decodes into one buffer of exactly the plaintext's size:
/// `raw_len` for chunks (from the index), the frame headers' content sizes for WAL files (summed
/// over their frames). Frames without a usable size decode as a stream.
pub fn decode_payload(plaintext: &[u8], raw_len: Option<usize>) -> Result<Vec<u8>, ChunkError> {
    let stated = || stated_size(plaintext.get(1..).unwrap_or_default());
    let raw_len = match (plaintext.first(), raw_len) {
        (Some(&CODEC_ZSTD), None) => stated(),
        (_, known) => known,
    };
    match (plaintext.first(), raw_len) {
        (Some(&CODEC_STORED), _) => Ok(plaintext[1..].to_vec()),
        (Some(&CODEC_ZSTD), Some(len)) => DECOMPRESSOR
            .with_borrow_mut(|d| d.decompress(&plaintext[1..], len))
            .map_err(|e| ChunkError::Codec(e.to_string())),
        (Some(&CODEC_ZSTD), None) => {
            zstd::stream::decode_all(&plaintext[1..]).map_err(|e| ChunkError::Codec(e.to_string()))
        }
        (other, _) => Err(ChunkError::Codec(format!("unknown codec {other:?}"))),
    }
}

/// Why a sealed chunk could not be turned back into its data.
#[derive(Debug)]
pub enum ChunkError {
    Auth,
    Codec(String),
    WrongId,
    /// The base of a delta could not be read.
    Base(Id, String),
}

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkError::Auth => f.write_str("it fails authentication"),
            ChunkError::Codec(e) => write!(f, "it does not decompress: {e}"),
            ChunkError::WrongId => f.write_str("its content does not hash to its id"),
            ChunkError::Base(base, e) => write!(f, "its base chunk {} is unusable: {e}", base.short()),
        }
    }
}

impl From<AuthError> for ChunkError {
    fn from(_: AuthError) -> Self {
        ChunkError::Auth
    }
}

thread_local! {
    /// One zstd context per thread: creating one per chunk costs more than decompressing a page.
    static DECOMPRESSOR: std::cell::RefCell<zstd::bulk::Decompressor<'static>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().expect("zstd context"));
}

/// Reads the data of a delta's base chunk.
pub type BaseLoader<'a> = &'a mut dyn FnMut(Id) -> Result<Vec<u8>, ChunkError>;

/// Opens, decompresses and verifies one chunk against its id and length; a delta's base is
/// read with `base`.
pub fn open_chunk(
    key: &MasterKey,
    id: Id,
    sealed: &[u8],
    raw_len: u32,
    base: BaseLoader,
) -> Result<Vec<u8>, ChunkError> {
    let plaintext = key.open(&format::associated_data(ObjectType::Chunk, &id.0), sealed)?;
    decode_chunk(key, id, &plaintext, raw_len, base)
}

/// The second half of [`open_chunk`], for a chunk already opened.
pub fn decode_chunk(
    key: &MasterKey,
    id: Id,
    plaintext: &[u8],
    raw_len: u32,
    base: BaseLoader,
) -> Result<Vec<u8>, ChunkError> {
    let data = decode_to_length(plaintext, raw_len, base)?;
    if key.chunk_id(&data) != id {
        return Err(ChunkError::WrongId);
    }
    Ok(data)
}

/// No chunk is larger: content-defined chunks end at the config's maximum, at most fastcdc's
/// 16 MiB, and relation files are cut into 128 KiB blocks. A larger length is refused before a
/// buffer of that size is allocated.
pub const MAX_CHUNK_LEN: u32 = 16 << 20;

/// A chunk's data of exactly `raw_len` bytes, not yet checked against its id.
fn decode_to_length(plaintext: &[u8], raw_len: u32, base: BaseLoader) -> Result<Vec<u8>, ChunkError> {
    if raw_len > MAX_CHUNK_LEN {
        return Err(ChunkError::Codec(format!("its stated length {raw_len} is larger than any chunk")));
    }
    let data = match delta_base(plaintext) {
        Some(base_id) => {
            let base_data = base(base_id)?;
            decode_delta(&plaintext[33..], &base_data, raw_len as usize)?
        }
        None => decode_payload(plaintext, Some(raw_len as usize))?,
    };
    if data.len() != raw_len as usize {
        return Err(ChunkError::WrongId);
    }
    Ok(data)
}

/// Opens and decompresses a delta's base without hashing it: only a delta's decoding uses it,
/// and the delta's own id check fails if the base was not what it should be. (Hashing every base
/// again cost a restore of changed relation files a tenth of its CPU.) Never use it for a base a
/// new delta is computed against: that one must be verified, or the delta would be wrong.
pub fn open_base(key: &MasterKey, id: Id, sealed: &[u8], raw_len: u32) -> Result<Vec<u8>, ChunkError> {
    let plaintext = key.open(&format::associated_data(ObjectType::Chunk, &id.0), sealed)?;
    decode_to_length(&plaintext, raw_len, &mut |_| Err(ChunkError::Codec("it is a delta itself".into())))
}

/// The base a chunk payload was compressed against, if it is a delta.
pub fn delta_base(plaintext: &[u8]) -> Option<Id> {
    match plaintext {
        [CODEC_DELTA, rest @ ..] if rest.len() >= 32 => Some(Id(rest[..32].try_into().expect("32 bytes"))),
        _ => None,
    }
}

fn decode_delta(frame: &[u8], base_data: &[u8], raw_len: usize) -> Result<Vec<u8>, ChunkError> {
    if base_data.len() != raw_len {
        return Err(ChunkError::Codec(format!("a delta of {raw_len} bytes against a base of {}", base_data.len())));
    }
    let mut data =
        DECOMPRESSOR.with_borrow_mut(|d| d.decompress(frame, raw_len)).map_err(|e| ChunkError::Codec(e.to_string()))?;
    for (byte, base) in data.iter_mut().zip(base_data) {
        *byte ^= base;
    }
    Ok(data)
}

/// Writes one pack straight to the store as chunks arrive, so no pack is held in memory.
pub struct PackWriter<'c> {
    id: Id,
    writer: Box<dyn ObjectWriter>,
    /// A copy going into the local base cache.
    mirror: Option<Mirror<'c>>,
    len: u64,
    entries: Vec<ChunkEntry>,
}

/// A pack whose bytes are all written; [`FinishedPack::commit`] makes it durable and visible.
pub struct FinishedPack<'c> {
    pub id: Id,
    pub size: u64,
    pub entries: Vec<ChunkEntry>,
    writer: Box<dyn ObjectWriter>,
    mirror: Option<Mirror<'c>>,
}

impl<'c> PackWriter<'c> {
    /// Starts a pack under a fresh random id (the id is bound into its header), copied into
    /// `cache` as it is written if one is given.
    pub fn create(store: &dyn Store, cache: Option<&'c BaseCache>) -> Result<PackWriter<'c>, Error> {
        let id = Id::random();
        let writer = store.create(&format::pack_key(id))?;
        Ok(PackWriter { id, writer, mirror: cache.and_then(BaseCache::mirror), len: 0, entries: Vec::new() })
    }

    fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        self.writer.write(data)?;
        if let Some(mirror) = &mut self.mirror {
            mirror.write(data);
        }
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn add(&mut self, id: Id, sealed: &[u8], raw_len: u32, base: Option<Id>) -> Result<(), Error> {
        let offset = u32::try_from(self.len).expect("packs stay below 4 GiB");
        let sealed_len = u32::try_from(sealed.len()).expect("chunks stay below 4 GiB");
        self.write(sealed)?;
        self.len += sealed.len() as u64;
        self.entries.push(ChunkEntry { id, offset, sealed_len, raw_len, base });
        Ok(())
    }

    /// Appends the sealed header and the trailer.
    pub fn finish(mut self, key: &MasterKey) -> Result<FinishedPack<'c>, Error> {
        let sealed_header = key.seal(&header_ad(self.id), &encode_header(&self.entries));
        self.write(&sealed_header)?;
        self.write(&(sealed_header.len() as u32).to_le_bytes())?;
        let size = self.len + sealed_header.len() as u64 + TRAILER_LEN as u64;
        let (id, entries, writer, mirror) = (self.id, self.entries, self.writer, self.mirror);
        Ok(FinishedPack { id, size, entries, writer, mirror })
    }
}

impl FinishedPack<'_> {
    pub fn commit(self) -> Result<PackRecord, Error> {
        self.writer.commit()?;
        if let Some(mirror) = self.mirror {
            mirror.keep(self.id);
        }
        Ok(PackRecord { id: self.id, size: self.size, chunks: self.entries })
    }
}

/// The header's associated data binds the pack's id: a pack's bytes under another pack's name
/// fail authentication.
fn header_ad(pack: Id) -> Vec<u8> {
    format::associated_data(ObjectType::PackHeader, &pack.0)
}

pub(crate) fn encode_header(entries: &[ChunkEntry]) -> Vec<u8> {
    let mut header = Vec::with_capacity(4 + entries.len() * HEADER_ENTRY_LEN);
    header.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        header.extend_from_slice(&e.id.0);
        header.extend_from_slice(&e.offset.to_le_bytes());
        header.extend_from_slice(&e.sealed_len.to_le_bytes());
        header.extend_from_slice(&e.raw_len.to_le_bytes());
    }
    header
}

/// Reads and authenticates the header of a stored pack of `size` bytes (two ranged reads). Also
/// checks that the chunks and the header cover the pack exactly, with no gap or overlap.
pub fn read_header(
    store: &dyn Store,
    key: &MasterKey,
    pack_id: Id,
    size: u64,
    object: &str,
) -> Result<Vec<ChunkEntry>, Error> {
    let bad = |reason: &str| Error::corrupt(object, reason);
    let pack_key = format::pack_key(pack_id);
    if size < TRAILER_LEN as u64 {
        return Err(bad("it is too short to hold a header (truncated?)"));
    }
    let body_len = size - TRAILER_LEN as u64;
    let trailer = store.get_range(&pack_key, body_len, TRAILER_LEN as u64).map_err(|e| Error::missing_or(e, object))?;
    let header_len = u32::from_le_bytes(trailer.as_slice().try_into().expect("4 bytes")) as u64;
    if header_len > body_len {
        return Err(bad("its header length points before its start (truncated?)"));
    }
    let data_len = body_len - header_len;
    let sealed = store.get_range(&pack_key, data_len, header_len).map_err(|e| Error::missing_or(e, object))?;
    let header = key.open(&header_ad(pack_id), &sealed).map_err(|_| bad("its header fails authentication"))?;
    parse_header(&header, data_len, object)
}

/// The chunk entries of an authenticated pack header, checked to cover the `data_len` bytes
/// before the header exactly, with no gap or overlap.
pub fn parse_header(header: &[u8], data_len: u64, object: &str) -> Result<Vec<ChunkEntry>, Error> {
    let bad = |reason: &str| Error::corrupt(object, reason);
    let count = header.get(..4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
    if count.map(|c| header.len() != 4 + c * HEADER_ENTRY_LEN).unwrap_or(true) {
        return Err(bad("its header has the wrong length"));
    }
    let mut entries = Vec::with_capacity(count.unwrap_or(0));
    let mut next_offset = 0u64;
    for raw in header[4..].chunks_exact(HEADER_ENTRY_LEN) {
        let num = |i: usize| u32::from_le_bytes(raw[i..i + 4].try_into().expect("4 bytes"));
        let entry = ChunkEntry {
            id: Id(raw[..32].try_into().expect("32 bytes")),
            offset: num(32),
            sealed_len: num(36),
            raw_len: num(40),
            base: None,
        };
        if entry.offset as u64 != next_offset {
            return Err(bad("its chunks do not follow each other as its header says"));
        }
        next_offset += entry.sealed_len as u64;
        entries.push(entry);
    }
    if next_offset != data_len {
        return Err(bad("its header does not account for all of its data"));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_whole_and_streamed_in_one_or_many_frames() {
        let text: Vec<u8> = (0..5_000_000u32).flat_map(|i| (i % 1000).to_le_bytes()).collect();
        let mut random = vec![0u8; 3 << 20];
        getrandom::fill(&mut random).unwrap();
        let mut compressor = zstd::bulk::Compressor::new(3).unwrap();
        for data in [&text[..], &random[..], &text[..10]] {
            let one = encode_payload(data, &mut compressor);
            let many = encode_payload_parallel(data, 1, 4);
            for payload in [&one, &many] {
                assert_eq!(decode_payload(payload, None).unwrap(), data);
                let mut streamed = Vec::new();
                assert_eq!(decode_payload_to(payload, &mut streamed).unwrap(), data.len() as u64);
                assert_eq!(streamed, data);
            }
        }
        assert_eq!(encode_payload_parallel(&random, 1, 4)[0], CODEC_STORED, "incompressible data is stored");
        assert_eq!(encode_payload_parallel(&text, 1, 4)[0], CODEC_ZSTD);
    }

    #[test]
    fn a_block_compressed_against_its_previous_version_round_trips() {
        let key = MasterKey::generate();
        let mut old = vec![0u8; 128 * 1024];
        getrandom::fill(&mut old).unwrap();
        let mut new = old.clone();
        new[5000..5040].copy_from_slice(&[9u8; 40]);
        let (old_id, new_id) = (key.chunk_id(&old), key.chunk_id(&new));
        let mut compressor = zstd::bulk::Compressor::new(3).unwrap();
        let (sealed, base) = seal_chunk_against(&key, new_id, &new, old_id, &old, &mut compressor);
        assert_eq!(base, Some(old_id), "a small change is stored as a delta");
        let whole = seal_chunk(&key, new_id, &new, &mut compressor);
        assert!(sealed.len() * 4 < whole.len(), "the delta is much smaller: {} vs {}", sealed.len(), whole.len());
        let mut served = 0;
        let mut loader = |id: Id| {
            served += 1;
            if id == old_id { Ok(old.clone()) } else { Err(ChunkError::Base(id, "unknown".into())) }
        };
        assert_eq!(open_chunk(&key, new_id, &sealed, new.len() as u32, &mut loader).unwrap(), new);
        assert_eq!(served, 1);
        // The wrong base never yields data: the result would not hash to the id.
        let mut wrong = |_| Ok(vec![0u8; 128 * 1024]);
        assert!(open_chunk(&key, new_id, &sealed, new.len() as u32, &mut wrong).is_err());
        // Unrelated data is stored whole.
        let mut other = vec![0u8; 128 * 1024];
        getrandom::fill(&mut other).unwrap();
        let (_, base) = seal_chunk_against(&key, key.chunk_id(&other), &other, old_id, &old, &mut compressor);
        assert_eq!(base, None);
    }

    #[test]
    fn pack_round_trip_and_header_checks() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::LocalStore::new(dir.path());
        let key = MasterKey::generate();
        let mut compressor = zstd::bulk::Compressor::new(3).unwrap();
        let mut writer = PackWriter::create(&store, None).unwrap();
        let texts: Vec<Vec<u8>> = vec![b"a".repeat(10_000), (0..=255u8).collect(), Vec::new()];
        for t in &texts {
            let id = key.chunk_id(t);
            writer.add(id, &seal_chunk(&key, id, t, &mut compressor), t.len() as u32, None).unwrap();
        }
        let pack = writer.finish(&key).unwrap().commit().unwrap();
        let data = store.get(&format::pack_key(pack.id)).unwrap();
        assert_eq!(data.len() as u64, pack.size);
        let entries = read_header(&store, &key, pack.id, pack.size, "pack").unwrap();
        assert_eq!(entries, pack.chunks);
        assert!(entries[0].sealed_len < 1000, "repetitive data is compressed");
        for (i, (e, t)) in entries.iter().zip(&texts).enumerate() {
            let sealed = &data[e.offset as usize..(e.offset + e.sealed_len) as usize];
            assert_eq!(&open_chunk(&key, e.id, sealed, e.raw_len, &mut |_| unreachable!()).unwrap(), t);
            let other = entries[(i + 1) % entries.len()].id;
            assert!(
                matches!(open_chunk(&key, other, sealed, e.raw_len, &mut |_| unreachable!()), Err(ChunkError::Auth)),
                "a chunk read under another id fails"
            );
        }
        assert!(read_header(&store, &MasterKey::generate(), pack.id, pack.size, "pack").is_err());
        // The same bytes under another pack's name fail: the header binds the pack id.
        let other = Id::random();
        store.put(&format::pack_key(other), &data).unwrap();
        assert!(read_header(&store, &key, other, pack.size, "pack").is_err());
        store.put(&format::pack_key(other), &data[..data.len() - 1]).unwrap();
        let truncated = read_header(&store, &key, other, pack.size - 1, "pack");
        assert!(matches!(truncated, Err(Error::Corrupt { .. })), "a truncated pack is damaged");
    }
}
