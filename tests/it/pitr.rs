//! Point-in-time restore, checked row by row: a workload commits numbered rows while base
//! backups run; for each target time the restored, promoted database holds exactly the rows
//! committed at or before it (commit timestamps from track_commit_timestamp).

use std::time::Duration;

use crate::harness::pg::{Cluster, archiving, archiving_primary, drctl_env, orders_deleted};
use crate::harness::*;

/// `restore --point-in-time T --start --key-file K --to DIR`.
fn restore_to_time(repo: &Repo, target: &str, key_file: &std::path::Path, dir: &std::path::Path) -> Output {
    repo.cmd("restore")
        .args(["--point-in-time", target, "--start", "--key-file"])
        .arg(key_file)
        .arg("--to")
        .arg(dir)
        .timeout(Duration::from_secs(300))
        .run()
}

fn insert(primary: &Cluster, n: i32) {
    primary.sql(&format!("INSERT INTO t VALUES ({n})"));
}

#[test]
fn point_in_time_restore_holds_exactly_the_rows_committed_by_the_target() {
    let ws = Workspace::new_public();
    let (repo, key_file, mut primary) = archiving_primary(&ws, &[], &[("track_commit_timestamp", "on".into())]);
    primary.sql("CREATE TABLE t (n int PRIMARY KEY)");
    let dsn = primary.dsn();
    let backup = |tag: &str| {
        repo.cmd("backup").args(["--pg", &dsn, "--json", "--tag", tag]).timeout(Duration::from_secs(300)).run()
    };

    let mut n = 0;
    for _ in 0..5 {
        n += 1;
        insert(&primary, n);
    }
    backup("first").ok();
    for _ in 0..10 {
        n += 1;
        insert(&primary, n);
    }
    // The second backup runs while rows keep committing.
    let during_second = std::thread::scope(|s| {
        let second = s.spawn(|| backup("second"));
        let mut during = Vec::new();
        while !second.is_finished() {
            n += 1;
            insert(&primary, n);
            during.push(n);
        }
        second.join().unwrap().ok();
        during
    });
    assert!(!during_second.is_empty(), "rows committed during the second backup");
    for _ in 0..10 {
        n += 1;
        insert(&primary, n);
    }
    primary.archive_all_wal();
    // Every row's commit time, microsecond precision, as the recovery target compares them.
    let committed: Vec<(i32, String)> = primary
        .sql("SELECT n, to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM t ORDER BY n")
        .lines()
        .map(|l| {
            let (n, t) = l.split_once('|').unwrap();
            (n.parse().unwrap(), format!("{t}+00"))
        })
        .collect();
    primary.stop();
    let time_of = |row: i32| committed.iter().find(|(n, _)| *n == row).unwrap().1.clone();

    // Targets: between the backups, inside the second backup's run, after it, exactly at a
    // commit near the end (inclusive), and between two commits. (Exactly the newest commit is
    // out of reach: PostgreSQL needs a later record to know nothing else committed at that time.)
    let mid = |a: i32| {
        let (ta, tb) = (time_of(a), time_of(a + 1));
        let parse = |t: &str| chrono::DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%#z").unwrap();
        let (pa, pb) = (parse(&ta), parse(&tb));
        (pa + (pb - pa) / 2).format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
    };
    let targets =
        [time_of(8), time_of(during_second[during_second.len() / 2]), time_of(n - 5), time_of(n - 1), mid(n - 3)];
    for (i, target) in targets.iter().enumerate() {
        let expected: Vec<i32> = committed.iter().filter(|(_, t)| t <= target).map(|(n, _)| *n).collect();
        let dir = ws.join(format!("pitr-{i}"));
        let out = restore_to_time(&repo, target, &key_file, &dir);
        out.ok().mentions("promoted", "the report");
        let mut restored = Cluster::existing(&dir, &[("archive_mode", "off".into())]);
        restored.start();
        let got = restored.sql("SELECT coalesce(string_agg(n::text, ',' ORDER BY n), '') FROM t");
        let want = expected.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
        assert_eq!(got, want, "target {target}: exactly the rows committed at or before it\n{out}");
        restored.stop();
    }

    // Exactly the newest commit: PostgreSQL needs a later record to know nothing else committed
    // then, so the archive ends before the target: out of reach, and the restore is removed.
    let dir = ws.join("beyond");
    restore_to_time(&repo, &time_of(n), &key_file, &dir).code_is(13).stderr_mentions("out of reach", "the cause");
    assert!(!dir.exists(), "no half-recovered data directory is left");

    // Before the first backup ended: out of reach, said clearly, nothing restored.
    let too_early = time_of(2);
    let dir = ws.join("too-early");
    repo.cmd("restore")
        .args(["--point-in-time", &too_early, "--key-file"])
        .arg(&key_file)
        .arg("--to")
        .arg(&dir)
        .run()
        .code_is(13)
        .stderr_mentions("out of reach", "the cause");
    assert!(!dir.exists());
}

#[test]
fn point_in_time_restore_follows_a_new_timeline() {
    let ws = Workspace::new_public();
    let commit_timestamps = [("track_commit_timestamp", "on".to_string())];
    let (repo, key_file, mut primary) = archiving_primary(&ws, &[], &commit_timestamps);
    primary.sql("CREATE TABLE t (n int PRIMARY KEY)");
    let dsn = primary.dsn();
    repo.cmd("backup").args(["--pg", &dsn]).timeout(Duration::from_secs(300)).run().ok();
    for n in 1..=20 {
        insert(&primary, n);
    }
    let good = primary.sql("SELECT to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00' FROM t WHERE n = 20");
    for n in 21..=40 {
        insert(&primary, n); // the branch that the restore abandons
    }
    let last = primary.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    primary.sql("SELECT pg_switch_wal()");
    primary.wait_for(
        &format!("SELECT last_archived_wal >= '{last}' FROM pg_stat_archiver"),
        "t",
        Duration::from_secs(60),
    );
    primary.stop();

    // Restore to row 20 and promote: timeline 2. It becomes the new primary, archiving again.
    let second = ws.join("second");
    repo.cmd("restore")
        .args(["--point-in-time", &good, "--start", "--archive-mode", "keep", "--key-file"])
        .arg(&key_file)
        .arg("--to")
        .arg(&second)
        .timeout(Duration::from_secs(300))
        .run()
        .ok();
    let mut new_primary = Cluster::existing(&second, &archiving(&drctl_env(&repo, &key_file), &[], &commit_timestamps));
    new_primary.start();
    assert_eq!(new_primary.sql("SELECT timeline_id FROM pg_control_checkpoint()"), "2");
    for n in 1001..=1020 {
        insert(&new_primary, n);
    }
    let on_tl2 = new_primary.sql("SELECT to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00' FROM t WHERE n = 1010");
    new_primary.archive_all_wal();
    new_primary.stop();
    assert!(repo.path.join("wal/00000002/00000002.history").exists(), "the new timeline's history is archived");

    // A point on timeline 2: the first base backup, timeline 1 up to the switch, then timeline 2.
    let third = ws.join("third");
    restore_to_time(&repo, &on_tl2, &key_file, &third).ok();
    let mut restored = Cluster::existing(&third, &[("archive_mode", "off".into())]);
    restored.start();
    let want: Vec<String> = (1..=20).chain(1001..=1010).map(|n| n.to_string()).collect();
    assert_eq!(restored.sql("SELECT string_agg(n::text, ',' ORDER BY n) FROM t"), want.join(","), "{}", restored.log());
}

/// The targets time cannot express: a WAL position, a transaction id, and the end of the archive.
#[test]
fn lsn_xid_and_latest_targets_recover_exactly_that_far() {
    let ws = Workspace::new_public();
    let (repo, key_file, mut primary) = archiving_primary(&ws, &[], &[]);
    primary.sql("CREATE TABLE t (n int PRIMARY KEY)");
    let dsn = primary.dsn();
    let backup = || repo.cmd("backup").args(["--pg", &dsn]).timeout(Duration::from_secs(300)).run().ok().clone();
    backup();
    // Row n's transaction id, and the WAL position right after its commit.
    let mut marks = Vec::new();
    for n in 1..=30 {
        let xid =
            primary.sql(&format!("INSERT INTO t VALUES ({n}) RETURNING xmin")).lines().next().unwrap().to_string();
        marks.push((xid, primary.sql("SELECT pg_current_wal_insert_lsn()")));
        if n == 20 {
            backup();
        }
    }
    primary.archive_all_wal();
    primary.stop();

    let check = |name: &str, flags: &[&str], snapshot: Option<&str>, rows: i32| {
        let dir = ws.join(name);
        let mut cmd = repo.cmd("restore").args(flags).args(["--start", "--key-file"]).arg(&key_file);
        if let Some(s) = snapshot {
            cmd = cmd.arg(s);
        }
        let out = cmd.arg("--to").arg(&dir).timeout(Duration::from_secs(300)).run();
        out.ok().mentions("promoted", "the report");
        assert!(!dir.join("pg_wal/drctl-prefetch").exists(), "the prefetch worker is stopped and its spool removed");
        let mut restored = Cluster::existing(&dir, &[("archive_mode", "off".into())]);
        restored.start();
        assert_eq!(
            restored.sql("SELECT count(*), coalesce(max(n), 0) FROM t"),
            format!("{rows}|{rows}"),
            "{name}\n{out}"
        );
        restored.stop();
    };
    // Before the second backup: the first one is chosen by its stop position.
    check("lsn-12", &["--target-lsn", &marks[11].1], None, 12);
    check("lsn-25", &["--target-lsn", &marks[24].1], None, 25);
    // A transaction older than the newest backup needs the older backup, given by id.
    let first = repo.snapshots().into_iter().min_by_key(|s| s["time"].as_str().unwrap().to_string()).unwrap();
    check("xid-7", &["--target-xid", &marks[6].0], Some(first["short_id"].as_str().unwrap()), 7);
    check("xid-27", &["--target-xid", &marks[26].0], None, 27);
    check("latest", &["--point-in-time", "latest"], None, 30);
    repo.cmd("restore").args(["--target-lsn", "nonsense", "--to"]).arg(ws.join("bad")).run().code_is(2);
}

/// `restore --start` hands over a cluster that recovery left as a shut-down primary: started by
/// anyone (pg_ctl here), it replays nothing past the target. A shutdown caught between the
/// removal of recovery.signal and the end of promotion left it "shut down in recovery", and the
/// next start replayed, without a recovery target, the WAL after it: here, the DELETE.
#[test]
fn a_started_restore_is_left_a_shut_down_primary_that_keeps_the_target() {
    let ws = Workspace::new_public();
    let (repo, _primary, before) = orders_deleted(&ws);
    // Opened by a passphrase (DRCTL_PASSWORD, inherited by restore_command) whose slot costs
    // argon2 what it costs outside the suite: each wal-fetch then spends a quarter second
    // deriving the key, which widens the window between the two.
    Drctl::new()
        .args(["key", "add", "--repo"])
        .arg(&repo.path)
        .env_remove("DRCTL_TEST_CHEAP_KDF")
        .env("DRCTL_NEW_PASSWORD", "a slot at full cost")
        .run()
        .ok();
    let (uid, gid) = user_ids("postgres");
    chown_r(&repo.path, uid, gid);
    let dir = ws.join("restored");
    repo.cmd("restore")
        .password("a slot at full cost")
        .args(["--point-in-time", &before, "--start", "--to"])
        .arg(&dir)
        .timeout(Duration::from_secs(300))
        .run()
        .ok();
    let control = crate::harness::pg::as_postgres(format!("{}/pg_controldata", crate::harness::pg::BIN))
        .arg(&dir)
        .output()
        .unwrap();
    let control = String::from_utf8_lossy(&control.stdout).into_owned();
    let state = control.lines().find(|l| l.starts_with("Database cluster state:")).unwrap_or_default().to_string();
    assert!(state.ends_with("shut down") && !state.contains("in recovery"), "{state}");
    let mut restored = Cluster::existing(&dir, &[]);
    restored.start();
    assert_eq!(restored.sql("SELECT count(*) FROM orders"), "6000");
    restored.stop();
}
