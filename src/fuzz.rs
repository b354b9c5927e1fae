//! Fuzz targets: every parser of bytes drctl did not write itself or cannot trust, each behind one
//! function that takes arbitrary bytes. `fuzz/` holds the coverage-guided harness (cargo fuzz,
//! libFuzzer) that calls them; the unit tests below replay the checked-in seeds and regressions
//! with a fixed budget of mutations, so every `cargo test` runs every target.
//!
//! A target must never panic, hang or allocate more than its bound whatever the input; where a
//! parser accepts an input, the target also checks what it made of it (a round trip, a bound).
//! Objects sealed with AES-GCM are fuzzed twice: as stored bytes (the clear envelope, lengths
//! read before authentication) and as plaintext after authentication, which a fuzzer could
//! never reach through the seal.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::ops::backup::pg as stream;
use crate::ops::catalog::Catalog;
use crate::pg::wal::{self as pgwal, WalName};
use crate::repo::chunker::{Chunker, Chunking};
use crate::repo::config::Config;
use crate::repo::crypto::{Id, MasterKey};
use crate::repo::format::{self, ObjectType};
use crate::repo::lock::LockInfo;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Entry, TreeReader};
use crate::repo::{index, key, pack, prune, snapshot};
use crate::store::{self, ObjectInfo, ObjectWriter, Store};

/// One fuzz target: its name (the cargo fuzz target and corpus folder), the function, and the
/// largest single allocation it may make.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub max_allocation: usize,
}

/// The largest allocation a parser of small objects (JSON, YAML, headers) may make.
const SMALL: usize = 64 << 20;
/// Payload decoders may allocate a WAL segment's size (at most 1 GiB) from a zstd frame header.
const PAYLOAD: usize = (1 << 30) + (1 << 20);

pub const TARGETS: &[Target] = &[
    Target { name: "pack", run: pack, max_allocation: SMALL },
    Target { name: "payload", run: payload, max_allocation: PAYLOAD },
    Target { name: "envelope", run: envelope, max_allocation: PAYLOAD },
    Target { name: "index", run: index, max_allocation: SMALL },
    Target { name: "snapshot", run: snapshot, max_allocation: SMALL },
    Target { name: "tree", run: tree, max_allocation: SMALL },
    Target { name: "key_slot", run: key_slot, max_allocation: SMALL },
    Target { name: "config", run: config, max_allocation: SMALL },
    Target { name: "lock", run: lock, max_allocation: SMALL },
    Target { name: "prune_plan", run: prune_plan, max_allocation: SMALL },
    Target { name: "policy", run: policy, max_allocation: SMALL },
    Target { name: "runbook", run: runbook, max_allocation: SMALL },
    Target { name: "basebackup_tar", run: basebackup_tar, max_allocation: SMALL },
    Target { name: "pg_files", run: pg_files, max_allocation: SMALL },
    Target { name: "wal_blocks", run: wal_blocks, max_allocation: SMALL },
];

/// Runs target `name` on `data` with its allocation bound armed; panics naming the bound when
/// an allocation went over it.
pub fn run(name: &str, data: &[u8]) {
    let target = TARGETS.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no fuzz target {name}"));
    LARGEST.set(0);
    LIMIT.set(target.max_allocation);
    (target.run)(data);
    LIMIT.set(usize::MAX);
    let largest = LARGEST.get();
    assert!(
        largest <= target.max_allocation,
        "{name}: an allocation of {largest} bytes from a {}-byte input (bound {}): bound lengths read from the \
         input before allocating",
        data.len(),
        target.max_allocation
    );
}

thread_local! {
    static LIMIT: Cell<usize> = const { Cell::new(usize::MAX) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, noting on the fuzzing thread any allocation larger than the running
/// target's bound (it still allocates: the check after the run names the input).
pub struct BoundedAlloc;

fn note(size: usize) {
    let _ = LIMIT.try_with(|limit| {
        if size > limit.get() {
            let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
        }
    });
}

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for BoundedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// The master key every seed is sealed with, so the fuzzer starts from objects that open.
pub fn key() -> MasterKey {
    MasterKey::from_bytes(&[7; MasterKey::LEN])
}

/// The key file secret of the seeds' key slot.
const KEY_FILE: [u8; 32] = [9; 32];

/// Splits an input into a selector byte and the rest (targets that reach several parsers).
fn split(data: &[u8]) -> (u8, &[u8]) {
    data.split_first().map_or((0, data), |(&first, rest)| (first, rest))
}

/// A little-endian number from the front of `data`, and the rest.
fn number(data: &[u8], bytes: usize) -> (u64, &[u8]) {
    let n = bytes.min(data.len());
    let mut buf = [0u8; 8];
    buf[..n].copy_from_slice(&data[..n]);
    (u64::from_le_bytes(buf), &data[n..])
}

/// A stored pack: its trailer and header are read and authenticated as a restore or check reads
/// them, then its chunks are opened. Also the input as an authenticated header, after an 8-byte
/// data length.
pub fn pack(data: &[u8]) {
    let store = MemoryStore::default();
    let id = Id([1; 32]);
    store.put(&format::pack_key(id), data).expect("memory");
    let key = key();
    if let Ok(entries) = pack::read_header(&store, &key, id, data.len() as u64, "pack") {
        for e in entries {
            let sealed = &data[e.offset as usize..][..e.sealed_len as usize];
            let _ = pack::open_chunk(&key, e.id, sealed, e.raw_len, &mut |_| Err(pack::ChunkError::Auth));
        }
    }
    let (data_len, header) = number(data, 8);
    if let Ok(entries) = pack::parse_header(header, data_len, "pack") {
        let covered: u64 = entries.iter().map(|e| u64::from(e.sealed_len)).sum();
        assert_eq!(covered, data_len, "accepted entries cover the data exactly");
    }
}

/// A chunk's or WAL file's authenticated payload: stored, zstd, or a delta against a base.
/// The first four bytes are the length the index states.
pub fn payload(data: &[u8]) {
    let (raw_len, plaintext) = number(data, 4);
    let key = key();
    let mut served = |_: Id| Ok(vec![0x5a; raw_len as usize]);
    if let Ok(out) = pack::decode_chunk(&key, Id([0; 32]), plaintext, raw_len as u32, &mut served) {
        assert_eq!(out.len() as u64, raw_len);
    }
    let whole = pack::decode_payload(plaintext, None);
    let mut streamed = Vec::new();
    let written = pack::decode_payload_to(plaintext, &mut streamed);
    if let (Ok(whole), Ok(written)) = (whole, written) {
        assert_eq!(whole, streamed, "whole and streamed decoding agree");
        assert_eq!(written, whole.len() as u64);
    }
}

/// A whole-file object as stored (config, index, snapshot, lock, WAL file, …): its clear header
/// for every kind, then opened as the WAL file it was sealed as, and decoded.
pub fn envelope(data: &[u8]) {
    for kind in [ObjectType::Config, ObjectType::Index, ObjectType::Snapshot, ObjectType::Lock, ObjectType::Wal] {
        let _ = format::check_header(data, kind, "object");
    }
    if let Ok(plaintext) = format::open_file(&key(), ObjectType::Wal, SEED_WAL.as_bytes(), data, "WAL file") {
        let _ = pack::decode_payload(&plaintext, None);
    }
}

/// An index file's authenticated plaintext.
pub fn index(data: &[u8]) {
    if let Ok(packs) = index::decode(data, "index") {
        assert_eq!(index::decode(&index::encode(&packs), "index").expect("re-encoded index decodes"), packs);
    }
}

/// A snapshot manifest's authenticated JSON, then what `snapshots`, restores and drills make of
/// it: the WAL its base backup needs, the archive's timelines and the point-in-time window.
pub fn snapshot(data: &[u8]) {
    let Ok(snap) = snapshot::decode(data, "snapshot") else { return };
    let _ = snap.pg.as_ref().map(|pg| pg.major());
    let wal = ["000000010000000000000001", "000000010000000000000002", "00000002.history", "000000020000000000000003"]
        .iter()
        .filter_map(|n| WalName::parse(n))
        .collect();
    let catalog = Catalog::new(vec![(Id([3; 32]), snap)], wal, vec![(2, b"1\t0/3000000\tbranch\n".to_vec())]);
    let snap = &catalog.snapshots[0].1;
    let _ = catalog.missing_wal(snap);
    if let Some(pg) = &snap.pg {
        let _ = catalog.timelines(pg.wal_segment_size);
    }
    let _ = catalog.windows();
}

/// A snapshot tree's chunks: the input cut where it holds 0xFF bytes, each entry's path and
/// link target checked as a restore checks them.
pub fn tree(data: &[u8]) {
    let pieces: Vec<&[u8]> = data.split(|&b| b == 0xFF).collect();
    let ids: Vec<Id> = (0..pieces.len()).map(|i| Id([i as u8; 32])).collect();
    let reader = TreeReader::new(&ids, |id| Ok(pieces[id.0[0] as usize].to_vec()));
    for entry in reader.take(10_000) {
        let Ok(entry): Result<Entry, _> = entry else { continue };
        if let Ok(path) = entry.relative_path() {
            assert!(path.components().all(|c| matches!(c, std::path::Component::Normal(_))));
        }
        let _ = entry.symlink_target();
    }
}

/// A key slot as stored (clear JSON), tried with the seeds' key file; a passphrase slot's KDF
/// parameters are checked against their bounds, not run.
pub fn key_slot(data: &[u8]) {
    let _ = key::try_slot(data, &key::Secret::KeyFile(KEY_FILE), "key slot");
    if let Ok(slot) = serde_json::from_slice::<key::KeySlot>(data)
        && let Some(kdf) = slot.kdf
    {
        let _ = kdf.check_bounds();
    }
}

/// A repository config's authenticated JSON, then the chunker it sets up, on a little data.
pub fn config(data: &[u8]) {
    let Ok(config) = Config::decode(data) else { return };
    let chunker = Chunker::Cdc { params: config.chunking, seed: 1 };
    let sample = vec![0xa5u8; 3 << 20];
    let cuts = chunker.cut_points(&sample);
    assert_eq!(cuts.iter().sum::<usize>(), sample.len());
    for chunk in chunker.chunks(&sample[..]) {
        assert!(chunk.expect("in memory").len() <= config.chunking.max_size as usize);
    }
}

/// A lock's authenticated JSON, then what a command that finds it asks of it.
pub fn lock(data: &[u8]) {
    if let Ok(info) = serde_json::from_slice::<LockInfo>(data) {
        let _ = info.is_stale();
        let _ = info.time.to_rfc3339();
    }
}

/// The prune plan's authenticated JSON, then the grace period's arithmetic on its times.
pub fn prune_plan(data: &[u8]) {
    if let Ok(plan) = prune::decode_plan(data) {
        for since in plan.marked.values() {
            let _ = chrono::Utc::now().signed_duration_since(since) >= chrono::TimeDelta::hours(1);
        }
    }
}

/// A policy file.
pub fn policy(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::policy::read(text);
    }
}

/// A runbook file.
pub fn runbook(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::runbook::read(text);
    }
}

/// pg_basebackup's tar stream, as a stream-mode backup reads it (chunks hashed, not stored),
/// then the backup's metadata from the files it kept. An input starting with an odd byte is
/// not the stream itself but entries to build one from (see [`tar_of`]): mutated tar headers
/// mostly fail their checksum, which would keep the fuzzer out of drctl's own handling of
/// names, kinds and contents.
pub fn basebackup_tar(data: &[u8]) {
    match data.split_first() {
        Some((first, rest)) if first % 2 == 1 => read_stream(&tar_of(rest)),
        _ => read_stream(data),
    }
}

/// A tar stream of the entries in `data`, separated by 0xFF bytes: each a kind byte, a name
/// (any bytes) up to a zero byte, then the content (for a symlink, its target). Headers are
/// written raw, so names tar::Builder would refuse (absolute, `..`) get through.
fn tar_of(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for record in data.split(|&b| b == 0xFF) {
        let Some((&kind, rest)) = record.split_first() else { continue };
        let (name, content) = rest.split_at(rest.iter().position(|&b| b == 0).unwrap_or(rest.len()));
        let content = content.get(1..).unwrap_or_default();
        let mut header = tar::Header::new_gnu();
        let kinds = [tar::EntryType::Regular, tar::EntryType::Directory, tar::EntryType::Symlink, tar::EntryType::Link];
        header.set_entry_type(kinds[kind as usize % kinds.len()]);
        let gnu = header.as_gnu_mut().expect("a GNU header");
        let n = name.len().min(gnu.name.len());
        gnu.name[..n].copy_from_slice(&name[..n]);
        header.set_mode(u32::from(kind) << 4 | 0o600);
        if matches!(header.entry_type(), tar::EntryType::Symlink | tar::EntryType::Link) {
            let link = header.as_gnu_mut().expect("a GNU header");
            let n = content.len().min(link.linkname.len());
            link.linkname[..n].copy_from_slice(&content[..n]);
            header.set_size(0);
            header.set_cksum();
            out.extend_from_slice(header.as_bytes());
        } else {
            header.set_size(content.len() as u64);
            header.set_cksum();
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(content);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn read_stream(data: &[u8]) {
    let key = key();
    let chunking = Chunking { min_size: 64, avg_size: 256, max_size: 1024 };
    let cdc = Chunker::Cdc { params: chunking, seed: 1 };
    let mut summary = Default::default();
    let mut meta = stream::Metadata::default();
    let add = |c: Vec<u8>| Ok(key.chunk_id(&c));
    let read = stream::read_tar((cdc, 1024), &add, data, &mut summary, &mut meta, &crate::progress::NoProgress);
    if read.is_ok() {
        let _ = stream::pg_metadata(&meta, 16 << 20);
    }
}

/// Files PostgreSQL writes that drctl reads: backup_label, backup_manifest, pg_control, timeline
/// history files, WAL file names and positions. The first byte picks one.
pub fn pg_files(data: &[u8]) {
    use crate::pg::basebackup;
    let (selector, rest) = split(data);
    let text = String::from_utf8_lossy(rest);
    match selector % 6 {
        0 => {
            if let Some(label) = basebackup::parse_backup_label(&text) {
                let _ = pgwal::parse_lsn(&label.start_lsn);
                let _ = WalName::parse(&label.start_wal);
            }
        }
        1 => {
            if let Some(lsn) = basebackup::manifest_stop_lsn(rest) {
                let _ = pgwal::parse_lsn(&lsn);
            }
        }
        2 => {
            let _ = basebackup::system_identifier(rest);
            let _ = crate::pg::server::control_in_production(rest);
        }
        3 => {
            if let Some((_, at)) = pgwal::fork_point(rest) {
                let _ = pgwal::format_lsn(at);
            }
        }
        4 => {
            if let Some(name) = WalName::parse(&text) {
                let _ = (name.kind(), name.timeline(), name.segment_number(256));
                assert_eq!(name.as_str(), text, "a name is taken as given");
            }
        }
        _ => {
            if let Some(lsn) = pgwal::parse_lsn(&text) {
                assert_eq!(pgwal::parse_lsn(&pgwal::format_lsn(lsn)), Some(lsn));
                assert_eq!(
                    pgwal::format_lsn(lsn).to_ascii_uppercase(),
                    pgwal::format_lsn(pgwal::parse_lsn(&text.to_ascii_uppercase()).expect("same text")),
                );
            }
        }
    }
}

/// WAL records and segments (`pg::wal_blocks`), as wal-push would read them: a record alone in
/// both image layouts, or a segment (the input, then zeros, to a power of two from 8 KiB to 1 MiB)
/// scanned and its unfinished record stitched with its own beginning.
pub fn wal_blocks(data: &[u8]) {
    use crate::pg::wal_blocks;
    let (selector, rest) = split(data);
    if selector % 2 == 0 {
        for major in [13, 15] {
            if let Ok(record) = wal_blocks::decode_record(0, rest, major) {
                assert!(record.blocks.len() <= 33, "at most 33 block ids");
            }
        }
        return;
    }
    let len = rest.len().next_power_of_two().clamp(8192, 1 << 20);
    let mut segment = rest[..rest.len().min(len)].to_vec();
    segment.resize(len, 0);
    let mut records = 0;
    let scan = wal_blocks::scan_segment(&segment, |_| records += 1);
    assert!(records > 0 || scan.blocks.is_empty(), "blocks come from decoded records only");
    if let Some(tail) = &scan.tail {
        let _ = wal_blocks::stitch(tail, scan.major, &[scan.head.as_ref()]);
    }
}

/// The WAL file name the envelope seed is sealed under.
const SEED_WAL: &str = "000000010000000000000001";

/// Inputs each target starts from: valid objects made by drctl's own writers, and the policies
/// and runbooks in the project. `DRCTL_WRITE_FUZZ_SEEDS=1 cargo test fuzz::` writes those not
/// there yet to `fuzz/seeds/`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let key = key();
    let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| out.push((target, name.to_string(), bytes));
    let mut compressor = zstd::bulk::Compressor::new(3).expect("zstd");
    let text: Vec<u8> = (0..20_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
    let old: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
    let mut new = old.clone();
    new[100..140].fill(1);

    // A pack of three chunks (stored, compressed, delta), as stored and as header plaintext.
    let store = MemoryStore::default();
    let mut writer = pack::PackWriter::create(&store, None).expect("memory");
    let mut entries = Vec::new();
    for (data, base) in [(&b"short"[..], None), (&text[..], None), (&new[..], Some(&old[..]))] {
        let id = key.chunk_id(data);
        let (sealed, base_id) = match base {
            Some(base) => pack::seal_chunk_against(&key, id, data, key.chunk_id(base), base, &mut compressor),
            None => (pack::seal_chunk(&key, id, data, &mut compressor), None),
        };
        writer.add(id, &sealed, data.len() as u32, base_id).expect("memory");
        let plaintext = key.open(&format::associated_data(ObjectType::Chunk, &id.0), &sealed).expect("opens");
        let mut payload = (data.len() as u32).to_le_bytes().to_vec();
        payload.extend_from_slice(&plaintext);
        add("payload", &format!("chunk-{}", entries.len()), payload);
        entries.push((id, sealed.len() as u32, data.len() as u32, base_id));
    }
    let record = writer.finish(&key).expect("memory").commit().expect("memory");
    let stored = store.objects.lock().expect("memory").values().next().cloned().expect("one pack");
    add("pack", "three-chunks", stored);
    let mut header = (record.chunks.iter().map(|c| u64::from(c.sealed_len)).sum::<u64>()).to_le_bytes().to_vec();
    header.extend_from_slice(&pack::encode_header(&record.chunks));
    add("pack", "header", header);
    let mut records = vec![record];
    records[0].chunks[2].base = entries[2].3;
    add("index", "one-pack", index::encode(&records));

    // A WAL file as stored.
    let wal = pack::encode_payload_parallel(&text, 1, 2);
    add("payload", "wal", [&[0u8; 4][..], &wal].concat());
    add("envelope", "wal", format::seal_file(&key, ObjectType::Wal, SEED_WAL.as_bytes(), &wal));

    // Manifests, tree, config, lock, plan, key slot.
    let mut snap = Snapshot::new(crate::repo::snapshot::SnapshotKind::PgBase, &["policy=api".into()]);
    snap.tree = vec![Id([4; 32])];
    snap.pg = Some(crate::repo::snapshot::PgBackup {
        mode: "stream".into(),
        system_identifier: "7300000000000000001".into(),
        pg_version: "15".into(),
        timeline: 1,
        start_lsn: "0/2000028".into(),
        stop_lsn: "0/3000100".into(),
        start_wal: "000000010000000000000002".into(),
        wal_segment_size: 16 << 20,
        start_time: "2026-12-06 09:00:00 UTC".into(),
        started_at: None,
        tablespace_map: String::new(),
    });
    add("snapshot", "pg-base", serde_json::to_vec(&snap).expect("serializes"));
    let mut tree_text = Vec::new();
    for (kind, path) in [("dir", "base"), ("file", "base/1/1259"), ("symlink", "pg_wal")] {
        let mut e = Entry::new(serde_json::from_value(kind.into()).expect("kind"), std::path::Path::new(path));
        e.size = 8192;
        e.chunks = vec![Id([5; 32])];
        if kind == "symlink" {
            e.set_target(std::path::Path::new("/var/lib/wal"));
        }
        serde_json::to_writer(&mut tree_text, &e).expect("serializes");
        tree_text.push(b'\n');
    }
    let middle = tree_text.len() / 2;
    tree_text.insert(middle, 0xFF);
    add("tree", "three-entries", tree_text);
    let config = Config {
        version: format::VERSION,
        id: "ab".repeat(32),
        created: chrono::Utc::now(),
        chunking: Chunking::default(),
        compression_level: 3,
        pack_size: 32 << 20,
    };
    add("config", "default", serde_json::to_vec(&config).expect("serializes"));
    let lock = LockInfo {
        exclusive: true,
        hostname: "backup-0".into(),
        pid: 4242,
        command: "prune".into(),
        time: chrono::Utc::now(),
        pid_scope: Some("boot:ns".into()),
    };
    add("lock", "exclusive", serde_json::to_vec(&lock).expect("serializes"));
    let plan = prune::PrunePlan { marked: [(Id([6; 32]), chrono::Utc::now())].into() };
    add("prune_plan", "one-pack", serde_json::to_vec(&plan).expect("serializes"));
    let store = MemoryStore::default();
    key::add_slot(&store, &key, &key::Secret::KeyFile(KEY_FILE)).expect("memory");
    let slot = store.objects.lock().expect("memory").values().next().cloned().expect("one slot");
    add("key_slot", "key-file", slot);
    let passphrase = r#"{"version":1,"kind":"passphrase","created":"2026-01-01T00:00:00Z","hostname":"h",
        "kdf":{"algorithm":"argon2id","argon2_version":19,"memory_kib":65536,"iterations":3,"parallelism":1,
        "salt":"00112233445566778899aabbccddeeff"},"wrapped_key":"00"}"#;
    add("key_slot", "passphrase", passphrase.as_bytes().to_vec());

    // The project's own policies and runbooks.
    for (target, dir) in [("policy", "policies"), ("runbook", "runbooks")] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        for file in std::fs::read_dir(&dir).expect("project folder").flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if name.ends_with(".yaml") {
                add(target, &name, std::fs::read(file.path()).expect("readable"));
            }
        }
    }

    // A pg_basebackup-like tar stream.
    let mut tar = tar::Builder::new(Vec::new());
    let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: \
                 0/2000060\nBACKUP METHOD: streamed\nSTART TIME: 2026-12-06 09:00:00 UTC\nSTART TIMELINE: 1\n";
    let manifest = br#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
        "WAL-Ranges": [{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/3000100" }]}"#;
    let control = [7300000000000000001u64.to_le_bytes().to_vec(), vec![0; 8184]].concat();
    for (path, content) in [
        ("backup_label", label.as_bytes()),
        ("PG_VERSION", &b"15\n"[..]),
        ("global/pg_control", &control[..]),
        ("base/1/1259", &old[..]),
        ("backup_manifest", &manifest[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o600);
        tar.append_data(&mut h, path, content).expect("in memory");
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    tar.append_link(&mut h, "pg_wal", "/var/lib/wal").expect("in memory");
    add("basebackup_tar", "stream", tar.into_inner().expect("in memory"));
    let entries = [
        &b"\x00backup_label\x00"[..],
        label.as_bytes(),
        b"\xFF\x00PG_VERSION\x0015\n\xFF\x01base/1\x00\xFF\x00./base/1/1259\x00",
        b"relation pages",
        b"\xFF\x02pg_wal\x00/var/lib/wal\xFF\x00../escape\x00x",
    ];
    add("basebackup_tar", "entries", [&[1u8][..], &entries.concat()].concat());
    add("pg_files", "backup_label", [&[0u8][..], label.as_bytes()].concat());
    add("pg_files", "manifest", [&[1u8][..], &manifest[..]].concat());
    add("pg_files", "pg_control", [&[2u8][..], &control[..]].concat());
    add("pg_files", "history", b"\x031\t0/3000060\tno recovery target specified\n".to_vec());
    add("pg_files", "wal_name", b"\x04000000010000000A000000FF".to_vec());
    add("pg_files", "lsn", b"\x0516/B374D848".to_vec());
    out
}

/// A store in memory, for targets and seeds that read or write through the store interface.
#[derive(Default)]
struct MemoryStore {
    objects: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

struct MemoryWriter {
    objects: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    key: String,
    data: Vec<u8>,
}

impl ObjectWriter for MemoryWriter {
    fn write(&mut self, data: &[u8]) -> store::Result<()> {
        self.data.extend_from_slice(data);
        Ok(())
    }
    fn commit(self: Box<Self>) -> store::Result<()> {
        self.objects.lock().expect("memory").insert(self.key, self.data);
        Ok(())
    }
}

impl MemoryStore {
    fn missing(&self, key: &str) -> store::Error {
        store::Error::NotFound { location: "memory".into(), key: key.into() }
    }
}

impl Store for MemoryStore {
    fn location(&self) -> &str {
        "memory"
    }
    fn put(&self, key: &str, data: &[u8]) -> store::Result<()> {
        self.objects.lock().expect("memory").insert(key.into(), data.to_vec());
        Ok(())
    }
    fn create(&self, key: &str) -> store::Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(MemoryWriter { objects: self.objects.clone(), key: key.into(), data: Vec::new() }))
    }
    fn put_new(&self, key: &str, data: &[u8]) -> store::Result<bool> {
        let mut objects = self.objects.lock().expect("memory");
        if objects.contains_key(key) {
            return Ok(false);
        }
        objects.insert(key.into(), data.to_vec());
        Ok(true)
    }
    fn get(&self, key: &str) -> store::Result<Vec<u8>> {
        self.objects.lock().expect("memory").get(key).cloned().ok_or_else(|| self.missing(key))
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> store::Result<Vec<u8>> {
        let objects = self.objects.lock().expect("memory");
        let data = objects.get(key).ok_or_else(|| self.missing(key))?;
        let range = usize::try_from(offset).ok().zip(usize::try_from(len).ok());
        range
            .and_then(|(o, l)| data.get(o..o.checked_add(l)?))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| store::Error::OutOfRange { location: "memory".into(), key: key.into(), offset, len })
    }
    fn list(&self, prefix: &str) -> store::Result<Vec<ObjectInfo>> {
        let objects = self.objects.lock().expect("memory");
        let found = objects.iter().filter(|(k, _)| k.starts_with(prefix));
        Ok(found.map(|(k, v)| ObjectInfo { key: k.clone(), size: v.len() as u64, modified: None }).collect())
    }
    fn delete(&self, key: &str) -> store::Result<()> {
        self.objects.lock().expect("memory").remove(key);
        Ok(())
    }
    fn exists(&self, key: &str) -> store::Result<bool> {
        Ok(self.objects.lock().expect("memory").contains_key(key))
    }
    fn remove_abandoned(&self, _before: std::time::SystemTime) -> store::Result<usize> {
        Ok(0)
    }
}

#[cfg(test)]
#[global_allocator]
static ALLOCATOR: BoundedAlloc = BoundedAlloc;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Xorshift;
    use std::path::PathBuf;

    /// Mutations of each seed per test run: a fixed budget, the same inputs every run.
    const MUTATIONS: usize = 1000;

    fn fuzz_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
    }

    /// The files under `fuzz/<kind>/<target>/`.
    fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else { return Vec::new() };
        let mut files: Vec<_> = dir.flatten().map(|f| f.path()).collect();
        files.sort();
        files.into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("readable"))).collect()
    }

    /// One to four of: flip a bit, set a byte to an edge value, cut, insert, repeat a stretch,
    /// or splice in part of another seed of the same target.
    fn mutate(rng: &mut Xorshift, data: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
        let mut out = data.to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(out.len() + 1);
            let byte = at.min(out.len().saturating_sub(1));
            match rng.below(7) {
                0 if !out.is_empty() => out[byte] ^= 1 << rng.below(8),
                1 if !out.is_empty() => out[byte] = [0, 0xFF, 0x7F, 0x80, b'9', b'"', b'\n'][rng.below(7)],
                2 => out.truncate(at),
                3 => {
                    let byte = rng.next() as u8;
                    out.splice(at..at, std::iter::repeat_n(byte, 1 + rng.below(16)));
                }
                4 if !out.is_empty() => {
                    let start = rng.below(out.len());
                    let stretch = out[start..(start + 1 + rng.below(64)).min(out.len())].to_vec();
                    out.splice(at..at, stretch.iter().copied().cycle().take(stretch.len() * (1 + rng.below(8))));
                }
                5 if !others.is_empty() => {
                    let other = &others[rng.below(others.len())];
                    let start = rng.below(other.len());
                    out.splice(at.., other[start..].iter().copied());
                }
                _ => {
                    let field = rng.below(out.len().saturating_sub(3)).min(out.len().saturating_sub(4));
                    if out.len() >= 4 {
                        let value = [0u32, 1, u32::MAX, 0x8000_0000, 1 << 20][rng.below(5)];
                        out[field..field + 4].copy_from_slice(&value.to_le_bytes());
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_target_has_seeds_checked_in() {
        if std::env::var_os("DRCTL_WRITE_FUZZ_SEEDS").is_some() {
            for (target, name, bytes) in seeds() {
                let dir = fuzz_dir().join("seeds").join(target);
                std::fs::create_dir_all(&dir).expect("writable");
                if !dir.join(&name).exists() {
                    std::fs::write(dir.join(name), bytes).expect("writable");
                }
            }
        }
        for target in TARGETS {
            assert!(
                !inputs("seeds", target.name).is_empty(),
                "fuzz/seeds/{} is empty: DRCTL_WRITE_FUZZ_SEEDS=1 cargo test fuzz:: writes the seeds",
                target.name
            );
        }
    }

    #[test]
    fn seeds_regressions_and_their_mutations_pass_every_target() {
        let mut rng = Xorshift(0x5eed);
        let mut runs = 0;
        for target in TARGETS {
            let seeds = inputs("seeds", target.name);
            let regressions = inputs("regressions", target.name);
            let bytes: Vec<Vec<u8>> = seeds.iter().map(|(_, b)| b.clone()).collect();
            for (path, data) in seeds.iter().chain(&regressions) {
                let outcome = std::panic::catch_unwind(|| run(target.name, data));
                assert!(outcome.is_ok(), "{} fails on {}", target.name, path.display());
                runs += 1;
            }
            for (path, data) in &seeds {
                for i in 0..MUTATIONS {
                    let input = mutate(&mut rng, data, &bytes);
                    if std::panic::catch_unwind(|| run(target.name, &input)).is_err() {
                        let saved = std::env::temp_dir().join(format!("drctl-fuzz-{}-{i}", target.name));
                        std::fs::write(&saved, &input).expect("writable");
                        panic!(
                            "{} fails on mutation {i} of {} (saved as {}: move it to fuzz/regressions/{}/ once fixed)",
                            target.name,
                            path.display(),
                            saved.display(),
                            target.name
                        );
                    }
                    runs += 1;
                }
            }
        }
        eprintln!("{runs} fuzz inputs run");
    }
}
