//! `drctl policy validate`: the shipped policies are valid, and every kind of mistake is reported
//! as `FILE:LINE:COLUMN: message` with a hint, for every file given, with exit 2.

use std::fs;
use std::path::{Path, PathBuf};

use crate::harness::*;

/// A valid self-managed policy; each bad file below is this with one mistake.
const BASE: &str = r#"name: api-db
kind: self-managed
database:
  host: db.internal
  user: drctl
  password_env: DB_PASSWORD
sources:
  base:
    type: base-backup
    mode: stream
    schedule: "0 2 * * *"
  dump:
    type: logical-dump
    databases: [app]
    schedule: "0 */6 * * *"
repositories:
  primary:
    location: /var/backups/api-db
    key_file: /etc/drctl/repo.key
retention:
  keep_daily: 7
  pitr_window: 7d
targets:
  rto: 1h
  rpo: 15m
"#;

/// The base turned into an RDS policy (no PITR window, hourly snapshots for a 1 h RPO), still
/// with its base-backup source.
const RDS: &[(&str, &str)] = &[
    ("kind: self-managed", "kind: rds"),
    ("  pitr_window: 7d\n", ""),
    (
        "rpo: 15m\n",
        "rpo: 1h\nrds:\n  instance: api-db\n  region: us-east-1\n  dr_region: us-west-2\n  snapshot_schedule: \"0 * * * *\"\n  snapshot_retention: 7d\n",
    ),
];

/// The base with its base-backup source turned into a config snapshot: no WAL archive.
const NO_BASE: (&str, &str) = ("type: base-backup\n    mode: stream", "type: config-snapshot\n    paths: [/etc/api]");

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn edited(edits: &[(&str, &str)]) -> String {
    edits.iter().fold(BASE.to_string(), |text, (from, to)| {
        assert!(text.contains(from), "the base policy has no {from:?}");
        text.replacen(from, to, 1)
    })
}

#[test]
fn the_shipped_policies_and_the_base_of_these_tests_are_valid() {
    let mut files: Vec<PathBuf> = read_dir_sorted(&policies_dir())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    for name in ["api-db.yaml", "rds-orders.yaml"] {
        assert!(files.contains(&policies_dir().join(name)), "policies/{name} is missing: {files:?}");
    }
    let ws = Workspace::new();
    let base = ws.join("base.yaml");
    fs::write(&base, BASE).unwrap();
    files.push(base);
    let out = Drctl::new().args(["policy", "validate"]).args(&files).run();
    out.ok();
    for file in &files {
        out.mentions(&format!("{}: valid", file.display()), "each file named valid");
    }
    assert!(out.stderr.is_empty(), "nothing to complain about\n{out}");
}

/// A bad file: its name, the edits that make it from the base, and the one problem expected:
/// its position, the start of its message, and part of its hint.
type Case = (&'static str, Vec<(&'static str, &'static str)>, &'static str, &'static str, &'static str);

#[test]
fn each_mistake_is_reported_at_its_line_and_column_with_a_hint() {
    let no_pitr = ("  pitr_window: 7d\n", "");
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("unknown-key", vec![("keep_daily", "keep_dayly")], "21:3",
            "unknown key `keep_dayly` in `retention`", "did you mean `keep_daily`?"),
        ("unknown-key-far", vec![("targets:", "colour: blue\ntargets:")], "23:1",
            "unknown key `colour`", "the keys here: `name`, `kind`"),
        ("bad-cron", vec![("\"0 2 * * *\"", "\"0 2 * * * *\"")], "11:15",
            "`sources.base.schedule`: bad cron schedule `0 2 * * * *`: 6 fields", "write 5 fields"),
        ("bad-cron-value", vec![("\"0 2 * * *\"", "\"0 25 * * *\"")], "11:15",
            "`sources.base.schedule`: bad cron schedule `0 25 * * *`: Hours must be at most 23", "minute hour day-of-month"),
        ("bad-duration", vec![("rpo: 15m", "rpo: 15 mins please")], "25:8",
            "`targets.rpo` is not a duration: `15 mins please`", "a number and a unit"),
        ("inline-password", vec![("password_env: DB_PASSWORD", "password: hunter2")], "6:13",
            "inline password in `database`", "password_env: VAR"),
        ("password-in-dsn", vec![("host: db.internal\n  user: drctl", "dsn: postgresql://drctl:hunter2@db/app")], "4:8",
            "inline password in `database.dsn`", "password_file: /path"),
        ("base-backup-in-rds", RDS.to_vec(), "9:11",
            "base-backup source `base` in an RDS policy", "use `type: logical-dump`"),
        ("pitr-in-rds", [RDS, &[NO_BASE, ("  keep_daily: 7\n", "  keep_daily: 7\n  pitr_window: 3d\n")]].concat(), "22:16",
            "`pitr_window` in an RDS policy", "RDS keeps its own point-in-time recovery"),
        ("pitr-without-base-backup", vec![NO_BASE, ("rpo: 15m", "rpo: 6h")], "22:16",
            "`pitr_window` without a base-backup source", "add a source with `type: base-backup`"),
        ("rpo-without-wal-archive", vec![NO_BASE, no_pitr], "24:8",
            "rpo 15m cannot be met: with no WAL archive, the data since the last logical dump `dump` is lost, and `0 */6 * * *` runs up to 6h apart",
            "or set `rpo: 6h`"),
        ("wrong-type-number", vec![("keep_daily: 7", "keep_daily: seven")], "21:15",
            "`retention.keep_daily` must be a whole number, not `seven`", "digits only"),
        ("wrong-type-list", vec![("databases: [app]", "databases: app")], "14:16",
            "`sources.dump.databases` must be a list, not `app`", "one `- item` per line"),
        ("wrong-type-mapping", vec![("targets:\n  rto: 1h\n  rpo: 15m", "targets: [1h, 15m]")], "23:1",
            "`targets` must be a mapping of keys to values, not a list", "indented"),
        ("missing-key", vec![("  rto: 1h\n", "")], "23:1",
            "missing key `targets.rto`", "e.g. `rto: 1h`"),
        ("missing-section", vec![("retention:\n  keep_daily: 7\n  pitr_window: 7d\n", "")], "1:1",
            "missing key `retention`", "keep_daily: 7"),
        ("yaml-syntax", vec![("  keep_daily: 7\n", "  keep_daily: 7\n pitr: x\n")], "22:6",
            "YAML syntax: while parsing a block mapping", "indent nested keys with spaces"),
        ("yaml-unquoted-cron", vec![("\"0 */6 * * *\"", "*/15 * * * *")], "15:15",
            "YAML syntax: while parsing node, found unknown anchor", "must be quoted: `schedule: \"*/15 * * * *\"`"),
        ("duplicate-key", vec![("  rpo: 15m\n", "  rpo: 15m\n  rto: 2h\n")], "26:3",
            "key `rto` given twice (first on line 24)", "keep one"),
        ("copy-at-the-primary", vec![("    key_file: /etc/drctl/repo.key\n",
            "    key_file: /etc/drctl/repo.key\n  copies:\n    - location: /var/backups/api-db\n      key_file: /etc/drctl/repo.key\n")],
            "21:17", "a copy at the primary repository's location", "its own bucket or directory"),
        ("rds-snapshots-kept-too-briefly", [RDS, &[NO_BASE, ("snapshot_retention: 7d", "snapshot_retention: 30m")]].concat(),
            "30:23", "snapshots are kept 30m but taken up to 1h apart", "keep them at least `1h`"),
        ("rds-drill-in-rds-defaults", [RDS, &[NO_BASE, ("snapshot_retention: 7d\n",
            "snapshot_retention: 7d\n  drill:\n    subnet_group: api-db-drill\n    security_groups: [sg-0abc]\n    parameter_group: default.postgres15\n")]].concat(),
            "34:22", "`rds.drill.parameter_group` is RDS's default parameter group `default.postgres15`", "the service's own parameter group"),
        ("rds-drill-without-security-groups", [RDS, &[NO_BASE, ("snapshot_retention: 7d\n",
            "snapshot_retention: 7d\n  drill:\n    subnet_group: api-db-drill\n    parameter_group: api-pg15\n")]].concat(),
            "31:3", "missing key `rds.drill.security_groups`", "security_groups: [sg-0abc]"),
        ("heartbeat-slower-than-rpo", vec![("rpo: 15m\n", "rpo: 15m\ndrill:\n  heartbeat: 30m\n")], "27:14",
            "a heartbeat every 30m cannot show an RPO of 15m", "at most `15m` apart"),
        ("kms-key-in-the-wrong-region", vec![("location: /var/backups/api-db\n    key_file: /etc/drctl/repo.key",
            "location: s3://dr/api-db\n    region: us-west-2\n    kms_key_id: arn:aws:kms:us-east-1:111122223333:key/1")], "20:17",
            "KMS key in us-east-1 for a repository in us-west-2", "use a key in us-west-2"),
    ];
    let ws = Workspace::new();
    for (name, edits, at, message, hint) in &cases {
        let file = ws.join(format!("{name}.yaml"));
        fs::write(&file, edited(edits)).unwrap();
        let out = Drctl::new().args(["policy", "validate"]).arg(&file).run();
        out.code_is(2);
        let expected = format!("{}:{at}: {message}", file.display());
        let problems: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with(&*file.to_string_lossy())).collect();
        assert!(
            problems.len() == 1 && problems[0].starts_with(&expected),
            "{name}: expected exactly one problem, {expected:?}\n{out}"
        );
        out.stderr_mentions(hint, &format!("the hint for {name}"));
    }
}

#[test]
fn every_problem_of_every_file_is_reported_before_exit_2() {
    let ws = Workspace::new();
    let good = ws.join("good.yaml");
    fs::write(&good, BASE).unwrap();
    let bad = ws.join("bad.yaml");
    fs::write(
        &bad,
        edited(&[
            ("kind: self-managed", "kind: selfmanaged"),
            ("keep_daily", "keep_dayly"),
            ("rto: 1h", "rto: 1 fortnight"),
        ]),
    )
    .unwrap();
    let broken = ws.join("broken.yaml");
    fs::write(&broken, "name: [unclosed\n").unwrap();
    let missing = ws.join("missing.yaml");

    let out = Drctl::new().args(["policy", "validate"]).args([&bad, &good, &broken, &missing]).run();
    out.code_is(2).mentions(&format!("{}: valid", good.display()), "the good file, still checked after a bad one");
    for (file, at, what) in [
        (&bad, ":2:7: `kind` cannot be `selfmanaged`", "the bad kind"),
        (&bad, ":21:3: unknown key `keep_dayly`", "the unknown key, after the first problem"),
        (&bad, ":24:8: `targets.rto` is not a duration", "the bad duration, after two others"),
        (&broken, ":2:1: YAML syntax", "the YAML syntax error, with its position"),
        (&missing, ": cannot read it", "the file that does not exist"),
    ] {
        out.stderr_mentions(&format!("{}{at}", file.display()), what);
    }
    out.stderr_mentions("hint: did you mean `self-managed`?", "a suggestion for the misspelt choice");
    out.stderr_mentions("3 of 4 policy files invalid", "the summary");
}
