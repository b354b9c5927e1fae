//! KMS key slots against moto's KMS API: a repository opened with no passphrase at all, slots
//! added, rotated and removed without rewriting data, and KMS refusals reported as such.

use crate::harness::faultproxy::{Fault, FaultProxy, Rule};
use crate::harness::moto::Moto;
use crate::harness::*;

/// Every object of the bucket but key slots and locks: what a key operation must not touch.
fn data_objects(moto: &Moto, bucket: &str) -> Vec<(String, u64)> {
    moto.objects(bucket).into_iter().filter(|(k, _)| !k.contains("/keys/") && !k.contains("/locks/")).collect()
}

#[test]
fn a_kms_slot_opens_the_repository_and_rotates_without_rewriting_data() {
    let moto = Moto::start("kms-backups");
    let key_a = moto.kms_key("us-west-2");
    let key_b = moto.kms_key("us-east-1");
    let ws = Workspace::new();
    let src = ws.mkdir("src");
    TreeBuilder::new(&src).file_gen("data.bin", &mut DataGen::random(3), 3 << 20);
    let repo = "s3://kms-backups/app";
    moto.drctl("init").no_password().args(["--repo", repo, "--kms-key-id", &key_a]).run().ok();
    moto.drctl("backup").no_password().args(["--repo", repo, "--path"]).arg(&src).run().ok();
    let slots = moto.drctl("key").no_password().args(["list", "--repo", repo, "--json"]).run().json();
    let slots = slots.as_array().unwrap();
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0]["kind"], "kms");
    assert_eq!(slots[0]["kms_key_id"], key_a.as_str(), "the slot names its key");

    // A passphrase slot beside it (for break-glass access), then the KMS key rotated.
    moto.drctl("key").no_password().env("DRCTL_NEW_PASSWORD", "break glass").args(["add", "--repo", repo]).run().ok();
    let before = data_objects(&moto, "kms-backups");
    moto.drctl("key")
        .no_password()
        .args(["rotate", "--repo", repo, "--kms-key-id", &key_b])
        .run()
        .ok()
        .mentions("rotated", "the report");
    assert_eq!(data_objects(&moto, "kms-backups"), before, "a rotation rewrites no data");
    let slots = moto.drctl("key").no_password().args(["list", "--repo", repo, "--json"]).run().json();
    let keys: Vec<_> = slots.as_array().unwrap().iter().map(|s| s["kms_key_id"].clone()).collect();
    assert!(keys.contains(&key_b.as_str().into()) && !keys.contains(&key_a.as_str().into()), "{keys:?}");

    // Both remaining ways in restore the data.
    let target = ws.join("by-kms");
    moto.drctl("restore").no_password().args(["--repo", repo, "latest", "--to"]).arg(&target).run().ok();
    assert_trees_equal(&src, &restored_path(&target, &src), CompareOpts { owner: true }, &"kms");
    let target = ws.join("by-passphrase");
    moto.drctl("restore").password("break glass").args(["--repo", repo, "latest", "--to"]).arg(&target).run().ok();
    assert_trees_equal(&src, &restored_path(&target, &src), CompareOpts { owner: true }, &"passphrase");
}

#[test]
fn an_unknown_kms_key_is_named_and_nothing_is_created() {
    let moto = Moto::start("kms-bad");
    let missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000";
    moto.drctl("init")
        .no_password()
        .args(["--repo", "s3://kms-bad/app", "--kms-key-id", missing])
        .run()
        .code_is(4)
        .stderr_mentions("no such key", "the cause")
        .stderr_mentions(missing, "the key");
    assert!(moto.objects("kms-bad").is_empty(), "nothing written: {:?}", moto.objects("kms-bad"));
}

/// A KMS refusal (what moto does not model: a disabled key, a key policy that says no) served by
/// the fault proxy in place of KMS's answer to Decrypt.
fn kms_refusal(kind: &str, message: &str, causes: &[&str]) {
    let moto = Moto::start("kms-refused");
    let key = moto.kms_key("us-east-1");
    let repo = "s3://kms-refused/app";
    moto.drctl("init").no_password().args(["--repo", repo, "--kms-key-id", &key]).run().ok();
    let before = moto.objects("kms-refused");
    let proxy = FaultProxy::start(&moto.endpoint);
    let body = format!("{{\"__type\":\"{kind}\",\"message\":\"{message}\"}}");
    let refusal = proxy.add(
        Rule::new(Fault::respond(400, &[("Content-Type", "application/x-amz-json-1.1")], &body))
            .header("X-Amz-Target", "TrentService.Decrypt"),
    );
    let out = moto.drctl_via("snapshots", &proxy.endpoint()).no_password().args(["--repo", repo]).run();
    out.code_is(4);
    for cause in causes {
        out.stderr_mentions(cause, "the cause");
    }
    out.stderr_mentions(&key, "the key");
    assert!(proxy.fired(refusal) >= 1, "{proxy}");
    let mut after = moto.objects("kms-refused");
    after.retain(|(k, _)| !k.contains("/locks/"));
    assert_eq!(after, before, "nothing changed");
}

#[test]
fn a_disabled_kms_key_is_named_with_the_fix() {
    kms_refusal("DisabledException", "arn is disabled.", &["disabled", "enable-key"]);
}

#[test]
fn a_kms_key_the_credentials_may_not_use_is_named() {
    kms_refusal("AccessDeniedException", "not authorized", &["AccessDeniedException", "kms:Decrypt"]);
}

#[test]
fn expired_credentials_at_kms_are_named() {
    kms_refusal("ExpiredTokenException", "The security token included in the request is expired", &["expired"]);
}
