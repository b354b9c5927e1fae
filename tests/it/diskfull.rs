//! A full disk under the restore target, the asynchronous archiving spool, the WAL prefetch
//! spool, the pg_wal WAL is fetched into and the repository a WAL file is pushed into: a clear
//! error with its exit code (or, for a spool, archiving and recovery that go on without it),
//! nothing corrupted or left half-written, and the next run after space is freed works. (A full
//! repository under a backup: errors.rs.)

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::http::wait_until;
use crate::harness::*;

fn require_root() {
    assert!(is_root(), "this test mounts a small tmpfs: it must run as root");
}

/// Fills the filesystem holding `dir` to the last byte with a file named `filler`.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = fs::File::create(&path).unwrap();
    let block = vec![0xA5u8; 4096];
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    path
}

/// A fake WAL segment of 1 MiB, its content set by `n`, and its `.ready` file.
fn ready_segment(pg_wal: &Path, n: u32) -> String {
    let name = format!("0000000100000000000000{n:02X}");
    let mut data = vec![0u8; 1 << 20];
    for (j, b) in data.iter_mut().enumerate().step_by(512) {
        *b = (n as usize * 131 + j / 512) as u8;
    }
    fs::write(pg_wal.join(&name), &data).unwrap();
    fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
    fs::write(pg_wal.join("archive_status").join(format!("{name}.ready")), b"").unwrap();
    name
}

/// Every segment in `names` comes back from the archive exactly as it was in `pg_wal`.
fn assert_archived(repo: &Repo, ws: &Workspace, pg_wal: &Path, names: &[String]) {
    for name in names {
        let fetched = ws.join(format!("fetched-{name}"));
        repo.cmd("wal-fetch").arg(name).arg(&fetched).run().ok();
        assert!(fs::read(&fetched).unwrap() == fs::read(pg_wal.join(name)).unwrap(), "{name} came back different");
    }
}

#[test]
fn restore_onto_a_full_disk_exits_9_leaves_nothing_behind_and_works_once_space_is_freed() {
    require_root();
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.init();
    let src = TreeBuilder::new(ws.join("src"));
    src.file_gen("big.bin", &mut DataGen::random(3), 10 * MIB);
    src.file_gen("text/notes.txt", &mut DataGen::text(4), 300 * KIB);
    src.file("small.txt", b"small");
    let (snap, _) = repo.backup(&[&src.root]);

    let mnt = ws.join("mnt");
    let _mount = MountGuard::tmpfs(&mnt, "16m");
    let filler = mnt.join("filler");
    fs::write(&filler, vec![1u8; 8 << 20]).unwrap();
    let target = mnt.join("restored");
    let o = repo.restore_cmd(&snap.id, &target).run();
    o.code_is(9);
    o.stderr_mentions("No space left", "that the disk is full");
    assert_eq!(dir_entries(&mnt), vec!["filler".to_string()], "the failed restore left something behind\n{o}");
    repo.check(true).ok();

    fs::remove_file(&filler).unwrap();
    let r = repo.restore(&snap.id, &target);
    r.ok();
    assert_trees_equal(&src.root, &restored_path(&target, &src.root), CompareOpts { owner: true }, &r);
}

#[test]
fn wal_push_into_a_full_repository_exits_8_stores_nothing_and_works_once_space_is_freed() {
    require_root();
    let ws = Workspace::new();
    let mnt = ws.join("mnt");
    let _mount = MountGuard::tmpfs(&mnt, "8m");
    let repo = Repo::new(mnt.join("repo"));
    repo.init();
    let pg_wal = ws.mkdir("pg_wal");
    let first = ready_segment(&pg_wal, 1);
    repo.cmd("wal-push").arg(pg_wal.join(&first)).run().ok();

    let filler = fill(&mnt);
    let second = ready_segment(&pg_wal, 2);
    let o = repo.cmd("wal-push").arg(pg_wal.join(&second)).run();
    o.code_is(8);
    o.stderr_mentions("no space", "that the disk is full");
    // Not archived, and not half-archived either: the archive does not hold it, so PostgreSQL
    // keeps the file and asks again.
    let fetched = ws.join("not-there");
    repo.cmd("wal-fetch").arg(&second).arg(&fetched).run().code_is(1);
    fs::remove_file(&filler).unwrap();
    repo.check(true).ok();

    repo.cmd("wal-push").arg(pg_wal.join(&second)).run().ok();
    assert_archived(&repo, &ws, &pg_wal, &[first, second]);
}

#[test]
fn async_archiving_goes_on_promptly_when_its_spool_disk_is_full() {
    require_root();
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.init();
    let pg_wal = ws.mkdir("pg_wal");
    let mnt = ws.join("spool-disk");
    let _mount = MountGuard::tmpfs(&mnt, "1m");
    let spool = mnt.join("spool");
    let push = |name: &str| {
        let started = Instant::now();
        let o = repo
            .cmd("wal-push")
            .arg("--async")
            .arg("--spool-dir")
            .arg(&spool)
            .arg(pg_wal.join(name))
            .timeout(Duration::from_secs(200))
            .run();
        o.ok();
        // The archive_command's wait for a worker is 120 s; a full spool must not cost that per file.
        assert!(started.elapsed() < Duration::from_secs(30), "{name} took {:?} to archive\n{o}", started.elapsed());
        fs::remove_file(pg_wal.join("archive_status").join(format!("{name}.ready"))).unwrap();
    };

    // With room: the worker starts and archives ahead.
    let mut names: Vec<String> = (1..=2).map(|n| ready_segment(&pg_wal, n)).collect();
    names.iter().for_each(|n| push(n));
    assert!(spool.join("archive/worker.log").exists(), "the first files went through the spool's worker");
    // The spool's disk full, the worker still running: every file still archived, promptly.
    let filler = fill(&mnt);
    for n in 3..=5 {
        names.push(ready_segment(&pg_wal, n));
        push(&names[n as usize - 1]);
    }
    // Space again: archiving goes on through the spool.
    fs::remove_file(&filler).unwrap();
    for n in 6..=7 {
        names.push(ready_segment(&pg_wal, n));
        push(&names[n as usize - 1]);
    }
    Command::new("pkill").args(["-9", "-f", &spool.display().to_string()]).status().unwrap();
    assert_archived(&repo, &ws, &pg_wal, &names);
    repo.check(true).ok();
}

/// `wal-fetch --prefetch` as `restore_command`: the prefetch spool's disk full costs the
/// prefetch, not the recovery; pg_wal's disk full is a failure PostgreSQL stops recovery on
/// (126), never "not in the archive" (1), which would end recovery early; and no partial file is
/// left in pg_wal either way.
#[test]
fn wal_fetch_goes_on_without_a_full_prefetch_spool_and_exits_126_on_a_full_pg_wal() {
    require_root();
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.init();
    let pg_wal = ws.mkdir("pg_wal");
    let names: Vec<String> = (1..=8).map(|n| ready_segment(&pg_wal, n)).collect();
    for name in &names {
        repo.cmd("wal-push").arg(pg_wal.join(name)).run().ok();
    }
    // The recovering server's pg_wal and the prefetch spool, each on a small disk of its own.
    let recovering = ws.join("recovering-pg_wal");
    let _pg_wal_mount = MountGuard::tmpfs(&recovering, "4m");
    let spool_disk = ws.join("spool-disk");
    let _spool_mount = MountGuard::tmpfs(&spool_disk, "8m");
    let spool = spool_disk.join("spool");
    let fetch = |name: &str| {
        let started = Instant::now();
        let o = repo
            .cmd("wal-fetch")
            .args(["--prefetch", "4", "--spool-dir"])
            .arg(&spool)
            .arg(name)
            .arg(recovering.join(name))
            .timeout(Duration::from_secs(120))
            .run();
        assert!(started.elapsed() < Duration::from_secs(30), "{name} took {:?}\n{o}", started.elapsed());
        o
    };
    // PostgreSQL replays a restored segment and then recycles it.
    let replayed = |name: &str| {
        assert!(fs::read(recovering.join(name)).unwrap() == fs::read(pg_wal.join(name)).unwrap(), "{name} differs");
        fs::remove_file(recovering.join(name)).unwrap();
    };

    // The spool's disk full from the first request: every segment still comes from the archive.
    let filler = fill(&spool_disk);
    for name in &names[..3] {
        fetch(name).ok();
        replayed(name);
    }
    let leftovers: Vec<_> = dir_entries(&spool.join("prefetch")).into_iter().filter(|n| n.starts_with('.')).collect();
    assert_eq!(leftovers, Vec::<String>::new(), "half-written files left in the full spool");
    // Space again: the worker fetches ahead and the next request is served from the spool.
    fs::remove_file(&filler).unwrap();
    fetch(&names[3]).ok();
    replayed(&names[3]);
    let prefetched = spool.join("prefetch").join(&names[4]);
    wait_until("the worker to prefetch the next segment", Duration::from_secs(30), || prefetched.exists());
    fetch(&names[4]).ok();
    replayed(&names[4]);

    // pg_wal's disk full: 126 with the cause, and nothing half-written left in it, whether the
    // segment was in the spool (copied across disks) or not.
    let filler = fill(&recovering);
    for name in &names[5..7] {
        let o = fetch(name);
        o.code_is(126);
        o.stderr_mentions("No space left", "that the disk is full");
        assert_eq!(dir_entries(&recovering), vec!["filler".to_string()], "left behind in pg_wal\n{o}");
    }
    fs::remove_file(&filler).unwrap();
    for name in &names[5..] {
        fetch(name).ok();
        replayed(name);
    }
    Command::new("pkill").args(["-9", "-f", &spool.display().to_string()]).status().unwrap();
}
