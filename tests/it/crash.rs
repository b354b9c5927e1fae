//! kill -9 during backups must never leave a repository that fails `check --read-data` or that
//! cannot take the next backup.

use std::time::{Duration, Instant};

use crate::harness::*;

const BIG_FILES: u64 = 10;
const BIG_SIZE: u64 = 20 * MIB;

/// (Re)write the big files with content that depends on `seed`, so every backup run has about
/// 200 MiB of data the repository has not seen (a run is never a cheap dedup-only pass).
fn write_big_files(t: &TreeBuilder, seed: u64) {
    for i in 0..BIG_FILES {
        t.file_gen(format!("big/{i}.bin"), &mut DataGen::mixed(mix64(seed) ^ i, MIB), BIG_SIZE);
    }
}

#[test]
fn kill_9_during_backup_leaves_a_sound_repository() {
    let seed = seed_from_env_or_time();
    eprintln!("crash test seed: {seed} (rerun with DRCTL_TEST_SEED={seed} to reproduce)");
    let mut rng = Rng::new(seed);

    let ws = Workspace::new();
    let src = ws.join("src");
    let t = TreeBuilder::new(&src);
    // ~225 MiB: 1500 small files and 10 big mixed files.
    for i in 0..1500u64 {
        let n = 1024 + (mix64(i) % (16 * KIB)) as usize;
        let data = if i % 2 == 0 { DataGen::text(i).take(n) } else { DataGen::random(i).take(n) };
        t.file(format!("small/{:02}/{i:04}.dat", i % 30), &data);
    }
    write_big_files(&t, seed);

    // Calibrate: how long does a full backup of new data take here? Kill delays are spread over
    // [50 ms, 90% of that], so they land early (key derivation, walking), in the middle (packs
    // being written) and late (index / manifest).
    let calib = Repo::new(ws.join("calibration-repo"));
    calib.init();
    let t0 = Instant::now();
    calib.backup(&[&src]);
    let full_ms = t0.elapsed().as_millis() as u64;
    let _ = std::fs::remove_dir_all(&calib.path);
    let hi = (full_ms * 9 / 10).max(300);
    let n_runs = 5u64;
    let mut delays: Vec<u64> =
        (0..n_runs).map(|j| rng.range(50 + (hi - 50) * j / n_runs, 51 + (hi - 50) * (j + 1) / n_runs)).collect();
    for i in (1..delays.len()).rev() {
        let j = rng.range(0, i as u64 + 1) as usize;
        delays.swap(i, j);
    }
    eprintln!("a full backup takes {full_ms} ms here; kill delays (ms): {delays:?}");

    let repo = ws.repo();
    repo.init();
    let mut killed = 0;
    let mut run_no = 0u64;
    for &planned in &delays {
        // If the backup finished before the kill (the machine got faster than calibrated), try
        // again with half the delay, up to 3 times: every stratum should get a real kill.
        let mut delay = planned;
        for _attempt in 0..3 {
            run_no += 1;
            write_big_files(&t, seed ^ run_no);
            let mut run = repo.backup_cmd(&[&src]).spawn();
            std::thread::sleep(Duration::from_millis(delay));
            let was_running = run.kill9();
            let out = run.finish();
            eprintln!(
                "run {run_no}: kill -9 after {delay} ms: {}",
                if was_running { "killed while running" } else { "backup had already finished" }
            );
            if was_running {
                assert_eq!(out.signal, Some(libc::SIGKILL), "seed {seed}\n{out}");
            } else {
                out.ok();
            }
            // The interrupted repository is consistent (a stale lock and unreferenced packs at
            // most produce warnings).
            let c = repo.check(false);
            if c.code != Some(0) {
                panic!("seed {seed}: check after kill -9 at {delay} ms failed\n{c}\nthe killed backup was:\n{out}");
            }
            if was_running {
                killed += 1;
                break;
            }
            delay = (delay / 2).max(50);
        }
    }
    assert!(killed >= 4, "seed {seed}: only {killed} of the {n_runs} planned kills hit a running backup");

    let c = repo.check(true);
    if c.code != Some(0) {
        panic!("seed {seed}: check --read-data after {killed} interrupted backups failed\n{c}");
    }
    let (b, out) = repo.backup(&[&src]);
    eprintln!("final backup: {}", out.stdout.trim());
    let target = ws.join("out");
    let r = repo.restore(&b.id, &target);
    r.ok();
    assert_trees_equal(&src, &restored_path(&target, &src), CompareOpts { owner: true }, &r);
    let c = repo.check(true);
    if c.code != Some(0) {
        panic!("seed {seed}: check --read-data after the final backup failed\n{c}");
    }
}
