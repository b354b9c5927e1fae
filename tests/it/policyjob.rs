//! `drctl backup --policy FILE`: the due sources against a real PostgreSQL 15, then the copy and
//! retention, with the report, exit codes and metrics a CronJob and an alert act on.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::moto::Moto;
use crate::harness::pg::{Cluster, archiving_primary};
use crate::harness::pushgateway::Pushgateway;
use crate::harness::*;

/// A self-managed policy for `cluster`: a stream base backup, a dump of `databases`, a config
/// snapshot of `config`, all daily; the primary repository and one copy opened with `key_file`.
fn policy(
    name: &str,
    cluster: &Cluster,
    databases: &str,
    config: &Path,
    primary: &str,
    copy: &str,
    key: &str,
) -> String {
    format!(
        "name: {name}\nkind: self-managed\ndatabase:\n  dsn: \"{dsn}\"\n\
         sources:\n  base:\n    type: base-backup\n    mode: stream\n    schedule: \"0 2 * * *\"\n\
         \x20 app-dump:\n    type: logical-dump\n    databases: [{databases}]\n    schedule: \"0 3 * * *\"\n\
         \x20 config:\n    type: config-snapshot\n    paths: [{config}]\n    schedule: \"0 4 * * *\"\n\
         repositories:\n  primary:\n    location: {primary}\n    {key}\n  copies:\n    - location: {copy}\n      {key}\n\
         retention:\n  keep_last: 2\n\
         targets:\n  rto: 1h\n  rpo: 1h\n",
        dsn = cluster.dsn(),
        config = config.display(),
    )
}

fn job(out: &Output) -> serde_json::Value {
    out.json()
}

fn source<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["sources"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()
}

#[test]
fn a_policy_job_runs_due_sources_copies_and_applies_retention() {
    let ws = Workspace::new_public();
    let (repo, key_file, server) = archiving_primary(&ws, &[], &[]);
    server.sql("CREATE DATABASE app");
    server.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let config = ws.mkdir("config");
    std::fs::write(config.join("app.yaml"), "replicas: 3\n").unwrap();
    let copy = ws.join("copy");
    let key = format!("key_file: {}", key_file.display());
    let file = ws.join("policy.yaml");
    let text =
        policy("api", &server, "app", &config, &repo.path.display().to_string(), &copy.display().to_string(), &key);
    std::fs::write(&file, text).unwrap();
    let metrics = ws.join("drctl.prom");
    let run = |extra: &[&str]| {
        Drctl::new()
            .no_password()
            .args(["backup", "--json", "--policy"])
            .arg(&file)
            .arg("--metrics-file")
            .arg(&metrics)
            .args(extra)
            .timeout(Duration::from_secs(300))
            .run()
    };

    // First job: nothing taken yet, so every source is due; the copy is created and filled.
    let first = run(&[]);
    first.ok();
    let report = job(&first);
    for name in ["base", "app-dump", "config"] {
        let s = source(&report, name);
        assert_eq!(s["ran"], true, "{s}");
        assert!(s["error"].is_null(), "{s}");
        assert_eq!(s["snapshots"].as_array().unwrap().len(), 1, "{s}");
    }
    assert!(report["wal"]["last_archived_wal"].is_string(), "the archiver status is read: {report}");
    assert_eq!(report["copies"][0]["missing_snapshots"], 0, "{report}");
    assert_eq!(report["copies"][0]["snapshots_copied"], 3, "{report}");
    assert_eq!(repo.snapshots().len(), 3);
    let check = Drctl::new()
        .no_password()
        .args(["check", "--read-data", "--key-file"])
        .arg(&key_file)
        .arg("--repo")
        .arg(&copy)
        .run();
    check.ok().mentions("no damage found", "check of the copy");
    let tags = &repo.snapshots()[0]["tags"];
    assert!(tags.as_array().unwrap().iter().any(|t| t == "policy=api"), "{tags}");

    // The metrics parse as Prometheus text and name every source.
    let text = std::fs::read_to_string(&metrics).unwrap();
    for name in ["base", "app-dump", "config"] {
        let series = format!("drctl_backup_last_success_timestamp_seconds{{policy=\"api\",source=\"{name}\"}}");
        assert!(text.contains(&series), "{series} in:\n{text}");
    }
    assert!(text.contains("drctl_job_last_status{policy=\"api\"} 1\n"), "{text}");
    assert!(text.contains("drctl_wal_archive_failures_total{policy=\"api\"} 0\n"), "{text}");
    if let Some(promtool) = on_path("promtool") {
        let out = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&metrics).unwrap())
            .output()
            .unwrap();
        // `check metrics` lints too (it wants _total, _seconds…): exit 3 is lint, 1 is a parse error.
        assert_ne!(out.status.code(), Some(1), "promtool: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool lint: {}", String::from_utf8_lossy(&out.stderr));
    }

    // Second job right after: no schedule fired since, nothing runs; the copy has nothing to send.
    let second = job(run(&[]).ok());
    for name in ["base", "app-dump", "config"] {
        assert_eq!(source(&second, name)["ran"], false, "{second}");
    }
    assert_eq!(second["copies"][0]["snapshots_copied"], 0, "{second}");

    // Asked for by name, a source runs whether due or not; keep_last 2 then drops the oldest dump
    // in both repositories, and nothing else: not the snapshot someone took by hand, which no
    // policy's rules judge.
    repo.backup(&[&config]);
    run(&["--source", "app-dump"]).ok();
    let fourth = job(run(&["--source", "app-dump"]).ok());
    assert_eq!(source(&fourth, "base")["ran"], false);
    for retention in fourth["retention"].as_array().unwrap() {
        assert_eq!(retention["snapshots_removed"], 1, "{fourth}");
        assert!(retention["error"].is_null(), "{fourth}");
    }
    assert_eq!(repo.snapshots().len(), 5, "base, config, two dumps and the one taken by hand");
    let in_copy = Drctl::sub("snapshots", &copy).no_password().arg("--key-file").arg(&key_file).arg("--json").run();
    assert_eq!(in_copy.ok().json().as_array().unwrap().len(), 5);

    // An unknown source is a usage error before anything runs.
    run(&["--source", "nope"]).code_is(2).stderr_mentions("app-dump", "the sources there are");
}

#[test]
fn a_failing_source_fails_the_job_but_not_the_other_steps() {
    let ws = Workspace::new_public();
    let (repo, key_file, server) = archiving_primary(&ws, &[], &[]);
    let config = ws.mkdir("config");
    std::fs::write(config.join("a"), "x").unwrap();
    let copy = ws.join("copy");
    let key = format!("key_file: {}", key_file.display());
    let file = ws.join("policy.yaml");
    let text = policy(
        "bad",
        &server,
        "postgres, nosuchdb",
        &config,
        &repo.path.display().to_string(),
        &copy.display().to_string(),
        &key,
    );
    std::fs::write(&file, text).unwrap();
    let out = Drctl::new()
        .no_password()
        .args(["backup", "--json", "--policy"])
        .arg(&file)
        .timeout(Duration::from_secs(300))
        .run();
    out.code_is(12).stderr_mentions("nosuchdb", "the failed dump");
    let report = out.json();
    assert_eq!(report["exit_code"], 12);
    let dump = source(&report, "app-dump");
    assert!(dump["error"]["message"].as_str().unwrap().contains("nosuchdb"), "{dump}");
    assert_eq!(dump["snapshots"].as_array().unwrap().len(), 1, "the other database is still dumped: {dump}");
    assert!(source(&report, "config")["error"].is_null(), "the config snapshot still ran: {report}");
    assert!(source(&report, "base")["error"].is_null(), "{report}");
    assert_eq!(report["copies"][0]["missing_snapshots"], 0, "the copy still ran: {report}");

    // The failed source stays due: the next job tries it again, and only it.
    let again = Drctl::new().no_password().args(["backup", "--json", "--policy"]).arg(&file).run();
    let again = again.code_is(12).json();
    assert_eq!(source(&again, "app-dump")["ran"], true);
    assert_eq!(source(&again, "config")["ran"], false);
    assert_eq!(repo.snapshots().len(), 4, "base, config, and the postgres database's dump twice");

    // A database password the policy names but the environment lacks: the database steps fail
    // with the variable named; the config snapshot does not need it.
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "kind: self-managed\ndatabase:\n",
        "kind: self-managed\ndatabase:\n  password_env: NO_SUCH_PASSWORD_VAR\n",
    );
    std::fs::write(&file, text).unwrap();
    let out =
        Drctl::new().no_password().args(["backup", "--json", "--policy"]).arg(&file).args(["--source", "base"]).run();
    out.code_is(12).stderr_mentions("NO_SUCH_PASSWORD_VAR", "the missing variable");
}

#[test]
fn an_s3_policy_copies_across_regions_and_pushes_metrics_to_a_pushgateway() {
    let moto = Moto::empty();
    moto.bucket("prod-east", "us-east-1", false);
    moto.bucket("prod-west", "us-west-2", false);
    let east_key = moto.kms_key("us-east-1");
    let west_key = moto.kms_key("us-west-2");
    let ws = Workspace::new_public();
    let mut server = Cluster::init(&ws.join("pg"), &[]);
    server.start();
    let config = ws.mkdir("config");
    std::fs::write(config.join("settings.yaml"), "feature: on\n").unwrap();
    moto.drctl("init").no_password().args(["--repo", "s3://prod-east/cfg", "--kms-key-id", &east_key]).run().ok();
    let file = ws.join("cfg.yaml");
    std::fs::write(
        &file,
        format!(
            "name: cfg\nkind: self-managed\ndatabase:\n  dsn: \"{}\"\n\
             sources:\n  dump:\n    type: logical-dump\n    databases: [postgres]\n    schedule: \"0 * * * *\"\n\
             \x20 config:\n    type: config-snapshot\n    paths: [{}]\n    schedule: \"0 * * * *\"\n\
             repositories:\n  primary:\n    location: s3://prod-east/cfg\n    region: us-east-1\n    kms_key_id: {east_key}\n\
             \x20 copies:\n    - location: s3://prod-west/cfg\n      region: us-west-2\n      kms_key_id: {west_key}\n\
             retention:\n  keep_last: 3\ntargets:\n  rto: 1h\n  rpo: 1h\n",
            server.dsn(),
            config.display()
        ),
    )
    .unwrap();
    let gateway = Pushgateway::start(&ws);
    let out = moto
        .drctl("backup")
        .no_password()
        .args(["--json", "--policy"])
        .arg(&file)
        .args(["--pushgateway", &gateway.url])
        .timeout(Duration::from_secs(120))
        .run();
    let report = out.ok().json();
    assert_eq!(report["copies"][0]["repository"], "s3://prod-west/cfg?region=us-west-2");
    assert_eq!(report["copies"][0]["snapshots_copied"], 2, "{report}");
    // The copy opens with the DR region's key alone.
    moto.drctl("check")
        .no_password()
        .args(["--repo", "s3://prod-west/cfg?region=us-west-2", "--read-data"])
        .run()
        .ok()
        .mentions("no damage found", "check of the copy");
    let scraped = gateway.scrape();
    assert!(
        scraped.contains(
            "drctl_backup_last_success_timestamp_seconds{instance=\"\",job=\"drctl\",policy=\"cfg\",source=\"config\"}"
        ),
        "the push reached the Pushgateway:\n{scraped}"
    );
    assert!(scraped.contains("drctl_copy_missing_snapshots{instance=\"\",job=\"drctl\",policy=\"cfg\",repository=\"s3://prod-west/cfg?region=us-west-2\"} 0"), "{scraped}");
}
