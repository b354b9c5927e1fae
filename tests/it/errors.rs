//! Error paths: unreadable sources (exit 7), full disk (exit 8), missing password (exit 4),
//! usage errors (exit 2), and the "error: / hint:" message format.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::harness::*;

fn require_root() {
    assert!(is_root(), "this test switches to the postgres user / mounts a tmpfs: it must run as root");
}

/// A workspace under /tmp owned by postgres, and postgres' uid/gid.
fn postgres_workspace() -> (Workspace, u32, u32) {
    require_root();
    let (uid, gid) = user_ids("postgres");
    let ws = Workspace::new_public();
    std::os::unix::fs::chown(ws.path(), Some(uid), Some(gid)).unwrap();
    (ws, uid, gid)
}

fn as_pg(d: Drctl, ws: &Workspace, uid: u32, gid: u32) -> Drctl {
    d.user(uid, gid, ws.path())
}

/// Can `uid` read `p`? (Sanity check of the test premise.)
fn readable_by(p: &Path, uid: u32, gid: u32) -> bool {
    use std::os::unix::process::CommandExt;
    let cmd = if p.is_dir() { "ls" } else { "cat" };
    Command::new(cmd)
        .arg(p)
        .uid(uid)
        .gid(gid)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn unreadable_case(make_unreadable: &dyn Fn(&TreeBuilder) -> std::path::PathBuf) {
    let (ws, uid, gid) = postgres_workspace();
    let src = ws.join("src");
    let t = TreeBuilder::new(&src);
    t.file_gen("a-first.bin", &mut DataGen::random(1), 2 * MIB);
    for i in 0..20 {
        t.file(format!("d/f{i}.txt"), &DataGen::text(i).take(3000));
    }
    t.file_gen("z-last.bin", &mut DataGen::random(2), 2 * MIB);
    chown_r(&src, uid, gid);
    let repo = ws.repo();
    let pg = |d: Drctl| as_pg(d, &ws, uid, gid);

    let init = pg(repo.cmd("init")).run();
    init.ok();
    let first = pg(repo.backup_cmd(&[&src])).run();
    first.ok();

    // New data (so a backup that writes before failing would change the repository) and an
    // unreadable entry in the middle of the tree.
    t.file_gen("m-new.bin", &mut DataGen::random(3), 2 * MIB);
    t.file_gen("y-new.bin", &mut DataGen::random(4), 2 * MIB);
    chown_r(&src, uid, gid);
    let bad = make_unreadable(&t);
    assert!(!readable_by(&bad, uid, gid), "premise: {} should be unreadable by postgres", bad.display());
    assert!(readable_by(&t.path("a-first.bin"), uid, gid));

    let before = repo.file_set();
    let o = pg(repo.backup_cmd(&[&src])).run();
    o.code_is(7);
    o.stderr_mentions(&bad.to_string_lossy(), "the unreadable path");
    let after = repo.file_set();
    if before != after {
        let added: Vec<_> = after.keys().filter(|k| !before.contains_key(*k)).collect();
        let removed: Vec<_> = before.keys().filter(|k| !after.contains_key(*k)).collect();
        panic!("failed backup changed the repository: added {added:?}, removed {removed:?}\n{o}");
    }
    let s = pg(repo.cmd("snapshots").arg("--json")).run();
    s.ok();
    assert_eq!(s.json().as_array().map(|a| a.len()), Some(1), "{s}");
    pg(repo.cmd("check")).run().ok();
}

#[test]
fn unreadable_source_file_exits_7_and_leaves_repository_unchanged() {
    unreadable_case(&|t| {
        let p = t.file("m-secret.txt", b"top secret");
        std::os::unix::fs::chown(&p, Some(0), Some(0)).unwrap();
        t.chmod("m-secret.txt", 0o000);
        p
    });
}

#[test]
fn unreadable_source_directory_exits_7_and_leaves_repository_unchanged() {
    unreadable_case(&|t| {
        t.file("m-locked/inner.txt", b"inside");
        let p = t.path("m-locked");
        std::os::unix::fs::chown(&p, Some(0), Some(0)).unwrap();
        t.chmod("m-locked", 0o000);
        p
    });
}

#[test]
fn disk_full_exits_8_and_repository_stays_sound() {
    require_root();
    let ws = Workspace::new();
    let mnt = ws.join("mnt");
    let _mount = MountGuard::tmpfs(&mnt, "16m");
    let repo = Repo::new(mnt.join("repo"));
    repo.init();

    let small = TreeBuilder::new(ws.join("small"));
    small.file("a.txt", b"small first snapshot");
    small.file_gen("b.bin", &mut DataGen::random(1), 200 * KIB);
    small.stamp_mtimes(1);
    let (first, _) = repo.backup(&[&small.root]);

    let big = TreeBuilder::new(ws.join("big"));
    big.file_gen("random.bin", &mut DataGen::random(2), 64 * MIB);
    let o = repo.backup_cmd(&[&big.root]).run();
    o.code_is(8);
    o.stderr_mentions("no space", "that the disk is full");

    let c = repo.check(false);
    c.ok();
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 1, "failed backup left a snapshot: {snaps:?}\n{o}");
    assert_eq!(snaps[0]["id"], first.id.as_str());
    let target = ws.join("out");
    let r = repo.restore(&first.id, &target);
    r.ok();
    assert_trees_equal(&small.root, &restored_path(&target, &small.root), CompareOpts { owner: true }, &r);
}

#[test]
fn missing_password_without_tty_exits_4() {
    let ws = Workspace::new();
    let src = TreeBuilder::new(ws.join("src"));
    src.file("a.txt", b"a");
    let repo = ws.repo();
    repo.init();
    repo.backup(&[&src.root]);
    let before = repo.file_set();
    repo.cmd("snapshots").no_password().run().code_is(4);
    repo.cmd("check").no_password().run().code_is(4);
    repo.backup_cmd(&[&src.root]).no_password().run().code_is(4);
    let out = ws.mkdir("out");
    repo.restore_cmd("latest", &out.join("r")).no_password().run().code_is(4);
    assert!(dir_entries(&out).is_empty());
    assert_eq!(repo.file_set(), before);

    let new_repo = ws.join("new-repo");
    let o = Drctl::sub("init", &new_repo).no_password().run();
    o.code_is(4);
    assert!(
        !new_repo.exists() || dir_entries(&new_repo).is_empty(),
        "init without a password left a repository behind\n{o}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.init();
    repo.cmd("snapshots").arg("--no-such-flag").run().code_is(2);
    Drctl::new().arg("no-such-command").run().code_is(2);
    repo.cmd("init").args(["--compression-level", "not-a-number"]).run().code_is(2);
    Drctl::new().args(["--log-format", "xml", "snapshots", "--repo"]).arg(&repo.path).run().code_is(2);
}

#[test]
fn errors_print_an_error_and_a_hint_line() {
    let ws = Workspace::new();
    let src = TreeBuilder::new(ws.join("src"));
    src.file("a.txt", b"a");
    let repo = ws.repo();
    repo.init();
    let (b, _) = repo.backup(&[&src.root]);
    let nonempty = TreeBuilder::new(ws.join("nonempty"));
    nonempty.file("x", b"x");
    let unknown = if b.id.starts_with("ffff") { "eeeeeeee" } else { "ffffffff" };
    let cases: Vec<(i32, Drctl)> = vec![
        (5, Drctl::sub("snapshots", &ws.join("missing"))),
        (5, repo.cmd("init")),
        (4, repo.cmd("snapshots").password("wrong")),
        (4, repo.cmd("snapshots").no_password()),
        (9, repo.restore_cmd("latest", &nonempty.root)),
        (10, repo.restore_cmd(unknown, &ws.join("r"))),
    ];
    for (code, d) in cases {
        let o = d.run();
        o.code_is(code);
        let lines: Vec<&str> = o.stderr.lines().collect();
        let e = lines.iter().position(|l| l.starts_with("error: "));
        let h = lines.iter().position(|l| l.starts_with("hint: "));
        match (e, h) {
            (Some(e), Some(h)) if h > e => {}
            _ => panic!("stderr should contain an 'error: <cause>' line followed by a 'hint: <what to do>' line\n{o}"),
        }
    }
    assert!(!ws.join("r").exists());
    assert_eq!(fs::read(nonempty.path("x")).unwrap(), b"x");
}
