//! `drctl schedule --policies DIR`: jobs start at their cron fire times, a fire time that comes
//! while the policy's job still runs is skipped, SIGTERM waits for the running job, and
//! /metrics and /healthz answer over HTTP.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{Timelike, Utc};

use crate::harness::http::{get, wait_until};
use crate::harness::pg::{BIN, Cluster, free_port};
use crate::harness::pushgateway::Pushgateway;
use crate::harness::*;

/// An ACCESS EXCLUSIVE lock on a table, held by an open transaction until released, so a
/// pg_dump of that table waits.
struct TableLock {
    psql: std::process::Child,
}

impl TableLock {
    fn hold(server: &Cluster, db: &str, table: &str) -> TableLock {
        let mut psql = Command::new(format!("{BIN}/psql"))
            .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-p", &server.port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let input = psql.stdin.as_mut().unwrap();
        writeln!(input, "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT 1;").unwrap();
        input.flush().unwrap();
        let lock = TableLock { psql };
        let held = format!(
            "SELECT count(*) FROM pg_locks WHERE relation = '{table}'::regclass AND mode = 'AccessExclusiveLock'"
        );
        wait_until("the table lock", Duration::from_secs(10), || server.sql_in(db, &held) == "1");
        lock
    }

    fn release(mut self) {
        let mut input = self.psql.stdin.take().unwrap();
        writeln!(input, "COMMIT;").unwrap();
        drop(input);
        let _ = self.psql.wait();
    }
}

fn policy_file(name: &str, source: &str, repo: &Repo) -> String {
    format!(
        "name: {name}\nkind: self-managed\ndatabase:\n  dsn: \"{{DSN}}\"\nsources:\n{source}\
         repositories:\n  primary:\n    location: {}\n    password_env: TEST_REPO_PASSWORD\n\
         retention:\n  keep_last: 5\ntargets:\n  rto: 1h\n  rpo: 1h\n",
        repo.path.display()
    )
}

#[test]
fn jobs_fire_on_time_overlaps_are_skipped_and_sigterm_lets_the_running_job_finish() {
    let ws = Workspace::new_public();
    let mut server = Cluster::init(&ws.join("pg"), &[]);
    server.start();
    server.sql("CREATE DATABASE app");
    server.sql_in("app", "CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 100) g");

    // "ticker" snapshots a config directory every minute; "blocked" dumps a database whose table
    // this test keeps locked, so its first job cannot finish until the test lets it.
    let ticker_repo = Repo::new(ws.join("ticker-repo"));
    ticker_repo.init();
    let blocked_repo = Repo::new(ws.join("blocked-repo"));
    blocked_repo.init();
    let config = ws.mkdir("config");
    std::fs::write(config.join("app.yaml"), "replicas: 3\n").unwrap();
    let policies = ws.mkdir("policies");
    let dsn = server.dsn();
    // (A policy must copy the database's data: the ticker dumps the small `postgres` database too.)
    let ticker = format!(
        "  config:\n    type: config-snapshot\n    paths: [{}]\n    schedule: \"* * * * *\"\n\
         \x20 dump:\n    type: logical-dump\n    databases: [postgres]\n    schedule: \"* * * * *\"\n",
        config.display()
    );
    let config_snapshots =
        || -> Vec<serde_json::Value> { ticker_repo.snapshots().into_iter().filter(|s| s["kind"] == "paths").collect() };
    std::fs::write(policies.join("ticker.yaml"), policy_file("ticker", &ticker, &ticker_repo).replace("{DSN}", &dsn))
        .unwrap();
    let dump = "  app-dump:\n    type: logical-dump\n    databases: [app]\n    schedule: \"* * * * *\"\n";
    std::fs::write(policies.join("blocked.yaml"), policy_file("blocked", dump, &blocked_repo).replace("{DSN}", &dsn))
        .unwrap();

    let lock = TableLock::hold(&server, "app", "orders");

    // Start well clear of a minute boundary, so the start-up jobs end before the first fire time.
    if Utc::now().second() >= 50 {
        std::thread::sleep(Duration::from_secs(62 - Utc::now().second() as u64));
    }
    let port = free_port();
    let mut scheduler = Drctl::new()
        .env("TEST_REPO_PASSWORD", PASSWORD)
        .args(["schedule", "--log-format", "json", "--policies"])
        .arg(&policies)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .timeout(Duration::from_secs(300))
        .spawn();

    // Start-up: every policy's job runs once; the ticker's takes its first snapshot.
    wait_until("the ticker's start-up job", Duration::from_secs(30), || config_snapshots().len() == 1);
    let (status, body) = get(port, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // At the next minute the ticker fires on time, and the blocked policy's fire is skipped.
    let boundary = {
        let now = Utc::now();
        now.with_second(0).unwrap().with_nanosecond(0).unwrap() + chrono::Duration::minutes(1)
    };
    wait_until("the ticker's scheduled job", Duration::from_secs(90), || config_snapshots().len() == 2);
    let newest = &config_snapshots()[1];
    let taken: chrono::DateTime<Utc> = newest["time"].as_str().unwrap().parse().unwrap();
    assert!(
        taken >= boundary && taken < boundary + chrono::Duration::seconds(15),
        "the scheduled snapshot was taken at {taken}, the fire time was {boundary}"
    );
    wait_until("the skipped run and the ticker's two jobs in /metrics", Duration::from_secs(20), || {
        let metrics = get(port, "/metrics").1;
        metrics.contains("drctl_schedule_skipped_runs_total{policy=\"blocked\"} 1")
            && metrics.contains("drctl_schedule_runs_total{policy=\"ticker\",result=\"ok\"} 2")
    });
    let metrics = get(port, "/metrics").1;
    assert!(metrics.contains("drctl_schedule_up 1"), "{metrics}");
    assert!(
        metrics.contains("drctl_backup_last_success_timestamp_seconds{policy=\"ticker\",source=\"config\"}"),
        "{metrics}"
    );
    assert!(blocked_repo.snapshots().is_empty(), "the dump is still waiting for the lock");

    // SIGTERM: no new jobs, but the running dump is waited for.
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(scheduler.pid(), libc::SIGTERM) };
    std::thread::sleep(Duration::from_secs(2));
    assert!(!scheduler.has_exited(), "the scheduler waits for the running job");
    lock.release();
    let out = scheduler.finish();
    out.ok();
    assert!(out.stderr.contains("skipped"), "the skip is logged:\n{}", out.stderr);
    let dumps = blocked_repo.snapshots();
    assert_eq!(dumps.len(), 1, "the running dump finished before the scheduler stopped");
    assert_eq!(dumps[0]["kind"], "pg-dump");
}

#[test]
fn an_invalid_policy_stops_the_scheduler_before_it_starts() {
    let ws = Workspace::new();
    let policies = ws.mkdir("policies");
    std::fs::write(policies.join("bad.yaml"), "name: bad\nkind: self-managed\ncolour: blue\n").unwrap();
    Drctl::new()
        .args(["schedule", "--policies"])
        .arg(&policies)
        .run()
        .code_is(2)
        .stderr_mentions("bad.yaml:3:1", "the position of the problem");
    let empty = ws.mkdir("empty");
    Drctl::new()
        .args(["schedule", "--policies"])
        .arg(&empty)
        .run()
        .code_is(2)
        .stderr_mentions("no policy files", "the cause");
}

#[test]
fn every_runs_a_policy_between_its_fire_times_without_taking_sources_that_are_not_due_and_heartbeats() {
    let ws = Workspace::new_public();
    let mut server = Cluster::init(&ws.join("pg"), &[]);
    server.start();
    let repo = Repo::new(ws.join("repo"));
    repo.init();
    let policies = ws.mkdir("policies");
    // Yearly sources: only the start-up job is due; the later jobs come from --every alone.
    let yearly = "  dump:\n    type: logical-dump\n    databases: [postgres]\n    schedule: \"0 0 1 1 *\"\n";
    let text = policy_file("yearly", yearly, &repo).replace("{DSN}", &server.dsn()).replace("rpo: 1h", "rpo: 400d");
    let text = format!("{text}drill:\n  heartbeat: 1s\n");
    std::fs::write(policies.join("yearly.yaml"), text).unwrap();
    let port = free_port();
    let gateway = Pushgateway::start(&ws);
    let scheduler = Drctl::new()
        .env("TEST_REPO_PASSWORD", PASSWORD)
        .args(["schedule", "--every", "3s", "--policies"])
        .arg(&policies)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--pushgateway", &gateway.url])
        .timeout(Duration::from_secs(120))
        .spawn();
    wait_until("two jobs more than the start-up one", Duration::from_secs(60), || {
        get(port, "/metrics").1.contains("drctl_schedule_runs_total{policy=\"yearly\",result=\"ok\"} 3")
    });
    assert_eq!(repo.snapshots().len(), 1, "only the start-up job took the dump");
    // drill.heartbeat: a row a second in the policy's database.
    let table = "SELECT to_regclass('drctl.heartbeat') IS NOT NULL";
    wait_until("the heartbeat table", Duration::from_secs(30), || server.sql(table) == "t");
    wait_until("heartbeats", Duration::from_secs(30), || {
        server.sql("SELECT count(*) >= 3 FROM drctl.heartbeat") == "t"
    });
    let pushed = gateway.scrape();
    assert!(pushed.contains("drctl_job_last_status{instance=\"\",job=\"drctl\",policy=\"yearly\"} 1"), "{pushed}");
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(scheduler.pid(), libc::SIGTERM) };
    scheduler.finish().ok();
}

#[test]
fn a_job_past_its_timeout_is_stopped_with_its_pg_dump() {
    let ws = Workspace::new_public();
    let mut server = Cluster::init(&ws.join("pg"), &[]);
    server.start();
    server.sql("CREATE TABLE held AS SELECT 1 AS id");
    let repo = Repo::new(ws.join("repo"));
    repo.init();
    let policies = ws.mkdir("policies");
    let dump = "  dump:\n    type: logical-dump\n    databases: [postgres]\n    schedule: \"0 0 * * *\"\n";
    let text = policy_file("stuck", dump, &repo).replace("{DSN}", &server.dsn()).replace("rpo: 1h", "rpo: 2d");
    std::fs::write(policies.join("stuck.yaml"), text).unwrap();
    let lock = TableLock::hold(&server, "postgres", "held");

    let port = free_port();
    let scheduler = Drctl::new()
        .env("TEST_REPO_PASSWORD", PASSWORD)
        .args(["schedule", "--job-timeout", "3s", "--policies"])
        .arg(&policies)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .timeout(Duration::from_secs(120))
        .spawn();
    wait_until("pg_dump waiting for the lock", Duration::from_secs(30), || {
        server.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' AND wait_event_type = 'Lock'",
        ) == "1"
    });
    wait_until("the job stopped as failed", Duration::from_secs(30), || {
        let metrics = get(port, "/metrics").1;
        metrics.contains("drctl_schedule_runs_total{policy=\"stuck\",result=\"failed\"} 1")
            && metrics.contains("drctl_job_last_status{policy=\"stuck\"} 0")
    });
    // Its whole process group went: no pg_dump is left waiting on the server.
    wait_until("pg_dump gone", Duration::from_secs(10), || {
        server.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'") == "0"
    });
    assert!(repo.snapshots().is_empty(), "no snapshot from a dump cut short");
    lock.release();
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(scheduler.pid(), libc::SIGTERM) };
    scheduler.finish().ok().stderr_mentions("--job-timeout", "the reason it was stopped");
}
