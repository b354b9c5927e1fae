//! `drctl schedule --policies DIR`: the scheduler for hosts without Kubernetes CronJobs.
//!
//! Each policy's job runs in a child process (`drctl backup --policy FILE --json`), so a job that
//! fails or runs out of memory never takes the scheduler down, and each job has the process-wide
//! settings (the database password) of its own policy. The rules:
//! - at start-up, every policy's job runs once: it takes the sources that are due, which makes up
//!   for the runs missed while the scheduler was down, once each however many were missed;
//! - then a policy's job starts at every fire time of any of its schedules (sources and RDS
//!   snapshot), and runs the sources that are due at that moment; with `--every`, also when that
//!   long has passed since its previous job started, so the copies (WAL included) and the metrics
//!   stay fresh between a daily base backup and the next;
//! - a fire time that comes while the policy's previous job still runs is skipped (logged and
//!   counted in `drctl_schedule_skipped_runs_total`), as a CronJob with `concurrencyPolicy:
//!   Forbid` does; the source stays due, so the next job takes it;
//! - a job still running after `--job-timeout` is stopped (SIGTERM, then SIGKILL), so one hung
//!   on a lock or an unreachable server cannot keep its policy from running for good;
//! - SIGTERM or SIGINT stops new jobs and waits for the running ones to finish; a second signal
//!   passes SIGTERM on to them.
//!
//! A policy with `drill.heartbeat` also gets a heartbeat row in its database at that interval
//! (a thread per policy; a failed beat is logged and the next one tried), which drills measure
//! their RPO with.
//!
//! `/metrics` serves every policy's latest job report as Prometheus metrics, `/healthz` says
//! whether the scheduling loop is alive.

use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::job::JobReport;
use crate::metrics::Metrics;
use crate::policy::{self, Policy};

/// How the scheduler starts its jobs and publishes their results.
#[derive(Debug, Clone)]
pub struct ScheduleOptions {
    pub policies_dir: PathBuf,
    /// Where `/metrics` and `/healthz` are served; none: no HTTP server.
    pub listen: Option<String>,
    /// The drctl binary the jobs run.
    pub program: PathBuf,
    /// Global flags every job gets (log format, verbosity).
    pub job_args: Vec<String>,
    /// The Pushgateway every job pushes to, handed over in the environment (a URL may hold
    /// credentials, which do not belong on a command line).
    pub pushgateway: Option<String>,
    /// A textfile the scheduler rewrites with every policy's metrics after each job.
    pub metrics_file: Option<PathBuf>,
    /// Also start a policy's job when this long has passed since its previous one started.
    pub every: Option<Duration>,
    /// How long a job may run before it is stopped.
    pub job_timeout: Duration,
}

/// Why the scheduler cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the policy directory {dir}: {source}")]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error("no policy files (*.yaml, *.yml) in {0}")]
    NoPolicies(PathBuf),
    #[error("{0}")]
    Invalid(policy::Invalid),
    #[error("cannot listen on {addr}: {detail}")]
    Listen { addr: String, detail: String },
    #[error("{} and {} have the same {what}", first.display(), second.display())]
    Clash { first: PathBuf, second: PathBuf, what: &'static str },
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
}

/// A loaded policy and the file it came from.
struct Entry {
    path: PathBuf,
    policy: Policy,
}

/// What the loop and the HTTP server share.
#[derive(Default)]
struct State {
    reports: Mutex<BTreeMap<String, JobReport>>,
    runs: Mutex<BTreeMap<(String, &'static str), u64>>,
    skipped: Mutex<BTreeMap<String, u64>>,
    /// Unix time of the loop's last turn, for `/healthz`.
    heartbeat: AtomicI64,
    /// Process ids of running jobs, by policy.
    running: Mutex<HashMap<String, u32>>,
}

impl State {
    fn metrics(&self) -> String {
        let metrics = Metrics::new();
        let now = Utc::now();
        for report in self.reports.lock().expect("poisoned").values() {
            metrics.record(report, now);
        }
        let runs: Vec<_> = self.runs.lock().expect("poisoned").iter().map(|((p, r), n)| (p.clone(), *r, *n)).collect();
        let skipped: Vec<_> = self.skipped.lock().expect("poisoned").iter().map(|(p, n)| (p.clone(), *n)).collect();
        metrics.record_schedule(&runs, &skipped);
        metrics.encode()
    }
}

/// The policies in `dir`, in file name order; every problem of every invalid file is an error.
fn load_policies(dir: &Path) -> Result<Vec<Entry>, Error> {
    let read = std::fs::read_dir(dir).map_err(|source| Error::Dir { dir: dir.to_path_buf(), source })?;
    let mut paths: Vec<PathBuf> = read
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        // Kubernetes mounts a ConfigMap's keys as symlinks next to dot-named folders.
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(Error::NoPolicies(dir.to_path_buf()));
    }
    let entries: Vec<Entry> = paths
        .into_iter()
        .map(|path| policy::load(&path).map(|policy| Entry { path, policy }).map_err(Error::Invalid))
        .collect::<Result<_, _>>()?;
    // One name, one primary repository per policy: jobs, metrics and retention are keyed by them.
    for (i, a) in entries.iter().enumerate() {
        for b in &entries[..i] {
            let same_name = a.policy.name == b.policy.name;
            if same_name || a.policy.repositories.primary.location == b.policy.repositories.primary.location {
                let what = if same_name { "name" } else { "primary repository" };
                return Err(Error::Clash { first: b.path.clone(), second: a.path.clone(), what });
            }
        }
    }
    Ok(entries)
}

/// The first fire time after `t` of any of the policy's schedules.
fn next_fire(policy: &Policy, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let sources = policy.sources.iter().map(|s| &s.schedule);
    sources.chain(policy.rds.iter().map(|r| &r.snapshot_schedule)).filter_map(|s| s.next_after(t)).min()
}

/// Runs until SIGTERM or SIGINT, then waits for the running jobs.
pub fn run(options: ScheduleOptions) -> Result<(), Error> {
    let entries = load_policies(&options.policies_dir)?;
    let state = Arc::new(State::default());
    let signals = Arc::new(AtomicUsize::new(0));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let signals = signals.clone();
        // SAFETY: the handler only increments an atomic counter, which is async-signal-safe.
        unsafe { signal_hook::low_level::register(signal, move || _ = signals.fetch_add(1, Ordering::SeqCst)) }
            .map_err(Error::Signals)?;
    }
    state.heartbeat.store(Utc::now().timestamp(), Ordering::SeqCst);
    if let Some(addr) = &options.listen {
        serve(addr, state.clone())?;
    }
    tracing::info!(policies = entries.len(), dir = %options.policies_dir.display(), "scheduler started");

    let mut jobs: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let mut next: Vec<Option<DateTime<Utc>>> = entries.iter().map(|e| next_fire(&e.policy, Utc::now())).collect();
    let mut last_start: Vec<Instant> = entries.iter().map(|_| Instant::now()).collect();
    // Start-up: one job per policy takes whatever was missed.
    for entry in &entries {
        jobs.push(start_job(entry, &options, &state));
    }
    let beats: Vec<_> = entries
        .iter()
        .filter_map(|entry| {
            let every = entry.policy.drill.heartbeat?.to_std().ok()?;
            let (policy, signals) = (entry.policy.clone(), signals.clone());
            Some(std::thread::spawn(move || heartbeats(&policy, every, &signals)))
        })
        .collect();
    while signals.load(Ordering::SeqCst) == 0 {
        let now = Utc::now();
        state.heartbeat.store(now.timestamp(), Ordering::SeqCst);
        for ((entry, fire), started) in entries.iter().zip(next.iter_mut()).zip(last_start.iter_mut()) {
            let fired = fire.is_some_and(|at| now >= at);
            let interval = options.every.is_some_and(|every| started.elapsed() >= every);
            if !fired && !interval {
                continue;
            }
            if fired {
                *fire = next_fire(&entry.policy, now);
            }
            let name = &entry.policy.name;
            if state.running.lock().expect("poisoned").contains_key(name) {
                if fired {
                    tracing::warn!(policy = %name, "skipped a scheduled run: the policy's previous job is still running");
                    *state.skipped.lock().expect("poisoned").entry(name.clone()).or_default() += 1;
                }
                continue;
            }
            *started = Instant::now();
            jobs.push(start_job(entry, &options, &state));
        }
        jobs.retain(|j| !j.is_finished());
        std::thread::sleep(Duration::from_millis(250));
    }

    let waiting = state.running.lock().expect("poisoned").len();
    tracing::info!(running = waiting, "stopping: no new jobs; waiting for the running ones to finish");
    let mut passed_on = false;
    while jobs.iter().any(|j| !j.is_finished()) {
        if !passed_on && signals.load(Ordering::SeqCst) > 1 {
            for pid in state.running.lock().expect("poisoned").values() {
                // SAFETY: signalling the process group of a child not yet reaped (each job leads
                // its own group), so pg_dump or pg_basebackup under it stop too.
                unsafe { libc::kill(-(*pid as libc::pid_t), libc::SIGTERM) };
            }
            tracing::warn!("second signal: passed SIGTERM on to the running jobs");
            passed_on = true;
        }
        state.heartbeat.store(Utc::now().timestamp(), Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
    }
    for job in jobs.into_iter().chain(beats) {
        let _ = job.join();
    }
    tracing::info!("scheduler stopped");
    Ok(())
}

/// Writes a heartbeat into `policy`'s database every `every` until a signal comes.
fn heartbeats(policy: &Policy, every: Duration, signals: &AtomicUsize) {
    while signals.load(Ordering::SeqCst) == 0 {
        let next = Instant::now() + every;
        match crate::ops::heartbeat::beat(policy) {
            Ok(at) => tracing::debug!(policy = %policy.name, at = %at.to_rfc3339(), "heartbeat written"),
            Err(e) => {
                tracing::error!(policy = %policy.name, error = %crate::ops::with_causes(&e), "heartbeat not written")
            }
        }
        while signals.load(Ordering::SeqCst) == 0 && Instant::now() < next {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Starts the policy's job in a child process; the thread returned waits for it and records its
/// report.
fn start_job(entry: &Entry, options: &ScheduleOptions, state: &Arc<State>) -> std::thread::JoinHandle<()> {
    let name = entry.policy.name.clone();
    let mut command = Command::new(&options.program);
    command.args(&options.job_args).arg("backup").arg("--policy").arg(&entry.path).arg("--json");
    // The scheduler writes the metrics file for all policies and says where jobs push.
    command.env_remove("DRCTL_METRICS_FILE").env_remove("DRCTL_PUSHGATEWAY");
    if let Some(gateway) = &options.pushgateway {
        command.env("DRCTL_PUSHGATEWAY", gateway);
    }
    // Its own process group: a Ctrl-C meant for the scheduler does not cut a job short.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let child = command.spawn();
    let state = state.clone();
    let metrics_file = options.metrics_file.clone();
    let started = Utc::now();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            tracing::error!(policy = %name, "cannot start the job: {e}");
            *state.runs.lock().expect("poisoned").entry((name, "failed")).or_default() += 1;
            return std::thread::spawn(|| {});
        }
    };
    tracing::info!(policy = %name, pid = child.id(), "job started");
    state.running.lock().expect("poisoned").insert(name.clone(), child.id());
    let timeout = options.job_timeout;
    std::thread::spawn(move || {
        let reader = child.stdout.take().map(|mut out| {
            std::thread::spawn(move || {
                let mut stdout = String::new();
                let _ = std::io::Read::read_to_string(&mut out, &mut stdout);
                stdout
            })
        });
        let status = wait_with_deadline(&mut child, &name, timeout);
        let stdout = reader.and_then(|r| r.join().ok()).unwrap_or_default();
        // Reaped: its pid may be reused from here on, so it can no longer be signalled.
        state.running.lock().expect("poisoned").remove(&name);
        let code = status.as_ref().ok().and_then(|s| s.code());
        let result = if code == Some(0) { "ok" } else { "failed" };
        let report = match serde_json::from_str::<JobReport>(&stdout) {
            Ok(report) => {
                tracing::info!(policy = %name, exit_code = report.exit_code, seconds = report.duration_seconds, "job finished");
                report
            }
            Err(_) => {
                // Killed (out of memory, a signal) or refused before it ran: the job failed,
                // and the metrics must say so. The rest of the policy's state is as last known.
                tracing::error!(policy = %name, status = ?status, "job ended without a report");
                let previous = state.reports.lock().expect("poisoned").get(&name).cloned();
                let mut report = previous.unwrap_or_else(|| JobReport::new(&name, started));
                report.started = started;
                report.duration_seconds = (Utc::now() - started).num_milliseconds() as f64 / 1000.0;
                report.exit_code = code.and_then(|c| u8::try_from(c).ok()).filter(|&c| c != 0).unwrap_or(1);
                report
            }
        };
        state.reports.lock().expect("poisoned").insert(name.clone(), report);
        *state.runs.lock().expect("poisoned").entry((name.clone(), result)).or_default() += 1;
        if let Some(path) = metrics_file
            && let Err(e) = crate::metrics::write_textfile(&path, &state.metrics())
        {
            tracing::error!("cannot write the metrics file {}: {e}", path.display());
        }
    })
}

/// Waits for a job; one still running after `timeout` gets SIGTERM in its process group, and
/// SIGKILL a minute later, so a job hung on a lock or a dead server cannot block its policy.
fn wait_with_deadline(
    child: &mut std::process::Child,
    policy: &str,
    timeout: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    let start = Instant::now();
    let mut signalled: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        let (signal, label) = match signalled {
            None if start.elapsed() >= timeout => (libc::SIGTERM, "SIGTERM"),
            Some(at) if at.elapsed() >= Duration::from_secs(60) => (libc::SIGKILL, "SIGKILL"),
            _ => {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        tracing::error!(policy = %policy, timeout = ?timeout, "the job ran past --job-timeout: sent {label}");
        // SAFETY: the child is not reaped yet, so its process group is still its own.
        unsafe { libc::kill(-(child.id() as libc::pid_t), signal) };
        if signal == libc::SIGKILL {
            return child.wait();
        }
        signalled = Some(Instant::now());
    }
}

/// Serves `/metrics` and `/healthz` on `addr` from a thread of its own.
fn serve(addr: &str, state: Arc<State>) -> Result<(), Error> {
    let server =
        tiny_http::Server::http(addr).map_err(|e| Error::Listen { addr: addr.into(), detail: e.to_string() })?;
    if let Some(bound) = server.server_addr().to_ip() {
        tracing::info!(%bound, "serving /metrics and /healthz");
    }
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let (status, content_type, body) = match request.url() {
                "/metrics" => (200, "text/plain; version=0.0.4", state.metrics()),
                "/healthz" => {
                    let age = Utc::now().timestamp() - state.heartbeat.load(Ordering::SeqCst);
                    match age <= 30 {
                        true => (200, "text/plain", "ok\n".to_string()),
                        false => (503, "text/plain", format!("the scheduling loop last ran {age} s ago\n")),
                    }
                }
                _ => (404, "text/plain", "not found: try /metrics or /healthz\n".to_string()),
            };
            let header = tiny_http::Header::from_bytes("Content-Type", content_type).expect("a valid header");
            let response = tiny_http::Response::from_string(body).with_status_code(status).with_header(header);
            let _ = request.respond(response);
        }
    });
    Ok(())
}
