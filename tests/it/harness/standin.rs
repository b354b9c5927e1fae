//! The stand-in for the protected API service (scripts/standin-api.py): `/health` while it
//! runs, `/health/ready` only while its PostgreSQL answers as a primary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::pg::free_port;

/// The stand-in for the protected API service, on a real socket; stopped when dropped.
pub struct Standin {
    child: Child,
    pub url: String,
}

impl Standin {
    pub fn start(dsn: &str) -> Standin {
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/standin-api.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(dsn)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the stand-in service");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        assert!(first.starts_with("listening"), "the stand-in did not start: {first:?}");
        Standin { child, url: format!("http://127.0.0.1:{port}") }
    }

    pub fn status(&self, path: &str) -> u16 {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        agent.get(format!("{}{path}", self.url)).call().map(|r| r.status().as_u16()).unwrap_or(0)
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
