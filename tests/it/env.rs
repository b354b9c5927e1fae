//! DRCTL_REPO and DRCTL_PASSWORD_FILE instead of flags.

use std::fs;

use crate::harness::*;

#[test]
fn drctl_repo_and_password_file_replace_flags() {
    let ws = Workspace::new();
    let src = TreeBuilder::new(ws.join("src"));
    src.file("a.txt", b"hello env");
    src.file_gen("b.bin", &mut DataGen::mixed(1, 64 * KIB), 300 * KIB);
    src.symlink("l", "a.txt");
    src.stamp_mtimes(9);
    let repo = ws.join("repo");
    let pwfile = ws.join("pass.txt");
    // First line is the passphrase; the rest is ignored.
    fs::write(&pwfile, "file passphrase 1\nsecond line is not part of it\n").unwrap();

    let env = |d: Drctl| d.no_password().env("DRCTL_REPO", &repo).env("DRCTL_PASSWORD_FILE", &pwfile);

    env(Drctl::new().arg("init")).run().ok();
    assert!(repo.join("config").is_file(), "init with DRCTL_REPO did not create {}", repo.display());
    let o = env(Drctl::new().args(["backup", "--json", "--path"]).arg(&src.root)).run();
    o.ok();
    let b = BackupInfo::parse(&o);
    let s = env(Drctl::new().args(["snapshots", "--json"])).run();
    s.ok();
    assert_eq!(s.json()[0]["id"], b.id.as_str(), "{s}");
    env(Drctl::new().arg("check")).run().ok();
    let target = ws.join("out");
    let r = env(Drctl::new().args(["restore", "latest", "--to"]).arg(&target)).run();
    r.ok();
    assert_trees_equal(&src.root, &restored_path(&target, &src.root), CompareOpts { owner: true }, &r);

    // The passphrase is exactly the first line (without its newline): DRCTL_PASSWORD with it works.
    Drctl::sub("snapshots", &repo).password("file passphrase 1").run().ok();
    // A password file with another passphrase is refused: the file is really used.
    let wrong = ws.join("wrong.txt");
    fs::write(&wrong, "not it\n").unwrap();
    Drctl::new()
        .no_password()
        .env("DRCTL_REPO", &repo)
        .env("DRCTL_PASSWORD_FILE", &wrong)
        .arg("snapshots")
        .run()
        .code_is(4);
    // A file without a trailing newline works too.
    let bare = ws.join("bare.txt");
    fs::write(&bare, "file passphrase 1").unwrap();
    Drctl::new().no_password().env("DRCTL_REPO", &repo).env("DRCTL_PASSWORD_FILE", &bare).arg("snapshots").run().ok();
}

#[test]
fn drctl_repo_env_with_password_env() {
    let ws = Workspace::new();
    let repo = ws.join("repo");
    let src = TreeBuilder::new(ws.join("src"));
    src.file("x", b"x");
    Drctl::new().env("DRCTL_REPO", &repo).arg("init").run().ok();
    let o = Drctl::new().env("DRCTL_REPO", &repo).args(["backup", "--path"]).arg(&src.root).run();
    o.ok();
    let snaps = Repo::new(&repo).snapshots();
    assert_eq!(snaps.len(), 1, "{o}");
    // Human output (no --json) says "snapshot <short_id> saved".
    let short = snaps[0]["short_id"].as_str().unwrap_or_default().to_string();
    o.mentions(&format!("snapshot {short} saved"), "the saved snapshot line");
    // Without --repo and without DRCTL_REPO: a usage error or a repository error, not success.
    let o = Drctl::new().arg("snapshots").run();
    assert!(matches!(o.code, Some(2) | Some(5)), "snapshots without any repository should fail with 2 or 5\n{o}");
}
