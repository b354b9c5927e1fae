//! Edge cases found in review: restoring into an existing empty directory (a mount point),
//! sparse files, read-only repositories, times beyond 2262, a source swapped for a symlink,
//! and a closed stdout.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::harness::*;

#[test]
fn restore_into_an_existing_empty_directory_keeps_it() {
    let ws = Workspace::new();
    let src = TreeBuilder::new(ws.join("src"));
    src.file("a.txt", b"into an existing directory");
    let repo = ws.repo();
    repo.init();
    repo.backup(&[&src.root]);
    let target = ws.mkdir("mnt");
    fs::set_permissions(&target, fs::Permissions::from_mode(0o751)).unwrap();
    let out = repo.restore("latest", &target);
    out.ok();
    assert_eq!(fs::metadata(&target).unwrap().permissions().mode() & 0o7777, 0o751, "the target keeps its mode");
    assert_eq!(fs::read(restored_path(&target, &src.root).join("a.txt")).unwrap(), b"into an existing directory");
    let leftovers: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "no staging folder is left: {leftovers:?}");
}

#[test]
fn sparse_files_are_restored_sparse_and_exact() {
    let ws = Workspace::new();
    let src = ws.mkdir("src");
    let sparse = src.join("sparse.img");
    let file = fs::File::create(&sparse).unwrap();
    file.set_len(256 * MIB).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"data in the middle", 100 * MIB).unwrap();
    drop(file);
    let repo = ws.repo();
    repo.init();
    repo.backup(&[&src]);
    let target = ws.join("out");
    repo.restore("latest", &target).ok();
    let restored = restored_path(&target, &src).join("sparse.img");
    assert!(fs::read(&restored).unwrap() == fs::read(&sparse).unwrap(), "contents are identical");
    let allocated = fs::metadata(&restored).unwrap().blocks() * 512;
    assert!(allocated < 16 * MIB, "a 256 MiB sparse file took {allocated} bytes on disk");
}

#[test]
fn a_read_only_repository_can_be_restored_and_checked() {
    let ws = Workspace::new_public();
    let src = TreeBuilder::new(ws.join("src"));
    src.file("a.txt", b"read-only media");
    let repo = ws.repo();
    repo.init();
    repo.backup(&[&src.root]);
    // The repository stays root's, opened for reading to others as an operator sharing it
    // read-only would (drctl makes it 0700/0600); the restore runs as postgres.
    std::process::Command::new("chmod").arg("-R").arg("go+rX").arg(&repo.path).status().unwrap();
    let (uid, gid) = user_ids("postgres");
    let mine = ws.mkdir("mine");
    std::os::unix::fs::chown(&mine, Some(uid), Some(gid)).unwrap();
    let target = mine.join("out");
    let run = |d: Drctl| d.user(uid, gid, ws.path()).run();
    let out = run(repo.restore_cmd("latest", &target));
    out.ok().stderr_mentions("without a lock", "the warning");
    assert_eq!(fs::read(restored_path(&target, &src.root).join("a.txt")).unwrap(), b"read-only media");
    run(repo.cmd("check").arg("--read-data")).ok();
}

#[test]
fn times_outside_the_nanosecond_range_survive() {
    let ws = Workspace::new();
    let src = TreeBuilder::new(ws.join("src"));
    src.file("future.txt", b"2300");
    src.file("past.txt", b"1600");
    src.set_mtime("future.txt", 10_413_792_000, 5); // 2300-01-01
    src.set_mtime("past.txt", -11_676_096_000, 7); // 1600-01-01
    let repo = ws.repo();
    repo.init();
    repo.backup(&[&src.root]);
    let target = ws.join("out");
    let out = repo.restore("latest", &target);
    out.ok();
    assert_trees_equal(&src.root, &restored_path(&target, &src.root), CompareOpts { owner: true }, &out);
}

#[test]
fn a_closed_stdout_is_not_a_crash() {
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.init();
    for _ in 0..3 {
        repo.cmd("backup").args(["--stdin", "--stdin-name", "x"]).stdin_bytes(b"x".to_vec()).run().ok();
    }
    let cmd = format!(
        "DRCTL_PASSWORD='{PASSWORD}' {} snapshots --repo {} | head -c 1 >/dev/null; echo \"${{PIPESTATUS[0]}}\"",
        drctl_bin(),
        repo.path.display()
    );
    let out = std::process::Command::new("bash").arg("-c").arg(&cmd).output().unwrap();
    let status = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(status == "0" || status == "141", "drctl exits quietly (0 or SIGPIPE), got {status}: {out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{out:?}");
}
