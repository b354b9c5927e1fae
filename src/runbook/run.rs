//! Running a runbook: parameters resolved and typed, then each step in order (its preconditions,
//! its confirmation and the preconditions again, its action with retries), stopping at the
//! first failed step after its `on_failure` steps; every step recorded in the audit log. A dry
//! run resolves everything and previews every step without changing anything.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::actions::{self, Context};
use super::audit::{AuditLog, Recorder};
use super::resume;
use super::{Error, Runbook, Step, Ui};
use crate::ops::unlock::Access;

/// How to run.
pub struct RunOptions<'a> {
    /// `--param name=value`, as given.
    pub params: Vec<(String, String)>,
    pub dry_run: bool,
    /// Confirmations and approvals are given.
    pub yes: bool,
    pub audit_log: PathBuf,
    /// Take up this earlier run: its steps that succeeded are not run again.
    pub resume: Option<String>,
    /// How to reach a repository named by location, as the command's flags and environment say.
    pub access: &'a dyn Fn(&str) -> Access,
    /// The repository that keeps an encrypted copy of every audit record.
    pub audit_repo: Option<&'a crate::repo::Repository>,
}

/// Runs `runbook`; `Ok` when every step succeeded (or, dry, would be tried).
pub fn run(runbook: &Runbook, options: &RunOptions, ui: &mut dyn Ui) -> Result<(), Error> {
    // A dry run changes nothing, so it may look while a run goes on.
    let _lock = (!options.dry_run).then(|| resume::lock(&options.audit_log, &runbook.name)).transpose()?;
    let earlier = match &options.resume {
        Some(id) => Some(resume::earlier(&options.audit_log, &runbook.name, id)?),
        None => None,
    };
    if let Some(earlier) = earlier.as_ref().filter(|e| e.finished) {
        ui.say(&format!("run {} of {} finished already: nothing to take up", earlier.id, runbook.name));
        return Ok(());
    }
    // Given parameters win over those the earlier run recorded.
    let mut params = earlier.as_ref().map(|e| e.parameters.clone()).unwrap_or_default();
    params.retain(|(k, _)| !options.params.iter().any(|(given, _)| given == k));
    params.extend(options.params.iter().cloned());
    let values = resolve(runbook, &params)?;
    let secrets: Vec<&str> = runbook
        .parameters
        .iter()
        .filter(|p| p.secret)
        .filter_map(|p| values.get(&p.name).map(String::as_str))
        .filter(|v| !v.is_empty())
        .collect();
    let redact = |text: &str| {
        let text = secrets.iter().fold(text.to_string(), |t, s| t.replace(s, "***"));
        crate::redact::credentials(&text)
    };
    let log = AuditLog::open(&options.audit_log).map_err(|e| Error::Audit(options.audit_log.clone(), e))?;
    let mut audit = Recorder::new(log, options.audit_repo);
    let run_id = earlier.as_ref().map_or_else(run_id, |e| e.id.clone());
    let record = |audit: &mut Recorder, event: &str, fields: Vec<(&str, Value)>| {
        let mut m = Map::new();
        m.insert("time".into(), chrono::Utc::now().to_rfc3339().into());
        m.insert("run".into(), run_id.clone().into());
        m.insert("runbook".into(), runbook.name.clone().into());
        m.insert("event".into(), event.into());
        for (k, v) in fields {
            m.insert(k.into(), v);
        }
        audit.append(&run_id, m).map_err(|e| Error::Audit(audit.path().to_path_buf(), e))
    };
    let shown: BTreeMap<&str, String> = values.iter().map(|(k, v)| (k.as_str(), redact(v))).collect();
    record(
        &mut audit,
        if earlier.is_some() { "resume" } else { "run-start" },
        vec![
            ("user", whoami().into()),
            ("host", crate::repo::hostname().into()),
            ("dry_run", options.dry_run.into()),
            ("parameters", serde_json::to_value(&shown).expect("strings serialize")),
        ],
    )?;
    let mut cx = Context { access: options.access, ui, yes: options.yes, resuming: earlier.is_some() };
    let resolved = Values { values: &values, redact: &redact };
    let mut first_failure = None;
    for (i, step) in runbook.steps.iter().enumerate() {
        let label = format!("step {}/{} {}", i + 1, runbook.steps.len(), step.name);
        if let Some(earlier) = earlier.as_ref().filter(|e| e.done.contains(&step.name)) {
            cx.ui.say(&format!("{label}: done in run {}; not run again", earlier.id));
            record(&mut audit, "step", vec![("step", step.name.clone().into()), ("result", "done-earlier".into())])?;
            continue;
        }
        if !options.dry_run {
            record(&mut audit, "step-start", vec![("step", step.name.clone().into())])?;
        }
        let started = Instant::now();
        let outcome = match options.dry_run {
            true => preview_step(step, &resolved, &mut cx, &label),
            false => run_step(step, &resolved, &mut cx, &label),
        };
        let seconds = started.elapsed().as_secs_f64();
        let (result, text) = match &outcome {
            Ok(text) if options.dry_run => ("previewed", text.clone()),
            Ok(text) => ("ok", text.clone()),
            Err(e) => ("failed", crate::ops::with_causes(e)),
        };
        cx.ui.say(&format!("  {result} in {seconds:.1} s: {}", redact(&text)));
        record(
            &mut audit,
            "step",
            vec![
                ("step", step.name.clone().into()),
                ("action", step.action.name().into()),
                ("result", result.into()),
                ("seconds", seconds.into()),
                ("output_digest", blake3::hash(text.as_bytes()).to_hex().to_string().into()),
            ],
        )?;
        if let Err(e) = outcome {
            let failure = Error::Step { runbook: runbook.name.clone(), step: step.name.clone(), source: Box::new(e) };
            if options.dry_run {
                first_failure.get_or_insert(failure);
                continue;
            }
            for fallback in &step.on_failure {
                let label = format!("  on failure: {}", fallback.name);
                let (result, text) = match run_step(fallback, &resolved, &mut cx, &label) {
                    Ok(text) => ("ok", text),
                    Err(e) => ("failed", crate::ops::with_causes(&e)),
                };
                cx.ui.say(&format!("    {result}: {}", redact(&text)));
                record(
                    &mut audit,
                    "on-failure",
                    vec![("step", fallback.name.clone().into()), ("result", result.into())],
                )?;
            }
            first_failure = Some(failure);
            break;
        }
    }
    let result = if first_failure.is_some() { "failed" } else { "ok" };
    record(&mut audit, "run-end", vec![("result", result.into())])?;
    first_failure.map_or(Ok(()), Err)
}

/// The parameters' values, and how to print them (secrets as `***`).
struct Values<'a> {
    values: &'a BTreeMap<String, String>,
    redact: &'a dyn Fn(&str) -> String,
}

/// A step for real: preconditions, confirmation (and the preconditions again), the action.
fn run_step(step: &Step, values: &Values, cx: &mut Context, label: &str) -> Result<String, Error> {
    let Values { values, redact } = values;
    cx.ui.say(&format!("{label} [{}]", step.action.name()));
    let inputs = substitute(step, values);
    let timeout = step.timeout.to_std().unwrap_or_default();
    // Taking up a run that stopped inside this step: it may have happened already.
    if cx.resuming
        && let Some(done) = actions::already_done(step.action, &inputs, timeout)?
    {
        return Ok(done);
    }
    check_preconditions(step, values, cx, redact, false)?;
    if step.confirm && !cx.yes {
        let summary: Vec<String> = inputs.iter().map(|(k, v)| format!("{k}={}", redact(v))).collect();
        if !cx.ui.confirm(&format!("run {} ({}) now?", step.action.name(), summary.join(", "))) {
            return Err(Error::Check("not confirmed; nothing was done".into()));
        }
        // Time passed while a person read the question: the world may have changed.
        check_preconditions(step, values, cx, redact, false)?;
    }
    let mut attempt = 0;
    loop {
        match actions::act(step.action, &inputs, timeout, cx) {
            Ok(done) => return Ok(done),
            Err(e) if attempt < step.retries => {
                attempt += 1;
                cx.ui.say(&format!("  attempt {attempt} failed ({}); trying again", redact(&e.to_string())));
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Evaluates the step's preconditions; a dry run only says what each sees now.
fn check_preconditions(
    step: &Step,
    values: &BTreeMap<String, String>,
    cx: &mut Context,
    redact: &dyn Fn(&str) -> String,
    dry: bool,
) -> Result<(), Error> {
    for check in &step.preconditions {
        let inputs = substitute(check, values);
        let timeout = check.timeout.to_std().unwrap_or_default();
        let seen = match dry {
            true => actions::preview(check.action, &inputs, timeout, cx),
            false => actions::act(check.action, &inputs, timeout, cx),
        }
        .map_err(|e| Error::Precondition(check.name.clone(), Box::new(e)))?;
        cx.ui.say(&format!("  before: {}: {}", check.name, redact(&seen)));
    }
    Ok(())
}

/// A step as a dry run shows it: inputs resolved, preconditions evaluated, the action previewed.
fn preview_step(step: &Step, values: &Values, cx: &mut Context, label: &str) -> Result<String, Error> {
    let Values { values, redact } = values;
    let mut flags = vec![format!("timeout {}", humantime::format_duration(step.timeout.to_std().unwrap_or_default()))];
    if step.confirm {
        flags.push("asks for confirmation".into());
    }
    cx.ui.say(&format!("{label} [{}] ({})", step.action.name(), flags.join(", ")));
    let inputs = substitute(step, values);
    for (key, value) in &inputs {
        cx.ui.say(&format!("    {key}: {}", redact(value)));
    }
    check_preconditions(step, values, cx, redact, true)?;
    for fallback in &step.on_failure {
        cx.ui.say(&format!("    on failure: {} [{}]", fallback.name, fallback.action.name()));
    }
    actions::preview(step.action, &inputs, step.timeout.to_std().unwrap_or_default(), cx)
}

/// Each parameter's value: given (and of its type), else its default; unknown names and missing
/// required ones are refused.
fn resolve(runbook: &Runbook, given: &[(String, String)]) -> Result<BTreeMap<String, String>, Error> {
    let usage = |message: String| Error::Usage(format!("runbook {}: {message}", runbook.name));
    let mut values = BTreeMap::new();
    for (name, value) in given {
        let Some(p) = runbook.parameters.iter().find(|p| &p.name == name) else {
            let names: Vec<&str> = runbook.parameters.iter().map(|p| p.name.as_str()).collect();
            return Err(usage(format!("it has no parameter `{name}` (its parameters: {})", names.join(", "))));
        };
        p.kind.check(value).map_err(|why| usage(format!("--param {name} {why}")))?;
        values.insert(name.clone(), value.clone());
    }
    for p in &runbook.parameters {
        match (values.contains_key(&p.name), &p.default) {
            (true, _) => {}
            (false, Some(default)) => {
                values.insert(p.name.clone(), default.clone());
            }
            (false, None) => {
                return Err(usage(format!(
                    "give --param {}=… ({}: {})",
                    p.name,
                    format!("{:?}", p.kind).to_lowercase(),
                    p.description
                )));
            }
        }
    }
    Ok(values)
}

/// The step's inputs with every `${name}` replaced by its value.
fn substitute(step: &Step, values: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let fill = |text: &str| values.iter().fold(text.to_string(), |t, (k, v)| t.replace(&format!("${{{k}}}"), v));
    step.with.iter().map(|(k, v)| (k.clone(), fill(v))).collect()
}

fn run_id() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    format!("{}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"), hex::encode(bytes))
}

fn whoami() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| {
        // SAFETY: getuid cannot fail.
        format!("uid {}", unsafe { libc::getuid() })
    })
}
