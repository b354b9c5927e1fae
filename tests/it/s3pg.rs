//! PostgreSQL on an S3 repository: the server archives through `drctl wal-push` into moto's S3,
//! a base backup goes there too, and a point-in-time restore replays the archive from S3 through
//! the restore_command drctl writes (which must carry the S3 settings, not mistake the location
//! for a path).

use std::time::Duration;

use crate::harness::moto::Moto;
use crate::harness::pg::{Cluster, archiving};
use crate::harness::*;

#[test]
fn a_cluster_archives_to_s3_and_recovers_from_it_to_the_latest_commit() {
    let moto = Moto::start("pg-archive");
    let ws = Workspace::new_public();
    let repo = "s3://pg-archive/cluster-a";
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
    primary.sql("CREATE TABLE t (n int PRIMARY KEY)");
    primary.sql("INSERT INTO t SELECT generate_series(1, 100)");
    moto.drctl("backup").args(["--repo", repo, "--pg", &primary.dsn()]).timeout(Duration::from_secs(300)).run().ok();
    primary.sql("INSERT INTO t SELECT generate_series(101, 250)");
    primary.archive_all_wal();
    primary.stop();

    let dir = ws.join("restored");
    let out = moto
        .drctl("restore")
        .args(["--repo", repo, "--point-in-time", "latest", "--start", "--key-file"])
        .arg(&key_file)
        .arg("--to")
        .arg(&dir)
        .timeout(Duration::from_secs(300))
        .run();
    out.ok().mentions("promoted", "the report");
    let conf = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains(repo) && conf.contains("--s3-endpoint"), "{conf}");
    let mut restored = Cluster::existing(&dir, &[("archive_mode", "off".into())]);
    restored.start();
    assert_eq!(restored.sql("SELECT count(*), max(n) FROM t"), "250|250", "{out}");
    restored.stop();
    moto.drctl("check").args(["--repo", repo, "--read-data"]).run().ok();
}
