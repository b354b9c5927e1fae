//! Locks, prune and the index under the conditions that used to lose data: a backup in another
//! PID namespace, an index file lost or damaged, leftovers of killed processes.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::moto::Moto;
use crate::harness::*;

fn wait_for_lock(repo: &Repo) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_dir_sorted(&repo.path.join("locks")).is_empty() {
        assert!(Instant::now() < deadline, "the backup never took its lock");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The backup runs in its own PID namespace (a container of the same pod: same host name, other
/// PIDs) under a pid that does not exist outside, and reuses chunks of a pack prune has marked.
/// `prune --grace 0s` from outside must neither take its lock for stale nor delete what it uses.
#[test]
fn a_backup_in_another_pid_namespace_keeps_its_lock_and_its_chunks() {
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.cmd("init").args(["--pack-size-mib", "1"]).run().ok();
    let data = DataGen::random(31).take(3 << 20);
    let stdin_backup =
        |data: Vec<u8>| repo.cmd("backup").args(["--stdin", "--stdin-name", "data.bin"]).stdin_bytes(data);
    stdin_backup(data.clone()).run().ok();
    std::thread::sleep(Duration::from_millis(1100)); // so that keep-last orders them for sure
    stdin_backup(b"something else".to_vec()).run().ok();
    repo.cmd("forget").args(["--keep-last", "1"]).run().ok();
    let marked = repo.cmd("prune").args(["--grace", "0s", "--json"]).run();
    assert!(json_u64(&marked.ok().json(), "bytes_marked", &marked) >= 3 << 20, "the first snapshot's packs are marked");

    // Inside the namespace the backup gets pid 4000001, above any pid_max outside.
    assert!(!std::path::Path::new("/proc/4000001").exists());
    let script = format!(
        "echo 4000000 > /proc/sys/kernel/ns_last_pid && {} backup --repo {} --stdin --stdin-name data.bin --json",
        drctl_bin(),
        repo.path.display()
    );
    let mut backup = Command::new("unshare")
        .args(["-p", "-f", "--mount-proc", "sh", "-c", &script])
        .env_remove("DRCTL_REPO")
        .env("DRCTL_PASSWORD", PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = backup.stdin.take().unwrap();
    stdin.write_all(&data[..2 << 20]).unwrap();
    wait_for_lock(&repo);

    let prune = repo.cmd("prune").args(["--grace", "0s"]).run();

    stdin.write_all(&data[2 << 20..]).unwrap();
    drop(stdin);
    let out = backup.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the backup in its namespace: {stderr}");
    assert!(!stderr.contains("stale"), "{stderr}");

    repo.check(true).ok().mentions("no damage found", "check --read-data after the backup");
    prune.code_is(6).stderr_mentions("locked", "a live backup's lock holds prune off");
    // Its chunks were stored again, not reused from the marked packs: deleting those is safe.
    repo.cmd("prune").args(["--grace", "0s"]).run().ok();
    repo.check(true).ok().mentions("no damage found", "check --read-data after prune");
    let restored = repo.cmd("restore").args(["latest", "--stdout"]).run();
    assert!(restored.ok().stdout_raw == data, "the snapshot restores byte for byte");
}

/// A backup whose lock vanished (taken for stale by someone else) writes no snapshot.
#[test]
fn a_backup_whose_lock_was_removed_writes_no_snapshot() {
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.init();
    let mut backup = repo.cmd("backup").args(["--stdin", "--stdin-name", "x.bin"]).stdin_piped().spawn();
    let mut stdin = backup.child.stdin.take().unwrap();
    stdin.write_all(&DataGen::random(5).take(1 << 20)).unwrap();
    wait_for_lock(&repo);
    for lock in read_dir_sorted(&repo.path.join("locks")) {
        std::fs::remove_file(lock).unwrap();
    }
    drop(stdin);
    backup.finish().code_is(6).stderr_mentions("own lock was removed", "the cause");
    assert!(repo.snapshot_files().is_empty(), "no snapshot was written");
}

/// An index file lost: prune must not take the packs it listed for unused while a kept snapshot
/// needs them, and `repair index` lists them again from their headers.
#[test]
fn prune_refuses_while_a_kept_snapshot_needs_a_pack_in_no_index_until_repair_index() {
    let ws = Workspace::new();
    let src = ws.mkdir("src");
    let tree = TreeBuilder::new(&src);
    let repo = ws.repo();
    repo.cmd("init").args(["--pack-size-mib", "1"]).run().ok();
    tree.file_gen("big.bin", &mut DataGen::random(41), 4 << 20);
    tree.file("note.txt", b"first\n");
    repo.backup(&[&src]);
    let first_index = repo.indexes();
    tree.file("note.txt", b"second\n");
    let (second, _) = repo.backup(&[&src]);
    assert!(second.stored_bytes < 1 << 20, "the second backup dedups the 4 MB file");
    assert_eq!(first_index.len(), 1);
    std::fs::remove_file(&first_index[0].path).unwrap();
    repo.cmd("forget").args(["--keep-last", "1"]).run().ok();

    for _ in 0..2 {
        repo.cmd("prune")
            .args(["--grace", "0s"])
            .run()
            .code_is(3)
            .stderr_mentions("in no index", "the cause")
            .stderr_mentions("drctl repair index", "the fix");
    }
    Drctl::new().args(["repair", "index", "--repo"]).arg(&repo.path).run().ok().mentions("indexed again", "the report");
    repo.cmd("prune").args(["--grace", "0s"]).run().ok();
    repo.cmd("prune").args(["--grace", "0s"]).run().ok();
    repo.check(true).ok().mentions("no damage found", "check --read-data");
    let out = ws.join("restored");
    repo.restore("latest", &out).ok();
    assert_trees_equal(&src, &restored_path(&out, &src), CompareOpts { owner: true }, &"after repair and prune");
}

/// One damaged index file costs deduplication, not backups: what it lists is stored again.
#[test]
fn a_damaged_index_file_does_not_stop_backups() {
    let ws = Workspace::new();
    let src = ws.mkdir("src");
    let tree = TreeBuilder::new(&src);
    tree.file_gen("data.bin", &mut DataGen::random(51), 1 << 20);
    let repo = ws.repo();
    repo.init();
    repo.backup(&[&src]);
    let index = repo.indexes().remove(0);
    let mut bytes = std::fs::read(&index.path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&index.path, bytes).unwrap();

    let (b, out) = repo.backup(&[&src]);
    out.stderr_mentions(&format!("index file {}", index.id), "the warning names the damaged file");
    assert!(b.stored_bytes >= 1 << 20, "what the damaged file listed is stored again\n{out}");
    let restored = ws.join("restored");
    repo.restore(&b.id, &restored).ok();
    assert_trees_equal(&src, &restored_path(&restored, &src), CompareOpts { owner: true }, &"after a damaged index");
    repo.check(false).code_is(3).mentions(&format!("index {}", index.id), "check reports the damage");
    Drctl::new()
        .args(["repair", "index", "--repo"])
        .arg(&repo.path)
        .run()
        .ok()
        .mentions("1 damaged index files removed", "the repair");
    repo.check(true).ok().mentions("no damage found", "check after repair index");
}

/// Temporary files of killed processes go once older than the grace period; fresh ones stay.
#[test]
fn prune_removes_old_temporary_files_only() {
    let ws = Workspace::new();
    let src = ws.mkdir("src");
    TreeBuilder::new(&src).file("a.txt", b"a\n");
    let repo = ws.repo();
    repo.init();
    repo.backup(&[&src]);
    let old = repo.path.join("index/.tmp-0123456789abcdef");
    let old_pack = repo.path.join("packs/.tmp-fedcba9876543210");
    let fresh = repo.path.join("snapshots/.tmp-00112233445566ff");
    for p in [&old, &old_pack, &fresh] {
        std::fs::write(p, b"partial").unwrap();
    }
    let two_hours_ago = chrono::Utc::now().timestamp() - 7200;
    set_mtime_nofollow(&old, two_hours_ago, 0);
    set_mtime_nofollow(&old_pack, two_hours_ago, 0);
    repo.cmd("prune").args(["--grace", "1h"]).run().ok().mentions("removed 2 leftovers", "the report");
    assert!(!old.exists() && !old_pack.exists(), "old temporary files are gone");
    assert!(fresh.exists(), "a fresh one may be a write in progress");
    repo.check(true).ok();
}

/// An incomplete multipart upload (its process killed) is aborted once older than the grace
/// period. moto reports every upload as initiated in 2010, so only the abort and its scope (the
/// repository's prefix) are checked here; the age rule is checked on a local store above.
#[test]
fn prune_aborts_abandoned_multipart_uploads_on_s3() {
    let moto = Moto::start("uploads");
    let repo = ["--repo", "s3://uploads/app"];
    moto.drctl("init").args(repo).run().ok();
    let uploads = || {
        moto.python(
            "for u in client('s3').list_multipart_uploads(Bucket='uploads').get('Uploads', []): print(u['Key'])",
            &[],
        )
    };
    moto.python("client('s3').create_multipart_upload(Bucket='uploads', Key='app/packs/ab/abandoned')", &[]);
    moto.python("client('s3').create_multipart_upload(Bucket='uploads', Key='elsewhere/not-ours')", &[]);
    moto.drctl("prune").args(repo).args(["--grace", "0s"]).run().ok().mentions("removed 1 leftovers", "the report");
    assert_eq!(uploads(), "elsewhere/not-ours", "only the repository's own upload is aborted");
}
