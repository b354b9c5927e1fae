//! The base cache under a local-mode style backup: deltas read their bases from it, and a cache
//! that is damaged or gone costs downloads, never a wrong backup.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use super::{BackupOptions, BaseCacheOptions, run};
use crate::ops::restore::restore_to_dir;
use crate::progress::NoProgress;
use crate::repo::key::Secret;
use crate::repo::snapshot::{Snapshot, SnapshotKind};
use crate::repo::tree::{Entry, EntryKind, TreeWriter};
use crate::repo::{Id, InitOptions, Repository};
use crate::store::recording::RecordingStore;
use crate::testing::random_block;

/// Backs up `blocks` as the one file `db`, each block a new version of `earlier`'s block at the
/// same place; returns the snapshot and the blocks' chunk ids.
fn backup(repo: &Repository, options: &BackupOptions, blocks: &[Vec<u8>], earlier: &[Id]) -> (Snapshot, Vec<Id>) {
    let snap = Snapshot::new(SnapshotKind::Paths, &[]);
    let mut ids = Vec::new();
    let (_, snapshot) = run(repo, snap, options, &NoProgress, |sink, _| {
        let mut tree = TreeWriter::new(repo.cdc(), repo.config().chunking.max_size as usize, |c| sink.add(c));
        let mut e = Entry::new(EntryKind::File, Path::new("db"));
        e.mode = 0o600;
        for (n, block) in blocks.iter().enumerate() {
            e.size += block.len() as u64;
            e.chunks.push(sink.add_version(block.clone(), earlier.get(n).copied())?);
        }
        ids = e.chunks.clone();
        tree.push(&e)?;
        Ok(tree.finish()?)
    })
    .unwrap();
    (snapshot, ids)
}

fn cached_packs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut packs = Vec::new();
    for repo in fs::read_dir(dir).unwrap() {
        for pack in fs::read_dir(repo.unwrap().path().join("packs")).unwrap() {
            let path = pack.unwrap().path();
            if !path.file_name().unwrap().to_string_lossy().starts_with(".tmp-") {
                packs.push(path);
            }
        }
    }
    packs
}

#[test]
fn deltas_read_their_bases_from_the_cache_and_a_damaged_or_lost_cache_only_costs_downloads() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(RecordingStore::new(tmp.path().join("repo")));
    let repo = Repository::init(store.clone(), &Secret::KeyFile([9; 32]), &InitOptions::default()).unwrap();
    let cache = tmp.path().join("cache");
    let options = BackupOptions {
        base_cache: Some(BaseCacheOptions { dir: cache.clone(), max_bytes: 1 << 30 }),
        ..Default::default()
    };
    let mut versions = vec![(0..6).map(random_block).collect::<Vec<_>>()];
    let changed = |n: usize, versions: &Vec<Vec<Vec<u8>>>| {
        let mut next = versions.last().unwrap().clone();
        next[n][1000..1016].copy_from_slice(&[n as u8 + 1; 16]);
        next
    };
    let (first, mut ids) = backup(&repo, &options, &versions[0], &[]);
    let mut snapshots = vec![first];
    assert!(!cached_packs(&cache).is_empty(), "the full backup's packs are cached as written");

    let mut next = |n: usize, versions: &mut Vec<Vec<Vec<u8>>>, ids: &mut Vec<Id>| {
        versions.push(changed(n, versions));
        store.take_reads("");
        let (snapshot, new_ids) = backup(&repo, &options, versions.last().unwrap(), ids);
        let index = repo.load_index().unwrap();
        assert_eq!(index.deltas.get(&new_ids[n]), Some(&ids[n]), "block {n} is stored as a delta of its last version");
        snapshots.push(snapshot);
        *ids = new_ids;
        store.take_reads("packs/").len()
    };
    assert_eq!(next(1, &mut versions, &mut ids), 0, "with the cache warm, no pack is read from the repository");

    for pack in cached_packs(&cache) {
        let len = fs::metadata(&pack).unwrap().len() as usize;
        fs::write(&pack, vec![0x5a; len]).unwrap();
    }
    assert!(next(2, &mut versions, &mut ids) > 0, "damaged cached packs are read from the repository instead");
    fs::remove_dir_all(&cache).unwrap();
    assert!(next(3, &mut versions, &mut ids) > 0, "a lost cache is filled from the repository");
    assert!(!cached_packs(&cache).is_empty(), "and is rebuilt");

    for (n, (snapshot, blocks)) in snapshots.iter().zip(&versions).enumerate() {
        let target = tmp.path().join(format!("restore-{n}"));
        restore_to_dir(&repo, snapshot, &target, false, &NoProgress).unwrap();
        assert!(fs::read(target.join("db")).unwrap() == blocks.concat(), "snapshot {n} restores bit-exact");
    }
}

#[test]
fn check_read_data_reads_each_pack_byte_once_and_still_decodes_every_delta() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(RecordingStore::new(tmp.path().join("repo")));
    let repo = Repository::init(store.clone(), &Secret::KeyFile([9; 32]), &InitOptions::default()).unwrap();
    let options = BackupOptions::default();
    let mut blocks: Vec<Vec<u8>> = (0..6).map(random_block).collect();
    let (_, mut ids) = backup(&repo, &options, &blocks, &[]);
    for round in 0..3u8 {
        for block in blocks.iter_mut().skip(round as usize).step_by(2) {
            block[500 + round as usize] ^= 0xff;
        }
        ids = backup(&repo, &options, &blocks, &ids).1;
    }
    assert!(repo.load_index().unwrap().deltas.len() >= 6, "the incrementals stored deltas");
    store.take_reads("");
    let report = crate::repo::check::check(&repo, true, &NoProgress).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let mut seen: std::collections::HashMap<String, Vec<(u64, u64)>> = Default::default();
    for read in store.take_reads("packs/").into_iter().filter(|r| r.by_worker) {
        let (offset, len) = read.range.expect("check reads ranges");
        for &(o, l) in seen.get(&read.key).into_iter().flatten() {
            assert!(offset + len <= o || o + l <= offset, "{} read twice around {offset}", read.key);
        }
        seen.entry(read.key).or_default().push((offset, len));
    }
    let packs: u64 = repo.store().list("packs/").unwrap().iter().map(|o| o.size).sum();
    let read: u64 = seen.values().flatten().map(|r| r.1).sum();
    assert_eq!(read, packs, "every pack byte read exactly once");

    // A damaged base is still found through its delta's pack.
    let index = repo.load_index().unwrap();
    let (delta, base) = index.deltas.iter().next().map(|(d, b)| (*d, *b)).unwrap();
    let (base_pack, loc) = index.get(&base).unwrap();
    let path = tmp.path().join("repo").join(crate::repo::format::pack_key(base_pack.id));
    let mut bytes = fs::read(&path).unwrap();
    bytes[loc.offset as usize + 40] ^= 1;
    fs::write(&path, bytes).unwrap();
    // A fresh process's view: no read-ahead window of the pack from before the damage.
    let repo = Repository::open(store.clone(), &Secret::KeyFile([9; 32])).unwrap();
    let report = crate::repo::check::check(&repo, true, &NoProgress).unwrap();
    let delta_pack = index.get(&delta).unwrap().0.id;
    let objects: Vec<&str> = report.problems.iter().map(|p| p.object.as_str()).collect();
    assert!(objects.iter().any(|o| o.contains(&base_pack.id.to_hex())), "{objects:?}");
    if delta_pack != base_pack.id {
        assert!(objects.iter().any(|o| o.contains(&delta_pack.to_hex())), "the delta's pack too: {objects:?}");
    }
}
