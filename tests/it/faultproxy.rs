//! The fault proxy of `harness::faultproxy` against a stub upstream that answers like a plain
//! HTTP/1.0 server: the request line and body echoed back, delimited by closing the connection.

use std::io::{self, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

use crate::harness::faultproxy::{Fault, FaultProxy, Head, Request, Rule, read_body};

fn stub_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = BufReader::new(conn.unwrap());
            let request = Request::read(&mut conn).unwrap().unwrap();
            let echo =
                [format!("{} {}\n", request.method, request.head.get("Connection").unwrap()).as_bytes(), &request.body]
                    .concat();
            let _ =
                conn.get_mut().write_all(&[b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n", &echo[..]].concat());
        }
    });
    endpoint
}

fn connect(proxy: &FaultProxy) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(proxy.addr).unwrap())
}

/// Sends one request and reads one response: (status line, headers, body).
fn exchange(conn: &mut BufReader<TcpStream>, request: &str) -> io::Result<(String, Head, String)> {
    conn.get_mut().write_all(request.as_bytes())?;
    let mut head = Head::read(conn)?.ok_or_else(|| io::Error::other("closed"))?;
    if head.start.contains(" 100 ") {
        head = Head::read(conn)?.unwrap();
    }
    let body = String::from_utf8(read_body(conn, &head)?).unwrap();
    Ok((head.start.clone(), head, body))
}

#[test]
fn requests_are_forwarded_and_reframed_on_one_kept_alive_connection() {
    let proxy = FaultProxy::start(&stub_upstream());
    let mut conn = connect(&proxy);
    let (status, head, body) =
        exchange(&mut conn, "PUT /b/k?x-id=PutObject HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(head.get("Content-Length"), Some("15"), "the close-delimited body gets a length");
    assert_eq!(body, "PUT close\nhello", "upstream is asked to close; the body arrives whole");
    let chunked = "POST /b/k?uploads HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n\
                   3;ext=1\r\nabc\r\n0\r\nx-trailer: t\r\n\r\n";
    let (status, _, body) = exchange(&mut conn, chunked).unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK", "the same connection serves a second request");
    assert_eq!(body, "POST close\n3;ext=1\r\nabc\r\n0\r\nx-trailer: t\r\n\r\n", "chunk framing is passed on");
    let log: Vec<String> = proxy.log().iter().map(|l| l.to_string()).collect();
    assert_eq!(log, ["PUT /b/k?x-id=PutObject -> 200", "POST /b/k?uploads -> 200"]);
}

#[test]
fn rules_fire_after_their_quota_and_as_often_as_told() {
    let proxy = FaultProxy::start(&stub_upstream());
    let kms = proxy.add(
        Rule::new(Fault::respond(
            400,
            &[("Content-Type", "application/x-amz-json-1.1")],
            r#"{"__type":"DisabledException","message":"key is disabled"}"#,
        ))
        .method("POST")
        .header("x-amz-target", "TrentService.Decrypt")
        .after(1)
        .times(1),
    );
    let decrypt = "POST / HTTP/1.1\r\nX-Amz-Target: TrentService.Decrypt\r\nContent-Length: 2\r\n\r\n{}";
    let mut conn = connect(&proxy);
    assert_eq!(exchange(&mut conn, decrypt).unwrap().0, "HTTP/1.1 200 OK", "the first one passes");
    let (status, _, body) = exchange(&mut conn, decrypt).unwrap();
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 400 Bad Request", r#"{"__type":"DisabledException","message":"key is disabled"}"#)
    );
    assert_eq!(exchange(&mut conn, decrypt).unwrap().0, "HTTP/1.1 200 OK", "fired once only");
    assert_eq!(proxy.fired(kms), 1);

    let reset = proxy.add(Rule::new(Fault::Reset).path("/doomed"));
    let err = exchange(&mut conn, "GET /doomed HTTP/1.1\r\n\r\n").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    let mut conn = connect(&proxy);
    let err = exchange(&mut conn, "GET /doomed HTTP/1.1\r\n\r\n").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "unlimited rules keep firing: {err}");
    assert_eq!(proxy.fired(reset), 2);

    proxy.add(Rule::new(Fault::ResetMidResponse).path("/cut"));
    let mut conn = connect(&proxy);
    conn.get_mut().write_all(b"GET /cut HTTP/1.1\r\n\r\n").unwrap();
    let head = Head::read(&mut conn).unwrap().unwrap();
    assert_eq!(head.get("Content-Length"), Some("10"));
    let mut got = Vec::new();
    let err = conn.read_to_end(&mut got).unwrap_err();
    assert_eq!(
        (got.as_slice(), err.kind()),
        (&b"GET c"[..], io::ErrorKind::ConnectionReset),
        "half the body, then a reset"
    );
    let mut conn = connect(&proxy);
    let err = exchange(&mut conn, "HEAD /cut HTTP/1.1\r\n\r\n").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "no body: half the head, then a reset: {err}");
    assert!(proxy.to_string().contains("GET /cut -> FAULT reset mid-response (rule 2)"), "{proxy}");
}
