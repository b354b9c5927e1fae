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
