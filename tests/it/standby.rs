//! Base backups taken from a streaming standby (archive_mode = always), in both modes, restore to
//! a cluster that holds exactly what the primary had committed before each backup started. The
//! primary and the standby archive into the same repository: every segment reaches it twice,
//! with identical content.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::pg::{Cluster, archiving_primary, drctl_env, wal_push_command};
use crate::harness::*;

/// "16/B374D848" as a number, to compare WAL positions.
fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').unwrap_or_else(|| panic!("{text:?} is not an LSN"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// Writes `rows` rows of `phase` on the primary and waits until the standby has replayed them;
/// returns the primary's WAL position after the write.
fn write_and_replicate(primary: &Cluster, standby: &Cluster, phase: &str, first: u32, rows: u32) -> String {
    primary.sql(&format!(
        "INSERT INTO t SELECT g, '{phase}', repeat(md5(g::text), 8) FROM generate_series({first}, {}) g",
        first + rows - 1
    ));
    let written = primary.sql("SELECT pg_current_wal_lsn()");
    standby.wait_for(&format!("SELECT pg_last_wal_replay_lsn() >= '{written}'::pg_lsn"), "t", Duration::from_secs(60));
    standby.wait_for(
        &format!("SELECT count(*) FROM t WHERE phase = '{phase}'"),
        &rows.to_string(),
        Duration::from_secs(60),
    );
    written
}

/// Runs a backup of the standby while the primary switches to a new WAL segment every 500 ms (a
/// row in `ticks` first, so the switch is never a no-op): on a standby, the backup's end waits
/// until the standby has archived its last segment, which happens only once it is complete.
fn backup_from_standby(primary: &Cluster, backup: Drctl) -> (BackupInfo, Output) {
    let done = AtomicBool::new(false);
    let out = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                primary.sql("INSERT INTO ticks DEFAULT VALUES");
                primary.sql("SELECT pg_switch_wal()");
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        let out = backup.timeout(Duration::from_secs(300)).run();
        done.store(true, Ordering::Relaxed);
        out
    });
    out.ok();
    let info = BackupInfo::parse(&out);
    eprintln!("backup {} from the standby took {:.2?}", info.short_id, out.elapsed);
    (info, out)
}

/// Restores `snapshot`, lets PostgreSQL recover it to the backup's end point and promote, and
/// returns the rows of `t` per phase.
fn restore_and_count(repo: &Repo, key_file: &std::path::Path, ws: &Workspace, snapshot: &str) -> String {
    let target = ws.join(format!("restored-{snapshot}"));
    repo.restore_cmd(snapshot, &target).arg("--key-file").arg(key_file).run().ok();
    assert!(!target.join("standby.signal").exists(), "snapshot {snapshot}: standby.signal is not restored");
    assert!(target.join("recovery.signal").is_file(), "snapshot {snapshot}: recovery.signal is written");
    assert!(target.join("backup_label").is_file(), "snapshot {snapshot}: backup_label is restored");
    let label = std::fs::read_to_string(target.join("backup_label")).unwrap();
    assert!(label.contains("BACKUP FROM: standby"), "snapshot {snapshot}: a standby's backup_label:\n{label}");
    let mut restored = Cluster::existing(&target, &[("archive_mode", "off".into())]);
    restored.start();
    restored.wait_for("SELECT pg_is_in_recovery()", "f", Duration::from_secs(60));
    let counts = restored.sql("SELECT phase, count(*) FROM t GROUP BY phase ORDER BY phase");
    let distinct = restored.sql("SELECT count(DISTINCT n) FROM t");
    assert_eq!(distinct, restored.sql("SELECT count(*) FROM t"), "snapshot {snapshot}: no row twice");
    restored.stop();
    counts
}

#[test]
fn base_backups_from_a_standby_restore() {
    let ws = Workspace::new_public();
    let (repo, key_file, mut primary) = archiving_primary(&ws, &[], &[]);
    primary.sql("CREATE TABLE t (n int PRIMARY KEY, phase text, payload text)");
    primary.sql("CREATE TABLE ticks (at timestamptz DEFAULT clock_timestamp())");
    let mut standby = Cluster::standby_of(
        &primary,
        &ws.join("standby"),
        &[("archive_mode", "always".into()), ("archive_command", wal_push_command(&drctl_env(&repo, &key_file), &[]))],
    );
    standby.start();
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "t");

    // Stream mode (pg_basebackup from the standby).
    let first_lsn = write_and_replicate(&primary, &standby, "first", 1, 3000);
    let stream_cmd = repo.cmd("backup").arg("--pg").arg(standby.dsn()).arg("--json");
    let (stream, _) = backup_from_standby(&primary, stream_cmd);

    // Local mode (pg_backup_start/stop on the standby, its data directory read by drctl).
    let second_lsn = write_and_replicate(&primary, &standby, "second", 3001, 2000);
    let local_cmd = repo.cmd("backup").arg("--pg").arg(standby.dsn()).args(["--pg-mode", "local", "--pgdata"]);
    let (local, _) = backup_from_standby(&primary, local_cmd.arg(&standby.data).arg("--json"));

    // Rows written after both backups are in neither.
    write_and_replicate(&primary, &standby, "after", 5001, 1000);
    primary.sql("SELECT pg_switch_wal()");
    standby.stop();
    primary.stop();
    let archive_errors: Vec<String> = [&primary, &standby]
        .iter()
        .flat_map(|c| {
            c.log().lines().filter(|l| l.contains("archive command failed")).map(str::to_string).collect::<Vec<_>>()
        })
        .collect();
    if !archive_errors.is_empty() {
        eprintln!("archive_command failures (retried by PostgreSQL):\n{}", archive_errors.join("\n"));
    }

    let snapshots = repo.snapshots();
    for (backup, mode, covered) in [(&stream, "stream", &first_lsn), (&local, "local", &second_lsn)] {
        let snap = snapshots.iter().find(|s| s["id"] == backup.id.as_str()).expect("the snapshot is listed");
        let pg = &snap["pg"];
        assert_eq!(snap["kind"], "pg-base", "{snap}");
        assert_eq!(pg["mode"], mode, "{pg}");
        assert_eq!(pg["timeline"], 1, "{pg}");
        assert_eq!(pg["pg_version"], "15", "{pg}");
        let (start, stop) = (pg["start_lsn"].as_str().unwrap(), pg["stop_lsn"].as_str().unwrap());
        assert!(lsn(start) <= lsn(stop), "the backup starts before it stops: {pg}");
        assert!(
            lsn(stop) >= lsn(covered),
            "the backup ends after what the standby had replayed when it started ({covered}): {pg}"
        );
        assert_eq!(snap["missing_wal"], serde_json::json!([]), "its WAL is archived: {snap}");
    }

    assert_eq!(
        restore_and_count(&repo, &key_file, &ws, &stream.short_id),
        "first|3000",
        "the stream-mode backup holds every row replicated before it and none after"
    );
    assert_eq!(
        restore_and_count(&repo, &key_file, &ws, &local.short_id),
        "first|3000\nsecond|2000",
        "the local-mode backup holds every row replicated before it and none after"
    );
    repo.cmd("check").arg("--read-data").run().ok();
}
