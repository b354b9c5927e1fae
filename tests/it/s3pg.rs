//! PostgreSQL on an S3 repository: the server archives through `drctl wal-push` into moto's S3,
//! a base backup goes there too, and a point-in-time restore replays the archive from S3 through
//! the restore_command drctl writes (which must carry the S3 settings, not mistake the location
//! for a path).

use std::time::Duration;

use crate::harness::moto::Moto;
use crate::harness::pg::{Cluster, archiving};
use crate::harness::*;

/// A new repository at `repo` in moto with a key file PostgreSQL can read, and a started cluster
/// archiving into it through `drctl wal-push`.
fn archiving_into(moto: &Moto, ws: &Workspace, repo: &str) -> (std::path::PathBuf, Cluster) {
    let key_file = ws.join("repo.key");
    moto.drctl("init").args(["--repo", repo]).run().ok();
    moto.drctl("key").args(["add", "--repo", repo, "--new-key-file"]).arg(&key_file).run().ok();
    let (uid, gid) = user_ids("postgres");
    std::os::unix::fs::chown(&key_file, Some(uid), Some(gid)).unwrap();
    let env = format!(
        "AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 DRCTL_S3_ENDPOINT={} \
         DRCTL_S3_PATH_STYLE=true DRCTL_REPO={repo} DRCTL_KEY_FILE={} {}",
        moto.endpoint,
        key_file.display(),
        drctl_bin()
    );
    let mut primary = Cluster::init(&ws.join("primary"), &archiving(&env, &[], &[]));
    primary.start();
    (key_file, primary)
}

/// `drctl restore --point-in-time latest --start` from `repo` into `dir`, which must succeed.
fn restore_latest_started(moto: &Moto, repo: &str, key_file: &std::path::Path, dir: &std::path::Path) -> Output {
    let out = moto
        .drctl("restore")
        .args(["--repo", repo, "--point-in-time", "latest", "--start", "--key-file"])
        .arg(key_file)
        .arg("--to")
        .arg(dir)
        .timeout(Duration::from_secs(300))
        .run();
    out.ok();
    out
}

#[test]
fn a_cluster_archives_to_s3_and_recovers_from_it_to_the_latest_commit() {
    let moto = Moto::start("pg-archive");
    let ws = Workspace::new_public();
    let repo = "s3://pg-archive/cluster-a";
    let (key_file, mut primary) = archiving_into(&moto, &ws, repo);
    primary.sql("CREATE TABLE t (n int PRIMARY KEY)");
    primary.sql("INSERT INTO t SELECT generate_series(1, 100)");
    moto.drctl("backup").args(["--repo", repo, "--pg", &primary.dsn()]).timeout(Duration::from_secs(300)).run().ok();
    primary.sql("INSERT INTO t SELECT generate_series(101, 250)");
    primary.archive_all_wal();
    primary.stop();

    let dir = ws.join("restored");
    let out = restore_latest_started(&moto, repo, &key_file, &dir);
    out.mentions("promoted", "the report");
    let conf = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains(repo) && conf.contains("--s3-endpoint"), "{conf}");
    let mut restored = Cluster::existing(&dir, &[("archive_mode", "off".into())]);
    restored.start();
    assert_eq!(restored.sql("SELECT count(*), max(n) FROM t"), "250|250", "{out}");
    restored.stop();
    moto.drctl("check").args(["--repo", repo, "--read-data"]).run().ok();
}

/// The GET requests the drctl process sent, from its `S3 requests sent` debug lines (JSON logs:
/// `"by_method":"{\"GET\": 8, …}"`).
fn gets(out: &crate::harness::Output) -> u64 {
    out.stderr
        .lines()
        .filter(|l| l.contains("S3 requests sent"))
        .filter_map(|l| l.split("GET\\\": ").nth(1))
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
        .sum()
}

/// The WAL block maps an incremental asked for: one GET per segment between the backups.
fn map_gets(out: &crate::harness::Output) -> u64 {
    let line = out.stderr.lines().find(|l| l.contains("reading only the pages")).unwrap_or("");
    let field = |name: &str| -> u64 {
        let Some(rest) = line.split(&format!("\"{name}\":")).nth(1) else { return 0 };
        rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    field("maps") + field("segments")
}

#[test]
fn local_mode_into_s3_reads_delta_bases_from_the_base_cache_and_a_damaged_cache_still_backs_up_right() {
    let moto = Moto::start("pg-cache");
    let ws = Workspace::new_public();
    let repo = "s3://pg-cache/cluster";
    let (key_file, mut primary) = archiving_into(&moto, &ws, repo);
    primary.sql("CREATE TABLE t (n int PRIMARY KEY, label text)");
    primary.sql("INSERT INTO t SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 300000) g");
    let cache = ws.join("cache");
    let backup = |round: u32, extra: &[&str]| {
        if round > 0 {
            primary.sql(&format!("UPDATE t SET label = 'round {round}' WHERE n % 500 = {round}"));
        }
        primary.sql("CHECKPOINT");
        let out = moto
            .drctl("backup")
            .args(["--repo", repo, "--pg", &primary.dsn(), "--pg-mode", "local", "--pgdata"])
            .arg(&primary.data)
            .arg("--cache-dir")
            .arg(&cache)
            .args(["--json"])
            .args(extra)
            .env("RUST_LOG", "drctl::store::s3=debug,drctl::ops::backup=info")
            .timeout(Duration::from_secs(300))
            .run();
        out.ok();
        let deltas = out.json()["delta_chunks"].as_u64().unwrap();
        assert!(round == 0 || deltas > 50, "round {round}: changed blocks are stored as deltas: {}", out.stdout);
        assert!(round == 0 || map_gets(&out) > 0, "round {round}: the WAL said which pages changed");
        // Those of the delta bases: the block maps' are the same with or without the cache.
        gets(&out) - map_gets(&out)
    };
    backup(0, &[]);
    let with_cache = backup(1, &[]);
    let without = backup(2, &["--no-cache"]);
    assert!(
        with_cache * 2 < without,
        "with the cache warm the incremental sends {with_cache} GETs, without it {without} (its delta bases)"
    );
    // A cache that is garbage: its packs fail authentication, are dropped and read again.
    let mut damaged = 0;
    for dir in std::fs::read_dir(&cache).unwrap() {
        for pack in std::fs::read_dir(dir.unwrap().path().join("packs")).unwrap() {
            let path = pack.unwrap().path();
            let len = std::fs::metadata(&path).unwrap().len() as usize;
            std::fs::write(&path, vec![0x5a; len]).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0, "the backups left packs in the cache");
    backup(3, &[]);
    let expect = primary.sql("SELECT count(*), md5(string_agg(label, ',' ORDER BY n)) FROM t");
    primary.archive_all_wal();
    primary.stop();

    let dir = ws.join("restored");
    restore_latest_started(&moto, repo, &key_file, &dir);
    let mut restored = Cluster::existing(&dir, &[("archive_mode", "off".into())]);
    restored.start();
    assert_eq!(restored.sql("SELECT count(*), md5(string_agg(label, ',' ORDER BY n)) FROM t"), expect);
    restored.stop();
    moto.drctl("check").args(["--repo", repo, "--read-data"]).run().ok();
}
