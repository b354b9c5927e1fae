//! S3 repositories against a real S3 API: moto's server on loopback (started per test, installed
//! by scripts/test.sh), reached by drctl through the AWS SDK with `--s3-endpoint` and path-style
//! addressing.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::pg::free_port;

/// A moto server with one bucket; killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start(bucket: &str) -> Moto {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server is installed (scripts/test.sh installs it with pip)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let endpoint = format!("http://127.0.0.1:{port}");
        let made = Command::new("python3")
            .args(["-c", "import boto3, sys; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket=sys.argv[2])"])
            .args([&endpoint, bucket])
            .output()
            .unwrap();
        assert!(made.status.success(), "create bucket: {}", String::from_utf8_lossy(&made.stderr));
        Moto { child, endpoint }
    }

    /// drctl with this server as its S3 endpoint and test credentials.
    fn drctl(&self, sub: &str) -> Drctl {
        Drctl::new()
            .arg(sub)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("DRCTL_S3_ENDPOINT", &self.endpoint)
            .env("DRCTL_S3_PATH_STYLE", "true")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
