//! One conformance suite for every storage backend, as restic's `backend/test/suite.go`: the same
//! assertions run against the local store and against S3 (moto), so the repository can rely on
//! the contract in `src/store/mod.rs` whichever backend holds it.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use drctl::store::{Error, LocalStore, S3Options, S3Store, Store};

use crate::harness::faultproxy::FaultProxy;
use crate::harness::moto::Moto;
use crate::harness::*;

/// More than one S3 list page (1000 keys), so the SDK's paginator is exercised.
const MANY: usize = 1005;

#[test]
fn local_store_keeps_the_contract() {
    let ws = Workspace::new();
    let store = LocalStore::new(ws.path().join("store"));
    conformance(&store, true);
}

#[test]
fn s3_store_keeps_the_contract() {
    let moto = Moto::start("conformance");
    // SAFETY: set before any thread of this test starts; nextest runs each test in its own process.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::set_var("AWS_REGION", "us-east-1");
    }
    // Through the proxy, which gives moto S3's atomic conditional writes.
    let proxy = FaultProxy::start(&moto.endpoint);
    let options = S3Options { endpoint: Some(proxy.endpoint()), path_style: true, ..S3Options::default() };
    let store = S3Store::open("s3://conformance/repo", &options).expect("open the S3 store");
    // moto reports one fixed start time (2010) for every multipart upload; S3 reports the real one.
    conformance(&store, false);
}

/// The one body of assertions every backend passes. `real_start_times`: the backend reports
/// when an unfinished write began, so a recent one can be told from an abandoned one.
fn conformance(store: &dyn Store, real_start_times: bool) {
    put_and_get(store);
    put_new_keeps_the_first(store);
    concurrent_put_new_has_one_winner(store);
    create_commit_and_dropped_writer(store);
    ranges(store);
    not_found(store);
    list_prefixes_and_pages(store);
    delete_and_exists(store);
    remove_abandoned(store, real_start_times);
}

fn put_and_get(store: &dyn Store) {
    store.put("data/ab/one", b"first").unwrap();
    assert_eq!(store.get("data/ab/one").unwrap(), b"first");
    store.put("data/ab/one", b"second, longer").unwrap();
    assert_eq!(store.get("data/ab/one").unwrap(), b"second, longer", "put replaces the whole object");
    store.put("data/empty", b"").unwrap();
    assert_eq!(store.get("data/empty").unwrap(), b"");
    assert!(store.exists("data/empty").unwrap(), "an empty object exists");
}

fn put_new_keeps_the_first(store: &dyn Store) {
    assert!(store.put_new("keys/a", b"winner").unwrap(), "the first put_new stores");
    assert!(!store.put_new("keys/a", b"loser").unwrap(), "a second put_new reports the key taken");
    assert_eq!(store.get("keys/a").unwrap(), b"winner", "the taken object is left as it was");
}

fn concurrent_put_new_has_one_winner(store: &dyn Store) {
    const THREADS: usize = 8;
    let contents: Vec<Vec<u8>> = (0..THREADS).map(|t| vec![b'a' + t as u8; 64 * 1024 + t]).collect();
    let won: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> =
            contents.iter().map(|data| s.spawn(move || store.put_new("locks/race", data).unwrap())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<usize> = won.iter().enumerate().filter(|(_, w)| **w).map(|(i, _)| i).collect();
    assert_eq!(winners.len(), 1, "exactly one concurrent put_new wins: {won:?}");
    assert_eq!(store.get("locks/race").unwrap(), contents[winners[0]], "the object is the winner's whole content");
}

fn create_commit_and_dropped_writer(store: &dyn Store) {
    let mut writer = store.create("packs/cd/written").unwrap();
    writer.write(b"part one, ").unwrap();
    assert!(!store.exists("packs/cd/written").unwrap(), "nothing is visible before commit");
    writer.write(b"part two").unwrap();
    writer.commit().unwrap();
    assert_eq!(store.get("packs/cd/written").unwrap(), b"part one, part two");

    let mut dropped = store.create("packs/cd/dropped").unwrap();
    dropped.write(&[7u8; 4096]).unwrap();
    drop(dropped);
    assert!(!store.exists("packs/cd/dropped").unwrap(), "a dropped writer stores nothing");
    let keys = keys(store, "packs/");
    assert_eq!(keys, BTreeSet::from(["packs/cd/written".to_string()]), "a dropped writer leaves no trace");
}

fn ranges(store: &dyn Store) {
    store.put("data/range", b"0123456789").unwrap();
    assert_eq!(store.get_range("data/range", 0, 4).unwrap(), b"0123");
    assert_eq!(store.get_range("data/range", 6, 4).unwrap(), b"6789", "a range ending at the end");
    assert_eq!(store.get_range("data/range", 10, 0).unwrap(), b"", "a zero-length range at the end");
    for (offset, len) in [(8, 5), (10, 1), (20, 3)] {
        match store.get_range("data/range", offset, len) {
            Err(Error::OutOfRange { offset: o, len: l, .. }) => assert_eq!((o, l), (offset, len)),
            other => panic!("range {offset}+{len} of a 10-byte object: want OutOfRange, got {other:?}"),
        }
    }
}

fn not_found(store: &dyn Store) {
    assert!(matches!(store.get("data/missing"), Err(Error::NotFound { .. })), "get of a missing key");
    assert!(matches!(store.get_range("data/missing", 0, 1), Err(Error::NotFound { .. })), "get_range of a missing key");
    assert!(!store.exists("data/missing").unwrap());
}

fn list_prefixes_and_pages(store: &dyn Store) {
    let many: Vec<String> = (0..MANY).map(|i| format!("index/{:02x}/{i:05}", i % 256)).collect();
    std::thread::scope(|s| {
        for chunk in many.chunks(MANY.div_ceil(8)) {
            s.spawn(move || chunk.iter().for_each(|key| store.put(key, key.as_bytes()).unwrap()));
        }
    });
    let listed = store.list("index/").unwrap();
    assert_eq!(listed.len(), MANY, "every object is listed, across pages");
    assert_eq!(keys(store, "index/"), many.iter().cloned().collect(), "listed keys are relative to the store");
    for info in &listed {
        assert_eq!(info.size, info.key.len() as u64, "{} has its size", info.key);
    }

    let folder = keys(store, "index/07/");
    let want: BTreeSet<String> = many.iter().filter(|k| k.starts_with("index/07/")).cloned().collect();
    assert_eq!(folder, want, "a folder prefix lists only that folder");
    assert!(store.list("nothing/").unwrap().is_empty(), "a prefix with no objects lists nothing");
    assert!(store.list("index/zz/").unwrap().is_empty(), "a folder with no objects lists nothing");
    let all = keys(store, "");
    assert!(all.contains("data/range") && all.contains("index/00/00000"), "the empty prefix lists everything");
}

fn delete_and_exists(store: &dyn Store) {
    store.put("data/doomed", b"x").unwrap();
    assert_eq!(store.get_range("data/doomed", 0, 1).unwrap(), b"x");
    assert!(store.exists("data/doomed").unwrap());
    store.delete("data/doomed").unwrap();
    assert!(!store.exists("data/doomed").unwrap());
    assert!(matches!(store.get("data/doomed"), Err(Error::NotFound { .. })), "get after delete");
    assert!(
        matches!(store.get_range("data/doomed", 0, 1), Err(Error::NotFound { .. })),
        "get_range after delete (no stale read)"
    );
    store.delete("data/doomed").unwrap_or_else(|e| panic!("deleting a missing key succeeds: {e}"));
}

fn remove_abandoned(store: &dyn Store, real_start_times: bool) {
    let before = keys(store, "");
    assert_eq!(store.remove_abandoned(SystemTime::now() - Duration::from_secs(3600)).unwrap(), 0);
    assert_eq!(store.remove_abandoned(SystemTime::now() + Duration::from_secs(60)).unwrap(), 0, "nothing abandoned");
    assert_eq!(keys(store, ""), before, "remove_abandoned never touches committed objects");

    // A killed writer: more than one S3 part (16 MiB), so a multipart upload is under way.
    let mut killed = store.create("packs/ef/killed").unwrap();
    killed.write(&vec![9u8; 17 << 20]).unwrap();
    std::mem::forget(killed);
    if real_start_times {
        assert_eq!(store.remove_abandoned(SystemTime::now() - Duration::from_secs(3600)).unwrap(), 0, "too recent");
    }
    assert!(store.remove_abandoned(SystemTime::now() + Duration::from_secs(60)).unwrap() >= 1, "the killed write");
    assert_eq!(store.remove_abandoned(SystemTime::now() + Duration::from_secs(60)).unwrap(), 0, "removed once");
    assert!(!store.exists("packs/ef/killed").unwrap());
    assert_eq!(keys(store, ""), before, "a killed writer leaves nothing visible");
}

fn keys(store: &dyn Store, prefix: &str) -> BTreeSet<String> {
    store.list(prefix).unwrap().into_iter().map(|o| o.key).collect()
}
