//! Policies: one YAML file per protected system (policies/ in the repository; policies/README.md
//! is the reference) saying what to back up, when, where to, for how long, and the recovery
//! objectives drills measure against.
//!
//! [`load`] is the one way in: it reads a file strictly (an unknown key or a value of the wrong
//! kind is an error, with a suggestion when a known key is close), checks the rules across its
//! sections, and returns either a [`Policy`] the scheduler and `backup --policy` can act on as it
//! is, or every problem in the file, each at its line and column.
//!
//! - `yaml`: the strict reader, which collects problems instead of stopping at the first;
//! - `parse`: the keys of each section, into the types of `schema`;
//! - `schedule`: cron schedules in the crontab form Kubernetes CronJobs use;
//! - `rules`: what must hold across sections (PITR needs base backups, an RPO the schedules can
//!   meet, and so on).

mod parse;
mod rules;
mod schedule;
mod schema;
pub mod yaml;

use marked_yaml::{LoadError, LoaderOptions, Marker};
use std::fmt;
use std::path::{Path, PathBuf};

pub use schedule::{Schedule, ScheduleError};
pub use schema::*;

/// A place in a file: line and column, both from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };
}

/// One thing wrong with a policy file, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// None when the file could not be read at all.
    pub at: Option<Pos>,
    pub message: String,
    pub hint: String,
}

/// A policy file that cannot be used, with every problem found in it, in the order of the file.
#[derive(Debug)]
pub struct Invalid {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for Invalid {
    /// `FILE:LINE:COLUMN: message` and `  hint: …` per problem, as compilers print them, so
    /// editors can jump to each.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.path.display();
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.at {
                Some(Pos { line, column }) => write!(f, "{file}:{line}:{column}: {}\n  hint: {}", p.message, p.hint)?,
                None => write!(f, "{file}: {}\n  hint: {}", p.message, p.hint)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for Invalid {}

/// The policy in the file at `path`, validated; or everything wrong with it.
pub fn load(path: &Path) -> Result<Policy, Invalid> {
    load_with(path, read)
}

/// What `read` makes of the file at `path`; or everything wrong with it (for policies and every
/// other file read with the same strictness, such as runbooks).
pub fn load_with<T>(path: &Path, read: impl FnOnce(&str) -> Result<T, Vec<Problem>>) -> Result<T, Invalid> {
    let invalid = |problems| Invalid { path: path.to_path_buf(), problems };
    let text = std::fs::read_to_string(path).map_err(|e| {
        invalid(vec![Problem {
            at: None,
            message: format!("cannot read it: {e}"),
            hint: "check the path and that the file is readable by this user".into(),
        }])
    })?;
    read(&text).map_err(invalid)
}

/// The policy in `text`, or every problem in it.
pub(crate) fn read(text: &str) -> Result<Policy, Vec<Problem>> {
    let root = parse_document(text, "a policy file", "`name: …`, `kind: …`, `database: …`").map_err(|e| vec![e])?;
    let found = yaml::Found::default();
    let policy = root.as_mapping().and_then(|root| parse::policy(root, &found));
    if let Some(policy) = &policy {
        rules::check(policy, &found);
    }
    let mut problems = found.into_problems();
    problems.sort_by_key(|p| p.at);
    match policy {
        Some(policy) if problems.is_empty() => Ok(policy),
        _ => Err(problems),
    }
}

/// A file that is not YAML, or uses YAML that policies leave out (anchors, tags).
/// Parses YAML strictly (no duplicate keys), or says where and how it is not: `document` names
/// what the file is ("a policy file"), `first_keys` what it starts with.
pub fn parse_document(text: &str, document: &str, first_keys: &str) -> Result<marked_yaml::Node, Problem> {
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    marked_yaml::parse_yaml_with_options(0, text, options).map_err(|e| syntax(e, document, first_keys))
}

fn syntax(e: LoadError, document: &str, first_keys: &str) -> Problem {
    let at = |m: &Marker| Pos { line: m.line(), column: m.column() };
    let quote = "quote values that begin with `*`, `@`, `&`, `!`, `{` or `[`, or hold `: ` or ` #`";
    let (at, message, hint) = match &e {
        LoadError::ScanError(m, scan) => {
            let hint = match scan.info() {
                info if info.contains("unknown anchor") => {
                    "a value that begins with `*` must be quoted: `schedule: \"*/15 * * * *\"`".to_string()
                }
                info if info.contains("unexpected character: `@'") => {
                    "a value that begins with `@` must be quoted: `schedule: \"@daily\"`".to_string()
                }
                _ => format!("indent nested keys with spaces, and {quote}"),
            };
            (at(m), format!("YAML syntax: {}", scan.info()), hint)
        }
        LoadError::TopLevelMustBeMapping(m) | LoadError::TopLevelMustBeSequence(m) => {
            (at(m), format!("{document} must be a YAML mapping"), format!("start with the keys: {first_keys}"))
        }
        LoadError::UnexpectedAnchor(m) => {
            (at(m), format!("YAML anchors are not used in {document}s"), "write each value out in full".into())
        }
        LoadError::UnexpectedTag(m) => {
            (at(m), format!("YAML tags are not used in {document}s"), format!("remove the tag, and {quote}"))
        }
        LoadError::MappingKeyMustBeScalar(m) => {
            (at(m), "a key must be a plain name".into(), "write keys as names, e.g. `keep_daily:`".into())
        }
        LoadError::DuplicateKey(dup) => {
            let first = dup.prev_key.span().start().map_or(String::new(), |m| format!(" (first on line {})", m.line()));
            (
                dup.key.span().start().map_or(Pos::START, at),
                format!("key `{}` given twice{first}", dup.key.as_str()),
                "keep one of them".into(),
            )
        }
    };
    Problem { at: Some(at), message, hint }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "\
name: api-db
kind: self-managed
database:
  host: db
sources:
  base:
    type: base-backup
    mode: stream
    schedule: '0 2 * * *'
repositories:
  primary:
    location: /var/backups/api-db
    key_file: /etc/drctl/repo.key
retention:
  keep_daily: 7
  pitr_window: 3d
targets:
  rto: 1h
  rpo: 15m
";

    fn problems(text: &str) -> Vec<(usize, usize, String)> {
        read(text).unwrap_err().into_iter().map(|p| (p.at.unwrap().line, p.at.unwrap().column, p.message)).collect()
    }

    #[test]
    fn a_valid_policy_reads_into_its_types() {
        let policy = read(VALID).unwrap();
        assert_eq!(policy.name, "api-db");
        assert_eq!(policy.sources[0].what, SourceKind::BaseBackup(BaseMode::Stream));
        assert_eq!(policy.retention.pitr_window, Some(chrono::Duration::days(3)));
        assert_eq!(policy.repositories.primary.key, KeySlot::KeyFile("/etc/drctl/repo.key".into()));
        assert!(policy.drill.checks.is_empty() && policy.rds.is_none());
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        let text = VALID.replace("  keep_daily: 7", "  keep_daily: seven").replace("  rpo: 15m", "  rpo: soon")
            + "colour: blue\n";
        let found = problems(&text);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!((found[0].0, found[0].1), (15, 15));
        assert!(found[0].2.contains("whole number"));
        assert_eq!((found[1].0, found[1].1), (19, 8));
        assert_eq!((found[2].0, found[2].1), (20, 1));
    }

    #[test]
    fn rules_across_sections_point_at_the_key_to_change() {
        let text =
            VALID.replace("    type: base-backup\n    mode: stream", "    type: logical-dump\n    databases: [app]");
        let found = problems(&text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!((found[0].0, found[0].1), (16, 16));
        assert!(found[0].2.contains("`pitr_window` without a base-backup source"));
        assert_eq!((found[1].0, found[1].1), (19, 8));
        assert!(found[1].2.contains("rpo 15m cannot be met"), "{}", found[1].2);
    }
}
