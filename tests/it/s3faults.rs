//! S3 under faults: drctl talks to moto through a fault proxy (tests/it/faultproxy.rs) that fails
//! chosen requests the way S3 and networks do (5xx, throttling, resets, stalls, bodies cut off,
//! refusals). Transient faults must be ridden out with an exact result; persistent ones and
//! refusals must fail with exit 8, a message naming the cause, and the repository as it was.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::faultproxy::{Fault, FaultProxy, Rule, RuleId};
use crate::harness::moto::Moto;
use crate::harness::*;

const BUCKET: &str = "drctl-backups";
const REPO: &str = "s3://drctl-backups/team/app";

/// Long enough for any run here, short enough that a retry loop gone wrong fails the test soon.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A tree whose backup writes one pack as a multipart upload of several 16 MiB parts and a
/// smaller one in a single PutObject.
fn source(ws: &Workspace) -> PathBuf {
    let src = ws.mkdir("src");
    let tree = TreeBuilder::new(&src);
    tree.file_gen("big.bin", &mut DataGen::random(11), 40 << 20);
    tree.file_gen("notes/log.txt", &mut DataGen::text(12), 300 << 10);
    tree.file("notes/small.txt", b"hello from behind the proxy\n");
    tree.stamp_mtimes(13);
    src
}

fn backup(drctl: Drctl, src: &Path) -> Drctl {
    drctl.args(["--repo", REPO, "--json", "--path"]).arg(src).timeout(RUN_LIMIT)
}

/// The exit code, with the proxy's request log in the message when it is not the one expected.
#[track_caller]
fn expect_code(out: &Output, code: i32, proxy: &FaultProxy) {
    assert!(out.code == Some(code) && !out.timed_out, "expected exit code {code}\n{out}\n{proxy}");
}

/// Each of `causes` is named in the `error:` paragraph of stderr, not only in the hint after it
/// (whose advice on any S3 failure mentions credentials and the region).
#[track_caller]
fn expect_causes(out: &Output, causes: &[&str], context: &dyn fmt::Display) {
    let lines: Vec<&str> = out.stderr.lines().collect();
    let start = lines.iter().rposition(|l| l.starts_with("error:")).unwrap_or(lines.len());
    let error: Vec<&str> = lines[start..].iter().copied().take_while(|l| !l.starts_with("hint:")).collect();
    let error = error.join("\n").to_lowercase();
    for cause in causes {
        assert!(error.contains(&cause.to_lowercase()), "the error should name {cause:?}\n{out}\n{context}");
    }
}

#[track_caller]
fn expect_fired(proxy: &FaultProxy, rule: RuleId, times: u32, what: &str) {
    assert_eq!(proxy.fired(rule), times, "{what} should have fired {times} time(s)\n{proxy}");
}

/// Every object of the repository (key, size), locks left out: a command that fails leaves its
/// lock to be cleaned up but must change nothing else.
fn repository_objects(moto: &Moto) -> Vec<(String, u64)> {
    moto.objects(BUCKET).into_iter().filter(|(key, _)| !key.contains("/locks/")).collect()
}

fn open_multipart_uploads(moto: &Moto) -> String {
    moto.python("print(client('s3').list_multipart_uploads(Bucket=args[0]).get('Uploads', []))", &[BUCKET])
}

/// `check --read-data` straight against moto: the repository is whole whatever the proxy did.
fn check_directly(moto: &Moto) {
    moto.drctl("check").args(["--repo", REPO, "--read-data"]).run().ok().mentions("no damage found", "the verdict");
}

#[test]
fn a_backup_rides_out_errors_throttling_resets_and_a_stall() {
    let moto = Moto::start(BUCKET);
    let proxy = FaultProxy::start(&moto.endpoint);
    let ws = Workspace::new();
    let src = source(&ws);
    moto.drctl("init").args(["--repo", REPO]).run().ok();

    let error = proxy.add(
        Rule::new(Fault::s3_error(500, "InternalError", "We encountered an internal error. Please try again."))
            .method("PUT")
            .query("x-id=UploadPart")
            .after(1)
            .times(1),
    );
    let slow_down = proxy.add(
        Rule::new(Fault::s3_error(503, "SlowDown", "Please reduce your request rate."))
            .method("PUT")
            .path("/packs/")
            .query("x-id=PutObject")
            .times(1),
    );
    let reset = proxy.add(Rule::new(Fault::Reset).method("POST").query("uploads").times(1));
    // Silent for longer than DRCTL_S3_TIMEOUT below.
    let stall = proxy.add(Rule::new(Fault::Stall(Duration::from_secs(10))).method("PUT").path("/index/").times(1));
    // Done by the server, never heard of by the client: the retried completion must still work.
    let unheard = proxy.add(Rule::new(Fault::ResetMidResponse).method("POST").query("uploadId=").times(1));
    let out = backup(moto.drctl_via("backup", &proxy.endpoint()), &src).env("DRCTL_S3_TIMEOUT", "2").run();
    expect_code(&out, 0, &proxy);
    expect_fired(&proxy, error, 1, "500 on an UploadPart");
    expect_fired(&proxy, slow_down, 1, "503 SlowDown on the small pack's PutObject");
    expect_fired(&proxy, reset, 1, "reset on CreateMultipartUpload");
    expect_fired(&proxy, stall, 1, "stall on the index PutObject");
    expect_fired(&proxy, unheard, 1, "reset in the answer to CompleteMultipartUpload");
    let info = BackupInfo::parse(&out);

    check_directly(&moto);
    let target = ws.join("restored");
    let restored = moto.drctl("restore").args(["--repo", REPO, &info.short_id, "--to"]).arg(&target).run();
    restored.ok();
    assert_trees_equal(&src, &restored_path(&target, &src), CompareOpts { owner: true }, &restored);
}

#[test]
fn a_persistent_upload_failure_exits_8_and_leaves_the_repository_as_it_was() {
    let moto = Moto::start(BUCKET);
    let proxy = FaultProxy::start(&moto.endpoint);
    let ws = Workspace::new();
    let first = ws.mkdir("first");
    TreeBuilder::new(&first).file("a.txt", b"the snapshot that must survive\n");
    moto.drctl("init").args(["--repo", REPO]).run().ok();
    backup(moto.drctl("backup"), &first).run().ok();
    let before = repository_objects(&moto);

    let src = source(&ws);
    let failing = proxy.add(
        Rule::new(Fault::s3_error(500, "InternalError", "We encountered an internal error. Please try again."))
            .method("PUT")
            .query("x-id=UploadPart"),
    );
    let out = backup(moto.drctl_via("backup", &proxy.endpoint()), &src).env("DRCTL_S3_MAX_ATTEMPTS", "3").run();
    expect_code(&out, 8, &proxy);
    expect_causes(&out, &["upload part", "InternalError"], &proxy);
    // Parts go up a few at a time: each is tried 3 times (DRCTL_S3_MAX_ATTEMPTS) at most, and the
    // backup gives up once one of them has failed 3 times.
    proxy.settle();
    let log = proxy.log();
    let mut attempts = BTreeMap::<&str, u32>::new();
    for l in log.iter().filter(|l| l.query.contains("x-id=UploadPart")) {
        *attempts.entry(l.query.split('&').find_map(|kv| kv.strip_prefix("partNumber=")).unwrap()).or_default() += 1;
    }
    assert!(attempts.values().all(|&n| n <= 3) && attempts.values().any(|&n| n == 3), "{attempts:?}\n{proxy}");
    expect_fired(&proxy, failing, attempts.values().sum(), "500 on every UploadPart");
    assert!(
        log.iter().any(|l| l.method == "DELETE" && l.query.contains("uploadId=") && l.outcome == "204"),
        "the failed upload is aborted\n{proxy}"
    );
    assert!(!log.iter().any(|l| l.path.contains("/snapshots/") && l.method == "PUT"), "no snapshot written\n{proxy}");

    let snapshots = moto.drctl("snapshots").args(["--repo", REPO, "--json"]).run();
    assert_eq!(snapshots.ok().json().as_array().map(Vec::len), Some(1), "only the first snapshot\n{snapshots}");
    assert_eq!(repository_objects(&moto), before, "the repository is as it was");
    check_directly(&moto);
    assert_eq!(open_multipart_uploads(&moto), "[]", "no multipart upload is left open");
}

/// Faults on the reads of a restore or a check: a 503, a reset before the answer, bodies cut
/// off half-way (two pack reads, which run in parallel: the same one twice, or two).
fn read_faults(proxy: &FaultProxy) -> Vec<(RuleId, u32, &'static str)> {
    let pack = |fault: Fault| Rule::new(fault).method("GET").path("/packs/");
    vec![
        (
            proxy.add(pack(Fault::s3_error(503, "SlowDown", "Please reduce your request rate.")).times(1)),
            1,
            "503 on a pack read",
        ),
        (proxy.add(pack(Fault::ResetMidResponse).after(3).times(2)), 2, "pack body cut off twice"),
        (proxy.add(Rule::new(Fault::ResetMidResponse).method("GET").path("/index/").times(1)), 1, "index body cut off"),
        (
            proxy.add(Rule::new(Fault::Reset).method("GET").path("/snapshots/").times(1)),
            1,
            "reset on the snapshot read",
        ),
    ]
}

#[test]
fn restore_and_check_ride_out_cut_off_and_refused_reads() {
    let moto = Moto::start(BUCKET);
    let proxy = FaultProxy::start(&moto.endpoint);
    let ws = Workspace::new();
    let src = source(&ws);
    moto.drctl("init").args(["--repo", REPO]).run().ok();
    backup(moto.drctl("backup"), &src).run().ok();

    let rules = read_faults(&proxy);
    let target = ws.join("restored");
    let out = moto
        .drctl_via("restore", &proxy.endpoint())
        .args(["--repo", REPO, "latest", "--to"])
        .arg(&target)
        .timeout(RUN_LIMIT)
        .run();
    expect_code(&out, 0, &proxy);
    for (rule, times, what) in rules {
        expect_fired(&proxy, rule, times, what);
    }
    assert_trees_equal(&src, &restored_path(&target, &src), CompareOpts { owner: true }, &out);

    let rules = read_faults(&proxy);
    let out = moto.drctl_via("check", &proxy.endpoint()).args(["--repo", REPO, "--read-data"]).timeout(RUN_LIMIT).run();
    expect_code(&out, 0, &proxy);
    out.mentions("no damage found", "the verdict");
    for (rule, times, what) in rules {
        expect_fired(&proxy, rule, times, what);
    }
}

/// A backup through a proxy that answers every request with `fault`: exit 8, the error naming
/// each of `causes`, the repository unchanged.
fn refused_backup(fault: Fault, causes: &[&str]) {
    let moto = Moto::start(BUCKET);
    let proxy = FaultProxy::start(&moto.endpoint);
    let ws = Workspace::new();
    let src = ws.mkdir("src");
    TreeBuilder::new(&src).file("a.txt", b"never stored\n");
    moto.drctl("init").args(["--repo", REPO]).run().ok();
    let before = repository_objects(&moto);

    let refusal = proxy.add(Rule::new(fault));
    let out = backup(moto.drctl_via("backup", &proxy.endpoint()), &src).run();
    expect_code(&out, 8, &proxy);
    expect_causes(&out, causes, &proxy);
    assert!(proxy.fired(refusal) >= 1, "the refusal was served\n{proxy}");
    assert_eq!(repository_objects(&moto), before, "the repository is unchanged");
}

#[test]
fn an_expired_token_is_named() {
    refused_backup(
        Fault::s3_error(400, "ExpiredToken", "The provided token has expired."),
        &["ExpiredToken", "expired"],
    );
}

#[test]
fn access_denied_is_named() {
    refused_backup(Fault::s3_error(403, "AccessDenied", "Access Denied"), &["AccessDenied"]);
}

#[test]
fn a_bucket_in_another_region_names_that_region() {
    // What S3 answers when the client signs for the wrong region: the region in a header (the
    // only clue on a HEAD), the endpoint in the body.
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PermanentRedirect</Code>\
                <Message>The bucket you are attempting to access must be addressed using the specified endpoint. \
                Please send all future requests to this endpoint.</Message>\
                <Endpoint>drctl-backups.s3.us-west-2.amazonaws.com</Endpoint><Bucket>drctl-backups</Bucket>\
                <RequestId>FAULTPROXY</RequestId></Error>";
    let redirect =
        Fault::respond(301, &[("Content-Type", "application/xml"), ("x-amz-bucket-region", "us-west-2")], body);
    refused_backup(redirect, &["us-west-2"]);
}

#[test]
fn missing_credentials_are_named() {
    let moto = Moto::start(BUCKET);
    let ws = Workspace::new();
    let src = ws.mkdir("src");
    TreeBuilder::new(&src).file("a.txt", b"never stored\n");
    moto.drctl("init").args(["--repo", REPO]).run().ok();
    let before = repository_objects(&moto);

    let nowhere = ws.join("no-such-aws-file");
    let out = backup(moto.drctl("backup"), &src)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env("AWS_SHARED_CREDENTIALS_FILE", &nowhere)
        .env("AWS_CONFIG_FILE", &nowhere)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .run();
    out.code_is(8);
    expect_causes(&out, &["credentials"], &"(no proxy)");
    assert_eq!(repository_objects(&moto), before, "the repository is unchanged");
}

#[test]
fn a_refused_head_request_is_named_by_its_status() {
    // S3 sends no error document with a HEAD answer: the status is the only clue.
    let moto = Moto::start(BUCKET);
    let proxy = FaultProxy::start(&moto.endpoint);
    let refusal = proxy.add(Rule::new(Fault::s3_error(403, "AccessDenied", "Access Denied")).method("HEAD"));
    let out = moto.drctl_via("init", &proxy.endpoint()).args(["--repo", REPO]).run();
    expect_code(&out, 8, &proxy);
    expect_causes(&out, &["access denied (HTTP 403)"], &proxy);
    assert!(proxy.fired(refusal) >= 1, "the refusal was served\n{proxy}");
    assert!(moto.objects(BUCKET).is_empty(), "nothing was written");
}

#[test]
fn a_wal_file_archived_already_is_never_overwritten() {
    // wal-push writes conditionally (If-None-Match: *) without asking first, so whether another
    // server pushed the name long ago or a moment ago, S3 refuses the second write and drctl
    // compares contents.
    let moto = Moto::start(BUCKET);
    let proxy = FaultProxy::start(&moto.endpoint);
    let ws = Workspace::new();
    moto.drctl("init").args(["--repo", REPO]).run().ok();
    let segment = ws.mkdir("pg_wal").join("000000010000000000000001");
    let first = vec![1u8; 1 << 20];
    std::fs::write(&segment, &first).unwrap();
    moto.drctl("wal-push").args(["--repo", REPO]).arg(&segment).run().ok();

    std::fs::write(&segment, vec![2u8; 1 << 20]).unwrap();
    let out = moto.drctl_via("wal-push", &proxy.endpoint()).args(["--repo", REPO]).arg(&segment).run();
    expect_code(&out, 11, &proxy);
    assert!(!proxy.log().iter().any(|r| r.method == "HEAD"), "no check before the write\n{proxy}");
    std::fs::write(&segment, &first).unwrap();
    let out = moto.drctl_via("wal-push", &proxy.endpoint()).args(["--repo", REPO]).arg(&segment).run();
    expect_code(&out, 0, &proxy);
    let fetched = ws.join("fetched");
    moto.drctl("wal-fetch").args(["--repo", REPO, "000000010000000000000001"]).arg(&fetched).run().ok();
    assert_eq!(std::fs::read(&fetched).unwrap(), first, "the archived file is the first one");
}
