//! forget and prune: retention rules remove snapshots, prune reclaims unused packs in two phases
//! (marked, then deleted a grace period later), and what stays passes a full check and restores.

use crate::harness::*;

fn json_of(out: &Output) -> serde_json::Value {
    out.ok();
    out.json()
}

#[test]
fn forget_then_two_phase_prune_reclaims_space_and_keeps_what_restores() {
    let ws = Workspace::new();
    let src = ws.mkdir("src");
    let tree = TreeBuilder::new(&src);
    let repo = ws.repo();
    repo.cmd("init").args(["--pack-size-mib", "1"]).run().ok();
    for n in 0..3u64 {
        tree.file_gen("data.bin", &mut DataGen::random(100 + n), 6 << 20);
        tree.file("note.txt", format!("version {n}\n").as_bytes());
        repo.backup(&[&src]);
    }
    let before = repo.total_bytes();

    let dry = repo.cmd("forget").args(["--keep-last", "1", "--dry-run", "--prune"]).run();
    dry.ok().mentions("would remove 2 snapshots", "the plan");
    assert_eq!(repo.snapshots().len(), 3, "a dry run changes nothing");

    let first = json_of(&repo.cmd("forget").args(["--keep-last", "1", "--prune", "--grace", "0s", "--json"]).run());
    assert_eq!(json_u64(&first["applied"], "snapshots_removed", &first), 2);
    assert_eq!(json_u64(&first["prune"], "packs_deleted", &first), 0, "the first pass only marks: {first}");
    let marked = json_u64(&first["prune"], "packs_marked", &first);
    assert!(
        marked >= 4 && json_u64(&first["prune"], "bytes_marked", &first) >= 12 << 20,
        "two 6 MiB versions: {first}"
    );
    assert_eq!(repo.snapshots().len(), 1);

    // A grace period not yet over deletes nothing; one that is, deletes exactly the marked packs.
    let waiting = json_of(&repo.cmd("prune").args(["--grace", "1h", "--json"]).run());
    assert_eq!(json_u64(&waiting, "packs_deleted", &waiting), 0);
    let second = json_of(&repo.cmd("prune").args(["--grace", "0s", "--json"]).run());
    assert_eq!(json_u64(&second, "packs_deleted", &second), marked, "{second}");
    assert!(repo.total_bytes() < before / 2, "space reclaimed: {} of {before}", repo.total_bytes());

    repo.check(true).ok().mentions("no damage found", "check after prune");
    let out = ws.join("restored");
    repo.restore("latest", &out).ok();
    assert_trees_equal(&src, &restored_path(&out, &src), CompareOpts { owner: true }, &"after prune");
    let again = json_of(&repo.cmd("prune").args(["--grace", "0s", "--json"]).run());
    assert_eq!(json_u64(&again, "packs_marked", &again) + json_u64(&again, "packs_deleted", &again), 0);
}

#[test]
fn forget_needs_a_rule_and_refuses_bad_durations() {
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.init();
    repo.cmd("forget").run().code_is(2).stderr_mentions("no retention rule", "the cause");
    repo.cmd("forget").args(["--keep-within", "a week"]).run().code_is(2);
}

#[test]
fn forget_keeps_wal_from_the_oldest_kept_base_backup_and_recovery_still_reaches_the_end() {
    use crate::harness::pg::{Cluster, archiving_primary};
    use std::time::Duration;
    let ws = Workspace::new_public();
    let (repo, key_file, mut primary) = archiving_primary(&ws, &[], &[]);
    primary.sql("CREATE TABLE t (n int PRIMARY KEY)");
    let dsn = primary.dsn();
    let backup = || repo.cmd("backup").args(["--pg", &dsn, "--json"]).timeout(Duration::from_secs(300)).run();
    backup().ok();
    for batch in 0..3 {
        primary.sql(&format!("INSERT INTO t SELECT generate_series({}, {})", batch * 100 + 1, batch * 100 + 100));
        primary.sql("SELECT pg_switch_wal()");
    }
    backup().ok();
    primary.sql("INSERT INTO t SELECT generate_series(301, 400)");
    primary.archive_all_wal();
    primary.stop();
    let listed = |dir: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(repo.path.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 24)
            .collect();
        names.sort();
        names
    };
    let segments = || listed("wal/00000001");
    // Each segment pushed has its block map beside it.
    let full_segments = |names: Vec<String>| names.into_iter().filter(|n| !n.contains('.')).collect::<Vec<_>>();
    assert_eq!(listed("walmap/00000001"), full_segments(segments()));
    let mut bases = repo.snapshots();
    bases.sort_by_key(|s| s["time"].as_str().unwrap().to_string());
    let first_wal = bases[0]["pg"]["start_wal"].as_str().unwrap().to_string();
    let start_wal = bases[1]["pg"]["start_wal"].as_str().unwrap().to_string();
    assert!(segments().iter().any(|s| *s < start_wal), "WAL older than the second backup exists");

    // A PITR window longer than the history keeps the first backup, and with it all WAL.
    let kept = json_of(&repo.cmd("forget").args(["--keep-last", "1", "--pitr-window", "1d", "--json"]).run());
    assert_eq!(json_u64(&kept["applied"], "snapshots_removed", &kept), 0, "{kept}");
    assert_eq!(kept["plan"]["wal_kept_from"], first_wal.as_str(), "{kept}");
    assert!(segments().iter().all(|s| *s >= first_wal) && segments().contains(&first_wal));

    let out = json_of(&repo.cmd("forget").args(["--keep-last", "1", "--json"]).run());
    assert_eq!(json_u64(&out["applied"], "snapshots_removed", &out), 1, "{out}");
    assert_eq!(out["plan"]["wal_kept_from"], start_wal.as_str());
    let left = segments();
    assert!(left.iter().all(|s| *s >= start_wal), "no segment before {start_wal} is left: {left:?}");
    assert!(left.contains(&start_wal));
    assert_eq!(listed("walmap/00000001"), full_segments(left), "the maps of removed segments went with them");

    repo.check(true).ok();
    let dir = ws.join("restored");
    repo.cmd("restore")
        .args(["--point-in-time", "latest", "--start", "--key-file"])
        .arg(&key_file)
        .arg("--to")
        .arg(&dir)
        .timeout(Duration::from_secs(300))
        .run()
        .ok();
    let mut restored = Cluster::existing(&dir, &[("archive_mode", "off".into())]);
    restored.start();
    assert_eq!(restored.sql("SELECT count(*) FROM t"), "400");
    restored.stop();
}

/// Backups and forget --prune running at the same time (each waiting for the other's lock):
/// afterwards every byte checks out and every snapshot left restores.
fn backup_and_prune_at_once(ws: &Workspace, drctl: &(dyn Fn(&str) -> Drctl + Sync)) {
    let src = ws.mkdir("src");
    let tree = TreeBuilder::new(&src);
    tree.file_gen("data.bin", &mut DataGen::random(1), 4 << 20);
    drctl("init").args(["--pack-size-mib", "1"]).run().ok();
    drctl("backup").arg("--path").arg(&src).run().ok();
    std::thread::scope(|s| {
        s.spawn(|| {
            for n in 2..6u64 {
                tree.file_gen("data.bin", &mut DataGen::random(n), 4 << 20);
                drctl("backup").env("DRCTL_LOCK_WAIT", "120s").arg("--path").arg(&src).run().ok();
            }
        });
        s.spawn(|| {
            for _ in 0..4 {
                drctl("forget")
                    .env("DRCTL_LOCK_WAIT", "120s")
                    .args(["--keep-last", "2", "--prune", "--grace", "0s"])
                    .run()
                    .ok();
            }
        });
    });
    drctl("forget").args(["--keep-last", "2", "--prune", "--grace", "0s"]).run().ok();
    drctl("prune").args(["--grace", "0s"]).run().ok();
    drctl("check").arg("--read-data").run().ok().mentions("no damage found", "check");
    let snapshots = drctl("snapshots").arg("--json").run().json();
    let snapshots = snapshots.as_array().unwrap();
    assert_eq!(snapshots.len(), 2);
    for snap in snapshots {
        let id = snap["short_id"].as_str().unwrap();
        drctl("restore").args([id, "--to"]).arg(ws.join(format!("r-{id}"))).run().ok();
    }
    let latest = ws.join("latest");
    drctl("restore").args(["latest", "--to"]).arg(&latest).run().ok();
    assert_trees_equal(&src, &restored_path(&latest, &src), CompareOpts { owner: true }, &"latest");
}

#[test]
fn backup_and_prune_at_once_on_a_local_repository() {
    let ws = Workspace::new();
    let repo = ws.join("repo");
    backup_and_prune_at_once(&ws, &|sub| Drctl::new().arg(sub).arg("--repo").arg(&repo));
}

#[test]
fn backup_and_prune_at_once_on_s3() {
    let moto = crate::harness::moto::Moto::start("concurrent");
    let ws = Workspace::new();
    backup_and_prune_at_once(&ws, &|sub| moto.drctl(sub).args(["--repo", "s3://concurrent/app"]));
}
