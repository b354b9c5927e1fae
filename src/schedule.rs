//! `drctl schedule --policies DIR`: the scheduler for hosts without Kubernetes CronJobs.
//!
//! Each policy's job runs in a child process (`drctl backup --policy FILE --json`), so a job that
//! fails or runs out of memory never takes the scheduler down, and each job has the process-wide
//! settings (the database password) of its own policy. The rules:
//! - at start-up, every policy's job runs once: it takes the sources that are due, which makes up
//!   for the runs missed while the scheduler was down, once each however many were missed;
//! - then a policy's job starts at every fire time of any of its schedules (sources and RDS
//!   snapshot), and runs the sources that are due at that moment;
//! - a fire time that comes while the policy's previous job still runs is skipped (logged and
//!   counted in `drctl_schedule_skipped_runs_total`), as a CronJob with `concurrencyPolicy:
//!   Forbid` does; the source stays due, so the next job takes it;
//! - SIGTERM or SIGINT stops new jobs and waits for the running ones to finish; a second signal
//!   passes SIGTERM on to them.
//!
//! `/metrics` serves every policy's latest job report as Prometheus metrics, `/healthz` says
//! whether the scheduling loop is alive.

use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// Flags every job gets before its own (log format, verbosity, Pushgateway).
    pub job_args: Vec<String>,
    /// A textfile the scheduler rewrites with every policy's metrics after each job.
    pub metrics_file: Option<PathBuf>,
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
    paths
        .into_iter()
        .map(|path| policy::load(&path).map(|policy| Entry { path, policy }).map_err(Error::Invalid))
        .collect()
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
    // Start-up: one job per policy takes whatever was missed.
    for entry in &entries {
        jobs.push(start_job(entry, &options, &state));
    }
    while signals.load(Ordering::SeqCst) == 0 {
        let now = Utc::now();
        state.heartbeat.store(now.timestamp(), Ordering::SeqCst);
        for (entry, fire) in entries.iter().zip(next.iter_mut()) {
            let Some(at) = *fire else { continue };
            if now < at {
                continue;
            }
            *fire = next_fire(&entry.policy, now);
            let name = &entry.policy.name;
            if state.running.lock().expect("poisoned").contains_key(name) {
                tracing::warn!(policy = %name, scheduled = %at, "skipped: the policy's previous job is still running");
                *state.skipped.lock().expect("poisoned").entry(name.clone()).or_default() += 1;
                continue;
            }
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
                // SAFETY: sending a signal to a child process this scheduler started.
                unsafe { libc::kill(*pid as libc::pid_t, libc::SIGTERM) };
            }
            tracing::warn!("second signal: passed SIGTERM on to the running jobs");
            passed_on = true;
        }
        state.heartbeat.store(Utc::now().timestamp(), Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
    }
    for job in jobs {
        let _ = job.join();
    }
    tracing::info!("scheduler stopped");
    Ok(())
}

/// Starts the policy's job in a child process; the thread returned waits for it and records its
/// report.
fn start_job(entry: &Entry, options: &ScheduleOptions, state: &Arc<State>) -> std::thread::JoinHandle<()> {
    let name = entry.policy.name.clone();
    let mut command = Command::new(&options.program);
    command.args(&options.job_args).arg("backup").arg("--policy").arg(&entry.path).arg("--json");
    // The scheduler writes the metrics file for all policies and says where jobs push.
    command.env_remove("DRCTL_METRICS_FILE").env_remove("DRCTL_PUSHGATEWAY");
    // Its own process group: a Ctrl-C meant for the scheduler does not cut a job short.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let child = command.spawn();
    let state = state.clone();
    let metrics_file = options.metrics_file.clone();
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
    std::thread::spawn(move || {
        let mut stdout = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut out, &mut stdout);
        }
        let status = child.wait();
        let code = status.as_ref().ok().and_then(|s| s.code());
        let result = if code == Some(0) { "ok" } else { "failed" };
        match serde_json::from_str::<JobReport>(&stdout) {
            Ok(report) => {
                tracing::info!(policy = %name, exit_code = report.exit_code, seconds = report.duration_seconds, "job finished");
                state.reports.lock().expect("poisoned").insert(name.clone(), report);
            }
            Err(_) => tracing::error!(policy = %name, status = ?status, "job ended without a report"),
        }
        *state.runs.lock().expect("poisoned").entry((name.clone(), result)).or_default() += 1;
        state.running.lock().expect("poisoned").remove(&name);
        if let Some(path) = metrics_file
            && let Err(e) = crate::metrics::write_textfile(&path, &state.metrics())
        {
            tracing::error!("cannot write the metrics file {}: {e}", path.display());
        }
    })
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
