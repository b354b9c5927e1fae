//! Repository hygiene against careless and hostile users: private file modes, empty passphrases,
//! planted key slots, credentials in printed URLs, and messages that say what is true.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::harness::*;

/// Every file of a local repository is 0600 and every folder 0700 (key slots are not readable
/// by other users for offline guessing), and so is a local copy.
#[test]
fn local_repositories_and_their_copies_are_private() {
    let ws = Workspace::new();
    let src = TreeBuilder::new(ws.join("src"));
    src.file("a.txt", b"private data");
    let repo = ws.repo();
    repo.init();
    repo.backup(&[&src.root]);
    let copy = ws.join("copy");
    Drctl::new().arg("copy").arg("--from").arg(&repo.path).arg("--to").arg(&copy).arg("--all").run().ok();
    for root in [&repo.path, &copy] {
        let mut seen = 0;
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "folder {} has mode {mode:o}", dir.display());
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    stack.push(path);
                } else {
                    seen += 1;
                    let mode = meta.permissions().mode() & 0o777;
                    assert_eq!(mode, 0o600, "file {} has mode {mode:o}", path.display());
                }
            }
        }
        assert!(seen >= 4, "{} holds config, key slot, pack, index and snapshot", root.display());
    }
}

/// A repository named by a relative path is made where the command runs (the folder chain
/// down from the current directory).
#[test]
fn a_relative_repository_path_works() {
    let ws = Workspace::new();
    let src = TreeBuilder::new(ws.join("src"));
    src.file("a.txt", b"relative");
    let here = |d: Drctl| d.current_dir(ws.path()).run();
    here(Drctl::new().args(["init", "--repo", "backups/repo"])).ok();
    here(Drctl::new().args(["backup", "--repo", "backups/repo", "--path"]).arg(&src.root)).ok();
    assert_eq!(Repo::new(ws.join("backups/repo")).snapshots().len(), 1);
}

/// An empty passphrase (an unset Secret mounted as an empty file, `DRCTL_PASSWORD=`) is refused
/// with exit 4 at init, key add and unlock, and nothing is created.
#[test]
fn an_empty_passphrase_is_refused_everywhere() {
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.cmd("init").password("").run().code_is(4).stderr_mentions("empty", "init names the empty passphrase");
    assert!(!repo.path.join("config").exists(), "a refused init creates no repository");

    repo.init();
    let empty_file = ws.join("empty-pass");
    fs::write(&empty_file, "").unwrap();
    repo.cmd("snapshots")
        .no_password()
        .env("DRCTL_PASSWORD_FILE", &empty_file)
        .run()
        .code_is(4)
        .stderr_mentions("empty", "unlock names the empty passphrase");
    repo.cmd("snapshots").password("").run().code_is(4);
    let slots = fs::read_dir(repo.path.join("keys")).unwrap().count();
    Drctl::new()
        .args(["key", "add", "--repo"])
        .arg(&repo.path)
        .env("DRCTL_NEW_PASSWORD", "")
        .run()
        .code_is(4)
        .stderr_mentions("empty", "key add names the empty passphrase");
    assert_eq!(fs::read_dir(repo.path.join("keys")).unwrap().count(), slots, "no slot was added");
}

/// A planted key slot asking argon2 for 2^32-1 passes is skipped with a warning, not run: a
/// wrong passphrase fails at once and the right one opens.
#[test]
fn a_planted_slot_with_absurd_argon2_parameters_is_skipped() {
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.init();
    let keys = repo.path.join("keys");
    let real = fs::read_dir(&keys).unwrap().next().unwrap().unwrap().path();
    let mut slot: serde_json::Value = serde_json::from_slice(&fs::read(&real).unwrap()).unwrap();
    slot["kdf"]["iterations"] = 4_294_967_295u32.into();
    let planted = keys.join("f".repeat(64));
    fs::write(&planted, serde_json::to_vec_pretty(&slot).unwrap()).unwrap();

    let started = Instant::now();
    repo.cmd("snapshots")
        .password("not the passphrase")
        .timeout(Duration::from_secs(60))
        .run()
        .code_is(4)
        .stderr_mentions("4294967295 passes", "the planted slot is named in a warning");
    assert!(started.elapsed() < Duration::from_secs(20), "the planted slot was run: {:?}", started.elapsed());
    repo.cmd("snapshots").timeout(Duration::from_secs(60)).run().ok();
}

/// A Pushgateway URL with credentials never shows them when a push fails.
#[test]
fn credentials_in_a_pushgateway_url_are_not_printed() {
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.init();
    let src = TreeBuilder::new(ws.join("etc"));
    src.file("app.conf", b"x");
    let policy = ws.join("p.yaml");
    fs::write(
        &policy,
        format!(
            "name: hygiene\nkind: self-managed\ndatabase:\n  dsn: \"host=127.0.0.1 port=1 user=postgres\"\n\
             sources:\n  dump:\n    type: logical-dump\n    databases: [app]\n    schedule: \"0 3 * * *\"\n\
             \x20 config:\n    type: config-snapshot\n    paths: [{}]\n    schedule: \"0 4 * * *\"\n\
             repositories:\n  primary:\n    location: {}\n    password_env: DRCTL_PASSWORD\n\
             retention:\n  keep_last: 2\ntargets:\n  rto: 1h\n  rpo: 1d\n",
            src.root.display(),
            repo.path.display()
        ),
    )
    .unwrap();
    Drctl::new().args(["policy", "validate"]).arg(&policy).run().ok();
    // The database is unreachable (the dump fails): the metrics of a failed job are pushed all
    // the same.
    let out = Drctl::new()
        .args(["backup", "--policy"])
        .arg(&policy)
        .args(["--pushgateway", "http://ops:hunter2-secret@127.0.0.1:9/"])
        .run();
    let all = out.all();
    assert!(all.contains("cannot push metrics"), "the failed push is reported:\n{out}");
    assert!(!all.contains("hunter2-secret"), "the Pushgateway password was printed:\n{out}");
}

/// Messages say what is true: a short prefix is too short (not "no match"), a copy into a
/// non-empty folder is not told to `init`, and `key add` onto an existing file names the file.
#[test]
fn messages_name_the_real_cause() {
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.init();
    let src = TreeBuilder::new(ws.join("src"));
    src.file("a", b"a");
    let (snap, _) = repo.backup(&[&src.root]);
    let out = repo.restore_cmd(&snap.id[..2], &ws.join("out")).run();
    out.code_is(2).stderr_mentions("at least 4", "a two-character prefix is too short");

    let busy = ws.mkdir("busy");
    fs::write(busy.join("something"), b"x").unwrap();
    let out = Drctl::new().arg("copy").arg("--from").arg(&repo.path).arg("--to").arg(&busy).arg("--all").run();
    out.code_is(5);
    assert!(!out.all().contains("drctl init"), "a copy target is not made with init:\n{out}");
    out.stderr_mentions("--to", "the hint names the copy's target");

    let existing = ws.join("existing.key");
    fs::write(&existing, b"x").unwrap();
    let out = Drctl::new().args(["key", "add", "--repo"]).arg(&repo.path).arg("--new-key-file").arg(&existing).run();
    out.code_is(2);
    assert!(!out.all().contains("drctl help"), "the hint is about the file, not the usage:\n{out}");
    out.stderr_mentions(&existing.display().to_string(), "the hint names the existing file");
}
