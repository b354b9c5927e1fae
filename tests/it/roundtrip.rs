//! Backup -> restore round trips: contents, types, symlinks, modes, mtimes (ns), owners.

use std::fs;
use std::path::Path;

use crate::harness::*;

/// A tree with ~2000 small files in nested dirs, a few big mixed files, empty files and dirs,
/// relative / absolute / dangling symlinks, unusual modes, odd names and explicit mtimes.
fn build_rich_tree(t: &TreeBuilder, seed: u64) {
    let mut rng = Rng::new(seed);
    for d in 0..20 {
        for s in 0..10 {
            for f in 0..10 {
                let size = match rng.range(0, 10) {
                    0 => 0,
                    1..=6 => rng.range(1, 4096),
                    _ => rng.range(4096, 32 * 1024),
                } as usize;
                let (data, ext) = if rng.chance(1, 2) {
                    (DataGen::text(rng.next_u64()).take(size), "txt")
                } else {
                    (DataGen::random(rng.next_u64()).take(size), "bin")
                };
                t.file(format!("small/d{d:02}/s{s:02}/f{f:02}.{ext}"), &data);
            }
        }
    }
    // Big files, mixed compressible / incompressible, one with an odd size.
    t.file_gen("big/mixed.bin", &mut DataGen::mixed(seed ^ 1, MIB), 24 * MIB);
    t.file_gen("big/random.bin", &mut DataGen::random(seed ^ 2), 16 * MIB);
    t.file_gen("big/text.log", &mut DataGen::text(seed ^ 3), 12 * MIB);
    t.file_gen("big/odd.bin", &mut DataGen::mixed(seed ^ 4, 64 * KIB), 5 * MIB + 12_345);
    // Empty files and directories.
    t.file("empty.dat", b"");
    t.file("small/d03/empty", b"");
    t.dir("emptydirs/a");
    t.dir("emptydirs/b/c/d");
    t.dir("emptydirs/private");
    t.chmod("emptydirs/private", 0o700);
    // Symlinks.
    t.symlink("links/rel_file", "../big/text.log");
    t.symlink("links/rel_dir", "../small/d01");
    t.symlink("links/abs_file", t.path("small/d00/s00/f00.txt"));
    t.symlink("links/abs_outside", "/etc/hostname");
    t.symlink("links/dangling", "no/such/file");
    t.symlink("links/abs_dangling", "/nonexistent/drctl-it/target");
    t.symlink("links/chain", "rel_file");
    // Modes.
    t.file("modes/private.txt", b"secret\n");
    t.chmod("modes/private.txt", 0o600);
    t.file("modes/script.sh", b"#!/bin/sh\necho hi\n");
    t.chmod("modes/script.sh", 0o755);
    t.file("modes/suid", &DataGen::random(9).take(3000));
    t.chmod("modes/suid", 0o4755);
    t.file("modes/sgid", b"sgid\n");
    t.chmod("modes/sgid", 0o2750);
    t.file("modes/readonly", b"read only\n");
    t.chmod("modes/readonly", 0o444);
    t.file("modes/none", b"no permissions at all\n");
    t.chmod("modes/none", 0o000);
    t.file("modes/sticky/inside", b"x");
    t.chmod("modes/sticky", 0o1777);
    t.file("modes/ro_dir/inside.txt", b"inside a read-only dir\n");
    t.dir("modes/ro_dir/sub");
    t.chmod("modes/ro_dir", 0o555);
    t.file("modes/private_dir/f", b"y");
    t.chmod("modes/private_dir", 0o700);
    // Names.
    t.file("names/with space.txt", b"space");
    t.file("names/ünïcödé 文件.txt", "ünïcödé".as_bytes());
    t.file("names/-dash", b"dash");
    t.file("names/.hidden", b"hidden");
    t.file("names/many...dots", b"dots");
    t.file(format!("names/{}", "n".repeat(255)), b"long name");
    // Owners (only meaningful as root).
    if is_root() {
        let (uid, gid) = user_ids("postgres");
        t.file("owned/pg_file", b"owned by postgres");
        t.chown("owned/pg_file", uid, gid);
        t.file("owned/pg_dir/f", b"f");
        t.chown("owned/pg_dir", uid, gid);
        t.symlink("owned/pg_link", "pg_file");
        t.chown("owned/pg_link", uid, gid);
        t.file("owned/mixed", b"uid postgres, gid root");
        t.chown("owned/mixed", uid, 0);
    }
    // Mtimes: every entry gets seconds + nanoseconds; then a few special values.
    t.stamp_mtimes(seed);
    t.set_mtime("names/.hidden", -1_000_000_000, 123_456_789); // 1938
    t.set_mtime("names/-dash", 4_102_444_800, 999_999_999); // 2100
    t.set_mtime("modes/none", 0, 0); // the epoch
    t.set_mtime("names/many...dots", 1_600_000_000, 0); // whole second
    t.set_mtime("links/dangling", 1_234_567_890, 1); // symlink, 1 ns
}

#[test]
fn roundtrip_rich_tree() {
    let ws = Workspace::new();
    let src = ws.join("src");
    let t = TreeBuilder::new(&src);
    build_rich_tree(&t, 0xA11CE);
    let expected = scan(&src);
    let (nfiles, nbytes) = file_stats(&expected);
    let ndirs = expected.values().filter(|e| e.kind == Kind::Dir).count() as u64;
    let nlinks = expected.values().filter(|e| matches!(e.kind, Kind::Symlink { .. })).count() as u64;
    assert!(nfiles > 2000, "tree builder made only {nfiles} files");

    let repo = ws.repo();
    let init = repo.init();
    init.mentions("created drctl repository", "init message");
    init.mentions(&repo.path.to_string_lossy(), "repository path in init message");

    let out = repo.backup_cmd(&[&src]).args(["--tag", "it-roundtrip", "--tag", "second tag"]).run();
    out.ok();
    let b = BackupInfo::parse(&out);
    assert!(
        b.files >= nfiles && b.files <= nfiles + nlinks,
        "backup reported files={} but the tree has {nfiles} regular files (+{nlinks} symlinks)\n{out}",
        b.files
    );
    assert!(b.dirs >= ndirs, "backup reported dirs={} but the tree has {ndirs}\n{out}", b.dirs);
    assert!(
        b.logical_bytes >= nbytes && b.logical_bytes <= nbytes + nbytes / 100 + MIB,
        "logical_bytes={} but the files hold {nbytes} bytes\n{out}",
        b.logical_bytes
    );
    assert!(b.stored_bytes > 0 && b.new_chunks > 0, "first backup stored nothing?\n{out}");
    assert!(
        b.stored_bytes < b.logical_bytes,
        "stored_bytes={} should be below logical_bytes={} (half the data is compressible)\n{out}",
        b.stored_bytes,
        b.logical_bytes
    );

    // snapshots --json describes it.
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 1, "one snapshot expected: {snaps:?}");
    let s = &snaps[0];
    assert_eq!(s["id"], b.id.as_str(), "{s}");
    assert_eq!(s["short_id"], b.short_id.as_str(), "{s}");
    assert_eq!(s["kind"], "paths", "{s}");
    assert_eq!(s["paths"], serde_json::json!([src.to_string_lossy()]), "{s}");
    assert!(s["stdin_name"].is_null(), "{s}");
    let mut tags: Vec<&str> =
        s["tags"].as_array().map(|a| a.iter().filter_map(|t| t.as_str()).collect()).unwrap_or_default();
    tags.sort();
    assert_eq!(tags, vec!["it-roundtrip", "second tag"], "{s}");
    for k in ["files", "dirs", "logical_bytes", "stored_bytes", "new_chunks", "duration_seconds"] {
        assert!(s["summary"].get(k).is_some_and(|v| v.is_number()), "summary.{k} missing: {s}");
    }
    assert!(s["time"].is_string() && s["hostname"].is_string(), "{s}");
    assert_eq!(s["summary"]["files"], b.files, "{s}");
    assert_eq!(s["summary"]["logical_bytes"], b.logical_bytes, "{s}");
    assert_eq!(s["summary"]["stored_bytes"], b.stored_bytes, "{s}");

    // Restore latest and compare everything.
    let outdir = ws.mkdir("out");
    let target = outdir.join("latest");
    let r = repo.restore("latest", &target);
    r.ok();
    assert_tree_matches(&expected, &restored_path(&target, &src), CompareOpts { owner: is_root() }, &r);
    assert_eq!(dir_entries(&outdir), vec!["latest"], "restore left something next to the target\n{r}");

    // The source is untouched by backup (mtimes, modes).
    let after = scan(&src);
    let d = diff_scans(&expected, &after, CompareOpts { owner: true });
    assert!(d.is_empty(), "backup modified the source tree: {d:?}");

    repo.check(true).ok();
}

fn small_tree(t: &TreeBuilder, seed: u64) {
    let mut rng = Rng::new(seed);
    for i in 0..30 {
        let n = rng.range(0, 20_000) as usize;
        t.file(format!("d{}/f{i}.txt", i % 4), &DataGen::text(rng.next_u64()).take(n));
    }
    t.file_gen("blob.bin", &mut DataGen::random(seed), 2 * MIB + 77);
    t.symlink("link", "d0/f0.txt");
    t.dir("empty");
    t.stamp_mtimes(seed);
}

/// Shortest prefix (>= 4) of `id` that is not a prefix of any of `others`.
fn unique_prefix<'a>(id: &'a str, others: &[&str]) -> &'a str {
    (4..=id.len()).map(|n| &id[..n]).find(|p| others.iter().all(|o| !o.starts_with(p))).unwrap()
}

#[test]
fn restore_by_short_id_prefix_full_id_and_latest() {
    let ws = Workspace::new();
    let src = ws.join("src");
    let t = TreeBuilder::new(&src);
    small_tree(&t, 21);
    let scan_a = scan(&src);
    let repo = ws.repo();
    repo.init();
    let (a, _) = repo.backup(&[&src]);

    // Change the tree: new content, a new file, a removed file, a mode change.
    t.file("d1/f1.txt", b"changed content");
    t.file("d2/new.txt", b"new file");
    fs::remove_file(t.path("d3/f3.txt")).unwrap();
    t.chmod("blob.bin", 0o640);
    t.stamp_mtimes(22);
    let scan_b = scan(&src);
    let (b, _) = repo.backup(&[&src]);
    assert_ne!(a.id, b.id);
    let snaps = repo.snapshots();
    let ids: Vec<&str> = snaps.iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(ids, vec![a.id.as_str(), b.id.as_str()], "snapshots --json must list oldest first: {snaps:?}");

    let out = ws.mkdir("out");
    let opts = CompareOpts { owner: true };

    // By the 8-char short id.
    let r = repo.restore(&a.short_id, &out.join("a-short"));
    r.ok();
    assert_tree_matches(&scan_a, &restored_path(&out.join("a-short"), &src), opts, &r);

    // By the shortest unique prefix (>= 4 chars).
    let pa = unique_prefix(&a.id, &[&b.id]);
    let r = repo.restore(pa, &out.join("a-prefix"));
    r.ok();
    assert_tree_matches(&scan_a, &restored_path(&out.join("a-prefix"), &src), opts, &r);

    let pb = unique_prefix(&b.id, &[&a.id]);
    let r = repo.restore(pb, &out.join("b-prefix"));
    r.ok();
    assert_tree_matches(&scan_b, &restored_path(&out.join("b-prefix"), &src), opts, &r);

    // By full id, into an existing empty directory.
    let empty_target = ws.mkdir("out/b-full");
    let r = repo.restore(&b.id, &empty_target);
    r.ok();
    assert_tree_matches(&scan_b, &restored_path(&empty_target, &src), opts, &r);

    // latest is B.
    let r = repo.restore("latest", &out.join("latest"));
    r.ok();
    assert_tree_matches(&scan_b, &restored_path(&out.join("latest"), &src), opts, &r);

    // An unknown prefix: exit 10, nothing created.
    let mut unknown = String::from("0000");
    for c in ["0000", "1111", "2222", "3333"] {
        if !a.id.starts_with(c) && !b.id.starts_with(c) {
            unknown = c.to_string();
            break;
        }
    }
    let before = dir_entries(&out);
    let r = repo.restore(&format!("{unknown}abcd"), &out.join("unknown"));
    r.code_is(10);
    assert_eq!(dir_entries(&out), before, "failed restore left something behind\n{r}");
}

#[test]
fn restore_into_non_empty_target_fails_with_9_and_leaves_it_unchanged() {
    let ws = Workspace::new();
    let src = ws.join("src");
    small_tree(&TreeBuilder::new(&src), 31);
    let repo = ws.repo();
    repo.init();
    repo.backup(&[&src]);

    let out = ws.mkdir("out");
    let target = TreeBuilder::new(out.join("target"));
    target.file("keep.txt", b"do not touch");
    target.file("sub/x.bin", &DataGen::random(3).take(5000));
    // Same relative path as a restored entry would have: must not be overwritten either.
    target.file(restored_path(Path::new("."), &src).join("blob.bin"), b"not the backup's blob");
    target.stamp_mtimes(32);
    let before = scan(&target.root);

    let r = repo.restore("latest", &target.root);
    r.code_is(9);
    let d = diff_scans(&before, &scan(&target.root), CompareOpts { owner: true });
    assert!(d.is_empty(), "non-empty restore target was modified: {d:?}\n{r}");
    assert_eq!(dir_entries(&out), vec!["target"], "restore left something next to the target\n{r}");
}

#[test]
fn restore_target_that_cannot_be_created_fails_with_9() {
    let ws = Workspace::new();
    let src = ws.join("src");
    small_tree(&TreeBuilder::new(&src), 41);
    let repo = ws.repo();
    repo.init();
    repo.backup(&[&src]);
    let out = ws.mkdir("out");
    let file = out.join("a-file");
    fs::write(&file, b"regular file").unwrap();

    // Target is an existing regular file.
    let r = repo.restore("latest", &file);
    r.code_is(9);
    assert_eq!(fs::read(&file).unwrap(), b"regular file", "{r}");
    // Target below a regular file.
    let r = repo.restore("latest", &file.join("sub"));
    r.code_is(9);
    assert_eq!(fs::read(&file).unwrap(), b"regular file", "{r}");
    assert_eq!(dir_entries(&out), vec!["a-file"], "restore left something behind\n{r}");
}

#[test]
fn backup_of_two_paths_restores_both() {
    let ws = Workspace::new();
    let one = ws.join("one");
    let two = ws.join("nested/two");
    small_tree(&TreeBuilder::new(&one), 51);
    small_tree(&TreeBuilder::new(&two), 52);
    let repo = ws.repo();
    repo.init();
    let (b, out) = repo.backup(&[&one, &two]);
    let snaps = repo.snapshots();
    let paths = snaps[0]["paths"].as_array().unwrap_or_else(|| panic!("no paths array\n{out}"));
    assert_eq!(paths.len(), 2, "{snaps:?}");
    let target = ws.join("out");
    let r = repo.restore(&b.short_id, &target);
    r.ok();
    assert_trees_equal(&one, &restored_path(&target, &one), CompareOpts { owner: true }, &r);
    assert_trees_equal(&two, &restored_path(&target, &two), CompareOpts { owner: true }, &r);
}

#[test]
fn non_utf8_file_names_roundtrip() {
    let ws = Workspace::new();
    let src = ws.join("src");
    let t = TreeBuilder::new(&src);
    t.file(os(b"latin1-caf\xe9.txt"), b"latin-1 name");
    t.file(os(b"dir-\xff\xfe/inner"), b"inner");
    t.symlink(os(b"link-\x80"), os(b"target-\x81"));
    t.stamp_mtimes(61);
    let repo = ws.repo();
    repo.init();
    repo.backup(&[&src]);
    let target = ws.join("out");
    let r = repo.restore("latest", &target);
    r.ok();
    assert_trees_equal(&src, &restored_path(&target, &src), CompareOpts { owner: true }, &r);
}

#[test]
fn small_stdin_stream_restores_to_dir_and_stdout() {
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.init();
    let data = DataGen::mixed(71, 256 * KIB).take(3 * MIB as usize + 5);
    let out = repo
        .cmd("backup")
        .args(["--stdin", "--stdin-name", "db.dump", "--json", "--tag", "s"])
        .stdin_bytes(data.clone())
        .run();
    out.ok();
    let b = BackupInfo::parse(&out);
    assert_eq!(b.logical_bytes, data.len() as u64, "{out}");
    let snaps = repo.snapshots();
    assert_eq!(snaps[0]["kind"], "stream", "{snaps:?}");
    assert_eq!(snaps[0]["stdin_name"], "db.dump", "{snaps:?}");

    let r = repo.cmd("restore").arg(&b.short_id).arg("--stdout").run();
    r.ok();
    assert!(
        r.stdout_raw == data,
        "restore --stdout returned {} bytes, differing from the {} bytes backed up\n{r}",
        r.stdout_raw.len(),
        data.len()
    );

    let target = ws.join("out");
    let r = repo.restore("latest", &target);
    r.ok();
    let got = fs::read(target.join("db.dump")).unwrap_or_else(|e| panic!("{e}\n{r}"));
    assert!(got == data, "restored D/NAME differs\n{r}");
}
