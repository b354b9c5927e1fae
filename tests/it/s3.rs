//! S3 repositories against a real S3 API: moto's server on loopback (started per test, installed
//! by scripts/test.sh), reached by drctl through the AWS SDK with `--s3-endpoint` and path-style
//! addressing.

use crate::harness::moto::Moto;
use crate::harness::*;

#[test]
fn an_s3_repository_round_trips_multipart_packs_and_passes_check() {
    let moto = Moto::start("drctl-backups");
    let ws = Workspace::new();
    let src = ws.mkdir("src");
    let tree = TreeBuilder::new(&src);
    tree.file_gen("big.bin", &mut DataGen::random(7), 40 << 20); // packs of several 16 MiB parts
    tree.file("small.txt", b"hello from s3\n");
    let repo = "s3://drctl-backups/team/app";
    moto.drctl("init").args(["--repo", repo]).run().ok();
    let out = moto.drctl("backup").args(["--repo", repo, "--json", "--path"]).arg(&src).run();
    out.ok();
    let first = BackupInfo::parse(&out);
    // A second backup of the same data stores (almost) nothing.
    let out = moto.drctl("backup").args(["--repo", repo, "--json", "--path"]).arg(&src).run();
    out.ok();
    assert!(BackupInfo::parse(&out).stored_bytes < first.stored_bytes / 100, "deduplicated on S3 too");
    moto.drctl("check").args(["--repo", repo, "--read-data"]).run().ok().mentions("no damage found", "the verdict");
    let target = ws.join("restored");
    moto.drctl("restore").args(["--repo", repo, &first.short_id, "--to"]).arg(&target).run().ok();
    assert_trees_equal(&src, &target.join(src.strip_prefix("/").unwrap()), CompareOpts { owner: true }, &"s3");
}

/// Every AWS call goes through drctl's own HTTPS client (rustls on ring, src/store/https.rs):
/// S3 and KMS over TLS to a server whose certificate is trusted only through `SSL_CERT_FILE`, as
/// with a private CA in front of an S3-compatible store. Not trusted, nothing is created.
#[test]
fn s3_and_kms_over_https_trust_the_roots_in_ssl_cert_file_and_no_other() {
    let ws = Workspace::new();
    let moto = Moto::https(&ws.mkdir("tls"));
    let ca = moto.ca.clone().unwrap();
    moto.bucket("tls-backups", "us-east-1", false);
    let key = moto.kms_key("us-east-1");
    let src = ws.mkdir("src");
    TreeBuilder::new(&src).file_gen("data.bin", &mut DataGen::random(5), 20 << 20);
    let repo = "s3://tls-backups/app";

    moto.drctl("init")
        .no_password()
        .env_remove("SSL_CERT_FILE")
        .args(["--repo", repo, "--kms-key-id", &key])
        .run()
        .code_is(8)
        .stderr_mentions("TLS certificate is not trusted", "the cause")
        .stderr_mentions("SSL_CERT_FILE", "the fix");
    assert_eq!(moto.objects("tls-backups"), vec![], "nothing was created");

    let drctl = |sub: &str| moto.drctl(sub).no_password().env("SSL_CERT_FILE", &ca);
    drctl("init").args(["--repo", repo, "--kms-key-id", &key]).run().ok();
    drctl("backup").args(["--repo", repo, "--path"]).arg(&src).run().ok();
    drctl("check").args(["--repo", repo, "--read-data"]).run().ok().mentions("no damage found", "the verdict");
    let target = ws.join("restored");
    drctl("restore").args(["--repo", repo, "latest", "--to"]).arg(&target).run().ok();
    assert_trees_equal(&src, &restored_path(&target, &src), CompareOpts { owner: true }, &"https");
}

/// A certificate no root vouches for will not become trusted by trying again: drctl says so
/// after one connection, not after every retry's backoff.
#[test]
fn an_untrusted_certificate_is_not_retried() {
    let ws = Workspace::new();
    let moto = Moto::https(&ws.mkdir("tls"));
    moto.bucket("tls-once", "us-east-1", false);
    let port: u16 = moto.endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let (front, connections) = count_connections(port);
    // Three attempts allowed, so that retrying would show as three connections.
    moto.drctl_via("init", &format!("https://127.0.0.1:{front}"))
        .env("DRCTL_S3_MAX_ATTEMPTS", "3")
        .env_remove("SSL_CERT_FILE")
        .args(["--repo", "s3://tls-once/app"])
        .run()
        .code_is(8)
        .stderr_mentions("TLS certificate is not trusted", "the cause");
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1, "connections made");
}

/// Forwards TCP connections from a new loopback port to `upstream`, counting them. A TLS
/// handshake that fails never reaches the server as a request: only connections show attempts.
fn count_connections(upstream: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                })
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(server, client);
        }
    });
    (port, count)
}

#[test]
fn a_missing_bucket_is_named_with_the_fix() {
    let moto = Moto::start("some-bucket");
    moto.drctl("init")
        .args(["--repo", "s3://no-such-bucket/x"])
        .run()
        .code_is(8)
        .stderr_mentions("no-such-bucket does not exist", "the cause")
        .stderr_mentions("AWS_REGION", "the fix");
}

#[test]
fn object_lock_retains_every_object_and_a_delete_before_expiry_is_reported() {
    let moto = Moto::empty();
    moto.bucket("worm-backups", "us-east-1", true);
    let ws = Workspace::new();
    let src = ws.mkdir("src");
    TreeBuilder::new(&src).file_gen("data.bin", &mut DataGen::random(5), 2 << 20);
    let repo = "s3://worm-backups/app";
    let locked = |sub: &str| moto.drctl(sub).env("DRCTL_S3_OBJECT_LOCK", "governance:2");
    locked("init").args(["--repo", repo]).run().ok();
    // Locks come and go under retention: a backup (which takes and drops one) completes.
    locked("backup").args(["--repo", repo, "--path"]).arg(&src).run().ok();
    let retention = moto.python(
        "s3 = client('s3')\n\
         for o in s3.list_objects_v2(Bucket=args[0])['Contents']:\n    \
             h = s3.head_object(Bucket=args[0], Key=o['Key'])\n    \
             days = (h['ObjectLockRetainUntilDate'] - datetime.datetime.now(datetime.timezone.utc)).days\n    \
             print(o['Key'].split('/')[1], h['ObjectLockMode'], days)",
        &["worm-backups"],
    );
    for line in retention.lines() {
        assert!(line.ends_with("GOVERNANCE 1"), "every object retained for 2 days: {line}");
    }
    assert!(retention.contains("packs GOVERNANCE") && retention.contains("snapshots GOVERNANCE"), "{retention}");
    assert!(!retention.contains("locks"), "no lock is left behind: {retention}");

    // Removing a key slot deletes an object: refused by S3 until the retention ends.
    locked("key").env("DRCTL_NEW_PASSWORD", "second").args(["add", "--repo", repo]).run().ok();
    let slots = moto.drctl("key").args(["list", "--repo", repo, "--json"]).run().json();
    let first_slot = slots[0]["id"].as_str().unwrap().to_string();
    locked("key")
        .args(["remove", "--repo", repo, &first_slot[..8]])
        .run()
        .code_is(8)
        .stderr_mentions("Object Lock retention until", "the cause")
        .stderr_mentions("GOVERNANCE", "the lift");
    let after = moto.drctl("key").args(["list", "--repo", repo, "--json"]).run().json();
    assert_eq!(after.as_array().unwrap().len(), 2, "the slot is still there");
    moto.drctl("check").args(["--repo", repo, "--read-data"]).run().ok();
}

#[test]
fn storage_class_and_sse_kms_apply_to_new_objects_and_a_cold_class_is_refused() {
    let moto = Moto::start("tiered-backups");
    let sse_key = moto.kms_key("us-east-1");
    let ws = Workspace::new();
    let src = ws.mkdir("src");
    TreeBuilder::new(&src).file_gen("data.bin", &mut DataGen::random(6), 1 << 20);
    let repo = "s3://tiered-backups/app";
    let tiered = |sub: &str| {
        moto.drctl(sub).env("DRCTL_S3_STORAGE_CLASS", "standard_ia").env("DRCTL_S3_SSE_KMS_KEY_ID", &sse_key)
    };
    tiered("init").args(["--repo", repo]).run().ok();
    tiered("backup").args(["--repo", repo, "--path"]).arg(&src).run().ok();
    let seen = moto.python(
        "s3 = client('s3')\n\
         for o in s3.list_objects_v2(Bucket=args[0])['Contents']:\n    \
             h = s3.head_object(Bucket=args[0], Key=o['Key'])\n    \
             print(h.get('StorageClass'), h.get('ServerSideEncryption'), h.get('SSEKMSKeyId') == args[1])",
        &["tiered-backups", &sse_key],
    );
    assert!(!seen.is_empty());
    for line in seen.lines() {
        assert_eq!(line, "STANDARD_IA aws:kms True", "every object: {seen}");
    }
    moto.drctl("restore").args(["--repo", repo, "latest", "--to"]).arg(ws.join("r")).run().ok();
    moto.drctl("backup")
        .env("DRCTL_S3_STORAGE_CLASS", "DEEP_ARCHIVE")
        .args(["--repo", repo, "--path"])
        .arg(&src)
        .run()
        .code_is(2)
        .stderr_mentions("readable at once", "why");
}
