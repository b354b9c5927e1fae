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

const BLOCK: usize = 128 << 10;

fn random_block(seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..BLOCK)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

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
