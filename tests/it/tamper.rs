//! Damaged repositories: every kind of tampering is detected by `check --read-data` (exit 3,
//! naming the damaged object and the snapshots that depend on it) and no affected snapshot is
//! silently restored. Also: wrong passphrase, newer format version, non-repositories.

use std::fs;
use std::path::{Path, PathBuf};

use crate::harness::*;

/// A fresh repository with two snapshots: A (the base tree) and B (the base tree plus a new
/// 3 MiB file). B shares all of A's data, so damage to a pack written by backup A affects both
/// snapshots; packs written by backup B are used by B only.
struct Fixture {
    ws: Workspace,
    src: PathBuf,
    repo: Repo,
    a: BackupInfo,
    b: BackupInfo,
    scan_a: Scan,
    scan_b: Scan,
    /// Packs / index files present after backup A.
    packs_a: Vec<Obj>,
    idx_a: Vec<Obj>,
    /// Packs / index files added by backup B.
    packs_b: Vec<Obj>,
    idx_b: Vec<Obj>,
    /// Empty directory that receives restore targets.
    out: PathBuf,
}

fn fixture(seed: u64) -> Fixture {
    let ws = Workspace::new();
    let src = ws.join("src");
    let t = TreeBuilder::new(&src);
    t.file_gen("data.bin", &mut DataGen::random(seed), 3 * MIB);
    t.file_gen("text.txt", &mut DataGen::text(seed + 1), 2 * MIB);
    let mut rng = Rng::new(seed);
    for i in 0..30 {
        let n = rng.range(0, 10_000) as usize;
        t.file(format!("d{}/f{i}", i % 3), &DataGen::text(rng.next_u64()).take(n));
    }
    t.symlink("link", "text.txt");
    t.stamp_mtimes(seed);
    let scan_a = scan(&src);

    let repo = ws.repo();
    repo.init();
    let (a, out_a) = repo.backup(&[&src]);
    let packs_a = repo.packs();
    let idx_a = repo.indexes();

    t.file_gen("extra/new.bin", &mut DataGen::random(seed + 2), 3 * MIB);
    t.stamp_mtimes(seed + 3);
    let scan_b = scan(&src);
    let (b, out_b) = repo.backup(&[&src]);
    let packs_b: Vec<Obj> = repo.packs().into_iter().filter(|p| !packs_a.iter().any(|q| q.id == p.id)).collect();
    let idx_b: Vec<Obj> = repo.indexes().into_iter().filter(|p| !idx_a.iter().any(|q| q.id == p.id)).collect();
    assert!(!packs_a.is_empty(), "backup A wrote no pack under {}/packs/xx/\n{out_a}", repo.path.display());
    assert!(!packs_b.is_empty(), "backup B (3 MiB of new data) wrote no new pack\n{out_b}");
    for p in packs_a.iter().chain(&packs_b) {
        assert!(
            p.id.len() == 64 && p.id.bytes().all(|c| c.is_ascii_hexdigit()),
            "pack file name is not a 64-hex id: {}",
            p.path.display()
        );
        assert_eq!(
            p.path.parent().unwrap().file_name().unwrap().to_string_lossy(),
            &p.id[..2],
            "pack not under packs/<2 hex>/"
        );
    }
    // Baseline: the undamaged repository is sound, so the exit 3 below is due to the damage.
    repo.check(false).ok();
    repo.check(true).ok();
    let out = ws.mkdir("out");
    Fixture { ws, src, repo, a, b, scan_a, scan_b, packs_a, idx_a, packs_b, idx_b, out }
}

fn largest(v: &[Obj]) -> &Obj {
    v.iter().max_by_key(|o| o.size).unwrap()
}

impl Fixture {
    /// `check` must exit with `code` and mention every needle.
    #[track_caller]
    fn check_reports(&self, read_data: bool, code: i32, needles: &[(&str, &str)]) -> Output {
        let c = self.repo.check(read_data);
        c.code_is(code);
        for (needle, what) in needles {
            c.mentions(needle, what);
        }
        c
    }

    /// Restoring `snap` must fail with `code`, leaving neither the target nor a staging
    /// directory behind.
    #[track_caller]
    fn restore_fails(&self, snap: &BackupInfo, code: i32) {
        let target = self.out.join(format!("r-{}", snap.short_id));
        let r = self.repo.restore(&snap.id, &target);
        r.code_is(code);
        if let Ok(rd) = fs::read_dir(&target) {
            let n = rd.count();
            assert_eq!(n, 0, "failed restore left {n} entries in the target {}\n{r}", target.display());
        }
        let left = dir_entries(&self.out);
        assert!(left.is_empty(), "failed restore left {left:?} in {}\n{r}", self.out.display());
    }

    /// Restoring `snap` must succeed and reproduce `expected`.
    #[track_caller]
    fn restore_ok(&self, snap: &BackupInfo, expected: &Scan) {
        let target = self.ws.join(format!("ok-{}", snap.short_id));
        let r = self.repo.restore(&snap.id, &target);
        r.ok();
        assert_tree_matches(expected, &restored_path(&target, &self.src), CompareOpts { owner: true }, &r);
    }

    fn snaps_named(&self) -> [(&str, &str); 2] {
        [(&self.a.short_id, "dependent snapshot A"), (&self.b.short_id, "dependent snapshot B")]
    }
}

#[test]
fn tamper_flip_byte_in_shared_pack() {
    let f = fixture(1000);
    let p = largest(&f.packs_a);
    flip_byte(&p.path, p.size / 2);
    let [sa, sb] = f.snaps_named();
    f.check_reports(true, 3, &[(p.prefix(), "damaged pack id"), sa, sb]);
    f.restore_fails(&f.a, 3);
    // B shares the pack, but the flipped chunk may be one only A needs (A's tree chunks live
    // there too, and the layout depends on sealing order): B then restores, and exactly.
    let target = f.ws.join("maybe-b");
    let r = f.repo.restore(&f.b.id, &target);
    if r.status.success() {
        assert_tree_matches(&f.scan_b, &restored_path(&target, &f.src), CompareOpts { owner: true }, &r);
    } else {
        r.code_is(3);
        assert!(!target.exists() || dir_entries(&target).is_empty(), "a failed restore leaves nothing\n{r}");
    }
}

#[test]
fn tamper_flip_byte_in_pack_used_only_by_second_snapshot() {
    let f = fixture(1100);
    let p = largest(&f.packs_b);
    flip_byte(&p.path, p.size / 2);
    let [_, sb] = f.snaps_named();
    f.check_reports(true, 3, &[(p.prefix(), "damaged pack id"), sb]);
    f.restore_fails(&f.b, 3);
    // A does not use that pack: it still restores.
    f.restore_ok(&f.a, &f.scan_a);
}

#[test]
fn tamper_truncate_pack() {
    let f = fixture(1200);
    let p = largest(&f.packs_a);
    let file = fs::OpenOptions::new().write(true).open(&p.path).unwrap();
    file.set_len(p.size / 2).unwrap();
    drop(file);
    let [sa, sb] = f.snaps_named();
    // Sizes are recorded in the index: plain check sees it without reading data.
    f.check_reports(false, 3, &[(p.prefix(), "truncated pack id")]);
    f.check_reports(true, 3, &[(p.prefix(), "truncated pack id"), sa, sb]);
    f.restore_fails(&f.a, 3);
    f.restore_fails(&f.b, 3);
}

#[test]
fn tamper_delete_pack() {
    let f = fixture(1300);
    let p = largest(&f.packs_a);
    fs::remove_file(&p.path).unwrap();
    let [sa, sb] = f.snaps_named();
    f.check_reports(false, 3, &[(p.prefix(), "missing pack id")]);
    f.check_reports(true, 3, &[(p.prefix(), "missing pack id"), sa, sb]);
    f.restore_fails(&f.a, 3);
    f.restore_fails(&f.b, 3);
}

#[test]
fn tamper_swap_two_packs() {
    let f = fixture(1400);
    let p = largest(&f.packs_a);
    let q = largest(&f.packs_b);
    let pb = fs::read(&p.path).unwrap();
    let qb = fs::read(&q.path).unwrap();
    assert_ne!(pb, qb);
    fs::write(&p.path, &qb).unwrap();
    fs::write(&q.path, &pb).unwrap();
    let [sa, sb] = f.snaps_named();
    f.check_reports(true, 3, &[(p.prefix(), "swapped pack id (A's)"), (q.prefix(), "swapped pack id (B's)"), sa, sb]);
    f.restore_fails(&f.a, 3);
    f.restore_fails(&f.b, 3);
}

#[test]
fn tamper_replace_index_file_with_another() {
    let f = fixture(1500);
    assert!(
        !f.idx_a.is_empty() && !f.idx_b.is_empty(),
        "expected one index file per backup under index/: after A {:?}, added by B {:?}",
        f.idx_a,
        f.idx_b
    );
    let victim = &f.idx_a[0];
    let other = &f.idx_b[0];
    fs::copy(&other.path, &victim.path).unwrap();
    let [sa, sb] = f.snaps_named();
    f.check_reports(true, 3, &[(victim.prefix(), "replaced index id"), sa, sb]);
    f.restore_fails(&f.a, 3);
    f.restore_fails(&f.b, 3);
}

#[test]
fn tamper_delete_index_files() {
    let f = fixture(1600);
    let all = f.repo.indexes();
    assert!(!all.is_empty(), "no index files under {}/index", f.repo.path.display());
    for i in &all {
        fs::remove_file(&i.path).unwrap();
    }
    // The deleted objects cannot be named from their absence alone; the snapshots whose data
    // became unreachable must be.
    let [sa, sb] = f.snaps_named();
    f.check_reports(true, 3, &[sa, sb]);
    f.restore_fails(&f.a, 3);
    f.restore_fails(&f.b, 3);
}

#[test]
fn tamper_edit_snapshot_manifest() {
    let f = fixture(1700);
    let manifest = f.repo.path.join("snapshots").join(&f.a.id);
    let size = fs::metadata(&manifest)
        .unwrap_or_else(|e| panic!("snapshot manifest {} not found: {e}", manifest.display()))
        .len();
    flip_byte(&manifest, size / 2);
    f.check_reports(true, 3, &[(&f.a.id[..8], "edited snapshot id")]);
    f.restore_fails(&f.a, 3);
    // B's manifest is intact and B's data too.
    f.restore_ok(&f.b, &f.scan_b);
}

#[test]
fn wrong_passphrase_exits_4_everywhere() {
    let f = fixture(1800);
    let before = f.repo.file_set();
    let c = f.repo.cmd("check").arg("--read-data").password("wrong passphrase").run();
    c.code_is(4);
    let s = f.repo.cmd("snapshots").password("wrong passphrase").run();
    s.code_is(4);
    let target = f.out.join("r");
    let r = f.repo.restore_cmd(&f.a.id, &target).password("wrong passphrase").run();
    r.code_is(4);
    assert!(dir_entries(&f.out).is_empty(), "restore with a wrong passphrase left files behind\n{r}");
    let b = f.repo.backup_cmd(&[&f.src]).password("wrong passphrase").run();
    b.code_is(4);
    assert_eq!(f.repo.file_set(), before, "commands with a wrong passphrase changed the repository\n{b}");
    // A passphrase that differs only by a trailing newline / space is wrong too.
    f.repo.cmd("snapshots").password(&format!("{PASSWORD} ")).run().code_is(4);
    // The right one still works.
    f.repo.cmd("snapshots").run().ok();
}

#[test]
fn newer_format_version_is_refused_with_exit_5() {
    let f = fixture(1900);
    let config = f.repo.path.join("config");
    let mut bytes = fs::read(&config).unwrap();
    assert!(
        bytes.len() > 4 && &bytes[..4] == b"DRC\x01",
        "config should start with the magic DRC and version byte 0x01, starts with {:?}",
        &bytes[..bytes.len().min(8)]
    );
    bytes[3] = 0x02;
    fs::write(&config, &bytes).unwrap();
    let before = f.repo.file_set();
    let target = f.out.join("r");
    let cmds: Vec<Drctl> = vec![
        f.repo.cmd("snapshots"),
        f.repo.cmd("snapshots").arg("--json"),
        f.repo.cmd("check"),
        f.repo.cmd("check").arg("--read-data"),
        f.repo.backup_cmd(&[&f.src]),
        f.repo.restore_cmd("latest", &target),
        f.repo.restore_cmd(&f.a.id, &target),
    ];
    for c in cmds {
        let o = c.run();
        o.code_is(5);
        o.stderr_mentions("version", "the format version");
        // "newer" in some wording: the word itself, the version number, or "upgrade drctl".
        let e = o.stderr.to_lowercase();
        assert!(
            e.contains("newer") || e.contains("version 2") || e.contains("upgrade"),
            "stderr should say that the repository format version is newer than supported\n{o}"
        );
    }
    assert!(dir_entries(&f.out).is_empty());
    assert_eq!(f.repo.file_set(), before, "commands on a newer-format repository changed it");
}

fn assert_not_a_repository(ws: &Workspace, dir: &Path) {
    let src = ws.join("src");
    let out = ws.join("out");
    let cmds: Vec<Drctl> = vec![
        Drctl::sub("snapshots", dir),
        Drctl::sub("snapshots", dir).arg("--json"),
        Drctl::sub("check", dir),
        Drctl::sub("check", dir).arg("--read-data"),
        Drctl::sub("backup", dir).arg("--path").arg(&src).arg("--json"),
        Drctl::sub("backup", dir).args(["--stdin", "--stdin-name", "x"]).stdin_bytes(b"data".to_vec()),
        Drctl::sub("restore", dir).args(["latest", "--to"]).arg(out.join("r")),
        Drctl::sub("restore", dir).args(["latest", "--stdout"]),
    ];
    for c in cmds {
        let o = c.run();
        o.code_is(5);
    }
    assert!(dir_entries(&out).is_empty(), "commands on a non-repository created restore output");
}

#[test]
fn repo_option_pointing_at_non_repositories_exits_5() {
    let ws = Workspace::new();
    small_src(&ws);
    ws.mkdir("out");

    let missing = ws.join("does-not-exist");
    assert_not_a_repository(&ws, &missing);
    assert!(!missing.exists(), "a command created the missing repository directory");

    let empty = ws.mkdir("empty");
    assert_not_a_repository(&ws, &empty);
    assert!(dir_entries(&empty).is_empty(), "a command wrote into the empty directory");

    let random = TreeBuilder::new(ws.join("random"));
    random.file("notes.txt", b"just some directory\n");
    random.file("data.bin", &DataGen::random(5).take(10_000));
    random.file("sub/x", b"x");
    random.stamp_mtimes(7);
    let before = scan(&random.root);
    assert_not_a_repository(&ws, &random.root);
    let d = diff_scans(&before, &scan(&random.root), CompareOpts { owner: true });
    assert!(d.is_empty(), "commands changed a random directory: {d:?}");
}

#[test]
fn repo_option_pointing_at_a_regular_file_exits_5() {
    let ws = Workspace::new();
    small_src(&ws);
    ws.mkdir("out");
    let file = ws.join("a-file");
    fs::write(&file, b"not a directory").unwrap();
    assert_not_a_repository(&ws, &file);
    assert_eq!(fs::read(&file).unwrap(), b"not a directory");
}

#[test]
fn repo_option_pointing_at_a_git_directory_exits_5() {
    // A realistic mistake: a directory that has a `config` file, but not a drctl one (no DRC
    // magic, no keys/): "not a drctl repository" (5), not "damaged" (3).
    let ws = Workspace::new();
    small_src(&ws);
    ws.mkdir("out");
    let git = TreeBuilder::new(ws.join("project/.git"));
    git.file("config", b"[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n");
    git.file("HEAD", b"ref: refs/heads/main\n");
    git.dir("objects/pack");
    git.dir("refs/heads");
    git.stamp_mtimes(8);
    let before = scan(&git.root);
    assert_not_a_repository(&ws, &git.root);
    let d = diff_scans(&before, &scan(&git.root), CompareOpts { owner: true });
    assert!(d.is_empty(), "commands changed the .git directory: {d:?}");
}

fn small_src(ws: &Workspace) -> PathBuf {
    let t = TreeBuilder::new(ws.join("src"));
    t.file("a.txt", b"hello");
    t.file_gen("b.bin", &mut DataGen::random(1), 100_000);
    t.root
}

#[test]
fn init_refuses_existing_repository_and_non_empty_directory_with_exit_5() {
    let ws = Workspace::new();
    let src = small_src(&ws);
    let repo = ws.repo();
    repo.init();
    let (a, _) = repo.backup(&[&src]);
    let before = repo.file_set();
    let o = repo.cmd("init").run();
    o.code_is(5);
    let o2 = repo.cmd("init").password("another passphrase").run();
    o2.code_is(5);
    assert_eq!(repo.file_set(), before, "init over an existing repository changed it\n{o}");
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["id"], a.id.as_str());

    let t = TreeBuilder::new(ws.join("nonempty"));
    t.file("precious.txt", b"keep me");
    t.stamp_mtimes(3);
    let before = scan(&t.root);
    let o = Drctl::sub("init", &t.root).run();
    o.code_is(5);
    let d = diff_scans(&before, &scan(&t.root), CompareOpts { owner: true });
    assert!(d.is_empty(), "init changed a non-empty directory: {d:?}\n{o}");

    // An empty existing directory is fine.
    let empty = ws.mkdir("empty");
    Drctl::sub("init", &empty).run().ok();
    Drctl::sub("snapshots", &empty).run().ok();
}
