//! S3 repositories against a real S3 API: moto's server on loopback (started per test, installed
//! by scripts/test.sh), reached by drctl through the AWS SDK with `--s3-endpoint` and path-style
//! addressing.

use crate::harness::*;
use crate::moto::Moto;

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
