//! moto's server on loopback: the real S3, KMS, RDS, CloudWatch and Route 53 HTTP APIs that drctl
//! reaches through the AWS SDK with its endpoint settings (installed by scripts/test.sh). One
//! server per test, killed on drop; what a test needs in it is made with boto3, as an operator
//! would with the AWS CLI.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Drctl;
use super::pg::free_port;

pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    /// A server with one bucket in us-east-1.
    pub fn start(bucket: &str) -> Moto {
        let moto = Moto::empty();
        moto.bucket(bucket, "us-east-1", false);
        moto
    }

    /// A server with nothing in it.
    pub fn empty() -> Moto {
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
        Moto { child, endpoint: format!("http://127.0.0.1:{port}") }
    }

    /// Runs a boto3 snippet against this server; `client(service, region)` is in scope and
    /// `args` is `sys.argv[1:]`. Returns what it prints, trimmed.
    pub fn python(&self, code: &str, args: &[&str]) -> String {
        let prelude = "import boto3, sys, datetime\n\
            def client(service, region='us-east-1'):\n    \
                return boto3.client(service, endpoint_url=ENDPOINT, region_name=region, \
                aws_access_key_id='test', aws_secret_access_key='test')\n\
            args = sys.argv[1:]\n";
        let script = format!("ENDPOINT = {:?}\n{prelude}{code}", self.endpoint);
        let out = Command::new("python3").arg("-c").arg(script).args(args).output().unwrap();
        assert!(out.status.success(), "boto3: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Creates a bucket in `region`, with Object Lock enabled if asked (which also turns on
    /// versioning, as on AWS).
    pub fn bucket(&self, name: &str, region: &str, object_lock: bool) {
        self.python(
            "kw = {'Bucket': args[0], 'ObjectLockEnabledForBucket': args[2] == 'lock'}\n\
             if args[1] != 'us-east-1': kw['CreateBucketConfiguration'] = {'LocationConstraint': args[1]}\n\
             client('s3', args[1]).create_bucket(**kw)",
            &[name, region, if object_lock { "lock" } else { "" }],
        );
    }

    /// Creates a symmetric KMS key in `region`; returns its ARN.
    pub fn kms_key(&self, region: &str) -> String {
        self.python("print(client('kms', args[0]).create_key()['KeyMetadata']['Arn'])", &[region])
    }

    /// drctl with this server as its S3 and KMS endpoint, test credentials, region us-east-1.
    pub fn drctl(&self, sub: &str) -> Drctl {
        self.drctl_via(sub, &self.endpoint)
    }

    /// drctl reaching this server through `endpoint` (a fault proxy in front of it).
    pub fn drctl_via(&self, sub: &str, endpoint: &str) -> Drctl {
        Drctl::new()
            .arg(sub)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL_KMS", endpoint)
            .env("DRCTL_S3_ENDPOINT", endpoint)
            .env("DRCTL_S3_PATH_STYLE", "true")
    }

    /// drctl with this server as every AWS endpoint (RDS, CloudWatch, Route 53, …), test
    /// credentials, no instance metadata.
    pub fn aws(&self, sub: &str) -> Drctl {
        self.aws_via(sub, &self.endpoint)
    }

    /// [`Moto::aws`] reaching this server through `endpoint` (a proxy that counts the calls).
    pub fn aws_via(&self, sub: &str, endpoint: &str) -> Drctl {
        Drctl::new()
            .arg(sub)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL", endpoint)
    }

    /// Every key in a bucket with its size, sorted.
    pub fn objects(&self, bucket: &str) -> Vec<(String, u64)> {
        let out = self.python(
            "for page in client('s3').get_paginator('list_objects_v2').paginate(Bucket=args[0]):\n    \
                 for o in page.get('Contents', []): print(o['Key'], o['Size'])",
            &[bucket],
        );
        let mut objects: Vec<(String, u64)> =
            out.lines().filter_map(|l| l.rsplit_once(' ').map(|(k, s)| (k.to_string(), s.parse().unwrap()))).collect();
        objects.sort();
        objects
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
