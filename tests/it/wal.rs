//! wal-push / wal-fetch: the WAL archive, driven by a real PostgreSQL 15 server through
//! archive_command and restore_command, and its refusals.

use std::fs;
use std::time::Duration;

use crate::harness::pg::{Cluster, archiving_primary, drctl_env};
use crate::harness::*;

#[test]
fn postgres_archives_through_wal_push_and_recovers_through_wal_fetch() {
    let ws = Workspace::new_public();
    let (repo, key_file, mut primary) = archiving_primary(&ws, &[], &[]);
    let env = drctl_env(&repo, &key_file);
    let data = primary.data.clone();
    primary.sql("CREATE TABLE t (n int PRIMARY KEY, pad text)");
    primary.sql("CHECKPOINT");
    // A base: a copy of the cleanly stopped data directory.
    primary.stop();
    let base = ws.join("base");
    let base2 = ws.join("base2");
    for copy in [&base, &base2] {
        let out = std::process::Command::new("cp").arg("-a").arg(&data).arg(copy).output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    primary.start();
    let mut last = String::new();
    for batch in 0..6 {
        primary.sql(&format!(
            "INSERT INTO t SELECT g, repeat(md5(g::text), 20) FROM generate_series({}, {}) g",
            batch * 1000 + 1,
            batch * 1000 + 1000
        ));
        last = primary.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
        primary.sql("SELECT pg_switch_wal()");
    }
    primary.wait_for(
        &format!("SELECT last_archived_wal >= '{last}' AND failed_count = 0 FROM pg_stat_archiver"),
        "t",
        Duration::from_secs(60),
    );
    primary.stop();
    assert!(fs::read_dir(repo.path.join("wal/00000001")).unwrap().count() >= 6, "segments are archived");

    // Recover the base from the archive alone: restore_command is drctl wal-fetch.
    fs::write(base.join("recovery.signal"), b"").unwrap();
    let (uid, gid) = user_ids("postgres");
    chown_r(&base, uid, gid);
    let mut restored = Cluster::existing(
        &base,
        &[("archive_mode", "off".into()), ("restore_command", format!("'{env} wal-fetch %f %p'"))],
    );
    restored.start();
    restored.wait_for("SELECT pg_is_in_recovery()", "f", Duration::from_secs(60));
    assert_eq!(restored.sql("SELECT count(*), max(n) FROM t"), "6000|6000", "{}", restored.log());
    restored.stop();

    let check = repo.cmd("check").arg("--read-data").run();
    check.ok();
    assert!(!check.all().contains(" 0 WAL files"), "check counts the WAL archive\n{check}");

    // A damaged segment in the middle stops recovery (wal-fetch exits 126) instead of ending it
    // there and promoting a database that silently lacks the later rows.
    let mut segments: Vec<_> =
        fs::read_dir(repo.path.join("wal/00000001")).unwrap().map(|e| e.unwrap().path()).collect();
    segments.sort();
    let victim = &segments[segments.len() / 2];
    let mut sealed = fs::read(victim).unwrap();
    let mid = sealed.len() / 2;
    sealed[mid] ^= 1;
    fs::write(victim, &sealed).unwrap();
    fs::write(base2.join("recovery.signal"), b"").unwrap();
    chown_r(&base2, uid, gid);
    let mut stopped = Cluster::existing(
        &base2,
        &[("archive_mode", "off".into()), ("restore_command", format!("'{env} wal-fetch %f %p'"))],
    );
    stopped.start_in_recovery();
    let status = stopped.wait_exit(Duration::from_secs(60));
    assert!(status.is_some(), "recovery must stop at the damaged segment:\n{}", stopped.log());
    assert!(stopped.log().contains("is damaged"), "the log names the cause:\n{}", stopped.log());
}

#[test]
fn wal_push_is_idempotent_refuses_conflicts_and_wal_fetch_reports_clearly() {
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.init();
    let name = "000000010000000000000003";
    let pg_wal = ws.mkdir("pg_wal");
    let segment = pg_wal.join(name);
    let mut data = vec![0u8; 1 << 20];
    DataGen::mixed(5, 64 * KIB).fill(&mut data);
    fs::write(&segment, &data).unwrap();

    repo.cmd("wal-push").arg(&segment).run().ok();
    repo.cmd("wal-push").arg(&segment).run().ok(); // PostgreSQL retries after a crash: fine.
    let mut other = data.clone();
    other[1000] ^= 1;
    fs::write(&segment, &other).unwrap();
    repo.cmd("wal-push").arg(&segment).run().code_is(11).stderr_mentions("different content", "the conflict");

    let fetched = ws.join("fetched");
    repo.cmd("wal-fetch").arg(name).arg(&fetched).run().ok();
    assert!(fs::read(&fetched).unwrap() == data, "wal-fetch returns the first archived content");

    // Not in the archive: exit 1 (PostgreSQL's "no such file"), nothing written.
    let missing = ws.join("missing");
    repo.cmd("wal-fetch").arg("000000010000000000000004").arg(&missing).run().code_is(1);
    assert!(!missing.exists());
    repo.cmd("wal-fetch").arg("00000002.history").arg(&missing).run().code_is(1);

    // Damage: exit 126, so PostgreSQL stops recovery instead of ending it early.
    let object = repo.path.join("wal/00000001").join(name);
    let mut sealed = fs::read(&object).unwrap();
    let mid = sealed.len() / 2;
    sealed[mid] ^= 0x40;
    fs::write(&object, &sealed).unwrap();
    let damaged = ws.join("damaged");
    repo.cmd("wal-fetch").arg(name).arg(&damaged).run().code_is(126).stderr_mentions("damaged", "the cause");
    assert!(!damaged.exists(), "nothing unauthenticated is written");
    repo.cmd("check").arg("--read-data").run().code_is(3).mentions(name, "the damaged WAL file");

    // A name PostgreSQL never archives is refused before anything is stored.
    let bogus = pg_wal.join("not-a-wal-file");
    fs::write(&bogus, b"x").unwrap();
    repo.cmd("wal-push").arg(&bogus).run().code_is(2);
    repo.cmd("wal-fetch").arg("../../etc/passwd").arg(ws.join("x")).run().code_is(126);
}
