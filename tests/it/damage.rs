//! One damaged object damages only what depends on it: a damaged snapshot manifest is skipped
//! (with a warning naming it) by listing, restore, PITR's choice and retention, reported by
//! `check` and removed by `repair snapshots`.

use std::path::PathBuf;

use crate::harness::*;

/// A repository with three snapshots of one changing tree; the newest manifest is damaged.
struct Fixture {
    ws: Workspace,
    repo: Repo,
    snaps: Vec<BackupInfo>,
    scans: Vec<Scan>,
    src: PathBuf,
}

fn three_snapshots_newest_damaged() -> Fixture {
    let ws = Workspace::new();
    let src = ws.join("src");
    let t = TreeBuilder::new(&src);
    let repo = ws.repo();
    repo.init();
    let (mut snaps, mut scans) = (Vec::new(), Vec::new());
    for i in 0..3u64 {
        t.file_gen("data.bin", &mut DataGen::mixed(i, 4096), 256 * KIB);
        t.file(format!("f{i}.txt"), format!("version {i}\n").as_bytes());
        t.stamp_mtimes(i);
        scans.push(scan(&src));
        snaps.push(repo.backup(&[&src]).0);
        // Manifests are ordered by time; keep the three apart.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let newest = repo.snapshot_files().into_iter().find(|o| o.id == snaps[2].id).expect("newest manifest");
    flip_byte(&newest.path, newest.size / 2);
    Fixture { ws, repo, snaps, scans, src }
}

#[test]
fn a_damaged_manifest_is_skipped_with_a_warning_and_repair_removes_it() {
    let f = three_snapshots_newest_damaged();
    let damaged = &f.snaps[2].short_id;

    let out = f.repo.cmd("snapshots").arg("--json").run();
    out.ok().stderr_mentions(damaged, "the skipped manifest");
    let listed: Vec<String> = match out.json() {
        serde_json::Value::Array(a) => a.iter().map(|s| json_str(s, "id", &out)).collect(),
        other => panic!("not an array: {other}"),
    };
    assert_eq!(listed, vec![f.snaps[0].id.clone(), f.snaps[1].id.clone()], "{out}");

    // `latest` is the newest snapshot that can be read.
    let to = f.ws.join("latest");
    f.repo.restore("latest", &to).ok().stderr_mentions(damaged, "the skipped manifest");
    assert_tree_matches(&f.scans[1], &restored_path(&to, &f.src), CompareOpts { owner: true }, &"restore latest");

    // PITR's choice looks past it too: no base backup here, so the answer is "out of reach", not damage.
    let out = f.repo.cmd("restore").args(["--point-in-time", "latest", "--to"]).arg(f.ws.join("pitr")).run();
    out.code_is(13).stderr_mentions(damaged, "the skipped manifest");

    // A damaged manifest is never counted as a kept snapshot: the newest readable one stays.
    let out = f.repo.cmd("forget").args(["--keep-last", "1"]).run();
    out.ok().stderr_mentions(damaged, "the skipped manifest");
    let left: Vec<String> = f.repo.snapshot_files().into_iter().map(|o| o.id).collect();
    assert!(!left.contains(&f.snaps[0].id), "forget kept the oldest\n{out}");
    assert!(left.contains(&f.snaps[1].id), "forget removed the newest readable snapshot\n{out}");
    assert!(left.contains(&f.snaps[2].id), "forget removed the damaged manifest, which only repair may do\n{out}");

    f.repo.check(false).code_is(3).mentions(&format!("snapshot {}", f.snaps[2].id), "the damaged manifest");
    let repair = || Drctl::new().args(["repair", "snapshots", "--repo"]).arg(&f.repo.path);
    let out = repair().arg("--dry-run").run();
    out.ok().mentions(&f.snaps[2].id, "the damaged manifest");
    assert_eq!(f.repo.snapshot_files().len(), 2, "a dry run removed something\n{out}");
    repair().run().ok().mentions("removed 1", "the count");
    let left: Vec<String> = f.repo.snapshot_files().into_iter().map(|o| o.id).collect();
    assert_eq!(left, vec![f.snaps[1].id.clone()]);
    f.repo.check(true).ok();
}

/// A tree backed up twice; the second backup adds `extra/new.bin`, whose data (first in the
/// pack that backup writes) is then damaged. Returns (workspace, repo, src, second snapshot,
/// scan at the second backup).
fn second_backup_with_damaged_new_file() -> (Workspace, Repo, PathBuf, BackupInfo, Scan) {
    let ws = Workspace::new();
    let src = ws.join("src");
    let t = TreeBuilder::new(&src);
    t.file_gen("big.bin", &mut DataGen::random(1), 2 * MIB);
    for i in 0..10 {
        t.file(format!("d/f{i}.txt"), &DataGen::text(i).take(3000));
    }
    t.stamp_mtimes(1);
    let repo = ws.repo();
    repo.init();
    repo.backup(&[&src]);
    let before = repo.packs();
    t.file_gen("extra/new.bin", &mut DataGen::random(2), 3 * MIB);
    t.stamp_mtimes(2);
    let expected = scan(&src);
    let (b, _) = repo.backup(&[&src]);
    let new_pack = repo.packs().into_iter().find(|p| !before.contains(p)).expect("the second backup wrote a pack");
    // The middle of the pack is new.bin's data whatever the order the seal workers finished in:
    // the small tree chunk may come first (new.bin is then often one chunk), and a flip in it
    // would damage the whole snapshot instead of one file.
    flip_byte(&new_pack.path, new_pack.size / 2);
    (ws, repo, src, b, expected)
}

#[test]
fn skip_damaged_restores_every_intact_file_and_exits_3() {
    let (ws, repo, src, b, mut expected) = second_backup_with_damaged_new_file();

    // Without the flag: nothing is left, and the message says so.
    let to = ws.join("strict");
    let out = repo.restore(&b.id, &to);
    out.code_is(3)
        .stderr_mentions("nothing unverified was restored", "what is true")
        .stderr_mentions("--skip-damaged", "the way to get the intact files");
    assert!(!to.exists(), "a failed restore left {}\n{out}", to.display());

    let to = ws.join("partial");
    let out = repo.restore_cmd(&b.id, &to).arg("--skip-damaged").run();
    out.code_is(3).mentions("not restored: ", "the list").mentions("new.bin", "the damaged file");
    let root = restored_path(&to, &src);
    assert!(!root.join("extra/new.bin").exists(), "a file with a damaged chunk was written\n{out}");
    expected.remove(std::path::Path::new("extra/new.bin"));
    assert_tree_matches(&expected, &root, CompareOpts { owner: true }, &out);
}

#[test]
fn check_and_restore_agree_on_a_pack_cut_in_its_trailer() {
    let ws = Workspace::new();
    let src = ws.join("src");
    let t = TreeBuilder::new(&src);
    t.file_gen("big.bin", &mut DataGen::random(3), MIB);
    t.file("small.txt", b"hello\n");
    t.stamp_mtimes(3);
    let expected = scan(&src);
    let repo = ws.repo();
    repo.init();
    let (a, _) = repo.backup(&[&src]);
    for pack in repo.packs() {
        let f = std::fs::OpenOptions::new().write(true).open(&pack.path).unwrap();
        f.set_len(pack.size - 2).unwrap();
    }

    // Every chunk is intact, so the snapshot restores byte for byte ...
    let to = ws.join("out");
    repo.restore(&a.id, &to).ok();
    assert_tree_matches(&expected, &restored_path(&to, &src), CompareOpts { owner: true }, &"restore");
    // ... and check says the pack is damaged but no snapshot is.
    for read_data in [false, true] {
        let out = repo.check(read_data);
        out.code_is(3).mentions("header was cut off", "what was lost");
        assert!(!out.stdout.contains("affects snapshots:"), "check blames a snapshot that restores\n{out}");
    }
}

#[test]
fn repair_snapshots_rewrites_a_snapshot_without_its_damaged_files() {
    let (ws, repo, src, b, mut expected) = second_backup_with_damaged_new_file();
    let repair = || Drctl::new().args(["repair", "snapshots", "--repo"]).arg(&repo.path);

    let out = repair().arg("--dry-run").run();
    out.ok().mentions("extra/new.bin", "the damaged file").mentions("would be rewritten", "the plan");
    assert_eq!(repo.snapshots().len(), 2, "a dry run wrote something\n{out}");

    let out = repair().arg("--forget").run();
    out.ok().mentions("rewritten without it", "the rewrite");
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 2, "expected the first snapshot and the repaired second\n{out}");
    assert!(!snaps.iter().any(|s| s["id"] == b.id.as_str()), "--forget kept the damaged original\n{out}");
    assert!(snaps[1]["tags"].as_array().unwrap().iter().any(|t| t == "repaired"), "not tagged\n{out}");

    // A second repair finds nothing left to rewrite; latest restores in full.
    repair().run().ok();
    assert_eq!(repo.snapshots().len(), 2);
    let to = ws.join("out");
    repo.restore("latest", &to).ok();
    expected.remove(std::path::Path::new("extra/new.bin"));
    assert_tree_matches(&expected, &restored_path(&to, &src), CompareOpts { owner: true }, &out);
}
