//! Base backups in both modes round-trip: `pg_dumpall` of the source when the backup ended equals
//! `pg_dumpall` of the restored, recovered cluster. Local mode also keeps a tablespace, leaves
//! out what pg_basebackup leaves out, and skips files unchanged since the previous local backup.

use std::process::Command;
use std::time::Duration;

use crate::harness::pg::{BIN, Cluster, archiving_primary, as_postgres};
use crate::harness::*;

fn dumpall(cluster: &Cluster) -> String {
    let out = Command::new(format!("{BIN}/pg_dumpall"))
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "--no-tablespaces",
            "--no-unlogged-table-data",
            "-p",
            &cluster.port.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_dumpall: {}", String::from_utf8_lossy(&out.stderr));
    // \restrict / \unrestrict carry a random key per dump (PostgreSQL 15.14+): not content.
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes a workload in two databases, one table in a tablespace outside the data directory.
fn workload(primary: &Cluster, round: u32) {
    let base = round * 10_000;
    primary.sql(&format!(
        "INSERT INTO t SELECT g, md5(g::text), repeat('x', g % 500) FROM generate_series({}, {}) g",
        base + 1,
        base + 5000
    ));
    primary.sql(&format!("INSERT INTO spaced SELECT g, 'round {round}' FROM generate_series(1, 2000) g"));
    primary.sql(&format!("UPDATE t SET label = 'touched {round}' WHERE n % 97 = 0"));
}

fn restore_and_compare(repo: &Repo, key_file: &std::path::Path, ws: &Workspace, snapshot: &str, expected: &str) {
    let target = ws.join(format!("restored-{snapshot}"));
    repo.restore_cmd(snapshot, &target).arg("--key-file").arg(key_file).run().ok();
    // What pg_basebackup leaves out is left out: runtime state and WAL.
    assert!(!target.join("postmaster.pid").exists(), "postmaster.pid is not restored");
    let wal: Vec<_> = std::fs::read_dir(target.join("pg_wal")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(wal, ["archive_status"], "pg_wal holds no WAL from the source");
    assert!(target.join("backup_label").is_file(), "backup_label is restored");
    let mut restored = Cluster::existing(&target, &[("archive_mode", "off".into())]);
    restored.start();
    restored.wait_for("SELECT pg_is_in_recovery()", "f", Duration::from_secs(60));
    let got = dumpall(&restored);
    if got != expected {
        let (a, b) = (ws.join("expected.sql"), ws.join("got.sql"));
        std::fs::write(&a, expected).unwrap();
        std::fs::write(&b, &got).unwrap();
        let diff = Command::new("diff").arg(&a).arg(&b).output().unwrap();
        let diff = String::from_utf8_lossy(&diff.stdout);
        panic!("snapshot {snapshot}: the restored cluster differs from the source:\n{diff:.3000}\n{}", restored.log());
    }
    assert_eq!(restored.sql("SELECT count(*) FROM spaced"), primary_count_hint(expected));
    // Unlogged tables come back empty, as after a crash: only their init forks were copied.
    if restored.sql("SELECT count(*) FROM pg_class WHERE relname = 'scratch'") == "1" {
        assert_eq!(restored.sql("SELECT count(*) FROM scratch"), "0");
    }
    restored.stop();
}

/// The row count of `spaced` as the dump shows it (a COPY block of one line per row).
fn primary_count_hint(dump: &str) -> String {
    let start = dump.find("COPY public.spaced").expect("spaced is dumped");
    let block = &dump[start..];
    let end = block.find("\n\\.\n").unwrap();
    (block[..end].lines().count() - 1).to_string()
}

/// The archiving primary with a tablespace outside its data directory, a table in it and two
/// outside, an unlogged table and a second database.
fn primary_with_tablespace(ws: &Workspace) -> (Repo, std::path::PathBuf, Cluster) {
    let (repo, key_file, primary) = archiving_primary(ws, &[], &[]);
    let space = ws.mkdir("space");
    let (uid, gid) = user_ids("postgres");
    std::os::unix::fs::chown(&space, Some(uid), Some(gid)).unwrap();
    primary.sql(&format!("CREATE TABLESPACE outside LOCATION '{}'", space.display()));
    primary.sql("CREATE TABLE t (n int PRIMARY KEY, digest text, label text)");
    primary.sql("CREATE TABLE spaced (n int, note text) TABLESPACE outside");
    primary.sql("CREATE UNLOGGED TABLE scratch AS SELECT g FROM generate_series(1, 1000) g");
    primary.sql("CREATE DATABASE second");
    (repo, key_file, primary)
}

#[test]
fn local_mode_round_trips_and_reads_only_changed_files() {
    let ws = Workspace::new_public();
    let (repo, key_file, mut primary) = primary_with_tablespace(&ws);
    workload(&primary, 1);
    primary.sql("CHECKPOINT");
    // Files are reused only when last written well before the previous backup started.
    std::thread::sleep(Duration::from_secs(6));
    let local = |extra: &[&str]| {
        let mut cmd = repo.cmd("backup").arg("--pg").arg(primary.dsn()).args(["--pg-mode", "local", "--pgdata"]);
        cmd = cmd.arg(&primary.data).arg("--json").args(extra).timeout(Duration::from_secs(300));
        let out = cmd.run();
        out.ok();
        (BackupInfo::parse(&out), dumpall(&primary))
    };
    let (first, first_dump) = local(&[]);
    assert_eq!(first.json["unchanged_bytes"], 0, "nothing to reuse the first time");

    workload(&primary, 2);
    primary.sql("CHECKPOINT");
    let (second, second_dump) = local(&[]);
    assert!(
        second.json["unchanged_bytes"].as_u64().unwrap() > second.logical_bytes / 2,
        "most files did not change and were not read again: {}",
        second.json
    );
    assert!(
        second.json["delta_chunks"].as_u64().unwrap() > 0,
        "changed relation blocks are stored as deltas against their previous versions: {}",
        second.json
    );
    let (full, _) = local(&["--read-all"]);
    assert_eq!(full.json["unchanged_bytes"], 0, "--read-all reads every file");
    assert!(
        full.stored_bytes < full.logical_bytes / 20,
        "nothing changed since: read again, stored once: {}",
        full.json
    );

    let snaps = repo.snapshots();
    let pg = &snaps.iter().find(|s| s["id"] == second.id.as_str()).unwrap()["pg"];
    assert_eq!(pg["mode"], "local");
    assert!(pg["tablespace_map"].as_str().is_some_and(|m| m.contains("space")), "{pg}");
    primary.sql("SELECT pg_switch_wal()");
    primary.stop();

    restore_and_compare(&repo, &key_file, &ws, &first.short_id, &first_dump);
    restore_and_compare(&repo, &key_file, &ws, &second.short_id, &second_dump);
    repo.cmd("check").arg("--read-data").run().ok();
}

/// With the WAL's block maps, a local incremental reads only the pages the WAL names: a table
/// whose every file was rewritten on disk since (a checkpoint after scattered updates) is not
/// read again, apart from its changed pages. A damaged map costs reading its segment instead,
/// and is reported by `check`; the restore is exact either way.
#[test]
fn local_incremental_reads_only_the_pages_the_wal_names() {
    let ws = Workspace::new_public();
    let (repo, key_file, mut primary) = primary_with_tablespace(&ws);
    primary.sql("CREATE TABLE big (n int PRIMARY KEY, pad text) WITH (fillfactor = 90)");
    primary.sql("INSERT INTO big SELECT g, repeat('y', 150) FROM generate_series(1, 150000) g");
    primary.sql("CREATE TABLE doomed AS SELECT g FROM generate_series(1, 5000) g");
    // Its first vacuum changes every page (all visible): before the first backup.
    primary.sql("VACUUM (FREEZE) big");
    workload(&primary, 1);
    primary.sql("CHECKPOINT");
    let local = || {
        let cmd = repo.cmd("backup").arg("--pg").arg(primary.dsn()).args(["--pg-mode", "local", "--pgdata"]);
        let out = cmd.arg(&primary.data).args(["--json", "-v"]).timeout(Duration::from_secs(300)).run();
        out.ok();
        (BackupInfo::parse(&out), out, dumpall(&primary))
    };
    let (first, _, _) = local();

    // Scattered updates, a relation created and one truncated, a vacuum (visibility and free
    // space maps), then a checkpoint that writes every changed file.
    primary.sql("UPDATE big SET pad = 'changed' WHERE n % 5000 = 0");
    workload(&primary, 2);
    primary.sql("CREATE TABLE fresh AS SELECT g FROM generate_series(1, 3000) g");
    primary.sql("TRUNCATE doomed");
    primary.sql("INSERT INTO doomed SELECT g FROM generate_series(1, 10) g");
    primary.sql("VACUUM big");
    primary.sql("CHECKPOINT");
    primary.sql("SELECT pg_switch_wal()");
    primary.sql("CHECKPOINT");
    let big_bytes: u64 = primary.sql("SELECT pg_relation_size('big')").parse().unwrap();
    // The newest map the archive holds is damaged: its segment is read instead.
    let mut maps: Vec<_> = walkdir(&repo.path.join("walmap"));
    maps.sort();
    let damaged = maps.last().expect("wal-push stored block maps").clone();
    let mut bytes = std::fs::read(&damaged).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&damaged, bytes).unwrap();

    let (second, out, second_dump) = local();
    out.stderr_mentions("reading only the pages the WAL says changed", "the maps were used");
    out.stderr_mentions("reading the WAL segment instead", "the damaged map");
    let read = second.logical_bytes - second.json["unchanged_bytes"].as_u64().unwrap();
    assert!(
        read < big_bytes / 3,
        "{read} bytes read of {}, where `big` alone is {big_bytes} bytes, rewritten since: {}",
        second.logical_bytes,
        second.json
    );
    assert!(first.logical_bytes > big_bytes);
    primary.sql("SELECT pg_switch_wal()");
    primary.stop();

    restore_and_compare(&repo, &key_file, &ws, &second.short_id, &second_dump);
    repo.cmd("check").arg("--read-data").run().code_is(3).mentions("WAL block map", "the damaged map");
}

/// Every file below `dir`.
fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files.extend(walkdir(&path)) } else { files.push(path) }
    }
    files
}

#[test]
fn stream_mode_round_trips() {
    let ws = Workspace::new_public();
    let (repo, key_file, mut primary) = archiving_primary(&ws, &[], &[]);
    primary.sql("CREATE TABLE t (n int PRIMARY KEY, digest text, label text)");
    primary.sql("CREATE TABLE spaced (n int, note text)");
    primary.sql("CREATE DATABASE second");
    workload(&primary, 1);
    let out = repo.cmd("backup").arg("--pg").arg(primary.dsn()).arg("--json").timeout(Duration::from_secs(300)).run();
    out.ok();
    let backup = BackupInfo::parse(&out);
    let dump = dumpall(&primary);
    workload(&primary, 2);
    primary.sql("SELECT pg_switch_wal()");
    primary.stop();
    restore_and_compare(&repo, &key_file, &ws, &backup.short_id, &dump);
}

#[test]
fn local_mode_refuses_the_data_directory_of_another_cluster() {
    let ws = Workspace::new_public();
    let (repo, _, primary) = archiving_primary(&ws, &[], &[]);
    let other = ws.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (uid, gid) = user_ids("postgres");
    chown_r(&other, uid, gid);
    let status = as_postgres(format!("{BIN}/initdb")).args(["-U", "postgres", "--no-sync", "-D"]).arg(&other).output();
    assert!(status.unwrap().status.success());
    let before = repo.file_set();
    repo.cmd("backup")
        .arg("--pg")
        .arg(primary.dsn())
        .args(["--pg-mode", "local", "--pgdata"])
        .arg(&other)
        .run()
        .code_is(2)
        .stderr_mentions("another cluster", "the cause")
        .stderr_mentions("--pgdata", "the fix");
    assert_eq!(repo.file_set(), before, "the repository is unchanged");
    repo.cmd("backup")
        .arg("--pg")
        .arg(primary.dsn())
        .args(["--pg-mode", "local"])
        .env_remove("PGDATA")
        .run()
        .code_is(2);
}

/// A file unchanged since the previous local backup is reused unread only while its chunks are
/// indexed: with the index file that listed them lost, the next backup reads and stores it again
/// instead of writing a snapshot that points into no index.
#[test]
fn local_mode_does_not_reuse_chunks_that_are_in_no_index() {
    let ws = Workspace::new_public();
    let (repo, key_file, mut primary) = archiving_primary(&ws, &[], &[]);
    primary.sql("CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    primary.sql("CHECKPOINT");
    std::thread::sleep(Duration::from_secs(6));
    let local = || {
        let cmd = repo.cmd("backup").arg("--pg").arg(primary.dsn()).args(["--pg-mode", "local", "--pgdata"]);
        let out = cmd.arg(&primary.data).arg("--json").timeout(Duration::from_secs(300)).run();
        out.ok();
        BackupInfo::parse(&out)
    };
    local();
    let first_index = repo.indexes();
    let second = local();
    assert!(second.json["unchanged_bytes"].as_u64().unwrap() > 0, "{}", second.json);
    // The second backup's files point into the first backup's index file: lose it.
    for index in &first_index {
        std::fs::remove_file(&index.path).unwrap();
    }
    let third = local();
    let check = repo.cmd("check").arg("--json").run();
    let report = check.json();
    for problem in report["problems"].as_array().unwrap() {
        assert!(
            !problem["snapshots"].as_array().unwrap().iter().any(|s| s == third.id.as_str()),
            "the new snapshot reuses chunks in no index: {problem}\n{}",
            third.json
        );
    }
    repo.restore_cmd(&third.short_id, &ws.join("restored")).arg("--key-file").arg(&key_file).run().ok();
    primary.stop();
}

/// Local mode ends the backup without the server's own wait for archiving (which looks once a
/// second) and waits itself: with an archive_command that takes its time, the backup's last WAL
/// segment is in the repository the moment the backup returns.
#[test]
fn local_mode_returns_only_once_its_last_wal_segment_is_archived() {
    let ws = Workspace::new_public();
    let (repo, key_file) = crate::harness::pg::repo_for_postgres(&ws);
    let slow = format!("sleep 2 && {}", crate::harness::pg::drctl_env(&repo, &key_file));
    let mut primary = Cluster::init(&ws.join("primary"), &crate::harness::pg::archiving(&slow, &[], &[]));
    primary.start();
    primary.sql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS n");
    let out = repo
        .cmd("backup")
        .arg("--pg")
        .arg(primary.dsn())
        .args(["--pg-mode", "local", "--pgdata"])
        .arg(&primary.data)
        .arg("--json")
        .timeout(Duration::from_secs(120))
        .run();
    out.ok();
    let id = BackupInfo::parse(&out).id;
    let snaps = repo.snapshots();
    let stop_lsn =
        snaps.iter().find(|s| s["id"] == id.as_str()).unwrap()["pg"]["stop_lsn"].as_str().unwrap().to_string();
    let segment = primary.sql(&format!("SELECT pg_walfile_name('{stop_lsn}')"));
    repo.cmd("wal-fetch").arg(&segment).arg(ws.join("fetched")).arg("--key-file").arg(&key_file).run().ok();
    primary.stop();
}
