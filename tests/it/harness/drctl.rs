//! Running the drctl binary: the [`Drctl`] builder, a [`Running`] process and its [`Output`], and
//! peak-RSS measurement through `libc::wait4`.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Passphrase used by every test repository unless a test says otherwise.
pub const PASSWORD: &str = "correct horse battery staple";

/// Default time limit for one drctl invocation. Generous: tests run in parallel on 2 cores.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

pub fn drctl_bin() -> &'static str {
    env!("CARGO_BIN_EXE_drctl")
}

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
            // Passphrase slots made by the suite cost argon2 its least (debug builds only): the
            // same code opens them, without a quarter second and 64 MiB per command.
            .env("DRCTL_TEST_CHEAP_KDF", "1")
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

    /// Freeze the process (SIGSTOP) where it stands, holding what it holds (its locks stay fresh
    /// for far longer than a test), so another command meets it mid-run whatever the timing.
    pub fn pause(&mut self) {
        assert!(!self.has_exited(), "{} exited before it could be paused", self.cmdline);
        // SAFETY: not reaped, so the pid is still ours.
        unsafe { libc::kill(self.pid(), libc::SIGSTOP) };
    }

    /// Let a paused process go on (SIGCONT).
    pub fn resume(&mut self) {
        // SAFETY: a paused process cannot have exited, so the pid is still ours.
        unsafe { libc::kill(self.pid(), libc::SIGCONT) };
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
