//! `drctl copy`: snapshots and WAL to another repository (another bucket and region, opened with
//! its own KMS key), only the objects it lacks, each verified; resumable after a kill.

use crate::harness::moto::Moto;
use crate::harness::*;

fn report(out: &Output) -> serde_json::Value {
    out.ok();
    out.json()
}

fn count(v: &serde_json::Value, key: &str) -> u64 {
    json_u64(v, key, &"copy report")
}

/// Data objects (packs, index files, manifests) of a bucket prefix.
fn data_keys(moto: &Moto, bucket: &str) -> Vec<String> {
    let mut keys: Vec<String> = moto
        .objects(bucket)
        .into_iter()
        .map(|(k, _)| k.split_once('/').unwrap().1.to_string())
        .filter(|k| k.starts_with("packs/") || k.starts_with("index/") || k.starts_with("snapshots/"))
        .collect();
    keys.sort();
    keys
}

#[test]
fn a_copy_to_another_region_restores_bit_exact_and_the_next_sends_only_new_objects() {
    let moto = Moto::empty();
    moto.bucket("primary", "us-east-1", false);
    moto.bucket("dr-copy", "us-west-2", false);
    let dr_key = moto.kms_key("us-west-2");
    let ws = Workspace::new();
    let src = ws.mkdir("src");
    let tree = TreeBuilder::new(&src);
    tree.file_gen("big.bin", &mut DataGen::random(11), 24 << 20);
    tree.file("small.txt", b"first\n");
    let from = "s3://primary/app";
    let to = "s3://dr-copy/app?region=us-west-2";
    moto.drctl("init").args(["--repo", from, "--pack-size-mib", "4"]).run().ok();
    moto.drctl("backup").args(["--repo", from, "--path"]).arg(&src).run().ok();

    let first = report(
        &moto.drctl("copy").args(["--from", from, "--to", to, "--all", "--json", "--to-kms-key-id", &dr_key]).run(),
    );
    assert_eq!(count(&first, "snapshots_copied"), 1);
    assert!(count(&first, "packs_copied") >= 5, "24 MiB in 4 MiB packs: {first}");
    assert_eq!(data_keys(&moto, "dr-copy"), data_keys(&moto, "primary"), "the target holds what the source does");

    // The copy opens with its own KMS key alone, passes a full check and restores bit-exact.
    moto.drctl("check")
        .no_password()
        .args(["--repo", to, "--read-data"])
        .run()
        .ok()
        .mentions("no damage found", "check");
    let target = ws.join("from-dr");
    moto.drctl("restore").no_password().args(["--repo", to, "latest", "--to"]).arg(&target).run().ok();
    assert_trees_equal(&src, &restored_path(&target, &src), CompareOpts { owner: true }, &"restored from the copy");

    // Another backup, another copy: only the objects the new backup wrote go.
    tree.file_gen("more.bin", &mut DataGen::random(12), 6 << 20);
    let before = data_keys(&moto, "primary");
    moto.drctl("backup").args(["--repo", from, "--path"]).arg(&src).run().ok();
    let new: Vec<String> = data_keys(&moto, "primary").into_iter().filter(|k| !before.contains(k)).collect();
    let second = report(
        &moto
            .drctl("copy")
            .args(["--from", from, "--to", to, "--all", "--json"])
            .no_password()
            .env("DRCTL_PASSWORD", PASSWORD)
            .run(),
    );
    assert_eq!(count(&second, "objects_copied") as usize, new.len(), "exactly the new objects: {new:?}\n{second}");
    assert_eq!(count(&second, "snapshots_present"), 1);
    assert_eq!(count(&second, "packs_present"), count(&first, "packs_copied"));
    assert_eq!(data_keys(&moto, "dr-copy"), data_keys(&moto, "primary"));
    moto.drctl("check").no_password().args(["--repo", to, "--read-data"]).run().ok();
}

#[test]
fn a_killed_copy_resumes_and_a_single_snapshot_copies_alone() {
    let ws = Workspace::new();
    let src = ws.mkdir("src");
    let tree = TreeBuilder::new(&src);
    tree.file_gen("a.bin", &mut DataGen::random(21), 96 << 20);
    let source = ws.repo();
    source.cmd("init").args(["--pack-size-mib", "1"]).run().ok();
    let (first, _) = source.backup(&[&src]);
    tree.file_gen("b.bin", &mut DataGen::random(22), 4 << 20);
    let (second, _) = source.backup(&[&src]);
    let target = Repo::new(ws.join("copy"));
    let copy = |args: &[&str]| {
        Drctl::new().arg("copy").arg("--from").arg(&source.path).arg("--to").arg(&target.path).args(args)
    };

    // Only the first snapshot: the target lists it alone, and it is whole.
    let only = report(&copy(&["--json", &first.short_id]).run());
    assert_eq!(count(&only, "snapshots_copied"), 1);
    assert_eq!(target.snapshots().len(), 1);
    target.check(true).ok();

    // The rest, killed half-way (one object at a time, so it is slow enough to catch).
    let mut running = copy(&["--all", "--jobs", "1"]).spawn();
    let packs_before = target.packs().len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while target.packs().len() < packs_before + 1 && !running.has_exited() {
        assert!(std::time::Instant::now() < deadline, "the copy made no progress");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(running.kill9(), "the copy was still running when killed");
    running.finish();
    assert_eq!(target.snapshots().len(), 1, "no snapshot appears before all it needs is copied");
    target.check(true).ok();

    // WAL goes with --wal, each file fetched back byte-identical from the copy.
    let pg_wal = ws.mkdir("pg_wal");
    let mut segments = Vec::new();
    for n in 1..=3u8 {
        let segment = pg_wal.join(format!("0000000100000000000000{n:02}"));
        let mut data = vec![0u8; 1 << 20];
        DataGen::mixed(n.into(), 64 * KIB).fill(&mut data);
        std::fs::write(&segment, &data).unwrap();
        source.cmd("wal-push").arg(&segment).run().ok();
        segments.push((segment, data));
    }
    let resumed = report(&copy(&["--all", "--wal", "--json"]).run());
    assert!(count(&resumed, "packs_present") > 0, "{resumed}");
    assert_eq!(count(&resumed, "snapshots_copied"), 1);
    assert_eq!(count(&resumed, "wal_copied"), 3);
    let maps = |repo: &Repo| std::fs::read_dir(repo.path.join("walmap/00000001")).map_or(0, |d| d.count());
    assert_eq!((maps(&source), maps(&target)), (3, 3), "each segment's block map goes with it");
    target.check(true).ok();
    for (segment, data) in &segments {
        let fetched = ws.join("fetched");
        target.cmd("wal-fetch").arg(segment.file_name().unwrap()).arg(&fetched).run().ok();
        assert_eq!(&std::fs::read(&fetched).unwrap(), data, "{}", segment.display());
    }
    let again = report(&copy(&["--all", "--wal", "--json"]).run());
    assert_eq!(count(&again, "objects_copied"), 0, "nothing new: {again}");
    assert_eq!(count(&again, "wal_present"), 3);
    let out = ws.join("restored");
    target.restore(&second.short_id, &out).ok();
    assert_trees_equal(
        &src,
        &restored_path(&out, &src),
        CompareOpts { owner: true },
        &"restored from the resumed copy",
    );
}

#[test]
fn copying_into_another_repository_is_refused() {
    let ws = Workspace::new();
    let src = ws.mkdir("src");
    TreeBuilder::new(&src).file("f", b"x");
    let a = ws.repo();
    a.init();
    a.backup(&[&src]);
    let b = Repo::new(ws.join("other"));
    b.init();
    let before = b.file_set();
    Drctl::new()
        .args(["copy", "--all", "--from"])
        .arg(&a.path)
        .arg("--to")
        .arg(&b.path)
        .run()
        .code_is(2)
        .stderr_mentions("another repository", "the cause");
    assert_eq!(b.file_set(), before, "the other repository is unchanged");
}

#[test]
fn prune_on_a_copy_keeps_packs_listed_by_two_index_files() {
    // A partial copy writes an index file of its own; a later --all copy brings the source's
    // index file listing the same packs. Prune must see one pack, used, not two.
    let ws = Workspace::new();
    let src = ws.mkdir("src");
    let tree = TreeBuilder::new(&src);
    tree.file_gen("shared.bin", &mut DataGen::random(31), 3 << 20);
    // Large enough (about 16 chunks) that some of the first backup's packs hold none of
    // shared.bin's chunks, whatever order the parallel sealers pack them in.
    tree.file_gen("only-a.bin", &mut DataGen::random(32), 16 << 20);
    let source = ws.repo();
    source.cmd("init").args(["--pack-size-mib", "1"]).run().ok();
    source.backup(&[&src]);
    std::fs::remove_file(src.join("only-a.bin")).unwrap();
    tree.file_gen("only-b.bin", &mut DataGen::random(33), 3 << 20);
    let (second, _) = source.backup(&[&src]);
    let target = Repo::new(ws.join("copy"));
    let copy = |args: &[&str]| {
        Drctl::new().arg("copy").arg("--from").arg(&source.path).arg("--to").arg(&target.path).args(args).run()
    };
    // The second snapshot needs only some packs of the first backup's index file: a partial one.
    copy(&[&second.short_id]).ok();
    copy(&["--all"]).ok();
    assert!(target.indexes().len() >= 3, "the first backup's shared packs are listed twice");
    for _ in 0..2 {
        let out = target.cmd("prune").args(["--grace", "0s", "--json"]).run();
        out.ok();
        let report = out.json();
        let touched = json_u64(&report, "packs_marked", &report) + json_u64(&report, "packs_deleted", &report);
        assert_eq!(touched, 0, "{report}");
    }
    target.check(true).ok();
    for snap in target.snapshots() {
        let id = snap["short_id"].as_str().unwrap();
        target.restore(id, &ws.join(format!("r-{id}"))).ok();
    }
}

#[test]
fn a_copy_into_s3_proves_each_upload_by_its_checksum_without_reading_it_back() {
    let moto = Moto::empty();
    moto.bucket("primary", "us-east-1", false);
    moto.bucket("dr-copy", "us-west-2", false);
    let ws = Workspace::new();
    let src = ws.mkdir("src");
    TreeBuilder::new(&src).file_gen("big.bin", &mut DataGen::random(31), 24 << 20);
    let from = "s3://primary/app";
    let to = "s3://dr-copy/app?region=us-west-2";
    moto.drctl("init").args(["--repo", from, "--pack-size-mib", "4"]).run().ok();
    moto.drctl("backup").args(["--repo", from, "--path"]).arg(&src).run().ok();
    let out = moto
        .drctl("copy")
        .args(["--from", from, "--to", to, "--all", "--json"])
        .env("RUST_LOG", "drctl::store::s3=debug")
        .env("DRCTL_LOG_FORMAT", "json")
        .run();
    out.ok();
    let copied = count(&report(&out), "packs_copied");
    assert!(copied >= 5, "24 MiB in 4 MiB packs: {}", out.stdout);
    // Each upload's CRC32C came back from the service; no object was read back to verify it.
    let read_back: Vec<&str> = out.stderr.lines().filter(|l| l.contains("did not come back")).collect();
    assert!(read_back.is_empty(), "uploads read back: {read_back:?}");
    let target = ws.join("from-dr");
    moto.drctl("restore").args(["--repo", to, "latest", "--to"]).arg(&target).run().ok();
    assert_trees_equal(&src, &restored_path(&target, &src), CompareOpts { owner: true }, &"restored from the copy");
}
