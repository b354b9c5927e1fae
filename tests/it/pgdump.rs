//! Logical dumps: pg_dump streamed into the repository, restored with pg_restore into a new
//! database, compared with pg_dump of the original.

use std::process::Command;
use std::time::Duration;

use crate::harness::pg::{BIN, Cluster};
use crate::harness::*;

fn plain_dump(cluster: &Cluster, db: &str) -> String {
    let out = Command::new(format!("{BIN}/pg_dump"))
        .args(["-h", "127.0.0.1", "-U", "postgres", "-p", &cluster.port.to_string(), "-d", db])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // \restrict / \unrestrict carry a random key per dump (PostgreSQL 15.14+): not content.
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn logical_dump_restores_into_a_new_database_identically() {
    let ws = Workspace::new_public();
    let repo = ws.repo();
    repo.init();
    let mut server = Cluster::init(&ws.join("pg"), &[]);
    server.start();
    server.sql("CREATE DATABASE app");
    let app = |sql: &str| server.sql_in("app", sql);
    app("CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12,2))");
    app("INSERT INTO accounts SELECT g, md5(g::text), g * 1.5 FROM generate_series(1, 20000) g");
    app("CREATE INDEX ON accounts (owner)");
    app("CREATE VIEW rich AS SELECT * FROM accounts WHERE balance > 1000");
    let dsn = server.dsn();

    let out =
        repo.cmd("backup").args(["--pg", &dsn, "--pg-dump", "app", "--json"]).timeout(Duration::from_secs(120)).run();
    out.ok();
    let backup = BackupInfo::parse(&out);
    assert_eq!(repo.snapshots()[0]["kind"], "pg-dump");

    server.sql("CREATE DATABASE app_copy");
    let target = format!("host=127.0.0.1 port={} user=postgres dbname=app_copy", server.port);
    repo.cmd("restore").arg(&backup.short_id).args(["--pg", &target]).timeout(Duration::from_secs(120)).run().ok();
    let (copy, original) = (plain_dump(&server, "app_copy"), plain_dump(&server, "app"));
    assert!(original.contains("20000\td9798cdf31c02d86b8b81cc119d94836"), "the dump holds the data");
    let first_difference = copy.lines().zip(original.lines()).find(|(a, b)| a != b);
    assert!(
        copy == original,
        "the restored database differs ({} vs {} lines); first difference: {first_difference:?}",
        copy.lines().count(),
        original.lines().count()
    );

    // A database that does not exist: pg_dump fails, no snapshot is written.
    let before = repo.snapshots().len();
    repo.cmd("backup")
        .args(["--pg", &dsn, "--pg-dump", "nosuchdb"])
        .run()
        .code_is(12)
        .stderr_mentions("nosuchdb", "the cause");
    assert_eq!(repo.snapshots().len(), before);
}
