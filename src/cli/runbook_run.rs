//! `drctl runbook run` and `drctl runbook audit`: a runbook run step by step at the terminal, and
//! its audit log.

use clap::Args;
use std::path::PathBuf;

use crate::error::ExitCode;
use crate::runbook;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub dir: super::runbook::DirArgs,
    /// The runbook's name (its file name without .yaml).
    pub name: String,
    /// A parameter's value (repeatable): `--param standby_dsn="host=… port=…"`.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Take up run RUN (from `drctl runbook audit`) that stopped: its steps that succeeded are not
    /// run again, and a step it stopped in is checked first for having happened already.
    /// Parameters come from that run; give again the secret ones (recorded as ***).
    #[arg(long, value_name = "RUN", conflicts_with = "dry_run")]
    pub resume: Option<String>,
    /// Resolve every parameter, evaluate every precondition and gate, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Answer yes to every confirmation and approval (for automation; a person should read the
    /// dry run first).
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub audit: AuditLogArgs,
    /// How to open the repositories steps name (their location comes from the runbook).
    #[command(flatten)]
    pub access: super::AccessArgs,
}

#[derive(Debug, Args)]
pub struct AuditLogArgs {
    /// The audit log (JSON lines, hash-chained; created 0600).
    #[arg(long = "audit-log", env = "DRCTL_AUDIT_LOG", value_name = "FILE", default_value_os_t = default_audit_log())]
    pub path: PathBuf,
    /// A repository that keeps every record too, encrypted (`audit/` objects, copied by `copy`);
    /// opened as the access flags say.
    #[arg(long = "audit-repo", env = "DRCTL_AUDIT_REPO", value_name = "LOCATION")]
    pub repo: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub audit: AuditLogArgs,
    /// How to open --audit-repo.
    #[command(flatten)]
    pub access: super::AccessArgs,
    /// Prove the chain: exit 3 at the first record altered, removed or inserted.
    #[arg(long)]
    pub verify: bool,
}

pub fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let Some(r) = super::runbook::load(&args.dir.dir, &args.name)? else { return Ok(ExitCode::Usage as u8) };
    let access = |location: &str| args.access.access(location);
    let audit_repo = args.audit.repo.as_deref().map(|location| args.access.open(location)).transpose()?;
    let options = runbook::RunOptions {
        params: args.params.clone(),
        dry_run: args.dry_run,
        yes: args.yes,
        audit_log: args.audit.path.clone(),
        resume: args.resume.clone(),
        access: &access,
        audit_repo: audit_repo.as_ref(),
    };
    println!(
        "runbook {}{}: {}",
        r.name,
        if args.dry_run { " (dry run: nothing is changed)" } else { "" },
        r.description
    );
    runbook::run(&r, &options, &mut Terminal)?;
    println!("runbook {}: {}", r.name, if args.dry_run { "every step can be tried" } else { "every step succeeded" });
    Ok(ExitCode::Ok as u8)
}

pub fn audit(args: &AuditArgs) -> anyhow::Result<u8> {
    let (checked, what) = match &args.audit.repo {
        Some(location) => {
            let repo = args.access.open(location)?;
            (runbook::audit::verify_stored(&repo), format!("the audit records in {location}"))
        }
        None => (runbook::audit::verify(&args.audit.path), format!("the audit log {}", args.audit.path.display())),
    };
    match checked {
        Ok(records) => {
            for r in &records {
                let field = |k: &str| {
                    r.get(k).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).unwrap_or_default()
                };
                println!(
                    "{} {} {} {} {} {}",
                    field("time"),
                    field("run"),
                    field("runbook"),
                    match r.get("dry_run").and_then(serde_json::Value::as_bool) {
                        Some(true) => format!("{} (dry run)", field("event")),
                        _ => field("event"),
                    },
                    field("step"),
                    field("result")
                );
            }
            if args.verify {
                println!("{what}: {} records, the chain is whole", records.len());
            }
            Ok(ExitCode::Ok as u8)
        }
        Err(why) if args.verify => {
            eprintln!(
                "error: {what}: the chain is broken: {why}\nhint: restore them from a copy; records after the break cannot be \
                 trusted"
            );
            Ok(ExitCode::Damaged as u8)
        }
        Err(why) => Err(crate::ops::Error::Usage(format!("cannot list {what}: {why}")).into()),
    }
}

/// The terminal as a run's [`runbook::Ui`]: lines on stdout, questions answered on stdin.
struct Terminal;

impl runbook::Ui for Terminal {
    fn say(&mut self, line: &str) {
        println!("{line}");
    }

    fn confirm(&mut self, question: &str) -> bool {
        use std::io::{IsTerminal, Write};
        if !std::io::stdin().is_terminal() {
            println!("{question} (no terminal to answer: give --yes)");
            return false;
        }
        print!("{question} [y/N] ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).is_ok() && matches!(answer.trim(), "y" | "yes")
    }
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))
}

fn default_audit_log() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    state.join("drctl/runbook-audit.jsonl")
}
