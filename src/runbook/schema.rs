//! A runbook as drctl runs it: typed parameters, and steps that each run one built-in action.

use chrono::Duration;

/// One recovery procedure.
#[derive(Debug, Clone, PartialEq)]
pub struct Runbook {
    pub name: String,
    pub description: String,
    pub parameters: Vec<Parameter>,
    pub steps: Vec<Step>,
}

/// A value the runbook is given at `run` time (`--param name=value`) or takes by default.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub name: String,
    pub kind: ParamKind,
    pub description: String,
    /// `None`: required.
    pub default: Option<String>,
    /// Never printed or recorded (a password, a token).
    pub secret: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    String,
    Integer,
    Duration,
    Boolean,
    /// A point in time with a time zone ("2026-11-20 14:03:00+00").
    Time,
}

impl ParamKind {
    /// Whether `value` is one of this kind: the one rule for a default in the file and a value
    /// given with `--param`.
    pub fn check(self, value: &str) -> Result<(), String> {
        let (ok, example) = match self {
            ParamKind::String => (true, ""),
            ParamKind::Integer => (value.parse::<u64>().is_ok(), "a whole number, e.g. `3`"),
            ParamKind::Duration => (
                humantime::parse_duration(value).is_ok(),
                "a number and a unit: `90s`, `15m`, `36h`, `7d` (or several: `1d 12h`)",
            ),
            ParamKind::Boolean => (value == "true" || value == "false", "`true` or `false`"),
            ParamKind::Time => match crate::ops::restore::select::parse_time(value) {
                Ok(_) => (true, ""),
                Err(e) => return Err(format!("{e}; write it like \"2026-11-20 14:03:00+00\"")),
            },
        };
        match ok {
            true => Ok(()),
            false => Err(format!("is not a {}: `{value}` (write {example})", format!("{self:?}").to_lowercase())),
        }
    }
}

/// One step: an action with its inputs, the checks that must hold before it acts, and what to
/// do when it fails.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    pub action: Action,
    /// The action's inputs, as written: `${parameter}` is replaced at run time.
    pub with: Vec<(String, String)>,
    /// Checks (`sql.check`, `http.wait-healthy`) that must pass before the action runs.
    pub preconditions: Vec<Step>,
    pub timeout: Duration,
    /// Further attempts after a failed one.
    pub retries: u32,
    /// Destructive: asks for a yes (or `--yes`), then evaluates the preconditions again.
    pub confirm: bool,
    /// Steps run when this one fails, before the run stops.
    pub on_failure: Vec<Step>,
}

/// The built-in actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    PgPromote,
    RdsPromote,
    RdsRestorePointInTime,
    RdsRestoreSnapshot,
    DnsSwitch,
    DrctlRestore,
    HttpWaitHealthy,
    SqlCheck,
    Shell,
    Approve,
}

/// An action's inputs: what it requires, what it also takes, and the groups of optional ones of
/// which exactly one must be given.
pub struct Inputs {
    pub required: &'static [&'static str],
    pub optional: &'static [&'static str],
    pub one_of: &'static [&'static str],
}

impl Action {
    pub const ALL: [(&'static str, Action); 10] = [
        ("pg.promote", Action::PgPromote),
        ("rds.promote-read-replica", Action::RdsPromote),
        ("rds.restore-to-point-in-time", Action::RdsRestorePointInTime),
        ("rds.restore-from-snapshot", Action::RdsRestoreSnapshot),
        ("dns.switch", Action::DnsSwitch),
        ("drctl.restore", Action::DrctlRestore),
        ("http.wait-healthy", Action::HttpWaitHealthy),
        ("sql.check", Action::SqlCheck),
        ("shell", Action::Shell),
        ("approve", Action::Approve),
    ];

    pub fn name(self) -> &'static str {
        Action::ALL.iter().find(|(_, a)| *a == self).map(|(n, _)| *n).expect("every action is named")
    }

    /// Whether the action changes something (and so may need `confirm`), rather than checks.
    pub fn mutates(self) -> bool {
        !matches!(self, Action::HttpWaitHealthy | Action::SqlCheck | Action::Approve)
    }

    /// Whether it can be a precondition: it only checks.
    pub fn checks(self) -> bool {
        matches!(self, Action::HttpWaitHealthy | Action::SqlCheck)
    }

    pub fn inputs(self) -> Inputs {
        let (required, optional): (&[&str], &[&str]) = match self {
            Action::PgPromote => {
                (&["pg"], &["repo", "policy", "fence_primary", "assume_fenced", "max_lag", "switchover", "wait"])
            }
            Action::RdsPromote => {
                (&["instance", "region"], &["max_lag", "accept_unknown_lag", "assume_fenced", "verify_dsn", "wait"])
            }
            Action::RdsRestorePointInTime => (
                &["source_instance", "instance", "region", "subnet_group", "security_groups", "parameter_group"],
                &["point_in_time", "instance_class", "wait"],
            ),
            Action::RdsRestoreSnapshot => (
                &["instance", "region", "subnet_group", "security_groups", "parameter_group"],
                &["snapshot", "policy", "instance_class", "wait"],
            ),
            Action::DnsSwitch => (&["zone", "name"], &["value", "instance", "region", "type", "ttl", "wait"]),
            Action::DrctlRestore => (&["repo", "to"], &["snapshot", "point_in_time", "start"]),
            Action::HttpWaitHealthy => (&["url"], &["expect_status"]),
            Action::SqlCheck => (&["dsn", "query", "expect"], &[]),
            Action::Shell => (&["command"], &[]),
            Action::Approve => (&["message"], &[]),
        };
        let one_of: &[&str] = match self {
            Action::PgPromote => &["repo", "policy"],
            Action::RdsRestoreSnapshot => &["snapshot", "policy"],
            Action::DnsSwitch => &["value", "instance"],
            _ => &[],
        };
        Inputs { required, optional, one_of }
    }
}
