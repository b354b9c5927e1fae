//! Timelines in the WAL archive: a restored copy (a test, a drill) must not archive into the
//! repository it came from, so that it never becomes the latest point a restore of the original
//! reaches.

use std::time::Duration;

use crate::harness::*;
use crate::pg::{Cluster, archiving_to, repo_for_postgres};

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
    let ws = Workspace::new_public();
    let (repo, key_file) = repo_for_postgres(&ws);
    let mut primary = Cluster::init(&ws.join("primary"), &archiving_to(&repo, &key_file));
    primary.start();
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
}
