//! A fault-injecting HTTP/1.1 proxy on loopback, between drctl (the AWS SDK) and moto. It reads
//! each request whole from the client's kept-alive connection, forwards it on a fresh upstream
//! connection and relays the answer, unless a rule says that request fails: an error status, a
//! canned response, a stall, or a reset before or during the response. Every request is logged
//! with what happened to it, so a test can show that its faults really fired.
//!
//! S3 decides a conditional write (`If-None-Match: *`) atomically; moto checks, then writes, so
//! two at once can both win there. The proxy forwards conditional writes one at a time, as S3
//! orders them, so a test through it holds moto to S3's contract.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// The proxy; stops accepting when dropped (connections in progress finish on their own).
pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    /// `host:port` of the real server.
    upstream: String,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Logged>>,
    stop: AtomicBool,
    /// Held while a conditional write is forwarded.
    conditional: Mutex<()>,
}

/// What to do instead of (or to) a forwarded request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this response; the request is not forwarded.
    Respond { status: u16, headers: Vec<(String, String)>, body: String },
    /// Read the request, send nothing for this long, then close: a server that hangs.
    Stall(Duration),
    /// Reset the connection (RST) once the request is read; the request is not forwarded.
    Reset,
    /// Forward, relay the response head and the first half of its body, then reset. A response
    /// without a body loses the second half of its head instead: the server did the work, the
    /// client never hears of it.
    ResetMidResponse,
}

impl Fault {
    /// An S3 error document (`<Error><Code>…`), as S3 sends for InternalError, SlowDown, AccessDenied.
    pub fn s3_error(status: u16, code: &str, message: &str) -> Fault {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
             <RequestId>FAULTPROXY</RequestId></Error>"
        );
        Fault::respond(status, &[("Content-Type", "application/xml")], &body)
    }

    /// Any canned response.
    pub fn respond(status: u16, headers: &[(&str, &str)], body: &str) -> Fault {
        let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Fault::Respond { status, headers, body: body.to_string() }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Respond { status, body, .. } => match between(body, "<Code>", "</Code>") {
                Some(code) => write!(f, "{status} {code}"),
                None => write!(f, "{status} canned"),
            },
            Fault::Stall(d) => write!(f, "stall {d:?}"),
            Fault::Reset => write!(f, "reset"),
            Fault::ResetMidResponse => write!(f, "reset mid-response"),
        }
    }
}

/// Which requests get a fault, and when: every part given must match; the first `after`
/// matching requests pass, then the next `times` (all, if unset) get the fault.
#[derive(Clone, Debug)]
pub struct Rule {
    fault: Fault,
    method: Option<String>,
    path: Option<String>,
    query: Option<String>,
    header: Option<(String, String)>,
    after: u32,
    times: Option<u32>,
    /// Fire on this many of every 1000 matching requests, picked by a seeded hash.
    rate: Option<(u64, u64)>,
    seen: u32,
    fired: u32,
}

impl Rule {
    pub fn new(fault: Fault) -> Rule {
        Rule {
            fault,
            method: None,
            path: None,
            query: None,
            header: None,
            after: 0,
            times: None,
            rate: None,
            seen: 0,
            fired: 0,
        }
    }
    pub fn method(mut self, method: &str) -> Rule {
        self.method = Some(method.to_string());
        self
    }
    /// A substring of the path (`/bucket/key`).
    pub fn path(mut self, part: &str) -> Rule {
        self.path = Some(part.to_string());
        self
    }
    /// A substring of the query string (`partNumber=`, `uploads`).
    pub fn query(mut self, part: &str) -> Rule {
        self.query = Some(part.to_string());
        self
    }
    /// A header (name case-insensitive) whose value contains `part`, e.g. KMS's `X-Amz-Target`.
    pub fn header(mut self, name: &str, part: &str) -> Rule {
        self.header = Some((name.to_string(), part.to_string()));
        self
    }
    pub fn after(mut self, n: u32) -> Rule {
        self.after = n;
        self
    }
    pub fn times(mut self, n: u32) -> Rule {
        self.times = Some(n);
        self
    }
    /// Fires on about `per_mille` of every 1000 matching requests instead of all, which ones
    /// set by `seed`.
    pub fn rate(mut self, per_mille: u64, seed: u64) -> Rule {
        self.rate = Some((per_mille, seed));
        self
    }

    fn matches(&self, request: &Request) -> bool {
        self.method.as_ref().is_none_or(|m| *m == request.method)
            && self.path.as_ref().is_none_or(|p| request.path.contains(p.as_str()))
            && self.query.as_ref().is_none_or(|q| request.query.contains(q.as_str()))
            && self
                .header
                .as_ref()
                .is_none_or(|(name, part)| request.head.get(name).is_some_and(|v| v.contains(part.as_str())))
    }
}

/// Names a rule added to a proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleId(usize);

/// One request the proxy saw and what became of it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The API action of a query-protocol call (RDS: `Action=…` in its form body) or of a JSON
    /// one (its `X-Amz-Target`); empty for REST calls, which the method and path name.
    pub action: String,
    /// The rule that fired on it, if any.
    pub rule: Option<RuleId>,
    /// `200` (forwarded, upstream status) or the fault, e.g. `500 InternalError`, `reset`.
    pub outcome: String,
}

impl fmt::Display for Logged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if !self.action.is_empty() {
            write!(f, " [{}]", self.action)?;
        }
        if !self.query.is_empty() {
            write!(f, "?{}", self.query)?;
        }
        match self.rule {
            Some(RuleId(n)) => write!(f, " -> FAULT {} (rule {n})", self.outcome),
            None => write!(f, " -> {}", self.outcome),
        }
    }
}

impl FaultProxy {
    /// A proxy on 127.0.0.1 in front of `upstream_endpoint` (`http://127.0.0.1:PORT`).
    pub fn start(upstream_endpoint: &str) -> FaultProxy {
        let upstream = upstream_endpoint.trim_start_matches("http://").trim_end_matches('/').to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            conditional: Mutex::new(()),
        });
        let accepting = shared.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(client) = client {
                    let shared = accepting.clone();
                    // Errors only mean the client went away.
                    thread::spawn(move || shared.serve(client));
                }
            }
        });
        FaultProxy { addr, shared }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a rule (it applies from the next request on); earlier rules win when several match.
    pub fn add(&self, rule: Rule) -> RuleId {
        let mut rules = self.shared.rules.lock().unwrap();
        rules.push(rule);
        RuleId(rules.len() - 1)
    }

    /// How many times a rule's fault has been served.
    pub fn fired(&self, id: RuleId) -> u32 {
        self.shared.rules.lock().unwrap()[id.0].fired
    }

    /// How many requests of API action `action` (see [`Logged::action`]) reached the proxy.
    pub fn calls(&self, action: &str) -> usize {
        self.log().iter().filter(|l| l.action == action).count()
    }

    /// Waits until requests still being handled after the client went away (a body received
    /// whole just before the client exited) are logged: until the log and the rules' counts
    /// stay the same for 300 ms, 5 s at most.
    pub fn settle(&self) {
        let state = || {
            let fired: u32 = self.shared.rules.lock().unwrap().iter().map(|r| r.fired).sum();
            let log = self.shared.log.lock().unwrap();
            (log.len(), fired, log.iter().filter(|l| l.rule.is_some()).count() as u32)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut last = state();
        while std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(300));
            let now = state();
            if now == last && now.1 == now.2 {
                return;
            }
            last = now;
        }
    }

    /// Every request so far, in the order they were handled.
    pub fn log(&self) -> Vec<Logged> {
        self.shared.log.lock().unwrap().clone()
    }
}

impl fmt::Display for FaultProxy {
    /// The request log, one line per request, for assertion messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "---- fault proxy {} log:", self.endpoint())?;
        for entry in self.log() {
            writeln!(f, "{entry}")?;
        }
        write!(f, "----")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

impl Shared {
    /// One client connection: request after request until the client closes it or a fault ends it.
    fn serve(&self, client: TcpStream) -> io::Result<()> {
        let mut conn = BufReader::new(client);
        loop {
            let Some(request) = Request::read(&mut conn)? else { return Ok(()) };
            let client = conn.get_mut();
            match self.pick(&request) {
                None => {
                    let conditional = ["If-None-Match", "If-Match"].iter().any(|h| request.head.get(h).is_some());
                    let _one_at_a_time = conditional.then(|| self.conditional.lock().unwrap());
                    let (response, status) = self.forward(&request);
                    self.record(&request, None, status);
                    client.write_all(&response)?;
                }
                Some((rule, fault)) => {
                    self.record(&request, Some(rule), fault.to_string());
                    match fault {
                        Fault::Respond { status, headers, body } => {
                            let mut head = Head { start: format!("HTTP/1.1 {status} {}", reason(status)), headers };
                            head.set("Content-Length", &body.len().to_string());
                            let mut response = head.to_bytes();
                            if request.method != "HEAD" {
                                response.extend_from_slice(body.as_bytes());
                            }
                            client.write_all(&response)?;
                        }
                        Fault::Stall(duration) => {
                            thread::sleep(duration);
                            return Ok(());
                        }
                        Fault::Reset => {
                            reset(conn.into_inner());
                            return Ok(());
                        }
                        Fault::ResetMidResponse => {
                            let (response, _) = self.forward(&request);
                            let body_start = find(&response, b"\r\n\r\n").map_or(response.len(), |i| i + 4);
                            let cut = match response.len() - body_start {
                                0 => response.len() / 2,
                                body => body_start + body / 2,
                            };
                            client.write_all(&response[..cut])?;
                            drain(client);
                            reset(conn.into_inner());
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    fn record(&self, request: &Request, rule: Option<RuleId>, outcome: String) {
        let (method, path, query) = (request.method.clone(), request.path.clone(), request.query.clone());
        let form = String::from_utf8_lossy(&request.body);
        let action = form
            .split('&')
            .find_map(|pair| pair.strip_prefix("Action="))
            .or_else(|| request.head.get("X-Amz-Target").and_then(|t| t.rsplit('.').next()))
            .unwrap_or_default()
            .to_string();
        self.log.lock().unwrap().push(Logged { method, path, query, action, rule, outcome });
    }

    /// The fault for this request, if a rule has one for it now. Every matching rule counts the
    /// request, whichever fires.
    fn pick(&self, request: &Request) -> Option<(RuleId, Fault)> {
        let mut rules = self.rules.lock().unwrap();
        let mut picked = None;
        for (i, rule) in rules.iter_mut().enumerate() {
            if !rule.matches(request) {
                continue;
            }
            rule.seen += 1;
            let drawn = rule.rate.is_none_or(|(p, seed)| super::mix64(seed ^ u64::from(rule.seen)) % 1000 < p);
            if picked.is_none() && rule.seen > rule.after && rule.times.is_none_or(|t| rule.fired < t) && drawn {
                rule.fired += 1;
                picked = Some((RuleId(i), rule.fault.clone()));
            }
        }
        picked
    }

    /// Sends the request upstream on a new connection (`Connection: close`), reads the answer to
    /// EOF and reframes it for the kept-alive client connection: HTTP/1.1, no `Connection`
    /// header, a Content-Length when the upstream delimited the body by closing. Returns the
    /// response and its status (or the failure, answered as a 502).
    fn forward(&self, request: &Request) -> (Vec<u8>, String) {
        let mut head = request.head.clone();
        head.set("Connection", "close");
        let mut raw = Vec::new();
        let sent = TcpStream::connect(&self.upstream).and_then(|mut upstream| {
            upstream.write_all(&head.to_bytes())?;
            upstream.write_all(&request.body)?;
            upstream.read_to_end(&mut raw)
        });
        let parsed = sent.and_then(|_| {
            let mut reader = &raw[..];
            let head = Head::read(&mut reader)?.ok_or_else(|| io::Error::other("empty response"))?;
            Ok((head, reader.to_vec()))
        });
        let (mut head, mut body) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                let what = format!("upstream failed: {e}");
                let body = what.as_bytes();
                let head = format!("HTTP/1.1 502 Bad Gateway\r\nContent-Length: {}\r\n\r\n", body.len());
                return ([head.as_bytes(), body].concat(), what);
            }
        };
        let status = head.start.split(' ').nth(1).unwrap_or("?").to_string();
        head.start = head.start.replacen("HTTP/1.0", "HTTP/1.1", 1);
        head.remove("Connection");
        head.remove("Keep-Alive");
        let bodiless = request.method == "HEAD" || status.starts_with('1') || status == "204" || status == "304";
        if bodiless {
            body.clear();
        } else if head.get("Content-Length").is_none() && head.get("Transfer-Encoding").is_none() {
            head.set("Content-Length", &body.len().to_string());
        }
        ([head.to_bytes(), body].concat(), status)
    }
}

/// Waits (up to 5 s) until the client has received everything written: a reset throws away
/// what is still queued, and the half response should arrive whole before it.
fn drain(stream: &TcpStream) {
    for _ in 0..500 {
        let mut queued: libc::c_int = 0;
        // SAFETY: a valid socket and a pointer to an int. TIOCOUTQ is SIOCOUTQ on a socket: the
        // bytes not yet acknowledged by the peer.
        let r = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        if r != 0 || queued == 0 {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Closes the connection with an RST instead of a FIN (SO_LINGER with a zero timeout).
fn reset(stream: TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket and a pointer to a `linger` of the size passed.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// A request read whole from the client.
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    /// As received, minus `Expect` (answered by the proxy itself).
    pub head: Head,
    /// As received, chunk framing included.
    pub body: Vec<u8>,
}

impl Request {
    /// The next request on a connection, None when the client closed it. An `Expect:
    /// 100-continue` is answered here, so the upstream never sees it.
    pub fn read(conn: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
        let Some(mut head) = Head::read(conn)? else { return Ok(None) };
        if head.get("Expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            head.remove("Expect");
            conn.get_mut().write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let body = read_body(conn, &head)?;
        let mut parts = head.start.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Ok(Some(Request { method, path: path.to_string(), query: query.to_string(), head, body }))
    }
}

/// An HTTP/1.x message head: the start line and the headers in order.
#[derive(Clone, Debug)]
pub struct Head {
    pub start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    /// Reads up to the blank line; None at EOF before the first byte.
    pub fn read(r: &mut impl BufRead) -> io::Result<Option<Head>> {
        let mut start = String::new();
        if r.read_line(&mut start)? == 0 {
            return Ok(None);
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF inside a message head"));
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').ok_or_else(|| io::Error::other(format!("bad header {line:?}")))?;
            headers.push((name.to_string(), value.trim().to_string()));
        }
        Ok(Some(Head { start: start.trim_end().to_string(), headers }))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn remove(&mut self, name: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    fn set(&mut self, name: &str, value: &str) {
        self.remove(name);
        self.headers.push((name.to_string(), value.to_string()));
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start);
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// A message body framed by `Transfer-Encoding: chunked` (kept as sent: framing, extensions and
/// trailers) or `Content-Length` (none if neither).
pub fn read_body(r: &mut impl BufRead, head: &Head) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if head.get("Transfer-Encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            let mut line = String::new();
            r.read_line(&mut line)?;
            body.extend_from_slice(line.as_bytes());
            let size = line.split(';').next().unwrap_or_default().trim();
            let size =
                usize::from_str_radix(size, 16).map_err(|_| io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, up to the blank line.
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                        body.extend_from_slice(line.as_bytes());
                        return Ok(body);
                    }
                    body.extend_from_slice(line.as_bytes());
                }
            }
            let start = body.len();
            body.resize(start + size + 2, 0);
            r.read_exact(&mut body[start..])?;
        }
    }
    if let Some(len) = head.get("Content-Length") {
        let len: usize = len.parse().map_err(|_| io::Error::other(format!("bad Content-Length {len:?}")))?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    }
    Ok(body)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let rest = &s[s.find(open)? + open.len()..];
    Some(&rest[..rest.find(close)?])
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Fault",
    }
}
