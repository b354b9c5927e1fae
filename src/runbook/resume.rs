//! One run of a runbook at a time, and taking up a run that stopped (a failed step fixed, or
//! the process killed): what the audit log says it did is not done again.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use super::{Error, audit};

/// Held while a run of one runbook goes on; released when dropped (or the process dies).
pub struct RunLock {
    _file: File,
}

/// Takes the lock of `runbook` beside the audit log, or says a run of it is going on.
pub fn lock(audit_log: &Path, runbook: &str) -> Result<RunLock, Error> {
    let dir = audit_log.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let path = dir.join(format!("runbook-{runbook}.lock"));
    let file = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| File::create(&path))
        .map_err(|e| Error::Audit(path.clone(), e))?;
    match file.try_lock() {
        Ok(()) => Ok(RunLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Busy(runbook.to_string())),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::Audit(path, e)),
    }
}

/// What an earlier run left in the audit log.
pub struct Earlier {
    pub id: String,
    /// Its parameters as recorded, without those recorded redacted (`***`): secrets, and
    /// passwords in connection strings, must be given again.
    pub parameters: Vec<(String, String)>,
    /// Its steps that succeeded.
    pub done: BTreeSet<String>,
    /// It ended with every step done.
    pub finished: bool,
}

/// The run `id` of `runbook`, read from the audit log after proving its chain whole.
pub fn earlier(audit_log: &Path, runbook: &str, id: &str) -> Result<Earlier, Error> {
    let records = audit::verify(audit_log)
        .map_err(|why| Error::Usage(format!("cannot resume from the audit log {}: {why}", audit_log.display())))?;
    let of_run: Vec<_> = records.iter().filter(|r| r.get("run").and_then(|v| v.as_str()) == Some(id)).collect();
    let field =
        |r: &serde_json::Map<String, serde_json::Value>, k: &str| r.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let Some(start) = of_run.iter().find(|r| field(r, "event").as_deref() == Some("run-start")) else {
        return Err(Error::Usage(format!(
            "the audit log {} holds no run {id} (see `drctl runbook audit`)",
            audit_log.display()
        )));
    };
    if field(start, "runbook").as_deref() != Some(runbook) {
        return Err(Error::Usage(format!(
            "run {id} is a run of {}, not of {runbook}",
            field(start, "runbook").unwrap_or_default()
        )));
    }
    if start.get("dry_run").and_then(|v| v.as_bool()) == Some(true) {
        return Err(Error::Usage(format!("run {id} was a dry run: there is nothing to take up; run it for real")));
    }
    let recorded: BTreeMap<String, String> =
        start.get("parameters").and_then(|p| serde_json::from_value(p.clone()).ok()).unwrap_or_default();
    let done = of_run
        .iter()
        .filter(|r| field(r, "event").as_deref() == Some("step") && field(r, "result").as_deref() == Some("ok"))
        .filter_map(|r| field(r, "step"))
        .collect();
    let finished = of_run.iter().any(|r| {
        matches!(field(r, "event").as_deref(), Some("run-end")) && field(r, "result").as_deref() == Some("ok")
    });
    Ok(Earlier {
        id: id.to_string(),
        parameters: recorded.into_iter().filter(|(_, v)| !v.contains("***")).collect(),
        done,
        finished,
    })
}
