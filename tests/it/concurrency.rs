//! Commands that meet on one repository: two backups at once, a backup while `copy` reads the
//! repository, `forget --prune` while a restore reads it, and two servers archiving through
//! their own async spools. Nothing is lost and exit codes are the documented ones. (Backups and
//! `forget --prune` waiting for each other's locks: retention.rs.)

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::moto::Moto;
use crate::harness::*;

/// Two sources sharing half their data, backed up at the same moment into one repository.
fn two_backups_at_once(ws: &Workspace, drctl: &(dyn Fn(&str) -> Drctl + Sync)) {
    let shared = DataGen::random(71).take(6 << 20);
    let sources: Vec<_> = (0..2u64)
        .map(|n| {
            let t = TreeBuilder::new(ws.join(format!("src-{n}")));
            t.file("shared.bin", &shared);
            t.file_gen("own.bin", &mut DataGen::mixed(80 + n, 64 * KIB), 6 << 20);
            for i in 0..200 {
                t.file(format!("small/{i}.txt"), format!("{n}-{i}").as_bytes());
            }
            t
        })
        .collect();
    drctl("init").args(["--pack-size-mib", "1"]).run().ok();
    let outputs: Vec<Output> = std::thread::scope(|s| {
        let running: Vec<_> = sources
            .iter()
            .map(|t| s.spawn(|| drctl("backup").arg("--json").arg("--path").arg(&t.root).run()))
            .collect();
        running.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for (t, o) in sources.iter().zip(&outputs) {
        let id = BackupInfo::parse(o.ok()).id;
        let target = ws.join(format!("restored-{}", &id[..8]));
        drctl("restore").args([&id, "--to"]).arg(&target).run().ok();
        assert_trees_equal(&t.root, &restored_path(&target, &t.root), CompareOpts { owner: true }, o);
    }
    drctl("check").arg("--read-data").run().ok().mentions("no damage found", "check");
}

#[test]
fn two_backups_at_once_into_a_local_repository() {
    let ws = Workspace::new();
    let repo = ws.join("repo");
    two_backups_at_once(&ws, &|sub| Drctl::new().arg(sub).arg("--repo").arg(&repo));
}

#[test]
fn two_backups_at_once_into_s3() {
    let moto = Moto::start("two-at-once");
    let ws = Workspace::new();
    two_backups_at_once(&ws, &|sub| moto.drctl(sub).args(["--repo", "s3://two-at-once/app"]));
}

#[test]
fn a_copy_while_a_backup_writes_copies_whole_snapshots_and_the_next_copy_the_rest() {
    let ws = Workspace::new();
    let source = ws.repo();
    source.cmd("init").args(["--pack-size-mib", "1"]).run().ok();
    let src = TreeBuilder::new(ws.join("src"));
    src.file_gen("a.bin", &mut DataGen::random(5), 16 << 20);
    let (first, _) = source.backup(&[&src.root]);
    let copy_repo = Repo::new(ws.join("copy"));
    let copy = || Drctl::new().args(["copy", "--all", "--from"]).arg(&source.path).arg("--to").arg(&copy_repo.path);

    src.file_gen("b.bin", &mut DataGen::random(6), 48 << 20);
    let mut backup = source.backup_cmd(&[&src.root]).spawn();
    // Start the copy while the backup is writing packs.
    let packs_before = source.packs().len();
    for _ in 0..500 {
        if source.packs().len() > packs_before + 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Frozen mid-write, so the copy meets a backup in progress however fast it would have been.
    backup.pause();
    let during = copy().run();
    backup.resume();
    let backed_up = backup.finish();
    let second = BackupInfo::parse(backed_up.ok());
    during.ok();

    // What the copy listed is whole; the next copy brings the snapshot the backup was writing.
    copy_repo.check(true).ok();
    copy().run().ok();
    copy_repo.check(true).ok();
    for (snap, expect) in [(&first.id, None), (&second.id, Some(&src.root))] {
        let target = ws.join(format!("from-copy-{}", &snap[..8]));
        let r = copy_repo.restore(snap, &target);
        r.ok();
        if let Some(root) = expect {
            assert_trees_equal(root, &restored_path(&target, root), CompareOpts { owner: true }, &r);
        }
    }
}

#[test]
fn prune_while_a_restore_reads_exits_6_and_the_restore_is_exact() {
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.cmd("init").args(["--pack-size-mib", "1"]).run().ok();
    let src = TreeBuilder::new(ws.join("src"));
    src.file_gen("old.bin", &mut DataGen::random(8), 8 << 20);
    repo.backup(&[&src.root]);
    src.file_gen("old.bin", &mut DataGen::random(9), 64 << 20);
    let (latest, _) = repo.backup(&[&src.root]);

    let target = ws.join("restored");
    let mut restore = repo.restore_cmd(&latest.id, &target).spawn();
    // The restore holds its shared lock once it has written into its staging folder.
    for _ in 0..1000 {
        if fs::read_dir(ws.path()).unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with(".restored"))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Frozen mid-restore, so the prune meets its lock however fast the restore would have been.
    restore.pause();
    let prune = repo.cmd("forget").args(["--keep-last", "1", "--prune", "--grace", "0s"]).run();
    restore.resume();
    let restored = restore.finish();
    restored.ok();
    prune.code_is(6);
    prune.stderr_mentions("lock", "the restore's lock");
    assert_trees_equal(&src.root, &restored_path(&target, &src.root), CompareOpts { owner: true }, &restored);
    // Once the restore is done, the same command runs.
    repo.cmd("forget").args(["--keep-last", "1", "--prune", "--grace", "0s"]).run().ok();
    repo.check(true).ok();
    assert_eq!(repo.snapshots().len(), 1);
}

/// `count` fake WAL segments of timeline `timeline` in `pg_wal`, marked ready.
fn ready_segments(pg_wal: &Path, timeline: u32, count: u32) -> Vec<String> {
    fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
    (1..=count)
        .map(|n| {
            let name = format!("{timeline:08X}00000000000000{n:02X}");
            let data: Vec<u8> = (0..1u32 << 20).map(|j| (j / 512 + n * 7 + timeline * 13) as u8).collect();
            fs::write(pg_wal.join(&name), data).unwrap();
            fs::write(pg_wal.join("archive_status").join(format!("{name}.ready")), b"").unwrap();
            name
        })
        .collect()
}

#[test]
fn two_servers_archiving_through_their_own_async_spools_lose_nothing() {
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.init();
    let servers: Vec<_> = (1..=2u32)
        .map(|tli| {
            let pg_wal = ws.mkdir(&format!("server-{tli}/pg_wal"));
            let names = ready_segments(&pg_wal, tli, 12);
            (pg_wal, ws.join(format!("server-{tli}/spool")), names)
        })
        .collect();
    std::thread::scope(|s| {
        for (pg_wal, spool, names) in &servers {
            let repo = &repo;
            s.spawn(move || {
                for name in names {
                    repo.cmd("wal-push")
                        .arg("--async")
                        .arg("--spool-dir")
                        .arg(spool)
                        .arg(pg_wal.join(name))
                        .timeout(Duration::from_secs(200))
                        .run()
                        .ok();
                    fs::remove_file(pg_wal.join("archive_status").join(format!("{name}.ready"))).unwrap();
                }
            });
        }
    });
    for (pg_wal, spool, names) in &servers {
        assert!(spool.join("archive/worker.log").exists(), "{} archived through its spool's worker", spool.display());
        Command::new("pkill").args(["-9", "-f", &spool.display().to_string()]).status().unwrap();
        for name in names {
            let fetched = ws.join(format!("fetched-{name}"));
            repo.cmd("wal-fetch").arg(name).arg(&fetched).run().ok();
            assert!(fs::read(&fetched).unwrap() == fs::read(pg_wal.join(name)).unwrap(), "{name} came back different");
        }
    }
    repo.check(true).ok();
}
