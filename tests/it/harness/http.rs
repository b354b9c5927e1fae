//! Plain HTTP/1.0 GETs against drctl's own listeners (`schedule --listen`), and waiting for a
//! condition they show.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// GET `path` from 127.0.0.1:`port` (retried for 10 s until it listens): (status code, body).
pub fn get(port: u16, path: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(e) => assert!(Instant::now() < deadline, "nothing listens on {port}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default())
}

/// Polls `done` every 250 ms until it holds; fails the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}
