//! Secrets hygiene: drctl's commands run at their most verbose (`-vv`, JSON logs) with a known
//! repository passphrase, AWS secret key and session token, and database password in their
//! environment. None of the secrets may appear in what they print, in the files they write that
//! other users could read (logs, metrics, reports, restored or scratch clusters), or on the
//! command line of drctl or any process it starts (`/proc/*/cmdline`, watched throughout).
//! Key files and audit logs are 0600; repository and spool directories 0700.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::http::{get, wait_until};
use crate::harness::moto::Moto;
use crate::harness::pg::{Cluster, archiving, primary_and_standby};
use crate::harness::standin::Standin;
use crate::harness::*;

const PASSPHRASE: &str = "pass-Xq7w-SECRET";
const AWS_SECRET: &str = "aws-Zt4k-SECRET";
const AWS_TOKEN: &str = "tok-Pm9v-SECRET";
const DB_PASSWORD: &str = "db-Rk2n-SECRET";
const SECRETS: [&str; 4] = [PASSPHRASE, AWS_SECRET, AWS_TOKEN, DB_PASSWORD];

/// Records every process whose command line holds a secret while it runs.
struct CmdlineWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl CmdlineWatch {
    fn start() -> CmdlineWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
                    let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else { continue };
                    let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                    if SECRETS.iter().any(|s| text.contains(s)) && !seen.contains(&text) {
                        seen.push(text);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            seen
        });
        CmdlineWatch { stop, thread }
    }

    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// drctl at its most verbose with every secret in its environment.
fn drctl(sub: &str) -> Drctl {
    Drctl::new()
        .password(PASSPHRASE)
        .arg("-vv")
        .args(["--log-format", "json"])
        .arg(sub)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        .env("AWS_SESSION_TOKEN", AWS_TOKEN)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("PGPASSWORD", DB_PASSWORD)
        .env("DB_PASSWORD", DB_PASSWORD)
        .timeout(Duration::from_secs(300))
}

/// The permission bits of `path` (file or directory).
fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs `cmd`, which must succeed, and checks that it printed no secret.
#[track_caller]
fn run_clean(cmd: Drctl) -> Output {
    let line = cmd.cmdline();
    let out = cmd.run();
    out.ok();
    for secret in SECRETS {
        assert!(!out.all().contains(secret), "`{line}` printed the secret {secret:?}:\n{out}");
    }
    out
}

/// Every regular file under `root` that group or others may read, and that holds a secret.
fn readable_files_with_secrets(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() && meta.permissions().mode() & 0o044 != 0 {
                let bytes = fs::read(&path).unwrap_or_default();
                let text = String::from_utf8_lossy(&bytes);
                if SECRETS.iter().any(|s| text.contains(s)) {
                    found.push(path);
                }
            }
        }
    }
    found
}

#[test]
fn no_secret_is_printed_written_readable_or_put_on_a_command_line() {
    let ws = Workspace::new_public();
    // A repository with a passphrase slot and a key file slot (for the server's archive_command).
    let repo = Repo::new(ws.join("repo"));
    drctl("init").arg("--repo").arg(&repo.path).run().ok();
    let key_file = ws.join("repo.key");
    drctl("key").args(["add", "--new-key-file"]).arg(&key_file).arg("--repo").arg(&repo.path).run().ok();
    assert_eq!(mode(&key_file), 0o600, "a key file is 0600");
    assert_eq!(mode(&repo.path), 0o700, "a repository directory is 0700");
    let (uid, gid) = user_ids("postgres");
    chown_r(&repo.path, uid, gid);
    std::os::unix::fs::chown(&key_file, Some(uid), Some(gid)).unwrap();

    // A server whose role `backup` logs in with a password only (SCRAM), set before the watch.
    let drctl_env = format!("DRCTL_REPO={} DRCTL_KEY_FILE={} {}", repo.path.display(), key_file.display(), drctl_bin());
    let mut cluster = Cluster::init(&ws.join("pgdata"), &archiving(&drctl_env, &[], &[]));
    let hba = cluster.data.join("pg_hba.conf");
    let rules = "host all backup 127.0.0.1/32 scram-sha-256\nhost replication backup 127.0.0.1/32 scram-sha-256\n";
    fs::write(&hba, format!("{rules}{}", fs::read_to_string(&hba).unwrap())).unwrap();
    cluster.start();
    cluster.sql_secretly(&format!("CREATE ROLE backup LOGIN REPLICATION SUPERUSER PASSWORD '{DB_PASSWORD}'"));
    cluster.sql("CREATE TABLE t AS SELECT g AS n FROM generate_series(1, 1000) g");
    let dsn = format!("host=127.0.0.1 port={} user=backup dbname=postgres", cluster.port);
    let moto = Moto::start("secrets");
    let src = TreeBuilder::new(ws.join("src"));
    src.file("a.txt", b"some data");

    let watch = CmdlineWatch::start();
    let local = |sub: &str| drctl(sub).arg("--repo").arg(&repo.path);
    run_clean(local("backup").arg("--path").arg(&src.root));
    run_clean(local("snapshots").arg("--json"));
    run_clean(local("restore").arg("latest").arg("--to").arg(ws.join("restored-files")));
    run_clean(local("backup").args(["--pg", &dsn]));
    let base =
        run_clean(local("backup").args(["--pg", &dsn, "--json", "--pg-mode", "local", "--pgdata"]).arg(&cluster.data));
    let base = BackupInfo::parse(&base).short_id;
    run_clean(local("backup").args(["--pg", &dsn, "--pg-dump", "postgres"]));
    cluster.archive_all_wal();
    let restored = ws.join("restored-pg");
    run_clean(local("restore").arg(&base).arg("--to").arg(&restored).arg("--start").arg("--key-file").arg(&key_file));
    run_clean(local("check").arg("--read-data"));
    run_clean(drctl("key").arg("list").arg("--repo").arg(&repo.path));
    run_clean(local("forget").args(["--keep-last", "1", "--dry-run"]));
    run_clean(local("prune").arg("--dry-run"));
    run_clean(drctl("copy").arg("--from").arg(&repo.path).arg("--to").arg(ws.join("copy")).args(["--all", "--wal"]));

    // Into S3 with the session credentials.
    let s3 = |sub: &str| {
        drctl(sub)
            .args(["--repo", "s3://secrets/app"])
            .env("DRCTL_S3_ENDPOINT", &moto.endpoint)
            .env("DRCTL_S3_PATH_STYLE", "true")
            .env("AWS_ENDPOINT_URL_KMS", &moto.endpoint)
    };
    run_clean(s3("init"));
    run_clean(s3("backup").arg("--path").arg(&src.root));
    run_clean(s3("check").arg("--read-data"));

    // Under a policy: the database password by name only, a job with metrics, a heartbeat, a
    // drill and a report.
    let policy = ws.join("app.yaml");
    fs::write(
        &policy,
        format!(
            "name: app\nkind: self-managed\ndatabase:\n  dsn: \"{dsn}\"\n  password_env: DB_PASSWORD\n\
             sources:\n  base:\n    type: base-backup\n    mode: stream\n    schedule: \"0 2 * * *\"\n\
             repositories:\n  primary:\n    location: {repo}\n    key_file: {key}\n\
             retention:\n  keep_last: 3\ntargets:\n  rto: 10m\n  rpo: 1h\n\
             drill:\n  checks:\n    - name: rows\n      sql: SELECT count(*) FROM t\n      expect: \"1000\"\n",
            repo = repo.path.display(),
            key = key_file.display(),
        ),
    )
    .unwrap();
    let with_policy = |sub: &str| drctl(sub).env_remove("PGPASSWORD").arg("--policy").arg(&policy);
    run_clean(with_policy("backup").arg("--metrics-file").arg(ws.join("job.prom")));
    run_clean(with_policy("heartbeat"));
    cluster.archive_all_wal();
    let scratch = ws.join("scratch");
    run_clean(with_policy("drill").arg("--latest").arg("--keep").arg("--scratch").arg(&scratch));
    let period = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let report = ws.join("report.json");
    let out = drctl("report").env_remove("PGPASSWORD").arg("--policy").arg(&policy);
    let out = out.args(["--period", &period, "--format", "json", "--out"]).arg(&report).run();
    assert!(report.is_file(), "the report was written:\n{out}");
    for secret in SECRETS {
        assert!(!out.all().contains(secret), "report printed {secret:?}:\n{out}");
    }
    cluster.stop();

    let on_command_lines = watch.finish();
    assert!(on_command_lines.is_empty(), "secrets on command lines: {on_command_lines:#?}");
    let readable = readable_files_with_secrets(ws.path());
    assert!(readable.is_empty(), "files others may read hold a secret: {readable:#?}");
}

/// Everything every library logs (`RUST_LOG=trace`: the AWS SDK's signing and HTTP layers too)
/// and what the async archiving worker writes to its spool's log hold no secret.
#[test]
fn no_secret_at_rust_log_trace_nor_in_the_async_spool() {
    let moto = Moto::start("trace");
    let ws = Workspace::new();
    let src = TreeBuilder::new(ws.join("src"));
    src.file_gen("data.bin", &mut DataGen::random(4), 3 << 20);
    let on_s3 = |sub: &str| {
        drctl(sub).env("RUST_LOG", "trace").env("DRCTL_S3_ENDPOINT", &moto.endpoint).env("DRCTL_S3_PATH_STYLE", "true")
    };
    let repo = "s3://trace/app";
    for command in [
        on_s3("init").args(["--repo", repo]),
        on_s3("backup").args(["--repo", repo, "--path"]).arg(&src.root),
        on_s3("check").args(["--repo", repo, "--read-data"]),
    ] {
        let out = run_clean(command);
        assert!(out.stderr.contains("TRACE") || out.stderr.contains("\"TRACE\""), "trace logs were on\n{out}");
    }

    let pg_wal = ws.mkdir("pg_wal");
    fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
    let spool = ws.join("spool");
    for n in 1..=3u8 {
        let name = format!("0000000100000000000000{n:02X}");
        fs::write(pg_wal.join(&name), vec![n; 1 << 20]).unwrap();
        fs::write(pg_wal.join("archive_status").join(format!("{name}.ready")), b"").unwrap();
        run_clean(
            on_s3("wal-push").args(["--repo", repo, "--async", "--spool-dir"]).arg(&spool).arg(pg_wal.join(&name)),
        );
    }
    std::process::Command::new("pkill").args(["-9", "-f", &spool.display().to_string()]).status().unwrap();
    assert_eq!(mode(&spool), 0o700, "a spool directory is 0700");
    let log = fs::read_to_string(spool.join("archive/worker.log")).unwrap();
    assert!(log.contains("archiving worker started"), "the worker logged: {log}");
    for file in fs::read_dir(spool.join("archive")).unwrap().flatten() {
        let text = String::from_utf8_lossy(&fs::read(file.path()).unwrap()).into_owned();
        for secret in SECRETS {
            assert!(!text.contains(secret), "{} holds the secret {secret:?}", file.path().display());
        }
    }
}

/// A promotion (direct, and through the shipped runbook with its audit log kept in the
/// repository too) and the scheduler's jobs and /metrics, with the standby letting drctl in by
/// password only and the repository opened by passphrase.
#[test]
fn no_secret_in_a_promotion_a_runbook_audit_nor_the_scheduler() {
    let ws = Workspace::new_public();
    let (repo, mut primary, standby) = primary_and_standby(&ws);
    Drctl::new().args(["key", "add", "--repo"]).arg(&repo.path).env("DRCTL_NEW_PASSWORD", PASSPHRASE).run().ok();
    let (uid, gid) = user_ids("postgres");
    chown_r(&repo.path, uid, gid);
    primary.sql_secretly(&format!("CREATE ROLE backup LOGIN SUPERUSER PASSWORD '{DB_PASSWORD}'"));
    standby.wait_for("SELECT count(*) FROM pg_roles WHERE rolname = 'backup'", "1", Duration::from_secs(60));
    let hba = standby.data.join("pg_hba.conf");
    let rule = "host all backup 127.0.0.1/32 scram-sha-256\n";
    fs::write(&hba, format!("{rule}{}", fs::read_to_string(&hba).unwrap())).unwrap();
    standby.sql("SELECT pg_reload_conf()");
    primary.stop();
    let dsn = format!("host=127.0.0.1 port={} user=backup dbname=postgres", standby.port);
    let standin = Standin::start(&standby.dsn());

    let watch = CmdlineWatch::start();
    run_clean(drctl("promote").arg("--repo").arg(&repo.path).args(["--pg", &dsn, "--dry-run"]));
    let audit = ws.join("audit.jsonl");
    let runbook = || {
        drctl("runbook")
            .args(["run", "promote-replica", "--dir"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks"))
            .arg("--audit-log")
            .arg(&audit)
            .arg("--audit-repo")
            .arg(&repo.path)
            .args(["--param", &format!("standby_dsn={dsn}")])
            .args(["--param", &format!("repo={}", repo.path.display())])
            .args(["--param", &format!("service_url={}/health/ready", standin.url)])
    };
    run_clean(runbook().arg("--dry-run"));
    run_clean(runbook().arg("--yes")).mentions("every step succeeded", "the run");
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "f", "the runbook promoted");
    let verify = drctl("runbook").args(["audit", "--verify", "--audit-log"]).arg(&audit).arg("--audit-repo");
    run_clean(verify.arg(&repo.path));
    assert_eq!(mode(&audit), 0o600, "an audit log is 0600");
    let records = fs::read_to_string(&audit).unwrap();
    for secret in SECRETS {
        assert!(!records.contains(secret), "the audit log holds {secret:?}");
    }

    // The scheduler runs the new primary's policy at once and serves its metrics.
    let policies = ws.mkdir("policies");
    fs::write(
        policies.join("app.yaml"),
        format!(
            "name: app\nkind: self-managed\ndatabase:\n  dsn: \"{dsn}\"\n  password_env: DB_PASSWORD\n\
             sources:\n  dump:\n    type: logical-dump\n    databases: [postgres]\n    schedule: \"0 0 1 1 *\"\n\
             repositories:\n  primary:\n    location: {repo}\n    password_env: DRCTL_PASSWORD\n\
             retention:\n  keep_last: 3\ntargets:\n  rto: 1h\n  rpo: 400d\n",
            repo = repo.path.display(),
        ),
    )
    .unwrap();
    let port = crate::harness::pg::free_port();
    let scheduler = drctl("schedule")
        .env_remove("PGPASSWORD")
        .args(["--every", "0s", "--listen", &format!("127.0.0.1:{port}"), "--policies"])
        .arg(&policies)
        .spawn();
    let done = "drctl_schedule_runs_total{policy=\"app\",result=\"ok\"} 1";
    wait_until("the scheduler's job", Duration::from_secs(120), || get(port, "/metrics").1.contains(done));
    let served = get(port, "/metrics").1;
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(scheduler.pid(), libc::SIGTERM) };
    let out = scheduler.finish();
    out.ok();
    for secret in SECRETS {
        assert!(!served.contains(secret), "/metrics served {secret:?}");
        assert!(!out.all().contains(secret), "the scheduler printed {secret:?}:\n{out}");
    }

    let on_command_lines = watch.finish();
    assert!(on_command_lines.is_empty(), "secrets on command lines: {on_command_lines:#?}");
    let readable = readable_files_with_secrets(ws.path());
    assert!(readable.is_empty(), "files others may read hold a secret: {readable:#?}");
}
