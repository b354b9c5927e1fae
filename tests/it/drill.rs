//! `drctl heartbeat` and `drctl drill` against a real PostgreSQL 15 with a real repository: a
//! drill that passes with measured RTO and RPO, one that fails naming the missed target and the
//! failed check, and the production archive untouched by either.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::pg::{Cluster, archiving, drctl_env, repo_for_postgres};
use crate::harness::*;

/// A self-managed policy for `cluster` (a stream base backup), its primary repository opened
/// with `key_file`, the given targets and drill checks.
fn policy(cluster: &Cluster, repo: &Repo, key_file: &Path, rpo: &str, checks: &str) -> String {
    format!(
        "name: app\nkind: self-managed\ndatabase:\n  dsn: \"{dsn}\"\n\
         sources:\n  base:\n    type: base-backup\n    mode: stream\n    schedule: \"0 2 * * *\"\n\
         repositories:\n  primary:\n    location: {repo}\n    key_file: {key}\n\
         retention:\n  keep_last: 2\n\
         targets:\n  rto: 10m\n  rpo: {rpo}\n\
         drill:\n  checks:\n{checks}",
        dsn = cluster.dsn(),
        repo = repo.path.display(),
        key = key_file.display(),
    )
}

/// An archiving primary with data checksums, an `orders` table, a second database and a role,
/// and one base backup in its repository.
fn primary_with_a_backup(ws: &Workspace) -> (Repo, PathBuf, Cluster) {
    let (repo, key_file) = repo_for_postgres(ws);
    let settings = archiving(&drctl_env(&repo, &key_file), &[], &[]);
    let mut primary = Cluster::init_with(&ws.join("primary"), &["--data-checksums"], &settings);
    primary.start();
    primary.sql("CREATE TABLE orders (id int PRIMARY KEY, note text)");
    primary.sql("INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 1000) g");
    primary.sql("CREATE INDEX ON orders (note)");
    primary.sql("CREATE DATABASE reports");
    primary.sql("CREATE ROLE reporter LOGIN");
    repo.cmd("backup").args(["--pg", &primary.dsn()]).timeout(Duration::from_secs(300)).run().ok();
    (repo, key_file, primary)
}

fn drill(file: &Path, extra: &[&str]) -> Output {
    Drctl::new().args(["drill", "--json", "--policy"]).arg(file).args(extra).timeout(Duration::from_secs(600)).run()
}

fn wal_listing(repo: &Path) -> Vec<String> {
    let mut names: Vec<String> = walkdir(&repo.join("wal"));
    names.sort();
    names
}

fn walkdir(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match path.is_dir() {
            true => out.extend(walkdir(&path)),
            false => out.push(path.display().to_string()),
        }
    }
    out
}

fn check<'a>(record: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    record["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {record}"))
}

#[test]
fn a_drill_restores_verifies_and_measures_rto_and_rpo_without_touching_production() {
    let ws = Workspace::new_public();
    let (repo, key_file, primary) = primary_with_a_backup(&ws);
    let file = ws.join("app.yaml");
    let checks = "    - name: orders-present\n      sql: SELECT count(*), bool_and(note IS NOT NULL) FROM orders\n      expect: \"1000|t\"\n\
                  \x20   - name: reports-reachable\n      database: reports\n      sql: SELECT current_database()\n      expect: reports\n";
    std::fs::write(&file, policy(&primary, &repo, &key_file, "5m", checks)).unwrap();

    // Heartbeats (the first creates the table), then everything written so far archived.
    for _ in 0..2 {
        Drctl::new().args(["heartbeat", "--policy"]).arg(&file).run().ok().mentions("heartbeat written", "heartbeat");
    }
    assert_eq!(primary.sql("SELECT count(*) FROM drctl.heartbeat"), "2");
    let newest_beat = primary.sql("SELECT extract(epoch FROM max(at)) FROM drctl.heartbeat");
    primary.archive_all_wal();
    let wal_before = wal_listing(&repo.path);
    let timeline_before = primary.sql("SELECT timeline_id FROM pg_control_checkpoint()");

    let out = drill(&file, &["--latest"]);
    let record = out.ok().json();
    assert_eq!(record["passed"], true, "{record}");
    assert_eq!(record["mode"], "latest");
    for name in ["checksums", "databases", "roles", "amcheck", "orders-present", "reports-reachable"] {
        assert_eq!(check(&record, name)["status"], "pass", "{name}: {record}");
    }
    let phases: Vec<&str> = record["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(phases, ["select", "restore", "replay", "checksums", "open", "checks"]);
    // RPO: the drill's start minus the newest heartbeat recovered, which is the newest written.
    let beat: f64 = newest_beat.parse().unwrap();
    let recovered = chrono::DateTime::parse_from_rfc3339(record["heartbeat"].as_str().unwrap()).unwrap();
    assert!((recovered.timestamp_micros() as f64 / 1e6 - beat).abs() < 0.001, "{record} vs {beat}");
    let started = chrono::DateTime::parse_from_rfc3339(record["started"].as_str().unwrap()).unwrap();
    let rpo = record["rpo_seconds"].as_f64().unwrap();
    assert!((rpo - (started.timestamp_millis() as f64 / 1e3 - beat)).abs() < 0.01, "{record}");
    let rto = record["rto_seconds"].as_f64().unwrap();
    let total: f64 = record["phases"].as_array().unwrap().iter().map(|p| p["seconds"].as_f64().unwrap()).sum();
    assert!(rto > 0.0 && rto >= total - 0.5, "RTO {rto} covers the phases ({total}): {record}");

    // Production untouched: no new WAL, no new timeline in the archive, the primary unchanged;
    // the scratch cluster is gone.
    assert_eq!(wal_listing(&repo.path), wal_before, "the drill archived nothing");
    assert_eq!(primary.sql("SELECT timeline_id FROM pg_control_checkpoint()"), timeline_before);
    let scratch = std::env::temp_dir().join(format!("drctl-drill-{}", record["id"].as_str().unwrap()));
    assert!(!scratch.exists(), "{} removed", scratch.display());

    // The record is in the repository: listed, counted by check, copied by copy.
    let list = Drctl::new().no_password().args(["drill", "list", "--json", "--policy"]).arg(&file).run();
    let listed = list.ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], record["id"]);
    repo.cmd("check").arg("--read-data").run().ok().mentions("1 drill records", "check");
    let copy = ws.join("copy");
    let copied = Drctl::new().arg("copy").arg("--from").arg(&repo.path).arg("--to").arg(&copy).arg("--all").run();
    copied.ok().mentions(" evidence records: ", "copy");
    Drctl::sub("check", &copy).run().ok().mentions("1 drill records", "check of the copy");
}

#[test]
fn a_drill_fails_naming_the_missed_target_and_the_failed_check() {
    let ws = Workspace::new_public();
    let (repo, key_file, primary) = primary_with_a_backup(&ws);
    let file = ws.join("app.yaml");
    let checks = "    - name: invoices-present\n      sql: SELECT count(*) FROM invoices\n      expect: \"0\"\n";
    std::fs::write(&file, policy(&primary, &repo, &key_file, "1s", checks)).unwrap();
    Drctl::new().args(["heartbeat", "--policy"]).arg(&file).run().ok();
    std::thread::sleep(Duration::from_millis(2500));
    primary.sql("INSERT INTO orders VALUES (1001, 'late')");
    primary.archive_all_wal();

    let out = drill(&file, &["--latest"]);
    out.code_is(16)
        .stderr_mentions("RPO target missed", "the missed target")
        .stderr_mentions("check invoices-present failed", "the failed check");
    let record = out.json();
    assert_eq!(record["passed"], false);
    assert!(record["rpo_seconds"].as_f64().unwrap() >= 2.5, "{record}");
    let failed = check(&record, "invoices-present");
    assert_eq!(failed["status"], "fail");
    assert!(failed["detail"].as_str().unwrap().contains("invoices"), "{failed}");
    assert!(record["rto_seconds"].is_null(), "no RTO without passing checks: {record}");

    // A drill at a moment before the heartbeat's table existed cannot measure RPO: it fails
    // saying so, and the record is kept all the same.
    let before = repo.snapshots()[0]["time"].as_str().unwrap().to_string();
    let snapshot = repo.snapshots()[0]["id"].as_str().unwrap().to_string();
    let out = drill(&file, &["--snapshot", &snapshot]);
    out.code_is(16).stderr_mentions("RPO not measured", "no heartbeat");
    assert_eq!(out.json()["failure_time"].as_str().map(|t| t[..19].to_string()), Some(before[..19].to_string()));
    let listed = Drctl::new().no_password().args(["drill", "list", "--policy"]).arg(&file).run();
    listed.ok().mentions("FAIL", "the list");
}

#[test]
fn a_drill_of_logical_dumps_restores_them_into_a_new_cluster_and_measures_rpo() {
    let ws = Workspace::new_public();
    let mut server = Cluster::init(&ws.join("pg"), &[]);
    server.start();
    server.sql("CREATE DATABASE orders");
    server.sql_in("orders", "CREATE TABLE orders (id int PRIMARY KEY, owner_note text)");
    server.sql_in("orders", "INSERT INTO orders SELECT g, 'n' || g FROM generate_series(1, 500) g");
    server.sql("CREATE ROLE app LOGIN");
    server.sql_in("orders", "ALTER TABLE orders OWNER TO app");
    let repo = ws.repo();
    repo.init();
    let file = ws.join("orders.yaml");
    let dsn = server.dsn().replace("dbname=postgres", "dbname=orders");
    std::fs::write(
        &file,
        format!(
            "name: orders\nkind: self-managed\ndatabase:\n  dsn: \"{dsn}\"\n\
             sources:\n  dump:\n    type: logical-dump\n    databases: [orders]\n    schedule: \"0 */4 * * *\"\n\
             repositories:\n  primary:\n    location: {}\n    password_env: DRCTL_PASSWORD\n\
             retention:\n  keep_last: 3\ntargets:\n  rto: 10m\n  rpo: 5h\n\
             drill:\n  checks:\n    - name: orders-present\n      sql: SELECT count(*) FROM orders\n      expect: \"500\"\n",
            repo.path.display()
        ),
    )
    .unwrap();
    Drctl::new().args(["heartbeat", "--policy"]).arg(&file).run().ok();
    let beat = server.sql_in("orders", "SELECT extract(epoch FROM max(at)) FROM drctl.heartbeat");
    Drctl::new().args(["backup", "--policy"]).arg(&file).timeout(Duration::from_secs(120)).run().ok();
    // A row after the dump is not in it: the RPO reaches back to the heartbeat before the dump.
    Drctl::new().args(["heartbeat", "--policy"]).arg(&file).run().ok();

    let record = drill(&file, &[]).ok().json();
    assert_eq!(record["passed"], true, "{record}");
    assert_eq!(record["snapshot"]["kind"], "pg-dump");
    for name in ["databases", "amcheck", "orders-present"] {
        assert_eq!(check(&record, name)["status"], "pass", "{name}: {record}");
    }
    assert_eq!(check(&record, "roles")["status"], "skip");
    let recovered = chrono::DateTime::parse_from_rfc3339(record["heartbeat"].as_str().unwrap()).unwrap();
    assert!((recovered.timestamp_micros() as f64 / 1e6 - beat.parse::<f64>().unwrap()).abs() < 0.001, "{record}");
    let phases: Vec<&str> = record["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(phases, ["select", "open", "restore", "checks"]);

    // The quarterly script: a summary line and the record per policy, exit 0 when all passed.
    let out = ws.join("drills");
    let script = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/quarterly-drill.sh"))
        .arg("--out")
        .arg(&out)
        .arg(&file)
        .env("DRCTL", drctl_bin())
        .env("DRCTL_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&script.stdout);
    assert!(
        script.status.success() && said.contains("orders: passed RTO"),
        "{said}{}",
        String::from_utf8_lossy(&script.stderr)
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);

    // Before the first dump there is nothing to restore: out of reach, exit 13, and recorded.
    drill(&file, &["--at", "2020-01-01 00:00:00+00"])
        .code_is(13)
        .stderr_mentions("no logical dump of database orders", "why");
    let listed = Drctl::new().args(["drill", "list", "--json", "--policy"]).arg(&file).run().ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
}

#[test]
fn a_drill_refuses_before_restoring_when_a_program_of_the_backups_version_is_missing() {
    let ws = Workspace::new_public();
    let (repo, key_file, primary) = primary_with_a_backup(&ws);
    let file = ws.join("app.yaml");
    let checks = "    - name: orders\n      sql: SELECT count(*) FROM orders\n      expect: \"1000\"\n";
    std::fs::write(&file, policy(&primary, &repo, &key_file, "5m", checks)).unwrap();
    // A --pg-bin folder with PostgreSQL 15's postgres but not its pg_controldata or pg_checksums.
    let bin = ws.mkdir("server-only");
    std::os::unix::fs::symlink(Path::new(crate::harness::pg::BIN).join("postgres"), bin.join("postgres")).unwrap();
    let scratch = ws.join("scratch");
    let out = Drctl::new()
        .args(["drill", "--latest", "--policy"])
        .arg(&file)
        .arg("--scratch")
        .arg(&scratch)
        .env("DRCTL_PG_BIN", &bin)
        .timeout(Duration::from_secs(120))
        .run();
    out.code_is(12)
        .stderr_mentions("a drill of a PostgreSQL 15 base backup needs pg_controldata of PostgreSQL 15", "the program")
        .stderr_mentions("--pg-bin", "the fix");
    assert!(!out.all().contains("restore"), "nothing was restored:\n{out}");
    assert!(walkdir(&scratch).is_empty(), "the scratch folder holds nothing");
}
