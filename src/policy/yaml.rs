//! Reading a YAML tree strictly but completely: every key must be known and every value of the
//! expected type, and each problem is recorded with its line and column instead of stopping at
//! the first, so one run of `drctl policy validate` shows everything there is to fix.

use chrono::Duration;
use marked_yaml::Node;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::schedule::Schedule;
use super::{Pos, Problem};

/// What reading one file collects: its problems, and where each value was, by its path
/// (`retention.pitr_window`, `repositories.copies[1].location`), for the rules that relate keys.
#[derive(Debug, Default)]
pub struct Found {
    problems: RefCell<Vec<Problem>>,
    places: RefCell<BTreeMap<String, Pos>>,
}

impl Found {
    pub fn problem(&self, at: Pos, message: impl Into<String>, hint: impl Into<String>) {
        self.problems.borrow_mut().push(Problem { at: Some(at), message: message.into(), hint: hint.into() });
    }

    /// Where the value at `path` was read (the start of the file for a value never read).
    pub fn place(&self, path: &str) -> Pos {
        self.places.borrow().get(path).copied().unwrap_or(Pos::START)
    }

    pub fn into_problems(self) -> Vec<Problem> {
        self.problems.into_inner()
    }
}

fn start_of(scalar: &MarkedScalarNode) -> Option<Pos> {
    scalar.span().start().map(|m| Pos { line: m.line(), column: m.column() })
}

/// The candidate closest to a misspelt `word`, if one is close enough to be what was meant.
fn nearest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let score = |c: &&str| strsim::jaro_winkler(&word.to_ascii_lowercase(), c);
    candidates.iter().copied().filter(|c| score(c) >= 0.8).max_by(|a, b| score(a).total_cmp(&score(b)))
}

/// `did you mean …?` when a candidate is close, else the whole list.
pub fn suggest(word: &str, candidates: &[&str], kind: &str) -> String {
    match nearest(word, candidates) {
        Some(close) => format!("did you mean `{close}`?"),
        None => {
            format!("the {kind} here: {}", candidates.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", "))
        }
    }
}

/// Every item, if each one was read; a problem with one does not stop the others being read.
pub fn all<T>(items: impl IntoIterator<Item = Option<T>>) -> Option<Vec<T>> {
    let items: Vec<Option<T>> = items.into_iter().collect();
    items.into_iter().collect()
}

/// An optional key's value: `Some(None)` when absent, `None` when present but unreadable.
pub fn optional<'a, T>(value: Option<Value<'a>>, read: impl FnOnce(&Value<'a>) -> Option<T>) -> Option<Option<T>> {
    match value {
        Some(value) => read(&value).map(Some),
        None => Some(None),
    }
}

/// A value of the file, with its path and the place problems with it are reported at: the value
/// itself when it is a scalar, else its key (a mapping's or list's own span starts elsewhere).
#[derive(Debug, Clone)]
pub struct Value<'a> {
    node: &'a Node,
    path: String,
    at: Pos,
    found: &'a Found,
}

impl<'a> Value<'a> {
    fn new(node: &'a Node, path: String, key_at: Pos, found: &'a Found) -> Value<'a> {
        let at = match node {
            Node::Scalar(s) if !s.is_empty() => start_of(s).unwrap_or(key_at),
            _ => key_at,
        };
        found.places.borrow_mut().insert(path.clone(), at);
        Value { node, path, at, found }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn at(&self) -> Pos {
        self.at
    }

    pub fn problem(&self, message: impl Into<String>, hint: impl Into<String>) {
        self.found.problem(self.at, message, hint);
    }

    fn shape(&self) -> String {
        match self.node {
            Node::Scalar(s) if s.is_empty() => "empty".into(),
            Node::Scalar(s) => format!("`{}`", s.as_str()),
            Node::Mapping(_) => "a mapping".into(),
            Node::Sequence(_) => "a list".into(),
        }
    }

    /// A single non-empty value (YAML's scalar: plain or quoted).
    pub fn text(&self) -> Option<&'a str> {
        match self.node {
            Node::Scalar(s) if !s.is_empty() => Some(s.as_str()),
            Node::Scalar(_) => {
                self.problem(format!("`{}` has no value", self.path), "write the value after the colon");
                None
            }
            _ => {
                self.problem(
                    format!("`{}` must be a single value, not {}", self.path, self.shape()),
                    "write the value on the key's line, e.g. `key: value`",
                );
                None
            }
        }
    }

    pub fn string(&self) -> Option<String> {
        self.text().map(str::to_string)
    }

    /// A whole number that fits `T`.
    pub fn whole<T: TryFrom<u64>>(&self) -> Option<T> {
        let text = self.text()?;
        let number = text.parse::<u64>().ok().and_then(|n| T::try_from(n).ok());
        if number.is_none() {
            self.problem(
                format!("`{}` must be a whole number, not `{text}`", self.path),
                "write digits only, e.g. `7`",
            );
        }
        number
    }

    /// A duration longer than zero, in humantime's syntax.
    pub fn duration(&self) -> Option<Duration> {
        let text = self.text()?;
        match humantime::parse_duration(text).map(Duration::from_std) {
            Ok(Ok(d)) if d > Duration::zero() => Some(d),
            Ok(Ok(_)) => {
                self.problem(format!("`{}` must be longer than zero", self.path), "e.g. `15m`, `36h` or `7d`");
                None
            }
            Ok(Err(_)) => {
                self.problem(format!("`{}` is too long: `{text}`", self.path), "e.g. `15m`, `36h` or `7d`");
                None
            }
            Err(_) => {
                self.problem(
                    format!("`{}` is not a duration: `{text}`", self.path),
                    "write a number and a unit: `90s`, `15m`, `36h`, `7d`, `2w` (or several: `1d 12h`)",
                );
                None
            }
        }
    }

    pub fn schedule(&self) -> Option<Schedule> {
        let text = self.text()?;
        Schedule::parse(text).map_err(|e| self.problem(format!("`{}`: {}", self.path, e.message), e.hint)).ok()
    }

    /// One of a fixed set of words.
    pub fn choice<T: Copy>(&self, options: &[(&'static str, T)]) -> Option<T> {
        let text = self.text()?;
        let found = options.iter().find(|(word, _)| *word == text).map(|(_, value)| *value);
        if found.is_none() {
            let words: Vec<&str> = options.iter().map(|(word, _)| *word).collect();
            self.problem(format!("`{}` cannot be `{text}`", self.path), suggest(text, &words, "choices"));
        }
        found
    }

    /// An absolute path: drctl runs in CronJobs and sidecars, whose working directory is no
    /// reference point.
    pub fn absolute_path(&self) -> Option<PathBuf> {
        let text = self.text()?;
        if !text.starts_with('/') {
            self.problem(
                format!("`{}` must be an absolute path, not `{text}`", self.path),
                "write the full path from `/`: the directory drctl runs in is not one to rely on",
            );
            return None;
        }
        Some(PathBuf::from(text))
    }

    /// A plain `true` or `false`, which YAML reads as a boolean whatever the schema wants.
    pub fn is_plain_bool(&self) -> bool {
        matches!(self.node, Node::Scalar(s) if s.as_bool().is_some())
    }

    pub fn map(&self) -> Option<Map<'a>> {
        match self.node {
            Node::Mapping(node) => {
                Some(Map { node, path: self.path.clone(), at: self.at, found: self.found, known: Vec::new() })
            }
            _ => {
                self.problem(
                    format!("`{}` must be a mapping of keys to values, not {}", self.path, self.shape()),
                    format!("write its keys on the lines below `{}:`, indented", self.key()),
                );
                None
            }
        }
    }

    /// The items of a list, each with its own path (`copies[0]`).
    pub fn list(&self) -> Option<Vec<Value<'a>>> {
        match self.node {
            Node::Sequence(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let at = match item {
                            Node::Mapping(m) => m.iter().next().and_then(|(key, _)| start_of(key)),
                            _ => None,
                        };
                        Value::new(item, format!("{}[{i}]", self.path), at.unwrap_or(self.at), self.found)
                    })
                    .collect(),
            ),
            _ => {
                self.problem(
                    format!("`{}` must be a list, not {}", self.path, self.shape()),
                    format!("write one `- item` per line below `{}:`, or `[a, b]`", self.key()),
                );
                None
            }
        }
    }

    /// A list with at least one item; `what` says what the items are for.
    pub fn nonempty_list(&self, what: &str) -> Option<Vec<Value<'a>>> {
        let items = self.list()?;
        if items.is_empty() {
            self.problem(format!("`{}` is empty", self.path), format!("name at least one {what}"));
            return None;
        }
        Some(items)
    }

    /// A mapping whose keys are names the file chooses (e.g. sources), with their values.
    pub fn entries(&self) -> Option<Vec<(&'a str, Value<'a>)>> {
        let map = self.map()?;
        Some(
            map.node
                .iter()
                .map(|(key, value)| {
                    let at = start_of(key).unwrap_or(self.at);
                    (key.as_str(), Value::new(value, format!("{}.{}", self.path, key.as_str()), at, self.found))
                })
                .collect(),
        )
    }

    /// The last part of the path, as the key was written.
    fn key(&self) -> &str {
        self.path.rsplit('.').next().unwrap_or(&self.path)
    }
}

/// A mapping being read: each key asked for becomes known, and `finish` reports every other key
/// as unknown.
pub struct Map<'a> {
    node: &'a MarkedMappingNode,
    path: String,
    at: Pos,
    found: &'a Found,
    known: Vec<&'static str>,
}

impl<'a> Map<'a> {
    pub fn root(node: &'a MarkedMappingNode, found: &'a Found) -> Map<'a> {
        Map { node, path: String::new(), at: Pos::START, found, known: Vec::new() }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) }
    }

    /// The value of `key`, when it is there.
    pub fn get(&mut self, key: &'static str) -> Option<Value<'a>> {
        self.known.push(key);
        let (k, v) = self.node.iter().find(|(k, _)| k.as_str() == key)?;
        Some(Value::new(v, self.child_path(key), start_of(k).unwrap_or(self.at), self.found))
    }

    /// The value of `key`; its absence is reported, with `hint` saying what to write.
    pub fn require(&mut self, key: &'static str, hint: &str) -> Option<Value<'a>> {
        let value = self.get(key);
        if value.is_none() {
            self.problem(format!("missing key `{}`", self.child_path(key)), hint);
        }
        value
    }

    /// A problem with the mapping as a whole, reported at its key.
    pub fn problem(&self, message: impl Into<String>, hint: impl Into<String>) {
        self.found.problem(self.at, message, hint);
    }

    /// Reports every key that was not asked for.
    pub fn finish(self) {
        for (key, _) in self.node.iter().filter(|(k, _)| !self.known.contains(&k.as_str())) {
            let place = if self.path.is_empty() { String::new() } else { format!(" in `{}`", self.path) };
            self.found.problem(
                start_of(key).unwrap_or(self.at),
                format!("unknown key `{}`{place}", key.as_str()),
                suggest(key.as_str(), &self.known, "keys"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_are_suggested_and_strangers_are_not() {
        let keys = ["keep_last", "keep_daily", "keep_weekly", "pitr_window", "retention"];
        assert_eq!(nearest("retension", &keys), Some("retention"));
        assert_eq!(nearest("keep_dayly", &keys), Some("keep_daily"));
        assert_eq!(nearest("Keep_Weekly", &keys), Some("keep_weekly"));
        assert_eq!(nearest("pitr", &keys), Some("pitr_window"));
        assert_eq!(nearest("color", &keys), None);
    }
}
