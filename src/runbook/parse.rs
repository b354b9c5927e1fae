//! From the YAML tree to a runbook, with the policy reader's strictness: every key known, every
//! value typed, every action's inputs checked and every `${parameter}` defined, each problem at
//! its line and column.

use chrono::Duration;
use marked_yaml::types::MarkedMappingNode;

use super::schema::*;
use crate::policy::yaml::{Found, Map, Value, all, optional, suggest};

const KINDS: [(&str, ParamKind); 5] = [
    ("string", ParamKind::String),
    ("integer", ParamKind::Integer),
    ("duration", ParamKind::Duration),
    ("boolean", ParamKind::Boolean),
    ("time", ParamKind::Time),
];
const BOOLS: [(&str, bool); 2] = [("true", true), ("false", false)];
/// How long a step may run when the runbook does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::minutes(10);

pub fn runbook(root: &MarkedMappingNode, found: &Found) -> Option<Runbook> {
    let mut top = Map::root(root, found);
    let name = top.require("name", "name the runbook, e.g. `name: promote-replica`").and_then(|v| name(&v));
    let description = top
        .require("description", "say in a sentence what it recovers from and when to run it")
        .and_then(|v| v.string());
    let parameters = optional(top.get("parameters"), parameters).map(Option::unwrap_or_default);
    let names: Vec<&str> = parameters.iter().flatten().map(|p| p.name.as_str()).collect();
    let steps = top
        .require("steps", "list what to do: `steps:` with `- name: …` and `action: …`")
        .and_then(|v| step_list(&v, &names, false));
    if let Some(steps) = &steps {
        unique_step_names(steps, &top);
    }
    top.finish();
    Some(Runbook { name: name?, description: description?, parameters: parameters?, steps: steps? })
}

fn name(v: &Value) -> Option<String> {
    let text = v.text()?;
    valid_name(v, text).then(|| text.to_string())
}

/// Whether `text` can be typed on a command line (`--param NAME=…`, `run NAME`); reported at `v`.
fn valid_name(v: &Value, text: &str) -> bool {
    let valid = text.starts_with(|c: char| c.is_ascii_lowercase())
        && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        v.problem(
            format!("`{text}` is not a valid name"),
            "use lowercase letters, digits, `-` and `_`, starting with a letter: it is typed on the command line",
        );
    }
    valid
}

fn parameters(v: &Value) -> Option<Vec<Parameter>> {
    all(v.entries()?.into_iter().map(|(key, value)| {
        let valid = valid_name(&value, key);
        parameter(key, &value).filter(|_| valid)
    }))
}

fn parameter(name: &str, v: &Value) -> Option<Parameter> {
    let mut m = v.map()?;
    let kind = optional(m.get("type"), |t| t.choice(&KINDS)).map(|k| k.unwrap_or(ParamKind::String));
    let description =
        m.require("description", "say what the value is, for `drctl runbook show`").and_then(|d| d.string());
    let secret = optional(m.get("secret"), |s| s.choice(&BOOLS)).map(|s| s.unwrap_or(false));
    let default = match (m.get("default"), kind) {
        (Some(d), Some(kind)) => typed(&d, kind).map(Some),
        (None, _) => Some(None),
        (Some(_), None) => None,
    };
    m.finish();
    Some(Parameter {
        name: name.to_string(),
        kind: kind?,
        description: description?,
        default: default?,
        secret: secret?,
    })
}

/// A value of the given type, as text.
fn typed(v: &Value, kind: ParamKind) -> Option<String> {
    let text = v.text()?;
    match kind.check(text) {
        Ok(()) => Some(text.to_string()),
        Err(why) => {
            v.problem(format!("`{}` {why}", v.path()), "give a default of the parameter's type, or none to require it");
            None
        }
    }
}

fn step_list(v: &Value, params: &[&str], checks_only: bool) -> Option<Vec<Step>> {
    let items = v.nonempty_list("step")?;
    all(items.iter().map(|item| step(item, params, checks_only)))
}

fn step(v: &Value, params: &[&str], checks_only: bool) -> Option<Step> {
    let mut m = v.map()?;
    let name = m.require("name", "name the step, e.g. `name: promote the standby`").and_then(|n| n.string());
    let action_value = m.require("action", "give one built-in action, e.g. `action: pg.promote`");
    let action = action_value.as_ref().and_then(|a| a.choice(&Action::ALL));
    if let (Some(a), Some(value)) = (action, &action_value)
        && checks_only
        && !a.checks()
    {
        value.problem(
            format!("`{}` cannot be a precondition: it changes something", a.name()),
            "a precondition checks: use `sql.check` or `http.wait-healthy`, and make the change a step of its own",
        );
    }
    let with = match (m.get("with"), action) {
        (Some(w), Some(action)) => inputs(&w, action, params),
        (None, Some(action)) if action.inputs().required.is_empty() => Some(Vec::new()),
        (None, Some(action)) => {
            m.problem(
                format!("`{}` needs `with:` and its inputs", action.name()),
                format!(
                    "give {}",
                    action.inputs().required.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                ),
            );
            None
        }
        (_, None) => None,
    };
    let preconditions = optional(m.get("preconditions"), |p| step_list(p, params, true)).map(Option::unwrap_or_default);
    let timeout = optional(m.get("timeout"), Value::duration).map(|t| t.unwrap_or(DEFAULT_TIMEOUT));
    let retries = optional(m.get("retries"), |r| r.whole::<u32>()).map(Option::unwrap_or_default);
    let confirm = optional(m.get("confirm"), |c| c.choice(&BOOLS)).map(Option::unwrap_or_default);
    let on_failure =
        optional(m.get("on_failure"), |f| step_list(f, params, checks_only)).map(Option::unwrap_or_default);
    m.finish();
    if checks_only && (confirm == Some(true) || on_failure.as_ref().is_some_and(|f| !f.is_empty())) {
        v.problem("a precondition has no `confirm` or `on_failure`", "it only checks: a failing one stops the step");
        return None;
    }
    Some(Step {
        name: name?,
        action: action?,
        with: with?,
        preconditions: preconditions?,
        timeout: timeout?,
        retries: retries?,
        confirm: confirm?,
        on_failure: on_failure?,
    })
}

/// The action's inputs: each required one given, none unknown, every `${name}` a parameter.
fn inputs(v: &Value, action: Action, params: &[&str]) -> Option<Vec<(String, String)>> {
    let Inputs { required, optional: also, one_of } = action.inputs();
    let mut m = v.map()?;
    let mut values = Vec::new();
    let hint = format!(
        "`{}` takes {}",
        action.name(),
        required.iter().chain(also).map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
    );
    for &key in required {
        values.push(m.require(key, &hint).map(|v| (key, v)));
    }
    for &key in also {
        values.extend(m.get(key).map(|v| Some((key, v))));
    }
    m.finish();
    let given: Vec<&str> = one_of.iter().copied().filter(|k| values.iter().flatten().any(|(g, _)| g == k)).collect();
    if !one_of.is_empty() && given.len() != 1 {
        let names = one_of.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" or ");
        let message = match given.is_empty() {
            true => format!("`{}` needs {names}", v.path()),
            false => format!("`{}` takes {names}, not both", v.path()),
        };
        v.problem(message, hint.clone());
        return None;
    }
    all(values.into_iter().map(|entry| {
        let (key, value) = entry?;
        let text = value.text()?;
        references(&value, text, params).then(|| (key.to_string(), text.to_string()))
    }))
}

/// Whether every `${name}` in `text` names a parameter (each one that does not is reported).
fn references(v: &Value, text: &str, params: &[&str]) -> bool {
    let mut ok = true;
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(end) = rest[start..].find('}') else {
            v.problem(format!("`{}`: `${{` without a closing `}}`", v.path()), "write a parameter as `${name}`");
            return false;
        };
        let name = &rest[start + 2..start + end];
        if !params.contains(&name) {
            let hint = match params.is_empty() {
                true => "declare it under `parameters:`".to_string(),
                false => suggest(name, params, "parameters"),
            };
            v.problem(format!("`{}` uses `${{{name}}}`, which is not a parameter", v.path()), hint);
            ok = false;
        }
        rest = &rest[start + end + 1..];
    }
    ok
}

/// Step names say where a run is and what `--resume` continues from: they must be unique.
fn unique_step_names(steps: &[Step], top: &Map) {
    let mut seen = std::collections::BTreeSet::new();
    for step in steps {
        if !seen.insert(step.name.as_str()) {
            top.problem(format!("two steps are named `{}`", step.name), "give each step its own name");
        }
    }
}
