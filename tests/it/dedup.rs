//! Deduplication: an unchanged tree costs (almost) nothing, a 1 MiB change costs about 1 MiB.

use std::io::{Seek, SeekFrom, Write};

use crate::harness::*;

#[test]
fn dedup_unchanged_tree_and_one_mib_change() {
    let ws = Workspace::new();
    let src = ws.join("src");
    let t = TreeBuilder::new(&src);
    // ~64 MiB of random (incompressible) data in a few files, plus small files.
    t.file_gen("big32.bin", &mut DataGen::random(101), 32 * MIB);
    t.file_gen("big16a.bin", &mut DataGen::random(102), 16 * MIB);
    t.file_gen("sub/big16b.bin", &mut DataGen::random(103), 16 * MIB);
    let mut rng = Rng::new(104);
    for i in 0..200 {
        let n = rng.range(100, 8192) as usize;
        t.file(format!("small/{}/f{i}.txt", i % 10), &DataGen::text(rng.next_u64()).take(n));
    }
    t.stamp_mtimes(105);

    let repo = ws.repo();
    repo.init();
    let (b1, o1) = repo.backup(&[&src]);
    assert!(b1.logical_bytes >= 64 * MIB, "logical_bytes {}\n{o1}", b1.logical_bytes);
    assert!(b1.stored_bytes >= 64 * MIB, "first backup of 64 MiB random data stored only {}\n{o1}", b1.stored_bytes);

    // Same tree again: almost nothing new.
    let (b2, o2) = repo.backup(&[&src]);
    assert_eq!(b2.logical_bytes, b1.logical_bytes, "{o2}");
    assert!(
        b2.stored_bytes * 100 < b2.logical_bytes,
        "second backup of an unchanged tree stored {} of {} logical bytes (>= 1%)\n{o2}",
        fmt_bytes(b2.stored_bytes),
        fmt_bytes(b2.logical_bytes)
    );

    // Overwrite 1 MiB in the middle of the 32 MiB file (same size, new random bytes).
    let big = t.path("big32.bin");
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
        f.seek(SeekFrom::Start(16 * MIB - 300 * KIB)).unwrap();
        f.write_all(&DataGen::random(999).take(MIB as usize)).unwrap();
    }
    t.set_mtime("big32.bin", 1_700_000_000, 5);
    let (b3, o3) = repo.backup(&[&src]);
    eprintln!(
        "stored: first {}, unchanged {}, 1 MiB changed {} ({} new chunks)",
        fmt_bytes(b1.stored_bytes),
        fmt_bytes(b2.stored_bytes),
        fmt_bytes(b3.stored_bytes),
        b3.new_chunks
    );
    // The gear table is keyed by each repository's own key, so where chunks are cut differs from
    // run to run. Over 3000 keys, this change stored a median of 2.9 MiB, 8 MiB at the 99th
    // percentile and 9.9 MiB at most; chunking that never resynchronised after the change
    // would store the whole rest of the file, over 16 MiB. 12 MiB tells the two apart.
    assert!(
        b3.stored_bytes < 12 * MIB,
        "changing 1 MiB of a 32 MiB file stored {} (>= 12 MiB): chunking does not resynchronise?\n{o3}",
        fmt_bytes(b3.stored_bytes)
    );
    assert!(
        b3.stored_bytes > MIB / 2,
        "changing 1 MiB of random data stored only {} (<= 0.5 MiB): change not stored?\n{o3}",
        fmt_bytes(b3.stored_bytes)
    );
    assert!(b3.new_chunks >= 1, "{o3}");

    // And the changed file restores correctly.
    let target = ws.join("out");
    let r = repo.restore(&b3.short_id, &target);
    r.ok();
    assert_trees_equal(&src, &restored_path(&target, &src), CompareOpts { owner: true }, &r);
}

#[test]
fn stored_bytes_is_what_the_backup_added_to_the_repository() {
    // Contract: stored_bytes = bytes newly written by this backup to packs and index; the
    // snapshot manifest itself (written last, holding stored_bytes) is not counted. Compare with
    // the growth of the repository on disk minus the new manifest.
    let ws = Workspace::new();
    let src = ws.join("src");
    let t = TreeBuilder::new(&src);
    t.file_gen("a.bin", &mut DataGen::mixed(201, MIB), 6 * MIB);
    t.file("b.txt", b"small");
    let repo = ws.repo();
    repo.init();
    let check = |what: &str| {
        let before = repo.total_bytes();
        let (b, out) = repo.backup(&[&src]);
        let manifest = std::fs::metadata(repo.path.join("snapshots").join(&b.id)).expect("the manifest exists").len();
        let grown = repo.total_bytes() - before;
        assert_eq!(
            b.stored_bytes + manifest,
            grown,
            "{what}: stored_bytes={} + manifest {manifest} but the repository grew by {grown} bytes\n{out}",
            b.stored_bytes
        );
    };
    check("first backup");
    check("unchanged second backup");
    t.file_gen("c.bin", &mut DataGen::random(202), 2 * MIB);
    check("backup with a new file");
}
