//! Asynchronous archiving and WAL prefetch: the background workers behind `wal-push --async`
//! and `wal-fetch`, killed at random while they work, and fed a damaged archive.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::pg::{Cluster, archiving_primary, repo_for_postgres};
use crate::harness::*;

/// Kills (SIGKILL) every process whose command line mentions `needle`; returns how many.
fn kill_matching(needle: &str) -> usize {
    let out = Command::new("pkill").args(["-9", "-c", "-f", needle]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn async_archiving_survives_kill_9_and_loses_no_segment() {
    let ws = Workspace::new_public();
    let spool = ws.mkdir("spool");
    let (uid, gid) = user_ids("postgres");
    std::os::unix::fs::chown(&spool, Some(uid), Some(gid)).unwrap();
    let spool_dir = spool.display().to_string();
    let (repo, key_file, mut primary) = archiving_primary(&ws, &["--async", "--spool-dir", &spool_dir], &[]);
    primary.sql("CREATE TABLE t (n int PRIMARY KEY, pad text)");
    let dsn = primary.dsn();
    repo.cmd("backup").args(["--pg", &dsn]).timeout(Duration::from_secs(300)).run().ok();

    // 40 segments of WAL while the workers and the waiting archive_commands are killed over and over.
    let mut killed = 0;
    let mut last = String::new();
    for batch in 0..40 {
        primary.sql(&format!(
            "INSERT INTO t SELECT g, repeat(md5(g::text), 16) FROM generate_series({}, {}) g",
            batch * 500 + 1,
            batch * 500 + 500
        ));
        last = primary.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
        primary.sql("SELECT pg_switch_wal()");
        if batch % 4 == 1 {
            std::thread::sleep(Duration::from_millis(30));
            killed += kill_matching(&spool.display().to_string());
        }
    }
    assert!(killed > 0, "the test killed drctl processes mid-work");
    primary.wait_for(
        &format!("SELECT last_archived_wal >= '{last}' FROM pg_stat_archiver"),
        "t",
        Duration::from_secs(120),
    );
    let total = primary.sql("SELECT count(*) FROM t");
    assert_eq!(total, "20000");
    primary.stop();

    // Every segment is there (the window has no gap) and intact; the database comes back whole.
    assert_eq!(repo.snapshots()[0]["missing_wal"], serde_json::json!([]));
    repo.cmd("check").arg("--read-data").run().ok();
    let restored = ws.join("restored");
    repo.cmd("restore")
        .args(["--point-in-time", "latest", "--start", "--key-file"])
        .arg(&key_file)
        .arg("--to")
        .arg(&restored)
        .timeout(Duration::from_secs(300))
        .run()
        .ok();
    let mut check = Cluster::existing(&restored, &[("archive_mode", "off".into())]);
    check.start();
    assert_eq!(check.sql("SELECT count(*) FROM t"), total, "every committed row is recovered");
    check.stop();
}

/// Writes `count` fake 1 MiB WAL segments into `dir`, pushes them, returns their names.
fn archive_fake_segments(repo: &Repo, key_file: &std::path::Path, dir: &std::path::Path, count: u32) -> Vec<String> {
    fs::create_dir_all(dir).unwrap();
    let mut names = Vec::new();
    for i in 1..=count {
        let name = format!("0000000100000000000000{i:02X}");
        let mut data = vec![0u8; 1 << 20];
        for (j, b) in data.iter_mut().enumerate().step_by(4096) {
            *b = (i as usize * 31 + j / 4096) as u8;
        }
        fs::write(dir.join(&name), &data).unwrap();
        repo.cmd("wal-push").arg("--key-file").arg(key_file).arg(dir.join(&name)).run().ok();
        names.push(name);
    }
    names
}

#[test]
fn wal_fetch_prefetches_the_next_segments_and_never_serves_a_damaged_one() {
    let ws = Workspace::new_public();
    let (repo, key_file) = repo_for_postgres(&ws);
    let source = ws.join("source");
    let names = archive_fake_segments(&repo, &key_file, &source, 12);
    // Segment 6 is damaged in the archive: prefetch must not serve it, the direct fetch fails.
    let damaged = repo.path.join("wal/00000001").join(&names[5]);
    let mut bytes = fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs::write(&damaged, bytes).unwrap();

    let pg_wal = ws.mkdir("data/pg_wal");
    let spool = pg_wal.join("drctl-prefetch");
    let fetch = |name: &str| {
        repo.cmd("wal-fetch").args(["-v", "--key-file"]).arg(&key_file).arg(name).arg(pg_wal.join("RECOVERYXLOG")).run()
    };
    fetch(&names[0]).ok().stderr_mentions("restored from the archive", "a direct fetch first");
    assert_eq!(fs::read(pg_wal.join("RECOVERYXLOG")).unwrap(), fs::read(source.join(&names[0])).unwrap());
    // The worker fills the spool with what follows (not the damaged one).
    let deadline = Instant::now() + Duration::from_secs(20);
    let wanted: Vec<&String> = names[1..9].iter().filter(|n| **n != names[5]).collect();
    while !wanted.iter().all(|n| spool.join(n).exists()) {
        assert!(
            Instant::now() < deadline,
            "prefetch did not fill the spool: {:?}",
            fs::read_dir(&spool).unwrap().count()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!spool.join(&names[5]).exists(), "a segment that fails authentication is never spooled");
    for name in &names[1..5] {
        fetch(name).ok().stderr_mentions("prefetch spool", "served from the spool");
        assert_eq!(fs::read(pg_wal.join("RECOVERYXLOG")).unwrap(), fs::read(source.join(name)).unwrap());
    }
    let out = fetch(&names[5]);
    out.code_is(126);
    // A segment the archive does not hold: exit 1, as PostgreSQL expects at the end of the archive.
    fetch("000000010000000000000063").code_is(1);
}

/// The segments of timeline 1 archived in `repo`, sorted.
fn archived_segments(repo: &Repo) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(repo.path.join("wal/00000001"))
        .map(|dir| dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.len() == 24).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn async_archiving_follows_a_new_repository_after_a_reload() {
    let (ws_a, ws_b) = (Workspace::new_public(), Workspace::new_public());
    let (repo_a, key_a) = repo_for_postgres(&ws_a);
    let (repo_b, key_b) = repo_for_postgres(&ws_b);
    let spool = ws_a.mkdir("spool");
    let (uid, gid) = user_ids("postgres");
    std::os::unix::fs::chown(&spool, Some(uid), Some(gid)).unwrap();
    let command = |repo: &Repo, key: &std::path::Path| {
        format!(
            "'{} wal-push --async --spool-dir {} --repo {} --key-file {} %p'",
            drctl_bin(),
            spool.display(),
            repo.path.display(),
            key.display()
        )
    };
    let mut primary = Cluster::init(
        &ws_a.join("primary"),
        &[("archive_mode", "on".into()), ("archive_command", command(&repo_a, &key_a))],
    );
    primary.start();
    primary.sql("CREATE TABLE t (n int)");
    for _ in 0..3 {
        primary.sql("INSERT INTO t SELECT generate_series(1, 1000)");
        primary.archive_all_wal();
    }
    assert!(archived_segments(&repo_a).len() >= 3, "the worker archives into A");

    // The server now archives into B; A's worker is still running and WAL keeps coming.
    primary.sql(&format!("ALTER SYSTEM SET archive_command = {}", command(&repo_b, &key_b)));
    primary.sql("SELECT pg_reload_conf()");
    primary.wait_for("SHOW archive_command", command(&repo_b, &key_b).trim_matches('\''), Duration::from_secs(10));
    let switched = write_and_switch(&primary, 10);
    // pg_stat_archiver counts them archived, all after the reload: B must hold every one.
    let in_b = archived_segments(&repo_b);
    let missing: Vec<&String> = switched.iter().filter(|n| !in_b.contains(n)).collect();
    assert!(missing.is_empty(), "archived after the switch to B but not in B: {missing:?} (B holds {in_b:?})");
    primary.stop();
}

#[test]
fn an_async_worker_stops_when_its_repository_is_initialised_again() {
    let ws = Workspace::new_public();
    let spool = ws.mkdir("spool");
    let (uid, gid) = user_ids("postgres");
    std::os::unix::fs::chown(&spool, Some(uid), Some(gid)).unwrap();
    let spool_dir = spool.display().to_string();
    let (repo, key_file, mut primary) = archiving_primary(&ws, &["--async", "--spool-dir", &spool_dir], &[]);
    primary.sql("CREATE TABLE t (n int)");
    for _ in 0..3 {
        primary.sql("INSERT INTO t SELECT generate_series(1, 1000)");
        primary.archive_all_wal();
    }

    // The repository is deleted and a new one initialised at its location, with a new key file
    // at the same path: the archive_command is unchanged, the running worker holds the old key.
    fs::remove_dir_all(&repo.path).unwrap();
    fs::remove_file(&key_file).unwrap();
    let (repo, _) = repo_for_postgres(&ws);
    let last = write_and_switch(&primary, 10).pop().unwrap();
    primary.stop();
    // Every segment the server counts archived opens with the new repository's key.
    assert!(archived_segments(&repo).contains(&last), "{:?}", archived_segments(&repo));
    repo.cmd("check").arg("--read-data").run().ok();
}

/// Writes to `t` and switches WAL `n` times; returns the segments written, oldest first, once
/// the server counts the last one archived.
fn write_and_switch(primary: &Cluster, n: usize) -> Vec<String> {
    let mut written = Vec::new();
    for _ in 0..n {
        primary.sql("INSERT INTO t SELECT generate_series(1, 1000)");
        written.push(primary.sql("SELECT pg_walfile_name(pg_current_wal_lsn())"));
        primary.sql("SELECT pg_switch_wal()");
    }
    let last = written.last().expect("n > 0");
    primary.wait_for(
        &format!("SELECT last_archived_wal >= '{last}' FROM pg_stat_archiver"),
        "t",
        Duration::from_secs(120),
    );
    written
}
