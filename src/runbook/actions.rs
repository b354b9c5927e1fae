//! The built-in actions, each in two forms: `act` (do it) and `preview` (say what it would do, and
//! evaluate what can be evaluated without changing anything: a promotion's gates, a check).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Action, Error, Ui};
use crate::ops::policy_repos::{self, Reach};
use crate::ops::promote::{self, PromoteOptions};
use crate::ops::unlock::Access;
use crate::pg::Conn;
use crate::pg::sql::{CONNECT_TIMEOUT, Session};
use crate::repo::Repository;

/// What a step's action needs beyond its inputs.
pub struct Context<'a> {
    /// How to reach a repository named by location, as the command's flags and environment say.
    pub access: &'a dyn Fn(&str) -> Access,
    pub ui: &'a mut dyn Ui,
    /// Approvals are given (`--yes`).
    pub yes: bool,
    /// An earlier run that stopped is being taken up.
    pub resuming: bool,
}

/// What an action did: one line for the run's output and the audit log.
pub type Outcome = Result<String, Error>;

/// Whether what `action` does has happened already (a run killed after it acted and before it
/// recorded so): then it is not done again. Only actions that change something can tell; checks
/// run again.
pub fn already_done(
    action: Action,
    inputs: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<Option<String>, Error> {
    match action {
        Action::PgPromote => {
            let mut session =
                Session::connect(&Conn::new(inputs["pg"].clone()), CONNECT_TIMEOUT).map_err(Error::action)?;
            let state = crate::pg::standby::state(&mut session).map_err(Error::action)?;
            Ok((!state.in_recovery).then(|| format!("already promoted: it writes timeline {}", state.timeline)))
        }
        // A restore builds a hidden staging folder and moves it into place whole; with `start`,
        // recovery then removes recovery.signal when it has promoted.
        Action::DrctlRestore => {
            let to = std::path::Path::new(&inputs["to"]);
            let restored = std::fs::read_dir(to)
                .is_ok_and(|d| d.flatten().any(|e| !e.file_name().to_string_lossy().starts_with(".drctl-restore-")));
            let recovered = inputs.get("start").is_none_or(|s| s != "true") || !to.join("recovery.signal").exists();
            Ok((restored && recovered).then(|| format!("already restored into {}", to.display())))
        }
        Action::RdsPromote | Action::RdsRestorePointInTime | Action::RdsRestoreSnapshot | Action::DnsSwitch => {
            super::aws::already_done(action, inputs, timeout)
        }
        // A shell command cannot tell: runbooks give idempotent ones (`kubectl scale --replicas=0`).
        Action::Shell | Action::SqlCheck | Action::HttpWaitHealthy | Action::Approve => Ok(None),
    }
}

pub fn act(action: Action, inputs: &BTreeMap<String, String>, timeout: Duration, cx: &mut Context) -> Outcome {
    run(action, inputs, timeout, cx, false)
}

pub fn preview(action: Action, inputs: &BTreeMap<String, String>, timeout: Duration, cx: &mut Context) -> Outcome {
    run(action, inputs, timeout, cx, true)
}

fn run(action: Action, inputs: &BTreeMap<String, String>, timeout: Duration, cx: &mut Context, dry: bool) -> Outcome {
    let input = |key: &str| inputs.get(key).map(String::as_str);
    let required = |key: &str| input(key).expect("required inputs are checked when the runbook is read");
    // A check previewed says what it sees now: what earlier steps change is not done yet.
    let now = |seen: Outcome| Ok(format!("now: {}", seen.unwrap_or_else(|e| crate::ops::with_causes(&e))));
    match action {
        Action::PgPromote => pg_promote(inputs, timeout, cx, dry),
        Action::RdsPromote => super::aws::promote_replica(inputs, timeout, cx, dry),
        Action::RdsRestorePointInTime => super::aws::restore_point_in_time(inputs, timeout, cx, dry),
        Action::RdsRestoreSnapshot => super::aws::restore_snapshot(inputs, timeout, cx, dry),
        Action::DnsSwitch => super::aws::dns_switch(inputs, timeout, cx, dry),
        Action::DrctlRestore => drctl_restore(inputs, cx, dry),
        Action::SqlCheck if dry => now(sql_check(required("dsn"), required("query"), required("expect"), timeout)),
        Action::SqlCheck => sql_check(required("dsn"), required("query"), required("expect"), timeout),
        Action::HttpWaitHealthy => {
            let expect = input("expect_status").map_or(Ok(200), |s| s.parse::<u16>()).map_err(|_| {
                Error::Usage(format!("expect_status must be an HTTP status code, not {:?}", input("expect_status")))
            })?;
            match dry {
                true => Ok(format!(
                    "now: {} (the step waits up to {} for {expect})",
                    http_look(required("url")),
                    humantime::format_duration(timeout)
                )),
                false => http_wait(required("url"), expect, timeout),
            }
        }
        Action::Shell if dry => Ok(format!("would run: {}", required("command"))),
        Action::Shell => shell(required("command"), timeout),
        Action::Approve if dry => Ok(format!("would ask: {}", required("message"))),
        Action::Approve if cx.yes => Ok("approved by --yes".into()),
        Action::Approve => match cx.ui.confirm(required("message")) {
            true => Ok("approved".into()),
            false => Err(Error::Check("not approved".into())),
        },
    }
}

/// Whether a boolean input is `true`.
pub(super) fn flag(inputs: &BTreeMap<String, String>, key: &str) -> bool {
    inputs.get(key).is_some_and(|v| v == "true")
}

/// The `wait` input, else the step's timeout.
pub(super) fn wait(inputs: &BTreeMap<String, String>, timeout: Duration) -> Result<Duration, Error> {
    match inputs.get("wait") {
        Some(text) => humantime::parse_duration(text).map_err(|e| Error::Usage(format!("wait: {e}"))),
        None => Ok(timeout),
    }
}

fn pg_promote(inputs: &BTreeMap<String, String>, timeout: Duration, cx: &mut Context, dry: bool) -> Outcome {
    let lags = match inputs.get("max_lag") {
        Some(text) => vec![promote::parse_lag(text).map_err(Error::Usage)?],
        None => Vec::new(),
    };
    let wait = wait(inputs, timeout)?;
    // The repository, and the copies that get the new history file: a policy names both.
    let (repo, copies, reach) = match (inputs.get("policy"), inputs.get("repo")) {
        (Some(path), None) => {
            let policy = crate::policy::load(std::path::Path::new(path)).map_err(|e| Error::Usage(e.to_string()))?;
            let access = (cx.access)(&policy.repositories.primary.location);
            let reach = Reach { s3: access.s3, lock_wait: access.lock_wait };
            let repo = policy_repos::open(&policy.repositories.primary, &reach).map_err(Error::action)?;
            (repo, policy.repositories.copies, reach)
        }
        (None, Some(location)) => (open(cx, location)?, Vec::new(), Reach::default()),
        _ => return Err(Error::Usage("give pg.promote either `repo` or `policy`".into())),
    };
    let options = PromoteOptions {
        standby: Conn::new(inputs["pg"].clone()),
        fence_primary: inputs.get("fence_primary").cloned().map(Conn::new),
        assume_fenced: flag(inputs, "assume_fenced"),
        max_lag_bytes: promote::lag_bytes(&lags),
        max_lag_seconds: promote::lag_seconds(&lags),
        switchover: flag(inputs, "switchover"),
        dry_run: dry,
        wait,
        copies,
        reach,
    };
    let ui = &mut *cx.ui;
    let promoted = promote::promote(&repo, &options, &mut |p| say_gates(ui, &p.gates));
    let p = promoted.map_err(Error::action)?;
    Ok(match p.promoted {
        true => format!(
            "promoted: timeline {} -> {}, writable after {:.1} s, replay was {} bytes behind",
            p.timeline_before,
            p.timeline_after.unwrap_or_default(),
            p.promote_seconds.unwrap_or_default(),
            p.replay_lag_bytes
        ),
        false => "every gate passes".into(),
    })
}

/// A promotion's gates, each with what it measured (and its fix when it refuses).
pub(super) fn say_gates(ui: &mut dyn Ui, gates: &[promote::Gate]) {
    for g in gates {
        ui.say(&format!("    {} {}: {}", if g.passed { "ok    " } else { "REFUSE" }, g.name, g.measured));
        if let Some(fix) = &g.fix {
            ui.say(&format!("           fix: {fix}"));
        }
    }
}

fn sql_check(dsn: &str, query: &str, expect: &str, timeout: Duration) -> Outcome {
    let mut session = Session::connect(&Conn::new(dsn), timeout).map_err(Error::action)?;
    let got: Option<String> =
        session.value(&format!("SELECT ({}) ::text", query.trim().trim_end_matches(';'))).map_err(Error::action)?;
    let got = got.unwrap_or_else(|| "NULL".into());
    match got == expect {
        true => Ok(format!("`{query}` returned {got:?}")),
        false => Err(Error::Check(format!("`{query}` returned {got:?}, not {expect:?}"))),
    }
}

/// One GET of `url`: its status, or why there was none.
fn http_get(url: &str) -> Result<u16, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    agent.get(url).call().map(|r| r.status().as_u16()).map_err(|e| e.to_string())
}

/// What `url` answers now, in words.
fn http_look(url: &str) -> String {
    match http_get(url) {
        Ok(status) => format!("{url} answers {status}"),
        Err(e) => format!("{url} does not answer ({e})"),
    }
}

/// Polls `url` once a second until it answers `expect`, for at most `timeout`.
fn http_wait(url: &str, expect: u16, timeout: Duration) -> Outcome {
    let started = Instant::now();
    loop {
        let seen = match http_get(url) {
            Ok(status) if status == expect => {
                return Ok(format!("{url} answered {expect} after {:.1} s", started.elapsed().as_secs_f64()));
            }
            Ok(status) => format!("status {status}"),
            Err(e) => e,
        };
        if started.elapsed() >= timeout {
            return Err(Error::Check(format!("{url} did not answer {expect} within {timeout:?} (last: {seen})")));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Runs `command` with `sh -c`, stopped (SIGKILL to its process group) at `timeout`.
fn shell(command: &str, timeout: Duration) -> Outcome {
    use std::os::unix::process::CommandExt as _;
    let mut child = Command::new("sh")
        .args(["-c", command])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::Check(format!("cannot run sh: {e}")))?;
    let (mut out, mut err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let readers = std::thread::spawn(move || {
        let (mut o, mut e) = (String::new(), String::new());
        let _ = out.read_to_string(&mut o);
        let _ = err.read_to_string(&mut e);
        (o, e)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| Error::Check(e.to_string()))? {
            break status;
        }
        if started.elapsed() >= timeout {
            // SAFETY: signalling the process group of our own child.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            return Err(Error::Check(format!("`{command}` did not finish within {timeout:?}; it was stopped")));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = readers.join().unwrap_or_default();
    let last = |text: &str| text.trim().lines().last().unwrap_or("").to_string();
    match status.success() {
        true => Ok(format!("`{command}` succeeded: {}", last(&stdout))),
        false => Err(Error::Check(format!("`{command}` failed ({status}): {}", last(&stderr)))),
    }
}

/// The repository at `location`, opened without a prompt (a runbook may run unattended).
fn open(cx: &Context, location: &str) -> Result<Repository, Error> {
    (cx.access)(location)
        .open::<crate::ops::Error>(|| Err(crate::repo::Error::NoPassword.into()))
        .map_err(Error::action)
}

/// Restores a snapshot (or a point in time) into a new directory; the restored cluster never
/// archives into the repository it came from. With `start`, recovery runs now, privately.
fn drctl_restore(inputs: &BTreeMap<String, String>, cx: &mut Context, dry: bool) -> Outcome {
    let to = std::path::PathBuf::from(&inputs["to"]);
    let access = (cx.access)(&inputs["repo"]);
    let repo = open(cx, &inputs["repo"])?;
    let what = match (inputs.get("snapshot"), inputs.get("point_in_time")) {
        (Some(s), _) => format!("snapshot {s}"),
        (None, Some(t)) => format!("the point in time {t}"),
        (None, None) => "the latest snapshot".into(),
    };
    if dry {
        let empty = std::fs::read_dir(&to).map_or(true, |mut d| d.next().is_none());
        return match empty {
            true => Ok(format!("would restore {what} into {} (archiving off)", to.display())),
            false => {
                Err(Error::Check(format!("{} is not empty: a restore needs a new or empty directory", to.display())))
            }
        };
    }
    let options = crate::ops::restore::RestoreOptions {
        snapshot: inputs
            .get("snapshot")
            .cloned()
            .or_else(|| inputs.get("point_in_time").is_none().then(|| "latest".into())),
        target: crate::ops::restore::TargetRequest {
            point_in_time: inputs.get("point_in_time").cloned(),
            ..Default::default()
        },
        destination: crate::ops::restore::Destination::Dir(to.clone()),
        keep_archiving: false,
        start: inputs.get("start").is_some_and(|s| s == "true"),
        skip_damaged: false,
        repo_args: access
            .forward()
            .map_err(|e| Error::Usage(format!("cannot resolve the repository's path: {e}")))?
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        repo_env: Vec::new(),
    };
    let progress = crate::progress::NoProgress;
    let mut recovered = String::new();
    let (id, _) = crate::ops::restore::run(&repo, &options, &progress, &mut |event| {
        if let crate::ops::restore::Event::Recovered { recovered: r, .. } = event {
            let lines: Vec<&str> = [&r.stop, &r.last_transaction].into_iter().flatten().map(String::as_str).collect();
            recovered = format!("; recovered and promoted ({})", lines.join("; "));
        }
    })
    .map_err(Error::action)?;
    Ok(format!("restored {what} (snapshot {}) into {}{recovered}", id.short(), to.display()))
}
