//! PostgreSQL base backups (stream mode) against a real PostgreSQL 15, restored and recovered
//! through the WAL archive; and what a server that cannot be backed up gets.

use std::time::Duration;

use crate::harness::pg::{Cluster, archiving_primary, free_port};
use crate::harness::*;

#[test]
fn stream_base_backup_restores_to_its_end_point() {
    let ws = Workspace::new_public();
    let (repo, key_file, mut primary) = archiving_primary(&ws, &[], &[]);
    primary.sql("CREATE TABLE t (n int PRIMARY KEY, phase text)");
    primary.sql("INSERT INTO t SELECT g, 'before' FROM generate_series(1, 5000) g");

    let out = repo.cmd("backup").arg("--pg").arg(primary.dsn()).arg("--json").timeout(Duration::from_secs(300)).run();
    out.ok();
    let backup = BackupInfo::parse(&out);
    assert!(backup.files > 500, "a data directory has many files\n{out}");

    primary.sql("INSERT INTO t SELECT g, 'after' FROM generate_series(5001, 6000) g");
    primary.sql("SELECT pg_switch_wal()");
    primary.stop();

    let snapshots = repo.snapshots();
    let pg = &snapshots[0]["pg"];
    assert_eq!(snapshots[0]["kind"], "pg-base");
    assert_eq!(pg["pg_version"], "15");
    assert_eq!(pg["timeline"], 1);
    assert!(pg["start_lsn"].as_str().is_some_and(|s| s.contains('/')), "{pg}");

    let target = ws.join("restored");
    let out = repo.restore_cmd(&backup.short_id, &target).arg("--key-file").arg(&key_file).run();
    out.ok().mentions("recovery configured", "the next step");
    let mut restored = Cluster::existing(&target, &[("archive_mode", "off".into())]);
    restored.start();
    restored.wait_for("SELECT pg_is_in_recovery()", "f", Duration::from_secs(60));
    assert_eq!(
        restored.sql("SELECT phase, count(*) FROM t GROUP BY phase ORDER BY phase"),
        "before|5000",
        "the backup's end point holds every row committed before it and none after:\n{}",
        restored.log()
    );
    restored.stop();
    repo.cmd("check").arg("--read-data").run().ok();

    // A server of another major version given with --pg-bin is refused before anything is
    // restored, not replaced by one found elsewhere.
    let fake_bin = ws.mkdir("fake-bin");
    let fake = fake_bin.join("postgres");
    std::fs::write(&fake, "#!/bin/sh\necho 'postgres (PostgreSQL) 16.1'\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mismatch = ws.join("mismatch");
    repo.restore_cmd(&backup.short_id, &mismatch)
        .args(["--start", "--key-file"])
        .arg(&key_file)
        .arg("--pg-bin")
        .arg(&fake_bin)
        .run()
        .code_is(12)
        .stderr_mentions("postgres is 16", "the version found")
        .stderr_mentions("--pg-bin", "the fix");
    assert!(!mismatch.exists(), "nothing was restored");

    // The window: this backup is restorable, up to the newest archived WAL.
    assert_eq!(repo.snapshots()[0]["missing_wal"], serde_json::json!([]));
    let listing = repo.cmd("snapshots").run();
    listing.ok().mentions("point-in-time recovery", "the window").mentions("newest archived", "its end");
    // Without the backup's first WAL segment it cannot reach consistency: said, and not used.
    let start_wal = pg["start_wal"].as_str().unwrap().to_string();
    std::fs::remove_file(repo.path.join("wal").join(&start_wal[..8]).join(&start_wal)).unwrap();
    assert_eq!(repo.snapshots()[0]["missing_wal"], serde_json::json!([start_wal]));
    repo.cmd("snapshots").run().ok().mentions("cannot be restored", "the broken backup");
    let later = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S+00").to_string();
    repo.cmd("restore")
        .args(["--point-in-time", &later, "--to"])
        .arg(ws.join("unreachable"))
        .run()
        .code_is(13)
        .stderr_mentions("out of reach", "the cause");
}

#[test]
fn a_server_that_cannot_be_backed_up_gets_a_clear_error() {
    let ws = Workspace::new_public();
    let repo = ws.repo();
    repo.init();
    // Archiving off: a base backup could never be restored.
    let mut plain = Cluster::init(&ws.join("plain"), &[]);
    plain.start();
    let before = repo.file_set();
    repo.cmd("backup").arg("--pg").arg(plain.dsn()).run().code_is(12).stderr_mentions("archive_mode", "the cause");
    assert_eq!(repo.file_set(), before, "the repository is unchanged");
    plain.stop();
    // Nothing listening.
    let nowhere = format!("host=127.0.0.1 port={} user=postgres connect_timeout=5", free_port());
    repo.cmd("backup").arg("--pg").arg(&nowhere).run().code_is(12).stderr_mentions("hint:", "the fix");
}
