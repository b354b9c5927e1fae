//! Key slots: changing the passphrase without rewriting data, key files that open the repository
//! without an argon2 run, and refusing to remove the last slot.

use crate::harness::*;

/// `drctl key <action> --repo <repo>`: the repository flag belongs to the action.
fn key(repo: &Repo, action: &str) -> Drctl {
    Drctl::new().args(["key", action, "--repo"]).arg(&repo.path)
}

#[test]
fn passphrase_change_and_key_file_slots() {
    let ws = Workspace::new();
    let src = TreeBuilder::new(ws.join("src"));
    src.file_gen("data.bin", &mut DataGen::mixed(7, 64 * KIB), 2 * MIB);
    let repo = ws.repo();
    repo.init();
    let (backup, _) = repo.backup(&[&src.root]);
    let packs_before = repo.file_set();

    // A second passphrase, then the first one removed: a passphrase change.
    key(&repo, "add").env("DRCTL_NEW_PASSWORD", "second secret").run().ok();
    let slots = key(&repo, "list").arg("--json").run();
    slots.ok();
    let slots = slots.json();
    let slots = slots.as_array().expect("key list --json is an array");
    assert_eq!(slots.len(), 2, "{slots:?}");
    let current = slots.iter().find(|s| s["current"] == true).expect("the slot in use is marked");
    let current_id = current["id"].as_str().unwrap()[..8].to_string();
    key(&repo, "remove").arg(&current_id).password("second secret").run().ok();
    repo.cmd("snapshots").run().code_is(4).stderr_mentions("wrong password", "the old passphrase is gone");
    let new = |d: Drctl| d.password("second secret");
    new(repo.cmd("check").arg("--read-data")).run().ok();

    // A key file slot opens the repository with no passphrase at all.
    let key_file = ws.join("repo.key");
    new(key(&repo, "add").arg("--new-key-file").arg(&key_file)).run().ok();
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the key file is private");
    new(key(&repo, "add").arg("--new-key-file").arg(&key_file)).run().code_is(2);
    // That it runs no argon2 is checked where it can fail: repo::key's unit test (here the
    // suite's cheap argon2 would hide it).
    let out = repo.cmd("snapshots").arg("--json").no_password().env("DRCTL_KEY_FILE", &key_file).run();
    out.ok();
    assert_eq!(out.json()[0]["id"], backup.id.as_str());
    let target = ws.join("out");
    repo.restore_cmd("latest", &target).no_password().arg("--key-file").arg(&key_file).run().ok();
    assert_trees_equal(&src.root, &restored_path(&target, &src.root), CompareOpts { owner: true }, &out);

    // Another key file does not open it.
    let stranger = Workspace::new().repo();
    stranger.init();
    let other_key = ws.join("other.key");
    key(&stranger, "add").arg("--new-key-file").arg(&other_key).run().ok();
    repo.cmd("snapshots").no_password().env("DRCTL_KEY_FILE", &other_key).run().code_is(4);

    // No data was rewritten by any of this: only keys/ changed (and checks/ gained the records
    // of the checks above).
    let changed: Vec<_> = repo
        .file_set()
        .into_iter()
        .filter(|(p, size)| packs_before.get(p) != Some(size) && !p.starts_with("keys") && !p.starts_with("checks/"))
        .collect();
    assert!(changed.is_empty(), "key changes touched data objects: {changed:?}");
}

#[test]
fn the_last_key_slot_cannot_be_removed() {
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.init();
    let slots = key(&repo, "list").arg("--json").run();
    slots.ok();
    let id = slots.json()[0]["id"].as_str().unwrap().to_string();
    key(&repo, "remove").arg(&id).run().code_is(2).stderr_mentions("only key slot", "why it refused");
    repo.cmd("snapshots").run().ok();
}

/// A rotation killed between adding the new slot and removing the old one, run again: afterwards
/// only the new passphrase opens the repository, with one slot, and so after the next rotation.
/// (`key add` leaves the same state as that kill.)
#[test]
fn a_rotation_run_again_after_an_interruption_retires_the_old_passphrase_for_good() {
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.init();
    let opens = |p: &str| repo.cmd("snapshots").password(p).run().code == Some(0);
    key(&repo, "add").env("DRCTL_NEW_PASSWORD", "second").run().ok();
    key(&repo, "rotate").env("DRCTL_NEW_PASSWORD", "second").run().ok();
    assert!(!opens(PASSWORD) && opens("second"));
    let slots = key(&repo, "list").password("second").arg("--json").run().ok().json();
    assert_eq!(slots.as_array().unwrap().len(), 1, "one slot for one passphrase: {slots}");
    key(&repo, "rotate").password("second").env("DRCTL_NEW_PASSWORD", "third").run().ok();
    assert!(!opens("second"), "the rotated-away passphrase must not open the repository");
    assert!(opens("third"));
}
