//! Runbooks as code: the recovery procedures of the service's operations documents (promote the
//! replica, restore to new infrastructure, region failover, recovery after bad data) as YAML
//! files in `runbooks/`, read as strictly as policy files, run step by step (or dry), each run
//! recorded in a hash-chained audit log.

mod actions;
pub mod audit;
mod aws;
mod parse;
mod resume;
mod run;
mod schema;

use std::path::{Path, PathBuf};

pub use run::{RunOptions, run};
pub use schema::*;

/// How a run talks to the person running it.
pub trait Ui {
    /// One line of progress.
    fn say(&mut self, line: &str);
    /// Asks a yes/no question; `false` when nobody can answer.
    fn confirm(&mut self, question: &str) -> bool;
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Parameters or inputs that do not fit the runbook (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A check, command or approval of a step said no (exit 16).
    #[error("{0}")]
    Check(String),
    /// What a step's action ran into, classified by its cause.
    #[error(transparent)]
    Action(Box<dyn std::error::Error + Send + Sync>),
    /// A precondition failed: the step's action did not run.
    #[error("precondition `{0}` failed; the step did nothing")]
    Precondition(String, #[source] Box<Error>),
    /// The step a run stopped at.
    #[error("runbook {runbook} stopped at step `{step}`")]
    Step {
        runbook: String,
        step: String,
        #[source]
        source: Box<Error>,
    },
    /// Another run of this runbook goes on (exit 6).
    #[error("runbook {0} is running already (one run of a runbook at a time)")]
    Busy(String),
    #[error("cannot write the audit log {}", .0.display())]
    Audit(PathBuf, #[source] std::io::Error),
}

impl Error {
    /// An error of the layers below, kept whole so its exit code and hint stay its own.
    pub fn action(e: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Action(Box::new(e))
    }
}

use crate::policy::{Invalid, Problem, parse_document, yaml::Found};

/// Reads and checks one runbook file: every problem at its line and column.
pub fn load(path: &Path) -> Result<Runbook, Invalid> {
    crate::policy::load_with(path, read)
}

pub(crate) fn read(text: &str) -> Result<Runbook, Vec<Problem>> {
    let root = parse_document(text, "a runbook", "`name: …`, `description: …`, `steps: …`").map_err(|e| vec![e])?;
    let found = Found::default();
    let runbook = root.as_mapping().and_then(|root| parse::runbook(root, &found));
    let mut problems = found.into_problems();
    problems.sort_by_key(|p| p.at);
    match runbook {
        Some(runbook) if problems.is_empty() => Ok(runbook),
        _ if problems.is_empty() => Err(vec![Problem {
            at: None,
            message: "a runbook must be a YAML mapping".into(),
            hint: "start with the keys: `name: …`, `description: …`, `steps: …`".into(),
        }]),
        _ => Err(problems),
    }
}

/// The runbook files of a directory (`*.yaml`, `*.yml`), sorted by name.
pub fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// The runbook of `dir` named `name` (by its `name:`, which is also its file name).
pub fn find(dir: &Path, name: &str) -> std::io::Result<Option<PathBuf>> {
    Ok(files_in(dir)?.into_iter().find(|p| p.file_stem().is_some_and(|s| s == name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "\
name: promote-replica
description: the primary is lost; promote the streaming standby
parameters:
  standby_dsn:
    description: the standby's connection string
  repo:
    description: the repository
  max_lag:
    type: string
    description: the most replay lag accepted
    default: 16MiB
steps:
  - name: promote
    action: pg.promote
    confirm: true
    timeout: 5m
    with:
      pg: ${standby_dsn}
      repo: ${repo}
      max_lag: ${max_lag}
    preconditions:
      - name: standby answers
        action: sql.check
        with: {dsn: '${standby_dsn}', query: SELECT pg_is_in_recovery(), expect: t}
";

    fn problems(text: &str) -> Vec<String> {
        read(text)
            .err()
            .unwrap_or_default()
            .iter()
            .map(|p| format!("{:?}: {} ({})", p.at.map(|a| a.line), p.message, p.hint))
            .collect()
    }

    #[test]
    fn a_valid_runbook_reads_whole() {
        let runbook = read(VALID).unwrap();
        assert_eq!(runbook.name, "promote-replica");
        assert_eq!(runbook.parameters.len(), 3);
        assert_eq!(runbook.parameters[2].default.as_deref(), Some("16MiB"));
        let step = &runbook.steps[0];
        assert_eq!((step.action, step.confirm, step.timeout), (Action::PgPromote, true, chrono::Duration::minutes(5)));
        assert_eq!(step.preconditions[0].action, Action::SqlCheck);
    }

    #[test]
    fn every_mistake_is_named_where_it_is() {
        let text = VALID
            .replace("action: pg.promote", "action: pg.promte")
            .replace("repo: ${repo}", "repo: ${repository}")
            .replace("confirm: true", "confrim: true")
            .replace("action: sql.check", "action: shell");
        let found = problems(&text);
        let has = |needle: &str| found.iter().any(|p| p.contains(needle));
        assert!(has("`steps[0].action` cannot be `pg.promte` (did you mean `pg.promote`?)"), "{found:#?}");
        assert!(has("unknown key `confrim`") && has("did you mean `confirm`?"), "{found:#?}");
        assert!(has("`shell` cannot be a precondition"), "{found:#?}");
        assert!(found.iter().all(|p| p.starts_with("Some(")), "every problem has a line: {found:#?}");
        let repo_ref = problems(&VALID.replace("repo: ${repo}", "repo: ${repository}"));
        assert!(
            repo_ref.iter().any(|p| p.contains("`${repository}`, which is not a parameter") && p.contains("`repo`")),
            "{repo_ref:#?}"
        );
    }

    #[test]
    fn missing_inputs_and_bad_defaults_are_refused() {
        let found = problems(&VALID.replace("      repo: ${repo}\n", ""));
        assert!(found.iter().any(|p| p.contains("`steps[0].with` needs `repo` or `policy`")), "{found:#?}");
        let found = problems(&VALID.replace("      repo: ${repo}\n", "      repo: ${repo}\n      policy: ${repo}\n"));
        assert!(found.iter().any(|p| p.contains("takes `repo` or `policy`, not both")), "{found:#?}");
        let found = problems(&VALID.replace("      pg: ${standby_dsn}\n", ""));
        assert!(found.iter().any(|p| p.contains("missing key `steps[0].with.pg`")), "{found:#?}");
        let found = problems(&VALID.replace("type: string", "type: duration"));
        assert!(found.iter().any(|p| p.contains("is not a duration: `16MiB`")), "{found:#?}");
        // One rule for a default and a --param: both take what the other takes.
        for (kind, good, bad) in [
            (ParamKind::Duration, "0s", "16MiB"),
            (ParamKind::Integer, "3", "-1"),
            (ParamKind::Boolean, "false", "no"),
            (ParamKind::Time, "2026-11-20 14:03:00+00", "2026-11-20 14:03:00"),
        ] {
            assert_eq!(kind.check(good), Ok(()), "{kind:?} {good}");
            assert!(kind.check(bad).is_err(), "{kind:?} {bad}");
        }
        let found = problems(&VALID.replace("name: promote\n", "name: promote\n    retries: many\n"));
        assert!(found.iter().any(|p| p.contains("must be a whole number")), "{found:#?}");
    }
}
