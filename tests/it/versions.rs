//! PostgreSQL 13 to 18, each backed up, archived and recovered for real with its own server
//! (README.md's version table cites these tests). Every version: a local-mode base backup, WAL
//! archived by `drctl wal-push`, and a row-exact point-in-time restore started (`--start`) with
//! that version's own `postgres`, found through `DRCTL_PG_BIN`, while a `postgres` of another
//! version is refused before anything is written; the local-mode backup recovered to a
//! transaction (`--target-xid`); a standby made from that backup promoted by `drctl promote`
//! (timeline 2, whose history the point-in-time restore then reads past). Where this machine has client programs of the
//! server's version or newer (13 to 15: Debian's PostgreSQL 15 clients), also a stream-mode
//! backup (the one the point in time chooses) and a logical dump restored with pg_restore; for 16 to 18 stream mode and dumps are refused with
//! exit 12, naming the program and version, and no snapshot is written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::pg::{Cluster, archiving, drctl_env, repo_for_postgres, server_bin};
use crate::harness::*;

/// The newest major version whose client programs this machine has (Debian's PostgreSQL 15).
const CLIENTS: u32 = 15;

#[test]
fn postgresql_13() {
    version_round_trip(13);
}

#[test]
fn postgresql_14() {
    version_round_trip(14);
}

#[test]
fn postgresql_15() {
    version_round_trip(15);
}

#[test]
fn postgresql_16() {
    version_round_trip(16);
}

#[test]
fn postgresql_17() {
    version_round_trip(17);
}

#[test]
fn postgresql_18() {
    version_round_trip(18);
}

/// `restore [extra] --start --to DIR` with the server programs of `pg_bin`.
fn restore_started(repo: &Repo, key_file: &Path, extra: &[&str], dir: &Path, pg_bin: &Path) -> Output {
    repo.cmd("restore")
        .args(extra)
        .args(["--start", "--key-file"])
        .arg(key_file)
        .arg("--to")
        .arg(dir)
        .env("DRCTL_PG_BIN", pg_bin)
        .timeout(Duration::from_secs(300))
        .run()
}

/// The rows of `t` in the cluster restored into `dir`, started by PostgreSQL `major`'s server.
fn rows_restored(major: u32, dir: &Path) -> String {
    let mut restored = Cluster::existing_version(major, dir, &[("archive_mode", "off".into())]);
    restored.start();
    let version = restored.sql("SELECT current_setting('server_version_num')::int / 10000");
    assert_eq!(version, major.to_string(), "the restored cluster runs on PostgreSQL {major}");
    let rows = restored.sql("SELECT count(*) || ':' || coalesce(max(n), 0) || ':' || sum(n) FROM t");
    restored.stop();
    rows
}

/// `count:max:sum` of the rows 1..=n, as [`rows_restored`] reports them.
fn rows_up_to(n: u64) -> String {
    format!("{n}:{n}:{}", n * (n + 1) / 2)
}

fn version_round_trip(major: u32) {
    let ws = Workspace::new_public();
    let (repo, key_file) = repo_for_postgres(&ws);
    let settings = archiving(&drctl_env(&repo, &key_file), &[], &[("track_commit_timestamp", "on".into())]);
    let mut primary = Cluster::init_version(major, &ws.join("primary"), &[], &settings);
    primary.start();
    assert_eq!(primary.sql("SELECT current_setting('server_version_num')::int / 10000"), major.to_string());
    let dsn = primary.dsn();
    primary.sql("CREATE TABLE t (n int PRIMARY KEY, note text)");
    primary.sql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 500) g");

    // Local mode: pg_start_backup/pg_stop_backup before 15, pg_backup_start/pg_backup_stop from 15.
    let local = repo
        .cmd("backup")
        .args(["--pg", &dsn, "--pg-mode", "local", "--json", "--pgdata"])
        .arg(&primary.data)
        .timeout(Duration::from_secs(300))
        .run();
    let local = BackupInfo::parse(local.ok());

    // Stream mode and dumps need pg_basebackup and pg_dump of the server's version or newer.
    let stream = repo.cmd("backup").args(["--pg", &dsn, "--json"]).timeout(Duration::from_secs(300)).run();
    let dump = repo.cmd("backup").args(["--pg", &dsn, "--pg-dump", "postgres", "--json"]).run();
    let clients = (major <= CLIENTS).then(|| (BackupInfo::parse(stream.ok()), BackupInfo::parse(dump.ok())));
    if major > CLIENTS {
        for (out, program) in [(&stream, "pg_basebackup"), (&dump, "pg_dump")] {
            out.code_is(12)
                .stderr_mentions(&format!("needs {program} of PostgreSQL {major} or newer"), "the program and version")
                .stderr_mentions("--pg-bin", "the fix");
        }
        assert_eq!(repo.snapshots().len(), 1, "a refused backup writes no snapshot");
    }

    // More rows, one transaction each; targets at rows 525 (its transaction) and 550 (its
    // commit time); then WAL past them archived.
    for n in 501..=600 {
        primary.sql(&format!("INSERT INTO t VALUES ({n}, 'after')"));
    }
    let target = primary.sql(
        "SELECT to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00' \
         FROM t WHERE n = 550",
    );
    let xid = primary.sql("SELECT xmin FROM t WHERE n = 525");
    primary.archive_all_wal();

    // Failover: a standby made from the local-mode backup (restored with its archiving kept,
    // then standby.signal and primary_conninfo) follows the primary; the primary stops, and
    // `drctl promote` makes the standby the primary of timeline 2, whose history file it
    // archives into the repository.
    let standby_dir = ws.join("standby");
    repo.cmd("restore")
        .arg(&local.short_id)
        .args(["--archive-mode", "keep", "--key-file"])
        .arg(&key_file)
        .arg("--to")
        .arg(&standby_dir)
        .run()
        .ok();
    let mut auto_conf =
        std::fs::OpenOptions::new().append(true).open(standby_dir.join("postgresql.auto.conf")).unwrap();
    let follow =
        format!("recovery_target = ''\nprimary_conninfo = 'host=127.0.0.1 port={} user=postgres'\n", primary.port);
    std::io::Write::write_all(&mut auto_conf, follow.as_bytes()).unwrap();
    std::fs::write(standby_dir.join("standby.signal"), "").unwrap();
    let mut standby = Cluster::existing_version(major, &standby_dir, &[]);
    standby.start();
    standby.wait_for("SELECT count(*) FROM t", "600", Duration::from_secs(60));
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "t");
    primary.stop();
    repo.cmd("promote")
        .args(["--pg", &standby.dsn(), "--assume-fenced"])
        .timeout(Duration::from_secs(120))
        .run()
        .ok()
        .mentions("promoted", "the promotion");
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "f", "the standby was promoted");
    assert!(repo.path.join("wal/00000002/00000002.history").is_file(), "timeline 2's history is archived");
    standby.stop();

    // Another version's postgres is refused before any file is written.
    let other = if major == 15 { 13 } else { 15 };
    let refused = ws.join("refused");
    restore_started(&repo, &key_file, &[&local.short_id], &refused, &server_bin(other))
        .code_is(12)
        .stderr_mentions(&format!("needs postgres of PostgreSQL {major}"), "what is missing")
        .stderr_mentions(&format!("is {other}"), "what was found instead");
    assert!(!refused.exists(), "nothing was written for a refused restore");

    // A point in time, with the version's own server: the newest base backup that ended before
    // it (the stream-mode one where there is one) and the WAL after it, through wal-fetch.
    let bin: PathBuf = server_bin(major);
    let pitr = ws.join("pitr");
    let chosen = clients.as_ref().map_or(&local.short_id, |(stream, _)| &stream.short_id);
    restore_started(&repo, &key_file, &["--point-in-time", &target], &pitr, &bin)
        .ok()
        .mentions(&format!("restored snapshot {chosen}"), "the backup chosen")
        .mentions("promoted", "the report");
    assert_eq!(rows_restored(major, &pitr), rows_up_to(550), "exactly the rows committed by the target");

    // The local-mode backup, recovered to a transaction.
    let to_xid = ws.join("to-xid");
    restore_started(&repo, &key_file, &[&local.short_id, "--target-xid", &xid], &to_xid, &bin).ok();
    assert_eq!(rows_restored(major, &to_xid), rows_up_to(525), "the rows up to the target transaction");

    let Some((_, dump)) = clients else { return };

    // The dump, restored with pg_restore into a new database of a server of the same version.
    let mut server = Cluster::existing_version(major, &pitr, &[("archive_mode", "off".into())]);
    server.start();
    server.sql("CREATE DATABASE restored");
    let into = format!("host=127.0.0.1 port={} user=postgres dbname=restored", server.port);
    repo.cmd("restore").arg(&dump.short_id).args(["--pg", &into]).timeout(Duration::from_secs(120)).run().ok();
    assert_eq!(server.sql_in("restored", "SELECT count(*) FROM t"), "500", "the dump's rows");
}
