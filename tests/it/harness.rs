//! Test harness for the drctl integration tests: running the binary, temp workspaces, a fast
//! deterministic data generator, tree building / scanning / comparison, and peak-RSS measurement
//! through `libc::wait4`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// Passphrase used by every test repository unless a test says otherwise.
pub const PASSWORD: &str = "correct horse battery staple";

/// Default time limit for one drctl invocation. Generous: tests run in parallel on 2 cores.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

pub fn drctl_bin() -> &'static str {
    env!("CARGO_BIN_EXE_drctl")
}

// ---------------------------------------------------------------------------------------------
// Running drctl
// ---------------------------------------------------------------------------------------------

/// Builder for one drctl invocation. By default: DRCTL_PASSWORD is set to [`PASSWORD`],
/// DRCTL_REPO / DRCTL_PASSWORD_FILE are removed from the environment, stdin is /dev/null, and the
/// child runs in its own session (setsid), so it has no controlling terminal and cannot prompt.
pub struct Drctl {
    cmd: Command,
    args: Vec<OsString>,
    envs: Vec<String>,
    stdin_data: Option<Vec<u8>>,
    stdin_piped: bool,
    stream_stdout: bool,
    timeout: Duration,
}

impl Drctl {
    pub fn new() -> Drctl {
        let mut cmd = Command::new(drctl_bin());
        cmd.env_remove("DRCTL_REPO")
            .env_remove("DRCTL_PASSWORD_FILE")
            .env_remove("DRCTL_KEY_FILE")
            .env("DRCTL_PASSWORD", PASSWORD)
            .env("NO_COLOR", "1");
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls. setsid detaches the child from our terminal (no
        // password prompt can block); PDEATHSIG kills it if the test process dies (e.g. a test
        // runner timeout), so no drctl outlives the suite. It runs after std's setuid/setgid.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != parent {
                    libc::_exit(111);
                }
                Ok(())
            });
        }
        Drctl {
            cmd,
            args: Vec::new(),
            envs: vec![format!("DRCTL_PASSWORD={PASSWORD:?}")],
            stdin_data: None,
            stdin_piped: false,
            stream_stdout: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// `drctl <sub> --repo <repo>`
    pub fn sub(sub: &str, repo: &Path) -> Drctl {
        Drctl::new().arg(sub).arg("--repo").arg(repo)
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Drctl {
        self.cmd.arg(a.as_ref());
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Drctl
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Drctl {
        self.envs.push(format!("{k}={:?}", v.as_ref()));
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(mut self, k: &str) -> Drctl {
        self.envs.push(format!("-{k}"));
        self.cmd.env_remove(k);
        self
    }

    pub fn password(self, p: &str) -> Drctl {
        self.env("DRCTL_PASSWORD", p)
    }

    /// No passphrase source at all (no DRCTL_PASSWORD, no DRCTL_PASSWORD_FILE).
    pub fn no_password(self) -> Drctl {
        self.env_remove("DRCTL_PASSWORD").env_remove("DRCTL_PASSWORD_FILE")
    }

    pub fn stdin_bytes(mut self, data: Vec<u8>) -> Drctl {
        self.stdin_data = Some(data);
        self
    }

    /// Leave the child's stdin as a pipe for the caller (take it from `Running::child.stdin`).
    pub fn stdin_piped(mut self) -> Drctl {
        self.stdin_piped = true;
        self
    }

    /// Leave the child's stdout as a pipe for the caller (take it from `Running::child.stdout`).
    pub fn stream_stdout(mut self) -> Drctl {
        self.stream_stdout = true;
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Drctl {
        self.envs.push(format!("(cwd={})", dir.display()));
        self.cmd.current_dir(dir);
        self
    }

    pub fn timeout(mut self, t: Duration) -> Drctl {
        self.timeout = t;
        self
    }

    /// Run as another user (uid/gid; supplementary groups are dropped by std). HOME is set to
    /// `home` so the child does not try to use /root.
    pub fn user(mut self, uid: u32, gid: u32, home: &Path) -> Drctl {
        self.cmd.uid(uid).gid(gid);
        self.envs.push(format!("(uid={uid} gid={gid})"));
        self.env("HOME", home)
    }

    pub fn cmdline(&self) -> String {
        let mut s = String::from("drctl");
        for a in &self.args {
            s.push(' ');
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains(' ') {
                s.push_str(&format!("{a:?}"));
            } else {
                s.push_str(&a);
            }
        }
        s.push_str(&format!("   [env: {}]", self.envs.join(" ")));
        s
    }

    pub fn spawn(mut self) -> Running {
        let cmdline = self.cmdline();
        let want_stdin = self.stdin_piped || self.stdin_data.is_some();
        self.cmd
            .stdin(if want_stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child =
            self.cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {cmdline}: {e} (binary {})", drctl_bin()));
        let stdin_thread = self.stdin_data.take().map(|data| {
            let mut stdin = child.stdin.take().unwrap();
            thread::spawn(move || {
                // A broken pipe here just means drctl did not read everything; its exit status
                // tells the story.
                let _ = stdin.write_all(&data);
            })
        });
        let out_thread = if self.stream_stdout {
            None
        } else {
            let mut so = child.stdout.take().unwrap();
            Some(thread::spawn(move || {
                let mut v = Vec::new();
                let _ = so.read_to_end(&mut v);
                v
            }))
        };
        let mut se = child.stderr.take().unwrap();
        let err_thread = Some(thread::spawn(move || {
            let mut v = Vec::new();
            let _ = se.read_to_end(&mut v);
            v
        }));
        Running { child, cmdline, timeout: self.timeout, start, stdin_thread, out_thread, err_thread, reaped: None }
    }

    pub fn run(self) -> Output {
        self.spawn().finish()
    }
}

/// Exit information collected with `wait4`.
#[derive(Clone, Copy, Debug)]
pub struct Reaped {
    pub status: ExitStatus,
    /// Peak resident set size of the child in KiB (Linux `ru_maxrss`).
    pub max_rss_kib: u64,
    pub timed_out: bool,
}

/// Non-blocking `wait4` on `pid`: Some when the child has exited (and is now reaped).
pub fn try_wait4(pid: libc::pid_t) -> Option<(ExitStatus, u64)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: plain FFI call with valid out-pointers.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            return Some((ExitStatus::from_raw(status), ru.ru_maxrss as u64));
        }
        if r == 0 {
            return None;
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        panic!("wait4({pid}) failed: {e}");
    }
}

/// (VmRSS, VmHWM) of this test process in KiB, from /proc/self/status.
pub fn self_rss_kib() -> (u64, u64) {
    let s = fs::read_to_string("/proc/self/status").unwrap_or_default();
    (status_field_kib(&s, "VmRSS:").unwrap_or(0), status_field_kib(&s, "VmHWM:").unwrap_or(0))
}

/// Peak RSS (VmHWM) of a live process in KiB, from /proc/<pid>/status (None once it exited).
pub fn vm_hwm_kib(pid: libc::pid_t) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field_kib(&s, "VmHWM:")
}

fn status_field_kib(s: &str, field: &str) -> Option<u64> {
    s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok())
}

/// Wait for a child with `libc::wait4` (instead of `Child::wait`) and return its exit status and
/// peak RSS.
///
/// Caveat (Linux): ru_maxrss is an upper bound. At exec the kernel folds the RSS of the address
/// space being replaced into the process's maxrss, and a child forked from this test process
/// starts with a copy of its anonymous pages. So a child's ru_maxrss is
/// max(its own peak, roughly this process's RSS when it was spawned). Keep the test process lean
/// (stream data, do not hold it) so the bound stays tight; `self_rss_kib` shows how big it is. Kills the child with SIGKILL if it runs longer than `timeout`.
/// The child must not be waited for by anything else (the `Child` must not be waited on after).
pub fn wait4_with_rusage(child: &Child, timeout: Duration) -> Reaped {
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    let mut nap = Duration::from_millis(1);
    loop {
        if let Some((status, rss)) = try_wait4(pid) {
            return Reaped { status, max_rss_kib: rss, timed_out: false };
        }
        if start.elapsed() > timeout {
            // SAFETY: the child is not reaped yet, so the pid still belongs to it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            loop {
                let mut status: libc::c_int = 0;
                let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
                let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
                if r == pid {
                    return Reaped {
                        status: ExitStatus::from_raw(status),
                        max_rss_kib: ru.ru_maxrss as u64,
                        timed_out: true,
                    };
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    panic!("wait4({pid}) failed: {e}");
                }
            }
        }
        thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}

/// Spawn a plain command and return (status, peak RSS KiB) measured with wait4.
#[allow(clippy::zombie_processes)] // reaped by wait4_with_rusage, not Child::wait
pub fn run_with_peak_rss(cmd: &mut Command, timeout: Duration) -> Reaped {
    let child = cmd.spawn().expect("spawn");
    wait4_with_rusage(&child, timeout)
}

/// Samples /proc/<pid>/status VmHWM every 10 ms: the peak RSS of the child's own address space
/// (a lower bound, unlike wait4's ru_maxrss which is an upper bound). Diagnostic only.
pub struct HwmSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    t: Option<JoinHandle<u64>>,
}

impl HwmSampler {
    pub fn start(pid: libc::pid_t) -> HwmSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let t = thread::spawn(move || {
            let mut max = 0;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(v) = vm_hwm_kib(pid) {
                    max = max.max(v);
                }
                thread::sleep(Duration::from_millis(10));
            }
            max
        });
        HwmSampler { stop, t: Some(t) }
    }

    /// Highest VmHWM seen, in KiB.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.t.take().unwrap().join().unwrap()
    }
}

/// A running drctl process.
pub struct Running {
    pub child: Child,
    pub cmdline: String,
    timeout: Duration,
    start: Instant,
    stdin_thread: Option<JoinHandle<()>>,
    out_thread: Option<JoinHandle<Vec<u8>>>,
    err_thread: Option<JoinHandle<Vec<u8>>>,
    reaped: Option<Reaped>,
}

impl Running {
    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Has the process exited already? (Reaps it if so.)
    pub fn has_exited(&mut self) -> bool {
        if self.reaped.is_some() {
            return true;
        }
        if let Some((status, rss)) = try_wait4(self.pid()) {
            self.reaped = Some(Reaped { status, max_rss_kib: rss, timed_out: false });
            return true;
        }
        false
    }

    /// SIGKILL the process if it is still running. Returns true if it was still running.
    pub fn kill9(&mut self) -> bool {
        if self.has_exited() {
            return false;
        }
        // SAFETY: not reaped, so the pid is still ours.
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        true
    }

    pub fn finish(mut self) -> Output {
        let reaped = match self.reaped {
            Some(r) => r,
            None => wait4_with_rusage(&self.child, self.timeout),
        };
        self.reaped = Some(reaped);
        let elapsed = self.start.elapsed();
        if let Some(t) = self.stdin_thread.take() {
            let _ = t.join();
        }
        let stdout = self.out_thread.take().map(|t| t.join().unwrap()).unwrap_or_default();
        let stderr = self.err_thread.take().map(|t| t.join().unwrap()).unwrap_or_default();
        Output {
            cmdline: self.cmdline.clone(),
            status: reaped.status,
            code: reaped.status.code(),
            signal: reaped.status.signal(),
            timed_out: reaped.timed_out,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            stdout_raw: stdout,
            max_rss_kib: reaped.max_rss_kib,
            elapsed,
        }
    }
}

impl Drop for Running {
    /// A test that panics before `finish` must not leave drctl running.
    fn drop(&mut self) {
        if self.reaped.is_none() {
            self.kill9();
            let r = wait4_with_rusage(&self.child, Duration::from_secs(60));
            self.reaped = Some(r);
        }
    }
}

/// Result of one drctl run.
#[derive(Clone)]
pub struct Output {
    pub cmdline: String,
    pub status: ExitStatus,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    /// stdout as bytes (`stdout` is its lossy UTF-8 decoding).
    pub stdout_raw: Vec<u8>,
    pub max_rss_kib: u64,
    pub elapsed: Duration,
}

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut head = max / 2;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = s.len() - max / 2;
    while !s.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}\n[... {} bytes clipped ...]\n{}", &s[..head], tail - head, &s[tail..])
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "---- $ {}", self.cmdline)?;
        writeln!(
            f,
            "---- exit: {:?}{}{}  ({:.2?}, peak RSS {} KiB)",
            self.code,
            self.signal.map(|s| format!(" signal {s}")).unwrap_or_default(),
            if self.timed_out { " TIMED OUT (killed)" } else { "" },
            self.elapsed,
            self.max_rss_kib
        )?;
        writeln!(f, "---- stdout:\n{}", clip(&self.stdout, 12000))?;
        writeln!(f, "---- stderr:\n{}", clip(&self.stderr, 12000))?;
        write!(f, "----")
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Output {
    /// Assert exit code 0.
    #[track_caller]
    pub fn ok(&self) -> &Output {
        self.code_is(0)
    }

    /// Assert a specific exit code.
    #[track_caller]
    pub fn code_is(&self, code: i32) -> &Output {
        if self.code != Some(code) || self.timed_out {
            panic!("expected exit code {code}, got {:?}\n{self}", self.code);
        }
        self
    }

    /// stdout + stderr
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Assert that stdout+stderr contains `needle` (case-insensitive).
    #[track_caller]
    pub fn mentions(&self, needle: &str, what: &str) -> &Output {
        if !self.all().to_lowercase().contains(&needle.to_lowercase()) {
            panic!("output should mention {what} ({needle:?}) but does not\n{self}");
        }
        self
    }

    /// Assert that stderr contains `needle` (case-insensitive).
    #[track_caller]
    pub fn stderr_mentions(&self, needle: &str, what: &str) -> &Output {
        if !self.stderr.to_lowercase().contains(&needle.to_lowercase()) {
            panic!("stderr should mention {what} ({needle:?}) but does not\n{self}");
        }
        self
    }

    /// Parse stdout as one JSON value.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| panic!("stdout is not one JSON value: {e}\n{self}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Repository helpers
// ---------------------------------------------------------------------------------------------

/// Parsed `backup --json` result.
#[derive(Clone, Debug)]
pub struct BackupInfo {
    pub json: Value,
    pub id: String,
    pub short_id: String,
    pub files: u64,
    pub dirs: u64,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub new_chunks: u64,
}

#[track_caller]
pub fn json_u64(v: &Value, key: &str, ctx: &dyn fmt::Display) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("JSON field {key:?} missing or not an unsigned integer in {v}\n{ctx}"))
}

#[track_caller]
pub fn json_str(v: &Value, key: &str, ctx: &dyn fmt::Display) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| panic!("JSON field {key:?} missing or not a string in {v}\n{ctx}"))
}

impl BackupInfo {
    #[track_caller]
    pub fn parse(out: &Output) -> BackupInfo {
        let json = out.json();
        let id = json_str(&json, "snapshot_id", out);
        let short_id = json_str(&json, "short_id", out);
        assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()), "snapshot_id is not 64 hex chars\n{out}");
        assert_eq!(short_id.len(), 8, "short_id is not 8 chars\n{out}");
        assert!(id.starts_with(&short_id), "short_id is not a prefix of snapshot_id\n{out}");
        let time = json_str(&json, "time", out);
        assert!(chrono::DateTime::parse_from_rfc3339(&time).is_ok(), "time {time:?} is not RFC 3339\n{out}");
        assert!(json.get("duration_seconds").and_then(Value::as_f64).is_some(), "duration_seconds missing\n{out}");
        BackupInfo {
            files: json_u64(&json, "files", out),
            dirs: json_u64(&json, "dirs", out),
            logical_bytes: json_u64(&json, "logical_bytes", out),
            stored_bytes: json_u64(&json, "stored_bytes", out),
            new_chunks: json_u64(&json, "new_chunks", out),
            id,
            short_id,
            json,
        }
    }
}

/// A repository directory plus convenience wrappers around the commands.
#[derive(Clone, Debug)]
pub struct Repo {
    pub path: PathBuf,
}

impl Repo {
    pub fn new(path: impl Into<PathBuf>) -> Repo {
        Repo { path: path.into() }
    }

    pub fn cmd(&self, sub: &str) -> Drctl {
        Drctl::sub(sub, &self.path)
    }

    /// `init`, asserting success.
    #[track_caller]
    pub fn init(&self) -> Output {
        let out = self.cmd("init").run();
        out.ok();
        out
    }

    /// `backup --path P... --json`, asserting success.
    #[track_caller]
    pub fn backup(&self, paths: &[&Path]) -> (BackupInfo, Output) {
        let out = self.backup_cmd(paths).run();
        out.ok();
        (BackupInfo::parse(&out), out)
    }

    pub fn backup_cmd(&self, paths: &[&Path]) -> Drctl {
        let mut d = self.cmd("backup");
        for p in paths {
            d = d.arg("--path").arg(p);
        }
        d.arg("--json")
    }

    pub fn restore_cmd(&self, snap: &str, to: &Path) -> Drctl {
        self.cmd("restore").arg(snap).arg("--to").arg(to)
    }

    pub fn restore(&self, snap: &str, to: &Path) -> Output {
        self.restore_cmd(snap, to).run()
    }

    pub fn check(&self, read_data: bool) -> Output {
        let d = self.cmd("check");
        if read_data { d.arg("--read-data").run() } else { d.run() }
    }

    /// `snapshots --json`, asserting success; returns the array.
    #[track_caller]
    pub fn snapshots(&self) -> Vec<Value> {
        let out = self.cmd("snapshots").arg("--json").run();
        out.ok();
        match out.json() {
            Value::Array(a) => a,
            other => panic!("snapshots --json is not an array: {other}\n{out}"),
        }
    }

    /// Objects under `packs/` (id, path), `index/`, `snapshots/`.
    pub fn packs(&self) -> Vec<Obj> {
        let mut v = Vec::new();
        let dir = self.path.join("packs");
        for sub in read_dir_sorted(&dir) {
            if sub.is_dir() {
                for p in read_dir_sorted(&sub) {
                    v.push(Obj::new(p));
                }
            }
        }
        v
    }

    pub fn indexes(&self) -> Vec<Obj> {
        read_dir_sorted(&self.path.join("index")).into_iter().map(Obj::new).collect()
    }

    pub fn snapshot_files(&self) -> Vec<Obj> {
        read_dir_sorted(&self.path.join("snapshots")).into_iter().map(Obj::new).collect()
    }

    /// Total size of all files under the repository, ignoring `locks/`.
    pub fn total_bytes(&self) -> u64 {
        self.file_set().values().sum()
    }

    /// All files under the repository (relative path -> size), ignoring `locks/`.
    pub fn file_set(&self) -> BTreeMap<PathBuf, u64> {
        let mut m = BTreeMap::new();
        fn walk(base: &Path, dir: &Path, m: &mut BTreeMap<PathBuf, u64>) {
            for p in read_dir_sorted(dir) {
                let rel = p.strip_prefix(base).unwrap().to_path_buf();
                if rel.starts_with("locks") {
                    continue;
                }
                let md = fs::symlink_metadata(&p).unwrap();
                if md.is_dir() {
                    walk(base, &p, m);
                } else {
                    m.insert(rel, md.len());
                }
            }
        }
        walk(&self.path, &self.path, &mut m);
        m
    }
}

/// A stored object (file named by its id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Obj {
    pub id: String,
    pub path: PathBuf,
    pub size: u64,
}

impl Obj {
    fn new(path: PathBuf) -> Obj {
        let id = path.file_name().unwrap().to_string_lossy().into_owned();
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Obj { id, path, size }
    }

    pub fn prefix(&self) -> &str {
        &self.id[..8.min(self.id.len())]
    }
}

pub fn read_dir_sorted(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// `<target>/<abs src path without leading '/'>`
pub fn restored_path(target: &Path, src_abs: &Path) -> PathBuf {
    assert!(src_abs.is_absolute());
    target.join(src_abs.strip_prefix("/").unwrap())
}

/// Entries directly inside `dir` (names), for "nothing was left behind" checks.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    read_dir_sorted(dir).into_iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// Workspace
// ---------------------------------------------------------------------------------------------

/// A temporary directory for one test (removed on drop).
pub struct Workspace {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::Builder::new().prefix("drctl-it-").tempdir().expect("tempdir");
        let path = fs::canonicalize(dir.path()).unwrap();
        Workspace { dir, path }
    }

    /// A workspace directly under /tmp, chmod 0755 (reachable by unprivileged users).
    pub fn new_public() -> Workspace {
        let dir = tempfile::Builder::new().prefix("drctl-it-").tempdir_in("/tmp").expect("tempdir");
        let path = fs::canonicalize(dir.path()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        // Every ancestor must be traversable by others.
        let mut p = path.parent();
        while let Some(a) = p {
            let mode = fs::metadata(a).unwrap().permissions().mode();
            assert!(mode & 0o001 != 0, "{} is not traversable by other users (mode {mode:o})", a.display());
            p = a.parent();
        }
        Workspace { dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }

    /// `<ws>/repo` (not created).
    pub fn repo(&self) -> Repo {
        Repo::new(self.join("repo"))
    }

    /// Create and return an empty directory `<ws>/<name>`.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic data generator
// ---------------------------------------------------------------------------------------------

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64 finalizer.
#[inline(always)]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Small sequential PRNG (SplitMix64) for test decisions (sizes, delays, ...).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(hi > lo);
        lo + self.next_u64() % (hi - lo)
    }
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next_u64() % den < num
    }
}

/// A seed from DRCTL_TEST_SEED (decimal or 0x-hex) or from the clock.
pub fn seed_from_env_or_time() -> u64 {
    if let Ok(s) = std::env::var("DRCTL_TEST_SEED") {
        let s = s.trim();
        let v = if let Some(h) = s.strip_prefix("0x") { u64::from_str_radix(h, 16) } else { s.parse() };
        return v.expect("DRCTL_TEST_SEED must be an integer");
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    mix64(t.as_nanos() as u64 ^ std::process::id() as u64)
}

const TEXT_LEN: usize = 256 * 1024;
const BLOCK: usize = 64;

/// A text-like corpus (words, punctuation, newlines) generated once. Blocks copied from it at
/// random offsets compress well (like logs / source code), unlike the random blocks.
fn text_corpus() -> &'static [u8] {
    static TEXT: OnceLock<Vec<u8>> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut rng = Rng::new(0x7E57_C0DE);
        let letters = b"etaoinshrdlcumwfgypbvkjxqz";
        let words: Vec<Vec<u8>> = (0..600)
            .map(|_| {
                let n = rng.range(2, 11) as usize;
                (0..n).map(|_| letters[(rng.range(0, 26) * rng.range(1, 27) / 26) as usize % 26]).collect()
            })
            .collect();
        let mut t = Vec::with_capacity(TEXT_LEN + BLOCK);
        let mut col = 0;
        while t.len() < TEXT_LEN + BLOCK {
            // Zipf-ish word choice: a few words are much more frequent than the others.
            let u = rng.range(0, 1 << 20) as f64 / (1u64 << 20) as f64;
            let w = &words[(u * u * u * words.len() as f64) as usize];
            t.extend_from_slice(w);
            col += w.len() + 1;
            match rng.range(0, 20) {
                0 => t.push(b','),
                1 => t.extend_from_slice(b"."),
                2 => t.extend_from_slice(b" = 42;"),
                _ => {}
            }
            if col > 72 {
                t.push(b'\n');
                col = 0;
            } else {
                t.push(b' ');
            }
        }
        t.truncate(TEXT_LEN + BLOCK);
        t
    })
}

/// What kind of bytes a [`DataGen`] produces.
#[derive(Clone, Copy, Debug)]
pub enum Mix {
    /// Incompressible pseudo-random bytes.
    Random,
    /// Compressible text-like bytes.
    Text,
    /// Alternating regions of `region` bytes: text, random, text, random, ...
    Alternating { region: u64 },
}

/// Fast deterministic byte generator. The content is a pure function of (seed, mix, position), so
/// it does not depend on how reads are split, and any range can be regenerated.
#[derive(Clone, Debug)]
pub struct DataGen {
    seed: u64,
    mix: Mix,
    pos: u64,
}

impl DataGen {
    pub fn new(seed: u64, mix: Mix) -> DataGen {
        DataGen { seed: mix64(seed ^ 0xD47A_6E4E), mix, pos: 0 }
    }
    pub fn random(seed: u64) -> DataGen {
        DataGen::new(seed, Mix::Random)
    }
    pub fn text(seed: u64) -> DataGen {
        DataGen::new(seed, Mix::Text)
    }
    pub fn mixed(seed: u64, region: u64) -> DataGen {
        assert!(region >= BLOCK as u64 && region.is_multiple_of(BLOCK as u64));
        DataGen::new(seed, Mix::Alternating { region })
    }

    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Fill `buf` with the next bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        self.fill_at(self.pos, buf);
        self.pos += buf.len() as u64;
    }

    /// The next `n` bytes as a Vec.
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }

    /// Write the next `n` bytes to `w` (1 MiB at a time).
    pub fn write_to(&mut self, w: &mut dyn Write, mut n: u64) -> io::Result<()> {
        let mut buf = vec![0u8; MIB as usize];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.fill(&mut buf[..k]);
            w.write_all(&buf[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Fill `buf` with the bytes at absolute position `pos`.
    pub fn fill_at(&self, mut pos: u64, mut buf: &mut [u8]) {
        let text = text_corpus();
        while !buf.is_empty() {
            let b = pos / BLOCK as u64;
            let off = (pos % BLOCK as u64) as usize;
            let n = (BLOCK - off).min(buf.len());
            let (head, rest) = buf.split_at_mut(n);
            if n == BLOCK {
                self.block(text, b, head);
            } else {
                let mut tmp = [0u8; BLOCK];
                self.block(text, b, &mut tmp);
                head.copy_from_slice(&tmp[off..off + n]);
            }
            buf = rest;
            pos += n as u64;
        }
    }

    #[inline(always)]
    fn block(&self, text: &[u8], b: u64, out: &mut [u8]) {
        let random = match self.mix {
            Mix::Random => true,
            Mix::Text => false,
            Mix::Alternating { region } => (b * BLOCK as u64 / region) % 2 == 1,
        };
        if random {
            let base = self.seed.wrapping_add(b.wrapping_mul(8).wrapping_mul(GOLDEN));
            for (j, c) in out.chunks_exact_mut(8).enumerate() {
                let v = mix64(base.wrapping_add((j as u64).wrapping_mul(GOLDEN)));
                c.copy_from_slice(&v.to_le_bytes());
            }
        } else {
            let off = (mix64(self.seed ^ b.wrapping_mul(GOLDEN) ^ 0x5EED) % TEXT_LEN as u64) as usize;
            out.copy_from_slice(&text[off..off + BLOCK]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tree building
// ---------------------------------------------------------------------------------------------

/// Builds a source tree under `root`. Paths are relative to the root.
pub struct TreeBuilder {
    pub root: PathBuf,
}

impl TreeBuilder {
    pub fn new(root: impl Into<PathBuf>) -> TreeBuilder {
        let root = root.into();
        fs::create_dir_all(&root).unwrap();
        TreeBuilder { root }
    }

    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    pub fn dir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn file(&self, rel: impl AsRef<Path>, data: &[u8]) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// A file of `len` generated bytes (streamed, not held in memory).
    pub fn file_gen(&self, rel: impl AsRef<Path>, g: &mut DataGen, len: u64) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        let mut f = io::BufWriter::with_capacity(MIB as usize, fs::File::create(&p).unwrap());
        g.write_to(&mut f, len).unwrap();
        f.flush().unwrap();
        p
    }

    pub fn symlink(&self, rel: impl AsRef<Path>, target: impl AsRef<Path>) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        std::os::unix::fs::symlink(target, &p).unwrap();
        p
    }

    pub fn chmod(&self, rel: impl AsRef<Path>, mode: u32) {
        let p = self.path(rel);
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        let got = fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(got, mode, "chmod {:o} on {} did not stick", mode, p.display());
    }

    /// lchown (does not follow symlinks).
    pub fn chown(&self, rel: impl AsRef<Path>, uid: u32, gid: u32) {
        std::os::unix::fs::lchown(self.path(rel), Some(uid), Some(gid)).unwrap();
    }

    /// Set the mtime (not following symlinks).
    pub fn set_mtime(&self, rel: impl AsRef<Path>, sec: i64, nsec: i64) {
        set_mtime_nofollow(&self.path(rel), sec, nsec);
    }

    /// Give every entry (including the root) a deterministic mtime with nanoseconds. Entries
    /// whose mtime was already set explicitly are overwritten too, so call this first and
    /// `set_mtime` for special cases afterwards.
    pub fn stamp_mtimes(&self, seed: u64) {
        for (i, p) in walk_paths(&self.root).into_iter().enumerate() {
            let h = mix64(seed ^ (i as u64).wrapping_mul(GOLDEN));
            let sec = 1_300_000_000 + (h % 400_000_000) as i64;
            let nsec = ((h >> 33) % 1_000_000_000) as i64;
            set_mtime_nofollow(&p, sec, nsec);
        }
    }
}

pub fn set_mtime_nofollow(p: &Path, sec: i64, nsec: i64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let times = [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        libc::timespec { tv_sec: sec as libc::time_t, tv_nsec: nsec as libc::c_long },
    ];
    // SAFETY: valid C string and array of two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(r, 0, "utimensat {}: {}", p.display(), io::Error::last_os_error());
}

/// All paths under root (root included), children before parents (post-order).
pub fn walk_paths(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn rec(p: &Path, out: &mut Vec<PathBuf>) {
        let md = fs::symlink_metadata(p).unwrap();
        if md.is_dir() {
            for c in read_dir_sorted(p) {
                rec(&c, out);
            }
        }
        out.push(p.to_path_buf());
    }
    rec(root, &mut out);
    out
}

/// Recursively chown (lchown) a path to uid/gid.
pub fn chown_r(p: &Path, uid: u32, gid: u32) {
    for q in walk_paths(p) {
        std::os::unix::fs::lchown(&q, Some(uid), Some(gid)).unwrap();
    }
}

/// uid/gid of a local user (getpwnam).
pub fn user_ids(name: &str) -> (u32, u32) {
    let c = CString::new(name).unwrap();
    // SAFETY: getpwnam returns NULL or a pointer to a static passwd struct.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    assert!(!pw.is_null(), "user {name} does not exist");
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

pub fn is_root() -> bool {
    // SAFETY: trivial syscall.
    unsafe { libc::geteuid() == 0 }
}

// ---------------------------------------------------------------------------------------------
// Tree scanning and comparison
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File { size: u64, blake3: String },
    Dir,
    Symlink { target: OsString },
    Other { file_type: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// mode & 0o7777
    pub perm: u32,
    pub mtime: (i64, i64),
    pub uid: u32,
    pub gid: u32,
}

/// Everything under `root` (root itself has the key "."), not following symlinks.
pub type Scan = BTreeMap<PathBuf, Entry>;

pub fn hash_file(p: &Path) -> (u64, String) {
    let mut f = fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    (n, h.finalize().to_hex().to_string())
}

pub fn scan(root: &Path) -> Scan {
    let mut m = BTreeMap::new();
    for p in walk_paths(root) {
        let md = fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_file() {
            let (size, blake3) = hash_file(&p);
            Kind::File { size, blake3 }
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink { target: fs::read_link(&p).unwrap().into_os_string() }
        } else {
            Kind::Other { file_type: md.mode() & libc::S_IFMT }
        };
        let rel = p.strip_prefix(root).unwrap();
        let rel = if rel.as_os_str().is_empty() { PathBuf::from(".") } else { rel.to_path_buf() };
        m.insert(
            rel,
            Entry {
                kind,
                perm: md.mode() & 0o7777,
                mtime: (md.mtime(), md.mtime_nsec()),
                uid: md.uid(),
                gid: md.gid(),
            },
        );
    }
    m
}

#[derive(Clone, Copy, Debug)]
pub struct CompareOpts {
    /// Also compare uid/gid.
    pub owner: bool,
}

/// Differences between two scans (empty when equal).
pub fn diff_scans(expected: &Scan, actual: &Scan, opts: CompareOpts) -> Vec<String> {
    let mut d = Vec::new();
    for (p, e) in expected {
        let Some(a) = actual.get(p) else {
            d.push(format!("{}: missing in restored tree (expected {:?})", p.display(), e.kind));
            continue;
        };
        if e.kind != a.kind {
            d.push(format!("{}: kind/content differs: expected {:?}, got {:?}", p.display(), e.kind, a.kind));
        }
        if e.perm != a.perm {
            d.push(format!("{}: mode expected {:04o}, got {:04o}", p.display(), e.perm, a.perm));
        }
        if e.mtime != a.mtime {
            d.push(format!(
                "{}: mtime expected {}.{:09}, got {}.{:09}",
                p.display(),
                e.mtime.0,
                e.mtime.1,
                a.mtime.0,
                a.mtime.1
            ));
        }
        if opts.owner && (e.uid, e.gid) != (a.uid, a.gid) {
            d.push(format!("{}: owner expected {}:{}, got {}:{}", p.display(), e.uid, e.gid, a.uid, a.gid));
        }
    }
    for (p, a) in actual {
        if !expected.contains_key(p) {
            d.push(format!("{}: unexpected extra entry {:?}", p.display(), a.kind));
        }
    }
    d
}

/// Panic (with `ctx`, e.g. drctl output) if the tree at `actual_root` differs from `expected`.
#[track_caller]
pub fn assert_tree_matches(expected: &Scan, actual_root: &Path, opts: CompareOpts, ctx: &dyn fmt::Display) {
    if fs::symlink_metadata(actual_root).is_err() {
        panic!("restored tree {} does not exist\n{ctx}", actual_root.display());
    }
    let actual = scan(actual_root);
    let d = diff_scans(expected, &actual, opts);
    if !d.is_empty() {
        let n = d.len();
        let shown: Vec<&String> = d.iter().take(60).collect();
        panic!(
            "restored tree {} differs from the source in {n} place(s):\n  {}\n{}\n{ctx}",
            actual_root.display(),
            shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  "),
            if n > 60 { "  ..." } else { "" }
        );
    }
}

/// Compare two trees on disk.
#[track_caller]
pub fn assert_trees_equal(expected_root: &Path, actual_root: &Path, opts: CompareOpts, ctx: &dyn fmt::Display) {
    let expected = scan(expected_root);
    assert_tree_matches(&expected, actual_root, opts, ctx);
}

/// Number of regular files and total bytes in a scan.
pub fn file_stats(s: &Scan) -> (u64, u64) {
    let mut n = 0;
    let mut bytes = 0;
    for e in s.values() {
        if let Kind::File { size, .. } = e.kind {
            n += 1;
            bytes += size;
        }
    }
    (n, bytes)
}

// ---------------------------------------------------------------------------------------------
// Misc
// ---------------------------------------------------------------------------------------------

/// Flip (xor 0xff) the byte at `offset` in a file.
pub fn flip_byte(p: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().read(true).write(true).open(p).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0xff;
    f.write_all_at(&b, offset).unwrap();
    f.sync_all().unwrap();
}

/// Unmounts a mount point when dropped.
pub struct MountGuard {
    pub dir: PathBuf,
}

impl MountGuard {
    /// `mount -t tmpfs -o size=<size> tmpfs <dir>` (requires root).
    pub fn tmpfs(dir: &Path, size: &str) -> MountGuard {
        fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs on {} failed: {st}", dir.display());
        MountGuard { dir: dir.to_path_buf() }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let st = Command::new("umount").arg(&self.dir).status();
        if !matches!(st, Ok(s) if s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

pub fn fmt_bytes(n: u64) -> String {
    if n >= GIB {
        format!("{:.2} GiB", n as f64 / GIB as f64)
    } else if n >= MIB {
        format!("{:.2} MiB", n as f64 / MIB as f64)
    } else if n >= KIB {
        format!("{:.1} KiB", n as f64 / KIB as f64)
    } else {
        format!("{n} B")
    }
}

pub fn os(s: &[u8]) -> &OsStr {
    OsStr::from_bytes(s)
}
