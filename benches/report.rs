//! How long `drctl report` takes on a year of history: hourly base backups, WAL archived every
//! five minutes, a job record per hour, a copy in a second repository, monthly checks and
//! quarterly drills. The history is written straight into real repositories on local disk (with
//! the times a year of running would have given them, file modification times included), then
//! the report is built by the `drctl` binary as a user runs it, in each format, several times.
//!
//! Run with `cargo bench --bench report`. Environment:
//! - `DRCTL_BENCH_WAL_PER_HOUR`: WAL segments archived per hour (default 12);
//! - `DRCTL_BENCH_RUNS`: timed runs per format (default 3);
//! - `DRCTL_BENCH_DIR`: parent of the scratch directory (default: the system temp dir).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant, SystemTime};

use chrono::{DateTime, Duration, TimeZone, Utc};
use drctl::job::{JobReport, SnapshotTaken, SourceReport};
use drctl::pg::wal::{WalName, segment_name};
use drctl::repo::evidence::{self, Kind};
use drctl::repo::key::Secret;
use drctl::repo::snapshot::{PgBackup, Snapshot, SnapshotKind, policy_tags};
use drctl::repo::wal::{self, Compression};
use drctl::repo::{InitOptions, Repository};
use drctl::store::LocalStore;

const DRCTL: &str = env!("CARGO_BIN_EXE_drctl");
const PASSWORD: &str = "drctl-bench-passphrase";
const SEGMENT: u64 = 16 << 20;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn set_mtime(path: &Path, at: DateTime<Utc>) {
    let time = SystemTime::UNIX_EPOCH + StdDuration::from_secs(at.timestamp() as u64);
    std::fs::File::options().write(true).open(path).unwrap().set_modified(time).unwrap();
}

fn main() {
    let wal_per_hour = env_or("DRCTL_BENCH_WAL_PER_HOUR", 12);
    let runs = env_or("DRCTL_BENCH_RUNS", 3);
    let parent = std::env::var("DRCTL_BENCH_DIR").map(Into::into).unwrap_or_else(|_| std::env::temp_dir());
    let dir = tempfile::tempdir_in(parent).unwrap();
    let primary_dir = dir.path().join("primary");
    let secret = Secret::Passphrase(PASSWORD.as_bytes().to_vec());
    let repo = Repository::init(Arc::new(LocalStore::new(&primary_dir)), &secret, &InitOptions::default()).unwrap();

    let start = Utc.with_ymd_and_hms(2025, 12, 1, 0, 0, 0).unwrap();
    let hours = 365 * 24;
    let clock = Instant::now();
    let mut segment = 1u64;
    for hour in 0..hours {
        let fire = start + Duration::hours(hour);
        // WAL written through the hour; the backup's first segment is the hour's first.
        let first = segment;
        for i in 0..wal_per_hour {
            let name = WalName::parse(&segment_name(1, segment, SEGMENT)).unwrap();
            let pushed = Compression { level: 1, threads: 1 };
            wal::push(&repo, &name, &segment.to_le_bytes().repeat(64), pushed, &|| true, None).unwrap();
            let written = fire + Duration::seconds((i as i64 + 1) * 3600 / wal_per_hour as i64);
            set_mtime(&primary_dir.join(wal::key_of(&name)), written);
            segment += 1;
        }
        let mut s = Snapshot::new(SnapshotKind::PgBase, &policy_tags("bench", "base"));
        s.time = fire + Duration::minutes(3);
        s.summary.duration_seconds = 180.0;
        s.summary.logical_bytes = 8 << 30;
        s.summary.stored_bytes = (40 << 20) + (hour as u64 % 24) * (1 << 20);
        s.pg = Some(PgBackup {
            mode: "local".into(),
            system_identifier: "7400000000000000000".into(),
            pg_version: "15".into(),
            timeline: 1,
            start_lsn: "0/0".into(),
            stop_lsn: "0/0".into(),
            start_wal: segment_name(1, first, SEGMENT),
            wal_segment_size: SEGMENT,
            start_time: String::new(),
            started_at: None,
            tablespace_map: String::new(),
        });
        let id = repo.save_snapshot(&s).unwrap();
        set_mtime(&primary_dir.join(drctl::repo::snapshot::key_of(id)), s.time);
        let mut job = JobReport::new("bench", fire);
        job.duration_seconds = 200.0;
        job.sources.push(SourceReport {
            name: "base".into(),
            kind: "base-backup".into(),
            schedule: "0 * * * *".into(),
            ran: true,
            reason: "due".into(),
            error: None,
            snapshots: vec![SnapshotTaken {
                id: id.to_hex(),
                short_id: id.short(),
                time: s.time,
                label: "PGDATA".into(),
                logical_bytes: s.summary.logical_bytes,
                stored_bytes: s.summary.stored_bytes,
                duration_seconds: 180.0,
            }],
            newest: Some(s.time),
            max_age_seconds: 3600.0,
            next_run: None,
        });
        evidence::put_record(&repo, Kind::Job, &job.id, &serde_json::to_vec(&job).unwrap()).unwrap();
    }
    println!(
        "history written in {:.1} s: {hours} base backups and job records, {} WAL segments",
        clock.elapsed().as_secs_f64(),
        segment - 1
    );
    // The copy: the same repository, each manifest arriving four minutes after its backup ended.
    let copy_dir = dir.path().join("copy");
    assert!(Command::new("cp").arg("-a").arg(&primary_dir).arg(&copy_dir).status().unwrap().success());
    for (id, s) in repo.snapshots().unwrap() {
        set_mtime(&copy_dir.join(drctl::repo::snapshot::key_of(id)), s.time + Duration::minutes(4));
    }
    let policy = dir.path().join("bench.yaml");
    std::fs::write(
        &policy,
        format!(
            "name: bench\nkind: self-managed\ndatabase:\n  dsn: \"host=/nonexistent\"\n\
             sources:\n  base:\n    type: base-backup\n    mode: stream\n    schedule: \"0 * * * *\"\n\
             repositories:\n  primary:\n    location: {}\n    password_env: DRCTL_BENCH_PASSWORD\n  copies:\n    \
             - location: {}\n      password_env: DRCTL_BENCH_PASSWORD\n\
             retention:\n  keep_hourly: 48\n  keep_daily: 400\n\
             targets:\n  rto: 1h\n  rpo: 15m\n",
            primary_dir.display(),
            copy_dir.display()
        ),
    )
    .unwrap();

    println!("| format | runs | median | min | max | output |\n|---|---|---|---|---|---|");
    for format in ["json", "md", "html"] {
        let out = dir.path().join(format!("report.{format}"));
        let mut times = Vec::new();
        for _ in 0..runs {
            let clock = Instant::now();
            let status = Command::new(DRCTL)
                .args(["report", "--quiet", "--period", "2025-12-01..2026-11-30", "--format", format, "--policy"])
                .arg(&policy)
                .arg("--out")
                .arg(&out)
                .env("DRCTL_BENCH_PASSWORD", PASSWORD)
                .status()
                .unwrap();
            times.push(clock.elapsed().as_secs_f64());
            assert!(matches!(status.code(), Some(0 | 16)), "drctl report failed: {status}");
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| {format} | {runs} | {:.2} s | {:.2} s | {:.2} s | {:.1} KiB |",
            times[times.len() / 2],
            times[0],
            times[times.len() - 1],
            std::fs::metadata(&out).unwrap().len() as f64 / 1024.0
        );
    }
}
