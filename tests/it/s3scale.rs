//! Faults at scale: backups, restores and copies on S3 through the fault proxy while it fails a
//! seeded random share of every request (500 InternalError, 503 SlowDown, resets, answers cut
//! off mid-body, stalls longer than the request timeout). Every run must end correct (a backup
//! that restores bit-exact, an exact restore, a complete copy) or fail cleanly (exit 8, the
//! repository as sound as before); `check --read-data` straight against the server passes
//! after every run.
//!
//! `DRCTL_FAULT_RUNS` rounds of backup, restore and copy (2 in the suite; the full campaign:
//! `DRCTL_FAULT_RUNS=30 cargo nextest run -E 'test(/s3scale::/)'`), `DRCTL_TEST_SEED` to replay.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::harness::faultproxy::{Fault, FaultProxy, Rule};
use crate::harness::moto::Moto;
use crate::harness::*;

const PRIMARY: &str = "s3://scale/app";
const COPY: &str = "s3://scale-copy/app";

/// How each kind of run ended.
#[derive(Default, Debug)]
struct Tally {
    correct: u32,
    failed_cleanly: u32,
}

#[test]
fn backup_restore_and_copy_ride_out_random_faults_or_fail_cleanly() {
    let runs: u64 = std::env::var("DRCTL_FAULT_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let seed = seed_from_env_or_time();
    eprintln!("fault campaign seed {seed} (rerun with DRCTL_TEST_SEED={seed})");
    let mut rng = Rng::new(seed);
    let moto = Moto::empty();
    moto.bucket("scale", "us-east-1", false);
    moto.bucket("scale-copy", "us-east-1", false);
    let proxy = FaultProxy::start(&moto.endpoint);
    let faults = [
        (Fault::s3_error(500, "InternalError", "We encountered an internal error. Please try again."), 20),
        (Fault::s3_error(503, "SlowDown", "Please reduce your request rate."), 20),
        (Fault::Reset, 10),
        (Fault::ResetMidResponse, 10),
        (Fault::Stall(Duration::from_secs(4)), 3),
    ];
    let rules: Vec<_> = faults
        .iter()
        .map(|(f, per_mille)| proxy.add(Rule::new(f.clone()).rate(*per_mille, rng.range(0, u64::MAX))))
        .collect();
    let via = |sub: &str, repo: &str| {
        moto.drctl_via(sub, &proxy.endpoint()).args(["--repo", repo]).env("DRCTL_S3_TIMEOUT", "2")
    };
    let direct = |sub: &str, repo: &str| moto.drctl(sub).args(["--repo", repo]);
    let sound = |repo: &str, after: &str| {
        let c = direct("check", repo).arg("--read-data").run();
        assert!(c.code == Some(0), "seed {seed}: {repo} is not sound after {after}\n{c}\n{proxy}");
    };
    direct("init", PRIMARY).args(["--pack-size-mib", "1"]).run().ok();

    let ws = Workspace::new();
    let src = TreeBuilder::new(ws.join("src"));
    for i in 0..30 {
        src.file(format!("small/{i}.txt"), format!("line {i}\n").repeat(50).as_bytes());
    }
    let mut frozen: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut tally: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut outcome = |kind: &'static str, out: &Output, what: &str| -> bool {
        let t = tally.entry(kind).or_default();
        match out.code {
            Some(0) if !out.timed_out => {
                t.correct += 1;
                true
            }
            Some(8) if !out.timed_out => {
                t.failed_cleanly += 1;
                false
            }
            _ => panic!("seed {seed}: {what} neither succeeded nor failed cleanly (exit 8)\n{out}\n{proxy}"),
        }
    };
    for run in 0..runs {
        src.file_gen(format!("data/{run}.bin"), &mut DataGen::mixed(seed ^ run, 64 * KIB), 6 << 20);
        let listed_before = direct("snapshots", PRIMARY).arg("--json").run().ok().json().as_array().unwrap().len();
        let backup =
            via("backup", PRIMARY).arg("--json").arg("--path").arg(&src.root).timeout(Duration::from_secs(240)).run();
        if outcome("backup", &backup, &format!("backup {run}")) {
            let id = BackupInfo::parse(&backup).id;
            let copy = ws.join(format!("frozen/{id}"));
            std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
            assert!(Command::new("cp").arg("-a").arg(&src.root).arg(&copy).status().unwrap().success());
            frozen.insert(id, copy);
        } else {
            let listed = direct("snapshots", PRIMARY).arg("--json").run().ok().json().as_array().unwrap().len();
            assert_eq!(listed, listed_before, "seed {seed}: a failed backup left a snapshot");
        }
        sound(PRIMARY, &format!("backup {run}"));

        if let Some(id) = frozen.keys().nth(rng.range(0, frozen.len() as u64) as usize).cloned() {
            let target = ws.join(format!("restored-{run}"));
            let restore =
                via("restore", PRIMARY).args([&id, "--to"]).arg(&target).timeout(Duration::from_secs(240)).run();
            if outcome("restore", &restore, &format!("restore {run}")) {
                assert_trees_equal(
                    &frozen[&id],
                    &restored_path(&target, &src.root),
                    CompareOpts { owner: true },
                    &restore,
                );
            } else {
                assert!(
                    !target.exists() || std::fs::read_dir(&target).unwrap().next().is_none(),
                    "a failed restore left files"
                );
            }
            let _ = std::fs::remove_dir_all(&target);
        }

        let copy = moto
            .drctl_via("copy", &proxy.endpoint())
            .env("DRCTL_S3_TIMEOUT", "2")
            .args(["--all", "--from", PRIMARY, "--to", COPY])
            .timeout(Duration::from_secs(240))
            .run();
        if outcome("copy", &copy, &format!("copy {run}")) {
            let copied = direct("snapshots", COPY).arg("--json").run().ok().json().as_array().unwrap().len();
            assert_eq!(copied, frozen.len(), "seed {seed}: the copy lacks snapshots");
        }
        if direct("snapshots", COPY).run().code == Some(0) {
            sound(COPY, &format!("copy {run}"));
        }
    }
    let fired: Vec<String> = faults.iter().zip(&rules).map(|((f, _), r)| format!("{f}: {}", proxy.fired(*r))).collect();
    eprintln!("{} requests through the proxy; faults fired: {}", proxy.log().len(), fired.join(", "));
    eprintln!("outcomes: {tally:?}");
    assert!(rules.iter().map(|r| proxy.fired(*r)).sum::<u32>() > 0, "the proxy injected faults");
    assert!(tally["backup"].correct > 0, "seed {seed}: no backup got through the faults: {tally:?}");
}
