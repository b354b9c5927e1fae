//! Kill torture: `kill -9` at a random moment of every command that changes a repository (and of
//! restore), on a local and an S3 repository. After each kill: `check` passes (`--read-data`
//! at the end of each case), every snapshot that was not meant to go still restores bit-exact,
//! no WAL file a push reported archived is missing, and the same command run again succeeds
//! without hand work.
//!
//! Reproducible: `DRCTL_TEST_SEED` fixes the kill moments. The test suite runs
//! `DRCTL_TORTURE_KILLS` (default 3) kills per case; the full campaign is 25 per case, 350 in
//! all: `DRCTL_TORTURE_KILLS=25 cargo nextest run -E 'test(/torture::/)'`.
//! (The older crash.rs kills a large paths backup at calibrated moments.)

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::harness::moto::Moto;
use crate::harness::pg::{Cluster, archiving_primary};
use crate::harness::*;

fn kills() -> u64 {
    std::env::var("DRCTL_TORTURE_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(3)
}

/// The repository a case works on: a folder, or a prefix of a moto bucket.
enum Store {
    Local(PathBuf),
    S3(Rc<Moto>, String),
}

impl Store {
    fn new(kind: &str, ws: &Workspace, name: &str) -> Store {
        match kind {
            "s3" => {
                let moto = Moto::start("torture");
                Store::S3(Rc::new(moto), format!("s3://torture/{name}"))
            }
            _ => Store::Local(ws.join(name)),
        }
    }
    fn location(&self) -> String {
        match self {
            Store::Local(path) => path.display().to_string(),
            Store::S3(_, url) => url.clone(),
        }
    }
    /// drctl `command` (one or more words, "key rotate") on this repository.
    fn drctl(&self, command: &str) -> Drctl {
        self.bare(command).arg("--repo").arg(self.location())
    }
    /// drctl `command` with this store's settings but no `--repo` (`copy` names two).
    fn bare(&self, command: &str) -> Drctl {
        let mut words = command.split(' ');
        let first = words.next().expect("a command");
        let drctl = match self {
            Store::Local(_) => Drctl::new().arg(first),
            Store::S3(moto, _) => moto.drctl(first),
        };
        drctl.args(words)
    }
    /// Another repository in the same place (a copy's target).
    fn sibling(&self, name: &str) -> Store {
        match self {
            Store::Local(path) => Store::Local(path.with_file_name(name)),
            Store::S3(moto, _) => Store::S3(moto.clone(), format!("s3://torture/{name}")),
        }
    }
}

/// One case: a repository with snapshots whose sources are kept frozen, a random stream of kill
/// moments, and the checks run after every kill.
struct Case {
    name: String,
    ws: Workspace,
    store: Store,
    src: TreeBuilder,
    /// Snapshot id -> a frozen copy of what it backed up.
    frozen: BTreeMap<String, PathBuf>,
    /// Snapshot ids, oldest first.
    order: Vec<String>,
    rng: Rng,
    seed: u64,
    /// How long the command ran when it was last left to finish: kills land before that.
    typical: Duration,
    killed: u64,
    finished_first: u64,
    version: u64,
}

impl Case {
    fn new(name: &str, kind: &str) -> Case {
        let ws = Workspace::new();
        let store = Store::new(kind, &ws, "repo");
        store.drctl("init").args(["--pack-size-mib", "1"]).run().ok();
        let mut case = Case::on(name, ws, store);
        for i in 0..40 {
            case.src.file(format!("small/{i}.txt"), format!("file {i}\n").repeat(i + 1).as_bytes());
        }
        case.back_up();
        case
    }

    /// A case on a repository made elsewhere, with no snapshot yet.
    fn on(name: &str, ws: Workspace, store: Store) -> Case {
        let given = seed_from_env_or_time();
        let seed = given ^ blake3::hash(name.as_bytes()).as_bytes()[0] as u64;
        eprintln!("{name}: seed {seed} (rerun with DRCTL_TEST_SEED={given})");
        let src = TreeBuilder::new(ws.join("src"));
        Case {
            name: name.into(),
            ws,
            store,
            src,
            frozen: BTreeMap::new(),
            order: Vec::new(),
            rng: Rng::new(seed),
            seed,
            typical: Duration::from_millis(500),
            killed: 0,
            finished_first: 0,
            version: 0,
        }
    }

    /// Changes the source (a new 3 MiB file, another rewritten) and backs it up, unkilled.
    fn change_source(&mut self) {
        self.version += 1;
        let v = self.version;
        self.src.file_gen(format!("data/{v}.bin"), &mut DataGen::mixed(self.seed ^ v, 64 * KIB), 3 << 20);
        self.src.file_gen("data/rewritten.bin", &mut DataGen::random(self.seed.wrapping_add(v)), 2 << 20);
    }

    fn back_up(&mut self) -> String {
        self.change_source();
        let out = self.store.drctl("backup").arg("--json").arg("--path").arg(&self.src.root).run();
        let id = BackupInfo::parse(out.ok()).id;
        self.freeze(&id);
        id
    }

    fn freeze(&mut self, id: &str) {
        let frozen = self.ws.join(format!("frozen/{id}"));
        fs::create_dir_all(frozen.parent().unwrap()).unwrap();
        let st = Command::new("cp").arg("-a").arg(&self.src.root).arg(&frozen).status().unwrap();
        assert!(st.success());
        self.frozen.insert(id.to_string(), frozen);
        self.order.push(id.to_string());
    }

    /// Freezes the source for snapshots not seen before.
    fn freeze_new(&mut self) {
        for id in self.snapshot_ids() {
            if !self.frozen.contains_key(&id) {
                self.freeze(&id);
            }
        }
    }

    fn snapshot_ids(&self) -> Vec<String> {
        let out = self.store.drctl("snapshots").arg("--json").run();
        out.ok().json().as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
    }

    /// Kills a command at a random moment before it would have finished: `make` sets up what
    /// the command needs and returns it. A command that finished first is tried again with
    /// the moment drawn from half the time, up to five times, so every round kills one.
    fn kill_one(&mut self, mut make: impl FnMut(&mut Case) -> Drctl) {
        for attempt in 0..5 {
            let upper = ((self.typical.as_millis() as u64) >> attempt).max(5);
            let delay = Duration::from_millis(self.rng.range(0, upper));
            let command = make(self);
            let started = Instant::now();
            let mut running = command.spawn();
            std::thread::sleep(delay);
            running.kill9();
            let out = running.finish();
            // The signal can reach a process that had just exited: then it finished first.
            if out.signal == Some(libc::SIGKILL) {
                self.killed += 1;
                return;
            }
            out.ok();
            self.finished_first += 1;
            self.typical = started.elapsed();
        }
        panic!("{}: seed {}: the command finished before every kill", self.name, self.seed);
    }

    /// The checks after each kill: the repository is sound and `keep` restore bit-exact (one of
    /// them picked at random, all of them at the end of the case).
    fn assert_sound(&mut self, keep: &[String], all: bool) {
        let c = self.store.drctl("check").args(if all { &["--read-data"][..] } else { &[] }).run();
        assert!(c.code == Some(0), "{}: seed {}: check failed after a kill\n{c}", self.name, self.seed);
        let listed = self.snapshot_ids();
        for id in keep {
            assert!(listed.contains(id), "{}: seed {}: snapshot {id} is gone: {listed:?}", self.name, self.seed);
        }
        let picked: Vec<&String> = if all || keep.is_empty() {
            keep.iter().collect()
        } else {
            vec![&keep[self.rng.range(0, keep.len() as u64) as usize]]
        };
        for id in picked {
            let target = self.ws.join(format!("restored-{}", self.rng.range(0, u64::MAX)));
            let r = self.store.drctl("restore").args([id, "--to"]).arg(&target).run();
            r.ok();
            assert_trees_equal(
                &self.frozen[id],
                &restored_path(&target, &self.src.root),
                CompareOpts { owner: true },
                &r,
            );
            fs::remove_dir_all(&target).unwrap();
        }
    }

    fn done(mut self) {
        let keep = self.snapshot_ids();
        self.assert_sound(&keep, true);
        eprintln!("{}: {} kills hit the command, {} runs finished first", self.name, self.killed, self.finished_first);
    }
}

/// Kills backups of a changed source; every earlier snapshot stays whole.
fn backup(kind: &str) {
    let mut case = Case::new(&format!("backup-{kind}"), kind);
    for _ in 0..kills() {
        let before = case.order.clone();
        case.kill_one(|case| {
            // A backup that finished before its kill backed up the source as it is now.
            case.freeze_new();
            case.change_source();
            case.store.drctl("backup").arg("--json").arg("--path").arg(&case.src.root)
        });
        // So did one killed after its snapshot was written.
        case.freeze_new();
        case.assert_sound(&before, false);
        let out = case.store.drctl("backup").arg("--json").arg("--path").arg(&case.src.root).run();
        let id = BackupInfo::parse(out.ok()).id;
        case.freeze(&id);
    }
    case.done();
}

/// Kills `forget --keep-last 2` (with `prune`: `prune --grace 0s` after an unkilled forget):
/// the two newest snapshots stay whole, and the rerun leaves exactly them.
fn forget_or_prune(kind: &str, prune: bool) {
    let mut case = Case::new(&format!("{}-{kind}", if prune { "prune" } else { "forget" }), kind);
    let command = |case: &Case| match prune {
        true => case.store.drctl("prune").args(["--grace", "0s"]),
        false => case.store.drctl("forget").args(["--keep-last", "2"]),
    };
    for _ in 0..kills() {
        case.kill_one(|case| {
            case.back_up();
            case.back_up();
            if prune {
                case.store.drctl("forget").args(["--keep-last", "2"]).run().ok();
            }
            command(case)
        });
        let keep = case.order[case.order.len() - 2..].to_vec();
        case.assert_sound(&keep, false);
        command(&case).run().ok();
        let mut left = case.snapshot_ids();
        left.sort();
        let mut want = keep.clone();
        want.sort();
        assert_eq!(left, want, "{}: seed {}", case.name, case.seed);
    }
    case.done();
}

/// Kills `copy --all` into a second repository: the source is untouched, the target is always
/// sound, and after the rerun holds every snapshot, each restoring bit-exact.
fn copy(kind: &str) {
    let mut case = Case::new(&format!("copy-{kind}"), kind);
    let target = case.store.sibling("copy");
    let copy = |case: &Case| {
        let c = case.store.bare("copy").arg("--all").arg("--from").arg(case.store.location());
        c.arg("--to").arg(target.location())
    };
    for _ in 0..kills() {
        case.kill_one(|case| {
            case.back_up();
            copy(case)
        });
        let all = case.order.clone();
        case.assert_sound(&all, false);
        if target.drctl("snapshots").run().code == Some(0) {
            target.drctl("check").run().ok();
        }
        copy(&case).run().ok();
        let copied = target.drctl("snapshots").arg("--json").run().ok().json();
        assert_eq!(
            copied.as_array().unwrap().len(),
            all.len(),
            "{}: seed {}: the copy lacks snapshots",
            case.name,
            case.seed
        );
    }
    target.drctl("check").arg("--read-data").run().ok();
    for id in case.order.clone() {
        let to = case.ws.join(format!("from-copy-{id}"));
        let r = target.drctl("restore").args([&id, "--to"]).arg(&to).run();
        r.ok();
        assert_trees_equal(&case.frozen[&id], &restored_path(&to, &case.src.root), CompareOpts { owner: true }, &r);
    }
    case.done();
}

/// Kills `key rotate`: the repository opens with the old passphrase or the new one, never
/// neither; while the old one still opens it, the same rotation run again succeeds, and after
/// it only the new one opens the repository.
fn key_rotate(kind: &str) {
    let mut case = Case::new(&format!("key-rotate-{kind}"), kind);
    let opens = |case: &Case, p: &str| case.store.drctl("snapshots").password(p).run().code == Some(0);
    let rotate =
        |case: &Case, from: &str, to: &str| case.store.drctl("key rotate").password(from).env("DRCTL_NEW_PASSWORD", to);
    let mut current = PASSWORD.to_string();
    for i in 0..kills() {
        let mut next = String::new();
        case.kill_one(|case| {
            // A run that finished rotated: the next attempt starts from its passphrase.
            if !next.is_empty() {
                current = next.clone();
            }
            next = format!("passphrase {i}.{}", case.finished_first);
            rotate(case, &current, &next)
        });
        match (opens(&case, &current), opens(&case, &next)) {
            (true, _) => {
                rotate(&case, &current, &next).run().ok();
            }
            (false, true) => {}
            (false, false) => panic!("{}: seed {}: neither passphrase opens the repository", case.name, case.seed),
        }
        assert!(opens(&case, &next), "{}: seed {}: the new passphrase does not open it", case.name, case.seed);
        assert!(!opens(&case, &current), "{}: seed {}: the old passphrase still opens it", case.name, case.seed);
        let slots = case.store.drctl("key list").password(&next).arg("--json").run().ok().json();
        assert_eq!(slots.as_array().unwrap().len(), 1, "{}: seed {}: one slot: {slots}", case.name, case.seed);
        current = next;
    }
    case.store.drctl("check").arg("--read-data").password(&current).run().ok();
    eprintln!("{}: {} kills hit the command, {} runs finished first", case.name, case.killed, case.finished_first);
}

/// Kills restores into a new folder and into an existing empty one (a mount point): the
/// repository is untouched and the same restore run again is exact.
fn restore(kind: &str) {
    let mut case = Case::new(&format!("restore-{kind}"), kind);
    case.src.file_gen("data/big.bin", &mut DataGen::random(3), 24 << 20);
    let id = case.back_up();
    for i in 0..kills() {
        let mut target = PathBuf::new();
        case.kill_one(|case| {
            target = case.ws.join(format!("target-{i}-{}", case.finished_first));
            if i % 2 == 1 {
                fs::create_dir(&target).unwrap();
            }
            case.store.drctl("restore").args([&id, "--to"]).arg(&target)
        });
        case.assert_sound(std::slice::from_ref(&id), false);
        // Killed after it moved the finished tree into place, the restore is done: run again,
        // it refuses the full target (exit 9), which must then hold the whole snapshot.
        let r = case.store.drctl("restore").args([&id, "--to"]).arg(&target).run();
        if r.code != Some(9) {
            r.ok();
        }
        assert_trees_equal(&case.frozen[&id], &restored_path(&target, &case.src.root), CompareOpts { owner: true }, &r);
    }
    case.done();
}

/// Kills `wal-push --async` and its worker: a push run again reports the file archived, and
/// every file reported archived comes back exact.
fn wal_push_async(kind: &str) {
    let mut case = Case::new(&format!("wal-push-async-{kind}"), kind);
    let pg_wal = case.ws.mkdir("pg_wal");
    fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
    let spool = case.ws.join("spool");
    let kill_workers = || Command::new("pkill").args(["-9", "-f", &spool.display().to_string()]).status().unwrap();
    let mut archived: Vec<String> = Vec::new();
    let mut n = 0u64;
    for _ in 0..kills() {
        let mut name = String::new();
        case.kill_one(|case| {
            kill_workers();
            n += 1;
            name = format!("0000000100000000000000{n:02X}");
            let data: Vec<u8> = (0..1u64 << 20).map(|j| (j / 512 + n * 7) as u8).collect();
            fs::write(pg_wal.join(&name), data).unwrap();
            fs::write(pg_wal.join("archive_status").join(format!("{name}.ready")), b"").unwrap();
            case.store.drctl("wal-push").arg("--async").arg("--spool-dir").arg(&spool).arg(pg_wal.join(&name))
        });
        kill_workers();
        case.assert_sound(&[], false);
        // Every file PostgreSQL would have been told is archived: the ones whose push finished
        // (before a kill missed it, or now, run again).
        let ready = fs::read_dir(pg_wal.join("archive_status")).unwrap();
        for marker in ready.flatten().map(|e| e.path()) {
            let file = marker.file_stem().unwrap().to_string_lossy().into_owned();
            let push = case.store.drctl("wal-push").arg("--async").arg("--spool-dir").arg(&spool);
            push.arg(pg_wal.join(&file)).run().ok();
            fs::remove_file(&marker).unwrap();
            archived.push(file);
        }
        assert!(archived.contains(&name));
        for name in &archived {
            let fetched = case.ws.join("fetched");
            case.store.drctl("wal-fetch").arg(name).arg(&fetched).run().ok();
            assert!(fs::read(&fetched).unwrap() == fs::read(pg_wal.join(name)).unwrap(), "{name} came back different");
            fs::remove_file(&fetched).unwrap();
        }
    }
    kill_workers();
    case.done();
}

/// Kills base backups of a running server, stream and local mode in turn: the server is never
/// left in backup mode (the next local-mode backup starts), and the last backup restores and
/// starts with every row committed before it.
#[test]
fn pg_backup_local() {
    let ws = Workspace::new_public();
    let (repo, key_file, mut primary) = archiving_primary(&ws, &[], &[]);
    let store = Store::Local(repo.path.clone());
    let mut case = Case::on("pg-backup-local", ws, store);
    primary.sql("CREATE TABLE t (n int PRIMARY KEY, pad text)");
    let backup = |case: &Case, n: u64| {
        let command = case.store.drctl("backup").arg("--pg").arg(primary.dsn()).arg("--json");
        match n % 2 {
            0 => command,
            _ => command.args(["--pg-mode", "local", "--pgdata"]).arg(&primary.data),
        }
    };
    let mut rows = 0;
    for n in 0..kills() {
        case.kill_one(|case| {
            primary.sql(&format!(
                "INSERT INTO t SELECT g, repeat('x', 500) FROM generate_series({}, {}) g",
                rows + 1,
                rows + 20_000
            ));
            rows += 20_000;
            backup(case, n)
        });
        let c = case.store.drctl("check").run();
        assert!(c.code == Some(0), "{}: seed {}: check failed after a kill\n{c}", case.name, case.seed);
        backup(&case, n).run().ok();
        backup(&case, 1).run().ok();
    }
    primary.stop();
    case.store.drctl("check").arg("--read-data").run().ok();
    let restored = case.ws.join("restored");
    let r = case.store.drctl("restore").args(["--point-in-time", "latest", "--start", "--key-file"]);
    r.arg(&key_file).arg("--to").arg(&restored).timeout(Duration::from_secs(300)).run().ok();
    let mut check = Cluster::existing(&restored, &[("archive_mode", "off".into())]);
    check.start();
    assert_eq!(check.sql("SELECT count(*) FROM t"), rows.to_string(), "every committed row is recovered");
    check.stop();
    eprintln!("{}: {} kills hit the command, {} runs finished first", case.name, case.killed, case.finished_first);
}

#[test]
fn backup_local() {
    backup("local")
}
#[test]
fn backup_s3() {
    backup("s3")
}
#[test]
fn forget_local() {
    forget_or_prune("local", false)
}
#[test]
fn forget_s3() {
    forget_or_prune("s3", false)
}
#[test]
fn prune_local() {
    forget_or_prune("local", true)
}
#[test]
fn prune_s3() {
    forget_or_prune("s3", true)
}
#[test]
fn copy_local() {
    copy("local")
}
#[test]
fn copy_s3() {
    copy("s3")
}
#[test]
fn key_rotate_local() {
    key_rotate("local")
}
#[test]
fn key_rotate_s3() {
    key_rotate("s3")
}
#[test]
fn restore_local() {
    restore("local")
}
#[test]
fn restore_s3() {
    restore("s3")
}
#[test]
fn wal_push_async_local() {
    wal_push_async("local")
}
