//! Runbooks run for real: the shipped `promote-replica` fails a real streaming standby over and
//! the stand-in service (scripts/standin-api.py) turns ready on it; a dry run and an unconfirmed
//! run change nothing; a failing step runs its `on_failure` steps and stops the run; every run
//! is in the audit log, whose chain `runbook audit --verify` proves and breaks where edited.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::pg::{free_port, primary_and_standby};
use crate::harness::standin::Standin;
use crate::harness::*;

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks")
}

fn runbook(dir: &Path, name: &str, audit: &Path) -> Drctl {
    Drctl::new()
        .args(["runbook", "run", name, "--dir"])
        .arg(dir)
        .arg("--audit-log")
        .arg(audit)
        .env("DRCTL_PASSWORD", PASSWORD)
        .timeout(Duration::from_secs(300))
}

fn audit_records(audit: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(audit).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn every_shipped_runbook_is_valid() {
    let files: Vec<PathBuf> = std::fs::read_dir(shipped()).unwrap().map(|e| e.unwrap().path()).collect();
    let yaml: Vec<&PathBuf> = files.iter().filter(|f| f.extension().is_some_and(|x| x == "yaml")).collect();
    assert!(!yaml.is_empty());
    Drctl::new().args(["runbook", "validate"]).args(&yaml).run().ok();
    Drctl::new().args(["runbook", "list", "--dir"]).arg(shipped()).run().ok().mentions("promote-replica", "the list");
}

#[test]
fn promote_replica_fails_over_and_the_service_turns_ready_after_a_dry_run_and_a_refusal_changed_nothing() {
    let ws = Workspace::new_public();
    let (repo, mut primary, standby) = primary_and_standby(&ws);
    let standin = Standin::start(&standby.dsn());
    assert_eq!(standin.status("/health"), 200);
    assert_eq!(standin.status("/health/ready"), 503, "the stand-in is not ready on a standby");
    let audit = ws.join("audit.jsonl");
    let params = |d: Drctl| {
        d.args(["--param", &format!("standby_dsn={}", standby.dsn())])
            .args(["--param", &format!("repo={}", repo.path.display())])
            .args(["--param", &format!("service_url={}/health/ready", standin.url)])
    };
    primary.stop();

    // A dry run resolves, evaluates every gate and changes nothing.
    let out = params(runbook(&shipped(), "promote-replica", &audit)).arg("--dry-run").run();
    out.ok()
        .mentions("ok     old primary fenced: 127.0.0.1: unreachable", "the gates")
        .mentions("every gate passes", "the promotion preview")
        .mentions("now: http://", "the health check as it is now");
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "t", "a dry run promoted\n{out}");

    // Without --yes and no terminal, the confirmation is not given: nothing happens.
    let out = params(runbook(&shipped(), "promote-replica", &audit)).run();
    out.code_is(16).mentions("not confirmed", "why it stopped").stderr_mentions("promote the standby", "the step");
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "t", "an unconfirmed step promoted\n{out}");

    let out = params(runbook(&shipped(), "promote-replica", &audit)).arg("--yes").run();
    out.ok().mentions("promoted: timeline 1 -> 2", "the promotion").mentions("every step succeeded", "the end");
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "f");
    assert_eq!(standin.status("/health/ready"), 200, "the service is ready on the new primary");
    assert!(repo.path.join("wal/00000002/00000002.history").is_file());

    // Three runs, each started and ended in the log, the chain whole.
    let records = audit_records(&audit);
    let events = |e: &str| records.iter().filter(|r| r["event"] == e).count();
    assert_eq!((events("run-start"), events("run-end")), (3, 3), "{records:#?}");
    let steps = |result: &str| records.iter().filter(|r| r["event"] == "step" && r["result"] == result).count();
    assert_eq!((steps("previewed"), steps("ok"), steps("failed")), (4, 1 + 4, 1), "{records:#?}");
    Drctl::new().args(["runbook", "audit", "--verify", "--audit-log"]).arg(&audit).run().ok();
    let text = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(&audit, text.replacen("\"result\":\"failed\"", "\"result\":\"ok\"", 1)).unwrap();
    Drctl::new().args(["runbook", "audit", "--verify", "--audit-log"]).arg(&audit).run().code_is(3);
}

#[test]
fn a_failing_step_runs_its_on_failure_steps_and_stops_the_run() {
    let ws = Workspace::new();
    let dir = ws.join("runbooks");
    std::fs::create_dir_all(&dir).unwrap();
    let marker = |name: &str| ws.join(name);
    std::fs::write(
        dir.join("broken.yaml"),
        format!(
            "name: broken\ndescription: a step that fails\nparameters:\n  word:\n    description: what to echo\n\
             steps:\n  - name: first\n    action: shell\n    with: {{command: 'touch {first}'}}\n\
             \x20 - name: second\n    action: shell\n    retries: 1\n    with: {{command: 'echo ${{word}}; exit 3'}}\n\
             \x20   on_failure:\n      - name: clean up\n        action: shell\n        with: {{command: 'touch {cleanup}'}}\n\
             \x20 - name: third\n    action: shell\n    with: {{command: 'touch {third}'}}\n",
            first = marker("first").display(),
            cleanup = marker("cleanup").display(),
            third = marker("third").display(),
        ),
    )
    .unwrap();
    let audit = ws.join("audit.jsonl");

    let out = runbook(&dir, "broken", &audit).run();
    out.code_is(2).stderr_mentions("--param word=", "the missing parameter");
    let out = runbook(&dir, "broken", &audit).args(["--param", "wrod=x"]).run();
    out.code_is(2).stderr_mentions("no parameter `wrod`", "the unknown parameter");
    assert!(!audit.exists() || audit_records(&audit).is_empty(), "a refused run is not started");

    let out = runbook(&dir, "broken", &audit).args(["--param", "word=hello"]).run();
    out.code_is(16).mentions("attempt 1 failed", "the retry").stderr_mentions("stopped at step `second`", "where");
    assert!(marker("first").exists() && marker("cleanup").exists(), "{out}");
    assert!(!marker("third").exists(), "the run went on after a failed step\n{out}");
    let records = audit_records(&audit);
    let second = records.iter().find(|r| r["step"] == "second" && r["event"] == "step").unwrap();
    assert_eq!(second["result"], "failed");
    assert!(records.iter().any(|r| r["event"] == "on-failure" && r["result"] == "ok"));
    assert_eq!(records.last().unwrap()["result"], "failed");
}

/// Waits until the audit log holds a record `event` of `step`.
fn wait_for_record(audit: &Path, event: &str, step: &str) {
    for _ in 0..300 {
        if audit.exists() && audit_records(audit).iter().any(|r| r["event"] == event && r["step"] == step) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no {event} record of step {step:?} in {}", audit.display());
}

#[test]
fn a_run_killed_mid_step_is_taken_up_with_resume_and_repeats_no_completed_step() {
    let ws = Workspace::new();
    let dir = ws.join("runbooks");
    std::fs::create_dir_all(&dir).unwrap();
    let (count, block, after) = (ws.join("count"), ws.join("block"), ws.join("after"));
    std::fs::write(
        dir.join("twice.yaml"),
        format!(
            "name: twice\ndescription: a mutation, a wait, a mutation\nsteps:\n\
             \x20 - name: count\n    action: shell\n    with: {{command: 'echo x >> {count}'}}\n\
             \x20 - name: wait\n    action: shell\n    with: {{command: 'while [ -e {block} ]; do sleep 0.1; done'}}\n\
             \x20 - name: after\n    action: shell\n    with: {{command: 'echo y >> {after}'}}\n",
            count = count.display(),
            block = block.display(),
            after = after.display(),
        ),
    )
    .unwrap();
    std::fs::write(&block, "").unwrap();
    // The audit log's folder does not exist yet: the run creates it (with its lock).
    let audit = ws.join("state/drctl/audit.jsonl");
    let mut running = runbook(&dir, "twice", &audit).spawn();
    wait_for_record(&audit, "step-start", "wait");

    // One run of a runbook at a time.
    runbook(&dir, "twice", &audit).run().code_is(6).stderr_mentions("running already", "why");
    assert!(running.kill9(), "the run ended before it was killed");
    running.finish();
    let run = audit_records(&audit)[0]["run"].as_str().unwrap().to_string();

    std::fs::remove_file(&block).unwrap();
    let out = runbook(&dir, "twice", &audit).args(["--resume", &run]).run();
    out.ok().mentions("count: done in run", "the completed step is not run again");
    let lines = |p: &Path| std::fs::read_to_string(p).unwrap_or_default().lines().count();
    assert_eq!((lines(&count), lines(&after)), (1, 1), "each mutation happened once\n{out}");
    let out = runbook(&dir, "twice", &audit).args(["--resume", &run]).run();
    out.ok().mentions("finished already", "a finished run is not run again");
    assert_eq!(lines(&after), 1);
    Drctl::new().args(["runbook", "audit", "--verify", "--audit-log"]).arg(&audit).run().ok();
}

#[test]
fn a_resumed_promotion_that_already_happened_is_not_done_again() {
    let ws = Workspace::new_public();
    let (repo, mut primary, standby) = primary_and_standby(&ws);
    primary.stop();
    let dir = ws.join("runbooks");
    std::fs::create_dir_all(&dir).unwrap();
    let block = ws.join("block");
    std::fs::write(
        dir.join("failover.yaml"),
        format!(
            "name: failover\ndescription: wait, then promote\nparameters:\n  dsn:\n    description: the standby\n\
             \x20 repo:\n    description: the repository\nsteps:\n\
             \x20 - name: wait\n    action: shell\n    with: {{command: 'while [ -e {block} ]; do sleep 0.1; done'}}\n\
             \x20 - name: promote\n    action: pg.promote\n    with: {{pg: '${{dsn}}', repo: '${{repo}}'}}\n",
            block = block.display(),
        ),
    )
    .unwrap();
    std::fs::write(&block, "").unwrap();
    let audit = ws.join("audit.jsonl");
    let params = |d: Drctl| {
        d.args(["--param", &format!("dsn={}", standby.dsn())])
            .args(["--param", &format!("repo={}", repo.path.display())])
    };
    let mut running = params(runbook(&dir, "failover", &audit)).spawn();
    wait_for_record(&audit, "step-start", "wait");
    assert!(running.kill9());
    running.finish();
    // Meanwhile someone promoted it by hand.
    repo.cmd("promote").args(["--pg", &standby.dsn()]).run().ok();
    let run = audit_records(&audit)[0]["run"].as_str().unwrap().to_string();

    std::fs::remove_file(&block).unwrap();
    let out = runbook(&dir, "failover", &audit).args(["--resume", &run]).run();
    out.ok().mentions("already promoted: it writes timeline 2", "the promotion is recognised");
    assert_eq!(
        standby.sql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"),
        "00000002",
        "not promoted twice"
    );
}

/// Stops the PostgreSQL server of a data directory (started by a runbook step) when dropped.
struct StopServer(PathBuf);

impl Drop for StopServer {
    fn drop(&mut self) {
        let _ = crate::harness::pg::as_postgres(format!("{}/pg_ctl", crate::harness::pg::BIN))
            .args(["-m", "fast", "-w", "stop", "-D"])
            .arg(&self.0)
            .output();
    }
}

#[test]
fn pitr_after_bad_data_restores_beside_production_and_proves_the_rows_are_back() {
    let ws = Workspace::new_public();
    let (repo, primary, before) = crate::harness::pg::orders_deleted(&ws);

    let to = ws.join("restored");
    let _stop = StopServer(to.clone());
    let port = free_port();
    let pg_ctl = format!("{}/pg_ctl", crate::harness::pg::BIN);
    let start = format!(
        "runuser -u postgres -- sh -c '{pg_ctl} -D {dir} status >/dev/null || {pg_ctl} -D {dir} -o \"-p {port}\" -l {dir}/server.log -w start'",
        dir = to.display()
    );
    let check_dsn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let run = || {
        runbook(&shipped(), "pitr-after-bad-data", &ws.join("audit.jsonl"))
            .args(["--param", &format!("repo={}", repo.path.display())])
            .args(["--param", &format!("time={before}")])
            .args(["--param", &format!("to={}", to.display())])
            .args(["--param", &format!("start_command={start}")])
            .args(["--param", &format!("check_dsn={check_dsn}")])
            .args(["--param", "check_query=SELECT count(*) FROM orders"])
            .args(["--param", "check_expect=6000"])
    };
    run().arg("--dry-run").run().ok().mentions("would restore the point in time", "the preview");
    assert!(!to.exists(), "a dry run restored");
    let out = run().arg("--yes").run();
    out.ok().mentions("returned \"6000\"", "the rows are back").mentions("every step succeeded", "the end");
    assert_eq!(primary.sql("SELECT count(*) FROM orders"), "0", "production is not touched");
    let settings = std::fs::read_to_string(to.join("postgresql.auto.conf")).unwrap();
    assert!(settings.contains("archive_mode = 'off'") || settings.contains("archive_mode = off"), "{settings}");
}

/// `runuser … pg_ctl status || pg_ctl start` for a restored cluster in `dir` on `port`: a start
/// that may run twice.
fn start_command(dir: &Path, port: u16) -> String {
    let pg_ctl = format!("{}/pg_ctl", crate::harness::pg::BIN);
    format!(
        "runuser -u postgres -- sh -c '{pg_ctl} -D {dir} status >/dev/null || {pg_ctl} -D {dir} -o \"-p {port}\" -l {dir}/server.log -w start'",
        dir = dir.display()
    )
}

#[test]
fn restore_new_infrastructure_and_self_managed_region_failover_rebuild_from_the_copy() {
    let ws = Workspace::new_public();
    let (repo, primary, before) = crate::harness::pg::orders_deleted(&ws);
    let conf = ws.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("api.env"), "DATABASE_URL=postgres://db.example.com/api\n").unwrap();
    let (config, _) = repo.backup(&[&conf]);
    let audit = ws.join("audit.jsonl");

    // New infrastructure: the configuration and the cluster as it was before the DELETE.
    let (to, config_dir, port) = (ws.join("new/data"), ws.join("new/conf"), free_port());
    let _stop = StopServer(to.clone());
    let dsn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let standin = Standin::start(&dsn);
    let run = || {
        runbook(&shipped(), "restore-new-infrastructure", &audit)
            .args(["--param", &format!("repo={}", repo.path.display())])
            .args(["--param", &format!("config_snapshot={}", config.short_id)])
            .args(["--param", &format!("config_dir={}", config_dir.display())])
            .args(["--param", &format!("to={}", to.display()), "--param", &format!("time={before}")])
            .args(["--param", &format!("start_command={}", start_command(&to, port))])
            .args(["--param", &format!("dsn={dsn}")])
            .args(["--param", &format!("service_url={}/health/ready", standin.url)])
    };
    let out = run().arg("--dry-run").run();
    out.ok()
        .mentions("would restore the point in time", "the preview")
        .mentions(&format!("now: PostgreSQL at 127.0.0.1:{port}: cannot connect"), "the check as it is now");
    assert!(!out.all().contains("cannot be backed up"), "a runbook's check is no backup\n{out}");
    assert!(!to.exists() && !config_dir.exists(), "a dry run restored");
    run().run().ok().mentions("every step succeeded", "the end");
    let restored = std::fs::read_to_string(config_dir.join(conf.strip_prefix("/").unwrap()).join("api.env"));
    assert_eq!(restored.unwrap(), "DATABASE_URL=postgres://db.example.com/api\n");
    let count = |port: u16| {
        let out = std::process::Command::new(format!("{}/psql", crate::harness::pg::BIN))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-XAtc", "SELECT count(*) FROM orders", "-p"])
            .arg(port.to_string())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(count(port), "6000", "the rows before the DELETE");
    assert_eq!(standin.status("/health/ready"), 200);

    // The region is lost: the DR host restores everything the copy holds, and DNS follows.
    let moto = crate::harness::moto::Moto::empty();
    let zone = moto.python(
        "r53 = client('route53')\n\
         z = r53.create_hosted_zone(Name='example.com', CallerReference='t')['HostedZone']['Id'].split('/')[-1]\n\
         r53.change_resource_record_sets(HostedZoneId=z, ChangeBatch={'Changes': [{'Action': 'UPSERT', \
         'ResourceRecordSet': {'Name': 'db.example.com', 'Type': 'A', 'TTL': 1, \
         'ResourceRecords': [{'Value': '10.0.0.1'}]}}]})\n\
         print(z)",
        &[],
    );
    let (to, port) = (ws.join("dr/data"), free_port());
    let _stop_dr = StopServer(to.clone());
    let dsn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let standin = Standin::start(&dsn);
    let dr = || {
        runbook(&shipped(), "region-failover-self-managed", &audit)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL", &moto.endpoint)
            .args(["--param", &format!("repo={}", repo.path.display()), "--param", &format!("to={}", to.display())])
            .args(["--param", &format!("start_command={}", start_command(&to, port))])
            .args(["--param", &format!("dsn={dsn}"), "--param", &format!("zone={zone}")])
            .args(["--param", "record=db.example.com", "--param", "record_type=A", "--param", "dr_host=10.1.0.1"])
            .args(["--param", &format!("service_url={}/health/ready", standin.url)])
    };
    dr().arg("--dry-run").run().ok().mentions("now: db.example.com A -> 10.0.0.1", "the DNS as it is");
    dr().arg("--yes")
        .run()
        .ok()
        .mentions("waited out the old TTL of 1 s", "the TTL")
        .mentions("every step succeeded", "end");
    assert_eq!(count(port), "0", "everything the copy holds: the DELETE too");
    let record = moto.python(
        "print(client('route53').list_resource_record_sets(HostedZoneId=args[0], StartRecordName='db.example.com', \
         StartRecordType='A', MaxItems='1')['ResourceRecordSets'][0]['ResourceRecords'][0]['Value'])",
        &[&zone],
    );
    assert_eq!(record, "10.1.0.1");
    assert_eq!(standin.status("/health/ready"), 200);
    assert_eq!(primary.sql("SELECT count(*) FROM orders"), "0", "production untouched");
}

#[test]
fn audit_records_go_encrypted_into_the_repository_travel_with_copy_and_any_edit_or_removal_is_found() {
    let ws = Workspace::new();
    let repo = Repo::new(ws.join("repo"));
    repo.init();
    let dir = ws.join("runbooks");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("two.yaml"),
        "name: two\ndescription: two steps\nparameters:\n  token:\n    description: a secret\n    secret: true\n\
         steps:\n  - name: first-step-name\n    action: shell\n    with: {command: 'echo ${token}'}\n\
         \x20 - name: second\n    action: shell\n    with: {command: 'true'}\n",
    )
    .unwrap();
    let audit = ws.join("audit.jsonl");
    let run =
        || runbook(&dir, "two", &audit).arg("--audit-repo").arg(&repo.path).args(["--param", "token=hunter2-secret"]);
    run().run().ok();
    run().arg("--dry-run").run().ok();

    // Every local record is in the repository too, sealed: no step name, no secret in the clear.
    let local = audit_records(&audit);
    let stored: Vec<PathBuf> = walk(&repo.path.join("audit"));
    assert_eq!(stored.len(), local.len(), "{stored:#?}");
    for file in &stored {
        let bytes = std::fs::read(file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("first-step-name") && !text.contains("hunter2"), "{} is readable", file.display());
    }
    let verify = || Drctl::new().args(["runbook", "audit", "--verify", "--audit-repo"]).arg(&repo.path).run();
    verify()
        .ok()
        .mentions(&format!("{} records, the chain is whole", local.len()), "the verdict")
        .mentions("two run-start (dry run)", "the dry run marked");
    repo.cmd("check").arg("--read-data").run().ok().mentions(&format!("{} audit records", local.len()), "check");

    // copy takes them along.
    let copy = Repo::new(ws.join("copy"));
    Drctl::new().arg("copy").arg("--from").arg(&repo.path).arg("--to").arg(&copy.path).arg("--all").run().ok();
    assert_eq!(walk(&copy.path.join("audit")).len(), local.len());
    Drctl::new().args(["runbook", "audit", "--verify", "--audit-repo"]).arg(&copy.path).run().ok();

    // One flipped byte fails authentication; a record removed from a run's middle breaks it.
    let victim = &stored[1];
    let original = std::fs::read(victim).unwrap();
    let mut flipped = original.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    std::fs::write(victim, &flipped).unwrap();
    verify().code_is(3).stderr_mentions("the chain is broken", "the verdict");
    std::fs::remove_file(victim).unwrap();
    verify().code_is(3).stderr_mentions("a record was removed", "the gap");
}

/// The files under `dir`, sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        match path.is_dir() {
            true => files.extend(walk(&path)),
            false => files.push(path),
        }
    }
    files.sort();
    files
}
