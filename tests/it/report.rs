//! `drctl report` over real evidence: a PostgreSQL 15 primary archiving into a repository, policy
//! jobs that back it up, copy it and apply retention, a full check; then a WAL segment lost and a
//! snapshot missing from the copy. The report names both, renders as Markdown, JSON (valid
//! against docs/report.schema.json) and HTML (opened in headless Chromium), and any edit of a
//! report fails `report verify`. The exact judgement of each control on a known history is
//! tested beside the controls (src/report/tests.rs).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::moto::Moto;
use crate::harness::pg::{Cluster, archiving, drctl_env, repo_for_postgres};
use crate::harness::*;

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

fn report(policy: &Path, format: &str, out: &Path) -> Output {
    Drctl::new()
        .no_password()
        .args(["report", "--policy"])
        .arg(policy)
        .args(["--period", &today(), "--format", format, "--out"])
        .arg(out)
        .run()
}

fn control<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["controls"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no {id}: {report}"))
}

fn says(control: &serde_json::Value, text: &str) -> bool {
    control["finding"].as_str().unwrap().contains(text)
        || control["evidence"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().contains(text))
}

#[test]
fn a_report_of_real_evidence_names_what_is_wrong_renders_everywhere_and_proves_itself_unedited() {
    let ws = Workspace::new();
    let (repo, key_file) = repo_for_postgres(&ws);
    let mut primary = Cluster::init_with(&ws.join("primary"), &[], &archiving(&drctl_env(&repo, &key_file), &[], &[]));
    primary.start();
    let copy = ws.join("copy");
    let file = ws.join("app.yaml");
    std::fs::write(
        &file,
        format!(
            "name: app\nkind: self-managed\ndatabase:\n  dsn: \"{dsn}\"\n\
             sources:\n  base:\n    type: base-backup\n    mode: stream\n    schedule: \"0 2 * * *\"\n\
             repositories:\n  primary:\n    location: {repo}\n    key_file: {key}\n  copies:\n    \
             - location: {copy}\n      key_file: {key}\n\
             retention:\n  keep_last: 2\n\
             targets:\n  rto: 10m\n  rpo: 1h\n",
            dsn = primary.dsn(),
            repo = repo.path.display(),
            key = key_file.display(),
            copy = copy.display(),
        ),
    )
    .unwrap();
    // Three jobs, WAL between them; the third job's retention removes the first backup.
    primary.sql("CREATE TABLE t (n int)");
    for round in 0..3 {
        primary.sql(&format!("INSERT INTO t SELECT generate_series(1, 1000) + {round}"));
        primary.sql("SELECT pg_switch_wal()");
        let job =
            Drctl::new().no_password().args(["backup", "--json", "--policy"]).arg(&file).args(["--source", "base"]);
        job.timeout(Duration::from_secs(300)).run().ok();
    }
    repo.cmd("check").arg("--read-data").run().ok();
    let snapshots = repo.cmd("snapshots").arg("--json").run().ok().json();
    let snapshots = snapshots.as_array().unwrap();
    assert_eq!(snapshots.len(), 2, "retention kept the newest two: {snapshots:?}");

    // Damage: the copy loses the older snapshot's manifest, the primary a WAL segment between the
    // two base backups.
    let older = snapshots.iter().min_by_key(|s| s["time"].as_str().unwrap().to_string()).unwrap();
    let older_id = older["id"].as_str().unwrap();
    std::fs::remove_file(copy.join("snapshots").join(older_id)).unwrap();
    let mut segments: Vec<String> = std::fs::read_dir(repo.path.join("wal/00000001"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24)
        .collect();
    segments.sort();
    let start_wal = older["pg"]["start_wal"].as_str().unwrap();
    let lost =
        segments.iter().find(|s| s.as_str() > start_wal).expect("a segment after the older backup's start").clone();
    std::fs::remove_file(repo.path.join("wal/00000001").join(&lost)).unwrap();

    let out = ws.join("report.json");
    report(&file, "json", &out).code_is(16).stderr_mentions("FAIL wal-continuity", "the failed control named");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let wal = control(&json, "wal-continuity");
    assert_eq!(wal["status"], "FAIL");
    assert!(says(wal, &format!("gap on timeline 1: {lost} to {lost} (1 segments) missing")), "{wal}");
    let copies = control(&json, &format!("copies/{}", copy.display()));
    assert_eq!(copies["status"], "FAIL");
    assert!(says(copies, &format!("missing: snapshot {}", &older_id[..8])), "{copies}");
    let retention = control(&json, "retention");
    assert_eq!(retention["status"], "PASS", "{retention}");
    assert!(says(retention, "2 snapshot removals, each made only once the policy no longer kept it"), "{retention}");
    assert_eq!(control(&json, "check-read-data")["status"], "NO-EVIDENCE", "the copy was never read in full");
    assert!(says(control(&json, "check-read-data"), &format!("{}: 1 full check(s)", repo.path.display())));
    assert_eq!(control(&json, "encryption")["status"], "PASS");
    assert_eq!(control(&json, "backup-age/base")["status"], "PASS");
    assert_eq!(control(&json, "drills")["status"], "NO-EVIDENCE");
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/report.schema.json");
    let validated = Command::new("python3")
        .args([
            "-c",
            "import json, sys, jsonschema\n\
             jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), \
             format_checker=jsonschema.FormatChecker())",
        ])
        .arg(&out)
        .arg(&schema)
        .output()
        .unwrap();
    assert!(validated.status.success(), "{}", String::from_utf8_lossy(&validated.stderr));

    // The seal: every format verifies as written; one edited byte does not.
    let verify =
        |path: &Path| Drctl::new().no_password().args(["report", "verify", "--policy"]).arg(&file).arg(path).run();
    let md = ws.join("report.md");
    report(&file, "md", &md).code_is(16);
    let html = ws.join("report.html");
    report(&file, "html", &html).code_is(16);
    for path in [&out, &md, &html] {
        verify(path).ok().mentions("the seal matches", "verified");
    }
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(text.contains("| FAIL | WAL archive continuity"), "{text}");
    std::fs::write(&md, text.replacen("| FAIL | WAL archive continuity", "| PASS | WAL archive continuity", 1))
        .unwrap();
    verify(&md).code_is(3).stderr_mentions("edited after drctl wrote it", "the edit found");

    // The HTML stands alone and draws its charts: a headless browser's screenshot is not blank
    // and holds the charts' colours.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.len() < 2 << 20 && page.matches("<svg").count() >= 4, "{} bytes", page.len());
    let shot = ws.join("report.png");
    let browser = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1100,1600"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium (Debian's package; the test command installs it)");
    assert!(browser.status.success(), "{}", String::from_utf8_lossy(&browser.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((frame.width, frame.height), (1100, 1600));
    let channels = frame.line_size / frame.width as usize;
    let near = |rgb: [u8; 3]| {
        pixels[..frame.buffer_size()]
            .chunks(channels)
            .filter(|p| (0..3).all(|i| (p[i] as i16 - rgb[i] as i16).abs() < 24))
            .count()
    };
    let total = (frame.width * frame.height) as usize;
    assert!(near([255, 255, 255]) < total * 97 / 100, "the page is blank");
    assert!(near([0x2e, 0x7d, 0x32]) > 500, "green (runs on time, coverage) drawn");
    assert!(near([0xc6, 0x28, 0x28]) > 200, "red (the WAL gap, the failed controls) drawn");
    assert!(near([0x15, 0x65, 0xc0]) > 20, "blue (sizes, copy lag) drawn");
}

#[test]
fn object_lock_is_judged_on_each_snapshot_of_the_period_against_the_retention_jobs_write() {
    let moto = Moto::empty();
    moto.bucket("worm", "us-east-1", true);
    let ws = Workspace::new_public();
    let mut server = Cluster::init(&ws.join("pg"), &[]);
    server.start();
    let file = ws.join("app.yaml");
    std::fs::write(
        &file,
        format!(
            "name: app\nkind: self-managed\ndatabase:\n  dsn: \"{}\"\n\
             sources:\n  dump:\n    type: logical-dump\n    databases: [postgres]\n    schedule: \"0 * * * *\"\n\
             repositories:\n  primary:\n    location: s3://worm/app\n    password_env: DRCTL_PASSWORD\n\
             retention:\n  keep_last: 3\ntargets:\n  rto: 1h\n  rpo: 1h\n",
            server.dsn()
        ),
    )
    .unwrap();
    let locked = |sub: &str, lock: &str| moto.drctl(sub).env("DRCTL_S3_OBJECT_LOCK", lock);
    locked("init", "governance:2").args(["--repo", "s3://worm/app"]).run().ok();
    locked("backup", "governance:2").arg("--policy").arg(&file).run().ok();
    let out = ws.join("report.json");
    let judged = |lock: Option<&str>| {
        let mut run = moto.drctl("report").arg("--policy").arg(&file).args(["--period", &today(), "--format", "json"]);
        if let Some(lock) = lock {
            run = run.env("DRCTL_S3_OBJECT_LOCK", lock);
        }
        run.arg("--out").arg(&out).run().code_is(16); // the policy keeps no copy
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        control(&json, "object-lock/s3://worm/app").clone()
    };
    let c = judged(Some("governance:2"));
    assert_eq!(c["status"], "PASS", "{c}");
    assert!(says(&c, "1 of 1 snapshot manifests of the period under GOVERNANCE retention for at least 2 days"), "{c}");
    let c = judged(Some("governance:30"));
    assert_eq!(c["status"], "FAIL", "{c}");
    assert!(says(&c, "retained too briefly: snapshot"), "{c}");
    let c = judged(None);
    assert_eq!(c["status"], "NO-EVIDENCE", "{c}");
    assert!(says(&c, "not configured"), "{c}");
}
