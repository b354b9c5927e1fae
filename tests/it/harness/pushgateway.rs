//! Debian's prometheus-pushgateway on a free loopback port (scripts/test.sh installs it), for the
//! metrics drctl pushes.

use std::process::Command;
use std::time::Duration;

use super::pg::free_port;
use super::{Workspace, on_path};

/// A Pushgateway, killed on drop.
pub struct Pushgateway {
    child: std::process::Child,
    pub url: String,
}

impl Pushgateway {
    pub fn start(ws: &Workspace) -> Pushgateway {
        let port = free_port();
        let program = on_path("prometheus-pushgateway").expect("prometheus-pushgateway is installed (scripts/test.sh)");
        let child = Command::new(program)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--persistence.file={}", ws.join("pushgateway.db").display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "the Pushgateway did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Pushgateway { child, url }
    }

    pub fn scrape(&self) -> String {
        let out = Command::new("python3")
            .args(["-c", "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"])
            .arg(format!("{}/metrics", self.url))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
