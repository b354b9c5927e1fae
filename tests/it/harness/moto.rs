//! moto's server on loopback: the real S3, KMS, RDS, CloudWatch and Route 53 HTTP APIs that drctl
//! reaches through the AWS SDK with its endpoint settings (installed by scripts/test.sh). One
//! server per test, killed on drop; what a test needs in it is made with boto3, as an operator
//! would with the AWS CLI.

use std::ffi::OsStr;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Drctl;
use super::pg::free_port;

pub struct Moto {
    child: Child,
    pub endpoint: String,
    /// The certificate an HTTPS server presents (self-signed for 127.0.0.1), to trust it by.
    pub ca: Option<PathBuf>,
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
        Moto::spawn(&[], None)
    }

    /// A server with nothing in it that speaks HTTPS only, with a certificate for 127.0.0.1
    /// made for it in `dir` (by the `cryptography` package moto itself needs).
    pub fn https(dir: &Path) -> Moto {
        let (cert, key) = (dir.join("moto-cert.pem"), dir.join("moto-key.pem"));
        let script = "import datetime, ipaddress, sys\n\
            from cryptography import x509\n\
            from cryptography.hazmat.primitives import hashes, serialization\n\
            from cryptography.hazmat.primitives.asymmetric import ec\n\
            from cryptography.x509.oid import NameOID\n\
            key = ec.generate_private_key(ec.SECP256R1())\n\
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'drctl test S3')])\n\
            now = datetime.datetime.now(datetime.timezone.utc)\n\
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)\n\
                .public_key(key.public_key()).serial_number(x509.random_serial_number())\n\
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))\n\
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]), False)\n\
                .sign(key, hashes.SHA256()))\n\
            open(sys.argv[1], 'wb').write(cert.public_bytes(serialization.Encoding.PEM))\n\
            open(sys.argv[2], 'wb').write(key.private_bytes(serialization.Encoding.PEM, \
                serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))\n";
        let made = Command::new("python3").arg("-c").arg(script).arg(&cert).arg(&key).output().unwrap();
        assert!(made.status.success(), "certificate: {}", String::from_utf8_lossy(&made.stderr));
        let args = [OsStr::new("--ssl-cert"), cert.as_os_str(), OsStr::new("--ssl-key"), key.as_os_str()];
        Moto::spawn(&args, Some(cert.clone()))
    }

    fn spawn(args: &[&OsStr], ca: Option<PathBuf>) -> Moto {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-p", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server is installed (scripts/test.sh installs it with pip)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let scheme = if ca.is_some() { "https" } else { "http" };
        Moto { child, endpoint: format!("{scheme}://127.0.0.1:{port}"), ca }
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
        let mut python = Command::new("python3");
        if let Some(ca) = &self.ca {
            python.env("AWS_CA_BUNDLE", ca);
        }
        let out = python.arg("-c").arg(script).args(args).output().unwrap();
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
