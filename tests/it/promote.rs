//! `drctl promote` against a real primary and streaming standby (PostgreSQL 15): each safety gate
//! refuses for real and changes nothing; a dry run changes nothing; a failover promotes the
//! standby to the next timeline, which accepts writes and whose history file reaches the
//! repository.

use std::time::Duration;

use crate::harness::pg::{Cluster, primary_and_standby};
use crate::harness::*;

fn promote(repo: &Repo, standby: &Cluster) -> Drctl {
    repo.cmd("promote").args(["--pg", &standby.dsn()]).timeout(Duration::from_secs(180))
}

#[test]
fn a_standby_is_promoted_once_its_old_primary_is_fenced_and_its_new_timeline_is_archived() {
    let ws = Workspace::new_public();
    let (repo, mut primary, standby) = primary_and_standby(&ws);
    primary.sql("INSERT INTO t SELECT generate_series(1001, 2000)");
    primary.archive_all_wal();
    standby.wait_for("SELECT count(*) FROM t", "2000", Duration::from_secs(60));

    // The old primary still takes writes: refused, found through the standby's primary_conninfo.
    let out = promote(&repo, &standby).run();
    out.code_is(15).mentions("REFUSE old primary fenced", "the fencing gate").mentions("accepts writes", "why");
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "t", "a refusal promoted\n{out}");

    // A dry run evaluates every gate and changes nothing.
    let out = promote(&repo, &standby).args(["--assume-fenced", "--dry-run"]).run();
    out.ok().mentions("every gate passes", "the verdict").mentions("archive gap-free", "the archive gate");
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "t", "a dry run promoted\n{out}");

    // Failover: the primary is gone; the standby becomes the primary of timeline 2. Named by its
    // policy, whose copy gets the new history file too.
    primary.stop();
    let copy = ws.join("copy");
    let policy = ws.join("api-db.yaml");
    std::fs::write(
        &policy,
        format!(
            "name: api-db\nkind: self-managed\ndatabase:\n  dsn: \"{dsn}\"\n\
             sources:\n  base:\n    type: base-backup\n    mode: stream\n    schedule: \"0 2 * * *\"\n\
             repositories:\n  primary:\n    location: {primary}\n    password_env: DRCTL_PASSWORD\n\
             \x20 copies:\n    - location: {copy}\n      password_env: DRCTL_PASSWORD\n\
             retention:\n  keep_last: 2\ntargets:\n  rto: 1h\n  rpo: 1h\n",
            dsn = standby.dsn(),
            primary = repo.path.display(),
            copy = copy.display()
        ),
    )
    .unwrap();
    let out = Drctl::new()
        .args(["promote", "--pg", &standby.dsn(), "--json", "--policy"])
        .arg(&policy)
        .timeout(Duration::from_secs(180))
        .run();
    out.ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(report["promoted"], true, "{out}");
    assert_eq!((report["timeline_before"].as_u64(), report["timeline_after"].as_u64()), (Some(1), Some(2)), "{out}");
    let gates = report["gates"].as_array().unwrap();
    assert!(gates.iter().all(|g| g["passed"] == true), "{out}");
    assert!(gates.iter().any(|g| g["measured"].as_str().unwrap().contains("unreachable")), "{out}");
    eprintln!(
        "promoted in {} s, history archived after {} s",
        report["promote_seconds"], report["history_archived_seconds"]
    );

    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "f");
    standby.sql("INSERT INTO t VALUES (2001)");
    assert_eq!(standby.sql("SELECT count(*) FROM t"), "2001");
    assert!(repo.path.join("wal/00000002/00000002.history").is_file(), "the new timeline's history is archived");
    assert!(copy.join("wal/00000002/00000002.history").is_file(), "and copied\n{out}");
    assert_eq!(report["history_copies"][0]["repository"], copy.display().to_string(), "{out}");
}

#[test]
fn promotion_refuses_a_paused_lagging_standby_and_a_primary_and_changes_nothing() {
    let ws = Workspace::new_public();
    let (repo, mut primary, standby) = primary_and_standby(&ws);

    // Not a standby.
    let out = repo.cmd("promote").args(["--pg", &primary.dsn(), "--assume-fenced"]).run();
    out.code_is(15).mentions("REFUSE a standby", "the standby gate");

    // Replay paused while the primary writes 4 MiB: paused, and behind what it received.
    standby.sql("SELECT pg_wal_replay_pause()");
    standby.wait_for("SELECT pg_get_wal_replay_pause_state()", "paused", Duration::from_secs(30));
    primary.sql("INSERT INTO t SELECT generate_series(1001, 60000)");
    let written = primary.sql("SELECT pg_current_wal_lsn()");
    standby.wait_for(&format!("SELECT pg_last_wal_receive_lsn() >= '{written}'"), "t", Duration::from_secs(60));
    primary.stop();
    let replayed = standby.sql("SELECT pg_last_wal_replay_lsn()");

    let out = promote(&repo, &standby).args(["--max-lag", "1MiB"]).run();
    out.code_is(15)
        .mentions("REFUSE replay running", "the pause gate")
        .mentions("REFUSE replay lag", "the lag gate")
        .mentions("ok     old primary fenced", "the fence passes: the primary is down")
        .stderr_mentions("nothing was changed", "the hint");
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "t");
    assert_eq!(standby.sql("SELECT pg_get_wal_replay_pause_state()"), "paused", "a refusal resumed replay");
    assert_eq!(standby.sql("SELECT pg_last_wal_replay_lsn()"), replayed, "a refusal replayed WAL");
    assert!(!repo.path.join("wal/00000002").exists(), "nothing of a timeline 2 reached the repository");
}
