//! Timelines in the WAL archive: a restored copy (a test, a drill) must not archive into the
//! repository it came from, and a timeline forked off the archive's past never becomes the
//! latest point a restore of the original reaches.

use std::time::Duration;

use crate::harness::pg::{Cluster, archiving_primary};
use crate::harness::*;

/// Rows per writer in the restored cluster of `dir`, recovered to the archive's end.
fn rows_at_latest(repo: &Repo, key_file: &std::path::Path, dir: &std::path::Path) -> String {
    repo.cmd("restore")
        .args(["--point-in-time", "latest", "--start", "--key-file"])
        .arg(key_file)
        .arg("--to")
        .arg(dir)
        .timeout(Duration::from_secs(300))
        .run()
        .ok();
    let mut restored = Cluster::existing(dir, &[("archive_mode", "off".into())]);
    restored.start();
    let rows = restored.sql(
        "SELECT string_agg(who || ':' || n, ',' ORDER BY who) FROM (SELECT who, count(*) n FROM t GROUP BY who) c",
    );
    restored.stop();
    rows
}

#[test]
fn a_restored_copy_never_becomes_the_latest_point_of_its_original() {
    restored_copy_scenario(false);
}

/// The same through `wal-push --async`, whose worker pushes every ready file ahead: it archives
/// history files first and nothing of a timeline whose history file was refused.
#[test]
fn a_restored_copy_archiving_asynchronously_never_becomes_the_latest_point() {
    restored_copy_scenario(true);
}

fn restored_copy_scenario(asynchronous: bool) {
    let ws = Workspace::new_public();
    let flags: &[&str] = if asynchronous { &["--async"] } else { &[] };
    let (repo, key_file, primary) = archiving_primary(&ws, flags, &[]);
    primary.sql("CREATE TABLE t (who text, n int)");
    primary.sql("INSERT INTO t SELECT 'production', g FROM generate_series(1, 10) g");
    repo.cmd("backup").args(["--pg", &primary.dsn()]).timeout(Duration::from_secs(300)).run().ok();
    for _ in 0..3 {
        primary.sql("INSERT INTO t SELECT 'production', g FROM generate_series(1, 10) g");
        primary.archive_all_wal();
    }

    // A test restore of the base backup, started and written to, as a drill would.
    let start_copy = |name: &str, flags: &[&str]| {
        let dir = ws.join(name);
        repo.cmd("restore")
            .arg("latest")
            .args(flags)
            .arg("--key-file")
            .arg(&key_file)
            .arg("--to")
            .arg(&dir)
            .timeout(Duration::from_secs(300))
            .run()
            .ok();
        let mut copy = Cluster::existing(&dir, &[]);
        copy.start();
        copy.wait_for("SELECT pg_is_in_recovery()", "f", Duration::from_secs(60));
        copy.sql("INSERT INTO t SELECT 'drill', g FROM generate_series(1, 1000) g");
        copy
    };
    let mut copy = start_copy("copy", &[]);
    let archive_mode = copy.sql("SHOW archive_mode");
    if archive_mode == "on" {
        // What a restored cluster did before: archive its new timeline into the source repository.
        copy.archive_all_wal();
    }
    copy.stop();

    // Production goes on; its latest point holds production's rows only.
    primary.sql("INSERT INTO t SELECT 'production', g FROM generate_series(1, 10) g");
    primary.archive_all_wal();
    assert_eq!(rows_at_latest(&repo, &key_file, &ws.join("latest-1")), "production:50");
    assert_eq!(archive_mode, "off", "a restored cluster does not archive by default");

    // Asked to keep archiving, the copy tries to archive its new timeline: refused, loudly.
    let mut keep = start_copy("copy-keep", &["--archive-mode", "keep"]);
    assert_eq!(keep.sql("SHOW archive_mode"), "on");
    keep.sql("INSERT INTO t SELECT 'drill', g FROM generate_series(1, 1000) g");
    keep.sql("SELECT pg_switch_wal()");
    keep.wait_for(
        "SELECT failed_count >= 3 AND last_failed_wal = '00000002.history' FROM pg_stat_archiver",
        "t",
        Duration::from_secs(60),
    );
    assert!(keep.log().contains("leaves timeline 1 at"), "the server log says why:\n{}", keep.log());
    let tl2: Vec<_> = std::fs::read_dir(repo.path.join("wal/00000002"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(tl2.is_empty(), "nothing of timeline 2 is archived: {tl2:?}");
    keep.stop();
    primary.sql("INSERT INTO t SELECT 'production', g FROM generate_series(1, 10) g");
    primary.archive_all_wal();
    assert_eq!(rows_at_latest(&repo, &key_file, &ws.join("latest-2")), "production:60");

    // The push itself exits 11; `--allow-fork 2` accepts it (the new primary after a
    // deliberate point-in-time restore), and `snapshots` shows where timeline 2 forks.
    let history = keep.data.join("pg_wal/00000002.history");
    let push = |extra: &[&str]| repo.cmd("wal-push").arg("--key-file").arg(&key_file).args(extra).arg(&history).run();
    push(&[]).code_is(11).stderr_mentions("--allow-fork", "the hint");
    push(&["--allow-fork", "2"]).ok();
    let out = repo.cmd("snapshots").arg("--key-file").arg(&key_file).run().ok().stdout.clone();
    assert!(out.contains("timeline 2 leaves timeline 1 at"), "{out}");
    assert!(out.contains("timeline 1 goes on past it"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&repo.cmd("snapshots").args(["--json", "--key-file"]).arg(&key_file).run().ok().stdout)
            .unwrap();
    let timelines = &json[0]["timelines"];
    assert_eq!(timelines[1]["timeline"], 2, "{timelines}");
    assert_eq!(timelines[1]["parent"], 1, "{timelines}");
    assert_eq!(timelines[1]["parent_goes_on"], true, "{timelines}");
}
